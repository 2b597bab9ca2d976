// The DMA API, consumer side (like Linux dma-mapping.h) and provider interface (like
// dma-map-ops.h) in one small header.
//
// A driver never puts a pointer or a guest-physical address into a ring itself: it maps
// the buffer and gives the device the mapping's dma_addr(). What that address is, and
// whether bytes are copied, is the provider's business (direct, bounce, IOMMU).
//
//   Mapping m = VDMA_TRY(ops.map(buf, len, Direction::kFromDevice));
//   ring.publish(m.dma_addr(), m.size());
//   ... device writes ...
//   VDMA_TRY(m.unmap());        // bounce: copies the device's bytes back into buf
//
// Hot paths (virtqueues) hold MappingRecords and call the provider's *_record functions
// on the concrete, `final` ops type, so the direct case inlines to almost nothing.
#pragma once

#include <concepts>
#include <cstdint>
#include <utility>

#include "vdma/base/result.h"
#include "vdma/dma/errors.h"
#include "vdma/memory/address.h"
#include "vdma/memory/iotlb.h"

namespace vdma::dma {

enum class Direction : std::uint8_t {
  kToDevice,       // device reads
  kFromDevice,     // device writes
  kBidirectional,  // both
};
const char* direction_name(Direction d);

// What the device may do with a mapping of this direction.
constexpr memory::Access device_access(Direction d) {
  switch (d) {
    case Direction::kToDevice:
      return memory::Access::kRead;
    case Direction::kFromDevice:
      return memory::Access::kWrite;
    case Direction::kBidirectional:
      return memory::Access::kReadWrite;
  }
  return memory::Access::kNone;
}

enum class OpsKind { kDirect, kBounce, kIommu, kBounceViaIommu };
const char* ops_kind_name(OpsKind k);

// Everything a provider needs to undo a mapping. Plain data; the driver keeps it in its
// private shadow, never in device-visible memory.
struct MappingRecord {
  DmaAddr addr;              // what the device is given
  std::byte* cpu = nullptr;  // the caller's buffer
  std::uint64_t len = 0;
  std::uint64_t cookie = 0;  // provider-private
  Direction dir = Direction::kToDevice;
};

struct CoherentRecord {
  DmaAddr addr;
  std::byte* cpu = nullptr;
  std::uint64_t len = 0;
  std::uint64_t cookie = 0;  // provider-private
};

class Mapping;
class CoherentBuffer;

class DmaOps {
 public:
  virtual ~DmaOps() = default;

  virtual OpsKind kind() const = 0;
  // Largest len map() accepts.
  virtual std::uint64_t max_mapping_size() const = 0;

  // Provider interface. Errors: see Errc; every record-taking call validates the record.
  virtual Result<MappingRecord> map_record(void* cpu, std::uint64_t len, Direction dir) = 0;
  virtual Result<void> unmap_record(const MappingRecord& m) = 0;
  virtual Result<void> sync_record_for_cpu(const MappingRecord& m, std::uint64_t off,
                                           std::uint64_t len) = 0;
  virtual Result<void> sync_record_for_device(const MappingRecord& m, std::uint64_t off,
                                              std::uint64_t len) = 0;
  // Zeroed memory both sides see, for rings and small control structures.
  virtual Result<CoherentRecord> alloc_coherent_record(std::uint64_t len) = 0;
  virtual Result<void> free_coherent_record(const CoherentRecord& c) = 0;

  // Consumer interface (RAII).
  Result<Mapping> map(void* cpu, std::uint64_t len, Direction dir);
  Result<CoherentBuffer> alloc_coherent(std::uint64_t len);
};

// A live streaming mapping; unmapped on destruction (an error there is logged) or by
// unmap(). Move-only.
class [[nodiscard]] Mapping {
 public:
  Mapping() = default;
  Mapping(DmaOps* ops, const MappingRecord& r) : ops_(ops), rec_(r) {}
  Mapping(Mapping&& o) noexcept : ops_(std::exchange(o.ops_, nullptr)), rec_(o.rec_) {}
  Mapping& operator=(Mapping&& o) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  bool mapped() const { return ops_ != nullptr; }
  DmaAddr dma_addr() const { return rec_.addr; }
  std::uint64_t size() const { return rec_.len; }
  Direction direction() const { return rec_.dir; }
  std::byte* cpu() const { return rec_.cpu; }
  const MappingRecord& record() const { return rec_; }

  // Errors: kNotMapped if already unmapped or moved from; provider errors otherwise.
  Result<void> unmap();
  // Make device writes visible to the CPU / CPU writes visible to the device, for
  // [off, off + len) of the mapping (the whole mapping by default).
  Result<void> sync_for_cpu(std::uint64_t off = 0, std::uint64_t len = UINT64_MAX);
  Result<void> sync_for_device(std::uint64_t off = 0, std::uint64_t len = UINT64_MAX);
  // Gives up ownership: the caller must unmap_record() the returned record.
  MappingRecord release();

 private:
  void reset();
  DmaOps* ops_ = nullptr;
  MappingRecord rec_{};
};

// A live coherent allocation; freed on destruction. Move-only.
class [[nodiscard]] CoherentBuffer {
 public:
  CoherentBuffer() = default;
  CoherentBuffer(DmaOps* ops, const CoherentRecord& r) : ops_(ops), rec_(r) {}
  CoherentBuffer(CoherentBuffer&& o) noexcept
      : ops_(std::exchange(o.ops_, nullptr)), rec_(o.rec_) {}
  CoherentBuffer& operator=(CoherentBuffer&& o) noexcept;
  CoherentBuffer(const CoherentBuffer&) = delete;
  CoherentBuffer& operator=(const CoherentBuffer&) = delete;
  ~CoherentBuffer() { reset(); }

  bool allocated() const { return ops_ != nullptr; }
  DmaAddr dma_addr() const { return rec_.addr; }
  std::byte* cpu() const { return rec_.cpu; }
  std::uint64_t size() const { return rec_.len; }
  const CoherentRecord& record() const { return rec_; }

 private:
  void reset();
  DmaOps* ops_ = nullptr;
  CoherentRecord rec_{};
};

// Shared validation: [off, off + len) within a mapping of m.len bytes (len == UINT64_MAX
// means "to the end"). Returns the clamped length.
Result<std::uint64_t> sync_range(const MappingRecord& m, std::uint64_t off, std::uint64_t len);

}  // namespace vdma::dma

namespace vdma::dma {

// What ring code needs from a DMA provider. Satisfied by DmaOps (virtual dispatch) and,
// statically, by each `final` provider (DirectOps, BounceOps, IommuOps), so a virtqueue
// templated on the concrete type inlines the calls.
template <class O>
concept DmaProvider = requires(O& o, void* p, std::uint64_t n, Direction d, const MappingRecord& r,
                               const CoherentRecord& c) {
  { o.map_record(p, n, d) } -> std::same_as<Result<MappingRecord>>;
  { o.unmap_record(r) } -> std::same_as<Result<void>>;
  { o.alloc_coherent_record(n) } -> std::same_as<Result<CoherentRecord>>;
  { o.free_coherent_record(c) } -> std::same_as<Result<void>>;
};

static_assert(DmaProvider<DmaOps>);

}  // namespace vdma::dma

// DirectOps: the 1:1 provider. DMA address == guest-physical address; no copies, no
// locks, no allocation, no per-mapping state. map() only proves the buffer lies in one
// *shared* guest-memory region (a private region is unreachable by the device, so mapping
// it would hand the device a dangling address).
//
// Defined inline and `final` so a virtqueue templated on DirectOps compiles the DMA calls
// down to the GPA lookup it would need anyway: "always use the DMA API" costs nothing.
//
//   DirectOps ops(guest_memory, coherent_pool, DmaAddr{coherent_gpa.value()});
//   MappingRecord r = VDMA_TRY(ops.map_record(buf, 512, Direction::kToDevice));
#pragma once

#include "vdma/dma/coherent_pool.h"
#include "vdma/dma/dma_ops.h"
#include "vdma/memory/errors.h"
#include "vdma/memory/guest_memory.h"

namespace vdma::dma {

// Maps a memory-module lookup error to the DMA error a caller acts on.
inline Errc dma_error_for_lookup(std::error_code ec) {
  return ec == memory::Errc::kOverflow ? Errc::kOverflow : Errc::kNotDmaable;
}

class DirectOps final : public DmaOps {
 public:
  // `coherent` must outlive the ops; coherent_dma is the pool's Gpa.
  DirectOps(const memory::GuestMemory& memory, CoherentPool& coherent, DmaAddr coherent_dma)
      : memory_(memory), coherent_(coherent), coherent_dma_(coherent_dma) {
    // The hot region: the largest shared one (guest RAM when it is shared), fixed now so
    // the fast path reads only immutable state (no race between data-path threads).
    for (const memory::GuestRegion& r : memory.regions()) {
      if (r.shared() && r.size > hot_size_) {
        hot_base_ = reinterpret_cast<std::uintptr_t>(r.host);
        hot_size_ = r.size;
        hot_gpa_ = r.gpa.value();
      }
    }
  }

  OpsKind kind() const override { return OpsKind::kDirect; }
  std::uint64_t max_mapping_size() const override { return UINT64_MAX; }

  Result<MappingRecord> map_record(void* cpu, std::uint64_t len, Direction dir) override {
    // Fast path: inside the hot region. `len - 1 < hot_size_ - off` rejects len 0 (it
    // wraps) and any range running past the end, in one compare; `off < hot_size_` rejects
    // an address below the region (it wraps too).
    const std::uint64_t off = reinterpret_cast<std::uintptr_t>(cpu) - hot_base_;
    if (off < hot_size_ && len - 1 < hot_size_ - off) {
      return MappingRecord{DmaAddr{hot_gpa_ + off}, static_cast<std::byte*>(cpu), len, 0, dir};
    }
    return map_other(cpu, len, dir);
  }

 private:
  // Any other shared region, or the error.
  Result<MappingRecord> map_other(void* cpu, std::uint64_t len, Direction dir) const {
    if (len == 0) return Err(Errc::kZeroLength);
    auto* p = static_cast<std::byte*>(cpu);
    const memory::GuestRegion* r = memory_.region_holding(p);
    if (r == nullptr || !r->shared() || len > r->size - static_cast<std::uint64_t>(p - r->host)) {
      // Slow path only to name the error (overflow vs not DMA-able).
      return Err(checked_end(reinterpret_cast<std::uintptr_t>(p), len) ? Errc::kNotDmaable
                                                                       : Errc::kOverflow);
    }
    return MappingRecord{DmaAddr{r->gpa.value() + static_cast<std::uint64_t>(p - r->host)}, p, len,
                         0, dir};
  }

 public:
  // Stateless: nothing to undo. (A double unmap of a record is therefore harmless here;
  // the RAII Mapping still reports kNotMapped for it.)
  Result<void> unmap_record(const MappingRecord&) override { return Ok(); }
  Result<void> sync_record_for_cpu(const MappingRecord& m, std::uint64_t off,
                                   std::uint64_t len) override {
    VDMA_TRY(sync_range(m, off, len));
    return Ok();
  }
  Result<void> sync_record_for_device(const MappingRecord& m, std::uint64_t off,
                                      std::uint64_t len) override {
    VDMA_TRY(sync_range(m, off, len));
    return Ok();
  }
  Result<CoherentRecord> alloc_coherent_record(std::uint64_t len) override {
    return coherent_.allocate(len, coherent_dma_);
  }
  Result<void> free_coherent_record(const CoherentRecord& c) override {
    return coherent_.free(c, coherent_dma_);
  }

 private:
  const memory::GuestMemory& memory_;
  CoherentPool& coherent_;
  DmaAddr coherent_dma_;
  std::uintptr_t hot_base_ = 0;
  std::uint64_t hot_size_ = 0;  // 0: no shared region (every map takes the slow path)
  std::uint64_t hot_gpa_ = 0;
};

}  // namespace vdma::dma

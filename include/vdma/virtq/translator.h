// How a device turns a DMA address from a ring into host memory.
//
// A Translator maps (DmaAddr, length, access) to host bytes or to a virtq error. Two come
// with the module: GuestMemoryTranslator (the device sees guest-physical addresses: the
// traditional and bounce cases) and IommuTranslator (DMA addresses are IOVAs checked
// against the IOMMU's table, with permissions). The vhost layer adds its own for a memory
// table received over a socket.
//
//   GuestMemoryTranslator t(guest.memory());
//   std::byte* p = VDMA_TRY(t.translate(desc_addr, 512, memory::Access::kWrite));
#pragma once

#include <concepts>
#include <cstdint>
#include <optional>

#include "vdma/base/result.h"
#include "vdma/dma/iommu.h"
#include "vdma/memory/address.h"
#include "vdma/memory/errors.h"
#include "vdma/memory/guest_memory.h"
#include "vdma/memory/iotlb.h"
#include "vdma/virtq/errors.h"
#include "vdma/virtq/types.h"

namespace vdma::virtq {

template <class T>
concept Translator = requires(const T& t, DmaAddr a, std::uint64_t len, memory::Access acc) {
  { t.translate(a, len, acc) } -> std::same_as<Result<std::byte*>>;
};

// A Translator that can also translate the longest host-contiguous prefix of a range
// (`len` of the answer <= the length asked, never 0): a device then splits a descriptor
// into several host segments instead of refusing it.
template <class T>
concept PieceTranslator = Translator<T> &&
    requires(const T& t, DmaAddr a, std::uint64_t len, memory::Access acc) {
  { t.translate_piece(a, len, acc) } -> std::same_as<Result<DeviceSegment>>;
};

// The most host segments one chain may become (descriptors split by a PieceTranslator
// included); beyond it the chain is refused with kChainTooLong.
inline constexpr std::size_t kMaxChainSegments = 4096;

// The virtq error for a failed memory-module lookup.
inline Errc translation_error(std::error_code ec) {
  if (ec == memory::Errc::kOverflow) return Errc::kAddressOverflow;
  if (ec == memory::Errc::kIotlbPermission) return Errc::kAccessDenied;
  if (ec == memory::Errc::kZeroLength) return Errc::kZeroLengthDesc;
  return Errc::kAddressNotMapped;
}

class GuestMemoryTranslator {
 public:
  explicit GuestMemoryTranslator(const memory::GuestMemory& m) : memory_(&m) {}
  // Shared regions only: a private region is not part of what the device was given.
  // Inlined: the device translates every descriptor through it.
  [[gnu::always_inline]] Result<std::byte*> translate(DmaAddr a, std::uint64_t len,
                                                      memory::Access) const {
    if (len == 0) return Err(Errc::kZeroLengthDesc);
    if (!checked_end(a.value(), len)) return Err(Errc::kAddressOverflow);
    const memory::GuestRegion* r = memory_->region_at(Gpa{a.value()});
    if (r == nullptr || !r->shared()) return Err(Errc::kAddressNotMapped);
    const std::uint64_t off = a.value() - r->gpa.value();
    if (len > r->size - off) return Err(Errc::kAddressNotMapped);  // runs past the region
    return r->host + off;
  }

 private:
  const memory::GuestMemory* memory_;
};

class IommuTranslator {
 public:
  IommuTranslator(const dma::Iommu& iommu, const memory::GuestMemory& m)
      : iommu_(&iommu), memory_(m) {}
  Result<std::byte*> translate(DmaAddr a, std::uint64_t len, memory::Access acc) const {
    auto t = iommu_->translate(Iova{a.value()}, len, acc);
    if (!t) return Err(translation_error(t.error()));
    return memory_.translate(DmaAddr{t->target}, len, acc);
  }

 private:
  const dma::Iommu* iommu_;
  GuestMemoryTranslator memory_;
};

// The device side of an in-process pair for any platform: through the IOMMU when there
// is one in use (DMA addresses are IOVAs), else guest-physical.
class PlatformTranslator {
 public:
  PlatformTranslator(const dma::Iommu* iommu, const memory::GuestMemory& m)
      : memory_(m),
        iommu_(iommu ? std::optional<IommuTranslator>(IommuTranslator(*iommu, m)) : std::nullopt) {}
  Result<std::byte*> translate(DmaAddr a, std::uint64_t len, memory::Access acc) const {
    return iommu_ ? iommu_->translate(a, len, acc) : memory_.translate(a, len, acc);
  }

 private:
  GuestMemoryTranslator memory_;
  std::optional<IommuTranslator> iommu_;
};

static_assert(Translator<GuestMemoryTranslator>);
static_assert(Translator<IommuTranslator>);
static_assert(Translator<PlatformTranslator>);

}  // namespace vdma::virtq

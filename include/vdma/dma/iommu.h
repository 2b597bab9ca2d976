// Iommu: the driver-side IOMMU. Owns an IOVA space and the translation table (the source
// of truth), and tells listeners (the device's IOTLB, over vhost-user later) about every
// update and invalidation.
//
// - map() is page granular: it maps the pages covering [gpa, gpa + len) with the given
//   permission and returns the IOVA of gpa itself.
// - unmap() removes the entry, then delivers the invalidation to every listener and
//   returns only after all of them took it; only then is the IOVA range reused. If a
//   listener fails, the range is quarantined (never reused) and unmap reports it.
// - translate() is the device side's lookup (in-process): (IOVA, length, access) to the
//   Gpa range, or miss / permission / fragmented.
//
//   Iommu iommu;
//   Iova a = VDMA_TRY(iommu.map(Gpa{0x12345}, 100, Access::kRead));
//   auto t = iommu.translate(a, 100, Access::kRead);   // t->target == 0x12345
//   VDMA_TRY(iommu.unmap(a, 100));
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "vdma/base/result.h"
#include "vdma/memory/address.h"
#include "vdma/memory/iotlb.h"
#include "vdma/memory/range_allocator.h"

namespace vdma::dma {

class IotlbListener {
 public:
  virtual ~IotlbListener() = default;
  // A new translation. A failure undoes the mapping.
  virtual Result<void> iotlb_update(const memory::IotlbEntry& e) = 0;
  // Must return only once the device can no longer use [iova, iova + size).
  virtual Result<void> iotlb_invalidate(Iova iova, std::uint64_t size) = 0;
};

struct IommuOptions {
  Iova base{std::uint64_t{1} << 32};  // IOVA 0 is never handed out
  std::uint64_t size = std::uint64_t{1} << 40;
};

struct IommuStats {
  std::uint64_t entries = 0;
  std::uint64_t updates = 0;
  std::uint64_t invalidations = 0;
  std::uint64_t quarantined_bytes = 0;
};

class Iommu {
 public:
  explicit Iommu(const IommuOptions& opts = {});

  // iova_align: alignment of the IOVA of the first page (a power of two >= 4096).
  // Errors: kZeroLength, kOverflow, kIovaSpaceFull, kUpdateFailed.
  Result<Iova> map(Gpa gpa, std::uint64_t len, memory::Access perm,
                   std::uint64_t iova_align = 4096);
  // iova/len as returned by / passed to map(). Errors: kUnknownMapping, kNotMapped,
  // kInvalidationFailed.
  Result<void> unmap(Iova iova, std::uint64_t len);

  // memory::Errc kIotlbMiss / kIotlbPermission / kIotlbFragmented, kZeroLength, kOverflow.
  Result<memory::IotlbTranslation> translate(Iova iova, std::uint64_t len,
                                             memory::Access access) const;

  // Listeners must outlive their registration.
  void add_listener(IotlbListener* l);
  void remove_listener(IotlbListener* l);

  IommuStats stats() const;

 private:
  Result<void> notify_update(const memory::IotlbEntry& e);
  Result<void> notify_invalidate(Iova iova, std::uint64_t size);

  mutable std::mutex mu_;
  memory::IotlbTable table_;  // guarded by mu_
  memory::RangeAllocator iovas_;
  std::vector<IotlbListener*> listeners_;  // guarded by mu_
  std::atomic<std::uint64_t> updates_{0};
  std::atomic<std::uint64_t> invalidations_{0};
  std::atomic<std::uint64_t> quarantined_{0};
};

}  // namespace vdma::dma

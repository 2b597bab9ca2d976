#include "vdma/dma/iommu.h"

#include <algorithm>

#include "vdma/base/log.h"
#include "vdma/dma/errors.h"
#include "vdma/memory/errors.h"

namespace vdma::dma {
namespace {
constexpr std::uint64_t kPage = 4096;

struct PageSpan {
  std::uint64_t start;  // page aligned
  std::uint64_t size;   // multiple of kPage
};

std::optional<PageSpan> pages_covering(std::uint64_t addr, std::uint64_t len) {
  auto end = checked_end(addr, len);
  if (!end || *end > UINT64_MAX - kPage) return std::nullopt;
  std::uint64_t start = addr & ~(kPage - 1);
  return PageSpan{start, ((*end + kPage - 1) & ~(kPage - 1)) - start};
}
}  // namespace

Iommu::Iommu(const IommuOptions& opts) : iovas_(opts.base.value(), opts.size) {}

Result<Iova> Iommu::map(Gpa gpa, std::uint64_t len, memory::Access perm, std::uint64_t iova_align) {
  if (len == 0) return Err(Errc::kZeroLength);
  if (iova_align < kPage || (iova_align & (iova_align - 1)) != 0) return Err(Errc::kInvalidOption);
  if (perm == memory::Access::kNone) return Err(Errc::kInvalidOption);
  auto pages = pages_covering(gpa.value(), len);
  if (!pages) return Err(Errc::kOverflow);
  auto iova = iovas_.allocate(pages->size, iova_align);
  if (!iova) return Err(Errc::kIovaSpaceFull);
  memory::IotlbEntry e{Iova{*iova}, pages->size, pages->start, perm};
  {
    std::lock_guard lock(mu_);
    auto r = table_.insert(e);
    VDMA_CHECK_MSG(r.has_value(), "fresh IOVA range already in the IOMMU table");
  }
  if (auto r = notify_update(e); !r) {
    {
      std::lock_guard lock(mu_);
      table_.invalidate(e.iova, e.size);
    }
    // Listeners that took the update must drop it before the range is reused.
    if (notify_invalidate(e.iova, e.size))
      (void)iovas_.free(*iova, pages->size);
    else
      quarantined_.fetch_add(pages->size, std::memory_order_relaxed);
    return Err(Errc::kUpdateFailed);
  }
  return Iova{*iova + (gpa.value() - pages->start)};
}

Result<void> Iommu::unmap(Iova iova, std::uint64_t len) {
  if (len == 0) return Err(Errc::kUnknownMapping);
  auto pages = pages_covering(iova.value(), len);
  if (!pages) return Err(Errc::kUnknownMapping);
  {
    std::lock_guard lock(mu_);
    const memory::IotlbEntry* e = table_.find(Iova{pages->start});
    if (e == nullptr) return Err(Errc::kNotMapped);
    if (e->iova.value() != pages->start || e->size != pages->size) {
      return Err(Errc::kUnknownMapping);
    }
    table_.invalidate(e->iova, pages->size);
  }
  if (auto r = notify_invalidate(Iova{pages->start}, pages->size); !r) {
    quarantined_.fetch_add(pages->size, std::memory_order_relaxed);
    log_error("dma", "IOTLB invalidation of iova {:#x}+{:#x} failed ({}); range quarantined",
              pages->start, pages->size, r.error().message());
    return Err(Errc::kInvalidationFailed);
  }
  auto freed = iovas_.free(pages->start, pages->size);
  VDMA_CHECK_MSG(freed.has_value(), "IOVA range in the table but not allocated");
  return Ok();
}

Result<memory::IotlbTranslation> Iommu::translate(Iova iova, std::uint64_t len,
                                                  memory::Access access) const {
  std::lock_guard lock(mu_);
  return table_.lookup(iova, len, access);
}

void Iommu::add_listener(IotlbListener* l) {
  std::lock_guard lock(mu_);
  listeners_.push_back(l);
}

void Iommu::remove_listener(IotlbListener* l) {
  std::lock_guard lock(mu_);
  listeners_.erase(std::remove(listeners_.begin(), listeners_.end(), l), listeners_.end());
}

Result<void> Iommu::notify_update(const memory::IotlbEntry& e) {
  std::vector<IotlbListener*> ls;
  {
    std::lock_guard lock(mu_);
    if (!listeners_.empty()) ls = listeners_;  // no allocation when nobody listens
  }
  updates_.fetch_add(1, std::memory_order_relaxed);
  for (IotlbListener* l : ls) VDMA_TRY(l->iotlb_update(e));
  return Ok();
}

Result<void> Iommu::notify_invalidate(Iova iova, std::uint64_t size) {
  std::vector<IotlbListener*> ls;
  {
    std::lock_guard lock(mu_);
    if (!listeners_.empty()) ls = listeners_;  // no allocation when nobody listens
  }
  invalidations_.fetch_add(1, std::memory_order_relaxed);
  std::error_code first;
  for (IotlbListener* l : ls) {  // every listener hears it, even after one fails
    auto r = l->iotlb_invalidate(iova, size);
    if (!r && !first) first = r.error();
  }
  if (first) return Err(first);
  return Ok();
}

IommuStats Iommu::stats() const {
  std::lock_guard lock(mu_);
  return IommuStats{table_.size(), updates_.load(std::memory_order_relaxed),
                    invalidations_.load(std::memory_order_relaxed),
                    quarantined_.load(std::memory_order_relaxed)};
}

}  // namespace vdma::dma

#include "vdma/vhost/frontend_iotlb.h"

#include "vdma/base/log.h"
#include "vdma/vhost/frontend_errors.h"

namespace vdma::vhost {
namespace {

constexpr std::string_view kLog = "vhost-frontend";
constexpr std::uint64_t kPage = 4096;
// A miss is answered with at most this much (the probe's upper bound).
constexpr std::uint64_t kMaxMissRun = std::uint64_t{1} << 36;

IotlbPerm to_wire(memory::Access a) {
  return static_cast<IotlbPerm>(static_cast<std::uint8_t>(a));
}
memory::Access from_wire(IotlbPerm p) {
  return static_cast<memory::Access>(static_cast<std::uint8_t>(p));
}

}  // namespace

void FrontendIotlb::set_channel(std::shared_ptr<FrontendChannel> channel) {
  std::lock_guard lock(mu_);
  channel_ = std::move(channel);
}

std::shared_ptr<FrontendChannel> FrontendIotlb::channel() const {
  if (!live_.load(std::memory_order_acquire)) return nullptr;
  std::lock_guard lock(mu_);
  return channel_;
}

Result<void> FrontendIotlb::iotlb_update(const memory::IotlbEntry& e) {
  auto ch = channel();
  if (!ch) return Ok();
  auto r = send_update(*ch, e.iova, e.size, e.target, e.perm);
  if (!r && is_disconnect(r.error())) {
    // The back end is gone; the next one learns the mapping by a miss.
    return Ok();
  }
  return r;
}

Result<void> FrontendIotlb::iotlb_invalidate(Iova iova, std::uint64_t size) {
  auto ch = channel();
  if (!ch) return Ok();
  IotlbMsg m{.iova = iova.value(), .size = size, .type = IotlbType::kInvalidate};
  auto r = ch->request_acked(FrontendRequest::kIotlbMsg, m);
  if (!r && is_disconnect(r.error())) return Ok();  // a back end that is gone uses nothing
  if (r) invalidations_.fetch_add(1, std::memory_order_relaxed);
  return r;
}

Result<void> FrontendIotlb::send_update(FrontendChannel& ch, Iova iova, std::uint64_t size,
                                        std::uint64_t gpa, memory::Access perm) {
  // The back end maps user addresses of the memory table; the Iommu's targets are GPAs.
  std::span<std::byte> host = VDMA_TRY(memory_.translate(Gpa{gpa}, size));
  IotlbMsg m{.iova = iova.value(),
             .size = size,
             .user_addr = reinterpret_cast<std::uintptr_t>(host.data()),
             .perm = to_wire(perm),
             .type = IotlbType::kUpdate};
  VDMA_TRY(ch.request_acked(FrontendRequest::kIotlbMsg, m));
  updates_.fetch_add(1, std::memory_order_relaxed);
  return Ok();
}

Result<void> FrontendIotlb::answer_miss(Iova iova, IotlbPerm perm) {
  misses_.fetch_add(1, std::memory_order_relaxed);
  auto ch = channel();
  if (!ch) return Err(FrontendErrc::kDisconnected);
  const std::uint64_t page = iova.value() & ~(kPage - 1);
  // Grant what the IOMMU grants: read-write if the mapping allows it, else what was asked.
  memory::Access access = memory::Access::kReadWrite;
  if (!iommu_.translate(Iova{page}, kPage, access)) {
    access = from_wire(perm);
    if (!iommu_.translate(Iova{page}, kPage, access)) {
      unanswered_.fetch_add(1, std::memory_order_relaxed);
      log_warn(kLog, "IOTLB miss at iova {:#x} ({}) is not mapped; not answered", iova.value(),
               memory::access_name(from_wire(perm)));
      return Ok();
    }
  }
  // The longest contiguous run from `page`: double while the whole run translates, then
  // binary-search the last doubling step page by page.
  std::uint64_t good = kPage;
  while (good < kMaxMissRun && iommu_.translate(Iova{page}, good * 2, access)) good *= 2;
  std::uint64_t bad = good * 2;
  while (bad - good > kPage) {
    const std::uint64_t mid = good + ((bad - good) / 2 & ~(kPage - 1));
    if (iommu_.translate(Iova{page}, mid, access)) {
      good = mid;
    } else {
      bad = mid;
    }
  }
  auto t = iommu_.translate(Iova{page}, good, access);
  if (!t) return Ok();  // unmapped meanwhile: nothing to answer
  return send_update(*ch, Iova{page}, good, t->target, access);
}

FrontendIotlbStats FrontendIotlb::stats() const {
  return {updates_.load(std::memory_order_relaxed), invalidations_.load(std::memory_order_relaxed),
          misses_.load(std::memory_order_relaxed), unanswered_.load(std::memory_order_relaxed)};
}

}  // namespace vdma::vhost

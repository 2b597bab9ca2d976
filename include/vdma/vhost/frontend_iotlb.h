// FrontendIotlb: connects the driver's IOMMU to a vhost-user back end's IOTLB.
//
// Registered as the Iommu's IotlbListener while ACCESS_PLATFORM is passed to the back end
// (the IOMMU profile). Every map becomes an IOTLB_MSG update and every unmap an IOTLB_MSG
// invalidation, each sent with need_reply and returning only after the back end acked it
// (so an unmap returns only once the device can no longer use the range). Translations go
// out as this process's user addresses (the Iommu's targets are GPAs). Thread-safe: map
// and unmap run on data-path threads; the channel serialises the messages.
//
// Misses from the back-end channel are answered from the Iommu, the source of truth: an
// update covering the missed IOVA (the longest contiguous translatable run, found by
// probing) or nothing when the IOVA is not mapped for that access.
//
// While not live (before the memory table went out, while disconnected) updates and
// invalidations are not sent and succeed: a back end that never heard of a mapping asks
// for it by a miss, and one that is gone can no longer use any.
//
//   FrontendIotlb iotlb(guest.memory(), *guest.iommu());
//   guest.iommu()->add_listener(&iotlb);
//   iotlb.set_channel(channel);                 // a std::shared_ptr<FrontendChannel>
//   iotlb.set_live(true);                       // after SET_MEM_TABLE
//   VDMA_TRY(iotlb.answer_miss(Iova{0x1000}, IotlbPerm::kRead));
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "vdma/dma/iommu.h"
#include "vdma/memory/guest_memory.h"
#include "vdma/vhost/frontend_channel.h"
#include "vdma/vhost/protocol.h"

namespace vdma::vhost {

struct FrontendIotlbStats {
  std::uint64_t updates = 0;        // IOTLB_MSG updates sent (pushed and miss answers)
  std::uint64_t invalidations = 0;  // IOTLB_MSG invalidations sent
  std::uint64_t misses = 0;         // misses received
  std::uint64_t unanswered = 0;     // misses for IOVAs not mapped for the access
};

class FrontendIotlb final : public dma::IotlbListener {
 public:
  FrontendIotlb(const memory::GuestMemory& memory, dma::Iommu& iommu)
      : memory_(memory), iommu_(iommu) {}

  // Points the bridge at a connection's channel (nullptr: none); call while not live. A
  // call in flight keeps the old channel alive until it returns.
  void set_channel(std::shared_ptr<FrontendChannel> channel);
  // Live: the channel is set and the back end has the memory table.
  void set_live(bool live) { live_.store(live, std::memory_order_release); }

  Result<void> iotlb_update(const memory::IotlbEntry& e) override;
  Result<void> iotlb_invalidate(Iova iova, std::uint64_t size) override;

  // BACKEND_IOTLB_MSG miss for `iova` needing `perm` (call only while live). Errors:
  // channel errors only (an unmapped IOVA is answered with nothing, as the spec says).
  Result<void> answer_miss(Iova iova, IotlbPerm perm);

  FrontendIotlbStats stats() const;

 private:
  Result<void> send_update(FrontendChannel& ch, Iova iova, std::uint64_t size, std::uint64_t gpa,
                           memory::Access perm);

  // The channel of a live connection, or nullptr.
  std::shared_ptr<FrontendChannel> channel() const;

  mutable std::mutex mu_;
  std::shared_ptr<FrontendChannel> channel_;  // guarded by mu_
  const memory::GuestMemory& memory_;
  dma::Iommu& iommu_;
  std::atomic<bool> live_{false};
  std::atomic<std::uint64_t> updates_{0};
  std::atomic<std::uint64_t> invalidations_{0};
  std::atomic<std::uint64_t> misses_{0};
  std::atomic<std::uint64_t> unanswered_{0};
};

}  // namespace vdma::vhost

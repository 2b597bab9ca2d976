// SplitDeviceQueue: the device ("backend") side of a split virtqueue (VIRTIO 1.2, 2.7).
//
// pop() reads the next available chain through a Translator and returns it as host
// spans, readable first. Everything in the rings is guest-controlled: each descriptor is
// copied once into a local and validated before use (index range, loops, chain length,
// nested or chained indirect tables, table length, readable-after-writable, zero length,
// overflow, translation and IOMMU permission). A malformed chain is rejected: it is
// returned to the driver with length 0 and pop() reports why; the queue keeps serving.
// An avail index that jumps by more than the queue size, or a head index out of range
// (which cannot be returned), breaks the queue. A translation miss (kTranslationMiss,
// from an IOTLB cache that has to ask the front end) is neither: pop() leaves the chain
// in the ring, changes nothing, and the caller retries once the miss is answered.
//
//   auto q = VDMA_TRY(SplitDeviceQueue<GuestMemoryTranslator>::Create(t, cfg));
//   Chain c;
//   while (true) {
//     auto r = q.pop(c);
//     if (!r && r.error() == Errc::kTranslationMiss) break;  // retry after the IOTLB update
//     if (!r) { if (q.broken()) break; else continue; }   // rejected chain: logged
//     if (!*r) break;                                     // nothing available
//     VDMA_TRY(q.push_used(c.head, process(c)));
//   }
//   if (q.publish_used()) notify_driver();
#pragma once

#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "vdma/base/log.h"
#include "vdma/base/result.h"
#include "vdma/virtq/cache_line.h"
#include "vdma/virtq/chain_builder.h"
#include "vdma/virtq/errors.h"
#include "vdma/virtq/split_layout.h"
#include "vdma/virtq/translator.h"
#include "vdma/virtq/types.h"

namespace vdma::virtq {

template <Translator T>
class SplitDeviceQueue {
 public:
  // Translates the three ring areas once. `avail_base` is where to resume
  // (SET_VRING_BASE); the used index resumes there too. Errors: kInvalidQueueSize,
  // translation errors for the ring areas (kTranslationMiss: call Create again once the
  // miss is answered).
  static Result<SplitDeviceQueue> Create(const T& translator, const DeviceQueueConfig& cfg,
                                         std::uint16_t avail_base = 0) {
    const std::uint32_t n = cfg.rings.size();
    if (n == 0 || n > kMaxQueueSize || (n & (n - 1)) != 0) return Err(Errc::kInvalidQueueSize);
    const std::uint64_t avail_bytes = SplitAreaSizes::avail(n) + 2;  // + used_event
    const std::uint64_t used_bytes = SplitAreaSizes::used(n) + 2;    // + avail_event
    SplitDeviceQueue q(translator, cfg, avail_base);
    q.desc_ = reinterpret_cast<SplitDesc*>(VDMA_TRY(
        translator.translate(cfg.rings.desc, SplitAreaSizes::desc(n), memory::Access::kRead)));
    q.avail_ = reinterpret_cast<SplitAvailHeader*>(VDMA_TRY(translator.translate(
        cfg.rings.driver, avail_bytes - 2 * !cfg.features.event_idx, memory::Access::kRead)));
    q.used_ = reinterpret_cast<SplitUsedHeader*>(VDMA_TRY(translator.translate(
        cfg.rings.device, used_bytes - 2 * !cfg.features.event_idx, memory::Access::kReadWrite)));
    if (reinterpret_cast<std::uintptr_t>(q.desc_) % 16 ||
        reinterpret_cast<std::uintptr_t>(q.avail_) % 2 ||
        reinterpret_cast<std::uintptr_t>(q.used_) % 4) {
      return Err(Errc::kInvalidConfig);  // 2.7 alignment rules
    }
    return q;
  }

  // The next available chain into `out`. Returns false if none. Errors: kBroken, the
  // reason a chain was rejected (it has been returned with length 0 already), or
  // kTranslationMiss: an address of the chain is not in the device's IOTLB yet; nothing
  // was consumed or changed, and the next pop() reads the same chain again from the ring.
  Result<bool> pop(Chain& out) {
    if (broken_) return Err(Errc::kBroken);
    if (avail_cache_ == last_avail_) {
      // Acquire: pairs with the driver's release store of avail->idx; ring entries and
      // descriptors it covers are read after this.
      avail_cache_ = std::atomic_ref<std::uint16_t>(avail_->idx).load(std::memory_order_acquire);
      if (static_cast<std::uint16_t>(avail_cache_ - last_avail_) > size()) {
        return fail(Errc::kAvailIdxJump,
                    fmt::format("avail idx {} last {}", avail_cache_, last_avail_));
      }
      if (avail_cache_ == last_avail_) return false;
    }
    // guest-controlled: read the head once (per attempt).
    const std::uint16_t head = std::atomic_ref<std::uint16_t>(avail_ring()[last_avail_ & mask()])
                                   .load(std::memory_order_relaxed);
    if (head >= size()) return fail(Errc::kDescIndexOutOfRange, fmt::format("head {}", head));
    if (in_flight_[head]) {
      return fail(Errc::kHeadInFlight, fmt::format("head {}", head));
    }
    out.clear();
    out.head = head;
    auto walked = walk(head, out);
    if (!walked && walked.error() == Errc::kTranslationMiss) {
      // Not consumed: last_avail_, in_flight_ and stats are untouched; avail_cache_ is
      // still a value the driver published, so the retry reads this same entry.
      out.clear();
      return Err(Errc::kTranslationMiss);
    }
    ++last_avail_;
    in_flight_[head] = 1;
    ++stats_.added;
    if (!walked) {
      ++stats_.rejected;
      out.clear();
      VDMA_TRY(push_used(head, 0));
      return Err(walked.error());
    }
    return true;
  }

  // Returns chain `head` to the driver with `len` bytes written. Becomes visible at
  // publish_used(). Errors: kNotInFlight (never popped or already returned), kBroken.
  Result<void> push_used(std::uint16_t head, std::uint32_t len) {
    if (broken_) return Err(Errc::kBroken);
    if (head >= size() || !in_flight_[head]) return Err(Errc::kNotInFlight);
    in_flight_[head] = 0;
    SplitUsedElem* e = &used_ring()[used_idx_ & mask()];
    std::atomic_ref<std::uint32_t>(e->id).store(head, std::memory_order_relaxed);
    std::atomic_ref<std::uint32_t>(e->len).store(len, std::memory_order_relaxed);
    ++used_idx_;
    ++stats_.completed;
    return Ok();
  }

  // Publishes used entries pushed since the last call; true if the driver wants a
  // notification (2.7.10 / 2.7.7).
  bool publish_used() {
    const std::uint16_t old = published_used_;
    if (old == used_idx_ || broken_) return false;
    // Release: used entries become visible before the index; pairs with the driver's
    // acquire load of used->idx.
    std::atomic_ref<std::uint16_t>(used_->idx).store(used_idx_, std::memory_order_release);
    published_used_ = used_idx_;
    // Full barrier: pairs with the driver's fence in enable_callbacks().
    std::atomic_thread_fence(std::memory_order_seq_cst);
    bool notify;
    if (cfg_.features.event_idx) {
      notify = need_event(load_relaxed(used_event()), used_idx_, old);
    } else {
      notify = (load_relaxed(&avail_->flags) & kAvailFNoInterrupt) == 0;
    }
    if (notify) ++stats_.notifications;
    return notify;
  }

  // Driver-notification (kick) suppression, 2.7.7. After enabling, check for available
  // buffers again: one may have arrived before the driver saw the change.
  void set_notifications(bool enabled) {
    if (cfg_.features.event_idx) {
      // Enabled: kick me at the next entry. Disabled: an index just behind, never passed.
      const auto event = static_cast<std::uint16_t>(enabled ? last_avail_ : last_avail_ - 1);
      std::atomic_ref<std::uint16_t>(*avail_event()).store(event, std::memory_order_relaxed);
    } else {
      std::atomic_ref<std::uint16_t>(used_->flags)
          .store(enabled ? 0 : kUsedFNoNotify, std::memory_order_relaxed);
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with kick_prepare's fence
  }

  // True if the driver has published chains not popped yet.
  bool has_available() const {
    return std::atomic_ref<std::uint16_t>(avail_->idx).load(std::memory_order_acquire) !=
           last_avail_;
  }

  std::uint32_t size() const { return size_; }
  std::uint16_t last_avail_idx() const { return last_avail_; }  // GET_VRING_BASE
  std::uint32_t in_flight() const { return static_cast<std::uint16_t>(last_avail_ - used_idx_); }
  bool broken() const { return broken_; }
  const std::string& broken_reason() const { return reason_; }
  const QueueStats& stats() const { return stats_; }

 private:
  SplitDeviceQueue(const T& t, const DeviceQueueConfig& cfg, std::uint16_t base)
      : translator_(&t),
        cfg_(cfg),
        size_(cfg.rings.size()),
        in_flight_(cfg.rings.size(), 0),
        last_avail_(base),
        avail_cache_(base),
        used_idx_(base),
        published_used_(base) {}

  std::uint32_t mask() const { return size() - 1; }
  static std::uint16_t load_relaxed(std::uint16_t* v) {
    return std::atomic_ref<std::uint16_t>(*v).load(std::memory_order_relaxed);
  }
  std::uint16_t* avail_ring() const { return reinterpret_cast<std::uint16_t*>(avail_ + 1); }
  std::uint16_t* used_event() const { return avail_ring() + size(); }
  SplitUsedElem* used_ring() const { return reinterpret_cast<SplitUsedElem*>(used_ + 1); }
  std::uint16_t* avail_event() const {
    return reinterpret_cast<std::uint16_t*>(used_ring() + size());
  }

  // Copies one descriptor out of guest memory (read once).
  static SplitDesc read_desc(const SplitDesc* table, std::uint32_t i) {
    SplitDesc d;
    std::memcpy(&d, &table[i], sizeof d);
    return d;
  }

  // Adds one descriptor's buffer to the chain.
  [[gnu::always_inline]] Result<void> add_segment(const SplitDesc& d, Chain& out) {
    return add_chain_segment(*translator_, d.addr, d.len, (d.flags & kDescFWrite) != 0, out);
  }

  // Walks `table` (n entries) from index `first`; at most n descriptors (2.7.5.3: a
  // chain visits each descriptor at most once, so n + 1 visits means a loop).
  Result<void> walk_table(const SplitDesc* table, std::uint32_t n, std::uint32_t first,
                          bool indirect, Chain& out) {
    std::uint32_t i = first;
    for (std::uint32_t visited = 0;; ++visited) {
      if (visited == n) return Err(Errc::kDescLoop);
      const SplitDesc d = read_desc(table, i);
      if (d.flags & kDescFIndirect) {
        if (indirect) return Err(Errc::kNestedIndirect);
        return Err(Errc::kIndirectWithNext);  // an indirect desc must be a chain's only one
      }
      VDMA_TRY(add_segment(d, out));
      ++out.ring_descs;
      if (!(d.flags & kDescFNext)) return Ok();
      if (d.next >= n) return Err(Errc::kDescIndexOutOfRange);
      i = d.next;
    }
  }

  Result<void> walk(std::uint16_t head, Chain& out) {
    const SplitDesc d = read_desc(desc_, head);
    if (!(d.flags & kDescFIndirect)) return walk_table(desc_, size(), head, false, out);
    // 2.7.5.3.1: only with the feature, never combined with NEXT.
    if (!cfg_.features.indirect) return Err(Errc::kIndirectNotNegotiated);
    if (d.flags & kDescFNext) return Err(Errc::kIndirectWithNext);
    if (d.len == 0 || d.len % sizeof(SplitDesc) != 0 || d.len / sizeof(SplitDesc) > size()) {
      return Err(Errc::kIndirectBadLength);
    }
    if (!checked_end(d.addr, d.len)) return Err(Errc::kAddressOverflow);
    auto* table = reinterpret_cast<const SplitDesc*>(
        VDMA_TRY(translator_->translate(DmaAddr{d.addr}, d.len, memory::Access::kRead)));
    VDMA_TRY(walk_table(table, d.len / sizeof(SplitDesc), 0, true, out));
    out.ring_descs = 1;
    return Ok();
  }

  Unexpected fail(Errc e, std::string detail) {
    broken_ = true;
    reason_ = fmt::format("{}: {}", describe(e), detail);
    log_error("virtq", "split device queue broken: {}", reason_);
    return Err(Errc::kBroken);
  }

  LinePad front_pad_{};  // see cache_line.h: hot state between two pads
  const T* translator_;
  DeviceQueueConfig cfg_;
  std::uint32_t size_;                 // cfg_.rings.size()
  SplitDesc* desc_ = nullptr;          // guest-controlled
  SplitAvailHeader* avail_ = nullptr;  // guest-controlled
  SplitUsedHeader* used_ = nullptr;
  LineVector<std::uint8_t> in_flight_;  // per head: popped and not yet returned
  std::uint16_t last_avail_;
  std::uint16_t avail_cache_;
  std::uint16_t used_idx_;
  std::uint16_t published_used_;
  bool broken_ = false;
  std::string reason_;
  QueueStats stats_;
  LinePad back_pad_{};
};

}  // namespace vdma::virtq

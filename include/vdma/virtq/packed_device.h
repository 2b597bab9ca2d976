// PackedDeviceQueue: the device ("backend") side of a packed virtqueue (VIRTIO 1.2, 2.8).
//
// Same API and the same hardening as SplitDeviceQueue. pop() reads the next available
// chain in ring order through a Translator and returns it as host spans, readable first;
// Chain::head is the buffer ID (from the chain's last descriptor, 2.8.6) and
// Chain::ring_descs the ring descriptors it took. Everything in the ring is
// guest-controlled: each descriptor is copied once into a local, then validated (chain
// length, nested or chained indirect tables, table length, readable-after-writable, zero
// length, overflow, translation and IOMMU permission). A malformed chain is rejected: it
// is returned to the driver with length 0 and pop() reports why; the queue keeps serving.
// What cannot be returned breaks the queue: a buffer ID >= the queue size, an ID made
// available again while in flight, or more descriptors in flight than the ring holds. A
// translation miss (kTranslationMiss, from an IOTLB cache that has to ask the front end)
// is neither: pop() leaves the chain in the ring, changes nothing (position, wrap
// counter, in-flight state, stats), and the caller retries once the miss is answered.
//
// Used descriptors (2.8.6): push_used() writes one at the used position and moves it on by
// the chain's ring descriptors (kept privately per ID at pop, never re-read from the
// ring). The flags of the first used descriptor since the last publish are held back;
// publish_used() writes them last with a release store, so the driver sees the batch at
// once (2.8.9 "Multi-buffer requests" does the same for one request).
//
//   auto q = VDMA_TRY(PackedDeviceQueue<GuestMemoryTranslator>::Create(t, cfg));
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
#include "vdma/virtq/packed_layout.h"
#include "vdma/virtq/translator.h"
#include "vdma/virtq/types.h"

namespace vdma::virtq {

template <Translator T>
class PackedDeviceQueue {
 public:
  // Where a fresh ring starts: descriptor 0, wrap counter 1 (2.8.1).
  static constexpr std::uint16_t kInitialBase = 0x8000;

  // Translates the three ring areas once. `avail_base` is where to resume, encoded as
  // vhost-user's SET_VRING_BASE does for packed rings: bits 0-14 the next avail
  // position, bit 15 the wrap counter (so the default, 0x8000, is a fresh ring). The used
  // position resumes there too (nothing in flight). Errors: kInvalidQueueSize,
  // kInvalidConfig (position >= size, misaligned areas), ring translation errors
  // (kTranslationMiss: call Create again once the miss is answered).
  static Result<PackedDeviceQueue> Create(const T& translator, const DeviceQueueConfig& cfg,
                                          std::uint16_t avail_base = kInitialBase) {
    const std::uint32_t n = cfg.rings.size();
    if (n == 0 || n > kMaxQueueSize) return Err(Errc::kInvalidQueueSize);
    if ((avail_base & 0x7fffu) >= n) return Err(Errc::kInvalidConfig);
    PackedDeviceQueue q(translator, cfg, avail_base);
    q.desc_ = reinterpret_cast<PackedDesc*>(VDMA_TRY(translator.translate(
        cfg.rings.desc, PackedAreaSizes::desc(n), memory::Access::kReadWrite)));
    q.driver_evt_ = reinterpret_cast<PackedEventSuppress*>(VDMA_TRY(
        translator.translate(cfg.rings.driver, PackedAreaSizes::event(), memory::Access::kRead)));
    q.device_evt_ = reinterpret_cast<PackedEventSuppress*>(VDMA_TRY(translator.translate(
        cfg.rings.device, PackedAreaSizes::event(), memory::Access::kReadWrite)));
    if (reinterpret_cast<std::uintptr_t>(q.desc_) % PackedAreaSizes::kDescAlign ||
        reinterpret_cast<std::uintptr_t>(q.driver_evt_) % PackedAreaSizes::kEventAlign ||
        reinterpret_cast<std::uintptr_t>(q.device_evt_) % PackedAreaSizes::kEventAlign) {
      return Err(Errc::kInvalidConfig);  // 2.8.10.1 alignment rules
    }
    return q;
  }

  // The next available chain into `out`. Returns false if none. Errors: kBroken, the
  // reason a chain was rejected (it has been returned with length 0 already), or
  // kTranslationMiss: an address of the chain is not in the device's IOTLB yet; nothing
  // was consumed or changed, and the next pop() reads the same chain again from the ring.
  Result<bool> pop(Chain& out) {
    if (broken_) return Err(Errc::kBroken);
    // Acquire: pairs with the driver's release store of the chain's first flags (its
    // kick); the rest of the chain is read after this.
    const std::uint16_t flags =
        std::atomic_ref<std::uint16_t>(desc_[avail_.pos].flags).load(std::memory_order_acquire);
    if (!is_avail(flags, avail_.wrap)) return false;
    const Position start = avail_;
    const bool complete = gather(flags);  // advances the avail position
    VDMA_TRY(check_admissible());
    out.clear();
    out.head = gathered_[gathered_n_ - 1].id;
    auto parsed = complete ? parse(out) : Result<void>(Err(Errc::kChainTooLong));
    if (!parsed && parsed.error() == Errc::kTranslationMiss) {
      // Not consumed: back to the chain's first descriptor (position and wrap counter);
      // nothing else was changed, and gathered_ is refilled by the next attempt.
      avail_ = start;
      out.clear();
      return Err(Errc::kTranslationMiss);
    }
    admit();
    if (!parsed) {
      ++stats_.rejected;
      out.clear();
      VDMA_TRY(push_used(out.head, 0));
      return Err(parsed.error());
    }
    out.ring_descs = static_cast<std::uint16_t>(gathered_n_);
    return true;
  }

  // Returns buffer `id` to the driver with `len` bytes written. Becomes visible at
  // publish_used(). Errors: kNotInFlight (never popped or already returned), kBroken.
  Result<void> push_used(std::uint16_t id, std::uint32_t len) {
    if (broken_) return Err(Errc::kBroken);
    if (id >= size() || !in_flight_[id]) return Err(Errc::kNotInFlight);
    in_flight_[id] = 0;
    const std::uint16_t descs = ring_descs_[id];
    in_flight_descs_ -= descs;
    --in_flight_chains_;
    PackedDesc* d = &desc_[used_.pos];
    std::atomic_ref<std::uint16_t>(d->id).store(id, std::memory_order_relaxed);
    std::atomic_ref<std::uint32_t>(d->len).store(len, std::memory_order_relaxed);
    // 2.8.1 / 2.8.4: AVAIL = USED = our wrap counter; WRITE says len means something.
    const auto f = static_cast<std::uint16_t>(
        (used_.wrap ? kPackedDescFAvail | kPackedDescFUsed : 0) | (len ? kDescFWrite : 0));
    if (pending_descs_ == 0) {
      pending_pos_ = used_.pos;
      pending_flags_ = f;
    } else {
      // Relaxed: published by publish_used()'s release store of the batch's first flags;
      // the driver reads no further until it sees that one.
      std::atomic_ref<std::uint16_t>(d->flags).store(f, std::memory_order_relaxed);
    }
    pending_descs_ += descs;
    advance(used_, descs);  // 2.8.6: skip the rest of the chain
    ++stats_.completed;
    return Ok();
  }

  // Publishes used descriptors pushed since the last call; true if the driver wants a
  // notification (2.8.10).
  bool publish_used() {
    if (pending_descs_ == 0 || broken_) return false;
    // Release: every used descriptor of the batch (id, len, the other flags) becomes
    // visible before the first one turns used; pairs with the driver's acquire load of
    // the flags at its used position.
    std::atomic_ref<std::uint16_t>(desc_[pending_pos_].flags)
        .store(pending_flags_, std::memory_order_release);
    const std::uint32_t added = std::exchange(pending_descs_, 0);
    // Full barrier: pairs with the driver's fence in enable_callbacks() / get_used()
    // (after it writes its suppression state, before it looks at the ring again).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const bool notify = wants_event(added);
    if (notify) ++stats_.notifications;
    return notify;
  }

  // Driver-notification (kick) suppression, 2.8.10: with EVENT_IDX an enabled device asks
  // for a kick at its next avail position. After enabling, check for available buffers
  // again: one may have arrived before the driver saw the change.
  void set_notifications(bool enabled) {
    auto flags = std::atomic_ref<std::uint16_t>(device_evt_->flags);
    if (!enabled) {
      flags.store(kEventFlagsDisable, std::memory_order_relaxed);
    } else if (cfg_.features.event_idx) {
      std::atomic_ref<std::uint16_t>(device_evt_->off_wrap)
          .store(last_avail_idx(), std::memory_order_relaxed);
      // Release: the offset is visible before the mode; pairs with the driver's acquire
      // load of these flags in kick_prepare().
      flags.store(kEventFlagsDesc, std::memory_order_release);
    } else {
      flags.store(kEventFlagsEnable, std::memory_order_relaxed);
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with kick_prepare's fence
  }

  // True if the driver has made a chain available that was not popped yet.
  bool has_available() const {
    // Acquire: as in pop().
    return is_avail(
        std::atomic_ref<std::uint16_t>(desc_[avail_.pos].flags).load(std::memory_order_acquire),
        avail_.wrap);
  }

  std::uint32_t size() const { return size_; }
  // GET_VRING_BASE for packed rings: (wrap counter << 15) | next avail position.
  std::uint16_t last_avail_idx() const {
    return static_cast<std::uint16_t>(avail_.pos | (avail_.wrap ? 0x8000u : 0u));
  }
  // Where the next used descriptor goes, encoded the same way.
  std::uint16_t last_used_idx() const {
    return static_cast<std::uint16_t>(used_.pos | (used_.wrap ? 0x8000u : 0u));
  }
  std::uint32_t in_flight() const { return in_flight_chains_; }
  bool broken() const { return broken_; }
  const std::string& broken_reason() const { return reason_; }
  const QueueStats& stats() const { return stats_; }

 private:
  struct Position {
    std::uint16_t pos = 0;
    bool wrap = true;
  };

  PackedDeviceQueue(const T& t, const DeviceQueueConfig& cfg, std::uint16_t base)
      : translator_(&t),
        cfg_(cfg),
        size_(cfg.rings.size()),
        in_flight_(cfg.rings.size(), 0),
        ring_descs_(cfg.rings.size(), 0),
        avail_{static_cast<std::uint16_t>(base & 0x7fffu), (base & 0x8000u) != 0},
        used_(avail_) {
    gathered_.resize(std::min<std::uint32_t>(cfg.rings.size(), 64));
  }

  // 2.8.1: available when AVAIL matches the wrap counter and USED does not.
  static bool is_avail(std::uint16_t flags, bool wrap) {
    return ((flags & kPackedDescFAvail) != 0) == wrap && ((flags & kPackedDescFUsed) != 0) != wrap;
  }
  void advance(Position& p, std::uint32_t n) const {
    std::uint32_t next = p.pos + n;
    if (next >= size()) {
      next -= size();
      p.wrap = !p.wrap;
    }
    p.pos = static_cast<std::uint16_t>(next);
  }

  // Copies the chain at the avail position (ring order, 2.8.6) into gathered_, one read
  // per field, and moves the avail position past it. `head_flags` is the head's flags as
  // already read. Returns false if no descriptor within the queue size ends the chain
  // (then gathered_ holds the whole ring and the last one read names the ID).
  bool gather(std::uint16_t head_flags) {
    const std::uint32_t n = size();
    std::uint16_t flags = head_flags;
    std::uint32_t count = 0;
    std::uint32_t pos = avail_.pos;
    bool wrap = avail_.wrap;
    for (;;) {
      const PackedDesc* s = &desc_[pos];
      if (count > 0)
        flags = std::atomic_ref<const std::uint16_t>(s->flags).load(std::memory_order_relaxed);
      if (count == gathered_.size()) [[unlikely]]
        gathered_.resize(std::min<std::size_t>(2 * count + 8, n));
      // guest-controlled: each field read once.
      PackedDesc& g = gathered_[count++];
      g.addr = std::atomic_ref<const std::uint64_t>(s->addr).load(std::memory_order_relaxed);
      g.len = std::atomic_ref<const std::uint32_t>(s->len).load(std::memory_order_relaxed);
      g.id = std::atomic_ref<const std::uint16_t>(s->id).load(std::memory_order_relaxed);
      g.flags = flags;
      if (++pos == n) {
        pos = 0;
        wrap = !wrap;
      }
      if (!(flags & kDescFNext) || count == n) break;
    }
    gathered_n_ = count;
    avail_ = Position{static_cast<std::uint16_t>(pos), wrap};
    return !(flags & kDescFNext);
  }

  // Breaks the queue if the gathered chain cannot be returned (bad buffer ID, ID still
  // in flight) or the driver overran descriptors still in flight.
  [[gnu::always_inline]] Result<void> check_admissible() {
    const std::uint16_t id = gathered_[gathered_n_ - 1].id;
    const auto descs = gathered_n_;
    if (id >= size()) return fail(Errc::kDescIndexOutOfRange, fmt::format("buffer id {}", id));
    if (in_flight_[id]) return fail(Errc::kHeadInFlight, fmt::format("buffer id {}", id));
    if (in_flight_descs_ + descs > size()) {
      return fail(Errc::kAvailIdxJump,
                  fmt::format("{} descriptors in flight, {} more", in_flight_descs_, descs));
    }
    return Ok();
  }

  // Takes the gathered (admissible) chain's buffer ID in flight.
  void admit() {
    const std::uint16_t id = gathered_[gathered_n_ - 1].id;
    const auto descs = static_cast<std::uint16_t>(gathered_n_);
    in_flight_[id] = 1;
    ring_descs_[id] = descs;
    in_flight_descs_ += descs;
    ++in_flight_chains_;
    ++stats_.added;
  }

  Result<void> parse(Chain& out) {
    const PackedDesc& head = gathered_.front();
    if (head.flags & kDescFIndirect) {
      // 2.8.7: only with the feature, and a chain's only descriptor.
      if (!cfg_.features.indirect) return Err(Errc::kIndirectNotNegotiated);
      if (gathered_n_ > 1) return Err(Errc::kIndirectWithNext);
      return walk_indirect(head, out);
    }
    for (std::uint32_t i = 0; i < gathered_n_; ++i) {
      const PackedDesc& d = gathered_[i];
      if (d.flags & kDescFIndirect) return Err(Errc::kIndirectWithNext);
      VDMA_TRY(add_segment(d, out));
    }
    return Ok();
  }

  // An indirect table: len / 16 descriptors in table order; WRITE is the only flag that
  // means anything there (NEXT and the ID are ignored), INDIRECT is refused.
  Result<void> walk_indirect(const PackedDesc& d, Chain& out) {
    if (d.len == 0 || d.len % sizeof(PackedDesc) != 0 || d.len / sizeof(PackedDesc) > size()) {
      return Err(Errc::kIndirectBadLength);
    }
    if (!checked_end(d.addr, d.len)) return Err(Errc::kAddressOverflow);
    const std::byte* table =
        VDMA_TRY(translator_->translate(DmaAddr{d.addr}, d.len, memory::Access::kRead));
    for (std::uint32_t i = 0; i < d.len / sizeof(PackedDesc); ++i) {
      PackedDesc e;  // guest-controlled: copied once
      std::memcpy(&e, table + i * sizeof(PackedDesc), sizeof e);
      if (e.flags & kDescFIndirect) return Err(Errc::kNestedIndirect);
      VDMA_TRY(add_segment(e, out));
    }
    return Ok();
  }

  // Adds one descriptor's buffer to the chain.
  [[gnu::always_inline]] Result<void> add_segment(const PackedDesc& d, Chain& out) {
    return add_chain_segment(*translator_, d.addr, d.len, (d.flags & kDescFWrite) != 0, out);
  }

  // Whether the driver's event suppression asks for a used-buffer notification now that
  // `added` used ring positions ending just before used_ were filled (2.8.10). The event
  // offset is driver-written: any value only changes the answer.
  bool wants_event(std::uint32_t added) const {
    // Acquire: pairs with the driver's release store of flags after off_wrap.
    const std::uint16_t flags =
        std::atomic_ref<std::uint16_t>(driver_evt_->flags).load(std::memory_order_acquire);
    if (flags == kEventFlagsDisable) return false;
    if (flags != kEventFlagsDesc || !cfg_.features.event_idx) return true;
    const std::uint16_t off_wrap =
        std::atomic_ref<std::uint16_t>(driver_evt_->off_wrap).load(std::memory_order_relaxed);
    // Positions relative to the start of the current lap; the other wrap is a lap back.
    auto event = static_cast<std::uint16_t>(off_wrap & 0x7fff);
    if (((off_wrap & 0x8000) != 0) != used_.wrap)
      event = static_cast<std::uint16_t>(event - size());
    return need_event(event, used_.pos, static_cast<std::uint16_t>(used_.pos - added));
  }

  Unexpected fail(Errc e, std::string detail) {
    broken_ = true;
    reason_ = fmt::format("{}: {}", describe(e), detail);
    log_error("virtq", "packed device queue broken: {}", reason_);
    return Err(Errc::kBroken);
  }

  LinePad front_pad_{};  // see cache_line.h: hot state between two pads
  const T* translator_;
  DeviceQueueConfig cfg_;
  std::uint32_t size_;                         // cfg_.rings.size()
  PackedDesc* desc_ = nullptr;                 // guest-controlled (we write used ones)
  PackedEventSuppress* driver_evt_ = nullptr;  // guest-controlled
  PackedEventSuppress* device_evt_ = nullptr;  // we write, the driver reads
  LineVector<std::uint8_t> in_flight_;         // per buffer ID: popped, not yet returned
  LineVector<std::uint16_t> ring_descs_;       // per buffer ID in flight: the used skip
  LineVector<PackedDesc> gathered_;            // the chain being popped (local copies)
  std::uint32_t gathered_n_ = 0;               // descriptors of it in gathered_
  Position avail_;                             // next descriptor to read
  Position used_;                              // where the next used descriptor goes
  std::uint32_t in_flight_descs_ = 0;
  std::uint32_t in_flight_chains_ = 0;
  std::uint32_t pending_descs_ = 0;  // used ring positions pushed, not yet published
  std::uint16_t pending_pos_ = 0;    // first used descriptor of the batch: flags held back
  std::uint16_t pending_flags_ = 0;
  bool broken_ = false;
  std::string reason_;
  QueueStats stats_;
  LinePad back_pad_{};
};

}  // namespace vdma::virtq

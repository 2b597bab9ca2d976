// SplitDriverQueue: the driver ("guest") side of a split virtqueue (VIRTIO 1.2, 2.7).
//
// Every address the device sees comes from the DMA API: the three ring areas are
// coherent allocations, every segment is mapped with the direction the device uses it
// in, and indirect tables are mapped to-device (read-only behind an IOMMU). The queue
// keeps a private shadow of everything it published (mapping, flags, free-list links) so
// completing a buffer never reads device-writable memory except the used entry itself,
// which is validated before use. A lying device marks the queue broken; every mapping is
// still released (detach_unused / destructor).
//
// Buffers added become visible to the device at kick_prepare(), which also says whether
// the device asked to be notified.
//
//   auto q = VDMA_TRY(SplitDriverQueue<dma::DirectOps>::Create(ops, cfg, arena));
//   VDMA_TRY(q.add_buffers(readable, writable, /*token=*/7));
//   if (q.kick_prepare()) notify_device();
//   while (auto u = VDMA_TRY(q.get_used())) handle(u->token, u->len);
#pragma once

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vdma/base/log.h"
#include "vdma/base/moving_ptr.h"
#include "vdma/base/result.h"
#include "vdma/dma/dma_ops.h"
#include "vdma/virtq/cache_line.h"
#include "vdma/virtq/errors.h"
#include "vdma/virtq/segment_mapping.h"
#include "vdma/virtq/split_layout.h"
#include "vdma/virtq/types.h"

namespace vdma::virtq {

template <dma::DmaProvider Ops>
class SplitDriverQueue {
 public:
  // Bytes of indirect-table arena a queue of this config needs (0 without indirect).
  static std::size_t indirect_arena_bytes(const DriverQueueConfig& cfg) {
    return cfg.features.indirect
               ? std::size_t{cfg.size} * std::min(cfg.max_indirect, cfg.size) * sizeof(SplitDesc)
               : 0;
  }

  // `arena`: driver memory for indirect tables (indirect_arena_bytes(cfg) bytes, 16-byte
  // aligned), unused without indirect. ops and arena must outlive the queue.
  static Result<SplitDriverQueue> Create(Ops& ops, DriverQueueConfig cfg,
                                         std::span<std::byte> arena = {}) {
    cfg.max_indirect = std::min(cfg.max_indirect, cfg.size);  // a table never beats the ring
    if (cfg.size == 0 || cfg.size > kMaxQueueSize || (cfg.size & (cfg.size - 1)) != 0) {
      return Err(Errc::kInvalidQueueSize);
    }
    if (cfg.features.indirect &&
        (cfg.max_indirect < 2 || arena.size() < indirect_arena_bytes(cfg) ||
         reinterpret_cast<std::uintptr_t>(arena.data()) % 16 != 0)) {
      return Err(Errc::kInvalidConfig);
    }
    SplitDriverQueue q(ops, cfg, arena);
    q.desc_rec_ = VDMA_TRY(ops.alloc_coherent_record(SplitAreaSizes::desc(cfg.size)));
    q.avail_rec_ = VDMA_TRY(ops.alloc_coherent_record(SplitAreaSizes::avail(cfg.size)));
    q.used_rec_ = VDMA_TRY(ops.alloc_coherent_record(SplitAreaSizes::used(cfg.size)));
    q.desc_ = reinterpret_cast<SplitDesc*>(q.desc_rec_.cpu);
    q.avail_ = reinterpret_cast<SplitAvailHeader*>(q.avail_rec_.cpu);
    q.used_ = reinterpret_cast<SplitUsedHeader*>(q.used_rec_.cpu);
    return q;
  }

  // ops_ is a MovingPtr: a moved-from queue releases nothing.
  SplitDriverQueue(SplitDriverQueue&& o) noexcept = default;
  SplitDriverQueue& operator=(SplitDriverQueue&& o) noexcept {
    if (this != &o) {
      release_all();
      std::destroy_at(this);
      std::construct_at(this, std::move(o));
    }
    return *this;
  }
  SplitDriverQueue(const SplitDriverQueue&) = delete;
  SplitDriverQueue& operator=(const SplitDriverQueue&) = delete;
  ~SplitDriverQueue() { release_all(); }

  // Adds one buffer: device-readable segments, then device-writable ones. Errors:
  // kBroken, kNoSegments, kSegmentTooLarge, kQueueFull (retry after get_used), or the
  // DMA error that refused a mapping (e.g. dma::Errc::kPoolFull, retryable). On error
  // nothing stays mapped.
  Result<void> add_buffers(std::span<const Segment> readable, std::span<const Segment> writable,
                           std::uint64_t token) {
    if (broken_) return Err(Errc::kBroken);
    const std::size_t n = readable.size() + writable.size();
    if (n == 0) return Err(Errc::kNoSegments);
    const bool indirect = cfg_.features.indirect && n > 1 && n <= cfg_.max_indirect;
    const std::size_t ring_descs = indirect ? 1 : n;
    if (ring_descs > num_free_) return Err(Errc::kQueueFull);

    // Map every segment first (into the private shadow), so a refused mapping leaves the
    // ring untouched.
    const std::uint16_t head = free_head_;
    HeadState& h = heads_[head];
    std::uint64_t capacity;
    if (indirect) {
      std::vector<dma::MappingRecord>& maps = indirect_maps_[head];
      capacity = VDMA_TRY(map_segments(*ops_, readable, writable, maps));
      auto r = publish_indirect(head, readable.size());
      if (!r) {
        unmap_all(*ops_, maps);
        return Err(r.error());
      }
      take_free(1);
    } else {
      capacity = VDMA_TRY(map_chain(readable, writable));
      publish_direct(n, readable.size());
    }
    h.token = token;
    h.capacity = capacity;
    h.ring_descs = static_cast<std::uint16_t>(ring_descs);
    h.indirect = indirect;
    h.state = HeadState::kStaged;
    // The avail ring entry; the index that exposes it is published by kick_prepare().
    avail_ring()[avail_idx_ & (cfg_.size - 1)] = head;
    avail_shadow_[avail_idx_ & (cfg_.size - 1)] = head;
    ++avail_idx_;
    ++stats_.added;
    return Ok();
  }

  // Publishes the buffers added since the last call and tells whether the device wants a
  // notification (2.7.13.3 / EVENT_IDX 2.7.10).
  bool kick_prepare() {
    const std::uint16_t old = published_idx_;
    const std::uint16_t now = avail_idx_;
    if (old == now || broken_) return false;
    for (std::uint16_t i = old; i != now; ++i)
      heads_[avail_shadow_[i & (cfg_.size - 1)]].state = HeadState::kPublished;
    // Release: descriptors and ring entries above become visible before the index; pairs
    // with the device's acquire load of avail->idx.
    std::atomic_ref<std::uint16_t>(avail_->idx).store(now, std::memory_order_release);
    published_idx_ = now;
    // Full barrier: the index store above must be visible before we read the device's
    // suppression state; pairs with the device's fence between writing avail_event (or
    // used->flags) and re-reading avail->idx.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    bool notify;
    if (cfg_.features.event_idx) {
      notify = need_event(load_relaxed(avail_event()), now, old);
    } else {
      notify = (load_relaxed(used_->flags) & kUsedFNoNotify) == 0;
    }
    if (notify) ++stats_.notifications;
    return notify;
  }

  // The next used buffer, or nullopt if none. Errors: kBroken (now or earlier; the
  // reason is in broken_reason()).
  Result<std::optional<UsedBuffer>> get_used() {
    if (broken_) return Err(Errc::kBroken);
    if (used_cache_ == last_used_ && !refresh_used_idx()) {
      if (broken_) return Err(Errc::kBroken);
      return std::optional<UsedBuffer>{};
    }
    // guest-controlled (device-written): read once into locals.
    const SplitUsedElem elem = copy_used_elem(last_used_ & (cfg_.size - 1));
    if (elem.id >= cfg_.size) {
      return fail(Errc::kUsedIdOutOfRange, fmt::format("used id {}", elem.id));
    }
    HeadState& h = heads_[elem.id];
    if (h.state != HeadState::kPublished) {
      return fail(Errc::kUsedIdNotOutstanding, fmt::format("used id {}", elem.id));
    }
    std::uint32_t len = elem.len;
    if (len > h.capacity) {
      if (cfg_.used_len_policy == UsedLenPolicy::kBreak) {
        return fail(Errc::kUsedLenTooLarge,
                    fmt::format("used id {} len {} capacity {}", elem.id, len, h.capacity));
      }
      len = static_cast<std::uint32_t>(h.capacity);
      ++stats_.clamped;
    }
    const std::uint64_t token = h.token;
    recycle(static_cast<std::uint16_t>(elem.id));
    ++last_used_;
    if (cfg_.features.event_idx && callbacks_) {
      // Ask for an interrupt at the next used entry.
      std::atomic_ref<std::uint16_t>(*used_event()).store(last_used_, std::memory_order_relaxed);
      event_pending_ = true;
    }
    ++stats_.completed;
    return std::optional<UsedBuffer>(UsedBuffer{token, len});
  }

  // Callback (used-buffer notification) suppression, 2.7.7.
  void disable_callbacks() {
    callbacks_ = false;
    if (cfg_.features.event_idx) {
      // An event index just behind us is never passed again (until 2^16 completions).
      std::atomic_ref<std::uint16_t>(*used_event())
          .store(static_cast<std::uint16_t>(last_used_ - 1), std::memory_order_relaxed);
    } else {
      std::atomic_ref<std::uint16_t>(avail_->flags)
          .store(kAvailFNoInterrupt, std::memory_order_relaxed);
    }
  }
  // Re-enables callbacks; returns false if used buffers arrived meanwhile (poll again).
  bool enable_callbacks() {
    callbacks_ = true;
    if (cfg_.features.event_idx) {
      std::atomic_ref<std::uint16_t>(*used_event()).store(last_used_, std::memory_order_relaxed);
    } else {
      std::atomic_ref<std::uint16_t>(avail_->flags).store(0, std::memory_order_relaxed);
    }
    // Pairs with the device's fence between publishing used->idx and reading our
    // suppression state: either it sees callbacks enabled or we see its entry.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return std::atomic_ref<std::uint16_t>(used_->idx).load(std::memory_order_acquire) == last_used_;
  }

  // After a device reset: takes back every buffer not returned, unmapping all of it,
  // and resets the ring to empty. Returns their tokens.
  std::vector<std::uint64_t> detach_unused() {
    std::vector<std::uint64_t> tokens;
    for (std::uint32_t id = 0; id < cfg_.size; ++id) {
      if (heads_[id].state == HeadState::kFree) continue;
      tokens.push_back(heads_[id].token);
      recycle(static_cast<std::uint16_t>(id));
    }
    reset_ring_state();
    // The reset ring keeps the caller's callback choice.
    if (callbacks_) {
      enable_callbacks();
    } else {
      disable_callbacks();
    }
    return tokens;
  }

  RingAddresses addresses() const {
    return {desc_rec_.addr, avail_rec_.addr, used_rec_.addr,
            static_cast<std::uint16_t>(cfg_.size - 1)};
  }
  std::uint32_t size() const { return cfg_.size; }
  std::uint32_t num_free() const { return num_free_; }
  std::uint32_t outstanding() const { return static_cast<std::uint16_t>(avail_idx_ - last_used_); }
  bool broken() const { return broken_; }
  const std::string& broken_reason() const { return reason_; }
  const QueueStats& stats() const { return stats_; }
  const RingFeatures& features() const { return cfg_.features; }

 private:
  struct DescState {
    dma::MappingRecord map{};  // what this ring descriptor points at (or its table)
    std::uint16_t next = 0;    // free-list / chain link, never read back from the ring
  };
  struct HeadState {
    enum State : std::uint8_t { kFree, kStaged, kPublished };
    std::uint64_t token = 0;
    std::uint64_t capacity = 0;  // writable bytes mapped
    std::uint16_t ring_descs = 0;
    bool indirect = false;
    State state = kFree;
  };

  SplitDriverQueue(Ops& ops, const DriverQueueConfig& cfg, std::span<std::byte> arena)
      : ops_(&ops),
        cfg_(cfg),
        arena_(arena),
        descs_(cfg.size),
        heads_(cfg.size),
        avail_shadow_(cfg.size) {
    if (cfg.features.indirect) indirect_maps_.resize(cfg.size);
    reset_free_list();
  }

  static std::uint16_t load_relaxed(std::uint16_t& v) {
    return std::atomic_ref<std::uint16_t>(v).load(std::memory_order_relaxed);
  }
  std::uint16_t* avail_ring() { return reinterpret_cast<std::uint16_t*>(avail_ + 1); }
  std::uint16_t* used_event() { return avail_ring() + cfg_.size; }
  SplitUsedElem* used_ring() { return reinterpret_cast<SplitUsedElem*>(used_ + 1); }
  std::uint16_t& avail_event() {
    return *reinterpret_cast<std::uint16_t*>(used_ring() + cfg_.size);
  }
  // Reads used->idx once for a whole batch of used entries (into used_cache_). Returns
  // false if nothing new arrived or the device moved the index too far (then broken).
  bool refresh_used_idx() {
    // Acquire: pairs with the device's release store of used->idx, so the used entries up
    // to it, read later from the cache, are the ones it wrote.
    std::uint16_t used_idx =
        std::atomic_ref<std::uint16_t>(used_->idx).load(std::memory_order_acquire);
    if (used_idx == last_used_ && event_pending_) {
      // Our used_event store must be visible before we conclude the ring is empty (and
      // wait for an interrupt); pairs with the device's fence in publish_used(). Paid only
      // when the ring looks empty, not per buffer.
      event_pending_ = false;
      std::atomic_thread_fence(std::memory_order_seq_cst);
      used_idx = std::atomic_ref<std::uint16_t>(used_->idx).load(std::memory_order_acquire);
    }
    if (used_idx == last_used_) return false;
    const auto outstanding = static_cast<std::uint16_t>(published_idx_ - last_used_);
    if (static_cast<std::uint16_t>(used_idx - last_used_) > outstanding) {
      (void)fail(Errc::kUsedIdxJump, fmt::format("used idx {} last {} outstanding {}", used_idx,
                                                 last_used_, outstanding));
      return false;
    }
    used_cache_ = used_idx;
    return true;
  }

  SplitUsedElem copy_used_elem(std::uint32_t slot) {
    SplitUsedElem e;
    e.id = std::atomic_ref<std::uint32_t>(used_ring()[slot].id).load(std::memory_order_relaxed);
    e.len = std::atomic_ref<std::uint32_t>(used_ring()[slot].len).load(std::memory_order_relaxed);
    return e;
  }

  void reset_free_list() {
    for (std::uint32_t i = 0; i < cfg_.size; ++i) {
      descs_[i].next = static_cast<std::uint16_t>((i + 1) & (cfg_.size - 1));
    }
    free_head_ = 0;
    num_free_ = cfg_.size;
  }
  void reset_ring_state() {
    reset_free_list();
    avail_idx_ = published_idx_ = last_used_ = used_cache_ = 0;
    std::fill(desc_rec_.cpu, desc_rec_.cpu + SplitAreaSizes::desc(cfg_.size), std::byte{0});
    std::fill(avail_rec_.cpu, avail_rec_.cpu + SplitAreaSizes::avail(cfg_.size), std::byte{0});
    std::fill(used_rec_.cpu, used_rec_.cpu + SplitAreaSizes::used(cfg_.size), std::byte{0});
  }
  void take_free(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) free_head_ = descs_[free_head_].next;
    num_free_ -= static_cast<std::uint32_t>(n);
  }

  // Maps the segments of a direct chain into the shadow of the free descriptors it will
  // take (free list order from free_head_); on error unmaps those and returns it.
  Result<std::uint64_t> map_chain(std::span<const Segment> readable,
                                  std::span<const Segment> writable) {
    std::uint16_t idx = free_head_;
    return map_segments(
        *ops_, readable, writable,
        [&](std::size_t, const dma::MappingRecord& m) {
          store_record(descs_[idx].map, m);
          idx = descs_[idx].next;
        },
        [&](std::size_t mapped) {
          std::uint16_t j = free_head_;
          for (std::size_t i = 0; i < mapped; ++i, j = descs_[j].next)
            unmap_or_log(*ops_, descs_[j].map);
        });
  }

  // One descriptor, field by field (a braced temporary is built on the stack and copied).
  static void store_desc(SplitDesc& d, std::uint64_t addr, std::uint32_t len, std::uint16_t flags,
                         std::uint16_t next) {
    d.addr = addr;
    d.len = len;
    d.flags = flags;
    d.next = next;
  }

  // Writes the n ring descriptors of a direct chain from the shadow map_chain() filled,
  // linked in free list order, and takes them off the free list.
  void publish_direct(std::size_t n, std::size_t readable) {
    std::uint16_t idx = free_head_;
    for (std::size_t i = 0; i < n; ++i) {
      const DescState& st = descs_[idx];
      std::uint16_t flags = i >= readable ? kDescFWrite : 0;
      if (i + 1 < n) flags |= kDescFNext;
      desc_[idx] =
          SplitDesc{st.map.addr.value(), static_cast<std::uint32_t>(st.map.len), flags, st.next};
      idx = st.next;
    }
    free_head_ = idx;
    num_free_ -= static_cast<std::uint32_t>(n);
  }

  // Writes head's mapped segments (indirect_maps_[head]) into its indirect table and maps
  // the table to-device.
  Result<void> publish_indirect(std::uint16_t head, std::size_t readable) {
    const std::vector<dma::MappingRecord>& maps = indirect_maps_[head];
    auto* table =
        reinterpret_cast<SplitDesc*>(arena_.data() + std::size_t{head} * cfg_.max_indirect * 16);
    for (std::size_t i = 0; i < maps.size(); ++i) {
      const bool last = i + 1 == maps.size();
      std::uint16_t flags = i >= readable ? kDescFWrite : 0;
      if (!last) flags |= kDescFNext;
      table[i] = SplitDesc{maps[i].addr.value(), static_cast<std::uint32_t>(maps[i].len), flags,
                           static_cast<std::uint16_t>(last ? 0 : i + 1)};
    }
    const std::uint64_t bytes = maps.size() * sizeof(SplitDesc);
    dma::MappingRecord t = VDMA_TRY(ops_->map_record(table, bytes, dma::Direction::kToDevice));
    store_record(descs_[head].map, t);
    desc_[head] = SplitDesc{t.addr.value(), static_cast<std::uint32_t>(bytes), kDescFIndirect, 0};
    return Ok();
  }

  // Unmaps everything head `id` published (from the shadow only) and frees its descs.
  void recycle(std::uint16_t id) {
    HeadState& h = heads_[id];
    std::uint16_t idx = id;
    if (h.indirect) unmap_all(*ops_, indirect_maps_[id]);  // keeps capacity for the next add
    for (std::uint16_t i = 0; i < h.ring_descs; ++i) {
      unmap_or_log(*ops_, descs_[idx].map);
      if (i + 1 < h.ring_descs) idx = descs_[idx].next;
    }
    descs_[idx].next = free_head_;
    free_head_ = id;
    num_free_ += h.ring_descs;
    h = HeadState{};
  }

  Unexpected fail(Errc e, std::string detail) {
    broken_ = true;
    reason_ = fmt::format("{}: {}", describe(e), detail);
    log_error("virtq", "split driver queue broken: {}", reason_);
    return Err(Errc::kBroken);
  }

  void release_all() {
    if (ops_ == nullptr) return;
    for (std::uint32_t id = 0; id < cfg_.size; ++id)
      if (heads_[id].state != HeadState::kFree) recycle(static_cast<std::uint16_t>(id));
    for (auto* rec : {&desc_rec_, &avail_rec_, &used_rec_})
      if (rec->cpu != nullptr) (void)ops_->free_coherent_record(*rec);
    ops_ = nullptr;
  }

  LinePad front_pad_{};  // see cache_line.h: hot state between two pads
  MovingPtr<Ops> ops_;
  DriverQueueConfig cfg_;
  std::span<std::byte> arena_;
  dma::CoherentRecord desc_rec_{}, avail_rec_{}, used_rec_{};
  SplitDesc* desc_ = nullptr;          // device-visible
  SplitAvailHeader* avail_ = nullptr;  // device-visible
  SplitUsedHeader* used_ = nullptr;    // device-writable: guest-controlled
  LineVector<DescState> descs_;
  LineVector<HeadState> heads_;
  LineVector<std::uint16_t> avail_shadow_;
  std::vector<std::vector<dma::MappingRecord>> indirect_maps_;
  std::uint16_t free_head_ = 0;
  std::uint32_t num_free_ = 0;
  std::uint16_t avail_idx_ = 0;      // next avail slot (staged)
  std::uint16_t published_idx_ = 0;  // last value stored to avail->idx
  std::uint16_t last_used_ = 0;
  std::uint16_t used_cache_ = 0;  // used->idx as last read (entries up to it are ours)
  bool callbacks_ = true;
  bool event_pending_ = false;  // used_event moved since the last full fence
  bool broken_ = false;
  std::string reason_;
  QueueStats stats_;
  LinePad back_pad_{};
};

}  // namespace vdma::virtq

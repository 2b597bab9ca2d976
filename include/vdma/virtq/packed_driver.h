// PackedDriverQueue: the driver ("guest") side of a packed virtqueue (VIRTIO 1.2, 2.8).
//
// Same API and the same hardening as SplitDriverQueue. The descriptor ring and both event
// suppression structures are coherent allocations; every segment is mapped with the
// direction the device uses it in; indirect tables are mapped to-device (read-only behind
// an IOMMU). Buffer IDs come from a private free list, and a private shadow per ID (token,
// mappings, ring descriptors taken, writable capacity, state) is all that completion
// reads: the only device-written bytes the driver looks at are the used descriptor at its
// used position, copied once into locals and validated. A lying device marks the queue
// broken; every mapping is still released (detach_unused / destructor).
//
// Ring positions: the driver writes available descriptors in ring order from next_avail_
// (2.8.1, wrap counter starting at 1), and reads used descriptors in ring order from
// last_used_, skipping the number of ring descriptors the returned buffer ID took (2.8.2,
// 2.8.6). Queue sizes need not be powers of two.
//
// Batching: add_buffers() writes every descriptor, except that the flags of the first
// descriptor of the first buffer since the last kick are held back; kick_prepare() writes
// them last, with a release store, so the device sees the whole batch at once (the
// spec's "Placing Available Buffers" allows holding back the first flags of a batch).
//
//   auto q = VDMA_TRY(PackedDriverQueue<dma::DirectOps>::Create(ops, cfg, arena));
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
#include <utility>
#include <vector>

#include "vdma/base/log.h"
#include "vdma/base/moving_ptr.h"
#include "vdma/base/result.h"
#include "vdma/dma/dma_ops.h"
#include "vdma/virtq/cache_line.h"
#include "vdma/virtq/errors.h"
#include "vdma/virtq/packed_layout.h"
#include "vdma/virtq/segment_mapping.h"
#include "vdma/virtq/types.h"

namespace vdma::virtq {

template <dma::DmaProvider Ops>
class PackedDriverQueue {
 public:
  // Bytes of indirect-table arena a queue of this config needs (0 without indirect).
  static std::size_t indirect_arena_bytes(const DriverQueueConfig& cfg) {
    return cfg.features.indirect
               ? std::size_t{cfg.size} * std::min(cfg.max_indirect, cfg.size) * sizeof(PackedDesc)
               : 0;
  }

  // `arena`: driver memory for indirect tables (indirect_arena_bytes(cfg) bytes, 16-byte
  // aligned), unused without indirect. ops and arena must outlive the queue. Errors:
  // kInvalidQueueSize (0 or above 32768), kInvalidConfig, coherent-allocation errors.
  static Result<PackedDriverQueue> Create(Ops& ops, DriverQueueConfig cfg,
                                          std::span<std::byte> arena = {}) {
    cfg.max_indirect = std::min(cfg.max_indirect, cfg.size);  // a table never beats the ring
    if (cfg.size == 0 || cfg.size > kMaxQueueSize) return Err(Errc::kInvalidQueueSize);
    if (cfg.features.indirect &&
        (cfg.max_indirect < 2 || arena.size() < indirect_arena_bytes(cfg) ||
         reinterpret_cast<std::uintptr_t>(arena.data()) % 16 != 0)) {
      return Err(Errc::kInvalidConfig);
    }
    PackedDriverQueue q(ops, cfg, arena);
    q.desc_rec_ = VDMA_TRY(ops.alloc_coherent_record(PackedAreaSizes::desc(cfg.size)));
    q.driver_rec_ = VDMA_TRY(ops.alloc_coherent_record(PackedAreaSizes::event()));
    q.device_rec_ = VDMA_TRY(ops.alloc_coherent_record(PackedAreaSizes::event()));
    q.desc_ = reinterpret_cast<PackedDesc*>(q.desc_rec_.cpu);
    q.driver_evt_ = reinterpret_cast<PackedEventSuppress*>(q.driver_rec_.cpu);
    q.device_evt_ = reinterpret_cast<PackedEventSuppress*>(q.device_rec_.cpu);
    q.write_driver_event();  // with EVENT_IDX: an event at the first used descriptor
    return q;
  }

  // ops_ is a MovingPtr: a moved-from queue releases nothing.
  PackedDriverQueue(PackedDriverQueue&& o) noexcept = default;
  PackedDriverQueue& operator=(PackedDriverQueue&& o) noexcept {
    if (this != &o) {
      release_all();
      std::destroy_at(this);
      std::construct_at(this, std::move(o));
    }
    return *this;
  }
  PackedDriverQueue(const PackedDriverQueue&) = delete;
  PackedDriverQueue& operator=(const PackedDriverQueue&) = delete;
  ~PackedDriverQueue() { release_all(); }

  // Adds one buffer: device-readable segments, then device-writable ones. Errors:
  // kBroken, kNoSegments, kQueueFull (retry after get_used), or the DMA error that
  // refused a mapping (e.g. dma::Errc::kPoolFull, retryable). On error nothing stays
  // mapped and the ring is untouched.
  Result<void> add_buffers(std::span<const Segment> readable, std::span<const Segment> writable,
                           std::uint64_t token) {
    if (broken_) return Err(Errc::kBroken);
    const std::size_t n = readable.size() + writable.size();
    if (n == 0) return Err(Errc::kNoSegments);
    const bool indirect = cfg_.features.indirect && n > 1 && n <= cfg_.max_indirect;
    const std::size_t ring_descs = indirect ? 1 : n;
    if (ring_descs > ring_.num_free) return Err(Errc::kQueueFull);
    // Every buffer takes at least one ring descriptor, so a free slot implies a free ID.
    VDMA_CHECK(ring_.free_ids > 0);

    // Map every segment first (into the ID's private shadow), so a refused mapping leaves
    // the ring untouched.
    const std::uint16_t id = ring_.free_id;
    BufferState& b = bufs_[id];
    const std::uint64_t capacity = VDMA_TRY(map_segments(*ops_, readable, writable, b.maps));
    if (indirect) {
      auto table = map_indirect_table(id, readable.size());
      if (!table) {
        unmap_all(*ops_, b.maps);
        return Err(table.error());
      }
      store_record(b.table, *table);
      write_desc(b.table.addr.value(), static_cast<std::uint32_t>(b.table.len), id, kDescFIndirect);
    } else {
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t flags = i >= readable.size() ? kDescFWrite : 0;
        if (i + 1 < n) flags |= kDescFNext;
        write_desc(b.maps[i].addr.value(), static_cast<std::uint32_t>(b.maps[i].len), id, flags);
      }
    }
    ring_.free_id = id_next_[id];
    --ring_.free_ids;
    ring_.num_free -= static_cast<std::uint32_t>(ring_descs);
    b.token = token;
    b.capacity = capacity;
    b.ring_descs = static_cast<std::uint16_t>(ring_descs);
    b.state = BufferState::kStaged;
    staged_ids_.push_back(id);
    ++ring_.outstanding;
    ++stats_.added;
    return Ok();
  }

  // Publishes the buffers added since the last call and tells whether the device wants a
  // notification (2.8.10, with EVENT_IDX the offset/wrap rule).
  bool kick_prepare() {
    if (staged_ids_.empty() || broken_) return false;
    for (std::uint16_t id : staged_ids_) bufs_[id].state = BufferState::kPublished;
    staged_ids_.clear();
    // Release: every descriptor of the batch (addr, len, id, and the flags of all but
    // this one) becomes visible before the first one turns available; pairs with the
    // device's acquire load of the flags at its avail position.
    std::atomic_ref<std::uint16_t>(desc_[ring_.batch_pos].flags)
        .store(ring_.batch_flags, std::memory_order_release);
    const std::uint32_t added = std::exchange(ring_.staged_descs, 0);
    // Full barrier: the flags store above must be visible before we read the device's
    // suppression state; pairs with the device's fence in set_notifications() (between
    // writing its event suppression and re-checking for available descriptors).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const bool notify = wants_event(device_evt_, ring_.next_avail, ring_.avail_wrap, added);
    if (notify) ++stats_.notifications;
    return notify;
  }

  // The next used buffer, or nullopt if none. Errors: kBroken (now or earlier; the
  // reason is in broken_reason()).
  Result<std::optional<UsedBuffer>> get_used() {
    if (broken_) return Err(Errc::kBroken);
    PackedDesc* d = &desc_[ring_.last_used];
    // Acquire: pairs with the device's release store of these flags when it publishes the
    // used descriptor, so the id and len read below are the ones it wrote.
    const std::uint16_t flags =
        std::atomic_ref<std::uint16_t>(d->flags).load(std::memory_order_acquire);
    if (!is_used(flags, ring_.used_wrap)) return std::optional<UsedBuffer>{};
    // guest-controlled (device-written): read once into locals.
    const std::uint16_t id = std::atomic_ref<std::uint16_t>(d->id).load(std::memory_order_relaxed);
    std::uint32_t len = std::atomic_ref<std::uint32_t>(d->len).load(std::memory_order_relaxed);
    if (id >= cfg_.size) return fail(Errc::kUsedIdOutOfRange, fmt::format("used id {}", id));
    BufferState& b = bufs_[id];
    if (b.state != BufferState::kPublished) {
      return fail(Errc::kUsedIdNotOutstanding, fmt::format("used id {}", id));
    }
    // 2.8.4: len is reserved (the driver ignores it) in a used descriptor without WRITE.
    if (!(flags & kDescFWrite)) len = 0;
    if (len > b.capacity) {
      if (cfg_.used_len_policy == UsedLenPolicy::kBreak) {
        return fail(Errc::kUsedLenTooLarge,
                    fmt::format("used id {} len {} capacity {}", id, len, b.capacity));
      }
      len = static_cast<std::uint32_t>(b.capacity);
      ++stats_.clamped;
    }
    const std::uint64_t token = b.token;
    // 2.8.6: the next used descriptor is this buffer's ring descriptors further on.
    advance(ring_.last_used, ring_.used_wrap, b.ring_descs);
    recycle(id);
    if (cfg_.features.event_idx && callbacks_) {
      // Ask for an interrupt at the next used descriptor. Full barrier: the store must be
      // visible before our next look at the ring, or the device may read the old offset
      // after we found nothing; pairs with the device's fence in publish_used().
      store_relaxed(driver_evt_->off_wrap, pack_off_wrap(ring_.last_used, ring_.used_wrap));
      std::atomic_thread_fence(std::memory_order_seq_cst);
    }
    ++stats_.completed;
    return std::optional<UsedBuffer>(UsedBuffer{token, len});
  }

  // Callback (used-buffer notification) suppression, 2.8.10.
  void disable_callbacks() {
    callbacks_ = false;
    store_relaxed(driver_evt_->flags, kEventFlagsDisable);
  }
  // Re-enables callbacks; returns false if used buffers arrived meanwhile (poll again).
  bool enable_callbacks() {
    callbacks_ = true;
    write_driver_event();
    // Pairs with the device's fence in publish_used() (between releasing a used
    // descriptor and reading our suppression state): either it sees callbacks enabled or
    // we see its used descriptor.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const std::uint16_t flags = std::atomic_ref<std::uint16_t>(desc_[ring_.last_used].flags)
                                    .load(std::memory_order_acquire);
    return !is_used(flags, ring_.used_wrap);
  }

  // After a device reset: takes back every buffer not returned, unmapping all of it,
  // and resets the ring to empty. Returns their tokens.
  std::vector<std::uint64_t> detach_unused() {
    std::vector<std::uint64_t> tokens;
    for (std::uint32_t id = 0; id < cfg_.size; ++id) {
      if (bufs_[id].state == BufferState::kFree) continue;
      tokens.push_back(bufs_[id].token);
      recycle(static_cast<std::uint16_t>(id));
    }
    reset_ring_state();
    return tokens;
  }

  // desc = descriptor ring, driver = driver event suppression, device = device event
  // suppression (2.8: Descriptor, Driver and Device Areas).
  RingAddresses addresses() const {
    return {desc_rec_.addr, driver_rec_.addr, device_rec_.addr,
            static_cast<std::uint16_t>(cfg_.size - 1)};
  }
  std::uint32_t size() const { return cfg_.size; }
  std::uint32_t num_free() const { return ring_.num_free; }
  std::uint32_t outstanding() const { return ring_.outstanding; }
  bool broken() const { return broken_; }
  const std::string& broken_reason() const { return reason_; }
  const QueueStats& stats() const { return stats_; }
  const RingFeatures& features() const { return cfg_.features; }

 private:
  // The private shadow of one buffer ID; never read back from device-visible memory.
  struct BufferState {
    enum State : std::uint8_t { kFree, kStaged, kPublished };
    std::uint64_t token = 0;
    std::uint64_t capacity = 0;            // writable bytes mapped
    std::vector<dma::MappingRecord> maps;  // segments
    dma::MappingRecord table{};            // indirect table (cpu == nullptr if none)
    std::uint16_t ring_descs = 0;          // ring descriptors taken (used skip)
    State state = kFree;
  };
  // Ring positions and counters (plain data, reset together).
  struct RingState {
    std::uint16_t next_avail = 0;  // where the next descriptor goes
    bool avail_wrap = true;        // Driver Ring Wrap Counter (2.8.1)
    std::uint16_t last_used = 0;   // where the next used descriptor appears
    bool used_wrap = true;
    std::uint32_t num_free = 0;  // free ring descriptors
    std::uint16_t free_id = 0;   // head of the buffer-ID free list
    std::uint32_t free_ids = 0;
    std::uint32_t outstanding = 0;   // buffers added and not yet returned
    std::uint32_t staged_descs = 0;  // descriptors written since the last kick
    std::uint16_t batch_pos = 0;     // first descriptor of the batch: flags held back
    std::uint16_t batch_flags = 0;
  };

  PackedDriverQueue(Ops& ops, const DriverQueueConfig& cfg, std::span<std::byte> arena)
      : ops_(&ops), cfg_(cfg), arena_(arena), bufs_(cfg.size), id_next_(cfg.size) {
    reset_free_lists();
  }

  static void store_relaxed(std::uint16_t& v, std::uint16_t x) {
    std::atomic_ref<std::uint16_t>(v).store(x, std::memory_order_relaxed);
  }
  static std::uint16_t avail_flags(bool wrap) {
    return wrap ? kPackedDescFAvail : kPackedDescFUsed;  // AVAIL = wrap, USED = !wrap
  }
  // 2.8.1: used when AVAIL == USED == the wrap counter of the position.
  static bool is_used(std::uint16_t flags, bool wrap) {
    const bool avail = flags & kPackedDescFAvail, used = flags & kPackedDescFUsed;
    return avail == used && used == wrap;
  }
  static std::uint16_t pack_off_wrap(std::uint16_t pos, bool wrap) {
    return static_cast<std::uint16_t>(pos | (wrap ? 0x8000u : 0u));
  }
  void advance(std::uint16_t& pos, bool& wrap, std::uint32_t n) const {
    std::uint32_t p = pos + n;
    if (p >= cfg_.size) {
      p -= cfg_.size;
      wrap = !wrap;
    }
    pos = static_cast<std::uint16_t>(p);
  }

  // Whether the peer's event suppression asks for an event now that `added` descriptors
  // ending just before (pos, wrap) were made available (2.8.10). The event offset is
  // peer-written: any value only changes the answer, never what we touch.
  bool wants_event(PackedEventSuppress* evt, std::uint16_t pos, bool wrap,
                   std::uint32_t added) const {
    // Acquire: pairs with the release store of flags after off_wrap, so a DESC event
    // comes with its offset.
    const std::uint16_t flags =
        std::atomic_ref<std::uint16_t>(evt->flags).load(std::memory_order_acquire);
    if (flags == kEventFlagsDisable) return false;
    if (flags != kEventFlagsDesc || !cfg_.features.event_idx) return true;
    const std::uint16_t off_wrap =
        std::atomic_ref<std::uint16_t>(evt->off_wrap).load(std::memory_order_relaxed);
    // Positions relative to the start of the current lap: an event with the other wrap
    // counter lies one lap back; the batch may start one lap back too.
    auto event = static_cast<std::uint16_t>(off_wrap & 0x7fff);
    if (((off_wrap & 0x8000) != 0) != wrap) event = static_cast<std::uint16_t>(event - cfg_.size);
    return need_event(event, pos, static_cast<std::uint16_t>(pos - added));
  }

  void write_driver_event() {
    if (!callbacks_) {
      store_relaxed(driver_evt_->flags, kEventFlagsDisable);
    } else if (cfg_.features.event_idx) {
      store_relaxed(driver_evt_->off_wrap, pack_off_wrap(ring_.last_used, ring_.used_wrap));
      // Release: the offset is visible before the mode that makes the device read it;
      // pairs with the device's acquire load of these flags.
      std::atomic_ref<std::uint16_t>(driver_evt_->flags)
          .store(kEventFlagsDesc, std::memory_order_release);
    } else {
      store_relaxed(driver_evt_->flags, kEventFlagsEnable);
    }
  }

  // Writes one available descriptor at next_avail_ and moves on. The first descriptor of
  // a batch keeps its old (not available) flags until kick_prepare().
  void write_desc(std::uint64_t addr, std::uint32_t len, std::uint16_t id, std::uint16_t flags) {
    PackedDesc* d = &desc_[ring_.next_avail];
    d->addr = addr;
    d->len = len;
    d->id = id;  // 2.8.6 needs it in the last descriptor; every one carries it
    flags |= avail_flags(ring_.avail_wrap);
    if (ring_.staged_descs++ == 0) {
      ring_.batch_pos = ring_.next_avail;
      ring_.batch_flags = flags;
    } else {
      // Relaxed: published by kick_prepare()'s release store of the batch's first flags;
      // the device reads no further than that descriptor until it sees it.
      store_relaxed(d->flags, flags);
    }
    advance(ring_.next_avail, ring_.avail_wrap, 1);
  }

  // Writes ID's mapped segments into its indirect table (2.8.7: WRITE is the only flag
  // there) and maps the table to-device.
  Result<dma::MappingRecord> map_indirect_table(std::uint16_t id, std::size_t readable) {
    const std::vector<dma::MappingRecord>& maps = bufs_[id].maps;
    auto* table =
        reinterpret_cast<PackedDesc*>(arena_.data() + std::size_t{id} * cfg_.max_indirect * 16);
    for (std::size_t i = 0; i < maps.size(); ++i) {
      table[i] = PackedDesc{maps[i].addr.value(), static_cast<std::uint32_t>(maps[i].len), 0,
                            static_cast<std::uint16_t>(i >= readable ? kDescFWrite : 0)};
    }
    return ops_->map_record(table, maps.size() * sizeof(PackedDesc), dma::Direction::kToDevice);
  }

  // Unmaps everything buffer `id` published (from the shadow only) and frees the ID and
  // its ring descriptors.
  void recycle(std::uint16_t id) {
    BufferState& b = bufs_[id];
    for (const auto& m : b.maps) unmap_or_log(*ops_, m);
    if (b.table.cpu != nullptr) unmap_or_log(*ops_, b.table);
    b.maps.clear();  // keeps capacity: no allocation on the next add
    b.table = {};
    id_next_[id] = ring_.free_id;
    ring_.free_id = id;
    ++ring_.free_ids;
    ring_.num_free += b.ring_descs;
    --ring_.outstanding;
    b.ring_descs = 0;
    b.token = b.capacity = 0;
    b.state = BufferState::kFree;
  }

  void reset_free_lists() {
    for (std::uint32_t i = 0; i < cfg_.size; ++i) {
      id_next_[i] = static_cast<std::uint16_t>(i + 1 == cfg_.size ? 0 : i + 1);
    }
    ring_ = RingState{};
    ring_.num_free = ring_.free_ids = cfg_.size;
  }
  void reset_ring_state() {
    reset_free_lists();
    staged_ids_.clear();
    std::fill(desc_rec_.cpu, desc_rec_.cpu + PackedAreaSizes::desc(cfg_.size), std::byte{0});
    std::fill(driver_rec_.cpu, driver_rec_.cpu + PackedAreaSizes::event(), std::byte{0});
    std::fill(device_rec_.cpu, device_rec_.cpu + PackedAreaSizes::event(), std::byte{0});
    write_driver_event();  // keep the caller's callback choice across the reset
  }

  Unexpected fail(Errc e, std::string detail) {
    broken_ = true;
    reason_ = fmt::format("{}: {}", describe(e), detail);
    log_error("virtq", "packed driver queue broken: {}", reason_);
    return Err(Errc::kBroken);
  }

  void release_all() {
    if (ops_ == nullptr) return;
    for (std::uint32_t id = 0; id < cfg_.size; ++id)
      if (bufs_[id].state != BufferState::kFree) recycle(static_cast<std::uint16_t>(id));
    for (auto* rec : {&desc_rec_, &driver_rec_, &device_rec_})
      if (rec->cpu != nullptr) (void)ops_->free_coherent_record(*rec);
    ops_ = nullptr;
  }

  LinePad front_pad_{};  // see cache_line.h: hot state between two pads
  MovingPtr<Ops> ops_;
  DriverQueueConfig cfg_;
  std::span<std::byte> arena_;
  dma::CoherentRecord desc_rec_{}, driver_rec_{}, device_rec_{};
  PackedDesc* desc_ = nullptr;                 // device-writable: guest-controlled
  PackedEventSuppress* driver_evt_ = nullptr;  // we write, the device reads
  PackedEventSuppress* device_evt_ = nullptr;  // device-written: guest-controlled
  LineVector<BufferState> bufs_;               // per buffer ID
  LineVector<std::uint16_t> id_next_;          // buffer-ID free-list links
  LineVector<std::uint16_t> staged_ids_;       // added since the last kick
  RingState ring_;
  bool callbacks_ = true;
  bool broken_ = false;
  std::string reason_;
  QueueStats stats_;
  LinePad back_pad_{};
};

}  // namespace vdma::virtq

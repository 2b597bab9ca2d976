// IotlbCache: the device-side IOTLB of a vhost-user back end (VIRTIO_F_ACCESS_PLATFORM).
//
// The front end feeds it with VHOST_USER_IOTLB_MSG updates and invalidations on the
// connection's message thread (the writer); queue worker threads translate the IOVAs of
// their rings through it concurrently (the readers). A miss is reported by the caller to
// the front end, which answers with an update. Entries come from the peer: every update is
// validated, and an overlapping update replaces what it overlaps.
//
//   IotlbCache cache(IotlbCacheOptions{.capacity = 4096});
//   IotlbCursor cursor;                                            // one per queue
//   VDMA_TRY(cache.insert({Iova{0x10000}, 0x1000, uaddr, Access::kRead}));  // writer
//   auto tr = cache.lookup(Iova{0x10040}, 64, Access::kRead, cursor);       // any thread
//   cache.invalidate(Iova{0x10000}, 0x1000);   // writer; complete when it returns
//
// Design (why not a lock, why not an RCU snapshot):
//  - Layout: a two-level sorted structure. Entries sit sorted by IOVA in fixed-size leaves
//    (kLeafEntries each); a top array holds, per leaf in key order, a separator (a lower
//    bound of its keys; the first leaf's is 0) and the leaf's pool index. A lookup is two
//    binary searches: O(log n). All leaves are allocated at construction (capacity / 32 + 2
//    of them) and never freed while the cache lives: memory is type-stable, so a reader
//    may follow any index it reads, even a torn one, without touching freed memory.
//  - Readers are optimistic (seqlock style): every leaf and the top array carry a sequence
//    number that is odd while the writer changes them. A reader reads the sequence, the
//    data, then the sequence again and retries if it moved. Readers store nothing shared:
//    no lock, no read-modify-write, no reference count, so worker threads never bounce a
//    cache line between them. An RCU snapshot would also give lock-free readers, but
//    each update would copy the whole table (O(n) at 65536 entries) and reclaiming old
//    snapshots needs readers to announce themselves (a registry and per-lookup stores);
//    the seqlock needs neither.
//  - Writers are short and local: an update or invalidation that stays inside one leaf
//    (the common case) bumps only that leaf's sequence, so readers of other leaves never
//    retry. Splitting a full leaf, freeing an empty one, repacking when the leaf pool runs
//    dry and clear() change the top array and make every reader retry once. A reader
//    that crosses leaves (a range spanning entries in two leaves) also checks a global
//    write generation, so what it returns was one state of the cache.
//  - Every shared word is a std::atomic read with acquire and written with release
//    (plain moves on x86), so the protocol is data-race free in the C++ model and TSan
//    checks it: a reader that sees any word of a write in progress also sees that
//    write's odd sequence when it re-reads the sequence.
//  - Completion: invalidate() returns only after its stores are done; any lookup that
//    starts after it returned reads the new sequence numbers, so it cannot return a
//    translation overlapping the range (cursor hits included, see IotlbCursor).
//  - Capacity: when full, an insert evicts one pseudo-random entry (a random leaf, a
//    random slot). Readers record nothing, so there is no recency to evict by; FIFO would
//    evict the oldest mappings first, which in virtio are the rings and long-lived buffer
//    pools, the hottest entries. Evicting is always safe: a later lookup misses and asks.
//  - Overlapping update: every entry overlapping the new range is dropped whole (never
//    trimmed, as IotlbTable::invalidate), then the new entry is inserted. A concurrent
//    reader may see the miss in between (it asks again), never a mix of old and new.
//  - Statistics: lookup counters live in the cursor (written only by its owner thread);
//    stats() adds them to the writer's counters.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>

#include "vdma/base/result.h"
#include "vdma/memory/address.h"
#include "vdma/memory/errors.h"
#include "vdma/memory/iotlb.h"

namespace vdma::memory {

struct IotlbCacheOptions {
  std::size_t capacity = 2048;              // entries; 1 .. kMaxCapacity
  std::uint64_t seed = 0x9e3779b97f4a7c15;  // eviction choice
};

struct IotlbStats {
  std::uint64_t hits = 0;         // successful lookups (cursor hits included)
  std::uint64_t cursor_hits = 0;  // of which answered from the cursor
  std::uint64_t misses = 0;       // lookups that returned kIotlbMiss
  std::uint64_t denied = 0;       // kIotlbPermission or kIotlbFragmented
  std::uint64_t inserts = 0;      // accepted updates
  std::uint64_t replaced = 0;     // entries dropped because an update overlapped them
  std::uint64_t invalidated = 0;  // entries dropped by invalidate()
  std::uint64_t evictions = 0;    // entries dropped because the cache was full
  std::uint64_t repacks = 0;      // leaf pool rewrites (sparse leaves after removals)
  std::uint64_t entries = 0;      // entries now held

  IotlbStats& operator+=(const IotlbStats& o);
};

// A queue's last hit: the entry it last translated through, the leaf it sits in and that
// leaf's sequence number. A lookup inside that entry (or in the next entry of the same,
// unchanged leaf) is answered from here after one load of the leaf's sequence: any
// removal of the entry changes it. One cursor per thread (per queue); never shared. A
// copy is a fresh cursor (nothing cached, zero counters).
class alignas(64) IotlbCursor {
 public:
  IotlbCursor() = default;
  IotlbCursor(const IotlbCursor&) {}
  IotlbCursor& operator=(const IotlbCursor&) {
    forget();
    return *this;
  }

  void forget() { owner_ = 0; }
  // This cursor's lookup counters (hits, cursor_hits, misses, denied). Any thread.
  IotlbStats stats() const;

 private:
  friend class IotlbCache;
  static void bump(std::atomic<std::uint64_t>& c) {
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // owner only
  }

  std::uint64_t owner_ = 0;  // id of the cache that filled it; 0: empty
  const std::atomic<std::uint64_t>* seq_ = nullptr;
  std::uint64_t seq_value_ = 0;
  std::uint32_t leaf_ = 0;
  std::uint32_t slot_ = 0;
  std::uint64_t start_ = 0;
  std::uint64_t size_ = 0;
  std::uint64_t target_ = 0;
  Access perm_ = Access::kNone;
  std::atomic<std::uint64_t> hits_{0};
  std::atomic<std::uint64_t> cursor_hits_{0};
  std::atomic<std::uint64_t> misses_{0};
  std::atomic<std::uint64_t> denied_{0};
};

class IotlbCache {
 public:
  static constexpr std::size_t kMaxCapacity = std::size_t{1} << 24;
  static constexpr std::uint32_t kLeafEntries = 64;

  // capacity outside 1..kMaxCapacity is a programming error (CHECK).
  explicit IotlbCache(const IotlbCacheOptions& options);
  ~IotlbCache();
  IotlbCache(const IotlbCache&) = delete;
  IotlbCache& operator=(const IotlbCache&) = delete;

  // Writer side (serialised by an internal mutex; meant for the message thread).
  //
  // Adds a translation, replacing every entry it overlaps and evicting one entry if the
  // cache is full. Errors (peer input, nothing changed): kZeroLength, kOverflow (iova or
  // target range wraps 2^64), kInvalidArgument (perm kNone or not an Access value).
  Result<void> insert(const IotlbEntry& e);
  // Drops every entry overlapping [iova, iova + size) (whole entries; a range past 2^64 is
  // clamped). Complete on return. Returns how many.
  std::size_t invalidate(Iova iova, std::uint64_t size);
  void clear();

  // Reader side (any thread, concurrently with the writer), as IotlbTable::lookup and
  // lookup_prefix: the whole of [iova, iova + len) with `access`, or the longest
  // contiguous permitted prefix. Errors: kZeroLength, kOverflow, kIotlbMiss,
  // kIotlbPermission, kIotlbFragmented (lookup only). `cursor` belongs to the caller.
  Result<IotlbTranslation> lookup(Iova iova, std::uint64_t len, Access access,
                                  IotlbCursor& cursor) const {
    if (cursor_covers(iova.value(), len, access, cursor)) {
      IotlbCursor::bump(cursor.hits_);
      IotlbCursor::bump(cursor.cursor_hits_);
      return IotlbTranslation{cursor.target_ + (iova.value() - cursor.start_), len};
    }
    return lookup_slow(iova.value(), len, access, cursor, /*prefix=*/false);
  }
  Result<IotlbTranslation> lookup_prefix(Iova iova, std::uint64_t len, Access access,
                                         IotlbCursor& cursor) const {
    if (cursor_covers(iova.value(), len, access, cursor)) {
      IotlbCursor::bump(cursor.hits_);
      IotlbCursor::bump(cursor.cursor_hits_);
      return IotlbTranslation{cursor.target_ + (iova.value() - cursor.start_), len};
    }
    return lookup_slow(iova.value(), len, access, cursor, /*prefix=*/true);
  }

  std::size_t size() const { return entries_.load(std::memory_order_relaxed); }
  std::size_t capacity() const { return capacity_; }
  // Writer counters plus the lookup counters of `cursors`. Any thread.
  IotlbStats stats(std::span<const IotlbCursor* const> cursors = {}) const;

 private:
  struct Leaf;
  struct Probe;
  struct Pos {
    std::uint32_t pos = 0;   // index in the top array
    std::uint32_t slot = 0;  // index in the leaf
  };

  // The cursor's entry covers the whole range with `access` and its leaf is unchanged
  // since the cursor was filled. Acquire pairs with the writer's release of the
  // sequence: a removal done before this lookup started is seen.
  bool cursor_covers(std::uint64_t iova, std::uint64_t len, Access access,
                     const IotlbCursor& c) const {
    return c.owner_ == id_ && len != 0 && iova >= c.start_ && len <= c.size_ &&
           iova - c.start_ <= c.size_ - len && permits(c.perm_, access) &&
           c.seq_->load(std::memory_order_acquire) == c.seq_value_;
  }

  Result<IotlbTranslation> lookup_slow(std::uint64_t iova, std::uint64_t len, Access access,
                                       IotlbCursor& c, bool prefix) const;
  bool try_neighbor(std::uint64_t iova, std::uint64_t len, Access access, IotlbCursor& c) const;
  bool probe(std::uint64_t iova, std::uint64_t len, Access access, Probe& out) const;
  Leaf& leaf_at(std::uint32_t pos) const;

  // Writer helpers (writer_mu_ held).
  std::uint32_t top_pos_for(std::uint64_t key) const;
  bool find_first_overlap(std::uint64_t start, std::uint64_t end, Pos& at) const;
  std::size_t remove_range(std::uint64_t start, std::uint64_t end);
  void evict_one();
  void insert_new(const IotlbEntry& e);
  void split(std::uint32_t pos);
  void repack();
  void drop_empty_leaves();
  void begin_top();
  void end_top();
  void bump_write_gen();

  const std::uint64_t id_;
  const std::size_t capacity_;
  const std::uint32_t pool_size_;
  std::unique_ptr<Leaf[]> leaves_;
  // Top array: separators and pool indices of the leaves in key order (top_count_ used).
  std::unique_ptr<std::atomic<std::uint64_t>[]> top_sep_;
  std::unique_ptr<std::atomic<std::uint32_t>[]> top_leaf_;
  alignas(64) std::atomic<std::uint64_t> top_seq_{0};
  std::atomic<std::uint32_t> top_count_{0};
  std::atomic<std::uint64_t> write_gen_{0};
  // Writer-only state below (and counters other threads may read).
  alignas(64) std::mutex writer_mu_;
  std::unique_ptr<std::uint32_t[]> free_leaves_;
  std::uint32_t free_count_ = 0;
  std::uint64_t rng_;
  std::atomic<std::uint64_t> entries_{0};
  std::atomic<std::uint64_t> inserts_{0};
  std::atomic<std::uint64_t> replaced_{0};
  std::atomic<std::uint64_t> invalidated_{0};
  std::atomic<std::uint64_t> evictions_{0};
  std::atomic<std::uint64_t> repacks_{0};
};

}  // namespace vdma::memory

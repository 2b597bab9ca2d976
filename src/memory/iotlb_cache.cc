#include "vdma/memory/iotlb_cache.h"

#include <algorithm>
#include <vector>

#include "vdma/base/check.h"

namespace vdma::memory {

namespace {

constexpr auto kAcquire = std::memory_order_acquire;
constexpr auto kRelease = std::memory_order_release;
constexpr auto kRelaxed = std::memory_order_relaxed;

// Leaves are filled to 3/4 by a repack, so the next splits are some inserts away.
constexpr std::uint32_t kRepackFill = IotlbCache::kLeafEntries * 3 / 4;

std::atomic<std::uint64_t> g_next_cache_id{1};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// The writer is single (writer_mu_), so its own reads are relaxed and its increments are
// a load and a store.
inline void add(std::atomic<std::uint64_t>& a, std::uint64_t n) {
  a.store(a.load(kRelaxed) + n, kRelaxed);
}

std::uint64_t next_random(std::uint64_t& s) {  // xorshift64*
  s ^= s >> 12;
  s ^= s << 25;
  s ^= s >> 27;
  return s * 0x2545f4914f6cdd1dULL;
}

}  // namespace

// One leaf: up to kLeafEntries entries sorted by start, guarded by `seq` (odd while the
// writer changes it). Readers load every field with acquire, the writer stores with
// release: a reader that sees any stored value also sees the odd `seq` stored before it.
struct IotlbCache::Leaf {
  std::atomic<std::uint64_t> seq{0};
  std::atomic<std::uint32_t> count{0};
  std::atomic<std::uint64_t> start[kLeafEntries] = {};
  std::atomic<std::uint64_t> size[kLeafEntries] = {};
  std::atomic<std::uint64_t> target[kLeafEntries] = {};
  std::atomic<std::uint8_t> perm[kLeafEntries] = {};

  // Writer side.
  IotlbEntry get(std::uint32_t i) const {
    return {Iova{start[i].load(kRelaxed)}, size[i].load(kRelaxed), target[i].load(kRelaxed),
            static_cast<Access>(perm[i].load(kRelaxed))};
  }
  void put(std::uint32_t i, const IotlbEntry& e) {
    start[i].store(e.iova.value(), kRelease);
    size[i].store(e.size, kRelease);
    target[i].store(e.target, kRelease);
    perm[i].store(static_cast<std::uint8_t>(e.perm), kRelease);
  }
  std::uint32_t used() const { return count.load(kRelaxed); }
  // Removes slots [lo, hi), shifting the rest down.
  void erase(std::uint32_t lo, std::uint32_t hi) {
    std::uint32_t n = used();
    for (std::uint32_t i = hi; i < n; ++i) put(lo + i - hi, get(i));
    count.store(n - (hi - lo), kRelease);
  }
  // Inserts at slot i, shifting the rest up (room checked by the caller).
  void insert_at(std::uint32_t i, const IotlbEntry& e) {
    std::uint32_t n = used();
    for (std::uint32_t k = n; k > i; --k) put(k, get(k - 1));
    put(i, e);
    count.store(n + 1, kRelease);
  }
  // Number of entries whose start is <= key (writer side).
  std::uint32_t upper_bound(std::uint64_t key) const {
    std::uint32_t lo = 0, hi = used();
    while (lo < hi) {
      std::uint32_t mid = (lo + hi) / 2;
      if (start[mid].load(kRelaxed) <= key)
        lo = mid + 1;
      else
        hi = mid;
    }
    return lo;
  }
};

namespace {

// A write section on one leaf: its sequence is odd in between. Every section also bumps
// the cache's write generation first, which readers that cross leaves check.
class LeafWrite {
 public:
  template <class L>
  LeafWrite(L& leaf, std::atomic<std::uint64_t>& write_gen) : seq_(leaf.seq) {
    write_gen.store(write_gen.load(kRelaxed) + 1, kRelease);
    seq_.store(seq_.load(kRelaxed) + 1, kRelease);
  }
  ~LeafWrite() { seq_.store(seq_.load(kRelaxed) + 1, kRelease); }
  LeafWrite(const LeafWrite&) = delete;
  LeafWrite& operator=(const LeafWrite&) = delete;

 private:
  std::atomic<std::uint64_t>& seq_;
};

}  // namespace

// What one optimistic read found.
struct IotlbCache::Probe {
  Errc first_error{};  // error for the first byte (value 0: none)
  Errc stop{};         // why the extension stopped short of len (value 0: it did not)
  IotlbTranslation t;
  bool found = false;  // an entry holds the first byte: fill the cursor with it
  std::uint32_t leaf = 0, slot = 0;
  std::uint64_t seq = 0;
  IotlbEntry entry;
};

IotlbStats& IotlbStats::operator+=(const IotlbStats& o) {
  hits += o.hits;
  cursor_hits += o.cursor_hits;
  misses += o.misses;
  denied += o.denied;
  inserts += o.inserts;
  replaced += o.replaced;
  invalidated += o.invalidated;
  evictions += o.evictions;
  repacks += o.repacks;
  entries += o.entries;
  return *this;
}

IotlbStats IotlbCursor::stats() const {
  IotlbStats s;
  s.hits = hits_.load(kRelaxed);
  s.cursor_hits = cursor_hits_.load(kRelaxed);
  s.misses = misses_.load(kRelaxed);
  s.denied = denied_.load(kRelaxed);
  return s;
}

IotlbCache::IotlbCache(const IotlbCacheOptions& options)
    : id_(g_next_cache_id.fetch_add(1, kRelaxed)),
      capacity_(options.capacity),
      // Splits leave leaves at least half full, and a repack packs them to 3/4, so this
      // many leaves always hold `capacity` entries with a free one after a repack.
      pool_size_(static_cast<std::uint32_t>(options.capacity / (kLeafEntries / 2) + 2)),
      rng_(options.seed | 1) {
  VDMA_CHECK_MSG(capacity_ >= 1 && capacity_ <= kMaxCapacity, "IOTLB cache capacity");
  leaves_ = std::make_unique<Leaf[]>(pool_size_);
  top_sep_ = std::make_unique<std::atomic<std::uint64_t>[]>(pool_size_);
  top_leaf_ = std::make_unique<std::atomic<std::uint32_t>[]>(pool_size_);
  free_leaves_ = std::make_unique<std::uint32_t[]>(pool_size_);
  for (std::uint32_t i = 0; i < pool_size_; ++i) free_leaves_[i] = pool_size_ - 1 - i;
  free_count_ = pool_size_;
}

IotlbCache::~IotlbCache() = default;

IotlbCache::Leaf& IotlbCache::leaf_at(std::uint32_t pos) const {
  return leaves_[top_leaf_[pos].load(kRelaxed)];
}

// ---------------------------------------------------------------------------------------
// Reader side.

bool IotlbCache::probe(std::uint64_t iova, std::uint64_t len, Access access, Probe& out) const {
  out = Probe{};
  const std::uint64_t w1 = write_gen_.load(kAcquire);
  const std::uint64_t s1 = top_seq_.load(kAcquire);
  if (s1 & 1) return false;
  const std::uint32_t n = top_count_.load(kAcquire);
  if (n > pool_size_) return false;  // torn
  if (n == 0) {
    out.first_error = Errc::kIotlbMiss;
    return top_seq_.load(kAcquire) == s1;
  }
  // The last leaf whose separator is <= iova (the first separator is 0).
  std::uint32_t lo = 0, hi = n;
  while (lo < hi) {
    std::uint32_t mid = (lo + hi) / 2;
    if (top_sep_[mid].load(kAcquire) <= iova)
      lo = mid + 1;
    else
      hi = mid;
  }
  std::uint32_t pos = lo == 0 ? 0 : lo - 1;
  bool crossed = false;  // read more than one leaf: check the write generation too

  const Leaf* leaf = nullptr;
  std::uint32_t leaf_index = 0, count = 0;
  std::uint64_t l1 = 0;
  auto enter = [&](std::uint32_t p) {
    leaf_index = top_leaf_[p].load(kAcquire);
    if (leaf_index >= pool_size_) return false;
    leaf = &leaves_[leaf_index];
    l1 = leaf->seq.load(kAcquire);
    count = leaf->count.load(kAcquire);
    return (l1 & 1) == 0 && count != 0 && count <= kLeafEntries;
  };
  auto leave = [&] { return leaf->seq.load(kAcquire) == l1; };
  auto validate = [&] {
    return leave() && top_seq_.load(kAcquire) == s1 &&
           (!crossed || write_gen_.load(kAcquire) == w1);
  };
  if (!enter(pos)) return false;

  // The last entry whose start is <= iova.
  lo = 0;
  hi = count;
  while (lo < hi) {
    std::uint32_t mid = (lo + hi) / 2;
    if (leaf->start[mid].load(kAcquire) <= iova)
      lo = mid + 1;
    else
      hi = mid;
  }
  std::uint32_t slot = lo - 1;
  if (lo == 0) {
    // Below this leaf's first entry: the candidate is the last entry of the previous leaf.
    if (pos == 0) {
      out.first_error = Errc::kIotlbMiss;
      return validate();
    }
    if (!leave()) return false;
    crossed = true;
    if (!enter(--pos)) return false;
    slot = count - 1;
  }

  auto read = [&](std::uint32_t i) {
    return IotlbEntry{Iova{leaf->start[i].load(kAcquire)}, leaf->size[i].load(kAcquire),
                      leaf->target[i].load(kAcquire),
                      static_cast<Access>(leaf->perm[i].load(kAcquire))};
  };
  IotlbEntry e = read(slot);
  std::uint64_t off = iova - e.iova.value();
  if (off >= e.size) {
    out.first_error = Errc::kIotlbMiss;
    return validate();
  }
  out.found = true;
  out.leaf = leaf_index;
  out.slot = slot;
  out.seq = l1;
  out.entry = e;
  if (!permits(e.perm, access)) {
    out.first_error = Errc::kIotlbPermission;
    return validate();
  }
  out.t = {e.target + off, std::min(len, e.size - off)};
  // Extend across following entries while they continue both address spaces.
  std::uint64_t next_iova = e.iova.value() + e.size;
  std::uint64_t next_target = e.target + e.size;
  std::size_t steps = 0;
  while (out.t.len < len) {
    if (++steps > capacity_) return false;  // torn: a consistent walk is shorter
    if (slot + 1 < count) {
      ++slot;
    } else {
      if (pos + 1 >= n) {
        out.stop = Errc::kIotlbMiss;
        break;
      }
      if (!leave()) return false;
      crossed = true;
      if (!enter(++pos)) return false;
      slot = 0;
    }
    e = read(slot);
    if (e.iova.value() != next_iova) {
      out.stop = Errc::kIotlbMiss;
      break;
    }
    if (!permits(e.perm, access)) {
      out.stop = Errc::kIotlbPermission;
      break;
    }
    if (e.target != next_target) {
      out.stop = Errc::kIotlbFragmented;
      break;
    }
    out.t.len += std::min(len - out.t.len, e.size);
    next_iova += e.size;
    next_target += e.size;
  }
  return validate();
}

bool IotlbCache::try_neighbor(std::uint64_t iova, std::uint64_t len, Access access,
                              IotlbCursor& c) const {
  // The entry after the cursor's, in the same leaf, if that leaf is unchanged since the
  // cursor was filled (so the entry is still in the cache): sequential access.
  const Leaf& leaf = leaves_[c.leaf_];
  if (leaf.seq.load(kAcquire) != c.seq_value_) return false;
  std::uint32_t slot = c.slot_ + 1;
  if (slot >= std::min(leaf.count.load(kAcquire), kLeafEntries)) return false;
  std::uint64_t start = leaf.start[slot].load(kAcquire);
  std::uint64_t size = leaf.size[slot].load(kAcquire);
  std::uint64_t target = leaf.target[slot].load(kAcquire);
  auto perm = static_cast<Access>(leaf.perm[slot].load(kAcquire));
  if (leaf.seq.load(kAcquire) != c.seq_value_) return false;
  if (iova < start || len > size || iova - start > size - len || !permits(perm, access))
    return false;
  c.slot_ = slot;
  c.start_ = start;
  c.size_ = size;
  c.target_ = target;
  c.perm_ = perm;
  return true;
}

Result<IotlbTranslation> IotlbCache::lookup_slow(std::uint64_t iova, std::uint64_t len,
                                                 Access access, IotlbCursor& c, bool prefix) const {
  if (len == 0) return Err(Errc::kZeroLength);
  if (!checked_end(iova, len)) return Err(Errc::kOverflow);
  if (c.owner_ == id_ && try_neighbor(iova, len, access, c)) {
    IotlbCursor::bump(c.hits_);
    IotlbCursor::bump(c.cursor_hits_);
    return IotlbTranslation{c.target_ + (iova - c.start_), len};
  }
  Probe p;
  while (!probe(iova, len, access, p)) cpu_relax();
  if (p.found) {
    c.owner_ = id_;
    c.seq_ = &leaves_[p.leaf].seq;
    c.seq_value_ = p.seq;
    c.leaf_ = p.leaf;
    c.slot_ = p.slot;
    c.start_ = p.entry.iova.value();
    c.size_ = p.entry.size;
    c.target_ = p.entry.target;
    c.perm_ = p.entry.perm;
  }
  Errc err = p.first_error;
  if (err == Errc{} && !prefix && p.t.len < len) err = p.stop;
  if (err == Errc{}) {
    IotlbCursor::bump(c.hits_);
    return p.t;
  }
  IotlbCursor::bump(err == Errc::kIotlbMiss ? c.misses_ : c.denied_);
  return Err(err);
}

// ---------------------------------------------------------------------------------------
// Writer side.

void IotlbCache::begin_top() {
  write_gen_.store(write_gen_.load(kRelaxed) + 1, kRelease);
  top_seq_.store(top_seq_.load(kRelaxed) + 1, kRelease);
}

void IotlbCache::end_top() {
  top_seq_.store(top_seq_.load(kRelaxed) + 1, kRelease);
}

std::uint32_t IotlbCache::top_pos_for(std::uint64_t key) const {
  std::uint32_t lo = 0, hi = top_count_.load(kRelaxed);
  while (lo < hi) {
    std::uint32_t mid = (lo + hi) / 2;
    if (top_sep_[mid].load(kRelaxed) <= key)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo == 0 ? 0 : lo - 1;
}

bool IotlbCache::find_first_overlap(std::uint64_t start, std::uint64_t end, Pos& at) const {
  const std::uint32_t n = top_count_.load(kRelaxed);
  if (n == 0) return false;
  // The entry with the greatest start <= `start`, if any, then the one after it.
  Pos p{top_pos_for(start), 0};
  std::uint32_t below = leaf_at(p.pos).upper_bound(start);
  bool have_pred = true;
  if (below > 0) {
    p.slot = below - 1;
  } else if (p.pos > 0) {
    --p.pos;
    p.slot = leaf_at(p.pos).used() - 1;
  } else {
    have_pred = false;  // nothing starts at or below `start`: first entry of all
  }
  if (have_pred) {
    IotlbEntry e = leaf_at(p.pos).get(p.slot);
    if (e.iova.value() + e.size > start) {
      at = p;
      return true;
    }
    if (p.slot + 1 < leaf_at(p.pos).used()) {
      ++p.slot;
    } else {
      if (p.pos + 1 >= n) return false;
      p = {p.pos + 1, 0};
    }
  }
  if (leaf_at(p.pos).get(p.slot).iova.value() >= end) return false;
  at = p;
  return true;
}

void IotlbCache::drop_empty_leaves() {
  // Inside a top section: compact the top array over leaves emptied by removals.
  const std::uint32_t n = top_count_.load(kRelaxed);
  std::uint32_t kept = 0;
  for (std::uint32_t p = 0; p < n; ++p) {
    std::uint32_t li = top_leaf_[p].load(kRelaxed);
    if (leaves_[li].used() == 0) {
      free_leaves_[free_count_++] = li;
      continue;
    }
    if (kept != p) {
      top_sep_[kept].store(top_sep_[p].load(kRelaxed), kRelease);
      top_leaf_[kept].store(li, kRelease);
    }
    ++kept;
  }
  if (kept > 0) top_sep_[0].store(0, kRelease);
  top_count_.store(kept, kRelease);
}

std::size_t IotlbCache::remove_range(std::uint64_t start, std::uint64_t end) {
  Pos first;
  if (!find_first_overlap(start, end, first)) return 0;
  // The last overlapping entry: entries are sorted and disjoint, so the overlapping ones
  // are a run.
  const std::uint32_t n = top_count_.load(kRelaxed);
  Pos last = first;
  for (;;) {
    Pos next = last;
    if (next.slot + 1 < leaf_at(next.pos).used()) {
      ++next.slot;
    } else if (next.pos + 1 < n) {
      next = {next.pos + 1, 0};
    } else {
      break;
    }
    if (leaf_at(next.pos).get(next.slot).iova.value() >= end) break;
    last = next;
  }
  Leaf& first_leaf = leaf_at(first.pos);
  if (first.pos == last.pos && last.slot + 1 - first.slot < first_leaf.used()) {
    LeafWrite w(first_leaf, write_gen_);  // the common case: one leaf, readers of others go on
    first_leaf.erase(first.slot, last.slot + 1);
    return last.slot + 1 - first.slot;
  }
  std::size_t removed = 0;
  begin_top();
  for (std::uint32_t p = first.pos; p <= last.pos; ++p) {
    Leaf& leaf = leaf_at(p);
    std::uint32_t lo = p == first.pos ? first.slot : 0;
    std::uint32_t hi = p == last.pos ? last.slot + 1 : leaf.used();
    LeafWrite w(leaf, write_gen_);
    leaf.erase(lo, hi);
    removed += hi - lo;
  }
  drop_empty_leaves();
  end_top();
  return removed;
}

void IotlbCache::evict_one() {
  const std::uint32_t n = top_count_.load(kRelaxed);
  VDMA_CHECK(n > 0);
  std::uint32_t pos = static_cast<std::uint32_t>(next_random(rng_) % n);
  Leaf& leaf = leaf_at(pos);
  std::uint32_t slot = static_cast<std::uint32_t>(next_random(rng_) % leaf.used());
  if (leaf.used() > 1) {
    LeafWrite w(leaf, write_gen_);
    leaf.erase(slot, slot + 1);
  } else {
    begin_top();
    {
      LeafWrite w(leaf, write_gen_);
      leaf.erase(slot, slot + 1);
    }
    drop_empty_leaves();
    end_top();
  }
  add(entries_, std::uint64_t(0) - 1);
  add(evictions_, 1);
}

void IotlbCache::split(std::uint32_t pos) {
  // Moves the upper half of the full leaf at `pos` into a free leaf placed after it.
  const std::uint32_t n = top_count_.load(kRelaxed);
  VDMA_CHECK(free_count_ > 0 && n < pool_size_);
  std::uint32_t fresh = free_leaves_[--free_count_];
  Leaf& full = leaf_at(pos);
  Leaf& right = leaves_[fresh];
  constexpr std::uint32_t kHalf = kLeafEntries / 2;
  begin_top();
  {
    LeafWrite wl(full, write_gen_);
    LeafWrite wr(right, write_gen_);
    for (std::uint32_t i = kHalf; i < kLeafEntries; ++i) right.put(i - kHalf, full.get(i));
    right.count.store(kLeafEntries - kHalf, kRelease);
    full.count.store(kHalf, kRelease);
  }
  for (std::uint32_t q = n; q > pos + 1; --q) {
    top_sep_[q].store(top_sep_[q - 1].load(kRelaxed), kRelease);
    top_leaf_[q].store(top_leaf_[q - 1].load(kRelaxed), kRelease);
  }
  top_sep_[pos + 1].store(right.start[0].load(kRelaxed), kRelease);
  top_leaf_[pos + 1].store(fresh, kRelease);
  top_count_.store(n + 1, kRelease);
  end_top();
}

void IotlbCache::repack() {
  // Every leaf is in use (removals left many sparse): rewrite all entries into leaves
  // filled to kRepackFill. O(n) with readers retrying meanwhile; amortised over the
  // splits it takes to use up the pool again.
  std::vector<IotlbEntry> all;
  all.reserve(entries_.load(kRelaxed));
  const std::uint32_t n = top_count_.load(kRelaxed);
  for (std::uint32_t p = 0; p < n; ++p) {
    const Leaf& leaf = leaf_at(p);
    for (std::uint32_t i = 0; i < leaf.used(); ++i) all.push_back(leaf.get(i));
  }
  const std::uint32_t used =
      static_cast<std::uint32_t>((all.size() + kRepackFill - 1) / kRepackFill);
  VDMA_CHECK(used < pool_size_);
  begin_top();
  for (std::uint32_t li = 0; li < pool_size_; ++li) {
    Leaf& leaf = leaves_[li];
    LeafWrite w(leaf, write_gen_);
    std::size_t from = std::size_t{li} * kRepackFill;
    std::size_t to = std::min(all.size(), from + kRepackFill);
    std::uint32_t k = 0;
    for (std::size_t i = from; i < to; ++i) leaf.put(k++, all[i]);
    leaf.count.store(k, kRelease);
    if (li < used) {
      top_sep_[li].store(li == 0 ? 0 : all[from].iova.value(), kRelease);
      top_leaf_[li].store(li, kRelease);
    }
  }
  free_count_ = 0;
  for (std::uint32_t li = pool_size_; li > used; --li) free_leaves_[free_count_++] = li - 1;
  top_count_.store(used, kRelease);
  end_top();
  add(repacks_, 1);
}

void IotlbCache::insert_new(const IotlbEntry& e) {
  if (top_count_.load(kRelaxed) == 0) {
    std::uint32_t li = free_leaves_[--free_count_];
    begin_top();
    {
      LeafWrite w(leaves_[li], write_gen_);
      leaves_[li].insert_at(0, e);
    }
    top_sep_[0].store(0, kRelease);
    top_leaf_[0].store(li, kRelease);
    top_count_.store(1, kRelease);
    end_top();
    return;
  }
  std::uint32_t pos = top_pos_for(e.iova.value());
  if (leaf_at(pos).used() == kLeafEntries) {
    if (free_count_ == 0)
      repack();
    else
      split(pos);
    pos = top_pos_for(e.iova.value());
  }
  Leaf& leaf = leaf_at(pos);
  VDMA_CHECK(leaf.used() < kLeafEntries);
  LeafWrite w(leaf, write_gen_);
  leaf.insert_at(leaf.upper_bound(e.iova.value()), e);
}

Result<void> IotlbCache::insert(const IotlbEntry& e) {
  // guest-controlled: every field comes from the front end's IOTLB message.
  if (e.size == 0) return Err(Errc::kZeroLength);
  auto perm = static_cast<std::uint8_t>(e.perm);
  if (perm == 0 || perm > static_cast<std::uint8_t>(Access::kReadWrite))
    return Err(Errc::kInvalidArgument);
  auto end = checked_end(e.iova.value(), e.size);
  if (!end || !checked_end(e.target, e.size)) return Err(Errc::kOverflow);

  std::lock_guard lock(writer_mu_);
  std::size_t replaced = remove_range(e.iova.value(), *end);
  add(replaced_, replaced);
  add(entries_, std::uint64_t(0) - replaced);
  if (entries_.load(kRelaxed) >= capacity_) evict_one();
  insert_new(e);
  add(entries_, 1);
  add(inserts_, 1);
  return Ok();
}

std::size_t IotlbCache::invalidate(Iova iova, std::uint64_t size) {
  if (size == 0) return 0;
  // A range running past 2^64 is clamped: everything from iova up is invalidated.
  std::uint64_t end = checked_end(iova.value(), size).value_or(UINT64_MAX);
  std::lock_guard lock(writer_mu_);
  std::size_t n = remove_range(iova.value(), end);
  add(invalidated_, n);
  add(entries_, std::uint64_t(0) - n);
  return n;
}

void IotlbCache::clear() {
  std::lock_guard lock(writer_mu_);
  begin_top();
  const std::uint32_t n = top_count_.load(kRelaxed);
  for (std::uint32_t p = 0; p < n; ++p) {
    std::uint32_t li = top_leaf_[p].load(kRelaxed);
    LeafWrite w(leaves_[li], write_gen_);
    leaves_[li].count.store(0, kRelease);
    free_leaves_[free_count_++] = li;
  }
  top_count_.store(0, kRelease);
  end_top();
  entries_.store(0, kRelaxed);
}

IotlbStats IotlbCache::stats(std::span<const IotlbCursor* const> cursors) const {
  IotlbStats s;
  s.inserts = inserts_.load(kRelaxed);
  s.replaced = replaced_.load(kRelaxed);
  s.invalidated = invalidated_.load(kRelaxed);
  s.evictions = evictions_.load(kRelaxed);
  s.repacks = repacks_.load(kRelaxed);
  s.entries = entries_.load(kRelaxed);
  for (const IotlbCursor* c : cursors) s += c->stats();
  return s;
}

}  // namespace vdma::memory

#include "vdma/memory/iotlb_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "vdma/memory/errors.h"

namespace vdma::memory {
namespace {

constexpr std::uint64_t kPage = 0x1000;

IotlbEntry page_entry(std::uint64_t page, std::uint64_t target_page, Access perm) {
  return {Iova{page * kPage}, kPage, target_page * kPage, perm};
}

TEST(IotlbCacheTest, LookupInsideAnEntryAndCursorHit) {
  IotlbCache cache(IotlbCacheOptions{.capacity = 16});
  IotlbCursor cursor;
  ASSERT_TRUE(cache.insert({Iova{0x1000}, 0x2000, 0x80000, Access::kRead}));
  auto tr = cache.lookup(Iova{0x1800}, 0x40, Access::kRead, cursor);
  ASSERT_TRUE(tr);
  EXPECT_EQ(tr->target, 0x80800u);
  EXPECT_EQ(tr->len, 0x40u);
  tr = cache.lookup(Iova{0x1000}, 0x2000, Access::kRead, cursor);
  ASSERT_TRUE(tr);
  EXPECT_EQ(tr->target, 0x80000u);
  const IotlbCursor* cursors[] = {&cursor};
  IotlbStats s = cache.stats(cursors);
  EXPECT_EQ(s.hits, 2u);
  EXPECT_EQ(s.cursor_hits, 1u);
  EXPECT_EQ(s.misses, 0u);
  EXPECT_EQ(s.entries, 1u);
  EXPECT_EQ(s.inserts, 1u);
}

TEST(IotlbCacheTest, PreciseErrors) {
  IotlbCache cache(IotlbCacheOptions{.capacity = 16});
  IotlbCursor c;
  ASSERT_TRUE(cache.insert({Iova{0x1000}, 0x1000, 0x80000, Access::kRead}));
  ASSERT_TRUE(cache.insert({Iova{0x2000}, 0x1000, 0x90000, Access::kReadWrite}));
  ASSERT_TRUE(cache.insert({Iova{0x4000}, 0x1000, 0xa0000, Access::kWrite}));
  EXPECT_EQ(cache.lookup(Iova{0x0}, 1, Access::kRead, c).error(), Errc::kIotlbMiss);
  EXPECT_EQ(cache.lookup(Iova{0x1000}, 1, Access::kWrite, c).error(), Errc::kIotlbPermission);
  EXPECT_EQ(cache.lookup(Iova{0x4000}, 1, Access::kRead, c).error(), Errc::kIotlbPermission);
  EXPECT_EQ(cache.lookup(Iova{0x1f00}, 0x200, Access::kRead, c).error(), Errc::kIotlbFragmented);
  EXPECT_EQ(cache.lookup(Iova{0x2f00}, 0x200, Access::kRead, c).error(), Errc::kIotlbMiss);
  EXPECT_EQ(cache.lookup(Iova{0x5000}, 1, Access::kRead, c).error(), Errc::kIotlbMiss);
  EXPECT_EQ(cache.lookup(Iova{0x1000}, 0, Access::kRead, c).error(), Errc::kZeroLength);
  EXPECT_EQ(cache.lookup(Iova{UINT64_MAX}, 2, Access::kRead, c).error(), Errc::kOverflow);
  auto p = cache.lookup_prefix(Iova{0x1f00}, 0x200, Access::kRead, c);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->target, 0x80f00u);
  EXPECT_EQ(p->len, 0x100u);
  EXPECT_EQ(cache.lookup_prefix(Iova{0x3000}, 8, Access::kRead, c).error(), Errc::kIotlbMiss);
  const IotlbCursor* cursors[] = {&c};
  IotlbStats s = cache.stats(cursors);
  EXPECT_EQ(s.misses, 4u);
  EXPECT_EQ(s.denied, 3u);
  EXPECT_EQ(s.hits, 1u);
}

TEST(IotlbCacheTest, ContiguousEntriesJoinAcrossLeaves) {
  // Page-sized entries (what QEMU sends) over several leaves, targets contiguous.
  IotlbCache cache(IotlbCacheOptions{.capacity = 1024});
  IotlbCursor c;
  for (std::uint64_t i = 0; i < 300; ++i)
    ASSERT_TRUE(cache.insert(page_entry(0x100 + i, 0x5000 + i, Access::kReadWrite)));
  auto tr = cache.lookup(Iova{0x100 * kPage + 0x10}, 250 * kPage, Access::kWrite, c);
  ASSERT_TRUE(tr);
  EXPECT_EQ(tr->target, 0x5000 * kPage + 0x10);
  EXPECT_EQ(tr->len, 250 * kPage);
  // One page elsewhere in the target space breaks the run.
  ASSERT_TRUE(cache.insert(page_entry(0x100 + 200, 0x9000, Access::kReadWrite)));
  EXPECT_EQ(cache.lookup(Iova{0x100 * kPage}, 250 * kPage, Access::kRead, c).error(),
            Errc::kIotlbFragmented);
  auto p = cache.lookup_prefix(Iova{0x100 * kPage}, 250 * kPage, Access::kRead, c);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->len, 200 * kPage);
  // A read-only page in the run.
  ASSERT_TRUE(cache.insert(page_entry(0x100 + 100, 0x5000 + 100, Access::kRead)));
  EXPECT_EQ(cache.lookup(Iova{0x100 * kPage}, 150 * kPage, Access::kWrite, c).error(),
            Errc::kIotlbPermission);
  EXPECT_TRUE(cache.lookup(Iova{0x100 * kPage}, 150 * kPage, Access::kRead, c));
  EXPECT_EQ(cache.size(), 300u);
}

TEST(IotlbCacheTest, HostileUpdatesAreErrors) {
  IotlbCache cache(IotlbCacheOptions{.capacity = 16});
  IotlbCursor c;
  EXPECT_EQ(cache.insert({Iova{0x9000}, 0, 0, Access::kRead}).error(), Errc::kZeroLength);
  EXPECT_EQ(cache.insert({Iova{UINT64_MAX - 10}, 0x100, 0, Access::kRead}).error(),
            Errc::kOverflow);
  EXPECT_EQ(cache.insert({Iova{0x9000}, 0x100, UINT64_MAX - 10, Access::kRead}).error(),
            Errc::kOverflow);
  EXPECT_EQ(cache.insert({Iova{1}, UINT64_MAX, 0, Access::kRead}).error(), Errc::kOverflow);
  EXPECT_EQ(cache.insert({Iova{0x9000}, 0x100, 0, Access::kNone}).error(), Errc::kInvalidArgument);
  EXPECT_EQ(cache.insert({Iova{0x9000}, 0x100, 0, static_cast<Access>(7)}).error(),
            Errc::kInvalidArgument);
  EXPECT_EQ(cache.size(), 0u);
  // The very top of the address space is usable (the end is represented, not wrapped).
  ASSERT_TRUE(cache.insert({Iova{UINT64_MAX - 0xfff}, 0xfff, 0x1000, Access::kRead}));
  auto tr = cache.lookup(Iova{UINT64_MAX - 1}, 1, Access::kRead, c);
  ASSERT_TRUE(tr);
  EXPECT_EQ(tr->target, 0x1ffeu);
  // An invalidation running past 2^64 is clamped, never wraps to the bottom.
  ASSERT_TRUE(cache.insert({Iova{0}, 0x1000, 0, Access::kRead}));
  EXPECT_EQ(cache.invalidate(Iova{0x1000}, UINT64_MAX), 1u);
  EXPECT_EQ(cache.invalidate(Iova{0x0}, 0), 0u);
  EXPECT_TRUE(cache.lookup(Iova{0}, 1, Access::kRead, c));
  EXPECT_EQ(cache.lookup(Iova{UINT64_MAX - 1}, 1, Access::kRead, c).error(), Errc::kIotlbMiss);
}

TEST(IotlbCacheTest, OverlappingUpdateReplacesWhatItOverlaps) {
  IotlbCache cache(IotlbCacheOptions{.capacity = 16});
  IotlbCursor c;
  ASSERT_TRUE(cache.insert({Iova{0x1000}, 0x2000, 0x10000, Access::kRead}));
  ASSERT_TRUE(cache.insert({Iova{0x3000}, 0x1000, 0x20000, Access::kRead}));
  ASSERT_TRUE(cache.insert({Iova{0x5000}, 0x1000, 0x30000, Access::kRead}));
  ASSERT_TRUE(cache.lookup(Iova{0x1000}, 8, Access::kRead, c));  // fills the cursor
  ASSERT_TRUE(cache.insert({Iova{0x2000}, 0x1800, 0x40000, Access::kReadWrite}));
  // Both overlapped entries are gone whole (nothing stale survives, not even 0x1000).
  EXPECT_EQ(cache.lookup(Iova{0x1000}, 8, Access::kRead, c).error(), Errc::kIotlbMiss);
  EXPECT_EQ(cache.lookup(Iova{0x3800}, 8, Access::kRead, c).error(), Errc::kIotlbMiss);
  auto tr = cache.lookup(Iova{0x3000}, 8, Access::kWrite, c);
  ASSERT_TRUE(tr);
  EXPECT_EQ(tr->target, 0x41000u);
  EXPECT_TRUE(cache.lookup(Iova{0x5000}, 8, Access::kRead, c));
  IotlbStats s = cache.stats();
  EXPECT_EQ(s.replaced, 2u);
  EXPECT_EQ(s.entries, 2u);
  // The same update again replaces itself.
  ASSERT_TRUE(cache.insert({Iova{0x2000}, 0x1800, 0x40000, Access::kReadWrite}));
  EXPECT_EQ(cache.size(), 2u);
}

TEST(IotlbCacheTest, InvalidateReachesTheCursor) {
  IotlbCache cache(IotlbCacheOptions{.capacity = 1024});
  IotlbCursor c;
  for (std::uint64_t i = 0; i < 200; ++i)
    ASSERT_TRUE(cache.insert(page_entry(i, 0x1000 + i, Access::kRead)));
  ASSERT_TRUE(cache.lookup(Iova{0x10}, 8, Access::kRead, c));
  ASSERT_TRUE(cache.lookup(Iova{0x20}, 8, Access::kRead, c));
  EXPECT_EQ(c.stats().cursor_hits, 1u);
  // Removing an entry in another leaf leaves this cursor valid.
  EXPECT_EQ(cache.invalidate(Iova{190 * kPage}, 1), 1u);
  ASSERT_TRUE(cache.lookup(Iova{0x30}, 8, Access::kRead, c));
  EXPECT_EQ(c.stats().cursor_hits, 2u);
  // Removing the cursor's own entry is seen by the next lookup.
  EXPECT_EQ(cache.invalidate(Iova{0x800}, 1), 1u);
  EXPECT_EQ(cache.lookup(Iova{0x30}, 8, Access::kRead, c).error(), Errc::kIotlbMiss);
  EXPECT_EQ(c.stats().cursor_hits, 2u);
  ASSERT_TRUE(cache.insert(page_entry(0, 0x7000, Access::kRead)));
  auto tr = cache.lookup(Iova{0x30}, 8, Access::kRead, c);
  ASSERT_TRUE(tr);
  EXPECT_EQ(tr->target, 0x7000 * kPage + 0x30);
  cache.clear();
  EXPECT_EQ(cache.lookup(Iova{0x30}, 8, Access::kRead, c).error(), Errc::kIotlbMiss);
  EXPECT_EQ(cache.size(), 0u);
}

TEST(IotlbCacheTest, SequentialAccessHitsTheCursorNeighbour) {
  IotlbCache cache(IotlbCacheOptions{.capacity = 4096});
  IotlbCursor c;
  for (std::uint64_t i = 0; i < 1000; ++i)
    ASSERT_TRUE(cache.insert(page_entry(i, 0x10000 + 3 * i, Access::kRead)));
  for (std::uint64_t i = 0; i < 1000; ++i) {
    auto tr = cache.lookup(Iova{i * kPage + 0x100}, 0x200, Access::kRead, c);
    ASSERT_TRUE(tr);
    ASSERT_EQ(tr->target, (0x10000 + 3 * i) * kPage + 0x100);
  }
  // Only the first lookup and one per leaf boundary go to the tree.
  IotlbStats s = c.stats();
  EXPECT_EQ(s.hits, 1000u);
  EXPECT_GE(s.cursor_hits, 1000u - 1000u / (IotlbCache::kLeafEntries / 2) - 1);
}

TEST(IotlbCacheTest, FullCacheEvicts) {
  IotlbCache cache(IotlbCacheOptions{.capacity = 100});
  IotlbCursor c;
  for (std::uint64_t i = 0; i < 1000; ++i)
    ASSERT_TRUE(cache.insert(page_entry(2 * i, 0x100000 + i, Access::kRead)));
  EXPECT_EQ(cache.size(), 100u);
  IotlbStats s = cache.stats();
  EXPECT_EQ(s.evictions, 900u);
  EXPECT_EQ(s.entries, 100u);
  // Whatever survived still translates correctly; the rest misses.
  std::size_t present = 0;
  for (std::uint64_t i = 0; i < 1000; ++i) {
    auto tr = cache.lookup(Iova{2 * i * kPage}, 1, Access::kRead, c);
    if (tr) {
      ++present;
      EXPECT_EQ(tr->target, (0x100000 + i) * kPage);
    } else {
      EXPECT_EQ(tr.error(), Errc::kIotlbMiss);
    }
  }
  EXPECT_EQ(present, 100u);
  EXPECT_EQ(cache.lookup(Iova{999 * 2 * kPage}, 1, Access::kRead, c).value().len, 1u);
}

TEST(IotlbCacheTest, CapacityOfOne) {
  IotlbCache cache(IotlbCacheOptions{.capacity = 1});
  IotlbCursor c;
  ASSERT_TRUE(cache.insert(page_entry(1, 1, Access::kRead)));
  ASSERT_TRUE(cache.insert(page_entry(2, 2, Access::kRead)));
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.lookup(Iova{kPage}, 1, Access::kRead, c).error(), Errc::kIotlbMiss);
  EXPECT_TRUE(cache.lookup(Iova{2 * kPage}, 1, Access::kRead, c));
}

TEST(IotlbCacheTest, CursorIsBoundToItsCacheAndCopiesAreFresh) {
  IotlbCache a(IotlbCacheOptions{.capacity = 16});
  IotlbCache b(IotlbCacheOptions{.capacity = 16});
  IotlbCursor c;
  ASSERT_TRUE(a.insert(page_entry(1, 5, Access::kRead)));
  ASSERT_TRUE(a.lookup(Iova{kPage}, 8, Access::kRead, c));
  EXPECT_EQ(b.lookup(Iova{kPage}, 8, Access::kRead, c).error(), Errc::kIotlbMiss);
  ASSERT_TRUE(a.lookup(Iova{kPage}, 8, Access::kRead, c));
  IotlbCursor copy = c;
  EXPECT_EQ(copy.stats().hits, 0u);
  ASSERT_TRUE(a.lookup(Iova{kPage}, 8, Access::kRead, copy));
  EXPECT_EQ(copy.stats().cursor_hits, 0u);  // filled afresh
  ASSERT_TRUE(a.lookup(Iova{kPage}, 8, Access::kRead, copy));
  EXPECT_EQ(copy.stats().cursor_hits, 1u);
}

TEST(IotlbCacheTest, RepackAfterSparseLeavesKeepsEveryEntry) {
  // Ascending inserts split leaves in halves; thinning them out leaves the pool full of
  // sparse leaves, and the next splits need a repack.
  IotlbCache cache(IotlbCacheOptions{.capacity = 640});
  IotlbTable model;
  auto add = [&](std::uint64_t page) {
    IotlbEntry e = page_entry(page, 0x40000 + page, Access::kReadWrite);
    ASSERT_TRUE(cache.insert(e));
    ASSERT_TRUE(model.insert(e));
  };
  for (std::uint64_t p = 0; p < 600; ++p) add(p);
  for (std::uint64_t p = 0; p < 600; p += 16) {
    EXPECT_EQ(cache.invalidate(Iova{(p + 1) * kPage}, 15 * kPage),
              model.invalidate(Iova{(p + 1) * kPage}, 15 * kPage));
  }
  for (std::uint64_t p = 10000; p < 10300; ++p) add(p);
  IotlbStats s = cache.stats();
  EXPECT_GT(s.repacks, 0u);
  EXPECT_EQ(s.evictions, 0u);
  EXPECT_EQ(cache.size(), model.size());
  IotlbCursor c;
  for (std::uint64_t p = 0; p < 10400; p += (p < 700 || p >= 9990) ? 1 : 97) {
    auto got = cache.lookup(Iova{p * kPage + 1}, 2 * kPage, Access::kRead, c);
    auto want = model.lookup(Iova{p * kPage + 1}, 2 * kPage, Access::kRead);
    ASSERT_EQ(got.has_value(), want.has_value()) << p;
    if (want) {
      EXPECT_EQ(got->target, want->target);
    } else {
      EXPECT_EQ(got.error(), want.error());
    }
  }
}

// Random operations against IotlbTable (the reference semantics) used as the model: an
// update first invalidates what it overlaps. Capacity is never reached, so the cache must
// answer exactly as the model, through every split, leaf free and repack.
struct RandomOps {
  std::mt19937_64 rng;
  std::uint64_t pages;

  IotlbEntry entry() {
    std::uint64_t start = (rng() % pages) * kPage;
    if (rng() % 4 == 0) start += rng() % kPage;
    std::uint64_t size = (1 + rng() % 4) * kPage - (rng() % 4 == 0 ? rng() % kPage : 0);
    // Half the targets continue their neighbours (identity plus an offset).
    std::uint64_t target = rng() % 2 ? start + 0x10000000 : (rng() % 100000) * kPage;
    return {Iova{start}, size, target, static_cast<Access>(1 + rng() % 3)};
  }
  Iova iova() { return Iova{(rng() % (pages + 2)) * kPage + rng() % kPage}; }
  std::uint64_t len() { return 1 + rng() % (3 * kPage); }
  Access access() { return static_cast<Access>(1 + rng() % 3); }
};

void expect_same(const Result<IotlbTranslation>& got, const Result<IotlbTranslation>& want) {
  ASSERT_EQ(got.has_value(), want.has_value()) << got.error().message();
  if (want) {
    EXPECT_EQ(got->target, want->target);
    EXPECT_EQ(got->len, want->len);
  } else {
    EXPECT_EQ(got.error(), want.error());
  }
}

// Adds the cache's counters to `total` (ASSERT needs a void function).
void run_model_check(std::size_t capacity, std::uint64_t pages, std::uint64_t seed, int ops,
                     IotlbStats& total) {
  IotlbCache cache(IotlbCacheOptions{.capacity = capacity});
  IotlbTable model;
  IotlbCursor cursors[2];
  RandomOps r{std::mt19937_64(seed), pages};
  for (int op = 0; op < ops; ++op) {
    unsigned kind = r.rng() % 10;
    if (kind < 4) {
      if (cache.size() + 1 >= capacity) {  // stay below capacity: no eviction here
        Iova at = r.iova();
        std::uint64_t len = (1 + r.rng() % 64) * kPage;
        EXPECT_EQ(cache.invalidate(at, len), model.invalidate(at, len));
        continue;
      }
      IotlbEntry e = r.entry();
      ASSERT_TRUE(cache.insert(e));
      model.invalidate(e.iova, e.size);
      ASSERT_TRUE(model.insert(e));
    } else if (kind < 5) {
      Iova at = r.iova();
      std::uint64_t len = 1 + r.rng() % (8 * kPage);
      ASSERT_EQ(cache.invalidate(at, len), model.invalidate(at, len));
    } else {
      IotlbCursor& c = cursors[r.rng() % 2];
      Iova at = r.iova();
      std::uint64_t len = r.len();
      Access acc = r.access();
      if (kind < 8)
        expect_same(cache.lookup(at, len, acc, c), model.lookup(at, len, acc));
      else
        expect_same(cache.lookup_prefix(at, len, acc, c), model.lookup_prefix(at, len, acc));
      // And again: the cursor now holds the entry.
      expect_same(cache.lookup(at, len, acc, c), model.lookup(at, len, acc));
    }
    ASSERT_EQ(cache.size(), model.size());
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "seed " << seed << " op " << op;
      return;
    }
  }
  total += cache.stats();
  cache.clear();
  IotlbCursor c;
  EXPECT_EQ(cache.lookup(r.iova(), 1, Access::kRead, c).error(), Errc::kIotlbMiss);
}

TEST(IotlbCacheTest, PropertyMatchesModelWithoutEviction) {
  IotlbStats total;
  for (std::uint64_t seed = 1; seed <= 4; ++seed) {
    for (std::size_t capacity : {64, 300, 4096}) {
      run_model_check(capacity, /*pages=*/capacity < 1000 ? 1024 : 4096, seed * 7919 + capacity,
                      /*ops=*/6000, total);
      if (HasFailure()) return;
    }
  }
  EXPECT_GT(total.replaced, 0u);
  EXPECT_GT(total.invalidated, 0u);
}

TEST(IotlbCacheTest, PropertyWithEvictionAnswersAreTheModels) {
  // With eviction the cache holds a subset of the model: every success must be what the
  // model says (a prefix no longer than the model's), and the size stays bounded.
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    IotlbCache cache(IotlbCacheOptions{.capacity = 150, .seed = seed});
    IotlbTable model;
    IotlbCursor c;
    RandomOps r{std::mt19937_64(seed), 1024};
    for (int op = 0; op < 8000; ++op) {
      unsigned kind = r.rng() % 10;
      if (kind < 5) {
        IotlbEntry e = r.entry();
        ASSERT_TRUE(cache.insert(e));
        model.invalidate(e.iova, e.size);
        ASSERT_TRUE(model.insert(e));
      } else if (kind < 6) {
        Iova at = r.iova();
        std::uint64_t len = 1 + r.rng() % (8 * kPage);
        cache.invalidate(at, len);
        model.invalidate(at, len);
      } else {
        Iova at = r.iova();
        std::uint64_t len = r.len();
        Access acc = r.access();
        auto got = cache.lookup_prefix(at, len, acc, c);
        auto want = model.lookup_prefix(at, len, acc);
        if (got) {
          ASSERT_TRUE(want) << "seed " << seed << " op " << op;
          EXPECT_EQ(got->target, want->target);
          EXPECT_LE(got->len, want->len);
        } else if (got.error() != Errc::kIotlbMiss) {
          EXPECT_EQ(got.error(), want.error());  // the entry is there: same verdict
        }
      }
      ASSERT_LE(cache.size(), 150u);
    }
    EXPECT_GT(cache.stats().evictions, 0u);
  }
}

// Readers translate while the writer inserts, replaces and invalidates. Each slot's
// translation carries its version in the target; after invalidate() (or a replacing
// insert) returns, the writer publishes the dead version. A reader that read the dead
// version before its lookup must never get that version back, cursor hits included.
TEST(IotlbCacheConcurrencyTest, NoTranslationSurvivesItsInvalidation) {
  constexpr std::uint64_t kSlots = 96;
  constexpr std::uint64_t kSlotSpan = 0x10000;  // 4 pages used per slot
  IotlbCache cache(IotlbCacheOptions{.capacity = 200});
  std::vector<std::atomic<std::uint64_t>> dead(kSlots);  // versions <= this are invalid
  std::atomic<bool> stop{false};
  auto target_of = [](std::uint64_t version, std::uint64_t slot) {
    return (version << 32) | (slot << 16);
  };
  auto insert_slot = [&](std::uint64_t slot, std::uint64_t version,
                         bool one_entry) -> Result<void> {
    std::uint64_t base = slot * kSlotSpan;
    if (one_entry)
      return cache.insert({Iova{base}, 4 * kPage, target_of(version, slot), Access::kRead});
    for (std::uint64_t p = 0; p < 4; ++p) {
      VDMA_TRY(cache.insert(
          {Iova{base + p * kPage}, kPage, target_of(version, slot) + p * kPage, Access::kRead}));
    }
    return Ok();
  };

  std::atomic<std::uint64_t> violations{0}, tree_hits{0}, cursor_hits{0}, misses{0};
  auto reader = [&](std::uint64_t seed) {
    IotlbCursor cursor;
    std::mt19937_64 rng(seed);
    while (!stop.load(std::memory_order_relaxed)) {
      std::uint64_t slot = rng() % kSlots;
      for (int repeat = 0; repeat < 8; ++repeat) {  // repeats give cursor hits
        std::uint64_t off = rng() % (4 * kPage - 64);
        std::uint64_t len = repeat % 4 == 0 ? 2 * kPage : 64;
        len = std::min(len, 4 * kPage - off);
        std::uint64_t d = dead[slot].load(std::memory_order_acquire);
        auto tr = cache.lookup(Iova{slot * kSlotSpan + off}, len, Access::kRead, cursor);
        if (!tr) continue;
        std::uint64_t version = tr->target >> 32;
        bool ok = version > d && ((tr->target >> 16) & 0xffff) == slot &&
                  (tr->target & 0xffff) == off && tr->len == len;
        if (!ok) violations.fetch_add(1);
      }
    }
    const IotlbCursor* cs[] = {&cursor};
    IotlbStats s = cache.stats(cs);
    tree_hits.fetch_add(s.hits - s.cursor_hits);
    cursor_hits.fetch_add(s.cursor_hits);
    misses.fetch_add(s.misses);
  };
  std::vector<std::uint64_t> version(kSlots, 0);
  std::vector<bool> live(kSlots, false);
  for (std::uint64_t slot = 0; slot < kSlots; ++slot) {  // 384 entries > capacity: evicts
    ASSERT_TRUE(insert_slot(slot, ++version[slot], false));
    live[slot] = true;
  }
  std::thread r1(reader, 1), r2(reader, 2);
  std::mt19937_64 rng(99);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  int ops = 0;
  while (ops < 4000 || (std::chrono::steady_clock::now() < deadline && ops < 200000)) {
    ++ops;
    std::uint64_t slot = rng() % kSlots;
    std::uint64_t old = version[slot];
    if (live[slot] && rng() % 2) {
      cache.invalidate(Iova{slot * kSlotSpan + rng() % (4 * kPage)}, 1 + rng() % kPage);
      // Part of the slot is gone: every old translation of it counts as dead.
      cache.invalidate(Iova{slot * kSlotSpan}, 4 * kPage);
      live[slot] = false;
    } else {
      // A new version replaces (overlaps) the old one.
      if (!insert_slot(slot, ++version[slot], rng() % 2)) {
        ADD_FAILURE() << "insert refused";
        break;  // still join the readers
      }
      live[slot] = true;
    }
    dead[slot].store(live[slot] ? old : version[slot], std::memory_order_release);
  }
  stop = true;
  r1.join();
  r2.join();
  EXPECT_EQ(violations.load(), 0u);
  EXPECT_GT(tree_hits.load(), 0u);
  EXPECT_GT(cursor_hits.load(), 0u);
  EXPECT_GT(misses.load(), 0u);
  EXPECT_GT(cache.stats().evictions, 0u);
}

}  // namespace
}  // namespace vdma::memory

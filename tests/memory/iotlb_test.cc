#include "vdma/memory/iotlb.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "vdma/memory/errors.h"

namespace vdma::memory {
namespace {

TEST(IotlbTableTest, LookupInsideAnEntry) {
  IotlbTable t;
  ASSERT_TRUE(t.insert({Iova{0x1000}, 0x2000, 0x80000, Access::kRead}));
  auto tr = t.lookup(Iova{0x1800}, 0x40, Access::kRead);
  ASSERT_TRUE(tr);
  EXPECT_EQ(tr->target, 0x80800u);
  EXPECT_EQ(tr->len, 0x40u);
  EXPECT_TRUE(t.lookup(Iova{0x1000}, 0x2000, Access::kRead));
}

TEST(IotlbTableTest, PreciseErrors) {
  IotlbTable t;
  ASSERT_TRUE(t.insert({Iova{0x1000}, 0x1000, 0x80000, Access::kRead}));
  ASSERT_TRUE(t.insert({Iova{0x2000}, 0x1000, 0x90000, Access::kReadWrite}));  // not contiguous
  ASSERT_TRUE(t.insert({Iova{0x4000}, 0x1000, 0xa0000, Access::kWrite}));
  EXPECT_EQ(t.lookup(Iova{0x0}, 1, Access::kRead).error(), Errc::kIotlbMiss);
  EXPECT_EQ(t.lookup(Iova{0x1000}, 1, Access::kWrite).error(), Errc::kIotlbPermission);
  EXPECT_EQ(t.lookup(Iova{0x4000}, 1, Access::kRead).error(), Errc::kIotlbPermission);
  EXPECT_EQ(t.lookup(Iova{0x1f00}, 0x200, Access::kRead).error(), Errc::kIotlbFragmented);
  EXPECT_EQ(t.lookup(Iova{0x2f00}, 0x200, Access::kRead).error(), Errc::kIotlbMiss);
  EXPECT_EQ(t.lookup(Iova{0x1000}, 0, Access::kRead).error(), Errc::kZeroLength);
  EXPECT_EQ(t.lookup(Iova{UINT64_MAX}, 2, Access::kRead).error(), Errc::kOverflow);
  // The prefix variant returns what is usable.
  auto p = t.lookup_prefix(Iova{0x1f00}, 0x200, Access::kRead);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->len, 0x100u);
}

TEST(IotlbTableTest, ContiguousEntriesJoin) {
  IotlbTable t;
  ASSERT_TRUE(t.insert({Iova{0x1000}, 0x1000, 0x80000, Access::kReadWrite}));
  ASSERT_TRUE(t.insert({Iova{0x2000}, 0x1000, 0x81000, Access::kRead}));
  auto tr = t.lookup(Iova{0x1800}, 0x1000, Access::kRead);
  ASSERT_TRUE(tr);
  EXPECT_EQ(tr->target, 0x80800u);
  EXPECT_EQ(tr->len, 0x1000u);
  // The second entry refuses writes.
  EXPECT_EQ(t.lookup(Iova{0x1800}, 0x1000, Access::kWrite).error(), Errc::kIotlbPermission);
}

TEST(IotlbTableTest, HostileInserts) {
  IotlbTable t;
  ASSERT_TRUE(t.insert({Iova{0x1000}, 0x1000, 0, Access::kRead}));
  EXPECT_EQ(t.insert({Iova{0x1800}, 0x1000, 0, Access::kRead}).error(), Errc::kOverlap);
  EXPECT_EQ(t.insert({Iova{0x0}, 0x1001, 0, Access::kRead}).error(), Errc::kOverlap);
  EXPECT_EQ(t.insert({Iova{0x0}, 0x3000, 0, Access::kRead}).error(), Errc::kOverlap);
  EXPECT_EQ(t.insert({Iova{0x9000}, 0, 0, Access::kRead}).error(), Errc::kZeroLength);
  EXPECT_EQ(t.insert({Iova{UINT64_MAX - 10}, 0x100, 0, Access::kRead}).error(), Errc::kOverflow);
  EXPECT_EQ(t.insert({Iova{0x9000}, 0x100, UINT64_MAX - 10, Access::kRead}).error(),
            Errc::kOverflow);
  EXPECT_EQ(t.insert({Iova{0x9000}, 0x100, 0, Access::kNone}).error(), Errc::kInvalidArgument);
  EXPECT_EQ(t.size(), 1u);
}

TEST(IotlbTableTest, InvalidateDropsEveryOverlappingEntry) {
  IotlbTable t;
  for (std::uint64_t i = 0; i < 8; ++i)
    ASSERT_TRUE(t.insert({Iova{0x1000 * (i + 1)}, 0x1000, 0x100000 * i, Access::kRead}));
  // Partly covers entries 2 and 4: both are dropped whole, 3 too.
  EXPECT_EQ(t.invalidate(Iova{0x2800}, 0x2000), 3u);
  EXPECT_EQ(t.lookup(Iova{0x2000}, 1, Access::kRead).error(), Errc::kIotlbMiss);
  EXPECT_TRUE(t.lookup(Iova{0x1000}, 1, Access::kRead));
  EXPECT_TRUE(t.lookup(Iova{0x5000}, 1, Access::kRead));
  // An overflowing range invalidates everything above its start.
  EXPECT_EQ(t.invalidate(Iova{0x6000}, UINT64_MAX), 3u);
  EXPECT_EQ(t.invalidate(Iova{0x6000}, 0), 0u);
  EXPECT_EQ(t.size(), 2u);
}

// Property: random inserts/invalidates/lookups against a page-level model.
TEST(IotlbTableTest, PropertyAgainstPageModel) {
  constexpr int kPages = 256;
  struct Page {
    bool mapped = false;
    std::uint64_t target = 0;
    Access perm = Access::kNone;
    int entry = -1;
  };
  std::vector<Page> model(kPages);
  IotlbTable t;
  std::mt19937_64 rng(99);
  int next_entry = 0;
  for (int i = 0; i < 20000; ++i) {
    int op = static_cast<int>(rng() % 3);
    int first = static_cast<int>(rng() % kPages);
    int n = 1 + static_cast<int>(rng() % 8);
    if (first + n > kPages) n = kPages - first;
    Iova iova{static_cast<std::uint64_t>(first) * 0x1000};
    if (op == 0) {
      std::uint64_t target = (rng() % 1024) * 0x1000;
      Access perm = static_cast<Access>(1 + rng() % 3);
      bool free = true;
      for (int p = first; p < first + n; ++p) free = free && !model[p].mapped;
      auto r = t.insert({iova, static_cast<std::uint64_t>(n) * 0x1000, target, perm});
      ASSERT_EQ(r.has_value(), free);
      if (free) {
        for (int p = first; p < first + n; ++p)
          model[p] = {true, target + static_cast<std::uint64_t>(p - first) * 0x1000, perm,
                      next_entry};
        ++next_entry;
      }
    } else if (op == 1) {
      // Drop whole entries touching the range.
      std::vector<int> dead;
      for (int p = first; p < first + n; ++p)
        if (model[p].mapped) dead.push_back(model[p].entry);
      t.invalidate(iova, static_cast<std::uint64_t>(n) * 0x1000);
      for (auto& pg : model)
        if (pg.mapped && std::find(dead.begin(), dead.end(), pg.entry) != dead.end()) pg = {};
    } else {
      Access want = static_cast<Access>(1 + rng() % 3);
      std::uint64_t len = static_cast<std::uint64_t>(n) * 0x1000 - rng() % 0x800;
      auto r = t.lookup(iova, len, want);
      // Model: every page mapped, permitted, and targets contiguous.
      bool ok = true;
      for (int p = first; p < first + n && ok; ++p) {
        ok = model[p].mapped && permits(model[p].perm, want) &&
             model[p].target == model[first].target + (p - first) * 0x1000ull;
      }
      ASSERT_EQ(r.has_value(), ok) << "i=" << i;
      if (ok) {
        EXPECT_EQ(r->target, model[first].target);
      }
    }
  }
}

}  // namespace
}  // namespace vdma::memory

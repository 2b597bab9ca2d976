#include "vdma/memory/range_allocator.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <thread>
#include <vector>

#include "vdma/memory/errors.h"

namespace vdma::memory {
namespace {

TEST(RangeAllocatorTest, AllocatesAlignedAndFrees) {
  RangeAllocator a(0x1000, 0x10000);
  auto x = a.allocate(0x100, 0x1000);
  ASSERT_TRUE(x);
  EXPECT_EQ(*x % 0x1000, 0u);
  auto y = a.allocate(0x10, 0x10);
  ASSERT_TRUE(y);
  EXPECT_NE(*x, *y);
  EXPECT_EQ(a.bytes_free(), 0x10000u - 0x110u);
  EXPECT_TRUE(a.free(*x, 0x100));
  EXPECT_TRUE(a.free(*y, 0x10));
  EXPECT_EQ(a.bytes_free(), 0x10000u);
  EXPECT_EQ(a.live_allocations(), 0u);
  // Coalesced back: the whole range is one allocation again.
  EXPECT_EQ(*a.allocate(0x10000, 1), 0x1000u);
}

TEST(RangeAllocatorTest, BadRequestsAndFrees) {
  RangeAllocator a(0, 0x1000);
  EXPECT_EQ(a.allocate(0, 1).error(), Errc::kZeroLength);
  EXPECT_EQ(a.allocate(1, 3).error(), Errc::kInvalidArgument);
  EXPECT_EQ(a.allocate(1, 0).error(), Errc::kInvalidArgument);
  EXPECT_EQ(a.allocate(0x1001, 1).error(), Errc::kNoSpace);
  auto x = a.allocate(0x100, 1);
  ASSERT_TRUE(x);
  EXPECT_EQ(a.free(*x, 0x80).error(), Errc::kBadFree);       // wrong size
  EXPECT_EQ(a.free(*x + 1, 0x100).error(), Errc::kBadFree);  // not a start
  EXPECT_TRUE(a.free(*x, 0x100));
  EXPECT_EQ(a.free(*x, 0x100).error(), Errc::kBadFree);  // double free
  EXPECT_EQ(a.bytes_free(), 0x1000u);
}

TEST(RangeAllocatorTest, HugeAlignmentDoesNotWrap) {
  RangeAllocator a(UINT64_MAX - 0x1ffff, 0x10000);
  EXPECT_EQ(a.allocate(1, 1ull << 63).error(), Errc::kNoSpace);
  EXPECT_TRUE(a.allocate(0x10000, 1));
}

// Property: random allocate/free against a model; live ranges never overlap, stay in
// bounds, honour alignment, and accounting matches.
TEST(RangeAllocatorTest, PropertyAgainstModel) {
  constexpr std::uint64_t kBase = 0x40000;
  constexpr std::uint64_t kSize = 0x20000;
  RangeAllocator a(kBase, kSize);
  std::map<std::uint64_t, std::uint64_t> live;
  std::mt19937_64 rng(7);
  std::uint64_t used = 0;
  for (int i = 0; i < 20000; ++i) {
    if (live.empty() || rng() % 3 != 0) {
      std::uint64_t len = 1 + rng() % 0x2000;
      std::uint64_t align = std::uint64_t{1} << (rng() % 13);
      auto r = a.allocate(len, align);
      if (!r) {
        EXPECT_EQ(r.error(), Errc::kNoSpace);
        continue;
      }
      EXPECT_EQ(*r % align, 0u);
      EXPECT_GE(*r, kBase);
      EXPECT_LE(*r + len, kBase + kSize);
      auto next = live.lower_bound(*r);
      if (next != live.end()) {
        EXPECT_LE(*r + len, next->first);
      }
      if (next != live.begin()) {
        EXPECT_LE(std::prev(next)->first + std::prev(next)->second, *r);
      }
      live.emplace(*r, len);
      used += len;
    } else {
      auto it = live.begin();
      std::advance(it, rng() % live.size());
      ASSERT_TRUE(a.free(it->first, it->second));
      used -= it->second;
      live.erase(it);
    }
    ASSERT_EQ(a.bytes_free(), kSize - used);
  }
  for (auto [s, l] : live) ASSERT_TRUE(a.free(s, l));
  EXPECT_EQ(a.bytes_free(), kSize);
  EXPECT_EQ(*a.allocate(kSize, 1), kBase);
}

TEST(RangeAllocatorConcurrencyTest, TwoThreadsNeverShareARange) {
  RangeAllocator a(0, 1 << 20);
  std::vector<std::vector<std::pair<std::uint64_t, std::uint64_t>>> got(2);
  auto worker = [&](int t) {
    std::mt19937_64 rng(t);
    std::vector<std::pair<std::uint64_t, std::uint64_t>> mine;
    for (int i = 0; i < 4000; ++i) {
      std::uint64_t len = 1 + rng() % 512;
      if (auto r = a.allocate(len, 64)) mine.emplace_back(*r, len);
      if (mine.size() > 64) {
        ASSERT_TRUE(a.free(mine.front().first, mine.front().second));
        mine.erase(mine.begin());
      }
    }
    got[t] = mine;
  };
  std::thread t0(worker, 0), t1(worker, 1);
  t0.join();
  t1.join();
  std::map<std::uint64_t, std::uint64_t> all;
  for (auto& v : got)
    for (auto [s, l] : v) ASSERT_TRUE(all.emplace(s, l).second);
  std::uint64_t prev_end = 0;
  for (auto [s, l] : all) {
    EXPECT_GE(s, prev_end);
    prev_end = s + l;
  }
  EXPECT_EQ(a.live_allocations(), all.size());
}

}  // namespace
}  // namespace vdma::memory

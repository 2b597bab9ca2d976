#include "vdma/dma/bounce_pool.h"

#include <gtest/gtest.h>

#include <bit>
#include <thread>
#include <vector>

#include "vdma/dma/errors.h"

namespace vdma::dma {
namespace {

constexpr std::uint64_t kMiB = 1 << 20;

std::unique_ptr<BouncePool> make_pool(std::uint64_t bytes, std::uint32_t areas) {
  auto p = BouncePool::Create(bytes, areas);
  if (!p) {
    ADD_FAILURE() << p.error().message();
    return nullptr;
  }
  return std::move(*p);
}

TEST(BouncePoolTest, CreateValidatesSizeAndAreas) {
  EXPECT_EQ(BouncePool::Create(0, 1).error(), Errc::kInvalidOption);
  EXPECT_EQ(BouncePool::Create(kMiB + 2048, 1).error(), Errc::kInvalidOption);  // not 64 KiB
  EXPECT_EQ(BouncePool::Create(kMiB, 3).error(), Errc::kInvalidOption);         // 512 % (3 * 32)
  EXPECT_EQ(BouncePool::Create(64 * kMiB, 128).error(), Errc::kInvalidOption);  // > 64 areas
  // Each area needs room for a maximal run (128 slots = 256 KiB).
  EXPECT_EQ(BouncePool::Create(256 << 10, 2).error(), Errc::kInvalidOption);
  EXPECT_EQ(BouncePool::Create(128 << 10, 1).error(), Errc::kInvalidOption);
  EXPECT_TRUE(BouncePool::Create(256 << 10, 1));
  EXPECT_TRUE(BouncePool::Create(kMiB, 4));
}

TEST(BouncePoolTest, GeometryAndDefaultAreas) {
  auto p = make_pool(kMiB, 1);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->total_slots(), kMiB / kSlotSize);
  EXPECT_EQ(p->area_count(), 1u);
  BouncePoolStats s = p->stats();
  EXPECT_EQ(s.total_slots, 512u);
  EXPECT_EQ(s.slots_in_use, 0u);
  EXPECT_EQ(s.areas, 1u);

  // areas = 0: one per CPU, rounded to a power of two, shrunk until each area is valid.
  auto d = make_pool(4 * kMiB, 0);
  ASSERT_TRUE(d);
  const std::uint32_t n = d->area_count();
  EXPECT_GE(n, 1u);
  EXPECT_LE(n, 64u);
  EXPECT_EQ(n & (n - 1), 0u);
  EXPECT_GE(d->total_slots() / n, kMaxSlotsPerRun);
  EXPECT_LE(n, std::max(1u, std::bit_ceil(std::thread::hardware_concurrency())));

  // A small pool gets fewer areas, never an invalid geometry.
  auto small = make_pool(256 << 10, 0);
  ASSERT_TRUE(small);
  EXPECT_EQ(small->area_count(), 1u);
}

TEST(BouncePoolTest, BadRequestsAreRejected) {
  auto p = make_pool(kMiB, 1);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->allocate({.slots = 0}).error(), Errc::kInvalidOption);
  EXPECT_EQ(p->allocate({.slots = kMaxSlotsPerRun + 1}).error(), Errc::kInvalidOption);
  EXPECT_EQ(p->allocate({.slots = 1, .align = 0}).error(), Errc::kInvalidOption);
  EXPECT_EQ(p->allocate({.slots = 1, .align = 3}).error(), Errc::kInvalidOption);
  EXPECT_EQ(p->allocate({.slots = 1, .align = 64}).error(), Errc::kInvalidOption);
  EXPECT_EQ(p->allocate({.slots = 1, .align = 4, .residue = 4}).error(), Errc::kInvalidOption);
  BouncePoolStats s = p->stats();
  EXPECT_EQ(s.slots_in_use, 0u);
  EXPECT_EQ(s.maps, 0u);
  // Bad requests are not "pool full" failures.
  EXPECT_EQ(s.failed_maps, 0u);
}

TEST(BouncePoolTest, LowestFreeRunFirst) {
  auto p = make_pool(kMiB, 1);
  ASSERT_TRUE(p);
  std::vector<SlotRun> runs;
  for (std::uint32_t i = 0; i < 4; ++i) {
    auto r = p->allocate({.slots = 1});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->index, i);
    EXPECT_EQ(r->count, 1u);
    runs.push_back(*r);
  }
  p->free(runs[1]);
  auto again = p->allocate({.slots = 1});
  ASSERT_TRUE(again);
  EXPECT_EQ(again->index, 1u);
  // A 2-slot run does not fit in the 1-slot hole at 1: it goes to the end.
  p->free(*again);
  auto two = p->allocate({.slots = 2});
  ASSERT_TRUE(two);
  EXPECT_EQ(two->index, 4u);
  p->free(runs[2]);  // now 1..2 is a 2-slot hole
  auto two_b = p->allocate({.slots = 2});
  ASSERT_TRUE(two_b);
  EXPECT_EQ(two_b->index, 1u);
}

TEST(BouncePoolTest, AlignmentAndResidue) {
  auto p = make_pool(kMiB, 1);
  ASSERT_TRUE(p);
  auto first = p->allocate({.slots = 1});
  ASSERT_TRUE(first);
  EXPECT_EQ(first->index, 0u);
  auto a = p->allocate({.slots = 2, .align = 2, .residue = 0});
  ASSERT_TRUE(a);
  EXPECT_EQ(a->index, 2u);
  auto b = p->allocate({.slots = 1, .align = 8, .residue = 3});
  ASSERT_TRUE(b);
  EXPECT_EQ(b->index, 11u);  // 3 is taken by a (2..3)
  auto c = p->allocate({.slots = 3, .align = 32, .residue = 31});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->index, 31u);
  EXPECT_EQ(c->count, 3u);
  auto d = p->allocate({.slots = 1, .align = 4, .residue = 1});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->index, 1u);
  for (std::uint32_t i = 0; i < 50; ++i) {
    auto r = p->allocate({.slots = 5, .align = 16, .residue = 7});
    if (!r) {
      EXPECT_EQ(r.error(), Errc::kPoolFull);
      break;
    }
    EXPECT_EQ(r->index % 16, 7u);
  }
}

TEST(BouncePoolTest, FullIsAnErrorThenRecovers) {
  auto p = make_pool(kMiB, 1);
  ASSERT_TRUE(p);
  std::vector<SlotRun> runs;
  for (int i = 0; i < 4; ++i) {
    auto r = p->allocate({.slots = kMaxSlotsPerRun});
    ASSERT_TRUE(r);
    runs.push_back(*r);
  }
  auto full = p->allocate({.slots = 1});
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error(), Errc::kPoolFull);
  EXPECT_TRUE(is_retryable(full.error()));
  BouncePoolStats s = p->stats();
  EXPECT_EQ(s.slots_in_use, 512u);
  EXPECT_EQ(s.failed_maps, 1u);
  EXPECT_EQ(s.maps, 4u);
  EXPECT_EQ(s.high_water_slots, 512u);

  p->free(runs[2]);
  auto r = p->allocate({.slots = 100});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->index, 256u);
  EXPECT_EQ(p->allocate({.slots = 29}).error(), Errc::kPoolFull);
  auto rest = p->allocate({.slots = 28});
  ASSERT_TRUE(rest);
  EXPECT_EQ(rest->index, 356u);
  s = p->stats();
  EXPECT_EQ(s.failed_maps, 2u);
  EXPECT_EQ(s.slots_in_use, 512u);
}

TEST(BouncePoolTest, FragmentationCanFailWithFreeSlots) {
  auto p = make_pool(256 << 10, 1);  // 128 slots
  ASSERT_TRUE(p);
  std::vector<SlotRun> runs;
  for (int i = 0; i < 128; ++i) {
    auto r = p->allocate({.slots = 1});
    ASSERT_TRUE(r);
    runs.push_back(*r);
  }
  for (int i = 0; i < 128; i += 2) p->free(runs[i]);
  EXPECT_EQ(p->stats().slots_in_use, 64u);
  EXPECT_EQ(p->allocate({.slots = 2}).error(), Errc::kPoolFull);
  p->free(runs[5]);  // 4, 5, 6 free now
  auto r = p->allocate({.slots = 3});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->index, 4u);
}

TEST(BouncePoolTest, StatisticsTrackUseAndHighWater) {
  auto p = make_pool(kMiB, 1);
  ASSERT_TRUE(p);
  auto a = p->allocate({.slots = 10});
  auto b = p->allocate({.slots = 20});
  ASSERT_TRUE(a && b);
  EXPECT_EQ(p->stats().slots_in_use, 30u);
  p->free(*a);
  auto c = p->allocate({.slots = 5});
  ASSERT_TRUE(c);
  BouncePoolStats s = p->stats();
  EXPECT_EQ(s.slots_in_use, 25u);
  EXPECT_EQ(s.high_water_slots, 30u);
  EXPECT_EQ(s.maps, 3u);
  EXPECT_EQ(s.failed_maps, 0u);
  p->add_bytes_bounced(b->index, 1000);
  p->add_bytes_bounced(c->index, 24);
  EXPECT_EQ(p->stats().bytes_bounced, 1024u);
  p->free(*b);
  p->free(*c);
  s = p->stats();
  EXPECT_EQ(s.slots_in_use, 0u);
  EXPECT_EQ(s.high_water_slots, 30u);
}

TEST(BouncePoolTest, RunsNeverStraddleAreasAndEveryAreaIsUsed) {
  auto p = make_pool(kMiB, 4);  // 4 areas of 128 slots
  ASSERT_TRUE(p);
  ASSERT_EQ(p->area_count(), 4u);
  std::vector<SlotRun> runs;
  std::vector<bool> area_used(4, false);
  for (int i = 0; i < 4; ++i) {
    auto r = p->allocate({.slots = kMaxSlotsPerRun});
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->index % 128, 0u);
    area_used[r->index / 128] = true;
    runs.push_back(*r);
  }
  for (bool u : area_used) EXPECT_TRUE(u);
  EXPECT_EQ(p->allocate({.slots = 1}).error(), Errc::kPoolFull);
  for (const SlotRun& r : runs) p->free(r);

  // Runs of 100 slots: one per area, never crossing the 128-slot boundaries.
  runs.clear();
  for (int i = 0; i < 4; ++i) {
    auto r = p->allocate({.slots = 100});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->index / 128, (r->index + r->count - 1) / 128);
    runs.push_back(*r);
  }
  // 4 * 28 slots are free, but in four separate areas.
  EXPECT_EQ(p->allocate({.slots = 29}).error(), Errc::kPoolFull);
  EXPECT_EQ(p->stats().slots_in_use, 400u);
  for (const SlotRun& r : runs) p->free(r);
  EXPECT_EQ(p->stats().slots_in_use, 0u);
}

TEST(BouncePoolTest, HighWaterIsPerAreaSum) {
  auto p = make_pool(kMiB, 2);
  ASSERT_TRUE(p);
  std::vector<SlotRun> runs;
  for (int i = 0; i < 4; ++i) {
    auto r = p->allocate({.slots = 128});
    ASSERT_TRUE(r);
    runs.push_back(*r);
  }
  for (const SlotRun& r : runs) p->free(r);
  BouncePoolStats s = p->stats();
  EXPECT_EQ(s.areas, 2u);
  EXPECT_EQ(s.high_water_slots, 512u);
  EXPECT_EQ(s.slots_in_use, 0u);
}

}  // namespace
}  // namespace vdma::dma

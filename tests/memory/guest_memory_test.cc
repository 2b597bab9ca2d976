#include "vdma/memory/guest_memory.h"

#include <gtest/gtest.h>

#include <random>

#include "vdma/memory/errors.h"

namespace vdma::memory {
namespace {

MemfdRegion make(std::uint64_t size, RegionKind kind = RegionKind::kShared) {
  auto r = MemfdRegion::Create("gm-test", size, kind);
  EXPECT_TRUE(r) << r.error().message();
  return std::move(*r);
}

class GuestMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(mem_.add(Gpa{0x10000}, make(0x4000)));
    // Adjacent in Gpa space, separate host mapping.
    ASSERT_TRUE(mem_.add(Gpa{0x14000}, make(0x2000, RegionKind::kPrivate)));
    ASSERT_TRUE(mem_.add(Gpa{0x100000}, make(0x1000)));
  }
  GuestMemory mem_;
};

TEST_F(GuestMemoryTest, TranslatesInsideRegions) {
  auto s = mem_.translate(Gpa{0x10010}, 0x100);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->size(), 0x100u);
  EXPECT_EQ(s->data(), mem_.regions()[0].host + 0x10);
  // The last byte of a region.
  auto last = mem_.translate(Gpa{0x13fff}, 1);
  ASSERT_TRUE(last);
  EXPECT_EQ(last->data(), mem_.regions()[0].host + 0x3fff);
  EXPECT_TRUE(mem_.translate(Gpa{0x100000}, 0x1000));
}

TEST_F(GuestMemoryTest, RegionsAreSortedByGpa) {
  ASSERT_EQ(mem_.regions().size(), 3u);
  EXPECT_EQ(mem_.regions()[0].gpa, Gpa{0x10000});
  EXPECT_EQ(mem_.regions()[1].gpa, Gpa{0x14000});
  EXPECT_FALSE(mem_.regions()[1].shared());
  EXPECT_EQ(mem_.regions()[2].end(), Gpa{0x101000});
}

TEST_F(GuestMemoryTest, RejectsBadRanges) {
  EXPECT_EQ(mem_.translate(Gpa{0x10000}, 0).error(), Errc::kZeroLength);
  EXPECT_EQ(mem_.translate(Gpa{0xffff}, 1).error(), Errc::kOutOfRange);
  EXPECT_EQ(mem_.translate(Gpa{0x16000}, 1).error(), Errc::kOutOfRange);
  EXPECT_EQ(mem_.translate(Gpa{0}, 1).error(), Errc::kOutOfRange);
  EXPECT_EQ(mem_.translate(Gpa{UINT64_MAX - 10}, 10).error(), Errc::kOutOfRange);
  // Ends are u64 values, so a range ending exactly at 2^64 counts as overflowing.
  EXPECT_EQ(mem_.translate(Gpa{UINT64_MAX - 10}, 11).error(), Errc::kOverflow);
  EXPECT_EQ(mem_.translate(Gpa{0x10000}, UINT64_MAX).error(), Errc::kOverflow);
  EXPECT_EQ(mem_.translate(Gpa{0x10000}, 1ull << 40).error(), Errc::kStraddlesRegion);
  EXPECT_EQ(mem_.translate(Gpa{0x100fff}, 2).error(), Errc::kStraddlesRegion);
}

TEST_F(GuestMemoryTest, AdjacentRegionsAreNotJoinedSilently) {
  // 0x13ff0..0x14010 spans two regions whose host mappings are unrelated.
  EXPECT_EQ(mem_.translate(Gpa{0x13ff0}, 0x20).error(), Errc::kStraddlesRegion);
}

TEST_F(GuestMemoryTest, OverlappingRegionsAreRefused) {
  EXPECT_EQ(mem_.add(Gpa{0x13000}, make(0x2000)).error(), Errc::kOverlap);
  EXPECT_EQ(mem_.add(Gpa{0xf000}, make(0x2000)).error(), Errc::kOverlap);
  EXPECT_EQ(mem_.add(Gpa{0x0}, make(0x200000)).error(), Errc::kOverlap);
  EXPECT_EQ(mem_.add(Gpa{UINT64_MAX - 0xfff}, make(0x2000)).error(), Errc::kOverflow);
  EXPECT_TRUE(mem_.add(Gpa{0xf000}, make(0x1000)));  // touching is fine
}

TEST_F(GuestMemoryTest, ReverseTranslation) {
  const GuestRegion& r = mem_.regions()[0];
  EXPECT_EQ(*mem_.gpa_of(r.host + 0x123, 0x10), Gpa{0x10123});
  EXPECT_EQ(mem_.gpa_of(r.host + 0x3ff0, 0x20).error(), Errc::kStraddlesRegion);
  int local = 0;
  EXPECT_EQ(mem_.gpa_of(&local, sizeof local).error(), Errc::kOutOfRange);
  EXPECT_EQ(mem_.gpa_of(r.host, 0).error(), Errc::kZeroLength);
  EXPECT_EQ(mem_.gpa_of(reinterpret_cast<void*>(UINTPTR_MAX - 3), 8).error(), Errc::kOverflow);
  auto reg = mem_.region_of(mem_.regions()[1].host + 5, 5);
  ASSERT_TRUE(reg);
  EXPECT_FALSE((*reg)->shared());
}

// Property: random (gpa, len) probes agree with a plain model of the layout.
TEST_F(GuestMemoryTest, PropertyTranslateMatchesModel) {
  std::mt19937_64 rng(42);
  const auto regions = mem_.regions();
  for (int i = 0; i < 20000; ++i) {
    std::uint64_t gpa = rng() % 0x110000;
    std::uint64_t len = 1 + rng() % 0x5000;
    const GuestRegion* hit = nullptr;
    for (const auto& r : regions)
      if (gpa >= r.gpa.value() && gpa < r.end().value()) hit = &r;
    auto t = mem_.translate(Gpa{gpa}, len);
    if (hit == nullptr) {
      EXPECT_EQ(t.error(), Errc::kOutOfRange) << gpa;
    } else if (gpa + len > hit->end().value()) {
      EXPECT_EQ(t.error(), Errc::kStraddlesRegion) << gpa;
    } else {
      ASSERT_TRUE(t) << gpa;
      EXPECT_EQ(t->data(), hit->host + (gpa - hit->gpa.value()));
      EXPECT_EQ(*mem_.gpa_of(t->data(), len), Gpa{gpa});
    }
  }
}

}  // namespace
}  // namespace vdma::memory

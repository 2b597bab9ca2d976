// A hostile device against the packed driver queue: bogus used descriptors written
// straight into the ring. One named test per attack.
#include <gtest/gtest.h>

#include "packed_test_util.h"

namespace vdma::virtq {
namespace {

using namespace packed_test;  // NOLINT: test scaffolding

class HostileDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override { setup(UsedLenPolicy::kBreak); }
  void setup(UsedLenPolicy policy, bool indirect = false) {
    lb_ = make({.platform = dma::kSecureGuest,
                .queue_size = 6,
                .indirect = indirect,
                .max_indirect = 4,
                .used_len_policy = policy});
    ASSERT_TRUE(lb_);
    ring_ = raw_ring(*lb_);
    buf_ = *lb_->guest().alloc_ram(4096);
  }
  // Three published buffers (ids 0, 1, 2; 2, 1 and 1 ring descriptors) and a staged
  // one (id 3).
  void add_four() {
    std::array<Segment, 2> two{{{buf_, 100}, {buf_ + 100, 100}}};
    std::array<Segment, 1> one{{{buf_ + 200, 300}}};
    ASSERT_TRUE(lb_->driver().add_buffers(std::span(two).first(1), std::span(two).last(1), 10));
    ASSERT_TRUE(lb_->driver().add_buffers({}, one, 11));
    ASSERT_TRUE(lb_->driver().add_buffers(one, {}, 12));
    lb_->driver().kick_prepare();
    ASSERT_TRUE(lb_->driver().add_buffers(one, {}, 13));
    EXPECT_GT(slots_in_use(*lb_), 0u);
  }
  void write_used(std::uint32_t pos, std::uint16_t id, std::uint32_t len, bool wrap = true,
                  bool write = true) {
    ring_.desc[pos].id = id;
    ring_.desc[pos].len = len;
    ring_.desc[pos].flags =
        static_cast<std::uint16_t>((wrap ? kUsedBoth : 0) | (write ? kDescFWrite : 0));
  }
  void expect_broken(Errc why) {
    auto u = lb_->driver().get_used();
    ASSERT_FALSE(u);
    EXPECT_EQ(u.error(), Errc::kBroken);
    EXPECT_TRUE(lb_->driver().broken());
    EXPECT_NE(lb_->driver().broken_reason().find(describe(why)), std::string::npos)
        << lb_->driver().broken_reason();
    // Every later call says kBroken; nothing is published any more.
    EXPECT_EQ(lb_->driver().get_used().error(), Errc::kBroken);
    std::array<Segment, 1> one{{{buf_, 8}}};
    EXPECT_EQ(lb_->driver().add_buffers(one, {}, 99).error(), Errc::kBroken);
    EXPECT_FALSE(lb_->driver().kick_prepare());
    // Everything is still released.
    auto tokens = lb_->driver().detach_unused();
    std::sort(tokens.begin(), tokens.end());
    EXPECT_EQ(tokens, (std::vector<std::uint64_t>{10, 11, 12, 13}));
    EXPECT_EQ(slots_in_use(*lb_), 0u);
    EXPECT_EQ(lb_->driver().num_free(), 6u);
  }
  std::unique_ptr<LB> lb_;
  RawRing ring_;
  std::byte* buf_ = nullptr;
};

TEST_F(HostileDeviceTest, UsedIdOutOfRange) {
  add_four();
  write_used(0, 6, 0);
  expect_broken(Errc::kUsedIdOutOfRange);
}

TEST_F(HostileDeviceTest, UsedIdOutOfRangeHuge) {
  add_four();
  write_used(0, 0xffff, 0);
  expect_broken(Errc::kUsedIdOutOfRange);
}

TEST_F(HostileDeviceTest, UsedIdNeverAdded) {
  add_four();
  write_used(0, 5, 0);
  expect_broken(Errc::kUsedIdNotOutstanding);
}

TEST_F(HostileDeviceTest, UsedIdStagedButNotPublished) {
  add_four();
  write_used(0, 3, 0);
  expect_broken(Errc::kUsedIdNotOutstanding);
}

TEST_F(HostileDeviceTest, RepeatedCompletion) {
  add_four();
  write_used(0, 1, 300);  // legitimate, out of order: id 1 took one descriptor
  auto u = lb_->driver().get_used();
  ASSERT_TRUE(u && u->has_value());
  EXPECT_EQ((*u)->token, 11u);
  EXPECT_EQ((*u)->len, 300u);
  write_used(1, 1, 0);  // the same id again
  auto again = lb_->driver().get_used();
  ASSERT_FALSE(again);
  EXPECT_NE(lb_->driver().broken_reason().find(describe(Errc::kUsedIdNotOutstanding)),
            std::string::npos);
  auto tokens = lb_->driver().detach_unused();
  std::sort(tokens.begin(), tokens.end());
  EXPECT_EQ(tokens, (std::vector<std::uint64_t>{10, 12, 13}));
  EXPECT_EQ(slots_in_use(*lb_), 0u);
}

TEST_F(HostileDeviceTest, UsedLenTooLargeBreaks) {
  add_four();
  write_used(0, 0, 101);  // id 0 mapped 100 writable bytes
  expect_broken(Errc::kUsedLenTooLarge);
}

TEST_F(HostileDeviceTest, UsedLenTooLargeClamps) {
  setup(UsedLenPolicy::kClamp);
  add_four();
  write_used(0, 0, 0xffffffff);
  auto u = lb_->driver().get_used();
  ASSERT_TRUE(u && u->has_value());
  EXPECT_EQ((*u)->len, 100u);
  EXPECT_EQ(lb_->driver().stats().clamped, 1u);
  EXPECT_FALSE(lb_->driver().broken());
  // Id 0 took two descriptors: the next used descriptor is at 2.
  write_used(2, 2, 5);  // readable-only buffer: any len is too large
  u = lb_->driver().get_used();
  ASSERT_TRUE(u && u->has_value());
  EXPECT_EQ((*u)->token, 12u);
  EXPECT_EQ((*u)->len, 0u);
  EXPECT_EQ(lb_->driver().stats().clamped, 2u);
  auto tokens = lb_->driver().detach_unused();
  EXPECT_EQ(tokens.size(), 2u);
  EXPECT_EQ(slots_in_use(*lb_), 0u);
}

TEST_F(HostileDeviceTest, LenWithoutWriteFlagIsIgnored) {
  add_four();
  write_used(0, 1, 0xffffffff, true, /*write=*/false);  // 2.8.4: len reserved
  auto u = lb_->driver().get_used();
  ASSERT_TRUE(u && u->has_value());
  EXPECT_EQ((*u)->len, 0u);
  EXPECT_FALSE(lb_->driver().broken());
}

TEST_F(HostileDeviceTest, WrongWrapOrHalfFlagsAreNotUsed) {
  add_four();
  write_used(0, 0, 0, /*wrap=*/false);  // a used descriptor of the previous lap
  EXPECT_FALSE(lb_->driver().get_used()->has_value());
  ring_.desc[0].flags = kPackedDescFUsed;  // USED without AVAIL
  EXPECT_FALSE(lb_->driver().get_used()->has_value());
  EXPECT_FALSE(lb_->driver().broken());
}

TEST_F(HostileDeviceTest, IndirectBufferReleasedOnBreak) {
  setup(UsedLenPolicy::kBreak, /*indirect=*/true);
  std::vector<Segment> segs(3, Segment{buf_, 64});
  ASSERT_TRUE(lb_->driver().add_buffers(segs, {}, 10));  // indirect: table + 3 segments
  lb_->driver().kick_prepare();
  EXPECT_TRUE(ring_.desc[0].flags & kDescFIndirect);
  write_used(0, 4, 0);
  ASSERT_FALSE(lb_->driver().get_used());
  EXPECT_EQ(lb_->driver().detach_unused(), std::vector<std::uint64_t>{10});
  EXPECT_EQ(slots_in_use(*lb_), 0u);
}

// The destructor of a broken queue releases every mapping too.
TEST(HostileDeviceDestructorTest, BrokenQueueDestructorReleasesMappings) {
  auto guest = *dma::Guest::Create(
      {.platform = dma::kSecureGuest, .ram_bytes = 1 << 20, .bounce_bytes = 1 << 20});
  FeatureSet f{kVirtioFVersion1, kVirtioFAccessPlatform, kVirtioFRingPacked,
               kVirtioFRingIndirectDesc};
  auto ops = *guest->make_ops(f);
  auto& bounce = static_cast<dma::BounceOps&>(*ops);
  DriverQueueConfig cfg{.size = 4, .features = RingFeatures::From(f)};
  using Q = PackedDriverQueue<dma::DmaOps>;
  std::byte* arena = *guest->alloc_ram(Q::indirect_arena_bytes(cfg));
  std::byte* buf = *guest->alloc_ram(4096);
  {
    auto q = *Q::Create(*ops, cfg, {arena, Q::indirect_arena_bytes(cfg)});
    std::vector<Segment> segs(3, Segment{buf, 64});
    ASSERT_TRUE(q.add_buffers(segs, {}, 1));
    ASSERT_TRUE(q.add_buffers(std::span(segs).first(1), {}, 2));
    q.kick_prepare();
    ASSERT_TRUE(q.add_buffers(std::span(segs).first(1), {}, 3));  // staged
    GuestMemoryTranslator tr(guest->memory());
    auto* desc = reinterpret_cast<PackedDesc*>(
        *tr.translate(q.addresses().desc, 64, memory::Access::kReadWrite));
    desc[0].id = 3;
    desc[0].flags = kUsedBoth;
    ASSERT_FALSE(q.get_used());
    EXPECT_TRUE(q.broken());
    EXPECT_GT(bounce.stats().slots_in_use, 0u);
  }
  EXPECT_EQ(bounce.stats().slots_in_use, 0u);
}

// ---------------------------------------------------------------------------------------
// Hostile driver: available descriptors written straight into the ring.

}  // namespace
}  // namespace vdma::virtq

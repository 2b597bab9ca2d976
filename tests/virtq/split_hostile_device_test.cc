// A hostile device against the split driver queue, in the secure-guest profile (bounce
// buffering): one named test per attack. The device here writes raw used entries; the
// driver must mark the queue broken with a reason, refuse further work, and still release
// every mapping (bounce slots back to zero), never touching memory it did not map.
#include <gtest/gtest.h>

#include <array>
#include <cstring>

#include "vdma/dma/bounce_ops.h"
#include "vdma/testing/loopback.h"
#include "vdma/testing/patterns.h"

namespace vdma::virtq {
namespace {

constexpr std::uint32_t kSize = 16;

class HostileDevice {
 public:
  explicit HostileDevice(UsedLenPolicy policy = UsedLenPolicy::kBreak) {
    auto lb = testing::Loopback<testing::SplitRing>::Create(
        {.platform = dma::kSecureGuest, .queue_size = kSize, .used_len_policy = policy});
    EXPECT_TRUE(lb) << lb.error().message();
    lb_ = std::move(*lb);
    auto used = lb_->guest().memory().translate(Gpa{lb_->driver().addresses().device.value()},
                                                SplitAreaSizes::used(kSize));
    used_ = used->data();
    buf_ = *lb_->guest().alloc_ram(4096);
  }
  SplitDriverQueue<dma::DmaOps>& q() { return lb_->driver(); }
  dma::BounceOps& bounce() { return static_cast<dma::BounceOps&>(lb_->ops()); }

  // One buffer: 100 readable bytes, 200 writable.
  void add(std::uint64_t token, bool kick = true) {
    std::array<Segment, 1> r{{{buf_, 100}}};
    std::array<Segment, 1> w{{{buf_ + 1024, 200}}};
    ASSERT_TRUE(q().add_buffers(r, w, token));
    if (kick) q().kick_prepare();
  }
  // Writes a used entry at the current device index and publishes it.
  void complete(std::uint32_t id, std::uint32_t len) {
    auto* hdr = reinterpret_cast<SplitUsedHeader*>(used_);
    auto* ring = reinterpret_cast<SplitUsedElem*>(used_ + 4);
    ring[hdr->idx % kSize] = {id, len};
    hdr->idx = static_cast<std::uint16_t>(hdr->idx + 1);
  }
  void set_used_idx(std::uint16_t idx) { reinterpret_cast<SplitUsedHeader*>(used_)->idx = idx; }

  void expect_broken(Errc e) {
    auto r = q().get_used();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), Errc::kBroken);
    EXPECT_TRUE(q().broken());
    EXPECT_NE(q().broken_reason().find(describe(e)), std::string::npos) << q().broken_reason();
    // Nothing more is accepted, and everything is still released.
    std::array<Segment, 1> r1{{{buf_, 10}}};
    EXPECT_EQ(q().add_buffers(r1, {}, 99).error(), Errc::kBroken);
    EXPECT_EQ(q().get_used().error(), Errc::kBroken);
    EXPECT_GT(bounce().stats().slots_in_use, 0u);
    q().detach_unused();
    EXPECT_EQ(bounce().stats().slots_in_use, 0u);
  }

  std::unique_ptr<testing::Loopback<testing::SplitRing>> lb_;
  std::byte* used_ = nullptr;
  std::byte* buf_ = nullptr;
};

TEST(SplitHostileDeviceTest, UsedIdOutOfRange) {
  HostileDevice d;
  d.add(1);
  d.complete(kSize + 7, 10);
  d.expect_broken(Errc::kUsedIdOutOfRange);
}

TEST(SplitHostileDeviceTest, UsedIdIsNotAHead) {
  HostileDevice d;
  d.add(1);  // descriptors 0 (head) and 1
  d.complete(1, 10);
  d.expect_broken(Errc::kUsedIdNotOutstanding);
}

TEST(SplitHostileDeviceTest, RepeatedCompletion) {
  HostileDevice d;
  d.add(1);
  d.add(2);
  d.complete(0, 10);
  auto u = d.q().get_used();
  ASSERT_TRUE(u && u->has_value());
  EXPECT_EQ((*u)->token, 1u);
  d.complete(0, 10);  // again
  d.expect_broken(Errc::kUsedIdNotOutstanding);
}

// The device guesses the head of a buffer the driver staged but has not published.
TEST(SplitHostileDeviceTest, CompletionOfABufferNotYetPublished) {
  HostileDevice d;
  d.add(1, /*kick=*/true);
  d.add(2, /*kick=*/false);  // descriptors 2,3: not visible to the device yet
  d.complete(2, 0);
  d.expect_broken(Errc::kUsedIdNotOutstanding);
}

TEST(SplitHostileDeviceTest, WrittenLengthLargerThanTheBuffer) {
  HostileDevice d;
  d.add(1);
  d.complete(0, 201);
  d.expect_broken(Errc::kUsedLenTooLarge);
}

TEST(SplitHostileDeviceTest, WrittenLengthClampedWhenAskedTo) {
  HostileDevice d(UsedLenPolicy::kClamp);
  d.add(1);
  d.complete(0, 0xffffffff);
  auto u = d.q().get_used();
  ASSERT_TRUE(u && u->has_value());
  EXPECT_EQ((*u)->len, 200u);  // what was mapped writable
  EXPECT_EQ(d.q().stats().clamped, 1u);
  EXPECT_FALSE(d.q().broken());
  EXPECT_EQ(d.bounce().stats().slots_in_use, 0u);
}

TEST(SplitHostileDeviceTest, UsedIndexRacingAhead) {
  HostileDevice d;
  d.add(1);
  d.add(2);
  d.set_used_idx(3);  // three completions with two outstanding
  d.expect_broken(Errc::kUsedIdxJump);
}

TEST(SplitHostileDeviceTest, UsedIndexWrappedBackwards) {
  HostileDevice d;
  d.add(1);
  d.set_used_idx(0xffff);
  d.expect_broken(Errc::kUsedIdxJump);
}

// After completion the bounce slots are released; a device still writing there cannot
// reach the driver's buffer, and the driver's buffer holds what was bounced back.
TEST(SplitHostileDeviceTest, WritesIntoBounceSlotsAfterCompletionDoNotReachTheDriver) {
  HostileDevice d;
  std::byte* in = d.buf_ + 1024;
  std::memset(in, 0, 200);
  d.add(1);
  // The device writes 50 bytes into the writable slot, then completes.
  const dma::BounceOps& b = d.bounce();
  Chain c;
  ASSERT_TRUE(*d.lb_->device().pop(c));
  testing::fill_pattern({c.writable[0].host, 50}, 3);
  ASSERT_TRUE(d.lb_->device().push_used(c.head, 50));
  d.lb_->device().publish_used();
  auto u = d.q().get_used();
  ASSERT_TRUE(u && u->has_value());
  EXPECT_EQ(b.stats().slots_in_use, 0u);
  std::vector<std::byte> snapshot(in, in + 200);
  // Late writes into the (now free) slot.
  std::memset(c.writable[0].host, 0x5a, 200);
  EXPECT_EQ(std::memcmp(snapshot.data(), in, 200), 0);
  EXPECT_EQ(testing::first_mismatch({in, 50}, 3), -1);
  // CVE-2022-0854: the 150 bytes the device did not write are the driver's own (zeros),
  // not stale pool bytes.
  for (int i = 50; i < 200; ++i) ASSERT_EQ(in[i], std::byte{0}) << i;
}

}  // namespace
}  // namespace vdma::virtq

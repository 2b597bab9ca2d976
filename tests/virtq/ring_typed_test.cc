// One typed suite over every ring layout (split, packed): the behaviour both must share.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <map>
#include <random>

#include "vdma/dma/bounce_ops.h"
#include "vdma/testing/loopback.h"
#include "vdma/testing/patterns.h"
#include "vdma/testing/ring_families.h"

namespace vdma::virtq {
namespace {

using testing::fill_pattern;
using testing::first_mismatch;
using testing::Loopback;
using testing::LoopbackConfig;

constexpr std::array<dma::Platform, 4> kPlatforms{dma::kTraditional, dma::kSecureGuest,
                                                  dma::kIommuPlatform, dma::kSecureGuestWithIommu};

template <class Ring>
class RingTypedTest : public ::testing::Test {
 protected:
  using LB = Loopback<Ring>;
  static std::unique_ptr<LB> make(const LoopbackConfig& cfg) {
    auto lb = LB::Create(cfg);
    EXPECT_TRUE(lb) << lb.error().message();
    return lb ? std::move(*lb) : nullptr;
  }
};
TYPED_TEST_SUITE(RingTypedTest, testing::RingFamilies);

// Buffers of 1-4 readable and 1-4 writable segments; the device echoes; every byte is
// checked on both sides, for every platform x indirect x event_idx.
TYPED_TEST(RingTypedTest, EchoRoundTripEveryCombination) {
  for (dma::Platform p : kPlatforms) {
    for (bool indirect : {false, true}) {
      for (bool event_idx : {false, true}) {
        SCOPED_TRACE(::testing::Message() << dma::platform_name(p) << " indirect=" << indirect
                                          << " event_idx=" << event_idx);
        auto lb = this->make({.platform = p,
                              .queue_size = 64,
                              .indirect = indirect,
                              .event_idx = event_idx,
                              .ram_bytes = 8 << 20,
                              .bounce_bytes = 4 << 20});
        ASSERT_TRUE(lb);
        std::mt19937 rng(1);
        for (int round = 0; round < 20; ++round) {
          const int nr = 1 + static_cast<int>(rng() % 4), nw = 1 + static_cast<int>(rng() % 4);
          std::vector<Segment> r, w;
          std::vector<std::byte> expect;
          for (int i = 0; i < nr; ++i) {
            std::uint32_t len = 1 + rng() % 3000;
            std::byte* b = *lb->guest().alloc_ram(len);
            fill_pattern({b, len}, round * 10 + i);
            expect.insert(expect.end(), b, b + len);
            r.push_back({b, len});
          }
          std::uint64_t wcap = 0;
          for (int i = 0; i < nw; ++i) {
            std::uint32_t len = 1 + rng() % 3000;
            std::byte* b = *lb->guest().alloc_ram(len);
            std::memset(b, 0xee, len);
            w.push_back({b, len});
            wcap += len;
          }
          ASSERT_TRUE(lb->driver().add_buffers(r, w, 1000 + round));
          lb->driver().kick_prepare();
          ASSERT_EQ(*lb->serve_all(), 1u);
          auto u = lb->driver().get_used();
          ASSERT_TRUE(u && u->has_value());
          EXPECT_EQ((*u)->token, 1000u + round);
          const std::size_t n = std::min<std::size_t>(expect.size(), wcap);
          ASSERT_EQ((*u)->len, n);
          std::size_t off = 0;
          for (const Segment& s : w) {
            std::size_t k = std::min<std::size_t>(s.len, n - std::min(n, off));
            ASSERT_EQ(std::memcmp(s.cpu, expect.data() + off, k), 0) << "round " << round;
            off += s.len;
          }
          EXPECT_EQ(lb->driver().num_free(), 64u);
        }
        if (auto* b = dynamic_cast<dma::BounceOps*>(&lb->ops())) {
          EXPECT_EQ(b->stats().slots_in_use, 0u);
        }
      }
    }
  }
}

TYPED_TEST(RingTypedTest, QueueFullIsRetryableAndNothingLeaks) {
  auto lb = this->make({.platform = dma::kSecureGuest, .queue_size = 8});
  ASSERT_TRUE(lb);
  std::byte* buf = *lb->guest().alloc_ram(64);
  std::array<Segment, 1> seg{{{buf, 64}}};
  int added = 0;
  Result<void> r = Ok();
  while ((r = lb->driver().add_buffers(seg, {}, added))) ++added;
  EXPECT_EQ(r.error(), Errc::kQueueFull);
  EXPECT_EQ(added, 8);
  lb->driver().kick_prepare();
  EXPECT_EQ(*lb->serve_all(), 8u);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(lb->driver().get_used()->has_value());
  EXPECT_FALSE(lb->driver().get_used()->has_value());
  EXPECT_TRUE(lb->driver().add_buffers(seg, {}, 99));
  auto& bounce = static_cast<dma::BounceOps&>(lb->ops());
  EXPECT_EQ(bounce.stats().slots_in_use, 1u);
}

TYPED_TEST(RingTypedTest, BadAddsAreErrorsThatMapNothing) {
  auto lb = this->make({.platform = dma::kSecureGuest, .queue_size = 8});
  ASSERT_TRUE(lb);
  auto& bounce = static_cast<dma::BounceOps&>(lb->ops());
  std::byte* buf = *lb->guest().alloc_ram(64);
  EXPECT_EQ(lb->driver().add_buffers({}, {}, 1).error(), Errc::kNoSegments);
  // A refused mapping (zero length) after a good one: the good one is undone.
  std::array<Segment, 2> segs{{{buf, 64}, {buf, 0}}};
  EXPECT_EQ(lb->driver().add_buffers(segs, {}, 1).error(), dma::Errc::kZeroLength);
  EXPECT_EQ(bounce.stats().slots_in_use, 0u);
  EXPECT_EQ(lb->driver().num_free(), 8u);
  lb->driver().kick_prepare();
  EXPECT_EQ(*lb->serve_all(), 0u);
}

TYPED_TEST(RingTypedTest, DetachUnusedReleasesEverything) {
  for (bool indirect : {false, true}) {
    auto lb = this->make({.platform = dma::kSecureGuest, .queue_size = 32, .indirect = indirect});
    ASSERT_TRUE(lb);
    std::byte* buf = *lb->guest().alloc_ram(4096);
    std::array<Segment, 2> segs{{{buf, 100}, {buf + 100, 200}}};
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(lb->driver().add_buffers(segs, segs, i));
    lb->driver().kick_prepare();
    auto& bounce = static_cast<dma::BounceOps&>(lb->ops());
    EXPECT_GT(bounce.stats().slots_in_use, 0u);
    auto tokens = lb->driver().detach_unused();
    std::sort(tokens.begin(), tokens.end());
    EXPECT_EQ(tokens, (std::vector<std::uint64_t>{0, 1, 2, 3, 4}));
    EXPECT_EQ(bounce.stats().slots_in_use, 0u);
    EXPECT_EQ(lb->driver().num_free(), 32u);
  }
}

TYPED_TEST(RingTypedTest, NotificationSuppression) {
  for (bool event_idx : {false, true}) {
    SCOPED_TRACE(event_idx);
    auto lb = this->make({.platform = dma::kTraditional, .queue_size = 16, .event_idx = event_idx});
    ASSERT_TRUE(lb);
    std::byte* buf = *lb->guest().alloc_ram(64);
    std::array<Segment, 1> seg{{{buf, 64}}};
    // Device wants kicks: the first publish asks for one.
    lb->device().set_notifications(true);
    ASSERT_TRUE(lb->driver().add_buffers(seg, {}, 1));
    EXPECT_TRUE(lb->driver().kick_prepare());
    // Device polls: no kicks wanted.
    lb->device().set_notifications(false);
    ASSERT_TRUE(lb->driver().add_buffers(seg, {}, 2));
    EXPECT_FALSE(lb->driver().kick_prepare());
    // Driver suppresses interrupts: the device's publish needs no notification.
    lb->driver().disable_callbacks();
    ASSERT_EQ(*lb->serve_all(), 2u);
    EXPECT_EQ(lb->device().stats().notifications, 0u);
    ASSERT_TRUE(lb->driver().get_used()->has_value());
    ASSERT_TRUE(lb->driver().get_used()->has_value());
    // Re-enabled with nothing pending: true; then the next completion notifies.
    EXPECT_TRUE(lb->driver().enable_callbacks());
    ASSERT_TRUE(lb->driver().add_buffers(seg, {}, 3));
    lb->driver().kick_prepare();
    ASSERT_EQ(*lb->serve_all(), 1u);
    EXPECT_EQ(lb->device().stats().notifications, 1u);
    // enable_callbacks reports a completion that raced in.
    lb->driver().disable_callbacks();
    (void)lb->driver().get_used();
    ASSERT_TRUE(lb->driver().add_buffers(seg, {}, 4));
    lb->driver().kick_prepare();
    ASSERT_EQ(*lb->serve_all(), 1u);
    EXPECT_FALSE(lb->driver().enable_callbacks());
  }
}

// Property: random add / kick / device-consume / complete / get_used against a model of
// outstanding tokens and their data.
TYPED_TEST(RingTypedTest, PropertyRandomOperationsMatchModel) {
  for (dma::Platform p : kPlatforms) {
    SCOPED_TRACE(dma::platform_name(p));
    auto lb = this->make({.platform = p,
                          .queue_size = 32,
                          .indirect = true,
                          .event_idx = true,
                          .max_indirect = 4,
                          .ram_bytes = 8 << 20,
                          .bounce_bytes = 4 << 20});
    ASSERT_TRUE(lb);
    struct Buf {
      std::byte* in;
      std::byte* out;
      std::uint32_t len;
      std::uint64_t seed;
    };
    std::vector<Buf> pool;
    for (int i = 0; i < 64; ++i) {
      pool.push_back({*lb->guest().alloc_ram(2048), *lb->guest().alloc_ram(2048), 0, 0});
    }
    std::vector<int> free_bufs;
    for (int i = 0; i < 64; ++i) free_bufs.push_back(i);
    std::map<std::uint64_t, int> outstanding;  // token -> buffer
    std::vector<Chain> held;                   // device-side popped, not completed
    std::mt19937_64 rng(5);
    std::uint64_t next_token = 1;
    std::uint32_t device_pending = 0;
    for (int step = 0; step < 4000; ++step) {
      switch (rng() % 5) {
        case 0: {  // add (1 or 2 readable pieces, 1 writable)
          if (free_bufs.empty()) break;
          int b = free_bufs.back();
          Buf& buf = pool[b];
          buf.len = 1 + rng() % 2048;
          buf.seed = rng();
          fill_pattern({buf.in, buf.len}, buf.seed);
          std::memset(buf.out, 0, 2048);
          std::uint32_t cut = buf.len / 2;
          std::vector<Segment> r;
          if (cut > 0) r.push_back({buf.in, cut});
          r.push_back({buf.in + cut, buf.len - cut});
          std::array<Segment, 1> w{{{buf.out, 2048}}};
          auto res = lb->driver().add_buffers(r, w, next_token);
          if (!res) {
            ASSERT_TRUE(res.error() == Errc::kQueueFull || dma::is_retryable(res.error()))
                << res.error().message();
            break;
          }
          free_bufs.pop_back();
          outstanding[next_token++] = b;
          break;
        }
        case 1:
          lb->driver().kick_prepare();
          break;
        case 2: {  // device pops one (keeps it in flight)
          Chain c;
          auto r = lb->device().pop(c);
          ASSERT_TRUE(r) << r.error().message();
          if (*r) held.push_back(c);
          break;
        }
        case 3: {  // device completes a random held chain (out of order)
          if (held.empty()) break;
          std::size_t i = rng() % held.size();
          ASSERT_TRUE(lb->device().push_used(held[i].head, testing::echo_chain(held[i])));
          held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
          ++device_pending;
          if (rng() % 2) {
            lb->device().publish_used();
            device_pending = 0;
          }
          break;
        }
        case 4: {  // driver reaps
          auto u = lb->driver().get_used();
          ASSERT_TRUE(u) << u.error().message();
          if (!u->has_value()) break;
          auto it = outstanding.find((*u)->token);
          ASSERT_NE(it, outstanding.end());
          Buf& buf = pool[it->second];
          ASSERT_EQ((*u)->len, buf.len);
          ASSERT_EQ(first_mismatch({buf.out, buf.len}, buf.seed), -1) << "step " << step;
          free_bufs.push_back(it->second);
          outstanding.erase(it);
          break;
        }
      }
      ASSERT_FALSE(lb->driver().broken()) << lb->driver().broken_reason();
      ASSERT_FALSE(lb->device().broken()) << lb->device().broken_reason();
    }
    (void)device_pending;
  }
}

}  // namespace
}  // namespace vdma::virtq

namespace vdma::virtq {
namespace {
// Both layouts meet the same two concepts, for any provider and translator.
static_assert(DriverQueue<SplitDriverQueue<dma::DmaOps>>);
static_assert(DriverQueue<PackedDriverQueue<dma::DmaOps>>);
static_assert(DeviceQueue<SplitDeviceQueue<GuestMemoryTranslator>>);
static_assert(DeviceQueue<PackedDeviceQueue<IommuTranslator>>);
}  // namespace
}  // namespace vdma::virtq

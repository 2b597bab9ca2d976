// Packed-ring specifics (VIRTIO 1.2, 2.8): round trips, wrap counters with queue sizes
// that are not powers of two, batching, indirect tables, event suppression and EVENT_IDX
// decisions, and the hostile-device and hostile-driver suites, which write the ring
// directly. Behaviour shared with the split ring is in ring_typed_test.cc.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <map>
#include <random>

#include "vdma/dma/bounce_ops.h"
#include "vdma/testing/loopback.h"
#include "vdma/testing/patterns.h"
#include "vdma/virtq/packed_device.h"
#include "vdma/virtq/packed_driver.h"

namespace vdma::virtq {
namespace {

using testing::fill_pattern;
using testing::first_mismatch;

// This file's own ring family for the shared Loopback scaffolding.
struct PackedOnly {
  template <class Ops>
  using Driver = PackedDriverQueue<Ops>;
  template <class T>
  using Device = PackedDeviceQueue<T>;
  static constexpr bool kPacked = true;
  static constexpr const char* kName = "packed";
};
using LB = testing::Loopback<PackedOnly>;

constexpr std::array<dma::Platform, 4> kPlatforms{dma::kTraditional, dma::kSecureGuest,
                                                  dma::kIommuPlatform, dma::kSecureGuestWithIommu};

std::unique_ptr<LB> make(const testing::LoopbackConfig& cfg) {
  auto lb = LB::Create(cfg);
  EXPECT_TRUE(lb) << lb.error().message();
  return lb ? std::move(*lb) : nullptr;
}

// Host views of the three ring areas, resolved the way the device does.
struct RawRing {
  PackedDesc* desc = nullptr;
  PackedEventSuppress* driver = nullptr;
  PackedEventSuppress* device = nullptr;
  std::uint32_t size = 0;
};
RawRing raw_ring(LB& lb) {
  PlatformTranslator tr(lb.guest().platform().iommu ? lb.guest().iommu() : nullptr,
                        lb.guest().memory());
  const RingAddresses a = lb.driver().addresses();
  RawRing r;
  r.size = a.size();
  r.desc = reinterpret_cast<PackedDesc*>(*tr.translate(a.desc, 16 * r.size, memory::Access::kRead));
  r.driver =
      reinterpret_cast<PackedEventSuppress*>(*tr.translate(a.driver, 4, memory::Access::kRead));
  r.device =
      reinterpret_cast<PackedEventSuppress*>(*tr.translate(a.device, 4, memory::Access::kRead));
  return r;
}

constexpr std::uint16_t kUsedBoth = kPackedDescFAvail | kPackedDescFUsed;
bool is_used_desc(const PackedDesc& d, bool wrap) {
  return (d.flags & kUsedBoth) == (wrap ? kUsedBoth : 0);
}

// Counts the bounce slots still held when the ops are BounceOps (0 otherwise).
std::uint64_t slots_in_use(LB& lb) {
  auto* b = dynamic_cast<dma::BounceOps*>(&lb.ops());
  return b ? b->stats().slots_in_use : 0;
}

// ---------------------------------------------------------------------------------------
// Round trips, wrap-around, batching, indirect.

TEST(PackedRingTest, RoundTripEveryPlatform) {
  for (dma::Platform p : kPlatforms) {
    for (bool indirect : {false, true}) {
      SCOPED_TRACE(::testing::Message() << dma::platform_name(p) << " indirect=" << indirect);
      auto lb = make({.platform = p,
                      .queue_size = 7,
                      .indirect = indirect,
                      .ram_bytes = 4 << 20,
                      .bounce_bytes = 4 << 20});
      ASSERT_TRUE(lb);
      std::byte* out = *lb->guest().alloc_ram(3000);
      std::byte* in = *lb->guest().alloc_ram(3000);
      fill_pattern({out, 3000}, 1);
      for (int round = 0; round < 10; ++round) {
        std::memset(in, 0, 3000);
        std::array<Segment, 2> r{{{out, 1000}, {out + 1000, 2000}}};
        std::array<Segment, 1> w{{{in, 3000}}};
        ASSERT_TRUE(lb->driver().add_buffers(r, w, 100 + round));
        EXPECT_EQ(lb->driver().num_free(), indirect ? 6u : 4u);
        lb->driver().kick_prepare();
        Chain c;
        ASSERT_TRUE(*lb->device().pop(c));
        EXPECT_EQ(c.ring_descs, indirect ? 1 : 3);
        ASSERT_EQ(c.readable.size(), 2u);
        ASSERT_EQ(c.writable.size(), 1u);
        ASSERT_EQ(c.readable_bytes, 3000u);
        std::memcpy(c.writable[0].host, c.readable[0].host, 1000);
        std::memcpy(c.writable[0].host + 1000, c.readable[1].host, 2000);
        ASSERT_TRUE(lb->device().push_used(c.head, 2500));
        lb->device().publish_used();
        auto u = lb->driver().get_used();
        ASSERT_TRUE(u && u->has_value());
        EXPECT_EQ((*u)->token, 100u + round);
        EXPECT_EQ((*u)->len, 2500u);
        EXPECT_EQ(first_mismatch({in, 2500}, 1), -1);
        EXPECT_EQ(lb->driver().num_free(), 7u);
        EXPECT_EQ(lb->driver().outstanding(), 0u);
      }
      EXPECT_EQ(slots_in_use(*lb), 0u);
    }
  }
}

// Random batches of 1-4 descriptor chains, completed by the device in random order, over
// many laps of rings whose size is not a power of two. Checks tokens, lengths, data, the
// used-position skipping, and the device's (wrap << 15) | position bookkeeping.
void run_wrap_rounds(dma::Platform p, std::uint32_t size, int rounds, std::uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << dma::platform_name(p) << " size=" << size);
  auto lb = make({.platform = p, .queue_size = size, .ram_bytes = 8 << 20});
  ASSERT_TRUE(lb);
  std::mt19937 rng(seed);
  std::byte* mem = *lb->guest().alloc_ram(64 * 4 * size);
  std::uint64_t next_token = 0, total_descs = 0;
  std::map<std::uint64_t, std::uint32_t> expect_len;  // token -> bytes written
  Chain c;
  for (int round = 0; round < rounds; ++round) {
    // Driver: a batch of buffers until the ring (or the random budget) runs out.
    const std::uint32_t batch = 1 + rng() % size;
    for (std::uint32_t b = 0; b < batch; ++b) {
      const std::uint32_t nsegs = 1 + rng() % std::min<std::uint32_t>(4, size);
      if (nsegs > lb->driver().num_free()) break;
      std::vector<Segment> r, w;
      const std::uint32_t nr = rng() % (nsegs + 1);
      std::byte* base = mem + 64 * 4 * (next_token % size);
      for (std::uint32_t i = 0; i < nsegs; ++i) (i < nr ? r : w).push_back({base + 64 * i, 64});
      ASSERT_TRUE(lb->driver().add_buffers(r, w, next_token));
      expect_len[next_token] = w.empty() ? 0 : 1 + static_cast<std::uint32_t>(w.size());
      total_descs += nsegs;
      ++next_token;
    }
    lb->driver().kick_prepare();
    // Device: pop everything, complete in a random order.
    std::vector<std::pair<std::uint16_t, std::uint32_t>> done;
    for (;;) {
      auto got = lb->device().pop(c);
      ASSERT_TRUE(got) << got.error().message();
      if (!*got) break;
      EXPECT_EQ(c.ring_descs, c.readable.size() + c.writable.size());
      // Writes 1 + (number of writable segments) bytes, so the driver can tell.
      const auto len = static_cast<std::uint32_t>(c.writable.empty() ? 0 : 1 + c.writable.size());
      done.push_back({c.head, len});
    }
    std::shuffle(done.begin(), done.end(), rng);
    for (auto [id, len] : done) ASSERT_TRUE(lb->device().push_used(id, len));
    lb->device().publish_used();
    const std::uint32_t wrap = 1 ^ ((total_descs / size) & 1);
    EXPECT_EQ(lb->device().last_avail_idx(), (wrap << 15) | (total_descs % size));
    // Driver: every completion comes back exactly once.
    std::size_t got = 0;
    while (auto u = *lb->driver().get_used()) {
      ASSERT_TRUE(expect_len.count(u->token)) << u->token;
      EXPECT_EQ(u->len, expect_len[u->token]);
      expect_len.erase(u->token);
      ++got;
    }
    EXPECT_EQ(got, done.size());
    ASSERT_TRUE(expect_len.empty());
    ASSERT_EQ(lb->driver().num_free(), size);
  }
  EXPECT_GT(total_descs, 10u * size);  // many laps
  EXPECT_FALSE(lb->driver().broken());
  EXPECT_EQ(slots_in_use(*lb), 0u);
}

TEST(PackedRingTest, WrapAroundManyRoundsSize7) {
  run_wrap_rounds(dma::kTraditional, 7, 400, 7);
}
TEST(PackedRingTest, WrapAroundManyRoundsSize256) {
  run_wrap_rounds(dma::kTraditional, 256, 200, 256);
}
TEST(PackedRingTest, WrapAroundSmallSizesBounce) {
  for (std::uint32_t size : {1u, 2u, 3u, 5u}) run_wrap_rounds(dma::kSecureGuest, size, 200, size);
}

// Buffers kept in flight across laps: the device always holds some, completing the
// oldest, so used positions never line up with the driver's avail position.
TEST(PackedRingTest, SlidingWindowOutOfOrderAcrossLaps) {
  auto lb = make({.platform = dma::kTraditional, .queue_size = 7});
  ASSERT_TRUE(lb);
  std::byte* buf = *lb->guest().alloc_ram(4096);
  std::deque<std::uint16_t> device_held;
  std::deque<std::uint64_t> expected;  // driver-side order of completion
  std::mt19937 rng(3);
  std::uint64_t token = 0;
  Chain c;
  for (int step = 0; step < 2000; ++step) {
    const std::uint32_t n = 1 + rng() % 3;
    std::vector<Segment> w(n, Segment{buf, 16});
    if (lb->driver().add_buffers({}, w, token).has_value()) {
      lb->driver().kick_prepare();
      ASSERT_TRUE(*lb->device().pop(c));
      device_held.push_back(c.head);
      ++token;
    }
    if (device_held.size() >= 2 || (!device_held.empty() && rng() % 2)) {
      // Complete the newest or the oldest one.
      const bool newest = rng() % 2;
      const std::uint16_t id = newest ? device_held.back() : device_held.front();
      newest ? device_held.pop_back() : device_held.pop_front();
      ASSERT_TRUE(lb->device().push_used(id, 16));
      lb->device().publish_used();
      auto u = lb->driver().get_used();
      ASSERT_TRUE(u && u->has_value()) << "step " << step;
      EXPECT_EQ((*u)->len, 16u);
    }
  }
  EXPECT_FALSE(lb->driver().broken());
  EXPECT_FALSE(lb->device().broken());
  EXPECT_EQ(lb->driver().outstanding(), device_held.size());
}

// kick_prepare() writes the flags of the batch's first descriptor last: before it, the
// device sees nothing even though the rest of the batch is in the ring.
TEST(PackedRingTest, BatchBecomesVisibleAtKickAndUsedBatchAtPublish) {
  auto lb = make({.platform = dma::kTraditional, .queue_size = 8});
  ASSERT_TRUE(lb);
  RawRing ring = raw_ring(*lb);
  std::byte* buf = *lb->guest().alloc_ram(4096);
  std::array<Segment, 2> segs{{{buf, 100}, {buf + 100, 100}}};
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(lb->driver().add_buffers(segs, {}, i));
  EXPECT_EQ(ring.desc[0].flags, 0u);  // head held back
  EXPECT_EQ(ring.desc[1].flags, kPackedDescFAvail);
  EXPECT_EQ(ring.desc[2].flags, kPackedDescFAvail | kDescFNext);
  EXPECT_FALSE(lb->device().has_available());
  Chain c;
  EXPECT_FALSE(*lb->device().pop(c));
  lb->driver().kick_prepare();
  EXPECT_EQ(ring.desc[0].flags, kPackedDescFAvail | kDescFNext);
  EXPECT_TRUE(lb->device().has_available());
  std::vector<std::uint16_t> ids;
  while (*lb->device().pop(c)) ids.push_back(c.head);
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(lb->device().in_flight(), 3u);
  // Device side: used descriptors at 0, 2, 4; the first one's flags wait for publish.
  for (std::uint16_t id : ids) ASSERT_TRUE(lb->device().push_used(id, 0));
  EXPECT_FALSE(is_used_desc(ring.desc[0], true));
  EXPECT_TRUE(is_used_desc(ring.desc[2], true));
  EXPECT_TRUE(is_used_desc(ring.desc[4], true));
  EXPECT_FALSE(lb->driver().get_used()->has_value());
  lb->device().publish_used();
  for (int i = 0; i < 3; ++i) {
    auto u = lb->driver().get_used();
    ASSERT_TRUE(u && u->has_value());
    EXPECT_EQ((*u)->token, static_cast<std::uint64_t>(i));
  }
  EXPECT_EQ(lb->device().in_flight(), 0u);
}

TEST(PackedRingTest, IndirectTakesOneSlotAndIsReadOnlyToTheDevice) {
  for (dma::Platform p : kPlatforms) {
    SCOPED_TRACE(dma::platform_name(p));
    auto lb = make({.platform = p, .queue_size = 5, .indirect = true, .max_indirect = 4});
    ASSERT_TRUE(lb);
    RawRing ring = raw_ring(*lb);
    std::byte* buf = *lb->guest().alloc_ram(4096);
    std::vector<Segment> r(2, Segment{buf, 64}), w(2, Segment{buf + 1024, 64});
    // Five 4-segment buffers fit a 5-slot ring only through indirect tables.
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(lb->driver().add_buffers(r, w, i));
    EXPECT_EQ(lb->driver().num_free(), 0u);
    lb->driver().kick_prepare();
    const PackedDesc d = ring.desc[0];
    EXPECT_TRUE(d.flags & kDescFIndirect);
    EXPECT_EQ(d.len, 4 * sizeof(PackedDesc));
    if (p.iommu && !p.restricted_memory) {  // (bounced tables sit in the read-write pool)
      PlatformTranslator tr(lb->guest().iommu(), lb->guest().memory());
      EXPECT_EQ(tr.translate(DmaAddr{d.addr}, d.len, memory::Access::kWrite).error(),
                Errc::kAccessDenied);
    }
    ASSERT_EQ(*lb->serve_all(), 5u);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(lb->driver().get_used()->has_value());
    // Above max_indirect: plain ring descriptors.
    std::vector<Segment> many(5, Segment{buf, 64});
    ASSERT_TRUE(lb->driver().add_buffers(many, {}, 9));
    EXPECT_EQ(lb->driver().num_free(), 0u);
    lb->driver().kick_prepare();
    Chain c;
    ASSERT_TRUE(*lb->device().pop(c));
    EXPECT_EQ(c.ring_descs, 5);
    ASSERT_TRUE(lb->device().push_used(c.head, 0));
    lb->device().publish_used();
    ASSERT_TRUE(lb->driver().get_used()->has_value());
    EXPECT_EQ(slots_in_use(*lb), 0u);
  }
}

TEST(PackedRingTest, CreateValidatesSizeAndBase) {
  auto guest = *dma::Guest::Create({.platform = dma::kTraditional, .ram_bytes = 1 << 20});
  auto ops = *guest->make_ops({kVirtioFVersion1, kVirtioFRingPacked});
  using Q = PackedDriverQueue<dma::DmaOps>;
  EXPECT_EQ(Q::Create(*ops, {.size = 0}).error(), Errc::kInvalidQueueSize);
  EXPECT_EQ(Q::Create(*ops, {.size = 32769}).error(), Errc::kInvalidQueueSize);
  auto q = Q::Create(*ops, {.size = 32768});
  ASSERT_TRUE(q);
  auto q3 = Q::Create(*ops, {.size = 3});
  ASSERT_TRUE(q3);
  GuestMemoryTranslator tr(guest->memory());
  using D = PackedDeviceQueue<GuestMemoryTranslator>;
  const DeviceQueueConfig dcfg{.rings = q3->addresses(), .features = {}};
  EXPECT_EQ(D::Create(tr, dcfg)->last_avail_idx(), 0x8000);
  EXPECT_EQ(D::Create(tr, dcfg, 0x0002)->last_avail_idx(), 0x0002);
  EXPECT_EQ(D::Create(tr, dcfg, 0x8003).error(), Errc::kInvalidConfig);
  EXPECT_EQ(D::Create(tr, {.rings = q->addresses(), .features = {}})->size(), 32768u);
}

// ---------------------------------------------------------------------------------------
// Event suppression (2.8.10).

TEST(PackedRingTest, EventFlagsWithoutEventIdx) {
  auto lb = make({.platform = dma::kTraditional, .queue_size = 7});
  ASSERT_TRUE(lb);
  RawRing ring = raw_ring(*lb);
  std::byte* buf = *lb->guest().alloc_ram(64);
  std::array<Segment, 1> seg{{{buf, 64}}};
  EXPECT_EQ(ring.device->flags, kEventFlagsEnable);
  ASSERT_TRUE(lb->driver().add_buffers(seg, {}, 1));
  EXPECT_TRUE(lb->driver().kick_prepare());
  lb->device().set_notifications(false);
  EXPECT_EQ(ring.device->flags, kEventFlagsDisable);
  ASSERT_TRUE(lb->driver().add_buffers(seg, {}, 2));
  EXPECT_FALSE(lb->driver().kick_prepare());
  EXPECT_FALSE(lb->driver().kick_prepare());  // nothing new: never a kick
  lb->driver().disable_callbacks();
  EXPECT_EQ(ring.driver->flags, kEventFlagsDisable);
  ASSERT_EQ(*lb->serve_all(), 2u);
  EXPECT_EQ(lb->device().stats().notifications, 0u);
  EXPECT_FALSE(lb->driver().enable_callbacks());  // two used descriptors wait
  EXPECT_EQ(ring.driver->flags, kEventFlagsEnable);
  while (*lb->driver().get_used()) {
  }
  EXPECT_TRUE(lb->driver().enable_callbacks());
  // A device that writes DESC without EVENT_IDX negotiated gets kicked anyway.
  ring.device->flags = kEventFlagsDesc;
  ring.device->off_wrap = 0x7fff;
  ASSERT_TRUE(lb->driver().add_buffers(seg, {}, 3));
  EXPECT_TRUE(lb->driver().kick_prepare());
  EXPECT_EQ(*lb->serve_all(), 1u);
  EXPECT_EQ(lb->device().stats().notifications, 1u);
}

TEST(PackedRingTest, EventIdxKickDecisionsAcrossTheWrap) {
  auto lb = make({.platform = dma::kTraditional, .queue_size = 7, .event_idx = true});
  ASSERT_TRUE(lb);
  RawRing ring = raw_ring(*lb);
  std::byte* buf = *lb->guest().alloc_ram(64);
  std::array<Segment, 1> seg{{{buf, 64}}};
  auto add = [&](int n) {
    for (int i = 0; i < n; ++i) ASSERT_TRUE(lb->driver().add_buffers(seg, {}, i));
  };
  auto drain = [&] {
    ASSERT_TRUE(lb->serve_all());
    while (*lb->driver().get_used()) {
    }
  };
  lb->device().set_notifications(true);  // event at position 0, wrap 1
  EXPECT_EQ(ring.device->flags, kEventFlagsDesc);
  EXPECT_EQ(ring.device->off_wrap, 0x8000);
  add(1);
  EXPECT_TRUE(lb->driver().kick_prepare());  // batch [0, 1) holds the event
  add(1);
  EXPECT_FALSE(lb->driver().kick_prepare());  // batch [1, 2) does not
  drain();
  lb->device().set_notifications(true);  // event at 2
  add(2);
  EXPECT_TRUE(lb->driver().kick_prepare());  // [2, 4)
  drain();
  // Device at 4 (wrap 1) asks for 4; the driver's next batch (positions 4, 5, 6, 0) wraps:
  // the event then has the old wrap counter and lies one lap back.
  lb->device().set_notifications(true);
  EXPECT_EQ(ring.device->off_wrap, 0x8004);
  add(4);
  EXPECT_TRUE(lb->driver().kick_prepare());
  drain();
  // Device at 1 with wrap 0: an event in the new lap.
  lb->device().set_notifications(true);
  EXPECT_EQ(ring.device->off_wrap, 0x0001);
  add(1);
  EXPECT_TRUE(lb->driver().kick_prepare());  // [1, 2) wrap 0
  add(1);
  EXPECT_FALSE(lb->driver().kick_prepare());  // [2, 3)
  // An event one lap ahead (wrong wrap, the device's own bug) never matches.
  ring.device->off_wrap = 0x8003;
  add(1);
  EXPECT_FALSE(lb->driver().kick_prepare());  // [3, 4) wrap 0
  // Disabled with EVENT_IDX: never.
  drain();
  lb->device().set_notifications(false);
  add(3);
  EXPECT_FALSE(lb->driver().kick_prepare());
  drain();
  // Hostile offsets (beyond the ring) only change the answer.
  for (std::uint16_t ow : {0x7fff, 0xffff, 0x0007, 0x8007}) {
    ring.device->flags = kEventFlagsDesc;
    ring.device->off_wrap = ow;
    add(1);
    (void)lb->driver().kick_prepare();
    drain();
  }
  EXPECT_FALSE(lb->driver().broken());
}

TEST(PackedRingTest, EventIdxUsedNotifications) {
  auto lb = make({.platform = dma::kTraditional, .queue_size = 7, .event_idx = true});
  ASSERT_TRUE(lb);
  RawRing ring = raw_ring(*lb);
  std::byte* buf = *lb->guest().alloc_ram(64);
  std::array<Segment, 1> seg{{{buf, 64}}};
  Chain c;
  auto complete_one = [&](std::uint64_t token) {
    ASSERT_TRUE(lb->driver().add_buffers(seg, {}, token));
    lb->driver().kick_prepare();
    ASSERT_TRUE(*lb->device().pop(c));
    ASSERT_TRUE(lb->device().push_used(c.head, 0));
  };
  // Fresh queue: the driver asks for an event at its first used descriptor.
  EXPECT_EQ(ring.driver->flags, kEventFlagsDesc);
  EXPECT_EQ(ring.driver->off_wrap, 0x8000);
  complete_one(1);
  EXPECT_TRUE(lb->device().publish_used());
  // The driver has not consumed it: the event (position 0) was passed, no more events.
  complete_one(2);
  EXPECT_FALSE(lb->device().publish_used());
  // Consuming moves the event to the next used position.
  ASSERT_TRUE(lb->driver().get_used()->has_value());
  ASSERT_TRUE(lb->driver().get_used()->has_value());
  EXPECT_EQ(ring.driver->off_wrap, 0x8002);
  for (int i = 0; i < 5; ++i) {  // positions 2..6, then wrap to 0 with wrap counter 0
    complete_one(10 + i);
    EXPECT_TRUE(lb->device().publish_used());
    ASSERT_TRUE(lb->driver().get_used()->has_value());
  }
  EXPECT_EQ(ring.driver->off_wrap, 0x0000);
  complete_one(20);
  EXPECT_TRUE(lb->device().publish_used());
  ASSERT_TRUE(lb->driver().get_used()->has_value());
  // Callbacks off: DISABLE, no events however far the device gets.
  lb->driver().disable_callbacks();
  EXPECT_EQ(ring.driver->flags, kEventFlagsDisable);
  complete_one(30);
  EXPECT_FALSE(lb->device().publish_used());
  EXPECT_FALSE(lb->driver().enable_callbacks());  // one waits
  ASSERT_TRUE(lb->driver().get_used()->has_value());
  EXPECT_TRUE(lb->driver().enable_callbacks());
  EXPECT_EQ(ring.driver->flags, kEventFlagsDesc);
  EXPECT_EQ(ring.driver->off_wrap, 0x0002);
  complete_one(40);
  EXPECT_TRUE(lb->device().publish_used());
  EXPECT_EQ(lb->device().stats().notifications, 8u);
}

// ---------------------------------------------------------------------------------------
// Hostile device: used descriptors written straight into the ring.

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

class HostileDriverTest : public ::testing::Test {
 protected:
  void setup(dma::Platform p, bool indirect, std::uint32_t size = 4) {
    TearDown();  // mappings go before the ops that made them
    lb_ = make({.platform = p, .queue_size = size, .indirect = indirect});
    ASSERT_TRUE(lb_);
    ring_ = raw_ring(*lb_);
    buf_ = *lb_->guest().alloc_ram(8192);
    auto m = lb_->ops().map(buf_, 4096, dma::Direction::kToDevice);
    auto w = lb_->ops().map(buf_ + 4096, 4096, dma::Direction::kFromDevice);
    ASSERT_TRUE(m && w);
    rd_ = std::move(*m);
    wr_ = std::move(*w);
    PlatformTranslator tr(p.iommu ? lb_->guest().iommu() : nullptr, lb_->guest().memory());
    rd_host_ = *tr.translate(rd_.dma_addr(), 4096, memory::Access::kRead);
    wr_host_ = *tr.translate(wr_.dma_addr(), 4096, memory::Access::kWrite);
    table_ = *lb_->guest().alloc_ram(4096);
    pos_ = used_pos_ = 0;
    wrap_ = used_wrap_ = true;
  }
  void SetUp() override { setup(dma::kTraditional, true); }
  void TearDown() override {
    if (table_map_.mapped()) {
      EXPECT_TRUE(table_map_.unmap());
    }
    if (rd_.mapped()) {
      EXPECT_TRUE(rd_.unmap());
    }
    if (wr_.mapped()) {
      EXPECT_TRUE(wr_.unmap());
    }
  }

  PackedDesc readable(std::uint32_t len = 64, std::uint16_t extra = 0) const {
    return {rd_.dma_addr().value(), len, 0, extra};
  }
  PackedDesc writable(std::uint32_t len = 64) const {
    return {wr_.dma_addr().value(), len, 0, kDescFWrite};
  }
  // An indirect table in driver RAM with `entries`, mapped to-device.
  PackedDesc indirect(const std::vector<PackedDesc>& entries, std::uint32_t len = 0) {
    std::memcpy(table_, entries.data(), entries.size() * sizeof(PackedDesc));
    if (table_map_.mapped()) {
      EXPECT_TRUE(table_map_.unmap());
    }
    table_map_ = std::move(*lb_->ops().map(table_, 4096, dma::Direction::kToDevice));
    return {table_map_.dma_addr().value(),
            len ? len : static_cast<std::uint32_t>(entries.size() * sizeof(PackedDesc)), 0,
            kDescFIndirect};
  }
  // Makes `chain` available the way a driver does: NEXT on all but the last, the ID in
  // every descriptor, AVAIL/USED for our wrap counter, the head's flags written last.
  // `raw` keeps the given NEXT bits as they are.
  void post(std::vector<PackedDesc> chain, std::uint16_t id, bool raw = false) {
    const std::uint32_t head = pos_;
    std::uint16_t head_flags = 0;
    for (std::size_t i = 0; i < chain.size(); ++i) {
      PackedDesc d = chain[i];
      if (!raw && i + 1 < chain.size()) d.flags |= kDescFNext;
      d.flags |= wrap_ ? kPackedDescFAvail : kPackedDescFUsed;
      d.id = id;
      if (i == 0) {
        head_flags = d.flags;
        d.flags = ring_.desc[pos_].flags;
      }
      ring_.desc[pos_] = d;
      if (++pos_ == ring_.size) {
        pos_ = 0;
        wrap_ = !wrap_;
      }
    }
    ring_.desc[head].flags = head_flags;
  }
  // Expects the next pop to reject the chain with `why`, the chain to come back with
  // length 0 at the used position, and the queue to keep serving a valid chain.
  void expect_rejected(Errc why, std::uint16_t id) {
    const std::uint32_t used_pos = used_pos_;
    Chain c;
    auto r = lb_->device().pop(c);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), why) << r.error().message();
    EXPECT_FALSE(lb_->device().broken());
    EXPECT_EQ(lb_->device().stats().rejected, 1u);
    EXPECT_EQ(lb_->device().in_flight(), 0u);
    lb_->device().publish_used();
    const PackedDesc u = ring_.desc[used_pos];
    EXPECT_TRUE(is_used_desc(u, used_wrap_));
    EXPECT_EQ(u.id, id);
    EXPECT_EQ(u.len, 0u);
    EXPECT_FALSE(u.flags & kDescFWrite);
    sync_used_to_avail();
    expect_serves_valid_chain();
  }
  void expect_serves_valid_chain() {
    post({readable(100), writable(200)}, 2);
    Chain c;
    auto r = lb_->device().pop(c);
    ASSERT_TRUE(r) << r.error().message();
    ASSERT_TRUE(*r);
    EXPECT_EQ(c.head, 2);
    EXPECT_EQ(c.ring_descs, 2);
    EXPECT_EQ(c.readable_bytes, 100u);
    EXPECT_EQ(c.writable_bytes, 200u);
    EXPECT_EQ(c.readable[0].host, rd_host_);
    EXPECT_EQ(c.writable[0].host, wr_host_);
    ASSERT_TRUE(lb_->device().push_used(c.head, 200));
    lb_->device().publish_used();
    EXPECT_TRUE(is_used_desc(ring_.desc[used_pos_], used_wrap_));
    EXPECT_TRUE(ring_.desc[used_pos_].flags & kDescFWrite);
    EXPECT_EQ(ring_.desc[used_pos_].len, 200u);
  }
  // With nothing in flight, the device's used position has caught up with ours.
  void sync_used_to_avail() {
    used_pos_ = pos_;
    used_wrap_ = wrap_;
  }
  void expect_broken(Errc why) {
    Chain c;
    auto r = lb_->device().pop(c);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), Errc::kBroken);
    EXPECT_TRUE(lb_->device().broken());
    EXPECT_NE(lb_->device().broken_reason().find(describe(why)), std::string::npos)
        << lb_->device().broken_reason();
    EXPECT_EQ(lb_->device().pop(c).error(), Errc::kBroken);
    EXPECT_EQ(lb_->device().push_used(0, 0).error(), Errc::kBroken);
    EXPECT_FALSE(lb_->device().publish_used());
  }

  std::unique_ptr<LB> lb_;
  RawRing ring_;
  std::byte* buf_ = nullptr;
  std::byte* table_ = nullptr;
  std::byte* rd_host_ = nullptr;
  std::byte* wr_host_ = nullptr;
  dma::Mapping rd_, wr_, table_map_;
  std::uint32_t pos_ = 0, used_pos_ = 0;
  bool wrap_ = true, used_wrap_ = true;
};

TEST_F(HostileDriverTest, ValidChainsServeAcrossTheWrap) {
  for (int i = 0; i < 9; ++i) {
    expect_serves_valid_chain();
    sync_used_to_avail();
  }
  EXPECT_EQ(lb_->device().last_avail_idx(), (wrap_ ? 0x8000 : 0) | pos_);
}

TEST_F(HostileDriverTest, ChainLongerThanTheQueue) {
  // Every descriptor of the ring says NEXT: no descriptor ends the chain.
  std::vector<PackedDesc> all(4, readable(8, kDescFNext));
  post(all, 1, /*raw=*/true);
  expect_rejected(Errc::kChainTooLong, 1);
}

TEST_F(HostileDriverTest, NestedIndirect) {
  post({indirect({readable(), indirect({readable()})})}, 1);
  expect_rejected(Errc::kNestedIndirect, 1);
}

TEST_F(HostileDriverTest, IndirectNotNegotiated) {
  setup(dma::kTraditional, /*indirect=*/false);
  post({indirect({readable(), writable()})}, 1);
  expect_rejected(Errc::kIndirectNotNegotiated, 1);
}

TEST_F(HostileDriverTest, IndirectWithNext) {
  post({indirect({readable()}), writable()}, 1);
  expect_rejected(Errc::kIndirectWithNext, 1);
}

TEST_F(HostileDriverTest, IndirectAfterADirectDescriptor) {
  post({readable(), indirect({writable()})}, 3);
  expect_rejected(Errc::kIndirectWithNext, 3);
}

TEST_F(HostileDriverTest, IndirectZeroLength) {
  PackedDesc d = indirect({readable()});
  d.len = 0;
  post({d}, 1);
  expect_rejected(Errc::kIndirectBadLength, 1);
}

TEST_F(HostileDriverTest, IndirectLengthNotAMultipleOf16) {
  post({indirect({readable(), readable()}, 17)}, 1);
  expect_rejected(Errc::kIndirectBadLength, 1);
}

TEST_F(HostileDriverTest, IndirectTableLongerThanTheQueue) {
  post({indirect(std::vector<PackedDesc>(5, readable()))}, 1);  // queue size 4
  expect_rejected(Errc::kIndirectBadLength, 1);
}

TEST_F(HostileDriverTest, ReadableAfterWritable) {
  post({writable(), readable()}, 1);
  expect_rejected(Errc::kReadableAfterWritable, 1);
}

TEST_F(HostileDriverTest, ReadableAfterWritableInIndirectTable) {
  post({indirect({readable(), writable(), readable()})}, 1);
  expect_rejected(Errc::kReadableAfterWritable, 1);
}

TEST_F(HostileDriverTest, ZeroLengthDescriptor) {
  post({readable(0), writable()}, 1);
  expect_rejected(Errc::kZeroLengthDesc, 1);
}

TEST_F(HostileDriverTest, AddressOverflow) {
  post({PackedDesc{~0ull - 10, 100, 0, 0}}, 1);
  expect_rejected(Errc::kAddressOverflow, 1);
}

TEST_F(HostileDriverTest, AddressNotMapped) {
  post({PackedDesc{0x7000'0000'0000ull, 64, 0, 0}}, 1);
  expect_rejected(Errc::kAddressNotMapped, 1);
}

TEST_F(HostileDriverTest, PrivateGuestMemoryIsNotMapped) {
  setup(dma::kSecureGuest, true);
  // A guest-physical address of private RAM: never shared with the device.
  const Gpa private_gpa = *lb_->guest().memory().gpa_of(buf_, 64);
  post({PackedDesc{private_gpa.value(), 64, 0, 0}}, 1);
  expect_rejected(Errc::kAddressNotMapped, 1);
}

TEST_F(HostileDriverTest, WriteToAReadOnlyIommuMappingIsDenied) {
  setup(dma::kIommuPlatform, true);
  PackedDesc d = readable();
  d.flags = kDescFWrite;  // the IOVA only permits device reads
  post({d}, 1);
  expect_rejected(Errc::kAccessDenied, 1);
}

TEST_F(HostileDriverTest, RejectedChainAcrossTheWrapReturnsAtTheRightPlace) {
  expect_serves_valid_chain();  // positions 0-1
  sync_used_to_avail();
  post({readable(), readable(0), writable()}, 0);  // positions 2, 3, 0 (next lap)
  expect_rejected(Errc::kZeroLengthDesc, 0);
  EXPECT_EQ(lb_->device().last_avail_idx(), (wrap_ ? 0x8000 : 0) | pos_);
}

TEST_F(HostileDriverTest, BufferIdOutOfRangeBreaks) {
  post({readable()}, 4);
  expect_broken(Errc::kDescIndexOutOfRange);
}

TEST_F(HostileDriverTest, BufferIdReusedWhileInFlightBreaks) {
  post({readable()}, 1);
  Chain c;
  ASSERT_TRUE(*lb_->device().pop(c));
  post({writable()}, 1);
  expect_broken(Errc::kHeadInFlight);
}

TEST_F(HostileDriverTest, MoreDescriptorsInFlightThanTheRingBreaks) {
  post({readable(), writable()}, 0);
  post({readable(), writable()}, 1);
  Chain c;
  ASSERT_TRUE(*lb_->device().pop(c));
  ASSERT_TRUE(*lb_->device().pop(c));
  post({readable()}, 2);  // overwrites descriptor 0, still in flight
  expect_broken(Errc::kAvailIdxJump);
}

TEST_F(HostileDriverTest, PushUsedChecksInFlight) {
  EXPECT_EQ(lb_->device().push_used(1, 0).error(), Errc::kNotInFlight);
  EXPECT_EQ(lb_->device().push_used(4, 0).error(), Errc::kNotInFlight);
  post({readable()}, 1);
  Chain c;
  ASSERT_TRUE(*lb_->device().pop(c));
  ASSERT_TRUE(lb_->device().push_used(1, 0));
  EXPECT_EQ(lb_->device().push_used(1, 0).error(), Errc::kNotInFlight);
  EXPECT_FALSE(lb_->device().broken());
}

TEST_F(HostileDriverTest, DeviceResumesFromVringBase) {
  // A device created at (wrap 0, position 3) serves a chain the driver put there.
  using D = PackedDeviceQueue<PlatformTranslator>;
  PlatformTranslator tr(nullptr, lb_->guest().memory());
  auto dev = D::Create(
      tr, {.rings = lb_->driver().addresses(), .features = lb_->driver().features()}, 0x0003);
  ASSERT_TRUE(dev);
  pos_ = 3;
  wrap_ = false;
  post({readable(), writable()}, 0);  // positions 3, 0
  Chain c;
  ASSERT_TRUE(*dev->pop(c));
  EXPECT_EQ(c.ring_descs, 2);
  EXPECT_EQ(dev->last_avail_idx(), 0x8001);
  ASSERT_TRUE(dev->push_used(0, 0));
  dev->publish_used();
  EXPECT_TRUE(is_used_desc(ring_.desc[3], false));
}

}  // namespace
}  // namespace vdma::virtq

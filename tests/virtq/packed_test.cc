// Packed-ring specifics (VIRTIO 1.2, 2.8): round trips, wrap counters with queue sizes
// that are not powers of two, batching, indirect tables, event suppression and EVENT_IDX
// decisions. Behaviour shared with the split ring is in ring_typed_test.cc; the hostile
// suites are in packed_hostile_*_test.cc.
#include <gtest/gtest.h>

#include "packed_test_util.h"

namespace vdma::virtq {
namespace {

using namespace packed_test;  // NOLINT: test scaffolding

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

}  // namespace
}  // namespace vdma::virtq

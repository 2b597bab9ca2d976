// Retryable translation misses on the device side, over every ring layout: a chain whose
// address is not in the device's IOTLB yet is not consumed (pop() returns
// kTranslationMiss and changes nothing), and the same chain comes back once the miss is
// answered. The translator here misses on chosen host ranges, device (DMA) ranges, or at
// random, until told to answer.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <deque>
#include <map>
#include <random>

#include "vdma/testing/loopback.h"
#include "vdma/testing/patterns.h"
#include "vdma/testing/ring_families.h"

namespace vdma::virtq {
namespace {

using testing::fill_pattern;
using testing::first_mismatch;
using testing::LoopbackConfig;

// A device-side translator in front of an IOTLB cache that does not hold everything yet:
// translations touching a "missing" range fail with kTranslationMiss until answered.
class MissTranslator {
 public:
  MissTranslator(const dma::Iommu* iommu, const memory::GuestMemory& m) : inner_(iommu, m) {}

  Result<std::byte*> translate(DmaAddr a, std::uint64_t len, memory::Access acc) const {
    std::byte* host = VDMA_TRY(inner_.translate(a, len, acc));
    const auto h = reinterpret_cast<std::uintptr_t>(host);
    if (overlaps(a.value(), len, dma_lo_, dma_hi_) || overlaps(h, len, host_lo_, host_hi_) ||
        (miss_percent_ > 0 && rng_() % 100 < miss_percent_)) {
      ++misses_;
      return Err(Errc::kTranslationMiss);
    }
    return host;
  }

  void miss_dma(DmaAddr lo, std::uint64_t len) {
    dma_lo_ = lo.value();
    dma_hi_ = lo.value() + len;
  }
  void miss_host(const void* p, std::uint64_t len) {
    host_lo_ = reinterpret_cast<std::uintptr_t>(p);
    host_hi_ = host_lo_ + len;
  }
  void miss_randomly(unsigned percent) { miss_percent_ = percent; }
  // The front end answered: everything translates again.
  void answer_all() {
    dma_lo_ = dma_hi_ = host_lo_ = host_hi_ = 0;
    miss_percent_ = 0;
  }
  std::uint64_t misses() const { return misses_; }

 private:
  static bool overlaps(std::uint64_t a, std::uint64_t len, std::uint64_t lo, std::uint64_t hi) {
    return a < hi && a + len > lo;
  }
  PlatformTranslator inner_;
  std::uint64_t dma_lo_ = 0, dma_hi_ = 0, host_lo_ = 0, host_hi_ = 0;
  unsigned miss_percent_ = 0;
  mutable std::mt19937 rng_{11};
  mutable std::uint64_t misses_ = 0;
};
static_assert(Translator<MissTranslator>);

// Platforms where a chain's host spans are the driver's own buffers (no bounce), so a
// miss can be aimed at one buffer.
constexpr std::array<dma::Platform, 2> kUnbounced{dma::kTraditional, dma::kIommuPlatform};
constexpr std::array<dma::Platform, 4> kPlatforms{dma::kTraditional, dma::kSecureGuest,
                                                  dma::kIommuPlatform, dma::kSecureGuestWithIommu};

template <class Ring>
class TranslationMissTest : public ::testing::Test {
 protected:
  using LB = testing::Loopback<Ring, dma::DmaOps, MissTranslator>;
  struct Buf {
    std::byte* in;
    std::byte* out;
  };

  static std::unique_ptr<LB> make(const LoopbackConfig& cfg) {
    auto lb = LB::Create(cfg);
    EXPECT_TRUE(lb) << lb.error().message();
    return lb ? std::move(*lb) : nullptr;
  }
  // Adds a buffer of one readable and one writable 64-byte segment (readable filled with
  // pattern `token`); the writable one is the chain's 2nd descriptor.
  static Buf add(LB& lb, std::uint64_t token) {
    Buf b{*lb.guest().alloc_ram(64), *lb.guest().alloc_ram(64)};
    fill_pattern({b.in, 64}, token);
    std::memset(b.out, 0, 64);
    std::array<Segment, 1> r{{{b.in, 64}}}, w{{{b.out, 64}}};
    EXPECT_TRUE(lb.driver().add_buffers(r, w, token));
    return b;
  }
  // Pops and expects a miss that changed nothing on the device.
  static void expect_miss(LB& lb) {
    const std::uint16_t last = lb.device().last_avail_idx();
    const std::uint32_t in_flight = lb.device().in_flight();
    const QueueStats before = lb.device().stats();
    const std::uint64_t misses = lb.translator().misses();
    Chain c;
    auto r = lb.device().pop(c);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), Errc::kTranslationMiss);
    EXPECT_TRUE(is_retryable(r.error()));
    EXPECT_FALSE(lb.device().broken());
    EXPECT_GT(lb.translator().misses(), misses);
    EXPECT_EQ(lb.device().last_avail_idx(), last);
    EXPECT_EQ(lb.device().in_flight(), in_flight);
    EXPECT_EQ(lb.device().stats().added, before.added);
    EXPECT_EQ(lb.device().stats().completed, before.completed);
    EXPECT_EQ(lb.device().stats().rejected, before.rejected);
    EXPECT_TRUE(c.readable.empty() && c.writable.empty());
    EXPECT_TRUE(lb.device().has_available());
  }
  // Pops and expects exactly buffer `b`'s chain.
  static Chain expect_chain(LB& lb, const Buf& b) {
    Chain c;
    auto r = lb.device().pop(c);
    EXPECT_TRUE(r) << r.error().message();
    EXPECT_TRUE(r && *r);
    EXPECT_EQ(c.readable.size(), 1u);
    EXPECT_EQ(c.writable.size(), 1u);
    if (c.readable.size() == 1 && c.writable.size() == 1) {
      EXPECT_EQ(c.readable[0].host, b.in);
      EXPECT_EQ(c.writable[0].host, b.out);
    }
    return c;
  }
  static void expect_used(LB& lb, std::uint64_t token, std::uint32_t len) {
    auto u = lb.driver().get_used();
    ASSERT_TRUE(u) << u.error().message();
    ASSERT_TRUE(u->has_value());
    EXPECT_EQ((*u)->token, token);
    EXPECT_EQ((*u)->len, len);
  }
};
TYPED_TEST_SUITE(TranslationMissTest, testing::RingFamilies);

TYPED_TEST(TranslationMissTest, MissOnSecondDescriptorLeavesChainInRing) {
  for (dma::Platform p : kUnbounced) {
    SCOPED_TRACE(dma::platform_name(p));
    auto lb = this->make({.platform = p, .queue_size = 16});
    ASSERT_TRUE(lb);
    auto a = this->add(*lb, 1);
    auto b = this->add(*lb, 2);
    auto c = this->add(*lb, 3);
    lb->driver().kick_prepare();
    lb->translator().miss_host(a.out, 64);
    for (int i = 0; i < 3; ++i) this->expect_miss(*lb);
    lb->translator().answer_all();
    for (const auto* buf : {&a, &b, &c}) {
      Chain ch = this->expect_chain(*lb, *buf);
      ASSERT_TRUE(lb->device().push_used(ch.head, testing::echo_chain(ch)));
    }
    Chain none;
    EXPECT_FALSE(*lb->device().pop(none));
    lb->device().publish_used();
    for (std::uint64_t t : {1, 2, 3}) this->expect_used(*lb, t, 64);
    EXPECT_EQ(first_mismatch({a.out, 64}, 1), -1);
    EXPECT_EQ(lb->device().stats().added, 3u);
    EXPECT_EQ(lb->device().stats().rejected, 0u);
  }
}

// The missing chain straddles the end of the ring: the packed position goes back across
// the wrap (and the wrap counter with it); the split index back across the ring end.
TYPED_TEST(TranslationMissTest, MissAcrossRingWrapRestoresPosition) {
  for (dma::Platform p : kUnbounced) {
    SCOPED_TRACE(dma::platform_name(p));
    auto lb = this->make({.platform = p, .queue_size = 4});
    ASSERT_TRUE(lb);
    // One single-descriptor buffer, then a two-descriptor one: positions 0, 1-2.
    std::byte* one = *lb->guest().alloc_ram(64);
    std::array<Segment, 1> seg{{{one, 64}}};
    ASSERT_TRUE(lb->driver().add_buffers(seg, {}, 1));
    lb->driver().kick_prepare();
    ASSERT_EQ(*lb->serve_all(), 1u);
    this->expect_used(*lb, 1, 0);
    this->add(*lb, 2);
    lb->driver().kick_prepare();
    ASSERT_EQ(*lb->serve_all(), 1u);
    this->expect_used(*lb, 2, 64);
    auto a = this->add(*lb, 4);  // packed: ring positions 3 and 0
    lb->driver().kick_prepare();
    lb->translator().miss_host(a.out, 64);
    this->expect_miss(*lb);
    this->expect_miss(*lb);
    lb->translator().answer_all();
    Chain ch = this->expect_chain(*lb, a);
    ASSERT_TRUE(lb->device().push_used(ch.head, testing::echo_chain(ch)));
    lb->device().publish_used();
    this->expect_used(*lb, 4, 64);
    // The ring keeps going past the wrap.
    auto b = this->add(*lb, 5);
    lb->driver().kick_prepare();
    this->expect_chain(*lb, b);
    EXPECT_FALSE(lb->device().broken());
  }
}

TYPED_TEST(TranslationMissTest, MissOnIndirectTableAndInsideIt) {
  for (dma::Platform p : kUnbounced) {
    SCOPED_TRACE(dma::platform_name(p));
    auto lb = this->make({.platform = p, .queue_size = 8, .indirect = true});
    ASSERT_TRUE(lb);
    ASSERT_FALSE(lb->indirect_arena().empty());
    auto a = this->add(*lb, 1);  // two segments: one indirect descriptor
    auto b = this->add(*lb, 2);
    lb->driver().kick_prepare();
    // The table itself is missing.
    lb->translator().miss_host(lb->indirect_arena().data(), lb->indirect_arena().size());
    this->expect_miss(*lb);
    this->expect_miss(*lb);
    // The table is there now, a buffer it names is not.
    lb->translator().answer_all();
    lb->translator().miss_host(a.out, 64);
    this->expect_miss(*lb);
    lb->translator().answer_all();
    Chain ca = this->expect_chain(*lb, a);
    EXPECT_EQ(ca.ring_descs, 1u);
    Chain cb = this->expect_chain(*lb, b);
    ASSERT_TRUE(lb->device().push_used(ca.head, testing::echo_chain(ca)));
    ASSERT_TRUE(lb->device().push_used(cb.head, testing::echo_chain(cb)));
    lb->device().publish_used();
    this->expect_used(*lb, 1, 64);
    this->expect_used(*lb, 2, 64);
  }
}

TYPED_TEST(TranslationMissTest, MissWhileOtherChainsInFlight) {
  for (dma::Platform p : kUnbounced) {
    SCOPED_TRACE(dma::platform_name(p));
    auto lb = this->make({.platform = p, .queue_size = 16});
    ASSERT_TRUE(lb);
    auto a = this->add(*lb, 1);
    auto b = this->add(*lb, 2);
    auto c = this->add(*lb, 3);
    lb->driver().kick_prepare();
    Chain ca = this->expect_chain(*lb, a);  // held in flight
    lb->translator().miss_host(b.in, 64);
    this->expect_miss(*lb);
    EXPECT_EQ(lb->device().in_flight(), 1u);
    // The held chain completes normally while b is missing.
    ASSERT_TRUE(lb->device().push_used(ca.head, testing::echo_chain(ca)));
    (void)lb->device().publish_used();
    this->expect_used(*lb, 1, 64);
    this->expect_miss(*lb);
    EXPECT_EQ(lb->device().in_flight(), 0u);
    lb->translator().answer_all();
    Chain cb = this->expect_chain(*lb, b);
    Chain cc = this->expect_chain(*lb, c);
    EXPECT_EQ(lb->device().in_flight(), 2u);
    // Out of order completion still works for the retried chain.
    ASSERT_TRUE(lb->device().push_used(cc.head, testing::echo_chain(cc)));
    ASSERT_TRUE(lb->device().push_used(cb.head, testing::echo_chain(cb)));
    lb->device().publish_used();
    this->expect_used(*lb, 3, 64);
    this->expect_used(*lb, 2, 64);
    EXPECT_EQ(lb->driver().num_free(), 16u);
  }
}

TYPED_TEST(TranslationMissTest, DriverSeesNothingUntilRetrySucceeds) {
  for (bool event_idx : {false, true}) {
    SCOPED_TRACE(event_idx);
    auto lb =
        this->make({.platform = dma::kIommuPlatform, .queue_size = 8, .event_idx = event_idx});
    ASSERT_TRUE(lb);
    auto a = this->add(*lb, 7);
    lb->driver().kick_prepare();
    const std::uint32_t free_before = lb->driver().num_free();
    lb->translator().miss_host(a.in, 64);
    for (int i = 0; i < 4; ++i) {
      this->expect_miss(*lb);
      EXPECT_FALSE(lb->device().publish_used());  // nothing pushed: no index move, no event
      auto u = lb->driver().get_used();
      ASSERT_TRUE(u);
      EXPECT_FALSE(u->has_value());
      EXPECT_TRUE(lb->driver().enable_callbacks());  // no completion raced in
    }
    EXPECT_EQ(lb->driver().num_free(), free_before);
    EXPECT_EQ(lb->device().stats().notifications, 0u);
    EXPECT_EQ(std::memcmp(a.out, std::array<std::byte, 64>{}.data(), 64), 0);  // untouched
    lb->translator().answer_all();
    Chain ch = this->expect_chain(*lb, a);
    ASSERT_TRUE(lb->device().push_used(ch.head, testing::echo_chain(ch)));
    EXPECT_TRUE(lb->device().publish_used());  // callbacks are enabled: notify
    this->expect_used(*lb, 7, 64);
    EXPECT_EQ(first_mismatch({a.out, 64}, 7), -1);
  }
}

// With EVENT_IDX the device's kick request is placed at its next avail position; a miss
// must not move it, so re-enabling notifications after a miss asks for the same kick.
TYPED_TEST(TranslationMissTest, EventIdxStateUnchangedByMiss) {
  auto lb = this->make({.platform = dma::kTraditional, .queue_size = 8, .event_idx = true});
  ASSERT_TRUE(lb);
  lb->device().set_notifications(true);
  auto a = this->add(*lb, 1);
  EXPECT_TRUE(lb->driver().kick_prepare());  // the device asked for a kick at a
  const std::uint16_t last = lb->device().last_avail_idx();
  lb->translator().miss_host(a.out, 64);
  this->expect_miss(*lb);
  lb->device().set_notifications(true);  // a back end re-arming while it waits
  EXPECT_EQ(lb->device().last_avail_idx(), last);
  // The event still names a's position, which the driver already passed: no kick for b.
  auto b = this->add(*lb, 2);
  EXPECT_FALSE(lb->driver().kick_prepare());
  lb->translator().answer_all();
  this->expect_chain(*lb, a);
  this->expect_chain(*lb, b);
  // Re-armed after consuming both: the next buffer kicks again.
  lb->device().set_notifications(true);
  this->add(*lb, 3);
  EXPECT_TRUE(lb->driver().kick_prepare());
}

// Create() hands a ring-area miss back as is; the caller creates again once answered.
TYPED_TEST(TranslationMissTest, CreatePropagatesRingAreaMiss) {
  auto lb = this->make({.platform = dma::kIommuPlatform, .queue_size = 8});
  ASSERT_TRUE(lb);
  const RingAddresses rings = lb->driver().addresses();
  MissTranslator t(lb->guest().iommu(), lb->guest().memory());
  const DeviceQueueConfig cfg{.rings = rings, .features = {.packed = TypeParam::kPacked}};
  using DeviceQ = typename TypeParam::template Device<MissTranslator>;
  for (DmaAddr area : {rings.desc, rings.driver, rings.device}) {
    t.miss_dma(area, 1);
    auto q = DeviceQ::Create(t, cfg);
    ASSERT_FALSE(q);
    EXPECT_EQ(q.error(), Errc::kTranslationMiss);
  }
  t.answer_all();
  auto q = DeviceQ::Create(t, cfg);
  ASSERT_TRUE(q) << q.error().message();
  auto a = this->add(*lb, 1);
  lb->driver().kick_prepare();
  Chain c;
  ASSERT_TRUE(*q->pop(c));
  EXPECT_EQ(c.readable[0].host, a.in);
}

// Property: the random add / kick / pop / complete / reap model of the typed ring suite,
// with translations missing at random (and the miss rate changing as it goes). Chains must
// reach the device exactly once each, in ring order, with their bytes intact; a miss
// changes nothing.
TYPED_TEST(TranslationMissTest, PropertyRandomMissesMatchModel) {
  for (dma::Platform p : kPlatforms) {
    SCOPED_TRACE(dma::platform_name(p));
    auto lb = this->make({.platform = p,
                          .queue_size = 16,
                          .indirect = true,
                          .event_idx = true,
                          .max_indirect = 3,  // 4-segment chains go direct
                          .ram_bytes = 4 << 20,
                          .bounce_bytes = 2 << 20});
    ASSERT_TRUE(lb);
    struct Buf {
      std::byte* in;
      std::byte* out;
      std::uint32_t len;
      std::uint64_t seed;
    };
    std::vector<Buf> pool;
    std::vector<int> free_bufs;
    for (int i = 0; i < 32; ++i) {
      pool.push_back({*lb->guest().alloc_ram(1024), *lb->guest().alloc_ram(1024), 0, 0});
      free_bufs.push_back(i);
    }
    std::map<std::uint64_t, int> outstanding;  // token -> buffer
    std::deque<std::uint64_t> ring_order;      // added, not yet popped by the device
    std::vector<Chain> held;
    std::mt19937_64 rng(9);
    std::uint64_t next_token = 1, misses = 0;
    for (int step = 0; step < 3000; ++step) {
      switch (rng() % 6) {
        case 0: {  // add: 1-3 readable pieces, 1 writable
          if (free_bufs.empty()) break;
          const int bi = free_bufs.back();
          Buf& buf = pool[bi];
          buf.len = 3 + rng() % 1022;
          buf.seed = rng();
          fill_pattern({buf.in, buf.len}, buf.seed);
          std::vector<Segment> r;
          const std::uint32_t pieces = 1 + rng() % 3, step_len = buf.len / pieces;
          for (std::uint32_t k = 0; k < pieces; ++k) {
            const std::uint32_t len = k + 1 == pieces ? buf.len - k * step_len : step_len;
            r.push_back({buf.in + k * step_len, len});
          }
          std::array<Segment, 1> w{{{buf.out, 1024}}};
          auto res = lb->driver().add_buffers(r, w, next_token);
          if (!res) {
            ASSERT_TRUE(is_retryable(res.error()) || dma::is_retryable(res.error()))
                << res.error().message();
            break;
          }
          free_bufs.pop_back();
          ring_order.push_back(next_token);
          outstanding[next_token++] = bi;
          break;
        }
        case 1:
          lb->driver().kick_prepare();
          break;
        case 2:  // the IOTLB's state changes
          lb->translator().answer_all();
          if (rng() % 2) lb->translator().miss_randomly(static_cast<unsigned>(rng() % 60));
          break;
        case 3: {  // device pops one
          const std::uint32_t in_flight = lb->device().in_flight();
          const std::uint16_t last = lb->device().last_avail_idx();
          Chain c;
          auto r = lb->device().pop(c);
          if (!r) {
            ASSERT_EQ(r.error(), Errc::kTranslationMiss) << r.error().message();
            ASSERT_EQ(lb->device().in_flight(), in_flight);
            ASSERT_EQ(lb->device().last_avail_idx(), last);
            ++misses;
            break;
          }
          if (!*r) break;
          ASSERT_FALSE(ring_order.empty());
          const Buf& buf = pool[outstanding.at(ring_order.front())];
          ring_order.pop_front();
          std::vector<std::byte> got;
          for (const DeviceSegment& s : c.readable) got.insert(got.end(), s.host, s.host + s.len);
          ASSERT_EQ(got.size(), buf.len) << "step " << step;
          ASSERT_EQ(first_mismatch(got, buf.seed), -1) << "step " << step;
          held.push_back(std::move(c));
          break;
        }
        case 4: {  // device completes a random held chain
          if (held.empty()) break;
          const std::size_t i = rng() % held.size();
          ASSERT_TRUE(lb->device().push_used(held[i].head, testing::echo_chain(held[i])));
          held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
          if (rng() % 2) lb->device().publish_used();
          break;
        }
        case 5: {  // driver reaps
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
    EXPECT_GT(misses, 50u);
    EXPECT_EQ(lb->device().stats().rejected, 0u);
    EXPECT_GT(lb->device().stats().completed, 200u);
  }
}

}  // namespace
}  // namespace vdma::virtq

// The back end moving data: a scripted front end sets up rings over a Guest's memfd
// regions, a driver queue adds buffers, the back end's echo device answers through the
// real socket, eventfds and shared mappings. Split and packed.
#include <poll.h>

#include <array>
#include <vector>

#include "backend_test_util.h"
#include "vdma/testing/patterns.h"
#include "vdma/testing/ring_families.h"

namespace vdma::vhost::test {
namespace {

using testing::fill_pattern;
using testing::first_mismatch;

template <class Ring>
class BackendIoTest : public ::testing::Test {
 protected:
  using Driver = typename Ring::template Driver<dma::DmaOps>;

  void SetUp() override {
    auto g = dma::Guest::Create({.platform = dma::kTraditional, .ram_bytes = 8 << 20});
    ASSERT_TRUE(g) << g.error().message();
    guest = std::move(*g);
    ch.emplace(server.connect());
  }

  FeatureSet features() const {
    FeatureSet f{kVirtioFVersion1, kVhostUserFProtocolFeatures};
    if (Ring::kPacked) f.set(kVirtioFRingPacked);
    return f;
  }

  // Negotiates and shares memory; the driver queues get built over the guest's ops.
  void negotiate() {
    Scripted s{*ch};
    ASSERT_TRUE(s.send(FrontendRequest::kSetOwner));
    auto offered = s.get_u64(FrontendRequest::kGetFeatures);
    ASSERT_TRUE(offered);
    ASSERT_TRUE(FeatureSet::FromBits(*offered).contains(features()));
    ASSERT_EQ(*s.acked(FrontendRequest::kSetProtocolFeatures,
                       U64{ProtocolFeatureSet{kProtocolFReplyAck, kProtocolFMq,
                                              kProtocolFConfigureMemSlots}
                               .bits()}),
              0u);
    ASSERT_EQ(*s.acked(FrontendRequest::kSetFeatures, U64{features().bits()}), 0u);
    ASSERT_EQ(*s.acked(FrontendRequest::kSetMemTable, table_of(guest->shared_regions())), 0u);
    auto o = guest->make_ops_of_kind(dma::OpsKind::kDirect);
    ASSERT_TRUE(o) << o.error().message();
    ops = std::move(*o);
  }

  // Creates driver queue `index` and starts it on the back end.
  void start_queue(std::uint32_t index, std::uint32_t size = 64) {
    virtq::DriverQueueConfig cfg;
    cfg.size = size;
    cfg.features = virtq::RingFeatures::From(features());
    auto q = Driver::Create(*ops, cfg);
    ASSERT_TRUE(q) << q.error().message();
    drivers.push_back(std::make_unique<Driver>(std::move(*q)));
    kicks.push_back(make_nb_eventfd());
    calls.push_back(make_nb_eventfd());
    ASSERT_TRUE(start_vring(*ch, *guest, index, size, Ring::kPacked, drivers.back()->addresses(),
                            calls.back().get(), kicks.back().get()));
  }

  // Sends `count` request/response pairs of `len` bytes through queue `q` and checks the
  // echo of each.
  void round_trip(std::size_t q, int count, std::uint32_t len, std::uint64_t seed) {
    Driver& d = *drivers[q];
    std::byte* out = *guest->alloc_ram(len);
    std::byte* in = *guest->alloc_ram(len);
    for (int i = 0; i < count; ++i) {
      fill_pattern({out, len}, seed + i);
      std::memset(in, 0, len);
      std::array<virtq::Segment, 1> r{{{out, len}}};
      std::array<virtq::Segment, 1> w{{{in, len}}};
      ASSERT_TRUE(d.add_buffers(r, w, 100 + i));
      if (d.kick_prepare()) EventLoop::signal_eventfd(kicks[q].get());
      std::optional<virtq::UsedBuffer> used;
      for (int spins = 0; spins < 2000 && !used; ++spins) {
        auto u = d.get_used();
        ASSERT_TRUE(u) << u.error().message();
        used = *u;
        if (!used) {
          pollfd p{calls[q].get(), POLLIN, 0};
          ::poll(&p, 1, 5);
          EventLoop::drain_eventfd(calls[q].get());
        }
      }
      ASSERT_TRUE(used) << "no used buffer for request " << i;
      EXPECT_EQ(used->token, 100u + i);
      EXPECT_EQ(used->len, len);
      EXPECT_EQ(first_mismatch({in, len}, seed + i), -1);
    }
    ASSERT_TRUE(guest->free_ram(out, len));
    ASSERT_TRUE(guest->free_ram(in, len));
  }

  ServerUnderTest server;
  std::unique_ptr<dma::Guest> guest;
  std::unique_ptr<dma::DmaOps> ops;
  std::optional<Channel> ch;
  std::vector<std::unique_ptr<Driver>> drivers;
  std::vector<UniqueFd> kicks;
  std::vector<UniqueFd> calls;
};

TYPED_TEST_SUITE(BackendIoTest, testing::RingFamilies);

TYPED_TEST(BackendIoTest, EchoesThroughTheSocket) {
  this->negotiate();
  this->start_queue(0);
  this->round_trip(0, 50, 1500, 1);
}

TYPED_TEST(BackendIoTest, TwoQueuesServeIndependently) {
  this->negotiate();
  this->start_queue(0);
  this->start_queue(1);
  this->round_trip(1, 20, 64, 3);
  this->round_trip(0, 20, 4096, 4);
}

TYPED_TEST(BackendIoTest, GetVringBaseStopsAndTheRingResumesThere) {
  this->negotiate();
  this->start_queue(0);
  this->round_trip(0, 7, 64, 5);
  Scripted s{*this->ch};
  auto base = s.get(FrontendRequest::kGetVringBase, VringState{0, 0});
  ASSERT_TRUE(base) << base.error().message();
  const std::uint32_t num = std::get<VringState>(*base).num;
  if (TypeParam::kPacked) {
    // Wrap counter still 1, position 14 (7 chains of 2 descriptors), for avail (bits
    // 0..15) and used (bits 16..31) alike.
    EXPECT_EQ(num, 0x800eu | (0x800eu << 16));
  } else {
    EXPECT_EQ(num, 7u);
  }
  // Restart where it stopped: a new kick starts it again.
  ASSERT_EQ(*s.acked(FrontendRequest::kSetVringBase, VringState{0, num}), 0u);
  ASSERT_EQ(*s.acked(FrontendRequest::kSetVringKick, VringFd{0, dup_fd(this->kicks[0].get())}), 0u);
  this->round_trip(0, 9, 64, 6);
}

TYPED_TEST(BackendIoTest, MemoryTableReplacedWhileRunning) {
  this->negotiate();
  this->start_queue(0);
  this->round_trip(0, 5, 512, 7);
  Scripted s{*this->ch};
  // DPDK's virtio-user re-sends the table while running, bracketed by enable 0/1.
  ASSERT_EQ(*s.acked(FrontendRequest::kSetVringEnable, VringState{0, 0}), 0u);
  ASSERT_EQ(*s.acked(FrontendRequest::kSetMemTable, table_of(this->guest->shared_regions())), 0u);
  ASSERT_EQ(*s.acked(FrontendRequest::kSetVringEnable, VringState{0, 1}), 0u);
  this->round_trip(0, 5, 512, 8);
  // And without the bracket: the back end stops, remaps and resumes by itself.
  ASSERT_EQ(*s.acked(FrontendRequest::kSetMemTable, table_of(this->guest->shared_regions())), 0u);
  this->round_trip(0, 5, 512, 9);
}

}  // namespace
}  // namespace vdma::vhost::test

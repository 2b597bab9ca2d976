// The back end behind an IOMMU (ACCESS_PLATFORM): ring and buffer addresses are IOVAs,
// translated through the back end's IOTLB cache. Misses arrive on the back-end channel
// and are answered with IOTLB_MSG updates; the ring resumes with the chain it stopped at.
// Invalidations are acknowledged and take effect; permissions are enforced.
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <map>
#include <mutex>

#include "backend_test_util.h"
#include "vdma/testing/patterns.h"

namespace vdma::vhost::test {
namespace {

using testing::fill_pattern;
using testing::first_mismatch;

// Records the guest IOMMU's mappings so the test can answer misses (it pushes no update
// by itself: every translation the back end needs is asked for) and forwards unmaps as
// IOTLB invalidations, as a front end must.
class RecordingListener final : public dma::IotlbListener {
 public:
  Result<void> iotlb_update(const memory::IotlbEntry& e) override {
    std::lock_guard lock(mu);
    entries[e.iova.value()] = e;
    return Ok();
  }
  Result<void> iotlb_invalidate(Iova iova, std::uint64_t size) override {
    if (channel != nullptr) {
      IotlbMsg inv{.iova = iova.value(), .size = size, .type = IotlbType::kInvalidate};
      auto acked = Scripted{*channel}.acked(FrontendRequest::kIotlbMsg, inv);
      if (!acked) return Err(acked.error());
      if (*acked != 0) return Err(std::make_error_code(std::errc::io_error));
    }
    std::lock_guard lock(mu);
    for (auto it = entries.begin(); it != entries.end();) {
      if (it->first < iova.value() + size && iova.value() < it->first + it->second.size) {
        it = entries.erase(it);
      } else {
        ++it;
      }
    }
    return Ok();
  }
  std::optional<memory::IotlbEntry> find(std::uint64_t iova) {
    std::lock_guard lock(mu);
    auto it = entries.upper_bound(iova);
    if (it == entries.begin()) return std::nullopt;
    --it;
    if (iova - it->first >= it->second.size) return std::nullopt;
    return it->second;
  }
  std::mutex mu;
  std::map<std::uint64_t, memory::IotlbEntry> entries;
  Channel* channel = nullptr;  // set once features are negotiated
};

class BackendIotlbTest : public ::testing::Test {
 protected:
  using Driver = virtq::SplitDriverQueue<dma::DmaOps>;

  void SetUp() override {
    auto g = dma::Guest::Create({.platform = dma::kIommuPlatform, .ram_bytes = 8 << 20});
    ASSERT_TRUE(g) << g.error().message();
    guest = std::move(*g);
    guest->iommu()->add_listener(&listener);
    ch.emplace(server.connect());
    Scripted s{*ch};
    ASSERT_TRUE(s.send(FrontendRequest::kSetOwner));
    ASSERT_EQ(*s.acked(FrontendRequest::kSetProtocolFeatures,
                       U64{ProtocolFeatureSet{kProtocolFReplyAck, kProtocolFBackendReq}.bits()}),
              0u);
    auto pair = Channel::Pair();
    ASSERT_TRUE(pair);
    backend_ch.emplace(std::move(pair->first));
    ASSERT_EQ(*s.acked(FrontendRequest::kSetBackendReqFd, FdPayload{pair->second.take_socket()}),
              0u);
    ASSERT_EQ(*s.acked(FrontendRequest::kSetFeatures, U64{features.bits()}), 0u);
    listener.channel = &*ch;
    ASSERT_EQ(*s.acked(FrontendRequest::kSetMemTable, table_of(guest->shared_regions())), 0u);
    auto o = guest->make_ops(FeatureSet{kVirtioFVersion1, kVirtioFAccessPlatform});
    ASSERT_TRUE(o) << o.error().message();
    ASSERT_EQ((*o)->kind(), dma::OpsKind::kIommu);
    ops = std::move(*o);
    virtq::DriverQueueConfig cfg;
    cfg.size = 64;
    auto q = Driver::Create(*ops, cfg);
    ASSERT_TRUE(q) << q.error().message();
    driver.emplace(std::move(*q));
    const virtq::RingAddresses a = driver->addresses();  // IOVAs
    ASSERT_EQ(*s.acked(FrontendRequest::kSetVringNum, VringState{0, 64}), 0u);
    ASSERT_EQ(*s.acked(FrontendRequest::kSetVringAddr,
                       VringAddr{0, 0, a.desc.value(), a.device.value(), a.driver.value(), 0}),
              0u);
    ASSERT_EQ(*s.acked(FrontendRequest::kSetVringCall, VringFd{0, dup_fd(call.get())}), 0u);
    ASSERT_EQ(*s.acked(FrontendRequest::kSetVringKick, VringFd{0, dup_fd(kick.get())}), 0u);
    ASSERT_EQ(*s.acked(FrontendRequest::kSetVringEnable, VringState{0, 1}), 0u);
  }
  void TearDown() override {
    driver.reset();
    listener.channel = nullptr;
    if (guest) guest->iommu()->remove_listener(&listener);
  }

  std::uint64_t uva_of_gpa(std::uint64_t gpa) {
    return reinterpret_cast<std::uint64_t>(guest->memory().translate(Gpa{gpa}, 1)->data());
  }

  // Answers the back end's pending misses (as a front end's IOMMU would); returns how
  // many. `perm_override` replaces the permission of every answer when set.
  int answer_misses(std::optional<IotlbPerm> perm_override = std::nullopt) {
    constexpr std::uint64_t kPage = 4096;
    int answered = 0;
    while (true) {
      pollfd p{backend_ch->fd(), POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) return answered;
      auto m = backend_ch->receive();
      if (!m) return answered;
      auto d = decode_backend_message(std::move(*m));
      EXPECT_TRUE(d) << d.error().message();
      if (!d) return answered;
      EXPECT_EQ(d->request, BackendRequest::kIotlbMsg);
      const auto miss = std::get<IotlbMsg>(d->payload);
      EXPECT_EQ(miss.type, IotlbType::kMiss);
      ++misses;
      auto e = listener.find(miss.iova);
      if (!e) continue;  // not mapped: no answer (the ring stays waiting)
      // Page by page (as QEMU's intel-iommu answers) when asked to.
      std::uint64_t iova = e->iova.value(), size = e->size, target = e->target;
      if (page_answers) {
        const std::uint64_t page = miss.iova & ~(kPage - 1);
        target += page - iova;
        iova = page;
        size = kPage;
      }
      IotlbMsg up{.iova = iova,
                  .size = size,
                  .user_addr = uva_of_gpa(target),
                  .perm = perm_override.value_or(static_cast<IotlbPerm>(e->perm)),
                  .type = IotlbType::kUpdate};
      EXPECT_EQ(*Scripted{*ch}.acked(FrontendRequest::kIotlbMsg, up), 0u);
      ++answered;
    }
  }

  // One request/response through the ring, answering misses while waiting.
  std::optional<virtq::UsedBuffer> round_trip(std::uint32_t len, std::uint64_t seed,
                                              std::optional<IotlbPerm> perm = std::nullopt) {
    std::byte* out = *guest->alloc_ram(len);
    std::byte* in = *guest->alloc_ram(len);
    fill_pattern({out, len}, seed);
    std::memset(in, 0, len);
    std::array<virtq::Segment, 1> r{{{out, len}}};
    std::array<virtq::Segment, 1> w{{{in, len}}};
    EXPECT_TRUE(driver->add_buffers(r, w, seed));
    if (driver->kick_prepare()) EventLoop::signal_eventfd(kick.get());
    std::optional<virtq::UsedBuffer> used;
    for (int spins = 0; spins < 1000 && !used; ++spins) {
      answer_misses(perm);
      used = *driver->get_used();
      if (!used) {
        pollfd p[2] = {{call.get(), POLLIN, 0}, {backend_ch->fd(), POLLIN, 0}};
        ::poll(p, 2, 5);
        EventLoop::drain_eventfd(call.get());
      }
    }
    if (used && used->len == len) echoed = first_mismatch({in, len}, seed) == -1;
    (void)guest->free_ram(out, len);
    (void)guest->free_ram(in, len);
    return used;
  }

  const FeatureSet features{kVirtioFVersion1, kVirtioFAccessPlatform, kVhostUserFProtocolFeatures};
  RecordingListener listener;
  ServerUnderTest server;
  std::unique_ptr<dma::Guest> guest;
  std::unique_ptr<dma::DmaOps> ops;
  std::optional<Channel> ch;
  std::optional<Channel> backend_ch;
  std::optional<Driver> driver;
  UniqueFd kick = make_nb_eventfd();
  UniqueFd call = make_nb_eventfd();
  int misses = 0;
  bool echoed = false;
  bool page_answers = false;
};

TEST_F(BackendIotlbTest, MissesAreAskedAndTheRingResumes) {
  for (int i = 0; i < 10; ++i) {
    auto used = round_trip(512, 40 + i);
    ASSERT_TRUE(used) << "request " << i;
    EXPECT_EQ(used->len, 512u);
    EXPECT_TRUE(echoed);
  }
  // At least the three ring areas and each request's two buffers were asked for.
  EXPECT_GE(misses, 3 + 2);
}

TEST_F(BackendIotlbTest, DescriptorsLargerThanOneAnswerAreServedPieceByPiece) {
  // QEMU's vIOMMU answers a miss with one page: a 16 KiB buffer takes several answers,
  // and the back end must ask for each uncovered page in turn, not the buffer's start.
  page_answers = true;
  for (int i = 0; i < 4; ++i) {
    auto used = round_trip(16384, 60 + i);
    ASSERT_TRUE(used) << "request " << i;
    EXPECT_EQ(used->len, 16384u);
    EXPECT_TRUE(echoed);
  }
  EXPECT_GE(misses, 8);  // at least 4 pages per buffer, 2 buffers
}

TEST_F(BackendIotlbTest, WriteThroughAReadOnlyMappingIsRefused) {
  // Every answer grants read only: the device may read the request but not write the
  // reply, so the chain comes back with nothing written. (The used ring itself needs
  // write access: answers for it are read-write below, so only the buffer is refused.)
  auto used = round_trip(256, 7);  // warm: ring areas and a first pair of buffers
  ASSERT_TRUE(used);
  used = round_trip(256, 8, IotlbPerm::kRead);
  if (used) {
    EXPECT_EQ(used->len, 0u);  // the writable buffer's translation was refused
  } else {
    ADD_FAILURE() << "chain neither completed nor rejected";
  }
}

TEST_F(BackendIotlbTest, InvalidationIsAckedAndForgetsTheEntry) {
  ASSERT_TRUE(round_trip(128, 11));
  const int before = misses;
  // Invalidate everything the back end holds: the next request asks again for its rings.
  IotlbMsg inv{.iova = 0,
               .size = ~0ull,
               .user_addr = 0,
               .perm = IotlbPerm::kNone,
               .type = IotlbType::kInvalidate};
  EXPECT_EQ(*Scripted{*ch}.acked(FrontendRequest::kIotlbMsg, inv), 0u);
  auto used = round_trip(128, 12);
  ASSERT_TRUE(used);
  EXPECT_TRUE(echoed);
  EXPECT_GT(misses, before + 2);
}

TEST_F(BackendIotlbTest, OverflowingUpdateIsRefused) {
  IotlbMsg bad{.iova = ~0ull - 0xfff,
               .size = 0x2000,
               .user_addr = 0x1000,
               .perm = IotlbPerm::kRead,
               .type = IotlbType::kUpdate};
  auto r = Scripted{*ch}.acked(FrontendRequest::kIotlbMsg, bad);
  // The codec rejects the range before the back end sees it: the connection is closed.
  EXPECT_TRUE(!r || *r == 1u);
}

}  // namespace
}  // namespace vdma::vhost::test

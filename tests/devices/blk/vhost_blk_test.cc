// The block device behind the real vhost-user back end: a BackendServer serving
// VhostBlkDevices on a Unix socket, a scripted front end negotiating over it, driver
// queues (split and packed) in a Guest's memfd memory. Writes land in the image file,
// reads return them, GET_CONFIG shows the disk, and GET_VRING_BASE returns only once
// every request of the ring is used.
#include "vdma/devices/blk/vhost_blk_device.h"

#include <poll.h>
#include <sys/eventfd.h>

#include <array>
#include <vector>

#include "../../vhost/backend/backend_test_util.h"
#include "blk_test_util.h"
#include "vdma/testing/ring_families.h"

namespace vdma::blk::test {
namespace {

using vhost::ConfigSpace;
using vhost::FrontendRequest;
using vhost::U64;
using vhost::VringAddr;
using vhost::VringFd;
using vhost::VringState;
using vhost::test::dup_fd;
using vhost::test::Scripted;
using vhost::test::table_of;

// Kick and call eventfds; non-blocking, so draining an empty one returns.
UniqueFd make_eventfd() {
  return UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
}

// One request as the driver lays it out in guest RAM.
struct GuestRequest {
  std::byte* hdr = nullptr;
  std::byte* data = nullptr;
  std::byte* status = nullptr;
  std::uint32_t len = 0;
};

template <class Ring>
class VhostBlkTest : public ::testing::Test {
 protected:
  using Driver = typename Ring::template Driver<dma::DmaOps>;

  void SetUp() override {
    auto d = Disk::Open({.path = image.path, .serial = "vhost-blk"});
    ASSERT_TRUE(d) << d.error().message();
    disk = std::shared_ptr<const Disk>(std::move(*d));
    path = image.dir + "/blk.sock";
    auto s = vhost::BackendServer::Create({.socket_path = path, .make_device = [this] {
                                             return std::make_unique<VhostBlkDevice>(
                                                 disk, VhostBlkOptions{.num_queues = 2});
                                           }});
    ASSERT_TRUE(s) << s.error().message();
    server = std::move(*s);
    thread = std::thread([this] { EXPECT_TRUE(server->run()); });
    auto c = vhost::Channel::Connect(path);
    ASSERT_TRUE(c) << c.error().message();
    ch.emplace(std::move(*c));
    auto g = dma::Guest::Create({.platform = dma::kTraditional, .ram_bytes = 8 << 20});
    ASSERT_TRUE(g) << g.error().message();
    guest = std::move(*g);
  }
  void TearDown() override {
    drivers.clear();
    ch.reset();
    server->stop();
    thread.join();
  }

  FeatureSet features() const {
    FeatureSet f{kVirtioFVersion1, vhost::kVhostUserFProtocolFeatures,
                 kBlkFFlush,       kBlkFMq,
                 kBlkFDiscard,     kBlkFWriteZeroes,
                 kBlkFConfigWce};
    if (Ring::kPacked) f.set(kVirtioFRingPacked);
    return f;
  }

  void negotiate() {
    Scripted s{*ch};
    ASSERT_TRUE(s.send(FrontendRequest::kSetOwner));
    auto offered = s.get_u64(FrontendRequest::kGetFeatures);
    ASSERT_TRUE(offered);
    ASSERT_TRUE(FeatureSet::FromBits(*offered).contains(features()));
    auto proto = s.get_u64(FrontendRequest::kGetProtocolFeatures);
    ASSERT_TRUE(proto);
    ASSERT_TRUE(vhost::ProtocolFeatureSet::FromBits(*proto).has(vhost::kProtocolFConfig));
    ASSERT_EQ(*s.acked(FrontendRequest::kSetProtocolFeatures,
                       U64{vhost::ProtocolFeatureSet{vhost::kProtocolFReplyAck, vhost::kProtocolFMq,
                                                     vhost::kProtocolFConfig}
                               .bits()}),
              0u);
    ASSERT_EQ(*s.acked(FrontendRequest::kSetFeatures, U64{features().bits()}), 0u);
    ASSERT_EQ(*s.acked(FrontendRequest::kSetMemTable, table_of(guest->shared_regions())), 0u);
    auto o = guest->make_ops_of_kind(dma::OpsKind::kDirect);
    ASSERT_TRUE(o) << o.error().message();
    ops = std::move(*o);
  }

  std::uint64_t uva(DmaAddr a) {
    auto span = guest->memory().translate(Gpa{a.value()}, 1);
    EXPECT_TRUE(span);
    return reinterpret_cast<std::uint64_t>(span->data());
  }

  void start_queue(std::uint32_t index, std::uint32_t size = 256) {
    virtq::DriverQueueConfig cfg;
    cfg.size = size;
    cfg.features = virtq::RingFeatures::From(features());
    auto q = Driver::Create(*ops, cfg);
    ASSERT_TRUE(q) << q.error().message();
    drivers.push_back(std::make_unique<Driver>(std::move(*q)));
    kicks.push_back(make_eventfd());
    calls.push_back(make_eventfd());
    const virtq::RingAddresses a = drivers.back()->addresses();
    Scripted s{*ch};
    ASSERT_EQ(*s.acked(FrontendRequest::kSetVringNum, VringState{index, size}), 0u);
    ASSERT_EQ(
        *s.acked(FrontendRequest::kSetVringBase, VringState{index, Ring::kPacked ? 0x8000u : 0u}),
        0u);
    ASSERT_EQ(*s.acked(FrontendRequest::kSetVringAddr,
                       VringAddr{index, 0, uva(a.desc), uva(a.device), uva(a.driver), 0}),
              0u);
    ASSERT_EQ(*s.acked(FrontendRequest::kSetVringCall,
                       VringFd{static_cast<std::uint8_t>(index), dup_fd(calls.back().get())}),
              0u);
    ASSERT_EQ(*s.acked(FrontendRequest::kSetVringKick,
                       VringFd{static_cast<std::uint8_t>(index), dup_fd(kicks.back().get())}),
              0u);
    ASSERT_EQ(*s.acked(FrontendRequest::kSetVringEnable, VringState{index, 1}), 0u);
  }

  GuestRequest alloc(std::uint32_t type, std::uint64_t sector, std::uint32_t len) {
    GuestRequest r;
    r.len = len;
    r.hdr = *guest->alloc_ram(sizeof(OutHdr));
    if (len) r.data = *guest->alloc_ram(len);
    r.status = *guest->alloc_ram(1);
    OutHdr h{type, 0, sector};
    std::memcpy(r.hdr, &h, sizeof h);
    *r.status = std::byte{0xee};
    return r;
  }
  void add(std::size_t q, const GuestRequest& r, bool device_writes_data, std::uint64_t token) {
    std::vector<virtq::Segment> rd{{r.hdr, sizeof(OutHdr)}};
    std::vector<virtq::Segment> wr;
    if (r.len) (device_writes_data ? wr : rd).push_back({r.data, r.len});
    wr.push_back({r.status, 1});
    ASSERT_TRUE(drivers[q]->add_buffers(rd, wr, token));
  }
  void kick(std::size_t q) {
    if (drivers[q]->kick_prepare()) vhost::EventLoop::signal_eventfd(kicks[q].get());
  }
  // Waits for `n` used buffers on queue `q`; returns them.
  std::vector<virtq::UsedBuffer> wait_used(std::size_t q, std::size_t n) {
    std::vector<virtq::UsedBuffer> out;
    for (int spins = 0; spins < 3000 && out.size() < n; ++spins) {
      auto u = drivers[q]->get_used();
      EXPECT_TRUE(u) << u.error().message();
      if (!u) break;
      if (*u) {
        out.push_back(**u);
        continue;
      }
      pollfd p{calls[q].get(), POLLIN, 0};
      ::poll(&p, 1, 5);
      vhost::EventLoop::drain_eventfd(calls[q].get());
    }
    return out;
  }

  TempImage image{2 << 20};
  std::shared_ptr<const Disk> disk;
  std::string path;
  std::unique_ptr<vhost::BackendServer> server;
  std::thread thread;
  std::optional<vhost::Channel> ch;
  std::unique_ptr<dma::Guest> guest;
  std::unique_ptr<dma::DmaOps> ops;
  std::vector<std::unique_ptr<Driver>> drivers;
  std::vector<UniqueFd> kicks;
  std::vector<UniqueFd> calls;
};

TYPED_TEST_SUITE(VhostBlkTest, testing::RingFamilies);

TYPED_TEST(VhostBlkTest, WritesThenReadsRoundTripThroughTheImage) {
  this->negotiate();
  this->start_queue(0);
  this->start_queue(1);
  constexpr int kRequests = 24;
  constexpr std::uint32_t kLen = 8192;
  std::vector<GuestRequest> writes;
  for (int i = 0; i < kRequests; ++i) {
    writes.push_back(this->alloc(kTypeOut, i * 16, kLen));
    auto p = pattern(kLen, static_cast<std::uint8_t>(i));
    std::memcpy(writes.back().data, p.data(), kLen);
    this->add(0, writes.back(), false, 100 + i);
  }
  this->kick(0);
  auto used = this->wait_used(0, kRequests);
  ASSERT_EQ(used.size(), static_cast<std::size_t>(kRequests));
  for (const auto& u : used) EXPECT_EQ(u.len, 1u);
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(*writes[i].status, std::byte{kStatusOk});
    EXPECT_EQ(this->image.read(i * 16 * 512, kLen), pattern(kLen, static_cast<std::uint8_t>(i)));
  }
  // Read them back through the other queue.
  std::vector<GuestRequest> reads;
  for (int i = 0; i < kRequests; ++i) {
    reads.push_back(this->alloc(kTypeIn, i * 16, kLen));
    this->add(1, reads.back(), true, 200 + i);
  }
  this->kick(1);
  used = this->wait_used(1, kRequests);
  ASSERT_EQ(used.size(), static_cast<std::size_t>(kRequests));
  for (const auto& u : used) EXPECT_EQ(u.len, kLen + 1);
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(*reads[i].status, std::byte{kStatusOk});
    EXPECT_EQ(std::memcmp(reads[i].data, pattern(kLen, static_cast<std::uint8_t>(i)).data(), kLen),
              0);
  }
}

TYPED_TEST(VhostBlkTest, ConfigSpaceAndWriteCache) {
  this->negotiate();
  Scripted s{*this->ch};
  auto r = s.get(FrontendRequest::kGetConfig,
                 ConfigSpace{.offset = 0, .data = std::vector<std::uint8_t>(sizeof(Config))});
  ASSERT_TRUE(r) << r.error().message();
  const auto& bytes = std::get<ConfigSpace>(*r).data;
  ASSERT_EQ(bytes.size(), sizeof(Config));
  Config c;
  std::memcpy(&c, bytes.data(), sizeof c);
  EXPECT_EQ(c.capacity, 4096u);
  EXPECT_EQ(c.num_queues, 2);
  EXPECT_EQ(c.writeback, 1);
  EXPECT_EQ(c.max_discard_seg, 32u);
  // CONFIG_WCE was negotiated: the writeback byte is writable, nothing else is.
  ASSERT_EQ(*s.acked(FrontendRequest::kSetConfig,
                     ConfigSpace{.offset = offsetof(Config, writeback), .data = {0}}),
            0u);
  EXPECT_NE(*s.acked(FrontendRequest::kSetConfig, ConfigSpace{.offset = 0, .data = {1}}), 0u);
  r = s.get(FrontendRequest::kGetConfig,
            ConfigSpace{.offset = offsetof(Config, writeback), .data = {0xff}});
  ASSERT_TRUE(r);
  EXPECT_EQ(std::get<ConfigSpace>(*r).data[0], 0);
}

TYPED_TEST(VhostBlkTest, GetVringBaseReturnsOnlyWhenEveryRequestIsUsed) {
  this->negotiate();
  this->start_queue(0);
  constexpr int kRequests = 32;  // 96 descriptors in a ring of 256
  std::vector<GuestRequest> reqs;
  for (int i = 0; i < kRequests; ++i) {
    reqs.push_back(this->alloc(kTypeOut, i * 128, 64 << 10));
    this->add(0, reqs.back(), false, i);
  }
  this->kick(0);
  // One process() call pops every chain the kick made available: once the first is used,
  // all 32 are taken and most are still in flight. Stop the ring then: the back end may
  // answer only after the device completed every one of them.
  auto first = this->wait_used(0, 1);
  ASSERT_EQ(first.size(), 1u);
  Scripted s{*this->ch};
  auto base = s.get(FrontendRequest::kGetVringBase, VringState{0, 0});
  ASSERT_TRUE(base) << base.error().message();
  std::size_t used = first.size();
  while (true) {
    auto u = this->drivers[0]->get_used();
    ASSERT_TRUE(u);
    if (!*u) break;
    ++used;
  }
  const std::uint32_t num = std::get<VringState>(*base).num;
  const std::uint32_t consumed = TypeParam::kPacked ? (num & 0x7fff) / 3 : num;
  EXPECT_EQ(consumed, static_cast<std::uint32_t>(kRequests));
  EXPECT_EQ(used, static_cast<std::size_t>(kRequests))
      << "every chain the device took is used when GET_VRING_BASE returns";
  for (const auto& r : reqs) EXPECT_EQ(*r.status, std::byte{kStatusOk});
}

TYPED_TEST(VhostBlkTest, BadRequestsAreAnsweredAndTheRingKeepsServing) {
  this->negotiate();
  this->start_queue(0);
  auto past_end = this->alloc(kTypeIn, 4096, 512);
  this->add(0, past_end, true, 1);
  auto unknown = this->alloc(0x1234, 0, 0);
  this->add(0, unknown, false, 2);
  auto id = this->alloc(kTypeGetId, 0, 20);
  this->add(0, id, true, 3);
  this->kick(0);
  auto used = this->wait_used(0, 3);
  ASSERT_EQ(used.size(), 3u);
  EXPECT_EQ(*past_end.status, std::byte{kStatusIoErr});
  EXPECT_EQ(*unknown.status, std::byte{kStatusUnsupp});
  EXPECT_EQ(*id.status, std::byte{kStatusOk});
  EXPECT_EQ(std::memcmp(id.data, "vhost-blk", 9), 0);
}

}  // namespace
}  // namespace vdma::blk::test

// The block device behind the real vhost-user back end: a BackendServer serving
// VhostBlkDevices on a Unix socket, a scripted front end negotiating over it, driver
// queues (split and packed) in a Guest's memfd memory. Writes land in the image file,
// reads return them, GET_CONFIG shows the disk, and GET_VRING_BASE returns only once
// every request of the ring is used.
#include "vdma/devices/blk/vhost_blk_device.h"

#include "blk_frontend.h"
#include "blk_test_util.h"
#include "vdma/testing/ring_families.h"

namespace vdma::blk::test {
namespace {

template <class Ring>
class VhostBlkTest : public ::testing::Test, public BlkFrontEnd<Ring> {
 protected:
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
    this->ch.emplace(std::move(*c));
    this->make_guest();
  }
  void TearDown() override {
    this->drivers.clear();
    this->ch.reset();
    server->stop();
    thread.join();
  }

  TempImage image{2 << 20};
  std::shared_ptr<const Disk> disk;
  std::string path;
  std::unique_ptr<vhost::BackendServer> server;
  std::thread thread;
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

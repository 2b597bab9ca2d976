// A hostile front end against the back end, over a real socket: one named test per
// attack. Each attack must close (or nack) only that connection, with a log line saying
// why; the server keeps serving others; descriptors and mappings do not leak.
#include <fcntl.h>
#include <sys/socket.h>

#include <array>
#include <cstring>
#include <fstream>
#include <string>

#include "backend_test_util.h"
#include "vdma/base/log.h"
#include "vdma/virtq/split_layout.h"

namespace vdma::vhost::test {
namespace {

// Shared-memory mappings of this process (threads add stacks and malloc arenas, which
// are not what a leaking back end would leave behind).
int mapping_count() {
  std::ifstream maps("/proc/self/maps");
  int n = 0;
  for (std::string line; std::getline(maps, line);) n += line.find("/memfd:") != std::string::npos;
  return n;
}

// Writes raw bytes (and optionally fds) to the socket, bypassing the encoder's checks.
void send_raw(Channel& ch, const Header& h, std::span<const std::uint8_t> payload,
              std::span<const int> fds = {}) {
  std::vector<std::uint8_t> bytes(sizeof h + payload.size());
  std::memcpy(bytes.data(), &h, sizeof h);
  if (!payload.empty()) std::memcpy(bytes.data() + sizeof h, payload.data(), payload.size());
  iovec iov{bytes.data(), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::array<char, CMSG_SPACE(sizeof(int) * kMaxFds)> control{};
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ASSERT_EQ(::sendmsg(ch.fd(), &msg, MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
}

template <class T>
std::span<const std::uint8_t> bytes_of(const T& v) {
  return {reinterpret_cast<const std::uint8_t*>(&v), sizeof v};
}

class BackendHostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fds_before = open_fd_count();
    maps_before = mapping_count();
    server.emplace();
    ch.emplace(server->connect());
    bystander.emplace(server->connect());
  }
  void TearDown() override {
    // The other connection was never disturbed.
    auto f = Scripted{*bystander}.get_u64(FrontendRequest::kGetFeatures);
    EXPECT_TRUE(f) << "bystander connection lost";
    ch.reset();
    bystander.reset();
    server.reset();
    EXPECT_EQ(open_fd_count(), fds_before) << "descriptor leak";
    EXPECT_EQ(mapping_count(), maps_before) << "mapping leak";
  }
  Scripted s() { return Scripted{*ch}; }
  void own() {
    ASSERT_TRUE(s().send(FrontendRequest::kSetOwner));
    ASSERT_EQ(*s().acked(FrontendRequest::kSetProtocolFeatures,
                         U64{ProtocolFeatureSet{kProtocolFReplyAck, kProtocolFBackendReq,
                                                kProtocolFConfigureMemSlots}
                                 .bits()}),
              0u);
  }
  // Expects the back end to close the connection and to have logged `reason`.
  void expect_closed_because(const std::string& reason) {
    EXPECT_TRUE(closed_by_peer(*ch));
    ASSERT_TRUE(server->wait_served(1));
    EXPECT_TRUE(capture.contains(reason)) << "no log line containing \"" << reason << "\"";
  }

  ScopedLogCapture capture;
  int fds_before = 0;
  int maps_before = 0;
  std::optional<ServerUnderTest> server;
  std::optional<Channel> ch;
  std::optional<Channel> bystander;
};

TEST_F(BackendHostileTest, MalformedHeaderVersion) {
  send_raw(*ch, Header{to_wire(FrontendRequest::kGetFeatures), 0x2, 0}, {});
  expect_closed_because("malformed message");
}

TEST_F(BackendHostileTest, UnknownRequestNumber) {
  send_raw(*ch, Header{999, kVersion1, 0}, {});
  expect_closed_because("unknown request number");
}

TEST_F(BackendHostileTest, WrongPayloadSize) {
  const std::uint32_t four = 4;
  send_raw(*ch, Header{to_wire(FrontendRequest::kSetFeatures), kVersion1, 4}, bytes_of(four));
  expect_closed_because("payload size does not match");
}

TEST_F(BackendHostileTest, HugeSizeField) {
  send_raw(*ch, Header{to_wire(FrontendRequest::kSetFeatures), kVersion1, 0xffffffffu}, {});
  expect_closed_because("payload size above the limit");
}

TEST_F(BackendHostileTest, TruncatedMessageThenHangUp) {
  const std::uint32_t partial = 1;
  send_raw(*ch, Header{to_wire(FrontendRequest::kSetFeatures), kVersion1, 8}, bytes_of(partial));
  ::shutdown(ch->fd(), SHUT_WR);
  expect_closed_because("truncated");
}

TEST_F(BackendHostileTest, MemoryTableWithMissingFds) {
  own();
  const MemoryTableHeader h{1, 0};
  const MemoryRegion r{0, 1 << 20, 0x10000000, 0};
  std::vector<std::uint8_t> p(sizeof h + sizeof r);
  std::memcpy(p.data(), &h, sizeof h);
  std::memcpy(p.data() + sizeof h, &r, sizeof r);
  send_raw(*ch,
           Header{to_wire(FrontendRequest::kSetMemTable), kVersion1,
                  static_cast<std::uint32_t>(p.size())},
           p);
  expect_closed_because("wrong number of file descriptors");
}

TEST_F(BackendHostileTest, MemoryRegionFdIsNotMappable) {
  own();
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd rd(pipe_fds[0]), wr(pipe_fds[1]);
  MemoryTable t;
  t.regions.push_back({0, 1 << 20, 0x10000000, 0});
  t.fds.push_back(dup_fd(rd.get()));
  EXPECT_EQ(*s().acked(FrontendRequest::kSetMemTable, std::move(t)), 1u);
  EXPECT_TRUE(capture.contains("fd cannot be mapped"));
}

TEST_F(BackendHostileTest, MemoryRegionLongerThanItsFd) {
  own();
  UniqueFd small = make_memfd(4096);
  MemoryTable t;
  t.regions.push_back({0, 1 << 20, 0x10000000, 0});  // 1 MiB claimed, 4 KiB behind it
  t.fds.push_back(std::move(small));
  EXPECT_EQ(*s().acked(FrontendRequest::kSetMemTable, std::move(t)), 1u);
}

TEST_F(BackendHostileTest, OverlappingMemoryRegions) {
  own();
  const MemoryTableHeader h{2, 0};
  const std::array<MemoryRegion, 2> r{
      {{0, 1 << 20, 0x10000000, 0}, {0x80000, 1 << 20, 0x20000000, 0}}};
  std::vector<std::uint8_t> p(sizeof h + sizeof r);
  std::memcpy(p.data(), &h, sizeof h);
  std::memcpy(p.data() + sizeof h, r.data(), sizeof r);
  UniqueFd a = make_memfd(1 << 20), b = make_memfd(1 << 20);
  const std::array<int, 2> fds{a.get(), b.get()};
  send_raw(*ch,
           Header{to_wire(FrontendRequest::kSetMemTable), kVersion1,
                  static_cast<std::uint32_t>(p.size())},
           p, fds);
  expect_closed_because("overlap");
}

TEST_F(BackendHostileTest, RingOutsideMemoryDoesNotStartAndSignalsErr) {
  own();
  UniqueFd mem = make_memfd(1 << 20);
  MemoryTable t;
  t.regions.push_back({0, 1 << 20, 0x10000000, 0});
  t.fds.push_back(dup_fd(mem.get()));
  ASSERT_EQ(*s().acked(FrontendRequest::kSetFeatures,
                       U64{FeatureSet{kVirtioFVersion1, kVhostUserFProtocolFeatures}.bits()}),
            0u);
  ASSERT_EQ(*s().acked(FrontendRequest::kSetMemTable, std::move(t)), 0u);
  UniqueFd err = make_nb_eventfd(), kick = make_nb_eventfd();
  ASSERT_EQ(*s().acked(FrontendRequest::kSetVringNum, VringState{0, 64}), 0u);
  // The used ring lies past the end of the only region.
  ASSERT_EQ(*s().acked(FrontendRequest::kSetVringAddr,
                       VringAddr{0, 0, 0x10000000, 0x10000000 + (1 << 20), 0x10001000, 0}),
            0u);
  ASSERT_EQ(*s().acked(FrontendRequest::kSetVringErr, VringFd{0, dup_fd(err.get())}), 0u);
  ASSERT_EQ(*s().acked(FrontendRequest::kSetVringKick, VringFd{0, dup_fd(kick.get())}), 0u);
  ASSERT_EQ(*s().acked(FrontendRequest::kSetVringEnable, VringState{0, 1}), 0u);
  pollfd p{err.get(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 1000), 1) << "err eventfd not signalled";
  EXPECT_TRUE(capture.contains("outside the memory table"));
  EXPECT_TRUE(s().get_u64(FrontendRequest::kGetFeatures));  // still served
}

TEST_F(BackendHostileTest, DescriptorLoopBreaksOnlyThatQueue) {
  own();
  UniqueFd mem = make_memfd(1 << 20);
  void* host = ::mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, mem.get(), 0);
  ASSERT_NE(host, MAP_FAILED);
  const auto base = reinterpret_cast<std::uint64_t>(host);
  MemoryTable t;
  t.regions.push_back({0, 1 << 20, base, 0});
  t.fds.push_back(dup_fd(mem.get()));
  ASSERT_EQ(*s().acked(FrontendRequest::kSetFeatures,
                       U64{FeatureSet{kVirtioFVersion1, kVhostUserFProtocolFeatures}.bits()}),
            0u);
  ASSERT_EQ(*s().acked(FrontendRequest::kSetMemTable, std::move(t)), 0u);
  // Two descriptors pointing at each other, made available as one chain.
  auto* desc = static_cast<virtq::SplitDesc*>(host);
  desc[0] = {0x8000, 64, virtq::kDescFNext, 1};
  desc[1] = {0x9000, 64, virtq::kDescFNext, 0};
  auto* avail = reinterpret_cast<std::uint16_t*>(static_cast<std::byte*>(host) + 0x1000);
  avail[2] = 0;  // ring[0] = head 0
  avail[1] = 1;  // idx
  UniqueFd err = make_nb_eventfd(), kick = make_nb_eventfd();
  ASSERT_EQ(*s().acked(FrontendRequest::kSetVringNum, VringState{0, 8}), 0u);
  ASSERT_EQ(*s().acked(FrontendRequest::kSetVringAddr,
                       VringAddr{0, 0, base, base + 0x2000, base + 0x1000, 0}),
            0u);
  ASSERT_EQ(*s().acked(FrontendRequest::kSetVringErr, VringFd{0, dup_fd(err.get())}), 0u);
  ASSERT_EQ(*s().acked(FrontendRequest::kSetVringKick, VringFd{0, dup_fd(kick.get())}), 0u);
  ASSERT_EQ(*s().acked(FrontendRequest::kSetVringEnable, VringState{0, 1}), 0u);
  // The loop is rejected (returned with length 0), the queue keeps serving.
  auto* used = reinterpret_cast<virtq::SplitUsedHeader*>(static_cast<std::byte*>(host) + 0x2000);
  for (int i = 0; i < 100 && std::atomic_ref<std::uint16_t>(used->idx).load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(std::atomic_ref<std::uint16_t>(used->idx).load(), 1);
  EXPECT_TRUE(capture.contains("loop"));
  ch.reset();  // the back end unmaps before we do
  ASSERT_TRUE(server->wait_served(1));
  ::munmap(host, 1 << 20);
}

TEST_F(BackendHostileTest, IotlbRangeThatOverflows) {
  own();
  IotlbMsg bad{.iova = ~0ull - 0xfff,
               .size = 0x2000,
               .user_addr = 0x1000,
               .perm = IotlbPerm::kRead,
               .type = IotlbType::kUpdate};
  send_raw(*ch, Header{to_wire(FrontendRequest::kIotlbMsg), kVersion1, sizeof bad}, bytes_of(bad));
  expect_closed_because("IOTLB range empty or overflowing");
}

TEST_F(BackendHostileTest, MessagesBeforeSetOwner) {
  MemoryTable t;
  t.regions.push_back({0, 4096, 0x10000000, 0});
  t.fds.push_back(make_memfd(4096));
  ASSERT_TRUE(s().send(FrontendRequest::kSetMemTable, std::move(t)));
  expect_closed_because("request before SET_OWNER");
}

TEST_F(BackendHostileTest, RapidConnectDisconnect) {
  for (int i = 0; i < 50; ++i) {
    Channel c = server->connect();
    if (i % 2) (void)Scripted{c}.send(FrontendRequest::kSetOwner);
  }
  EXPECT_TRUE(server->wait_served(50));
}

}  // namespace
}  // namespace vdma::vhost::test

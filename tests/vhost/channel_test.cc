// The channel over real Unix sockets: whole messages with descriptors (real memfds that
// must map the same memory on the other side), a peer that misbehaves at the socket level
// (closes mid-message, sends too many descriptors or sends them with payload bytes, lies
// about the size), partial writes, and no descriptor leak on any path.
#include "vdma/vhost/channel.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <thread>

#include "test_util.h"

namespace vdma::vhost {
namespace {

using R = FrontendRequest;

// Writes raw bytes with `fds` attached (as a hostile or buggy peer would).
void send_raw(int sock, const void* data, std::size_t len, const std::vector<int>& fds = {}) {
  iovec iov{const_cast<void*>(data), len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<unsigned char> control(CMSG_SPACE(fds.size() * sizeof(int)));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
  }
  ASSERT_EQ(::sendmsg(sock, &msg, MSG_NOSIGNAL), static_cast<ssize_t>(len));
}

std::vector<int> raw_fds(const std::vector<UniqueFd>& fds) {
  std::vector<int> out;
  for (const UniqueFd& fd : fds) out.push_back(fd.get());
  return out;
}

class ChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fds_before_ = test::open_fd_count();
    auto pair = Channel::Pair();
    ASSERT_TRUE(pair) << pair.error().message();
    front_.emplace(std::move(pair->first));
    back_.emplace(std::move(pair->second));
  }
  void TearDown() override {
    front_.reset();
    back_.reset();
    EXPECT_EQ(test::open_fd_count(), fds_before_) << "a descriptor leaked";
  }
  Channel& front() { return *front_; }
  Channel& back() { return *back_; }
  // The front end's socket, to write raw bytes on.
  int front_fd() { return front_->fd(); }

  int fds_before_ = 0;
  std::optional<Channel> front_;
  std::optional<Channel> back_;
};

TEST_F(ChannelTest, HeaderOnlyMessage) {
  ASSERT_TRUE(front().send(encode(R::kGetFeatures)));
  auto m = back().receive();
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->header, (Header{1, kVersion1, 0}));
  EXPECT_TRUE(m->payload.empty());
  EXPECT_TRUE(m->fds.empty());
}

TEST_F(ChannelTest, EveryRequestAndReplyCrossesTheSocket) {
  for (R r : test::all_frontend_requests()) {
    SCOPED_TRACE(request_name(r));
    const Payload expected = test::sample_request(r);
    ASSERT_TRUE(front().send(encode(r, test::sample_request(r), NeedReply::kYes)));
    auto m = back().receive();
    ASSERT_TRUE(m) << m.error().message();
    auto d = decode_frontend_message(std::move(*m));
    ASSERT_TRUE(d) << d.error().message();
    EXPECT_TRUE(d->need_reply);
    EXPECT_TRUE(test::same_payload(d->payload, expected));

    const Payload expected_reply = test::sample_reply(r);
    ASSERT_TRUE(back().send(encode_reply(r, test::sample_reply(r))));
    auto reply = front().receive();
    ASSERT_TRUE(reply) << reply.error().message();
    auto dr = decode_reply(r, std::move(*reply));
    ASSERT_TRUE(dr) << dr.error().message();
    EXPECT_TRUE(test::same_payload(dr->payload, expected_reply));
  }
}

TEST_F(ChannelTest, EveryBackendRequestCrossesTheSocket) {
  for (BackendRequest r : test::all_backend_requests()) {
    SCOPED_TRACE(request_name(r));
    const Payload expected = test::sample_backend_request(r);
    ASSERT_TRUE(back().send(encode(r, test::sample_backend_request(r))));
    auto m = front().receive();
    ASSERT_TRUE(m);
    auto d = decode_backend_message(std::move(*m));
    ASSERT_TRUE(d) << d.error().message();
    EXPECT_TRUE(test::same_payload(d->payload, expected));
  }
}

// The device process maps guest RAM from the descriptors of SET_MEM_TABLE: what it maps
// must be the very memory the driver writes.
TEST_F(ChannelTest, MemfdsInMemTableMapTheSameMemory) {
  constexpr std::size_t kSize = 2 * 4096;
  const int with_sockets = test::open_fd_count();
  MemoryTable table;
  std::vector<void*> driver_maps;
  for (std::uint64_t i = 0; i < 2; ++i) {
    UniqueFd fd = test::make_memfd(kSize);
    ASSERT_TRUE(fd);
    void* p = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    ASSERT_NE(p, MAP_FAILED);
    std::memset(p, 0xa0 + static_cast<int>(i), kSize);
    driver_maps.push_back(p);
    table.regions.push_back(test::region(i * kSize, kSize));
    table.fds.push_back(std::move(fd));
  }
  ASSERT_TRUE(front().send(encode(R::kSetMemTable, std::move(table))));
  EXPECT_EQ(test::open_fd_count(), with_sockets);  // ours were sent, then closed

  auto m = back().receive();
  ASSERT_TRUE(m) << m.error().message();
  auto d = decode_frontend_message(std::move(*m));
  ASSERT_TRUE(d) << d.error().message();
  auto& got = std::get<MemoryTable>(d->payload);
  ASSERT_EQ(got.fds.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_NE(::fcntl(got.fds[i].get(), F_GETFD) & FD_CLOEXEC, 0);  // received close-on-exec
    auto* device = static_cast<std::uint8_t*>(::mmap(
        nullptr, got.regions[i].size, PROT_READ | PROT_WRITE, MAP_SHARED, got.fds[i].get(), 0));
    ASSERT_NE(device, MAP_FAILED);
    auto* driver = static_cast<std::uint8_t*>(driver_maps[i]);
    EXPECT_EQ(device[0], 0xa0 + i);
    EXPECT_EQ(device[kSize - 1], 0xa0 + i);
    // Writes on either side are seen on the other: one memory, not a copy.
    device[100] = 0x5a;
    driver[200] = 0xa5;
    EXPECT_EQ(driver[100], 0x5a);
    EXPECT_EQ(device[200], 0xa5);
    ::munmap(device, kSize);
    ::munmap(driver_maps[i], kSize);
  }
}

TEST_F(ChannelTest, EightFdsPass) {
  std::vector<MemoryRegion> regions;
  for (std::uint64_t i = 0; i < kMaxFds; ++i) regions.push_back(test::region(i << 20, 1 << 20));
  MemoryTable table{regions, test::make_fds(kMaxFds)};
  ASSERT_TRUE(front().send(encode(R::kSetMemTable, std::move(table))));
  auto m = back().receive();
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->fds.size(), kMaxFds);
  EXPECT_TRUE(decode_frontend_message(std::move(*m)));
}

TEST_F(ChannelTest, NineFdsAreRefusedAndClosed) {
  auto fds = test::make_fds(kMaxFds + 1);
  const Header h{to_wire(R::kSetLogFd), kVersion1, 0};
  send_raw(front_fd(), &h, sizeof(h), raw_fds(fds));
  fds.clear();
  EXPECT_EQ(back().receive().error(), Errc::kTooManyFds);
}

TEST_F(ChannelTest, SendRefusesMoreThanEightFds) {
  Message m = encode(R::kGetFeatures);
  m.fds = test::make_fds(kMaxFds + 1);
  EXPECT_EQ(front().send(m).error(), Errc::kTooManyFds);
}

TEST_F(ChannelTest, SendRefusesInconsistentSize) {
  Message m = encode(R::kSetFeatures, U64{1});
  m.header.size = 4;
  EXPECT_EQ(front().send(m).error(), Errc::kSizeMismatch);
}

TEST_F(ChannelTest, PeerClosedBetweenMessages) {
  ASSERT_TRUE(front().send(encode(R::kGetFeatures)));
  front_.reset();
  EXPECT_TRUE(back().receive());
  EXPECT_EQ(back().receive().error(), Errc::kPeerClosed);
}

TEST_F(ChannelTest, PeerClosedMidHeader) {
  const Header h{to_wire(R::kGetFeatures), kVersion1, 0};
  send_raw(front_fd(), &h, 7);
  front_.reset();
  EXPECT_EQ(back().receive().error(), Errc::kTruncated);
}

TEST_F(ChannelTest, PeerClosedMidPayloadWithFds) {
  auto fds = test::make_fds(2);
  const Header h{to_wire(R::kSetMemTable), kVersion1, 8 + 2 * 32};
  send_raw(front_fd(), &h, sizeof(h), raw_fds(fds));
  fds.clear();
  const std::array<std::uint8_t, 20> part{2};
  send_raw(front_fd(), part.data(), part.size());
  front_.reset();
  EXPECT_EQ(back().receive().error(), Errc::kTruncated);  // the two fds closed with it
}

TEST_F(ChannelTest, HugeSizeFieldIsRefusedBeforeReading) {
  auto fds = test::make_fds(1);
  const Header h{to_wire(R::kSetMemTable), kVersion1, 0x7fff'ffff};
  send_raw(front_fd(), &h, sizeof(h), raw_fds(fds));
  fds.clear();
  const std::uint64_t next = 0x1122334455667788;
  send_raw(front_fd(), &next, sizeof(next));
  EXPECT_EQ(back().receive().error(), Errc::kPayloadTooLarge);
  // Nothing beyond the header was consumed.
  std::uint64_t left = 0;
  ASSERT_EQ(::recv(back().fd(), &left, sizeof(left), MSG_DONTWAIT), 8);
  EXPECT_EQ(left, next);
}

TEST_F(ChannelTest, FdsWithPayloadBytesAreRefused) {
  const Header h{to_wire(R::kSetFeatures), kVersion1, 8};
  send_raw(front_fd(), &h, sizeof(h));
  auto fds = test::make_fds(1);
  const std::uint64_t features = 1;
  send_raw(front_fd(), &features, sizeof(features), raw_fds(fds));
  fds.clear();
  EXPECT_EQ(back().receive().error(), Errc::kMisplacedFds);
}

TEST_F(ChannelTest, HeaderArrivingByteByByte) {
  Message m = encode(R::kSetVringCall, VringFd{3, test::make_eventfd()});
  std::vector<std::uint8_t> wire(kHeaderSize);
  std::memcpy(wire.data(), &m.header, kHeaderSize);
  wire.insert(wire.end(), m.payload.begin(), m.payload.end());
  send_raw(front_fd(), wire.data(), 1, raw_fds(m.fds));
  m.fds.clear();
  for (std::size_t i = 1; i < wire.size(); ++i) send_raw(front_fd(), &wire[i], 1);
  auto got = back().receive();
  ASSERT_TRUE(got) << got.error().message();
  auto d = decode_frontend_message(std::move(*got));
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(std::get<VringFd>(d->payload).index, 3);
  EXPECT_TRUE(std::get<VringFd>(d->payload).fd);
}

TEST_F(ChannelTest, NonBlockingReceiveWithNothingPending) {
  ASSERT_EQ(::fcntl(back().fd(), F_SETFL, O_NONBLOCK), 0);
  const auto err = back().receive().error();
  EXPECT_EQ(err, std::error_code(EAGAIN, std::system_category()));
  EXPECT_TRUE(should_close_connection(err));  // callers poll first; see channel.h
  ASSERT_TRUE(front().send(encode(R::kGetFeatures)));
  EXPECT_TRUE(back().receive());
}

// A tiny send buffer on a non-blocking socket forces partial writes and EAGAIN; the
// receiver must still see every message whole and in order.
TEST_F(ChannelTest, PartialWritesDeliverWholeMessages) {
  const int small = 4096;
  ASSERT_EQ(::setsockopt(front_fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  ASSERT_EQ(::fcntl(front_fd(), F_SETFL, O_NONBLOCK), 0);
  constexpr int kMessages = 200;
  std::thread sender([&] {
    for (int i = 0; i < kMessages; ++i) {
      std::vector<std::uint8_t> bytes(kMaxPayloadSize, static_cast<std::uint8_t>(i));
      auto sent = front().send(encode(R::kCreateCryptoSession, Opaque{std::move(bytes)}));
      ASSERT_TRUE(sent) << sent.error().message();
    }
  });
  for (int i = 0; i < kMessages; ++i) {
    auto m = back().receive();
    ASSERT_TRUE(m) << m.error().message();
    ASSERT_EQ(m->payload.size(), kMaxPayloadSize);
    EXPECT_EQ(m->payload.front(), static_cast<std::uint8_t>(i));
    EXPECT_EQ(m->payload.back(), static_cast<std::uint8_t>(i));
  }
  sender.join();
}

// The back-end channel: the front end makes a socketpair and hands one end over with
// SET_BACKEND_REQ_FD; the back end then sends its own requests on it.
TEST_F(ChannelTest, BackendChannelHandover) {
  auto pair = Channel::Pair();
  ASSERT_TRUE(pair);
  auto& [frontend_side, handed_over] = *pair;
  ASSERT_TRUE(front().send(encode(R::kSetBackendReqFd, FdPayload{handed_over.take_socket()})));
  auto m = back().receive();
  ASSERT_TRUE(m);
  auto d = decode_frontend_message(std::move(*m));
  ASSERT_TRUE(d);
  Channel backend_side(std::move(std::get<FdPayload>(d->payload).fd));

  ASSERT_TRUE(
      backend_side.send(encode(BackendRequest::kConfigChangeMsg, NoPayload{}, NeedReply::kYes)));
  auto req = frontend_side.receive();
  ASSERT_TRUE(req);
  auto dreq = decode_backend_message(std::move(*req));
  ASSERT_TRUE(dreq);
  EXPECT_EQ(dreq->request, BackendRequest::kConfigChangeMsg);
  EXPECT_TRUE(dreq->need_reply);
  ASSERT_TRUE(frontend_side.send(encode_ack(BackendRequest::kConfigChangeMsg, 0)));
  auto ack = backend_side.receive();
  ASSERT_TRUE(ack);
  EXPECT_TRUE(decode_backend_reply(BackendRequest::kConfigChangeMsg, std::move(*ack)));
}

// ---- Listener and Connect. ----

class ListenerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fds_before_ = test::open_fd_count();
    char tmpl[] = "/tmp/vdma-vhost-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::filesystem::remove_all(dir_);
    EXPECT_EQ(test::open_fd_count(), fds_before_) << "a descriptor leaked";
  }
  std::string path() const { return dir_ + "/vhost.sock"; }

  int fds_before_ = 0;
  std::string dir_;
};

TEST_F(ListenerTest, ConnectAcceptAndTalk) {
  auto listener = Listener::Create(path());
  ASSERT_TRUE(listener) << listener.error().message();
  auto client = Channel::Connect(path());
  ASSERT_TRUE(client) << client.error().message();
  auto server = listener->accept();
  ASSERT_TRUE(server) << server.error().message();
  ASSERT_TRUE(client->send(encode(R::kSetOwner)));
  auto m = server->receive();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->header.request, to_wire(R::kSetOwner));
}

TEST_F(ListenerTest, SocketFileIsRemovedWithTheListener) {
  {
    auto listener = Listener::Create(path());
    ASSERT_TRUE(listener);
    EXPECT_TRUE(std::filesystem::exists(path()));
    Listener moved = std::move(*listener);
    EXPECT_EQ(moved.path(), path());
  }
  EXPECT_FALSE(std::filesystem::exists(path()));
  EXPECT_EQ(Channel::Connect(path()).error(), std::error_code(ENOENT, std::system_category()));
}

TEST_F(ListenerTest, ExistingPathIsNotTakenOver) {
  auto first = Listener::Create(path());
  ASSERT_TRUE(first);
  EXPECT_EQ(Listener::Create(path()).error(), std::error_code(EADDRINUSE, std::system_category()));
  EXPECT_TRUE(std::filesystem::exists(path()));  // the failed attempt did not unlink it
}

TEST_F(ListenerTest, PathTooLong) {
  const std::string long_path = dir_ + "/" + std::string(200, 'x');
  EXPECT_EQ(Listener::Create(long_path).error(),
            std::error_code(ENAMETOOLONG, std::system_category()));
  EXPECT_EQ(Channel::Connect(long_path).error(),
            std::error_code(ENAMETOOLONG, std::system_category()));
}

}  // namespace
}  // namespace vdma::vhost

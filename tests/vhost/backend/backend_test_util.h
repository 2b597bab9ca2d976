// Back-end test scaffolding: a BackendServer on a real Unix socket in a temp directory
// (run on its own thread), an echo device, and a scripted front end that speaks the
// codec and drives driver queues over a Guest's memfd regions.
#pragma once

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>
#include <utility>

#include "../test_util.h"
#include "vdma/dma/guest.h"
#include "vdma/testing/echo_device.h"
#include "vdma/testing/loopback.h"
#include "vdma/vhost/backend.h"
#include "vdma/vhost/channel.h"
#include "vdma/vhost/message.h"
#include "vdma/virtq/split_driver.h"

namespace vdma::vhost::test {

using testing::EchoDevice;

// A temp directory removed at the end.
struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/vdma-backend-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string path;
};

// A BackendServer serving EchoDevices on <tmp>/vhost.sock, run on a thread.
struct ServerUnderTest {
  explicit ServerUnderTest(BackendOptions opts = {}, std::uint16_t queues = 2) {
    path = dir.path + "/vhost.sock";
    auto s = BackendServer::Create(
        {.socket_path = path,
         .make_device = [queues] { return std::make_unique<EchoDevice>(queues); },
         .backend = opts});
    EXPECT_TRUE(s) << s.error().message();
    server = std::move(*s);
    thread = std::thread([this] { EXPECT_TRUE(server->run()); });
  }
  ~ServerUnderTest() {
    server->stop();
    thread.join();
  }
  Channel connect() {
    auto c = Channel::Connect(path);
    EXPECT_TRUE(c) << c.error().message();
    return std::move(*c);
  }
  // Waits until `n` connections have ended.
  bool wait_served(std::uint64_t n) {
    for (int i = 0; i < 500; ++i) {
      if (server->connections_served() >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  TempDir dir;
  std::string path;
  std::unique_ptr<BackendServer> server;
  std::thread thread;
};

inline UniqueFd dup_fd(int fd) {
  return UniqueFd(::dup(fd));
}

inline UniqueFd make_nb_eventfd() {
  return UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
}

// Requests with their replies, from the front end's side of a channel.
struct Scripted {
  Channel& ch;

  Result<void> send(FrontendRequest r, Payload p = NoPayload{}) {
    return ch.send(encode(r, std::move(p)));
  }
  // Sends with need_reply and returns the REPLY_ACK status.
  Result<std::uint64_t> acked(FrontendRequest r, Payload p = NoPayload{}) {
    VDMA_TRY(ch.send(encode(r, std::move(p), NeedReply::kYes)));
    auto reply = VDMA_TRY(decode_reply(r, VDMA_TRY(ch.receive())));
    return std::get<U64>(reply.payload).value;
  }
  // A request with a reply body (GET_*).
  Result<Payload> get(FrontendRequest r, Payload p = NoPayload{}) {
    VDMA_TRY(ch.send(encode(r, std::move(p))));
    auto reply = VDMA_TRY(decode_reply(r, VDMA_TRY(ch.receive())));
    return std::move(reply.payload);
  }
  Result<std::uint64_t> get_u64(FrontendRequest r) { return std::get<U64>(VDMA_TRY(get(r))).value; }
};

// True if the peer closed `ch` within `timeout_ms` (the back end dropped the connection).
inline bool closed_by_peer(Channel& ch, int timeout_ms = 2000) {
  pollfd p{ch.fd(), POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return false;
  auto m = ch.receive();
  return !m;
}

// The memory table a front end sends for `regions` (user address = this process's).
inline MemoryTable table_of(const std::vector<memory::GuestRegion>& regions) {
  MemoryTable t;
  for (const auto& r : regions) {
    t.regions.push_back({r.gpa.value(), r.size, reinterpret_cast<std::uint64_t>(r.host), 0});
    t.fds.push_back(dup_fd(*r.backing->shareable_fd()));
  }
  return t;
}

// This process's address of guest-physical `a` (what SET_VRING_ADDR carries without
// ACCESS_PLATFORM).
inline std::uint64_t user_address(const dma::Guest& guest, DmaAddr a) {
  auto span = guest.memory().translate(Gpa{a.value()}, 1);
  EXPECT_TRUE(span);
  return span ? reinterpret_cast<std::uint64_t>(span->data()) : 0;
}

// Starts vring `index` on the back end for a driver queue with addresses `a` (guest
// physical): SET_VRING_NUM / BASE / ADDR / CALL / KICK / ENABLE, each acked. Returns the
// first failure, or true.
inline ::testing::AssertionResult start_vring(Channel& ch, const dma::Guest& guest,
                                              std::uint32_t index, std::uint32_t size, bool packed,
                                              const virtq::RingAddresses& a, int call_fd,
                                              int kick_fd) {
  Scripted s{ch};
  auto acked = [&](FrontendRequest r, Payload p) -> ::testing::AssertionResult {
    auto status = s.acked(r, std::move(p));
    if (!status)
      return ::testing::AssertionFailure() << request_name(r) << ": " << status.error().message();
    if (*status != 0) return ::testing::AssertionFailure() << request_name(r) << " nacked";
    return ::testing::AssertionSuccess();
  };
  const auto i8 = static_cast<std::uint8_t>(index);
  if (auto r = acked(FrontendRequest::kSetVringNum, VringState{index, size}); !r) return r;
  const std::uint32_t base = packed ? 0x8000u : 0u;  // packed: wrap counter 1, position 0
  if (auto r = acked(FrontendRequest::kSetVringBase, VringState{index, base}); !r) return r;
  if (auto r = acked(FrontendRequest::kSetVringAddr,
                     VringAddr{index, 0, user_address(guest, a.desc), user_address(guest, a.device),
                               user_address(guest, a.driver), 0});
      !r) {
    return r;
  }
  if (auto r = acked(FrontendRequest::kSetVringCall, VringFd{i8, dup_fd(call_fd)}); !r) return r;
  if (auto r = acked(FrontendRequest::kSetVringKick, VringFd{i8, dup_fd(kick_fd)}); !r) return r;
  return acked(FrontendRequest::kSetVringEnable, VringState{index, 1});
}

}  // namespace vdma::vhost::test

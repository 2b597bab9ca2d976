// A small hand-written vhost-user back end for the front-end tests: a thread with a
// Listener that speaks the protocol through the codec, answers every request plausibly
// (features, protocol features, queue count, config space, acks) without processing
// rings, and records what it was sent: every request, every file descriptor (fstat: device,
// inode, size), the memory regions, ring addresses and IOTLB messages. It can be told to
// answer one request with garbage, and it can send requests on the back-end channel.
//
//   FakeBackend be(dir + "/fake.sock", {.features = ...});
//   auto fe = Frontend::Connect({.socket_path = be.path(), ...});
//   for (const auto& fd : be.fds()) EXPECT_NE(fd.ino, ram_inode);
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "vdma/vhost/channel.h"
#include "vdma/vhost/message.h"

namespace vdma::vhost::test {

// How the fake answers the request named in FakeOptions::garbage_on.
enum class Garbage {
  kNone,
  kWrongRequest,    // a well-formed reply to another request
  kShortPayload,    // the right request, a payload 4 bytes short
  kNoReplyFlag,     // the reply flag missing
  kHugeSize,        // a header announcing 1 MiB of payload
  kBadVersion,      // version bits 0x2
  kUnexpectedFd,    // a descriptor with the reply
  kSilence,         // no reply at all
  kPartialHeader,   // 6 bytes of the header, then nothing
  kPartialPayload,  // the header and 4 of its 8 payload bytes, then nothing
  kClose,           // close the connection instead of replying
  kNack,            // a non-zero REPLY_ACK (requests acked only)
  kConfigMismatch,  // GET_CONFIG: a config reply for another offset
};

struct FakeOptions {
  FeatureSet features{kVirtioFVersion1, kVirtioFAccessPlatform, kVhostUserFProtocolFeatures,
                      kVirtioFRingIndirectDesc, kVirtioFRingEventIdx};
  ProtocolFeatureSet protocol{kProtocolFMq,     kProtocolFReplyAck,    kProtocolFBackendReq,
                              kProtocolFConfig, kProtocolFResetDevice, kProtocolFStatus};
  std::uint64_t queue_num = 4;
  std::uint64_t max_mem_slots = 8;
  std::uint32_t max_queue_size = 1024;  // SET_VRING_NUM above this is nacked
  std::optional<FrontendRequest> garbage_on;
  Garbage garbage = Garbage::kNone;
};

struct ReceivedFd {
  FrontendRequest request;
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
};

class FakeBackend {
 public:
  FakeBackend(std::string path, FakeOptions o) : opts_(std::move(o)) {
    auto l = Listener::Create(path);
    if (!l) return;
    listener_.emplace(std::move(*l));
    thread_ = std::thread([this] { run(); });
  }
  ~FakeBackend() { stop(); }
  FakeBackend(const FakeBackend&) = delete;
  FakeBackend& operator=(const FakeBackend&) = delete;

  bool ok() const { return listener_.has_value(); }
  std::string path() const { return listener_ ? listener_->path() : std::string{}; }

  // Stops serving: closes the connection (the front end sees a hang-up) and the listener.
  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    listener_.reset();
  }

  std::vector<FrontendRequest> requests() const { return locked(requests_); }
  std::vector<ReceivedFd> fds() const { return locked(fds_); }
  std::vector<MemoryRegion> regions() const { return locked(regions_); }
  std::vector<VringAddr> vring_addrs() const { return locked(addrs_); }
  std::vector<VringState> vring_bases() const { return locked(bases_); }
  std::vector<IotlbMsg> iotlb() const { return locked(iotlb_); }
  bool saw_eof() const { return eof_.load(); }
  bool connected() const { return connected_.load(); }
  std::size_t count(FrontendRequest r) const {
    std::lock_guard l(mu_);
    std::size_t n = 0;
    for (auto x : requests_) n += x == r;
    return n;
  }

  // Waits until pred() holds (polling), at most `timeout`.
  bool wait_until(const std::function<bool()>& pred,
                  std::chrono::milliseconds timeout = std::chrono::seconds(5)) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }

  // Sends a back-end request with need_reply and returns the front end's ack (from the
  // test thread; the fake's thread keeps serving the main socket meanwhile).
  Result<std::uint64_t> backend_request(BackendRequest r, Payload p) {
    Channel* ch = nullptr;
    {
      std::lock_guard l(mu_);
      if (backend_) ch = &*backend_;
    }
    if (ch == nullptr) return Err(Errc::kPeerClosed);
    VDMA_TRY(ch->send(encode(r, std::move(p), NeedReply::kYes)));
    pollfd pfd{ch->fd(), POLLIN, 0};
    if (::poll(&pfd, 1, 5000) != 1) return Err(std::make_error_code(std::errc::timed_out));
    auto reply = VDMA_TRY(decode_backend_reply(r, VDMA_TRY(ch->receive())));
    return std::get<U64>(reply.payload).value;
  }
  // Raw bytes on the back-end channel (hostile-input tests).
  bool backend_raw(const void* bytes, std::size_t n) {
    std::lock_guard l(mu_);
    return backend_ && ::send(backend_->fd(), bytes, n, MSG_NOSIGNAL) == static_cast<ssize_t>(n);
  }

 private:
  template <class T>
  T locked(const T& v) const {
    std::lock_guard l(mu_);
    return v;
  }

  void run() {
    std::optional<Channel> conn;
    while (!stop_.load()) {
      pollfd p{conn ? conn->fd() : listener_->fd(), POLLIN, 0};
      if (::poll(&p, 1, 10) <= 0) continue;
      if (!conn) {
        auto c = listener_->accept();
        if (c) conn.emplace(std::move(*c));
        connected_.store(true);
        continue;
      }
      if (!serve(*conn)) {
        eof_.store(true);
        connected_.store(false);
        conn.reset();
        std::lock_guard l(mu_);
        backend_.reset();
      }
    }
    // Hang up on the front end, as a dying back end does.
    connected_.store(false);
  }

  void record_fds(FrontendRequest r, const std::vector<UniqueFd>& fds) {
    std::lock_guard l(mu_);
    for (const auto& fd : fds) {
      struct stat st {};
      ::fstat(fd.get(), &st);
      fds_.push_back({r, st.st_dev, st.st_ino, st.st_size});
    }
  }

  // One request; false when the connection is over.
  bool serve(Channel& c) {
    auto raw = c.receive();
    if (!raw) return false;
    const auto known = frontend_request_from_wire(raw->header.request);
    if (known) record_fds(*known, raw->fds);
    auto m = decode_frontend_message(std::move(*raw));
    if (!m) return false;  // this fake does not tolerate malformed requests
    {
      std::lock_guard l(mu_);
      requests_.push_back(m->request);
    }
    if (opts_.garbage_on == m->request && opts_.garbage != Garbage::kNone) {
      return send_garbage(c, *m);
    }
    std::optional<Payload> reply = answer(*m);
    if (reply) return static_cast<bool>(c.send(encode_reply(m->request, std::move(*reply))));
    return true;
  }

  // The reply body, or the ack when need_reply; nullopt when nothing is sent.
  std::optional<Payload> answer(DecodedMessage& m) {
    using R = FrontendRequest;
    std::uint64_t status = 0;
    std::lock_guard l(mu_);
    switch (m.request) {
      case R::kGetFeatures:
        return U64{opts_.features.bits()};
      case R::kGetProtocolFeatures:
        return U64{opts_.protocol.bits()};
      case R::kGetQueueNum:
        return U64{opts_.queue_num};
      case R::kGetMaxMemSlots:
        return U64{opts_.max_mem_slots};
      case R::kGetStatus:
        return U64{status_};
      case R::kGetVringBase: {
        const auto s = std::get<VringState>(m.payload);
        return VringState{s.index, 0};
      }
      case R::kGetConfig: {
        auto& cs = std::get<ConfigSpace>(m.payload);
        for (std::size_t i = 0; i < cs.data.size(); ++i) {
          cs.data[i] = static_cast<std::uint8_t>(cs.offset + i);
        }
        return std::move(cs);
      }
      case R::kIotlbMsg:
        iotlb_.push_back(std::get<IotlbMsg>(m.payload));
        return U64{0};
      case R::kSetStatus:
        status_ = std::get<U64>(m.payload).value;
        break;
      case R::kSetMemTable: {
        const auto& t = std::get<MemoryTable>(m.payload);
        regions_.insert(regions_.end(), t.regions.begin(), t.regions.end());
        break;
      }
      case R::kAddMemReg:
        regions_.push_back(std::get<MemoryRegionFd>(m.payload).region);
        break;
      case R::kSetVringNum:
        if (std::get<VringState>(m.payload).num > opts_.max_queue_size) status = 1;
        break;
      case R::kSetVringBase:
        bases_.push_back(std::get<VringState>(m.payload));
        break;
      case R::kSetVringAddr:
        addrs_.push_back(std::get<VringAddr>(m.payload));
        break;
      case R::kSetBackendReqFd:
        backend_.emplace(std::move(std::get<FdPayload>(m.payload).fd));
        break;
      default:
        break;
    }
    if (m.need_reply) return U64{status};
    return std::nullopt;
  }

  bool send_raw(Channel& c, const Header& h, std::span<const std::uint8_t> payload) {
    std::vector<std::uint8_t> bytes(sizeof(Header) + payload.size());
    std::memcpy(bytes.data(), &h, sizeof(Header));
    std::memcpy(bytes.data() + sizeof(Header), payload.data(), payload.size());
    return ::send(c.fd(), bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }

  bool send_garbage(Channel& c, const DecodedMessage& m) {
    const std::uint32_t req = to_wire(m.request);
    const std::uint64_t zero = 0;
    std::span<const std::uint8_t> u64{reinterpret_cast<const std::uint8_t*>(&zero), 8};
    switch (opts_.garbage) {
      case Garbage::kWrongRequest:
        return send_raw(c, {req == 1 ? 15u : 1u, kVersion1 | kFlagReply, 8}, u64);
      case Garbage::kShortPayload:
        return send_raw(c, {req, kVersion1 | kFlagReply, 4}, u64.first(4));
      case Garbage::kNoReplyFlag:
        return send_raw(c, {req, kVersion1, 8}, u64);
      case Garbage::kHugeSize:
        return send_raw(c, {req, kVersion1 | kFlagReply, 1u << 20}, u64);
      case Garbage::kBadVersion:
        return send_raw(c, {req, 0x2 | kFlagReply, 8}, u64);
      case Garbage::kUnexpectedFd: {
        Message reply = encode_reply(m.request, U64{0});
        int fds[2];
        if (::pipe(fds) != 0) return false;
        reply.fds.emplace_back(fds[0]);
        UniqueFd w(fds[1]);
        return static_cast<bool>(c.send(reply));
      }
      case Garbage::kSilence:
        return true;
      case Garbage::kPartialHeader: {
        const Header h{req, kVersion1 | kFlagReply, 8};
        return ::send(c.fd(), &h, 6, MSG_NOSIGNAL) == 6;
      }
      case Garbage::kPartialPayload:
        return send_raw(c, {req, kVersion1 | kFlagReply, 8}, u64.first(4));
      case Garbage::kClose:
        return false;
      case Garbage::kNack:
        return static_cast<bool>(c.send(encode_ack(m.request, 1)));
      case Garbage::kConfigMismatch: {
        const auto& cs = std::get<ConfigSpace>(m.payload);
        return static_cast<bool>(c.send(encode_reply(
            m.request,
            ConfigSpace{cs.offset + 1, cs.flags, std::vector<std::uint8_t>(cs.data.size())})));
      }
      case Garbage::kNone:
        break;
    }
    return false;
  }

  FakeOptions opts_;
  std::optional<Listener> listener_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> eof_{false};
  std::atomic<bool> connected_{false};
  mutable std::mutex mu_;
  std::vector<FrontendRequest> requests_;
  std::vector<ReceivedFd> fds_;
  std::vector<MemoryRegion> regions_;
  std::vector<VringAddr> addrs_;
  std::vector<VringState> bases_;
  std::vector<IotlbMsg> iotlb_;
  std::optional<Channel> backend_;
  std::uint64_t status_ = 0;
};

}  // namespace vdma::vhost::test

#include "vdma/vhost/frontend_channel.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "vdma/base/log.h"
#include "vdma/vhost/frontend_errors.h"

namespace vdma::vhost {
namespace {

constexpr std::string_view kLog = "vhost-frontend";

bool is_refusal(std::error_code ec) {
  return ec == FrontendErrc::kRequestRefused;
}

}  // namespace

MessageReadiness peek_message(int fd) {
  Header h;
  const ssize_t n = ::recv(fd, &h, sizeof(h), MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return MessageReadiness::kReady;  // end of stream
  if (n < 0) {
    return errno == EAGAIN || errno == EWOULDBLOCK ? MessageReadiness::kNothing
                                                   : MessageReadiness::kReady;  // the error
  }
  if (static_cast<std::size_t>(n) < sizeof(h)) return MessageReadiness::kPartial;
  if (h.size > kMaxPayloadSize) return MessageReadiness::kReady;
  int queued = 0;  // SIOCINQ: every byte queued on a Unix stream socket
  if (::ioctl(fd, FIONREAD, &queued) != 0) return MessageReadiness::kReady;
  return static_cast<std::size_t>(queued) >= sizeof(h) + h.size ? MessageReadiness::kReady
                                                                : MessageReadiness::kPartial;
}

Result<void> check_ack(FrontendRequest r, std::uint64_t status) {
  if (status == 0) return Ok();
  log_error(kLog, "back end refused {} (status {:#x})", request_name(r), status);
  return Err(FrontendErrc::kRequestRefused);
}

FrontendChannel::FrontendChannel(Channel channel, std::chrono::milliseconds reply_timeout)
    : channel_(std::move(channel)), fd_(channel_.fd()), reply_timeout_(reply_timeout) {}

Result<void> FrontendChannel::request(FrontendRequest r, Payload payload) {
  const Reply reply = reply_ack() ? Reply::kAck : Reply::kNone;
  VDMA_TRY(transact(r, std::move(payload), reply));
  return Ok();
}

Result<void> FrontendChannel::request_acked(FrontendRequest r, Payload payload) {
  VDMA_TRY(transact(r, std::move(payload), Reply::kAck));
  return Ok();
}

Result<Payload> FrontendChannel::call(FrontendRequest r, Payload payload) {
  return transact(r, std::move(payload), Reply::kBody);
}

Result<std::uint64_t> FrontendChannel::call_u64(FrontendRequest r) {
  Payload p = VDMA_TRY(call(r));
  // The codec's reply shape for every u64 request is U64; anything else is a bug here.
  const U64* v = std::get_if<U64>(&p);
  VDMA_CHECK_MSG(v != nullptr, "call_u64 on a request without a u64 reply");
  return v->value;
}

void FrontendChannel::close() {
  if (closed_.exchange(true, std::memory_order_acq_rel)) return;
  // Wakes a thread polling the socket (POLLHUP) and makes the back end see EOF. The
  // descriptor itself stays open until destruction.
  ::shutdown(fd_, SHUT_RDWR);
}

Result<Payload> FrontendChannel::transact(FrontendRequest r, Payload payload, Reply reply) {
  std::lock_guard lock(mu_);
  if (closed()) return Err(FrontendErrc::kDisconnected);
  const NeedReply need = reply == Reply::kAck ? NeedReply::kYes : NeedReply::kNo;
  if (auto sent = channel_.send(encode(r, std::move(payload), need)); !sent) {
    return fail(r, sent.error());
  }
  if (reply == Reply::kNone) return Payload{NoPayload{}};
  if (auto ready = wait_readable(); !ready) return fail(r, ready.error());
  auto raw = channel_.receive();
  if (!raw) return fail(r, raw.error());
  auto decoded = decode_reply(r, std::move(*raw));
  if (!decoded) return fail(r, decoded.error());
  if (reply == Reply::kAck) {
    // Requests without a reply body are answered with a u64 status (the codec's shape).
    const U64* status = std::get_if<U64>(&decoded->payload);
    VDMA_CHECK(status != nullptr);
    if (auto ok = check_ack(r, status->value); !ok) return fail(r, ok.error());
  }
  return std::move(decoded->payload);
}

Result<void> FrontendChannel::wait_readable() {
  // The whole reply must arrive within the timeout: a back end that sends half a message
  // and stalls must not hang us in receive(), which waits for the rest without a limit.
  const auto deadline = std::chrono::steady_clock::now() + reply_timeout_;
  while (true) {
    const MessageReadiness m = peek_message(fd_);
    if (m == MessageReadiness::kReady) return Ok();
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Err(FrontendErrc::kReplyTimeout);
    if (m == MessageReadiness::kPartial) {
      // Readable already; wait for the rest in small steps, unless the peer hung up (then
      // receive() reports the truncated message).
      pollfd hup{fd_, POLLRDHUP, 0};
      if (::poll(&hup, 1, 0) > 0) return Ok();
      std::this_thread::sleep_for(std::min(left, std::chrono::milliseconds(1)));
      continue;
    }
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) {
      return Err(std::error_code(errno, std::system_category()));
    }
  }
}

Unexpected FrontendChannel::fail(FrontendRequest r, std::error_code ec) {
  if (is_refusal(ec)) return Unexpected{ec};
  log_error(kLog, "{} failed: {}; closing the connection", request_name(r), ec.message());
  close();
  return Unexpected{ec};
}

}  // namespace vdma::vhost

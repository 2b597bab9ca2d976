#include "vdma/vhost/frontend_channel.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>

#include "vdma/base/log.h"
#include "vdma/vhost/frontend_errors.h"

namespace vdma::vhost {
namespace {

constexpr std::string_view kLog = "vhost-frontend";

bool is_refusal(std::error_code ec) {
  return ec == FrontendErrc::kRequestRefused;
}

}  // namespace

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
  pollfd p{fd_, POLLIN, 0};
  const auto deadline = std::chrono::steady_clock::now() + reply_timeout_;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    const int n = ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
    if (n > 0) return Ok();  // readable, or hung up: receive() tells which
    if (n == 0) return Err(FrontendErrc::kReplyTimeout);
    if (errno != EINTR) return Err(std::error_code(errno, std::system_category()));
  }
}

Unexpected FrontendChannel::fail(FrontendRequest r, std::error_code ec) {
  if (is_refusal(ec)) return Unexpected{ec};
  log_error(kLog, "{} failed: {}; closing the connection", request_name(r), ec.message());
  close();
  return Unexpected{ec};
}

}  // namespace vdma::vhost

// FrontendChannel: the front end's side of the main vhost-user socket, one request and its
// reply at a time, from any thread.
//
// Each call is one transaction under a mutex: the request goes out, and when it expects an
// answer (an explicit reply body, or a REPLY_ACK once that protocol feature is on), the
// reply is awaited with a timeout and validated by the codec (wrong request, wrong size,
// missing reply flag, stray descriptors: all errors). A non-zero ack is kRequestRefused and
// leaves the channel usable; every other failure closes it (the stream may be out of step,
// or the back end is gone), and from then on every call fails with kDisconnected. Closing
// shuts the socket down but keeps the descriptor until destruction, so another thread
// polling it sees the hang-up rather than a recycled descriptor.
//
//   FrontendChannel ch(VDMA_TRY(Channel::Connect(path)), 5s);
//   FeatureSet offered = FeatureSet::FromBits(VDMA_TRY(ch.call_u64(kGetFeatures)));
//   ch.set_reply_ack(true);
//   VDMA_TRY(ch.request(FrontendRequest::kSetVringNum, VringState{0, 256}));
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>

#include "vdma/base/result.h"
#include "vdma/vhost/channel.h"
#include "vdma/vhost/message.h"

namespace vdma::vhost {

class FrontendChannel {
 public:
  FrontendChannel(Channel channel, std::chrono::milliseconds reply_timeout);
  FrontendChannel(const FrontendChannel&) = delete;
  FrontendChannel& operator=(const FrontendChannel&) = delete;

  // From now on, requests without a reply body carry need_reply and their ack is checked.
  void set_reply_ack(bool on) { reply_ack_.store(on, std::memory_order_relaxed); }
  bool reply_ack() const { return reply_ack_.load(std::memory_order_relaxed); }

  // A request without a reply body (SET_*): acked when REPLY_ACK is on. Errors:
  // kRequestRefused (non-zero ack), kDisconnected, kReplyTimeout, codec errors.
  Result<void> request(FrontendRequest r, Payload payload = NoPayload{});
  // A request that always gets a u64 reply that is a status (IOTLB_MSG): need_reply set,
  // non-zero is kRequestRefused.
  Result<void> request_acked(FrontendRequest r, Payload payload);
  // A request with a reply body; returns the decoded payload (its kind is the codec's
  // reply shape for `r`).
  Result<Payload> call(FrontendRequest r, Payload payload = NoPayload{});
  // call() for the u64 replies (GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, ...).
  Result<std::uint64_t> call_u64(FrontendRequest r);

  // Shuts the socket down (idempotent, any thread). Later calls fail with kDisconnected.
  void close();
  bool closed() const { return closed_.load(std::memory_order_acquire); }
  // The socket, for polling hang-ups (POLLRDHUP); never read or write it directly.
  int fd() const { return fd_; }

 private:
  enum class Reply { kNone, kAck, kBody };
  Result<Payload> transact(FrontendRequest r, Payload payload, Reply reply);
  Result<void> wait_readable();
  // Closes the channel unless `ec` is a clean refusal; returns ec.
  Unexpected fail(FrontendRequest r, std::error_code ec);

  std::mutex mu_;
  Channel channel_;  // guarded by mu_
  const int fd_;
  const std::chrono::milliseconds reply_timeout_;
  std::atomic<bool> reply_ack_{false};
  std::atomic<bool> closed_{false};
};

// Whether a whole message waits on a stream socket, without consuming anything (peeks the
// header for its size). kReady also covers a header whose size is above the limit (the
// channel refuses it without reading on) and an end of stream (receive() reports it).
// Lets a reader bound the time it waits for the rest of a message a peer started:
// Channel::receive() itself waits for the rest without a limit.
enum class MessageReadiness { kNothing, kPartial, kReady };
MessageReadiness peek_message(int fd);

// Refusal of an ack or status value (non-zero) for `r`, logged with the request's name.
Result<void> check_ack(FrontendRequest r, std::uint64_t status);

}  // namespace vdma::vhost

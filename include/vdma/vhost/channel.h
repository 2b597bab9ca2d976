// Channel: one end of a vhost-user connection, an AF_UNIX SOCK_STREAM socket that moves
// whole Messages, file descriptors included (SCM_RIGHTS).
//
// receive() frames exactly one message: the 12-byte header (descriptors arrive with its
// first byte; at most kMaxFds, more is kTooManyFds), a size check against
// kMaxPayloadSize before any payload byte is read, then exactly `size` payload bytes. It
// does not interpret the message: decode it with message.h. Every descriptor received is
// owned from the moment it arrives, so each error path closes it. Descriptors are received
// close-on-exec.
//
// On a blocking socket both calls block until the whole message has moved. On a
// non-blocking socket receive() returns EAGAIN (system category) when no message has
// started, and otherwise waits (poll) for the rest of the message; send() waits for room.
//
//   auto [front, back] = VDMA_TRY(Channel::Pair());
//   VDMA_TRY(front.send(encode(FrontendRequest::kGetFeatures)));
//   Message m = VDMA_TRY(back.receive());
//
//   Listener listener = VDMA_TRY(Listener::Create("/run/vdma/blk.sock"));
//   Channel conn = VDMA_TRY(listener.accept());
#pragma once

#include <string>
#include <utility>

#include "vdma/base/result.h"
#include "vdma/memory/unique_fd.h"
#include "vdma/vhost/message.h"

namespace vdma::vhost {

class Channel {
 public:
  // Takes a connected AF_UNIX SOCK_STREAM socket.
  explicit Channel(UniqueFd socket) : socket_(std::move(socket)) {}

  // Two connected channels (socketpair): tests, and the back-end channel a front end
  // hands over with SET_BACKEND_REQ_FD (send take_socket() of one end).
  static Result<std::pair<Channel, Channel>> Pair();
  // Connects to a listening vhost-user socket at `path`.
  static Result<Channel> Connect(const std::string& path);

  // Sends header, payload and descriptors; retries on EINTR and partial writes. Refuses
  // a message that is not well formed (payload size != header.size: kSizeMismatch; more
  // than kMaxFds: kTooManyFds; above kMaxPayloadSize: kPayloadTooLarge).
  Result<void> send(const Message& m);

  // The next whole message. Errors: kPeerClosed (EOF between messages), kTruncated (EOF
  // inside one), kPayloadTooLarge (payload left unread), kTooManyFds, kMisplacedFds
  // (descriptors with payload bytes), or the errno of a failed recvmsg.
  Result<Message> receive();

  int fd() const { return socket_.get(); }
  // Gives up the socket (the channel is empty afterwards).
  UniqueFd take_socket() { return std::move(socket_); }

 private:
  UniqueFd socket_;
};

// A listening vhost-user socket (the server side of the Unix socket; the front end or the
// back end may be either side). The socket file is removed on destruction.
class Listener {
 public:
  // Binds and listens at `path`; fails (EADDRINUSE) if the path exists.
  static Result<Listener> Create(const std::string& path);

  Listener(Listener&& o) noexcept;
  Listener& operator=(Listener&& o) noexcept;
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener();

  // Waits for and returns the next connection.
  Result<Channel> accept();

  int fd() const { return socket_.get(); }
  const std::string& path() const { return path_; }

 private:
  Listener(UniqueFd socket, std::string path)
      : socket_(std::move(socket)), path_(std::move(path)) {}
  void remove_path();

  UniqueFd socket_;
  std::string path_;
};

}  // namespace vdma::vhost

#include "vdma/vhost/channel.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <span>

namespace vdma::vhost {
namespace {

using Fds = std::vector<UniqueFd>;

// Room for exactly kMaxFds descriptors: a peer sending more gets MSG_CTRUNC (the kernel
// closes what does not fit; we close what did).
constexpr std::size_t kControlSize = CMSG_SPACE(kMaxFds * sizeof(int));

std::error_code last_error() {
  return {errno, std::system_category()};
}

bool would_block(int err) {
  return err == EAGAIN || err == EWOULDBLOCK;
}

// Waits until `fd` is ready for `events` (a non-blocking socket in the middle of a message).
Result<void> wait_for(int fd, short events) {
  pollfd p{fd, events, 0};
  while (::poll(&p, 1, -1) < 0) {
    if (errno != EINTR) return Err(last_error());
  }
  return Ok();
}

// Takes ownership of every descriptor in the control data, first thing after recvmsg.
Fds collect_fds(msghdr& msg) {
  Fds fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    if (c->cmsg_len < CMSG_LEN(0)) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds.emplace_back(fd);
    }
  }
  return fds;
}

// Reads exactly buf.size() bytes. Descriptors are accepted only when `fds` is given (the
// header); `at_boundary` says no byte of this message has been read before this call.
Result<void> read_fully(int sock, std::span<std::uint8_t> buf, Fds* fds, bool at_boundary) {
  std::size_t got = 0;
  while (got < buf.size()) {
    alignas(cmsghdr) std::array<unsigned char, kControlSize> control{};
    iovec iov{buf.data() + got, buf.size() - got};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    const ssize_t n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (!would_block(errno)) return Err(last_error());
      if (at_boundary && got == 0) return Err(last_error());  // nothing consumed: retry later
      VDMA_TRY(wait_for(sock, POLLIN));
      continue;
    }
    Fds arrived = collect_fds(msg);  // closed on every return below unless kept
    if ((msg.msg_flags & MSG_CTRUNC) != 0) return Err(Errc::kTooManyFds);
    if (!arrived.empty()) {
      if (fds == nullptr) return Err(Errc::kMisplacedFds);
      if (fds->size() + arrived.size() > kMaxFds) return Err(Errc::kTooManyFds);
      for (UniqueFd& fd : arrived) fds->push_back(std::move(fd));
    }
    if (n == 0) return Err(at_boundary && got == 0 ? Errc::kPeerClosed : Errc::kTruncated);
    got += static_cast<std::size_t>(n);
  }
  return Ok();
}

// Drops the first `n` bytes from the iovec array of `msg`.
void advance(msghdr& msg, std::size_t n) {
  while (n > 0 && msg.msg_iovlen > 0) {
    iovec& v = msg.msg_iov[0];
    if (n < v.iov_len) {
      v.iov_base = static_cast<char*>(v.iov_base) + n;
      v.iov_len -= n;
      return;
    }
    n -= v.iov_len;
    ++msg.msg_iov;
    --msg.msg_iovlen;
  }
}

Result<void> check_sendable(const Message& m) {
  if (m.fds.size() > kMaxFds) return Err(Errc::kTooManyFds);
  if (m.payload.size() != m.header.size) return Err(Errc::kSizeMismatch);
  if (m.header.size > kMaxPayloadSize) return Err(Errc::kPayloadTooLarge);
  return Ok();
}

Result<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Err(std::error_code(ENAMETOOLONG, std::system_category()));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

Result<UniqueFd> unix_socket() {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Err(last_error());
  return fd;
}

}  // namespace

Result<std::pair<Channel, Channel>> Channel::Pair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return Err(last_error());
  return std::pair<Channel, Channel>(Channel(UniqueFd(sv[0])), Channel(UniqueFd(sv[1])));
}

Result<Channel> Channel::Connect(const std::string& path) {
  const sockaddr_un addr = VDMA_TRY(unix_address(path));
  UniqueFd fd = VDMA_TRY(unix_socket());
  // Connecting a Unix stream socket completes at once or fails; EINTR is retried.
  while (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno == EISCONN) break;
    if (errno != EINTR) return Err(last_error());
  }
  return Channel(std::move(fd));
}

Result<void> Channel::send(const Message& m) {
  VDMA_TRY(check_sendable(m));
  std::array<iovec, 2> iov{iovec{const_cast<Header*>(&m.header), kHeaderSize},
                           iovec{const_cast<std::uint8_t*>(m.payload.data()), m.payload.size()}};
  msghdr msg{};
  msg.msg_iov = iov.data();
  msg.msg_iovlen = m.payload.empty() ? 1 : 2;
  alignas(cmsghdr) std::array<unsigned char, kControlSize> control{};
  if (!m.fds.empty()) {
    const std::size_t bytes = m.fds.size() * sizeof(int);
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(bytes);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(bytes);
    for (std::size_t i = 0; i < m.fds.size(); ++i) {
      const int fd = m.fds[i].get();
      std::memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof(int));
    }
  }
  std::size_t left = kHeaderSize + m.payload.size();
  while (left > 0) {
    const ssize_t n = ::sendmsg(socket_.get(), &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (!would_block(errno)) return Err(last_error());
      VDMA_TRY(wait_for(socket_.get(), POLLOUT));
      continue;
    }
    // The descriptors went with the first byte sent; the rest goes without them.
    msg.msg_control = nullptr;
    msg.msg_controllen = 0;
    advance(msg, static_cast<std::size_t>(n));
    left -= static_cast<std::size_t>(n);
  }
  return Ok();
}

Result<Message> Channel::receive() {
  Message m;
  std::array<std::uint8_t, kHeaderSize> raw{};
  VDMA_TRY(read_fully(socket_.get(), raw, &m.fds, /*at_boundary=*/true));
  m.header = VDMA_TRY(parse_header(raw));
  // Never trust the length before bounding it: refuse, and read nothing more.
  if (m.header.size > kMaxPayloadSize) return Err(Errc::kPayloadTooLarge);
  m.payload.resize(m.header.size);
  VDMA_TRY(read_fully(socket_.get(), m.payload, nullptr, /*at_boundary=*/false));
  return m;
}

Result<Listener> Listener::Create(const std::string& path) {
  const sockaddr_un addr = VDMA_TRY(unix_address(path));
  UniqueFd fd = VDMA_TRY(unix_socket());
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Err(last_error());
  }
  Listener listener(std::move(fd), path);  // from here on, the path is ours to remove
  if (::listen(listener.socket_.get(), SOMAXCONN) != 0) return Err(last_error());
  return listener;
}

Listener::Listener(Listener&& o) noexcept
    : socket_(std::move(o.socket_)), path_(std::exchange(o.path_, {})) {}

Listener& Listener::operator=(Listener&& o) noexcept {
  if (this != &o) {
    remove_path();
    socket_ = std::move(o.socket_);
    path_ = std::exchange(o.path_, {});
  }
  return *this;
}

Listener::~Listener() {
  remove_path();
}

void Listener::remove_path() {
  if (!path_.empty()) ::unlink(path_.c_str());
  path_.clear();
  socket_.reset();
}

Result<Channel> Listener::accept() {
  while (true) {
    UniqueFd fd(::accept4(socket_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (fd) return Channel(std::move(fd));
    if (errno != EINTR && errno != ECONNABORTED) return Err(last_error());
  }
}

}  // namespace vdma::vhost

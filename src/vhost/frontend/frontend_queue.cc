#include <poll.h>
#include <unistd.h>

#include <array>
#include <cerrno>

#include "vdma/vhost/frontend.h"

namespace vdma::vhost {
namespace {

std::error_code last_error() {
  return {errno, std::system_category()};
}

// Calls f on the ring, or returns kDisconnected when the queue has none (between a failed
// reconnect attempt and the next one).
template <class R, class V, class F>
R with_ring(V& ring, F&& f) {
  return std::visit(
      [&](auto& q) -> R {
        if constexpr (std::is_same_v<std::decay_t<decltype(q)>, std::monostate>) {
          return Err(FrontendErrc::kDisconnected);
        } else {
          return f(q);
        }
      },
      ring);
}

}  // namespace

Result<void> FrontendQueue::add_buffers(std::span<const virtq::Segment> readable,
                                        std::span<const virtq::Segment> writable,
                                        std::uint64_t token) {
  return with_ring<Result<void>>(ring_,
                                 [&](auto& q) { return q.add_buffers(readable, writable, token); });
}

Result<std::optional<virtq::UsedBuffer>> FrontendQueue::get_used() {
  return with_ring<Result<std::optional<virtq::UsedBuffer>>>(ring_,
                                                             [](auto& q) { return q.get_used(); });
}

void FrontendQueue::disable_callbacks() {
  std::visit(
      [](auto& q) {
        if constexpr (!std::is_same_v<std::decay_t<decltype(q)>, std::monostate>) {
          q.disable_callbacks();
        }
      },
      ring_);
}

bool FrontendQueue::enable_callbacks() {
  return std::visit(
      [](auto& q) {
        if constexpr (std::is_same_v<std::decay_t<decltype(q)>, std::monostate>) {
          return true;
        } else {
          return q.enable_callbacks();
        }
      },
      ring_);
}

std::uint32_t FrontendQueue::num_free() const {
  return std::visit(
      [](const auto& q) -> std::uint32_t {
        if constexpr (std::is_same_v<std::decay_t<decltype(q)>, std::monostate>) {
          return 0;
        } else {
          return q.num_free();
        }
      },
      ring_);
}

bool FrontendQueue::broken() const {
  return std::visit(
      [](const auto& q) {
        if constexpr (std::is_same_v<std::decay_t<decltype(q)>, std::monostate>) {
          return false;
        } else {
          return q.broken();
        }
      },
      ring_);
}

std::string FrontendQueue::broken_reason() const {
  return std::visit(
      [](const auto& q) -> std::string {
        if constexpr (std::is_same_v<std::decay_t<decltype(q)>, std::monostate>) {
          return {};
        } else {
          return q.broken_reason();
        }
      },
      ring_);
}

Result<void> FrontendQueue::kick() {
  const bool notify = with_ring<Result<bool>>(ring_, [](auto& q) -> Result<bool> {
                        return q.kick_prepare();
                      }).value_or(false);
  if (!connected_->load(std::memory_order_acquire)) return Err(FrontendErrc::kDisconnected);
  if (!notify) return Ok();
  const std::uint64_t one = 1;
  while (::write(kick_fd_.get(), &one, sizeof(one)) < 0) {
    if (errno == EINTR) continue;
    // EAGAIN: the counter is at its maximum, so the back end has a kick pending anyway.
    if (errno == EAGAIN) return Ok();
    return Err(last_error());
  }
  return Ok();
}

Result<bool> FrontendQueue::wait_call(std::chrono::milliseconds timeout) {
  if (!connected_->load(std::memory_order_acquire)) return Err(FrontendErrc::kDisconnected);
  std::array<pollfd, 2> p{pollfd{call_fd_.get(), POLLIN, 0}, pollfd{disconnect_fd_, POLLIN, 0}};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    const int n =
        ::poll(p.data(), p.size(), static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Err(last_error());
    }
    if (n == 0) return false;
    break;
  }
  if (p[0].revents != 0) {
    std::uint64_t count = 0;
    // Non-blocking: another reader may have taken the count; either way the call was seen.
    (void)!::read(call_fd_.get(), &count, sizeof(count));
    return true;
  }
  return Err(FrontendErrc::kDisconnected);
}

}  // namespace vdma::vhost

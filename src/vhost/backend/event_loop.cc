#include "vdma/vhost/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <system_error>

namespace vdma::vhost {
namespace {
std::error_code errno_error() {
  return {errno, std::system_category()};
}
}  // namespace

Result<std::unique_ptr<EventLoop>> EventLoop::Create() {
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  if (!ep) return Err(errno_error());
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake) return Err(errno_error());
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake.get();
  if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, wake.get(), &ev) != 0) return Err(errno_error());
  return std::unique_ptr<EventLoop>(new EventLoop(std::move(ep), std::move(wake)));
}

Result<void> EventLoop::add(int fd, Handler handler) {
  if (handlers_.count(fd) != 0) return Err(std::error_code(EEXIST, std::system_category()));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return Err(errno_error());
  handlers_.emplace(fd, std::make_shared<Handler>(std::move(handler)));
  return Ok();
}

void EventLoop::remove(int fd) {
  if (handlers_.erase(fd) == 0) return;
  (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

Result<bool> EventLoop::run_once(int timeout_ms) {
  if (stopped()) return false;
  std::array<epoll_event, 32> events{};
  const int n = ::epoll_wait(epoll_.get(), events.data(), events.size(), timeout_ms);
  if (n < 0) {
    if (errno == EINTR) return !stopped();
    return Err(errno_error());
  }
  for (int i = 0; i < n; ++i) {
    const int fd = events[i].data.fd;
    if (fd == wake_.get()) {
      drain_eventfd(fd);
      continue;
    }
    auto it = handlers_.find(fd);
    if (it == handlers_.end()) continue;      // removed by an earlier handler of this batch
    std::shared_ptr<Handler> h = it->second;  // keeps it alive if it removes itself
    (*h)(events[i].events);
  }
  return !stopped();
}

Result<void> EventLoop::run() {
  while (VDMA_TRY(run_once(-1))) {
  }
  return Ok();
}

void EventLoop::stop() {
  stopped_.store(true, std::memory_order_release);
  signal_eventfd(wake_.get());
}

std::uint64_t EventLoop::drain_eventfd(int fd) {
  std::uint64_t v = 0;
  if (::read(fd, &v, sizeof v) != static_cast<ssize_t>(sizeof v)) return 0;
  return v;
}

void EventLoop::signal_eventfd(int fd) {
  const std::uint64_t one = 1;
  ssize_t r;
  do {
    r = ::write(fd, &one, sizeof one);
  } while (r < 0 && errno == EINTR);
}

}  // namespace vdma::vhost

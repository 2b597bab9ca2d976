// EventLoop: one thread's readiness loop (epoll) over file descriptors with a callback
// each — a connection's socket, its kick eventfds, a device's completion fd.
//
// Handlers run on the thread that calls run()/run_once(). A handler may add or remove
// any fd, its own included; a removed fd's pending event is dropped. stop() may be called
// from any thread (and from a signal handler: it only writes an eventfd).
//
//   auto loop = VDMA_TRY(EventLoop::Create());
//   VDMA_TRY(loop->add(kick_fd, [&](std::uint32_t) { drain(kick_fd); process(); }));
//   VDMA_TRY(loop->run());   // until loop->stop()
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>

#include "vdma/base/result.h"
#include "vdma/memory/unique_fd.h"

namespace vdma::vhost {

class EventLoop {
 public:
  using Handler = std::function<void(std::uint32_t events)>;

  static Result<std::unique_ptr<EventLoop>> Create();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Watches `fd` for input (EPOLLIN; hang-ups and errors are reported too). The fd stays
  // owned by the caller and must stay open until remove(). EEXIST if already watched.
  Result<void> add(int fd, Handler handler);
  // Stops watching `fd` (no-op if not watched).
  void remove(int fd);
  bool watching(int fd) const { return handlers_.count(fd) != 0; }

  // Runs the handlers of ready fds, waiting at most timeout_ms (-1: forever). Returns
  // false once stop() was called.
  Result<bool> run_once(int timeout_ms);
  // run_once until stop().
  Result<void> run();
  void stop();
  bool stopped() const { return stopped_.load(std::memory_order_acquire); }

  // Reads an eventfd's counter (kick and call fds), ignoring EAGAIN.
  static std::uint64_t drain_eventfd(int fd);
  // Adds 1 to an eventfd's counter.
  static void signal_eventfd(int fd);

 private:
  EventLoop(UniqueFd epoll, UniqueFd wake) : epoll_(std::move(epoll)), wake_(std::move(wake)) {}

  UniqueFd epoll_;
  UniqueFd wake_;
  std::map<int, std::shared_ptr<Handler>> handlers_;
  std::atomic<bool> stopped_{false};
};

}  // namespace vdma::vhost

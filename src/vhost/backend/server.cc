// BackendServer: accepts front ends and serves each on its own thread with its own
// EventLoop, device and BackendConnection.
#include <sys/socket.h>

#include <atomic>

#include "vdma/base/log.h"
#include "vdma/vhost/backend.h"
#include "vdma/vhost/errors.h"

namespace vdma::vhost {
namespace {

constexpr std::string_view kLog = "vhost.backend";

std::error_code errno_error() {
  return {errno, std::system_category()};
}

bool is_listening(int fd) {
  int v = 0;
  socklen_t len = sizeof v;
  return ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v != 0;
}

}  // namespace

struct BackendServer::Worker {
  std::thread thread;
  std::unique_ptr<EventLoop> loop;
  std::atomic<bool> done{false};
};

Result<std::unique_ptr<BackendServer>> BackendServer::Create(BackendServerOptions options) {
  if (!options.make_device) return Err(std::make_error_code(std::errc::invalid_argument));
  if (options.socket_path.empty() == (options.socket_fd < 0)) {
    return Err(std::make_error_code(std::errc::invalid_argument));  // exactly one of them
  }
  std::unique_ptr<BackendServer> s(new BackendServer(std::move(options)));
  s->loop_ = VDMA_TRY(EventLoop::Create());
  BackendServer* self = s.get();
  if (!s->options_.socket_path.empty()) {
    s->listener_.emplace(VDMA_TRY(Listener::Create(s->options_.socket_path)));
    VDMA_TRY(s->loop_->add(s->listener_->fd(), [self](std::uint32_t) {
      auto c = self->listener_->accept();
      if (!c) {
        log_warn(kLog, "accept failed: {}", c.error().message());
        return;
      }
      self->serve(std::move(*c));
    }));
  } else if (is_listening(s->options_.socket_fd)) {
    s->listen_fd_.reset(s->options_.socket_fd);
    VDMA_TRY(s->loop_->add(s->listen_fd_.get(), [self](std::uint32_t) {
      UniqueFd fd(::accept4(self->listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!fd) {
        log_warn(kLog, "accept failed: {}", errno_error().message());
        return;
      }
      self->serve(Channel(std::move(fd)));
    }));
  } else {
    s->only_connection_.emplace(UniqueFd(s->options_.socket_fd));
    s->single_ = true;
  }
  return s;
}

BackendServer::BackendServer(BackendServerOptions options) : options_(std::move(options)) {}

BackendServer::~BackendServer() {
  if (loop_) stop();
  std::vector<std::unique_ptr<Worker>> workers;
  {
    std::lock_guard lock(mu_);
    workers.swap(workers_);
  }
  for (auto& w : workers) {
    w->loop->stop();
    if (w->thread.joinable()) w->thread.join();
  }
}

void BackendServer::serve(Channel channel) {
  reap_finished();
  {
    std::lock_guard lock(mu_);
    if (workers_.size() >= options_.max_connections) {
      log_warn(kLog, "connection refused: {} connections already", workers_.size());
      return;  // channel closes
    }
  }
  auto loop = EventLoop::Create();
  if (!loop) {
    log_error(kLog, "connection dropped: {}", loop.error().message());
    return;
  }
  auto w = std::make_unique<Worker>();
  w->loop = std::move(*loop);
  Worker* worker = w.get();
  const bool only = single_;
  worker->thread = std::thread([this, worker, only, ch = std::move(channel)]() mutable {
    std::unique_ptr<BackendDevice> device = options_.make_device();
    EventLoop& loop = *worker->loop;
    auto conn = BackendConnection::Create(std::move(ch), *device, loop, options_.backend,
                                          [&loop] { loop.stop(); });
    if (!conn) {
      log_error(kLog, "connection dropped: {}", conn.error().message());
    } else if (auto r = loop.run(); !r) {
      log_error(kLog, "connection loop failed: {}", r.error().message());
    }
    conn = Err(std::make_error_code(std::errc::operation_canceled));  // destroy it here
    device.reset();
    worker->done.store(true, std::memory_order_release);
    if (only) loop_->stop();
  });
  std::lock_guard lock(mu_);
  workers_.push_back(std::move(w));
}

void BackendServer::reap_finished() {
  std::vector<std::unique_ptr<Worker>> finished;
  {
    std::lock_guard lock(mu_);
    for (auto it = workers_.begin(); it != workers_.end();) {
      if ((*it)->done.load(std::memory_order_acquire)) {
        finished.push_back(std::move(*it));
        it = workers_.erase(it);
        ++served_;
      } else {
        ++it;
      }
    }
  }
  for (auto& w : finished) w->thread.join();
}

Result<void> BackendServer::run() {
  if (only_connection_) {
    Channel c = std::move(*only_connection_);
    only_connection_.reset();
    serve(std::move(c));
  }
  while (VDMA_TRY(loop_->run_once(500))) reap_finished();
  std::vector<std::unique_ptr<Worker>> workers;
  {
    std::lock_guard lock(mu_);
    workers.swap(workers_);
  }
  for (auto& w : workers) {
    w->loop->stop();
    if (w->thread.joinable()) w->thread.join();
    std::lock_guard lock(mu_);
    ++served_;
  }
  return Ok();
}

void BackendServer::stop() {
  loop_->stop();
}

std::size_t BackendServer::connections() const {
  std::lock_guard lock(mu_);
  std::size_t n = 0;
  for (const auto& w : workers_) n += !w->done.load(std::memory_order_acquire);
  return n;
}

std::uint64_t BackendServer::connections_served() const {
  std::lock_guard lock(mu_);
  std::uint64_t n = served_;
  for (const auto& w : workers_) n += w->done.load(std::memory_order_acquire);
  return n;
}

}  // namespace vdma::vhost

#include "vdma/vhost/frontend_backend_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "vdma/base/log.h"
#include "vdma/vhost/errors.h"
#include "vdma/vhost/frontend_channel.h"

namespace vdma::vhost {
namespace {

constexpr std::string_view kLog = "vhost-frontend";
constexpr std::uint64_t kAckOk = 0;
constexpr std::uint64_t kAckRefused = 1;

}  // namespace

Result<std::unique_ptr<BackendRequestServer>> BackendRequestServer::Start(
    std::optional<Channel> backend, int main_fd, BackendRequestHandlers handlers) {
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop) return Err(std::error_code(errno, std::system_category()));
  std::unique_ptr<BackendRequestServer> s(
      new BackendRequestServer(std::move(backend), main_fd, std::move(handlers), std::move(stop)));
  s->thread_ = std::thread([p = s.get()] { p->run(); });
  return s;
}

BackendRequestServer::BackendRequestServer(std::optional<Channel> backend, int main_fd,
                                           BackendRequestHandlers h, UniqueFd stop_fd)
    : backend_(std::move(backend)),
      main_fd_(main_fd),
      handlers_(std::move(h)),
      stop_fd_(std::move(stop_fd)) {}

BackendRequestServer::~BackendRequestServer() {
  stop();
}

void BackendRequestServer::stop() {
  if (!thread_.joinable()) return;
  const std::uint64_t one = 1;
  // An eventfd write of 8 bytes cannot be short; it fails only at a counter of 2^64 - 2.
  (void)!::write(stop_fd_.get(), &one, sizeof(one));
  thread_.join();
}

void BackendRequestServer::run() {
  bool watch_main = true;
  // Whether, and since when, the back-end channel holds a message not fully arrived.
  bool partial = false;
  std::chrono::steady_clock::time_point partial_since{};
  while (true) {
    // Slot 0: stop; 1: main socket hang-up only (its replies belong to FrontendChannel);
    // 2: back-end requests, unless a partial message is pending (then it is re-checked
    // every millisecond). A negative fd is ignored by poll.
    const bool watch_backend = backend_.has_value() && !partial;
    std::array<pollfd, 3> p{pollfd{stop_fd_.get(), POLLIN, 0},
                            pollfd{watch_main ? main_fd_ : -1, POLLRDHUP, 0},
                            pollfd{watch_backend ? backend_->fd() : -1, POLLIN, 0}};
    if (::poll(p.data(), p.size(), partial ? 1 : -1) < 0) {
      if (errno == EINTR) continue;
      log_error(kLog, "back-end channel poll failed: {}", std::strerror(errno));
      return;
    }
    if (p[0].revents != 0) return;
    if (backend_ && (p[2].revents != 0 || partial)) {
      switch (peek_message(backend_->fd())) {
        case MessageReadiness::kReady:
          partial = false;
          if (!serve_one()) {
            log_warn(kLog, "back-end channel closed");
            backend_.reset();
          }
          break;
        case MessageReadiness::kPartial:
          if (!partial) partial_since = std::chrono::steady_clock::now();
          partial = true;
          if (std::chrono::steady_clock::now() - partial_since > handlers_.message_timeout) {
            log_error(kLog, "back-end channel: a message did not arrive whole; closing it");
            backend_.reset();
            partial = false;
          }
          break;
        case MessageReadiness::kNothing:
          partial = false;
          break;
      }
    }
    if (p[1].revents != 0) {
      watch_main = false;
      log_warn(kLog, "back end hung up the main socket");
      if (handlers_.on_disconnect) handlers_.on_disconnect();
    }
  }
}

bool BackendRequestServer::serve_one() {
  auto raw = backend_->receive();
  if (!raw) {
    if (raw.error() != Errc::kPeerClosed) {
      log_error(kLog, "back-end channel: {}", raw.error().message());
    }
    return false;
  }
  const std::uint32_t request = raw->header.request;
  const bool need_reply = raw->need_reply();
  auto m = decode_backend_message(std::move(*raw));
  requests_.fetch_add(1, std::memory_order_relaxed);
  if (!m) {
    log_error(kLog, "back-end request {} malformed: {}", request, m.error().message());
    if (should_close_connection(m.error())) return false;
    // A request we could not read is refused when the back end waits for the answer.
    auto known = backend_request_from_wire(request);
    if (need_reply && known)
      return static_cast<bool>(backend_->send(encode_ack(*known, kAckRefused)));
    return true;
  }
  auto status = handle(*m);
  if (!status) {
    // Our answer could not go out on the main socket: that connection is failing, and the
    // hang-up watch reports it. The back end still gets a refusal.
    log_error(kLog, "answering {} failed: {}", request_name(m->request), status.error().message());
  }
  if (!m->need_reply) return true;
  return static_cast<bool>(backend_->send(encode_ack(m->request, status.value_or(kAckRefused))));
}

Result<std::uint64_t> BackendRequestServer::handle(const DecodedBackendMessage& m) {
  switch (m.request) {
    case BackendRequest::kIotlbMsg: {
      const auto& msg = std::get<IotlbMsg>(m.payload);
      if (msg.type == IotlbType::kAccessFail) {
        log_warn(kLog, "back end reports an IOTLB access failure at iova {:#x}", msg.iova);
        return kAckOk;
      }
      if (handlers_.iotlb == nullptr) {
        log_warn(kLog, "IOTLB miss at iova {:#x} without an IOMMU; not answered", msg.iova);
        return kAckOk;
      }
      VDMA_TRY(handlers_.iotlb->answer_miss(Iova{msg.iova}, msg.perm));
      return kAckOk;
    }
    case BackendRequest::kConfigChangeMsg:
      config_changes_.fetch_add(1, std::memory_order_relaxed);
      if (handlers_.on_config_change) handlers_.on_config_change();
      return kAckOk;
    default:
      log_warn(kLog, "back-end request {} not supported; refused", request_name(m.request));
      return kAckRefused;
  }
}

}  // namespace vdma::vhost

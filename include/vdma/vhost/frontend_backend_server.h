// BackendRequestServer: the front end's thread that serves the back-end channel (the
// socket pair handed over with SET_BACKEND_REQ_FD) and watches the main socket for a
// hang-up.
//
// Back-end requests are decoded strictly by the codec and answered (a REPLY_ACK when the
// back end set need_reply):
//   IOTLB_MSG miss          answered through FrontendIotlb (an IOTLB_MSG update on the main
//                           socket, or nothing for an unmapped IOVA), ack 0
//   IOTLB_MSG access fail   logged, ack 0
//   CONFIG_CHANGE_MSG       counted, the callback runs, ack 0
//   anything else           logged and refused (ack 1): this front end negotiates none
// A malformed request is logged; one that leaves the stream out of step, or that does not
// arrive whole in time, closes the back-end channel (the main connection goes on). A
// hang-up of the main socket (the back end died or closed) runs the disconnect callback
// once.
//
//   auto server = VDMA_TRY(BackendRequestServer::Start(std::move(ours), main.fd(), {
//       .iotlb = &iotlb, .on_disconnect = [&] { mark_disconnected(); }}));
//   ...
//   server->stop();   // also on destruction
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <thread>

#include "vdma/base/result.h"
#include "vdma/memory/unique_fd.h"
#include "vdma/vhost/channel.h"
#include "vdma/vhost/frontend_iotlb.h"

namespace vdma::vhost {

struct BackendRequestHandlers {
  FrontendIotlb* iotlb = nullptr;          // misses; nullptr: answered with nothing
  std::function<void()> on_config_change;  // from the server thread
  std::function<void()> on_disconnect;     // main socket hung up; from the server thread
  // A back-end request that has started must arrive whole within this, else the
  // back-end channel is closed (a stalled peer must not block the thread, or stop()).
  std::chrono::milliseconds message_timeout{1000};
};

class BackendRequestServer {
 public:
  // `backend`: our end of the back-end channel, or nullopt when BACKEND_REQ is not
  // negotiated (the thread then only watches `main_fd`). Errors: system (eventfd).
  static Result<std::unique_ptr<BackendRequestServer>> Start(std::optional<Channel> backend,
                                                             int main_fd,
                                                             BackendRequestHandlers handlers);
  ~BackendRequestServer();
  BackendRequestServer(const BackendRequestServer&) = delete;
  BackendRequestServer& operator=(const BackendRequestServer&) = delete;

  // Stops and joins the thread (idempotent). Must not be called from a handler.
  void stop();

  std::uint64_t config_changes() const { return config_changes_.load(std::memory_order_relaxed); }
  std::uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }

 private:
  BackendRequestServer(std::optional<Channel> backend, int main_fd, BackendRequestHandlers h,
                       UniqueFd stop_fd);
  void run();
  // One request from the back-end channel; false when the channel must be closed.
  bool serve_one();
  Result<std::uint64_t> handle(const DecodedBackendMessage& m);

  std::optional<Channel> backend_;
  const int main_fd_;
  BackendRequestHandlers handlers_;
  UniqueFd stop_fd_;
  std::atomic<std::uint64_t> config_changes_{0};
  std::atomic<std::uint64_t> requests_{0};
  std::thread thread_;
};

}  // namespace vdma::vhost

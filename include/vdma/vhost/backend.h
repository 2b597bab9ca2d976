// The vhost-user back end: one BackendConnection per front end, serving one BackendDevice,
// driven by an EventLoop on one thread; a BackendServer accepts connections on a socket
// path (or a passed fd) and runs each on its own thread.
//
// The connection implements the back end's side of QEMU's docs/interop/vhost-user.rst:
// feature and protocol-feature negotiation (MQ, REPLY_ACK, CONFIG, BACKEND_REQ,
// RESET_DEVICE, CONFIGURE_MEM_SLOTS, STATUS), the memory table (SET_MEM_TABLE,
// ADD_MEM_REG, REM_MEM_REG; replaced live: running rings are stopped, re-translated and
// resumed at the same index), the ring-state rules (a ring starts when its kick fd
// arrives, runs while enabled, stops at GET_VRING_BASE, which answers where to resume),
// kick and call eventfds, config space, and the IOTLB when ACCESS_PLATFORM is negotiated
// (updates and invalidations acknowledged; a miss is sent on the back-end channel and the
// ring resumes when the update arrives).
//
// Everything the front end sends is hostile. A message that does not decode closes the
// connection; a well-formed request the state refuses is answered with a failure ack
// when the front end asked for one (REPLY_ACK), and otherwise closes the connection —
// both with one log line naming the request and the reason. Other connections are not
// affected.
//
//   auto server = VDMA_TRY(BackendServer::Create({.socket_path = "/run/blk.sock",
//                                                 .make_device = [&] { return make_blk(); }}));
//   VDMA_TRY(server->run());   // until server->stop() (SIGTERM handler)
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "vdma/base/features.h"
#include "vdma/base/result.h"
#include "vdma/memory/iotlb_cache.h"
#include "vdma/vhost/backend_device.h"
#include "vdma/vhost/backend_memory.h"
#include "vdma/vhost/channel.h"
#include "vdma/vhost/event_loop.h"
#include "vdma/vhost/message.h"

namespace vdma::vhost {

struct BackendOptions {
  std::size_t iotlb_capacity = 4096;  // IOTLB cache entries (evicted beyond)
};

// Counters one connection keeps (read them from its thread, or after it ended).
struct BackendStats {
  std::uint64_t messages = 0;
  std::uint64_t rejected = 0;  // requests answered with a failure
  std::uint64_t iotlb_updates = 0;
  std::uint64_t iotlb_invalidations = 0;
  std::uint64_t iotlb_misses_sent = 0;
  std::uint64_t kicks = 0;
  std::uint64_t calls = 0;
  std::uint64_t ring_starts = 0;
};

class BackendConnection {
 public:
  // Serves the front end at the other end of `channel` with `device`; registers the
  // socket with `loop`. `on_close` runs (on the loop's thread) once the connection ended.
  static Result<std::unique_ptr<BackendConnection>> Create(Channel channel, BackendDevice& device,
                                                           EventLoop& loop,
                                                           BackendOptions options = {},
                                                           std::function<void()> on_close = {});
  ~BackendConnection();
  BackendConnection(const BackendConnection&) = delete;
  BackendConnection& operator=(const BackendConnection&) = delete;

  bool closed() const { return closed_; }
  const std::string& close_reason() const { return close_reason_; }
  const BackendStats& stats() const { return stats_; }
  FeatureSet negotiated() const { return features_; }
  ProtocolFeatureSet negotiated_protocol() const { return protocol_; }
  const BackendMemory& memory() const { return memory_; }
  std::size_t iotlb_entries() const { return iotlb_.size(); }
  // The running ring `index`, or nullptr.
  DeviceRing* ring(std::uint16_t index);

  // What this back end offers (device features + VHOST_USER_F_PROTOCOL_FEATURES; the
  // back end's protocol features + the device's).
  FeatureSet offered_features() const;
  ProtocolFeatureSet offered_protocol_features() const;

  // Ends the connection: rings stopped, device reset, memory unmapped, fds closed.
  void close(std::string reason);

 private:
  struct Vring;
  BackendConnection(Channel channel, BackendDevice& device, EventLoop& loop, BackendOptions options,
                    std::function<void()> on_close);

  void on_readable();
  // One decoded request: the reply body if the request has one, else nothing.
  Result<std::optional<Payload>> handle(DecodedMessage& m);
  Result<std::optional<Payload>> handle_features(DecodedMessage& m);
  Result<std::optional<Payload>> handle_memory(DecodedMessage& m);
  Result<std::optional<Payload>> handle_vring(DecodedMessage& m);
  Result<std::optional<Payload>> handle_iotlb(const IotlbMsg& msg);
  Result<std::optional<Payload>> handle_config(DecodedMessage& m);
  Result<std::optional<Payload>> handle_status(DecodedMessage& m);

  Result<Vring*> vring_at(std::uint32_t index);
  bool ring_enabled(const Vring& v) const;
  // Starts the ring if everything it needs is there; logs why not otherwise.
  void try_start(std::uint16_t index);
  // Stops a running ring, keeping where to resume.
  void stop_ring(std::uint16_t index);
  void stop_all_rings();
  void restart_running(const std::function<Result<void>()>& change, Result<void>* result);
  void process(std::uint16_t index);
  void send_miss(std::uint64_t iova, memory::Access access);
  void reset_state();

  Channel channel_;
  BackendDevice& device_;
  EventLoop& loop_;
  BackendOptions options_;
  std::function<void()> on_close_;
  std::optional<Channel> backend_channel_;  // SET_BACKEND_REQ_FD

  bool owner_ = false;
  bool closed_ = false;
  std::string close_reason_;
  FeatureSet features_;
  bool features_set_ = false;
  ProtocolFeatureSet protocol_;
  std::uint8_t status_ = 0;
  BackendMemory memory_;
  memory::IotlbCache iotlb_;
  std::vector<std::unique_ptr<Vring>> vrings_;
  BackendStats stats_;
};

struct BackendServerOptions {
  // Exactly one of: a path to listen on, or a socket fd handed over by the parent (a
  // listening socket is accepted on; a connected one is served as the only connection).
  std::string socket_path;
  int socket_fd = -1;
  std::function<std::unique_ptr<BackendDevice>()> make_device;
  BackendOptions backend;
  std::size_t max_connections = 64;
};

class BackendServer {
 public:
  static Result<std::unique_ptr<BackendServer>> Create(BackendServerOptions options);
  ~BackendServer();  // stop() and join every connection thread

  // Accepts and serves connections until stop(); each connection runs on its own thread.
  Result<void> run();
  // Thread-safe; async-signal-safe (writes an eventfd).
  void stop();
  // Connections currently being served.
  std::size_t connections() const;
  // Counters of connections that ended.
  std::uint64_t connections_served() const;

 private:
  struct Worker;
  explicit BackendServer(BackendServerOptions options);
  void serve(Channel channel);
  void reap_finished();

  BackendServerOptions options_;
  std::optional<Listener> listener_;
  UniqueFd listen_fd_;                      // a listening fd handed over with socket_fd
  std::optional<Channel> only_connection_;  // a connected socket_fd, until run()
  bool single_ = false;                     // serving only that connection
  std::unique_ptr<EventLoop> loop_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Worker>> workers_;  // guarded by mu_
  std::uint64_t served_ = 0;                      // guarded by mu_
};

}  // namespace vdma::vhost

// Frontend: the driver side of vhost-user (like DPDK's virtio-user). Connects to any
// vhost-user back end's socket, negotiates, shares the guest memory its platform allows,
// and drives the device's virtqueues through the Guest's DMA API.
//
// Connect() runs, in order: SET_OWNER, GET_FEATURES, the platform check and the feature
// choice, GET/SET_PROTOCOL_FEATURES (when VHOST_USER_F_PROTOCOL_FEATURES is offered),
// GET_QUEUE_NUM (MQ), SET_BACKEND_REQ_FD (BACKEND_REQ; a thread answers the back end's
// requests and watches for hang-ups), SET_FEATURES, SET_STATUS (STATUS), the memory table
// (GET_MAX_MEM_SLOTS + ADD_MEM_REG per region with CONFIGURE_MEM_SLOTS, else one
// SET_MEM_TABLE), then per queue SET_VRING_NUM / BASE / ADDR / CALL / KICK, then
// SET_VRING_ENABLE per queue and SET_STATUS(DRIVER_OK). Destruction: GET_VRING_BASE per
// queue, RESET_DEVICE (or SET_STATUS 0), close.
// With REPLY_ACK negotiated every request without a reply body is acked and every ack is
// checked; every reply is validated, and a back end that answers wrongly (type, size,
// garbage) or not in time gets a clear error and a closed connection.
//
// Platform policy (DESIGN.md):
//   traditional   RAM + coherent pool are shared; rings and buffers are GPAs; the back end
//                 is told user addresses for the rings.
//   secure guest  ONLY the bounce and coherent pools are shared (RAM is private and has no
//                 fd); a back end that does not offer ACCESS_PLATFORM is refused.
//   IOMMU         RAM + coherent (+ bounce when both) are shared, ACCESS_PLATFORM goes to the
//                 back end, ring and buffer addresses are IOVAs, and the IOMMU's map/unmap
//                 become IOTLB_MSG updates/invalidations (misses are answered too). A back
//                 end without ACCESS_PLATFORM, or without REPLY_ACK + BACKEND_REQ, is refused.
// As in QEMU, ACCESS_PLATFORM is negotiated with the device when the platform needs it,
// and passed to the back end in SET_FEATURES only when the IOTLB is in use.
//
// Threads: queue data-path calls (add_buffers, get_used, kick, wait_call) belong to one
// thread per queue; DMA map/unmap (so IOTLB traffic) may run on any thread; control calls
// (config, reconnect, destruction) must not overlap the queues' data-path calls.
//
// Reconnect contract: when the back end goes away (EOF, EPIPE, reply timeout), calls fail
// with an error for which is_disconnect() is true (wait_call and kick say kDisconnected).
// The caller then stops using the queues and calls reconnect(), which retries the socket
// with a bounded backoff until ReconnectOptions::timeout, renegotiates (the device
// features must come out the same, else kFeaturesChanged), shares memory again and
// recreates every ring. It hands back, per queue, the buffers the old back end had
// completed (its used entries, drained first) and the tokens of every other buffer that
// was outstanding (detached and unmapped). The caller completes the first and resubmits
// the second: nothing is lost. A buffer may thus be executed twice (the old back end may
// have done it without publishing it), so requests must be idempotent (block reads and
// writes are). The FrontendQueue objects stay the same; their rings are new.
//
//   auto guest = VDMA_TRY(dma::Guest::Create({.platform = dma::kTraditional}));
//   auto fe = VDMA_TRY(Frontend::Connect({.socket_path = "/run/blk.sock",
//                                         .guest = guest.get(),
//                                         .device_features = {kVirtioFRingEventIdx}}));
//   auto cap = VDMA_TRY(fe->read_config(0, 8));
//   FrontendQueue& q = fe->queue(0);
//   VDMA_TRY(q.add_buffers(readable, writable, /*token=*/1));
//   VDMA_TRY(q.kick());
//   if (VDMA_TRY(q.wait_call(1s))) while (auto u = VDMA_TRY(q.get_used())) done(u->token);
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "vdma/base/features.h"
#include "vdma/base/result.h"
#include "vdma/dma/guest.h"
#include "vdma/memory/unique_fd.h"
#include "vdma/vhost/channel.h"
#include "vdma/vhost/frontend_errors.h"
#include "vdma/vhost/frontend_iotlb.h"
#include "vdma/vhost/protocol.h"
#include "vdma/virtq/packed_driver.h"
#include "vdma/virtq/split_driver.h"
#include "vdma/virtq/types.h"

namespace vdma::vhost {

enum class RingLayout { kSplit, kPacked };

struct ReconnectOptions {
  std::chrono::milliseconds timeout{10000};       // overall, from the reconnect() call
  std::chrono::milliseconds initial_backoff{10};  // between connection attempts, doubling
  std::chrono::milliseconds max_backoff{500};
};

// The protocol features asked for by default; each is used only when offered.
inline constexpr ProtocolFeatureSet kDefaultProtocolFeatures{
    kProtocolFMq,          kProtocolFReplyAck,          kProtocolFBackendReq, kProtocolFConfig,
    kProtocolFResetDevice, kProtocolFConfigureMemSlots, kProtocolFStatus};

struct FrontendConfig {
  std::string socket_path;
  dma::Guest* guest = nullptr;  // must outlive the Frontend
  // Device-specific and ring feature bits wanted (INDIRECT_DESC, EVENT_IDX, ...); those not
  // offered are left out. VERSION_1, ACCESS_PLATFORM (when the platform needs it) and
  // RING_PACKED (packed layout) are added by the front end.
  FeatureSet device_features;
  // Bits that must be offered, else kRequiredFeatureMissing.
  FeatureSet required_features;
  std::uint32_t num_queues = 1;
  std::uint32_t queue_size = 256;
  RingLayout layout = RingLayout::kSplit;
  ProtocolFeatureSet protocol_features = kDefaultProtocolFeatures;
  std::chrono::milliseconds reply_timeout{5000};
  ReconnectOptions reconnect;
  // GET_QUEUE_NUM counts queue pairs (QEMU's reading for vhost-user-net) instead of
  // virtqueues.
  bool queue_num_counts_pairs = false;
  // Runs on the back-end channel's thread when the back end reports a config change.
  std::function<void()> on_config_change;
};

// One virtqueue of the device: the driver queue, its kick and call eventfds.
class FrontendQueue {
 public:
  using Split = virtq::SplitDriverQueue<dma::DmaOps>;
  using Packed = virtq::PackedDriverQueue<dma::DmaOps>;

  FrontendQueue(const FrontendQueue&) = delete;
  FrontendQueue& operator=(const FrontendQueue&) = delete;

  std::uint32_t index() const { return index_; }

  // The driver queue's calls (virtq/queue_concepts.h).
  Result<void> add_buffers(std::span<const virtq::Segment> readable,
                           std::span<const virtq::Segment> writable, std::uint64_t token);
  Result<std::optional<virtq::UsedBuffer>> get_used();
  void disable_callbacks();
  bool enable_callbacks();
  std::uint32_t num_free() const;
  bool broken() const;
  std::string broken_reason() const;

  // Publishes the buffers added and notifies the back end (kick eventfd) if it asked to be.
  // Errors: kDisconnected (the buffers stay tracked: reconnect() hands them back).
  Result<void> kick();
  // Waits until the back end signals the call eventfd (true) or `timeout` passes (false).
  // Errors: kDisconnected as soon as the back end is gone.
  Result<bool> wait_call(std::chrono::milliseconds timeout);

  // The concrete queue, for callers that template on the ring layout. The queue must have
  // a ring (it has one whenever the Frontend is connected).
  template <class F>
  decltype(auto) visit(F&& f) {
    if (auto* s = std::get_if<Split>(&ring_)) return f(*s);
    VDMA_CHECK_MSG(std::holds_alternative<Packed>(ring_), "queue has no ring");
    return f(std::get<Packed>(ring_));
  }

 private:
  friend class Frontend;
  FrontendQueue(std::uint32_t index, int disconnect_fd, const std::atomic<bool>* connected)
      : index_(index), disconnect_fd_(disconnect_fd), connected_(connected) {}

  const std::uint32_t index_;
  const int disconnect_fd_;             // the Frontend's; readable once disconnected
  const std::atomic<bool>* connected_;  // the Frontend's
  std::variant<std::monostate, Split, Packed> ring_;
  UniqueFd kick_fd_;
  UniqueFd call_fd_;
  std::byte* arena_ = nullptr;  // indirect tables, in guest RAM
  std::uint64_t arena_bytes_ = 0;
};

// What reconnect() hands back for one queue.
struct QueueRecovery {
  std::vector<virtq::UsedBuffer> completed;  // used entries the old back end published
  std::vector<std::uint64_t> resubmit;       // tokens of the buffers it never returned
};

class Frontend {
 public:
  // Errors: kInvalidConfig, connection errors (ENOENT, ECONNREFUSED for a bad path),
  // negotiation refusals (FrontendErrc, dma::Errc::kAccessPlatformRequired), reply errors.
  static Result<std::unique_ptr<Frontend>> Connect(FrontendConfig cfg);
  // Stops the rings (GET_VRING_BASE), resets the device (RESET_DEVICE or SET_STATUS 0)
  // when still connected, then closes and releases every ring and mapping.
  ~Frontend();
  Frontend(const Frontend&) = delete;
  Frontend& operator=(const Frontend&) = delete;

  // Negotiated with the device: device bits, ring bits, VERSION_1, ACCESS_PLATFORM.
  FeatureSet features() const { return features_; }
  // What SET_FEATURES told the back end (ACCESS_PLATFORM only with the IOTLB, plus
  // VHOST_USER_F_PROTOCOL_FEATURES when offered).
  FeatureSet backend_features() const { return backend_features_; }
  // Offered by the back end (GET_FEATURES).
  FeatureSet offered_features() const { return offered_; }
  ProtocolFeatureSet protocol_features() const { return protocol_; }
  std::uint32_t num_queues() const { return static_cast<std::uint32_t>(queues_.size()); }
  FrontendQueue& queue(std::uint32_t i) { return *queues_.at(i); }
  // The DMA ops of the current connection (the rings' and the caller's buffers'); only
  // while the rings exist (not after a failed reconnect).
  dma::DmaOps& dma_ops() {
    VDMA_CHECK(ops_ != nullptr);
    return *ops_;
  }
  dma::OpsKind ops_kind() const {
    VDMA_CHECK(ops_ != nullptr);
    return ops_->kind();
  }
  const FrontendConfig& config() const { return cfg_; }

  // Config space (CONFIG protocol feature): GET_CONFIG of [offset, offset + size), checked
  // to answer exactly that. Errors: kConfigUnsupported, kConfigRefused, kBadReply, ...
  Result<std::vector<std::uint8_t>> read_config(std::uint32_t offset, std::uint32_t size);
  Result<void> write_config(std::uint32_t offset, std::span<const std::uint8_t> data);
  // Config change notifications received (back-end channel).
  std::uint64_t config_changes() const;

  bool connected() const { return connected_.load(std::memory_order_acquire); }
  // Reconnects after the back end went away (see the contract above); may also be called
  // while connected, to drop the connection and start over. One QueueRecovery per queue.
  // When it fails (kReconnectTimeout, a refusal) the queues have no rings (their calls say
  // kDisconnected) and the buffers taken back so far are handed out by the next successful
  // reconnect().
  Result<std::vector<QueueRecovery>> reconnect();

  // IOTLB traffic so far (IOMMU profile; zeros otherwise).
  struct IotlbCounters {
    std::uint64_t updates = 0, invalidations = 0, misses = 0;
  };
  IotlbCounters iotlb_counters() const;

 private:
  struct Connection;
  explicit Frontend(FrontendConfig cfg);

  Result<void> validate_config() const;
  // Connects once and brings the device up; `expected`: the device features a reconnect
  // must find again.
  Result<void> establish(std::optional<FeatureSet> expected);
  Result<void> negotiate(std::optional<FeatureSet> expected);
  Result<void> negotiate_protocol();
  Result<void> start_backend_server(std::optional<Channel> backend);
  Result<void> share_memory();  // SET_MEM_TABLE or ADD_MEM_REG
  Result<void> setup_ring(FrontendQueue& q);
  Result<void> create_rings();
  Result<void> start_rings();
  void mark_disconnected();
  void stop_connection(bool orderly);  // orderly: stop rings and reset the device first
  void release_rings();
  Result<std::uint64_t> ring_address(DmaAddr a, std::size_t len) const;

  FrontendConfig cfg_;
  FeatureSet offered_;
  FeatureSet features_;
  FeatureSet backend_features_;
  ProtocolFeatureSet protocol_;
  bool iotlb_in_use_ = false;
  std::unique_ptr<Connection> conn_;
  std::unique_ptr<FrontendIotlb> iotlb_;
  std::unique_ptr<dma::DmaOps> ops_;
  std::vector<std::unique_ptr<FrontendQueue>> queues_;
  UniqueFd disconnect_fd_;  // eventfd, readable while disconnected
  std::atomic<bool> connected_{false};
  std::uint64_t config_changes_before_ = 0;  // of earlier connections
  // Buffers taken back from the rings by reconnect() and not yet handed out (a failed
  // reconnect keeps them for the next call).
  std::vector<QueueRecovery> pending_recovery_;
};

}  // namespace vdma::vhost

#include "vdma/vhost/frontend.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "vdma/base/log.h"
#include "vdma/dma/errors.h"
#include "vdma/dma/platform.h"
#include "vdma/vhost/frontend_backend_server.h"
#include "vdma/vhost/frontend_channel.h"
#include "vdma/virtq/packed_layout.h"
#include "vdma/virtq/split_layout.h"

namespace vdma::vhost {
namespace {

constexpr std::string_view kLog = "vhost-frontend";
constexpr std::uint32_t kMaxQueues = 256;  // vring indices are 8 bits in KICK/CALL
constexpr std::uint32_t kMaxQueueSize = 32768;
// Packed rings: SET_VRING_BASE carries the avail wrap counter in bit 15 (QEMU and DPDK);
// a fresh ring starts at index 0 with the counter at 1.
constexpr std::uint32_t kPackedInitialBase = 1u << 15;

// Device status bits (VIRTIO 1.2, 2.1).
constexpr std::uint64_t kStatusAcknowledge = 1;
constexpr std::uint64_t kStatusDriver = 2;
constexpr std::uint64_t kStatusDriverOk = 4;
constexpr std::uint64_t kStatusFeaturesOk = 8;

std::error_code last_error() {
  return {errno, std::system_category()};
}

Result<UniqueFd> dup_fd(int fd) {
  UniqueFd d(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!d) return Err(last_error());
  return d;
}

Result<UniqueFd> make_eventfd() {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd) return Err(last_error());
  return fd;
}

// Bits of the feature word that belong to vhost(-user), never to the device.
FeatureSet transport_only_bits() {
  return FeatureSet{kVhostUserFProtocolFeatures, kVhostFLogAll};
}

// Worth another attempt while reconnecting: nobody listens yet, or the back end went
// away during the negotiation.
bool retryable(std::error_code ec) {
  if (ec == std::errc::no_such_file_or_directory || ec == std::errc::connection_refused) {
    return true;
  }
  return is_disconnect(ec);
}

}  // namespace

struct Frontend::Connection {
  std::shared_ptr<FrontendChannel> channel;  // shared with FrontendIotlb
  std::unique_ptr<BackendRequestServer> server;
};

Frontend::Frontend(FrontendConfig cfg) : cfg_(std::move(cfg)) {}

Result<std::unique_ptr<Frontend>> Frontend::Connect(FrontendConfig cfg) {
  std::unique_ptr<Frontend> fe(new Frontend(std::move(cfg)));
  VDMA_TRY(fe->validate_config());
  fe->disconnect_fd_ = VDMA_TRY(make_eventfd());
  for (std::uint32_t i = 0; i < fe->cfg_.num_queues; ++i) {
    fe->queues_.push_back(std::unique_ptr<FrontendQueue>(
        new FrontendQueue(i, fe->disconnect_fd_.get(), &fe->connected_)));
  }
  dma::Guest& guest = *fe->cfg_.guest;
  if (guest.platform().iommu) {
    // Registered once, for the Frontend's life; it sends only while a connection is live.
    fe->iotlb_ = std::make_unique<FrontendIotlb>(guest.memory(), *guest.iommu());
    guest.iommu()->add_listener(fe->iotlb_.get());
  }
  VDMA_TRY(fe->establish(std::nullopt));
  return fe;
}

Frontend::~Frontend() {
  stop_connection(/*orderly=*/connected());
  release_rings();
  if (iotlb_) cfg_.guest->iommu()->remove_listener(iotlb_.get());
}

Result<void> Frontend::validate_config() const {
  const auto invalid = [](const char* why) {
    log_error(kLog, "invalid configuration: {}", why);
    return Err(FrontendErrc::kInvalidConfig);
  };
  if (cfg_.guest == nullptr) return invalid("no guest");
  if (cfg_.socket_path.empty()) return invalid("no socket path");
  if (cfg_.num_queues == 0 || cfg_.num_queues > kMaxQueues) return invalid("queue count");
  const std::uint32_t n = cfg_.queue_size;
  if (n == 0 || n > kMaxQueueSize) return invalid("queue size");
  if (cfg_.layout == RingLayout::kSplit && (n & (n - 1)) != 0) {
    return invalid("split queue size not a power of two");
  }
  if (cfg_.guest->platform().iommu && cfg_.guest->iommu() == nullptr) return invalid("no IOMMU");
  return Ok();
}

// ---------------------------------------------------------------------------------------
// Bringing a connection up.

Result<void> Frontend::establish(std::optional<FeatureSet> expected) {
  conn_ = std::make_unique<Connection>();
  Channel ch = VDMA_TRY(Channel::Connect(cfg_.socket_path));
  conn_->channel = std::make_shared<FrontendChannel>(std::move(ch), cfg_.reply_timeout);
  if (iotlb_) {
    iotlb_->set_live(false);
    iotlb_->set_channel(conn_->channel);
  }
  // Fresh connection: the disconnect signal is cleared (drained).
  std::uint64_t drained = 0;
  (void)!::read(disconnect_fd_.get(), &drained, sizeof(drained));

  VDMA_TRY(negotiate(expected));
  FrontendChannel& c = *conn_->channel;
  VDMA_TRY(c.request(FrontendRequest::kSetFeatures, U64{backend_features_.bits()}));
  const bool status = protocol_.has(kProtocolFStatus);
  if (status) {
    VDMA_TRY(c.request(FrontendRequest::kSetStatus,
                       U64{kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk}));
  }
  VDMA_TRY(share_memory());
  if (iotlb_in_use_) iotlb_->set_live(true);
  VDMA_TRY(create_rings());
  VDMA_TRY(start_rings());
  if (status) {
    VDMA_TRY(c.request(FrontendRequest::kSetStatus, U64{kStatusAcknowledge | kStatusDriver |
                                                        kStatusFeaturesOk | kStatusDriverOk}));
  }
  // A hang-up seen before this store marked nothing; the channel shows it (the watcher
  // closes the channel before it marks), so check after publishing.
  connected_.store(true, std::memory_order_release);
  if (c.closed()) mark_disconnected();
  log_info(kLog, "connected to {}: features {}, protocol {}, {} {} queue(s) of {}, {} ops",
           cfg_.socket_path, features_.to_string(), protocol_.to_string(), queues_.size(),
           cfg_.layout == RingLayout::kPacked ? "packed" : "split", cfg_.queue_size,
           dma::ops_kind_name(ops_->kind()));
  return Ok();
}

Result<void> Frontend::negotiate(std::optional<FeatureSet> expected) {
  FrontendChannel& c = *conn_->channel;
  const dma::Platform platform = cfg_.guest->platform();
  VDMA_TRY(c.request(FrontendRequest::kSetOwner));
  offered_ = FeatureSet::FromBits(VDMA_TRY(c.call_u64(FrontendRequest::kGetFeatures)));

  // The platform check comes first: it is the one refusal a secure guest must not skip.
  if (auto ok = dma::check_device_offer(platform, offered_); !ok) {
    log_error(kLog, "{} platform refuses a back end without ACCESS_PLATFORM (offered {})",
              dma::platform_name(platform), offered_.to_string());
    return ok;
  }
  if (platform.iommu && !offered_.has(kVirtioFAccessPlatform)) {
    // Without ACCESS_PLATFORM the device would use GPAs and bypass the IOMMU.
    log_error(kLog, "{} platform refuses a back end without ACCESS_PLATFORM (offered {})",
              dma::platform_name(platform), offered_.to_string());
    return Err(dma::Errc::kAccessPlatformRequired);
  }
  if (!offered_.has(kVirtioFVersion1)) return Err(FrontendErrc::kVersion1NotOffered);
  if (!offered_.contains(cfg_.required_features)) {
    log_error(kLog, "back end lacks required features: offered {}, required {}",
              offered_.to_string(), cfg_.required_features.to_string());
    return Err(FrontendErrc::kRequiredFeatureMissing);
  }
  const bool packed = cfg_.layout == RingLayout::kPacked;
  if (packed && !offered_.has(kVirtioFRingPacked)) return Err(FrontendErrc::kPackedNotOffered);

  FeatureSet wanted = (cfg_.device_features | cfg_.required_features)
                          .without(kVirtioFAccessPlatform)
                          .without(kVirtioFRingPacked);
  wanted = wanted | dma::required_driver_features(platform);
  if (packed) wanted.set(kVirtioFRingPacked);
  features_ = FeatureSet::FromBits((wanted & offered_).bits() & ~transport_only_bits().bits());
  if (expected && *expected != features_) {
    log_error(kLog, "back end negotiated {} after reconnecting, {} before", features_.to_string(),
              expected->to_string());
    return Err(FrontendErrc::kFeaturesChanged);
  }
  iotlb_in_use_ = platform.iommu;  // ACCESS_PLATFORM is negotiated (checked above)

  const bool has_protocol = offered_.has(kVhostUserFProtocolFeatures);
  protocol_ = {};
  if (has_protocol) VDMA_TRY(negotiate_protocol());
  if (cfg_.num_queues > 1 && !protocol_.has(kProtocolFMq)) {
    return Err(FrontendErrc::kMultiQueueUnsupported);
  }
  if (iotlb_in_use_ &&
      !protocol_.contains(ProtocolFeatureSet{kProtocolFReplyAck, kProtocolFBackendReq})) {
    return Err(FrontendErrc::kIotlbUnsupported);
  }
  backend_features_ = iotlb_in_use_ ? features_ : features_.without(kVirtioFAccessPlatform);
  if (has_protocol) backend_features_.set(kVhostUserFProtocolFeatures);

  std::optional<Channel> ours;
  if (protocol_.has(kProtocolFBackendReq)) {
    auto [mine, theirs] = VDMA_TRY(Channel::Pair());
    VDMA_TRY(c.request(FrontendRequest::kSetBackendReqFd, FdPayload{theirs.take_socket()}));
    ours.emplace(std::move(mine));
  }
  return start_backend_server(std::move(ours));
}

Result<void> Frontend::negotiate_protocol() {
  FrontendChannel& c = *conn_->channel;
  const auto offered =
      ProtocolFeatureSet::FromBits(VDMA_TRY(c.call_u64(FrontendRequest::kGetProtocolFeatures)));
  protocol_ = cfg_.protocol_features & offered;
  VDMA_TRY(c.request(FrontendRequest::kSetProtocolFeatures, U64{protocol_.bits()}));
  c.set_reply_ack(protocol_.has(kProtocolFReplyAck));

  const std::uint32_t n = cfg_.num_queues;
  if (protocol_.has(kProtocolFMq)) {
    const std::uint64_t max = VDMA_TRY(c.call_u64(FrontendRequest::kGetQueueNum));
    if (max == 0) {
      c.close();
      return Err(FrontendErrc::kBadReply);
    }
    const std::uint64_t wanted = cfg_.queue_num_counts_pairs ? (n + 1) / 2 : n;
    if (wanted > max) {
      log_error(kLog, "{} queues asked for, back end supports {}", n, max);
      return Err(FrontendErrc::kTooManyQueues);
    }
  }
  return Ok();
}

Result<void> Frontend::start_backend_server(std::optional<Channel> backend) {
  FrontendChannel* channel = conn_->channel.get();
  BackendRequestHandlers h;
  h.iotlb = iotlb_in_use_ ? iotlb_.get() : nullptr;
  h.on_config_change = cfg_.on_config_change;
  h.message_timeout = cfg_.reply_timeout;
  h.on_disconnect = [this, channel] {
    channel->close();
    mark_disconnected();
  };
  conn_->server = VDMA_TRY(BackendRequestServer::Start(std::move(backend), channel->fd(), h));
  return Ok();
}

Result<void> Frontend::share_memory() {
  FrontendChannel& c = *conn_->channel;
  std::vector<MemoryRegion> regions;
  std::vector<UniqueFd> fds;
  // shared_regions() is the platform's policy: never the private RAM of a secure guest
  // (which has no fd to send at all).
  for (const memory::GuestRegion& r : cfg_.guest->shared_regions()) {
    const int fd = VDMA_TRY(r.backing->shareable_fd());
    regions.push_back(MemoryRegion{.guest_addr = r.gpa.value(),
                                   .size = r.size,
                                   .user_addr = reinterpret_cast<std::uintptr_t>(r.host),
                                   .mmap_offset = 0});
    fds.push_back(VDMA_TRY(dup_fd(fd)));
  }
  if (protocol_.has(kProtocolFConfigureMemSlots)) {
    const std::uint64_t slots = VDMA_TRY(c.call_u64(FrontendRequest::kGetMaxMemSlots));
    if (regions.size() > slots) return Err(FrontendErrc::kTooManyRegions);
    for (std::size_t i = 0; i < regions.size(); ++i) {
      VDMA_TRY(
          c.request(FrontendRequest::kAddMemReg, MemoryRegionFd{regions[i], std::move(fds[i])}));
    }
    return Ok();
  }
  if (regions.size() > kMaxMemoryRegions) return Err(FrontendErrc::kTooManyRegions);
  return c.request(FrontendRequest::kSetMemTable, MemoryTable{regions, std::move(fds)});
}

// ---------------------------------------------------------------------------------------
// Rings.

Result<void> Frontend::create_rings() {
  ops_ = VDMA_TRY(cfg_.guest->make_ops(features_));
  virtq::DriverQueueConfig qc{.size = cfg_.queue_size,
                              .features = virtq::RingFeatures::From(features_)};
  const bool packed = cfg_.layout == RingLayout::kPacked;
  const std::size_t arena = packed ? FrontendQueue::Packed::indirect_arena_bytes(qc)
                                   : FrontendQueue::Split::indirect_arena_bytes(qc);
  for (auto& q : queues_) {
    if (arena > 0) {
      q->arena_ = VDMA_TRY(cfg_.guest->alloc_ram(arena));
      q->arena_bytes_ = arena;
    }
    std::span<std::byte> a{q->arena_, arena};
    if (packed) {
      q->ring_.emplace<FrontendQueue::Packed>(
          VDMA_TRY(FrontendQueue::Packed::Create(*ops_, qc, a)));
    } else {
      q->ring_.emplace<FrontendQueue::Split>(VDMA_TRY(FrontendQueue::Split::Create(*ops_, qc, a)));
    }
    q->kick_fd_ = VDMA_TRY(make_eventfd());
    q->call_fd_ = VDMA_TRY(make_eventfd());
  }
  return Ok();
}

Result<std::uint64_t> Frontend::ring_address(DmaAddr a, std::size_t len) const {
  if (iotlb_in_use_) return a.value();  // an IOVA, resolved through the IOTLB
  // Without ACCESS_PLATFORM at the back end, ring addresses are this process's user
  // addresses; the ring's DMA address is a GPA (direct and bounce ops).
  std::span<std::byte> host = VDMA_TRY(cfg_.guest->memory().translate(Gpa{a.value()}, len));
  return reinterpret_cast<std::uintptr_t>(host.data());
}

Result<void> Frontend::setup_ring(FrontendQueue& q) {
  FrontendChannel& c = *conn_->channel;
  const std::uint32_t i = q.index();
  const std::uint32_t n = cfg_.queue_size;
  const bool packed = cfg_.layout == RingLayout::kPacked;
  const virtq::RingAddresses ra = q.visit([](auto& r) { return r.addresses(); });
  VringAddr addr{.index = i};
  if (packed) {
    addr.desc_user_addr = VDMA_TRY(ring_address(ra.desc, virtq::PackedAreaSizes::desc(n)));
    addr.avail_user_addr = VDMA_TRY(ring_address(ra.driver, virtq::PackedAreaSizes::event()));
    addr.used_user_addr = VDMA_TRY(ring_address(ra.device, virtq::PackedAreaSizes::event()));
  } else {
    addr.desc_user_addr = VDMA_TRY(ring_address(ra.desc, virtq::SplitAreaSizes::desc(n)));
    addr.avail_user_addr = VDMA_TRY(ring_address(ra.driver, virtq::SplitAreaSizes::avail(n)));
    addr.used_user_addr = VDMA_TRY(ring_address(ra.device, virtq::SplitAreaSizes::used(n)));
  }
  if (auto r = c.request(FrontendRequest::kSetVringNum, VringState{i, n}); !r) {
    log_error(kLog, "back end refused queue {} of size {}", i, n);
    return r;
  }
  VDMA_TRY(
      c.request(FrontendRequest::kSetVringBase, VringState{i, packed ? kPackedInitialBase : 0}));
  VDMA_TRY(c.request(FrontendRequest::kSetVringAddr, addr));
  const auto index = static_cast<std::uint8_t>(i);
  VDMA_TRY(c.request(FrontendRequest::kSetVringCall,
                     VringFd{index, VDMA_TRY(dup_fd(q.call_fd_.get()))}));
  VDMA_TRY(c.request(FrontendRequest::kSetVringKick,
                     VringFd{index, VDMA_TRY(dup_fd(q.kick_fd_.get()))}));
  return Ok();
}

Result<void> Frontend::start_rings() {
  for (auto& q : queues_) VDMA_TRY(setup_ring(*q));
  // With VHOST_USER_F_PROTOCOL_FEATURES rings start disabled.
  if (backend_features_.has(kVhostUserFProtocolFeatures)) {
    for (auto& q : queues_) {
      VDMA_TRY(
          conn_->channel->request(FrontendRequest::kSetVringEnable, VringState{q->index(), 1}));
    }
  }
  return Ok();
}

void Frontend::release_rings() {
  for (auto& q : queues_) {
    q->ring_.emplace<std::monostate>();  // unmaps every buffer, frees the rings
    q->kick_fd_.reset();
    q->call_fd_.reset();
    if (q->arena_ != nullptr) {
      if (auto r = cfg_.guest->free_ram(q->arena_, q->arena_bytes_); !r) {
        log_error(kLog, "freeing queue {}'s indirect arena: {}", q->index(), r.error().message());
      }
      q->arena_ = nullptr;
      q->arena_bytes_ = 0;
    }
  }
  ops_.reset();
}

// ---------------------------------------------------------------------------------------
// Connection life cycle.

void Frontend::mark_disconnected() {
  if (!connected_.exchange(false, std::memory_order_acq_rel)) return;
  const std::uint64_t one = 1;
  (void)!::write(disconnect_fd_.get(), &one, sizeof(one));
}

void Frontend::stop_connection(bool orderly) {
  if (!conn_) return;
  FrontendChannel* c = conn_->channel.get();
  if (orderly && c != nullptr && !c->closed()) {
    // Stop every ring (the back end stops processing it and answers its base), then reset.
    for (auto& q : queues_) {
      if (std::holds_alternative<std::monostate>(q->ring_)) continue;
      auto p = c->call(FrontendRequest::kGetVringBase, VringState{q->index(), 0});
      if (!p) break;
      if (std::get<VringState>(*p).index != q->index()) {
        log_error(kLog, "GET_VRING_BASE for queue {} answered for queue {}", q->index(),
                  std::get<VringState>(*p).index);
        break;
      }
    }
    if (protocol_.has(kProtocolFResetDevice)) {
      (void)c->request(FrontendRequest::kResetDevice);
    } else if (protocol_.has(kProtocolFStatus)) {
      (void)c->request(FrontendRequest::kSetStatus, U64{0});
    }
  }
  if (iotlb_) {
    iotlb_->set_live(false);
    iotlb_->set_channel(nullptr);
  }
  // The watcher goes first, so it does not take our own close for the back end's hang-up.
  if (conn_->server) {
    conn_->server->stop();
    config_changes_before_ += conn_->server->config_changes();
  }
  if (c != nullptr) c->close();
  conn_.reset();
  mark_disconnected();
}

Result<std::vector<QueueRecovery>> Frontend::reconnect() {
  const FeatureSet before = features_;
  stop_connection(/*orderly=*/connected());
  // Kept across failed attempts (pending_recovery_), handed out on success.
  pending_recovery_.resize(queues_.size());
  for (std::size_t i = 0; i < queues_.size(); ++i) {
    FrontendQueue& q = *queues_[i];
    if (std::holds_alternative<std::monostate>(q.ring_)) continue;
    QueueRecovery& rec = pending_recovery_[i];
    // The old back end's used entries are real completions: hand them over first.
    while (true) {
      auto u = q.get_used();
      if (!u || !*u) break;  // empty, or the old back end broke the ring
      rec.completed.push_back(**u);
    }
    auto detached = q.visit([](auto& r) { return r.detach_unused(); });
    rec.resubmit.insert(rec.resubmit.end(), detached.begin(), detached.end());
  }
  release_rings();

  const ReconnectOptions& o = cfg_.reconnect;
  const auto deadline = std::chrono::steady_clock::now() + o.timeout;
  std::chrono::milliseconds backoff = o.initial_backoff;
  for (int attempt = 1;; ++attempt) {
    auto r = establish(before);
    if (r) {
      log_info(kLog, "reconnected to {} after {} attempt(s)", cfg_.socket_path, attempt);
      return std::exchange(pending_recovery_, {});
    }
    stop_connection(/*orderly=*/false);
    release_rings();
    if (!retryable(r.error())) return Err(r.error());
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      log_error(kLog, "reconnect to {} gave up after {} attempt(s): {}", cfg_.socket_path, attempt,
                r.error().message());
      return Err(FrontendErrc::kReconnectTimeout);
    }
    std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(backoff, deadline - now));
    backoff = std::min(backoff * 2, o.max_backoff);
  }
}

// ---------------------------------------------------------------------------------------
// Config space.

Result<std::vector<std::uint8_t>> Frontend::read_config(std::uint32_t offset, std::uint32_t size) {
  if (!protocol_.has(kProtocolFConfig)) return Err(FrontendErrc::kConfigUnsupported);
  if (size == 0 || offset > kMaxConfigSize || size > kMaxConfigSize - offset) {
    return Err(FrontendErrc::kInvalidConfig);
  }
  if (!conn_) return Err(FrontendErrc::kDisconnected);
  FrontendChannel& c = *conn_->channel;
  Payload p =
      VDMA_TRY(c.call(FrontendRequest::kGetConfig,
                      ConfigSpace{offset, kConfigFlagFrontend, std::vector<std::uint8_t>(size)}));
  auto* cs = std::get_if<ConfigSpace>(&p);
  if (cs == nullptr) return Err(FrontendErrc::kConfigRefused);  // the back end's error signal
  if (cs->offset != offset || cs->data.size() != size) {
    log_error(kLog, "GET_CONFIG of {}+{} answered with {}+{}", offset, size, cs->offset,
              cs->data.size());
    c.close();
    return Err(FrontendErrc::kBadReply);
  }
  return std::move(cs->data);
}

Result<void> Frontend::write_config(std::uint32_t offset, std::span<const std::uint8_t> data) {
  if (!protocol_.has(kProtocolFConfig)) return Err(FrontendErrc::kConfigUnsupported);
  if (data.empty() || offset > kMaxConfigSize || data.size() > kMaxConfigSize - offset) {
    return Err(FrontendErrc::kInvalidConfig);
  }
  if (!conn_) return Err(FrontendErrc::kDisconnected);
  return conn_->channel->request(FrontendRequest::kSetConfig,
                                 ConfigSpace{offset, kConfigFlagFrontend,
                                             std::vector<std::uint8_t>(data.begin(), data.end())});
}

std::uint64_t Frontend::config_changes() const {
  const std::uint64_t now = conn_ && conn_->server ? conn_->server->config_changes() : 0;
  return config_changes_before_ + now;
}

Frontend::IotlbCounters Frontend::iotlb_counters() const {
  if (!iotlb_) return {};
  const FrontendIotlbStats s = iotlb_->stats();
  return {s.updates, s.invalidations, s.misses};
}

}  // namespace vdma::vhost

// BackendConnection: receiving, dispatching and answering front-end requests; features,
// protocol features, config space, status and the connection's life cycle. Vrings are in
// connection_vring.cc, memory and IOTLB in connection_memory.cc.
#include <fcntl.h>

#include "vdma/base/log.h"
#include "vdma/vhost/backend.h"
#include "vdma/vhost/errors.h"
#include "vring.h"

namespace vdma::vhost {
namespace {

constexpr std::string_view kLog = "vhost.backend";

// Protocol features this back end implements whatever the device.
constexpr ProtocolFeatureSet kBackendProtocolFeatures{
    kProtocolFMq,          kProtocolFReplyAck,          kProtocolFBackendReq,
    kProtocolFResetDevice, kProtocolFConfigureMemSlots, kProtocolFStatus};

// Requests a front end may send before SET_OWNER (QEMU queries and negotiates first).
bool allowed_before_owner(FrontendRequest r) {
  switch (r) {
    case FrontendRequest::kGetFeatures:
    case FrontendRequest::kGetProtocolFeatures:
    case FrontendRequest::kSetProtocolFeatures:
    case FrontendRequest::kGetQueueNum:
    case FrontendRequest::kGetMaxMemSlots:
    case FrontendRequest::kSetBackendReqFd:
    case FrontendRequest::kSetOwner:
    case FrontendRequest::kResetOwner:
      return true;
    default:
      return false;
  }
}

// Requests whose reply has a body of its own, not a REPLY_ACK u64: refusing one of them
// (other than GET_CONFIG, which has an empty failure reply) closes the connection.
bool has_reply_body(FrontendRequest r) {
  switch (r) {
    case FrontendRequest::kGetFeatures:
    case FrontendRequest::kGetProtocolFeatures:
    case FrontendRequest::kGetQueueNum:
    case FrontendRequest::kGetVringBase:
    case FrontendRequest::kGetConfig:
    case FrontendRequest::kGetMaxMemSlots:
    case FrontendRequest::kGetStatus:
    case FrontendRequest::kGetInflightFd:
    case FrontendRequest::kSetLogBase:
    case FrontendRequest::kCreateCryptoSession:
    case FrontendRequest::kPostcopyAdvise:
    case FrontendRequest::kGetSharedObject:
    case FrontendRequest::kSetDeviceStateFd:
      return true;
    default:
      return false;
  }
}

}  // namespace

Result<std::unique_ptr<BackendConnection>> BackendConnection::Create(
    Channel channel, BackendDevice& device, EventLoop& loop, BackendOptions options,
    std::function<void()> on_close) {
  const int fd = channel.fd();
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
    return Err(std::error_code(errno, std::system_category()));
  }
  std::unique_ptr<BackendConnection> c(
      new BackendConnection(std::move(channel), device, loop, options, std::move(on_close)));
  BackendConnection* self = c.get();
  VDMA_TRY(loop.add(fd, [self](std::uint32_t) { self->on_readable(); }));
  return c;
}

BackendConnection::BackendConnection(Channel channel, BackendDevice& device, EventLoop& loop,
                                     BackendOptions options, std::function<void()> on_close)
    : channel_(std::move(channel)),
      device_(device),
      loop_(loop),
      options_(options),
      on_close_(std::move(on_close)),
      iotlb_(memory::IotlbCacheOptions{.capacity = options.iotlb_capacity}) {
  for (std::uint16_t i = 0; i < device_.num_queues(); ++i) {
    vrings_.push_back(std::make_unique<Vring>(memory_));
  }
}

BackendConnection::~BackendConnection() {
  if (!closed_) {
    on_close_ = nullptr;  // the owner is destroying us: no callback into it
    close("back end shutting down");
  }
}

FeatureSet BackendConnection::offered_features() const {
  return device_.features().with(kVhostUserFProtocolFeatures);
}

ProtocolFeatureSet BackendConnection::offered_protocol_features() const {
  return kBackendProtocolFeatures | device_.protocol_features();
}

DeviceRing* BackendConnection::ring(std::uint16_t index) {
  return index < vrings_.size() ? vrings_[index]->ring.get() : nullptr;
}

void BackendConnection::on_readable() {
  if (closed_) return;
  auto raw = channel_.receive();
  if (!raw) {
    if (raw.error() == std::errc::resource_unavailable_try_again) return;  // spurious
    close(raw.error() == Errc::kPeerClosed ? "front end closed the connection"
                                           : "receive failed: " + raw.error().message());
    return;
  }
  const std::uint32_t request_number = raw->header.request;
  auto decoded = decode_frontend_message(std::move(*raw));
  if (!decoded) {
    close(fmt::format("malformed message (request {}): {}", request_number,
                      decoded.error().message()));
    return;
  }
  ++stats_.messages;
  DecodedMessage& m = *decoded;
  const char* name = request_name(m.request);
  auto result = handle(m);
  if (closed_) return;  // the handler ended the connection
  if (result) {
    if (*result) {
      if (auto s = channel_.send(encode_reply(m.request, std::move(**result))); !s) {
        close(fmt::format("reply to {} failed: {}", name, s.error().message()));
      }
    } else if (m.need_reply) {
      if (auto s = channel_.send(encode_ack(m.request, 0)); !s) {
        close(fmt::format("ack of {} failed: {}", name, s.error().message()));
      }
    }
    return;
  }
  ++stats_.rejected;
  const std::string why = fmt::format("{} refused: {}", name, result.error().message());
  if (m.request == FrontendRequest::kGetConfig) {
    // The spec's failure reply to GET_CONFIG is an empty payload.
    log_warn(kLog, "{}", why);
    if (auto s = channel_.send(encode_reply(m.request, NoPayload{})); !s) close(why);
    return;
  }
  if (m.need_reply && !has_reply_body(m.request)) {
    log_warn(kLog, "{}", why);
    if (auto s = channel_.send(encode_ack(m.request, 1)); !s) close(why);
    return;
  }
  close(why);  // the front end cannot learn of the failure any other way
}

Result<std::optional<Payload>> BackendConnection::handle(DecodedMessage& m) {
  log(LogLevel::kDebug, kLog, "request {}", request_name(m.request));
  if (!owner_ && !allowed_before_owner(m.request)) return Err(Errc::kNotOwner);
  switch (m.request) {
    case FrontendRequest::kSetOwner:
      owner_ = true;
      return std::nullopt;
    case FrontendRequest::kResetOwner:
    case FrontendRequest::kResetDevice:
      reset_state();
      return std::nullopt;
    case FrontendRequest::kGetFeatures:
    case FrontendRequest::kSetFeatures:
    case FrontendRequest::kGetProtocolFeatures:
    case FrontendRequest::kSetProtocolFeatures:
    case FrontendRequest::kGetQueueNum:
    case FrontendRequest::kSetBackendReqFd:
      return handle_features(m);
    case FrontendRequest::kSetMemTable:
    case FrontendRequest::kGetMaxMemSlots:
    case FrontendRequest::kAddMemReg:
    case FrontendRequest::kRemMemReg:
      return handle_memory(m);
    case FrontendRequest::kSetVringNum:
    case FrontendRequest::kSetVringAddr:
    case FrontendRequest::kSetVringBase:
    case FrontendRequest::kGetVringBase:
    case FrontendRequest::kSetVringKick:
    case FrontendRequest::kSetVringCall:
    case FrontendRequest::kSetVringErr:
    case FrontendRequest::kSetVringEnable:
      return handle_vring(m);
    case FrontendRequest::kIotlbMsg:
      return handle_iotlb(std::get<IotlbMsg>(m.payload));
    case FrontendRequest::kGetConfig:
    case FrontendRequest::kSetConfig:
      return handle_config(m);
    case FrontendRequest::kSetStatus:
    case FrontendRequest::kGetStatus:
      return handle_status(m);
    default:
      return Err(Errc::kUnsupportedRequest);
  }
}

Result<std::optional<Payload>> BackendConnection::handle_features(DecodedMessage& m) {
  switch (m.request) {
    case FrontendRequest::kGetFeatures:
      return Payload{U64{offered_features().bits()}};
    case FrontendRequest::kSetFeatures: {
      const FeatureSet f = FeatureSet::FromBits(std::get<U64>(m.payload).value);
      if (!offered_features().contains(f)) return Err(Errc::kFeatureNotOffered);
      if (f.has(kVirtioFAccessPlatform) &&
          !protocol_.contains({kProtocolFReplyAck, kProtocolFBackendReq})) {
        return Err(Errc::kIotlbUnavailable);
      }
      features_ = f;
      features_set_ = true;
      // A (re)negotiation starts a new life of the device: SeaBIOS drives it with the
      // vIOMMU still off (QEMU answers misses with identity entries), then Linux turns the
      // vIOMMU on and negotiates again without invalidating them. It is a cache: empty it.
      iotlb_.clear();
      for (auto& v : vrings_)
        v->translator.use_iotlb(f.has(kVirtioFAccessPlatform) ? &iotlb_ : nullptr);
      device_.set_features(f);
      log_info(kLog, "features negotiated: {}", f.to_string());
      return std::nullopt;
    }
    case FrontendRequest::kGetProtocolFeatures:
      return Payload{U64{offered_protocol_features().bits()}};
    case FrontendRequest::kSetProtocolFeatures: {
      const auto p = ProtocolFeatureSet::FromBits(std::get<U64>(m.payload).value);
      if (!offered_protocol_features().contains(p)) return Err(Errc::kFeatureNotOffered);
      protocol_ = p;
      return std::nullopt;
    }
    case FrontendRequest::kGetQueueNum:
      return Payload{U64{device_.num_queues()}};
    case FrontendRequest::kSetBackendReqFd: {
      if (!protocol_.has(kProtocolFBackendReq)) return Err(Errc::kFeatureNotOffered);
      backend_channel_.emplace(std::move(std::get<FdPayload>(m.payload).fd));
      return std::nullopt;
    }
    default:
      return Err(Errc::kUnsupportedRequest);
  }
}

Result<std::optional<Payload>> BackendConnection::handle_config(DecodedMessage& m) {
  if (!protocol_.has(kProtocolFConfig)) return Err(Errc::kFeatureNotOffered);
  auto& cfg = std::get<ConfigSpace>(m.payload);
  if (m.request == FrontendRequest::kGetConfig) {
    VDMA_TRY(device_.read_config(cfg.offset, cfg.data));
    return Payload{std::move(cfg)};
  }
  VDMA_TRY(device_.write_config(cfg.offset, cfg.data));
  return std::nullopt;
}

Result<std::optional<Payload>> BackendConnection::handle_status(DecodedMessage& m) {
  if (!protocol_.has(kProtocolFStatus)) return Err(Errc::kFeatureNotOffered);
  if (m.request == FrontendRequest::kGetStatus) return Payload{U64{status_}};
  const std::uint64_t s = std::get<U64>(m.payload).value;
  if (s > 0xff) return Err(Errc::kInvalidField);
  // Writing 0 resets the device (2.1.2), but QEMU 7.2 writes 0 to *stop* it and then goes
  // on with SET_VRING_ENABLE 0 and GET_VRING_BASE under the features it negotiated: stop
  // the rings (answering GET_VRING_BASE from where they stopped) and keep the rest.
  if (s == 0 && status_ != 0) stop_all_rings();
  status_ = static_cast<std::uint8_t>(s);
  return std::nullopt;
}

void BackendConnection::reset_state() {
  stop_all_rings();
  device_.reset();
  for (auto& v : vrings_) {
    auto fresh = std::make_unique<Vring>(memory_);
    if (v->kick) loop_.remove(v->kick.get());
    v = std::move(fresh);
  }
  features_ = FeatureSet{};
  features_set_ = false;
  status_ = 0;
  iotlb_.clear();
}

void BackendConnection::close(std::string reason) {
  if (closed_) return;
  closed_ = true;
  close_reason_ = std::move(reason);
  log_info(kLog, "connection closed: {}", close_reason_);
  stop_all_rings();
  device_.reset();
  for (auto& v : vrings_) {
    if (v->kick) loop_.remove(v->kick.get());
  }
  vrings_.clear();
  loop_.remove(channel_.fd());
  memory_.clear();
  iotlb_.clear();
  backend_channel_.reset();
  channel_ = Channel(UniqueFd());
  if (on_close_) on_close_();
}

}  // namespace vdma::vhost

// BackendConnection: the vring requests and the ring-state rules (vhost-user.rst, "Ring
// states"): a ring is started by SET_VRING_KICK, stopped by GET_VRING_BASE, and runs
// while started and enabled (always enabled when VHOST_USER_F_PROTOCOL_FEATURES was not
// negotiated; otherwise from SET_VRING_ENABLE 1).
#include "vdma/base/log.h"
#include "vdma/vhost/backend.h"
#include "vdma/vhost/errors.h"
#include "vring.h"

namespace vdma::vhost {
namespace {

constexpr std::string_view kLog = "vhost.backend";
constexpr int kMaxPasses = 16;  // device passes per kick before yielding to other events

}  // namespace

Result<BackendConnection::Vring*> BackendConnection::vring_at(std::uint32_t index) {
  if (index >= vrings_.size()) return Err(Errc::kBadVringIndex);
  return vrings_[index].get();
}

bool BackendConnection::ring_enabled(const Vring& v) const {
  return v.enabled || !features_.has(kVhostUserFProtocolFeatures);
}

Result<std::optional<Payload>> BackendConnection::handle_vring(DecodedMessage& m) {
  switch (m.request) {
    case FrontendRequest::kSetVringNum: {
      const auto s = std::get<VringState>(m.payload);
      Vring* v = VDMA_TRY(vring_at(s.index));
      if (v->ring) return Err(Errc::kVringStarted);
      const bool split = !features_.has(kVirtioFRingPacked);
      if (s.num == 0 || s.num > device_.max_queue_size() || s.num > 32768 ||
          (split && (s.num & (s.num - 1)) != 0)) {
        return Err(Errc::kBadQueueSize);
      }
      v->num = s.num;
      return std::nullopt;
    }
    case FrontendRequest::kSetVringAddr: {
      const auto a = std::get<VringAddr>(m.payload);
      Vring* v = VDMA_TRY(vring_at(a.index));
      if (a.flags & kVringFLog) return Err(Errc::kUnsupportedRequest);  // no dirty logging
      if (v->ring) return Err(Errc::kVringStarted);
      v->addr = a;
      return std::nullopt;
    }
    case FrontendRequest::kSetVringBase: {
      const auto s = std::get<VringState>(m.payload);
      Vring* v = VDMA_TRY(vring_at(s.index));
      if (v->ring) return Err(Errc::kVringStarted);
      // Split: a 16-bit avail index. Packed: QEMU also sends the used position in bits
      // 16..31; resuming needs no in-flight chains, so the two agree and avail is used.
      if (s.num > 0xffff && !features_.has(kVirtioFRingPacked)) return Err(Errc::kInvalidField);
      v->base = s.num;
      return std::nullopt;
    }
    case FrontendRequest::kGetVringBase: {
      const auto s = std::get<VringState>(m.payload);
      Vring* v = VDMA_TRY(vring_at(s.index));
      stop_ring(static_cast<std::uint16_t>(s.index));
      v->started = false;
      // The front end stops the device (to reset it, or to change its translation
      // regime): nothing cached may outlive that. Other rings simply ask again.
      iotlb_.clear();
      if (v->kick) {
        loop_.remove(v->kick.get());
        v->kick.reset();
      }
      return Payload{VringState{s.index, v->base.value_or(0)}};
    }
    case FrontendRequest::kSetVringKick: {
      auto& p = std::get<VringFd>(m.payload);
      Vring* v = VDMA_TRY(vring_at(p.index));
      stop_ring(p.index);
      if (v->kick) loop_.remove(v->kick.get());
      v->kick = std::move(p.fd);  // none: the driver does not kick (not supported: warned)
      if (!v->kick)
        log_warn(kLog, "vring {}: no kick fd; the ring is only served on IOTLB and restart events",
                 p.index);
      v->started = true;
      if (v->kick) {
        const std::uint16_t index = p.index;
        const int fd = v->kick.get();
        VDMA_TRY(loop_.add(fd, [this, index, fd](std::uint32_t) {
          EventLoop::drain_eventfd(fd);
          ++stats_.kicks;
          process(index);
        }));
      }
      try_start(p.index);
      return std::nullopt;
    }
    case FrontendRequest::kSetVringCall: {
      auto& p = std::get<VringFd>(m.payload);
      Vring* v = VDMA_TRY(vring_at(p.index));
      v->call = std::move(p.fd);
      if (v->ring) v->ring->set_call_fd(v->call ? v->call.get() : -1);
      return std::nullopt;
    }
    case FrontendRequest::kSetVringErr: {
      auto& p = std::get<VringFd>(m.payload);
      Vring* v = VDMA_TRY(vring_at(p.index));
      v->err = std::move(p.fd);
      return std::nullopt;
    }
    case FrontendRequest::kSetVringEnable: {
      const auto s = std::get<VringState>(m.payload);
      Vring* v = VDMA_TRY(vring_at(s.index));
      if (!features_.has(kVhostUserFProtocolFeatures)) return Err(Errc::kFeatureNotOffered);
      v->enabled = s.num != 0;
      if (v->enabled) {
        try_start(static_cast<std::uint16_t>(s.index));
      } else {
        stop_ring(static_cast<std::uint16_t>(s.index));
      }
      return std::nullopt;
    }
    default:
      return Err(Errc::kUnsupportedRequest);
  }
}

void BackendConnection::try_start(std::uint16_t index) {
  Vring& v = *vrings_[index];
  if (v.ring || !v.started || !ring_enabled(v)) return;
  v.start_pending_iotlb = false;
  if (v.num == 0 || !v.addr) {
    log_warn(kLog, "vring {}: kicked before its size and addresses were set", index);
    return;
  }
  const bool packed = features_.has(kVirtioFRingPacked);
  virtq::DeviceQueueConfig cfg;
  cfg.features = virtq::RingFeatures::From(features_);
  cfg.rings.size_minus_one = static_cast<std::uint16_t>(v.num - 1);
  std::uint64_t desc = v.addr->desc_user_addr;
  std::uint64_t avail = v.addr->avail_user_addr;
  std::uint64_t used = v.addr->used_user_addr;
  if (!v.translator.uses_iotlb()) {
    // Ring addresses are front-end user addresses; descriptors carry guest-physical ones.
    auto d = memory_.uva_to_gpa(desc, 1);
    auto a = memory_.uva_to_gpa(avail, 1);
    auto u = memory_.uva_to_gpa(used, 1);
    if (!d || !a || !u) {
      log_error(kLog, "vring {}: ring addresses {:#x}/{:#x}/{:#x} outside the memory table", index,
                desc, avail, used);
      if (v.err) EventLoop::signal_eventfd(v.err.get());
      return;
    }
    desc = *d;
    avail = *a;
    used = *u;
  }
  cfg.rings.desc = DmaAddr{desc};
  cfg.rings.driver = DmaAddr{avail};
  cfg.rings.device = DmaAddr{used};
  auto make = [&]() -> Result<std::variant<DeviceRing::Split, DeviceRing::Packed>> {
    if (packed) {
      const auto base =
          static_cast<std::uint16_t>(v.base.value_or(DeviceRing::Packed::kInitialBase) & 0xffff);
      return std::variant<DeviceRing::Split, DeviceRing::Packed>(
          VDMA_TRY(DeviceRing::Packed::Create(v.translator, cfg, base)));
    }
    return std::variant<DeviceRing::Split, DeviceRing::Packed>(VDMA_TRY(DeviceRing::Split::Create(
        v.translator, cfg, static_cast<std::uint16_t>(v.base.value_or(0)))));
  };
  auto q = make();
  if (!q) {
    if (q.error() == virtq::Errc::kTranslationMiss) {
      v.start_pending_iotlb = true;
      if (auto miss = v.translator.take_miss()) send_miss(miss->iova, miss->access);
      return;
    }
    log_error(kLog, "vring {}: cannot start: {}", index, q.error().message());
    if (v.err) EventLoop::signal_eventfd(v.err.get());
    return;
  }
  v.ring =
      std::make_unique<DeviceRing>(index, std::move(*q), v.call ? v.call.get() : -1, &v.translator);
  ++stats_.ring_starts;
  log_info(kLog, "vring {} started: size {} {} base {:#x}", index, v.num,
           packed ? "packed" : "split", v.ring->base());
  device_.ring_started(*v.ring, loop_);
  process(index);  // buffers made available before the start
}

void BackendConnection::stop_ring(std::uint16_t index) {
  if (index >= vrings_.size()) return;
  Vring& v = *vrings_[index];
  v.start_pending_iotlb = false;
  if (!v.ring) return;
  device_.ring_stopped(*v.ring);
  v.base = v.ring->base();
  log_info(kLog, "vring {} stopped at {:#x} ({} popped, {} used)", index, *v.base,
           v.ring->stats().added, v.ring->stats().completed);
  v.ring.reset();
}

void BackendConnection::stop_all_rings() {
  for (std::size_t i = 0; i < vrings_.size(); ++i) stop_ring(static_cast<std::uint16_t>(i));
}

void BackendConnection::process(std::uint16_t index) {
  Vring& v = *vrings_[index];
  if (!v.ring) {
    if (v.start_pending_iotlb) return;
    try_start(index);  // e.g. enabled without a restart
    return;
  }
  DeviceRing& ring = *v.ring;
  // Serve until the ring is empty with kicks re-armed (2.7.10 / 2.8.21: after enabling
  // notifications, check again, a buffer may have arrived before the driver saw it). A
  // driver that keeps the ring busy gets a bounded number of passes; then a kick to
  // ourselves lets the connection's other events in first.
  for (int pass = 0; !ring.waiting_for_iotlb() && !ring.broken(); ++pass) {
    if (pass == kMaxPasses) {
      if (v.kick) EventLoop::signal_eventfd(v.kick.get());
      break;
    }
    device_.process(ring);
    if (ring.waiting_for_iotlb() || ring.broken()) break;
    ring.set_notifications(true);
    if (!ring.has_available()) break;
  }
  if (auto miss = ring.take_miss()) send_miss(miss->iova, miss->access);
  if (ring.broken() && !v.error_signalled) {
    v.error_signalled = true;
    log_error(kLog, "vring {} broken: {}", index, ring.broken_reason());
    if (v.err) EventLoop::signal_eventfd(v.err.get());
  }
}

}  // namespace vdma::vhost

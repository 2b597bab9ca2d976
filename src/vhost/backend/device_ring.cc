#include "vdma/vhost/backend_device.h"

#include "vdma/base/log.h"
#include "vdma/vhost/errors.h"
#include "vdma/vhost/event_loop.h"

namespace vdma::vhost {

Result<bool> DeviceRing::pop(virtq::Chain& out) {
  if (waiting_) return false;
  auto r = std::visit([&](auto& q) { return q.pop(out); }, queue_);
  if (!r && r.error() == virtq::Errc::kTranslationMiss) {
    // The chain stays in the ring; the back end asks for the translation and calls the
    // device's process() again once the IOTLB has it.
    miss_ = translator_->take_miss();
    waiting_ = true;
    return false;
  }
  if (!r && r.error() != virtq::Errc::kBroken) {
    // A malformed chain, already returned with length 0. A hostile driver can make many:
    // the first few are logged, then one in 1024.
    ++rejected_;
    if (rejected_ <= 8 || rejected_ % 1024 == 0) {
      log_warn("vhost.backend", "vring {}: chain rejected ({} so far): {}", index_, rejected_,
               r.error().message());
    }
  }
  return r;
}

void DeviceRing::notify() {
  const bool wanted = std::visit([](auto& q) { return q.publish_used(); }, queue_);
  if (wanted && call_fd_ >= 0) {
    EventLoop::signal_eventfd(call_fd_);
    ++calls_;
  }
}

Result<void> BackendDevice::read_config(std::uint32_t, std::span<std::uint8_t>) {
  return Err(Errc::kUnsupportedRequest);
}

Result<void> BackendDevice::write_config(std::uint32_t, std::span<const std::uint8_t>) {
  return Err(Errc::kUnsupportedRequest);
}

}  // namespace vdma::vhost

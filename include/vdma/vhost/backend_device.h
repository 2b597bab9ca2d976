// What a vhost-user back end serves: a BackendDevice (virtio-blk, virtio-net, a test
// device), and the DeviceRing through which it sees one started vring.
//
// The back end (backend.h) owns the protocol: features, memory, rings, kicks and calls,
// the IOTLB. A device only says what it offers and processes chains. Every call on a
// device comes from its connection's thread, one at a time; a device that completes
// requests asynchronously (io_uring) registers its completion fd with the EventLoop it is
// given and completes from that callback, still on the connection's thread.
//
//   class EchoDevice final : public BackendDevice {
//     ...
//     void process(DeviceRing& ring) override {
//       virtq::Chain c;
//       while (auto r = ring.pop(c)) {
//         if (!*r) break;
//         auto n = copy(c.readable, c.writable);
//         (void)ring.push_used(c.head, n);
//       }
//       ring.notify();
//     }
//   };
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <variant>

#include "vdma/base/features.h"
#include "vdma/base/result.h"
#include "vdma/memory/unique_fd.h"
#include "vdma/vhost/backend_translator.h"
#include "vdma/vhost/protocol.h"
#include "vdma/virtq/packed_device.h"
#include "vdma/virtq/split_device.h"

namespace vdma::vhost {

class EventLoop;

// One started vring as the device sees it. Dispatch between the split and packed layouts
// is a variant: no virtual call per chain.
class DeviceRing {
 public:
  using Split = virtq::SplitDeviceQueue<BackendTranslator>;
  using Packed = virtq::PackedDeviceQueue<BackendTranslator>;

  DeviceRing(std::uint16_t index, std::variant<Split, Packed> queue, int call_fd,
             const BackendTranslator* translator)
      : index_(index), queue_(std::move(queue)), call_fd_(call_fd), translator_(translator) {}
  DeviceRing(const DeviceRing&) = delete;
  DeviceRing& operator=(const DeviceRing&) = delete;

  std::uint16_t index() const { return index_; }

  // The next chain, or false when there is none now — also when its translation is not
  // in the IOTLB yet: the back end asks the front end and calls process() again when the
  // answer arrives. Errors: a rejected chain (already returned to the driver with length
  // 0) or kBroken.
  Result<bool> pop(virtq::Chain& out);
  // Returns a popped chain with `len` bytes written. Visible after notify().
  Result<void> push_used(std::uint16_t head, std::uint32_t len) {
    return std::visit([&](auto& q) { return q.push_used(head, len); }, queue_);
  }
  // Publishes used entries and signals the call eventfd when the driver wants it.
  void notify();
  // Guest notifications (kicks) on or off; after enabling, check has_available() again.
  void set_notifications(bool on) {
    std::visit([&](auto& q) { q.set_notifications(on); }, queue_);
  }
  bool has_available() const {
    return std::visit([](const auto& q) { return q.has_available(); }, queue_);
  }
  bool broken() const {
    return std::visit([](const auto& q) { return q.broken(); }, queue_);
  }
  const std::string& broken_reason() const {
    return std::visit([](const auto& q) -> const std::string& { return q.broken_reason(); },
                      queue_);
  }
  std::uint32_t size() const {
    return std::visit([](const auto& q) { return q.size(); }, queue_);
  }
  std::uint32_t in_flight() const {
    return std::visit([](const auto& q) { return q.in_flight(); }, queue_);
  }
  // GET_VRING_BASE's answer. Split: the last avail index. Packed (as QEMU reads it): bits
  // 0..14 the next avail position and bit 15 its wrap counter, bits 16..31 the same for
  // the next used position.
  std::uint32_t base() const {
    if (const auto* p = std::get_if<Packed>(&queue_)) {
      return std::uint32_t{p->last_avail_idx()} | (std::uint32_t{p->last_used_idx()} << 16);
    }
    return std::get<Split>(queue_).last_avail_idx();
  }
  const virtq::QueueStats& stats() const {
    return std::visit([](const auto& q) -> const virtq::QueueStats& { return q.stats(); }, queue_);
  }

  // Set by pop() when a translation missed; the back end takes it to send the miss.
  std::optional<BackendTranslator::Miss> take_miss() { return std::exchange(miss_, {}); }
  bool waiting_for_iotlb() const { return waiting_; }
  void clear_waiting() { waiting_ = false; }
  // SET_VRING_CALL while running (-1: none).
  void set_call_fd(int fd) { call_fd_ = fd; }
  std::uint64_t calls() const { return calls_; }

 private:
  std::uint16_t index_;
  std::variant<Split, Packed> queue_;
  int call_fd_;  // owned by the back end's vring; -1: no call fd (the driver polls)
  const BackendTranslator* translator_;
  std::optional<BackendTranslator::Miss> miss_;
  bool waiting_ = false;
  std::uint64_t calls_ = 0;
  std::uint64_t rejected_ = 0;
};

class BackendDevice {
 public:
  virtual ~BackendDevice() = default;

  // Virtio feature bits offered (device-specific, ring features, VERSION_1,
  // ACCESS_PLATFORM). The back end adds VHOST_USER_F_PROTOCOL_FEATURES itself.
  virtual FeatureSet features() const = 0;
  // Protocol features the device itself needs on top of the back end's (CONFIG when it
  // has a config space, MTU, RARP ...).
  virtual ProtocolFeatureSet protocol_features() const { return {}; }
  virtual std::uint16_t num_queues() const = 0;
  virtual std::uint32_t max_queue_size() const { return 32768; }

  // Config space (GET_CONFIG / SET_CONFIG). Errors make the back end answer with the
  // spec's failure reply.
  virtual Result<void> read_config(std::uint32_t offset, std::span<std::uint8_t> out);
  virtual Result<void> write_config(std::uint32_t offset, std::span<const std::uint8_t> in);

  // The front end's SET_FEATURES (already checked against features()).
  virtual void set_features(FeatureSet negotiated) { (void)negotiated; }
  // A ring starts (kick fd received, enabled, translated). The device may keep the
  // reference until ring_stopped().
  virtual void ring_started(DeviceRing& ring, EventLoop& loop) {
    (void)ring;
    (void)loop;
  }
  // The driver kicked (or an IOTLB answer arrived): pop, process, push, notify.
  virtual void process(DeviceRing& ring) = 0;
  // The ring stops (GET_VRING_BASE, memory change, reset, disconnect). Return only when
  // the device no longer touches the ring or any chain from it: finish or fail its
  // in-flight requests (pushing them used) first.
  virtual void ring_stopped(DeviceRing& ring) { (void)ring; }
  // RESET_DEVICE, or the connection ended.
  virtual void reset() {}
};

}  // namespace vdma::vhost

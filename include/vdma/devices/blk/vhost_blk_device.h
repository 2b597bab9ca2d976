// VhostBlkDevice: the virtio-blk device as a vhost-user back end — a vhost::BackendDevice
// serving a Disk. The only part of the block device that knows the transport.
//
// Offers VERSION_1, ACCESS_PLATFORM, RING_INDIRECT_DESC, RING_EVENT_IDX, RING_PACKED and
// the Disk's feature bits; protocol feature CONFIG (config space over GET_CONFIG /
// SET_CONFIG, where the writeback byte is writable). Each started ring gets a BlkQueue
// whose completion fd is watched by the connection's EventLoop: process() pops chains
// and submits them, the completion handler pushes them used and notifies, and
// ring_stopped() returns only once the ring's requests have all completed.
//
//   std::shared_ptr<const blk::Disk> disk = VDMA_TRY(blk::Disk::Open({.path = image}));
//   auto server = VDMA_TRY(vhost::BackendServer::Create(
//       {.socket_path = path,
//        .make_device = [&] { return std::make_unique<blk::VhostBlkDevice>(disk, opts); }}));
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "vdma/devices/blk/blk_queue.h"
#include "vdma/devices/blk/disk.h"
#include "vdma/vhost/backend_device.h"
#include "vdma/vhost/event_loop.h"

namespace vdma::blk {

struct VhostBlkOptions {
  std::uint16_t num_queues = 1;  // 1..64
  std::uint32_t max_queue_size = 1024;
  QueueOptions queue;  // engine kind, depth
};

class VhostBlkDevice final : public vhost::BackendDevice {
 public:
  // `options` must be valid (see check_options); the disk is shared by every connection.
  VhostBlkDevice(std::shared_ptr<const Disk> disk, VhostBlkOptions options);
  ~VhostBlkDevice() override;

  // kInvalidOptions for queues outside 1..64, a queue size outside 1..32768, depth 0.
  static Result<void> check_options(const VhostBlkOptions& options);

  FeatureSet features() const override;
  vhost::ProtocolFeatureSet protocol_features() const override;
  std::uint16_t num_queues() const override { return options_.num_queues; }
  std::uint32_t max_queue_size() const override { return options_.max_queue_size; }
  Result<void> read_config(std::uint32_t offset, std::span<std::uint8_t> out) override;
  Result<void> write_config(std::uint32_t offset, std::span<const std::uint8_t> in) override;
  void set_features(FeatureSet negotiated) override;
  void ring_started(vhost::DeviceRing& ring, vhost::EventLoop& loop) override;
  void process(vhost::DeviceRing& ring) override;
  void ring_stopped(vhost::DeviceRing& ring) override;
  void reset() override;

  // The queue serving ring `index` once it started (tests, stats), or nullptr.
  const BlkQueue* queue(std::uint16_t index) const;

 private:
  struct Slot {
    std::unique_ptr<BlkQueue> queue;
    vhost::DeviceRing* ring = nullptr;  // while started
    vhost::EventLoop* loop = nullptr;   // while the completion fd is watched
  };
  void on_completions(Slot& slot);
  void set_writeback(bool on);

  std::shared_ptr<const Disk> disk_;
  VhostBlkOptions options_;
  ConfigState state_;
  bool wce_negotiated_ = false;
  std::vector<Slot> slots_;
};

}  // namespace vdma::blk

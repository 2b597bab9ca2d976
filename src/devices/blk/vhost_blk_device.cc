// The one file of the block device that includes the vhost transport.
#include "vdma/devices/blk/vhost_blk_device.h"

#include <cstddef>
#include <cstring>

#include "vdma/base/check.h"
#include "vdma/base/log.h"

namespace vdma::blk {
namespace {

constexpr const char* kLog = "blk";
constexpr std::uint32_t kWritebackOffset = offsetof(Config, writeback);

}  // namespace

VhostBlkDevice::VhostBlkDevice(std::shared_ptr<const Disk> disk, VhostBlkOptions options)
    : disk_(std::move(disk)), options_(options), slots_(options.num_queues) {
  VDMA_CHECK(disk_ != nullptr);
  VDMA_CHECK_MSG(check_options(options_), "invalid VhostBlkOptions");
  state_.num_queues = options_.num_queues;
}

VhostBlkDevice::~VhostBlkDevice() {
  for (Slot& s : slots_) {
    if (s.ring != nullptr) ring_stopped(*s.ring);
  }
}

Result<void> VhostBlkDevice::check_options(const VhostBlkOptions& o) {
  if (o.num_queues == 0 || o.num_queues > 64 || o.max_queue_size == 0 || o.max_queue_size > 32768 ||
      o.queue.depth == 0) {
    return Err(Errc::kInvalidOptions);
  }
  return Ok();
}

FeatureSet VhostBlkDevice::features() const {
  return disk_->features() | FeatureSet{kVirtioFVersion1, kVirtioFAccessPlatform,
                                        kVirtioFRingIndirectDesc, kVirtioFRingEventIdx,
                                        kVirtioFRingPacked};
}

vhost::ProtocolFeatureSet VhostBlkDevice::protocol_features() const {
  return {vhost::kProtocolFConfig};
}

Result<void> VhostBlkDevice::read_config(std::uint32_t offset, std::span<std::uint8_t> out) {
  return read_config_bytes(disk_->config(state_), offset, out);
}

Result<void> VhostBlkDevice::write_config(std::uint32_t offset, std::span<const std::uint8_t> in) {
  // Only the writeback byte is writable, and only with CONFIG_WCE (5.2.5).
  if (!wce_negotiated_ || offset != kWritebackOffset || in.size() != 1 || in[0] > 1) {
    return Err(Errc::kConfigAccess);
  }
  set_writeback(in[0] == 1);
  log_info(kLog, "write cache {}", in[0] == 1 ? "on (writeback)" : "off (writethrough)");
  return Ok();
}

void VhostBlkDevice::set_features(FeatureSet negotiated) {
  wce_negotiated_ = negotiated.has(kBlkFConfigWce);
  // Without FLUSH the driver cannot ask for durability: every write must be durable.
  set_writeback(negotiated.has(kBlkFFlush));
}

void VhostBlkDevice::set_writeback(bool on) {
  state_.writeback = on;
  for (Slot& s : slots_) {
    if (s.queue) s.queue->set_writeback(on);
  }
}

void VhostBlkDevice::ring_started(vhost::DeviceRing& ring, vhost::EventLoop& loop) {
  VDMA_CHECK(ring.index() < slots_.size());
  Slot& slot = slots_[ring.index()];
  slot.ring = &ring;
  if (!slot.queue) {
    auto q = BlkQueue::Create(
        *disk_, options_.queue, [&slot](std::uint16_t head, std::uint32_t written) {
          VDMA_CHECK(slot.ring != nullptr);  // requests only complete while the ring runs
          if (auto r = slot.ring->push_used(head, written); !r) {
            log_warn(kLog, "vring {}: push_used({}): {}", slot.ring->index(), head,
                     r.error().message());
          }
        });
    if (!q) {
      log_error(kLog, "vring {}: no I/O engine: {}; answering IOERR", ring.index(),
                q.error().message());
      return;
    }
    slot.queue = std::move(*q);
    slot.queue->set_writeback(state_.writeback);
    log_info(kLog, "vring {}: {} I/O on {}", ring.index(), slot.queue->engine_name(),
             disk_->path());
  }
  if (auto r = loop.add(slot.queue->completion_fd(),
                        [this, &slot](std::uint32_t) { on_completions(slot); });
      !r) {
    log_error(kLog, "vring {}: cannot watch completions: {}", ring.index(), r.error().message());
    return;
  }
  slot.loop = &loop;
}

void VhostBlkDevice::on_completions(Slot& slot) {
  if (!slot.queue || slot.ring == nullptr) return;
  if (slot.queue->reap() != 0) slot.ring->notify();
}

void VhostBlkDevice::process(vhost::DeviceRing& ring) {
  VDMA_CHECK(ring.index() < slots_.size());
  Slot& slot = slots_[ring.index()];
  virtq::Chain chain;
  while (true) {
    auto r = ring.pop(chain);
    if (!r) {
      if (ring.broken()) break;
      continue;  // a malformed chain, already returned to the driver
    }
    if (!*r) break;
    if (slot.queue && slot.loop != nullptr) {
      slot.queue->submit(chain);
    } else {  // no engine: fail the request rather than leave it hanging
      std::byte* status = status_byte(chain);
      if (status != nullptr) *status = std::byte{kStatusIoErr};
      (void)ring.push_used(chain.head, status ? 1 : 0);
    }
  }
  if (slot.queue) slot.queue->flush();
  ring.notify();
}

void VhostBlkDevice::ring_stopped(vhost::DeviceRing& ring) {
  VDMA_CHECK(ring.index() < slots_.size());
  Slot& slot = slots_[ring.index()];
  if (slot.ring != &ring) return;
  if (slot.queue) {
    // The back end unmaps or re-translates guest memory after this returns: every
    // request of this ring completes (and is pushed used) first.
    slot.queue->drain();
    ring.notify();
    if (slot.loop != nullptr) slot.loop->remove(slot.queue->completion_fd());
  }
  slot.loop = nullptr;
  slot.ring = nullptr;
}

void VhostBlkDevice::reset() {
  wce_negotiated_ = false;
  set_writeback(true);
}

const BlkQueue* VhostBlkDevice::queue(std::uint16_t index) const {
  return index < slots_.size() ? slots_[index].queue.get() : nullptr;
}

}  // namespace vdma::blk

// Types shared by both ring layouts and both sides.
//
// Driver side: a buffer is a list of device-readable segments followed by device-writable
// ones, plus a caller token returned with the used buffer.
//   std::array<Segment, 2> segs{{{hdr, 16}, {data, 4096}}};
//   VDMA_TRY(q.add_buffers(std::span(segs).first(1), std::span(segs).subspan(1), token));
//
// Device side: a Chain is what pop() parsed from guest memory: host spans, readable first.
// Its memory is guest-controlled: the driver may change it at any time, so read each byte
// once and never trust what you read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vdma/base/features.h"
#include "vdma/memory/address.h"

namespace vdma::virtq {

// One piece of a driver buffer (driver memory, mapped through the DMA API on add).
struct Segment {
  void* cpu = nullptr;
  std::uint32_t len = 0;
};

// A buffer the device gave back.
struct UsedBuffer {
  std::uint64_t token = 0;
  std::uint32_t len = 0;  // bytes the device wrote, clamped to what was mapped writable
};

// Where a queue's three areas are, as DMA addresses the device resolves (VIRTIO names:
// descriptor area, driver area = avail / driver event suppression, device area = used /
// device event suppression).
struct RingAddresses {
  DmaAddr desc;
  DmaAddr driver;
  DmaAddr device;
  std::uint16_t size_minus_one = 0;  // queue size - 1 (so 32768 fits)
  std::uint32_t size() const { return std::uint32_t{size_minus_one} + 1; }
};

// Ring features that change queue behaviour, taken from the negotiated set.
struct RingFeatures {
  bool indirect = false;
  bool event_idx = false;
  bool packed = false;
  static RingFeatures From(FeatureSet f) {
    return {f.has(kVirtioFRingIndirectDesc), f.has(kVirtioFRingEventIdx),
            f.has(kVirtioFRingPacked)};
  }
};

// What to do when a device reports more written bytes than the writable capacity.
enum class UsedLenPolicy {
  kBreak,  // mark the queue broken (default: the device is lying)
  kClamp,  // clamp to the capacity and count it (for devices known to over-report)
};

struct DriverQueueConfig {
  std::uint32_t size = 256;
  RingFeatures features;
  // Indirect tables hold at most this many descriptors; chains with more segments use
  // ring descriptors directly.
  std::uint32_t max_indirect = 16;
  UsedLenPolicy used_len_policy = UsedLenPolicy::kBreak;
};

struct DeviceQueueConfig {
  RingAddresses rings;
  RingFeatures features;
};

// A device-side view of one descriptor's buffer. guest-controlled bytes.
struct DeviceSegment {
  std::byte* host = nullptr;
  std::uint32_t len = 0;
};

// One available chain, parsed and translated (device side).
struct Chain {
  std::uint16_t head = 0;        // the id to return in the used ring
  std::uint16_t ring_descs = 0;  // descriptors it took in the ring (packed: used skip)
  std::vector<DeviceSegment> readable;
  std::vector<DeviceSegment> writable;
  std::uint64_t readable_bytes = 0;
  std::uint64_t writable_bytes = 0;

  void clear() {
    readable.clear();
    writable.clear();
    readable_bytes = writable_bytes = 0;
    ring_descs = 0;
  }
};

// Counters a queue keeps (either side).
struct QueueStats {
  std::uint64_t added = 0;      // driver: buffers added; device: chains popped
  std::uint64_t completed = 0;  // driver: used buffers returned; device: used pushed
  std::uint64_t notifications = 0;
  std::uint64_t rejected = 0;  // device: chains rejected as malformed
  std::uint64_t clamped = 0;   // driver: used lengths clamped
};

}  // namespace vdma::virtq

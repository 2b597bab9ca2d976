// Wire layout of the packed virtqueue (VIRTIO 1.2, 2.8 "Packed Virtqueues").
#pragma once

#include <cstddef>
#include <cstdint>

#include "vdma/virtq/split_layout.h"

namespace vdma::virtq {

// Descriptor flags beyond NEXT/WRITE/INDIRECT (2.8.1).
inline constexpr std::uint16_t kPackedDescFAvail = 1u << 7;
inline constexpr std::uint16_t kPackedDescFUsed = 1u << 15;

// struct pvirtq_desc
struct PackedDesc {
  std::uint64_t addr;
  std::uint32_t len;
  std::uint16_t id;
  std::uint16_t flags;
};
static_assert(sizeof(PackedDesc) == 16);
static_assert(offsetof(PackedDesc, len) == 8 && offsetof(PackedDesc, id) == 12 &&
              offsetof(PackedDesc, flags) == 14);

// struct pvirtq_event_suppress (2.8.10): off_wrap = offset (bits 0-14) | wrap (bit 15).
struct PackedEventSuppress {
  std::uint16_t off_wrap;
  std::uint16_t flags;
};
static_assert(sizeof(PackedEventSuppress) == 4);

inline constexpr std::uint16_t kEventFlagsEnable = 0;
inline constexpr std::uint16_t kEventFlagsDisable = 1;
inline constexpr std::uint16_t kEventFlagsDesc = 2;  // needs EVENT_IDX

struct PackedAreaSizes {
  static constexpr std::size_t kDescAlign = 16;
  static constexpr std::size_t kEventAlign = 4;
  static constexpr std::size_t desc(std::uint32_t n) { return 16u * n; }
  static constexpr std::size_t event() { return 4; }
};

}  // namespace vdma::virtq

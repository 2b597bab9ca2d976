// Wire layout of the split virtqueue (VIRTIO 1.2, 2.7 "Split Virtqueues").
//
// Plain structs of little-endian fields, checked against the spec's sizes and offsets.
// Indices shared with the peer (avail->idx, used->idx, used_event, avail_event) are only
// touched through std::atomic_ref in the ring code, with the order named there.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace vdma::virtq {

static_assert(std::endian::native == std::endian::little,
              "virtio 1.x rings are little-endian; a big-endian port needs byte swaps here");

inline constexpr std::uint32_t kMaxQueueSize = 32768;

inline constexpr std::uint16_t kDescFNext = 1;
inline constexpr std::uint16_t kDescFWrite = 2;
inline constexpr std::uint16_t kDescFIndirect = 4;

// struct virtq_desc
struct SplitDesc {
  std::uint64_t addr;
  std::uint32_t len;
  std::uint16_t flags;
  std::uint16_t next;
};
static_assert(sizeof(SplitDesc) == 16);
static_assert(offsetof(SplitDesc, len) == 8 && offsetof(SplitDesc, flags) == 12 &&
              offsetof(SplitDesc, next) == 14);

// avail->flags: VIRTQ_AVAIL_F_NO_INTERRUPT.
inline constexpr std::uint16_t kAvailFNoInterrupt = 1;
// used->flags: VIRTQ_USED_F_NO_NOTIFY.
inline constexpr std::uint16_t kUsedFNoNotify = 1;

// struct virtq_avail: flags, idx, ring[size], used_event (with EVENT_IDX).
struct SplitAvailHeader {
  std::uint16_t flags;
  std::uint16_t idx;
};
static_assert(sizeof(SplitAvailHeader) == 4);

// struct virtq_used_elem
struct SplitUsedElem {
  std::uint32_t id;
  std::uint32_t len;
};
static_assert(sizeof(SplitUsedElem) == 8);

// struct virtq_used: flags, idx, ring[size], avail_event (with EVENT_IDX).
struct SplitUsedHeader {
  std::uint16_t flags;
  std::uint16_t idx;
};
static_assert(sizeof(SplitUsedHeader) == 4);

// Byte sizes and alignments of the three areas (2.7 table "Virtqueue Part Alignment").
struct SplitAreaSizes {
  static constexpr std::size_t kDescAlign = 16;
  static constexpr std::size_t kAvailAlign = 2;
  static constexpr std::size_t kUsedAlign = 4;
  static constexpr std::size_t desc(std::uint32_t n) { return 16u * n; }
  static constexpr std::size_t avail(std::uint32_t n) { return 6u + 2u * n; }
  static constexpr std::size_t used(std::uint32_t n) { return 6u + 8u * n; }
};

// vring_need_event: true if moving an index from `old_idx` to `new_idx` passes
// `event_idx` (2.7.10, 2.7.7.2: the EVENT_IDX rule, with 16-bit wrap-around).
constexpr bool need_event(std::uint16_t event_idx, std::uint16_t new_idx, std::uint16_t old_idx) {
  return static_cast<std::uint16_t>(new_idx - event_idx - 1) <
         static_cast<std::uint16_t>(new_idx - old_idx);
}

}  // namespace vdma::virtq

// BouncePool: the swiotlb slot allocator. It hands out runs of 2 KiB slots and knows
// nothing about copying (BounceOps does that).
//
// - 2 KiB slots; a run is at most 128 slots (256 KiB), contiguous, and may be required to
//   start at a slot index with a given alignment and residue (page alignment,
//   min_align_mask).
// - The pool is split into independent areas, each with its own spinlock, bitmap and
//   statistics; a thread starts in "its" area and moves on only when that one is full,
//   so threads do not serialise on one lock or share a cache line on the fast path.
// - Within an area the lowest free run is used, which keeps recently used (cache-hot)
//   slots in play.
// - Full is an error value (retry later), counted, never an abort.
//
//   auto pool = VDMA_TRY(BouncePool::Create(64 << 20, /*areas=*/0));
//   SlotRun run = VDMA_TRY(pool->allocate({.slots = 2, .align = 2, .residue = 0}));
//   pool->free(run);
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "vdma/base/result.h"

namespace vdma::dma {

inline constexpr std::uint64_t kSlotSize = 2048;
inline constexpr std::uint32_t kMaxSlotsPerRun = 128;

struct SlotRun {
  std::uint32_t index = 0;  // first slot, pool-wide
  std::uint32_t count = 0;
};

struct SlotRequest {
  std::uint32_t slots = 1;    // 1..kMaxSlotsPerRun
  std::uint32_t align = 1;    // power of two, <= 32: the run starts at index % align ==
  std::uint32_t residue = 0;  // residue
};

struct BouncePoolStats {
  std::uint64_t total_slots = 0;
  std::uint64_t slots_in_use = 0;
  // Sum of each area's peak. Exact with one area or one thread; an upper bound otherwise
  // (areas may peak at different times). Kept per area so the hot path shares no line.
  std::uint64_t high_water_slots = 0;
  std::uint64_t failed_maps = 0;
  std::uint64_t maps = 0;
  std::uint64_t bytes_bounced = 0;
  std::uint32_t areas = 0;
};

class BouncePool {
 public:
  // bytes: a multiple of areas * 64 KiB; areas: 0 picks one per CPU (a power of two, at
  // most 64, each area at least 128 slots). Errors: kInvalidOption.
  static Result<std::unique_ptr<BouncePool>> Create(std::uint64_t bytes, std::uint32_t areas);

  // Errors: kInvalidOption (bad request), kPoolFull.
  Result<SlotRun> allocate(const SlotRequest& req);
  // The run must be one returned by allocate() and not yet freed (callers validate).
  void free(SlotRun run);

  void add_bytes_bounced(std::uint32_t slot, std::uint64_t n);
  BouncePoolStats stats() const;
  std::uint32_t total_slots() const { return total_slots_; }
  std::uint32_t area_count() const { return static_cast<std::uint32_t>(areas_.size()); }

  BouncePool(const BouncePool&) = delete;
  BouncePool& operator=(const BouncePool&) = delete;
  ~BouncePool();

 private:
  struct Area;
  BouncePool(std::uint32_t total_slots, std::uint32_t areas);
  Area& area_of(std::uint32_t slot);

  std::uint32_t total_slots_;
  std::uint32_t slots_per_area_;
  std::vector<std::unique_ptr<Area>> areas_;
};

}  // namespace vdma::dma

// CoherentPool: zeroed, long-lived allocations from one shared region (rings, small
// control structures), each with a CPU pointer and a DMA address.
//
// Allocations are 64-byte granular and aligned (page aligned from one page up), zeroed
// on allocation so no stale bytes reach the device. Frees are validated. One pool serves
// every DmaOps of a guest; each passes the DMA address at which the device sees the pool
// (its Gpa, or an IOVA), and records carry base + offset.
//
//   CoherentPool pool(region.bytes());
//   CoherentRecord ring = VDMA_TRY(pool.allocate(16 * 256, DmaAddr{region_gpa.value()}));
//   VDMA_TRY(pool.free(ring, DmaAddr{region_gpa.value()}));
#pragma once

#include <cstdint>
#include <span>

#include "vdma/base/result.h"
#include "vdma/dma/dma_ops.h"
#include "vdma/memory/range_allocator.h"

namespace vdma::dma {

class CoherentPool {
 public:
  explicit CoherentPool(std::span<std::byte> host);

  // Errors: kZeroLength, kCoherentPoolFull.
  Result<CoherentRecord> allocate(std::uint64_t len, DmaAddr dma_base);
  // Errors: kUnknownMapping (not from this pool at this base), kNotMapped (already freed).
  Result<void> free(const CoherentRecord& c, DmaAddr dma_base);
  // What free() would say, without freeing.
  Result<void> check(const CoherentRecord& c, DmaAddr dma_base) const;

  std::span<std::byte> host() const { return host_; }
  std::uint64_t bytes_free() const { return alloc_.bytes_free(); }

 private:
  std::span<std::byte> host_;
  memory::RangeAllocator alloc_;
};

}  // namespace vdma::dma

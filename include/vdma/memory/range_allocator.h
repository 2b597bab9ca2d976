// RangeAllocator: hands out aligned sub-ranges of a fixed 64-bit range, first fit.
//
// Used for IOVA space, coherent pools and guest buffers: anything allocated rarely
// compared with per-I/O work. Thread-safe (one mutex). Frees are validated: a range must
// be freed exactly as it was allocated, once.
//
//   RangeAllocator a(/*base=*/0x10000, /*size=*/1 << 20);
//   uint64_t x = VDMA_TRY(a.allocate(8192, /*align=*/4096));
//   VDMA_TRY(a.free(x, 8192));
#pragma once

#include <cstdint>
#include <map>
#include <mutex>

#include "vdma/base/result.h"

namespace vdma::memory {

class RangeAllocator {
 public:
  RangeAllocator(std::uint64_t base, std::uint64_t size);

  // align must be a power of two. Errors: kZeroLength, kInvalidArgument, kNoSpace.
  Result<std::uint64_t> allocate(std::uint64_t size, std::uint64_t align);
  // Errors: kBadFree if [addr, addr + size) is not exactly one live allocation.
  Result<void> free(std::uint64_t addr, std::uint64_t size);

  // True if [addr, addr + size) is exactly one live allocation.
  bool is_allocated(std::uint64_t addr, std::uint64_t size) const;

  std::uint64_t base() const { return base_; }
  std::uint64_t capacity() const { return size_; }
  std::uint64_t bytes_free() const;
  std::size_t live_allocations() const;

 private:
  const std::uint64_t base_;
  const std::uint64_t size_;
  mutable std::mutex mu_;
  std::map<std::uint64_t, std::uint64_t> free_;  // start -> length; coalesced
  std::map<std::uint64_t, std::uint64_t> used_;  // start -> length
  std::uint64_t bytes_free_;
};

}  // namespace vdma::memory

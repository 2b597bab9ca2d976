#include "vdma/memory/range_allocator.h"

#include "vdma/memory/address.h"
#include "vdma/memory/errors.h"

namespace vdma::memory {

RangeAllocator::RangeAllocator(std::uint64_t base, std::uint64_t size)
    : base_(base), size_(size), bytes_free_(size) {
  VDMA_CHECK(checked_end(base, size).has_value());
  if (size > 0) free_.emplace(base, size);
}

Result<std::uint64_t> RangeAllocator::allocate(std::uint64_t size, std::uint64_t align) {
  if (size == 0) return Err(Errc::kZeroLength);
  if (align == 0 || (align & (align - 1)) != 0) return Err(Errc::kInvalidArgument);
  std::lock_guard lock(mu_);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    const std::uint64_t start = it->first;
    const std::uint64_t len = it->second;
    const std::uint64_t aligned = (start + align - 1) & ~(align - 1);
    if (aligned < start) continue;  // wrapped: cannot fit
    const std::uint64_t pad = aligned - start;
    if (pad > len || size > len - pad) continue;
    free_.erase(it);
    if (pad > 0) free_.emplace(start, pad);
    const std::uint64_t tail = len - pad - size;
    if (tail > 0) free_.emplace(aligned + size, tail);
    used_.emplace(aligned, size);
    bytes_free_ -= size;
    return aligned;
  }
  return Err(Errc::kNoSpace);
}

Result<void> RangeAllocator::free(std::uint64_t addr, std::uint64_t size) {
  std::lock_guard lock(mu_);
  auto u = used_.find(addr);
  if (u == used_.end() || u->second != size) return Err(Errc::kBadFree);
  used_.erase(u);
  bytes_free_ += size;
  std::uint64_t start = addr;
  std::uint64_t len = size;
  auto next = free_.lower_bound(addr);
  if (next != free_.end() && next->first == addr + size) {
    len += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      len += prev->second;
      free_.erase(prev);
    }
  }
  free_.emplace(start, len);
  return Ok();
}

bool RangeAllocator::is_allocated(std::uint64_t addr, std::uint64_t size) const {
  std::lock_guard lock(mu_);
  auto u = used_.find(addr);
  return u != used_.end() && u->second == size;
}

std::uint64_t RangeAllocator::bytes_free() const {
  std::lock_guard lock(mu_);
  return bytes_free_;
}

std::size_t RangeAllocator::live_allocations() const {
  std::lock_guard lock(mu_);
  return used_.size();
}

}  // namespace vdma::memory

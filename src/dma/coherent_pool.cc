#include "vdma/dma/coherent_pool.h"

#include <cstring>

#include "vdma/memory/errors.h"

namespace vdma::dma {
namespace {
constexpr std::uint64_t kGranule = 64;
constexpr std::uint64_t kPage = 4096;

std::uint64_t rounded(std::uint64_t len) {
  return (len + kGranule - 1) & ~(kGranule - 1);
}
}  // namespace

CoherentPool::CoherentPool(std::span<std::byte> host) : host_(host), alloc_(0, host.size()) {}

Result<CoherentRecord> CoherentPool::allocate(std::uint64_t len, DmaAddr dma_base) {
  if (len == 0) return Err(Errc::kZeroLength);
  if (len > host_.size()) return Err(Errc::kCoherentPoolFull);
  auto off = alloc_.allocate(rounded(len), len >= kPage ? kPage : kGranule);
  if (!off) return Err(Errc::kCoherentPoolFull);
  std::byte* cpu = host_.data() + *off;
  std::memset(cpu, 0, rounded(len));
  return CoherentRecord{dma_base + *off, cpu, len, *off};
}

Result<void> CoherentPool::check(const CoherentRecord& c, DmaAddr dma_base) const {
  if (c.cookie >= host_.size() || c.cpu != host_.data() + c.cookie ||
      c.addr != dma_base + c.cookie || c.len == 0) {
    return Err(Errc::kUnknownMapping);
  }
  if (!alloc_.is_allocated(c.cookie, rounded(c.len))) return Err(Errc::kNotMapped);
  return Ok();
}

Result<void> CoherentPool::free(const CoherentRecord& c, DmaAddr dma_base) {
  if (c.cookie >= host_.size() || c.cpu != host_.data() + c.cookie ||
      c.addr != dma_base + c.cookie || c.len == 0) {
    return Err(Errc::kUnknownMapping);
  }
  auto r = alloc_.free(c.cookie, rounded(c.len));
  if (!r) return Err(Errc::kNotMapped);
  return Ok();
}

}  // namespace vdma::dma

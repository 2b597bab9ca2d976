#include "vdma/memory/guest_memory.h"

#include <algorithm>

#include "vdma/memory/errors.h"

namespace vdma::memory {

Result<GuestRegion> GuestMemory::add(Gpa gpa, MemfdRegion region) {
  auto end = checked_end(gpa.value(), region.size());
  if (!end) return Err(Errc::kOverflow);
  for (const GuestRegion& r : by_gpa_) {
    if (gpa.value() < r.end().value() && r.gpa.value() < *end) return Err(Errc::kOverlap);
  }
  owned_.push_back(std::make_unique<MemfdRegion>(std::move(region)));
  const MemfdRegion* m = owned_.back().get();
  GuestRegion r{gpa, m->size(), m->host(), m, m->kind() == RegionKind::kShared};
  auto by_gpa = [](const GuestRegion& a, const GuestRegion& b) { return a.gpa < b.gpa; };
  by_gpa_.insert(std::upper_bound(by_gpa_.begin(), by_gpa_.end(), r, by_gpa), r);
  return r;
}

Result<std::span<std::byte>> GuestMemory::translate(Gpa gpa, std::uint64_t len) const {
  if (len == 0) return Err(Errc::kZeroLength);
  auto end = checked_end(gpa.value(), len);
  if (!end) return Err(Errc::kOverflow);
  const GuestRegion* r = region_at(gpa);
  if (r == nullptr) return Err(Errc::kOutOfRange);
  std::uint64_t off = gpa - r->gpa;
  if (len > r->size - off) return Err(Errc::kStraddlesRegion);
  return std::span<std::byte>(r->host + off, static_cast<std::size_t>(len));
}

Result<const GuestRegion*> GuestMemory::region_of(const void* host, std::uint64_t len) const {
  if (len == 0) return Err(Errc::kZeroLength);
  auto addr = reinterpret_cast<std::uintptr_t>(host);
  if (!checked_end(addr, len)) return Err(Errc::kOverflow);
  const GuestRegion* r = region_holding(host);
  if (r == nullptr) return Err(Errc::kOutOfRange);
  const std::uint64_t off = addr - reinterpret_cast<std::uintptr_t>(r->host);
  if (len > r->size - off) return Err(Errc::kStraddlesRegion);
  return r;
}

Result<Gpa> GuestMemory::gpa_of(const void* host, std::uint64_t len) const {
  const GuestRegion* r = VDMA_TRY(region_of(host, len));
  return r->gpa + static_cast<std::uint64_t>(static_cast<const std::byte*>(host) - r->host);
}

}  // namespace vdma::memory

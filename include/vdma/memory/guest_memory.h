// GuestMemory: the driver's guest-physical address space, made of memfd regions.
//
// Each region sits at a guest-physical address (Gpa) and is mapped in this process.
// Translation of (address, length) is bounds checked: it never wraps and never runs past
// the end of a region silently (a range that straddles two regions is an error even when
// they are adjacent, because their host mappings are not).
//
// Regions are added while the address space is set up; lookups are then lock-free and may
// run on any thread. Adding a region concurrently with lookups is not supported.
//
//   GuestMemory mem;
//   VDMA_TRY(mem.add(Gpa{0}, VDMA_TRY(MemfdRegion::Create("ram", 1 << 20, kPrivate))));
//   std::span<std::byte> s = VDMA_TRY(mem.translate(Gpa{0x1000}, 512));
//   Gpa g = VDMA_TRY(mem.gpa_of(s.data(), 512));        // == Gpa{0x1000}
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "vdma/base/result.h"
#include "vdma/memory/address.h"
#include "vdma/memory/memfd_region.h"

namespace vdma::memory {

// One region as the address space sees it.
struct GuestRegion {
  Gpa gpa;
  std::uint64_t size = 0;
  std::byte* host = nullptr;
  const MemfdRegion* backing = nullptr;
  bool is_shared = false;  // backing->kind() == kShared, kept here for hot lookups

  Gpa end() const { return gpa + size; }
  bool shared() const { return is_shared; }
};

class GuestMemory {
 public:
  GuestMemory() = default;
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  // Places `region` at `gpa`. Errors: kOverflow (gpa + size wraps), kOverlap.
  Result<GuestRegion> add(Gpa gpa, MemfdRegion region);

  // Host bytes of [gpa, gpa + len). Errors: kZeroLength, kOverflow, kOutOfRange,
  // kStraddlesRegion.
  Result<std::span<std::byte>> translate(Gpa gpa, std::uint64_t len) const;

  // The Gpa of host bytes [host, host + len), which must lie in one region.
  Result<Gpa> gpa_of(const void* host, std::uint64_t len) const;

  // The region holding host bytes [host, host + len). Errors as gpa_of.
  Result<const GuestRegion*> region_of(const void* host, std::uint64_t len) const;

  // The region containing `gpa`, or nullptr. Inline: it is on every device-side
  // translation. Guests have a handful of regions, so a linear scan beats a search.
  const GuestRegion* region_at(Gpa gpa) const {
    for (const GuestRegion& r : by_gpa_) {
      if (gpa.value() - r.gpa.value() < r.size) return &r;  // wraps (huge) when below
    }
    return nullptr;
  }

  // The region holding host address `host`, or nullptr (on every direct-ops map).
  const GuestRegion* region_holding(const void* host) const {
    const auto a = reinterpret_cast<std::uintptr_t>(host);
    for (const GuestRegion& r : by_gpa_) {
      if (a - reinterpret_cast<std::uintptr_t>(r.host) < r.size) return &r;
    }
    return nullptr;
  }

  // All regions, by ascending Gpa.
  std::span<const GuestRegion> regions() const { return by_gpa_; }

 private:
  std::vector<std::unique_ptr<MemfdRegion>> owned_;
  std::vector<GuestRegion> by_gpa_;  // sorted by gpa
};

}  // namespace vdma::memory

// BackendMemory: the back end's view of the memory the front end shared with it — the
// regions of SET_MEM_TABLE / ADD_MEM_REG, each mmap'ed from the fd that came with it.
//
// Two address spaces lead into it: guest-physical addresses (what descriptors carry
// without ACCESS_PLATFORM) and front-end user addresses (ring addresses without
// ACCESS_PLATFORM; IOTLB targets with it). Every translation checks that the whole range
// lies inside one region; nothing wraps. Each region's fd is checked to be at least
// mmap_offset + size long before it is mapped (a shorter fd would fault on access), and a
// region that cannot be mapped fails the whole request, leaving the previous table intact.
// Not thread-safe: the connection's thread owns it.
//
//   BackendMemory mem;
//   VDMA_TRY(mem.set_table(table.regions, std::move(table.fds)));
//   std::byte* p = VDMA_TRY(mem.gpa_to_host(desc.addr, desc.len));
#pragma once

#include <cstdint>
#include <vector>

#include "vdma/base/result.h"
#include "vdma/memory/memfd_region.h"
#include "vdma/memory/unique_fd.h"
#include "vdma/vhost/protocol.h"

namespace vdma::vhost {

class BackendMemory {
 public:
  // What GET_MAX_MEM_SLOTS announces (CONFIGURE_MEM_SLOTS).
  static constexpr std::size_t kMaxSlots = 32;

  struct Region {
    MemoryRegion desc;            // as the front end described it
    memory::HostMapping mapping;  // covers mmap_offset rounded down to a page, + size
    std::byte* host = nullptr;    // the host address of desc.guest_addr
  };

  // Replaces the whole table (SET_MEM_TABLE); fds[i] backs regions[i]. All or nothing.
  // Errors: kRegionNotMappable, kRegionOverflow, kTooManyRegions, kRegionOverlap.
  Result<void> set_table(const std::vector<MemoryRegion>& regions, std::vector<UniqueFd> fds);
  // ADD_MEM_REG. Errors: kNoFreeMemSlot, kRegionInUse (overlaps a mapped region in guest
  // or user address space), kRegionNotMappable, kRegionOverflow.
  Result<void> add_region(const MemoryRegion& region, UniqueFd fd);
  // REM_MEM_REG: the region with this guest address, size and user address. kNoSuchRegion.
  Result<void> remove_region(const MemoryRegion& region);
  void clear();

  // Host bytes for [gpa, gpa + len) / [uva, uva + len). kRingNotMapped if any byte is
  // outside one region (callers map it to their own error), kRegionOverflow on wrap.
  Result<std::byte*> gpa_to_host(std::uint64_t gpa, std::uint64_t len) const;
  Result<std::byte*> uva_to_host(std::uint64_t uva, std::uint64_t len) const;
  // The longest prefix of [addr, addr + len) inside one region: its host address and
  // length (> 0). kRingNotMapped if `addr` itself is outside every region.
  struct Piece {
    std::byte* host;
    std::uint64_t len;
  };
  Result<Piece> gpa_prefix(std::uint64_t gpa, std::uint64_t len) const;
  Result<Piece> uva_prefix(std::uint64_t uva, std::uint64_t len) const;
  // The guest-physical address of a user address (ring addresses), if mapped.
  Result<std::uint64_t> uva_to_gpa(std::uint64_t uva, std::uint64_t len) const;

  std::size_t size() const { return regions_.size(); }
  const std::vector<Region>& regions() const { return regions_; }
  // Bumped on every change: translations cached elsewhere are stale when it moves.
  std::uint64_t generation() const { return generation_; }

 private:
  static Result<Region> Map(const MemoryRegion& desc, int fd);
  const Region* find_gpa(std::uint64_t gpa, std::uint64_t len) const;
  const Region* find_uva(std::uint64_t uva, std::uint64_t len) const;

  std::vector<Region> regions_;
  mutable std::size_t last_hit_ = 0;
  std::uint64_t generation_ = 0;
};

}  // namespace vdma::vhost

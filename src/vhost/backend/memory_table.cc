#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>

#include "vdma/base/log.h"
#include "vdma/memory/address.h"
#include "vdma/vhost/backend_memory.h"
#include "vdma/vhost/errors.h"

namespace vdma::vhost {
namespace {

constexpr std::uint64_t kPage = 4096;

bool contains(std::uint64_t start, std::uint64_t size, std::uint64_t addr, std::uint64_t len) {
  return addr >= start && len <= size && addr - start <= size - len;
}

bool overlaps(std::uint64_t a, std::uint64_t alen, std::uint64_t b, std::uint64_t blen) {
  return a < b + blen && b < a + alen;  // callers have checked neither range wraps
}

Result<void> check_ranges(const MemoryRegion& r) {
  if (r.size == 0) return Err(Errc::kZeroSizeRegion);
  if (!checked_end(r.guest_addr, r.size) || !checked_end(r.user_addr, r.size) ||
      !checked_end(r.mmap_offset, r.size) ||
      r.mmap_offset + r.size > static_cast<std::uint64_t>(INT64_MAX)) {
    return Err(Errc::kRegionOverflow);
  }
  return Ok();
}

}  // namespace

Result<BackendMemory::Region> BackendMemory::Map(const MemoryRegion& desc, int fd) {
  VDMA_TRY(check_ranges(desc));
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Err(Errc::kRegionNotMappable);
  // Regular files and memfds have a length; a region past it would SIGBUS on access.
  if (S_ISREG(st.st_mode) &&
      static_cast<std::uint64_t>(st.st_size) < desc.mmap_offset + desc.size) {
    log_warn("vhost.backend", "region gpa {:#x} size {:#x}: fd holds only {:#x} bytes",
             desc.guest_addr, desc.size, static_cast<std::uint64_t>(st.st_size));
    return Err(Errc::kRegionNotMappable);
  }
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode) && !S_ISCHR(st.st_mode)) {
    return Err(Errc::kRegionNotMappable);  // sockets, pipes, directories ...
  }
  const std::uint64_t start = desc.mmap_offset & ~(kPage - 1);
  const std::uint64_t lead = desc.mmap_offset - start;
  auto m = memory::HostMapping::Map(fd, desc.size + lead, start, PROT_READ | PROT_WRITE);
  if (!m) {
    log_warn("vhost.backend", "mmap of region gpa {:#x} size {:#x} failed: {}", desc.guest_addr,
             desc.size, m.error().message());
    return Err(Errc::kRegionNotMappable);
  }
  Region r{desc, std::move(*m), nullptr};
  r.host = r.mapping.data() + lead;
  return r;
}

Result<void> BackendMemory::set_table(const std::vector<MemoryRegion>& regions,
                                      std::vector<UniqueFd> fds) {
  if (regions.size() != fds.size()) return Err(Errc::kFdCountMismatch);
  if (regions.size() > kMaxSlots) return Err(Errc::kTooManyRegions);
  std::vector<Region> mapped;
  mapped.reserve(regions.size());
  for (std::size_t i = 0; i < regions.size(); ++i) {
    Region r = VDMA_TRY(Map(regions[i], fds[i].get()));
    for (const Region& o : mapped) {
      if (overlaps(o.desc.guest_addr, o.desc.size, r.desc.guest_addr, r.desc.size)) {
        return Err(Errc::kRegionOverlap);
      }
    }
    mapped.push_back(std::move(r));
  }
  regions_ = std::move(mapped);  // the old mappings go now
  last_hit_ = 0;
  ++generation_;
  return Ok();
}

Result<void> BackendMemory::add_region(const MemoryRegion& region, UniqueFd fd) {
  if (regions_.size() >= kMaxSlots) return Err(Errc::kNoFreeMemSlot);
  VDMA_TRY(check_ranges(region));
  for (const Region& o : regions_) {
    if (overlaps(o.desc.guest_addr, o.desc.size, region.guest_addr, region.size) ||
        overlaps(o.desc.user_addr, o.desc.size, region.user_addr, region.size)) {
      return Err(Errc::kRegionInUse);
    }
  }
  regions_.push_back(VDMA_TRY(Map(region, fd.get())));
  ++generation_;
  return Ok();
}

Result<void> BackendMemory::remove_region(const MemoryRegion& region) {
  for (auto it = regions_.begin(); it != regions_.end(); ++it) {
    if (it->desc.guest_addr == region.guest_addr && it->desc.size == region.size &&
        it->desc.user_addr == region.user_addr) {
      regions_.erase(it);
      last_hit_ = 0;
      ++generation_;
      return Ok();
    }
  }
  return Err(Errc::kNoSuchRegion);
}

void BackendMemory::clear() {
  regions_.clear();
  last_hit_ = 0;
  ++generation_;
}

const BackendMemory::Region* BackendMemory::find_gpa(std::uint64_t gpa, std::uint64_t len) const {
  if (last_hit_ < regions_.size()) {
    const Region& r = regions_[last_hit_];
    if (contains(r.desc.guest_addr, r.desc.size, gpa, len)) return &r;
  }
  for (std::size_t i = 0; i < regions_.size(); ++i) {
    if (contains(regions_[i].desc.guest_addr, regions_[i].desc.size, gpa, len)) {
      last_hit_ = i;
      return &regions_[i];
    }
  }
  return nullptr;
}

const BackendMemory::Region* BackendMemory::find_uva(std::uint64_t uva, std::uint64_t len) const {
  for (const Region& r : regions_) {
    if (contains(r.desc.user_addr, r.desc.size, uva, len)) return &r;
  }
  return nullptr;
}

Result<std::byte*> BackendMemory::gpa_to_host(std::uint64_t gpa, std::uint64_t len) const {
  if (!checked_end(gpa, len)) return Err(Errc::kRegionOverflow);
  const Region* r = find_gpa(gpa, len);
  if (r == nullptr) return Err(Errc::kRingNotMapped);
  return r->host + (gpa - r->desc.guest_addr);
}

Result<std::byte*> BackendMemory::uva_to_host(std::uint64_t uva, std::uint64_t len) const {
  if (!checked_end(uva, len)) return Err(Errc::kRegionOverflow);
  const Region* r = find_uva(uva, len);
  if (r == nullptr) return Err(Errc::kRingNotMapped);
  return r->host + (uva - r->desc.user_addr);
}

Result<BackendMemory::Piece> BackendMemory::gpa_prefix(std::uint64_t gpa, std::uint64_t len) const {
  if (len == 0 || !checked_end(gpa, len)) return Err(Errc::kRegionOverflow);
  const Region* r = find_gpa(gpa, 1);
  if (r == nullptr) return Err(Errc::kRingNotMapped);
  const std::uint64_t off = gpa - r->desc.guest_addr;
  return Piece{r->host + off, std::min(len, r->desc.size - off)};
}

Result<BackendMemory::Piece> BackendMemory::uva_prefix(std::uint64_t uva, std::uint64_t len) const {
  if (len == 0 || !checked_end(uva, len)) return Err(Errc::kRegionOverflow);
  const Region* r = find_uva(uva, 1);
  if (r == nullptr) return Err(Errc::kRingNotMapped);
  const std::uint64_t off = uva - r->desc.user_addr;
  return Piece{r->host + off, std::min(len, r->desc.size - off)};
}

Result<std::uint64_t> BackendMemory::uva_to_gpa(std::uint64_t uva, std::uint64_t len) const {
  if (!checked_end(uva, len)) return Err(Errc::kRegionOverflow);
  const Region* r = find_uva(uva, len);
  if (r == nullptr) return Err(Errc::kRingNotMapped);
  return r->desc.guest_addr + (uva - r->desc.user_addr);
}

}  // namespace vdma::vhost

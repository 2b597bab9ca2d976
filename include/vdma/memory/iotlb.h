// IotlbTable: I/O virtual address ranges translated to target addresses, with permissions.
//
// It is both the IOMMU's translation table on the driver side (the source of truth) and,
// in a later layer, the device's IOTLB cache. Entries never overlap. Lookups take
// (iova, length, access) and return the target range or a precise error: a miss, a
// permission violation, or a range whose pieces are not contiguous in the target space.
// Not thread-safe: the owner locks.
//
//   IotlbTable t;
//   VDMA_TRY(t.insert({Iova{0x1000}, 0x2000, /*target=*/0x80000, Access::kRead}));
//   auto tr = t.lookup(Iova{0x1800}, 64, Access::kRead);   // target 0x80800, len 64
//   t.lookup(Iova{0x1800}, 64, Access::kWrite);             // Errc::kIotlbPermission
#pragma once

#include <cstdint>
#include <map>

#include "vdma/base/result.h"
#include "vdma/memory/address.h"

namespace vdma::memory {

// What a device may do with a range (bit set: read = 1, write = 2).
enum class Access : std::uint8_t { kNone = 0, kRead = 1, kWrite = 2, kReadWrite = 3 };

constexpr bool permits(Access granted, Access wanted) {
  auto g = static_cast<std::uint8_t>(granted);
  auto w = static_cast<std::uint8_t>(wanted);
  return (g & w) == w;
}
const char* access_name(Access a);

struct IotlbEntry {
  Iova iova;
  std::uint64_t size = 0;
  std::uint64_t target = 0;  // translated start (a Gpa or a front-end address)
  Access perm = Access::kNone;
};

struct IotlbTranslation {
  std::uint64_t target = 0;
  std::uint64_t len = 0;
};

class IotlbTable {
 public:
  // Errors: kZeroLength, kOverflow (iova or target range wraps), kInvalidArgument
  // (perm kNone), kOverlap (any part already mapped).
  Result<void> insert(const IotlbEntry& e);

  // Removes every entry overlapping [iova, iova + size) (whole entries: a partly covered
  // entry is dropped, never trimmed, so nothing stale survives). Returns how many.
  std::size_t invalidate(Iova iova, std::uint64_t size);

  // The whole of [iova, iova + len) with `access`. Errors: kZeroLength, kOverflow,
  // kIotlbMiss (some byte unmapped), kIotlbPermission, kIotlbFragmented.
  Result<IotlbTranslation> lookup(Iova iova, std::uint64_t len, Access access) const;

  // The longest contiguous, permitted prefix of [iova, iova + len) (len may come back
  // shorter). Errors as lookup, but only for the first byte.
  Result<IotlbTranslation> lookup_prefix(Iova iova, std::uint64_t len, Access access) const;

  // The entry containing `iova`, if any.
  const IotlbEntry* find(Iova iova) const;

  std::size_t size() const { return entries_.size(); }
  void clear() { entries_.clear(); }

 private:
  std::map<std::uint64_t, IotlbEntry> entries_;  // keyed by iova start
};

}  // namespace vdma::memory

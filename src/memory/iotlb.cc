#include "vdma/memory/iotlb.h"

#include "vdma/memory/errors.h"

namespace vdma::memory {

const char* access_name(Access a) {
  switch (a) {
    case Access::kNone:
      return "none";
    case Access::kRead:
      return "read";
    case Access::kWrite:
      return "write";
    case Access::kReadWrite:
      return "read-write";
  }
  return "?";
}

Result<void> IotlbTable::insert(const IotlbEntry& e) {
  if (e.size == 0) return Err(Errc::kZeroLength);
  if (e.perm == Access::kNone) return Err(Errc::kInvalidArgument);
  auto end = checked_end(e.iova.value(), e.size);
  if (!end || !checked_end(e.target, e.size)) return Err(Errc::kOverflow);
  auto next = entries_.lower_bound(e.iova.value());
  if (next != entries_.end() && next->first < *end) return Err(Errc::kOverlap);
  if (next != entries_.begin()) {
    const IotlbEntry& prev = std::prev(next)->second;
    if (prev.iova.value() + prev.size > e.iova.value()) return Err(Errc::kOverlap);
  }
  entries_.emplace_hint(next, e.iova.value(), e);
  return Ok();
}

std::size_t IotlbTable::invalidate(Iova iova, std::uint64_t size) {
  if (size == 0) return 0;
  // A range running past 2^64 is clamped: everything from iova up is invalidated.
  std::uint64_t end = checked_end(iova.value(), size).value_or(UINT64_MAX);
  auto it = entries_.lower_bound(iova.value());
  if (it != entries_.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second.size > iova.value()) it = prev;
  }
  std::size_t n = 0;
  while (it != entries_.end() && it->first < end) {
    it = entries_.erase(it);
    ++n;
  }
  return n;
}

const IotlbEntry* IotlbTable::find(Iova iova) const {
  auto it = entries_.upper_bound(iova.value());
  if (it == entries_.begin()) return nullptr;
  --it;
  return iova.value() - it->first < it->second.size ? &it->second : nullptr;
}

Result<IotlbTranslation> IotlbTable::lookup_prefix(Iova iova, std::uint64_t len,
                                                   Access access) const {
  if (len == 0) return Err(Errc::kZeroLength);
  auto end = checked_end(iova.value(), len);
  if (!end) return Err(Errc::kOverflow);
  const IotlbEntry* e = find(iova);
  if (e == nullptr) return Err(Errc::kIotlbMiss);
  if (!permits(e->perm, access)) return Err(Errc::kIotlbPermission);
  std::uint64_t off = iova - e->iova;
  IotlbTranslation t{e->target + off, std::min(len, e->size - off)};
  // Extend across following entries while they continue both address spaces.
  auto it = entries_.upper_bound(e->iova.value());
  std::uint64_t next_iova = e->iova.value() + e->size;
  std::uint64_t next_target = e->target + e->size;
  while (t.len < len && it != entries_.end() && it->first == next_iova &&
         it->second.target == next_target && permits(it->second.perm, access)) {
    t.len += std::min(len - t.len, it->second.size);
    next_iova += it->second.size;
    next_target += it->second.size;
    ++it;
  }
  return t;
}

Result<IotlbTranslation> IotlbTable::lookup(Iova iova, std::uint64_t len, Access access) const {
  IotlbTranslation t = VDMA_TRY(lookup_prefix(iova, len, access));
  if (t.len == len) return t;
  // Classify why the prefix stopped: the byte right after it.
  const IotlbEntry* e = find(iova + t.len);
  if (e == nullptr) return Err(Errc::kIotlbMiss);
  if (!permits(e->perm, access)) return Err(Errc::kIotlbPermission);
  return Err(Errc::kIotlbFragmented);
}

}  // namespace vdma::memory

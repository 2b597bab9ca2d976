// Errors of the memory module (guest address space, regions, allocators, IOTLB).
//
// Operating-system failures (mmap, memfd_create, ...) are reported with
// std::system_category and the errno value instead.
#pragma once

#include <system_error>

#include "vdma/base/error.h"

namespace vdma::memory {

enum class Errc {
  // An address (and length) lies outside every region of the address space.
  kOutOfRange = 1,
  // The range starts inside a region but runs past its end: never split silently.
  kStraddlesRegion,
  // address + length wraps around 2^64.
  kOverflow,
  // A zero-length range was asked for where a length is required.
  kZeroLength,
  // A new region or IOTLB entry overlaps an existing one.
  kOverlap,
  // The file descriptor of a private region was requested: private memory is never shared.
  kPrivateRegion,
  // A size, alignment or option is invalid (not a power of two, zero, too large).
  kInvalidArgument,
  // A range allocator has no free range of the requested size and alignment.
  kNoSpace,
  // A free of a range that is not currently allocated (double free or unknown range).
  kBadFree,
  // IOTLB: no entry covers the address.
  kIotlbMiss,
  // IOTLB: an entry covers the address but does not grant the requested access.
  kIotlbPermission,
  // IOTLB: the range is covered only by entries whose targets are not contiguous.
  kIotlbFragmented,
};

const char* describe(Errc e);
const std::error_category& memory_category();
inline std::error_code make_error_code(Errc e) {
  return {static_cast<int>(e), memory_category()};
}

// An errno value as a std::error_code (system category).
inline std::error_code errno_code(int err) {
  return {err, std::system_category()};
}

}  // namespace vdma::memory

VDMA_ERROR_ENUM(vdma::memory::Errc)

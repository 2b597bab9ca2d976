// Errors of the DMA API. Each says what the caller can do about it; is_retryable() tells
// which ones clear up by themselves once other mappings are released.
#pragma once

#include <system_error>

#include "vdma/base/error.h"

namespace vdma::dma {

enum class Errc {
  // map/alloc_coherent of zero bytes.
  kZeroLength = 1,
  // Longer than max_mapping_size() (bounce: 256 KiB less the min_align_mask offset).
  kTooLarge,
  // cpu pointer + length wraps the address space.
  kOverflow,
  // The buffer is not inside one shared guest-memory region, so the device cannot reach
  // it by address (direct and IOMMU ops).
  kNotDmaable,
  // No free run of bounce slots right now. Retryable: unmap something and try again.
  kPoolFull,
  // The coherent pool has no room for this allocation. Retryable.
  kCoherentPoolFull,
  // The IOVA space has no free range of this size. Retryable.
  kIovaSpaceFull,
  // unmap/sync of a mapping that is not (or no longer) mapped: a double unmap.
  kNotMapped,
  // A mapping record these ops never issued (forged, corrupted, or another ops' mapping).
  kUnknownMapping,
  // sync offset/length outside the mapping.
  kSyncOutOfRange,
  // An IOTLB listener failed to take an invalidation: the IOVA range stays reserved
  // (never reused) because the device may still reach it.
  kInvalidationFailed,
  // An IOTLB listener failed to take an update for a new mapping; the mapping was undone.
  kUpdateFailed,
  // Platform policy: restricted memory needs VIRTIO_F_ACCESS_PLATFORM and the device does
  // not offer it (or it was not negotiated). The device must be refused.
  kAccessPlatformRequired,
  // The platform needs an IOMMU or a bounce pool that was not set up.
  kMissingPlatformPart,
  // Bad option (pool size, area count, alignment mask).
  kInvalidOption,
};

const char* describe(Errc e);
const std::error_category& dma_category();
inline std::error_code make_error_code(Errc e) {
  return {static_cast<int>(e), dma_category()};
}

// True for errors that go away when mappings are released (pool, coherent, IOVA full).
bool is_retryable(std::error_code ec);

}  // namespace vdma::dma

VDMA_ERROR_ENUM(vdma::dma::Errc)

#include "vdma/dma/errors.h"

namespace vdma::dma {

const char* describe(Errc e) {
  switch (e) {
    case Errc::kZeroLength:
      return "zero-length DMA mapping";
    case Errc::kTooLarge:
      return "mapping larger than max_mapping_size";
    case Errc::kOverflow:
      return "buffer address plus length overflows";
    case Errc::kNotDmaable:
      return "buffer is not in one shared guest-memory region";
    case Errc::kPoolFull:
      return "bounce pool full (retry after unmapping)";
    case Errc::kCoherentPoolFull:
      return "coherent pool full";
    case Errc::kIovaSpaceFull:
      return "IOVA space full";
    case Errc::kNotMapped:
      return "mapping is not mapped (double unmap?)";
    case Errc::kUnknownMapping:
      return "mapping was not issued by these DMA ops";
    case Errc::kSyncOutOfRange:
      return "sync range outside the mapping";
    case Errc::kInvalidationFailed:
      return "IOTLB invalidation not delivered; IOVA quarantined";
    case Errc::kUpdateFailed:
      return "IOTLB update not delivered; mapping undone";
    case Errc::kAccessPlatformRequired:
      return "restricted-memory platform requires VIRTIO_F_ACCESS_PLATFORM (bit 33), "
             "which the device does not offer";
    case Errc::kMissingPlatformPart:
      return "platform part (IOMMU or bounce pool) missing";
    case Errc::kInvalidOption:
      return "invalid DMA option";
  }
  return "unknown DMA error";
}

const std::error_category& dma_category() {
  static const EnumCategory<Errc, &describe> category("vdma.dma");
  return category;
}

bool is_retryable(std::error_code ec) {
  return ec == Errc::kPoolFull || ec == Errc::kCoherentPoolFull || ec == Errc::kIovaSpaceFull;
}

}  // namespace vdma::dma

#include "vdma/virtq/errors.h"

namespace vdma::virtq {

const char* describe(Errc e) {
  switch (e) {
    case Errc::kInvalidQueueSize:
      return "invalid queue size";
    case Errc::kInvalidConfig:
      return "invalid queue configuration";
    case Errc::kQueueFull:
      return "not enough free descriptors";
    case Errc::kNoSegments:
      return "buffer with no segments";
    case Errc::kSegmentTooLarge:
      return "segment longer than 4 GiB";
    case Errc::kBroken:
      return "queue is broken";
    case Errc::kUsedIdOutOfRange:
      return "device returned a used id outside the queue";
    case Errc::kUsedIdNotOutstanding:
      return "device returned a buffer that is not outstanding";
    case Errc::kUsedLenTooLarge:
      return "device wrote more than the writable buffer size";
    case Errc::kUsedIdxJump:
      return "used index moved by more than the buffers outstanding";
    case Errc::kAvailIdxJump:
      return "driver made more buffers available than the queue holds";
    case Errc::kDescIndexOutOfRange:
      return "descriptor index out of range";
    case Errc::kDescLoop:
      return "descriptor chain loops";
    case Errc::kChainTooLong:
      return "descriptor chain longer than the queue";
    case Errc::kNestedIndirect:
      return "indirect descriptor inside an indirect table";
    case Errc::kIndirectNotNegotiated:
      return "indirect descriptor without RING_INDIRECT_DESC";
    case Errc::kIndirectWithNext:
      return "indirect descriptor chained with others";
    case Errc::kIndirectBadLength:
      return "indirect table length invalid";
    case Errc::kReadableAfterWritable:
      return "device-readable descriptor after a writable one";
    case Errc::kZeroLengthDesc:
      return "zero-length descriptor";
    case Errc::kAddressOverflow:
      return "descriptor address plus length overflows";
    case Errc::kAddressNotMapped:
      return "descriptor address not in device-visible memory";
    case Errc::kAccessDenied:
      return "descriptor access not permitted by the IOMMU";
    case Errc::kChainTooLarge:
      return "descriptor chain larger than 4 GiB";
    case Errc::kNotInFlight:
      return "used entry for a chain not in flight";
    case Errc::kHeadInFlight:
      return "head made available while still in flight";
    case Errc::kTranslationMiss:
      return "address not in the device's IOTLB yet: retry after the miss is answered";
  }
  return "unknown virtqueue error";
}

const std::error_category& virtq_category() {
  static const EnumCategory<Errc, &describe> category("vdma.virtq");
  return category;
}

bool is_retryable(std::error_code ec) {
  return ec == Errc::kQueueFull || ec == Errc::kTranslationMiss;
}

}  // namespace vdma::virtq

// Errors of the virtqueue module. Peer violations are named one per attack so tests and
// log lines say exactly what the other side did.
#pragma once

#include <system_error>

#include "vdma/base/error.h"

namespace vdma::virtq {

enum class Errc {
  // Configuration.
  kInvalidQueueSize = 1,  // 0, above 32768, or (split) not a power of two
  kInvalidConfig,         // other bad option (indirect arena too small, ...)
  // Driver-side calls.
  kQueueFull,        // not enough free descriptors now: retry after get_used()
  kNoSegments,       // add_buffers() with no segment at all
  kSegmentTooLarge,  // a segment longer than 2^32 - 1 bytes
  kBroken,           // the queue was marked broken; see broken_reason()
  // A hostile device (seen by the driver).
  kUsedIdOutOfRange,      // used id >= queue size (split) / not a live buffer id (packed)
  kUsedIdNotOutstanding,  // used id we never published or already got back
  kUsedLenTooLarge,       // written length above the writable bytes we mapped
  kUsedIdxJump,           // used index moved by more than the buffers outstanding
  // A hostile driver (seen by the device).
  kAvailIdxJump,           // more buffers made available than the queue holds
  kDescIndexOutOfRange,    // head or next index >= queue size (or table length)
  kDescLoop,               // a chain revisits a descriptor
  kChainTooLong,           // more descriptors than the queue (or table) holds, or more
                           // than kMaxChainSegments host segments once translated
  kNestedIndirect,         // an indirect descriptor inside an indirect table
  kIndirectNotNegotiated,  // INDIRECT flag without VIRTIO_F_RING_INDIRECT_DESC
  kIndirectWithNext,       // an indirect descriptor that also has NEXT / is not alone
  kIndirectBadLength,      // table length zero, not a multiple of 16, or too long
  kReadableAfterWritable,  // a device-readable descriptor after a writable one
  kZeroLengthDesc,         // a descriptor of length zero
  kAddressOverflow,        // addr + len wraps 2^64
  kAddressNotMapped,       // addr range outside the device's memory table / IOTLB miss
  kAccessDenied,           // IOTLB: the mapping does not permit this access
  kChainTooLarge,          // total chain length above 4 GiB
  kNotInFlight,            // push_used for a head that is not in flight on the device
  kHeadInFlight,           // the driver made a head available again before it was used
  // Not a violation (seen by the device).
  kTranslationMiss,  // address not in the device's IOTLB yet: retry after the front end
                     // answers the miss; the chain was not consumed (pop() left it in the
                     // ring and changed no queue state)
};

// True for errors the caller can retry without anything being wrong: kQueueFull (after
// get_used()) and kTranslationMiss (after the IOTLB miss is answered).
bool is_retryable(std::error_code ec);

const char* describe(Errc e);
const std::error_category& virtq_category();
inline std::error_code make_error_code(Errc e) {
  return {static_cast<int>(e), virtq_category()};
}

}  // namespace vdma::virtq

VDMA_ERROR_ENUM(vdma::virtq::Errc)

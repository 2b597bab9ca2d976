// Errors of the virtio-blk device. Request errors are named one per malformed case, so
// tests and log lines say exactly what the driver sent; status_for() maps each to the
// status byte the driver receives (VIRTIO_BLK_S_IOERR or VIRTIO_BLK_S_UNSUPP).
//
//   auto req = blk::parse_request(chain, limits);
//   if (!req) write_status(chain, blk::status_for(req.error()));
#pragma once

#include <cstdint>
#include <system_error>

#include "vdma/base/error.h"

namespace vdma::blk {

enum class Errc {
  // A malformed request (the driver's fault; answered, never fatal).
  kShortHeader = 1,   // fewer than 16 device-readable bytes for the header
  kNoStatusByte,      // no device-writable byte for the status
  kDataDirection,     // IN / GET_ID with readable data, or OUT / FLUSH / DISCARD /
                      // WRITE_ZEROES with writable data before the status byte
  kUnexpectedData,    // FLUSH with a data payload
  kUnalignedLength,   // IN / OUT data not a multiple of 512 bytes
  kOutOfRange,        // sector range past the end of the image, or overflowing
  kTooManySegments,   // more data segments than seg_max
  kSegmentTooLarge,   // a data segment larger than size_max
  kBadRangePayload,   // DISCARD / WRITE_ZEROES payload empty or not a multiple of 16
  kTooManyRanges,     // more ranges than max_discard_seg / max_write_zeroes_seg
  kRangeTooLarge,     // a range longer than max_discard_sectors / max_write_zeroes_sectors
  kUnsupportedFlags,  // a range flag the request type does not allow (UNSUPP)
  kUnsupportedType,   // a request type this device does not serve (UNSUPP)
  kReadOnly,          // a write, discard or write-zeroes on a read-only device
  // Setting the device up.
  kImageTooSmall,   // the image holds less than one 512-byte sector
  kNotAnImage,      // the image is neither a regular file nor a block device
  kInvalidOptions,  // an option out of range (queues, seg_max, size_max, depth ...)
  kConfigAccess,    // config space read or write outside the layout / not writable
};

// The status byte for a request that failed with `ec`: UNSUPP for kUnsupportedType and
// kUnsupportedFlags, IOERR for everything else.
std::uint8_t status_for(std::error_code ec);

const char* describe(Errc e);
const std::error_category& blk_category();
inline std::error_code make_error_code(Errc e) {
  return {static_cast<int>(e), blk_category()};
}

}  // namespace vdma::blk

VDMA_ERROR_ENUM(vdma::blk::Errc)

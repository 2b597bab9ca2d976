#include "vdma/devices/blk/errors.h"

#include "vdma/devices/blk/spec.h"

namespace vdma::blk {

const char* describe(Errc e) {
  switch (e) {
    case Errc::kShortHeader:
      return "request header shorter than 16 bytes";
    case Errc::kNoStatusByte:
      return "request has no writable status byte";
    case Errc::kDataDirection:
      return "request data in the wrong direction";
    case Errc::kUnexpectedData:
      return "flush request carries data";
    case Errc::kUnalignedLength:
      return "data length not a multiple of 512 bytes";
    case Errc::kOutOfRange:
      return "sector range outside the image";
    case Errc::kTooManySegments:
      return "more data segments than seg_max";
    case Errc::kSegmentTooLarge:
      return "data segment larger than size_max";
    case Errc::kBadRangePayload:
      return "discard/write-zeroes payload empty or not a multiple of 16 bytes";
    case Errc::kTooManyRanges:
      return "more discard/write-zeroes ranges than allowed";
    case Errc::kRangeTooLarge:
      return "discard/write-zeroes range longer than allowed";
    case Errc::kUnsupportedFlags:
      return "discard/write-zeroes range flags not supported";
    case Errc::kUnsupportedType:
      return "request type not supported";
    case Errc::kReadOnly:
      return "write to a read-only device";
    case Errc::kImageTooSmall:
      return "image smaller than one 512-byte sector";
    case Errc::kNotAnImage:
      return "image is neither a regular file nor a block device";
    case Errc::kInvalidOptions:
      return "invalid block device options";
    case Errc::kConfigAccess:
      return "config space access outside the layout or not writable";
  }
  return "unknown block device error";
}

const std::error_category& blk_category() {
  static const EnumCategory<Errc, &describe> category("vdma.blk");
  return category;
}

std::uint8_t status_for(std::error_code ec) {
  if (ec == Errc::kUnsupportedType || ec == Errc::kUnsupportedFlags) return kStatusUnsupp;
  return kStatusIoErr;
}

}  // namespace vdma::blk

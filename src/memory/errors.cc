#include "vdma/memory/errors.h"

namespace vdma::memory {

const char* describe(Errc e) {
  switch (e) {
    case Errc::kOutOfRange:
      return "address range outside guest memory";
    case Errc::kStraddlesRegion:
      return "address range runs past the end of its region";
    case Errc::kOverflow:
      return "address plus length overflows 64 bits";
    case Errc::kZeroLength:
      return "zero-length range";
    case Errc::kOverlap:
      return "range overlaps an existing one";
    case Errc::kPrivateRegion:
      return "private region cannot be shared";
    case Errc::kInvalidArgument:
      return "invalid size, alignment or option";
    case Errc::kNoSpace:
      return "no free range of that size and alignment";
    case Errc::kBadFree:
      return "free of a range that is not allocated";
    case Errc::kIotlbMiss:
      return "IOTLB miss";
    case Errc::kIotlbPermission:
      return "IOTLB permission denied";
    case Errc::kIotlbFragmented:
      return "IOTLB range not contiguous";
  }
  return "unknown memory error";
}

const std::error_category& memory_category() {
  static const EnumCategory<Errc, &describe> category("vdma.memory");
  return category;
}

}  // namespace vdma::memory

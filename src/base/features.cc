#include "vdma/base/features.h"

#include <fmt/format.h>

namespace vdma {

std::string feature_name(Feature f) {
  switch (f.bit) {
    case 28:
      return "RING_INDIRECT_DESC";
    case 29:
      return "RING_EVENT_IDX";
    case 32:
      return "VERSION_1";
    case 33:
      return "ACCESS_PLATFORM";
    case 34:
      return "RING_PACKED";
    case 35:
      return "IN_ORDER";
    case 36:
      return "ORDER_PLATFORM";
    case 37:
      return "SR_IOV";
    case 38:
      return "NOTIFICATION_DATA";
    case 40:
      return "RING_RESET";
    default:
      return fmt::format("bit{}", f.bit);
  }
}

std::string FeatureSet::to_string() const {
  std::string names;
  for (std::uint8_t b = 0; b < 64; ++b) {
    if (!has(Feature{b})) continue;
    if (!names.empty()) names += ',';
    names += feature_name(Feature{b});
  }
  return fmt::format("{:#x} {{{}}}", bits_, names);
}

}  // namespace vdma

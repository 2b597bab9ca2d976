#include "vdma/testing/patterns.h"

namespace vdma::testing {

void fill_pattern(std::span<std::byte> buf, std::uint64_t seed) {
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = pattern_byte(seed, i);
}

std::int64_t first_mismatch(std::span<const std::byte> buf, std::uint64_t seed) {
  for (std::size_t i = 0; i < buf.size(); ++i)
    if (buf[i] != pattern_byte(seed, i)) return static_cast<std::int64_t>(i);
  return -1;
}

}  // namespace vdma::testing

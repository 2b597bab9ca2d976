// Deterministic byte patterns for verifying data that crossed a DMA boundary.
//
//   fill_pattern(buf, /*seed=*/7);
//   ... round trip ...
//   EXPECT_EQ(first_mismatch(buf, 7), -1);
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace vdma::testing {

// Byte i of pattern `seed` (cheap, position dependent, differs between seeds).
inline std::byte pattern_byte(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return static_cast<std::byte>(x & 0xff);
}

void fill_pattern(std::span<std::byte> buf, std::uint64_t seed);
// Index of the first byte that differs from pattern `seed`, or -1.
std::int64_t first_mismatch(std::span<const std::byte> buf, std::uint64_t seed);

}  // namespace vdma::testing

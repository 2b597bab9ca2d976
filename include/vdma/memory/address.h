// Strong address types: guest-physical (Gpa), I/O virtual (Iova), and the address a device
// is given (DmaAddr). None converts implicitly to another or to an integer (STYLE.md 5).
//
//   Gpa g{0x1000};
//   Gpa end = g + 4096;          // offset arithmetic stays typed
//   uint64_t off = end - g;      // distance between two of the same kind
//   DmaAddr d{g.value()};        // crossing kinds is always spelled out
#pragma once

#include <compare>
#include <cstdint>
#include <optional>

namespace vdma {

template <class Tag>
class Address {
 public:
  constexpr Address() = default;
  constexpr explicit Address(std::uint64_t v) : v_(v) {}
  constexpr std::uint64_t value() const { return v_; }

  friend constexpr Address operator+(Address a, std::uint64_t off) { return Address(a.v_ + off); }
  friend constexpr std::uint64_t operator-(Address a, Address b) { return a.v_ - b.v_; }
  friend constexpr auto operator<=>(Address, Address) = default;

 private:
  std::uint64_t v_ = 0;
};

using Gpa = Address<struct GpaTag>;
using Iova = Address<struct IovaTag>;
using DmaAddr = Address<struct DmaAddrTag>;

// One past the last byte of [start, start + len), or nullopt if that wraps 2^64.
// A range ending exactly at 2^64 is rejected too: ends are represented as u64.
constexpr std::optional<std::uint64_t> checked_end(std::uint64_t start, std::uint64_t len) {
  std::uint64_t end = 0;
  if (__builtin_add_overflow(start, len, &end)) return std::nullopt;
  return end;
}

}  // namespace vdma

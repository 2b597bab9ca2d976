// Typed virtio feature sets (STYLE.md rule 5: never `1 << bit` on an int).
//
// Feature bits 32 and up matter here (VERSION_1 = 32, ACCESS_PLATFORM = 33, RING_PACKED =
// 34), so the set is a 64-bit value and bits are named constants.
//
//   FeatureSet f{kVirtioFVersion1, kVirtioFAccessPlatform};
//   if (f.has(kVirtioFAccessPlatform)) ...
//   FeatureSet negotiated = driver_wants & device_offers;
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

namespace vdma {

// One feature bit number (0..63).
struct Feature {
  std::uint8_t bit;
  friend constexpr bool operator==(Feature, Feature) = default;
};

// Transport / ring feature bits from the VIRTIO 1.2 specification, section 6 "Reserved
// Feature Bits". Device-specific bits (0..23) are defined by the device modules.
inline constexpr Feature kVirtioFRingIndirectDesc{28};
inline constexpr Feature kVirtioFRingEventIdx{29};
inline constexpr Feature kVirtioFVersion1{32};
inline constexpr Feature kVirtioFAccessPlatform{33};
inline constexpr Feature kVirtioFRingPacked{34};
inline constexpr Feature kVirtioFInOrder{35};
inline constexpr Feature kVirtioFOrderPlatform{36};
inline constexpr Feature kVirtioFSrIov{37};
inline constexpr Feature kVirtioFNotificationData{38};
inline constexpr Feature kVirtioFRingReset{40};

class FeatureSet {
 public:
  constexpr FeatureSet() = default;
  constexpr FeatureSet(std::initializer_list<Feature> fs) {
    for (Feature f : fs) bits_ |= mask(f);
  }
  // From the raw 64-bit word exchanged with a peer (GET_FEATURES and friends).
  static constexpr FeatureSet FromBits(std::uint64_t bits) {
    FeatureSet s;
    s.bits_ = bits;
    return s;
  }
  constexpr std::uint64_t bits() const { return bits_; }
  constexpr bool has(Feature f) const { return (bits_ & mask(f)) != 0; }
  constexpr FeatureSet& set(Feature f) {
    bits_ |= mask(f);
    return *this;
  }
  constexpr FeatureSet& clear(Feature f) {
    bits_ &= ~mask(f);
    return *this;
  }
  constexpr FeatureSet with(Feature f) const { return FeatureSet(*this).set(f); }
  constexpr FeatureSet without(Feature f) const { return FeatureSet(*this).clear(f); }
  // True if every feature of `other` is in this set.
  constexpr bool contains(FeatureSet other) const { return (bits_ & other.bits_) == other.bits_; }

  friend constexpr FeatureSet operator&(FeatureSet a, FeatureSet b) {
    return FromBits(a.bits_ & b.bits_);
  }
  friend constexpr FeatureSet operator|(FeatureSet a, FeatureSet b) {
    return FromBits(a.bits_ | b.bits_);
  }
  friend constexpr bool operator==(FeatureSet, FeatureSet) = default;

  // "0x300000000 {VERSION_1,ACCESS_PLATFORM}" for log lines.
  std::string to_string() const;

 private:
  static constexpr std::uint64_t mask(Feature f) { return std::uint64_t{1} << (f.bit & 63); }
  std::uint64_t bits_ = 0;
};

// The spec name of a transport feature bit ("ACCESS_PLATFORM"), or "bit<N>".
std::string feature_name(Feature f);

}  // namespace vdma

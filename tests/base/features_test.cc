#include "vdma/base/features.h"

#include <gtest/gtest.h>

namespace vdma {
namespace {

TEST(FeatureSetTest, HighBitsWork) {
  FeatureSet f{kVirtioFVersion1, kVirtioFAccessPlatform};
  EXPECT_EQ(f.bits(), (std::uint64_t{1} << 32) | (std::uint64_t{1} << 33));
  EXPECT_TRUE(f.has(kVirtioFAccessPlatform));
  EXPECT_FALSE(f.has(kVirtioFRingPacked));
  EXPECT_FALSE(f.without(kVirtioFAccessPlatform).has(kVirtioFAccessPlatform));
  EXPECT_TRUE(f.with(kVirtioFRingPacked).has(kVirtioFRingPacked));
}

TEST(FeatureSetTest, SetAlgebra) {
  FeatureSet driver{kVirtioFVersion1, kVirtioFRingEventIdx, kVirtioFAccessPlatform};
  FeatureSet device{kVirtioFVersion1, kVirtioFRingEventIdx, kVirtioFRingPacked};
  FeatureSet negotiated = driver & device;
  EXPECT_EQ(negotiated, (FeatureSet{kVirtioFVersion1, kVirtioFRingEventIdx}));
  EXPECT_TRUE(driver.contains(negotiated));
  EXPECT_FALSE(negotiated.contains(driver));
  EXPECT_EQ((driver | device).bits(), driver.bits() | device.bits());
}

TEST(FeatureSetTest, NamesForLogs) {
  FeatureSet f{kVirtioFVersion1, kVirtioFAccessPlatform, Feature{5}};
  EXPECT_EQ(f.to_string(), "0x300000020 {bit5,VERSION_1,ACCESS_PLATFORM}");
  EXPECT_EQ(FeatureSet::FromBits(0).to_string(), "0x0 {}");
}

}  // namespace
}  // namespace vdma

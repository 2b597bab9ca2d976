#include "vdma/dma/platform.h"

#include <gtest/gtest.h>

namespace vdma::dma {
namespace {

const FeatureSet kWithAp{kVirtioFVersion1, kVirtioFAccessPlatform};
const FeatureSet kWithoutAp{kVirtioFVersion1};

// Every row of DESIGN.md's policy table.
TEST(PlatformPolicyTest, NoAccessPlatformUnrestrictedIsDirect) {
  EXPECT_EQ(*select_ops(kTraditional, kWithoutAp), OpsKind::kDirect);
  EXPECT_EQ(*select_ops(kIommuPlatform, kWithoutAp), OpsKind::kDirect);  // legacy quirk
}

TEST(PlatformPolicyTest, NoAccessPlatformRestrictedIsRefused) {
  EXPECT_EQ(select_ops(kSecureGuest, kWithoutAp).error(), Errc::kAccessPlatformRequired);
  EXPECT_EQ(select_ops(kSecureGuestWithIommu, kWithoutAp).error(),
            Errc::kAccessPlatformRequired);
}

TEST(PlatformPolicyTest, AccessPlatformRows) {
  EXPECT_EQ(*select_ops(kTraditional, kWithAp), OpsKind::kDirect);
  EXPECT_EQ(*select_ops(kSecureGuest, kWithAp), OpsKind::kBounce);
  EXPECT_EQ(*select_ops(kIommuPlatform, kWithAp), OpsKind::kIommu);
  EXPECT_EQ(*select_ops(kSecureGuestWithIommu, kWithAp), OpsKind::kBounceViaIommu);
}

TEST(PlatformPolicyTest, RefusalNamesTheMissingFeature) {
  auto r = check_device_offer(kSecureGuest, kWithoutAp);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("VIRTIO_F_ACCESS_PLATFORM (bit 33)"), std::string::npos);
  EXPECT_TRUE(check_device_offer(kSecureGuest, kWithAp));
  EXPECT_TRUE(check_device_offer(kTraditional, kWithoutAp));
  EXPECT_TRUE(check_device_offer(kIommuPlatform, kWithoutAp));
}

TEST(PlatformPolicyTest, RequiredDriverFeatures) {
  EXPECT_FALSE(required_driver_features(kTraditional).has(kVirtioFAccessPlatform));
  EXPECT_TRUE(required_driver_features(kSecureGuest).has(kVirtioFAccessPlatform));
  EXPECT_TRUE(required_driver_features(kIommuPlatform).has(kVirtioFAccessPlatform));
  EXPECT_STREQ(platform_name(kSecureGuestWithIommu), "secure+iommu");
}

}  // namespace
}  // namespace vdma::dma

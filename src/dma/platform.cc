#include "vdma/dma/platform.h"

namespace vdma::dma {

const char* platform_name(Platform p) {
  if (p.restricted_memory && p.iommu) return "secure+iommu";
  if (p.restricted_memory) return "secure";
  if (p.iommu) return "iommu";
  return "traditional";
}

FeatureSet required_driver_features(Platform p) {
  FeatureSet f{kVirtioFVersion1};
  if (p.restricted_memory || p.iommu) f.set(kVirtioFAccessPlatform);
  return f;
}

Result<void> check_device_offer(Platform p, FeatureSet offered) {
  // VIRTIO 1.2, 6.1: a driver on a platform that restricts memory access must not accept
  // a device without ACCESS_PLATFORM; it would read private memory by address.
  if (p.restricted_memory && !offered.has(kVirtioFAccessPlatform)) {
    return Err(Errc::kAccessPlatformRequired);
  }
  return Ok();
}

Result<OpsKind> select_ops(Platform p, FeatureSet negotiated) {
  if (!negotiated.has(kVirtioFAccessPlatform)) {
    if (p.restricted_memory) return Err(Errc::kAccessPlatformRequired);
    return OpsKind::kDirect;
  }
  if (p.restricted_memory) return p.iommu ? OpsKind::kBounceViaIommu : OpsKind::kBounce;
  return p.iommu ? OpsKind::kIommu : OpsKind::kDirect;
}

}  // namespace vdma::dma

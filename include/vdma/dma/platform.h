// Platform policy: which DMA ops a driver uses, decided by the platform and by whether
// VIRTIO_F_ACCESS_PLATFORM (bit 33) was negotiated. The table (DESIGN.md):
//
//   ACCESS_PLATFORM  restricted  iommu   ops
//   no               no          any     direct (legacy quirk: the device sees GPAs)
//   no               yes         any     refuse the device
//   yes              no          no      direct
//   yes              yes         no      bounce
//   yes              no          yes     iommu
//   yes              yes         yes     bounce, pool mapped through the IOMMU
//
//   Platform secure{.restricted_memory = true};
//   VDMA_TRY(check_device_offer(secure, device_features));   // refuse early
//   OpsKind k = VDMA_TRY(select_ops(secure, negotiated));     // kBounce
#pragma once

#include "vdma/base/features.h"
#include "vdma/base/result.h"
#include "vdma/dma/dma_ops.h"

namespace vdma::dma {

struct Platform {
  bool restricted_memory = false;  // confidential guest: only shared pools are visible
  bool iommu = false;              // DMA goes through an IOMMU
  friend bool operator==(const Platform&, const Platform&) = default;
};

inline constexpr Platform kTraditional{false, false};
inline constexpr Platform kSecureGuest{true, false};
inline constexpr Platform kIommuPlatform{false, true};
inline constexpr Platform kSecureGuestWithIommu{true, true};

// "traditional", "secure", "iommu", "secure+iommu".
const char* platform_name(Platform p);

// Features the driver must ask for on this platform (ACCESS_PLATFORM where restricted or
// behind an IOMMU).
FeatureSet required_driver_features(Platform p);

// Refuses a device whose *offered* features cannot work here. Errors:
// kAccessPlatformRequired.
Result<void> check_device_offer(Platform p, FeatureSet offered);

// The ops for the negotiated features. Errors: kAccessPlatformRequired.
Result<OpsKind> select_ops(Platform p, FeatureSet negotiated);

}  // namespace vdma::dma

// Shared scaffolding for the packed-ring test files: a packed-only Loopback and raw
// host views of the ring areas.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <map>
#include <random>

#include "vdma/dma/bounce_ops.h"
#include "vdma/testing/loopback.h"
#include "vdma/testing/patterns.h"
#include "vdma/virtq/packed_device.h"
#include "vdma/virtq/packed_driver.h"

namespace vdma::virtq::packed_test {

using vdma::testing::fill_pattern;
using vdma::testing::first_mismatch;

// This file's own ring family for the shared Loopback scaffolding.
struct PackedOnly {
  template <class Ops>
  using Driver = PackedDriverQueue<Ops>;
  template <class T>
  using Device = PackedDeviceQueue<T>;
  static constexpr bool kPacked = true;
  static constexpr const char* kName = "packed";
};
using LB = vdma::testing::Loopback<PackedOnly>;

constexpr std::array<dma::Platform, 4> kPlatforms{dma::kTraditional, dma::kSecureGuest,
                                                  dma::kIommuPlatform, dma::kSecureGuestWithIommu};

inline std::unique_ptr<LB> make(const vdma::testing::LoopbackConfig& cfg) {
  auto lb = LB::Create(cfg);
  EXPECT_TRUE(lb) << lb.error().message();
  return lb ? std::move(*lb) : nullptr;
}

// Host views of the three ring areas, resolved the way the device does.
struct RawRing {
  PackedDesc* desc = nullptr;
  PackedEventSuppress* driver = nullptr;
  PackedEventSuppress* device = nullptr;
  std::uint32_t size = 0;
};
inline RawRing raw_ring(LB& lb) {
  PlatformTranslator tr(lb.guest().platform().iommu ? lb.guest().iommu() : nullptr,
                        lb.guest().memory());
  const RingAddresses a = lb.driver().addresses();
  RawRing r;
  r.size = a.size();
  r.desc = reinterpret_cast<PackedDesc*>(*tr.translate(a.desc, 16 * r.size, memory::Access::kRead));
  r.driver =
      reinterpret_cast<PackedEventSuppress*>(*tr.translate(a.driver, 4, memory::Access::kRead));
  r.device =
      reinterpret_cast<PackedEventSuppress*>(*tr.translate(a.device, 4, memory::Access::kRead));
  return r;
}

constexpr std::uint16_t kUsedBoth = kPackedDescFAvail | kPackedDescFUsed;
inline bool is_used_desc(const PackedDesc& d, bool wrap) {
  return (d.flags & kUsedBoth) == (wrap ? kUsedBoth : 0);
}

// Counts the bounce slots still held when the ops are BounceOps (0 otherwise).
inline std::uint64_t slots_in_use(LB& lb) {
  auto* b = dynamic_cast<dma::BounceOps*>(&lb.ops());
  return b ? b->stats().slots_in_use : 0;
}

// ---------------------------------------------------------------------------------------
// Round trips, wrap-around, batching, indirect.

}  // namespace vdma::virtq::packed_test

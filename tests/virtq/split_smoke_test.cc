#include <gtest/gtest.h>

#include <array>
#include <cstring>

#include "vdma/dma/guest.h"
#include "vdma/testing/patterns.h"
#include "vdma/virtq/split_device.h"
#include "vdma/virtq/split_driver.h"

namespace vdma::virtq {
namespace {

using vdma::testing::fill_pattern;
using vdma::testing::first_mismatch;

TEST(SplitSmokeTest, RoundTripEveryPlatform) {
  for (dma::Platform p :
       {dma::kTraditional, dma::kSecureGuest, dma::kIommuPlatform, dma::kSecureGuestWithIommu}) {
    SCOPED_TRACE(dma::platform_name(p));
    auto guest = dma::Guest::Create(
        {.platform = p, .ram_bytes = 4 << 20, .coherent_bytes = 1 << 20, .bounce_bytes = 4 << 20});
    ASSERT_TRUE(guest) << guest.error().message();
    FeatureSet f{kVirtioFVersion1, kVirtioFAccessPlatform, kVirtioFRingIndirectDesc};
    auto ops = (*guest)->make_ops(f);
    ASSERT_TRUE(ops) << ops.error().message();
    DriverQueueConfig cfg{.size = 8, .features = RingFeatures::From(f)};
    std::byte* arena =
        *(*guest)->alloc_ram(SplitDriverQueue<dma::DmaOps>::indirect_arena_bytes(cfg));
    auto dq = SplitDriverQueue<dma::DmaOps>::Create(
        **ops, cfg, {arena, SplitDriverQueue<dma::DmaOps>::indirect_arena_bytes(cfg)});
    ASSERT_TRUE(dq) << dq.error().message();
    PlatformTranslator tr(p.iommu ? (*guest)->iommu() : nullptr, (*guest)->memory());
    auto devq = SplitDeviceQueue<PlatformTranslator>::Create(
        tr, {.rings = dq->addresses(), .features = cfg.features});
    ASSERT_TRUE(devq) << devq.error().message();

    std::byte* out = *(*guest)->alloc_ram(1500);
    std::byte* in = *(*guest)->alloc_ram(1500);
    fill_pattern({out, 1500}, 1);
    std::memset(in, 0, 1500);
    for (int round = 0; round < 3; ++round) {
      std::array<Segment, 1> r{{{out, 1500}}};
      std::array<Segment, 1> w{{{in, 1500}}};
      ASSERT_TRUE(dq->add_buffers(r, w, 42 + round));
      dq->kick_prepare();
      Chain c;
      auto got = devq->pop(c);
      ASSERT_TRUE(got) << got.error().message();
      ASSERT_TRUE(*got);
      ASSERT_EQ(c.readable.size(), 1u);
      ASSERT_EQ(c.writable.size(), 1u);
      EXPECT_EQ(first_mismatch({c.readable[0].host, 1500}, 1), -1);
      fill_pattern({c.writable[0].host, 1000}, 2);
      ASSERT_TRUE(devq->push_used(c.head, 1000));
      devq->publish_used();
      auto u = dq->get_used();
      ASSERT_TRUE(u);
      ASSERT_TRUE(u->has_value());
      EXPECT_EQ((*u)->token, 42u + round);
      EXPECT_EQ((*u)->len, 1000u);
      EXPECT_EQ(first_mismatch({in, 1000}, 2), -1);
      EXPECT_EQ(dq->num_free(), 8u);
    }
  }
}

}  // namespace
}  // namespace vdma::virtq

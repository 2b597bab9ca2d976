// Driver thread + device thread over one guest's memory, for every platform, both
// notification styles and indirect on/off: every byte echoed back is checked. Runs under
// TSan in the sanitizer preset (suite name contains "Concurrency").
#include <gtest/gtest.h>

#include "vdma/dma/bounce_ops.h"
#include "vdma/testing/ring_families.h"
#include "vdma/testing/threaded_echo.h"

namespace vdma::virtq {
namespace {

template <class Ring>
class LoopbackConcurrencyTest : public ::testing::Test {};
TYPED_TEST_SUITE(LoopbackConcurrencyTest, testing::RingFamilies);

TYPED_TEST(LoopbackConcurrencyTest, TwoThreadEchoEveryPlatform) {
  for (dma::Platform p :
       {dma::kTraditional, dma::kSecureGuest, dma::kIommuPlatform, dma::kSecureGuestWithIommu}) {
    for (bool event_idx : {false, true}) {
      SCOPED_TRACE(::testing::Message() << dma::platform_name(p) << " event_idx=" << event_idx);
      auto lb = testing::Loopback<TypeParam>::Create({.platform = p,
                                                      .queue_size = 64,
                                                      .event_idx = event_idx,
                                                      .ram_bytes = 8 << 20,
                                                      .bounce_bytes = 4 << 20});
      ASSERT_TRUE(lb) << lb.error().message();
      auto r = testing::run_threaded_echo(**lb, {.buffers = 8000, .batch = 32, .buf_size = 200});
      EXPECT_TRUE(r.ok) << r.error;
      EXPECT_EQ(r.completed, 8000u);
      EXPECT_EQ(r.bytes_verified, 8000u * 200);
      if (auto* b = dynamic_cast<dma::BounceOps*>(&(*lb)->ops())) {
        EXPECT_EQ(b->stats().slots_in_use, 0u);
      }
    }
  }
}

}  // namespace
}  // namespace vdma::virtq

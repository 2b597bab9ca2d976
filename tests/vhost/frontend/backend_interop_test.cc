// The front end against this project's own back end (BackendServer, on a thread here)
// serving an echo device: data crosses the socket-shared memory on every platform and
// both ring layouts — direct on the traditional platform, bounced on a secure guest, and
// through IOVAs with IOTLB updates and misses behind an IOMMU.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "qsd.h"
#include "vdma/testing/echo_device.h"
#include "vdma/testing/patterns.h"
#include "vdma/vhost/backend.h"
#include "vdma/vhost/frontend.h"

namespace vdma::vhost {
namespace {

using namespace std::chrono_literals;
using vdma::testing::EchoDevice;
using vdma::testing::fill_pattern;
using vdma::testing::first_mismatch;

struct InteropCase {
  const char* name;
  dma::Platform platform;
  RingLayout layout;
  dma::OpsKind ops;
};

class BackendInterop : public ::testing::TestWithParam<InteropCase> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    auto s = BackendServer::Create({.socket_path = dir_.path() + "/echo.sock",
                                    .make_device = [] { return std::make_unique<EchoDevice>(); }});
    ASSERT_TRUE(s) << s.error().message();
    server_ = std::move(*s);
    thread_ = std::thread([this] { (void)server_->run(); });
  }
  void TearDown() override {
    if (server_) server_->stop();
    if (thread_.joinable()) thread_.join();
  }
  test::TempDir dir_;
  std::unique_ptr<BackendServer> server_;
  std::thread thread_;
};

TEST_P(BackendInterop, EchoRoundTrips) {
  const InteropCase& k = GetParam();
  auto guest = dma::Guest::Create({.platform = k.platform,
                                   .ram_bytes = 8ull << 20,
                                   .coherent_bytes = 1ull << 20,
                                   .bounce_bytes = 4ull << 20});
  ASSERT_TRUE(guest) << guest.error().message();
  auto fe = Frontend::Connect({.socket_path = dir_.path() + "/echo.sock",
                               .guest = guest->get(),
                               .device_features = {kVirtioFRingIndirectDesc, kVirtioFRingEventIdx},
                               .num_queues = 2,
                               .queue_size = 64,
                               .layout = k.layout});
  ASSERT_TRUE(fe) << fe.error().message();
  EXPECT_EQ((*fe)->ops_kind(), k.ops);
  std::byte* src = *(*guest)->alloc_ram(64 * 1024);
  std::byte* dst = *(*guest)->alloc_ram(64 * 1024);
  std::uint64_t token = 1;
  for (std::uint32_t qi = 0; qi < 2; ++qi) {
    FrontendQueue& q = (*fe)->queue(qi);
    for (std::uint32_t len : {1u, 100u, 4096u, 5000u, 65536u}) {
      fill_pattern({src, len}, token);
      std::memset(dst, 0, len);
      // Two writable segments, to exercise chains (and indirect tables).
      const std::uint32_t half = len / 2;
      std::vector<virtq::Segment> r{{src, len}};
      std::vector<virtq::Segment> w{{dst, half}, {dst + half, len - half}};
      if (half == 0) w.erase(w.begin());
      ASSERT_TRUE(q.add_buffers(r, w, token));
      ASSERT_TRUE(q.kick());
      std::optional<virtq::UsedBuffer> u;
      for (int i = 0; i < 100 && !u; ++i) {
        auto got = q.get_used();
        ASSERT_TRUE(got) << got.error().message();
        u = *got;
        if (!u) {
          ASSERT_TRUE(q.wait_call(100ms));
        }
      }
      ASSERT_TRUE(u) << k.name << " len " << len;
      EXPECT_EQ(u->token, token);
      EXPECT_EQ(u->len, len);
      EXPECT_EQ(first_mismatch({dst, len}, token), -1) << k.name << " len " << len;
      ++token;
    }
  }
  if (k.platform.iommu) {
    // Ring and buffer translations reached the back end as IOTLB messages.
    EXPECT_GT((*fe)->iotlb_counters().updates, 0u);
  }
  if (k.platform == dma::kSecureGuestWithIommu) {
    // The pools were mapped before the connection: the back end learnt them by misses.
    EXPECT_GT((*fe)->iotlb_counters().misses, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Platforms, BackendInterop,
    ::testing::Values(
        InteropCase{"traditional_split", dma::kTraditional, RingLayout::kSplit,
                    dma::OpsKind::kDirect},
        InteropCase{"traditional_packed", dma::kTraditional, RingLayout::kPacked,
                    dma::OpsKind::kDirect},
        InteropCase{"secure_split", dma::kSecureGuest, RingLayout::kSplit, dma::OpsKind::kBounce},
        InteropCase{"secure_packed", dma::kSecureGuest, RingLayout::kPacked, dma::OpsKind::kBounce},
        InteropCase{"iommu_split", dma::kIommuPlatform, RingLayout::kSplit, dma::OpsKind::kIommu},
        InteropCase{"iommu_packed", dma::kIommuPlatform, RingLayout::kPacked, dma::OpsKind::kIommu},
        InteropCase{"secure_iommu_split", dma::kSecureGuestWithIommu, RingLayout::kSplit,
                    dma::OpsKind::kBounceViaIommu},
        InteropCase{"secure_iommu_packed", dma::kSecureGuestWithIommu, RingLayout::kPacked,
                    dma::OpsKind::kBounceViaIommu}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace vdma::vhost

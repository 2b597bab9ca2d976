// Property test of the reconnect contract: random sequences of add / kick / collect /
// back-end restart against this project's BackendServer (echo device), checked against a
// simple model. Invariants: every buffer added comes back exactly once — as a used buffer
// of a live connection, as a completion drained by reconnect(), or as a token to resubmit
// — never lost, never twice; what comes back as used carries the echoed bytes; after the
// last resubmission everything completes. Each seed picks a platform and a ring layout.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>
#include <thread>

#include "qsd.h"
#include "vdma/testing/echo_device.h"
#include "vdma/testing/patterns.h"
#include "vdma/vhost/backend.h"
#include "vdma/vhost/frontend.h"

namespace vdma::vhost {
namespace {

using namespace std::chrono_literals;
using vdma::testing::fill_pattern;
using vdma::testing::first_mismatch;

class ReconnectProperty : public ::testing::TestWithParam<std::uint32_t> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    start_server();
  }
  void TearDown() override { stop_server(); }

  std::string socket() const { return dir_.path() + "/echo.sock"; }
  void start_server() {
    auto s = BackendServer::Create({.socket_path = socket(), .make_device = [] {
                                      return std::make_unique<vdma::testing::EchoDevice>();
                                    }});
    ASSERT_TRUE(s) << s.error().message();
    server_ = std::move(*s);
    thread_ = std::thread([this] { (void)server_->run(); });
  }
  void stop_server() {
    if (server_) server_->stop();
    if (thread_.joinable()) thread_.join();
    server_.reset();
  }

  test::TempDir dir_;
  std::unique_ptr<BackendServer> server_;
  std::thread thread_;
};

struct Buffer {
  std::byte* src = nullptr;
  std::byte* dst = nullptr;
  std::uint32_t len = 0;
};

TEST_P(ReconnectProperty, EveryBufferComesBackExactlyOnce) {
  const std::uint32_t seed = GetParam();
  std::mt19937 rng(seed);
  const dma::Platform platforms[] = {dma::kTraditional, dma::kSecureGuest, dma::kIommuPlatform,
                                     dma::kSecureGuestWithIommu};
  const dma::Platform platform = platforms[seed % 4];
  const RingLayout layout = (seed / 4) % 2 ? RingLayout::kPacked : RingLayout::kSplit;
  auto guest = dma::Guest::Create({.platform = platform,
                                   .ram_bytes = 4ull << 20,
                                   .coherent_bytes = 1ull << 20,
                                   .bounce_bytes = 4ull << 20});
  ASSERT_TRUE(guest);
  FrontendConfig cfg{.socket_path = socket(),
                     .guest = guest->get(),
                     .device_features = {kVirtioFRingIndirectDesc, kVirtioFRingEventIdx},
                     .queue_size = 16,
                     .layout = layout,
                     .reply_timeout = 2s};
  cfg.reconnect.timeout = 5s;
  auto fe = Frontend::Connect(cfg);
  ASSERT_TRUE(fe) << fe.error().message();
  FrontendQueue& q = (*fe)->queue(0);

  std::map<std::uint64_t, Buffer> buffers;
  std::set<std::uint64_t> outstanding;  // added and not yet come back
  std::set<std::uint64_t> done;
  std::uint64_t next_token = 1;
  int restarts = 0;

  auto complete = [&](const virtq::UsedBuffer& u) {
    ASSERT_EQ(outstanding.erase(u.token), 1u) << "token " << u.token << " came back twice";
    ASSERT_TRUE(done.insert(u.token).second);
    const Buffer& b = buffers.at(u.token);
    EXPECT_EQ(u.len, b.len);
    EXPECT_EQ(first_mismatch({b.dst, b.len}, u.token), -1) << "token " << u.token;
  };
  auto add = [&](std::uint64_t token) {
    const Buffer& b = buffers.at(token);
    std::memset(b.dst, 0, b.len);
    virtq::Segment r{b.src, b.len}, w{b.dst, b.len};
    return q.add_buffers(std::span(&r, 1), std::span(&w, 1), token);
  };
  auto collect = [&](std::chrono::milliseconds wait) {
    while (true) {
      auto u = q.get_used();
      ASSERT_TRUE(u) << u.error().message();
      if (!*u) break;
      complete(**u);
    }
    if (!outstanding.empty()) (void)q.wait_call(wait);
  };

  for (int step = 0; step < 60; ++step) {
    const unsigned op = rng() % 10;
    if (op < 4) {  // add a few buffers
      const unsigned n = 1 + rng() % 4;
      for (unsigned i = 0; i < n && q.num_free() > 0; ++i) {
        const std::uint32_t len = 1 + rng() % 3000;
        Buffer b{*(*guest)->alloc_ram(len), *(*guest)->alloc_ram(len), len};
        const std::uint64_t t = next_token++;
        fill_pattern({b.src, len}, t);
        buffers[t] = b;
        ASSERT_TRUE(add(t));
        outstanding.insert(t);
      }
    } else if (op < 6) {
      ASSERT_TRUE(q.kick());
    } else if (op < 9) {
      collect(5ms);
      if (HasFatalFailure()) return;
    } else {  // the back end dies and comes back
      ++restarts;
      stop_server();
      Result<bool> w = true;
      for (int i = 0; i < 200 && w; ++i) w = q.wait_call(10ms);
      ASSERT_FALSE(w);
      start_server();
      const std::set<std::uint64_t> before = outstanding;
      auto rec = (*fe)->reconnect();
      ASSERT_TRUE(rec) << rec.error().message();
      for (const auto& u : (*rec)[0].completed) complete(u);
      if (HasFatalFailure()) return;
      std::set<std::uint64_t> resubmit((*rec)[0].resubmit.begin(), (*rec)[0].resubmit.end());
      ASSERT_EQ(resubmit.size(), (*rec)[0].resubmit.size()) << "a token handed back twice";
      EXPECT_EQ(resubmit, outstanding) << "handed back != outstanding";
      for (std::uint64_t t : (*rec)[0].resubmit) ASSERT_TRUE(add(t));
    }
  }
  ASSERT_TRUE(q.kick());
  for (int i = 0; i < 500 && !outstanding.empty(); ++i) {
    collect(10ms);
    if (HasFatalFailure()) return;
  }
  EXPECT_TRUE(outstanding.empty()) << outstanding.size() << " buffers never came back";
  EXPECT_EQ(done.size(), buffers.size());
  RecordProperty("restarts", restarts);
  RecordProperty("buffers", static_cast<int>(buffers.size()));
}

INSTANTIATE_TEST_SUITE_P(Seeds, ReconnectProperty, ::testing::Range(1u, 9u));

}  // namespace
}  // namespace vdma::vhost

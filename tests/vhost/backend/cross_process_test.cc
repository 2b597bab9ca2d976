// Our front end against our back end running in another process (this test binary
// re-executed with VDMA_TEST_BACKEND_SOCKET set): real socket, real memfds passed by
// SCM_RIGHTS, one run per platform profile and ring layout, every byte echoed back and
// checked. In the secure-guest profile the back end process must hold no mapping and no
// descriptor of the private guest RAM.
#include <dirent.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "backend_test_util.h"
#include "vdma/testing/patterns.h"
#include "vdma/vhost/frontend.h"

extern char** environ;

namespace vdma::vhost::test {
namespace {

// The child: when started with the variable set, serve echo devices on that socket until
// SIGTERM, and never return to GoogleTest.
BackendServer* g_child_server = nullptr;
const bool kIsBackendChild = [] {
  const char* path = std::getenv("VDMA_TEST_BACKEND_SOCKET");
  if (path == nullptr) return false;
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // never outlive a crashed test
  auto s = BackendServer::Create(
      {.socket_path = path, .make_device = [] { return std::make_unique<EchoDevice>(2); }});
  if (!s) std::_Exit(3);
  g_child_server = s->get();
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_child_server->stop(); };
  ::sigaction(SIGTERM, &sa, nullptr);
  auto r = (*s)->run();
  s->reset();
  std::_Exit(r ? 0 : 4);
}();

class ChildBackend {
 public:
  explicit ChildBackend(const std::string& path) {
    std::string env = "VDMA_TEST_BACKEND_SOCKET=" + path;
    std::vector<char*> envp;
    for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
    envp.push_back(env.data());
    envp.push_back(nullptr);
    char exe[] = "/proc/self/exe";
    char* argv[] = {exe, nullptr};
    EXPECT_EQ(::posix_spawn(&pid, exe, nullptr, nullptr, argv, envp.data()), 0);
    for (int i = 0; i < 500 && !std::filesystem::exists(path); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ~ChildBackend() {
    ::kill(pid, SIGTERM);
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "back end status " << status;
  }
  pid_t pid = -1;
};

// Every line of /proc/<pid>/maps and every /proc/<pid>/fd link target.
std::string process_memory_view(pid_t pid) {
  std::string all;
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  for (std::string line; std::getline(maps, line);) all += line + "\n";
  const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
  for (const auto& e : std::filesystem::directory_iterator(fd_dir)) {
    std::error_code ec;
    all += std::filesystem::read_symlink(e.path(), ec).string() + "\n";
  }
  return all;
}

struct Profile {
  const char* name;
  dma::Platform platform;
  RingLayout layout;
};

class CrossProcessTest : public ::testing::TestWithParam<Profile> {};

TEST_P(CrossProcessTest, EchoRoundTripsThroughAnotherProcess) {
  TempDir dir;
  const std::string path = dir.path + "/backend.sock";
  ChildBackend child(path);
  auto guest = dma::Guest::Create(
      {.platform = GetParam().platform, .ram_bytes = 8 << 20, .bounce_bytes = 4 << 20});
  ASSERT_TRUE(guest) << guest.error().message();
  auto fe = Frontend::Connect({.socket_path = path,
                               .guest = guest->get(),
                               .device_features = {kVirtioFRingEventIdx},
                               .num_queues = 2,
                               .queue_size = 128,
                               .layout = GetParam().layout});
  ASSERT_TRUE(fe) << fe.error().message();
  constexpr std::uint32_t kLen = 4096;
  std::byte* out = *(*guest)->alloc_ram(kLen);
  std::byte* in = *(*guest)->alloc_ram(kLen);
  for (std::uint32_t qi = 0; qi < 2; ++qi) {
    FrontendQueue& q = (*fe)->queue(qi);
    for (int i = 0; i < 32; ++i) {
      const std::uint64_t seed = qi * 1000 + i;
      testing::fill_pattern({out, kLen}, seed);
      std::memset(in, 0, kLen);
      std::array<virtq::Segment, 1> r{{{out, kLen}}};
      std::array<virtq::Segment, 1> w{{{in, kLen}}};
      ASSERT_TRUE(q.add_buffers(r, w, seed));
      ASSERT_TRUE(q.kick());
      std::optional<virtq::UsedBuffer> used;
      for (int tries = 0; tries < 200 && !used; ++tries) {
        auto u = q.get_used();
        ASSERT_TRUE(u) << u.error().message();
        used = *u;
        if (!used) {
          ASSERT_TRUE(q.wait_call(std::chrono::milliseconds(10)));
        }
      }
      ASSERT_TRUE(used) << GetParam().name << " queue " << qi << " request " << i;
      EXPECT_EQ(used->token, seed);
      EXPECT_EQ(used->len, kLen);
      EXPECT_EQ(testing::first_mismatch({in, kLen}, seed), -1);
    }
  }
  const std::string view = process_memory_view(child.pid);
  if (GetParam().platform.restricted_memory) {
    // The back end sees the bounce and coherent pools, never the private RAM.
    EXPECT_NE(view.find("vdma-swiotlb"), std::string::npos);
    EXPECT_NE(view.find("vdma-coherent"), std::string::npos);
    EXPECT_EQ(view.find("vdma-guest-ram"), std::string::npos);
    EXPECT_EQ(view.find("secretmem"), std::string::npos);
  } else {
    EXPECT_NE(view.find("vdma-guest-ram"), std::string::npos);
  }
  ASSERT_TRUE((*guest)->free_ram(out, kLen));
  ASSERT_TRUE((*guest)->free_ram(in, kLen));
}

INSTANTIATE_TEST_SUITE_P(
    Profiles, CrossProcessTest,
    ::testing::Values(Profile{"traditional_split", dma::kTraditional, RingLayout::kSplit},
                      Profile{"traditional_packed", dma::kTraditional, RingLayout::kPacked},
                      Profile{"secure_split", dma::kSecureGuest, RingLayout::kSplit},
                      Profile{"secure_packed", dma::kSecureGuest, RingLayout::kPacked},
                      Profile{"iommu_split", dma::kIommuPlatform, RingLayout::kSplit},
                      Profile{"iommu_packed", dma::kIommuPlatform, RingLayout::kPacked}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace vdma::vhost::test

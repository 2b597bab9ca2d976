// The real `vdma blk` binary as a separate process: --print-capabilities JSON, usage
// errors (exit 2), an unopenable image (exit 1), serving I/O on a socket path until
// SIGTERM (exit 0), and serving the one connection handed over with --fd.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "blk_frontend.h"
#include "blk_test_util.h"
#include "vdma/testing/ring_families.h"

extern char** environ;

namespace vdma::blk::test {
namespace {

// A child process running `vdma` with `args`; stdout and stderr go to files.
class Tool {
 public:
  explicit Tool(std::vector<std::string> args, int pass_fd = -1) : out_(dir_.path + "/out") {
    std::vector<std::string> argv_s{VDMA_TOOL_PATH};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, (out_ + ".err").c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0600);
    if (pass_fd >= 0) posix_spawn_file_actions_adddup2(&fa, pass_fd, 3);
    EXPECT_EQ(posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
  }
  ~Tool() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // The exit code, or -1 if it did not exit normally within `timeout_ms`.
  int wait(int timeout_ms = 10000) {
    for (int waited = 0; waited < timeout_ms; waited += 5) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return -1;
  }
  void signal(int sig) { ::kill(pid_, sig); }
  std::string out() const { return slurp(out_); }
  std::string err() const { return slurp(out_ + ".err"); }

 private:
  static std::string slurp(const std::string& path) {
    std::string s;
    if (FILE* f = std::fopen(path.c_str(), "r")) {
      char buf[4096];
      std::size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
      std::fclose(f);
    }
    return s;
  }
  vhost::test::TempDir dir_;
  std::string out_;
  pid_t pid_ = -1;
};

TEST(VdmaTool, PrintCapabilitiesIsTheSpecsJson) {
  Tool t({"blk", "--print-capabilities"});
  ASSERT_EQ(t.wait(), 0) << t.err();
  const auto caps = nlohmann::json::parse(t.out());
  EXPECT_EQ(caps["type"], "block");
  ASSERT_TRUE(caps["features"].is_array());
  const auto& f = caps["features"];
  EXPECT_NE(std::find(f.begin(), f.end(), "read-only"), f.end());
  EXPECT_NE(std::find(f.begin(), f.end(), "blk-file"), f.end());
}

TEST(VdmaTool, HelpReadsWell) {
  Tool t({"blk", "--help"});
  ASSERT_EQ(t.wait(), 0);
  const std::string help = t.out();
  for (const char* s : {"--socket-path", "--fd", "--image", "--read-only", "--queues",
                        "--print-capabilities", "Examples:"}) {
    EXPECT_NE(help.find(s), std::string::npos) << s << " missing from:\n" << help;
  }
}

TEST(VdmaTool, UsageErrorsExitWithTwo) {
  TempImage img;
  const std::vector<std::vector<std::string>> bad{
      {},
      {"nonsense"},
      {"blk"},
      {"blk", "--image", img.path},
      {"blk", "--socket-path", img.dir + "/s", "--fd", "3", "--image", img.path},
      {"blk", "--socket-path", img.dir + "/s", "--image", img.path, "--queues", "0"},
      {"blk", "--socket-path", img.dir + "/s", "--image", img.path, "--engine", "magic"},
      {"blk", "--socket-path", img.dir + "/s"},
  };
  for (const auto& args : bad) {
    Tool t(args);
    EXPECT_EQ(t.wait(), 2) << "args: " << ::testing::PrintToString(args) << "\n" << t.err();
    EXPECT_FALSE(t.err().empty());
  }
}

TEST(VdmaTool, UnopenableImageExitsWithOne) {
  vhost::test::TempDir dir;
  Tool t({"blk", "--socket-path", dir.path + "/s", "--image", dir.path + "/missing.img"});
  EXPECT_EQ(t.wait(), 1);
  EXPECT_NE(t.err().find("cannot open image"), std::string::npos) << t.err();
  EXPECT_FALSE(std::filesystem::exists(dir.path + "/s"));
}

struct ToolFrontEnd : BlkFrontEnd<testing::SplitRing> {
  // Writes `n` 4 KiB patterns at sectors 8*i, reads them back, checks both ways.
  void write_and_read(const TempImage& image, int n) {
    std::vector<GuestRequest> reqs;
    for (int i = 0; i < n; ++i) {
      reqs.push_back(alloc(kTypeOut, i * 8, 4096));
      auto p = pattern(4096, static_cast<std::uint8_t>(40 + i));
      std::memcpy(reqs.back().data, p.data(), p.size());
      add(0, reqs.back(), false, i);
    }
    kick(0);
    ASSERT_EQ(wait_used(0, n).size(), static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      EXPECT_EQ(*reqs[i].status, std::byte{kStatusOk});
      EXPECT_EQ(image.read(i * 8 * 512, 4096), pattern(4096, static_cast<std::uint8_t>(40 + i)));
    }
    auto r = alloc(kTypeIn, 0, 4096);
    add(0, r, true, 99);
    kick(0);
    ASSERT_EQ(wait_used(0, 1).size(), 1u);
    EXPECT_EQ(*r.status, std::byte{kStatusOk});
    EXPECT_EQ(std::memcmp(r.data, pattern(4096, 40).data(), 4096), 0);
  }
};

TEST(VdmaTool, ServesASocketPathUntilSigterm) {
  TempImage image(1 << 20);
  const std::string sock = image.dir + "/blk.sock";
  Tool t({"blk", "--socket-path", sock, "--image", image.path, "--queues", "2"});
  std::optional<vhost::Channel> ch;
  for (int i = 0; i < 400 && !ch; ++i) {
    if (auto c = vhost::Channel::Connect(sock)) {
      ch.emplace(std::move(*c));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ASSERT_TRUE(ch) << "vdma blk never listened on " << sock << "\n" << t.err();
  ToolFrontEnd fe;
  fe.ch.emplace(std::move(*ch));
  fe.make_guest();
  fe.negotiate();
  fe.start_queue(0);
  fe.write_and_read(image, 8);
  fe.drivers.clear();
  fe.ch.reset();
  t.signal(SIGTERM);
  EXPECT_EQ(t.wait(), 0) << t.err();
  EXPECT_NE(t.err().find("stopped after"), std::string::npos) << t.err();
  EXPECT_FALSE(std::filesystem::exists(sock));
}

TEST(VdmaTool, ServesTheConnectionHandedOverWithFd) {
  TempImage image(1 << 20);
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  Tool t({"blk", "--fd", "3", "--image", image.path, "--read-only"}, sv[1]);
  ::close(sv[1]);
  ToolFrontEnd fe;
  fe.ch.emplace(vhost::Channel(UniqueFd(sv[0])));
  fe.make_guest();
  vhost::test::Scripted s{*fe.ch};
  ASSERT_TRUE(s.send(vhost::FrontendRequest::kSetOwner));
  auto features = s.get_u64(vhost::FrontendRequest::kGetFeatures);
  ASSERT_TRUE(features) << features.error().message() << "\n" << t.err();
  EXPECT_TRUE(FeatureSet::FromBits(*features).has(kBlkFRo));
  // The only connection ends: the back end exits by itself.
  fe.ch.reset();
  EXPECT_EQ(t.wait(), 0) << t.err();
}

}  // namespace
}  // namespace vdma::blk::test

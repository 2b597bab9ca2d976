// Test helpers for driving a real qemu-storage-daemon: a temporary directory that is
// removed with everything in it, a raw image file, and the daemon process exporting the
// image as vhost-user-blk on a Unix socket (killed and reaped on destruction; it also dies
// with the test process, PR_SET_PDEATHSIG).
//
//   TempDir dir;
//   std::string img = make_image(dir, 16 << 20);
//   auto qsd = Qsd::Start({.image = img, .socket = dir.path() + "/blk.sock"});
//   if (!qsd) GTEST_SKIP() << "qemu-storage-daemon not installed";
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace vdma::vhost::test {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "vdma-fe-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  bool ok() const { return !path_.empty(); }

 private:
  std::string path_;
};

// A zero-filled raw image of `bytes` (sparse).
inline std::string make_image(const TempDir& dir, std::uint64_t bytes) {
  std::string p = dir.path() + "/disk.raw";
  int fd = ::open(p.c_str(), O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return {};
  const bool ok = ::ftruncate(fd, static_cast<off_t>(bytes)) == 0;
  ::close(fd);
  return ok ? p : std::string{};
}

// True once `path` is a listening Unix socket (/proc/net/unix, flag __SO_ACCEPTCON).
inline bool unix_socket_listening(const std::string& path) {
  std::ifstream in("/proc/net/unix");
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    if (line.size() < path.size() ||
        line.compare(line.size() - path.size(), path.size(), path) != 0) {
      continue;
    }
    // "Num: RefCount Protocol Flags Type St Inode Path"
    char num[32];
    unsigned ref = 0, proto = 0, flags = 0;
    if (std::sscanf(line.c_str(), "%31s %x %x %x", num, &ref, &proto, &flags) == 4 &&
        (flags & 0x10000) != 0) {
      return true;
    }
  }
  return false;
}

inline std::optional<std::string> qsd_binary() {
  for (const char* p : {"/usr/bin/qemu-storage-daemon", "/usr/local/bin/qemu-storage-daemon"}) {
    if (::access(p, X_OK) == 0) return std::string(p);
  }
  return std::nullopt;
}

struct QsdOptions {
  std::string image;
  std::string socket;
  unsigned num_queues = 1;
  std::string log;  // stdout/stderr of the daemon; /dev/null if empty
};

class Qsd {
 public:
  // nullptr if the daemon is not installed or did not come up listening within 10 s.
  static std::unique_ptr<Qsd> Start(const QsdOptions& o) {
    auto bin = qsd_binary();
    if (!bin) return nullptr;
    std::vector<std::string> args{
        *bin, "--blockdev", "driver=file,node-name=f,filename=" + o.image, "--export",
        "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=" + o.socket +
            ",writable=on,num-queues=" + std::to_string(o.num_queues)};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string log = o.log.empty() ? "/dev/null" : o.log;
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) return nullptr;
    if (pid == 0) {
      // Child: only async-signal-safe calls until exec.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    std::unique_ptr<Qsd> q(new Qsd(pid));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!unix_socket_listening(o.socket)) {
      if (std::chrono::steady_clock::now() > deadline || q->exited()) return nullptr;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return q;
  }

  ~Qsd() { kill(); }
  Qsd(const Qsd&) = delete;
  Qsd& operator=(const Qsd&) = delete;

  // SIGKILL and reap (idempotent).
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }
  pid_t pid() const { return pid_; }

 private:
  explicit Qsd(pid_t pid) : pid_(pid) {}
  bool exited() {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return true;
    }
    return false;
  }
  pid_t pid_;
};

}  // namespace vdma::vhost::test

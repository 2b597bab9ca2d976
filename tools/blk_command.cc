// `vdma blk`: serves a disk image as a vhost-user virtio-blk device, following the
// back-end program conventions of QEMU's docs/interop/vhost-user.rst (--socket-path,
// --fd, --print-capabilities, --read-only, --blk-file).
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "command.h"
#include "vdma/base/log.h"
#include "vdma/devices/blk/disk.h"
#include "vdma/devices/blk/vhost_blk_device.h"
#include "vdma/vhost/backend.h"

namespace vdma::tools {
namespace {

constexpr const char* kLog = "vdma.blk";

struct BlkOptions {
  std::string socket_path;
  int fd = -1;
  std::string image;
  bool read_only = false;
  std::uint16_t queues = 1;
  std::uint32_t queue_size = 1024;
  std::string engine = "auto";
  std::string serial;
  bool print_capabilities = false;
};

std::atomic<vhost::BackendServer*> g_server{nullptr};

void on_signal(int) {
  // BackendServer::stop() only writes an eventfd: async-signal-safe.
  if (vhost::BackendServer* s = g_server.load()) s->stop();
}

int print_capabilities() {
  const nlohmann::json caps = {{"type", "block"}, {"features", {"read-only", "blk-file"}}};
  std::printf("%s\n", caps.dump().c_str());
  return kExitOk;
}

blk::EngineKind engine_kind(const std::string& name) {
  if (name == "io_uring") return blk::EngineKind::kIoUring;
  if (name == "threads") return blk::EngineKind::kThreadPool;
  return blk::EngineKind::kAuto;
}

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

int serve(const BlkOptions& o) {
  auto disk = blk::Disk::Open({.path = o.image, .read_only = o.read_only, .serial = o.serial});
  if (!disk) {
    log_error(kLog, "cannot open image {}: {}", o.image, disk.error().message());
    return kExitFailure;
  }
  std::shared_ptr<const blk::Disk> shared(std::move(*disk));
  blk::VhostBlkOptions dev{.num_queues = o.queues, .max_queue_size = o.queue_size};
  dev.queue.engine.kind = engine_kind(o.engine);
  if (auto ok = blk::VhostBlkDevice::check_options(dev); !ok) {
    log_error(kLog, "{}", ok.error().message());
    return kExitFailure;
  }
  auto server = vhost::BackendServer::Create(
      {.socket_path = o.socket_path, .socket_fd = o.fd, .make_device = [shared, dev] {
         return std::make_unique<blk::VhostBlkDevice>(shared, dev);
       }});
  if (!server) {
    log_error(kLog, "cannot serve on {}: {}",
              o.socket_path.empty() ? "fd " + std::to_string(o.fd) : o.socket_path,
              server.error().message());
    return kExitFailure;
  }
  g_server.store(server->get());
  install_signal_handlers();
  log_info(kLog, "serving {} ({} sectors, {}, {} queue{}) on {}", o.image,
           shared->capacity_sectors(), o.read_only ? "read-only" : "read-write", o.queues,
           o.queues == 1 ? "" : "s",
           o.socket_path.empty() ? "fd " + std::to_string(o.fd) : o.socket_path);
  auto r = (*server)->run();
  g_server.store(nullptr);
  if (!r) {
    log_error(kLog, "server failed: {}", r.error().message());
    return kExitFailure;
  }
  log_info(kLog, "stopped after {} connection(s)", (*server)->connections_served());
  return kExitOk;
}

}  // namespace

Subcommand add_blk_command(CLI::App& app) {
  CLI::App* sub =
      app.add_subcommand("blk", "Serve a disk image as a vhost-user virtio-blk back end");
  auto o = std::make_shared<BlkOptions>();
  auto* path = sub->add_option("-s,--socket-path", o->socket_path,
                               "Listen on this Unix socket path (must not exist yet)")
                   ->type_name("PATH");
  auto* fd = sub->add_option("--fd", o->fd,
                             "Serve on an inherited socket fd: a listening socket, or one "
                             "connected to the front end")
                 ->type_name("FD")
                 ->check(CLI::NonNegativeNumber.description(""));
  path->excludes(fd);
  sub->add_option("-i,--image,--blk-file", o->image,
                  "Disk image: a regular file or a block device; its size (a multiple of "
                  "512 bytes) is the disk's capacity")
      ->type_name("FILE");
  sub->add_flag("-r,--read-only", o->read_only,
                "Open the image read-only and offer VIRTIO_BLK_F_RO; writes fail with IOERR");
  sub->add_option("-q,--queues", o->queues, "Number of request queues (1-64)")
      ->default_val(1)
      ->type_name("N")
      ->check(CLI::Range(1, 64).description(""));
  sub->add_option("--queue-size", o->queue_size, "Largest ring size accepted (1-32768)")
      ->default_val(1024)
      ->type_name("N")
      ->check(CLI::Range(1, 32768).description(""));
  sub->add_option("--engine", o->engine,
                  "I/O engine: io_uring, threads (a worker pool), or auto (io_uring if the "
                  "kernel allows it)")
      ->default_val("auto")
      ->type_name("KIND")
      ->check(CLI::IsMember({"auto", "io_uring", "threads"}).description(""));
  sub->add_option("--serial", o->serial,
                  "Identity returned by GET_ID (up to 20 bytes; default: the image's file name)")
      ->type_name("TEXT");
  sub->add_flag("--print-capabilities", o->print_capabilities,
                "Print the back end's capabilities as JSON (vhost-user.json) and exit");
  sub->footer(
      "Serves each front end that connects on its own thread until SIGINT or SIGTERM (with "
      "--fd on a connected socket: until that connection ends).\n\n"
      "Examples:\n"
      "  vdma blk --socket-path /tmp/blk.sock --image disk.img\n"
      "  vdma blk --fd 3 --image disk.img --read-only --queues 4\n"
      "Log level: VDMA_LOG=debug|info|warn|error. Exit codes: 0 clean stop, 1 runtime "
      "failure (image, socket), 2 usage error.");
  return {sub, [sub, o]() -> int {
            if (o->print_capabilities) return print_capabilities();
            if (o->socket_path.empty() && o->fd < 0) {
              return usage_error(*sub, "one of --socket-path or --fd is required");
            }
            if (o->image.empty()) return usage_error(*sub, "--image is required");
            return serve(*o);
          }};
}

}  // namespace vdma::tools

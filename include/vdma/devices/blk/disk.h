// Disk: the image a virtio-blk device serves — its file, its size in sectors, what the
// device accepts (Limits), the identity GET_ID returns, the device-specific feature bits
// and the config space. Transport-independent; shared (const) by every queue and every
// connection serving the image.
//
//   auto disk = VDMA_TRY(blk::Disk::Open({.path = "/var/lib/disk.img", .read_only = true}));
//   disk->capacity_sectors();                 // image bytes / 512
//   blk::Config c = disk->config({.num_queues = 4});
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "vdma/base/features.h"
#include "vdma/base/result.h"
#include "vdma/devices/blk/request.h"
#include "vdma/devices/blk/spec.h"
#include "vdma/memory/unique_fd.h"

namespace vdma::blk {

struct DiskOptions {
  std::string path;        // a regular file or a block device
  bool read_only = false;  // opened O_RDONLY; VIRTIO_BLK_F_RO offered
  // GET_ID's answer (at most 20 bytes used); empty: the image's file name.
  std::string serial;
  // 1..1024 (IOV_MAX). A request is seg_max data descriptors plus header and status, and
  // no chain may be longer than the queue (2.7.5.3.1): QEMU's default queue of 128 needs
  // 126. (With 128, Linux built 130-entry indirect tables, which are refused.)
  std::uint32_t seg_max = 126;
  std::uint32_t size_max = 1u << 20;  // 512..2^31
  std::uint32_t blk_size = 512;       // logical block size offered (power of two >= 512)
};

// Per-device state the config space shows besides the disk's fixed values.
struct ConfigState {
  std::uint16_t num_queues = 1;
  bool writeback = true;  // the write cache is on (CONFIG_WCE); off: writes are durable
};

class Disk {
 public:
  static Result<std::unique_ptr<Disk>> Open(DiskOptions options);
  Disk(const Disk&) = delete;
  Disk& operator=(const Disk&) = delete;

  int fd() const { return fd_.get(); }
  const std::string& path() const { return options_.path; }
  bool read_only() const { return options_.read_only; }
  std::uint64_t capacity_sectors() const { return limits_.capacity_sectors; }
  const Limits& limits() const { return limits_; }
  // GET_ID's 20 bytes (NUL-padded).
  const std::array<std::uint8_t, kIdBytes>& id() const { return id_; }

  // Device-specific feature bits offered (SIZE_MAX, SEG_MAX, BLK_SIZE, FLUSH, TOPOLOGY,
  // CONFIG_WCE, MQ, and DISCARD + WRITE_ZEROES, or RO when read-only).
  FeatureSet features() const;
  Config config(const ConfigState& state) const;

  // False once the file system refused FALLOC_FL_ZERO_RANGE: write zeroes with writes.
  bool zero_range_supported() const { return zero_range_.load(std::memory_order_relaxed); }
  void set_zero_range_unsupported() const { zero_range_.store(false, std::memory_order_relaxed); }

 private:
  Disk(DiskOptions options, UniqueFd fd, std::uint64_t bytes);

  DiskOptions options_;
  UniqueFd fd_;
  Limits limits_;
  std::array<std::uint8_t, kIdBytes> id_{};
  mutable std::atomic<bool> zero_range_{true};  // a hint shared by every queue
};

// Reads `out.size()` bytes of `config` at `offset` (zeros past the struct, up to
// kConfigSpaceBytes); kConfigAccess beyond.
Result<void> read_config_bytes(const Config& config, std::uint32_t offset,
                               std::span<std::uint8_t> out);

}  // namespace vdma::blk

#include "vdma/devices/blk/disk.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>

#include "vdma/base/log.h"
#include "vdma/memory/errors.h"

namespace vdma::blk {
namespace {

constexpr const char* kLog = "blk";

Result<std::uint64_t> image_bytes(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Err(memory::errno_code(errno));
  if (S_ISREG(st.st_mode)) return static_cast<std::uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    std::uint64_t bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0) return Err(memory::errno_code(errno));
    return bytes;
  }
  return Err(Errc::kNotAnImage);
}

Result<void> check_options(const DiskOptions& o) {
  const bool ok = !o.path.empty() && o.seg_max >= 1 && o.seg_max <= 1024 &&
                  o.size_max >= kSectorSize && o.size_max <= (1u << 31) &&
                  o.blk_size >= kSectorSize && std::has_single_bit(o.blk_size) &&
                  o.blk_size <= (1u << 16);
  if (!ok) return Err(Errc::kInvalidOptions);
  return Ok();
}

}  // namespace

Result<std::unique_ptr<Disk>> Disk::Open(DiskOptions options) {
  VDMA_TRY(check_options(options));
  const int flags = (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  UniqueFd fd(::open(options.path.c_str(), flags));
  if (!fd) return Err(memory::errno_code(errno));
  const std::uint64_t bytes = VDMA_TRY(image_bytes(fd.get()));
  if (bytes < kSectorSize) return Err(Errc::kImageTooSmall);
  if (bytes % kSectorSize != 0) {
    log_warn(kLog, "image {} is {} bytes, not a multiple of 512: the last {} bytes are unused",
             options.path, bytes, bytes % kSectorSize);
  }
  return std::unique_ptr<Disk>(new Disk(std::move(options), std::move(fd), bytes));
}

Disk::Disk(DiskOptions options, UniqueFd fd, std::uint64_t bytes)
    : options_(std::move(options)), fd_(std::move(fd)) {
  limits_.capacity_sectors = bytes >> kSectorShift;
  limits_.seg_max = options_.seg_max;
  limits_.size_max = options_.size_max;
  limits_.read_only = options_.read_only;
  limits_.discard = !options_.read_only;
  limits_.write_zeroes = !options_.read_only;
  std::string serial = options_.serial;
  if (serial.empty()) serial = std::filesystem::path(options_.path).filename().string();
  std::memcpy(id_.data(), serial.data(), std::min(serial.size(), id_.size()));
}

FeatureSet Disk::features() const {
  FeatureSet f{kBlkFSizeMax,  kBlkFSegMax,    kBlkFBlkSize, kBlkFFlush,
               kBlkFTopology, kBlkFConfigWce, kBlkFMq};
  if (read_only()) {
    f.set(kBlkFRo);
  } else {
    f.set(kBlkFDiscard).set(kBlkFWriteZeroes);
  }
  return f;
}

Config Disk::config(const ConfigState& state) const {
  Config c{};
  c.capacity = limits_.capacity_sectors;
  c.size_max = limits_.size_max;
  c.seg_max = limits_.seg_max;
  c.blk_size = options_.blk_size;
  c.topology.physical_block_exp = 0;
  c.topology.min_io_size = 1;
  c.topology.opt_io_size = 0;
  c.writeback = state.writeback ? 1 : 0;
  c.num_queues = state.num_queues;
  if (!read_only()) {
    c.max_discard_sectors = limits_.max_discard_sectors;
    c.max_discard_seg = limits_.max_discard_seg;
    c.discard_sector_alignment = options_.blk_size / kSectorSize;
    c.max_write_zeroes_sectors = limits_.max_write_zeroes_sectors;
    c.max_write_zeroes_seg = limits_.max_write_zeroes_seg;
    c.write_zeroes_may_unmap = 1;
  }
  return c;
}

Result<void> read_config_bytes(const Config& config, std::uint32_t offset,
                               std::span<std::uint8_t> out) {
  if (offset > kConfigSpaceBytes || out.size() > kConfigSpaceBytes - offset) {
    return Err(Errc::kConfigAccess);
  }
  std::array<std::uint8_t, kConfigSpaceBytes> space{};
  std::memcpy(space.data(), &config, sizeof(config));
  std::memcpy(out.data(), space.data() + offset, out.size());
  return Ok();
}

}  // namespace vdma::blk

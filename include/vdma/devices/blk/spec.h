// virtio-blk wire format from the VIRTIO 1.2 specification, section 5.2 "Block Device":
// feature bits, request types, status values, the request header, the discard /
// write-zeroes range, and the device configuration layout (little-endian, checked by
// static_asserts against the spec's offsets).
//
//   blk::OutHdr h;                        // copied out of guest memory once
//   if (h.type == blk::kTypeIn) ...
//   blk::Config c{};
//   c.capacity = image_bytes / blk::kSectorSize;
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "vdma/base/features.h"

namespace vdma::blk {

static_assert(std::endian::native == std::endian::little,
              "virtio 1.x fields are little-endian; a big-endian port needs byte swaps here");

// Device-specific feature bits (5.2.3).
inline constexpr Feature kBlkFSizeMax{1};       // size_max is valid
inline constexpr Feature kBlkFSegMax{2};        // seg_max is valid
inline constexpr Feature kBlkFGeometry{4};      // geometry is valid
inline constexpr Feature kBlkFRo{5};            // the device is read-only
inline constexpr Feature kBlkFBlkSize{6};       // blk_size is valid
inline constexpr Feature kBlkFFlush{9};         // FLUSH requests
inline constexpr Feature kBlkFTopology{10};     // topology is valid
inline constexpr Feature kBlkFConfigWce{11};    // writeback is valid and writable
inline constexpr Feature kBlkFMq{12};           // num_queues is valid
inline constexpr Feature kBlkFDiscard{13};      // DISCARD requests
inline constexpr Feature kBlkFWriteZeroes{14};  // WRITE_ZEROES requests
inline constexpr Feature kBlkFLifetime{15};     // GET_LIFETIME requests
inline constexpr Feature kBlkFSecureErase{16};  // SECURE_ERASE requests

// Request types (5.2.6).
inline constexpr std::uint32_t kTypeIn = 0;
inline constexpr std::uint32_t kTypeOut = 1;
inline constexpr std::uint32_t kTypeFlush = 4;
inline constexpr std::uint32_t kTypeGetId = 8;
inline constexpr std::uint32_t kTypeGetLifetime = 10;
inline constexpr std::uint32_t kTypeDiscard = 11;
inline constexpr std::uint32_t kTypeWriteZeroes = 13;
inline constexpr std::uint32_t kTypeSecureErase = 14;

// Status values written into the last byte of a request.
inline constexpr std::uint8_t kStatusOk = 0;
inline constexpr std::uint8_t kStatusIoErr = 1;
inline constexpr std::uint8_t kStatusUnsupp = 2;

// Sectors are always 512 bytes, whatever blk_size says.
inline constexpr std::uint64_t kSectorSize = 512;
inline constexpr unsigned kSectorShift = 9;
// GET_ID answers with a NUL-padded string of up to this many bytes.
inline constexpr std::size_t kIdBytes = 20;
// The unmap flag of a discard / write-zeroes range.
inline constexpr std::uint32_t kRangeFlagUnmap = 1;

// The device-readable header every request starts with.
struct OutHdr {
  std::uint32_t type;
  std::uint32_t reserved;
  std::uint64_t sector;
};
static_assert(sizeof(OutHdr) == 16);
static_assert(offsetof(OutHdr, sector) == 8);

// One range of a DISCARD or WRITE_ZEROES request.
struct RangeSeg {
  std::uint64_t sector;
  std::uint32_t num_sectors;
  std::uint32_t flags;
};
static_assert(sizeof(RangeSeg) == 16);
static_assert(offsetof(RangeSeg, num_sectors) == 8);
static_assert(offsetof(RangeSeg, flags) == 12);

// struct virtio_blk_config (5.2.4), up to the secure-erase fields.
struct Config {
  std::uint64_t capacity;  // in 512-byte sectors
  std::uint32_t size_max;
  std::uint32_t seg_max;
  struct Geometry {
    std::uint16_t cylinders;
    std::uint8_t heads;
    std::uint8_t sectors;
  } geometry;
  std::uint32_t blk_size;
  struct Topology {
    std::uint8_t physical_block_exp;
    std::uint8_t alignment_offset;
    std::uint16_t min_io_size;
    std::uint32_t opt_io_size;
  } topology;
  std::uint8_t writeback;
  std::uint8_t unused0;
  std::uint16_t num_queues;
  std::uint32_t max_discard_sectors;
  std::uint32_t max_discard_seg;
  std::uint32_t discard_sector_alignment;
  std::uint32_t max_write_zeroes_sectors;
  std::uint32_t max_write_zeroes_seg;
  std::uint8_t write_zeroes_may_unmap;
  std::uint8_t unused1[3];
  std::uint32_t max_secure_erase_sectors;
  std::uint32_t max_secure_erase_seg;
  std::uint32_t secure_erase_sector_alignment;
};
static_assert(offsetof(Config, capacity) == 0);
static_assert(offsetof(Config, size_max) == 8);
static_assert(offsetof(Config, seg_max) == 12);
static_assert(offsetof(Config, geometry) == 16);
static_assert(offsetof(Config, blk_size) == 20);
static_assert(offsetof(Config, topology) == 24);
static_assert(offsetof(Config, writeback) == 32);
static_assert(offsetof(Config, num_queues) == 34);
static_assert(offsetof(Config, max_discard_sectors) == 36);
static_assert(offsetof(Config, max_discard_seg) == 40);
static_assert(offsetof(Config, discard_sector_alignment) == 44);
static_assert(offsetof(Config, max_write_zeroes_sectors) == 48);
static_assert(offsetof(Config, max_write_zeroes_seg) == 52);
static_assert(offsetof(Config, write_zeroes_may_unmap) == 56);
static_assert(offsetof(Config, max_secure_erase_sectors) == 60);
static_assert(offsetof(Config, secure_erase_sector_alignment) == 68);
static_assert(sizeof(Config) == 72);

// The config space a front end may read: the struct above, then zeros (newer layouts add
// the zoned fields; QEMU reads its own struct's size, which may be larger than ours).
inline constexpr std::uint32_t kConfigSpaceBytes = 256;

}  // namespace vdma::blk

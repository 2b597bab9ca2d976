// Parsing one virtio-blk request out of a descriptor chain: a pure function, separate
// from executing it (and what a fuzzer drives).
//
// A request is: a 16-byte header (u32 type, u32 reserved, u64 sector) in the first
// device-readable bytes, possibly split across segments; then the data (device-readable
// for OUT, DISCARD and WRITE_ZEROES, device-writable for IN and GET_ID); then one
// device-writable status byte, the chain's last. The chain's memory is guest-controlled:
// the header and the ranges are copied out once, validated, and only the copies are
// used; data segments are handed on as spans for the I/O itself.
//
//   blk::Limits limits{.capacity_sectors = 2048};
//   auto req = blk::parse_request(chain, limits);
//   if (!req) {
//     if (std::byte* s = blk::status_byte(chain)) *s = std::byte{blk::status_for(req.error())};
//   }
#pragma once

#include <cstdint>
#include <vector>

#include "vdma/base/result.h"
#include "vdma/devices/blk/errors.h"
#include "vdma/devices/blk/spec.h"
#include "vdma/virtq/types.h"

namespace vdma::blk {

// What the device accepts (mirrors the config space it offers).
struct Limits {
  std::uint64_t capacity_sectors = 0;
  std::uint32_t seg_max = 128;        // data segments per request (<= IOV_MAX)
  std::uint32_t size_max = 1u << 20;  // bytes per data segment
  std::uint32_t max_discard_sectors = 0x3fffff;
  std::uint32_t max_discard_seg = 32;
  std::uint32_t max_write_zeroes_sectors = 0x3fffff;
  std::uint32_t max_write_zeroes_seg = 32;
  bool read_only = false;
  bool discard = true;       // DISCARD offered
  bool write_zeroes = true;  // WRITE_ZEROES offered
};

// One DISCARD / WRITE_ZEROES range, copied out of guest memory.
struct Range {
  std::uint64_t sector = 0;
  std::uint32_t num_sectors = 0;
  std::uint32_t flags = 0;
};

// A validated request.
struct Request {
  std::uint32_t type = 0;
  std::uint64_t sector = 0;                // IN / OUT
  std::vector<virtq::DeviceSegment> data;  // guest-controlled: IN / OUT / GET_ID data
  std::uint64_t data_bytes = 0;            // sum of data[i].len
  std::vector<Range> ranges;               // DISCARD / WRITE_ZEROES
  std::byte* status = nullptr;             // the status byte (guest memory)
  std::uint32_t writable_bytes = 0;        // data (IN / GET_ID) + status: the used length
};

// The chain's status byte (its last device-writable byte), or nullptr if it has none.
std::byte* status_byte(const virtq::Chain& chain);

// Parses and validates the request in `chain` against `limits`. Errors (Errc) name the
// malformation; status_for() turns them into the status to write.
Result<Request> parse_request(const virtq::Chain& chain, const Limits& limits);

}  // namespace vdma::blk

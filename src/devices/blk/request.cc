#include "vdma/devices/blk/request.h"

#include <algorithm>
#include <cstring>
#include <span>

namespace vdma::blk {
namespace {

using virtq::DeviceSegment;

std::uint64_t total_bytes(const std::vector<DeviceSegment>& segs) {
  std::uint64_t n = 0;
  for (const DeviceSegment& s : segs) n += s.len;
  return n;
}

// Copies out.size() bytes starting at byte `offset` of `segs`. The caller checked that
// the segments hold them. guest-controlled: read once, into `out`.
void gather(const std::vector<DeviceSegment>& segs, std::uint64_t offset,
            std::span<std::byte> out) {
  std::size_t done = 0;
  for (const DeviceSegment& s : segs) {
    if (done == out.size()) break;
    if (offset >= s.len) {
      offset -= s.len;
      continue;
    }
    const std::size_t n = std::min<std::uint64_t>(s.len - offset, out.size() - done);
    std::memcpy(out.data() + done, s.host + offset, n);
    done += n;
    offset = 0;
  }
}

// The segments covering bytes [begin, end) of `segs`, as data segments within the limits.
Result<std::vector<DeviceSegment>> slice(const std::vector<DeviceSegment>& segs,
                                         std::uint64_t begin, std::uint64_t end,
                                         const Limits& limits) {
  std::vector<DeviceSegment> out;
  std::uint64_t pos = 0;
  for (const DeviceSegment& s : segs) {
    const std::uint64_t s_begin = pos;
    const std::uint64_t s_end = pos + s.len;
    pos = s_end;
    const std::uint64_t b = std::max(begin, s_begin);
    const std::uint64_t e = std::min(end, s_end);
    if (b >= e) continue;
    if (e - b > limits.size_max) return Err(Errc::kSegmentTooLarge);
    if (out.size() == limits.seg_max) return Err(Errc::kTooManySegments);
    out.push_back({s.host + (b - s_begin), static_cast<std::uint32_t>(e - b)});
  }
  return out;
}

Result<void> check_range(std::uint64_t sector, std::uint64_t sectors, const Limits& limits) {
  // Written so that neither sum can overflow.
  if (sector > limits.capacity_sectors || sectors > limits.capacity_sectors - sector) {
    return Err(Errc::kOutOfRange);
  }
  return Ok();
}

// IN / OUT: the data segments, a whole number of sectors, inside the image.
Result<void> parse_rw(Request& req, const std::vector<DeviceSegment>& segs, std::uint64_t begin,
                      std::uint64_t end, const Limits& limits) {
  req.data = VDMA_TRY(slice(segs, begin, end, limits));
  req.data_bytes = end - begin;
  if (req.data_bytes % kSectorSize != 0) return Err(Errc::kUnalignedLength);
  return check_range(req.sector, req.data_bytes >> kSectorShift, limits);
}

// DISCARD / WRITE_ZEROES: 16-byte ranges in the readable bytes after the header.
Result<void> parse_ranges(Request& req, const std::vector<DeviceSegment>& readable,
                          std::uint64_t payload, const Limits& limits) {
  const bool discard = req.type == kTypeDiscard;
  if (payload == 0 || payload % sizeof(RangeSeg) != 0) return Err(Errc::kBadRangePayload);
  const std::uint64_t count = payload / sizeof(RangeSeg);
  const std::uint32_t max_seg = discard ? limits.max_discard_seg : limits.max_write_zeroes_seg;
  const std::uint32_t max_sectors =
      discard ? limits.max_discard_sectors : limits.max_write_zeroes_sectors;
  if (count > max_seg) return Err(Errc::kTooManyRanges);
  req.ranges.reserve(count);
  for (std::uint64_t i = 0; i < count; ++i) {
    RangeSeg seg;
    gather(readable, sizeof(OutHdr) + i * sizeof(RangeSeg),
           std::as_writable_bytes(std::span(&seg, 1)));
    // 5.2.6.2: UNSUPP for unknown flags, and for the unmap flag on a discard.
    const std::uint32_t allowed = discard ? 0 : kRangeFlagUnmap;
    if ((seg.flags & ~allowed) != 0) return Err(Errc::kUnsupportedFlags);
    if (seg.num_sectors > max_sectors) return Err(Errc::kRangeTooLarge);
    VDMA_TRY(check_range(seg.sector, seg.num_sectors, limits));
    req.ranges.push_back({seg.sector, seg.num_sectors, seg.flags});
  }
  return Ok();
}

}  // namespace

std::byte* status_byte(const virtq::Chain& chain) {
  for (auto it = chain.writable.rbegin(); it != chain.writable.rend(); ++it) {
    if (it->len != 0) return it->host + it->len - 1;
  }
  return nullptr;
}

Result<Request> parse_request(const virtq::Chain& chain, const Limits& limits) {
  Request req;
  req.status = status_byte(chain);
  if (req.status == nullptr) return Err(Errc::kNoStatusByte);
  const std::uint64_t readable = total_bytes(chain.readable);
  const std::uint64_t writable = total_bytes(chain.writable);
  if (readable < sizeof(OutHdr)) return Err(Errc::kShortHeader);
  OutHdr hdr;
  gather(chain.readable, 0, std::as_writable_bytes(std::span(&hdr, 1)));
  req.type = hdr.type;
  req.sector = hdr.sector;
  const std::uint64_t readable_data = readable - sizeof(OutHdr);
  const std::uint64_t writable_data = writable - 1;  // before the status byte
  req.writable_bytes = 1;

  switch (req.type) {
    case kTypeIn:
      if (readable_data != 0) return Err(Errc::kDataDirection);
      VDMA_TRY(parse_rw(req, chain.writable, 0, writable_data, limits));
      req.writable_bytes = static_cast<std::uint32_t>(writable);
      return req;
    case kTypeOut:
      if (limits.read_only) return Err(Errc::kReadOnly);
      if (writable_data != 0) return Err(Errc::kDataDirection);
      VDMA_TRY(parse_rw(req, chain.readable, sizeof(OutHdr), readable, limits));
      return req;
    case kTypeFlush:
      if (readable_data != 0) return Err(Errc::kUnexpectedData);
      if (writable_data != 0) return Err(Errc::kDataDirection);
      return req;
    case kTypeGetId:
      if (readable_data != 0) return Err(Errc::kDataDirection);
      req.data = VDMA_TRY(slice(chain.writable, 0, writable_data, limits));
      req.data_bytes = writable_data;
      return req;
    case kTypeDiscard:
    case kTypeWriteZeroes: {
      if (limits.read_only) return Err(Errc::kReadOnly);
      const bool offered = req.type == kTypeDiscard ? limits.discard : limits.write_zeroes;
      if (!offered) return Err(Errc::kUnsupportedType);
      if (writable_data != 0) return Err(Errc::kDataDirection);
      VDMA_TRY(parse_ranges(req, chain.readable, readable_data, limits));
      return req;
    }
    default:
      return Err(Errc::kUnsupportedType);
  }
}

}  // namespace vdma::blk

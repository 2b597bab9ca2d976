// Mapping a buffer's segments through the DMA API, shared by both driver queues: every
// segment or none (a refused mapping undoes the ones before it, and the ring is not
// touched), readable ones to-device and writable ones from-device.
//
// The records go straight to where the queue keeps them (its private shadow), through a
// `put(i, record)` callback, so the hot path copies each record once:
//
//   auto cap = VDMA_TRY(map_segments(ops, readable, writable,
//       [&](std::size_t i, const dma::MappingRecord& m) { store_record(shadow[i], m); },
//       [&](std::size_t n) { for (std::size_t i = 0; i < n; ++i) unmap_or_log(ops, shadow[i]); }));
#pragma once

#include <span>
#include <vector>

#include "vdma/base/log.h"
#include "vdma/base/result.h"
#include "vdma/dma/dma_ops.h"
#include "vdma/virtq/types.h"

namespace vdma::virtq {

// Unmaps one record; a failure can only be logged (the caller is releasing it anyway).
template <dma::DmaProvider Ops>
void unmap_or_log(Ops& ops, const dma::MappingRecord& m) {
  auto r = ops.unmap_record(m);
  if (!r) [[unlikely]]
    log_error("virtq", "unmap failed: {}", r.error().message());
}

template <dma::DmaProvider Ops>
void unmap_all(Ops& ops, std::vector<dma::MappingRecord>& maps) {
  for (const auto& m : maps) unmap_or_log(ops, m);
  maps.clear();
}

// Copies a record field by field. A whole-struct copy out of a just-built Result is
// compiled (g++ 12) into 16-byte loads spanning the narrower stores that built it, which
// cannot be store-forwarded: three stalls per mapping on the direct path.
inline void store_record(dma::MappingRecord& dst, const dma::MappingRecord& src) {
  dst.addr = src.addr;
  dst.cpu = src.cpu;
  dst.len = src.len;
  dst.cookie = src.cookie;
  dst.dir = src.dir;
}

// Maps readable then writable segments, handing the i-th record to put(i, record).
// Returns the writable capacity in bytes. If a mapping is refused, undo(i) is called to
// unmap the i records already handed out, and the error is returned.
template <dma::DmaProvider Ops, class Put, class Undo>
Result<std::uint64_t> map_segments(Ops& ops, std::span<const Segment> readable,
                                   std::span<const Segment> writable, Put&& put, Undo&& undo) {
  std::uint64_t capacity = 0;
  const std::size_t nr = readable.size(), n = nr + writable.size();
  // One call site for map_record, so the compiler inlines it (two loops made g++ 12 call
  // DirectOps::map_record out of line).
  for (std::size_t i = 0; i < n; ++i) {
    const bool w = i >= nr;
    const Segment& s = w ? writable[i - nr] : readable[i];
    auto m =
        ops.map_record(s.cpu, s.len, w ? dma::Direction::kFromDevice : dma::Direction::kToDevice);
    if (!m) [[unlikely]] {
      undo(i);
      return Err(m.error());
    }
    put(i, *m);
    if (w) capacity += s.len;
  }
  return capacity;
}

// The same into a vector (cleared first; empty again on error).
template <dma::DmaProvider Ops>
Result<std::uint64_t> map_segments(Ops& ops, std::span<const Segment> readable,
                                   std::span<const Segment> writable,
                                   std::vector<dma::MappingRecord>& out) {
  out.clear();
  return map_segments(
      ops, readable, writable,
      [&](std::size_t, const dma::MappingRecord& m) { store_record(out.emplace_back(), m); },
      [&](std::size_t) { unmap_all(ops, out); });
}

}  // namespace vdma::virtq

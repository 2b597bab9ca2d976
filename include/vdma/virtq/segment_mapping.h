// Mapping a buffer's segments through the DMA API, shared by both driver queues: every
// segment or none (a refused mapping undoes the ones before it, and the ring is not
// touched), readable ones to-device and writable ones from-device.
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
  if (!r) log_error("virtq", "unmap failed: {}", r.error().message());
}

template <dma::DmaProvider Ops>
void unmap_all(Ops& ops, std::vector<dma::MappingRecord>& maps) {
  for (const auto& m : maps) unmap_or_log(ops, m);
  maps.clear();
}

// Maps readable then writable segments into `out` (cleared first). Returns the writable
// capacity in bytes. On error nothing stays mapped and `out` is empty.
template <dma::DmaProvider Ops>
Result<std::uint64_t> map_segments(Ops& ops, std::span<const Segment> readable,
                                   std::span<const Segment> writable,
                                   std::vector<dma::MappingRecord>& out) {
  out.clear();
  std::uint64_t capacity = 0;
  const std::size_t n = readable.size() + writable.size();
  for (std::size_t i = 0; i < n; ++i) {
    const bool w = i >= readable.size();
    const Segment& s = w ? writable[i - readable.size()] : readable[i];
    auto m =
        ops.map_record(s.cpu, s.len, w ? dma::Direction::kFromDevice : dma::Direction::kToDevice);
    if (!m) {
      unmap_all(ops, out);
      return Err(m.error());
    }
    out.push_back(*m);
    if (w) capacity += s.len;
  }
  return capacity;
}

}  // namespace vdma::virtq

// Appending one descriptor's buffer to a device-side Chain: the checks both ring layouts
// share (2.7.4 / 2.8.4 rules on descriptor contents), done on values already copied out
// of guest memory.
#pragma once

#include <cstdint>

#include "vdma/base/result.h"
#include "vdma/memory/address.h"
#include "vdma/virtq/errors.h"
#include "vdma/virtq/translator.h"
#include "vdma/virtq/types.h"

namespace vdma::virtq {

// addr/len/writable come from one descriptor, read once. Errors: kZeroLengthDesc,
// kAddressOverflow, kReadableAfterWritable, kChainTooLarge, translation errors.
// Inlined into the ring walk: it runs for every descriptor.
template <Translator T>
[[gnu::always_inline]] inline Result<void> add_chain_segment(const T& translator,
                                                             std::uint64_t addr, std::uint32_t len,
                                                             bool writable, Chain& out) {
  if (len == 0) return Err(Errc::kZeroLengthDesc);
  if (!checked_end(addr, len)) return Err(Errc::kAddressOverflow);
  // 2.7.4.2: device-writable descriptors come after all device-readable ones.
  if (!writable && !out.writable.empty()) return Err(Errc::kReadableAfterWritable);
  // Checked before translating: a used length is 32 bits.
  if (out.readable_bytes + out.writable_bytes + len > UINT32_MAX) return Err(Errc::kChainTooLarge);
  const memory::Access access = writable ? memory::Access::kWrite : memory::Access::kRead;
  auto& segments = writable ? out.writable : out.readable;
  if constexpr (PieceTranslator<T>) {
    // A descriptor may be contiguous in DMA space but not behind it (an IOTLB in pages
    // whose targets are scattered): it becomes several host segments.
    std::uint64_t a = addr;
    std::uint32_t left = len;
    while (left != 0) {
      if (out.readable.size() + out.writable.size() >= kMaxChainSegments) {
        return Err(Errc::kChainTooLong);
      }
      const DeviceSegment piece = VDMA_TRY(translator.translate_piece(DmaAddr{a}, left, access));
      segments.push_back(piece);
      a += piece.len;
      left -= piece.len;
    }
  } else {
    std::byte* host = VDMA_TRY(translator.translate(DmaAddr{addr}, len, access));
    segments.push_back({host, len});
  }
  (writable ? out.writable_bytes : out.readable_bytes) += len;
  return Ok();
}

}  // namespace vdma::virtq

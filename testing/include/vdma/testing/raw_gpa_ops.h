// RawGpaOps: the baseline that skips the DMA API, for measuring what the API costs.
//
// It is what a traditional driver "cheating" with guest-physical addresses does: the
// address is host pointer minus the RAM base plus its Gpa, with no lookup, no validation
// and nothing to undo. Only for benchmarks and tests; never a product provider (it would
// hand a device private addresses on a secure guest). Rings still come from the guest's
// direct ops.
#pragma once

#include <memory>

#include "vdma/dma/guest.h"

namespace vdma::testing {

class RawGpaOps {
 public:
  explicit RawGpaOps(dma::Guest& guest)
      : ram_host_(guest.ram().host),
        ram_gpa_(guest.ram().gpa.value()),
        rings_(std::move(*guest.make_ops_of_kind(dma::OpsKind::kDirect))) {}

  Result<dma::MappingRecord> map_record(void* cpu, std::uint64_t len, dma::Direction dir) {
    auto* p = static_cast<std::byte*>(cpu);
    return dma::MappingRecord{DmaAddr{ram_gpa_ + static_cast<std::uint64_t>(p - ram_host_)}, p, len,
                              0, dir};
  }
  Result<void> unmap_record(const dma::MappingRecord&) { return Ok(); }
  Result<dma::CoherentRecord> alloc_coherent_record(std::uint64_t len) {
    return rings_->alloc_coherent_record(len);
  }
  Result<void> free_coherent_record(const dma::CoherentRecord& c) {
    return rings_->free_coherent_record(c);
  }

 private:
  std::byte* ram_host_;
  std::uint64_t ram_gpa_;
  std::unique_ptr<dma::DmaOps> rings_;
};

static_assert(dma::DmaProvider<RawGpaOps>);

}  // namespace vdma::testing

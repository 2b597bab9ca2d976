// IommuOps: the provider for a platform with an IOMMU and no memory restriction.
//
// Buffers stay where they are (guest RAM is shared with the device) but the device only
// reaches what is mapped, with the mapping's permission: read for to-device, write for
// from-device, both for bidirectional. DMA addresses are IOVAs. Coherent allocations come
// from the coherent region and are mapped read-write.
//
//   IommuOps ops(memory, iommu, coherent_pool, coherent_gpa);
//   Mapping m = VDMA_TRY(ops.map(buf, 4096, Direction::kFromDevice));   // IOVA, write-only
#pragma once

#include "vdma/dma/coherent_pool.h"
#include "vdma/dma/dma_ops.h"
#include "vdma/dma/iommu.h"
#include "vdma/memory/guest_memory.h"

namespace vdma::dma {

class IommuOps final : public DmaOps {
 public:
  // `coherent` (whose Gpa is coherent_gpa) must outlive the ops.
  IommuOps(const memory::GuestMemory& memory, Iommu& iommu, CoherentPool& coherent,
           Gpa coherent_gpa);

  OpsKind kind() const override { return OpsKind::kIommu; }
  std::uint64_t max_mapping_size() const override { return std::uint64_t{1} << 32; }

  Result<MappingRecord> map_record(void* cpu, std::uint64_t len, Direction dir) override;
  Result<void> unmap_record(const MappingRecord& m) override;
  Result<void> sync_record_for_cpu(const MappingRecord& m, std::uint64_t off,
                                   std::uint64_t len) override;
  Result<void> sync_record_for_device(const MappingRecord& m, std::uint64_t off,
                                      std::uint64_t len) override;
  Result<CoherentRecord> alloc_coherent_record(std::uint64_t len) override;
  Result<void> free_coherent_record(const CoherentRecord& c) override;

 private:
  Result<void> check_live(const MappingRecord& m) const;

  const memory::GuestMemory& memory_;
  Iommu& iommu_;
  CoherentPool& coherent_;
  Gpa coherent_gpa_;  // records from the pool carry Gpas; the device gets IOVAs
};

}  // namespace vdma::dma

#include "vdma/dma/iommu_ops.h"

#include "vdma/dma/direct_ops.h"
#include "vdma/memory/errors.h"

namespace vdma::dma {

IommuOps::IommuOps(const memory::GuestMemory& memory, Iommu& iommu, CoherentPool& coherent,
                   Gpa coherent_gpa)
    : memory_(memory), iommu_(iommu), coherent_(coherent), coherent_gpa_(coherent_gpa) {}

Result<MappingRecord> IommuOps::map_record(void* cpu, std::uint64_t len, Direction dir) {
  if (len == 0) return Err(Errc::kZeroLength);
  if (len > max_mapping_size()) return Err(Errc::kTooLarge);
  auto region = memory_.region_of(cpu, len);
  if (!region) return Err(dma_error_for_lookup(region.error()));
  const memory::GuestRegion* r = *region;
  if (!r->shared()) return Err(Errc::kNotDmaable);
  auto* p = static_cast<std::byte*>(cpu);
  Gpa gpa = r->gpa + static_cast<std::uint64_t>(p - r->host);
  Iova iova = VDMA_TRY(iommu_.map(gpa, len, device_access(dir)));
  return MappingRecord{DmaAddr{iova.value()}, p, len, gpa.value(), dir};
}

Result<void> IommuOps::check_live(const MappingRecord& m) const {
  // The IOMMU's own table (never device memory) says whether the record is live: a miss
  // means unmapped; a live entry that disagrees with the record means a forged record.
  auto t = iommu_.translate(Iova{m.addr.value()}, m.len, device_access(m.dir));
  if (!t) {
    return Err(t.error() == memory::Errc::kIotlbMiss ? Errc::kNotMapped : Errc::kUnknownMapping);
  }
  auto gpa = memory_.gpa_of(m.cpu, m.len);
  if (t->target != m.cookie || !gpa || gpa->value() != m.cookie) {
    return Err(Errc::kUnknownMapping);
  }
  return Ok();
}

Result<void> IommuOps::unmap_record(const MappingRecord& m) {
  VDMA_TRY(check_live(m));
  return iommu_.unmap(Iova{m.addr.value()}, m.len);
}

// Guest RAM is the memory the device accesses: syncs only validate.
Result<void> IommuOps::sync_record_for_cpu(const MappingRecord& m, std::uint64_t off,
                                           std::uint64_t len) {
  VDMA_TRY(sync_range(m, off, len));
  return check_live(m);
}

Result<void> IommuOps::sync_record_for_device(const MappingRecord& m, std::uint64_t off,
                                              std::uint64_t len) {
  VDMA_TRY(sync_range(m, off, len));
  return check_live(m);
}

Result<CoherentRecord> IommuOps::alloc_coherent_record(std::uint64_t len) {
  const DmaAddr gpa_base{coherent_gpa_.value()};
  CoherentRecord c = VDMA_TRY(coherent_.allocate(len, gpa_base));
  auto iova = iommu_.map(Gpa{c.addr.value()}, len, memory::Access::kReadWrite);
  if (!iova) {
    (void)coherent_.free(c, gpa_base);
    return Err(iova.error());
  }
  // Keep the pool's own record shape (cookie = pool offset); expose the IOVA.
  return CoherentRecord{DmaAddr{iova->value()}, c.cpu, c.len, c.cookie};
}

Result<void> IommuOps::free_coherent_record(const CoherentRecord& c) {
  if (c.cookie >= coherent_.host().size() || c.cpu != coherent_.host().data() + c.cookie) {
    return Err(Errc::kUnknownMapping);
  }
  auto t = iommu_.translate(Iova{c.addr.value()}, c.len, memory::Access::kReadWrite);
  if (!t) return Err(Errc::kNotMapped);
  if (t->target != coherent_gpa_.value() + c.cookie) return Err(Errc::kUnknownMapping);
  const DmaAddr gpa_base{coherent_gpa_.value()};
  const CoherentRecord pool_rec{gpa_base + c.cookie, c.cpu, c.len, c.cookie};
  // Validate against the pool before tearing down the IOMMU mapping, so a bad record
  // changes nothing.
  VDMA_TRY(coherent_.check(pool_rec, gpa_base));
  VDMA_TRY(iommu_.unmap(Iova{c.addr.value()}, c.len));
  return coherent_.free(pool_rec, gpa_base);
}

}  // namespace vdma::dma

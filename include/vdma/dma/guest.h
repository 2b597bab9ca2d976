// Guest: a driver's address space set up for a platform, and the factory of its DMA ops.
//
// Layout (guest-physical):
//   RAM       at 0              private on a restricted-memory platform, shared otherwise
//   coherent  at the next 1 GiB shared: rings and small control structures
//   bounce    at the next 1 GiB shared, restricted-memory platforms only (swiotlb)
// shared_regions() is exactly what may be handed to a device (SET_MEM_TABLE): on a secure
// guest that is the coherent and bounce pools, never RAM.
//
//   auto guest = VDMA_TRY(Guest::Create({.platform = kSecureGuest}));
//   auto ops = VDMA_TRY(guest->make_ops(negotiated_features));     // BounceOps
//   std::byte* buf = VDMA_TRY(guest->alloc_ram(4096));
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "vdma/base/features.h"
#include "vdma/dma/bounce_ops.h"
#include "vdma/dma/coherent_pool.h"
#include "vdma/dma/dma_ops.h"
#include "vdma/dma/iommu.h"
#include "vdma/dma/platform.h"
#include "vdma/memory/guest_memory.h"
#include "vdma/memory/range_allocator.h"

namespace vdma::dma {

struct GuestConfig {
  Platform platform;
  std::uint64_t ram_bytes = 64ull << 20;
  std::uint64_t coherent_bytes = 4ull << 20;
  std::uint64_t bounce_bytes = 64ull << 20;  // restricted-memory platforms only
  BounceOptions bounce;
  IommuOptions iommu;
};

class Guest {
 public:
  // Errors: memory errors (sizes), system errors (memfd), kInvalidOption.
  static Result<std::unique_ptr<Guest>> Create(const GuestConfig& cfg);
  ~Guest();

  Platform platform() const { return cfg_.platform; }
  memory::GuestMemory& memory() { return memory_; }
  const memory::GuestMemory& memory() const { return memory_; }
  Iommu* iommu() { return iommu_.get(); }

  const memory::GuestRegion& ram() const { return ram_; }
  const memory::GuestRegion& coherent() const { return coherent_; }
  const std::optional<memory::GuestRegion>& bounce_pool() const { return bounce_; }
  std::vector<memory::GuestRegion> shared_regions() const;

  // DMA ops for the features negotiated with a device (DESIGN.md's table). The ops use
  // this guest's memory and pools: the guest must outlive them.
  Result<std::unique_ptr<DmaOps>> make_ops(FeatureSet negotiated);
  Result<std::unique_ptr<DmaOps>> make_ops_of_kind(OpsKind kind);

  // I/O buffers in guest RAM (page aligned from a page up, 64-byte otherwise).
  Result<std::byte*> alloc_ram(std::uint64_t len);
  Result<void> free_ram(std::byte* p, std::uint64_t len);

 private:
  explicit Guest(const GuestConfig& cfg);
  const GuestConfig cfg_;
  memory::GuestMemory memory_;
  std::unique_ptr<Iommu> iommu_;
  memory::GuestRegion ram_;
  memory::GuestRegion coherent_;
  std::optional<memory::GuestRegion> bounce_;
  std::unique_ptr<memory::RangeAllocator> ram_alloc_;
  std::unique_ptr<CoherentPool> coherent_pool_;
  std::shared_ptr<BounceRegion> bounce_region_;  // one swiotlb pool for every device
  // Restricted + IOMMU: the pools are mapped once, read-write, at these IOVAs.
  std::optional<Iova> bounce_iova_;
  std::optional<Iova> coherent_iova_;
};

}  // namespace vdma::dma

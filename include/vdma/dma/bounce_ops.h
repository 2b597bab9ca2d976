// BounceOps: the swiotlb provider for restricted-memory (confidential) guests.
//
// The caller's buffer lives in private memory the device cannot see; map() takes a run of
// slots in the shared bounce pool and gives the device the slot's address.
// - map() copies the caller's bytes into the slot for EVERY direction: a device that
//   writes only part of a from-device buffer must leave the caller's own bytes in the
//   rest, never stale pool bytes (the CVE-2022-0854 lesson). sync_for_device likewise.
// - unmap()/sync_for_cpu() copy back for from-device and bidirectional.
// - min_align_mask: the low bits of the caller's address under the mask are preserved in
//   the bounce address (NVMe-style devices rely on it); mappings of a page or more are
//   page aligned.
// - Every record is validated against per-slot ownership (an atomic owner per run head),
//   so a double unmap or a forged record is an error, never a copy to a wild address.
//
// The pool itself is a shared guest region; its DMA base is its Gpa, or an IOVA when the
// platform also has an IOMMU (the pool is then mapped once, read-write).
//
//   auto ops = VDMA_TRY(BounceOps::Create(opts, pool_region.bytes(), DmaAddr{pool_gpa},
//                                         coherent_pool, DmaAddr{coh_gpa}));
#pragma once

#include <atomic>
#include <memory>
#include <span>

#include "vdma/dma/bounce_pool.h"
#include "vdma/dma/coherent_pool.h"
#include "vdma/dma/dma_ops.h"

namespace vdma::dma {

struct BounceOptions {
  std::uint32_t areas = 0;           // 0: one per CPU
  std::uint64_t min_align_mask = 0;  // low-bit mask (2^k - 1), < 64 KiB
};

// The state of one bounce region: its slot allocator and who owns each run. Every
// BounceOps over the same region must share one (a guest with several devices has one
// swiotlb pool, not one per device: two allocators over one region would hand out the
// same slots).
class BounceRegion {
 public:
  // pool: the shared region's bytes (its size is the pool size). Errors: kInvalidOption.
  static Result<std::shared_ptr<BounceRegion>> Create(const BounceOptions& opts,
                                                      std::span<std::byte> pool);
  BouncePoolStats stats() const { return slots_->stats(); }

 private:
  friend class BounceOps;
  struct SlotOwner {
    std::atomic<std::byte*> cpu{nullptr};  // the caller's buffer; null = not a live head
    std::atomic<std::uint64_t> meta{0};    // len | direction << 32; stored before cpu
  };
  BounceRegion(const BounceOptions& opts, std::unique_ptr<BouncePool> slots,
               std::span<std::byte> host)
      : opts_(opts),
        slots_(std::move(slots)),
        host_(host),
        owners_(new SlotOwner[slots_->total_slots()]) {}

  const BounceOptions opts_;
  std::unique_ptr<BouncePool> slots_;
  std::span<std::byte> host_;
  std::unique_ptr<SlotOwner[]> owners_;
};

class BounceOps final : public DmaOps {
 public:
  // A view of `region` at DMA address pool_dma (its Gpa, or an IOVA), 64 KiB aligned.
  // `coherent` must outlive the ops. Errors: kInvalidOption.
  static Result<std::unique_ptr<BounceOps>> Create(std::shared_ptr<BounceRegion> region,
                                                   DmaAddr pool_dma, CoherentPool& coherent,
                                                   DmaAddr coherent_dma,
                                                   OpsKind kind = OpsKind::kBounce);
  // The same over a region of its own.
  static Result<std::unique_ptr<BounceOps>> Create(const BounceOptions& opts,
                                                   std::span<std::byte> pool, DmaAddr pool_dma,
                                                   CoherentPool& coherent, DmaAddr coherent_dma,
                                                   OpsKind kind = OpsKind::kBounce);

  OpsKind kind() const override { return kind_; }
  std::uint64_t max_mapping_size() const override;

  Result<MappingRecord> map_record(void* cpu, std::uint64_t len, Direction dir) override;
  Result<void> unmap_record(const MappingRecord& m) override;
  Result<void> sync_record_for_cpu(const MappingRecord& m, std::uint64_t off,
                                   std::uint64_t len) override;
  Result<void> sync_record_for_device(const MappingRecord& m, std::uint64_t off,
                                      std::uint64_t len) override;
  Result<CoherentRecord> alloc_coherent_record(std::uint64_t len) override;
  Result<void> free_coherent_record(const CoherentRecord& c) override;

  // Statistics of the whole region (shared with other views).
  BouncePoolStats stats() const { return pool_->stats(); }
  std::span<std::byte> pool_bytes() const { return pool_host_; }
  DmaAddr pool_dma_base() const { return pool_dma_; }

 private:
  static std::uint64_t owner_meta(std::uint64_t len, Direction dir) {
    return len | (static_cast<std::uint64_t>(dir) << 32);
  }
  BounceOps(std::shared_ptr<BounceRegion> region, DmaAddr dma, CoherentPool& coherent,
            DmaAddr coherent_dma, OpsKind kind);
  // The bounce bytes of a validated record.
  std::byte* slot_bytes(const MappingRecord& m) const;
  // Checks that m is a live mapping of these ops.
  Result<void> validate_live(const MappingRecord& m) const;

  std::shared_ptr<BounceRegion> region_;
  const BounceOptions& opts_;  // region_->opts_
  const OpsKind kind_;
  BouncePool* pool_;  // region_->slots_
  std::span<std::byte> pool_host_;
  DmaAddr pool_dma_;
  BounceRegion::SlotOwner* owners_;  // region_->owners_
  CoherentPool& coherent_;
  DmaAddr coherent_dma_;
};

}  // namespace vdma::dma

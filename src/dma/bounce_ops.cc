#include "vdma/dma/bounce_ops.h"

#include <cstring>

namespace vdma::dma {
namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kBaseAlign = 64 * 1024;

bool valid_mask(std::uint64_t mask) {
  return mask < kBaseAlign && (mask & (mask + 1)) == 0;
}

// Cookie layout: slot index (low 32 bits) | slot count << 32.
std::uint64_t make_cookie(SlotRun run) {
  return run.index | (static_cast<std::uint64_t>(run.count) << 32);
}
SlotRun cookie_run(std::uint64_t cookie) {
  return SlotRun{static_cast<std::uint32_t>(cookie), static_cast<std::uint32_t>(cookie >> 32)};
}

}  // namespace

Result<std::shared_ptr<BounceRegion>> BounceRegion::Create(const BounceOptions& opts,
                                                           std::span<std::byte> pool) {
  if (!valid_mask(opts.min_align_mask)) return Err(Errc::kInvalidOption);
  auto slots = VDMA_TRY(BouncePool::Create(pool.size(), opts.areas));
  return std::shared_ptr<BounceRegion>(new BounceRegion(opts, std::move(slots), pool));
}

Result<std::unique_ptr<BounceOps>> BounceOps::Create(std::shared_ptr<BounceRegion> region,
                                                     DmaAddr pool_dma, CoherentPool& coherent,
                                                     DmaAddr coherent_dma, OpsKind kind) {
  if (region == nullptr || pool_dma.value() % kBaseAlign != 0 ||
      coherent_dma.value() % kPage != 0 ||
      (kind != OpsKind::kBounce && kind != OpsKind::kBounceViaIommu)) {
    return Err(Errc::kInvalidOption);
  }
  return std::unique_ptr<BounceOps>(
      new BounceOps(std::move(region), pool_dma, coherent, coherent_dma, kind));
}

Result<std::unique_ptr<BounceOps>> BounceOps::Create(const BounceOptions& opts,
                                                     std::span<std::byte> pool, DmaAddr pool_dma,
                                                     CoherentPool& coherent, DmaAddr coherent_dma,
                                                     OpsKind kind) {
  auto region = VDMA_TRY(BounceRegion::Create(opts, pool));
  return Create(std::move(region), pool_dma, coherent, coherent_dma, kind);
}

BounceOps::BounceOps(std::shared_ptr<BounceRegion> region, DmaAddr dma, CoherentPool& coherent,
                     DmaAddr coherent_dma, OpsKind kind)
    : region_(std::move(region)),
      opts_(region_->opts_),
      kind_(kind),
      pool_(region_->slots_.get()),
      pool_host_(region_->host_),
      pool_dma_(dma),
      owners_(region_->owners_.get()),
      coherent_(coherent),
      coherent_dma_(coherent_dma) {}

std::uint64_t BounceOps::max_mapping_size() const {
  return kSlotSize * kMaxSlotsPerRun - (opts_.min_align_mask & (kSlotSize - 1));
}

Result<MappingRecord> BounceOps::map_record(void* cpu, std::uint64_t len, Direction dir) {
  if (len == 0) return Err(Errc::kZeroLength);
  if (len > max_mapping_size()) return Err(Errc::kTooLarge);
  const auto orig = reinterpret_cast<std::uintptr_t>(cpu);
  if (!checked_end(orig, len)) return Err(Errc::kOverflow);

  // min_align_mask: bits below the slot size are kept as an offset into the first slot;
  // bits above it pick which slot indices qualify.
  const std::uint64_t mask = opts_.min_align_mask;
  const std::uint64_t offset = orig & mask & (kSlotSize - 1);
  SlotRequest req;
  req.slots = static_cast<std::uint32_t>((offset + len + kSlotSize - 1) / kSlotSize);
  const std::uint64_t high = mask & ~(kSlotSize - 1);
  if (high != 0) {
    req.align = static_cast<std::uint32_t>((mask + 1) / kSlotSize);
    req.residue = static_cast<std::uint32_t>((orig & high) / kSlotSize);
  } else if (len >= kPage) {
    req.align = static_cast<std::uint32_t>(kPage / kSlotSize);
  }
  SlotRun run = VDMA_TRY(pool_->allocate(req));

  std::byte* bounce = pool_host_.data() + run.index * kSlotSize + offset;
  std::memcpy(bounce, cpu, len);  // every direction: see the header
  pool_->add_bytes_bounced(run.index, len);
  BounceRegion::SlotOwner& owner = owners_[run.index];
  owner.meta.store(owner_meta(len, dir), std::memory_order_relaxed);
  // Publishes len with the owner; pairs with the acquire in unmap/sync.
  owner.cpu.store(static_cast<std::byte*>(cpu), std::memory_order_release);
  return MappingRecord{pool_dma_ + (run.index * kSlotSize + offset), static_cast<std::byte*>(cpu),
                       len, make_cookie(run), dir};
}

std::byte* BounceOps::slot_bytes(const MappingRecord& m) const {
  return pool_host_.data() + (m.addr - pool_dma_);
}

Result<void> BounceOps::validate_live(const MappingRecord& m) const {
  const SlotRun run = cookie_run(m.cookie);
  if (run.index >= pool_->total_slots()) return Err(Errc::kUnknownMapping);
  // The record must be exactly what map() derived from (cpu, len): the in-slot offset
  // and the run length decide which bytes are copied and which slots freed.
  const std::uint64_t offset =
      reinterpret_cast<std::uintptr_t>(m.cpu) & opts_.min_align_mask & (kSlotSize - 1);
  const auto slots = static_cast<std::uint32_t>((offset + m.len + kSlotSize - 1) / kSlotSize);
  if (m.len == 0 || m.len > max_mapping_size() ||
      m.addr != pool_dma_ + (std::uint64_t{run.index} * kSlotSize + offset) ||
      m.cookie != make_cookie(SlotRun{run.index, slots})) {
    return Err(Errc::kUnknownMapping);
  }
  // And it must be the live owner of that run.
  std::byte* owner = owners_[run.index].cpu.load(std::memory_order_acquire);
  if (owner == nullptr) return Err(Errc::kNotMapped);
  if (owner != m.cpu ||
      owners_[run.index].meta.load(std::memory_order_relaxed) != owner_meta(m.len, m.dir)) {
    return Err(Errc::kUnknownMapping);
  }
  return Ok();
}

Result<void> BounceOps::unmap_record(const MappingRecord& m) {
  VDMA_TRY(validate_live(m));
  SlotRun run = cookie_run(m.cookie);
  // Claim the run: exactly one unmap can move the owner from m.cpu to null.
  std::byte* expected = m.cpu;
  if (!owners_[run.index].cpu.compare_exchange_strong(expected, nullptr,
                                                      std::memory_order_acq_rel)) {
    return Err(expected == nullptr ? Errc::kNotMapped : Errc::kUnknownMapping);
  }
  if (m.dir != Direction::kToDevice) {
    std::memcpy(m.cpu, slot_bytes(m), m.len);
    pool_->add_bytes_bounced(run.index, m.len);
  }
  pool_->free(run);  // validated: exactly the run map() allocated
  return Ok();
}

Result<void> BounceOps::sync_record_for_cpu(const MappingRecord& m, std::uint64_t off,
                                            std::uint64_t len) {
  std::uint64_t n = VDMA_TRY(sync_range(m, off, len));
  VDMA_TRY(validate_live(m));
  if (m.dir != Direction::kToDevice && n > 0) {
    std::memcpy(m.cpu + off, slot_bytes(m) + off, n);
    pool_->add_bytes_bounced(cookie_run(m.cookie).index, n);
  }
  return Ok();
}

Result<void> BounceOps::sync_record_for_device(const MappingRecord& m, std::uint64_t off,
                                               std::uint64_t len) {
  std::uint64_t n = VDMA_TRY(sync_range(m, off, len));
  VDMA_TRY(validate_live(m));
  if (n > 0) {
    std::memcpy(slot_bytes(m) + off, m.cpu + off, n);  // every direction, as map()
    pool_->add_bytes_bounced(cookie_run(m.cookie).index, n);
  }
  return Ok();
}

Result<CoherentRecord> BounceOps::alloc_coherent_record(std::uint64_t len) {
  return coherent_.allocate(len, coherent_dma_);
}

Result<void> BounceOps::free_coherent_record(const CoherentRecord& c) {
  return coherent_.free(c, coherent_dma_);
}

}  // namespace vdma::dma

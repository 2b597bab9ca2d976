#include "vdma/dma/guest.h"

#include "vdma/dma/direct_ops.h"
#include "vdma/dma/iommu_ops.h"
#include "vdma/memory/errors.h"

namespace vdma::dma {
namespace {
constexpr std::uint64_t kGiB = 1ull << 30;
constexpr std::uint64_t kWindowAlign = 64 * 1024;
std::uint64_t next_gib(std::uint64_t x) {
  return (x + kGiB - 1) & ~(kGiB - 1);
}
std::uint64_t round64(std::uint64_t x) {
  return (x + 63) & ~std::uint64_t{63};
}
}  // namespace

Guest::Guest(const GuestConfig& cfg) : cfg_(cfg) {}

Guest::~Guest() {
  if (iommu_ && bounce_iova_) (void)iommu_->unmap(*bounce_iova_, bounce_->size);
  if (iommu_ && coherent_iova_) (void)iommu_->unmap(*coherent_iova_, coherent_.size);
}

Result<std::unique_ptr<Guest>> Guest::Create(const GuestConfig& cfg) {
  using memory::MemfdRegion;
  using memory::RegionKind;
  std::unique_ptr<Guest> g(new Guest(cfg));
  const Platform p = cfg.platform;
  auto ram = VDMA_TRY(
      MemfdRegion::Create("vdma-guest-ram", cfg.ram_bytes,
                          p.restricted_memory ? RegionKind::kPrivate : RegionKind::kShared));
  g->ram_ = VDMA_TRY(g->memory_.add(Gpa{0}, std::move(ram)));
  const std::uint64_t coherent_gpa = next_gib(cfg.ram_bytes);
  auto coh =
      VDMA_TRY(MemfdRegion::Create("vdma-coherent", cfg.coherent_bytes, RegionKind::kShared));
  g->coherent_ = VDMA_TRY(g->memory_.add(Gpa{coherent_gpa}, std::move(coh)));
  if (p.restricted_memory) {
    auto pool =
        VDMA_TRY(MemfdRegion::Create("vdma-swiotlb", cfg.bounce_bytes, RegionKind::kShared));
    g->bounce_ =
        VDMA_TRY(g->memory_.add(Gpa{next_gib(coherent_gpa + cfg.coherent_bytes)}, std::move(pool)));
  }
  if (p.iommu) {
    g->iommu_ = std::make_unique<Iommu>(cfg.iommu);
    if (p.restricted_memory) {
      using memory::Access;
      g->bounce_iova_ = VDMA_TRY(
          g->iommu_->map(g->bounce_->gpa, g->bounce_->size, Access::kReadWrite, kWindowAlign));
      g->coherent_iova_ = VDMA_TRY(
          g->iommu_->map(g->coherent_.gpa, g->coherent_.size, Access::kReadWrite, kWindowAlign));
    }
  }
  g->ram_alloc_ = std::make_unique<memory::RangeAllocator>(0, g->ram_.size);
  g->coherent_pool_ = std::make_unique<CoherentPool>(
      std::span<std::byte>(g->coherent_.host, static_cast<std::size_t>(g->coherent_.size)));
  return g;
}

std::vector<memory::GuestRegion> Guest::shared_regions() const {
  std::vector<memory::GuestRegion> out;
  for (const auto& r : memory_.regions())
    if (r.shared()) out.push_back(r);
  return out;
}

Result<std::unique_ptr<DmaOps>> Guest::make_ops(FeatureSet negotiated) {
  return make_ops_of_kind(VDMA_TRY(select_ops(cfg_.platform, negotiated)));
}

Result<std::unique_ptr<DmaOps>> Guest::make_ops_of_kind(OpsKind kind) {
  CoherentPool& coh = *coherent_pool_;
  switch (kind) {
    case OpsKind::kDirect:
      return std::unique_ptr<DmaOps>(new DirectOps(memory_, coh, DmaAddr{coherent_.gpa.value()}));
    case OpsKind::kIommu:
      if (!iommu_) return Err(Errc::kMissingPlatformPart);
      return std::unique_ptr<DmaOps>(new IommuOps(memory_, *iommu_, coh, coherent_.gpa));
    case OpsKind::kBounce:
    case OpsKind::kBounceViaIommu: {
      if (!bounce_) return Err(Errc::kMissingPlatformPart);
      const bool via = kind == OpsKind::kBounceViaIommu;
      if (via && !bounce_iova_) return Err(Errc::kMissingPlatformPart);
      DmaAddr pool_dma{via ? bounce_iova_->value() : bounce_->gpa.value()};
      DmaAddr coh_dma{via ? coherent_iova_->value() : coherent_.gpa.value()};
      std::span<std::byte> pool{bounce_->host, static_cast<std::size_t>(bounce_->size)};
      if (!bounce_region_) bounce_region_ = VDMA_TRY(BounceRegion::Create(cfg_.bounce, pool));
      auto ops = VDMA_TRY(BounceOps::Create(bounce_region_, pool_dma, coh, coh_dma, kind));
      return std::unique_ptr<DmaOps>(std::move(ops));
    }
  }
  return Err(Errc::kInvalidOption);
}

Result<std::byte*> Guest::alloc_ram(std::uint64_t len) {
  auto off = ram_alloc_->allocate(round64(len), len >= 4096 ? 4096 : 64);
  if (!off) return Err(off.error());
  return ram_.host + *off;
}

Result<void> Guest::free_ram(std::byte* p, std::uint64_t len) {
  if (p < ram_.host || p >= ram_.host + ram_.size) return Err(memory::Errc::kBadFree);
  return ram_alloc_->free(static_cast<std::uint64_t>(p - ram_.host), round64(len));
}

}  // namespace vdma::dma

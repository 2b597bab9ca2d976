#include "vdma/dma/guest.h"

#include <gtest/gtest.h>

#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "vdma/dma/errors.h"
#include "vdma/memory/errors.h"
#include "vdma/testing/patterns.h"

namespace vdma::dma {

// gtest prints parameters with it (found by ADL; internal linkage keeps it in this file).
[[maybe_unused]] static void PrintTo(const Platform& p, std::ostream* os) {
  *os << platform_name(p);
}

namespace {

using memory::Access;
using testing::fill_pattern;
using testing::first_mismatch;
using testing::pattern_byte;

constexpr std::uint64_t kMiB = 1 << 20;
const FeatureSet kWithAp{kVirtioFVersion1, kVirtioFAccessPlatform};
const FeatureSet kWithoutAp{kVirtioFVersion1};

constexpr Direction kAllDirections[] = {Direction::kToDevice, Direction::kFromDevice,
                                        Direction::kBidirectional};

GuestConfig small_config(Platform p) {
  GuestConfig cfg;
  cfg.platform = p;
  cfg.ram_bytes = 4 * kMiB;
  cfg.coherent_bytes = 256 << 10;
  cfg.bounce_bytes = 4 * kMiB;
  return cfg;
}

bool overlaps(Gpa a, std::uint64_t alen, Gpa b, std::uint64_t blen) {
  return a.value() < b.value() + blen && b.value() < a.value() + alen;
}

class GuestTest : public ::testing::TestWithParam<Platform> {
 protected:
  void SetUp() override {
    auto g = Guest::Create(small_config(GetParam()));
    ASSERT_TRUE(g) << g.error().message();
    guest_ = std::move(*g);
  }

  Platform platform() const { return GetParam(); }

  // The device side: resolves a DMA address the way a device would on this platform
  // (through the IOMMU when there is one), and only into shared regions, the only memory
  // a device process ever receives.
  Result<std::span<std::byte>> device_view(const DmaOps& ops, DmaAddr a, std::uint64_t len,
                                           Access access) {
    Gpa gpa{a.value()};
    if (ops.kind() == OpsKind::kIommu || ops.kind() == OpsKind::kBounceViaIommu) {
      auto t = VDMA_TRY(guest_->iommu()->translate(Iova{a.value()}, len, access));
      gpa = Gpa{t.target};
    }
    for (const memory::GuestRegion& r : guest_->shared_regions()) {
      if (gpa >= r.gpa && gpa.value() - r.gpa.value() < r.size) {
        if (len > r.size - (gpa - r.gpa)) return Err(memory::Errc::kStraddlesRegion);
        return std::span<std::byte>(r.host + (gpa - r.gpa), len);
      }
    }
    return Err(memory::Errc::kOutOfRange);
  }

  std::unique_ptr<Guest> guest_;
};

TEST_P(GuestTest, LayoutFollowsThePlatform) {
  const Platform p = platform();
  EXPECT_EQ(guest_->platform(), p);
  const memory::GuestRegion& ram = guest_->ram();
  EXPECT_EQ(ram.gpa, Gpa{0});
  EXPECT_EQ(ram.size, 4 * kMiB);
  EXPECT_EQ(ram.shared(), !p.restricted_memory);
  EXPECT_TRUE(guest_->coherent().shared());
  EXPECT_EQ(guest_->coherent().size, 256u << 10);
  EXPECT_EQ(guest_->coherent().gpa.value() % (1ull << 30), 0u);
  EXPECT_FALSE(overlaps(ram.gpa, ram.size, guest_->coherent().gpa, guest_->coherent().size));
  EXPECT_EQ(guest_->bounce_pool().has_value(), p.restricted_memory);
  if (guest_->bounce_pool()) {
    const memory::GuestRegion& pool = *guest_->bounce_pool();
    EXPECT_TRUE(pool.shared());
    EXPECT_EQ(pool.size, 4 * kMiB);
    EXPECT_FALSE(overlaps(ram.gpa, ram.size, pool.gpa, pool.size));
    EXPECT_FALSE(overlaps(guest_->coherent().gpa, guest_->coherent().size, pool.gpa, pool.size));
  }
  EXPECT_EQ(guest_->iommu() != nullptr, p.iommu);
  EXPECT_EQ(guest_->memory().regions().size(), p.restricted_memory ? 3u : 2u);
}

TEST_P(GuestTest, SharedRegionsNeverContainRamOnARestrictedPlatform) {
  const Platform p = platform();
  const memory::GuestRegion& ram = guest_->ram();
  std::vector<memory::GuestRegion> shared = guest_->shared_regions();
  bool has_ram = false, has_coherent = false, has_bounce = false;
  for (const memory::GuestRegion& r : shared) {
    EXPECT_TRUE(r.shared());
    if (overlaps(r.gpa, r.size, ram.gpa, ram.size) || r.host == ram.host) has_ram = true;
    if (r.gpa == guest_->coherent().gpa) has_coherent = true;
    if (guest_->bounce_pool() && r.gpa == guest_->bounce_pool()->gpa) has_bounce = true;
  }
  EXPECT_EQ(has_ram, !p.restricted_memory);
  EXPECT_TRUE(has_coherent);
  EXPECT_EQ(has_bounce, p.restricted_memory);
  EXPECT_EQ(shared.size(), 2u);  // RAM + coherent, or coherent + bounce
  if (p.restricted_memory) {
    // Private memory never has a shareable fd.
    EXPECT_EQ(ram.backing->shareable_fd().error(), memory::Errc::kPrivateRegion);
  }
  for (const memory::GuestRegion& r : shared) EXPECT_TRUE(r.backing->shareable_fd());
}

TEST_P(GuestTest, MakeOpsFollowsThePolicy) {
  const Platform p = platform();
  auto ops = guest_->make_ops(kWithAp);
  ASSERT_TRUE(ops) << ops.error().message();
  EXPECT_EQ((*ops)->kind(), *select_ops(p, kWithAp));
  auto legacy = guest_->make_ops(kWithoutAp);
  if (p.restricted_memory) {
    ASSERT_FALSE(legacy);
    EXPECT_EQ(legacy.error(), Errc::kAccessPlatformRequired);
  } else {
    ASSERT_TRUE(legacy);
    EXPECT_EQ((*legacy)->kind(), OpsKind::kDirect);
  }
}

TEST_P(GuestTest, MakeOpsOfKindNeedsThePlatformParts) {
  const Platform p = platform();
  auto iommu = guest_->make_ops_of_kind(OpsKind::kIommu);
  EXPECT_EQ(iommu.has_value(), p.iommu);
  if (!p.iommu) {
    EXPECT_EQ(iommu.error(), Errc::kMissingPlatformPart);
  }
  auto bounce = guest_->make_ops_of_kind(OpsKind::kBounce);
  EXPECT_EQ(bounce.has_value(), p.restricted_memory);
  if (!p.restricted_memory) {
    EXPECT_EQ(bounce.error(), Errc::kMissingPlatformPart);
  }
  auto via = guest_->make_ops_of_kind(OpsKind::kBounceViaIommu);
  EXPECT_EQ(via.has_value(), p.restricted_memory && p.iommu);
  if (!via) {
    EXPECT_EQ(via.error(), Errc::kMissingPlatformPart);
  }
  EXPECT_TRUE(guest_->make_ops_of_kind(OpsKind::kDirect));
}

TEST_P(GuestTest, AllocRam) {
  const memory::GuestRegion& ram = guest_->ram();
  auto small = guest_->alloc_ram(100);
  auto page = guest_->alloc_ram(4096);
  auto big = guest_->alloc_ram(3 * 4096 + 5);
  ASSERT_TRUE(small && page && big);
  auto inside = [&](std::byte* p, std::uint64_t len) {
    return p >= ram.host && p + len <= ram.host + ram.size;
  };
  EXPECT_TRUE(inside(*small, 100));
  EXPECT_TRUE(inside(*page, 4096));
  EXPECT_TRUE(inside(*big, 3 * 4096 + 5));
  EXPECT_EQ((*small - ram.host) % 64, 0);
  EXPECT_EQ((*page - ram.host) % 4096, 0);
  EXPECT_EQ((*big - ram.host) % 4096, 0);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(*page) % 4096, 0u);
  // Disjoint.
  EXPECT_TRUE(*small + 100 <= *page || *page + 4096 <= *small);
  EXPECT_TRUE(*page + 4096 <= *big || *big + 3 * 4096 + 5 <= *page);
  // Usable memory.
  std::memset(*big, 0x3C, 3 * 4096 + 5);
  EXPECT_EQ((*big)[3 * 4096 + 4], std::byte{0x3C});

  EXPECT_FALSE(guest_->alloc_ram(0));
  EXPECT_FALSE(guest_->alloc_ram(ram.size + 1));
  EXPECT_TRUE(guest_->free_ram(*small, 100));
  EXPECT_EQ(guest_->free_ram(*small, 100).error(), memory::Errc::kBadFree);
  std::byte outside[16];
  EXPECT_EQ(guest_->free_ram(outside, 16).error(), memory::Errc::kBadFree);
  EXPECT_TRUE(guest_->free_ram(*page, 4096));
  EXPECT_TRUE(guest_->free_ram(*big, 3 * 4096 + 5));
  // Everything freed: the whole of RAM can be allocated again.
  auto all = guest_->alloc_ram(ram.size);
  ASSERT_TRUE(all);
  EXPECT_EQ(*all, ram.host);
}

TEST_P(GuestTest, CoherentAllocationsAreZeroedAndReachable) {
  auto ops = guest_->make_ops(kWithAp);
  ASSERT_TRUE(ops);
  DmaOps& o = **ops;
  auto c = o.alloc_coherent(5000);
  ASSERT_TRUE(c) << c.error().message();
  const memory::GuestRegion& coh = guest_->coherent();
  ASSERT_GE(c->cpu(), coh.host);
  ASSERT_LE(c->cpu() + 5000, coh.host + coh.size);
  for (std::size_t i = 0; i < 5000; ++i) ASSERT_EQ(c->cpu()[i], std::byte{0}) << i;
  // The device reaches it read-write at its DMA address.
  auto view = device_view(o, c->dma_addr(), 5000, Access::kReadWrite);
  ASSERT_TRUE(view) << view.error().message();
  EXPECT_EQ(view->data(), c->cpu());
  if (o.kind() == OpsKind::kDirect || o.kind() == OpsKind::kBounce) {
    EXPECT_EQ(c->dma_addr().value(),
              coh.gpa.value() + static_cast<std::uint64_t>(c->cpu() - coh.host));
  }
  // Dirty, free, reallocate: zeroed again.
  std::byte* p = c->cpu();
  std::memset(p, 0xEE, 5000);
  CoherentRecord r = c->record();
  *c = CoherentBuffer();
  EXPECT_EQ(o.free_coherent_record(r).error(), Errc::kNotMapped);
  auto again = o.alloc_coherent(5000);
  ASSERT_TRUE(again);
  ASSERT_EQ(again->cpu(), p);
  for (std::size_t i = 0; i < 5000; ++i) ASSERT_EQ(again->cpu()[i], std::byte{0}) << i;
}

TEST_P(GuestTest, OpsFromMakeOpsDoRealRoundTrips) {
  const Platform p = platform();
  auto ops = guest_->make_ops(kWithAp);
  ASSERT_TRUE(ops);
  DmaOps& o = **ops;
  const memory::GuestRegion& ram = guest_->ram();
  std::uint64_t seed = 1;
  for (std::uint64_t len : {1u, 100u, 4096u, 10000u, 64u * 1024}) {
    for (Direction dir : kAllDirections) {
      SCOPED_TRACE(::testing::Message() << direction_name(dir) << " len " << len);
      auto buf_p = guest_->alloc_ram(len);
      ASSERT_TRUE(buf_p);
      std::span<std::byte> buf(*buf_p, len);
      fill_pattern(buf, seed);
      auto m = o.map(buf.data(), len, dir);
      ASSERT_TRUE(m) << m.error().message();
      if (p.restricted_memory) {
        // The device address never names RAM.
        auto view = device_view(o, m->dma_addr(), len, device_access(dir));
        ASSERT_TRUE(view);
        EXPECT_FALSE(view->data() >= ram.host && view->data() < ram.host + ram.size);
      }
      if (dir != Direction::kFromDevice) {
        auto view = device_view(o, m->dma_addr(), len, Access::kRead);
        ASSERT_TRUE(view) << view.error().message();
        EXPECT_EQ(first_mismatch(*view, seed), -1);
      }
      if (dir != Direction::kToDevice) {
        auto view = device_view(o, m->dma_addr(), len, Access::kWrite);
        ASSERT_TRUE(view) << view.error().message();
        fill_pattern(*view, seed + 1);
      }
      ASSERT_TRUE(m->unmap());
      EXPECT_EQ(first_mismatch(buf, dir == Direction::kToDevice ? seed : seed + 1), -1);
      ASSERT_TRUE(guest_->free_ram(buf.data(), len));
      seed += 2;
    }
  }
}

// Platforms with an IOMMU.
class IommuGuestTest : public GuestTest {};

TEST_P(IommuGuestTest, IommuPermissionsFollowTheDirection) {
  ASSERT_TRUE(platform().iommu);
  auto ops = guest_->make_ops(kWithAp);
  ASSERT_TRUE(ops);
  auto buf = guest_->alloc_ram(512);
  ASSERT_TRUE(buf);
  auto to = (*ops)->map(*buf, 512, Direction::kToDevice);
  auto from = (*ops)->map(*buf, 512, Direction::kFromDevice);
  ASSERT_TRUE(to && from);
  Iommu& iommu = *guest_->iommu();
  if ((*ops)->kind() == OpsKind::kIommu) {
    EXPECT_TRUE(iommu.translate(Iova{to->dma_addr().value()}, 512, Access::kRead));
    EXPECT_EQ(iommu.translate(Iova{to->dma_addr().value()}, 512, Access::kWrite).error(),
              memory::Errc::kIotlbPermission);
    EXPECT_TRUE(iommu.translate(Iova{from->dma_addr().value()}, 512, Access::kWrite));
    EXPECT_EQ(iommu.translate(Iova{from->dma_addr().value()}, 512, Access::kRead).error(),
              memory::Errc::kIotlbPermission);
  } else {
    // Bounce through the IOMMU: the whole pool is one read-write window.
    ASSERT_EQ((*ops)->kind(), OpsKind::kBounceViaIommu);
    const memory::GuestRegion& pool = *guest_->bounce_pool();
    auto bounce = static_cast<BounceOps*>(ops->get());
    auto t = iommu.translate(Iova{bounce->pool_dma_base().value()}, pool.size, Access::kReadWrite);
    ASSERT_TRUE(t) << t.error().message();
    EXPECT_EQ(t->target, pool.gpa.value());
    EXPECT_EQ(t->len, pool.size);
    EXPECT_EQ(bounce->pool_dma_base().value() % (64 * 1024), 0u);
    EXPECT_TRUE(iommu.translate(Iova{to->dma_addr().value()}, 512, Access::kReadWrite));
    // RAM itself is mapped nowhere.
    EXPECT_EQ(iommu.stats().entries, 2u);  // pool and coherent windows only
  }
}

TEST_P(GuestTest, RamIsNotDmaableWithDirectOpsOnARestrictedPlatform) {
  auto direct = guest_->make_ops_of_kind(OpsKind::kDirect);
  ASSERT_TRUE(direct);
  auto buf = guest_->alloc_ram(256);
  ASSERT_TRUE(buf);
  auto m = (*direct)->map(*buf, 256, Direction::kToDevice);
  if (platform().restricted_memory) {
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error(), Errc::kNotDmaable);
  } else {
    ASSERT_TRUE(m);
    EXPECT_EQ(m->dma_addr().value(), static_cast<std::uint64_t>(*buf - guest_->ram().host));
  }
  if (platform().restricted_memory && platform().iommu) {
    auto iommu_ops = guest_->make_ops_of_kind(OpsKind::kIommu);
    ASSERT_TRUE(iommu_ops);
    EXPECT_EQ((*iommu_ops)->map(*buf, 256, Direction::kToDevice).error(), Errc::kNotDmaable);
  }
}

// One guest, two devices: each device's ops must get bounce slots the other does not.
TEST_P(GuestTest, TwoOpsFromOneGuestNeverShareBounceBytes) {
  auto a = guest_->make_ops(kWithAp);
  auto b = guest_->make_ops(kWithAp);
  ASSERT_TRUE(a && b);
  auto buf_a = guest_->alloc_ram(1024);
  auto buf_b = guest_->alloc_ram(1024);
  ASSERT_TRUE(buf_a && buf_b);
  fill_pattern({*buf_a, 1024}, 1);
  fill_pattern({*buf_b, 1024}, 2);
  auto ma = (*a)->map(*buf_a, 1024, Direction::kBidirectional);
  auto mb = (*b)->map(*buf_b, 1024, Direction::kBidirectional);
  ASSERT_TRUE(ma && mb);
  auto va = device_view(**a, ma->dma_addr(), 1024, Access::kReadWrite);
  auto vb = device_view(**b, mb->dma_addr(), 1024, Access::kReadWrite);
  ASSERT_TRUE(va && vb);
  const bool disjoint = va->data() + 1024 <= vb->data() || vb->data() + 1024 <= va->data();
  EXPECT_TRUE(disjoint) << "two live mappings share device memory";
  // Device A must see A's bytes (B's map must not have overwritten them).
  EXPECT_EQ(first_mismatch(*va, 1), -1);
  EXPECT_EQ(first_mismatch(*vb, 2), -1);
  fill_pattern(*va, 3);
  fill_pattern(*vb, 4);
  ASSERT_TRUE(ma->unmap());
  ASSERT_TRUE(mb->unmap());
  EXPECT_EQ(first_mismatch({*buf_a, 1024}, 3), -1);
  EXPECT_EQ(first_mismatch({*buf_b, 1024}, 4), -1);
}

// Restricted-memory platforms.
class RestrictedGuestTest : public GuestTest {};

TEST_P(RestrictedGuestTest, BounceMappingsLeaveNoSlotsBehind) {
  ASSERT_TRUE(platform().restricted_memory);
  auto ops = guest_->make_ops(kWithAp);
  ASSERT_TRUE(ops);
  auto* bounce = static_cast<BounceOps*>(ops->get());
  auto buf = guest_->alloc_ram(256 * 1024);
  ASSERT_TRUE(buf);
  {
    std::vector<Mapping> live;
    for (int i = 0; i < 8; ++i) {
      auto m = bounce->map(*buf, 256 * 1024, Direction::kFromDevice);
      ASSERT_TRUE(m);
      live.push_back(std::move(*m));
    }
    EXPECT_EQ(bounce->stats().slots_in_use, 8u * kMaxSlotsPerRun);
    // 4 MiB pool, 2 MiB mapped: the rest is still available.
    auto more = bounce->map(*buf, 256 * 1024, Direction::kFromDevice);
    EXPECT_TRUE(more);
  }
  EXPECT_EQ(bounce->stats().slots_in_use, 0u);
  EXPECT_EQ(bounce->pool_bytes().data(), guest_->bounce_pool()->host);
  EXPECT_EQ(bounce->pool_bytes().size(), guest_->bounce_pool()->size);
}

std::string platform_test_name(const ::testing::TestParamInfo<Platform>& info) {
  std::string n = platform_name(info.param);
  for (char& ch : n) {
    if (ch == '+') ch = '_';
  }
  return n;
}

INSTANTIATE_TEST_SUITE_P(Platforms, GuestTest,
                         ::testing::Values(kTraditional, kSecureGuest, kIommuPlatform,
                                           kSecureGuestWithIommu),
                         platform_test_name);
INSTANTIATE_TEST_SUITE_P(Platforms, IommuGuestTest,
                         ::testing::Values(kIommuPlatform, kSecureGuestWithIommu),
                         platform_test_name);
INSTANTIATE_TEST_SUITE_P(Platforms, RestrictedGuestTest,
                         ::testing::Values(kSecureGuest, kSecureGuestWithIommu),
                         platform_test_name);

// A bad bounce option is refused with kInvalidOption, by Create or at the latest by
// make_ops (the pool is built there).
void ExpectInvalidBounceOption(const GuestConfig& cfg) {
  auto g = Guest::Create(cfg);
  if (!g) {
    EXPECT_EQ(g.error(), Errc::kInvalidOption);
    return;
  }
  auto ops = (*g)->make_ops(kWithAp);
  ASSERT_FALSE(ops);
  EXPECT_EQ(ops.error(), Errc::kInvalidOption);
}

TEST(GuestCreateTest, BadSizesAndOptionsAreErrors) {
  GuestConfig cfg = small_config(kSecureGuest);
  cfg.ram_bytes = 4096 + 1;  // not a page multiple
  EXPECT_FALSE(Guest::Create(cfg));
  cfg = small_config(kTraditional);
  cfg.coherent_bytes = 0;
  EXPECT_FALSE(Guest::Create(cfg));
  cfg = small_config(kSecureGuest);
  cfg.bounce_bytes = 4 * kMiB + 4096;  // not a multiple of 64 KiB
  ExpectInvalidBounceOption(cfg);
  cfg = small_config(kSecureGuest);
  cfg.bounce.min_align_mask = 0x1234;  // not 2^k - 1
  ExpectInvalidBounceOption(cfg);
  cfg = small_config(kSecureGuestWithIommu);
  cfg.bounce.areas = 3;
  ExpectInvalidBounceOption(cfg);
}

TEST(GuestCreateTest, BounceOptionsReachTheOps) {
  GuestConfig cfg = small_config(kSecureGuest);
  cfg.bounce.min_align_mask = 0xFFF;
  cfg.bounce.areas = 2;
  auto g = Guest::Create(cfg);
  ASSERT_TRUE(g);
  auto ops = (*g)->make_ops(kWithAp);
  ASSERT_TRUE(ops);
  auto* bounce = static_cast<BounceOps*>(ops->get());
  EXPECT_EQ(bounce->stats().areas, 2u);
  EXPECT_EQ(bounce->max_mapping_size(), 256u * 1024 - 0x7FF);
  auto buf = (*g)->alloc_ram(8192);
  ASSERT_TRUE(buf);
  auto m = bounce->map(*buf + 0xABC, 100, Direction::kToDevice);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->dma_addr().value() & 0xFFF, reinterpret_cast<std::uintptr_t>(*buf + 0xABC) & 0xFFF);
}

}  // namespace
}  // namespace vdma::dma

#include "vdma/dma/iommu.h"

#include <gtest/gtest.h>

#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#include "vdma/dma/errors.h"
#include "vdma/dma/iommu_ops.h"
#include "vdma/memory/errors.h"
#include "vdma/testing/patterns.h"

namespace vdma::dma {
namespace {

using memory::Access;
using testing::fill_pattern;
using testing::first_mismatch;

constexpr std::uint64_t kPage = 4096;

constexpr Direction kAllDirections[] = {Direction::kToDevice, Direction::kFromDevice,
                                        Direction::kBidirectional};

// Records what the device's IOTLB would be told; can be told to refuse.
class RecordingListener final : public IotlbListener {
 public:
  Result<void> iotlb_update(const memory::IotlbEntry& e) override {
    std::lock_guard lock(mu_);
    updates_.push_back(e);
    if (fail_updates_) return Err(Errc::kUpdateFailed);
    return Ok();
  }
  Result<void> iotlb_invalidate(Iova iova, std::uint64_t size) override {
    std::lock_guard lock(mu_);
    invalidations_.emplace_back(iova, size);
    if (fail_invalidations_) return Err(Errc::kInvalidationFailed);
    return Ok();
  }
  void fail_updates(bool f) {
    std::lock_guard lock(mu_);
    fail_updates_ = f;
  }
  void fail_invalidations(bool f) {
    std::lock_guard lock(mu_);
    fail_invalidations_ = f;
  }
  std::vector<memory::IotlbEntry> updates() const {
    std::lock_guard lock(mu_);
    return updates_;
  }
  std::vector<std::pair<Iova, std::uint64_t>> invalidations() const {
    std::lock_guard lock(mu_);
    return invalidations_;
  }

 private:
  mutable std::mutex mu_;
  bool fail_updates_ = false;
  bool fail_invalidations_ = false;
  std::vector<memory::IotlbEntry> updates_;
  std::vector<std::pair<Iova, std::uint64_t>> invalidations_;
};

// ---------------------------------------------------------------------------------------
// Iommu

TEST(IommuTest, MapKeepsThePageOffsetAndTranslatesBack) {
  Iommu iommu;
  auto iova = iommu.map(Gpa{0x12345}, 100, Access::kRead);
  ASSERT_TRUE(iova) << iova.error().message();
  EXPECT_GE(iova->value(), std::uint64_t{1} << 32);  // default base: IOVA 0 never handed out
  EXPECT_EQ(iova->value() % kPage, 0x345u);
  auto t = iommu.translate(*iova, 100, Access::kRead);
  ASSERT_TRUE(t) << t.error().message();
  EXPECT_EQ(t->target, 0x12345u);
  EXPECT_EQ(t->len, 100u);
  // Page granular: the whole page is mapped, nothing beyond it.
  Iova page{iova->value() - 0x345};
  auto whole = iommu.translate(page, kPage, Access::kRead);
  ASSERT_TRUE(whole);
  EXPECT_EQ(whole->target, 0x12000u);
  EXPECT_EQ(iommu.translate(page + kPage, 1, Access::kRead).error(), memory::Errc::kIotlbMiss);
  EXPECT_EQ(iommu.translate(page, kPage + 1, Access::kRead).error(), memory::Errc::kIotlbMiss);
  EXPECT_EQ(iommu.stats().entries, 1u);
  EXPECT_TRUE(iommu.unmap(*iova, 100));
  EXPECT_EQ(iommu.stats().entries, 0u);
}

TEST(IommuTest, MappingsSpanningPagesCoverEveryPage) {
  Iommu iommu;
  // 0x1FF0 + 0x20 crosses into a second page.
  auto iova = iommu.map(Gpa{0x1FF0}, 0x20, Access::kReadWrite);
  ASSERT_TRUE(iova);
  Iova page{iova->value() & ~(kPage - 1)};
  auto t = iommu.translate(page, 2 * kPage, Access::kReadWrite);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->target, 0x1000u);
  EXPECT_EQ(t->len, 2 * kPage);
  EXPECT_EQ(iommu.translate(page + 2 * kPage, 1, Access::kRead).error(), memory::Errc::kIotlbMiss);
  // Unmapping needs the (iova, len) the mapping was made with: other spans are unknown.
  EXPECT_EQ(iommu.unmap(*iova, 0x10).error(), Errc::kUnknownMapping);
  EXPECT_EQ(iommu.unmap(*iova + 0x20, 100).error(), Errc::kUnknownMapping);
  EXPECT_EQ(iommu.unmap(*iova, 3 * kPage).error(), Errc::kUnknownMapping);
  EXPECT_EQ(iommu.unmap(*iova, 0).error(), Errc::kUnknownMapping);
  EXPECT_TRUE(iommu.translate(*iova, 0x20, Access::kRead));
  EXPECT_TRUE(iommu.unmap(*iova, 0x20));
}

TEST(IommuTest, PermissionsAreEnforced) {
  Iommu iommu;
  auto r = iommu.map(Gpa{0x10000}, kPage, Access::kRead);
  auto w = iommu.map(Gpa{0x20000}, kPage, Access::kWrite);
  auto rw = iommu.map(Gpa{0x30000}, kPage, Access::kReadWrite);
  ASSERT_TRUE(r && w && rw);
  EXPECT_TRUE(iommu.translate(*r, 10, Access::kRead));
  EXPECT_EQ(iommu.translate(*r, 10, Access::kWrite).error(), memory::Errc::kIotlbPermission);
  EXPECT_EQ(iommu.translate(*r, 10, Access::kReadWrite).error(), memory::Errc::kIotlbPermission);
  EXPECT_TRUE(iommu.translate(*w, 10, Access::kWrite));
  EXPECT_EQ(iommu.translate(*w, 10, Access::kRead).error(), memory::Errc::kIotlbPermission);
  EXPECT_TRUE(iommu.translate(*rw, 10, Access::kRead));
  EXPECT_TRUE(iommu.translate(*rw, 10, Access::kWrite));
  EXPECT_TRUE(iommu.translate(*rw, 10, Access::kReadWrite));
}

TEST(IommuTest, TranslateErrors) {
  IommuOptions opts;
  opts.base = Iova{0x100000};
  opts.size = 16 * kPage;
  Iommu iommu(opts);
  // First fit: consecutive maps get consecutive IOVA pages.
  auto a = iommu.map(Gpa{0x10000}, kPage, Access::kRead);
  auto b = iommu.map(Gpa{0x50000}, kPage, Access::kRead);   // target not contiguous
  auto c = iommu.map(Gpa{0x51000}, kPage, Access::kRead);   // contiguous with b
  auto d = iommu.map(Gpa{0x52000}, kPage, Access::kWrite);  // contiguous, other perm
  ASSERT_TRUE(a && b && c && d);
  ASSERT_EQ(*a, Iova{0x100000});
  ASSERT_EQ(*b, *a + kPage);
  ASSERT_EQ(*c, *b + kPage);
  ASSERT_EQ(*d, *c + kPage);
  EXPECT_EQ(iommu.translate(*a, 2 * kPage, Access::kRead).error(), memory::Errc::kIotlbFragmented);
  // b and c join: contiguous in both spaces, same permission.
  auto bc = iommu.translate(*b, 2 * kPage, Access::kRead);
  ASSERT_TRUE(bc);
  EXPECT_EQ(bc->target, 0x50000u);
  EXPECT_EQ(bc->len, 2 * kPage);
  EXPECT_EQ(iommu.translate(*c, 2 * kPage, Access::kRead).error(), memory::Errc::kIotlbPermission);
  EXPECT_EQ(iommu.translate(*d, 2 * kPage, Access::kWrite).error(), memory::Errc::kIotlbMiss);
  EXPECT_EQ(iommu.translate(Iova{0x100000 + 10 * kPage}, 1, Access::kRead).error(),
            memory::Errc::kIotlbMiss);
  EXPECT_EQ(iommu.translate(Iova{0}, 1, Access::kRead).error(), memory::Errc::kIotlbMiss);
  EXPECT_EQ(iommu.translate(*a, 0, Access::kRead).error(), memory::Errc::kZeroLength);
  EXPECT_EQ(iommu.translate(Iova{UINT64_MAX - 10}, 100, Access::kRead).error(),
            memory::Errc::kOverflow);
}

TEST(IommuTest, MapErrors) {
  Iommu iommu;
  EXPECT_EQ(iommu.map(Gpa{0x1000}, 0, Access::kRead).error(), Errc::kZeroLength);
  EXPECT_EQ(iommu.map(Gpa{UINT64_MAX - 10}, 100, Access::kRead).error(), Errc::kOverflow);
  EXPECT_EQ(iommu.map(Gpa{UINT64_MAX - 10}, 5, Access::kRead).error(), Errc::kOverflow);
  EXPECT_EQ(iommu.map(Gpa{0x1000}, 100, Access::kRead, 2048).error(), Errc::kInvalidOption);
  EXPECT_EQ(iommu.map(Gpa{0x1000}, 100, Access::kRead, 3 * kPage).error(), Errc::kInvalidOption);
  EXPECT_EQ(iommu.stats().entries, 0u);
}

TEST(IommuTest, IovaAlignment) {
  Iommu iommu;
  auto pad = iommu.map(Gpa{0}, kPage, Access::kRead);  // makes the next free IOVA unaligned
  ASSERT_TRUE(pad);
  auto a = iommu.map(Gpa{0x12345}, 100, Access::kRead, 64 * 1024);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->value() % (64 * 1024), 0x345u);
  auto t = iommu.translate(*a, 100, Access::kRead);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->target, 0x12345u);
}

TEST(IommuTest, IovaSpaceFullIsRetryable) {
  IommuOptions opts;
  opts.base = Iova{0x100000};
  opts.size = 4 * kPage;
  Iommu iommu(opts);
  std::vector<Iova> iovas;
  for (int i = 0; i < 4; ++i) {
    auto a = iommu.map(Gpa{0x10000 + i * kPage}, kPage, Access::kRead);
    ASSERT_TRUE(a);
    EXPECT_GE(a->value(), 0x100000u);
    EXPECT_LT(a->value(), 0x100000u + 4 * kPage);
    iovas.push_back(*a);
  }
  auto full = iommu.map(Gpa{0x90000}, 1, Access::kRead);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error(), Errc::kIovaSpaceFull);
  EXPECT_TRUE(is_retryable(full.error()));
  ASSERT_TRUE(iommu.unmap(iovas[2], kPage));
  auto again = iommu.map(Gpa{0x90000}, 1, Access::kRead);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, iovas[2]);
}

TEST(IommuTest, DoubleUnmapIsNotMapped) {
  Iommu iommu;
  auto a = iommu.map(Gpa{0x5000}, 300, Access::kWrite);
  ASSERT_TRUE(a);
  ASSERT_TRUE(iommu.unmap(*a, 300));
  EXPECT_EQ(iommu.unmap(*a, 300).error(), Errc::kNotMapped);
  EXPECT_EQ(iommu.translate(*a, 300, Access::kWrite).error(), memory::Errc::kIotlbMiss);
  EXPECT_EQ(iommu.unmap(Iova{0x1234}, 10).error(), Errc::kNotMapped);
  EXPECT_EQ(iommu.unmap(Iova{UINT64_MAX - 10}, 100).error(), Errc::kUnknownMapping);
}

TEST(IommuTest, ListenersHearUpdatesAndInvalidations) {
  Iommu iommu;
  RecordingListener l1, l2;
  iommu.add_listener(&l1);
  iommu.add_listener(&l2);
  auto a = iommu.map(Gpa{0x12345}, 0x2000, Access::kWrite);
  ASSERT_TRUE(a);
  const Iova page{a->value() & ~(kPage - 1)};
  for (const RecordingListener* l : {&l1, &l2}) {
    auto u = l->updates();
    ASSERT_EQ(u.size(), 1u);
    EXPECT_EQ(u[0].iova, page);
    EXPECT_EQ(u[0].size, 3 * kPage);  // 0x12000 .. 0x15000
    EXPECT_EQ(u[0].target, 0x12000u);
    EXPECT_EQ(u[0].perm, Access::kWrite);
    EXPECT_TRUE(l->invalidations().empty());
  }
  ASSERT_TRUE(iommu.unmap(*a, 0x2000));
  for (const RecordingListener* l : {&l1, &l2}) {
    auto inv = l->invalidations();
    ASSERT_EQ(inv.size(), 1u);
    EXPECT_EQ(inv[0].first, page);
    EXPECT_EQ(inv[0].second, 3 * kPage);
  }
  IommuStats s = iommu.stats();
  EXPECT_EQ(s.updates, 1u);
  EXPECT_EQ(s.invalidations, 1u);
  EXPECT_EQ(s.entries, 0u);
  EXPECT_EQ(s.quarantined_bytes, 0u);

  iommu.remove_listener(&l1);
  auto b = iommu.map(Gpa{0x1000}, 1, Access::kRead);
  ASSERT_TRUE(b);
  ASSERT_TRUE(iommu.unmap(*b, 1));
  EXPECT_EQ(l1.updates().size(), 1u);
  EXPECT_EQ(l1.invalidations().size(), 1u);
  EXPECT_EQ(l2.updates().size(), 2u);
  EXPECT_EQ(l2.invalidations().size(), 2u);
}

TEST(IommuTest, FailedUpdateUndoesTheMapping) {
  IommuOptions opts;
  opts.base = Iova{0x100000};
  opts.size = 4 * kPage;
  Iommu iommu(opts);
  RecordingListener ok_listener, failing;
  iommu.add_listener(&ok_listener);
  iommu.add_listener(&failing);
  failing.fail_updates(true);
  auto a = iommu.map(Gpa{0x10000}, kPage, Access::kRead);
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error(), Errc::kUpdateFailed);
  IommuStats s = iommu.stats();
  EXPECT_EQ(s.entries, 0u);
  EXPECT_EQ(iommu.translate(Iova{0x100000}, 1, Access::kRead).error(), memory::Errc::kIotlbMiss);
  // The listener that took the update is told to drop it.
  ASSERT_EQ(ok_listener.updates().size(), 1u);
  auto inv = ok_listener.invalidations();
  ASSERT_EQ(inv.size(), 1u);
  EXPECT_EQ(inv[0].first, ok_listener.updates()[0].iova);
  EXPECT_EQ(s.quarantined_bytes, 0u);
  // The IOVA range was released: the whole space is usable again.
  failing.fail_updates(false);
  for (int i = 0; i < 4; ++i) {
    auto m = iommu.map(Gpa{0x10000}, kPage, Access::kRead);
    ASSERT_TRUE(m) << i << ": " << m.error().message();
  }
}

TEST(IommuTest, FailedUpdateAndFailedRollbackQuarantines) {
  IommuOptions opts;
  opts.base = Iova{0x100000};
  opts.size = 2 * kPage;
  Iommu iommu(opts);
  RecordingListener l;
  iommu.add_listener(&l);
  l.fail_updates(true);
  l.fail_invalidations(true);
  EXPECT_EQ(iommu.map(Gpa{0x10000}, kPage, Access::kRead).error(), Errc::kUpdateFailed);
  EXPECT_EQ(iommu.stats().quarantined_bytes, kPage);
  l.fail_updates(false);
  l.fail_invalidations(false);
  auto ok = iommu.map(Gpa{0x10000}, kPage, Access::kRead);
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, Iova{0x100000 + kPage});  // the quarantined page is never handed out
  EXPECT_EQ(iommu.map(Gpa{0x10000}, kPage, Access::kRead).error(), Errc::kIovaSpaceFull);
}

TEST(IommuTest, FailedInvalidationQuarantinesTheRange) {
  IommuOptions opts;
  opts.base = Iova{0x100000};
  opts.size = 2 * kPage;
  Iommu iommu(opts);
  RecordingListener failing, other;
  iommu.add_listener(&failing);
  iommu.add_listener(&other);
  auto a = iommu.map(Gpa{0x10000}, kPage, Access::kReadWrite);
  ASSERT_TRUE(a);
  ASSERT_EQ(*a, Iova{0x100000});
  failing.fail_invalidations(true);
  auto r = iommu.unmap(*a, kPage);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), Errc::kInvalidationFailed);
  // Every listener heard it, even after one failed.
  EXPECT_EQ(failing.invalidations().size(), 1u);
  EXPECT_EQ(other.invalidations().size(), 1u);
  // The translation is gone from the source of truth...
  EXPECT_EQ(iommu.translate(*a, 1, Access::kRead).error(), memory::Errc::kIotlbMiss);
  EXPECT_EQ(iommu.unmap(*a, kPage).error(), Errc::kNotMapped);
  IommuStats s = iommu.stats();
  EXPECT_EQ(s.entries, 0u);
  EXPECT_EQ(s.quarantined_bytes, kPage);
  // ...but the range is never reused: the device may still reach it.
  failing.fail_invalidations(false);
  auto b = iommu.map(Gpa{0x20000}, kPage, Access::kRead);
  ASSERT_TRUE(b);
  EXPECT_EQ(*b, Iova{0x100000 + kPage});
  EXPECT_EQ(iommu.map(Gpa{0x30000}, kPage, Access::kRead).error(), Errc::kIovaSpaceFull);
  ASSERT_TRUE(iommu.unmap(*b, kPage));
  auto c = iommu.map(Gpa{0x30000}, kPage, Access::kRead);
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, *b);
}

// ---------------------------------------------------------------------------------------
// IommuOps

constexpr Gpa kRamGpa{0};
constexpr std::uint64_t kRamBytes = 1 << 20;
constexpr Gpa kPrivateGpa{0x10000000};
constexpr std::uint64_t kPrivateBytes = 64 << 10;
constexpr Gpa kCoherentGpa{0x40000000};
constexpr std::uint64_t kCoherentBytes = 64 << 10;

memory::MemfdRegion make_region(const char* name, std::uint64_t size, memory::RegionKind kind) {
  auto r = memory::MemfdRegion::Create(name, size, kind);
  if (!r) ADD_FAILURE() << r.error().message();
  return std::move(*r);
}

class IommuOpsTest : public ::testing::Test {
 protected:
  void SetUp() override { Build(options()); }
  virtual IommuOptions options() const { return {}; }

  void Build(const IommuOptions& opts) {
    auto ram = mem_.add(kRamGpa, make_region("iommu-ram", kRamBytes, memory::RegionKind::kShared));
    ASSERT_TRUE(ram);
    ram_ = *ram;
    auto priv = mem_.add(kPrivateGpa,
                         make_region("iommu-private", kPrivateBytes, memory::RegionKind::kPrivate));
    ASSERT_TRUE(priv);
    private_ = *priv;
    auto coh = mem_.add(kCoherentGpa,
                        make_region("iommu-coherent", kCoherentBytes, memory::RegionKind::kShared));
    ASSERT_TRUE(coh);
    coh_ = *coh;
    coherent_ = std::make_unique<CoherentPool>(std::span<std::byte>(coh_.host, kCoherentBytes));
    iommu_ = std::make_unique<Iommu>(opts);
    iommu_->add_listener(&listener_);
    ops_ = std::make_unique<IommuOps>(mem_, *iommu_, *coherent_, kCoherentGpa);
  }

  void TearDown() override {
    if (iommu_) iommu_->remove_listener(&listener_);
  }

  // The device's view: translate through the IOMMU with `access`, then guest memory.
  Result<std::span<std::byte>> device_view(DmaAddr a, std::uint64_t len, Access access) {
    auto t = VDMA_TRY(iommu_->translate(Iova{a.value()}, len, access));
    return mem_.translate(Gpa{t.target}, t.len);
  }

  std::byte* ram(std::uint64_t off) { return ram_.host + off; }

  memory::GuestMemory mem_;
  memory::GuestRegion ram_, private_, coh_;
  std::unique_ptr<CoherentPool> coherent_;
  RecordingListener listener_;
  std::unique_ptr<Iommu> iommu_;
  std::unique_ptr<IommuOps> ops_;
};

TEST_F(IommuOpsTest, KindAndMaxMappingSize) {
  EXPECT_EQ(ops_->kind(), OpsKind::kIommu);
  EXPECT_EQ(ops_->max_mapping_size(), std::uint64_t{1} << 32);
}

TEST_F(IommuOpsTest, DmaAddressIsAnIovaWithTheDirectionsPermission) {
  struct Case {
    Direction dir;
    bool read, write;
  };
  for (Case c : {Case{Direction::kToDevice, true, false}, Case{Direction::kFromDevice, false, true},
                 Case{Direction::kBidirectional, true, true}}) {
    SCOPED_TRACE(direction_name(c.dir));
    std::byte* buf = ram(0x3456);
    auto m = ops_->map(buf, 5000, c.dir);
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_EQ(m->cpu(), buf);
    EXPECT_EQ(m->size(), 5000u);
    EXPECT_NE(m->dma_addr().value(), 0x3456u) << "an IOVA, not the Gpa";
    EXPECT_GE(m->dma_addr().value(), IommuOptions{}.base.value());
    EXPECT_EQ(m->dma_addr().value() % kPage, 0x456u);
    const Iova iova{m->dma_addr().value()};
    auto want = device_access(c.dir);
    auto t = iommu_->translate(iova, 5000, want);
    ASSERT_TRUE(t);
    EXPECT_EQ(t->target, kRamGpa.value() + 0x3456);
    EXPECT_EQ(t->len, 5000u);
    auto r = iommu_->translate(iova, 5000, Access::kRead);
    auto w = iommu_->translate(iova, 5000, Access::kWrite);
    EXPECT_EQ(r.has_value(), c.read);
    EXPECT_EQ(w.has_value(), c.write);
    if (!c.read) {
      EXPECT_EQ(r.error(), memory::Errc::kIotlbPermission);
    }
    if (!c.write) {
      EXPECT_EQ(w.error(), memory::Errc::kIotlbPermission);
    }
    // The listener (device IOTLB) got the same entry.
    auto u = listener_.updates();
    ASSERT_FALSE(u.empty());
    EXPECT_EQ(u.back().perm, want);
    EXPECT_EQ(u.back().target, 0x3000u);
    ASSERT_TRUE(m->unmap());
    EXPECT_EQ(iommu_->translate(iova, 1, want).error(), memory::Errc::kIotlbMiss);
    ASSERT_FALSE(listener_.invalidations().empty());
    EXPECT_EQ(listener_.invalidations().back().first, Iova{iova.value() & ~(kPage - 1)});
  }
  EXPECT_EQ(iommu_->stats().entries, 0u);
}

TEST_F(IommuOpsTest, RoundTripsThroughTheTranslation) {
  std::uint64_t seed = 1;
  for (Direction dir : kAllDirections) {
    SCOPED_TRACE(direction_name(dir));
    std::span<std::byte> buf(ram(0x10000 + 0x10), 9000);
    fill_pattern(buf, seed);
    auto m = ops_->map(buf.data(), buf.size(), dir);
    ASSERT_TRUE(m);
    ASSERT_TRUE(m->sync_for_device());
    if (dir != Direction::kFromDevice) {
      auto view = device_view(m->dma_addr(), buf.size(), Access::kRead);
      ASSERT_TRUE(view) << view.error().message();
      EXPECT_EQ(view->data(), buf.data()) << "no copies: the device reads the buffer itself";
      EXPECT_EQ(first_mismatch(*view, seed), -1);
    }
    if (dir != Direction::kToDevice) {
      auto view = device_view(m->dma_addr(), buf.size(), Access::kWrite);
      ASSERT_TRUE(view) << view.error().message();
      fill_pattern(*view, seed + 50);
      ASSERT_TRUE(m->sync_for_cpu());
      EXPECT_EQ(first_mismatch(buf, seed + 50), -1);
    }
    ASSERT_TRUE(m->unmap());
    EXPECT_EQ(first_mismatch(buf, dir == Direction::kToDevice ? seed : seed + 50), -1);
    ++seed;
  }
}

TEST_F(IommuOpsTest, BadInput) {
  EXPECT_EQ(ops_->map(ram(0), 0, Direction::kToDevice).error(), Errc::kZeroLength);
  EXPECT_EQ(ops_->map(ram(0), (std::uint64_t{1} << 32) + 1, Direction::kToDevice).error(),
            Errc::kTooLarge);
  void* near_top = reinterpret_cast<void*>(std::uintptr_t{UINT64_MAX - 10});
  EXPECT_EQ(ops_->map(near_top, 100, Direction::kFromDevice).error(), Errc::kOverflow);
  std::vector<std::byte> heap(100);
  EXPECT_EQ(ops_->map(heap.data(), heap.size(), Direction::kToDevice).error(), Errc::kNotDmaable);
  for (Direction dir : kAllDirections) {
    EXPECT_EQ(ops_->map(private_.host, 100, dir).error(), Errc::kNotDmaable);
  }
  EXPECT_EQ(ops_->map(ram(kRamBytes - 4), 8, Direction::kToDevice).error(), Errc::kNotDmaable);
  // Nothing reached the IOMMU.
  EXPECT_EQ(iommu_->stats().entries, 0u);
  EXPECT_TRUE(listener_.updates().empty());
}

TEST_F(IommuOpsTest, DoubleUnmapIsNotMapped) {
  auto m = ops_->map(ram(0x100), 100, Direction::kFromDevice);
  ASSERT_TRUE(m);
  MappingRecord r = m->record();
  ASSERT_TRUE(m->unmap());
  EXPECT_EQ(m->unmap().error(), Errc::kNotMapped);
  EXPECT_EQ(ops_->unmap_record(r).error(), Errc::kNotMapped);
  EXPECT_EQ(ops_->sync_record_for_cpu(r, 0, 10).error(), Errc::kNotMapped);
  EXPECT_EQ(ops_->sync_record_for_device(r, 0, 10).error(), Errc::kNotMapped);
  EXPECT_EQ(listener_.invalidations().size(), 1u);
}

TEST_F(IommuOpsTest, ForgedRecordsAreRejected) {
  auto m = ops_->map_record(ram(0x2000), 100, Direction::kBidirectional);
  ASSERT_TRUE(m);
  MappingRecord f = *m;
  f.cookie = m->cookie + 4096;  // claims another Gpa
  EXPECT_EQ(ops_->unmap_record(f).error(), Errc::kUnknownMapping);
  EXPECT_EQ(ops_->sync_record_for_cpu(f, 0, 1).error(), Errc::kUnknownMapping);
  f = *m;
  f.len = 5000;  // a different page span than was mapped
  EXPECT_FALSE(ops_->unmap_record(f));
  f = *m;
  f.addr = DmaAddr{0x7000000000};  // never mapped
  EXPECT_FALSE(ops_->unmap_record(f));
  // Still mapped and intact.
  EXPECT_TRUE(iommu_->translate(Iova{m->addr.value()}, 100, Access::kReadWrite));
  EXPECT_TRUE(listener_.invalidations().empty());
  EXPECT_TRUE(ops_->unmap_record(*m));
  EXPECT_EQ(iommu_->stats().entries, 0u);
}

TEST_F(IommuOpsTest, SyncOutOfRange) {
  auto m = ops_->map(ram(0), 100, Direction::kToDevice);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->sync_for_cpu(101).error(), Errc::kSyncOutOfRange);
  EXPECT_EQ(m->sync_for_device(50, 51).error(), Errc::kSyncOutOfRange);
  EXPECT_TRUE(m->sync_for_cpu(50, 50));
  EXPECT_TRUE(m->sync_for_device());
}

TEST_F(IommuOpsTest, MappingDestructorUnmaps) {
  {
    auto a = ops_->map(ram(0), 100, Direction::kToDevice);
    auto b = ops_->map(ram(0), 100, Direction::kFromDevice);  // same buffer, two IOVAs
    ASSERT_TRUE(a && b);
    EXPECT_NE(a->dma_addr(), b->dma_addr());
    EXPECT_EQ(iommu_->stats().entries, 2u);
  }
  EXPECT_EQ(iommu_->stats().entries, 0u);
  EXPECT_EQ(listener_.invalidations().size(), 2u);
}

TEST_F(IommuOpsTest, FailedInvalidationIsReportedAndQuarantined) {
  auto m = ops_->map(ram(0x4000), 100, Direction::kFromDevice);
  ASSERT_TRUE(m);
  const Iova iova{m->dma_addr().value()};
  listener_.fail_invalidations(true);
  auto r = m->unmap();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), Errc::kInvalidationFailed);
  EXPECT_EQ(iommu_->stats().quarantined_bytes, kPage);
  EXPECT_EQ(iommu_->translate(iova, 1, Access::kWrite).error(), memory::Errc::kIotlbMiss);
  listener_.fail_invalidations(false);
  // A new mapping never gets the quarantined IOVA.
  for (int i = 0; i < 8; ++i) {
    auto n = ops_->map(ram(0x4000), 100, Direction::kFromDevice);
    ASSERT_TRUE(n);
    EXPECT_NE(n->dma_addr().value() & ~(kPage - 1), iova.value() & ~(kPage - 1));
  }
}

TEST_F(IommuOpsTest, FailedUpdateFailsTheMap) {
  listener_.fail_updates(true);
  auto m = ops_->map(ram(0), 100, Direction::kToDevice);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error(), Errc::kUpdateFailed);
  EXPECT_EQ(iommu_->stats().entries, 0u);
  listener_.fail_updates(false);
  EXPECT_TRUE(ops_->map(ram(0), 100, Direction::kToDevice));
}

TEST_F(IommuOpsTest, CoherentAllocationsAreMappedReadWrite) {
  auto c = ops_->alloc_coherent(3000);
  ASSERT_TRUE(c) << c.error().message();
  ASSERT_GE(c->cpu(), coh_.host);
  ASSERT_LE(c->cpu() + 3000, coh_.host + kCoherentBytes);
  for (std::size_t i = 0; i < 3000; ++i) ASSERT_EQ(c->cpu()[i], std::byte{0}) << i;
  const std::uint64_t gpa = kCoherentGpa.value() + static_cast<std::uint64_t>(c->cpu() - coh_.host);
  EXPECT_NE(c->dma_addr().value(), gpa) << "the device gets an IOVA";
  auto t = iommu_->translate(Iova{c->dma_addr().value()}, 3000, Access::kReadWrite);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->target, gpa);
  auto view = device_view(c->dma_addr(), 3000, Access::kReadWrite);
  ASSERT_TRUE(view);
  EXPECT_EQ(view->data(), c->cpu());

  std::memset(c->cpu(), 0x77, 3000);
  CoherentRecord r = c->record();
  *c = CoherentBuffer();
  EXPECT_EQ(iommu_->translate(Iova{r.addr.value()}, 1, Access::kRead).error(),
            memory::Errc::kIotlbMiss);
  EXPECT_EQ(ops_->free_coherent_record(r).error(), Errc::kNotMapped);
  EXPECT_EQ(coherent_->bytes_free(), kCoherentBytes);
  auto again = ops_->alloc_coherent(3000);
  ASSERT_TRUE(again);
  ASSERT_EQ(again->cpu(), r.cpu);
  for (std::size_t i = 0; i < 3000; ++i) ASSERT_EQ(again->cpu()[i], std::byte{0}) << i;
}

TEST_F(IommuOpsTest, CoherentErrors) {
  EXPECT_EQ(ops_->alloc_coherent(0).error(), Errc::kZeroLength);
  EXPECT_EQ(ops_->alloc_coherent(kCoherentBytes + 1).error(), Errc::kCoherentPoolFull);
  auto c = ops_->alloc_coherent_record(100);
  ASSERT_TRUE(c);
  CoherentRecord f = *c;
  f.cookie += 64;
  EXPECT_EQ(ops_->free_coherent_record(f).error(), Errc::kUnknownMapping);
  f = *c;
  f.cpu = c->cpu + 1;
  EXPECT_EQ(ops_->free_coherent_record(f).error(), Errc::kUnknownMapping);
  EXPECT_TRUE(iommu_->translate(Iova{c->addr.value()}, 100, Access::kReadWrite));
  EXPECT_TRUE(ops_->free_coherent_record(*c));
  EXPECT_EQ(ops_->free_coherent_record(*c).error(), Errc::kNotMapped);
}

// Two pages of IOVA space.
class IommuOpsTinyIovaTest : public IommuOpsTest {
 protected:
  IommuOptions options() const override {
    IommuOptions opts;
    opts.base = Iova{0x100000};
    opts.size = 2 * kPage;
    return opts;
  }
};

TEST_F(IommuOpsTinyIovaTest, IovaSpaceFullThenRecovers) {
  auto a = ops_->map(ram(0), kPage, Direction::kToDevice);
  auto b = ops_->map(ram(0x10), 10, Direction::kToDevice);
  ASSERT_TRUE(a && b);
  auto full = ops_->map(ram(0x20), 10, Direction::kToDevice);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error(), Errc::kIovaSpaceFull);
  EXPECT_TRUE(is_retryable(full.error()));
  EXPECT_EQ(ops_->alloc_coherent(64).error(), Errc::kIovaSpaceFull);
  EXPECT_EQ(coherent_->bytes_free(), kCoherentBytes) << "coherent memory leaked on failure";
  ASSERT_TRUE(a->unmap());
  EXPECT_TRUE(ops_->map(ram(0x20), 10, Direction::kToDevice));
}

}  // namespace
}  // namespace vdma::dma

#include "vdma/dma/direct_ops.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "vdma/dma/errors.h"
#include "vdma/memory/errors.h"
#include "vdma/testing/patterns.h"

namespace vdma::dma {
namespace {

using testing::fill_pattern;
using testing::first_mismatch;

constexpr Gpa kSharedGpa{0x100000};
constexpr std::uint64_t kSharedBytes = 1 << 20;
constexpr Gpa kPrivateGpa{0x400000};
constexpr std::uint64_t kPrivateBytes = 64 << 10;
constexpr Gpa kCoherentGpa{0x800000};
constexpr std::uint64_t kCoherentBytes = 64 << 10;

constexpr Direction kAllDirections[] = {Direction::kToDevice, Direction::kFromDevice,
                                        Direction::kBidirectional};

memory::MemfdRegion make_region(const char* name, std::uint64_t size, memory::RegionKind kind) {
  auto r = memory::MemfdRegion::Create(name, size, kind);
  if (!r) ADD_FAILURE() << r.error().message();
  return std::move(*r);
}

class DirectOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto shared = mem_.add(kSharedGpa,
                           make_region("direct-shared", kSharedBytes, memory::RegionKind::kShared));
    ASSERT_TRUE(shared);
    shared_ = *shared;
    auto priv = mem_.add(
        kPrivateGpa, make_region("direct-private", kPrivateBytes, memory::RegionKind::kPrivate));
    ASSERT_TRUE(priv);
    private_ = *priv;
    auto coh = mem_.add(
        kCoherentGpa, make_region("direct-coherent", kCoherentBytes, memory::RegionKind::kShared));
    ASSERT_TRUE(coh);
    coherent_region_ = *coh;
    coherent_ =
        std::make_unique<CoherentPool>(std::span<std::byte>(coherent_region_.host, kCoherentBytes));
    ops_ = std::make_unique<DirectOps>(mem_, *coherent_, DmaAddr{kCoherentGpa.value()});
  }

  // What the device sees at a DMA address: for direct ops, guest memory at that Gpa.
  std::span<std::byte> device_view(DmaAddr a, std::uint64_t len) {
    auto s = mem_.translate(Gpa{a.value()}, len);
    EXPECT_TRUE(s) << s.error().message();
    if (!s) return {};
    const memory::GuestRegion* r = mem_.region_at(Gpa{a.value()});
    EXPECT_TRUE(r != nullptr && r->shared()) << "device address outside a shared region";
    return *s;
  }

  memory::GuestMemory mem_;
  memory::GuestRegion shared_;
  memory::GuestRegion private_;
  memory::GuestRegion coherent_region_;
  std::unique_ptr<CoherentPool> coherent_;
  std::unique_ptr<DirectOps> ops_;
};

TEST_F(DirectOpsTest, KindAndMaxMappingSize) {
  EXPECT_EQ(ops_->kind(), OpsKind::kDirect);
  EXPECT_EQ(ops_->max_mapping_size(), UINT64_MAX);
}

TEST_F(DirectOpsTest, DmaAddressIsTheGpaOfTheBuffer) {
  for (Direction dir : kAllDirections) {
    SCOPED_TRACE(direction_name(dir));
    std::byte* buf = shared_.host + 0x1234;
    auto m = ops_->map(buf, 100, dir);
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_TRUE(m->mapped());
    EXPECT_EQ(m->dma_addr(), DmaAddr{kSharedGpa.value() + 0x1234});
    EXPECT_EQ(m->cpu(), buf);
    EXPECT_EQ(m->size(), 100u);
    EXPECT_EQ(m->direction(), dir);
    auto gpa = mem_.gpa_of(buf, 100);
    ASSERT_TRUE(gpa);
    EXPECT_EQ(m->dma_addr().value(), gpa->value());
    EXPECT_TRUE(m->unmap());
    EXPECT_FALSE(m->mapped());
  }
}

TEST_F(DirectOpsTest, FirstAndLastByteOfTheSharedRegion) {
  auto first = ops_->map_record(shared_.host, 1, Direction::kToDevice);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->addr, DmaAddr{kSharedGpa.value()});
  auto last = ops_->map_record(shared_.host + kSharedBytes - 1, 1, Direction::kToDevice);
  ASSERT_TRUE(last);
  EXPECT_EQ(last->addr, DmaAddr{kSharedGpa.value() + kSharedBytes - 1});
  auto whole = ops_->map_record(shared_.host, kSharedBytes, Direction::kBidirectional);
  ASSERT_TRUE(whole);
  EXPECT_EQ(whole->len, kSharedBytes);
  EXPECT_TRUE(ops_->unmap_record(*first));
  EXPECT_TRUE(ops_->unmap_record(*last));
  EXPECT_TRUE(ops_->unmap_record(*whole));
}

TEST_F(DirectOpsTest, RoundTripsShareTheCallersMemory) {
  std::uint64_t seed = 1;
  for (Direction dir : kAllDirections) {
    SCOPED_TRACE(direction_name(dir));
    std::span<std::byte> buf(shared_.host + 0x8000, 3000);
    fill_pattern(buf, seed);
    auto m = ops_->map(buf.data(), buf.size(), dir);
    ASSERT_TRUE(m);
    std::span<std::byte> dev = device_view(m->dma_addr(), buf.size());
    ASSERT_EQ(dev.size(), buf.size());
    // No copy: the device reads the caller's bytes in place.
    EXPECT_EQ(dev.data(), buf.data());
    EXPECT_EQ(first_mismatch(dev, seed), -1);
    ASSERT_TRUE(m->sync_for_device());
    // The device writes; the CPU sees it after sync_for_cpu (and after unmap).
    fill_pattern(dev, seed + 100);
    ASSERT_TRUE(m->sync_for_cpu());
    EXPECT_EQ(first_mismatch(buf, seed + 100), -1);
    ASSERT_TRUE(m->unmap());
    EXPECT_EQ(first_mismatch(buf, seed + 100), -1);
    ++seed;
  }
}

TEST_F(DirectOpsTest, SyncRangesAreValidated) {
  auto m = ops_->map(shared_.host, 256, Direction::kBidirectional);
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->sync_for_cpu(0, 256));
  EXPECT_TRUE(m->sync_for_cpu(255, 1));
  EXPECT_TRUE(m->sync_for_cpu(256, 0));
  EXPECT_TRUE(m->sync_for_cpu(100));  // to the end
  EXPECT_TRUE(m->sync_for_device(0, 256));
  EXPECT_EQ(m->sync_for_cpu(257, 0).error(), Errc::kSyncOutOfRange);
  EXPECT_EQ(m->sync_for_cpu(1, 256).error(), Errc::kSyncOutOfRange);
  EXPECT_EQ(m->sync_for_cpu(0, 257).error(), Errc::kSyncOutOfRange);
  EXPECT_EQ(m->sync_for_device(300).error(), Errc::kSyncOutOfRange);
  EXPECT_EQ(m->sync_for_device(200, 57).error(), Errc::kSyncOutOfRange);
  // off + len wrapping 2^64 is out of range, not a tiny range.
  EXPECT_EQ(m->sync_for_device(10, UINT64_MAX - 5).error(), Errc::kSyncOutOfRange);
}

TEST_F(DirectOpsTest, ZeroLengthIsRejected) {
  EXPECT_EQ(ops_->map(shared_.host, 0, Direction::kToDevice).error(), Errc::kZeroLength);
}

TEST_F(DirectOpsTest, OverflowingBufferIsRejected) {
  // Never dereferenced: the range check comes first.
  void* near_top = reinterpret_cast<void*>(std::uintptr_t{UINT64_MAX - 10});
  EXPECT_EQ(ops_->map(near_top, 100, Direction::kToDevice).error(), Errc::kOverflow);
  EXPECT_EQ(ops_->map(shared_.host, UINT64_MAX, Direction::kFromDevice).error(), Errc::kOverflow);
}

TEST_F(DirectOpsTest, BuffersOutsideSharedGuestMemoryAreNotDmaable) {
  std::vector<std::byte> heap(512);
  EXPECT_EQ(ops_->map(heap.data(), heap.size(), Direction::kToDevice).error(), Errc::kNotDmaable);
  // Private guest memory: the device cannot reach it, so it never gets its address.
  for (Direction dir : kAllDirections) {
    EXPECT_EQ(ops_->map(private_.host + 64, 64, dir).error(), Errc::kNotDmaable);
  }
  // Running past the end of the shared region.
  EXPECT_EQ(ops_->map(shared_.host + kSharedBytes - 10, 11, Direction::kToDevice).error(),
            Errc::kNotDmaable);
}

TEST_F(DirectOpsTest, DoubleUnmapThroughMappingIsNotMapped) {
  auto m = ops_->map(shared_.host, 64, Direction::kToDevice);
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->unmap());
  EXPECT_EQ(m->unmap().error(), Errc::kNotMapped);
  EXPECT_EQ(m->sync_for_cpu().error(), Errc::kNotMapped);
  EXPECT_EQ(m->sync_for_device().error(), Errc::kNotMapped);
}

TEST_F(DirectOpsTest, MovedFromMappingIsNotMapped) {
  auto m = ops_->map(shared_.host, 64, Direction::kFromDevice);
  ASSERT_TRUE(m);
  Mapping a = std::move(*m);
  EXPECT_FALSE(m->mapped());
  EXPECT_EQ(m->unmap().error(), Errc::kNotMapped);
  EXPECT_TRUE(a.mapped());
  EXPECT_EQ(a.dma_addr(), DmaAddr{kSharedGpa.value()});
  EXPECT_TRUE(a.unmap());
}

TEST_F(DirectOpsTest, ReleasedRecordIsUnmappedByTheCaller) {
  auto m = ops_->map(shared_.host + 4096, 64, Direction::kFromDevice);
  ASSERT_TRUE(m);
  MappingRecord r = m->release();
  EXPECT_FALSE(m->mapped());
  EXPECT_EQ(r.addr, DmaAddr{kSharedGpa.value() + 4096});
  EXPECT_EQ(r.len, 64u);
  EXPECT_TRUE(ops_->sync_record_for_cpu(r, 0, 64));
  EXPECT_EQ(ops_->sync_record_for_cpu(r, 0, 65).error(), Errc::kSyncOutOfRange);
  EXPECT_TRUE(ops_->unmap_record(r));
}

TEST_F(DirectOpsTest, CoherentAllocationsAreZeroedAndAddressedByGpa) {
  auto c = ops_->alloc_coherent(1000);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_TRUE(c->allocated());
  EXPECT_EQ(c->size(), 1000u);
  ASSERT_GE(c->cpu(), coherent_region_.host);
  ASSERT_LE(c->cpu() + 1000, coherent_region_.host + kCoherentBytes);
  EXPECT_EQ(c->dma_addr().value(),
            kCoherentGpa.value() + static_cast<std::uint64_t>(c->cpu() - coherent_region_.host));
  EXPECT_EQ(c->dma_addr().value() % 64, 0u);
  std::span<std::byte> dev = device_view(c->dma_addr(), 1000);
  EXPECT_EQ(dev.data(), c->cpu());
  for (std::uint64_t i = 0; i < 1000; ++i) ASSERT_EQ(c->cpu()[i], std::byte{0}) << i;

  // Dirty it, free it, allocate again: the same memory comes back zeroed.
  std::byte* first = c->cpu();
  std::memset(first, 0xA5, 1000);
  *c = CoherentBuffer();
  auto again = ops_->alloc_coherent(1000);
  ASSERT_TRUE(again);
  ASSERT_EQ(again->cpu(), first);
  for (std::uint64_t i = 0; i < 1000; ++i) ASSERT_EQ(again->cpu()[i], std::byte{0}) << i;
}

TEST_F(DirectOpsTest, CoherentPageSizedAllocationsArePageAligned) {
  auto small = ops_->alloc_coherent(64);
  ASSERT_TRUE(small);
  auto page = ops_->alloc_coherent(4096);
  ASSERT_TRUE(page);
  EXPECT_EQ(page->dma_addr().value() % 4096, 0u);
  auto big = ops_->alloc_coherent(3 * 4096 + 1);
  ASSERT_TRUE(big);
  EXPECT_EQ(big->dma_addr().value() % 4096, 0u);
}

TEST_F(DirectOpsTest, CoherentErrors) {
  EXPECT_EQ(ops_->alloc_coherent(0).error(), Errc::kZeroLength);
  auto too_big = ops_->alloc_coherent(kCoherentBytes + 1);
  EXPECT_EQ(too_big.error(), Errc::kCoherentPoolFull);
  EXPECT_TRUE(is_retryable(too_big.error()));

  auto c = ops_->alloc_coherent_record(128);
  ASSERT_TRUE(c);
  CoherentRecord forged = *c;
  forged.cookie += 64;
  EXPECT_EQ(ops_->free_coherent_record(forged).error(), Errc::kUnknownMapping);
  CoherentRecord wrong_addr = *c;
  wrong_addr.addr = wrong_addr.addr + 64;
  EXPECT_EQ(ops_->free_coherent_record(wrong_addr).error(), Errc::kUnknownMapping);
  EXPECT_TRUE(ops_->free_coherent_record(*c));
  EXPECT_EQ(ops_->free_coherent_record(*c).error(), Errc::kNotMapped);
}

TEST_F(DirectOpsTest, CoherentPoolFullThenRecovers) {
  auto all = ops_->alloc_coherent(kCoherentBytes);
  ASSERT_TRUE(all);
  auto more = ops_->alloc_coherent(64);
  ASSERT_FALSE(more);
  EXPECT_EQ(more.error(), Errc::kCoherentPoolFull);
  EXPECT_TRUE(is_retryable(more.error()));
  *all = CoherentBuffer();  // RAII free
  EXPECT_EQ(coherent_->bytes_free(), kCoherentBytes);
  EXPECT_TRUE(ops_->alloc_coherent(64));
}

TEST_F(DirectOpsTest, CoherentBufferDestructorFrees) {
  {
    auto c = ops_->alloc_coherent(5000);
    ASSERT_TRUE(c);
    EXPECT_LT(coherent_->bytes_free(), kCoherentBytes);
  }
  EXPECT_EQ(coherent_->bytes_free(), kCoherentBytes);
}

}  // namespace
}  // namespace vdma::dma

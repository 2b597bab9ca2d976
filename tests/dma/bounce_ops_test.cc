#include "vdma/dma/bounce_ops.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <vector>

#include "vdma/dma/errors.h"
#include "vdma/testing/patterns.h"

namespace vdma::dma {
namespace {

using testing::fill_pattern;
using testing::first_mismatch;
using testing::pattern_byte;

constexpr std::uint64_t kPoolBytes = 1 << 20;  // 512 slots
constexpr std::uint64_t kCoherentBytes = 64 << 10;
constexpr DmaAddr kPoolDma{1ull << 30};
constexpr DmaAddr kCoherentDma{2ull << 30};
constexpr std::uint64_t kMaxRun = kSlotSize * kMaxSlotsPerRun;  // 256 KiB

constexpr Direction kAllDirections[] = {Direction::kToDevice, Direction::kFromDevice,
                                        Direction::kBidirectional};

// Caller memory with controlled low address bits (64 KiB aligned base).
class AlignedBuffer {
 public:
  explicit AlignedBuffer(std::size_t size)
      : size_(size), p_(static_cast<std::byte*>(std::aligned_alloc(kAlign, round_up(size)))) {}
  ~AlignedBuffer() { std::free(p_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  std::byte* data() const { return p_; }
  std::span<std::byte> span(std::size_t off, std::size_t len) const { return {p_ + off, len}; }
  std::size_t size() const { return size_; }

 private:
  static constexpr std::size_t kAlign = 64 << 10;
  static std::size_t round_up(std::size_t n) { return (n + kAlign - 1) & ~(kAlign - 1); }
  std::size_t size_;
  std::byte* p_;
};

// The bounce bytes the device reads and writes for a DMA address.
std::span<std::byte> device_bytes(const BounceOps& ops, DmaAddr a, std::uint64_t len) {
  EXPECT_GE(a, ops.pool_dma_base());
  const std::uint64_t off = a - ops.pool_dma_base();
  EXPECT_LE(off + len, ops.pool_bytes().size());
  if (a < ops.pool_dma_base() || off + len > ops.pool_bytes().size()) return {};
  return ops.pool_bytes().subspan(off, len);
}

class BounceOpsTest : public ::testing::Test {
 protected:
  BounceOpsTest() : pool_mem_(kPoolBytes), coh_mem_(kCoherentBytes), coherent_(coh_mem_) {}

  void SetUp() override {
    ops_ = make({.areas = 1});
    ASSERT_TRUE(ops_);
  }

  std::unique_ptr<BounceOps> make(const BounceOptions& opts) {
    auto ops = BounceOps::Create(opts, pool_mem_, kPoolDma, coherent_, kCoherentDma);
    if (!ops) {
      ADD_FAILURE() << ops.error().message();
      return nullptr;
    }
    return std::move(*ops);
  }

  std::span<std::byte> dev(DmaAddr a, std::uint64_t len) { return device_bytes(*ops_, a, len); }

  std::vector<std::byte> pool_mem_;
  std::vector<std::byte> coh_mem_;
  CoherentPool coherent_;
  std::unique_ptr<BounceOps> ops_;
  AlignedBuffer buf_{512 << 10};
};

TEST_F(BounceOpsTest, CreateValidatesOptions) {
  auto create = [&](BounceOptions o, std::span<std::byte> pool, DmaAddr pool_dma, DmaAddr coh_dma,
                    OpsKind kind = OpsKind::kBounce) {
    return BounceOps::Create(o, pool, pool_dma, coherent_, coh_dma, kind);
  };
  std::span<std::byte> pool(pool_mem_);
  EXPECT_EQ(create({.min_align_mask = 0x800}, pool, kPoolDma, kCoherentDma).error(),
            Errc::kInvalidOption);  // not 2^k - 1
  EXPECT_EQ(create({.min_align_mask = 0x1FFFF}, pool, kPoolDma, kCoherentDma).error(),
            Errc::kInvalidOption);  // >= 64 KiB
  EXPECT_EQ(create({}, pool, kPoolDma + 4096, kCoherentDma).error(), Errc::kInvalidOption);
  EXPECT_EQ(create({}, pool, kPoolDma, kCoherentDma + 64).error(), Errc::kInvalidOption);
  EXPECT_EQ(create({}, pool, kPoolDma, kCoherentDma, OpsKind::kDirect).error(),
            Errc::kInvalidOption);
  EXPECT_EQ(create({}, pool, kPoolDma, kCoherentDma, OpsKind::kIommu).error(),
            Errc::kInvalidOption);
  EXPECT_EQ(create({}, pool.first(kPoolBytes - 2048), kPoolDma, kCoherentDma).error(),
            Errc::kInvalidOption);
  EXPECT_EQ(create({.areas = 3}, pool, kPoolDma, kCoherentDma).error(), Errc::kInvalidOption);
  EXPECT_TRUE(create({.min_align_mask = 0xFFFF}, pool, kPoolDma, kCoherentDma));
  auto via = create({}, pool, kPoolDma, kCoherentDma, OpsKind::kBounceViaIommu);
  ASSERT_TRUE(via);
  EXPECT_EQ((*via)->kind(), OpsKind::kBounceViaIommu);
}

TEST_F(BounceOpsTest, KindPoolAndMaxMappingSize) {
  EXPECT_EQ(ops_->kind(), OpsKind::kBounce);
  EXPECT_EQ(ops_->pool_dma_base(), kPoolDma);
  EXPECT_EQ(ops_->pool_bytes().data(), pool_mem_.data());
  EXPECT_EQ(ops_->pool_bytes().size(), kPoolBytes);
  EXPECT_EQ(ops_->stats().total_slots, kPoolBytes / kSlotSize);
  EXPECT_EQ(ops_->max_mapping_size(), 256u * 1024);
  struct Case {
    std::uint64_t mask, max;
  };
  for (Case c : {Case{0x3F, kMaxRun - 0x3F}, Case{0x7FF, kMaxRun - 0x7FF},
                 Case{0xFFF, kMaxRun - 0x7FF}, Case{0xFFFF, kMaxRun - 0x7FF}}) {
    auto ops = make({.areas = 1, .min_align_mask = c.mask});
    ASSERT_TRUE(ops);
    EXPECT_EQ(ops->max_mapping_size(), c.max) << std::hex << c.mask;
  }
}

TEST_F(BounceOpsTest, MapCopiesIntoThePoolForEveryDirection) {
  std::uint64_t seed = 10;
  for (Direction dir : kAllDirections) {
    SCOPED_TRACE(direction_name(dir));
    std::span<std::byte> buf = buf_.span(0, 5000);
    fill_pattern(buf, seed);
    auto m = ops_->map(buf.data(), buf.size(), dir);
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_EQ(m->cpu(), buf.data());
    EXPECT_EQ(m->size(), buf.size());
    // A pool address, slot aligned, the whole mapping inside the pool.
    ASSERT_GE(m->dma_addr(), kPoolDma);
    EXPECT_LE(m->dma_addr() - kPoolDma + buf.size(), kPoolBytes);
    EXPECT_EQ((m->dma_addr() - kPoolDma) % kSlotSize, 0u);
    std::span<std::byte> d = dev(m->dma_addr(), buf.size());
    ASSERT_EQ(d.size(), buf.size());
    EXPECT_NE(d.data(), buf.data());
    EXPECT_EQ(first_mismatch(d, seed), -1);
    EXPECT_EQ(ops_->stats().slots_in_use, 3u);
    ASSERT_TRUE(m->unmap());
    EXPECT_EQ(ops_->stats().slots_in_use, 0u);
    ++seed;
  }
}

TEST_F(BounceOpsTest, ToDeviceNeverCopiesBack) {
  std::span<std::byte> buf = buf_.span(0, 3000);
  fill_pattern(buf, 1);
  auto m = ops_->map(buf.data(), buf.size(), Direction::kToDevice);
  ASSERT_TRUE(m);
  std::span<std::byte> d = dev(m->dma_addr(), buf.size());
  fill_pattern(d, 2);  // a (misbehaving) device writes a read-only buffer
  ASSERT_TRUE(m->sync_for_cpu());
  EXPECT_EQ(first_mismatch(buf, 1), -1);
  ASSERT_TRUE(m->sync_for_cpu(100, 50));
  EXPECT_EQ(first_mismatch(buf, 1), -1);
  ASSERT_TRUE(m->unmap());
  EXPECT_EQ(first_mismatch(buf, 1), -1);
}

TEST_F(BounceOpsTest, FromDeviceAndBidirectionalCopyBackOnUnmap) {
  for (Direction dir : {Direction::kFromDevice, Direction::kBidirectional}) {
    SCOPED_TRACE(direction_name(dir));
    std::span<std::byte> buf = buf_.span(64, 10000);
    fill_pattern(buf, 3);
    auto m = ops_->map(buf.data(), buf.size(), dir);
    ASSERT_TRUE(m);
    std::span<std::byte> d = dev(m->dma_addr(), buf.size());
    EXPECT_EQ(first_mismatch(d, 3), -1);
    fill_pattern(d, 4);
    // Nothing reaches the caller before sync/unmap.
    EXPECT_EQ(first_mismatch(buf, 3), -1);
    ASSERT_TRUE(m->unmap());
    EXPECT_EQ(first_mismatch(buf, 4), -1);
  }
}

TEST_F(BounceOpsTest, BidirectionalRoundTripWithSyncs) {
  std::span<std::byte> buf = buf_.span(0, 8192);
  fill_pattern(buf, 5);
  auto m = ops_->map(buf.data(), buf.size(), Direction::kBidirectional);
  ASSERT_TRUE(m);
  std::span<std::byte> d = dev(m->dma_addr(), buf.size());
  EXPECT_EQ(first_mismatch(d, 5), -1);
  fill_pattern(d, 6);
  ASSERT_TRUE(m->sync_for_cpu());
  EXPECT_EQ(first_mismatch(buf, 6), -1);
  fill_pattern(buf, 7);
  ASSERT_TRUE(m->sync_for_device());
  EXPECT_EQ(first_mismatch(d, 7), -1);
  fill_pattern(d, 8);
  ASSERT_TRUE(m->unmap());
  EXPECT_EQ(first_mismatch(buf, 8), -1);
}

// CVE-2022-0854: a device that writes only part of a from-device buffer must leave the
// caller's own bytes in the rest, never stale pool bytes from an earlier mapping.
TEST_F(BounceOpsTest, PartialDeviceWriteNeverLeaksStalePoolBytes) {
  for (Direction dir : {Direction::kFromDevice, Direction::kBidirectional}) {
    SCOPED_TRACE(direction_name(dir));
    // Dirty the pool: another mapping's data (seed 99) is left in the slots.
    std::span<std::byte> other = buf_.span(256 << 10, 4096);
    fill_pattern(other, 98);
    auto a = ops_->map(other.data(), other.size(), Direction::kToDevice);
    ASSERT_TRUE(a);
    const DmaAddr dirty_addr = a->dma_addr();
    fill_pattern(dev(dirty_addr, 4096), 99);
    ASSERT_TRUE(a->unmap());

    std::span<std::byte> buf = buf_.span(0, 4096);
    fill_pattern(buf, 2);
    auto b = ops_->map(buf.data(), buf.size(), dir);
    ASSERT_TRUE(b);
    // Lowest free run first: b reuses the dirty slots, which makes this test meaningful.
    ASSERT_EQ(b->dma_addr(), dirty_addr);
    std::span<std::byte> d = dev(b->dma_addr(), 4096);
    EXPECT_EQ(first_mismatch(d, 2), -1) << "map did not copy the caller's bytes";
    // The device writes only the first 100 bytes.
    fill_pattern(d.first(100), 3);
    ASSERT_TRUE(b->unmap());
    EXPECT_EQ(first_mismatch(buf.first(100), 3), -1);
    for (std::size_t i = 100; i < 4096; ++i) {
      ASSERT_EQ(buf[i], pattern_byte(2, i)) << "byte " << i << " is not the caller's";
    }
  }
}

TEST_F(BounceOpsTest, DeviceWritesBeyondTheMappingAreNotCopiedBack) {
  std::span<std::byte> buf = buf_.span(0, 4096);
  fill_pattern(buf, 1);
  auto m = ops_->map(buf.data(), 100, Direction::kFromDevice);
  ASSERT_TRUE(m);
  // The device scribbles over the whole slot, past the 100 mapped bytes.
  fill_pattern(dev(m->dma_addr(), kSlotSize), 2);
  ASSERT_TRUE(m->unmap());
  for (std::size_t i = 0; i < 100; ++i) ASSERT_EQ(buf[i], pattern_byte(2, i)) << i;
  for (std::size_t i = 100; i < 4096; ++i) ASSERT_EQ(buf[i], pattern_byte(1, i)) << i;
}

TEST_F(BounceOpsTest, SyncForCpuCopiesOnlyTheRange) {
  for (Direction dir : {Direction::kFromDevice, Direction::kBidirectional}) {
    SCOPED_TRACE(direction_name(dir));
    std::span<std::byte> buf = buf_.span(0, 1000);
    fill_pattern(buf, 1);
    auto m = ops_->map(buf.data(), buf.size(), dir);
    ASSERT_TRUE(m);
    std::span<std::byte> d = dev(m->dma_addr(), buf.size());
    fill_pattern(d, 2);
    ASSERT_TRUE(m->sync_for_cpu(100, 200));
    for (std::size_t i = 0; i < 1000; ++i) {
      const bool synced = i >= 100 && i < 300;
      ASSERT_EQ(buf[i], pattern_byte(synced ? 2 : 1, i)) << i;
    }
    ASSERT_TRUE(m->sync_for_cpu(900));  // to the end
    for (std::size_t i = 900; i < 1000; ++i) ASSERT_EQ(buf[i], pattern_byte(2, i)) << i;
    ASSERT_TRUE(m->sync_for_cpu(1000, 0));  // empty range at the end: valid, no-op
    for (std::size_t i = 300; i < 900; ++i) ASSERT_EQ(buf[i], pattern_byte(1, i)) << i;
    ASSERT_TRUE(m->unmap());
    EXPECT_EQ(first_mismatch(buf, 2), -1);
  }
}

TEST_F(BounceOpsTest, SyncForDeviceCopiesTheRangeToTheSlotForEveryDirection) {
  std::uint64_t seed = 20;
  for (Direction dir : kAllDirections) {
    SCOPED_TRACE(direction_name(dir));
    std::span<std::byte> buf = buf_.span(0, 3000);
    fill_pattern(buf, seed);
    auto m = ops_->map(buf.data(), buf.size(), dir);
    ASSERT_TRUE(m);
    std::span<std::byte> d = dev(m->dma_addr(), buf.size());
    fill_pattern(buf, seed + 1);  // the CPU updates its buffer while mapped
    EXPECT_EQ(first_mismatch(d, seed), -1);
    ASSERT_TRUE(m->sync_for_device(1000, 500));
    for (std::size_t i = 0; i < 3000; ++i) {
      const bool synced = i >= 1000 && i < 1500;
      ASSERT_EQ(d[i], pattern_byte(synced ? seed + 1 : seed, i)) << i;
    }
    ASSERT_TRUE(m->sync_for_device());
    EXPECT_EQ(first_mismatch(d, seed + 1), -1);
    ASSERT_TRUE(m->unmap());
    EXPECT_EQ(first_mismatch(buf, seed + 1), -1);
    seed += 2;
  }
}

TEST_F(BounceOpsTest, ReleaseThenUnmapRecord) {
  std::span<std::byte> buf = buf_.span(0, 700);
  fill_pattern(buf, 1);
  auto m = ops_->map(buf.data(), buf.size(), Direction::kFromDevice);
  ASSERT_TRUE(m);
  MappingRecord r = m->release();
  EXPECT_FALSE(m->mapped());
  EXPECT_EQ(ops_->stats().slots_in_use, 1u);
  fill_pattern(dev(r.addr, r.len), 2);
  ASSERT_TRUE(ops_->sync_record_for_cpu(r, 0, 10));
  EXPECT_EQ(first_mismatch(buf.first(10), 2), -1);
  ASSERT_TRUE(ops_->unmap_record(r));
  EXPECT_EQ(first_mismatch(buf, 2), -1);
  EXPECT_EQ(ops_->stats().slots_in_use, 0u);
}

TEST_F(BounceOpsTest, SmallMappingsTakeOneSlot) {
  std::vector<MappingRecord> rs;
  for (std::uint64_t len : {1u, 100u, 2047u, 2048u}) {
    auto r = ops_->map_record(buf_.data(), len, Direction::kToDevice);
    ASSERT_TRUE(r);
    rs.push_back(*r);
  }
  EXPECT_EQ(ops_->stats().slots_in_use, 4u);
  auto two = ops_->map_record(buf_.data(), 2049, Direction::kToDevice);
  ASSERT_TRUE(two);
  EXPECT_EQ(ops_->stats().slots_in_use, 6u);
  rs.push_back(*two);
  for (const auto& r : rs) ASSERT_TRUE(ops_->unmap_record(r));
  EXPECT_EQ(ops_->stats().slots_in_use, 0u);
}

TEST_F(BounceOpsTest, PageSizedMappingsArePageAligned) {
  // Occupy slot 0 so the next free slot (1) is not page aligned.
  auto first = ops_->map(buf_.data(), 10, Direction::kToDevice);
  ASSERT_TRUE(first);
  ASSERT_EQ(first->dma_addr(), kPoolDma);
  for (std::uint64_t len : {4096u, 4097u, 12288u, 65536u, 256u * 1024}) {
    SCOPED_TRACE(len);
    std::span<std::byte> buf = buf_.span(0x321, len);  // odd caller address
    fill_pattern(buf, len);
    auto m = ops_->map(buf.data(), len, Direction::kBidirectional);
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_EQ(m->dma_addr().value() % 4096, 0u);
    EXPECT_EQ(first_mismatch(dev(m->dma_addr(), len), len), -1);
  }
  // Below a page: slot aligned only, the lowest free slot.
  auto small = ops_->map(buf_.data(), 4095, Direction::kToDevice);
  ASSERT_TRUE(small);
  EXPECT_EQ(small->dma_addr(), kPoolDma + kSlotSize);
}

TEST_F(BounceOpsTest, MaxMappingSizeIsEnforced) {
  std::span<std::byte> buf = buf_.span(0, kMaxRun + 1);
  fill_pattern(buf, 1);
  auto max = ops_->map(buf.data(), kMaxRun, Direction::kBidirectional);
  ASSERT_TRUE(max) << max.error().message();
  EXPECT_EQ(ops_->stats().slots_in_use, kMaxSlotsPerRun);
  EXPECT_EQ(first_mismatch(dev(max->dma_addr(), kMaxRun), 1), -1);
  EXPECT_TRUE(max->unmap());
  EXPECT_EQ(ops_->map(buf.data(), kMaxRun + 1, Direction::kToDevice).error(), Errc::kTooLarge);
  EXPECT_EQ(ops_->map(buf.data(), UINT64_MAX, Direction::kToDevice).error(), Errc::kTooLarge);
  EXPECT_EQ(ops_->stats().failed_maps, 0u);
}

TEST_F(BounceOpsTest, MaxMappingSizeWithMaskAndWorstCaseOffset) {
  for (std::uint64_t mask : {0x7FFu, 0xFFFu, 0xFFFFu}) {
    SCOPED_TRACE(mask);
    auto ops = make({.areas = 1, .min_align_mask = mask});
    ASSERT_TRUE(ops);
    const std::uint64_t max = ops->max_mapping_size();
    // The caller's address has every in-slot mask bit set: the largest in-slot offset.
    std::span<std::byte> buf = buf_.span(0x7FF, max);
    fill_pattern(buf, mask);
    auto m = ops->map(buf.data(), max, Direction::kFromDevice);
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_EQ(m->dma_addr().value() & mask, reinterpret_cast<std::uintptr_t>(buf.data()) & mask);
    EXPECT_EQ(ops->stats().slots_in_use, kMaxSlotsPerRun);
    std::span<std::byte> d = device_bytes(*ops, m->dma_addr(), max);
    EXPECT_EQ(first_mismatch(d, mask), -1);
    fill_pattern(d, mask + 1);
    ASSERT_TRUE(m->unmap());
    EXPECT_EQ(first_mismatch(buf, mask + 1), -1);
    EXPECT_EQ(ops->map(buf.data(), max + 1, Direction::kToDevice).error(), Errc::kTooLarge);
  }
}

class BounceMinAlignMaskTest : public BounceOpsTest,
                               public ::testing::WithParamInterface<std::uint64_t> {};

TEST_P(BounceMinAlignMaskTest, LowAddressBitsArePreserved) {
  const std::uint64_t mask = GetParam();
  auto ops = make({.areas = 1, .min_align_mask = mask});
  ASSERT_TRUE(ops);
  // Keep a few slots busy so placement is not trivially at slot 0.
  std::vector<Mapping> keep;
  for (std::uint64_t off : {0x10u, 0x933u}) {
    auto k = ops->map(buf_.data() + off, 3000, Direction::kToDevice);
    ASSERT_TRUE(k);
    keep.push_back(std::move(*k));
  }
  std::uint64_t seed = 0;
  for (std::uint64_t off : {0x0u, 0x1u, 0x40u, 0x123u, 0x7FFu, 0x800u, 0x845u, 0xFFFu, 0x1801u,
                            0x2A3Cu, 0x7FFFu, 0xA801u, 0xFFFFu}) {
    for (std::uint64_t len : {1u, 77u, 2048u, 4096u, 10000u}) {
      for (Direction dir : kAllDirections) {
        SCOPED_TRACE(::testing::Message() << "off " << std::hex << off << " len " << std::dec << len
                                          << " " << direction_name(dir));
        std::span<std::byte> buf = buf_.span(off, len);
        fill_pattern(buf, ++seed);
        auto m = ops->map(buf.data(), len, dir);
        ASSERT_TRUE(m) << m.error().message();
        const auto cpu = reinterpret_cast<std::uintptr_t>(buf.data());
        EXPECT_EQ(m->dma_addr().value() & mask, cpu & mask);
        std::span<std::byte> d = device_bytes(*ops, m->dma_addr(), len);
        ASSERT_EQ(d.size(), len);
        EXPECT_EQ(first_mismatch(d, seed), -1);
        fill_pattern(d, seed + 1000);
        ASSERT_TRUE(m->unmap());
        const std::uint64_t want = dir == Direction::kToDevice ? seed : seed + 1000;
        EXPECT_EQ(first_mismatch(buf, want), -1);
      }
    }
  }
  keep.clear();
  EXPECT_EQ(ops->stats().slots_in_use, 0u);
}

INSTANTIATE_TEST_SUITE_P(Masks, BounceMinAlignMaskTest,
                         ::testing::Values(0x3F, 0x7FF, 0xFFF, 0x3FFF, 0xFFFF),
                         [](const auto& info) {
                           std::ostringstream name;
                           name << "Mask0x" << std::hex << info.param;
                           return name.str();
                         });

TEST_F(BounceOpsTest, ZeroLengthAndOverflow) {
  EXPECT_EQ(ops_->map(buf_.data(), 0, Direction::kToDevice).error(), Errc::kZeroLength);
  // Never dereferenced: rejected before any copy.
  void* near_top = reinterpret_cast<void*>(std::uintptr_t{UINT64_MAX - 10});
  for (Direction dir : kAllDirections) {
    EXPECT_EQ(ops_->map(near_top, 100, dir).error(), Errc::kOverflow);
  }
  BouncePoolStats s = ops_->stats();
  EXPECT_EQ(s.slots_in_use, 0u);
  EXPECT_EQ(s.maps, 0u);
  EXPECT_EQ(s.failed_maps, 0u);
}

TEST_F(BounceOpsTest, DoubleUnmapIsNotMapped) {
  auto m = ops_->map(buf_.data(), 100, Direction::kFromDevice);
  ASSERT_TRUE(m);
  MappingRecord r = m->record();
  ASSERT_TRUE(m->unmap());
  EXPECT_EQ(m->unmap().error(), Errc::kNotMapped);
  EXPECT_EQ(m->sync_for_cpu().error(), Errc::kNotMapped);
  // The same record through the provider interface.
  EXPECT_EQ(ops_->unmap_record(r).error(), Errc::kNotMapped);
  EXPECT_EQ(ops_->sync_record_for_cpu(r, 0, 10).error(), Errc::kNotMapped);
  EXPECT_EQ(ops_->sync_record_for_device(r, 0, 10).error(), Errc::kNotMapped);

  auto rec = ops_->map_record(buf_.data(), 100, Direction::kBidirectional);
  ASSERT_TRUE(rec);
  ASSERT_TRUE(ops_->unmap_record(*rec));
  EXPECT_EQ(ops_->unmap_record(*rec).error(), Errc::kNotMapped);
  EXPECT_EQ(ops_->stats().slots_in_use, 0u);
}

TEST_F(BounceOpsTest, ForgedRecordsAreUnknownAndHarmless) {
  std::span<std::byte> buf = buf_.span(0, 3000);  // 2 slots
  fill_pattern(buf, 1);
  auto m = ops_->map_record(buf.data(), buf.size(), Direction::kFromDevice);
  ASSERT_TRUE(m);
  // Another live mapping right after it.
  auto neighbour = ops_->map_record(buf_.data() + 8192, 100, Direction::kToDevice);
  ASSERT_TRUE(neighbour);
  std::span<std::byte> d = dev(m->addr, buf.size());
  fill_pattern(d, 2);

  auto expect_unknown = [&](MappingRecord f, const char* what) {
    SCOPED_TRACE(what);
    EXPECT_EQ(ops_->unmap_record(f).error(), Errc::kUnknownMapping);
    EXPECT_EQ(ops_->sync_record_for_cpu(f, 0, 1).error(), Errc::kUnknownMapping);
    EXPECT_EQ(ops_->sync_record_for_device(f, 0, 1).error(), Errc::kUnknownMapping);
  };
  MappingRecord f = *m;
  f.cookie = m->cookie + 1;  // names slot + 1
  expect_unknown(f, "cookie names another slot");
  f = *m;
  f.cookie = 0xFFFFFFFFull;  // slot index far beyond the pool
  expect_unknown(f, "cookie beyond the pool");
  f = *m;
  f.addr = m->addr + kSlotSize;
  expect_unknown(f, "addr in the next slot");
  f = *m;
  f.addr = DmaAddr{kPoolDma.value() - kSlotSize};
  expect_unknown(f, "addr below the pool");
  f = *m;
  f.addr = kPoolDma + kPoolBytes + 4096;
  expect_unknown(f, "addr past the pool");
  f = *m;
  f.cpu = m->cpu + 1;
  expect_unknown(f, "wrong cpu");
  f = *m;
  f.cpu = buf_.data() + 8192;  // the neighbour's buffer
  expect_unknown(f, "another mapping's cpu");
  f = *m;
  f.len = m->len + 1;
  expect_unknown(f, "wrong len");
  f = *m;
  f.len = 1;
  expect_unknown(f, "shorter len");
  f = *neighbour;
  f.cpu = m->cpu;
  f.len = m->len;
  expect_unknown(f, "neighbour's slot with m's buffer");

  // None of that touched the caller's buffer or freed anything.
  EXPECT_EQ(first_mismatch(buf, 1), -1);
  EXPECT_EQ(ops_->stats().slots_in_use, 3u);
  // The real records still work.
  ASSERT_TRUE(ops_->unmap_record(*m));
  EXPECT_EQ(first_mismatch(buf, 2), -1);
  ASSERT_TRUE(ops_->unmap_record(*neighbour));
  EXPECT_EQ(ops_->stats().slots_in_use, 0u);
}

// A record whose address points into the right head slot but at the wrong offset is not
// one these ops issued. Accepting it copies from the wrong bounce bytes and computes the
// slot count from the forged offset, freeing a slot another live mapping owns.
TEST_F(BounceOpsTest, ForgedInSlotOffsetIntoTheNextSlotIsRejected) {
  std::span<std::byte> a_buf = buf_.span(0, kSlotSize);
  fill_pattern(a_buf, 1);
  auto a = ops_->map_record(a_buf.data(), kSlotSize, Direction::kFromDevice);
  ASSERT_TRUE(a);
  ASSERT_EQ(a->addr, kPoolDma);
  auto b = ops_->map_record(buf_.data() + 8192, 100, Direction::kToDevice);  // slot 1
  ASSERT_TRUE(b);
  ASSERT_EQ(b->addr, kPoolDma + kSlotSize);

  MappingRecord forged = *a;
  forged.addr = a->addr + 1;
  auto r = ops_->unmap_record(forged);
  EXPECT_EQ(r.error(), Errc::kUnknownMapping);
  // b is still live: its slot must still be counted as in use.
  EXPECT_EQ(ops_->stats().slots_in_use, 2u);
  if (r) return;  // state is corrupted (b's slot was freed); unmapping b would abort
  EXPECT_EQ(first_mismatch(a_buf, 1), -1);
  ASSERT_TRUE(ops_->unmap_record(*a));
  ASSERT_TRUE(ops_->unmap_record(*b));
  EXPECT_EQ(ops_->stats().slots_in_use, 0u);
}

TEST_F(BounceOpsTest, ForgedInSlotOffsetWithMinAlignMaskIsRejected) {
  auto ops = make({.areas = 1, .min_align_mask = 0xFFF});
  ASSERT_TRUE(ops);
  std::span<std::byte> buf = buf_.span(0x100, 0x100);
  fill_pattern(buf, 1);
  auto m = ops->map_record(buf.data(), buf.size(), Direction::kFromDevice);
  ASSERT_TRUE(m);
  ASSERT_EQ((m->addr - kPoolDma) % kSlotSize, 0x100u);
  fill_pattern(device_bytes(*ops, m->addr, buf.size()), 2);

  MappingRecord forged = *m;
  forged.addr = DmaAddr{m->addr.value() - 0x100};  // same head slot, offset 0
  EXPECT_EQ(ops->sync_record_for_cpu(forged, 0, 0x100).error(), Errc::kUnknownMapping);
  EXPECT_EQ(first_mismatch(buf, 1), -1) << "sync copied from the wrong bounce bytes";
  auto r = ops->unmap_record(forged);
  EXPECT_EQ(r.error(), Errc::kUnknownMapping);
  if (r) return;
  ASSERT_TRUE(ops->unmap_record(*m));
  EXPECT_EQ(first_mismatch(buf, 2), -1);
}

TEST_F(BounceOpsTest, RecordFromAnotherInstanceIsUnknown) {
  std::vector<std::byte> other_pool(kPoolBytes);
  std::vector<std::byte> other_coh(kCoherentBytes);
  CoherentPool other_coherent(other_coh);
  auto other = BounceOps::Create({.areas = 1}, other_pool, DmaAddr{4ull << 30}, other_coherent,
                                 DmaAddr{5ull << 30});
  ASSERT_TRUE(other);
  std::span<std::byte> buf = buf_.span(0, 500);
  fill_pattern(buf, 1);
  auto mine = ops_->map_record(buf.data(), buf.size(), Direction::kFromDevice);
  auto theirs = (*other)->map_record(buf.data(), buf.size(), Direction::kFromDevice);
  ASSERT_TRUE(mine && theirs);
  EXPECT_EQ(ops_->unmap_record(*theirs).error(), Errc::kUnknownMapping);
  EXPECT_EQ((*other)->unmap_record(*mine).error(), Errc::kUnknownMapping);
  EXPECT_EQ(ops_->sync_record_for_cpu(*theirs, 0, 1).error(), Errc::kUnknownMapping);
  EXPECT_EQ(first_mismatch(buf, 1), -1);
  EXPECT_TRUE(ops_->unmap_record(*mine));
  EXPECT_TRUE((*other)->unmap_record(*theirs));
  EXPECT_EQ(ops_->stats().slots_in_use, 0u);
  EXPECT_EQ((*other)->stats().slots_in_use, 0u);
}

TEST_F(BounceOpsTest, SyncOutOfRange) {
  auto m = ops_->map(buf_.data(), 1000, Direction::kBidirectional);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->sync_for_cpu(1001).error(), Errc::kSyncOutOfRange);
  EXPECT_EQ(m->sync_for_cpu(0, 1001).error(), Errc::kSyncOutOfRange);
  EXPECT_EQ(m->sync_for_cpu(999, 2).error(), Errc::kSyncOutOfRange);
  EXPECT_EQ(m->sync_for_device(500, 501).error(), Errc::kSyncOutOfRange);
  EXPECT_EQ(m->sync_for_device(2000, 0).error(), Errc::kSyncOutOfRange);
  EXPECT_EQ(m->sync_for_device(1, UINT64_MAX - 1).error(), Errc::kSyncOutOfRange);
  EXPECT_TRUE(m->sync_for_cpu(999, 1));
  EXPECT_TRUE(m->sync_for_device(0, 1000));
}

TEST_F(BounceOpsTest, PoolFullIsRetryableAndRecovers) {
  std::vector<Mapping> maps;
  for (int i = 0; i < 4; ++i) {
    auto m = ops_->map(buf_.data(), kMaxRun, Direction::kToDevice);
    ASSERT_TRUE(m) << i;
    maps.push_back(std::move(*m));
  }
  EXPECT_EQ(ops_->stats().slots_in_use, 512u);
  for (Direction dir : kAllDirections) {
    auto full = ops_->map(buf_.data(), 1, dir);
    ASSERT_FALSE(full);
    EXPECT_EQ(full.error(), Errc::kPoolFull);
    EXPECT_TRUE(is_retryable(full.error()));
  }
  EXPECT_EQ(ops_->stats().failed_maps, 3u);
  maps.pop_back();  // RAII unmap frees 128 slots
  EXPECT_EQ(ops_->stats().slots_in_use, 384u);
  std::span<std::byte> buf = buf_.span(0, 1000);
  fill_pattern(buf, 1);
  auto again = ops_->map(buf.data(), buf.size(), Direction::kFromDevice);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(first_mismatch(dev(again->dma_addr(), 1000), 1), -1);
  EXPECT_EQ(ops_->stats().failed_maps, 3u);
}

TEST_F(BounceOpsTest, MappingDestructorAndMoveAssignmentUnmap) {
  std::span<std::byte> buf = buf_.span(0, 3000);
  fill_pattern(buf, 1);
  {
    auto m = ops_->map(buf.data(), buf.size(), Direction::kFromDevice);
    ASSERT_TRUE(m);
    EXPECT_EQ(ops_->stats().slots_in_use, 2u);
    fill_pattern(dev(m->dma_addr(), buf.size()), 2);
  }
  EXPECT_EQ(ops_->stats().slots_in_use, 0u);
  // The destructor's unmap copies back like unmap() does.
  EXPECT_EQ(first_mismatch(buf, 2), -1);

  auto a = ops_->map(buf.data(), 100, Direction::kToDevice);
  auto b = ops_->map(buf.data(), 5000, Direction::kToDevice);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(ops_->stats().slots_in_use, 4u);
  *a = std::move(*b);  // a's old mapping is unmapped
  EXPECT_EQ(ops_->stats().slots_in_use, 3u);
  EXPECT_FALSE(b->mapped());
  EXPECT_EQ(a->size(), 5000u);
  *a = Mapping();
  EXPECT_EQ(ops_->stats().slots_in_use, 0u);
}

TEST_F(BounceOpsTest, Statistics) {
  std::span<std::byte> buf = buf_.span(0, 10000);
  auto to = ops_->map(buf.data(), 1000, Direction::kToDevice);
  ASSERT_TRUE(to);
  EXPECT_EQ(ops_->stats().bytes_bounced, 1000u);  // copied in on map
  ASSERT_TRUE(to->sync_for_device(0, 10));
  EXPECT_EQ(ops_->stats().bytes_bounced, 1010u);
  ASSERT_TRUE(to->sync_for_cpu());  // to-device: nothing copied back
  EXPECT_EQ(ops_->stats().bytes_bounced, 1010u);

  auto from = ops_->map(buf.data(), 5000, Direction::kFromDevice);  // 3 slots
  ASSERT_TRUE(from);
  EXPECT_EQ(ops_->stats().bytes_bounced, 6010u);
  ASSERT_TRUE(from->sync_for_cpu(0, 20));
  EXPECT_EQ(ops_->stats().bytes_bounced, 6030u);
  BouncePoolStats s = ops_->stats();
  EXPECT_EQ(s.slots_in_use, 4u);
  EXPECT_EQ(s.high_water_slots, 4u);
  EXPECT_EQ(s.maps, 2u);

  ASSERT_TRUE(to->unmap());  // no copy back
  EXPECT_EQ(ops_->stats().bytes_bounced, 6030u);
  ASSERT_TRUE(from->unmap());  // copies 5000 back
  s = ops_->stats();
  EXPECT_EQ(s.bytes_bounced, 11030u);
  EXPECT_EQ(s.slots_in_use, 0u);
  EXPECT_EQ(s.high_water_slots, 4u);
  EXPECT_EQ(s.failed_maps, 0u);
  EXPECT_EQ(s.areas, 1u);
}

TEST_F(BounceOpsTest, CoherentAllocationsComeFromTheCoherentPool) {
  auto c = ops_->alloc_coherent(3000);
  ASSERT_TRUE(c) << c.error().message();
  ASSERT_GE(c->cpu(), coh_mem_.data());
  ASSERT_LE(c->cpu() + 3000, coh_mem_.data() + coh_mem_.size());
  EXPECT_EQ(c->dma_addr(), kCoherentDma + static_cast<std::uint64_t>(c->cpu() - coh_mem_.data()));
  for (std::size_t i = 0; i < 3000; ++i) ASSERT_EQ(c->cpu()[i], std::byte{0}) << i;
  std::memset(c->cpu(), 0x5A, 3000);
  CoherentRecord r = c->record();
  *c = CoherentBuffer();
  EXPECT_EQ(ops_->free_coherent_record(r).error(), Errc::kNotMapped);
  auto again = ops_->alloc_coherent(3000);
  ASSERT_TRUE(again);
  ASSERT_EQ(again->cpu(), r.cpu);
  for (std::size_t i = 0; i < 3000; ++i) ASSERT_EQ(again->cpu()[i], std::byte{0}) << i;
  EXPECT_EQ(ops_->alloc_coherent(0).error(), Errc::kZeroLength);
  // The bounce pool is not involved.
  EXPECT_EQ(ops_->stats().slots_in_use, 0u);
}

}  // namespace
}  // namespace vdma::dma

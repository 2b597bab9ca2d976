// A hostile driver against the split device queue: one named test per attack. The
// "driver" here writes raw descriptors into shared memory; the device must reject each
// malformed chain with its specific error (returning it with length 0), touch nothing
// outside the memory table, and keep serving the next valid chain.
#include <gtest/gtest.h>

#include <cstring>

#include "vdma/memory/guest_memory.h"
#include "vdma/virtq/split_device.h"

namespace vdma::virtq {
namespace {

constexpr std::uint32_t kSize = 16;
constexpr std::uint64_t kDesc = 0x0, kAvail = 0x1000, kUsed = 0x2000, kData = 0x10000;
constexpr std::uint64_t kRamBytes = 1 << 20;

class RawSplitDriver {
 public:
  explicit RawSplitDriver(bool indirect = true, bool private_tail = false) {
    auto r = memory::MemfdRegion::Create("hostile-ram", kRamBytes, memory::RegionKind::kShared);
    EXPECT_TRUE(mem_.add(Gpa{0}, std::move(*r)));
    if (private_tail) {
      auto p = memory::MemfdRegion::Create("private", 0x10000, memory::RegionKind::kPrivate);
      EXPECT_TRUE(mem_.add(Gpa{kRamBytes}, std::move(*p)));
    }
    tr_ = std::make_unique<GuestMemoryTranslator>(mem_);
    DeviceQueueConfig cfg{.rings = {DmaAddr{kDesc}, DmaAddr{kAvail}, DmaAddr{kUsed}, kSize - 1},
                          .features = {.indirect = indirect}};
    auto q = SplitDeviceQueue<GuestMemoryTranslator>::Create(*tr_, cfg);
    EXPECT_TRUE(q) << q.error().message();
    q_ = std::make_unique<SplitDeviceQueue<GuestMemoryTranslator>>(std::move(*q));
  }

  std::byte* host(std::uint64_t gpa) { return mem_.regions()[0].host + gpa; }
  SplitDesc* desc(std::uint64_t table = kDesc) { return reinterpret_cast<SplitDesc*>(host(table)); }
  void set(std::uint32_t i, std::uint64_t addr, std::uint32_t len, std::uint16_t flags,
           std::uint16_t next = 0, std::uint64_t table = kDesc) {
    desc(table)[i] = SplitDesc{addr, len, flags, next};
  }
  // Makes `head` available and publishes the index.
  void offer(std::uint16_t head) {
    auto* avail = reinterpret_cast<std::uint16_t*>(host(kAvail));
    avail[2 + (avail_idx_ % kSize)] = head;
    avail[1] = ++avail_idx_;
  }
  void jump_avail(std::uint16_t by) {
    avail_idx_ = static_cast<std::uint16_t>(avail_idx_ + by);
    reinterpret_cast<std::uint16_t*>(host(kAvail))[1] = avail_idx_;
  }
  SplitUsedElem used(std::uint16_t i) {
    return reinterpret_cast<SplitUsedElem*>(host(kUsed) + 4)[i % kSize];
  }
  std::uint16_t used_idx() { return reinterpret_cast<std::uint16_t*>(host(kUsed))[1]; }

  // Pops once and expects `e`; the rejected chain must come back with length 0.
  void expect_rejected(std::uint16_t head, Errc e) {
    const std::uint16_t before = q_->stats().completed;
    Chain c;
    auto r = q_->pop(c);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), e) << r.error().message();
    EXPECT_FALSE(q_->broken());
    EXPECT_EQ(q_->stats().completed, before + 1u);
    q_->publish_used();
    EXPECT_EQ(used(static_cast<std::uint16_t>(used_idx() - 1)).id, head);
    EXPECT_EQ(used(static_cast<std::uint16_t>(used_idx() - 1)).len, 0u);
  }
  // A valid one-descriptor chain is still served after an attack.
  void expect_still_serving() {
    set(15, kData, 64, 0);
    offer(15);
    Chain c;
    auto r = q_->pop(c);
    ASSERT_TRUE(r) << r.error().message();
    ASSERT_TRUE(*r);
    EXPECT_EQ(c.head, 15);
    EXPECT_EQ(c.readable_bytes, 64u);
    EXPECT_EQ(c.readable[0].host, host(kData));
    ASSERT_TRUE(q_->push_used(15, 0));
  }
  void expect_broken(Errc e) {
    Chain c;
    auto r = q_->pop(c);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), Errc::kBroken);
    EXPECT_TRUE(q_->broken());
    EXPECT_NE(q_->broken_reason().find(describe(e)), std::string::npos) << q_->broken_reason();
    EXPECT_EQ(q_->pop(c).error(), Errc::kBroken);  // stays broken
  }

  memory::GuestMemory mem_;
  std::unique_ptr<GuestMemoryTranslator> tr_;
  std::unique_ptr<SplitDeviceQueue<GuestMemoryTranslator>> q_;
  std::uint16_t avail_idx_ = 0;
};

TEST(SplitHostileDriverTest, DescriptorLoop) {
  RawSplitDriver d;
  d.set(0, kData, 16, kDescFNext, 1);
  d.set(1, kData, 16, kDescFNext, 0);
  d.offer(0);
  d.expect_rejected(0, Errc::kDescLoop);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, SelfLoop) {
  RawSplitDriver d;
  d.set(3, kData, 16, kDescFNext, 3);
  d.offer(3);
  d.expect_rejected(3, Errc::kDescLoop);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, ChainLongerThanQueueInIndirectTable) {
  RawSplitDriver d;
  constexpr std::uint64_t kTable = 0x3000;
  for (std::uint16_t i = 0; i < 4; ++i) d.set(i, kData, 8, kDescFNext, (i + 1) % 4, kTable);
  d.set(0, kTable, 4 * 16, kDescFIndirect);
  d.offer(0);
  d.expect_rejected(0, Errc::kDescLoop);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, NextIndexOutOfRange) {
  RawSplitDriver d;
  d.set(0, kData, 16, kDescFNext, kSize);
  d.offer(0);
  d.expect_rejected(0, Errc::kDescIndexOutOfRange);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, IndirectInsideIndirect) {
  RawSplitDriver d;
  constexpr std::uint64_t kTable = 0x3000;
  d.set(0, kData, 8, kDescFNext, 1, kTable);
  d.set(1, 0x4000, 32, kDescFIndirect, 0, kTable);
  d.set(2, kTable, 2 * 16, kDescFIndirect);
  d.offer(2);
  d.expect_rejected(2, Errc::kNestedIndirect);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, IndirectWithoutTheFeature) {
  RawSplitDriver d(/*indirect=*/false);
  d.set(0, kData, 8, 0, 0, 0x3000);
  d.set(2, 0x3000, 16, kDescFIndirect);
  d.offer(2);
  d.expect_rejected(2, Errc::kIndirectNotNegotiated);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, IndirectChainedWithNext) {
  RawSplitDriver d;
  d.set(0, kData, 8, 0, 0, 0x3000);
  d.set(2, 0x3000, 16, kDescFIndirect | kDescFNext, 3);
  d.set(3, kData, 8, 0);
  d.offer(2);
  d.expect_rejected(2, Errc::kIndirectWithNext);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, IndirectInTheMiddleOfAChain) {
  RawSplitDriver d;
  d.set(0, kData, 8, 0, 0, 0x3000);
  d.set(2, kData, 8, kDescFNext, 3);
  d.set(3, 0x3000, 16, kDescFIndirect);
  d.offer(2);
  d.expect_rejected(2, Errc::kIndirectWithNext);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, IndirectLengthNotMultipleOf16) {
  RawSplitDriver d;
  d.set(2, 0x3000, 24, kDescFIndirect);
  d.offer(2);
  d.expect_rejected(2, Errc::kIndirectBadLength);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, IndirectLengthZero) {
  RawSplitDriver d;
  d.set(2, 0x3000, 0, kDescFIndirect);
  d.offer(2);
  d.expect_rejected(2, Errc::kIndirectBadLength);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, IndirectTableLongerThanQueue) {
  RawSplitDriver d;
  d.set(2, 0x3000, (kSize + 1) * 16, kDescFIndirect);
  d.offer(2);
  d.expect_rejected(2, Errc::kIndirectBadLength);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, IndirectTableOutsideMemory) {
  RawSplitDriver d;
  d.set(2, kRamBytes - 16, 32, kDescFIndirect);
  d.offer(2);
  d.expect_rejected(2, Errc::kAddressNotMapped);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, ReadableAfterWritable) {
  RawSplitDriver d;
  d.set(0, kData, 16, kDescFWrite | kDescFNext, 1);
  d.set(1, kData + 16, 16, 0);
  d.offer(0);
  d.expect_rejected(0, Errc::kReadableAfterWritable);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, ZeroLengthDescriptor) {
  RawSplitDriver d;
  d.set(0, kData, 0, 0);
  d.offer(0);
  d.expect_rejected(0, Errc::kZeroLengthDesc);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, AddressPlusLengthOverflows) {
  RawSplitDriver d;
  d.set(0, UINT64_MAX - 8, 64, 0);
  d.offer(0);
  d.expect_rejected(0, Errc::kAddressOverflow);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, AddressOutsideMemoryTable) {
  RawSplitDriver d;
  d.set(0, 1ull << 40, 64, 0);
  d.offer(0);
  d.expect_rejected(0, Errc::kAddressNotMapped);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, BufferRunsPastTheEndOfMemory) {
  RawSplitDriver d;
  d.set(0, kRamBytes - 8, 64, kDescFWrite);
  d.offer(0);
  d.expect_rejected(0, Errc::kAddressNotMapped);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, AddressInAPrivateRegion) {
  RawSplitDriver d(/*indirect=*/true, /*private_tail=*/true);
  d.set(0, kRamBytes + 0x100, 64, 0);
  d.offer(0);
  d.expect_rejected(0, Errc::kAddressNotMapped);
  d.expect_still_serving();
}

TEST(SplitHostileDriverTest, HeadIndexOutOfRangeBreaksTheQueue) {
  RawSplitDriver d;
  d.offer(kSize + 3);
  d.expect_broken(Errc::kDescIndexOutOfRange);
}

TEST(SplitHostileDriverTest, AvailIndexJumpBreaksTheQueue) {
  RawSplitDriver d;
  d.jump_avail(kSize + 1);
  d.expect_broken(Errc::kAvailIdxJump);
}

TEST(SplitHostileDriverTest, HeadOfferedTwiceWhileInFlightBreaksTheQueue) {
  RawSplitDriver d;
  d.set(0, kData, 16, 0);
  d.offer(0);
  d.offer(0);
  Chain c;
  ASSERT_TRUE(*d.q_->pop(c));
  d.expect_broken(Errc::kHeadInFlight);
}

TEST(SplitHostileDriverTest, UsedForAChainNotInFlightIsRefused) {
  RawSplitDriver d;
  EXPECT_EQ(d.q_->push_used(4, 0).error(), Errc::kNotInFlight);
  EXPECT_EQ(d.q_->push_used(kSize + 4, 0).error(), Errc::kNotInFlight);
  d.expect_still_serving();
  EXPECT_EQ(d.q_->push_used(15, 0).error(), Errc::kNotInFlight);  // already returned
}

TEST(SplitHostileDriverTest, RingsOutsideMemoryAreRefusedAtCreate) {
  memory::GuestMemory mem;
  ASSERT_TRUE(mem.add(
      Gpa{0}, std::move(*memory::MemfdRegion::Create("r", 0x2000, memory::RegionKind::kShared))));
  GuestMemoryTranslator tr(mem);
  DeviceQueueConfig cfg{.rings = {DmaAddr{0}, DmaAddr{0x1000}, DmaAddr{0x1f00}, 255}};
  EXPECT_EQ(SplitDeviceQueue<GuestMemoryTranslator>::Create(tr, cfg).error(),
            Errc::kAddressNotMapped);
  cfg.rings.size_minus_one = 2;  // size 3: not a power of two
  EXPECT_EQ(SplitDeviceQueue<GuestMemoryTranslator>::Create(tr, cfg).error(),
            Errc::kInvalidQueueSize);
}

}  // namespace
}  // namespace vdma::virtq

#include "vdma/testing/loopback.h"

namespace vdma::virtq {
namespace {

// Behind an IOMMU: the driver mapped a buffer to-device (read-only IOVA) and then flips
// the descriptor to device-writable. The device's write must be refused by permission.
TEST(SplitHostileDriverTest, WriteIntoReadOnlyIovaIsDenied) {
  auto lb = testing::Loopback<testing::SplitRing>::Create(
      {.platform = dma::kIommuPlatform, .queue_size = 16});
  ASSERT_TRUE(lb) << lb.error().message();
  std::byte* buf = *(*lb)->guest().alloc_ram(256);
  std::array<Segment, 1> seg{{{buf, 256}}};
  ASSERT_TRUE((*lb)->driver().add_buffers(seg, {}, 1));
  (*lb)->driver().kick_prepare();
  // Find the descriptor ring through the IOMMU, as the device would.
  IommuTranslator tr(*(*lb)->guest().iommu(), (*lb)->guest().memory());
  auto* desc = reinterpret_cast<SplitDesc*>(
      *tr.translate((*lb)->driver().addresses().desc, 16 * 16, memory::Access::kRead));
  desc[0].flags |= kDescFWrite;
  Chain c;
  auto r = (*lb)->device().pop(c);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), Errc::kAccessDenied);
  EXPECT_FALSE((*lb)->device().broken());
  // The rejected chain comes back to the driver with nothing written.
  (*lb)->device().publish_used();
  auto u = (*lb)->driver().get_used();
  ASSERT_TRUE(u && u->has_value());
  EXPECT_EQ((*u)->len, 0u);
}

}  // namespace
}  // namespace vdma::virtq

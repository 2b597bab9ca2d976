// A hostile driver against the packed device queue: malicious descriptors written
// straight into the ring. One named test per attack; the queue keeps serving.
#include <gtest/gtest.h>

#include "packed_test_util.h"

namespace vdma::virtq {
namespace {

using namespace packed_test;  // NOLINT: test scaffolding

class HostileDriverTest : public ::testing::Test {
 protected:
  void setup(dma::Platform p, bool indirect, std::uint32_t size = 4) {
    TearDown();  // mappings go before the ops that made them
    lb_ = make({.platform = p, .queue_size = size, .indirect = indirect});
    ASSERT_TRUE(lb_);
    ring_ = raw_ring(*lb_);
    buf_ = *lb_->guest().alloc_ram(8192);
    auto m = lb_->ops().map(buf_, 4096, dma::Direction::kToDevice);
    auto w = lb_->ops().map(buf_ + 4096, 4096, dma::Direction::kFromDevice);
    ASSERT_TRUE(m && w);
    rd_ = std::move(*m);
    wr_ = std::move(*w);
    PlatformTranslator tr(p.iommu ? lb_->guest().iommu() : nullptr, lb_->guest().memory());
    rd_host_ = *tr.translate(rd_.dma_addr(), 4096, memory::Access::kRead);
    wr_host_ = *tr.translate(wr_.dma_addr(), 4096, memory::Access::kWrite);
    table_ = *lb_->guest().alloc_ram(4096);
    pos_ = used_pos_ = 0;
    wrap_ = used_wrap_ = true;
  }
  void SetUp() override { setup(dma::kTraditional, true); }
  void TearDown() override {
    if (table_map_.mapped()) {
      EXPECT_TRUE(table_map_.unmap());
    }
    if (rd_.mapped()) {
      EXPECT_TRUE(rd_.unmap());
    }
    if (wr_.mapped()) {
      EXPECT_TRUE(wr_.unmap());
    }
  }

  PackedDesc readable(std::uint32_t len = 64, std::uint16_t extra = 0) const {
    return {rd_.dma_addr().value(), len, 0, extra};
  }
  PackedDesc writable(std::uint32_t len = 64) const {
    return {wr_.dma_addr().value(), len, 0, kDescFWrite};
  }
  // An indirect table in driver RAM with `entries`, mapped to-device.
  PackedDesc indirect(const std::vector<PackedDesc>& entries, std::uint32_t len = 0) {
    std::memcpy(table_, entries.data(), entries.size() * sizeof(PackedDesc));
    if (table_map_.mapped()) {
      EXPECT_TRUE(table_map_.unmap());
    }
    table_map_ = std::move(*lb_->ops().map(table_, 4096, dma::Direction::kToDevice));
    return {table_map_.dma_addr().value(),
            len ? len : static_cast<std::uint32_t>(entries.size() * sizeof(PackedDesc)), 0,
            kDescFIndirect};
  }
  // Makes `chain` available the way a driver does: NEXT on all but the last, the ID in
  // every descriptor, AVAIL/USED for our wrap counter, the head's flags written last.
  // `raw` keeps the given NEXT bits as they are.
  void post(std::vector<PackedDesc> chain, std::uint16_t id, bool raw = false) {
    const std::uint32_t head = pos_;
    std::uint16_t head_flags = 0;
    for (std::size_t i = 0; i < chain.size(); ++i) {
      PackedDesc d = chain[i];
      if (!raw && i + 1 < chain.size()) d.flags |= kDescFNext;
      d.flags |= wrap_ ? kPackedDescFAvail : kPackedDescFUsed;
      d.id = id;
      if (i == 0) {
        head_flags = d.flags;
        d.flags = ring_.desc[pos_].flags;
      }
      ring_.desc[pos_] = d;
      if (++pos_ == ring_.size) {
        pos_ = 0;
        wrap_ = !wrap_;
      }
    }
    ring_.desc[head].flags = head_flags;
  }
  // Expects the next pop to reject the chain with `why`, the chain to come back with
  // length 0 at the used position, and the queue to keep serving a valid chain.
  void expect_rejected(Errc why, std::uint16_t id) {
    const std::uint32_t used_pos = used_pos_;
    Chain c;
    auto r = lb_->device().pop(c);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), why) << r.error().message();
    EXPECT_FALSE(lb_->device().broken());
    EXPECT_EQ(lb_->device().stats().rejected, 1u);
    EXPECT_EQ(lb_->device().in_flight(), 0u);
    lb_->device().publish_used();
    const PackedDesc u = ring_.desc[used_pos];
    EXPECT_TRUE(is_used_desc(u, used_wrap_));
    EXPECT_EQ(u.id, id);
    EXPECT_EQ(u.len, 0u);
    EXPECT_FALSE(u.flags & kDescFWrite);
    sync_used_to_avail();
    expect_serves_valid_chain();
  }
  void expect_serves_valid_chain() {
    post({readable(100), writable(200)}, 2);
    Chain c;
    auto r = lb_->device().pop(c);
    ASSERT_TRUE(r) << r.error().message();
    ASSERT_TRUE(*r);
    EXPECT_EQ(c.head, 2);
    EXPECT_EQ(c.ring_descs, 2);
    EXPECT_EQ(c.readable_bytes, 100u);
    EXPECT_EQ(c.writable_bytes, 200u);
    EXPECT_EQ(c.readable[0].host, rd_host_);
    EXPECT_EQ(c.writable[0].host, wr_host_);
    ASSERT_TRUE(lb_->device().push_used(c.head, 200));
    lb_->device().publish_used();
    EXPECT_TRUE(is_used_desc(ring_.desc[used_pos_], used_wrap_));
    EXPECT_TRUE(ring_.desc[used_pos_].flags & kDescFWrite);
    EXPECT_EQ(ring_.desc[used_pos_].len, 200u);
  }
  // With nothing in flight, the device's used position has caught up with ours.
  void sync_used_to_avail() {
    used_pos_ = pos_;
    used_wrap_ = wrap_;
  }
  void expect_broken(Errc why) {
    Chain c;
    auto r = lb_->device().pop(c);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), Errc::kBroken);
    EXPECT_TRUE(lb_->device().broken());
    EXPECT_NE(lb_->device().broken_reason().find(describe(why)), std::string::npos)
        << lb_->device().broken_reason();
    EXPECT_EQ(lb_->device().pop(c).error(), Errc::kBroken);
    EXPECT_EQ(lb_->device().push_used(0, 0).error(), Errc::kBroken);
    EXPECT_FALSE(lb_->device().publish_used());
  }

  std::unique_ptr<LB> lb_;
  RawRing ring_;
  std::byte* buf_ = nullptr;
  std::byte* table_ = nullptr;
  std::byte* rd_host_ = nullptr;
  std::byte* wr_host_ = nullptr;
  dma::Mapping rd_, wr_, table_map_;
  std::uint32_t pos_ = 0, used_pos_ = 0;
  bool wrap_ = true, used_wrap_ = true;
};

TEST_F(HostileDriverTest, ValidChainsServeAcrossTheWrap) {
  for (int i = 0; i < 9; ++i) {
    expect_serves_valid_chain();
    sync_used_to_avail();
  }
  EXPECT_EQ(lb_->device().last_avail_idx(), (wrap_ ? 0x8000 : 0) | pos_);
}

TEST_F(HostileDriverTest, ChainLongerThanTheQueue) {
  // Every descriptor of the ring says NEXT: no descriptor ends the chain.
  std::vector<PackedDesc> all(4, readable(8, kDescFNext));
  post(all, 1, /*raw=*/true);
  expect_rejected(Errc::kChainTooLong, 1);
}

TEST_F(HostileDriverTest, NestedIndirect) {
  post({indirect({readable(), indirect({readable()})})}, 1);
  expect_rejected(Errc::kNestedIndirect, 1);
}

TEST_F(HostileDriverTest, IndirectNotNegotiated) {
  setup(dma::kTraditional, /*indirect=*/false);
  post({indirect({readable(), writable()})}, 1);
  expect_rejected(Errc::kIndirectNotNegotiated, 1);
}

TEST_F(HostileDriverTest, IndirectWithNext) {
  post({indirect({readable()}), writable()}, 1);
  expect_rejected(Errc::kIndirectWithNext, 1);
}

TEST_F(HostileDriverTest, IndirectAfterADirectDescriptor) {
  post({readable(), indirect({writable()})}, 3);
  expect_rejected(Errc::kIndirectWithNext, 3);
}

TEST_F(HostileDriverTest, IndirectZeroLength) {
  PackedDesc d = indirect({readable()});
  d.len = 0;
  post({d}, 1);
  expect_rejected(Errc::kIndirectBadLength, 1);
}

TEST_F(HostileDriverTest, IndirectLengthNotAMultipleOf16) {
  post({indirect({readable(), readable()}, 17)}, 1);
  expect_rejected(Errc::kIndirectBadLength, 1);
}

TEST_F(HostileDriverTest, IndirectTableLongerThanTheQueue) {
  post({indirect(std::vector<PackedDesc>(5, readable()))}, 1);  // queue size 4
  expect_rejected(Errc::kIndirectBadLength, 1);
}

TEST_F(HostileDriverTest, ReadableAfterWritable) {
  post({writable(), readable()}, 1);
  expect_rejected(Errc::kReadableAfterWritable, 1);
}

TEST_F(HostileDriverTest, ReadableAfterWritableInIndirectTable) {
  post({indirect({readable(), writable(), readable()})}, 1);
  expect_rejected(Errc::kReadableAfterWritable, 1);
}

TEST_F(HostileDriverTest, ZeroLengthDescriptor) {
  post({readable(0), writable()}, 1);
  expect_rejected(Errc::kZeroLengthDesc, 1);
}

TEST_F(HostileDriverTest, AddressOverflow) {
  post({PackedDesc{~0ull - 10, 100, 0, 0}}, 1);
  expect_rejected(Errc::kAddressOverflow, 1);
}

TEST_F(HostileDriverTest, AddressNotMapped) {
  post({PackedDesc{0x7000'0000'0000ull, 64, 0, 0}}, 1);
  expect_rejected(Errc::kAddressNotMapped, 1);
}

TEST_F(HostileDriverTest, PrivateGuestMemoryIsNotMapped) {
  setup(dma::kSecureGuest, true);
  // A guest-physical address of private RAM: never shared with the device.
  const Gpa private_gpa = *lb_->guest().memory().gpa_of(buf_, 64);
  post({PackedDesc{private_gpa.value(), 64, 0, 0}}, 1);
  expect_rejected(Errc::kAddressNotMapped, 1);
}

TEST_F(HostileDriverTest, WriteToAReadOnlyIommuMappingIsDenied) {
  setup(dma::kIommuPlatform, true);
  PackedDesc d = readable();
  d.flags = kDescFWrite;  // the IOVA only permits device reads
  post({d}, 1);
  expect_rejected(Errc::kAccessDenied, 1);
}

TEST_F(HostileDriverTest, RejectedChainAcrossTheWrapReturnsAtTheRightPlace) {
  expect_serves_valid_chain();  // positions 0-1
  sync_used_to_avail();
  post({readable(), readable(0), writable()}, 0);  // positions 2, 3, 0 (next lap)
  expect_rejected(Errc::kZeroLengthDesc, 0);
  EXPECT_EQ(lb_->device().last_avail_idx(), (wrap_ ? 0x8000 : 0) | pos_);
}

TEST_F(HostileDriverTest, BufferIdOutOfRangeBreaks) {
  post({readable()}, 4);
  expect_broken(Errc::kDescIndexOutOfRange);
}

TEST_F(HostileDriverTest, BufferIdReusedWhileInFlightBreaks) {
  post({readable()}, 1);
  Chain c;
  ASSERT_TRUE(*lb_->device().pop(c));
  post({writable()}, 1);
  expect_broken(Errc::kHeadInFlight);
}

TEST_F(HostileDriverTest, MoreDescriptorsInFlightThanTheRingBreaks) {
  post({readable(), writable()}, 0);
  post({readable(), writable()}, 1);
  Chain c;
  ASSERT_TRUE(*lb_->device().pop(c));
  ASSERT_TRUE(*lb_->device().pop(c));
  post({readable()}, 2);  // overwrites descriptor 0, still in flight
  expect_broken(Errc::kAvailIdxJump);
}

TEST_F(HostileDriverTest, PushUsedChecksInFlight) {
  EXPECT_EQ(lb_->device().push_used(1, 0).error(), Errc::kNotInFlight);
  EXPECT_EQ(lb_->device().push_used(4, 0).error(), Errc::kNotInFlight);
  post({readable()}, 1);
  Chain c;
  ASSERT_TRUE(*lb_->device().pop(c));
  ASSERT_TRUE(lb_->device().push_used(1, 0));
  EXPECT_EQ(lb_->device().push_used(1, 0).error(), Errc::kNotInFlight);
  EXPECT_FALSE(lb_->device().broken());
}

TEST_F(HostileDriverTest, DeviceResumesFromVringBase) {
  // A device created at (wrap 0, position 3) serves a chain the driver put there.
  using D = PackedDeviceQueue<PlatformTranslator>;
  PlatformTranslator tr(nullptr, lb_->guest().memory());
  auto dev = D::Create(
      tr, {.rings = lb_->driver().addresses(), .features = lb_->driver().features()}, 0x0003);
  ASSERT_TRUE(dev);
  pos_ = 3;
  wrap_ = false;
  post({readable(), writable()}, 0);  // positions 3, 0
  Chain c;
  ASSERT_TRUE(*dev->pop(c));
  EXPECT_EQ(c.ring_descs, 2);
  EXPECT_EQ(dev->last_avail_idx(), 0x8001);
  ASSERT_TRUE(dev->push_used(0, 0));
  dev->publish_used();
  EXPECT_TRUE(is_used_desc(ring_.desc[3], false));
}

}  // namespace
}  // namespace vdma::virtq

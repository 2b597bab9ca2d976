// Back-end protocol conformance: negotiation, the ring-state rules, config space, status,
// memory slots, and what a request the state refuses gets (a failure ack, or the
// connection closed when the front end asked for no reply).
#include "backend_test_util.h"

namespace vdma::vhost::test {
namespace {

class BackendProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override { ch.emplace(server.connect()); }
  Scripted s() { return Scripted{*ch}; }
  void own_and_ack() {
    ASSERT_TRUE(s().send(FrontendRequest::kSetOwner));
    ASSERT_EQ(
        *s().acked(FrontendRequest::kSetProtocolFeatures,
                   U64{ProtocolFeatureSet{kProtocolFReplyAck, kProtocolFConfig, kProtocolFStatus,
                                          kProtocolFConfigureMemSlots, kProtocolFBackendReq}
                           .bits()}),
        0u);
  }
  ServerUnderTest server;
  std::optional<Channel> ch;
};

TEST_F(BackendProtocolTest, OffersProtocolFeaturesBitAndDeviceFeatures) {
  auto f = s().get_u64(FrontendRequest::kGetFeatures);
  ASSERT_TRUE(f);
  const FeatureSet offered = FeatureSet::FromBits(*f);
  EXPECT_TRUE(offered.has(kVhostUserFProtocolFeatures));
  EXPECT_TRUE(offered.has(kVirtioFVersion1));
  EXPECT_TRUE(offered.has(kVirtioFAccessPlatform));
  auto p = s().get_u64(FrontendRequest::kGetProtocolFeatures);
  ASSERT_TRUE(p);
  const auto pf = ProtocolFeatureSet::FromBits(*p);
  for (ProtocolFeature want :
       {kProtocolFMq, kProtocolFReplyAck, kProtocolFConfig, kProtocolFBackendReq,
        kProtocolFResetDevice, kProtocolFConfigureMemSlots, kProtocolFStatus}) {
    EXPECT_TRUE(pf.has(want)) << protocol_feature_name(want);
  }
  EXPECT_EQ(*s().get_u64(FrontendRequest::kGetQueueNum), 2u);
  EXPECT_EQ(*s().get_u64(FrontendRequest::kGetMaxMemSlots), BackendMemory::kMaxSlots);
}

TEST_F(BackendProtocolTest, UnofferedFeatureIsRefusedWithAFailureAck) {
  own_and_ack();
  const FeatureSet bogus{kVirtioFVersion1, Feature{40}};
  EXPECT_EQ(*s().acked(FrontendRequest::kSetFeatures, U64{bogus.bits()}), 1u);
  // The connection is still served.
  EXPECT_TRUE(s().get_u64(FrontendRequest::kGetFeatures));
}

TEST_F(BackendProtocolTest, UnofferedProtocolFeatureIsRefused) {
  ASSERT_TRUE(s().send(FrontendRequest::kSetOwner));
  ASSERT_EQ(*s().acked(FrontendRequest::kSetProtocolFeatures,
                       U64{ProtocolFeatureSet{kProtocolFReplyAck}.bits()}),
            0u);
  EXPECT_EQ(*s().acked(FrontendRequest::kSetProtocolFeatures,
                       U64{ProtocolFeatureSet{kProtocolFReplyAck, kProtocolFPagefault}.bits()}),
            1u);
}

TEST_F(BackendProtocolTest, StateChangeBeforeSetOwnerClosesTheConnection) {
  ASSERT_TRUE(s().send(FrontendRequest::kSetVringNum, VringState{0, 64}));
  EXPECT_TRUE(closed_by_peer(*ch));
  EXPECT_TRUE(server.wait_served(1));
}

TEST_F(BackendProtocolTest, StateChangeBeforeSetOwnerWithNeedReplyIsNacked) {
  EXPECT_EQ(*s().acked(FrontendRequest::kSetVringNum, VringState{0, 64}), 1u);
}

TEST_F(BackendProtocolTest, VringIndexBeyondQueuesIsRefused) {
  own_and_ack();
  EXPECT_EQ(*s().acked(FrontendRequest::kSetVringNum, VringState{2, 64}), 1u);
  EXPECT_EQ(*s().acked(FrontendRequest::kSetVringNum, VringState{1, 64}), 0u);
}

TEST_F(BackendProtocolTest, SplitQueueSizeMustBeAPowerOfTwo) {
  own_and_ack();
  EXPECT_EQ(*s().acked(FrontendRequest::kSetVringNum, VringState{0, 100}), 1u);
  EXPECT_EQ(*s().acked(FrontendRequest::kSetVringNum, VringState{0, 0}), 1u);
  EXPECT_EQ(*s().acked(FrontendRequest::kSetVringNum, VringState{0, 65536}), 1u);
  EXPECT_EQ(*s().acked(FrontendRequest::kSetVringNum, VringState{0, 32768}), 0u);
}

TEST_F(BackendProtocolTest, ConfigSpaceReadsTheDevice) {
  own_and_ack();
  ConfigSpace req{.offset = 8, .flags = 0, .data = std::vector<std::uint8_t>(4)};
  auto r = s().get(FrontendRequest::kGetConfig, req);
  ASSERT_TRUE(r) << r.error().message();
  const auto& cfg = std::get<ConfigSpace>(*r);
  EXPECT_EQ(cfg.data, (std::vector<std::uint8_t>{8, 9, 10, 11}));
}

TEST_F(BackendProtocolTest, ConfigWriteTheDeviceRefusesIsNacked) {
  own_and_ack();
  ConfigSpace w{.offset = 0, .flags = 0, .data = {1, 2}};
  EXPECT_EQ(*s().acked(FrontendRequest::kSetConfig, w), 1u);
}

TEST_F(BackendProtocolTest, StatusZeroStopsButKeepsTheNegotiation) {
  own_and_ack();
  const FeatureSet f{kVirtioFVersion1, kVhostUserFProtocolFeatures};
  ASSERT_EQ(*s().acked(FrontendRequest::kSetFeatures, U64{f.bits()}), 0u);
  ASSERT_EQ(*s().acked(FrontendRequest::kSetStatus, U64{0x0f}), 0u);
  // QEMU 7.2 stops a device this way: status 0, then ENABLE 0 and GET_VRING_BASE.
  ASSERT_EQ(*s().acked(FrontendRequest::kSetStatus, U64{0}), 0u);
  EXPECT_EQ(*s().acked(FrontendRequest::kSetVringEnable, VringState{0, 0}), 0u);
  auto base = s().get(FrontendRequest::kGetVringBase, VringState{0, 0});
  ASSERT_TRUE(base) << base.error().message();
}

TEST_F(BackendProtocolTest, StatusRoundTrips) {
  own_and_ack();
  ASSERT_EQ(*s().acked(FrontendRequest::kSetStatus, U64{0x0f}), 0u);
  EXPECT_EQ(*s().get_u64(FrontendRequest::kGetStatus), 0x0fu);
  ASSERT_EQ(*s().acked(FrontendRequest::kSetStatus, U64{0}), 0u);
  EXPECT_EQ(*s().get_u64(FrontendRequest::kGetStatus), 0u);
  EXPECT_EQ(*s().acked(FrontendRequest::kSetStatus, U64{0x100}), 1u);
}

TEST_F(BackendProtocolTest, AddAndRemoveMemoryRegions) {
  own_and_ack();
  auto a = memory::MemfdRegion::Create("a", 1 << 20, memory::RegionKind::kShared);
  auto b = memory::MemfdRegion::Create("b", 1 << 20, memory::RegionKind::kShared);
  ASSERT_TRUE(a && b);
  const MemoryRegion ra{0x0, 1 << 20, reinterpret_cast<std::uint64_t>(a->host()), 0};
  const MemoryRegion rb{0x100000, 1 << 20, reinterpret_cast<std::uint64_t>(b->host()), 0};
  EXPECT_EQ(*s().acked(FrontendRequest::kAddMemReg, MemoryRegionFd{ra, dup_fd(*a->shareable_fd())}),
            0u);
  EXPECT_EQ(*s().acked(FrontendRequest::kAddMemReg, MemoryRegionFd{rb, dup_fd(*b->shareable_fd())}),
            0u);
  // The same guest range again overlaps.
  EXPECT_EQ(*s().acked(FrontendRequest::kAddMemReg, MemoryRegionFd{ra, dup_fd(*a->shareable_fd())}),
            1u);
  EXPECT_EQ(*s().acked(FrontendRequest::kRemMemReg, MemoryRegionFd{ra, UniqueFd()}), 0u);
  EXPECT_EQ(*s().acked(FrontendRequest::kRemMemReg, MemoryRegionFd{ra, UniqueFd()}), 1u);
}

TEST_F(BackendProtocolTest, UnsupportedRequestIsNackedNotFatal) {
  own_and_ack();
  EXPECT_EQ(*s().acked(FrontendRequest::kNetSetMtu, U64{1500}), 1u);
  EXPECT_TRUE(s().get_u64(FrontendRequest::kGetFeatures));
}

TEST_F(BackendProtocolTest, UnsupportedRequestWithAReplyBodyClosesTheConnection) {
  own_and_ack();
  ASSERT_TRUE(s().send(FrontendRequest::kPostcopyAdvise));  // its reply would be an fd
  EXPECT_TRUE(closed_by_peer(*ch));
}

TEST_F(BackendProtocolTest, IotlbWithoutAccessPlatformIsRefused) {
  own_and_ack();
  IotlbMsg m{.iova = 0x1000,
             .size = 0x1000,
             .user_addr = 0x2000,
             .perm = IotlbPerm::kRead,
             .type = IotlbType::kUpdate};
  EXPECT_EQ(*s().acked(FrontendRequest::kIotlbMsg, m), 1u);
}

TEST_F(BackendProtocolTest, AccessPlatformNeedsReplyAckAndBackendReq) {
  ASSERT_TRUE(s().send(FrontendRequest::kSetOwner));
  ASSERT_TRUE(s().send(FrontendRequest::kSetProtocolFeatures,
                       U64{ProtocolFeatureSet{kProtocolFReplyAck}.bits()}));
  const FeatureSet f{kVirtioFVersion1, kVirtioFAccessPlatform, kVhostUserFProtocolFeatures};
  EXPECT_EQ(*s().acked(FrontendRequest::kSetFeatures, U64{f.bits()}), 1u);
}

TEST_F(BackendProtocolTest, OtherConnectionsKeepWorkingWhenOneIsClosed) {
  Channel other = server.connect();
  ASSERT_TRUE(s().send(FrontendRequest::kSetVringNum, VringState{0, 64}));  // before owner
  EXPECT_TRUE(closed_by_peer(*ch));
  Scripted o{other};
  EXPECT_TRUE(o.get_u64(FrontendRequest::kGetFeatures));
}

}  // namespace
}  // namespace vdma::vhost::test

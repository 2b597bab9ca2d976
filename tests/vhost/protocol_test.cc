// Request numbers, names, flag bits and protocol features against the spec.
#include "vdma/vhost/protocol.h"

#include <gtest/gtest.h>

#include <string>

#include "vdma/vhost/errors.h"

namespace vdma::vhost {
namespace {

TEST(ProtocolTest, FrontendRequestNumbers) {
  EXPECT_EQ(to_wire(FrontendRequest::kGetFeatures), 1u);
  EXPECT_EQ(to_wire(FrontendRequest::kSetMemTable), 5u);
  EXPECT_EQ(to_wire(FrontendRequest::kSetVringKick), 12u);
  EXPECT_EQ(to_wire(FrontendRequest::kGetProtocolFeatures), 15u);
  EXPECT_EQ(to_wire(FrontendRequest::kSetBackendReqFd), 21u);
  EXPECT_EQ(to_wire(FrontendRequest::kIotlbMsg), 22u);
  EXPECT_EQ(to_wire(FrontendRequest::kGetConfig), 24u);
  EXPECT_EQ(to_wire(FrontendRequest::kGetInflightFd), 31u);
  EXPECT_EQ(to_wire(FrontendRequest::kResetDevice), 34u);
  EXPECT_EQ(to_wire(FrontendRequest::kAddMemReg), 37u);
  EXPECT_EQ(to_wire(FrontendRequest::kSetStatus), 39u);
  EXPECT_EQ(to_wire(FrontendRequest::kCheckDeviceState), 43u);
}

TEST(ProtocolTest, BackendRequestNumbers) {
  EXPECT_EQ(to_wire(BackendRequest::kIotlbMsg), 1u);
  EXPECT_EQ(to_wire(BackendRequest::kConfigChangeMsg), 2u);
  EXPECT_EQ(to_wire(BackendRequest::kVringHostNotifierMsg), 3u);
  EXPECT_EQ(to_wire(BackendRequest::kSharedObjectLookup), 8u);
}

TEST(ProtocolTest, WireNumbersMapBackOnlyWhenDefined) {
  EXPECT_FALSE(frontend_request_from_wire(0));
  EXPECT_FALSE(frontend_request_from_wire(44));
  EXPECT_EQ(frontend_request_from_wire(22), FrontendRequest::kIotlbMsg);
  EXPECT_FALSE(backend_request_from_wire(0));
  EXPECT_FALSE(backend_request_from_wire(9));
  EXPECT_EQ(backend_request_from_wire(4), BackendRequest::kVringCall);
}

TEST(ProtocolTest, RequestNames) {
  EXPECT_STREQ(request_name(FrontendRequest::kSetMemTable), "SET_MEM_TABLE");
  EXPECT_STREQ(request_name(FrontendRequest::kCheckDeviceState), "CHECK_DEVICE_STATE");
  EXPECT_STREQ(request_name(FrontendRequest::kSetBackendReqFd), "SET_BACKEND_REQ_FD");
  EXPECT_STREQ(request_name(BackendRequest::kIotlbMsg), "BACKEND_IOTLB_MSG");
  EXPECT_STREQ(request_name(static_cast<FrontendRequest>(99)), "UNKNOWN");
}

TEST(ProtocolTest, HeaderFlags) {
  EXPECT_EQ(kVersion1, 0x1u);
  EXPECT_EQ(kFlagReply, 0x4u);
  EXPECT_EQ(kFlagNeedReply, 0x8u);
  EXPECT_EQ(kVringNoFdFlag, 0x100u);
  EXPECT_EQ(kMaxMemoryRegions, 8u);
}

TEST(ProtocolTest, ProtocolFeatureBits) {
  EXPECT_EQ(kProtocolFMq.bit, 0);
  EXPECT_EQ(kProtocolFLogShmfd.bit, 1);
  EXPECT_EQ(kProtocolFReplyAck.bit, 3);
  EXPECT_EQ(kProtocolFBackendReq.bit, 5);
  EXPECT_EQ(kProtocolFConfig.bit, 9);
  EXPECT_EQ(kProtocolFBackendSendFd.bit, 10);
  EXPECT_EQ(kProtocolFInflightShmfd.bit, 12);
  EXPECT_EQ(kProtocolFConfigureMemSlots.bit, 15);
  EXPECT_EQ(kProtocolFStatus.bit, 16);
  EXPECT_EQ(kProtocolFSharedObject.bit, 18);
  EXPECT_EQ(kProtocolFDeviceState.bit, 19);
  EXPECT_EQ(kVhostUserFProtocolFeatures.bit, 30);
}

TEST(ProtocolTest, ProtocolFeatureSetOperations) {
  constexpr ProtocolFeatureSet a{kProtocolFMq, kProtocolFReplyAck};
  static_assert(a.bits() == 0x9);
  EXPECT_TRUE(a.has(kProtocolFReplyAck));
  EXPECT_FALSE(a.has(kProtocolFConfig));
  const ProtocolFeatureSet b = ProtocolFeatureSet::FromBits(0x209);
  EXPECT_TRUE(b.contains(a));
  EXPECT_FALSE(a.contains(b));
  EXPECT_EQ(a & b, a);
  EXPECT_EQ(a | b, b);
  EXPECT_EQ(b.without(kProtocolFConfig), a);
  EXPECT_EQ(a.with(kProtocolFConfig), b);
  EXPECT_EQ(a.to_string(), "0x9 {MQ,REPLY_ACK}");
  EXPECT_EQ(ProtocolFeatureSet::FromBits(1ULL << 40).to_string(), "0x10000000000 {bit40}");
}

TEST(ProtocolTest, ProtocolFeaturesBitIsAVirtioFeature) {
  const FeatureSet offered{kVirtioFVersion1, kVhostUserFProtocolFeatures};
  EXPECT_EQ(offered.bits(), (1ULL << 32) | (1ULL << 30));
}

// ---- Errors. ----

TEST(ErrorsTest, EveryVariantIsDescribed) {
  for (int v = static_cast<int>(Errc::kShortHeader); v <= static_cast<int>(Errc::kInvalidField);
       ++v) {
    const std::string text = make_error_code(static_cast<Errc>(v)).message();
    EXPECT_FALSE(text.empty());
    EXPECT_NE(text, "unknown vhost error") << v;
  }
  EXPECT_STREQ(vhost_category().name(), "vdma.vhost");
}

TEST(ErrorsTest, FramingErrorsCloseTheConnection) {
  for (Errc e : {Errc::kShortHeader, Errc::kBadVersion, Errc::kPayloadTooLarge, Errc::kTruncated,
                 Errc::kPeerClosed, Errc::kTooManyFds, Errc::kMisplacedFds, Errc::kReplyMismatch,
                 Errc::kMissingReplyFlag}) {
    EXPECT_TRUE(should_close_connection(make_error_code(e))) << make_error_code(e).message();
  }
}

TEST(ErrorsTest, OneBadMessageDoesNotForceAClose) {
  for (Errc e :
       {Errc::kBadFlags, Errc::kReplyFlagOnRequest, Errc::kUnknownRequest, Errc::kSizeMismatch,
        Errc::kFdCountMismatch, Errc::kTooManyRegions, Errc::kZeroSizeRegion, Errc::kRegionOverflow,
        Errc::kRegionOverlap, Errc::kBadIotlbType, Errc::kBadIotlbPerm, Errc::kIotlbOverflow,
        Errc::kConfigOutOfRange, Errc::kInvalidField}) {
    EXPECT_FALSE(should_close_connection(make_error_code(e))) << make_error_code(e).message();
  }
}

TEST(ErrorsTest, SocketErrorsCloseTheConnection) {
  EXPECT_TRUE(should_close_connection(std::error_code(EPIPE, std::system_category())));
  EXPECT_TRUE(should_close_connection(std::error_code(ECONNRESET, std::system_category())));
  EXPECT_FALSE(should_close_connection(std::error_code{}));
}

}  // namespace
}  // namespace vdma::vhost

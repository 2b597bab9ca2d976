// Codec round trips: every request and reply of both channels encodes and decodes back
// to the same payload, and the bytes on the wire have the spec's layout.
#include <gtest/gtest.h>

#include <cstring>

#include "test_util.h"
#include "vdma/vhost/message.h"

namespace vdma::vhost {
namespace {

using test::all_backend_requests;
using test::all_frontend_requests;
using test::same_payload;

template <class T>
T read_at(const std::vector<std::uint8_t>& bytes, std::size_t offset) {
  T v{};
  EXPECT_LE(offset + sizeof(T), bytes.size());
  if (offset + sizeof(T) <= bytes.size()) std::memcpy(&v, bytes.data() + offset, sizeof(T));
  return v;
}

TEST(CodecTest, EveryFrontendRequestRoundTrips) {
  for (FrontendRequest r : all_frontend_requests()) {
    SCOPED_TRACE(request_name(r));
    const Payload expected = test::sample_request(r);
    Message m = encode(r, test::sample_request(r));
    EXPECT_EQ(m.header.request, to_wire(r));
    EXPECT_EQ(m.header.flags, kVersion1);
    EXPECT_EQ(m.header.size, m.payload.size());
    auto d = decode_frontend_message(std::move(m));
    ASSERT_TRUE(d) << d.error().message();
    EXPECT_EQ(d->request, r);
    EXPECT_FALSE(d->need_reply);
    EXPECT_TRUE(same_payload(d->payload, expected));
  }
}

TEST(CodecTest, NeedReplyFlagRoundTrips) {
  for (FrontendRequest r : all_frontend_requests()) {
    SCOPED_TRACE(request_name(r));
    Message m = encode(r, test::sample_request(r), NeedReply::kYes);
    EXPECT_EQ(m.header.flags, kVersion1 | kFlagNeedReply);
    EXPECT_TRUE(m.need_reply());
    EXPECT_FALSE(m.is_reply());
    auto d = decode_frontend_message(std::move(m));
    ASSERT_TRUE(d) << d.error().message();
    EXPECT_TRUE(d->need_reply);
  }
}

TEST(CodecTest, DecodingInMemoryKeepsTheVeryDescriptors) {
  Payload p = test::sample_request(FrontendRequest::kSetMemTable);
  std::vector<int> raw;
  for (const UniqueFd& fd : std::get<MemoryTable>(p).fds) raw.push_back(fd.get());
  auto d = decode_frontend_message(encode(FrontendRequest::kSetMemTable, std::move(p)));
  ASSERT_TRUE(d);
  const auto& table = std::get<MemoryTable>(d->payload);
  ASSERT_EQ(table.fds.size(), raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) EXPECT_EQ(table.fds[i].get(), raw[i]);
}

TEST(CodecTest, EveryReplyRoundTrips) {
  for (FrontendRequest r : all_frontend_requests()) {
    SCOPED_TRACE(request_name(r));
    const Payload expected = test::sample_reply(r);
    Message m = encode_reply(r, test::sample_reply(r));
    EXPECT_EQ(m.header.request, to_wire(r));
    EXPECT_EQ(m.header.flags, kVersion1 | kFlagReply);
    EXPECT_TRUE(m.is_reply());
    auto d = decode_reply(r, std::move(m));
    ASSERT_TRUE(d) << d.error().message();
    EXPECT_EQ(d->request, r);
    EXPECT_TRUE(same_payload(d->payload, expected));
  }
}

TEST(CodecTest, EveryBackendRequestRoundTrips) {
  for (BackendRequest r : all_backend_requests()) {
    SCOPED_TRACE(request_name(r));
    const Payload expected = test::sample_backend_request(r);
    Message m = encode(r, test::sample_backend_request(r), NeedReply::kYes);
    EXPECT_EQ(m.header.request, to_wire(r));
    auto d = decode_backend_message(std::move(m));
    ASSERT_TRUE(d) << d.error().message();
    EXPECT_EQ(d->request, r);
    EXPECT_TRUE(d->need_reply);
    EXPECT_TRUE(same_payload(d->payload, expected));
  }
}

TEST(CodecTest, EveryBackendReplyRoundTrips) {
  for (BackendRequest r : all_backend_requests()) {
    SCOPED_TRACE(request_name(r));
    const Payload expected = test::sample_backend_reply(r);
    auto d = decode_backend_reply(r, encode_reply(r, test::sample_backend_reply(r)));
    ASSERT_TRUE(d) << d.error().message();
    EXPECT_TRUE(same_payload(d->payload, expected));
  }
}

TEST(CodecTest, AckCarriesTheStatus) {
  auto d =
      decode_reply(FrontendRequest::kSetVringAddr, encode_ack(FrontendRequest::kSetVringAddr, 0x5));
  ASSERT_TRUE(d);
  EXPECT_EQ(std::get<U64>(d->payload).value, 0x5u);
  auto b =
      decode_backend_reply(BackendRequest::kIotlbMsg, encode_ack(BackendRequest::kIotlbMsg, 0));
  ASSERT_TRUE(b);
  EXPECT_EQ(std::get<U64>(b->payload).value, 0u);
}

TEST(CodecTest, PostcopyMemTableReplyRoundTrips) {
  MemoryTable t;
  t.regions = {test::region(0, 0x1000), test::region(0x2000, 0x1000)};
  Message m = encode_reply(FrontendRequest::kSetMemTable, std::move(t));
  EXPECT_EQ(m.header.size, 8u + 2 * 32);
  EXPECT_TRUE(m.fds.empty());
  auto d = decode_reply(FrontendRequest::kSetMemTable, std::move(m), {.postcopy = true});
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(std::get<MemoryTable>(d->payload).regions.size(), 2u);
}

TEST(CodecTest, PostcopyAddMemRegReplyRoundTrips) {
  const MemoryRegion r{0x1000, 0x1000, 0x7f00'0000'0000, 0};
  auto d = decode_reply(FrontendRequest::kAddMemReg,
                        encode_reply(FrontendRequest::kAddMemReg, MemoryRegionFd{r, UniqueFd{}}),
                        {.postcopy = true});
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(std::get<MemoryRegionFd>(d->payload).region, r);
}

TEST(CodecTest, GetConfigErrorReplyIsEmpty) {
  Message m = encode_reply(FrontendRequest::kGetConfig, NoPayload{});
  EXPECT_EQ(m.header.size, 0u);
  auto d = decode_reply(FrontendRequest::kGetConfig, std::move(m));
  ASSERT_TRUE(d);
  EXPECT_TRUE(std::holds_alternative<NoPayload>(d->payload));
}

TEST(CodecTest, SetLogBaseReplyIsEmptyOrU64) {
  auto empty = decode_reply(FrontendRequest::kSetLogBase,
                            encode_reply(FrontendRequest::kSetLogBase, NoPayload{}));
  ASSERT_TRUE(empty);
  EXPECT_TRUE(std::holds_alternative<NoPayload>(empty->payload));
  auto u64 = decode_reply(FrontendRequest::kSetLogBase,
                          encode_reply(FrontendRequest::kSetLogBase, U64{0}));
  ASSERT_TRUE(u64);
  EXPECT_TRUE(std::holds_alternative<U64>(u64->payload));
}

TEST(CodecTest, DeviceStateReplyWithoutFdSetsTheNoFdFlag) {
  Message m = encode_reply(FrontendRequest::kSetDeviceStateFd, StatusFd{0, UniqueFd{}});
  EXPECT_EQ(read_at<std::uint64_t>(m.payload, 0), kDeviceStateNoFdFlag);
  EXPECT_TRUE(m.fds.empty());
  auto d = decode_reply(FrontendRequest::kSetDeviceStateFd, std::move(m));
  ASSERT_TRUE(d);
  EXPECT_FALSE(std::get<StatusFd>(d->payload).fd);
  // An error code without a descriptor is a valid reply too.
  auto err = decode_reply(FrontendRequest::kSetDeviceStateFd,
                          encode_reply(FrontendRequest::kSetDeviceStateFd, StatusFd{5, {}}));
  ASSERT_TRUE(err);
  EXPECT_EQ(std::get<StatusFd>(err->payload).status, 5u | kDeviceStateNoFdFlag);
}

TEST(CodecTest, InflightReplyWithoutAreaHasNoFd) {
  auto d = decode_reply(
      FrontendRequest::kGetInflightFd,
      encode_reply(FrontendRequest::kGetInflightFd, InflightFd{InflightDescription{}, UniqueFd{}}));
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_FALSE(std::get<InflightFd>(d->payload).fd);
}

TEST(CodecTest, SharedObjectNotFoundReplyHasNoFd) {
  auto d = decode_reply(FrontendRequest::kGetSharedObject,
                        encode_reply(FrontendRequest::kGetSharedObject, SharedObject{}));
  ASSERT_TRUE(d);
  EXPECT_FALSE(std::get<SharedObject>(d->payload).fd);
}

TEST(CodecTest, SharedObjectLookupFailureHasNoFd) {
  auto d = decode_backend_reply(
      BackendRequest::kSharedObjectLookup,
      encode_reply(BackendRequest::kSharedObjectLookup, StatusFd{1, UniqueFd{}}));
  ASSERT_TRUE(d);
  EXPECT_EQ(std::get<StatusFd>(d->payload).status, 1u);
}

TEST(CodecTest, HostNotifierRemovalHasNoFd) {
  Message m = encode(BackendRequest::kVringHostNotifierMsg, VringAreaFd{3, 0, 0, UniqueFd{}});
  EXPECT_EQ(read_at<std::uint64_t>(m.payload, 0), 3u | kVringNoFdFlag);
  auto d = decode_backend_message(std::move(m));
  ASSERT_TRUE(d);
  EXPECT_EQ(std::get<VringAreaFd>(d->payload).index, 3);
}

TEST(CodecTest, RemMemRegNeverSendsAnFd) {
  Message m =
      encode(FrontendRequest::kRemMemReg, test::sample_request(FrontendRequest::kRemMemReg));
  EXPECT_TRUE(m.fds.empty());
}

// ---- Wire layout against the spec. ----

TEST(WireLayoutTest, HeaderIsRequestFlagsSize) {
  Message m = encode(FrontendRequest::kGetFeatures);
  const Header h = m.header;
  std::uint8_t bytes[kHeaderSize];
  std::memcpy(bytes, &h, sizeof(bytes));
  const std::uint8_t expected[kHeaderSize] = {1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(std::memcmp(bytes, expected, sizeof(bytes)), 0);
  auto parsed = parse_header(bytes);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(*parsed, h);
}

TEST(WireLayoutTest, U64PayloadIsEightBytes) {
  Message m = encode(FrontendRequest::kSetFeatures, U64{0x1122334455667788});
  ASSERT_EQ(m.payload.size(), 8u);
  EXPECT_EQ(m.payload[0], 0x88);
  EXPECT_EQ(m.payload[7], 0x11);
}

TEST(WireLayoutTest, VringAddrIsFortyBytes) {
  Message m = encode(FrontendRequest::kSetVringAddr,
                     VringAddr{7, kVringFLog, 0x1000, 0x2000, 0x3000, 0x4000});
  ASSERT_EQ(m.payload.size(), 40u);
  EXPECT_EQ(read_at<std::uint32_t>(m.payload, 0), 7u);
  EXPECT_EQ(read_at<std::uint32_t>(m.payload, 4), kVringFLog);
  EXPECT_EQ(read_at<std::uint64_t>(m.payload, 8), 0x1000u);   // descriptor table
  EXPECT_EQ(read_at<std::uint64_t>(m.payload, 16), 0x2000u);  // used ring
  EXPECT_EQ(read_at<std::uint64_t>(m.payload, 24), 0x3000u);  // available ring
  EXPECT_EQ(read_at<std::uint64_t>(m.payload, 32), 0x4000u);  // log
}

TEST(WireLayoutTest, VringKickCarriesIndexAndNoFdFlag) {
  Message with_fd = encode(FrontendRequest::kSetVringKick, VringFd{4, test::make_eventfd()});
  EXPECT_EQ(read_at<std::uint64_t>(with_fd.payload, 0), 4u);
  EXPECT_EQ(with_fd.fds.size(), 1u);
  Message polling = encode(FrontendRequest::kSetVringKick, VringFd{4, UniqueFd{}});
  EXPECT_EQ(read_at<std::uint64_t>(polling.payload, 0), 0x104u);
  EXPECT_TRUE(polling.fds.empty());
}

TEST(WireLayoutTest, MemTableIsCountPaddingThenRegions) {
  Message m =
      encode(FrontendRequest::kSetMemTable, test::sample_request(FrontendRequest::kSetMemTable));
  ASSERT_EQ(m.payload.size(), 8u + 3 * 32);
  EXPECT_EQ(read_at<std::uint32_t>(m.payload, 0), 3u);
  EXPECT_EQ(read_at<std::uint32_t>(m.payload, 4), 0u);
  EXPECT_EQ(read_at<std::uint64_t>(m.payload, 8 + 32), 0x100000u);             // region 1 gpa
  EXPECT_EQ(read_at<std::uint64_t>(m.payload, 8 + 32 + 8), 0x200000u);         // region 1 size
  EXPECT_EQ(read_at<std::uint64_t>(m.payload, 8 + 32 + 16), 0x7f0000100000u);  // user address
  EXPECT_EQ(m.fds.size(), 3u);
}

TEST(WireLayoutTest, SingleRegionHasEightBytesOfPadding) {
  Message m =
      encode(FrontendRequest::kAddMemReg, test::sample_request(FrontendRequest::kAddMemReg));
  ASSERT_EQ(m.payload.size(), 40u);
  EXPECT_EQ(read_at<std::uint64_t>(m.payload, 0), 0u);
  EXPECT_EQ(read_at<std::uint64_t>(m.payload, 8), 0x1'0000'0000u);
  EXPECT_EQ(read_at<std::uint64_t>(m.payload, 32), 0x1000u);  // mmap offset
}

TEST(WireLayoutTest, IotlbMessageIsThirtyTwoBytes) {
  Message m = encode(FrontendRequest::kIotlbMsg, test::sample_request(FrontendRequest::kIotlbMsg));
  ASSERT_EQ(m.payload.size(), 32u);
  EXPECT_EQ(read_at<std::uint64_t>(m.payload, 0), 0xfee00000u);
  EXPECT_EQ(read_at<std::uint64_t>(m.payload, 8), 0x1000u);
  EXPECT_EQ(m.payload[24], 3);  // perm: read/write
  EXPECT_EQ(m.payload[25], 2);  // type: update
  for (std::size_t i = 26; i < 32; ++i) EXPECT_EQ(m.payload[i], 0);
}

TEST(WireLayoutTest, ConfigIsHeaderThenData) {
  Message m =
      encode(FrontendRequest::kSetConfig, test::sample_request(FrontendRequest::kSetConfig));
  ASSERT_EQ(m.payload.size(), 12u + 8);
  EXPECT_EQ(read_at<std::uint32_t>(m.payload, 0), 20u);  // offset
  EXPECT_EQ(read_at<std::uint32_t>(m.payload, 4), 8u);   // size
  EXPECT_EQ(read_at<std::uint32_t>(m.payload, 8), kConfigFlagMigration);
  EXPECT_EQ(m.payload[12], 1);
  EXPECT_EQ(m.payload[19], 8);
}

TEST(WireLayoutTest, LogInflightAreaAndDeviceStateSizes) {
  EXPECT_EQ(encode(FrontendRequest::kSetLogBase, test::sample_request(FrontendRequest::kSetLogBase))
                .payload.size(),
            16u);
  Message inflight = encode(FrontendRequest::kGetInflightFd,
                            test::sample_request(FrontendRequest::kGetInflightFd));
  ASSERT_EQ(inflight.payload.size(), 24u);
  EXPECT_EQ(read_at<std::uint16_t>(inflight.payload, 16), 4u);    // num queues
  EXPECT_EQ(read_at<std::uint16_t>(inflight.payload, 18), 256u);  // queue size
  EXPECT_EQ(encode(BackendRequest::kVringHostNotifierMsg,
                   test::sample_backend_request(BackendRequest::kVringHostNotifierMsg))
                .payload.size(),
            24u);
  Message state = encode(FrontendRequest::kSetDeviceStateFd,
                         test::sample_request(FrontendRequest::kSetDeviceStateFd));
  ASSERT_EQ(state.payload.size(), 8u);
  EXPECT_EQ(read_at<std::uint32_t>(state.payload, 0), kTransferLoad);
  EXPECT_EQ(encode(FrontendRequest::kGetSharedObject,
                   test::sample_request(FrontendRequest::kGetSharedObject))
                .payload.size(),
            16u);
}

TEST(WireLayoutTest, RequestsWithoutPayloadAreHeaderOnly) {
  for (FrontendRequest r : {FrontendRequest::kGetFeatures, FrontendRequest::kSetOwner,
                            FrontendRequest::kResetOwner, FrontendRequest::kGetProtocolFeatures,
                            FrontendRequest::kGetQueueNum, FrontendRequest::kPostcopyAdvise,
                            FrontendRequest::kPostcopyListen, FrontendRequest::kPostcopyEnd,
                            FrontendRequest::kResetDevice, FrontendRequest::kGetMaxMemSlots,
                            FrontendRequest::kGetStatus, FrontendRequest::kCheckDeviceState}) {
    SCOPED_TRACE(request_name(r));
    Message m = encode(r);
    EXPECT_EQ(m.header.size, 0u);
    EXPECT_TRUE(m.payload.empty());
    EXPECT_TRUE(m.fds.empty());
  }
}

}  // namespace
}  // namespace vdma::vhost

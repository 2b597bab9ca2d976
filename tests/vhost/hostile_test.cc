// A hostile peer against the decoder: one named test per malformed message, each
// expecting its specific error. Every test also checks that no descriptor leaked: the
// decoder owns what it is given and closes it on every error path.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <string>

#include "test_util.h"
#include "vdma/vhost/message.h"

namespace vdma::vhost {
namespace {

using R = FrontendRequest;
constexpr std::uint64_t kMax64 = std::numeric_limits<std::uint64_t>::max();

template <class T>
std::vector<std::uint8_t> bytes_of(const T& v) {
  std::vector<std::uint8_t> b(sizeof(T));
  std::memcpy(b.data(), &v, sizeof(T));
  return b;
}

std::vector<std::uint8_t> concat(std::vector<std::uint8_t> a, const std::vector<std::uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A message as a hostile peer may send it: any request number, flags and bytes.
Message raw(std::uint32_t request, std::vector<std::uint8_t> payload, std::size_t num_fds = 0,
            std::uint32_t flags = kVersion1) {
  Message m;
  m.header = Header{request, flags, static_cast<std::uint32_t>(payload.size())};
  m.payload = std::move(payload);
  m.fds = test::make_fds(num_fds);
  return m;
}
Message raw(R r, std::vector<std::uint8_t> payload, std::size_t num_fds = 0,
            std::uint32_t flags = kVersion1) {
  return raw(to_wire(r), std::move(payload), num_fds, flags);
}
Message raw(BackendRequest r, std::vector<std::uint8_t> payload, std::size_t num_fds = 0,
            std::uint32_t flags = kVersion1) {
  return raw(to_wire(r), std::move(payload), num_fds, flags);
}

std::error_code frontend_error(Message m) {
  auto d = decode_frontend_message(std::move(m));
  return d ? std::error_code{} : d.error();
}
std::error_code backend_error(Message m) {
  auto d = decode_backend_message(std::move(m));
  return d ? std::error_code{} : d.error();
}
std::error_code reply_error(R sent, Message m, ReplyOptions options = {}) {
  auto d = decode_reply(sent, std::move(m), options);
  return d ? std::error_code{} : d.error();
}
std::error_code backend_reply_error(BackendRequest sent, Message m) {
  auto d = decode_backend_reply(sent, std::move(m));
  return d ? std::error_code{} : d.error();
}

std::vector<std::uint8_t> mem_table(std::uint32_t num_regions,
                                    const std::vector<MemoryRegion>& regions) {
  auto b = bytes_of(MemoryTableHeader{num_regions, 0});
  for (const MemoryRegion& r : regions) b = concat(b, bytes_of(r));
  return b;
}
Message mem_table_message(const std::vector<MemoryRegion>& regions) {
  return raw(R::kSetMemTable, mem_table(static_cast<std::uint32_t>(regions.size()), regions),
             regions.size());
}

std::vector<std::uint8_t> iotlb(std::uint64_t iova, std::uint64_t size, std::uint64_t uaddr,
                                std::uint8_t perm, std::uint8_t type) {
  auto b = bytes_of(IotlbMsg{iova, size, uaddr, IotlbPerm::kNone, IotlbType::kMiss, {}});
  b[24] = perm;
  b[25] = type;
  return b;
}

std::vector<std::uint8_t> config(std::uint32_t offset, std::uint32_t size, std::uint32_t flags,
                                 std::size_t data_bytes) {
  return concat(bytes_of(ConfigHeader{offset, size, flags}),
                std::vector<std::uint8_t>(data_bytes, 0xcc));
}

class HostileTest : public ::testing::Test {
 protected:
  void SetUp() override { fds_before_ = test::open_fd_count(); }
  void TearDown() override {
    EXPECT_EQ(test::open_fd_count(), fds_before_) << "a descriptor leaked";
  }
  int fds_before_ = 0;
};

// ---- Header. ----

TEST_F(HostileTest, ShortHeader) {
  const std::uint8_t bytes[kHeaderSize] = {1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(parse_header(std::span(bytes, 11)).error(), Errc::kShortHeader);
  EXPECT_EQ(parse_header({}).error(), Errc::kShortHeader);
  EXPECT_TRUE(parse_header(bytes));
}

TEST_F(HostileTest, WrongVersion) {
  for (std::uint32_t flags : {0x0u, 0x2u, 0x3u, 0x6u}) {
    SCOPED_TRACE(flags);
    EXPECT_EQ(frontend_error(raw(R::kGetFeatures, {}, 0, flags)), Errc::kBadVersion);
    EXPECT_EQ(backend_error(raw(BackendRequest::kConfigChangeMsg, {}, 0, flags)),
              Errc::kBadVersion);
  }
}

TEST_F(HostileTest, ReplyBitOnRequest) {
  EXPECT_EQ(frontend_error(raw(R::kGetFeatures, {}, 0, kVersion1 | kFlagReply)),
            Errc::kReplyFlagOnRequest);
  EXPECT_EQ(backend_error(raw(BackendRequest::kConfigChangeMsg, {}, 0, kVersion1 | kFlagReply)),
            Errc::kReplyFlagOnRequest);
}

TEST_F(HostileTest, UndefinedFlagBits) {
  EXPECT_EQ(frontend_error(raw(R::kGetFeatures, {}, 0, kVersion1 | 0x10)), Errc::kBadFlags);
  EXPECT_EQ(frontend_error(raw(R::kGetFeatures, {}, 0, kVersion1 | 0x8000'0000)), Errc::kBadFlags);
}

TEST_F(HostileTest, HugeSizeField) {
  Message m = raw(R::kSetMemTable, {}, 2);
  m.header.size = 0xffff'ffff;
  EXPECT_EQ(frontend_error(std::move(m)), Errc::kPayloadTooLarge);
  Message just_over = raw(R::kCreateCryptoSession, std::vector<std::uint8_t>(kMaxPayloadSize + 1));
  EXPECT_EQ(frontend_error(std::move(just_over)), Errc::kPayloadTooLarge);
}

TEST_F(HostileTest, SizeFieldAboveTheBytesGiven) {
  Message m = raw(R::kSetFeatures, bytes_of(std::uint64_t{1}));
  m.header.size = 16;
  EXPECT_EQ(frontend_error(std::move(m)), Errc::kTruncated);
}

TEST_F(HostileTest, SizeFieldBelowTheBytesGiven) {
  Message m = raw(R::kSetFeatures, bytes_of(std::uint64_t{1}));
  m.header.size = 4;
  EXPECT_EQ(frontend_error(std::move(m)), Errc::kSizeMismatch);
}

TEST_F(HostileTest, UnknownRequestNumber) {
  for (std::uint32_t request : {0u, 44u, 45u, 1000u, 0xffff'ffffu}) {
    SCOPED_TRACE(request);
    EXPECT_EQ(frontend_error(raw(request, {}, 1)), Errc::kUnknownRequest);
  }
  for (std::uint32_t request : {0u, 9u, 10u, 0xffff'ffffu}) {
    SCOPED_TRACE(request);
    EXPECT_EQ(backend_error(raw(request, {}, 1)), Errc::kUnknownRequest);
  }
}

TEST_F(HostileTest, TooManyFds) {
  EXPECT_EQ(frontend_error(mem_table_message({test::region(0, 0x1000)})), std::error_code{});
  Message m = raw(R::kSetMemTable, mem_table(1, {test::region(0, 0x1000)}), kMaxFds + 1);
  EXPECT_EQ(frontend_error(std::move(m)), Errc::kTooManyFds);
}

// ---- Each request with a wrong payload size (one byte short, one byte long). ----

class WrongPayloadSizeTest : public ::testing::TestWithParam<R> {};
class ShortPayloadTest : public ::testing::TestWithParam<R> {};

TEST_P(ShortPayloadTest, OneByteShort) {
  const int before = test::open_fd_count();
  Message m = encode(GetParam(), test::sample_request(GetParam()));
  m.payload.pop_back();
  m.header.size -= 1;
  EXPECT_EQ(frontend_error(std::move(m)), Errc::kSizeMismatch);
  EXPECT_EQ(test::open_fd_count(), before);
}

TEST_P(WrongPayloadSizeTest, OneByteLong) {
  Message m = encode(GetParam(), test::sample_request(GetParam()));
  m.payload.push_back(0);
  m.header.size += 1;
  EXPECT_EQ(frontend_error(std::move(m)), Errc::kSizeMismatch);
}

TEST_P(WrongPayloadSizeTest, EightBytesLong) {
  Message m = encode(GetParam(), test::sample_request(GetParam()));
  m.payload.resize(m.payload.size() + 8);
  m.header.size += 8;
  EXPECT_EQ(frontend_error(std::move(m)), Errc::kSizeMismatch);
}

// The requests whose sample encoding satisfies `pred`.
template <class Pred>
std::vector<R> requests_where(Pred pred) {
  std::vector<R> out;
  for (R r : test::all_frontend_requests()) {
    if (pred(r, encode(r, test::sample_request(r)))) out.push_back(r);
  }
  return out;
}

std::vector<R> sized_requests() {  // CREATE_CRYPTO_SESSION is opaque: any size up to the limit
  return requests_where([](R r, const Message&) { return r != R::kCreateCryptoSession; });
}
std::vector<R> requests_with_payload() {
  return requests_where(
      [](R r, const Message& m) { return r != R::kCreateCryptoSession && !m.payload.empty(); });
}
std::vector<R> requests_with_fds() {
  return requests_where([](R, const Message& m) { return !m.fds.empty(); });
}
// REM_MEM_REG tolerates one stray descriptor (see RemMemRegStrayFdIsClosedUnused).
std::vector<R> fd_checked_requests() {
  return requests_where([](R r, const Message&) { return r != R::kRemMemReg; });
}

std::string request_param_name(const ::testing::TestParamInfo<R>& info) {
  std::string name = request_name(info.param);
  std::erase(name, '_');
  return name;
}

INSTANTIATE_TEST_SUITE_P(EveryRequest, WrongPayloadSizeTest, ::testing::ValuesIn(sized_requests()),
                         request_param_name);
INSTANTIATE_TEST_SUITE_P(EveryRequestWithPayload, ShortPayloadTest,
                         ::testing::ValuesIn(requests_with_payload()), request_param_name);

class WrongBackendPayloadSizeTest : public ::testing::TestWithParam<BackendRequest> {};

TEST_P(WrongBackendPayloadSizeTest, OneByteLong) {
  Message m = encode(GetParam(), test::sample_backend_request(GetParam()));
  m.payload.push_back(0);
  m.header.size += 1;
  EXPECT_EQ(backend_error(std::move(m)), Errc::kSizeMismatch);
}

INSTANTIATE_TEST_SUITE_P(EveryBackendRequest, WrongBackendPayloadSizeTest,
                         ::testing::ValuesIn(test::all_backend_requests()),
                         [](const ::testing::TestParamInfo<BackendRequest>& info) {
                           std::string name = request_name(info.param);
                           std::erase(name, '_');
                           return name;
                         });

// ---- Descriptor counts, both ways. ----

class UnexpectedFdTest : public ::testing::TestWithParam<R> {};
class MissingFdTest : public ::testing::TestWithParam<R> {};

// One descriptor more than the request (and its payload) calls for.
TEST_P(UnexpectedFdTest, OneFdTooMany) {
  const int before = test::open_fd_count();
  Message m = encode(GetParam(), test::sample_request(GetParam()));
  m.fds.push_back(test::make_eventfd());
  EXPECT_EQ(frontend_error(std::move(m)), Errc::kFdCountMismatch);
  EXPECT_EQ(test::open_fd_count(), before);
}

// Every descriptor the request needs, withheld.
TEST_P(MissingFdTest, FdsWithheld) {
  Message m = encode(GetParam(), test::sample_request(GetParam()));
  m.fds.clear();
  EXPECT_EQ(frontend_error(std::move(m)), Errc::kFdCountMismatch);
}

INSTANTIATE_TEST_SUITE_P(EveryRequest, UnexpectedFdTest, ::testing::ValuesIn(fd_checked_requests()),
                         request_param_name);
INSTANTIATE_TEST_SUITE_P(EveryRequestWithFds, MissingFdTest,
                         ::testing::ValuesIn(requests_with_fds()), request_param_name);

TEST_F(HostileTest, MemTableFdCountMismatchBothWays) {
  const std::vector<MemoryRegion> regions = {test::region(0, 0x1000), test::region(0x1000, 0x1000)};
  EXPECT_EQ(frontend_error(raw(R::kSetMemTable, mem_table(2, regions), 1)), Errc::kFdCountMismatch);
  EXPECT_EQ(frontend_error(raw(R::kSetMemTable, mem_table(2, regions), 3)), Errc::kFdCountMismatch);
}

TEST_F(HostileTest, SetLogBaseWithoutFd) {
  EXPECT_EQ(frontend_error(raw(R::kSetLogBase, bytes_of(LogDescription{0x1000, 0}), 0)),
            Errc::kFdCountMismatch);
}

TEST_F(HostileTest, AddMemRegWithoutFdOrWithTwo) {
  const auto payload = bytes_of(SingleMemoryRegion{0, test::region(0, 0x1000)});
  EXPECT_EQ(frontend_error(raw(R::kAddMemReg, payload, 0)), Errc::kFdCountMismatch);
  EXPECT_EQ(frontend_error(raw(R::kAddMemReg, payload, 2)), Errc::kFdCountMismatch);
  EXPECT_EQ(frontend_error(raw(R::kAddMemReg, payload, 1)), std::error_code{});
}

TEST_F(HostileTest, RemMemRegStrayFdIsClosedUnused) {
  const auto payload = bytes_of(SingleMemoryRegion{0, test::region(0, 0x1000)});
  auto d = decode_frontend_message(raw(R::kRemMemReg, payload, 1));
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_FALSE(std::get<MemoryRegionFd>(d->payload).fd);
  EXPECT_EQ(test::open_fd_count(), fds_before_);  // already closed, not merely unused
  EXPECT_EQ(frontend_error(raw(R::kRemMemReg, payload, 2)), Errc::kFdCountMismatch);
}

TEST_F(HostileTest, VringKickFdDespiteNoFdFlag) {
  EXPECT_EQ(frontend_error(raw(R::kSetVringKick, bytes_of(std::uint64_t{0x100}), 1)),
            Errc::kFdCountMismatch);
}

TEST_F(HostileTest, VringCallNoFdWithoutNoFdFlag) {
  EXPECT_EQ(frontend_error(raw(R::kSetVringCall, bytes_of(std::uint64_t{0x3}), 0)),
            Errc::kFdCountMismatch);
}

TEST_F(HostileTest, VringErrReservedBits) {
  EXPECT_EQ(frontend_error(raw(R::kSetVringErr, bytes_of(std::uint64_t{0x200}), 1)),
            Errc::kInvalidField);
  EXPECT_EQ(frontend_error(raw(R::kSetVringErr, bytes_of(std::uint64_t{1} << 63 | 0x100), 0)),
            Errc::kInvalidField);
}

// ---- Memory tables. ----

TEST_F(HostileTest, MemTableLyingNumRegions) {
  const std::vector<MemoryRegion> two = {test::region(0, 0x1000), test::region(0x1000, 0x1000)};
  EXPECT_EQ(frontend_error(raw(R::kSetMemTable, mem_table(3, two), 3)), Errc::kSizeMismatch);
  EXPECT_EQ(frontend_error(raw(R::kSetMemTable, mem_table(1, two), 1)), Errc::kSizeMismatch);
}

TEST_F(HostileTest, MemTableMoreThanEightRegions) {
  std::vector<MemoryRegion> nine;
  for (std::uint64_t i = 0; i < 9; ++i) nine.push_back(test::region(i * 0x1000, 0x1000));
  EXPECT_EQ(frontend_error(raw(R::kSetMemTable, mem_table(9, nine), 8)), Errc::kTooManyRegions);
  EXPECT_EQ(frontend_error(raw(R::kSetMemTable, mem_table(0xffff'ffff, {}), 0)),
            Errc::kTooManyRegions);
}

TEST_F(HostileTest, MemTableShorterThanItsHeader) {
  EXPECT_EQ(frontend_error(raw(R::kSetMemTable, {1, 0, 0, 0}, 0)), Errc::kSizeMismatch);
}

TEST_F(HostileTest, MemTableOverlappingRegions) {
  EXPECT_EQ(
      frontend_error(mem_table_message({test::region(0, 0x2000), test::region(0x1000, 0x2000)})),
      Errc::kRegionOverlap);
}

TEST_F(HostileTest, MemTableIdenticalRegions) {
  EXPECT_EQ(frontend_error(
                mem_table_message({test::region(0x1000, 0x1000), test::region(0x1000, 0x1000)})),
            Errc::kRegionOverlap);
}

TEST_F(HostileTest, MemTableNestedRegion) {
  EXPECT_EQ(
      frontend_error(mem_table_message({test::region(0x10000, 0x1000), test::region(0, 0x100000)})),
      Errc::kRegionOverlap);
}

TEST_F(HostileTest, MemTableAdjacentRegionsAreFine) {
  EXPECT_EQ(frontend_error(mem_table_message({test::region(0x1000, 0x1000), test::region(0, 0x1000),
                                              test::region(0x2000, 0x1000)})),
            std::error_code{});
}

TEST_F(HostileTest, MemTableEmptyIsFine) {
  EXPECT_EQ(frontend_error(mem_table_message({})), std::error_code{});
}

TEST_F(HostileTest, MemTableZeroSizeRegion) {
  EXPECT_EQ(frontend_error(mem_table_message({test::region(0, 0x1000), test::region(0x4000, 0)})),
            Errc::kZeroSizeRegion);
}

TEST_F(HostileTest, MemTableGuestAddressOverflow) {
  EXPECT_EQ(frontend_error(mem_table_message({MemoryRegion{kMax64 - 0xfff, 0x2000, 0, 0}})),
            Errc::kRegionOverflow);
}

TEST_F(HostileTest, MemTableUserAddressOverflow) {
  EXPECT_EQ(frontend_error(mem_table_message({MemoryRegion{0, 0x2000, kMax64 - 0x10, 0}})),
            Errc::kRegionOverflow);
}

TEST_F(HostileTest, MemTableMmapOffsetOverflow) {
  EXPECT_EQ(frontend_error(mem_table_message({MemoryRegion{0, 0x2000, 0x1000, kMax64 - 0x10}})),
            Errc::kRegionOverflow);
  // Past off_t, though not past 2^64.
  EXPECT_EQ(frontend_error(mem_table_message({MemoryRegion{0, 0x2000, 0x1000, 1ULL << 63}})),
            Errc::kRegionOverflow);
}

TEST_F(HostileTest, RegionEndingAtTheTopOfGuestSpaceIsFine) {
  EXPECT_EQ(frontend_error(mem_table_message({MemoryRegion{kMax64 - 0xfff, 0x1000, 0x1000, 0}})),
            std::error_code{});
}

TEST_F(HostileTest, AddMemRegZeroSizeAndOverflow) {
  EXPECT_EQ(
      frontend_error(raw(R::kAddMemReg, bytes_of(SingleMemoryRegion{0, test::region(0, 0)}), 1)),
      Errc::kZeroSizeRegion);
  EXPECT_EQ(frontend_error(raw(R::kAddMemReg,
                               bytes_of(SingleMemoryRegion{0, MemoryRegion{kMax64, 2, 0, 0}}), 1)),
            Errc::kRegionOverflow);
}

TEST_F(HostileTest, RemMemRegIgnoresTheMmapOffset) {
  const MemoryRegion r{0x1000, 0x1000, 0x7f00'0000'0000, kMax64};
  EXPECT_EQ(frontend_error(raw(R::kRemMemReg, bytes_of(SingleMemoryRegion{0, r}))),
            std::error_code{});
  EXPECT_EQ(frontend_error(raw(R::kAddMemReg, bytes_of(SingleMemoryRegion{0, r}), 1)),
            Errc::kRegionOverflow);
}

// ---- IOTLB. ----

constexpr std::uint8_t kRw = 3, kUpdate = 2, kInvalidate = 3;

TEST_F(HostileTest, IotlbUpdateIovaOverflow) {
  EXPECT_EQ(frontend_error(raw(R::kIotlbMsg, iotlb(kMax64 - 0xff, 0x1000, 0x1000, kRw, kUpdate))),
            Errc::kIotlbOverflow);
}

TEST_F(HostileTest, IotlbUpdateUserAddressOverflow) {
  EXPECT_EQ(frontend_error(raw(R::kIotlbMsg, iotlb(0x1000, 0x1000, kMax64 - 0xff, kRw, kUpdate))),
            Errc::kIotlbOverflow);
}

TEST_F(HostileTest, IotlbUpdateOfNothing) {
  EXPECT_EQ(frontend_error(raw(R::kIotlbMsg, iotlb(0x1000, 0, 0x1000, kRw, kUpdate))),
            Errc::kIotlbOverflow);
}

TEST_F(HostileTest, IotlbInvalidateOverflow) {
  EXPECT_EQ(frontend_error(raw(R::kIotlbMsg, iotlb(0x2000, kMax64, 0, 0, kInvalidate))),
            Errc::kIotlbOverflow);
  EXPECT_EQ(frontend_error(raw(R::kIotlbMsg, iotlb(0x2000, 0, 0, 0, kInvalidate))),
            Errc::kIotlbOverflow);
}

TEST_F(HostileTest, IotlbInvalidateOfEverythingIsAccepted) {
  EXPECT_EQ(frontend_error(raw(R::kIotlbMsg, iotlb(0, 0, 0, 0, kInvalidate))), std::error_code{});
  // perm and user address are not filled in for invalidations: never interpreted.
  EXPECT_EQ(frontend_error(raw(R::kIotlbMsg, iotlb(0x1000, 0x1000, kMax64, 0xff, kInvalidate))),
            std::error_code{});
}

TEST_F(HostileTest, IotlbBadType) {
  for (std::uint8_t type : {0, 1, 4, 5, 6, 0xff}) {
    SCOPED_TRACE(type);
    EXPECT_EQ(frontend_error(raw(R::kIotlbMsg, iotlb(0x1000, 0x1000, 0x1000, kRw, type))),
              Errc::kBadIotlbType);
  }
}

TEST_F(HostileTest, IotlbBadPerm) {
  for (std::uint8_t perm : {0, 4, 0xff}) {
    SCOPED_TRACE(perm);
    EXPECT_EQ(frontend_error(raw(R::kIotlbMsg, iotlb(0x1000, 0x1000, 0x1000, perm, kUpdate))),
              Errc::kBadIotlbPerm);
  }
}

TEST_F(HostileTest, BackendIotlbUpdateIsNotAMiss) {
  EXPECT_EQ(backend_error(raw(BackendRequest::kIotlbMsg, iotlb(0x1000, 0x1000, 0, kRw, kUpdate))),
            Errc::kBadIotlbType);
}

TEST_F(HostileTest, BackendIotlbMissWithoutAccess) {
  EXPECT_EQ(backend_error(raw(BackendRequest::kIotlbMsg, iotlb(0x1000, 0, 0, 0, 1))),
            Errc::kBadIotlbPerm);
  EXPECT_EQ(backend_error(raw(BackendRequest::kIotlbMsg, iotlb(0x1000, 0, 0, 7, 4))),
            Errc::kBadIotlbPerm);
}

// ---- Config space. ----

TEST_F(HostileTest, ConfigOffsetPlusSizeAbove256) {
  EXPECT_EQ(frontend_error(raw(R::kSetConfig, config(200, 100, 0, 100))), Errc::kConfigOutOfRange);
  EXPECT_EQ(frontend_error(raw(R::kGetConfig, config(1, 256, 0, 256))), Errc::kConfigOutOfRange);
}

TEST_F(HostileTest, ConfigHugeSize) {
  EXPECT_EQ(frontend_error(raw(R::kSetConfig, config(0, 0xffff'ffff, 0, 8))),
            Errc::kConfigOutOfRange);
}

TEST_F(HostileTest, ConfigHugeOffset) {
  EXPECT_EQ(frontend_error(raw(R::kSetConfig, config(0xffff'ffff, 1, 0, 1))),
            Errc::kConfigOutOfRange);
}

TEST_F(HostileTest, ConfigSizeDisagreesWithPayload) {
  EXPECT_EQ(frontend_error(raw(R::kSetConfig, config(0, 8, 0, 4))), Errc::kSizeMismatch);
  EXPECT_EQ(frontend_error(raw(R::kSetConfig, config(0, 4, 0, 8))), Errc::kSizeMismatch);
}

TEST_F(HostileTest, ConfigShorterThanItsHeader) {
  EXPECT_EQ(frontend_error(raw(R::kGetConfig, std::vector<std::uint8_t>(11))), Errc::kSizeMismatch);
}

TEST_F(HostileTest, ConfigUnknownFlags) {
  EXPECT_EQ(frontend_error(raw(R::kSetConfig, config(0, 4, 2, 4))), Errc::kInvalidField);
}

TEST_F(HostileTest, ConfigAtTheVeryEndIsFine) {
  EXPECT_EQ(frontend_error(raw(R::kSetConfig, config(248, 8, 0, 8))), std::error_code{});
  EXPECT_EQ(frontend_error(raw(R::kGetConfig, config(0, 256, 0, 256))), std::error_code{});
}

// ---- Reserved and out-of-range fields. ----

TEST_F(HostileTest, VringEndianOutOfRange) {
  EXPECT_EQ(frontend_error(raw(R::kSetVringEndian, bytes_of(VringState{0, 2}))),
            Errc::kInvalidField);
}

TEST_F(HostileTest, VringEnableOutOfRange) {
  EXPECT_EQ(frontend_error(raw(R::kSetVringEnable, bytes_of(VringState{0, 0x100}))),
            Errc::kInvalidField);
}

// Reserved num fields are not interpreted: DPDK virtio-user sends GET_VRING_BASE with
// whatever its stack held.
TEST_F(HostileTest, ReservedNumFieldsAreIgnored) {
  EXPECT_EQ(frontend_error(raw(R::kGetVringBase, bytes_of(VringState{0, 0xdead}))),
            std::error_code{});
  EXPECT_EQ(frontend_error(raw(R::kVringKick, bytes_of(VringState{0, 1}))), std::error_code{});
  EXPECT_EQ(backend_error(raw(BackendRequest::kVringCall, bytes_of(VringState{0, 1}))),
            std::error_code{});
}

TEST_F(HostileTest, VringAddrUnknownFlags) {
  EXPECT_EQ(frontend_error(raw(R::kSetVringAddr, bytes_of(VringAddr{0, 0x2, 0, 0, 0, 0}))),
            Errc::kInvalidField);
}

TEST_F(HostileTest, DeviceStateBadDirection) {
  EXPECT_EQ(frontend_error(raw(R::kSetDeviceStateFd, bytes_of(DeviceStateParams{2, 0}), 1)),
            Errc::kInvalidField);
}

TEST_F(HostileTest, DeviceStateUnknownPhase) {
  EXPECT_EQ(frontend_error(raw(R::kSetDeviceStateFd, bytes_of(DeviceStateParams{0, 1}), 1)),
            Errc::kInvalidField);
}

TEST_F(HostileTest, HostNotifierReservedBits) {
  EXPECT_EQ(backend_error(raw(BackendRequest::kVringHostNotifierMsg,
                              bytes_of(VringArea{0x1000, 0x1000, 0}), 1)),
            Errc::kInvalidField);
}

TEST_F(HostileTest, HostNotifierFdDespiteNoFdFlag) {
  EXPECT_EQ(backend_error(raw(BackendRequest::kVringHostNotifierMsg,
                              bytes_of(VringArea{0x101, 0x1000, 0}), 1)),
            Errc::kFdCountMismatch);
  EXPECT_EQ(backend_error(
                raw(BackendRequest::kVringHostNotifierMsg, bytes_of(VringArea{0x1, 0x1000, 0}), 0)),
            Errc::kFdCountMismatch);
}

TEST_F(HostileTest, BackendRequestWithUnexpectedFd) {
  EXPECT_EQ(backend_error(raw(BackendRequest::kConfigChangeMsg, {}, 1)), Errc::kFdCountMismatch);
  EXPECT_EQ(backend_error(raw(BackendRequest::kSharedObjectLookup, bytes_of(Uuid{}), 1)),
            Errc::kFdCountMismatch);
}

// ---- Replies. ----

TEST_F(HostileTest, ReplyWithoutReplyFlag) {
  EXPECT_EQ(reply_error(R::kGetFeatures, raw(R::kGetFeatures, bytes_of(std::uint64_t{1}))),
            Errc::kMissingReplyFlag);
}

TEST_F(HostileTest, ReplyToAnotherRequest) {
  EXPECT_EQ(reply_error(R::kGetFeatures, raw(R::kGetProtocolFeatures, bytes_of(std::uint64_t{1}), 0,
                                             kVersion1 | kFlagReply)),
            Errc::kReplyMismatch);
  EXPECT_EQ(backend_reply_error(BackendRequest::kIotlbMsg,
                                raw(BackendRequest::kConfigChangeMsg, bytes_of(std::uint64_t{0}), 0,
                                    kVersion1 | kFlagReply)),
            Errc::kReplyMismatch);
}

// libvhost-user copies the request's flags into explicit replies: tolerated.
TEST_F(HostileTest, ReplyWithNeedReplyFlagIsTolerated) {
  EXPECT_EQ(reply_error(R::kGetFeatures, raw(R::kGetFeatures, bytes_of(std::uint64_t{1}), 0,
                                             kVersion1 | kFlagReply | kFlagNeedReply)),
            std::error_code{});
  EXPECT_EQ(reply_error(R::kGetFeatures, raw(R::kGetFeatures, bytes_of(std::uint64_t{1}), 0,
                                             kVersion1 | kFlagReply | 0x20)),
            Errc::kBadFlags);
}

TEST_F(HostileTest, ReplyWrongSize) {
  EXPECT_EQ(
      reply_error(R::kGetFeatures, raw(R::kGetFeatures, {1, 2, 3, 4}, 0, kVersion1 | kFlagReply)),
      Errc::kSizeMismatch);
  // An ack is a u64, whatever the request.
  EXPECT_EQ(reply_error(R::kSetVringNum, raw(R::kSetVringNum, {}, 0, kVersion1 | kFlagReply)),
            Errc::kSizeMismatch);
}

TEST_F(HostileTest, ReplyWithUnexpectedFd) {
  EXPECT_EQ(reply_error(R::kGetFeatures, raw(R::kGetFeatures, bytes_of(std::uint64_t{1}), 1,
                                             kVersion1 | kFlagReply)),
            Errc::kFdCountMismatch);
}

TEST_F(HostileTest, GetConfigReplyOutOfRange) {
  EXPECT_EQ(reply_error(R::kGetConfig,
                        raw(R::kGetConfig, config(250, 10, 0, 10), 0, kVersion1 | kFlagReply)),
            Errc::kConfigOutOfRange);
}

TEST_F(HostileTest, DeviceStateReplyErrorWithFd) {
  EXPECT_EQ(reply_error(R::kSetDeviceStateFd, raw(R::kSetDeviceStateFd, bytes_of(std::uint64_t{1}),
                                                  1, kVersion1 | kFlagReply)),
            Errc::kInvalidField);
}

TEST_F(HostileTest, DeviceStateReplyFdMissing) {
  EXPECT_EQ(reply_error(R::kSetDeviceStateFd, raw(R::kSetDeviceStateFd, bytes_of(std::uint64_t{0}),
                                                  0, kVersion1 | kFlagReply)),
            Errc::kFdCountMismatch);
}

TEST_F(HostileTest, SharedObjectLookupReplyFdMismatch) {
  const auto flags = kVersion1 | kFlagReply;
  EXPECT_EQ(backend_reply_error(
                BackendRequest::kSharedObjectLookup,
                raw(BackendRequest::kSharedObjectLookup, bytes_of(std::uint64_t{0}), 0, flags)),
            Errc::kFdCountMismatch);
  EXPECT_EQ(backend_reply_error(
                BackendRequest::kSharedObjectLookup,
                raw(BackendRequest::kSharedObjectLookup, bytes_of(std::uint64_t{1}), 1, flags)),
            Errc::kFdCountMismatch);
}

TEST_F(HostileTest, InflightReplyAreaWithoutFd) {
  EXPECT_EQ(reply_error(R::kGetInflightFd,
                        raw(R::kGetInflightFd, bytes_of(InflightDescription{0x1000, 0, 1, 64, 0}),
                            0, kVersion1 | kFlagReply)),
            Errc::kFdCountMismatch);
}

TEST_F(HostileTest, PostcopyAdviseReplyWithoutFd) {
  EXPECT_EQ(reply_error(R::kPostcopyAdvise, raw(R::kPostcopyAdvise, {}, 0, kVersion1 | kFlagReply)),
            Errc::kFdCountMismatch);
}

TEST_F(HostileTest, MemTableReplyOutsidePostcopy) {
  Message m =
      raw(R::kSetMemTable, mem_table(1, {test::region(0, 0x1000)}), 0, kVersion1 | kFlagReply);
  EXPECT_EQ(reply_error(R::kSetMemTable, std::move(m)), Errc::kSizeMismatch);
}

TEST_F(HostileTest, PostcopyMemTableReplyIsValidated) {
  Message m =
      raw(R::kSetMemTable, mem_table(2, {test::region(0, 0x2000), test::region(0x1000, 0x1000)}), 0,
          kVersion1 | kFlagReply);
  EXPECT_EQ(reply_error(R::kSetMemTable, std::move(m), {.postcopy = true}), Errc::kRegionOverlap);
}

}  // namespace
}  // namespace vdma::vhost

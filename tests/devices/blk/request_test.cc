// parse_request: one test per malformed case, the accepted shapes, and a property test
// over random chains (never a crash, never data outside the chain or the image).
#include "vdma/devices/blk/request.h"

#include <gtest/gtest.h>

#include <random>

#include "blk_test_util.h"

namespace vdma::blk::test {
namespace {

constexpr std::uint64_t kCapacity = 2048;  // 1 MiB
Limits limits() {
  Limits l;
  l.capacity_sectors = kCapacity;
  l.seg_max = 4;
  l.size_max = 8192;
  l.max_discard_seg = 3;
  l.max_discard_sectors = 256;
  l.max_write_zeroes_seg = 3;
  l.max_write_zeroes_sectors = 256;
  return l;
}

Result<Request> parse(TestChain& t, const Limits& l = limits()) {
  return parse_request(t.chain(), l);
}

void expect_error(TestChain& t, Errc e, std::uint8_t status, const Limits& l = limits()) {
  auto r = parse(t, l);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(e)) << r.error().message();
  EXPECT_EQ(status_for(r.error()), status);
}

// --- accepted requests -------------------------------------------------------------

TEST(BlkRequest, ReadIntoTwoSegments) {
  TestChain t;
  t.readable(TestChain::header(kTypeIn, 8)).writable(512).writable(1024).writable(1);
  auto r = parse(t);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->type, kTypeIn);
  EXPECT_EQ(r->sector, 8u);
  ASSERT_EQ(r->data.size(), 2u);
  EXPECT_EQ(r->data_bytes, 1536u);
  EXPECT_EQ(r->writable_bytes, 1537u);
  EXPECT_EQ(r->status, reinterpret_cast<std::byte*>(t.buf(3).data()));
}

TEST(BlkRequest, StatusByteSharesTheLastDataSegment) {
  TestChain t;
  t.readable(TestChain::header(kTypeIn, 0)).writable(513);
  auto r = parse(t);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->data.size(), 1u);
  EXPECT_EQ(r->data[0].len, 512u);
  EXPECT_EQ(r->status, reinterpret_cast<std::byte*>(t.buf(1).data() + 512));
}

TEST(BlkRequest, HeaderSplitAcrossSegments) {
  auto h = TestChain::header(kTypeOut, 77);
  TestChain t;
  t.readable({h.begin(), h.begin() + 5})
      .readable({h.begin() + 5, h.begin() + 12})
      .readable({h.begin() + 12, h.end()})
      .readable(pattern(512, 1))
      .writable(1);
  auto r = parse(t);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->type, kTypeOut);
  EXPECT_EQ(r->sector, 77u);
  EXPECT_EQ(r->data_bytes, 512u);
}

TEST(BlkRequest, WriteDataInTheHeaderSegment) {
  TestChain t;
  t.readable(TestChain::header(kTypeOut, 3, pattern(1024, 2))).writable(1);
  auto r = parse(t);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->data.size(), 1u);
  EXPECT_EQ(r->data[0].host, reinterpret_cast<std::byte*>(t.buf(0).data() + 16));
  EXPECT_EQ(r->data[0].len, 1024u);
  EXPECT_EQ(r->writable_bytes, 1u);
}

TEST(BlkRequest, FlushGetIdAndLastSector) {
  TestChain f;
  f.readable(TestChain::header(kTypeFlush, 12345)).writable(1);
  EXPECT_TRUE(parse(f));  // FLUSH ignores the sector
  TestChain g;
  g.readable(TestChain::header(kTypeGetId, 0)).writable(20).writable(1);
  auto r = parse(g);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data_bytes, 20u);
  TestChain last;
  last.readable(TestChain::header(kTypeIn, kCapacity - 1)).writable(512).writable(1);
  EXPECT_TRUE(parse(last));
}

TEST(BlkRequest, DiscardAndWriteZeroesRangesAreCopied) {
  auto payload = TestChain::concat(TestChain::range(10, 20), TestChain::range(100, 256));
  TestChain t;
  t.readable(TestChain::header(kTypeDiscard, 0)).readable(payload).writable(1);
  auto r = parse(t);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->ranges.size(), 2u);
  // The copies stay valid whatever the driver writes afterwards.
  std::fill(t.buf(1).begin(), t.buf(1).end(), 0xff);
  EXPECT_EQ(r->ranges[0].sector, 10u);
  EXPECT_EQ(r->ranges[1].num_sectors, 256u);
  TestChain w;
  w.readable(TestChain::header(kTypeWriteZeroes, 0, TestChain::range(0, 8, kRangeFlagUnmap)))
      .writable(1);
  auto z = parse(w);
  ASSERT_TRUE(z) << z.error().message();
  EXPECT_EQ(z->ranges[0].flags, kRangeFlagUnmap);
}

// --- malformed requests, one per case ------------------------------------------------

TEST(BlkRequestMalformed, ShortHeader) {
  TestChain t;
  t.readable(std::vector<std::uint8_t>(15)).writable(1);
  expect_error(t, Errc::kShortHeader, kStatusIoErr);
}

TEST(BlkRequestMalformed, NoWritableStatusByte) {
  TestChain t;
  t.readable(TestChain::header(kTypeFlush, 0));
  expect_error(t, Errc::kNoStatusByte, kStatusIoErr);
  EXPECT_EQ(status_byte(t.chain()), nullptr);
}

TEST(BlkRequestMalformed, ReadWithReadableData) {
  TestChain t;
  t.readable(TestChain::header(kTypeIn, 0, pattern(512, 0))).writable(1);
  expect_error(t, Errc::kDataDirection, kStatusIoErr);
}

TEST(BlkRequestMalformed, WriteWithWritableData) {
  TestChain t;
  t.readable(TestChain::header(kTypeOut, 0, pattern(512, 0))).writable(512).writable(1);
  expect_error(t, Errc::kDataDirection, kStatusIoErr);
}

TEST(BlkRequestMalformed, FlushWithData) {
  TestChain t;
  t.readable(TestChain::header(kTypeFlush, 0, pattern(512, 0))).writable(1);
  expect_error(t, Errc::kUnexpectedData, kStatusIoErr);
}

TEST(BlkRequestMalformed, FlushWithWritableData) {
  TestChain t;
  t.readable(TestChain::header(kTypeFlush, 0)).writable(8);
  expect_error(t, Errc::kDataDirection, kStatusIoErr);
}

TEST(BlkRequestMalformed, GetIdWithReadableData) {
  TestChain t;
  t.readable(TestChain::header(kTypeGetId, 0, pattern(20, 0))).writable(21);
  expect_error(t, Errc::kDataDirection, kStatusIoErr);
}

TEST(BlkRequestMalformed, DataNotAMultipleOf512) {
  TestChain t;
  t.readable(TestChain::header(kTypeIn, 0)).writable(100).writable(1);
  expect_error(t, Errc::kUnalignedLength, kStatusIoErr);
}

TEST(BlkRequestMalformed, SectorPastTheEnd) {
  TestChain t;
  t.readable(TestChain::header(kTypeIn, kCapacity)).writable(512).writable(1);
  expect_error(t, Errc::kOutOfRange, kStatusIoErr);
}

TEST(BlkRequestMalformed, RangeEndsPastTheEnd) {
  TestChain t;
  t.readable(TestChain::header(kTypeOut, kCapacity - 1, pattern(1024, 0))).writable(1);
  expect_error(t, Errc::kOutOfRange, kStatusIoErr);
}

TEST(BlkRequestMalformed, SectorOverflows) {
  TestChain t;
  t.readable(TestChain::header(kTypeIn, ~std::uint64_t{0})).writable(512).writable(1);
  expect_error(t, Errc::kOutOfRange, kStatusIoErr);
}

TEST(BlkRequestMalformed, TooManySegments) {
  TestChain t;
  t.readable(TestChain::header(kTypeIn, 0));
  for (int i = 0; i < 5; ++i) t.writable(512);
  t.writable(1);
  expect_error(t, Errc::kTooManySegments, kStatusIoErr);
}

TEST(BlkRequestMalformed, SegmentLargerThanSizeMax) {
  TestChain t;
  t.readable(TestChain::header(kTypeOut, 0)).readable(pattern(8704, 0)).writable(1);
  expect_error(t, Errc::kSegmentTooLarge, kStatusIoErr);
}

TEST(BlkRequestMalformed, DiscardPayloadNotAMultipleOf16) {
  TestChain t;
  t.readable(TestChain::header(kTypeDiscard, 0, std::vector<std::uint8_t>(24))).writable(1);
  expect_error(t, Errc::kBadRangePayload, kStatusIoErr);
}

TEST(BlkRequestMalformed, DiscardWithoutRanges) {
  TestChain t;
  t.readable(TestChain::header(kTypeDiscard, 0)).writable(1);
  expect_error(t, Errc::kBadRangePayload, kStatusIoErr);
}

TEST(BlkRequestMalformed, TooManyDiscardRanges) {
  std::vector<std::uint8_t> payload;
  for (int i = 0; i < 4; ++i) {
    payload = TestChain::concat(payload, TestChain::range(i * 10, 1));
  }
  TestChain t;
  t.readable(TestChain::header(kTypeDiscard, 0, payload)).writable(1);
  expect_error(t, Errc::kTooManyRanges, kStatusIoErr);
}

TEST(BlkRequestMalformed, DiscardRangeLongerThanMax) {
  TestChain t;
  t.readable(TestChain::header(kTypeDiscard, 0, TestChain::range(0, 257))).writable(1);
  expect_error(t, Errc::kRangeTooLarge, kStatusIoErr);
}

TEST(BlkRequestMalformed, WriteZeroesRangePastTheEnd) {
  TestChain t;
  t.readable(TestChain::header(kTypeWriteZeroes, 0, TestChain::range(kCapacity - 4, 8)))
      .writable(1);
  expect_error(t, Errc::kOutOfRange, kStatusIoErr);
}

TEST(BlkRequestMalformed, DiscardRangeSectorOverflows) {
  TestChain t;
  t.readable(TestChain::header(kTypeDiscard, 0, TestChain::range(~std::uint64_t{0} - 2, 8)))
      .writable(1);
  expect_error(t, Errc::kOutOfRange, kStatusIoErr);
}

TEST(BlkRequestMalformed, DiscardWithUnmapFlagIsUnsupported) {
  TestChain t;
  t.readable(TestChain::header(kTypeDiscard, 0, TestChain::range(0, 8, kRangeFlagUnmap)))
      .writable(1);
  expect_error(t, Errc::kUnsupportedFlags, kStatusUnsupp);
}

TEST(BlkRequestMalformed, WriteZeroesWithUnknownFlag) {
  TestChain t;
  t.readable(TestChain::header(kTypeWriteZeroes, 0, TestChain::range(0, 8, 2))).writable(1);
  expect_error(t, Errc::kUnsupportedFlags, kStatusUnsupp);
}

TEST(BlkRequestMalformed, DiscardWithWritableData) {
  TestChain t;
  t.readable(TestChain::header(kTypeDiscard, 0, TestChain::range(0, 8))).writable(16).writable(1);
  expect_error(t, Errc::kDataDirection, kStatusIoErr);
}

TEST(BlkRequestMalformed, UnknownTypeIsUnsupported) {
  TestChain t;
  t.readable(TestChain::header(0x7777, 0)).writable(1);
  expect_error(t, Errc::kUnsupportedType, kStatusUnsupp);
  TestChain life;
  life.readable(TestChain::header(kTypeGetLifetime, 0)).writable(16).writable(1);
  expect_error(life, Errc::kUnsupportedType, kStatusUnsupp);
  TestChain erase;
  erase.readable(TestChain::header(kTypeSecureErase, 0, TestChain::range(0, 8))).writable(1);
  expect_error(erase, Errc::kUnsupportedType, kStatusUnsupp);
}

TEST(BlkRequestMalformed, DiscardNotOfferedIsUnsupported) {
  Limits l = limits();
  l.discard = false;
  TestChain t;
  t.readable(TestChain::header(kTypeDiscard, 0, TestChain::range(0, 8))).writable(1);
  expect_error(t, Errc::kUnsupportedType, kStatusUnsupp, l);
}

TEST(BlkRequestMalformed, WritesOnAReadOnlyDevice) {
  Limits l = limits();
  l.read_only = true;
  TestChain out;
  out.readable(TestChain::header(kTypeOut, 0, pattern(512, 0))).writable(1);
  expect_error(out, Errc::kReadOnly, kStatusIoErr, l);
  TestChain discard;
  discard.readable(TestChain::header(kTypeDiscard, 0, TestChain::range(0, 8))).writable(1);
  expect_error(discard, Errc::kReadOnly, kStatusIoErr, l);
  TestChain zeroes;
  zeroes.readable(TestChain::header(kTypeWriteZeroes, 0, TestChain::range(0, 8))).writable(1);
  expect_error(zeroes, Errc::kReadOnly, kStatusIoErr, l);
  TestChain in;
  in.readable(TestChain::header(kTypeIn, 0)).writable(512).writable(1);
  EXPECT_TRUE(parse(in, l));
}

// --- property: random chains ---------------------------------------------------------

bool inside(const virtq::DeviceSegment& d, const std::vector<virtq::DeviceSegment>& segs) {
  for (const auto& s : segs) {
    if (d.host >= s.host && d.host + d.len <= s.host + s.len) return true;
  }
  return false;
}

TEST(BlkRequestProperty, RandomChainsNeverEscapeTheChainOrTheImage) {
  std::mt19937_64 rng(1234);
  const std::uint32_t types[] = {kTypeIn,      kTypeOut,         kTypeFlush, kTypeGetId,
                                 kTypeDiscard, kTypeWriteZeroes, 3,          kTypeSecureErase};
  auto chance = [&](int n) { return rng() % n == 0; };
  int accepted = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    // A mostly well-formed request, mutated now and then.
    const std::uint32_t type = types[rng() % 8];
    const std::uint64_t sector = chance(8) ? rng() : rng() % (kCapacity + 4);
    std::vector<std::uint8_t> bytes = TestChain::header(type, sector);
    if (type == kTypeOut || chance(10))
      bytes = TestChain::concat(bytes, pattern(512 * (rng() % 4) + (chance(8) ? 1 : 0), 3));
    if (type == kTypeDiscard || type == kTypeWriteZeroes) {
      const int ranges = static_cast<int>(rng() % 5);
      for (int i = 0; i < ranges; ++i) {
        const std::uint32_t flags = chance(6) ? static_cast<std::uint32_t>(rng() % 4) : 0;
        bytes = TestChain::concat(bytes,
                                  TestChain::range(chance(8) ? rng() : rng() % kCapacity,
                                                   static_cast<std::uint32_t>(rng() % 300), flags));
      }
    }
    if (chance(8)) bytes.resize(rng() % (bytes.size() + 1));
    TestChain t;
    // Readable bytes split at random points, then writable segments.
    std::size_t pos = 0;
    while (pos < bytes.size()) {
      const std::size_t n = 1 + rng() % (bytes.size() - pos);
      t.readable(
          {bytes.begin() + static_cast<long>(pos), bytes.begin() + static_cast<long>(pos + n)});
      pos += n;
    }
    if (type == kTypeIn || type == kTypeGetId || chance(10)) {
      const int data = static_cast<int>(rng() % 4);
      for (int i = 0; i < data; ++i)
        t.writable(chance(8) ? rng() % 700 + 1 : 512 * (1 + rng() % 3));
    }
    if (!chance(20)) t.writable(chance(4) ? 1 + rng() % 3 : 1);
    virtq::Chain c = t.chain();
    auto r = parse_request(c, limits());
    if (!r) continue;
    ++accepted;
    EXPECT_EQ(r->status, status_byte(c));
    for (const auto& d : r->data) {
      EXPECT_TRUE(inside(d, r->type == kTypeOut ? c.readable : c.writable));
      EXPECT_FALSE(d.host <= r->status && r->status < d.host + d.len) << "data covers status";
    }
    if (r->type == kTypeIn || r->type == kTypeOut) {
      EXPECT_LE(r->sector + (r->data_bytes >> kSectorShift), kCapacity);
      EXPECT_EQ(r->data_bytes % kSectorSize, 0u);
    }
    for (const Range& range : r->ranges) EXPECT_LE(range.sector + range.num_sectors, kCapacity);
  }
  EXPECT_GT(accepted, 400);
}

}  // namespace
}  // namespace vdma::blk::test

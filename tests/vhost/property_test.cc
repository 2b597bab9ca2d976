// Property tests for the decoders: random bytes, random headers and mutated valid
// messages (fixed seeds, bounded counts). Whatever comes in, a decoder returns either a
// valid decode or an error — never a crash, an out-of-bounds read (ASan) or a leaked
// descriptor — and every valid decode is canonical: encoding it, decoding that and
// encoding again gives the same bytes and descriptor count.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <limits>
#include <random>

#include "test_util.h"
#include "vdma/vhost/message.h"

namespace vdma::vhost {
namespace {

constexpr std::array<std::uint64_t, 17> kInteresting = {
    0,
    1,
    2,
    3,
    4,
    8,
    9,
    0xff,
    0x100,
    0x101,
    0x1000,
    0x7fff'ffff,
    0xffff'ffff,
    1ULL << 32,
    1ULL << 63,
    std::numeric_limits<std::uint64_t>::max() - 0xfff,
    std::numeric_limits<std::uint64_t>::max()};

class Fuzzer {
 public:
  explicit Fuzzer(std::uint64_t seed) : rng_(seed) {}

  std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  bool one_in(std::uint64_t n) { return below(n) == 0; }

  std::vector<std::uint8_t> random_bytes(std::size_t max_len) {
    std::vector<std::uint8_t> b(below(max_len + 1));
    for (auto& byte : b) byte = static_cast<std::uint8_t>(rng_());
    return b;
  }

  std::uint64_t interesting() {
    return one_in(4) ? rng_() : kInteresting[below(kInteresting.size())];
  }

  // Damages a valid payload: bit flips, interesting values over aligned fields, size
  // changes.
  void mutate(std::vector<std::uint8_t>& b) {
    const auto rounds = 1 + below(3);
    for (std::uint64_t i = 0; i < rounds; ++i) {
      switch (below(5)) {
        case 0:
          if (!b.empty()) b[below(b.size())] ^= static_cast<std::uint8_t>(1u << below(8));
          break;
        case 1:
          overwrite<std::uint32_t>(b);
          break;
        case 2:
          overwrite<std::uint64_t>(b);
          break;
        case 3:
          if (!b.empty()) b.resize(below(b.size()));
          break;
        default:
          b.resize(b.size() + 1 + below(40), static_cast<std::uint8_t>(rng_()));
          break;
      }
    }
  }

  // Descriptors: usually the right count, sometimes one off, sometimes many.
  std::size_t fd_count(std::size_t valid) {
    switch (below(6)) {
      case 0:
        return valid + 1;
      case 1:
        return valid == 0 ? 0 : valid - 1;
      case 2:
        return below(kMaxFds + 3);
      default:
        return valid;
    }
  }

  std::uint32_t flags(bool reply) {
    if (one_in(20)) return static_cast<std::uint32_t>(rng_());
    std::uint32_t f = kVersion1;
    if (reply != one_in(20)) f |= kFlagReply;
    if (one_in(reply ? 20 : 3)) f |= kFlagNeedReply;
    return f;
  }

 private:
  template <class T>
  void overwrite(std::vector<std::uint8_t>& b) {
    if (b.size() < sizeof(T)) return;
    const std::size_t at = below((b.size() - sizeof(T)) / sizeof(T) + 1) * sizeof(T);
    const T v = static_cast<T>(interesting());
    std::memcpy(b.data() + at, &v, sizeof(T));
  }

  std::mt19937_64 rng_;
};

// A raw message from a header and bytes, with `n` fresh descriptors.
Message make(Header h, std::vector<std::uint8_t> payload, std::size_t n) {
  Message m;
  m.header = h;
  m.payload = std::move(payload);
  m.fds = test::make_fds(n);
  return m;
}

void expect_same_wire(const Message& a, const Message& b) {
  EXPECT_EQ(a.header, b.header);
  EXPECT_EQ(a.payload, b.payload);
  EXPECT_EQ(a.fds.size(), b.fds.size());
}

// ---- Canonical form: encode(decode(x)) is a fixed point. ----

void check_canonical(DecodedMessage d) {
  const auto nr = d.need_reply ? NeedReply::kYes : NeedReply::kNo;
  Message once = encode(d.request, std::move(d.payload), nr);
  const Message copy{once.header, once.payload, {}};
  const std::size_t fds = once.fds.size();
  auto again = decode_frontend_message(std::move(once));
  ASSERT_TRUE(again) << request_name(d.request) << ": " << again.error().message();
  Message twice = encode(again->request, std::move(again->payload), nr);
  expect_same_wire(Message{copy.header, copy.payload, test::make_fds(fds)}, twice);
}

void check_canonical(DecodedBackendMessage d) {
  const auto nr = d.need_reply ? NeedReply::kYes : NeedReply::kNo;
  Message once = encode(d.request, std::move(d.payload), nr);
  const Message copy{once.header, once.payload, test::make_fds(once.fds.size())};
  auto again = decode_backend_message(std::move(once));
  ASSERT_TRUE(again) << request_name(d.request) << ": " << again.error().message();
  expect_same_wire(copy, encode(again->request, std::move(again->payload), nr));
}

void check_canonical(DecodedReply d, ReplyOptions options) {
  Message once = encode_reply(d.request, std::move(d.payload));
  const Message copy{once.header, once.payload, test::make_fds(once.fds.size())};
  auto again = decode_reply(d.request, std::move(once), options);
  ASSERT_TRUE(again) << request_name(d.request) << ": " << again.error().message();
  expect_same_wire(copy, encode_reply(again->request, std::move(again->payload)));
}

void check_canonical(DecodedBackendReply d) {
  Message once = encode_reply(d.request, std::move(d.payload));
  const Message copy{once.header, once.payload, test::make_fds(once.fds.size())};
  auto again = decode_backend_reply(d.request, std::move(once));
  ASSERT_TRUE(again) << again.error().message();
  expect_same_wire(copy, encode_reply(again->request, std::move(again->payload)));
}

// ---- Tests. ----

class PropertyTest : public ::testing::TestWithParam<std::uint64_t> {
 protected:
  void SetUp() override { fds_before_ = test::open_fd_count(); }
  void TearDown() override {
    EXPECT_EQ(test::open_fd_count(), fds_before_) << "a descriptor leaked";
  }
  int fds_before_ = 0;
};

// Random byte strings: a header is parsed from the first 12 bytes, the rest is payload.
TEST_P(PropertyTest, RandomBytesNeverCrash) {
  Fuzzer f(GetParam());
  for (int i = 0; i < 4000; ++i) {
    const auto bytes = f.random_bytes(2 * kHeaderSize + 300);
    auto header = parse_header(bytes);
    if (!header) {
      EXPECT_EQ(header.error(), Errc::kShortHeader);
      EXPECT_LT(bytes.size(), kHeaderSize);
      continue;
    }
    const auto payload = std::span(bytes).subspan(kHeaderSize);
    const std::size_t n = f.below(kMaxFds + 3);
    if (auto d = decode_frontend_message(*header, payload, test::make_fds(n))) {
      check_canonical(std::move(*d));
    }
    if (auto d = decode_backend_message(*header, payload, test::make_fds(n))) {
      check_canonical(std::move(*d));
    }
  }
}

// Headers that pass the version check, random request numbers and sizes, random payload
// bytes of (usually) the announced size.
TEST_P(PropertyTest, RandomHeadersNeverCrash) {
  Fuzzer f(GetParam());
  int decoded = 0;
  for (int i = 0; i < 20000; ++i) {
    auto payload = f.random_bytes(f.one_in(2) ? 48 : 300);
    Header h{static_cast<std::uint32_t>(f.below(kLastFrontendRequest + 3)), f.flags(false),
             static_cast<std::uint32_t>(payload.size())};
    if (f.one_in(10)) h.size = static_cast<std::uint32_t>(f.interesting());
    if (auto d = decode_frontend_message(make(h, payload, f.below(3)))) {
      ++decoded;
      check_canonical(std::move(*d));
    }
  }
  EXPECT_GT(decoded, 100);  // the walk reaches past the header checks
}

// Valid messages of every request, damaged: the deep validation paths.
TEST_P(PropertyTest, MutatedRequestsNeverCrash) {
  Fuzzer f(GetParam());
  const auto requests = test::all_frontend_requests();
  int decoded = 0;
  for (int i = 0; i < 20000; ++i) {
    const FrontendRequest r = requests[f.below(requests.size())];
    Message valid = encode(r, test::sample_request(r));
    auto payload = valid.payload;
    f.mutate(payload);
    Header h{f.one_in(30) ? static_cast<std::uint32_t>(f.below(50)) : valid.header.request,
             f.flags(false), static_cast<std::uint32_t>(payload.size())};
    if (f.one_in(20)) h.size = static_cast<std::uint32_t>(f.interesting());
    if (auto d = decode_frontend_message(make(h, payload, f.fd_count(valid.fds.size())))) {
      ++decoded;
      check_canonical(std::move(*d));
    }
  }
  EXPECT_GT(decoded, 1000);
}

TEST_P(PropertyTest, MutatedBackendRequestsNeverCrash) {
  Fuzzer f(GetParam());
  const auto requests = test::all_backend_requests();
  int decoded = 0;
  for (int i = 0; i < 10000; ++i) {
    const BackendRequest r = requests[f.below(requests.size())];
    Message valid = encode(r, test::sample_backend_request(r));
    auto payload = valid.payload;
    if (!f.one_in(4)) f.mutate(payload);
    Header h{f.one_in(30) ? static_cast<std::uint32_t>(f.below(12)) : valid.header.request,
             f.flags(false), static_cast<std::uint32_t>(payload.size())};
    if (auto d = decode_backend_message(make(h, payload, f.fd_count(valid.fds.size())))) {
      ++decoded;
      check_canonical(std::move(*d));
    }
  }
  EXPECT_GT(decoded, 1000);
}

TEST_P(PropertyTest, MutatedRepliesNeverCrash) {
  Fuzzer f(GetParam());
  const auto requests = test::all_frontend_requests();
  int decoded = 0;
  for (int i = 0; i < 20000; ++i) {
    const FrontendRequest r = requests[f.below(requests.size())];
    Message valid = encode_reply(r, test::sample_reply(r));
    auto payload = valid.payload;
    if (!f.one_in(4)) f.mutate(payload);
    // Sometimes the reply answers another request than the one sent.
    const FrontendRequest sent = f.one_in(10) ? requests[f.below(requests.size())] : r;
    const ReplyOptions options{.postcopy = f.one_in(4)};
    Header h{valid.header.request, f.flags(true), static_cast<std::uint32_t>(payload.size())};
    if (auto d = decode_reply(sent, make(h, payload, f.fd_count(valid.fds.size())), options)) {
      ++decoded;
      check_canonical(std::move(*d), options);
    }
  }
  EXPECT_GT(decoded, 1000);
}

TEST_P(PropertyTest, MutatedBackendRepliesNeverCrash) {
  Fuzzer f(GetParam());
  const auto requests = test::all_backend_requests();
  for (int i = 0; i < 5000; ++i) {
    const BackendRequest r = requests[f.below(requests.size())];
    Message valid = encode_reply(r, test::sample_backend_reply(r));
    auto payload = valid.payload;
    if (!f.one_in(4)) f.mutate(payload);
    Header h{valid.header.request, f.flags(true), static_cast<std::uint32_t>(payload.size())};
    if (auto d = decode_backend_reply(r, make(h, payload, f.fd_count(valid.fds.size())))) {
      check_canonical(std::move(*d));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, PropertyTest, ::testing::Values(1, 42, 20240601));

}  // namespace
}  // namespace vdma::vhost

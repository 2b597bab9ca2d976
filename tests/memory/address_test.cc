#include "vdma/memory/address.h"

#include <gtest/gtest.h>

#include <type_traits>

namespace vdma {
namespace {

static_assert(!std::is_convertible_v<Gpa, Iova>);
static_assert(!std::is_convertible_v<Gpa, DmaAddr>);
static_assert(!std::is_convertible_v<std::uint64_t, Gpa>);
static_assert(!std::is_convertible_v<Gpa, std::uint64_t>);

TEST(AddressTest, TypedArithmetic) {
  Gpa a{0x1000};
  Gpa b = a + 0x234;
  EXPECT_EQ(b.value(), 0x1234u);
  EXPECT_EQ(b - a, 0x234u);
  EXPECT_LT(a, b);
}

TEST(AddressTest, CheckedEnd) {
  EXPECT_EQ(checked_end(10, 5), 15u);
  EXPECT_EQ(checked_end(UINT64_MAX, 0), UINT64_MAX);
  EXPECT_FALSE(checked_end(UINT64_MAX, 1).has_value());
  EXPECT_FALSE(checked_end(1ull << 63, 1ull << 63).has_value());
}

}  // namespace
}  // namespace vdma

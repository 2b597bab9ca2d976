#include "vdma/base/result.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "vdma/memory/errors.h"

namespace vdma {
namespace {

Result<int> parse_positive(int v) {
  if (v <= 0) return Err(memory::Errc::kInvalidArgument);
  return v;
}

Result<int> doubled(int v) {
  int x = VDMA_TRY(parse_positive(v));
  return 2 * x;
}

Result<void> check_even(int v) {
  if (v % 2) return Err(memory::Errc::kInvalidArgument);
  return Ok();
}

Result<int> even_then_half(int v) {
  VDMA_TRY(check_even(v));
  return v / 2;
}

TEST(ResultTest, ValueAndError) {
  Result<int> ok = 5;
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(*ok, 5);
  EXPECT_FALSE(ok.error());
  Result<int> bad = Err(memory::Errc::kOverflow);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error(), memory::Errc::kOverflow);
  EXPECT_EQ(bad.value_or(9), 9);
  EXPECT_EQ(bad.error().message(), "address plus length overflows 64 bits");
  EXPECT_STREQ(bad.error().category().name(), "vdma.memory");
}

TEST(ResultTest, TryPropagatesValuesAndErrors) {
  EXPECT_EQ(*doubled(21), 42);
  EXPECT_EQ(doubled(-1).error(), memory::Errc::kInvalidArgument);
  EXPECT_EQ(*even_then_half(8), 4);
  EXPECT_EQ(even_then_half(7).error(), memory::Errc::kInvalidArgument);
}

TEST(ResultTest, MoveOnlyValues) {
  Result<std::unique_ptr<std::string>> r = std::make_unique<std::string>("x");
  Result<std::unique_ptr<std::string>> moved = std::move(r);
  ASSERT_TRUE(moved);
  EXPECT_EQ(**moved, "x");
  std::unique_ptr<std::string> out = std::move(moved).value();
  EXPECT_EQ(*out, "x");
}

TEST(ResultTest, AssignmentSwitchesState) {
  Result<std::string> r = std::string("a");
  r = Err(memory::Errc::kNoSpace);
  EXPECT_EQ(r.error(), memory::Errc::kNoSpace);
  r = std::string("b");
  EXPECT_EQ(*r, "b");
}

TEST(ResultDeathTest, ValueOfErrorAborts) {
  Result<int> bad = Err(memory::Errc::kOverflow);
  EXPECT_DEATH((void)bad.value(), "overflows");
}

}  // namespace
}  // namespace vdma

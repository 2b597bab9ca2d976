#include "vdma/base/moving_ptr.h"

#include <gtest/gtest.h>

namespace vdma {
namespace {

TEST(MovingPtrTest, MovedFromIsNull) {
  int x = 7;
  MovingPtr<int> a(&x);
  MovingPtr<int> b(std::move(a));
  EXPECT_TRUE(a == nullptr);  // NOLINT(bugprone-use-after-move): the point of the type
  EXPECT_EQ(*b, 7);
  MovingPtr<int> c;
  c = std::move(b);
  EXPECT_TRUE(b == nullptr);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(c.get(), &x);
  c = nullptr;
  EXPECT_TRUE(c == nullptr);
}

}  // namespace
}  // namespace vdma

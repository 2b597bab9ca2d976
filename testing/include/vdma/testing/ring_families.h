// The ring layouts as a GoogleTest type list, for typed suites over split and packed.
#pragma once

#include <gtest/gtest.h>

#include "vdma/testing/loopback.h"

namespace vdma::testing {

template <class List>
struct ToGtestTypes;
template <class... Rings>
struct ToGtestTypes<RingList<Rings...>> {
  using type = ::testing::Types<Rings...>;
};

using RingFamilies = ToGtestTypes<AllRings>::type;

}  // namespace vdma::testing

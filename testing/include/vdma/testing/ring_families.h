// The ring layouts as a GoogleTest type list, for typed suites over split and packed.
#pragma once

#include <gtest/gtest.h>

#include "vdma/testing/loopback.h"

namespace vdma::testing {

using RingFamilies = ::testing::Types<SplitRing>;

}  // namespace vdma::testing

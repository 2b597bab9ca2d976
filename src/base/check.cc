#include "vdma/base/check.h"

#include <cstdio>
#include <cstdlib>

namespace vdma::detail {

void check_failed(const char* file, int line, const char* cond, const char* msg) {
  std::fprintf(stderr, "level=fatal file=%s:%d check=\"%s\" msg=\"%s\"\n", file, line, cond,
               msg ? msg : "");
  std::fflush(stderr);
  std::abort();
}

}  // namespace vdma::detail

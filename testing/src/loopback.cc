#include "vdma/testing/loopback.h"

namespace vdma::testing {

std::uint32_t echo_chain(const virtq::Chain& c) {
  std::size_t ri = 0, roff = 0, written = 0;
  for (const auto& w : c.writable) {
    std::size_t woff = 0;
    while (woff < w.len && ri < c.readable.size()) {
      const auto& r = c.readable[ri];
      std::size_t n = std::min<std::size_t>(w.len - woff, r.len - roff);
      std::memmove(w.host + woff, r.host + roff, n);  // guest memory: may alias
      woff += n;
      roff += n;
      written += n;
      if (roff == r.len) {
        ++ri;
        roff = 0;
      }
    }
  }
  return static_cast<std::uint32_t>(written);
}

}  // namespace vdma::testing

// CHECK: assertions for violated *internal* invariants (never for peer input).
//
// A peer (device or driver) can never trigger a CHECK: its input yields an error value and
// a broken queue or connection. A failed CHECK means a bug in virtio-dma and aborts with
// the file, line and condition.
//
//   VDMA_CHECK(slot < slots_.size());
//   VDMA_CHECK_MSG(fd >= 0, "region without fd");
#pragma once

namespace vdma::detail {
[[noreturn]] void check_failed(const char* file, int line, const char* cond, const char* msg);
}  // namespace vdma::detail

#define VDMA_CHECK(cond)                                                \
  do {                                                                  \
    if (__builtin_expect(!(cond), 0))                                   \
      ::vdma::detail::check_failed(__FILE__, __LINE__, #cond, nullptr); \
  } while (0)

#define VDMA_CHECK_MSG(cond, msg)                                     \
  do {                                                                \
    if (__builtin_expect(!(cond), 0))                                 \
      ::vdma::detail::check_failed(__FILE__, __LINE__, #cond, (msg)); \
  } while (0)

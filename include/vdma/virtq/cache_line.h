// Cache-line placement for queue state that one side (driver or device thread) writes on
// every buffer: the per-entry arrays are line-aligned blocks of whole lines, and the queue
// objects are framed by a line of padding at each end, so state written by one thread
// never shares a line with state the other thread reads (false sharing costs a cross-core
// line transfer per access). Padding rather than alignas on the class: an over-aligned
// type is fragile inside Result / optional / sanitizer fake stacks.
//
//   class MyQueue { LinePad front_; LineVector<std::uint16_t> shadow_; ... LinePad back_; };
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace vdma::virtq {

inline constexpr std::size_t kCacheLine = 64;

// One line of padding (no state).
struct LinePad {
  std::byte bytes[kCacheLine];
};

// Allocates line-aligned blocks rounded up to whole lines.
template <class T>
struct LineAllocator {
  using value_type = T;
  LineAllocator() = default;
  template <class U>
  LineAllocator(const LineAllocator<U>&) {}  // NOLINT: rebinding is implicit
  static std::size_t bytes(std::size_t n) {
    return (n * sizeof(T) + kCacheLine - 1) & ~(kCacheLine - 1);
  }
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new (bytes(n), std::align_val_t{kCacheLine}));
  }
  void deallocate(T* p, std::size_t n) {
    ::operator delete (p, bytes(n), std::align_val_t{kCacheLine});
  }
  template <class U>
  bool operator==(const LineAllocator<U>&) const {
    return true;
  }
};

template <class T>
using LineVector = std::vector<T, LineAllocator<T>>;

}  // namespace vdma::virtq

// MovingPtr<T>: a non-owning pointer that is null after being moved from.
//
// For classes whose destructor releases resources through a borrowed pointer: with a
// MovingPtr member the defaulted move constructor is correct (the moved-from object sees
// null and releases nothing), so no hand-written member-by-member move is needed.
//
//   struct Queue {
//     Queue(Queue&&) noexcept = default;
//     ~Queue() { if (ops_) ops_->free(...); }
//     MovingPtr<Ops> ops_;
//   };
#pragma once

#include <utility>

namespace vdma {

template <class T>
class MovingPtr {
 public:
  MovingPtr() = default;
  explicit MovingPtr(T* p) : p_(p) {}
  MovingPtr(MovingPtr&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  MovingPtr& operator=(MovingPtr&& o) noexcept {
    p_ = std::exchange(o.p_, nullptr);
    return *this;
  }
  MovingPtr& operator=(std::nullptr_t) {
    p_ = nullptr;
    return *this;
  }
  T* get() const { return p_; }
  T* operator->() const { return p_; }
  T& operator*() const { return *p_; }
  friend bool operator==(const MovingPtr& a, std::nullptr_t) { return a.p_ == nullptr; }

 private:
  T* p_ = nullptr;
};

}  // namespace vdma

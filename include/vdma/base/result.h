// Result<T>: a value or a std::error_code, shaped like C++23 std::expected<T, std::error_code>.
//
// Errors are values in virtio-dma (STYLE.md rule 2): every fallible call returns a
// [[nodiscard]] Result, and callers propagate with VDMA_TRY.
//
//   Result<int> parse(std::string_view s);
//   Result<int> twice(std::string_view s) {
//     int v = VDMA_TRY(parse(s));
//     return 2 * v;
//   }
//   if (auto r = twice("21"); !r) log(r.error().message());
#pragma once

#include <cstdlib>
#include <new>
#include <system_error>
#include <type_traits>
#include <utility>

#include "vdma/base/check.h"

namespace vdma {

namespace detail {
// The failure path of Result::value(), out of line and cold so value() inlines to a test
// and a branch (building the message inline made GCC emit value() out of line on hot
// paths).
[[noreturn, gnu::cold, gnu::noinline]] inline void bad_result_access(const std::error_code& ec) {
  check_failed(__FILE__, __LINE__, "has_value()", ec.message().c_str());
}
}  // namespace detail

// The error half of a Result, like std::unexpected.
struct Unexpected {
  std::error_code error;
};

// Builds an Unexpected from any registered error-code enum (or a std::error_code).
template <class E>
requires std::is_error_code_enum_v<E>
inline Unexpected Err(E e) {
  return Unexpected{make_error_code(e)};
}
inline Unexpected Err(std::error_code ec) {
  return Unexpected{ec};
}

template <class T>
class [[nodiscard]] Result {
 public:
  using value_type = T;

  Result(const T& v) : has_(true) { new (&value_) T(v); }        // NOLINT: implicit like expected
  Result(T&& v) : has_(true) { new (&value_) T(std::move(v)); }  // NOLINT
  template <class U>
  requires(std::is_constructible_v<T, U&&> && !std::is_same_v<std::decay_t<U>, T> &&
           !std::is_same_v<std::decay_t<U>, Unexpected> && !std::is_same_v<std::decay_t<U>, Result>)
      Result(U&& v)
      : has_(true) {  // NOLINT
    new (&value_) T(std::forward<U>(v));
  }
  Result(Unexpected u) : has_(false) {  // NOLINT
    VDMA_CHECK(u.error);                // an error Result must carry an error
    new (&error_) std::error_code(u.error);
  }
  Result(const Result& o) : has_(o.has_) {
    if (has_)
      new (&value_) T(o.value_);
    else
      new (&error_) std::error_code(o.error_);
  }
  Result(Result&& o) noexcept(std::is_nothrow_move_constructible_v<T>) : has_(o.has_) {
    if (has_)
      new (&value_) T(std::move(o.value_));
    else
      new (&error_) std::error_code(o.error_);
  }
  Result& operator=(Result o) noexcept(std::is_nothrow_move_constructible_v<T>) {
    destroy();
    has_ = o.has_;
    if (has_)
      new (&value_) T(std::move(o.value_));
    else
      new (&error_) std::error_code(o.error_);
    return *this;
  }
  ~Result() { destroy(); }

  bool has_value() const { return has_; }
  explicit operator bool() const { return has_; }

  T& value() & {
    if (!has_) [[unlikely]]
      detail::bad_result_access(error_);
    return value_;
  }
  const T& value() const& {
    if (!has_) [[unlikely]]
      detail::bad_result_access(error_);
    return value_;
  }
  T&& value() && {
    if (!has_) [[unlikely]]
      detail::bad_result_access(error_);
    return std::move(value_);
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // The error; only meaningful when !has_value(). Returns an empty code otherwise.
  std::error_code error() const { return has_ ? std::error_code{} : error_; }

  template <class U>
  T value_or(U&& fallback) const& {
    return has_ ? value_ : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  void destroy() {
    if (has_) value_.~T();
  }
  bool has_;
  union {
    T value_;
    std::error_code error_;
  };
};

template <>
class [[nodiscard]] Result<void> {
 public:
  using value_type = void;
  // Success is a null category: no call to std::system_category() on the hot path (a
  // default std::error_code makes one).
  Result() = default;
  Result(Unexpected u) : code_(u.error.value()), category_(&u.error.category()) {  // NOLINT
    VDMA_CHECK(u.error);
  }

  bool has_value() const { return category_ == nullptr; }
  explicit operator bool() const { return category_ == nullptr; }
  void value() const {
    if (!has_value()) [[unlikely]]
      detail::bad_result_access(error());
  }
  std::error_code error() const {
    return category_ ? std::error_code(code_, *category_) : std::error_code{};
  }

 private:
  int code_ = 0;
  const std::error_category* category_ = nullptr;
};

// The success value of Result<void>.
inline Result<void> Ok() {
  return {};
}

}  // namespace vdma

// Evaluates a Result expression; on error returns the error from the enclosing function,
// otherwise yields the value (nothing for Result<void>). GNU statement expression: g++ and
// clang both support it.
#define VDMA_TRY(expr)                                                          \
  __extension__({                                                               \
    auto&& vdma_try_result_ = (expr);                                           \
    if (!vdma_try_result_) return ::vdma::Unexpected{vdma_try_result_.error()}; \
    std::move(vdma_try_result_).value();                                        \
  })

// Helpers for the per-module error enums (STYLE.md rule 2).
//
// Each module declares `enum class Errc`, documents every variant, and registers it with
// VDMA_ERROR_ENUM so it converts to std::error_code:
//
//   namespace vdma::dma {
//   enum class Errc { kPoolFull = 1, ... };
//   const char* describe(Errc e);              // one line per variant
//   const std::error_category& dma_category();
//   inline std::error_code make_error_code(Errc e) { return {int(e), dma_category()}; }
//   }
//   VDMA_ERROR_ENUM(vdma::dma::Errc)
#pragma once

#include <string>
#include <system_error>

namespace vdma {

// A std::error_category whose messages come from a module's describe() function.
template <class E, const char* (*Describe)(E)>
class EnumCategory final : public std::error_category {
 public:
  explicit EnumCategory(const char* name) : name_(name) {}
  const char* name() const noexcept override { return name_; }
  std::string message(int c) const override { return Describe(static_cast<E>(c)); }

 private:
  const char* name_;
};

}  // namespace vdma

#define VDMA_ERROR_ENUM(E) \
  template <>              \
  struct std::is_error_code_enum<E> : std::true_type {};

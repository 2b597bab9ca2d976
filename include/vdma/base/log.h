// Structured log lines: `level=warn component=dma msg="..."`, one per event, on stderr.
//
// The level comes from the VDMA_LOG environment variable (debug, info, warn, error;
// default info). Tests can capture lines with ScopedLogCapture.
//
//   vdma::log_warn("memory", "memfd_secret unavailable ({}), using sealed memfd", err);
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>

namespace vdma {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

bool log_enabled(LogLevel level);
void log_line(LogLevel level, std::string_view component, std::string_view message);

template <class... A>
void log(LogLevel level, std::string_view component, fmt::format_string<A...> f, A&&... a) {
  if (log_enabled(level)) log_line(level, component, fmt::format(f, std::forward<A>(a)...));
}
template <class... A>
void log_info(std::string_view c, fmt::format_string<A...> f, A&&... a) {
  log(LogLevel::kInfo, c, f, std::forward<A>(a)...);
}
template <class... A>
void log_warn(std::string_view c, fmt::format_string<A...> f, A&&... a) {
  log(LogLevel::kWarn, c, f, std::forward<A>(a)...);
}
template <class... A>
void log_error(std::string_view c, fmt::format_string<A...> f, A&&... a) {
  log(LogLevel::kError, c, f, std::forward<A>(a)...);
}

// While alive, every emitted line (formatted) is also appended to `lines` (tests only;
// not thread-safe against concurrent capture objects).
class ScopedLogCapture {
 public:
  ScopedLogCapture();
  ~ScopedLogCapture();
  ScopedLogCapture(const ScopedLogCapture&) = delete;
  ScopedLogCapture& operator=(const ScopedLogCapture&) = delete;
  // True if any captured line contains `needle`.
  bool contains(std::string_view needle) const;
  std::string all() const;
};

}  // namespace vdma

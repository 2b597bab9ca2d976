#include "vdma/base/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

namespace vdma {
namespace {

LogLevel level_from_env() {
  const char* v = std::getenv("VDMA_LOG");
  if (v == nullptr) return LogLevel::kInfo;
  if (std::strcmp(v, "debug") == 0) return LogLevel::kDebug;
  if (std::strcmp(v, "warn") == 0) return LogLevel::kWarn;
  if (std::strcmp(v, "error") == 0) return LogLevel::kError;
  return LogLevel::kInfo;
}

const char* level_name(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}

std::mutex g_mutex;
std::vector<std::string>* g_capture = nullptr;  // guarded by g_mutex
std::atomic<bool> g_capturing{false};           // mirrors g_capture != nullptr

}  // namespace

bool log_enabled(LogLevel level) {
  static const LogLevel min_level = level_from_env();
  return level >= min_level || g_capturing.load(std::memory_order_relaxed);
}

void log_line(LogLevel level, std::string_view component, std::string_view message) {
  std::string line =
      fmt::format("level={} component={} msg=\"{}\"\n", level_name(level), component, message);
  std::lock_guard lock(g_mutex);
  if (g_capture != nullptr) g_capture->push_back(line);
  static const LogLevel min_level = level_from_env();
  if (level >= min_level) std::fwrite(line.data(), 1, line.size(), stderr);
}

ScopedLogCapture::ScopedLogCapture() {
  std::lock_guard lock(g_mutex);
  g_capture = new std::vector<std::string>();
  g_capturing.store(true, std::memory_order_relaxed);
}

ScopedLogCapture::~ScopedLogCapture() {
  std::lock_guard lock(g_mutex);
  delete g_capture;
  g_capture = nullptr;
  g_capturing.store(false, std::memory_order_relaxed);
}

bool ScopedLogCapture::contains(std::string_view needle) const {
  std::lock_guard lock(g_mutex);
  for (const auto& l : *g_capture)
    if (l.find(needle) != std::string::npos) return true;
  return false;
}

std::string ScopedLogCapture::all() const {
  std::lock_guard lock(g_mutex);
  std::string out;
  for (const auto& l : *g_capture) out += l;
  return out;
}

}  // namespace vdma

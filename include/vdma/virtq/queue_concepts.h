// The two C++20 concepts every ring layout meets, one per side, so split and packed are
// interchangeable in templates (devices, loopback, tests) with no `if (packed)` anywhere.
//
//   template <DriverQueue Q> void fill(Q& q) { ... q.add_buffers(r, w, t) ... }
#pragma once

#include <concepts>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "vdma/base/result.h"
#include "vdma/virtq/types.h"

namespace vdma::virtq {

template <class Q>
concept DriverQueue = requires(Q& q, std::span<const Segment> s, std::uint64_t token) {
  { q.add_buffers(s, s, token) } -> std::same_as<Result<void>>;
  { q.kick_prepare() } -> std::same_as<bool>;
  { q.get_used() } -> std::same_as<Result<std::optional<UsedBuffer>>>;
  {q.disable_callbacks()};
  { q.enable_callbacks() } -> std::same_as<bool>;
  { q.detach_unused() } -> std::same_as<std::vector<std::uint64_t>>;
  { q.addresses() } -> std::same_as<RingAddresses>;
  { q.num_free() } -> std::same_as<std::uint32_t>;
  { q.broken() } -> std::same_as<bool>;
};

template <class Q>
concept DeviceQueue = requires(Q& q, Chain& c, std::uint16_t id, std::uint32_t len, bool on) {
  { q.pop(c) } -> std::same_as<Result<bool>>;
  { q.push_used(id, len) } -> std::same_as<Result<void>>;
  { q.publish_used() } -> std::same_as<bool>;
  {q.set_notifications(on)};
  { q.has_available() } -> std::same_as<bool>;
  { q.last_avail_idx() } -> std::same_as<std::uint16_t>;
  { q.broken() } -> std::same_as<bool>;
};

}  // namespace vdma::virtq

// Private to the back end: what a connection knows about one vring.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "vdma/memory/unique_fd.h"
#include "vdma/vhost/backend.h"
#include "vdma/vhost/backend_device.h"
#include "vdma/vhost/backend_translator.h"
#include "vdma/vhost/protocol.h"

namespace vdma::vhost {

struct BackendConnection::Vring {
  explicit Vring(const BackendMemory& m) : translator(m) {}

  std::uint32_t num = 0;          // SET_VRING_NUM (0: not set)
  std::optional<VringAddr> addr;  // SET_VRING_ADDR
  // SET_VRING_BASE, or where a stopped ring was (packed: used position in bits 16..31).
  std::optional<std::uint32_t> base;
  UniqueFd kick;                     // SET_VRING_KICK
  UniqueFd call;                     // SET_VRING_CALL
  UniqueFd err;                      // SET_VRING_ERR
  bool started = false;              // kick received, not stopped by GET_VRING_BASE
  bool enabled = false;              // SET_VRING_ENABLE
  bool start_pending_iotlb = false;  // start waits for an IOTLB answer
  bool error_signalled = false;
  BackendTranslator translator;
  std::unique_ptr<DeviceRing> ring;  // while running
};

}  // namespace vdma::vhost

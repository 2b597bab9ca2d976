// EchoDevice: the smallest useful vhost-user device, for back-end tests and benchmarks.
// Every chain's readable bytes are copied into its writable segments (as far as they
// reach); the used length is the bytes written. Its config space reads as the byte
// offsets (byte i holds i), so config accesses can be checked.
//
//   BackendServer::Create({.socket_path = p,
//                          .make_device = [] { return std::make_unique<EchoDevice>(2); }});
#pragma once

#include <cstdint>
#include <span>

#include "vdma/testing/loopback.h"
#include "vdma/vhost/backend_device.h"

namespace vdma::testing {

class EchoDevice final : public vhost::BackendDevice {
 public:
  explicit EchoDevice(std::uint16_t queues = 2, FeatureSet extra = {})
      : queues_(queues), extra_(extra) {}
  FeatureSet features() const override {
    return FeatureSet{kVirtioFVersion1, kVirtioFRingIndirectDesc, kVirtioFRingEventIdx,
                      kVirtioFRingPacked, kVirtioFAccessPlatform} |
           extra_;
  }
  vhost::ProtocolFeatureSet protocol_features() const override { return {vhost::kProtocolFConfig}; }
  std::uint16_t num_queues() const override { return queues_; }
  Result<void> read_config(std::uint32_t offset, std::span<std::uint8_t> out) override {
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::uint8_t>(offset + i);
    return Ok();
  }
  void process(vhost::DeviceRing& ring) override {
    virtq::Chain c;
    while (true) {
      auto r = ring.pop(c);
      if (!r) {
        if (ring.broken()) break;
        continue;  // a rejected chain (returned with length 0, logged)
      }
      if (!*r) break;
      (void)ring.push_used(c.head, echo_chain(c));
      ++chains;
    }
    ring.notify();
  }
  std::uint64_t chains = 0;

 private:
  std::uint16_t queues_;
  FeatureSet extra_;
};

}  // namespace vdma::testing

// EchoDevice: a BackendDevice for the front-end tests that copies each chain's readable
// bytes into its writable ones (offering every ring feature and ACCESS_PLATFORM, two
// queues), so data that went through the front end's DMA API can be checked on return.
//
//   BackendServer::Create({.socket_path = p,
//                          .make_device = [] { return std::make_unique<EchoDevice>(); }});
#pragma once

#include <algorithm>
#include <cstring>

#include "vdma/vhost/backend.h"

namespace vdma::vhost::test {

// Copies each chain's readable bytes into its writable ones.
class EchoDevice final : public BackendDevice {
 public:
  FeatureSet features() const override {
    return {kVirtioFVersion1, kVirtioFAccessPlatform, kVirtioFRingIndirectDesc,
            kVirtioFRingEventIdx, kVirtioFRingPacked};
  }
  std::uint16_t num_queues() const override { return 2; }
  void process(DeviceRing& ring) override {
    // Kicks off while draining, then on again (with EVENT_IDX that publishes avail_event,
    // without which a split driver stops kicking) and a last look for a racing buffer. A
    // translation miss ends the pass: the back end calls again once the IOTLB has it.
    do {
      ring.set_notifications(false);
      drain(ring);
      ring.set_notifications(true);
    } while (ring.has_available() && !ring.broken() && !ring.waiting_for_iotlb());
    ring.notify();
  }

 private:
  static void drain(DeviceRing& ring) {
    virtq::Chain c;
    while (true) {
      auto r = ring.pop(c);
      if (!r || !*r) break;
      std::uint64_t copied = 0;
      std::size_t wi = 0, woff = 0;
      for (const auto& seg : c.readable) {
        std::size_t roff = 0;
        while (roff < seg.len && wi < c.writable.size()) {
          const auto& w = c.writable[wi];
          const std::size_t n = std::min<std::size_t>(seg.len - roff, w.len - woff);
          std::memcpy(w.host + woff, seg.host + roff, n);
          roff += n;
          woff += n;
          copied += n;
          if (woff == w.len) {
            ++wi;
            woff = 0;
          }
        }
      }
      (void)ring.push_used(c.head, static_cast<std::uint32_t>(copied));
    }
  }
};

}  // namespace vdma::vhost::test

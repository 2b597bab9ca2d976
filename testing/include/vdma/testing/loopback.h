// Loopback: a driver queue and a device queue over one guest's memory, in one process.
//
// The driver side uses the DMA ops the platform policy picks; the device side resolves
// addresses the way a device would (guest-physical, or IOVAs through the IOMMU). The
// device's behaviour is an echo: it copies what it read into the writable segments and
// returns the bytes written, so one round trip checks both directions. Used by the typed
// ring tests, the concurrency tests and the loopback benchmarks.
//
//   auto lb = VDMA_TRY(Loopback<SplitRing>::Create({.platform = dma::kSecureGuest}));
//   lb->driver().add_buffers(...); lb->driver().kick_prepare();
//   lb->serve_all();                                  // device side, same thread
//   auto u = lb->driver().get_used();
#pragma once

#include <algorithm>
#include <cstring>
#include <memory>
#include <type_traits>

#include "vdma/dma/guest.h"
#include "vdma/virtq/packed_device.h"
#include "vdma/virtq/packed_driver.h"
#include "vdma/virtq/queue_concepts.h"
#include "vdma/virtq/split_device.h"
#include "vdma/virtq/split_driver.h"
#include "vdma/virtq/translator.h"

namespace vdma::testing {

// Ring families: the driver and device queue templates of one layout.
struct SplitRing {
  template <class Ops>
  using Driver = virtq::SplitDriverQueue<Ops>;
  template <class T>
  using Device = virtq::SplitDeviceQueue<T>;
  static constexpr bool kPacked = false;
  static constexpr const char* kName = "split";
};
struct PackedRing {
  template <class Ops>
  using Driver = virtq::PackedDriverQueue<Ops>;
  template <class T>
  using Device = virtq::PackedDeviceQueue<T>;
  static constexpr bool kPacked = true;
  static constexpr const char* kName = "packed";
};

// Every ring layout, for code that instantiates per layout (typed tests, benchmarks).
template <class... Rings>
struct RingList {};
using AllRings = RingList<SplitRing, PackedRing>;

struct LoopbackConfig {
  dma::Platform platform = dma::kTraditional;
  std::uint32_t queue_size = 256;
  bool indirect = false;
  bool event_idx = false;
  std::uint32_t max_indirect = 16;
  std::uint64_t ram_bytes = 16ull << 20;
  std::uint64_t bounce_bytes = 16ull << 20;
  virtq::UsedLenPolicy used_len_policy = virtq::UsedLenPolicy::kBreak;
};

// Echo: copies the chain's readable bytes into its writable segments; returns the number
// of bytes written.
std::uint32_t echo_chain(const virtq::Chain& c);

// Builds the device-side translator of type T for a guest (IOVAs through `iommu` when it
// is non-null and T can use it).
template <virtq::Translator T>
T make_translator(const dma::Iommu* iommu, const memory::GuestMemory& m) {
  if constexpr (std::is_constructible_v<T, const dma::Iommu*, const memory::GuestMemory&>) {
    return T(iommu, m);
  } else if constexpr (std::is_constructible_v<T, const dma::Iommu&, const memory::GuestMemory&>) {
    return T(*iommu, m);
  } else {
    return T(m);
  }
}

template <class Ring, class Ops = dma::DmaOps, virtq::Translator T = virtq::PlatformTranslator>
class Loopback {
 public:
  using DriverQ = typename Ring::template Driver<Ops>;
  using DeviceQ = typename Ring::template Device<T>;

  static Result<std::unique_ptr<Loopback>> Create(const LoopbackConfig& cfg) {
    std::unique_ptr<Loopback> lb(new Loopback(cfg));
    lb->guest_ = VDMA_TRY(dma::Guest::Create({.platform = cfg.platform,
                                              .ram_bytes = cfg.ram_bytes,
                                              .coherent_bytes = 4ull << 20,
                                              .bounce_bytes = cfg.bounce_bytes}));
    lb->features_ = dma::required_driver_features(cfg.platform);
    if (cfg.indirect) lb->features_.set(kVirtioFRingIndirectDesc);
    if (cfg.event_idx) lb->features_.set(kVirtioFRingEventIdx);
    if (Ring::kPacked) lb->features_.set(kVirtioFRingPacked);
    if constexpr (std::is_base_of_v<dma::DmaOps, Ops>) {
      auto ops = VDMA_TRY(lb->guest_->make_ops(lb->features_));
      // A concrete Ops type must be the one the policy picked for this platform.
      if (dynamic_cast<Ops*>(ops.get()) == nullptr) return Err(dma::Errc::kInvalidOption);
      lb->ops_ = std::unique_ptr<Ops>(static_cast<Ops*>(ops.release()));
    } else {
      lb->ops_ = std::make_unique<Ops>(*lb->guest_);  // a baseline such as RawGpaOps
    }
    virtq::DriverQueueConfig dcfg{.size = cfg.queue_size,
                                  .features = virtq::RingFeatures::From(lb->features_),
                                  .max_indirect = cfg.max_indirect,
                                  .used_len_policy = cfg.used_len_policy};
    const std::size_t arena_bytes = DriverQ::indirect_arena_bytes(dcfg);
    if (arena_bytes > 0) {
      lb->arena_ = {VDMA_TRY(lb->guest_->alloc_ram(arena_bytes)), arena_bytes};
    }
    lb->driver_ = std::make_unique<DriverQ>(VDMA_TRY(DriverQ::Create(*lb->ops_, dcfg, lb->arena_)));
    lb->translator_ = std::make_unique<T>(make_translator<T>(
        cfg.platform.iommu ? lb->guest_->iommu() : nullptr, lb->guest_->memory()));
    lb->device_ = std::make_unique<DeviceQ>(VDMA_TRY(DeviceQ::Create(
        *lb->translator_, {.rings = lb->driver_->addresses(), .features = dcfg.features})));
    return lb;
  }

  ~Loopback() {
    device_.reset();
    driver_.reset();  // unmaps what is outstanding before the ops go
    ops_.reset();
  }

  dma::Guest& guest() { return *guest_; }
  Ops& ops() { return *ops_; }
  DriverQ& driver() { return *driver_; }
  DeviceQ& device() { return *device_; }
  T& translator() { return *translator_; }
  // Driver memory holding the indirect tables (empty without indirect).
  std::span<std::byte> indirect_arena() const { return arena_; }
  FeatureSet features() const { return features_; }

  // Device side: pops and echoes every available chain, then publishes. Returns how many
  // chains were served; rejected chains are counted in device().stats().rejected.
  Result<std::uint32_t> serve_all() {
    std::uint32_t n = 0;
    for (;;) {
      auto r = device_->pop(chain_);
      if (!r) {
        if (device_->broken()) return Err(r.error());
        continue;  // rejected chain: already returned with length 0
      }
      if (!*r) break;
      VDMA_TRY(device_->push_used(chain_.head, echo_chain(chain_)));
      ++n;
    }
    device_->publish_used();
    return n;
  }

 private:
  explicit Loopback(const LoopbackConfig& cfg) : cfg_(cfg) {}
  LoopbackConfig cfg_;
  std::unique_ptr<dma::Guest> guest_;
  FeatureSet features_;
  std::unique_ptr<Ops> ops_;
  std::span<std::byte> arena_;
  std::unique_ptr<DriverQ> driver_;
  std::unique_ptr<T> translator_;
  std::unique_ptr<DeviceQ> device_;
  virtq::Chain chain_;
};

}  // namespace vdma::testing

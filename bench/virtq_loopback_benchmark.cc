// Loopback throughput: a driver thread and a device thread over one guest's memory,
// batches of 32, echoing 64-byte and 1500-byte buffers, for each ring layout and DMA
// provider. Reported as buffers/s (items_per_second). The "raw" rows skip the DMA API
// (RawGpaOps) to show what the direct provider costs.
//
//   build/release/bench/vdma_virtq_loopback_benchmark --benchmark_repetitions=5
//       --benchmark_enable_random_interleaving=true
#include <benchmark/benchmark.h>

#include "vdma/dma/bounce_ops.h"
#include "vdma/dma/direct_ops.h"
#include "vdma/dma/iommu_ops.h"
#include "vdma/testing/loopback.h"
#include "vdma/testing/raw_gpa_ops.h"
#include "vdma/testing/threaded_echo.h"

namespace vdma {
namespace {

constexpr std::uint64_t kBuffersPerIteration = 200000;

template <class Ring, class Ops, class T>
void BM_Loopback(benchmark::State& state, dma::Platform platform) {
  const auto size = static_cast<std::uint32_t>(state.range(0));
  auto lb = testing::Loopback<Ring, Ops, T>::Create(
      {.platform = platform, .queue_size = 256, .ram_bytes = 64 << 20, .bounce_bytes = 64 << 20});
  if (!lb) {
    state.SkipWithError(lb.error().message().c_str());
    return;
  }
  std::uint64_t total = 0;
  for (auto _ : state) {
    auto r = testing::run_threaded_echo(
        **lb, {.buffers = kBuffersPerIteration, .batch = 32, .buf_size = size, .verify = false});
    if (!r.ok) {
      state.SkipWithError(r.error.c_str());
      return;
    }
    state.SetIterationTime(r.seconds);
    total += r.completed;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(total));
  state.SetBytesProcessed(static_cast<std::int64_t>(total * size));
}

using GuestT = virtq::GuestMemoryTranslator;
using IommuT = virtq::IommuTranslator;

template <class Ring, class Ops, class T>
void add(const char* provider, dma::Platform platform) {
  std::string name = std::string("BM_Loopback/") + Ring::kName + "/" + provider;
  benchmark::RegisterBenchmark(name.c_str(), BM_Loopback<Ring, Ops, T>, platform)
      ->Arg(64)
      ->Arg(1500)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond)
      ->MinTime(0.2);
}

template <class Ring>
void add_ring() {
  add<Ring, testing::RawGpaOps, GuestT>("raw", dma::kTraditional);
  add<Ring, dma::DirectOps, GuestT>("direct", dma::kTraditional);
  add<Ring, dma::BounceOps, GuestT>("bounce", dma::kSecureGuest);
  add<Ring, dma::IommuOps, IommuT>("iommu", dma::kIommuPlatform);
}

template <class... Rings>
void add_rings(testing::RingList<Rings...>*) {
  (add_ring<Rings>(), ...);
}

}  // namespace
}  // namespace vdma

int main(int argc, char** argv) {
  vdma::add_rings(static_cast<vdma::testing::AllRings*>(nullptr));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

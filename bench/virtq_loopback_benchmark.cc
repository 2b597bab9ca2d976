// Loopback throughput: a driver thread and a device thread over one guest's memory,
// batches of 32, echoing 64-byte and 1500-byte buffers, for each ring layout and DMA
// provider. Reported as buffers/s (items_per_second). The "raw" rows skip the DMA API
// (RawGpaOps) to show what the direct provider costs. The "inline" rows run both sides on
// one thread (add a batch, kick, serve, reap), the path without cross-core traffic.
//
//   build/release/bench/vdma_virtq_loopback_benchmark --benchmark_repetitions=5
//       --benchmark_enable_random_interleaving=true
//
// For deterministic instruction counts, `--inline_count=<ring>/<provider>/<buffers>`
// (ring split|packed, provider raw|direct) runs only that many 64-byte buffers through
// the one-thread loop and exits; under callgrind the difference between two counts
// divided by the difference in buffers is the cost per buffer, setup excluded:
//
//   valgrind --tool=callgrind --callgrind-out-file=/dev/null
//       build/release/bench/vdma_virtq_loopback_benchmark --inline_count=split/direct/64000
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <string_view>

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

// Both sides on this thread: batches of 32 buffers (one readable and one writable
// segment of `size` bytes each) are added, kicked, served by the echo device and reaped.
// Returns the buffers completed, or 0 on any error.
template <class LB>
std::uint64_t run_inline_echo(LB& lb, std::uint64_t buffers, std::uint32_t size) {
  constexpr std::uint32_t kBatch = 32;
  std::vector<std::byte*> in(kBatch), out(kBatch);
  for (std::uint32_t i = 0; i < kBatch; ++i) {
    auto a = lb.guest().alloc_ram(size);
    auto b = lb.guest().alloc_ram(size);
    if (!a || !b) return 0;
    in[i] = *a;
    out[i] = *b;
    std::memset(in[i], static_cast<int>(i), size);
  }
  auto& drv = lb.driver();
  std::uint64_t done = 0;
  while (done < buffers) {
    for (std::uint32_t i = 0; i < kBatch; ++i) {
      virtq::Segment r{in[i], size}, w{out[i], size};
      if (!drv.add_buffers({&r, 1}, {&w, 1}, i)) return 0;
    }
    drv.kick_prepare();
    auto served = lb.serve_all();
    if (!served || *served != kBatch) return 0;
    for (;;) {
      auto u = drv.get_used();
      if (!u) return 0;
      if (!u->has_value()) break;
      if ((*u)->len != size) return 0;
      ++done;
    }
  }
  return done;
}

template <class Ring, class Ops, class T>
void BM_LoopbackInline(benchmark::State& state, dma::Platform platform) {
  const auto size = static_cast<std::uint32_t>(state.range(0));
  auto lb = testing::Loopback<Ring, Ops, T>::Create(
      {.platform = platform, .queue_size = 256, .ram_bytes = 64 << 20, .bounce_bytes = 64 << 20});
  if (!lb) {
    state.SkipWithError(lb.error().message().c_str());
    return;
  }
  std::uint64_t total = 0;
  for (auto _ : state) {
    const std::uint64_t n = run_inline_echo(**lb, 3200, size);
    if (n == 0) {
      state.SkipWithError("inline echo failed");
      return;
    }
    total += n;
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

template <class Ring, class Ops, class T>
void add_inline(const char* provider, dma::Platform platform) {
  std::string name = std::string("BM_LoopbackInline/") + Ring::kName + "/" + provider;
  benchmark::RegisterBenchmark(name.c_str(), BM_LoopbackInline<Ring, Ops, T>, platform)
      ->Arg(64)
      ->Unit(benchmark::kMicrosecond)
      ->MinTime(0.2);
}

// --inline_count=<ring>/<provider>/<buffers>: see the top of the file.
template <class Ring, class Ops>
int inline_count(std::uint64_t buffers) {
  auto lb = testing::Loopback<Ring, Ops, GuestT>::Create(
      {.platform = dma::kTraditional, .queue_size = 256, .ram_bytes = 64 << 20});
  if (!lb) return 1;
  const std::uint64_t n = run_inline_echo(**lb, buffers, 64);
  std::printf("%s: %llu buffers\n", Ring::kName, static_cast<unsigned long long>(n));
  return n == buffers ? 0 : 1;
}

int inline_count_main(std::string_view spec) {
  const auto a = spec.find('/'), b = spec.rfind('/');
  if (a == std::string_view::npos || a == b) return 2;
  const std::string_view ring = spec.substr(0, a), provider = spec.substr(a + 1, b - a - 1);
  const std::uint64_t n = std::strtoull(std::string(spec.substr(b + 1)).c_str(), nullptr, 10);
  const bool raw = provider == "raw";
  if (!raw && provider != "direct") return 2;
  if (ring == "split") {
    return raw ? inline_count<testing::SplitRing, testing::RawGpaOps>(n)
               : inline_count<testing::SplitRing, dma::DirectOps>(n);
  }
  if (ring == "packed") {
    return raw ? inline_count<testing::PackedRing, testing::RawGpaOps>(n)
               : inline_count<testing::PackedRing, dma::DirectOps>(n);
  }
  return 2;
}

template <class Ring>
void add_ring() {
  add<Ring, testing::RawGpaOps, GuestT>("raw", dma::kTraditional);
  add<Ring, dma::DirectOps, GuestT>("direct", dma::kTraditional);
  add<Ring, dma::BounceOps, GuestT>("bounce", dma::kSecureGuest);
  add<Ring, dma::IommuOps, IommuT>("iommu", dma::kIommuPlatform);
  add_inline<Ring, testing::RawGpaOps, GuestT>("raw", dma::kTraditional);
  add_inline<Ring, dma::DirectOps, GuestT>("direct", dma::kTraditional);
}

template <class... Rings>
void add_rings(testing::RingList<Rings...>*) {
  (add_ring<Rings>(), ...);
}

}  // namespace
}  // namespace vdma

int main(int argc, char** argv) {
  constexpr std::string_view kCountFlag = "--inline_count=";
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with(kCountFlag)) return vdma::inline_count_main(arg.substr(kCountFlag.size()));
  }
  vdma::add_rings(static_cast<vdma::testing::AllRings*>(nullptr));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

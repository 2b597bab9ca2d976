// vdma_dma_benchmark: the dma module's full benchmark matrix (see dma_bench_cases.h for
// what each case measures). Ratios need interleaved repetitions on a noisy machine:
//
//   build/release/bench/vdma_dma_benchmark --benchmark_repetitions=5
//       --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include "dma_bench_cases.h"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  vdma::bench::env();  // build the guests before anything is timed
  vdma::bench::register_cases(vdma::bench::all_cases());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

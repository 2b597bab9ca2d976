// vdma_dma_summary: runs the dma module's headline benchmark cases (dma_bench_cases.h)
// with random interleaving and repetitions, takes the median of each case, and prints
// exactly one JSON object on stdout: the ratios and latencies the performance goals are
// stated in (docs/PERFORMANCE.md), the goals, and whether each was met. Progress goes to
// stderr.
//
//   vdma_dma_summary                  # ~45 s: 12 repetitions of 0.08 s per case
//   vdma_dma_summary --quick          # ~10 s: 5 repetitions of 0.04 s
//   vdma_dma_summary --repetitions=25 --min_time=0.2 --verbose
//
// Any --benchmark_* flag is passed on to Google Benchmark after ours.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "dma_bench_cases.h"

namespace {

using vdma::bench::CaseSet;
using vdma::bench::DescMode;
using vdma::bench::Placement;
using vdma::dma::Direction;
using vdma::dma::OpsKind;
using json = nlohmann::json;

struct Options {
  int repetitions = 12;
  double min_time = 0.08;
  bool quick = false;
  bool verbose = false;
  std::vector<std::string> benchmark_flags;
};

void usage() {
  std::cerr << "usage: vdma_dma_summary [--quick] [--repetitions=N] [--min_time=SECONDS]\n"
               "                        [--verbose] [--benchmark_...]\n";
}

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--quick") {
      o.quick = true;
      o.repetitions = 5;
      o.min_time = 0.04;
    } else if (a == "--verbose") {
      o.verbose = true;
    } else if (a.starts_with("--repetitions=")) {
      o.repetitions = std::atoi(argv[i] + 14);
    } else if (a.starts_with("--min_time=")) {
      o.min_time = std::atof(argv[i] + 11);
    } else if (a.starts_with("--benchmark_")) {
      o.benchmark_flags.emplace_back(a);
    } else {
      return false;
    }
  }
  return o.repetitions >= 1 && o.min_time > 0;
}

// The headline cases: what the goals are stated in, plus the baselines they need.
CaseSet summary_cases() {
  CaseSet cs;
  for (Direction d : {Direction::kToDevice, Direction::kFromDevice})
    for (std::uint64_t n : {64, 4096, 65536}) cs.map_unmap.push_back({OpsKind::kBounce, d, n});
  cs.map_unmap.push_back({OpsKind::kDirect, Direction::kToDevice, 64});
  cs.map_unmap.push_back({OpsKind::kIommu, Direction::kToDevice, 4096});
  for (int copies : {1, 2})
    for (std::uint64_t n : {4096, 65536}) cs.memcpy.push_back({copies, n});
  for (int t : {1, 2}) cs.memcpy.push_back({1, 4096, t});
  for (int pl : vdma::bench::kPlacements)
    for (DescMode m : {DescMode::kRaw, DescMode::kDirect}) cs.descriptors.push_back({m, pl});
  cs.threads = {{64, 1}, {64, 2, Placement::kDistinct}, {64, 2, Placement::kShared}};
  return cs;
}

// Keeps every repetition's result; optionally echoes a line per run to stderr.
class Collector : public benchmark::BenchmarkReporter {
 public:
  explicit Collector(bool verbose) : verbose_(verbose) {}

  bool ReportContext(const Context&) override { return true; }

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      if (r.run_type != Run::RT_Iteration) continue;
      const std::string name = r.benchmark_name();
      if (r.error_occurred) {
        errors_[name] = r.error_message;
        continue;
      }
      // The time Google Benchmark itself goes by: CPU time, unless the case is real-time
      // (the threaded ones). CPU time leaves out the time this thread was descheduled by
      // other processes of a busy machine.
      const double t =
          r.run_name.time_type.empty() ? r.GetAdjustedCPUTime() : r.GetAdjustedRealTime();
      const double ns = t * to_ns(r.time_unit);
      Sample s{ns, 0};
      if (auto it = r.counters.find("items_per_second"); it != r.counters.end())
        s.items_per_second = it->second.value;
      samples_[name].push_back(s);
      if (verbose_) std::cerr << name << "  " << ns << " ns\n";
    }
  }

  struct Sample {
    double ns;
    double items_per_second;
  };
  const std::map<std::string, std::vector<Sample>>& samples() const { return samples_; }
  const std::map<std::string, std::string>& errors() const { return errors_; }

 private:
  static double to_ns(benchmark::TimeUnit u) {
    switch (u) {
      case benchmark::kNanosecond:
        return 1;
      case benchmark::kMicrosecond:
        return 1e3;
      case benchmark::kMillisecond:
        return 1e6;
      case benchmark::kSecond:
        return 1e9;
    }
    return 1;
  }

  bool verbose_;
  std::map<std::string, std::vector<Sample>> samples_;
  std::map<std::string, std::string> errors_;
};

double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Median per case of ns/iteration and of items/s.
struct Medians {
  std::map<std::string, double> ns;
  std::map<std::string, double> items_per_second;
  json per_case = json::object();

  explicit Medians(const Collector& c) {
    for (const auto& [name, samples] : c.samples()) {
      std::vector<double> t, ips;
      for (const auto& s : samples) {
        t.push_back(s.ns);
        ips.push_back(s.items_per_second);
      }
      ns[name] = median(t);
      items_per_second[name] = median(ips);
      const auto [lo, hi] = std::minmax_element(t.begin(), t.end());
      per_case[name] = {{"median_ns", round3(ns[name])},
                        {"min_ns", round3(*lo)},
                        {"max_ns", round3(*hi)},
                        {"repetitions", t.size()}};
    }
  }
  double at(const std::string& name) const {
    auto it = ns.find(name);
    return it == ns.end() ? std::nan("") : it->second;
  }
  double rate(const std::string& name) const {
    auto it = items_per_second.find(name);
    return it == items_per_second.end() ? std::nan("") : it->second;
  }
  static double round3(double x) { return std::round(x * 1000) / 1000; }
};

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("model name")) {
      auto p = line.find(':');
      return p == std::string::npos ? line : line.substr(p + 2);
    }
  }
  return "unknown";
}

// The 1-minute load average: other processes on a 2-CPU machine skew the threaded cases.
double loadavg() {
  std::ifstream in("/proc/loadavg");
  double l = std::nan("");
  in >> l;
  return l;
}

// null instead of NaN (a case that failed), so the output stays valid JSON.
json num(double x, int digits = 4) {
  if (!std::isfinite(x)) return nullptr;
  const double f = std::pow(10.0, digits);
  return std::round(x * f) / f;
}

json summarize(const Medians& m, const Options& o, double elapsed_s, double load_start) {
  using vdma::bench::MapUnmapCase;
  using vdma::bench::MemcpyCase;
  using vdma::bench::ThreadsCase;
  auto bounce = [&](Direction d, std::uint64_t n) {
    return m.at(vdma::bench::map_unmap_name(MapUnmapCase{OpsKind::kBounce, d, n}));
  };
  auto copy = [&](int copies, std::uint64_t n) {
    return m.at(vdma::bench::memcpy_name(MemcpyCase{copies, n}));
  };
  // Throughput ratio: bounce bytes/s over memcpy bytes/s = memcpy time / bounce time.
  const double to4k = copy(1, 4096) / bounce(Direction::kToDevice, 4096);
  const double to64k = copy(1, 65536) / bounce(Direction::kToDevice, 65536);
  const double from4k = copy(2, 4096) / bounce(Direction::kFromDevice, 4096);
  const double from64k = copy(2, 65536) / bounce(Direction::kFromDevice, 65536);
  // Per code placement, then the median over placements (see Descriptors).
  std::vector<double> per_placement;
  json placements = json::object();
  for (int pl : vdma::bench::kPlacements) {
    const double r = m.at(vdma::bench::descriptors_name({DescMode::kDirect, pl})) /
                     m.at(vdma::bench::descriptors_name({DescMode::kRaw, pl}));
    per_placement.push_back(r);
    placements[std::to_string(pl)] = num(r);
  }
  const double direct_vs_raw = median(per_placement);
  const auto [spread_lo, spread_hi] =
      std::minmax_element(per_placement.begin(), per_placement.end());
  const double b64 = bounce(Direction::kToDevice, 64);
  const double t1 = m.rate(vdma::bench::threads_name(ThreadsCase{64, 1}));
  const double scaling = m.rate(vdma::bench::threads_name(ThreadsCase{64, 2})) / t1;
  const double scaling_shared =
      m.rate(vdma::bench::threads_name(ThreadsCase{64, 2, Placement::kShared})) / t1;
  const double memcpy_scaling = m.rate(vdma::bench::memcpy_name(MemcpyCase{1, 4096, 2})) /
                                m.rate(vdma::bench::memcpy_name(MemcpyCase{1, 4096, 1}));

  json goals = {{"bounce_vs_memcpy_min", 0.85},
                {"bounce_map_unmap_64b_ns_max", 40.0},
                {"direct_vs_raw_max", 1.01}};
  json met = {
      {"bounce_vs_memcpy_4k", to4k >= 0.85},
      {"bounce_vs_memcpy_64k", to64k >= 0.85},
      {"bounce_from_device_vs_2memcpy_4k", from4k >= 0.85},
      {"bounce_from_device_vs_2memcpy_64k", from64k >= 0.85},
      {"bounce_map_unmap_64b_ns", b64 <= 40.0},
      {"direct_vs_raw", direct_vs_raw <= 1.01},
  };
  bool all = true;
  for (const auto& [k, v] : met.items()) all = all && v.get<bool>();

  return json{
      {"bounce_vs_memcpy_4k", num(to4k)},
      {"bounce_vs_memcpy_64k", num(to64k)},
      {"bounce_from_device_vs_2memcpy_4k", num(from4k)},
      {"bounce_from_device_vs_2memcpy_64k", num(from64k)},
      {"direct_vs_raw", num(direct_vs_raw)},
      {"direct_vs_raw_by_placement", placements},
      {"direct_vs_raw_placement_range", {num(*spread_lo), num(*spread_hi)}},
      {"bounce_map_unmap_64b_ns", num(b64, 2)},
      {"bounce_from_device_map_unmap_64b_ns", num(bounce(Direction::kFromDevice, 64), 2)},
      {"bounce_2thread_scaling", num(scaling, 3)},
      {"bounce_2thread_scaling_shared_area", num(scaling_shared, 3)},
      {"memcpy_2thread_scaling", num(memcpy_scaling, 3)},
      {"bounce_2thread_scaling_vs_memcpy", num(scaling / memcpy_scaling, 3)},
      // Below 1.8 the second CPU was busy with other work during the run: the scaling
      // figures then say more about the machine than about the pool.
      {"threads_reliable", memcpy_scaling >= 1.8},
      {"direct_map_unmap_64b_ns",
       num(m.at(vdma::bench::map_unmap_name({OpsKind::kDirect, Direction::kToDevice, 64})), 2)},
      {"iommu_map_unmap_4k_ns",
       num(m.at(vdma::bench::map_unmap_name({OpsKind::kIommu, Direction::kToDevice, 4096})), 1)},
      {"goals", goals},
      {"goals_met", met},
      {"all_goals_met", all},
      {"definitions",
       {{"bounce_vs_memcpy", "memcpy(len) time / bounce to-device map+unmap(len) time"},
        {"bounce_from_device_vs_2memcpy",
         "two memcpy(len) time / bounce from-device map+unmap(len) time (it copies in on "
         "map and out on unmap)"},
        {"direct_vs_raw",
         "DirectOps map_record+store+unmap_record time / GuestMemory::gpa_of+store time "
         "for 256 descriptors; median over 4 code placements of the per-placement ratio"},
        {"bounce_2thread_scaling",
         "64 B bounce map+unmap items/s with 2 threads in distinct pool areas / 1 thread"},
        {"bounce_2thread_scaling_shared_area", "the same with both threads in one area"},
        {"memcpy_2thread_scaling", "4 KiB memcpy items/s, 2 threads / 1 (machine reference)"},
        {"bounce_2thread_scaling_vs_memcpy",
         "bounce_2thread_scaling / memcpy_2thread_scaling: scaling relative to what "
         "perfectly parallel work got in the same run"},
        {"statistic",
         "median of interleaved repetitions; CPU time per iteration (items/s over real time "
         "for the threaded cases)"}}},
      {"repetitions", o.repetitions},
      {"min_time_s", o.min_time},
      {"quick", o.quick},
      {"elapsed_s", num(elapsed_s, 1)},
      {"machine",
       {{"nproc", std::thread::hardware_concurrency()},
        {"cpu_model", cpu_model()},
        {"loadavg_1min_start", num(load_start, 2)},
        {"loadavg_1min_end", num(loadavg(), 2)}}},
      {"cases", m.per_case},
  };
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) {
    usage();
    return 2;
  }
  std::vector<std::string> args{argv[0], "--benchmark_repetitions=" + std::to_string(o.repetitions),
                                "--benchmark_min_time=" + std::to_string(o.min_time),
                                "--benchmark_enable_random_interleaving=true"};
  args.insert(args.end(), o.benchmark_flags.begin(), o.benchmark_flags.end());
  std::vector<char*> bargv;
  for (auto& a : args) bargv.push_back(a.data());
  int bargc = static_cast<int>(bargv.size());
  benchmark::Initialize(&bargc, bargv.data());
  if (benchmark::ReportUnrecognizedArguments(bargc, bargv.data())) return 2;

  const double load_start = loadavg();
  const auto start = std::chrono::steady_clock::now();
  vdma::bench::env();  // build the guests before anything is timed
  vdma::bench::register_cases(summary_cases());
  std::cerr << "vdma_dma_summary: " << o.repetitions << " interleaved repetitions of " << o.min_time
            << " s per case...\n";
  Collector collector(o.verbose);
  benchmark::RunSpecifiedBenchmarks(&collector);
  benchmark::Shutdown();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  json out = summarize(Medians(collector), o, elapsed, load_start);
  if (!collector.errors().empty()) out["errors"] = collector.errors();
  std::cout << out.dump(2) << std::endl;
  std::cerr << "vdma_dma_summary: done in " << static_cast<int>(elapsed) << " s\n";
  return collector.errors().empty() ? 0 : 1;
}

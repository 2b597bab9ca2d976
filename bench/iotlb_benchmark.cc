// IOTLB translate-hit cost: IotlbCache (two-level sorted leaves, optimistic readers, a
// per-queue cursor) against the design of DPDK's vhost IOTLB (a sorted list searched
// linearly under a reader-writer lock), written here from that description as a
// baseline, over the same page-sized entries, in the same run.
//
//   build/release/bench/vdma_iotlb_benchmark --benchmark_repetitions=5
//       --benchmark_enable_random_interleaving=true --benchmark_min_time=0.2
//       --benchmark_report_aggregates_only=true
//
// Cases: /<entries>/<pattern> with pattern 0 = random entry per lookup, 1 = sequential
// (next entry each lookup), 2 = burst (16 lookups in one entry, then the next: the
// descriptors of one page). Threads(2): two readers, items/s is the throughput. The
// *WithWriter cases run a writer thread inserting and invalidating unrelated ranges.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "vdma/memory/iotlb_cache.h"

namespace {

using vdma::Iova;
using vdma::memory::Access;
using vdma::memory::IotlbCache;
using vdma::memory::IotlbCacheOptions;
using vdma::memory::IotlbCursor;
using vdma::memory::IotlbEntry;
using vdma::memory::IotlbTranslation;

constexpr std::uint64_t kPage = 0x1000;
constexpr std::uint64_t kBase = 0x100000000;          // reader entries from here
constexpr std::uint64_t kWriterBase = 0x10000000000;  // the writer's unrelated range
constexpr std::uint64_t kWriterLive = 32;             // writer entries alive at once
constexpr std::size_t kPatternLen = 1 << 16;

// Baseline: entries in a list sorted by IOVA; a lookup walks from the front under a
// shared lock (an atomic read-modify-write on the lock word per lookup); updates walk to
// their position under the exclusive lock.
class SortedListIotlb {
 public:
  // Set-up only: entries arrive in ascending order.
  void append_sorted(const IotlbEntry& e) { list_.push_back(e); }
  void insert(const IotlbEntry& e) {
    std::unique_lock lock(mu_);
    auto it = list_.begin();
    while (it != list_.end() && it->iova < e.iova) ++it;
    list_.insert(it, e);
  }
  void invalidate(Iova iova, std::uint64_t size) {
    std::unique_lock lock(mu_);
    for (auto it = list_.begin(); it != list_.end();) {
      if (it->iova.value() >= iova.value() + size) break;
      if (it->iova.value() + it->size > iova.value())
        it = list_.erase(it);
      else
        ++it;
    }
  }
  std::optional<IotlbTranslation> lookup(Iova iova, std::uint64_t len, Access access) const {
    std::shared_lock lock(mu_);
    for (const IotlbEntry& e : list_) {
      if (iova < e.iova) break;  // sorted: nothing further can hold it
      std::uint64_t off = iova - e.iova;
      if (off >= e.size) continue;
      if (!vdma::memory::permits(e.perm, access) || len > e.size - off) return std::nullopt;
      return IotlbTranslation{e.target + off, len};
    }
    return std::nullopt;
  }

 private:
  std::list<IotlbEntry> list_;
  mutable std::shared_mutex mu_;
};

IotlbEntry reader_entry(std::uint64_t i) {
  // Targets scattered (front-end addresses of separate pages).
  std::uint64_t target = 0x7f0000000000 + ((i * 2654435761u) % (1u << 24)) * kPage;
  return {Iova{kBase + i * kPage}, kPage, target, Access::kReadWrite};
}

struct Fixture {
  std::uint64_t entries = 0;
  std::unique_ptr<IotlbCache> cache;
  SortedListIotlb list;
  std::vector<std::uint64_t> pattern[3];  // IOVAs to look up, per access pattern
};

std::map<std::uint64_t, std::unique_ptr<Fixture>>& fixtures() {
  static std::map<std::uint64_t, std::unique_ptr<Fixture>> f;
  return f;
}

void build_fixture(std::uint64_t n) {
  auto f = std::make_unique<Fixture>();
  f->entries = n;
  f->cache = std::make_unique<IotlbCache>(IotlbCacheOptions{.capacity = n + 2 * kWriterLive});
  for (std::uint64_t i = 0; i < n; ++i) {
    IotlbEntry e = reader_entry(i);
    if (!f->cache->insert(e)) std::abort();
    f->list.append_sorted(e);
  }
  std::mt19937_64 rng(n);
  for (std::size_t k = 0; k < kPatternLen; ++k) {
    f->pattern[0].push_back(kBase + (rng() % n) * kPage + 0x80);
    f->pattern[1].push_back(kBase + (k % n) * kPage + 0x80);
    f->pattern[2].push_back(kBase + ((k / 16) % n) * kPage + (k % 16) * 0x100);
  }
  fixtures()[n] = std::move(f);
}

// Inserts and invalidates pages of an unrelated range until `stop`.
template <class Target>
void writer_loop(Target& t, const std::atomic<bool>& stop, std::atomic<std::uint64_t>& ops) {
  std::uint64_t j = 0;
  while (!stop.load(std::memory_order_relaxed)) {
    IotlbEntry e{Iova{kWriterBase + (j % 4096) * kPage}, kPage, 0x1000 * j, Access::kRead};
    if constexpr (std::is_same_v<Target, IotlbCache>) {
      if (!t.insert(e)) std::abort();
    } else {
      t.insert(e);
    }
    if (j >= kWriterLive)
      t.invalidate(Iova{kWriterBase + ((j - kWriterLive) % 4096) * kPage}, kPage);
    ++j;
    ops.fetch_add(1, std::memory_order_relaxed);
  }
}

// One translate per iteration; a translation miss would be a setup bug.
template <class LookupFn>
void run_lookups(benchmark::State& state, const std::vector<std::uint64_t>& pattern,
                 LookupFn&& lookup) {
  std::size_t k = static_cast<std::size_t>(state.thread_index()) * 7919;
  for (auto _ : state) {
    auto tr = lookup(Iova{pattern[k & (kPatternLen - 1)]});
    if (!tr) state.SkipWithError("unexpected miss");
    benchmark::DoNotOptimize(tr);
    ++k;
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Cache(benchmark::State& state) {
  Fixture& f = *fixtures().at(static_cast<std::uint64_t>(state.range(0)));
  IotlbCursor cursor;  // the queue's
  run_lookups(state, f.pattern[state.range(1)],
              [&](Iova iova) { return f.cache->lookup(iova, 0x80, Access::kRead, cursor); });
  state.counters["cursor_hit_pct"] =
      100.0 * cursor.stats().cursor_hits / std::max<std::uint64_t>(1, cursor.stats().hits);
}

void BM_SortedList(benchmark::State& state) {
  Fixture& f = *fixtures().at(static_cast<std::uint64_t>(state.range(0)));
  run_lookups(state, f.pattern[state.range(1)],
              [&](Iova iova) { return f.list.lookup(iova, 0x80, Access::kRead); });
}

void BM_CacheWithWriter(benchmark::State& state) {
  Fixture& f = *fixtures().at(static_cast<std::uint64_t>(state.range(0)));
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> ops{0};
  std::thread writer([&] { writer_loop(*f.cache, stop, ops); });
  IotlbCursor cursor;
  run_lookups(state, f.pattern[state.range(1)],
              [&](Iova iova) { return f.cache->lookup(iova, 0x80, Access::kRead, cursor); });
  stop = true;
  writer.join();
  f.cache->invalidate(Iova{kWriterBase}, 4096 * kPage);
  state.counters["writer_ops"] =
      benchmark::Counter(static_cast<double>(ops.load()), benchmark::Counter::kIsRate);
}

void BM_SortedListWithWriter(benchmark::State& state) {
  Fixture& f = *fixtures().at(static_cast<std::uint64_t>(state.range(0)));
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> ops{0};
  std::thread writer([&] { writer_loop(f.list, stop, ops); });
  run_lookups(state, f.pattern[state.range(1)],
              [&](Iova iova) { return f.list.lookup(iova, 0x80, Access::kRead); });
  stop = true;
  writer.join();
  f.list.invalidate(Iova{kWriterBase}, 4096 * kPage);
  state.counters["writer_ops"] =
      benchmark::Counter(static_cast<double>(ops.load()), benchmark::Counter::kIsRate);
}

void sizes_and_patterns(benchmark::internal::Benchmark* b) {
  for (std::int64_t n : {16, 2048, 65536})
    for (std::int64_t p : {0, 1, 2}) b->Args({n, p});
}

BENCHMARK(BM_Cache)->Apply(sizes_and_patterns);
BENCHMARK(BM_SortedList)->Apply(sizes_and_patterns);
// Two reader threads (two queues), random access: throughput scaling.
BENCHMARK(BM_Cache)->Args({2048, 0})->Threads(2)->UseRealTime();
BENCHMARK(BM_SortedList)->Args({2048, 0})->Threads(2)->UseRealTime();
BENCHMARK(BM_CacheWithWriter)->Args({2048, 0})->Args({65536, 0})->UseRealTime();
BENCHMARK(BM_SortedListWithWriter)->Args({2048, 0})->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  for (std::uint64_t n : {16, 2048, 65536}) build_fixture(n);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

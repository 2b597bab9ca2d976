// Benchmark bodies of the dma module, shared by vdma_dma_benchmark (the full matrix) and
// vdma_dma_summary (the headline cases, reduced to one JSON object).
//
// Every case runs real ops over real memfd regions from a dma::Guest. Hot calls go
// through the concrete `final` ops types (DirectOps, BounceOps, IommuOps), as a virtqueue
// templated on the ops type makes them; only Descriptors/direct-virtual goes through
// DmaOps& to show what the virtual seam costs.
//
//   vdma::bench::register_cases(vdma::bench::all_cases());
//   benchmark::RunSpecifiedBenchmarks();
//
// Case names (what both programs report):
//   MapUnmap/<direct|bounce|iommu>/<to-device|from-device>/<bytes>  map_record+unmap_record
//   Memcpy/x<1|2>/<bytes>[/real_time/threads:<n>]
//                              one memcpy (to-device baseline), two (from-device baseline)
//   Descriptors/<raw|direct|direct-virtual>/placement:<bytes>
//                              fill 256 descriptors (items/s: descriptors), code shifted
//   BounceThreads/<bytes>[/distinct-areas|/shared-area]/real_time/threads:<n>
//                              each thread maps+unmaps its own buffer (items/s: aggregate)
#pragma once

#include <benchmark/benchmark.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "vdma/dma/bounce_ops.h"
#include "vdma/dma/direct_ops.h"
#include "vdma/dma/guest.h"
#include "vdma/dma/iommu_ops.h"

namespace vdma::bench {

using dma::Direction;
using dma::OpsKind;

inline constexpr std::uint64_t kMaxBytes = 256 * 1024;  // largest bounce mapping
inline constexpr int kMaxThreads = 4;
inline constexpr int kRingSize = 256;                  // descriptors per Descriptors iteration
inline constexpr std::uint64_t kDescBufBytes = 1500;   // each descriptor's buffer (a frame)
inline constexpr std::uint64_t kDescBufStride = 2048;  // distinct buffers, never touched

// One platform's guest, its ops and its pre-faulted I/O buffers.
struct ProviderEnv {
  std::unique_ptr<dma::Guest> guest;
  std::unique_ptr<dma::DmaOps> ops;
  std::array<std::byte*, kMaxThreads> src{};  // kMaxBytes each, one per thread
  std::array<std::byte*, kMaxThreads> dst{};  // kMaxBytes each: memcpy baseline destinations
  std::array<std::byte*, kRingSize> desc_bufs{};
};

[[noreturn]] inline void die(const char* what, std::error_code ec) {
  std::fprintf(stderr, "dma bench setup: %s: %s\n", what, ec.message().c_str());
  std::exit(1);
}

template <class T>
T must(Result<T> r, const char* what) {
  if (!r) die(what, r.error());
  return std::move(*r);
}

inline ProviderEnv make_provider(dma::Platform platform, OpsKind kind) {
  ProviderEnv e;
  dma::GuestConfig cfg;
  cfg.platform = platform;
  e.guest = must(dma::Guest::Create(cfg), "Guest::Create");
  e.ops = must(e.guest->make_ops_of_kind(kind), "make_ops_of_kind");
  for (auto& p : e.src) {
    p = must(e.guest->alloc_ram(kMaxBytes), "alloc_ram");
    std::memset(p, 0x5a, kMaxBytes);  // fault in; the bytes are what gets copied
  }
  for (auto& p : e.dst) {
    p = must(e.guest->alloc_ram(kMaxBytes), "alloc_ram");
    std::memset(p, 0, kMaxBytes);
  }
  std::byte* descs = must(e.guest->alloc_ram(kRingSize * kDescBufStride), "alloc_ram");
  for (int i = 0; i < kRingSize; ++i) e.desc_bufs[i] = descs + i * kDescBufStride;
  if (const auto& pool = e.guest->bounce_pool()) std::memset(pool->host, 0, pool->size);
  return e;
}

// The three providers, built once, on first use (so a filtered run builds them lazily but
// never inside a timed region: every body calls env() before its loop).
struct Env {
  ProviderEnv direct = make_provider(dma::kTraditional, OpsKind::kDirect);
  ProviderEnv bounce = make_provider(dma::kSecureGuest, OpsKind::kBounce);
  ProviderEnv iommu = make_provider(dma::kIommuPlatform, OpsKind::kIommu);

  ProviderEnv& of(OpsKind k) {
    switch (k) {
      case OpsKind::kDirect:
        return direct;
      case OpsKind::kIommu:
        return iommu;
      default:
        return bounce;
    }
  }
};

inline Env& env() {
  static Env e;
  return e;
}

inline void fail(benchmark::State& state, const char* what, std::error_code ec) {
  state.SkipWithError((std::string(what) + ": " + ec.message()).c_str());
}

// ---- map+unmap latency -------------------------------------------------------------

template <class Ops>
void map_unmap_loop(benchmark::State& state, Ops& ops, std::byte* buf, std::uint64_t len,
                    Direction dir) {
  for (auto _ : state) {
    auto r = ops.map_record(buf, len, dir);
    if (!r) [[unlikely]] {
      fail(state, "map", r.error());
      break;
    }
    benchmark::DoNotOptimize(r->addr);
    if (auto u = ops.unmap_record(*r); !u) [[unlikely]] {
      fail(state, "unmap", u.error());
      break;
    }
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * len));
}

inline void MapUnmap(benchmark::State& state, OpsKind kind, Direction dir, std::uint64_t len) {
  ProviderEnv& p = env().of(kind);
  std::byte* buf = p.src[static_cast<std::size_t>(state.thread_index()) % kMaxThreads];
  switch (kind) {
    case OpsKind::kDirect:
      return map_unmap_loop(state, static_cast<dma::DirectOps&>(*p.ops), buf, len, dir);
    case OpsKind::kIommu:
      return map_unmap_loop(state, static_cast<dma::IommuOps&>(*p.ops), buf, len, dir);
    default:
      return map_unmap_loop(state, static_cast<dma::BounceOps&>(*p.ops), buf, len, dir);
  }
}

// ---- the physical limit: memcpy of the same bytes ----------------------------------

// copies == 1: what bounce to-device copies (caller's buffer -> slot).
// copies == 2: what bounce from-device copies (in on map, out on unmap).
// Same source buffer as MapUnmap/bounce, a destination of the same size; bytes/s counts
// the payload once, as MapUnmap does. With threads, each copies its own buffers (the
// 2-thread scaling this machine allows for perfectly parallel work).
inline void Memcpy(benchmark::State& state, int copies, std::uint64_t len) {
  ProviderEnv& p = env().bounce;
  const auto t = static_cast<std::size_t>(state.thread_index()) % kMaxThreads;
  std::byte* src = p.src[t];
  std::byte* dst = p.dst[t];
  for (auto _ : state) {
    std::memcpy(dst, src, len);
    if (copies == 2) std::memcpy(src, dst, len);
    benchmark::DoNotOptimize(dst);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * len));
  state.SetItemsProcessed(state.iterations());
}

// ---- direct ops against no DMA API at all -------------------------------------------

// A descriptor-like slot: what a driver writes for each buffer.
struct Desc {
  std::uint64_t addr;
  std::uint32_t len;
  std::uint16_t flags;
  std::uint16_t next;
};

// Identical surrounding work in every variant: for each of 256 buffers obtain the
// address the device is given, store addr/len into a descriptor, then (for the DMA
// variants) unmap. Only how the address is obtained differs.
//
// The difference being measured is a handful of instructions per descriptor, and on
// this class of machine a tight call-in-a-loop like this one moves by +-15 % with where
// the loop lands relative to 64-byte boundaries (the same source built with other
// alignment flags flips raw and direct). So every variant is built in several
// placements, its code shifted by kShift bytes, and ratios are taken per placement.
enum class DescMode { kRaw, kDirect, kDirectVirtual };
inline constexpr std::array<int, 4> kPlacements{0, 16, 32, 48};

template <int kShift, class Fill>
[[gnu::noinline, gnu::aligned(64)]] void descriptor_loop(benchmark::State& state,
                                                         const ProviderEnv& p, Fill fill) {
  if constexpr (kShift > 0)
    asm volatile(".skip %c0, 0x90" ::"i"(kShift));  // kShift one-byte nops, run once per call
  alignas(64) std::array<Desc, kRingSize> ring{};
  for (auto _ : state) {
    for (int i = 0; i < kRingSize; ++i) {
      if (!fill(p.desc_bufs[i], ring[i])) [[unlikely]] {
        state.SkipWithError("descriptor fill failed");
        return;
      }
    }
    benchmark::DoNotOptimize(ring.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kRingSize);
}

// Inlined into the loop as it would be in a virtqueue's add-buffer path (left to itself
// GCC 12 sometimes outlines it, which would measure a call the real user does not make).
template <class Ops>
[[gnu::always_inline]] inline bool map_store_unmap(Ops& ops, std::byte* buf, Desc& d) {
  auto r = ops.map_record(buf, kDescBufBytes, Direction::kToDevice);
  if (!r) [[unlikely]]
    return false;
  const dma::MappingRecord& rec = *r;
  d = Desc{rec.addr.value(), static_cast<std::uint32_t>(rec.len), 0, 0};
  return ops.unmap_record(rec).has_value();
}

template <int kShift>
void descriptors_at(benchmark::State& state, DescMode mode) {
  const ProviderEnv& p = env().direct;
  switch (mode) {
    case DescMode::kRaw: {
      // What a driver that skips the DMA API still does: find the buffer's Gpa.
      const memory::GuestMemory& mem = p.guest->memory();
      return descriptor_loop<kShift>(state, p, [&mem](std::byte* buf, Desc& d) {
        auto g = mem.gpa_of(buf, kDescBufBytes);
        if (!g) [[unlikely]]
          return false;
        d = Desc{g->value(), static_cast<std::uint32_t>(kDescBufBytes), 0, 0};
        return true;
      });
    }
    case DescMode::kDirect: {
      auto& ops = static_cast<dma::DirectOps&>(*p.ops);
      return descriptor_loop<kShift>(
          state, p, [&ops](std::byte* buf, Desc& d) { return map_store_unmap(ops, buf, d); });
    }
    case DescMode::kDirectVirtual: {
      dma::DmaOps& ops = *p.ops;
      return descriptor_loop<kShift>(
          state, p, [&ops](std::byte* buf, Desc& d) { return map_store_unmap(ops, buf, d); });
    }
  }
}

inline void Descriptors(benchmark::State& state, DescMode mode, int placement) {
  switch (placement) {
    case 16:
      return descriptors_at<16>(state, mode);
    case 32:
      return descriptors_at<32>(state, mode);
    case 48:
      return descriptors_at<48>(state, mode);
    default:
      return descriptors_at<0>(state, mode);
  }
}

// ---- bounce scaling across threads ------------------------------------------------

// Each thread maps+unmaps its own buffer (to-device); items/s is the aggregate rate.
//
// BouncePool gives each thread a home area once, round robin in thread-creation order
// (bounce_pool.cc, home_slot_hint). Google Benchmark runs thread 0 on the main thread and
// starts the others afresh for every run, so left alone two threads share an area in
// every other run. The placement makes that explicit: before each run, throwaway threads
// take areas until the next new thread lands where wanted (kDistinct: the design case,
// each thread its own area; kShared: both on one area's spinlock and bitmap).
// Counter area_collision: 1 when two threads did share a home area.
enum class Placement { kDistinct, kShared };

inline std::array<std::atomic<std::int64_t>, kMaxThreads> g_home_area{};

// The calling thread's home area: a 1-slot mapping lands there while it has room.
inline std::int64_t probe_home_area(dma::BounceOps& ops) {
  auto r = ops.map_record(env().bounce.src[0], 64, Direction::kToDevice);
  if (!r) return -1;
  const dma::BouncePoolStats s = ops.stats();
  const std::uint64_t slot = (r->addr - ops.pool_dma_base()) / dma::kSlotSize;
  (void)ops.unmap_record(*r);
  return static_cast<std::int64_t>(slot / (s.total_slots / s.areas));
}

inline void steer_next_thread(Placement placement) {
  auto& ops = static_cast<dma::BounceOps&>(*env().bounce.ops);
  const std::int64_t n = ops.stats().areas;
  if (n < 2) return;
  const std::int64_t mine = probe_home_area(ops);
  const std::int64_t want = placement == Placement::kDistinct ? (mine + 1) % n : mine;
  for (std::int64_t i = 0; i < 4 * n; ++i) {
    std::int64_t got = -1;
    std::thread([&] { got = probe_home_area(ops); }).join();
    if ((got + 1) % n == want) return;  // the next thread takes the next area
  }
}

inline void BounceThreads(benchmark::State& state, std::uint64_t len, Placement placement) {
  ProviderEnv& p = env().bounce;
  auto& ops = static_cast<dma::BounceOps&>(*p.ops);
  const int t = state.thread_index();
  g_home_area[t % kMaxThreads].store(probe_home_area(ops));
  map_unmap_loop(state, ops, p.src[t % kMaxThreads], len, Direction::kToDevice);
  state.SetItemsProcessed(state.iterations());
  if (t == 0 && state.threads() > 1) {
    bool collision = false;  // the loop's end is a barrier: every thread has probed
    for (int i = 1; i < state.threads() && i < kMaxThreads; ++i)
      collision |= g_home_area[i].load() == g_home_area[0].load();
    state.counters["area_collision"] = collision ? 1 : 0;
    steer_next_thread(placement);  // for the next run, whatever Setup's granularity
  }
}

inline void steer_distinct(const benchmark::State&) {
  steer_next_thread(Placement::kDistinct);
}
inline void steer_shared(const benchmark::State&) {
  steer_next_thread(Placement::kShared);
}

// ---- registration -------------------------------------------------------------------

struct MapUnmapCase {
  OpsKind kind;
  Direction dir;
  std::uint64_t len;
};
struct MemcpyCase {
  int copies;
  std::uint64_t len;
  int threads = 0;  // 0: plain; n: ->Threads(n)->UseRealTime()
};
struct DescCase {
  DescMode mode;
  int placement = 0;  // one of kPlacements
};
struct ThreadsCase {
  std::uint64_t len;
  int threads;
  Placement placement = Placement::kDistinct;  // of the threads' home areas (threads > 1)
};

struct CaseSet {
  std::vector<MapUnmapCase> map_unmap;
  std::vector<MemcpyCase> memcpy;
  std::vector<DescCase> descriptors;
  std::vector<ThreadsCase> threads;
};

inline const char* short_dir(Direction d) {
  return dma::direction_name(d);
}

inline std::string map_unmap_name(const MapUnmapCase& c) {
  return "MapUnmap/" + std::string(dma::ops_kind_name(c.kind)) + "/" + short_dir(c.dir) + "/" +
         std::to_string(c.len);
}
inline std::string memcpy_base_name(const MemcpyCase& c) {
  return "Memcpy/x" + std::to_string(c.copies) + "/" + std::to_string(c.len);
}
inline std::string memcpy_name(const MemcpyCase& c) {
  std::string n = memcpy_base_name(c);
  if (c.threads > 0) n += "/real_time/threads:" + std::to_string(c.threads);
  return n;
}
inline std::string descriptors_name(const DescCase& c) {
  const char* m = c.mode == DescMode::kRaw      ? "raw"
                  : c.mode == DescMode::kDirect ? "direct"
                                                : "direct-virtual";
  return std::string("Descriptors/") + m + "/placement:" + std::to_string(c.placement);
}
// What Google Benchmark reports: it appends "/real_time/threads:N" itself.
inline std::string threads_base_name(const ThreadsCase& c) {
  std::string n = "BounceThreads/" + std::to_string(c.len);
  if (c.threads > 1) n += c.placement == Placement::kDistinct ? "/distinct-areas" : "/shared-area";
  return n;
}
inline std::string threads_name(const ThreadsCase& c) {
  return threads_base_name(c) + "/real_time/threads:" + std::to_string(c.threads);
}

inline const std::vector<std::uint64_t>& sizes() {
  static const std::vector<std::uint64_t> s{64, 1500, 4096, 64 * 1024, 256 * 1024};
  return s;
}

// The full matrix (vdma_dma_benchmark).
inline CaseSet all_cases() {
  CaseSet cs;
  for (OpsKind k : {OpsKind::kDirect, OpsKind::kBounce, OpsKind::kIommu})
    for (Direction d : {Direction::kToDevice, Direction::kFromDevice})
      for (std::uint64_t n : sizes()) cs.map_unmap.push_back({k, d, n});
  for (int copies : {1, 2})
    for (std::uint64_t n : sizes()) cs.memcpy.push_back({copies, n});
  for (int t : {1, 2}) cs.memcpy.push_back({1, 4096, t});
  for (int pl : kPlacements)
    for (DescMode m : {DescMode::kRaw, DescMode::kDirect}) cs.descriptors.push_back({m, pl});
  cs.descriptors.push_back({DescMode::kDirectVirtual, 0});
  for (std::uint64_t n : {std::uint64_t{64}, std::uint64_t{4096}}) {
    cs.threads.push_back({n, 1});
    cs.threads.push_back({n, 2, Placement::kDistinct});
    cs.threads.push_back({n, 2, Placement::kShared});
  }
  return cs;
}

inline void register_cases(const CaseSet& cs) {
  for (const MapUnmapCase& c : cs.map_unmap)
    benchmark::RegisterBenchmark(map_unmap_name(c).c_str(),
                                 [c](benchmark::State& s) { MapUnmap(s, c.kind, c.dir, c.len); });
  for (const MemcpyCase& c : cs.memcpy) {
    auto* b = benchmark::RegisterBenchmark(
        memcpy_base_name(c).c_str(), [c](benchmark::State& s) { Memcpy(s, c.copies, c.len); });
    if (c.threads > 0) b->Threads(c.threads)->UseRealTime();
  }
  for (const DescCase& c : cs.descriptors)
    benchmark::RegisterBenchmark(descriptors_name(c).c_str(),
                                 [c](benchmark::State& s) { Descriptors(s, c.mode, c.placement); });
  for (const ThreadsCase& c : cs.threads) {
    auto* b = benchmark::RegisterBenchmark(threads_base_name(c).c_str(), [c](benchmark::State& s) {
      BounceThreads(s, c.len, c.placement);
    });
    b->Threads(c.threads)->UseRealTime();
    if (c.threads > 1)
      b->Setup(c.placement == Placement::kDistinct ? steer_distinct : steer_shared);
  }
}

}  // namespace vdma::bench

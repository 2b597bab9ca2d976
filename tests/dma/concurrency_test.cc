// Concurrency: several threads on one BounceOps, one BouncePool, one Iommu. Every suite
// name contains "Concurrency" so the TSan preset runs them.
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "vdma/dma/bounce_ops.h"
#include "vdma/dma/bounce_pool.h"
#include "vdma/dma/errors.h"
#include "vdma/dma/iommu.h"
#include "vdma/memory/errors.h"

namespace vdma::dma {
namespace {

// Iteration divisor: keeps each test under ~5 s in release and the TSan run under ~60 s.
#if defined(__SANITIZE_THREAD__)
constexpr int kScale = 4;
#elif defined(__SANITIZE_ADDRESS__)
constexpr int kScale = 2;
#else
constexpr int kScale = 1;
#endif

constexpr std::uint64_t kMiB = 1 << 20;

// Word-wise deterministic contents: cheap to write and to check, different per seed.
std::uint64_t word(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull + 1;
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  return x ^ (x >> 29);
}
void fill_words(std::span<std::byte> s, std::uint64_t seed) {
  for (std::size_t i = 0; i < s.size(); i += 8) {
    std::uint64_t w = word(seed, i / 8);
    std::memcpy(s.data() + i, &w, std::min<std::size_t>(8, s.size() - i));
  }
}
bool check_words(std::span<const std::byte> s, std::uint64_t seed) {
  for (std::size_t i = 0; i < s.size(); i += 8) {
    std::uint64_t w = word(seed, i / 8);
    if (std::memcmp(s.data() + i, &w, std::min<std::size_t>(8, s.size() - i)) != 0) return false;
  }
  return true;
}
bool all_bytes(std::span<const std::byte> s, std::byte v) {
  for (std::byte b : s) {
    if (b != v) return false;
  }
  return true;
}

// The first failure seen by any thread (threads stop at their first failure).
class Failures {
 public:
  void add(std::string msg) {
    std::lock_guard lock(mu_);
    if (first_.empty()) first_ = std::move(msg);
    ++count_;
  }
  int count() const {
    std::lock_guard lock(mu_);
    return count_;
  }
  std::string first() const {
    std::lock_guard lock(mu_);
    return first_;
  }

 private:
  mutable std::mutex mu_;
  std::string first_;
  int count_ = 0;
};

// ---------------------------------------------------------------------------------------
// BounceOps

struct BounceParams {
  int threads;
  std::uint32_t areas;
  std::uint64_t mask;
  std::uint64_t pool_bytes = 4 * kMiB;  // 256 KiB: threads run it full and retry
};

std::string bounce_name(const ::testing::TestParamInfo<BounceParams>& info) {
  std::ostringstream n;
  n << info.param.threads << "ThreadsAreas" << info.param.areas << "Mask0x" << std::hex
    << info.param.mask << std::dec << "Pool" << info.param.pool_bytes / 1024 << "KiB";
  return n.str();
}

void PrintTo(const BounceParams& p, std::ostream* os) {
  *os << "{" << p.threads << " threads, areas " << p.areas << ", mask 0x" << std::hex << p.mask
      << std::dec << ", pool " << p.pool_bytes / 1024 << " KiB}";
}

class BounceConcurrencyTest : public ::testing::TestWithParam<BounceParams> {
 protected:
  static constexpr DmaAddr kPoolDma{1ull << 30};
  BounceConcurrencyTest() : pool_(GetParam().pool_bytes), coh_mem_(64 << 10), coherent_(coh_mem_) {}

  std::span<std::byte> bounce(const BounceOps& ops, const MappingRecord& r) {
    return ops.pool_bytes().subspan(r.addr - ops.pool_dma_base(), r.len);
  }

  std::vector<std::byte> pool_;
  std::vector<std::byte> coh_mem_;
  CoherentPool coherent_;
};

TEST_P(BounceConcurrencyTest, RoundTripsFromManyThreads) {
  const BounceParams p = GetParam();
  auto created = BounceOps::Create({.areas = p.areas, .min_align_mask = p.mask}, pool_, kPoolDma,
                                   coherent_, DmaAddr{2ull << 30});
  ASSERT_TRUE(created) << created.error().message();
  BounceOps& ops = **created;

  constexpr int kLive = 4;                       // live mappings per thread
  constexpr std::size_t kBufStride = 160 << 10;  // 64 KiB max len + 64 KiB offset room
  const int iters = 16000 / kScale;
  Failures failures;
  std::atomic<std::uint64_t> total_maps{0}, total_full{0};
  std::atomic<bool> go{false};

  auto worker = [&](int t) {
    std::mt19937_64 rng(1000 + t);
    auto* mem = static_cast<std::byte*>(std::aligned_alloc(64 << 10, kLive * kBufStride));
    struct Slot {
      MappingRecord rec;
      std::uint64_t seed;
      std::byte tag;
    };
    std::optional<Slot> live[kLive];
    std::uint64_t maps = 0, full = 0, seed = static_cast<std::uint64_t>(t) << 40;
    auto fail = [&](const std::string& what) {
      std::ostringstream m;
      m << "thread " << t << ": " << what;
      failures.add(m.str());
    };
    // Checks the tag, lets the device write, unmaps and checks the caller's buffer.
    auto finish = [&](Slot& s) {
      std::span<std::byte> b = bounce(ops, s.rec);
      if (!all_bytes(b, s.tag)) {
        fail("bounce bytes of a live mapping were overwritten (slot shared?)");
        return false;
      }
      const bool back = s.rec.dir != Direction::kToDevice;
      if (back) fill_words(b, s.seed + 1);
      if (back && rng() % 4 == 0) {
        auto r = ops.sync_record_for_cpu(s.rec, 0, s.rec.len / 2);
        if (!r || !check_words({s.rec.cpu, s.rec.len / 2}, s.seed + 1)) {
          fail("sync_for_cpu");
          return false;
        }
      }
      auto u = ops.unmap_record(s.rec);
      if (!u) {
        fail("unmap: " + u.error().message());
        return false;
      }
      if (!check_words({s.rec.cpu, s.rec.len}, back ? s.seed + 1 : s.seed)) {
        fail("caller buffer wrong after unmap");
        return false;
      }
      return true;
    };

    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    for (int i = 0; i < iters; ++i) {
      const int k = i % kLive;
      if (live[k]) {
        if (!finish(*live[k])) break;
        live[k].reset();
      }
      const std::uint64_t sz = rng() % 100;
      const std::uint64_t len = sz < 70   ? 1 + rng() % 2048
                                : sz < 95 ? 2049 + rng() % (14 * 1024)
                                          : 16 * 1024 + rng() % (48 * 1024);
      std::byte* buf = mem + k * kBufStride + rng() % (64 << 10);
      seed += 2;
      fill_words({buf, len}, seed);
      const auto dir = static_cast<Direction>(rng() % 3);
      auto r = ops.map_record(buf, len, dir);
      if (!r) {
        if (r.error() != Errc::kPoolFull || !is_retryable(r.error())) {
          fail("map: " + r.error().message());
          break;
        }
        ++full;
        std::this_thread::yield();
        continue;
      }
      ++maps;
      if ((r->addr.value() & p.mask) != (reinterpret_cast<std::uintptr_t>(buf) & p.mask)) {
        fail("min_align_mask not preserved");
        break;
      }
      std::span<std::byte> b = bounce(ops, *r);
      if (!check_words(b, seed)) {
        fail("map did not copy the caller's bytes (or another thread wrote our slot)");
        break;
      }
      const auto tag = static_cast<std::byte>(1 + t * kLive + k);
      std::memset(b.data(), static_cast<int>(tag), b.size());
      live[k] = Slot{*r, seed, tag};
    }
    for (auto& s : live) {
      if (s) finish(*s);
    }
    std::free(mem);
    total_maps += maps;
    total_full += full;
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < p.threads; ++t) threads.emplace_back(worker, t);
  go.store(true, std::memory_order_release);
  for (auto& th : threads) th.join();

  EXPECT_EQ(failures.count(), 0) << failures.first();
  BouncePoolStats s = ops.stats();
  EXPECT_EQ(s.slots_in_use, 0u) << "slots leaked";
  EXPECT_EQ(s.maps, total_maps.load());
  EXPECT_EQ(s.failed_maps, total_full.load());
  EXPECT_GT(total_maps.load(), static_cast<std::uint64_t>(p.threads * iters / 2));
  RecordProperty("pool_full", std::to_string(total_full.load()));
  EXPECT_LE(s.high_water_slots, s.total_slots);
}

INSTANTIATE_TEST_SUITE_P(Threads, BounceConcurrencyTest,
                         ::testing::Values(BounceParams{2, 0, 0}, BounceParams{4, 0, 0},
                                           BounceParams{4, 1, 0}, BounceParams{2, 0, 0xFFF},
                                           BounceParams{4, 2, 0x7FF},
                                           BounceParams{4, 1, 0, 256 << 10}),
                         bounce_name);

// Two threads unmap the same record at the same time: exactly one wins, the other gets
// kNotMapped, and the slots are freed once.
TEST(BounceRaceConcurrencyTest, RacingDoubleUnmapExactlyOneWins) {
  std::vector<std::byte> pool(kMiB), coh(64 << 10), buf(3000);
  CoherentPool coherent(coh);
  auto created =
      BounceOps::Create({.areas = 1}, pool, DmaAddr{1ull << 30}, coherent, DmaAddr{2ull << 30});
  ASSERT_TRUE(created);
  BounceOps& ops = **created;
  const int rounds = 4000 / kScale;
  MappingRecord rec;
  std::atomic<int> ok{0}, not_mapped{0}, other{0};
  std::barrier sync(3);
  auto racer = [&] {
    for (int i = 0; i < rounds; ++i) {
      sync.arrive_and_wait();  // rec is ready
      auto r = ops.unmap_record(rec);
      if (r) {
        ++ok;
      } else if (r.error() == Errc::kNotMapped) {
        ++not_mapped;
      } else {
        ++other;
      }
      sync.arrive_and_wait();  // both done
    }
  };
  std::thread a(racer), b(racer);
  int bad_rounds = 0;
  for (int i = 0; i < rounds; ++i) {
    fill_words(buf, i);
    auto m = ops.map_record(buf.data(), buf.size(), Direction::kFromDevice);
    if (!m) {
      ADD_FAILURE() << m.error().message();
      rec = MappingRecord{};  // both racers get an error
    } else {
      rec = *m;
      fill_words(ops.pool_bytes().subspan(rec.addr - ops.pool_dma_base(), rec.len), i + 7);
    }
    sync.arrive_and_wait();
    sync.arrive_and_wait();
    if (ops.stats().slots_in_use != 0 || !check_words(buf, i + 7)) ++bad_rounds;
  }
  a.join();
  b.join();
  EXPECT_EQ(ok.load(), rounds);
  EXPECT_EQ(not_mapped.load(), rounds);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(bad_rounds, 0);
  EXPECT_EQ(ops.stats().slots_in_use, 0u);
}

// ---------------------------------------------------------------------------------------
// BouncePool alone

struct PoolParams {
  int threads;
  std::uint32_t areas;
};

void PrintTo(const PoolParams& p, std::ostream* os) {
  *os << "{" << p.threads << " threads, areas " << p.areas << "}";
}

class BouncePoolConcurrencyTest : public ::testing::TestWithParam<PoolParams> {};

TEST_P(BouncePoolConcurrencyTest, NoSlotIsEverHandedOutTwice) {
  const PoolParams p = GetParam();
  auto created = BouncePool::Create(kMiB, p.areas);
  ASSERT_TRUE(created);
  BouncePool& pool = **created;
  std::vector<std::atomic<int>> owner(pool.total_slots());
  for (auto& o : owner) o.store(0);
  const int iters = 200000 / kScale;
  Failures failures;
  std::atomic<std::uint64_t> total_maps{0}, total_full{0};
  std::atomic<bool> go{false};

  auto worker = [&](int t) {
    std::mt19937_64 rng(77 + t);
    std::vector<SlotRun> mine;
    std::uint64_t maps = 0, full = 0;
    auto release = [&](std::size_t i) {
      const SlotRun r = mine[i];
      for (std::uint32_t s = r.index; s < r.index + r.count; ++s) {
        if (owner[s].exchange(0) != t + 1) {
          failures.add("slot " + std::to_string(s) + " changed owner while allocated");
          return false;
        }
      }
      pool.free(r);
      mine[i] = mine.back();
      mine.pop_back();
      return true;
    };
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    for (int i = 0; i < iters; ++i) {
      if (mine.size() >= 8 || (!mine.empty() && rng() % 2 == 0)) {
        if (!release(rng() % mine.size())) break;
        continue;
      }
      SlotRequest req;
      req.slots = static_cast<std::uint32_t>(rng() % 4 == 0 ? 1 + rng() % 64 : 1 + rng() % 8);
      req.align = 1u << (rng() % 6);
      req.residue = static_cast<std::uint32_t>(rng() % req.align);
      auto r = pool.allocate(req);
      if (!r) {
        if (r.error() != Errc::kPoolFull) {
          failures.add("allocate: " + r.error().message());
          break;
        }
        ++full;
        continue;
      }
      ++maps;
      if (r->count != req.slots || r->index % req.align != req.residue ||
          r->index + r->count > pool.total_slots()) {
        failures.add("bad run");
        break;
      }
      bool clash = false;
      for (std::uint32_t s = r->index; s < r->index + r->count; ++s) {
        if (owner[s].exchange(t + 1) != 0) clash = true;
      }
      if (clash) {
        failures.add("slot handed out twice");
        break;
      }
      mine.push_back(*r);
    }
    while (!mine.empty()) {
      if (!release(mine.size() - 1)) break;
    }
    total_maps += maps;
    total_full += full;
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < p.threads; ++t) threads.emplace_back(worker, t);
  go.store(true, std::memory_order_release);
  for (auto& th : threads) th.join();

  EXPECT_EQ(failures.count(), 0) << failures.first();
  BouncePoolStats s = pool.stats();
  EXPECT_EQ(s.slots_in_use, 0u);
  EXPECT_EQ(s.maps, total_maps.load());
  EXPECT_EQ(s.failed_maps, total_full.load());
  for (auto& o : owner) EXPECT_EQ(o.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Threads, BouncePoolConcurrencyTest,
                         ::testing::Values(PoolParams{2, 1}, PoolParams{4, 1}, PoolParams{4, 4}),
                         [](const ::testing::TestParamInfo<PoolParams>& info) {
                           return std::to_string(info.param.threads) + "ThreadsAreas" +
                                  std::to_string(info.param.areas);
                         });

// ---------------------------------------------------------------------------------------
// Iommu

class CountingListener final : public IotlbListener {
 public:
  Result<void> iotlb_update(const memory::IotlbEntry&) override {
    ++updates;
    return Ok();
  }
  Result<void> iotlb_invalidate(Iova, std::uint64_t) override {
    ++invalidations;
    return Ok();
  }
  std::atomic<std::uint64_t> updates{0}, invalidations{0};
};

class IommuConcurrencyTest : public ::testing::TestWithParam<int> {};

TEST_P(IommuConcurrencyTest, MapUnmapTranslateFromManyThreads) {
  const int nthreads = GetParam();
  constexpr std::uint64_t kPage = 4096;
  constexpr std::uint64_t kPages = 256;
  IommuOptions opts;
  opts.base = Iova{0x100000};
  opts.size = kPages * kPage;
  Iommu iommu(opts);
  CountingListener listener;
  iommu.add_listener(&listener);
  std::vector<std::atomic<int>> owner(kPages);
  for (auto& o : owner) o.store(0);
  const int iters = 100000 / kScale;
  Failures failures;
  std::atomic<std::uint64_t> total_maps{0};
  std::atomic<bool> go{false};

  auto worker = [&](int t) {
    std::mt19937_64 rng(500 + t);
    struct Live {
      Iova iova;
      std::uint64_t gpa, len;
      memory::Access perm;
    };
    std::vector<Live> mine;
    std::uint64_t maps = 0;
    auto pages_of = [&](const Live& l) {
      const std::uint64_t first = (l.iova.value() - opts.base.value()) / kPage;
      const std::uint64_t last = (l.iova.value() + l.len - 1 - opts.base.value()) / kPage;
      return std::pair{first, last};
    };
    auto unmap_one = [&](std::size_t i) {
      const Live l = mine[i];
      auto tr = iommu.translate(l.iova, l.len, l.perm);
      if (!tr || tr->target != l.gpa || tr->len != l.len) {
        failures.add("translation of a live mapping changed");
        return false;
      }
      auto [first, last] = pages_of(l);
      for (std::uint64_t pg = first; pg <= last; ++pg) {
        if (owner[pg].exchange(0) != t + 1) {
          failures.add("IOVA page changed owner while mapped");
          return false;
        }
      }
      if (auto u = iommu.unmap(l.iova, l.len); !u) {
        failures.add("unmap: " + u.error().message());
        return false;
      }
      mine[i] = mine.back();
      mine.pop_back();
      return true;
    };
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    for (int i = 0; i < iters; ++i) {
      if (mine.size() >= 6 || (!mine.empty() && rng() % 2 == 0)) {
        if (!unmap_one(rng() % mine.size())) break;
        continue;
      }
      Live l;
      l.gpa = (static_cast<std::uint64_t>(t + 1) << 32) + rng() % (1 << 24);
      l.len = 1 + rng() % (3 * kPage);
      l.perm = static_cast<memory::Access>(1 + rng() % 3);
      auto r = iommu.map(Gpa{l.gpa}, l.len, l.perm);
      if (!r) {
        if (r.error() != Errc::kIovaSpaceFull) {
          failures.add("map: " + r.error().message());
          break;
        }
        continue;
      }
      ++maps;
      l.iova = *r;
      if (l.iova.value() % kPage != l.gpa % kPage) {
        failures.add("page offset not preserved");
        break;
      }
      auto [first, last] = pages_of(l);
      bool clash = false;
      for (std::uint64_t pg = first; pg <= last; ++pg) {
        if (owner[pg].exchange(t + 1) != 0) clash = true;
      }
      if (clash) {
        failures.add("IOVA page handed out twice");
        break;
      }
      auto tr = iommu.translate(l.iova, l.len, l.perm);
      if (!tr || tr->target != l.gpa) {
        failures.add("fresh mapping does not translate back");
        break;
      }
      mine.push_back(l);
    }
    while (!mine.empty()) {
      if (!unmap_one(mine.size() - 1)) break;
    }
    total_maps += maps;
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < nthreads; ++t) threads.emplace_back(worker, t);
  go.store(true, std::memory_order_release);
  for (auto& th : threads) th.join();
  iommu.remove_listener(&listener);

  EXPECT_EQ(failures.count(), 0) << failures.first();
  IommuStats s = iommu.stats();
  EXPECT_EQ(s.entries, 0u);
  EXPECT_EQ(s.updates, total_maps.load());
  EXPECT_EQ(s.invalidations, total_maps.load());
  EXPECT_EQ(s.quarantined_bytes, 0u);
  EXPECT_EQ(listener.updates.load(), total_maps.load());
  EXPECT_EQ(listener.invalidations.load(), total_maps.load());
  EXPECT_GT(total_maps.load(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Threads, IommuConcurrencyTest, ::testing::Values(2, 4),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::to_string(info.param) + "Threads";
                         });

}  // namespace
}  // namespace vdma::dma

// Property tests: long random sequences (fixed seeds) against simple models.
//
// - BounceOps: map / device write into the slot / CPU write / sync_for_cpu / sync_for_device
//   / unmap in every direction, against a model of what the caller's memory and the bounce
//   bytes must hold. Every byte of the caller's memory is checked against the model.
// - BouncePool alone: allocate / free against a bitmap model that predicts the exact run
//   (home area first, then the next areas; the lowest fitting run inside an area).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <sstream>
#include <vector>

#include "vdma/dma/bounce_ops.h"
#include "vdma/dma/bounce_pool.h"
#include "vdma/dma/errors.h"

namespace vdma::dma {
namespace {

constexpr int kOps = 20000;  // per sequence: ~0.5 s in release, ~2 s under ASan

constexpr std::uint64_t kMiB = 1 << 20;

void fill_random(std::span<std::byte> s, std::mt19937_64& rng) {
  std::size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    std::uint64_t v = rng();
    std::memcpy(s.data() + i, &v, 8);
  }
  if (i < s.size()) {
    std::uint64_t v = rng();
    std::memcpy(s.data() + i, &v, s.size() - i);
  }
}

// Index of the first differing byte, or -1.
std::int64_t diff_at(std::span<const std::byte> a, std::span<const std::byte> b) {
  if (a.size() != b.size()) return 0;
  if (std::memcmp(a.data(), b.data(), a.size()) == 0) return -1;
  auto m = std::mismatch(a.begin(), a.end(), b.begin());
  return m.first - a.begin();
}

// ---------------------------------------------------------------------------------------
// BounceOps against a model

struct OpsParams {
  std::uint64_t mask;
  std::uint32_t areas;
  std::uint64_t seed;
};

std::string ops_param_name(const ::testing::TestParamInfo<OpsParams>& info) {
  std::ostringstream n;
  n << "Mask0x" << std::hex << info.param.mask << std::dec << "Areas" << info.param.areas << "Seed"
    << info.param.seed;
  return n.str();
}
void PrintTo(const OpsParams& p, std::ostream* os) {
  *os << "{mask 0x" << std::hex << p.mask << std::dec << ", areas " << p.areas << ", seed "
      << p.seed << "}";
}

class BouncePropertyTest : public ::testing::TestWithParam<OpsParams> {
 protected:
  static constexpr std::size_t kBuffers = 24;
  static constexpr std::size_t kStride = 320 << 10;  // 256 KiB + room for a 64 KiB offset
  static constexpr std::uint64_t kPoolBytes = kMiB;  // small: pool-full happens
  static constexpr DmaAddr kPoolDma{1ull << 30};

  BouncePropertyTest()
      : arena_(static_cast<std::byte*>(std::aligned_alloc(64 << 10, kBuffers * kStride))),
        model_(kBuffers * kStride),
        pool_(kPoolBytes),
        coh_mem_(64 << 10),
        coherent_(coh_mem_) {}
  ~BouncePropertyTest() override { std::free(arena_); }

  struct Live {
    MappingRecord rec;
    std::vector<std::byte> dev;  // what the bounce bytes must hold
  };

  std::span<std::byte> arena(std::size_t off, std::size_t len) { return {arena_ + off, len}; }
  std::span<std::byte> model(std::size_t off, std::size_t len) {
    return {model_.data() + off, len};
  }
  std::span<std::byte> slot_bytes(const MappingRecord& r) {
    const std::uint64_t off = r.addr - kPoolDma;
    return {pool_.data() + off, r.len};
  }

  std::byte* arena_;
  std::vector<std::byte> model_;  // what the caller's memory must hold
  std::vector<std::byte> pool_;
  std::vector<std::byte> coh_mem_;
  CoherentPool coherent_;
};

TEST_P(BouncePropertyTest, RandomSequencesMatchTheModel) {
  const OpsParams p = GetParam();
  auto created = BounceOps::Create({.areas = p.areas, .min_align_mask = p.mask}, pool_, kPoolDma,
                                   coherent_, DmaAddr{2ull << 30});
  ASSERT_TRUE(created) << created.error().message();
  BounceOps& ops = **created;
  const std::uint64_t max_len = ops.max_mapping_size();

  std::mt19937_64 rng(p.seed);
  auto uniform = [&](std::uint64_t lo, std::uint64_t hi) {  // [lo, hi]
    return lo + rng() % (hi - lo + 1);
  };
  fill_random(arena(0, kBuffers * kStride), rng);
  std::memcpy(model_.data(), arena_, model_.size());

  std::vector<std::optional<Live>> live(kBuffers);
  std::uint64_t maps = 0, failed = 0, bounced = 0, unmaps = 0;

  auto random_range = [&](std::uint64_t len, std::uint64_t* off, std::uint64_t* n) {
    *off = uniform(0, len);
    *n = uniform(0, len - *off);
    if (rng() % 8 == 0) *off = 0, *n = len;
  };
  auto check_buffer = [&](std::size_t b) {
    auto d = diff_at(arena(b * kStride, kStride), model(b * kStride, kStride));
    EXPECT_EQ(d, -1) << "caller buffer " << b << " differs from the model at byte " << d;
    return d == -1;
  };
  auto check_slot = [&](const Live& l) {
    auto d = diff_at(slot_bytes(l.rec), l.dev);
    EXPECT_EQ(d, -1) << "bounce bytes differ from the model at byte " << d;
    return d == -1;
  };
  auto pick_live = [&]() -> std::optional<std::size_t> {
    std::size_t start = rng() % kBuffers;
    for (std::size_t k = 0; k < kBuffers; ++k) {
      std::size_t b = (start + k) % kBuffers;
      if (live[b]) return b;
    }
    return std::nullopt;
  };
  auto do_unmap = [&](std::size_t b) {
    Live& l = *live[b];
    if (!check_slot(l)) return false;
    const MappingRecord r = l.rec;
    auto u = ops.unmap_record(r);
    EXPECT_TRUE(u) << u.error().message();
    if (!u) return false;
    if (r.dir != Direction::kToDevice) {
      std::memcpy(model_.data() + (r.cpu - arena_), l.dev.data(), r.len);
      bounced += r.len;
    }
    live[b].reset();
    ++unmaps;
    if (!check_buffer(b)) return false;
    if (rng() % 16 == 0) {
      // An immediate second unmap of the same record.
      EXPECT_EQ(ops.unmap_record(r).error(), Errc::kNotMapped);
    }
    return true;
  };

  for (int op = 0; op < kOps; ++op) {
    SCOPED_TRACE(op);
    const std::uint64_t kind = rng() % 100;
    if (kind < 30) {  // map
      std::size_t b = rng() % kBuffers;
      if (live[b]) {
        ASSERT_TRUE(do_unmap(b));
      }
      const std::uint64_t sz = rng() % 100;
      std::uint64_t len = sz < 45   ? uniform(1, 512)
                          : sz < 75 ? uniform(513, 8192)
                          : sz < 90 ? uniform(8193, 65536)
                                    : uniform(65537, max_len);
      const std::uint64_t off = rng() % 4 == 0 ? 0 : uniform(0, (64 << 10) - 1);
      const std::size_t at = b * kStride + off;
      fill_random(arena(at, len), rng);
      std::memcpy(model_.data() + at, arena_ + at, len);
      const auto dir = static_cast<Direction>(rng() % 3);
      auto r = ops.map_record(arena_ + at, len, dir);
      if (!r) {
        ASSERT_EQ(r.error(), Errc::kPoolFull) << r.error().message();
        ASSERT_TRUE(is_retryable(r.error()));
        ++failed;
        continue;
      }
      ++maps;
      bounced += len;
      const MappingRecord& rec = *r;
      ASSERT_EQ(rec.cpu, arena_ + at);
      ASSERT_EQ(rec.len, len);
      ASSERT_EQ(rec.dir, dir);
      ASSERT_GE(rec.addr, kPoolDma);
      ASSERT_LE(rec.addr - kPoolDma + len, kPoolBytes);
      ASSERT_EQ(rec.addr.value() & p.mask, reinterpret_cast<std::uintptr_t>(rec.cpu) & p.mask);
      if (p.mask == 0) {
        ASSERT_EQ((rec.addr - kPoolDma) % kSlotSize, 0u);
        if (len >= 4096) {
          ASSERT_EQ(rec.addr.value() % 4096, 0u);
        }
      }
      // Never overlapping another live mapping's bounce bytes.
      for (const auto& other : live) {
        if (!other) continue;
        const bool disjoint =
            rec.addr + len <= other->rec.addr || other->rec.addr + other->rec.len <= rec.addr;
        ASSERT_TRUE(disjoint) << "bounce ranges overlap";
      }
      Live l{rec, std::vector<std::byte>(arena_ + at, arena_ + at + len)};
      // map copies the caller's bytes for every direction.
      ASSERT_TRUE(check_slot(l));
      live[b] = std::move(l);
    } else if (kind < 50) {  // the device writes part of a mapping (any direction)
      auto b = pick_live();
      if (!b) continue;
      Live& l = *live[*b];
      std::uint64_t off, n;
      random_range(l.rec.len, &off, &n);
      if (n == 0) continue;
      fill_random(slot_bytes(l.rec).subspan(off, n), rng);
      std::memcpy(l.dev.data() + off, slot_bytes(l.rec).data() + off, n);
    } else if (kind < 55) {  // the CPU writes part of its own buffer while mapped
      auto b = pick_live();
      if (!b) continue;
      Live& l = *live[*b];
      std::uint64_t off, n;
      random_range(l.rec.len, &off, &n);
      const std::size_t at = static_cast<std::size_t>(l.rec.cpu - arena_) + off;
      fill_random(arena(at, n), rng);
      std::memcpy(model_.data() + at, arena_ + at, n);
    } else if (kind < 67) {  // sync_for_cpu
      auto b = pick_live();
      if (!b) continue;
      Live& l = *live[*b];
      std::uint64_t off, n;
      random_range(l.rec.len, &off, &n);
      const bool to_end = off + n == l.rec.len && rng() % 2 == 0;
      ASSERT_TRUE(check_slot(l));
      auto s = ops.sync_record_for_cpu(l.rec, off, to_end ? UINT64_MAX : n);
      ASSERT_TRUE(s) << s.error().message();
      if (l.rec.dir != Direction::kToDevice && n > 0) {
        std::memcpy(model_.data() + (l.rec.cpu - arena_) + off, l.dev.data() + off, n);
        bounced += n;
      }
      ASSERT_TRUE(check_buffer(*b));
    } else if (kind < 79) {  // sync_for_device
      auto b = pick_live();
      if (!b) continue;
      Live& l = *live[*b];
      std::uint64_t off, n;
      random_range(l.rec.len, &off, &n);
      auto s = ops.sync_record_for_device(l.rec, off, n);
      ASSERT_TRUE(s) << s.error().message();
      if (n > 0) {
        std::memcpy(l.dev.data() + off, model_.data() + (l.rec.cpu - arena_) + off, n);
        bounced += n;
      }
      ASSERT_TRUE(check_slot(l));
    } else if (kind < 98) {  // unmap
      auto b = pick_live();
      if (!b) continue;
      ASSERT_TRUE(do_unmap(*b));
    } else {  // a sync range outside the mapping changes nothing
      auto b = pick_live();
      if (!b) continue;
      Live& l = *live[*b];
      const std::uint64_t off = uniform(0, l.rec.len);
      const std::uint64_t n = l.rec.len - off + uniform(1, 4096);
      EXPECT_EQ(ops.sync_record_for_cpu(l.rec, off, n).error(), Errc::kSyncOutOfRange);
      EXPECT_EQ(ops.sync_record_for_device(l.rec, l.rec.len + 1, 0).error(), Errc::kSyncOutOfRange);
      ASSERT_TRUE(check_buffer(*b));
      ASSERT_TRUE(check_slot(l));
    }
    if (op % 2000 == 0) {
      ASSERT_EQ(diff_at({arena_, model_.size()}, model_), -1);
    }
  }
  for (std::size_t b = 0; b < kBuffers; ++b) {
    if (live[b]) {
      ASSERT_TRUE(do_unmap(b));
    }
  }
  ASSERT_EQ(diff_at({arena_, model_.size()}, model_), -1);
  BouncePoolStats s = ops.stats();
  EXPECT_EQ(s.slots_in_use, 0u) << "slots leaked";
  EXPECT_EQ(s.maps, maps);
  EXPECT_EQ(s.failed_maps, failed);
  EXPECT_EQ(s.bytes_bounced, bounced);
  EXPECT_LE(s.high_water_slots, s.total_slots);
  EXPECT_GT(s.high_water_slots, 0u);
  EXPECT_EQ(maps, unmaps);
  // The sequence must actually exercise the interesting paths.
  EXPECT_GT(maps, static_cast<std::uint64_t>(kOps / 5));
  EXPECT_GT(failed, 0u) << "the sequence never filled the pool";
}

INSTANTIATE_TEST_SUITE_P(Sequences, BouncePropertyTest,
                         ::testing::Values(OpsParams{0, 1, 1}, OpsParams{0, 4, 2},
                                           OpsParams{0x7FF, 1, 3}, OpsParams{0xFFF, 1, 4},
                                           OpsParams{0xFFF, 2, 5}, OpsParams{0x3F, 1, 6},
                                           OpsParams{0xFFFF, 1, 7}),
                         ops_param_name);

// ---------------------------------------------------------------------------------------
// BouncePool against a bitmap model

struct PoolParams {
  std::uint64_t bytes;
  std::uint32_t areas;
  std::uint64_t seed;
};

std::string pool_param_name(const ::testing::TestParamInfo<PoolParams>& info) {
  std::ostringstream n;
  n << info.param.bytes / kMiB << "MiBAreas" << info.param.areas << "Seed" << info.param.seed;
  return n.str();
}
void PrintTo(const PoolParams& p, std::ostream* os) {
  *os << "{" << p.bytes / kMiB << " MiB, areas " << p.areas << ", seed " << p.seed << "}";
}

class PoolModel {
 public:
  PoolModel(std::uint32_t total, std::uint32_t areas)
      : per_area_(total / areas),
        areas_(areas),
        used_(total, false),
        area_used_(areas, 0),
        area_peak_(areas, 0) {}

  // The lowest index in `area` where req fits, or -1.
  std::int64_t lowest_fit(std::uint32_t area, const SlotRequest& req) const {
    const std::uint32_t first = area * per_area_;
    const std::uint32_t end = first + per_area_;
    // free_from[i]: free slots starting at first + i, up to the area's end.
    std::vector<std::uint32_t> free_from(per_area_ + 1, 0);
    for (std::uint32_t i = end; i-- > first;) {
      free_from[i - first] = used_[i] ? 0 : free_from[i - first + 1] + 1;
    }
    for (std::uint32_t c = first; c + req.slots <= end; ++c) {
      if (c % req.align != req.residue) continue;
      if (free_from[c - first] >= req.slots) return c;
    }
    return -1;
  }

  void take(SlotRun r) {
    for (std::uint32_t i = r.index; i < r.index + r.count; ++i) used_[i] = true;
    const std::uint32_t a = r.index / per_area_;
    area_used_[a] += r.count;
    area_peak_[a] = std::max(area_peak_[a], area_used_[a]);
  }
  void give(SlotRun r) {
    for (std::uint32_t i = r.index; i < r.index + r.count; ++i) used_[i] = false;
    area_used_[r.index / per_area_] -= r.count;
  }
  bool is_free(SlotRun r) const {
    for (std::uint32_t i = r.index; i < r.index + r.count; ++i) {
      if (used_[i]) return false;
    }
    return true;
  }
  std::uint64_t in_use() const {
    std::uint64_t n = 0;
    for (auto u : area_used_) n += u;
    return n;
  }
  std::uint64_t peak_sum() const {
    std::uint64_t n = 0;
    for (auto u : area_peak_) n += u;
    return n;
  }
  std::uint32_t per_area() const { return per_area_; }
  std::uint32_t areas() const { return areas_; }

 private:
  std::uint32_t per_area_;
  std::uint32_t areas_;
  std::vector<bool> used_;
  std::vector<std::uint64_t> area_used_;
  std::vector<std::uint64_t> area_peak_;
};

class BouncePoolPropertyTest : public ::testing::TestWithParam<PoolParams> {};

TEST_P(BouncePoolPropertyTest, RandomSequencesMatchTheBitmapModel) {
  const PoolParams p = GetParam();
  auto created = BouncePool::Create(p.bytes, p.areas);
  ASSERT_TRUE(created) << created.error().message();
  BouncePool& pool = **created;
  ASSERT_EQ(pool.area_count(), p.areas);
  PoolModel model(pool.total_slots(), p.areas);
  std::mt19937_64 rng(p.seed);
  std::vector<SlotRun> live;
  std::uint64_t maps = 0, failed = 0;
  std::optional<std::uint32_t> home;

  for (int op = 0; op < kOps; ++op) {
    SCOPED_TRACE(op);
    const std::uint64_t kind = rng() % 100;
    if (kind < 2) {  // an invalid request changes nothing
      SlotRequest bad;
      switch (rng() % 4) {
        case 0:
          bad = {.slots = 0};
          break;
        case 1:
          bad = {.slots = kMaxSlotsPerRun + 1};
          break;
        case 2:
          bad = {.slots = 1, .align = 6};
          break;
        default:
          bad = {.slots = 1, .align = 8, .residue = 8};
          break;
      }
      ASSERT_EQ(pool.allocate(bad).error(), Errc::kInvalidOption);
    } else if (kind < 55 || live.empty()) {
      SlotRequest req;
      const std::uint64_t sz = rng() % 100;
      req.slots = static_cast<std::uint32_t>(sz < 60   ? 1 + rng() % 4
                                             : sz < 85 ? 5 + rng() % 28
                                                       : 33 + rng() % 96);
      const std::uint64_t al = rng() % 10;
      req.align = al < 4 ? 1 : 1u << (1 + rng() % 5);  // 1 .. 32
      req.residue = static_cast<std::uint32_t>(rng() % req.align);
      auto r = pool.allocate(req);
      if (!home) {
        // The first allocation lands in this thread's home area.
        ASSERT_TRUE(r);
        home = r->index / model.per_area();
      }
      // Expected: the home area first, then the next ones; the lowest fit inside.
      std::int64_t want = -1;
      for (std::uint32_t k = 0; k < model.areas() && want < 0; ++k) {
        want = model.lowest_fit((*home + k) % model.areas(), req);
      }
      if (want < 0) {
        ASSERT_FALSE(r) << "allocated " << r->index << " where the model has no room";
        ASSERT_EQ(r.error(), Errc::kPoolFull);
        ++failed;
      } else {
        ASSERT_TRUE(r) << r.error().message() << "; the model fits at " << want;
        ASSERT_EQ(r->index, static_cast<std::uint32_t>(want));
        ASSERT_EQ(r->count, req.slots);
        ASSERT_EQ(r->index % req.align, req.residue);
        ASSERT_EQ(r->index / model.per_area(), (r->index + r->count - 1) / model.per_area());
        ASSERT_TRUE(model.is_free(*r)) << "overlapping runs";
        model.take(*r);
        live.push_back(*r);
        ++maps;
      }
    } else {
      const std::size_t i = rng() % live.size();
      pool.free(live[i]);
      model.give(live[i]);
      live[i] = live.back();
      live.pop_back();
    }
    ASSERT_EQ(pool.stats().slots_in_use, model.in_use());
  }
  BouncePoolStats s = pool.stats();
  EXPECT_EQ(s.maps, maps);
  EXPECT_EQ(s.failed_maps, failed);
  EXPECT_EQ(s.high_water_slots, model.peak_sum());
  EXPECT_GT(failed, 0u) << "the sequence never filled the pool";

  // Freeing everything restores the whole pool: maximal runs fill every area exactly.
  for (const SlotRun& r : live) pool.free(r);
  EXPECT_EQ(pool.stats().slots_in_use, 0u);
  const std::uint32_t runs = pool.total_slots() / kMaxSlotsPerRun;
  for (std::uint32_t i = 0; i < runs; ++i) {
    auto r = pool.allocate({.slots = kMaxSlotsPerRun});
    ASSERT_TRUE(r) << i;
  }
  EXPECT_EQ(pool.allocate({.slots = 1}).error(), Errc::kPoolFull);
  EXPECT_EQ(pool.stats().slots_in_use, pool.total_slots());
}

INSTANTIATE_TEST_SUITE_P(Sequences, BouncePoolPropertyTest,
                         ::testing::Values(PoolParams{kMiB, 1, 11}, PoolParams{kMiB, 1, 12},
                                           PoolParams{2 * kMiB, 4, 13}, PoolParams{4 * kMiB, 2, 14},
                                           PoolParams{kMiB, 2, 15}),
                         pool_param_name);

}  // namespace
}  // namespace vdma::dma

#include "vdma/dma/bounce_pool.h"

#include <algorithm>
#include <bit>
#include <thread>

#include "vdma/base/check.h"
#include "vdma/dma/errors.h"

namespace vdma::dma {
namespace {

constexpr std::uint32_t kAreaGranuleSlots = 32;  // 64 KiB: keeps alignments <= 32 exact

// A test-and-test-and-set spinlock: critical sections here are a few dozen instructions.
class SpinLock {
 public:
  void lock() {
    while (locked_.exchange(true, std::memory_order_acquire)) {
      while (locked_.load(std::memory_order_relaxed)) __builtin_ia32_pause();
    }
  }
  void unlock() { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

// Each thread gets a home area once; threads spread round robin.
std::uint32_t home_slot_hint() {
  static std::atomic<std::uint32_t> next{0};
  thread_local std::uint32_t mine = next.fetch_add(1, std::memory_order_relaxed);
  return mine;
}

}  // namespace

struct alignas(64) BouncePool::Area {
  SpinLock lock;
  std::uint32_t first = 0;  // pool-wide index of slot 0 of this area
  std::uint32_t nslots = 0;
  std::uint32_t hint = 0;  // every slot below it is in use (guarded by lock)
  std::uint64_t used = 0;  // guarded by lock
  std::uint64_t high_water = 0;
  std::uint64_t failures = 0;
  std::uint64_t maps = 0;
  std::atomic<std::uint64_t> bytes_bounced{0};
  std::vector<std::uint64_t> bitmap;  // bit set = slot in use

  bool test(std::uint32_t i) const { return (bitmap[i / 64] >> (i % 64)) & 1; }

  // First clear bit at or after i (nslots if none).
  std::uint32_t next_clear(std::uint32_t i) const {
    while (i < nslots) {
      std::uint64_t w = ~bitmap[i / 64] >> (i % 64);
      if (w != 0) return std::min(nslots, i + static_cast<std::uint32_t>(std::countr_zero(w)));
      i = (i / 64 + 1) * 64;
    }
    return nslots;
  }
  // Last set bit in [i, end), or -1.
  std::int64_t last_set(std::uint32_t i, std::uint32_t end) const {
    std::int64_t found = -1;
    while (i < end) {
      std::uint32_t word_end = std::min(end, (i / 64 + 1) * 64);
      std::uint64_t w = bitmap[i / 64] >> (i % 64);
      std::uint32_t width = word_end - i;
      if (width < 64) w &= (std::uint64_t{1} << width) - 1;
      if (w != 0) found = i + 63 - std::countl_zero(w);
      i = word_end;
    }
    return found;
  }
  // Sets or clears bits [i, i + n) a word at a time.
  void set_range(std::uint32_t i, std::uint32_t n, bool v) {
    while (n > 0) {
      const std::uint32_t bit = i % 64;
      const std::uint32_t take = std::min(n, 64 - bit);
      const std::uint64_t m = (take == 64 ? ~std::uint64_t{0} : ((std::uint64_t{1} << take) - 1))
                              << bit;
      if (v)
        bitmap[i / 64] |= m;
      else
        bitmap[i / 64] &= ~m;
      i += take;
      n -= take;
    }
  }

  // Under lock: the lowest run satisfying req, or -1. Sets *first_free to the first free
  // slot at or after hint (to move the hint without a second scan).
  std::int64_t find(const SlotRequest& req, std::uint32_t* first_free) const {
    auto aligned = [&](std::uint32_t c) {
      std::uint32_t g = first + c;  // alignment is pool-wide; first is 32-slot aligned
      std::uint32_t up = (req.residue - g) & (req.align - 1);
      return c + up;
    };
    *first_free = next_clear(hint);
    std::uint32_t c = aligned(*first_free);
    while (c + req.slots <= nslots) {
      std::int64_t used_at = last_set(c, c + req.slots);
      if (used_at < 0) return c;
      c = aligned(next_clear(static_cast<std::uint32_t>(used_at) + 1));
    }
    return -1;
  }
};

BouncePool::BouncePool(std::uint32_t total_slots, std::uint32_t areas)
    : total_slots_(total_slots), slots_per_area_(total_slots / areas) {
  for (std::uint32_t a = 0; a < areas; ++a) {
    auto area = std::make_unique<Area>();
    area->first = a * slots_per_area_;
    area->nslots = slots_per_area_;
    area->bitmap.assign((slots_per_area_ + 63) / 64, 0);
    areas_.push_back(std::move(area));
  }
}

BouncePool::~BouncePool() = default;

Result<std::unique_ptr<BouncePool>> BouncePool::Create(std::uint64_t bytes, std::uint32_t areas) {
  if (bytes == 0 || bytes % (kSlotSize * kAreaGranuleSlots) != 0) return Err(Errc::kInvalidOption);
  if (bytes / kSlotSize > UINT32_MAX) return Err(Errc::kInvalidOption);
  auto slots = static_cast<std::uint32_t>(bytes / kSlotSize);
  if (areas == 0) {
    areas = std::bit_ceil(std::max(1u, std::thread::hardware_concurrency()));
    areas = std::min<std::uint32_t>(areas, 64);
    while (areas > 1 && (slots / areas < kMaxSlotsPerRun || slots % (areas * kAreaGranuleSlots)))
      areas /= 2;
  }
  if (areas == 0 || areas > 64 || slots % (areas * kAreaGranuleSlots) != 0 ||
      slots / areas < kMaxSlotsPerRun) {
    return Err(Errc::kInvalidOption);
  }
  return std::unique_ptr<BouncePool>(new BouncePool(slots, areas));
}

Result<SlotRun> BouncePool::allocate(const SlotRequest& req) {
  if (req.slots == 0 || req.slots > kMaxSlotsPerRun || req.align == 0 ||
      (req.align & (req.align - 1)) != 0 || req.align > kAreaGranuleSlots ||
      req.residue >= req.align) {
    return Err(Errc::kInvalidOption);
  }
  const auto n = static_cast<std::uint32_t>(areas_.size());
  const std::uint32_t home = home_slot_hint() % n;
  for (std::uint32_t k = 0; k < n; ++k) {
    Area& a = *areas_[(home + k) % n];
    a.lock.lock();
    std::uint32_t first_free = 0;
    std::int64_t found = a.find(req, &first_free);
    if (found >= 0) {
      auto c = static_cast<std::uint32_t>(found);
      a.set_range(c, req.slots, true);
      // Everything below first_free is in use; if the run starts there, so is the run.
      a.hint = c == first_free ? a.next_clear(c + req.slots) : first_free;
      a.used += req.slots;
      a.high_water = std::max(a.high_water, a.used);
      ++a.maps;
      a.lock.unlock();
      return SlotRun{a.first + c, req.slots};
    }
    a.lock.unlock();
  }
  Area& a = *areas_[home];
  a.lock.lock();
  ++a.failures;
  a.lock.unlock();
  return Err(Errc::kPoolFull);
}

BouncePool::Area& BouncePool::area_of(std::uint32_t slot) {
  VDMA_CHECK(slot < total_slots_);
  return *areas_[slot / slots_per_area_];
}

void BouncePool::free(SlotRun run) {
  Area& a = area_of(run.index);
  std::uint32_t c = run.index - a.first;
  VDMA_CHECK(run.count > 0 && c + run.count <= a.nslots);
  a.lock.lock();
  // Callers validated ownership; this only guards the allocator's own invariant.
  VDMA_CHECK_MSG(a.test(c) && a.test(c + run.count - 1), "freeing bounce slots not in use");
  a.set_range(c, run.count, false);
  a.used -= run.count;
  a.hint = std::min(a.hint, c);
  a.lock.unlock();
}

void BouncePool::add_bytes_bounced(std::uint32_t slot, std::uint64_t n) {
  area_of(slot).bytes_bounced.fetch_add(n, std::memory_order_relaxed);
}

BouncePoolStats BouncePool::stats() const {
  BouncePoolStats s;
  s.total_slots = total_slots_;
  s.areas = static_cast<std::uint32_t>(areas_.size());
  for (const auto& a : areas_) {
    a->lock.lock();
    s.slots_in_use += a->used;
    s.high_water_slots += a->high_water;
    s.failed_maps += a->failures;
    s.maps += a->maps;
    a->lock.unlock();
    s.bytes_bounced += a->bytes_bounced.load(std::memory_order_relaxed);
  }
  return s;
}

}  // namespace vdma::dma

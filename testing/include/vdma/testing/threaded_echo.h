// Two-thread loopback: the calling thread drives (adds batches, kicks, reaps used buffers),
// a second thread is the device (pops, echoes, returns, publishes). Both poll; no
// notifications. Used by the concurrency tests (under TSan) and the loopback benchmarks.
//
//   auto r = run_threaded_echo(*lb, {.buffers = 100000, .batch = 32, .buf_size = 64});
//   EXPECT_TRUE(r.ok) << r.error;
#pragma once

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "vdma/testing/loopback.h"
#include "vdma/testing/patterns.h"

namespace vdma::testing {

// Spin briefly, then give the core away: on a loaded machine the peer thread may be
// waiting for this very core, and pure spinning would stall both for a whole time slice.
class Backoff {
 public:
  void idle() {
    if (++spins_ < 256) {
      __builtin_ia32_pause();
    } else {
      spins_ = 0;
      std::this_thread::yield();
    }
  }
  void progress() { spins_ = 0; }

 private:
  unsigned spins_ = 0;
};

struct ThreadedEchoConfig {
  std::uint64_t buffers = 100000;
  std::uint32_t batch = 32;
  std::uint32_t buf_size = 64;
  bool verify = true;  // fill each buffer with a fresh pattern and check the echo
  std::chrono::seconds timeout{60};
};

struct ThreadedEchoResult {
  bool ok = false;
  std::string error;
  std::uint64_t completed = 0;
  std::uint64_t bytes_verified = 0;
  double seconds = 0;
};

template <class LB>
ThreadedEchoResult run_threaded_echo(LB& lb, const ThreadedEchoConfig& cfg) {
  ThreadedEchoResult res;
  auto& drv = lb.driver();
  const std::uint32_t slots = drv.num_free();
  struct Slot {
    std::byte* in;
    std::byte* out;
  };
  std::vector<Slot> slot(slots);
  std::vector<std::uint32_t> free_slots;
  for (std::uint32_t i = 0; i < slots; ++i) {
    auto in = lb.guest().alloc_ram(cfg.buf_size);
    auto out = lb.guest().alloc_ram(cfg.buf_size);
    if (!in || !out) {
      res.error = "guest RAM exhausted";
      return res;
    }
    slot[i] = {*in, *out};
    fill_pattern({*in, cfg.buf_size}, i);
    free_slots.push_back(i);
  }

  // Read by the device thread on every batch: on a line of its own, away from the driver
  // thread's locals (false sharing would cost a line transfer per batch).
  struct alignas(64) SharedFlags {
    std::atomic<bool> stop{false};
    std::atomic<bool> device_failed{false};
  } flags;
  auto& stop = flags.stop;
  auto& device_failed = flags.device_failed;
  std::string device_error;
  std::thread device([&] {
    virtq::Chain c;
    Backoff backoff;
    auto& dev = lb.device();
    while (!stop.load(std::memory_order_relaxed)) {
      std::uint32_t served = 0;
      for (; served < cfg.batch; ++served) {
        auto r = dev.pop(c);
        if (!r) {
          device_error = r.error().message();
          device_failed.store(true);
          return;
        }
        if (!*r) break;
        if (!dev.push_used(c.head, echo_chain(c))) {
          device_error = "push_used failed";
          device_failed.store(true);
          return;
        }
      }
      if (served > 0) {
        dev.publish_used();
        backoff.progress();
      } else {
        backoff.idle();
      }
    }
  });

  std::vector<std::uint64_t> seed(slots);
  Backoff backoff;
  std::uint64_t issued = 0;
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + cfg.timeout;
  while (res.completed < cfg.buffers && !device_failed.load(std::memory_order_relaxed)) {
    std::uint32_t added = 0;
    while (added < cfg.batch && issued < cfg.buffers && !free_slots.empty()) {
      const std::uint32_t s = free_slots.back();
      if (cfg.verify) {
        seed[s] = issued;
        fill_pattern({slot[s].in, cfg.buf_size}, issued);
      }
      virtq::Segment r{slot[s].in, cfg.buf_size};
      virtq::Segment w{slot[s].out, cfg.buf_size};
      auto a = drv.add_buffers({&r, 1}, {&w, 1}, s);
      if (!a) break;  // full or pool full: reap first
      free_slots.pop_back();
      ++issued;
      ++added;
    }
    if (added > 0) drv.kick_prepare();
    bool reaped = false;
    for (;;) {
      auto u = drv.get_used();
      if (!u) {
        res.error = "driver: " + drv.broken_reason();
        stop.store(true);
        device.join();
        return res;
      }
      if (!u->has_value()) break;
      reaped = true;
      const auto s = static_cast<std::uint32_t>((*u)->token);
      if ((*u)->len != cfg.buf_size) {
        res.error = "short echo";
      } else if (cfg.verify) {
        if (first_mismatch({slot[s].out, cfg.buf_size}, seed[s]) >= 0) res.error = "corrupt echo";
        res.bytes_verified += cfg.buf_size;
      }
      free_slots.push_back(s);
      ++res.completed;
    }
    if (!res.error.empty()) break;
    if (!reaped && added == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        res.error = "timeout";
        break;
      }
      backoff.idle();
    } else {
      backoff.progress();
    }
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stop.store(true);
  device.join();
  if (device_failed.load()) res.error = "device: " + device_error;
  res.ok = res.error.empty() && res.completed == cfg.buffers;
  return res;
}

}  // namespace vdma::testing

// A tiny virtio-blk request helper for the front-end tests (the real blk driver lives in
// devices/ later). A request is the 16-byte header {type, reserved, sector} (device-
// readable), the data (readable for OUT, writable for IN), and a 1-byte status (writable).
// All three live in guest RAM, allocated from the Guest.
//
//   BlkRequests io(*guest);
//   std::uint64_t t = io.make(kBlkOut, /*sector=*/8, 4096);
//   fill_pattern(io.data(t), 1);
//   ASSERT_TRUE(io.submit(q, t));
//   ASSERT_TRUE(q.kick());
//   auto done = io.wait_all(q, 1, 5s);     // tokens completed, status checked by the caller
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <span>
#include <vector>

#include "vdma/dma/guest.h"
#include "vdma/vhost/frontend.h"

namespace vdma::vhost::test {

inline constexpr std::uint32_t kBlkIn = 0;
inline constexpr std::uint32_t kBlkOut = 1;
inline constexpr std::uint32_t kBlkFlush = 4;
inline constexpr std::uint8_t kBlkStatusOk = 0;
inline constexpr std::uint64_t kSectorSize = 512;

struct BlkHeader {
  std::uint32_t type = 0;
  std::uint32_t reserved = 0;
  std::uint64_t sector = 0;
};
static_assert(sizeof(BlkHeader) == 16);

class BlkRequests {
 public:
  struct Request {
    std::uint32_t type = 0;
    std::uint64_t sector = 0;
    BlkHeader* header = nullptr;
    std::byte* data = nullptr;
    std::uint32_t len = 0;
    std::uint8_t* status = nullptr;
  };

  explicit BlkRequests(dma::Guest& guest) : guest_(guest) {}
  ~BlkRequests() {
    for (auto& [t, r] : reqs_) release(r);
  }
  BlkRequests(const BlkRequests&) = delete;
  BlkRequests& operator=(const BlkRequests&) = delete;

  // A new request; returns its token (0 on allocation failure).
  std::uint64_t make(std::uint32_t type, std::uint64_t sector, std::uint32_t len) {
    Request r{.type = type, .sector = sector, .len = len};
    auto h = guest_.alloc_ram(sizeof(BlkHeader));
    auto s = guest_.alloc_ram(1);
    if (!h || !s) return 0;
    r.header = reinterpret_cast<BlkHeader*>(*h);
    r.status = reinterpret_cast<std::uint8_t*>(*s);
    if (len > 0) {
      auto d = guest_.alloc_ram(len);
      if (!d) return 0;
      r.data = *d;
    }
    *r.header = BlkHeader{type, 0, sector};
    const std::uint64_t token = next_++;
    reqs_[token] = r;
    return token;
  }

  Request& get(std::uint64_t token) { return reqs_.at(token); }
  std::span<std::byte> data(std::uint64_t token) {
    Request& r = reqs_.at(token);
    return {r.data, r.len};
  }

  // Adds the request's buffers to `q` (status reset to a non-OK sentinel first).
  Result<void> submit(FrontendQueue& q, std::uint64_t token) {
    Request& r = reqs_.at(token);
    *r.status = 0xff;
    std::vector<virtq::Segment> readable{{r.header, sizeof(BlkHeader)}};
    std::vector<virtq::Segment> writable;
    if (r.len > 0) {
      (r.type == kBlkIn ? writable : readable).push_back({r.data, r.len});
    }
    writable.push_back({r.status, 1});
    return q.add_buffers(readable, writable, token);
  }

  // Collects used buffers until `count` arrived or `timeout` passed; returns them.
  Result<std::vector<virtq::UsedBuffer>> wait(FrontendQueue& q, std::size_t count,
                                              std::chrono::milliseconds timeout) {
    std::vector<virtq::UsedBuffer> done;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (done.size() < count) {
      while (auto u = VDMA_TRY(q.get_used())) done.push_back(*u);
      if (done.size() >= count) break;
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) break;
      VDMA_TRY(q.wait_call(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now)));
    }
    return done;
  }

  // One request, synchronously: submit, kick, wait. Returns the status byte.
  Result<std::uint8_t> run(FrontendQueue& q, std::uint64_t token,
                           std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    VDMA_TRY(submit(q, token));
    VDMA_TRY(q.kick());
    auto done = VDMA_TRY(wait(q, 1, timeout));
    if (done.size() != 1 || done[0].token != token)
      return Err(std::make_error_code(std::errc::timed_out));
    return *get(token).status;
  }

 private:
  void release(Request& r) {
    (void)guest_.free_ram(reinterpret_cast<std::byte*>(r.header), sizeof(BlkHeader));
    (void)guest_.free_ram(reinterpret_cast<std::byte*>(r.status), 1);
    if (r.data != nullptr) (void)guest_.free_ram(r.data, r.len);
  }

  dma::Guest& guest_;
  std::map<std::uint64_t, Request> reqs_;
  std::uint64_t next_ = 1;
};

}  // namespace vdma::vhost::test

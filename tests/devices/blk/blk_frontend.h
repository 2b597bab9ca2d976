// A scripted vhost-user front end for block devices: negotiates blk features over a
// Channel, shares a Guest's memfd RAM, starts driver queues (split or packed) and issues
// requests laid out in guest RAM. Used by the in-process back-end tests and by the test
// that drives the real `vdma blk` process.
#pragma once

#include <poll.h>
#include <sys/eventfd.h>

#include <cstring>
#include <optional>
#include <vector>

#include "../../vhost/backend/backend_test_util.h"
#include "vdma/devices/blk/spec.h"

namespace vdma::blk::test {

using vhost::ConfigSpace;
using vhost::FrontendRequest;
using vhost::U64;
using vhost::VringAddr;
using vhost::VringFd;
using vhost::VringState;
using vhost::test::dup_fd;
using vhost::test::Scripted;
using vhost::test::table_of;

// Kick and call eventfds; non-blocking, so draining an empty one returns.
inline UniqueFd make_eventfd() {
  return UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
}

// One request as the driver lays it out in guest RAM.
struct GuestRequest {
  std::byte* hdr = nullptr;
  std::byte* data = nullptr;
  std::byte* status = nullptr;
  std::uint32_t len = 0;
};

template <class Ring>
struct BlkFrontEnd {
  using Driver = typename Ring::template Driver<dma::DmaOps>;

  // Creates the guest; `ch` must be connected before negotiate().
  void make_guest() {
    auto g = dma::Guest::Create({.platform = dma::kTraditional, .ram_bytes = 8 << 20});
    ASSERT_TRUE(g) << g.error().message();
    guest = std::move(*g);
  }

  FeatureSet features() const {
    FeatureSet f{kVirtioFVersion1, vhost::kVhostUserFProtocolFeatures,
                 kBlkFFlush,       kBlkFMq,
                 kBlkFDiscard,     kBlkFWriteZeroes,
                 kBlkFConfigWce};
    if (Ring::kPacked) f.set(kVirtioFRingPacked);
    return f;
  }

  void negotiate() {
    Scripted s{*ch};
    ASSERT_TRUE(s.send(FrontendRequest::kSetOwner));
    auto offered = s.get_u64(FrontendRequest::kGetFeatures);
    ASSERT_TRUE(offered);
    ASSERT_TRUE(FeatureSet::FromBits(*offered).contains(features()));
    auto proto = s.get_u64(FrontendRequest::kGetProtocolFeatures);
    ASSERT_TRUE(proto);
    ASSERT_TRUE(vhost::ProtocolFeatureSet::FromBits(*proto).has(vhost::kProtocolFConfig));
    ASSERT_EQ(*s.acked(FrontendRequest::kSetProtocolFeatures,
                       U64{vhost::ProtocolFeatureSet{vhost::kProtocolFReplyAck, vhost::kProtocolFMq,
                                                     vhost::kProtocolFConfig}
                               .bits()}),
              0u);
    ASSERT_EQ(*s.acked(FrontendRequest::kSetFeatures, U64{features().bits()}), 0u);
    ASSERT_EQ(*s.acked(FrontendRequest::kSetMemTable, table_of(guest->shared_regions())), 0u);
    auto o = guest->make_ops_of_kind(dma::OpsKind::kDirect);
    ASSERT_TRUE(o) << o.error().message();
    ops = std::move(*o);
  }

  void start_queue(std::uint32_t index, std::uint32_t size = 256) {
    virtq::DriverQueueConfig cfg;
    cfg.size = size;
    cfg.features = virtq::RingFeatures::From(features());
    auto q = Driver::Create(*ops, cfg);
    ASSERT_TRUE(q) << q.error().message();
    drivers.push_back(std::make_unique<Driver>(std::move(*q)));
    kicks.push_back(make_eventfd());
    calls.push_back(make_eventfd());
    ASSERT_TRUE(vhost::test::start_vring(*ch, *guest, index, size, Ring::kPacked,
                                         drivers.back()->addresses(), calls.back().get(),
                                         kicks.back().get()));
  }

  GuestRequest alloc(std::uint32_t type, std::uint64_t sector, std::uint32_t len) {
    GuestRequest r;
    r.len = len;
    r.hdr = *guest->alloc_ram(sizeof(OutHdr));
    if (len) r.data = *guest->alloc_ram(len);
    r.status = *guest->alloc_ram(1);
    OutHdr h{type, 0, sector};
    std::memcpy(r.hdr, &h, sizeof h);
    *r.status = std::byte{0xee};
    return r;
  }
  void add(std::size_t q, const GuestRequest& r, bool device_writes_data, std::uint64_t token) {
    std::vector<virtq::Segment> rd{{r.hdr, sizeof(OutHdr)}};
    std::vector<virtq::Segment> wr;
    if (r.len) (device_writes_data ? wr : rd).push_back({r.data, r.len});
    wr.push_back({r.status, 1});
    ASSERT_TRUE(drivers[q]->add_buffers(rd, wr, token));
  }
  void kick(std::size_t q) {
    if (drivers[q]->kick_prepare()) vhost::EventLoop::signal_eventfd(kicks[q].get());
  }
  // Waits for `n` used buffers on queue `q`; returns them.
  std::vector<virtq::UsedBuffer> wait_used(std::size_t q, std::size_t n) {
    std::vector<virtq::UsedBuffer> out;
    for (int spins = 0; spins < 3000 && out.size() < n; ++spins) {
      auto u = drivers[q]->get_used();
      EXPECT_TRUE(u) << u.error().message();
      if (!u) break;
      if (*u) {
        out.push_back(**u);
        continue;
      }
      pollfd p{calls[q].get(), POLLIN, 0};
      ::poll(&p, 1, 5);
      vhost::EventLoop::drain_eventfd(calls[q].get());
    }
    return out;
  }

  std::optional<vhost::Channel> ch;
  std::unique_ptr<dma::Guest> guest;
  std::unique_ptr<dma::DmaOps> ops;
  std::vector<std::unique_ptr<Driver>> drivers;
  std::vector<UniqueFd> kicks;
  std::vector<UniqueFd> calls;
};

}  // namespace vdma::blk::test

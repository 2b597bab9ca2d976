// BackendConnection: the memory table (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG) and the
// IOTLB (IOTLB_MSG in, BACKEND_IOTLB_MSG misses out).
//
// Memory changes while rings run (DPDK's virtio-user re-sends SET_MEM_TABLE whenever its
// pool grows): the running rings are stopped (the device finishes what it holds), the
// table is replaced, and the rings restart at the index they stopped at, their areas
// translated again through the new mappings.
#include "vdma/base/log.h"
#include "vdma/vhost/backend.h"
#include "vdma/vhost/errors.h"
#include "vring.h"

namespace vdma::vhost {
namespace {

constexpr std::string_view kLog = "vhost.backend";

memory::Access access_of(IotlbPerm p) {
  return static_cast<memory::Access>(static_cast<std::uint8_t>(p) & 3);
}

IotlbPerm perm_of(memory::Access a) {
  return static_cast<IotlbPerm>(static_cast<std::uint8_t>(a) & 3);
}

bool overlaps(std::uint64_t a, std::uint64_t alen, std::uint64_t b, std::uint64_t blen) {
  return a < b + blen && b < a + alen;
}

}  // namespace

void BackendConnection::restart_running(const std::function<Result<void>()>& change,
                                        Result<void>* result) {
  std::vector<std::uint16_t> running;
  for (std::size_t i = 0; i < vrings_.size(); ++i) {
    if (vrings_[i]->ring) running.push_back(static_cast<std::uint16_t>(i));
  }
  for (std::uint16_t i : running) stop_ring(i);
  *result = change();
  for (std::uint16_t i : running) try_start(i);
}

Result<std::optional<Payload>> BackendConnection::handle_memory(DecodedMessage& m) {
  Result<void> r = Ok();
  switch (m.request) {
    case FrontendRequest::kSetMemTable: {
      auto& t = std::get<MemoryTable>(m.payload);
      restart_running([&] { return memory_.set_table(t.regions, std::move(t.fds)); }, &r);
      VDMA_TRY(r);
      log_info(kLog, "memory table: {} regions", memory_.size());
      return std::nullopt;
    }
    case FrontendRequest::kGetMaxMemSlots:
      return Payload{U64{BackendMemory::kMaxSlots}};
    case FrontendRequest::kAddMemReg: {
      if (!protocol_.has(kProtocolFConfigureMemSlots)) return Err(Errc::kFeatureNotOffered);
      auto& p = std::get<MemoryRegionFd>(m.payload);
      restart_running([&] { return memory_.add_region(p.region, std::move(p.fd)); }, &r);
      VDMA_TRY(r);
      return std::nullopt;
    }
    case FrontendRequest::kRemMemReg: {
      if (!protocol_.has(kProtocolFConfigureMemSlots)) return Err(Errc::kFeatureNotOffered);
      auto& p = std::get<MemoryRegionFd>(m.payload);
      restart_running([&] { return memory_.remove_region(p.region); }, &r);
      VDMA_TRY(r);
      return std::nullopt;
    }
    default:
      return Err(Errc::kUnsupportedRequest);
  }
}

Result<std::optional<Payload>> BackendConnection::handle_iotlb(const IotlbMsg& msg) {
  if (!features_.has(kVirtioFAccessPlatform)) return Err(Errc::kIotlbUnavailable);
  log(LogLevel::kDebug, kLog, "IOTLB {} iova {:#x} size {:#x} uaddr {:#x} perm {}",
      msg.type == IotlbType::kUpdate ? "update" : "invalidate", msg.iova, msg.size,
      msg.user_addr, static_cast<int>(msg.perm));
  if (msg.type == IotlbType::kUpdate) {
    ++stats_.iotlb_updates;
    VDMA_TRY(iotlb_.insert(
        memory::IotlbEntry{Iova{msg.iova}, msg.size, msg.user_addr, access_of(msg.perm)}));
    // Rings waiting for a translation try again (the answer may cover their miss or not:
    // a ring that still misses asks again).
    for (std::size_t i = 0; i < vrings_.size(); ++i) {
      Vring& v = *vrings_[i];
      if (v.start_pending_iotlb) {
        try_start(static_cast<std::uint16_t>(i));
      } else if (v.ring && v.ring->waiting_for_iotlb()) {
        v.ring->clear_waiting();
        process(static_cast<std::uint16_t>(i));
      }
    }
    return std::nullopt;
  }
  // Invalidate: complete before the ack. Rings whose areas lie in the range translated
  // them at start: restart them so they translate again (and ask, if it is gone).
  ++stats_.iotlb_invalidations;
  iotlb_.invalidate(Iova{msg.iova}, msg.size);
  for (std::size_t i = 0; i < vrings_.size(); ++i) {
    Vring& v = *vrings_[i];
    if (!v.ring || !v.addr) continue;
    const std::uint64_t n = v.num;
    if (overlaps(msg.iova, msg.size, v.addr->desc_user_addr, 16 * n) ||
        overlaps(msg.iova, msg.size, v.addr->avail_user_addr, 6 + 2 * n) ||
        overlaps(msg.iova, msg.size, v.addr->used_user_addr, 6 + 8 * n)) {
      stop_ring(static_cast<std::uint16_t>(i));
      try_start(static_cast<std::uint16_t>(i));
    }
  }
  return std::nullopt;
}

void BackendConnection::send_miss(std::uint64_t iova, memory::Access access) {
  if (!backend_channel_) {
    log_error(kLog, "IOTLB miss at {:#x} but the front end gave no back-end channel", iova);
    return;
  }
  IotlbMsg msg;
  msg.iova = iova;
  msg.perm = perm_of(access);
  msg.type = IotlbType::kMiss;
  ++stats_.iotlb_misses_sent;
  log(LogLevel::kDebug, kLog, "IOTLB miss iova {:#x} perm {}", iova, static_cast<int>(msg.perm));
  // No need_reply: the front end answers on the main channel with an IOTLB update, and
  // waiting here for an ack while it waits for ours would deadlock.
  if (auto s = backend_channel_->send(encode(BackendRequest::kIotlbMsg, msg)); !s) {
    log_error(kLog, "IOTLB miss at {:#x} not sent: {}", iova, s.error().message());
  }
}

}  // namespace vdma::vhost

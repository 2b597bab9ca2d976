// Helpers shared by the vhost tests: descriptor counting (leak checks), descriptor
// factories, payload comparison (descriptors compare by presence) and valid sample
// payloads for every request.
#pragma once

#include <dirent.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <concepts>
#include <cstdint>
#include <functional>
#include <type_traits>
#include <variant>
#include <vector>

#include "vdma/vhost/message.h"

namespace vdma::vhost::test {

// Open descriptors of this process (the directory's own descriptor excluded).
inline int open_fd_count() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int n = 0;
  while (::readdir(dir) != nullptr) ++n;
  ::closedir(dir);
  return n - 3;  // ".", ".." and the DIR's descriptor
}

inline UniqueFd make_eventfd() {
  return UniqueFd(::eventfd(0, EFD_CLOEXEC));
}

inline std::vector<UniqueFd> make_fds(std::size_t n) {
  std::vector<UniqueFd> fds;
  for (std::size_t i = 0; i < n; ++i) fds.push_back(make_eventfd());
  return fds;
}

inline UniqueFd make_memfd(std::size_t size) {
  UniqueFd fd(::memfd_create("vhost-test", MFD_CLOEXEC));
  if (fd && ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) fd.reset();
  return fd;
}

inline bool same_fd_presence(const UniqueFd& a, const UniqueFd& b) {
  return static_cast<bool>(a) == static_cast<bool>(b);
}

// Field-wise equality for the payload alternatives that own descriptors.
inline bool same(const VringFd& a, const VringFd& b) {
  return a.index == b.index && same_fd_presence(a.fd, b.fd);
}
inline bool same(const MemoryTable& a, const MemoryTable& b) {
  return a.regions == b.regions && a.fds.size() == b.fds.size();
}
inline bool same(const MemoryRegionFd& a, const MemoryRegionFd& b) {
  return a.region == b.region && same_fd_presence(a.fd, b.fd);
}
inline bool same(const LogBase& a, const LogBase& b) {
  return a.log == b.log && same_fd_presence(a.fd, b.fd);
}
inline bool same(const FdPayload& a, const FdPayload& b) {
  return same_fd_presence(a.fd, b.fd);
}
inline bool same(const InflightFd& a, const InflightFd& b) {
  return a.inflight == b.inflight && same_fd_presence(a.fd, b.fd);
}
inline bool same(const SharedObject& a, const SharedObject& b) {
  return a.uuid == b.uuid && same_fd_presence(a.fd, b.fd);
}
inline bool same(const DeviceStateFd& a, const DeviceStateFd& b) {
  return a.params == b.params && same_fd_presence(a.fd, b.fd);
}
inline bool same(const StatusFd& a, const StatusFd& b) {
  return a.status == b.status && same_fd_presence(a.fd, b.fd);
}
inline bool same(const VringAreaFd& a, const VringAreaFd& b) {
  return a.index == b.index && a.size == b.size && a.offset == b.offset &&
         same_fd_presence(a.fd, b.fd);
}

// Same alternative, same fields; descriptors compare by presence (and count).
inline bool same_payload(const Payload& a, const Payload& b) {
  if (a.index() != b.index()) return false;
  return std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        const T& y = std::get<T>(b);
        if constexpr (std::equality_comparable<T>) {
          return x == y;
        } else {
          return same(x, y);
        }
      },
      a);
}

// A memory region of `size` bytes at `gpa` (user address and mmap offset derived).
inline MemoryRegion region(std::uint64_t gpa, std::uint64_t size) {
  return MemoryRegion{gpa, size, 0x7f0000000000 + gpa, 0};
}

// A valid request payload for every front-end request, fresh descriptors included.
inline Payload sample_request(FrontendRequest r) {
  using R = FrontendRequest;
  switch (r) {
    case R::kSetFeatures:
      return U64{0x1'4000'0000ULL};
    case R::kSetProtocolFeatures:
      return U64{0x8209};
    case R::kSendRarp:
      return U64{0x0000'5452'0012'3456ULL};
    case R::kNetSetMtu:
      return U64{1500};
    case R::kCloseCryptoSession:
      return U64{7};
    case R::kSetStatus:
      return U64{0xf};
    case R::kSetVringNum:
      return VringState{1, 256};
    case R::kSetVringBase:
      return VringState{2, 0x8000'0010};
    case R::kGetVringBase:
      return VringState{3, 0};
    case R::kSetVringEnable:
      return VringState{0, 1};
    case R::kSetVringEndian:
      return VringState{0, kVringBigEndian};
    case R::kVringKick:
      return VringState{5, 0};
    case R::kSetVringAddr:
      return VringAddr{1, kVringFLog, 0x1000, 0x3000, 0x2000, 0x9000};
    case R::kSetVringKick:
      return VringFd{4, make_eventfd()};
    case R::kSetVringCall:
      return VringFd{255, make_eventfd()};
    case R::kSetVringErr:
      return VringFd{0, UniqueFd{}};  // polling: the invalid-fd flag
    case R::kSetMemTable: {
      MemoryTable t;
      t.regions = {region(0, 0x100000), region(0x100000, 0x200000), region(0x4000'0000, 0x1000)};
      t.fds = make_fds(3);
      return t;
    }
    case R::kAddMemReg:
      return MemoryRegionFd{MemoryRegion{0x1'0000'0000, 0x200000, 0x7f12'3400'0000, 0x1000},
                            make_eventfd()};
    case R::kRemMemReg:
      return MemoryRegionFd{MemoryRegion{0x1'0000'0000, 0x200000, 0x7f12'3400'0000, 0}, UniqueFd{}};
    case R::kSetLogBase:
      return LogBase{LogDescription{0x8000, 0x1000}, make_eventfd()};
    case R::kSetLogFd:
    case R::kSetBackendReqFd:
    case R::kGpuSetSocket:
      return FdPayload{make_eventfd()};
    case R::kIotlbMsg:
      return IotlbMsg{0xfee0'0000,        0x1000, 0x7f00'dead'0000, IotlbPerm::kReadWrite,
                      IotlbType::kUpdate, {}};
    case R::kGetConfig:
      return ConfigSpace{0, kConfigFlagFrontend, std::vector<std::uint8_t>(60, 0)};
    case R::kSetConfig:
      return ConfigSpace{20, kConfigFlagMigration, {1, 2, 3, 4, 5, 6, 7, 8}};
    case R::kCreateCryptoSession:
      return Opaque{std::vector<std::uint8_t>(300, 0x5a)};
    case R::kGetInflightFd:
      return InflightFd{InflightDescription{0, 0, 4, 256, 0}, UniqueFd{}};
    case R::kSetInflightFd:
      return InflightFd{InflightDescription{0x21000, 0, 4, 256, 0}, make_eventfd()};
    case R::kGetSharedObject:
      return SharedObject{Uuid{{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}},
                          UniqueFd{}};
    case R::kSetDeviceStateFd:
      return DeviceStateFd{DeviceStateParams{kTransferLoad, kPhaseStopped}, make_eventfd()};
    default:  // requests without payload
      return NoPayload{};
  }
}

// A valid reply payload (explicit body, or a REPLY_ACK) for every front-end request.
inline Payload sample_reply(FrontendRequest r) {
  using R = FrontendRequest;
  switch (r) {
    case R::kGetFeatures:
      return U64{0x1'7000'0000ULL};
    case R::kGetProtocolFeatures:
      return U64{0xfffff};
    case R::kGetQueueNum:
    case R::kGetMaxMemSlots:
      return U64{8};
    case R::kGetStatus:
      return U64{0xf};
    case R::kGetVringBase:
      return VringState{3, 0x1234};
    case R::kSetLogBase:
      return NoPayload{};
    case R::kGetConfig:
      return ConfigSpace{0, 0, std::vector<std::uint8_t>(60, 0xab)};
    case R::kCreateCryptoSession:
      return Opaque{std::vector<std::uint8_t>(16, 1)};
    case R::kPostcopyAdvise:
      return FdPayload{make_eventfd()};
    case R::kGetInflightFd:
      return InflightFd{InflightDescription{0x21000, 0, 4, 256, 0}, make_eventfd()};
    case R::kGetSharedObject:
      return SharedObject{Uuid{{9}}, make_eventfd()};
    case R::kSetDeviceStateFd:
      return StatusFd{0, make_eventfd()};
    default:  // REPLY_ACK (IOTLB_MSG, POSTCOPY_END, CHECK_DEVICE_STATE: a u64 status too)
      return U64{0};
  }
}

inline Payload sample_backend_request(BackendRequest r) {
  using R = BackendRequest;
  switch (r) {
    case R::kIotlbMsg:
      return IotlbMsg{0xfee0'1000, 0, 0, IotlbPerm::kRead, IotlbType::kMiss, {}};
    case R::kConfigChangeMsg:
      return NoPayload{};
    case R::kVringHostNotifierMsg:
      return VringAreaFd{2, 0x1000, 0x3000, make_eventfd()};
    case R::kVringCall:
    case R::kVringErr:
      return VringState{1, 0};
    case R::kSharedObjectAdd:
    case R::kSharedObjectRemove:
    case R::kSharedObjectLookup:
      return SharedObject{Uuid{{0xde, 0xad, 0xbe, 0xef}}, UniqueFd{}};
  }
  return NoPayload{};
}

inline Payload sample_backend_reply(BackendRequest r) {
  if (r == BackendRequest::kSharedObjectLookup) return StatusFd{0, make_eventfd()};
  return U64{0};
}

inline std::vector<FrontendRequest> all_frontend_requests() {
  std::vector<FrontendRequest> all;
  for (std::uint32_t v = kFirstFrontendRequest; v <= kLastFrontendRequest; ++v) {
    all.push_back(*frontend_request_from_wire(v));
  }
  return all;
}

inline std::vector<BackendRequest> all_backend_requests() {
  std::vector<BackendRequest> all;
  for (std::uint32_t v = kFirstBackendRequest; v <= kLastBackendRequest; ++v) {
    all.push_back(*backend_request_from_wire(v));
  }
  return all;
}

}  // namespace vdma::vhost::test

// The vhost-user codec. One table (frontend_spec / backend_spec) says, per request, which
// payload kind and which descriptor rule the request and its reply carry; decoding and
// encoding both follow it, so the two cannot disagree. Decoding is three steps:
//   1. the header (version, flags, size against the bytes given, descriptor count);
//   2. the payload kind: exact or self-consistent size, then the descriptors it implies;
//   3. request-specific rules (undefined bits, value ranges, IOTLB types per direction).
// Every peer value is copied out of the byte span once (memcpy into a local), checked,
// and only then used.
#include "vdma/vhost/message.h"

#include <sys/types.h>

#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "vdma/base/check.h"

namespace vdma::vhost {
namespace {

using Bytes = std::span<const std::uint8_t>;
using Fds = std::vector<UniqueFd>;

// Payload kinds, the spec's "request payload" / "reply payload". The first seventeen are
// the Payload alternatives, in order.
enum class Kind : std::uint8_t {
  kNone,
  kU64,
  kVringState,
  kVringAddr,
  kVringFd,
  kMemoryTable,
  kRegion,
  kLogBase,
  kFd,
  kIotlb,
  kConfig,
  kInflight,
  kSharedObject,
  kDeviceStateFd,
  kStatusFd,
  kVringArea,
  kOpaque,
  kNoneOrU64,     // reply to SET_LOG_BASE: peers send either nothing or a u64 0
  kConfigOrNone,  // reply to GET_CONFIG: config space, or nothing as the error signal
};

// Kind K (up to kOpaque) is Payload alternative number K.
template <Kind K, class T>
constexpr bool kIs =
    std::is_same_v<std::variant_alternative_t<static_cast<std::size_t>(K), Payload>, T>;
static_assert(std::variant_size_v<Payload> == static_cast<std::size_t>(Kind::kOpaque) + 1);
static_assert(kIs<Kind::kNone, NoPayload> && kIs<Kind::kU64, U64> &&
              kIs<Kind::kVringState, VringState> && kIs<Kind::kVringAddr, VringAddr> &&
              kIs<Kind::kVringFd, VringFd> && kIs<Kind::kMemoryTable, MemoryTable> &&
              kIs<Kind::kRegion, MemoryRegionFd> && kIs<Kind::kLogBase, LogBase> &&
              kIs<Kind::kFd, FdPayload> && kIs<Kind::kIotlb, IotlbMsg> &&
              kIs<Kind::kConfig, ConfigSpace> && kIs<Kind::kInflight, InflightFd> &&
              kIs<Kind::kSharedObject, SharedObject> && kIs<Kind::kDeviceStateFd, DeviceStateFd> &&
              kIs<Kind::kStatusFd, StatusFd> && kIs<Kind::kVringArea, VringAreaFd> &&
              kIs<Kind::kOpaque, Opaque>);

// Which descriptors come with a payload.
enum class FdRule : std::uint8_t {
  kNone,          // none
  kOne,           // exactly one
  kOptional,      // zero or one (GET_SHARED_OBJECT reply: the dma-buf, when found)
  kIgnored,       // REM_MEM_REG: "MAY accept ... one"; if sent, it is closed unused
  kPerRegion,     // SET_MEM_TABLE: one per region, in region order
  kNoFdFlag,      // one, unless bit 8 of the u64 says none (KICK/CALL/ERR, HOST_NOTIFIER)
  kIfStatusZero,  // SHARED_OBJECT_LOOKUP reply: "passing the fd and a zero" on success only
  kDeviceState,   // SET_DEVICE_STATE_FD reply: one unless bit 8; never with an error code
  kIfMmapSize,    // GET_INFLIGHT_FD reply: one unless mmap_size is 0 (the back end failed)
};

struct Shape {
  Kind kind;
  FdRule fds;
};
struct Spec {
  Shape request;
  Shape reply;  // the explicit reply body, or kAck for requests without one
};

constexpr Shape kNothing{Kind::kNone, FdRule::kNone};
constexpr Shape kU64Shape{Kind::kU64, FdRule::kNone};
constexpr Shape kAck = kU64Shape;  // REPLY_ACK: a u64, 0 = success
constexpr Shape kState{Kind::kVringState, FdRule::kNone};

Spec frontend_spec(FrontendRequest r) {
  using R = FrontendRequest;
  switch (r) {
    case R::kGetFeatures:
    case R::kGetProtocolFeatures:
    case R::kGetQueueNum:
    case R::kGetMaxMemSlots:
    case R::kGetStatus:
    case R::kPostcopyEnd:
    case R::kCheckDeviceState:
      return {kNothing, kU64Shape};
    case R::kSetOwner:
    case R::kResetOwner:
    case R::kPostcopyListen:
    case R::kResetDevice:
      return {kNothing, kAck};
    case R::kSetFeatures:
    case R::kSetProtocolFeatures:
    case R::kSendRarp:
    case R::kNetSetMtu:
    case R::kCloseCryptoSession:
    case R::kSetStatus:
      return {kU64Shape, kAck};
    case R::kSetVringNum:
    case R::kSetVringBase:
    case R::kSetVringEnable:
    case R::kSetVringEndian:
    case R::kVringKick:
      return {kState, kAck};
    case R::kGetVringBase:
      return {kState, kState};
    case R::kSetVringAddr:
      return {{Kind::kVringAddr, FdRule::kNone}, kAck};
    case R::kSetVringKick:
    case R::kSetVringCall:
    case R::kSetVringErr:
      return {{Kind::kVringFd, FdRule::kNoFdFlag}, kAck};
    case R::kSetMemTable:
      return {{Kind::kMemoryTable, FdRule::kPerRegion}, kAck};
    case R::kAddMemReg:
      return {{Kind::kRegion, FdRule::kOne}, kAck};
    case R::kRemMemReg:
      return {{Kind::kRegion, FdRule::kIgnored}, kAck};
    case R::kSetLogBase:
      return {{Kind::kLogBase, FdRule::kOne}, {Kind::kNoneOrU64, FdRule::kNone}};
    case R::kSetLogFd:
    case R::kSetBackendReqFd:
    case R::kGpuSetSocket:
      return {{Kind::kFd, FdRule::kOne}, kAck};
    case R::kIotlbMsg:
      return {{Kind::kIotlb, FdRule::kNone}, kU64Shape};
    case R::kGetConfig:
      return {{Kind::kConfig, FdRule::kNone}, {Kind::kConfigOrNone, FdRule::kNone}};
    case R::kSetConfig:
      return {{Kind::kConfig, FdRule::kNone}, kAck};
    case R::kCreateCryptoSession:
      return {{Kind::kOpaque, FdRule::kNone}, {Kind::kOpaque, FdRule::kNone}};
    case R::kPostcopyAdvise:
      return {kNothing, {Kind::kFd, FdRule::kOne}};
    case R::kGetInflightFd:
      return {{Kind::kInflight, FdRule::kNone}, {Kind::kInflight, FdRule::kIfMmapSize}};
    case R::kSetInflightFd:
      return {{Kind::kInflight, FdRule::kOne}, kAck};
    case R::kGetSharedObject:
      return {{Kind::kSharedObject, FdRule::kNone}, {Kind::kSharedObject, FdRule::kOptional}};
    case R::kSetDeviceStateFd:
      return {{Kind::kDeviceStateFd, FdRule::kOne}, {Kind::kStatusFd, FdRule::kDeviceState}};
  }
  VDMA_CHECK_MSG(false, "front-end request outside the enum");
  __builtin_unreachable();
}

Spec backend_spec(BackendRequest r) {
  using R = BackendRequest;
  switch (r) {
    case R::kIotlbMsg:
      return {{Kind::kIotlb, FdRule::kNone}, kAck};
    case R::kConfigChangeMsg:
      return {kNothing, kAck};
    case R::kVringHostNotifierMsg:
      return {{Kind::kVringArea, FdRule::kNoFdFlag}, kAck};
    case R::kVringCall:
    case R::kVringErr:
      return {kState, kAck};
    case R::kSharedObjectAdd:
    case R::kSharedObjectRemove:
      return {{Kind::kSharedObject, FdRule::kNone}, kAck};
    case R::kSharedObjectLookup:
      return {{Kind::kSharedObject, FdRule::kNone}, {Kind::kStatusFd, FdRule::kIfStatusZero}};
  }
  VDMA_CHECK_MSG(false, "back-end request outside the enum");
  __builtin_unreachable();
}

// After POSTCOPY_LISTEN, the back end answers these with its own mapping (no fds).
Shape frontend_reply_shape(FrontendRequest r, ReplyOptions options) {
  if (options.postcopy && r == FrontendRequest::kSetMemTable) {
    return {Kind::kMemoryTable, FdRule::kNone};
  }
  if (options.postcopy && r == FrontendRequest::kAddMemReg) return {Kind::kRegion, FdRule::kNone};
  return frontend_spec(r).reply;
}

// ---------------------------------------------------------------------------------------
// Range arithmetic.

// True if [start, start + size) runs past 2^64. A size of 0 never wraps.
constexpr bool wraps(std::uint64_t start, std::uint64_t size) {
  return size != 0 && start > std::numeric_limits<std::uint64_t>::max() - (size - 1);
}
constexpr std::uint64_t kMaxOffT = static_cast<std::uint64_t>(std::numeric_limits<off_t>::max());

Result<void> check_region(const MemoryRegion& r, bool check_mmap_offset) {
  if (r.size == 0) return Err(Errc::kZeroSizeRegion);
  if (wraps(r.guest_addr, r.size) || wraps(r.user_addr, r.size)) {
    return Err(Errc::kRegionOverflow);
  }
  if (check_mmap_offset && (r.mmap_offset > kMaxOffT || r.size > kMaxOffT - r.mmap_offset)) {
    return Err(Errc::kRegionOverflow);
  }
  return Ok();
}

// Regions are checked one by one first, so last = guest_addr + size - 1 does not wrap.
Result<void> check_no_overlap(const std::vector<MemoryRegion>& regions) {
  for (std::size_t i = 0; i < regions.size(); ++i) {
    const std::uint64_t a_first = regions[i].guest_addr;
    const std::uint64_t a_last = a_first + (regions[i].size - 1);
    for (std::size_t j = i + 1; j < regions.size(); ++j) {
      const std::uint64_t b_first = regions[j].guest_addr;
      const std::uint64_t b_last = b_first + (regions[j].size - 1);
      if (a_first <= b_last && b_first <= a_last) return Err(Errc::kRegionOverlap);
    }
  }
  return Ok();
}

// ---------------------------------------------------------------------------------------
// Step 1: the header.

Result<void> check_header(const Header& h, Bytes payload, std::size_t num_fds, bool reply) {
  if ((h.flags & kVersionMask) != kVersion1) return Err(Errc::kBadVersion);
  if ((h.flags & ~kDefinedFlags) != 0) return Err(Errc::kBadFlags);
  // need_reply means nothing on a reply; libvhost-user echoes the request's flags into
  // explicit replies, so it is tolerated there.
  if (reply && (h.flags & kFlagReply) == 0) return Err(Errc::kMissingReplyFlag);
  if (!reply && (h.flags & kFlagReply) != 0) return Err(Errc::kReplyFlagOnRequest);
  if (h.size > kMaxPayloadSize) return Err(Errc::kPayloadTooLarge);
  if (payload.size() < h.size) return Err(Errc::kTruncated);
  if (payload.size() > h.size) return Err(Errc::kSizeMismatch);
  if (num_fds > kMaxFds) return Err(Errc::kTooManyFds);
  return Ok();
}

// ---------------------------------------------------------------------------------------
// Step 2: payload kinds. Each parser checks the size, then takes the descriptors.

template <class T>
Result<T> read_exact(Bytes b) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (b.size() != sizeof(T)) return Err(Errc::kSizeMismatch);
  T value;
  std::memcpy(&value, b.data(), sizeof(T));
  return value;
}

// Exactly one descriptor if `want`, otherwise none.
Result<UniqueFd> take_fd(Fds& fds, bool want) {
  if (fds.size() != (want ? 1U : 0U)) return Err(Errc::kFdCountMismatch);
  if (!want) return UniqueFd{};
  return std::move(fds.front());
}

// For payloads whose descriptor does not depend on their content.
Result<UniqueFd> take_fd(Fds& fds, FdRule rule) {
  switch (rule) {
    case FdRule::kNone:
      return take_fd(fds, false);
    case FdRule::kOne:
      return take_fd(fds, true);
    case FdRule::kOptional:
      return take_fd(fds, !fds.empty());
    case FdRule::kIgnored:
      if (fds.size() > 1) return Err(Errc::kFdCountMismatch);
      fds.clear();  // "the back-end MUST close it without using it"
      return UniqueFd{};
    default:
      VDMA_CHECK_MSG(false, "descriptor rule needs the payload");
      __builtin_unreachable();
  }
}

Result<Payload> parse_none(Bytes b, Fds& fds) {
  if (!b.empty()) return Err(Errc::kSizeMismatch);
  VDMA_TRY(take_fd(fds, false));
  return NoPayload{};
}

Result<Payload> parse_u64(Bytes b, Fds& fds) {
  const std::uint64_t v = VDMA_TRY(read_exact<std::uint64_t>(b));
  VDMA_TRY(take_fd(fds, false));
  return U64{v};
}

// VringState, VringAddr, IotlbMsg: the wire struct is the decoded value.
template <class T>
Result<Payload> parse_plain(Bytes b, Fds& fds) {
  T v = VDMA_TRY(read_exact<T>(b));
  if constexpr (std::is_same_v<T, IotlbMsg>) v.padding = {};  // never interpreted
  VDMA_TRY(take_fd(fds, false));
  return v;
}

Result<Payload> parse_vring_fd(Bytes b, Fds& fds) {
  const std::uint64_t v = VDMA_TRY(read_exact<std::uint64_t>(b));
  if ((v & ~(kVringIndexMask | kVringNoFdFlag)) != 0) return Err(Errc::kInvalidField);
  UniqueFd fd = VDMA_TRY(take_fd(fds, (v & kVringNoFdFlag) == 0));
  return VringFd{static_cast<std::uint8_t>(v & kVringIndexMask), std::move(fd)};
}

Result<Payload> parse_memory_table(Bytes b, FdRule rule, Fds& fds) {
  if (b.size() < sizeof(MemoryTableHeader)) return Err(Errc::kSizeMismatch);
  MemoryTableHeader h;
  std::memcpy(&h, b.data(), sizeof(h));
  const std::uint32_t n = h.num_regions;  // peer-controlled: bound it before any use
  if (n > kMaxMemoryRegions) return Err(Errc::kTooManyRegions);
  if (b.size() != sizeof(h) + n * sizeof(MemoryRegion)) return Err(Errc::kSizeMismatch);
  MemoryTable table;
  table.regions.resize(n);
  if (n != 0) std::memcpy(table.regions.data(), b.data() + sizeof(h), n * sizeof(MemoryRegion));
  for (const MemoryRegion& r : table.regions) VDMA_TRY(check_region(r, true));
  VDMA_TRY(check_no_overlap(table.regions));
  if (rule == FdRule::kPerRegion) {
    if (fds.size() != n) return Err(Errc::kFdCountMismatch);
    table.fds = std::move(fds);
  } else {
    VDMA_TRY(take_fd(fds, false));
  }
  return table;
}

Result<Payload> parse_region(Bytes b, FdRule rule, Fds& fds) {
  const SingleMemoryRegion s = VDMA_TRY(read_exact<SingleMemoryRegion>(b));
  UniqueFd fd = VDMA_TRY(take_fd(fds, rule));
  return MemoryRegionFd{s.region, std::move(fd)};
}

Result<Payload> parse_log_base(Bytes b, Fds& fds) {
  const LogDescription log = VDMA_TRY(read_exact<LogDescription>(b));
  UniqueFd fd = VDMA_TRY(take_fd(fds, true));
  return LogBase{log, std::move(fd)};
}

Result<Payload> parse_fd(Bytes b, Fds& fds) {
  if (!b.empty()) return Err(Errc::kSizeMismatch);
  UniqueFd fd = VDMA_TRY(take_fd(fds, true));
  return FdPayload{std::move(fd)};
}

Result<Payload> parse_config(Bytes b, Fds& fds) {
  if (b.size() < sizeof(ConfigHeader)) return Err(Errc::kSizeMismatch);
  ConfigHeader h;
  std::memcpy(&h, b.data(), sizeof(h));
  const std::uint64_t offset = h.offset;  // read once; 64-bit so the sum cannot wrap
  const std::uint64_t size = h.size;
  if (offset + size > kMaxConfigSize) return Err(Errc::kConfigOutOfRange);
  if (b.size() != sizeof(h) + size) return Err(Errc::kSizeMismatch);
  VDMA_TRY(take_fd(fds, false));
  const auto data = b.subspan(sizeof(h));
  return ConfigSpace{h.offset, h.flags, std::vector<std::uint8_t>(data.begin(), data.end())};
}

Result<Payload> parse_inflight(Bytes b, FdRule rule, Fds& fds) {
  const InflightDescription d = VDMA_TRY(read_exact<InflightDescription>(b));
  UniqueFd fd = rule == FdRule::kIfMmapSize ? VDMA_TRY(take_fd(fds, d.mmap_size != 0))
                                            : VDMA_TRY(take_fd(fds, rule));
  return InflightFd{d, std::move(fd)};
}

Result<Payload> parse_shared_object(Bytes b, FdRule rule, Fds& fds) {
  const Uuid uuid = VDMA_TRY(read_exact<Uuid>(b));
  UniqueFd fd = VDMA_TRY(take_fd(fds, rule));
  return SharedObject{uuid, std::move(fd)};
}

Result<Payload> parse_device_state(Bytes b, Fds& fds) {
  const DeviceStateParams p = VDMA_TRY(read_exact<DeviceStateParams>(b));
  UniqueFd fd = VDMA_TRY(take_fd(fds, true));
  return DeviceStateFd{p, std::move(fd)};
}

Result<Payload> parse_status_fd(Bytes b, FdRule rule, Fds& fds) {
  const std::uint64_t status = VDMA_TRY(read_exact<std::uint64_t>(b));
  bool want = status == 0;
  if (rule == FdRule::kDeviceState) {
    want = (status & kDeviceStateNoFdFlag) == 0;
    // "The back-end must not both indicate an error and return a file descriptor."
    if (want && (status & kDeviceStateErrorMask) != 0) return Err(Errc::kInvalidField);
  }
  UniqueFd fd = VDMA_TRY(take_fd(fds, want));
  return StatusFd{status, std::move(fd)};
}

Result<Payload> parse_vring_area(Bytes b, Fds& fds) {
  const VringArea a = VDMA_TRY(read_exact<VringArea>(b));
  if ((a.u64 & ~(kVringIndexMask | kVringNoFdFlag)) != 0) return Err(Errc::kInvalidField);
  UniqueFd fd = VDMA_TRY(take_fd(fds, (a.u64 & kVringNoFdFlag) == 0));
  return VringAreaFd{static_cast<std::uint8_t>(a.u64 & kVringIndexMask), a.size, a.offset,
                     std::move(fd)};
}

Result<Payload> parse_opaque(Bytes b, Fds& fds) {
  VDMA_TRY(take_fd(fds, false));
  return Opaque{std::vector<std::uint8_t>(b.begin(), b.end())};
}

Result<Payload> parse(Shape shape, Bytes b, Fds& fds) {
  switch (shape.kind) {
    case Kind::kNone:
      return parse_none(b, fds);
    case Kind::kU64:
      return parse_u64(b, fds);
    case Kind::kVringState:
      return parse_plain<VringState>(b, fds);
    case Kind::kVringAddr:
      return parse_plain<VringAddr>(b, fds);
    case Kind::kVringFd:
      return parse_vring_fd(b, fds);
    case Kind::kMemoryTable:
      return parse_memory_table(b, shape.fds, fds);
    case Kind::kRegion:
      return parse_region(b, shape.fds, fds);
    case Kind::kLogBase:
      return parse_log_base(b, fds);
    case Kind::kFd:
      return parse_fd(b, fds);
    case Kind::kIotlb:
      return parse_plain<IotlbMsg>(b, fds);
    case Kind::kConfig:
      return parse_config(b, fds);
    case Kind::kInflight:
      return parse_inflight(b, shape.fds, fds);
    case Kind::kSharedObject:
      return parse_shared_object(b, shape.fds, fds);
    case Kind::kDeviceStateFd:
      return parse_device_state(b, fds);
    case Kind::kStatusFd:
      return parse_status_fd(b, shape.fds, fds);
    case Kind::kVringArea:
      return parse_vring_area(b, fds);
    case Kind::kOpaque:
      return parse_opaque(b, fds);
    case Kind::kNoneOrU64:
      return b.empty() ? parse_none(b, fds) : parse_u64(b, fds);
    case Kind::kConfigOrNone:
      return b.empty() ? parse_none(b, fds) : parse_config(b, fds);
  }
  VDMA_CHECK_MSG(false, "payload kind outside the enum");
  __builtin_unreachable();
}

// ---------------------------------------------------------------------------------------
// Step 3: request-specific rules.

bool valid_access(IotlbPerm p) {
  return p == IotlbPerm::kRead || p == IotlbPerm::kWrite || p == IotlbPerm::kReadWrite;
}

// IOTLB_MSG from the front end: updates and invalidations only.
Result<void> check_frontend_iotlb(const IotlbMsg& m) {
  switch (m.type) {
    case IotlbType::kUpdate:
      if (!valid_access(m.perm)) return Err(Errc::kBadIotlbPerm);
      if (m.size == 0 || wraps(m.iova, m.size) || wraps(m.user_addr, m.size)) {
        return Err(Errc::kIotlbOverflow);
      }
      return Ok();
    case IotlbType::kInvalidate:
      // Only iova and size are filled in (perm and user_addr may be garbage). A 64-bit
      // size cannot say "all 2^64 bytes", and dropping too much is harmless, so iova 0
      // with size 0 reads as "everything"; any other empty or wrapping range is refused.
      if (m.iova == 0 && m.size == 0) return Ok();
      if (m.size == 0 || wraps(m.iova, m.size)) return Err(Errc::kIotlbOverflow);
      return Ok();
    default:
      return Err(Errc::kBadIotlbType);
  }
}

// BACKEND_IOTLB_MSG: misses and access failures, each naming the access it needed (size
// and user_addr are not filled in).
Result<void> check_backend_iotlb(const IotlbMsg& m) {
  if (m.type != IotlbType::kMiss && m.type != IotlbType::kAccessFail) {
    return Err(Errc::kBadIotlbType);
  }
  if (!valid_access(m.perm)) return Err(Errc::kBadIotlbPerm);
  return Ok();
}

Result<void> check_num_at_most(const Payload& p, std::uint32_t max) {
  if (std::get<VringState>(p).num > max) return Err(Errc::kInvalidField);
  return Ok();
}

Result<void> check_config_flags(const Payload& p) {
  const std::uint32_t flags = std::get<ConfigSpace>(p).flags;
  if (flags != kConfigFlagFrontend && flags != kConfigFlagMigration) {
    return Err(Errc::kInvalidField);
  }
  return Ok();
}

Result<void> check_device_state_params(const DeviceStateParams& p) {
  if (p.direction != kTransferSave && p.direction != kTransferLoad) {
    return Err(Errc::kInvalidField);
  }
  if (p.phase != kPhaseStopped) return Err(Errc::kInvalidField);
  return Ok();
}

Result<void> check_frontend_request(FrontendRequest r, const Payload& p) {
  using R = FrontendRequest;
  switch (r) {
    case R::kSetVringEndian:  // 0 little, 1 big; "Other values are invalid."
    case R::kSetVringEnable:  // 0 disable, 1 enable
      return check_num_at_most(p, 1);
    // GET_VRING_BASE and VRING_KICK: num is reserved ("must be set to 0") and ignored
    // here: DPDK virtio-user sends GET_VRING_BASE from a state it never cleared.
    case R::kSetVringAddr:
      if ((std::get<VringAddr>(p).flags & ~kVringFLog) != 0) return Err(Errc::kInvalidField);
      return Ok();
    case R::kAddMemReg:
      return check_region(std::get<MemoryRegionFd>(p).region, true);
    case R::kRemMemReg:  // "The mmap offset is ignored."
      return check_region(std::get<MemoryRegionFd>(p).region, false);
    case R::kIotlbMsg:
      return check_frontend_iotlb(std::get<IotlbMsg>(p));
    case R::kGetConfig:
    case R::kSetConfig:
      return check_config_flags(p);
    case R::kSetDeviceStateFd:
      return check_device_state_params(std::get<DeviceStateFd>(p).params);
    default:
      return Ok();
  }
}

// BACKEND_VRING_CALL / ERR: num is reserved and, as for the front end's, ignored.
Result<void> check_backend_request(BackendRequest r, const Payload& p) {
  if (r == BackendRequest::kIotlbMsg) return check_backend_iotlb(std::get<IotlbMsg>(p));
  return Ok();
}

// ---------------------------------------------------------------------------------------
// Encoding.

struct Wire {
  std::vector<std::uint8_t> bytes;
  Fds fds;
};

template <class T>
void put_bytes(Wire& w, const T& v) {
  static_assert(std::is_trivially_copyable_v<T>);
  const std::size_t at = w.bytes.size();
  w.bytes.resize(at + sizeof(T));
  std::memcpy(w.bytes.data() + at, &v, sizeof(T));
}

void put_fd_if(Wire& w, UniqueFd fd, bool want) {
  VDMA_CHECK_MSG(static_cast<bool>(fd) == want, "descriptor does not match the payload");
  if (want) w.fds.push_back(std::move(fd));
}

void put_fd(Wire& w, UniqueFd fd, FdRule rule) {
  switch (rule) {
    case FdRule::kNone:
    case FdRule::kIgnored:  // ours never sends one
      return put_fd_if(w, std::move(fd), false);
    case FdRule::kOne:
      return put_fd_if(w, std::move(fd), true);
    case FdRule::kOptional: {
      const bool present = static_cast<bool>(fd);
      return put_fd_if(w, std::move(fd), present);
    }
    default:
      VDMA_CHECK_MSG(false, "descriptor rule needs the payload");
  }
}

void put(Wire&, const NoPayload&, FdRule) {}
void put(Wire& w, const U64& v, FdRule) {
  put_bytes(w, v.value);
}
template <class T>  // VringState, VringAddr, IotlbMsg: the struct is the wire image
requires std::is_same_v<T, VringState> || std::is_same_v<T, VringAddr> ||
    std::is_same_v<T, IotlbMsg>
void put(Wire& w, T v, FdRule) {
  if constexpr (std::is_same_v<T, IotlbMsg>) v.padding = {};
  put_bytes(w, v);
}

// KICK/CALL/ERR: the invalid-fd flag is set exactly when no descriptor is given.
void put(Wire& w, VringFd&& v, FdRule) {
  const bool has_fd = static_cast<bool>(v.fd);
  put_bytes(w, std::uint64_t{v.index} | (has_fd ? 0 : kVringNoFdFlag));
  put_fd_if(w, std::move(v.fd), has_fd);
}

void put(Wire& w, MemoryTable&& t, FdRule rule) {
  VDMA_CHECK_MSG(t.regions.size() <= kMaxMemoryRegions, "more than 8 memory regions");
  const bool per_region = rule == FdRule::kPerRegion;
  VDMA_CHECK_MSG(t.fds.size() == (per_region ? t.regions.size() : 0),
                 "memory table descriptors do not match its regions");
  put_bytes(w, MemoryTableHeader{static_cast<std::uint32_t>(t.regions.size()), 0});
  for (const MemoryRegion& r : t.regions) put_bytes(w, r);
  for (UniqueFd& fd : t.fds) w.fds.push_back(std::move(fd));
}

void put(Wire& w, MemoryRegionFd&& r, FdRule rule) {
  put_bytes(w, SingleMemoryRegion{0, r.region});
  put_fd(w, std::move(r.fd), rule);
}

void put(Wire& w, LogBase&& l, FdRule rule) {
  put_bytes(w, l.log);
  put_fd(w, std::move(l.fd), rule);
}

void put(Wire& w, FdPayload&& f, FdRule rule) {
  put_fd(w, std::move(f.fd), rule);
}

void put(Wire& w, ConfigSpace&& c, FdRule) {
  const std::uint64_t size = c.data.size();
  VDMA_CHECK_MSG(std::uint64_t{c.offset} + size <= kMaxConfigSize, "config access past 256");
  put_bytes(w, ConfigHeader{c.offset, static_cast<std::uint32_t>(size), c.flags});
  w.bytes.insert(w.bytes.end(), c.data.begin(), c.data.end());
}

void put(Wire& w, InflightFd&& i, FdRule rule) {
  put_bytes(w, i.inflight);
  if (rule == FdRule::kIfMmapSize) return put_fd_if(w, std::move(i.fd), i.inflight.mmap_size != 0);
  put_fd(w, std::move(i.fd), rule);
}

void put(Wire& w, SharedObject&& s, FdRule rule) {
  put_bytes(w, s.uuid);
  put_fd(w, std::move(s.fd), rule);
}

void put(Wire& w, DeviceStateFd&& d, FdRule rule) {
  put_bytes(w, d.params);
  put_fd(w, std::move(d.fd), rule);
}

void put(Wire& w, StatusFd&& s, FdRule rule) {
  std::uint64_t status = s.status;
  const bool has_fd = static_cast<bool>(s.fd);
  if (rule == FdRule::kDeviceState) {
    VDMA_CHECK_MSG(!has_fd || (status & kDeviceStateErrorMask) == 0, "error with a descriptor");
    status = has_fd ? status & ~kDeviceStateNoFdFlag : status | kDeviceStateNoFdFlag;
  } else {
    VDMA_CHECK_MSG(has_fd == (status == 0), "a descriptor comes exactly with status 0");
  }
  put_bytes(w, status);
  put_fd_if(w, std::move(s.fd), has_fd);
}

void put(Wire& w, VringAreaFd&& a, FdRule) {
  const bool has_fd = static_cast<bool>(a.fd);
  put_bytes(w, VringArea{std::uint64_t{a.index} | (has_fd ? 0 : kVringNoFdFlag), a.size, a.offset});
  put_fd_if(w, std::move(a.fd), has_fd);
}

void put(Wire& w, Opaque&& o, FdRule) {
  w.bytes = std::move(o.bytes);
}

bool kind_accepts(Kind kind, std::size_t index) {
  switch (kind) {
    case Kind::kNoneOrU64:
      return index == static_cast<std::size_t>(Kind::kNone) ||
             index == static_cast<std::size_t>(Kind::kU64);
    case Kind::kConfigOrNone:
      return index == static_cast<std::size_t>(Kind::kNone) ||
             index == static_cast<std::size_t>(Kind::kConfig);
    default:
      return index == static_cast<std::size_t>(kind);
  }
}

Message build(std::uint32_t request, std::uint32_t flags, Shape shape, Payload payload) {
  VDMA_CHECK_MSG(kind_accepts(shape.kind, payload.index()), "payload kind does not fit request");
  Wire w;
  std::visit([&](auto& v) { put(w, std::move(v), shape.fds); }, payload);
  VDMA_CHECK_MSG(w.bytes.size() <= kMaxPayloadSize, "payload above kMaxPayloadSize");
  VDMA_CHECK(w.fds.size() <= kMaxFds);
  Message m;
  m.header = Header{request, kVersion1 | flags, static_cast<std::uint32_t>(w.bytes.size())};
  m.payload = std::move(w.bytes);
  m.fds = std::move(w.fds);
  return m;
}

constexpr std::uint32_t request_flags(NeedReply n) {
  return n == NeedReply::kYes ? kFlagNeedReply : 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Public entry points.

Result<Header> parse_header(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < kHeaderSize) return Err(Errc::kShortHeader);
  Header h;
  std::memcpy(&h, bytes.data(), kHeaderSize);
  return h;
}

Result<DecodedMessage> decode_frontend_message(const Header& header,
                                               std::span<const std::uint8_t> payload,
                                               std::vector<UniqueFd> fds) {
  VDMA_TRY(check_header(header, payload, fds.size(), /*reply=*/false));
  const auto request = frontend_request_from_wire(header.request);
  if (!request) return Err(Errc::kUnknownRequest);
  Payload p = VDMA_TRY(parse(frontend_spec(*request).request, payload, fds));
  VDMA_TRY(check_frontend_request(*request, p));
  return DecodedMessage{*request, (header.flags & kFlagNeedReply) != 0, std::move(p)};
}

Result<DecodedMessage> decode_frontend_message(Message&& m) {
  return decode_frontend_message(m.header, m.payload, std::move(m.fds));
}

Result<DecodedBackendMessage> decode_backend_message(const Header& header,
                                                     std::span<const std::uint8_t> payload,
                                                     std::vector<UniqueFd> fds) {
  VDMA_TRY(check_header(header, payload, fds.size(), /*reply=*/false));
  const auto request = backend_request_from_wire(header.request);
  if (!request) return Err(Errc::kUnknownRequest);
  Payload p = VDMA_TRY(parse(backend_spec(*request).request, payload, fds));
  VDMA_TRY(check_backend_request(*request, p));
  return DecodedBackendMessage{*request, (header.flags & kFlagNeedReply) != 0, std::move(p)};
}

Result<DecodedBackendMessage> decode_backend_message(Message&& m) {
  return decode_backend_message(m.header, m.payload, std::move(m.fds));
}

Result<DecodedReply> decode_reply(FrontendRequest sent, const Header& header,
                                  std::span<const std::uint8_t> payload, std::vector<UniqueFd> fds,
                                  ReplyOptions options) {
  VDMA_TRY(check_header(header, payload, fds.size(), /*reply=*/true));
  if (header.request != to_wire(sent)) return Err(Errc::kReplyMismatch);
  Payload p = VDMA_TRY(parse(frontend_reply_shape(sent, options), payload, fds));
  if (auto* region = std::get_if<MemoryRegionFd>(&p)) {  // postcopy ADD_MEM_REG reply
    VDMA_TRY(check_region(region->region, true));
  }
  return DecodedReply{sent, std::move(p)};
}

Result<DecodedReply> decode_reply(FrontendRequest sent, Message&& m, ReplyOptions options) {
  return decode_reply(sent, m.header, m.payload, std::move(m.fds), options);
}

Result<DecodedBackendReply> decode_backend_reply(BackendRequest sent, const Header& header,
                                                 std::span<const std::uint8_t> payload,
                                                 std::vector<UniqueFd> fds) {
  VDMA_TRY(check_header(header, payload, fds.size(), /*reply=*/true));
  if (header.request != to_wire(sent)) return Err(Errc::kReplyMismatch);
  Payload p = VDMA_TRY(parse(backend_spec(sent).reply, payload, fds));
  return DecodedBackendReply{sent, std::move(p)};
}

Result<DecodedBackendReply> decode_backend_reply(BackendRequest sent, Message&& m) {
  return decode_backend_reply(sent, m.header, m.payload, std::move(m.fds));
}

Message encode(FrontendRequest request, Payload payload, NeedReply need_reply) {
  return build(to_wire(request), request_flags(need_reply), frontend_spec(request).request,
               std::move(payload));
}

Message encode(BackendRequest request, Payload payload, NeedReply need_reply) {
  return build(to_wire(request), request_flags(need_reply), backend_spec(request).request,
               std::move(payload));
}

Message encode_reply(FrontendRequest request, Payload payload) {
  Shape shape = frontend_spec(request).reply;
  if (!kind_accepts(shape.kind, payload.index())) {
    shape = frontend_reply_shape(request, ReplyOptions{.postcopy = true});
  }
  return build(to_wire(request), kFlagReply, shape, std::move(payload));
}

Message encode_reply(BackendRequest request, Payload payload) {
  return build(to_wire(request), kFlagReply, backend_spec(request).reply, std::move(payload));
}

}  // namespace vdma::vhost

// The vhost-user wire format, as QEMU's docs/interop/vhost-user.rst defines it: request
// numbers of both channels, the 12-byte header and its flags, every payload layout, and
// the protocol feature bits.
//
// Each payload struct is the exact byte image on the socket (STYLE.md rule 4): plain
// fields, explicit padding, static_asserts on size and offsets. The spec says "machine
// native byte order"; both peers share one host, and the targets here are little-endian.
// Parse them only with std::memcpy from bytes already bounded by the payload size (see
// message.h) — never by casting a socket buffer.
//
//   Header h{.request = to_wire(FrontendRequest::kGetFeatures), .flags = kVersion1};
//   ProtocolFeatureSet wanted{kProtocolFReplyAck, kProtocolFConfig};
//   if (offered.contains(wanted)) ...
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>

#include "vdma/base/features.h"

namespace vdma::vhost {

static_assert(std::endian::native == std::endian::little,
              "vhost-user payloads are native-endian; this layer assumes little-endian hosts");

// ---------------------------------------------------------------------------------------
// Requests.

// Requests the front end sends on the main socket ("Front-end message types").
enum class FrontendRequest : std::uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,  // deprecated; back ends ignore it or disable all rings
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kSendRarp = 19,
  kNetSetMtu = 20,
  kSetBackendReqFd = 21,  // formerly SET_SLAVE_REQ_FD
  kIotlbMsg = 22,
  kSetVringEndian = 23,
  kGetConfig = 24,
  kSetConfig = 25,
  kCreateCryptoSession = 26,
  kCloseCryptoSession = 27,
  kPostcopyAdvise = 28,
  kPostcopyListen = 29,
  kPostcopyEnd = 30,
  kGetInflightFd = 31,
  kSetInflightFd = 32,
  kGpuSetSocket = 33,
  kResetDevice = 34,
  kVringKick = 35,
  kGetMaxMemSlots = 36,
  kAddMemReg = 37,
  kRemMemReg = 38,
  kSetStatus = 39,
  kGetStatus = 40,
  kGetSharedObject = 41,
  kSetDeviceStateFd = 42,
  kCheckDeviceState = 43,
};
inline constexpr std::uint32_t kFirstFrontendRequest = 1;
inline constexpr std::uint32_t kLastFrontendRequest = 43;

// Requests the back end sends on the back-end channel ("Back-end message types"; the
// channel's socket is handed over by SET_BACKEND_REQ_FD).
enum class BackendRequest : std::uint32_t {
  kIotlbMsg = 1,
  kConfigChangeMsg = 2,
  kVringHostNotifierMsg = 3,
  kVringCall = 4,
  kVringErr = 5,
  kSharedObjectAdd = 6,
  kSharedObjectRemove = 7,
  kSharedObjectLookup = 8,
};
inline constexpr std::uint32_t kFirstBackendRequest = 1;
inline constexpr std::uint32_t kLastBackendRequest = 8;

constexpr std::uint32_t to_wire(FrontendRequest r) {
  return static_cast<std::uint32_t>(r);
}
constexpr std::uint32_t to_wire(BackendRequest r) {
  return static_cast<std::uint32_t>(r);
}
// The request for a wire number, or nullopt for a number the spec does not define.
constexpr std::optional<FrontendRequest> frontend_request_from_wire(std::uint32_t v) {
  if (v < kFirstFrontendRequest || v > kLastFrontendRequest) return std::nullopt;
  return static_cast<FrontendRequest>(v);
}
constexpr std::optional<BackendRequest> backend_request_from_wire(std::uint32_t v) {
  if (v < kFirstBackendRequest || v > kLastBackendRequest) return std::nullopt;
  return static_cast<BackendRequest>(v);
}

// The spec name without the VHOST_USER_ prefix ("SET_MEM_TABLE"), for log lines.
const char* request_name(FrontendRequest r);
const char* request_name(BackendRequest r);

// ---------------------------------------------------------------------------------------
// Header.

struct Header {
  std::uint32_t request = 0;  // a FrontendRequest or BackendRequest number
  std::uint32_t flags = 0;
  std::uint32_t size = 0;  // payload bytes that follow
  friend constexpr bool operator==(const Header&, const Header&) = default;
};
inline constexpr std::size_t kHeaderSize = 12;
static_assert(sizeof(Header) == kHeaderSize);
static_assert(offsetof(Header, flags) == 4 && offsetof(Header, size) == 8);

inline constexpr std::uint32_t kVersionMask = 0x3;    // flags bits 0..1
inline constexpr std::uint32_t kVersion1 = 0x1;       // the only version
inline constexpr std::uint32_t kFlagReply = 0x4;      // bit 2: set on every reply
inline constexpr std::uint32_t kFlagNeedReply = 0x8;  // bit 3: REPLY_ACK requested
inline constexpr std::uint32_t kDefinedFlags = kVersionMask | kFlagReply | kFlagNeedReply;

// The largest payload this layer accepts. The largest the spec defines is a crypto
// session description (about 1.1 KiB); config space is 12 + 256 bytes, a memory table
// 8 + 8 * 32. A size field above this is refused before any payload byte is read.
inline constexpr std::uint32_t kMaxPayloadSize = 4096;

// At most this many file descriptors travel with one message, on either channel
// (VHOST_MEMORY_BASELINE_NREGIONS; the back-end channel's limit is also 8).
inline constexpr std::size_t kMaxFds = 8;

// ---------------------------------------------------------------------------------------
// Payloads. "u64" payloads are a plain std::uint64_t.

// Vring state description: SET_VRING_NUM, SET/GET_VRING_BASE, SET_VRING_ENABLE,
// SET_VRING_ENDIAN, VRING_KICK, BACKEND_VRING_CALL/ERR.
struct VringState {
  std::uint32_t index = 0;
  std::uint32_t num = 0;
  friend constexpr bool operator==(const VringState&, const VringState&) = default;
};
static_assert(sizeof(VringState) == 8 && offsetof(VringState, num) == 4);

// SET_VRING_ENDIAN: state.num values.
inline constexpr std::uint32_t kVringLittleEndian = 0;
inline constexpr std::uint32_t kVringBigEndian = 1;

// SET_VRING_KICK / CALL / ERR and BACKEND_VRING_HOST_NOTIFIER_MSG: the u64 carries the
// vring index in bits 0..7; bit 8 set means "no file descriptor comes with this message".
inline constexpr std::uint64_t kVringIndexMask = 0xff;
inline constexpr std::uint64_t kVringNoFdFlag = 0x100;

// Vring address description: SET_VRING_ADDR. Addresses are IOVAs when ACCESS_PLATFORM
// (formerly IOMMU_PLATFORM) is negotiated, otherwise front-end user addresses.
struct VringAddr {
  std::uint32_t index = 0;
  std::uint32_t flags = 0;  // kVringFLog or 0
  std::uint64_t desc_user_addr = 0;
  std::uint64_t used_user_addr = 0;
  std::uint64_t avail_user_addr = 0;
  std::uint64_t log_guest_addr = 0;
  friend constexpr bool operator==(const VringAddr&, const VringAddr&) = default;
};
static_assert(sizeof(VringAddr) == 40);
static_assert(offsetof(VringAddr, flags) == 4 && offsetof(VringAddr, desc_user_addr) == 8 &&
              offsetof(VringAddr, used_user_addr) == 16 &&
              offsetof(VringAddr, avail_user_addr) == 24 &&
              offsetof(VringAddr, log_guest_addr) == 32);
// VringAddr::flags: log writes to the used ring (VHOST_VRING_F_LOG, bit 0).
inline constexpr std::uint32_t kVringFLog = 0x1;

// Memory region description (without the XEN_MMAP extension, which this layer does not
// negotiate).
struct MemoryRegion {
  std::uint64_t guest_addr = 0;
  std::uint64_t size = 0;
  std::uint64_t user_addr = 0;
  std::uint64_t mmap_offset = 0;
  friend constexpr bool operator==(const MemoryRegion&, const MemoryRegion&) = default;
};
static_assert(sizeof(MemoryRegion) == 32);
static_assert(offsetof(MemoryRegion, size) == 8 && offsetof(MemoryRegion, user_addr) == 16 &&
              offsetof(MemoryRegion, mmap_offset) == 24);

// VHOST_MEMORY_BASELINE_NREGIONS: regions in one SET_MEM_TABLE.
inline constexpr std::size_t kMaxMemoryRegions = 8;

// Multiple memory regions description (SET_MEM_TABLE): this header, then num_regions
// MemoryRegion entries. The payload size is exactly 8 + 32 * num_regions.
struct MemoryTableHeader {
  std::uint32_t num_regions = 0;
  std::uint32_t padding = 0;
};
static_assert(sizeof(MemoryTableHeader) == 8 && offsetof(MemoryTableHeader, padding) == 4);
inline constexpr std::size_t kMaxMemoryTableSize =
    sizeof(MemoryTableHeader) + kMaxMemoryRegions * sizeof(MemoryRegion);
static_assert(kMaxMemoryTableSize == 264);

// Single memory region description: ADD_MEM_REG, REM_MEM_REG.
struct SingleMemoryRegion {
  std::uint64_t padding = 0;
  MemoryRegion region;
};
static_assert(sizeof(SingleMemoryRegion) == 40 && offsetof(SingleMemoryRegion, region) == 8);

// Log description: SET_LOG_BASE (with the log's shared-memory fd). The spec's request
// list says "u64", but this 16-byte description is what peers send and expect.
struct LogDescription {
  std::uint64_t mmap_size = 0;
  std::uint64_t mmap_offset = 0;
  friend constexpr bool operator==(const LogDescription&, const LogDescription&) = default;
};
static_assert(sizeof(LogDescription) == 16 && offsetof(LogDescription, mmap_offset) == 8);
// Dirty-log page size (VHOST_LOG_PAGE).
inline constexpr std::uint64_t kLogPageSize = 0x1000;

// IOTLB message types and permissions (struct vhost_iotlb_msg).
enum class IotlbType : std::uint8_t {
  kMiss = 1,        // back end -> front end
  kUpdate = 2,      // front end -> back end
  kInvalidate = 3,  // front end -> back end
  kAccessFail = 4,  // back end -> front end
};
enum class IotlbPerm : std::uint8_t {
  kNone = 0,
  kRead = 1,
  kWrite = 2,
  kReadWrite = 3,
};

// An IOTLB message: IOTLB_MSG (front end) and BACKEND_IOTLB_MSG (back end). The C struct
// is 26 bytes of fields padded to 32, and 32 bytes is what peers send.
struct IotlbMsg {
  std::uint64_t iova = 0;
  std::uint64_t size = 0;
  std::uint64_t user_addr = 0;
  IotlbPerm perm = IotlbPerm::kNone;
  IotlbType type = IotlbType::kMiss;
  std::array<std::uint8_t, 6> padding{};
  friend constexpr bool operator==(const IotlbMsg&, const IotlbMsg&) = default;
};
static_assert(sizeof(IotlbMsg) == 32);
static_assert(offsetof(IotlbMsg, size) == 8 && offsetof(IotlbMsg, user_addr) == 16 &&
              offsetof(IotlbMsg, perm) == 24 && offsetof(IotlbMsg, type) == 25);

// Virtio device config space: GET_CONFIG, SET_CONFIG. This header, then `size` bytes of
// config space; offset + size never exceeds kMaxConfigSize.
struct ConfigHeader {
  std::uint32_t offset = 0;
  std::uint32_t size = 0;
  std::uint32_t flags = 0;  // kConfigFlagFrontend or kConfigFlagMigration
};
static_assert(sizeof(ConfigHeader) == 12);
static_assert(offsetof(ConfigHeader, size) == 4 && offsetof(ConfigHeader, flags) == 8);
inline constexpr std::uint32_t kMaxConfigSize = 256;      // VHOST_USER_MAX_CONFIG_SIZE
inline constexpr std::uint32_t kConfigFlagFrontend = 0;   // a write of writable fields
inline constexpr std::uint32_t kConfigFlagMigration = 1;  // live migration restores all

// Vring area description: BACKEND_VRING_HOST_NOTIFIER_MSG. `u64` is the vring index
// (bits 0..7) and kVringNoFdFlag.
struct VringArea {
  std::uint64_t u64 = 0;
  std::uint64_t size = 0;
  std::uint64_t offset = 0;
};
static_assert(sizeof(VringArea) == 24);
static_assert(offsetof(VringArea, size) == 8 && offsetof(VringArea, offset) == 16);

// Inflight description: GET_INFLIGHT_FD, SET_INFLIGHT_FD. 20 bytes of fields; the C
// struct (and so every peer) pads it to 24.
struct InflightDescription {
  std::uint64_t mmap_size = 0;
  std::uint64_t mmap_offset = 0;
  std::uint16_t num_queues = 0;
  std::uint16_t queue_size = 0;
  std::uint32_t padding = 0;
  friend constexpr bool operator==(const InflightDescription&,
                                   const InflightDescription&) = default;
};
static_assert(sizeof(InflightDescription) == 24);
static_assert(offsetof(InflightDescription, mmap_offset) == 8 &&
              offsetof(InflightDescription, num_queues) == 16 &&
              offsetof(InflightDescription, queue_size) == 18);

// VhostUserShared: a 16-byte UUID (first three components big-endian; opaque here).
struct Uuid {
  std::array<std::uint8_t, 16> bytes{};
  friend constexpr bool operator==(const Uuid&, const Uuid&) = default;
};
static_assert(sizeof(Uuid) == 16);

// Device state transfer parameters: SET_DEVICE_STATE_FD.
struct DeviceStateParams {
  std::uint32_t direction = 0;  // kTransferSave or kTransferLoad
  std::uint32_t phase = 0;      // kPhaseStopped (the only phase defined)
  friend constexpr bool operator==(const DeviceStateParams&, const DeviceStateParams&) = default;
};
static_assert(sizeof(DeviceStateParams) == 8 && offsetof(DeviceStateParams, phase) == 4);
inline constexpr std::uint32_t kTransferSave = 0;
inline constexpr std::uint32_t kTransferLoad = 1;
inline constexpr std::uint32_t kPhaseStopped = 0;
// SET_DEVICE_STATE_FD reply u64: bits 0..7 are an error code (0 = success); bit 8 set
// means no fd is returned (the front end keeps its own channel).
inline constexpr std::uint64_t kDeviceStateErrorMask = 0xff;
inline constexpr std::uint64_t kDeviceStateNoFdFlag = 0x100;

// ---------------------------------------------------------------------------------------
// Feature bits.

// Bits of the virtio feature word (GET/SET_FEATURES) that belong to vhost(-user).
// VHOST_USER_F_PROTOCOL_FEATURES: the back end supports GET/SET_PROTOCOL_FEATURES.
inline constexpr Feature kVhostUserFProtocolFeatures{30};
// VHOST_F_LOG_ALL: the front end logs dirty memory (migration).
inline constexpr Feature kVhostFLogAll{26};

// One vhost-user protocol feature bit (0..63). A distinct type from the virtio Feature,
// so the two bit spaces cannot be mixed up.
struct ProtocolFeature {
  std::uint8_t bit;
  friend constexpr bool operator==(ProtocolFeature, ProtocolFeature) = default;
};

inline constexpr ProtocolFeature kProtocolFMq{0};
inline constexpr ProtocolFeature kProtocolFLogShmfd{1};
inline constexpr ProtocolFeature kProtocolFRarp{2};
inline constexpr ProtocolFeature kProtocolFReplyAck{3};
inline constexpr ProtocolFeature kProtocolFMtu{4};
inline constexpr ProtocolFeature kProtocolFBackendReq{5};
inline constexpr ProtocolFeature kProtocolFCrossEndian{6};
inline constexpr ProtocolFeature kProtocolFCryptoSession{7};
inline constexpr ProtocolFeature kProtocolFPagefault{8};
inline constexpr ProtocolFeature kProtocolFConfig{9};
inline constexpr ProtocolFeature kProtocolFBackendSendFd{10};
inline constexpr ProtocolFeature kProtocolFHostNotifier{11};
inline constexpr ProtocolFeature kProtocolFInflightShmfd{12};
inline constexpr ProtocolFeature kProtocolFResetDevice{13};
inline constexpr ProtocolFeature kProtocolFInbandNotifications{14};
inline constexpr ProtocolFeature kProtocolFConfigureMemSlots{15};
inline constexpr ProtocolFeature kProtocolFStatus{16};
inline constexpr ProtocolFeature kProtocolFXenMmap{17};
inline constexpr ProtocolFeature kProtocolFSharedObject{18};
inline constexpr ProtocolFeature kProtocolFDeviceState{19};

// The spec name of a protocol feature ("REPLY_ACK"), or nullptr for an undefined bit.
const char* protocol_feature_name(ProtocolFeature f);

// A set of protocol features, as exchanged by GET/SET_PROTOCOL_FEATURES.
class ProtocolFeatureSet {
 public:
  constexpr ProtocolFeatureSet() = default;
  constexpr ProtocolFeatureSet(std::initializer_list<ProtocolFeature> fs) {
    for (ProtocolFeature f : fs) bits_ |= mask(f);
  }
  static constexpr ProtocolFeatureSet FromBits(std::uint64_t bits) {
    ProtocolFeatureSet s;
    s.bits_ = bits;
    return s;
  }
  constexpr std::uint64_t bits() const { return bits_; }
  constexpr bool has(ProtocolFeature f) const { return (bits_ & mask(f)) != 0; }
  constexpr ProtocolFeatureSet& set(ProtocolFeature f) {
    bits_ |= mask(f);
    return *this;
  }
  constexpr ProtocolFeatureSet& clear(ProtocolFeature f) {
    bits_ &= ~mask(f);
    return *this;
  }
  constexpr ProtocolFeatureSet with(ProtocolFeature f) const {
    return ProtocolFeatureSet(*this).set(f);
  }
  constexpr ProtocolFeatureSet without(ProtocolFeature f) const {
    return ProtocolFeatureSet(*this).clear(f);
  }
  constexpr bool contains(ProtocolFeatureSet o) const { return (bits_ & o.bits_) == o.bits_; }
  friend constexpr ProtocolFeatureSet operator&(ProtocolFeatureSet a, ProtocolFeatureSet b) {
    return FromBits(a.bits_ & b.bits_);
  }
  friend constexpr ProtocolFeatureSet operator|(ProtocolFeatureSet a, ProtocolFeatureSet b) {
    return FromBits(a.bits_ | b.bits_);
  }
  friend constexpr bool operator==(ProtocolFeatureSet, ProtocolFeatureSet) = default;

  // "0x9 {MQ,REPLY_ACK}" for log lines.
  std::string to_string() const;

 private:
  static constexpr std::uint64_t mask(ProtocolFeature f) {
    return std::uint64_t{1} << (f.bit & 63);
  }
  std::uint64_t bits_ = 0;
};

}  // namespace vdma::vhost

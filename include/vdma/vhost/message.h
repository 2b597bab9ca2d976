// vhost-user messages: the raw Message as it crosses the socket, its decoded form, and the
// pure functions between the two.
//
// Decoding is strict and never trusts a length: the header must say version 1 with only
// defined flags, the payload must have exactly the size the request requires (or, for
// variable payloads, the size its own bounded fields imply), and the file descriptors must
// be exactly those the request (and its payload) calls for. Every descriptor of a message
// that fails to decode is closed. Decoding does no I/O and touches no state, so it is what
// the hostile-input and property tests (and fuzzers) exercise.
//
//   // Back end: one request from the front end.
//   Message raw = VDMA_TRY(channel.receive());
//   DecodedMessage m = VDMA_TRY(decode_frontend_message(std::move(raw)));
//   if (auto* table = std::get_if<MemoryTable>(&m.payload)) map(table->regions, table->fds);
//   if (m.need_reply) VDMA_TRY(channel.send(encode_ack(m.request, 0)));
//
//   // Front end: a request and its reply.
//   VDMA_TRY(channel.send(encode(FrontendRequest::kGetFeatures)));
//   DecodedReply r = VDMA_TRY(decode_reply(FrontendRequest::kGetFeatures,
//                                          VDMA_TRY(channel.receive())));
//   FeatureSet offered = FeatureSet::FromBits(std::get<U64>(r.payload).value);
//
// Encoders are for this process's own messages: a payload of the wrong kind for the
// request, or descriptors inconsistent with it, is a bug here and fails a CHECK.
#pragma once

#include <cstdint>
#include <span>
#include <variant>
#include <vector>

#include "vdma/base/result.h"
#include "vdma/memory/unique_fd.h"
#include "vdma/vhost/errors.h"
#include "vdma/vhost/protocol.h"

namespace vdma::vhost {

// One message as it crosses the socket: header, exactly header.size payload bytes, and the
// file descriptors that came with it (at most kMaxFds).
struct Message {
  Header header;
  std::vector<std::uint8_t> payload;
  std::vector<UniqueFd> fds;

  bool is_reply() const { return (header.flags & kFlagReply) != 0; }
  bool need_reply() const { return (header.flags & kFlagNeedReply) != 0; }
};

// ---------------------------------------------------------------------------------------
// Decoded payloads: one alternative per payload kind. Descriptors are owned here.

// No payload bytes and no descriptors (GET_FEATURES, SET_OWNER, RESET_DEVICE, ...; also
// the error reply to GET_CONFIG and the empty reply to SET_LOG_BASE).
struct NoPayload {
  friend constexpr bool operator==(NoPayload, NoPayload) = default;
};

// A single u64: features, protocol features, MTU, RARP MAC, status, acks, counts.
struct U64 {
  std::uint64_t value = 0;
  friend constexpr bool operator==(U64, U64) = default;
};

// SET_VRING_KICK / CALL / ERR. No fd means the invalid-fd flag was set: poll instead.
struct VringFd {
  std::uint8_t index = 0;
  UniqueFd fd;
};

// SET_MEM_TABLE: regions validated (non-empty, no overflow, no guest-address overlap),
// fds[i] maps regions[i]. In a postcopy reply the fds are absent.
struct MemoryTable {
  std::vector<MemoryRegion> regions;
  std::vector<UniqueFd> fds;
};

// ADD_MEM_REG (with its fd) and REM_MEM_REG (never an fd: one sent anyway is closed).
struct MemoryRegionFd {
  MemoryRegion region;
  UniqueFd fd;
};

// SET_LOG_BASE: where the dirty log lives in the shared memory of `fd`.
struct LogBase {
  LogDescription log;
  UniqueFd fd;
};

// A descriptor and no payload: SET_LOG_FD, SET_BACKEND_REQ_FD, GPU_SET_SOCKET, and the
// userfaultfd in the reply to POSTCOPY_ADVISE.
struct FdPayload {
  UniqueFd fd;
};

// GET_CONFIG / SET_CONFIG: data.size() is the access size; offset + size <= 256.
struct ConfigSpace {
  std::uint32_t offset = 0;
  std::uint32_t flags = 0;
  std::vector<std::uint8_t> data;
  friend bool operator==(const ConfigSpace&, const ConfigSpace&) = default;
};

// GET_INFLIGHT_FD (request without fd; reply with fd unless mmap_size is 0) and
// SET_INFLIGHT_FD (with fd).
struct InflightFd {
  InflightDescription inflight;
  UniqueFd fd;
};

// GET_SHARED_OBJECT (request; reply with the dma-buf fd when found) and
// BACKEND_SHARED_OBJECT_ADD / REMOVE / LOOKUP (no fd).
struct SharedObject {
  Uuid uuid;
  UniqueFd fd;
};

// SET_DEVICE_STATE_FD: transfer parameters and the front end's end of the channel.
struct DeviceStateFd {
  DeviceStateParams params;
  UniqueFd fd;
};

// A u64 status with an optional descriptor: the reply to SET_DEVICE_STATE_FD (fd unless
// kDeviceStateNoFdFlag) and to BACKEND_SHARED_OBJECT_LOOKUP (fd exactly when status 0).
struct StatusFd {
  std::uint64_t status = 0;
  UniqueFd fd;
};

// BACKEND_VRING_HOST_NOTIFIER_MSG: no fd (invalid-fd flag set) removes the notifier.
struct VringAreaFd {
  std::uint8_t index = 0;
  std::uint64_t size = 0;
  std::uint64_t offset = 0;
  UniqueFd fd;
};

// CREATE_CRYPTO_SESSION request and reply: carried as bounded opaque bytes (this layer
// does not interpret crypto session descriptions).
struct Opaque {
  std::vector<std::uint8_t> bytes;
  friend bool operator==(const Opaque&, const Opaque&) = default;
};

using Payload = std::variant<NoPayload, U64, VringState, VringAddr, VringFd, MemoryTable,
                             MemoryRegionFd, LogBase, FdPayload, IotlbMsg, ConfigSpace, InflightFd,
                             SharedObject, DeviceStateFd, StatusFd, VringAreaFd, Opaque>;

// A front-end request, as the back end reads it.
struct DecodedMessage {
  FrontendRequest request;
  bool need_reply = false;
  Payload payload;
};

// A back-end request (back-end channel), as the front end reads it.
struct DecodedBackendMessage {
  BackendRequest request;
  bool need_reply = false;
  Payload payload;
};

// The back end's reply to a front-end request.
struct DecodedReply {
  FrontendRequest request;
  Payload payload;
};

// The front end's reply to a back-end request.
struct DecodedBackendReply {
  BackendRequest request;
  Payload payload;
};

// ---------------------------------------------------------------------------------------
// Decoding (pure).

// The header at the start of `bytes`; kShortHeader if fewer than 12 bytes.
Result<Header> parse_header(std::span<const std::uint8_t> bytes);

// A request from the front end. `payload` must hold exactly header.size bytes. Takes the
// descriptors; on error they are all closed.
Result<DecodedMessage> decode_frontend_message(const Header& header,
                                               std::span<const std::uint8_t> payload,
                                               std::vector<UniqueFd> fds);
Result<DecodedMessage> decode_frontend_message(Message&& m);

// A request from the back end, read on the back-end channel.
Result<DecodedBackendMessage> decode_backend_message(const Header& header,
                                                     std::span<const std::uint8_t> payload,
                                                     std::vector<UniqueFd> fds);
Result<DecodedBackendMessage> decode_backend_message(Message&& m);

struct ReplyOptions {
  // After POSTCOPY_LISTEN, SET_MEM_TABLE and ADD_MEM_REG are answered with the back end's
  // mapping of the regions (no fds) instead of an ack.
  bool postcopy = false;
};

// The back end's reply to `sent`. The payload is the request's explicit reply body
// (GET_FEATURES: u64, GET_VRING_BASE: vring state, GET_CONFIG: config space or, as the
// back end's error signal, nothing, ...) or, for requests without one, the u64 REPLY_ACK
// status. The caller checks what only it knows (e.g. that a GET_CONFIG reply has the size
// it asked for).
Result<DecodedReply> decode_reply(FrontendRequest sent, const Header& header,
                                  std::span<const std::uint8_t> payload, std::vector<UniqueFd> fds,
                                  ReplyOptions options = {});
Result<DecodedReply> decode_reply(FrontendRequest sent, Message&& m, ReplyOptions options = {});

// The front end's reply to the back-end request `sent`: a u64 ack, or for
// SHARED_OBJECT_LOOKUP a status with the dma-buf fd.
Result<DecodedBackendReply> decode_backend_reply(BackendRequest sent, const Header& header,
                                                 std::span<const std::uint8_t> payload,
                                                 std::vector<UniqueFd> fds);
Result<DecodedBackendReply> decode_backend_reply(BackendRequest sent, Message&& m);

// ---------------------------------------------------------------------------------------
// Encoding. Takes the payload (and so its descriptors) by value.

enum class NeedReply : bool { kNo = false, kYes = true };

// A front-end request. CHECKs that the payload kind is the one the request carries.
Message encode(FrontendRequest request, Payload payload = NoPayload{},
               NeedReply need_reply = NeedReply::kNo);
// A back-end request (back-end channel).
Message encode(BackendRequest request, Payload payload = NoPayload{},
               NeedReply need_reply = NeedReply::kNo);
// The back end's reply to `request`: its explicit reply body, its postcopy reply, or a
// U64 ack.
Message encode_reply(FrontendRequest request, Payload payload);
// The front end's reply to a back-end request: a U64 ack, or StatusFd for
// SHARED_OBJECT_LOOKUP.
Message encode_reply(BackendRequest request, Payload payload);

// REPLY_ACK: 0 for success, non-zero for failure.
inline Message encode_ack(FrontendRequest request, std::uint64_t status) {
  return encode_reply(request, U64{status});
}
inline Message encode_ack(BackendRequest request, std::uint64_t status) {
  return encode_reply(request, U64{status});
}

}  // namespace vdma::vhost

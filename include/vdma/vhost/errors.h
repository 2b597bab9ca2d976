// Errors of the vhost-user message layer (codec and channel).
//
// Every rule the peer can break has its own variant, so a test, a log line or a reply can
// say exactly what the other side sent. Operating-system failures on the socket (EPIPE,
// ECONNRESET, ...) are reported with std::system_category and the errno value instead.
//
//   auto msg = channel.receive();
//   if (!msg && should_close_connection(msg.error())) return drop_connection(msg.error());
#pragma once

#include <system_error>

#include "vdma/base/error.h"

namespace vdma::vhost {

enum class Errc {
  // ---- Framing: the byte stream (or the peer) can no longer be trusted. ----

  // Fewer than the 12 bytes of a message header were given to the parser.
  kShortHeader = 1,
  // The version bits (flags & 0x3) are not 0x1, the only version the spec defines.
  kBadVersion,
  // The header's size field is above kMaxPayloadSize; the payload was not read.
  kPayloadTooLarge,
  // The message ended early: the peer closed mid-header or mid-payload, or fewer payload
  // bytes were given to the decoder than the header announces.
  kTruncated,
  // The peer closed the connection cleanly, between two messages.
  kPeerClosed,
  // More than 8 file descriptors came with one message (ancillary data was truncated);
  // every descriptor that did arrive has been closed.
  kTooManyFds,
  // File descriptors arrived with payload bytes rather than with the header.
  kMisplacedFds,
  // A reply answers a different request than the one awaited.
  kReplyMismatch,
  // A message read as a reply does not carry the reply flag (bit 2).
  kMissingReplyFlag,

  // ---- One message is malformed; it was consumed whole and can be rejected alone. ----

  // Flag bits the spec does not define (bits 4..31).
  kBadFlags,
  // A request (front-end or back-end channel) carries the reply flag.
  kReplyFlagOnRequest,
  // The request number is not one the spec defines for this channel.
  kUnknownRequest,
  // The payload size is not what the request requires, or disagrees with the size its
  // own fields imply (memory table, config space), or with the header's size field.
  kSizeMismatch,
  // The number of file descriptors is not what the request (and its payload) requires.
  kFdCountMismatch,
  // A memory table announces more than VHOST_MEMORY_BASELINE_NREGIONS (8) regions.
  kTooManyRegions,
  // A memory region of size zero.
  kZeroSizeRegion,
  // A memory region whose guest address, user address or mmap offset plus size wraps
  // (or whose mmap offset plus size does not fit an off_t).
  kRegionOverflow,
  // Two regions of one memory table overlap in guest-address space.
  kRegionOverlap,
  // An IOTLB message type that is not valid in this direction (front end: update and
  // invalidate; back end: miss and access fail).
  kBadIotlbType,
  // IOTLB permissions outside read / write / read-write where an access is required.
  kBadIotlbPerm,
  // An IOTLB range that is empty or whose iova (or user address) plus size wraps.
  kIotlbOverflow,
  // A config-space access with offset + size above 256 bytes.
  kConfigOutOfRange,
  // A field holds a value the spec forbids: undefined bits in a vring u64 or in the vring
  // address flags, an endianness, enable flag, config flag, transfer direction or
  // migration phase out of range. (Reserved `num` fields are ignored, not checked.)
  kInvalidField,

  // ---- Back end: a well-formed request the connection's state refuses. ----

  // A request that changes device state before SET_OWNER.
  kNotOwner,
  // A vring index at or above the number of queues the device has.
  kBadVringIndex,
  // A vring's size, base or addresses changed while it is started (spec: only between
  // GET_VRING_BASE and the next kick).
  kVringStarted,
  // A queue size of zero, above the device's maximum, or (split) not a power of two.
  kBadQueueSize,
  // SET_FEATURES or SET_PROTOCOL_FEATURES with a bit the back end did not offer.
  kFeatureNotOffered,
  // A ring area, or a descriptor-free address the request needs, outside the memory
  // table (or, with ACCESS_PLATFORM, not translatable through the IOTLB).
  kRingNotMapped,
  // A memory region's file descriptor cannot be mapped (not mmap-able, or shorter than
  // mmap_offset + size).
  kRegionNotMappable,
  // ADD_MEM_REG beyond the slots GET_MAX_MEM_SLOTS announced.
  kNoFreeMemSlot,
  // REM_MEM_REG of a region the table does not hold.
  kNoSuchRegion,
  // A region that overlaps one already in the table (ADD_MEM_REG).
  kRegionInUse,
  // ACCESS_PLATFORM negotiated without REPLY_ACK and BACKEND_REQ (the IOTLB needs both),
  // or IOTLB_MSG without ACCESS_PLATFORM.
  kIotlbUnavailable,
  // A request this back end does not implement (postcopy, crypto, GPU, shared objects,
  // device state, dirty logging).
  kUnsupportedRequest,
  // The device refused the request (config write, status, reset).
  kDeviceRefused,
};

const char* describe(Errc e);
const std::error_category& vhost_category();
inline std::error_code make_error_code(Errc e) {
  return {static_cast<int>(e), vhost_category()};
}

// True when, after this error, the connection must be closed: the byte stream is out of
// step or lost data (framing errors, truncated ancillary data), the peer is gone, a reply
// does not match its request (the spec: a front end receiving a wrong reply closes the
// connection), or the socket itself failed (any non-vhost error, e.g. errno codes).
// False when one complete message was malformed: it has been consumed (its descriptors
// closed), the caller can reject it (a non-zero REPLY_ACK when need_reply was set) and
// keep serving — or still decide to close, as its policy dictates.
bool should_close_connection(std::error_code ec);

}  // namespace vdma::vhost

VDMA_ERROR_ENUM(vdma::vhost::Errc)

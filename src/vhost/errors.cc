#include "vdma/vhost/errors.h"

namespace vdma::vhost {

const char* describe(Errc e) {
  switch (e) {
    case Errc::kShortHeader:
      return "message header shorter than 12 bytes";
    case Errc::kBadVersion:
      return "message version is not 0x1";
    case Errc::kPayloadTooLarge:
      return "payload size above the limit";
    case Errc::kTruncated:
      return "message truncated";
    case Errc::kPeerClosed:
      return "peer closed the connection";
    case Errc::kTooManyFds:
      return "more than 8 file descriptors with one message";
    case Errc::kMisplacedFds:
      return "file descriptors arrived with payload bytes";
    case Errc::kReplyMismatch:
      return "reply to a different request than awaited";
    case Errc::kMissingReplyFlag:
      return "reply without the reply flag";
    case Errc::kBadFlags:
      return "undefined header flag bits";
    case Errc::kReplyFlagOnRequest:
      return "request carries the reply flag";
    case Errc::kUnknownRequest:
      return "unknown request number";
    case Errc::kSizeMismatch:
      return "payload size does not match the request";
    case Errc::kFdCountMismatch:
      return "wrong number of file descriptors for the request";
    case Errc::kTooManyRegions:
      return "memory table with more than 8 regions";
    case Errc::kZeroSizeRegion:
      return "memory region of size zero";
    case Errc::kRegionOverflow:
      return "memory region address plus size overflows";
    case Errc::kRegionOverlap:
      return "memory regions overlap in guest-address space";
    case Errc::kBadIotlbType:
      return "IOTLB message type invalid in this direction";
    case Errc::kBadIotlbPerm:
      return "IOTLB permissions invalid";
    case Errc::kIotlbOverflow:
      return "IOTLB range empty or overflowing";
    case Errc::kConfigOutOfRange:
      return "config access beyond 256 bytes";
    case Errc::kInvalidField:
      return "payload field holds a forbidden value";
    case Errc::kNotOwner:
      return "request before SET_OWNER";
    case Errc::kBadVringIndex:
      return "vring index beyond the device's queues";
    case Errc::kVringStarted:
      return "vring changed while started";
    case Errc::kBadQueueSize:
      return "queue size zero, too large, or not a power of two";
    case Errc::kFeatureNotOffered:
      return "feature bit the back end did not offer";
    case Errc::kRingNotMapped:
      return "ring address outside the shared memory";
    case Errc::kRegionNotMappable:
      return "memory region fd cannot be mapped";
    case Errc::kNoFreeMemSlot:
      return "no free memory slot";
    case Errc::kNoSuchRegion:
      return "no such memory region";
    case Errc::kRegionInUse:
      return "memory region overlaps one already mapped";
    case Errc::kIotlbUnavailable:
      return "IOTLB not negotiated (needs ACCESS_PLATFORM, REPLY_ACK and BACKEND_REQ)";
    case Errc::kUnsupportedRequest:
      return "request not supported by this back end";
    case Errc::kDeviceRefused:
      return "the device refused the request";
  }
  return "unknown vhost error";
}

const std::error_category& vhost_category() {
  static const EnumCategory<Errc, &describe> category("vdma.vhost");
  return category;
}

bool should_close_connection(std::error_code ec) {
  if (!ec) return false;
  // Anything not ours comes from the socket or the system: the connection is unusable.
  if (ec.category() != vhost_category()) return true;
  switch (static_cast<Errc>(ec.value())) {
    case Errc::kShortHeader:
    case Errc::kBadVersion:
    case Errc::kPayloadTooLarge:
    case Errc::kTruncated:
    case Errc::kPeerClosed:
    case Errc::kTooManyFds:
    case Errc::kMisplacedFds:
    case Errc::kReplyMismatch:
    case Errc::kMissingReplyFlag:
      return true;
    case Errc::kBadFlags:
    case Errc::kReplyFlagOnRequest:
    case Errc::kUnknownRequest:
    case Errc::kSizeMismatch:
    case Errc::kFdCountMismatch:
    case Errc::kTooManyRegions:
    case Errc::kZeroSizeRegion:
    case Errc::kRegionOverflow:
    case Errc::kRegionOverlap:
    case Errc::kBadIotlbType:
    case Errc::kBadIotlbPerm:
    case Errc::kIotlbOverflow:
    case Errc::kConfigOutOfRange:
    case Errc::kInvalidField:
    case Errc::kNotOwner:
    case Errc::kBadVringIndex:
    case Errc::kVringStarted:
    case Errc::kBadQueueSize:
    case Errc::kFeatureNotOffered:
    case Errc::kRingNotMapped:
    case Errc::kRegionNotMappable:
    case Errc::kNoFreeMemSlot:
    case Errc::kNoSuchRegion:
    case Errc::kRegionInUse:
    case Errc::kIotlbUnavailable:
    case Errc::kUnsupportedRequest:
    case Errc::kDeviceRefused:
      return false;
  }
  return true;  // a value outside the enum: treat as fatal
}

}  // namespace vdma::vhost

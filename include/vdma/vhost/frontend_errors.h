// Errors of the vhost-user front end (driver side): what a back end offered or answered
// that the front end cannot work with, and the connection's life cycle.
//
// The message layer's own errors (vhost::Errc: a reply of the wrong type or size, a
// malformed header, the peer closing) and the platform's (dma::Errc::kAccessPlatformRequired)
// are passed through unchanged, so a caller sees the most precise reason. Every error the
// back end caused closes the connection, except kRequestRefused and kConfigRefused: the
// back end answered cleanly and the stream is still in step.
//
//   auto fe = Frontend::Connect(cfg);
//   if (!fe && fe.error() == FrontendErrc::kTooManyQueues) cfg.num_queues = 1;
//   if (auto r = q.wait_call(1s); !r && is_disconnect(r.error())) fe->reconnect();
#pragma once

#include <system_error>

#include "vdma/base/error.h"

namespace vdma::vhost {

enum class FrontendErrc {
  // The FrontendConfig itself is unusable: no guest, no socket path, zero queues, a queue
  // size of zero, above 32768 or (split) not a power of two, a queue count above 256; also
  // a config space access outside [0, 256) or of zero bytes.
  kInvalidConfig = 1,
  // The back end does not offer VIRTIO_F_VERSION_1 (this front end drives modern devices
  // only).
  kVersion1NotOffered,
  // A feature of FrontendConfig::required_features is not offered.
  kRequiredFeatureMissing,
  // A packed ring was asked for and the back end does not offer VIRTIO_F_RING_PACKED.
  kPackedNotOffered,
  // More than one queue was asked for and the back end does not offer the MQ protocol
  // feature (or protocol features at all).
  kMultiQueueUnsupported,
  // More queues were asked for than GET_QUEUE_NUM announced.
  kTooManyQueues,
  // The IOMMU profile needs IOTLB messages, and the back end lacks the REPLY_ACK or
  // BACKEND_REQ protocol feature they travel with.
  kIotlbUnsupported,
  // More shared regions than the back end takes (8 in one SET_MEM_TABLE, or its
  // GET_MAX_MEM_SLOTS).
  kTooManyRegions,
  // The back end answered a request with a non-zero REPLY_ACK status (the log line names
  // the request); e.g. SET_VRING_NUM with a queue size above its maximum.
  kRequestRefused,
  // Config space access without the CONFIG protocol feature.
  kConfigUnsupported,
  // The back end answered GET_CONFIG with an empty payload: its error signal.
  kConfigRefused,
  // A reply that decodes but does not answer what was asked: GET_CONFIG with another
  // offset or size, GET_VRING_BASE for another ring, GET_QUEUE_NUM of zero.
  kBadReply,
  // No reply within FrontendConfig::reply_timeout; the connection was closed.
  kReplyTimeout,
  // The connection is gone (closed by the back end or after an error); call reconnect().
  kDisconnected,
  // reconnect() found no back end listening within ReconnectOptions::timeout.
  kReconnectTimeout,
  // After a reconnect the back end negotiated other device features than before; the
  // caller's requests were built for the old set, so the new back end is refused.
  kFeaturesChanged,
  // A queue index at or above num_queues().
  kNoSuchQueue,
};

const char* describe(FrontendErrc e);
const std::error_category& frontend_category();
inline std::error_code make_error_code(FrontendErrc e) {
  return {static_cast<int>(e), frontend_category()};
}

// True when the error means the back end is gone or the connection had to be closed
// (kDisconnected, kReplyTimeout, peer-closed and socket errors, and any message-layer error
// that closes a connection): reconnect() is the way on.
bool is_disconnect(std::error_code ec);

}  // namespace vdma::vhost

VDMA_ERROR_ENUM(vdma::vhost::FrontendErrc)

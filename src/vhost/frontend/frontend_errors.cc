#include "vdma/vhost/frontend_errors.h"

#include "vdma/vhost/errors.h"

namespace vdma::vhost {

const char* describe(FrontendErrc e) {
  switch (e) {
    case FrontendErrc::kInvalidConfig:
      return "invalid front-end configuration";
    case FrontendErrc::kVersion1NotOffered:
      return "back end does not offer VIRTIO_F_VERSION_1";
    case FrontendErrc::kRequiredFeatureMissing:
      return "back end does not offer a required feature";
    case FrontendErrc::kPackedNotOffered:
      return "packed ring asked for, back end does not offer VIRTIO_F_RING_PACKED";
    case FrontendErrc::kMultiQueueUnsupported:
      return "several queues asked for, back end does not offer the MQ protocol feature";
    case FrontendErrc::kTooManyQueues:
      return "more queues asked for than the back end supports";
    case FrontendErrc::kIotlbUnsupported:
      return "IOMMU platform needs IOTLB messages; back end lacks REPLY_ACK or BACKEND_REQ";
    case FrontendErrc::kTooManyRegions:
      return "more shared memory regions than the back end takes";
    case FrontendErrc::kRequestRefused:
      return "back end refused a request (non-zero REPLY_ACK)";
    case FrontendErrc::kConfigUnsupported:
      return "config space access needs the CONFIG protocol feature";
    case FrontendErrc::kConfigRefused:
      return "back end refused the config space read";
    case FrontendErrc::kBadReply:
      return "reply does not answer the request";
    case FrontendErrc::kReplyTimeout:
      return "no reply from the back end in time";
    case FrontendErrc::kDisconnected:
      return "back end disconnected";
    case FrontendErrc::kReconnectTimeout:
      return "no back end to reconnect to in time";
    case FrontendErrc::kFeaturesChanged:
      return "back end came back with different features";
    case FrontendErrc::kNoSuchQueue:
      return "queue index out of range";
  }
  return "unknown front-end error";
}

const std::error_category& frontend_category() {
  static const EnumCategory<FrontendErrc, describe> category("vhost-frontend");
  return category;
}

bool is_disconnect(std::error_code ec) {
  if (ec == FrontendErrc::kDisconnected || ec == FrontendErrc::kReplyTimeout) return true;
  if (ec.category() == frontend_category()) return false;
  if (ec.category() == vhost_category()) return should_close_connection(ec);
  return ec.category() == std::system_category();
}

}  // namespace vdma::vhost

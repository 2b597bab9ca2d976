#include "vdma/vhost/protocol.h"

#include <fmt/format.h>

namespace vdma::vhost {

const char* request_name(FrontendRequest r) {
  static constexpr const char* kNames[] = {
      nullptr,
      "GET_FEATURES",
      "SET_FEATURES",
      "SET_OWNER",
      "RESET_OWNER",
      "SET_MEM_TABLE",
      "SET_LOG_BASE",
      "SET_LOG_FD",
      "SET_VRING_NUM",
      "SET_VRING_ADDR",
      "SET_VRING_BASE",
      "GET_VRING_BASE",
      "SET_VRING_KICK",
      "SET_VRING_CALL",
      "SET_VRING_ERR",
      "GET_PROTOCOL_FEATURES",
      "SET_PROTOCOL_FEATURES",
      "GET_QUEUE_NUM",
      "SET_VRING_ENABLE",
      "SEND_RARP",
      "NET_SET_MTU",
      "SET_BACKEND_REQ_FD",
      "IOTLB_MSG",
      "SET_VRING_ENDIAN",
      "GET_CONFIG",
      "SET_CONFIG",
      "CREATE_CRYPTO_SESSION",
      "CLOSE_CRYPTO_SESSION",
      "POSTCOPY_ADVISE",
      "POSTCOPY_LISTEN",
      "POSTCOPY_END",
      "GET_INFLIGHT_FD",
      "SET_INFLIGHT_FD",
      "GPU_SET_SOCKET",
      "RESET_DEVICE",
      "VRING_KICK",
      "GET_MAX_MEM_SLOTS",
      "ADD_MEM_REG",
      "REM_MEM_REG",
      "SET_STATUS",
      "GET_STATUS",
      "GET_SHARED_OBJECT",
      "SET_DEVICE_STATE_FD",
      "CHECK_DEVICE_STATE",
  };
  static_assert(std::size(kNames) == kLastFrontendRequest + 1);
  const auto v = to_wire(r);
  return v >= kFirstFrontendRequest && v <= kLastFrontendRequest ? kNames[v] : "UNKNOWN";
}

const char* request_name(BackendRequest r) {
  static constexpr const char* kNames[] = {
      nullptr,
      "BACKEND_IOTLB_MSG",
      "BACKEND_CONFIG_CHANGE_MSG",
      "BACKEND_VRING_HOST_NOTIFIER_MSG",
      "BACKEND_VRING_CALL",
      "BACKEND_VRING_ERR",
      "BACKEND_SHARED_OBJECT_ADD",
      "BACKEND_SHARED_OBJECT_REMOVE",
      "BACKEND_SHARED_OBJECT_LOOKUP",
  };
  static_assert(std::size(kNames) == kLastBackendRequest + 1);
  const auto v = to_wire(r);
  return v >= kFirstBackendRequest && v <= kLastBackendRequest ? kNames[v] : "UNKNOWN";
}

const char* protocol_feature_name(ProtocolFeature f) {
  static constexpr const char* kNames[] = {
      "MQ",
      "LOG_SHMFD",
      "RARP",
      "REPLY_ACK",
      "MTU",
      "BACKEND_REQ",
      "CROSS_ENDIAN",
      "CRYPTO_SESSION",
      "PAGEFAULT",
      "CONFIG",
      "BACKEND_SEND_FD",
      "HOST_NOTIFIER",
      "INFLIGHT_SHMFD",
      "RESET_DEVICE",
      "INBAND_NOTIFICATIONS",
      "CONFIGURE_MEM_SLOTS",
      "STATUS",
      "XEN_MMAP",
      "SHARED_OBJECT",
      "DEVICE_STATE",
  };
  return f.bit < std::size(kNames) ? kNames[f.bit] : nullptr;
}

std::string ProtocolFeatureSet::to_string() const {
  std::string names;
  for (std::uint8_t b = 0; b < 64; ++b) {
    if (!has(ProtocolFeature{b})) continue;
    if (!names.empty()) names += ',';
    const char* name = protocol_feature_name(ProtocolFeature{b});
    names += name ? std::string(name) : fmt::format("bit{}", b);
  }
  return fmt::format("{:#x} {{{}}}", bits_, names);
}

}  // namespace vdma::vhost

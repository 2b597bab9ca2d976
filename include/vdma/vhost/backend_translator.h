// BackendTranslator: how a vhost-user back end turns a DMA address from a ring into host
// memory (the virtq Translator concept), one per vring.
//
// Without ACCESS_PLATFORM the address is guest-physical and resolves through the memory
// table. With it the address is an IOVA: the IOTLB cache gives the front-end user address,
// the memory table the host address. An IOVA the cache does not hold is a miss: the
// translator remembers it (take_miss()) and answers virtq::Errc::kTranslationMiss, so the
// queue leaves the chain in the ring and the back end asks the front end.
//
//   BackendTranslator t(memory);             // guest-physical
//   t.use_iotlb(&cache);                     // after ACCESS_PLATFORM is negotiated
//   auto q = VDMA_TRY(SplitDeviceQueue<BackendTranslator>::Create(t, cfg));
#pragma once

#include <cstdint>
#include <optional>

#include "vdma/base/result.h"
#include "vdma/memory/address.h"
#include "vdma/memory/iotlb.h"
#include "vdma/memory/iotlb_cache.h"
#include "vdma/vhost/backend_memory.h"
#include "vdma/virtq/errors.h"
#include "vdma/virtq/translator.h"

namespace vdma::vhost {

class BackendTranslator {
 public:
  struct Miss {
    std::uint64_t iova = 0;
    memory::Access access = memory::Access::kNone;
  };

  explicit BackendTranslator(const BackendMemory& memory) : memory_(&memory) {}

  // Addresses are IOVAs from now on (nullptr: guest-physical again).
  void use_iotlb(const memory::IotlbCache* cache) { iotlb_ = cache; }
  bool uses_iotlb() const { return iotlb_ != nullptr; }

  Result<std::byte*> translate(DmaAddr a, std::uint64_t len, memory::Access acc) const {
    if (len == 0) return Err(virtq::Errc::kZeroLengthDesc);
    if (!checked_end(a.value(), len)) return Err(virtq::Errc::kAddressOverflow);
    std::uint64_t uva_or_gpa = a.value();
    if (iotlb_ != nullptr) {
      auto t = iotlb_->lookup(Iova{a.value()}, len, acc, cursor_);
      if (!t) {
        if (t.error() == memory::Errc::kIotlbMiss) {
          miss_ = Miss{a.value(), acc};
          return Err(virtq::Errc::kTranslationMiss);
        }
        return Err(virtq::translation_error(t.error()));
      }
      auto host = memory_->uva_to_host(t->target, len);
      if (!host) return Err(virtq::Errc::kAddressNotMapped);
      return *host;
    }
    auto host = memory_->gpa_to_host(uva_or_gpa, len);
    if (!host) return Err(virtq::Errc::kAddressNotMapped);
    return *host;
  }

  // The longest host-contiguous prefix of [a, a + len) (virtq::PieceTranslator): QEMU's
  // IOTLB answers in pages whose targets need not be adjacent, and the memory table may
  // split a range too. A miss is reported at the first address not covered.
  Result<virtq::DeviceSegment> translate_piece(DmaAddr a, std::uint64_t len,
                                               memory::Access acc) const {
    if (len == 0) return Err(virtq::Errc::kZeroLengthDesc);
    if (!checked_end(a.value(), len)) return Err(virtq::Errc::kAddressOverflow);
    std::uint64_t target = a.value();
    std::uint64_t piece = len;
    if (iotlb_ != nullptr) {
      auto t = iotlb_->lookup_prefix(Iova{a.value()}, len, acc, cursor_);
      if (!t) {
        if (t.error() == memory::Errc::kIotlbMiss) {
          miss_ = Miss{a.value(), acc};
          return Err(virtq::Errc::kTranslationMiss);
        }
        return Err(virtq::translation_error(t.error()));
      }
      target = t->target;
      piece = t->len;
    }
    auto p =
        iotlb_ != nullptr ? memory_->uva_prefix(target, piece) : memory_->gpa_prefix(target, piece);
    if (!p) return Err(virtq::Errc::kAddressNotMapped);
    return virtq::DeviceSegment{p->host, static_cast<std::uint32_t>(p->len)};
  }

  // The miss the last failed translation hit, once.
  std::optional<Miss> take_miss() const { return std::exchange(miss_, std::nullopt); }

 private:
  const BackendMemory* memory_;
  const memory::IotlbCache* iotlb_ = nullptr;
  mutable memory::IotlbCursor cursor_;
  mutable std::optional<Miss> miss_;
};

static_assert(virtq::PieceTranslator<BackendTranslator>);

}  // namespace vdma::vhost

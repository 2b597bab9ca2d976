#include "vdma/dma/dma_ops.h"

#include "vdma/base/log.h"

namespace vdma::dma {

const char* direction_name(Direction d) {
  switch (d) {
    case Direction::kToDevice:
      return "to-device";
    case Direction::kFromDevice:
      return "from-device";
    case Direction::kBidirectional:
      return "bidirectional";
  }
  return "?";
}

const char* ops_kind_name(OpsKind k) {
  switch (k) {
    case OpsKind::kDirect:
      return "direct";
    case OpsKind::kBounce:
      return "bounce";
    case OpsKind::kIommu:
      return "iommu";
    case OpsKind::kBounceViaIommu:
      return "bounce-via-iommu";
  }
  return "?";
}

Result<Mapping> DmaOps::map(void* cpu, std::uint64_t len, Direction dir) {
  MappingRecord r = VDMA_TRY(map_record(cpu, len, dir));
  return Mapping(this, r);
}

Result<CoherentBuffer> DmaOps::alloc_coherent(std::uint64_t len) {
  CoherentRecord r = VDMA_TRY(alloc_coherent_record(len));
  return CoherentBuffer(this, r);
}

Mapping& Mapping::operator=(Mapping&& o) noexcept {
  if (this != &o) {
    reset();
    ops_ = std::exchange(o.ops_, nullptr);
    rec_ = o.rec_;
  }
  return *this;
}

void Mapping::reset() {
  if (ops_ == nullptr) return;
  auto r = std::exchange(ops_, nullptr)->unmap_record(rec_);
  if (!r) log_error("dma", "unmap on destruction failed: {}", r.error().message());
}

Result<void> Mapping::unmap() {
  if (ops_ == nullptr) return Err(Errc::kNotMapped);
  return std::exchange(ops_, nullptr)->unmap_record(rec_);
}

Result<void> Mapping::sync_for_cpu(std::uint64_t off, std::uint64_t len) {
  if (ops_ == nullptr) return Err(Errc::kNotMapped);
  return ops_->sync_record_for_cpu(rec_, off, len);
}

Result<void> Mapping::sync_for_device(std::uint64_t off, std::uint64_t len) {
  if (ops_ == nullptr) return Err(Errc::kNotMapped);
  return ops_->sync_record_for_device(rec_, off, len);
}

MappingRecord Mapping::release() {
  ops_ = nullptr;
  return rec_;
}

CoherentBuffer& CoherentBuffer::operator=(CoherentBuffer&& o) noexcept {
  if (this != &o) {
    reset();
    ops_ = std::exchange(o.ops_, nullptr);
    rec_ = o.rec_;
  }
  return *this;
}

void CoherentBuffer::reset() {
  if (ops_ == nullptr) return;
  auto r = std::exchange(ops_, nullptr)->free_coherent_record(rec_);
  if (!r) log_error("dma", "coherent free on destruction failed: {}", r.error().message());
}

Result<std::uint64_t> sync_range(const MappingRecord& m, std::uint64_t off, std::uint64_t len) {
  if (off > m.len) return Err(Errc::kSyncOutOfRange);
  if (len == UINT64_MAX) return m.len - off;
  if (len > m.len - off) return Err(Errc::kSyncOutOfRange);
  return len;
}

}  // namespace vdma::dma

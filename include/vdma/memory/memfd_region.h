// Memory regions backed by memfds, mapped into this process.
//
// A *shared* region's fd can be handed to another process (the device) with SCM_RIGHTS.
// A *private* region never leaves this process: it has no fd accessor at all, and where
// the kernel allows it is backed by memfd_secret(2), so not even the kernel's direct map
// holds its pages. Both are sealed against shrinking, so a peer holding the fd cannot
// truncate it under us (which would turn our accesses into SIGBUS).
//
//   auto ram = MemfdRegion::Create("guest-ram", 64 << 20, RegionKind::kPrivate);
//   auto pool = MemfdRegion::Create("swiotlb", 64 << 20, RegionKind::kShared);
//   int fd = VDMA_TRY(pool->shareable_fd());     // ok
//   ram->shareable_fd();                         // Errc::kPrivateRegion
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "vdma/base/result.h"
#include "vdma/memory/unique_fd.h"

namespace vdma::memory {

inline constexpr std::uint64_t kPageSize = 4096;

// An mmap'ed range of a file, unmapped on destruction.
class HostMapping {
 public:
  // Maps [offset, offset + size) of `fd` with `prot` (PROT_READ | PROT_WRITE ...),
  // MAP_SHARED. size must be non-zero; offset page aligned.
  static Result<HostMapping> Map(int fd, std::uint64_t size, std::uint64_t offset, int prot);

  HostMapping() = default;
  HostMapping(HostMapping&& o) noexcept;
  HostMapping& operator=(HostMapping&& o) noexcept;
  HostMapping(const HostMapping&) = delete;
  HostMapping& operator=(const HostMapping&) = delete;
  ~HostMapping();

  std::byte* data() const { return data_; }
  std::uint64_t size() const { return size_; }
  std::span<std::byte> bytes() const { return {data_, static_cast<std::size_t>(size_)}; }

 private:
  HostMapping(std::byte* data, std::uint64_t size) : data_(data), size_(size) {}
  std::byte* data_ = nullptr;
  std::uint64_t size_ = 0;
};

enum class RegionKind {
  kShared,   // may be handed to the device
  kPrivate,  // never leaves this process
};

class MemfdRegion {
 public:
  // size must be a non-zero multiple of kPageSize. `name` shows in /proc/<pid>/maps.
  static Result<MemfdRegion> Create(std::string_view name, std::uint64_t size, RegionKind kind);

  MemfdRegion(MemfdRegion&&) noexcept = default;
  MemfdRegion& operator=(MemfdRegion&&) noexcept = default;

  RegionKind kind() const { return kind_; }
  // True if a private region is backed by memfd_secret(2).
  bool secret() const { return secret_; }
  const std::string& name() const { return name_; }
  std::byte* host() const { return mapping_.data(); }
  std::uint64_t size() const { return mapping_.size(); }
  std::span<std::byte> bytes() const { return mapping_.bytes(); }

  // The fd to send to a device. Errc::kPrivateRegion for private regions.
  Result<int> shareable_fd() const;

 private:
  MemfdRegion(std::string name, RegionKind kind, bool secret, UniqueFd fd, HostMapping m)
      : name_(std::move(name)),
        kind_(kind),
        secret_(secret),
        fd_(std::move(fd)),
        mapping_(std::move(m)) {}
  std::string name_;
  RegionKind kind_;
  bool secret_;
  UniqueFd fd_;
  HostMapping mapping_;
};

// True if memfd_secret(2) works here for a region of `size` bytes (probed once per size
// class; the answer is also logged).
bool memfd_secret_usable(std::uint64_t size);

}  // namespace vdma::memory

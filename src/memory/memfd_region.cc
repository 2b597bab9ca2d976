#include "vdma/memory/memfd_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "vdma/base/log.h"
#include "vdma/memory/errors.h"

#ifndef SYS_memfd_secret
#define SYS_memfd_secret 447  // x86_64, since Linux 5.14
#endif

namespace vdma::memory {
namespace {

constexpr unsigned kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

// memfd_secret pages count as locked memory: without CAP_IPC_LOCK a region larger than
// RLIMIT_MEMLOCK would fault with SIGBUS later, so refuse it up front.
bool within_memlock_limit(std::uint64_t size) {
  if (::geteuid() == 0) return true;
  struct rlimit lim {};
  if (::getrlimit(RLIMIT_MEMLOCK, &lim) != 0) return false;
  return lim.rlim_cur == RLIM_INFINITY || size <= lim.rlim_cur;
}

Result<UniqueFd> open_secret(std::uint64_t size) {
  if (!within_memlock_limit(size)) return Err(errno_code(ENOMEM));
  UniqueFd fd(static_cast<int>(::syscall(SYS_memfd_secret, O_CLOEXEC)));
  if (!fd) return Err(errno_code(errno));
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return Err(errno_code(errno));
  return fd;
}

Result<UniqueFd> open_sealed_memfd(const std::string& name, std::uint64_t size) {
  UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) return Err(errno_code(errno));
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return Err(errno_code(errno));
  if (::fcntl(fd.get(), F_ADD_SEALS, kSeals) != 0) return Err(errno_code(errno));
  return fd;
}

}  // namespace

Result<HostMapping> HostMapping::Map(int fd, std::uint64_t size, std::uint64_t offset, int prot) {
  if (size == 0) return Err(Errc::kZeroLength);
  if (offset % kPageSize != 0) return Err(Errc::kInvalidArgument);
  void* p = ::mmap(nullptr, size, prot, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) return Err(errno_code(errno));
  return HostMapping(static_cast<std::byte*>(p), size);
}

HostMapping::HostMapping(HostMapping&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}

HostMapping& HostMapping::operator=(HostMapping&& o) noexcept {
  if (this != &o) {
    if (data_ != nullptr) ::munmap(data_, size_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

HostMapping::~HostMapping() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

bool memfd_secret_usable(std::uint64_t size) {
  auto fd = open_secret(size);
  return fd.has_value();
}

Result<MemfdRegion> MemfdRegion::Create(std::string_view name, std::uint64_t size,
                                        RegionKind kind) {
  if (size == 0 || size % kPageSize != 0) return Err(Errc::kInvalidArgument);
  std::string n(name);
  bool secret = false;
  UniqueFd fd;
  if (kind == RegionKind::kPrivate) {
    auto s = open_secret(size);
    if (s) {
      fd = std::move(*s);
      secret = true;
    } else {
      log_info("memory",
               "private region {}: memfd_secret unavailable ({}); using a sealed memfd that "
               "is never shared (the kernel direct map still holds it)",
               n, s.error().message());
    }
  }
  if (!fd) fd = VDMA_TRY(open_sealed_memfd(n, size));
  HostMapping m = VDMA_TRY(HostMapping::Map(fd.get(), size, 0, PROT_READ | PROT_WRITE));
  if (kind == RegionKind::kPrivate) {
    // Keep private guest memory out of core dumps; failure only loses that nicety.
    (void)::madvise(m.data(), size, MADV_DONTDUMP);
  }
  return MemfdRegion(std::move(n), kind, secret, std::move(fd), std::move(m));
}

Result<int> MemfdRegion::shareable_fd() const {
  if (kind_ == RegionKind::kPrivate) return Err(Errc::kPrivateRegion);
  return fd_.get();
}

}  // namespace vdma::memory

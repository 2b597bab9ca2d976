#include "vdma/devices/blk/io_engine.h"

#include <cerrno>

#include "vdma/base/log.h"

namespace vdma::blk {

std::uint64_t remaining_bytes(const IoOp& op) {
  std::uint64_t n = 0;
  for (std::size_t i = op.iov_next; i < op.iov.size(); ++i) n += op.iov[i].iov_len;
  return n;
}

void advance(IoOp& op, std::uint64_t n) {
  op.transferred += static_cast<std::int64_t>(n);
  while (n > 0 && op.iov_next < op.iov.size()) {
    iovec& v = op.iov[op.iov_next];
    if (n >= v.iov_len) {
      n -= v.iov_len;
      v.iov_len = 0;
      ++op.iov_next;
    } else {
      v.iov_base = static_cast<std::byte*>(v.iov_base) + n;
      v.iov_len -= n;
      n = 0;
    }
  }
  while (op.iov_next < op.iov.size() && op.iov[op.iov_next].iov_len == 0) ++op.iov_next;
}

bool account(IoOp& op, std::int64_t res) {
  if (res < 0) {
    op.result = res;
    return false;
  }
  if (op.kind != IoKind::kRead && op.kind != IoKind::kWrite) {
    op.result = 0;
    return false;
  }
  advance(op, static_cast<std::uint64_t>(res));
  if (remaining_bytes(op) == 0) {
    op.result = op.transferred;
    return false;
  }
  if (res == 0) {  // no progress: end of file (the image shrank) or a device limit
    op.result = -EIO;
    return false;
  }
  return true;
}

Result<std::unique_ptr<IoEngine>> CreateIoEngine(int fd, const EngineOptions& options) {
  switch (options.kind) {
    case EngineKind::kIoUring:
      return CreateIoUringEngine(fd, options.entries);
    case EngineKind::kThreadPool:
      return CreateThreadPoolEngine(fd, options.threads);
    case EngineKind::kAuto:
      break;
  }
  auto uring = CreateIoUringEngine(fd, options.entries);
  if (uring) return uring;
  log_warn("blk", "io_uring unavailable ({}); using a pool of {} I/O threads",
           uring.error().message(), options.threads);
  return CreateThreadPoolEngine(fd, options.threads);
}

}  // namespace vdma::blk

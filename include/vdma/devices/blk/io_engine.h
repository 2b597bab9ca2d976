// IoEngine: asynchronous file I/O for the block device — io_uring, or a thread pool when
// io_uring is not available (or chosen for tests).
//
// An engine runs IoOps against one fd. submit() queues an op, flush() starts what was
// queued, and reap() hands finished ops back on the caller's thread; completion_fd()
// becomes readable when there is something to reap, so an event loop can wait for it.
// An op finishes whole: short reads and writes are continued by the engine, and
// op.result is the bytes transferred (reads / writes), 0 (sync / fallocate) or -errno.
//
//   auto engine = VDMA_TRY(blk::CreateIoEngine(fd, {.kind = blk::EngineKind::kAuto}));
//   blk::IoOp op{.kind = blk::IoKind::kRead, .offset = 0, .iov = {{buf, 4096}}};
//   engine->submit(op);
//   engine->flush();
//   engine->reap(/*wait=*/true, [](blk::IoOp& done) { use(done.result); });
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "vdma/base/result.h"

namespace vdma::blk {

enum class IoKind : std::uint8_t {
  kRead,       // preadv into iov at offset
  kWrite,      // pwritev from iov at offset (RWF_DSYNC when dsync)
  kFdatasync,  // fdatasync(fd)
  kPunchHole,  // fallocate(PUNCH_HOLE | KEEP_SIZE, offset, length)
  kZeroRange,  // fallocate(ZERO_RANGE | KEEP_SIZE, offset, length)
};

struct IoOp {
  IoKind kind = IoKind::kRead;
  bool dsync = false;        // writes: durable before completion (write cache off)
  std::uint64_t offset = 0;  // bytes
  std::uint64_t length = 0;  // fallocate kinds
  std::vector<iovec> iov;    // read / write; the engine advances it on short transfers
  std::int64_t result = 0;   // set by the engine: bytes done, 0, or -errno
  void* owner = nullptr;     // for the submitter
  std::uint32_t tag = 0;     // for the submitter
  // Engine-private progress of a read / write.
  std::size_t iov_next = 0;
  std::int64_t transferred = 0;
};

enum class EngineKind {
  kAuto,        // io_uring, else the thread pool (logged)
  kIoUring,     // io_uring or an error
  kThreadPool,  // worker threads doing blocking syscalls
};

struct EngineOptions {
  EngineKind kind = EngineKind::kAuto;
  unsigned entries = 256;  // io_uring submission queue entries
  unsigned threads = 4;    // thread pool workers
};

class IoEngine {
 public:
  virtual ~IoEngine() = default;
  virtual const char* name() const = 0;
  // Readable while finished ops wait for reap().
  virtual int completion_fd() const = 0;
  // Queues `op`; it must stay alive and untouched until reap() returns it.
  virtual void submit(IoOp& op) = 0;
  // Starts every queued op.
  virtual void flush() = 0;
  // Calls `done` for each finished op; with `wait`, first blocks until at least one op
  // finished (if any is in flight). Returns the number reaped.
  virtual std::size_t reap(bool wait, const std::function<void(IoOp&)>& done) = 0;
  // Ops submitted and not yet reaped.
  virtual std::size_t in_flight() const = 0;
};

Result<std::unique_ptr<IoEngine>> CreateIoEngine(int fd, const EngineOptions& options);
Result<std::unique_ptr<IoEngine>> CreateIoUringEngine(int fd, unsigned entries);
Result<std::unique_ptr<IoEngine>> CreateThreadPoolEngine(int fd, unsigned threads);

// Engine helpers shared by both kinds: the bytes still to transfer, and recording `n`
// bytes done (advancing iov_next and the current iovec).
std::uint64_t remaining_bytes(const IoOp& op);
void advance(IoOp& op, std::uint64_t n);
// Records one syscall's result `res` for `op`; true if the op needs another round (a
// short read or write), false once op.result is final.
bool account(IoOp& op, std::int64_t res);

}  // namespace vdma::blk

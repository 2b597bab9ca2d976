// The io_uring IoEngine: one ring per engine, its completions signalled on an eventfd
// registered with the ring.
#include <fcntl.h>
#include <liburing.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <climits>

#include "vdma/base/check.h"
#include "vdma/base/log.h"
#include "vdma/devices/blk/io_engine.h"
#include "vdma/memory/errors.h"
#include "vdma/memory/unique_fd.h"

namespace vdma::blk {
namespace {

class UringEngine final : public IoEngine {
 public:
  UringEngine(int fd, UniqueFd event) : fd_(fd), event_(std::move(event)) {}
  ~UringEngine() override {
    if (!initialised_) return;
    // The owner reaped everything before; anything left would complete into freed ops.
    VDMA_CHECK(in_flight_ == 0);
    io_uring_queue_exit(&ring_);
  }

  Result<void> init(unsigned entries) {
    const int r = io_uring_queue_init(entries, &ring_, 0);
    if (r < 0) return Err(memory::errno_code(-r));
    initialised_ = true;
    const int e = io_uring_register_eventfd(&ring_, event_.get());
    if (e < 0) return Err(memory::errno_code(-e));
    return Ok();
  }

  const char* name() const override { return "io_uring"; }
  int completion_fd() const override { return event_.get(); }

  void submit(IoOp& op) override {
    op.result = 0;
    op.transferred = 0;
    op.iov_next = 0;
    prepare(op);
    ++in_flight_;
  }

  void flush() override {
    if (io_uring_sq_ready(&ring_) == 0) return;
    const int r = io_uring_submit(&ring_);
    // -EBUSY / -EAGAIN: the kernel is short of room; what stays queued goes with the next
    // flush (reap flushes after consuming completions).
    if (r < 0 && r != -EBUSY && r != -EAGAIN && r != -EINTR) {
      log_error("blk", "io_uring_submit: {}", memory::errno_code(-r).message());
    }
  }

  std::size_t reap(bool wait, const std::function<void(IoOp&)>& done) override {
    eventfd_t count = 0;
    (void)::eventfd_read(event_.get(), &count);  // EAGAIN when nothing was signalled
    std::size_t n = 0;
    while (true) {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_peek_cqe(&ring_, &cqe) != 0) {
        if (!wait || n != 0 || in_flight_ == 0) break;
        flush();
        const int r = io_uring_wait_cqe(&ring_, &cqe);
        if (r < 0) continue;  // -EINTR
      }
      IoOp& op = *static_cast<IoOp*>(io_uring_cqe_get_data(cqe));
      const std::int64_t res = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      if (account(op, res)) {
        prepare(op);  // a short read or write: the rest
        continue;
      }
      --in_flight_;
      ++n;
      done(op);
    }
    flush();
    return n;
  }

  std::size_t in_flight() const override { return in_flight_; }

 private:
  io_uring_sqe* next_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe != nullptr) return sqe;
    (void)io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
    VDMA_CHECK_MSG(sqe != nullptr, "io_uring submission queue still full after submitting");
    return sqe;
  }

  void prepare(IoOp& op) {
    io_uring_sqe* sqe = next_sqe();
    const std::uint64_t at = op.offset + static_cast<std::uint64_t>(op.transferred);
    const iovec* iov = op.iov.data() + op.iov_next;
    const unsigned count =
        static_cast<unsigned>(std::min<std::size_t>(op.iov.size() - op.iov_next, IOV_MAX));
    switch (op.kind) {
      case IoKind::kRead:
        io_uring_prep_readv(sqe, fd_, iov, count, at);
        break;
      case IoKind::kWrite:
        io_uring_prep_writev2(sqe, fd_, iov, count, at, op.dsync ? RWF_DSYNC : 0);
        break;
      case IoKind::kFdatasync:
        io_uring_prep_fsync(sqe, fd_, IORING_FSYNC_DATASYNC);
        break;
      case IoKind::kPunchHole:
        io_uring_prep_fallocate(sqe, fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, op.offset,
                                op.length);
        break;
      case IoKind::kZeroRange:
        io_uring_prep_fallocate(sqe, fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, op.offset,
                                op.length);
        break;
    }
    io_uring_sqe_set_data(sqe, &op);
  }

  int fd_;
  UniqueFd event_;
  io_uring ring_{};
  bool initialised_ = false;
  std::size_t in_flight_ = 0;
};

}  // namespace

Result<std::unique_ptr<IoEngine>> CreateIoUringEngine(int fd, unsigned entries) {
  UniqueFd event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event) return Err(memory::errno_code(errno));
  auto engine = std::make_unique<UringEngine>(fd, std::move(event));
  VDMA_TRY(engine->init(entries));
  return std::unique_ptr<IoEngine>(std::move(engine));
}

}  // namespace vdma::blk

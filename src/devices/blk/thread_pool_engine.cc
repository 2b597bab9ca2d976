// The thread-pool IoEngine: workers run blocking syscalls and hand finished ops back
// through a list and an eventfd.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "vdma/base/check.h"
#include "vdma/devices/blk/io_engine.h"
#include "vdma/memory/errors.h"
#include "vdma/memory/unique_fd.h"

namespace vdma::blk {
namespace {

// Runs `op` to its end with blocking syscalls.
void run_op(int fd, IoOp& op) {
  while (true) {
    std::int64_t res = 0;
    const std::uint64_t at = op.offset + static_cast<std::uint64_t>(op.transferred);
    const iovec* iov = op.iov.data() + op.iov_next;
    const int count = static_cast<int>(std::min<std::size_t>(op.iov.size() - op.iov_next, IOV_MAX));
    switch (op.kind) {
      case IoKind::kRead:
        res = ::preadv2(fd, iov, count, static_cast<off_t>(at), 0);
        break;
      case IoKind::kWrite:
        res = ::pwritev2(fd, iov, count, static_cast<off_t>(at), op.dsync ? RWF_DSYNC : 0);
        break;
      case IoKind::kFdatasync:
        res = ::fdatasync(fd);
        break;
      case IoKind::kPunchHole:
        res = ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          static_cast<off_t>(op.offset), static_cast<off_t>(op.length));
        break;
      case IoKind::kZeroRange:
        res = ::fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                          static_cast<off_t>(op.offset), static_cast<off_t>(op.length));
        break;
    }
    if (res < 0) {
      if (errno == EINTR) continue;
      res = -errno;
    }
    if (!account(op, res)) return;
  }
}

class ThreadPoolEngine final : public IoEngine {
 public:
  ThreadPoolEngine(int fd, UniqueFd event) : fd_(fd), event_(std::move(event)) {}
  ~ThreadPoolEngine() override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : workers_) t.join();
    VDMA_CHECK(in_flight_ == 0);  // the owner reaped everything before
  }

  void start(unsigned threads) {
    for (unsigned i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }

  const char* name() const override { return "thread-pool"; }
  int completion_fd() const override { return event_.get(); }

  void submit(IoOp& op) override {
    op.result = 0;
    op.transferred = 0;
    op.iov_next = 0;
    ++in_flight_;
    {
      std::lock_guard lock(mu_);
      queue_.push_back(&op);
    }
    work_cv_.notify_one();
  }

  void flush() override {}

  std::size_t reap(bool wait, const std::function<void(IoOp&)>& done) override {
    eventfd_t count = 0;
    (void)::eventfd_read(event_.get(), &count);  // EAGAIN when nothing was signalled
    std::vector<IoOp*> ready;
    {
      std::unique_lock lock(mu_);
      if (wait && in_flight_ != 0) done_cv_.wait(lock, [&] { return !done_.empty(); });
      ready.swap(done_);
    }
    for (IoOp* op : ready) {
      --in_flight_;
      done(*op);
    }
    return ready.size();
  }

  std::size_t in_flight() const override { return in_flight_; }

 private:
  void work() {
    while (true) {
      IoOp* op = nullptr;
      {
        std::unique_lock lock(mu_);
        work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping
        op = queue_.front();
        queue_.pop_front();
      }
      run_op(fd_, *op);
      {
        std::lock_guard lock(mu_);
        done_.push_back(op);
      }
      done_cv_.notify_one();
      (void)::eventfd_write(event_.get(), 1);
    }
  }

  int fd_;
  UniqueFd event_;
  std::vector<std::thread> workers_;
  std::size_t in_flight_ = 0;  // owner thread only
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::deque<IoOp*> queue_;  // guarded by mu_
  std::vector<IoOp*> done_;  // guarded by mu_
  bool stopping_ = false;    // guarded by mu_
};

}  // namespace

Result<std::unique_ptr<IoEngine>> CreateThreadPoolEngine(int fd, unsigned threads) {
  if (threads == 0 || threads > 256) return Err(std::make_error_code(std::errc::invalid_argument));
  UniqueFd event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event) return Err(memory::errno_code(errno));
  auto engine = std::make_unique<ThreadPoolEngine>(fd, std::move(event));
  engine->start(threads);
  return std::unique_ptr<IoEngine>(std::move(engine));
}

}  // namespace vdma::blk

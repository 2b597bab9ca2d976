// BlkQueue: serves the requests of one virtqueue of a Disk — parses each chain, runs it
// on its own IoEngine (io_uring or a thread pool) and reports it finished. Queues are
// independent of each other (multiqueue: one BlkQueue per virtqueue) and of the
// transport: the owner pops chains, and pushes them used from the Complete callback.
//
// Threading: every call, and every Complete callback, happens on the owner's thread;
// completions are delivered from reap() / drain(), never from submit()'s caller stack
// except for requests finished without I/O (malformed, GET_ID, empty).
//
//   auto q = VDMA_TRY(blk::BlkQueue::Create(*disk, {}, [&](std::uint16_t head, std::uint32_t n) {
//     ring.push_used(head, n);
//   }));
//   while (pop(chain)) q->submit(chain);
//   q->flush();
//   loop.add(q->completion_fd(), [&](std::uint32_t) { q->reap(); ring.notify(); });
//   ...
//   q->drain();   // before the ring stops: every request completed
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "vdma/base/result.h"
#include "vdma/devices/blk/disk.h"
#include "vdma/devices/blk/io_engine.h"
#include "vdma/devices/blk/request.h"
#include "vdma/virtq/types.h"

namespace vdma::blk {

struct QueueOptions {
  EngineOptions engine;
  std::uint32_t depth = 128;  // I/O operations on the engine at once; more wait in order
};

// Counters of one queue.
struct QueueStats {
  std::uint64_t reads = 0;
  std::uint64_t writes = 0;
  std::uint64_t flushes = 0;
  std::uint64_t discards = 0;
  std::uint64_t write_zeroes = 0;
  std::uint64_t get_ids = 0;
  std::uint64_t bytes_read = 0;
  std::uint64_t bytes_written = 0;
  std::uint64_t malformed = 0;  // refused by parse_request (IOERR / UNSUPP)
  std::uint64_t io_errors = 0;  // failed in the file system (IOERR)
};

class BlkQueue {
 public:
  // A request finished: its head, and the bytes written into its writable part (data
  // read + the status byte; 0 when it had no status byte).
  using Complete = std::function<void(std::uint16_t head, std::uint32_t written)>;

  static Result<std::unique_ptr<BlkQueue>> Create(const Disk& disk, const QueueOptions& options,
                                                  Complete complete);
  ~BlkQueue();  // drains first
  BlkQueue(const BlkQueue&) = delete;
  BlkQueue& operator=(const BlkQueue&) = delete;

  // Takes one popped chain. Its memory must stay mapped until the request completes.
  void submit(const virtq::Chain& chain);
  // Starts the I/O queued by submit() calls.
  void flush();
  // Readable when reap() has work.
  int completion_fd() const { return engine_->completion_fd(); }
  // Completes finished requests without blocking; returns how many.
  std::size_t reap();
  // Blocks until every accepted request has completed.
  void drain();
  // Requests accepted and not yet completed.
  std::size_t in_flight() const { return in_flight_; }
  // The write cache (CONFIG_WCE): off makes every write durable before it completes.
  void set_writeback(bool on) { writeback_ = on; }
  const QueueStats& stats() const { return stats_; }
  const char* engine_name() const { return engine_->name(); }

 private:
  struct Pending;
  BlkQueue(const Disk& disk, const QueueOptions& options, std::unique_ptr<IoEngine> engine,
           Complete complete);

  Pending* acquire();
  void start_or_queue(Pending* p);
  void start(Pending* p);
  void pump_backlog();
  void build_ops(Pending& p, const Request& req);
  void on_op_done(IoOp& op);
  bool retry_as_zero_writes(Pending& p, IoOp& op);
  void finish(Pending& p);
  void finish_now(std::uint16_t head, std::byte* status, std::uint8_t value, std::uint32_t written);

  const Disk& disk_;
  QueueOptions options_;
  std::unique_ptr<IoEngine> engine_;
  Complete complete_;
  bool writeback_ = true;
  std::size_t in_flight_ = 0;
  std::deque<Pending*> backlog_;                // built, waiting for engine room
  std::vector<std::unique_ptr<Pending>> pool_;  // every Pending ever made
  std::vector<Pending*> free_;
  QueueStats stats_;
};

}  // namespace vdma::blk

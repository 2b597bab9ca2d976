#include "vdma/devices/blk/blk_queue.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "vdma/base/check.h"
#include "vdma/base/log.h"
#include "vdma/memory/errors.h"

namespace vdma::blk {
namespace {

constexpr const char* kLog = "blk";

// Zeros written when the file system cannot zero a range with fallocate.
constexpr std::size_t kZeroChunk = 64 << 10;
constexpr std::size_t kZeroIovs = 16;  // 1 MiB per write
alignas(4096) const std::array<std::byte, kZeroChunk> kZeros{};

// Points `op` at the next run of zeros to write in [op.offset, end).
void next_zero_write(IoOp& op, std::uint64_t end) {
  std::uint64_t left = std::min<std::uint64_t>(end - op.offset, kZeroChunk * kZeroIovs);
  op.kind = IoKind::kWrite;
  op.iov.clear();
  while (left > 0) {
    const std::size_t n = std::min<std::uint64_t>(left, kZeroChunk);
    op.iov.push_back({const_cast<std::byte*>(kZeros.data()), n});  // only ever read
    left -= n;
  }
}

void write_status(std::byte* status, std::uint8_t value) {
  // guest memory: one byte, written once.
  std::memcpy(status, &value, 1);
}

}  // namespace

struct BlkQueue::Pending {
  std::uint16_t head = 0;
  std::uint32_t type = 0;
  std::byte* status = nullptr;
  std::uint32_t written = 1;
  std::uint8_t status_value = kStatusOk;
  std::uint32_t ops_left = 0;
  std::vector<IoOp> ops;                // sized before start, never resized while running
  std::vector<std::uint64_t> zero_end;  // per op: end of a zeroing-by-writes run, or 0
};

Result<std::unique_ptr<BlkQueue>> BlkQueue::Create(const Disk& disk, const QueueOptions& options,
                                                   Complete complete) {
  if (options.depth == 0 || !complete) return Err(Errc::kInvalidOptions);
  auto engine = VDMA_TRY(CreateIoEngine(disk.fd(), options.engine));
  return std::unique_ptr<BlkQueue>(
      new BlkQueue(disk, options, std::move(engine), std::move(complete)));
}

BlkQueue::BlkQueue(const Disk& disk, const QueueOptions& options, std::unique_ptr<IoEngine> engine,
                   Complete complete)
    : disk_(disk), options_(options), engine_(std::move(engine)), complete_(std::move(complete)) {}

BlkQueue::~BlkQueue() {
  drain();
}

BlkQueue::Pending* BlkQueue::acquire() {
  if (free_.empty()) {
    pool_.push_back(std::make_unique<Pending>());
    free_.push_back(pool_.back().get());
  }
  Pending* p = free_.back();
  free_.pop_back();
  p->ops.clear();
  p->zero_end.clear();
  p->status_value = kStatusOk;
  p->ops_left = 0;
  return p;
}

void BlkQueue::submit(const virtq::Chain& chain) {
  auto req = parse_request(chain, disk_.limits());
  if (!req) {
    ++stats_.malformed;
    log(LogLevel::kDebug, kLog, "request {} refused: {}", chain.head, req.error().message());
    std::byte* status = status_byte(chain);
    finish_now(chain.head, status, status_for(req.error()), status ? 1 : 0);
    return;
  }
  if (req->type == kTypeGetId) {
    ++stats_.get_ids;
    const auto& id = disk_.id();
    std::size_t done = 0;
    for (const virtq::DeviceSegment& s : req->data) {
      const std::size_t n = std::min<std::size_t>(s.len, id.size() - done);
      std::memcpy(s.host, id.data() + done, n);
      done += n;
      if (done == id.size()) break;
    }
    finish_now(chain.head, req->status, kStatusOk, static_cast<std::uint32_t>(done + 1));
    return;
  }
  Pending* p = acquire();
  p->head = chain.head;
  p->type = req->type;
  p->status = req->status;
  p->written = req->writable_bytes;
  build_ops(*p, *req);
  ++in_flight_;
  if (p->ops.empty()) {  // nothing to do: an empty read or write, ranges of 0 sectors
    finish(*p);
    return;
  }
  start_or_queue(p);
}

void BlkQueue::build_ops(Pending& p, const Request& req) {
  auto add = [&](IoKind kind, std::uint64_t offset, std::uint64_t length) -> IoOp& {
    IoOp& op = p.ops.emplace_back();
    op.kind = kind;
    op.offset = offset;
    op.length = length;
    op.owner = &p;
    op.tag = static_cast<std::uint32_t>(p.ops.size() - 1);
    p.zero_end.push_back(0);
    return op;
  };
  switch (req.type) {
    case kTypeIn:
    case kTypeOut: {
      const bool in = req.type == kTypeIn;
      (in ? stats_.reads : stats_.writes)++;
      if (req.data_bytes == 0) return;
      IoOp& op = add(in ? IoKind::kRead : IoKind::kWrite, req.sector << kSectorShift, 0);
      op.dsync = !in && !writeback_;
      op.iov.reserve(req.data.size());
      for (const virtq::DeviceSegment& s : req.data) op.iov.push_back({s.host, s.len});
      return;
    }
    case kTypeFlush:
      ++stats_.flushes;
      add(IoKind::kFdatasync, 0, 0);
      return;
    case kTypeDiscard:
    case kTypeWriteZeroes: {
      const bool discard = req.type == kTypeDiscard;
      (discard ? stats_.discards : stats_.write_zeroes)++;
      for (const Range& r : req.ranges) {
        if (r.num_sectors == 0) continue;
        const std::uint64_t off = r.sector << kSectorShift;
        const std::uint64_t len = std::uint64_t{r.num_sectors} << kSectorShift;
        // A punched hole reads back as zeros: WRITE_ZEROES with the unmap flag may use it.
        const bool punch = discard || (r.flags & kRangeFlagUnmap) != 0;
        if (punch) {
          add(IoKind::kPunchHole, off, len);
        } else if (disk_.zero_range_supported()) {
          add(IoKind::kZeroRange, off, len);
        } else {
          IoOp& op = add(IoKind::kWrite, off, 0);
          p.zero_end.back() = off + len;
          next_zero_write(op, off + len);
        }
      }
      return;
    }
    default:
      VDMA_CHECK_MSG(false, "parse_request accepted a type build_ops does not know");
  }
}

void BlkQueue::start_or_queue(Pending* p) {
  const bool room =
      engine_->in_flight() == 0 || engine_->in_flight() + p->ops.size() <= options_.depth;
  if (backlog_.empty() && room) {
    start(p);
  } else {
    backlog_.push_back(p);
  }
}

void BlkQueue::start(Pending* p) {
  p->ops_left = static_cast<std::uint32_t>(p->ops.size());
  for (IoOp& op : p->ops) engine_->submit(op);
}

void BlkQueue::pump_backlog() {
  while (!backlog_.empty()) {
    Pending* p = backlog_.front();
    const bool room =
        engine_->in_flight() == 0 || engine_->in_flight() + p->ops.size() <= options_.depth;
    if (!room) break;
    backlog_.pop_front();
    start(p);
  }
}

void BlkQueue::flush() {
  engine_->flush();
}

std::size_t BlkQueue::reap() {
  const std::size_t before = in_flight_;
  engine_->reap(false, [this](IoOp& op) { on_op_done(op); });
  pump_backlog();
  engine_->flush();
  return before - in_flight_;
}

void BlkQueue::drain() {
  while (in_flight_ != 0) {
    pump_backlog();
    engine_->flush();
    engine_->reap(true, [this](IoOp& op) { on_op_done(op); });
  }
}

bool BlkQueue::retry_as_zero_writes(Pending& p, IoOp& op) {
  const bool zeroing = op.kind == IoKind::kZeroRange ||
                       (op.kind == IoKind::kPunchHole && p.type == kTypeWriteZeroes);
  if (!zeroing || (op.result != -EOPNOTSUPP && op.result != -EINVAL)) return false;
  if (op.kind == IoKind::kZeroRange) {
    disk_.set_zero_range_unsupported();
    log_info(kLog, "{}: fallocate(ZERO_RANGE) unsupported; zeroing with writes", disk_.path());
  }
  p.zero_end[op.tag] = op.offset + op.length;
  next_zero_write(op, op.offset + op.length);
  engine_->submit(op);
  return true;
}

void BlkQueue::on_op_done(IoOp& op) {
  Pending& p = *static_cast<Pending*>(op.owner);
  if (op.result < 0) {
    if (retry_as_zero_writes(p, op)) return;
    if (op.kind == IoKind::kPunchHole && p.type == kTypeDiscard && op.result == -EOPNOTSUPP) {
      // DISCARD is a hint: a file system that cannot punch holes keeps the data.
    } else {
      log_warn(kLog, "{}: I/O error on request {}: {}", disk_.path(), p.head,
               memory::errno_code(static_cast<int>(-op.result)).message());
      p.status_value = kStatusIoErr;
    }
  } else {
    if (op.kind == IoKind::kRead) stats_.bytes_read += static_cast<std::uint64_t>(op.result);
    if (op.kind == IoKind::kWrite) stats_.bytes_written += static_cast<std::uint64_t>(op.result);
    const std::uint64_t end = p.zero_end[op.tag];
    if (end != 0) {
      op.offset += static_cast<std::uint64_t>(op.result);
      if (op.offset < end) {
        next_zero_write(op, end);
        engine_->submit(op);
        return;
      }
    }
  }
  VDMA_CHECK(p.ops_left > 0);
  if (--p.ops_left == 0) finish(p);
}

void BlkQueue::finish(Pending& p) {
  VDMA_CHECK(in_flight_ > 0);
  --in_flight_;
  if (p.status_value != kStatusOk) ++stats_.io_errors;
  write_status(p.status, p.status_value);
  const std::uint16_t head = p.head;
  const std::uint32_t written = p.written;
  free_.push_back(&p);
  complete_(head, written);
}

void BlkQueue::finish_now(std::uint16_t head, std::byte* status, std::uint8_t value,
                          std::uint32_t written) {
  if (status != nullptr) write_status(status, value);
  complete_(head, written);
}

}  // namespace vdma::blk

// BlkQueue executing requests against a temp image, on io_uring and on the thread pool:
// round trips, more requests than the engine depth, flush, discard, write zeroes (both
// fallocate and the write fallback), GET_ID, read-only, I/O errors, and two queues on
// two threads.
#include "vdma/devices/blk/blk_queue.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <map>
#include <thread>

#include "blk_test_util.h"
#include "vdma/base/log.h"

namespace vdma::blk::test {
namespace {

struct Done {
  std::uint16_t head;
  std::uint32_t written;
};

class BlkQueueTest : public ::testing::TestWithParam<EngineKind> {
 protected:
  void open(bool read_only = false, std::uint32_t depth = 128) {
    auto d = Disk::Open(
        {.path = image.path, .read_only = read_only, .serial = "vdma-serial-0123456789"});
    ASSERT_TRUE(d) << d.error().message();
    disk = std::move(*d);
    QueueOptions o;
    o.engine.kind = GetParam();
    o.depth = depth;
    auto q = BlkQueue::Create(*disk, o, [this](std::uint16_t h, std::uint32_t n) {
      done.push_back({h, n});
    });
    ASSERT_TRUE(q) << q.error().message();
    queue = std::move(*q);
  }
  // Submits `t` as request `head`, waits for it, returns what was reported.
  Done run(TestChain& t, std::uint16_t head = 1) {
    const std::size_t before = done.size();
    queue->submit(t.chain(head));
    queue->flush();
    queue->drain();
    EXPECT_EQ(done.size(), before + 1);
    EXPECT_EQ(queue->in_flight(), 0u);
    return done.empty() ? Done{} : done.back();
  }
  std::uint8_t write(std::uint64_t sector, const std::vector<std::uint8_t>& data) {
    TestChain t;
    t.readable(TestChain::header(kTypeOut, sector)).readable(data).writable(1);
    run(t);
    return t.status();
  }
  std::vector<std::uint8_t> read(std::uint64_t sector, std::size_t len, std::uint8_t* status) {
    TestChain t;
    t.readable(TestChain::header(kTypeIn, sector)).writable(len).writable(1);
    const Done d = run(t);
    EXPECT_EQ(d.written, len + 1);
    *status = t.status();
    return t.buf(1);
  }
  std::uint8_t ranges(std::uint32_t type, std::uint64_t sector, std::uint32_t n,
                      std::uint32_t flags = 0) {
    TestChain t;
    t.readable(TestChain::header(type, 0, TestChain::range(sector, n, flags))).writable(1);
    EXPECT_EQ(run(t).written, 1u);
    return t.status();
  }

  TempImage image{4 << 20};
  std::unique_ptr<Disk> disk;
  std::unique_ptr<BlkQueue> queue;
  std::vector<Done> done;
};

INSTANTIATE_TEST_SUITE_P(Engines, BlkQueueTest,
                         ::testing::Values(EngineKind::kIoUring, EngineKind::kThreadPool),
                         [](const auto& info) {
                           return info.param == EngineKind::kIoUring ? "IoUring" : "ThreadPool";
                         });

TEST_P(BlkQueueTest, WritesLandInTheImageAndReadBack) {
  open();
  EXPECT_STREQ(queue->engine_name(),
               GetParam() == EngineKind::kIoUring ? "io_uring" : "thread-pool");
  // A write split over three segments, the first sharing the header's.
  auto data = pattern(3 * 512, 9);
  TestChain w;
  w.readable(TestChain::concat(TestChain::header(kTypeOut, 8), {data.begin(), data.begin() + 100}))
      .readable({data.begin() + 100, data.begin() + 1000})
      .readable({data.begin() + 1000, data.end()})
      .writable(1);
  const Done d = run(w, 7);
  EXPECT_EQ(d.head, 7);
  EXPECT_EQ(d.written, 1u);
  EXPECT_EQ(w.status(), kStatusOk);
  EXPECT_EQ(image.read(8 * 512, data.size()), data);
  // Read back into two segments, the status byte sharing the last one.
  TestChain r;
  r.readable(TestChain::header(kTypeIn, 8)).writable(1024).writable(513);
  EXPECT_EQ(run(r).written, 1537u);
  EXPECT_EQ(r.status(), kStatusOk);
  auto back = TestChain::concat(r.buf(1), {r.buf(2).begin(), r.buf(2).end() - 1});
  EXPECT_EQ(back, data);
  EXPECT_EQ(queue->stats().bytes_written, data.size());
  EXPECT_EQ(queue->stats().bytes_read, data.size());
}

TEST_P(BlkQueueTest, MoreRequestsThanTheEngineDepth) {
  open(false, 4);
  std::vector<TestChain> chains(64);
  for (int i = 0; i < 64; ++i) {
    chains[i]
        .readable(TestChain::header(kTypeOut, i * 16))
        .readable(pattern(4096, static_cast<std::uint8_t>(i)))
        .writable(1);
    queue->submit(chains[i].chain(static_cast<std::uint16_t>(i)));
  }
  queue->flush();
  EXPECT_GT(queue->in_flight(), 0u);
  queue->drain();
  ASSERT_EQ(done.size(), 64u);
  std::map<std::uint16_t, int> heads;
  for (const Done& d : done) heads[d.head]++;
  EXPECT_EQ(heads.size(), 64u);
  for (int i = 0; i < 64; ++i) {
    EXPECT_EQ(chains[i].status(), kStatusOk);
    EXPECT_EQ(image.read(i * 16 * 512, 4096), pattern(4096, static_cast<std::uint8_t>(i)));
  }
}

TEST_P(BlkQueueTest, CompletionFdSignalsAndReapCompletes) {
  open();
  TestChain t;
  t.readable(TestChain::header(kTypeOut, 0)).readable(pattern(512, 1)).writable(1);
  queue->submit(t.chain(3));
  queue->flush();
  std::size_t reaped = 0;
  for (int i = 0; i < 1000 && reaped == 0; ++i) {
    pollfd p{queue->completion_fd(), POLLIN, 0};
    ::poll(&p, 1, 10);
    reaped += queue->reap();
  }
  EXPECT_EQ(reaped, 1u);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].head, 3);
  // Reaped: the fd is quiet again (an event loop would spin otherwise).
  pollfd p{queue->completion_fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0);
}

TEST_P(BlkQueueTest, FlushAfterWritesSucceeds) {
  open();
  EXPECT_EQ(write(0, pattern(512, 2)), kStatusOk);
  queue->set_writeback(false);  // writethrough: RWF_DSYNC writes
  EXPECT_EQ(write(1, pattern(512, 3)), kStatusOk);
  TestChain f;
  f.readable(TestChain::header(kTypeFlush, 0)).writable(1);
  EXPECT_EQ(run(f).written, 1u);
  EXPECT_EQ(f.status(), kStatusOk);
  EXPECT_EQ(queue->stats().flushes, 1u);
  EXPECT_EQ(image.read(512, 512), pattern(512, 3));
}

TEST_P(BlkQueueTest, DiscardPunchesAHole) {
  open();
  ASSERT_EQ(write(0, pattern(256 << 10, 4)), kStatusOk);
  TestChain f;
  f.readable(TestChain::header(kTypeFlush, 0)).writable(1);
  run(f);
  const std::uint64_t before = image.allocated_sectors();
  EXPECT_EQ(ranges(kTypeDiscard, 0, 512), kStatusOk);
  EXPECT_LT(image.allocated_sectors(), before);
  EXPECT_EQ(image.read(0, 256 << 10), std::vector<std::uint8_t>(256 << 10, 0));
  EXPECT_EQ(std::filesystem::file_size(image.path), 4u << 20);
}

TEST_P(BlkQueueTest, WriteZeroesWithAndWithoutUnmap) {
  open();
  const auto data = pattern(64 << 10, 5);
  ASSERT_EQ(write(0, data), kStatusOk);
  EXPECT_EQ(ranges(kTypeWriteZeroes, 8, 16), kStatusOk);
  EXPECT_EQ(image.read(8 * 512, 16 * 512), std::vector<std::uint8_t>(16 * 512, 0));
  EXPECT_EQ(image.read(0, 8 * 512), std::vector<std::uint8_t>(data.begin(), data.begin() + 4096));
  EXPECT_EQ(ranges(kTypeWriteZeroes, 64, 32, kRangeFlagUnmap), kStatusOk);
  EXPECT_EQ(image.read(64 * 512, 32 * 512), std::vector<std::uint8_t>(32 * 512, 0));
  EXPECT_EQ(std::filesystem::file_size(image.path), 4u << 20);
}

TEST_P(BlkQueueTest, WriteZeroesFallsBackToWrites) {
  open();
  const auto data = pattern(3 << 20, 6);
  image.write(0, data);
  disk->set_zero_range_unsupported();  // as after a file system refused ZERO_RANGE
  // 2.5 MiB: three chunked writes of zeros.
  EXPECT_EQ(ranges(kTypeWriteZeroes, 1, 5120), kStatusOk);
  EXPECT_EQ(image.read(512, 5120 * 512), std::vector<std::uint8_t>(5120 * 512, 0));
  EXPECT_EQ(image.read(0, 512), std::vector<std::uint8_t>(data.begin(), data.begin() + 512));
  EXPECT_EQ(image.read(5121 * 512, 512),
            std::vector<std::uint8_t>(data.begin() + 5121 * 512, data.begin() + 5122 * 512));
  EXPECT_EQ(queue->stats().bytes_written, 5120u * 512);
}

TEST_P(BlkQueueTest, GetIdReturnsTheSerial) {
  open();
  TestChain t;
  t.readable(TestChain::header(kTypeGetId, 0)).writable(20).writable(1);
  EXPECT_EQ(run(t).written, 21u);
  EXPECT_EQ(t.status(), kStatusOk);
  EXPECT_EQ(std::string(t.buf(1).begin(), t.buf(1).end()), "vdma-serial-01234567");
}

TEST_P(BlkQueueTest, MalformedRequestsCompleteWithAStatus) {
  open();
  TestChain bad;
  bad.readable(TestChain::header(kTypeIn, 1u << 30)).writable(512).writable(1);
  EXPECT_EQ(run(bad).written, 1u);
  EXPECT_EQ(bad.status(), kStatusIoErr);
  TestChain unknown;
  unknown.readable(TestChain::header(99, 0)).writable(1);
  run(unknown);
  EXPECT_EQ(unknown.status(), kStatusUnsupp);
  TestChain no_status;
  no_status.readable(TestChain::header(kTypeFlush, 0));
  EXPECT_EQ(run(no_status).written, 0u);
  EXPECT_EQ(queue->stats().malformed, 3u);
}

TEST_P(BlkQueueTest, ReadOnlyDiskRefusesWritesAndKeepsTheImage) {
  image.write(0, pattern(4096, 7));
  open(/*read_only=*/true);
  EXPECT_TRUE(disk->features().has(kBlkFRo));
  EXPECT_FALSE(disk->features().has(kBlkFDiscard));
  EXPECT_EQ(write(0, pattern(4096, 8)), kStatusIoErr);
  EXPECT_EQ(ranges(kTypeDiscard, 0, 8), kStatusIoErr);
  EXPECT_EQ(ranges(kTypeWriteZeroes, 0, 8), kStatusIoErr);
  std::uint8_t status = 0xff;
  EXPECT_EQ(read(0, 4096, &status), pattern(4096, 7));
  EXPECT_EQ(status, kStatusOk);
  EXPECT_EQ(image.read(0, 4096), pattern(4096, 7));
}

TEST_P(BlkQueueTest, ReadPastAShrunkImageIsAnIoError) {
  open();
  // The capacity was fixed at open; someone truncates the file behind the device.
  ASSERT_EQ(::truncate(image.path.c_str(), 1 << 20), 0);
  std::uint8_t status = 0;
  read(4096, 512, &status);
  EXPECT_EQ(status, kStatusIoErr);
  EXPECT_EQ(queue->stats().io_errors, 1u);
}

TEST(BlkEngine, AdvanceWalksIovecsOnShortTransfers) {
  std::vector<std::uint8_t> a(100), b(50);
  IoOp op;
  op.kind = IoKind::kRead;
  op.iov = {{a.data(), a.size()}, {b.data(), b.size()}};
  EXPECT_EQ(remaining_bytes(op), 150u);
  EXPECT_TRUE(account(op, 30));
  EXPECT_EQ(op.iov_next, 0u);
  EXPECT_EQ(op.iov[0].iov_base, a.data() + 30);
  EXPECT_TRUE(account(op, 80));
  EXPECT_EQ(op.iov_next, 1u);
  EXPECT_EQ(op.iov[1].iov_base, b.data() + 10);
  EXPECT_EQ(remaining_bytes(op), 40u);
  EXPECT_FALSE(account(op, 40));
  EXPECT_EQ(op.result, 150);
  IoOp stuck;
  stuck.kind = IoKind::kWrite;
  stuck.iov = {{a.data(), a.size()}};
  EXPECT_FALSE(account(stuck, 0));
  EXPECT_EQ(stuck.result, -EIO);
}

TEST(BlkEngine, AutoFallsBackToTheThreadPoolWhenIoUringInitFails) {
  TempImage img;
  auto d = Disk::Open({.path = img.path});
  ASSERT_TRUE(d);
  // io_uring_queue_init refuses 0 entries (EINVAL): as on a kernel without io_uring.
  EXPECT_FALSE(CreateIoUringEngine((*d)->fd(), 0));
  ScopedLogCapture logs;
  auto e = CreateIoEngine((*d)->fd(), {.kind = EngineKind::kAuto, .entries = 0, .threads = 2});
  ASSERT_TRUE(e) << e.error().message();
  EXPECT_STREQ((*e)->name(), "thread-pool");
  EXPECT_TRUE(logs.contains("io_uring unavailable"));
  // And it does I/O.
  std::vector<std::uint8_t> buf(4096, 0x5a);
  IoOp op;
  op.kind = IoKind::kWrite;
  op.offset = 8192;
  op.iov = {{buf.data(), buf.size()}};
  (*e)->submit(op);
  (*e)->flush();
  std::size_t n = 0;
  while (n == 0) n = (*e)->reap(true, [](IoOp&) {});
  EXPECT_EQ(op.result, 4096);
  EXPECT_EQ(img.read(8192, 4096), buf);
}

TEST(BlkDisk, OpenErrors) {
  EXPECT_FALSE(Disk::Open({.path = "/nonexistent/vdma/disk.img"}));
  TempImage tiny(100);
  auto small = Disk::Open({.path = tiny.path});
  ASSERT_FALSE(small);
  EXPECT_EQ(small.error(), make_error_code(Errc::kImageTooSmall));
  auto dir = Disk::Open({.path = tiny.dir, .read_only = true});
  ASSERT_FALSE(dir);
  EXPECT_EQ(dir.error(), make_error_code(Errc::kNotAnImage));
  TempImage ok;
  EXPECT_FALSE(Disk::Open({.path = ok.path, .seg_max = 0}));
}

TEST(BlkDisk, ConfigSpace) {
  TempImage img(3 << 20);
  auto d = Disk::Open({.path = img.path});
  ASSERT_TRUE(d);
  const Config c = (*d)->config({.num_queues = 4, .writeback = true});
  EXPECT_EQ(c.capacity, 6144u);
  EXPECT_EQ(c.num_queues, 4);
  EXPECT_EQ(c.writeback, 1);
  EXPECT_EQ(c.seg_max, 126u);
  std::array<std::uint8_t, 8> cap{};
  ASSERT_TRUE(read_config_bytes(c, 0, cap));
  std::uint64_t v;
  std::memcpy(&v, cap.data(), 8);
  EXPECT_EQ(v, 6144u);
  std::array<std::uint8_t, 24> tail{};
  tail.fill(0xff);
  ASSERT_TRUE(read_config_bytes(c, 72, tail));  // past the struct: zeros
  EXPECT_EQ(tail, (std::array<std::uint8_t, 24>{}));
  EXPECT_FALSE(read_config_bytes(c, kConfigSpaceBytes - 4, tail));
  EXPECT_FALSE(read_config_bytes(c, 0xffffffffu, std::span(tail).first(1)));
}

// Two queues of one disk on two threads (one connection's queues are on one thread; two
// connections sharing a disk are not).
TEST(BlkQueueConcurrency, TwoQueuesOnTwoThreads) {
  TempImage image(2 << 20);
  auto d = Disk::Open({.path = image.path});
  ASSERT_TRUE(d);
  std::shared_ptr<const Disk> disk(std::move(*d));
  auto worker = [&](int id, EngineKind kind) {
    int completed = 0;
    QueueOptions o;
    o.engine.kind = kind;
    o.depth = 8;
    auto q = BlkQueue::Create(*disk, o, [&](std::uint16_t, std::uint32_t) { ++completed; });
    ASSERT_TRUE(q);
    std::vector<TestChain> chains(32);
    for (int i = 0; i < 32; ++i) {
      const std::uint64_t sector = (id * 32 + i) * 8;
      chains[i]
          .readable(TestChain::header(kTypeOut, sector))
          .readable(pattern(4096, static_cast<std::uint8_t>(id * 32 + i)))
          .writable(1);
      (*q)->submit(chains[i].chain(static_cast<std::uint16_t>(i)));
    }
    (*q)->flush();
    (*q)->drain();
    EXPECT_EQ(completed, 32);
    for (auto& c : chains) EXPECT_EQ(c.status(), kStatusOk);
  };
  std::thread a(worker, 0, EngineKind::kThreadPool);
  std::thread b(worker, 1, EngineKind::kIoUring);
  a.join();
  b.join();
  for (int i = 0; i < 64; ++i) {
    EXPECT_EQ(image.read(i * 8 * 512, 4096), pattern(4096, static_cast<std::uint8_t>(i)));
  }
}

}  // namespace
}  // namespace vdma::blk::test

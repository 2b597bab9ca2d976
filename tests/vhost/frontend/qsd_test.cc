// The front end against a real peer: qemu-storage-daemon's vhost-user-blk export on a
// temporary raw image. qsd 7.2 offers VERSION_1, INDIRECT_DESC, EVENT_IDX and the MQ,
// REPLY_ACK, BACKEND_REQ, CONFIG and CONFIGURE_MEM_SLOTS protocol features; it offers
// neither RING_PACKED nor ACCESS_PLATFORM, so the packed layout and the secure-guest and
// IOMMU platforms must be refused with a clear error.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <set>

#include "blk_request.h"
#include "qsd.h"
#include "vdma/dma/errors.h"
#include "vdma/testing/patterns.h"
#include "vdma/vhost/frontend.h"

namespace vdma::vhost {
namespace {

using namespace std::chrono_literals;
using test::BlkRequests;
using test::kBlkFlush;
using test::kBlkIn;
using test::kBlkOut;
using test::kBlkStatusOk;
using test::kSectorSize;
using vdma::testing::fill_pattern;
using vdma::testing::first_mismatch;

constexpr std::uint64_t kImageBytes = 8ull << 20;
constexpr dma::GuestConfig kSmallGuest{
    .ram_bytes = 16ull << 20, .coherent_bytes = 1ull << 20, .bounce_bytes = 8ull << 20};

dma::GuestConfig guest_config(dma::Platform p) {
  dma::GuestConfig c = kSmallGuest;
  c.platform = p;
  return c;
}

class QsdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::qsd_binary()) GTEST_SKIP() << "qemu-storage-daemon not installed";
    ASSERT_TRUE(dir_.ok());
    image_ = test::make_image(dir_, kImageBytes);
    ASSERT_FALSE(image_.empty());
    socket_ = dir_.path() + "/blk.sock";
  }

  void start_qsd(unsigned queues = 1) {
    qsd_ = test::Qsd::Start({.image = image_,
                             .socket = socket_,
                             .num_queues = queues,
                             .log = dir_.path() + "/qsd.log"});
    ASSERT_NE(qsd_, nullptr) << "qemu-storage-daemon did not come up";
  }

  std::unique_ptr<dma::Guest> make_guest(dma::Platform p = dma::kTraditional) {
    auto g = dma::Guest::Create(guest_config(p));
    EXPECT_TRUE(g) << g.error().message();
    return g ? std::move(*g) : nullptr;
  }

  FrontendConfig config(dma::Guest* g) {
    return FrontendConfig{.socket_path = socket_,
                          .guest = g,
                          .device_features = {kVirtioFRingIndirectDesc, kVirtioFRingEventIdx},
                          .queue_size = 128};
  }

  // Bytes [offset, offset + len) of the image file, read directly (not through qsd).
  std::vector<std::byte> image_bytes(std::uint64_t offset, std::size_t len) {
    std::vector<std::byte> out(len);
    int fd = ::open(image_.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::pread(fd, out.data(), len, static_cast<off_t>(offset)), static_cast<ssize_t>(len));
    ::close(fd);
    return out;
  }

  test::TempDir dir_;
  std::string image_;
  std::string socket_;
  std::unique_ptr<test::Qsd> qsd_;
};

// Writes `count` requests of `len` bytes at sectors base, base + stride, ... with pattern
// seed = sector, then reads each back and compares; also checks the image file.
void write_read_pattern(BlkRequests& io, FrontendQueue& q, std::uint64_t base, int count,
                        std::uint32_t len) {
  const std::uint64_t stride = len / kSectorSize;
  for (int i = 0; i < count; ++i) {
    const std::uint64_t sector = base + i * stride;
    const std::uint64_t w = io.make(kBlkOut, sector, len);
    ASSERT_NE(w, 0u);
    fill_pattern(io.data(w), sector);
    auto st = io.run(q, w);
    ASSERT_TRUE(st) << st.error().message();
    EXPECT_EQ(*st, kBlkStatusOk);
  }
  for (int i = 0; i < count; ++i) {
    const std::uint64_t sector = base + i * stride;
    const std::uint64_t r = io.make(kBlkIn, sector, len);
    ASSERT_NE(r, 0u);
    auto st = io.run(q, r);
    ASSERT_TRUE(st) << st.error().message();
    EXPECT_EQ(*st, kBlkStatusOk);
    EXPECT_EQ(first_mismatch(io.data(r), sector), -1) << "sector " << sector;
  }
}

TEST_F(QsdTest, NegotiatesAndReadsCapacityFromConfigSpace) {
  start_qsd();
  auto guest = make_guest();
  auto fe = Frontend::Connect(config(guest.get()));
  ASSERT_TRUE(fe) << fe.error().message();
  EXPECT_TRUE((*fe)->features().has(kVirtioFVersion1));
  EXPECT_TRUE((*fe)->features().has(kVirtioFRingEventIdx));
  EXPECT_FALSE((*fe)->features().has(kVirtioFAccessPlatform));
  EXPECT_FALSE((*fe)->backend_features().has(kVirtioFAccessPlatform));
  EXPECT_TRUE((*fe)->backend_features().has(kVhostUserFProtocolFeatures));
  EXPECT_TRUE((*fe)->protocol_features().has(kProtocolFReplyAck));
  EXPECT_EQ((*fe)->ops_kind(), dma::OpsKind::kDirect);
  // virtio-blk config: u64 capacity in 512-byte sectors at offset 0.
  auto cfg = (*fe)->read_config(0, 8);
  ASSERT_TRUE(cfg) << cfg.error().message();
  std::uint64_t capacity = 0;
  std::memcpy(&capacity, cfg->data(), 8);
  EXPECT_EQ(capacity, kImageBytes / kSectorSize);
  // An access past the end of config space is refused before it is sent.
  EXPECT_EQ((*fe)->read_config(250, 8).error(), FrontendErrc::kInvalidConfig);
}

TEST_F(QsdTest, SplitWriteReadRoundTrip) {
  start_qsd();
  auto guest = make_guest();
  auto fe = Frontend::Connect(config(guest.get()));
  ASSERT_TRUE(fe) << fe.error().message();
  BlkRequests io(*guest);
  FrontendQueue& q = (*fe)->queue(0);
  write_read_pattern(io, q, 0, 8, 4096);
  write_read_pattern(io, q, 1000, 4, 512);
  write_read_pattern(io, q, 4096, 2, 64 * 1024);
  const std::uint64_t f = io.make(kBlkFlush, 0, 0);
  auto st = io.run(q, f);
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(*st, kBlkStatusOk);
  // qsd wrote through to the image file itself.
  auto bytes = image_bytes(1000 * kSectorSize, 512);
  EXPECT_EQ(first_mismatch(bytes, 1000), -1);
}

TEST_F(QsdTest, MemoryTableWithoutMemSlotsProtocolFeature) {
  start_qsd();
  auto guest = make_guest();
  FrontendConfig c = config(guest.get());
  c.protocol_features = kDefaultProtocolFeatures.without(kProtocolFConfigureMemSlots);
  auto fe = Frontend::Connect(c);
  ASSERT_TRUE(fe) << fe.error().message();
  EXPECT_FALSE((*fe)->protocol_features().has(kProtocolFConfigureMemSlots));
  BlkRequests io(*guest);
  write_read_pattern(io, (*fe)->queue(0), 64, 4, 4096);
}

TEST_F(QsdTest, WithoutReplyAckOrIndirect) {
  start_qsd();
  auto guest = make_guest();
  FrontendConfig c = config(guest.get());
  c.device_features = {};
  c.protocol_features = ProtocolFeatureSet{kProtocolFConfig};
  auto fe = Frontend::Connect(c);
  ASSERT_TRUE(fe) << fe.error().message();
  EXPECT_FALSE((*fe)->features().has(kVirtioFRingIndirectDesc));
  BlkRequests io(*guest);
  write_read_pattern(io, (*fe)->queue(0), 128, 3, 8192);
}

TEST_F(QsdTest, PackedIsRefusedBecauseQsdDoesNotOfferIt) {
  start_qsd();
  auto guest = make_guest();
  FrontendConfig c = config(guest.get());
  c.layout = RingLayout::kPacked;
  c.queue_size = 100;  // packed sizes need not be powers of two
  auto fe = Frontend::Connect(c);
  ASSERT_FALSE(fe);
  EXPECT_EQ(fe.error(), FrontendErrc::kPackedNotOffered) << fe.error().message();
}

TEST_F(QsdTest, MultiQueue) {
  start_qsd(/*queues=*/2);
  auto guest = make_guest();
  FrontendConfig c = config(guest.get());
  c.num_queues = 2;
  auto fe = Frontend::Connect(c);
  ASSERT_TRUE(fe) << fe.error().message();
  ASSERT_TRUE((*fe)->protocol_features().has(kProtocolFMq));
  ASSERT_EQ((*fe)->num_queues(), 2u);
  BlkRequests io(*guest);
  write_read_pattern(io, (*fe)->queue(0), 0, 4, 4096);
  write_read_pattern(io, (*fe)->queue(1), 2048, 4, 4096);
  // Cross-check: what queue 1 wrote, queue 0 reads.
  const std::uint64_t r = io.make(kBlkIn, 2048, 4096);
  auto st = io.run((*fe)->queue(0), r);
  ASSERT_TRUE(st);
  EXPECT_EQ(first_mismatch(io.data(r), 2048), -1);
}

TEST_F(QsdTest, MoreQueuesThanOfferedAreRefused) {
  start_qsd(/*queues=*/2);
  auto guest = make_guest();
  FrontendConfig c = config(guest.get());
  c.num_queues = 3;
  auto fe = Frontend::Connect(c);
  ASSERT_FALSE(fe);
  EXPECT_EQ(fe.error(), FrontendErrc::kTooManyQueues);
}

TEST_F(QsdTest, SecureGuestIsRefusedWithoutAccessPlatform) {
  start_qsd();
  auto guest = make_guest(dma::kSecureGuest);
  auto fe = Frontend::Connect(config(guest.get()));
  ASSERT_FALSE(fe);
  EXPECT_EQ(fe.error(), dma::Errc::kAccessPlatformRequired) << fe.error().message();
}

TEST_F(QsdTest, IommuPlatformIsRefusedWithoutAccessPlatform) {
  start_qsd();
  for (dma::Platform p : {dma::kIommuPlatform, dma::kSecureGuestWithIommu}) {
    auto guest = make_guest(p);
    auto fe = Frontend::Connect(config(guest.get()));
    ASSERT_FALSE(fe) << dma::platform_name(p);
    EXPECT_EQ(fe.error(), dma::Errc::kAccessPlatformRequired) << dma::platform_name(p);
  }
  // qsd still serves a traditional guest after the refusals.
  auto guest = make_guest();
  auto fe = Frontend::Connect(config(guest.get()));
  ASSERT_TRUE(fe) << fe.error().message();
}

TEST_F(QsdTest, BadSocketPathIsAClearError) {
  auto guest = make_guest();
  FrontendConfig c = config(guest.get());
  c.socket_path = dir_.path() + "/nobody-listens.sock";
  auto fe = Frontend::Connect(c);
  ASSERT_FALSE(fe);
  EXPECT_EQ(fe.error(), std::errc::no_such_file_or_directory);
}

// Kill qsd with writes in flight, start a new one on the same socket and image, reconnect,
// resubmit what the front end hands back: every write acknowledged before the kill and
// after it is on the image.
TEST_F(QsdTest, ReconnectAfterKillLosesNoAcknowledgedWrite) {
  start_qsd();
  auto guest = make_guest();
  FrontendConfig c = config(guest.get());
  c.reconnect.timeout = 10s;
  auto fe = Frontend::Connect(c);
  ASSERT_TRUE(fe) << fe.error().message();
  FrontendQueue& q = (*fe)->queue(0);
  BlkRequests io(*guest);
  constexpr std::uint32_t kLen = 8192;
  constexpr std::uint64_t kStride = kLen / kSectorSize;
  std::set<std::uint64_t> acked_sectors;
  auto complete = [&](const virtq::UsedBuffer& u) {
    auto& r = io.get(u.token);
    EXPECT_EQ(*r.status, kBlkStatusOk) << "sector " << r.sector;
    if (*r.status == kBlkStatusOk) acked_sectors.insert(r.sector);
  };

  // Phase 1: some writes acknowledged before the kill.
  for (int i = 0; i < 8; ++i) {
    const std::uint64_t t = io.make(kBlkOut, i * kStride, kLen);
    fill_pattern(io.data(t), i * kStride + 1);
    ASSERT_TRUE(io.run(q, t));
    complete({t, 1});
  }
  // Phase 2: a batch in flight, then the daemon dies.
  std::vector<std::uint64_t> batch;
  for (int i = 8; i < 136; ++i) {  // 128 in flight: the whole ring (indirect)
    const std::uint64_t t = io.make(kBlkOut, i * kStride, kLen);
    fill_pattern(io.data(t), i * kStride + 1);
    ASSERT_TRUE(io.submit(q, t));
    batch.push_back(t);
  }
  ASSERT_TRUE(q.kick());
  // Kill at the first completion signal, leaving the daemon mid-batch (its used entries
  // are drained by reconnect(), the rest handed back for resubmission).
  ASSERT_TRUE(q.wait_call(5s));
  qsd_->kill();
  // The front end notices (hang-up watch): waiting for a call reports the disconnect. The
  // used entries are left for reconnect() to drain.
  Result<bool> w = true;
  for (int i = 0; i < 100 && w; ++i) w = q.wait_call(50ms);
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error(), FrontendErrc::kDisconnected);
  EXPECT_FALSE((*fe)->connected());
  EXPECT_EQ(q.kick().error(), FrontendErrc::kDisconnected);

  // Phase 3: a new daemon on the same socket and image; reconnect and resubmit.
  start_qsd();
  auto rec = (*fe)->reconnect();
  ASSERT_TRUE(rec) << rec.error().message();
  ASSERT_EQ(rec->size(), 1u);
  for (const auto& u : (*rec)[0].completed) complete(u);
  std::set<std::uint64_t> handed_back;
  for (const auto& u : (*rec)[0].completed) handed_back.insert(u.token);
  for (std::uint64_t t : (*rec)[0].resubmit) handed_back.insert(t);
  for (std::uint64_t t : batch) {
    if (acked_sectors.count(io.get(t).sector) == 0) {
      EXPECT_EQ(handed_back.count(t), 1u) << "token " << t << " lost";
    }
  }
  RecordProperty("completed_by_old_backend", static_cast<int>((*rec)[0].completed.size()));
  RecordProperty("resubmitted", static_cast<int>((*rec)[0].resubmit.size()));
  for (std::uint64_t t : (*rec)[0].resubmit) ASSERT_TRUE(io.submit(q, t));
  ASSERT_TRUE(q.kick());
  auto done = io.wait(q, (*rec)[0].resubmit.size(), 10s);
  ASSERT_TRUE(done) << done.error().message();
  EXPECT_EQ(done->size(), (*rec)[0].resubmit.size());
  for (const auto& u : *done) complete(u);
  // Phase 4: more writes after the reconnect.
  for (int i = 136; i < 144; ++i) {
    const std::uint64_t t = io.make(kBlkOut, i * kStride, kLen);
    fill_pattern(io.data(t), i * kStride + 1);
    auto st = io.run(q, t);
    ASSERT_TRUE(st) << st.error().message();
    complete({t, 1});
  }
  EXPECT_EQ(acked_sectors.size(), 144u);
  // Every acknowledged write is on the image, read straight from the file.
  for (std::uint64_t sector : acked_sectors) {
    auto bytes = image_bytes(sector * kSectorSize, kLen);
    EXPECT_EQ(first_mismatch(bytes, sector + 1), -1) << "sector " << sector;
  }
}

}  // namespace
}  // namespace vdma::vhost

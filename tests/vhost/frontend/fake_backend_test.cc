// The front end against a hand-written back end (fake_backend.h): what it shares on each
// platform (the secure guest's RAM never leaves the process), negotiation refusals, the
// IOTLB traffic of the IOMMU profile, back-end channel requests, and replies a hostile
// back end garbles.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

#include "fake_backend.h"
#include "qsd.h"
#include "vdma/dma/errors.h"
#include "vdma/vhost/frontend.h"

namespace vdma::vhost {
namespace {

using namespace std::chrono_literals;
using test::FakeBackend;
using test::FakeOptions;
using test::Garbage;

struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  friend bool operator==(const FileId&, const FileId&) = default;
};

FileId file_id(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
  return {st.st_dev, st.st_ino, st.st_size};
}

// The inode backing the mapping that contains `p` (/proc/self/maps), or 0.
ino_t mapped_inode(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::istringstream in(line);
    std::string range, perms, offset, dev;
    unsigned long inode = 0;
    in >> range >> perms >> offset >> dev >> inode;
    const auto dash = range.find('-');
    const auto lo = std::stoull(range.substr(0, dash), nullptr, 16);
    const auto hi = std::stoull(range.substr(dash + 1), nullptr, 16);
    if (a >= lo && a < hi) return static_cast<ino_t>(inode);
  }
  return 0;
}

class FakeBackendTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(dir_.ok()); }

  std::unique_ptr<FakeBackend> start(FakeOptions o = {}) {
    auto be = std::make_unique<FakeBackend>(socket(), std::move(o));
    EXPECT_TRUE(be->ok());
    return be;
  }
  std::string socket() const { return dir_.path() + "/fake.sock"; }

  std::unique_ptr<dma::Guest> make_guest(dma::Platform p) {
    auto g = dma::Guest::Create({.platform = p,
                                 .ram_bytes = 8ull << 20,
                                 .coherent_bytes = 1ull << 20,
                                 .bounce_bytes = 4ull << 20});
    EXPECT_TRUE(g) << g.error().message();
    return g ? std::move(*g) : nullptr;
  }

  FrontendConfig config(dma::Guest* g) {
    return FrontendConfig{.socket_path = socket(),
                          .guest = g,
                          .device_features = {kVirtioFRingIndirectDesc, kVirtioFRingEventIdx},
                          .queue_size = 64,
                          .reply_timeout = 2s};
  }

  test::TempDir dir_;
};

// ---------------------------------------------------------------------------------------
// Memory sharing per platform.

struct SharingCase {
  const char* name;
  bool mem_slots;  // ADD_MEM_REG instead of SET_MEM_TABLE
};

class SecureGuestSharing : public FakeBackendTest,
                           public ::testing::WithParamInterface<SharingCase> {};

// The secure guest's RAM is never among the descriptors the back end receives: compare
// every received fd (memory, eventfds, the back-end socket) by device, inode and size with
// the RAM mapping, and the memory fds with the bounce and coherent pools' memfds.
TEST_P(SecureGuestSharing, RamNeverReachesTheBackEnd) {
  FakeOptions o;
  if (GetParam().mem_slots) o.protocol.set(kProtocolFConfigureMemSlots);
  auto be = start(o);
  auto guest = make_guest(dma::kSecureGuest);
  auto fe = Frontend::Connect(config(guest.get()));
  ASSERT_TRUE(fe) << fe.error().message();
  EXPECT_EQ((*fe)->ops_kind(), dma::OpsKind::kBounce);
  EXPECT_TRUE((*fe)->features().has(kVirtioFAccessPlatform));           // with the device
  EXPECT_FALSE((*fe)->backend_features().has(kVirtioFAccessPlatform));  // no IOTLB here
  EXPECT_EQ(
      be->count(GetParam().mem_slots ? FrontendRequest::kAddMemReg : FrontendRequest::kSetMemTable),
      GetParam().mem_slots ? 2u : 1u);

  const FileId coherent = file_id(*guest->coherent().backing->shareable_fd());
  const FileId bounce = file_id(*guest->bounce_pool()->backing->shareable_fd());
  EXPECT_FALSE(guest->ram().backing->shareable_fd());  // private: no fd at all
  const ino_t ram_inode = mapped_inode(guest->ram().host);
  ASSERT_NE(ram_inode, 0u);
  std::vector<FileId> memory;
  for (const auto& fd : be->fds()) {
    EXPECT_NE(fd.ino, ram_inode) << request_name(fd.request);
    EXPECT_NE(fd.size, static_cast<off_t>(guest->ram().size)) << request_name(fd.request);
    if (fd.request == FrontendRequest::kSetMemTable || fd.request == FrontendRequest::kAddMemReg) {
      memory.push_back({fd.dev, fd.ino, fd.size});
    }
  }
  ASSERT_EQ(memory.size(), 2u);
  EXPECT_TRUE((memory[0] == coherent && memory[1] == bounce) ||
              (memory[0] == bounce && memory[1] == coherent));
  // The table describes exactly the two pools, at their GPAs and user addresses.
  const auto regions = be->regions();
  ASSERT_EQ(regions.size(), 2u);
  std::set<std::uint64_t> gpas{regions[0].guest_addr, regions[1].guest_addr};
  EXPECT_EQ(gpas, (std::set<std::uint64_t>{guest->coherent().gpa.value(),
                                           guest->bounce_pool()->gpa.value()}));
  for (const auto& r : regions) {
    EXPECT_NE(r.guest_addr, guest->ram().gpa.value());
    EXPECT_EQ(r.mmap_offset, 0u);
  }
  // Ring addresses are user addresses inside the shared coherent pool.
  const auto lo = reinterpret_cast<std::uintptr_t>(guest->coherent().host);
  for (const auto& a : be->vring_addrs()) {
    for (std::uint64_t x : {a.desc_user_addr, a.avail_user_addr, a.used_user_addr}) {
      EXPECT_GE(x, lo);
      EXPECT_LT(x, lo + guest->coherent().size);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tables, SecureGuestSharing,
                         ::testing::Values(SharingCase{"set_mem_table", false},
                                           SharingCase{"add_mem_reg", true}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST_F(FakeBackendTest, TraditionalSharesRamAndCoherentPool) {
  auto be = start();
  auto guest = make_guest(dma::kTraditional);
  auto fe = Frontend::Connect(config(guest.get()));
  ASSERT_TRUE(fe) << fe.error().message();
  EXPECT_FALSE((*fe)->features().has(kVirtioFAccessPlatform));  // the platform needs none
  std::set<std::uint64_t> gpas;
  for (const auto& r : be->regions()) gpas.insert(r.guest_addr);
  EXPECT_EQ(gpas,
            (std::set<std::uint64_t>{guest->ram().gpa.value(), guest->coherent().gpa.value()}));
  const FileId ram = file_id(*guest->ram().backing->shareable_fd());
  bool ram_sent = false;
  for (const auto& fd : be->fds()) ram_sent |= fd.ino == ram.ino && fd.dev == ram.dev;
  EXPECT_TRUE(ram_sent);
}

// ---------------------------------------------------------------------------------------
// Negotiation refusals.

TEST_F(FakeBackendTest, RefusalsAreClearErrors) {
  auto guest = make_guest(dma::kTraditional);
  struct Case {
    const char* name;
    std::function<void(FakeOptions&, FrontendConfig&)> setup;
    std::error_code expected;
  };
  const std::vector<Case> cases{
      {"no VERSION_1", [](FakeOptions& o, FrontendConfig&) { o.features.clear(kVirtioFVersion1); },
       FrontendErrc::kVersion1NotOffered},
      {"required feature",
       [](FakeOptions&, FrontendConfig& c) { c.required_features = {Feature{5}}; },
       FrontendErrc::kRequiredFeatureMissing},
      {"packed not offered",
       [](FakeOptions&, FrontendConfig& c) { c.layout = RingLayout::kPacked; },
       FrontendErrc::kPackedNotOffered},
      {"no MQ",
       [](FakeOptions& o, FrontendConfig& c) {
         o.protocol.clear(kProtocolFMq);
         c.num_queues = 2;
       },
       FrontendErrc::kMultiQueueUnsupported},
      {"no protocol features",
       [](FakeOptions& o, FrontendConfig& c) {
         o.features.clear(kVhostUserFProtocolFeatures);
         c.num_queues = 2;
       },
       FrontendErrc::kMultiQueueUnsupported},
      {"too many queues", [](FakeOptions&, FrontendConfig& c) { c.num_queues = 5; },
       FrontendErrc::kTooManyQueues},
      {"queue size above the back end's",
       [](FakeOptions&, FrontendConfig& c) { c.queue_size = 2048; }, FrontendErrc::kRequestRefused},
      {"too many memory slots",
       [](FakeOptions& o, FrontendConfig&) {
         o.protocol.set(kProtocolFConfigureMemSlots);
         o.max_mem_slots = 1;
       },
       FrontendErrc::kTooManyRegions},
      {"split size not a power of two", [](FakeOptions&, FrontendConfig& c) { c.queue_size = 100; },
       FrontendErrc::kInvalidConfig},
  };
  for (const Case& k : cases) {
    FakeOptions o;
    FrontendConfig c = config(guest.get());
    k.setup(o, c);
    auto be = start(o);
    auto fe = Frontend::Connect(c);
    ASSERT_FALSE(fe) << k.name;
    EXPECT_EQ(fe.error(), k.expected) << k.name << ": " << fe.error().message();
  }
}

TEST_F(FakeBackendTest, IommuProfileNeedsBackendChannelAndReplyAck) {
  auto guest = make_guest(dma::kIommuPlatform);
  for (ProtocolFeature missing : {kProtocolFReplyAck, kProtocolFBackendReq}) {
    FakeOptions o;
    o.protocol.clear(missing);
    auto be = start(o);
    auto fe = Frontend::Connect(config(guest.get()));
    ASSERT_FALSE(fe);
    EXPECT_EQ(fe.error(), FrontendErrc::kIotlbUnsupported);
  }
  FakeOptions o;
  o.features.clear(kVirtioFAccessPlatform);
  auto be = start(o);
  auto fe = Frontend::Connect(config(guest.get()));
  ASSERT_FALSE(fe);
  EXPECT_EQ(fe.error(), dma::Errc::kAccessPlatformRequired);
}

TEST_F(FakeBackendTest, PackedRingHandshake) {
  FakeOptions o;
  o.features.set(kVirtioFRingPacked);
  auto be = start(o);
  auto guest = make_guest(dma::kTraditional);
  FrontendConfig c = config(guest.get());
  c.layout = RingLayout::kPacked;
  c.queue_size = 100;
  auto fe = Frontend::Connect(c);
  ASSERT_TRUE(fe) << fe.error().message();
  EXPECT_TRUE((*fe)->features().has(kVirtioFRingPacked));
  const auto bases = be->vring_bases();
  ASSERT_EQ(bases.size(), 1u);
  EXPECT_EQ(bases[0].num, 0x8000u);  // index 0, avail wrap counter 1
  ASSERT_EQ(be->vring_addrs().size(), 1u);
}

// ---------------------------------------------------------------------------------------
// IOMMU profile: IOTLB updates, invalidations and misses.

// True if some update in `msgs` maps [iova, iova + len) to user address `uaddr`.
bool covered(const std::vector<IotlbMsg>& msgs, std::uint64_t iova, std::uint64_t len,
             std::uint64_t uaddr) {
  for (const auto& m : msgs) {
    if (m.type != IotlbType::kUpdate) continue;
    if (iova >= m.iova && iova + len <= m.iova + m.size && m.user_addr + (iova - m.iova) == uaddr) {
      return true;
    }
  }
  return false;
}

TEST_F(FakeBackendTest, IommuProfilePushesUpdatesAndInvalidations) {
  auto be = start();
  auto guest = make_guest(dma::kIommuPlatform);
  auto fe = Frontend::Connect(config(guest.get()));
  ASSERT_TRUE(fe) << fe.error().message();
  EXPECT_EQ((*fe)->ops_kind(), dma::OpsKind::kIommu);
  EXPECT_TRUE((*fe)->backend_features().has(kVirtioFAccessPlatform));
  // The rings were mapped through the IOMMU after the memory table went out: every ring
  // address is an IOVA the back end got an update for, pointing into the coherent pool.
  const auto addrs = be->vring_addrs();
  ASSERT_EQ(addrs.size(), 1u);
  const auto msgs = be->iotlb();
  for (std::uint64_t iova :
       {addrs[0].desc_user_addr, addrs[0].avail_user_addr, addrs[0].used_user_addr}) {
    auto t = guest->iommu()->translate(Iova{iova}, 1, memory::Access::kRead);
    ASSERT_TRUE(t);
    auto host = guest->memory().translate(Gpa{t->target}, 1);
    ASSERT_TRUE(host);
    EXPECT_TRUE(covered(msgs, iova, 1, reinterpret_cast<std::uintptr_t>(host->data())));
  }
  // A streaming mapping: an update before map() returns, an invalidation before unmap()
  // returns.
  std::byte* buf = *guest->alloc_ram(8192);
  auto m = (*fe)->dma_ops().map(buf, 8192, dma::Direction::kToDevice);
  ASSERT_TRUE(m) << m.error().message();
  const auto after_map = be->iotlb();
  ASSERT_FALSE(after_map.empty());
  EXPECT_EQ(after_map.back().perm, IotlbPerm::kRead);
  EXPECT_TRUE(
      covered(after_map, m->dma_addr().value(), 8192, reinterpret_cast<std::uintptr_t>(buf)));
  const std::uint64_t iova = m->dma_addr().value();
  ASSERT_TRUE(m->unmap());
  const auto after_unmap = be->iotlb();
  ASSERT_EQ(after_unmap.size(), after_map.size() + 1);
  EXPECT_EQ(after_unmap.back().type, IotlbType::kInvalidate);
  EXPECT_LE(after_unmap.back().iova, iova);
  EXPECT_GE(after_unmap.back().iova + after_unmap.back().size, iova + 8192);
  EXPECT_GE((*fe)->iotlb_counters().updates, 4u);
  EXPECT_EQ((*fe)->iotlb_counters().invalidations, 1u);
}

TEST_F(FakeBackendTest, IotlbMissesAreAnsweredFromTheIommu) {
  auto be = start();
  auto guest = make_guest(dma::kIommuPlatform);
  auto fe = Frontend::Connect(config(guest.get()));
  ASSERT_TRUE(fe) << fe.error().message();
  std::byte* buf = *guest->alloc_ram(3 * 4096);
  auto m = (*fe)->dma_ops().map(buf + 100, 3 * 4096 - 200, dma::Direction::kFromDevice);
  ASSERT_TRUE(m);
  const std::size_t before = be->iotlb().size();
  // A miss in the middle of the mapping: answered with an update covering it, with the
  // mapping's write permission (the back end asked for write).
  const std::uint64_t miss = m->dma_addr().value() + 5000;
  auto ack = be->backend_request(
      BackendRequest::kIotlbMsg,
      IotlbMsg{.iova = miss, .perm = IotlbPerm::kWrite, .type = IotlbType::kMiss});
  ASSERT_TRUE(ack) << ack.error().message();
  EXPECT_EQ(*ack, 0u);
  const auto msgs = be->iotlb();
  ASSERT_EQ(msgs.size(), before + 1);
  EXPECT_EQ(msgs.back().type, IotlbType::kUpdate);
  EXPECT_EQ(msgs.back().perm, IotlbPerm::kWrite);
  EXPECT_TRUE(covered(msgs, miss, 1, reinterpret_cast<std::uintptr_t>(buf + 5000 + 100)));
  // From the missed page to the end of the contiguous mapping (pages 1 and 2 of 3).
  EXPECT_EQ(msgs.back().iova, miss & ~std::uint64_t{4095});
  EXPECT_EQ(msgs.back().size, 2u * 4096);
  // A read miss on a write-only mapping, and a miss on an unmapped IOVA: nothing is sent.
  for (IotlbMsg bad :
       {IotlbMsg{.iova = miss, .perm = IotlbPerm::kRead, .type = IotlbType::kMiss},
        IotlbMsg{.iova = 0x1000, .perm = IotlbPerm::kRead, .type = IotlbType::kMiss}}) {
    ack = be->backend_request(BackendRequest::kIotlbMsg, bad);
    ASSERT_TRUE(ack);
    EXPECT_EQ(*ack, 0u);
  }
  EXPECT_EQ(be->iotlb().size(), before + 1);
  EXPECT_EQ((*fe)->iotlb_counters().misses, 3u);
}

TEST_F(FakeBackendTest, SecureGuestWithIommuSharesPoolsAndUsesIotlb) {
  auto be = start();
  auto guest = make_guest(dma::kSecureGuestWithIommu);
  auto fe = Frontend::Connect(config(guest.get()));
  ASSERT_TRUE(fe) << fe.error().message();
  EXPECT_EQ((*fe)->ops_kind(), dma::OpsKind::kBounceViaIommu);
  EXPECT_TRUE((*fe)->backend_features().has(kVirtioFAccessPlatform));
  std::set<std::uint64_t> gpas;
  for (const auto& r : be->regions()) gpas.insert(r.guest_addr);
  EXPECT_EQ(gpas, (std::set<std::uint64_t>{guest->coherent().gpa.value(),
                                           guest->bounce_pool()->gpa.value()}));
  // The pools were mapped at Guest creation, before any connection: the back end learns
  // the ring's translation by a miss.
  const auto a = be->vring_addrs().at(0);
  auto ack = be->backend_request(
      BackendRequest::kIotlbMsg,
      IotlbMsg{.iova = a.desc_user_addr, .perm = IotlbPerm::kRead, .type = IotlbType::kMiss});
  ASSERT_TRUE(ack);
  const auto msgs = be->iotlb();
  ASSERT_FALSE(msgs.empty());
  auto t = guest->iommu()->translate(Iova{a.desc_user_addr}, 1, memory::Access::kRead);
  ASSERT_TRUE(t);
  auto host = guest->memory().translate(Gpa{t->target}, 1);
  EXPECT_TRUE(covered(msgs, a.desc_user_addr, 1, reinterpret_cast<std::uintptr_t>(host->data())));
  EXPECT_EQ(msgs.back().perm, IotlbPerm::kReadWrite);
}

// Data-path threads map and unmap concurrently; every IOTLB message is acked in turn.
TEST_F(FakeBackendTest, IotlbConcurrencyFromDataPathThreads) {
  auto be = start();
  auto guest = make_guest(dma::kIommuPlatform);
  auto fe = Frontend::Connect(config(guest.get()));
  ASSERT_TRUE(fe) << fe.error().message();
  const std::size_t before = be->iotlb().size();
  constexpr int kThreads = 2, kRounds = 50;
  std::vector<std::byte*> bufs;
  for (int i = 0; i < kThreads; ++i) bufs.push_back(*guest->alloc_ram(4096));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int r = 0; r < kRounds; ++r) {
        auto m = (*fe)->dma_ops().map(bufs[i], 4096, dma::Direction::kBidirectional);
        if (!m || !m->unmap()) failures.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(be->iotlb().size(), before + 2 * kThreads * kRounds);
}

// ---------------------------------------------------------------------------------------
// Back-end channel.

TEST_F(FakeBackendTest, ConfigSpaceAndConfigChangeNotification) {
  auto be = start();
  auto guest = make_guest(dma::kTraditional);
  std::atomic<int> callbacks{0};
  FrontendConfig c = config(guest.get());
  c.on_config_change = [&] { callbacks.fetch_add(1); };
  auto fe = Frontend::Connect(c);
  ASSERT_TRUE(fe) << fe.error().message();
  auto bytes = (*fe)->read_config(16, 4);
  ASSERT_TRUE(bytes) << bytes.error().message();
  EXPECT_EQ(*bytes, (std::vector<std::uint8_t>{16, 17, 18, 19}));
  const std::uint8_t wce = 1;
  EXPECT_TRUE((*fe)->write_config(20, std::span(&wce, 1)));
  auto ack = be->backend_request(BackendRequest::kConfigChangeMsg, NoPayload{});
  ASSERT_TRUE(ack) << ack.error().message();
  EXPECT_EQ(*ack, 0u);
  EXPECT_EQ((*fe)->config_changes(), 1u);
  EXPECT_EQ(callbacks.load(), 1);
  // Requests this front end does not negotiate are refused, and it keeps serving.
  ack = be->backend_request(BackendRequest::kVringCall, VringState{0, 0});
  ASSERT_TRUE(ack);
  EXPECT_NE(*ack, 0u);
  EXPECT_TRUE((*fe)->connected());
}

TEST_F(FakeBackendTest, HostileBackendChannelDoesNotHurtTheMainConnection) {
  auto be = start();
  auto guest = make_guest(dma::kTraditional);
  auto fe = Frontend::Connect(config(guest.get()));
  ASSERT_TRUE(fe) << fe.error().message();
  // An unknown request number (a whole, well-framed message): refused, channel kept.
  const Header unknown{99, kVersion1 | kFlagNeedReply, 0};
  ASSERT_TRUE(be->backend_raw(&unknown, sizeof(unknown)));
  auto ack = be->backend_request(BackendRequest::kConfigChangeMsg, NoPayload{});
  ASSERT_TRUE(ack) << ack.error().message();
  EXPECT_EQ(*ack, 0u);
  // A header announcing an oversized payload: the back-end channel is closed...
  const Header huge{2, kVersion1, 1u << 30};
  ASSERT_TRUE(be->backend_raw(&huge, sizeof(huge)));
  // ... and the main connection still works.
  EXPECT_TRUE((*fe)->read_config(0, 8));
  EXPECT_TRUE((*fe)->connected());
}

TEST_F(FakeBackendTest, StalledBackendChannelMessageIsDroppedNotWaitedFor) {
  auto be = start();
  auto guest = make_guest(dma::kTraditional);
  FrontendConfig c = config(guest.get());
  c.reply_timeout = 100ms;
  {
    auto fe = Frontend::Connect(c);
    ASSERT_TRUE(fe) << fe.error().message();
    const Header h{2, kVersion1 | kFlagNeedReply, 0};
    ASSERT_TRUE(be->backend_raw(&h, 5));  // 5 of 12 header bytes, then nothing
    std::this_thread::sleep_for(300ms);
    EXPECT_TRUE((*fe)->read_config(0, 8));
    EXPECT_TRUE((*fe)->connected());
    // The back-end channel was given up: a whole request now goes unanswered.
    auto ack = be->backend_request(BackendRequest::kConfigChangeMsg, NoPayload{});
    EXPECT_FALSE(ack);
  }  // destruction does not wait on the stalled message
}

// ---------------------------------------------------------------------------------------
// Garbage replies.

struct GarbageCase {
  const char* name;
  FrontendRequest on;
  Garbage garbage;
  std::error_code expected;
};

class GarbageReply : public FakeBackendTest, public ::testing::WithParamInterface<GarbageCase> {};

TEST_P(GarbageReply, ConnectFailsCleanlyAndClosesTheConnection) {
  const GarbageCase& g = GetParam();
  FakeOptions o;
  o.garbage_on = g.on;
  o.garbage = g.garbage;
  auto be = start(o);
  auto guest = make_guest(dma::kTraditional);
  FrontendConfig c = config(guest.get());
  c.reply_timeout = 200ms;
  auto fe = Frontend::Connect(c);
  ASSERT_FALSE(fe);
  EXPECT_EQ(fe.error(), g.expected) << fe.error().message();
  // The front end closed its end: the back end sees EOF.
  EXPECT_TRUE(be->wait_until([&] { return be->saw_eof(); }));
}

INSTANTIATE_TEST_SUITE_P(
    Replies, GarbageReply,
    ::testing::Values(GarbageCase{"wrong_request", FrontendRequest::kGetFeatures,
                                  Garbage::kWrongRequest, Errc::kReplyMismatch},
                      GarbageCase{"short_payload", FrontendRequest::kGetFeatures,
                                  Garbage::kShortPayload, Errc::kSizeMismatch},
                      GarbageCase{"no_reply_flag", FrontendRequest::kGetFeatures,
                                  Garbage::kNoReplyFlag, Errc::kMissingReplyFlag},
                      GarbageCase{"huge_size", FrontendRequest::kGetFeatures, Garbage::kHugeSize,
                                  Errc::kPayloadTooLarge},
                      GarbageCase{"bad_version", FrontendRequest::kGetProtocolFeatures,
                                  Garbage::kBadVersion, Errc::kBadVersion},
                      GarbageCase{"unexpected_fd", FrontendRequest::kGetQueueNum,
                                  Garbage::kUnexpectedFd, Errc::kFdCountMismatch},
                      GarbageCase{"silence", FrontendRequest::kGetFeatures, Garbage::kSilence,
                                  FrontendErrc::kReplyTimeout},
                      GarbageCase{"silent_ack", FrontendRequest::kSetVringAddr, Garbage::kSilence,
                                  FrontendErrc::kReplyTimeout},
                      GarbageCase{"partial_header", FrontendRequest::kGetFeatures,
                                  Garbage::kPartialHeader, FrontendErrc::kReplyTimeout},
                      GarbageCase{"partial_payload", FrontendRequest::kGetProtocolFeatures,
                                  Garbage::kPartialPayload, FrontendErrc::kReplyTimeout},
                      GarbageCase{"close", FrontendRequest::kGetFeatures, Garbage::kClose,
                                  Errc::kPeerClosed},
                      GarbageCase{"close_mid_setup", FrontendRequest::kSetVringKick,
                                  Garbage::kClose, Errc::kPeerClosed},
                      GarbageCase{"nack_mem_table", FrontendRequest::kSetMemTable, Garbage::kNack,
                                  FrontendErrc::kRequestRefused},
                      GarbageCase{"nack_features", FrontendRequest::kSetFeatures, Garbage::kNack,
                                  FrontendErrc::kRequestRefused}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(FakeBackendTest, GarbageConfigReplyDisconnects) {
  for (Garbage g : {Garbage::kConfigMismatch, Garbage::kShortPayload, Garbage::kWrongRequest}) {
    FakeOptions o;
    o.garbage_on = FrontendRequest::kGetConfig;
    o.garbage = g;
    auto be = start(o);
    auto guest = make_guest(dma::kTraditional);
    auto fe = Frontend::Connect(config(guest.get()));
    ASSERT_TRUE(fe) << fe.error().message();
    auto r = (*fe)->read_config(0, 8);
    ASSERT_FALSE(r);
    EXPECT_TRUE(be->wait_until([&] { return be->saw_eof(); }));
    // The queue learns it too, and later control calls fail cleanly.
    auto w = (*fe)->queue(0).wait_call(2s);
    ASSERT_FALSE(w);
    EXPECT_EQ(w.error(), FrontendErrc::kDisconnected);
    EXPECT_FALSE((*fe)->read_config(0, 8));
  }
}

TEST_F(FakeBackendTest, GarbageOnShutdownIsSurvived) {
  FakeOptions o;
  o.garbage_on = FrontendRequest::kGetVringBase;
  o.garbage = Garbage::kHugeSize;
  auto be = start(o);
  auto guest = make_guest(dma::kTraditional);
  {
    auto fe = Frontend::Connect(config(guest.get()));
    ASSERT_TRUE(fe) << fe.error().message();
  }  // destruction: GET_VRING_BASE answered with garbage
  EXPECT_TRUE(be->wait_until([&] { return be->saw_eof(); }));
  EXPECT_EQ(be->count(FrontendRequest::kResetDevice), 0u);  // nothing after the garbage
}

TEST_F(FakeBackendTest, OrderlyShutdownStopsRingsThenResets) {
  for (bool reset_device : {true, false}) {
    FakeOptions o;
    if (!reset_device) o.protocol.clear(kProtocolFResetDevice);
    auto be = start(o);
    auto guest = make_guest(dma::kTraditional);
    FrontendConfig c = config(guest.get());
    c.num_queues = 3;
    {
      auto fe = Frontend::Connect(c);
      ASSERT_TRUE(fe) << fe.error().message();
      EXPECT_EQ(be->count(FrontendRequest::kSetVringEnable), 3u);
      EXPECT_EQ(be->count(FrontendRequest::kGetVringBase), 0u);
    }
    ASSERT_TRUE(be->wait_until([&] { return be->saw_eof(); }));
    EXPECT_EQ(be->count(FrontendRequest::kGetVringBase), 3u);
    const auto reqs = be->requests();
    ASSERT_GE(reqs.size(), 2u);
    // The last request: RESET_DEVICE when negotiated, else SET_STATUS 0 (STATUS).
    EXPECT_EQ(reqs.back(),
              reset_device ? FrontendRequest::kResetDevice : FrontendRequest::kSetStatus);
    EXPECT_EQ(reqs[reqs.size() - 2], FrontendRequest::kGetVringBase);
  }
}

// ---------------------------------------------------------------------------------------
// Reconnect.

TEST_F(FakeBackendTest, ReconnectHandsBackEveryOutstandingBuffer) {
  auto be = start();
  auto guest = make_guest(dma::kTraditional);
  FrontendConfig c = config(guest.get());
  c.reconnect.timeout = 300ms;
  auto fe = Frontend::Connect(c);
  ASSERT_TRUE(fe) << fe.error().message();
  FrontendQueue& q = (*fe)->queue(0);
  std::byte* buf = *guest->alloc_ram(16 * 512);
  for (std::uint64_t t = 1; t <= 16; ++t) {
    virtq::Segment s{buf + (t - 1) * 512, 512};
    ASSERT_TRUE(q.add_buffers({}, std::span(&s, 1), t));
  }
  ASSERT_TRUE(q.kick());
  be->stop();  // the back end goes away without completing anything
  auto w = q.wait_call(5s);
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error(), FrontendErrc::kDisconnected);
  // Nobody comes back in time: the buffers stay with the front end...
  auto r = (*fe)->reconnect();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), FrontendErrc::kReconnectTimeout);
  EXPECT_EQ(q.add_buffers({}, {}, 99).error(), FrontendErrc::kDisconnected);
  // ... and are handed back by the reconnect that succeeds.
  be = start();
  r = (*fe)->reconnect();
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_TRUE((*r)[0].completed.empty());
  std::set<std::uint64_t> tokens((*r)[0].resubmit.begin(), (*r)[0].resubmit.end());
  EXPECT_EQ(tokens.size(), 16u);
  EXPECT_EQ(*tokens.begin(), 1u);
  EXPECT_EQ(*tokens.rbegin(), 16u);
  EXPECT_TRUE((*fe)->connected());
  EXPECT_EQ(q.num_free(), 64u);                             // a fresh ring
  EXPECT_EQ(be->count(FrontendRequest::kSetMemTable), 1u);  // memory shared again
  EXPECT_EQ(be->vring_addrs().size(), 1u);
}

TEST_F(FakeBackendTest, ReconnectRefusesChangedFeatures) {
  auto be = start();
  auto guest = make_guest(dma::kTraditional);
  auto fe = Frontend::Connect(config(guest.get()));
  ASSERT_TRUE(fe) << fe.error().message();
  be->stop();
  FakeOptions o;
  o.features.clear(kVirtioFRingEventIdx);
  be = start(o);
  auto r = (*fe)->reconnect();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), FrontendErrc::kFeaturesChanged);
}

}  // namespace
}  // namespace vdma::vhost

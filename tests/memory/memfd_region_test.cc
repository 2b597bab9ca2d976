#include "vdma/memory/memfd_region.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "vdma/base/log.h"
#include "vdma/memory/errors.h"

namespace vdma::memory {
namespace {

TEST(MemfdRegionTest, SharedRegionHandsOutItsFd) {
  auto r = MemfdRegion::Create("test-shared", 2 * kPageSize, RegionKind::kShared);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->size(), 2 * kPageSize);
  auto fd = r->shareable_fd();
  ASSERT_TRUE(fd);
  // Another mapping of the same fd sees our writes: it is what a device process would map.
  auto peer = HostMapping::Map(*fd, 2 * kPageSize, 0, PROT_READ);
  ASSERT_TRUE(peer);
  std::memcpy(r->host() + 100, "virtio", 6);
  EXPECT_EQ(std::memcmp(peer->data() + 100, "virtio", 6), 0);
}

TEST(MemfdRegionTest, SharedRegionIsSealedAgainstShrinking) {
  auto r = MemfdRegion::Create("test-sealed", kPageSize, RegionKind::kShared);
  ASSERT_TRUE(r);
  int fd = *r->shareable_fd();
  // A peer holding the fd cannot truncate it under us.
  EXPECT_NE(::ftruncate(fd, 0), 0);
  EXPECT_EQ(errno, EPERM);
  EXPECT_NE(::fcntl(fd, F_GET_SEALS) & F_SEAL_SHRINK, 0);
}

TEST(MemfdRegionTest, PrivateRegionNeverHandsOutItsFd) {
  ScopedLogCapture logs;
  auto r = MemfdRegion::Create("test-private", 4 * kPageSize, RegionKind::kPrivate);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->shareable_fd().error(), Errc::kPrivateRegion);
  // The region is usable memory either way.
  std::memset(r->host(), 0xab, r->size());
  EXPECT_EQ(r->host()[r->size() - 1], std::byte{0xab});
  // Either memfd_secret backs it, or a log line says why not.
  if (!r->secret()) {
    EXPECT_TRUE(logs.contains("memfd_secret unavailable"));
  }
  EXPECT_EQ(r->secret(), memfd_secret_usable(4 * kPageSize));
}

TEST(MemfdRegionTest, BadSizesAreRejected) {
  EXPECT_EQ(MemfdRegion::Create("z", 0, RegionKind::kShared).error(), Errc::kInvalidArgument);
  EXPECT_EQ(MemfdRegion::Create("odd", 100, RegionKind::kShared).error(), Errc::kInvalidArgument);
  EXPECT_EQ(MemfdRegion::Create("odd", kPageSize + 1, RegionKind::kPrivate).error(),
            Errc::kInvalidArgument);
}

TEST(HostMappingTest, BadArgumentsAreErrors) {
  EXPECT_EQ(HostMapping::Map(-1, kPageSize, 0, PROT_READ).error(),
            std::error_code(EBADF, std::system_category()));
  auto r = MemfdRegion::Create("m", kPageSize, RegionKind::kShared);
  ASSERT_TRUE(r);
  EXPECT_EQ(HostMapping::Map(*r->shareable_fd(), 0, 0, PROT_READ).error(), Errc::kZeroLength);
  EXPECT_EQ(HostMapping::Map(*r->shareable_fd(), kPageSize, 17, PROT_READ).error(),
            Errc::kInvalidArgument);
}

TEST(HostMappingTest, MoveTransfersOwnership) {
  auto r = MemfdRegion::Create("m", kPageSize, RegionKind::kShared);
  ASSERT_TRUE(r);
  HostMapping a = std::move(*HostMapping::Map(*r->shareable_fd(), kPageSize, 0, PROT_READ));
  std::byte* p = a.data();
  HostMapping b = std::move(a);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(b.data(), p);
  HostMapping c;
  c = std::move(b);
  EXPECT_EQ(c.data(), p);
  EXPECT_EQ(c.size(), kPageSize);
}

}  // namespace
}  // namespace vdma::memory

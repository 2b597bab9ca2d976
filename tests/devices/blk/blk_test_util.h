// Block-device test scaffolding: temp images, and chains built over local buffers (the
// device-side view of a request, as a ring's pop() would produce it).
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "vdma/devices/blk/spec.h"
#include "vdma/virtq/types.h"

namespace vdma::blk::test {

// A temp directory with an image file of `bytes` bytes, removed at the end.
struct TempImage {
  explicit TempImage(std::uint64_t bytes = 1 << 20) {
    char tmpl[] = "/tmp/vdma-blk-XXXXXX";
    dir = ::mkdtemp(tmpl);
    path = dir + "/disk.img";
    const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(bytes)), 0);
    ::close(fd);
  }
  ~TempImage() { std::filesystem::remove_all(dir); }

  std::vector<std::uint8_t> read(std::uint64_t offset, std::size_t len) const {
    std::vector<std::uint8_t> out(len);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_EQ(::pread(fd, out.data(), len, static_cast<off_t>(offset)), static_cast<ssize_t>(len));
    ::close(fd);
    return out;
  }
  void write(std::uint64_t offset, const std::vector<std::uint8_t>& data) const {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    EXPECT_EQ(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset)),
              static_cast<ssize_t>(data.size()));
    ::close(fd);
  }
  // Blocks the file occupies on disk (512-byte units), to see punched holes.
  std::uint64_t allocated_sectors() const {
    struct stat st {};
    ::stat(path.c_str(), &st);
    return static_cast<std::uint64_t>(st.st_blocks);
  }

  std::string dir;
  std::string path;
};

// A request laid out in local memory as a chain: readable segments, then writable ones.
// Buffers are owned here; segments point into them.
class TestChain {
 public:
  // Adds a device-readable segment with these bytes.
  TestChain& readable(std::vector<std::uint8_t> bytes) {
    bufs_.push_back(std::move(bytes));
    kinds_.push_back(false);
    return *this;
  }
  // Adds a device-writable segment of `len` bytes (filled with 0xee).
  TestChain& writable(std::size_t len) {
    bufs_.emplace_back(len, 0xee);
    kinds_.push_back(true);
    return *this;
  }
  // The header bytes (16), optionally followed by `extra`.
  static std::vector<std::uint8_t> header(std::uint32_t type, std::uint64_t sector,
                                          std::vector<std::uint8_t> extra = {}) {
    std::vector<std::uint8_t> b(sizeof(OutHdr));
    OutHdr h{type, 0, sector};
    std::memcpy(b.data(), &h, sizeof h);
    return concat(b, extra);
  }
  // a followed by b (no vector::insert: g++ 12 warns falsely on it at -O3).
  static std::vector<std::uint8_t> concat(const std::vector<std::uint8_t>& a,
                                          const std::vector<std::uint8_t>& b) {
    std::vector<std::uint8_t> out(a.size() + b.size());
    std::copy(a.begin(), a.end(), out.begin());
    std::copy(b.begin(), b.end(), out.begin() + static_cast<long>(a.size()));
    return out;
  }
  static std::vector<std::uint8_t> range(std::uint64_t sector, std::uint32_t n,
                                         std::uint32_t flags = 0) {
    std::vector<std::uint8_t> b(sizeof(RangeSeg));
    RangeSeg r{sector, n, flags};
    std::memcpy(b.data(), &r, sizeof r);
    return b;
  }

  virtq::Chain chain(std::uint16_t head = 0) {
    virtq::Chain c;
    c.head = head;
    for (std::size_t i = 0; i < bufs_.size(); ++i) {
      virtq::DeviceSegment s{reinterpret_cast<std::byte*>(bufs_[i].data()),
                             static_cast<std::uint32_t>(bufs_[i].size())};
      if (kinds_[i]) {
        c.writable.push_back(s);
        c.writable_bytes += s.len;
      } else {
        c.readable.push_back(s);
        c.readable_bytes += s.len;
      }
    }
    return c;
  }
  std::vector<std::uint8_t>& buf(std::size_t i) { return bufs_[i]; }
  std::uint8_t status() const { return bufs_.back().back(); }

 private:
  std::vector<std::vector<std::uint8_t>> bufs_;  // never resized after chain()
  std::vector<bool> kinds_;
};

inline std::vector<std::uint8_t> pattern(std::size_t len, std::uint8_t seed) {
  std::vector<std::uint8_t> v(len);
  for (std::size_t i = 0; i < len; ++i) v[i] = static_cast<std::uint8_t>(seed + i * 7 + i / 251);
  return v;
}

}  // namespace vdma::blk::test

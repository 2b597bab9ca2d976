#!/usr/bin/env bash
# Installs the Debian 12 packages virtio-dma needs to build and test, only those missing.
set -euo pipefail

packages=(
  g++ cmake ninja-build pkg-config  # toolchain (g++ brings the ASan/UBSan/TSan runtimes)
  libgtest-dev libgmock-dev         # unit, property, hostile-input and concurrency tests
  libbenchmark-dev                  # Google Benchmark
  libfmt-dev                        # log line formatting
  nlohmann-json3-dev                # machine-readable benchmark and demo output
  liburing-dev                      # virtio-blk back end: asynchronous file I/O
  libcli11-dev                      # the vdma command line
  qemu-system-common                # qemu-storage-daemon: the vhost front end's real peer
  qemu-system-x86 busybox-static    # tests/guest: Linux guests under QEMU (TCG)
  cpio xz-utils                     # tests/guest: initramfs, .ko.xz kernel modules
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"

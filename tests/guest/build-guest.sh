#!/usr/bin/env bash
# Builds (once) the test guest: Debian's 6.1 amd64 kernel and a busybox initramfs whose
# /init is guest-init.sh. Everything lands in a cache directory; later runs reuse it and
# do not touch the network. Safe to run concurrently (flock on the cache).
#
#   tests/guest/build-guest.sh build/release/guest-cache
#   -> build/release/guest-cache/{vmlinuz,initramfs.cpio,seed.bin}
#
# The kernel package is taken with `apt-get download` from the configured Debian mirror
# and unpacked with dpkg-deb, never installed. Override it with VDMA_GUEST_KERNEL_PKG.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${1:?usage: build-guest.sh CACHE_DIR}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

die() {
  echo "build-guest: FAIL: $*" >&2
  exit 1
}

for tool in apt-get dpkg-deb cpio busybox readelf; do
  command -v "$tool" >/dev/null || die "$tool not found (run scripts/install-deps.sh)"
done
busybox_bin=$(readlink -f "$(command -v busybox)")
readelf -l "$busybox_bin" | grep -q INTERP && die "$busybox_bin is dynamically linked; install busybox-static"

exec 9>"$cache/.lock"
flock 9

# Only the files the guest needs are unpacked: the kernel and the virtio modules.
modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk
  failover net_failover virtio_net)

fetch_kernel() {
  local pkg=${VDMA_GUEST_KERNEL_PKG:-}
  if [ -z "$pkg" ]; then
    # The meta package's candidate names the current 6.1 ABI (linux-image-6.1.0-N-amd64).
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
      awk '/Depends: linux-image-6\.1\.[0-9.-]*-amd64$/ {print $2; exit}')
    [ -n "$pkg" ] || die "cannot resolve a linux-image-6.1.*-amd64 package (apt-get update?)"
  fi
  echo "build-guest: downloading $pkg" >&2
  rm -rf "$cache/deb" "$cache/kernel"
  mkdir -p "$cache/deb" "$cache/kernel"
  (cd "$cache/deb" && apt-get download -q "$pkg" >&2) || die "apt-get download $pkg failed"
  local deb
  deb=$(ls "$cache"/deb/*.deb)
  local patterns=('./boot/vmlinuz-*')
  for m in "${modules[@]}"; do patterns+=("*/$m.ko" "*/$m.ko.xz"); done
  dpkg-deb --fsys-tarfile "$deb" |
    tar -x -C "$cache/kernel" --wildcards "${patterns[@]}" 2>/dev/null ||
    true # tar exits non-zero for the .ko/.ko.xz pattern that matches nothing
  rm -rf "$cache/deb"
  compgen -G "$cache/kernel/boot/vmlinuz-*" >/dev/null || die "no vmlinuz in $pkg"
}

if ! compgen -G "$cache/kernel/boot/vmlinuz-*" >/dev/null; then
  fetch_kernel
fi
kernels=("$cache"/kernel/boot/vmlinuz-*)
vmlinuz=${kernels[0]}
ln -sf "$vmlinuz" "$cache/vmlinuz"

# The host-seeded region's content, also in the initramfs as /seed.bin: random bytes with
# every 512-byte sector opening with its stamp, so misplaced data names its origin.
if [ ! -s "$cache/seed.bin" ]; then
  command -v perl >/dev/null || die "perl not found"
  perl -e 'open(my $r, "<", "/dev/urandom") or die;
    for my $s (0 .. 32767) { read($r, my $b, 488) == 488 or die;
      print sprintf("VDMA-SEED sector %06d\n", $s), $b }' >"$cache/seed.bin.tmp"
  mv "$cache/seed.bin.tmp" "$cache/seed.bin"
fi

# Rebuild the initramfs when the init script, this script or the kernel changed.
stamp=$( (sha256sum "$here/guest-init.sh" "$here/build-guest.sh" "$busybox_bin" "$cache/seed.bin" &&
  echo "$vmlinuz") |
  sha256sum | cut -d' ' -f1)
if [ -f "$cache/initramfs.cpio" ] && [ "$(cat "$cache/initramfs.stamp" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi

root="$cache/initramfs.root"
rm -rf "$root"
mkdir -p "$root/bin" "$root/lib/modules" "$root/dev"
cp "$busybox_bin" "$root/bin/busybox"
cp "$here/guest-init.sh" "$root/init"
cp "$cache/seed.bin" "$root/seed.bin"
chmod 755 "$root/init" "$root/bin/busybox"
for m in "${modules[@]}"; do
  ko=$(find "$cache/kernel/lib/modules" \( -name "$m.ko" -o -name "$m.ko.xz" \) 2>/dev/null | head -n1 || true)
  [ -n "$ko" ] || die "module $m not found in the kernel package"
  case "$ko" in
    *.xz) # busybox insmod cannot decompress
      command -v xz >/dev/null || die "xz not found (xz-utils)"
      xz -dc "$ko" >"$root/lib/modules/$m.ko" ;;
    *) cp "$ko" "$root/lib/modules/$m.ko" ;;
  esac
done
# No /dev/console here: the kernel's built-in initramfs (unpacked first) provides it.
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) >"$cache/initramfs.cpio.tmp"
mv "$cache/initramfs.cpio.tmp" "$cache/initramfs.cpio"
echo "$stamp" >"$cache/initramfs.stamp"
rm -rf "$root"
echo "build-guest: kernel $(basename "$vmlinuz"), initramfs $(du -h "$cache/initramfs.cpio" | cut -f1)" >&2

#!/bin/busybox sh
# /init of the test guest's initramfs (busybox only). Loads the virtio modules, runs the
# block workload on /dev/vda and prints one result line that run-guest.sh greps:
#   VDMA-GUEST: RESULT PASS        or        VDMA-GUEST: RESULT FAIL <reason>
# then powers the VM off. The kernel command line may carry
#   vdma_expect=<list>    comma-separated checks: access_platform, swiotlb, iommu
# Image layout in MiB, mb = size of /seed.bin (16): [0,mb) guest writes through the page
# cache; [mb,2mb) the host wrote /seed.bin there, the guest reads it first; [2mb,2mb+1)
# guest writes 4 KiB O_DIRECT blocks.

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null

say() { echo "VDMA-GUEST: $* (t=$(cut -d' ' -f1 /proc/uptime))"; }
finish() {
  say "RESULT $*"
  sync
  poweroff -f
  sleep 5
}
fail() {
  dmesg | tail -n 30
  finish "FAIL $*"
}

mb=$(($(wc -c </seed.bin) / 1048576))
expect=""
# shellcheck disable=SC2013 # words, not lines
for word in $(cat /proc/cmdline); do
  case "$word" in
    vdma_expect=*) expect="${word#vdma_expect=}" ;;
  esac
done

# Dependency order; the harness put decompressed .ko files in /lib/modules.
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
  virtio_blk failover net_failover virtio_net; do
  [ -f "/lib/modules/$m.ko" ] || fail "module $m.ko missing from the initramfs"
  insmod "/lib/modules/$m.ko" || fail "insmod $m failed"
done

i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1))
  [ "$i" -gt 100 ] && fail "no /dev/vda after 10 s"
  sleep 0.1
done
sectors=$(cat /sys/block/vda/size)
say "vda has $sectors sectors"
[ "$sectors" -ge $((mb * 2048 * 2 + 2048)) ] || fail "vda too small for the workload"

# Prove the variant is what it claims to be before trusting a PASS.
features=$(cat /sys/block/vda/device/features)
say "features $features"
for check in $(echo "$expect" | tr ',' ' '); do
  case "$check" in
    access_platform)
      # Bit 33 (VIRTIO_F_ACCESS_PLATFORM): without it virtio bypasses the DMA API entirely.
      [ "$(echo "$features" | cut -c34)" = 1 ] || fail "VIRTIO_F_ACCESS_PLATFORM not negotiated"
      say "ACCESS_PLATFORM negotiated" ;;
    swiotlb)
      # Checked after the workload: the sampler below must have seen bounce slots in use.
      [ -r /sys/kernel/debug/swiotlb/io_tlb_used ] || fail "no swiotlb in the guest"
      sample_swiotlb=1 ;;
    iommu)
      grp=$(readlink /sys/block/vda/device/../iommu_group) || fail "virtio PCI device has no IOMMU group"
      type=$(cat "/sys/kernel/iommu_groups/${grp##*/}/type")
      case "$type" in DMA | DMA-FQ) ;; *) fail "IOMMU group type $type, not translated DMA" ;; esac
      say "behind the IOMMU, group ${grp##*/} type $type" ;;
    *) fail "unknown check $check" ;;
  esac
done

# Samples swiotlb slot use while the workload runs; keeps the high-water mark in a file.
sample_swiotlb=${sample_swiotlb:-0}
sampler() {
  max=0
  while [ ! -e /tmp/stop-sampler ]; do
    used=$(cat /sys/kernel/debug/swiotlb/io_tlb_used)
    [ "$used" -gt "$max" ] && max=$used && echo "$max" >/tmp/swiotlb-max
    usleep 2000
  done
}
if [ "$sample_swiotlb" = 1 ]; then
  echo 0 >/tmp/swiotlb-max
  sampler &
fi

# Says where GOT differs from WANT (sectors of 512 bytes, relative to the region): how
# many, the first ranges of bad sectors, and what each range's first sector holds (a seed
# stamp names the sector the data came from).
explain() {
  bad=$(cmp -l "$1" "$2" 2>/dev/null | head -n 2000000 |
    awk 'BEGIN { p = -2 }
      { s = int(($1 - 1) / 512)
        if (s == p) next
        n++
        if (s != p + 1) {
          if (nr && nr <= 6) ranges = ranges "-" p
          if (++nr <= 6) { ranges = ranges " " s; first = first " " s }
        }
        p = s }
      END { if (nr && nr <= 6) ranges = ranges "-" p; print n + 0, nr + 0, ranges "|" first }')
  echo "$bad" | {
    read -r count nranges rest
    ranges=${rest%%|*}
    printf '%s' "$count bad sectors in $nranges ranges:$ranges"
    for sec in ${rest#*|}; do
      head=$(dd if="$2" bs=512 skip="$sec" count=1 2>/dev/null | head -c 23)
      nonzero=$(dd if="$2" bs=512 skip="$sec" count=1 2>/dev/null | tr -d '\000' | wc -c)
      case "$head" in
        VDMA-SEED*) printf '%s' "; sector $sec holds '${head#VDMA-SEED }'" ;;
        *) if [ "$nonzero" = 0 ]; then printf '%s' "; sector $sec holds zeros"; else
          printf '%s' "; sector $sec holds $(dd if="$2" bs=512 skip="$sec" count=1 2>/dev/null |
            hexdump -n 8 -e '8/1 "%02x"')..."; fi ;;
      esac
    done
    echo
  }
}

# 1. Read data the host wrote before boot (/seed.bin, also in this initramfs: every
#    sector starts with its stamp "VDMA-SEED sector NNNNNN").
dd if=/dev/vda of=/tmp/got bs=1M skip="$mb" count="$mb" 2>/dev/null || fail "read of vda failed"
cmp -s /seed.bin /tmp/got || fail "host-seeded region [$mb, $((2 * mb))) MiB differs: $(explain /seed.bin /tmp/got)"
say "seeded region ok"

# 2. Buffered write of a fresh random pattern, flush, drop caches, read back.
dd if=/dev/urandom of=/tmp/pattern bs=1M count="$mb" 2>/dev/null || fail "cannot make pattern"
want=$(sha256sum /tmp/pattern | cut -d' ' -f1)
dd if=/tmp/pattern of=/dev/vda bs=1M conv=fsync 2>/dev/null || fail "write to vda failed"
echo 3 >/proc/sys/vm/drop_caches
dd if=/dev/vda of=/tmp/got bs=1M count="$mb" 2>/dev/null || fail "read of vda failed"
cmp -s /tmp/pattern /tmp/got || fail "written region [0, $mb) MiB reads back wrong: $(explain /tmp/pattern /tmp/got)"
say "written sha256=$want"

# 3. Small O_DIRECT requests: 256 x 4 KiB writes straight from user pages, direct read back.
dd if=/dev/urandom of=/tmp/small bs=4k count=256 2>/dev/null || fail "cannot make small pattern"
want_small=$(sha256sum /tmp/small | cut -d' ' -f1)
dd if=/tmp/small of=/dev/vda bs=4k seek=$((mb * 2 * 256)) oflag=direct 2>/dev/null ||
  fail "O_DIRECT write failed"
dd if=/dev/vda of=/tmp/got bs=4k skip=$((mb * 2 * 256)) count=256 iflag=direct 2>/dev/null ||
  fail "O_DIRECT read failed"
cmp -s /tmp/small /tmp/got || fail "O_DIRECT region reads back wrong: $(explain /tmp/small /tmp/got)"
say "direct sha256=$want_small"

if [ "$sample_swiotlb" = 1 ]; then
  touch /tmp/stop-sampler
  wait
  max=$(cat /tmp/swiotlb-max)
  [ "$max" -gt 0 ] || fail "swiotlb=force, yet no bounce slot was ever in use during the I/O"
  say "swiotlb bounced the I/O, up to $max slots in use"
fi

finish PASS

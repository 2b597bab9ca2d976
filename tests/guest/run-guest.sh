#!/usr/bin/env bash
# Boots the test guest (Debian 6.1 kernel + busybox initramfs, QEMU TCG) against a
# vhost-user-blk back end and checks real I/O end to end. Prints one line
#   guest <variant> on <backend>: PASS|FAIL ...
# and exits 0 only on PASS. Every process it starts is killed on exit.
#
#   tests/guest/run-guest.sh --variant plain --backend vdma --vdma build/release/tools/vdma \
#       --cache build/release/guest-cache --work /tmp/guest-plain
#
# Variants (see README.md for what each proves):
#   plain    pc machine, vhost-user-blk-pci
#   swiotlb  + swiotlb=force in the guest, disable-legacy=on,iommu_platform=on
#   iommu    q35 + intel-iommu (intremap, device-iotlb), iommu_platform=on,ats=on
# Back ends: vdma (`vdma blk`, path in --vdma), qsd (qemu-storage-daemon 7.2) or qemu
# (QEMU's built-in virtio-blk-pci, no vhost-user: checks the guest side of a variant).
# --expect-refusal: QEMU must refuse to start the device (qsd lacks ACCESS_PLATFORM).
# --append 'ARGS': more kernel arguments (e.g. loglevel=7 to see the kernel's messages).
# --device-opts 'k=v,...': more properties for the virtio-blk device (e.g. packed=on).
# --timeout S: QEMU's time limit (default 120).
# Environment: VDMA_LOG is passed to the vdma back end (debug logs every request);
# VDMA_BLK_ARGS adds arguments to `vdma blk` (e.g. "--engine threads").
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
variant="" backend="" vdma="" cache="" work="" expect_refusal=0 timeout_s=120 more_args=""
dev_opts=""

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" >&2
  exit 2
}
while (($#)); do
  case "$1" in
    --variant) variant=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --vdma) vdma=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --append) more_args=$2; shift 2 ;;
    --device-opts) dev_opts=$2; shift 2 ;;
    --expect-refusal) expect_refusal=1; shift ;;
    *) usage ;;
  esac
done
if [ -z "$variant" ] || [ -z "$backend" ] || [ -z "$cache" ] || [ -z "$work" ]; then usage; fi
name="guest $variant on $backend"

fail() {
  echo "$name: FAIL: $*"
  for log in qemu.log console.log backend.log; do
    [ -s "$work/$log" ] || continue
    echo "---- last lines of $work/$log"
    tail -n 40 "$work/$log"
  done
  exit 1
}

# ---- prerequisites: missing tools are a failure, never a skip
qemu=$(command -v qemu-system-x86_64) || fail "qemu-system-x86_64 not found (scripts/install-deps.sh)"
case "$backend" in
  vdma) [ -x "$vdma" ] || fail "vdma binary '$vdma' not found (build the vdma target)" ;;
  qsd) command -v qemu-storage-daemon >/dev/null || fail "qemu-storage-daemon not found" ;;
  qemu) ;;
  *) usage ;;
esac
"$here/build-guest.sh" "$cache" || fail "cannot build the guest kernel/initramfs cache"

rm -rf "$work"
mkdir -p "$work"
work=$(cd "$work" && pwd)
sock="$work/vhost.sock"
image="$work/disk.img"

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

# ---- disk image: 3*mb + 1 MiB (layout in guest-init.sh), seed.bin at [mb, 2mb) MiB
mb=$(($(stat -c %s "$cache/seed.bin") / 1048576))
truncate -s $(((3 * mb + 1) * 1024 * 1024)) "$image"
dd if="$cache/seed.bin" of="$image" bs=1M seek="$mb" conv=notrunc status=none
seed=$(sha256sum <"$cache/seed.bin" | cut -d' ' -f1)

# ---- back end
case "$backend" in
  vdma)
    # shellcheck disable=SC2086 # VDMA_BLK_ARGS: extra words on purpose
    "$vdma" blk --socket-path "$sock" --image "$image" ${VDMA_BLK_ARGS:-} 2>"$work/backend.log" &
    ;;
  qsd)
    qemu-storage-daemon --blockdev "driver=file,node-name=f,filename=$image" \
      --export "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=$sock,writable=on" \
      >"$work/backend.log" 2>&1 &
    ;;
  qemu) sleep 3600 & ;; # a stand-in, so the liveness checks below hold for every back end
esac
backend_pid=$!
pids+=("$backend_pid")
for _ in $(seq 100); do
  [ "$backend" = qemu ] || [ -S "$sock" ] && break
  kill -0 "$backend_pid" 2>/dev/null || fail "back end exited before listening"
  sleep 0.1
done
[ "$backend" = qemu ] || [ -S "$sock" ] || fail "back end did not create $sock within 10 s"

# ---- QEMU
# no_timer_check: under TCG on a loaded host the IO-APIC timer check can fail and panic.
append="console=ttyS0 panic=-1 loglevel=4 no_timer_check"
machine="pc,accel=tcg,memory-backend=mem"
dev="vhost-user-blk-pci,chardev=vu0,num-queues=1"
backend_args=(-chardev "socket,id=vu0,path=$sock")
if [ "$backend" = qemu ]; then
  dev="virtio-blk-pci,drive=d0,num-queues=1"
  backend_args=(-blockdev "driver=file,node-name=d0,filename=$image,cache.direct=off")
fi
extra=()
case "$variant" in
  plain) ;;
  swiotlb)
    append+=" swiotlb=force vdma_expect=access_platform,swiotlb"
    dev+=",disable-legacy=on,iommu_platform=on"
    ;;
  iommu)
    # iommu.strict=1: Linux's default lazy mode (DMA-FQ) flushes whole domains, and QEMU
    # 7.2 forwards no domain flush to a vhost-user back end's IOTLB (it sent none), so
    # reused IOVAs kept their old translation and the guest crashed. Strict mode unmaps
    # with page invalidations, which QEMU forwards as IOTLB_MSG invalidations.
    append+=" intel_iommu=on iommu.strict=1 vdma_expect=access_platform,iommu"
    machine="q35,accel=tcg,kernel-irqchip=split,memory-backend=mem"
    extra=(-device "intel-iommu,intremap=on,device-iotlb=on")
    dev+=",disable-legacy=on,iommu_platform=on,ats=on"
    ;;
  *) usage ;;
esac
append+=" $more_args"
[ -z "$dev_opts" ] || dev+=",$dev_opts"

start_ms=$(($(date +%s%N) / 1000000))
timeout --kill-after=5 "$timeout_s" "$qemu" -nodefaults -no-user-config -machine "$machine" \
  -m 512M -smp 1 -object memory-backend-memfd,id=mem,size=512M,share=on \
  "${extra[@]}" "${backend_args[@]}" -device "$dev" \
  -kernel "$cache/vmlinuz" -initrd "$cache/initramfs.cpio" -append "$append" \
  -display none -monitor none -serial file:"$work/console.log" -no-reboot \
  >"$work/qemu.log" 2>&1 &
qemu_pid=$!
pids+=("$qemu_pid")
# Watch both: a back end that dies or drops the connection leaves the guest waiting for
# I/O until the time limit, so stop QEMU at once and say why.
early=""
while kill -0 "$qemu_pid" 2>/dev/null; do
  if ! kill -0 "$backend_pid" 2>/dev/null; then
    early="the back end exited while the guest ran"
  elif [ "$backend" = vdma ] &&
    grep -v 'front end closed the connection' "$work/backend.log" | grep -q 'msg="connection closed'; then
    early="the back end closed the connection: $(grep -o 'connection closed: [^"]*' "$work/backend.log" | head -n1)"
  fi
  if [ -n "$early" ]; then
    sleep 1 # let QEMU print its side of the story
    kill -TERM "$qemu_pid" 2>/dev/null || true
    break
  fi
  sleep 0.5
done
qemu_rc=0
wait "$qemu_pid" || qemu_rc=$?
elapsed_ms=$(($(date +%s%N) / 1000000 - start_ms))
elapsed="$((elapsed_ms / 1000)).$((elapsed_ms % 1000 / 100))"

# Stop the back end now (SIGTERM: a clean exit) so its exit status and anything a
# sanitizer prints at exit (leaks) count too.
backend_alive=1 backend_rc=0
kill -0 "$backend_pid" 2>/dev/null || backend_alive=0
kill -TERM "$backend_pid" 2>/dev/null || true
for _ in $(seq 100); do kill -0 "$backend_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$backend_pid" 2>/dev/null && fail "the back end did not exit within 10 s of SIGTERM"
wait "$backend_pid" || backend_rc=$?
pids=() # both reaped: nothing left for cleanup to kill
if grep -qE 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:' "$work/backend.log" 2>/dev/null; then
  fail "sanitizer report in the back end's log"
fi
if [ "$backend" = vdma ] && ((backend_alive && backend_rc != 0)); then
  fail "the back end exited with $backend_rc after SIGTERM"
fi

if ((expect_refusal)); then
  ((qemu_rc != 0)) || fail "QEMU started the device; it should have refused it (rc 0)"
  grep -q 'iommu_platform=true is not supported by the device' "$work/qemu.log" ||
    fail "QEMU failed (rc $qemu_rc) but not with the expected ACCESS_PLATFORM refusal"
  echo "$name: PASS (QEMU refused: $(grep -o 'iommu_platform=true is not supported by the device' \
    "$work/qemu.log" | head -n1); ${elapsed} s)"
  exit 0
fi

[ -z "$early" ] || fail "$early"
((qemu_rc != 124 && qemu_rc != 137)) || fail "QEMU timed out after $timeout_s s"
((qemu_rc == 0)) || fail "QEMU exited with $qemu_rc"
((backend_alive)) || fail "the back end died during the run"
grep -q '^VDMA-GUEST: RESULT PASS' "$work/console.log" ||
  fail "guest: $(grep -a '^VDMA-GUEST: RESULT' "$work/console.log" || echo 'no result line')"

# ---- host-side check: the image holds what the guest wrote
want=$(grep -ao '^VDMA-GUEST: written sha256=[0-9a-f]*' "$work/console.log" | cut -d= -f2)
want_small=$(grep -ao '^VDMA-GUEST: direct sha256=[0-9a-f]*' "$work/console.log" | cut -d= -f2)
got=$(dd if="$image" bs=1M count="$mb" status=none | sha256sum | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "image region [0,$mb) MiB has sha256 $got, guest wrote $want"
got=$(dd if="$image" bs=4k skip=$((mb * 2 * 256)) count=256 status=none | sha256sum | cut -d' ' -f1)
[ "$got" = "$want_small" ] || fail "image O_DIRECT region has sha256 $got, guest wrote $want_small"
got=$(dd if="$image" bs=1M skip="$mb" count="$mb" status=none | sha256sum | cut -d' ' -f1)
[ "$got" = "$seed" ] || fail "the host-seeded region changed"

checks=$(grep -a '^VDMA-GUEST: ' "$work/console.log" | grep -avE 'RESULT|features|sha256' |
  sed 's/^VDMA-GUEST: //' | tr -d '\r' | paste -sd ';' -)
echo "$name: PASS (${elapsed} s; $checks)"

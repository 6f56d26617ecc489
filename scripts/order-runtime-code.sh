#!/usr/bin/env bash
# Writes cli/runtime-code.order: the functions the runtime verbs of a release `skiff` run,
# in their present address order. cli/build.rs hands the file to the linker
# (`--symbol-ordering-file`), which puts those functions next to each other at the start of
# `.text`: a `skiff-runc run` then maps about 1.6 MiB of code instead of 6 MiB scattered over
# a 32 MB `.text` (docs/runtime.md, "Start-up cost"; figures in docs/benchmarks.md).
#
#   cargo build --release -p skiff && scripts/order-runtime-code.sh   # as root, 1-5 min
#   scripts/order-runtime-code.sh PATH-TO-SKIFF
#
# Then rebuild (`cargo build --release -p skiff` relinks with the new list) and commit the
# list. The names of the previous list that the binary still has are kept (in front): a
# round on a binary already laid out by the list misses some functions that run.
#
# Regenerate after a dependency or toolchain update: the file names functions by their
# mangled names, whose hashes change with crate versions, the compiler and the release
# profile. Names the linker does not find are skipped, so a stale file costs memory, never
# correctness. The binary must keep its symbol table (the release profile does).
#
# How the functions are found (scripts/order-runtime-code.py does the analysis):
# 1. The binary is copied onto a loop-mounted ext4 image whose device has read-ahead off, so
#    a page fault reads exactly one 4 KiB page into the page cache. After the workload below,
#    the copy's cached pages (mincore) are the pages some process touched; every function
#    overlapping a touched `.text` page is a candidate.
# 2. Where the kernel has uprobes (tracefs), one goes at each candidate's entry and the
#    workload runs again: only the candidates that were entered are listed. Without uprobes
#    every candidate is (a list about twice as long).
set -euo pipefail
cd "$(dirname "$0")/.."

skiff=${1:-target/$(rustc --print host-tuple)/release/skiff}
out=cli/runtime-code.order

die() {
    echo "$0: $*" >&2
    exit 1
}
[ "$(id -u)" -eq 0 ] || die "run as root: the workload creates containers"
[ -x "$skiff" ] || die "no skiff binary at $skiff (cargo build --release -p skiff)"
command -v python3 >/dev/null || die "python3 is missing"
[ "$(readelf -SW "$skiff" | grep -c '\.symtab')" -gt 0 ] || die "$skiff has no symbol table"

work=$(mktemp -d /tmp/skiff-order.XXXXXX)
loop=
tracefs=/sys/kernel/tracing
mounted_tracefs=
cleanup() {
    local r
    scripts/order-runtime-code.py unprobe "$work/mnt/skiff" "$work" 2>/dev/null || true
    [ -n "$mounted_tracefs" ] && umount "$tracefs"
    for r in "$work"/state/*/; do
        [ -d "$r" ] && "$work/mnt/bin/skiff-runc" --root "$work/state" delete -f "$(basename "$r")" 2>/dev/null
    done
    mountpoint -q "$work/mnt" && umount "$work/mnt"
    [ -n "$loop" ] && losetup -d "$loop"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scripts/busybox-bundle.sh "$work/true" /bin/true >/dev/null
scripts/busybox-bundle.sh "$work/sleep" /bin/sleep 30 >/dev/null

size=$(($(stat -c %s "$skiff") / 1048576 + 64))
truncate -s "${size}M" "$work/fs.img"
mkfs.ext4 -q "$work/fs.img"
loop=$(losetup --find --show "$work/fs.img")
blockdev --setra 0 "$loop"
mkdir "$work/mnt"
mount "$loop" "$work/mnt"
mkdir "$work/mnt/bin"
cp "$skiff" "$work/mnt/skiff"
ln -s "$work/mnt/skiff" "$work/mnt/bin/skiff-runc"
# unmounting drops the copy's pages from the page cache: from here on, only faults fill it
umount "$work/mnt"
mount "$loop" "$work/mnt"

# The workload: what the agent's shim and runc's callers do with the runtime, on a
# writable mount, so `run`, `create` and `exec` also take the re-exec through a read-only
# mount (CVE-2019-5736).
runc() { "$work/mnt/bin/skiff-runc" --root "$work/state" "$@"; }
workload() {
    local i
    for i in 1 2 3; do
        runc run --bundle "$work/true" "run-$i" </dev/null >/dev/null
    done
    (cd "$work" && runc run -b true run-short </dev/null >/dev/null)
    runc run --detach --bundle "$work/sleep" detached </dev/null >/dev/null
    runc create --bundle "$work/sleep" created </dev/null >/dev/null
    runc state created >/dev/null
    runc start created
    runc exec created /bin/true
    runc ps created >/dev/null
    runc list >/dev/null
    runc pause created
    runc resume created
    runc events --stats created >/dev/null
    runc kill created KILL
    runc delete -f detached
    for i in $(seq 50); do
        runc state created 2>/dev/null | grep -q '"stopped"' && break
        sleep 0.1
    done
    runc delete created
}
workload
helper=scripts/order-runtime-code.py
"$helper" candidates "$work/mnt/skiff" "$skiff" "$work"
if [ ! -e "$tracefs/uprobe_events" ] && [ -d "$tracefs" ] && mount -t tracefs nodev "$tracefs" 2>/dev/null; then
    mounted_tracefs=1
fi
if [ -e "$tracefs/uprobe_events" ] && "$helper" probe "$work/mnt/skiff" "$skiff" "$work"; then
    workload
    "$helper" unprobe "$work/mnt/skiff" "$work"
else
    echo "no uprobes: listing every candidate" >&2
fi
"$helper" write "$work" "$out" "$skiff"

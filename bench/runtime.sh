#!/usr/bin/env bash
# Container start-up benchmark: the same busybox `/bin/true` bundle run by `skiff-runc run`
# (installed on a read-only mount, and from a writable path), `runc run` and `crun run`, one
# after the other, as root.
#
#   bench/runtime.sh                  # RUNS=50 WARMUP=5 TIME_RUNS=30
#   RUNS=20 TIME_RUNS=10 bench/runtime.sh
#   PROFILE=perf bench/runtime.sh     # build and measure target/<host tuple>/perf/skiff instead
#   SKIFF=path/to/skiff bench/runtime.sh   # measure this binary, build nothing
#
# Prints, per runtime: median wall time and mean CPU time user+sys (hyperfine, which reads
# rusage in microseconds), peak RSS (GNU time's %M over TIME_RUNS runs: the largest resident
# set of the runtime and of every process it waited for), and the ratios to crun. GNU time's
# own %U/%S are kept in the raw data but not used: they have 10 ms steps. A runtime that cannot run the bundle is reported and left out; the
# others are still measured. Raw data: target/bench/ (hyperfine JSON and CSV, GNU time).
#
# crun refuses hybrid cgroup hosts (v1 controllers plus a v2 hierarchy) while any
# controller is still attached to v2. Only while crun is measured, this script binds those
# controllers (e.g. hugetlb) to a private v1 mount and unmounts it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-50}
WARMUP=${WARMUP:-5}
TIME_RUNS=${TIME_RUNS:-30}
OUT=${OUT:-target/bench}
PROFILE=${PROFILE:-release}
SKIFF=${SKIFF:-}

die() {
    echo "$0: $*" >&2
    exit 1
}
[ "$(id -u)" -eq 0 ] || die "run as root: containers need namespaces, mounts and cgroups"
command -v hyperfine >/dev/null || die "hyperfine is missing: apt-get install hyperfine"
[ -x /usr/bin/time ] || die "GNU time is missing: apt-get install time"

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    . "$HOME/.cargo/env"
fi
if [ -z "$SKIFF" ]; then
    cargo build --profile "$PROFILE" -p skiff
    SKIFF=target/$(rustc --print host-tuple)/$PROFILE/skiff
fi
[ -x "$SKIFF" ] || die "no skiff binary at $SKIFF"
SKIFF=$(cd "$(dirname "$SKIFF")" && pwd)/$(basename "$SKIFF")

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
work=$(mktemp -d /tmp/skiff-bench.XXXXXX)
v1_mounts=()

unbind_v2_controllers() {
    local m
    for m in "${v1_mounts[@]}"; do
        umount "$m" || echo "warning: cannot unmount $m" >&2
    done
    v1_mounts=()
}
ro_mounted=0
cleanup() {
    unbind_v2_controllers
    if [ "$ro_mounted" = 1 ]; then
        umount "$work/ro" || echo "warning: cannot unmount $work/ro" >&2
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# On a hybrid host, attach every controller still on the v2 hierarchy to a v1 mount.
bind_v2_controllers() {
    local unified=/sys/fs/cgroup/unified c
    [ -f "$unified/cgroup.controllers" ] || return 0
    for c in $(cat "$unified/cgroup.controllers"); do
        mkdir -p "$work/cgroup-$c"
        if mount -t cgroup -o "$c" cgroup "$work/cgroup-$c"; then
            v1_mounts+=("$work/cgroup-$c")
        else
            echo "warning: cannot bind the $c controller to cgroup v1" >&2
        fi
    done
}

scripts/busybox-bundle.sh "$work/bundle" /bin/true >/dev/null
# skiff twice: as `skiff install` lays it out (skiff-ro: the binary's directory is a read-only
# bind mount of itself, so the runtime starts once), and from a writable path such as a
# build's target/ (skiff-rw: create and run re-execute it through a private read-only mount
# first, CVE-2019-5736)
mkdir "$work/bin" "$work/ro"
ln -s "$SKIFF" "$work/bin/skiff-runc"
cp "$SKIFF" "$work/ro/skiff"
ln -s skiff "$work/ro/skiff-runc"
mount --bind -o ro "$work/ro" "$work/ro"
ro_mounted=1

names=(skiff-ro skiff-rw runc crun)
declare -A exe=(
    [skiff-ro]="$work/ro/skiff-runc"
    [skiff-rw]="$work/bin/skiff-runc"
    [runc]="$(command -v runc || true)"
    [crun]="$(command -v crun || true)"
)
declare -A median_ms cpu_ms rss_kib failed

measure() {
    local name=$1 bin=${exe[$1]} root="$work/state-$1" err="$work/probe-$1.err"
    if [ -z "$bin" ]; then
        failed[$name]="not installed"
        return
    fi
    if ! "$bin" --root "$root" run --bundle "$work/bundle" "probe-$name" </dev/null >/dev/null 2>"$err"; then
        failed[$name]="cannot run the bundle: $(grep -v '^\s*$' "$err" | tail -n 3 | tr '\n' ' ')"
        "$bin" --root "$root" delete -f "probe-$name" >/dev/null 2>&1 || true
        return
    fi
    # The container id is the id of the shell hyperfine starts for each run: unique, and a
    # failed run cannot block the next one. hyperfine subtracts the shell's own start-up.
    hyperfine --warmup "$WARMUP" --runs "$RUNS" --command-name "$name run" \
        --export-json "$OUT/hyperfine-$name.json" --export-csv "$work/hyperfine-$name.csv" \
        "$bin --root $root run --bundle $work/bundle b-\$\$" >&2
    median_ms[$name]=$(awk -F, 'NR == 2 { printf "%.1f", $4 * 1000 }' "$work/hyperfine-$name.csv")
    cpu_ms[$name]=$(awk -F, 'NR == 2 { printf "%.1f", ($5 + $6) * 1000 }' "$work/hyperfine-$name.csv")

    local times="$OUT/time-$name.txt" i
    : >"$times"
    for i in $(seq "$TIME_RUNS"); do
        /usr/bin/time -f '%e %U %S %M' -a -o "$times" \
            "$bin" --root "$root" run --bundle "$work/bundle" "t-$i" </dev/null >/dev/null 2>&1 ||
            echo "warning: $name run $i failed" >&2
    done
    rss_kib[$name]=$(awk '$4 > m { m = $4 } END { print m + 0 }' "$times")
}

for name in "${names[@]}"; do
    echo "== $name" >&2
    if [ "$name" = crun ]; then
        bind_v2_controllers
        measure "$name"
        unbind_v2_controllers
    else
        measure "$name"
    fi
done

ratio() {
    local a=${1:-} b=${2:-}
    if [ -n "$a" ] && [ -n "$b" ]; then
        awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'
    else
        echo n/a
    fi
}

# How much of cli/runtime-code.order (the runtime verbs' functions, laid out together) the
# binary has: a list gone stale with a dependency or toolchain update shows up here.
code_order() {
    local list=cli/runtime-code.order found
    [ -f "$list" ] || { echo "no $list"; return; }
    if ! readelf -SW "$SKIFF" | grep -q '\.symtab'; then
        echo "unknown (the binary has no symbol table)"
        return
    fi
    found=$(nm --defined-only "$SKIFF" | awk 'NR == FNR { want[$1] = 1; next } ($3 in want) { print $3 }' "$list" - | sort -u | wc -l)
    echo "$found of $(wc -l <"$list") functions of $list found in the binary"
}

summary="$OUT/summary.txt"
{
    echo "skiff: $SKIFF"
    echo "runtime code order: $(code_order)"
    echo "busybox /bin/true bundle; hyperfine --warmup $WARMUP --runs $RUNS; peak RSS: GNU time over $TIME_RUNS runs"
    echo "host: $(uname -r), $(nproc) CPUs; runc: $(${exe[runc]:-false} --version 2>/dev/null | head -n 1); crun: $(${exe[crun]:-false} --version 2>/dev/null | head -n 1)"
    printf '%-11s %15s %18s %13s %10s %9s\n' runtime "median wall ms" "mean user+sys ms" "peak RSS KiB" "wall/crun" "cpu/crun"
    for name in "${names[@]}"; do
        if [ -n "${failed[$name]:-}" ]; then
            printf '%-11s %s\n' "$name" "FAILED: ${failed[$name]}"
            continue
        fi
        printf '%-11s %15s %18s %13s %10s %9s\n' "$name" "${median_ms[$name]}" "${cpu_ms[$name]}" \
            "${rss_kib[$name]}" "$(ratio "${median_ms[$name]}" "${median_ms[crun]:-}")" \
            "$(ratio "${cpu_ms[$name]}" "${cpu_ms[crun]:-}")"
    done
} | tee "$summary"

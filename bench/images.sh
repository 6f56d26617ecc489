#!/usr/bin/env bash
# Image benchmark, as root, against one local registry (Debian's docker-registry on
# loopback) and one image (busybox-static plus /usr/lib/python3.11 as a ~50 MB layer):
#
#   1. pull + unpack: `skiff image pull` (into an empty store) versus
#      `skopeo copy docker://… oci:…` + `umoci unpack` (into empty dirs);
#   2. run: `skiff run --rm IMAGE /bin/true` with the image present, and `podman run --rm`
#      (and with `--network none`) when podman is installed.
#
#   bench/images.sh            # RUNS=10 RUN_RUNS=30
# Raw data: target/bench/images-*.json (hyperfine).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-10}
RUN_RUNS=${RUN_RUNS:-30}
OUT=${OUT:-target/bench}
die() { echo "$0: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root"
for t in hyperfine docker-registry skopeo umoci; do
    command -v "$t" >/dev/null || die "$t is missing (apt-get install hyperfine docker-registry skopeo umoci)"
done
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
cargo build --release -p skiff
skiff=$(pwd)/target/$(rustc --print host-tuple)/release/skiff
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)

work=$(mktemp -d /tmp/skiff-imgbench.XXXXXX)
reg_pid=
cleanup() {
    [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null || true
    "$skiff" rm --root "$work/store" -f $( "$skiff" ps --root "$work/store" -a 2>/dev/null | awk 'NR>1{print $1}') >/dev/null 2>&1 || true
    grep -o "$work[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# a registry on a free loopback port
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
log: {level: error}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

# the image: busybox in one layer, ~50 MB of python stdlib in another
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc"
cp /bin/busybox "$work/rootfs/bin/"
for a in sh true cat ls; do ln -s busybox "$work/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$work/rootfs/etc/passwd"
echo 'root:x:0:' > "$work/rootfs/etc/group"
umoci init --layout "$work/layout" >/dev/null
umoci new --image "$work/layout:latest" >/dev/null
umoci insert --image "$work/layout:latest" "$work/rootfs" / >/dev/null
umoci insert --image "$work/layout:latest" /usr/lib/python3.11 /usr/lib/python3.11 >/dev/null
umoci config --image "$work/layout:latest" --config.cmd /bin/sh >/dev/null
image=127.0.0.1:$port/bench/python:latest
skopeo copy -q --insecure-policy --dest-tls-verify=false "oci:$work/layout:latest" "docker://$image"
size=$(du -sh "$work/layout/blobs" | cut -f1)
echo "image $image ($size compressed)"

hyperfine --warmup 1 --runs "$RUNS" --export-json "$OUT/images-pull.json" \
    --prepare "rm -rf $work/store $work/oci $work/bundle" \
    -n "skiff image pull" "$skiff image --root $work/store pull -q $image" \
    -n "skopeo copy + umoci unpack" \
    "skopeo copy -q --insecure-policy --src-tls-verify=false docker://$image oci:$work/oci:latest && umoci unpack --image $work/oci:latest $work/bundle >/dev/null"

"$skiff" image --root "$work/store" pull -q "$image" >/dev/null
runs=(-n "skiff run --rm" "$skiff run --root $work/store --rm $image /bin/true")
if command -v podman >/dev/null; then
    podman pull -q --tls-verify=false "$image" >/dev/null
    runs+=(-n "podman run --rm" "podman run --rm $image /bin/true"
           -n "podman run --rm --network none" "podman run --rm --network none $image /bin/true")
else
    echo "podman is not installed: its figures are not measured in this run"
fi
hyperfine -N --warmup 3 --runs "$RUN_RUNS" --export-json "$OUT/images-run.json" "${runs[@]}"

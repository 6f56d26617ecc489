#!/usr/bin/env bash
# Runs every test of the workspace, the privileged runtime tests included (for real: they
# need root, a static busybox and libseccomp). `scripts/quickstart.sh` installs all that;
# CI (.ci/run) installs it with apt-get and then runs this script.
#
# The runtime tests drive skiff as `skiff-runc`; SKIFF_TEST_RUNTIME=runc runs them against
# another runc-compatible runtime instead. Then the Debian VM test (SKIFF_VM=0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    . "$HOME/.cargo/env"
fi
missing=()
command -v cargo >/dev/null 2>&1 || missing+=("cargo (Rust)")
[ -x /bin/busybox ] || missing+=("/bin/busybox (busybox-static)")
pkg-config --exists libseccomp 2>/dev/null || missing+=("libseccomp (libseccomp-dev, pkg-config)")
for tool in docker-registry skopeo umoci htpasswd; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool (image tests)")
done
command -v protoc >/dev/null 2>&1 || missing+=("protoc (protobuf-compiler, builds etcd-client)")
[ -f /usr/include/google/protobuf/descriptor.proto ] ||
    missing+=("protobuf's well-known .proto files (libprotobuf-dev, builds etcd-client)")
command -v etcd >/dev/null 2>&1 || missing+=("etcd (etcd-server, etcd store tests)")
for tool in nft conntrack ip; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool (nftables, conntrack, iproute2: Service proxy tests)")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "$0: missing: ${missing[*]}; scripts/quickstart.sh installs them" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "$0: the runtime tests create namespaces, mounts and cgroups: run as root" >&2
    exit 1
fi

cargo test --workspace --no-fail-fast "$@"

# The Debian VM test (tests/vm/run.sh): skiff installed on a real systemd machine with pure
# cgroup v2 under QEMU, after the workspace's tests passed. It installs what it needs
# (debootstrap, qemu-system-x86) and builds its image once (cached in /var/cache/skiff-vm).
# Skipped with SKIFF_VM=0, and when arguments narrow the cargo run above.
if [ $# -eq 0 ] && [ "${SKIFF_VM:-1}" != 0 ]; then
    tests/vm/run.sh
fi

#!/usr/bin/env bash
# From a fresh Debian/Ubuntu machine to a container run by skiff, as root:
# installs the build dependencies (and Rust with rustup if cargo is missing), builds skiff,
# installs /usr/local/bin/skiff and the /usr/local/bin/skiff-runc symlink, builds a busybox
# bundle and runs it with `skiff-runc run`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "$0: run as root: skiff creates namespaces, mounts and cgroups" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
    build-essential pkg-config libseccomp-dev busybox-static ca-certificates curl \
    docker-registry skopeo umoci apache2-utils protobuf-compiler nftables conntrack iproute2

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    . "$HOME/.cargo/env"
fi

cargo build --release -p skiff
install -m 0755 target/release/skiff /usr/local/bin/skiff
ln -sf skiff /usr/local/bin/skiff-runc

bundle=$(mktemp -d /tmp/skiff-quickstart.XXXXXX)
trap 'rm -rf "$bundle"' EXIT
rmdir "$bundle"
scripts/busybox-bundle.sh "$bundle" /bin/sh -c \
    'echo "hello from a busybox container run by skiff"; echo "hostname: $(hostname), pid: $$, uid: $(id -u)"; echo "mounts: $(wc -l < /proc/self/mounts)"' \
    >/dev/null
/usr/local/bin/skiff-runc --root /run/skiff-quickstart run --bundle "$bundle" "quickstart-$$"

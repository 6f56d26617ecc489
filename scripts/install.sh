#!/usr/bin/env bash
# Installs skiff on this machine as systemd services: a thin wrapper over `skiff install`
# (docs/install.md). Usage, as root:
#   scripts/install.sh [PATH-TO-SKIFF] [skiff install options…]
# PATH-TO-SKIFF defaults to target/<host tuple>/release/skiff, then …/debug/skiff of this
# checkout (.cargo/config.toml builds for the host tuple, `rustc --print host-tuple`).
# A worker joins a master with: scripts/install.sh --server https://MASTER:6443 --token T --ca-file ca.crt
set -euo pipefail
cd "$(dirname "$0")/.."
bin=
if [ $# -gt 0 ] && [ -x "$1" ] && [ -f "$1" ]; then
    bin=$1
    shift
fi
host=$(rustc --print host-tuple 2>/dev/null || true)
for candidate in "target/$host/release/skiff" "target/$host/debug/skiff"; do
    [ -n "$bin" ] || { [ -x "$candidate" ] && bin=$candidate; }
done
[ -n "$bin" ] || { echo "$0: no skiff binary: build it (cargo build --release -p skiff) or give its path" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "$0: run as root (it writes /usr/local/bin, /etc and starts services)" >&2; exit 1; }
exec "$bin" install "$@"

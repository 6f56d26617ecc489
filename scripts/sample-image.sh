#!/usr/bin/env bash
# Builds the sample web image offline from the host's static busybox and imports it into a
# node's image store (the agent's --root-dir): `skiff.local/sample-web:1` runs busybox httpd
# on port 8080, serving a page that names the pod (its hostname).
#
#   scripts/sample-image.sh [ROOT_DIR] [IMAGE]     (defaults: /var/lib/skiff skiff.local/sample-web:1)
set -euo pipefail

root=${1:-/var/lib/skiff}
image=${2:-skiff.local/sample-web:1}
skiff=${SKIFF:-skiff}

for tool in umoci "$skiff"; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is missing" >&2; exit 1; }
done

work=$(mktemp -d /tmp/skiff-sample-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
layout=$work/layout
umoci init --layout "$layout"
umoci new --image "$layout:1"
umoci unpack --image "$layout:1" "$work/bundle" >/dev/null
scripts_dir=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work/bundle/rootfs"
"$scripts_dir/busybox-bundle.sh" "$work/bb" >/dev/null
mv "$work/bb/rootfs" "$work/bundle/rootfs"
cat > "$work/bundle/rootfs/bin/sample-web" <<'SCRIPT'
#!/bin/sh
# the sample web app: a page naming the pod, served by busybox httpd
mkdir -p /www
echo "hello from $(hostname)" > /www/index.html
exec httpd -f -v -p "${PORT:-8080}" -h /www
SCRIPT
chmod 0755 "$work/bundle/rootfs/bin/sample-web"
umoci repack --image "$layout:1" "$work/bundle" >/dev/null
umoci config --image "$layout:1" --config.cmd /bin/sample-web \
    --config.exposedports 8080/tcp --config.workingdir /
"$skiff" image --root "$root" import "$layout" --name "$image"

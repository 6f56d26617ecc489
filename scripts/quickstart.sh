#!/usr/bin/env bash
# From a fresh Debian/Ubuntu machine to a one-node skiff cluster serving a sample web app, as
# root: installs the packages (and Rust with rustup if cargo is missing), builds and installs
# skiff (/usr/local/bin/skiff and the skiff-runc symlink), starts `skiff up` in the background,
# builds the sample web image offline from busybox-static, applies examples/sample-web.yaml
# (a Deployment of 3 replicas and a NodePort Service) and shows it answering on the NodePort.
# Running it again reuses what is there.
#
# Environment: SKIFF_BIN=PATH installs that binary instead of building one;
# SKIFF_UP_ARGS="..." adds flags to `skiff up` (e.g. --node-ip 10.0.0.5).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "$0: run as root: skiff creates namespaces, mounts, cgroups and nftables rules" >&2
    exit 1
fi
step() { printf '\n==> %s\n' "$*"; }

step "packages"
export DEBIAN_FRONTEND=noninteractive
need=(build-essential pkg-config libseccomp-dev busybox-static ca-certificates curl
    skopeo umoci nftables conntrack iproute2 protobuf-compiler libprotobuf-dev)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi
if ! command -v kubectl >/dev/null 2>&1; then
    # Debian has no kubectl package: the upstream binary, when the machine is online
    v=$(curl -fsSL https://dl.k8s.io/release/stable.txt)
    arch=$(dpkg --print-architecture)
    curl -fsSLo /usr/local/bin/kubectl "https://dl.k8s.io/release/$v/bin/linux/$arch/kubectl"
    chmod 0755 /usr/local/bin/kubectl
fi

step "skiff"
if [ -n "${SKIFF_BIN:-}" ]; then
    bin=$SKIFF_BIN
else
    if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
        . "$HOME/.cargo/env"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        . "$HOME/.cargo/env"
    fi
    cargo build --release -p skiff
    bin=target/$(rustc --print host-tuple)/release/skiff
fi
if ! cmp -s "$bin" /usr/local/bin/skiff; then
    # a running `skiff up` keeps its (unlinked) copy; the new binary takes over at its restart
    install -m 0755 "$bin" /usr/local/bin/skiff.new
    mv -f /usr/local/bin/skiff.new /usr/local/bin/skiff
fi
ln -sf skiff /usr/local/bin/skiff-runc
skiff --version

step "one-node cluster (skiff up)"
data_dir=/var/lib/skiff/master
export KUBECONFIG=$data_dir/admin.kubeconfig
mkdir -p /var/log/skiff
pidfile=/run/skiff-up.pid
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "skiff up is running (pid $(cat "$pidfile"))"
elif [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && command -v systemd-run >/dev/null; then
    systemctl is-active --quiet skiff-up ||
        systemd-run --unit skiff-up --collect -p Delegate=yes -p KillMode=process \
            /usr/local/bin/skiff up --data-dir "$data_dir" ${SKIFF_UP_ARGS:-}
    echo "skiff up runs as the transient unit skiff-up (journalctl -u skiff-up)"
else
    # shellcheck disable=SC2086
    setsid /usr/local/bin/skiff up --data-dir "$data_dir" ${SKIFF_UP_ARGS:-} \
        >>/var/log/skiff/up.log 2>&1 </dev/null &
    echo $! >"$pidfile"
    echo "skiff up started (pid $!, log /var/log/skiff/up.log, stop: kill \$(cat $pidfile))"
fi
for _ in $(seq 120); do
    [ -f "$KUBECONFIG" ] && kubectl wait --for=condition=Ready node --all --timeout=1s \
        >/dev/null 2>&1 && break
    sleep 1
done
kubectl get nodes -o wide
node_ip=$(kubectl get nodes \
    -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')

step "sample web image (built offline from busybox-static)"
scripts/sample-image.sh /var/lib/skiff skiff.local/sample-web:1

step "sample web app: Deployment (3 replicas) + NodePort Service"
kubectl apply -f examples/sample-web.yaml
kubectl rollout status deploy/sample-web --timeout=180s
kubectl get pods -l app=sample-web -o wide
kubectl get svc sample-web

step "curl http://$node_ip:30080/"
for _ in $(seq 30); do curl -sf -m 2 "http://$node_ip:30080/" >/dev/null && break; sleep 1; done
for _ in 1 2 3 4 5 6 7 8 9; do curl -s -m 3 "http://$node_ip:30080/"; done

step "inside the cluster: http://sample-web/ through cluster DNS"
kubectl exec deploy/sample-web -- wget -qO- http://sample-web/

cat <<DONE

The cluster runs. Next:
  export KUBECONFIG=$KUBECONFIG
  kubectl get pods -o wide
  kubectl scale deploy/sample-web --replicas=5
  curl http://$node_ip:30080/
DONE

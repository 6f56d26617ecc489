#!/usr/bin/env bash
# The Debian VM test: skiff on a real machine with systemd and cgroup v2 (issue 8).
#
# Builds (once; cached) a Debian 12 "bookworm" minbase disk image with debootstrap, boots it
# under QEMU with the guest's own kernel and initrd, shares the host-built `skiff` binary,
# kubectl, a busybox image and the runtime's test binaries over 9p (read-only), and inside the
# guest, over ssh:
#   1. `skiff install` (the README's install path): both units must become `active`;
#   2. the runtime's privileged tests (runtime/tests/*, cli/tests/runtime_cli.rs and
#      runtime_security.rs) run as root;
#   3. the one-node cluster runs a pod with CPU and memory limits, and the limits are read back
#      from the pod's cgroup v2 files (`cpu.max`, `memory.max`);
#   4. the sample web Deployment (examples/sample-web.yaml, image from scripts/sample-image.sh)
#      answers on its NodePort from every replica;
#   4b. `skiff install` again (an update) restarts both services, and the pods keep running
#      (same processes, no container restart) and serving;
#   5. `skiff uninstall` leaves no unit, binary, config, state, cgroup, mount, bridge, nftables
#      table or skiff process behind.
#
# Run as root from the repository: `tests/vm/run.sh` (it builds what it needs with cargo first).
# Environment:
#   SKIFF_VM_CACHE   where the image, kernel, initrd and ssh key are kept (/var/cache/skiff-vm)
#   SKIFF_VM_ACCEL   `tcg` (default: software emulation, 6-15x slower; /dev/kvm on the build
#                    machines is a paravirtual device Debian's kernels cannot use) or `kvm`
#                    (`-accel kvm -cpu host`, for machines with real KVM such as GitHub's runners)
#   SKIFF_VM_MIRROR  Debian mirror for debootstrap (http://deb.debian.org/debian)
#   SKIFF_VM_KEEP=1  leave the VM running at the end (ssh command printed) to look around
#   SKIFF_VM_SSH_TIMEOUT  seconds from QEMU's start until ssh must answer (1200; TCG on a loaded
#                    2-core machine needs 5-15 min)
# Needs: debootstrap, e2fsprogs, qemu-system-x86 (from bookworm-backports on bookworm hosts,
# matching their qemu-utils), openssh-client, umoci, busybox-static; installed with apt-get when
# missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
started=$(date +%s)
log() { echo "[vm +$(($(date +%s) - started))s] $*" >&2; }

[ "$(id -u)" -eq 0 ] || { echo "$0: debootstrap, mounts and the install need root" >&2; exit 1; }

cache=${SKIFF_VM_CACHE:-/var/cache/skiff-vm}
accel=${SKIFF_VM_ACCEL:-tcg}
mirror=${SKIFF_VM_MIRROR:-http://deb.debian.org/debian}
packages=systemd,systemd-sysv,udev,dbus,kmod,linux-image-amd64,iproute2,openssh-server,nftables,busybox-static,libseccomp2,ca-certificates
# bump when the image's content changes: the cached image is rebuilt (version 1, with
# systemd-networkd on DHCP, and version 2, whose network unit was bound to the eth0 device
# unit, are patched in place to version 3: see "the guest's network")
image_version="3 $packages"

# --- tools -----------------------------------------------------------------------------------
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v ssh >/dev/null || need+=(openssh-client)
command -v umoci >/dev/null || need+=(umoci)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ] || ! command -v qemu-system-x86_64 >/dev/null; then
    log "installing ${need[*]} qemu-system-x86"
    export DEBIAN_FRONTEND=noninteractive
    . /etc/os-release
    if [ "${VERSION_CODENAME:-}" = bookworm ] && [ ! -f /etc/apt/sources.list.d/bookworm-backports.sources ]; then
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$mirror" > /etc/apt/sources.list.d/bookworm-backports.sources
    fi
    apt-get update -qq
    [ ${#need[@]} -eq 0 ] || apt-get install -y --no-install-recommends "${need[@]}"
    if [ "${VERSION_CODENAME:-}" = bookworm ]; then
        apt-get install -y --no-install-recommends -t bookworm-backports qemu-system-x86
    else
        apt-get install -y --no-install-recommends qemu-system-x86
    fi
fi

# --- the image (cached) ----------------------------------------------------------------------
mkdir -p "$cache"
if [ ! -f "$cache/id_ed25519" ]; then
    ssh-keygen -q -t ed25519 -N '' -f "$cache/id_ed25519"
fi
# --- the guest's network: a static address on QEMU's user network -----------------------------
# The guest is 10.0.2.15/24 behind the gateway 10.0.2.2 (QEMU's fixed user-network plan), on
# eth0 (`net.ifnames=0` on the kernel command line). A oneshot unit sets it as soon as udev has
# the NIC. systemd-networkd on DHCP did not work here: under TCG its start job sat for minutes,
# and network.target (so ssh.service) waited for it. The unit waits for eth0 itself: bound to
# the device unit, it failed when udev took longer than a device job's 90 s on a loaded host.
net_unit() {
    cat <<'UNIT'
[Unit]
Description=Static address on QEMU's user network (skiff VM test)
After=systemd-udevd.service
Before=network.target ssh.service
Wants=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
TimeoutStartSec=infinity
ExecStart=/bin/sh -c 'until [ -e /sys/class/net/eth0 ]; do sleep 1; done'
ExecStart=/sbin/ip link set eth0 up
ExecStart=/sbin/ip addr replace 10.0.2.15/24 dev eth0
ExecStart=/sbin/ip route replace default via 10.0.2.2

[Install]
WantedBy=multi-user.target
UNIT
}
cached_version=$(cut -d' ' -f1 "$cache/image.version" 2>/dev/null || true)
if [ "$(cut -d' ' -f2- "$cache/image.version" 2>/dev/null)" = "$packages" ] && [ -f "$cache/disk.img" ] &&
    { [ "$cached_version" = 1 ] || [ "$cached_version" = 2 ]; }; then
    log "patching the cached image (version $cached_version): the current static-address unit"
    net_unit > "$cache/skiff-vm-net.service"
    debugfs -w -f - "$cache/disk.img" >/dev/null 2>&1 <<CMDS
rm /etc/systemd/system/multi-user.target.wants/systemd-networkd.service
rm /etc/systemd/system/sockets.target.wants/systemd-networkd.socket
rm /etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service
rm /etc/systemd/system/dbus-org.freedesktop.network1.service
rm /etc/systemd/network/20-wired.network
rm /etc/systemd/system/skiff-vm-net.service
write $cache/skiff-vm-net.service /etc/systemd/system/skiff-vm-net.service
symlink /etc/systemd/system/multi-user.target.wants/skiff-vm-net.service /etc/systemd/system/skiff-vm-net.service
CMDS
    rm -f "$cache/skiff-vm-net.service"
    debugfs -R 'cat /etc/systemd/system/skiff-vm-net.service' "$cache/disk.img" 2>/dev/null | grep -q 10.0.2.15 ||
        { echo "$0: patching the cached image failed" >&2; exit 1; }
    echo "$image_version" > "$cache/image.version"
fi
if [ "$(cat "$cache/image.version" 2>/dev/null)" != "$image_version" ] || [ ! -f "$cache/disk.img" ]; then
    log "building the bookworm image (debootstrap, about 90 s)"
    rootfs="$cache/rootfs.new"
    rm -rf "$rootfs" "$cache/disk.img" "$cache/image.version"
    debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
        { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    echo skiff-vm > "$rootfs/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 skiff-vm\n' > "$rootfs/etc/hosts"
    printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\nhost /mnt/host 9p trans=virtio,version=9p2000.L,msize=262144,ro,nofail 0 0\n' > "$rootfs/etc/fstab"
    mkdir -p "$rootfs/mnt/host" "$rootfs/root/.ssh"
    cp "$cache/id_ed25519.pub" "$rootfs/root/.ssh/authorized_keys"
    chmod 700 "$rootfs/root/.ssh"; chmod 600 "$rootfs/root/.ssh/authorized_keys"
    net_unit > "$rootfs/etc/systemd/system/skiff-vm-net.service"
    chroot "$rootfs" systemctl enable skiff-vm-net ssh >/dev/null
    chroot "$rootfs" passwd -d root >/dev/null
    # the kernel and initrd boot the guest directly (virtio and ext4 are modules: initrd needed)
    cp "$rootfs"/boot/vmlinuz-* "$cache/vmlinuz"
    cp "$rootfs"/boot/initrd.img-* "$cache/initrd.img"
    truncate -s 4G "$cache/disk.img"
    mkfs.ext4 -q -F -d "$rootfs" "$cache/disk.img"
    rm -rf "$rootfs"
    echo "$image_version" > "$cache/image.version"
    log "image built"
fi

# --- what the guest gets: binaries, kubectl, a busybox image ---------------------------------
work=$(mktemp -d /tmp/skiff-vm.XXXXXX)
qemu_pid=
cleanup() {
    if [ -n "$qemu_pid" ] && [ "${SKIFF_VM_KEEP:-0}" != 1 ]; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    [ "${SKIFF_VM_KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
share="$work/share"
mkdir -p "$share/tests"

log "building skiff and the runtime's test binaries"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
cargo build -p skiff >&2
host=$(rustc --print host-tuple) # .cargo/config.toml builds for it: target/<host tuple>/<profile>/
tests_json=$(cargo test -p skiff-runtime -p skiff --test cgroups --test rootfs --test seccomp --test runtime_cli \
    --test runtime_security \
    --no-run --message-format=json 2>/dev/null)
# the test executables (under deps/), not the skiff binary that cargo also reports
echo "$tests_json" | grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | grep '/deps/' | while read -r exe; do
    cp "$exe" "$share/tests/$(basename "$exe" | sed 's/-[0-9a-f]*$//')"
done
ls "$share/tests" >&2
cp "target/$host/debug/skiff" "$share/skiff"
kubectl=$(ls /usr/lib/google-cloud-sdk/bin/kubectl.1.3* 2>/dev/null | sort -V | tail -1 || true)
[ -n "$kubectl" ] || kubectl=$(command -v kubectl || true)
[ -n "$kubectl" ] || { echo "$0: kubectl is needed (the kubectl package)" >&2; exit 1; }
cp "$kubectl" "$share/kubectl"
# the test binaries find skiff where cargo built it: the guest gets a link at that path
echo "$repo/target/$host/debug/skiff" > "$share/skiff.path"

log "building a busybox image (OCI layout)"
umoci init --layout "$work/oci" >/dev/null
umoci new --image "$work/oci:vm" >/dev/null
umoci unpack --image "$work/oci:vm" "$work/bundle" >/dev/null
mkdir -p "$work/bundle/rootfs/bin"
cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
for app in sh sleep cat; do ln -sf busybox "$work/bundle/rootfs/bin/$app"; done
umoci repack --image "$work/oci:vm" "$work/bundle" >/dev/null
umoci config --image "$work/oci:vm" --config.cmd /bin/sh >/dev/null
tar -C "$work/oci" -cf "$share/busybox-oci.tar" .
log "building the sample web image (scripts/sample-image.sh)"
SKIFF="$repo/target/$host/debug/skiff" scripts/sample-image.sh "$work/store" >/dev/null
"target/$host/debug/skiff" image export --root "$work/store" -o "$share/sample-web.tar" skiff.local/sample-web:1 >/dev/null
cp examples/sample-web.yaml "$share/sample-web.yaml"

# --- boot ------------------------------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 10022)
case "$accel" in
    kvm) accel_args=(-accel kvm -cpu host) ;;
    tcg) accel_args=(-accel tcg,thread=multi -cpu max) ;;
    *) echo "$0: SKIFF_VM_ACCEL is kvm or tcg" >&2; exit 1 ;;
esac
log "booting (accel $accel, ssh on 127.0.0.1:$port)"
qemu-system-x86_64 "${accel_args[@]}" -smp 2 -m 3072 -nographic -no-reboot \
    -kernel "$cache/vmlinuz" -initrd "$cache/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 panic=-1 net.ifnames=0 systemd.unified_cgroup_hierarchy=1" \
    -drive "file=$cache/disk.img,if=virtio,format=raw,snapshot=on" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-pci,netdev=n0 \
    -virtfs "local,path=$share,mount_tag=host,security_model=none,readonly=on" \
    -serial "file:$work/console.log" -monitor none >"$work/qemu.log" 2>&1 &
qemu_pid=$!

ssh_opts=(-i "$cache/id_ed25519" -p "$port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    -o LogLevel=ERROR -o ConnectTimeout=60 -o ServerAliveInterval=30 -o ServerAliveCountMax=10 -o BatchMode=yes)
guest() { ssh "${ssh_opts[@]}" root@127.0.0.1 "$@"; }
ssh_timeout=${SKIFF_VM_SSH_TIMEOUT:-1200}
deadline=$(($(date +%s) + ssh_timeout))
until guest true 2>/dev/null; do
    if ! kill -0 "$qemu_pid" 2>/dev/null; then
        tail -30 "$work/console.log" >&2; cat "$work/qemu.log" >&2
        echo "$0: qemu exited" >&2; exit 1
    fi
    if [ "$(date +%s)" -gt "$deadline" ]; then
        tail -30 "$work/console.log" >&2; echo "$0: no ssh after $ssh_timeout s" >&2; exit 1
    fi
    sleep 2
done
log "ssh is up"
guest 'systemctl is-system-running --wait >/dev/null || true; mountpoint -q /mnt/host || mount /mnt/host'
guest 'test "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs' || { echo "$0: the guest has no pure cgroup v2" >&2; exit 1; }
log "systemd $(guest systemctl is-system-running || true), cgroup v2 controllers: $(guest cat /sys/fs/cgroup/cgroup.controllers)"

# --- 1. install ------------------------------------------------------------------------------
log "skiff install"
guest '/mnt/host/skiff install' >&2
for unit in skiff-master skiff-agent; do
    state=$(guest systemctl is-active "$unit" || true)
    [ "$state" = active ] || { guest journalctl -u "$unit" --no-pager | tail -40 >&2; echo "$0: $unit is $state" >&2; exit 1; }
done
log "skiff-master and skiff-agent are active"
# the binary runs from a read-only mount: no container can write it, and the runtime starts
# once per call instead of re-executing itself
opts=$(guest 'findmnt -no OPTIONS /usr/local/lib/skiff' || true)
agent_exe=$(guest 'readlink /proc/$(systemctl show -p MainPID --value skiff-agent)/exe' || true)
log "/usr/local/lib/skiff mounted with \"$opts\"; the agent runs $agent_exe"
case ",$opts," in *,ro,*) ;; *) echo "$0: /usr/local/lib/skiff is not a read-only mount" >&2; exit 1 ;; esac
[ "$agent_exe" = /usr/local/lib/skiff/skiff ] || { echo "$0: the agent runs $agent_exe" >&2; exit 1; }

# --- 2. the runtime's privileged tests -------------------------------------------------------
guest "mkdir -p \$(dirname \$(cat /mnt/host/skiff.path)) && ln -sf /usr/local/bin/skiff \$(cat /mnt/host/skiff.path)"
failed=0
for t in $(ls "$share/tests"); do
    log "runtime tests: $t"
    if ! guest "cd /tmp && /mnt/host/tests/$t --test-threads=2 2>&1" > "$work/test-$t.log"; then
        failed=1
        tail -40 "$work/test-$t.log" >&2
    fi
    grep -E '^test result' "$work/test-$t.log" >&2 || true
done
# the cluster stages still run after a failed runtime test (one boot shows every finding);
# the script fails at the end
[ "$failed" -eq 0 ] || log "runtime tests FAILED in the VM (logs: $work/test-*.log); going on"

# --- 3. a pod with limits on the one-node cluster --------------------------------------------
log "pod with cpu and memory limits"
guest 'skiff image import /mnt/host/busybox-oci.tar --name localhost/busybox:vm >/dev/null'
guest 'export KUBECONFIG=/etc/skiff/admin.kubeconfig K=/mnt/host/kubectl
    for i in $(seq 120); do $K get node skiff-vm -o jsonpath="{.status.conditions[?(@.type==\"Ready\")].status}" 2>/dev/null | grep -qx True && break; sleep 1; done
    $K wait --for=condition=Ready node/skiff-vm --timeout=10s
    cat <<EOF | $K apply -f -
apiVersion: v1
kind: Pod
metadata: {name: limited}
spec:
  containers:
  - name: c
    image: localhost/busybox:vm
    imagePullPolicy: Never
    command: ["/bin/sleep", "3600"]
    resources:
      limits: {cpu: 500m, memory: 64Mi}
EOF
    $K wait --for=condition=Ready pod/limited --timeout=180s' >&2
uid=$(guest 'KUBECONFIG=/etc/skiff/admin.kubeconfig /mnt/host/kubectl get pod limited -o jsonpath={.metadata.uid}')
# Guaranteed QoS (limits = requests): /sys/fs/cgroup/skiff/pod<uid>/<container>
cg=$(guest "find /sys/fs/cgroup/skiff/pod$uid -mindepth 1 -maxdepth 1 -type d | head -1")
cpu=$(guest "cat $cg/cpu.max")
mem=$(guest "cat $cg/memory.max")
log "container cgroup $cg: cpu.max=\"$cpu\" memory.max=\"$mem\""
[ "$cpu" = "50000 100000" ] || { echo "$0: cpu.max is \"$cpu\", want \"50000 100000\"" >&2; exit 1; }
[ "$mem" = "67108864" ] || { echo "$0: memory.max is \"$mem\", want 67108864" >&2; exit 1; }

# the master's /metrics counted that pod's creation
guest 'KUBECONFIG=/etc/skiff/admin.kubeconfig /mnt/host/kubectl get --raw /metrics' > "$work/metrics.txt"
grep -q '^apiserver_request_total{verb="create",group="",resource="pods",subresource="",code="201"} ' "$work/metrics.txt" ||
    { grep apiserver_request_total "$work/metrics.txt" | head >&2; echo "$0: the pod's create is not in /metrics" >&2; exit 1; }

# --- 4. the sample workload: examples/sample-web.yaml answering on its NodePort ---------------
log "sample web Deployment (3 replicas) and NodePort Service"
guest 'skiff image import /mnt/host/sample-web.tar >/dev/null'
guest 'export KUBECONFIG=/etc/skiff/admin.kubeconfig K=/mnt/host/kubectl
    $K apply -f /mnt/host/sample-web.yaml && $K rollout status deploy/sample-web --timeout=300s' >&2
# 30 requests to the NodePort on the node's address: every replica answers (a replica missing
# by chance: 3 * (2/3)^30, about 1.5e-5). HTTP by bash's /dev/tcp: the guest has no curl, and
# busybox's wget segfaulted there under TCG.
answers=$(guest 'for i in $(seq 30); do
        timeout 10 bash -c "exec 3<>/dev/tcp/10.0.2.15/30080
            printf \"GET / HTTP/1.0\\r\\nHost: 10.0.2.15\\r\\n\\r\\n\" >&3; cat <&3" |
            grep -o "hello from sample-web-[a-z0-9-]*"
    done 2>&1 | sort | uniq -c')
log "NodePort 30080 answered: $(echo "$answers" | tr '\n' ';')"
[ "$(echo "$answers" | grep -c 'hello from sample-web-')" -eq 3 ] ||
    { echo "$0: not every sample-web replica answered on the NodePort" >&2; exit 1; }

# --- 4b. update: `skiff install` again restarts both services; the pods keep running ----------
log "skiff install again (an update)"
pids_before=$(guest 'systemctl show -p MainPID --value skiff-master skiff-agent | tr "\n" " "')
sleeper_before=$(guest "cat $cg/cgroup.procs | sort | tr '\n' ' '")
guest '/mnt/host/skiff install' >&2
pids_after=$(guest 'systemctl show -p MainPID --value skiff-master skiff-agent | tr "\n" " "')
# no automatic restart either: an agent restarted together with its master waits for it
restarts_auto=$(guest 'systemctl show -p NRestarts --value skiff-master skiff-agent | xargs')
log "master and agent pids: $pids_before-> $pids_after, automatic restarts: $restarts_auto"
for p in $pids_before; do
    case " $pids_after " in *" $p "*) echo "$0: the update did not restart the service with pid $p" >&2; exit 1 ;; esac
done
case " $pids_after " in *" 0 "*) echo "$0: a service is not running after the update" >&2; exit 1 ;; esac
[ "$restarts_auto" = "0 0" ] || { guest journalctl -u skiff-agent -u skiff-master --no-pager | grep -v " INFO " | tail -20 >&2; echo "$0: a service failed and systemd restarted it" >&2; exit 1; }
guest 'export KUBECONFIG=/etc/skiff/admin.kubeconfig K=/mnt/host/kubectl
    for i in $(seq 120); do $K get node skiff-vm -o jsonpath="{.status.conditions[?(@.type==\"Ready\")].status}" 2>/dev/null | grep -qx True && break; sleep 1; done
    $K wait --for=condition=Ready node/skiff-vm pod/limited --timeout=60s
    $K rollout status deploy/sample-web --timeout=120s' >&2
sleeper_after=$(guest "cat $cg/cgroup.procs | sort | tr '\n' ' '")
restarts=$(guest 'KUBECONFIG=/etc/skiff/admin.kubeconfig /mnt/host/kubectl get pod limited -o jsonpath={.status.containerStatuses[0].restartCount}')
log "the pod's processes: $sleeper_before-> $sleeper_after, restartCount $restarts"
[ "$sleeper_before" = "$sleeper_after" ] && [ "$restarts" = 0 ] ||
    { echo "$0: the pod did not keep running across the update" >&2; exit 1; }
# the restarted agent's proxy writes its rules again; then every request must be answered
guest 'for i in $(seq 30); do
        timeout 10 bash -c "exec 3<>/dev/tcp/10.0.2.15/30080
            printf \"GET / HTTP/1.0\r\nHost: 10.0.2.15\r\n\r\n\" >&3; cat <&3" 2>/dev/null |
            grep -q "hello from sample-web-" && break
        sleep 1
    done'
answers=$(guest 'for i in $(seq 10); do
        timeout 10 bash -c "exec 3<>/dev/tcp/10.0.2.15/30080
            printf \"GET / HTTP/1.0\r\nHost: 10.0.2.15\r\n\r\n\" >&3; cat <&3" |
            grep -c "hello from sample-web-"
    done 2>&1 | grep -c "^1$"')
log "NodePort 30080 after the update: $answers of 10 answered"
[ "$answers" -eq 10 ] || { echo "$0: the sample web app did not answer after the update" >&2; exit 1; }

# --- 5. uninstall ----------------------------------------------------------------------------
log "skiff uninstall"
guest 'skiff uninstall' >&2
# no unit (file or cgroup), binary, config, state, pod cgroup, mount, bridge, nftables table,
# nor a skiff process (a shim outliving the agent's unit, which KillMode=process leaves);
# skiff-vm-net.service is this harness's own unit in the image, not skiff's
left=$(guest 'ls -d /etc/systemd/system/skiff-* /etc/systemd/system/usr-local-lib-skiff.mount \
        /usr/local/bin/skiff /usr/local/bin/skiff-runc /usr/local/lib/skiff /etc/skiff \
        /var/lib/skiff /run/skiff /sys/fs/cgroup/skiff /sys/fs/cgroup/system.slice/skiff-* 2>/dev/null |
        grep -v "/skiff-vm-net\.service$"
    grep -c " /var/lib/skiff\| /run/skiff\| /usr/local/lib/skiff" /proc/self/mountinfo
    ip link show skiff0 2>/dev/null; nft list tables | grep skiff
    for p in /proc/[0-9]*; do readlink $p/exe; done 2>/dev/null | grep skiff' || true)
[ "$left" = 0 ] || { echo "$0: uninstall left: $left" >&2; exit 1; }

if [ "${SKIFF_VM_KEEP:-0}" = 1 ]; then
    log "the VM keeps running: ssh ${ssh_opts[*]} root@127.0.0.1 (qemu pid $qemu_pid)"
fi
[ "$failed" -eq 0 ] || { echo "$0: runtime tests failed in the VM" >&2; exit 1; }
log "passed: install, units active, runtime tests, cgroup v2 limits, sample web app, update, uninstall"

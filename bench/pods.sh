#!/usr/bin/env bash
# The 100-pod benchmark, as root: one `skiff master` and one `skiff agent` (private dirs,
# loopback, `--pod-network none`, no Service proxy or cluster DNS: the host's network is not
# touched), the image already in the node's store (scripts/sample-image.sh), then N pods
# created one after the other through the API; each pod's time from its create call
# returning to the agent's Running status being seen on a watch, p50 and p99, the time until
# all are Running, the agent's RSS (VmRSS and peak VmHWM) with all of them running, and the
# pod status patches the agent sent (the master's apiserver_request_total). For comparison,
# in the same run: `crun run -d` of a busybox bundle (the same busybox-static as the image) N
# times, each run's wall time (podman is not installed here; crun is what it
# would run). crun refuses hybrid cgroup hosts while a controller is on the v2 hierarchy:
# as bench/runtime.sh, those controllers are bound to a private v1 mount while crun runs.
#
#   bench/pods.sh                 # N=100 PROFILE=debug
#   N=20 PROFILE=perf bench/pods.sh
# PROFILE is a cargo profile (debug, release, perf: see Cargo.toml); SKIP_BUILD=1 measures
# the binary already in target/<host tuple>/$PROFILE; KEEP_LOGS=DIR copies the master's and
# the agent's logs there; AGENT_WRAP runs the agent under a command (e.g.
# "perf record -g -o FILE --");
# LAYOUT=installed runs master and agent from a read-only bind mount, as `skiff install` does
# (default: from target/, where every shim re-executes itself through a read-only mount).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-100}
PROFILE=${PROFILE:-debug}
KUBECTL=${KUBECTL:-/usr/lib/google-cloud-sdk/bin/kubectl.1.33}
die() { echo "$0: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root"
for t in umoci python3 "$KUBECTL"; do
    command -v "$t" >/dev/null || die "$t is missing"
done
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
if [ -z "${SKIP_BUILD:-}" ]; then
    case "$PROFILE" in
        debug) cargo build -p skiff ;;
        *) cargo build --profile "$PROFILE" -p skiff ;;
    esac
fi
skiff=$(pwd)/target/$(rustc --print host-tuple)/$PROFILE/skiff

work=$(mktemp -d /tmp/skiff-podbench.XXXXXX)
prefix=skiff-bench-$$
master_pid=
agent_pid=
cleanup() {
    set +e
    if [ -n "${KEEP_LOGS:-}" ]; then
        mkdir -p "$KEEP_LOGS" && cp "$work"/master.log "$work"/agent.log "$KEEP_LOGS"/ 2>/dev/null
    fi
    [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
    [ -n "$master_pid" ] && kill "$master_pid" 2>/dev/null && wait "$master_pid" 2>/dev/null
    for f in "$work"/run/pods/*/shim.pid; do
        [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
    done
    if command -v crun >/dev/null; then
        for id in $(crun --root "$work/crun" list -q 2>/dev/null); do
            crun --root "$work/crun" delete -f "$id" >/dev/null 2>&1
        done
    fi
    "$skiff" runtime --root "$work/run/runtime" list -q 2>/dev/null | while read -r id; do
        "$skiff" runtime --root "$work/run/runtime" delete -f "$id" >/dev/null 2>&1
    done
    grep " $work" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null
    done
    for d in $(find /sys/fs/cgroup/*/"$prefix" -depth -type d 2>/dev/null); do
        rmdir "$d" 2>/dev/null
    done
    for m in "${v1_mounts[@]}"; do umount "$m" 2>/dev/null; done
    rm -rf "$work"
}
v1_mounts=()
trap cleanup EXIT
if [ "${LAYOUT:-build}" = installed ]; then
    # as `skiff install` lays it out: the binary in a directory bind-mounted read-only onto
    # itself, so the agent's shims and runtime calls need no re-exec (unmounted by cleanup)
    mkdir "$work/lib"
    cp "$skiff" "$work/lib/skiff"
    mount --bind -o ro "$work/lib" "$work/lib"
    skiff=$work/lib/skiff
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$skiff" master --data-dir "$work/master" --listen "127.0.0.1:$port" >"$work/master.log" 2>&1 &
master_pid=$!
for _ in $(seq 100); do [ -f "$work/master/admin.kubeconfig" ] && break; sleep 0.1; done
[ -f "$work/master/admin.kubeconfig" ] || die "master did not start: $(tail -5 "$work/master.log")"
SKIFF=$skiff scripts/sample-image.sh "$work/root" skiff.local/bench:1 >/dev/null
${AGENT_WRAP:-} "$skiff" agent --server "https://127.0.0.1:$port" --token "$(cat "$work/master/node-token")" \
    --ca-file "$work/master/ca.crt" --node-name bench --node-ip 127.0.0.1 \
    --root-dir "$work/root" --run-dir "$work/run" --log-dir "$work/log" \
    --cgroup-prefix "$prefix" --listen-port 0 --pod-network none --proxy=false --dns=false \
    --eviction-hard 'memory.available<100Mi,nodefs.available<1%,imagefs.available<1%' \
    >"$work/agent.log" 2>&1 &
agent_pid=$!
rss_pid=$agent_pid
if [ -n "${AGENT_WRAP:-}" ]; then # the agent is the wrapper's child
    sleep 1
    rss_pid=$(pgrep -o -P "$agent_pid" || echo "$agent_pid")
fi

export KUBECONFIG=$work/master/admin.kubeconfig HOME=$work
python3 - "$N" "$KUBECTL" "$rss_pid" "$skiff" "$work" <<'PY'
import json, os, subprocess, sys, threading, time

n, kubectl, agent_pid, skiff, work = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]

def kc(*args, stdin=None):
    return subprocess.run([kubectl, *args], input=stdin, capture_output=True, text=True, check=True).stdout

deadline = time.time() + 60
while time.time() < deadline:
    try:
        conds = json.loads(kc("get", "node", "bench", "-o", "json"))["status"]["conditions"]
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
            break
    except (subprocess.CalledProcessError, KeyError, ValueError):
        pass
    time.sleep(0.2)
else:
    sys.exit("the node did not get Ready")

running = {}
lock = threading.Lock()
def watch():
    p = subprocess.Popen([kubectl, "get", "pods", "-w", "-o", "json", "--output-watch-events"],
                         stdout=subprocess.PIPE, text=True)
    buf = ""
    depth = 0
    for ch in iter(lambda: p.stdout.read(1), ""):
        buf += ch
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                ev = json.loads(buf)
                buf = ""
                obj = ev.get("object", {})
                if obj.get("status", {}).get("phase") == "Running":
                    name = obj["metadata"]["name"]
                    with lock:
                        running.setdefault(name, time.time())
threading.Thread(target=watch, daemon=True).start()
time.sleep(1)

def pod(i):
    return json.dumps({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"p{i}", "namespace": "default"},
        "spec": {"nodeName": "bench", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": "skiff.local/bench:1",
                                 "imagePullPolicy": "IfNotPresent",
                                 "command": ["/bin/sh", "-c", "exec sleep 3600"]}]}})

created = {}
start = time.time()
for i in range(n):
    kc("create", "-f", "-", stdin=pod(i))
    created[f"p{i}"] = time.time()
while time.time() < start + 600:
    with lock:
        if len(running) >= n:
            break
    time.sleep(0.1)
with lock:
    done = dict(running)
if len(done) < n:
    sys.exit(f"only {len(done)} of {n} pods Running after 600 s")
lat = sorted(done[k] - created[k] for k in created)
def pct(p):
    return lat[min(len(lat) - 1, int(round(p / 100 * len(lat) + 0.5)) - 1)] * 1000
metrics = kc("get", "--raw", "/metrics")
patches = sum(float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines()
              if l.startswith('apiserver_request_total{verb="patch",group="",resource="pods",subresource="status"'))
status = open(f"/proc/{agent_pid}/status").read()
field = lambda k: int(next(l for l in status.splitlines() if l.startswith(k)).split()[1])
print(f"skiff: {n} pods, create->Running p50 {pct(50):.0f} ms, p99 {pct(99):.0f} ms, "
      f"max {lat[-1]*1000:.0f} ms; all Running {max(done.values()) - start:.1f} s after the first create")
print(f"skiff agent RSS with {n} pods running: VmRSS {field('VmRSS:')/1024:.1f} MiB "
      f"(anonymous {field('RssAnon:')/1024:.1f}, file-backed {field('RssFile:')/1024:.1f}), "
      f"peak VmHWM {field('VmHWM:')/1024:.1f} MiB")
print(f"pod status patches by the agent until all Running: {patches:.0f} ({patches / n:.2f} a pod)")

PY

command -v crun >/dev/null || { echo "crun: not installed, no comparison"; exit 0; }
unified=/sys/fs/cgroup/unified
if [ -f "$unified/cgroup.controllers" ]; then
    for c in $(cat "$unified/cgroup.controllers"); do
        mkdir -p "$work/cgroup-$c"
        mount -t cgroup -o "$c" cgroup "$work/cgroup-$c" && v1_mounts+=("$work/cgroup-$c")
    done
fi
scripts/busybox-bundle.sh "$work/bundle" /bin/sleep 3600 >/dev/null
python3 - "$N" "$work" <<'PY'
import os, subprocess, sys, time
n, work = int(sys.argv[1]), sys.argv[2]
times = []
for i in range(n):
    t = time.time()
    subprocess.run(["crun", "--root", os.path.join(work, "crun"), "run", "-d", "--bundle",
                    os.path.join(work, "bundle"), f"bench-{i}"], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times.append(time.time() - t)
times.sort()
p = lambda q: times[min(len(times) - 1, int(round(q / 100 * len(times) + 0.5)) - 1)] * 1000
print(f"crun run -d: {n} containers, p50 {p(50):.0f} ms, p99 {p(99):.0f} ms, all started in {sum(times):.1f} s")
PY

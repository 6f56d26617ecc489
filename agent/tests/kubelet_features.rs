//! Kubelet container features on a real node (the `node_common` harness: an in-process API
//! server, a loopback registry, `skiff agent` as a process): termination messages,
//! privileged containers, emptyDir medium Memory, pod-level cgroup limits, image GC and
//! node-pressure eviction (disk and memory).
//!
//! Needs root, `docker-registry`, `umoci`, `skopeo`, `/bin/busybox` (busybox-static) and
//! the skiff binary built (`cargo build -p skiff`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_common;

use k8s_openapi::api::core::v1::ContainerStatus;
use node_common::*;

fn statuses(p: &Pod) -> Vec<ContainerStatus> {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default()
}

fn terminated_message(cs: &ContainerStatus, last: bool) -> Option<String> {
    let st = if last { &cs.last_state } else { &cs.state };
    st.as_ref()?.terminated.as_ref()?.message.clone()
}

fn named<'a>(cs: &'a [ContainerStatus], name: &str) -> &'a ContainerStatus {
    cs.iter().find(|c| c.name == name).unwrap()
}

fn container(name: &str, image: &str, script: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"name": name, "image": image, "command": ["/bin/sh", "-c", script]});
    json_patch_merge(&mut c, &extra);
    c
}

fn pod_of(name: &str, node: &str, spec: serde_json::Value) -> Pod {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1}
    });
    json_patch_merge(&mut p["spec"], &spec);
    serde_json::from_value(p).unwrap()
}

/// The CRI log of a container's first run, as the shim wrote it.
fn log_of(node: &TestNode, pod: &str, uid: &str, c: &str) -> String {
    std::fs::read_to_string(node.path(&format!("log/default_{pod}_{uid}/{c}/0.log")))
        .unwrap_or_default()
}

/// terminationMessagePath files (the default, a custom path written by a non-root user),
/// FallbackToLogsOnError (the last 80 lines of a failed run; nothing for a success; the
/// file first), the per-pod 12 KiB share, and lastState keeping the previous run's message
/// while the new run gets a fresh file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_messages() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-term");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let img = c.image.as_str();
    let fb = json!({"terminationMessagePolicy": "FallbackToLogsOnError"});
    let p = pod_of(
        "term",
        "n-term",
        json!({"restartPolicy": "Never", "containers": [
            container("file", img, "echo -n 'bye from file' > /dev/termination-log", json!({})),
            container("custom", img, "echo -n custom > /tmp/said; exit 3",
                json!({"terminationMessagePath": "/tmp/said",
                       "securityContext": {"runAsUser": 1000}})),
            container("fallback", img,
                "i=0; while [ $i -lt 100 ]; do i=$((i+1)); echo \"line $i\"; done; exit 2", fb.clone()),
            container("quiet", img, "echo noise", fb.clone()),
            container("filewins", img, "echo noise; echo -n 'from file' > /dev/termination-log; exit 1", fb),
            container("big", img,
                "head -c 4500 /dev/zero | tr '\\0' a > /dev/termination-log", json!({}))
        ]}),
    );
    pods.create(&PostParams::default(), &p).await.unwrap();
    let st = wait_pod(
        &pods,
        "term",
        "every container terminated",
        90,
        &node,
        |p| {
            let cs = statuses(p);
            (cs.len() == 6
                && cs
                    .iter()
                    .all(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some())))
            .then_some(cs)
        },
    )
    .await;
    assert_eq!(
        terminated_message(named(&st, "file"), false).as_deref(),
        Some("bye from file")
    );
    let custom = named(&st, "custom");
    assert_eq!(
        custom
            .state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        3
    );
    assert_eq!(terminated_message(custom, false).as_deref(), Some("custom"));
    let fallback = terminated_message(named(&st, "fallback"), false).unwrap();
    let expected: String = (21..=100).map(|i| format!("line {i}\n")).collect();
    assert_eq!(fallback, expected, "the last 80 lines of the log");
    assert_eq!(terminated_message(named(&st, "quiet"), false), None);
    assert_eq!(
        terminated_message(named(&st, "filewins"), false).as_deref(),
        Some("from file")
    );
    // 4500 bytes in the file: its last 4096, then the pod's 12 KiB over 6 containers
    let big = terminated_message(named(&st, "big"), false).unwrap();
    assert_eq!(big.len(), 12 * 1024 / 6);
    assert!(big.bytes().all(|b| b == b'a'));
    let phase = pods.get("term").await.unwrap().status.unwrap().phase;
    assert_eq!(phase.as_deref(), Some("Failed"));

    // a restart: lastState keeps the first run's message, the second run starts with an
    // empty file (it appends)
    let p = pod_of(
        "term-restart",
        "n-term",
        json!({"restartPolicy": "OnFailure",
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [container("c", img,
                "if [ -f /data/once ]; then echo -n second >> /dev/termination-log; exit 0; fi; \
                 touch /data/once; echo -n first-run > /dev/termination-log; exit 1",
                json!({"volumeMounts": [{"name": "data", "mountPath": "/data"}]}))]}),
    );
    pods.create(&PostParams::default(), &p).await.unwrap();
    let cs = wait_pod(&pods, "term-restart", "Succeeded", 60, &node, |p| {
        (p.status.as_ref()?.phase.as_deref() == Some("Succeeded"))
            .then(|| statuses(p).into_iter().next())
            .flatten()
    })
    .await;
    assert_eq!(cs.restart_count, 1);
    assert_eq!(terminated_message(&cs, false).as_deref(), Some("second"));
    assert_eq!(terminated_message(&cs, true).as_deref(), Some("first-run"));
}

/// A privileged container has every capability, mounts a tmpfs, sees the host's loop
/// devices and a read-write /sys; a plain one can do none of that. Privileged with
/// allowPrivilegeEscalation false is refused by the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_containers() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-priv");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let img = c.image.as_str();
    let probe = "r=''; mkdir -p /tmp/m; \
        if mount -t tmpfs none /tmp/m 2>/dev/null; then r=\"$r mount-ok\"; else r=\"$r mount-refused\"; fi; \
        if [ -b /dev/loop0 ]; then r=\"$r loop\"; else r=\"$r no-loop\"; fi; \
        if grep -q ' /sys sysfs rw' /proc/mounts; then r=\"$r sys-rw\"; else r=\"$r sys-ro\"; fi; \
        r=\"$r $(grep CapEff /proc/self/status | tr -d '\\t')\"; \
        echo -n \"$r\" > /dev/termination-log";
    let p = pod_of(
        "priv",
        "n-priv",
        json!({"restartPolicy": "Never", "containers": [
            container("privileged", img, probe, json!({"securityContext": {"privileged": true}})),
            container("plain", img, probe, json!({}))
        ]}),
    );
    pods.create(&PostParams::default(), &p).await.unwrap();
    let st = wait_pod(&pods, "priv", "both containers done", 60, &node, |p| {
        let cs = statuses(p);
        (cs.len() == 2
            && cs
                .iter()
                .all(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some())))
        .then_some(cs)
    })
    .await;
    // every capability the agent has (its bounding set, the same as this process's)
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let all_caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(
        terminated_message(named(&st, "privileged"), false).unwrap(),
        format!(" mount-ok loop sys-rw CapEff:{all_caps}")
    );
    let plain = terminated_message(named(&st, "plain"), false).unwrap();
    assert!(
        plain.starts_with(" mount-refused no-loop sys-ro CapEff:"),
        "{plain}"
    );
    assert!(!plain.ends_with(&all_caps), "{plain}");
    // the API server's validation
    let bad = pod_of(
        "priv-bad",
        "n-priv",
        json!({"containers": [container("c", img, "true",
            json!({"securityContext": {"privileged": true, "allowPrivilegeEscalation": false}}))]}),
    );
    match pods.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(
                e.message.contains(
                    "cannot set `allowPrivilegeEscalation` to false and `privileged` to true"
                ),
                "{}",
                e.message
            );
        }
        other => panic!("privileged without privilege escalation was accepted: {other:?}"),
    }
}

/// The tmpfs line of `mountinfo` for a mount point ending in `suffix`.
fn tmpfs_mount(suffix: &str) -> Option<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4).is_some_and(|m| m.ends_with(suffix)))
        .map(str::to_string)
}

/// emptyDir medium Memory: a tmpfs of sizeLimit on the node, tmpfs in the container,
/// writing past the limit fails with ENOSPC; without a sizeLimit the pod's memory limit
/// sizes it; deleting the pod unmounts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_empty_dir() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-mem");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let script = "if grep -q ' /cache tmpfs ' /proc/mounts; then r=tmpfs; else r=not-tmpfs; fi; \
        if dd if=/dev/zero of=/cache/f bs=1024 count=8192 2>/big/err; then r=\"$r wrote-all\"; \
        else r=\"$r $(grep -o 'No space left on device' /big/err)\"; fi; \
        echo \"result: $r\"; exec sleep 3600";
    let p = pod_of(
        "mem",
        "n-mem",
        json!({"volumes": [
                {"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "4Mi"}},
                {"name": "big", "emptyDir": {"medium": "Memory"}}],
            "containers": [container("c", &c.image, script,
                json!({"resources": {"limits": {"memory": "48Mi"}},
                    "volumeMounts": [{"name": "cache", "mountPath": "/cache"},
                                     {"name": "big", "mountPath": "/big"}]}))]}),
    );
    let uid = pods
        .create(&PostParams::default(), &p)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let log = api_common::wait_for("the container's result", Duration::from_secs(60), || {
        let l = log_of(&node, "mem", &uid, "c");
        async move { l.contains("result:").then_some(l) }
    })
    .await;
    assert!(
        log.contains("result: tmpfs No space left on device"),
        "{log}"
    );
    let cache = tmpfs_mount(&format!("{uid}/volumes/kubernetes.io~empty-dir/cache")).unwrap();
    assert!(
        cache.contains(" - tmpfs ") && cache.contains("size=4096k"),
        "{cache}"
    );
    // no sizeLimit: the pod's memory limit (48Mi)
    let big = tmpfs_mount(&format!("{uid}/volumes/kubernetes.io~empty-dir/big")).unwrap();
    assert!(big.contains("size=49152k"), "{big}");
    pods.delete("mem", &DeleteParams::default()).await.unwrap();
    api_common::wait_for("the pod gone", Duration::from_secs(60), || async {
        pods.get_opt("mem").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(
        tmpfs_mount(&format!("{uid}/volumes/kubernetes.io~empty-dir/cache")),
        None
    );
    assert_eq!(
        tmpfs_mount(&format!("{uid}/volumes/kubernetes.io~empty-dir/big")),
        None
    );
    assert!(!node.path(&format!("root/pods/{uid}")).exists());
}

fn cgroup_file(prefix: &str, rel: &str, ctrl: &str, file: &str) -> String {
    let p = Path::new("/sys/fs/cgroup")
        .join(ctrl)
        .join(prefix)
        .join(rel)
        .join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// Pod cgroups get the kubelet's `ResourceConfigForPod`: a Guaranteed pod the sums of its
/// containers' limits plus the overhead; a Burstable pod with every limit declared the
/// same; one with a container without limits only cpu shares. Read back from cgroup v1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_cgroup_limits() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-cg");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let img = c.image.as_str();
    let res = |req: serde_json::Value, lim: serde_json::Value| json!({"resources": {"requests": req, "limits": lim}});
    let both = json!({"cpu": "100m", "memory": "32Mi"});
    let cases = [
        (
            "guaranteed",
            json!({"overhead": {"cpu": "50m", "memory": "8Mi"}, "containers": [
                container("a", img, "exec sleep 3600", res(both.clone(), both.clone())),
                container("b", img, "exec sleep 3600", res(both.clone(), both.clone()))]}),
            "",
            ("256", "25000", Some((72u64 << 20).to_string())),
        ),
        (
            "limited",
            json!({"containers": [
                container("a", img, "exec sleep 3600",
                    res(json!({"cpu": "50m"}), json!({"cpu": "200m", "memory": "16Mi"}))),
                container("b", img, "exec sleep 3600",
                    res(json!({"cpu": "50m"}), json!({"cpu": "100m", "memory": "16Mi"})))]}),
            "burstable/",
            ("102", "30000", Some((32u64 << 20).to_string())),
        ),
        (
            "unlimited",
            json!({"containers": [
                container("a", img, "exec sleep 3600",
                    res(json!({"cpu": "50m"}), json!({"cpu": "200m", "memory": "16Mi"}))),
                container("b", img, "exec sleep 3600", res(json!({"cpu": "100m"}), json!({})))]}),
            "burstable/",
            ("153", "-1", None),
        ),
    ];
    for (name, spec, _, _) in &cases {
        pods.create(&PostParams::default(), &pod_of(name, "n-cg", spec.clone()))
            .await
            .unwrap();
    }
    for (name, _, dir, (shares, quota, memory)) in cases {
        let uid = wait_pod(&pods, name, "Running", 60, &node, |p| {
            (p.status.as_ref()?.phase.as_deref() == Some("Running"))
                .then(|| p.metadata.uid.clone())
                .flatten()
        })
        .await;
        let rel = format!("{dir}pod{uid}");
        assert_eq!(
            cgroup_file(&node.prefix, &rel, "cpu", "cpu.shares"),
            shares,
            "{name}"
        );
        assert_eq!(
            cgroup_file(&node.prefix, &rel, "cpu", "cpu.cfs_period_us"),
            "100000",
            "{name}"
        );
        assert_eq!(
            cgroup_file(&node.prefix, &rel, "cpu", "cpu.cfs_quota_us"),
            quota,
            "{name}"
        );
        let mem = cgroup_file(&node.prefix, &rel, "memory", "memory.limit_in_bytes");
        match memory {
            Some(m) => assert_eq!(mem, m, "{name}"),
            // unlimited: the page-rounded maximum
            None => assert!(mem.parse::<u64>().unwrap() > 1 << 60, "{name}: {mem}"),
        }
        // the containers sit in the pod cgroup
        let procs = cgroup_file(
            &node.prefix,
            &rel,
            "memory",
            &format!("{uid}-a/cgroup.procs"),
        );
        assert!(
            !procs.is_empty(),
            "{name}: no process in the container cgroup"
        );
    }
}

fn init_status(p: &Pod, name: &str) -> Option<ContainerStatus> {
    p.status
        .as_ref()?
        .init_container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
        .cloned()
}

/// Sidecar init containers (`restartPolicy: Always`): the next init container waits for
/// the sidecar's startup probe; the sidecar runs along the app container; a Job-style pod
/// (restartPolicy Never) succeeds when its app container is done, the sidecar then being
/// stopped (its preStop hook first); a sidecar that exits is restarted; on deletion the app
/// container is stopped before the sidecars, which go one at a time in reverse order, each
/// after its preStop hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_init_containers() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-side");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let img = c.image.as_str();
    let shared = node.path("shared");
    let vol = |sub: &str| {
        json!([{"name": "shared", "hostPath": {
            "path": shared.join(sub), "type": "DirectoryOrCreate"}}])
    };
    let mount = json!({"volumeMounts": [{"name": "shared", "mountPath": "/shared"}]});
    let with = |extra: serde_json::Value| {
        let mut m = mount.clone();
        json_patch_merge(&mut m, &extra);
        m
    };
    let forever = "while true; do sleep 1 & wait $!; done";
    // a Job-style pod
    let side = format!(
        "trap 'echo side-term >> /shared/order; exit 0' TERM; sleep 2; touch /shared/side-up; {forever}"
    );
    let p = pod_of(
        "job",
        "n-side",
        json!({"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
            "volumes": vol("job"),
            "initContainers": [
                container("side", img, &side, with(json!({"restartPolicy": "Always",
                    "lifecycle": pre_stop("side-prestop"),
                    "startupProbe": {"exec": {"command": ["sh", "-c", "test -f /shared/side-up"]},
                        "periodSeconds": 1, "failureThreshold": 30}}))),
                container("after", img, "test -f /shared/side-up && echo ok > /shared/after",
                    mount.clone())
            ],
            "containers": [container("app", img,
                "sleep 3; cat /shared/after; echo app-done >> /shared/order", mount.clone())]}),
    );
    pods.create(&PostParams::default(), &p).await.unwrap();
    // while the app runs: the sidecar runs too, started, and the pod is Running
    wait_pod(&pods, "job", "app and sidecar running", 60, &node, |p| {
        let app = statuses(p).into_iter().next()?;
        let side = init_status(p, "side")?;
        let running = |c: &ContainerStatus| c.state.as_ref().is_some_and(|s| s.running.is_some());
        (running(&app)
            && running(&side)
            && side.started == Some(true)
            && p.status.as_ref()?.phase.as_deref() == Some("Running"))
        .then_some(())
    })
    .await;
    let done = wait_pod(&pods, "job", "Succeeded", 60, &node, |p| {
        (p.status.as_ref()?.phase.as_deref() == Some("Succeeded")).then(|| p.clone())
    })
    .await;
    let after = init_status(&done, "after").unwrap();
    let t = after.state.unwrap().terminated.unwrap();
    assert_eq!(
        t.exit_code, 0,
        "the regular init container ran after the sidecar started"
    );
    let side = init_status(&done, "side").unwrap();
    let t = side.state.unwrap().terminated.unwrap();
    assert_eq!(t.exit_code, 0, "the sidecar got SIGTERM: {t:?}");
    let app = statuses(&done).into_iter().next().unwrap();
    assert_eq!(app.state.unwrap().terminated.unwrap().exit_code, 0);
    assert_eq!(
        std::fs::read_to_string(shared.join("job/order")).unwrap(),
        "app-done\nside-prestop\nside-term\n"
    );

    // restartPolicy Always: a sidecar that exits is restarted; deletion stops the app first
    let side = format!(
        "trap 'echo side-term >> /shared/order; exit 0' TERM; \
         if [ ! -f /shared/once ]; then touch /shared/once; exit 1; fi; {forever}"
    );
    let side2 = format!("trap 'echo side2-term >> /shared/order; exit 0' TERM; {forever}");
    let app = format!("trap 'echo app-term >> /shared/order; exit 0' TERM; {forever}");
    let p = pod_of(
        "svc",
        "n-side",
        json!({"terminationGracePeriodSeconds": 10, "volumes": vol("svc"),
            "initContainers": [
                container("side", img, &side, with(json!({"restartPolicy": "Always",
                    "lifecycle": pre_stop("side-prestop")}))),
                container("side2", img, &side2, with(json!({"restartPolicy": "Always",
                    "lifecycle": pre_stop("side2-prestop")})))],
            "containers": [container("app", img, &app,
                with(json!({"lifecycle": pre_stop("app-prestop")})))]}),
    );
    pods.create(&PostParams::default(), &p).await.unwrap();
    wait_pod(
        &pods,
        "svc",
        "sidecar restarted, app running",
        60,
        &node,
        |p| {
            let side = init_status(p, "side")?;
            let app = statuses(p).into_iter().next()?;
            (side.restart_count == 1
                && side.state.as_ref()?.running.is_some()
                && init_status(p, "side2")?.state.as_ref()?.running.is_some()
                && app.state.as_ref()?.running.is_some()
                && app.restart_count == 0
                && p.status.as_ref()?.phase.as_deref() == Some("Running"))
            .then_some(())
        },
    )
    .await;
    pods.delete("svc", &DeleteParams::default()).await.unwrap();
    api_common::wait_for("the pod gone", Duration::from_secs(60), || async {
        pods.get_opt("svc").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(shared.join("svc/order")).unwrap(),
        "app-prestop\napp-term\nside2-prestop\nside2-term\nside-prestop\nside-term\n"
    );
}

/// A preStop exec hook that appends `line` to /shared/order.
fn pre_stop(line: &str) -> serde_json::Value {
    json!({"preStop": {"exec": {"command": ["sh", "-c", format!("echo {line} >> /shared/order")]}}})
}

/// A grpc.health.v1 server on loopback (HTTP/2 by hyper): answers Check with the status
/// in `state` and records the services asked for.
struct HealthServer {
    addr: std::net::SocketAddr,
    status: std::sync::Arc<std::sync::atomic::AtomicU8>,
    services: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn health_server() -> HealthServer {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use std::sync::atomic::Ordering;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let status = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(1));
    let services = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (st, sv) = (status.clone(), services.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (st, sv) = (st.clone(), sv.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (st, sv) = (st.clone(), sv.clone());
                        async move {
                            assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            // 5-byte prefix, then field 1 (0x0a), a one-byte length, the name
                            let name = body
                                .get(7..)
                                .map(|b| String::from_utf8_lossy(b).into_owned())
                                .unwrap_or_default();
                            sv.lock().unwrap().push(name);
                            let msg = vec![0, 0, 0, 0, 2, 0x08, st.load(Ordering::SeqCst)];
                            let mut trailers = hyper::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
                                Ok(Frame::data(Bytes::from(msg))),
                                Ok(Frame::trailers(trailers)),
                            ];
                            let body = StreamBody::new(futures::stream::iter(frames));
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/grpc")
                                    .body(body)
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
            });
        }
    });
    HealthServer {
        addr,
        status,
        services,
        task,
    }
}

/// A grpc readiness probe (hostNetwork pod, the health server in this process on
/// loopback): SERVING makes the pod Ready, NOT_SERVING unready with the kubelet's
/// Unhealthy event; the probe names its service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_probes() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-grpc");
    wait_node_ready(&c.client, &node).await;
    let server = health_server().await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let p = pod_of(
        "grpc",
        "n-grpc",
        json!({"hostNetwork": true, "containers": [container("c", &c.image, "exec sleep 3600",
            json!({"readinessProbe": {"grpc": {"port": server.addr.port(), "service": "skiff.test"},
                "periodSeconds": 1, "failureThreshold": 1}}))]}),
    );
    pods.create(&PostParams::default(), &p).await.unwrap();
    wait_pod(&pods, "grpc", "Ready", 60, &node, running_ready).await;
    assert!(
        server
            .services
            .lock()
            .unwrap()
            .iter()
            .all(|s| s == "skiff.test")
    );
    server.status.store(2, std::sync::atomic::Ordering::SeqCst);
    wait_pod(&pods, "grpc", "unready", 30, &node, |p| {
        (!container_status(p)?.ready).then_some(())
    })
    .await;
    api_common::wait_for("the Unhealthy event", Duration::from_secs(30), || async {
        pod_events(&c.client, "grpc")
            .await
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Unhealthy")
                    && e.message.as_deref()
                        == Some("Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")")
            })
            .then_some(())
    })
    .await;
    server.status.store(1, std::sync::atomic::Ordering::SeqCst);
    wait_pod(&pods, "grpc", "Ready again", 30, &node, running_ready).await;
}

/// A small ext4 file system on a loop device, mounted at `at`; unmounted and detached when
/// dropped.
struct LoopFs {
    at: PathBuf,
    device: String,
    _image: tempfile::TempDir,
}

impl LoopFs {
    fn new(at: &Path, mib: u64) -> LoopFs {
        let image = tempfile::tempdir().unwrap();
        let file = image.path().join("fs.img");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        common::run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .arg(&file),
        );
        let device = common::run(
            Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&file),
        )
        .trim()
        .to_string();
        std::fs::create_dir_all(at).unwrap();
        let fs = LoopFs {
            at: at.to_path_buf(),
            device,
            _image: image,
        };
        common::run(Command::new("mount").arg(&fs.device).arg(at));
        fs
    }

    /// (capacity, available) in bytes.
    fn usage(&self) -> (u64, u64) {
        let st = nix::sys::statvfs::statvfs(&self.at).unwrap();
        let f = st.fragment_size() as u64;
        (st.blocks() as u64 * f, st.blocks_available() as u64 * f)
    }

    fn used_percent(&self) -> u64 {
        let (cap, avail) = self.usage();
        100 - avail * 100 / cap
    }

    /// Allocates a file so that the file system is `percent` used.
    fn fill_to(&self, name: &str, percent: u64) {
        let (cap, avail) = self.usage();
        let want_avail = cap * (100 - percent) / 100;
        let len = avail.saturating_sub(want_avail);
        common::run(
            Command::new("fallocate")
                .args(["-l", &len.to_string()])
                .arg(self.at.join(name)),
        );
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.at, nix::mount::MntFlags::MNT_DETACH);
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// Restarts `node`'s agent with its root dir on a 160 MiB file system of its own; returns
/// the root dir and the file system once the node is Ready.
async fn root_on_loop_fs(c: &Cluster, node: &mut TestNode) -> (PathBuf, LoopFs) {
    node.kill_agent();
    let root = node.path("root");
    let _ = std::fs::remove_dir_all(&root);
    let fs = LoopFs::new(&root, 160);
    node.start_agent();
    wait_node_ready(&c.client, node).await;
    (root, fs)
}

/// The names of the images in a node's store.
fn stored_images(root: &Path) -> Vec<String> {
    skiff_rootfs::store::Store::open(root)
        .unwrap()
        .list_images()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect()
}

/// The status of the Node's condition `type_`.
fn condition(n: &Node, type_: &str) -> Option<String> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

fn disk_pressure(n: &Node) -> Option<String> {
    condition(n, "DiskPressure")
}

/// Image GC on a 160 MiB loop-mounted root dir: past 85 % use the unused images go, least
/// recently used first, until 80 %; the image of a running pod stays. Past what GC can
/// free (every unused image gone), the Node reports DiskPressure (imagefs.available < 15 %)
/// until space comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_gc_under_disk_pressure() {
    let c = cluster().await;
    // three images with big layers of their own (random, so that gzip keeps them big)
    let layouts = tempfile::tempdir().unwrap();
    let layout = common::Layout::init(&layouts.path().join("oci"));
    for tag in ["a", "b", "keep"] {
        let mut noise = vec![0u8; 3 << 20];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut noise))
            .unwrap();
        let marker: String = noise.iter().map(|b| format!("{b:02x}")).collect();
        layout.add_busybox(tag, "amd64", &marker);
        c._registry
            .push(&layout.dir, tag, &format!("gc/{tag}:1"), &[]);
    }
    let mut node = TestNode::with_args(
        &c.server,
        "n-gc",
        &[
            "--pod-network",
            "none",
            "--proxy=false",
            "--dns=false",
            "--image-minimum-gc-age",
            "0s",
            "--image-gc-period",
            "1s",
            // DiskPressure reported without evicting the pod that keeps its image (the
            // eviction test covers that): a soft threshold whose grace never ends
            "--eviction-hard=",
            "--eviction-soft=imagefs.available<15%",
            "--eviction-soft-grace-period=imagefs.available=1h",
            "--eviction-pressure-transition-period=1s",
            "--eviction-monitoring-period=1s",
        ],
    );
    let (root, fs) = root_on_loop_fs(&c, &mut node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let image = |tag: &str| c._registry.reference(&format!("gc/{tag}:1"));
    // a and b are pulled and used by pods that then go; keep's pod stays
    for tag in ["a", "b", "keep"] {
        let p = pod_of(
            &format!("gc-{tag}"),
            "n-gc",
            json!({"containers": [container("c", &image(tag), "exec sleep 3600", json!({}))]}),
        );
        pods.create(&PostParams::default(), &p).await.unwrap();
        wait_pod(&pods, &format!("gc-{tag}"), "Running", 60, &node, |p| {
            (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
        // a GC pass must have seen the image in use (an image never seen in use goes before
        // every used one, as the kubelet orders them)
        let seen = format!("gc/{tag}:1");
        api_common::wait_for(
            "image GC saw the image in use",
            Duration::from_secs(30),
            || {
                let log = node.log();
                let hit = log
                    .lines()
                    .any(|l| l.contains("image GC: image seen in use") && l.contains(&seen));
                async move { hit.then_some(()) }
            },
        )
        .await;
        if tag != "keep" {
            pods.delete(&format!("gc-{tag}"), &DeleteParams::default())
                .await
                .unwrap();
            api_common::wait_for("pod gone", Duration::from_secs(60), || async {
                pods.get_opt(&format!("gc-{tag}"))
                    .await
                    .unwrap()
                    .is_none()
                    .then_some(())
            })
            .await;
        }
    }
    let names = stored_images(&root);
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        fs.used_percent() < 85,
        "{}% used before the ballast",
        fs.used_percent()
    );
    // past the high threshold: GC brings the use down to the low one
    fs.fill_to("ballast-1", 88);
    api_common::wait_for("image GC down to 80 %", Duration::from_secs(60), || async {
        (fs.used_percent() <= 80).then_some(())
    })
    .await;
    let left = stored_images(&root);
    assert!(
        !left.iter().any(|n| n.contains("gc/a")),
        "the least recently used image goes first: {left:?}"
    );
    assert!(
        left.iter().any(|n| n.contains("gc/keep")),
        "the running pod's image stays: {left:?}"
    );
    assert!(node.log().contains("unused image removed"));
    // more than GC can free (b goes too, keep stays): DiskPressure until the space is back
    fs.fill_to("ballast-2", 97);
    let nodes: Api<Node> = Api::all(c.client.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = nodes.get("n-gc").await.unwrap();
        if disk_pressure(&n).as_deref() == Some("True") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no DiskPressure at {}% used; images {:?}; agent log:\n{}",
            fs.used_percent(),
            stored_images(&root),
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = stored_images(&root);
    assert!(
        left.len() == 1 && left[0].contains("gc/keep"),
        "only the running pod's image is left: {left:?}"
    );
    std::fs::remove_file(root.join("ballast-2")).unwrap();
    std::fs::remove_file(root.join("ballast-1")).unwrap();
    api_common::wait_for("no DiskPressure", Duration::from_secs(60), || async {
        let n = nodes.get("n-gc").await.ok()?;
        (disk_pressure(&n).as_deref() == Some("False")).then_some(())
    })
    .await;
    pods.delete("gc-keep", &DeleteParams::default())
        .await
        .unwrap();
    api_common::wait_for("keep gone", Duration::from_secs(60), || async {
        pods.get_opt("gc-keep")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    node.kill_agent();
    drop(fs);
}

/// Node-pressure eviction on a 160 MiB loop-mounted root dir with `nodefs.available<50%`
/// (hard): the pod writing the most into its container's file system is evicted (phase
/// Failed, reason Evicted, the kubelet's message naming the container), its writable layer
/// reclaimed; the quiet pod keeps running; DiskPressure comes and goes (transition 1 s);
/// a BestEffort pod created under DiskPressure is rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_under_disk_pressure() {
    let c = cluster().await;
    let mut node = TestNode::with_args(
        &c.server,
        "n-evict",
        &[
            "--pod-network",
            "none",
            "--proxy=false",
            "--dns=false",
            "--eviction-hard=nodefs.available<50%",
            "--eviction-pressure-transition-period=1s",
            "--eviction-monitoring-period=1s",
        ],
    );
    let (root, fs) = root_on_loop_fs(&c, &mut node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let nodes: Api<Node> = Api::all(c.client.clone());
    let quiet = pod_of(
        "quiet",
        "n-evict",
        json!({"containers": [container("quiet", &c.image,
            "dd if=/dev/zero of=/small bs=1M count=2; exec sleep 3600", json!({}))]}),
    );
    pods.create(&PostParams::default(), &quiet).await.unwrap();
    wait_pod(&pods, "quiet", "Running", 60, &node, running_ready).await;
    assert!(fs.used_percent() < 40, "{}% used", fs.used_percent());
    // writes 4 MiB at a time into its own file system until stopped
    let writer = pod_of(
        "writer",
        "n-evict",
        json!({"containers": [container("writer", &c.image,
            "i=0; while true; do dd if=/dev/zero of=/fill$i bs=1M count=4 2>/dev/null; \
             i=$((i+1)); sleep 0.2; done", json!({}))]}),
    );
    pods.create(&PostParams::default(), &writer).await.unwrap();
    let evicted = wait_evicted(&pods, "writer", 120, &node).await;
    let st = evicted.status.unwrap();
    let msg = st.message.unwrap_or_default();
    assert!(
        msg.starts_with("The node was low on resource: ephemeral-storage. Threshold quantity: ")
            && msg.contains("Container writer was using ")
            && msg.ends_with(", request is 0, has larger consumption of ephemeral-storage. "),
        "{msg}"
    );
    let target = st
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .unwrap();
    assert_eq!(target.reason.as_deref(), Some("TerminationByKubelet"));
    assert!(node.log().contains("evicting pod"));
    // the writer's layer is reclaimed: the pressure goes, the quiet pod ran on
    api_common::wait_for("space back", Duration::from_secs(30), || async {
        (fs.used_percent() < 40).then_some(())
    })
    .await;
    let q = pods.get("quiet").await.unwrap();
    assert_eq!(q.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(container_status(&q).unwrap().restart_count, 0);
    api_common::wait_for("no DiskPressure", Duration::from_secs(30), || async {
        let n = nodes.get("n-evict").await.ok()?;
        (disk_pressure(&n).as_deref() == Some("False")).then_some(())
    })
    .await;
    // under DiskPressure (ballast) no new pod is admitted
    fs.fill_to("ballast", 60);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut topped_up = 0;
    while disk_pressure(&nodes.get("n-evict").await.unwrap()).as_deref() != Some("True") {
        // the evicted writer's blocks can still be freed after the first fill (CI once saw
        // 47% used after filling to 60%): top the ballast up until 60% is really used
        if fs.used_percent() < 60 {
            topped_up += 1;
            fs.fill_to(&format!("ballast-{topped_up}"), 60);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no DiskPressure at {}% used; agent log:\n{}",
            fs.used_percent(),
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_rejected(&c, &pods, &node, "DiskPressure").await;
    std::fs::remove_file(root.join("ballast")).unwrap();
    delete_pods(&pods, &["quiet", "writer", "late"]).await;
    node.kill_agent();
    drop(fs);
}

/// Waits until the pod is Failed with reason Evicted.
async fn wait_evicted(pods: &Api<Pod>, name: &str, secs: u64, node: &TestNode) -> Pod {
    wait_pod(pods, name, "Evicted", secs, node, |p| {
        let st = p.status.as_ref()?;
        (st.phase.as_deref() == Some("Failed") && st.reason.as_deref() == Some("Evicted"))
            .then(|| p.clone())
    })
    .await
}

/// A BestEffort pod `late` created now is rejected for the node's `condition`.
async fn assert_rejected(c: &Cluster, pods: &Api<Pod>, node: &TestNode, condition: &str) {
    let late = pod_of(
        "late",
        &node.name,
        json!({"containers": [container("late", &c.image, "exec sleep 3600", json!({}))]}),
    );
    pods.create(&PostParams::default(), &late).await.unwrap();
    let rejected = wait_pod(pods, "late", "rejected", 60, node, |p| {
        let st = p.status.as_ref()?;
        (st.phase.as_deref() == Some("Failed")).then(|| st.clone())
    })
    .await;
    assert_eq!(rejected.reason.as_deref(), Some("Evicted"));
    assert_eq!(
        rejected.message.as_deref(),
        Some(format!("Pod was rejected: The node had condition: [{condition}]. ").as_str())
    );
}

/// Deletes the pods and waits until they are gone.
async fn delete_pods(pods: &Api<Pod>, names: &[&str]) {
    for name in names {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    api_common::wait_for("pods gone", Duration::from_secs(60), || async {
        for name in names {
            if pods.get_opt(name).await.ok()?.is_some() {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// `memory.available` as the agent measures it (MemTotal less the working set: MemFree plus
/// `Inactive(file)`), in bytes.
fn memory_available() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb = |key: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    (kb("MemFree:") + kb("Inactive(file):")) * 1024
}

/// Node-pressure eviction on memory: a hard `memory.available` threshold 1 GiB below what
/// the machine has now; a BestEffort pod writing 32 MiB at a time into an emptyDir of
/// medium Memory (resident tmpfs pages charged to its cgroup, at most 3 GiB) crosses it and
/// is evicted (phase Failed, reason Evicted, the kubelet's message naming memory and the
/// container); the Guaranteed pod beside it runs on; while MemoryPressure holds (transition
/// period 5m) a BestEffort pod is rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_under_memory_pressure() {
    const MARGIN: u64 = 1 << 30;
    let c = cluster().await;
    let available = memory_available();
    assert!(
        available > 5 * MARGIN,
        "the memory eviction test needs more than 5 GiB available (MemFree + Inactive(file)), \
         the machine has {} MiB",
        available >> 20
    );
    let threshold = format!(
        "--eviction-hard=memory.available<{}Ki",
        (available - MARGIN) >> 10
    );
    let mut node = TestNode::with_args(
        &c.server,
        "n-mempress",
        &[
            "--pod-network",
            "none",
            "--proxy=false",
            "--dns=false",
            &threshold,
            "--eviction-pressure-transition-period=5m",
            "--eviction-monitoring-period=1s",
        ],
    );
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let nodes: Api<Node> = Api::all(c.client.clone());
    let limits = json!({"cpu": "100m", "memory": "64Mi"});
    let guaranteed = pod_of(
        "guaranteed",
        "n-mempress",
        json!({"containers": [container("g", &c.image, "exec sleep 3600",
            json!({"resources": {"requests": limits, "limits": limits}}))]}),
    );
    pods.create(&PostParams::default(), &guaranteed)
        .await
        .unwrap();
    wait_pod(&pods, "guaranteed", "Running", 60, &node, running_ready).await;
    let hog = pod_of(
        "hog",
        "n-mempress",
        json!({"volumes": [{"name": "mem", "emptyDir": {"medium": "Memory"}}],
            "containers": [container("hog", &c.image,
                "i=0; while [ $i -lt 96 ]; do dd if=/dev/zero of=/mem/f$i bs=1M count=32 \
                 2>/dev/null; i=$((i+1)); sleep 0.2; done; exec sleep 3600",
                json!({"volumeMounts": [{"name": "mem", "mountPath": "/mem"}]}))]}),
    );
    pods.create(&PostParams::default(), &hog).await.unwrap();
    let evicted = wait_evicted(&pods, "hog", 180, &node).await;
    let msg = evicted.status.unwrap().message.unwrap_or_default();
    assert!(
        msg.starts_with("The node was low on resource: memory. Threshold quantity: ")
            && msg.contains("Container hog was using ")
            && msg.ends_with(", request is 0, has larger consumption of memory. "),
        "{msg}"
    );
    assert!(node.log().contains("evicting pod"));
    let g = pods.get("guaranteed").await.unwrap();
    assert_eq!(g.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(container_status(&g).unwrap().restart_count, 0);
    // MemoryPressure holds for the transition period: no BestEffort pod is admitted
    api_common::wait_for("MemoryPressure", Duration::from_secs(30), || async {
        let n = nodes.get("n-mempress").await.ok()?;
        (condition(&n, "MemoryPressure").as_deref() == Some("True")).then_some(())
    })
    .await;
    assert_rejected(&c, &pods, &node, "MemoryPressure").await;
    let g = pods.get("guaranteed").await.unwrap();
    assert_eq!(g.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    delete_pods(&pods, &["guaranteed", "hog", "late"]).await;
    node.kill_agent();
}

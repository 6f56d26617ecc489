//! The three-node end-to-end suite (issue 8's scenario, issue 9's worker demo and
//! DaemonSet): one `skiff master` and three `skiff agent --pod-network bridge` (Service
//! proxy and cluster DNS on), each agent in its own network namespace on a test LAN bridge
//! with its own directories and cgroup prefix (`skiff_testsupport::cluster`), images from a
//! `docker-registry` on the LAN. Driven only by kubectl and curl from the LAN namespace.
//!
//! One test function per step group, each on a fresh cluster; they run one at a time (a
//! lock), as the machine is small. Needs root, kubectl, curl, nsenter, ip, nft,
//! docker-registry, skopeo, umoci and busybox-static; the host's network, nftables and
//! cgroups outside `skiff-e2e-<pid>-*` are never touched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../rootfs-tools/tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use skiff_testsupport::cluster::{Cluster, ClusterConfig, tail};

/// The suite's tests share the machine's two cores: one cluster at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The NodePort of the web Service.
const NODE_PORT: u16 = 30080;

/// A cluster with its registry, driven from a thread in the LAN namespace.
struct E2e {
    cluster: Cluster,
    registry: common::TestRegistry,
    _images: tempfile::TempDir,
}

impl E2e {
    /// `IMAGE:TAG` of the web image in the cluster's registry (tags `1` and `2`; the page
    /// says `v1` or `v2`).
    fn image(&self, tag: &str) -> String {
        self.registry.reference(&format!("e2e/web:{tag}"))
    }

    fn kubectl_try(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("kubectl")
            .args(self.cluster.kubectl_args())
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_try(args)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.diagnostics()))
    }

    fn apply(&self, yaml: &str) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.yaml");
        std::fs::write(&f, yaml).unwrap();
        self.kubectl(&["apply", "-f", &f.display().to_string()]);
    }

    /// Pods, agents' and master's log tails: what a failure message needs.
    fn diagnostics(&self) -> String {
        let pods = self
            .kubectl_try(&["get", "pods", "-A", "-o", "wide"])
            .unwrap_or_else(|e| e);
        let nodes = self.kubectl_try(&["get", "nodes"]).unwrap_or_else(|e| e);
        let sets = self
            .kubectl_try(&["get", "deploy,rs,ds", "-o", "wide"])
            .unwrap_or_else(|e| e);
        let routes: String = self
            .cluster
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "{} routes:\n{}",
                    n.name,
                    n.ns.ip(&["route"]).unwrap_or_else(|e| e.to_string())
                )
            })
            .collect();
        format!(
            "nodes:\n{nodes}\n{sets}\npods:\n{pods}\n{routes}\n{}--- master ---\n{}",
            self.cluster.agent_logs(),
            tail(&self.cluster.master_log(), 40)
        )
    }

    /// Polls `f` every 300 ms until it gives a value; panics with the diagnostics after
    /// `secs`.
    fn wait<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}\n{}", self.diagnostics());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Like [`E2e::wait`] for a fallible probe; the panic names the last error.
    fn wait_ok<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Result<T, String>) -> T {
        let mut last;
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            match f() {
                Ok(v) => return v,
                Err(err) => last = err,
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}: {last}\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits until `n` nodes are Ready.
    fn wait_nodes_ready(&self, n: usize) {
        self.wait(&format!("{n} nodes Ready"), 120, || {
            let out = self
                .kubectl_try(&[
                    "get",
                    "nodes",
                    "-o",
                    "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
                ])
                .ok()?;
            (out.lines().filter(|l| *l == "True").count() == n).then_some(())
        });
    }

    /// `name → (node, ready, deleting)` of the pods matching `selector`.
    fn pods(&self, selector: &str) -> BTreeMap<String, (String, bool, bool)> {
        let out = self
            .kubectl_try(&[
                "get",
                "pods",
                "-l",
                selector,
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.conditions[?(@.type==\"Ready\")].status} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
            ])
            .unwrap_or_default();
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                Some((
                    f.first()?.to_string(),
                    (
                        f.get(1)?.to_string(),
                        f.get(2) == Some(&"True"),
                        f.get(3).is_some_and(|s| !s.is_empty()),
                    ),
                ))
            })
            .collect()
    }

    /// Waits until exactly `n` pods match `selector`, all Ready and none terminating.
    fn wait_ready_pods(&self, selector: &str, n: usize, secs: u64) -> BTreeMap<String, String> {
        self.wait(&format!("{n} Ready pods {selector}"), secs, || {
            let pods = self.pods(selector);
            (pods.len() == n && pods.values().all(|(_, r, d)| *r && !d)).then(|| {
                pods.into_iter()
                    .map(|(name, (node, _, _))| (name, node))
                    .collect()
            })
        })
    }

    /// GET `url` from inside pod `pod` (busybox wget).
    fn wget_in(&self, pod: &str, url: &str) -> Result<String, String> {
        // (busybox's `wget -T` crashes; its `timeout` bounds the request instead)
        self.kubectl_try(&["exec", pod, "--", "timeout", "5", "wget", "-qO-", url])
    }
}

/// Runs `body` on a fresh cluster of `nodes` nodes (Ready) whose registry holds the web
/// image as tags `1` and `2`.
fn e2e(tag: &str, nodes: usize, body: impl FnOnce(&mut E2e) + Send) {
    e2e_with(tag, nodes, |_| {}, body)
}

/// [`e2e`] with `prepare` run on the cluster before the nodes are added.
fn e2e_with(
    tag: &str,
    nodes: usize,
    prepare: impl FnOnce(&mut Cluster) + Send,
    body: impl FnOnce(&mut E2e) + Send,
) {
    e2e_master(tag, nodes, &[], prepare, body)
}

/// [`e2e_with`] with more `skiff master` flags.
fn e2e_master(
    tag: &str,
    nodes: usize,
    master_extra: &[&str],
    prepare: impl FnOnce(&mut Cluster) + Send,
    body: impl FnOnce(&mut E2e) + Send,
) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    skiff_testsupport::require_root();
    for (tool, pkg) in [
        ("kubectl", "kubectl"),
        ("curl", "curl"),
        ("nsenter", "util-linux"),
        ("nft", "nftables"),
        ("ip", "iproute2"),
    ] {
        common::require(tool, pkg);
    }
    common::init_tls();
    let t0 = Instant::now();
    let cluster = Cluster::start(
        ClusterConfig {
            skiff: env!("CARGO_BIN_EXE_skiff").into(),
            lan: "10.77.0".into(),
            // a grace of 20 s: a lease renewal (every 10 s) may come up to 10 s late under CI load
            // before a node counts as lost (15 s lost a busy node's pods once)
            master_args: [
                "--node-monitor-grace-period",
                "20",
                "--default-toleration-seconds",
                "5",
                "--node-eviction-rate",
                "10",
            ]
            .iter()
            .chain(master_extra)
            .map(|s| s.to_string())
            .collect(),
            agent_args: Vec::new(),
        },
        tag,
    )
    .unwrap();
    let lan = cluster.lan().path();
    std::thread::scope(|s| {
        s.spawn(move || {
            // this thread, and every process and thread it starts, lives on the LAN
            let f = std::fs::File::open(&lan).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let images = tempfile::tempdir().unwrap();
            let registry = common::TestRegistry::start_at(&cluster.master_ip());
            let layout = images.path().join("layout");
            for t in ["1", "2"] {
                web_image(&layout, t);
                registry.push(&layout, t, &format!("e2e/web:{t}"), &[]);
            }
            let mut cluster = cluster;
            cluster.add_agent_args(&["--insecure-registry", registry.addr()]);
            prepare(&mut cluster);
            for _ in 0..nodes {
                cluster.add_node().unwrap();
            }
            let mut e = E2e {
                cluster,
                registry,
                _images: images,
            };
            e.wait_nodes_ready(nodes);
            eprintln!(
                "[{tag}] cluster of {nodes} nodes Ready in {:?}",
                t0.elapsed()
            );
            let t1 = Instant::now();
            body(&mut e);
            eprintln!("[{tag}] steps took {:?}", t1.elapsed());
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    });
}

/// Adds image `tag` to the OCI layout `layout` (made if missing): the rootfs of
/// scripts/busybox-bundle.sh (static busybox with all its applets, /etc/passwd) and
/// `/etc/skiff-test` saying `v<tag>`.
fn web_image(layout: &std::path::Path, tag: &str) {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let work = tempfile::tempdir().unwrap();
    if !layout.exists() {
        common::run(
            Command::new("umoci")
                .arg("init")
                .arg("--layout")
                .arg(layout),
        );
    }
    let image = format!("{}:{tag}", layout.display());
    common::run(Command::new("umoci").args(["new", "--image", &image]));
    let bundle = work.path().join("bundle");
    common::run(
        Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle),
    );
    std::fs::remove_dir_all(bundle.join("rootfs")).unwrap();
    common::run(Command::new(repo.join("scripts/busybox-bundle.sh")).arg(work.path().join("bb")));
    std::fs::rename(work.path().join("bb/rootfs"), bundle.join("rootfs")).unwrap();
    std::fs::write(bundle.join("rootfs/etc/skiff-test"), format!("v{tag}")).unwrap();
    common::run(
        Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle),
    );
    common::run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.cmd",
        "/bin/sh",
    ]));
}

/// The web app: `replicas` busybox httpd pods answering `v<tag> <pod name>`, a readiness
/// probe, a preStop pause (so endpoints drop a pod before it stops serving, as users do for
/// zero-downtime rollouts), behind Service `web-app` (ClusterIP + NodePort 30080, named
/// targetPort).
fn web_app(image: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-app
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web-app}}
  strategy:
    rollingUpdate: {{maxUnavailable: 0, maxSurge: 1}}
  template:
    metadata:
      labels: {{app: web-app}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: {image}
        command:
        - /bin/sh
        - -c
        - |
          mkdir -p /www
          echo "$(cat /etc/skiff-test) $(hostname)" > /www/index.html
          exec httpd -f -p 8080 -h /www
        ports:
        - {{name: http-web, containerPort: 8080}}
        readinessProbe:
          httpGet: {{path: /, port: http-web}}
          periodSeconds: 1
        lifecycle:
          preStop:
            exec:
              command: ["/bin/sleep", "2"]
---
apiVersion: v1
kind: Service
metadata:
  name: web-app
spec:
  type: NodePort
  selector: {{app: web-app}}
  ports:
  - {{name: http, port: 80, targetPort: http-web, nodePort: {NODE_PORT}}}
"#
    )
}

/// Applies the web app with 3 replicas and waits for the rollout.
fn deploy_web(e: &E2e, replicas: u32) -> BTreeMap<String, String> {
    e.apply(&web_app(&e.image("1"), replicas));
    e.kubectl(&["rollout", "status", "deploy/web-app", "--timeout=180s"]);
    e.wait_ready_pods("app=web-app", replicas as usize, 60)
}

/// Every web-app pod GETs every web-app pod's IP directly (those on other nodes included).
fn pods_reach_each_other(e: &E2e, pods: &BTreeMap<String, String>) {
    let ips = e.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=web-app",
        "-o",
        "jsonpath={.items[*].status.podIP}",
    ]);
    for pod in pods.keys() {
        for ip in ips.split_whitespace() {
            let body = e.wait_ok(&format!("pod {ip} from {pod}"), 30, || {
                e.wget_in(pod, &format!("http://{ip}:8080/"))
            });
            assert!(body.starts_with("v1 web-app-"), "{body}");
        }
    }
}

/// Step 1: the seed workflow.
#[test]
fn e2e_1_seed_workflow_spreads_and_serves() {
    e2e("seed", 3, |e| {
        let pods = deploy_web(e, 3);
        let nodes: BTreeSet<&String> = pods.values().collect();
        assert_eq!(nodes.len(), 3, "replicas spread over all nodes: {pods:?}");
        let cluster_ip = e.kubectl(&["get", "svc", "web-app", "-o", "jsonpath={.spec.clusterIP}"]);
        // from a pod on each node: by ClusterIP, by short and full DNS name; the answers
        // together come from more than one replica (other nodes' pods: host-gw routes)
        let mut answering = BTreeSet::new();
        for pod in pods.keys() {
            for url in [
                format!("http://{cluster_ip}/"),
                "http://web-app/".to_string(),
                "http://web-app.default.svc.cluster.local/".to_string(),
            ] {
                let body = e.wait_ok(&format!("{url} from {pod}"), 30, || e.wget_in(pod, &url));
                let name = body
                    .trim()
                    .strip_prefix("v1 ")
                    .unwrap_or_else(|| panic!("{url} from {pod}: {body}"));
                answering.insert(name.to_string());
            }
            let env = e.kubectl(&["exec", pod, "--", "env"]);
            assert!(
                env.contains(&format!("WEB_APP_SERVICE_HOST={cluster_ip}"))
                    && env.contains("WEB_APP_SERVICE_PORT=80")
                    && env.contains(&format!("WEB_APP_PORT=tcp://{cluster_ip}:80")),
                "{pod}'s env lacks the Service's variables:\n{env}"
            );
        }
        // a pod on each node reaches every other pod directly (host-gw between nodes)
        pods_reach_each_other(e, &pods);
        // the NodePort on every node's IP; together all replicas answer
        let mut via_node_port = BTreeSet::new();
        let ips: Vec<String> = e.cluster.nodes.iter().map(|n| n.ip.clone()).collect();
        for ip in &ips {
            let url = format!("http://{ip}:{NODE_PORT}/");
            let body = e.wait(&format!("NodePort at {url}"), 30, || curl(&url));
            via_node_port.insert(body.trim().to_string());
        }
        e.wait("every replica answering on the NodePorts", 60, || {
            for ip in &ips {
                if let Some(b) = curl(&format!("http://{ip}:{NODE_PORT}/")) {
                    via_node_port.insert(b.trim().to_string());
                }
            }
            (via_node_port.len() >= 3).then_some(())
        });
        let want: BTreeSet<String> = pods.keys().map(|p| format!("v1 {p}")).collect();
        assert_eq!(via_node_port, want);
        eprintln!("replicas {pods:?}; answering in-cluster: {answering:?}");
    });
}

/// GET `url` with curl from the test's namespace; the body on success.
fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "-m", "3", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Requests in a loop through the Service (NodePort on node1) until stopped; counts
/// answers per version and failures.
struct Load {
    stop: AtomicBool,
    ok: AtomicUsize,
    failed: Mutex<Vec<String>>,
    versions: Mutex<BTreeMap<String, usize>>,
}

impl Load {
    fn new() -> Load {
        Load {
            stop: AtomicBool::new(false),
            ok: AtomicUsize::new(0),
            failed: Mutex::new(Vec::new()),
            versions: Mutex::new(BTreeMap::new()),
        }
    }

    /// Requests `url` until stopped. A failure is recorded with its time, curl's error and
    /// `flow(port)`: what `node` tracked of the connection from curl's local `port`.
    fn run(&self, url: &str, flow: impl Fn(&str) -> String) {
        while !self.stop.load(Ordering::Relaxed) {
            let out = Command::new("curl")
                .args(["-sS", "-f", "-m", "5", "-w", "\n%{local_port}", url])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let (body, port) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
            if out.status.success() {
                self.ok.fetch_add(1, Ordering::Relaxed);
                let v = body.split(' ').next().unwrap_or("").to_string();
                *self.versions.lock().unwrap().entry(v).or_default() += 1;
            } else {
                self.failed.lock().unwrap().push(format!(
                    "{}: {} (from port {port}; tracked: {})",
                    chrono::Utc::now().format("%H:%M:%S%.3f"),
                    String::from_utf8_lossy(&out.stderr).trim(),
                    flow(port)
                ));
            }
        }
    }
}

/// The agents' log lines of pods starting and stopping and of proxy rule updates, to tell
/// where a failed request went.
fn pod_lifecycle_logs(e: &E2e) -> String {
    let mut out = String::new();
    for n in &e.cluster.nodes {
        for l in n.log().lines().filter(|l| {
            ["sandbox ready", "stopping pod", "pod removed", "statements"]
                .iter()
                .any(|k| l.contains(k))
        }) {
            out.push_str(&format!("{}: {l}\n", n.name));
        }
    }
    out
}

/// The TCP flows `node` tracks from source port `port`, as `conntrack -L` lists them.
fn conntrack_of(node: &skiff_testsupport::cluster::Agent, port: &str) -> String {
    let out = node
        .command("conntrack")
        .args(["-L", "-p", "tcp", "--sport", port])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Err(e) => format!("conntrack: {e}"),
    }
}

/// The image of the web-app pods (all of them), once they agree.
fn pods_image(e: &E2e) -> BTreeSet<String> {
    e.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=web-app",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ])
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

/// Step 2: scale, rolling update under load without a failed request, rollout undo.
#[test]
fn e2e_2_scale_rolling_update_without_errors_and_undo() {
    e2e("roll", 3, |e| {
        deploy_web(e, 3);
        e.kubectl(&["scale", "deploy/web-app", "--replicas=5"]);
        let pods = e.wait_ready_pods("app=web-app", 5, 120);
        assert_eq!(
            pods.values().collect::<BTreeSet<_>>().len(),
            3,
            "5 replicas on 3 nodes: {pods:?}"
        );
        let url = format!("http://{}:{NODE_PORT}/", e.cluster.nodes[0].ip);
        e.wait("the NodePort", 30, || curl(&url));
        let load = Load::new();
        std::thread::scope(|s| {
            let node1 = &e.cluster.nodes[0];
            s.spawn(|| load.run(&url, |port| conntrack_of(node1, port)));
            let t = Instant::now();
            e.kubectl(&[
                "set",
                "image",
                "deploy/web-app",
                &format!("web={}", e.image("2")),
            ]);
            e.kubectl(&["rollout", "status", "deploy/web-app", "--timeout=240s"]);
            e.wait_ready_pods("app=web-app", 5, 60);
            eprintln!("rolling update to v2 took {:?}", t.elapsed());
            // a few more requests after the rollout
            let after = load.ok.load(Ordering::Relaxed) + 10;
            e.wait("requests after the rollout", 30, || {
                (load.ok.load(Ordering::Relaxed) >= after).then_some(())
            });
            load.stop.store(true, Ordering::Relaxed);
        });
        let failed = load.failed.lock().unwrap().clone();
        let versions = load.versions.lock().unwrap().clone();
        eprintln!(
            "requests during the rollout: {} ok, {} failed, by version {versions:?}",
            load.ok.load(Ordering::Relaxed),
            failed.len()
        );
        assert!(
            failed.is_empty(),
            "failed requests: {failed:#?}\npods coming and going:\n{}",
            pod_lifecycle_logs(e)
        );
        assert!(versions.contains_key("v1") && versions.contains_key("v2"));
        assert_eq!(pods_image(e), BTreeSet::from([e.image("2")]));
        e.kubectl(&["rollout", "undo", "deploy/web-app"]);
        e.kubectl(&["rollout", "status", "deploy/web-app", "--timeout=240s"]);
        e.wait_ready_pods("app=web-app", 5, 60);
        assert_eq!(pods_image(e), BTreeSet::from([e.image("1")]));
        let body = e.wait("v1 through the Service again", 30, || {
            curl(&url).filter(|b| b.starts_with("v1 "))
        });
        eprintln!("after undo: {body}");
    });
}

/// The uid of pod `pod`.
fn uid_of(e: &E2e, pod: &str) -> String {
    e.kubectl(&["get", "pod", pod, "-o", "jsonpath={.metadata.uid}"])
}

/// PIDs (host view) of the processes named `comm` in the cgroups of the pod with `uid`.
fn pod_processes(uid: &str, comm: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cg = std::fs::read_to_string(p.path().join("cgroup")).unwrap_or_default();
        let c = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        // the pod cgroup names the uid, with dashes or underscores
        if (cg.contains(uid) || cg.contains(&uid.replace('-', "_"))) && c.trim() == comm {
            out.push(pid);
        }
    }
    out
}

/// The pod shims of every node run their agent's own binary through the read-only mount the
/// agent re-executed itself through at start (the same mount id: no re-exec of their own),
/// and that mount is read-only (CVE-2019-5736).
fn assert_shims_share_the_agents_protected_binary(e: &E2e) {
    for node in &e.cluster.nodes {
        let agent = node.pid().expect("the agent runs");
        let agent_exe = std::path::PathBuf::from(format!("/proc/{agent}/exe"));
        let mount = skiff_testsupport::mount_id(&agent_exe).unwrap();
        let mut shims = 0;
        for pod in std::fs::read_dir(node.path("run/pods")).unwrap().flatten() {
            let Ok(pid) = std::fs::read_to_string(pod.path().join("shim.pid")) else {
                continue;
            };
            let exe = std::path::PathBuf::from(format!("/proc/{}/exe", pid.trim()));
            assert_eq!(
                skiff_testsupport::mount_id(&exe).unwrap(),
                mount,
                "{}: the shim {} runs its binary through another mount than the agent",
                node.name,
                pid.trim()
            );
            shims += 1;
        }
        // (opening it for writing fails with ETXTBSY while it runs, whatever the mount)
        let flags = nix::sys::statvfs::statvfs(&agent_exe).unwrap().flags();
        assert!(
            flags.contains(nix::sys::statvfs::FsFlags::ST_RDONLY),
            "{}: the agent's binary is on a writable mount ({flags:?})",
            node.name
        );
        eprintln!(
            "{}: {shims} shims share the agent's read-only binary",
            node.name
        );
    }
}

/// Step 3: self-healing.
#[test]
fn e2e_3_killed_container_restarts_deleted_pod_is_replaced() {
    e2e("heal", 3, |e| {
        let pods = deploy_web(e, 3);
        assert_shims_share_the_agents_protected_binary(e);
        let victim = pods.keys().next().unwrap().clone();
        let uid = uid_of(e, &victim);
        let pids = e.wait("the container's httpd on the host", 30, || {
            let p = pod_processes(&uid, "httpd");
            (!p.is_empty()).then_some(p)
        });
        for pid in &pids {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        }
        e.wait("restartCount 1 and Ready again", 60, || {
            let out = e
                .kubectl_try(&[
                    "get",
                    "pod",
                    &victim,
                    "-o",
                    "jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}",
                ])
                .ok()?;
            (out.trim() == "1 true").then_some(())
        });
        // the restarted container serves again through the Service
        let url = format!("http://{}:{NODE_PORT}/", e.cluster.nodes[0].ip);
        e.wait("the restarted replica answering", 60, || {
            curl(&url).filter(|b| b.trim() == format!("v1 {victim}"))
        });
        // a deleted pod is replaced
        let other = pods.keys().nth(1).unwrap().clone();
        e.kubectl(&["delete", "pod", &other, "--wait=true", "--timeout=60s"]);
        let now = e.wait_ready_pods("app=web-app", 3, 90);
        assert!(!now.contains_key(&other), "{now:?}");
        assert!(now.contains_key(&victim));
        eprintln!("{victim} restarted, {other} replaced: {now:?}");
    });
}

/// Step 4: a node cut off and back.
#[test]
fn e2e_4_node_cut_off_pods_move_and_node_rejoins() {
    e2e("cut", 3, |e| {
        let pods = deploy_web(e, 3);
        let cut = "node3".to_string();
        let stranded: Vec<String> = pods
            .iter()
            .filter(|(_, n)| **n == cut)
            .map(|(p, _)| p.clone())
            .collect();
        assert!(!stranded.is_empty(), "a replica on {cut}: {pods:?}");
        let uids: Vec<String> = stranded.iter().map(|p| uid_of(e, p)).collect();
        let t = Instant::now();
        e.cluster.node(&cut).unwrap().kill();
        e.cluster.set_link(&cut, false).unwrap();
        e.wait(&format!("{cut} not Ready"), 60, || {
            let s = e
                .kubectl_try(&[
                    "get",
                    "node",
                    &cut,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .ok()?;
            (s != "True").then_some(())
        });
        eprintln!("{cut} NotReady after {:?}", t.elapsed());
        // the Service stops sending traffic there: its endpoints hold no address on the node
        e.wait("endpoints without the cut node", 30, || {
            let nodes = e
                .kubectl_try(&[
                    "get",
                    "endpoints",
                    "web-app",
                    "-o",
                    "jsonpath={.subsets[*].addresses[*].nodeName}",
                ])
                .ok()?;
            (!nodes.split_whitespace().any(|n| n == cut)).then_some(())
        });
        // replacements on the other nodes
        let replaced = e.wait("3 Ready replicas on the other nodes", 120, || {
            let live: BTreeMap<String, String> = e
                .pods("app=web-app")
                .into_iter()
                .filter(|(_, (n, r, d))| *r && !d && *n != cut)
                .map(|(p, (n, _, _))| (p, n))
                .collect();
            (live.len() == 3).then_some(live)
        });
        eprintln!("pods recreated after {:?}: {replaced:?}", t.elapsed());
        let url = format!("http://{}:{NODE_PORT}/", e.cluster.nodes[0].ip);
        for _ in 0..12 {
            let body = e.wait("the NodePort", 20, || curl(&url));
            let name = body.trim().trim_start_matches("v1 ").to_string();
            assert!(
                replaced.contains_key(&name),
                "{name} answered; only {replaced:?} should"
            );
        }
        // back: link up, agent restarted → Ready, its stale pods are cleaned up
        e.cluster.set_link(&cut, true).unwrap();
        e.cluster.node(&cut).unwrap().start().unwrap();
        e.wait_nodes_ready(3);
        e.wait("the stranded pods gone from the API", 90, || {
            let all = e.pods("app=web-app");
            stranded.iter().all(|p| !all.contains_key(p)).then_some(())
        });
        e.wait("the stranded pods' processes gone", 60, || {
            uids.iter()
                .all(|u| pod_processes(u, "httpd").is_empty())
                .then_some(())
        });
        e.wait_ready_pods("app=web-app", 3, 60);
        eprintln!("{cut} rejoined after {:?}", t.elapsed());
    });
}

/// Step 5: the master killed (-9) in the middle of a rollout.
#[test]
fn e2e_5_master_killed_mid_rollout_converges() {
    e2e("master", 3, |e| {
        deploy_web(e, 3);
        let svc_before = e.kubectl(&[
            "get",
            "svc",
            "web-app",
            "-o",
            "jsonpath={.metadata.uid} {.spec.clusterIP}",
        ]);
        e.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keep}\ndata: {k: v}\n");
        e.kubectl(&[
            "set",
            "image",
            "deploy/web-app",
            &format!("web={}", e.image("2")),
        ]);
        // the rollout has started: a pod of the new template exists
        e.wait("the rollout under way", 60, || {
            pods_image(e).contains(&e.image("2")).then_some(())
        });
        e.cluster.kill_master();
        e.cluster.start_master().unwrap();
        e.kubectl(&["rollout", "status", "deploy/web-app", "--timeout=90s"]);
        e.wait_ready_pods("app=web-app", 3, 90);
        assert_eq!(pods_image(e), BTreeSet::from([e.image("2")]));
        assert_eq!(
            e.kubectl(&[
                "get",
                "svc",
                "web-app",
                "-o",
                "jsonpath={.metadata.uid} {.spec.clusterIP}"
            ]),
            svc_before
        );
        assert_eq!(
            e.kubectl(&["get", "cm", "keep", "-o", "jsonpath={.data.k}"]),
            "v"
        );
        e.wait_nodes_ready(3);
        let url = format!("http://{}:{NODE_PORT}/", e.cluster.nodes[1].ip);
        e.wait("v2 through the Service", 30, || {
            curl(&url).filter(|b| b.starts_with("v2 "))
        });
    });
}

/// The queue of the worker demo: busybox httpd with CGI scripts. `/cgi-bin/reset?N` makes
/// N items, `/cgi-bin/take` hands out one (an atomic rename; empty when none is left),
/// `/cgi-bin/done?ITEM` records a completion, `/cgi-bin/count` says how many are done.
fn queue_yaml(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: queue
spec:
  replicas: 1
  selector:
    matchLabels: {{app: queue}}
  template:
    metadata:
      labels: {{app: queue}}
    spec:
      containers:
      - name: queue
        image: {image}
        command:
        - /bin/sh
        - -c
        - |
          mkdir -p /www/cgi-bin /q/todo /q/taken /q/done
          cgi() {{ printf '#!/bin/sh\necho Content-Type: text/plain\necho\n%s\n' "$2" > /www/cgi-bin/$1; chmod +x /www/cgi-bin/$1; }}
          cgi reset 'rm -f /q/todo/* /q/taken/* /q/done/*; i=0; while [ $i -lt "$QUERY_STRING" ]; do i=$((i+1)); touch /q/todo/$i; done; echo $i'
          cgi take 'for f in /q/todo/*; do [ -e "$f" ] && mv "$f" /q/taken/ 2>/dev/null && {{ basename "$f"; exit 0; }}; done'
          cgi done 'touch "/q/done/$QUERY_STRING"; echo ok'
          cgi count 'ls /q/done | wc -l'
          echo ok > /www/index.html
          exec httpd -f -p 8080 -h /www
        ports:
        - {{name: http, containerPort: 8080}}
        readinessProbe:
          httpGet: {{path: /, port: http}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: queue
spec:
  selector: {{app: queue}}
  ports:
  - {{port: 80, targetPort: http}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: worker
spec:
  replicas: 1
  selector:
    matchLabels: {{app: worker}}
  template:
    metadata:
      labels: {{app: worker}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: worker
        image: {image}
        command:
        - /bin/sh
        - -c
        - |
          while true; do
            item=$(timeout 5 wget -qO- http://queue/cgi-bin/take)
            if [ -z "$item" ]; then sleep 0.2; continue; fi
            sleep 1   # the work: one second per item
            timeout 5 wget -qO- "http://queue/cgi-bin/done?$item" >/dev/null
          done
"#
    )
}

/// Runs a batch of `items` with `workers` workers; the time from reset to all done.
fn run_batch(e: &E2e, queue_pod: &str, workers: u32, items: u32) -> Duration {
    e.kubectl(&["scale", "deploy/worker", &format!("--replicas={workers}")]);
    e.kubectl(&["rollout", "status", "deploy/worker", "--timeout=120s"]);
    e.wait(&format!("{workers} workers running"), 90, || {
        let pods = e.pods("app=worker");
        (pods.len() == workers as usize && pods.values().all(|(_, r, d)| *r && !d)).then_some(())
    });
    let q = |path: &str| e.wget_in(queue_pod, &format!("http://127.0.0.1:8080/cgi-bin/{path}"));
    let t = Instant::now();
    assert_eq!(
        q(&format!("reset?{items}")).unwrap().trim(),
        items.to_string()
    );
    e.wait(
        &format!("{items} items done by {workers} workers"),
        180,
        || {
            let n: u32 = q("count").ok()?.trim().parse().ok()?;
            (n >= items).then_some(())
        },
    );
    t.elapsed()
}

/// Step 6: the worker demo.
#[test]
fn e2e_6_worker_demo_more_workers_finish_sooner() {
    e2e("work", 3, |e| {
        e.apply(&queue_yaml(&e.image("1")));
        e.kubectl(&["rollout", "status", "deploy/queue", "--timeout=120s"]);
        let queue = e.wait_ready_pods("app=queue", 1, 60);
        let queue_pod = queue.keys().next().unwrap().clone();
        // nothing to do yet: the worker idles
        let items = 12;
        let one = run_batch(e, &queue_pod, 1, items);
        let four = run_batch(e, &queue_pod, 4, items);
        eprintln!(
            "worker demo: {items} items (1 s each) took {one:?} with 1 worker, {four:?} with 4 workers"
        );
        assert!(
            four.as_secs_f64() < one.as_secs_f64() * 0.6,
            "4 workers ({four:?}) not clearly faster than 1 ({one:?})"
        );
    });
}

/// Step 7: a DaemonSet has one pod per node, and a node that joins gets one.
#[test]
fn e2e_7_daemonset_one_pod_per_node_and_new_node_gets_one() {
    e2e("ds", 3, |e| {
        e.apply(&format!(
            r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: node-agent
spec:
  selector:
    matchLabels: {{app: node-agent}}
  template:
    metadata:
      labels: {{app: node-agent}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: a
        image: {}
        command: ["/bin/busybox", "sleep", "100000"]
"#,
            e.image("1")
        ));
        let pods = e.wait_ready_pods("app=node-agent", 3, 120);
        let nodes: BTreeSet<&String> = pods.values().collect();
        assert_eq!(nodes.len(), 3, "{pods:?}");
        e.kubectl(&["rollout", "status", "ds/node-agent", "--timeout=60s"]);
        e.cluster.add_node().unwrap();
        e.wait_nodes_ready(4);
        let pods = e.wait_ready_pods("app=node-agent", 4, 120);
        let nodes: BTreeSet<&str> = pods.values().map(String::as_str).collect();
        assert_eq!(nodes, BTreeSet::from(["node1", "node2", "node3", "node4"]));
        eprintln!("DaemonSet pods: {pods:?}");
    });
}

/// Step 8: `--pod-network vxlan` where the nodes are not on one L2 segment: the LAN
/// namespace routes between them (each node's address a /32), so host-gw routes cannot
/// work; pods reach each other and a ClusterIP across nodes through the overlay.
#[test]
fn e2e_8_vxlan_between_routed_nodes() {
    e2e_with(
        "vxlan",
        3,
        |c| c.set_pod_network("vxlan", true).unwrap(),
        |e| {
            // each node: the VXLAN device, and pod routes only through it (none via eth0).
            // The device is up before the node is Ready (NetworkReady); waiting costs nothing.
            for n in &e.cluster.nodes {
                let link = e.wait(&format!("{}'s VXLAN device", n.name), 60, || {
                    n.ns.ip(&["-d", "link", "show", "skiff.1"]).ok()
                });
                assert!(
                    link.contains("vxlan id 1") && link.contains(&format!("local {}", n.ip)),
                    "{}: {link}",
                    n.name
                );
                let routes = e.wait(&format!("{}'s overlay routes", n.name), 60, || {
                    let r = n.ns.ip(&["route", "show", "proto", "152"]).ok()?;
                    (r.lines().count() == 2).then_some(r)
                });
                assert!(
                    routes
                        .lines()
                        .all(|l| l.contains("dev skiff.1") && l.contains("onlink")),
                    "{}: {routes}",
                    n.name
                );
            }
            let pods = deploy_web(e, 3);
            let nodes: BTreeSet<&String> = pods.values().collect();
            assert_eq!(nodes.len(), 3, "replicas spread over all nodes: {pods:?}");
            pods_reach_each_other(e, &pods);
            // the ClusterIP from one pod: every replica answers in time, the two on other
            // nodes included
            let cluster_ip =
                e.kubectl(&["get", "svc", "web-app", "-o", "jsonpath={.spec.clusterIP}"]);
            let client = pods.keys().next().unwrap().clone();
            let mut answering = BTreeSet::new();
            e.wait("every replica answering the ClusterIP", 60, || {
                if let Ok(b) = e.wget_in(&client, &format!("http://{cluster_ip}/")) {
                    answering.insert(b.trim().to_string());
                }
                (answering.len() == 3).then_some(())
            });
            let want: BTreeSet<String> = pods.keys().map(|p| format!("v1 {p}")).collect();
            assert_eq!(answering, want);
        },
    );
}

/// Step 9 (issue 7, dual-stack): nodes with an IPv4 and an IPv6 InternalIP, a master with
/// both families' cluster and Service ranges: every pod gets an address of each family,
/// pods on different nodes reach each other over IPv6 (host-gw routes via the nodes' IPv6
/// addresses), an IPv6-only Service's ClusterIP spreads over all replicas, and cluster DNS
/// served at an IPv6 address resolves that Service's name.
#[test]
fn e2e_9_dual_stack_pods_and_services() {
    e2e_master(
        "dual",
        2,
        &[
            "--cluster-cidr",
            "10.244.0.0/16,fd00:10:244::/56",
            "--service-cluster-ip-range",
            "10.96.0.0/12,fd00:10:96::/108",
        ],
        |c| {
            c.set_ipv6_lan("fd00:77:0:0").unwrap();
            c.add_agent_args(&[
                "--service-cidr",
                "10.96.0.0/12,fd00:10:96::/108",
                "--cluster-dns",
                "fd00:10:96::a",
            ]);
        },
        |e| {
            let cidrs = e.kubectl(&["get", "nodes", "-o", "jsonpath={.items[*].spec.podCIDRs}"]);
            assert!(cidrs.contains("fd00:10:244:"), "{cidrs}");
            let pods = deploy_web(e, 2);
            let nodes: BTreeSet<&String> = pods.values().collect();
            assert_eq!(nodes.len(), 2, "replicas spread over both nodes: {pods:?}");
            // an address of each family, IPv4 first (the cluster's primary family)
            let mut v6 = BTreeMap::new();
            for pod in pods.keys() {
                let ips = e.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.podIPs[*].ip}"]);
                let ips: Vec<std::net::IpAddr> =
                    ips.split_whitespace().map(|s| s.parse().unwrap()).collect();
                assert!(
                    ips.len() == 2 && ips[0].is_ipv4() && ips[1].is_ipv6(),
                    "{pod}: {ips:?}"
                );
                v6.insert(pod.clone(), ips[1]);
            }
            // pod to pod over IPv6, across the nodes
            for from in pods.keys() {
                for (to, ip) in &v6 {
                    let body = e.wait_ok(&format!("{to} over IPv6 from {from}"), 30, || {
                        e.wget_in(from, &format!("http://[{ip}]:8080/"))
                    });
                    assert_eq!(body.trim(), format!("v1 {to}"));
                }
            }
            // an IPv6-only Service over the same pods
            e.apply(
                r#"apiVersion: v1
kind: Service
metadata:
  name: web6
spec:
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv6]
  selector: {app: web-app}
  ports:
  - {name: http, port: 80, targetPort: http-web}
"#,
            );
            let cip = e.kubectl(&["get", "svc", "web6", "-o", "jsonpath={.spec.clusterIP}"]);
            let cip: std::net::IpAddr = cip.trim().parse().unwrap();
            assert!(cip.is_ipv6(), "{cip}");
            let client = pods.keys().next().unwrap().clone();
            let mut answering = BTreeSet::new();
            e.wait("every replica answering the IPv6 ClusterIP", 60, || {
                if let Ok(b) = e.wget_in(&client, &format!("http://[{cip}]/")) {
                    answering.insert(b.trim().to_string());
                }
                (answering.len() == 2).then_some(())
            });
            let want: BTreeSet<String> = pods.keys().map(|p| format!("v1 {p}")).collect();
            assert_eq!(answering, want);
            // cluster DNS at an IPv6 address: the pods' resolver, and the Service's name
            let conf = e.kubectl(&["exec", &client, "--", "cat", "/etc/resolv.conf"]);
            assert!(conf.contains("nameserver fd00:10:96::a"), "{conf}");
            let answer = e.wait_ok("web6 resolved over IPv6", 30, || {
                e.kubectl_try(&[
                    "exec",
                    &client,
                    "--",
                    "nslookup",
                    "-type=AAAA",
                    "web6.default.svc.cluster.local",
                ])
                .and_then(|out| {
                    out.contains(&cip.to_string())
                        .then_some(out.clone())
                        .ok_or(out)
                })
            });
            assert!(answer.contains(&cip.to_string()), "{answer}");
        },
    );
}

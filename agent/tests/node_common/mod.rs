//! The agent test harness shared by the agent's test files: an in-process API server, a
//! `docker-registry` on loopback serving a busybox-static image, and `TestNode`, a real
//! `skiff agent` process with private root/run/log dirs and its own cgroup prefix.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../master/tests/api_common/mod.rs"]
pub mod api_common;
#[path = "../../../rootfs-tools/tests/common/mod.rs"]
pub mod common;

pub use std::path::{Path, PathBuf};
pub use std::process::{Child, Command, Stdio};
pub use std::time::Duration;

pub use k8s_openapi::api::core::v1::{Node, Pod};
pub use kube::api::{Api, DeleteParams, PostParams};
pub use kube::config::{KubeConfigOptions, Kubeconfig};
pub use serde_json::json;

/// The skiff binary next to this test's target dir.
pub fn skiff_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("skiff");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p skiff`",
        bin.display()
    );
    bin
}

pub async fn admin_client(server: &api_common::TestServer) -> kube::Client {
    let kc = Kubeconfig::read_from(server.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Mount points under `dir`, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// One node: an agent process and its private directories.
pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub prefix: String,
    pub name: String,
    pub args: Vec<String>,
    pub agent: Option<Child>,
}

impl TestNode {
    pub fn new(server: &api_common::TestServer, name: &str) -> TestNode {
        // the host's network is not the tests' to change: no bridge network, no Service
        // proxy (nftables) or cluster DNS address here
        TestNode::with_args(
            server,
            name,
            &["--pod-network", "none", "--proxy=false", "--dns=false"],
        )
    }

    pub fn with_args(server: &api_common::TestServer, name: &str, extra: &[&str]) -> TestNode {
        let mut n = TestNode::unstarted(server, name, extra);
        n.start_agent();
        n
    }

    /// A node as [`TestNode::with_args`] makes it, its agent not started yet.
    pub fn unstarted(server: &api_common::TestServer, name: &str, extra: &[&str]) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("skiff-test-{}-{name}", std::process::id());
        let p = |s: &str| dir.path().join(s).display().to_string();
        let args = vec![
            "agent".into(),
            "--server".into(),
            format!("https://{}", server.handle.addr),
            "--token".into(),
            server.handle.node_token.clone(),
            "--ca-file".into(),
            server.dir.path().join("ca.crt").display().to_string(),
            "--node-name".into(),
            name.into(),
            "--root-dir".into(),
            p("root"),
            "--run-dir".into(),
            p("run"),
            "--log-dir".into(),
            p("log"),
            "--node-ip".into(),
            "127.0.0.1".into(),
            "--cgroup-prefix".into(),
            prefix.clone(),
            // tests run side by side: any free port for the logs/exec endpoint
            "--listen-port".into(),
            "0".into(),
        ];
        // the host's disk is not the tests': its free space (this machine's root has 12 %)
        // would meet the kubelet's default imagefs.available<15% and evict or refuse every
        // pod; tests of eviction give their own thresholds
        let eviction_off = (!extra.iter().any(|a| a.starts_with("--eviction-hard")))
            .then(|| "--eviction-hard=".to_string());
        let args = args
            .into_iter()
            .chain(eviction_off)
            .chain(extra.iter().map(|s| s.to_string()))
            .collect();
        TestNode {
            dir,
            prefix,
            name: name.into(),
            args,
            agent: None,
        }
    }

    pub fn start_agent(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        let child = Command::new(skiff_bin())
            .args(&self.args)
            .env("SKIFF_LOG", "info,libcgroups=error")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(child);
    }

    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The shim's record of a container run.
    pub fn record(&self, uid: &str, container: &str, restart: u32) -> Option<serde_json::Value> {
        let p = self.path(&format!(
            "run/pods/{uid}/containers/{container}/{restart}.json"
        ));
        std::fs::read(p)
            .ok()
            .map(|d| serde_json::from_slice(&d).unwrap())
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill_agent();
        // containers, shims, mounts and cgroups the agent left (a failed test)
        let rt = skiff_runtime::Runtime::new(self.path("run/runtime"));
        for c in rt.list().unwrap_or_default() {
            let _ = c.delete(true);
        }
        if let Ok(pods) = std::fs::read_dir(self.path("run/pods")) {
            for p in pods.flatten() {
                if let Some(pid) = std::fs::read_to_string(p.path().join("shim.pid"))
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let mut mounts = mounts_under(self.dir.path());
        mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = skiff_agent::qos::remove_cgroup(
            Path::new("/sys/fs/cgroup"),
            Path::new(&format!("/{}", self.prefix)),
        );
    }
}

pub struct Cluster {
    pub server: api_common::TestServer,
    pub client: kube::Client,
    pub image: String,
    pub _registry: common::TestRegistry,
    pub _images: tempfile::TempDir,
}

pub async fn cluster() -> Cluster {
    skiff_testsupport::require_root();
    skiff_bin();
    common::init_tls();
    let images = tempfile::tempdir().unwrap();
    let registry = common::TestRegistry::start();
    let layout = common::busybox_layout(images.path());
    registry.push(&layout.dir, "latest", "busybox:1", &[]);
    let server = api_common::start().await;
    let client = admin_client(&server).await;
    Cluster {
        image: registry.reference("busybox:1"),
        server,
        client,
        _registry: registry,
        _images: images,
    }
}

pub async fn wait_node_ready(client: &kube::Client, node: &TestNode) {
    let nodes: Api<Node> = Api::all(client.clone());
    api_common::wait_for("node Ready", Duration::from_secs(30), || async {
        let n = nodes.get_opt(&node.name).await.ok().flatten()?;
        let ready = n
            .status?
            .conditions?
            .into_iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(())
    })
    .await;
}

pub fn pod(name: &str, node: &str, image: &str, script: &str, extra: serde_json::Value) -> Pod {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "c", "image": image,
                "command": ["/bin/sh", "-c", script],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
            }]
        }
    });
    json_patch_merge(&mut p["spec"], &extra);
    serde_json::from_value(p).unwrap()
}

pub fn json_patch_merge(a: &mut serde_json::Value, b: &serde_json::Value) {
    if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
}

pub async fn wait_pod<T>(
    api: &Api<Pod>,
    name: &str,
    what: &str,
    secs: u64,
    node: &TestNode,
    mut f: impl FnMut(&Pod) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(p) = api.get(name).await
            && let Some(v) = f(&p)
        {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            let p = api.get(name).await.ok();
            panic!(
                "timed out waiting for {what}; pod status: {}\nagent log:\n{}",
                serde_json::to_string_pretty(&p.map(|p| p.status)).unwrap(),
                node.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn running_ready(p: &Pod) -> Option<()> {
    let st = p.status.as_ref()?;
    let cs = st.container_statuses.as_ref()?.first()?;
    (st.phase.as_deref() == Some("Running") && cs.ready).then_some(())
}

/// The agent's logs/exec port from its Node's `daemonEndpoints`.
pub async fn kubelet_port(client: &kube::Client, node: &str) -> u16 {
    let n: Node = Api::all(client.clone()).get(node).await.unwrap();
    let port = n
        .status
        .unwrap()
        .daemon_endpoints
        .unwrap()
        .kubelet_endpoint
        .unwrap()
        .port;
    assert!(
        port > 0 && port != 10250,
        "a free port was asked for: {port}"
    );
    port as u16
}

/// kubectl with a time limit (a hanging `logs -f` or `exec` fails the test, never blocks it).
pub async fn kubectl_timed(
    c: &Cluster,
    version: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(api_common::kubectl_path(version));
    cmd.arg("--kubeconfig")
        .arg(c.server.kubeconfig())
        .args(args)
        .env("HOME", c.server.dir.path())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut w = child.stdin.take().unwrap();
        w.write_all(input.as_bytes()).await.unwrap();
        drop(w);
    }
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {version} {args:?} did not finish in 60 s"))
        .unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub async fn pod_events(
    client: &kube::Client,
    pod: &str,
) -> Vec<k8s_openapi::api::core::v1::Event> {
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    api.list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(pod))
        .collect()
}

pub fn container_status(p: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()
        .cloned()
}

pub fn exec_probe(cmd: &str, extra: serde_json::Value) -> k8s_openapi::api::core::v1::Probe {
    let mut p = json!({"exec": {"command": ["sh", "-c", cmd]}});
    json_patch_merge(&mut p, &extra);
    serde_json::from_value(p).unwrap()
}

/// A registry behind htpasswd (user `puller`, password `s3cret`) serving busybox as
/// `private/busybox:1`: the registry, its image reference, and the image layout's dir.
pub fn private_registry() -> (common::TestRegistry, String, tempfile::TempDir) {
    let images = tempfile::tempdir().unwrap();
    let registry = common::TestRegistry::start_with_auth("puller", "s3cret");
    let layout = common::busybox_layout(images.path());
    registry.push(&layout.dir, "latest", "private/busybox:1", &[]);
    let image = registry.reference("private/busybox:1");
    (registry, image, images)
}

/// A `kubernetes.io/dockerconfigjson` Secret `regcred` in `ns` for [`private_registry`].
pub async fn create_pull_secret(client: &kube::Client, ns: &str, registry: &common::TestRegistry) {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    let config = json!({"auths": {registry.addr(): {"username": "puller", "password": "s3cret"}}});
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "regcred"},
                "type": "kubernetes.io/dockerconfigjson",
                "stringData": {".dockerconfigjson": config.to_string()}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
}

/// The master's controllers, running against a `Cluster`'s API server until dropped.
pub struct Controllers(
    tokio::task::JoinHandle<Result<(), skiff_master::controllers::ControllerError>>,
);

impl Drop for Controllers {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the master's controllers (scheduler, Deployments, Jobs, HPA, …) with `settings`.
pub fn start_controllers(
    c: &Cluster,
    settings: skiff_master::controllers::Settings,
) -> Controllers {
    use skiff_master::controllers::{self, Context, Settings};
    let settings = Settings {
        apiserver_address: Some(c.server.handle.addr),
        ..settings
    };
    Controllers(tokio::spawn(controllers::run(Context {
        client: c.client.clone(),
        settings: std::sync::Arc::new(settings),
    })))
}

/// `kubectl exec -it` under `script(1)` in a 40x100 terminal: the output shown and the exit
/// code.
pub async fn exec_in_terminal(
    c: &Cluster,
    version: &str,
    pod: &str,
    command: &str,
) -> (String, Option<i32>) {
    kubectl_in_terminal(
        c,
        version,
        &format!("exec -it {pod} -- /bin/sh -c '{command}'"),
    )
    .await
}

/// kubectl with `args` (shell words) under `script(1)` in a 40x100 terminal: the output
/// shown and the exit code.
pub async fn kubectl_in_terminal(c: &Cluster, version: &str, args: &str) -> (String, Option<i32>) {
    let kubectl = api_common::kubectl_path(version);
    let inner = format!(
        "stty rows 40 cols 100; {} --kubeconfig {} {args}",
        kubectl.display(),
        c.server.kubeconfig().display()
    );
    let mut script = tokio::process::Command::new("script");
    script
        .args(["-qec", &inner, "/dev/null"])
        .env("HOME", c.server.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = script.spawn().unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {args} in a terminal did not finish"))
        .unwrap();
    (
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
        out.status.code(),
    )
}

/// `kubectl exec -it` (kubectl `exec_version`) in pod `shell` gets a pty of the caller's
/// size (40x100) and its exit code; then `kubectl attach` (`attach_version`) to a pod
/// ticking 16 times shows the output written from then on, until the container ends.
pub async fn terminal_then_attach(
    c: &Cluster,
    node: &TestNode,
    pods: &Api<Pod>,
    exec_version: &str,
    attach_version: &str,
) {
    let (shown, code) = exec_in_terminal(c, exec_version, "shell", "tty; stty size; exit 7").await;
    assert!(shown.contains("/dev/pts/"), "{shown:?}");
    assert!(shown.contains("40 100"), "{shown:?}");
    assert_eq!(code, Some(7), "{shown:?}");
    pods.create(
        &PostParams::default(),
        &pod(
            "ticks",
            &node.name,
            &c.image,
            "i=0; while [ $i -lt 16 ]; do echo tick $i; sleep 0.5; i=$((i+1)); done",
            json!({"restartPolicy": "Never"}),
        ),
    )
    .await
    .unwrap();
    wait_pod(pods, "ticks", "ticks Running", 60, node, |p| {
        container_status(p)?.state?.running.map(|_| ())
    })
    .await;
    api_common::wait_for("tick 1 logged", Duration::from_secs(20), || async {
        let out = kubectl_timed(c, attach_version, &["logs", "ticks"], None).await;
        text(&out.stdout).contains("tick 1\n").then_some(())
    })
    .await;
    let out = kubectl_timed(c, attach_version, &["attach", "ticks"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("tick 15\n"), "{shown:?}");
    assert!(
        !shown.contains("tick 0\n"),
        "attach shows only new output: {shown:?}"
    );
}

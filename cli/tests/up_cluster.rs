//! `skiff up` end to end, as the quickstart runs it: a one-node cluster (master, agent, pod
//! network, Service proxy, cluster DNS) in a network namespace of the test, the sample image
//! built offline by scripts/sample-image.sh, examples/sample-web.yaml applied with kubectl,
//! curl on the NodePort at the node IP reaching every replica, names resolved in a pod, and a
//! restart of `skiff up` adopting everything. Needs root, kubectl, curl, umoci and
//! busybox-static; the host's network is never touched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const NODE_IP: &str = "10.123.0.2";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `f` every 250 ms until it gives a value or `limit` passes.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The test's node: a network namespace with a veth pair (eth0 holds the node IP, the
/// default route goes to its peer), private directories and a cgroup prefix. Dropping it
/// removes the pods' processes, mounts, cgroups and the namespace, also after a failure.
struct Node {
    netns: String,
    dir: tempfile::TempDir,
    prefix: String,
    up: Option<Child>,
}

impl Node {
    fn new() -> Node {
        let netns = format!("skiff-up-{}", std::process::id());
        let ip = |args: &[&str]| run(Command::new("ip").args(args));
        ip(&["netns", "add", &netns]);
        let node = Node {
            netns: netns.clone(),
            dir: tempfile::tempdir().unwrap(),
            prefix: format!("skiff-test-up-{}", std::process::id()),
            up: None,
        };
        let n = netns.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"]);
        ip(&[
            "-n", n, "link", "add", "eth0", "type", "veth", "peer", "name", "gw0",
        ]);
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{NODE_IP}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", n, "link", "set", "eth0", "up"]);
        ip(&["-n", n, "link", "set", "gw0", "up"]);
        ip(&[
            "-n",
            n,
            "route",
            "add",
            "default",
            "via",
            "10.123.0.1",
            "dev",
            "eth0",
        ]);
        node
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn kubeconfig(&self) -> PathBuf {
        self.path("master/admin.kubeconfig")
    }

    /// Starts `skiff up` (node IP from the default route) and waits until it says Ready.
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("up.log"))
            .unwrap();
        let before = self.log().matches("is Ready").count();
        let p = |s: &str| self.path(s).display().to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["up", "--data-dir", &p("master"), "--root-dir", &p("root")])
            .args(["--run-dir", &p("run"), "--log-dir", &p("log")])
            .args(["--cgroup-prefix", &self.prefix])
            // the host's disk is not the test's: memory only (its free space may be under
            // the kubelet's imagefs threshold, which would refuse every pod)
            .arg("--eviction-hard=memory.available<100Mi")
            .env("SKIFF_LOG", "info,libcgroups=error")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.up = Some(child);
        wait_for("skiff up: node Ready", Duration::from_secs(60), || {
            if let Some(Ok(Some(st))) = self.up.as_mut().map(|c| c.try_wait()) {
                panic!("skiff up exited with {st}:\n{}", self.log());
            }
            (self.log().matches("is Ready").count() > before).then_some(())
        });
    }

    /// SIGTERM, as Ctrl-C: master and agent stop, pods stay.
    fn stop(&mut self) {
        if let Some(mut c) = self.up.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let st = c.wait().unwrap();
            assert!(st.success(), "skiff up after SIGTERM: {st}\n{}", self.log());
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("up.log")).unwrap_or_default()
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = run(Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args));
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.up.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // shims, pod processes, mounts and cgroups (the harness's teardown)
        skiff_testsupport::teardown::remove_node_state(
            self.dir.path(),
            Path::new("/sys/fs/cgroup"),
            &self.prefix,
        );
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

/// The pod names answering on the NodePort until all `want` replicas were seen.
fn replicas_answering(want: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    wait_for(
        "every replica answering on the NodePort",
        Duration::from_secs(60),
        || {
            let out = Command::new("curl")
                .args(["-sf", "-m", "3", &format!("http://{NODE_IP}:30080/")])
                .output()
                .ok()?;
            let body = String::from_utf8_lossy(&out.stdout);
            if let Some(name) = body.trim().strip_prefix("hello from ") {
                seen.insert(name.to_string());
            }
            (seen.len() >= want).then(|| seen.clone())
        },
    )
}

fn up_in_netns(node: &mut Node) {
    let t0 = Instant::now();
    node.start();
    let ready = t0.elapsed();
    let t1 = Instant::now();
    run(Command::new(repo().join("scripts/sample-image.sh"))
        .arg(node.path("root"))
        .env("SKIFF", env!("CARGO_BIN_EXE_skiff"))
        .current_dir(repo()));
    let image = t1.elapsed();
    let t2 = Instant::now();
    node.kubectl(&[
        "apply",
        "-f",
        &repo()
            .join("examples/sample-web.yaml")
            .display()
            .to_string(),
    ]);
    node.kubectl(&["rollout", "status", "deploy/sample-web", "--timeout=120s"]);
    let rollout = t2.elapsed();
    let names = replicas_answering(3);
    assert!(
        names.iter().all(|n| n.starts_with("sample-web-")),
        "{names:?}"
    );
    eprintln!(
        "node Ready {ready:?}, image {image:?}, rollout {rollout:?}, replicas answering: {names:?}"
    );

    // cluster DNS from a pod: the full name and the search path, through the ClusterIP
    let svc_ip = node.kubectl(&[
        "get",
        "svc",
        "sample-web",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let dns = node.kubectl(&[
        "exec",
        "deploy/sample-web",
        "--",
        "nslookup",
        "sample-web.default.svc.cluster.local",
    ]);
    assert!(dns.contains(&format!("Address: {svc_ip}")), "{dns}");
    for url in [
        "http://sample-web/",
        "http://sample-web.default.svc.cluster.local/",
    ] {
        let body = node.kubectl(&["exec", "deploy/sample-web", "--", "wget", "-qO-", url]);
        assert!(body.starts_with("hello from sample-web-"), "{url}: {body}");
    }
    // kube-dns, as clusters have it, at the address pods use
    let kube_dns = node.kubectl(&[
        "-n",
        "kube-system",
        "get",
        "svc",
        "kube-dns",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert_eq!(kube_dns, "10.96.0.10");

    // `skiff ctl` on a running workload: rollout status, logs, exec with exit codes
    let ctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("ctl")
            .arg("--kubeconfig")
            .arg(node.kubeconfig())
            .args(args)
            .output()
            .unwrap()
    };
    let out = ctl(&["rollout", "status", "deploy/sample-web", "--timeout=60s"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some("deployment \"sample-web\" successfully rolled out")
    );
    let out = ctl(&[
        "exec",
        "deploy/sample-web",
        "--",
        "wget",
        "-qO-",
        "http://sample-web/",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hello from sample-web-"));
    let out = ctl(&[
        "exec",
        "deploy/sample-web",
        "--",
        "sh",
        "-c",
        "echo oops >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    let out = ctl(&["exec", "-i", "deploy/sample-web", "--", "cat"]);
    assert!(out.status.success(), "exec -i with an empty stdin: {out:?}");
    // `echo hi | skiff ctl exec -i … -- cat`: the end of stdin reaches the container
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("ctl")
        .arg("--kubeconfig")
        .arg(node.kubeconfig())
        .args(["exec", "-i", "deploy/sample-web", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut w = child.stdin.take().unwrap();
        w.write_all(b"hi\n").unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("skiff ctl exec -i did not end with its stdin");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    let pod = node.kubectl(&["get", "pods", "-o", "jsonpath={.items[0].metadata.name}"]);
    // the same last lines as kubectl's; httpd may log a line between the two reads (it
    // answered the checks above), so read both again until a pair agrees
    let mut last = (String::new(), String::new());
    let agreed = (0..20).any(|_| {
        let logs = ctl(&["logs", &pod, "--tail=5"]);
        assert!(logs.status.success(), "{logs:?}");
        last = (
            String::from_utf8_lossy(&logs.stdout).into_owned(),
            node.kubectl(&["logs", &pod, "--tail=5"]),
        );
        let same = last.0 == last.1;
        if !same {
            std::thread::sleep(Duration::from_millis(200));
        }
        same
    });
    assert!(
        agreed,
        "skiff ctl logs {:?} != kubectl logs {:?}",
        last.0, last.1
    );

    // stop and start again: the pods are adopted, not replaced, and keep answering
    let pods_before = node.kubectl(&["get", "pods", "-o", "jsonpath={.items[*].metadata.uid}"]);
    node.stop();
    let t3 = Instant::now();
    node.start();
    eprintln!("restarted to Ready in {:?}", t3.elapsed());
    node.kubectl(&["rollout", "status", "deploy/sample-web", "--timeout=60s"]);
    assert_eq!(
        node.kubectl(&["get", "pods", "-o", "jsonpath={.items[*].metadata.uid}"]),
        pods_before
    );
    assert_eq!(replicas_answering(3), names);
    let body = node.kubectl(&[
        "exec",
        "deploy/sample-web",
        "--",
        "wget",
        "-qO-",
        "http://sample-web/",
    ]);
    assert!(body.starts_with("hello from sample-web-"), "{body}");

    // clean up through the API while the agent runs: the pods go away properly
    node.kubectl(&[
        "delete",
        "-f",
        &repo()
            .join("examples/sample-web.yaml")
            .display()
            .to_string(),
        "--wait=true",
    ]);
    wait_for("pods gone", Duration::from_secs(60), || {
        node.kubectl(&["get", "pods", "-o", "name"])
            .trim()
            .is_empty()
            .then_some(())
    });
    node.stop();
}

#[test]
fn skiff_up_serves_the_sample_web_app() {
    skiff_testsupport::require_root();
    for tool in ["kubectl", "curl", "umoci"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .status
                .success(),
            "{tool} is needed"
        );
    }
    let mut node = Node::new();
    let netns = PathBuf::from("/run/netns").join(&node.netns);
    // the whole test runs on a thread inside the node's namespace: `skiff up`, kubectl and
    // curl all start there (a plain setns: /sys stays the host's, unlike `ip netns exec`)
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&netns).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            up_in_netns(&mut node);
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    });
}

//! `skiff master` as a process: every write it acknowledged survives `kill -9` at any
//! moment (embedded store and etcd), the API keeps working when one of three etcd members
//! stops, and of two masters on one etcd exactly one runs the controllers, the other taking
//! over when the leader is killed; checked with the real kubectl and a real etcd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../master/tests/etcd_common/mod.rs"]
mod etcd_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_testsupport::MasterProcess as Master;

fn free_port() -> u16 {
    skiff_testsupport::free_port().unwrap()
}

/// Starts `skiff master` with `extra` arguments (its log goes to `dir/master.log`) and waits
/// until it is ready.
fn start_with(dir: &Path, port: u16, extra: &[&str]) -> Master {
    Master::start(Path::new(env!("CARGO_BIN_EXE_skiff")), dir, port, extra).unwrap()
}

fn kubectl(dir: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    skiff_testsupport::master::kubectl(&dir.join("admin.kubeconfig"), args, stdin).unwrap()
}

#[test]
fn acknowledged_objects_survive_kill_9_of_the_master() {
    kill_9_during_a_burst_of_creates(&["--store", "embedded"]);
}

#[test]
fn acknowledged_objects_survive_kill_9_of_the_master_on_etcd() {
    let etcd = etcd_common::EtcdCluster::start(1);
    let endpoints = etcd.endpoints_arg();
    kill_9_during_a_burst_of_creates(&["--store", "etcd", "--etcd-endpoints", &endpoints]);
}

/// Three rounds of: start the master, create ConfigMaps one after another with kubectl,
/// kill -9 the master in the middle; then every create kubectl saw succeed is stored.
fn kill_9_during_a_burst_of_creates(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut acknowledged = Vec::new();
    for round in 0..3 {
        let mut master = start_with(dir.path(), port, extra);
        // a burst of creates; the master is killed while the next ones are under way
        let writer = {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let mut done = Vec::new();
                for i in 0..1000 {
                    let name = format!("cm-{round}-{i}");
                    let body = format!(
                        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"i":"{i}"}}}}"#
                    );
                    if !kubectl(&dir, &["create", "-f", "-"], Some(&body)).0 {
                        break; // the master is gone
                    }
                    done.push(name);
                }
                done
            })
        };
        std::thread::sleep(Duration::from_millis(1500 + 400 * round));
        master.0.kill().unwrap(); // SIGKILL
        master.0.wait().unwrap();
        acknowledged.extend(writer.join().unwrap());
        assert!(
            !acknowledged.is_empty(),
            "no create was acknowledged in round {round}"
        );
    }
    let _master = start_with(dir.path(), port, extra);
    let out = configmap_names(dir.path());
    let stored: std::collections::HashSet<&str> = out.split_whitespace().collect();
    for name in &acknowledged {
        assert!(
            stored.contains(name.as_str()),
            "acknowledged {name} was lost"
        );
    }
    // and the store still takes writes and keeps its data consistent
    let (ok, out) = kubectl(
        dir.path(),
        &["create", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"after"}}"#),
    );
    assert!(ok, "{out}");
}

/// The names of the ConfigMaps in the default namespace, space separated.
fn configmap_names(dir: &Path) -> String {
    let (ok, out) = kubectl(
        dir,
        &[
            "get",
            "configmaps",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
        None,
    );
    assert!(ok, "{out}");
    out
}

fn create_configmap(dir: &Path, name: &str) -> (bool, String) {
    let body =
        format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}}}}"#);
    kubectl(dir, &["create", "-f", "-"], Some(&body))
}

/// Polls `f` every 100 ms until it returns Some or `within` passes.
fn poll<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn api_keeps_working_when_one_of_three_etcd_members_stops() {
    let mut etcd = etcd_common::EtcdCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let endpoints = etcd.endpoints_arg();
    let _master = start_with(
        dir.path(),
        free_port(),
        &["--store", "etcd", "--etcd-endpoints", &endpoints],
    );
    for i in 0..5 {
        let (ok, out) = create_configmap(dir.path(), &format!("before-{i}"));
        assert!(ok, "{out}");
    }
    // a watch that is open while the member goes away
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(dir.path().join("admin.kubeconfig"))
        .args(["get", "configmaps", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // the first member is the one the master's client knows first
    etcd.kill(0);
    // every request works with two of three members: creates, gets, lists, updates
    for i in 0..10 {
        let (ok, out) = create_configmap(dir.path(), &format!("after-{i}"));
        assert!(ok, "create {i} with one etcd member down: {out}");
    }
    let out = configmap_names(dir.path());
    let names: Vec<&str> = out.split_whitespace().collect();
    for i in 0..5 {
        assert!(names.contains(&format!("before-{i}").as_str()), "{out}");
    }
    for i in 0..10 {
        assert!(names.contains(&format!("after-{i}").as_str()), "{out}");
    }
    let (ok, out) = kubectl(
        dir.path(),
        &["label", "configmap", "after-3", "moved=yes"],
        None,
    );
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        dir.path(),
        &["get", "configmap", "-l", "moved=yes", "-o", "name"],
        None,
    );
    assert!(ok && out.trim() == "configmap/after-3", "{out}");
    // the open watch saw the creates made after the member stopped
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(seen.contains("configmap/after-9"), "watch output: {seen}");
}

/// A jsonpath of the controller-manager Lease, read through `dir`'s master.
fn lease_field(dir: &Path, jsonpath: &str) -> Option<String> {
    let (ok, out) = kubectl(
        dir,
        &[
            "get",
            "lease",
            "-n",
            "kube-system",
            "skiff-controller-manager",
            "-o",
            &format!("jsonpath={jsonpath}"),
        ],
        None,
    );
    ok.then_some(out)
}

/// holderIdentity and leaseTransitions of the controller-manager Lease.
fn leader_lease(dir: &Path) -> Option<(String, u32)> {
    let out = lease_field(dir, "{.spec.holderIdentity} {.spec.leaseTransitions}")?;
    let (holder, transitions) = out.trim().split_once(' ')?;
    Some((holder.to_string(), transitions.parse().ok()?))
}

fn renew_time(dir: &Path) -> Option<String> {
    lease_field(dir, "{.spec.renewTime}")
}

fn micro_time(text: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .unwrap_or_else(|e| panic!("a MicroTime, not {text:?}: {e}"))
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: ha, labels: {app: ha}}
spec:
  replicas: 5
  selector: {matchLabels: {app: ha}}
  template:
    metadata: {labels: {app: ha}}
    spec:
      containers: [{name: c, image: "nginx:1.7.9"}]
"#;

#[test]
fn two_masters_on_three_etcd_members_one_leader_and_a_takeover_after_kill_9() {
    let etcd = etcd_common::EtcdCluster::start(3);
    let endpoints = etcd.endpoints_arg();
    let args = ["--store", "etcd", "--etcd-endpoints", &endpoints];
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut masters: Vec<Option<Master>> = dirs
        .iter()
        .map(|d| Some(start_with(d.path(), free_port(), &args)))
        .collect();
    let ids: Vec<String> = masters
        .iter()
        .map(|m| {
            let pid = m.as_ref().unwrap().0.id();
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
            format!("{}_{pid}", host.trim())
        })
        .collect();
    // exactly one holds the Lease, and both masters serve the same Lease
    let (holder, transitions) = poll(Duration::from_secs(30), || leader_lease(dirs[0].path()))
        .expect("a leader Lease within 30 s");
    let leader = ids
        .iter()
        .position(|id| *id == holder)
        .unwrap_or_else(|| panic!("the Lease holder {holder} is neither master {ids:?}"));
    let standby = 1 - leader;
    assert_eq!(leader_lease(dirs[1].path()).unwrap().0, holder);
    // the leader's controllers: a Deployment of 5 gets one ReplicaSet and exactly 5 pods
    let (ok, out) = kubectl(
        dirs[standby].path(),
        &["apply", "-f", "-"],
        Some(DEPLOYMENT),
    );
    assert!(ok, "{out}");
    let pods = |dir: &Path| -> Option<usize> {
        let (ok, out) = kubectl(dir, &["get", "pods", "-l", "app=ha", "-o", "name"], None);
        ok.then(|| out.lines().filter(|l| l.starts_with("pod/")).count())
    };
    poll(Duration::from_secs(30), || {
        (pods(dirs[standby].path()) == Some(5)).then_some(())
    })
    .expect("5 pods of the Deployment");
    // it stays with the leader while the leader renews (several renew periods)
    let renewed_before =
        poll(Duration::from_secs(10), || renew_time(dirs[standby].path())).unwrap();
    let renewed = poll(Duration::from_secs(10), || {
        renew_time(dirs[standby].path()).filter(|t| *t != renewed_before)
    });
    assert!(renewed.is_some(), "the leader renews its Lease");
    assert_eq!(leader_lease(dirs[standby].path()).unwrap().0, holder);

    // kill -9 the leader: the standby takes the Lease once it has seen it unchanged for the
    // lease duration (15 s). It notices the last renewal within a retry period (2 s, jittered
    // up to 4.4 s) and tries again within another, so it takes over 15 s to 23.8 s after the
    // leader's last renewal, measured by the Lease's own times (not by this test's polling).
    let killed = Instant::now();
    let mut m = masters[leader].take().unwrap();
    m.0.kill().unwrap();
    m.0.wait().unwrap();
    let last_renewal = renew_time(dirs[standby].path()).expect("the Lease after the kill");
    let (new_holder, new_transitions) = poll(Duration::from_secs(40), || {
        leader_lease(dirs[standby].path()).filter(|(h, _)| *h == ids[standby])
    })
    .expect("the standby takes over the Lease");
    let took = killed.elapsed();
    eprintln!("takeover {took:?} after kill -9 of the leader");
    // no pod was added or lost across the takeover; the new leader's controllers work: a
    // scale to 6 adds exactly one pod, in the same ReplicaSet
    assert_eq!(pods(dirs[standby].path()), Some(5));
    let (ok, out) = kubectl(
        dirs[standby].path(),
        &["scale", "deployment", "ha", "--replicas=6"],
        None,
    );
    assert!(ok, "{out}");
    poll(Duration::from_secs(30), || {
        let n = pods(dirs[standby].path())?;
        assert!(n <= 6, "{n} pods for 6 replicas");
        (n == 6).then_some(())
    })
    .expect("6 pods after the scale");
    let (ok, out) = kubectl(
        dirs[standby].path(),
        &["get", "replicasets", "-l", "app=ha", "-o", "name"],
        None,
    );
    assert!(ok && out.lines().count() == 1, "one ReplicaSet: {out}");
    assert_eq!(new_holder, ids[standby]);
    assert_eq!(new_transitions, transitions + 1);
    let acquired = lease_field(dirs[standby].path(), "{.spec.acquireTime}").unwrap();
    let gap = micro_time(&acquired) - micro_time(&last_renewal);
    assert!(
        gap >= chrono::Duration::seconds(15) && gap <= chrono::Duration::milliseconds(24_800),
        "taken over {gap} after the last renewal ({last_renewal} → {acquired})"
    );
    let log = std::fs::read_to_string(dirs[standby].path().join("master.log")).unwrap();
    assert!(log.contains("became leader"), "{log}");
}

//! `skiff ctl` against a real `skiff master` (controllers on, no nodes): apply (created,
//! unchanged, configured; a bad document changes nothing), get in every output, describe
//! with events, scale, rollout history and undo, delete, and kubectl's errors; the objects
//! are read back with the real kubectl. logs and exec are covered with a running pod by
//! `up_cluster.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use skiff_testsupport::MasterProcess;
use skiff_testsupport::master::kubectl;

struct Cluster {
    dir: tempfile::TempDir,
    _master: MasterProcess,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let port = skiff_testsupport::free_port().unwrap();
        let master = MasterProcess::start(
            Path::new(env!("CARGO_BIN_EXE_skiff")),
            dir.path(),
            port,
            &[],
        )
        .unwrap();
        Cluster {
            dir,
            _master: master,
        }
    }

    fn kubeconfig(&self) -> std::path::PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// `skiff ctl args…`, with the kubeconfig from the environment as users set it.
    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("ctl")
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .output()
            .unwrap()
    }

    /// `skiff ctl args…` that must succeed: its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "skiff ctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `skiff ctl args…` that must fail: its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(!out.status.success(), "skiff ctl {args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let (ok, out) = kubectl(&self.kubeconfig(), args, None).unwrap();
        assert!(ok, "kubectl {args:?}: {out}");
        out
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

fn manifest(image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{app: web}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: {image}
        ports:
        - {{name: http, containerPort: 80}}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - {{port: 80, targetPort: http}}
"
    )
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ctl_covers_the_seed_workflow_against_the_master() {
    let c = Cluster::start();
    let v1 = c.write("v1.yaml", &manifest("registry.local/web:1", 2));

    // apply: created, then unchanged, then configured
    assert_eq!(
        c.ok(&["apply", "-f", &v1]),
        "deployment.apps/web created\nservice/web created\n"
    );
    assert_eq!(
        c.ok(&["apply", "-f", &v1]),
        "deployment.apps/web unchanged\nservice/web unchanged\n"
    );
    assert_eq!(
        c.kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "registry.local/web:1"
    );

    // a manifest with one bad document changes nothing
    let bad = c.write(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: good}\n---\napiVersion: v1\nmetadata: {name: nokind}\n",
    );
    let err = c.fails(&["apply", "-f", &bad]);
    assert!(err.contains("kind not set"), "{err}");
    let (found, _) = kubectl(&c.kubeconfig(), &["get", "configmap", "good"], None).unwrap();
    assert!(!found, "the good document of a bad manifest was applied");
    let err = c.fails(&[
        "apply",
        "-f",
        &c.write(
            "w.yaml",
            "apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n",
        ),
    ]);
    assert!(
        err.contains("resource mapping not found for kind \"Widget\""),
        "{err}"
    );

    // get: the server's columns, names, objects; kubectl's errors
    let table = c.ok(&["get", "deploy"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert!(lines.next().unwrap().starts_with("web "), "{table}");
    let wide = c.ok(&["get", "deployments.apps", "web", "-o", "wide"]);
    assert!(wide.lines().next().unwrap().contains("SELECTOR"), "{wide}");
    assert_eq!(
        c.ok(&["get", "svc/web", "deploy/web", "-o", "name"]),
        "service/web\ndeployment.apps/web\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "deploy/web", "-o", "json"])).unwrap();
    assert_eq!(json["kind"], "Deployment");
    assert!(json["metadata"].get("managedFields").is_none());
    let yaml = c.ok(&["get", "svc", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: List") && yaml.contains("name: web"),
        "{yaml}"
    );
    let all = c.ok(&["get", "svc", "-A"]);
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("default ") && l.contains("kubernetes")),
        "{all}"
    );
    assert_eq!(
        c.fails(&["get", "deploy", "nope"]).trim(),
        "Error from server (NotFound): deployments.apps \"nope\" not found"
    );
    assert!(
        c.fails(&["get", "widgets"])
            .contains("the server doesn't have a resource type \"widgets\"")
    );
    let out = c.ctl(&["get", "pods", "-n", "kube-node-lease"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "No resources found in kube-node-lease namespace."
    );

    // scale through the scale subresource
    assert_eq!(
        c.ok(&["scale", "deploy/web", "--replicas=4"]),
        "deployment.apps/web scaled\n"
    );
    assert_eq!(
        c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );

    // a second revision, its history, and undo back to the first
    let v2 = c.write("v2.yaml", &manifest("registry.local/web:2", 4));
    assert_eq!(
        c.ok(&["apply", "-f", &v2]),
        "deployment.apps/web configured\nservice/web unchanged\n"
    );
    wait_for("revision 2", || {
        c.kubectl(&[
            "get",
            "rs",
            "-o",
            "jsonpath={.items[*].metadata.annotations.deployment\\.kubernetes\\.io/revision}",
        ])
        .split_whitespace()
        .count()
            == 2
    });
    let history = c.ok(&["rollout", "history", "deploy/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    assert_eq!(
        c.ok(&["rollout", "undo", "deploy/web"]),
        "deployment.apps/web rolled back\n"
    );
    assert_eq!(
        c.kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "registry.local/web:1"
    );
    wait_for("revision 3", || {
        c.kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
        ]) == "3"
    });
    assert_eq!(
        c.ok(&["rollout", "undo", "deploy/web", "--to-revision=2"]),
        "deployment.apps/web rolled back\n"
    );
    assert!(
        c.fails(&["rollout", "undo", "deploy/web", "--to-revision=9"])
            .contains("unable to find specified revision 9 in history")
    );

    // describe: the object and the controller's events about it
    wait_for("a ScalingReplicaSet event", || {
        c.ok(&["describe", "deployment", "web"])
            .contains("ScalingReplicaSet")
    });
    let d = c.ok(&["describe", "deploy/web"]);
    assert!(d.contains("name: web") && d.contains("Events:"), "{d}");

    // delete from the manifest, waiting until the objects are gone
    assert_eq!(
        c.ok(&["delete", "-f", &v1]),
        "deployment.apps \"web\" deleted\nservice \"web\" deleted\n"
    );
    let (found, _) = kubectl(&c.kubeconfig(), &["get", "deploy", "web"], None).unwrap();
    assert!(!found);
    assert!(
        c.fails(&["delete", "svc", "web"])
            .contains("services \"web\" not found")
    );
    assert_eq!(c.ok(&["delete", "svc", "web", "--ignore-not-found"]), "");
}

//! The real kubectl (1.27 and 1.33) against the in-process API server: create, get in every
//! output, -l, get -w, describe, apply (client- and server-side), scale, patch (all types),
//! edit via KUBE_EDITOR, delete; each checked by what kubectl prints and what is stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use api_common::{MANIFESTS, TestServer, kubectl_path, start};
use serde_json::Value;

async fn stored(s: &TestServer, path: &str) -> Value {
    let (code, v) = s.admin("GET", path, "", b"").await;
    assert_eq!(code, 200, "{v}");
    v
}

const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments/nginx-deployment";
const SVC: &str = "/api/v1/namespaces/default/services/web-service";

async fn lifecycle(version: &str) {
    let s = start().await;
    let manifests = s.dir.path().join("m.yaml");
    std::fs::write(&manifests, MANIFESTS).unwrap();
    let m = manifests.to_str().unwrap();

    let out = s.ok(version, &["create", "-f", m]).await;
    assert!(
        out.contains("deployment.apps/nginx-deployment created"),
        "{out}"
    );
    assert!(out.contains("service/web-service created"), "{out}");
    let d = stored(&s, DEPLOY).await;
    assert_eq!(d["spec"]["replicas"], 3);
    let svc = stored(&s, SVC).await;
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.9")
    );

    // get: table, wide, yaml, json, label selector
    let out = s.ok(version, &["get", "deploy,svc"]).await;
    assert!(
        out.contains("NAME") && out.contains("nginx-deployment") && out.contains("web-service"),
        "{out}"
    );
    let out = s.ok(version, &["get", "deploy", "-o", "wide"]).await;
    assert!(out.contains("nginx-deployment"), "{out}");
    let out = s
        .ok(
            version,
            &["get", "deploy", "nginx-deployment", "-o", "yaml"],
        )
        .await;
    assert!(
        out.contains("image: nginx:1.14.2") && out.contains("resourceVersion:"),
        "{out}"
    );
    let out = s
        .ok(version, &["get", "svc", "web-service", "-o", "json"])
        .await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["spec"]["type"], "NodePort");
    let out = s
        .ok(
            version,
            &["get", "deploy,svc", "-l", "app=nginx", "-o", "name"],
        )
        .await;
    assert_eq!(out.trim(), "deployment.apps/nginx-deployment", "{out}");
    let out = s.ok(version, &["get", "ns"]).await;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(out.contains(ns), "{out}");
    }
    let out = s
        .ok(version, &["describe", "deploy", "nginx-deployment"])
        .await;
    assert!(out.contains("nginx:1.14.2"), "{out}");
    let out = s.ok(version, &["describe", "svc", "web-service"]).await;
    assert!(out.contains("30080"), "{out}");

    // scale
    let out = s
        .ok(
            version,
            &["scale", "deploy/nginx-deployment", "--replicas=5"],
        )
        .await;
    assert!(out.contains("scaled"), "{out}");
    let d = stored(&s, DEPLOY).await;
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 2);

    // patch: json, merge, strategic
    s.ok(
        version,
        &[
            "patch",
            "deploy",
            "nginx-deployment",
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":2}]"#,
        ],
    )
    .await;
    s.ok(
        version,
        &[
            "patch",
            "deploy",
            "nginx-deployment",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"tier":"web"}}}"#,
        ],
    )
    .await;
    s.ok(version, &["patch", "deploy", "nginx-deployment", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.25"}]}}}}"#]).await;
    let d = stored(&s, DEPLOY).await;
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["metadata"]["labels"]["tier"], "web");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.25"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["name"],
        "nginx"
    );

    // edit with a sed script as the editor
    let out = s
        .kubectl(
            version,
            &["edit", "deploy", "nginx-deployment"],
            &[("KUBE_EDITOR", "sed -i s/replicas:\\ 2/replicas:\\ 6/")],
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stored(&s, DEPLOY).await["spec"]["replicas"], 6);

    // apply twice with a change, then server-side
    let out = s.ok(version, &["apply", "-f", m]).await;
    assert!(out.contains("nginx-deployment"), "{out}");
    assert_eq!(stored(&s, DEPLOY).await["spec"]["replicas"], 3);
    std::fs::write(&manifests, MANIFESTS.replace("replicas: 3", "replicas: 4")).unwrap();
    let out = s.ok(version, &["apply", "-f", m]).await;
    assert!(
        out.contains("deployment.apps/nginx-deployment configured"),
        "{out}"
    );
    assert_eq!(stored(&s, DEPLOY).await["spec"]["replicas"], 4);
    std::fs::write(&manifests, MANIFESTS.replace("replicas: 3", "replicas: 1")).unwrap();
    let out = s
        .ok(
            version,
            &["apply", "--server-side", "--force-conflicts", "-f", m],
        )
        .await;
    assert!(out.contains("serverside-applied"), "{out}");
    assert_eq!(stored(&s, DEPLOY).await["spec"]["replicas"], 1);

    // delete
    let out = s.ok(version, &["delete", "-f", m]).await;
    assert!(out.contains("deleted"), "{out}");
    let (code, _) = s.admin("GET", DEPLOY, "", b"").await;
    assert_eq!(code, 404);
    let (code, _) = s.admin("GET", SVC, "", b"").await;
    assert_eq!(code, 404);
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_lifecycle() {
    lifecycle("1.27").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_lifecycle() {
    lifecycle("1.33").await;
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
        .await
        .ok()
        .flatten()
        .expect("kubectl get -w printed no line within 20s")
}

async fn get_watch(version: &str) {
    let s = start().await;
    let cm = s.dir.path().join("cm.yaml");
    std::fs::write(
        &cm,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: watched}\ndata: {a: b}\n",
    )
    .unwrap();
    let mut child = Command::new(kubectl_path(version))
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .args(["get", "configmaps", "-w", "--output-watch-events"])
        .env("HOME", s.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // the header arrives with the (empty) list... kubectl prints nothing for an empty list
    // until the first event, so create and read the event lines
    s.ok(version, &["create", "-f", cm.to_str().unwrap()]).await;
    let mut lines = Vec::new();
    loop {
        let l = next(&mut rx).await;
        let done = l.contains("watched");
        lines.push(l);
        if done {
            break;
        }
    }
    assert!(lines.last().unwrap().contains("ADDED"), "{lines:?}");
    s.ok(
        version,
        &["patch", "cm", "watched", "-p", r#"{"data":{"a":"c"}}"#],
    )
    .await;
    let l = next(&mut rx).await;
    assert!(l.contains("MODIFIED") && l.contains("watched"), "{l}");
    s.ok(version, &["delete", "cm", "watched"]).await;
    let l = next(&mut rx).await;
    assert!(l.contains("DELETED") && l.contains("watched"), "{l}");
    child.kill().unwrap();
    let _ = child.wait();
    s.handle.shutdown().await;
}

async fn validation_and_namespaces(version: &str) {
    let s = start().await;
    let bad = s.dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\ndata: {a: b}\nbogus: 1\n",
    )
    .unwrap();
    // kubectl's default --validate=strict: the server rejects the unknown field, stores nothing
    let out = s
        .kubectl(version, &["create", "-f", bad.to_str().unwrap()], &[])
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("BadRequest") && err.contains("unknown field \"bogus\""),
        "{err}"
    );
    let (code, _) = s
        .admin("GET", "/api/v1/namespaces/default/configmaps/bad", "", b"")
        .await;
    assert_eq!(code, 404);
    // an invalid name: 422 with the field
    // (manifests, not `create namespace`: kubectl 1.32+ sends protobuf for typed creates)
    let ns = |name: &str| {
        let p = s.dir.path().join(format!("ns-{name}.yaml"));
        std::fs::write(
            &p,
            format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"),
        )
        .unwrap();
        p.to_str().unwrap().to_string()
    };
    let out = s
        .kubectl(version, &["create", "-f", &ns("Bad_Name")], &[])
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Invalid") && err.contains("metadata.name"),
        "{err}"
    );
    // a namespace with content is emptied, then removed; default may not be deleted
    s.ok(version, &["create", "-f", &ns("scratch")]).await;
    let cm = s.dir.path().join("cm.yaml");
    std::fs::write(
        &cm,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: scratch}\n",
    )
    .unwrap();
    s.ok(version, &["create", "-f", cm.to_str().unwrap()]).await;
    let out = s
        .ok(version, &["delete", "namespace", "scratch", "--wait=false"])
        .await;
    assert!(out.contains("deleted"), "{out}");
    api_common::poll(20, || async {
        let (code, _) = s.admin("GET", "/api/v1/namespaces/scratch", "", b"").await;
        (code == 404).then_some(())
    })
    .await;
    let (code, _) = s
        .admin("GET", "/api/v1/namespaces/scratch/configmaps/c", "", b"")
        .await;
    assert_eq!(code, 404);
    let out = s
        .kubectl(version, &["delete", "namespace", "default"], &[])
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Forbidden"));
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_validation_and_namespaces() {
    validation_and_namespaces("1.27").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_validation_and_namespaces() {
    validation_and_namespaces("1.33").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_get_watch() {
    get_watch("1.27").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_get_watch() {
    get_watch("1.33").await;
}

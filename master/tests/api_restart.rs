//! The server on the embedded store: credentials and objects survive a restart, and
//! Service allocations stay consistent. Plus discovery as kubectl sees it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;

use std::sync::Arc;

use api_common::{MANIFESTS, request, start};
use serde_json::{Value, json};
use skiff_master::api::{Config, serve};
use skiff_master::store::embedded::EmbeddedStore;

async fn serve_embedded(dir: &std::path::Path) -> skiff_master::api::ServerHandle {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = Arc::new(EmbeddedStore::open(&dir.join("store.redb")).unwrap());
    serve(Config {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        service_cidr: "10.96.0.0/12".into(),
        node_port_range: (30000, 32767),
        store,
    })
    .await
    .unwrap()
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(api_common::kubectl_path("1.33"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_credentials_objects_and_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.yaml");
    std::fs::write(&m, MANIFESTS).unwrap();
    let h = serve_embedded(dir.path()).await;
    let kc = h.kubeconfig.clone();
    let out = tokio::task::block_in_place(|| kubectl(&kc, &["create", "-f", m.to_str().unwrap()]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    let token = h.admin_token.clone();
    h.shutdown().await;

    let h = serve_embedded(dir.path()).await;
    assert_eq!(h.admin_token, token);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca.crt")).unwrap(),
        ca
    );
    let out = tokio::task::block_in_place(|| kubectl(&kc, &["get", "deploy,svc", "-o", "name"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("deployment.apps/nginx-deployment") && text.contains("service/web-service"),
        "{text}"
    );
    // nodePort 30080 is still taken after the restart
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "other"},
                     "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}});
    let (code, body) = request(
        h.addr,
        &dir.path().join("ca.crt"),
        "POST",
        "/api/v1/namespaces/default/services",
        Some(&token),
        "application/json",
        svc.to_string().as_bytes(),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_documents() {
    let s = start().await;
    let raw = |p: &'static str| {
        let s = &s;
        async move { s.ok("1.33", &["get", "--raw", p]).await }
    };
    let v: Value = serde_json::from_str(&raw("/version").await).unwrap();
    assert_eq!(v["gitVersion"], "v1.33.0-skiff");
    let v: Value = serde_json::from_str(&raw("/api/v1").await).unwrap();
    let pods = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods")
        .unwrap();
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["categories"], json!(["all"]));
    assert!(
        v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "pods/status")
    );
    let v: Value = serde_json::from_str(&raw("/apis").await).unwrap();
    assert!(
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "apps")
    );
    assert_eq!(raw("/healthz").await, "ok");
    // kubectl's own discovery (aggregated for 1.27+), short names and categories
    for version in ["1.27", "1.33"] {
        let out = s.ok(version, &["api-resources", "-o", "wide"]).await;
        assert!(
            out.contains("deployments") && out.contains("deploy") && out.contains("apps/v1"),
            "{out}"
        );
        let out = s.ok(version, &["get", "all", "-A"]).await;
        assert!(out.contains("service/kubernetes"), "{out}");
        let out = s
            .ok(
                version,
                &[
                    "get",
                    "po,rs,ev,ep,sa,cm,secrets,no,leases,endpointslices",
                    "-A",
                ],
            )
            .await;
        let _ = out;
    }
    s.handle.shutdown().await;
}

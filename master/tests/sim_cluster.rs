//! The simulated-node harness itself: a node registers, renews its Lease, and a pod bound to
//! it becomes Running and Ready; a stopped node stops renewing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;
mod cluster_common;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;
use skiff_master::controllers::Settings;

#[tokio::test]
async fn simulated_node_runs_bound_pods_and_renews_its_lease() {
    let mut cluster = cluster_common::SimCluster::start(Settings::default()).await;
    cluster
        .add_node(cluster_common::NodeSpec::new("sim-1"))
        .await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bound"},
        "spec": {"nodeName": "sim-1", "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let ip = cluster
        .wait_for("pod Running", Duration::from_secs(10), || async {
            let p = pods.get("bound").await.ok()?;
            let st = p.status?;
            (st.phase.as_deref() == Some("Running")).then_some(st.pod_ip?)
        })
        .await;
    assert!(ip.starts_with("10.244.1."), "{ip}");
    let out = cluster
        .kubectl(&["get", "pod", "bound", "-o", "wide"])
        .await;
    assert!(out.contains("Running") && out.contains("sim-1"), "{out}");

    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), "kube-node-lease");
    let renewed = |l: Lease| l.spec.and_then(|s| s.renew_time).map(|t| t.0);
    let first = cluster
        .wait_for("lease", Duration::from_secs(5), || async {
            renewed(leases.get("sim-1").await.ok()?)
        })
        .await;
    cluster
        .wait_for("lease renewal", Duration::from_secs(5), || async {
            let t = renewed(leases.get("sim-1").await.ok()?)?;
            (t > first).then_some(())
        })
        .await;
    cluster.stop_node("sim-1");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = renewed(leases.get("sim-1").await.unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        renewed(leases.get("sim-1").await.unwrap()).unwrap(),
        stopped
    );
}

//! The DaemonSet controller against a real API server with simulated nodes: a pod per node,
//! a new node gets one, a node with a taint the pods do not tolerate gets none, a rolling
//! update replaces them; `kubectl rollout status ds/x` and `kubectl get ds` (1.27, 1.32).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;
mod cluster_common;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use skiff_master::controllers::Settings;

use cluster_common::{NodeSpec, SimCluster};

const WAIT: Duration = Duration::from_secs(60);

const DS: &str = r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers:
      - {name: agent, image: "busybox:1.35"}
"#;

/// Waits until the running pods of the DaemonSet (not terminating) sit on exactly `nodes`,
/// one each, all with `image`; returns them.
async fn on_nodes(cluster: &SimCluster, nodes: &[&str], image: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let want: BTreeSet<String> = nodes.iter().map(|n| n.to_string()).collect();
    cluster
        .wait_for(
            &format!("daemon pods on {nodes:?} with {image}"),
            WAIT,
            || async {
                let list: Vec<Pod> = pods
                    .list(&ListParams::default().labels("app=agent"))
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                let on: Vec<String> = list
                    .iter()
                    .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                    .collect();
                let set: BTreeSet<String> = on.iter().cloned().collect();
                let images_ok = list.iter().all(|p| {
                    p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(image)
                });
                (on.len() == list.len() && set == want && on.len() == want.len() && images_ok)
                    .then_some(list)
            },
        )
        .await
}

#[tokio::test]
async fn daemonset_runs_one_pod_per_eligible_node() {
    let mut cluster = SimCluster::with_nodes(Settings::default(), &["n1", "n2", "n3"]).await;
    cluster.apply("1.32", DS).await;
    let pods = on_nodes(&cluster, &["n1", "n2", "n3"], "busybox:1.35").await;
    for p in &pods {
        let spec = p.spec.as_ref().unwrap();
        let terms = &spec
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        let field = &terms[0].match_fields.as_ref().unwrap()[0];
        assert_eq!(field.key, "metadata.name");
        assert_eq!(
            field.values.as_ref().unwrap()[0],
            spec.node_name.clone().unwrap()
        );
        let tolerations = spec.tolerations.as_ref().unwrap();
        assert!(
            tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unschedulable"))
        );
    }
    cluster
        .server
        .ok("1.32", &["rollout", "status", "ds/agent", "--timeout=60s"])
        .await;

    // A fourth node gets a pod; a fifth with a taint the pods do not tolerate gets none.
    cluster.add_node(NodeSpec::new("n4")).await;
    on_nodes(&cluster, &["n1", "n2", "n3", "n4"], "busybox:1.35").await;
    cluster.add_node(NodeSpec::new("n5")).await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    nodes
        .patch(
            "n5",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}})),
        )
        .await
        .unwrap();
    on_nodes(&cluster, &["n1", "n2", "n3", "n4"], "busybox:1.35").await;
    let sets: Api<DaemonSet> = Api::namespaced(cluster.client.clone(), "default");
    cluster
        .wait_for("status of 4 desired", WAIT, || async {
            let st = sets.get("agent").await.ok()?.status?;
            (st.desired_number_scheduled == 4
                && st.current_number_scheduled == 4
                && st.number_ready == 4
                && st.number_misscheduled == 0)
                .then_some(())
        })
        .await;
    for version in ["1.27", "1.32"] {
        let table = cluster
            .server
            .ok(version, &["get", "ds", "-o", "wide"])
            .await;
        let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            &header[..9],
            [
                "NAME",
                "DESIRED",
                "CURRENT",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "NODE",
                "SELECTOR",
                "AGE"
            ],
            "{table}"
        );
        let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            &row[..7],
            ["agent", "4", "4", "4", "4", "4", "<none>"],
            "{table}"
        );
    }

    // A rolling update replaces every pod, one node at a time.
    cluster
        .kubectl(&["set", "image", "ds/agent", "agent=busybox:1.36"])
        .await;
    let out = cluster
        .server
        .ok("1.27", &["rollout", "status", "ds/agent", "--timeout=60s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = on_nodes(&cluster, &["n1", "n2", "n3", "n4"], "busybox:1.36").await;
    let gens: BTreeSet<String> = pods
        .iter()
        .map(|p| p.metadata.labels.as_ref().unwrap()["pod-template-generation"].clone())
        .collect();
    assert_eq!(gens.into_iter().collect::<Vec<_>>(), ["2"]);
    let st = sets.get("agent").await.unwrap().status.unwrap();
    assert_eq!(st.updated_number_scheduled, Some(4));
    assert_eq!(st.observed_generation, Some(2));
}

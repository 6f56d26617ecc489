//! The scheduler against a master with simulated nodes, driven and checked with kubectl:
//! spreading, nodeSelector, taints and tolerations, cordon, a pod too big for every node
//! (message, condition, Event, then scheduled when a big node joins), and a burst that
//! never overcommits a node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;
mod cluster_common;

use std::collections::BTreeMap;
use std::time::Duration;

use cluster_common::{NodeSpec, SimCluster};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use skiff_master::controllers::Settings;

const WAIT: Duration = Duration::from_secs(20);

async fn three_nodes() -> SimCluster {
    let mut cluster = SimCluster::start(Settings::default()).await;
    for n in ["node-1", "node-2", "node-3"] {
        cluster.add_node(NodeSpec::new(n)).await;
    }
    cluster
}

fn pod_json(name: &str, cpu: &str, extra: Value) -> Pod {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu}}}]},
    });
    for part in ["metadata", "spec"] {
        for (k, v) in extra
            .get(part)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            p[part][k] = v.clone();
        }
    }
    serde_json::from_value(p).unwrap()
}

fn bound_count(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .count()
}

async fn create(cluster: &SimCluster, pod: Pod) {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

/// Waits until the pod is bound; returns its node.
async fn node_of(cluster: &SimCluster, name: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    cluster
        .wait_for(&format!("pod {name} bound"), WAIT, || async {
            pods.get(name).await.ok()?.spec?.node_name
        })
        .await
}

/// The node of each pod as `kubectl get pods -o wide` shows it.
async fn kubectl_nodes(cluster: &SimCluster) -> BTreeMap<String, String> {
    let out = cluster
        .kubectl(&[
            "get",
            "pods",
            "-o",
            "custom-columns=NAME:.metadata.name,NODE:.spec.nodeName",
            "--no-headers",
        ])
        .await;
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

#[tokio::test]
async fn pods_spread_and_follow_selectors_taints_and_cordon() {
    let mut cluster = three_nodes().await;
    let mut ssd = NodeSpec::new("node-ssd");
    ssd.labels.insert("disk".into(), "ssd".into());
    cluster.add_node(ssd).await;

    // nodeSelector
    create(
        &cluster,
        pod_json(
            "wants-ssd",
            "100m",
            json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
        ),
    )
    .await;
    assert_eq!(node_of(&cluster, "wants-ssd").await, "node-ssd");

    // taints: no pod without the toleration goes to node-ssd any more
    cluster
        .kubectl(&["taint", "nodes", "node-ssd", "dedicated=db:NoSchedule"])
        .await;
    // cordon: nor to node-3
    let out = cluster.kubectl(&["cordon", "node-3"]).await;
    assert!(out.contains("node/node-3 cordoned"), "{out}");
    let nodes_out = cluster.kubectl(&["get", "nodes"]).await;
    assert!(
        nodes_out.contains("Ready,SchedulingDisabled"),
        "{nodes_out}"
    );

    // six pods of one owner spread over the two nodes left, three each
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap();
    let owner = cms.create(&PostParams::default(), &owner).await.unwrap();
    let uid = owner.metadata.uid.unwrap();
    for i in 0..6 {
        create(
            &cluster,
            pod_json(
                &format!("spread-{i}"),
                "100m",
                json!({"metadata": {"labels": {"app": "spread"}, "ownerReferences": [{
                    "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid,
                    "controller": true}]}}),
            ),
        )
        .await;
    }
    for i in 0..6 {
        node_of(&cluster, &format!("spread-{i}")).await;
    }
    let placed = kubectl_nodes(&cluster).await;
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for (pod, node) in &placed {
        if pod.starts_with("spread-") {
            *per_node.entry(node).or_default() += 1;
        }
    }
    assert_eq!(
        per_node,
        BTreeMap::from([("node-1", 3), ("node-2", 3)]),
        "{placed:?}"
    );

    // a tolerating pod may use the tainted node
    create(
        &cluster,
        pod_json(
            "tolerates",
            "100m",
            json!({"spec": {"nodeSelector": {"disk": "ssd"}, "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}}),
        ),
    )
    .await;
    assert_eq!(node_of(&cluster, "tolerates").await, "node-ssd");

    // uncordon: node-3 is the emptiest again and takes the next pod
    cluster.kubectl(&["uncordon", "node-3"]).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cluster.client.clone());
    cluster
        .wait_for("node-3 uncordoned", WAIT, || async {
            let n = nodes.get("node-3").await.ok()?;
            (!n.spec?.unschedulable.unwrap_or(false)).then_some(())
        })
        .await;
    create(&cluster, pod_json("after-uncordon", "1", json!({}))).await;
    assert_eq!(node_of(&cluster, "after-uncordon").await, "node-3");

    // Scheduled events as kubectl shows them
    let events = cluster
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=after-uncordon",
        ])
        .await;
    assert!(
        events.contains("Scheduled")
            && events.contains("Successfully assigned default/after-uncordon to node-3"),
        "{events}"
    );
}

#[tokio::test]
async fn a_pod_too_big_reports_why_and_is_scheduled_when_a_big_node_joins() {
    let mut cluster = three_nodes().await;
    create(&cluster, pod_json("big", "6", json!({}))).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let want = "0/3 nodes are available: 3 Insufficient cpu.";
    let cond = cluster
        .wait_for("PodScheduled=False", WAIT, || async {
            let p = pods.get("big").await.ok()?;
            p.status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        })
        .await;
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(cond.message.as_deref(), Some(want));
    let describe = cluster
        .wait_for("FailedScheduling in describe", WAIT, || async {
            let out = cluster.kubectl(&["describe", "pod", "big"]).await;
            out.contains("FailedScheduling").then_some(out)
        })
        .await;
    assert!(describe.contains(want), "{describe}");
    assert!(describe.contains("Warning  FailedScheduling"), "{describe}");
    assert!(
        describe.contains("PodScheduled") && describe.contains("False"),
        "{describe}"
    );
    let out = cluster.kubectl(&["get", "pod", "big"]).await;
    assert!(out.contains("Pending"), "{out}");

    let mut big = NodeSpec::new("node-big");
    big.cpu = "16".into();
    cluster.add_node(big).await;
    assert_eq!(node_of(&cluster, "big").await, "node-big");
    let describe = cluster
        .wait_for("Scheduled in describe", WAIT, || async {
            let out = cluster.kubectl(&["describe", "pod", "big"]).await;
            out.contains("Successfully assigned default/big to node-big")
                .then_some(out)
        })
        .await;
    assert!(describe.contains("Normal   Scheduled"), "{describe}");
    let p = pods.get("big").await.unwrap();
    let scheduled = p
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap();
    assert_eq!(scheduled.status, "True");
}

#[tokio::test]
async fn a_burst_of_200_pods_never_overcommits_a_node() {
    let cluster = three_nodes().await;
    // 3 nodes × 4 cpu hold 120 pods of 100m; the other 80 stay pending
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let mut creates = Vec::new();
    for i in 0..200 {
        let pods = pods.clone();
        creates.push(tokio::spawn(async move {
            pods.create(
                &PostParams::default(),
                &pod_json(&format!("burst-{i}"), "100m", json!({})),
            )
            .await
            .unwrap();
        }));
    }
    for c in creates {
        c.await.unwrap();
    }
    let (bound, unschedulable) = cluster
        .wait_for("120 bound and 80 unschedulable", WAIT, || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            let bound = bound_count(&list.items);
            let unschedulable = list
                .items
                .iter()
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| {
                                c.type_ == "PodScheduled"
                                    && c.status == "False"
                                    && c.message.as_deref()
                                        == Some("0/3 nodes are available: 3 Insufficient cpu.")
                            })
                        })
                })
                .count();
            (bound + unschedulable == 200).then_some((bound, unschedulable))
        })
        .await;
    assert_eq!((bound, unschedulable), (120, 80));
    let placed = kubectl_nodes(&cluster).await;
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for node in placed.values().filter(|n| n.as_str() != "<none>") {
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(
        per_node,
        BTreeMap::from([("node-1", 40), ("node-2", 40), ("node-3", 40)])
    );
    // deleting bound pods frees room for pending ones, still without overcommit
    let victims: Vec<&str> = placed
        .iter()
        .filter(|(_, n)| n.as_str() != "<none>")
        .map(|(p, _)| p.as_str())
        .take(2)
        .collect();
    let mut args = vec!["delete", "pod", "--grace-period=0", "--force"];
    args.extend(&victims);
    cluster.kubectl(&args).await;
    cluster
        .wait_for("two more bound", WAIT, || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            let bound = bound_count(&list.items);
            (list.items.len() == 198 && bound == 120).then_some(())
        })
        .await;
}

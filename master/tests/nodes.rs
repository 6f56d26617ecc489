//! Node IPAM and node lifecycle against a real API server with simulated nodes: distinct
//! podCIDRs that survive a controller restart, are released with their Node and run out with
//! an Event; a node that stops renewing its Lease becomes Ready=Unknown, is tainted, its pods
//! drop out of endpoints and are evicted after their tolerationSeconds, and it recovers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;
mod cluster_common;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use skiff_master::controllers::Settings;

use cluster_common::{NodeSpec, SimCluster};

const WAIT: Duration = Duration::from_secs(20);

async fn pod_cidr(nodes: &Api<Node>, name: &str) -> Option<String> {
    let spec = nodes.get(name).await.ok()?.spec?;
    let cidr = spec.pod_cidr?;
    assert_eq!(spec.pod_cidrs.as_deref(), Some(&[cidr.clone()][..]));
    Some(cidr)
}

async fn events_for(client: &kube::Client, name: &str, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(name) && e.reason.as_deref() == Some(reason)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_cidrs_are_distinct_stable_released_and_run_out() {
    // Two /26 blocks in the cluster CIDR.
    let settings = Settings {
        cluster_cidr: "10.250.0.0/25".into(),
        node_cidr_mask: 26,
        ..Settings::default()
    };
    let mut cluster = SimCluster::start(settings).await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    cluster.add_node(NodeSpec::new("n1")).await;
    cluster.add_node(NodeSpec::new("n2")).await;
    let mut first = BTreeSet::new();
    for n in ["n1", "n2"] {
        let cidr = cluster
            .wait_for(&format!("podCIDR of {n}"), WAIT, || pod_cidr(&nodes, n))
            .await;
        first.insert(cidr);
    }
    assert_eq!(
        first,
        BTreeSet::from(["10.250.0.0/26".to_string(), "10.250.0.64/26".to_string()])
    );
    let n1_cidr = pod_cidr(&nodes, "n1").await.unwrap();

    // A restarted controller knows the blocks are taken: the range is full for n3.
    cluster.restart_controllers().await;
    cluster.add_node(NodeSpec::new("n3")).await;
    cluster
        .wait_for("CIDRNotAvailable event for n3", WAIT, || async {
            let ev = events_for(&cluster.client, "n3", "CIDRNotAvailable").await;
            (!ev.is_empty()).then_some(())
        })
        .await;
    assert_eq!(pod_cidr(&nodes, "n3").await, None);
    let out = cluster
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=n3",
        ])
        .await;
    assert!(out.contains("CIDRNotAvailable"), "{out}");

    // Deleting n1 releases its block, which n3 then gets; n2 keeps its own.
    nodes.delete("n1", &DeleteParams::default()).await.unwrap();
    let n3 = cluster
        .wait_for("podCIDR of n3", Duration::from_secs(45), || {
            pod_cidr(&nodes, "n3")
        })
        .await;
    assert_eq!(n3, n1_cidr);
    assert!(first.contains(&pod_cidr(&nodes, "n2").await.unwrap()));
    let out = cluster
        .kubectl(&[
            "get",
            "nodes",
            "-o",
            "custom-columns=N:.metadata.name,C:.spec.podCIDR",
        ])
        .await;
    assert!(out.contains(&n1_cidr), "{out}");
}

fn taint_keys(node: &Node) -> BTreeSet<(String, String)> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect()
}

fn ready_condition(node: &Node) -> Option<k8s_openapi::api::core::v1::NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_node_goes_unknown_is_tainted_pods_evicted_and_recovers() {
    let settings = Settings {
        node_monitor_grace_period: Duration::from_secs(2),
        default_toleration_seconds: 3,
        eviction_rate: 100.0,
        ..Settings::default()
    };
    let mut cluster = SimCluster::start(settings).await;
    cluster.add_node(NodeSpec::new("sim-1")).await;
    cluster.add_node(NodeSpec::new("sim-2")).await;
    let client = cluster.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (name, node, tolerations) in [
        ("p1", "sim-1", json!([])),
        ("p2", "sim-2", json!([])),
        // Tolerates unreachable forever: stays.
        (
            "stay",
            "sim-1",
            json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                   "effect": "NoExecute"}]),
        ),
    ] {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": node, "tolerations": tolerations,
                     "containers": [{"name": "c", "image": "nginx",
                                     "ports": [{"name": "http", "containerPort": 80}]}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    // The DefaultTolerationSeconds admission added the master's toleration seconds.
    let p1 = pods.get("p1").await.unwrap();
    let tols: BTreeSet<(String, Option<i64>)> = p1
        .spec
        .unwrap()
        .tolerations
        .unwrap()
        .into_iter()
        .map(|t| (t.key.unwrap_or_default(), t.toleration_seconds))
        .collect();
    assert_eq!(
        tols,
        BTreeSet::from([
            ("node.kubernetes.io/not-ready".to_string(), Some(3)),
            ("node.kubernetes.io/unreachable".to_string(), Some(3)),
        ])
    );
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let ready_count = |ep: &Endpoints| -> (usize, usize) {
        let subsets = ep.subsets.clone().unwrap_or_default();
        (
            subsets
                .iter()
                .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
                .sum(),
            subsets
                .iter()
                .map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len))
                .sum(),
        )
    };
    cluster
        .wait_for("three ready endpoints", WAIT, || async {
            let ep = eps.get_opt("web").await.unwrap()?;
            (ready_count(&ep) == (3, 0)).then_some(())
        })
        .await;

    let nodes: Api<Node> = Api::all(client.clone());
    cluster.stop_node("sim-1");
    let cond = cluster
        .wait_for("sim-1 Ready=Unknown", WAIT, || async {
            let c = ready_condition(&nodes.get("sim-1").await.ok()?)?;
            (c.status == "Unknown").then_some(c)
        })
        .await;
    assert_eq!(cond.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        cond.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    let node = cluster
        .wait_for("sim-1 tainted", WAIT, || async {
            let n = nodes.get("sim-1").await.ok()?;
            taint_keys(&n)
                .contains(&("node.kubernetes.io/unreachable".into(), "NoExecute".into()))
                .then_some(n)
        })
        .await;
    assert!(
        taint_keys(&node).contains(&("node.kubernetes.io/unreachable".into(), "NoSchedule".into()))
    );
    let tainted_at = node
        .spec
        .unwrap()
        .taints
        .unwrap()
        .into_iter()
        .find(|t| t.effect == "NoExecute")
        .unwrap()
        .time_added
        .unwrap()
        .0;
    // Its pods are marked not ready at once, so endpoints drop them.
    cluster
        .wait_for("sim-1's pods not ready in endpoints", WAIT, || async {
            let ep = eps.get_opt("web").await.unwrap()?;
            (ready_count(&ep) == (1, 2)).then_some(())
        })
        .await;
    let p1 = pods.get("p1").await.unwrap();
    let ready = p1
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("NodeLost"))
    );
    cluster
        .wait_for("NodeNotReady event for p1", WAIT, || async {
            let ev = events_for(&client, "p1", "NodeNotReady").await;
            (!ev.is_empty()).then_some(())
        })
        .await;
    let out = cluster.kubectl(&["get", "node", "sim-1"]).await;
    assert!(out.contains("NotReady"), "{out}");

    // p1 is evicted after its 3 s of toleration, not before; "stay" is not.
    let deleted_at = cluster
        .wait_for("p1 evicted", WAIT, || async {
            pods.get("p1")
                .await
                .ok()?
                .metadata
                .deletion_timestamp
                .map(|t| t.0)
        })
        .await;
    let waited = deleted_at.duration_since(tainted_at);
    assert!(
        waited >= k8s_openapi::jiff::SignedDuration::from_secs(2),
        "evicted {waited:?} after the taint"
    );
    cluster
        .wait_for("eviction event", WAIT, || async {
            let ev = events_for(&client, "p1", "TaintManagerEviction").await;
            (!ev.is_empty()).then_some(())
        })
        .await;
    let out = cluster.kubectl(&["describe", "pod", "p1"]).await;
    assert!(out.contains("TaintManagerEviction"), "{out}");
    assert!(
        pods.get("stay")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
    assert!(
        pods.get("p2")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
    let sim2 = nodes.get("sim-2").await.unwrap();
    assert!(taint_keys(&sim2).is_empty(), "{:?}", taint_keys(&sim2));

    // The node comes back: Ready again, taints gone, the terminating pod finishes.
    cluster.start_node("sim-1");
    cluster
        .wait_for("sim-1 untainted", WAIT, || async {
            let n = nodes.get("sim-1").await.ok()?;
            (ready_condition(&n)?.status == "True" && taint_keys(&n).is_empty()).then_some(())
        })
        .await;
    cluster
        .wait_for("p1 gone", WAIT, || async {
            pods.get_opt("p1").await.unwrap().is_none().then_some(())
        })
        .await;
    cluster
        .wait_for("stay ready again", WAIT, || async {
            let ep = eps.get_opt("web").await.unwrap()?;
            (ready_count(&ep) == (2, 0)).then_some(())
        })
        .await;
}

const WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: nginx, image: "nginx:1.14.2"}
"#;

/// The Deployment's pods that are not being deleted: (name, node, ready).
async fn live_pods(pods: &Api<Pod>) -> Vec<(String, String, bool)> {
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            (
                p.metadata.name.unwrap_or_default(),
                node.unwrap_or_default(),
                ready,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_dead_node_are_recreated_on_the_others() {
    let grace = Duration::from_secs(2);
    let toleration = 3;
    let settings = Settings {
        node_monitor_grace_period: grace,
        default_toleration_seconds: toleration,
        eviction_rate: 100.0,
        ..Settings::default()
    };
    let cluster = SimCluster::with_nodes(settings, &["n1", "n2", "n3"]).await;
    cluster.apply("1.33", WEB).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let running = cluster
        .wait_for("4 ready pods", WAIT, || async {
            let live = live_pods(&pods).await;
            (live.len() == 4 && live.iter().all(|p| p.2)).then_some(live)
        })
        .await;
    let victim = running[0].1.clone();
    let on_victim = running.iter().filter(|p| p.1 == victim).count();
    let started = std::time::Instant::now();
    cluster.stop_node(&victim);
    let budget = grace + Duration::from_secs(toleration as u64) + Duration::from_secs(15);
    let replaced = cluster
        .wait_for("pods replaced on the live nodes", budget, || async {
            let live = live_pods(&pods).await;
            (live.len() == 4 && live.iter().all(|p| p.2 && p.1 != victim)).then_some(live)
        })
        .await;
    let took = started.elapsed();
    eprintln!(
        "{on_victim} pod(s) of {victim} recreated on the other nodes {took:?} after it stopped \
         (grace {grace:?} + toleration {toleration}s)"
    );
    assert!(
        took >= grace + Duration::from_secs(toleration as u64) - Duration::from_secs(1),
        "replaced before the toleration ran out: {took:?}"
    );
    let before: BTreeSet<String> = running.into_iter().map(|p| p.0).collect();
    let new: Vec<_> = replaced.iter().filter(|p| !before.contains(&p.0)).collect();
    assert_eq!(new.len(), on_victim, "{replaced:?}");
    let out = cluster
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
}

//! `kubectl drain` through the pods/eviction subresource and PodDisruptionBudgets, against a
//! real API server with its controllers and simulated nodes: drain cordons, evicts, and the
//! ReplicaSet's pods come back on the other node (a maxUnavailable budget lets them go one at
//! a time); a budget that allows no disruption blocks the drain with upstream's message; the
//! budget's status as the disruption controller keeps it; the eviction's edge cases (pods
//! not running, no budget, two budgets, dry run, deleteOptions). kubectl 1.32 and 1.27.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;
mod cluster_common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use skiff_master::controllers::Settings;

use cluster_common::SimCluster;

const WAIT: Duration = Duration::from_secs(60);

fn replicaset(replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - {{name: web, image: "busybox:1.36"}}
      volumes:
      - {{name: scratch, emptyDir: {{}}}}
"#
    )
}

fn budget(bound: &str) -> String {
    format!(
        r#"apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: web}}
spec:
  {bound}
  selector: {{matchLabels: {{app: web}}}}
"#
    )
}

/// The nodes of the Running and Ready, not terminating, pods labelled app=web, once there
/// are `n` of them.
async fn running_on(cluster: &SimCluster, n: usize) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    cluster
        .wait_for(&format!("{n} web pods running"), WAIT, || async {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let live: Vec<&Pod> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let ready = live.iter().all(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            (live.len() == n && ready).then(|| {
                let mut nodes: Vec<String> = live
                    .iter()
                    .map(|p| {
                        p.spec
                            .as_ref()
                            .unwrap()
                            .node_name
                            .clone()
                            .unwrap_or_default()
                    })
                    .collect();
                nodes.sort();
                nodes
            })
        })
        .await
}

/// Waits until the budget's status satisfies `check`; returns it.
async fn budget_status(
    cluster: &SimCluster,
    what: &str,
    check: impl Fn(&k8s_openapi::api::policy::v1::PodDisruptionBudgetStatus) -> bool,
) -> k8s_openapi::api::policy::v1::PodDisruptionBudgetStatus {
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(cluster.client.clone(), "default");
    cluster
        .wait_for(what, WAIT, || async {
            let st = pdbs.get("web").await.ok()?.status?;
            check(&st).then_some(st)
        })
        .await
}

/// POST of an Eviction `body` for `pod` in default; (code, Status).
async fn evict_raw(
    cluster: &SimCluster,
    pod: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    cluster
        .server
        .admin(
            "POST",
            &format!("/api/v1/namespaces/default/pods/{pod}/eviction"),
            "application/json",
            body.to_string().as_bytes(),
        )
        .await
}

/// `kubectl drain n1 --ignore-daemonsets --delete-emptydir-data --timeout=<secs>s`.
async fn drain_n1(cluster: &SimCluster, version: &str, secs: u32) -> std::process::Output {
    let timeout = format!("--timeout={secs}s");
    let args = [
        "drain",
        "n1",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        &timeout,
    ];
    cluster.server.kubectl(version, &args, &[]).await
}

/// Two nodes; the ReplicaSet's `replicas` pods all on n1 (n2 cordoned while they start).
async fn all_on_n1(version: &str, replicas: usize) -> SimCluster {
    let cluster = SimCluster::with_nodes(Settings::default(), &["n1", "n2"]).await;
    cluster.server.ok(version, &["cordon", "n2"]).await;
    cluster.apply(version, &replicaset(replicas as u32)).await;
    assert_eq!(running_on(&cluster, replicas).await, vec!["n1"; replicas]);
    cluster.server.ok(version, &["uncordon", "n2"]).await;
    cluster
}

async fn drain_moves_pods(version: &str) {
    let cluster = all_on_n1(version, 3).await;
    cluster.apply(version, &budget("maxUnavailable: 1")).await;
    let st = budget_status(&cluster, "budget counts 3 healthy", |s| {
        s.current_healthy == 3 && s.observed_generation == Some(1)
    })
    .await;
    assert_eq!(
        (st.desired_healthy, st.expected_pods, st.disruptions_allowed),
        (2, 3, 1),
        "maxUnavailable 1 of the ReplicaSet's scale 3"
    );
    let cond = &st.conditions.as_ref().unwrap()[0];
    assert_eq!(
        (
            cond.type_.as_str(),
            cond.status.as_str(),
            cond.reason.as_str()
        ),
        ("DisruptionAllowed", "True", "SufficientPods")
    );
    let table = cluster.server.ok(version, &["get", "pdb"]).await;
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec![
            "NAME",
            "MIN",
            "AVAILABLE",
            "MAX",
            "UNAVAILABLE",
            "ALLOWED",
            "DISRUPTIONS",
            "AGE"
        ]
    );
    assert_eq!(&row[..4], &["web", "N/A", "1", "1"], "{table}");

    let started = std::time::Instant::now();
    let out = drain_n1(&cluster, version, 120).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "drain failed: {stderr}\n{stdout}");
    eprintln!(
        "kubectl {version} drain took {:.1} s:\n{stdout}{stderr}",
        started.elapsed().as_secs_f64()
    );
    assert!(stdout.contains("node/n1 cordoned"), "{stdout}");
    assert_eq!(stdout.matches(" evicted").count(), 3, "{stdout}");
    assert!(stdout.contains("node/n1 drained"), "{stdout}");
    // one at a time: the budget refused the others until a replacement was Ready
    assert!(
        stderr.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{stderr}"
    );
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let n1 = nodes.get("n1").await.unwrap();
    assert_eq!(n1.spec.unwrap().unschedulable, Some(true));
    assert_eq!(running_on(&cluster, 3).await, vec!["n2"; 3]);
    let st = budget_status(&cluster, "budget settled on n2", |s| {
        s.current_healthy == 3 && s.disrupted_pods.as_ref().is_none_or(|d| d.is_empty())
    })
    .await;
    assert_eq!(st.disruptions_allowed, 1);
}

#[tokio::test]
async fn drain_evicts_and_pods_move_kubectl_1_32() {
    drain_moves_pods("1.32").await;
}

#[tokio::test]
async fn drain_evicts_and_pods_move_kubectl_1_27() {
    drain_moves_pods("1.27").await;
}

async fn budget_blocks_drain(version: &str) {
    let cluster = all_on_n1(version, 2).await;
    cluster.apply(version, &budget("minAvailable: 2")).await;
    let st = budget_status(&cluster, "budget counts 2 healthy", |s| {
        s.current_healthy == 2 && s.observed_generation == Some(1)
    })
    .await;
    assert_eq!((st.desired_healthy, st.disruptions_allowed), (2, 0));
    assert_eq!(
        st.conditions.as_ref().unwrap()[0].reason,
        "InsufficientPods"
    );
    let table = cluster.server.ok(version, &["get", "pdb", "web"]).await;
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], &["web", "2", "N/A", "0"], "{table}");

    let out = drain_n1(&cluster, version, 12).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "drain must not complete: {stderr}");
    assert!(
        stderr.contains("(will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget."),
        "{stderr}"
    );
    assert!(stderr.contains("global timeout reached: 12s"), "{stderr}");
    // cordoned, but both pods still there
    assert_eq!(running_on(&cluster, 2).await, vec!["n1"; 2]);
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    assert_eq!(
        nodes.get("n1").await.unwrap().spec.unwrap().unschedulable,
        Some(true)
    );
}

#[tokio::test]
async fn budget_blocks_drain_kubectl_1_32() {
    budget_blocks_drain("1.32").await;
}

#[tokio::test]
async fn budget_blocks_drain_kubectl_1_27() {
    budget_blocks_drain("1.27").await;
}

/// The eviction's answers: 429 with the budget's cause, 500 for two budgets, a dry run that
/// changes nothing, a pod no budget covers deleted with its deleteOptions, a pending pod
/// deleted without asking the budget; percentages of the ReplicaSet's scale.
#[tokio::test]
async fn eviction_semantics() {
    let cluster = SimCluster::with_nodes(Settings::default(), &["n1"]).await;
    cluster.apply("1.32", &replicaset(4)).await;
    running_on(&cluster, 4).await;
    cluster
        .apply("1.32", &budget("minAvailable: \"75%\""))
        .await;
    let st = budget_status(&cluster, "75% of 4", |s| s.current_healthy == 4).await;
    assert_eq!(
        (st.expected_pods, st.desired_healthy, st.disruptions_allowed),
        (4, 3, 1)
    );
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let names: Vec<String> = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();

    // a dry run changes neither the budget nor the pod
    let dry = EvictParams {
        delete_options: None,
        post_options: PostParams {
            dry_run: true,
            ..Default::default()
        },
    };
    pods.evict(&names[0], &dry).await.unwrap();
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(cluster.client.clone(), "default");
    let after = pdbs.get("web").await.unwrap().status.unwrap();
    assert_eq!(after.disruptions_allowed, 1);
    assert!(after.disrupted_pods.is_none_or(|d| d.is_empty()));
    assert!(
        pods.get(&names[0])
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );

    // allowed: the budget records the pod (until the controller sees it gone, which the
    // simulated node makes quick: watched, not polled); the next eviction is refused
    let rv = pdbs
        .get("web")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut watch = pdbs
        .watch(&WatchParams::default().fields("metadata.name=web"), &rv)
        .await
        .unwrap()
        .boxed();
    let st = pods
        .evict(&names[0], &EvictParams::default())
        .await
        .unwrap();
    assert_eq!(
        st.status,
        Some(kube::core::response::StatusSummary::Success)
    );
    let recorded = tokio::time::timeout(WAIT, async {
        while let Some(ev) = watch.try_next().await.unwrap() {
            if let WatchEvent::Modified(b) = ev {
                let st = b.status.unwrap();
                if st
                    .disrupted_pods
                    .unwrap_or_default()
                    .contains_key(&names[0])
                {
                    return st.disruptions_allowed;
                }
            }
        }
        panic!("the watch ended");
    })
    .await
    .expect("the eviction was not recorded in disruptedPods");
    assert_eq!(recorded, 0, "the eviction took the one allowed disruption");
    let (code, body) = evict_raw(
        &cluster,
        &names[1],
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": names[1]}}),
    )
    .await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(body["reason"], "TooManyRequests");
    assert_eq!(
        body["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(body["details"]["causes"][0]["reason"], "DisruptionBudget");
    let cause = body["details"]["causes"][0]["message"].as_str().unwrap();
    assert!(
        cause.starts_with("The disruption budget web needs 3 healthy pods and has "),
        "{cause}"
    );

    // a second budget over the same pods: 500
    let mut second = budget("maxUnavailable: 1");
    second = second.replace("name: web", "name: web-too");
    cluster.apply("1.32", &second).await;
    let (code, body) = evict_raw(
        &cluster,
        &names[2],
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": names[2]}}),
    )
    .await;
    assert_eq!(code, 500, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("This pod has more than one PodDisruptionBudget"),
        "{body}"
    );
    pdbs.delete("web-too", &DeleteParams::default())
        .await
        .unwrap();

    // a pod no budget covers: deleted with the eviction's deleteOptions (grace 0: gone)
    let lone: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "lone", "labels": {"app": "other"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], "nodeName": "n1"},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &lone).await.unwrap();
    cluster
        .wait_for("lone running", WAIT, || async {
            let p = pods.get("lone").await.ok()?;
            (p.status?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
    let (code, body) = evict_raw(
        &cluster,
        "lone",
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "lone"},
                   "deleteOptions": {"gracePeriodSeconds": 0}}),
    )
    .await;
    assert_eq!((code, &body["status"]), (201, &json!("Success")), "{body}");
    assert!(matches!(pods.get("lone").await, Err(kube::Error::Api(e)) if e.code == 404));

    // a pending pod of the budget's (unschedulable: no node fits) goes without asking it
    let pending: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "waiting", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}],
                 "nodeSelector": {"no-such": "node"}},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pending).await.unwrap();
    pods.evict("waiting", &EvictParams::default())
        .await
        .unwrap();
    assert!(matches!(pods.get("waiting").await, Err(kube::Error::Api(e)) if e.code == 404));

    // name mismatch and unknown pods
    let (code, _) = evict_raw(
        &cluster,
        &names[1],
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "other"}}),
    )
    .await;
    assert_eq!(code, 400);
    let err = pods
        .evict("nope", &EvictParams::default())
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(e) if e.code == 404));
}

/// Validation of budgets as the apiserver words it.
#[tokio::test]
async fn budget_validation() {
    let cluster = SimCluster::with_nodes(Settings::default(), &[]).await;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(cluster.client.clone(), "default");
    let both: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "both"},
        "spec": {"minAvailable": 1, "maxUnavailable": 1, "selector": {}},
    }))
    .unwrap();
    let err = pdbs
        .create(&PostParams::default(), &both)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 422);
            assert!(
                e.message
                    .contains("minAvailable and maxUnavailable cannot be both set"),
                "{}",
                e.message
            );
        }
        e => panic!("{e}"),
    }
    let pct: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "pct"}, "spec": {"maxUnavailable": "150%", "selector": {}},
    }))
    .unwrap();
    let err = pdbs.create(&PostParams::default(), &pct).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(e) if e.code == 422 && e.message.contains("must not be greater than 100%"))
    );
}

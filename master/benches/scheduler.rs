//! Scheduler benchmark (not a test): `cargo bench -p skiff-master --bench scheduler`.
//!
//! 1. The pure core: 10,000 pending pods (100 owners of 100 pods, 100m cpu and 128Mi each)
//!    placed one after the other on 100 and on 1,000 nodes, each choice assumed before the
//!    next, as the binding loop does.
//! 2. End to end: an API server (in-memory store) with 100 Ready nodes and the scheduler;
//!    1,000 pods created at once (64 creates in flight); the time from the first create
//!    until a watch has seen all 1,000 bound.
//! 3. `kubectl scale --replicas=1000` of a Deployment (scale subresource) with the Deployment
//!    and ReplicaSet controllers and the scheduler running: the time until all are bound;
//!    and the same with 1,000 nodes and `--replicas=10000`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/api_common/mod.rs"]
mod api_common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use skiff_master::controllers::scheduler::{self, core};
use skiff_master::controllers::{self, Context, Settings};

fn node(i: usize) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": format!("node-{i:04}"),
                     "labels": {"kubernetes.io/hostname": format!("node-{i:04}")}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }))
    .unwrap()
}

fn pod(i: usize, uid: bool) -> Pod {
    let owner = i % 100;
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i:05}"), "namespace": "default",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("rs-{owner}"), "uid": format!("rs-uid-{owner}"),
                "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
    });
    if uid {
        p["metadata"]["uid"] = json!(format!("uid-{i}"));
    }
    serde_json::from_value(p).unwrap()
}

fn pure(nodes: usize, pods: usize) {
    let mut infos: Vec<core::NodeInfo> =
        (0..nodes).map(|i| core::NodeInfo::new(&node(i))).collect();
    let pending: Vec<core::PodInfo> = (0..pods)
        .map(|i| core::PodInfo::new(&pod(i, true)))
        .collect();
    let start = Instant::now();
    let mut placed = 0usize;
    for p in &pending {
        if let Ok(i) = core::schedule(p, &infos) {
            infos[i].add_pod(p);
            placed += 1;
        }
    }
    let took = start.elapsed();
    let per_node_max = infos.iter().map(|n| n.pod_count).max().unwrap_or(0);
    let per_node_min = infos.iter().map(|n| n.pod_count).min().unwrap_or(0);
    println!(
        "pure core: {nodes} nodes, {pods} pods: {placed} placed in {:.3} s = {:.0} pods/s ({:.1} µs/pod; pods per node {per_node_min}..{per_node_max})",
        took.as_secs_f64(),
        placed as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / pods as f64,
    );
}

/// With `backlog`, the pods are all created before the scheduler starts (binding alone is
/// timed); without, they are created while it runs (creation and binding together).
/// An API server (in-memory store) with `nodes` Ready nodes, and a controller context on it.
async fn cluster(nodes: usize) -> (api_common::TestServer, Context) {
    let server = api_common::start().await;
    let client = controllers::client_from_kubeconfig(server.kubeconfig())
        .await
        .unwrap();
    let node_api: Api<Node> = Api::all(client.clone());
    for i in 0..nodes {
        let n = node(i);
        let status = json!({"status": n.status});
        let name = n.metadata.name.clone().unwrap();
        node_api.create(&PostParams::default(), &n).await.unwrap();
        node_api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }
    let ctx = Context {
        client,
        settings: Arc::new(Settings::default()),
    };
    (server, ctx)
}

/// Watches the pods of `default` and sends the instant the `pods`-th distinct pod is seen
/// bound to a node.
fn count_bound(
    pod_api: Api<Pod>,
    pods: usize,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedReceiver<Instant>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let counter = tokio::spawn(async move {
        let mut bound = HashSet::new();
        let mut stream = watcher(pod_api, watcher::Config::default()).boxed();
        while let Some(Ok(ev)) = stream.next().await {
            if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = ev
                && p.spec.and_then(|s| s.node_name).is_some()
            {
                bound.insert(p.metadata.uid.unwrap_or_default());
                if bound.len() == pods {
                    let _ = tx.send(Instant::now());
                    return;
                }
            }
        }
    });
    (counter, rx)
}

async fn end_to_end(nodes: usize, pods: usize, backlog: bool) {
    let (_server, ctx) = cluster(nodes).await;
    let client = ctx.client.clone();
    let mut sched = (!backlog).then(|| tokio::spawn(scheduler::run(ctx.clone())));
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (counter, mut rx) = count_bound(pod_api.clone(), pods);
    // let the scheduler and the watch sync first
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut creates = Vec::new();
    for i in 0..pods {
        let api = pod_api.clone();
        let permit = limit.clone().acquire_owned().await.unwrap();
        creates.push(tokio::spawn(async move {
            api.create(&PostParams::default(), &pod(i, false))
                .await
                .unwrap();
            drop(permit);
        }));
    }
    for c in creates {
        c.await.unwrap();
    }
    let created = start.elapsed();
    let start = if backlog {
        sched = Some(tokio::spawn(scheduler::run(ctx)));
        Instant::now()
    } else {
        start
    };
    let done = tokio::time::timeout(Duration::from_secs(300), rx.recv())
        .await
        .expect("all pods bound within 300 s")
        .unwrap();
    let took = done - start;
    let what = if backlog {
        "all bound {:.2} s after the scheduler started"
    } else {
        "all bound {:.2} s after the first create"
    };
    println!(
        "end to end{}: {nodes} nodes, {pods} pods created at once: created in {:.2} s, {} = {:.0} pods/s",
        if backlog { " (backlog)" } else { "" },
        created.as_secs_f64(),
        what.replace("{:.2}", &format!("{:.2}", took.as_secs_f64())),
        pods as f64 / took.as_secs_f64(),
    );
    if let Some(s) = sched {
        s.abort();
    }
    counter.abort();
}

/// `kubectl scale --replicas=N` of a Deployment with no replicas, as kubectl sends it (a
/// merge patch of the scale subresource), with the Deployment and ReplicaSet controllers and
/// the scheduler running: the time until a watch has seen all N pods bound.
async fn scale(nodes: usize, replicas: usize) {
    let (_server, ctx) = cluster(nodes).await;
    let client = ctx.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}},
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let tasks = [
        tokio::spawn(scheduler::run(ctx.clone())),
        tokio::spawn(controllers::deployment::run(ctx.clone())),
        tokio::spawn(controllers::replicaset::run(ctx.clone())),
    ];
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (counter, mut rx) = count_bound(pod_api, replicas);
    // let the controllers create the (empty) ReplicaSet and the caches sync
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = Instant::now();
    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(300), rx.recv())
        .await
        .expect("all pods bound within 300 s")
        .unwrap();
    let took = done - start;
    println!(
        "kubectl scale: {nodes} nodes, Deployment scaled 0 -> {replicas}: all pods bound {:.2} s after the scale = {:.0} pods/s",
        took.as_secs_f64(),
        replicas as f64 / took.as_secs_f64(),
    );
    for t in tasks {
        t.abort();
    }
    counter.abort();
}

fn main() {
    pure(100, 10_000);
    pure(1_000, 10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(end_to_end(100, 1_000, false));
    rt.block_on(end_to_end(100, 1_000, true));
    rt.block_on(scale(100, 1_000));
    rt.block_on(scale(1_000, 10_000));
}

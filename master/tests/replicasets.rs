//! The ReplicaSet controller against a real API server, driven with kubectl 1.27 and 1.33:
//! pods from the template, adoption of a matching orphan, release of a pod that stops
//! matching, `kubectl scale rs`, scale to zero, and no overshoot in a burst.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;
mod cluster_common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use skiff_master::controllers::Settings;

use cluster_common::SimCluster;

const RS: &str = r#"apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, tier: front}}
    spec:
      containers:
      - {name: nginx, image: "nginx:1.14.2"}
"#;

const WAIT: Duration = Duration::from_secs(30);

/// Active pods (not terminating) matching `selector` in `default`.
async fn active(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// How many Events of `default` have `reason`.
async fn events(cluster: &SimCluster, reason: &str) -> usize {
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .count()
}

fn controller_uid(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

/// Waits until the ReplicaSet reports `n` replicas for its current generation and exactly
/// `n` active pods carry its controller reference.
async fn settled(cluster: &SimCluster, n: usize) -> Vec<Pod> {
    let sets: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    cluster
        .wait_for(&format!("{n} replicas"), WAIT, || async {
            let rs = sets.get("web").await.ok()?;
            let st = rs.status.as_ref()?;
            if st.observed_generation != rs.metadata.generation
                || st.replicas != i32::try_from(n).unwrap()
            {
                return None;
            }
            let uid = rs.metadata.uid.clone();
            let mine: Vec<Pod> = active(&pods, "app=web")
                .await
                .into_iter()
                .filter(|p| controller_uid(p) == uid)
                .collect();
            (mine.len() == n).then_some(mine)
        })
        .await
}

#[tokio::test]
async fn replicaset_adopts_releases_and_scales_with_kubectl() {
    let cluster = SimCluster::start(Settings::default()).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let orphan: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orphan", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &orphan).await.unwrap();

    cluster.apply("1.33", RS).await;
    let three = settled(&cluster, 3).await;
    let names: Vec<String> = three
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert!(
        names.contains(&"orphan".to_string()),
        "orphan adopted: {names:?}"
    );
    for p in &three {
        let name = p.metadata.name.clone().unwrap();
        if name != "orphan" {
            assert!(name.starts_with("web-"), "{name}");
            assert_eq!(p.metadata.labels.as_ref().unwrap()["tier"], "front");
        }
    }
    let get = cluster
        .server
        .ok("1.27", &["get", "rs", "web", "-o", "wide"])
        .await;
    assert!(get.contains("web") && get.contains("nginx:1.14.2"), "{get}");

    for (version, n) in [("1.33", "5"), ("1.27", "2")] {
        cluster
            .server
            .ok(version, &["scale", "rs", "web", "--replicas", n])
            .await;
        settled(&cluster, n.parse().unwrap()).await;
    }

    // A pod relabelled out of the selector is released and replaced.
    let two = settled(&cluster, 2).await;
    let names: Vec<String> = two
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    let victim = names[0].clone();
    cluster
        .server
        .ok(
            "1.33",
            &["label", "pod", &victim, "app=moved", "--overwrite"],
        )
        .await;
    let after = settled(&cluster, 2).await;
    assert!(
        after
            .iter()
            .all(|p| p.metadata.name.as_deref() != Some(&victim))
    );
    let released = pods.get(&victim).await.unwrap();
    assert_eq!(
        controller_uid(&released),
        None,
        "released pod keeps no controller"
    );

    let rs: ReplicaSet = Api::namespaced(cluster.client.clone(), "default")
        .get("web")
        .await
        .unwrap();
    let st = rs.status.unwrap();
    // The adopted orphan lacks tier=front, if it is still one of the two.
    let labeled = after
        .iter()
        .filter(|p| p.metadata.labels.as_ref().unwrap().contains_key("tier"))
        .count();
    assert_eq!(
        labeled,
        after
            .iter()
            .filter(|p| p.metadata.name.as_deref() != Some("orphan"))
            .count()
    );
    assert_eq!(
        st.fully_labeled_replicas,
        Some(i32::try_from(labeled).unwrap())
    );

    let created = events(&cluster, "SuccessfulCreate").await;
    assert!(created >= 2, "SuccessfulCreate events: {created}");
    let describe = cluster.server.ok("1.33", &["describe", "rs", "web"]).await;
    assert!(describe.contains("Created pod: web-"), "{describe}");

    cluster
        .server
        .ok("1.33", &["scale", "rs", "web", "--replicas=0"])
        .await;
    settled(&cluster, 0).await;
}

#[tokio::test]
async fn a_burst_to_fifty_creates_exactly_fifty_pods() {
    let cluster = SimCluster::start(Settings::default()).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    // Every pod name ever added, from a watch started before the ReplicaSet exists.
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let watch = {
        let seen = seen.clone();
        let pods = pods.clone();
        tokio::spawn(async move {
            let mut events = watcher(pods, watcher::Config::default()).boxed();
            while let Some(Ok(ev)) = events.next().await {
                if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = ev {
                    seen.lock()
                        .unwrap()
                        .insert(p.metadata.name.unwrap_or_default());
                }
            }
        })
    };
    cluster.apply("1.33", RS).await;
    settled(&cluster, 3).await;
    cluster
        .server
        .ok("1.27", &["scale", "rs", "web", "--replicas=50"])
        .await;
    settled(&cluster, 50).await;
    let all = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    assert_eq!(all.len(), 50);
    cluster
        .wait_for("the watch saw fifty pods", WAIT, || async {
            (seen.lock().unwrap().len() >= 50).then_some(())
        })
        .await;
    assert_eq!(seen.lock().unwrap().len(), 50, "pods ever created");
    let deleted = events(&cluster, "SuccessfulDelete").await;
    assert_eq!(deleted, 0, "no pod created in excess and deleted again");
    watch.abort();
}

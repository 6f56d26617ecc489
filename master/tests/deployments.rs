//! The Deployment controller (with the ReplicaSet controller and the scheduler) against a
//! master with three simulated nodes, driven with real kubectl 1.27 and 1.33: the nginx
//! Deployment of the sample manifests, scaling 3 → 10 → 0, a rolling image change followed
//! with `kubectl rollout status`, `rollout history`, `rollout undo`, `rollout pause/resume`,
//! a Recreate deployment, revisionHistoryLimit, and a rollout that exceeds its progress
//! deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;
mod cluster_common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use skiff_master::controllers::Settings;

use cluster_common::SimCluster;

const WAIT: Duration = Duration::from_secs(60);
const DEPLOY: &str = "nginx-deployment";

async fn cluster() -> SimCluster {
    SimCluster::with_nodes(Settings::default(), &["node-1", "node-2", "node-3"]).await
}

/// `kubectl rollout status` to completion; it must exit 0 saying so.
async fn rollout_status(cluster: &SimCluster, version: &str, name: &str) -> String {
    let out = cluster
        .server
        .ok(
            version,
            &[
                "rollout",
                "status",
                &format!("deployment/{name}"),
                "--timeout=60s",
            ],
        )
        .await;
    assert!(
        out.contains(&format!("deployment \"{name}\" successfully rolled out")),
        "{out}"
    );
    out
}

/// The Deployment's ReplicaSets, oldest first.
async fn replica_sets(cluster: &SimCluster, selector: &str) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), "default");
    let mut v = api
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items;
    // creationTimestamp has one-second resolution: two sets made in the same second are
    // ordered by their revision (the list alone orders them by name, a hash)
    v.sort_by_key(|r| {
        let revision = annotation(r, "deployment.kubernetes.io/revision")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        (r.metadata.creation_timestamp.clone().map(|t| t.0), revision)
    });
    v
}

fn annotation(rs: &ReplicaSet, key: &str) -> Option<String> {
    rs.metadata.annotations.as_ref()?.get(key).cloned()
}

fn image(rs: &ReplicaSet) -> String {
    rs.spec
        .as_ref()
        .unwrap()
        .template
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

/// Waits until the Deployment reports `n` replicas, all updated and available, for its
/// current generation, and exactly `n` active pods match `selector`.
async fn settled(cluster: &SimCluster, name: &str, selector: &str, n: i32) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    cluster
        .wait_for(&format!("{name} at {n}"), WAIT, || async {
            let d = api.get(name).await.ok()?;
            let st = d.status.clone()?;
            let ok = st.observed_generation == d.metadata.generation
                && st.replicas.unwrap_or(0) == n
                && st.updated_replicas.unwrap_or(0) == n
                && st.available_replicas.unwrap_or(0) == n;
            let active = pods
                .list(&ListParams::default().labels(selector))
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .count();
            (ok && active == usize::try_from(n).unwrap()).then_some(d)
        })
        .await
}

/// The revisions `kubectl rollout history` lists.
async fn history(cluster: &SimCluster, version: &str, name: &str) -> Vec<String> {
    let out = cluster
        .server
        .ok(
            version,
            &["rollout", "history", &format!("deployment/{name}")],
        )
        .await;
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .map(String::from)
        .collect()
}

async fn event_messages(cluster: &SimCluster, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    let mut evs = api.list(&ListParams::default()).await.unwrap().items;
    // eventTime has microseconds; firstTimestamp only seconds, so ties would sort by name.
    evs.sort_by_key(|e| {
        (
            e.event_time.clone().map(|t| t.0),
            e.first_timestamp.clone().map(|t| t.0),
        )
    });
    evs.into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.message)
        .collect()
}

fn condition(d: &Deployment, type_: &str) -> (String, String) {
    let c = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition: {d:?}"));
    (c.status.clone(), c.reason.clone().unwrap_or_default())
}

#[tokio::test]
async fn nginx_scales_rolls_out_and_rolls_back_with_kubectl() {
    let cluster = cluster().await;
    cluster.apply("1.27", api_common::MANIFESTS).await;
    rollout_status(&cluster, "1.27", DEPLOY).await;
    let d = settled(&cluster, DEPLOY, "app=nginx", 3).await;
    assert_eq!(
        condition(&d, "Available"),
        ("True".into(), "MinimumReplicasAvailable".into())
    );
    assert_eq!(
        condition(&d, "Progressing"),
        ("True".into(), "NewReplicaSetAvailable".into())
    );

    let sets = replica_sets(&cluster, "app=nginx").await;
    assert_eq!(sets.len(), 1);
    let first = &sets[0];
    let first_name = first.metadata.name.clone().unwrap();
    let hash = first.metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    assert_eq!(first_name, format!("{DEPLOY}-{hash}"));
    assert_eq!(
        annotation(first, "deployment.kubernetes.io/revision").as_deref(),
        Some("1")
    );
    assert_eq!(
        annotation(first, "deployment.kubernetes.io/desired-replicas").as_deref(),
        Some("3")
    );
    assert_eq!(
        annotation(first, "deployment.kubernetes.io/max-replicas").as_deref(),
        Some("4")
    );
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let running = pods
        .list(&ListParams::default().labels(&format!("pod-template-hash={hash}")))
        .await
        .unwrap()
        .items;
    assert_eq!(running.len(), 3);
    let created = event_messages(&cluster, "ScalingReplicaSet").await;
    assert_eq!(
        created,
        [format!("Scaled up replica set {first_name} from 0 to 3")]
    );

    // 3 → 10 → 0 → 3, with both kubectl versions.
    for (version, n) in [("1.33", 10), ("1.27", 0), ("1.33", 3)] {
        cluster
            .server
            .ok(
                version,
                &["scale", "deployment", DEPLOY, &format!("--replicas={n}")],
            )
            .await;
        settled(&cluster, DEPLOY, "app=nginx", n).await;
    }
    let get = cluster.server.ok("1.33", &["get", "deploy", DEPLOY]).await;
    assert!(get.contains("3/3"), "{get}");

    // A rolling image change, followed to completion.
    cluster
        .server
        .ok(
            "1.33",
            &[
                "set",
                "image",
                &format!("deployment/{DEPLOY}"),
                "nginx=nginx:1.16.1",
            ],
        )
        .await;
    rollout_status(&cluster, "1.33", DEPLOY).await;
    settled(&cluster, DEPLOY, "app=nginx", 3).await;
    let sets = replica_sets(&cluster, "app=nginx").await;
    assert_eq!(sets.len(), 2);
    let (old, new) = (&sets[0], &sets[1]);
    assert_eq!(old.metadata.name.as_deref(), Some(first_name.as_str()));
    assert_eq!(old.spec.as_ref().unwrap().replicas, Some(0));
    assert_eq!(new.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(image(new), "nginx:1.16.1");
    assert_eq!(
        annotation(new, "deployment.kubernetes.io/revision").as_deref(),
        Some("2")
    );
    let new_name = new.metadata.name.clone().unwrap();
    let scaling = event_messages(&cluster, "ScalingReplicaSet").await;
    assert!(
        scaling
            .iter()
            .any(|m| m.starts_with(&format!("Scaled up replica set {new_name} from 0 to"))),
        "{scaling:?}"
    );
    assert!(
        scaling
            .iter()
            .any(|m| m == &format!("Scaled down replica set {first_name} from 1 to 0")),
        "{scaling:?}"
    );

    assert_eq!(history(&cluster, "1.27", DEPLOY).await, ["1", "2"]);
    let rev1 = cluster
        .server
        .ok(
            "1.33",
            &[
                "rollout",
                "history",
                &format!("deployment/{DEPLOY}"),
                "--revision=1",
            ],
        )
        .await;
    assert!(rev1.contains("nginx:1.14.2"), "{rev1}");

    // Undo: the first ReplicaSet's template comes back, as revision 3.
    let undo = cluster
        .server
        .ok(
            "1.33",
            &["rollout", "undo", &format!("deployment/{DEPLOY}")],
        )
        .await;
    assert!(undo.contains("rolled back"), "{undo}");
    rollout_status(&cluster, "1.33", DEPLOY).await;
    settled(&cluster, DEPLOY, "app=nginx", 3).await;
    let sets = replica_sets(&cluster, "app=nginx").await;
    assert_eq!(sets.len(), 2, "the old ReplicaSet is reused, not copied");
    let back = sets
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(first_name.as_str()))
        .unwrap();
    assert_eq!(image(back), "nginx:1.14.2");
    assert_eq!(back.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(
        annotation(back, "deployment.kubernetes.io/revision").as_deref(),
        Some("3")
    );
    assert_eq!(
        annotation(back, "deployment.kubernetes.io/revision-history").as_deref(),
        Some("1")
    );
    let d: Deployment = Api::namespaced(cluster.client.clone(), "default")
        .get(DEPLOY)
        .await
        .unwrap();
    assert_eq!(
        d.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(history(&cluster, "1.33", DEPLOY).await, ["2", "3"]);
    let describe = cluster
        .server
        .ok("1.27", &["describe", "deployment", DEPLOY])
        .await;
    assert!(
        describe.contains("NewReplicaSet:") && describe.contains(&first_name),
        "{describe}"
    );
}

const WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  STRATEGY
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: "nginx:1.14.2"}
"#;

fn web(strategy: &str) -> String {
    WEB.replace("STRATEGY", strategy)
}

/// Applies the `web` Deployment with `spec_line` and follows its rollout to completion.
async fn start_web(cluster: &SimCluster, version: &str, spec_line: &str) {
    cluster.apply(version, &web(spec_line)).await;
    rollout_status(cluster, version, "web").await;
}

#[tokio::test]
async fn pause_holds_the_rollout_and_resume_continues_it() {
    let cluster = cluster().await;
    start_web(&cluster, "1.33", "revisionHistoryLimit: 10").await;
    cluster
        .server
        .ok("1.27", &["rollout", "pause", "deployment/web"])
        .await;
    cluster
        .server
        .ok(
            "1.33",
            &["set", "image", "deployment/web", "web=nginx:1.16.1"],
        )
        .await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    let d = cluster
        .wait_for("the paused change observed", WAIT, || async {
            let d = api.get("web").await.ok()?;
            let st = d.status.as_ref()?;
            (st.observed_generation == d.metadata.generation).then_some(d)
        })
        .await;
    assert_eq!(
        condition(&d, "Progressing"),
        ("Unknown".into(), "DeploymentPaused".into())
    );
    let sets = replica_sets(&cluster, "app=web").await;
    assert_eq!(sets.len(), 1, "no new ReplicaSet while paused");
    assert_eq!(image(&sets[0]), "nginx:1.14.2");
    // Scaling still works while paused.
    cluster
        .server
        .ok("1.33", &["scale", "deployment/web", "--replicas=4"])
        .await;
    cluster
        .wait_for("paused scale", WAIT, || async {
            let rs = replica_sets(&cluster, "app=web").await;
            (rs.len() == 1 && rs[0].spec.as_ref()?.replicas == Some(4)).then_some(())
        })
        .await;

    cluster
        .server
        .ok("1.33", &["rollout", "resume", "deployment/web"])
        .await;
    rollout_status(&cluster, "1.33", "web").await;
    settled(&cluster, "web", "app=web", 4).await;
    let sets = replica_sets(&cluster, "app=web").await;
    assert_eq!(sets.len(), 2);
    assert_eq!(image(&sets[1]), "nginx:1.16.1");

    // `rollout restart` changes a template annotation: a third ReplicaSet, revision 3.
    cluster
        .server
        .ok("1.27", &["rollout", "restart", "deployment/web"])
        .await;
    rollout_status(&cluster, "1.27", "web").await;
    settled(&cluster, "web", "app=web", 4).await;
    let sets = replica_sets(&cluster, "app=web").await;
    assert_eq!(sets.len(), 3);
    assert_eq!(
        annotation(&sets[2], "deployment.kubernetes.io/revision").as_deref(),
        Some("3")
    );
}

#[tokio::test]
async fn recreate_stops_old_pods_before_starting_new_ones() {
    let cluster = cluster().await;
    start_web(&cluster, "1.27", "strategy: {type: Recreate}").await;
    let old = replica_sets(&cluster, "app=web").await[0]
        .metadata
        .name
        .clone()
        .unwrap();
    cluster
        .server
        .ok(
            "1.27",
            &["set", "image", "deployment/web", "web=nginx:1.16.1"],
        )
        .await;
    rollout_status(&cluster, "1.27", "web").await;
    settled(&cluster, "web", "app=web", 3).await;
    let sets = replica_sets(&cluster, "app=web").await;
    let new = sets[1].metadata.name.clone().unwrap();
    let scaling = event_messages(&cluster, "ScalingReplicaSet").await;
    let down = scaling
        .iter()
        .position(|m| m == &format!("Scaled down replica set {old} from 3 to 0"))
        .unwrap_or_else(|| panic!("{scaling:?}"));
    let up = scaling
        .iter()
        .position(|m| m == &format!("Scaled up replica set {new} from 0 to 3"))
        .unwrap_or_else(|| panic!("{scaling:?}"));
    assert!(down < up, "{scaling:?}");
    // The new ReplicaSet was created only after the old pods were gone.
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let new_created = sets[1].metadata.creation_timestamp.clone().unwrap().0;
    for p in pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
    {
        let created = p.metadata.creation_timestamp.unwrap().0;
        assert!(created >= new_created, "only new pods remain");
    }
}

#[tokio::test]
async fn revision_history_limit_cleans_up_old_replica_sets() {
    let cluster = cluster().await;
    start_web(&cluster, "1.33", "revisionHistoryLimit: 1").await;
    for tag in ["1.15", "1.16", "1.17"] {
        cluster
            .server
            .ok(
                "1.33",
                &[
                    "set",
                    "image",
                    "deployment/web",
                    &format!("web=nginx:{tag}"),
                ],
            )
            .await;
        rollout_status(&cluster, "1.33", "web").await;
    }
    let sets = cluster
        .wait_for("old ReplicaSets cleaned up", WAIT, || async {
            let sets = replica_sets(&cluster, "app=web").await;
            (sets.len() == 2).then_some(sets)
        })
        .await;
    let revs: Vec<String> = sets
        .iter()
        .map(|r| annotation(r, "deployment.kubernetes.io/revision").unwrap())
        .collect();
    assert_eq!(revs, ["3", "4"]);
    assert_eq!(image(&sets[1]), "nginx:1.17");
}

#[tokio::test]
async fn a_stuck_rollout_exceeds_its_progress_deadline() {
    let cluster = cluster().await;
    // No node has this label: the pods stay Pending and never become available.
    let manifest = web("progressDeadlineSeconds: 3").replace(
        "containers:",
        "nodeSelector: {disk: none}\n      containers:",
    );
    cluster.apply("1.33", &manifest).await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    let d = cluster
        .wait_for("ProgressDeadlineExceeded", WAIT, || async {
            let d = api.get("web").await.ok()?;
            let c = d
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "Progressing")?;
            (c.reason.as_deref() == Some("ProgressDeadlineExceeded")).then_some(d.clone())
        })
        .await;
    assert_eq!(condition(&d, "Progressing").0, "False");
    assert_eq!(
        condition(&d, "Available"),
        ("False".into(), "MinimumReplicasUnavailable".into())
    );
    assert_eq!(d.status.as_ref().unwrap().unavailable_replicas, Some(3));
    let out = cluster
        .server
        .kubectl(
            "1.33",
            &["rollout", "status", "deployment/web", "--timeout=20s"],
            &[],
        )
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exceeded its progress deadline"),
        "{stderr}"
    );
}

#[tokio::test]
async fn min_ready_seconds_delays_availability() {
    let cluster = cluster().await;
    cluster.apply("1.33", &web("minReadySeconds: 2")).await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let seen_at = cluster
        .wait_for("three available", WAIT, || async {
            let d = api.get("web").await.ok()?;
            (d.status?.available_replicas == Some(3)).then(k8s_openapi::jiff::Timestamp::now)
        })
        .await;
    let last_ready = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|p| {
            let c = p.status.as_ref()?.conditions.as_ref()?;
            let ready = c
                .iter()
                .find(|c| c.type_ == "Ready" && c.status == "True")?;
            Some(ready.last_transition_time.clone()?.0)
        })
        .max()
        .unwrap();
    let waited = seen_at.duration_since(last_ready);
    assert!(
        waited >= k8s_openapi::jiff::SignedDuration::from_millis(1900),
        "available {waited:?} after the last pod became ready"
    );
    rollout_status(&cluster, "1.27", "web").await;
}

#[tokio::test]
async fn a_burst_to_fifty_never_overshoots() {
    let cluster = cluster().await;
    start_web(&cluster, "1.33", "revisionHistoryLimit: 10").await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    cluster
        .server
        .ok("1.27", &["scale", "deployment/web", "--replicas=50"])
        .await;
    cluster
        .wait_for("fifty available", WAIT, || {
            let pods = pods.clone();
            let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
            let peak = peak.clone();
            async move {
                let n = pods
                    .list(&ListParams::default().labels("app=web"))
                    .await
                    .ok()?
                    .items
                    .len();
                peak.fetch_max(n, std::sync::atomic::Ordering::SeqCst);
                let d = api.get("web").await.ok()?;
                (d.status?.available_replicas == Some(50) && n == 50).then_some(())
            }
        })
        .await;
    assert_eq!(
        peak.load(std::sync::atomic::Ordering::SeqCst),
        50,
        "pods never exceed the replicas"
    );
    let deleted = event_messages(&cluster, "SuccessfulDelete").await;
    assert!(deleted.is_empty(), "no pod made in excess: {deleted:?}");
    settled(&cluster, "web", "app=web", 50).await;
}

/// ReplicaSets and pods of `app=web`.
async fn web_objects(cluster: &SimCluster) -> (Vec<ReplicaSet>, Vec<Pod>) {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let sets = replica_sets(cluster, "app=web").await;
    let pods = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    (sets, pods)
}

#[tokio::test]
async fn deleting_a_deployment_cascades_unless_orphaned() {
    let cluster = cluster().await;
    for cascade in ["--cascade=background", "--cascade=foreground"] {
        start_web(&cluster, "1.33", "revisionHistoryLimit: 10").await;
        cluster
            .server
            .ok("1.33", &["delete", "deployment", "web", cascade])
            .await;
        cluster
            .wait_for(&format!("nothing left after {cascade}"), WAIT, || async {
                let (sets, pods) = web_objects(&cluster).await;
                (sets.is_empty() && pods.is_empty()).then_some(())
            })
            .await;
    }

    start_web(&cluster, "1.27", "revisionHistoryLimit: 10").await;
    cluster
        .server
        .ok("1.27", &["delete", "deployment", "web", "--cascade=orphan"])
        .await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    cluster
        .wait_for("the deployment gone", WAIT, || async {
            api.get_opt("web").await.ok()?.is_none().then_some(())
        })
        .await;
    let (sets, pods) = cluster
        .wait_for("orphaned replica set", WAIT, || async {
            let (sets, pods) = web_objects(&cluster).await;
            let orphaned = sets.len() == 1 && sets[0].metadata.owner_references.is_none();
            orphaned.then_some((sets, pods))
        })
        .await;
    assert_eq!(sets[0].spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(pods.len(), 3, "pods stay with their ReplicaSet");
    let owner = sets[0].metadata.uid.clone();
    for p in &pods {
        let r = p.metadata.owner_references.as_ref().unwrap();
        assert_eq!(Some(r[0].uid.clone()), owner);
    }
}

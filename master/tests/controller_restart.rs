//! Controllers restarted (empty caches) while Deployments, ReplicaSets and pods exist: every
//! existing object is reconciled at once before the pod cache has its first list, and every
//! one of them must still converge (they used to hang in `Store::wait_until_ready`, which
//! wakes only one of several waiters; see `controllers::ready`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;
mod cluster_common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use skiff_master::controllers::Settings;

use cluster_common::SimCluster;

const WAIT: Duration = Duration::from_secs(60);
const NAMES: [&str; 4] = ["a", "b", "c", "d"];

fn deployment(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 3\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: c, image: {image}}}]}}\n"
    )
}

/// Whether every Deployment runs `image` with all 3 replicas updated and available and no
/// old replica left.
async fn rolled_out(api: &Api<Deployment>, image: &str) -> Option<()> {
    for n in NAMES {
        let d = api.get(n).await.ok()?;
        let img = d.spec.as_ref()?.template.spec.as_ref()?.containers[0]
            .image
            .clone();
        let s = d.status?;
        let done = img.as_deref() == Some(image)
            && s.observed_generation == d.metadata.generation
            && s.updated_replicas == Some(3)
            && s.available_replicas == Some(3)
            && s.replicas == Some(3);
        if !done {
            return None;
        }
    }
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_converge_after_a_controller_restart() {
    let mut cluster = SimCluster::with_nodes(Settings::default(), &["n1", "n2"]).await;
    for n in NAMES {
        cluster.apply("1.32", &deployment(n, "web:1")).await;
    }
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    cluster
        .wait_for("the first rollouts", WAIT, || rolled_out(&api, "web:1"))
        .await;
    // a rollout under way in each Deployment, then the controllers start afresh
    for n in NAMES {
        cluster.apply("1.32", &deployment(n, "web:2")).await;
    }
    cluster.restart_controllers().await;
    cluster
        .wait_for("every rollout after the restart", WAIT, || {
            rolled_out(&api, "web:2")
        })
        .await;
}

//! The garbage collector and the API server's deletion propagation, driven with kubectl:
//! background and foreground cascades (through grandchildren and a pod on a simulated
//! node), `--cascade=orphan`, the deprecated `orphanDependents`, dependents with a second
//! owner, and dependents created for an owner that does not exist.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;
mod cluster_common;

use std::time::Duration;

use cluster_common::{NodeSpec, SimCluster};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use skiff_master::controllers::Settings;

const WAIT: Duration = Duration::from_secs(20);

struct Owner {
    name: String,
    uid: String,
}

fn owner_ref(o: &Owner, kind: &str, api_version: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": o.name, "uid": o.uid,
           "controller": true, "blockOwnerDeletion": true})
}

/// Creates a ConfigMap owned by `owners` (references as given); returns name and uid.
async fn configmap(cluster: &SimCluster, name: &str, owners: Vec<Value>, extra: Value) -> Owner {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let mut cm = json!({"metadata": {"name": name, "ownerReferences": owners},
                        "data": {"k": "v"}});
    for (k, v) in extra.as_object().into_iter().flatten() {
        cm["metadata"][k] = v.clone();
    }
    let cm: ConfigMap = serde_json::from_value(cm).unwrap();
    let created = api.create(&PostParams::default(), &cm).await.unwrap();
    Owner {
        name: name.into(),
        uid: created.metadata.uid.unwrap(),
    }
}

fn cm_ref(o: &Owner) -> Value {
    owner_ref(o, "ConfigMap", "v1")
}

async fn exists(cluster: &SimCluster, name: &str) -> bool {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    api.get_opt(name).await.unwrap().is_some()
}

async fn wait_gone(cluster: &SimCluster, names: &[&str]) {
    for name in names {
        cluster
            .wait_for(&format!("{name} deleted"), WAIT, || async {
                (!exists(cluster, name).await).then_some(())
            })
            .await;
    }
}

async fn owners_of(cluster: &SimCluster, name: &str) -> Vec<String> {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    api.get(name)
        .await
        .unwrap()
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .map(|o| o.name)
        .collect()
}

#[tokio::test]
async fn background_cascade_deletes_dependents_and_their_dependents() {
    let cluster = SimCluster::start(Settings::default()).await;
    let parent = configmap(&cluster, "parent", vec![], json!({})).await;
    let other = configmap(&cluster, "other-owner", vec![], json!({})).await;
    let child = configmap(&cluster, "child", vec![cm_ref(&parent)], json!({})).await;
    configmap(&cluster, "grandchild", vec![cm_ref(&child)], json!({})).await;
    // a second, non-controlling owner keeps this one alive
    let mut second = cm_ref(&other);
    second["controller"] = json!(false);
    configmap(&cluster, "shared", vec![cm_ref(&parent), second], json!({})).await;

    let out = cluster.kubectl(&["delete", "configmap", "parent"]).await;
    assert!(out.contains("configmap \"parent\" deleted"), "{out}");
    wait_gone(&cluster, &["parent", "child", "grandchild"]).await;
    let owners = cluster
        .wait_for("shared loses its reference to parent", WAIT, || async {
            let o = owners_of(&cluster, "shared").await;
            (o.len() == 1).then_some(o)
        })
        .await;
    assert_eq!(owners, vec!["other-owner".to_string()]);
    assert!(exists(&cluster, "other-owner").await);
}

#[tokio::test]
async fn foreground_cascade_waits_for_blocking_dependents() {
    let mut cluster = SimCluster::start(Settings::default()).await;
    cluster.add_node(NodeSpec::new("sim-1")).await;
    let parent = configmap(&cluster, "parent", vec![], json!({})).await;
    // a dependent held by its own finalizer keeps the owner waiting
    let held = configmap(
        &cluster,
        "held",
        vec![cm_ref(&parent)],
        json!({"finalizers": ["example.com/hold"]}),
    )
    .await;
    configmap(&cluster, "held-child", vec![cm_ref(&held)], json!({})).await;
    // and a pod running on a node is stopped before it goes
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "worker", "ownerReferences": [cm_ref(&parent)]},
        "spec": {"nodeName": "sim-1", "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    cluster
        .kubectl(&[
            "delete",
            "configmap",
            "parent",
            "--cascade=foreground",
            "--wait=false",
        ])
        .await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let p = api.get("parent").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    assert!(
        p.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"foregroundDeletion".to_string())
    );
    // the dependents go (the held one in the foreground too, so its child first)
    wait_gone(&cluster, &["held-child"]).await;
    cluster
        .wait_for("pod worker deleted", WAIT, || async {
            pods.get_opt("worker")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
    let held_now = api.get("held").await.unwrap();
    assert!(held_now.metadata.deletion_timestamp.is_some());
    assert!(exists(&cluster, "parent").await, "parent waits for held");
    let out = cluster
        .kubectl(&[
            "get",
            "configmap",
            "parent",
            "-o",
            "jsonpath={.metadata.finalizers}",
        ])
        .await;
    assert!(out.contains("foregroundDeletion"), "{out}");

    // release the held dependent: then the owner goes
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    wait_gone(&cluster, &["held", "parent"]).await;

    // kubectl's own wait: --cascade=foreground returns once the owner is gone
    let parent = configmap(&cluster, "parent2", vec![], json!({})).await;
    configmap(&cluster, "child2", vec![cm_ref(&parent)], json!({})).await;
    cluster
        .kubectl(&["delete", "configmap", "parent2", "--cascade=foreground"])
        .await;
    assert!(!exists(&cluster, "child2").await);
    assert!(!exists(&cluster, "parent2").await);
}

#[tokio::test]
async fn orphan_cascade_leaves_dependents_without_the_reference() {
    let cluster = SimCluster::start(Settings::default()).await;
    let parent = configmap(&cluster, "parent", vec![], json!({})).await;
    let other = configmap(&cluster, "other-owner", vec![], json!({})).await;
    let mut second = cm_ref(&other);
    second["controller"] = json!(false);
    configmap(&cluster, "child", vec![cm_ref(&parent)], json!({})).await;
    configmap(
        &cluster,
        "two-owners",
        vec![cm_ref(&parent), second],
        json!({}),
    )
    .await;

    cluster
        .kubectl(&["delete", "configmap", "parent", "--cascade=orphan"])
        .await;
    assert!(!exists(&cluster, "parent").await);
    assert!(owners_of(&cluster, "child").await.is_empty());
    assert_eq!(
        owners_of(&cluster, "two-owners").await,
        vec!["other-owner".to_string()]
    );
    let out = cluster.kubectl(&["get", "configmaps"]).await;
    assert!(out.contains("child") && out.contains("two-owners"), "{out}");

    // the deprecated orphanDependents=true is Orphan too; both together are refused
    let parent = configmap(&cluster, "parent3", vec![], json!({})).await;
    configmap(&cluster, "child3", vec![cm_ref(&parent)], json!({})).await;
    let path = "/api/v1/namespaces/default/configmaps/parent3";
    let both = br#"{"orphanDependents": true, "propagationPolicy": "Background"}"#;
    let (code, body) = cluster
        .server
        .admin("DELETE", path, "application/json", both)
        .await;
    assert_eq!(code, 422, "{body}");
    let (code, body) = cluster
        .server
        .admin(
            "DELETE",
            path,
            "application/json",
            br#"{"orphanDependents": true}"#,
        )
        .await;
    assert!(code == 200 || code == 202, "{code} {body}");
    wait_gone(&cluster, &["parent3"]).await;
    assert!(owners_of(&cluster, "child3").await.is_empty());
}

#[tokio::test]
async fn dependents_of_an_owner_that_never_existed_are_collected() {
    let cluster = SimCluster::start(Settings::default()).await;
    let ghost = Owner {
        name: "ghost".into(),
        uid: "00000000-0000-4000-8000-000000000000".into(),
    };
    configmap(&cluster, "orphaned", vec![cm_ref(&ghost)], json!({})).await;
    // an owner that exists under the name but with another uid is gone as well
    let real = configmap(&cluster, "real", vec![], json!({})).await;
    let stale = Owner {
        name: real.name.clone(),
        uid: "00000000-0000-4000-8000-000000000001".into(),
    };
    configmap(&cluster, "stale", vec![cm_ref(&stale)], json!({})).await;
    configmap(&cluster, "kept", vec![cm_ref(&real)], json!({})).await;
    wait_gone(&cluster, &["orphaned", "stale"]).await;
    assert!(exists(&cluster, "kept").await);
}

//! The DaemonSet controller: one pod per eligible node, created with a required node
//! affinity to that node and bound by the scheduler (as Kubernetes does since 1.12); pods of
//! nodes that went away or stopped being eligible are deleted; a changed template rolls out
//! node by node within maxUnavailable. Reconciles over watch-fed caches of DaemonSets, Pods
//! and Nodes, with expectations so bursts never overshoot.

/// Pure decisions: eligibility, pods to create and delete, rolling update, status.
pub mod core;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tracing::{debug, info, warn};

use super::events::{self, EventType};
use super::ready::Ready;
use super::replicaset::api_message;
use super::replicaset::core as rscore;
use super::replicaset::expectations::Expectations;
use super::{Context, ControllerError};

/// Event source, as kube-controller-manager names this controller.
pub const COMPONENT: &str = "daemonset-controller";

struct State {
    ctx: Context,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// Both caches had their first list.
    ready: (Ready, Ready),
    sets: Store<DaemonSet>,
    expectations: Arc<Expectations>,
}

/// Runs the DaemonSet controller until its watches end.
pub async fn run(ctx: Context) -> Result<(), ControllerError> {
    let (sets, sets_writer) = reflector::store();
    let (pods, pods_writer) = reflector::store();
    let (nodes, nodes_writer) = reflector::store();
    let expectations = Arc::new(Expectations::default());
    let forget = expectations.clone();
    let set_events = watcher(
        Api::<DaemonSet>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(sets_writer)
    .inspect(move |ev| {
        if let Ok(watcher::Event::Delete(ds)) = ev {
            forget.forget(&events::key(ds));
        }
    })
    .touched_objects();
    let pod_events = watcher(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(pods_writer)
    .touched_objects();
    let node_events = watcher(
        Api::<Node>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(nodes_writer)
    .touched_objects();
    let state = Arc::new(State {
        ctx,
        ready: (Ready::of(&pods), Ready::of(&nodes)),
        pods,
        nodes,
        sets: sets.clone(),
        expectations,
    });
    let (pod_state, node_state) = (state.clone(), state.clone());
    Controller::for_stream(set_events, sets)
        .watches_stream(pod_events, move |pod: Pod| {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            rscore::controller_of(pod.metadata.owner_references.as_ref())
                .filter(|r| r.kind == "DaemonSet")
                .map(|r| {
                    pod_state
                        .expectations
                        .observe(&format!("{ns}/{}", r.name), &pod);
                    ObjectRef::new(&r.name).within(&ns)
                })
        })
        .watches_stream(node_events, move |_node: Node| {
            node_state
                .sets
                .state()
                .iter()
                .map(|ds| ObjectRef::from(ds.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "daemonset reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(ds: Arc<DaemonSet>, err: &ControllerError, _st: Arc<State>) -> Action {
    warn!(daemonset = %events::key(ds.as_ref()), error = %err, "daemonset sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(ds: Arc<DaemonSet>, st: Arc<State>) -> Result<Action, ControllerError> {
    if !st.ready.0.wait().await
        || !st.ready.1.wait().await
        || ds.metadata.deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    let key = events::key(ds.as_ref());
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.metadata.name.clone().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let in_ns: Vec<Arc<Pod>> = st
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .collect();
    let lookup = |n: &str| {
        in_ns
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(n))
            .map(|p| {
                (
                    p.metadata.uid.as_deref().unwrap_or_default(),
                    p.metadata.deletion_timestamp.is_some(),
                )
            })
    };
    if !st.expectations.satisfied(&key, lookup) {
        return Ok(Action::await_change());
    }
    let owned: Vec<&Pod> = in_ns
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| {
            rscore::controller_of(p.metadata.owner_references.as_ref())
                .is_some_and(|r| r.uid == uid)
        })
        .collect();
    let nodes = st.nodes.state();
    let nodes: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
    let now = Timestamp::now();
    let plan = core::plan(&ds, &nodes, &owned, now);
    let api: Api<Pod> = Api::namespaced(st.ctx.client.clone(), &ns);
    let mut notes: Vec<(EventType, &'static str, String)> = Vec::new();
    let mut failure = None;
    if !plan.delete.is_empty() {
        info!(daemonset = %key, deleting = plan.delete.len(), "deleting daemon pods");
        for p in &plan.delete {
            let pod_uid = lookup(p).map(|(u, _)| u.to_string()).unwrap_or_default();
            st.expectations.deleting(&key, p, &pod_uid);
        }
        for p in &plan.delete {
            match api.delete(p, &DeleteParams::default()).await {
                Ok(_) => notes.push((
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {p}"),
                )),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    st.expectations.delete_failed(&key, p);
                    let msg = format!("Error deleting: {}", api_message(&e));
                    notes.push((EventType::Warning, "FailedDelete", msg.clone()));
                    failure = Some(msg);
                }
            }
        }
    }
    if !plan.create.is_empty() {
        info!(daemonset = %key, creating = plan.create.len(), "creating daemon pods");
        st.expectations.creating(&key, plan.create.len());
        let pods: Vec<Pod> = plan.create.iter().map(|n| core::pod_for(&ds, n)).collect();
        let pp = PostParams::default();
        let results = futures::future::join_all(pods.iter().map(|p| api.create(&pp, p))).await;
        for (r, node) in results.into_iter().zip(&plan.create) {
            match r {
                Ok(p) => {
                    let pname = p.metadata.name.unwrap_or_default();
                    st.expectations.created(&key, Some(&pname));
                    notes.push((
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {pname}"),
                    ));
                }
                Err(e) => {
                    st.expectations.created(&key, None);
                    let msg = format!("Error creating pod for node {node}: {}", api_message(&e));
                    notes.push((EventType::Warning, "FailedCreate", msg.clone()));
                    failure = Some(msg);
                }
            }
        }
    }
    if ds.status.as_ref() != Some(&plan.status) {
        let body = serde_json::to_value(&plan.status).map_err(|e| {
            ControllerError::Invalid(format!("cannot encode daemonset status: {e}"))
        })?;
        Api::<DaemonSet>::namespaced(st.ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": body })),
            )
            .await?;
    }
    events::record_all(
        &st.ctx.client,
        COMPONENT,
        events::reference(ds.as_ref()),
        notes,
    );
    if let Some(msg) = failure {
        return Err(ControllerError::Invalid(format!("{key}: {msg}")));
    }
    // Availability after minReadySeconds needs a look without an event.
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    Ok(if min_ready > 0 {
        Action::requeue(Duration::from_secs(1))
    } else {
        Action::await_change()
    })
}

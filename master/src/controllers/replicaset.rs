//! The ReplicaSet controller: keeps `spec.replicas` active pods from the template, adopting
//! matching orphans and releasing pods that stopped matching, deleting the least useful pods
//! first, and never overshooting thanks to expectations. Reconciles over watch-fed caches of
//! ReplicaSets and Pods (kube-runtime `Controller`).

/// Pure decisions: selectors, claiming, deletion ranking, status.
pub mod core;
/// Creations and deletions in flight, so late watch events never cause duplicates.
pub mod expectations;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use self::expectations::Expectations;
use super::events::{self, EventType};
use super::ready::Ready;
use super::{Context, ControllerError};

/// Event source, as kube-controller-manager names this controller.
pub const COMPONENT: &str = "replicaset-controller";

struct State {
    ctx: Context,
    pods: Store<Pod>,
    pods_ready: Ready,
    sets: Store<ReplicaSet>,
    expectations: Arc<Expectations>,
}

/// Runs the ReplicaSet controller until its watches end.
pub async fn run(ctx: Context) -> Result<(), ControllerError> {
    let (sets, sets_writer) = reflector::store();
    let (pods, pods_writer) = reflector::store();
    let expectations = Arc::new(Expectations::default());
    let forget = expectations.clone();
    let set_events = watcher(
        Api::<ReplicaSet>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(sets_writer)
    .inspect(move |ev| {
        // A deleted ReplicaSet's expectations would otherwise wait for their timeout.
        if let Ok(watcher::Event::Delete(rs)) = ev {
            forget.forget(&events::key(rs));
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
    let state = Arc::new(State {
        ctx,
        pods_ready: Ready::of(&pods),
        pods,
        sets: sets.clone(),
        expectations,
    });
    let mapper_state = state.clone();
    Controller::for_stream(set_events, sets)
        .watches_stream(pod_events, move |pod: Pod| owners_of(&mapper_state, &pod))
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "replicaset reconcile failed");
            }
        })
        .await;
    Ok(())
}

/// The ReplicaSets a pod event concerns: its controller if that is a ReplicaSet, else (an
/// orphan) every ReplicaSet of its namespace whose selector matches it.
fn owners_of(st: &State, pod: &Pod) -> Vec<ObjectRef<ReplicaSet>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    match core::controller_of(pod.metadata.owner_references.as_ref()) {
        Some(r) if r.kind == "ReplicaSet" && r.api_version.starts_with("apps/") => {
            st.expectations.observe(&format!("{ns}/{}", r.name), pod);
            vec![ObjectRef::new(&r.name).within(&ns)]
        }
        Some(_) => Vec::new(),
        None => st
            .sets
            .state()
            .iter()
            .filter(|rs| rs.metadata.namespace.as_deref() == Some(ns.as_str()))
            .filter(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| core::selector(&s.selector))
                    .is_some_and(|sel| {
                        !sel.0.is_empty() && core::matches(&sel, pod.metadata.labels.as_ref())
                    })
            })
            .map(|rs| ObjectRef::from(rs.as_ref()))
            .collect(),
    }
}

fn error_policy(rs: Arc<ReplicaSet>, err: &ControllerError, _st: Arc<State>) -> Action {
    warn!(replicaset = %events::key(rs.as_ref()), error = %err, "replicaset sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Patches `ownerReferences` of an object (a pod, a ReplicaSet) to `refs`, guarded by its
/// uid and resourceVersion; `None` when it is gone.
async fn set_owner_refs<K>(
    api: &Api<K>,
    obj: &K,
    refs: Vec<OwnerReference>,
) -> Result<Option<K>, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let meta = obj.meta();
    let name = meta.name.clone().unwrap_or_default();
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": meta.resource_version,
        "uid": meta.uid,
    }});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(p) => Ok(Some(p)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Carries out a claim: adds the controller reference (`kind` `name` `uid`) to the orphans
/// to adopt and drops it from the objects to release. Returns the adopted objects.
pub(crate) async fn adopt_and_release<K>(
    api: &Api<K>,
    claims: &core::Claims<'_, K>,
    kind: &str,
    name: &str,
    uid: &str,
) -> Result<Vec<K>, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut adopted = Vec::new();
    for obj in &claims.adopt {
        let mut refs = obj.meta().owner_references.clone().unwrap_or_default();
        refs.push(core::controller_ref(kind, name, uid));
        if let Some(o) = set_owner_refs(api, *obj, refs).await? {
            info!(owner = %format!("{kind}/{name}"), adopted = ?o.meta().name, "adopted");
            adopted.push(o);
        }
    }
    for obj in &claims.release {
        let refs: Vec<_> = obj
            .meta()
            .owner_references
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.uid != uid)
            .collect();
        set_owner_refs(api, *obj, refs).await?;
        info!(owner = %format!("{kind}/{name}"), released = ?obj.meta().name, "released");
    }
    Ok(adopted)
}

async fn reconcile(rs: Arc<ReplicaSet>, st: Arc<State>) -> Result<Action, ControllerError> {
    // Never count pods before the pod cache has its first full list.
    if !st.pods_ready.wait().await {
        return Ok(Action::await_change());
    }
    let key = events::key(rs.as_ref());
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let Some(spec) = rs.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let Some(sel) = core::selector(&spec.selector).filter(|s| !s.0.is_empty()) else {
        warn!(replicaset = %key, "invalid or empty selector; ignoring");
        return Ok(Action::await_change());
    };
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let in_ns: Vec<Arc<Pod>> = st
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .collect();
    let claims = core::claim(
        &uid,
        deleting,
        &sel,
        in_ns
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| core::is_active(p)),
    );
    let api: Api<Pod> = Api::namespaced(st.ctx.client.clone(), &ns);
    let adopted = adopt_and_release(&api, &claims, "ReplicaSet", &name, &uid).await?;
    let mut owned: Vec<&Pod> = claims.owned.clone();
    owned.extend(adopted.iter());

    let by_name: HashMap<&str, &Pod> = in_ns
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, p.as_ref())))
        .collect();
    let lookup = |n: &str| {
        by_name.get(n).map(|p| {
            (
                p.metadata.uid.as_deref().unwrap_or_default(),
                p.metadata.deletion_timestamp.is_some(),
            )
        })
    };
    let mut failure: Option<(&'static str, String)> = None;
    if !deleting && st.expectations.satisfied(&key, lookup) {
        failure = manage(&st, &rs, &api, &owned).await;
    }

    let now = Timestamp::now();
    let (status, next) = core::status(
        &rs,
        &owned,
        failure.as_ref().map(|(r, m)| (*r, m.as_str())),
        now,
    );
    if rs.status.as_ref() != Some(&status) {
        let mut body = serde_json::to_value(&status).map_err(|e| {
            ControllerError::Invalid(format!("cannot encode replicaset status: {e}"))
        })?;
        if status.conditions.is_none() {
            body["conditions"] = Value::Null;
        }
        Api::<ReplicaSet>::namespaced(st.ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": body })),
            )
            .await?;
    }
    if let Some((reason, message)) = failure {
        return Err(ControllerError::Invalid(format!(
            "{key}: {reason}: {message}"
        )));
    }
    Ok(next.map_or_else(Action::await_change, Action::requeue))
}

/// The pod a ReplicaSet creates from its template (upstream's `GetPodFromTemplate`).
fn pod_from_template(rs: &ReplicaSet) -> Result<Pod, ControllerError> {
    let name = rs.metadata.name.clone().unwrap_or_default();
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .ok_or_else(|| ControllerError::Invalid(format!("replicaset {name} has no template")))?;
    let meta = template.metadata.unwrap_or_default();
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: rs.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![core::controller_ref(
                "ReplicaSet",
                &name,
                rs.metadata.uid.as_deref().unwrap_or_default(),
            )]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    })
}

/// Creates or deletes pods towards `spec.replicas`. Returns the failure (reason, message)
/// for the ReplicaFailure condition, if any.
async fn manage(
    st: &State,
    rs: &ReplicaSet,
    api: &Api<Pod>,
    owned: &[&Pod],
) -> Option<(&'static str, String)> {
    let key = events::key(rs);
    // Events are recorded off the sync path, as upstream's broadcaster does, so a burst of
    // creates is not slowed by two API calls per pod.
    let mut notes: Vec<(EventType, &'static str, String)> = Vec::new();
    let failure = change_replicas(st, rs, api, owned, &key, &mut notes).await;
    if !notes.is_empty() {
        let client = st.ctx.client.clone();
        let reference = events::reference(rs);
        tokio::spawn(async move {
            for (kind, reason, message) in notes {
                events::record(
                    &client,
                    COMPONENT,
                    reference.clone(),
                    kind,
                    reason,
                    &message,
                )
                .await;
            }
        });
    }
    failure
}

async fn change_replicas(
    st: &State,
    rs: &ReplicaSet,
    api: &Api<Pod>,
    owned: &[&Pod],
    key: &str,
    notes: &mut Vec<(EventType, &'static str, String)>,
) -> Option<(&'static str, String)> {
    let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let diff = core::replica_diff(replicas, owned.len());
    if diff > 0 {
        let pod = match pod_from_template(rs) {
            Ok(p) => p,
            Err(e) => return Some(("FailedCreate", e.to_string())),
        };
        let mut remaining = usize::try_from(diff).unwrap_or(0);
        info!(replicaset = %key, want = replicas, have = owned.len(), creating = remaining, "too few replicas");
        st.expectations.creating(key, remaining);
        // Slow start, as upstream: batches of 1, 2, 4, … so a failing template costs
        // few calls.
        let mut batch = 1usize;
        let pp = PostParams::default();
        while remaining > 0 {
            let n = batch.min(remaining);
            let results = futures::future::join_all((0..n).map(|_| api.create(&pp, &pod))).await;
            remaining -= n;
            let mut failed = None;
            for r in results {
                match r {
                    Ok(p) => {
                        let pname = p.metadata.name.unwrap_or_default();
                        st.expectations.created(key, Some(&pname));
                        notes.push((
                            EventType::Normal,
                            "SuccessfulCreate",
                            format!("Created pod: {pname}"),
                        ));
                    }
                    Err(e) => {
                        st.expectations.created(key, None);
                        let msg = format!("Error creating: {}", api_message(&e));
                        notes.push((EventType::Warning, "FailedCreate", msg.clone()));
                        failed = Some(("FailedCreate", msg));
                    }
                }
            }
            if failed.is_some() {
                for _ in 0..remaining {
                    st.expectations.created(key, None);
                }
                return failed;
            }
            batch *= 2;
        }
    } else if diff < 0 {
        let n = usize::try_from(-diff).unwrap_or(0);
        let mut victims: Vec<&Pod> = owned.to_vec();
        core::rank_for_deletion(&mut victims, owned);
        victims.truncate(n);
        info!(replicaset = %key, want = replicas, have = owned.len(), deleting = n, "too many replicas");
        for p in &victims {
            st.expectations.deleting(
                key,
                p.metadata.name.as_deref().unwrap_or_default(),
                p.metadata.uid.as_deref().unwrap_or_default(),
            );
        }
        let results = futures::future::join_all(victims.iter().map(|p| {
            let pname = p.metadata.name.clone().unwrap_or_default();
            async move {
                let r = api.delete(&pname, &DeleteParams::default()).await;
                (pname, r)
            }
        }))
        .await;
        let mut failed = None;
        for (pname, r) in results {
            match r {
                Ok(_) => {
                    notes.push((
                        EventType::Normal,
                        "SuccessfulDelete",
                        format!("Deleted pod: {pname}"),
                    ));
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    st.expectations.delete_failed(key, &pname);
                    let msg = format!("Error deleting: {}", api_message(&e));
                    notes.push((EventType::Warning, "FailedDelete", msg.clone()));
                    failed = Some(("FailedDelete", msg));
                }
            }
        }
        return failed;
    }
    None
}

/// The API server's message for an API error, else the error's text.
pub(crate) fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_come_from_the_template_with_a_controller_reference() {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "web-5d4f", "namespace": "default", "uid": "u1"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "5d4f"},
                                               "annotations": {"a": "b"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
        }))
        .unwrap();
        let pod = pod_from_template(&rs).unwrap();
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("web-5d4f-"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels["pod-template-hash"], "5d4f");
        assert_eq!(pod.metadata.annotations.unwrap()["a"], "b");
        let refs = pod.metadata.owner_references.unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(
            (
                refs[0].kind.as_str(),
                refs[0].uid.as_str(),
                refs[0].controller
            ),
            ("ReplicaSet", "u1", Some(true))
        );
        assert_eq!(
            pod.spec.unwrap().containers[0].image.as_deref(),
            Some("nginx")
        );
    }
}

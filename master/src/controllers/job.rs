//! The Job controller: runs pods from a Job's template until `completions` of them succeeded
//! (or every index did, in Indexed mode), at most `parallelism` at a time, replacing failed
//! ones after a backoff until `backoffLimit`; fails the Job past its active deadline; stops
//! pods of a suspended Job; deletes finished Jobs after `ttlSecondsAfterFinished` (upstream's
//! TTL-after-finished controller). Reconciles over watch-fed caches of Jobs and Pods, with
//! expectations so bursts never overshoot.

/// Pure decisions: pods to create and delete, conditions, status.
pub mod core;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::events::{self, EventType};
use super::ready::Ready;
use super::replicaset::core as rscore;
use super::replicaset::expectations::Expectations;
use super::replicaset::{adopt_and_release, api_message};
use super::{Context, ControllerError};

/// Event source, as kube-controller-manager names this controller.
pub const COMPONENT: &str = "job-controller";

struct State {
    ctx: Context,
    pods: Store<Pod>,
    pods_ready: Ready,
    jobs: Store<Job>,
    expectations: Arc<Expectations>,
}

/// Runs the Job controller until its watches end.
pub async fn run(ctx: Context) -> Result<(), ControllerError> {
    let (jobs, jobs_writer) = reflector::store();
    let (pods, pods_writer) = reflector::store();
    let expectations = Arc::new(Expectations::default());
    let forget = expectations.clone();
    let job_events = watcher(
        Api::<Job>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(jobs_writer)
    .inspect(move |ev| {
        if let Ok(watcher::Event::Delete(job)) = ev {
            forget.forget(&events::key(job));
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
        jobs: jobs.clone(),
        expectations,
    });
    let mapper = state.clone();
    Controller::for_stream(job_events, jobs)
        .watches_stream(pod_events, move |pod: Pod| owners_of(&mapper, &pod))
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "job reconcile failed");
            }
        })
        .await;
    Ok(())
}

/// The Jobs a pod event concerns: its controller if that is a Job, else (an orphan) every
/// Job of its namespace whose selector matches it.
fn owners_of(st: &State, pod: &Pod) -> Vec<ObjectRef<Job>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    match rscore::controller_of(pod.metadata.owner_references.as_ref()) {
        Some(r) if r.kind == "Job" && r.api_version.starts_with("batch/") => {
            st.expectations.observe(&format!("{ns}/{}", r.name), pod);
            vec![ObjectRef::new(&r.name).within(&ns)]
        }
        Some(_) => Vec::new(),
        None => st
            .jobs
            .state()
            .iter()
            .filter(|j| j.metadata.namespace.as_deref() == Some(ns.as_str()))
            .filter(|j| {
                j.spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .and_then(rscore::selector)
                    .is_some_and(|sel| {
                        !sel.0.is_empty() && rscore::matches(&sel, pod.metadata.labels.as_ref())
                    })
            })
            .map(|j| ObjectRef::from(j.as_ref()))
            .collect(),
    }
}

fn error_policy(job: Arc<Job>, err: &ControllerError, _st: Arc<State>) -> Action {
    warn!(job = %events::key(job.as_ref()), error = %err, "job sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(job: Arc<Job>, st: Arc<State>) -> Result<Action, ControllerError> {
    if !st.pods_ready.wait().await {
        return Ok(Action::await_change());
    }
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = events::key(job.as_ref());
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let now = Timestamp::now();
    let jobs: Api<Job> = Api::namespaced(st.ctx.client.clone(), &ns);
    match core::ttl_remaining(&job, now) {
        Some(Duration::ZERO) => {
            info!(job = %key, "finished job past its ttlSecondsAfterFinished; deleting");
            match jobs.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(Action::await_change());
        }
        Some(left) if core::finished(&job) => {
            // Pods still running are stopped below; look again at the deadline.
            let action = Action::requeue(left);
            sync(&st, &job, &key, now).await?;
            return Ok(action);
        }
        _ => {}
    }
    let Some(sel) = job
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .and_then(rscore::selector)
        .filter(|s| !s.0.is_empty())
    else {
        warn!(job = %key, "invalid or empty selector; ignoring");
        return Ok(Action::await_change());
    };
    let in_ns = pods_in(&st, &ns);
    // Orphans are adopted only while active (finished pods of someone else stay theirs).
    let claims = rscore::claim(&uid, false, &sel, in_ns.iter().map(|p| p.as_ref()));
    let adoptable: Vec<&Pod> = claims
        .adopt
        .iter()
        .copied()
        .filter(|p| rscore::is_active(p))
        .collect();
    let claims = rscore::Claims {
        owned: claims.owned,
        adopt: adoptable,
        release: claims.release,
    };
    let api: Api<Pod> = Api::namespaced(st.ctx.client.clone(), &ns);
    let adopted = adopt_and_release(&api, &claims, "Job", &name, &uid).await?;
    if !adopted.is_empty() || !claims.release.is_empty() {
        // The cache sees the new ownerReferences soon; count then.
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    sync(&st, &job, &key, now).await
}

/// The cached pods of namespace `ns`.
fn pods_in(st: &State, ns: &str) -> Vec<Arc<Pod>> {
    st.pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
        .collect()
}

/// Plans over the owned pods in the cache and carries the plan out.
async fn sync(st: &State, job: &Job, key: &str, now: Timestamp) -> Result<Action, ControllerError> {
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let in_ns = pods_in(st, &ns);
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
    if !st.expectations.satisfied(key, lookup) {
        // The watch has not shown every create/delete yet; its events bring us back.
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
    let plan = core::plan(job, &owned, now, st.ctx.settings.job_backoff);
    let api: Api<Pod> = Api::namespaced(st.ctx.client.clone(), &ns);
    let mut notes: Vec<(EventType, &'static str, String)> = Vec::new();
    let mut failure = None;
    if !plan.delete.is_empty() {
        info!(job = %key, deleting = plan.delete.len(), "stopping pods");
        for p in &plan.delete {
            let pod_uid = lookup(p).map(|(u, _)| u.to_string()).unwrap_or_default();
            st.expectations.deleting(key, p, &pod_uid);
        }
        let results = futures::future::join_all(plan.delete.iter().map(|p| {
            let api = api.clone();
            async move { (p, api.delete(p, &DeleteParams::default()).await) }
        }))
        .await;
        for (p, r) in results {
            match r {
                Ok(_) => notes.push((
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {p}"),
                )),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    st.expectations.delete_failed(key, p);
                    let msg = format!("Error deleting: {}", api_message(&e));
                    notes.push((EventType::Warning, "FailedDelete", msg.clone()));
                    failure = Some(msg);
                }
            }
        }
    }
    if !plan.create.is_empty() {
        info!(job = %key, creating = plan.create.len(), "starting pods");
        st.expectations.creating(key, plan.create.len());
        let pp = PostParams::default();
        // Slow start, as upstream: batches of 1, 2, 4, … so a failing template costs few calls.
        let mut batch = 1usize;
        let mut rest: &[Option<i32>] = &plan.create;
        while !rest.is_empty() {
            let (now_batch, later) = rest.split_at(batch.min(rest.len()));
            rest = later;
            let pods: Vec<Pod> = now_batch.iter().map(|i| core::pod_for(job, *i)).collect();
            let results = futures::future::join_all(pods.iter().map(|p| api.create(&pp, p))).await;
            let mut failed = false;
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
                        failure = Some(msg);
                        failed = true;
                    }
                }
            }
            if failed {
                for _ in rest {
                    st.expectations.created(key, None);
                }
                break;
            }
            batch *= 2;
        }
    }
    if let Some((reason, message)) = &plan.event {
        let kind = match *reason {
            "BackoffLimitExceeded" | "DeadlineExceeded" => EventType::Warning,
            _ => EventType::Normal,
        };
        notes.push((kind, reason, message.clone()));
    }
    if job.status.as_ref() != Some(&plan.status) {
        let mut body = serde_json::to_value(&plan.status)
            .map_err(|e| ControllerError::Invalid(format!("cannot encode job status: {e}")))?;
        for k in ["startTime", "completionTime", "conditions"] {
            if body.get(k).is_none() {
                body[k] = Value::Null;
            }
        }
        Api::<Job>::namespaced(st.ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": body })),
            )
            .await?;
    }
    events::record_all(&st.ctx.client, COMPONENT, events::reference(job), notes);
    if let Some(msg) = failure {
        return Err(ControllerError::Invalid(format!("{key}: {msg}")));
    }
    Ok(plan
        .requeue
        .map_or_else(Action::await_change, Action::requeue))
}

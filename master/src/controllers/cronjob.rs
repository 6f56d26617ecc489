//! The CronJob controller: starts a Job from the template at each scheduled time (in the
//! CronJob's time zone), honouring concurrencyPolicy, startingDeadlineSeconds and suspend,
//! keeps the finished Jobs within the history limits and reports active Jobs and the last
//! schedule and success times. Reconciles over watch-fed caches of CronJobs and Jobs; the
//! clock is the settings' (tests move it instead of waiting minutes).

/// Pure decisions: the schedule, concurrency, history, status.
pub mod core;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::events::{self, EventType};
use super::ready::Ready;
use super::replicaset::api_message;
use super::replicaset::core as rscore;
use super::{Context, ControllerError};

/// Event source, as kube-controller-manager names this controller.
pub const COMPONENT: &str = "cronjob-controller";

struct State {
    ctx: Context,
    jobs: Store<Job>,
    jobs_ready: Ready,
}

/// Runs the CronJob controller until its watches end.
pub async fn run(ctx: Context) -> Result<(), ControllerError> {
    let (cronjobs, cj_writer) = reflector::store();
    let (jobs, jobs_writer) = reflector::store();
    let cj_events = watcher(
        Api::<CronJob>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(cj_writer)
    .touched_objects();
    let job_events = watcher(
        Api::<Job>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(jobs_writer)
    .touched_objects();
    let state = Arc::new(State {
        ctx,
        jobs_ready: Ready::of(&jobs),
        jobs,
    });
    Controller::for_stream(cj_events, cronjobs)
        .watches_stream(job_events, |job: Job| {
            let ns = job.metadata.namespace.clone().unwrap_or_default();
            rscore::controller_of(job.metadata.owner_references.as_ref())
                .filter(|r| r.kind == "CronJob")
                .map(|r| ObjectRef::new(&r.name).within(&ns))
        })
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "cronjob reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(cj: Arc<CronJob>, err: &ControllerError, _st: Arc<State>) -> Action {
    warn!(cronjob = %events::key(cj.as_ref()), error = %err, "cronjob sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(cj: Arc<CronJob>, st: Arc<State>) -> Result<Action, ControllerError> {
    if !st.jobs_ready.wait().await || cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = events::key(cj.as_ref());
    let ns = cj.metadata.namespace.clone().unwrap_or_default();
    let name = cj.metadata.name.clone().unwrap_or_default();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let all = st.jobs.state();
    let owned: Vec<&Job> = all
        .iter()
        .map(|j| j.as_ref())
        .filter(|j| j.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|j| {
            rscore::controller_of(j.metadata.owner_references.as_ref())
                .is_some_and(|r| r.uid == uid)
        })
        .collect();
    let now = (st.ctx.settings.clock)();
    let plan = match core::plan(&cj, &owned, now) {
        Ok(p) => p,
        Err(e) => {
            warn!(cronjob = %key, error = %e, "unparseable schedule");
            events::record(
                &st.ctx.client,
                COMPONENT,
                events::reference(cj.as_ref()),
                EventType::Warning,
                "UnparseableSchedule",
                &format!(
                    "unparseable schedule: {:?} : {e}",
                    cj.spec.as_ref().map(|s| &s.schedule)
                ),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let jobs: Api<Job> = Api::namespaced(st.ctx.client.clone(), &ns);
    let mut notes: Vec<(EventType, &'static str, String)> = Vec::new();
    for victim in plan.replace.iter().chain(&plan.prune) {
        match jobs.delete(victim, &DeleteParams::background()).await {
            Ok(_) => notes.push((
                EventType::Normal,
                "SuccessfulDelete",
                format!("Deleted job {victim}"),
            )),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(job) = &plan.create {
        let jname = job.metadata.name.clone().unwrap_or_default();
        match jobs.create(&PostParams::default(), job).await {
            Ok(_) => {
                info!(cronjob = %key, job = %jname, "created job");
                notes.push((
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("Created job {jname}"),
                ));
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                let msg = format!("Error creating job: {}", api_message(&e));
                notes.push((EventType::Warning, "FailedCreate", msg));
                events::record_all(
                    &st.ctx.client,
                    COMPONENT,
                    events::reference(cj.as_ref()),
                    notes,
                );
                return Err(e.into());
            }
        }
    }
    if let Some(msg) = &plan.skipped {
        notes.push((EventType::Normal, "JobAlreadyActive", msg.clone()));
    }
    if cj.status.as_ref() != Some(&plan.status) {
        let mut body = serde_json::to_value(&plan.status)
            .map_err(|e| ControllerError::Invalid(format!("cannot encode cronjob status: {e}")))?;
        if body.get("active").is_none() {
            body["active"] = Value::Null;
        }
        Api::<CronJob>::namespaced(st.ctx.client.clone(), &ns)
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
        events::reference(cj.as_ref()),
        notes,
    );
    Ok(plan
        .requeue
        .map_or_else(Action::await_change, Action::requeue))
}

//! The disruption controller: keeps each PodDisruptionBudget's status (currentHealthy,
//! desiredHealthy, expectedPods, disruptionsAllowed, disruptedPods, the DisruptionAllowed
//! condition, observedGeneration) in step with the pods it selects and the scale of their
//! controllers, so the eviction subresource can decide from it. Reconciles over watch-fed
//! caches of budgets, pods, ReplicaSets and Deployments.

/// Pure decisions: selection, expected and desired counts, health, status, eviction verdicts.
pub mod core;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{debug, info, warn};

use super::events;
use super::ready::Ready;
use super::replicaset::core as rscore;
use super::{Context, ControllerError};

struct State {
    ctx: Context,
    budgets: Store<PodDisruptionBudget>,
    pods: Store<Pod>,
    replicasets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    ready: [Ready; 3],
}

/// The scales of controllers from the caches: a ReplicaSet owned by a Deployment counts as
/// the Deployment (upstream's finders).
struct Cached<'a>(&'a State);

impl core::Scales for Cached<'_> {
    fn scale(&self, namespace: &str, owner: &OwnerReference) -> Option<(String, i32)> {
        match owner.kind.as_str() {
            "ReplicaSet" => {
                let rs = self
                    .0
                    .replicasets
                    .get(&ObjectRef::new(&owner.name).within(namespace))?;
                if rs.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
                    return None;
                }
                match rscore::controller_of(rs.metadata.owner_references.as_ref()) {
                    Some(d) if d.kind == "Deployment" => self.scale(namespace, d),
                    _ => Some((
                        owner.uid.clone(),
                        rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    )),
                }
            }
            "Deployment" => {
                let d = self
                    .0
                    .deployments
                    .get(&ObjectRef::new(&owner.name).within(namespace))?;
                (d.metadata.uid.as_deref() == Some(owner.uid.as_str())).then(|| {
                    (
                        owner.uid.clone(),
                        d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    )
                })
            }
            _ => None,
        }
    }
}

/// The budgets of `namespace` (all of them, or those selecting `pod`).
fn budgets_for(
    st: &State,
    namespace: &str,
    pod: Option<&Pod>,
) -> Vec<ObjectRef<PodDisruptionBudget>> {
    st.budgets
        .state()
        .iter()
        .filter(|b| b.metadata.namespace.as_deref() == Some(namespace))
        .filter(|b| pod.is_none_or(|p| core::selects(b, p)))
        .map(|b| ObjectRef::from(b.as_ref()))
        .collect()
}

/// Runs the disruption controller until its watches end.
pub async fn run(ctx: Context) -> Result<(), ControllerError> {
    let (budgets, budgets_writer) = reflector::store();
    let (pods, pods_writer) = reflector::store();
    let (replicasets, rs_writer) = reflector::store();
    let (deployments, deploy_writer) = reflector::store();
    let client = ctx.client.clone();
    let budget_events = watcher(
        Api::<PodDisruptionBudget>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(budgets_writer)
    .touched_objects();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(pods_writer)
        .touched_objects();
    let rs_events = watcher(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(rs_writer)
    .touched_objects();
    let deploy_events = watcher(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(deploy_writer)
    .touched_objects();
    let state = Arc::new(State {
        ctx,
        ready: [
            Ready::of(&pods),
            Ready::of(&replicasets),
            Ready::of(&deployments),
        ],
        budgets: budgets.clone(),
        pods,
        replicasets,
        deployments,
    });
    let (s1, s2, s3) = (state.clone(), state.clone(), state.clone());
    Controller::for_stream(budget_events, budgets)
        .watches_stream(pod_events, move |pod: Pod| {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            budgets_for(&s1, &ns, Some(&pod))
        })
        .watches_stream(rs_events, move |rs: ReplicaSet| {
            budgets_for(
                &s2,
                rs.metadata.namespace.as_deref().unwrap_or_default(),
                None,
            )
        })
        .watches_stream(deploy_events, move |d: Deployment| {
            budgets_for(
                &s3,
                d.metadata.namespace.as_deref().unwrap_or_default(),
                None,
            )
        })
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "disruption reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(pdb: Arc<PodDisruptionBudget>, err: &ControllerError, _st: Arc<State>) -> Action {
    warn!(pdb = %events::key(pdb.as_ref()), error = %err, "disruption budget sync failed; retrying");
    Action::requeue(Duration::from_secs(1))
}

async fn reconcile(
    pdb: Arc<PodDisruptionBudget>,
    st: Arc<State>,
) -> Result<Action, ControllerError> {
    for r in &st.ready {
        if !r.wait().await {
            return Ok(Action::await_change());
        }
    }
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = events::key(pdb.as_ref());
    let ns = pdb.metadata.namespace.clone().unwrap_or_default();
    let name = pdb.metadata.name.clone().unwrap_or_default();
    let all = st.pods.state();
    let pods: Vec<&Pod> = all
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| core::selects(&pdb, p))
        .collect();
    let status = core::status(&pdb, &pods, &Cached(&st), Timestamp::now());
    let waiting = status
        .disrupted_pods
        .as_ref()
        .is_some_and(|d| !d.is_empty());
    if pdb.status.as_ref() != Some(&status) {
        info!(pdb = %key, healthy = status.current_healthy, desired = status.desired_healthy,
              expected = status.expected_pods, allowed = status.disruptions_allowed, "budget status");
        let mut updated = (*pdb).clone();
        updated.status = Some(status);
        // a replace (with the cached resourceVersion): disruptedPods entries must go away,
        // which a merge patch would not do; a conflict means a newer object is on its way
        match Api::<PodDisruptionBudget>::namespaced(st.ctx.client.clone(), &ns)
            .replace_status(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    // evictions not yet followed by their pod's deletion expire after DELETION_TIMEOUT
    Ok(if waiting {
        Action::requeue(Duration::from_secs(15))
    } else {
        Action::await_change()
    })
}

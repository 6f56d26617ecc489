//! The Deployment controller: one ReplicaSet per pod template (named
//! `<deployment>-<pod-template-hash>`), rolled by RollingUpdate (maxSurge/maxUnavailable) or
//! Recreate, with revisions, rollback by template, pause, proportional scaling, history
//! cleanup, and the status and conditions `kubectl rollout status` reads. Reconciles over
//! watch-fed caches of Deployments, ReplicaSets and Pods; the decisions are in [`core`].

/// Pure decisions: hash, fenceposts, scaling steps, annotations, status and conditions.
pub mod core;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use self::core::{Dep, Rs, reason};
use super::events::{self, EventType};
use super::ready::Ready;
use super::replicaset::adopt_and_release;
use super::replicaset::core::{self as rscore, controller_of};
use super::{Context, ControllerError};

/// Event source, as kube-controller-manager names this controller.
pub const COMPONENT: &str = "deployment-controller";

struct State {
    ctx: Context,
    deployments: Store<Deployment>,
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    /// Both caches had their first list.
    ready: (Ready, Ready),
}

/// Runs the Deployment controller until its watches end.
pub async fn run(ctx: Context) -> Result<(), ControllerError> {
    let (deployments, d_writer) = reflector::store();
    let (sets, rs_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let cfg = watcher::Config::default;
    let d_events = watcher(Api::<Deployment>::all(ctx.client.clone()), cfg())
        .default_backoff()
        .reflect(d_writer)
        .touched_objects();
    let rs_events = watcher(Api::<ReplicaSet>::all(ctx.client.clone()), cfg())
        .default_backoff()
        .reflect(rs_writer)
        .touched_objects();
    let pod_events = watcher(Api::<Pod>::all(ctx.client.clone()), cfg())
        .default_backoff()
        .reflect(pod_writer)
        .touched_objects();
    let state = Arc::new(State {
        ctx,
        deployments: deployments.clone(),
        ready: (Ready::of(&sets), Ready::of(&pods)),
        sets,
        pods,
    });
    let (s1, s2) = (state.clone(), state.clone());
    Controller::for_stream(d_events, deployments)
        .watches_stream(rs_events, move |rs: ReplicaSet| rs_owners(&s1, &rs))
        .watches_stream(pod_events, move |pod: Pod| pod_owners(&s2, &pod))
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "deployment reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn selector_of(d: &Deployment) -> Option<crate::api::select::LabelSelector> {
    d.spec
        .as_ref()
        .and_then(|s| rscore::selector(&s.selector))
        .filter(|s| !s.0.is_empty())
}

/// The Deployment a ReplicaSet event concerns: its controller, or for an orphan every
/// Deployment of the namespace selecting it.
fn rs_owners(st: &State, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    match controller_of(rs.metadata.owner_references.as_ref()) {
        Some(r) if r.kind == "Deployment" => vec![ObjectRef::new(&r.name).within(&ns)],
        Some(_) => Vec::new(),
        None => st
            .deployments
            .state()
            .iter()
            .filter(|d| d.metadata.namespace.as_deref() == Some(ns.as_str()))
            .filter(|d| {
                selector_of(d).is_some_and(|sel| rscore::matches(&sel, rs.metadata.labels.as_ref()))
            })
            .map(|d| ObjectRef::from(d.as_ref()))
            .collect(),
    }
}

/// A Recreate Deployment waits for its old pods to be gone: pod events of its ReplicaSets
/// concern it.
fn pod_owners(st: &State, pod: &Pod) -> Vec<ObjectRef<Deployment>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let Some(r) = controller_of(pod.metadata.owner_references.as_ref()) else {
        return Vec::new();
    };
    if r.kind != "ReplicaSet" {
        return Vec::new();
    }
    let Some(rs) = st
        .sets
        .get(&ObjectRef::<ReplicaSet>::new(&r.name).within(&ns))
    else {
        return Vec::new();
    };
    let Some(dr) = controller_of(rs.metadata.owner_references.as_ref()) else {
        return Vec::new();
    };
    let key = ObjectRef::<Deployment>::new(&dr.name).within(&ns);
    match st.deployments.get(&key) {
        Some(d) if !Dep::of(&d).rolling => vec![key],
        _ => Vec::new(),
    }
}

fn error_policy(d: Arc<Deployment>, err: &ControllerError, _st: Arc<State>) -> Action {
    warn!(deployment = %events::key(d.as_ref()), error = %err, "deployment sync failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

fn view(rs: &ReplicaSet) -> Rs {
    let ann = rs.metadata.annotations.as_ref();
    let num = |k: &str| {
        ann.and_then(|a| a.get(k))
            .and_then(|v| v.parse::<i32>().ok())
    };
    let st = rs.status.clone().unwrap_or_default();
    Rs {
        name: rs.metadata.name.clone().unwrap_or_default(),
        replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        actual: st.replicas,
        ready: st.ready_replicas.unwrap_or(0),
        available: st.available_replicas.unwrap_or(0),
        created: rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
        revision: revision(rs),
        max_replicas: num(core::MAX_REPLICAS),
        desired_replicas: num(core::DESIRED_REPLICAS),
    }
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(core::REVISION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn views(rss: &[ReplicaSet]) -> Vec<Rs> {
    rss.iter().map(view).collect()
}

/// One reconcile's working set.
struct Sync<'a> {
    st: &'a State,
    d: Deployment,
    dep: Dep,
    key: String,
    ns: String,
    name: String,
    /// The ReplicaSets this Deployment owns.
    sets: Vec<ReplicaSet>,
}

async fn reconcile(d: Arc<Deployment>, st: Arc<State>) -> Result<Action, ControllerError> {
    if !st.ready.0.wait().await || !st.ready.1.wait().await {
        return Ok(Action::await_change());
    }
    let key = events::key(d.as_ref());
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let name = d.metadata.name.clone().unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let Some(sel) = selector_of(&d) else {
        warn!(deployment = %key, "empty or invalid selector; a deployment must select its pods");
        return Ok(Action::await_change());
    };
    let deleting = d.metadata.deletion_timestamp.is_some();
    let in_ns: Vec<Arc<ReplicaSet>> = st
        .sets
        .state()
        .into_iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(ns.as_str()))
        .collect();
    let claims = rscore::claim(&uid, deleting, &sel, in_ns.iter().map(|r| r.as_ref()));
    let api: Api<ReplicaSet> = Api::namespaced(st.ctx.client.clone(), &ns);
    let mut sets: Vec<ReplicaSet> = claims.owned.iter().map(|r| (*r).clone()).collect();
    sets.extend(adopt_and_release(&api, &claims, "Deployment", &name, &uid).await?);
    sets.sort_by(|a, b| {
        let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    let mut s = Sync {
        st: &st,
        dep: Dep::of(&d),
        d: (*d).clone(),
        key,
        ns,
        name,
        sets,
    };
    if deleting {
        let (new, old) = s.new_and_old();
        let all = s.all(new.as_ref(), &old);
        let status = core::calculate_status(
            &s.d,
            &s.dep,
            &all,
            new.as_ref().map(view).as_ref(),
            Timestamp::now(),
        );
        s.write_status(status).await?;
        return Ok(Action::await_change());
    }
    s.check_paused_conditions().await?;
    let paused = s.d.spec.as_ref().and_then(|x| x.paused).unwrap_or(false);
    if paused || core::is_scaling_event(&s.dep, &views(&s.sets)) {
        return s.sync(paused).await;
    }
    if s.dep.rolling {
        s.rollout_rolling().await
    } else {
        s.rollout_recreate().await
    }
}

impl Sync<'_> {
    fn template(&self) -> k8s_openapi::api::core::v1::PodTemplateSpec {
        self.d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default()
    }

    /// The ReplicaSet running the current template (the oldest such), and the others
    /// (upstream's `FindNewReplicaSet` / `FindOldReplicaSets`).
    fn new_and_old(&self) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
        let t = self.template();
        let idx = self.sets.iter().position(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|rt| core::equal_ignore_hash(rt, &t))
        });
        let mut old = self.sets.clone();
        let new = idx.map(|i| old.remove(i));
        (new, old)
    }

    fn all(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> Vec<Rs> {
        let mut v = views(old);
        v.extend(new.map(view));
        v
    }

    fn reference(&self) -> k8s_openapi::api::core::v1::ObjectReference {
        events::reference(&self.d)
    }

    async fn event(&self, kind: EventType, reason: &str, message: &str) {
        events::record(
            &self.st.ctx.client,
            COMPONENT,
            self.reference(),
            kind,
            reason,
            message,
        )
        .await;
    }

    fn rs_api(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.st.ctx.client.clone(), &self.ns)
    }

    /// Writes the status if it changed; keeps the written object.
    async fn write_status(&mut self, status: DeploymentStatus) -> Result<(), ControllerError> {
        if self.d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut body = serde_json::to_value(&status).map_err(|e| {
            ControllerError::Invalid(format!("cannot encode deployment status: {e}"))
        })?;
        if status.conditions.is_none() {
            body["conditions"] = Value::Null;
        }
        let api: Api<Deployment> = Api::namespaced(self.st.ctx.client.clone(), &self.ns);
        self.d = api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": body })),
            )
            .await?;
        Ok(())
    }

    /// Sets the Deployment's revision annotation (upstream's `SetDeploymentRevision`).
    async fn set_revision(&mut self, rev: &str) -> Result<(), ControllerError> {
        let cur = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(core::REVISION));
        if cur.map(String::as_str) == Some(rev) {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(self.st.ctx.client.clone(), &self.ns);
        let patch = json!({"metadata": {"annotations": {core::REVISION: rev}}});
        self.d = api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Progressing=Unknown DeploymentPaused / DeploymentResumed (upstream's
    /// `checkPausedConditions`).
    async fn check_paused_conditions(&mut self) -> Result<(), ControllerError> {
        if core::progress_deadline(&self.d).is_none() {
            return Ok(());
        }
        let paused = self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let mut status = self.d.status.clone().unwrap_or_default();
        let paused_cond = core::get_condition(&status, "Progressing")
            .is_some_and(|c| c.reason.as_deref() == Some(reason::PAUSED));
        let now = Timestamp::now();
        if paused && !paused_cond {
            core::set_condition(
                &mut status,
                core::condition(
                    "Progressing",
                    "Unknown",
                    reason::PAUSED,
                    "Deployment is paused",
                    now,
                ),
            );
        } else if !paused && paused_cond {
            core::set_condition(
                &mut status,
                core::condition(
                    "Progressing",
                    "Unknown",
                    reason::RESUMED,
                    "Deployment is resumed",
                    now,
                ),
            );
        } else {
            return Ok(());
        }
        self.write_status(status).await
    }

    /// The new ReplicaSet with its annotations and revision brought up to date, creating it
    /// when `create` (upstream's `getAllReplicaSetsAndSyncRevision`).
    async fn sync_revision(
        &mut self,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), ControllerError> {
        let (new, old) = self.new_and_old();
        let max_old = old.iter().map(revision).max().unwrap_or(0);
        let new_revision = max_old + 1;
        let d_ann = self.d.metadata.annotations.clone().unwrap_or_default();
        let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        if let Some(mut rs) = new {
            let mut ann = rs.metadata.annotations.clone().unwrap_or_default();
            let changed = core::new_rs_annotations(&d_ann, &mut ann, new_revision, true, &self.dep);
            let spec_min = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
            if changed || spec_min.unwrap_or(0) != min_ready.unwrap_or(0) {
                rs.metadata.annotations = Some(ann);
                if let Some(spec) = rs.spec.as_mut() {
                    spec.min_ready_seconds = min_ready;
                }
                rs = self.replace_rs(&rs).await?;
            }
            let rev = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(core::REVISION))
                .cloned()
                .unwrap_or_default();
            self.set_revision(&rev).await?;
            let mut status = self.d.status.clone().unwrap_or_default();
            if core::progress_deadline(&self.d).is_some()
                && core::get_condition(&status, "Progressing").is_none()
            {
                let msg = format!(
                    "Found new replica set \"{}\"",
                    rs.metadata.name.as_deref().unwrap_or_default()
                );
                core::set_condition(
                    &mut status,
                    core::condition(
                        "Progressing",
                        "True",
                        reason::FOUND_NEW_RS,
                        &msg,
                        Timestamp::now(),
                    ),
                );
                self.write_status(status).await?;
            }
            return Ok((Some(rs), old));
        }
        if !create {
            return Ok((None, old));
        }
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let template = self.template();
        let hash = core::template_hash(&template, collision);
        let mut rs_template = template;
        rs_template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(core::HASH_LABEL.into(), hash.clone());
        let mut selector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(core::HASH_LABEL.into(), hash.clone());
        let rs_name = format!("{}-{hash}", self.name);
        let replicas = core::new_rs_replicas(&self.dep, &views(&old), &Rs::default());
        let mut ann = BTreeMap::new();
        core::new_rs_annotations(&d_ann, &mut ann, new_revision, false, &self.dep);
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(rs_name.clone()),
                namespace: Some(self.ns.clone()),
                labels: rs_template.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(ann),
                owner_references: Some(vec![rscore::controller_ref(
                    "Deployment",
                    &self.name,
                    self.d.metadata.uid.as_deref().unwrap_or_default(),
                )]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: min_ready,
                selector,
                template: Some(rs_template),
            }),
            status: None,
        };
        let created = match self.rs_api().create(&PostParams::default(), &rs).await {
            Ok(r) => r,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Same name: ours with this template (a stale cache) or a hash collision.
                let existing = self.rs_api().get(&rs_name).await?;
                let ours = controller_of(existing.metadata.owner_references.as_ref())
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| core::equal_ignore_hash(t, &self.template()));
                if ours && same {
                    return Ok((Some(existing), old));
                }
                let mut status = self.d.status.clone().unwrap_or_default();
                status.collision_count = Some(collision.unwrap_or(0) + 1);
                self.write_status(status).await?;
                return Err(ControllerError::Invalid(format!(
                    "{}: hash collision on replica set {rs_name}",
                    self.key
                )));
            }
            Err(e) => {
                let msg = format!(
                    "Failed to create new replica set \"{rs_name}\": {}",
                    super::replicaset::api_message(&e)
                );
                self.event(EventType::Warning, "FailedCreate", &msg).await;
                if core::progress_deadline(&self.d).is_some() {
                    let mut status = self.d.status.clone().unwrap_or_default();
                    core::set_condition(
                        &mut status,
                        core::condition(
                            "Progressing",
                            "False",
                            "ReplicaSetCreateError",
                            &msg,
                            Timestamp::now(),
                        ),
                    );
                    self.write_status(status).await?;
                }
                return Err(e.into());
            }
        };
        info!(deployment = %self.key, replicaset = %rs_name, replicas, "created replica set");
        if replicas > 0 {
            self.event(
                EventType::Normal,
                "ScalingReplicaSet",
                &format!("Scaled up replica set {rs_name} from 0 to {replicas}"),
            )
            .await;
        }
        self.set_revision(&new_revision.to_string()).await?;
        if core::progress_deadline(&self.d).is_some() {
            let mut status = self.d.status.clone().unwrap_or_default();
            let msg = format!("Created new replica set \"{rs_name}\"");
            core::set_condition(
                &mut status,
                core::condition(
                    "Progressing",
                    "True",
                    reason::NEW_RS,
                    &msg,
                    Timestamp::now(),
                ),
            );
            self.write_status(status).await?;
        }
        self.sets.push(created.clone());
        Ok((Some(created), old))
    }

    async fn replace_rs(&mut self, rs: &ReplicaSet) -> Result<ReplicaSet, ControllerError> {
        let name = rs.metadata.name.clone().unwrap_or_default();
        let updated = self
            .rs_api()
            .replace(&name, &PostParams::default(), rs)
            .await?;
        for r in self.sets.iter_mut() {
            if r.metadata.name.as_deref() == Some(name.as_str()) {
                *r = updated.clone();
            }
        }
        Ok(updated)
    }

    /// Resizes a ReplicaSet and refreshes its replica annotations (upstream's
    /// `scaleReplicaSetAndRecordEvent`).
    async fn scale(&mut self, rs: &ReplicaSet, to: i32) -> Result<ReplicaSet, ControllerError> {
        let from = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let mut rs = rs.clone();
        let mut ann = rs.metadata.annotations.clone().unwrap_or_default();
        let ann_changed = core::replica_annotations(&mut ann, &self.dep);
        if from == to && !ann_changed {
            return Ok(rs);
        }
        rs.metadata.annotations = Some(ann);
        if let Some(spec) = rs.spec.as_mut() {
            spec.replicas = Some(to);
        }
        let updated = self.replace_rs(&rs).await?;
        if from != to {
            let name = updated.metadata.name.clone().unwrap_or_default();
            let dir = if to > from { "up" } else { "down" };
            info!(deployment = %self.key, replicaset = %name, from, to, "scaled replica set");
            self.event(
                EventType::Normal,
                "ScalingReplicaSet",
                &format!("Scaled {dir} replica set {name} from {from} to {to}"),
            )
            .await;
        }
        Ok(updated)
    }

    async fn apply_resize(&mut self, resize: core::Resize) -> Result<bool, ControllerError> {
        let mut any = false;
        for (name, to) in resize {
            let rs = self
                .sets
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(name.as_str()))
                .cloned();
            if let Some(rs) = rs {
                self.scale(&rs, to).await?;
                any = true;
            }
        }
        Ok(any)
    }

    /// Deletes old ReplicaSets beyond revisionHistoryLimit (upstream's `cleanupDeployment`).
    async fn clean_up(&mut self, old: &[ReplicaSet]) -> Result<(), ControllerError> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let cleanable: Vec<(Rs, bool)> = old
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .map(|r| {
                let observed = r.status.as_ref().and_then(|s| s.observed_generation);
                (view(r), r.metadata.generation <= observed)
            })
            .collect();
        for name in core::to_clean_up(limit, &cleanable) {
            info!(deployment = %self.key, replicaset = %name, "deleting old replica set");
            match self
                .rs_api()
                .delete(&name, &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            self.sets
                .retain(|r| r.metadata.name.as_deref() != Some(name.as_str()));
        }
        Ok(())
    }

    /// The current new and old ReplicaSets from the working set (after writes).
    fn current(&self) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
        self.new_and_old()
    }

    /// Paused or resized: scale proportionally, no rollout step (upstream's `sync`).
    async fn sync(&mut self, paused: bool) -> Result<Action, ControllerError> {
        let (new, old) = self.sync_revision(false).await?;
        let new_view = new.as_ref().map(view);
        let saturated = new.as_ref().is_some_and(|rs| {
            let v = view(rs);
            v.desired_replicas == Some(self.dep.replicas)
                && v.available == self.dep.replicas
                && v.replicas == self.dep.replicas
        });
        let status_replicas = self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let resize = core::proportional(
            &self.dep,
            new_view.as_ref(),
            &views(&old),
            status_replicas,
            saturated,
        );
        self.apply_resize(resize).await?;
        let (new, old) = self.current();
        if paused {
            self.clean_up(&old).await?;
        }
        let (new, old) = if paused { self.current() } else { (new, old) };
        let all = self.all(new.as_ref(), &old);
        let status = core::calculate_status(
            &self.d,
            &self.dep,
            &all,
            new.as_ref().map(view).as_ref(),
            Timestamp::now(),
        );
        self.write_status(status).await?;
        Ok(Action::await_change())
    }

    /// One step of a rolling update (upstream's `rolloutRolling`).
    async fn rollout_rolling(&mut self) -> Result<Action, ControllerError> {
        let (new, old) = self.sync_revision(true).await?;
        let Some(new) = new else {
            return Ok(Action::await_change());
        };
        let new_view = view(&new);
        let all = self.all(Some(&new), &old);
        if let Some(to) = core::reconcile_new(&self.dep, &all, &new_view) {
            self.scale(&new, to).await?;
            return self.sync_rollout_status().await;
        }
        let active_old: Vec<Rs> = views(&old).into_iter().filter(|r| r.replicas > 0).collect();
        let resize = core::reconcile_old(&self.dep, &active_old, &new_view);
        if self.apply_resize(resize).await? {
            return self.sync_rollout_status().await;
        }
        let current = self.d.status.clone().unwrap_or_default();
        if core::complete(&self.d, &self.dep, &current) {
            self.clean_up(&old).await?;
        }
        self.sync_rollout_status().await
    }

    /// Recreate: old ReplicaSets to 0, wait for their pods to be gone, then the new one to
    /// full size (upstream's `rolloutRecreate`).
    async fn rollout_recreate(&mut self) -> Result<Action, ControllerError> {
        let (new, old) = self.sync_revision(false).await?;
        let resize: core::Resize = views(&old)
            .into_iter()
            .filter(|r| r.replicas > 0)
            .map(|r| (r.name, 0))
            .collect();
        if self.apply_resize(resize).await? {
            return self.sync_rollout_status().await;
        }
        if self.old_pods_running(new.as_ref(), &old) {
            return self.sync_rollout_status().await;
        }
        let new = match new {
            Some(n) => n,
            None => match self.sync_revision(true).await?.0 {
                Some(n) => n,
                None => return Ok(Action::await_change()),
            },
        };
        if view(&new).replicas != self.dep.replicas {
            self.scale(&new, self.dep.replicas).await?;
        }
        let current = self.d.status.clone().unwrap_or_default();
        if core::complete(&self.d, &self.dep, &current) {
            let (_, old) = self.current();
            self.clean_up(&old).await?;
        }
        self.sync_rollout_status().await
    }

    /// Whether pods of the old ReplicaSets still exist (upstream's `oldPodsRunning`).
    fn old_pods_running(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
        if old
            .iter()
            .any(|r| r.status.as_ref().is_some_and(|s| s.replicas > 0))
        {
            return true;
        }
        let new_uid = new.and_then(|r| r.metadata.uid.clone());
        let old_uids: Vec<&str> = old
            .iter()
            .filter_map(|r| r.metadata.uid.as_deref())
            .collect();
        self.st.pods.state().iter().any(|p| {
            p.metadata.namespace.as_deref() == Some(self.ns.as_str())
                && controller_of(p.metadata.owner_references.as_ref()).is_some_and(|r| {
                    old_uids.contains(&r.uid.as_str()) && Some(&r.uid) != new_uid.as_ref()
                })
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        })
    }

    /// Status with Progressing/Available/ReplicaFailure (upstream's `syncRolloutStatus`),
    /// and when to look again for the progress deadline.
    async fn sync_rollout_status(&mut self) -> Result<Action, ControllerError> {
        let (new, old) = self.current();
        let all = self.all(new.as_ref(), &old);
        let now = Timestamp::now();
        let mut status = core::rollout_status(
            &self.d,
            &self.dep,
            &all,
            new.as_ref().map(view).as_ref(),
            now,
        );
        let failure = new.iter().chain(old.iter()).find_map(|rs| {
            rs.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "ReplicaFailure")
                .cloned()
        });
        match failure {
            Some(c) => core::set_condition(
                &mut status,
                DeploymentCondition {
                    type_: "ReplicaFailure".into(),
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                    last_update_time: c.last_transition_time.clone(),
                    last_transition_time: c.last_transition_time,
                },
            ),
            None => core::remove_condition(&mut status, "ReplicaFailure"),
        }
        let requeue = core::requeue_for_deadline(&self.d, &self.dep, &status, now);
        self.write_status(status).await?;
        Ok(requeue.map_or_else(Action::await_change, Action::requeue))
    }
}

//! The Deployment controller's decisions as pure functions, following upstream's
//! `pkg/controller/deployment` (and `deployment/util`): the pod-template-hash, maxSurge /
//! maxUnavailable fenceposts, how far to scale the new and old ReplicaSets in a rolling
//! update, proportional scaling when the Deployment is resized mid-rollout, revision
//! annotations, and the status with its Available and Progressing conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The label (on RS, selector and pods) naming the template a ReplicaSet runs.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision of a Deployment / ReplicaSet.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had (after rollbacks), comma separated.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// `spec.replicas` of the Deployment when it last sized this ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` of the Deployment when it last sized this ReplicaSet.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Upstream's limit on the length of the revision-history annotation.
pub const REVISION_HISTORY_LIMIT_CHARS: usize = 2000;

/// Progressing reasons (upstream's `deploymentutil` constants).
pub mod reason {
    /// A new ReplicaSet was created.
    pub const NEW_RS: &str = "NewReplicaSetCreated";
    /// An existing ReplicaSet matches the template.
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    /// The rollout made progress.
    pub const RS_UPDATED: &str = "ReplicaSetUpdated";
    /// The rollout completed.
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// No progress within progressDeadlineSeconds.
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    /// Paused.
    pub const PAUSED: &str = "DeploymentPaused";
    /// Resumed.
    pub const RESUMED: &str = "DeploymentResumed";
    /// Enough pods available.
    pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// Too few pods available.
    pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

/// Annotations a Deployment never copies to its ReplicaSets.
const SKIP_COPY: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Upstream's `rand.SafeEncodeString` alphabet (no vowels, no confusable characters).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv32a(data: &[u8], mut h: u32) -> u32 {
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(16_777_619);
    }
    h
}

/// The pod-template-hash as upstream's `controller.ComputeHash` shapes it: FNV-32a over the
/// template (here its canonical JSON, where upstream hashes a Go struct dump, so values
/// differ from a kube-controller-manager's) then the collision count, the decimal sum
/// encoded with `SafeEncodeString` (e.g. `5d4f8c7b9`).
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut h = fnv32a(&bytes, 2_166_136_261);
    if let Some(c) = collision_count {
        h = fnv32a(c.to_string().as_bytes(), h);
    }
    h.to_string()
        .bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

/// Templates equal but for the pod-template-hash label (upstream's `EqualIgnoreHash`).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(m) = t.metadata.as_mut() {
            if let Some(l) = m.labels.as_mut() {
                l.remove(HASH_LABEL);
                if l.is_empty() {
                    m.labels = None;
                }
            }
        }
        serde_json::to_value(t).unwrap_or_default()
    };
    strip(a) == strip(b)
}

/// `value` (a number or a percentage of `total`) rounded up or down
/// (upstream's `intstr.GetScaledValueFromIntOrPercent`).
pub fn scaled(value: &IntOrString, total: i32, round_up: bool) -> i32 {
    match value {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let prod = pct * i64::from(total);
            let v = if round_up {
                (prod + 99).div_euclid(100)
            } else {
                prod.div_euclid(100)
            };
            i32::try_from(v).unwrap_or(i32::MAX)
        }
    }
}

/// The Deployment as the decisions see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dep {
    /// `spec.replicas`.
    pub replicas: i32,
    /// RollingUpdate (else Recreate).
    pub rolling: bool,
    /// maxSurge resolved (rounded up).
    pub max_surge: i32,
    /// maxUnavailable resolved (rounded down; 1 when both are 0).
    pub max_unavailable: i32,
}

impl Dep {
    /// From a Deployment object (upstream's `ResolveFenceposts`).
    pub fn of(d: &Deployment) -> Dep {
        let spec = d.spec.as_ref();
        let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
        let strategy = spec.map(|s| &s.strategy);
        let rolling = strategy
            .and_then(|s| s.as_ref())
            .and_then(|s| s.type_.as_deref())
            .is_none_or(|t| t == "RollingUpdate");
        if !rolling {
            return Dep {
                replicas,
                rolling,
                max_surge: 0,
                max_unavailable: 0,
            };
        }
        let ru = strategy
            .and_then(|s| s.as_ref())
            .and_then(|s| s.rolling_update.as_ref());
        let pct25 = IntOrString::String("25%".into());
        let surge = ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&pct25);
        let unavail = ru
            .and_then(|r| r.max_unavailable.as_ref())
            .unwrap_or(&pct25);
        let max_surge = scaled(surge, replicas, true);
        let mut max_unavailable = scaled(unavail, replicas, false);
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        Dep {
            replicas,
            rolling,
            max_surge,
            max_unavailable: max_unavailable.min(replicas),
        }
    }
}

/// A ReplicaSet as the decisions see it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rs {
    /// Name.
    pub name: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.replicas` (active pods).
    pub actual: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// Creation time.
    pub created: Option<Timestamp>,
    /// The revision annotation (0 when absent).
    pub revision: i64,
    /// The max-replicas annotation.
    pub max_replicas: Option<i32>,
    /// The desired-replicas annotation.
    pub desired_replicas: Option<i32>,
}

/// A resize decision: ReplicaSet name → new `spec.replicas`.
pub type Resize = Vec<(String, i32)>;

fn by_created_oldest(rss: &mut [Rs]) {
    rss.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
}

/// Size of the new ReplicaSet for a scale-up step (upstream's `NewRSNewReplicas`).
pub fn new_rs_replicas(d: &Dep, all: &[Rs], new: &Rs) -> i32 {
    if !d.rolling {
        return d.replicas;
    }
    if new.replicas >= d.replicas {
        return d.replicas;
    }
    let max_total = d.replicas + d.max_surge;
    let current: i32 = all.iter().map(|r| r.replicas).sum();
    if current >= max_total {
        return new.replicas;
    }
    let up = (max_total - current).min(d.replicas - new.replicas);
    new.replicas + up
}

/// The new ReplicaSet's step of a rolling update (upstream's `reconcileNewReplicaSet`):
/// its new size if it changes.
pub fn reconcile_new(d: &Dep, all: &[Rs], new: &Rs) -> Option<i32> {
    if new.replicas == d.replicas {
        return None;
    }
    if new.replicas > d.replicas {
        return Some(d.replicas);
    }
    let n = new_rs_replicas(d, all, new);
    (n != new.replicas).then_some(n)
}

/// The old ReplicaSets' step of a rolling update (upstream's `reconcileOldReplicaSets`):
/// first scale down unhealthy old replicas, then as many available ones as maxUnavailable
/// allows, oldest ReplicaSets first.
pub fn reconcile_old(d: &Dep, old: &[Rs], new: &Rs) -> Resize {
    let old_count: i32 = old.iter().map(|r| r.replicas).sum();
    if old_count == 0 {
        return Vec::new();
    }
    let all_count = old_count + new.replicas;
    let min_available = d.replicas - d.max_unavailable;
    let new_unavailable = new.replicas - new.available;
    let max_scaled_down = all_count - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    let mut old: Vec<Rs> = old.to_vec();
    by_created_oldest(&mut old);
    let mut out: Resize = Vec::new();
    // Unhealthy replicas first: they cost no availability.
    let mut cleaned = 0;
    for rs in old.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        if rs.replicas == 0 {
            continue;
        }
        let unhealthy = rs.replicas - rs.available;
        if unhealthy <= 0 {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(unhealthy);
        rs.replicas -= down;
        cleaned += down;
        out.push((rs.name.clone(), rs.replicas));
    }
    // Then available ones, keeping minAvailable.
    let available: i32 = old.iter().map(|r| r.available).sum::<i32>() + new.available;
    if available > min_available {
        let total = available - min_available;
        let mut done = 0;
        for rs in old.iter_mut() {
            if done >= total {
                break;
            }
            if rs.replicas == 0 {
                continue;
            }
            let down = rs.replicas.min(total - done);
            rs.replicas -= down;
            done += down;
            out.retain(|(n, _)| n != &rs.name);
            out.push((rs.name.clone(), rs.replicas));
        }
    }
    out
}

/// Whether the Deployment was resized since its active ReplicaSets were last sized
/// (upstream's `isScalingEvent`).
pub fn is_scaling_event(d: &Dep, all: &[Rs]) -> bool {
    all.iter()
        .filter(|r| r.replicas > 0)
        .any(|r| r.desired_replicas.is_some_and(|n| n != d.replicas))
}

fn fraction(rs: &Rs, d: &Dep, status_replicas: i32) -> i32 {
    if d.replicas == 0 {
        return -rs.replicas;
    }
    let deployment_replicas = d.replicas + d.max_surge;
    let annotated = rs.max_replicas.unwrap_or(status_replicas);
    if annotated == 0 {
        return 0;
    }
    let size = f64::from(rs.replicas) * f64::from(deployment_replicas) / f64::from(annotated);
    // Values are bounded by i32 sizes; round half away from zero as Go's math.Round.
    #[allow(clippy::cast_possible_truncation)]
    let rounded = size.round() as i32;
    rounded - rs.replicas
}

/// Sizes after a resize (upstream's `scale`): the only active (or latest) ReplicaSet takes
/// the new size; a saturated new ReplicaSet scales old ones to 0; else, in a rolling update,
/// the difference is spread over the active ReplicaSets in proportion to their size.
/// `new` is the new ReplicaSet if any, `old` the others; `status_replicas` is the
/// Deployment's `status.replicas`; `new_saturated` as upstream's `IsSaturated`.
pub fn proportional(
    d: &Dep,
    new: Option<&Rs>,
    old: &[Rs],
    status_replicas: i32,
    new_saturated: bool,
) -> Resize {
    let mut all: Vec<Rs> = old.to_vec();
    all.extend(new.cloned());
    let active: Vec<Rs> = all.iter().filter(|r| r.replicas > 0).cloned().collect();
    let only = match active.len() {
        0 => new.cloned().or_else(|| {
            let mut o = old.to_vec();
            o.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name)));
            o.into_iter().next()
        }),
        1 => active.first().cloned(),
        _ => None,
    };
    if let Some(rs) = only {
        if rs.replicas == d.replicas {
            return Vec::new();
        }
        return vec![(rs.name, d.replicas)];
    }
    if new_saturated {
        return old
            .iter()
            .filter(|r| r.replicas > 0)
            .map(|r| (r.name.clone(), 0))
            .collect();
    }
    if !d.rolling {
        return Vec::new();
    }
    let mut active = active;
    let current: i32 = active.iter().map(|r| r.replicas).sum();
    let allowed = if d.replicas > 0 {
        d.replicas + d.max_surge
    } else {
        0
    };
    let to_add = allowed - current;
    // Larger first; ties: newer first when adding, older first when removing.
    active.sort_by(|a, b| {
        b.replicas.cmp(&a.replicas).then_with(|| {
            if to_add > 0 {
                b.created.cmp(&a.created)
            } else {
                a.created.cmp(&b.created)
            }
        })
    });
    let mut sizes: Vec<(String, i32)> = Vec::new();
    let mut added = 0;
    for rs in &active {
        let mut size = rs.replicas;
        if to_add != 0 && to_add != added {
            let f = fraction(rs, d, status_replicas);
            let allowed = to_add - added;
            let p = if to_add > 0 {
                f.min(allowed)
            } else {
                f.max(allowed)
            };
            size += p;
            added += p;
        }
        sizes.push((rs.name.clone(), size));
    }
    if to_add != 0 {
        if let Some(first) = sizes.first_mut() {
            first.1 = (first.1 + to_add - added).max(0);
        }
    }
    sizes
        .into_iter()
        .filter(|(n, s)| active.iter().any(|r| &r.name == n && r.replicas != *s))
        .collect()
}

/// Old ReplicaSets to delete for revisionHistoryLimit (upstream's `cleanupDeployment`):
/// the lowest revisions beyond the limit, only those with no replicas and an observed spec.
/// `old` holds (rs, deletable-now).
pub fn to_clean_up(limit: i32, old: &[(Rs, bool)]) -> Vec<String> {
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    if old.len() <= limit {
        return Vec::new();
    }
    let mut sorted: Vec<&(Rs, bool)> = old.iter().collect();
    sorted.sort_by(|a, b| {
        a.0.revision
            .cmp(&b.0.revision)
            .then_with(|| a.0.created.cmp(&b.0.created))
    });
    sorted
        .into_iter()
        .take(old.len() - limit)
        .filter(|(rs, ok)| *ok && rs.actual == 0 && rs.replicas == 0)
        .map(|(rs, _)| rs.name.clone())
        .collect()
}

/// Annotation changes for the new ReplicaSet (upstream's `SetNewReplicaSetAnnotations`):
/// the Deployment's own annotations copied, the revision raised to `new_revision` (keeping
/// the one it had in the revision history: a rollback), and on creation the replica
/// annotations. Returns whether anything changed.
pub fn new_rs_annotations(
    deployment_annotations: &BTreeMap<String, String>,
    rs_annotations: &mut BTreeMap<String, String>,
    new_revision: i64,
    exists: bool,
    d: &Dep,
) -> bool {
    let mut changed = false;
    for (k, v) in deployment_annotations {
        if SKIP_COPY.contains(&k.as_str()) || rs_annotations.get(k) == Some(v) {
            continue;
        }
        rs_annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = rs_annotations.get(REVISION).cloned();
    let old_rev: i64 = old.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
    if old_rev < new_revision {
        rs_annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = rs_annotations
                .get(REVISION_HISTORY)
                .cloned()
                .unwrap_or_default();
            if history.is_empty() {
                rs_annotations.insert(REVISION_HISTORY.into(), old);
            } else {
                let mut revs: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > REVISION_HISTORY_LIMIT_CHARS && start < revs.len() {
                    total -= revs[start].len() + 1;
                    start += 1;
                }
                if total <= REVISION_HISTORY_LIMIT_CHARS {
                    revs = revs.split_off(start);
                    revs.push(&old);
                    let joined = revs.join(",");
                    rs_annotations.insert(REVISION_HISTORY.into(), joined);
                }
            }
        }
    }
    if !exists && replica_annotations(rs_annotations, d) {
        changed = true;
    }
    changed
}

/// Sets desired-replicas and max-replicas; whether they changed (upstream's
/// `SetReplicasAnnotations`).
pub fn replica_annotations(annotations: &mut BTreeMap<String, String>, d: &Dep) -> bool {
    let desired = d.replicas.to_string();
    let max = (d.replicas + d.max_surge).to_string();
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        if annotations.get(k) != Some(&v) {
            annotations.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

/// A condition with both times `now` (upstream's `NewDeploymentCondition`).
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Upstream's `SetDeploymentCondition`: nothing changes when status and reason are the
/// same; the transition time is kept when only the reason changes.
pub fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if let Some(cur) = conds.iter().find(|c| c.type_ == cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|c| c.type_ != cond.type_);
    conds.push(cond);
}

/// Drops the condition of `type_`.
pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|c| c.type_ != type_);
        if c.is_empty() {
            status.conditions = None;
        }
    }
}

/// The condition of `type_`.
pub fn get_condition<'a>(
    status: &'a DeploymentStatus,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Counters and the Available condition (upstream's `calculateStatus`).
pub fn calculate_status(
    d: &Deployment,
    dep: &Dep,
    all: &[Rs],
    new: Option<&Rs>,
    now: Timestamp,
) -> DeploymentStatus {
    let old = d.status.clone().unwrap_or_default();
    let available: i32 = all.iter().map(|r| r.available).sum();
    let total: i32 = all.iter().map(|r| r.replicas).sum();
    let mut st = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|r| r.actual).sum()),
        updated_replicas: Some(new.map_or(0, |r| r.actual)),
        ready_replicas: Some(all.iter().map(|r| r.ready).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    if available >= dep.replicas - dep.max_unavailable {
        set_condition(
            &mut st,
            condition(
                "Available",
                "True",
                reason::MIN_AVAILABLE,
                "Deployment has minimum availability.",
                now,
            ),
        );
    } else {
        set_condition(
            &mut st,
            condition(
                "Available",
                "False",
                reason::MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.",
                now,
            ),
        );
    }
    st
}

fn n(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// All replicas updated and available for the current generation (upstream's
/// `DeploymentComplete`).
pub fn complete(d: &Deployment, dep: &Dep, st: &DeploymentStatus) -> bool {
    n(st.updated_replicas) == dep.replicas
        && n(st.replicas) == dep.replicas
        && n(st.available_replicas) == dep.replicas
        && st.observed_generation >= d.metadata.generation
}

/// The rollout moved since the last status (upstream's `DeploymentProgressing`).
pub fn progressing(d: &Deployment, st: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(st.replicas) - n(st.updated_replicas);
    n(st.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(st.ready_replicas) > n(old.ready_replicas)
        || n(st.available_replicas) > n(old.available_replicas)
}

/// `progressDeadlineSeconds`, unless unset or "infinite" (MaxInt32).
pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

/// No progress for progressDeadlineSeconds since the Progressing condition was last
/// updated (upstream's `DeploymentTimedOut`).
pub fn timed_out(d: &Deployment, st: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = get_condition(st, "Progressing") else {
        return false;
    };
    match c.reason.as_deref() {
        Some(reason::NEW_RS_AVAILABLE) => false,
        Some(reason::TIMED_OUT) => true,
        _ => c
            .last_update_time
            .as_ref()
            .is_some_and(|t| t.0 + SignedDuration::from_secs(i64::from(deadline)) < now),
    }
}

/// The status a rollout step leaves (upstream's `syncRolloutStatus`, minus the
/// ReplicaFailure copy which the caller adds): Progressing is NewReplicaSetAvailable when
/// complete, ReplicaSetUpdated while progressing, ProgressDeadlineExceeded when stuck.
pub fn rollout_status(
    d: &Deployment,
    dep: &Dep,
    all: &[Rs],
    new: Option<&Rs>,
    now: Timestamp,
) -> DeploymentStatus {
    let mut st = calculate_status(d, dep, all, new, now);
    let deadline = progress_deadline(d).is_some();
    if !deadline {
        remove_condition(&mut st, "Progressing");
    }
    let old = d.status.clone().unwrap_or_default();
    let current = get_condition(&old, "Progressing").cloned();
    let already_complete = n(st.replicas) == n(st.updated_replicas)
        && current
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some(reason::NEW_RS_AVAILABLE));
    if deadline && !already_complete {
        if complete(d, dep, &st) {
            let msg = match new {
                Some(rs) => format!("ReplicaSet \"{}\" has successfully progressed.", rs.name),
                None => "Deployment has successfully progressed.".into(),
            };
            set_condition(
                &mut st,
                condition("Progressing", "True", reason::NEW_RS_AVAILABLE, &msg, now),
            );
        } else if progressing(d, &st) {
            let msg = match new {
                Some(rs) => format!("ReplicaSet \"{}\" is progressing.", rs.name),
                None => "Deployment is progressing.".into(),
            };
            let mut cond = condition("Progressing", "True", reason::RS_UPDATED, &msg, now);
            if let Some(cur) = &current {
                if cur.status == "True" {
                    cond.last_transition_time = cur.last_transition_time.clone();
                }
                remove_condition(&mut st, "Progressing");
            }
            set_condition(&mut st, cond);
        } else if timed_out(d, &st, now) {
            let msg = match new {
                Some(rs) => format!("ReplicaSet \"{}\" has timed out progressing.", rs.name),
                None => format!(
                    "Deployment \"{}\" has timed out progressing.",
                    d.metadata.name.as_deref().unwrap_or_default()
                ),
            };
            set_condition(
                &mut st,
                condition("Progressing", "False", reason::TIMED_OUT, &msg, now),
            );
        }
    }
    st
}

/// When to look again for the progress deadline (upstream's `requeueStuckDeployment`).
pub fn requeue_for_deadline(
    d: &Deployment,
    dep: &Dep,
    st: &DeploymentStatus,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let deadline = progress_deadline(d)?;
    let cond = get_condition(st, "Progressing")?;
    if complete(d, dep, st) || cond.reason.as_deref() == Some(reason::TIMED_OUT) {
        return None;
    }
    let from = cond.last_update_time.as_ref()?.0;
    let after = (from + SignedDuration::from_secs(i64::from(deadline))).duration_since(now);
    if after < SignedDuration::from_secs(1) {
        return Some(std::time::Duration::from_millis(100));
    }
    Some((after + SignedDuration::from_secs(1)).unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rs(name: &str, replicas: i32, available: i32, created_min: i64) -> Rs {
        Rs {
            name: name.into(),
            replicas,
            actual: replicas,
            ready: available,
            available,
            created: Some(Timestamp::from_second(created_min * 60).unwrap()),
            revision: created_min,
            max_replicas: None,
            desired_replicas: None,
        }
    }

    fn dep(replicas: i32, surge: i32, unavail: i32) -> Dep {
        Dep {
            replicas,
            rolling: true,
            max_surge: surge,
            max_unavailable: unavail,
        }
    }

    #[test]
    fn hashes_look_like_upstream_and_change_with_collisions() {
        let t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "nginx"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.14.2"}]},
        }))
        .unwrap();
        let h = template_hash(&t, None);
        assert!((1..=10).contains(&h.len()), "{h}");
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{h}");
        assert_eq!(h, template_hash(&t.clone(), None), "stable");
        assert_ne!(h, template_hash(&t, Some(1)));
        let mut other = t.clone();
        other.spec.as_mut().unwrap().containers[0].image = Some("nginx:1.16.1".into());
        assert_ne!(h, template_hash(&other, None));
        // FNV-32a reference values.
        assert_eq!(fnv32a(b"", 2_166_136_261), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a", 2_166_136_261), 0xe40c_292c);
        let mut labelled = t.clone();
        labelled
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), h.clone());
        assert!(equal_ignore_hash(&t, &labelled));
        assert!(!equal_ignore_hash(&t, &other));
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        let d = |replicas: i32, surge: serde_json::Value, unavail: serde_json::Value| {
            let d: Deployment = serde_json::from_value(json!({
                "metadata": {"name": "d"},
                "spec": {"replicas": replicas, "selector": {}, "template": {},
                         "strategy": {"type": "RollingUpdate",
                                      "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavail}}},
            }))
            .unwrap();
            let f = Dep::of(&d);
            (f.max_surge, f.max_unavailable)
        };
        for (replicas, surge, unavail, want) in [
            (10, json!("25%"), json!("25%"), (3, 2)),
            (3, json!("25%"), json!("25%"), (1, 0)),
            (4, json!("50%"), json!("50%"), (2, 2)),
            (1, json!("0%"), json!("0%"), (0, 1)),
            (5, json!(2), json!(0), (2, 0)),
            (5, json!(0), json!(0), (0, 1)),
            (10, json!("10%"), json!(3), (1, 3)),
        ] {
            assert_eq!(
                d(replicas, surge.clone(), unavail.clone()),
                want,
                "{replicas} {surge} {unavail}"
            );
        }
        let recreate: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {"replicas": 3, "selector": {}, "template": {}, "strategy": {"type": "Recreate"}},
        }))
        .unwrap();
        assert_eq!(
            Dep::of(&recreate),
            Dep {
                replicas: 3,
                rolling: false,
                max_surge: 0,
                max_unavailable: 0
            }
        );
    }

    #[test]
    fn new_replica_set_steps() {
        // (deployment, all, new) → new size
        let cases = [
            // Fresh rollout of 10 with surge 3: new goes to 3 while old holds 10.
            (
                dep(10, 3, 2),
                vec![rs("old", 10, 10, 1)],
                rs("new", 0, 0, 2),
                Some(3),
            ),
            // At the surge limit: wait.
            (
                dep(10, 3, 2),
                vec![rs("old", 10, 10, 1)],
                rs("new", 3, 0, 2),
                None,
            ),
            // Old scaled down to 8: new may go to 5.
            (
                dep(10, 3, 2),
                vec![rs("old", 8, 8, 1)],
                rs("new", 3, 3, 2),
                Some(5),
            ),
            // Never above the deployment's size.
            (
                dep(10, 3, 2),
                vec![rs("old", 0, 0, 1)],
                rs("new", 9, 9, 2),
                Some(10),
            ),
            // Scaled down deployment: new follows at once.
            (dep(2, 1, 0), vec![], rs("new", 5, 5, 2), Some(2)),
            (dep(3, 1, 0), vec![], rs("new", 3, 3, 2), None),
        ];
        for (d, mut all, new, want) in cases {
            all.push(new.clone());
            assert_eq!(reconcile_new(&d, &all, &new), want, "{d:?} {all:?}");
        }
        let recreate = Dep {
            rolling: false,
            ..dep(4, 0, 0)
        };
        assert_eq!(new_rs_replicas(&recreate, &[], &rs("n", 0, 0, 1)), 4);
    }

    #[test]
    fn old_replica_sets_step_down_within_max_unavailable() {
        let cases: Vec<(Dep, Vec<Rs>, Rs, Resize)> = vec![
            // 10 old available, new 3 not yet available, maxUnavailable 2: 13-8-3 = 2 down.
            (
                dep(10, 3, 2),
                vec![rs("old", 10, 10, 1)],
                rs("new", 3, 0, 2),
                vec![("old".into(), 8)],
            ),
            // New all available: old goes down by the available surplus.
            (
                dep(10, 3, 2),
                vec![rs("old", 8, 8, 1)],
                rs("new", 5, 5, 2),
                vec![("old".into(), 3)],
            ),
            // Nothing may go.
            (
                dep(3, 1, 0),
                vec![rs("old", 3, 3, 1)],
                rs("new", 1, 0, 2),
                vec![],
            ),
            // Unhealthy old replicas go first, oldest RS first.
            (
                dep(4, 1, 0),
                vec![rs("older", 2, 0, 1), rs("old", 2, 2, 2)],
                rs("new", 1, 1, 3),
                vec![("older".into(), 1)],
            ),
            // Two old sets: the oldest is drained first.
            (
                dep(4, 0, 2),
                vec![rs("b", 2, 2, 2), rs("a", 2, 2, 1)],
                rs("new", 0, 0, 3),
                vec![("a".into(), 0)],
            ),
            (
                dep(4, 0, 2),
                vec![rs("a", 0, 0, 1)],
                rs("new", 4, 4, 3),
                vec![],
            ),
        ];
        for (d, old, new, want) in cases {
            assert_eq!(reconcile_old(&d, &old, &new), want, "{d:?} {old:?} {new:?}");
        }
    }

    #[test]
    fn resizes_are_proportional() {
        let annotated = |mut r: Rs, max: i32, desired: i32| {
            r.max_replicas = Some(max);
            r.desired_replicas = Some(desired);
            r
        };
        // Only one active RS: it takes the size.
        assert_eq!(
            proportional(
                &dep(10, 3, 2),
                Some(&rs("new", 3, 3, 2)),
                &[rs("old", 0, 0, 1)],
                3,
                false
            ),
            vec![("new".to_string(), 10)]
        );
        // Mid-rollout 10 → 20 (surge 3 → 5): old 8 and new 5 of max 13 grow to 25 total.
        let d = dep(20, 5, 5);
        let old = annotated(rs("old", 8, 8, 1), 13, 10);
        let new = annotated(rs("new", 5, 0, 2), 13, 10);
        let out = proportional(&d, Some(&new), &[old], 13, false);
        let total: i32 = out.iter().map(|(_, s)| s).sum();
        assert_eq!(total, 25, "{out:?}");
        assert_eq!(out, vec![("old".to_string(), 15), ("new".to_string(), 10)]);
        // Scale to zero: everything goes.
        let out = proportional(
            &dep(0, 0, 0),
            Some(&annotated(rs("new", 5, 0, 2), 13, 10)),
            &[annotated(rs("old", 8, 8, 1), 13, 10)],
            13,
            false,
        );
        assert_eq!(out, vec![("old".to_string(), 0), ("new".to_string(), 0)]);
        // A saturated new RS: old ones to 0.
        assert_eq!(
            proportional(
                &dep(3, 1, 0),
                Some(&rs("new", 3, 3, 2)),
                &[rs("old", 1, 1, 1)],
                4,
                true
            ),
            vec![("old".to_string(), 0)]
        );
        assert!(is_scaling_event(
            &dep(20, 5, 5),
            &[annotated(rs("a", 3, 3, 1), 13, 10)]
        ));
        assert!(!is_scaling_event(
            &dep(10, 3, 2),
            &[annotated(rs("a", 3, 3, 1), 13, 10)]
        ));
        assert!(!is_scaling_event(
            &dep(20, 5, 5),
            &[annotated(rs("a", 0, 0, 1), 13, 10)]
        ));
    }

    #[test]
    fn history_cleanup_keeps_the_limit_and_live_sets() {
        let old = vec![
            (rs("r1", 0, 0, 1), true),
            (rs("r2", 1, 1, 2), true),
            (rs("r3", 0, 0, 3), true),
            (rs("r4", 0, 0, 4), false),
            (rs("r5", 0, 0, 5), true),
        ];
        assert_eq!(
            to_clean_up(1, &old),
            vec!["r1".to_string(), "r3".to_string()]
        );
        assert_eq!(to_clean_up(0, &old), vec!["r1", "r3", "r5"]);
        assert!(to_clean_up(10, &old).is_empty());
    }

    #[test]
    fn annotations_track_revisions_and_rollbacks() {
        let d = dep(3, 1, 0);
        let da: BTreeMap<String, String> = [
            (
                "kubernetes.io/change-cause".to_string(),
                "image 1.16".to_string(),
            ),
            (
                "kubectl.kubernetes.io/last-applied-configuration".into(),
                "{}".into(),
            ),
            (REVISION.into(), "7".into()),
        ]
        .into();
        let mut fresh = BTreeMap::new();
        assert!(new_rs_annotations(&da, &mut fresh, 1, false, &d));
        assert_eq!(fresh[REVISION], "1");
        assert_eq!(fresh[DESIRED_REPLICAS], "3");
        assert_eq!(fresh[MAX_REPLICAS], "4");
        assert_eq!(fresh["kubernetes.io/change-cause"], "image 1.16");
        assert!(!fresh.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert!(!fresh.contains_key(REVISION_HISTORY));
        // Nothing new: unchanged.
        assert!(!new_rs_annotations(&da, &mut fresh, 1, true, &d));
        // Rolled back to: revision 3, history keeps 1.
        assert!(new_rs_annotations(&da, &mut fresh, 3, true, &d));
        assert_eq!(fresh[REVISION], "3");
        assert_eq!(fresh[REVISION_HISTORY], "1");
        assert!(new_rs_annotations(&da, &mut fresh, 5, true, &d));
        assert_eq!(fresh[REVISION_HISTORY], "1,3");
    }

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": 3, "selector": {}, "template": {}, "progressDeadlineSeconds": 600},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn rollout_conditions_as_kubectl_reads_them() {
        let t0: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let d3 = dep(3, 1, 0);
        // Progressing: more updated replicas than before.
        let d = deployment(
            2,
            json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 0,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetCreated",
                            "lastUpdateTime": "2023-12-31T23:59:00Z", "lastTransitionTime": "2023-12-31T23:59:00Z"}]}),
        );
        let new = rs("web-abc", 1, 0, 2);
        let all = [rs("web-old", 3, 3, 1), new.clone()];
        let st = rollout_status(&d, &d3, &all, Some(&new), t0);
        assert_eq!(st.observed_generation, Some(2));
        assert_eq!(
            (
                st.replicas,
                st.updated_replicas,
                st.available_replicas,
                st.unavailable_replicas
            ),
            (Some(4), Some(1), Some(3), Some(1))
        );
        let p = get_condition(&st, "Progressing").unwrap();
        assert_eq!(p.reason.as_deref(), Some(reason::RS_UPDATED));
        assert_eq!(
            p.message.as_deref(),
            Some("ReplicaSet \"web-abc\" is progressing.")
        );
        assert_eq!(
            p.last_transition_time.as_ref().unwrap().0,
            "2023-12-31T23:59:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(p.last_update_time.as_ref().unwrap().0, t0);
        let a = get_condition(&st, "Available").unwrap();
        assert_eq!(
            (a.status.as_str(), a.reason.as_deref()),
            ("True", Some(reason::MIN_AVAILABLE))
        );

        // Complete.
        let new = rs("web-abc", 3, 3, 2);
        let st = rollout_status(
            &d,
            &d3,
            &[rs("web-old", 0, 0, 1), new.clone()],
            Some(&new),
            t0,
        );
        let p = get_condition(&st, "Progressing").unwrap();
        assert_eq!(p.reason.as_deref(), Some(reason::NEW_RS_AVAILABLE));
        assert_eq!(
            p.message.as_deref(),
            Some("ReplicaSet \"web-abc\" has successfully progressed.")
        );
        assert!(complete(&d, &d3, &st));

        // Stuck past the deadline.
        let stuck = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1,
            "availableReplicas": 0, "readyReplicas": 0,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                            "lastUpdateTime": "2023-12-31T23:40:00Z", "lastTransitionTime": "2023-12-31T23:40:00Z"}]}),
        );
        let new = rs("web-abc", 1, 0, 2);
        let st = rollout_status(&stuck, &d3, std::slice::from_ref(&new), Some(&new), t0);
        let p = get_condition(&st, "Progressing").unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_deref()),
            ("False", Some(reason::TIMED_OUT))
        );
        let a = get_condition(&st, "Available").unwrap();
        assert_eq!(
            (a.status.as_str(), a.reason.as_deref()),
            ("False", Some(reason::MIN_UNAVAILABLE))
        );
        // Not yet stuck: look again when the deadline passes.
        let recent: Timestamp = "2023-12-31T23:45:00Z".parse().unwrap();
        let st = rollout_status(&stuck, &d3, std::slice::from_ref(&new), Some(&new), recent);
        assert_eq!(
            get_condition(&st, "Progressing").unwrap().reason.as_deref(),
            Some(reason::RS_UPDATED)
        );
        assert_eq!(
            requeue_for_deadline(&stuck, &d3, &st, recent),
            Some(std::time::Duration::from_secs(5 * 60 + 1))
        );
    }
}

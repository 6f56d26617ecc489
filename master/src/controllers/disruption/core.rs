//! The disruption controller's and the eviction subresource's decisions as pure functions
//! (upstream's `pkg/controller/disruption` and `pkg/registry/core/pod/storage/eviction.go`):
//! which pods a PodDisruptionBudget covers, how many it expects and wants healthy, how many
//! are healthy, the status it reports, and whether an eviction may go ahead.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use crate::controllers::replicaset::core as rscore;

/// How long an eviction's entry in `status.disruptedPods` keeps its pod out of the healthy
/// count while the pod is not deleted yet (upstream's `DeletionTimeout`).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);
/// More unconfirmed evictions than this in `disruptedPods` refuse further ones
/// (upstream's `MaxDisruptedPodSize`).
pub const MAX_DISRUPTED_PODS: usize = 2000;
/// The condition type of the status.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";
/// The cause type of a refused eviction (`policyv1.DisruptionBudgetCause`).
pub const DISRUPTION_BUDGET_CAUSE: &str = "DisruptionBudget";
/// The message of a refused eviction, as kubectl drain prints it.
pub const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// Why a budget's expected count cannot be worked out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// A pod has no controller ownerReference, so no scale to take a percentage of.
    #[error("found no controller ref for pod {0:?}")]
    NoControllerRef(String),
    /// A pod's controller has no scale skiff knows.
    #[error("found no controllers for pod {0:?}")]
    NoController(String),
    /// minAvailable or maxUnavailable is not an integer or a percentage.
    #[error("invalid value for IntOrString: {0}")]
    BadValue(String),
}

/// Whether the budget covers `pod`: same namespace and the selector matches. In policy/v1 an
/// empty selector matches every pod of the namespace, a missing one none.
pub fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    if pdb.metadata.namespace != pod.metadata.namespace {
        return false;
    }
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    match rscore::selector(sel) {
        Some(s) => rscore::matches(&s, pod.metadata.labels.as_ref()),
        None => false,
    }
}

/// Whether the pod's Ready condition is True (upstream's `IsPodReady`, the budget's notion
/// of healthy).
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Pods an eviction deletes without asking any budget: ended, not started yet, or already
/// being deleted (upstream's `canIgnorePDB`).
pub fn ignores_budget(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed" | "Pending"))
        || pod.metadata.deletion_timestamp.is_some()
}

/// `value` of `total` (`intstr.GetScaledValueFromIntOrPercent`): an integer as it is, a
/// percentage of `total` rounded up or down.
pub fn scaled(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, BudgetError> {
    match value {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| BudgetError::BadValue(s.clone()))?;
            let num = pct * i64::from(total);
            let v = if round_up {
                (num + 99).div_euclid(100)
            } else {
                num.div_euclid(100)
            };
            i32::try_from(v).map_err(|_| BudgetError::BadValue(s.clone()))
        }
    }
}

/// The scale of a pod's controller, as the disruption controller's finders look it up: a
/// ReplicaSet owned by a Deployment counts as the Deployment.
pub trait Scales {
    /// The replicas of the controller `owner` in `namespace`, following a ReplicaSet to
    /// its Deployment; `None` when it is not found or not a kind with a scale.
    fn scale(&self, namespace: &str, owner: &OwnerReference) -> Option<(String, i32)>;
}

/// (expectedPods, desiredHealthy) of the budget over its `pods` (upstream's
/// `getExpectedPodCount`).
pub fn expected_and_desired(
    pdb: &PodDisruptionBudget,
    pods: &[&Pod],
    scales: &dyn Scales,
) -> Result<(i32, i32), BudgetError> {
    let spec = pdb.spec.clone().unwrap_or_default();
    if let Some(max) = &spec.max_unavailable {
        let expected = expected_scale(pods, scales)?;
        let max = scaled(max, expected, true)?;
        return Ok((expected, (expected - max).max(0)));
    }
    match &spec.min_available {
        Some(IntOrString::Int(min)) => Ok((pods.len() as i32, *min)),
        Some(pct @ IntOrString::String(_)) => {
            let expected = expected_scale(pods, scales)?;
            Ok((expected, scaled(pct, expected, true)?))
        }
        None => Ok((pods.len() as i32, 0)),
    }
}

/// The sum of the scales of the pods' controllers, each counted once.
fn expected_scale(pods: &[&Pod], scales: &dyn Scales) -> Result<i32, BudgetError> {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let owner = rscore::controller_of(pod.metadata.owner_references.as_ref())
            .ok_or_else(|| BudgetError::NoControllerRef(name.clone()))?;
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let (uid, replicas) = scales
            .scale(ns, owner)
            .ok_or_else(|| BudgetError::NoController(name.clone()))?;
        if seen.insert(uid) {
            total += replicas;
        }
    }
    Ok(total)
}

/// The entries of `disrupted` still waiting for their pod's deletion: the pod exists, is not
/// being deleted, and the eviction is younger than [`DELETION_TIMEOUT`].
pub fn live_disrupted(
    disrupted: &BTreeMap<String, Time>,
    pods: &[&Pod],
    now: Timestamp,
) -> BTreeMap<String, Time> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let name = p.metadata.name.as_deref()?;
            let t = disrupted.get(name)?;
            (!expired(t, now)).then(|| (name.to_string(), t.clone()))
        })
        .collect()
}

fn expired(t: &Time, now: Timestamp) -> bool {
    let timeout = k8s_openapi::jiff::SignedDuration::from_secs(DELETION_TIMEOUT.as_secs() as i64);
    t.0.checked_add(timeout)
        .is_ok_and(|deadline| deadline <= now)
}

/// Ready pods not being deleted and not about to be (upstream's `countHealthyPods`).
pub fn healthy(pods: &[&Pod], disrupted: &BTreeMap<String, Time>, now: Timestamp) -> i32 {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.metadata
                .name
                .as_deref()
                .and_then(|n| disrupted.get(n))
                .is_none_or(|t| expired(t, now))
        })
        .filter(|p| pod_ready(p))
        .count() as i32
}

/// The status the disruption controller writes for `pdb` over the pods it selects; a
/// failure to work out the counts gives the fail-safe status (no disruption allowed, the
/// condition saying why).
pub fn status(
    pdb: &PodDisruptionBudget,
    pods: &[&Pod],
    scales: &dyn Scales,
    now: Timestamp,
) -> PodDisruptionBudgetStatus {
    let old = pdb.status.clone().unwrap_or_default();
    let generation = pdb.metadata.generation;
    let disrupted = live_disrupted(&old.disrupted_pods.clone().unwrap_or_default(), pods, now);
    let mut st = PodDisruptionBudgetStatus {
        observed_generation: generation,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted.clone()),
        conditions: old.conditions.clone(),
        ..Default::default()
    };
    match expected_and_desired(pdb, pods, scales) {
        Ok((expected, desired)) => {
            let current = healthy(pods, &disrupted, now);
            let allowed = current - desired;
            st.current_healthy = current;
            st.desired_healthy = desired;
            st.expected_pods = expected;
            st.disruptions_allowed = if expected <= 0 || allowed <= 0 {
                0
            } else {
                allowed
            };
            set_allowed_condition(&mut st, None, now);
        }
        Err(e) => {
            st.current_healthy = old.current_healthy;
            st.desired_healthy = old.desired_healthy;
            st.expected_pods = old.expected_pods;
            st.disruptions_allowed = 0;
            set_allowed_condition(&mut st, Some(e.to_string()), now);
        }
    }
    st
}

/// Sets the DisruptionAllowed condition from `disruptionsAllowed` (SufficientPods /
/// InsufficientPods), or False with SyncFailed and `failure`'s text; the transition time
/// moves only when the status does.
pub fn set_allowed_condition(
    st: &mut PodDisruptionBudgetStatus,
    failure: Option<String>,
    now: Timestamp,
) {
    let (status, reason, message) = match failure {
        Some(m) => ("False", "SyncFailed", m),
        None if st.disruptions_allowed > 0 => ("True", "SufficientPods", String::new()),
        None => ("False", "InsufficientPods", String::new()),
    };
    let mut conditions = st.conditions.take().unwrap_or_default();
    let prev = conditions
        .iter()
        .position(|c| c.type_ == DISRUPTION_ALLOWED)
        .map(|i| conditions.remove(i));
    let last_transition_time = match &prev {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(now),
    };
    conditions.push(Condition {
        type_: DISRUPTION_ALLOWED.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: st.observed_generation,
        last_transition_time,
    });
    st.conditions = Some(conditions);
}

/// What an eviction of a pod covered by one budget does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Delete the pod and record it in `disruptedPods` with the budget's count decremented.
    Decrement,
    /// Delete the pod without touching the budget: the pod is not healthy and the budget
    /// is met without it (only if the pod is still the one looked at).
    Unhealthy,
    /// Refuse with 429 and a cause: no disruption allowed, or the budget's status is older
    /// than its spec.
    TooManyRequests {
        /// The StatusCause message.
        cause: String,
        /// Retry-After seconds (0: none suggested).
        retry_after: u32,
    },
    /// Refuse with 403: the budget's bookkeeping is broken.
    Forbidden(String),
}

/// Whether the eviction of `pod` (which `pdb` selects) may go ahead (upstream's eviction
/// handler and `checkAndDecrement`).
pub fn verdict(pdb: &PodDisruptionBudget, pod: &Pod) -> Verdict {
    let name = pdb.metadata.name.as_deref().unwrap_or_default();
    let st = pdb.status.clone().unwrap_or_default();
    let always = pdb
        .spec
        .as_ref()
        .and_then(|s| s.unhealthy_pod_eviction_policy.as_deref())
        == Some("AlwaysAllow");
    if !pod_ready(pod)
        && (always || (st.current_healthy >= st.desired_healthy && st.desired_healthy > 0))
    {
        return Verdict::Unhealthy;
    }
    if st.observed_generation.unwrap_or(0) < pdb.metadata.generation.unwrap_or(0) {
        return Verdict::TooManyRequests {
            cause: format!("The disruption budget {name} is still being processed by the server."),
            retry_after: 10,
        };
    }
    if st.disruptions_allowed < 0 {
        return Verdict::Forbidden("pdb disruptions allowed is negative".into());
    }
    if st.disrupted_pods.as_ref().map_or(0, BTreeMap::len) > MAX_DISRUPTED_PODS {
        return Verdict::Forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller".into(),
        );
    }
    if st.disruptions_allowed == 0 {
        return Verdict::TooManyRequests {
            cause: format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                st.desired_healthy, st.current_healthy
            ),
            retry_after: 0,
        };
    }
    Verdict::Decrement
}

/// The budget's status after an allowed eviction of `pod`: one disruption fewer (the
/// condition updated when none is left) and the pod in `disruptedPods`.
pub fn decremented(
    st: &PodDisruptionBudgetStatus,
    pod: &str,
    now: Timestamp,
) -> PodDisruptionBudgetStatus {
    let mut st = st.clone();
    st.disruptions_allowed -= 1;
    if st.disruptions_allowed == 0 {
        set_allowed_condition(&mut st, None, now);
    }
    st.disrupted_pods
        .get_or_insert_with(BTreeMap::new)
        .insert(pod.to_string(), Time(now));
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed(Vec<(&'static str, &'static str, i32)>);
    impl Scales for Fixed {
        fn scale(&self, _ns: &str, owner: &OwnerReference) -> Option<(String, i32)> {
            self.0
                .iter()
                .find(|(kind, name, _)| owner.kind == *kind && owner.name == *name)
                .map(|(_, name, r)| (format!("uid-{name}"), *r))
        }
    }

    fn pod(name: &str, owner: Option<&str>, ready: bool, phase: &str) -> Pod {
        let refs = owner.map(|o| {
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": o, "uid": format!("uid-{o}"), "controller": true}])
        });
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"},
                         "ownerReferences": refs},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .unwrap()
    }

    fn pdb(spec: serde_json::Value, status: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "generation": 1},
            "spec": spec, "status": status,
        }))
        .unwrap()
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    #[test]
    fn scaled_values() {
        let cases = [
            (IntOrString::Int(2), 10, true, Ok(2)),
            (IntOrString::String("50%".into()), 3, true, Ok(2)),
            (IntOrString::String("50%".into()), 3, false, Ok(1)),
            (IntOrString::String("100%".into()), 4, true, Ok(4)),
            (IntOrString::String("0%".into()), 4, true, Ok(0)),
            (
                IntOrString::String("half".into()),
                4,
                true,
                Err(BudgetError::BadValue("half".into())),
            ),
        ];
        for (v, total, up, want) in cases {
            assert_eq!(scaled(&v, total, up), want, "{v:?} of {total}");
        }
    }

    /// (spec, pods, expected and desired counts)
    type Case<'a> = (
        serde_json::Value,
        Vec<&'a Pod>,
        Result<(i32, i32), BudgetError>,
    );

    #[test]
    fn counts_per_spec() {
        let scales = Fixed(vec![("ReplicaSet", "rs1", 4), ("ReplicaSet", "rs2", 2)]);
        let p: Vec<Pod> = vec![
            pod("a", Some("rs1"), true, "Running"),
            pod("b", Some("rs1"), true, "Running"),
            pod("c", Some("rs2"), false, "Running"),
        ];
        let pods: Vec<&Pod> = p.iter().collect();
        let orphan = pod("d", None, true, "Running");
        let cases: Vec<Case> = vec![
            (json!({"minAvailable": 2}), pods.clone(), Ok((3, 2))),
            (json!({"minAvailable": "50%"}), pods.clone(), Ok((6, 3))),
            (json!({"maxUnavailable": 1}), pods.clone(), Ok((6, 5))),
            (json!({"maxUnavailable": "25%"}), pods.clone(), Ok((6, 4))),
            (json!({"maxUnavailable": 10}), pods.clone(), Ok((6, 0))),
            (
                json!({"maxUnavailable": 1}),
                vec![&orphan],
                Err(BudgetError::NoControllerRef("d".into())),
            ),
            (json!({"minAvailable": 1}), vec![&orphan], Ok((1, 1))),
        ];
        for (spec, pods, want) in cases {
            let b = pdb(spec.clone(), json!({}));
            assert_eq!(expected_and_desired(&b, &pods, &scales), want, "{spec}");
        }
    }

    #[test]
    fn status_counts_and_condition() {
        let scales = Fixed(vec![("ReplicaSet", "rs1", 3)]);
        let p = [
            pod("a", Some("rs1"), true, "Running"),
            pod("b", Some("rs1"), true, "Running"),
            pod("c", Some("rs1"), true, "Running"),
        ];
        let pods: Vec<&Pod> = p.iter().collect();
        let b = pdb(
            json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}),
            json!({}),
        );
        let st = status(&b, &pods, &scales, now());
        assert_eq!(
            (
                st.current_healthy,
                st.desired_healthy,
                st.expected_pods,
                st.disruptions_allowed
            ),
            (3, 2, 3, 1)
        );
        assert_eq!(st.observed_generation, Some(1));
        let c = &st.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("DisruptionAllowed", "True", "SufficientPods")
        );
        // a recent eviction keeps "a" out of the healthy count; an expired one does not
        let recent = Time(
            now()
                .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(10))
                .unwrap(),
        );
        let old = Time(
            now()
                .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(300))
                .unwrap(),
        );
        let b2 = pdb(
            json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}),
            json!({"disruptedPods": {"a": recent.0.to_string(), "b": old.0.to_string(), "gone": recent.0.to_string()},
                   "conditions": st.conditions}),
        );
        let st2 = status(&b2, &pods, &scales, now());
        assert_eq!((st2.current_healthy, st2.disruptions_allowed), (2, 0));
        assert_eq!(
            st2.disrupted_pods
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            vec!["a"]
        );
        let c2 = &st2.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c2.status.as_str(), c2.reason.as_str()),
            ("False", "InsufficientPods")
        );
        assert_eq!(c2.last_transition_time, Time(now()));
        // no controller for a percentage: fail safe
        let orphan = pod("d", None, true, "Running");
        let b3 = pdb(json!({"maxUnavailable": "10%", "selector": {}}), json!({}));
        let st3 = status(&b3, &[&orphan], &scales, now());
        let c3 = &st3.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (st3.disruptions_allowed, c3.reason.as_str()),
            (0, "SyncFailed")
        );
        assert_eq!(c3.message, "found no controller ref for pod \"d\"");
    }

    #[test]
    fn selection() {
        let p = pod("a", Some("rs1"), true, "Running");
        let cases = [
            (json!({"selector": {"matchLabels": {"app": "web"}}}), true),
            (json!({"selector": {"matchLabels": {"app": "db"}}}), false),
            (json!({"selector": {}}), true),
            (json!({}), false),
            (
                json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "x"]}]}}),
                true,
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(selects(&pdb(spec.clone(), json!({})), &p), want, "{spec}");
        }
    }

    #[test]
    fn verdicts() {
        let ready = pod("a", Some("rs1"), true, "Running");
        let unready = pod("a", Some("rs1"), false, "Running");
        let st = |allowed: i32, cur: i32, des: i32| {
            json!({"observedGeneration": 1, "disruptionsAllowed": allowed, "currentHealthy": cur,
                   "desiredHealthy": des, "expectedPods": 3})
        };
        let spec = json!({"minAvailable": 2});
        assert_eq!(
            verdict(&pdb(spec.clone(), st(1, 3, 2)), &ready),
            Verdict::Decrement
        );
        assert_eq!(
            verdict(&pdb(spec.clone(), st(0, 2, 2)), &ready),
            Verdict::TooManyRequests {
                cause: "The disruption budget web needs 2 healthy pods and has 2 currently".into(),
                retry_after: 0
            }
        );
        assert_eq!(
            verdict(&pdb(spec.clone(), st(0, 2, 2)), &unready),
            Verdict::Unhealthy
        );
        assert!(matches!(
            verdict(&pdb(spec.clone(), st(0, 1, 2)), &unready),
            Verdict::TooManyRequests { .. }
        ));
        let always = json!({"minAvailable": 2, "unhealthyPodEvictionPolicy": "AlwaysAllow"});
        assert_eq!(
            verdict(&pdb(always, st(0, 1, 2)), &unready),
            Verdict::Unhealthy
        );
        let stale = json!({"observedGeneration": 0, "disruptionsAllowed": 1});
        assert!(matches!(
            verdict(&pdb(spec.clone(), stale), &ready),
            Verdict::TooManyRequests {
                retry_after: 10,
                ..
            }
        ));
        assert!(matches!(
            verdict(&pdb(spec, st(-1, 1, 2)), &ready),
            Verdict::Forbidden(_)
        ));
        assert!(ignores_budget(&pod("p", None, false, "Pending")));
        assert!(ignores_budget(&pod("p", None, false, "Succeeded")));
        assert!(!ignores_budget(&ready));
    }

    #[test]
    fn decrement_records_the_pod() {
        let b = pdb(
            json!({"minAvailable": 2}),
            json!({"observedGeneration": 1, "disruptionsAllowed": 1,
            "currentHealthy": 3, "desiredHealthy": 2, "expectedPods": 3,
            "conditions": [{"type": "DisruptionAllowed", "status": "True", "reason": "SufficientPods", "message": "",
                            "lastTransitionTime": "2020-01-01T00:00:00Z"}]}),
        );
        let st = decremented(b.status.as_ref().unwrap(), "a", now());
        assert_eq!(st.disruptions_allowed, 0);
        assert_eq!(st.disrupted_pods.unwrap().get("a"), Some(&Time(now())));
        let c = &st.conditions.unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InsufficientPods")
        );
    }
}

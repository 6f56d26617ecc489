//! The ReplicaSet controller's decisions as pure functions: selector matching, which pods a
//! ReplicaSet owns, adopts and releases (upstream's ControllerRefManager), which pods go first
//! on scale-down (upstream's `ActivePodsWithRanks`), and the status it reports.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::select::{self, Requirement};

/// At most this many pods are created or deleted in one sync (upstream's `burstReplicas`).
pub const BURST_REPLICAS: usize = 500;

/// A `metav1.LabelSelector` as requirements; `None` for a selector that matches nothing
/// (an invalid operator), as `metav1.LabelSelectorAsSelector` fails on it.
pub fn selector(sel: &LabelSelector) -> Option<select::LabelSelector> {
    let mut reqs = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        reqs.push(Requirement::In(k.clone(), vec![v.clone()]));
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        reqs.push(match e.operator.as_str() {
            "In" => Requirement::In(e.key.clone(), values),
            "NotIn" => Requirement::NotIn(e.key.clone(), values),
            "Exists" => Requirement::Exists(e.key.clone()),
            "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
            _ => return None,
        });
    }
    Some(select::LabelSelector(reqs))
}

/// Whether `labels` satisfy every requirement. An empty selector matches everything
/// (callers refuse empty selectors where Kubernetes does).
pub fn matches(sel: &select::LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    sel.matches_by(|k| labels.and_then(|l| l.get(k)).map(String::as_str))
}

/// The controller ownerReference of an object, if any.
pub fn controller_of(refs: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    refs?.iter().find(|r| r.controller == Some(true))
}

/// A controller ownerReference to an object of `kind` (`batch/v1` for Jobs and CronJobs,
/// else `apps/v1`).
pub fn controller_ref(kind: &str, name: &str, uid: &str) -> OwnerReference {
    let api_version = match kind {
        "Job" | "CronJob" => "batch/v1",
        _ => "apps/v1",
    };
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Neither terminated nor being deleted (upstream's `IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// When the pod's Ready condition became True, if it is True.
pub fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let cond = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (cond.status == "True").then(|| cond.last_transition_time.as_ref().map(|t| t.0))
}

/// Ready (condition Ready=True).
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// How long until a ready pod counts as available: `Some(ZERO)` when it already is,
/// `None` when it is not ready. A ready pod without a transition time is available.
pub fn until_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<Duration> {
    let since = ready_since(pod)?;
    if min_ready_seconds <= 0 {
        return Some(Duration::ZERO);
    }
    let Some(since) = since else {
        return Some(Duration::ZERO);
    };
    let ready_for = now.duration_since(since);
    let need = k8s_openapi::jiff::SignedDuration::from_secs(i64::from(min_ready_seconds));
    if ready_for >= need {
        Some(Duration::ZERO)
    } else {
        Some((need - ready_for).unsigned_abs())
    }
}

/// Ready for at least `min_ready_seconds` (upstream's `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    until_available(pod, min_ready_seconds, now) == Some(Duration::ZERO)
}

/// What a controller does with the objects (pods, ReplicaSets) of its namespace.
#[derive(Debug)]
pub struct Claims<'a, K = Pod> {
    /// Objects it controls and that still match (after adoption these are its own).
    pub owned: Vec<&'a K>,
    /// Orphans matching its selector: take them (add the controller reference).
    pub adopt: Vec<&'a K>,
    /// Objects it controls that no longer match: let them go (drop the reference).
    pub release: Vec<&'a K>,
}

/// Upstream's `ControllerRefManager` claim: objects controlled by `uid` that match stay;
/// those that do not match are released (unless the owner is being deleted); orphans that
/// match are adopted (unless the owner or the orphan is being deleted). Objects of other
/// controllers are ignored.
pub fn claim<'a, K: kube::Resource>(
    uid: &str,
    owner_deleting: bool,
    sel: &select::LabelSelector,
    items: impl IntoIterator<Item = &'a K>,
) -> Claims<'a, K> {
    let mut out = Claims {
        owned: Vec::new(),
        adopt: Vec::new(),
        release: Vec::new(),
    };
    for item in items {
        let meta = item.meta();
        let labels = meta.labels.as_ref();
        match controller_of(meta.owner_references.as_ref()) {
            Some(r) if r.uid == uid => {
                if matches(sel, labels) {
                    out.owned.push(item);
                } else if !owner_deleting {
                    out.release.push(item);
                }
            }
            Some(_) => {}
            None => {
                if !owner_deleting && meta.deletion_timestamp.is_none() && matches(sel, labels) {
                    out.adopt.push(item);
                }
            }
        }
    }
    out
}

fn phase_rank(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    }
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

fn created(pod: &Pod) -> Option<Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

/// Orders `pods` so the ones to delete first come first, as upstream's
/// `ActivePodsWithRanks`: unscheduled before scheduled; Pending before Unknown before
/// Running; not ready before ready; more pods of the same owner on the node first; ready for
/// less time first; more restarts first; newer first. `related` are the owner's active pods
/// (for the per-node count).
pub fn rank_for_deletion(pods: &mut [&Pod], related: &[&Pod]) {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related {
        let n = node_of(p);
        if !n.is_empty() {
            *on_node.entry(n).or_default() += 1;
        }
    }
    let colocated = |p: &Pod| on_node.get(node_of(p)).copied().unwrap_or(0);
    pods.sort_by(|a, b| {
        let (sa, sb) = (node_of(a).is_empty(), node_of(b).is_empty());
        if sa != sb {
            return sb.cmp(&sa);
        }
        let c = phase_rank(a).cmp(&phase_rank(b));
        if c != Ordering::Equal {
            return c;
        }
        let (ra, rb) = (ready_since(a), ready_since(b));
        if ra.is_some() != rb.is_some() {
            return ra.is_some().cmp(&rb.is_some());
        }
        let c = colocated(b).cmp(&colocated(a));
        if c != Ordering::Equal {
            return c;
        }
        if let (Some(Some(ta)), Some(Some(tb))) = (ra, rb) {
            // Ready for less time (became ready later) goes first.
            let c = tb.cmp(&ta);
            if c != Ordering::Equal {
                return c;
            }
        }
        let c = restarts(b).cmp(&restarts(a));
        if c != Ordering::Equal {
            return c;
        }
        // Newer first; a missing timestamp counts as newest.
        match (created(a), created(b)) {
            (Some(x), Some(y)) => y.cmp(&x),
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    });
}

/// How many pods to create (positive) or delete (negative) to reach `replicas` from
/// `active`, at most [`BURST_REPLICAS`] either way.
pub fn replica_diff(replicas: i32, active: usize) -> i64 {
    let want = i64::from(replicas.max(0));
    let have = i64::try_from(active).unwrap_or(i64::MAX);
    let burst = i64::try_from(BURST_REPLICAS).unwrap_or(i64::MAX);
    (want - have).clamp(-burst, burst)
}

/// The status of a ReplicaSet from its owned active pods (upstream's
/// `calculateReplicaSetStatus`), given the error of the last create/delete round (which sets
/// or clears the ReplicaFailure condition), and when to look again for pods about to become
/// available.
pub fn status(
    rs: &ReplicaSet,
    owned: &[&Pod],
    manage_error: Option<(&str, &str)>,
    now: Timestamp,
) -> (ReplicaSetStatus, Option<Duration>) {
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut fully_labeled = 0;
    let mut ready = 0;
    let mut available = 0;
    let mut next: Option<Duration> = None;
    for pod in owned {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|x| x == v))
        {
            fully_labeled += 1;
        }
        match until_available(pod, min_ready, now) {
            Some(d) if d.is_zero() => {
                ready += 1;
                available += 1;
            }
            Some(d) => {
                ready += 1;
                // A second of slack, so the pod is surely available when we look again.
                let d = d + Duration::from_secs(1);
                next = Some(next.map_or(d, |n| n.min(d)));
            }
            None => {}
        }
    }
    let old = rs.status.clone().unwrap_or_default();
    let mut conditions: Vec<ReplicaSetCondition> = old.conditions.clone().unwrap_or_default();
    let has_failure = conditions.iter().any(|c| c.type_ == "ReplicaFailure");
    match manage_error {
        Some((reason, message)) if !has_failure => conditions.push(ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: Some(Time(now)),
        }),
        None if has_failure => conditions.retain(|c| c.type_ != "ReplicaFailure"),
        _ => {}
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let st = ReplicaSetStatus {
        replicas: count(owned.len()),
        fully_labeled_replicas: Some(count(fully_labeled)),
        ready_replicas: Some(count(ready)),
        available_replicas: Some(count(available)),
        observed_generation: rs.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: old.terminating_replicas,
    };
    (st, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn named(name: &str, extra: serde_json::Value) -> Pod {
        let mut v = json!({"metadata": {"name": name, "labels": {"app": "web"}}});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                if k == "metadata" {
                    for (mk, mv) in x.as_object().unwrap() {
                        o["metadata"][mk] = mv.clone();
                    }
                } else {
                    o.insert(k.clone(), x.clone());
                }
            }
        }
        pod(v)
    }

    fn sel(v: serde_json::Value) -> select::LabelSelector {
        selector(&serde_json::from_value(v).unwrap()).unwrap()
    }

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("tier".into(), "fe".into()),
        ]
        .into();
        let cases = [
            (json!({"matchLabels": {"app": "web"}}), true),
            (json!({"matchLabels": {"app": "db"}}), false),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["fe"]}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "x", "operator": "Exists"}]}),
                false,
            ),
        ];
        for (s, want) in cases {
            assert_eq!(matches(&sel(s.clone()), Some(&labels)), want, "{s}");
        }
        let bad: LabelSelector =
            serde_json::from_value(json!({"matchExpressions": [{"key": "x", "operator": "Near"}]}))
                .unwrap();
        assert!(selector(&bad).is_none());
    }

    #[test]
    fn claims_own_adopt_release_and_ignore() {
        let mine = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]}});
        let other = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": "u2", "controller": true}]}});
        let owned = named("owned", mine.clone());
        let mut moved = named("moved", mine);
        moved.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
        let orphan = named("orphan", json!({}));
        let dying = named(
            "dying",
            json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
        );
        let foreign = named("foreign", other);
        let mut stranger = named("stranger", json!({}));
        stranger.metadata.labels = None;
        let pods = [&owned, &moved, &orphan, &dying, &foreign, &stranger];
        let s = sel(json!({"matchLabels": {"app": "web"}}));

        let c = claim("u1", false, &s, pods);
        let names = |v: &[&Pod]| -> Vec<String> {
            v.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
        };
        assert_eq!(names(&c.owned), ["owned"]);
        assert_eq!(names(&c.adopt), ["orphan"]);
        assert_eq!(names(&c.release), ["moved"]);

        // An owner being deleted neither adopts nor releases.
        let c = claim("u1", true, &s, pods);
        assert_eq!(names(&c.owned), ["owned"]);
        assert!(c.adopt.is_empty() && c.release.is_empty());
    }

    #[test]
    fn deletion_order_follows_upstream_ranks() {
        let running_ready = |name: &str, node: &str, ready_at: &str, created: &str| {
            named(
                name,
                json!({
                    "metadata": {"creationTimestamp": created},
                    "spec": {"nodeName": node, "containers": []},
                    "status": {"phase": "Running", "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": ready_at}]},
                }),
            )
        };
        let unscheduled = named(
            "unscheduled",
            json!({"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"},
                   "status": {"phase": "Pending"}}),
        );
        let pending = named(
            "pending",
            json!({"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"},
                   "spec": {"nodeName": "n1", "containers": []}, "status": {"phase": "Pending"}}),
        );
        let not_ready = named(
            "not-ready",
            json!({"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"},
                   "spec": {"nodeName": "n1", "containers": []},
                   "status": {"phase": "Running", "conditions": [
                       {"type": "Ready", "status": "False"}]}}),
        );
        // On n2 (two pods there) before n1-only pods; among equals, newer ready first.
        let crowded_a = running_ready(
            "crowded-old",
            "n2",
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00Z",
        );
        let crowded_b = running_ready(
            "crowded-new",
            "n2",
            "2024-01-01T00:05:00Z",
            "2024-01-01T00:00:00Z",
        );
        let lonely_old = running_ready(
            "lonely-old",
            "n3",
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00Z",
        );
        let lonely_new = running_ready(
            "lonely-new",
            "n4",
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:09:00Z",
        );
        let all = [
            &lonely_old,
            &crowded_a,
            &lonely_new,
            &not_ready,
            &crowded_b,
            &pending,
            &unscheduled,
        ];
        let mut order = all.to_vec();
        rank_for_deletion(&mut order, &all);
        let names: Vec<_> = order
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending",
                "not-ready",
                "crowded-new",
                "crowded-old",
                "lonely-new",
                "lonely-old"
            ]
        );
    }

    #[test]
    fn diffs_are_capped_by_the_burst() {
        for (replicas, active, want) in [
            (3, 0, 3),
            (3, 3, 0),
            (0, 5, -5),
            (1000, 0, 500),
            (0, 900, -500),
            (-1, 2, -2),
        ] {
            assert_eq!(replica_diff(replicas, active), want, "{replicas} {active}");
        }
    }

    #[test]
    fn status_counts_labeled_ready_available_and_sets_failure() {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "rs", "generation": 4},
            "spec": {"replicas": 3, "minReadySeconds": 10,
                     "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web", "v": "1"}}}},
        }))
        .unwrap();
        let now: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        let ready_at = |t: &str| {
            json!({"metadata": {"labels": {"app": "web", "v": "1"}},
                   "status": {"phase": "Running", "conditions": [
                       {"type": "Ready", "status": "True", "lastTransitionTime": t}]}})
        };
        let long = named("long", ready_at("2024-01-01T00:00:00Z"));
        let fresh = named("fresh", ready_at("2024-01-01T00:00:55Z"));
        let unready = named("unready", json!({"status": {"phase": "Pending"}}));
        let (st, next) = status(&rs, &[&long, &fresh, &unready], None, now);
        assert_eq!(st.replicas, 3);
        assert_eq!(st.fully_labeled_replicas, Some(2));
        assert_eq!(st.ready_replicas, Some(2));
        assert_eq!(st.available_replicas, Some(1));
        assert_eq!(st.observed_generation, Some(4));
        assert_eq!(next, Some(Duration::from_secs(6)));
        assert!(st.conditions.is_none());

        let (st, _) = status(&rs, &[], Some(("FailedCreate", "quota")), now);
        let conds = st.conditions.clone().unwrap();
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].type_, "ReplicaFailure");
        assert_eq!(conds[0].reason.as_deref(), Some("FailedCreate"));
        let mut failed = rs.clone();
        failed.status = Some(st);
        let (st, _) = status(&failed, &[], None, now);
        assert!(st.conditions.is_none());
    }
}

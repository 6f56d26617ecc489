//! The DaemonSet controller's decisions as a pure function of (daemonset, nodes, its pods):
//! which nodes should run a daemon pod (nodeSelector, required node affinity, taints against
//! the pod's tolerations plus the DaemonSet defaults), which pods to create and delete,
//! the rolling update within maxUnavailable, and the status (upstream's `manage`,
//! `rollingUpdate`, `NodeShouldRunDaemonPod` and `updateDaemonSetStatus`).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::controllers::replicaset::core::{controller_ref, is_active, is_available, is_ready};
use crate::controllers::scheduler::core::{NodeInfo, node_selector_matches, tolerates};

/// Label with the DaemonSet generation a pod was made from.
pub const TEMPLATE_GENERATION: &str = "pod-template-generation";
/// Label with the hash of the template a pod was made from.
pub const REVISION_HASH: &str = "controller-revision-hash";

/// What the controller does in one sync.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Nodes to create a daemon pod on.
    pub create: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<String>,
    /// The status to report.
    pub status: DaemonSetStatus,
}

/// The tolerations every daemon pod gets (upstream's `AddOrUpdateDaemonPodTolerations`).
pub fn default_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        value: None,
        toleration_seconds: None,
    };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// The hash of the DaemonSet's pod template (its `controller-revision-hash`).
pub fn template_hash(ds: &DaemonSet) -> String {
    let tpl = ds.spec.as_ref().map(|s| &s.template);
    let bytes = serde_json::to_vec(&tpl).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..5])
}

/// Whether a daemon pod of `ds` should run on `node`.
pub fn should_run(ds: &DaemonSet, node: &Node) -> bool {
    let Some(spec) = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        return false;
    };
    let info = NodeInfo::new(node);
    if let Some(sel) = &spec.node_selector
        && sel.iter().any(|(k, v)| info.labels.get(k) != Some(v))
    {
        return false;
    }
    if let Some(req) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        && !node_selector_matches(req, &info)
    {
        return false;
    }
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    tolerations.extend(default_tolerations());
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| matches!(t.effect.as_str(), "NoSchedule" | "NoExecute"))
        .all(|taint| tolerations.iter().any(|t| tolerates(t, taint)))
}

/// The node a daemon pod is for: its nodeName, else its affinity's `metadata.name`.
pub fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

fn is_current(pod: &Pod, hash: &str) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH))
        .is_some_and(|h| h == hash)
}

/// maxUnavailable as a number of nodes out of `desired` (percentages round up), at least 1
/// when maxSurge is 0, as upstream.
fn max_unavailable(ds: &DaemonSet, desired: usize) -> usize {
    let v = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone());
    let n = match v {
        Some(IntOrString::Int(i)) => usize::try_from(i).unwrap_or(0),
        Some(IntOrString::String(s)) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<usize>().ok())
            .map_or(1, |p| (p * desired).div_ceil(100)),
        None => 1,
    };
    n.max(1)
}

/// One sync of `ds` over all nodes and the pods it owns.
pub fn plan(ds: &DaemonSet, nodes: &[&Node], pods: &[&Pod], now: Timestamp) -> Plan {
    let hash = template_hash(ds);
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let rolling = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let mut by_node: HashMap<String, Vec<&Pod>> = HashMap::new();
    let mut out = Plan {
        create: Vec::new(),
        delete: Vec::new(),
        status: DaemonSetStatus::default(),
    };
    for p in pods.iter().copied() {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if phase == Some("Failed") {
            // A failed daemon pod is replaced.
            out.delete.extend(p.metadata.name.clone());
            continue;
        }
        match node_of(p) {
            Some(n) => by_node.entry(n).or_default().push(p),
            None => out.delete.extend(p.metadata.name.clone()),
        }
    }
    let eligible: BTreeMap<String, bool> = nodes
        .iter()
        .map(|n| {
            (
                n.metadata.name.clone().unwrap_or_default(),
                should_run(ds, n),
            )
        })
        .collect();
    let (mut desired, mut current, mut ready, mut available, mut updated, mut mis) =
        (0, 0, 0, 0, 0, 0);
    let mut old_on_node: Vec<(String, &Pod)> = Vec::new();
    let mut unavailable = 0usize;
    for (node, run) in &eligible {
        let mut list: Vec<&Pod> = by_node.remove(node).unwrap_or_default();
        list.retain(|p| is_active(p));
        if !run {
            if !list.is_empty() {
                mis += 1;
            }
            out.delete
                .extend(list.iter().filter_map(|p| p.metadata.name.clone()));
            continue;
        }
        desired += 1;
        if list.is_empty() {
            out.create.push(node.clone());
            unavailable += 1;
            continue;
        }
        // Several on one node: keep the oldest (current revision first).
        list.sort_by_key(|p| {
            (
                !is_current(p, &hash),
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        });
        out.delete
            .extend(list[1..].iter().filter_map(|p| p.metadata.name.clone()));
        let pod = list[0];
        current += 1;
        if is_ready(pod) {
            ready += 1;
        }
        let avail = is_available(pod, min_ready, now);
        if avail {
            available += 1;
        } else {
            unavailable += 1;
        }
        if is_current(pod, &hash) {
            updated += 1;
        } else {
            old_on_node.push((node.clone(), pod));
        }
    }
    // Pods on nodes that are gone.
    for list in by_node.values() {
        out.delete
            .extend(list.iter().filter_map(|p| p.metadata.name.clone()));
    }
    if rolling {
        let budget = max_unavailable(ds, usize::try_from(desired).unwrap_or(0));
        // Old pods that are not available go first: they cost nothing.
        old_on_node.sort_by_key(|(_, p)| is_available(p, min_ready, now));
        for (_, p) in old_on_node {
            if !is_available(p, min_ready, now) {
                out.delete.extend(p.metadata.name.clone());
            } else if unavailable < budget {
                out.delete.extend(p.metadata.name.clone());
                unavailable += 1;
            }
        }
    }
    out.status = DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: current,
        number_ready: ready,
        number_available: Some(available),
        number_unavailable: Some(desired - available),
        number_misscheduled: mis,
        updated_number_scheduled: Some(updated),
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: None,
    };
    out
}

/// The daemon pod of `ds` for `node`: the template with the DaemonSet's labels, default
/// tolerations and a required node affinity to that node (`matchFields metadata.name`), left
/// to the scheduler to bind.
pub fn pod_for(ds: &DaemonSet, node: &str) -> Pod {
    let name = ds.metadata.name.clone().unwrap_or_default();
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(REVISION_HASH.into(), template_hash(ds));
    labels.insert(
        TEMPLATE_GENERATION.into(),
        ds.metadata.generation.unwrap_or(1).to_string(),
    );
    let mut spec = template.spec.unwrap_or_default();
    let mut tolerations = spec.tolerations.take().unwrap_or_default();
    for t in default_tolerations() {
        if !tolerations
            .iter()
            .any(|x| x.key == t.key && x.effect == t.effect)
        {
            tolerations.push(t);
        }
    }
    spec.tolerations = Some(tolerations);
    let term = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.to_string()]),
        }]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            owner_references: Some(vec![controller_ref(
                "DaemonSet",
                &name,
                ds.metadata.uid.as_deref().unwrap_or_default(),
            )]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn ds(tpl_spec: Value) -> DaemonSet {
        let mut spec = tpl_spec;
        spec["containers"] = json!([{"name": "c", "image": "agent:1"}]);
        serde_json::from_value(json!({"metadata": {"name": "agent", "namespace": "default", "uid": "u", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}}, "spec": spec},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}}}))
        .unwrap()
    }

    fn node(name: &str, labels: Value, taints: Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap()
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {REVISION_HASH: hash},
                                                    "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
        .unwrap()
    }

    #[test]
    fn eligibility() {
        let plain = ds(json!({}));
        let ssd = ds(json!({"nodeSelector": {"disk": "ssd"}}));
        let tolerant = ds(json!({"tolerations": [{"key": "dedicated", "operator": "Exists"}]}));
        let affinity = ds(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}),
        );
        let n = node("n", json!({"disk": "ssd", "zone": "a"}), json!([]));
        let tainted = node(
            "t",
            json!({}),
            json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
        );
        let soft = node(
            "s",
            json!({}),
            json!([{"key": "dedicated", "value": "x", "effect": "PreferNoSchedule"}]),
        );
        let cordoned = node(
            "c",
            json!({}),
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        );
        let cases = [
            (&plain, &n, true),
            (&plain, &tainted, false),
            (&plain, &soft, true),
            (&plain, &cordoned, true),
            (&tolerant, &tainted, true),
            (&ssd, &n, true),
            (&ssd, &soft, false),
            (&affinity, &n, true),
            (&affinity, &soft, false),
        ];
        for (i, (d, nd, want)) in cases.iter().enumerate() {
            assert_eq!(should_run(d, nd), *want, "case {i}");
        }
    }

    #[test]
    fn plans() {
        let d = ds(json!({}));
        let h = template_hash(&d);
        let nodes = [
            node("n1", json!({}), json!([])),
            node("n2", json!({}), json!([])),
            node(
                "n3",
                json!({}),
                json!([{"key": "k", "effect": "NoSchedule"}]),
            ),
        ];
        let nodes: Vec<&Node> = nodes.iter().collect();
        let now: Timestamp = "2024-01-01T00:10:00Z".parse().unwrap();
        type Case = (
            &'static str,
            Vec<Pod>,
            Vec<&'static str>,
            Vec<&'static str>,
            (i32, i32, i32, i32),
        );
        let cases: Vec<Case> = vec![
            (
                "a pod per eligible node",
                vec![],
                vec!["n1", "n2"],
                vec![],
                (2, 0, 0, 0),
            ),
            (
                "in place",
                vec![pod("a", "n1", &h, true), pod("b", "n2", &h, true)],
                vec![],
                vec![],
                (2, 2, 2, 0),
            ),
            (
                "duplicates, misscheduled and orphaned nodes",
                vec![
                    pod("a", "n1", &h, true),
                    pod("b", "n1", &h, true),
                    pod("c", "n3", &h, true),
                    pod("d", "gone", &h, true),
                ],
                vec!["n2"],
                vec!["b", "c", "d"],
                (2, 1, 1, 1),
            ),
            (
                "rolling update one at a time",
                vec![pod("a", "n1", "old", true), pod("b", "n2", "old", true)],
                vec![],
                vec!["a"],
                (2, 2, 0, 0),
            ),
            (
                "unavailable old pods go at once",
                vec![pod("a", "n1", "old", false), pod("b", "n2", "old", false)],
                vec![],
                vec!["a", "b"],
                (2, 2, 0, 0),
            ),
            (
                "no more while a new one is not ready",
                vec![pod("a", "n1", &h, false), pod("b", "n2", "old", true)],
                vec![],
                vec![],
                (2, 2, 1, 0),
            ),
        ];
        for (name, pods, create, delete, (desired, current, updated, mis)) in cases {
            let pods: Vec<&Pod> = pods.iter().collect();
            let p = plan(&d, &nodes, &pods, now);
            assert_eq!(p.create, create, "{name}");
            let mut del = p.delete.clone();
            del.sort();
            assert_eq!(del, delete, "{name}");
            let s = &p.status;
            assert_eq!(
                (
                    s.desired_number_scheduled,
                    s.current_number_scheduled,
                    s.updated_number_scheduled.unwrap(),
                    s.number_misscheduled
                ),
                (desired, current, updated, mis),
                "{name}"
            );
        }
    }

    #[test]
    fn daemon_pods_are_pinned_to_their_node() {
        let d = ds(
            json!({"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        let p = pod_for(&d, "n7");
        assert_eq!(node_of(&p).as_deref(), Some("n7"));
        let spec = p.spec.unwrap();
        assert!(spec.node_name.is_none(), "the scheduler binds it");
        let tol = spec.tolerations.unwrap();
        assert_eq!(tol.len(), 6, "defaults added once: {tol:?}");
        let labels = p.metadata.labels.unwrap();
        assert_eq!(labels[REVISION_HASH], template_hash(&d));
        assert_eq!(labels[TEMPLATE_GENERATION], "1");
        assert_eq!(labels["app"], "agent");
        let r = &p.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (r.api_version.as_str(), r.kind.as_str()),
            ("apps/v1", "DaemonSet")
        );
    }
}

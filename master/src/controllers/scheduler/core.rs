//! The scheduler's choice as a pure function: filters and scores a pod against node
//! snapshots (a node plus the pods bound or assumed on it), as kube-scheduler's default
//! profile does. No I/O and no clock: the same (pod, nodes, bound pods) give the same node.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelector, NodeSelectorRequirement, Pod, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// CPU charged for scoring to a pod that requests none (kube-scheduler's default, 100m).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory charged for scoring to a pod that requests none (200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Weights of the scores, as in kube-scheduler's default profile.
const WEIGHT_LEAST_ALLOCATED: i64 = 1;
const WEIGHT_BALANCED: i64 = 1;
const WEIGHT_TAINTS: i64 = 3;
const WEIGHT_SPREAD: i64 = 2;
const MAX_SCORE: i64 = 100;

/// The value of a resource quantity in milli-units, rounded up (`Quantity.MilliValue()`);
/// `None` when it does not parse.
pub fn milli_value(q: &str) -> Option<i64> {
    let q = q.trim();
    let (sign, rest) = match q.strip_prefix('-') {
        Some(r) => (-1i128, r),
        None => (1i128, q.strip_prefix('+').unwrap_or(q)),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (num, suffix) = rest.split_at(num_end);
    if num.is_empty() || num == "." {
        return None;
    }
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if frac.contains('.') {
        return None;
    }
    let mut mantissa: i128 = 0;
    for c in int.chars().chain(frac.chars()) {
        mantissa = mantissa.checked_mul(10)? + i128::from(c.to_digit(10)?);
    }
    let frac_digits = i32::try_from(frac.len()).ok()?;
    // value = mantissa * 10^-frac_digits * base^exp
    let (binary, exp): (bool, i32) = match suffix {
        "" => (false, 0),
        "n" => (false, -9),
        "u" => (false, -6),
        "m" => (false, -3),
        "k" => (false, 3),
        "M" => (false, 6),
        "G" => (false, 9),
        "T" => (false, 12),
        "P" => (false, 15),
        "E" => (false, 18),
        "Ki" => (true, 10),
        "Mi" => (true, 20),
        "Gi" => (true, 30),
        "Ti" => (true, 40),
        "Pi" => (true, 50),
        "Ei" => (true, 60),
        s if s.starts_with(['e', 'E']) => (false, s[1..].parse().ok()?),
        _ => return None,
    };
    let (mut num, mut den): (i128, i128) = (mantissa * 1000, 1);
    let scale = |e: i32| -> Option<i128> { 10i128.checked_pow(u32::try_from(e).ok()?) };
    den = den.checked_mul(scale(frac_digits)?)?;
    if binary {
        num = num.checked_mul(1i128 << exp)?;
    } else if exp >= 0 {
        num = num.checked_mul(scale(exp)?)?;
    } else {
        den = den.checked_mul(scale(-exp)?)?;
    }
    let v = (num + den - 1) / den; // round up, as Quantity does
    i64::try_from(sign * v).ok()
}

/// The value of a quantity in whole units, rounded up (`Quantity.Value()`).
pub fn value(q: &str) -> Option<i64> {
    milli_value(q).map(|m| m.div_euclid(1000) + i64::from(m.rem_euclid(1000) != 0))
}

/// Amounts of the resources the scheduler accounts for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Pod count (allocatable only; requested pods are counted by the node).
    pub pods: i64,
    /// Extended and other scalar resources (`example.com/gpu`, `hugepages-2Mi`) in units.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// From a resource list (requests, allocatable); unparsable quantities count as 0.
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list {
            r.set(name, &q.0);
        }
        r
    }

    fn set(&mut self, name: &str, q: &str) {
        match name {
            "cpu" => self.milli_cpu = milli_value(q).unwrap_or(0),
            "memory" => self.memory = value(q).unwrap_or(0),
            "ephemeral-storage" => self.ephemeral_storage = value(q).unwrap_or(0),
            "pods" => self.pods = value(q).unwrap_or(0),
            other => {
                self.scalar.insert(other.to_string(), value(q).unwrap_or(0));
            }
        }
    }

    fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// A container's requests; a resource with a limit and no request requests its limit (as
/// the API server defaults it).
fn container_requests(c: &Container) -> Resources {
    let mut r = Resources::default();
    let Some(res) = &c.resources else {
        return r;
    };
    if let Some(limits) = &res.limits {
        for (k, q) in limits {
            r.set(k, &q.0);
        }
    }
    if let Some(requests) = &res.requests {
        for (k, q) in requests {
            r.set(k, &q.0);
        }
    }
    r
}

/// The pod's effective requests as Kubernetes computes them: the larger of the app
/// containers (plus restartable init containers, "sidecars", which keep running) and each
/// init container in turn (plus the sidecars started before it), plus the pod overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources::default();
    };
    let mut app = Resources::default();
    for c in &spec.containers {
        app.add(&container_requests(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            init_max.max(&sidecars);
        } else {
            let mut during = sidecars.clone();
            during.add(&r);
            init_max.max(&during);
        }
    }
    app.add(&sidecars);
    app.max(&init_max);
    if let Some(overhead) = &spec.overhead {
        app.add(&Resources::from_list(overhead));
    }
    app
}

/// A host port a pod claims on its node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// The host IP it binds ("0.0.0.0" for all).
    pub ip: String,
    /// The port.
    pub port: i32,
}

impl HostPort {
    fn conflicts(&self, o: &HostPort) -> bool {
        let any = |ip: &str| ip == "0.0.0.0" || ip == "::";
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip == o.ip || any(&self.ip) || any(&o.ip))
    }
}

/// What the scheduler needs to know about a pod, computed once per pod.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    /// `namespace/name`.
    pub key: String,
    /// The pod's uid (ties between equal nodes are broken by it).
    pub uid: String,
    /// Effective requests.
    pub requests: Resources,
    /// CPU and memory with kube-scheduler's defaults for what is not requested (scoring).
    pub nonzero_cpu: i64,
    /// See `nonzero_cpu`.
    pub nonzero_memory: i64,
    /// Host ports claimed.
    pub host_ports: Vec<HostPort>,
    /// The uid of the controlling owner (ReplicaSet, Job…), for spreading.
    pub owner: Option<String>,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// spec.nodeSelector.
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity.
    pub required_affinity: Option<NodeSelector>,
    /// spec.priority (0 when unset).
    pub priority: i32,
}

impl PodInfo {
    /// Extracts the scheduling facts of `pod`.
    pub fn new(pod: &Pod) -> PodInfo {
        let requests = pod_requests(pod);
        let spec = pod.spec.as_ref();
        let nonzero = |v: i64, d: i64| if v == 0 { d } else { v };
        let mut host_ports = Vec::new();
        if let Some(spec) = spec {
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            for c in spec.containers.iter().chain(sidecars) {
                for p in c.ports.iter().flatten() {
                    if let Some(port) = p.host_port.filter(|p| *p > 0) {
                        host_ports.push(HostPort {
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            ip: p
                                .host_ip
                                .clone()
                                .filter(|s| !s.is_empty())
                                .unwrap_or_else(|| "0.0.0.0".into()),
                            port,
                        });
                    }
                }
            }
        }
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        PodInfo {
            key: format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            ),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            nonzero_cpu: nonzero(requests.milli_cpu, DEFAULT_MILLI_CPU_REQUEST),
            nonzero_memory: nonzero(requests.memory, DEFAULT_MEMORY_REQUEST),
            requests,
            host_ports,
            owner,
            tolerations: spec.and_then(|s| s.tolerations.clone()).unwrap_or_default(),
            node_selector: spec
                .and_then(|s| s.node_selector.clone())
                .unwrap_or_default(),
            required_affinity: spec
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|n| {
                    n.required_during_scheduling_ignored_during_execution
                        .clone()
                }),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
        }
    }
}

/// Whether a pod occupies its node's resources: bound and not finished.
pub fn occupies_node(pod: &Pod) -> bool {
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    bound && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// A node and what the pods on it use: the scheduler's view of one node.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Taints, including the condition taint for a node that is not Ready.
    pub taints: Vec<Taint>,
    /// spec.unschedulable (cordoned).
    pub unschedulable: bool,
    /// status.allocatable (capacity when unset).
    pub allocatable: Resources,
    /// Sum of the requests of the pods on the node.
    pub requested: Resources,
    /// Sum of the non-zero CPU requests (scoring).
    pub nonzero_cpu: i64,
    /// Sum of the non-zero memory requests (scoring).
    pub nonzero_memory: i64,
    /// Number of pods on the node.
    pub pod_count: i64,
    /// Host ports in use.
    pub host_ports: Vec<HostPort>,
    /// Pods per controlling owner uid.
    pub owners: HashMap<String, u32>,
}

/// Taint key of a node that is not Ready (Ready=False).
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint key of a node whose Ready condition is Unknown.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint key of a cordoned node.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

impl NodeInfo {
    /// The node alone, without pods. A node whose Ready condition is not True gets the
    /// NoSchedule taint the node lifecycle controller puts on such nodes
    /// (`node.kubernetes.io/not-ready` or `…/unreachable`) if it does not carry it yet, so
    /// tolerations of those taints apply as in Kubernetes.
    pub fn new(node: &Node) -> NodeInfo {
        let status = node.status.as_ref();
        let list = status
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .map(Resources::from_list)
            .unwrap_or_default();
        let mut taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_str());
        let condition_taint = match ready {
            Some("True") => None,
            Some("False") => Some(TAINT_NOT_READY),
            Some(_) => Some(TAINT_UNREACHABLE),
            None => Some(TAINT_NOT_READY),
        };
        if let Some(key) = condition_taint
            && !taints
                .iter()
                .any(|t| t.key == key && t.effect == "NoSchedule")
        {
            taints.push(Taint {
                key: key.into(),
                effect: "NoSchedule".into(),
                value: None,
                time_added: None,
            });
        }
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints,
            unschedulable: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            allocatable: list,
            ..NodeInfo::default()
        }
    }

    /// The same node facts as `other` (labels, taints, allocatable, cordon), ignoring pods.
    pub fn same_node_facts(&self, other: &NodeInfo) -> bool {
        self.labels == other.labels
            && self.taints == other.taints
            && self.unschedulable == other.unschedulable
            && self.allocatable == other.allocatable
    }

    /// Keeps the pods of `old` (a node update does not change what runs on it).
    pub fn take_pods_from(&mut self, old: NodeInfo) {
        self.requested = old.requested;
        self.nonzero_cpu = old.nonzero_cpu;
        self.nonzero_memory = old.nonzero_memory;
        self.pod_count = old.pod_count;
        self.host_ports = old.host_ports;
        self.owners = old.owners;
    }

    /// Accounts a pod on this node.
    pub fn add_pod(&mut self, pod: &PodInfo) {
        self.requested.add(&pod.requests);
        self.nonzero_cpu += pod.nonzero_cpu;
        self.nonzero_memory += pod.nonzero_memory;
        self.pod_count += 1;
        self.host_ports.extend(pod.host_ports.iter().cloned());
        if let Some(o) = &pod.owner {
            *self.owners.entry(o.clone()).or_default() += 1;
        }
    }

    /// Removes a pod accounted by `add_pod`.
    pub fn remove_pod(&mut self, pod: &PodInfo) {
        self.requested.sub(&pod.requests);
        self.nonzero_cpu -= pod.nonzero_cpu;
        self.nonzero_memory -= pod.nonzero_memory;
        self.pod_count -= 1;
        for p in &pod.host_ports {
            if let Some(i) = self.host_ports.iter().position(|h| h == p) {
                self.host_ports.swap_remove(i);
            }
        }
        if let Some(o) = &pod.owner
            && let Some(n) = self.owners.get_mut(o)
        {
            *n -= 1;
            if *n == 0 {
                self.owners.remove(o);
            }
        }
    }
}

/// Whether `t` tolerates `taint` (`Toleration.ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty())
        && e != taint.effect
    {
        return false;
    }
    if let Some(k) = t.key.as_deref().filter(|k| !k.is_empty())
        && k != taint.key
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value.and_then(int), values) else {
                return false;
            };
            let Some(b) = int(bound) else {
                return false;
            };
            if r.operator == "Gt" { v > b } else { v < b }
        }
        _ => false,
    }
}

/// Whether the node matches a required node selector: any term, each term all its
/// expressions (labels) and fields (`metadata.name`); an empty term matches nothing.
pub fn node_selector_matches(sel: &NodeSelector, node: &NodeInfo) -> bool {
    sel.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        if exprs.is_empty() && fields.is_empty() {
            return false;
        }
        exprs
            .iter()
            .all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)))
            && fields.iter().all(|r| {
                r.key == "metadata.name"
                    && matches!(r.operator.as_str(), "In" | "NotIn")
                    && requirement_matches(r, Some(&node.name))
            })
    })
}

/// Reasons a node does not fit, in kube-scheduler's words.
pub mod reason {
    /// NodeUnschedulable.
    pub const UNSCHEDULABLE: &str = "node(s) were unschedulable";
    /// NodeAffinity (nodeSelector and required affinity).
    pub const AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
    /// NodePorts.
    pub const PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
    /// NodeResourcesFit, pod count.
    pub const TOO_MANY_PODS: &str = "Too many pods";
}

/// Why a pod fits nowhere: each node's reasons, counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    /// Nodes considered.
    pub num_nodes: usize,
    /// Reason → number of nodes that gave it.
    pub reasons: BTreeMap<String, usize>,
}

impl std::fmt::Display for FitError {
    /// kube-scheduler's wording: `0/3 nodes are available: 1 node(s) had untolerated taint
    /// {k: v}, 2 Insufficient cpu.`, the "count reason" strings sorted as strings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.num_nodes == 0 {
            return write!(f, "no nodes available to schedule pods");
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        write!(f, "0/{} nodes are available:", self.num_nodes)?;
        if !parts.is_empty() {
            write!(f, " {}.", parts.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for FitError {}

/// The filters in kube-scheduler's order; the first that fails gives the node's reasons
/// (resources may give several). Empty when the node fits.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Vec<String> {
    // NodeUnschedulable
    if node.unschedulable {
        let cordon = Taint {
            key: TAINT_UNSCHEDULABLE.into(),
            effect: "NoSchedule".into(),
            value: None,
            time_added: None,
        };
        if !pod.tolerations.iter().any(|t| tolerates(t, &cordon)) {
            return vec![reason::UNSCHEDULABLE.into()];
        }
    }
    // TaintToleration
    if let Some(t) = node.taints.iter().find(|t| {
        matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
            && !pod.tolerations.iter().any(|tol| tolerates(tol, t))
    }) {
        return vec![format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or("")
        )];
    }
    // NodeAffinity
    let selector_ok = pod
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    let affinity_ok = pod
        .required_affinity
        .as_ref()
        .is_none_or(|sel| node_selector_matches(sel, node));
    if !(selector_ok && affinity_ok) {
        return vec![reason::AFFINITY.into()];
    }
    // NodePorts
    if pod
        .host_ports
        .iter()
        .any(|p| node.host_ports.iter().any(|u| u.conflicts(p)))
    {
        return vec![reason::PORTS.into()];
    }
    // NodeResourcesFit
    let mut out = Vec::new();
    if node.pod_count + 1 > node.allocatable.pods {
        out.push(reason::TOO_MANY_PODS.to_string());
    }
    let req = &pod.requests;
    if req.is_zero() {
        return out;
    }
    let free = |alloc: i64, used: i64| alloc - used;
    if req.milli_cpu > 0
        && req.milli_cpu > free(node.allocatable.milli_cpu, node.requested.milli_cpu)
    {
        out.push("Insufficient cpu".into());
    }
    if req.memory > 0 && req.memory > free(node.allocatable.memory, node.requested.memory) {
        out.push("Insufficient memory".into());
    }
    if req.ephemeral_storage > 0
        && req.ephemeral_storage
            > free(
                node.allocatable.ephemeral_storage,
                node.requested.ephemeral_storage,
            )
    {
        out.push("Insufficient ephemeral-storage".into());
    }
    for (name, want) in &req.scalar {
        let alloc = node.allocatable.scalar.get(name).copied().unwrap_or(0);
        let used = node.requested.scalar.get(name).copied().unwrap_or(0);
        if *want > 0 && *want > free(alloc, used) {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

/// NodeResourcesFit (LeastAllocated) and NodeResourcesBalancedAllocation on cpu and memory,
/// weighted, with the pod placed on the node.
fn resource_score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let frac = |req: i64, cap: i64| -> (i64, f64) {
        if cap <= 0 || req > cap {
            return (0, 1.0);
        }
        ((cap - req) * MAX_SCORE / cap, req as f64 / cap as f64)
    };
    let (cpu, fc) = frac(
        node.nonzero_cpu + pod.nonzero_cpu,
        node.allocatable.milli_cpu,
    );
    let (mem, fm) = frac(
        node.nonzero_memory + pod.nonzero_memory,
        node.allocatable.memory,
    );
    let least = (cpu + mem) / 2;
    // standard deviation of two fractions is half their distance
    let balanced = ((1.0 - (fc - fm).abs() / 2.0) * MAX_SCORE as f64) as i64;
    least * WEIGHT_LEAST_ALLOCATED + balanced * WEIGHT_BALANCED
}

fn prefer_no_schedule_count(pod: &PodInfo, node: &NodeInfo) -> i64 {
    node.taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| {
            !pod.tolerations.iter().any(|tol| {
                tol.effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
                    && tolerates(tol, t)
            })
        })
        .count() as i64
}

/// FNV-1a of the pod uid and node name: a deterministic stand-in for kube-scheduler's
/// random choice among the best nodes.
fn tie_break(pod: &PodInfo, node: &NodeInfo) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pod
        .uid
        .bytes()
        .chain(std::iter::once(0))
        .chain(node.name.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

struct Feasible {
    index: usize,
    resources: i64,
    prefer_no_schedule: i64,
    same_owner: i64,
}

/// Chooses a node for `pod` among `nodes` (index into `nodes`), or says why none fits.
pub fn schedule(pod: &PodInfo, nodes: &[NodeInfo]) -> Result<usize, FitError> {
    let mut feasible = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (index, node) in nodes.iter().enumerate() {
        let why = filter(pod, node);
        if why.is_empty() {
            feasible.push(Feasible {
                index,
                resources: resource_score(pod, node),
                prefer_no_schedule: prefer_no_schedule_count(pod, node),
                same_owner: pod
                    .owner
                    .as_ref()
                    .and_then(|o| node.owners.get(o))
                    .map_or(0, |n| i64::from(*n)),
            });
        } else {
            for r in why {
                *reasons.entry(r).or_default() += 1;
            }
        }
    }
    if feasible.is_empty() {
        return Err(FitError {
            num_nodes: nodes.len(),
            reasons,
        });
    }
    let max_taints = feasible.iter().map(|f| f.prefer_no_schedule).max();
    let max_owner = feasible.iter().map(|f| f.same_owner).max();
    // lower is better when normalising (TaintToleration, spreading): 100 × (1 − v/max)
    let reverse = |v: i64, max: Option<i64>| match max {
        Some(m) if m > 0 => MAX_SCORE - v * MAX_SCORE / m,
        _ => MAX_SCORE,
    };
    let best = feasible
        .iter()
        .map(|f| {
            let score = f.resources
                + reverse(f.prefer_no_schedule, max_taints) * WEIGHT_TAINTS
                + reverse(f.same_owner, max_owner) * WEIGHT_SPREAD;
            (
                score,
                std::cmp::Reverse(tie_break(pod, &nodes[f.index])),
                f.index,
            )
        })
        .max()
        .map(|(_, _, i)| i);
    best.ok_or(FitError {
        num_nodes: nodes.len(),
        reasons: BTreeMap::new(),
    })
}

/// The node names as `nodes` and the pods bound to them (and not finished) give them: the
/// snapshot `schedule` works on.
pub fn snapshot(nodes: &[Node], bound: &[Pod]) -> Vec<NodeInfo> {
    let mut infos: Vec<NodeInfo> = nodes.iter().map(NodeInfo::new).collect();
    let index: HashMap<String, usize> = infos
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    for p in bound.iter().filter(|p| occupies_node(p)) {
        let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
        if let Some(&i) = node.and_then(|n| index.get(n)) {
            infos[i].add_pod(&PodInfo::new(p));
        }
    }
    infos
}

/// The node for `pod` given the cluster's `nodes` and `bound` pods.
pub fn choose_node(pod: &Pod, nodes: &[Node], bound: &[Pod]) -> Result<String, FitError> {
    let infos = snapshot(nodes, bound);
    schedule(&PodInfo::new(pod), &infos).map(|i| infos[i].name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn node(name: &str, extra: Value) -> Node {
        let mut n = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        });
        merge(&mut n, extra);
        serde_json::from_value(n).unwrap()
    }

    fn pod(name: &str, extra: Value) -> Pod {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        });
        merge(&mut p, extra);
        serde_json::from_value(p).unwrap()
    }

    fn cpu_pod(name: &str, cpu: &str) -> Pod {
        pod(
            name,
            json!({"spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": cpu}}}]}}),
        )
    }

    fn bound(mut p: Pod, node: &str) -> Pod {
        p.spec.as_mut().unwrap().node_name = Some(node.into());
        p
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    #[test]
    fn quantities() {
        let cases = [
            ("1", Some(1000)),
            ("100m", Some(100)),
            ("0.5", Some(500)),
            ("1.5k", Some(1_500_000)),
            ("1Ki", Some(1_024_000)),
            ("1Gi", Some(1_073_741_824_000)),
            ("2e3", Some(2_000_000)),
            ("1n", Some(1)),
            ("-1", Some(-1000)),
            ("x", None),
            ("1Q", None),
            ("", None),
        ];
        for (q, want) in cases {
            assert_eq!(milli_value(q), want, "{q}");
        }
        assert_eq!(value("1Mi"), Some(1 << 20));
        assert_eq!(value("1500m"), Some(2));
    }

    #[test]
    fn effective_requests_take_init_containers_and_sidecars_into_account() {
        let c = |name: &str, cpu: &str, restart: Option<&str>| {
            let mut v = json!({"name": name, "image": "i",
                "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}});
            if let Some(r) = restart {
                v["restartPolicy"] = json!(r);
            }
            v
        };
        let cases: Vec<(&str, Value, i64, i64)> = vec![
            (
                "containers add up",
                json!({"containers": [c("a", "1", None), c("b", "2", None)]}),
                3000,
                2 << 30,
            ),
            (
                "an init container larger than the app",
                json!({
                "containers": [c("a", "1", None)],
                "initContainers": [c("i", "3", None)]}),
                3000,
                1 << 30,
            ),
            (
                "sidecars run beside the app and later init containers",
                json!({
                "containers": [c("a", "1", None)],
                "initContainers": [c("s", "1", Some("Always")), c("i", "3", None)]}),
                4000,
                2 << 30,
            ),
            (
                "limits stand for missing requests",
                json!({
                "containers": [{"name": "a", "image": "i", "resources": {"limits": {"cpu": "500m"}}}]}),
                500,
                0,
            ),
            (
                "overhead is added",
                json!({
                "containers": [c("a", "1", None)], "overhead": {"cpu": "250m"}}),
                1250,
                1 << 30,
            ),
        ];
        for (what, spec, cpu, mem) in cases {
            let p = pod("p", json!({"spec": spec}));
            let r = pod_requests(&p);
            assert_eq!((r.milli_cpu, r.memory), (cpu, mem), "{what}");
        }
    }

    #[test]
    fn tolerations() {
        let taint = |k: &str, v: Option<&str>, e: &str| Taint {
            key: k.into(),
            value: v.map(Into::into),
            effect: e.into(),
            time_added: None,
        };
        let tol = |v: Value| -> Toleration { serde_json::from_value(v).unwrap() };
        let cases = [
            (
                "equal key and value",
                tol(json!({"key": "k", "value": "v", "effect": "NoSchedule"})),
                taint("k", Some("v"), "NoSchedule"),
                true,
            ),
            (
                "other value",
                tol(json!({"key": "k", "value": "w"})),
                taint("k", Some("v"), "NoSchedule"),
                false,
            ),
            (
                "exists on key",
                tol(json!({"key": "k", "operator": "Exists"})),
                taint("k", Some("v"), "NoExecute"),
                true,
            ),
            (
                "other effect",
                tol(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})),
                taint("k", None, "NoSchedule"),
                false,
            ),
            (
                "empty key exists tolerates all",
                tol(json!({"operator": "Exists"})),
                taint("any", Some("x"), "NoSchedule"),
                true,
            ),
            (
                "other key",
                tol(json!({"key": "j", "operator": "Exists"})),
                taint("k", None, "NoSchedule"),
                false,
            ),
            (
                "equal with empty value",
                tol(json!({"key": "k", "operator": "Equal"})),
                taint("k", None, "NoSchedule"),
                true,
            ),
        ];
        for (what, t, taint, want) in cases {
            assert_eq!(tolerates(&t, &taint), want, "{what}");
        }
    }

    /// One row: pod, nodes, bound pods, and the node chosen or the exact message.
    struct Case {
        what: &'static str,
        pod: Pod,
        nodes: Vec<Node>,
        bound: Vec<Pod>,
        want: Result<&'static str, &'static str>,
    }

    fn run(cases: Vec<Case>) {
        for c in cases {
            let got = choose_node(&c.pod, &c.nodes, &c.bound).map_err(|e| e.to_string());
            let got = got.as_ref().map(String::as_str).map_err(String::as_str);
            assert_eq!(got, c.want, "{}", c.what);
        }
    }

    #[test]
    fn filters() {
        let taint = |k: &str, v: &str, e: &str| json!({"spec": {"taints": [{"key": k, "value": v, "effect": e}]}});
        let affinity = |exprs: Value| {
            json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [exprs]}}}}})
        };
        let labelled =
            |name: &str, k: &str, v: &str| node(name, json!({"metadata": {"labels": {k: v}}}));
        let port_pod = |name: &str, port: i32, ip: Option<&str>| {
            let mut p = json!({"containerPort": 80, "hostPort": port});
            if let Some(ip) = ip {
                p["hostIP"] = json!(ip);
            }
            pod(
                name,
                json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [p]}]}}),
            )
        };
        run(vec![
            Case {
                what: "cordoned node is skipped",
                pod: pod("p", json!({})),
                nodes: vec![
                    node("a", json!({"spec": {"unschedulable": true}})),
                    node("b", json!({})),
                ],
                bound: vec![],
                want: Ok("b"),
            },
            Case {
                what: "cordoned everywhere",
                pod: pod("p", json!({})),
                nodes: vec![node("a", json!({"spec": {"unschedulable": true}}))],
                bound: vec![],
                want: Err("0/1 nodes are available: 1 node(s) were unschedulable."),
            },
            Case {
                what: "a pod tolerating the unschedulable taint goes to a cordoned node",
                pod: pod(
                    "p",
                    json!({"spec": {"tolerations": [{"key": TAINT_UNSCHEDULABLE, "operator": "Exists"}]}}),
                ),
                nodes: vec![node("a", json!({"spec": {"unschedulable": true}}))],
                bound: vec![],
                want: Ok("a"),
            },
            Case {
                what: "not-ready and unknown nodes carry their condition taints",
                pod: pod("p", json!({})),
                nodes: vec![
                    node(
                        "a",
                        json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
                    ),
                    node(
                        "b",
                        json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
                    ),
                ],
                bound: vec![],
                want: Err(
                    "0/2 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }.",
                ),
            },
            Case {
                what: "NoSchedule taint and a tolerating pod",
                pod: pod(
                    "p",
                    json!({"spec": {"tolerations": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
                ),
                nodes: vec![node("a", taint("dedicated", "db", "NoSchedule"))],
                bound: vec![],
                want: Ok("a"),
            },
            Case {
                what: "NoExecute taint filters",
                pod: pod("p", json!({})),
                nodes: vec![
                    node("a", taint("dedicated", "db", "NoExecute")),
                    node("b", json!({})),
                ],
                bound: vec![],
                want: Ok("b"),
            },
            Case {
                what: "PreferNoSchedule only scores",
                pod: pod("p", json!({})),
                nodes: vec![node("a", taint("soft", "x", "PreferNoSchedule"))],
                bound: vec![],
                want: Ok("a"),
            },
            Case {
                what: "PreferNoSchedule loses against an untainted node",
                pod: pod("p", json!({})),
                nodes: vec![
                    node("a", taint("soft", "x", "PreferNoSchedule")),
                    node("b", json!({})),
                ],
                bound: vec![],
                want: Ok("b"),
            },
            Case {
                what: "nodeSelector",
                pod: pod("p", json!({"spec": {"nodeSelector": {"disk": "ssd"}}})),
                nodes: vec![labelled("a", "disk", "hdd"), labelled("b", "disk", "ssd")],
                bound: vec![],
                want: Ok("b"),
            },
            Case {
                what: "nodeSelector matching nothing",
                pod: pod("p", json!({"spec": {"nodeSelector": {"disk": "nvme"}}})),
                nodes: vec![labelled("a", "disk", "hdd"), labelled("b", "disk", "ssd")],
                bound: vec![],
                want: Err(
                    "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.",
                ),
            },
            Case {
                what: "affinity In",
                pod: pod(
                    "p",
                    affinity(
                        json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z2", "z3"]}]}),
                    ),
                ),
                nodes: vec![labelled("a", "zone", "z1"), labelled("b", "zone", "z2")],
                bound: vec![],
                want: Ok("b"),
            },
            Case {
                what: "affinity NotIn also matches nodes without the label",
                pod: pod(
                    "p",
                    affinity(
                        json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["z1"]}]}),
                    ),
                ),
                nodes: vec![labelled("a", "zone", "z1"), node("b", json!({}))],
                bound: vec![],
                want: Ok("b"),
            },
            Case {
                what: "affinity Exists",
                pod: pod(
                    "p",
                    affinity(json!({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]})),
                ),
                nodes: vec![node("a", json!({})), labelled("b", "gpu", "")],
                bound: vec![],
                want: Ok("b"),
            },
            Case {
                what: "affinity DoesNotExist",
                pod: pod(
                    "p",
                    affinity(
                        json!({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}),
                    ),
                ),
                nodes: vec![labelled("a", "gpu", "1"), node("b", json!({}))],
                bound: vec![],
                want: Ok("b"),
            },
            Case {
                what: "affinity Gt",
                pod: pod(
                    "p",
                    affinity(
                        json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]}),
                    ),
                ),
                nodes: vec![
                    labelled("a", "cores", "8"),
                    labelled("b", "cores", "16"),
                    labelled("c", "cores", "x"),
                ],
                bound: vec![],
                want: Ok("b"),
            },
            Case {
                what: "affinity Lt",
                pod: pod(
                    "p",
                    affinity(
                        json!({"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["8"]}]}),
                    ),
                ),
                nodes: vec![labelled("a", "cores", "8"), labelled("b", "cores", "4")],
                bound: vec![],
                want: Ok("b"),
            },
            Case {
                what: "matchFields metadata.name",
                pod: pod(
                    "p",
                    affinity(
                        json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["c"]}]}),
                    ),
                ),
                nodes: vec![
                    node("a", json!({})),
                    node("b", json!({})),
                    node("c", json!({})),
                ],
                bound: vec![],
                want: Ok("c"),
            },
            Case {
                what: "an empty term matches nothing",
                pod: pod("p", affinity(json!({}))),
                nodes: vec![node("a", json!({}))],
                bound: vec![],
                want: Err(
                    "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.",
                ),
            },
            Case {
                what: "host port in use",
                pod: port_pod("p", 8080, None),
                nodes: vec![node("a", json!({})), node("b", json!({}))],
                bound: vec![bound(port_pod("q", 8080, Some("10.0.0.1")), "a")],
                want: Ok("b"),
            },
            Case {
                what: "host ports on different IPs do not conflict",
                pod: port_pod("p", 8080, Some("10.0.0.2")),
                nodes: vec![node("a", json!({}))],
                bound: vec![bound(port_pod("q", 8080, Some("10.0.0.1")), "a")],
                want: Ok("a"),
            },
            Case {
                what: "host port taken everywhere",
                pod: port_pod("p", 8080, None),
                nodes: vec![node("a", json!({}))],
                bound: vec![bound(port_pod("q", 8080, None), "a")],
                want: Err(
                    "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports.",
                ),
            },
            Case {
                what: "cpu: allocatable minus bound pods",
                pod: cpu_pod("p", "2"),
                nodes: vec![node("a", json!({})), node("b", json!({}))],
                bound: vec![bound(cpu_pod("q", "3"), "a")],
                want: Ok("b"),
            },
            Case {
                what: "finished pods free their resources",
                pod: cpu_pod("p", "2"),
                nodes: vec![node("a", json!({}))],
                bound: vec![{
                    let mut q = bound(cpu_pod("q", "3"), "a");
                    q.status = serde_json::from_value(json!({"phase": "Succeeded"})).unwrap();
                    q
                }],
                want: Ok("a"),
            },
            Case {
                what: "too big for every node",
                pod: cpu_pod("p", "5"),
                nodes: vec![
                    node("a", json!({})),
                    node("b", json!({})),
                    node("c", json!({})),
                ],
                bound: vec![],
                want: Err("0/3 nodes are available: 3 Insufficient cpu."),
            },
            Case {
                what: "several resources short on one node",
                pod: pod(
                    "p",
                    json!({"spec": {"containers": [{"name": "c", "image": "i",
                    "resources": {"requests": {"cpu": "5", "memory": "9Gi", "example.com/gpu": "1"}}}]}}),
                ),
                nodes: vec![node("a", json!({}))],
                bound: vec![],
                want: Err(
                    "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient example.com/gpu, 1 Insufficient memory.",
                ),
            },
            Case {
                what: "pod count",
                pod: pod("p", json!({})),
                nodes: vec![node("a", json!({"status": {"allocatable": {"pods": "1"}}}))],
                bound: vec![bound(pod("q", json!({})), "a")],
                want: Err("0/1 nodes are available: 1 Too many pods."),
            },
            Case {
                what: "mixed reasons sorted as kube-scheduler sorts them",
                pod: cpu_pod("p", "3"),
                nodes: vec![
                    node("a", json!({})),
                    node("b", json!({})),
                    node("c", taint(TAINT_UNREACHABLE, "", "NoExecute")),
                ],
                bound: vec![bound(cpu_pod("q", "2"), "a"), bound(cpu_pod("r", "2"), "b")],
                want: Err(
                    "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 2 Insufficient cpu.",
                ),
            },
            Case {
                what: "no nodes",
                pod: pod("p", json!({})),
                nodes: vec![],
                bound: vec![],
                want: Err("no nodes available to schedule pods"),
            },
        ]);
    }

    #[test]
    fn scores() {
        let owned = |name: &str, owner: &str| {
            pod(
                name,
                json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": owner, "uid": owner, "controller": true}]}}),
            )
        };
        run(vec![
            Case {
                what: "least allocated",
                pod: cpu_pod("p", "1"),
                nodes: vec![node("a", json!({})), node("b", json!({}))],
                bound: vec![bound(cpu_pod("q", "2"), "a")],
                want: Ok("b"),
            },
            Case {
                what: "a larger node is less allocated",
                pod: cpu_pod("p", "1"),
                nodes: vec![
                    node("a", json!({})),
                    node(
                        "b",
                        json!({"status": {"allocatable": {"cpu": "16", "memory": "32Gi"}}}),
                    ),
                ],
                bound: vec![],
                want: Ok("b"),
            },
            Case {
                what: "pods of one owner spread over nodes",
                pod: owned("p", "rs1"),
                nodes: vec![node("a", json!({})), node("b", json!({}))],
                // node b is busier but a already runs two of the owner's pods
                bound: vec![
                    bound(owned("q", "rs1"), "a"),
                    bound(owned("r", "rs1"), "a"),
                    bound(cpu_pod("s", "1"), "b"),
                ],
                want: Ok("b"),
            },
        ]);
    }

    #[test]
    fn repeated_choices_spread_and_never_overcommit() {
        let nodes: Vec<NodeInfo> = ["a", "b", "c"]
            .iter()
            .map(|n| NodeInfo::new(&node(n, json!({}))))
            .collect();
        let mut nodes = nodes;
        let mut placed = 0;
        for i in 0..20 {
            let p = PodInfo::new(&cpu_pod(&format!("p{i}"), "1"));
            match schedule(&p, &nodes) {
                Ok(idx) => {
                    nodes[idx].add_pod(&p);
                    placed += 1;
                }
                Err(e) => assert_eq!(
                    e.to_string(),
                    "0/3 nodes are available: 3 Insufficient cpu."
                ),
            }
        }
        assert_eq!(placed, 12);
        assert!(nodes.iter().all(|n| n.requested.milli_cpu == 4000));
        let p = PodInfo::new(&cpu_pod("p0", "1"));
        nodes[0].remove_pod(&p);
        assert_eq!(schedule(&p, &nodes), Ok(0));
    }
}

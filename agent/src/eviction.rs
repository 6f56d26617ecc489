//! Node-pressure eviction, as the kubelet's eviction manager: hard and soft thresholds over
//! the signals `memory.available`, `nodefs.available`, `nodefs.inodesFree`,
//! `imagefs.available` and `imagefs.inodesFree`; the MemoryPressure and DiskPressure
//! conditions (held for the pressure transition period); reclaim (unused images) before
//! eviction, and on until the signal is back above its threshold plus its minimum reclaim
//! (`--eviction-minimum-reclaim`); pods ranked as the kubelet ranks them and evicted one per pass; admission of
//! new pods under pressure.
//!
//! The thresholds, their evaluation, the ranking, the messages and admission are pure
//! functions with table-driven tests; [`Manager`] is the thin shell that measures the node
//! and the pods and asks the pod workers to evict.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

/// Errors of the eviction flags.
#[derive(Debug, thiserror::Error)]
pub enum EvictionError {
    /// A threshold is not `signal<quantity` or `signal<percent%`.
    #[error("invalid eviction threshold {0:?}: want signal<quantity or signal<percent%")]
    Threshold(String),
    /// An unknown signal name.
    #[error("unknown eviction signal {0:?}")]
    Signal(String),
    /// A grace period entry is not `signal=duration`.
    #[error("invalid eviction grace period {0:?}: want signal=duration")]
    Grace(String),
    /// A soft threshold without a grace period.
    #[error("soft eviction threshold {0} has no grace period")]
    NoGrace(&'static str),
    /// A minimum reclaim entry is not `signal=quantity` or `signal=percent%`.
    #[error("invalid eviction minimum reclaim {0:?}: want signal=quantity or signal=percent%")]
    MinimumReclaim(String),
}

/// An eviction signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// `memory.available`: MemTotal less the node's working set.
    MemoryAvailable,
    /// `nodefs.available`: free bytes of the root dir's file system.
    NodeFsAvailable,
    /// `nodefs.inodesFree`: free inodes there.
    NodeFsInodesFree,
    /// `imagefs.available`: free bytes of the image store's file system.
    ImageFsAvailable,
    /// `imagefs.inodesFree`: free inodes there.
    ImageFsInodesFree,
}

impl Signal {
    const ALL: [Signal; 5] = [
        Signal::MemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
    ];

    /// The kubelet's name of the signal.
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
        }
    }

    fn parse(s: &str) -> Result<Signal, EvictionError> {
        Signal::ALL
            .into_iter()
            .find(|g| g.name() == s)
            .ok_or_else(|| EvictionError::Signal(s.to_string()))
    }

    /// The resource the signal reclaims, as the kubelet names it in its messages.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => "ephemeral-storage",
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => "inodes",
        }
    }

    /// The node condition the signal drives.
    pub fn condition(self) -> Condition {
        match self {
            Signal::MemoryAvailable => Condition::MemoryPressure,
            _ => Condition::DiskPressure,
        }
    }
}

/// A pressure condition of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Condition {
    /// `MemoryPressure`.
    MemoryPressure,
    /// `DiskPressure`.
    DiskPressure,
}

impl Condition {
    /// The condition type's name.
    pub fn name(self) -> &'static str {
        match self {
            Condition::MemoryPressure => "MemoryPressure",
            Condition::DiskPressure => "DiskPressure",
        }
    }
}

/// A threshold's value: an absolute quantity or a share of the capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Bytes (or inodes).
    Quantity(u64),
    /// A fraction of the capacity (0.1 for `10%`).
    Percentage(f64),
}

/// One eviction threshold: `signal < value`, hard (grace zero) or soft.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// The signal.
    pub signal: Signal,
    /// Met when the signal's observed value is below this.
    pub value: Value,
    /// Soft thresholds must be met this long before pods are evicted; zero for hard ones.
    pub grace: Duration,
    /// Hard threshold (containers are killed with grace 0).
    pub hard: bool,
    /// Once met, the threshold stays met until the signal is at least this much above it
    /// (`--eviction-minimum-reclaim`; zero when unset).
    pub min_reclaim: Value,
}

/// The kubelet's default `--eviction-hard`.
pub const DEFAULT_HARD: &str =
    "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%";

/// Parses a threshold list (`memory.available<100Mi,nodefs.available<10%`); an empty
/// string is no threshold.
pub fn parse_thresholds(s: &str) -> Result<Vec<(Signal, Value)>, EvictionError> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (sig, val) = t
                .split_once('<')
                .ok_or_else(|| EvictionError::Threshold(t.to_string()))?;
            let signal = Signal::parse(sig.trim())?;
            let value =
                parse_value(val.trim()).ok_or_else(|| EvictionError::Threshold(t.to_string()))?;
            Ok((signal, value))
        })
        .collect()
}

/// A quantity (`100Mi`) or a percentage of the capacity (`10%`).
fn parse_value(val: &str) -> Option<Value> {
    match val.strip_suffix('%') {
        Some(p) => match p.parse::<f64>() {
            Ok(p) if (0.0..=100.0).contains(&p) => Some(Value::Percentage(p / 100.0)),
            _ => None,
        },
        None => {
            let q = k8s_openapi::apimachinery::pkg::api::resource::Quantity(val.into());
            match crate::qos::parse_quantity(&q) {
                Some(v) if v >= 0.0 && v.is_finite() => Some(Value::Quantity(v.ceil() as u64)),
                _ => None,
            }
        }
    }
}

/// Parses `--eviction-minimum-reclaim` (`memory.available=0Mi,nodefs.available=500Mi`,
/// percentages of the capacity allowed as in the thresholds).
pub fn parse_minimum_reclaims(s: &str) -> Result<BTreeMap<Signal, Value>, EvictionError> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let bad = || EvictionError::MinimumReclaim(t.to_string());
            let (sig, val) = t.split_once('=').ok_or_else(bad)?;
            let value = parse_value(val.trim()).ok_or_else(bad)?;
            Ok((Signal::parse(sig.trim())?, value))
        })
        .collect()
}

/// Parses `--eviction-soft-grace-period` (`memory.available=1m30s,nodefs.available=2m`).
pub fn parse_grace_periods(s: &str) -> Result<BTreeMap<Signal, Duration>, EvictionError> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (sig, d) = t
                .split_once('=')
                .ok_or_else(|| EvictionError::Grace(t.to_string()))?;
            let d = parse_go_duration(d.trim()).ok_or_else(|| EvictionError::Grace(t.into()))?;
            Ok((Signal::parse(sig.trim())?, d))
        })
        .collect()
}

/// A Go duration (`1m30s`, `500ms`, `2h`, `10s`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&n| n > 0)?;
        let (num, tail) = rest.split_at(n);
        let num: f64 = num.parse().ok()?;
        let u = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(u);
        total += num
            * match unit {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return None,
            };
        rest = tail;
    }
    Some(Duration::from_secs_f64(total))
}

/// The eviction manager's settings (the kubelet's flags).
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionPolicy {
    /// Hard and soft thresholds together.
    pub thresholds: Vec<Threshold>,
    /// `--eviction-pressure-transition-period` (5m): how long a condition stays on after
    /// its last threshold was met.
    pub transition_period: Duration,
    /// How often the manager looks (the kubelet's `evictionMonitoringPeriod`, 10 s).
    pub period: Duration,
}

impl Default for EvictionPolicy {
    /// The kubelet's defaults: `DEFAULT_HARD`, transition period 5m, a pass every 10 s.
    fn default() -> Self {
        let transition_period = Duration::from_secs(300);
        let period = Duration::from_secs(10);
        EvictionPolicy::new(DEFAULT_HARD, "", "", "", transition_period, period).unwrap_or(
            EvictionPolicy {
                thresholds: Vec::new(),
                transition_period,
                period,
            },
        )
    }
}

impl EvictionPolicy {
    /// A policy from the flags' values: every soft threshold needs a grace period; a
    /// minimum reclaim applies to the hard and the soft threshold of its signal.
    pub fn new(
        hard: &str,
        soft: &str,
        soft_grace: &str,
        minimum_reclaim: &str,
        transition_period: Duration,
        period: Duration,
    ) -> Result<EvictionPolicy, EvictionError> {
        let graces = parse_grace_periods(soft_grace)?;
        let reclaims = parse_minimum_reclaims(minimum_reclaim)?;
        let min_reclaim = |s: Signal| reclaims.get(&s).copied().unwrap_or(Value::Quantity(0));
        let mut thresholds: Vec<Threshold> = parse_thresholds(hard)?
            .into_iter()
            .map(|(signal, value)| Threshold {
                signal,
                value,
                grace: Duration::ZERO,
                hard: true,
                min_reclaim: min_reclaim(signal),
            })
            .collect();
        for (signal, value) in parse_thresholds(soft)? {
            let grace = *graces
                .get(&signal)
                .ok_or(EvictionError::NoGrace(signal.name()))?;
            thresholds.push(Threshold {
                signal,
                value,
                grace,
                hard: false,
                min_reclaim: min_reclaim(signal),
            });
        }
        Ok(EvictionPolicy {
            thresholds,
            transition_period,
            period,
        })
    }
}

/// One signal's observed value and the capacity percentages refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Available bytes (or free inodes).
    pub available: u64,
    /// Capacity in the same unit.
    pub capacity: u64,
}

/// Observations by signal (a signal not observed never meets its threshold).
pub type Observations = BTreeMap<Signal, Observation>;

impl Value {
    /// The value as an amount of the signal's unit.
    pub fn quantity(self, capacity: u64) -> u64 {
        match self {
            Value::Quantity(q) => q,
            Value::Percentage(p) => (capacity as f64 * p) as u64,
        }
    }
}

impl Threshold {
    /// The threshold as an amount of the signal's unit.
    pub fn quantity(&self, capacity: u64) -> u64 {
        self.value.quantity(capacity)
    }

    /// Whether the observation is below the threshold.
    pub fn met(&self, obs: &Observations) -> bool {
        obs.get(&self.signal)
            .is_some_and(|o| o.available < self.quantity(o.capacity))
    }

    /// Whether the observation is below the threshold plus its minimum reclaim: a threshold
    /// acted on is resolved only when this no longer holds (the kubelet's
    /// `thresholdsMet(…, enforceMinReclaim=true)`).
    pub fn unresolved(&self, obs: &Observations) -> bool {
        obs.get(&self.signal).is_some_and(|o| {
            let reclaim = self.min_reclaim.quantity(o.capacity);
            o.available < self.quantity(o.capacity).saturating_add(reclaim)
        })
    }
}

/// What one evaluation decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The node's pressure conditions (held for the transition period).
    pub conditions: Vec<Condition>,
    /// Thresholds met for at least their grace period: act on these.
    pub act_on: Vec<Threshold>,
}

/// The manager's memory between evaluations: when each threshold was first seen met, each
/// condition last seen, and which thresholds were acted on last time.
#[derive(Debug, Default)]
pub struct State {
    first_met: HashMap<usize, Instant>,
    last_seen: BTreeMap<Condition, Instant>,
    acting: Vec<usize>,
}

impl State {
    /// Evaluates `policy` against `obs` at `now`, as the kubelet's `synchronize`: every
    /// threshold met now sets its condition (soft ones too); a condition stays set until
    /// none of its thresholds was met for the transition period; only thresholds met for
    /// their grace period are acted on, hard ones first, memory before disk. A threshold
    /// acted on stays met until its signal is back above threshold plus minimum reclaim.
    pub fn evaluate(
        &mut self,
        policy: &EvictionPolicy,
        obs: &Observations,
        now: Instant,
    ) -> Decision {
        let met: Vec<(usize, &Threshold)> = policy
            .thresholds
            .iter()
            .enumerate()
            .filter(|(i, t)| t.met(obs) || (self.acting.contains(i) && t.unresolved(obs)))
            .collect();
        self.first_met
            .retain(|i, _| met.iter().any(|(j, _)| j == i));
        for (i, t) in &met {
            self.first_met.entry(*i).or_insert(now);
            self.last_seen.insert(t.signal.condition(), now);
        }
        self.last_seen
            .retain(|_, at| now.saturating_duration_since(*at) < policy.transition_period);
        let acting: Vec<(usize, &Threshold)> = met
            .into_iter()
            .filter(|(i, t)| {
                self.first_met
                    .get(i)
                    .is_some_and(|at| now.saturating_duration_since(*at) >= t.grace)
            })
            .collect();
        self.acting = acting.iter().map(|(i, _)| *i).collect();
        let mut act_on: Vec<Threshold> = acting.into_iter().map(|(_, t)| *t).collect();
        act_on.sort_by_key(|t| (!t.hard, t.signal));
        Decision {
            conditions: self.last_seen.keys().copied().collect(),
            act_on,
        }
    }
}

/// A pod as the ranking sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The pod's uid.
    pub uid: String,
    /// `spec.priority` (0 when unset).
    pub priority: i32,
    /// The pod's request of the resource (sum of its containers').
    pub request: u64,
    /// What it uses of the resource.
    pub usage: u64,
}

/// Orders pods for eviction as the kubelet's `rankMemoryPressure` / `rankDiskPressureFunc`:
/// those using more than they requested first, then lower priority first, then the larger
/// use above the request first.
pub fn rank(pods: &mut [Candidate]) {
    pods.sort_by(|a, b| {
        let exceeds = |c: &Candidate| c.usage > c.request;
        exceeds(b)
            .cmp(&exceeds(a))
            .then(a.priority.cmp(&b.priority))
            .then_with(|| {
                let above = |c: &Candidate| c.usage as i128 - c.request as i128;
                above(b).cmp(&above(a))
            })
    });
}

/// A quantity as Go's `resource.Quantity` prints BinarySI amounts: the largest power of
/// 1024 that divides it exactly (`10Mi`, `1536`), plain below 1024.
pub fn format_binary(v: u64) -> String {
    if v < 1024 {
        return v.to_string();
    }
    let mut n = v;
    let mut i = 0;
    while n % 1024 == 0 && i < 6 {
        n /= 1024;
        i += 1;
    }
    let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][i];
    format!("{n}{suffix}")
}

/// One container's use of the resource, for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUse {
    /// Container name.
    pub name: String,
    /// Its use (working set, or writable layer plus logs).
    pub usage: u64,
    /// Its request of the resource.
    pub request: u64,
}

/// The evicted pod's `status.message`, as the kubelet's `evictionMessage`: `The node was
/// low on resource: R. Threshold quantity: Q, available: A. ` and one `Container c was
/// using U, request is R, has larger consumption of R. ` per container over its request.
pub fn eviction_message(t: &Threshold, obs: &Observations, containers: &[ContainerUse]) -> String {
    let resource = t.signal.resource();
    let mut m = format!("The node was low on resource: {resource}. ");
    if let Some(o) = obs.get(&t.signal) {
        m += &format!(
            "Threshold quantity: {}, available: {}. ",
            format_binary(t.quantity(o.capacity)),
            format_binary(o.available)
        );
    }
    if resource != "inodes" {
        for c in containers.iter().filter(|c| c.usage > c.request) {
            m += &format!(
                "Container {} was using {}, request is {}, has larger consumption of {resource}. ",
                c.name,
                format_binary(c.usage),
                format_binary(c.request)
            );
        }
    }
    m
}

/// Marks a computed status as the evicted pod's: phase Failed, reason Evicted, the message,
/// and the `DisruptionTarget` condition (`TerminationByKubelet`), its transition time kept
/// from `current` once there.
pub fn evicted_status(
    st: &mut k8s_openapi::api::core::v1::PodStatus,
    message: &str,
    current: Option<&k8s_openapi::api::core::v1::PodStatus>,
) {
    use k8s_openapi::api::core::v1::PodCondition;
    st.phase = Some("Failed".into());
    st.reason = Some(REASON.into());
    st.message = Some(message.into());
    let since =
        current
            .and_then(|c| c.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionTarget"))
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| {
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                )
            });
    let cond = PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("TerminationByKubelet".into()),
        message: Some(message.into()),
        last_transition_time: Some(since),
        ..Default::default()
    };
    let conds = st.conditions.get_or_insert_with(Vec::new);
    conds.retain(|c| c.type_ != "DisruptionTarget");
    conds.push(cond);
}

/// The kubelet's reason for evicted and rejected pods.
pub const REASON: &str = "Evicted";

/// The kubelet's `SystemCriticalPriority`: pods at or above it are always admitted.
const CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// Admission under pressure, as the eviction manager's `Admit`: under DiskPressure no pod
/// is admitted; under MemoryPressure BestEffort pods are refused unless they tolerate the
/// `node.kubernetes.io/memory-pressure` taint; critical pods always go. `Some((reason,
/// message))` refuses.
pub fn admit(pod: &Pod, conditions: &[Condition]) -> Option<(&'static str, String)> {
    if conditions.is_empty() {
        return None;
    }
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.priority).unwrap_or(0) >= CRITICAL_PRIORITY {
        return None;
    }
    let names: Vec<&str> = conditions.iter().map(|c| c.name()).collect();
    let message = format!("The node had condition: [{}]. ", names.join(" "));
    if conditions.contains(&Condition::DiskPressure) {
        return Some((REASON, message));
    }
    let best_effort = crate::qos::qos_class(pod) == crate::qos::QosClass::BestEffort;
    let tolerates = spec.and_then(|s| s.tolerations.as_ref()).is_some_and(|ts| {
        ts.iter().any(|t| {
            let key_ok = t.key.as_deref().is_none_or(|k| k.is_empty())
                && t.operator.as_deref() == Some("Exists")
                || t.key.as_deref() == Some("node.kubernetes.io/memory-pressure");
            let effect_ok = t
                .effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "NoSchedule");
            key_ok && effect_ok
        })
    });
    (best_effort && !tolerates).then_some((REASON, message))
}

// ---------------------------------------------------------------- the shell

/// An eviction a pod worker carries out: its status message and the grace for its
/// containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// `status.message`.
    pub message: String,
    /// Grace period for the containers (zero for hard thresholds).
    pub grace: Duration,
}

/// What the manager shares with the pod workers and the Node status: the conditions now
/// and the pods to evict.
#[derive(Debug, Default)]
pub struct Shared {
    conditions: Mutex<Vec<Condition>>,
    evictions: Mutex<HashMap<String, Eviction>>,
    active: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// The pressure conditions now; `None` until the manager made its first evaluation.
    pub fn conditions(&self) -> Option<Vec<Condition>> {
        if !self.active.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.conditions.lock().ok().map(|c| c.clone())
    }

    /// The eviction asked of pod `uid`, if any.
    pub fn eviction(&self, uid: &str) -> Option<Eviction> {
        self.evictions.lock().ok()?.get(uid).cloned()
    }

    /// Forgets pod `uid` (it left the node).
    pub fn forget(&self, uid: &str) {
        if let Ok(mut e) = self.evictions.lock() {
            e.remove(uid);
        }
    }

    fn set_conditions(&self, c: Vec<Condition>) {
        if let Ok(mut g) = self.conditions.lock() {
            *g = c;
        }
        self.active
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn evict(&self, uid: &str, e: Eviction) -> bool {
        match self.evictions.lock() {
            Ok(mut g) => g.insert(uid.to_string(), e).is_none(),
            Err(_) => false,
        }
    }

    fn pending(&self) -> usize {
        self.evictions.lock().map(|g| g.len()).unwrap_or(0)
    }
}

/// The node's shared eviction state, one per node name in the process.
pub fn shared(node: &str) -> Arc<Shared> {
    static ALL: std::sync::OnceLock<Mutex<HashMap<String, Arc<Shared>>>> =
        std::sync::OnceLock::new();
    let all = ALL.get_or_init(Default::default);
    match all.lock() {
        Ok(mut g) => g.entry(node.to_string()).or_default().clone(),
        Err(_) => Arc::new(Shared::default()),
    }
}

/// statvfs of `path`: (available bytes, capacity bytes), (free inodes, inodes).
fn fs_observations(path: &Path) -> Option<(Observation, Observation)> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let f = s.fragment_size() as u64;
    Some((
        Observation {
            available: s.blocks_available() as u64 * f,
            capacity: s.blocks() as u64 * f,
        },
        Observation {
            available: s.files_available() as u64,
            capacity: s.files() as u64,
        },
    ))
}

/// Measures the node: memory from the stats reader (MemTotal less the working set), the
/// file systems of the root dir (node) and of the image store (also the root dir).
pub fn observe(cfg: &crate::Config) -> Observations {
    let mut obs = Observations::new();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = crate::stats::keyed(&meminfo, "MemTotal:").map(|kb| kb * 1024);
    let reader = crate::stats::Reader::new(cfg.cgroup_root.clone(), "/proc");
    if let (Some(total), Ok(s)) = (total, reader.node()) {
        obs.insert(
            Signal::MemoryAvailable,
            Observation {
                available: total.saturating_sub(s.working_set),
                capacity: total,
            },
        );
    }
    if let Some((bytes, inodes)) = fs_observations(&cfg.root_dir) {
        obs.insert(Signal::NodeFsAvailable, bytes);
        obs.insert(Signal::NodeFsInodesFree, inodes);
        obs.insert(Signal::ImageFsAvailable, bytes);
        obs.insert(Signal::ImageFsInodesFree, inodes);
    }
    obs
}

/// Bytes used under `dir`, not crossing into other file systems (a container's `merged`
/// overlay mount is not its use).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let dev = top.dev();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

fn request_of(c: &k8s_openapi::api::core::v1::Container, resource: &str) -> u64 {
    c.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get(resource))
        .and_then(crate::qos::parse_quantity)
        .map(|v| v.max(0.0) as u64)
        .unwrap_or(0)
}

/// A pod's use of the threshold's resource and its containers' (for the message).
fn pod_use(
    cfg: &crate::Config,
    reader: &crate::stats::Reader,
    pod: &Pod,
    signal: Signal,
) -> Option<(Candidate, Vec<ContainerUse>)> {
    let uid = pod.metadata.uid.clone()?;
    let spec = pod.spec.as_ref()?;
    let resource = signal.resource();
    let mut containers = Vec::new();
    let pod_usage = match signal {
        Signal::MemoryAvailable => {
            let qos = crate::qos::qos_class(pod);
            let cg = crate::qos::pod_cgroup(&cfg.cgroup_prefix, qos, &uid);
            for c in &spec.containers {
                let path = cg.join(crate::worker::container_id(&uid, &c.name));
                if let Ok(s) = reader.cgroup(&path) {
                    containers.push(ContainerUse {
                        name: c.name.clone(),
                        usage: s.working_set,
                        request: request_of(c, resource),
                    });
                }
            }
            reader.cgroup(&cg).ok()?.working_set
        }
        _ => {
            // the kubelet's nodefs measure without a separate imagefs: writable layers,
            // logs and local volumes
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let logs = cfg.pod_log_dir(ns, name, &uid);
            let mut total = disk_usage(&cfg.pod_volume_dir(&uid));
            for c in &spec.containers {
                let usage = disk_usage(&upper_dir(&cfg.root_dir, &uid, &c.name))
                    + disk_usage(&logs.join(&c.name));
                total += usage;
                containers.push(ContainerUse {
                    name: c.name.clone(),
                    usage,
                    request: request_of(c, resource),
                });
            }
            if signal == Signal::NodeFsInodesFree || signal == Signal::ImageFsInodesFree {
                containers.clear();
            }
            total
        }
    };
    let request = spec
        .containers
        .iter()
        .map(|c| request_of(c, resource))
        .sum();
    Some((
        Candidate {
            uid,
            priority: spec.priority.unwrap_or(0),
            request,
            usage: pod_usage,
        },
        containers,
    ))
}

/// Whether a pod is still running on the node (not terminal, not already evicted).
fn active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Failed" | "Succeeded"))
}

/// The eviction manager: every period, measures, sets the conditions, reclaims and evicts
/// at most one pod.
pub struct Manager {
    cfg: Arc<crate::Config>,
    shared: Arc<Shared>,
    state: State,
    gc: Arc<tokio::sync::Mutex<crate::imagegc::ImageGc>>,
}

impl Manager {
    /// A manager for the node of `cfg`, reclaiming through `gc`.
    pub fn new(
        cfg: Arc<crate::Config>,
        gc: Arc<tokio::sync::Mutex<crate::imagegc::ImageGc>>,
    ) -> Manager {
        Manager {
            shared: shared(&cfg.node_name),
            cfg,
            state: State::default(),
            gc,
        }
    }

    /// Runs until dropped; `pods` gives the node's pods now.
    pub async fn run(mut self, pods: impl Fn() -> Vec<Arc<Pod>> + Send) {
        let mut tick = tokio::time::interval(self.cfg.eviction.period);
        loop {
            tick.tick().await;
            let list = pods();
            self.pass(&list).await;
        }
    }

    async fn measure(&self) -> Observations {
        let cfg = self.cfg.clone();
        tokio::task::spawn_blocking(move || observe(&cfg))
            .await
            .unwrap_or_default()
    }

    /// One pass of the kubelet's `synchronize`.
    async fn pass(&mut self, pods: &[Arc<Pod>]) {
        let obs = self.measure().await;
        let d = self
            .state
            .evaluate(&self.cfg.eviction, &obs, Instant::now());
        self.shared.set_conditions(d.conditions.clone());
        let Some(t) = d.act_on.first().copied() else {
            return;
        };
        // pods asked to go and not gone yet: wait for them before evicting another
        let live: Vec<&Arc<Pod>> = pods.iter().filter(|p| active(p)).collect();
        if live.iter().any(|p| {
            p.metadata
                .uid
                .as_deref()
                .is_some_and(|u| self.shared.eviction(u).is_some())
        }) {
            tracing::debug!(
                pending = self.shared.pending(),
                "waiting for evicted pods to stop"
            );
            return;
        }
        let observed = obs.get(&t.signal).copied();
        tracing::warn!(signal = t.signal.name(), hard = t.hard, observed = ?observed,
            "eviction threshold met, attempting to reclaim");
        if t.signal != Signal::MemoryAvailable && self.reclaim(&t).await {
            return;
        }
        let cfg = self.cfg.clone();
        let owned: Vec<Pod> = live.iter().map(|p| (***p).clone()).collect();
        let ranked = tokio::task::spawn_blocking(move || {
            let reader = crate::stats::Reader::new(cfg.cgroup_root.clone(), "/proc");
            let mut uses: Vec<(Candidate, Vec<ContainerUse>, Pod)> = owned
                .into_iter()
                .filter_map(|p| pod_use(&cfg, &reader, &p, t.signal).map(|(c, u)| (c, u, p)))
                .collect();
            let mut cands: Vec<Candidate> = uses.iter().map(|u| u.0.clone()).collect();
            rank(&mut cands);
            cands
                .into_iter()
                .filter_map(|c| {
                    let i = uses.iter().position(|u| u.0.uid == c.uid)?;
                    Some(uses.swap_remove(i))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let Some((cand, containers, pod)) = ranked.into_iter().next() else {
            tracing::warn!("eviction threshold met but no pod to evict");
            return;
        };
        let message = eviction_message(&t, &obs, &containers);
        let grace = if t.hard {
            Duration::ZERO
        } else {
            Duration::from_secs(
                pod.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30)
                    .max(0) as u64,
            )
        };
        let key = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        tracing::warn!(pod = %key, usage = cand.usage, request = cand.request,
            priority = cand.priority, %message, "evicting pod");
        self.shared.evict(&cand.uid, Eviction { message, grace });
    }

    /// Node-level reclaim for disk signals (the kubelet's image GC `DeleteUnusedImages`;
    /// dead containers' layers go with their pods); true when the signal is back above the
    /// threshold plus its minimum reclaim, so no pod need go.
    async fn reclaim(&self, t: &Threshold) -> bool {
        let gc = self.gc.clone();
        let freed = tokio::task::spawn_blocking(move || {
            let mut gc = gc.blocking_lock();
            gc.delete_unused()
        })
        .await;
        match freed {
            Ok(Ok(0)) => {}
            Ok(Ok(freed)) => tracing::info!(freed, "reclaimed disk by removing unused images"),
            Ok(Err(e)) => tracing::warn!(error = %e, "image reclaim failed"),
            Err(e) => tracing::warn!(error = %e, "image reclaim panicked"),
        }
        let obs = self.measure().await;
        if !t.unresolved(&obs) {
            tracing::info!(
                signal = t.signal.name(),
                "reclaim relieved the pressure: no eviction"
            );
            return true;
        }
        false
    }
}

/// The writable (upper) directory of a pod's container in the snapshot store.
pub fn upper_dir(root_dir: &Path, uid: &str, container: &str) -> PathBuf {
    root_dir
        .join("containers")
        .join(crate::worker::container_id(uid, container))
        .join("upper")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(list: &[(Signal, u64, u64)]) -> Observations {
        list.iter()
            .map(|&(s, available, capacity)| {
                (
                    s,
                    Observation {
                        available,
                        capacity,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn parses_thresholds_and_grace_periods() {
        type Parsed = Result<Vec<(Signal, Value)>, ()>;
        let cases: [(&str, Parsed); 6] = [
            ("", Ok(vec![])),
            (
                "memory.available<100Mi,nodefs.available<10%",
                Ok(vec![
                    (Signal::MemoryAvailable, Value::Quantity(100 << 20)),
                    (Signal::NodeFsAvailable, Value::Percentage(0.1)),
                ]),
            ),
            (
                "nodefs.inodesFree<5%, imagefs.available<2Gi",
                Ok(vec![
                    (Signal::NodeFsInodesFree, Value::Percentage(0.05)),
                    (Signal::ImageFsAvailable, Value::Quantity(2 << 30)),
                ]),
            ),
            ("memory.available>1Gi", Err(())),
            ("pid.available<10%", Err(())),
            ("nodefs.available<120%", Err(())),
        ];
        for (s, want) in cases {
            assert_eq!(parse_thresholds(s).map_err(|_| ()), want, "{s}");
        }
        let g = parse_grace_periods("memory.available=1m30s,nodefs.available=500ms").unwrap();
        assert_eq!(g[&Signal::MemoryAvailable], Duration::from_secs(90));
        assert_eq!(g[&Signal::NodeFsAvailable], Duration::from_millis(500));
        assert!(parse_grace_periods("memory.available").is_err());
        assert!(matches!(
            EvictionPolicy::new(
                "",
                "memory.available<1Gi",
                "",
                "",
                Duration::ZERO,
                Duration::ZERO
            ),
            Err(EvictionError::NoGrace("memory.available"))
        ));
        let d = EvictionPolicy::default();
        assert_eq!(d.thresholds.len(), 4);
        assert!(d.thresholds.iter().all(|t| t.hard));
        assert!(
            d.thresholds
                .iter()
                .all(|t| t.min_reclaim == Value::Quantity(0))
        );
        let r = parse_minimum_reclaims(
            "memory.available=0Mi, nodefs.available=500Mi,imagefs.available=2%",
        )
        .unwrap();
        assert_eq!(r[&Signal::MemoryAvailable], Value::Quantity(0));
        assert_eq!(r[&Signal::NodeFsAvailable], Value::Quantity(500 << 20));
        assert_eq!(r[&Signal::ImageFsAvailable], Value::Percentage(0.02));
        for bad in [
            "memory.available<1Gi",
            "nodefs.available=-1Gi",
            "nodefs.available=x",
        ] {
            assert!(
                matches!(
                    parse_minimum_reclaims(bad),
                    Err(EvictionError::MinimumReclaim(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_minimum_reclaims("pid.available=1"),
            Err(EvictionError::Signal(_))
        ));
        let p = EvictionPolicy::new(
            "nodefs.available<10%",
            "nodefs.available<20%",
            "nodefs.available=1m",
            "nodefs.available=5%",
            Duration::ZERO,
            Duration::ZERO,
        )
        .unwrap();
        assert!(
            p.thresholds
                .iter()
                .all(|t| t.min_reclaim == Value::Percentage(0.05))
        );
    }

    #[test]
    fn minimum_reclaim_table() {
        // hard nodefs.available<10% with minimum reclaim 500 (of 10000): met below 1000,
        // resolved only at 1500 once acted on
        let policy = EvictionPolicy::new(
            "nodefs.available<1000",
            "",
            "",
            "nodefs.available=500",
            Duration::from_secs(60),
            Duration::from_secs(10),
        )
        .unwrap();
        let t0 = Instant::now();
        let at = |avail: u64| obs(&[(Signal::NodeFsAvailable, avail, 10_000)]);
        // (available, acted on)
        let steps = [
            (1200, false), // above the threshold, never met: the reclaim margin does not apply
            (900, true),   // met
            (1100, true),  // above the threshold but short of the minimum reclaim
            (1499, true),
            (1500, false), // resolved
            (1200, false), // resolved thresholds need the threshold itself crossed again
            (999, true),
        ];
        let mut st = State::default();
        for (n, (avail, acted)) in steps.into_iter().enumerate() {
            let d = st.evaluate(&policy, &at(avail), t0 + Duration::from_secs(n as u64));
            assert_eq!(!d.act_on.is_empty(), acted, "available {avail} (step {n})");
            // once set, the condition is held for the transition period
            assert_eq!(d.conditions.contains(&Condition::DiskPressure), n > 0);
        }
        // unresolved() is the reclaim's stopping rule
        let t = policy.thresholds[0];
        assert!(t.unresolved(&at(1499)) && !t.unresolved(&at(1500)));
        assert!(t.met(&at(999)) && !t.met(&at(1000)));
    }

    #[test]
    fn evaluation_table() {
        let policy = EvictionPolicy::new(
            "memory.available<100Mi,nodefs.available<10%",
            "nodefs.available<20%",
            "nodefs.available=30s",
            "",
            Duration::from_secs(60),
            Duration::from_secs(10),
        )
        .unwrap();
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let gib = 1u64 << 30;
        let fine = obs(&[
            (Signal::MemoryAvailable, gib, 4 * gib),
            (Signal::NodeFsAvailable, 50, 100),
        ]);
        let soft = obs(&[
            (Signal::MemoryAvailable, gib, 4 * gib),
            (Signal::NodeFsAvailable, 15, 100),
        ]);
        let hard = obs(&[
            (Signal::MemoryAvailable, 50 << 20, 4 * gib),
            (Signal::NodeFsAvailable, 5, 100),
        ]);
        // (observations, seconds since t0, conditions, signals acted on (hard?))
        type Step = (Observations, u64, Vec<Condition>, Vec<(Signal, bool)>);
        let steps: Vec<Step> = vec![
            (fine.clone(), 0, vec![], vec![]),
            // a soft threshold sets the condition at once, acts after its grace
            (soft.clone(), 1, vec![Condition::DiskPressure], vec![]),
            (soft.clone(), 30, vec![Condition::DiskPressure], vec![]),
            (
                soft.clone(),
                31,
                vec![Condition::DiskPressure],
                vec![(Signal::NodeFsAvailable, false)],
            ),
            // hard thresholds act at once; memory first, hard before soft
            (
                hard.clone(),
                32,
                vec![Condition::MemoryPressure, Condition::DiskPressure],
                vec![
                    (Signal::MemoryAvailable, true),
                    (Signal::NodeFsAvailable, true),
                    (Signal::NodeFsAvailable, false),
                ],
            ),
            // relieved: conditions stay for the transition period
            (
                fine.clone(),
                33,
                vec![Condition::MemoryPressure, Condition::DiskPressure],
                vec![],
            ),
            (fine.clone(), 92, vec![], vec![]),
            // the soft grace starts over
            (soft.clone(), 93, vec![Condition::DiskPressure], vec![]),
        ];
        let mut st = State::default();
        for (o, at, conditions, acted) in steps {
            let d = st.evaluate(&policy, &o, s(at));
            assert_eq!(d.conditions, conditions, "at {at}s");
            let got: Vec<(Signal, bool)> = d.act_on.iter().map(|t| (t.signal, t.hard)).collect();
            assert_eq!(got, acted, "at {at}s");
        }
    }

    #[test]
    fn ranking_table() {
        let c = |uid: &str, priority, request, usage| Candidate {
            uid: uid.into(),
            priority,
            request,
            usage,
        };
        let cases: Vec<(Vec<Candidate>, Vec<&str>)> = vec![
            // usage over request first, whatever the priority
            (
                vec![c("under", 0, 100, 50), c("over", 1000, 10, 20)],
                vec!["over", "under"],
            ),
            // then lower priority
            (
                vec![c("high", 100, 0, 500), c("low", -5, 0, 10)],
                vec!["low", "high"],
            ),
            // then the larger use above the request
            (
                vec![c("a", 0, 0, 10), c("b", 0, 0, 30), c("c", 0, 25, 40)],
                vec!["b", "c", "a"],
            ),
            // all under requests: priority, then use above (less below) the request
            (
                vec![c("x", 0, 100, 10), c("y", 0, 100, 90), c("z", -1, 100, 1)],
                vec!["z", "y", "x"],
            ),
        ];
        for (mut pods, want) in cases {
            rank(&mut pods);
            let got: Vec<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn messages_as_the_kubelet() {
        assert_eq!(format_binary(0), "0");
        assert_eq!(format_binary(1536), "1536");
        assert_eq!(format_binary(10 << 20), "10Mi");
        assert_eq!(format_binary(3 << 30), "3Gi");
        let t = Threshold {
            signal: Signal::NodeFsAvailable,
            value: Value::Percentage(0.1),
            grace: Duration::ZERO,
            hard: true,
            min_reclaim: Value::Quantity(0),
        };
        let o = obs(&[(Signal::NodeFsAvailable, 4 << 20, 100 << 20)]);
        let used = [
            ContainerUse {
                name: "writer".into(),
                usage: 20 << 20,
                request: 0,
            },
            ContainerUse {
                name: "quiet".into(),
                usage: 4096,
                request: 1 << 20,
            },
        ];
        assert_eq!(
            eviction_message(&t, &o, &used),
            "The node was low on resource: ephemeral-storage. Threshold quantity: 10Mi, \
             available: 4Mi. Container writer was using 20Mi, request is 0, has larger \
             consumption of ephemeral-storage. "
        );
    }

    #[test]
    fn admission_table() {
        let pod = |spec: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec}))
                .unwrap()
        };
        let best = pod(serde_json::json!({"containers": [{"name": "c"}]}));
        let burst = pod(serde_json::json!({"containers": [{"name": "c",
            "resources": {"requests": {"memory": "10Mi"}}}]}));
        let tolerant = pod(serde_json::json!({"containers": [{"name": "c"}],
            "tolerations": [{"key": "node.kubernetes.io/memory-pressure",
                "operator": "Exists", "effect": "NoSchedule"}]}));
        let critical = pod(serde_json::json!({"containers": [{"name": "c"}],
            "priority": 2000001000}));
        use Condition::*;
        let cases: Vec<(&Pod, Vec<Condition>, Option<&str>)> = vec![
            (&best, vec![], None),
            (
                &best,
                vec![MemoryPressure],
                Some("The node had condition: [MemoryPressure]. "),
            ),
            (&burst, vec![MemoryPressure], None),
            (&tolerant, vec![MemoryPressure], None),
            (
                &burst,
                vec![DiskPressure],
                Some("The node had condition: [DiskPressure]. "),
            ),
            (
                &tolerant,
                vec![MemoryPressure, DiskPressure],
                Some("The node had condition: [MemoryPressure DiskPressure]. "),
            ),
            (&critical, vec![DiskPressure], None),
        ];
        for (p, conds, want) in cases {
            let got = admit(p, &conds);
            assert_eq!(got.as_ref().map(|g| g.1.as_str()), want, "{conds:?}");
            if let Some((reason, _)) = got {
                assert_eq!(reason, "Evicted");
            }
        }
    }
}

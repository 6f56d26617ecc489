//! Node lifecycle (kube-controller-manager's node lifecycle controller and NoExecute taint
//! manager). Every monitor period it looks at each Node's Lease (kube-node-lease) and Ready
//! heartbeat; a node not heard from within the grace period gets its kubelet conditions set
//! to Unknown ("Kubelet stopped posting node status."), and its pods Ready=False so endpoints
//! drop them at once. Nodes get the `node.kubernetes.io/unreachable` (Ready=Unknown) or
//! `not-ready` (Ready=False) taints, NoSchedule and NoExecute, removed when Ready is True
//! again. Pods on NoExecute-tainted nodes are evicted (deleted, with an Event) once their
//! tolerationSeconds for those taints have passed, at most `eviction_rate` per second.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;
use tracing::{debug, info, warn};

use super::endpoints::informer;
use super::events::{self, EventType};
use super::{Context, ControllerError};

/// Taint of nodes whose Ready condition is Unknown.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// Taint of nodes whose Ready condition is False.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// The conditions the kubelet posts, set to Unknown when it goes silent.
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The node's condition of type `t`.
fn condition<'a>(node: &'a Node, t: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
}

/// The status of the node's Ready condition (`None` before the kubelet posted one).
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// The kubelet conditions set to Unknown, as `tryUpdateNodeHealth` does for a silent node;
/// `None` when they all are Unknown already.
pub fn conditions_unknown(
    conditions: &[NodeCondition],
    created: Option<Timestamp>,
    now: Timestamp,
) -> Option<Vec<NodeCondition>> {
    let mut out = conditions.to_vec();
    let mut changed = false;
    for t in KUBELET_CONDITIONS {
        match out.iter_mut().find(|c| c.type_ == t) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                out.push(NodeCondition {
                    type_: t.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: created.map(Time),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(out)
}

/// The node's taints with the not-ready/unreachable NoSchedule and NoExecute taints matching
/// its Ready status (True: none; False: not-ready; Unknown: unreachable); existing taints
/// keep their timeAdded. `None` when nothing changes.
pub fn condition_taints(
    taints: &[Taint],
    ready: Option<&str>,
    now: Timestamp,
) -> Option<Vec<Taint>> {
    let want_key = match ready {
        Some("False") => Some(NOT_READY_TAINT),
        Some("Unknown") => Some(UNREACHABLE_TAINT),
        Some(_) => None,
        // Before the kubelet posted anything the node is left as registered.
        None => return None,
    };
    let ours = |t: &Taint| {
        (t.key == NOT_READY_TAINT || t.key == UNREACHABLE_TAINT)
            && (t.effect == "NoExecute" || t.effect == "NoSchedule")
    };
    let mut out: Vec<Taint> = taints
        .iter()
        .filter(|t| !ours(t) || Some(t.key.as_str()) == want_key)
        .cloned()
        .collect();
    if let Some(key) = want_key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !out.iter().any(|t| t.key == key && t.effect == effect) {
                out.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    value: None,
                    time_added: (effect == "NoExecute").then_some(Time(now)),
                });
            }
        }
    }
    (out != taints).then_some(out)
}

/// Whether `toleration` tolerates `taint` (`v1.Toleration.ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// When a pod on a node with `taints` must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// It tolerates every NoExecute taint forever (or there is none).
    Never,
    /// It tolerates them until then.
    At(Timestamp),
    /// Some NoExecute taint is not tolerated.
    Now,
}

/// The NoExecute taint manager's verdict for a pod: evict now when a NoExecute taint is not
/// tolerated, else at the latest taint's timeAdded plus the smallest tolerationSeconds of the
/// tolerations used (never when none of those has tolerationSeconds).
pub fn eviction(tolerations: &[Toleration], taints: &[Taint], now: Timestamp) -> Eviction {
    let no_execute: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
    if no_execute.is_empty() {
        return Eviction::Never;
    }
    let mut min_seconds: Option<i64> = None;
    let mut since = Timestamp::MIN;
    for taint in no_execute {
        let used: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if used.is_empty() {
            return Eviction::Now;
        }
        for t in used {
            if let Some(s) = t.toleration_seconds {
                let s = s.max(0);
                min_seconds = Some(min_seconds.map_or(s, |m| m.min(s)));
            }
        }
        since = since.max(taint.time_added.as_ref().map_or(now, |t| t.0));
    }
    match min_seconds {
        None => Eviction::Never,
        Some(s) => Eviction::At(
            since
                .checked_add(SignedDuration::from_secs(s))
                .unwrap_or(Timestamp::MAX),
        ),
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` saved.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// Full bucket at `now`. The burst is the larger of 1 and one second's worth of tokens.
    pub fn new(rate: f64, now: Instant) -> RateLimiter {
        let burst = rate.max(1.0);
        RateLimiter {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one at `now`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the controller last saw of a node's liveness.
#[derive(Debug)]
struct Observed {
    /// The Lease's renewTime and the Ready condition's heartbeat, as last seen.
    renew: Option<Timestamp>,
    heartbeat: Option<Timestamp>,
    /// When either last changed (or the node was first seen), on our clock.
    probe: Instant,
}

struct Lifecycle {
    ctx: Context,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    observed: HashMap<String, Observed>,
    limiter: RateLimiter,
    /// Pods deleted already (uid), until the cache shows it.
    evicted: HashSet<String>,
}

/// Runs the node lifecycle controller until the task is dropped.
pub async fn run(ctx: Context) -> Result<(), ControllerError> {
    if !(ctx.settings.eviction_rate.is_finite() && ctx.settings.eviction_rate >= 0.0) {
        return Err(ControllerError::Settings(format!(
            "eviction rate {} is not a non-negative number",
            ctx.settings.eviction_rate
        )));
    }
    let client = ctx.client.clone();
    let (node_reader, node_writer) = reflector::store::<Node>();
    let (lease_reader, lease_writer) = reflector::store::<Lease>();
    let (pod_reader, pod_writer) = reflector::store::<Pod>();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(informer(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        node_writer,
        |_: &Node| {},
    ));
    tasks.spawn(informer(
        Api::<Lease>::namespaced(client.clone(), "kube-node-lease"),
        watcher::Config::default(),
        lease_writer,
        |_: &Lease| {},
    ));
    tasks.spawn(informer(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        pod_writer,
        |_: &Pod| {},
    ));
    for ready in [
        node_reader.wait_until_ready().await,
        lease_reader.wait_until_ready().await,
        pod_reader.wait_until_ready().await,
    ] {
        if ready.is_err() {
            return Err(ControllerError::Invalid(
                "node lifecycle informers stopped".into(),
            ));
        }
    }
    // Upstream monitors every 5 s; a shorter grace period gets a proportionally shorter one.
    let period = (ctx.settings.node_monitor_grace_period / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut lc = Lifecycle {
        limiter: RateLimiter::new(ctx.settings.eviction_rate, Instant::now()),
        ctx,
        nodes: node_reader,
        leases: lease_reader,
        pods: pod_reader,
        observed: HashMap::new(),
        evicted: HashSet::new(),
    };
    info!(period = ?period, "node lifecycle controller started");
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        lc.monitor_nodes().await;
        lc.evict_pods().await;
    }
}

impl Lifecycle {
    /// One pass of `monitorNodeHealth` over every cached node.
    async fn monitor_nodes(&mut self) {
        let nodes = self.nodes.state();
        let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        self.observed.retain(|n, _| names.contains(n));
        for node in nodes {
            if let Err(e) = self.monitor(&node).await {
                warn!(node = %node.name_any(), error = %e, "node health update failed");
            }
        }
    }

    async fn monitor(&mut self, node: &Node) -> Result<(), ControllerError> {
        let name = node.name_any();
        let now = Instant::now();
        let renew = self
            .leases
            .get(&ObjectRef::new(&name).within("kube-node-lease"))
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
        let heartbeat =
            condition(node, "Ready").and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
        let seen = self.observed.entry(name.clone()).or_insert(Observed {
            renew,
            heartbeat,
            probe: now,
        });
        if seen.renew != renew || seen.heartbeat != heartbeat {
            seen.renew = renew;
            seen.heartbeat = heartbeat;
            seen.probe = now;
        }
        let silent =
            now.saturating_duration_since(seen.probe) > self.ctx.settings.node_monitor_grace_period;
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        let mut ready = ready_status(node).map(str::to_string);
        if silent {
            let conditions = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
            if let Some(conditions) = conditions_unknown(&conditions, created, Timestamp::now()) {
                let patch = json!({"status": {"conditions": conditions}});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                warn!(node = %name, "node stopped posting status: Ready=Unknown");
                events::record(
                    &self.ctx.client,
                    &self.ctx.settings.component,
                    events::reference(node),
                    EventType::Normal,
                    "NodeNotReady",
                    &format!("Node {name} status is now: NodeNotReady"),
                )
                .await;
                ready = Some("Unknown".into());
            }
        }
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        if let Some(new) = condition_taints(&taints, ready.as_deref(), Timestamp::now()) {
            let patch = json!({"spec": {"taints": new}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            info!(node = %name, ready = ?ready, taints = new.len(), "node taints updated");
        }
        if ready.as_deref().is_some_and(|r| r != "True") {
            self.mark_pods_not_ready(&name).await;
        }
        Ok(())
    }

    /// `MarkPodsNotReady`: the pods of a node that is not Ready become Ready=False, so
    /// endpoints drop them without waiting for their eviction.
    async fn mark_pods_not_ready(&self, node: &str) {
        for pod in self.pods.state() {
            if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node)
                || !super::endpoints_core::is_ready(&pod)
            {
                continue;
            }
            let mut conditions: Vec<PodCondition> = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            for c in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
                c.status = "False".into();
                c.reason = Some("NodeLost".into());
                c.message = Some(format!("Node {node} is not ready"));
                c.last_transition_time = Some(Time(Timestamp::now()));
            }
            let ns = pod.namespace().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
            let patch = json!({"status": {"conditions": conditions}});
            match api
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    info!(pod = %events::key(pod.as_ref()), node, "pod marked not ready");
                    events::record(
                        &self.ctx.client,
                        &self.ctx.settings.component,
                        events::reference(pod.as_ref()),
                        EventType::Warning,
                        "NodeNotReady",
                        "Node is not ready",
                    )
                    .await;
                }
                Err(e) => {
                    debug!(pod = %events::key(pod.as_ref()), error = %e, "cannot mark pod not ready")
                }
            }
        }
    }

    /// The NoExecute taint manager: deletes the pods whose toleration of their node's
    /// NoExecute taints has run out, rate limited.
    async fn evict_pods(&mut self) {
        let now = Timestamp::now();
        let pods = self.pods.state();
        let live: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        self.evicted.retain(|uid| live.contains(uid.as_str()));
        for pod in &pods {
            let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
                continue;
            };
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() || self.evicted.contains(&uid) {
                continue;
            }
            let Some(node) = self.nodes.get(&ObjectRef::new(node_name)) else {
                continue;
            };
            let taints = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_deref())
                .unwrap_or(&[]);
            let tolerations = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.as_deref())
                .unwrap_or(&[]);
            let due = match eviction(tolerations, taints, now) {
                Eviction::Never => false,
                Eviction::Now => true,
                Eviction::At(t) => t <= now,
            };
            if !due {
                continue;
            }
            if !self.limiter.try_take(Instant::now()) {
                debug!("eviction rate limit reached; the rest waits");
                return;
            }
            let key = events::key(pod.as_ref());
            let api: Api<Pod> = Api::namespaced(
                self.ctx.client.clone(),
                &pod.namespace().unwrap_or_default(),
            );
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&pod.name_any(), &dp).await {
                Ok(_) => {
                    self.evicted.insert(uid);
                    info!(pod = %key, node = node_name, "pod evicted from tainted node");
                    events::record(
                        &self.ctx.client,
                        &self.ctx.settings.component,
                        events::reference(pod.as_ref()),
                        EventType::Normal,
                        "TaintManagerEviction",
                        &format!("Marking for deletion Pod {key}"),
                    )
                    .await;
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                    self.evicted.insert(uid);
                }
                Err(e) => warn!(pod = %key, error = %e, "eviction failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: added.map(|s| Time(ts(s))),
        }
    }

    fn tol(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn silent_node_conditions_become_unknown() {
        let ready = NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            last_heartbeat_time: Some(Time(ts(0))),
            ..Default::default()
        };
        let out = conditions_unknown(&[ready], Some(ts(-10)), ts(50)).unwrap();
        assert_eq!(out.len(), 4);
        let r = &out[0];
        assert_eq!(
            (r.status.as_str(), r.reason.as_deref(), r.message.as_deref()),
            (
                "Unknown",
                Some("NodeStatusUnknown"),
                Some("Kubelet stopped posting node status.")
            )
        );
        assert_eq!(r.last_heartbeat_time, Some(Time(ts(0))));
        assert_eq!(r.last_transition_time, Some(Time(ts(50))));
        assert_eq!(out[1].reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(out[1].last_heartbeat_time, Some(Time(ts(-10))));
        assert_eq!(conditions_unknown(&out, None, ts(60)), None);
    }

    #[test]
    fn taints_follow_the_ready_condition() {
        let user = taint("dedicated", "NoSchedule", None);
        type Case<'a> = (Vec<Taint>, Option<&'a str>, Option<Vec<(&'a str, &'a str)>>);
        let cases: Vec<Case> = vec![
            (vec![user.clone()], Some("True"), None),
            (vec![user.clone()], None, None),
            (
                vec![user.clone()],
                Some("Unknown"),
                Some(vec![
                    ("dedicated", "NoSchedule"),
                    (UNREACHABLE_TAINT, "NoSchedule"),
                    (UNREACHABLE_TAINT, "NoExecute"),
                ]),
            ),
            (
                vec![
                    taint(UNREACHABLE_TAINT, "NoSchedule", None),
                    taint(UNREACHABLE_TAINT, "NoExecute", Some(1)),
                ],
                Some("False"),
                Some(vec![
                    (NOT_READY_TAINT, "NoSchedule"),
                    (NOT_READY_TAINT, "NoExecute"),
                ]),
            ),
            (
                vec![user.clone(), taint(UNREACHABLE_TAINT, "NoExecute", Some(1))],
                Some("True"),
                Some(vec![("dedicated", "NoSchedule")]),
            ),
            (
                vec![
                    taint(UNREACHABLE_TAINT, "NoSchedule", None),
                    taint(UNREACHABLE_TAINT, "NoExecute", Some(1)),
                ],
                Some("Unknown"),
                None,
            ),
        ];
        for (i, (taints, ready, want)) in cases.into_iter().enumerate() {
            let got = condition_taints(&taints, ready, ts(5));
            let got: Option<Vec<(String, String)>> =
                got.map(|v| v.into_iter().map(|t| (t.key, t.effect)).collect());
            let want: Option<Vec<(String, String)>> = want.map(|v| {
                v.into_iter()
                    .map(|(k, e)| (k.to_string(), e.to_string()))
                    .collect()
            });
            assert_eq!(got, want, "case {i}");
        }
        let added = condition_taints(&[], Some("Unknown"), ts(5)).unwrap();
        assert_eq!(added[1].time_added, Some(Time(ts(5))));
    }

    #[test]
    fn toleration_matching() {
        let t = Taint {
            key: "k".into(),
            effect: "NoExecute".into(),
            value: Some("v".into()),
            time_added: None,
        };
        let cases = [
            (json!({"key": "k", "operator": "Exists"}), true),
            (json!({"key": "k", "value": "v"}), true),
            (json!({"key": "k", "value": "w"}), false),
            (
                json!({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}),
                false,
            ),
            (json!({"operator": "Exists"}), true),
            (json!({"operator": "Exists", "effect": "NoExecute"}), true),
            (json!({"key": "other", "operator": "Exists"}), false),
        ];
        for (v, want) in cases {
            assert_eq!(tolerates(&tol(v.clone()), &t), want, "{v}");
        }
    }

    #[test]
    fn eviction_times() {
        let unreachable = taint(UNREACHABLE_TAINT, "NoExecute", Some(10));
        let noschedule = taint(UNREACHABLE_TAINT, "NoSchedule", Some(10));
        let t300 = tol(json!({"key": UNREACHABLE_TAINT, "operator": "Exists",
                              "effect": "NoExecute", "tolerationSeconds": 300}));
        let t5 = tol(json!({"operator": "Exists", "tolerationSeconds": 5}));
        let forever = tol(json!({"key": UNREACHABLE_TAINT, "operator": "Exists"}));
        let now = ts(20);
        assert_eq!(
            eviction(&[], std::slice::from_ref(&noschedule), now),
            Eviction::Never
        );
        assert_eq!(
            eviction(&[], std::slice::from_ref(&unreachable), now),
            Eviction::Now
        );
        assert_eq!(
            eviction(
                std::slice::from_ref(&t300),
                &[unreachable.clone(), noschedule],
                now
            ),
            Eviction::At(ts(310))
        );
        assert_eq!(
            eviction(&[t300.clone(), t5], std::slice::from_ref(&unreachable), now),
            Eviction::At(ts(15))
        );
        assert_eq!(
            eviction(&[forever], std::slice::from_ref(&unreachable), now),
            Eviction::Never
        );
        let not_ready = taint(NOT_READY_TAINT, "NoExecute", Some(12));
        assert_eq!(
            eviction(&[t300], &[unreachable, not_ready], now),
            Eviction::Now
        );
    }

    #[test]
    fn rate_limiter_refills_at_its_rate() {
        let start = Instant::now();
        let mut rl = RateLimiter::new(2.0, start);
        assert!(rl.try_take(start));
        assert!(rl.try_take(start));
        assert!(!rl.try_take(start));
        assert!(!rl.try_take(start + Duration::from_millis(400)));
        assert!(rl.try_take(start + Duration::from_millis(600)));
        let mut slow = RateLimiter::new(0.1, start);
        assert!(slow.try_take(start));
        assert!(!slow.try_take(start + Duration::from_secs(9)));
        assert!(slow.try_take(start + Duration::from_secs(10)));
    }
}

//! The scheduler: a watch-fed cache of nodes and pods, a queue of pending pods, and a loop
//! that asks the pure core (`core::schedule`) for a node, assumes the pod there at once (so a
//! burst never overcommits a node) and binds it through `pods/binding` concurrently, as
//! kube-scheduler does. A pod that fits nowhere gets `PodScheduled=False` (`Unschedulable`,
//! kube-scheduler's message) and a `FailedScheduling` Event, and waits until a node or a pod
//! changes (or the periodic flush) before it is tried again.

/// The pure scheduling core: filters, scores and kube-scheduler's messages.
pub mod core;

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::{Notify, Semaphore, mpsc};
use tracing::{debug, info, warn};

use self::core::{NodeInfo, PodInfo};
use super::events::{self, EventType};
use super::{Context, ControllerError};

/// The scheduler name pods ask for (unset means this one).
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// Binds in flight at once.
const MAX_IN_FLIGHT: usize = 128;
/// Unschedulable pods are retried at least this often.
const FLUSH_UNSCHEDULABLE: Duration = Duration::from_secs(30);
/// A pod whose bind failed waits this long before its next attempt.
const BIND_BACKOFF: Duration = Duration::from_secs(1);

/// A pod the scheduler knows.
#[derive(Debug)]
struct CachedPod {
    namespace: String,
    name: String,
    info: Arc<PodInfo>,
    /// The node its resources are accounted on (bound, or assumed while binding).
    node: Option<String>,
    /// Accounted on `node` by this scheduler, before the API confirmed the binding.
    assumed: bool,
    /// Unbound, ours, not terminating: it needs a node.
    pending: bool,
    /// The last unschedulable message written to its status.
    last_failure: Option<String>,
}

/// Where pending pods wait.
#[derive(Debug, Default)]
struct Queues {
    /// Ready to be tried: (higher priority first, then arrival) → uid.
    active: BTreeMap<(Reverse<i32>, u64), String>,
    /// uid → its key in `active`.
    in_active: HashMap<String, (Reverse<i32>, u64)>,
    /// Tried and fit nowhere: waiting for a node or pod change.
    unschedulable: HashSet<String>,
    seq: u64,
}

impl Queues {
    fn push(&mut self, uid: &str, priority: i32) {
        if self.in_active.contains_key(uid) {
            return;
        }
        self.unschedulable.remove(uid);
        self.seq += 1;
        let key = (Reverse(priority), self.seq);
        self.active.insert(key, uid.to_string());
        self.in_active.insert(uid.to_string(), key);
    }

    fn remove(&mut self, uid: &str) {
        if let Some(k) = self.in_active.remove(uid) {
            self.active.remove(&k);
        }
        self.unschedulable.remove(uid);
    }

    fn pop(&mut self) -> Option<String> {
        let (_, uid) = self.active.pop_first()?;
        self.in_active.remove(&uid);
        Some(uid)
    }
}

/// The scheduler's cache: nodes with the pods accounted on them, and pending pods.
#[derive(Debug, Default)]
struct Cache {
    nodes: Vec<NodeInfo>,
    node_index: HashMap<String, usize>,
    pods: HashMap<String, CachedPod>,
    queues: Queues,
    nodes_synced: bool,
    pods_synced: bool,
    /// uids listed since the last watcher Init (to drop what vanished during a relist).
    relist_nodes: Option<HashSet<String>>,
    relist_pods: Option<HashSet<String>>,
}

impl Cache {
    fn node_mut(&mut self, name: &str) -> Option<&mut NodeInfo> {
        let i = *self.node_index.get(name)?;
        self.nodes.get_mut(i)
    }

    fn flush_unschedulable(&mut self) {
        let uids: Vec<String> = self.queues.unschedulable.drain().collect();
        for uid in uids {
            if let Some(p) = self.pods.get(&uid)
                && p.pending
            {
                let prio = p.info.priority;
                self.queues.push(&uid, prio);
            }
        }
    }

    fn apply_node(&mut self, node: &Node) {
        let mut info = NodeInfo::new(node);
        let changed = match self.node_index.get(&info.name) {
            Some(&i) => {
                let old = std::mem::take(&mut self.nodes[i]);
                let changed = !old.same_node_facts(&info);
                info.take_pods_from(old);
                self.nodes[i] = info;
                changed
            }
            None => {
                // pods bound to a node the cache did not know yet
                for p in self.pods.values() {
                    if p.node.as_deref() == Some(info.name.as_str()) {
                        info.add_pod(&p.info);
                    }
                }
                self.node_index.insert(info.name.clone(), self.nodes.len());
                self.nodes.push(info);
                true
            }
        };
        if changed {
            self.flush_unschedulable();
        }
    }

    fn delete_node(&mut self, name: &str) {
        if let Some(i) = self.node_index.remove(name) {
            self.nodes.swap_remove(i);
            if let Some(moved) = self.nodes.get(i) {
                self.node_index.insert(moved.name.clone(), i);
            }
        }
    }

    fn unaccount(&mut self, uid: &str) {
        let Some(p) = self.pods.get_mut(uid) else {
            return;
        };
        if let Some(node) = p.node.take() {
            p.assumed = false;
            let info = p.info.clone();
            if let Some(n) = self.node_mut(&node) {
                n.remove_pod(&info);
            }
        }
    }

    fn account(&mut self, uid: &str, node: &str, assumed: bool) {
        let Some(p) = self.pods.get_mut(uid) else {
            return;
        };
        p.node = Some(node.to_string());
        p.assumed = assumed;
        let info = p.info.clone();
        if let Some(n) = self.node_mut(node) {
            n.add_pod(&info);
        }
    }

    fn apply_pod(&mut self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let spec = pod.spec.as_ref();
        let node = spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let ours = spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|s| s.is_empty() || s == SCHEDULER_NAME);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let occupies = core::occupies_node(pod);
        let pending = node.is_none() && ours && !terminating;
        let known = self.pods.get(&uid);
        // An assumed pod is kept where it is until the API shows its binding (or it fails).
        let assumed = known.is_some_and(|p| p.assumed && p.node.is_some());
        let accounted_on = known.and_then(|p| p.node.clone());
        match (node, occupies) {
            (Some(n), true) => {
                if accounted_on.as_deref() != Some(n.as_str()) {
                    self.unaccount(&uid);
                    self.insert_pod(pod, &uid, false);
                    self.account(&uid, &n, false);
                } else if let Some(p) = self.pods.get_mut(&uid) {
                    p.assumed = false;
                    p.pending = false;
                }
                self.queues.remove(&uid);
            }
            (Some(_), false) => {
                // finished: its resources are free again
                let was = accounted_on.is_some();
                self.unaccount(&uid);
                self.insert_pod(pod, &uid, false);
                self.queues.remove(&uid);
                if was {
                    self.flush_unschedulable();
                }
            }
            (None, _) if assumed && !terminating => {}
            (None, _) => {
                let was_pending = known.is_some_and(|p| p.pending);
                self.unaccount(&uid);
                self.insert_pod(pod, &uid, pending);
                if !pending {
                    self.queues.remove(&uid);
                } else if !was_pending {
                    let prio = self.pods.get(&uid).map_or(0, |p| p.info.priority);
                    self.queues.push(&uid, prio);
                }
            }
        }
    }

    /// Records (or refreshes) the pod's facts, keeping its accounting fields.
    fn insert_pod(&mut self, pod: &Pod, uid: &str, pending: bool) {
        let last_failure = self.pods.get(uid).and_then(|p| p.last_failure.clone());
        let (node, assumed) = self
            .pods
            .get(uid)
            .map_or((None, false), |p| (p.node.clone(), p.assumed));
        self.pods.insert(
            uid.to_string(),
            CachedPod {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                info: Arc::new(PodInfo::new(pod)),
                node,
                assumed,
                pending,
                last_failure,
            },
        );
    }

    fn delete_pod(&mut self, uid: &str) {
        let freed = self.pods.get(uid).is_some_and(|p| p.node.is_some());
        self.unaccount(uid);
        self.pods.remove(uid);
        self.queues.remove(uid);
        if freed {
            self.flush_unschedulable();
        }
    }
}

/// The outcome of one scheduling attempt.
enum Attempt {
    Bind {
        uid: String,
        namespace: String,
        name: String,
        node: String,
    },
    Unschedulable {
        uid: String,
        namespace: String,
        name: String,
        message: String,
        write_status: bool,
    },
}

/// Runs one scheduling attempt for the next pending pod, assuming it on its node.
fn attempt(cache: &mut Cache) -> Option<Attempt> {
    loop {
        let uid = cache.queues.pop()?;
        let Some(p) = cache.pods.get(&uid) else {
            continue;
        };
        if !p.pending || p.node.is_some() {
            continue;
        }
        let info = p.info.clone();
        let (namespace, name) = (p.namespace.clone(), p.name.clone());
        match core::schedule(&info, &cache.nodes) {
            Ok(i) => {
                let node = cache.nodes[i].name.clone();
                cache.account(&uid, &node, true);
                return Some(Attempt::Bind {
                    uid,
                    namespace,
                    name,
                    node,
                });
            }
            Err(e) => {
                let message = e.to_string();
                cache.queues.unschedulable.insert(uid.clone());
                let p = cache.pods.get_mut(&uid)?;
                let write_status = p.last_failure.as_deref() != Some(message.as_str());
                p.last_failure = Some(message.clone());
                return Some(Attempt::Unschedulable {
                    uid,
                    namespace,
                    name,
                    message,
                    write_status,
                });
            }
        }
    }
}

struct Shared {
    cache: Mutex<Cache>,
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Cache> {
        // a panic while holding the lock leaves a usable cache: take it over
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An Event to record off the binding path.
struct EventMsg {
    involved: k8s_openapi::api::core::v1::ObjectReference,
    kind: EventType,
    reason: &'static str,
    message: String,
}

/// Runs the scheduler until its task is dropped.
pub async fn run(ctx: Context) -> Result<(), ControllerError> {
    let shared = Arc::new(Shared {
        cache: Mutex::new(Cache::default()),
        wake: Notify::new(),
    });
    let (events_tx, events_rx) = mpsc::channel::<EventMsg>(10_000);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(watch::<Node>(ctx.client.clone(), shared.clone()));
    tasks.spawn(watch::<Pod>(ctx.client.clone(), shared.clone()));
    tasks.spawn(record_events(ctx.clone(), events_rx));
    tasks.spawn(flush_periodically(shared.clone()));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    info!("scheduler started");
    loop {
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ControllerError::Invalid(e.to_string()))?;
        let next = {
            let mut cache = shared.lock();
            if cache.nodes_synced && cache.pods_synced {
                attempt(&mut cache)
            } else {
                None
            }
        };
        let Some(next) = next else {
            drop(permit);
            shared.wake.notified().await;
            continue;
        };
        match next {
            Attempt::Bind {
                uid,
                namespace,
                name,
                node,
            } => {
                let client = ctx.client.clone();
                let shared = shared.clone();
                let events = events_tx.clone();
                tokio::spawn(async move {
                    bind(client, shared, events, uid, namespace, name, node).await;
                    drop(permit);
                });
            }
            Attempt::Unschedulable {
                uid,
                namespace,
                name,
                message,
                write_status,
            } => {
                drop(permit);
                debug!(pod = %format!("{namespace}/{name}"), %message, "pod is unschedulable");
                let involved = pod_reference(&uid, &namespace, &name);
                let _ = events_tx.try_send(EventMsg {
                    involved,
                    kind: EventType::Warning,
                    reason: "FailedScheduling",
                    message: message.clone(),
                });
                if write_status {
                    let client = ctx.client.clone();
                    tokio::spawn(async move {
                        mark_unschedulable(client, &namespace, &name, &message).await;
                    });
                }
            }
        }
    }
}

fn pod_reference(
    uid: &str,
    namespace: &str,
    name: &str,
) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        uid: Some(uid.into()),
        ..Default::default()
    }
}

/// POSTs the binding; on failure forgets the assumption and retries the pod later.
async fn bind(
    client: kube::Client,
    shared: Arc<Shared>,
    events: mpsc::Sender<EventMsg>,
    uid: String,
    namespace: String,
    name: String,
    node: String,
) {
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let res: Result<serde_json::Value, kube::Error> = api
        .create_subresource("binding", &name, &PostParams::default(), &binding)
        .await;
    match res {
        Ok(_) => {
            debug!(pod = %format!("{namespace}/{name}"), %node, "pod bound");
            let _ = events.try_send(EventMsg {
                involved: pod_reference(&uid, &namespace, &name),
                kind: EventType::Normal,
                reason: "Scheduled",
                message: format!("Successfully assigned {namespace}/{name} to {node}"),
            });
        }
        Err(e) => {
            let gone = matches!(&e, kube::Error::Api(s) if s.code == 404);
            warn!(pod = %format!("{namespace}/{name}"), %node, error = %e, "binding failed");
            {
                let mut cache = shared.lock();
                let still_assumed = cache
                    .pods
                    .get(&uid)
                    .is_some_and(|p| p.assumed && p.node.as_deref() == Some(node.as_str()));
                if still_assumed {
                    cache.unaccount(&uid);
                }
                if gone {
                    cache.delete_pod(&uid);
                }
            }
            if !gone {
                tokio::time::sleep(BIND_BACKOFF).await;
                let mut cache = shared.lock();
                if let Some(p) = cache.pods.get(&uid)
                    && p.pending
                    && p.node.is_none()
                {
                    let prio = p.info.priority;
                    cache.queues.push(&uid, prio);
                }
            }
            shared.wake.notify_one();
        }
    }
}

/// Sets `PodScheduled=False`, reason `Unschedulable`, with the scheduler's message.
async fn mark_unschedulable(client: kube::Client, namespace: &str, name: &str, message: &str) {
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastProbeTime": null, "lastTransitionTime": now,
    }]}});
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
    {
        debug!(pod = %format!("{namespace}/{name}"), error = %e, "cannot update pod status");
    }
}

/// Records Events from the queue, a few at a time, so binding never waits for them.
async fn record_events(ctx: Context, mut rx: mpsc::Receiver<EventMsg>) {
    let limit = Arc::new(Semaphore::new(16));
    let component = "default-scheduler".to_string();
    while let Some(ev) = rx.recv().await {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let client = ctx.client.clone();
        let component = component.clone();
        tokio::spawn(async move {
            events::record(
                &client,
                &component,
                ev.involved,
                ev.kind,
                ev.reason,
                &ev.message,
            )
            .await;
            drop(permit);
        });
    }
}

async fn flush_periodically(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(FLUSH_UNSCHEDULABLE);
    tick.tick().await;
    loop {
        tick.tick().await;
        shared.lock().flush_unschedulable();
        shared.wake.notify_one();
    }
}

/// How the cache takes in one watched kind.
trait Watched:
    kube::Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + 'static
{
    /// The cache key (node name, pod uid).
    fn cache_key(&self) -> Option<String>;
    fn apply(&self, cache: &mut Cache);
    fn delete(key: &str, cache: &mut Cache);
    /// Keys in the cache now.
    fn keys(cache: &Cache) -> Vec<String>;
    fn relist(cache: &mut Cache) -> &mut Option<HashSet<String>>;
    fn synced(cache: &mut Cache) -> &mut bool;
}

impl Watched for Node {
    fn cache_key(&self) -> Option<String> {
        self.metadata.name.clone()
    }
    fn apply(&self, cache: &mut Cache) {
        cache.apply_node(self);
    }
    fn delete(key: &str, cache: &mut Cache) {
        cache.delete_node(key);
    }
    fn keys(cache: &Cache) -> Vec<String> {
        cache.nodes.iter().map(|n| n.name.clone()).collect()
    }
    fn relist(cache: &mut Cache) -> &mut Option<HashSet<String>> {
        &mut cache.relist_nodes
    }
    fn synced(cache: &mut Cache) -> &mut bool {
        &mut cache.nodes_synced
    }
}

impl Watched for Pod {
    fn cache_key(&self) -> Option<String> {
        self.metadata.uid.clone()
    }
    fn apply(&self, cache: &mut Cache) {
        cache.apply_pod(self);
    }
    fn delete(key: &str, cache: &mut Cache) {
        cache.delete_pod(key);
    }
    fn keys(cache: &Cache) -> Vec<String> {
        cache.pods.keys().cloned().collect()
    }
    fn relist(cache: &mut Cache) -> &mut Option<HashSet<String>> {
        &mut cache.relist_pods
    }
    fn synced(cache: &mut Cache) -> &mut bool {
        &mut cache.pods_synced
    }
}

/// Feeds the cache from a watch of every `K`; a relist drops what is no longer there.
async fn watch<K: Watched>(client: kube::Client, shared: Arc<Shared>) {
    let api: Api<K> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                debug!(kind = %K::kind(&()), error = %e, "watch failed, retrying");
                tokio::time::sleep(BIND_BACKOFF).await;
                continue;
            }
        };
        {
            let mut cache = shared.lock();
            match ev {
                watcher::Event::Apply(o) => o.apply(&mut cache),
                watcher::Event::Delete(o) => {
                    if let Some(k) = o.cache_key() {
                        K::delete(&k, &mut cache);
                    }
                }
                watcher::Event::Init => *K::relist(&mut cache) = Some(HashSet::new()),
                watcher::Event::InitApply(o) => {
                    if let (Some(seen), Some(k)) = (K::relist(&mut cache).as_mut(), o.cache_key()) {
                        seen.insert(k);
                    }
                    o.apply(&mut cache);
                }
                watcher::Event::InitDone => {
                    if let Some(seen) = K::relist(&mut cache).take() {
                        for k in K::keys(&cache).into_iter().filter(|k| !seen.contains(k)) {
                            K::delete(&k, &mut cache);
                        }
                    }
                    *K::synced(&mut cache) = true;
                }
            }
        }
        shared.wake.notify_one();
    }
}

//! The garbage collector, as kube-controller-manager's: a graph of every object with
//! ownerReferences (fed by one watch per served kind, found through discovery), and a worker
//! that
//! - deletes an object whose owners are all gone (by uid) or being deleted in the foreground,
//!   and drops such references when another owner still exists;
//! - for an owner deleted with `propagationPolicy: Orphan` (finalizer `orphan`), removes the
//!   owner's references from its dependents, then the finalizer;
//! - for an owner deleted in the foreground (finalizer `foregroundDeletion`), deletes its
//!   dependents and removes the finalizer once no dependent with `blockOwnerDeletion` is left.
//!
//! The API server puts the finalizers on at delete time (`api::rest`), Background needs no
//! finalizer: the owner goes at once and its dependents follow as they become dangling.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::discovery::{ApiResource, Discovery, Scope, verbs};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};

use super::{Context, ControllerError};

/// The finalizer that makes the garbage collector orphan an object's dependents.
pub const FINALIZER_ORPHAN: &str = "orphan";
/// The finalizer that holds an object until the garbage collector deleted its dependents.
pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";

/// Every object is looked at again this often (a safety net for missed events).
const RESYNC: Duration = Duration::from_secs(30);
/// A failed attempt is retried after this long.
const RETRY: Duration = Duration::from_secs(1);

/// One object in the graph.
#[derive(Debug, Clone)]
struct Item {
    resource: usize,
    namespace: Option<String>,
    name: String,
    uid: String,
    resource_version: Option<String>,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

impl Item {
    fn from_object(resource: usize, o: &DynamicObject) -> Option<Item> {
        let m = &o.metadata;
        Some(Item {
            resource,
            namespace: m.namespace.clone(),
            name: m.name.clone()?,
            uid: m.uid.clone()?,
            resource_version: m.resource_version.clone(),
            owners: m.owner_references.clone().unwrap_or_default(),
            deleting: m.deletion_timestamp.is_some(),
            finalizers: m.finalizers.clone().unwrap_or_default(),
        })
    }

    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }

    fn deleting_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FINALIZER_FOREGROUND)
    }
}

/// The ownership graph.
#[derive(Debug, Default)]
struct Graph {
    items: HashMap<String, Item>,
    /// owner uid → uids of objects referring to it.
    dependents: HashMap<String, HashSet<String>>,
    /// Resources whose watch has listed everything once.
    synced: HashSet<usize>,
    /// Keys listed since a resource's last watch Init (to drop what vanished).
    relisting: HashMap<usize, HashSet<String>>,
}

impl Graph {
    fn link(&mut self, item: &Item) {
        for o in &item.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(item.uid.clone());
        }
    }

    fn unlink(&mut self, item: &Item) {
        for o in &item.owners {
            if let Some(d) = self.dependents.get_mut(&o.uid) {
                d.remove(&item.uid);
                if d.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
    }

    /// Adds or replaces an object; returns the uids to look at.
    fn upsert(&mut self, item: Item) -> Vec<String> {
        let mut touch = Vec::new();
        if let Some(old) = self.items.remove(&item.uid) {
            self.unlink(&old);
            // an owner it let go of may be waiting for it
            touch.extend(
                old.owners
                    .iter()
                    .filter(|o| !item.owners.iter().any(|n| n.uid == o.uid))
                    .map(|o| o.uid.clone()),
            );
        }
        self.link(&item);
        let gc_finalizer =
            item.has_finalizer(FINALIZER_ORPHAN) || item.has_finalizer(FINALIZER_FOREGROUND);
        if !item.owners.is_empty() || (item.deleting && gc_finalizer) {
            touch.push(item.uid.clone());
        }
        self.items.insert(item.uid.clone(), item);
        touch
    }

    /// Removes an object; returns the uids to look at (its dependents and owners).
    fn remove(&mut self, uid: &str) -> Vec<String> {
        let Some(old) = self.items.remove(uid) else {
            return Vec::new();
        };
        self.unlink(&old);
        let mut touch: Vec<String> = old.owners.iter().map(|o| o.uid.clone()).collect();
        touch.extend(self.dependents.get(uid).into_iter().flatten().cloned());
        touch
    }

    fn dependents_of(&self, uid: &str) -> Vec<Item> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.items.get(d).cloned())
            .collect()
    }
}

/// Where an owner reference stands.
#[derive(Debug, PartialEq, Eq)]
enum OwnerState {
    /// The owner exists and is not being deleted in the foreground.
    Solid,
    /// No object with that uid exists.
    Dangling,
    /// The owner is being deleted in the foreground and waits for its dependents.
    Waiting,
}

struct Gc {
    client: kube::Client,
    resources: Vec<ApiResource>,
    /// (apiVersion, kind) → index in `resources`, and whether it is namespaced.
    by_kind: HashMap<(String, String), (usize, bool)>,
    graph: Mutex<Graph>,
    queue: mpsc::UnboundedSender<String>,
    synced: Notify,
}

impl Gc {
    fn lock(&self) -> MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enqueue(&self, uids: Vec<String>) {
        for u in uids {
            let _ = self.queue.send(u);
        }
    }

    fn api(&self, item: &Item) -> Api<DynamicObject> {
        let ar = &self.resources[item.resource];
        match &item.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        }
    }

    /// Whether the owner `o` of `item` exists, is gone, or waits for its dependents.
    async fn owner_state(
        &self,
        item: &Item,
        o: &OwnerReference,
    ) -> Result<OwnerState, kube::Error> {
        if let Some(owner) = self.lock().items.get(&o.uid) {
            return Ok(if owner.deleting_dependents() {
                OwnerState::Waiting
            } else {
                OwnerState::Solid
            });
        }
        // not in the graph: ask the API server (the graph may lag behind)
        let Some(&(idx, namespaced)) = self.by_kind.get(&(o.api_version.clone(), o.kind.clone()))
        else {
            // a kind this server does not serve: never collect because of it
            return Ok(OwnerState::Solid);
        };
        let ar = &self.resources[idx];
        let api: Api<DynamicObject> = match (&item.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, ar),
            (None, true) => return Ok(OwnerState::Dangling),
            (_, false) => Api::all_with(self.client.clone(), ar),
        };
        Ok(match api.get_opt(&o.name).await? {
            Some(owner) if owner.metadata.uid.as_deref() == Some(o.uid.as_str()) => {
                let deleting_dependents = owner.metadata.deletion_timestamp.is_some()
                    && owner
                        .metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == FINALIZER_FOREGROUND);
                if deleting_dependents {
                    OwnerState::Waiting
                } else {
                    OwnerState::Solid
                }
            }
            _ => OwnerState::Dangling,
        })
    }

    /// Looks at one object.
    async fn process(&self, uid: &str) -> Result<(), kube::Error> {
        let Some(item) = self.lock().items.get(uid).cloned() else {
            return Ok(());
        };
        if item.deleting {
            if item.has_finalizer(FINALIZER_ORPHAN) {
                return self.orphan_dependents(&item).await;
            }
            if item.has_finalizer(FINALIZER_FOREGROUND) {
                return self.delete_dependents(&item).await;
            }
            return Ok(());
        }
        if item.owners.is_empty() {
            return Ok(());
        }
        self.attempt_to_delete(&item).await
    }

    /// Deletes `item` if none of its owners is left, else drops the references to owners
    /// that are gone or deleting in the foreground.
    async fn attempt_to_delete(&self, item: &Item) -> Result<(), kube::Error> {
        let mut solid = 0usize;
        let mut drop_uids = Vec::new();
        let mut waiting = false;
        for o in &item.owners {
            match self.owner_state(item, o).await? {
                OwnerState::Solid => solid += 1,
                OwnerState::Dangling => drop_uids.push(o.uid.clone()),
                OwnerState::Waiting => {
                    waiting = true;
                    drop_uids.push(o.uid.clone());
                }
            }
        }
        if solid > 0 {
            if drop_uids.is_empty() {
                return Ok(());
            }
            let keep: Vec<&OwnerReference> = item
                .owners
                .iter()
                .filter(|o| !drop_uids.contains(&o.uid))
                .collect();
            info!(object = %key(item), dropped = ?drop_uids, "removing references to owners that are gone");
            return self.set_owners(item, &keep).await;
        }
        let has_dependents = self.lock().dependents.contains_key(&item.uid);
        let policy = if waiting && has_dependents {
            "Foreground"
        } else if item.has_finalizer(FINALIZER_ORPHAN) {
            "Orphan"
        } else if item.has_finalizer(FINALIZER_FOREGROUND) {
            "Foreground"
        } else {
            "Background"
        };
        info!(object = %key(item), kind = %self.resources[item.resource].kind, policy, "deleting object whose owners are gone");
        let dp = DeleteParams {
            propagation_policy: Some(match policy {
                "Foreground" => kube::api::PropagationPolicy::Foreground,
                "Orphan" => kube::api::PropagationPolicy::Orphan,
                _ => kube::api::PropagationPolicy::Background,
            }),
            preconditions: Some(Preconditions {
                uid: Some(item.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api(item).delete(&item.name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes the owner's references from its dependents, then the `orphan` finalizer.
    async fn orphan_dependents(&self, owner: &Item) -> Result<(), kube::Error> {
        let dependents = self.lock().dependents_of(&owner.uid);
        for d in &dependents {
            let keep: Vec<&OwnerReference> =
                d.owners.iter().filter(|o| o.uid != owner.uid).collect();
            self.set_owners(d, &keep).await?;
        }
        info!(object = %key(owner), orphaned = dependents.len(), "dependents orphaned");
        self.remove_finalizer(owner, FINALIZER_ORPHAN).await
    }

    /// Deletes the owner's dependents; removes `foregroundDeletion` once none that blocks
    /// the owner's deletion is left.
    async fn delete_dependents(&self, owner: &Item) -> Result<(), kube::Error> {
        let dependents = self.lock().dependents_of(&owner.uid);
        let blocking = dependents.iter().any(|d| {
            d.owners
                .iter()
                .any(|o| o.uid == owner.uid && o.block_owner_deletion == Some(true))
        });
        if !blocking {
            debug!(object = %key(owner), "no blocking dependents left");
            return self.remove_finalizer(owner, FINALIZER_FOREGROUND).await;
        }
        for d in dependents.iter().filter(|d| !d.deleting) {
            self.attempt_to_delete(d).await?;
        }
        Ok(())
    }

    async fn set_owners(&self, item: &Item, owners: &[&OwnerReference]) -> Result<(), kube::Error> {
        let patch = json!({"metadata": {"ownerReferences": list_or_null(owners),
                                         "resourceVersion": item.resource_version}});
        self.patch(item, &patch).await
    }

    async fn remove_finalizer(&self, item: &Item, f: &str) -> Result<(), kube::Error> {
        let rest: Vec<&String> = item.finalizers.iter().filter(|x| *x != f).collect();
        let patch = json!({"metadata": {"finalizers": list_or_null(&rest),
                                         "resourceVersion": item.resource_version}});
        self.patch(item, &patch).await
    }

    async fn patch(&self, item: &Item, patch: &serde_json::Value) -> Result<(), kube::Error> {
        match self
            .api(item)
            .patch(&item.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A merge-patch value for a list: `null` (remove the field) when empty.
fn list_or_null<T: serde::Serialize>(items: &[T]) -> serde_json::Value {
    if items.is_empty() {
        serde_json::Value::Null
    } else {
        json!(items)
    }
}

fn key(item: &Item) -> String {
    match &item.namespace {
        Some(ns) => format!("{ns}/{}", item.name),
        None => item.name.clone(),
    }
}

/// Runs the garbage collector until its task is dropped.
pub async fn run(ctx: Context) -> Result<(), ControllerError> {
    let discovery = Discovery::new(ctx.client.clone()).run().await?;
    let mut resources = Vec::new();
    let mut by_kind = HashMap::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !(caps.supports_operation(verbs::WATCH)
                && caps.supports_operation(verbs::LIST)
                && caps.supports_operation(verbs::DELETE))
            {
                continue;
            }
            by_kind.insert(
                (ar.api_version.clone(), ar.kind.clone()),
                (resources.len(), caps.scope == Scope::Namespaced),
            );
            resources.push(ar);
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let gc = Arc::new(Gc {
        client: ctx.client.clone(),
        resources,
        by_kind,
        graph: Mutex::new(Graph::default()),
        queue: tx.clone(),
        synced: Notify::new(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for idx in 0..gc.resources.len() {
        tasks.spawn(watch(gc.clone(), idx));
    }
    // Act only on a complete graph: orphaning needs every dependent known.
    loop {
        let notified = gc.synced.notified();
        if gc.lock().synced.len() == gc.resources.len() {
            break;
        }
        notified.await;
    }
    info!(resources = gc.resources.len(), "garbage collector synced");
    let resync_gc = gc.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(RESYNC);
        loop {
            tick.tick().await;
            let uids: Vec<String> = resync_gc.lock().items.keys().cloned().collect();
            resync_gc.enqueue(uids);
        }
    });
    let mut pending: HashSet<String> = HashSet::new();
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 1024).await > 0 {
        // each uid once per batch, in arrival order
        for uid in batch.drain(..) {
            if !pending.insert(uid.clone()) {
                continue;
            }
            if let Err(e) = gc.process(&uid).await {
                warn!(uid = %uid, error = %e, "garbage collection failed, retrying");
                let tx = tx.clone();
                let retry = uid.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RETRY).await;
                    let _ = tx.send(retry);
                });
            }
        }
        pending.clear();
    }
    Ok(())
}

/// Feeds the graph from a watch of one resource.
async fn watch(gc: Arc<Gc>, idx: usize) {
    let ar = gc.resources[idx].clone();
    let api: Api<DynamicObject> = Api::all_with(gc.client.clone(), &ar);
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                debug!(kind = %ar.kind, error = %e, "watch failed, retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let touch = {
            let mut g = gc.lock();
            match ev {
                watcher::Event::Apply(o) => Item::from_object(idx, &o)
                    .map(|i| g.upsert(i))
                    .unwrap_or_default(),
                watcher::Event::Delete(o) => o
                    .metadata
                    .uid
                    .as_deref()
                    .map(|u| g.remove(u))
                    .unwrap_or_default(),
                watcher::Event::Init => {
                    g.relisting.insert(idx, HashSet::new());
                    Vec::new()
                }
                watcher::Event::InitApply(o) => match Item::from_object(idx, &o) {
                    Some(i) => {
                        if let Some(seen) = g.relisting.get_mut(&idx) {
                            seen.insert(i.uid.clone());
                        }
                        g.upsert(i)
                    }
                    None => Vec::new(),
                },
                watcher::Event::InitDone => {
                    let seen = g.relisting.remove(&idx).unwrap_or_default();
                    let stale: Vec<String> = g
                        .items
                        .values()
                        .filter(|i| i.resource == idx && !seen.contains(&i.uid))
                        .map(|i| i.uid.clone())
                        .collect();
                    let mut touch = Vec::new();
                    for uid in stale {
                        touch.extend(g.remove(&uid));
                    }
                    g.synced.insert(idx);
                    gc.synced.notify_waiters();
                    touch
                }
            }
        };
        gc.enqueue(touch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(uid: &str, owners: &[&str], deleting: bool, finalizers: &[&str]) -> Item {
        Item {
            resource: 0,
            namespace: Some("default".into()),
            name: uid.into(),
            uid: uid.into(),
            resource_version: None,
            owners: owners
                .iter()
                .map(|o| OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: (*o).into(),
                    uid: (*o).into(),
                    ..Default::default()
                })
                .collect(),
            deleting,
            finalizers: finalizers.iter().map(|f| (*f).to_string()).collect(),
        }
    }

    #[test]
    fn graph_tracks_dependents_and_says_what_to_look_at() {
        let mut g = Graph::default();
        assert!(g.upsert(item("owner", &[], false, &[])).is_empty());
        assert_eq!(g.upsert(item("a", &["owner"], false, &[])), vec!["a"]);
        assert_eq!(g.upsert(item("b", &["owner", "x"], false, &[])), vec!["b"]);
        let mut deps: Vec<String> = g
            .dependents_of("owner")
            .into_iter()
            .map(|i| i.uid)
            .collect();
        deps.sort();
        assert_eq!(deps, vec!["a", "b"]);
        // an owner deleting with a GC finalizer is looked at; one without is not
        assert_eq!(
            g.upsert(item("owner", &[], true, &[FINALIZER_FOREGROUND])),
            vec!["owner"]
        );
        assert!(g.items["owner"].deleting_dependents());
        // b lets go of owner: owner is looked at again (it may be waiting for b)
        let touch = g.upsert(item("b", &["x"], false, &[]));
        assert_eq!(touch, vec!["owner", "b"]);
        assert_eq!(g.dependents_of("owner").len(), 1);
        // removing the owner points at its dependents
        let mut touch = g.remove("owner");
        touch.sort();
        assert_eq!(touch, vec!["a"]);
        // removing a dependent points at its owners
        assert_eq!(g.remove("a"), vec!["owner"]);
        assert!(g.dependents_of("owner").is_empty());
        assert!(g.remove("nothing").is_empty());
    }
}

//! The pods of this node: a kube-runtime reflector over pods with
//! `spec.nodeName=<node>` feeds one [`Worker`] per pod uid. After the first full list,
//! leftovers of pods the API no longer has (their run dirs) are removed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use skiff_runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::Result;
use crate::images::Images;
use crate::sandbox::PodNetwork;
use crate::worker::{self, Shared, Worker};

struct Slot {
    tx: watch::Sender<Option<Arc<Pod>>>,
    task: JoinHandle<()>,
    version: Option<String>,
}

/// Watches this node's pods and runs their workers until cancelled.
pub async fn run(
    client: kube::Client,
    cfg: Arc<Config>,
    network: Box<dyn PodNetwork>,
) -> Result<()> {
    let images = Arc::new(Images::open(
        &cfg.root_dir,
        cfg.insecure_registries.clone(),
    )?);
    let gc = Arc::new(tokio::sync::Mutex::new(crate::imagegc::ImageGc::new(
        images.clone(),
        &cfg,
    )));
    let _gc = AbortOnDrop(tokio::spawn(crate::imagegc::ImageGc::run(gc.clone())));
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        client: client.clone(),
        images,
        network,
    });
    let api: Api<Pod> = Api::all(client);
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    let (reader, writer) = reflector::store();
    let manager = crate::eviction::Manager::new(cfg.clone(), gc);
    let r = reader.clone();
    let _eviction = AbortOnDrop(tokio::spawn(manager.run(move || r.state())));
    // managedFields are never read here; dropped before the store keeps the pod
    let stream = watcher(api, wc).map_ok(|ev| {
        ev.modify(|p| {
            p.metadata.managed_fields = None;
        })
    });
    let mut events = reflector(writer, stream)
        .default_backoff()
        .touched_objects()
        .boxed();
    let mut slots: HashMap<String, Slot> = HashMap::new();
    let mut done: HashSet<String> = HashSet::new();
    let mut swept = false;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed, retrying"),
                Some(Ok(_)) => {}
                None => return Ok(()),
            },
            _ = tick.tick() => {}
        }
        let Some(_) = reader.wait_until_ready().now_or_never_ready() else {
            continue;
        };
        let pods = reader.state();
        let live: HashSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        for p in pods {
            let Some(uid) = p.metadata.uid.clone() else {
                continue;
            };
            if done.contains(&uid) {
                continue;
            }
            let version = p.metadata.resource_version.clone();
            match slots.get_mut(&uid) {
                Some(s) => {
                    if s.version != version {
                        s.version = version;
                        let _ = s.tx.send(Some(p.clone()));
                    }
                }
                None => {
                    let (tx, rx) = watch::channel(Some(p.clone()));
                    let w = Worker::new(shared.clone(), p.clone());
                    // boxed: the worker's future is large, and a task is spawned per pod
                    let task = tokio::spawn(Box::pin(w.run(rx)));
                    slots.insert(uid, Slot { tx, task, version });
                }
            }
        }
        for (uid, s) in slots.iter() {
            if !live.contains(uid) {
                let _ = s.tx.send(None);
            }
        }
        let finished: Vec<String> = slots
            .iter()
            .filter(|(_, s)| s.task.is_finished())
            .map(|(u, _)| u.clone())
            .collect();
        for uid in finished {
            slots.remove(&uid);
            if live.contains(&uid) {
                done.insert(uid);
            }
        }
        done.retain(|u| live.contains(u));
        if !swept {
            swept = true;
            sweep(&shared, &live).await;
        }
    }
}

/// Removes the leftovers of pods this node ran that the API no longer has.
async fn sweep(shared: &Arc<Shared>, live: &HashSet<String>) {
    // addresses of pods deleted while the agent was away (also after a reboot, when their
    // run dirs are gone)
    let (s, l) = (shared.clone(), live.clone());
    match tokio::task::spawn_blocking(move || s.network.retain(&l)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot release the addresses of deleted pods"),
        Err(e) => tracing::warn!(error = %e, "address release panicked"),
    }
    let dir = shared.cfg.run_dir.join("pods");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(uid) = e.file_name().into_string() else {
            continue;
        };
        if live.contains(&uid) {
            continue;
        }
        let names: Vec<String> = std::fs::read_dir(e.path().join("containers"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        let shared = shared.clone();
        let rt = Runtime::new(shared.cfg.runtime_root())
            .with_cgroup_root(shared.cfg.cgroup_root.clone());
        let u = uid.clone();
        let r =
            tokio::task::spawn_blocking(move || worker::cleanup(&shared, &rt, &u, &names, None))
                .await;
        match r {
            Ok(Ok(())) => tracing::info!(uid = %uid, "removed leftovers of a deleted pod"),
            Ok(Err(e)) => {
                tracing::warn!(uid = %uid, error = %e, "cannot remove leftovers of a deleted pod")
            }
            Err(e) => tracing::warn!(uid = %uid, error = %e, "leftover removal panicked"),
        }
    }
}

trait ReadyNow {
    fn now_or_never_ready(self) -> Option<()>;
}

impl<F: std::future::Future> ReadyNow for F {
    fn now_or_never_ready(self) -> Option<()> {
        futures::FutureExt::now_or_never(self).map(|_| ())
    }
}

/// Aborts a task when dropped (the image GC ends with the pods loop).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

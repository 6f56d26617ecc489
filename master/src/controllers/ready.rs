//! "Has this cache had its first full list?", awaited by many reconciles at once.
//!
//! kube-runtime's `Store::wait_until_ready` rests on a `futures` oneshot receiver, which keeps
//! one waker only: of several reconciles waiting on the same store before its first list,
//! only the one that polled last is woken when the list arrives, and the others stay pending
//! forever. A kube-runtime `Controller` never runs an object again while its reconcile is in
//! flight, so those objects were never reconciled again. That is what stalled a rollout after
//! a master restart: every existing ReplicaSet and Deployment is reconciled at once at
//! startup, before the pod cache is filled. [`Ready`] shares one wait between all of them
//! (`futures::future::Shared` wakes every waiter).

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use kube::runtime::reflector::Store;

/// A store's readiness, awaitable by any number of tasks at once.
#[derive(Clone)]
pub struct Ready(Shared<BoxFuture<'static, bool>>);

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready")
            .field("ready", &self.0.peek().copied())
            .finish()
    }
}

impl Ready {
    /// The readiness of `store`.
    pub fn of<K>(store: &Store<K>) -> Ready
    where
        K: kube::Resource + Clone + Send + Sync + 'static,
        K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
    {
        let store = store.clone();
        Ready(
            async move { store.wait_until_ready().await.is_ok() }
                .boxed()
                .shared(),
        )
    }

    /// Waits until the store had its first full list: true, or false when its writer is
    /// gone without one (the controller is stopping).
    pub async fn wait(&self) -> bool {
        self.0.clone().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::reflector;
    use kube::runtime::watcher;
    use std::time::Duration;

    /// Spawns `n` waiters, lets each be polled once (pending), then fills the store;
    /// returns how many finished within a second.
    async fn woken(n: usize, shared: bool) -> usize {
        let (store, mut writer) = reflector::store::<Pod>();
        let ready = Ready::of(&store);
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (store, ready) = (store.clone(), ready.clone());
                tokio::spawn(async move {
                    if shared {
                        ready.wait().await
                    } else {
                        store.wait_until_ready().await.is_ok()
                    }
                })
            })
            .collect();
        // current-thread runtime: every spawned task runs (and registers its waker)
        // before this one is polled again
        tokio::task::yield_now().await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let mut done = 0;
        for t in tasks {
            if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(1), t).await {
                done += 1;
            }
        }
        done
    }

    #[tokio::test(flavor = "current_thread")]
    async fn every_waiter_is_woken() {
        assert_eq!(woken(5, true).await, 5);
    }

    /// What [`Ready`] is for: the store's own wait wakes one waiter of several.
    #[tokio::test(flavor = "current_thread")]
    async fn the_stores_own_wait_loses_waiters() {
        assert!(woken(5, false).await < 5);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_gone_writer_is_not_ready() {
        let (store, writer) = reflector::store::<Pod>();
        let ready = Ready::of(&store);
        drop(writer);
        assert!(!ready.wait().await);
    }
}

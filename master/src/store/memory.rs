//! An in-memory `Store`: the same contract as the durable backends, kept in a `BTreeMap`
//! with an event log for watches. For tests and for running without a data file.
//! Lists are always read at the current revision (an older revision is accepted if it is
//! not compacted, but the data returned is current).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::broadcast;

use super::{Event, EventKind, KeyValue, ListResult, Revision, Store, StoreError, WatchStream};

#[derive(Default)]
struct Inner {
    map: BTreeMap<String, KeyValue>,
    revision: Revision,
    log: VecDeque<Event>,
    /// Events with revision <= compacted are gone.
    compacted: Revision,
}

/// The in-memory store.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Event>,
    max_log: usize,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

fn poisoned() -> StoreError {
    StoreError::Backend("memory store lock poisoned".into())
}

impl MemoryStore {
    /// An empty store at revision 1 (like etcd, the first write gets revision 2).
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        MemoryStore {
            inner: Mutex::new(Inner {
                revision: 1,
                ..Inner::default()
            }),
            tx,
            max_log: 100_000,
        }
    }

    /// A shareable store.
    pub fn shared() -> Arc<dyn Store> {
        Arc::new(Self::new())
    }

    /// Drops the event history up to and including `revision` (watches from there get
    /// Compacted).
    pub fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut g = self.inner.lock().map_err(|_| poisoned())?;
        while g.log.front().is_some_and(|e| e.kv.mod_revision <= revision) {
            g.log.pop_front();
        }
        g.compacted = g.compacted.max(revision);
        Ok(())
    }

    fn record(&self, g: &mut Inner, ev: Event) {
        g.log.push_back(ev.clone());
        while g.log.len() > self.max_log {
            if let Some(e) = g.log.pop_front() {
                g.compacted = e.kv.mod_revision;
            }
        }
        let _ = self.tx.send(ev);
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.lock().map_err(|_| poisoned())?.revision)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self
            .inner
            .lock()
            .map_err(|_| poisoned())?
            .map
            .get(key)
            .cloned())
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListResult, StoreError> {
        let g = self.inner.lock().map_err(|_| poisoned())?;
        if let Some(r) = revision {
            if r > g.revision {
                return Err(StoreError::FutureRevision {
                    requested: r,
                    current: g.revision,
                });
            }
            if r < g.compacted {
                return Err(StoreError::Compacted {
                    requested: r,
                    oldest: g.compacted,
                });
            }
        }
        let mut items = Vec::new();
        let mut more = false;
        let start = match start_after {
            Some(s) => std::ops::Bound::Excluded(s.to_string()),
            None => std::ops::Bound::Included(prefix.to_string()),
        };
        for (k, v) in g.map.range((start, std::ops::Bound::Unbounded)) {
            if !k.starts_with(prefix) {
                break;
            }
            if limit > 0 && items.len() == limit {
                more = true;
                break;
            }
            items.push(v.clone());
        }
        Ok(ListResult {
            items,
            revision: g.revision,
            more,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let mut g = self.inner.lock().map_err(|_| poisoned())?;
        if g.map.contains_key(key) {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        g.revision += 1;
        let kv = KeyValue {
            key: key.to_string(),
            value,
            create_revision: g.revision,
            mod_revision: g.revision,
        };
        g.map.insert(key.to_string(), kv.clone());
        let ev = Event {
            kind: EventKind::Put,
            kv: kv.clone(),
            prev: None,
        };
        self.record(&mut g, ev);
        Ok(kv)
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        let mut g = self.inner.lock().map_err(|_| poisoned())?;
        let prev = g
            .map
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        if prev.mod_revision != expected {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                actual: prev.mod_revision,
            });
        }
        g.revision += 1;
        let kv = KeyValue {
            key: key.to_string(),
            value,
            create_revision: prev.create_revision,
            mod_revision: g.revision,
        };
        g.map.insert(key.to_string(), kv.clone());
        let ev = Event {
            kind: EventKind::Put,
            kv: kv.clone(),
            prev: Some(prev),
        };
        self.record(&mut g, ev);
        Ok(kv)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        let mut g = self.inner.lock().map_err(|_| poisoned())?;
        let prev = g
            .map
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        if let Some(e) = expected
            && prev.mod_revision != e
        {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected: e,
                actual: prev.mod_revision,
            });
        }
        g.revision += 1;
        g.map.remove(key);
        let mut kv = prev.clone();
        kv.mod_revision = g.revision;
        let ev = Event {
            kind: EventKind::Delete,
            kv: kv.clone(),
            prev: Some(prev),
        };
        self.record(&mut g, ev);
        Ok(kv)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let g = self.inner.lock().map_err(|_| poisoned())?;
        if after < g.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: g.compacted,
            });
        }
        let history: Vec<Event> = g
            .log
            .iter()
            .filter(|e| e.kv.mod_revision > after && e.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        let last = history
            .last()
            .map_or(after.max(g.revision), |e| e.kv.mod_revision.max(g.revision));
        let rx = self.tx.subscribe();
        drop(g);
        let prefix = prefix.to_string();
        let live = futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(ev) => Some((Ok(ev), rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    Some((Err(StoreError::Backend("watcher fell behind".into())), rx))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .filter(move |r| {
            let keep = match r {
                Ok(ev) => ev.kv.key.starts_with(&prefix) && ev.kv.mod_revision > last,
                Err(_) => true,
            };
            futures::future::ready(keep)
        });
        Ok(Box::pin(
            futures::stream::iter(history.into_iter().map(Ok)).chain(live),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cas_list_and_watch() {
        let s = MemoryStore::new();
        let a = s.create("/r/a", b"1".to_vec()).await.unwrap();
        assert!(matches!(
            s.create("/r/a", b"x".to_vec()).await,
            Err(StoreError::AlreadyExists(_))
        ));
        s.create("/r/b", b"2".to_vec()).await.unwrap();
        s.create("/q/c", b"3".to_vec()).await.unwrap();
        let u = s
            .update("/r/a", b"11".to_vec(), a.mod_revision)
            .await
            .unwrap();
        assert!(matches!(
            s.update("/r/a", b"x".to_vec(), a.mod_revision).await,
            Err(StoreError::Conflict { .. })
        ));
        let page = s.list("/r/", None, 1, None).await.unwrap();
        assert_eq!((page.items.len(), page.more), (1, true));
        let rest = s.list("/r/", Some("/r/a"), 0, None).await.unwrap();
        assert_eq!(rest.items[0].key, "/r/b");
        // history after `a`'s creation, then a live delete
        let mut w = s.watch("/r/", a.mod_revision).await.unwrap();
        let e = w.next().await.unwrap().unwrap();
        assert_eq!((e.kv.key.as_str(), e.kind), ("/r/b", EventKind::Put));
        let e = w.next().await.unwrap().unwrap();
        assert_eq!(e.kv.mod_revision, u.mod_revision);
        s.delete("/r/b", None).await.unwrap();
        let e = w.next().await.unwrap().unwrap();
        assert_eq!((e.kv.key.as_str(), e.kind), ("/r/b", EventKind::Delete));
        s.compact(u.mod_revision).unwrap();
        assert!(matches!(
            s.watch("/r/", a.mod_revision).await,
            Err(StoreError::Compacted { .. })
        ));
    }
}

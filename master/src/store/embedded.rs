//! The embedded, durable `Store`: one redb database file holding the current keys, an event
//! log for watches and a little metadata.
//!
//! Tables:
//! - `kv`: key → (value, create_revision, mod_revision), the current state;
//! - `log`: revision → one encoded [`Event`] (kind, key, value, revisions, previous value);
//! - `meta`: `revision` (the current revision) and `compacted` (events with a revision at or
//!   below it are gone from the log).
//!
//! Writes go to one writer thread that commits them in groups: it takes every write queued
//! while the previous commit was on disk (up to [`MAX_BATCH`]), applies them in order in one
//! redb write transaction (each bumps the revision, updates `kv`, appends to `log`), trims the
//! log to the history window and commits with redb's default `Immediate` durability (fsync).
//! Only then are the events published and the callers answered: an acknowledged write
//! survives `kill -9`, and one fsync covers a whole group (group commit), so concurrent
//! writers are not limited to one write per disk flush. A write refused on its own merits
//! (conflict, exists, not found) changes nothing and does not affect the others of its group;
//! a failed commit fails the whole group. One thread publishing in commit order means live
//! watchers see events in revision order.
//!
//! Like etcd, an empty store is at revision 1 and the first write gets revision 2.
//!
//! Lists at an older revision are served from the event log (a consistent snapshot, as etcd
//! does) as long as every event after that revision is still held; older ones get
//! `Compacted`.
//!
//! All redb reads run in `spawn_blocking`; writes on the writer thread.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use tokio::sync::{broadcast, oneshot};

use super::{Event, EventKind, KeyValue, ListResult, Revision, Store, StoreError, WatchStream};

/// key → (value, create_revision, mod_revision).
const KV: TableDefinition<&str, (&[u8], u64, u64)> = TableDefinition::new("kv");
/// revision → encoded event.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// name → number.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// The revision of an empty store (etcd's).
const INITIAL_REVISION: Revision = 1;
/// Default number of revisions of events kept for watches.
pub const DEFAULT_HISTORY: u64 = 10_000;
/// Default capacity of the live-event channel; a watcher further behind gets an error.
pub const DEFAULT_WATCH_BUFFER: usize = 4096;
/// The most writes committed in one transaction.
pub const MAX_BATCH: usize = 512;
/// Memory redb may use to cache pages. Its own default is 1 GiB, which a small master does
/// not need: the OS page cache holds the file too.
pub const CACHE_BYTES: usize = 64 << 20;

fn backend<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Backend(format!("{what}: {e}"))
}

/// The embedded store. Cheap to share behind an `Arc`.
pub struct EmbeddedStore {
    db: Arc<Database>,
    /// The writer thread, started by the first write (after the `with_*` settings).
    writer: std::sync::OnceLock<Writer>,
    tx: broadcast::Sender<Arc<Event>>,
    history: u64,
}

/// The queue into the writer thread and the thread itself.
struct Writer {
    queue: std::sync::mpsc::Sender<Pending>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One write waiting for its group's commit.
struct Pending {
    op: Op,
    reply: oneshot::Sender<Result<KeyValue, StoreError>>,
}

impl Drop for EmbeddedStore {
    /// Lets the writer finish what is queued and waits for it, so the database file is closed
    /// when the store is gone (and can be opened again at once).
    fn drop(&mut self) {
        if let Some(mut w) = self.writer.take() {
            drop(w.queue);
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the database file at `path`, creating it if missing. After a crash redb repairs
    /// the file on open; every committed write is there.
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| {
                StoreError::Backend(format!("cannot open database {}: {e}", path.display()))
            })?;
        let txn = db.begin_write().map_err(backend("begin write"))?;
        {
            txn.open_table(KV).map_err(backend("open kv table"))?;
            txn.open_table(LOG).map_err(backend("open log table"))?;
            let mut meta = txn.open_table(META).map_err(backend("open meta table"))?;
            if meta
                .get(META_REVISION)
                .map_err(backend("read meta"))?
                .is_none()
            {
                meta.insert(META_REVISION, INITIAL_REVISION)
                    .map_err(backend("write meta"))?;
                meta.insert(META_COMPACTED, 0)
                    .map_err(backend("write meta"))?;
            }
        }
        txn.commit().map_err(backend("commit"))?;
        let (tx, _) = broadcast::channel(DEFAULT_WATCH_BUFFER);
        Ok(EmbeddedStore {
            db: Arc::new(db),
            writer: std::sync::OnceLock::new(),
            tx,
            history: DEFAULT_HISTORY,
        })
    }

    /// Keeps the events of the last `revisions` revisions for watches and old lists (default
    /// [`DEFAULT_HISTORY`]); older ones are dropped as writes come in.
    pub fn with_history(mut self, revisions: u64) -> Self {
        self.history = revisions;
        self
    }

    /// Sets how many live events a watcher may fall behind before its stream fails (default
    /// [`DEFAULT_WATCH_BUFFER`]). Call before any watch.
    pub fn with_watch_buffer(mut self, events: usize) -> Self {
        let (tx, _) = broadcast::channel(events.max(1));
        self.tx = tx;
        self
    }

    /// Drops the events with a revision at or below `keep_after`: watches from an older
    /// revision and lists at one get `Compacted`. Blocks on disk I/O (a redb write
    /// transaction); from async code call it inside `spawn_blocking`.
    pub fn compact(&self, keep_after: Revision) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend("begin write"))?;
        {
            let mut meta = txn.open_table(META).map_err(backend("open meta table"))?;
            let current = read_meta(&meta, META_REVISION)?;
            if keep_after > current {
                return Err(StoreError::FutureRevision {
                    requested: keep_after,
                    current,
                });
            }
            let compacted = read_meta(&meta, META_COMPACTED)?;
            if keep_after <= compacted {
                return Ok(());
            }
            let mut log = txn.open_table(LOG).map_err(backend("open log table"))?;
            log.retain_in(..=keep_after, |_, _| false)
                .map_err(backend("compact log"))?;
            meta.insert(META_COMPACTED, keep_after)
                .map_err(backend("write meta"))?;
        }
        txn.commit().map_err(backend("commit"))?;
        Ok(())
    }

    /// Runs a read-only closure on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(backend("store task"))?
    }

    /// Queues one write for the writer thread and waits until its group is durable and
    /// published. If the caller goes away, the write still completes.
    async fn write(&self, op: Op) -> Result<KeyValue, StoreError> {
        let writer = self.writer.get_or_init(|| {
            let (queue, rx) = std::sync::mpsc::channel();
            let (db, events, history) = (self.db.clone(), self.tx.clone(), self.history);
            let thread = std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || write_loop(&db, history, &events, &rx))
                .map_err(|e| tracing::error!(error = %e, "cannot start the store writer"))
                .ok();
            Writer { queue, thread }
        });
        let (reply, answer) = oneshot::channel();
        writer
            .queue
            .send(Pending { op, reply })
            .map_err(|_| StoreError::Backend("the store writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the store writer has stopped".into()))?
    }
}

/// The writer thread: commits what is queued in groups until the store is dropped.
fn write_loop(
    db: &Database,
    history: u64,
    events: &broadcast::Sender<Arc<Event>>,
    queue: &std::sync::mpsc::Receiver<Pending>,
) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let (ops, replies): (Vec<Op>, Vec<_>) = group.into_iter().map(|p| (p.op, p.reply)).unzip();
        match apply(db, history, ops) {
            Ok(results) => {
                for (result, reply) in results.into_iter().zip(replies) {
                    let answer = result.map(|ev| {
                        let kv = ev.kv.clone();
                        // No receivers is fine.
                        let _ = events.send(Arc::new(ev));
                        kv
                    });
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = replies.len(), "store commit failed");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Backend(e.to_string())));
                }
            }
        }
    }
}

/// One write operation.
enum Op {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

fn read_meta(
    meta: &impl ReadableTable<&'static str, u64>,
    name: &str,
) -> Result<Revision, StoreError> {
    meta.get(name)
        .map_err(backend("read meta"))?
        .map(|v| v.value())
        .ok_or_else(|| StoreError::Backend(format!("meta entry {name} missing")))
}

fn read_kv(
    kv: &impl ReadableTable<&'static str, (&'static [u8], u64, u64)>,
    key: &str,
) -> Result<Option<KeyValue>, StoreError> {
    Ok(kv.get(key).map_err(backend("read key"))?.map(|g| {
        let (value, create_revision, mod_revision) = g.value();
        KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision,
            mod_revision,
        }
    }))
}

fn check_expected(prev: &KeyValue, expected: Option<Revision>) -> Result<(), StoreError> {
    match expected {
        Some(e) if e != prev.mod_revision => Err(StoreError::Conflict {
            key: prev.key.clone(),
            expected: e,
            actual: prev.mod_revision,
        }),
        _ => Ok(()),
    }
}

/// One write transaction for a group of writes, in order: each is checked and, if allowed,
/// gets the next revision, changes its key and is logged; then the log is trimmed and the
/// transaction committed durably. Returns each write's event or its own refusal; an error of
/// the database itself fails the whole group (nothing is committed).
fn apply(
    db: &Database,
    history: u64,
    ops: Vec<Op>,
) -> Result<Vec<Result<Event, StoreError>>, StoreError> {
    let txn = db.begin_write().map_err(backend("begin write"))?;
    let results = {
        let mut meta = txn.open_table(META).map_err(backend("open meta table"))?;
        let mut kv = txn.open_table(KV).map_err(backend("open kv table"))?;
        let mut log = txn.open_table(LOG).map_err(backend("open log table"))?;
        let mut revision = read_meta(&meta, META_REVISION)?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            match apply_one(&mut kv, &mut log, revision + 1, op) {
                Ok(ev) => {
                    revision += 1;
                    results.push(Ok(ev));
                }
                Err(e @ StoreError::Backend(_)) => return Err(e),
                Err(refused) => results.push(Err(refused)),
            }
        }
        meta.insert(META_REVISION, revision)
            .map_err(backend("write meta"))?;
        let compacted = read_meta(&meta, META_COMPACTED)?;
        let keep_after = revision.saturating_sub(history);
        if keep_after > compacted {
            log.retain_in(..=keep_after, |_, _| false)
                .map_err(backend("compact log"))?;
            meta.insert(META_COMPACTED, keep_after)
                .map_err(backend("write meta"))?;
        }
        results
    };
    txn.commit().map_err(backend("commit"))?;
    Ok(results)
}

/// One write at `revision` inside the group's transaction: checks it (a refusal changes
/// nothing), changes the key and logs the event.
fn apply_one(
    kv: &mut Table<&'static str, (&'static [u8], u64, u64)>,
    log: &mut Table<u64, &'static [u8]>,
    revision: Revision,
    op: Op,
) -> Result<Event, StoreError> {
    let ev = match op {
        Op::Create { key, value } => {
            if kv.get(key.as_str()).map_err(backend("read key"))?.is_some() {
                return Err(StoreError::AlreadyExists(key));
            }
            Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key,
                    value,
                    create_revision: revision,
                    mod_revision: revision,
                },
                prev: None,
            }
        }
        Op::Update {
            key,
            value,
            expected,
        } => {
            let prev = read_kv(kv, &key)?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
            check_expected(&prev, Some(expected))?;
            Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key,
                    value,
                    create_revision: prev.create_revision,
                    mod_revision: revision,
                },
                prev: Some(prev),
            }
        }
        Op::Delete { key, expected } => {
            let prev = read_kv(kv, &key)?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
            check_expected(&prev, expected)?;
            let mut last = prev.clone();
            last.mod_revision = revision;
            Event {
                kind: EventKind::Delete,
                kv: last,
                prev: Some(prev),
            }
        }
    };
    match ev.kind {
        EventKind::Put => {
            kv.insert(
                ev.kv.key.as_str(),
                (
                    ev.kv.value.as_slice(),
                    ev.kv.create_revision,
                    ev.kv.mod_revision,
                ),
            )
            .map_err(backend("write key"))?;
        }
        EventKind::Delete => {
            kv.remove(ev.kv.key.as_str())
                .map_err(backend("delete key"))?;
        }
    }
    log.insert(revision, encode_event(&ev).as_slice())
        .map_err(backend("append log"))?;
    Ok(ev)
}

// Event records: kind (u8: 0 put, 1 delete), key, value, create_revision, mod_revision,
// has_prev (u8), then prev's value, create_revision, mod_revision (prev's key is the key).
// Byte strings are a u32 little-endian length then the bytes; numbers are u64 little-endian.

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Keys and values are far below 4 GiB (etcd caps requests at 1.5 MiB).
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

fn encode_event(ev: &Event) -> Vec<u8> {
    let prev_len = ev.prev.as_ref().map_or(0, |p| p.value.len() + 20);
    let mut out = Vec::with_capacity(30 + ev.kv.key.len() + ev.kv.value.len() + prev_len);
    out.push(match ev.kind {
        EventKind::Put => 0,
        EventKind::Delete => 1,
    });
    put_bytes(&mut out, ev.kv.key.as_bytes());
    put_bytes(&mut out, &ev.kv.value);
    out.extend_from_slice(&ev.kv.create_revision.to_le_bytes());
    out.extend_from_slice(&ev.kv.mod_revision.to_le_bytes());
    match &ev.prev {
        None => out.push(0),
        Some(p) => {
            out.push(1);
            put_bytes(&mut out, &p.value);
            out.extend_from_slice(&p.create_revision.to_le_bytes());
            out.extend_from_slice(&p.mod_revision.to_le_bytes());
        }
    }
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    revision: Revision,
}

impl<'a> Reader<'a> {
    fn corrupt(&self) -> StoreError {
        StoreError::Backend(format!(
            "corrupt event record at revision {}",
            self.revision
        ))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.buf.len() < n {
            return Err(self.corrupt());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let b = self.take(8)?;
        let a: [u8; 8] = b.try_into().map_err(|_| self.corrupt())?;
        Ok(u64::from_le_bytes(a))
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let b = self.take(4)?;
        let a: [u8; 4] = b.try_into().map_err(|_| self.corrupt())?;
        let n = usize::try_from(u32::from_le_bytes(a)).map_err(|_| self.corrupt())?;
        self.take(n)
    }

    fn key(&mut self) -> Result<&'a str, StoreError> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| self.corrupt())
    }
}

/// Decodes the event at `revision` if its key is under `prefix`.
fn decode_event(revision: Revision, buf: &[u8], prefix: &str) -> Result<Option<Event>, StoreError> {
    let mut r = Reader { buf, revision };
    let kind = match r.u8()? {
        0 => EventKind::Put,
        1 => EventKind::Delete,
        _ => return Err(r.corrupt()),
    };
    let key = r.key()?;
    if !key.starts_with(prefix) {
        return Ok(None);
    }
    let value = r.bytes()?.to_vec();
    let create_revision = r.u64()?;
    let mod_revision = r.u64()?;
    let prev = match r.u8()? {
        0 => None,
        1 => {
            let value = r.bytes()?.to_vec();
            let create_revision = r.u64()?;
            let mod_revision = r.u64()?;
            Some(KeyValue {
                key: key.to_string(),
                value,
                create_revision,
                mod_revision,
            })
        }
        _ => return Err(r.corrupt()),
    };
    Ok(Some(Event {
        kind,
        kv: KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision,
        },
        prev,
    }))
}

/// The logged events after `after` for keys under `prefix`, in order.
fn read_log(
    log: &impl ReadableTable<u64, &'static [u8]>,
    prefix: &str,
    after: Revision,
) -> Result<Vec<Event>, StoreError> {
    let mut events = Vec::new();
    let range = log
        .range((Bound::Excluded(after), Bound::Unbounded))
        .map_err(backend("read log"))?;
    for entry in range {
        let (rev, buf) = entry.map_err(backend("read log"))?;
        if let Some(ev) = decode_event(rev.value(), buf.value(), prefix)? {
            events.push(ev);
        }
    }
    Ok(events)
}

fn list_at(
    db: &Database,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    revision: Option<Revision>,
) -> Result<ListResult, StoreError> {
    let txn = db.begin_read().map_err(backend("begin read"))?;
    let meta = txn.open_table(META).map_err(backend("open meta table"))?;
    let current = read_meta(&meta, META_REVISION)?;
    let at = revision.unwrap_or(current);
    if at > current {
        return Err(StoreError::FutureRevision {
            requested: at,
            current,
        });
    }
    // The state at `at` of every key changed after it: the `prev` of its first later event.
    let mut overrides: BTreeMap<String, Option<KeyValue>> = BTreeMap::new();
    if at < current {
        let compacted = read_meta(&meta, META_COMPACTED)?;
        if at < compacted {
            return Err(StoreError::Compacted {
                requested: at,
                oldest: compacted,
            });
        }
        let log = txn.open_table(LOG).map_err(backend("open log table"))?;
        for ev in read_log(&log, prefix, at)? {
            overrides.entry(ev.kv.key).or_insert(ev.prev);
        }
    }
    let lower = match start_after {
        Some(s) if s >= prefix => Bound::Excluded(s),
        _ => Bound::Included(prefix),
    };
    let kv = txn.open_table(KV).map_err(backend("open kv table"))?;
    let mut current_iter = kv
        .range::<&str>((lower, Bound::Unbounded))
        .map_err(backend("read keys"))?;
    let lower_owned = match lower {
        Bound::Excluded(s) => Bound::Excluded(s.to_string()),
        Bound::Included(s) => Bound::Included(s.to_string()),
        Bound::Unbounded => Bound::Unbounded,
    };
    let mut old_iter = overrides
        .range((lower_owned, Bound::Unbounded))
        .filter(|(k, _)| k.starts_with(prefix))
        .peekable();

    let mut items = Vec::new();
    let mut more = false;
    let mut next_current = || -> Result<Option<KeyValue>, StoreError> {
        for entry in current_iter.by_ref() {
            let (k, v) = entry.map_err(backend("read keys"))?;
            let key = k.value();
            if !key.starts_with(prefix) {
                return Ok(None);
            }
            if overrides.contains_key(key) {
                continue;
            }
            let (value, create_revision, mod_revision) = v.value();
            return Ok(Some(KeyValue {
                key: key.to_string(),
                value: value.to_vec(),
                create_revision,
                mod_revision,
            }));
        }
        Ok(None)
    };
    let mut cur = next_current()?;
    loop {
        // Skip keys that did not exist at `at`.
        while old_iter.peek().is_some_and(|(_, v)| v.is_none()) {
            old_iter.next();
        }
        let take_old = match (&cur, old_iter.peek()) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some(c), Some((k, _))) => k.as_str() < c.key.as_str(),
        };
        if limit > 0 && items.len() == limit {
            more = true;
            break;
        }
        if take_old {
            if let Some((_, Some(v))) = old_iter.next() {
                items.push(v.clone());
            }
        } else if let Some(c) = cur.take() {
            items.push(c);
            cur = next_current()?;
        }
    }
    Ok(ListResult {
        items,
        revision: at,
        more,
    })
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn revision(&self) -> Result<Revision, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(backend("begin read"))?;
            let meta = txn.open_table(META).map_err(backend("open meta table"))?;
            read_meta(&meta, META_REVISION)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend("begin read"))?;
            let kv = txn.open_table(KV).map_err(backend("open kv table"))?;
            read_kv(&kv, &key)
        })
        .await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListResult, StoreError> {
        let prefix = prefix.to_string();
        let start_after = start_after.map(str::to_string);
        self.read(move |db| list_at(db, &prefix, start_after.as_deref(), limit, revision))
            .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        self.write(Op::Create {
            key: key.to_string(),
            value,
        })
        .await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        self.write(Op::Update {
            key: key.to_string(),
            value,
            expected,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        self.write(Op::Delete {
            key: key.to_string(),
            expected,
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // Subscribe before reading the log: every event committed after the snapshot below is
        // published after this point, so nothing falls between the replay and the live part.
        let rx = self.tx.subscribe();
        let p = prefix.to_string();
        let (history, snapshot) = self
            .read(move |db| {
                let txn = db.begin_read().map_err(backend("begin read"))?;
                let meta = txn.open_table(META).map_err(backend("open meta table"))?;
                let current = read_meta(&meta, META_REVISION)?;
                let compacted = read_meta(&meta, META_COMPACTED)?;
                if after < compacted {
                    return Err(StoreError::Compacted {
                        requested: after,
                        oldest: compacted,
                    });
                }
                let log = txn.open_table(LOG).map_err(backend("open log table"))?;
                Ok((read_log(&log, &p, after)?, current))
            })
            .await?;
        // Live events up to the snapshot (or `after`) were replayed or are not wanted.
        let last = after.max(snapshot);
        let prefix = prefix.to_string();
        let live = futures::stream::unfold(Some(rx), move |state| {
            let prefix = prefix.clone();
            async move {
                let mut rx = state?;
                loop {
                    match rx.recv().await {
                        Ok(ev) => {
                            if ev.kv.mod_revision > last && ev.kv.key.starts_with(&prefix) {
                                return Some((Ok(Event::clone(&ev)), Some(rx)));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            // The stream ends here; the client re-lists.
                            return Some((
                                Err(StoreError::Backend(format!(
                                    "watch lagged: {n} events dropped"
                                ))),
                                None,
                            ));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(Box::pin(
            futures::stream::iter(history.into_iter().map(Ok)).chain(live),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn kv(key: &str, value: &[u8], c: u64, m: u64) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision: c,
            mod_revision: m,
        }
    }

    #[test]
    fn event_records_round_trip() {
        let cases = [
            Event {
                kind: EventKind::Put,
                kv: kv("/a/b", b"{\"x\":1}", 2, 2),
                prev: None,
            },
            Event {
                kind: EventKind::Put,
                kv: kv("/a/b", b"new", 2, 5),
                prev: Some(kv("/a/b", b"old", 2, 3)),
            },
            Event {
                kind: EventKind::Delete,
                kv: kv("/a/c", b"", 4, 9),
                prev: Some(kv("/a/c", b"", 4, 4)),
            },
        ];
        for ev in cases {
            let buf = encode_event(&ev);
            let got = decode_event(ev.kv.mod_revision, &buf, "/a/").unwrap();
            assert_eq!(got, Some(ev.clone()));
            assert_eq!(decode_event(1, &buf, "/b/").unwrap(), None);
            // Every truncation is an error, never a panic.
            for n in 0..buf.len() {
                assert!(decode_event(1, &buf[..n], "").is_err(), "truncated at {n}");
            }
        }
    }

    #[tokio::test]
    async fn list_at_revision_rebuilds_the_old_state() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(&dir.path().join("db")).unwrap();
        let a = s.create("/p/a", b"a1".to_vec()).await.unwrap();
        let b = s.create("/p/b", b"b1".to_vec()).await.unwrap();
        let r0 = s.revision().await.unwrap();
        s.update("/p/a", b"a2".to_vec(), a.mod_revision)
            .await
            .unwrap();
        s.delete("/p/b", Some(b.mod_revision)).await.unwrap();
        s.create("/p/c", b"c1".to_vec()).await.unwrap();
        s.create("/q/x", b"x".to_vec()).await.unwrap();
        let old = s.list("/p/", None, 0, Some(r0)).await.unwrap();
        assert_eq!(old.revision, r0);
        assert_eq!(old.items, vec![a.clone(), b.clone()]);
        let page = s.list("/p/", None, 1, Some(r0)).await.unwrap();
        assert_eq!(page.items, vec![a.clone()]);
        assert!(page.more);
        let page = s.list("/p/", Some("/p/a"), 1, Some(r0)).await.unwrap();
        assert_eq!(page.items, vec![b]);
        assert!(!page.more);
        let now = s.list("/p/", None, 0, None).await.unwrap();
        let keys: Vec<_> = now.items.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["/p/a", "/p/c"]);
        assert_eq!(s.list("/p/", None, 0, Some(1)).await.unwrap().items, vec![]);
    }
}

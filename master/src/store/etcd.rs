//! The `Store` contract over a real etcd v3 cluster (`etcd-client`), so several masters can
//! share one store. Revisions are etcd's revisions (an object's resourceVersion is its
//! `mod_revision`); every key is put under a prefix so several clusters can share one etcd.
//! Create is a txn on `create_revision == 0`, update and delete are txns on `mod_revision ==
//! expected`, exactly as kube-apiserver's etcd3 storage does them. etcd acknowledges a write
//! once a quorum has it in its fsynced raft log, so every acknowledged write is durable.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::SinkExt;
use futures::channel::mpsc;
use tracing::{debug, warn};

use super::{Event, EventKind, KeyValue, ListResult, Revision, Store, StoreError, WatchStream};

/// Events buffered per watch between etcd and the consumer (then etcd's stream waits).
const WATCH_BUFFER: usize = 1024;
/// Tries of a request that etcd did not apply (a member down, no leader), and the pause
/// after the first (growing linearly).
const SEND_ATTEMPTS: u32 = 10;
const RESEND_AFTER: Duration = Duration::from_millis(20);
/// gRPC status code UNAVAILABLE.
const GRPC_UNAVAILABLE: i32 = 14;
/// How long a broken watch stream is retried (another endpoint, from the last revision
/// delivered) before the watch ends with an error.
const WATCH_RETRY_FOR: Duration = Duration::from_secs(30);

/// A store in an etcd cluster.
pub struct EtcdStore {
    client: Client,
    prefix: String,
    /// Dropped with the store, which ends every watch stream (like the embedded store).
    shutdown: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// An etcd client error as a store error.
fn classify(e: etcd_client::Error) -> StoreError {
    StoreError::Backend(format!("etcd: {e}"))
}

/// Whether etcd certainly did not apply a request that failed so (no connection to the
/// member, or the member has no leader): then it can be sent again. The client balances over
/// every endpoint, so a member that is down costs one failed attempt, not the request.
fn not_applied(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let m = s.message();
            (i32::from(s.code()) == GRPC_UNAVAILABLE && m.contains("connect"))
                || m.contains("etcdserver: no leader")
                || m.contains("etcdserver: leader changed")
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("required revision has been compacted"))
}

fn is_future(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("required revision is a future revision"))
}

/// The smallest key greater than every key starting with `key` (etcd's prefix range end);
/// `[0]` (no upper bound) for an empty key or one of only 0xff bytes.
fn prefix_end(key: &[u8]) -> Vec<u8> {
    for i in (0..key.len()).rev() {
        if key[i] < 0xff {
            let mut end = key[..=i].to_vec();
            end[i] += 1;
            return end;
        }
    }
    vec![0]
}

/// An etcd key-value as ours, with the store prefix taken off the key.
fn convert_kv(prefix: &str, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    let key = std::str::from_utf8(kv.key())
        .map_err(|_| StoreError::Backend("etcd returned a key that is not UTF-8".into()))?;
    let key = key
        .strip_prefix(prefix)
        .ok_or_else(|| StoreError::Backend(format!("etcd key {key} is outside the prefix")))?;
    Ok(KeyValue {
        key: key.to_string(),
        value: kv.value().to_vec(),
        create_revision: from_etcd(kv.create_revision()),
        mod_revision: from_etcd(kv.mod_revision()),
    })
}

/// etcd revisions are i64; ours are u64.
fn to_etcd(rev: Revision) -> i64 {
    i64::try_from(rev).unwrap_or(i64::MAX)
}

fn from_etcd(rev: i64) -> Revision {
    Revision::try_from(rev).unwrap_or(0)
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`http://127.0.0.1:2379`, …) and keeps
    /// every key under `prefix` (`/skiff`; empty for none).
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Backend("no etcd endpoints given".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(classify)?;
        let (shutdown, _) = tokio::sync::watch::channel(());
        let store = EtcdStore {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
            shutdown,
        };
        // Fail now, not on the first request, when no member answers.
        store.revision().await?;
        Ok(store)
    }

    fn full(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.prefix).into_bytes()
    }

    fn convert(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        convert_kv(&self.prefix, kv)
    }

    /// A txn, sent again (to another member) while etcd could not have applied it: the
    /// connection to a member was refused, or the member had no leader.
    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, etcd_client::Error> {
        let mut attempt = 0;
        loop {
            match self.client.kv_client().txn(txn.clone()).await {
                Err(e) if not_applied(&e) && attempt < SEND_ATTEMPTS => {
                    attempt += 1;
                    debug!(error = %e, attempt, "etcd txn not sent, again");
                    tokio::time::sleep(RESEND_AFTER * attempt).await;
                }
                r => return r,
            }
        }
    }

    /// A range read, sent again like [`Self::txn`].
    async fn range(
        &self,
        key: Vec<u8>,
        options: GetOptions,
    ) -> Result<etcd_client::GetResponse, etcd_client::Error> {
        let mut attempt = 0;
        loop {
            match self
                .client
                .kv_client()
                .get(key.clone(), Some(options.clone()))
                .await
            {
                Err(e) if not_applied(&e) && attempt < SEND_ATTEMPTS => {
                    attempt += 1;
                    debug!(error = %e, attempt, "etcd range not sent, again");
                    tokio::time::sleep(RESEND_AFTER * attempt).await;
                }
                r => return r,
            }
        }
    }

    /// Compacts etcd's history up to `revision` (what kube-apiserver does every five minutes):
    /// older revisions answer Compacted from then on. Compaction is cluster wide.
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let current = self.revision().await?;
        if revision > current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current,
            });
        }
        match self
            .client
            .kv_client()
            .compact(to_etcd(revision), None)
            .await
        {
            Ok(_) => Ok(()),
            // already compacted further: nothing to do
            Err(e) if is_compacted(&e) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// Compacts etcd's history every `interval`, to the revision seen one interval earlier,
    /// as kube-apiserver's compactor does (`--etcd-compaction-interval`, 5 minutes): the
    /// masters sharing an etcd take turns through a compare-and-swap on the version of the
    /// unprefixed `compact_rev_key`, so one compaction happens per interval however many
    /// masters run. Runs until the task is dropped.
    pub async fn run_compactor(&self, interval: Duration) {
        let mut version = 0i64;
        let mut last_rev = 0i64;
        loop {
            tokio::time::sleep(interval).await;
            match self.compact_turn(version, last_rev).await {
                Ok((v, rev)) => (version, last_rev) = (v, rev),
                Err(e) => warn!(error = %e, "etcd compaction failed"),
            }
        }
    }

    /// One turn of the compactor: returns the key's version and the current revision.
    async fn compact_turn(&self, version: i64, rev: i64) -> Result<(i64, i64), StoreError> {
        const KEY: &str = "compact_rev_key";
        let txn = Txn::new()
            .when([Compare::version(KEY, CompareOp::Equal, version)])
            .and_then([TxnOp::put(KEY, rev.to_string(), None)])
            .or_else([TxnOp::get(KEY, None)]);
        let resp = self.txn(txn).await.map_err(classify)?;
        let current = resp.header().map(|h| h.revision()).unwrap_or(0);
        if !resp.succeeded() {
            // another master compacted this interval; follow its clock
            let theirs = resp
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    TxnOpResponse::Get(g) => g.kvs().first().map(etcd_client::KeyValue::version),
                    _ => None,
                })
                .unwrap_or(0);
            return Ok((theirs, current));
        }
        if rev > 0 {
            match self.client.kv_client().compact(rev, None).await {
                Ok(_) => debug!(revision = rev, "etcd compacted"),
                Err(e) if is_compacted(&e) => {}
                Err(e) => return Err(classify(e)),
            }
        }
        Ok((version + 1, current))
    }

    /// The revision etcd has compacted up to (called after etcd said a revision is
    /// compacted): a watch of one key from revision 1 is answered with the compaction
    /// revision.
    async fn compacted_revision(&self, requested: Revision) -> Result<Revision, StoreError> {
        let mut stream = self
            .client
            .watch_client()
            .watch(
                self.full("/\u{0}compaction-probe"),
                Some(WatchOptions::new().with_start_revision(1)),
            )
            .await
            .map_err(classify)?;
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(resp) = stream.message().await.map_err(classify)? {
                if resp.compact_revision() > 0 {
                    return Ok(Some(from_etcd(resp.compact_revision())));
                }
            }
            Ok(None)
        })
        .await;
        // dropping the stream ends the watch
        Ok(answer
            .unwrap_or(Ok(None))?
            .unwrap_or(requested.saturating_add(1)))
    }

    /// The error for a read at `requested` that etcd refused.
    async fn revision_error(
        &self,
        e: etcd_client::Error,
        requested: Revision,
    ) -> Result<StoreError, StoreError> {
        if is_compacted(&e) {
            let oldest = self.compacted_revision(requested).await?;
            return Ok(StoreError::Compacted { requested, oldest });
        }
        if is_future(&e) {
            let current = self.revision().await?;
            return Ok(StoreError::FutureRevision { requested, current });
        }
        Ok(classify(e))
    }

    /// Runs a compare-and-swap txn on `key` whose failure branch reads the key, and says
    /// why it failed: NotFound or Conflict (with the key's current revision).
    async fn cas(
        &self,
        txn: Txn,
        key: &str,
        expected: Revision,
    ) -> Result<etcd_client::TxnResponse, StoreError> {
        let resp = self.txn(txn).await.map_err(classify)?;
        if resp.succeeded() {
            return Ok(resp);
        }
        let current = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| from_etcd(kv.mod_revision())),
            _ => None,
        });
        Err(match current {
            None => StoreError::NotFound(key.to_string()),
            Some(actual) => StoreError::Conflict {
                key: key.to_string(),
                expected,
                actual,
            },
        })
    }

    fn header_revision(resp: Option<&etcd_client::ResponseHeader>) -> Revision {
        resp.map(|h| from_etcd(h.revision())).unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn revision(&self) -> Result<Revision, StoreError> {
        let resp = self
            .range(
                self.full("/"),
                GetOptions::new().with_count_only().with_limit(1),
            )
            .await
            .map_err(classify)?;
        Ok(Self::header_revision(resp.header()))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let resp = self
            .range(self.full(key), GetOptions::new())
            .await
            .map_err(classify)?;
        resp.kvs().first().map(|kv| self.convert(kv)).transpose()
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListResult, StoreError> {
        let start = self.full(prefix);
        let end = if self.prefix.is_empty() && prefix.is_empty() {
            vec![0]
        } else {
            prefix_end(&start)
        };
        let from = match start_after {
            Some(after) => {
                let mut k = self.full(after);
                k.push(0);
                k.max(start.clone())
            }
            None => start.clone(),
        };
        let from = if from.is_empty() { vec![0] } else { from };
        let mut options = GetOptions::new()
            .with_range(end)
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        if let Some(rev) = revision {
            options = options.with_revision(to_etcd(rev));
        }
        let resp = match self.range(from, options).await {
            Ok(r) => r,
            Err(e) => {
                return Err(self.revision_error(e, revision.unwrap_or_default()).await?);
            }
        };
        let items = resp
            .kvs()
            .iter()
            .map(|kv| self.convert(kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ListResult {
            items,
            revision: revision.unwrap_or_else(|| Self::header_revision(resp.header())),
            more: resp.more(),
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let k = self.full(key);
        let txn = Txn::new()
            .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k, value.clone(), None)]);
        let resp = self.txn(txn).await.map_err(classify)?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        let rev = Self::header_revision(resp.header());
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: rev,
            mod_revision: rev,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        let k = self.full(key);
        let txn = Txn::new()
            .when([
                Compare::create_revision(k.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(k.clone(), CompareOp::Equal, to_etcd(expected)),
            ])
            .and_then([TxnOp::put(
                k.clone(),
                value.clone(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(k, None)]);
        let resp = self.cas(txn, key, expected).await?;
        let rev = Self::header_revision(resp.header());
        let create_revision = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Put(p) => p.prev_key().map(|kv| from_etcd(kv.create_revision())),
                _ => None,
            })
            .unwrap_or(rev);
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: rev,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        let k = self.full(key);
        let mut when = vec![Compare::create_revision(k.clone(), CompareOp::Greater, 0)];
        if let Some(exp) = expected {
            when.push(Compare::mod_revision(
                k.clone(),
                CompareOp::Equal,
                to_etcd(exp),
            ));
        }
        let txn = Txn::new()
            .when(when)
            .and_then([TxnOp::delete(
                k.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(k, None)]);
        let resp = self.cas(txn, key, expected.unwrap_or_default()).await?;
        let rev = Self::header_revision(resp.header());
        let prev = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(d) => d.prev_kvs().first().cloned(),
            _ => None,
        });
        let Some(prev) = prev else {
            // deleted by someone else between the compare and the delete cannot happen in
            // one txn; a missing prev_kv means etcd did not return it
            return Err(StoreError::Backend(format!(
                "etcd deleted {key} without returning its last value"
            )));
        };
        let mut last = self.convert(&prev)?;
        last.mod_revision = rev;
        Ok(last)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let start = after.saturating_add(1);
        // Like the embedded store, a watch needs `after` itself kept (etcd alone would start
        // one revision earlier, where a compacted delete may be gone). etcd refuses a
        // compacted start only later, in the stream; a read at `after` says it now.
        let probe_at = after.max(1);
        if probe_at <= self.revision().await? {
            let probe = GetOptions::new()
                .with_count_only()
                .with_limit(1)
                .with_revision(to_etcd(probe_at));
            if let Err(e) = self.range(self.full("/"), probe).await {
                return Err(self.revision_error(e, after).await?);
            }
        }
        let key = self.full(prefix);
        let end = if self.prefix.is_empty() && prefix.is_empty() {
            vec![0]
        } else {
            prefix_end(&key)
        };
        let key = if key.is_empty() { vec![0] } else { key };
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let task = WatchTask {
            client: self.client.clone(),
            prefix: self.prefix.clone(),
            key,
            end,
            next: start,
            tx,
            broken_since: None,
        };
        tokio::spawn(task.run(self.shutdown.subscribe()));
        Ok(Box::pin(rx))
    }
}

/// Forwards one etcd watch to a `WatchStream`, re-opening it from the next revision when
/// the connection to a member breaks (another member answers).
struct WatchTask {
    client: Client,
    prefix: String,
    key: Vec<u8>,
    end: Vec<u8>,
    /// The next revision to deliver.
    next: Revision,
    tx: mpsc::Sender<Result<Event, StoreError>>,
    /// When the watch first failed to get an answer since its last good one.
    broken_since: Option<tokio::time::Instant>,
}

/// Why a watch stream ended.
enum WatchEnd {
    /// The consumer or the store went away.
    Done,
    /// The history the watch needs is compacted.
    Compacted(Revision),
    /// The connection broke: retry from `next`.
    Broken(String),
}

impl WatchTask {
    async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<()>) {
        loop {
            let end = tokio::select! {
                end = self.stream_once() => end,
                _ = shutdown.changed() => WatchEnd::Done,
            };
            match end {
                WatchEnd::Done => return,
                WatchEnd::Compacted(oldest) => {
                    let requested = self.next.saturating_sub(1);
                    let _ = self
                        .tx
                        .send(Err(StoreError::Compacted { requested, oldest }))
                        .await;
                    return;
                }
                WatchEnd::Broken(why) => {
                    let since = *self
                        .broken_since
                        .get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > WATCH_RETRY_FOR {
                        let _ = self
                            .tx
                            .send(Err(StoreError::Backend(format!("etcd watch: {why}"))))
                            .await;
                        return;
                    }
                    debug!(error = %why, next = self.next, "etcd watch broken, re-opening");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
            if self.tx.is_closed() {
                return;
            }
        }
    }

    async fn stream_once(&mut self) -> WatchEnd {
        let options = WatchOptions::new()
            .with_range(self.end.clone())
            .with_start_revision(to_etcd(self.next))
            .with_prev_key();
        let mut stream = match self
            .client
            .watch_client()
            .watch(self.key.clone(), Some(options))
            .await
        {
            Ok(s) => s,
            Err(e) => return WatchEnd::Broken(e.to_string()),
        };
        loop {
            let resp = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return WatchEnd::Broken("stream closed by etcd".into()),
                Err(e) => return WatchEnd::Broken(e.to_string()),
            };
            self.broken_since = None;
            if resp.compact_revision() > 0 {
                return WatchEnd::Compacted(from_etcd(resp.compact_revision()));
            }
            if resp.canceled() {
                return WatchEnd::Broken(format!("canceled: {}", resp.cancel_reason()));
            }
            for ev in resp.events() {
                let item = self.convert(ev);
                let rev = match &item {
                    Ok(e) => e.kv.mod_revision,
                    Err(_) => self.next,
                };
                if rev < self.next {
                    continue; // delivered before a re-open
                }
                if self.tx.send(item).await.is_err() {
                    return WatchEnd::Done;
                }
                self.next = rev + 1;
            }
        }
    }

    fn convert_kv(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        convert_kv(&self.prefix, kv)
    }

    fn convert(&self, ev: &etcd_client::Event) -> Result<Event, StoreError> {
        let kv = ev
            .kv()
            .ok_or_else(|| StoreError::Backend("etcd watch event without a key".into()))?;
        let prev = ev.prev_kv().map(|p| self.convert_kv(p)).transpose()?;
        match ev.event_type() {
            EventType::Put => Ok(Event {
                kind: EventKind::Put,
                kv: self.convert_kv(kv)?,
                prev,
            }),
            EventType::Delete => {
                let mut last = match &prev {
                    Some(p) => p.clone(),
                    None => {
                        warn!("etcd delete event without the previous value");
                        self.convert_kv(kv)?
                    }
                };
                last.mod_revision = from_etcd(kv.mod_revision());
                Ok(Event {
                    kind: EventKind::Delete,
                    kv: last,
                    prev,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"/a/", b"/a0"),
            (b"abc", b"abd"),
            (b"a\xff", b"b"),
            (b"\xff\xff", b"\x00"),
            (b"", b"\x00"),
        ];
        for (key, end) in cases {
            assert_eq!(prefix_end(key), end.to_vec(), "{key:?}");
        }
    }

    #[test]
    fn revisions_convert_both_ways() {
        assert_eq!(to_etcd(5), 5);
        assert_eq!(to_etcd(u64::MAX), i64::MAX);
        assert_eq!(from_etcd(7), 7);
        assert_eq!(from_etcd(-1), 0);
    }
}

//! Tests of the store backends against the `Store` contract: CRUD, compare-and-swap, lists,
//! watches, compaction, reopen. The contract tests run on both the embedded (redb) store and
//! a real etcd (one member on loopback per test, Debian's etcd-server); the embedded store's
//! own limits (history, watch buffer) and its durability across `kill -9` are tested alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod etcd_common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use skiff_master::store::embedded::EmbeddedStore;
use skiff_master::store::etcd::EtcdStore;
use skiff_master::store::{EventKind, Revision, Store, StoreError, WatchStream};

const WAIT: Duration = Duration::from_secs(20);

fn open(dir: &tempfile::TempDir) -> EmbeddedStore {
    EmbeddedStore::open(&dir.path().join("store.redb")).unwrap()
}

/// Where a contract test's store lives; `open` may be called again after the last handle is
/// dropped (reopen).
enum Backend {
    Embedded(tempfile::TempDir),
    Etcd(etcd_common::EtcdCluster),
}

/// Keys of the etcd tests live under this prefix (the etcd store's cluster prefix).
const ETCD_PREFIX: &str = "/skiff-test";

impl Backend {
    fn embedded() -> Backend {
        Backend::Embedded(tempfile::tempdir().unwrap())
    }

    async fn etcd() -> Backend {
        let cluster = tokio::task::spawn_blocking(|| etcd_common::EtcdCluster::start(1))
            .await
            .unwrap();
        Backend::Etcd(cluster)
    }

    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Backend::Embedded(dir) => Arc::new(open(dir)),
            Backend::Etcd(c) => Arc::new(
                EtcdStore::connect(&c.endpoints(), ETCD_PREFIX)
                    .await
                    .unwrap(),
            ),
        }
    }
}

/// Each listed `async fn name(b: &Backend)` becomes `embedded::name` and `etcd::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(&super::Backend::embedded()).await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(&super::Backend::etcd().await).await
                }
            )*
        }
    };
}

on_both_backends!(
    crud_cas_and_errors,
    list_prefix_limit_continue,
    list_at_old_and_future_revisions,
    watch_from_zero_replays_history_then_streams_live,
    watch_events_carry_values_and_prev,
    watch_from_the_middle_and_prefix_isolation,
    watch_under_concurrent_writers_has_no_gap_and_no_duplicate,
    racing_writers_of_one_key_one_wins_each_round,
    watch_ends_when_the_store_is_dropped,
    reopen_keeps_the_revision_and_the_log,
);

/// Reads `n` events from `w` (each must arrive within the deadline) and returns
/// (kind, key, revision) for each.
async fn take(w: &mut WatchStream, n: usize) -> Vec<(EventKind, String, Revision)> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(WAIT, w.next())
            .await
            .expect("watch event within the deadline")
            .expect("watch stream still open")
            .expect("watch event, not an error");
        out.push((ev.kind, ev.kv.key, ev.kv.mod_revision));
    }
    out
}

/// Asserts nothing more is delivered right now (a short grace period for a stray event).
async fn assert_quiet(w: &mut WatchStream) {
    if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), w.next()).await {
        panic!("unexpected watch item {ev:?}");
    }
}

async fn crud_cas_and_errors(b: &Backend) {
    let s = b.open().await;
    let r0 = s.revision().await.unwrap();
    assert_eq!(r0, 1, "an empty store is at revision 1, like etcd");
    assert_eq!(s.get("/a").await.unwrap(), None);

    let a = s.create("/a", b"1".to_vec()).await.unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (2, 2));
    assert_eq!(s.get("/a").await.unwrap(), Some(a.clone()));
    assert!(matches!(
        s.create("/a", b"x".to_vec()).await,
        Err(StoreError::AlreadyExists(k)) if k == "/a"
    ));

    let a2 = s.update("/a", b"2".to_vec(), a.mod_revision).await.unwrap();
    assert_eq!((a2.create_revision, a2.mod_revision), (2, 3));
    assert_eq!(a2.value, b"2");
    // The stale revision no longer matches: exact compare-and-swap.
    match s.update("/a", b"3".to_vec(), a.mod_revision).await {
        Err(StoreError::Conflict {
            key,
            expected,
            actual,
        }) => assert_eq!((key.as_str(), expected, actual), ("/a", 2, 3)),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert!(matches!(
        s.update("/nope", b"x".to_vec(), 1).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.delete("/a", Some(a.mod_revision)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        s.delete("/nope", None).await,
        Err(StoreError::NotFound(_))
    ));
    // Failed writes do not take a revision.
    assert_eq!(s.revision().await.unwrap(), 3);

    let gone = s.delete("/a", Some(a2.mod_revision)).await.unwrap();
    assert_eq!(gone.mod_revision, 4, "a delete takes a revision");
    assert_eq!(gone.value, b"2");
    assert_eq!(s.get("/a").await.unwrap(), None);
    // Re-creating starts a new life.
    let a3 = s.create("/a", b"new".to_vec()).await.unwrap();
    assert_eq!((a3.create_revision, a3.mod_revision), (5, 5));
    let b = s.create("/b", b"b".to_vec()).await.unwrap();
    let gone = s.delete("/b", None).await.unwrap();
    assert_eq!(gone.mod_revision, b.mod_revision + 1);

    // Revisions are strictly increasing across many writes.
    let mut last = s.revision().await.unwrap();
    for i in 0..50 {
        let kv = s.create(&format!("/many/{i}"), vec![i]).await.unwrap();
        assert_eq!(kv.mod_revision, last + 1);
        last = kv.mod_revision;
    }
    assert_eq!(s.revision().await.unwrap(), last);
}

async fn list_prefix_limit_continue(b: &Backend) {
    let s = b.open().await;
    // Inserted out of order; neighbours outside the prefix on both sides.
    for k in [
        "/r/pods/b",
        "/r/pods/a",
        "/r/pods/d",
        "/r/pods/c",
        "/r/pod",
        "/r/podsx/a",
        "/r/q",
    ] {
        s.create(k, k.as_bytes().to_vec()).await.unwrap();
    }
    let rev = s.revision().await.unwrap();
    let all = s.list("/r/pods/", None, 0, None).await.unwrap();
    let keys: Vec<_> = all.items.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["/r/pods/a", "/r/pods/b", "/r/pods/c", "/r/pods/d"]);
    assert_eq!(all.revision, rev);
    assert!(!all.more);
    assert_eq!(all.items[0].value, b"/r/pods/a");

    // Pages of two, continuing after the last key, read at the first page's revision.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = s
            .list("/r/pods/", after.as_deref(), 2, Some(rev))
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(|k| k.key.clone()));
        if !page.more {
            break;
        }
        after = page.items.last().map(|k| k.key.clone());
        // Writes between pages do not show up in a list at a fixed revision.
        s.create(&format!("/r/pods/a{pages}"), vec![])
            .await
            .unwrap();
    }
    assert_eq!(seen, ["/r/pods/a", "/r/pods/b", "/r/pods/c", "/r/pods/d"]);
    assert_eq!(pages, 2, "the second page knows nothing follows");
    let exact = s.list("/r/pods/", None, 4, None).await.unwrap();
    assert!(exact.more, "/r/pods/a1 was written since: five keys now");
    let one = s
        .list("/r/pods/", Some("/r/pods/c"), 1, None)
        .await
        .unwrap();
    assert_eq!(one.items[0].key, "/r/pods/d");
    assert!(!one.more);
    assert!(
        s.list("/nothing/", None, 0, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(s.list("", None, 0, None).await.unwrap().items.len(), 8);
}

async fn list_at_old_and_future_revisions(b: &Backend) {
    let s = b.open().await;
    let a = s.create("/k/a", b"a1".to_vec()).await.unwrap();
    let at = s.revision().await.unwrap();
    let a2 = s
        .update("/k/a", b"a2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    s.create("/k/b", b"b".to_vec()).await.unwrap();
    let old = s.list("/k/", None, 0, Some(at)).await.unwrap();
    assert_eq!(old.revision, at);
    assert_eq!(old.items, vec![a]);
    // A page at an old revision continues at that revision.
    let now = s.revision().await.unwrap();
    let page = s.list("/k/", None, 1, Some(now)).await.unwrap();
    assert_eq!((page.items.len(), page.more), (1, true));
    assert_eq!(page.items[0], a2);
    match s.list("/k/", None, 0, Some(now + 1)).await {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (now + 1, now))
        }
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

/// etcd compaction (what the master's compactor does): lists and watches before the
/// compacted revision answer Compacted (410 upstream), from it on they work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_compacted_revisions_answer_compacted() {
    let cluster = tokio::task::spawn_blocking(|| etcd_common::EtcdCluster::start(1))
        .await
        .unwrap();
    let s = EtcdStore::connect(&cluster.endpoints(), ETCD_PREFIX)
        .await
        .unwrap();
    for i in 0..10 {
        s.create(&format!("/h/{i}"), vec![]).await.unwrap();
    }
    assert!(s.watch("/h/", 0).await.is_ok());
    s.compact(6).await.unwrap();
    match s.watch("/h/", 5).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (5, 6))
        }
        Err(e) => panic!("expected Compacted, got {e:?}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
    assert!(matches!(
        s.watch("/h/", 0).await,
        Err(StoreError::Compacted { oldest: 6, .. })
    ));
    let mut w = s.watch("/h/", 6).await.unwrap();
    assert_eq!(take(&mut w, 5).await[0].2, 7);
    match s.list("/h/", None, 0, Some(5)).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (5, 6))
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert_eq!(
        s.list("/h/", None, 0, Some(6)).await.unwrap().items.len(),
        5
    );
    assert!(matches!(
        s.compact(1000).await,
        Err(StoreError::FutureRevision { .. })
    ));
    s.compact(3).await.unwrap(); // already compacted further: no-op
    // A watch that is open when its history is compacted keeps going: it is past it.
    s.create("/h/live", vec![]).await.unwrap();
    assert_eq!(take(&mut w, 1).await[0].1, "/h/live");
}

/// The compactor compacts to the revision of one interval earlier: history older than that
/// becomes Compacted, what was written since stays watchable. Two compactors (two masters)
/// on one etcd take turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_compactor_compacts_one_interval_behind() {
    let cluster = tokio::task::spawn_blocking(|| etcd_common::EtcdCluster::start(1))
        .await
        .unwrap();
    let s = Arc::new(
        EtcdStore::connect(&cluster.endpoints(), ETCD_PREFIX)
            .await
            .unwrap(),
    );
    let other = Arc::new(
        EtcdStore::connect(&cluster.endpoints(), "/other")
            .await
            .unwrap(),
    );
    for i in 0..10 {
        s.create(&format!("/c/{i}"), vec![]).await.unwrap();
    }
    let before = s.revision().await.unwrap();
    let compactors: Vec<_> = [s.clone(), other.clone()]
        .into_iter()
        .map(|c| tokio::spawn(async move { c.run_compactor(Duration::from_millis(200)).await }))
        .collect();
    let deadline = Instant::now() + WAIT;
    loop {
        match s.watch("/c/", 0).await {
            Err(StoreError::Compacted { oldest, .. }) => {
                assert!(
                    oldest >= before,
                    "compacted to {oldest}, written up to {before}"
                );
                break;
            }
            Err(e) => panic!("{e:?}"),
            Ok(_) => {}
        }
        assert!(Instant::now() < deadline, "no compaction within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in compactors {
        c.abort();
    }
    // the latest state is intact, and new writes are watched from now on
    assert_eq!(s.list("/c/", None, 0, None).await.unwrap().items.len(), 10);
    let now = s.revision().await.unwrap();
    let mut w = s.watch("/c/", now).await.unwrap();
    let kv = s.create("/c/new", vec![]).await.unwrap();
    assert_eq!(take(&mut w, 1).await[0].2, kv.mod_revision);
}

/// Two clusters with different prefixes share one etcd and see only their own keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_prefixes_separate_clusters() {
    let cluster = tokio::task::spawn_blocking(|| etcd_common::EtcdCluster::start(1))
        .await
        .unwrap();
    let one = EtcdStore::connect(&cluster.endpoints(), "/one")
        .await
        .unwrap();
    let two = EtcdStore::connect(&cluster.endpoints(), "/two/")
        .await
        .unwrap();
    let mut w = two.watch("/", two.revision().await.unwrap()).await.unwrap();
    one.create("/registry/pods/a", b"1".to_vec()).await.unwrap();
    let b = two.create("/registry/pods/a", b"2".to_vec()).await.unwrap();
    assert_eq!(
        one.get("/registry/pods/a").await.unwrap().unwrap().value,
        b"1"
    );
    assert_eq!(two.get("/registry/pods/a").await.unwrap().unwrap(), b);
    assert_eq!(one.list("", None, 0, None).await.unwrap().items.len(), 1);
    assert_eq!(
        take(&mut w, 1).await,
        [(EventKind::Put, "/registry/pods/a".into(), b.mod_revision)]
    );
    assert_quiet(&mut w).await;
}

#[tokio::test]
async fn list_at_old_future_and_compacted_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir).with_history(5);
    let a = s.create("/k/a", b"a1".to_vec()).await.unwrap();
    let at = s.revision().await.unwrap();
    s.update("/k/a", b"a2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    s.create("/k/b", b"b".to_vec()).await.unwrap();

    let old = s.list("/k/", None, 0, Some(at)).await.unwrap();
    assert_eq!(old.revision, at);
    assert_eq!(old.items, vec![a.clone()]);

    let now = s.revision().await.unwrap();
    match s.list("/k/", None, 0, Some(now + 1)).await {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (now + 1, now))
        }
        other => panic!("expected FutureRevision, got {other:?}"),
    }
    // Past the five-revision history, `at` is gone.
    for i in 0..6 {
        s.create(&format!("/other/{i}"), vec![]).await.unwrap();
    }
    match s.list("/k/", None, 0, Some(at)).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!(requested, at);
            assert_eq!(oldest, s.revision().await.unwrap() - 5);
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    // At the oldest kept revision it still works.
    let oldest = s.revision().await.unwrap() - 5;
    let l = s.list("/k/", None, 0, Some(oldest)).await.unwrap();
    assert_eq!(l.items.len(), 2);
}

async fn watch_from_zero_replays_history_then_streams_live(b: &Backend) {
    let s = b.open().await;
    let a = s.create("/w/a", b"1".to_vec()).await.unwrap();
    s.update("/w/a", b"2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    s.create("/w/b", b"3".to_vec()).await.unwrap();

    let mut w = s.watch("/w/", 0).await.unwrap();
    let history = take(&mut w, 3).await;
    assert_eq!(
        history,
        [
            (EventKind::Put, "/w/a".into(), 2),
            (EventKind::Put, "/w/a".into(), 3),
            (EventKind::Put, "/w/b".into(), 4),
        ]
    );
    assert_quiet(&mut w).await;
    s.delete("/w/a", None).await.unwrap();
    s.create("/w/c", b"4".to_vec()).await.unwrap();
    let live = take(&mut w, 2).await;
    assert_eq!(
        live,
        [
            (EventKind::Delete, "/w/a".into(), 5),
            (EventKind::Put, "/w/c".into(), 6),
        ]
    );
}

async fn watch_events_carry_values_and_prev(b: &Backend) {
    let s = b.open().await;
    let mut w = s.watch("/v/", s.revision().await.unwrap()).await.unwrap();
    let a = s.create("/v/a", b"one".to_vec()).await.unwrap();
    let a2 = s
        .update("/v/a", b"two".to_vec(), a.mod_revision)
        .await
        .unwrap();
    let gone = s.delete("/v/a", None).await.unwrap();
    let mut evs = Vec::new();
    for _ in 0..3 {
        evs.push(
            tokio::time::timeout(WAIT, w.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(
        (evs[0].kind, &evs[0].kv, &evs[0].prev),
        (EventKind::Put, &a, &None)
    );
    assert_eq!((evs[1].kind, &evs[1].kv), (EventKind::Put, &a2));
    assert_eq!(evs[1].prev.as_ref(), Some(&a));
    assert_eq!((evs[2].kind, &evs[2].kv), (EventKind::Delete, &gone));
    assert_eq!(evs[2].prev.as_ref(), Some(&a2));
    // The same events replayed from the log are identical.
    let mut r = s.watch("/v/", a.mod_revision - 1).await.unwrap();
    for ev in &evs {
        assert_eq!(
            &tokio::time::timeout(WAIT, r.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
            ev
        );
    }
}

async fn watch_from_the_middle_and_prefix_isolation(b: &Backend) {
    let s = b.open().await;
    let mut mid = 0;
    for i in 0..10 {
        let kv = s.create(&format!("/x/{i}"), vec![]).await.unwrap();
        s.create(&format!("/y/{i}"), vec![]).await.unwrap();
        if i == 4 {
            mid = kv.mod_revision;
        }
    }
    let mut wx = s.watch("/x/", mid).await.unwrap();
    let mut wy = s.watch("/y/", mid).await.unwrap();
    let xs = take(&mut wx, 5).await;
    let keys: Vec<_> = xs.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(keys, ["/x/5", "/x/6", "/x/7", "/x/8", "/x/9"]);
    // /y/4 was written right after `mid`, so it is included.
    let ys = take(&mut wy, 6).await;
    assert_eq!(ys[0].1, "/y/4");
    assert_quiet(&mut wx).await;
    s.create("/y/live", vec![]).await.unwrap();
    s.create("/x/live", vec![]).await.unwrap();
    assert_eq!(take(&mut wx, 1).await[0].1, "/x/live");
    assert_eq!(take(&mut wy, 1).await[0].1, "/y/live");
    assert_quiet(&mut wx).await;
    assert_quiet(&mut wy).await;
}

async fn watch_under_concurrent_writers_has_no_gap_and_no_duplicate(b: &Backend) {
    let s = b.open().await;
    for i in 0..20 {
        s.create(&format!("/c/pre/{i}"), vec![]).await.unwrap();
    }
    let after = s.revision().await.unwrap() - 7;
    // Writers start before the watch, so its replay and live parts overlap with them.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..60 {
                    let prefix = if i % 3 == 0 { "/other" } else { "/c" };
                    let kv = s
                        .create(&format!("{prefix}/w{w}/{i}"), vec![w])
                        .await
                        .unwrap();
                    if i % 5 == 0 {
                        let up = s.update(&kv.key, vec![1], kv.mod_revision).await.unwrap();
                        mine.push((up.key.clone(), up.mod_revision));
                    }
                    mine.push((kv.key, kv.mod_revision));
                }
                mine
            })
        })
        .collect();
    tokio::task::yield_now().await;
    let mut w = s.watch("/c/", after).await.unwrap();
    let mut written: Vec<(String, Revision)> = Vec::new();
    for h in writers {
        written.extend(h.await.unwrap());
    }
    let end = s.revision().await.unwrap();
    // Every write under /c/ after `after`, pre-existing ones included.
    let pre = s.list("/c/pre/", None, 0, None).await.unwrap();
    written.extend(pre.items.into_iter().map(|k| (k.key, k.mod_revision)));
    let mut want: Vec<Revision> = written
        .iter()
        .filter(|(k, r)| k.starts_with("/c/") && *r > after)
        .map(|(_, r)| *r)
        .collect();
    want.sort_unstable();
    let got: Vec<Revision> = take(&mut w, want.len())
        .await
        .into_iter()
        .map(|e| e.2)
        .collect();
    assert_eq!(got, want, "strictly increasing, each write exactly once");
    assert!(got.last().is_some_and(|r| *r <= end));
    assert_quiet(&mut w).await;
}

/// Many writers racing on one key (their writes land in the same commit groups): one create
/// wins, and of every round of compare-and-swap updates from the same revision exactly one
/// wins; the losers get errors and change nothing.
async fn racing_writers_of_one_key_one_wins_each_round(b: &Backend) {
    let s = b.open().await;
    let creates: Vec<_> = (0..16u8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.create("/race/k", vec![i]).await })
        })
        .collect();
    let mut won = Vec::new();
    for t in creates {
        match t.await.unwrap() {
            Ok(kv) => won.push(kv),
            Err(StoreError::AlreadyExists(k)) => assert_eq!(k, "/race/k"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one create wins");
    let mut base = won[0].mod_revision;
    for round in 0..5u8 {
        let updates: Vec<_> = (0..16u8)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.update("/race/k", vec![round, i], base).await })
            })
            .collect();
        let mut winners = Vec::new();
        for t in updates {
            match t.await.unwrap() {
                Ok(kv) => winners.push(kv),
                Err(StoreError::Conflict { expected, .. }) => assert_eq!(expected, base),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one update wins");
        let now = s.get("/race/k").await.unwrap().unwrap();
        assert_eq!(now.value, winners[0].value);
        assert_eq!(now.mod_revision, winners[0].mod_revision);
        base = now.mod_revision;
    }
    assert_eq!(
        s.revision().await.unwrap(),
        base,
        "losers did not bump the revision"
    );
}

#[tokio::test]
async fn watch_from_compacted_revision_fails() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir).with_history(3);
    for i in 0..10 {
        s.create(&format!("/h/{i}"), vec![]).await.unwrap();
    }
    let now = s.revision().await.unwrap();
    // The last three revisions are kept: watching from now-3 replays them.
    let mut w = s.watch("/h/", now - 3).await.unwrap();
    assert_eq!(take(&mut w, 3).await.len(), 3);
    match s.watch("/h/", now - 4).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (now - 4, now - 3))
        }
        Err(e) => panic!("expected Compacted, got {e:?}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
    assert!(matches!(
        s.watch("/h/", 0).await,
        Err(StoreError::Compacted { .. })
    ));

    // Explicit compaction.
    let dir2 = tempfile::tempdir().unwrap();
    let s = open(&dir2);
    for i in 0..10 {
        s.create(&format!("/h/{i}"), vec![]).await.unwrap();
    }
    assert!(s.watch("/h/", 0).await.is_ok());
    s.compact(6).unwrap();
    assert!(matches!(
        s.watch("/h/", 5).await,
        Err(StoreError::Compacted {
            requested: 5,
            oldest: 6
        })
    ));
    let mut w = s.watch("/h/", 6).await.unwrap();
    assert_eq!(take(&mut w, 5).await[0].2, 7);
    assert!(matches!(
        s.list("/h/", None, 0, Some(5)).await,
        Err(StoreError::Compacted { .. })
    ));
    assert!(matches!(
        s.compact(1000),
        Err(StoreError::FutureRevision { .. })
    ));
    s.compact(3).unwrap(); // already compacted further: no-op
}

#[tokio::test]
async fn slow_watcher_gets_an_error_and_its_stream_ends() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir).with_watch_buffer(4);
    let mut w = s.watch("/s/", s.revision().await.unwrap()).await.unwrap();
    for i in 0..10 {
        s.create(&format!("/s/{i}"), vec![]).await.unwrap();
    }
    let mut items = Vec::new();
    while let Some(item) = tokio::time::timeout(WAIT, w.next()).await.unwrap() {
        items.push(item);
    }
    let last = items.pop().expect("an error item");
    assert!(
        matches!(&last, Err(StoreError::Backend(m)) if m.contains("watch lagged")),
        "{last:?}"
    );
    assert!(items.iter().all(Result::is_ok));
}

async fn watch_ends_when_the_store_is_dropped(b: &Backend) {
    let s = b.open().await;
    let mut w = s.watch("/", 0).await.unwrap();
    drop(s);
    assert!(
        tokio::time::timeout(WAIT, w.next())
            .await
            .unwrap()
            .is_none()
    );
}

async fn reopen_keeps_the_revision_and_the_log(b: &Backend) {
    let (a, mid) = {
        let s = b.open().await;
        let a = s.create("/o/a", b"a".to_vec()).await.unwrap();
        let mid = s.revision().await.unwrap();
        s.update("/o/a", b"a2".to_vec(), a.mod_revision)
            .await
            .unwrap();
        s.create("/o/b", b"b".to_vec()).await.unwrap();
        s.delete("/o/b", None).await.unwrap();
        (a, mid)
    };
    let s = b.open().await;
    assert_eq!(s.revision().await.unwrap(), 5);
    assert_eq!(s.get("/o/a").await.unwrap().unwrap().value, b"a2");
    let mut w = s.watch("/o/", mid).await.unwrap();
    assert_eq!(
        take(&mut w, 3).await,
        [
            (EventKind::Put, "/o/a".into(), 3),
            (EventKind::Put, "/o/b".into(), 4),
            (EventKind::Delete, "/o/b".into(), 5),
        ]
    );
    assert_eq!(
        s.list("/o/", None, 0, Some(mid)).await.unwrap().items,
        vec![a]
    );
    let c = s.create("/o/c", vec![]).await.unwrap();
    assert_eq!(c.mod_revision, 6);
    assert_eq!(take(&mut w, 1).await[0].2, 6);
}

const CHILD_ENV: &str = "SKIFF_STORE_WRITER_DB";

/// Not a test on its own: the child process of `acknowledged_writes_survive_kill_9`. It
/// creates keys until killed and prints `ack <key> <revision>` after each returns.
#[tokio::test]
async fn durability_child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let s = EmbeddedStore::open(Path::new(&path)).unwrap();
    let start = s.revision().await.unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let key = format!("/d/{start}/{i}");
        let kv = s.create(&key, value_of(&key)).await.unwrap();
        writeln!(out, "ack {key} {}", kv.mod_revision).unwrap();
        out.flush().unwrap();
    }
}

fn value_of(key: &str) -> Vec<u8> {
    format!("{{\"key\":\"{key}\",\"pad\":\"{}\"}}", "x".repeat(200)).into_bytes()
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeMap<String, Revision> = BTreeMap::new();
    // Kill after a random number of acknowledgements, so the kill lands at a random moment
    // of a write (the child keeps writing while we read its output).
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        | 1;
    eprintln!("kill -9 test seed {seed}");
    for round in 0..5 {
        // xorshift32
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let wait_for = 1 + usize::try_from(seed % 120).unwrap();
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "durability_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut n = 0;
        while n < wait_for {
            let line = lines.next().expect("child output").unwrap();
            if let Some(rest) = line.strip_prefix("ack ") {
                let (key, rev) = rest.split_once(' ').unwrap();
                acked.insert(key.to_string(), rev.parse().unwrap());
                n += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        // Acknowledgements already in the pipe count too.
        for line in lines {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("ack ") {
                let (key, rev) = rest.split_once(' ').unwrap();
                acked.insert(key.to_string(), rev.parse().unwrap());
            }
        }
        child.wait().unwrap();

        let s = EmbeddedStore::open(&path).unwrap();
        for (key, rev) in &acked {
            let kv = s
                .get(key)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: acknowledged {key} lost"));
            assert_eq!(kv.mod_revision, *rev);
            assert_eq!(kv.value, value_of(key));
        }
        let max = acked.values().max().copied().unwrap();
        assert!(s.revision().await.unwrap() >= max);
        // The reopened store takes writes and its log is intact for watches.
        let kv = s.create(&format!("/after/{round}"), vec![]).await.unwrap();
        assert!(kv.mod_revision > max);
        let mut w = s.watch("/after/", kv.mod_revision - 1).await.unwrap();
        assert_eq!(take(&mut w, 1).await[0].2, kv.mod_revision);
    }
}

/// Write throughput of one writer (one fsync per write) and of eight (group commit). A measurement, not
/// a pass/fail target: `cargo test -p skiff-master --test store -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run explicitly"]
async fn measure_write_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let value = value_of("/bench/pod");
    let n = 2000;
    let t = Instant::now();
    for i in 0..n {
        s.create(&format!("/bench/{i}"), value.clone())
            .await
            .unwrap();
    }
    let dt = t.elapsed();
    println!(
        "single writer: {n} creates in {dt:?}: {:.0} creates/s ({} byte values)",
        f64::from(n) / dt.as_secs_f64(),
        value.len()
    );
    // Eight concurrent writers: their writes share commits (group commit).
    let s = Arc::new(s);
    let t = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let s = s.clone();
            let value = value.clone();
            tokio::spawn(async move {
                for i in 0..n / 8 {
                    s.create(&format!("/conc/{w}/{i}"), value.clone())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let dt = t.elapsed();
    println!(
        "8 writers: {n} creates in {dt:?}: {:.0} creates/s",
        f64::from(n) / dt.as_secs_f64()
    );
    let t = Instant::now();
    let mut w = s.watch("/bench/", 0).await.unwrap();
    let got = take(&mut w, n as usize).await.len();
    println!("watch replay of {got} events: {:?}", t.elapsed());
    let t = Instant::now();
    let l = s.list("/bench/", None, 0, None).await.unwrap();
    println!("list of {} keys: {:?}", l.items.len(), t.elapsed());
}

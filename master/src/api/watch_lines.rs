//! Watch event lines rendered once per event and shared by every watcher that sends it.
//!
//! A plain watch (no selectors, no Table) sends each stored object as it is stored, with
//! its resourceVersion set (`raw_item`): the same bytes for every such watcher of the
//! event. With many watchers, rendering that line in each of them (parse the metadata,
//! set the version, write it out again) is most of the work of a write, so the first
//! watcher renders it and the others reuse it. The cache holds the most recent events
//! only (by revision); a watcher replaying older history renders its lines itself.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::body::Bytes;

use crate::store::KeyValue;

/// How many recent event lines are kept.
pub(crate) const CAPACITY: usize = 4096;

/// Rendered event lines by (revision, key, event type).
type Lines = BTreeMap<(u64, String, &'static str), Bytes>;

/// The shared event lines of one server.
#[derive(Debug, Default)]
pub(crate) struct WatchLines {
    lines: Mutex<Lines>,
}

impl WatchLines {
    /// The line of the event `ty` for `kv` (as of its mod revision): from the cache, or
    /// rendered with `render` and kept for the other watchers.
    pub(crate) fn get_or_render<E>(
        &self,
        kv: &KeyValue,
        ty: &'static str,
        render: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<Bytes, E> {
        let key = (kv.mod_revision, kv.key.clone(), ty);
        if let Some(line) = self.lock().get(&key) {
            return Ok(line.clone());
        }
        // rendered without the lock: concurrent watchers of a new event may both render it
        let line = render()?;
        let mut lines = self.lock();
        lines.insert(key, line.clone());
        while lines.len() > CAPACITY {
            lines.pop_first();
        }
        Ok(line)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lines> {
        // the map stays consistent even if a holder panicked: take it over
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::cell::Cell;

    use super::*;

    fn kv(key: &str, rev: u64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: b"{}".to_vec(),
            create_revision: rev,
            mod_revision: rev,
        }
    }

    #[test]
    fn each_event_is_rendered_once() {
        let lines = WatchLines::default();
        let renders = Cell::new(0);
        let render = |s: &'static str| {
            renders.set(renders.get() + 1);
            Ok::<_, ()>(Bytes::from_static(s.as_bytes()))
        };
        let cases: &[(&str, u64, &str, &str, usize)] = &[
            // key, revision, type, expected line, renders so far
            ("/pods/a", 5, "ADDED", "a5", 1),
            ("/pods/a", 5, "ADDED", "a5", 1),
            ("/pods/a", 6, "MODIFIED", "a6", 2),
            ("/pods/b", 6, "MODIFIED", "b6", 3),
            ("/pods/a", 6, "DELETED", "a6-deleted", 4),
            ("/pods/a", 6, "MODIFIED", "a6", 4),
        ];
        for (key, rev, ty, want, n) in cases {
            let got = lines
                .get_or_render(&kv(key, *rev), ty, || render(want))
                .unwrap();
            assert_eq!(&got[..], want.as_bytes(), "{key}@{rev} {ty}");
            assert_eq!(renders.get(), *n, "{key}@{rev} {ty}");
        }
    }

    #[test]
    fn a_failed_render_is_not_kept() {
        let lines = WatchLines::default();
        let err: Result<Bytes, &str> = lines.get_or_render(&kv("/x", 1), "ADDED", || Err("bad"));
        assert_eq!(err, Err("bad"));
        assert_eq!(lines.len(), 0);
    }

    #[test]
    fn only_the_newest_revisions_are_kept() {
        let lines = WatchLines::default();
        let n = CAPACITY as u64 + 10;
        for rev in 1..=n {
            lines
                .get_or_render(&kv("/k", rev), "ADDED", || {
                    Ok::<_, ()>(Bytes::from(rev.to_string()))
                })
                .unwrap();
        }
        assert_eq!(lines.len(), CAPACITY);
        // the oldest went first: rendering revision 1 again calls the renderer
        let again = Cell::new(false);
        lines
            .get_or_render(&kv("/k", 1), "ADDED", || {
                again.set(true);
                Ok::<_, ()>(Bytes::from_static(b"1"))
            })
            .unwrap();
        assert!(again.get());
        // the newest is still there
        let line = lines
            .get_or_render(&kv("/k", n), "ADDED", || Ok::<_, ()>(Bytes::new()))
            .unwrap();
        assert_eq!(&line[..], n.to_string().as_bytes());
    }
}

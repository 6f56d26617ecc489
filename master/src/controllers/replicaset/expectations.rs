//! Expectations (upstream's `UIDTrackingControllerExpectations`): after a controller creates
//! or deletes pods it waits until its watch-fed cache has seen every one of those changes
//! before it counts pods again, so events arriving late never make it create or delete twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

/// Expectations older than this are dropped (a watch event was lost), as upstream.
pub const TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Pending {
    /// Creates issued whose response has not come back yet.
    creating: usize,
    /// Pods seen by the watch while creates were in flight (their create may not have
    /// returned yet).
    early: HashSet<String>,
    /// Pods created and not yet seen by the watch.
    created: HashSet<String>,
    /// Pods deleted (name → uid) and not yet seen gone or terminating.
    deleting: HashMap<String, String>,
    since: Instant,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            creating: 0,
            early: HashSet::new(),
            created: HashSet::new(),
            deleting: HashMap::new(),
            since: Instant::now(),
        }
    }
}

/// What one controller expects to see, per owner key (`namespace/name`).
#[derive(Debug, Default)]
pub struct Expectations(Mutex<HashMap<String, Pending>>);

/// What the cache knows of a pod: its uid and whether it is being deleted.
pub type Seen<'a> = (&'a str, bool);

impl Expectations {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Pending>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `n` creates are about to be issued for `key`.
    pub fn creating(&self, key: &str, n: usize) {
        let mut m = self.map();
        let p = m.entry(key.to_string()).or_insert_with(Pending::new);
        p.creating += n;
        p.since = Instant::now();
    }

    /// One create for `key` returned: `Some(name)` when it succeeded.
    pub fn created(&self, key: &str, name: Option<&str>) {
        let mut m = self.map();
        if let Some(p) = m.get_mut(key) {
            p.creating = p.creating.saturating_sub(1);
            if let Some(name) = name {
                if !p.early.remove(name) {
                    p.created.insert(name.to_string());
                }
            }
            if p.creating == 0 {
                p.early.clear();
            }
        }
    }

    /// A delete of pod `name` (`uid`) is about to be issued for `key`.
    pub fn deleting(&self, key: &str, name: &str, uid: &str) {
        let mut m = self.map();
        let p = m.entry(key.to_string()).or_insert_with(Pending::new);
        p.deleting.insert(name.to_string(), uid.to_string());
        p.since = Instant::now();
    }

    /// The delete of `name` failed: it will not be observed.
    pub fn delete_failed(&self, key: &str, name: &str) {
        if let Some(p) = self.map().get_mut(key) {
            p.deleting.remove(name);
        }
    }

    /// The watch delivered `pod`, owned by `key` (any event type).
    pub fn observe(&self, key: &str, pod: &Pod) {
        let Some(name) = pod.metadata.name.as_deref() else {
            return;
        };
        if let Some(p) = self.map().get_mut(key) {
            if p.creating > 0 {
                p.early.insert(name.to_string());
            }
            p.created.remove(name);
            if pod.metadata.deletion_timestamp.is_some() {
                p.deleting.remove(name);
            }
        }
    }

    /// Whether everything expected for `key` has been seen in the cache (`lookup` finds a
    /// pod of the namespace by name), so the controller may count pods again.
    pub fn satisfied<'a>(&self, key: &str, lookup: impl Fn(&str) -> Option<Seen<'a>>) -> bool {
        let mut m = self.map();
        let Some(p) = m.get_mut(key) else {
            return true;
        };
        if p.since.elapsed() > TIMEOUT {
            tracing::info!(key, "expectations timed out");
            m.remove(key);
            return true;
        }
        p.created.retain(|name| lookup(name).is_none());
        p.deleting.retain(|name, uid| match lookup(name) {
            Some((u, terminating)) => u == uid && !terminating,
            None => false,
        });
        if p.creating == 0 && p.created.is_empty() && p.deleting.is_empty() {
            m.remove(key);
            return true;
        }
        false
    }

    /// The owner is gone: forget it.
    pub fn forget(&self, key: &str) {
        self.map().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, deleting: bool) -> Pod {
        let mut v = json!({"metadata": {"name": name, "uid": format!("uid-{name}")}});
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn creates_are_satisfied_once_seen() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs", |_| None));
        e.creating("ns/rs", 2);
        assert!(!e.satisfied("ns/rs", |_| None), "creates in flight");
        e.created("ns/rs", Some("a"));
        e.created("ns/rs", None);
        assert!(!e.satisfied("ns/rs", |_| None), "a not seen yet");
        assert!(e.satisfied("ns/rs", |n| (n == "a").then_some(("uid-a", false))));
    }

    #[test]
    fn a_pod_seen_before_its_create_returned_counts() {
        let e = Expectations::default();
        e.creating("ns/rs", 1);
        // Created and deleted again before the create response came back.
        e.observe("ns/rs", &pod("a", false));
        e.created("ns/rs", Some("a"));
        assert!(e.satisfied("ns/rs", |_| None));
    }

    #[test]
    fn deletes_are_satisfied_when_gone_or_terminating() {
        let e = Expectations::default();
        e.deleting("ns/rs", "a", "uid-a");
        e.deleting("ns/rs", "b", "uid-b");
        e.deleting("ns/rs", "c", "uid-c");
        e.delete_failed("ns/rs", "c");
        let lookup = |n: &str| match n {
            "a" => Some(("uid-a", false)),
            "b" => Some(("uid-b", true)),
            _ => None,
        };
        assert!(!e.satisfied("ns/rs", lookup), "a still there");
        e.observe("ns/rs", &pod("a", true));
        assert!(e.satisfied("ns/rs", lookup));
        // A pod of the same name but another uid is a new pod: the old one is gone.
        e.deleting("ns/rs", "a", "uid-old");
        assert!(e.satisfied("ns/rs", lookup));
    }
}

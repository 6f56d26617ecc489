//! The store behind the API server: a revisioned key-value map with compare-and-swap and
//! watch, the contract etcd v3 offers. Keys look like etcd's for Kubernetes:
//! `/registry/<group>/<resource>/<namespace>/<name>` (core group: `/registry/<resource>/…`).
//! Values are the objects' JSON. An object's `resourceVersion` is its `mod_revision`.

use std::pin::Pin;

use futures::Stream;

/// A store revision: every successful write increments it by one.
pub type Revision = u64;

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The object as JSON bytes.
    pub value: Vec<u8>,
    /// Revision at which the key was created.
    pub create_revision: Revision,
    /// Revision of the last change (the object's resourceVersion).
    pub mod_revision: Revision,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// One change, as a watch delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change (for a delete: the last value, with `mod_revision` set to
    /// the revision of the delete).
    pub kv: KeyValue,
    /// The value before the change, if there was one.
    pub prev: Option<KeyValue>,
}

/// A page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    /// The objects, ordered by key.
    pub items: Vec<KeyValue>,
    /// The revision the list was read at (the list's resourceVersion).
    pub revision: Revision,
    /// Whether more keys follow (for limit/continue).
    pub more: bool,
}

/// Errors of store operations.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// create of a key that exists.
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// get/update/delete of a key that does not exist.
    #[error("key {0} not found")]
    NotFound(String),
    /// compare-and-swap failed: the key changed since `expected`.
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller based its change on.
        expected: Revision,
        /// The key's current revision.
        actual: Revision,
    },
    /// A revision older than the oldest one kept (watch/list at a compacted revision): 410.
    #[error("revision {requested} has been compacted (oldest kept: {oldest})")]
    Compacted {
        /// Asked for.
        requested: Revision,
        /// Oldest still available.
        oldest: Revision,
    },
    /// A revision in the future.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        /// Asked for.
        requested: Revision,
        /// Current.
        current: Revision,
    },
    /// The backend failed (disk, database, network to etcd).
    #[error("store backend: {0}")]
    Backend(String),
}

/// A stream of watch events in revision order; ends when the store shuts down.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event, StoreError>> + Send>>;

/// The store contract. Every write is durable (fsynced) before it returns.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current revision.
    async fn revision(&self) -> Result<Revision, StoreError>;
    /// One key, at the current revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Keys under `prefix` (ordered), starting after `start_after` (exclusive, for
    /// continue tokens), at most `limit` (0 = no limit), read at `revision` (None = current;
    /// an older revision may be refused with Compacted).
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListResult, StoreError>;
    /// Creates `key`; fails with AlreadyExists.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError>;
    /// Replaces `key` if its mod_revision is `expected` (compare-and-swap); fails with
    /// NotFound or Conflict.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError>;
    /// Deletes `key`, if `expected` is given only at that mod_revision; returns the last
    /// value (with mod_revision = the delete's revision).
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError>;
    /// Events for keys under `prefix` with revision > `after`, then live ones. Fails with
    /// Compacted when `after` is older than what the store keeps.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;
}

/// The etcd v3 backend, for several masters sharing one etcd cluster.
pub mod etcd;

/// The embedded, durable file store (redb) with an event log for watches.
pub mod embedded;

/// An in-memory store (tests, and serving without a data file).
pub mod memory;

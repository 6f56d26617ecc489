//! skiff-master: the API server (a faithful subset of the Kubernetes REST API), its
//! durable store, and (later) the scheduler and controllers.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The HTTP(S) API server: authentication, discovery, REST handlers, watch.
pub mod api;
/// Cluster CA, serving certificate, tokens and the admin kubeconfig.
pub mod certs;
/// Kinds served: group/version/resource table, defaulting, validation, patches, tables.
pub mod resources;
/// The `Store` trait and its backends (embedded redb, etcd).
pub mod store;

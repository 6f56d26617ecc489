//! skiff-master: the API server (a faithful subset of the Kubernetes REST API), its
//! durable store, the scheduler and the controllers.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The HTTP(S) API server: authentication, discovery, REST handlers, watch.
pub mod api;
/// Cluster CA, serving certificate, tokens and the admin kubeconfig.
pub mod certs;
/// Scheduler and controllers: reconcilers over watch-fed caches, run by the leader.
pub mod controllers;
/// Prometheus metrics of the API server and its store (`/metrics`).
pub mod metrics;
/// The resource metrics collector (metrics-server's scraping of the agents) and its cache.
pub mod metrics_collector;
/// Kinds served: group/version/resource table, defaulting, validation, patches, tables.
pub mod resources;
/// The `Store` trait and its backends (embedded redb, etcd).
pub mod store;

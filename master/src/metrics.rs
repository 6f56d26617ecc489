//! The master's Prometheus metrics (served at `/metrics`), named as kube-apiserver names them
//! so existing dashboards and alerts apply: requests by verb, resource and code, request
//! latency, open watches, and the latency of the store under the API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::{KeyValue, ListResult, Revision, Store, StoreError, WatchStream};

/// The Content-Type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// kube-apiserver's buckets for `apiserver_request_duration_seconds`.
const REQUEST_BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];
/// kube-apiserver's buckets for `etcd_request_duration_seconds`.
const STORE_BUCKETS: [f64; 20] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0,
];

/// What a request is, as labels.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Kubernetes verb (`get`, `list`, `watch`, `create`, …), or the lower-case HTTP method
    /// of a non-resource path.
    pub verb: String,
    /// API group (empty for the core group).
    pub group: String,
    /// Resource (plural), empty for non-resource paths.
    pub resource: String,
    /// Subresource (`status`, `log`, …) or empty.
    pub subresource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    verb: String,
    group: String,
    resource: String,
    subresource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    verb: String,
    group: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    operation: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The master's metrics and their registry.
pub struct ApiMetrics {
    registry: Registry,
    requests: Family<CodeLabels, Counter>,
    latency: HistogramFamily<RequestLabels>,
    longrunning: Family<WatchLabels, Gauge>,
    store_latency: HistogramFamily<StoreLabels>,
    store_errors: Family<StoreLabels, Counter>,
}

impl std::fmt::Debug for ApiMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiMetrics").finish_non_exhaustive()
    }
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps a watch counted in `apiserver_longrunning_requests` until dropped.
#[derive(Debug)]
pub struct WatchGuard(Gauge);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl ApiMetrics {
    /// Empty metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<CodeLabels, Counter>::default();
        let latency: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS));
        let longrunning = Family::<WatchLabels, Gauge>::default();
        let store_latency: HistogramFamily<StoreLabels> =
            Family::new_with_constructor(|| Histogram::new(STORE_BUCKETS));
        let store_errors = Family::<StoreLabels, Counter>::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, group, resource and HTTP response code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, resource and subresource",
            latency.clone(),
        );
        registry.register(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests (watches) broken out by verb, group and resource",
            longrunning.clone(),
        );
        registry.register(
            "etcd_request_duration_seconds",
            "Store request latency in seconds for each operation (embedded or etcd backend)",
            store_latency.clone(),
        );
        registry.register(
            "skiff_store_request_errors",
            "Store requests that failed, for each operation",
            store_errors.clone(),
        );
        ApiMetrics {
            registry,
            requests,
            latency,
            longrunning,
            store_latency,
            store_errors,
        }
    }

    /// Counts one finished request and its latency.
    pub fn observe_request(&self, labels: &RequestLabels, code: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&CodeLabels {
                verb: labels.verb.clone(),
                group: labels.group.clone(),
                resource: labels.resource.clone(),
                subresource: labels.subresource.clone(),
                code: code.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an open watch until the guard is dropped.
    pub fn watch_started(&self, labels: &RequestLabels) -> WatchGuard {
        let g = self
            .longrunning
            .get_or_create(&WatchLabels {
                verb: "WATCH".into(),
                group: labels.group.clone(),
                resource: labels.resource.clone(),
            })
            .clone();
        g.inc();
        WatchGuard(g)
    }

    fn observe_store(&self, operation: &'static str, started: Instant, ok: bool) {
        let labels = StoreLabels {
            operation: operation.into(),
        };
        self.store_latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if !ok {
            self.store_errors.get_or_create(&labels).inc();
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A store that times every call into `etcd_request_duration_seconds`.
pub struct MeasuredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<ApiMetrics>,
}

impl MeasuredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<ApiMetrics>) -> Self {
        MeasuredStore { inner, metrics }
    }

    fn done<T>(
        &self,
        op: &'static str,
        started: Instant,
        r: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // answers that are part of the contract (not found, conflict) are no store failures
        let ok = !matches!(r, Err(StoreError::Backend(_)));
        self.metrics.observe_store(op, started, ok);
        r
    }
}

#[async_trait::async_trait]
impl Store for MeasuredStore {
    async fn revision(&self) -> Result<Revision, StoreError> {
        let t = Instant::now();
        let r = self.inner.revision().await;
        self.done("revision", t, r)
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.done("get", t, r)
    }
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListResult, StoreError> {
        let t = Instant::now();
        let r = self.inner.list(prefix, start_after, limit, revision).await;
        self.done("list", t, r)
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let t = Instant::now();
        let r = self.inner.create(key, value).await;
        self.done("create", t, r)
    }
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        let t = Instant::now();
        let r = self.inner.update(key, value, expected).await;
        self.done("update", t, r)
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        let t = Instant::now();
        let r = self.inner.delete(key, expected).await;
        self.done("delete", t, r)
    }
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let t = Instant::now();
        let r = self.inner.watch(prefix, after).await;
        self.done("watch", t, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(verb: &str, resource: &str) -> RequestLabels {
        RequestLabels {
            verb: verb.into(),
            group: String::new(),
            resource: resource.into(),
            subresource: String::new(),
        }
    }

    #[test]
    fn exposition_counts_requests_latency_and_watches() {
        let m = ApiMetrics::new();
        m.observe_request(&labels("list", "pods"), 200, Duration::from_millis(3));
        m.observe_request(&labels("list", "pods"), 200, Duration::from_millis(700));
        m.observe_request(&labels("get", "pods"), 404, Duration::from_millis(1));
        let w1 = m.watch_started(&labels("watch", "pods"));
        let w2 = m.watch_started(&labels("watch", "pods"));
        drop(w1);
        let text = m.encode().unwrap();
        let cases = [
            r#"apiserver_request_total{verb="list",group="",resource="pods",subresource="",code="200"} 2"#,
            r#"apiserver_request_total{verb="get",group="",resource="pods",subresource="",code="404"} 1"#,
            r#"apiserver_request_duration_seconds_count{verb="list",group="",resource="pods",subresource=""} 2"#,
            r#"apiserver_request_duration_seconds_bucket{le="0.005",verb="list",group="",resource="pods",subresource=""} 1"#,
            r#"apiserver_request_duration_seconds_bucket{le="0.8",verb="list",group="",resource="pods",subresource=""} 2"#,
            r#"apiserver_longrunning_requests{verb="WATCH",group="",resource="pods"} 1"#,
            "# TYPE apiserver_request_duration_seconds histogram",
        ];
        for want in cases {
            assert!(text.lines().any(|l| l == want), "{want} missing in\n{text}");
        }
        drop(w2);
        let text = m.encode().unwrap();
        assert!(text.contains(
            r#"apiserver_longrunning_requests{verb="WATCH",group="",resource="pods"} 0"#
        ));
    }
}

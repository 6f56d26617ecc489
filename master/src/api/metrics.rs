//! `metrics.k8s.io/v1beta1`, served by the API server itself from the collector's cache
//! ([`crate::metrics_collector`]) as metrics-server serves it through aggregation: discovery
//! entries, NodeMetrics (`/nodes`, `/nodes/{name}`) and PodMetrics (`/pods`,
//! `/namespaces/{ns}/pods`, `/namespaces/{ns}/pods/{name}`), label and field selectors, get
//! and list only. Usage is cpu in nanocores and memory in bytes as canonical quantities.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tracing::warn;

use super::rest::decode_kv;
use super::status::ApiError;
use super::{FieldSelector, LabelSelector, Server, json_response};
use crate::metrics_collector::{
    AgentSource, DEFAULT_INTERVAL, MetricsCache, MetricsSource, NodeTarget, PodPoint, Point, Usage,
    collect_once,
};
use crate::resources::RESOURCES;

/// The group and version.
pub const GROUP: &str = "metrics.k8s.io";
/// The version served.
pub const VERSION: &str = "v1beta1";

/// The collector's state in the server: the cache, the source and how often to scrape.
pub(crate) struct Metrics {
    pub(crate) cache: Arc<MetricsCache>,
    source: RwLock<Arc<dyn MetricsSource>>,
    interval_ms: AtomicU64,
}

impl Metrics {
    /// Scraping the agents every [`DEFAULT_INTERVAL`].
    pub(crate) fn new(tls: super::proxy::KubeletTls) -> Metrics {
        Metrics {
            cache: Arc::default(),
            source: RwLock::new(Arc::new(AgentSource::new(tls))),
            interval_ms: AtomicU64::new(DEFAULT_INTERVAL.as_millis() as u64),
        }
    }

    /// Replaces the source and the interval (tests).
    pub(crate) fn set_source(&self, source: Arc<dyn MetricsSource>, interval: Duration) {
        if let Ok(mut s) = self.source.write() {
            *s = source;
        }
        self.set_interval(interval);
    }

    /// Sets how often to scrape.
    pub(crate) fn set_interval(&self, interval: Duration) {
        self.interval_ms
            .store(interval.as_millis() as u64, Ordering::Relaxed);
    }

    fn source(&self) -> Option<Arc<dyn MetricsSource>> {
        self.source.read().ok().map(|s| s.clone())
    }
}

/// The discovery entries of the two resources: (plural, kind, namespaced).
const KINDS: [(&str, &str, &str, bool); 2] = [
    ("nodes", "node", "NodeMetrics", false),
    ("pods", "pod", "PodMetrics", true),
];

/// The entry in `/apis`.
pub(crate) fn group_entry() -> Value {
    let gv = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"name": GROUP, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis/metrics.k8s.io/v1beta1`.
pub(crate) fn resource_list() -> Value {
    let resources: Vec<Value> = KINDS
        .iter()
        .map(|(plural, singular, kind, namespaced)| {
            json!({"name": plural, "singularName": singular, "namespaced": namespaced,
                   "kind": kind, "verbs": ["get", "list"]})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1",
           "groupVersion": format!("{GROUP}/{VERSION}"), "resources": resources})
}

/// The item in aggregated discovery for `/apis`.
pub(crate) fn aggregated_item() -> Value {
    let resources: Vec<Value> = KINDS
        .iter()
        .map(|(plural, singular, kind, namespaced)| {
            json!({"resource": plural,
                   "responseKind": {"group": GROUP, "version": VERSION, "kind": kind},
                   "scope": if *namespaced { "Namespaced" } else { "Cluster" },
                   "singularResource": singular, "verbs": ["get", "list"]})
        })
        .collect();
    json!({"metadata": {"name": GROUP, "creationTimestamp": null},
           "versions": [{"version": VERSION, "resources": resources, "freshness": "Current"}]})
}

/// CPU as metrics-server writes it: nanocores as a canonical decimal quantity (`12345n`,
/// `5m`, `2`).
pub fn cpu_quantity(nano_cores: u64) -> String {
    if nano_cores == 0 {
        return "0".into();
    }
    for (div, suffix) in [(1_000_000_000, ""), (1_000_000, "m"), (1_000, "u")] {
        if nano_cores % div == 0 {
            return format!("{}{suffix}", nano_cores / div);
        }
    }
    format!("{nano_cores}n")
}

/// Memory as metrics-server writes it: bytes as a canonical binary quantity (`512Ki`, `3Mi`,
/// `1000`).
pub fn memory_quantity(bytes: u64) -> String {
    if bytes == 0 {
        return "0".into();
    }
    let mut v = bytes;
    let mut i = 0;
    while v % 1024 == 0 && i < 6 {
        v /= 1024;
        i += 1;
    }
    let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][i];
    format!("{v}{suffix}")
}

fn usage(u: &Usage) -> Value {
    json!({"cpu": cpu_quantity(u.cpu_nano_cores), "memory": memory_quantity(u.memory_bytes)})
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn window(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}s", s as u64)
    } else {
        format!("{s:.3}s")
    }
}

fn meta(obj: &Value, now: DateTime<Utc>) -> Value {
    let mut m = json!({"name": obj["metadata"]["name"], "creationTimestamp": time(now)});
    if let Some(ns) = obj["metadata"].get("namespace") {
        m["namespace"] = ns.clone();
    }
    if let Some(l) = obj["metadata"].get("labels") {
        m["labels"] = l.clone();
    }
    m
}

fn node_metrics(node: &Value, p: &Point<Usage>, now: DateTime<Utc>) -> Value {
    json!({"kind": "NodeMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
           "metadata": meta(node, now), "timestamp": time(p.timestamp),
           "window": window(p.window), "usage": usage(&p.usage)})
}

fn pod_metrics(pod: &Value, p: &PodPoint, now: DateTime<Utc>) -> Value {
    let containers: Vec<Value> = p
        .usage
        .iter()
        .map(|(name, u)| json!({"name": name, "usage": usage(u)}))
        .collect();
    json!({"kind": "PodMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
           "metadata": meta(pod, now), "timestamp": time(p.timestamp),
           "window": window(p.window), "containers": containers})
}

async fn stored(server: &Server, plural: &str, ns: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let info = RESOURCES
        .iter()
        .find(|r| r.group.is_empty() && r.plural == plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
    let prefix = match ns {
        Some(ns) => format!("{}{}/", info.key_prefix(), ns),
        None => info.key_prefix(),
    };
    let list = server.store.list(&prefix, None, 0, None).await?;
    list.items.iter().map(decode_kv).collect()
}

fn selectors(
    query: &std::collections::HashMap<String, String>,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let l = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let f = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    Ok((l, f))
}

/// Serves `GET /apis/metrics.k8s.io/v1beta1/{rest}`.
pub(crate) async fn serve(
    server: &Server,
    rest: &[&str],
    query: &std::collections::HashMap<String, String>,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let snap = server.resource_metrics.cache.snapshot();
    let gv = format!("{GROUP}/{VERSION}");
    let (l, f) = selectors(query)?;
    let list = |kind: &str, items: Vec<Value>| {
        json_response(
            StatusCode::OK,
            &json!({"kind": kind, "apiVersion": gv, "metadata": {}, "items": items}),
        )
    };
    match rest {
        ["nodes"] => {
            let items = stored(server, "nodes", None)
                .await?
                .iter()
                .filter(|n| l.matches(n) && f.matches(n))
                .filter_map(|n| {
                    let name = n["metadata"]["name"].as_str()?;
                    Some(node_metrics(n, snap.nodes.get(name)?, now))
                })
                .collect();
            Ok(list("NodeMetricsList", items))
        }
        ["nodes", name] => {
            let nodes = stored(server, "nodes", None).await?;
            let found = nodes
                .iter()
                .find(|n| n["metadata"]["name"] == *name)
                .and_then(|n| Some(node_metrics(n, snap.nodes.get(*name)?, now)));
            found
                .map(|v| json_response(StatusCode::OK, &v))
                .ok_or_else(|| ApiError::not_found(GROUP, "nodemetrics", name))
        }
        ["pods"] | ["namespaces", _, "pods"] => {
            let ns = match rest {
                ["namespaces", ns, _] => Some(*ns),
                _ => None,
            };
            let items = stored(server, "pods", ns)
                .await?
                .iter()
                .filter(|p| l.matches(p) && f.matches(p))
                .filter_map(|p| {
                    let key = (
                        p["metadata"]["namespace"].as_str()?.to_string(),
                        p["metadata"]["name"].as_str()?.to_string(),
                    );
                    Some(pod_metrics(p, snap.pods.get(&key)?, now))
                })
                .collect();
            Ok(list("PodMetricsList", items))
        }
        ["namespaces", ns, "pods", name] => {
            let pods = stored(server, "pods", Some(ns)).await?;
            let key = (ns.to_string(), name.to_string());
            pods.iter()
                .find(|p| p["metadata"]["name"] == *name)
                .and_then(|p| Some(pod_metrics(p, snap.pods.get(&key)?, now)))
                .map(|v| json_response(StatusCode::OK, &v))
                .ok_or_else(|| ApiError::not_found(GROUP, "podmetrics", name))
        }
        _ => Err(ApiError::no_route()),
    }
}

fn ready(node: &Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The collector: scrapes every Ready node each interval until `shutdown` changes.
pub(crate) async fn run(server: Arc<Server>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        let interval =
            Duration::from_millis(server.resource_metrics.interval_ms.load(Ordering::Relaxed));
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        let (nodes, pods) = match (
            stored(&server, "nodes", None).await,
            stored(&server, "pods", None).await,
        ) {
            (Ok(n), Ok(p)) => (n, p),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e.message, "metrics collector cannot list");
                continue;
            }
        };
        let targets: Vec<NodeTarget> = nodes
            .iter()
            .filter(|n| ready(n))
            .filter_map(|n| {
                let (ip, port) = super::proxy::node_endpoint(n)?;
                Some(NodeTarget {
                    name: n["metadata"]["name"].as_str()?.to_string(),
                    ip,
                    port,
                })
            })
            .collect();
        let Some(source) = server.resource_metrics.source() else {
            continue;
        };
        collect_once(source.as_ref(), &server.resource_metrics.cache, &targets).await;
        let names: Vec<String> = targets.into_iter().map(|t| t.name).collect();
        let live: Vec<(String, String)> = pods
            .iter()
            .filter_map(|p| {
                Some((
                    p["metadata"]["namespace"].as_str()?.to_string(),
                    p["metadata"]["name"].as_str()?.to_string(),
                ))
            })
            .collect();
        server.resource_metrics.cache.retain_nodes(&names, &live);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_as_metrics_server_writes_them() {
        let cpu = [
            (0, "0"),
            (12_345, "12345n"),
            (5_000_000, "5m"),
            (2_000_000_000, "2"),
            (1_500_000_000, "1500m"),
            (3_000, "3u"),
        ];
        for (n, want) in cpu {
            assert_eq!(cpu_quantity(n), want, "{n}");
        }
        let mem = [
            (0, "0"),
            (1000, "1000"),
            (524_288, "512Ki"),
            (3 * 1024 * 1024, "3Mi"),
            (1025 * 1024, "1025Ki"),
        ];
        for (b, want) in mem {
            assert_eq!(memory_quantity(b), want, "{b}");
        }
        assert_eq!(window(Duration::from_secs(15)), "15s");
        assert_eq!(window(Duration::from_millis(10_500)), "10.500s");
    }

    #[test]
    fn discovery_documents() {
        let l = resource_list();
        assert_eq!(l["groupVersion"], "metrics.k8s.io/v1beta1");
        assert_eq!(l["resources"][1]["kind"], "PodMetrics");
        assert_eq!(l["resources"][0]["namespaced"], false);
        assert_eq!(group_entry()["preferredVersion"]["version"], "v1beta1");
        assert_eq!(
            aggregated_item()["versions"][0]["resources"][1]["scope"],
            "Namespaced"
        );
    }
}

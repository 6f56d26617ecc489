//! The resource metrics pipeline (metrics-server's job, in the master): every
//! [`DEFAULT_INTERVAL`] a collector task asks a [`MetricsSource`] for each Ready node's
//! figures, turns them into NodeMetrics/PodMetrics usage and keeps the latest in memory for
//! `metrics.k8s.io` (and through it the HorizontalPodAutoscaler controller).
//!
//! The real source, [`AgentSource`], reads the agent's `GET /stats/summary` over TLS with the
//! API server's kubelet client certificate at the node's InternalIP and
//! `daemonEndpoints.kubeletEndpoint.Port`; tests inject their own source.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tracing::{debug, warn};

/// How often metrics-server scrapes (its `--metric-resolution`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// How long one node's scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of one scrape.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The agent could not be reached.
    #[error("cannot reach the agent at {addr}: {message}")]
    Connect {
        /// Its address.
        addr: String,
        /// Why.
        message: String,
    },
    /// The agent answered with an error or an unreadable summary.
    #[error("bad answer from the agent at {addr}: {message}")]
    Answer {
        /// Its address.
        addr: String,
        /// What was wrong.
        message: String,
    },
}

/// CPU figures of a Summary API entry (the fields used).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CpuFigures {
    /// When sampled.
    pub time: Option<DateTime<Utc>>,
    /// The rate over the agent's last window.
    pub usage_nano_cores: Option<u64>,
    /// Cumulative CPU time in ns.
    #[serde(default)]
    pub usage_core_nano_seconds: u64,
}

/// Memory figures of a Summary API entry (the fields used).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemoryFigures {
    /// When sampled.
    pub time: Option<DateTime<Utc>>,
    /// Working set in bytes.
    #[serde(default)]
    pub working_set_bytes: u64,
}

/// A container's entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ContainerFigures {
    /// Name.
    pub name: String,
    /// CPU.
    #[serde(default)]
    pub cpu: CpuFigures,
    /// Memory.
    #[serde(default)]
    pub memory: MemoryFigures,
}

/// The pod of an entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PodRef {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
}

/// A pod's entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodFigures {
    /// The pod.
    pub pod_ref: PodRef,
    /// Its containers.
    #[serde(default)]
    pub containers: Vec<ContainerFigures>,
}

/// The node's entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct NodeFigures {
    /// CPU.
    #[serde(default)]
    pub cpu: CpuFigures,
    /// Memory.
    #[serde(default)]
    pub memory: MemoryFigures,
}

/// The kubelet Summary API document (the fields used).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Summary {
    /// The node.
    pub node: NodeFigures,
    /// Its pods.
    #[serde(default)]
    pub pods: Vec<PodFigures>,
}

/// A node to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTarget {
    /// The Node's name.
    pub name: String,
    /// Its InternalIP.
    pub ip: IpAddr,
    /// Its kubelet port.
    pub port: u16,
}

/// Where the figures come from.
pub trait MetricsSource: Send + Sync {
    /// The node's summary now.
    fn scrape<'a>(&'a self, node: &'a NodeTarget) -> BoxFuture<'a, Result<Summary, ScrapeError>>;
}

/// The agents' `/stats/summary` over TLS with the kubelet client certificate.
pub struct AgentSource {
    tls: Arc<rustls::ClientConfig>,
}

impl AgentSource {
    /// A source using `tls` (the API server's kubelet client configuration).
    pub fn new(tls: Arc<rustls::ClientConfig>) -> AgentSource {
        AgentSource { tls }
    }

    async fn get(&self, node: &NodeTarget) -> Result<Summary, ScrapeError> {
        let addr = format!("{}:{}", node.ip, node.port);
        let connect = |message: String| ScrapeError::Connect {
            addr: addr.clone(),
            message,
        };
        let tcp = tokio::net::TcpStream::connect((node.ip, node.port))
            .await
            .map_err(|e| connect(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(
                rustls::pki_types::ServerName::IpAddress(node.ip.into()),
                tcp,
            )
            .await
            .map_err(|e| connect(format!("tls: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| connect(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "agent stats connection ended");
            }
        });
        let answer = |message: String| ScrapeError::Answer {
            addr: addr.clone(),
            message,
        };
        let req = hyper::Request::get("/stats/summary?only_cpu_and_memory=true")
            .header(hyper::header::HOST, &addr)
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| answer(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| answer(e.to_string()))?;
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            resp.into_body(),
            16 * 1024 * 1024,
        ))
        .await
        .map_err(|e| answer(e.to_string()))?
        .to_bytes();
        if !status.is_success() {
            return Err(answer(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        serde_json::from_slice(&body).map_err(|e| answer(e.to_string()))
    }
}

impl MetricsSource for AgentSource {
    fn scrape<'a>(&'a self, node: &'a NodeTarget) -> BoxFuture<'a, Result<Summary, ScrapeError>> {
        Box::pin(async move {
            tokio::time::timeout(SCRAPE_TIMEOUT, self.get(node))
                .await
                .unwrap_or_else(|_| {
                    Err(ScrapeError::Connect {
                        addr: format!("{}:{}", node.ip, node.port),
                        message: "timeout".into(),
                    })
                })
        })
    }
}

/// CPU and memory of one thing at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// CPU in nanocores.
    pub cpu_nano_cores: u64,
    /// Memory working set in bytes.
    pub memory_bytes: u64,
}

/// A node's or pod's metrics as served.
#[derive(Debug, Clone, PartialEq)]
pub struct Point<T> {
    /// When the figures were taken.
    pub timestamp: DateTime<Utc>,
    /// The window the CPU rate is over.
    pub window: Duration,
    /// The figures.
    pub usage: T,
}

/// A pod's figures: its containers by name, in the agent's order.
pub type PodPoint = Point<Vec<(String, Usage)>>;

/// The latest figures of every node and pod.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    /// Per node name.
    pub nodes: HashMap<String, Point<Usage>>,
    /// Per (namespace, pod name): containers by name, in the agent's order.
    pub pods: HashMap<(String, String), PodPoint>,
}

/// The previous cumulative CPU counter of something, to rate the next one against.
#[derive(Debug, Clone, Copy)]
struct Counter {
    time: DateTime<Utc>,
    ns: u64,
}

/// The rate between two cumulative counters (metrics-server's way); `None` if time did not
/// advance or the counter went back.
fn rate(old: Counter, new: Counter) -> Option<(u64, Duration)> {
    let dt = (new.time - old.time).to_std().ok()?;
    if dt.is_zero() || new.ns < old.ns {
        return None;
    }
    let nanos = u128::from(new.ns - old.ns) * 1_000_000_000 / dt.as_nanos();
    Some((u64::try_from(nanos).ok()?, dt))
}

/// The in-memory cache filled by the collector.
#[derive(Debug, Default)]
pub struct MetricsCache {
    snapshot: RwLock<Snapshot>,
    counters: RwLock<HashMap<String, Counter>>,
}

impl MetricsCache {
    /// A copy of the latest figures.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// CPU usage of `key` from `cpu`: the rate since the last scrape's counter, else the
    /// agent's own rate (over its sampling window), else none yet.
    fn cpu(
        &self,
        counters: &mut HashMap<String, Counter>,
        key: String,
        cpu: &CpuFigures,
        now: DateTime<Utc>,
    ) -> Option<(u64, Duration)> {
        let new = Counter {
            time: cpu.time.unwrap_or(now),
            ns: cpu.usage_core_nano_seconds,
        };
        let old = counters.insert(key, new);
        old.and_then(|o| rate(o, new))
            .or_else(|| cpu.usage_nano_cores.map(|n| (n, Duration::from_secs(10))))
    }

    /// Takes in one node's summary, replacing that node's figures and its pods'.
    pub fn update(&self, node: &str, s: &Summary, now: DateTime<Utc>) {
        let Ok(mut counters) = self.counters.write() else {
            return;
        };
        let mut pods = Vec::new();
        for p in &s.pods {
            let mut containers = Vec::new();
            let mut window = Duration::ZERO;
            let mut ts = now;
            let mut complete = !p.containers.is_empty();
            for c in &p.containers {
                let key = format!("{}/{}/{}", p.pod_ref.namespace, p.pod_ref.name, c.name);
                match self.cpu(&mut counters, key, &c.cpu, now) {
                    Some((cores, w)) => {
                        window = window.max(w);
                        ts = c.cpu.time.unwrap_or(now);
                        containers.push((
                            c.name.clone(),
                            Usage {
                                cpu_nano_cores: cores,
                                memory_bytes: c.memory.working_set_bytes,
                            },
                        ));
                    }
                    // metrics-server leaves out a pod with any container not yet rated
                    None => complete = false,
                }
            }
            if complete {
                pods.push((
                    (p.pod_ref.namespace.clone(), p.pod_ref.name.clone()),
                    Point {
                        timestamp: ts,
                        window,
                        usage: containers,
                    },
                ));
            }
        }
        let node_point = self
            .cpu(&mut counters, format!("node/{node}"), &s.node.cpu, now)
            .map(|(cores, window)| Point {
                timestamp: s.node.cpu.time.unwrap_or(now),
                window,
                usage: Usage {
                    cpu_nano_cores: cores,
                    memory_bytes: s.node.memory.working_set_bytes,
                },
            });
        drop(counters);
        let Ok(mut snap) = self.snapshot.write() else {
            return;
        };
        let names: Vec<(String, String)> = s
            .pods
            .iter()
            .map(|p| (p.pod_ref.namespace.clone(), p.pod_ref.name.clone()))
            .collect();
        // this node's pods that are gone, or not rated, drop out
        snap.pods.retain(|k, _| !names.contains(k));
        for (k, v) in pods {
            snap.pods.insert(k, v);
        }
        match node_point {
            Some(p) => snap.nodes.insert(node.to_string(), p),
            None => snap.nodes.remove(node),
        };
    }

    /// Forgets nodes (and their pods' figures) not in `nodes`, and `pods_gone`.
    pub fn retain_nodes(&self, nodes: &[String], live_pods: &[(String, String)]) {
        if let Ok(mut snap) = self.snapshot.write() {
            snap.nodes.retain(|n, _| nodes.contains(n));
            snap.pods.retain(|k, _| live_pods.contains(k));
        }
    }
}

/// Scrapes every target once through `source` into `cache`.
pub async fn collect_once(
    source: &dyn MetricsSource,
    cache: &MetricsCache,
    targets: &[NodeTarget],
) {
    let scrapes = futures::future::join_all(
        targets
            .iter()
            .map(|t| async move { (t, source.scrape(t).await) }),
    )
    .await;
    for (t, r) in scrapes {
        match r {
            Ok(s) => cache.update(&t.name, &s, Utc::now()),
            Err(e) => warn!(node = %t.name, error = %e, "metrics scrape failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn summary(t: i64, pod_ns: u64, rate: Option<u64>) -> Summary {
        serde_json::from_value(serde_json::json!({
            "node": {"cpu": {"time": at(t), "usageCoreNanoSeconds": pod_ns * 2, "usageNanoCores": rate},
                     "memory": {"time": at(t), "workingSetBytes": 1000}},
            "pods": [{"podRef": {"name": "p", "namespace": "ns", "uid": "u"},
                      "containers": [{"name": "c",
                        "cpu": {"time": at(t), "usageCoreNanoSeconds": pod_ns, "usageNanoCores": rate},
                        "memory": {"time": at(t), "workingSetBytes": 2048}}]}]
        }))
        .unwrap()
    }

    #[test]
    fn rates_between_counters() {
        let c = |t, ns| Counter { time: at(t), ns };
        let cases = [
            (c(0, 0), c(15, 7_500_000_000), Some((500_000_000, 15))),
            (c(0, 100), c(0, 200), None),
            (c(0, 200), c(15, 100), None),
        ];
        for (a, b, want) in cases {
            assert_eq!(
                rate(a, b),
                want.map(|(r, s)| (r, Duration::from_secs(s))),
                "{a:?} {b:?}"
            );
        }
    }

    #[test]
    fn cache_rates_from_scrapes() {
        let cache = MetricsCache::default();
        // first scrape without the agent's rate: nothing to serve yet
        cache.update("n1", &summary(0, 1_000_000_000, None), at(0));
        assert!(cache.snapshot().pods.is_empty());
        assert!(cache.snapshot().nodes.is_empty());
        // 15 s later, 3 s more CPU: 200m
        cache.update("n1", &summary(15, 4_000_000_000, None), at(15));
        let s = cache.snapshot();
        let p = &s.pods[&("ns".to_string(), "p".to_string())];
        assert_eq!(p.window, Duration::from_secs(15));
        assert_eq!(p.usage[0].0, "c");
        assert_eq!(p.usage[0].1.cpu_nano_cores, 200_000_000);
        assert_eq!(p.usage[0].1.memory_bytes, 2048);
        assert_eq!(s.nodes["n1"].usage.cpu_nano_cores, 400_000_000);
        // a fresh cache takes the agent's own rate on the first scrape
        let fresh = MetricsCache::default();
        fresh.update("n1", &summary(0, 5, Some(123)), at(0));
        assert_eq!(
            fresh.snapshot().pods[&("ns".to_string(), "p".to_string())].usage[0]
                .1
                .cpu_nano_cores,
            123
        );
        fresh.retain_nodes(&[], &[]);
        assert!(fresh.snapshot().nodes.is_empty());
        assert!(fresh.snapshot().pods.is_empty());
    }
}

//! The agent's Prometheus endpoint (`/metrics` on its HTTPS port, behind the master's kubelet
//! client certificate) scraped from a real `skiff agent` while pods start, end and go, and
//! parsed as the text exposition format (prometheus-parse, so a malformed exposition fails):
//! the pod start latency histogram counts each start once with consistent buckets, the pods
//! per phase and running pods/containers follow the pods, the pod workers' sync and
//! terminate durations are recorded.
//!
//! Needs what `pods.rs` needs: root, `docker-registry`, `umoci`, `skopeo`, busybox-static and
//! the skiff binary built (`cargo build -p skiff`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use prometheus_parse::{Sample, Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use node_common::*;

/// GET `path` from the agent on `port` over TLS, with the kubelet client certificate of the
/// master whose data dir is `dir` ; returns status and body.
async fn get(dir: &Path, port: u16, path: &str) -> (u16, String) {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let creds = skiff_master::certs::load_or_create(dir, localhost, localhost).unwrap();
    let cfg = skiff_master::certs::kubelet_client_tls(&creds, dir).unwrap();
    let tcp = tokio::net::TcpStream::connect((localhost, port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(localhost.into());
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    // a peer that closes without close_notify still sent the whole response
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    (
        code,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    )
}

/// An HTTP/1.1 chunked body decoded.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// The samples of one scrape.
struct Metrics(Vec<Sample>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = Scrape::parse(lines).unwrap_or_else(|e| panic!("bad exposition: {e}\n{text}"));
        Metrics(scrape.samples)
    }

    fn find(&self, name: &str, label: Option<(&str, &str)>) -> Option<&Sample> {
        self.0
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
    }

    /// A gauge's value (panics when the series is missing).
    fn gauge(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        match self.find(name, label).map(|s| &s.value) {
            Some(Value::Gauge(v) | Value::Untyped(v)) => *v,
            other => panic!("{name} {label:?} is {other:?}"),
        }
    }

    /// A plain sample's value (`_count`, `_sum` when the parser leaves them apart).
    fn plain(&self, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
        match self.find(name, label)?.value {
            Value::Untyped(v) | Value::Counter(v) | Value::Gauge(v) => Some(v),
            _ => None,
        }
    }

    /// A histogram's (count, sum), checking that its buckets are cumulative and end at the
    /// count; `None` when the series is missing.
    fn histogram(&self, name: &str, label: Option<(&str, &str)>) -> Option<(f64, f64)> {
        let s = self.find(name, label)?;
        let Value::Histogram(buckets) = &s.value else {
            panic!("{name} is {:?}, not a histogram", s.value);
        };
        let counts: Vec<f64> = buckets.iter().map(|b| b.count).collect();
        assert!(
            counts.windows(2).all(|w| w[0] <= w[1]),
            "{name}: buckets not cumulative: {buckets:?}"
        );
        let inf = buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .unwrap_or_else(|| panic!("{name}: no +Inf bucket"));
        let count = self
            .plain(&format!("{name}_count"), label)
            .unwrap_or(inf.count);
        assert_eq!(inf.count, count, "{name}: +Inf bucket is not the count");
        let sum = self
            .plain(&format!("{name}_sum"), label)
            .unwrap_or(f64::NAN);
        Some((inf.count, sum))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_metrics_follow_the_pods() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-metrics");
    wait_node_ready(&c.client, &node).await;
    let port = kubelet_port(&c.client, "n-metrics").await;
    let dir = c.server.dir.path().to_path_buf();
    let scrape = || async {
        let (code, body) = get(&dir, port, "/metrics").await;
        assert_eq!(code, 200, "{body}");
        Metrics::parse(&body)
    };

    let before = scrape().await;
    assert_eq!(
        before
            .histogram("kubelet_pod_start_duration_seconds", None)
            .map(|h| h.0),
        Some(0.0)
    );
    for phase in ["Pending", "Running", "Succeeded", "Failed", "Unknown"] {
        assert_eq!(
            before.gauge("skiff_agent_pods", Some(("phase", phase))),
            0.0,
            "{phase}"
        );
    }

    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let created = std::time::Instant::now();
    pods.create(
        &PostParams::default(),
        &pod("up", "n-metrics", &c.image, "exec sleep 1000", json!({})),
    )
    .await
    .unwrap();
    wait_pod(&pods, "up", "up running", 60, &node, running_ready).await;
    let waited = created.elapsed().as_secs_f64();
    let m = api_common::wait_for("the start counted", Duration::from_secs(20), || async {
        let m = scrape().await;
        (m.gauge("skiff_agent_pods", Some(("phase", "Running"))) == 1.0).then_some(m)
    })
    .await;
    let (count, sum) = m
        .histogram("kubelet_pod_start_duration_seconds", None)
        .unwrap();
    assert_eq!(count, 1.0);
    assert!(
        sum > 0.0 && sum <= waited,
        "start latency {sum} s, the test waited {waited} s"
    );
    assert_eq!(m.gauge("kubelet_running_pods", None), 1.0);
    assert_eq!(
        m.gauge(
            "kubelet_running_containers",
            Some(("container_state", "running"))
        ),
        1.0
    );
    let (syncs, sync_sum) = m
        .histogram(
            "kubelet_pod_worker_duration_seconds",
            Some(("operation", "sync")),
        )
        .expect("sync durations");
    assert!(
        syncs >= 1.0 && sync_sum > 0.0,
        "{syncs} syncs, {sync_sum} s"
    );

    // a pod that ends: Succeeded, and its start counted too
    pods.create(
        &PostParams::default(),
        &pod(
            "done",
            "n-metrics",
            &c.image,
            "exit 0",
            json!({"restartPolicy": "Never"}),
        ),
    )
    .await
    .unwrap();
    let m = api_common::wait_for(
        "a Succeeded pod counted",
        Duration::from_secs(60),
        || async {
            let m = scrape().await;
            (m.gauge("skiff_agent_pods", Some(("phase", "Succeeded"))) == 1.0).then_some(m)
        },
    )
    .await;
    assert_eq!(m.gauge("skiff_agent_pods", Some(("phase", "Running"))), 1.0);
    let (count, _) = m
        .histogram("kubelet_pod_start_duration_seconds", None)
        .unwrap();
    assert!(
        count <= 2.0,
        "each pod's start counted at most once: {count}"
    );

    // both gone: the gauges drop back, the terminations were timed
    for name in ["up", "done"] {
        pods.delete(name, &DeleteParams::default().grace_period(1))
            .await
            .unwrap();
    }
    let m = api_common::wait_for("the pods forgotten", Duration::from_secs(60), || async {
        let m = scrape().await;
        let total: f64 = ["Pending", "Running", "Succeeded", "Failed", "Unknown"]
            .iter()
            .map(|p| m.gauge("skiff_agent_pods", Some(("phase", p))))
            .sum();
        (total == 0.0 && m.gauge("kubelet_running_pods", None) == 0.0).then_some(m)
    })
    .await;
    let (terminations, _) = m
        .histogram(
            "kubelet_pod_worker_duration_seconds",
            Some(("operation", "terminate")),
        )
        .expect("terminate durations");
    assert!(terminations >= 1.0);
    // the start histogram never goes down
    assert!(
        m.histogram("kubelet_pod_start_duration_seconds", None)
            .unwrap()
            .0
            >= 1.0
    );

    // without the master's client certificate: 401
    let curl = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://127.0.0.1:{port}/metrics"))
        .output()
        .unwrap();
    assert_eq!(text(&curl.stdout), "401");
}

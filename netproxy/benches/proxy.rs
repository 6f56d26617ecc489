//! Service proxy benchmark (not a test): `cargo bench -p skiff-netproxy --bench proxy`
//! (as root; needs `ip`, `nft`, `conntrack`, `wrk` and `busybox`).
//!
//! In a network namespace of its own (the host's ruleset is never touched):
//! 1. 10,000 ClusterIP Services with 2 ready endpoints each, programmed from nothing (one
//!    full sync), then one Service more, then one endpoint fewer: each sync's wall time,
//!    statements and bytes, and the process's RSS (the proxy's state is the `Proxier`'s
//!    applied tables, held here as in the agent).
//! 2. HTTP throughput (wrk in a client "pod" namespace, busybox httpd in a server "pod"
//!    namespace, each behind a veth of the node namespace, which routes between them)
//!    through one of those Services' ClusterIP versus straight to the server's IP, with all
//!    10,001 Services programmed: `ROUNDS` runs of each, alternating, and the medians
//!    (busybox httpd opens a connection per request, so single runs vary by 10–20% on a
//!    busy machine). The client is in the cluster CIDR, as a pod is, so its ClusterIP
//!    traffic is DNATed and not masqueraded. (Masqueraded traffic, such as the node's own,
//!    needs a free source port per connection for 120 s, conntrack's TIME_WAIT: at
//!    thousands of new connections a second to one endpoint the ports run out after some
//!    seconds and connections wait for SYN retransmits; kube-proxy masquerades the same.)
//!
//! `SERVICES=N` changes the count, `WRK_SECONDS=N` the length of each wrk run (5),
//! `ROUNDS=N` the runs of each kind (3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skiff_netproxy::proxy::nft::Nft;
use skiff_netproxy::proxy::rules::RulesConfig;
use skiff_netproxy::proxy::rules::service_key;
use skiff_netproxy::proxy::sync::{Proxier, SyncReport};

const POD_IP: &str = "10.250.0.2";
const NODE_SIDE_IP: &str = "10.250.0.1";
/// A second pod, the HTTP client, on another veth of the node.
const CLIENT_IP: &str = "10.250.1.2";
const CLIENT_NODE_SIDE_IP: &str = "10.250.1.1";
/// The bench's pod network: traffic from it to a ClusterIP is not masqueraded.
const CLUSTER_CIDR: &str = "10.250.0.0/16";
/// The pod serves the same files on two ports: 8080 for requests straight to it, this one
/// behind the Service. With one port, the server's TIME_WAIT sockets of one kind of run
/// would refuse the other kind's SYNs now and then (the client's TCP timestamps start from
/// a different offset for the ClusterIP than for the pod's IP, so they look older: PAWS),
/// and each kind of run would slow the next one down by SYN retransmits.
const SERVICE_PORT: u16 = 8081;

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The bench's namespaces and server, removed on drop (also when a step panics).
struct World {
    node: String,
    pod: String,
    client: String,
    httpd: Vec<Child>,
    www: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let pid = std::process::id();
        let w = World {
            node: format!("skiff-bproxy-node-{pid}"),
            pod: format!("skiff-bproxy-pod-{pid}"),
            client: format!("skiff-bproxy-client-{pid}"),
            httpd: Vec::new(),
            www: tempfile::tempdir().unwrap(),
        };
        sh(&["ip", "netns", "add", &w.node]);
        sh(&["ip", "netns", "add", &w.pod]);
        sh(&["ip", "netns", "add", &w.client]);
        let ip = |ns: &str, args: &[&str]| sh(&[&["ip", "-n", ns][..], args].concat());
        ip(&w.node, &["link", "set", "lo", "up"]);
        ip(&w.pod, &["link", "set", "lo", "up"]);
        ip(
            &w.node,
            &[
                "link", "add", "veth-pod", "type", "veth", "peer", "name", "eth0", "netns", &w.pod,
            ],
        );
        ip(
            &w.node,
            &[
                "addr",
                "add",
                &format!("{NODE_SIDE_IP}/24"),
                "dev",
                "veth-pod",
            ],
        );
        ip(&w.node, &["link", "set", "veth-pod", "up"]);
        // a node has a default route; locally made packets to a ClusterIP need one before
        // the nat output hook rewrites them (then they are routed again, to the pod)
        ip(
            &w.node,
            &["route", "add", "10.96.0.0/12", "dev", "veth-pod"],
        );
        ip(
            &w.pod,
            &["addr", "add", &format!("{POD_IP}/24"), "dev", "eth0"],
        );
        ip(&w.pod, &["link", "set", "eth0", "up"]);
        ip(&w.pod, &["route", "add", "default", "via", NODE_SIDE_IP]);
        // the client pod: its default route is the node, which forwards
        ip(&w.client, &["link", "set", "lo", "up"]);
        ip(
            &w.node,
            &[
                "link",
                "add",
                "veth-client",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &w.client,
            ],
        );
        ip(
            &w.node,
            &[
                "addr",
                "add",
                &format!("{CLIENT_NODE_SIDE_IP}/24"),
                "dev",
                "veth-client",
            ],
        );
        ip(&w.node, &["link", "set", "veth-client", "up"]);
        ip(
            &w.client,
            &["addr", "add", &format!("{CLIENT_IP}/24"), "dev", "eth0"],
        );
        ip(&w.client, &["link", "set", "eth0", "up"]);
        ip(
            &w.client,
            &["route", "add", "default", "via", CLIENT_NODE_SIDE_IP],
        );
        sh(&[
            "ip",
            "netns",
            "exec",
            &w.node,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        w
    }

    fn start_httpd(&mut self) {
        std::fs::write(self.www.path().join("index.html"), "hello from the pod\n").unwrap();
        for port in [8080, SERVICE_PORT] {
            let child = Command::new("ip")
                .args(["netns", "exec", &self.pod, "busybox", "httpd", "-f", "-p"])
                .arg(port.to_string())
                .arg("-h")
                .arg(self.www.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("busybox httpd (apt-get install busybox-static)");
            self.httpd.push(child);
            self.wait_for_http(&format!("http://{POD_IP}:{port}/index.html"));
        }
    }

    fn wait_for_http(&self, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ok = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.client,
                    "busybox",
                    "wget",
                    "-q",
                    "-O",
                    "-",
                    url,
                ])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("httpd in the pod namespace did not answer {url}");
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for mut c in self.httpd.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.node, &self.pod, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Service `i`: ClusterIP 10.96.0.0/12 + i + 1, port 80 → named target port `http`.
fn cluster_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i + 1)
}

fn service(i: u32) -> Service {
    let ip = cluster_ip(i).to_string();
    serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": format!("svc-{i}")},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]},
    }))
    .unwrap()
}

fn slice(i: u32, addresses: &[String]) -> EndpointSlice {
    slice_on(i, addresses, 8080)
}

fn slice_on(i: u32, addresses: &[String], port: u16) -> EndpointSlice {
    let eps: Vec<_> = addresses
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}, "nodeName": "bench"}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": format!("svc-{i}-abcde"),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": eps,
    }))
    .unwrap()
}

/// Two pod addresses of 10.244.0.0/16 for Service `i`.
fn endpoints(i: u32) -> Vec<String> {
    (0..2)
        .map(|k| {
            Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + 2 * i + k + 2).to_string()
        })
        .collect()
}

fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| format!("{:.1} MiB", kb / 1024.0))
            .unwrap_or_default()
    };
    format!("VmRSS {}, peak VmHWM {}", field("VmRSS:"), field("VmHWM:"))
}

async fn timed_sync(
    p: &mut Proxier,
    services: &[Service],
    slices: &[EndpointSlice],
    changed: Option<&[usize]>,
    what: &str,
) -> SyncReport {
    let svc: Vec<&Service> = services.iter().collect();
    let sl: Vec<&EndpointSlice> = slices.iter().collect();
    let start = Instant::now();
    // `None`: render and diff every Service (start-up); else the watch's dirty Services
    let report = match changed {
        None => p.sync(&svc, &sl).await,
        Some(idx) => {
            let keys = idx.iter().map(|&i| service_key(&services[i])).collect();
            p.sync_changed(&svc, &sl, &keys).await
        }
    }
    .expect("sync");
    let took = start.elapsed();
    println!(
        "{what}: {:.1} ms ({} statements, {} KiB{}); {}",
        took.as_secs_f64() * 1000.0,
        report.statements,
        report.bytes / 1024,
        if report.full { ", full" } else { "" },
        rss()
    );
    report
}

/// Requests per second that wrk reports for `url`, run in the namespace `ns`.
fn wrk(ns: &str, url: &str, seconds: u64) -> f64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "wrk", "-t2", "-c16"])
        .arg(format!("-d{seconds}s"))
        .arg(url)
        .output()
        .expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk {url} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("Socket errors") && !text.contains("Non-2xx"),
        "wrk saw errors: {text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output: {text}"))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo test --all-targets` runs bench targets once without `--bench`: nothing to do.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the proxy bench needs root (network namespaces, nftables)"
    );
    let n = env_u64("SERVICES", 10_000) as u32;
    let seconds = env_u64("WRK_SECONDS", 5);
    let mut world = World::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut proxier = Proxier::new(
        RulesConfig {
            node_name: "bench".into(),
            cluster_cidrs: vec![CLUSTER_CIDR.parse().unwrap()],
            service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
            ..RulesConfig::default()
        },
        Nft {
            netns: Some(world.node.clone()),
        },
    );
    println!("before: {}", rss());
    let mut services: Vec<Service> = (0..n).map(service).collect();
    let mut slices: Vec<EndpointSlice> = (0..n).map(|i| slice(i, &endpoints(i))).collect();
    rt.block_on(timed_sync(
        &mut proxier,
        &services,
        &slices,
        None,
        &format!("{n} Services x 2 endpoints from nothing"),
    ));
    // one more Service, whose endpoint is the real pod
    services.push(service(n));
    slices.push(slice_on(n, &[POD_IP.to_string()], SERVICE_PORT));
    rt.block_on(timed_sync(
        &mut proxier,
        &services,
        &slices,
        Some(&[n as usize]),
        "one Service more",
    ));
    slices[0] = slice(0, &endpoints(0)[..1]);
    rt.block_on(timed_sync(
        &mut proxier,
        &services,
        &slices,
        Some(&[0]),
        "one endpoint fewer",
    ));
    let again = rt.block_on(timed_sync(
        &mut proxier,
        &services,
        &slices,
        Some(&[]),
        "no change",
    ));
    assert_eq!(again.statements, 0, "a sync without changes sends nothing");
    let again = rt.block_on(timed_sync(
        &mut proxier,
        &services,
        &slices,
        None,
        "no change, every Service rendered and diffed",
    ));
    assert_eq!(
        again.statements, 0,
        "a full sync without changes sends nothing"
    );

    world.start_httpd();
    let rounds = env_u64("ROUNDS", 3).max(1);
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        direct.push(wrk(
            &world.client,
            &format!("http://{POD_IP}:8080/index.html"),
            seconds,
        ));
        via.push(wrk(
            &world.client,
            &format!("http://{}/index.html", cluster_ip(n)),
            seconds,
        ));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let show = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "HTTP straight to the pod: {} req/s; through the ClusterIP ({} Services programmed): {} req/s",
        show(&direct),
        n + 1,
        show(&via)
    );
    let (d, v) = (median(&mut direct), median(&mut via));
    println!(
        "HTTP medians: through the ClusterIP {v:.0} req/s, straight to the pod {d:.0} req/s; ratio {:.3}",
        v / d
    );
}

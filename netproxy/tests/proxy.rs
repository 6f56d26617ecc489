//! The Service proxy for real: nftables in a "node" network namespace, "pods" in their own
//! namespaces behind veths answering with their names, a "client" namespace outside. Every
//! namespace is the test's own (unique names, removed on drop); the host's ruleset is never
//! touched. Needs root, `ip`, `nft` and `conntrack`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};
use skiff_netproxy::proxy::nft::Nft;
use skiff_netproxy::proxy::rules::RulesConfig;
use skiff_netproxy::proxy::sync::Proxier;

const CLUSTER_IP: &str = "10.96.0.10";
const NODE_IP: &str = "192.168.77.1";
const CLIENT_IP: &str = "192.168.77.2";
const NODE_PORT: u16 = 30080;

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {args:?} ({e}); the proxy tests need iproute2, nftables and conntrack"
            )
        });
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the proxy tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN to create network namespaces)"
    );
}

/// Runs `f` on a thread inside the named network namespace.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// A veth from the node (`host`, address `host_ip`/24) to `eth0` in `ns` (`peer_ip`/24,
/// default route via the node).
fn veth(node: &str, host: &str, ns: &str, host_ip: &str, peer_ip: &str) {
    let ip = |args: &[&str]| sh(&[&["ip"][..], args].concat());
    ip(&[
        "-n", node, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ]);
    ip(&[
        "-n",
        node,
        "addr",
        "add",
        &format!("{host_ip}/24"),
        "dev",
        host,
    ]);
    ip(&["-n", node, "link", "set", host, "up"]);
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{peer_ip}/24"),
        "dev",
        "eth0",
    ]);
    ip(&["-n", ns, "link", "set", "eth0", "up"]);
    ip(&["-n", ns, "link", "set", "lo", "up"]);
    ip(&["-n", ns, "route", "add", "default", "via", host_ip]);
}

/// One "pod": its namespace, address and name.
struct Pod {
    ns: String,
    ip: String,
    name: String,
}

/// A node namespace with pods and a client; every namespace is deleted on drop.
struct World {
    node: String,
    client: String,
    pods: Vec<Pod>,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

impl World {
    fn new(pods: usize) -> World {
        require_root();
        let prefix = format!(
            "skp{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let mut w = World {
            node: format!("{prefix}-node"),
            client: format!("{prefix}-cli"),
            pods: Vec::new(),
        };
        sh(&["ip", "netns", "add", &w.node]);
        sh(&["ip", "netns", "add", &w.client]);
        let node = w.node.clone();
        sh(&["ip", "-n", &node, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &node,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        // the client, outside the cluster, on the node's "uplink"
        veth(&node, "uplink", &w.client, NODE_IP, CLIENT_IP);
        sh(&[
            "ip", "-n", &node, "route", "add", "default", "via", CLIENT_IP,
        ]);
        for i in 1..=pods {
            let ns = format!("{prefix}-pod{i}");
            sh(&["ip", "netns", "add", &ns]);
            let ip = format!("10.244.{i}.2");
            let name = format!("pod{i}");
            // owned by the world (and so removed) before anything else can fail
            w.pods.push(Pod {
                ns: ns.clone(),
                ip: ip.clone(),
                name: name.clone(),
            });
            veth(
                &node,
                &format!("vpod{i}"),
                &ns,
                &format!("10.244.{i}.1"),
                &ip,
            );
            serve(&ns, &name);
        }
        w
    }

    fn proxier(&self) -> Proxier {
        Proxier::new(
            RulesConfig {
                node_name: "node-a".into(),
                cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
                service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
                ..RulesConfig::default()
            },
            Nft {
                netns: Some(self.node.clone()),
            },
        )
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for ns in [&self.node, &self.client]
            .into_iter()
            .chain(self.pods.iter().map(|p| &p.ns))
        {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Answers on TCP 8080 and UDP 5353 with "NAME PEER-ADDRESS" (threads live as long as the
/// test process; their sockets belong to the pod's namespace).
fn serve(ns: &str, name: &str) {
    let (tcp, udp) = in_ns(ns, || {
        (
            TcpListener::bind("0.0.0.0:8080").unwrap(),
            UdpSocket::bind("0.0.0.0:5353").unwrap(),
        )
    });
    let n = name.to_string();
    std::thread::spawn(move || {
        for conn in tcp.incoming() {
            let Ok(mut c) = conn else { continue };
            let peer = c
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = c.write_all(format!("{n} {peer}").as_bytes());
        }
    });
    let n = name.to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(format!("{n} {}", from.ip()).as_bytes(), from);
        }
    });
}

/// One TCP request from namespace `ns`: the answer, or the connect error.
fn tcp_get(ns: &str, ip: &str, port: u16) -> std::io::Result<String> {
    let addr = SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port);
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

/// Names answering `n` TCP requests from `ns`, with how often each answered.
fn tcp_names(ns: &str, ip: &str, port: u16, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let answer = tcp_get(ns, ip, port)
            .unwrap_or_else(|e| panic!("request from {ns} to {ip}:{port} failed: {e}"));
        let name = answer.split_whitespace().next().unwrap_or("").to_string();
        *seen.entry(name).or_insert(0) += 1;
    }
    seen
}

fn names(pods: &[&Pod]) -> BTreeSet<String> {
    pods.iter().map(|p| p.name.clone()).collect()
}

fn keys(m: &BTreeMap<String, usize>) -> BTreeSet<String> {
    m.keys().cloned().collect()
}

fn service(spec: Value) -> Service {
    let mut s = json!({"clusterIP": CLUSTER_IP, "clusterIPs": [CLUSTER_IP],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                  {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}]});
    for (k, v) in spec.as_object().unwrap() {
        s.as_object_mut().unwrap().insert(k.clone(), v.clone());
    }
    serde_json::from_value(json!({"metadata": {"namespace": "default", "name": "web"}, "spec": s}))
        .unwrap()
}

fn nodeport(extra: Value) -> Service {
    let mut spec = json!({"type": "NodePort",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": NODE_PORT},
                  {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353, "nodePort": 30053}]});
    for (k, v) in extra.as_object().unwrap() {
        spec.as_object_mut().unwrap().insert(k.clone(), v.clone());
    }
    service(spec)
}

/// The EndpointSlice of `web` with these pods, each on the given node.
fn slice(pods: &[(&Pod, &str)]) -> EndpointSlice {
    let eps: Vec<Value> = pods
        .iter()
        .map(|(p, node)| json!({"addresses": [p.ip], "nodeName": node, "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web-1",
            "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                  {"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": eps}))
    .unwrap()
}

async fn sync(
    p: &mut Proxier,
    svc: &Service,
    slice: &EndpointSlice,
) -> skiff_netproxy::proxy::sync::SyncReport {
    p.sync(&[svc], &[slice]).await.unwrap()
}

#[tokio::test]
async fn clusterip_and_nodeport_balance_over_all_endpoints() {
    let w = World::new(3);
    let all: Vec<&Pod> = w.pods.iter().collect();
    let mut p = w.proxier();
    let svc = nodeport(json!({}));
    let eps = slice(&all.iter().map(|p| (*p, "node-a")).collect::<Vec<_>>());
    assert!(sync(&mut p, &svc, &eps).await.full);

    // from the node itself, from a pod (including to itself: hairpin), from outside
    let from_node = tcp_names(&w.node, CLUSTER_IP, 80, 40);
    assert_eq!(
        keys(&from_node),
        names(&all),
        "ClusterIP from the node: {from_node:?}"
    );
    let from_pod = tcp_names(&w.pods[0].ns, CLUSTER_IP, 80, 40);
    assert_eq!(
        keys(&from_pod),
        names(&all),
        "ClusterIP from a pod: {from_pod:?}"
    );
    // hairpin: pod1 reaching itself sees the node's address, not its own
    let mut hairpin = false;
    for _ in 0..60 {
        let a = tcp_get(&w.pods[0].ns, CLUSTER_IP, 80).unwrap();
        if a.starts_with("pod1 ") {
            assert_eq!(a, "pod1 10.244.1.1", "hairpin traffic is masqueraded");
            hairpin = true;
            break;
        }
    }
    assert!(hairpin, "pod1 never reached itself through its Service");
    let from_client = tcp_names(&w.client, NODE_IP, NODE_PORT, 40);
    assert_eq!(
        keys(&from_client),
        names(&all),
        "NodePort from outside: {from_client:?}"
    );
    let on_node = tcp_names(&w.node, NODE_IP, NODE_PORT, 40);
    assert_eq!(
        keys(&on_node),
        names(&all),
        "NodePort from the node: {on_node:?}"
    );
    // loopback is not a NodePort address
    let err = tcp_get(&w.node, "127.0.0.1", NODE_PORT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    // a port the ClusterIP does not serve is rejected
    let err = tcp_get(&w.node, CLUSTER_IP, 81).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);

    // a sync without changes sends nothing
    assert_eq!(sync(&mut p, &svc, &eps).await.statements, 0);
}

#[tokio::test]
async fn removed_endpoints_get_no_traffic_and_none_means_refused() {
    let w = World::new(3);
    let mut p = w.proxier();
    let svc = nodeport(json!({}));
    let all: Vec<(&Pod, &str)> = w.pods.iter().map(|p| (p, "node-a")).collect();
    let full = sync(&mut p, &svc, &slice(&all)).await;
    assert!(full.full);

    // one endpoint goes: a small transaction, and it gets no more traffic
    let two = slice(&all[..2]);
    let small = sync(&mut p, &svc, &two).await;
    assert!(!small.full);
    assert!(
        small.statements > 0 && small.statements <= 16 && small.bytes * 4 < full.bytes,
        "one endpoint removed: {small:?} (full: {full:?})"
    );
    let seen = tcp_names(&w.node, CLUSTER_IP, 80, 40);
    assert_eq!(keys(&seen), names(&[&w.pods[0], &w.pods[1]]), "{seen:?}");
    let seen = tcp_names(&w.client, NODE_IP, NODE_PORT, 30);
    assert_eq!(keys(&seen), names(&[&w.pods[0], &w.pods[1]]), "{seen:?}");

    // no endpoints: refused at once, from the node, a pod and outside
    sync(&mut p, &svc, &slice(&[])).await;
    for (ns, ip, port) in [
        (&w.node, CLUSTER_IP, 80),
        (&w.pods[0].ns, CLUSTER_IP, 80),
        (&w.client, NODE_IP, NODE_PORT),
    ] {
        let start = Instant::now();
        let err = tcp_get(ns, ip, port).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::ConnectionRefused,
            "{ip}:{port} from {ns}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "rejected, not timed out"
        );
    }

    // and back
    sync(&mut p, &svc, &slice(&all)).await;
    assert_eq!(tcp_names(&w.node, CLUSTER_IP, 80, 40).len(), 3);
}

#[tokio::test]
async fn session_affinity_client_ip_sticks() {
    let w = World::new(3);
    let mut p = w.proxier();
    let svc = nodeport(json!({"sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}));
    let all: Vec<(&Pod, &str)> = w.pods.iter().map(|p| (p, "node-a")).collect();
    sync(&mut p, &svc, &slice(&all)).await;
    for ns in [&w.node, &w.pods[1].ns] {
        let seen = tcp_names(ns, CLUSTER_IP, 80, 20);
        assert_eq!(seen.len(), 1, "one endpoint for one client: {seen:?}");
    }
    let seen = tcp_names(&w.client, NODE_IP, NODE_PORT, 20);
    assert_eq!(
        seen.len(),
        1,
        "one endpoint for one NodePort client: {seen:?}"
    );
}

/// A UDP socket connected to the ClusterIP's DNS port (a new source port: a new flow).
fn udp_connected() -> UdpSocket {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.connect((CLUSTER_IP, 53)).unwrap();
    s
}

/// [`udp_connected`] in namespace `ns`.
fn udp_client(ns: &str) -> UdpSocket {
    in_ns(ns, udp_connected)
}

/// One UDP exchange on `sock`: the name that answered.
fn udp_ask(sock: &UdpSocket) -> String {
    sock.send(b"?").unwrap();
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn udp_balances_and_flows_to_removed_endpoints_are_deleted() {
    let w = World::new(3);
    let mut p = w.proxier();
    let svc = service(json!({}));
    let all: Vec<(&Pod, &str)> = w.pods.iter().map(|p| (p, "node-a")).collect();
    sync(&mut p, &svc, &slice(&all)).await;

    // new source ports: new flows, spread over the endpoints
    let seen: BTreeSet<String> = in_ns(&w.node, || {
        (0..40).map(|_| udp_ask(&udp_connected())).collect()
    });
    assert_eq!(seen, names(&w.pods.iter().collect::<Vec<_>>()));

    // one socket is one flow: it sticks to its endpoint while the endpoint lasts
    let sock = udp_client(&w.node);
    let first = udp_ask(&sock);
    for _ in 0..5 {
        assert_eq!(udp_ask(&sock), first);
    }
    // its endpoint goes (the pod still answers on its own address): the flow is deleted,
    // so the next datagram is balanced again over the endpoints left
    let rest: Vec<(&Pod, &str)> = all
        .iter()
        .copied()
        .filter(|(p, _)| p.name != first)
        .collect();
    let report = sync(&mut p, &svc, &slice(&rest)).await;
    assert!(report.flow_filters > 0, "{report:?}");
    let next = udp_ask(&sock);
    assert_ne!(next, first, "the flow to the removed endpoint was deleted");
}

#[tokio::test]
async fn external_traffic_policy_local() {
    let w = World::new(2);
    let mut p = w.proxier();
    let svc = nodeport(json!({"externalTrafficPolicy": "Local"}));
    // pod1 on this node, pod2 on another
    let eps = slice(&[(&w.pods[0], "node-a"), (&w.pods[1], "node-b")]);
    sync(&mut p, &svc, &eps).await;
    for _ in 0..20 {
        let a = tcp_get(&w.client, NODE_IP, NODE_PORT).unwrap();
        assert_eq!(
            a,
            format!("pod1 {CLIENT_IP}"),
            "local endpoint only, client address kept"
        );
    }
    let seen = tcp_names(&w.node, CLUSTER_IP, 80, 40);
    assert_eq!(
        keys(&seen),
        names(&[&w.pods[0], &w.pods[1]]),
        "ClusterIP uses all: {seen:?}"
    );

    // no local endpoint: external NodePort traffic is dropped, ClusterIP still served
    sync(&mut p, &svc, &slice(&[(&w.pods[1], "node-b")])).await;
    let err = tcp_get(&w.client, NODE_IP, NODE_PORT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "dropped: {err}");
    assert_eq!(
        keys(&tcp_names(&w.node, CLUSTER_IP, 80, 5)),
        names(&[&w.pods[1]])
    );
}

#[tokio::test]
async fn internal_traffic_policy_local() {
    let w = World::new(2);
    let mut p = w.proxier();
    let svc = service(json!({"internalTrafficPolicy": "Local"}));
    sync(
        &mut p,
        &svc,
        &slice(&[(&w.pods[0], "node-a"), (&w.pods[1], "node-b")]),
    )
    .await;
    let seen = tcp_names(&w.node, CLUSTER_IP, 80, 20);
    assert_eq!(keys(&seen), names(&[&w.pods[0]]), "{seen:?}");
}

async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_follows_the_api_server() {
    use kube::api::{Patch, PatchParams, PostParams};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let w = World::new(3);
    let dir = tempfile::tempdir().unwrap();
    let master = skiff_master::api::serve(skiff_master::api::Config {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        service_cidr: "10.96.0.0/12".into(),
        node_port_range: (30000, 32767),
        store: std::sync::Arc::new(skiff_master::store::memory::MemoryStore::new()),
    })
    .await
    .unwrap();
    let kc = kube::config::Kubeconfig::read_from(&master.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    // the proxy reads with the node token, as `skiff proxy --server --token` does
    let proxy_client = skiff_netproxy::proxy::ApiAccess::Token {
        server: format!("https://{}", master.addr),
        token: master.node_token.clone(),
        ca_file: dir.path().join("ca.crt"),
    }
    .client()
    .await
    .unwrap();

    let mut settings = skiff_netproxy::proxy::Settings::new(RulesConfig {
        node_name: "node-a".into(),
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        ..RulesConfig::default()
    });
    settings.netns = Some(w.node.clone());
    settings.min_sync_interval = Duration::from_millis(200);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(skiff_netproxy::proxy::run(proxy_client, settings, async {
        let _ = stopped.await;
    }));

    // a Service without selector, its EndpointSlice written by hand
    let services: kube::Api<Service> = kube::Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))
    .unwrap();
    let svc = services.create(&PostParams::default(), &svc).await.unwrap();
    let cip = svc.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
    let slices: kube::Api<EndpointSlice> = kube::Api::namespaced(client.clone(), "default");
    let mut eps = slice(&[(&w.pods[0], "node-a"), (&w.pods[1], "node-a")]);
    eps.metadata.namespace = None;
    slices.create(&PostParams::default(), &eps).await.unwrap();

    let node = w.node.clone();
    let ip = cip.clone();
    wait_for("the ClusterIP to reach both endpoints", || {
        let seen: BTreeSet<String> = (0..20)
            .filter_map(|_| tcp_get(&node, &ip, 80).ok())
            .filter_map(|a| a.split_whitespace().next().map(String::from))
            .collect();
        (seen.len() == 2).then_some(())
    })
    .await;

    // the Service changes its port: the rules follow
    let patch = json!({"spec": {"ports": [{"name": "http", "port": 8000, "targetPort": 8080}]}});
    services
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let ip = cip.clone();
    wait_for("port 8000 served and port 80 refused", || {
        let new = tcp_get(&node, &ip, 8000).is_ok();
        let old = tcp_get(&node, &ip, 80)
            .err()
            .is_some_and(|e| e.kind() == ErrorKind::ConnectionRefused);
        (new && old).then_some(())
    })
    .await;

    // a third endpoint joins
    let mut eps = slice(&w.pods.iter().map(|p| (p, "node-a")).collect::<Vec<_>>());
    eps.metadata.namespace = None;
    slices
        .replace("web-1", &PostParams::default(), &{
            let cur = slices.get("web-1").await.unwrap();
            eps.metadata.resource_version = cur.metadata.resource_version;
            eps
        })
        .await
        .unwrap();
    let ip = cip.clone();
    wait_for("the third endpoint to get traffic", || {
        (0..20)
            .filter_map(|_| tcp_get(&node, &ip, 8000).ok())
            .any(|a| a.starts_with("pod3 "))
            .then_some(())
    })
    .await;

    // the Service goes: its address is refused... by nobody: the ClusterIP is unallocated
    services.delete("web", &Default::default()).await.unwrap();
    let ip = cip.clone();
    wait_for("the Service's rules to go", || {
        tcp_get(&node, &ip, 8000).is_err().then_some(())
    })
    .await;

    let _ = stop.send(());
    proxy.await.unwrap().unwrap();
}

fn list_tables(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "ruleset"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_restart_leaves_the_tables_identical_and_flows_alone() {
    let w = World::new(2);
    let svc = nodeport(json!({}));
    let eps = slice(&[(&w.pods[0], "node-a"), (&w.pods[1], "node-a")]);
    let mut first = w.proxier();
    sync(&mut first, &svc, &eps).await;
    // an established UDP flow through the Service, and what the kernel holds
    let udp = udp_client(&w.node);
    let pod = udp_ask(&udp);
    let before = list_tables(&w.node);

    // a new proxier (a restarted proxy) replaces the tables whole, with the same content
    let mut second = w.proxier();
    assert!(sync(&mut second, &svc, &eps).await.full);
    assert_eq!(list_tables(&w.node), before);
    // the UDP flow keeps its endpoint: its conntrack entry survived
    for _ in 0..5 {
        assert_eq!(udp_ask(&udp), pod);
    }
}

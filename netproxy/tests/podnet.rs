//! The pod network for real: two "node" network namespaces joined by a veth pair (their
//! LAN), each with its bridge network and pod namespaces, and an "external" namespace behind
//! node 1 that knows no pod routes. Every namespace is made by the test with a unique name
//! and removed on drop; nothing is done in the test runner's own namespace (`ip` and
//! `busybox` are used only to build the LAN and to look).
//!
//! Needs root, `ip` (iproute2), `nft` and `/bin/busybox` (busybox-static).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use skiff_netproxy::podnet::{BridgeConfig, BridgeNetwork, NodeRoute, host_veth_name};

fn sh(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace `ip netns add`ed under a unique name, deleted on drop.
struct Ns {
    name: String,
}

impl Ns {
    fn new(tag: &str) -> Ns {
        skiff_testsupport::require_root();
        let name = format!("skpn-{}-{tag}", std::process::id());
        let _ = sh(&["ip", "netns", "del", &name]);
        ok(&["ip", "netns", "add", &name]);
        Ns { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    fn exec(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        ok(&v)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// Pings `to` from `from` until one answer comes, or panics after 10 s.
fn ping(from: &Ns, to: Ipv4Addr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = from.exec(&["/bin/busybox", "ping", "-c1", "-W1", &to.to_string()]);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no answer from {to} in {}: {}{}",
            from.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether one ping from `from` to `to` is answered.
fn ping_once(from: &Ns, to: Ipv4Addr) -> bool {
    from.exec(&["/bin/busybox", "ping", "-c1", "-W1", &to.to_string()])
        .status
        .success()
}

/// Whether link `name` exists in `ns`.
fn has_link(ns: &Ns, name: &str) -> bool {
    sh(&["ip", "-n", &ns.name, "link", "show", name])
        .status
        .success()
}

/// Joins `a` and `b` by a veth pair `name` addressed `ip_a`/`ip_b` (both /24), both up.
fn wire(a: &Ns, b: &Ns, name: &str, ip_a: &str, ip_b: &str) {
    a.ip(&[
        "link", "add", name, "type", "veth", "peer", "name", name, "netns", &b.name,
    ]);
    for (ns, ip) in [(a, ip_a), (b, ip_b)] {
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", name]);
        ns.ip(&["link", "set", name, "up"]);
        ns.ip(&["link", "set", "lo", "up"]);
    }
}

fn network(node: &Ns, cidr: &str, state: &std::path::Path) -> BridgeNetwork {
    BridgeNetwork::new(BridgeConfig {
        bridge: "skiff0".into(),
        pod_cidr: cidr.parse().unwrap(),
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        mtu: 1400,
        state_dir: state.to_path_buf(),
        node_netns: Some(node.path()),
    })
    .unwrap()
}

fn route(name: &str, cidr: &str, ip: &str) -> NodeRoute {
    NodeRoute {
        name: name.into(),
        pod_cidr: cidr.parse().unwrap(),
        node_ip: ip.parse().unwrap(),
    }
}

#[test]
fn pods_talk_on_one_node_and_across_nodes() {
    let n1 = Ns::new("n1");
    let n2 = Ns::new("n2");
    let ext = Ns::new("ext");
    wire(&n1, &n2, "lan0", "192.168.250.1", "192.168.250.2");
    wire(&n1, &ext, "ext0", "192.168.251.1", "192.168.251.2");
    let s1 = tempfile::tempdir().unwrap();
    let s2 = tempfile::tempdir().unwrap();
    let net1 = network(&n1, "10.244.1.0/24", s1.path());
    let net2 = network(&n2, "10.244.2.0/24", s2.path());
    net1.setup().unwrap();
    net1.setup().unwrap(); // idempotent
    net2.setup().unwrap();

    // the node side: bridge with the gateway, forwarding, masquerade table
    let br = n1.ip(&["-4", "addr", "show", "dev", "skiff0"]);
    assert!(br.contains("inet 10.244.1.1/24"), "{br}");
    assert!(br.contains("state UP") || br.contains(",UP"), "{br}");
    let fwd = n1.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1");
    let table = n1.exec(&["nft", "list", "table", "ip", "skiff_podnet"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16"),
        "{table}"
    );

    let (p1a, p1b, p2a) = (Ns::new("p1a"), Ns::new("p1b"), Ns::new("p2a"));
    let ip1a = net1.attach(&p1a.path(), "uid-1a").unwrap();
    let ip1b = net1.attach(&p1b.path(), "uid-1b").unwrap();
    let ip2a = net2.attach(&p2a.path(), "uid-2a").unwrap();
    assert_eq!(ip1a, "10.244.1.2".parse::<Ipv4Addr>().unwrap());
    assert_eq!(ip1b, "10.244.1.3".parse::<Ipv4Addr>().unwrap());
    assert_eq!(ip2a, "10.244.2.2".parse::<Ipv4Addr>().unwrap());

    // the pod side: eth0 with the address and MTU, loopback up, default route via the bridge
    let eth0 = p1a.ip(&["addr", "show", "dev", "eth0"]);
    assert!(eth0.contains("inet 10.244.1.2/24"), "{eth0}");
    assert!(eth0.contains("mtu 1400"), "{eth0}");
    assert!(p1a.ip(&["link", "show", "lo"]).contains("UP"));
    let r = p1a.ip(&["route", "show", "default"]);
    assert!(r.contains("default via 10.244.1.1 dev eth0"), "{r}");
    // the host end: named from the uid, on the bridge, hairpin on
    let veth = host_veth_name("uid-1a");
    let link = n1.ip(&["-d", "link", "show", "dev", &veth]);
    assert!(link.contains("master skiff0"), "{link}");
    assert!(link.contains("hairpin on"), "{link}");
    assert!(link.contains("mtu 1400"), "{link}");

    // one node: pod to pod over the bridge, pod to its gateway
    ping(&p1a, ip1b);
    ping(&p1b, "10.244.1.1".parse().unwrap());

    // across nodes: nothing before the routes, answers after
    assert!(!ping_once(&p1a, ip2a));
    let nodes = [
        route("n1", "10.244.1.0/24", "192.168.250.1"),
        route("n2", "10.244.2.0/24", "192.168.250.2"),
    ];
    let s = net1.sync_routes(&nodes).unwrap();
    assert_eq!(s.set.len(), 1, "{s:?}");
    assert!(s.failed.is_empty(), "{s:?}");
    net2.sync_routes(&nodes).unwrap();
    let r1 = n1.ip(&["route", "show", "proto", "152"]);
    assert!(
        r1.contains("10.244.2.0/24 via 192.168.250.2 dev lan0"),
        "{r1}"
    );
    ping(&p1a, ip2a);
    ping(&p2a, ip1b);
    // a second sync with the same nodes changes nothing
    assert_eq!(
        net1.sync_routes(&nodes).unwrap(),
        skiff_netproxy::podnet::RouteSync::default()
    );

    // leaving the cluster CIDR: masqueraded to the node's address, so a host that has no
    // route to the pods still answers
    ping(&p1a, "192.168.251.2".parse().unwrap());

    // a node gone: its route goes, the other routes stay
    let s = net1.sync_routes(&nodes[..1]).unwrap();
    assert_eq!(s.deleted.len(), 1, "{s:?}");
    assert!(
        !n1.ip(&["route", "show", "proto", "152"])
            .contains("10.244.2.0")
    );
    assert!(!ping_once(&p1a, ip2a));
}

#[test]
fn addresses_persist_release_and_stale_records_go() {
    let n = Ns::new("pn");
    n.ip(&["link", "set", "lo", "up"]);
    let state = tempfile::tempdir().unwrap();
    let (pa, pb, pc) = (Ns::new("pa"), Ns::new("pb"), Ns::new("pc"));
    let ip_a;
    {
        let net = network(&n, "10.244.5.0/24", state.path());
        net.setup().unwrap();
        ip_a = net.attach(&pa.path(), "uid-a").unwrap();
        net.attach(&pb.path(), "uid-b").unwrap();
    }
    // a new network object (agent restart) over the same records
    let net = network(&n, "10.244.5.0/24", state.path());
    net.setup().unwrap();
    // re-attaching the same pod: same address, the old veth replaced, still reachable
    assert_eq!(net.attach(&pa.path(), "uid-a").unwrap(), ip_a);
    let links = n.ip(&["-o", "link", "show", "master", "skiff0"]);
    assert_eq!(
        links.matches(&host_veth_name("uid-a")).count(),
        1,
        "{links}"
    );
    ping(&pb, ip_a);
    // a new pod does not get a taken address
    let ip_c = net.attach(&pc.path(), "uid-c").unwrap();
    assert_eq!(ip_c, "10.244.5.4".parse::<Ipv4Addr>().unwrap());

    // detach: veth gone on both sides, address released
    net.detach("uid-b").unwrap();
    assert!(!has_link(&n, &host_veth_name("uid-b")));
    assert!(!has_link(&pb, "eth0"));
    let held: Vec<String> = net.ipam().records().unwrap().into_values().collect();
    assert_eq!(held, vec!["uid-a".to_string(), "uid-c".to_string()]);
    net.detach("uid-b").unwrap(); // twice is fine

    // on start, pods that no longer exist lose their addresses and veths
    let live: HashSet<String> = ["uid-a".to_string()].into();
    assert_eq!(net.retain(&live).unwrap(), vec![ip_c]);
    assert!(!has_link(&n, &host_veth_name("uid-c")));
    let held: Vec<String> = net.ipam().records().unwrap().into_values().collect();
    assert_eq!(held, vec!["uid-a".to_string()]);
    ping(&pa, "10.244.5.1".parse().unwrap());

    // teardown removes the node side
    net.teardown().unwrap();
    assert!(!has_link(&n, "skiff0"));
    assert!(
        !n.exec(&["nft", "list", "table", "ip", "skiff_podnet"])
            .status
            .success()
    );
}

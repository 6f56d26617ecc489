//! The pod network for real: two "node" network namespaces joined by a veth pair (their
//! LAN), each with its bridge network and pod namespaces, and an "external" namespace behind
//! node 1 that knows no pod routes. Every namespace is made by the test with a unique name
//! and removed on drop; nothing is done in the test runner's own namespace (`ip` and
//! `busybox` are used only to build the LAN and to look).
//!
//! Needs root, `ip` (iproute2), `nft`, `conntrack` and `/bin/busybox` (busybox-static).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use skiff_netproxy::podnet::vxlan::{self, VtepPeer};
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
fn ping(from: &Ns, to: impl Into<IpAddr>) {
    let to: IpAddr = to.into();
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
fn ping_once(from: &Ns, to: impl Into<IpAddr>) -> bool {
    let to: IpAddr = to.into();
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
    BridgeNetwork::new(config(node, cidr, state)).unwrap()
}

fn config(node: &Ns, cidr: &str, state: &std::path::Path) -> BridgeConfig {
    BridgeConfig {
        bridge: "skiff0".into(),
        pod_cidrs: cidr.split(',').map(|c| c.parse().unwrap()).collect(),
        cluster_cidrs: vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:10:244::/56".parse().unwrap(),
        ],
        mtu: 1400,
        state_dir: state.to_path_buf(),
        node_netns: Some(node.path()),
        vxlan: None,
    }
}

/// The IPv4 address of a pod attached to an IPv4-only network.
fn attach4(net: &BridgeNetwork, pod: &Ns, uid: &str) -> Ipv4Addr {
    match net.attach(&pod.path(), uid).unwrap().as_slice() {
        [IpAddr::V4(ip)] => *ip,
        other => panic!("{uid}: {other:?}"),
    }
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
    let ip1a = attach4(&net1, &p1a, "uid-1a");
    let ip1b = attach4(&net1, &p1b, "uid-1b");
    let ip2a = attach4(&net2, &p2a, "uid-2a");
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
    ping(&p1b, "10.244.1.1".parse::<IpAddr>().unwrap());

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
    ping(&p1a, "192.168.251.2".parse::<IpAddr>().unwrap());

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
        ip_a = attach4(&net, &pa, "uid-a");
        attach4(&net, &pb, "uid-b");
    }
    // a new network object (agent restart) over the same records
    let net = network(&n, "10.244.5.0/24", state.path());
    net.setup().unwrap();
    // re-attaching the same pod: same address, the old veth replaced, still reachable
    assert_eq!(attach4(&net, &pa, "uid-a"), ip_a);
    let links = n.ip(&["-o", "link", "show", "master", "skiff0"]);
    assert_eq!(
        links.matches(&host_veth_name("uid-a")).count(),
        1,
        "{links}"
    );
    ping(&pb, ip_a);
    // a new pod does not get a taken address
    let ip_c = attach4(&net, &pc, "uid-c");
    assert_eq!(ip_c, "10.244.5.4".parse::<Ipv4Addr>().unwrap());

    // detach: veth gone on both sides, address released
    net.detach("uid-b").unwrap();
    assert!(!has_link(&n, &host_veth_name("uid-b")));
    assert!(!has_link(&pb, "eth0"));
    let held: Vec<String> = net.records().unwrap().into_values().collect();
    assert_eq!(held, vec!["uid-a".to_string(), "uid-c".to_string()]);
    net.detach("uid-b").unwrap(); // twice is fine

    // on start, pods that no longer exist lose their addresses and veths
    let live: HashSet<String> = ["uid-a".to_string()].into();
    assert_eq!(net.retain(&live).unwrap(), vec![IpAddr::V4(ip_c)]);
    assert!(!has_link(&n, &host_veth_name("uid-c")));
    let held: Vec<String> = net.records().unwrap().into_values().collect();
    assert_eq!(held, vec!["uid-a".to_string()]);
    ping(&pa, "10.244.5.1".parse::<IpAddr>().unwrap());

    // teardown removes the node side
    net.teardown().unwrap();
    assert!(!has_link(&n, "skiff0"));
    assert!(
        !n.exec(&["nft", "list", "table", "ip", "skiff_podnet"])
            .status
            .success()
    );
}

/// The MAC address of link `dev` in `ns`.
fn mac(ns: &Ns, dev: &str) -> String {
    let out = ns.exec(&["cat", &format!("/sys/class/net/{dev}/address")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn pods_keep_reaching_their_gateway_as_other_pods_go() {
    let n = Ns::new("gw");
    n.ip(&["link", "set", "lo", "up"]);
    let state = tempfile::tempdir().unwrap();
    let net = network(&n, "10.244.6.0/24", state.path());
    net.setup().unwrap();
    let gateway: IpAddr = "10.244.6.1".parse().unwrap();
    let pods: Vec<(String, Ns)> = (0..4)
        .map(|i| {
            let ns = Ns::new(&format!("gw{i}"));
            let uid = format!("uid-gw{i}");
            attach4(&net, &ns, &uid);
            (uid, ns)
        })
        .collect();
    // every pod has the gateway's MAC in its ARP cache
    for (_, p) in &pods {
        ping(p, gateway);
    }
    let bridge_mac = mac(&n, "skiff0");
    // pods go in the order of their host ends' MACs, the lowest first: a bridge that takes
    // the lowest port's MAC would change its own each time
    let mut order: Vec<&(String, Ns)> = pods.iter().collect();
    order.sort_by_key(|(uid, _)| mac(&n, &host_veth_name(uid)));
    for (i, (uid, _)) in order.iter().enumerate().take(pods.len() - 1) {
        net.detach(uid).unwrap();
        assert_eq!(mac(&n, "skiff0"), bridge_mac, "after {uid} went");
        for (_, p) in &order[i + 1..] {
            // at once, with the cached entry: no ARP from the node has refreshed it
            assert!(
                ping_once(p, gateway),
                "{} lost its gateway after {uid} went",
                p.name
            );
        }
    }
    // an agent restart keeps the address
    network(&n, "10.244.6.0/24", state.path()).setup().unwrap();
    assert_eq!(mac(&n, "skiff0"), bridge_mac);
}

/// Writes `value` to the sysctl file `path` inside `ns`.
fn sysctl(ns: &Ns, path: &str, value: &str) {
    let out = ns.exec(&["sh", "-c", &format!("echo {value} > {path}")]);
    assert!(out.status.success(), "{path}: {out:?}");
}

#[test]
fn vxlan_joins_nodes_on_different_segments() {
    // n1 (192.168.250.1) -- router -- n2 (192.168.251.2): no common L2 segment
    let n1 = Ns::new("v1");
    let n2 = Ns::new("v2");
    let rt = Ns::new("vrt");
    wire(&n1, &rt, "lan0", "192.168.250.1", "192.168.250.254");
    wire(&rt, &n2, "lan1", "192.168.251.254", "192.168.251.2");
    sysctl(&rt, "/proc/sys/net/ipv4/ip_forward", "1");
    n1.ip(&["route", "add", "default", "via", "192.168.250.254"]);
    n2.ip(&["route", "add", "default", "via", "192.168.251.254"]);
    let (ip1, ip2): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (
        "192.168.250.1".parse().unwrap(),
        "192.168.251.2".parse().unwrap(),
    );
    let s1 = tempfile::tempdir().unwrap();
    let s2 = tempfile::tempdir().unwrap();
    let vx = |ns: &Ns, cidr: &str, state: &std::path::Path, ip| {
        BridgeNetwork::new(BridgeConfig {
            mtu: 1500,
            vxlan: Some(ip),
            ..config(ns, cidr, state)
        })
        .unwrap()
    };
    // dual-stack pods: IPv6 rides the same IPv4 tunnel
    let net1 = vx(&n1, "10.244.1.0/24,fd00:10:244:1::/64", s1.path(), ip1);
    let net2 = vx(&n2, "10.244.2.0/24,fd00:10:244:2::/64", s2.path(), ip2);
    net1.setup().unwrap();
    net1.setup().unwrap(); // idempotent: the device is kept
    net2.setup().unwrap();

    // the device: VNI 1, port 8472, bound to the node's address, learning off, MTU − 50,
    // the overlay address, the MAC derived from the node's address
    let dev = n1.ip(&["-d", "addr", "show", "dev", vxlan::DEVICE]);
    for want in [
        "vxlan id 1 ",
        "local 192.168.250.1 ",
        "dev lan0 ",
        "dstport 8472 ",
        "nolearning ",
        "mtu 1450 ",
        "inet 10.244.1.0/32 ",
        "link/ether 0e:5f:c0:a8:fa:01 ",
    ] {
        assert!(dev.contains(want), "{want:?} not in {dev}");
    }
    assert_eq!(net1.mtu(), 1450);
    // pods and the bridge get the overlay's MTU
    let (p1, p2) = (Ns::new("vp1"), Ns::new("vp2"));
    let a1 = net1.attach(&p1.path(), "uid-v1").unwrap();
    let a2 = net2.attach(&p2.path(), "uid-v2").unwrap();
    let (pod1, pod2, pod1_6, pod2_6) = (a1[0], a2[0], a1[1], a2[1]);
    assert!(pod2_6.is_ipv6(), "{a2:?}");
    assert!(p1.ip(&["link", "show", "eth0"]).contains("mtu 1450"));
    assert!(n1.ip(&["link", "show", "skiff0"]).contains("mtu 1450"));

    // host-gw cannot route across the router: the kernel refuses the gateway
    let hostgw = [
        route("v1", "10.244.1.0/24", "192.168.250.1"),
        route("v2", "10.244.2.0/24", "192.168.251.2"),
    ];
    let s = net1.sync_routes(&hostgw).unwrap();
    assert_eq!(s.failed.len(), 1, "{s:?}");
    assert!(!ping_once(&p1, pod2));
    assert!(!ping_once(&p1, pod2_6));

    // the overlay
    let peers = [
        VtepPeer {
            name: "v1".into(),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            pod_cidr6: Some("fd00:10:244:1::/64".parse().unwrap()),
            node_ip: ip1,
            mac: vxlan::vtep_mac(ip1),
        },
        VtepPeer {
            name: "v2".into(),
            pod_cidr: "10.244.2.0/24".parse().unwrap(),
            pod_cidr6: Some("fd00:10:244:2::/64".parse().unwrap()),
            node_ip: ip2,
            mac: vxlan::vtep_mac(ip2),
        },
    ];
    let (r, e) = net1.sync_vxlan(&peers).unwrap();
    assert!(r.failed.is_empty(), "{r:?}");
    assert_eq!(r.set.len(), 2, "{r:?}");
    assert_eq!(e.neighbours_set.len(), 2, "{e:?}");
    assert_eq!(e.fdb_set.len(), 1, "{e:?}");
    net2.sync_vxlan(&peers).unwrap();
    let routes = n1.ip(&["route", "show", "proto", "152"]);
    assert!(
        routes.contains("10.244.2.0/24 via 10.244.2.0 dev skiff.1 onlink"),
        "{routes}"
    );
    let routes6 = n1.ip(&["-6", "route", "show", "proto", "152"]);
    assert!(
        routes6.contains("fd00:10:244:2::/64 via fe80::c5f:c0ff:fea8:fb02 dev skiff.1"),
        "{routes6}"
    );
    let neigh = n1.ip(&["neigh", "show", "dev", vxlan::DEVICE]);
    assert!(
        neigh.contains("10.244.2.0 lladdr 0e:5f:c0:a8:fb:02 PERMANENT"),
        "{neigh}"
    );
    let neigh6 = n1.ip(&["-6", "neigh", "show", "dev", vxlan::DEVICE]);
    assert!(
        neigh6.contains("fe80::c5f:c0ff:fea8:fb02 lladdr 0e:5f:c0:a8:fb:02 PERMANENT"),
        "{neigh6}"
    );
    let fdb = ok(&[
        "bridge",
        "-n",
        &n1.name,
        "fdb",
        "show",
        "dev",
        vxlan::DEVICE,
    ]);
    assert!(
        fdb.contains("0e:5f:c0:a8:fb:02 dst 192.168.251.2 self permanent"),
        "{fdb}"
    );
    ping(&p1, pod2);
    ping(&p2, pod1);
    ping(&p1, pod2_6);
    ping(&p2, pod1_6);
    // full-size packets (the pods' MTU, 1450, minus IP and ICMP headers) cross the overlay
    let big = p1.exec(&[
        "/bin/busybox",
        "ping",
        "-c1",
        "-W2",
        "-s",
        "1422",
        &pod2.to_string(),
    ]);
    assert!(big.status.success(), "{big:?}");
    // a second sync changes nothing
    let (r, e) = net1.sync_vxlan(&peers).unwrap();
    assert_eq!(r, skiff_netproxy::podnet::RouteSync::default());
    assert_eq!(e, vxlan::EntrySync::default());

    // a Node gone: its route, neighbour and FDB entry go
    let (r, e) = net1.sync_vxlan(&peers[..1]).unwrap();
    assert_eq!(r.deleted.len(), 2, "{r:?}");
    assert_eq!(e.neighbours_deleted.len(), 2, "{e:?}");
    assert_eq!(e.fdb_deleted.len(), 1, "{e:?}");
    assert!(
        !n1.ip(&["route", "show", "proto", "152"])
            .contains("10.244.2.0")
    );
    assert!(
        !n1.ip(&["neigh", "show", "dev", vxlan::DEVICE])
            .contains("10.244.2.0")
    );
    let fdb = ok(&[
        "bridge",
        "-n",
        &n1.name,
        "fdb",
        "show",
        "dev",
        vxlan::DEVICE,
    ]);
    assert!(!fdb.contains("192.168.251.2"), "{fdb}");
    assert!(!ping_once(&p1, pod2));
    assert!(!ping_once(&p1, pod2_6));

    net1.teardown().unwrap();
    assert!(!has_link(&n1, vxlan::DEVICE));
}

/// Runs `f` on a thread inside `ns`.
fn in_ns<T: Send + 'static>(ns: &Ns, f: impl FnOnce() -> T + Send + 'static) -> T {
    skiff_netproxy::podnet::Netns::open(&ns.path())
        .unwrap()
        .run(move || Ok(f()))
        .unwrap()
}

/// One TCP exchange from `ns` to `to`: what the server said, or the error.
fn tcp_from(ns: &Ns, to: &str) -> std::io::Result<String> {
    use std::io::Read;
    let addr: std::net::SocketAddr = to.parse().unwrap();
    in_ns(ns, move || {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

/// The nft listing of the hostPort table in `ns`.
fn hostport_table(ns: &Ns) -> String {
    let out = ns.exec(&["nft", "list", "table", "ip", "skiff_hostport"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn host_ports_reach_pods_from_node_addresses() {
    use skiff_netproxy::podnet::PortMapping;
    use skiff_netproxy::podnet::hostport::Protocol;
    use std::io::Write;

    let n = Ns::new("hn");
    let client = Ns::new("hc");
    wire(&n, &client, "lan0", "192.168.252.1", "192.168.252.2");
    let state = tempfile::tempdir().unwrap();
    let net = network(&n, "10.244.6.0/24", state.path());
    net.setup().unwrap();
    let pod = Ns::new("hp");
    let pod_ip = attach4(&net, &pod, "uid-h");
    // the pod answers TCP on 80 and UDP on 53 with the peer's address
    let (tcp, udp) = in_ns(&pod, || {
        (
            std::net::TcpListener::bind("0.0.0.0:80").unwrap(),
            std::net::UdpSocket::bind("0.0.0.0:53").unwrap(),
        )
    });
    std::thread::spawn(move || {
        for c in tcp.incoming() {
            let Ok(mut c) = c else { continue };
            let peer = c
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = c.write_all(format!("tcp {peer}").as_bytes());
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(format!("udp {}", from.ip()).as_bytes(), from);
        }
    });
    let ports = [
        PortMapping {
            protocol: Protocol::Tcp,
            host_ip: None,
            host_port: 8080,
            container_port: 80,
        },
        PortMapping {
            protocol: Protocol::Udp,
            host_ip: Some("192.168.252.1".parse().unwrap()),
            host_port: 5353,
            container_port: 53,
        },
    ];
    net.set_host_ports("uid-h", &ports).unwrap();
    let table = hostport_table(&n);
    assert!(
        table.contains(&format!("tcp dport 8080 dnat to {pod_ip}:80")),
        "{table}"
    );

    // from outside, on the node's address: the pod answers and sees the client's address
    assert_eq!(
        tcp_from(&client, "192.168.252.1:8080").unwrap(),
        "tcp 192.168.252.2"
    );
    // UDP on its hostIP
    let answer = in_ns(&client, || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(b"q", "192.168.252.1:5353").unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    assert_eq!(answer, "udp 192.168.252.2");
    // from the node itself, on its address; not on loopback (no route_localnet)
    assert!(
        tcp_from(&n, "192.168.252.1:8080")
            .unwrap()
            .starts_with("tcp ")
    );
    assert!(tcp_from(&n, "127.0.0.1:8080").is_err());
    // the pod through its own hostPort: masqueraded, so the answer comes back
    assert_eq!(
        tcp_from(&pod, "192.168.252.1:8080").unwrap(),
        format!("tcp {}", net.gateways()[0])
    );

    // an agent restart: the table is rebuilt from the records, identical
    let before = hostport_table(&n);
    assert!(
        n.exec(&["nft", "delete", "table", "ip", "skiff_hostport"])
            .status
            .success()
    );
    let again = network(&n, "10.244.6.0/24", state.path());
    again.setup().unwrap();
    assert_eq!(hostport_table(&n), before);

    // the pod deleted: its mappings go
    again.detach("uid-h").unwrap();
    assert!(
        !hostport_table(&n).contains("dnat"),
        "{}",
        hostport_table(&n)
    );
    assert!(tcp_from(&client, "192.168.252.1:8080").is_err());
}

/// Adds `ip` (with its prefix) to link `dev` in `ns` without duplicate address detection.
fn addr6(ns: &Ns, dev: &str, ip: &str) {
    ns.ip(&["addr", "add", ip, "dev", dev, "nodad"]);
}

/// Answers every TCP connection on port 8080 (both families) with "NAME PEER-ADDRESS".
fn serve(ns: &Ns, name: &str) {
    use std::io::Write;
    let listener = in_ns(ns, || std::net::TcpListener::bind("[::]:8080").unwrap());
    let name = name.to_string();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            let Ok(mut c) = c else { continue };
            let peer = c
                .peer_addr()
                .map(|a| a.ip().to_canonical().to_string())
                .unwrap_or_default();
            let _ = c.write_all(format!("{name} {peer}").as_bytes());
        }
    });
}

/// Whether an `ip addr` listing shows a global IPv6 address still tentative (in duplicate
/// address detection, not usable yet).
fn global_tentative(listing: &str) -> bool {
    listing
        .lines()
        .any(|l| l.contains("scope global") && l.contains("tentative"))
}

/// `ip:port` with IPv6 addresses in brackets.
fn sock(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

#[tokio::test]
async fn dual_stack_pods_routes_masquerade_and_service() {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use skiff_netproxy::proxy::nft::Nft;
    use skiff_netproxy::proxy::rules::RulesConfig;
    use skiff_netproxy::proxy::sync::Proxier;

    let n1 = Ns::new("d1");
    let n2 = Ns::new("d2");
    let ext = Ns::new("dext");
    wire(&n1, &n2, "lan0", "192.168.253.1", "192.168.253.2");
    addr6(&n1, "lan0", "fd00:253::1/64");
    addr6(&n2, "lan0", "fd00:253::2/64");
    wire(&n1, &ext, "ext0", "192.168.254.1", "192.168.254.2");
    addr6(&n1, "ext0", "fd00:254::1/64");
    addr6(&ext, "ext0", "fd00:254::2/64");
    // node 1's uplink: a node-originated packet to a ClusterIP needs a route before the
    // proxy's DNAT (as on a real node, the default route)
    n1.ip(&["-6", "route", "add", "default", "via", "fd00:254::2"]);
    let s1 = tempfile::tempdir().unwrap();
    let s2 = tempfile::tempdir().unwrap();
    // node 1 lists IPv4 first, node 2 IPv6 first: pods' addresses follow that order
    let net1 = network(&n1, "10.244.1.0/24,fd00:10:244:1::/64", s1.path());
    let net2 = network(&n2, "fd00:10:244:2::/64,10.244.2.0/24", s2.path());
    net1.setup().unwrap();
    net1.setup().unwrap(); // idempotent
    net2.setup().unwrap();

    // the node side: both gateways on the bridge (usable at once), both forwardings, both
    // masquerade tables
    let br = n1.ip(&["addr", "show", "dev", "skiff0"]);
    assert!(br.contains("inet 10.244.1.1/24"), "{br}");
    assert!(br.contains("inet6 fd00:10:244:1::1/64"), "{br}");
    assert!(!global_tentative(&br), "{br}");
    for (f, want) in [
        ("/proc/sys/net/ipv4/ip_forward", "1"),
        ("/proc/sys/net/ipv6/conf/all/forwarding", "1"),
    ] {
        let out = n1.exec(&["cat", f]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want, "{f}");
    }
    let table = n1.exec(&["nft", "list", "table", "ip6", "skiff_podnet"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("ip6 saddr fd00:10:244::/56 ip6 daddr != fd00:10:244::/56"),
        "{table}"
    );

    let (p1a, p1b, p2a) = (Ns::new("dp1a"), Ns::new("dp1b"), Ns::new("dp2a"));
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let a1 = net1.attach(&p1a.path(), "uid-d1a").unwrap();
    let b1 = net1.attach(&p1b.path(), "uid-d1b").unwrap();
    let a2 = net2.attach(&p2a.path(), "uid-d2a").unwrap();
    assert_eq!(a1, vec![ip("10.244.1.2"), ip("fd00:10:244:1::2")]);
    assert_eq!(b1, vec![ip("10.244.1.3"), ip("fd00:10:244:1::3")]);
    assert_eq!(a2, vec![ip("fd00:10:244:2::2"), ip("10.244.2.2")]);
    let (a1_6, b1_6, a2_6) = (a1[1], b1[1], a2[0]);

    // the pod side: both addresses on eth0, the IPv6 one usable at once, a default route
    // per family
    let eth0 = p1a.ip(&["addr", "show", "dev", "eth0"]);
    assert!(eth0.contains("inet 10.244.1.2/24"), "{eth0}");
    assert!(eth0.contains("inet6 fd00:10:244:1::2/64"), "{eth0}");
    assert!(!global_tentative(&eth0), "{eth0}");
    let r = p1a.ip(&["-6", "route", "show", "default"]);
    assert!(r.contains("default via fd00:10:244:1::1 dev eth0"), "{r}");
    let r = p1a.ip(&["-4", "route", "show", "default"]);
    assert!(r.contains("default via 10.244.1.1 dev eth0"), "{r}");

    // one node, IPv6: pod to pod over the bridge, pod to its gateway
    ping(&p1a, b1_6);
    ping(&p1b, ip("fd00:10:244:1::1"));

    // across nodes: nothing before the routes, both families after
    assert!(!ping_once(&p1a, a2_6));
    let nodes = [
        route("d1", "10.244.1.0/24", "192.168.253.1"),
        route("d1", "fd00:10:244:1::/64", "fd00:253::1"),
        route("d2", "fd00:10:244:2::/64", "fd00:253::2"),
        route("d2", "10.244.2.0/24", "192.168.253.2"),
    ];
    let s = net1.sync_routes(&nodes).unwrap();
    assert_eq!(s.set.len(), 2, "{s:?}");
    assert!(s.failed.is_empty(), "{s:?}");
    net2.sync_routes(&nodes).unwrap();
    let r6 = n1.ip(&["-6", "route", "show", "proto", "152"]);
    assert!(
        r6.contains("fd00:10:244:2::/64 via fd00:253::2 dev lan0"),
        "{r6}"
    );
    ping(&p1a, a2_6);
    ping(&p2a, b1_6);
    ping(&p1a, a2[1]);
    // TCP across nodes keeps the pod's address (no masquerade inside the cluster CIDR)
    serve(&p2a, "p2a");
    serve(&p1b, "p1b");
    assert_eq!(
        tcp_from(&p1a, &sock(a2_6, 8080)).unwrap(),
        format!("p2a {a1_6}")
    );
    // a second sync changes nothing
    assert_eq!(
        net1.sync_routes(&nodes).unwrap(),
        skiff_netproxy::podnet::RouteSync::default()
    );

    // leaving the cluster CIDR over IPv6: masqueraded to the node's address, so a host that
    // has no route to the pods answers, and sees the node
    serve(&ext, "ext");
    assert_eq!(
        tcp_from(&p1a, "[fd00:254::2]:8080").unwrap(),
        "ext fd00:254::1"
    );

    // an IPv6 ClusterIP through the proxy's ip6 table, to endpoints on both nodes
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "default", "name": "web6"},
        "spec": {"clusterIP": "fd00:96::10", "clusterIPs": ["fd00:96::10"],
            "ipFamilies": ["IPv6"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}))
    .unwrap();
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
    "metadata": {"namespace": "default", "name": "web6-1",
        "labels": {"kubernetes.io/service-name": "web6"}},
    "addressType": "IPv6",
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    "endpoints": [
        {"addresses": [b1_6.to_string()], "nodeName": "d1", "conditions": {"ready": true}},
        {"addresses": [a2_6.to_string()], "nodeName": "d2", "conditions": {"ready": true}}
    ]}))
    .unwrap();
    let mut proxier = Proxier::new(
        RulesConfig {
            node_name: "d1".into(),
            cluster_cidrs: vec![
                "10.244.0.0/16".parse().unwrap(),
                "fd00:10:244::/56".parse().unwrap(),
            ],
            service_cidrs: vec![
                "10.96.0.0/12".parse().unwrap(),
                "fd00:96::/112".parse().unwrap(),
            ],
            ..RulesConfig::default()
        },
        Nft {
            netns: Some(n1.name.clone()),
        },
    );
    proxier.sync(&[&svc], &[&slice]).await.unwrap();
    for from in [&n1, &p1a] {
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.len() < 2 {
            assert!(
                Instant::now() < deadline,
                "from {}: only {seen:?}",
                from.name
            );
            let answer = tcp_from(from, "[fd00:96::10]:80").unwrap();
            seen.insert(answer.split_whitespace().next().unwrap().to_string());
        }
        assert_eq!(seen, ["p1b".to_string(), "p2a".to_string()].into());
    }
    // a pod's own address is kept through the ClusterIP
    let answer = loop {
        let a = tcp_from(&p1a, "[fd00:96::10]:80").unwrap();
        if a.starts_with("p2a") {
            break a;
        }
    };
    assert_eq!(answer, format!("p2a {a1_6}"));

    // hostPorts of a dual-stack pod: without hostIP in both families, with an IPv6 hostIP
    // in that family only
    use skiff_netproxy::podnet::PortMapping;
    use skiff_netproxy::podnet::hostport::Protocol;
    let ports = [
        PortMapping {
            protocol: Protocol::Tcp,
            host_ip: None,
            host_port: 9090,
            container_port: 8080,
        },
        PortMapping {
            protocol: Protocol::Tcp,
            host_ip: Some(ip("fd00:254::1")),
            host_port: 9091,
            container_port: 8080,
        },
    ];
    net1.set_host_ports("uid-d1b", &ports).unwrap();
    assert_eq!(
        tcp_from(&ext, "[fd00:254::1]:9090").unwrap(),
        "p1b fd00:254::2"
    );
    assert_eq!(
        tcp_from(&ext, "192.168.254.1:9090").unwrap(),
        "p1b 192.168.254.2"
    );
    assert_eq!(
        tcp_from(&ext, "[fd00:254::1]:9091").unwrap(),
        "p1b fd00:254::2"
    );
    assert!(tcp_from(&ext, "192.168.254.1:9091").is_err());
    net1.set_host_ports("uid-d1b", &[]).unwrap();
    assert!(tcp_from(&ext, "[fd00:254::1]:9090").is_err());

    // an agent restart: same addresses for the same pod, both records kept
    drop(net1);
    let net1 = network(&n1, "10.244.1.0/24,fd00:10:244:1::/64", s1.path());
    net1.setup().unwrap();
    assert_eq!(net1.attach(&p1a.path(), "uid-d1a").unwrap(), a1);
    let held: Vec<(IpAddr, String)> = net1.records().unwrap().into_iter().collect();
    assert_eq!(
        held,
        vec![
            (a1[0], "uid-d1a".to_string()),
            (b1[0], "uid-d1b".to_string()),
            (a1[1], "uid-d1a".to_string()),
            (b1[1], "uid-d1b".to_string()),
        ]
    );
    ping(&p1a, a2_6);
    // a new pod gets the next addresses of both blocks
    let p1c = Ns::new("dp1c");
    assert_eq!(
        net1.attach(&p1c.path(), "uid-d1c").unwrap(),
        vec![ip("10.244.1.4"), ip("fd00:10:244:1::4")]
    );
    // detach releases both families; retain too
    net1.detach("uid-d1b").unwrap();
    let live: HashSet<String> = ["uid-d1a".to_string()].into();
    assert_eq!(
        net1.retain(&live).unwrap(),
        vec![ip("10.244.1.4"), ip("fd00:10:244:1::4")]
    );
    let held: Vec<IpAddr> = net1.records().unwrap().into_keys().collect();
    assert_eq!(held, a1);

    // a node gone: its routes of both families go
    let s = net1.sync_routes(&nodes[..2]).unwrap();
    assert_eq!(s.deleted.len(), 2, "{s:?}");
    assert!(!ping_once(&p1a, a2_6));
    net1.teardown().unwrap();
    assert!(
        !n1.exec(&["nft", "list", "table", "ip6", "skiff_podnet"])
            .status
            .success()
    );
}

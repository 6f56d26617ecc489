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
    BridgeNetwork::new(config(node, cidr, state)).unwrap()
}

fn config(node: &Ns, cidr: &str, state: &std::path::Path) -> BridgeConfig {
    BridgeConfig {
        bridge: "skiff0".into(),
        pod_cidr: cidr.parse().unwrap(),
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        mtu: 1400,
        state_dir: state.to_path_buf(),
        node_netns: Some(node.path()),
        vxlan: None,
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
    let net1 = vx(&n1, "10.244.1.0/24", s1.path(), ip1);
    let net2 = vx(&n2, "10.244.2.0/24", s2.path(), ip2);
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
    let pod1 = net1.attach(&p1.path(), "uid-v1").unwrap();
    let pod2 = net2.attach(&p2.path(), "uid-v2").unwrap();
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

    // the overlay
    let peers = [
        VtepPeer {
            name: "v1".into(),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            node_ip: ip1,
            mac: vxlan::vtep_mac(ip1),
        },
        VtepPeer {
            name: "v2".into(),
            pod_cidr: "10.244.2.0/24".parse().unwrap(),
            node_ip: ip2,
            mac: vxlan::vtep_mac(ip2),
        },
    ];
    let (r, e) = net1.sync_vxlan(&peers).unwrap();
    assert!(r.failed.is_empty(), "{r:?}");
    assert_eq!(r.set.len(), 1, "{r:?}");
    assert_eq!(e.neighbours_set.len(), 1, "{e:?}");
    assert_eq!(e.fdb_set.len(), 1, "{e:?}");
    net2.sync_vxlan(&peers).unwrap();
    let routes = n1.ip(&["route", "show", "proto", "152"]);
    assert!(
        routes.contains("10.244.2.0/24 via 10.244.2.0 dev skiff.1 onlink"),
        "{routes}"
    );
    let neigh = n1.ip(&["neigh", "show", "dev", vxlan::DEVICE]);
    assert!(
        neigh.contains("10.244.2.0 lladdr 0e:5f:c0:a8:fb:02 PERMANENT"),
        "{neigh}"
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
    assert_eq!(r.deleted.len(), 1, "{r:?}");
    assert_eq!(e.neighbours_deleted.len(), 1, "{e:?}");
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
    let pod_ip = net.attach(&pod.path(), "uid-h").unwrap();
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
        format!("tcp {}", net.gateway())
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

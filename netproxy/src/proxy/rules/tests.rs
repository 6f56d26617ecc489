use serde_json::{Value, json};

use super::*;

fn svc(v: Value) -> Service {
    serde_json::from_value(v).unwrap()
}

fn slice(v: Value) -> EndpointSlice {
    serde_json::from_value(v).unwrap()
}

/// A ClusterIP Service `ns/web` at 10.96.0.10 with `spec` merged in.
fn web(spec: Value) -> Service {
    let mut s = json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"}]});
    if let (Some(base), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    svc(json!({"metadata": {"namespace": "ns", "name": "web"}, "spec": s}))
}

/// An endpoint: (ip, node, ready, serving, terminating).
type Ep = (&'static str, &'static str, bool, bool, bool);

fn web_slice(ports: Value, eps: &[Ep]) -> EndpointSlice {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(ip, node, r, s, t)| {
            json!({"addresses": [ip], "nodeName": node,
                "conditions": {"ready": r, "serving": s, "terminating": t}})
        })
        .collect();
    let family = if eps.iter().any(|e| e.0.contains(':')) {
        "IPv6"
    } else {
        "IPv4"
    };
    slice(json!({"metadata": {"namespace": "ns", "name": "web-abc",
        "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": family, "ports": ports, "endpoints": endpoints}))
}

fn http_slice(eps: &[Ep]) -> EndpointSlice {
    web_slice(
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        eps,
    )
}

const READY: fn(&'static str, &'static str) -> Ep = |ip, node| (ip, node, true, true, false);

fn cfg() -> RulesConfig {
    RulesConfig {
        node_name: "node-a".into(),
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        ..RulesConfig::default()
    }
}

struct Case {
    name: &'static str,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    cfg: RulesConfig,
    family: Family,
    /// (set, key, value) that must be present.
    elements: Vec<(&'static str, &'static str, &'static str)>,
    /// (set, key) that must be absent.
    absent: Vec<(&'static str, &'static str)>,
    /// chain → its exact rules.
    chains: Vec<(&'static str, Vec<&'static str>)>,
    /// chains that must not exist.
    no_chains: Vec<&'static str>,
}

impl Default for Case {
    fn default() -> Case {
        Case {
            name: "",
            services: vec![],
            slices: vec![],
            cfg: cfg(),
            family: Family::V4,
            elements: vec![],
            absent: vec![],
            chains: vec![],
            no_chains: vec![],
        }
    }
}

fn run(c: &Case) -> Table {
    let services: Vec<&Service> = c.services.iter().collect();
    let slices: Vec<&EndpointSlice> = c.slices.iter().collect();
    let tables = desired(&services, &slices, &c.cfg);
    assert_eq!(tables.len(), 2);
    tables.into_iter().find(|t| t.family == c.family).unwrap()
}

#[test]
fn ruleset_table() {
    let cases = vec![
        Case {
            name: "ClusterIP over two ready endpoints, a not-ready one left out",
            services: vec![web(json!({}))],
            slices: vec![http_slice(&[
                READY("10.244.1.5", "node-a"),
                READY("10.244.2.7", "node-b"),
                ("10.244.3.9", "node-c", false, false, false),
            ])],
            elements: vec![
                (
                    "service-endpoints",
                    "10.96.0.10 . tcp . 80 . 0-32767",
                    "10.244.1.5 . 8080",
                ),
                (
                    "service-endpoints",
                    "10.96.0.10 . tcp . 80 . 32768-65535",
                    "10.244.2.7 . 8080",
                ),
                ("cluster-ips", "10.96.0.10", ""),
                ("hairpin-endpoints", "10.244.1.5 . 10.244.1.5", ""),
                ("hairpin-endpoints", "10.244.2.7 . 10.244.2.7", ""),
            ],
            absent: vec![
                ("no-endpoint-services", "10.96.0.10 . tcp . 80"),
                ("service-ips", "10.96.0.10 . tcp . 80"),
                ("hairpin-endpoints", "10.244.3.9 . 10.244.3.9"),
            ],
            chains: vec![
                (
                    "services",
                    vec![
                        "ip daddr @cluster-ips ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                        "ip daddr . meta l4proto . th dport vmap @service-ips",
                        "meta l4proto tcp dnat to ip daddr . meta l4proto . th dport . numgen random mod 65536 map @service-endpoints",
                        "meta l4proto udp dnat to ip daddr . meta l4proto . th dport . numgen random mod 65536 map @service-endpoints",
                        "meta l4proto sctp dnat to ip daddr . meta l4proto . th dport . numgen random mod 65536 map @service-endpoints",
                        "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
                    ],
                ),
                (
                    "nat-postrouting",
                    vec![
                        "ip saddr . ip daddr @hairpin-endpoints jump mark-for-masquerade",
                        "jump masquerading",
                    ],
                ),
            ],
            no_chains: vec!["service-ns/web/tcp/http", "external-ns/web/tcp/http"],
            ..Case::default()
        },
        Case {
            name: "a node-local ClusterIP (cluster DNS): no DNAT, no rejection, never dropped",
            services: vec![
                svc(
                    json!({"metadata": {"namespace": "kube-system", "name": "kube-dns"},
                    "spec": {"clusterIP": "10.96.0.10", "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP"},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}}),
                ),
                svc(json!({"metadata": {"namespace": "ns", "name": "web"},
                    "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]}})),
            ],
            cfg: RulesConfig {
                node_local_ips: vec!["10.96.0.10".parse().unwrap()],
                service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
                ..cfg()
            },
            elements: vec![
                (
                    "no-endpoint-services",
                    "10.96.0.20 . tcp . 80",
                    "goto reject-chain",
                ),
                ("cluster-ips", "10.96.0.20", ""),
            ],
            absent: vec![
                ("no-endpoint-services", "10.96.0.10 . udp . 53"),
                ("no-endpoint-services", "10.96.0.10 . tcp . 53"),
                ("service-ips", "10.96.0.10 . udp . 53"),
                ("cluster-ips", "10.96.0.10"),
            ],
            chains: vec![(
                "cluster-ips-check",
                vec![
                    "ip daddr { 10.96.0.10 } return",
                    "ip daddr @cluster-ips reject",
                    "ip daddr 10.96.0.0/12 drop",
                ],
            )],
            no_chains: vec!["service-kube-system/kube-dns/udp/dns"],
            ..Case::default()
        },
        Case {
            name: "no endpoints: ClusterIP and NodePort rejected at once",
            services: vec![web(json!({"type": "NodePort",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}))],
            slices: vec![http_slice(&[("10.244.1.5", "node-a", false, false, false)])],
            elements: vec![
                (
                    "no-endpoint-services",
                    "10.96.0.10 . tcp . 80",
                    "goto reject-chain",
                ),
                ("no-endpoint-nodeports", "tcp . 30080", "goto reject-chain"),
                ("cluster-ips", "10.96.0.10", ""),
            ],
            absent: vec![
                ("service-ips", "10.96.0.10 . tcp . 80"),
                ("service-nodeports", "tcp . 30080"),
            ],
            chains: vec![(
                "reject-chain",
                vec!["meta l4proto tcp reject with tcp reset", "reject"],
            )],
            no_chains: vec!["service-ns/web/tcp/http", "external-ns/web/tcp/http"],
            ..Case::default()
        },
        Case {
            name: "only terminating endpoints: the serving ones are used, as kube-proxy falls back",
            services: vec![web(json!({}))],
            slices: vec![http_slice(&[
                ("10.244.1.5", "node-a", false, true, true),
                ("10.244.2.7", "node-b", false, false, true),
            ])],
            elements: vec![(
                "service-endpoints",
                "10.96.0.10 . tcp . 80 . 0-65535",
                "10.244.1.5 . 8080",
            )],
            absent: vec![("hairpin-endpoints", "10.244.2.7 . 10.244.2.7")],
            ..Case::default()
        },
        Case {
            name: "NodePort, externalTrafficPolicy Cluster: masquerade, then all endpoints",
            services: vec![web(json!({"type": "NodePort",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}))],
            slices: vec![http_slice(&[
                READY("10.244.1.5", "node-a"),
                READY("10.244.2.7", "node-b"),
            ])],
            elements: vec![
                (
                    "service-nodeports",
                    "tcp . 30080",
                    "goto external-ns/web/tcp/http",
                ),
                (
                    "service-ips",
                    "10.96.0.10 . tcp . 80",
                    "goto service-ns/web/tcp/http",
                ),
            ],
            absent: vec![("no-endpoint-nodeports", "tcp . 30080")],
            chains: vec![
                (
                    "external-ns/web/tcp/http",
                    vec!["jump mark-for-masquerade", "goto service-ns/web/tcp/http"],
                ),
                (
                    "service-ns/web/tcp/http",
                    vec![
                        "numgen random mod 2 == 0 meta l4proto tcp dnat to 10.244.1.5:8080",
                        "meta l4proto tcp dnat to 10.244.2.7:8080",
                    ],
                ),
            ],
            ..Case::default()
        },
        Case {
            name: "externalTrafficPolicy Local: NodePort to the local endpoint, pods and node short-circuited",
            services: vec![web(
                json!({"type": "NodePort", "externalTrafficPolicy": "Local",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}),
            )],
            slices: vec![http_slice(&[
                READY("10.244.1.5", "node-a"),
                READY("10.244.2.7", "node-b"),
            ])],
            elements: vec![
                (
                    "service-nodeports",
                    "tcp . 30080",
                    "goto external-ns/web/tcp/http",
                ),
                (
                    "service-ips",
                    "10.96.0.10 . tcp . 80",
                    "goto service-ns/web/tcp/http",
                ),
            ],
            chains: vec![
                (
                    "external-ns/web/tcp/http",
                    vec![
                        "ip saddr 10.244.0.0/16 goto service-ns/web/tcp/http",
                        "fib saddr type local jump mark-for-masquerade",
                        "fib saddr type local goto service-ns/web/tcp/http",
                        "goto local-ns/web/tcp/http",
                    ],
                ),
                (
                    "local-ns/web/tcp/http",
                    vec!["meta l4proto tcp dnat to 10.244.1.5:8080"],
                ),
            ],
            ..Case::default()
        },
        Case {
            name: "externalTrafficPolicy Local without a local endpoint: NodePort dropped, ClusterIP served",
            services: vec![web(
                json!({"type": "NodePort", "externalTrafficPolicy": "Local",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}),
            )],
            slices: vec![http_slice(&[READY("10.244.2.7", "node-b")])],
            elements: vec![
                ("no-endpoint-nodeports", "tcp . 30080", "drop"),
                (
                    "service-nodeports",
                    "tcp . 30080",
                    "goto external-ns/web/tcp/http",
                ),
                (
                    "service-ips",
                    "10.96.0.10 . tcp . 80",
                    "goto service-ns/web/tcp/http",
                ),
            ],
            absent: vec![("no-endpoint-services", "10.96.0.10 . tcp . 80")],
            chains: vec![(
                "external-ns/web/tcp/http",
                vec![
                    "ip saddr 10.244.0.0/16 goto service-ns/web/tcp/http",
                    "fib saddr type local jump mark-for-masquerade",
                    "fib saddr type local goto service-ns/web/tcp/http",
                ],
            )],
            no_chains: vec!["local-ns/web/tcp/http"],
            ..Case::default()
        },
        Case {
            name: "internalTrafficPolicy Local: ClusterIP to local endpoints only",
            services: vec![web(json!({"internalTrafficPolicy": "Local"}))],
            slices: vec![http_slice(&[
                READY("10.244.1.5", "node-a"),
                READY("10.244.2.7", "node-b"),
            ])],
            elements: vec![(
                "service-ips",
                "10.96.0.10 . tcp . 80",
                "goto local-ns/web/tcp/http",
            )],
            chains: vec![(
                "local-ns/web/tcp/http",
                vec!["meta l4proto tcp dnat to 10.244.1.5:8080"],
            )],
            no_chains: vec!["service-ns/web/tcp/http"],
            ..Case::default()
        },
        Case {
            name: "internalTrafficPolicy Local without a local endpoint: ClusterIP dropped",
            services: vec![web(json!({"internalTrafficPolicy": "Local"}))],
            slices: vec![http_slice(&[READY("10.244.2.7", "node-b")])],
            elements: vec![("no-endpoint-services", "10.96.0.10 . tcp . 80", "drop")],
            absent: vec![("service-ips", "10.96.0.10 . tcp . 80")],
            no_chains: vec!["local-ns/web/tcp/http", "service-ns/web/tcp/http"],
            ..Case::default()
        },
        Case {
            name: "sessionAffinity ClientIP: a timed set per endpoint, checked before balancing",
            services: vec![web(json!({"sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}))],
            slices: vec![http_slice(&[
                READY("10.244.1.5", "node-a"),
                READY("10.244.2.7", "node-b"),
            ])],
            cfg: RulesConfig {
                cluster_cidrs: vec![],
                ..cfg()
            },
            chains: vec![(
                "service-ns/web/tcp/http",
                vec![
                    "ip saddr @affinity-ns/web/tcp/http__10.244.1.5/8080 update @affinity-ns/web/tcp/http__10.244.1.5/8080 { ip saddr } meta l4proto tcp dnat to 10.244.1.5:8080",
                    "ip saddr @affinity-ns/web/tcp/http__10.244.2.7/8080 update @affinity-ns/web/tcp/http__10.244.2.7/8080 { ip saddr } meta l4proto tcp dnat to 10.244.2.7:8080",
                    "numgen random mod 2 == 0 update @affinity-ns/web/tcp/http__10.244.1.5/8080 { ip saddr } meta l4proto tcp dnat to 10.244.1.5:8080",
                    "update @affinity-ns/web/tcp/http__10.244.2.7/8080 { ip saddr } meta l4proto tcp dnat to 10.244.2.7:8080",
                ],
            )],
            ..Case::default()
        },
        Case {
            name: "several ports and protocols, target ports from the slice by port name",
            services: vec![svc(json!({"metadata": {"namespace": "ns", "name": "web"},
                "spec": {"clusterIP": "10.96.0.10", "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": "dns-tcp"},
                    {"name": "sig", "port": 3868, "protocol": "SCTP"}]}}))],
            slices: vec![web_slice(
                json!([{"name": "dns", "port": 5353, "protocol": "UDP"},
                       {"name": "dns-tcp", "port": 5354, "protocol": "TCP"},
                       {"name": "sig", "port": 3868, "protocol": "SCTP"}]),
                &[READY("10.244.1.5", "node-a")],
            )],
            cfg: RulesConfig {
                masquerade_all: true,
                ..cfg()
            },
            elements: vec![
                (
                    "service-endpoints",
                    "10.96.0.10 . udp . 53 . 0-65535",
                    "10.244.1.5 . 5353",
                ),
                (
                    "service-endpoints",
                    "10.96.0.10 . tcp . 53 . 0-65535",
                    "10.244.1.5 . 5354",
                ),
                (
                    "service-endpoints",
                    "10.96.0.10 . sctp . 3868 . 0-65535",
                    "10.244.1.5 . 3868",
                ),
            ],
            chains: vec![(
                "services",
                vec![
                    "ip daddr @cluster-ips jump mark-for-masquerade",
                    "ip daddr . meta l4proto . th dport vmap @service-ips",
                    "meta l4proto tcp dnat to ip daddr . meta l4proto . th dport . numgen random mod 65536 map @service-endpoints",
                    "meta l4proto udp dnat to ip daddr . meta l4proto . th dport . numgen random mod 65536 map @service-endpoints",
                    "meta l4proto sctp dnat to ip daddr . meta l4proto . th dport . numgen random mod 65536 map @service-endpoints",
                    "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
                ],
            )],
            ..Case::default()
        },
        Case {
            name: "external IPs go through the external chain",
            services: vec![web(json!({"externalIPs": ["192.0.2.10"]}))],
            slices: vec![http_slice(&[READY("10.244.1.5", "node-a")])],
            elements: vec![(
                "service-ips",
                "192.0.2.10 . tcp . 80",
                "goto external-ns/web/tcp/http",
            )],
            chains: vec![(
                "external-ns/web/tcp/http",
                vec!["jump mark-for-masquerade", "goto service-ns/web/tcp/http"],
            )],
            ..Case::default()
        },
        Case {
            name: "NodePorts on chosen addresses only, unallocated service addresses dropped",
            services: vec![web(json!({"type": "NodePort",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}))],
            slices: vec![http_slice(&[READY("10.244.1.5", "node-a")])],
            cfg: RulesConfig {
                nodeport_addresses: NodePortAddresses::Only(vec![
                    "192.168.1.2".parse().unwrap(),
                    "fd00::2".parse().unwrap(),
                ]),
                service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
                ..cfg()
            },
            elements: vec![("nodeport-ips", "192.168.1.2", "")],
            absent: vec![("nodeport-ips", "fd00::2")],
            chains: vec![
                (
                    "services",
                    vec![
                        "ip daddr @cluster-ips ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                        "ip daddr . meta l4proto . th dport vmap @service-ips",
                        "meta l4proto tcp dnat to ip daddr . meta l4proto . th dport . numgen random mod 65536 map @service-endpoints",
                        "meta l4proto udp dnat to ip daddr . meta l4proto . th dport . numgen random mod 65536 map @service-endpoints",
                        "meta l4proto sctp dnat to ip daddr . meta l4proto . th dport . numgen random mod 65536 map @service-endpoints",
                        "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
                    ],
                ),
                (
                    "cluster-ips-check",
                    vec!["ip daddr @cluster-ips reject", "ip daddr 10.96.0.0/12 drop"],
                ),
            ],
            ..Case::default()
        },
        Case {
            name: "IPv6: its own table, endpoints from IPv6 slices",
            services: vec![svc(json!({"metadata": {"namespace": "ns", "name": "web"},
                "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:96::a"],
                    "ports": [{"name": "http", "port": 80}]}}))],
            slices: vec![http_slice(&[READY("fd00:244::5", "node-a")])],
            family: Family::V6,
            cfg: RulesConfig {
                cluster_cidrs: vec![],
                ..cfg()
            },
            elements: vec![
                (
                    "service-endpoints",
                    "fd00:96::a . tcp . 80 . 0-65535",
                    "fd00:244::5 . 8080",
                ),
                ("hairpin-endpoints", "fd00:244::5 . fd00:244::5", ""),
            ],
            chains: vec![(
                "services",
                vec![
                    "ip6 daddr . meta l4proto . th dport vmap @service-ips",
                    "meta l4proto tcp dnat to ip6 daddr . meta l4proto . th dport . numgen random mod 65536 map @service-endpoints",
                    "meta l4proto udp dnat to ip6 daddr . meta l4proto . th dport . numgen random mod 65536 map @service-endpoints",
                    "meta l4proto sctp dnat to ip6 daddr . meta l4proto . th dport . numgen random mod 65536 map @service-endpoints",
                    "fib daddr type local ip6 daddr != ::1 meta l4proto . th dport vmap @service-nodeports",
                ],
            )],
            ..Case::default()
        },
        Case {
            name: "headless and ExternalName Services get no rules",
            services: vec![
                web(json!({"clusterIP": "None", "clusterIPs": ["None"]})),
                svc(json!({"metadata": {"namespace": "ns", "name": "ext"},
                    "spec": {"type": "ExternalName", "externalName": "example.com"}})),
            ],
            slices: vec![http_slice(&[READY("10.244.1.5", "node-a")])],
            no_chains: vec!["service-ns/web/tcp/http"],
            ..Case::default()
        },
    ];
    for c in &cases {
        let t = run(c);
        for (set, key, value) in &c.elements {
            let s = t
                .sets
                .get(*set)
                .unwrap_or_else(|| panic!("{}: no set {set}", c.name));
            assert_eq!(
                s.elements.get(*key).map(String::as_str),
                Some(*value),
                "{}: {set}[{key}] in {:?}",
                c.name,
                s.elements
            );
        }
        for (set, key) in &c.absent {
            let s = t
                .sets
                .get(*set)
                .unwrap_or_else(|| panic!("{}: no set {set}", c.name));
            assert!(
                !s.elements.contains_key(*key),
                "{}: {set}[{key}] present",
                c.name
            );
        }
        for (chain, rules) in &c.chains {
            let ch = t
                .chains
                .get(*chain)
                .unwrap_or_else(|| panic!("{}: no chain {chain} in {:?}", c.name, t.chains.keys()));
            assert_eq!(&ch.rules, rules, "{}: chain {chain}", c.name);
        }
        for chain in &c.no_chains {
            assert!(
                !t.chains.contains_key(*chain),
                "{}: chain {chain} present",
                c.name
            );
        }
    }
}

#[test]
fn affinity_sets_carry_the_timeout() {
    let services = [web(json!({"sessionAffinity": "ClientIP"}))];
    let slices = [http_slice(&[READY("10.244.1.5", "node-a")])];
    let t = desired(&[&services[0]], &[&slices[0]], &cfg()).remove(0);
    let set = &t.sets["affinity-ns/web/tcp/http__10.244.1.5/8080"];
    assert_eq!(set.dynamic_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
    assert!(set.elements.is_empty());
}

#[test]
fn udp_ports_are_tracked_for_conntrack() {
    let services = [web(json!({"type": "NodePort",
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]}))];
    let slices = [web_slice(
        json!([{"name": "dns", "port": 5353, "protocol": "UDP"}]),
        &[
            READY("10.244.1.5", "node-a"),
            ("10.244.2.7", "node-b", false, false, false),
        ],
    )];
    let t = desired(&[&services[0]], &[&slices[0]], &cfg()).remove(0);
    let u = &t.udp["ns/web/udp/dns"];
    assert_eq!(u.node_port, Some(30053));
    assert_eq!(
        u.frontends.iter().copied().collect::<Vec<_>>(),
        vec![("10.96.0.10".parse().unwrap(), 53)]
    );
    assert_eq!(
        u.endpoints.iter().copied().collect::<Vec<_>>(),
        vec![("10.244.1.5".parse().unwrap(), 5353)]
    );
}

#[test]
fn categorize_as_kube_proxy() {
    let ep = |ready, serving, terminating, local| Endpoint {
        ip: "10.0.0.1".parse().unwrap(),
        port: 80,
        ready,
        serving,
        terminating,
        local,
    };
    // (endpoints, uses cluster, uses local) → (cluster count, local count, any)
    let cases = [
        (
            vec![ep(true, true, false, false)],
            true,
            false,
            (1, 0, true),
        ),
        (
            vec![ep(false, false, false, true)],
            true,
            true,
            (0, 0, false),
        ),
        (vec![ep(false, true, true, true)], true, true, (1, 1, true)),
        (
            vec![ep(true, true, false, false)],
            false,
            true,
            (0, 0, true),
        ),
        (
            vec![ep(true, true, false, true), ep(false, true, true, true)],
            false,
            true,
            (0, 1, true),
        ),
    ];
    for (i, (eps, c, l, (nc, nl, any))) in cases.into_iter().enumerate() {
        let got = categorize(&eps, c, l);
        assert_eq!(
            (got.cluster.len(), got.local.len(), got.any),
            (nc, nl, any),
            "case {i}"
        );
    }
}

#[test]
fn cidrs_parse() {
    assert_eq!(
        "10.244.0.0/16".parse::<Cidr>().unwrap().to_string(),
        "10.244.0.0/16"
    );
    assert!("10.244.0.0".parse::<Cidr>().is_err());
    assert!("10.244.0.0/33".parse::<Cidr>().is_err());
    assert!("fd00::/64".parse::<Cidr>().is_ok());
}

#[test]
fn plain_services_share_the_draw_equally() {
    let services = [web(json!({}))];
    let slices = [http_slice(&[
        READY("10.244.1.5", "node-a"),
        READY("10.244.2.7", "node-b"),
        READY("10.244.3.9", "node-c"),
    ])];
    let t = desired(&[&services[0]], &[&slices[0]], &cfg()).remove(0);
    let got: Vec<(&str, &str)> = t.sets["service-endpoints"]
        .elements
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("10.96.0.10 . tcp . 80 . 0-21844", "10.244.1.5 . 8080"),
            ("10.96.0.10 . tcp . 80 . 21845-43689", "10.244.2.7 . 8080"),
            ("10.96.0.10 . tcp . 80 . 43690-65535", "10.244.3.9 . 8080"),
        ]
    );
}

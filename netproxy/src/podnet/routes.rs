//! host-gw: a route to every other node's podCIDR via that node's InternalIP, as flannel's
//! host-gw backend does. The routes skiff owns carry their own protocol number
//! ([`ROUTE_PROTOCOL`]), so a sync touches nothing else in the main table. Dual-stack: one
//! route per family, the IPv6 podCIDR via the node's IPv6 InternalIP.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// The `proto` of skiff's pod routes (`ip route show proto 152`).
pub const ROUTE_PROTOCOL: u8 = 152;

/// What the routes need to know of a Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoute {
    /// The Node's name.
    pub name: String,
    /// One of its `spec.podCIDRs`.
    pub pod_cidr: IpNet,
    /// Its InternalIP of that CIDR's family.
    pub node_ip: IpAddr,
}

/// The routes this node wants: every other node's podCIDR via its address of the same
/// family. Our own podCIDRs (on the bridge) and nodes claiming a CIDR that overlaps one of
/// ours are left out; when two nodes claim one CIDR the first by name wins.
pub fn desired(own_cidrs: &[IpNet], nodes: &[NodeRoute]) -> BTreeMap<IpNet, IpAddr> {
    let mut sorted: Vec<&NodeRoute> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = BTreeMap::new();
    for n in sorted {
        let cidr = n.pod_cidr.trunc();
        if cidr.network().is_ipv4() != n.node_ip.is_ipv4()
            || own_cidrs
                .iter()
                .any(|own| cidr.contains(&own.network()) || own.contains(&cidr.network()))
        {
            continue;
        }
        out.entry(cidr).or_insert(n.node_ip);
    }
    out
}

/// The changes taking the routes from `current` to `desired`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    /// Routes to add or replace (a new gateway).
    pub set: Vec<(IpNet, IpAddr)>,
    /// Routes to delete.
    pub delete: Vec<(IpNet, IpAddr)>,
}

impl RoutePlan {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.delete.is_empty()
    }
}

/// The difference between the routes in place and the wanted ones.
pub fn plan(current: &BTreeMap<IpNet, IpAddr>, desired: &BTreeMap<IpNet, IpAddr>) -> RoutePlan {
    RoutePlan {
        set: desired
            .iter()
            .filter(|(net, gw)| current.get(net) != Some(gw))
            .map(|(n, g)| (*n, *g))
            .collect(),
        delete: current
            .iter()
            .filter(|(net, _)| !desired.contains_key(net))
            .map(|(n, g)| (*n, *g))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nr(name: &str, cidr: &str, ip: &str) -> NodeRoute {
        NodeRoute {
            name: name.into(),
            pod_cidr: cidr.parse().unwrap(),
            node_ip: ip.parse().unwrap(),
        }
    }

    fn map(v: &[(&str, &str)]) -> BTreeMap<IpNet, IpAddr> {
        v.iter()
            .map(|(n, g)| (n.parse().unwrap(), g.parse().unwrap()))
            .collect()
    }

    #[test]
    fn desired_routes() {
        let own: Vec<IpNet> = vec![
            "10.244.1.0/24".parse().unwrap(),
            "fd00:10:244:1::/64".parse().unwrap(),
        ];
        let cases = [
            (vec![], map(&[])),
            (
                vec![
                    nr("n1", "10.244.1.0/24", "192.168.1.1"),
                    nr("n2", "10.244.2.0/24", "192.168.1.2"),
                    nr("n3", "10.244.3.0/24", "192.168.1.3"),
                ],
                map(&[
                    ("10.244.2.0/24", "192.168.1.2"),
                    ("10.244.3.0/24", "192.168.1.3"),
                ]),
            ),
            // overlapping our CIDR: never routed away
            (vec![nr("bad", "10.244.0.0/16", "192.168.1.9")], map(&[])),
            // two claims of one CIDR: first by name
            (
                vec![
                    nr("z", "10.244.4.0/24", "192.168.1.26"),
                    nr("a", "10.244.4.0/24", "192.168.1.1"),
                ],
                map(&[("10.244.4.0/24", "192.168.1.1")]),
            ),
            // dual-stack: each podCIDR via the node's address of its family
            (
                vec![
                    nr("n1", "fd00:10:244:1::/64", "fd00:1::1"),
                    nr("n2", "10.244.2.0/24", "192.168.1.2"),
                    nr("n2", "fd00:10:244:2::/64", "fd00:1::2"),
                ],
                map(&[
                    ("10.244.2.0/24", "192.168.1.2"),
                    ("fd00:10:244:2::/64", "fd00:1::2"),
                ]),
            ),
            // a family mismatch is never routed
            (
                vec![
                    nr("n3", "fd00:10:244:3::/64", "192.168.1.3"),
                    nr("n3", "10.244.3.0/24", "fd00:1::3"),
                ],
                map(&[]),
            ),
        ];
        for (nodes, want) in cases {
            assert_eq!(desired(&own, &nodes), want, "{nodes:?}");
        }
    }

    #[test]
    fn route_plans() {
        let cases = [
            (map(&[]), map(&[]), RoutePlan::default()),
            (
                map(&[]),
                map(&[("10.244.2.0/24", "10.0.0.2")]),
                RoutePlan {
                    set: vec![(
                        "10.244.2.0/24".parse().unwrap(),
                        "10.0.0.2".parse().unwrap(),
                    )],
                    delete: vec![],
                },
            ),
            (
                map(&[("10.244.2.0/24", "10.0.0.2"), ("10.244.3.0/24", "10.0.0.3")]),
                map(&[("10.244.2.0/24", "10.0.0.9")]),
                RoutePlan {
                    set: vec![(
                        "10.244.2.0/24".parse().unwrap(),
                        "10.0.0.9".parse().unwrap(),
                    )],
                    delete: vec![(
                        "10.244.3.0/24".parse().unwrap(),
                        "10.0.0.3".parse().unwrap(),
                    )],
                },
            ),
            (
                map(&[("10.244.2.0/24", "10.0.0.2")]),
                map(&[("10.244.2.0/24", "10.0.0.2")]),
                RoutePlan::default(),
            ),
        ];
        for (current, want, plan_want) in cases {
            assert_eq!(plan(&current, &want), plan_want);
        }
    }
}

//! The desired ruleset as a pure function of (Services, EndpointSlices, node, settings):
//! [`desired`] builds one [`Table`] per family with the structure of kube-proxy's nftables
//! mode (pkg/proxy/nftables/proxier.go): base chains that jump to `services` (ClusterIPs and
//! external IPs through the `service-ips` verdict map, NodePorts through
//! `service-nodeports`), a `service-…` chain per Service port that balances with
//! `numgen random mod N` and DNATs itself, `local-…` chains for the Local traffic policies,
//! `external-…` chains for NodePorts and external IPs, and filter chains that reject
//! traffic to Services without endpoints at once. Unlike kube-proxy there is no chain per
//! endpoint and no anonymous map per Service, and hairpin traffic is caught by one rule
//! over the `hairpin-endpoints` set: see docs/network.md for why.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::model::{Chain, Family, Hook, Set, Table, UdpPort, addr_port};

/// The label that names an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The packet mark bit that asks the postrouting chain to masquerade (kube-proxy's).
pub const MASQ_MARK: u32 = 0x4000;
/// sessionAffinity ClientIP timeout when the Service names none (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

const SERVICES: &str = "services";
const MASQUERADING: &str = "masquerading";
const MARK_MASQ: &str = "mark-for-masquerade";
const REJECT: &str = "reject-chain";
const SERVICE_ENDPOINTS_CHECK: &str = "service-endpoints-check";
const NODEPORT_ENDPOINTS_CHECK: &str = "nodeport-endpoints-check";
const CLUSTER_IPS_CHECK: &str = "cluster-ips-check";
const SERVICE_IPS: &str = "service-ips";
const SERVICE_NODEPORTS: &str = "service-nodeports";
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
const CLUSTER_IPS: &str = "cluster-ips";
const NODEPORT_IPS: &str = "nodeport-ips";
const HAIRPIN_ENDPOINTS: &str = "hairpin-endpoints";
const SERVICE_ENDPOINTS: &str = "service-endpoints";
/// The range of the draw that spreads a plain Service's connections over its endpoints.
const DRAW: u32 = 65536;

/// An address block, `10.244.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

/// A malformed CIDR.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid CIDR {0:?} (want ADDRESS/PREFIX)")]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let err = || CidrError(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(err)?;
        let addr: IpAddr = a.parse().map_err(|_| err())?;
        let prefix: u8 = p.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(err());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which node addresses accept NodePort traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// Every local address but loopback (`fib daddr type local`), kube-proxy's default.
    #[default]
    AllLocal,
    /// Only these addresses (kube-proxy's `--nodeport-addresses`).
    Only(Vec<IpAddr>),
}

/// What the ruleset depends on besides Services and EndpointSlices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesConfig {
    /// The table name in each family.
    pub table: String,
    /// This node's name: endpoints with this `nodeName` are local.
    pub node_name: String,
    /// Where NodePorts answer.
    pub nodeport_addresses: NodePortAddresses,
    /// The pod network: traffic to a ClusterIP from outside it is masqueraded.
    pub cluster_cidrs: Vec<Cidr>,
    /// The Service network: traffic to its unallocated addresses is dropped.
    pub service_cidrs: Vec<Cidr>,
    /// Masquerade all traffic to ClusterIPs (`--masquerade-all`).
    pub masquerade_all: bool,
    /// ClusterIPs a listener on this node serves itself (the cluster DNS on the agent's
    /// dummy link, NodeLocal DNSCache style): their Services get no rules at all (no DNAT,
    /// no rejection when they have no endpoints) and the address is never dropped.
    pub node_local_ips: Vec<IpAddr>,
}

impl Default for RulesConfig {
    fn default() -> RulesConfig {
        RulesConfig {
            table: "skiff".into(),
            node_name: String::new(),
            nodeport_addresses: NodePortAddresses::AllLocal,
            cluster_cidrs: Vec::new(),
            service_cidrs: Vec::new(),
            masquerade_all: false,
            node_local_ips: Vec::new(),
        }
    }
}

/// One endpoint of a Service port, as an EndpointSlice gives it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// The address (the endpoint's first).
    pub ip: IpAddr,
    /// The target port, named targetPorts already resolved by the slice.
    pub port: u16,
    /// `conditions.ready` (unset means ready).
    pub ready: bool,
    /// `conditions.serving` (unset means as ready).
    pub serving: bool,
    /// `conditions.terminating` (unset means not).
    pub terminating: bool,
    /// `nodeName` is this node.
    pub local: bool,
}

/// The endpoints each traffic policy sends to, as kube-proxy's `CategorizeEndpoints`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Categorized {
    /// For cluster-wide policy: ready endpoints, else serving-terminating ones.
    pub cluster: Vec<Endpoint>,
    /// For Local policy: local ready endpoints, else local serving-terminating ones.
    pub local: Vec<Endpoint>,
    /// Whether any usable endpoint exists anywhere.
    pub any: bool,
}

/// Sorts endpoints into the cluster and local sets (kube-proxy's pkg/proxy/topology.go,
/// without topology hints).
pub fn categorize(endpoints: &[Endpoint], uses_cluster: bool, uses_local: bool) -> Categorized {
    let mut c = Categorized::default();
    if uses_cluster {
        c.cluster = endpoints.iter().filter(|e| e.ready).cloned().collect();
        if c.cluster.is_empty() {
            c.cluster = endpoints
                .iter()
                .filter(|e| e.serving && e.terminating)
                .cloned()
                .collect();
        }
        c.any = !c.cluster.is_empty();
    }
    if uses_local {
        let usable = |e: &&Endpoint| e.ready || (e.serving && e.terminating);
        c.any |= endpoints.iter().any(|e| usable(&e));
        c.local = endpoints
            .iter()
            .filter(|e| e.ready && e.local)
            .cloned()
            .collect();
        if c.local.is_empty() {
            c.local = endpoints
                .iter()
                .filter(|e| e.serving && e.terminating && e.local)
                .cloned()
                .collect();
        }
    }
    c
}

/// One port of one Service, in one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvcPort {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// The port's name (empty for a single unnamed port).
    pub port_name: String,
    /// `tcp`, `udp` or `sctp`.
    pub proto: &'static str,
    /// The Service port.
    pub port: u16,
    /// ClusterIPs of this family.
    pub cluster_ips: Vec<IpAddr>,
    /// External IPs of this family.
    pub external_ips: Vec<IpAddr>,
    /// The NodePort.
    pub node_port: Option<u16>,
    /// sessionAffinity ClientIP timeout in seconds.
    pub affinity: Option<u32>,
    /// internalTrafficPolicy Local.
    pub internal_local: bool,
    /// externalTrafficPolicy Local.
    pub external_local: bool,
}

impl SvcPort {
    /// `ns/name/proto/portname`, kube-proxy's service port name and the stem of chain names.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace, self.name, self.proto, self.port_name
        )
    }

    /// Reached from outside the cluster (NodePort or external IPs).
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }

    /// Some traffic uses all endpoints of the cluster.
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_local || (self.externally_accessible() && !self.external_local)
    }

    /// Some traffic uses only this node's endpoints.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_local || (self.externally_accessible() && self.external_local)
    }
}

fn proto_of(p: Option<&str>) -> Option<&'static str> {
    match p.unwrap_or("TCP") {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

fn ips_of(list: impl IntoIterator<Item = String>, family: Family) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = list
        .into_iter()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .filter(|ip| Family::of(ip) == family)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The proxied ports of a Service in one family (none for ExternalName, headless or
/// Services without an address of the family).
pub fn service_ports(svc: &Service, family: Family) -> Vec<SvcPort> {
    let (Some(ns), Some(name), Some(spec)) = (
        svc.metadata.namespace.as_ref(),
        svc.metadata.name.as_ref(),
        svc.spec.as_ref(),
    ) else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if ips.is_empty() {
        ips.extend(spec.cluster_ip.clone());
    }
    let cluster_ips = ips_of(ips.into_iter().filter(|s| s != "None"), family);
    if cluster_ips.is_empty() {
        return Vec::new();
    }
    let external_ips = ips_of(spec.external_ips.clone().unwrap_or_default(), family);
    let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let port_of = |p: &ServicePort| -> Option<SvcPort> {
        Some(SvcPort {
            namespace: ns.clone(),
            name: name.clone(),
            port_name: p.name.clone().unwrap_or_default(),
            proto: proto_of(p.protocol.as_deref())?,
            port: u16::try_from(p.port).ok()?,
            cluster_ips: cluster_ips.clone(),
            external_ips: external_ips.clone(),
            node_port: p
                .node_port
                .filter(|_| node_ports)
                .and_then(|n| u16::try_from(n).ok()),
            affinity,
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
        })
    };
    spec.ports.iter().flatten().filter_map(port_of).collect()
}

/// The endpoints of one Service port from its EndpointSlices of the port's family: the
/// slice port of the same name and protocol gives the target port; an address seen in two
/// slices counts once (the readier copy wins). Sorted by address.
pub fn port_endpoints(
    sp: &SvcPort,
    slices: &[&EndpointSlice],
    family: Family,
    node_name: &str,
) -> Vec<Endpoint> {
    let mut by_addr: BTreeMap<(IpAddr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != family.address_type() {
            continue;
        }
        let port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == sp.port_name
                && proto_of(p.protocol.as_deref()) == Some(sp.proto)
        });
        let Some(port) = port
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            if Family::of(&ip) != family {
                continue;
            }
            let cond = ep.conditions.as_ref();
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let e = Endpoint {
                ip,
                port,
                ready,
                serving: cond.and_then(|c| c.serving).unwrap_or(ready),
                terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
                local: ep.node_name.as_deref() == Some(node_name),
            };
            let slot = by_addr.entry((ip, port)).or_insert_with(|| e.clone());
            if e.ready && !slot.ready {
                *slot = e;
            }
        }
    }
    by_addr.into_values().collect()
}

/// The desired tables, one per family, for these Services and EndpointSlices.
pub fn desired(services: &[&Service], slices: &[&EndpointSlice], cfg: &RulesConfig) -> Vec<Table> {
    desired_parts(services, slices, cfg).0
}

fn hook(kind: &'static str, hook: &'static str, priority: i32) -> Option<Hook> {
    Some(Hook {
        kind,
        hook,
        priority,
    })
}

fn base_chains(t: &mut Table, cfg: &RulesConfig) {
    let ip = t.family.nft();
    let fam = t.family;
    let mut add = |name: &str, hook: Option<Hook>, rules: Vec<String>| {
        t.chains.insert(name.to_string(), Chain { hook, rules });
    };
    add(
        "filter-input",
        hook("filter", "input", -110),
        vec![
            format!("ct state new jump {NODEPORT_ENDPOINTS_CHECK}"),
            format!("ct state new jump {SERVICE_ENDPOINTS_CHECK}"),
        ],
    );
    add(
        "filter-forward",
        hook("filter", "forward", -110),
        vec![
            format!("ct state new jump {SERVICE_ENDPOINTS_CHECK}"),
            format!("ct state new jump {CLUSTER_IPS_CHECK}"),
        ],
    );
    add(
        "filter-output",
        hook("filter", "output", -110),
        vec![format!("ct state new jump {SERVICE_ENDPOINTS_CHECK}")],
    );
    add(
        "filter-output-post-dnat",
        hook("filter", "output", -90),
        vec![format!("ct state new jump {CLUSTER_IPS_CHECK}")],
    );
    add(
        "nat-prerouting",
        hook("nat", "prerouting", -100),
        vec![format!("jump {SERVICES}")],
    );
    add(
        "nat-output",
        hook("nat", "output", -100),
        vec![format!("jump {SERVICES}")],
    );
    add(
        "nat-postrouting",
        hook("nat", "postrouting", 100),
        vec![
            // hairpin: a pod reached itself through a Service (after the DNAT its source is
            // its destination); masqueraded so the reply comes back through the node
            format!("{ip} saddr . {ip} daddr @{HAIRPIN_ENDPOINTS} jump {MARK_MASQ}"),
            format!("jump {MASQUERADING}"),
        ],
    );
    add(
        MASQUERADING,
        None,
        vec![
            format!("meta mark & {MASQ_MARK:#x} == 0 return"),
            format!("meta mark set meta mark ^ {MASQ_MARK:#x}"),
            "masquerade fully-random".into(),
        ],
    );
    add(
        MARK_MASQ,
        None,
        vec![format!("meta mark set meta mark | {MASQ_MARK:#x}")],
    );
    let nodeport_match = match &cfg.nodeport_addresses {
        NodePortAddresses::AllLocal => {
            format!("fib daddr type local {ip} daddr != {}", fam.loopback())
        }
        NodePortAddresses::Only(_) => format!("{ip} daddr @{NODEPORT_IPS}"),
    };
    let mut services = Vec::new();
    // ClusterIP traffic from outside the pod network is masqueraded (a port the Service
    // does not serve is rejected in the filter chains anyway)
    let local_cidr = cfg
        .cluster_cidrs
        .iter()
        .find(|c| Family::of(&c.addr) == fam);
    if cfg.masquerade_all {
        services.push(format!("{ip} daddr @{CLUSTER_IPS} jump {MARK_MASQ}"));
    } else if let Some(c) = local_cidr {
        services.push(format!(
            "{ip} daddr @{CLUSTER_IPS} {ip} saddr != {c} jump {MARK_MASQ}"
        ));
    }
    services.push(format!(
        "{ip} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"
    ));
    // plain ClusterIP Services: one lookup picks the endpoint by a random draw
    for proto in ["tcp", "udp", "sctp"] {
        services.push(format!(
            "meta l4proto {proto} dnat to {ip} daddr . meta l4proto . th dport . numgen random mod {DRAW} map @{SERVICE_ENDPOINTS}"
        ));
    }
    services.push(format!(
        "{nodeport_match} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"
    ));
    add(SERVICES, None, services);
    add(
        SERVICE_ENDPOINTS_CHECK,
        None,
        vec![format!(
            "{ip} daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"
        )],
    );
    add(
        NODEPORT_ENDPOINTS_CHECK,
        None,
        vec![format!(
            "{nodeport_match} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"
        )],
    );
    add(
        REJECT,
        None,
        vec![
            "meta l4proto tcp reject with tcp reset".into(),
            "reject".into(),
        ],
    );
    let local: Vec<String> = cfg
        .node_local_ips
        .iter()
        .filter(|a| Family::of(a) == fam)
        .map(IpAddr::to_string)
        .collect();
    let mut check = Vec::new();
    if !local.is_empty() {
        check.push(format!("{ip} daddr {{ {} }} return", local.join(", ")));
    }
    check.push(format!("{ip} daddr @{CLUSTER_IPS} reject"));
    for c in cfg
        .service_cidrs
        .iter()
        .filter(|c| Family::of(&c.addr) == fam)
    {
        check.push(format!("{ip} daddr {c} drop"));
    }
    add(CLUSTER_IPS_CHECK, None, check);
    base_sets(t, cfg);
}

/// The maps and sets of all Services.
fn base_sets(t: &mut Table, cfg: &RulesConfig) {
    let fam = t.family;
    let addr = fam.addr_type();
    t.sets.insert(
        SERVICE_IPS.into(),
        Set::vmap(format!("{addr} . inet_proto . inet_service")),
    );
    t.sets.insert(
        NO_ENDPOINT_SERVICES.into(),
        Set::vmap(format!("{addr} . inet_proto . inet_service")),
    );
    t.sets.insert(
        SERVICE_NODEPORTS.into(),
        Set::vmap("inet_proto . inet_service"),
    );
    t.sets.insert(
        NO_ENDPOINT_NODEPORTS.into(),
        Set::vmap("inet_proto . inet_service"),
    );
    t.sets.insert(CLUSTER_IPS.into(), Set::plain(addr));
    t.sets.insert(
        HAIRPIN_ENDPOINTS.into(),
        Set::plain(format!("{addr} . {addr}")),
    );
    // declared with `tcp dport` where the rules look up `th dport` (the same type): nft
    // 1.0.6 cannot add a rule using a map declared with `th dport` once the map exists
    // ("conflicting protocols specified: tcp vs. th")
    let ip = fam.nft();
    t.sets.insert(
        SERVICE_ENDPOINTS.into(),
        Set::data_intervals(
            format!("{ip} daddr . meta l4proto . tcp dport . numgen random mod {DRAW}"),
            format!("{ip} daddr . tcp dport"),
        ),
    );
    if let NodePortAddresses::Only(ips) = &cfg.nodeport_addresses {
        let mut s = Set::plain(addr);
        for ip in ips.iter().filter(|i| Family::of(i) == fam) {
            s.elements.insert(ip.to_string(), String::new());
        }
        t.sets.insert(NODEPORT_IPS.into(), s);
    }
}

/// The name of an endpoint's sessionAffinity set (`:` of IPv6 addresses is not allowed in
/// nft names).
fn affinity_set(sp: &SvcPort, e: &Endpoint) -> String {
    let ip = e.ip.to_string().replace(':', "_");
    format!("affinity-{}__{ip}/{}", sp.id(), e.port)
}

fn put(t: &mut Table, set: &str, key: String, value: &str) {
    if let Some(s) = t.sets.get_mut(set) {
        s.elements.insert(key, value.to_string());
    }
}

/// A Service: its namespace and name.
pub type ServiceKey = (String, String);

/// The key of a Service.
pub fn service_key(svc: &Service) -> ServiceKey {
    (
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// The key of the Service an EndpointSlice belongs to.
pub fn slice_service(slice: &EndpointSlice) -> Option<ServiceKey> {
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((
        slice.metadata.namespace.clone().unwrap_or_default(),
        svc.clone(),
    ))
}

/// The tables with what does not depend on any Service: base chains, the maps (empty).
pub fn base_tables(cfg: &RulesConfig) -> Vec<Table> {
    [Family::V4, Family::V6]
        .into_iter()
        .map(|f| {
            let mut t = Table::new(f, cfg.table.clone());
            base_chains(&mut t, cfg);
            t
        })
        .collect()
}

/// What one Service adds to the tables, one fragment per family: its chains and sets, and
/// its elements of the shared maps. The tables are the base tables with the fragments of
/// all Services merged (`Table::merge`).
pub fn service_fragment(svc: &Service, slices: &[&EndpointSlice], cfg: &RulesConfig) -> Vec<Table> {
    [Family::V4, Family::V6]
        .into_iter()
        .map(|family| {
            let mut t = Table::new(family, cfg.table.clone());
            base_sets(&mut t, cfg);
            for s in t.sets.values_mut() {
                s.elements.clear();
            }
            t.shared = t.sets.keys().cloned().collect();
            for sp in service_ports(svc, family) {
                if sp
                    .cluster_ips
                    .iter()
                    .all(|a| cfg.node_local_ips.contains(a))
                {
                    // served on the node itself (cluster DNS): left to the local listener
                    continue;
                }
                let eps = port_endpoints(&sp, slices, family, &cfg.node_name);
                service_port_rules(&mut t, &sp, &eps, cfg);
            }
            t
        })
        .collect()
}

/// The EndpointSlices of each Service.
pub fn slices_by_service<'a>(
    slices: &[&'a EndpointSlice],
) -> BTreeMap<ServiceKey, Vec<&'a EndpointSlice>> {
    let mut out: BTreeMap<ServiceKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        if let Some(k) = slice_service(s) {
            out.entry(k).or_default().push(s);
        }
    }
    out
}

/// The desired tables and the fragment of each Service they are made of.
pub fn desired_parts(
    services: &[&Service],
    slices: &[&EndpointSlice],
    cfg: &RulesConfig,
) -> (Vec<Table>, BTreeMap<ServiceKey, Vec<Table>>) {
    let mut tables = base_tables(cfg);
    let by_service = slices_by_service(slices);
    let mut fragments = BTreeMap::new();
    for svc in services {
        let key = service_key(svc);
        let svc_slices = by_service.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let frag = service_fragment(svc, svc_slices, cfg);
        for (t, f) in tables.iter_mut().zip(&frag) {
            t.merge(f);
        }
        fragments.insert(key, frag);
    }
    (tables, fragments)
}

fn service_port_rules(t: &mut Table, sp: &SvcPort, eps: &[Endpoint], cfg: &RulesConfig) {
    let ip = t.family.nft();
    let proto = sp.proto;
    let id = sp.id();
    let cat = categorize(eps, sp.uses_cluster_endpoints(), sp.uses_local_endpoints());
    let cluster_chain = format!("service-{id}");
    let local_chain = format!("local-{id}");
    let external_chain = format!("external-{id}");
    let uses_cluster_chain = !cat.cluster.is_empty() && sp.uses_cluster_endpoints();
    let uses_local_chain = !cat.local.is_empty() && sp.uses_local_endpoints();
    let has_endpoints = cat.any;

    let (internal_chain, has_internal) = if sp.internal_local {
        (&local_chain, uses_local_chain)
    } else {
        (&cluster_chain, has_endpoints && uses_cluster_chain)
    };
    let (external_policy_chain, has_external) = if sp.external_local {
        (&local_chain, uses_local_chain)
    } else {
        (&cluster_chain, has_endpoints && uses_cluster_chain)
    };
    let uses_external_chain = has_endpoints && sp.externally_accessible();

    let reject = format!("goto {REJECT}");
    let (internal_filter, external_filter) = if !has_endpoints {
        (Some(reject.as_str()), Some(reject.as_str()))
    } else {
        (
            (!has_internal).then_some("drop"),
            (!has_external).then_some("drop"),
        )
    };

    // the endpoints: hairpin pairs, affinity sets
    let mut used: BTreeSet<&Endpoint> = BTreeSet::new();
    if uses_cluster_chain {
        used.extend(cat.cluster.iter());
    }
    if uses_local_chain {
        used.extend(cat.local.iter());
    }
    for e in &used {
        put(t, HAIRPIN_ENDPOINTS, format!("{} . {}", e.ip, e.ip), "");
        if let Some(timeout) = sp.affinity {
            t.sets.insert(
                affinity_set(sp, e),
                Set {
                    dynamic_timeout: Some(timeout),
                    ..Set::plain(t.family.addr_type())
                },
            );
        }
    }

    // a plain ClusterIP Service (cluster-wide policy, no affinity, not reached from outside)
    // needs no chain: its endpoints are elements of `service-endpoints`, each owning an equal
    // share of the draw
    let plain = sp.affinity.is_none() && !sp.internal_local && !sp.externally_accessible();

    // the policy chains: affinity, then balancing with one draw per rule, rule k taking
    // 1/(N-k) of what the rules before it left: every endpoint gets 1/N, with no anonymous
    // map and no chain per endpoint (both cost the kernel time that grows with the table:
    // anonymous sets are named by a scan of all sets, and nft lists every chain before each
    // transaction)
    let dnat = |e: &Endpoint| -> String {
        let to = format!("meta l4proto {proto} dnat to {}", addr_port(&e.ip, e.port));
        match sp.affinity {
            Some(_) => format!("update @{} {{ {ip} saddr }} {to}", affinity_set(sp, e)),
            None => to,
        }
    };
    let policy = |eps: &[Endpoint]| -> Chain {
        let mut rules = Vec::new();
        if sp.affinity.is_some() {
            for e in eps {
                rules.push(format!("{ip} saddr @{} {}", affinity_set(sp, e), dnat(e)));
            }
        }
        let n = eps.len();
        for (k, e) in eps.iter().enumerate() {
            if k + 1 < n {
                rules.push(format!("numgen random mod {} == 0 {}", n - k, dnat(e)));
            } else {
                rules.push(dnat(e));
            }
        }
        Chain::regular(rules)
    };
    if uses_cluster_chain && !plain {
        t.chains.insert(cluster_chain.clone(), policy(&cat.cluster));
    }
    if uses_local_chain {
        t.chains.insert(local_chain.clone(), policy(&cat.local));
    }

    // the external chain: NodePorts and external IPs
    if uses_external_chain {
        let mut rules = Vec::new();
        if sp.external_local {
            if uses_cluster_chain {
                if let Some(c) = cfg
                    .cluster_cidrs
                    .iter()
                    .find(|c| Family::of(&c.addr) == t.family)
                {
                    // pod traffic is short-circuited to all endpoints
                    rules.push(format!("{ip} saddr {c} goto {cluster_chain}"));
                }
                // the node's own traffic: its source is a local address, masquerade it
                rules.push(format!("fib saddr type local jump {MARK_MASQ}"));
                rules.push(format!("fib saddr type local goto {cluster_chain}"));
            }
        } else {
            rules.push(format!("jump {MARK_MASQ}"));
        }
        if has_external {
            rules.push(format!("goto {external_policy_chain}"));
        }
        t.chains
            .insert(external_chain.clone(), Chain::regular(rules));
    }

    // the map elements
    for cip in &sp.cluster_ips {
        let key = format!("{cip} . {proto} . {}", sp.port);
        put(t, CLUSTER_IPS, cip.to_string(), "");
        if has_internal && plain {
            let n = cat.cluster.len() as u64;
            for (k, e) in (0u64..).zip(&cat.cluster) {
                let (lo, hi) = (k * DRAW as u64 / n, (k + 1) * DRAW as u64 / n - 1);
                put(
                    t,
                    SERVICE_ENDPOINTS,
                    format!("{key} . {lo}-{hi}"),
                    &format!("{} . {}", e.ip, e.port),
                );
            }
        } else if has_internal {
            put(
                t,
                SERVICE_IPS,
                key.clone(),
                &format!("goto {internal_chain}"),
            );
        }
        if let Some(v) = internal_filter {
            put(t, NO_ENDPOINT_SERVICES, key, v);
        }
    }
    for eip in &sp.external_ips {
        let key = format!("{eip} . {proto} . {}", sp.port);
        if uses_external_chain {
            put(
                t,
                SERVICE_IPS,
                key.clone(),
                &format!("goto {external_chain}"),
            );
        }
        if let Some(v) = external_filter {
            put(t, NO_ENDPOINT_SERVICES, key, v);
        }
    }
    if let Some(np) = sp.node_port {
        let key = format!("{proto} . {np}");
        if uses_external_chain {
            put(
                t,
                SERVICE_NODEPORTS,
                key.clone(),
                &format!("goto {external_chain}"),
            );
        }
        if let Some(v) = external_filter {
            put(t, NO_ENDPOINT_NODEPORTS, key, v);
        }
    }

    if proto == "udp" {
        let mut frontends: BTreeSet<(IpAddr, u16)> = BTreeSet::new();
        for a in sp.cluster_ips.iter().chain(&sp.external_ips) {
            frontends.insert((*a, sp.port));
        }
        t.udp.insert(
            id,
            UdpPort {
                frontends,
                node_port: sp.node_port,
                endpoints: used.iter().map(|e| (e.ip, e.port)).collect(),
            },
        );
    }
}

#[cfg(test)]
mod tests;

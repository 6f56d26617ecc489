//! The cluster zone as a pure function of Services and EndpointSlices, answering as the
//! Kubernetes DNS specification (github.com/kubernetes/dns, docs/specification.md, schema
//! 1.1.0) says:
//!
//! - `<svc>.<ns>.svc.<zone>` A/AAAA: the ClusterIPs; for a headless Service the ready
//!   endpoint addresses; for an ExternalName Service a CNAME.
//! - `<hostname>.<svc>.<ns>.svc.<zone>` A/AAAA for each ready endpoint of a headless
//!   Service, `<hostname>` being the endpoint's `hostname` or its address with dashes
//!   (`10-244-1-5`, CoreDNS' choice of the "unique, system-assigned identifier").
//! - `_<port>._<proto>.<svc>.<ns>.svc.<zone>` SRV for each named port (headless: one per
//!   ready endpoint and named port), targets' addresses in the additional section.
//! - PTR for every ClusterIP and every ready headless endpoint address.
//! - `<a-b-c-d>.<ns>.pod.<zone>` A (and the IPv6 form, AAAA) for any address, as CoreDNS'
//!   `pods insecure`.
//! - SOA and NS at the apex, `ns.dns.<zone>` A/AAAA (the DNS Service's address) and
//!   `dns-version.<zone>` TXT.
//!
//! A name that exists without records of the asked type (also an empty non-terminal such
//! as `svc.<zone>` or `<ns>.svc.<zone>`) answers NOERROR with no records and the SOA in the
//! authority section; a name in the zone that does not exist answers NXDOMAIN with the SOA.
//! Reverse names that are not ours, and every name outside the zone, are left to the
//! upstream resolvers ([`Lookup::Forward`]). Names compare case-insensitively; answers carry
//! the name as asked.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label an EndpointSlice names its Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The schema version `dns-version.<zone>` answers.
const SCHEMA_VERSION: &str = "1.1.0";

/// What the zone is built with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSettings {
    /// The cluster domain, e.g. `cluster.local` (no trailing dot needed).
    pub domain: String,
    /// TTL of every record (also the SOA minimum, i.e. the negative-answer TTL).
    pub ttl: u32,
    /// The address(es) of the DNS Service itself, answered for `ns.dns.<zone>`.
    pub dns_addresses: Vec<IpAddr>,
}

impl ZoneSettings {
    /// `cluster.local`, 5 s, no own address.
    pub fn new(domain: &str) -> Self {
        Self {
            domain: normalize(domain),
            ttl: 5,
            dns_addresses: Vec::new(),
        }
    }
}

/// The records of one owner name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Node {
    a: BTreeSet<Ipv4Addr>,
    aaaa: BTreeSet<Ipv6Addr>,
    /// (port, target) of the SRV records.
    srv: BTreeSet<(u16, String)>,
    cname: Option<String>,
    ptr: BTreeSet<String>,
    txt: Vec<String>,
}

impl Node {
    fn add_ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.a.insert(v4),
            IpAddr::V6(v6) => self.aaaa.insert(v6),
        };
    }
}

/// A finished answer from the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneAnswer {
    /// NXDOMAIN (the name does not exist) rather than NOERROR.
    pub nxdomain: bool,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section: the SOA for negative answers.
    pub authorities: Vec<Record>,
    /// The additional section: addresses of SRV and NS targets.
    pub additionals: Vec<Record>,
}

/// The result of a lookup in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The zone is authoritative for the name: this is the answer.
    Answer(ZoneAnswer),
    /// Not ours: ask the upstream resolvers.
    Forward,
}

/// Every record of the cluster zone, built once per change of Services or EndpointSlices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    settings: ZoneSettings,
    serial: u32,
    /// Owner name (lower case, no trailing dot) → records, zone and reverse names alike.
    nodes: BTreeMap<String, Node>,
    /// Names inside the zone that exist only as ancestors of other names.
    empty_non_terminals: HashSet<String>,
}

/// Lower case, no trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `1.0.96.10.in-addr.arpa` / the nibble form for IPv6.
fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// `10-244-1-5` / `fd00--5`: an address as one DNS label.
fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The address a pod name's first label spells (`10-244-1-5`, `fd00--5`), if any.
fn undashed(label: &str) -> Option<IpAddr> {
    if label.contains('.') || label.contains(':') {
        return None;
    }
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The service's ClusterIPs (`clusterIPs`, else `clusterIP`), parsed; `None` means headless.
fn cluster_ips(svc: &Service) -> Option<Vec<IpAddr>> {
    let spec = svc.spec.as_ref()?;
    let raw: Vec<&str> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    if raw.first() == Some(&"None") {
        return None;
    }
    Some(raw.iter().filter_map(|s| s.parse().ok()).collect())
}

impl Table {
    /// Builds the zone from every Service and EndpointSlice of the cluster. `serial` is the
    /// SOA serial (the caller's generation counter or clock).
    pub fn build<'a>(
        settings: &ZoneSettings,
        serial: u32,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Table {
        let zone = normalize(&settings.domain);
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        let mut ns_node = Node::default();
        for ip in &settings.dns_addresses {
            ns_node.add_ip(*ip);
        }
        nodes.insert(format!("ns.dns.{zone}"), ns_node);
        nodes.insert(
            format!("dns-version.{zone}"),
            Node {
                txt: vec![SCHEMA_VERSION.to_string()],
                ..Node::default()
            },
        );
        nodes.insert(zone.clone(), Node::default());

        // Slices by (namespace, service name).
        let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
        for slice in slices {
            let labels = slice.metadata.labels.as_ref();
            let (Some(ns), Some(svc)) = (
                slice.metadata.namespace.as_ref(),
                labels.and_then(|l| l.get(SERVICE_NAME_LABEL)),
            ) else {
                continue;
            };
            by_service
                .entry((ns.to_ascii_lowercase(), svc.to_ascii_lowercase()))
                .or_default()
                .push(slice);
        }

        for svc in services {
            let (Some(name), Some(ns)) = (&svc.metadata.name, &svc.metadata.namespace) else {
                continue;
            };
            let (name, ns) = (name.to_ascii_lowercase(), ns.to_ascii_lowercase());
            let fqdn = format!("{name}.{ns}.svc.{zone}");
            let spec = svc.spec.clone().unwrap_or_default();
            if spec.type_.as_deref() == Some("ExternalName") {
                let target = spec.external_name.as_deref().map(normalize);
                nodes.entry(fqdn).or_default().cname = target.filter(|t| !t.is_empty());
                continue;
            }
            match cluster_ips(svc) {
                Some(ips) => {
                    let node = nodes.entry(fqdn.clone()).or_default();
                    for ip in &ips {
                        node.add_ip(*ip);
                    }
                    for port in spec.ports.iter().flatten() {
                        let (Some(pname), Ok(number)) = (&port.name, u16::try_from(port.port))
                        else {
                            continue;
                        };
                        if pname.is_empty() {
                            continue;
                        }
                        let proto = port.protocol.as_deref().unwrap_or("TCP");
                        let srv_name = format!(
                            "_{}._{}.{fqdn}",
                            pname.to_ascii_lowercase(),
                            proto.to_ascii_lowercase()
                        );
                        nodes
                            .entry(srv_name)
                            .or_default()
                            .srv
                            .insert((number, fqdn.clone()));
                    }
                    for ip in ips {
                        nodes
                            .entry(reverse_name(ip))
                            .or_default()
                            .ptr
                            .insert(fqdn.clone());
                    }
                }
                None => {
                    nodes.entry(fqdn.clone()).or_default();
                    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
                    let slices = by_service.get(&(ns.clone(), name.clone()));
                    for slice in slices.into_iter().flatten() {
                        headless_slice(&mut nodes, &fqdn, slice, publish_not_ready);
                    }
                }
            }
        }

        let mut empty_non_terminals = HashSet::new();
        let suffix = format!(".{zone}");
        for owner in nodes.keys().filter(|k| k.ends_with(&suffix)) {
            let mut rest = owner.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if parent.len() <= zone.len() {
                    break;
                }
                empty_non_terminals.insert(parent.to_string());
                rest = parent;
            }
        }
        empty_non_terminals.insert(format!("pod.{zone}"));
        empty_non_terminals.insert(format!("svc.{zone}"));

        Table {
            settings: ZoneSettings {
                domain: zone,
                ..settings.clone()
            },
            serial,
            nodes,
            empty_non_terminals,
        }
    }

    /// The cluster domain (lower case, no trailing dot).
    pub fn domain(&self) -> &str {
        &self.settings.domain
    }

    /// True when `name` is the cluster domain or below it.
    pub fn in_zone(&self, name: &Name) -> bool {
        let key = normalize(&name.to_ascii());
        let zone = &self.settings.domain;
        key == *zone || key.ends_with(&format!(".{zone}"))
    }

    /// Answers `qtype` for `qname` from the zone, or says it is not ours.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Lookup {
        let key = normalize(&qname.to_ascii());
        let zone = &self.settings.domain;
        let in_zone = key == *zone || key.ends_with(&format!(".{zone}"));
        if !in_zone {
            return match self.nodes.get(&key) {
                Some(node) if !node.ptr.is_empty() => {
                    Lookup::Answer(self.positive_or_nodata(qname, qtype, node))
                }
                _ => Lookup::Forward,
            };
        }
        if key == *zone {
            return Lookup::Answer(self.apex(qname, qtype));
        }
        if let Some(node) = self.nodes.get(&key) {
            return Lookup::Answer(self.positive_or_nodata(qname, qtype, node));
        }
        if let Some(answer) = self.pod(qname, &key, qtype) {
            return Lookup::Answer(answer);
        }
        if self.empty_non_terminals.contains(&key) {
            return Lookup::Answer(self.negative(false));
        }
        // Every `<anything>.pod.<zone>` is the parent of some pod name.
        if key
            .strip_suffix(&format!(".pod.{zone}"))
            .is_some_and(|ns| !ns.contains('.'))
        {
            return Lookup::Answer(self.negative(false));
        }
        Lookup::Answer(self.negative(true))
    }

    /// `<a-b-c-d>.<ns>.pod.<zone>`.
    fn pod(&self, qname: &Name, key: &str, qtype: RecordType) -> Option<ZoneAnswer> {
        let rest = key.strip_suffix(&format!(".pod.{}", self.settings.domain))?;
        let (label, ns) = rest.split_once('.')?;
        if ns.contains('.') {
            return None;
        }
        let ip = undashed(label)?;
        let mut node = Node::default();
        node.add_ip(ip);
        Some(self.positive_or_nodata(qname, qtype, &node))
    }

    fn ttl(&self) -> u32 {
        self.settings.ttl
    }

    fn name(s: &str) -> Name {
        // Owner and target names come from Kubernetes object names (DNS-1035/1123 labels)
        // and addresses; one that still does not parse is left out as the root.
        Name::from_ascii(format!("{s}.")).unwrap_or_else(|_| Name::root())
    }

    fn soa(&self) -> Record {
        let zone = &self.settings.domain;
        Record::from_rdata(
            Self::name(zone),
            self.ttl(),
            RData::SOA(SOA::new(
                Self::name(&format!("ns.dns.{zone}")),
                Self::name(&format!("hostmaster.{zone}")),
                self.serial,
                7200,
                1800,
                86400,
                self.ttl(),
            )),
        )
    }

    fn ns_records(&self, owner: &Name) -> (Vec<Record>, Vec<Record>) {
        let target = format!("ns.dns.{}", self.settings.domain);
        let ns = Record::from_rdata(
            owner.clone(),
            self.ttl(),
            RData::NS(NS(Self::name(&target))),
        );
        let glue = self
            .nodes
            .get(&target)
            .map(|n| self.address_records(&Self::name(&target), n, RecordType::ANY))
            .unwrap_or_default();
        (vec![ns], glue)
    }

    fn apex(&self, qname: &Name, qtype: RecordType) -> ZoneAnswer {
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        if matches!(qtype, RecordType::SOA | RecordType::ANY) {
            let mut soa = self.soa();
            soa.name = qname.clone();
            answers.push(soa);
        }
        if matches!(qtype, RecordType::NS | RecordType::ANY) {
            let (ns, glue) = self.ns_records(qname);
            answers.extend(ns);
            additionals.extend(glue);
        }
        if answers.is_empty() {
            return self.negative(false);
        }
        ZoneAnswer {
            nxdomain: false,
            answers,
            authorities: Vec::new(),
            additionals,
        }
    }

    fn negative(&self, nxdomain: bool) -> ZoneAnswer {
        ZoneAnswer {
            nxdomain,
            answers: Vec::new(),
            authorities: vec![self.soa()],
            additionals: Vec::new(),
        }
    }

    fn address_records(&self, owner: &Name, node: &Node, qtype: RecordType) -> Vec<Record> {
        let mut out = Vec::new();
        if matches!(qtype, RecordType::A | RecordType::ANY) {
            out.extend(
                node.a
                    .iter()
                    .map(|ip| Record::from_rdata(owner.clone(), self.ttl(), RData::A(A(*ip)))),
            );
        }
        if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
            out.extend(
                node.aaaa.iter().map(|ip| {
                    Record::from_rdata(owner.clone(), self.ttl(), RData::AAAA(AAAA(*ip)))
                }),
            );
        }
        out
    }

    fn positive_or_nodata(&self, qname: &Name, qtype: RecordType, node: &Node) -> ZoneAnswer {
        let ttl = self.ttl();
        if let Some(target) = &node.cname {
            // A CNAME answers every type (the resolver chases the target).
            return ZoneAnswer {
                nxdomain: false,
                answers: vec![Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::CNAME(CNAME(Self::name(target))),
                )],
                authorities: Vec::new(),
                additionals: Vec::new(),
            };
        }
        let mut answers = self.address_records(qname, node, qtype);
        let mut additionals = Vec::new();
        if matches!(qtype, RecordType::SRV | RecordType::ANY) && !node.srv.is_empty() {
            // Equal priority, the weight shared out as CoreDNS does.
            let weight = u16::try_from(100 / node.srv.len()).unwrap_or(1).max(1);
            let mut targets = BTreeSet::new();
            for (port, target) in &node.srv {
                answers.push(Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::SRV(SRV::new(0, weight, *port, Self::name(target))),
                ));
                targets.insert(target);
            }
            for target in targets {
                if let Some(t) = self.nodes.get(target) {
                    additionals.extend(self.address_records(
                        &Self::name(target),
                        t,
                        RecordType::ANY,
                    ));
                }
            }
        }
        if matches!(qtype, RecordType::PTR | RecordType::ANY) {
            answers.extend(node.ptr.iter().map(|target| {
                Record::from_rdata(qname.clone(), ttl, RData::PTR(PTR(Self::name(target))))
            }));
        }
        if matches!(qtype, RecordType::TXT | RecordType::ANY) && !node.txt.is_empty() {
            answers.push(Record::from_rdata(
                qname.clone(),
                ttl,
                RData::TXT(TXT::new(node.txt.clone())),
            ));
        }
        if answers.is_empty() {
            return self.negative(false);
        }
        ZoneAnswer {
            nxdomain: false,
            answers,
            authorities: Vec::new(),
            additionals,
        }
    }
}

/// The records of one EndpointSlice of a headless Service with FQDN `fqdn`.
fn headless_slice(
    nodes: &mut BTreeMap<String, Node>,
    fqdn: &str,
    slice: &EndpointSlice,
    publish_not_ready: bool,
) {
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return;
    }
    let ports: Vec<(String, u16)> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let name = p.name.as_deref().filter(|n| !n.is_empty())?;
            let port = u16::try_from(p.port?).ok()?;
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            Some((
                format!(
                    "_{}._{}.{fqdn}",
                    name.to_ascii_lowercase(),
                    proto.to_ascii_lowercase()
                ),
                port,
            ))
        })
        .collect();
    for ep in &slice.endpoints {
        let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        if !ready && !publish_not_ready {
            continue;
        }
        let ips: Vec<IpAddr> = ep.addresses.iter().filter_map(|a| a.parse().ok()).collect();
        let Some(first) = ips.first() else {
            continue;
        };
        let hostname = ep
            .hostname
            .as_deref()
            .filter(|h| !h.is_empty())
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| dashed(*first));
        let host_fqdn = format!("{hostname}.{fqdn}");
        for ip in &ips {
            if let Some(node) = nodes.get_mut(fqdn) {
                node.add_ip(*ip);
            }
            nodes.entry(host_fqdn.clone()).or_default().add_ip(*ip);
            nodes
                .entry(reverse_name(*ip))
                .or_default()
                .ptr
                .insert(host_fqdn.clone());
        }
        for (srv_name, port) in &ports {
            nodes
                .entry(srv_name.clone())
                .or_default()
                .srv
                .insert((*port, host_fqdn.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn fixture() -> Table {
        let services = vec![
            svc(json!({
                "metadata": {"name": "Web", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00::20"],
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                   {"name": "dns", "port": 53, "protocol": "UDP"},
                                   {"port": 9000}]}
            })),
            svc(json!({
                "metadata": {"name": "db", "namespace": "prod"},
                "spec": {"clusterIP": "None",
                         "ports": [{"name": "pg", "port": 5432}]}
            })),
            svc(json!({
                "metadata": {"name": "empty", "namespace": "prod"},
                "spec": {"clusterIP": "None"}
            })),
            svc(json!({
                "metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "example.org."}
            })),
            svc(json!({
                "metadata": {"name": "pending", "namespace": "default"},
                "spec": {"type": "ClusterIP"}
            })),
        ];
        let slices = vec![
            slice(json!({
                "metadata": {"name": "db-abc", "namespace": "prod",
                             "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4",
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
                    {"addresses": ["10.244.2.7"], "conditions": {}},
                    {"addresses": ["10.244.3.9"], "hostname": "db-2", "conditions": {"ready": false}}
                ]
            })),
            // Another service's slice in the same namespace: ignored for db.
            slice(json!({
                "metadata": {"name": "other-x", "namespace": "prod",
                             "labels": {"kubernetes.io/service-name": "other"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.244.9.9"]}]
            })),
        ];
        let mut settings = ZoneSettings::new("cluster.local.");
        settings.dns_addresses = vec!["10.96.0.10".parse().unwrap()];
        Table::build(&settings, 7, &services, &slices)
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// The answer as text lines "name ttl type data", for comparison.
    fn lines(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
            .collect()
    }

    #[derive(Debug, PartialEq)]
    enum Want {
        /// NOERROR with these answers.
        Records(&'static [&'static str]),
        /// NOERROR, no answers, SOA in authority.
        NoData,
        NxDomain,
        Forward,
    }

    #[test]
    fn answers_as_the_specification() {
        use RecordType::*;
        use Want::*;
        let table = fixture();
        let cases: &[(&str, RecordType, Want)] = &[
            (
                "web.default.svc.cluster.local.",
                A,
                Records(&["web.default.svc.cluster.local. 5 A 10.96.0.20"]),
            ),
            // Case-insensitive, the name as asked comes back.
            (
                "WEB.Default.svc.cluster.local.",
                A,
                Records(&["WEB.Default.svc.cluster.local. 5 A 10.96.0.20"]),
            ),
            (
                "web.default.svc.cluster.local.",
                AAAA,
                Records(&["web.default.svc.cluster.local. 5 AAAA fd00::20"]),
            ),
            ("web.default.svc.cluster.local.", MX, NoData),
            (
                "_http._tcp.web.default.svc.cluster.local.",
                SRV,
                Records(&[
                    "_http._tcp.web.default.svc.cluster.local. 5 SRV 0 100 80 web.default.svc.cluster.local.",
                ]),
            ),
            (
                "_dns._udp.web.default.svc.cluster.local.",
                SRV,
                Records(&[
                    "_dns._udp.web.default.svc.cluster.local. 5 SRV 0 100 53 web.default.svc.cluster.local.",
                ]),
            ),
            ("_http._udp.web.default.svc.cluster.local.", SRV, NxDomain),
            ("_http._tcp.web.default.svc.cluster.local.", A, NoData),
            // Empty non-terminals exist.
            ("_tcp.web.default.svc.cluster.local.", SRV, NoData),
            ("default.svc.cluster.local.", A, NoData),
            ("svc.cluster.local.", A, NoData),
            ("nope.default.svc.cluster.local.", A, NxDomain),
            ("web.nope.svc.cluster.local.", A, NxDomain),
            ("x.web.default.svc.cluster.local.", A, NxDomain),
            ("pending.default.svc.cluster.local.", A, NoData),
            // Headless: the ready endpoints (ready unset counts as ready).
            (
                "db.prod.svc.cluster.local.",
                A,
                Records(&[
                    "db.prod.svc.cluster.local. 5 A 10.244.1.5",
                    "db.prod.svc.cluster.local. 5 A 10.244.2.7",
                ]),
            ),
            (
                "db-0.db.prod.svc.cluster.local.",
                A,
                Records(&["db-0.db.prod.svc.cluster.local. 5 A 10.244.1.5"]),
            ),
            (
                "10-244-2-7.db.prod.svc.cluster.local.",
                A,
                Records(&["10-244-2-7.db.prod.svc.cluster.local. 5 A 10.244.2.7"]),
            ),
            ("db-2.db.prod.svc.cluster.local.", A, NxDomain),
            (
                "_pg._tcp.db.prod.svc.cluster.local.",
                SRV,
                Records(&[
                    "_pg._tcp.db.prod.svc.cluster.local. 5 SRV 0 50 5432 10-244-2-7.db.prod.svc.cluster.local.",
                    "_pg._tcp.db.prod.svc.cluster.local. 5 SRV 0 50 5432 db-0.db.prod.svc.cluster.local.",
                ]),
            ),
            ("empty.prod.svc.cluster.local.", A, NoData),
            ("other.prod.svc.cluster.local.", A, NxDomain),
            (
                "ext.default.svc.cluster.local.",
                A,
                Records(&["ext.default.svc.cluster.local. 5 CNAME example.org."]),
            ),
            // PTR: ClusterIPs and headless endpoints.
            (
                "20.0.96.10.in-addr.arpa.",
                PTR,
                Records(&["20.0.96.10.in-addr.arpa. 5 PTR web.default.svc.cluster.local."]),
            ),
            (
                "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
                PTR,
                Records(&[
                    "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 5 PTR web.default.svc.cluster.local.",
                ]),
            ),
            (
                "5.1.244.10.in-addr.arpa.",
                PTR,
                Records(&["5.1.244.10.in-addr.arpa. 5 PTR db-0.db.prod.svc.cluster.local."]),
            ),
            ("9.3.244.10.in-addr.arpa.", PTR, Forward),
            ("20.0.96.10.in-addr.arpa.", A, NoData),
            // Pods.
            (
                "10-244-1-5.default.pod.cluster.local.",
                A,
                Records(&["10-244-1-5.default.pod.cluster.local. 5 A 10.244.1.5"]),
            ),
            (
                "fd00--7.default.pod.cluster.local.",
                AAAA,
                Records(&["fd00--7.default.pod.cluster.local. 5 AAAA fd00::7"]),
            ),
            ("10-244-1-5.default.pod.cluster.local.", AAAA, NoData),
            ("10-244-1-500.default.pod.cluster.local.", A, NxDomain),
            ("x.10-244-1-5.default.pod.cluster.local.", A, NxDomain),
            ("default.pod.cluster.local.", A, NoData),
            // Apex, NS, version.
            (
                "cluster.local.",
                SOA,
                Records(&[
                    "cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local. 7 7200 1800 86400 5",
                ]),
            ),
            (
                "cluster.local.",
                NS,
                Records(&["cluster.local. 5 NS ns.dns.cluster.local."]),
            ),
            ("cluster.local.", A, NoData),
            (
                "ns.dns.cluster.local.",
                A,
                Records(&["ns.dns.cluster.local. 5 A 10.96.0.10"]),
            ),
            (
                "dns-version.cluster.local.",
                TXT,
                Records(&["dns-version.cluster.local. 5 TXT 1.1.0"]),
            ),
            // Not ours.
            ("example.org.", A, Forward),
            ("local.", SOA, Forward),
            ("xcluster.local.", A, Forward),
        ];
        for (name, qtype, want) in cases {
            let got = match table.lookup(&n(name), *qtype) {
                Lookup::Forward => Forward,
                Lookup::Answer(a) if a.nxdomain => {
                    assert!(a.answers.is_empty(), "{name} {qtype}");
                    assert_eq!(lines(&a.authorities), [lines(&[table.soa()])[0].clone()]);
                    NxDomain
                }
                Lookup::Answer(a) if a.answers.is_empty() => {
                    assert_eq!(a.authorities.len(), 1, "{name} {qtype}: SOA");
                    assert_eq!(a.authorities[0].record_type(), SOA);
                    NoData
                }
                Lookup::Answer(a) => {
                    let got = lines(&a.answers);
                    let Records(want) = want else {
                        panic!("{name} {qtype}: got {got:?}, want {want:?}");
                    };
                    assert_eq!(got, *want, "{name} {qtype}");
                    continue;
                }
            };
            assert_eq!(&got, want, "{name} {qtype}");
        }
    }

    #[test]
    fn srv_and_ns_answers_carry_their_targets_addresses() {
        let table = fixture();
        let Lookup::Answer(a) =
            table.lookup(&n("_pg._tcp.db.prod.svc.cluster.local."), RecordType::SRV)
        else {
            panic!("not ours");
        };
        assert_eq!(
            lines(&a.additionals),
            [
                "10-244-2-7.db.prod.svc.cluster.local. 5 A 10.244.2.7",
                "db-0.db.prod.svc.cluster.local. 5 A 10.244.1.5"
            ]
        );
        let Lookup::Answer(a) = table.lookup(
            &n("_http._tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
        ) else {
            panic!("not ours");
        };
        assert_eq!(
            lines(&a.additionals),
            [
                "web.default.svc.cluster.local. 5 A 10.96.0.20",
                "web.default.svc.cluster.local. 5 AAAA fd00::20"
            ]
        );
        let Lookup::Answer(a) = table.lookup(&n("cluster.local."), RecordType::NS) else {
            panic!("not ours");
        };
        assert_eq!(
            lines(&a.additionals),
            ["ns.dns.cluster.local. 5 A 10.96.0.10"]
        );
    }

    #[test]
    fn dual_stack_headless_answers_a_and_aaaa_from_both_slices() {
        let services = vec![svc(json!({
            "metadata": {"name": "db", "namespace": "prod"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"],
                     "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"],
                     "ports": [{"name": "pg", "port": 5432}]}
        }))];
        let slices = vec![
            slice(json!({
                "metadata": {"name": "db-v4", "namespace": "prod",
                             "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4",
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["10.244.1.5"], "hostname": "db-0",
                               "conditions": {"ready": true}}]
            })),
            slice(json!({
                "metadata": {"name": "db-v6", "namespace": "prod",
                             "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv6",
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["fd00:10:244:1::5"], "hostname": "db-0",
                               "conditions": {"ready": true}}]
            })),
        ];
        let table = Table::build(&ZoneSettings::new("cluster.local."), 7, &services, &slices);
        let cases = [
            (
                "db.prod.svc.cluster.local.",
                RecordType::A,
                vec!["db.prod.svc.cluster.local. 5 A 10.244.1.5"],
            ),
            (
                "db.prod.svc.cluster.local.",
                RecordType::AAAA,
                vec!["db.prod.svc.cluster.local. 5 AAAA fd00:10:244:1::5"],
            ),
            (
                "db-0.db.prod.svc.cluster.local.",
                RecordType::AAAA,
                vec!["db-0.db.prod.svc.cluster.local. 5 AAAA fd00:10:244:1::5"],
            ),
        ];
        for (name, qtype, want) in cases {
            let Lookup::Answer(a) = table.lookup(&n(name), qtype) else {
                panic!("{name} not ours");
            };
            assert_eq!(lines(&a.answers), want, "{name} {qtype}");
        }
    }

    #[test]
    fn ttl_and_domain_are_settings() {
        let services = vec![svc(json!({
            "metadata": {"name": "a", "namespace": "b"},
            "spec": {"clusterIP": "10.0.0.1"}
        }))];
        let settings = ZoneSettings {
            domain: "Corp.Example".into(),
            ttl: 30,
            dns_addresses: vec![],
        };
        let table = Table::build(&settings, 1, &services, &[]);
        let Lookup::Answer(a) = table.lookup(&n("a.b.svc.corp.example."), RecordType::A) else {
            panic!("not ours");
        };
        assert_eq!(lines(&a.answers), ["a.b.svc.corp.example. 30 A 10.0.0.1"]);
        assert_eq!(
            table.lookup(&n("a.b.svc.cluster.local."), RecordType::A),
            Lookup::Forward
        );
        let Lookup::Answer(a) = table.lookup(&n("zz.corp.example."), RecordType::A) else {
            panic!("not ours");
        };
        assert!(a.nxdomain);
        assert_eq!(a.authorities[0].ttl, 30);
    }

    #[test]
    fn publish_not_ready_addresses_includes_unready_endpoints() {
        let services = vec![svc(json!({
            "metadata": {"name": "h", "namespace": "n"},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": true}
        }))];
        let slices = vec![slice(json!({
            "metadata": {"name": "h-1", "namespace": "n",
                         "labels": {"kubernetes.io/service-name": "h"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": false}}]
        }))];
        let table = Table::build(&ZoneSettings::new("cluster.local"), 1, &services, &slices);
        let Lookup::Answer(a) = table.lookup(&n("h.n.svc.cluster.local."), RecordType::A) else {
            panic!("not ours");
        };
        assert_eq!(lines(&a.answers), ["h.n.svc.cluster.local. 5 A 10.1.0.1"]);
    }

    #[test]
    fn pod_labels_parse_both_families() {
        let cases = [
            ("10-0-0-1", Some("10.0.0.1")),
            ("fd00--1", Some("fd00::1")),
            ("2001-db8-0-0-0-0-0-1", Some("2001:db8::1")),
            ("10-0-0", None),
            ("web", None),
            ("", None),
        ];
        for (label, want) in cases {
            assert_eq!(undashed(label), want.map(|w| w.parse().unwrap()), "{label}");
        }
    }
}

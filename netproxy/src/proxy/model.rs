//! The typed model of one nftables table: chains with their rules (nft rule text, as
//! kube-proxy's knftables writes them), sets and verdict maps with their elements. Rendering
//! a whole table, for a full resync, lives here; the difference of two tables is `diff.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

/// Elements per `add element` / `delete element` statement: nft parses one statement with
/// many elements far faster than many statements, and a statement stays a bounded size.
pub const ELEMENT_BATCH: usize = 1000;

/// The address family of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `table ip`.
    V4,
    /// `table ip6`.
    V6,
}

impl Family {
    /// The nft table family (`ip`, `ip6`), also the prefix of `ip daddr`.
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    /// The nft type of an address of this family.
    pub fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }

    /// Loopback destinations, never NodePorts.
    pub fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1",
        }
    }

    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The EndpointSlice `addressType` of this family.
    pub fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.nft())
    }
}

/// `ip:port` as nft's `dnat to` writes it (`[ip6]:port` for IPv6).
pub fn addr_port(ip: &IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// The hook of a base chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// `nat` or `filter`.
    pub kind: &'static str,
    /// `prerouting`, `input`, `forward`, `output`, `postrouting`.
    pub hook: &'static str,
    /// The priority (nat output needs -100 with nft 1.0.6).
    pub priority: i32,
}

/// One chain: a base chain when it has a hook, else a regular chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// The hook of a base chain.
    pub hook: Option<Hook>,
    /// Rules in order, nft syntax.
    pub rules: Vec<String>,
}

impl Chain {
    /// A regular chain with these rules.
    pub fn regular(rules: Vec<String>) -> Chain {
        Chain { hook: None, rules }
    }
}

/// A set, a verdict map or a data map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    /// The key type (`ipv4_addr . inet_proto . inet_service`); for a data map the key's
    /// expression (`typeof ip daddr . th dport`).
    pub key: String,
    /// A verdict map (elements carry a verdict) rather than a set.
    pub verdict_map: bool,
    /// A data map: the expression of its values (`ip daddr . th dport`), keys and values
    /// declared with `typeof`.
    pub data: Option<String>,
    /// Keys may hold ranges (`flags interval`).
    pub interval: bool,
    /// Elements the packet path adds with a timeout (`update @set`), in seconds.
    pub dynamic_timeout: Option<u32>,
    /// Elements we own: key → verdict (empty for sets).
    pub elements: BTreeMap<String, String>,
    /// In a shared set of a whole table: elements that more than one fragment put there,
    /// with how many more (a pod behind two Services is one hairpin element); the element
    /// goes when its last fragment does.
    pub extra_owners: BTreeMap<String, u32>,
}

impl Set {
    /// A verdict map keyed on `key`.
    pub fn vmap(key: impl Into<String>) -> Set {
        Set {
            key: key.into(),
            verdict_map: true,
            data: None,
            interval: false,
            dynamic_timeout: None,
            elements: BTreeMap::new(),
            extra_owners: BTreeMap::new(),
        }
    }

    /// A plain set keyed on `key`.
    pub fn plain(key: impl Into<String>) -> Set {
        Set {
            key: key.into(),
            verdict_map: false,
            data: None,
            interval: false,
            dynamic_timeout: None,
            elements: BTreeMap::new(),
            extra_owners: BTreeMap::new(),
        }
    }

    /// A map from the values of the expression `key` to those of `value`, whose keys may
    /// hold ranges.
    pub fn data_intervals(key: impl Into<String>, value: impl Into<String>) -> Set {
        Set {
            data: Some(value.into()),
            interval: true,
            ..Set::plain(key)
        }
    }

    fn is_map(&self) -> bool {
        self.verdict_map || self.data.is_some()
    }

    /// `set` or `map`.
    pub fn keyword(&self) -> &'static str {
        if self.is_map() { "map" } else { "set" }
    }

    /// The declaration body, `{ type …; }`.
    pub fn decl(&self) -> String {
        let mut s = match &self.data {
            Some(value) => format!("{{ typeof {} : {value}", self.key),
            None => format!("{{ type {}", self.key),
        };
        if self.verdict_map {
            s.push_str(" : verdict");
        }
        s.push(';');
        if self.interval {
            s.push_str(" flags interval;");
        }
        if let Some(t) = self.dynamic_timeout {
            s.push_str(&format!(" flags dynamic,timeout; timeout {t}s;"));
        }
        s.push_str(" }");
        s
    }

    /// Whether two sets have the same declaration (elements aside).
    pub fn same_decl(&self, other: &Set) -> bool {
        self.key == other.key
            && self.verdict_map == other.verdict_map
            && self.data == other.data
            && self.interval == other.interval
            && self.dynamic_timeout == other.dynamic_timeout
    }

    /// One element as `add element` writes it.
    pub fn element(&self, key: &str, value: &str) -> String {
        if self.is_map() {
            format!("{key} : {value}")
        } else {
            key.to_string()
        }
    }
}

/// A UDP Service port as the conntrack cleanup needs it: the addresses it is reached on and
/// the endpoints its rules send to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpPort {
    /// ClusterIPs and external IPs with their port.
    pub frontends: BTreeSet<(IpAddr, u16)>,
    /// The NodePort, if any.
    pub node_port: Option<u16>,
    /// Endpoint addresses the rules DNAT to.
    pub endpoints: BTreeSet<(IpAddr, u16)>,
}

/// One table, the whole desired state of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// The family.
    pub family: Family,
    /// The table name (`skiff`).
    pub name: String,
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Sets and maps by name.
    pub sets: BTreeMap<String, Set>,
    /// UDP Service ports by service port name (not rendered: for conntrack cleanup).
    pub udp: BTreeMap<String, UdpPort>,
    /// In the fragment of a Service: the sets it shares with the other Services (the
    /// table's maps), of which it owns only its elements. Empty in a whole table.
    pub shared: BTreeSet<String>,
}

impl Table {
    /// An empty table.
    pub fn new(family: Family, name: impl Into<String>) -> Table {
        Table {
            family,
            name: name.into(),
            chains: BTreeMap::new(),
            sets: BTreeMap::new(),
            udp: BTreeMap::new(),
            shared: BTreeSet::new(),
        }
    }

    /// Adds a fragment (the chains, sets, elements and UDP ports of some Services) to this
    /// table. A set the fragment shares with the table (a map of all Services) gets the
    /// fragment's elements; any other name is the fragment's own.
    pub fn merge(&mut self, frag: &Table) {
        for (n, c) in &frag.chains {
            self.chains.insert(n.clone(), c.clone());
        }
        for (n, s) in &frag.sets {
            match self.sets.get_mut(n) {
                Some(own) if own.same_decl(s) && frag.shares(n) => {
                    for (k, v) in &s.elements {
                        if own.elements.insert(k.clone(), v.clone()).is_some() {
                            *own.extra_owners.entry(k.clone()).or_insert(0) += 1;
                        }
                    }
                }
                _ => {
                    self.sets.insert(n.clone(), s.clone());
                }
            }
        }
        for (n, u) in &frag.udp {
            self.udp.insert(n.clone(), u.clone());
        }
    }

    /// Takes a fragment merged earlier out of this table again.
    pub fn unmerge(&mut self, frag: &Table) {
        for n in frag.chains.keys() {
            self.chains.remove(n);
        }
        for (n, s) in &frag.sets {
            if frag.shares(n) {
                if let Some(own) = self.sets.get_mut(n) {
                    for k in s.elements.keys() {
                        match own.extra_owners.get_mut(k) {
                            Some(1) => {
                                own.extra_owners.remove(k);
                            }
                            Some(c) => *c -= 1,
                            None => {
                                own.elements.remove(k);
                            }
                        }
                    }
                }
            } else {
                self.sets.remove(n);
            }
        }
        for n in frag.udp.keys() {
            self.udp.remove(n);
        }
    }

    /// Whether the set `name` of this fragment is one it shares with other fragments: the
    /// fragments of Services declare the table's shared maps without elements of their own
    /// (`shared` lists them).
    fn shares(&self, name: &str) -> bool {
        self.shared.contains(name)
    }

    /// The part of this table that a fragment touches: its chains and sets, and of the
    /// shared sets only the fragment's keys. Diffing two such parts gives the statements
    /// a diff of the whole tables gives for those names.
    pub fn part(&self, names: &Table) -> Table {
        let mut out = Table::new(self.family, self.name.clone());
        for n in names.chains.keys() {
            if let Some(c) = self.chains.get(n) {
                out.chains.insert(n.clone(), c.clone());
            }
        }
        for (n, s) in &names.sets {
            let Some(own) = self.sets.get(n) else {
                continue;
            };
            if names.shares(n) {
                let mut part = Set {
                    key: own.key.clone(),
                    verdict_map: own.verdict_map,
                    data: own.data.clone(),
                    interval: own.interval,
                    dynamic_timeout: own.dynamic_timeout,
                    elements: BTreeMap::new(),
                    extra_owners: BTreeMap::new(),
                };
                for k in s.elements.keys() {
                    if let Some(v) = own.elements.get(k) {
                        part.elements.insert(k.clone(), v.clone());
                    }
                }
                out.sets.insert(n.clone(), part);
            } else {
                out.sets.insert(n.clone(), own.clone());
            }
        }
        for n in names.udp.keys() {
            if let Some(u) = self.udp.get(n) {
                out.udp.insert(n.clone(), u.clone());
            }
        }
        out
    }

    /// `ip skiff`.
    pub fn id(&self) -> String {
        format!("{} {}", self.family.nft(), self.name)
    }

    /// `add chain` for one chain.
    pub fn add_chain(&self, name: &str, chain: &Chain) -> String {
        match &chain.hook {
            Some(h) => format!(
                "add chain {} {name} {{ type {} hook {} priority {}; policy accept; }}",
                self.id(),
                h.kind,
                h.hook,
                h.priority
            ),
            None => format!("add chain {} {name}", self.id()),
        }
    }

    /// `add rule` statements of one chain.
    pub fn add_rules(&self, name: &str, chain: &Chain, out: &mut Vec<String>) {
        for r in &chain.rules {
            out.push(format!("add rule {} {name} {r}", self.id()));
        }
    }

    /// `add set` / `add map` for one set.
    pub fn add_set(&self, name: &str, set: &Set) -> String {
        format!("add {} {} {name} {}", set.keyword(), self.id(), set.decl())
    }

    /// `add element` statements, batched.
    pub fn add_elements<'a>(
        &self,
        name: &str,
        set: &Set,
        elements: impl IntoIterator<Item = (&'a String, &'a String)>,
        out: &mut Vec<String>,
    ) {
        let items: Vec<String> = elements
            .into_iter()
            .map(|(k, v)| set.element(k, v))
            .collect();
        for chunk in items.chunks(ELEMENT_BATCH) {
            out.push(format!(
                "add element {} {name} {{ {} }}",
                self.id(),
                chunk.join(", ")
            ));
        }
    }

    /// `delete element` statements (keys only), batched.
    pub fn delete_elements<'a>(
        &self,
        name: &str,
        keys: impl IntoIterator<Item = &'a String>,
        out: &mut Vec<String>,
    ) {
        let keys: Vec<&str> = keys.into_iter().map(String::as_str).collect();
        for chunk in keys.chunks(ELEMENT_BATCH) {
            out.push(format!(
                "delete element {} {name} {{ {} }}",
                self.id(),
                chunk.join(", ")
            ));
        }
    }

    /// The statements that replace whatever table of this name exists with this one:
    /// `add table` (so the delete cannot fail), `delete table`, then everything. Chains come
    /// before sets, sets before rules (rules refer to both), elements last.
    pub fn render_full(&self, out: &mut Vec<String>) {
        out.push(format!("add table {}", self.id()));
        out.push(format!("delete table {}", self.id()));
        out.push(format!("add table {}", self.id()));
        for (name, chain) in &self.chains {
            out.push(self.add_chain(name, chain));
        }
        for (name, set) in &self.sets {
            out.push(self.add_set(name, set));
        }
        for (name, chain) in &self.chains {
            self.add_rules(name, chain, out);
        }
        for (name, set) in &self.sets {
            self.add_elements(name, set, &set.elements, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_declarations() {
        let cases = [
            (
                Set::vmap("ipv4_addr . inet_proto . inet_service"),
                "{ type ipv4_addr . inet_proto . inet_service : verdict; }",
            ),
            (Set::plain("ipv4_addr"), "{ type ipv4_addr; }"),
            (
                Set::data_intervals("ip daddr . th dport", "ip daddr"),
                "{ typeof ip daddr . th dport : ip daddr; flags interval; }",
            ),
            (
                Set {
                    dynamic_timeout: Some(10800),
                    ..Set::plain("ipv6_addr")
                },
                "{ type ipv6_addr; flags dynamic,timeout; timeout 10800s; }",
            ),
        ];
        for (set, want) in cases {
            assert_eq!(set.decl(), want);
        }
    }

    #[test]
    fn elements_are_batched() {
        let t = Table::new(Family::V4, "skiff");
        let mut set = Set::plain("ipv4_addr");
        for i in 0..(ELEMENT_BATCH + 5) {
            set.elements
                .insert(format!("10.0.{}.{}", i / 256, i % 256), String::new());
        }
        let mut out = Vec::new();
        t.add_elements("s", &set, &set.elements, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out[0].starts_with("add element ip skiff s { 10.0."));
        assert_eq!(out[1].matches(", ").count(), 4);
    }

    #[test]
    fn addresses_with_ports() {
        assert_eq!(addr_port(&"10.1.2.3".parse().unwrap(), 80), "10.1.2.3:80");
        assert_eq!(addr_port(&"fd00::1".parse().unwrap(), 53), "[fd00::1]:53");
    }
}

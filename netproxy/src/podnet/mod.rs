//! The pod network of one node, as the bridge CNI plugin with host-local IPAM and flannel's
//! host-gw backend lay it out:
//!
//! - a bridge (`skiff0` by default) holding each podCIDR's first address as the pods'
//!   gateway (dual-stack: one IPv4 and one IPv6 podCIDR, or an IPv6 one alone); forwarding
//!   of those families on in the node's namespace; pod traffic leaving the cluster CIDR
//!   masqueraded ([`nft`]);
//! - per pod a veth pair: the host end (named from the pod uid, [`host_veth_name`]) on the
//!   bridge with hairpin on, the other end moved into the pod's namespace as `eth0` with one
//!   address from each podCIDR ([`ipam`]) and a default route per family via the gateway;
//! - a route to every other node's podCIDRs via its InternalIP of that family ([`routes`]).
//!
//! All netlink work runs on threads that joined the namespace concerned ([`netns`]).

pub mod cni;
pub mod hostport;
pub mod ipam;
pub mod local;
pub mod netns;
pub mod nft;
pub mod routes;
pub mod vxlan;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use futures_util::TryStreamExt;
use ipnet::{IpNet, Ipv4Net};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteProtocol};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

pub use hostport::{HostPorts, PortMapping};
pub use ipam::Ipam;
pub use netns::Netns;
pub use routes::NodeRoute;
pub use vxlan::VtepPeer;

/// Errors of the pod network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or namespace operation failed.
    #[error("cannot {what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `setns` failed.
    #[error("cannot enter the network namespace {netns}")]
    Setns {
        /// The namespace.
        netns: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// A netlink request failed.
    #[error("cannot {what}")]
    Netlink {
        /// The request.
        what: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// A link that must exist does not.
    #[error("no link {name} in the network namespace")]
    NoLink {
        /// Its name.
        name: String,
    },
    /// Every address of the podCIDR is taken.
    #[error("no free address left in {cidr}")]
    Exhausted {
        /// The podCIDR.
        cidr: IpNet,
    },
    /// The podCIDR has no room for a gateway and pods.
    #[error("the pod CIDR {cidr} is too small (a /30 or /126 at most)")]
    CidrTooSmall {
        /// The podCIDR.
        cidr: IpNet,
    },
    /// The podCIDRs are not one or two blocks of different families.
    #[error("the pod CIDRs {cidrs} are not one block, or one IPv4 and one IPv6 block")]
    PodCidrs {
        /// The CIDRs given.
        cidrs: String,
    },
    /// The VXLAN overlay needs an IPv4 podCIDR.
    #[error("the VXLAN overlay carries IPv4 only, and the node has no IPv4 pod CIDR")]
    VxlanNeedsIpv4,
    /// A program could not be run.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `nft -f -` refused the ruleset.
    #[error("nft failed: {stderr}")]
    Nft {
        /// What nft said.
        stderr: String,
    },
    /// No link holds the address the VXLAN device is to be bound to.
    #[error("no link in the node's namespace holds {ip} (the VXLAN device's local address)")]
    NoNodeAddress {
        /// The node's InternalIP.
        ip: Ipv4Addr,
    },
    /// hostPorts of a pod that has no address.
    #[error("pod {pod_uid} has no address for its host ports")]
    NotAttached {
        /// The pod.
        pod_uid: String,
    },
    /// A thread working in a namespace panicked.
    #[error("a network namespace thread panicked")]
    Thread,
    /// A lock was poisoned by a panic.
    #[error("the address allocator's lock is poisoned")]
    Poisoned,
}

/// The pod network's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let what = what.into();
    move |source| Error::Netlink { what, source }
}

/// The errno of a netlink error answer (positive), if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// The host end of a pod's veth: `veth` and 11 hex digits of a FNV-1a hash of the pod uid,
/// so it is stable across agent restarts, unique in practice and fits IFNAMSIZ (15).
pub fn host_veth_name(pod_uid: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pod_uid.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("veth{:011x}", h >> 20)
}

/// What a node's bridge network is made from.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The bridge's name (default `skiff0`).
    pub bridge: String,
    /// This node's `spec.podCIDRs` in the Node's order: one block, or one IPv4 and one
    /// IPv6 block. Pods get one address of each, in this order.
    pub pod_cidrs: Vec<IpNet>,
    /// The whole cluster's pod CIDRs, one per family (pod traffic leaving those of its
    /// family is masqueraded).
    pub cluster_cidrs: Vec<IpNet>,
    /// MTU of the bridge and both veth ends.
    pub mtu: u32,
    /// Where the address records live (the agent's `<root-dir>/podnet`).
    pub state_dir: PathBuf,
    /// The node's network namespace (`None`: the caller's own).
    pub node_netns: Option<PathBuf>,
    /// The VXLAN overlay bound to this InternalIP ([`vxlan`]; `None`: host-gw routes). The
    /// pods' MTU is then at most the VXLAN device's.
    pub vxlan: Option<Ipv4Addr>,
}

/// Defaults of the bridge network.
pub mod defaults {
    /// The bridge's name.
    pub const BRIDGE: &str = "skiff0";
    /// The cluster CIDR.
    pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
    /// The MTU.
    pub const MTU: u32 = 1500;
}

/// One podCIDR of the node: its gateway and its address records.
#[derive(Debug)]
struct Block {
    cidr: IpNet,
    gateway: IpAddr,
    ipam: Ipam,
}

/// One node's bridge network.
#[derive(Debug)]
pub struct BridgeNetwork {
    cfg: BridgeConfig,
    blocks: Vec<Block>,
    hostports: HostPorts,
    /// The pods' MTU: `cfg.mtu`, lowered to the VXLAN device's by `setup`.
    mtu: AtomicU32,
}

/// One address of a pod: the address, its prefix length and the gateway of its family.
#[derive(Debug, Clone, Copy)]
struct PodAddress {
    ip: IpAddr,
    prefix: u8,
    gateway: IpAddr,
}

/// Pod-side netlink work: loopback up, a fresh veth `eth0` ↔ `host`, the host end moved to
/// the node's namespace, `eth0` addressed (IPv6 without duplicate address detection, so the
/// address is usable at once), up, with a default route per family via its gateway.
async fn pod_side(
    h: Handle,
    host: String,
    node: std::fs::File,
    addrs: Vec<PodAddress>,
    mtu: u32,
) -> Result<()> {
    if let Some(lo) = link_index(&h, "lo").await? {
        h.link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(nl("set lo up"))?;
    }
    if let Some(old) = link_index(&h, "eth0").await? {
        h.link()
            .del(old)
            .execute()
            .await
            .map_err(nl("delete a stale eth0"))?;
    }
    h.link()
        .add(LinkVeth::new("eth0", &host).mtu(mtu).build())
        .execute()
        .await
        .map_err(nl(format!("create the veth pair eth0/{host}")))?;
    h.link()
        .set(
            LinkUnspec::new_with_name(&host)
                .setns_by_fd(node.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!("move {host} to the node's namespace")))?;
    let eth0 = link_index(&h, "eth0").await?.ok_or_else(|| Error::NoLink {
        name: "eth0".into(),
    })?;
    if addrs.iter().any(|a| a.ip.is_ipv6()) {
        // this thread is in the pod's namespace, so is its /proc/sys/net
        write_sysctl("/proc/sys/net/ipv6/conf/eth0/accept_dad", "0")?;
    }
    for a in &addrs {
        h.address()
            .add(eth0, a.ip, a.prefix)
            .execute()
            .await
            .map_err(nl(format!("add {}/{} to eth0", a.ip, a.prefix)))?;
    }
    h.link()
        .set(LinkUnspec::new_with_index(eth0).up().build())
        .execute()
        .await
        .map_err(nl("set eth0 up"))?;
    for a in &addrs {
        let route = match a.gateway {
            IpAddr::V4(gw) => RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gw)
                .output_interface(eth0)
                .build(),
            IpAddr::V6(gw) => RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(gw)
                .output_interface(eth0)
                .build(),
        };
        h.route()
            .add(route)
            .execute()
            .await
            .map_err(nl(format!("add the default route via {}", a.gateway)))?;
    }
    Ok(())
}

/// The index of link `name`, `None` if there is none.
async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(l) => Ok(l.map(|l| l.header.index)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("look up link {name}"))(e)),
    }
}

/// The hardware address of link `idx` (`name` for messages), if it has one.
async fn link_address(h: &Handle, idx: u32, name: &str) -> Result<Option<Vec<u8>>> {
    let mut links = h.link().get().match_index(idx).execute();
    let link = links
        .try_next()
        .await
        .map_err(nl(format!("look up link {name}")))?;
    Ok(link.and_then(|l| {
        l.attributes.into_iter().find_map(|a| match a {
            netlink_packet_route::link::LinkAttribute::Address(mac) => Some(mac),
            _ => None,
        })
    }))
}

/// Makes `want` (address, prefix length) the only addresses of link `idx` (`name` for
/// messages), IPv6 link-local addresses aside.
async fn only_addresses(h: &Handle, idx: u32, name: &str, want: &[(IpAddr, u8)]) -> Result<()> {
    let mut have = Vec::new();
    let mut stale = Vec::new();
    let mut addrs = h.address().get().set_link_index_filter(idx).execute();
    while let Some(a) = addrs.try_next().await.map_err(nl("list addresses"))? {
        let ip = a.attributes.iter().find_map(|at| match at {
            netlink_packet_route::address::AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        match ip {
            Some(IpAddr::V6(v)) if v.is_unicast_link_local() => {}
            Some(v) if want.contains(&(v, a.header.prefix_len)) => have.push(v),
            Some(_) => stale.push(a),
            None => {}
        }
    }
    for a in stale {
        h.address()
            .del(a)
            .execute()
            .await
            .map_err(nl(format!("remove an old address of {name}")))?;
    }
    if want.iter().any(|(ip, _)| ip.is_ipv6()) {
        // the gateway must answer at once, not after duplicate address detection
        write_sysctl(&format!("/proc/sys/net/ipv6/conf/{name}/accept_dad"), "0")?;
    }
    for (ip, prefix) in want {
        if !have.contains(ip) {
            h.address()
                .add(idx, *ip, *prefix)
                .execute()
                .await
                .map_err(nl(format!("add {ip}/{prefix} to {name}")))?;
        }
    }
    Ok(())
}

/// Deletes link `name` if it exists.
async fn delete_link(h: &Handle, name: &str) -> Result<bool> {
    let Some(idx) = link_index(h, name).await? else {
        return Ok(false);
    };
    match h.link().del(idx).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(nl(format!("delete link {name}"))(e)),
    }
}

/// skiff's routes of both families in the main table: destination → gateway.
async fn owned_routes(h: &Handle) -> Result<BTreeMap<IpNet, IpAddr>> {
    let mut out = BTreeMap::new();
    for query in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut dump = h.route().get(query).execute();
        while let Some(r) = dump.try_next().await.map_err(nl("list routes"))? {
            if r.header.table != RouteHeader::RT_TABLE_MAIN
                || r.header.protocol != RouteProtocol::Other(routes::ROUTE_PROTOCOL)
            {
                continue;
            }
            let mut dst = None;
            let mut gw = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => {
                        dst = Some(IpAddr::V4(*d))
                    }
                    RouteAttribute::Destination(RouteAddress::Inet6(d)) => {
                        dst = Some(IpAddr::V6(*d))
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(IpAddr::V4(*g)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gw = Some(IpAddr::V6(*g)),
                    _ => {}
                }
            }
            if let (Some(d), Some(g)) = (dst, gw)
                && let Ok(net) = IpNet::new(d, r.header.destination_prefix_length)
            {
                out.insert(net, g);
            }
        }
    }
    Ok(out)
}

/// A route of ours to `net` via `gw`; with `onlink`, `onlink` on that link (VXLAN).
/// `None` when the two are of different families.
fn route_message(
    net: IpNet,
    gw: IpAddr,
    onlink: Option<u32>,
) -> Option<netlink_packet_route::route::RouteMessage> {
    let proto = RouteProtocol::Other(routes::ROUTE_PROTOCOL);
    let mut m = match (net, gw) {
        (IpNet::V4(n), IpAddr::V4(g)) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .gateway(g)
            .protocol(proto),
        (IpNet::V6(n), IpAddr::V6(g)) => {
            let b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(n.network(), n.prefix_len())
                .gateway(g)
                .protocol(proto);
            return Some(match onlink {
                Some(dev) => b.output_interface(dev).onlink().build(),
                None => b.build(),
            });
        }
        _ => return None,
    };
    if let Some(dev) = onlink {
        m = m.output_interface(dev).onlink();
    }
    Some(m.build())
}

/// Brings skiff's routes in line with `want` (destination → gateway; `onlink`: on that
/// link). Routes the kernel refuses are reported, not fatal.
async fn apply_routes(
    h: &Handle,
    want: &BTreeMap<IpNet, IpAddr>,
    onlink: Option<u32>,
) -> Result<RouteSync> {
    let have = owned_routes(h).await?;
    let plan = routes::plan(&have, want);
    let mut out = RouteSync::default();
    for (net, gw) in plan.delete {
        let Some(m) = route_message(net, gw, None) else {
            continue;
        };
        match h.route().del(m).execute().await {
            Ok(()) => out.deleted.push((net, gw)),
            Err(e) if errno(&e) == Some(libc::ESRCH) => out.deleted.push((net, gw)),
            Err(e) => out.failed.push((net, gw, e.to_string())),
        }
    }
    for (net, gw) in plan.set {
        let Some(m) = route_message(net, gw, onlink) else {
            out.failed
                .push((net, gw, "gateway of another address family".into()));
            continue;
        };
        match h.route().add(m).replace().execute().await {
            Ok(()) => out.set.push((net, gw)),
            Err(e) => out.failed.push((net, gw, e.to_string())),
        }
    }
    Ok(out)
}

/// What a route sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouteSync {
    /// Routes added or changed.
    pub set: Vec<(IpNet, IpAddr)>,
    /// Routes removed.
    pub deleted: Vec<(IpNet, IpAddr)>,
    /// Routes the kernel refused (e.g. a gateway not on a local segment), with its answer.
    pub failed: Vec<(IpNet, IpAddr, String)>,
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|source| Error::Io {
        what: "write",
        path: path.into(),
        source,
    })
}

impl BridgeNetwork {
    /// The network of a node; opens the address records. Nothing is changed yet.
    pub fn new(cfg: BridgeConfig) -> Result<BridgeNetwork> {
        let pod_cidrs: Vec<IpNet> = cfg.pod_cidrs.iter().map(|c| c.trunc()).collect();
        let families_ok = match pod_cidrs.as_slice() {
            [_] => true,
            [a, b] => a.network().is_ipv4() != b.network().is_ipv4(),
            _ => false,
        };
        if !families_ok {
            let list: Vec<String> = pod_cidrs.iter().map(|c| c.to_string()).collect();
            return Err(Error::PodCidrs {
                cidrs: format!("[{}]", list.join(", ")),
            });
        }
        let mut blocks = Vec::new();
        for cidr in &pod_cidrs {
            let gateway = ipam::gateway(*cidr).ok_or(Error::CidrTooSmall { cidr: *cidr })?;
            blocks.push(Block {
                cidr: *cidr,
                gateway,
                ipam: Ipam::open(&cfg.state_dir, *cidr)?,
            });
        }
        if cfg.vxlan.is_some() && !pod_cidrs.iter().any(|c| c.network().is_ipv4()) {
            return Err(Error::VxlanNeedsIpv4);
        }
        let hostports = HostPorts::open(&cfg.state_dir)?;
        Ok(BridgeNetwork {
            hostports,
            mtu: AtomicU32::new(cfg.mtu),
            cfg: BridgeConfig { pod_cidrs, ..cfg },
            blocks,
        })
    }

    /// The settings.
    pub fn config(&self) -> &BridgeConfig {
        &self.cfg
    }

    /// The pods' gateways (the bridge's addresses), in the order of the podCIDRs.
    pub fn gateways(&self) -> Vec<IpAddr> {
        self.blocks.iter().map(|b| b.gateway).collect()
    }

    /// The IPv4 podCIDR, if there is one.
    fn v4_cidr(&self) -> Option<Ipv4Net> {
        self.blocks.iter().find_map(|b| match b.cidr {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        })
    }

    fn v6_cidr(&self) -> Option<ipnet::Ipv6Net> {
        self.blocks.iter().find_map(|b| match b.cidr {
            IpNet::V6(n) => Some(n),
            IpNet::V4(_) => None,
        })
    }

    /// The MTU of the bridge and the pods' interfaces (with VXLAN: known after `setup`).
    pub fn mtu(&self) -> u32 {
        self.mtu.load(Ordering::Relaxed)
    }

    /// The address records of every podCIDR, in their order.
    pub fn ipams(&self) -> impl Iterator<Item = &Ipam> {
        self.blocks.iter().map(|b| &b.ipam)
    }

    /// Every allocated address of every podCIDR: address → pod uid.
    pub fn records(&self) -> Result<BTreeMap<IpAddr, String>> {
        let mut out = BTreeMap::new();
        for b in &self.blocks {
            out.extend(b.ipam.records()?);
        }
        Ok(out)
    }

    fn node_ns(&self) -> Result<Netns> {
        match &self.cfg.node_netns {
            Some(p) => Netns::open(p),
            None => Netns::current(),
        }
    }

    /// Makes the node side (idempotent): the bridge with the gateway addresses, up;
    /// forwarding of the podCIDRs' families (and bridged traffic through netfilter where
    /// `br_netfilter` is loaded); the masquerade tables.
    pub fn setup(&self) -> Result<()> {
        let ns = self.node_ns()?;
        if let Some(node_ip) = self.cfg.vxlan {
            let v4 = self.v4_cidr().ok_or(Error::VxlanNeedsIpv4)?;
            let overlay = vxlan::overlay_address(v4);
            let vx =
                ns.netlink(
                    move |h| async move { vxlan::ensure_device(&h, node_ip, overlay).await },
                )?;
            self.mtu.store(self.cfg.mtu.min(vx), Ordering::Relaxed);
        }
        let bridge = self.cfg.bridge.clone();
        let want: Vec<(IpAddr, u8)> = self
            .blocks
            .iter()
            .map(|b| (b.gateway, b.cidr.prefix_len()))
            .collect();
        let mtu = self.mtu();
        ns.netlink(move |h| async move {
            let idx = match link_index(&h, &bridge).await? {
                Some(i) => i,
                None => {
                    h.link()
                        .add(LinkBridge::new(&bridge).mtu(mtu).build())
                        .execute()
                        .await
                        .map_err(nl(format!("create bridge {bridge}")))?;
                    link_index(&h, &bridge)
                        .await?
                        .ok_or_else(|| Error::NoLink {
                            name: bridge.clone(),
                        })?
                }
            };
            // addresses of an earlier podCIDR go; the gateways stay or are added
            only_addresses(&h, idx, &bridge, &want).await?;
            // A bridge whose MAC address was never set takes the lowest of its ports' and
            // changes it as pods come and go; the pods' ARP entries for the gateway then
            // point at an address nobody answers to, and their replies are lost until the
            // node happens to ARP for them. Setting it (to itself) pins it, as the bridge
            // CNI plugin does.
            let mut link = LinkUnspec::new_with_index(idx).mtu(mtu).up();
            if let Some(mac) = link_address(&h, idx, &bridge).await? {
                link = link.address(mac);
            }
            h.link()
                .set(link.build())
                .execute()
                .await
                .map_err(nl(format!("set {bridge} up")))?;
            Ok(())
        })?;
        let rules = nft::ruleset(&self.cfg.cluster_cidrs);
        // the hostPort table as recorded (after an agent restart: as it was)
        let ports = hostport::ruleset(&self.hostports.all()?);
        let v4 = self.blocks.iter().any(|b| b.cidr.network().is_ipv4());
        let v6 = self.blocks.iter().any(|b| b.cidr.network().is_ipv6());
        ns.run(move || {
            let bnf = "/proc/sys/net/bridge/bridge-nf-call-iptables";
            if v4 {
                write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
                if Path::new(bnf).exists() {
                    write_sysctl(bnf, "1")?;
                }
            }
            if v6 {
                write_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
                let bnf6 = "/proc/sys/net/bridge/bridge-nf-call-ip6tables";
                if Path::new(bnf6).exists() {
                    write_sysctl(bnf6, "1")?;
                }
            }
            nft::apply(&rules)?;
            nft::apply(&ports)
        })?;
        tracing::info!(bridge = %self.cfg.bridge, gateways = ?self.gateways(),
            pod_cidrs = ?self.cfg.pod_cidrs, "pod network ready");
        Ok(())
    }

    /// Wires the pod namespace at `pod_netns` to the bridge and returns its addresses, one
    /// per podCIDR in their order (the ones it already holds, when attached before). A
    /// half-made earlier attachment is replaced.
    pub fn attach(&self, pod_netns: &Path, pod_uid: &str) -> Result<Vec<IpAddr>> {
        let mut addrs = Vec::new();
        for b in &self.blocks {
            addrs.push(PodAddress {
                ip: b.ipam.allocate(pod_uid)?,
                prefix: b.cidr.prefix_len(),
                gateway: b.gateway,
            });
        }
        let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip).collect();
        let host = host_veth_name(pod_uid);
        let node = self.node_ns()?;
        let pod = Netns::open(pod_netns)?;
        let h2 = host.clone();
        node.netlink(move |h| async move { delete_link(&h, &h2).await })?;
        let node_file = node.file().try_clone().map_err(|source| Error::Io {
            what: "duplicate",
            path: "node network namespace".into(),
            source,
        })?;
        let (h2, mtu) = (host.clone(), self.mtu());
        let done = pod.netlink(move |h| pod_side(h, h2, node_file, addrs, mtu));
        if let Err(e) = done {
            let h2 = host.clone();
            let _ = node.netlink(move |h| async move { delete_link(&h, &h2).await });
            return Err(e);
        }
        let bridge = self.cfg.bridge.clone();
        let h2 = host.clone();
        node.netlink(move |h| async move {
            let br = link_index(&h, &bridge)
                .await?
                .ok_or_else(|| Error::NoLink {
                    name: bridge.clone(),
                })?;
            let idx = link_index(&h, &h2)
                .await?
                .ok_or_else(|| Error::NoLink { name: h2.clone() })?;
            h.link()
                .set(
                    LinkUnspec::new_with_index(idx)
                        .mtu(mtu)
                        .controller(br)
                        .build(),
                )
                .execute()
                .await
                .map_err(nl(format!("put {h2} on {bridge}")))?;
            // hairpin: a pod reaches itself through a Service address
            h.link()
                .set_port(LinkBridgePort::new(idx).hairpin(true).build())
                .execute()
                .await
                .map_err(nl(format!("set hairpin on {h2}")))?;
            h.link()
                .set(LinkUnspec::new_with_index(idx).up().build())
                .execute()
                .await
                .map_err(nl(format!("set {h2} up")))?;
            Ok(())
        })?;
        tracing::info!(pod_uid = %pod_uid, ips = ?ips, veth = %host, "pod attached");
        Ok(ips)
    }

    /// Removes the pod's veth pair (its host end; the kernel takes the pod end with it) and
    /// releases its addresses.
    pub fn detach(&self, pod_uid: &str) -> Result<()> {
        let host = host_veth_name(pod_uid);
        let h2 = host.clone();
        self.node_ns()?
            .netlink(move |h| async move { delete_link(&h, &h2).await })?;
        self.set_host_ports(pod_uid, &[])?;
        let mut released = Vec::new();
        for b in &self.blocks {
            released.extend(b.ipam.release(pod_uid)?);
        }
        tracing::info!(pod_uid = %pod_uid, ips = ?released, veth = %host, "pod detached");
        Ok(())
    }

    /// Maps the pod's hostPorts to its addresses (the ones attach gave it): a port with a
    /// `hostIP` to the pod's address of that family, one without to each of the pod's
    /// addresses (IPv4 and IPv6 on a dual-stack node). An empty list removes its mappings.
    /// The tables are rewritten only when the pod's mappings changed.
    pub fn set_host_ports(&self, pod_uid: &str, ports: &[PortMapping]) -> Result<()> {
        let mut list = Vec::new();
        if !ports.is_empty() {
            let mut pod_ips = Vec::new();
            for block in &self.blocks {
                pod_ips.extend(
                    block
                        .ipam
                        .records()?
                        .into_iter()
                        .filter(|(_, uid)| uid == pod_uid)
                        .map(|(ip, _)| ip),
                );
            }
            if pod_ips.is_empty() {
                return Err(Error::NotAttached {
                    pod_uid: pod_uid.to_string(),
                });
            }
            for p in ports {
                let of_family = pod_ips.iter().filter(|ip| match p.host_ip {
                    Some(h) if !h.is_unspecified() => h.is_ipv6() == ip.is_ipv6(),
                    _ => true,
                });
                let mut mapped = false;
                for ip in of_family {
                    list.push(hostport::HostPort {
                        port: *p,
                        pod_ip: *ip,
                    });
                    mapped = true;
                }
                if !mapped {
                    tracing::warn!(pod_uid = %pod_uid, port = ?p,
                        "the pod has no address of its hostIP's family; hostPort not mapped");
                }
            }
        }
        if let Some(text) = self.hostports.set(pod_uid, &list)? {
            self.node_ns()?.run(move || nft::apply(&text))?;
            tracing::info!(pod_uid = %pod_uid, ports = ?list, "host ports mapped");
        }
        Ok(())
    }

    /// Releases the addresses (and removes the veths) of pods not in `live`.
    pub fn retain(&self, live: &HashSet<String>) -> Result<Vec<IpAddr>> {
        let stale: std::collections::BTreeSet<String> = self
            .records()?
            .into_values()
            .filter(|uid| !live.contains(uid))
            .collect();
        if !stale.is_empty() {
            let names: Vec<String> = stale.iter().map(|u| host_veth_name(u)).collect();
            self.node_ns()?.netlink(move |h| async move {
                for n in names {
                    delete_link(&h, &n).await?;
                }
                Ok(())
            })?;
        }
        let ports = self.hostports.retain(live)?;
        self.node_ns()?.run(move || nft::apply(&ports))?;
        let mut released = Vec::new();
        for b in &self.blocks {
            released.extend(b.ipam.retain(live)?);
        }
        if !released.is_empty() {
            tracing::info!(ips = ?released, "released the addresses of pods that are gone");
        }
        Ok(released)
    }

    /// Brings the host-gw routes in line with `nodes` (every Node's podCIDRs with its
    /// InternalIP of each family, this one included or not).
    pub fn sync_routes(&self, nodes: &[NodeRoute]) -> Result<RouteSync> {
        let want = routes::desired(&self.cfg.pod_cidrs, nodes);
        self.node_ns()?
            .netlink(move |h| async move { apply_routes(&h, &want, None).await })
    }

    /// Brings the VXLAN overlay in line with `peers` (every Node with a podCIDR, an
    /// InternalIP and a VTEP MAC, this one included or not): neighbour and FDB entries on
    /// the device, and a route to each peer's podCIDR via its overlay address, `onlink`; on a
    /// dual-stack node also to each peer's IPv6 podCIDR via its link-local address on the
    /// device. Needs `setup` with [`BridgeConfig::vxlan`] first.
    pub fn sync_vxlan(&self, peers: &[VtepPeer]) -> Result<(RouteSync, vxlan::EntrySync)> {
        let own_ip = self.cfg.vxlan.ok_or_else(|| Error::NoLink {
            name: vxlan::DEVICE.into(),
        })?;
        let v4 = self.v4_cidr().ok_or(Error::VxlanNeedsIpv4)?;
        let want = vxlan::desired(v4, own_ip, peers);
        let want6 = self
            .v6_cidr()
            .map(|v6| vxlan::desired6(v6, own_ip, peers))
            .unwrap_or_default();
        self.node_ns()?.netlink(move |h| async move {
            let entries = vxlan::sync_entries(&h, &want, &want6).await?;
            let dev = link_index(&h, vxlan::DEVICE)
                .await?
                .ok_or_else(|| Error::NoLink {
                    name: vxlan::DEVICE.into(),
                })?;
            let routes: BTreeMap<IpNet, IpAddr> = want
                .iter()
                .map(|(net, e)| (IpNet::V4(*net), IpAddr::V4(e.overlay)))
                .chain(
                    want6
                        .iter()
                        .map(|(net, (next, _))| (IpNet::V6(*net), IpAddr::V6(*next))),
                )
                .collect();
            let r = apply_routes(&h, &routes, Some(dev)).await?;
            Ok((r, entries))
        })
    }

    /// Removes the node side: routes, masquerade tables and bridge (the pods' veths go with
    /// their namespaces).
    pub fn teardown(&self) -> Result<()> {
        self.sync_routes(&[])?;
        let ns = self.node_ns()?;
        let bridge = self.cfg.bridge.clone();
        ns.netlink(move |h| async move {
            delete_link(&h, &bridge).await?;
            delete_link(&h, vxlan::DEVICE).await
        })?;
        ns.run(|| {
            nft::apply(&nft::delete())?;
            nft::apply(&hostport::delete())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names() {
        let a = host_veth_name("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
        let b = host_veth_name("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f1");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("veth"));
        assert!(a[4..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(a, host_veth_name("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"));
        assert_eq!(host_veth_name("").len(), 15);
    }
}

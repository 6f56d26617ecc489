//! The pod network of one node, as the bridge CNI plugin with host-local IPAM and flannel's
//! host-gw backend lay it out:
//!
//! - a bridge (`skiff0` by default) holding the podCIDR's first address as the pods'
//!   gateway; IPv4 forwarding on in the node's namespace; pod traffic leaving the cluster
//!   CIDR masqueraded ([`nft`]);
//! - per pod a veth pair: the host end (named from the pod uid, [`host_veth_name`]) on the
//!   bridge with hairpin on, the other end moved into the pod's namespace as `eth0` with an
//!   address from the podCIDR ([`ipam`]) and a default route via the gateway;
//! - a route to every other node's podCIDR via its InternalIP ([`routes`]).
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
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
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
        cidr: Ipv4Net,
    },
    /// The podCIDR has no room for a gateway and pods.
    #[error("the pod CIDR {cidr} is too small (a /30 at most)")]
    CidrTooSmall {
        /// The podCIDR.
        cidr: Ipv4Net,
    },
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
    /// This node's `spec.podCIDR`.
    pub pod_cidr: Ipv4Net,
    /// The whole cluster's pod CIDR (traffic leaving it is masqueraded).
    pub cluster_cidr: Ipv4Net,
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

/// One node's bridge network.
#[derive(Debug)]
pub struct BridgeNetwork {
    cfg: BridgeConfig,
    gateway: Ipv4Addr,
    ipam: Ipam,
    hostports: HostPorts,
    /// The pods' MTU: `cfg.mtu`, lowered to the VXLAN device's by `setup`.
    mtu: AtomicU32,
}

/// Pod-side netlink work: loopback up, a fresh veth `eth0` ↔ `host`, the host end moved to
/// the node's namespace, `eth0` addressed, up, with the default route via the gateway.
async fn pod_side(
    h: Handle,
    host: String,
    node: std::fs::File,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
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
    h.address()
        .add(eth0, IpAddr::V4(ip), prefix)
        .execute()
        .await
        .map_err(nl(format!("add {ip}/{prefix} to eth0")))?;
    h.link()
        .set(LinkUnspec::new_with_index(eth0).up().build())
        .execute()
        .await
        .map_err(nl("set eth0 up"))?;
    h.route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .output_interface(eth0)
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!("add the default route via {gateway}")))?;
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

/// Makes `ip/prefix` the only IPv4 address of link `idx` (`name` for messages).
async fn only_address(h: &Handle, idx: u32, name: &str, ip: Ipv4Addr, prefix: u8) -> Result<()> {
    let mut have = false;
    let mut stale = Vec::new();
    let mut addrs = h.address().get().set_link_index_filter(idx).execute();
    while let Some(a) = addrs.try_next().await.map_err(nl("list addresses"))? {
        let v4 = a.attributes.iter().find_map(|at| match at {
            netlink_packet_route::address::AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
            _ => None,
        });
        match v4 {
            Some(v) if v == ip && a.header.prefix_len == prefix => have = true,
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
    if !have {
        h.address()
            .add(idx, IpAddr::V4(ip), prefix)
            .execute()
            .await
            .map_err(nl(format!("add {ip}/{prefix} to {name}")))?;
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

/// skiff's routes in the main table: destination → gateway.
async fn owned_routes(h: &Handle) -> Result<BTreeMap<Ipv4Net, Ipv4Addr>> {
    let mut out = BTreeMap::new();
    let mut dump = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
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
                RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(*d),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                _ => {}
            }
        }
        if let (Some(d), Some(g)) = (dst, gw)
            && let Ok(net) = Ipv4Net::new(d, r.header.destination_prefix_length)
        {
            out.insert(net, g);
        }
    }
    Ok(out)
}

/// A route of ours to `net` via `gw`; with `onlink`, `onlink` on that link (VXLAN).
fn route_message(
    net: Ipv4Net,
    gw: Ipv4Addr,
    onlink: Option<u32>,
) -> netlink_packet_route::route::RouteMessage {
    let b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(net.network(), net.prefix_len())
        .gateway(gw)
        .protocol(RouteProtocol::Other(routes::ROUTE_PROTOCOL));
    match onlink {
        Some(dev) => b.output_interface(dev).onlink().build(),
        None => b.build(),
    }
}

/// Brings skiff's routes in line with `want` (destination → gateway; `onlink`: on that
/// link). Routes the kernel refuses are reported, not fatal.
async fn apply_routes(
    h: &Handle,
    want: &BTreeMap<Ipv4Net, Ipv4Addr>,
    onlink: Option<u32>,
) -> Result<RouteSync> {
    let have = owned_routes(h).await?;
    let plan = routes::plan(&have, want);
    let mut out = RouteSync::default();
    for (net, gw) in plan.delete {
        match h.route().del(route_message(net, gw, None)).execute().await {
            Ok(()) => out.deleted.push((net, gw)),
            Err(e) if errno(&e) == Some(libc::ESRCH) => out.deleted.push((net, gw)),
            Err(e) => out.failed.push((net, gw, e.to_string())),
        }
    }
    for (net, gw) in plan.set {
        match h
            .route()
            .add(route_message(net, gw, onlink))
            .replace()
            .execute()
            .await
        {
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
    pub set: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Routes removed.
    pub deleted: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Routes the kernel refused (e.g. a gateway not on a local segment), with its answer.
    pub failed: Vec<(Ipv4Net, Ipv4Addr, String)>,
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
        let pod_cidr = cfg.pod_cidr.trunc();
        let gateway = ipam::gateway(pod_cidr).ok_or(Error::CidrTooSmall { cidr: pod_cidr })?;
        let ipam = Ipam::open(&cfg.state_dir, pod_cidr)?;
        let hostports = HostPorts::open(&cfg.state_dir)?;
        Ok(BridgeNetwork {
            hostports,
            mtu: AtomicU32::new(cfg.mtu),
            cfg: BridgeConfig { pod_cidr, ..cfg },
            gateway,
            ipam,
        })
    }

    /// The settings.
    pub fn config(&self) -> &BridgeConfig {
        &self.cfg
    }

    /// The pods' gateway (the bridge's address).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The MTU of the bridge and the pods' interfaces (with VXLAN: known after `setup`).
    pub fn mtu(&self) -> u32 {
        self.mtu.load(Ordering::Relaxed)
    }

    /// The address records.
    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    fn node_ns(&self) -> Result<Netns> {
        match &self.cfg.node_netns {
            Some(p) => Netns::open(p),
            None => Netns::current(),
        }
    }

    /// Makes the node side (idempotent): the bridge with the gateway address, up; IPv4
    /// forwarding (and bridged traffic through netfilter where `br_netfilter` is loaded);
    /// the masquerade table.
    pub fn setup(&self) -> Result<()> {
        let ns = self.node_ns()?;
        if let Some(node_ip) = self.cfg.vxlan {
            let overlay = vxlan::overlay_address(self.cfg.pod_cidr);
            let vx =
                ns.netlink(
                    move |h| async move { vxlan::ensure_device(&h, node_ip, overlay).await },
                )?;
            self.mtu.store(self.cfg.mtu.min(vx), Ordering::Relaxed);
        }
        let bridge = self.cfg.bridge.clone();
        let (gw, prefix, mtu) = (self.gateway, self.cfg.pod_cidr.prefix_len(), self.mtu());
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
            // addresses of an earlier podCIDR go; the gateway stays or is added
            only_address(&h, idx, &bridge, gw, prefix).await?;
            h.link()
                .set(LinkUnspec::new_with_index(idx).mtu(mtu).up().build())
                .execute()
                .await
                .map_err(nl(format!("set {bridge} up")))?;
            Ok(())
        })?;
        let rules = nft::ruleset(self.cfg.cluster_cidr);
        // the hostPort table as recorded (after an agent restart: as it was)
        let ports = hostport::ruleset(&self.hostports.all()?);
        ns.run(move || {
            write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
            let bnf = "/proc/sys/net/bridge/bridge-nf-call-iptables";
            if Path::new(bnf).exists() {
                write_sysctl(bnf, "1")?;
            }
            nft::apply(&rules)?;
            nft::apply(&ports)
        })?;
        tracing::info!(bridge = %self.cfg.bridge, gateway = %self.gateway,
            pod_cidr = %self.cfg.pod_cidr, "pod network ready");
        Ok(())
    }

    /// Wires the pod namespace at `pod_netns` to the bridge and returns its address (the one
    /// it already holds, when attached before). A half-made earlier attachment is replaced.
    pub fn attach(&self, pod_netns: &Path, pod_uid: &str) -> Result<Ipv4Addr> {
        let ip = self.ipam.allocate(pod_uid)?;
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
        let (h2, gw, prefix, mtu) = (
            host.clone(),
            self.gateway,
            self.cfg.pod_cidr.prefix_len(),
            self.mtu(),
        );
        let done = pod.netlink(move |h| pod_side(h, h2, node_file, ip, prefix, gw, mtu));
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
        tracing::info!(pod_uid = %pod_uid, %ip, veth = %host, "pod attached");
        Ok(ip)
    }

    /// Removes the pod's veth pair (its host end; the kernel takes the pod end with it) and
    /// releases its address.
    pub fn detach(&self, pod_uid: &str) -> Result<()> {
        let host = host_veth_name(pod_uid);
        let h2 = host.clone();
        self.node_ns()?
            .netlink(move |h| async move { delete_link(&h, &h2).await })?;
        self.set_host_ports(pod_uid, &[])?;
        let released = self.ipam.release(pod_uid)?;
        tracing::info!(pod_uid = %pod_uid, ips = ?released, veth = %host, "pod detached");
        Ok(())
    }

    /// Maps the pod's hostPorts to its address (the one attach gave it); an empty list
    /// removes its mappings. The table is rewritten only when the pod's mappings changed.
    pub fn set_host_ports(&self, pod_uid: &str, ports: &[PortMapping]) -> Result<()> {
        let mut list = Vec::new();
        if !ports.is_empty() {
            let ip = self
                .ipam
                .records()?
                .into_iter()
                .find_map(|(ip, uid)| (uid == pod_uid).then_some(ip))
                .ok_or_else(|| Error::NotAttached {
                    pod_uid: pod_uid.to_string(),
                })?;
            list = ports
                .iter()
                .map(|p| hostport::HostPort {
                    port: *p,
                    pod_ip: ip,
                })
                .collect();
        }
        if let Some(text) = self.hostports.set(pod_uid, &list)? {
            self.node_ns()?.run(move || nft::apply(&text))?;
            tracing::info!(pod_uid = %pod_uid, ports = ?list, "host ports mapped");
        }
        Ok(())
    }

    /// Releases the addresses (and removes the veths) of pods not in `live`.
    pub fn retain(&self, live: &HashSet<String>) -> Result<Vec<Ipv4Addr>> {
        let stale: Vec<String> = self
            .ipam
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
        let released = self.ipam.retain(live)?;
        if !released.is_empty() {
            tracing::info!(ips = ?released, "released the addresses of pods that are gone");
        }
        Ok(released)
    }

    /// Brings the host-gw routes in line with `nodes` (every Node with a podCIDR and an
    /// InternalIP, this one included or not).
    pub fn sync_routes(&self, nodes: &[NodeRoute]) -> Result<RouteSync> {
        let want = routes::desired(self.cfg.pod_cidr, nodes);
        self.node_ns()?
            .netlink(move |h| async move { apply_routes(&h, &want, None).await })
    }

    /// Brings the VXLAN overlay in line with `peers` (every Node with a podCIDR, an
    /// InternalIP and a VTEP MAC, this one included or not): neighbour and FDB entries on
    /// the device, and a route to each peer's podCIDR via its overlay address, `onlink`.
    /// Needs `setup` with [`BridgeConfig::vxlan`] first.
    pub fn sync_vxlan(&self, peers: &[VtepPeer]) -> Result<(RouteSync, vxlan::EntrySync)> {
        let own_ip = self.cfg.vxlan.ok_or_else(|| Error::NoLink {
            name: vxlan::DEVICE.into(),
        })?;
        let want = vxlan::desired(self.cfg.pod_cidr, own_ip, peers);
        self.node_ns()?.netlink(move |h| async move {
            let entries = vxlan::sync_entries(&h, &want).await?;
            let dev = link_index(&h, vxlan::DEVICE)
                .await?
                .ok_or_else(|| Error::NoLink {
                    name: vxlan::DEVICE.into(),
                })?;
            let routes: BTreeMap<Ipv4Net, Ipv4Addr> =
                want.iter().map(|(net, e)| (*net, e.overlay)).collect();
            let r = apply_routes(&h, &routes, Some(dev)).await?;
            Ok((r, entries))
        })
    }

    /// Removes the node side: routes, masquerade table and bridge (the pods' veths go with
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

//! The VXLAN overlay (`--pod-network vxlan`), laid out as flannel's vxlan backend does for
//! nodes that are not on one L2 segment:
//!
//! - a VXLAN device `skiff.1` (VNI 1, UDP 8472, learning off, MTU = the LAN link's − 50)
//!   bound to the node's InternalIP, with the node's overlay address (the podCIDR's network
//!   address, `/32`) and a MAC derived from the InternalIP ([`vtep_mac`]), which the agent
//!   publishes in the Node annotation [`MAC_ANNOTATION`] (flannel's `backend-data`);
//! - per other node: a route to its podCIDR via its overlay address, `onlink` on the
//!   device (protocol [`super::routes::ROUTE_PROTOCOL`]), a permanent neighbour entry
//!   (overlay address → its MAC) and a forwarding-database entry (MAC → its InternalIP);
//! - on dual-stack nodes also IPv6 pod traffic, over the same IPv4 tunnel: a route to the
//!   node's IPv6 podCIDR via its link-local address on the device (the EUI-64 address of
//!   its VTEP MAC, [`link_local`]) and a permanent IPv6 neighbour entry for it (unlike
//!   flannel, which builds a second device over an IPv6 underlay).
//!
//! The device is skiff's alone, so every neighbour and FDB entry on it that no Node wants is
//! removed on a sync.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use ipnet::{Ipv4Net, Ipv6Net};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};

use super::{Error, Result, errno, link_index, nl, only_addresses};

/// The device's name (flannel: `flannel.1`).
pub const DEVICE: &str = "skiff.1";
/// The VXLAN network identifier.
pub const VNI: u32 = 1;
/// The UDP port (flannel's and the Linux default 8472, not IANA's 4789).
pub const PORT: u16 = 8472;
/// What VXLAN over IPv4 adds to a frame: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const OVERHEAD: u32 = 50;
/// The Node annotation holding the node's VTEP MAC.
pub const MAC_ANNOTATION: &str = "skiff.dev/vxlan-mac";

/// An Ethernet address.
pub type Mac = [u8; 6];

/// What the overlay needs to know of another Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtepPeer {
    /// The Node's name.
    pub name: String,
    /// Its IPv4 podCIDR.
    pub pod_cidr: Ipv4Net,
    /// Its IPv6 podCIDR, on a dual-stack node.
    pub pod_cidr6: Option<Ipv6Net>,
    /// Its InternalIP (the outer destination of its frames).
    pub node_ip: Ipv4Addr,
    /// Its VTEP MAC (from [`MAC_ANNOTATION`]).
    pub mac: Mac,
}

/// The entries for one other node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VtepEntry {
    /// Its overlay address (the gateway of the route, the neighbour's address).
    pub overlay: Ipv4Addr,
    /// Its VTEP MAC.
    pub mac: Mac,
    /// Its InternalIP (the FDB entry's destination).
    pub node_ip: Ipv4Addr,
}

/// The VTEP MAC of a node: locally administered, unicast (`0e:5f:` and the InternalIP's
/// four bytes), so it survives reboots and agent restarts and differs between nodes.
pub fn vtep_mac(node_ip: Ipv4Addr) -> Mac {
    let o = node_ip.octets();
    [0x0e, 0x5f, o[0], o[1], o[2], o[3]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case); `None` for anything else.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut out = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The link-local address of a VTEP MAC (modified EUI-64, as the kernel gives the device
/// itself): the next hop of IPv6 routes to that node's pods.
pub fn link_local(mac: &Mac) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([mac[0] ^ 2, mac[1]]),
        u16::from_be_bytes([mac[2], 0xff]),
        u16::from_be_bytes([0xfe, mac[3]]),
        u16::from_be_bytes([mac[4], mac[5]]),
    )
}

/// The IPv6 entries this node wants, by the peer's IPv6 podCIDR: the next hop (the peer's
/// [`link_local`] address) and its MAC. Left out as in [`desired`]: CIDRs overlapping our
/// own, peers with our InternalIP, and a second claim of one CIDR.
pub fn desired6(
    own_cidr: Ipv6Net,
    own_ip: Ipv4Addr,
    peers: &[VtepPeer],
) -> BTreeMap<Ipv6Net, (Ipv6Addr, Mac)> {
    let mut sorted: Vec<&VtepPeer> = peers.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = BTreeMap::new();
    for p in sorted {
        let Some(cidr) = p.pod_cidr6.map(|c| c.trunc()) else {
            continue;
        };
        if cidr.contains(&own_cidr.network())
            || own_cidr.contains(&cidr.network())
            || p.node_ip == own_ip
        {
            continue;
        }
        out.entry(cidr).or_insert((link_local(&p.mac), p.mac));
    }
    out
}

/// A node's overlay address: its podCIDR's network address (flannel gives `flannel.1`
/// 10.244.N.0/32).
pub fn overlay_address(pod_cidr: Ipv4Net) -> Ipv4Addr {
    pod_cidr.trunc().network()
}

/// The entries this node wants, by the peer's podCIDR. Our own podCIDR, CIDRs overlapping
/// it and peers with our own InternalIP are left out; two peers claiming one CIDR: the
/// first by name wins.
pub fn desired(
    own_cidr: Ipv4Net,
    own_ip: Ipv4Addr,
    peers: &[VtepPeer],
) -> BTreeMap<Ipv4Net, VtepEntry> {
    let mut sorted: Vec<&VtepPeer> = peers.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = BTreeMap::new();
    for p in sorted {
        let cidr = p.pod_cidr.trunc();
        if cidr.contains(&own_cidr.network())
            || own_cidr.contains(&cidr.network())
            || p.node_ip == own_ip
        {
            continue;
        }
        out.entry(cidr).or_insert(VtepEntry {
            overlay: overlay_address(cidr),
            mac: p.mac,
            node_ip: p.node_ip,
        });
    }
    out
}

/// Add and delete lists taking a set of entries from `have` to `want`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetPlan<K> {
    /// Entries to add (or replace).
    pub add: Vec<K>,
    /// Entries to delete.
    pub delete: Vec<K>,
}

/// The difference between two sets of entries (an entry whose value changed is deleted and
/// added: neighbour `ip → mac`, FDB `mac → ip`).
pub fn set_plan<K: Ord + Clone>(have: &BTreeSet<K>, want: &BTreeSet<K>) -> SetPlan<K> {
    SetPlan {
        add: want.difference(have).cloned().collect(),
        delete: have.difference(want).cloned().collect(),
    }
}

/// What a sync of the overlay's neighbour and FDB entries did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EntrySync {
    /// Neighbour entries (overlay or link-local address, MAC) set.
    pub neighbours_set: Vec<(IpAddr, Mac)>,
    /// Neighbour entries removed.
    pub neighbours_deleted: Vec<(IpAddr, Mac)>,
    /// FDB entries (MAC, InternalIP) set.
    pub fdb_set: Vec<(Mac, Ipv4Addr)>,
    /// FDB entries removed.
    pub fdb_deleted: Vec<(Mac, Ipv4Addr)>,
}

/// The link holding `ip` and its MTU.
async fn link_of_address(h: &Handle, ip: Ipv4Addr) -> Result<Option<(u32, u32)>> {
    let mut addrs = h.address().get().execute();
    let mut index = None;
    while let Some(a) = addrs.try_next().await.map_err(nl("list addresses"))? {
        let holds = a.attributes.iter().any(|at| {
            matches!(at, netlink_packet_route::address::AddressAttribute::Address(IpAddr::V4(v)) if *v == ip)
        });
        if holds {
            index = Some(a.header.index);
            break;
        }
    }
    let Some(index) = index else {
        return Ok(None);
    };
    let mut links = h.link().get().match_index(index).execute();
    let link = links
        .try_next()
        .await
        .map_err(nl(format!("look up link {index}")))?;
    let mtu = link
        .and_then(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
        })
        .unwrap_or(1500);
    Ok(Some((index, mtu)))
}

/// Whether the existing device `index` is the one we want (VNI, local address, port,
/// underlying link, learning off, MAC).
async fn device_matches(h: &Handle, index: u32, want: &[InfoVxlan], mac: &Mac) -> Result<bool> {
    let mut links = h.link().get().match_index(index).execute();
    let Some(link) = links
        .try_next()
        .await
        .map_err(nl(format!("look up {DEVICE}")))?
    else {
        return Ok(false);
    };
    let mut have_mac = None;
    let mut info = Vec::new();
    for a in link.attributes {
        match a {
            LinkAttribute::Address(m) => have_mac = Some(m),
            LinkAttribute::LinkInfo(v) => {
                for i in v {
                    if let LinkInfo::Data(InfoData::Vxlan(d)) = i {
                        info = d;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(have_mac.as_deref() == Some(&mac[..]) && want.iter().all(|w| info.contains(w)))
}

/// Makes the VXLAN device (idempotent; one with other parameters is replaced) bound to
/// `node_ip`, with `overlay/32` and the MAC [`vtep_mac`], up. Returns the device's MTU.
pub async fn ensure_device(h: &Handle, node_ip: Ipv4Addr, overlay: Ipv4Addr) -> Result<u32> {
    let (lan, lan_mtu) = link_of_address(h, node_ip)
        .await?
        .ok_or(Error::NoNodeAddress { ip: node_ip })?;
    let mtu = lan_mtu.saturating_sub(OVERHEAD);
    let mac = vtep_mac(node_ip);
    let want = [
        InfoVxlan::Id(VNI),
        InfoVxlan::Local(node_ip),
        InfoVxlan::Port(PORT),
        InfoVxlan::Link(lan),
        InfoVxlan::Learning(false),
    ];
    let idx = match link_index(h, DEVICE).await? {
        Some(i) if device_matches(h, i, &want, &mac).await? => i,
        old => {
            if let Some(i) = old {
                tracing::info!(
                    device = DEVICE,
                    "replacing a VXLAN device with other settings"
                );
                h.link()
                    .del(i)
                    .execute()
                    .await
                    .map_err(nl(format!("delete the old {DEVICE}")))?;
            }
            h.link()
                .add(
                    LinkVxlan::new(DEVICE, VNI)
                        .dev(lan)
                        .local(node_ip)
                        .port(PORT)
                        .learning(false)
                        .mtu(mtu)
                        .address(mac.to_vec())
                        .build(),
                )
                .execute()
                .await
                .map_err(nl(format!("create the VXLAN device {DEVICE}")))?;
            link_index(h, DEVICE).await?.ok_or_else(|| Error::NoLink {
                name: DEVICE.into(),
            })?
        }
    };
    h.link()
        .set(LinkUnspec::new_with_index(idx).mtu(mtu).build())
        .execute()
        .await
        .map_err(nl(format!("set the MTU of {DEVICE}")))?;
    only_addresses(h, idx, DEVICE, &[(IpAddr::V4(overlay), 32)]).await?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(nl(format!("set {DEVICE} up")))?;
    tracing::info!(device = DEVICE, %node_ip, %overlay, mtu, mac = %format_mac(&mac), "VXLAN device ready");
    Ok(mtu)
}

fn lladdr(m: &NeighbourMessage) -> Option<Mac> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(v) => v.as_slice().try_into().ok(),
        _ => None,
    })
}

fn dst(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => Some(IpAddr::V4(*v)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => Some(IpAddr::V6(*v)),
        // FDB entries (family bridge) carry their IPv4 destination as raw bytes
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
            <[u8; 4]>::try_from(b.as_slice())
                .ok()
                .map(|o| IpAddr::V4(Ipv4Addr::from(o)))
        }
        _ => None,
    })
}

/// The entries of `family` on link `idx`: (message, lladdr, destination).
async fn entries(
    h: &Handle,
    family: AddressFamily,
    idx: u32,
) -> Result<Vec<(NeighbourMessage, Mac, IpAddr)>> {
    let mut out = Vec::new();
    let mut dump = h.neighbours().get().set_address_family(family).execute();
    while let Some(m) = dump.try_next().await.map_err(nl("list neighbours"))? {
        if m.header.ifindex != idx || m.header.family != family {
            continue;
        }
        // only permanent entries are ours: the kernel's own (the link-local address's
        // neighbour discovery) come and go by themselves
        if m.header.state != NeighbourState::Permanent {
            continue;
        }
        if let (Some(mac), Some(ip)) = (lladdr(&m), dst(&m)) {
            out.push((m, mac, ip));
        }
    }
    Ok(out)
}

/// Brings the neighbour and FDB entries of the device in line with `want` (and `want6`,
/// the IPv6 next hops of [`desired6`]). Routes are the caller's (they share the host-gw
/// route code).
pub async fn sync_entries(
    h: &Handle,
    want: &BTreeMap<Ipv4Net, VtepEntry>,
    want6: &BTreeMap<Ipv6Net, (Ipv6Addr, Mac)>,
) -> Result<EntrySync> {
    let idx = link_index(h, DEVICE).await?.ok_or_else(|| Error::NoLink {
        name: DEVICE.into(),
    })?;
    let mut out = EntrySync::default();

    let mut have = entries(h, AddressFamily::Inet, idx).await?;
    have.extend(entries(h, AddressFamily::Inet6, idx).await?);
    let want_n: BTreeSet<(IpAddr, Mac)> = want
        .values()
        .map(|e| (IpAddr::V4(e.overlay), e.mac))
        .chain(want6.values().map(|(ip, mac)| (IpAddr::V6(*ip), *mac)))
        .collect();
    let have_n: BTreeSet<(IpAddr, Mac)> = have.iter().map(|(_, m, ip)| (*ip, *m)).collect();
    let plan = set_plan(&have_n, &want_n);
    for (msg, mac, ip) in have {
        if plan.delete.contains(&(ip, mac)) {
            match h.neighbours().del(msg).execute().await {
                Ok(()) => out.neighbours_deleted.push((ip, mac)),
                Err(e) if errno(&e) == Some(libc::ENOENT) => {}
                Err(e) => return Err(nl(format!("delete neighbour {ip}"))(e)),
            }
        }
    }
    for (ip, mac) in plan.add {
        h.neighbours()
            .add(idx, ip)
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("add neighbour {ip} {}", format_mac(&mac))))?;
        out.neighbours_set.push((ip, mac));
    }

    let have: Vec<(NeighbourMessage, Mac, Ipv4Addr)> = entries(h, AddressFamily::Bridge, idx)
        .await?
        .into_iter()
        .filter_map(|(msg, mac, ip)| match ip {
            IpAddr::V4(v) => Some((msg, mac, v)),
            IpAddr::V6(_) => None,
        })
        .collect();
    let want_f: BTreeSet<(Mac, Ipv4Addr)> = want.values().map(|e| (e.mac, e.node_ip)).collect();
    let have_f: BTreeSet<(Mac, Ipv4Addr)> = have.iter().map(|(_, m, ip)| (*m, *ip)).collect();
    let plan = set_plan(&have_f, &want_f);
    for (msg, mac, ip) in have {
        if plan.delete.contains(&(mac, ip)) {
            match h.neighbours().del(msg).execute().await {
                Ok(()) => out.fdb_deleted.push((mac, ip)),
                Err(e) if errno(&e) == Some(libc::ENOENT) => {}
                Err(e) => return Err(nl(format!("delete FDB entry {}", format_mac(&mac)))(e)),
            }
        }
    }
    for (mac, ip) in plan.add {
        h.neighbours()
            .add_bridge(idx, &mac)
            .destination(IpAddr::V4(ip))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("add FDB entry {} → {ip}", format_mac(&mac))))?;
        out.fdb_set.push((mac, ip));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, cidr: &str, ip: &str, mac: u8) -> VtepPeer {
        VtepPeer {
            name: name.into(),
            pod_cidr: cidr.parse().unwrap(),
            pod_cidr6: None,
            node_ip: ip.parse().unwrap(),
            mac: [2, 0, 0, 0, 0, mac],
        }
    }

    #[test]
    fn link_local_of_a_mac() {
        let m = vtep_mac("192.168.1.7".parse().unwrap());
        assert_eq!(
            link_local(&m),
            "fe80::c5f:c0ff:fea8:107".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn desired_ipv6_entries() {
        let own: Ipv6Net = "fd00:10:244:1::/64".parse().unwrap();
        let own_ip: Ipv4Addr = "192.168.1.1".parse().unwrap();
        let dual = |name: &str, c6: &str, ip: &str, mac: u8| VtepPeer {
            pod_cidr6: Some(c6.parse().unwrap()),
            ..peer(name, "10.244.9.0/24", ip, mac)
        };
        let peers = [
            dual("n1", "fd00:10:244:1::/64", "192.168.1.1", 1),
            dual("n2", "fd00:10:244:2::/64", "192.168.2.2", 2),
            // IPv4 only: no IPv6 entry
            peer("n3", "10.244.3.0/24", "192.168.3.3", 3),
            // overlapping ours, or a second claim: left out
            dual("n4", "fd00:10:244::/56", "192.168.4.4", 4),
            dual("n5", "fd00:10:244:2::/64", "192.168.5.5", 5),
        ];
        let got = desired6(own, own_ip, &peers);
        let mac2 = [2, 0, 0, 0, 0, 2];
        let want: BTreeMap<Ipv6Net, (Ipv6Addr, Mac)> = [(
            "fd00:10:244:2::/64".parse().unwrap(),
            ("fe80::ff:fe00:2".parse().unwrap(), mac2),
        )]
        .into();
        assert_eq!(got, want);
    }

    #[test]
    fn macs() {
        let m = vtep_mac("192.168.1.7".parse().unwrap());
        assert_eq!(format_mac(&m), "0e:5f:c0:a8:01:07");
        assert_eq!(m[0] & 1, 0, "unicast");
        assert_eq!(m[0] & 2, 2, "locally administered");
        assert_eq!(parse_mac("0E:5f:c0:a8:01:07"), Some(m));
        for bad in [
            "",
            "0e:5f:c0:a8:01",
            "0e:5f:c0:a8:01:07:08",
            "0e:5f:c0:a8:1:07",
            "zz:5f:c0:a8:01:07",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn desired_entries() {
        let own: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        let own_ip: Ipv4Addr = "192.168.1.1".parse().unwrap();
        let entry = |overlay: &str, mac: u8, ip: &str| VtepEntry {
            overlay: overlay.parse().unwrap(),
            mac: [2, 0, 0, 0, 0, mac],
            node_ip: ip.parse().unwrap(),
        };
        type Case<'a> = (Vec<VtepPeer>, Vec<(&'a str, VtepEntry)>);
        let cases: Vec<Case> = vec![
            (vec![], vec![]),
            (
                vec![
                    peer("n1", "10.244.1.0/24", "192.168.1.1", 1),
                    peer("n2", "10.244.2.0/24", "192.168.2.2", 2),
                    // host bits in the CIDR are ignored
                    peer("n3", "10.244.3.9/24", "192.168.3.3", 3),
                ],
                vec![
                    ("10.244.2.0/24", entry("10.244.2.0", 2, "192.168.2.2")),
                    ("10.244.3.0/24", entry("10.244.3.0", 3, "192.168.3.3")),
                ],
            ),
            // overlapping our CIDR, or claiming our address: left out
            (
                vec![
                    peer("bad", "10.244.0.0/16", "192.168.1.9", 9),
                    peer("me-again", "10.244.5.0/24", "192.168.1.1", 5),
                ],
                vec![],
            ),
            // two claims of one CIDR: first by name
            (
                vec![
                    peer("z", "10.244.4.0/24", "192.168.4.26", 26),
                    peer("a", "10.244.4.0/24", "192.168.4.1", 1),
                ],
                vec![("10.244.4.0/24", entry("10.244.4.0", 1, "192.168.4.1"))],
            ),
        ];
        for (peers, want) in cases {
            let want: BTreeMap<Ipv4Net, VtepEntry> = want
                .into_iter()
                .map(|(c, e)| (c.parse().unwrap(), e))
                .collect();
            assert_eq!(desired(own, own_ip, &peers), want, "{peers:?}");
        }
    }

    #[test]
    fn set_plans() {
        let s = |v: &[u8]| v.iter().copied().collect::<BTreeSet<u8>>();
        let cases = [
            (s(&[]), s(&[]), vec![], vec![]),
            (s(&[]), s(&[1, 2]), vec![1, 2], vec![]),
            (s(&[1, 2]), s(&[2, 3]), vec![3], vec![1]),
            (s(&[1]), s(&[]), vec![], vec![1]),
        ];
        for (have, want, add, delete) in cases {
            assert_eq!(set_plan(&have, &want), SetPlan { add, delete });
        }
    }
}

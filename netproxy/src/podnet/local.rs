//! Node-local service addresses, as NodeLocal DNSCache sets them up: a dummy interface in
//! the node's namespace holding a Service's ClusterIP (the cluster DNS, 10.96.0.10) as a
//! /32 (/128), so a listener on the node answers at that address for the pods of the node.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::{LinkBridge, LinkDummy, LinkUnspec};

use super::{Error, Netns, Result, link_index, nl};

/// The default name of the dummy interface (NodeLocal DNSCache calls its `nodelocaldns`).
pub const DEFAULT_LINK: &str = "skiff-dns";

/// The host prefix length of an address (/32 or /128).
pub fn host_prefix(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Makes dummy link `name` in `ns` (an empty bridge where the kernel has no dummy links)
/// holding exactly `addrs` (host prefixes), up. Idempotent; addresses on it that are not in
/// `addrs` are removed.
pub fn ensure(ns: &Netns, name: &str, addrs: &[IpAddr]) -> Result<()> {
    let (name, addrs) = (name.to_string(), addrs.to_vec());
    ns.netlink(move |h| async move {
        let idx = match link_index(&h, &name).await? {
            Some(i) => i,
            None => {
                let dummy = h.link().add(LinkDummy::new(&name).build()).execute().await;
                match dummy {
                    Ok(()) => {}
                    // kernels built without CONFIG_DUMMY: an empty bridge holds local
                    // addresses just as well (it is up with no ports)
                    Err(e) if super::errno(&e) == Some(libc::EOPNOTSUPP) => {
                        tracing::info!(link = %name, "no dummy links in this kernel; using a bridge");
                        h.link()
                            .add(LinkBridge::new(&name).build())
                            .execute()
                            .await
                            .map_err(nl(format!("create bridge {name}")))?;
                    }
                    Err(e) => return Err(nl(format!("create dummy link {name}"))(e)),
                }
                link_index(&h, &name)
                    .await?
                    .ok_or_else(|| Error::NoLink { name: name.clone() })?
            }
        };
        let mut have = Vec::new();
        let mut stale = Vec::new();
        let mut list = h.address().get().set_link_index_filter(idx).execute();
        while let Some(a) = list.try_next().await.map_err(nl("list addresses"))? {
            let ip = a.attributes.iter().find_map(|at| match at {
                netlink_packet_route::address::AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            match ip {
                Some(ip) if addrs.contains(&ip) && a.header.prefix_len == host_prefix(&ip) => {
                    have.push(ip)
                }
                // the kernel's IPv6 link-local address stays
                Some(IpAddr::V6(v6)) if v6.segments()[0] & 0xffc0 == 0xfe80 => {}
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
        for ip in addrs.iter().filter(|ip| !have.contains(ip)) {
            h.address()
                .add(idx, *ip, host_prefix(ip))
                .execute()
                .await
                .map_err(nl(format!("add {ip} to {name}")))?;
        }
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(nl(format!("set {name} up")))?;
        tracing::info!(link = %name, addresses = ?addrs, "node-local service addresses ready");
        Ok(())
    })
}

/// Removes dummy link `name` from `ns`, if it exists.
pub fn remove(ns: &Netns, name: &str) -> Result<bool> {
    let name = name.to_string();
    ns.netlink(move |h| async move { super::delete_link(&h, &name).await })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_prefixes() {
        let cases = [("10.96.0.10", 32), ("fd00::a", 128)];
        for (ip, want) in cases {
            assert_eq!(host_prefix(&ip.parse().unwrap()), want, "{ip}");
        }
    }
}

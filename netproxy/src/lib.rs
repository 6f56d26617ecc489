//! Pod network, nftables Service proxy and cluster DNS (issue 7).
//!
//! The pod network ([`podnet`]): a bridge per node, a veth pair per pod, IP addresses from
//! the node's podCIDR and host-gw routes to the other nodes; the Service proxy ([`proxy`]);
//! cluster DNS ([`dns`]).
#![forbid(unsafe_code)]

/// Cluster DNS (skiff's CoreDNS): Service and pod records, forwarding of other names.
pub mod dns;
/// The pod network: node bridge, per-pod veth and IPAM, host-gw routes, masquerade.
pub mod podnet;
/// The Service proxy (skiff's kube-proxy, nftables mode): ruleset, diff, apply, watch loop.
pub mod proxy;

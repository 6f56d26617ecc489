//! Pod network, nftables Service proxy and cluster DNS (issue 7).
//!
//! Built so far: the pod network ([`podnet`]): a bridge per node, a veth pair per pod,
//! IP addresses from the node's podCIDR and host-gw routes to the other nodes.
#![forbid(unsafe_code)]

/// The pod network: node bridge, per-pod veth and IPAM, host-gw routes, masquerade.
pub mod podnet;

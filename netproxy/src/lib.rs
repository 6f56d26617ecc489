//! Pod network, nftables Service proxy and cluster DNS (issue 7).
#![forbid(unsafe_code)]

/// The Service proxy (skiff's kube-proxy, nftables mode): ruleset, diff, apply, watch loop.
pub mod proxy;
/// Cluster DNS (skiff's CoreDNS): Service and pod records, forwarding of other names.
pub mod dns;

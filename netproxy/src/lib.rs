//! Pod network, nftables Service proxy and cluster DNS (issue 7).
#![forbid(unsafe_code)]

/// Cluster DNS (skiff's CoreDNS): Service and pod records, forwarding of other names.
pub mod dns;

//! Pod network, nftables Service proxy and cluster DNS (issue 7).
#![forbid(unsafe_code)]

/// The Service proxy (skiff's kube-proxy, nftables mode): ruleset, diff, apply, watch loop.
pub mod proxy;

//! Pod network, nftables Service proxy and cluster DNS (issue 7).
//!
//! Not built yet: this crate holds its place in the workspace so that the
//! layout matches docs/architecture.md. Its issue fills it in.
#![forbid(unsafe_code)]

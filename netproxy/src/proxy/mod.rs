//! The Service proxy: skiff's kube-proxy in nftables mode. [`rules::desired`] computes the
//! tables from Services and EndpointSlices, [`diff`] turns the last applied tables and the
//! new ones into one `nft -f -` transaction, [`nft`] runs nft and conntrack, [`sync`] keeps
//! the applied state and [`run`] watches the API and syncs.

/// The difference of two tables as the statements of one transaction.
pub mod diff;
/// The typed model of a table: chains, rules, sets, verdict maps; full rendering.
pub mod model;
/// Running `nft -f -` and `conntrack -D`, optionally in a named network namespace.
pub mod nft;
/// The desired tables as a pure function of Services, EndpointSlices and node.
pub mod rules;
/// The proxier: applied state in memory, incremental and full syncs, conntrack cleanup.
pub mod sync;
/// The watch loop: reflectors over Services and EndpointSlices, debounced syncs.
pub mod watch;

pub use watch::{ApiAccess, ClientError, RunError, Settings, run};

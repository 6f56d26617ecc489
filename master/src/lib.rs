//! API server, store, scheduler and controllers (issues 4 and 5).
//!
//! Not built yet: this crate holds its place in the workspace so that the
//! layout matches docs/architecture.md. Its issue fills it in.
#![forbid(unsafe_code)]

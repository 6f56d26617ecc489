//! Images: registry pull, import, content store, layer unpack, overlay snapshots, image config to OCI spec (issue 3).
//!
//! Not built yet: this crate holds its place in the workspace so that the
//! layout matches docs/architecture.md. Its issue fills it in.
#![forbid(unsafe_code)]

//! skiff-rootfs: everything between an image reference and a root filesystem that
//! skiff-runtime can start: references, registry pulls, a content store, layer unpacking,
//! overlay snapshots, import/export, and image config → OCI runtime spec.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// Import and export: OCI image layouts (directory or tar) and `docker save` archives.
pub mod archive;
/// Content digests (`sha256:…`): parsing, hashing, verification.
pub mod digest;
/// Pulling an image into the store: resolve, download missing blobs, verify, record.
pub mod pull;
/// Image references: Docker-style normalisation, tags, digests, registry host and port.
pub mod reference;
/// The registry client (OCI distribution API through `oci-client`): auth, manifests, blobs.
pub mod registry;
/// Overlay snapshots: each layer unpacked once, a writable upper per container.
pub mod snapshot;
/// Image config → OCI runtime spec (entrypoint/cmd rules, env, user, defaults).
pub mod spec;
/// The content store: blobs by digest, image records, garbage collection.
pub mod store;
/// Layer unpacking: tar entries, OCI whiteouts to overlayfs, escape checks.
pub mod unpack;

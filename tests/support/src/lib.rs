//! skiff-testsupport: what skiff's privileged runtime tests share.
//!
//! A test builds a [`Bundle`] (a busybox-static root filesystem and a `config.json` with
//! `runc spec`'s defaults, edited per test), drives a runc-compatible binary through a
//! [`Runtime`] (skiff under a `skiff-runc` symlink by default, or whatever
//! `SKIFF_TEST_RUNTIME` names, e.g. `runc`), and checks the result on the host with the
//! probes in [`host`]. Every container id a [`Runtime`] hands out is force-deleted when it
//! is dropped, and every temporary directory is removed, also when the test panics.

/// OCI bundles: a busybox-static rootfs and a `runc spec`-default `config.json`.
pub mod bundle;
/// A multi-node cluster on one machine: a LAN namespace with the master, one namespace per
/// agent, all torn down on drop.
pub mod cluster;
/// The console socket: receives a pty master over `SCM_RIGHTS` and talks to it.
pub mod console;
/// Host-side probes: privileges, namespaces, mounts and the cgroup files of a process.
pub mod host;
/// `skiff master` as a child process and the real kubectl against it.
pub mod master;
/// Network namespaces a test owns, and starting processes inside them.
pub mod netns;
/// The driver for a runc-compatible command line with a private `--root` per test.
pub mod runtime;
/// The crate's only unsafe code: taking ownership of a file descriptor received in a message,
/// `statx` for a mount id.
mod sys;
/// Removing an agent's leftovers: shims, pod processes, mounts and cgroups under a prefix.
pub mod teardown;
/// Polling a condition with a deadline instead of sleeping.
pub mod wait;

pub use bundle::{Bundle, runc_default_spec};
pub use host::require_root;
pub use master::{MasterProcess, free_port};
pub use runtime::{Container, Output, Runtime};
pub use sys::mount_id;
pub use wait::poll_until;

//! skiff-runtime: an OCI container runtime as a library.
//!
//! The node agent calls it directly; `skiff runtime …` (also installed as
//! `skiff-runc`) is a thin runc-compatible command line over it. A container is
//! created from an OCI bundle (`config.json` + root filesystem), started, signalled,
//! paused, updated and deleted through [`Runtime`] and [`Container`].
//!
//! Start-up is a typed protocol between the runtime (parent) and two children:
//! a *bootstrap* process that enters or creates the namespaces, and the container's
//! *init* process (pid 1 of a new pid namespace) that builds the root filesystem,
//! applies the process attributes and waits on `exec.fifo` until `start`.
#![deny(missing_docs)]

/// cgroups: v2 through youki's `libcgroups`, v1 and hybrid written directly ([`cgroups::v1`]).
pub mod cgroups;
/// The typed parent/child channel used during container start.
pub mod channel;
/// Terminal handling: pseudo-terminals and `--console-socket`.
pub mod console;
/// Lifecycle of a container: create, start, kill, delete, exec, pause, update, stats.
pub mod container;
/// The crate-wide error type that gathers every module's errors.
pub mod error;
/// OCI hooks: prestart, createRuntime, createContainer, startContainer, poststart, poststop.
pub mod hooks;
/// What runs inside the new process: namespace entry, rootfs, process attributes, exec.
pub mod init;
/// Namespaces from the spec: created new or joined by path.
pub mod namespaces;
/// Process attributes: user, groups, umask, capabilities, rlimits, env, cwd.
pub mod process;
/// Root filesystem: mounts, devices, pivot_root, masked and read-only paths.
pub mod rootfs;
/// Seccomp: the spec's filter compiled with libseccomp, and the default profile.
pub mod seccomp;
/// Signal names and numbers, real-time signals included.
pub mod signal;
/// Loading and validating an OCI bundle before anything is created.
pub mod spec;
/// Container status as a state machine and the state saved under the runtime root.
pub mod state;
/// The raw system calls (the only module with `unsafe`).
pub mod sys;

pub use container::{Container, CreateOptions, ExecOptions, Runtime};
pub use error::{Error, Result};
pub use state::{State, Status};

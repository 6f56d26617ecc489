//! The crate's error type: every module's errors gathered with `#[from]`, plus the
//! lifecycle errors of the container API. Messages are lower case; the CLI prints the
//! whole chain.

use std::path::PathBuf;

use crate::state::Status;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle or its config is invalid.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// State machine or state file.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The start-up protocol.
    #[error(transparent)]
    Channel(#[from] crate::channel::ChannelError),
    /// Namespaces.
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NamespaceError),
    /// Root filesystem.
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    /// Process attributes.
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    /// Seccomp.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// cgroups.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    /// Hooks.
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    /// Terminal.
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    /// The id is not a valid container id.
    #[error("invalid container id {0:?}: use letters, digits, '_', '+', '-' and '.'")]
    InvalidId(String),
    /// A container with this id exists.
    #[error("container with id {0} already exists")]
    Exists(String),
    /// No container with this id.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// The operation is not allowed in the container's current status.
    #[error("container {id} is {status}: cannot {op}")]
    WrongStatus {
        /// Container id.
        id: String,
        /// Its status.
        status: Status,
        /// The refused operation.
        op: &'static str,
    },
    /// `delete` of a live container without force.
    #[error("cannot delete container {id} that is not stopped: {status}")]
    NotStopped {
        /// Container id.
        id: String,
        /// Its status.
        status: Status,
    },
    /// A terminal was asked for without a way to hand it over.
    #[error("cannot allocate a terminal without --console-socket when detached")]
    NoConsoleSocket,
    /// The container process exited before `start` could hand over.
    #[error("container {0} exited before start could run it")]
    ExitedBeforeStart(String),
    /// A system call failed.
    #[error("{what} failed")]
    Sys {
        /// What was attempted.
        what: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// A file operation failed.
    #[error("cannot {what}")]
    Io {
        /// What was attempted.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// execve of the container program failed.
    #[error("cannot exec {program:?}")]
    Exec {
        /// The command line.
        program: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// A path given to the runtime is unusable.
    #[error("invalid path {0}")]
    Path(PathBuf),
}

impl Error {
    /// A failed system call described by `what`.
    pub fn sys(what: impl Into<String>, source: nix::Error) -> Error {
        Error::Sys {
            what: what.into(),
            source,
        }
    }

    /// A failed file operation described by `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

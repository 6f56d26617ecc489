//! The crate-wide error: one variant per module's failures, with context in fields.

/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API client could not be built.
    #[error("cannot build the API client: {0}")]
    Client(String),
    /// An API call failed.
    #[error("API call {what} failed")]
    Api {
        /// Which call.
        what: String,
        /// The cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// The pod network failed.
    #[error("pod network")]
    Network(#[from] skiff_netproxy::podnet::Error),
    /// The CNI plugins failed.
    #[error("failed to set up the pod network")]
    Cni(#[from] skiff_netproxy::podnet::cni::Error),
    /// The Node's podCIDR is not an IPv4 CIDR.
    #[error("the node's podCIDR {0} is not an IPv4 CIDR")]
    PodCidr(String),
    /// The VXLAN overlay needs an IPv4 InternalIP.
    #[error("the VXLAN overlay needs an IPv4 node address, not {0}")]
    VxlanNodeIp(std::net::IpAddr),
    /// A file-system operation failed.
    #[error("cannot {what} {path}")]
    Io {
        /// What was done.
        what: &'static str,
        /// On which path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{what} failed")]
    Sys {
        /// Which call, with context.
        what: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The container runtime failed.
    #[error("container {id}")]
    Runtime {
        /// The container id.
        id: String,
        /// The cause.
        #[source]
        source: Box<skiff_runtime::Error>,
    },
    /// The image store or snapshots failed.
    #[error("image {image}: {message}")]
    Image {
        /// The image reference.
        image: String,
        /// What went wrong (the store's error chain).
        message: String,
    },
    /// The pod's spec cannot be run as asked.
    #[error("pod {pod}: {message}")]
    Spec {
        /// namespace/name.
        pod: String,
        /// What is wrong.
        message: String,
    },
    /// The shim did not answer or refused.
    #[error("shim of pod {uid}: {message}")]
    Shim {
        /// The pod uid.
        uid: String,
        /// What went wrong.
        message: String,
    },
    /// A worker's state machine was asked for an illegal step.
    #[error("pod worker cannot go from {from:?} to {to:?}")]
    Transition {
        /// Current state.
        from: crate::worker::WorkerState,
        /// Asked-for state.
        to: crate::worker::WorkerState,
    },
    /// A JSON record could not be read or written.
    #[error("invalid record {path}")]
    Json {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The logs/exec endpoint could not be set up.
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    /// A background task ended abnormally.
    #[error("task failed: {0}")]
    Task(String),
    /// A memory-medium emptyDir could not be mounted or unmounted.
    #[error(transparent)]
    MemVolume(#[from] crate::memvolume::MemVolumeError),
    /// The pod cgroup's limits could not be written.
    #[error(transparent)]
    PodCgroup(#[from] crate::podcgroup::PodCgroupError),
}

impl Error {
    /// An I/O error with its path.
    pub fn io(
        what: &'static str,
        path: impl Into<std::path::PathBuf>,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// An API error naming the call.
    pub fn api(what: impl Into<String>, source: kube::Error) -> Error {
        Error::Api {
            what: what.into(),
            source: Box::new(source),
        }
    }

    /// A runtime error naming the container.
    pub fn runtime(id: impl Into<String>, source: skiff_runtime::Error) -> Error {
        Error::Runtime {
            id: id.into(),
            source: Box::new(source),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

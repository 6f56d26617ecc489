//! The scheduler and controllers: reconcilers over watch-fed caches (kube-runtime's
//! `Controller`: reconcile, error policy, requeue), talking to the API server through a
//! `kube::Client` like kube-scheduler and kube-controller-manager do. The master runs them in
//! its own process against its own API; with several masters on one etcd only the holder of
//! the leader Lease runs them.

/// The CronJob controller: Jobs on a cron schedule, concurrency, history limits.
pub mod cronjob;
/// The DaemonSet controller: a pod per eligible node, rolling updates.
pub mod daemonset;
/// The Deployment controller: ReplicaSets per template, rollouts, revisions, status.
pub mod deployment;
/// The disruption controller: PodDisruptionBudget status for evictions.
pub mod disruption;
/// Endpoints and EndpointSlices of Services with selectors (and the `kubernetes` Service's).
pub mod endpoints;
/// The pure core of the endpoints controllers (pods → subsets and slices).
pub mod endpoints_core;
/// Recording core/v1 Events for objects (scheduling, scaling, rollouts, evictions).
pub mod events;
/// The garbage collector: ownerReferences cascades (background, foreground, orphan).
pub mod gc;
/// The HorizontalPodAutoscaler controller: scale subresources driven by resource metrics.
pub mod hpa;
/// The pure core of the HorizontalPodAutoscaler: replica calculation, behavior, bounds.
pub mod hpa_core;
/// The Job controller: pods to completions, backoff, deadlines, suspend, TTL.
pub mod job;
/// Leader election through a coordination.k8s.io Lease; only the leader runs the controllers.
pub mod leader;
/// Node IPAM: a podCIDR per Node out of the cluster CIDR.
pub mod nodeipam;
/// Node lifecycle: Lease-based health, NoExecute taints, pod eviction.
pub mod nodelifecycle;
/// A store's readiness awaited by many reconciles at once.
pub mod ready;
/// The ReplicaSet controller: pods to match replicas, adoption, expectations, status.
pub mod replicaset;
/// The scheduler: binds pending pods to nodes through `pods/binding`.
pub mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

/// Tunables of the controllers (all have Kubernetes' defaults).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Pod CIDRs of the whole cluster, split into one block per node: one, or one per
    /// family (`10.244.0.0/16,fd00:10:244::/56`).
    pub cluster_cidr: String,
    /// `--node-cidr-mask-size`: prefix length of each node's podCIDR on a single-stack
    /// cluster (0: not set, the family's default).
    pub node_cidr_mask: u8,
    /// `--node-cidr-mask-size-ipv4` (0: not set, 24).
    pub node_cidr_mask_ipv4: u8,
    /// `--node-cidr-mask-size-ipv6` (0: not set, 64).
    pub node_cidr_mask_ipv6: u8,
    /// A node whose Lease is older than this becomes Ready=Unknown (40 s).
    pub node_monitor_grace_period: Duration,
    /// tolerationSeconds given to pods for the not-ready/unreachable taints (300 s).
    pub default_toleration_seconds: i64,
    /// Pod evictions per second at most (0.1 in Kubernetes; here configurable).
    pub eviction_rate: f64,
    /// This master's identity in leader election.
    pub identity: String,
    /// Leader Lease duration (15 s).
    pub lease_duration: Duration,
    /// Field manager / Event source component name.
    pub component: String,
    /// Where the `kubernetes` Service's Endpoints point (the API server's advertised
    /// address); `None` leaves them alone.
    pub apiserver_address: Option<std::net::SocketAddr>,
    /// Base of the delay before a Job's failed pod is replaced, doubled per failure (10 s).
    pub job_backoff: Duration,
    /// How often each HPA is synced (`--horizontal-pod-autoscaler-sync-period`, 15 s).
    pub hpa_sync_period: Duration,
    /// The scale-down stabilization window of HPAs without `spec.behavior`
    /// (`--horizontal-pod-autoscaler-downscale-stabilization`, 5 m).
    pub hpa_downscale_stabilization: Duration,
    /// The clock of time-driven controllers (the CronJob schedule); tests move it.
    pub clock: fn() -> chrono::DateTime<chrono::Utc>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster_cidr: "10.244.0.0/16".into(),
            node_cidr_mask: 0,
            node_cidr_mask_ipv4: 0,
            node_cidr_mask_ipv6: 0,
            node_monitor_grace_period: Duration::from_secs(40),
            default_toleration_seconds: 300,
            eviction_rate: 0.1,
            identity: default_identity(),
            lease_duration: Duration::from_secs(15),
            component: "skiff-controller-manager".into(),
            apiserver_address: None,
            job_backoff: Duration::from_secs(10),
            hpa_sync_period: Duration::from_secs(15),
            hpa_downscale_stabilization: Duration::from_secs(300),
            clock: chrono::Utc::now,
        }
    }
}

/// `<hostname>_<pid>`, as Kubernetes components name themselves in leader election.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "skiff".into());
    format!("{host}_{}", std::process::id())
}

/// What every controller gets.
#[derive(Clone)]
pub struct Context {
    /// A client of this cluster's API server (admin credentials).
    pub client: kube::Client,
    /// Tunables.
    pub settings: Arc<Settings>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Errors of the controllers.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// An API call failed.
    #[error("api call failed")]
    Kube(#[from] kube::Error),
    /// The client could not be built from the kubeconfig.
    #[error("cannot build a client from {path}")]
    Config {
        /// The kubeconfig.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A setting is invalid.
    #[error("invalid setting: {0}")]
    Settings(String),
    /// An object the controller works on is malformed.
    #[error("{0}")]
    Invalid(String),
}

/// A client with the admin credentials of `kubeconfig` (the master's `admin.kubeconfig`).
pub async fn client_from_kubeconfig(
    kubeconfig: &std::path::Path,
) -> Result<kube::Client, ControllerError> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| ControllerError::Config {
        path: kubeconfig.to_path_buf(),
        source: e,
    };
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| err(Box::new(e)))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| err(Box::new(e)))?;
    kube::Client::try_from(config).map_err(|e| err(Box::new(e)))
}

/// Runs every controller until they all stop (they run until the task is dropped).
pub async fn run(ctx: Context) -> Result<(), ControllerError> {
    let mut set: tokio::task::JoinSet<Result<(), ControllerError>> = tokio::task::JoinSet::new();
    // Each controller module adds itself here: set.spawn(module::run(ctx.clone()));
    set.spawn(replicaset::run(ctx.clone()));
    set.spawn(deployment::run(ctx.clone()));
    set.spawn(scheduler::run(ctx.clone()));
    set.spawn(gc::run(ctx.clone()));
    set.spawn(endpoints::run(ctx.clone()));
    set.spawn(nodeipam::run(ctx.clone()));
    set.spawn(nodelifecycle::run(ctx.clone()));
    set.spawn(job::run(ctx.clone()));
    set.spawn(cronjob::run(ctx.clone()));
    set.spawn(daemonset::run(ctx.clone()));
    set.spawn(hpa::run(ctx.clone()));
    set.spawn(disruption::run(ctx.clone()));
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "controller stopped"),
            Err(e) => warn!(error = %e, "controller task failed"),
        }
    }
    Ok::<(), ControllerError>(())
}

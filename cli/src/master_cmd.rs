//! `skiff master`: the API server, the scheduler and the controllers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{ArgAction, Args, ValueEnum};
use skiff_master::controllers::ControllerError;
use skiff_master::store::Store;

/// Where the master keeps the cluster's objects.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum StoreKind {
    /// A durable file in the data dir (redb); one master.
    Embedded,
    /// An etcd cluster (v3 API), which several masters can share.
    Etcd,
}

/// `skiff master`.
#[derive(Args, Debug)]
pub struct MasterArgs {
    /// Certificates, tokens, kubeconfig and the embedded store live here.
    #[arg(long)]
    data_dir: PathBuf,
    /// Store backend.
    #[arg(long, value_enum, default_value = "embedded")]
    store: StoreKind,
    /// etcd client URLs (`http://10.0.0.1:2379,http://10.0.0.2:2379`), with `--store etcd`.
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Prefix of every key in etcd, so several clusters can share one etcd.
    #[arg(long, default_value = "/skiff")]
    etcd_prefix: String,
    /// How often etcd's history is compacted (like kube-apiserver's; `5m`, `30s`; 0 = never).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    etcd_compaction_interval: std::time::Duration,
    /// Run the scheduler and controllers only while holding the leader Lease
    /// (kube-system/skiff-controller-manager), so several masters can share one store.
    /// Default: true with `--store etcd`; false with the embedded store, which only one
    /// master can open (a restarted master would otherwise wait out its own old Lease).
    #[arg(long, action = ArgAction::Set)]
    leader_elect: Option<bool>,
    /// How long a leader Lease nobody renews stays with its holder.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    leader_elect_lease_duration: std::time::Duration,
    /// How long the leader keeps trying to renew before it stops its controllers.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    leader_elect_renew_deadline: std::time::Duration,
    /// Between two tries to acquire or renew the leader Lease.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    leader_elect_retry_period: std::time::Duration,
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// Service ClusterIP ranges: one CIDR, or two of different families for dual-stack
    /// Services (`10.96.0.0/12,fd00:10:96::/108`); the first is the primary family.
    #[arg(
        long = "service-cluster-ip-range",
        visible_alias = "service-cidr",
        default_value = "10.96.0.0/12"
    )]
    service_cidr: String,
    /// NodePort range, inclusive (`LOW-HIGH`).
    #[arg(long, default_value = "30000-32767")]
    node_port_range: String,
    /// Pod CIDRs of the cluster, one or one per family (`10.244.0.0/16,fd00:10:244::/56`);
    /// each node gets one block of each as its podCIDRs.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// Prefix length of each node's podCIDR on a single-stack cluster (default: the
    /// family's, 24 or 64; not allowed with two cluster CIDRs).
    #[arg(long)]
    node_cidr_mask_size: Option<u8>,
    /// Prefix length of each node's IPv4 podCIDR (default 24).
    #[arg(long)]
    node_cidr_mask_size_ipv4: Option<u8>,
    /// Prefix length of each node's IPv6 podCIDR (default 64).
    #[arg(long)]
    node_cidr_mask_size_ipv6: Option<u8>,
    /// Seconds without a Lease renewal before a node is marked Ready=Unknown.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: u64,
    /// Seconds pods tolerate an unreachable or not-ready node before they are evicted.
    #[arg(long, default_value_t = 300)]
    default_toleration_seconds: i64,
    /// Pods evicted from unreachable or not-ready nodes per second at most.
    #[arg(long, default_value_t = 0.1)]
    node_eviction_rate: f64,
    /// How often each HorizontalPodAutoscaler is synced.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// Scale-down stabilization window of HorizontalPodAutoscalers without spec.behavior.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    horizontal_pod_autoscaler_downscale_stabilization: std::time::Duration,
    /// Serve the API only: no scheduler or controllers.
    #[arg(long)]
    no_controllers: bool,
}

fn parse_range(s: &str) -> Result<(u16, u16)> {
    let (lo, hi) = s
        .split_once('-')
        .with_context(|| format!("node port range {s:?} is not LOW-HIGH"))?;
    let lo: u16 = lo.trim().parse().context("node port range low end")?;
    let hi: u16 = hi.trim().parse().context("node port range high end")?;
    if lo > hi {
        bail!("node port range {s:?} is empty");
    }
    Ok((lo, hi))
}

/// A Kubernetes-style duration: `15s`, `500ms`, `5m`, `1h` (a bare number is seconds).
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 15s"))?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(std::time::Duration::from_millis(n.saturating_mul(ms)))
}

/// Opens the store the arguments name; for etcd also starts its compactor.
async fn open_store(args: &MasterArgs) -> Result<Arc<dyn Store>> {
    match args.store {
        StoreKind::Embedded => {
            if !args.etcd_endpoints.is_empty() {
                bail!("--etcd-endpoints needs --store etcd");
            }
            let path = args.data_dir.join("store.redb");
            Ok(Arc::new(
                skiff_master::store::embedded::EmbeddedStore::open(&path)
                    .with_context(|| format!("cannot open the store {}", path.display()))?,
            ))
        }
        StoreKind::Etcd => {
            if args.etcd_endpoints.is_empty() {
                bail!("--store etcd needs --etcd-endpoints");
            }
            let store = Arc::new(
                skiff_master::store::etcd::EtcdStore::connect(
                    &args.etcd_endpoints,
                    &args.etcd_prefix,
                )
                .await
                .with_context(|| {
                    format!(
                        "cannot connect to etcd at {}",
                        args.etcd_endpoints.join(",")
                    )
                })?,
            );
            if !args.etcd_compaction_interval.is_zero() {
                let compactor = store.clone();
                let interval = args.etcd_compaction_interval;
                tokio::spawn(async move { compactor.run_compactor(interval).await });
            }
            Ok(store)
        }
    }
}

/// A running master: the API server and, unless `--no-controllers`, the scheduler and
/// controllers.
pub(crate) struct Master {
    /// The API server.
    pub handle: skiff_master::api::ServerHandle,
    /// The controllers' task.
    pub controllers: Option<tokio::task::JoinHandle<Result<(), ControllerError>>>,
}

impl Master {
    /// Stops the controllers and the API server.
    pub async fn stop(self) {
        if let Some(c) = self.controllers {
            c.abort();
        }
        self.handle.shutdown().await;
    }
}

/// Opens the store, starts the API server and the controllers; returns once it serves.
pub(crate) async fn start(args: &MasterArgs) -> Result<Master> {
    let node_port_range = parse_range(&args.node_port_range)?;
    // refused at start, as kube-controller-manager refuses them
    skiff_master::controllers::nodeipam::cidr_sets(
        &args.cluster_cidr,
        args.node_cidr_mask_size.unwrap_or(0),
        args.node_cidr_mask_size_ipv4.unwrap_or(0),
        args.node_cidr_mask_size_ipv6.unwrap_or(0),
    )
    .context("invalid --cluster-cidr or node CIDR mask flags")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let store = open_store(args).await?;
    let handle = skiff_master::api::serve(skiff_master::api::Config {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        service_cidr: args.service_cidr.clone(),
        node_port_range,
        store,
    })
    .await
    .context("cannot start the API server")?;
    handle.set_default_toleration_seconds(args.default_toleration_seconds);
    let controllers = if args.no_controllers {
        None
    } else {
        let settings = skiff_master::controllers::Settings {
            lease_duration: args.leader_elect_lease_duration,
            cluster_cidr: args.cluster_cidr.clone(),
            node_cidr_mask: args.node_cidr_mask_size.unwrap_or(0),
            node_cidr_mask_ipv4: args.node_cidr_mask_size_ipv4.unwrap_or(0),
            node_cidr_mask_ipv6: args.node_cidr_mask_size_ipv6.unwrap_or(0),
            node_monitor_grace_period: std::time::Duration::from_secs(
                args.node_monitor_grace_period,
            ),
            default_toleration_seconds: args.default_toleration_seconds,
            eviction_rate: args.node_eviction_rate,
            hpa_sync_period: args.horizontal_pod_autoscaler_sync_period,
            hpa_downscale_stabilization: args.horizontal_pod_autoscaler_downscale_stabilization,
            apiserver_address: skiff_master::controllers::endpoints::advertise_address(handle.addr),
            ..Default::default()
        };
        let client = skiff_master::controllers::client_from_kubeconfig(&handle.kubeconfig)
            .await
            .context("cannot connect the controllers to the API server")?;
        let ctx = skiff_master::controllers::Context {
            client,
            settings: Arc::new(settings),
        };
        if args.leader_elect.unwrap_or(args.store == StoreKind::Etcd) {
            let mut election =
                skiff_master::controllers::leader::ElectionConfig::from_settings(&ctx.settings);
            election.renew_deadline = args.leader_elect_renew_deadline;
            election.retry_period = args.leader_elect_retry_period;
            election
                .validate()
                .context("invalid leader election flags")?;
            Some(tokio::spawn(
                skiff_master::controllers::leader::run_elected(ctx, election),
            ))
        } else {
            Some(tokio::spawn(skiff_master::controllers::run(ctx)))
        }
    };
    Ok(Master {
        handle,
        controllers,
    })
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
}

/// Runs the master until SIGINT/SIGTERM.
pub fn main(args: MasterArgs) -> Result<i32> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let master = start(&args).await?;
        eprintln!(
            "skiff master: serving https://{} (kubeconfig: {})",
            master.handle.addr,
            master.handle.kubeconfig.display()
        );
        shutdown_signal()?.await;
        master.stop().await;
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("15s", 15_000),
            ("15", 15_000),
            ("500ms", 500),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("0", 0),
        ];
        for (s, ms) in ok {
            assert_eq!(
                parse_duration(s),
                Ok(std::time::Duration::from_millis(ms)),
                "{s}"
            );
        }
        for s in ["", "s", "15x", "1.5s", "-1s"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
    }
}

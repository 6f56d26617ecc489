//! `skiff master`: the API server, the scheduler and the controllers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;

/// `skiff master`.
#[derive(Args, Debug)]
pub struct MasterArgs {
    /// Certificates, tokens, kubeconfig and the store live here.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// Service ClusterIP range.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: String,
    /// NodePort range, inclusive (`LOW-HIGH`).
    #[arg(long, default_value = "30000-32767")]
    node_port_range: String,
    /// Pod CIDR of the cluster; each node gets one block of it as its podCIDR.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// Prefix length of each node's podCIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Seconds without a Lease renewal before a node is marked Ready=Unknown.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: u64,
    /// Seconds pods tolerate an unreachable or not-ready node before they are evicted.
    #[arg(long, default_value_t = 300)]
    default_toleration_seconds: i64,
    /// Pods evicted from unreachable or not-ready nodes per second at most.
    #[arg(long, default_value_t = 0.1)]
    node_eviction_rate: f64,
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

/// Runs the master until SIGINT/SIGTERM.
pub fn main(args: MasterArgs) -> Result<i32> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let node_port_range = parse_range(&args.node_port_range)?;
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
        let path = args.data_dir.join("store.redb");
        let store: Arc<dyn skiff_master::store::Store> = Arc::new(
            skiff_master::store::embedded::EmbeddedStore::open(&path)
                .with_context(|| format!("cannot open the store {}", path.display()))?,
        );
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
                cluster_cidr: args.cluster_cidr.clone(),
                node_cidr_mask: args.node_cidr_mask_size,
                node_monitor_grace_period: std::time::Duration::from_secs(
                    args.node_monitor_grace_period,
                ),
                default_toleration_seconds: args.default_toleration_seconds,
                eviction_rate: args.node_eviction_rate,
                apiserver_address: skiff_master::controllers::endpoints::advertise_address(
                    handle.addr,
                ),
                ..Default::default()
            };
            let client = skiff_master::controllers::client_from_kubeconfig(&handle.kubeconfig)
                .await
                .context("cannot connect the controllers to the API server")?;
            let ctx = skiff_master::controllers::Context {
                client,
                settings: Arc::new(settings),
            };
            Some(tokio::spawn(skiff_master::controllers::run(ctx)))
        };
        eprintln!(
            "skiff master: serving https://{} (kubeconfig: {})",
            handle.addr,
            handle.kubeconfig.display()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot install the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        if let Some(c) = controllers {
            c.abort();
        }
        handle.shutdown().await;
        Ok(0)
    })
}

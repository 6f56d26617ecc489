//! `skiff proxy`: the Service proxy (skiff's kube-proxy, nftables mode) on its own.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use skiff_netproxy::proxy::rules::{Cidr, NodePortAddresses, RulesConfig};
use skiff_netproxy::proxy::{ApiAccess, Settings};

use crate::master_cmd::parse_duration;

/// `skiff proxy`.
#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// API server URL (https://HOST:PORT); with --token.
    #[arg(long, required_unless_present_any = ["kubeconfig", "cleanup"], requires = "token")]
    server: Option<String>,
    /// Bearer token (the master's DATA_DIR/node-token).
    #[arg(long, env = "SKIFF_NODE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Cluster CA certificate, with --server.
    #[arg(long, default_value = "/etc/skiff/ca.crt")]
    ca_file: PathBuf,
    /// A kubeconfig instead of --server and --token.
    #[arg(long, conflicts_with = "server")]
    kubeconfig: Option<PathBuf>,
    /// This node's name (default: the hostname): endpoints on it are local.
    #[arg(long)]
    node_name: Option<String>,
    /// This node's addresses (repeatable), for `--nodeport-addresses primary`.
    #[arg(long = "node-ip")]
    node_ips: Vec<IpAddr>,
    /// Where NodePorts answer: every local address but loopback (default), `primary` (the
    /// --node-ip addresses) or a comma-separated list of addresses.
    #[arg(long)]
    nodeport_addresses: Option<String>,
    /// The pod network (repeatable): traffic to ClusterIPs from outside it is masqueraded.
    #[arg(long = "cluster-cidr", default_value = "10.244.0.0/16")]
    cluster_cidrs: Vec<Cidr>,
    /// The Service network (repeatable): its unallocated addresses are dropped.
    #[arg(long = "service-cidr", default_value = "10.96.0.0/12")]
    service_cidrs: Vec<Cidr>,
    /// Masquerade all traffic to ClusterIPs.
    #[arg(long)]
    masquerade_all: bool,
    /// Least time between two syncs (`500ms`, `1s`).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    min_sync_period: Duration,
    /// Most time between two syncs.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    sync_period: Duration,
    /// Program this network namespace (under /run/netns) instead of the proxy's own.
    #[arg(long)]
    netns: Option<String>,
    /// Remove the proxy's tables and exit.
    #[arg(long)]
    cleanup: bool,
}

fn nodeport_addresses(a: &ProxyArgs) -> Result<NodePortAddresses> {
    match a.nodeport_addresses.as_deref() {
        None => Ok(NodePortAddresses::AllLocal),
        Some("primary") => {
            if a.node_ips.is_empty() {
                bail!("--nodeport-addresses primary needs --node-ip");
            }
            Ok(NodePortAddresses::Only(a.node_ips.clone()))
        }
        Some(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<IpAddr>()
                    .with_context(|| format!("invalid NodePort address {s:?}"))
            })
            .collect::<Result<Vec<_>>>()
            .map(NodePortAddresses::Only),
    }
}

/// Runs the proxy until SIGINT/SIGTERM.
pub fn main(a: ProxyArgs) -> Result<i32> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let node_name = match &a.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .context("cannot read the hostname")?
            .to_string_lossy()
            .to_ascii_lowercase(),
    };
    let rules = RulesConfig {
        node_name,
        nodeport_addresses: nodeport_addresses(&a)?,
        cluster_cidrs: a.cluster_cidrs.clone(),
        service_cidrs: a.service_cidrs.clone(),
        masquerade_all: a.masquerade_all,
        ..RulesConfig::default()
    };
    let mut settings = Settings::new(rules);
    settings.min_sync_interval = a.min_sync_period;
    settings.sync_period = a.sync_period;
    settings.netns = a.netns.clone();
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        if a.cleanup {
            let nft = skiff_netproxy::proxy::nft::Nft {
                netns: settings.netns.clone(),
            };
            for family in ["ip", "ip6"] {
                nft.delete_table(family, &settings.rules.table)
                    .await
                    .with_context(|| format!("cannot delete table {family} skiff"))?;
            }
            return anyhow::Ok(());
        }
        let access = match (a.kubeconfig, a.server, a.token) {
            (Some(path), _, _) => ApiAccess::Kubeconfig(path),
            (None, Some(server), Some(token)) => ApiAccess::Token {
                server,
                token,
                ca_file: a.ca_file,
            },
            _ => bail!("give --kubeconfig, or --server and --token"),
        };
        let client = access.client().await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot install the SIGTERM handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        skiff_netproxy::proxy::run(client, settings, shutdown).await?;
        anyhow::Ok(())
    })?;
    Ok(0)
}

//! `skiff dns`: cluster DNS (skiff's CoreDNS) on its own.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

/// `skiff dns`.
#[derive(Args, Debug)]
pub struct DnsArgs {
    /// API server URL (https://HOST:PORT); with --token.
    #[arg(long, requires = "token")]
    server: Option<String>,
    /// Bearer token for --server (e.g. the master's DATA_DIR/node-token).
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Cluster CA certificate for --server (the master's DATA_DIR/ca.crt).
    #[arg(long, default_value = "/etc/skiff/ca.crt")]
    ca_file: PathBuf,
    /// A kubeconfig instead of --server/--token.
    #[arg(long, conflicts_with_all = ["server", "token"])]
    kubeconfig: Option<PathBuf>,
    /// UDP and TCP listen address.
    #[arg(long, default_value = "10.96.0.10:53")]
    listen: SocketAddr,
    /// Cluster domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// TTL of the cluster records, in seconds.
    #[arg(long, default_value_t = 5)]
    ttl: u32,
    /// Upstream resolver for other names (IP or IP:PORT), repeatable; default: the
    /// nameservers of --resolv-conf.
    #[arg(long = "upstream")]
    upstreams: Vec<String>,
    /// Where the node's resolvers are read from when no --upstream is given.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
}

/// `IP` (port 53) or `IP:PORT`.
fn upstream(s: &str) -> Result<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let ip: std::net::IpAddr = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .with_context(|| format!("--upstream {s}: neither IP nor IP:PORT"))?;
    Ok(SocketAddr::new(ip, 53))
}

async fn client(a: &DnsArgs) -> Result<kube::Client> {
    let kc = match (&a.kubeconfig, &a.server, &a.token) {
        (Some(path), _, _) => kube::config::Kubeconfig::read_from(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        (None, Some(server), Some(token)) => serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "skiff", "cluster": {
                "server": server,
                "certificate-authority": a.ca_file,
            }}],
            "users": [{"name": "dns", "user": {"token": token}}],
            "contexts": [{"name": "dns", "context": {"cluster": "skiff", "user": "dns"}}],
            "current-context": "dns",
        }))
        .context("cannot build the client configuration")?,
        _ => bail!("give --server and --token, or --kubeconfig"),
    };
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .context("cannot configure the API client")?;
    kube::Client::try_from(config).context("cannot create the API client")
}

/// Serves cluster DNS until SIGINT/SIGTERM.
pub fn main(a: DnsArgs) -> Result<i32> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let upstreams = a
        .upstreams
        .iter()
        .map(|s| upstream(s))
        .collect::<Result<Vec<_>>>()?;
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let client = client(&a).await?;
        let settings = skiff_netproxy::dns::Settings {
            listen: a.listen,
            cluster_domain: a.cluster_domain.clone(),
            ttl: a.ttl,
            upstreams,
            resolv_conf: a.resolv_conf.clone(),
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot handle SIGTERM")?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        skiff_netproxy::dns::run(client, settings, shutdown)
            .await
            .context("cluster dns failed")?;
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_addresses() {
        let cases = [
            ("10.0.0.2", Some("10.0.0.2:53")),
            ("10.0.0.2:5353", Some("10.0.0.2:5353")),
            ("fd00::53", Some("[fd00::53]:53")),
            ("[fd00::53]:54", Some("[fd00::53]:54")),
            ("dns.example", None),
        ];
        for (arg, want) in cases {
            assert_eq!(
                upstream(arg).ok(),
                want.map(|w| w.parse().unwrap()),
                "{arg}"
            );
        }
    }
}

//! `skiff up`: a one-node cluster in one process (master with the embedded store, agent
//! with pod network, Service proxy and cluster DNS), for laptops, demos and CI.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser};
use k8s_openapi::api::core::v1::Node;

use crate::agent_cmd::AgentArgs;
use crate::master_cmd::MasterArgs;

/// `skiff up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// The master's certificates, tokens, store and admin.kubeconfig.
    #[arg(long, default_value = "/var/lib/skiff/master")]
    data_dir: PathBuf,
    /// The node's InternalIP, where NodePorts answer (default: the address of the default
    /// route's interface).
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// Node name (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// The API server's port (HTTPS on every address).
    #[arg(long, default_value_t = 6443)]
    port: u16,
    /// The agent's images, snapshots and pod volumes.
    #[arg(long, default_value = "/var/lib/skiff")]
    root_dir: PathBuf,
    /// The agent's runtime state, network namespaces and shim sockets.
    #[arg(long, default_value = "/run/skiff")]
    run_dir: PathBuf,
    /// Container logs.
    #[arg(long, default_value = "/var/log/pods")]
    log_dir: PathBuf,
    /// cgroup path under which pod cgroups are made.
    #[arg(long, default_value = "skiff")]
    cgroup_prefix: String,
    /// Rotate a container's log once it reaches this size (passed to the agent).
    #[arg(long, default_value = "10Mi")]
    container_log_max_size: String,
    /// Log files kept per container run (passed to the agent).
    #[arg(long, default_value_t = skiff_agent::logrotate::DEFAULT_MAX_FILES)]
    container_log_max_files: u32,
    /// Hard eviction thresholds (passed to the agent; "" for none).
    #[arg(long, default_value = skiff_agent::eviction::DEFAULT_HARD)]
    eviction_hard: String,
}

/// `skiff master …` / `skiff agent …` argument lists, parsed as those commands parse them.
#[derive(Parser)]
struct MasterCli {
    #[command(flatten)]
    args: MasterArgs,
}

#[derive(Parser)]
struct AgentCli {
    #[command(flatten)]
    args: AgentArgs,
}

/// The agent's command line for this cluster.
fn agent_argv(a: &UpArgs, node_ip: IpAddr, token: &str) -> Vec<String> {
    let path = |p: &PathBuf| p.display().to_string();
    let mut v: Vec<String> = vec![
        "agent".into(),
        "--server".into(),
        format!("https://127.0.0.1:{}", a.port),
        "--token".into(),
        token.into(),
        "--ca-file".into(),
        path(&a.data_dir.join("ca.crt")),
        "--node-ip".into(),
        node_ip.to_string(),
        "--root-dir".into(),
        path(&a.root_dir),
        "--run-dir".into(),
        path(&a.run_dir),
        "--log-dir".into(),
        path(&a.log_dir),
        "--cgroup-prefix".into(),
        a.cgroup_prefix.clone(),
        "--container-log-max-size".into(),
        a.container_log_max_size.clone(),
        "--container-log-max-files".into(),
        a.container_log_max_files.to_string(),
        format!("--eviction-hard={}", a.eviction_hard),
    ];
    if let Some(n) = &a.node_name {
        v.extend(["--node-name".into(), n.clone()]);
    }
    v
}

/// Whether the Node's Ready condition is True.
fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Runs the one-node cluster until SIGINT/SIGTERM. Pods stay as the agent leaves them; a
/// later `skiff up` with the same directories adopts them.
pub fn main(a: UpArgs) -> Result<i32> {
    crate::agent_cmd::run_protected()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    let node_ip = match a.node_ip {
        Some(ip) => ip,
        None => crate::agent_cmd::default_route_address()?,
    };
    let master_argv = [
        "master".to_string(),
        "--data-dir".into(),
        a.data_dir.display().to_string(),
        "--listen".into(),
        format!("0.0.0.0:{}", a.port),
    ];
    let master_args = MasterCli::try_parse_from(master_argv)?.args;
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let shutdown = crate::master_cmd::shutdown_signal()?;
        let master = crate::master_cmd::start(&master_args).await?;
        let kubeconfig = master.handle.kubeconfig.clone();
        let agent_args =
            AgentCli::try_parse_from(agent_argv(&a, node_ip, &master.handle.node_token))?.args;
        let config = crate::agent_cmd::config(agent_args)?;
        let node_name = config.node_name.clone();
        let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
        let mut agent = tokio::spawn(skiff_agent::run(config, async move {
            let _ = agent_stopped.await;
        }));
        outln!(
            "skiff up: API server on https://{node_ip}:{} (node {node_name}, {node_ip})",
            a.port
        );
        outln!("  export KUBECONFIG={}", kubeconfig.display());
        let client = skiff_master::controllers::client_from_kubeconfig(&kubeconfig)
            .await
            .context("cannot connect to the API server")?;
        let nodes: kube::Api<Node> = kube::Api::all(client);
        let ready = async {
            loop {
                if let Ok(Some(n)) = nodes.get_opt(&node_name).await {
                    if node_ready(&n) {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        tokio::pin!(shutdown);
        let result = tokio::select! {
            _ = &mut shutdown => Ok(()),
            r = &mut agent => Err(agent_ended(r)),
            _ = ready => {
                outln!(
                    "skiff up: node {node_name} is Ready ({:.1}s); try: kubectl get nodes",
                    started.elapsed().as_secs_f64()
                );
                tokio::select! {
                    _ = &mut shutdown => Ok(()),
                    r = &mut agent => Err(agent_ended(r)),
                }
            }
        };
        let _ = stop_agent.send(());
        if !agent.is_finished() {
            let _ = tokio::time::timeout(Duration::from_secs(10), &mut agent).await;
        }
        master.stop().await;
        outln!("skiff up: stopped (pods keep running; `skiff up` again adopts them)");
        result.map(|()| 0)
    })
}

/// The error for an agent that stopped on its own.
fn agent_ended(r: Result<skiff_agent::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match r {
        Ok(Ok(())) => anyhow::anyhow!("the agent stopped"),
        Ok(Err(e)) => anyhow::Error::new(e).context("the agent failed"),
        Err(e) => anyhow::anyhow!("the agent task failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_command_line_parses_as_skiff_agent() {
        let up = UpArgs {
            data_dir: "/d/master".into(),
            node_ip: None,
            node_name: Some("n1".into()),
            port: 7443,
            root_dir: "/d/root".into(),
            run_dir: "/d/run".into(),
            log_dir: "/d/log".into(),
            cgroup_prefix: "skiff-t".into(),
            container_log_max_size: "1Mi".into(),
            container_log_max_files: 3,
            eviction_hard: "memory.available<1Gi".into(),
        };
        let argv = agent_argv(&up, "10.9.0.2".parse().unwrap(), "tok");
        let a = AgentCli::try_parse_from(argv).unwrap().args;
        let dbg = format!("{a:?}");
        for want in [
            "server: \"https://127.0.0.1:7443\"",
            "ca_file: \"/d/master/ca.crt\"",
            "node_ip: [10.9.0.2]",
            "node_name: Some(\"n1\")",
            "cgroup_prefix: \"skiff-t\"",
            "eviction_hard: \"memory.available<1Gi\"",
            "container_log_max_size: 1048576",
            "container_log_max_files: 3",
            "proxy: true",
            "dns: true",
        ] {
            assert!(dbg.contains(want), "{want} not in {dbg}");
        }
        // what the agent tests in the host's namespace pass
        let mut argv = agent_argv(&up, "10.9.0.2".parse().unwrap(), "tok");
        argv.extend(["--proxy=false".into(), "--dns=false".into()]);
        let a = AgentCli::try_parse_from(argv).unwrap().args;
        let dbg = format!("{a:?}");
        assert!(
            dbg.contains("proxy: false") && dbg.contains("dns: false"),
            "{dbg}"
        );
    }
}

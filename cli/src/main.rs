//! `skiff`: the one binary. It only parses arguments, sets up logging and calls into the
//! library crates. Started as `skiff-runc` (a symlink) it is exactly `skiff runtime`.

mod agent_cmd;
mod dns_cmd;
mod image_cmd;
mod master_cmd;
mod proxy_cmd;
mod run_cmd;
mod runtime_cmd;
mod terminal;
mod up_cmd;

use std::path::Path;

use clap::{Parser, Subcommand};

/// skiff: a small Kubernetes for bare-metal Linux workers.
#[derive(Parser, Debug)]
#[command(name = "skiff", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The OCI container runtime, runc-compatible (also installed as `skiff-runc`).
    Runtime(runtime_cmd::RuntimeCli),
    /// Images: pull, import, export, ls, inspect, rm, prune.
    Image(image_cmd::ImageCli),
    /// Run a container from an image (pulls it if needed), like `podman run`.
    Run(run_cmd::RunArgs),
    /// List containers started by `skiff run`.
    Ps(run_cmd::PsArgs),
    /// Remove containers started by `skiff run`.
    Rm(run_cmd::RmArgs),
    /// The API server: Kubernetes REST API over HTTPS.
    Master(master_cmd::MasterArgs),
    /// The node agent: registers this node and runs the pods bound to it.
    Agent(agent_cmd::AgentArgs),
    /// The Service proxy: programs nftables from Services and EndpointSlices (kube-proxy).
    Proxy(proxy_cmd::ProxyArgs),
    /// Cluster DNS: Service and pod records, other names forwarded upstream.
    Dns(dns_cmd::DnsArgs),
    /// A one-node cluster in one process: master, agent, Service proxy and cluster DNS.
    Up(up_cmd::UpArgs),
    /// Internal: the per-pod shim the agent starts.
    #[command(name = "__shim", hide = true)]
    Shim(agent_cmd::ShimArgs),
    /// Internal: wait for a detached `run --rm` container and clean it up.
    #[command(name = "__reap", hide = true)]
    Reap(run_cmd::ReapArgs),
}

/// Logging for the non-runtime commands: warnings to stderr, `SKIFF_LOG` to change it.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,libcgroups=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let code = if name == "skiff-runc" || name == "runc" {
        runtime_cmd::main(runtime_cmd::RuntimeCli::parse())
    } else {
        let cli = Cli::parse();
        // the shim logs to its own copy of stderr (it lends fds 1 and 2 to containers)
        if !matches!(cli.command, Command::Runtime(_) | Command::Shim(_)) {
            init_logging();
        }
        let result = match cli.command {
            Command::Runtime(rt) => Ok(runtime_cmd::main(rt)),
            Command::Image(a) => image_cmd::main(a),
            Command::Run(a) => run_cmd::run(a),
            Command::Ps(a) => run_cmd::ps(a),
            Command::Rm(a) => run_cmd::rm(a),
            Command::Reap(a) => run_cmd::reap(a),
            Command::Master(a) => master_cmd::main(a),
            Command::Agent(a) => agent_cmd::main(a),
            Command::Proxy(a) => proxy_cmd::main(a),
            Command::Dns(a) => dns_cmd::main(a),
            Command::Up(a) => up_cmd::main(a),
            Command::Shim(a) => agent_cmd::shim(a),
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                eprintln!("skiff: {e:#}");
                125
            }
        }
    };
    std::process::exit(code);
}

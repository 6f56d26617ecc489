//! `skiff`: the one binary. It only parses arguments, sets up logging and calls into the
//! library crates. Started as `skiff-runc` (a symlink) it is exactly `skiff runtime`.

#[macro_use]
mod stdout;

mod agent_cmd;
mod config_file;
mod ctl;
mod dns_cmd;
mod eviction_args;
mod image_cmd;
mod install_cmd;
mod master_cmd;
mod proxy_cmd;
mod run_cmd;
mod runtime_cmd;
mod terminal;
mod uninstall_ops;
mod up_cmd;

use std::path::Path;

use runtime_cmd::LogFormat;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// skiff: a small Kubernetes for bare-metal Linux workers.
#[derive(Parser, Debug)]
#[command(name = "skiff", version, about, propagate_version = true)]
struct Cli {
    /// Config file with defaults for `master` and `agent` flags (see docs/install.md); flags
    /// on the command line win over it. A missing default file is ignored.
    #[arg(long, global = true, value_name = "FILE", default_value = config_file::DEFAULT_PATH)]
    config: std::path::PathBuf,
    /// Log line format on stderr: `text` for people, `json` (one object a line) for collectors.
    /// One type with `skiff runtime --log-format` (runc's flag): clap shares the argument.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
    Agent(Box<agent_cmd::AgentArgs>),
    /// The Service proxy: programs nftables from Services and EndpointSlices (kube-proxy).
    Proxy(proxy_cmd::ProxyArgs),
    /// Cluster DNS: Service and pod records, other names forwarded upstream.
    Dns(dns_cmd::DnsArgs),
    /// A one-node cluster in one process: master, agent, Service proxy and cluster DNS.
    Up(up_cmd::UpArgs),
    /// A small kubectl: apply, get, describe, delete, scale, rollout, logs, exec.
    Ctl(ctl::CtlArgs),
    /// Install skiff on this machine: binary, systemd units, /etc/skiff/config.yaml; starts
    /// a one-node cluster, or with --server a worker that joins one.
    Install(install_cmd::InstallArgs),
    /// Remove every trace of skiff: services, pods, cgroups, mounts, nftables, bridge, files.
    Uninstall(install_cmd::UninstallArgs),
    /// Print a shell completion script: `skiff completion bash > /etc/bash_completion.d/skiff`.
    Completion(CompletionArgs),
    /// Internal: the per-pod shim the agent starts.
    #[command(name = "__shim", hide = true)]
    Shim(agent_cmd::ShimArgs),
    /// Internal: wait for a detached `run --rm` container and clean it up.
    #[command(name = "__reap", hide = true)]
    Reap(run_cmd::ReapArgs),
}

/// `skiff completion`.
#[derive(clap::Args, Debug)]
struct CompletionArgs {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

/// The completion script of `skiff` for `shell`.
fn completion_script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "skiff", &mut out);
    out
}

/// Logging for the non-runtime commands: warnings to stderr, `SKIFF_LOG` to change it.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,libcgroups=error"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().with_current_span(true).init(),
    }
}

/// Parses the command line over the defaults of the config file; exits on a usage error.
fn parse_cli() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cmd = match config_file::command_with_config(Cli::command(), &args) {
        Ok(cmd) => cmd,
        Err(e) => {
            eprintln!("skiff: {:#}", anyhow::Error::from(e));
            std::process::exit(2);
        }
    };
    let matches = cmd.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "exe" {
        // started through /proc/self/exe (the agent's shims and runtime calls, `run`'s
        // reaper): the kernel named the process `exe`; ps and top should say skiff
        let _ = nix::sys::prctl::set_name(c"skiff");
    }
    let code = if name == "skiff-runc" || name == "runc" {
        runtime_cmd::main(runtime_cmd::RuntimeCli::parse())
    } else {
        let cli = parse_cli();
        // the shim logs to its own copy of stderr (it lends fds 1 and 2 to containers)
        if !matches!(cli.command, Command::Runtime(_) | Command::Shim(_)) {
            init_logging(cli.log_format);
        }
        let result = match cli.command {
            Command::Runtime(rt) => Ok(runtime_cmd::main(rt)),
            Command::Image(a) => image_cmd::main(a),
            Command::Run(a) => run_cmd::run(a),
            Command::Ps(a) => run_cmd::ps(a),
            Command::Rm(a) => run_cmd::rm(a),
            Command::Reap(a) => run_cmd::reap(a),
            Command::Master(a) => master_cmd::main(a),
            Command::Agent(a) => agent_cmd::main(*a),
            Command::Proxy(a) => proxy_cmd::main(a),
            Command::Dns(a) => dns_cmd::main(a),
            Command::Up(a) => up_cmd::main(a),
            Command::Ctl(a) => ctl::main(a),
            Command::Shim(a) => agent_cmd::shim(a),
            Command::Install(a) => install_cmd::install(a, completion_script),
            Command::Uninstall(a) => install_cmd::uninstall(a),
            Command::Completion(a) => {
                stdout::write_bytes(&completion_script(a.shell));
                Ok(0)
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `--log-format` is one clap argument for skiff and for `skiff runtime` (runc's flag):
    /// both parse, wherever the flag stands, and the value reaches both.
    #[test]
    fn log_format_is_shared_with_the_runtime() {
        for (args, want) in [
            (
                &["skiff", "runtime", "--root", "/r", "list"][..],
                LogFormat::Text,
            ),
            (
                &[
                    "skiff",
                    "runtime",
                    "--log-format",
                    "json",
                    "--root",
                    "/r",
                    "list",
                ][..],
                LogFormat::Json,
            ),
            (
                &[
                    "skiff",
                    "--log-format",
                    "json",
                    "runtime",
                    "--root",
                    "/r",
                    "list",
                ][..],
                LogFormat::Json,
            ),
            (
                &["skiff", "dns", "--log-format", "json"][..],
                LogFormat::Json,
            ),
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.log_format, want, "{args:?}");
        }
    }
}

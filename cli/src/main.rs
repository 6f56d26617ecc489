//! `skiff`: the one binary. It only parses arguments, sets up logging and calls into the
//! library crates. Started as `skiff-runc` (a symlink) it is exactly `skiff runtime`.

mod runtime_cmd;

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
        match Cli::parse().command {
            Command::Runtime(rt) => runtime_cmd::main(rt),
        }
    };
    std::process::exit(code);
}

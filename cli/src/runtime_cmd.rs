//! `skiff runtime …` / `skiff-runc …`: runc's command line over `skiff-runtime`.
//! Verbs, flags, stdout and exit codes follow runc, so runc's callers need no change.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use nix::sys::signal::{SigmaskHow, sigprocmask};
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
    Process, Spec,
};
use skiff_runtime::container::DEFAULT_ROOT;
use skiff_runtime::{Container, CreateOptions, ExecOptions, Runtime, Status};

use crate::terminal::{OwnConsole, forwarded_signals, restore_terminal, wait_forwarding};

/// runc-compatible container runtime.
#[derive(Parser, Debug)]
#[command(
    name = "skiff-runc",
    version,
    about = "skiff's OCI container runtime (runc-compatible)"
)]
pub struct RuntimeCli {
    /// Directory for container state.
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Log file (default stderr).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: LogFormat,
    /// Debug logging.
    #[arg(long, global = true)]
    debug: bool,
    /// Interpret cgroupsPath as slice:prefix:name.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for compatibility (rootless mode is decided automatically).
    #[arg(long, global = true, value_name = "true|false|auto")]
    rootless: Option<String>,
    /// Accepted for compatibility; checkpointing is not supported.
    #[arg(long, global = true, hide = true)]
    criu: Option<String>,
    #[command(subcommand)]
    command: Verb,
}

/// `--log-format`, of `skiff runtime` and (the same argument) of every skiff command.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line (timestamp, level, target, fields, span).
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Format {
    Table,
    Json,
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// Container id.
    id: String,
    /// Path to the bundle.
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Unix socket that receives the pty master.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// File to write the init pid to.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Do not use pivot_root (for ramfs roots).
    #[arg(long)]
    no_pivot: bool,
    /// Do not create a session keyring (accepted; a keyring is joined when possible).
    #[arg(long)]
    no_new_keyring: bool,
    /// Pass N extra fds (from 3) into the container.
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Create a container (init waits for `start`).
    Create(CreateArgs),
    /// Run the user program of a created container.
    Start {
        /// Container id.
        id: String,
    },
    /// Create and start a container; without -d wait for it and return its exit code.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Detach from the container.
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Print the state of a container as JSON.
    State {
        /// Container id.
        id: String,
    },
    /// Send a signal to the container's init (default SIGTERM).
    Kill {
        /// Container id.
        id: String,
        /// Signal name or number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
        /// Signal every process of the container.
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a container and everything it holds.
    Delete {
        /// Container id.
        id: String,
        /// Kill a running container first.
        #[arg(short, long)]
        force: bool,
    },
    /// Run a new process in a running container.
    Exec(ExecArgs),
    /// List the processes of a container.
    Ps {
        /// Container id.
        id: String,
        /// Output format.
        #[arg(short, long, default_value = "table")]
        format: Format,
        /// Options passed to ps(1) (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List containers.
    List {
        /// Output format.
        #[arg(short, long, default_value = "table")]
        format: Format,
        /// Print only ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Freeze every process of a container.
    Pause {
        /// Container id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// Container id.
        id: String,
    },
    /// Change resource limits of a container.
    Update(UpdateArgs),
    /// Print container events (resource usage every interval).
    Events {
        /// Container id.
        id: String,
        /// Print stats once and exit.
        #[arg(long)]
        stats: bool,
        /// Interval between stats events.
        #[arg(long, default_value = "5s")]
        interval: String,
    },
    /// Write a default config.json into the bundle.
    Spec {
        /// Path to the bundle.
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Print the features this runtime supports as JSON.
    Features,
}

#[derive(Args, Debug)]
struct ExecArgs {
    /// Container id.
    id: String,
    /// Command and arguments (unless --process is given).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
    /// Process spec JSON file.
    #[arg(short, long)]
    process: Option<PathBuf>,
    /// Unix socket that receives the pty master.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Working directory.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Extra environment (NAME=value), repeatable.
    #[arg(short, long)]
    env: Vec<String>,
    /// Allocate a terminal.
    #[arg(short, long)]
    tty: bool,
    /// The terminal's size from the start with --tty, ROWSxCOLS (a skiff extension: runc
    /// takes it only from --process's consoleSize). Without it the terminal starts 0x0.
    #[arg(long, value_parser = parse_console_size)]
    console_size: Option<(u64, u64)>,
    /// uid[:gid] to run as.
    #[arg(short, long)]
    user: Option<String>,
    /// Extra group ids, repeatable.
    #[arg(short = 'g', long)]
    additional_gids: Vec<u32>,
    /// Detach from the process.
    #[arg(short, long)]
    detach: bool,
    /// File to write the process pid to.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Set no_new_privileges.
    #[arg(long)]
    no_new_privs: bool,
    /// Extra capability, repeatable.
    #[arg(short, long)]
    cap: Vec<String>,
    /// Pass N extra fds (from 3) into the process.
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    /// Accepted for compatibility.
    #[arg(long, hide = true)]
    process_label: Option<String>,
    /// Accepted for compatibility.
    #[arg(long, hide = true)]
    apparmor: Option<String>,
}

#[derive(Args, Debug)]
struct UpdateArgs {
    /// Container id.
    id: String,
    /// Resources JSON file (`-` for stdin), as in the spec's linux.resources.
    #[arg(short, long)]
    resources: Option<PathBuf>,
    /// Memory limit in bytes (suffixes k, m, g allowed).
    #[arg(long)]
    memory: Option<String>,
    /// Memory + swap limit in bytes.
    #[arg(long)]
    memory_swap: Option<String>,
    /// Memory soft limit in bytes.
    #[arg(long)]
    memory_reservation: Option<String>,
    /// CPU shares (relative weight).
    #[arg(long)]
    cpu_shares: Option<u64>,
    /// CPU CFS quota in microseconds.
    #[arg(long)]
    cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds.
    #[arg(long)]
    cpu_period: Option<u64>,
    /// CPUs allowed (e.g. 0-3,5).
    #[arg(long)]
    cpuset_cpus: Option<String>,
    /// Memory nodes allowed.
    #[arg(long)]
    cpuset_mems: Option<String>,
    /// Maximum number of pids.
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Block IO weight (10-1000).
    #[arg(long)]
    blkio_weight: Option<u16>,
}

/// Runs the CLI and returns the process exit code.
pub fn main(cli: RuntimeCli) -> i32 {
    if let Err(e) = init_logging(&cli) {
        eprintln!("skiff-runc: {e:#}");
        return 1;
    }
    let logs_to_file = cli.log.is_some();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            if logs_to_file {
                tracing::error!("{e:#}");
            }
            eprintln!("skiff-runc: {e:#}");
            1
        }
    }
}

fn init_logging(cli: &RuntimeCli) -> Result<()> {
    let level = if cli.debug {
        "debug"
    } else {
        "warn,libcgroups=error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match &cli.log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            let builder = builder
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false);
            match cli.log_format {
                LogFormat::Json => builder.json().init(),
                LogFormat::Text => builder.init(),
            }
        }
        None => {
            let builder = builder.with_writer(std::io::stderr);
            match cli.log_format {
                LogFormat::Json => builder.json().init(),
                LogFormat::Text => builder.init(),
            }
        }
    }
    Ok(())
}

fn dispatch(cli: RuntimeCli) -> Result<i32> {
    let rt = Runtime::new(&cli.root).with_systemd_cgroup(cli.systemd_cgroup);
    match cli.command {
        Verb::Create(a) => {
            seal()?;
            rt.create(&a.id, &a.bundle, &create_options(&a))?;
            Ok(0)
        }
        Verb::Start { id } => {
            rt.load(&id)?.start()?;
            Ok(0)
        }
        Verb::Run {
            create,
            detach,
            keep,
        } => {
            seal()?;
            run(&rt, &create, detach, keep)
        }
        Verb::State { id } => {
            let c = rt.load(&id)?;
            outln!(
                "{}",
                serde_json::to_string_pretty(&c.state().to_oci_json())?
            );
            Ok(0)
        }
        Verb::Kill { id, signal, all } => {
            let sig = skiff_runtime::signal::parse(&signal)?;
            rt.load(&id)?.kill(sig, all)?;
            Ok(0)
        }
        Verb::Delete { id, force } => {
            match rt.load(&id) {
                Ok(c) => c.delete(force)?,
                // runc: deleting a missing container with --force is not an error
                Err(skiff_runtime::Error::NotFound(_)) if force => {}
                Err(e) => return Err(e.into()),
            }
            Ok(0)
        }
        Verb::Exec(a) => {
            seal()?;
            exec(&rt, a)
        }
        Verb::Ps {
            id,
            format,
            ps_args,
        } => ps(&rt.load(&id)?, format, &ps_args),
        Verb::List { format, quiet } => list(&rt, format, quiet),
        Verb::Pause { id } => {
            rt.load(&id)?.pause()?;
            Ok(0)
        }
        Verb::Resume { id } => {
            rt.load(&id)?.resume()?;
            Ok(0)
        }
        Verb::Update(a) => {
            let c = rt.load(&a.id)?;
            c.update(&update_resources(&a)?)?;
            Ok(0)
        }
        Verb::Events {
            id,
            stats,
            interval,
        } => events(&rt, &id, stats, &interval),
        Verb::Spec { bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("file {} exists: remove it first", path.display());
            }
            default_spec()?
                .save(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(0)
        }
        Verb::Features => {
            outln!("{}", serde_json::to_string_pretty(&features())?);
            Ok(0)
        }
    }
}

/// Processes that enter containers must not run the host binary (CVE-2019-5736).
fn seal() -> Result<()> {
    skiff_runtime::sys::ensure_sealed_exe().context("cannot run from a sealed copy of skiff")
}

fn create_options(a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        preserve_fds: a.preserve_fds,
        no_pivot: a.no_pivot,
    }
}

fn run(rt: &Runtime, a: &CreateArgs, detach: bool, keep: bool) -> Result<i32> {
    let set = forwarded_signals();
    let mut opts = create_options(a);
    let terminal = bundle_wants_terminal(&a.bundle);
    let own_console = if terminal && opts.console_socket.is_none() && !detach {
        let c = OwnConsole::new(rt.root())?;
        opts.console_socket = Some(c.path.clone());
        Some(c)
    } else {
        None
    };
    if !detach {
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    }
    let mut c = rt.create(&a.id, &a.bundle, &opts)?;
    let result = (|| -> Result<i32> {
        if let Some(con) = own_console {
            con.attach()?;
        }
        c.start()?;
        if detach {
            return Ok(0);
        }
        let pid = c.pid().ok_or_else(|| anyhow!("container has no pid"))?;
        wait_forwarding(pid, &set)
    })();
    restore_terminal();
    // `c` keeps the cgroup it opened in create (no second open: on cgroup v1 that rereads
    // mountinfo for every controller); delete refreshes the status from the kernel first
    if !detach && !keep {
        c.delete(true)?;
    } else if result.is_err() {
        let _ = c.delete(true);
    }
    result
}

fn bundle_wants_terminal(bundle: &Path) -> bool {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
        .and_then(|v| v["process"]["terminal"].as_bool())
        .unwrap_or(false)
}

fn exec(rt: &Runtime, a: ExecArgs) -> Result<i32> {
    let c = rt.load(&a.id)?;
    let mut process = exec_process(&c, &a)?;
    let set = forwarded_signals();
    let mut opts = ExecOptions {
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        preserve_fds: a.preserve_fds,
    };
    let own_console =
        if process.terminal().unwrap_or(false) && opts.console_socket.is_none() && !a.detach {
            let con = OwnConsole::new(rt.root())?;
            opts.console_socket = Some(con.path.clone());
            // our terminal's size from the start, not only once the process runs
            if process.console_size().is_none()
                && let Some((rows, cols)) = crate::terminal::caller_size()
            {
                process.set_console_size(Some(console_box(rows.into(), cols.into())?));
            }
            Some(con)
        } else {
            None
        };
    if !a.detach {
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    }
    let pid = c.exec(&process, &opts)?;
    if a.detach {
        return Ok(0);
    }
    if let Some(con) = own_console {
        con.attach()?;
    }
    let code = wait_forwarding(pid, &set);
    restore_terminal();
    code
}

/// A console size for the process spec.
fn console_box(rows: u64, cols: u64) -> Result<oci_spec::runtime::Box> {
    Ok(oci_spec::runtime::BoxBuilder::default()
        .height(rows)
        .width(cols)
        .build()?)
}

/// `--console-size ROWSxCOLS`.
fn parse_console_size(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("{s:?} is not ROWSxCOLS (e.g. 40x100)");
    let (rows, cols) = s.split_once('x').ok_or_else(bad)?;
    let n = |v: &str| v.parse::<u16>().map(u64::from).map_err(|_| bad());
    Ok((n(rows)?, n(cols)?))
}

/// The process for `exec`: from --process, or the container's own process section with
/// the command line's overrides (as runc builds it).
fn exec_process(c: &Container, a: &ExecArgs) -> Result<Process> {
    if let Some(p) = &a.process {
        let data = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        let process: Process = serde_json::from_slice(&data)
            .with_context(|| format!("invalid process spec {}", p.display()))?;
        return Ok(process);
    }
    if a.command.is_empty() {
        bail!("exec: no command given (use --process or give a command)");
    }
    let spec = Spec::load(c.state().bundle.join("config.json"))
        .with_context(|| format!("cannot read config of container {}", c.id()))?;
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    let size = a.console_size.map(|(rows, cols)| console_box(rows, cols));
    p.set_console_size(size.transpose()?);
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(a.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u.parse()?, g.parse()?),
            None => (u.parse()?, 0),
        };
        let mut user = p.user().clone();
        user.set_uid(uid);
        user.set_gid(gid);
        if !a.additional_gids.is_empty() {
            user.set_additional_gids(Some(a.additional_gids.clone()));
        }
        p.set_user(user);
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &a.cap {
            let cap: oci_spec::runtime::Capability = serde_json::from_value(name.clone().into())
                .with_context(|| format!("unknown capability {name}"))?;
            let add = |s: &Option<oci_spec::runtime::Capabilities>| {
                let mut s = s.clone().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            let (b, e, pm) = (
                add(caps.bounding()),
                add(caps.effective()),
                add(caps.permitted()),
            );
            caps.set_bounding(b);
            caps.set_effective(e);
            caps.set_permitted(pm);
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

fn ps(c: &Container, format: Format, ps_args: &[String]) -> Result<i32> {
    let pids = c.processes()?;
    if format == Format::Json {
        let raw: Vec<i32> = pids.iter().map(|p| p.as_raw()).collect();
        outln!("{}", serde_json::to_string(&raw)?);
        return Ok(0);
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("cannot run ps")?;
    if !out.status.success() {
        bail!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| anyhow!("ps output has no PID column"))?;
    outln!("{header}");
    for line in lines {
        let pid: Option<i32> = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|s| s.parse().ok());
        if pid.is_some_and(|p| pids.iter().any(|q| q.as_raw() == p)) {
            outln!("{line}");
        }
    }
    Ok(0)
}

fn list(rt: &Runtime, format: Format, quiet: bool) -> Result<i32> {
    let containers = rt.list()?;
    if quiet {
        for c in &containers {
            outln!("{}", c.id());
        }
        return Ok(0);
    }
    if format == Format::Json {
        let v: Vec<serde_json::Value> =
            containers.iter().map(|c| c.state().to_oci_json()).collect();
        outln!("{}", serde_json::to_string(&v)?);
        return Ok(0);
    }
    let rows: Vec<[String; 6]> = containers
        .iter()
        .map(|c| {
            let s = c.state();
            [
                s.id.clone(),
                if s.status == Status::Stopped {
                    0
                } else {
                    s.pid
                }
                .to_string(),
                s.status.to_string(),
                s.bundle.display().to_string(),
                s.created.clone(),
                if s.owner.is_empty() {
                    "root".into()
                } else {
                    s.owner.clone()
                },
            ]
        })
        .collect();
    let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
    let mut widths = header.clone().map(|h| h.len().max(10));
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}", w = w + 2))
            .collect();
        outln!("{}", line.join("").trim_end());
    }
    Ok(0)
}

fn parse_size(s: &str) -> Result<i64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_lowercase()) {
        Some('k') => (&s[..s.len() - 1], 1024),
        Some('m') => (&s[..s.len() - 1], 1024 * 1024),
        Some('g') => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        Some('b') => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    if num == "-1" {
        return Ok(-1);
    }
    Ok(num
        .parse::<i64>()
        .with_context(|| format!("invalid size {s:?}"))?
        * mult)
}

fn update_resources(a: &UpdateArgs) -> Result<LinuxResources> {
    if let Some(p) = &a.resources {
        let data = if p.as_os_str() == "-" {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
            v
        } else {
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?
        };
        return serde_json::from_slice(&data).context("invalid resources JSON");
    }
    let mut r = LinuxResourcesBuilder::default();
    if a.memory.is_some() || a.memory_swap.is_some() || a.memory_reservation.is_some() {
        let mut m = LinuxMemoryBuilder::default();
        if let Some(v) = &a.memory {
            m = m.limit(parse_size(v)?);
        }
        if let Some(v) = &a.memory_swap {
            m = m.swap(parse_size(v)?);
        }
        if let Some(v) = &a.memory_reservation {
            m = m.reservation(parse_size(v)?);
        }
        r = r.memory(m.build()?);
    }
    if a.cpu_shares.is_some()
        || a.cpu_quota.is_some()
        || a.cpu_period.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some()
    {
        let mut c = LinuxCpuBuilder::default();
        if let Some(v) = a.cpu_shares {
            c = c.shares(v);
        }
        if let Some(v) = a.cpu_quota {
            c = c.quota(v);
        }
        if let Some(v) = a.cpu_period {
            c = c.period(v);
        }
        if let Some(v) = &a.cpuset_cpus {
            c = c.cpus(v.clone());
        }
        if let Some(v) = &a.cpuset_mems {
            c = c.mems(v.clone());
        }
        r = r.cpu(c.build()?);
    }
    if let Some(v) = a.pids_limit {
        r = r.pids(LinuxPidsBuilder::default().limit(v).build()?);
    }
    if let Some(w) = a.blkio_weight {
        r = r.block_io(
            oci_spec::runtime::LinuxBlockIoBuilder::default()
                .weight(w)
                .build()?,
        );
    }
    Ok(r.build()?)
}

fn parse_interval(s: &str) -> Result<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid interval {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => bail!("invalid interval {s:?}"),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn events(rt: &Runtime, id: &str, once: bool, interval: &str) -> Result<i32> {
    let interval = parse_interval(interval)?;
    loop {
        let c = rt.load(id)?;
        if c.status() == Status::Stopped {
            bail!("container {id} is not running");
        }
        let ev = serde_json::json!({
            "type": "stats",
            "id": id,
            "data": skiff_runtime::cgroups::runc_stats_json(&c.stats()?),
        });
        outln!("{ev}");
        if once {
            return Ok(0);
        }
        std::thread::sleep(interval);
    }
}

/// The config.json `spec` writes: runc's defaults (busybox-friendly, terminal on).
fn default_spec() -> Result<Spec> {
    let mut spec = Spec::default();
    if let Some(mut p) = spec.process().clone() {
        p.set_terminal(Some(true));
        spec.set_process(Some(p));
    }
    spec.set_hostname(Some("skiff".into()));
    Ok(spec)
}

fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": skiff_runtime::state::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime",
            "nosuid", "private", "rbind", "relatime", "remount", "ro", "rprivate", "rshared", "rslave",
            "runbindable", "rw", "shared", "slave", "strictatime", "suid", "sync", "unbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time"],
            "capabilities": caps::all().iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
        "annotations": {"org.opencontainers.runc.version": "skiff"},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_sizes() {
        assert_eq!(parse_console_size("40x100").unwrap(), (40, 100));
        for bad in ["40", "40x", "x100", "40x100x2", "-1x5", "70000x1"] {
            assert!(parse_console_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_and_intervals() {
        assert_eq!(parse_size("16m").unwrap(), 16 << 20);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("-1").unwrap(), -1);
        assert_eq!(parse_interval("250ms").unwrap().as_millis(), 250);
        assert_eq!(parse_interval("5s").unwrap().as_secs(), 5);
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        RuntimeCli::command().debug_assert();
    }
}

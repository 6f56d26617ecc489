//! `skiff run IMAGE [COMMAND…]`: pull if needed, mount an overlay root filesystem, build the
//! runtime spec from the image config and run one container through skiff-runtime, like
//! `podman run`. Also `skiff ps` and `skiff rm` for the containers it leaves behind.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use nix::sys::signal::{SigmaskHow, sigprocmask};
use oci_spec::image::ImageConfiguration;
use skiff_rootfs::pull::unpack_image;
use skiff_rootfs::spec::{ContainerOptions, Network, build_spec};
use skiff_runtime::{CreateOptions, Runtime, Status};

use crate::image_cmd::{StoreArgs, find};
use crate::terminal::{OwnConsole, forwarded_signals, restore_terminal, wait_forwarding};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum NetworkArg {
    /// A new network namespace (loopback only).
    None,
    /// The host's network.
    Host,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum PullPolicy {
    /// Pull only when the image is not in the store.
    Missing,
    /// Always pull.
    Always,
    /// Never pull.
    Never,
}

/// Where containers of `skiff run` keep runtime state, bundles and overlay mounts.
#[derive(Args, Debug, Clone)]
pub struct ContainerArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Runtime state directory (default: /run/skiff/runtime, or ROOT/state with --root).
    #[arg(long, global = true)]
    state: Option<PathBuf>,
}

impl ContainerArgs {
    fn runtime(&self) -> Runtime {
        let state = self.state.clone().unwrap_or_else(|| {
            if self.store.root == Path::new(crate::image_cmd::DEFAULT_IMAGE_ROOT) {
                PathBuf::from(skiff_runtime::container::DEFAULT_ROOT)
            } else {
                self.store.root.join("state")
            }
        });
        Runtime::new(state)
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.store.root.join("bundles").join(id)
    }
}

/// `skiff run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    where_: ContainerArgs,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Run in the background and print the container id.
    #[arg(short, long)]
    detach: bool,
    /// Keep stdin open.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Container name (default: a random id).
    #[arg(long)]
    name: Option<String>,
    /// Environment variable NAME=value; repeatable.
    #[arg(short, long)]
    env: Vec<String>,
    /// Network: none (own namespace, loopback) or host.
    #[arg(long, default_value = "none")]
    network: NetworkArg,
    /// User (name, uid, name:group, uid:gid).
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Replace the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Hostname (default: the container id).
    #[arg(long)]
    hostname: Option<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// When to pull.
    #[arg(long, default_value = "missing")]
    pull: PullPolicy,
    /// The image.
    image: String,
    /// Command (replaces the image's cmd) and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn random_id() -> String {
    let mut b = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b[..16].copy_from_slice(&t.to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs `skiff run`; returns the container's exit code.
pub fn run(a: RunArgs) -> Result<i32> {
    // processes that enter containers must not run the host binary (CVE-2019-5736)
    skiff_runtime::sys::ensure_sealed_exe().context("cannot run from a sealed copy of skiff")?;
    let (store, snaps) = a.where_.store.open()?;
    let existing = find(&store, &a.image)?;
    let record = match (a.pull, existing) {
        (PullPolicy::Never, None) => {
            bail!("image {} is not in the store and --pull=never", a.image)
        }
        (PullPolicy::Always, _) | (PullPolicy::Missing, None) => {
            a.where_.store.pull(&store, &snaps, &a.image, false)?
        }
        (_, Some(r)) => r,
    };
    let chain = unpack_image(&store, &snaps, &record)?;
    let config: ImageConfiguration = serde_json::from_slice(&store.read_blob(&record.config)?)
        .with_context(|| format!("invalid config of image {}", record.name))?;
    let full_id = random_id();
    let id = a.name.clone().unwrap_or_else(|| full_id[..12].to_string());
    let rt = a.where_.runtime();
    if rt.load(&id).is_ok() {
        bail!("a container named {id} exists already (remove it with `skiff rm {id}`)");
    }
    let bundle = a.where_.bundle(&id);
    let prepared = (|| -> Result<()> {
        std::fs::create_dir_all(&bundle)
            .with_context(|| format!("cannot create {}", bundle.display()))?;
        let merged = snaps.mount(&id, &chain)?;
        let opts = ContainerOptions {
            command: a.entrypoint.as_ref().map(|e| vec![e.clone()]),
            args: (!a.command.is_empty()).then(|| a.command.clone()),
            env: a.env.clone(),
            working_dir: a.workdir.clone(),
            user: a.user.clone(),
            tty: a.tty,
            hostname: Some(a.hostname.clone().unwrap_or_else(|| id.clone())),
            network: match a.network {
                NetworkArg::None => Network::None,
                NetworkArg::Host => Network::Host,
            },
            read_only_rootfs: a.read_only,
            cgroups_path: Some(PathBuf::from(format!("/skiff/{id}"))),
            ..Default::default()
        };
        let spec = build_spec(&config, &merged, &opts)?;
        spec.save(bundle.join("config.json"))
            .with_context(|| format!("cannot write {}/config.json", bundle.display()))?;
        Ok(())
    })();
    if let Err(e) = prepared {
        cleanup(&a.where_, &snaps, &id);
        return Err(e);
    }
    start(&a, &rt, &snaps, &id, &bundle)
}

fn start(
    a: &RunArgs,
    rt: &Runtime,
    snaps: &skiff_rootfs::snapshot::Snapshots,
    id: &str,
    bundle: &Path,
) -> Result<i32> {
    let set = forwarded_signals();
    let mut opts = CreateOptions::default();
    let console = if a.tty {
        let c = OwnConsole::new(rt.root())?;
        opts.console_socket = Some(c.path.clone());
        Some(c)
    } else {
        None
    };
    if !a.interactive {
        // like docker without -i: the container reads nothing
        let null = std::fs::File::open("/dev/null")?;
        nix::unistd::dup2(null.as_raw_fd(), 0)?;
    }
    if !a.detach {
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    }
    let result = (|| -> Result<i32> {
        let mut c = rt.create(id, bundle, &opts)?;
        if let Some(con) = console {
            if a.detach {
                drop(con); // the pty is closed: detached terminals are not kept
            } else {
                con.attach()?;
            }
        }
        c.start()?;
        if a.detach {
            outln!("{id}");
            if a.rm {
                spawn_reaper(&a.where_, id)?;
            }
            return Ok(0);
        }
        let pid = c.pid().context("container has no pid")?;
        wait_forwarding(pid, &set)
    })();
    restore_terminal();
    if result.is_err() || (a.rm && !a.detach) {
        cleanup(&a.where_, snaps, id);
    }
    result
}

/// Removes everything a `skiff run` container holds: runtime state and cgroup, overlay
/// mount and upper dir, bundle.
fn cleanup(where_: &ContainerArgs, snaps: &skiff_rootfs::snapshot::Snapshots, id: &str) {
    if let Ok(c) = where_.runtime().load(id) {
        if let Err(e) = c.delete(true) {
            tracing::warn!(id, error = %e, "cannot delete container");
        }
    }
    if let Err(e) = snaps.unmount(id) {
        tracing::warn!(id, error = %e, "cannot remove container rootfs");
    }
    let _ = std::fs::remove_dir_all(where_.bundle(id));
}

/// For `run -d --rm`: a detached `skiff __reap` waits for the container to stop and
/// cleans it up.
fn spawn_reaper(where_: &ContainerArgs, id: &str) -> Result<()> {
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg("__reap")
        .arg("--root")
        .arg(&where_.store.root)
        .arg("--state")
        .arg(where_.runtime().root())
        .arg(id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn().context("cannot start the cleanup process")?;
    Ok(())
}

/// `skiff __reap ID`: waits until the container has stopped, then removes it.
#[derive(Args, Debug)]
pub struct ReapArgs {
    #[command(flatten)]
    where_: ContainerArgs,
    /// Container id.
    id: String,
}

/// Runs `skiff __reap`.
pub fn reap(a: ReapArgs) -> Result<i32> {
    let rt = a.where_.runtime();
    let c = rt.load(&a.id)?;
    if let Some(pid) = c.pid() {
        if let Ok(fd) = skiff_runtime::sys::pidfd_open(pid) {
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&fd),
                nix::poll::PollFlags::POLLIN,
            )];
            while let Err(nix::errno::Errno::EINTR) =
                nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE)
            {}
        }
    }
    let (_, snaps) = a.where_.store.open()?;
    cleanup(&a.where_, &snaps, &a.id);
    Ok(0)
}

/// `skiff ps`.
#[derive(Args, Debug)]
pub struct PsArgs {
    #[command(flatten)]
    where_: ContainerArgs,
    /// Show stopped containers too.
    #[arg(short, long)]
    all: bool,
}

/// Lists containers started by `skiff run`.
pub fn ps(a: PsArgs) -> Result<i32> {
    let rt = a.where_.runtime();
    outln!("{:<20} {:<10} {:<8} CREATED", "CONTAINER", "STATUS", "PID");
    for c in rt.list()? {
        if !a.all && c.status() == Status::Stopped {
            continue;
        }
        if !a.where_.bundle(c.id()).exists() {
            continue; // not one of ours (a bare `skiff runtime` container)
        }
        let s = c.state();
        outln!("{:<20} {:<10} {:<8} {}", s.id, s.status, s.pid, s.created);
    }
    Ok(0)
}

/// `skiff rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    #[command(flatten)]
    where_: ContainerArgs,
    /// Stop running containers first.
    #[arg(short, long)]
    force: bool,
    /// Containers to remove.
    #[arg(required = true)]
    ids: Vec<String>,
}

/// Removes containers started by `skiff run`.
pub fn rm(a: RmArgs) -> Result<i32> {
    let rt = a.where_.runtime();
    let (_, snaps) = a.where_.store.open()?;
    for id in &a.ids {
        let c = rt.load(id)?;
        if c.status() != Status::Stopped && !a.force {
            bail!(
                "container {id} is {}: stop it first or use --force",
                c.status()
            );
        }
        cleanup(&a.where_, &snaps, id);
        outln!("{id}");
    }
    Ok(0)
}

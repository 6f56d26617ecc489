//! `skiff install` and `skiff uninstall`: put skiff on a machine as systemd services, and
//! take every trace of it off again.
//!
//! Every path is under `--root` (default `/`), so tests install into a temp dir. Steps that
//! act on the running host (systemctl, nftables, the bridge, routes) only run when the root
//! is `/`; mounts and cgroups are found under the root, so a test sees them handled too.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

/// Where the master keeps its data in an install.
const MASTER_DATA_DIR: &str = "/var/lib/skiff/master";
/// The agent's state, run and log dirs (its defaults).
const AGENT_ROOT_DIR: &str = "/var/lib/skiff";
const AGENT_RUN_DIR: &str = "/run/skiff";
const POD_LOG_DIR: &str = "/var/log/pods";
/// The cgroup name under which the agent makes pod cgroups (its default).
const CGROUP_PREFIX: &str = "skiff";
const MASTER_UNIT: &str = "skiff-master.service";
const AGENT_UNIT: &str = "skiff-agent.service";

/// What this machine runs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The master and an agent: a one-node cluster that more workers can join.
    #[value(name = "master+agent")]
    MasterAgent,
    /// The master only (API server, scheduler, controllers).
    Master,
    /// A worker joining an existing master (needs --server, --token, --ca-file).
    Agent,
}

impl Role {
    fn master(self) -> bool {
        self != Role::Agent
    }
    fn agent(self) -> bool {
        self != Role::Master
    }
}

/// `skiff install`.
#[derive(Args, Debug)]
pub struct InstallArgs {
    /// What this machine runs. Default: `agent` with --server, else `master+agent`.
    #[arg(long, value_enum)]
    role: Option<Role>,
    /// Join the master at this URL (https://HOST:6443) as a worker.
    #[arg(long, requires_all = ["token", "ca_file"])]
    server: Option<String>,
    /// The master's node token (its /var/lib/skiff/master/node-token), with --server.
    #[arg(long, env = "SKIFF_NODE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The master's CA certificate (its /var/lib/skiff/master/ca.crt), with --server.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Install under this directory instead of `/` (for tests and image builds: nothing is
    /// started and the host's network is left alone).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Directory under the root for the binary (`PREFIX/bin/skiff`).
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// Write the files but neither enable nor start the services.
    #[arg(long)]
    no_start: bool,
    /// Replace an existing /etc/skiff/config.yaml (by default it is kept).
    #[arg(long)]
    force_config: bool,
}

/// `skiff uninstall`.
#[derive(Args, Debug)]
pub struct UninstallArgs {
    /// Uninstall from under this directory instead of `/` (the host's network is left alone).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Directory under the root the binary was installed to.
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// Keep /var/lib/skiff (the cluster's store, images and certificates).
    #[arg(long)]
    keep_data: bool,
}

/// `path` (absolute) under `root`.
fn under(root: &Path, path: impl AsRef<Path>) -> PathBuf {
    let p = path.as_ref();
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// The directory that holds the binary, `PREFIX/lib/skiff`. It is a read-only bind mount of
/// itself (see [`mount_unit`]); `PREFIX/bin/skiff` links into it.
fn lib_dir(prefix: &Path) -> PathBuf {
    under(prefix, "lib/skiff")
}

/// systemd's name for the mount unit of the absolute path `path`, as `systemd-escape --path
/// --suffix=mount` makes it: `/usr/local/lib/skiff` is `usr-local-lib-skiff.mount`.
pub fn mount_unit_name(path: &Path) -> String {
    let text = path.to_string_lossy();
    let trimmed = text
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/");
    if trimmed.is_empty() {
        return "-.mount".to_string();
    }
    let mut name = String::new();
    for (i, b) in trimmed.bytes().enumerate() {
        match b {
            b'/' => name.push('-'),
            b'.' if i == 0 => name.push_str("\\x2e"),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b':' | b'_' | b'.' => name.push(b as char),
            _ => name.push_str(&format!("\\x{b:02x}")),
        }
    }
    name + ".mount"
}

/// The mount unit that makes `dir` (the binary's directory) a read-only bind mount of itself.
/// A container must not be able to write the binary through `/proc/<pid>/exe`
/// (CVE-2019-5736): from a writable path every runtime call re-executes itself through a
/// private read-only mount first, from this one it starts once.
pub fn mount_unit(dir: &Path) -> String {
    format!(
        "# Written by `skiff install`; `skiff uninstall` removes it.\n\
         # skiff's binary is read-only where it runs, so that no container can overwrite it\n\
         # through /proc/<pid>/exe, and the runtime need not re-execute itself to ensure that.\n\
         [Unit]\n\
         Description=skiff's binary directory, read-only\n\
         Documentation=https://github.com/skiff-dev/skiff/blob/main/docs/install.md\n\
         \n\
         [Mount]\n\
         What={dir}\n\
         Where={dir}\n\
         Type=none\n\
         Options=bind,ro\n\
         # skiff itself runs from it, also while `skiff uninstall` stops it\n\
         LazyUnmount=yes\n\
         \n\
         [Install]\n\
         WantedBy=local-fs.target\n",
        dir = dir.display(),
    )
}

/// The systemd unit of a service running `skiff <cmd>`; `after` are units it starts after,
/// `wants` those it also pulls in.
pub fn unit(description: &str, bin: &Path, cmd: &str, after: &[&str], wants: &[&str]) -> String {
    let mut after_list = vec!["network-online.target"];
    after_list.extend_from_slice(after);
    after_list.extend_from_slice(wants);
    let mut wants_list = vec!["network-online.target"];
    wants_list.extend_from_slice(wants);
    format!(
        "# Written by `skiff install`; `skiff uninstall` removes it. Settings: /etc/skiff/config.yaml\n\
         [Unit]\n\
         Description={description}\n\
         Documentation=https://github.com/skiff-dev/skiff/blob/main/docs/install.md\n\
         Wants={wants}\n\
         After={after}\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStartPre=-/sbin/modprobe overlay\n\
         ExecStartPre=-/sbin/modprobe br_netfilter\n\
         ExecStart={bin} --config /etc/skiff/config.yaml {cmd}\n\
         Restart=always\n\
         RestartSec=5s\n\
         # the pods' processes live in cgroups the agent makes and must survive a restart\n\
         Delegate=yes\n\
         KillMode=process\n\
         LimitNOFILE=1048576\n\
         LimitNPROC=infinity\n\
         LimitCORE=infinity\n\
         TasksMax=infinity\n\
         TimeoutStartSec=0\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        bin = bin.display(),
        after = after_list.join(" "),
        wants = wants_list.join(" "),
    )
}

/// The config file an install starts with.
pub fn default_config(role: Role, server: Option<&str>) -> String {
    let mut s = String::from(
        "# skiff's settings: every key is a long flag of `skiff master` / `skiff agent`\n\
         # (see `skiff master --help`, `skiff agent --help` and docs/install.md).\n\
         # Flags on the command line win over this file.\n",
    );
    if role.master() {
        s.push_str(&format!(
            "master:\n  data-dir: {MASTER_DATA_DIR}\n  listen: 0.0.0.0:6443\n  store: embedded\n"
        ));
    }
    if role.agent() {
        let (server, ca, token) = match server {
            Some(url) => (
                url.to_string(),
                "/etc/skiff/ca.crt",
                "/etc/skiff/node-token",
            ),
            None => (
                "https://127.0.0.1:6443".to_string(),
                "/var/lib/skiff/master/ca.crt",
                "/var/lib/skiff/master/node-token",
            ),
        };
        s.push_str(&format!(
            "agent:\n  server: {server}\n  ca-file: {ca}\n  token-file: {token}\n  \
             root-dir: {AGENT_ROOT_DIR}\n  run-dir: {AGENT_RUN_DIR}\n  log-dir: {POD_LOG_DIR}\n  \
             cgroup-prefix: {CGROUP_PREFIX}\n  pod-network: bridge\n"
        ));
    }
    s
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("skiff-tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// True when this machine was booted by systemd (sd_booted) and the install is for it.
fn systemd_running(root: &Path) -> bool {
    root == Path::new("/") && Path::new("/run/systemd/system").is_dir()
}

fn systemctl(args: &[&str]) -> Result<()> {
    let status = Command::new("systemctl")
        .args(args)
        .status()
        .context("cannot run systemctl")?;
    if !status.success() {
        bail!("systemctl {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The unit's cgroup relative to the hierarchy's root (`system.slice/skiff-agent.service`),
/// from `systemctl show`; `None` unless it is a cgroup of that very unit (never the root or a
/// slice, whose processes are not skiff's).
fn unit_cgroup(unit: &str) -> Option<String> {
    let out = Command::new("systemctl")
        .args(["show", "--property=ControlGroup", "--value", unit])
        .output()
        .ok()?;
    unit_cgroup_of(unit, &String::from_utf8_lossy(&out.stdout))
}

/// The pure part of [`unit_cgroup`]: `shown` is `systemctl show`'s ControlGroup value.
fn unit_cgroup_of(unit: &str, shown: &str) -> Option<String> {
    let rel = shown.trim().trim_start_matches('/');
    let last = rel.rsplit('/').next()?;
    (last == unit && !rel.split('/').any(|c| c == ".." || c.is_empty())).then(|| rel.to_string())
}

/// Polls `systemctl is-active` until the unit is active or the deadline passes.
fn wait_active(unit: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = Command::new("systemctl")
            .args(["is-active", unit])
            .output()
            .context("cannot run systemctl")?;
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if state == "active" {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{unit} is {state:?}, not active; see `journalctl -u {unit}`");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Polls until `path` exists.
fn wait_file(path: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() >= deadline {
            bail!("{} did not appear", path.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Copies `exe` into `dir` as `skiff`: next to itself first, then renamed over the old one
/// (a running skiff keeps its inode). When `dir` is already the read-only mount of an
/// earlier install, the copy is written beneath it, in a private mount namespace where that
/// mount is lifted: the host's mount stays, and shows the new binary.
fn install_binary(exe: &Path, dir: &Path) -> Result<()> {
    let target = dir.join("skiff");
    if exe == target {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let copy = {
        let (exe, target) = (exe.to_path_buf(), target.clone());
        move || -> std::io::Result<()> {
            let tmp = target.with_extension("skiff-tmp");
            std::fs::copy(&exe, &tmp)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
            std::fs::rename(&tmp, &target)
        }
    };
    let result = if read_only(dir) {
        let dir = dir.to_path_buf();
        skiff_runtime::sys::in_private_mount_namespace(move || {
            // the read-only bind mount (a second install may have stacked another)
            while read_only(&dir) {
                nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH)?;
            }
            copy()
        })
    } else {
        copy()
    };
    result.with_context(|| format!("cannot install {} as {}", exe.display(), target.display()))
}

/// Whether `path` is on a read-only mount.
fn read_only(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Makes `link` a symlink to `target`, replacing whatever is there (a binary of an earlier
/// install, another link) in one rename.
fn replace_with_symlink(link: &Path, target: &Path) -> Result<()> {
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = link.with_extension("skiff-tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .and_then(|()| std::fs::rename(&tmp, link))
        .with_context(|| format!("cannot link {} to {}", link.display(), target.display()))
}

/// Runs `skiff install`.
pub fn install(
    a: InstallArgs,
    completion: impl Fn(clap_complete::Shell) -> Vec<u8>,
) -> Result<i32> {
    let role = a.role.unwrap_or(if a.server.is_some() {
        Role::Agent
    } else {
        Role::MasterAgent
    });
    if role == Role::Agent && a.server.is_none() {
        bail!("--role agent joins an existing master: give --server, --token and --ca-file");
    }
    if role != Role::Agent && a.server.is_some() {
        bail!("--server joins this machine as a worker: it goes with --role agent only");
    }
    let root = &a.root;
    let bin_dir = under(&a.prefix, "bin");
    let bin = bin_dir.join("skiff");
    let lib = lib_dir(&a.prefix);
    let lib_bin = lib.join("skiff");
    let mount = mount_unit_name(&lib);
    let exe = std::env::current_exe().context("cannot find the running skiff binary")?;

    // the binary, in its directory (read-only once its mount unit runs), linked from bin/
    install_binary(&exe, &under(root, &lib))?;
    for (link, target) in [
        (bin.clone(), Path::new("../lib/skiff/skiff")),
        (bin_dir.join("skiff-runc"), Path::new("skiff")),
    ] {
        replace_with_symlink(&under(root, &link), target)?;
    }
    outln!(
        "installed {} (from {} and {})",
        lib_bin.display(),
        bin.display(),
        bin_dir.join("skiff-runc").display()
    );

    // config, credentials of a worker
    let etc = under(root, "/etc/skiff");
    let config = etc.join("config.yaml");
    if config.exists() && !a.force_config {
        outln!("kept /etc/skiff/config.yaml (--force-config replaces it)");
    } else {
        write_file(
            &config,
            default_config(role, a.server.as_deref()).as_bytes(),
            0o600,
        )?;
        outln!("wrote /etc/skiff/config.yaml");
    }
    if let (Some(token), Some(ca)) = (&a.token, &a.ca_file) {
        write_file(
            &etc.join("node-token"),
            format!("{}\n", token.trim()).as_bytes(),
            0o600,
        )?;
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        write_file(&etc.join("ca.crt"), &pem, 0o644)?;
    }
    if role.master() {
        let link = etc.join("admin.kubeconfig");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(Path::new(MASTER_DATA_DIR).join("admin.kubeconfig"), &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }

    // units
    let units_dir = under(root, "/etc/systemd/system");
    write_file(&units_dir.join(&mount), mount_unit(&lib).as_bytes(), 0o644)?;
    let mut units = Vec::new();
    if role.master() {
        write_file(
            &units_dir.join(MASTER_UNIT),
            unit(
                "skiff master: Kubernetes API server, scheduler and controllers",
                &bin,
                "master",
                &[],
                &[&mount],
            )
            .as_bytes(),
            0o644,
        )?;
        units.push(MASTER_UNIT);
    }
    if role.agent() {
        let after: &[&str] = if role.master() { &[MASTER_UNIT] } else { &[] };
        write_file(
            &units_dir.join(AGENT_UNIT),
            unit(
                "skiff agent: the node agent that runs pods",
                &bin,
                "agent",
                after,
                &[&mount],
            )
            .as_bytes(),
            0o644,
        )?;
        units.push(AGENT_UNIT);
    }
    outln!("wrote {mount}, {}", units.join(", "));

    // completions (bash-completion and zsh pick them up from these places)
    for (shell, path) in [
        (
            clap_complete::Shell::Bash,
            "/usr/share/bash-completion/completions/skiff",
        ),
        (
            clap_complete::Shell::Zsh,
            "/usr/local/share/zsh/site-functions/_skiff",
        ),
        (
            clap_complete::Shell::Fish,
            "/usr/share/fish/vendor_completions.d/skiff.fish",
        ),
    ] {
        write_file(&under(root, path), &completion(shell), 0o644)?;
    }

    if a.no_start || !systemd_running(root) {
        if !a.no_start {
            outln!("systemd is not running on this machine: start skiff by hand, as root:");
        } else {
            outln!("not started (--no-start); to start by hand, as root:");
        }
        outln!(
            "  mount --bind -o ro {lib} {lib}   # optional: the runtime then starts once per call",
            lib = lib.display()
        );
        if role.master() {
            outln!(
                "  {} --config /etc/skiff/config.yaml master &",
                bin.display()
            );
        }
        if role.agent() {
            outln!(
                "  {} --config /etc/skiff/config.yaml agent &",
                bin.display()
            );
        }
        return Ok(0);
    }
    systemctl(&["daemon-reload"])?;
    // the mount before the services, so that they run from it; a fresh install's mount is
    // started, an update's stays (the new binary shows through it)
    systemctl(&["enable", "--now", &mount])?;
    let mut enable = vec!["enable"];
    enable.extend(units.iter().copied());
    systemctl(&enable)?;
    // started, or restarted when they ran already (an update or a new config), as k3s's
    // installer does: the services then run the binary and config just installed. Running
    // pods stay (KillMode=process) and the restarted agent adopts them.
    let mut restart = vec!["restart"];
    restart.extend(units.iter().copied());
    systemctl(&restart)?;
    for u in &units {
        wait_active(u, Duration::from_secs(60))?;
    }
    if role.master() {
        wait_file(
            &Path::new(MASTER_DATA_DIR).join("admin.kubeconfig"),
            Duration::from_secs(60),
        )?;
        outln!("kubeconfig: export KUBECONFIG=/etc/skiff/admin.kubeconfig");
        outln!(
            "join a worker: skiff install --server https://THIS-HOST:6443 --token $(cat {MASTER_DATA_DIR}/node-token) --ca-file ca.crt (copy {MASTER_DATA_DIR}/ca.crt there)"
        );
    }
    outln!("{} active", units.join(" and "));
    Ok(0)
}

/// Records a failed step (uninstall goes on with the others and reports them all).
fn note(problems: &mut Vec<String>, what: String, r: Result<()>) {
    if let Err(e) = r {
        problems.push(format!("{what}: {e:#}"));
    }
}

/// Runs `skiff uninstall`.
pub fn uninstall(a: UninstallArgs) -> Result<i32> {
    let root = &a.root;
    let host = root == Path::new("/");
    let mut problems: Vec<String> = Vec::new();
    let units_dir = under(root, "/etc/systemd/system");
    // the units' cgroups: KillMode=process leaves the agent's per-pod shims there after the stop
    let mut unit_cgroups: Vec<String> = Vec::new();
    if systemd_running(root) {
        for u in [AGENT_UNIT, MASTER_UNIT] {
            if units_dir.join(u).exists() {
                unit_cgroups.extend(unit_cgroup(u));
                // `disable --now` stops the main process only (KillMode=process): the pods go below
                note(
                    &mut problems,
                    format!("stop {u}"),
                    systemctl(&["disable", "--now", u]),
                );
            }
        }
    }
    // where the agent and master kept their things: the config file's settings, else the defaults
    let config =
        crate::config_file::ConfigFile::load(&under(root, "/etc/skiff/config.yaml"), false)
            .unwrap_or_default()
            .unwrap_or_default();
    let setting = |section: &str, key: &str, default: &str| {
        config
            .value(section, key)
            .unwrap_or_else(|| default.to_string())
    };
    let agent_root = under(root, setting("agent", "root-dir", AGENT_ROOT_DIR));
    let agent_run = under(root, setting("agent", "run-dir", AGENT_RUN_DIR));
    let log_dir = under(root, setting("agent", "log-dir", POD_LOG_DIR));
    let master_data = under(root, setting("master", "data-dir", MASTER_DATA_DIR));
    let cgroup_root = under(root, setting("agent", "cgroup-root", "/sys/fs/cgroup"));
    let prefix = setting("agent", "cgroup-prefix", CGROUP_PREFIX);
    let bridge = setting(
        "agent",
        "bridge-name",
        skiff_netproxy::podnet::defaults::BRIDGE,
    );
    // the pods: every process in skiff's cgroups, then the cgroups
    note(
        &mut problems,
        "pod cgroups".into(),
        crate::uninstall_ops::remove_cgroups(&cgroup_root, &prefix),
    );
    // then what the stopped units left behind (the shims, once their pods are gone), and the
    // units' cgroups with them
    for cg in &unit_cgroups {
        note(
            &mut problems,
            format!("processes left in {cg}"),
            crate::uninstall_ops::remove_cgroups(&cgroup_root, cg),
        );
    }
    // mounts under skiff's dirs (rootfs overlays, volumes, network namespaces), and the
    // binary's read-only mount (its unit is stopped once nothing runs from it but us)
    let lib = lib_dir(&a.prefix);
    let mount = mount_unit_name(&lib);
    if systemd_running(root) && units_dir.join(&mount).exists() {
        note(
            &mut problems,
            format!("stop {mount}"),
            systemctl(&["disable", "--now", &mount]),
        );
    }
    let dirs = [agent_root.clone(), agent_run.clone()];
    note(
        &mut problems,
        "mounts".into(),
        crate::uninstall_ops::unmount_under(&[&dirs[..], &[under(root, &lib)]].concat()),
    );
    if host {
        crate::uninstall_ops::remove_network(&bridge, &mut problems);
    }
    // pod logs: the dirs of skiff's pods only (named NAMESPACE_NAME_UID)
    note(
        &mut problems,
        "pod logs".into(),
        crate::uninstall_ops::remove_pod_logs(&log_dir, &dirs),
    );
    let mut remove = vec![
        units_dir.join(MASTER_UNIT),
        units_dir.join(AGENT_UNIT),
        units_dir.join(&mount),
        under(root, "/etc/skiff"),
        agent_run,
        under(root, &lib),
        under(root, under(&a.prefix, "bin/skiff")),
        under(root, under(&a.prefix, "bin/skiff-runc")),
        under(root, "/usr/share/bash-completion/completions/skiff"),
        under(root, "/usr/local/share/zsh/site-functions/_skiff"),
        under(root, "/usr/share/fish/vendor_completions.d/skiff.fish"),
    ];
    if !a.keep_data {
        remove.push(master_data);
        remove.push(agent_root);
    }
    for p in remove {
        note(
            &mut problems,
            format!("remove {}", p.display()),
            crate::uninstall_ops::remove_path(&p),
        );
    }
    if systemd_running(root) {
        note(
            &mut problems,
            "daemon-reload".into(),
            systemctl(&["daemon-reload"]),
        );
    }
    if problems.is_empty() {
        outln!("skiff is uninstalled");
        Ok(0)
    } else {
        for p in &problems {
            eprintln!("skiff uninstall: {p}");
        }
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_cgroup_is_the_units_own() {
        let table = [
            (
                "/system.slice/skiff-agent.service\n",
                Some("system.slice/skiff-agent.service"),
            ),
            ("/system.slice/other.service", None),
            ("/", None),
            ("", None),
            ("/system.slice", None),
            ("/x/../skiff-agent.service", None),
        ];
        for (shown, want) in table {
            assert_eq!(
                unit_cgroup_of(AGENT_UNIT, shown).as_deref(),
                want,
                "{shown:?}"
            );
        }
    }

    #[test]
    fn unit_has_what_pods_need() {
        let u = unit(
            "d",
            Path::new("/usr/local/bin/skiff"),
            "agent",
            &[MASTER_UNIT],
            &["usr-local-lib-skiff.mount"],
        );
        for want in [
            "Delegate=yes",
            "KillMode=process",
            "Restart=always",
            "LimitNOFILE=1048576",
            "ExecStartPre=-/sbin/modprobe overlay",
            "ExecStartPre=-/sbin/modprobe br_netfilter",
            "After=network-online.target skiff-master.service usr-local-lib-skiff.mount",
            "Wants=network-online.target usr-local-lib-skiff.mount",
            "ExecStart=/usr/local/bin/skiff --config /etc/skiff/config.yaml agent",
            "WantedBy=multi-user.target",
        ] {
            assert!(u.lines().any(|l| l == want), "{want} missing in\n{u}");
        }
    }

    #[test]
    fn default_configs_per_role() {
        type Case<'a> = (Role, Option<&'a str>, &'a [&'a str], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                Role::MasterAgent,
                None,
                &["master:", "agent:", "server: https://127.0.0.1:6443"],
                &[],
            ),
            (Role::Master, None, &["master:"], &["agent:"]),
            (
                Role::Agent,
                Some("https://10.0.0.1:6443"),
                &[
                    "server: https://10.0.0.1:6443",
                    "token-file: /etc/skiff/node-token",
                ],
                &["master:"],
            ),
        ];
        for (role, server, has, lacks) in cases {
            let c = default_config(*role, *server);
            for h in *has {
                assert!(c.contains(h), "{role:?}: {h} missing in\n{c}");
            }
            for l in *lacks {
                assert!(!c.contains(l), "{role:?}: {l} in\n{c}");
            }
            // every key is a flag the file loader accepts
            let file = crate::config_file::ConfigFile::parse(Path::new("t"), &c).unwrap();
            file.apply(<crate::Cli as clap::CommandFactory>::command())
                .unwrap_or_else(|e| panic!("{role:?}: {e}"));
        }
    }

    #[test]
    fn mount_unit_names_are_systemds() {
        // as `systemd-escape --path --suffix=mount` writes them
        for (path, want) in [
            ("/usr/local/lib/skiff", "usr-local-lib-skiff.mount"),
            (
                "/opt/my-tools/lib/skiff",
                "opt-my\\x2dtools-lib-skiff.mount",
            ),
            ("/srv/.hidden/x y", "srv-.hidden-x\\x20y.mount"),
            ("/.dot//lib/", "\\x2edot-lib.mount"),
            ("/", "-.mount"),
        ] {
            assert_eq!(mount_unit_name(Path::new(path)), want, "{path}");
        }
    }

    #[test]
    fn mount_unit_binds_the_dir_read_only() {
        let u = mount_unit(Path::new("/usr/local/lib/skiff"));
        for want in [
            "What=/usr/local/lib/skiff",
            "Where=/usr/local/lib/skiff",
            "Options=bind,ro",
            "LazyUnmount=yes",
            "WantedBy=local-fs.target",
        ] {
            assert!(u.lines().any(|l| l == want), "{want} missing in\n{u}");
        }
    }

    #[test]
    fn paths_under_root() {
        assert_eq!(
            under(Path::new("/"), "/etc/skiff"),
            PathBuf::from("/etc/skiff")
        );
        assert_eq!(
            under(Path::new("/t"), "/etc/skiff"),
            PathBuf::from("/t/etc/skiff")
        );
        assert_eq!(under(Path::new("/t"), "etc"), PathBuf::from("/t/etc"));
    }
}

//! The host-side steps of `skiff uninstall`: kill the pods and remove their cgroups, unmount
//! what skiff mounted, delete its nftables tables, bridge and routes, and remove files.
//! Each takes the directories it works on as arguments (tests point them at a temp dir).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Removes `path` whatever it is (file, symlink, directory tree); a missing path is fine.
pub fn remove_path(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot stat {}", path.display())),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path)
            .with_context(|| format!("cannot remove {}", path.display())),
        Ok(_) => {
            std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))
        }
    }
}

/// The cgroup directories named `prefix` under `cgroup_root`: the unified (v2) one and one
/// per v1 controller hierarchy.
pub fn prefix_cgroups(cgroup_root: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let top = cgroup_root.join(prefix);
    if top.is_dir() {
        out.push(top);
    }
    if let Ok(entries) = std::fs::read_dir(cgroup_root) {
        for e in entries.flatten() {
            let p = e.path().join(prefix);
            if e.file_type().is_ok_and(|t| t.is_dir()) && p.is_dir() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every directory under `dir` (itself included), deepest first.
fn dirs_deepest_first(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        out.push(d);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

fn procs(cgroup: &Path) -> Vec<i32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills every process in the cgroups named `prefix` and removes those cgroups.
pub fn remove_cgroups(cgroup_root: &Path, prefix: &str) -> Result<()> {
    for top in prefix_cgroups(cgroup_root, prefix) {
        let dirs = dirs_deepest_first(&top);
        for d in &dirs {
            for pid in procs(d) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for d in &dirs {
            // a killed process leaves its cgroup once it has exited: wait for that
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() >= deadline => {
                        return Err(e)
                            .with_context(|| format!("cannot remove cgroup {}", d.display()));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
    Ok(())
}

/// Decodes a mountinfo path field (`\040` for a space and so on).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points in `mountinfo` text that lie under one of `dirs`, deepest first.
pub fn mounts_under(mountinfo: &str, dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| PathBuf::from(unescape(f)))
        .filter(|m| dirs.iter().any(|d| m.starts_with(d)))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Unmounts (lazily) everything mounted under `dirs`.
pub fn unmount_under(dirs: &[PathBuf]) -> Result<()> {
    // a mount can hide another at the same place: repeat until none is left
    for _ in 0..16 {
        let info = std::fs::read_to_string("/proc/self/mountinfo")
            .context("cannot read /proc/self/mountinfo")?;
        let mounts = mounts_under(&info, dirs);
        if mounts.is_empty() {
            return Ok(());
        }
        for m in mounts {
            nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH)
                .with_context(|| format!("cannot unmount {}", m.display()))?;
        }
    }
    bail!("mounts are still left under {dirs:?}")
}

/// Runs a tool; `Ok(false)` when it is not installed.
fn run(tool: &str, args: &[&str]) -> Result<bool> {
    match Command::new(tool).args(args).output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot run {tool}")),
        Ok(o) if o.status.success() => Ok(true),
        Ok(o) => bail!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
    }
}

/// Deletes skiff's nftables tables (Service proxy and pod network), the node bridge, the
/// cluster DNS link and the host-gw routes between nodes, on the host. Problems are added to `problems`.
pub fn remove_network(bridge: &str, problems: &mut Vec<String>) {
    let proxy_table = skiff_netproxy::proxy::rules::RulesConfig::default().table;
    let tables = [
        ("ip", proxy_table.as_str()),
        ("ip6", proxy_table.as_str()),
        ("ip", skiff_netproxy::podnet::nft::TABLE),
        ("ip6", skiff_netproxy::podnet::nft::TABLE),
        ("ip", skiff_netproxy::podnet::hostport::TABLE),
        ("ip6", skiff_netproxy::podnet::hostport::TABLE),
    ];
    for (family, table) in tables {
        // only tables that exist: `nft list` fails for the others
        if run("nft", &["list", "table", family, table]).unwrap_or(false)
            && let Err(e) = run("nft", &["delete", "table", family, table])
        {
            problems.push(format!("nftables table {family} {table}: {e:#}"));
        }
    }
    // the node bridge, and the link that holds the node-local cluster DNS address
    for link in [
        bridge,
        skiff_netproxy::podnet::local::DEFAULT_LINK,
        skiff_netproxy::podnet::vxlan::DEVICE,
    ] {
        if Path::new("/sys/class/net").join(link).exists()
            && let Err(e) = run("ip", &["link", "delete", link])
        {
            problems.push(format!("link {link}: {e:#}"));
        }
    }
    let proto = skiff_netproxy::podnet::routes::ROUTE_PROTOCOL.to_string();
    for family in ["-4", "-6"] {
        if let Err(e) = run("ip", &[family, "route", "flush", "proto", &proto]) {
            problems.push(format!("routes ({family}) of protocol {proto}: {e:#}"));
        }
    }
}

/// Removes the log dirs (`NAMESPACE_NAME_UID`) of the pods skiff ran: those whose UID has a
/// dir under one of `state_dirs`' `pods/`. Removes `log_dir` itself when it is left empty.
pub fn remove_pod_logs(log_dir: &Path, state_dirs: &[PathBuf]) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(uid) = name.rsplit('_').next() else {
            continue;
        };
        if !uid.is_empty() && state_dirs.iter().any(|d| d.join("pods").join(uid).is_dir()) {
            remove_path(&e.path())?;
        }
    }
    if std::fs::read_dir(log_dir).is_ok_and(|mut d| d.next().is_none()) {
        std::fs::remove_dir(log_dir)
            .with_context(|| format!("cannot remove {}", log_dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_filter() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 0:40 / /var/lib/skiff/pods/u1/rootfs rw - overlay overlay rw
31 30 0:41 / /var/lib/skiff/pods/u1/rootfs/proc rw - proc proc rw
32 22 0:4 net:[1] /run/skiff/netns/a\\040b rw - nsfs nsfs rw
33 22 0:42 / /var/lib/skiffy rw - tmpfs tmpfs rw
34 22 0:43 / /run/skiff rw - tmpfs tmpfs rw
";
        let dirs = [PathBuf::from("/var/lib/skiff"), PathBuf::from("/run/skiff")];
        let got = mounts_under(info, &dirs);
        let want: Vec<PathBuf> = [
            "/var/lib/skiff/pods/u1/rootfs/proc",
            "/var/lib/skiff/pods/u1/rootfs",
            "/run/skiff/netns/a b",
            "/run/skiff",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn cgroups_v1_and_v2_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in [
            "skiff/burstable/podA/c1",
            "cpu/skiff/podB",
            "memory/skiff",
            "memory/other",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        assert_eq!(prefix_cgroups(r, "skiff").len(), 3);
        remove_cgroups(r, "skiff").unwrap();
        assert!(prefix_cgroups(r, "skiff").is_empty());
        assert!(r.join("memory/other").is_dir());
        assert!(r.join("cpu").is_dir());
    }

    #[test]
    fn pod_logs_of_skiff_pods_only() {
        let t = tempfile::tempdir().unwrap();
        let logs = t.path().join("logs");
        let state = t.path().join("state");
        std::fs::create_dir_all(state.join("pods/uid-1")).unwrap();
        std::fs::create_dir_all(logs.join("default_web_uid-1")).unwrap();
        std::fs::create_dir_all(logs.join("default_other_uid-2")).unwrap();
        remove_pod_logs(&logs, std::slice::from_ref(&state)).unwrap();
        assert!(!logs.join("default_web_uid-1").exists());
        assert!(logs.join("default_other_uid-2").exists());
        std::fs::remove_dir(logs.join("default_other_uid-2")).unwrap();
        remove_pod_logs(&logs, &[state]).unwrap();
        assert!(!logs.exists(), "an empty log dir goes too");
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("plain"), "plain");
        assert_eq!(unescape("end\\04"), "end\\04");
    }
}

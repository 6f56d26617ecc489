//! Removing what a test's agent left on the host: its pods' shims and processes, the mounts
//! under its directories and the cgroups under its prefix. Used by Drop guards, so every
//! step is best effort and never panics.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::wait::poll_until;

/// Mount points at or under `dir`, from /proc/self/mountinfo, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    mounts
}

/// The directories of cgroup `prefix` in every hierarchy under `cgroup_root` (one on v2,
/// one per controller on v1), existing or not.
pub fn cgroup_dirs(cgroup_root: &Path, prefix: &str) -> Vec<PathBuf> {
    let rel = prefix.trim_start_matches('/');
    if cgroup_root.join("cgroup.controllers").exists() {
        return vec![cgroup_root.join(rel)];
    }
    std::fs::read_dir(cgroup_root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path().join(rel))
                .collect()
        })
        .unwrap_or_default()
}

/// Every cgroup directory at or under `dir`, children before parents.
fn cgroup_tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(cgroup_tree(&e.path()));
            }
        }
    }
    if dir.is_dir() {
        out.push(dir.to_path_buf());
    }
    out
}

/// SIGKILLs every process in the cgroups under `prefix` and removes those cgroups, waiting
/// (at most `timeout`) for the processes to go. Returns the cgroups that are still there.
pub fn remove_cgroups(cgroup_root: &Path, prefix: &str, timeout: Duration) -> Vec<PathBuf> {
    let dirs = cgroup_dirs(cgroup_root, prefix);
    let left = poll_until(timeout, "the test's cgroups to empty", || {
        let mut left = Vec::new();
        for dir in &dirs {
            for cg in cgroup_tree(dir) {
                let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                if std::fs::remove_dir(&cg).is_err() && cg.exists() {
                    left.push(cg);
                }
            }
        }
        left.is_empty().then_some(())
    });
    match left {
        Ok(()) => Vec::new(),
        Err(_) => dirs.into_iter().filter(|d| d.exists()).collect(),
    }
}

/// Removes what an agent with `--run-dir <dir>/run` and `--cgroup-prefix <prefix>` left:
/// shims (their `shim.pid`), the processes in its cgroups, the mounts under `dir`, the
/// cgroups. The agent itself must be stopped first.
pub fn remove_node_state(dir: &Path, cgroup_root: &Path, prefix: &str) {
    if let Ok(pods) = std::fs::read_dir(dir.join("run/pods")) {
        for p in pods.flatten() {
            if let Some(pid) = std::fs::read_to_string(p.path().join("shim.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    let left = remove_cgroups(cgroup_root, prefix, Duration::from_secs(10));
    for m in mounts_under(dir) {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
    if !left.is_empty() {
        // processes that were exiting while their mounts went: once more
        remove_cgroups(cgroup_root, prefix, Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_dirs_per_layout() {
        let v1 = tempfile::tempdir().unwrap();
        for c in ["cpu", "memory"] {
            std::fs::create_dir(v1.path().join(c)).unwrap();
        }
        let mut got = cgroup_dirs(v1.path(), "/skiff-e2e-1/node1");
        got.sort();
        assert_eq!(
            got,
            vec![
                v1.path().join("cpu/skiff-e2e-1/node1"),
                v1.path().join("memory/skiff-e2e-1/node1")
            ]
        );
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu memory").unwrap();
        assert_eq!(
            cgroup_dirs(v2.path(), "skiff-e2e-1"),
            vec![v2.path().join("skiff-e2e-1")]
        );
    }

    #[test]
    fn tree_lists_children_first() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        assert_eq!(
            cgroup_tree(&d.path().join("a")),
            vec![d.path().join("a/b"), d.path().join("a")]
        );
        assert!(cgroup_tree(&d.path().join("missing")).is_empty());
    }
}

//! cgroups for containers: cgroup v2 through youki's `libcgroups`, cgroup v1 (legacy and
//! hybrid hosts) through [`v1`], written directly to cgroupfs.
//!
//! Why libcgroups and not cgroups-rs: it takes oci-spec's `LinuxResources` directly (the
//! same oci-spec 0.10 we use), handles v2's controllers, freezer and stats itself, and covers
//! pid listing; cgroups-rs would pull zbus and a second, older nix. Its v1 manager, though,
//! reads `/proc/self/mountinfo` and `/proc/self/cgroup` once per controller when it is
//! opened, most of a container start's work on a v1 host; [`v1`] reads the hierarchies once
//! and keeps libcgroups' v1 manager for statistics only. On a hybrid host (v1 controllers
//! plus a v2 hierarchy) the v1 controllers do the work.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use libcgroups::common::{
    AnyCgroupManager, CgroupConfig, CgroupManager, ControllerOpt, FreezerState,
    create_cgroup_manager_with_root,
};
use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

pub mod devices;
pub mod v1;

/// Where cgroupfs is mounted unless told otherwise.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Errors of cgroup handling; each names the cgroup path.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The manager could not be set up (cgroupfs missing or unrecognised).
    #[error("cannot set up cgroup {path}: {message}")]
    Setup {
        /// The cgroup path.
        path: PathBuf,
        /// The underlying error's text.
        message: String,
    },
    /// An operation on the cgroup failed.
    #[error("cannot {op} cgroup {path}: {message}")]
    Op {
        /// What was attempted.
        op: &'static str,
        /// The cgroup path.
        path: PathBuf,
        /// The underlying error's text.
        message: String,
    },
}

/// A container's cgroup.
pub struct Cgroup {
    /// Where cgroupfs is mounted (the unified hierarchy's root on cgroup v2).
    root: PathBuf,
    path: PathBuf,
    backend: Backend,
}

enum Backend {
    /// cgroup v1: the directories are ours; libcgroups' manager is opened for stats only.
    V1 {
        cgroup: v1::V1Cgroup,
        stats: OnceCell<libcgroups::v1::Manager>,
    },
    /// cgroup v2 (and systemd) through libcgroups.
    Managed(AnyCgroupManager),
}

impl std::fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cgroup").field("path", &self.path).finish()
    }
}

/// The cgroup path for a container: the spec's `cgroupsPath`, or `/skiff/<id>`.
/// With `--systemd-cgroup`, a `slice:prefix:name` path is mapped to
/// `/<slice>/<prefix>-<name>.scope` on cgroupfs (the layout systemd would create).
pub fn path_for(spec_path: Option<&Path>, id: &str, systemd: bool) -> PathBuf {
    match spec_path {
        Some(p) if !p.as_os_str().is_empty() => {
            let s = p.to_string_lossy();
            let parts: Vec<&str> = s.split(':').collect();
            if systemd && parts.len() == 3 {
                let slice = if parts[0].is_empty() {
                    "system.slice"
                } else {
                    parts[0]
                };
                PathBuf::from(format!("/{slice}/{}-{}.scope", parts[1], parts[2]))
            } else if p.is_absolute() {
                p.to_path_buf()
            } else {
                Path::new("/").join(p)
            }
        }
        _ => PathBuf::from(format!("/skiff/{id}")),
    }
}

impl Cgroup {
    /// Opens (without creating) the cgroup at `path` under `root` (default /sys/fs/cgroup).
    /// `root` decides between v2 (a cgroup2 mount) and v1; v1 hierarchies are found in
    /// this process's mountinfo, wherever they are mounted.
    pub fn open(root: Option<&Path>, path: &Path) -> Result<Cgroup, CgroupError> {
        let root = root.unwrap_or(Path::new(DEFAULT_CGROUP_ROOT));
        let setup = |message: String| CgroupError::Setup {
            path: path.to_path_buf(),
            message,
        };
        let fs =
            statfs(root).map_err(|e| setup(format!("no cgroupfs at {}: {e}", root.display())))?;
        let backend = if fs.filesystem_type() == CGROUP2_SUPER_MAGIC {
            let config = CgroupConfig {
                cgroup_path: path.to_path_buf(),
                systemd_cgroup: false,
                container_name: String::new(),
            };
            let manager = create_cgroup_manager_with_root(Some(root), config)
                .map_err(|e| setup(e.to_string()))?;
            Backend::Managed(manager)
        } else {
            let hierarchies = v1::Hierarchies::read().map_err(|e| setup(e.to_string()))?;
            let cgroup = v1::V1Cgroup::new(&hierarchies, path).map_err(|e| setup(e.to_string()))?;
            Backend::V1 {
                cgroup,
                stats: OnceCell::new(),
            }
        };
        Ok(Cgroup {
            root: root.to_path_buf(),
            path: path.to_path_buf(),
            backend,
        })
    }

    /// The cgroup path (relative to each hierarchy's root).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn op<T, E: std::fmt::Display>(
        &self,
        op: &'static str,
        r: Result<T, E>,
    ) -> Result<T, CgroupError> {
        r.map_err(|e| CgroupError::Op {
            op,
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// Moves `pid` (and so its future children) into the cgroup, creating it.
    pub fn add(&self, pid: Pid) -> Result<(), CgroupError> {
        // libcgroups' v2 manager makes each missing directory of the path after an exists()
        // check, so two containers created at once under a new parent (`/skiff` on a freshly
        // booted node) race for it and one fails with EEXIST. create_dir_all does not.
        let manager = match &self.backend {
            Backend::V1 { cgroup, .. } => return self.op("add a process to", cgroup.add(pid)),
            Backend::Managed(m) => m,
        };
        if let (AnyCgroupManager::V2(_), Some(parent)) = (manager, self.path.parent()) {
            let dir = self.root.join(parent.strip_prefix("/").unwrap_or(parent));
            std::fs::create_dir_all(&dir).map_err(|e| CgroupError::Op {
                op: "create the parent of",
                path: self.path.clone(),
                message: format!("{}: {e}", dir.display()),
            })?;
        }
        self.op("add a process to", manager.add_task(pid))
    }

    /// Applies resource limits.
    pub fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        let disable_oom_killer = resources
            .memory()
            .as_ref()
            .and_then(|m| m.disable_oom_killer())
            .unwrap_or(false);
        match &self.backend {
            Backend::V1 { cgroup, .. } => self.op(
                "apply resources to",
                cgroup.apply(resources, disable_oom_killer),
            ),
            Backend::Managed(m) => {
                // libcgroups leaves device rules out without its eBPF feature (which needs
                // libbpf): our own program, with runc's defaults after the spec's, built
                // before anything is written. Resources without device rules (an `update`
                // of limits) keep the program there is.
                let filter = match (m, resources.devices()) {
                    (AnyCgroupManager::V2(_), Some(rules)) => Some(
                        devices::Filter::from_rules(rules.iter().chain(v1::default_device_rules()))
                            .map_err(|message| CgroupError::Op {
                                op: "apply device rules to",
                                path: self.path.clone(),
                                message,
                            })?,
                    ),
                    _ => None,
                };
                let opt = ControllerOpt {
                    resources,
                    disable_oom_killer,
                    oom_score_adj: None,
                    freezer_state: None,
                };
                self.op("apply resources to", m.apply(&opt))?;
                if let Some(filter) = filter {
                    let dir = self
                        .root
                        .join(self.path.strip_prefix("/").unwrap_or(&self.path));
                    self.op("apply device rules to", devices::apply(&dir, &filter))?;
                }
                Ok(())
            }
        }
    }

    /// Freezes (pause) or thaws (resume) every process in the cgroup.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let op = if frozen { "freeze" } else { "thaw" };
        match &self.backend {
            Backend::V1 { cgroup, .. } => self.op(op, cgroup.set_frozen(frozen)),
            Backend::Managed(m) => {
                let state = if frozen {
                    FreezerState::Frozen
                } else {
                    FreezerState::Thawed
                };
                self.op(op, m.freeze(state))
            }
        }
    }

    /// Usage figures (cpu, memory, pids, blkio, hugetlb).
    pub fn stats(&self) -> Result<libcgroups::stats::Stats, CgroupError> {
        match &self.backend {
            Backend::V1 { stats, .. } => {
                let manager = match stats.get() {
                    Some(m) => m,
                    None => {
                        let m = libcgroups::v1::Manager::new(&self.path);
                        let m = self.op("read stats of", m)?;
                        stats.get_or_init(|| m)
                    }
                };
                self.op("read stats of", manager.stats())
            }
            Backend::Managed(m) => self.op("read stats of", m.stats()),
        }
    }

    /// Every pid in the cgroup.
    pub fn pids(&self) -> Result<Vec<Pid>, CgroupError> {
        match &self.backend {
            Backend::V1 { cgroup, .. } => self.op("list processes of", cgroup.pids()),
            Backend::Managed(m) => self.op("list processes of", m.get_all_pids()),
        }
    }

    /// Kills what is left and removes the cgroup directories.
    pub fn remove(&self) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::V1 { cgroup, .. } => self.op("remove", cgroup.remove()),
            Backend::Managed(m) => self.op("remove", m.remove()),
        }
    }
}

/// Stats in the JSON layout of runc's `events --stats` (libcontainer's `types.Stats`),
/// which containerd and other callers parse.
pub fn runc_stats_json(s: &libcgroups::stats::Stats) -> serde_json::Value {
    use serde_json::json;
    let mem = |d: &libcgroups::stats::MemoryData| json!({"limit": d.limit, "usage": d.usage, "max": d.max_usage, "failcnt": d.fail_count});
    let blk = |v: &[libcgroups::stats::BlkioDeviceStat]| {
        v.iter()
            .map(|e| json!({"major": e.major, "minor": e.minor, "op": e.op_type.clone().unwrap_or_default(), "value": e.value}))
            .collect::<Vec<_>>()
    };
    let hugetlb: serde_json::Map<String, serde_json::Value> = s
        .hugetlb
        .iter()
        .map(|(k, h)| {
            (
                k.clone(),
                json!({"usage": h.usage, "max": h.max_usage, "failcnt": h.fail_count}),
            )
        })
        .collect();
    json!({
        "cpu": {
            "usage": {
                "total": s.cpu.usage.usage_total,
                "percpu": s.cpu.usage.per_core_usage_total,
                "percpu_kernel": s.cpu.usage.per_core_usage_kernel,
                "percpu_user": s.cpu.usage.per_core_usage_user,
                "kernel": s.cpu.usage.usage_kernel,
                "user": s.cpu.usage.usage_user,
            },
            "throttling": {
                "periods": s.cpu.throttling.periods,
                "throttled_periods": s.cpu.throttling.throttled_periods,
                "throttled_time": s.cpu.throttling.throttled_time,
            },
        },
        "memory": {
            "cache": s.memory.cache,
            "usage": mem(&s.memory.memory),
            "swap": mem(&s.memory.memswap),
            "kernel": mem(&s.memory.kernel),
            "kernelTCP": mem(&s.memory.kernel_tcp),
            "raw": s.memory.stats,
        },
        "pids": {"current": s.pids.current, "limit": s.pids.limit},
        "blkio": {
            "ioServiceBytesRecursive": blk(&s.blkio.service_bytes),
            "ioServicedRecursive": blk(&s.blkio.serviced),
            "ioQueuedRecursive": blk(&s.blkio.queued),
            "ioServiceTimeRecursive": blk(&s.blkio.service_time),
            "ioWaitTimeRecursive": blk(&s.blkio.wait_time),
            "ioMergedRecursive": blk(&s.blkio.merged),
            "ioTimeRecursive": blk(&s.blkio.time),
            "sectorsRecursive": blk(&s.blkio.sectors),
        },
        "hugetlb": hugetlb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_layout_of_stats() {
        let mut s = libcgroups::stats::Stats::default();
        s.memory.memory.limit = 16 << 20;
        s.memory.memory.usage = 4096;
        s.pids.current = 2;
        s.cpu.usage.usage_total = 7;
        let v = runc_stats_json(&s);
        assert_eq!(v["memory"]["usage"]["limit"], 16 << 20);
        assert_eq!(v["memory"]["usage"]["usage"], 4096);
        assert_eq!(v["pids"]["current"], 2);
        assert_eq!(v["cpu"]["usage"]["total"], 7);
    }

    #[test]
    fn cgroup_path_table() {
        let cases: [(Option<&str>, bool, &str); 5] = [
            (None, false, "/skiff/c1"),
            (Some(""), false, "/skiff/c1"),
            (Some("/pods/x"), false, "/pods/x"),
            (Some("pods/x"), false, "/pods/x"),
            (
                Some("system.slice:skiff:c1"),
                true,
                "/system.slice/skiff-c1.scope",
            ),
        ];
        for (given, systemd, want) in cases {
            assert_eq!(
                path_for(given.map(Path::new), "c1", systemd),
                PathBuf::from(want),
                "{given:?}"
            );
        }
    }
}

//! cgroup v1 (legacy hosts, and the v1 controllers of hybrid hosts) written directly to
//! cgroupfs.
//!
//! libcgroups' v1 manager finds each controller's hierarchy by reading
//! `/proc/self/mountinfo` and `/proc/self/cgroup` once per controller, through libpathrs'
//! checked procfs access: about 500 system calls before a container's cgroup exists, half
//! of a `run`'s own system calls on such a host. Here the hierarchies are read once, from one
//! mountinfo read, and the resource files are written in the order runc writes them.
//! Statistics still come from libcgroups (`Cgroup::stats` opens its manager on demand):
//! they are off the start path.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use oci_spec::runtime::{
    LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxResources,
};

/// Errors of the v1 hierarchies; each names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum V1Error {
    /// `/proc/self/mountinfo` could not be read.
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(std::io::Error),
    /// No cgroup v1 hierarchy is mounted.
    #[error("no cgroup v1 hierarchy is mounted")]
    NoHierarchy,
    /// The resources ask for a controller no hierarchy carries.
    #[error("the resources need the {0} controller, which no cgroup v1 hierarchy carries")]
    Missing(&'static str),
    /// A file or directory operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A value could not be written to a cgroup file.
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A value in the resources or in a cgroup file is not valid.
    #[error("{path}: {message}")]
    Invalid {
        /// The file it was for.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The memory limit is below what the cgroup already uses (EBUSY).
    #[error("cannot set the memory limit to {limit}: the cgroup uses {usage} (peak {peak})")]
    MemoryInUse {
        /// The limit asked for.
        limit: i64,
        /// Current usage.
        usage: String,
        /// Peak usage.
        peak: String,
    },
    /// The freezer did not reach FROZEN.
    #[error("cannot freeze {0}: it stays FREEZING")]
    Freeze(PathBuf),
}

type Result<T> = std::result::Result<T, V1Error>;

/// The controllers the runtime manages, by their cgroupfs names.
pub const CONTROLLERS: [&str; 12] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// Where each v1 controller's hierarchy is mounted, and the hierarchies a container only
/// joins: named ones without controllers (`name=systemd`) and, on a hybrid host, the v2
/// one. runc and crun join those too, so that systemd and cgroup-v2-aware tools see the
/// container's processes in the container's cgroup rather than in the runtime's service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hierarchies {
    mounts: BTreeMap<&'static str, PathBuf>,
    membership: Vec<PathBuf>,
}

impl Hierarchies {
    /// The hierarchies of this process's mount namespace, from one mountinfo read.
    pub fn read() -> Result<Hierarchies> {
        let text = fs::read_to_string("/proc/self/mountinfo").map_err(V1Error::MountInfo)?;
        Ok(Hierarchies::parse(&text))
    }

    /// The hierarchies in a mountinfo text: each `cgroup` mount and the controllers its
    /// super options name (`rw,cpu,cpuacct`), each named hierarchy (`name=systemd`), and
    /// the first `cgroup2` mount. The first mount of a hierarchy wins.
    pub fn parse(mountinfo: &str) -> Hierarchies {
        let mut mounts = BTreeMap::new();
        let mut named: Vec<(String, PathBuf)> = Vec::new();
        let mut unified = None;
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mut right = right.split(' ');
            let fs_type = right.next();
            let (Some(mount_point), Some(options)) = (left.split(' ').nth(4), right.nth(1)) else {
                continue;
            };
            let mount_point = || PathBuf::from(unescape(mount_point));
            match fs_type {
                Some("cgroup2") => {
                    unified.get_or_insert_with(mount_point);
                }
                Some("cgroup") => {
                    for option in options.split(',') {
                        if let Some(name) = CONTROLLERS.iter().find(|c| **c == option) {
                            mounts.entry(*name).or_insert_with(mount_point);
                        } else if let Some(name) = option.strip_prefix("name=") {
                            if !named.iter().any(|(n, _)| n == name) {
                                named.push((name.to_string(), mount_point()));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let membership = named.into_iter().map(|(_, m)| m).chain(unified).collect();
        Hierarchies { mounts, membership }
    }

    /// The mount point of `controller`'s hierarchy.
    pub fn mount_point(&self, controller: &str) -> Option<&Path> {
        self.mounts.get(controller).map(PathBuf::as_path)
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One container's cgroup: its directory in each hierarchy.
#[derive(Debug, Clone)]
pub struct V1Cgroup {
    /// Controller → directory, for each mounted controller.
    dirs: BTreeMap<&'static str, PathBuf>,
    /// Controller → its hierarchy's mount point.
    mounts: BTreeMap<&'static str, PathBuf>,
    /// The directories in the hierarchies the container only joins.
    membership: Vec<PathBuf>,
}

impl V1Cgroup {
    /// The cgroup at `path` (relative to each hierarchy's root) in `hierarchies`.
    pub fn new(hierarchies: &Hierarchies, path: &Path) -> Result<V1Cgroup> {
        if hierarchies.mounts.is_empty() {
            return Err(V1Error::NoHierarchy);
        }
        let relative = path.strip_prefix("/").unwrap_or(path);
        let dirs = hierarchies
            .mounts
            .iter()
            .map(|(c, m)| (*c, m.join(relative)))
            .collect();
        Ok(V1Cgroup {
            dirs,
            mounts: hierarchies.mounts.clone(),
            membership: hierarchies
                .membership
                .iter()
                .map(|m| m.join(relative))
                .collect(),
        })
    }

    /// The cgroup's directory in `controller`'s hierarchy.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.get(controller).map(PathBuf::as_path)
    }

    /// Each directory once (co-mounted controllers share one), the controllers' first,
    /// then those of the hierarchies the container only joins (labelled "").
    fn unique_dirs(&self) -> Vec<(&'static str, &Path)> {
        let mut seen: Vec<(&'static str, &Path)> = Vec::new();
        let all = self.dirs.iter().map(|(c, d)| (*c, d));
        for (c, d) in all.chain(self.membership.iter().map(|d| ("", d))) {
            if !seen.iter().any(|(_, s)| *s == d.as_path()) {
                seen.push((c, d));
            }
        }
        seen
    }

    fn need(&self, controller: &'static str) -> Result<&Path> {
        self.dir(controller).ok_or(V1Error::Missing(controller))
    }

    /// Creates the cgroup in every hierarchy and moves `pid` into it.
    pub fn add(&self, pid: Pid) -> Result<()> {
        for (controller, dir) in self.unique_dirs() {
            if controller.is_empty() {
                // no resources hang on these: a host that refuses costs a warning only
                let joined = fs::create_dir_all(dir)
                    .map_err(io("create", dir))
                    .and_then(|()| write(dir, "cgroup.procs", pid));
                if let Err(e) = joined {
                    tracing::warn!(error = %e, "cannot join a cgroup hierarchy without controllers");
                }
                continue;
            }
            fs::create_dir_all(dir).map_err(io("create", dir))?;
            if controller == "cpuset" || self.dir("cpuset") == Some(dir) {
                // a new cpuset has empty cpus and mems, and takes no task until they are set
                self.inherit_cpuset(dir, "cpuset.cpus")?;
                self.inherit_cpuset(dir, "cpuset.mems")?;
            }
            write(dir, "cgroup.procs", pid)?;
        }
        Ok(())
    }

    /// Copies `file` from the nearest ancestor down to `dir` wherever it is empty.
    fn inherit_cpuset(&self, dir: &Path, file: &str) -> Result<()> {
        let Some(mount) = self.mounts.get("cpuset") else {
            return Ok(());
        };
        let relative = dir.strip_prefix(mount).unwrap_or(Path::new(""));
        let mut current = mount.clone();
        let mut value = read(&current, file)?;
        for component in relative.components() {
            current.push(component);
            let own = read(&current, file)?;
            if own.trim().is_empty() {
                write(&current, file, value.trim())?;
            } else {
                value = own;
            }
        }
        Ok(())
    }

    /// Writes `resources` to the controllers' files, in runc's order.
    pub fn apply(&self, resources: &LinuxResources, disable_oom_killer: bool) -> Result<()> {
        self.check(resources)?;
        if let Some(cpu) = resources.cpu() {
            if let Some(dir) = self.dir("cpu") {
                apply_cpu(dir, cpu)?;
            }
            if let Some(dir) = self.dir("cpuset") {
                if let Some(cpus) = cpu.cpus() {
                    write(dir, "cpuset.cpus", cpus)?;
                }
                if let Some(mems) = cpu.mems() {
                    write(dir, "cpuset.mems", mems)?;
                }
            }
        }
        if let Some(memory) = resources.memory() {
            apply_memory(self.need("memory")?, memory, disable_oom_killer)?;
        }
        if let Some(pids) = resources.pids() {
            let dir = self.need("pids")?;
            if pids.limit() > 0 {
                write(dir, "pids.max", pids.limit())?;
            } else {
                write(dir, "pids.max", "max")?;
            }
        }
        if let Some(blkio) = resources.block_io() {
            apply_blkio(self.need("blkio")?, blkio)?;
        }
        for limit in resources.hugepage_limits().iter().flatten() {
            let dir = self.need("hugetlb")?;
            let size = limit.page_size();
            write(
                dir,
                &format!("hugetlb.{size}.limit_in_bytes"),
                limit.limit(),
            )?;
            let reserved = format!("hugetlb.{size}.rsvd.limit_in_bytes");
            if dir.join(&reserved).exists() {
                write(dir, &reserved, limit.limit())?;
            }
        }
        if let Some(network) = resources.network() {
            if let Some(class_id) = network.class_id() {
                write(self.need("net_cls")?, "net_cls.classid", class_id)?;
            }
            for p in network.priorities().iter().flatten() {
                let line = format!("{} {}", p.name(), p.priority());
                write(self.need("net_prio")?, "net_prio.ifpriomap", line)?;
            }
        }
        let dir = self.need("devices")?;
        let rules = resources.devices().iter().flatten();
        for rule in rules.chain(default_device_rules().iter()) {
            let file = if rule.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write(dir, file, rule)?;
        }
        Ok(())
    }

    /// Refuses, before anything is written, resources for a controller that is not mounted
    /// and values the kernel would refuse halfway through.
    fn check(&self, r: &LinuxResources) -> Result<()> {
        let cpu = r.cpu().as_ref();
        let wants = [
            (
                "cpu",
                cpu.is_some_and(|c| {
                    c.shares().is_some()
                        || c.quota().is_some()
                        || c.period().is_some()
                        || c.burst().is_some()
                        || c.realtime_runtime().is_some()
                        || c.realtime_period().is_some()
                        || c.idle().is_some()
                }),
            ),
            (
                "cpuset",
                cpu.is_some_and(|c| c.cpus().is_some() || c.mems().is_some()),
            ),
            ("memory", r.memory().is_some()),
            ("pids", r.pids().is_some()),
            ("blkio", r.block_io().is_some()),
            (
                "hugetlb",
                r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
            ),
            (
                "net_cls",
                r.network().as_ref().is_some_and(|n| n.class_id().is_some()),
            ),
            (
                "net_prio",
                r.network()
                    .as_ref()
                    .is_some_and(|n| n.priorities().as_ref().is_some_and(|p| !p.is_empty())),
            ),
            ("devices", true),
        ];
        for (controller, wanted) in wants {
            if wanted {
                self.need(controller)?;
            }
        }
        for limit in r.hugepage_limits().iter().flatten() {
            let size = limit.page_size();
            let digits: String = size.chars().take_while(char::is_ascii_digit).collect();
            if !digits.parse::<u64>().is_ok_and(u64::is_power_of_two) {
                return Err(V1Error::Invalid {
                    path: self
                        .need("hugetlb")?
                        .join(format!("hugetlb.{size}.limit_in_bytes")),
                    message: format!("page size {size:?} is not a power of two"),
                });
            }
        }
        for rule in r.devices().iter().flatten() {
            super::devices::check(rule).map_err(|message| V1Error::Invalid {
                path: self
                    .dir("devices")
                    .unwrap_or(Path::new(""))
                    .join("devices.allow"),
                message,
            })?;
        }
        if let Some(swappiness) = r.memory().as_ref().and_then(|m| m.swappiness()) {
            if swappiness > 100 {
                return Err(V1Error::Invalid {
                    path: self.need("memory")?.join("memory.swappiness"),
                    message: format!("swappiness {swappiness} is above 100"),
                });
            }
        }
        Ok(())
    }

    /// Freezes or thaws every process of the cgroup and waits until the kernel says so.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        let dir = self.need("freezer")?;
        if !frozen {
            return write(dir, "freezer.state", "THAWED");
        }
        // FREEZING means a task has not stopped yet; thawing now and then lets a task stuck
        // in the kernel move on (as runc does)
        for i in 0..1000 {
            if i % 50 == 49 {
                let _ = write(dir, "freezer.state", "THAWED");
                std::thread::sleep(Duration::from_millis(10));
            }
            let written = write(dir, "freezer.state", "FROZEN");
            if let Err(e) = written {
                let _ = write(dir, "freezer.state", "THAWED");
                return Err(e);
            }
            if i % 25 == 24 {
                std::thread::sleep(Duration::from_millis(10));
            }
            let state = read(dir, "freezer.state")?;
            match state.trim() {
                "FROZEN" => return Ok(()),
                "FREEZING" => continue,
                other => {
                    let _ = write(dir, "freezer.state", "THAWED");
                    return Err(V1Error::Invalid {
                        path: dir.join("freezer.state"),
                        message: format!("unexpected state {other:?}"),
                    });
                }
            }
        }
        let _ = write(dir, "freezer.state", "THAWED");
        Err(V1Error::Freeze(dir.to_path_buf()))
    }

    /// Every pid in the cgroup and in cgroups below it.
    pub fn pids(&self) -> Result<Vec<Pid>> {
        let dir = ["pids", "freezer", "devices", "memory"]
            .iter()
            .find_map(|c| self.dir(c))
            .or_else(|| self.dirs.values().next().map(PathBuf::as_path))
            .ok_or(V1Error::NoHierarchy)?;
        let mut pids = Vec::new();
        collect_pids(dir, &mut pids)?;
        Ok(pids)
    }

    /// Kills what is left in the cgroup and removes its directories (with what is below
    /// them). A directory already gone is fine.
    pub fn remove(&self) -> Result<()> {
        for (_, dir) in self.unique_dirs() {
            // the common case, an empty cgroup with no children: one rmdir (the kernel
            // refuses it, EBUSY, while a task or a child cgroup is left)
            match fs::remove_dir(dir) {
                Ok(()) => continue,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(_) => {}
            }
            let mut pids = Vec::new();
            collect_pids(dir, &mut pids)?;
            for pid in pids {
                let _ = kill(pid, Signal::SIGKILL);
            }
            remove_tree(dir)?;
        }
        Ok(())
    }
}

fn collect_pids(dir: &Path, pids: &mut Vec<Pid>) -> Result<()> {
    let procs = read(dir, "cgroup.procs")?;
    for line in procs.lines() {
        let pid = line.trim().parse::<i32>().map_err(|e| V1Error::Invalid {
            path: dir.join("cgroup.procs"),
            message: format!("{line:?}: {e}"),
        })?;
        pids.push(Pid::from_raw(pid));
    }
    for entry in fs::read_dir(dir).map_err(io("list", dir))? {
        let entry = entry.map_err(io("list", dir))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&entry.path(), pids)?;
        }
    }
    Ok(())
}

/// Removes a cgroup directory and the cgroups below it, deepest first. A cgroup whose last
/// task has just been killed can refuse for a moment (EBUSY): retried with back-off.
fn remove_tree(dir: &Path) -> Result<()> {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path())?;
            }
        }
    }
    let mut delay = Duration::from_millis(10);
    let mut attempts = 0;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if attempts == 5 => return Err(io("remove", dir)(e)),
            Err(_) => {
                std::thread::sleep(delay);
                delay *= 2;
                attempts += 1;
            }
        }
    }
}

fn apply_cpu(dir: &Path, cpu: &LinuxCpu) -> Result<()> {
    if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
        write(dir, "cpu.shares", shares)?;
    }
    // A period shorter than the current one can be refused (EINVAL) while the old quota
    // would exceed the parent's limit: then it is written again after the quota.
    let mut period_pending = None;
    if let Some(period) = cpu.period().filter(|p| *p != 0) {
        match write(dir, "cpu.cfs_period_us", period) {
            Ok(()) => {}
            Err(V1Error::Write { ref source, .. })
                if source.raw_os_error() == Some(libc::EINVAL)
                    && cpu.quota().is_some_and(|q| q != 0) =>
            {
                period_pending = Some(period);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(quota) = cpu.quota().filter(|q| *q != 0) {
        write(dir, "cpu.cfs_quota_us", quota)?;
        if let Some(period) = period_pending {
            write(dir, "cpu.cfs_period_us", period)?;
        }
    }
    if let Some(burst) = cpu.burst() {
        write(dir, "cpu.cfs_burst_us", burst)?;
    }
    if let Some(period) = cpu.realtime_period().filter(|p| *p != 0) {
        write(dir, "cpu.rt_period_us", period)?;
    }
    if let Some(runtime) = cpu.realtime_runtime().filter(|r| *r != 0) {
        write(dir, "cpu.rt_runtime_us", runtime)?;
    }
    if let Some(idle) = cpu.idle() {
        write(dir, "cpu.idle", idle)?;
    }
    Ok(())
}

/// The memory files a memory resource writes, in order.
fn apply_memory(dir: &Path, memory: &LinuxMemory, disable_oom_killer: bool) -> Result<()> {
    let limit = memory.limit().unwrap_or(0);
    let swap = memory.swap().unwrap_or(0);
    // the current limit decides the order only when both are set
    let current = if limit != 0 && swap != 0 {
        let text = read(dir, "memory.limit_in_bytes")?;
        let current = text.trim().parse::<u64>().map_err(|e| V1Error::Invalid {
            path: dir.join("memory.limit_in_bytes"),
            message: format!("{:?}: {e}", text.trim()),
        })?;
        Some(current)
    } else {
        None
    };
    // only asked when it matters: a stat call on every start otherwise
    let has_swap = limit == -1 && swap == 0 && dir.join("memory.memsw.limit_in_bytes").exists();
    for (file, value) in memory_limit_writes(limit, swap, current, has_swap) {
        if file == "memory.limit_in_bytes" {
            set_memory(dir, value)?;
        } else {
            write(dir, file, value)?;
        }
    }
    if let Some(reservation) = memory.reservation().filter(|r| *r != 0) {
        write(dir, "memory.soft_limit_in_bytes", reservation)?;
    }
    if disable_oom_killer {
        write(dir, "memory.oom_control", 1)?;
    }
    if let Some(swappiness) = memory.swappiness() {
        write(dir, "memory.swappiness", swappiness)?;
    }
    // kernel memory limits (`memory.kmem.limit_in_bytes`) are gone from recent kernels and
    // runc ignores them; the TCP buffer limit still exists
    if let Some(tcp) = memory.kernel_tcp() {
        write(dir, "memory.kmem.tcp.limit_in_bytes", tcp)?;
    }
    Ok(())
}

/// Memory and memory+swap limits (0: leave as is, -1: unlimited) in an order the kernel
/// accepts. It refuses a memory limit above the memsw limit and a memsw limit below the
/// memory limit, so when the swap limit grows past the current memory limit, or becomes
/// unlimited, it goes first. Unlimited memory with no swap value makes swap unlimited too
/// (where the kernel has swap accounting).
fn memory_limit_writes(
    limit: i64,
    mut swap: i64,
    current_limit: Option<u64>,
    has_swap_accounting: bool,
) -> Vec<(&'static str, i64)> {
    if limit == -1 && swap == 0 && has_swap_accounting {
        swap = -1;
    }
    let swap_first = limit != 0
        && swap != 0
        && (swap == -1 || current_limit.is_some_and(|c| u64::try_from(swap).is_ok_and(|s| c < s)));
    let memory = ("memory.limit_in_bytes", limit);
    let memsw = ("memory.memsw.limit_in_bytes", swap);
    let order = if swap_first {
        [memsw, memory]
    } else {
        [memory, memsw]
    };
    order.into_iter().filter(|(_, v)| *v != 0).collect()
}

fn set_memory(dir: &Path, limit: i64) -> Result<()> {
    match write(dir, "memory.limit_in_bytes", limit) {
        Err(V1Error::Write { ref source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
            let usage = read(dir, "memory.usage_in_bytes").unwrap_or_default();
            let peak = read(dir, "memory.max_usage_in_bytes").unwrap_or_default();
            Err(V1Error::MemoryInUse {
                limit,
                usage: usage.trim().to_string(),
                peak: peak.trim().to_string(),
            })
        }
        other => other,
    }
}

fn apply_blkio(dir: &Path, blkio: &oci_spec::runtime::LinuxBlockIo) -> Result<()> {
    if let Some(weight) = blkio.weight().filter(|w| *w != 0) {
        // kernels with BFQ and without CFQ only have the bfq file
        if dir.join("blkio.weight").exists() {
            write(dir, "blkio.weight", weight)?;
        } else {
            write(dir, "blkio.bfq.weight", weight)?;
        }
    }
    if let Some(weight) = blkio.leaf_weight().filter(|w| *w != 0) {
        write(dir, "blkio.leaf_weight", weight)?;
    }
    for d in blkio.weight_device().iter().flatten() {
        if let Some(w) = d.weight() {
            write(
                dir,
                "blkio.weight_device",
                format!("{}:{} {w}", d.major(), d.minor()),
            )?;
        }
        if let Some(w) = d.leaf_weight() {
            let line = format!("{}:{} {w}", d.major(), d.minor());
            write(dir, "blkio.leaf_weight_device", line)?;
        }
    }
    let throttles = [
        (
            "blkio.throttle.read_bps_device",
            blkio.throttle_read_bps_device(),
        ),
        (
            "blkio.throttle.write_bps_device",
            blkio.throttle_write_bps_device(),
        ),
        (
            "blkio.throttle.read_iops_device",
            blkio.throttle_read_iops_device(),
        ),
        (
            "blkio.throttle.write_iops_device",
            blkio.throttle_write_iops_device(),
        ),
    ];
    for (file, devices) in throttles {
        for d in devices.iter().flatten() {
            write(
                dir,
                file,
                format!("{}:{} {}", d.major(), d.minor(), d.rate()),
            )?;
        }
    }
    Ok(())
}

/// The device rules every container gets after the spec's own (the defaults runc and
/// libcgroups add): `mknod` of any device, and use of the standard nodes, the pseudo
/// terminals and the tun device.
pub(crate) fn default_device_rules() -> &'static [LinuxDeviceCgroup] {
    static RULES: std::sync::OnceLock<Vec<LinuxDeviceCgroup>> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        let rule = |typ, major: Option<i64>, minor: Option<i64>, access: &str| {
            let mut r = LinuxDeviceCgroup::default();
            r.set_allow(true)
                .set_typ(Some(typ))
                .set_major(major)
                .set_minor(minor)
                .set_access(Some(access.to_string()));
            r
        };
        use LinuxDeviceType::{B, C};
        vec![
            rule(C, None, None, "m"),
            rule(B, None, None, "m"),
            rule(C, Some(1), Some(3), "rwm"),    // null
            rule(C, Some(1), Some(5), "rwm"),    // zero
            rule(C, Some(1), Some(7), "rwm"),    // full
            rule(C, Some(5), Some(0), "rwm"),    // tty
            rule(C, Some(1), Some(8), "rwm"),    // random
            rule(C, Some(1), Some(9), "rwm"),    // urandom
            rule(C, Some(5), Some(1), "rwm"),    // console
            rule(C, Some(136), None, "rwm"),     // pts
            rule(C, Some(5), Some(2), "rwm"),    // ptmx
            rule(C, Some(10), Some(200), "rwm"), // tun
        ]
    })
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> V1Error + 'a {
    move |source| V1Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    fs::read_to_string(&path).map_err(|source| V1Error::Io {
        op: "read",
        path,
        source,
    })
}

/// One `write(2)` of `value` to an existing cgroup file (cgroupfs takes one value per
/// write; nothing is created or truncated).
fn write(dir: &Path, file: &str, value: impl Display) -> Result<()> {
    let path = dir.join(file);
    let data = value.to_string();
    let written = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(data.as_bytes()));
    written.map_err(|source| V1Error::Write {
        path,
        value: data,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
        LinuxResourcesBuilder,
    };

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpu\\040set rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:50 / /mnt/again rw,relatime - cgroup cgroup rw,memory
";

    #[test]
    fn hierarchies_from_mountinfo() {
        let h = Hierarchies::parse(MOUNTINFO);
        let want: BTreeMap<&str, PathBuf> = [
            ("cpu", "/sys/fs/cgroup/cpu,cpuacct"),
            ("cpuacct", "/sys/fs/cgroup/cpu,cpuacct"),
            ("cpuset", "/sys/fs/cgroup/cpu set"),
            ("memory", "/sys/fs/cgroup/memory"),
        ]
        .into_iter()
        .map(|(c, p)| (c, PathBuf::from(p)))
        .collect();
        assert_eq!(h.mounts, want);
        let joined = [
            PathBuf::from("/sys/fs/cgroup/systemd"),
            PathBuf::from("/sys/fs/cgroup/unified"),
        ];
        assert_eq!(h.membership, joined);
        assert_eq!(
            Hierarchies::parse("garbage\n\n1 2 3 - cgroup").mounts.len(),
            0
        );
    }

    /// A cgroupfs look-alike: each controller's mount with the files apply writes, and
    /// the container's directory `/skiff/c1` with the same files.
    struct FakeFs {
        _dir: tempfile::TempDir,
        cgroup: V1Cgroup,
    }

    const FILES: &[(&str, &[&str])] = &[
        (
            "cpu",
            &["cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us"],
        ),
        ("cpuset", &["cpuset.cpus", "cpuset.mems"]),
        (
            "memory",
            &[
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                "memory.soft_limit_in_bytes",
                "memory.swappiness",
                "memory.oom_control",
            ],
        ),
        ("pids", &["pids.max"]),
        ("devices", &["devices.allow", "devices.deny"]),
        ("freezer", &["freezer.state"]),
        ("hugetlb", &["hugetlb.3MB.limit_in_bytes"]),
    ];

    fn fake_fs(with: &[&str]) -> FakeFs {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut mountinfo = String::new();
        for (i, (controller, files)) in FILES.iter().enumerate() {
            if !with.contains(controller) {
                continue;
            }
            let mount = dir.path().join(controller);
            for level in [mount.clone(), mount.join("skiff"), mount.join("skiff/c1")] {
                fs::create_dir_all(&level).expect("mkdir");
                for f in files.iter().chain(&["cgroup.procs"]) {
                    fs::write(level.join(f), "").expect("write");
                }
            }
            mountinfo += &format!(
                "{i} 1 0:{i} / {} rw - cgroup cgroup rw,{controller}\n",
                mount.display()
            );
        }
        // a named hierarchy the container only joins
        let named = dir.path().join("named");
        fs::create_dir_all(named.join("skiff/c1")).expect("mkdir");
        fs::write(named.join("skiff/c1/cgroup.procs"), "").expect("write");
        mountinfo += &format!(
            "99 1 0:99 / {} rw - cgroup cgroup rw,xattr,name=fake\n",
            named.display()
        );
        let h = Hierarchies::parse(&mountinfo);
        let cgroup = V1Cgroup::new(&h, Path::new("/skiff/c1")).expect("cgroup");
        FakeFs { _dir: dir, cgroup }
    }

    impl FakeFs {
        fn path(&self, controller: &str, file: &str) -> PathBuf {
            self.cgroup.dir(controller).expect("controller").join(file)
        }
        fn read(&self, controller: &str, file: &str) -> String {
            fs::read_to_string(self.path(controller, file)).expect("read")
        }
        fn set(&self, controller: &str, file: &str, value: &str) {
            fs::write(self.path(controller, file), value).expect("write");
        }
    }

    fn resources(memory: Option<(i64, Option<i64>)>) -> LinuxResources {
        let mut r = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(512u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .cpus("0")
                    .build()
                    .expect("cpu"),
            )
            .pids(
                LinuxPidsBuilder::default()
                    .limit(0i64)
                    .build()
                    .expect("pids"),
            )
            .build()
            .expect("resources");
        if let Some((limit, swap)) = memory {
            let mut m = LinuxMemoryBuilder::default()
                .limit(limit)
                .build()
                .expect("memory");
            m.set_swap(swap);
            r.set_memory(Some(m));
        }
        r
    }

    #[test]
    fn apply_writes_each_controller() {
        let f = fake_fs(&["cpu", "cpuset", "memory", "pids", "devices"]);
        f.set("memory", "memory.limit_in_bytes", "9223372036854771712\n");
        f.cgroup
            .apply(&resources(Some((64 << 20, Some(128 << 20)))), true)
            .expect("apply");
        assert_eq!(f.read("cpu", "cpu.shares"), "512");
        assert_eq!(f.read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(f.read("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(f.read("cpuset", "cpuset.cpus"), "0");
        // a plain file keeps the last write; the kernel takes one rule per write
        assert_eq!(f.read("pids", "pids.max"), "max");
        assert_eq!(f.read("memory", "memory.oom_control"), "1");
        assert_eq!(f.read("devices", "devices.allow"), "c 10:200 rwm");
    }

    #[test]
    fn memory_and_swap_in_the_order_the_kernel_accepts() {
        const MEM: &str = "memory.limit_in_bytes";
        const SW: &str = "memory.memsw.limit_in_bytes";
        type Case = (i64, i64, Option<u64>, bool, Vec<(&'static str, i64)>);
        let cases: [Case; 7] = [
            // the new swap limit is above the current memory limit: swap first
            (64, 128, Some(32), true, vec![(SW, 128), (MEM, 64)]),
            // shrinking below the current memory limit: memory first
            (64, 128, Some(256), true, vec![(MEM, 64), (SW, 128)]),
            // unlimited swap: first
            (64, -1, Some(256), true, vec![(SW, -1), (MEM, 64)]),
            // unlimited memory, no swap value: swap made unlimited, first
            (-1, 0, None, true, vec![(SW, -1), (MEM, -1)]),
            // ... unless the kernel has no swap accounting
            (-1, 0, None, false, vec![(MEM, -1)]),
            // only a memory limit
            (64, 0, None, true, vec![(MEM, 64)]),
            // nothing
            (0, 0, None, true, vec![]),
        ];
        for (limit, swap, current, accounting, want) in cases {
            assert_eq!(
                memory_limit_writes(limit, swap, current, accounting),
                want,
                "limit {limit} swap {swap} current {current:?}"
            );
        }
    }

    #[test]
    fn bad_resources_write_nothing() {
        let f = fake_fs(&["cpu", "cpuset", "memory", "pids", "devices"]);
        let mut r = resources(None);
        r.set_hugepage_limits(Some(vec![
            LinuxHugepageLimitBuilder::default()
                .page_size("3MB")
                .limit(1i64 << 30)
                .build()
                .expect("hugetlb"),
        ]));
        // no hugetlb hierarchy
        let err = f.cgroup.apply(&r, false).expect_err("no hugetlb");
        assert!(err.to_string().contains("hugetlb controller"), "{err}");
        assert_eq!(f.read("cpu", "cpu.shares"), "");
        // a hugetlb hierarchy, but a page size that is not a power of two
        let h = fake_fs(&["cpu", "cpuset", "memory", "pids", "devices", "hugetlb"]);
        let err = h.cgroup.apply(&r, false).expect_err("3MB pages");
        assert!(err.to_string().contains("not a power of two"), "{err}");
        assert_eq!(h.read("cpu", "cpu.shares"), "");
        assert_eq!(h.read("hugetlb", "hugetlb.3MB.limit_in_bytes"), "");

        let mut r = resources(None);
        let mut m = LinuxMemoryBuilder::default().build().expect("memory");
        m.set_swappiness(Some(101));
        r.set_memory(Some(m));
        let err = f.cgroup.apply(&r, false).expect_err("swappiness");
        assert!(err.to_string().contains("swappiness 101"), "{err}");
        assert_eq!(f.read("cpu", "cpu.shares"), "");
        assert_eq!(f.read("pids", "pids.max"), "");
    }

    #[test]
    fn a_new_cpuset_takes_its_parents_cpus_and_mems() {
        let f = fake_fs(&["cpuset", "pids"]);
        let mount = f.cgroup.mounts["cpuset"].clone();
        fs::write(mount.join("cpuset.cpus"), "0-3\n").expect("write");
        fs::write(mount.join("cpuset.mems"), "0\n").expect("write");
        fs::write(mount.join("skiff/cpuset.cpus"), "1-2\n").expect("write");
        f.cgroup.add(Pid::from_raw(42)).expect("add");
        assert_eq!(f.read("cpuset", "cpuset.cpus"), "1-2");
        assert_eq!(f.read("cpuset", "cpuset.mems"), "0");
        assert_eq!(
            fs::read_to_string(mount.join("skiff/cpuset.mems")).expect("read"),
            "0"
        );
        assert_eq!(f.read("cpuset", "cgroup.procs"), "42");
        assert_eq!(f.read("pids", "cgroup.procs"), "42");
        let named = f.cgroup.membership[0].join("cgroup.procs");
        assert_eq!(fs::read_to_string(named).expect("read"), "42");
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
        assert_eq!(unescape(r"/x\999"), r"/x\999");
    }
}

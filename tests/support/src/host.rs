//! What a test checks on the host side: that it may run at all ([`require_root`]), which
//! namespace a process is in, what is mounted, and the cgroup files of a process on cgroup
//! v1, v2 or both at once (the hybrid layout: v1 controllers plus an empty v2 hierarchy).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Bit of `CAP_SYS_ADMIN` in the capability masks of `/proc/self/status`.
const CAP_SYS_ADMIN: u32 = 21;

/// Panics, naming what is missing, unless this process is root with `CAP_SYS_ADMIN`: the
/// runtime tests create namespaces, mounts and cgroups for real. A test that cannot run
/// fails loudly; it is never skipped.
pub fn require_root() {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        panic!(
            "this test needs root (euid 0 with CAP_SYS_ADMIN) to create namespaces, mounts and \
             cgroups, but runs as euid {euid}; run the suite as root (e.g. `sudo -E cargo test`)"
        );
    }
    match effective_caps() {
        Ok(caps) if caps & (1 << CAP_SYS_ADMIN) != 0 => {}
        Ok(caps) => panic!(
            "this test needs CAP_SYS_ADMIN in the effective set (have {caps:#x}); run it as \
             root outside a capability-restricted container"
        ),
        Err(e) => panic!("cannot read this process's capabilities: {e:#}"),
    }
}

fn effective_caps() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("no CapEff line in /proc/self/status")?;
    Ok(u64::from_str_radix(line.trim(), 16)?)
}

/// The namespace identity of `pid` (a number or `self`) for `ns` (`net`, `mnt`, …),
/// e.g. `net:[4026531833]`.
pub fn ns_of(pid: &str, ns: &str) -> Result<String> {
    let link = format!("/proc/{pid}/ns/{ns}");
    let target = fs::read_link(&link).with_context(|| format!("cannot read {link}"))?;
    Ok(target.to_string_lossy().into_owned())
}

/// Whether `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may hold spaces.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// One line of `/proc/<pid>/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The directory of the mounted filesystem that appears at `mount_point`.
    pub root: String,
    /// Where it is mounted, relative to the reader's root.
    pub mount_point: String,
    /// Per-mount options (`rw`, `ro`, `nosuid`, …).
    pub mount_options: Vec<String>,
    /// Filesystem type (`cgroup`, `cgroup2`, `tmpfs`, …).
    pub fstype: String,
    /// Mount source.
    pub source: String,
    /// Per-superblock options; for cgroup v1 these name the controllers.
    pub super_options: Vec<String>,
    /// The line as read, for messages.
    pub line: String,
}

/// Parses mountinfo text (see proc(5)).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                root: unescape(l.get(3)?),
                mount_point: unescape(l.get(4)?),
                mount_options: l.get(5)?.split(',').map(str::to_string).collect(),
                fstype: r.first()?.to_string(),
                source: r.get(1)?.to_string(),
                super_options: r
                    .get(2)
                    .unwrap_or(&"")
                    .split(',')
                    .map(str::to_string)
                    .collect(),
                line: line.to_string(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if digits.len() == 3 && digits.chars().all(|d| ('0'..='7').contains(&d)) {
                if let Ok(code) = u8::from_str_radix(&digits, 8) {
                    out.push(char::from(code));
                    for _ in 0..3 {
                        chars.next();
                    }
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

/// The mounts seen by `pid` (a number or `self`).
pub fn mounts(pid: &str) -> Result<Vec<Mount>> {
    let path = format!("/proc/{pid}/mountinfo");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    Ok(parse_mountinfo(&text))
}

/// The lines of this process's mountinfo that mention `needle` anywhere.
pub fn mounts_mentioning(needle: &str) -> Result<Vec<String>> {
    Ok(mounts("self")?
        .into_iter()
        .filter(|m| m.line.contains(needle))
        .map(|m| m.line)
        .collect())
}

/// Which cgroup hierarchy a directory belongs to; the file names differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    /// One hierarchy per controller (`memory.limit_in_bytes`, `cpu.cfs_quota_us`, …).
    V1,
    /// The unified hierarchy (`memory.max`, `cpu.max`, …).
    V2,
}

/// The cgroup directories of one process, found through `/proc/<pid>/cgroup` and the
/// cgroup mounts in this process's mountinfo; works on v1, v2 and hybrid hosts.
#[derive(Clone, Debug)]
pub struct Cgroup {
    /// v1 hierarchies: their controllers (or `name=…`) and the process's directory.
    pub v1: Vec<(Vec<String>, PathBuf)>,
    /// The process's directory in the unified hierarchy, if one is mounted.
    pub v2: Option<PathBuf>,
}

impl Cgroup {
    /// The cgroup directories of `pid`.
    pub fn of_pid(pid: u32) -> Result<Self> {
        let path = format!("/proc/{pid}/cgroup");
        let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        Self::resolve(&text, &mounts("self")?)
    }

    /// Maps the lines of a `/proc/<pid>/cgroup` file onto the cgroup mounts in `mounts`.
    /// Hierarchies in which the process sits in the root cgroup are left out: a container
    /// has no cgroup of its own there (runtimes need not use every v1 hierarchy).
    pub fn resolve(proc_cgroup: &str, mounts: &[Mount]) -> Result<Self> {
        let mut cgroup = Cgroup {
            v1: Vec::new(),
            v2: None,
        };
        for line in proc_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                bail!("malformed cgroup line {line:?}");
            };
            if path == "/" {
                continue;
            }
            if id == "0" && controllers.is_empty() {
                if let Some(m) = mounts.iter().find(|m| m.fstype == "cgroup2") {
                    cgroup.v2 = Some(join_under(m, path));
                }
                continue;
            }
            let names: Vec<String> = controllers.split(',').map(str::to_string).collect();
            let mount = mounts.iter().find(|m| {
                m.fstype == "cgroup" && names.iter().all(|n| m.super_options.contains(n))
            });
            if let Some(m) = mount {
                cgroup.v1.push((names, join_under(m, path)));
            }
        }
        Ok(cgroup)
    }

    /// The directory holding `controller`'s files: the v1 hierarchy that has it, else the
    /// unified one if it has the controller enabled.
    pub fn dir_for(&self, controller: &str) -> Result<(CgroupVersion, PathBuf)> {
        if let Some((_, dir)) = self
            .v1
            .iter()
            .find(|(names, _)| names.iter().any(|n| n == controller))
        {
            return Ok((CgroupVersion::V1, dir.clone()));
        }
        if let Some(dir) = &self.v2 {
            let enabled = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            if enabled.split_whitespace().any(|c| c == controller) {
                return Ok((CgroupVersion::V2, dir.clone()));
            }
        }
        bail!("no cgroup hierarchy has the {controller} controller for this process ({self:?})")
    }

    /// Every directory of the process, v1 and v2.
    pub fn all_dirs(&self) -> Vec<PathBuf> {
        self.v1
            .iter()
            .map(|(_, d)| d.clone())
            .chain(self.v2.clone())
            .collect()
    }

    fn read(&self, controller: &str, v1_file: &str, v2_file: &str) -> Result<String> {
        let (version, dir) = self.dir_for(controller)?;
        let file = dir.join(if version == CgroupVersion::V1 {
            v1_file
        } else {
            v2_file
        });
        let text =
            fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        Ok(text.trim().to_string())
    }

    /// The memory limit in bytes; `None` for unlimited.
    pub fn memory_limit(&self) -> Result<Option<u64>> {
        let text = self.read("memory", "memory.limit_in_bytes", "memory.max")?;
        if text == "max" {
            return Ok(None);
        }
        let bytes: u64 = text
            .parse()
            .with_context(|| format!("bad memory limit {text:?}"))?;
        // v1 writes "unlimited" as the largest page-aligned i64.
        Ok((bytes < (1 << 62)).then_some(bytes))
    }

    /// How many processes the kernel OOM-killed in this cgroup.
    pub fn oom_kills(&self) -> Result<u64> {
        let text = self.read("memory", "memory.oom_control", "memory.events")?;
        counter(&text, "oom_kill")
    }

    /// CPU quota (`None` for unlimited) and period, in microseconds.
    pub fn cpu_quota_period(&self) -> Result<(Option<u64>, u64)> {
        let (version, dir) = self.dir_for("cpu")?;
        let read = |name: &str| -> Result<String> {
            let file = dir.join(name);
            Ok(fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .trim()
                .to_string())
        };
        let (quota, period) = match version {
            CgroupVersion::V1 => (read("cpu.cfs_quota_us")?, read("cpu.cfs_period_us")?),
            CgroupVersion::V2 => {
                let max = read("cpu.max")?;
                let (q, p) = max
                    .split_once(' ')
                    .with_context(|| format!("bad cpu.max {max:?}"))?;
                (q.to_string(), p.to_string())
            }
        };
        let quota = match quota.as_str() {
            "max" | "-1" => None,
            q => Some(q.parse().with_context(|| format!("bad cpu quota {q:?}"))?),
        };
        Ok((
            quota,
            period
                .parse()
                .with_context(|| format!("bad cpu period {period:?}"))?,
        ))
    }

    /// The CPUs the cgroup may run on, as written (`0`, `0-1`, …).
    pub fn cpuset_cpus(&self) -> Result<String> {
        self.read("cpuset", "cpuset.cpus", "cpuset.cpus")
    }

    /// The number of tasks in the cgroup now.
    pub fn pids_current(&self) -> Result<u64> {
        let text = self.read("pids", "pids.current", "pids.current")?;
        text.parse()
            .with_context(|| format!("bad pids.current {text:?}"))
    }

    /// The pids limit (`None` for `max`).
    pub fn pids_max(&self) -> Result<Option<u64>> {
        let text = self.read("pids", "pids.max", "pids.max")?;
        if text == "max" {
            return Ok(None);
        }
        Ok(Some(
            text.parse()
                .with_context(|| format!("bad pids.max {text:?}"))?,
        ))
    }

    /// Whether the freezer holds the cgroup frozen.
    pub fn frozen(&self) -> Result<bool> {
        match self.dir_for("freezer") {
            Ok((CgroupVersion::V1, dir)) => {
                let state = fs::read_to_string(dir.join("freezer.state"))?;
                Ok(state.trim() == "FROZEN")
            }
            _ => {
                // v2 has no freezer controller; every non-root cgroup has cgroup.freeze.
                let dir = self
                    .v2
                    .as_ref()
                    .context("no freezer hierarchy for this process")?;
                let events = fs::read_to_string(dir.join("cgroup.events"))?;
                Ok(counter(&events, "frozen")? == 1)
            }
        }
    }
}

/// The value of `key` in a flat-keyed file (`key value` per line).
fn counter(text: &str, key: &str) -> Result<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
        .with_context(|| format!("no {key} in {text:?}"))?
        .trim()
        .parse()
        .with_context(|| format!("bad {key} value in {text:?}"))
}

fn join_under(mount: &Mount, path: &str) -> PathBuf {
    let relative = path.strip_prefix(mount.root.as_str()).unwrap_or(path);
    Path::new(&mount.mount_point).join(relative.trim_start_matches('/'))
}

/// Directories named `name` anywhere in any cgroup hierarchy mounted here (down to a
/// depth of 8), v1 and v2: what a container with id `name` may have left behind.
pub fn cgroup_dirs_named(name: &str) -> Result<Vec<PathBuf>> {
    let roots: BTreeSet<String> = mounts("self")?
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| m.mount_point)
        .collect();
    let mut found = Vec::new();
    for root in roots {
        walk(Path::new(&root), name, 8, &mut found);
    }
    Ok(found)
}

fn walk(dir: &Path, name: &str, depth: u32, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if !kind.is_dir() {
            continue;
        }
        let path = entry.path();
        if entry.file_name() == name {
            found.push(path.clone());
        }
        if depth > 0 {
            walk(&path, name, depth - 1, found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
34 30 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn resolves_hybrid_layout() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        let cg = Cgroup::resolve(
            "9:name=systemd:/c1\n4:memory:/api/x/c1\n1:cpu:/c1\n0::/c1\n",
            &mounts,
        )
        .unwrap();
        assert_eq!(cg.v2, Some(PathBuf::from("/sys/fs/cgroup/unified/c1")));
        assert_eq!(
            cg.dir_for("memory").unwrap(),
            (CgroupVersion::V1, "/sys/fs/cgroup/memory/api/x/c1".into())
        );
        assert_eq!(
            cg.dir_for("cpu").unwrap().1,
            PathBuf::from("/sys/fs/cgroup/cpu/c1")
        );
        assert_eq!(cg.all_dirs().len(), 4);
    }

    #[test]
    fn resolves_pure_v2_and_joined_controllers() {
        let mounts =
            parse_mountinfo("40 25 0:40 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
        let cg = Cgroup::resolve("0::/system.slice/c1\n", &mounts).unwrap();
        assert!(cg.v1.is_empty());
        assert_eq!(cg.v2, Some(PathBuf::from("/sys/fs/cgroup/system.slice/c1")));

        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        let cg = Cgroup::resolve("2:cpu,cpuacct:/c2\n", &mounts).unwrap();
        assert_eq!(cg.v1[0].1, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/c2"));
    }

    #[test]
    fn root_cgroups_are_not_the_process_own() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        let cg = Cgroup::resolve("9:name=systemd:/\n1:cpu:/c1\n0::/\n", &mounts).unwrap();
        assert_eq!(cg.all_dirs(), [PathBuf::from("/sys/fs/cgroup/cpu/c1")]);
        assert!(cg.dir_for("memory").is_err());
    }

    #[test]
    fn mount_root_is_stripped() {
        let mounts = parse_mountinfo("50 1 0:50 /parent /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let cg = Cgroup::resolve("0::/parent/c3\n", &mounts).unwrap();
        assert_eq!(cg.v2, Some(PathBuf::from("/sys/fs/cgroup/c3")));
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        let m = parse_mountinfo("1 0 8:1 /a\\040b /mnt/x\\011y rw - ext4 /dev/sda rw\n");
        assert_eq!(m[0].root, "/a b");
        assert_eq!(m[0].mount_point, "/mnt/x\ty");
        assert_eq!(m[0].fstype, "ext4");
    }

    #[test]
    fn counters_are_read_by_key() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(counter(text, "oom_kill").unwrap(), 3);
        assert!(counter(text, "missing").is_err());
    }
}

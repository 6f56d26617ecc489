//! cgroup handling on the real kernel, for both hierarchies this machine can offer: the
//! host's default (v1 controllers here, v2 on most workers) and an explicit cgroup v2
//! (unified) hierarchy, which on a hybrid host has no controllers but still supports
//! membership, freezing and removal. Every test works under a prefix of its own
//! (`skiff-test-<pid>-<test>`) and removes it, also when it fails: on a pure v2 host both
//! hierarchies are the one tree under /sys/fs/cgroup, so two tests sharing a prefix (they run
//! in parallel) would see each other's cgroups, and removing the prefix gives EBUSY while the
//! other test's child cgroup is still there — what the Debian VM test found.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use skiff_runtime::cgroups::Cgroup;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "cgroup tests need root (CAP_SYS_ADMIN over /sys/fs/cgroup); run them as root"
    );
}

/// The unified (v2) hierarchy: /sys/fs/cgroup itself on a pure v2 host, or
/// /sys/fs/cgroup/unified on a hybrid one.
fn unified_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .next()
}

struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sleeper() -> Sleeper {
    Sleeper(Command::new("sleep").arg("100").spawn().unwrap())
}

/// Held by each test for its whole run. On a pure v2 host the default hierarchy's manager
/// enables the available controllers in the host root's `cgroup.subtree_control` (as runc
/// does: e.g. `hugetlb`, which systemd leaves off), so the unified test's check that it leaves
/// the root alone holds only while the other test is not running.
static HOST_ROOT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The cgroup prefix a test owns, in every hierarchy: removed (deepest first) on drop, so a
/// failing test leaves nothing behind either.
struct Prefix(String);

impl Prefix {
    fn new(test: &str) -> Prefix {
        Prefix(format!("skiff-test-{}-{test}", std::process::id()))
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        fn remove_tree(dir: &Path) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        remove_tree(&e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        let root = Path::new("/sys/fs/cgroup");
        remove_tree(&root.join(&self.0));
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                remove_tree(&e.path().join(&self.0));
            }
        }
    }
}

fn proc_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(')')
        .unwrap()
        .1
        .trim()
        .chars()
        .next()
        .unwrap()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lifecycle(root: Option<&Path>, path: &Path) {
    let cg = Cgroup::open(root, path).unwrap();
    let s = sleeper();
    let pid = Pid::from_raw(s.0.id() as i32);
    cg.add(pid).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![pid]);
    cg.set_frozen(true).unwrap();
    let events = root
        .unwrap()
        .join(path.strip_prefix("/").unwrap())
        .join("cgroup.events");
    let frozen = || {
        std::fs::read_to_string(&events)
            .unwrap()
            .contains("frozen 1")
    };
    wait_until("the kernel reports the cgroup frozen", frozen);
    cg.set_frozen(false).unwrap();
    wait_until("the kernel reports the cgroup thawed", || !frozen());
    assert_ne!(proc_state(s.0.id()), 'Z');
    cg.remove().unwrap();
}

#[test]
fn unified_hierarchy_membership_freeze_and_removal() {
    require_root();
    let _root = HOST_ROOT.lock().unwrap_or_else(|e| e.into_inner());
    let unified = unified_root().expect("no cgroup2 hierarchy mounted on this host");
    // the test owns a prefix and hands it to the manager as its root, so that enabling
    // controllers (cgroup.subtree_control) happens only inside the prefix, never at the
    // host's root
    let owned = Prefix::new("unified");
    let prefix = unified.join(&owned.0);
    std::fs::create_dir_all(&prefix).unwrap();
    let before = std::fs::read_to_string(unified.join("cgroup.subtree_control")).unwrap();
    let path = PathBuf::from("/v2");
    lifecycle(Some(&prefix), &path);
    assert!(!prefix.join("v2").exists());
    std::fs::remove_dir(&prefix).unwrap();
    assert_eq!(
        std::fs::read_to_string(unified.join("cgroup.subtree_control")).unwrap(),
        before,
        "the host's root cgroup was changed"
    );
}

/// Containers created at the same moment under a parent cgroup that does not exist yet (the
/// first pods on a freshly booted v2 node) all get their cgroup: making the shared parent
/// is not a race that one of them loses with EEXIST.
#[test]
fn unified_hierarchy_concurrent_creation_under_a_new_parent() {
    require_root();
    let unified = unified_root().expect("no cgroup2 hierarchy mounted on this host");
    let owned = Prefix::new("concurrent");
    let prefix = unified.join(&owned.0);
    std::fs::create_dir_all(&prefix).unwrap();
    for round in 0..20 {
        let start = std::sync::Barrier::new(8);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let (prefix, start) = (&prefix, &start);
                    s.spawn(move || {
                        let path = PathBuf::from(format!("/parent-{round}/c{i}"));
                        let cg = Cgroup::open(Some(prefix), &path).unwrap();
                        let sleeper = sleeper();
                        start.wait();
                        let added = cg.add(Pid::from_raw(sleeper.0.id() as i32));
                        drop(sleeper);
                        let _ = cg.remove();
                        added.map_err(|e| e.to_string())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(failed.is_empty(), "round {round}: {failed:#?}");
    }
}

#[test]
fn default_hierarchy_limits_land_in_files() {
    require_root();
    let _root = HOST_ROOT.lock().unwrap_or_else(|e| e.into_inner());
    let owned = Prefix::new("default");
    let prefix = owned.0.clone();
    let path = PathBuf::from(format!("/{prefix}/limits"));
    let cg = Cgroup::open(None, &path).unwrap();
    let s = sleeper();
    cg.add(Pid::from_raw(s.0.id() as i32)).unwrap();
    let resources: oci_spec::runtime::LinuxResources = serde_json::from_value(serde_json::json!({
        "memory": {"limit": 33554432},
        "pids": {"limit": 20},
        "cpu": {"quota": 50000, "period": 100000, "cpus": "0"}
    }))
    .unwrap();
    cg.apply(&resources).unwrap();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let read = |ctrl: &str, file: &str| {
        let base = if v2 {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            PathBuf::from("/sys/fs/cgroup").join(ctrl)
        };
        std::fs::read_to_string(base.join(&prefix).join("limits").join(file))
            .unwrap()
            .trim()
            .to_string()
    };
    if v2 {
        assert_eq!(read("", "memory.max"), "33554432");
        assert_eq!(read("", "pids.max"), "20");
        assert_eq!(read("", "cpu.max"), "50000 100000");
        assert_eq!(read("", "cpuset.cpus"), "0");
    } else {
        assert_eq!(read("memory", "memory.limit_in_bytes"), "33554432");
        assert_eq!(read("pids", "pids.max"), "20");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(read("cpuset", "cpuset.cpus"), "0");
    }
    let stats = cg.stats().unwrap();
    assert_eq!(stats.pids.limit, 20);
    cg.remove().unwrap();
    drop(s);
    for ctrl in [
        "memory", "pids", "cpu", "cpuset", "freezer", "blkio", "devices", "cpuacct",
    ] {
        let p = Path::new("/sys/fs/cgroup").join(ctrl).join(&prefix);
        let _ = std::fs::remove_dir(&p);
        assert!(!p.join("limits").exists(), "{} left behind", p.display());
    }
    let p = Path::new("/sys/fs/cgroup").join(&prefix);
    assert!(!p.join("limits").exists(), "{} left behind", p.display());
}

/// Device rules on cgroup v2 are an eBPF program attached to the cgroup: a process in it
/// may open the nodes the rules allow and no other, and an `update` replaces the program
/// (two attached programs would both have to allow).
#[test]
fn unified_hierarchy_device_rules_are_enforced_and_replaced() {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};
    use std::io::{BufRead, Write};
    require_root();
    let unified = unified_root().expect("no cgroup2 hierarchy mounted on this host");
    let owned = Prefix::new("devices");
    let prefix = unified.join(&owned.0);
    std::fs::create_dir_all(&prefix).unwrap();
    // nodes of our own: 1:11 (kmsg), which the runtime's defaults do not allow, and 1:3
    // (null), which they do
    let nodes = tempfile::tempdir().unwrap();
    let kmsg = nodes.path().join("kmsg");
    let null = nodes.path().join("null");
    let mode = Mode::from_bits_truncate(0o600);
    mknod(&kmsg, SFlag::S_IFCHR, mode, makedev(1, 11)).unwrap();
    mknod(&null, SFlag::S_IFCHR, mode, makedev(1, 3)).unwrap();
    let cg = Cgroup::open(Some(&prefix), Path::new("/dev")).unwrap();
    // a shell in the cgroup that, per line read, opens both nodes for reading
    let script = format!(
        "while read x; do r=; for d in {} {}; do \
         if (true <\"$d\") 2>/dev/null; then r=\"$r ${{d##*/}}\"; fi; done; \
         echo \"opened:$r\"; done",
        kmsg.display(),
        null.display()
    );
    let mut sh = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    cg.add(Pid::from_raw(sh.id() as i32)).unwrap();
    let mut input = sh.stdin.take().unwrap();
    let mut output = std::io::BufReader::new(sh.stdout.take().unwrap());
    let mut ask = || {
        writeln!(input).unwrap();
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        line.trim().to_string()
    };
    let device = |allow: bool, typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(allow)
            .set_typ(Some(typ))
            .set_major(major)
            .set_minor(minor)
            .set_access(Some(access.into()));
        r
    };
    let rules = |rules: Vec<LinuxDeviceCgroup>| {
        let mut r = LinuxResources::default();
        r.set_devices(Some(rules));
        r
    };
    let deny_all = device(false, LinuxDeviceType::A, None, None, "rwm");
    let read_kmsg = device(true, LinuxDeviceType::C, Some(1), Some(11), "r");

    assert_eq!(ask(), "opened: kmsg null", "before any rule");
    // runc's default spec: deny everything; the runtime's defaults allow null
    cg.apply(&rules(vec![deny_all.clone()])).unwrap();
    assert_eq!(ask(), "opened: null");
    // an update that allows kmsg: the new program replaces the old one (were both
    // attached, the old one would still deny it)
    cg.apply(&rules(vec![deny_all.clone(), read_kmsg])).unwrap();
    assert_eq!(ask(), "opened: kmsg null");
    cg.apply(&rules(vec![deny_all])).unwrap();
    assert_eq!(ask(), "opened: null");
    // resources without device rules (an update of limits; this hierarchy has no
    // controllers to limit) keep the device program
    cg.apply(&LinuxResources::default()).unwrap();
    assert_eq!(ask(), "opened: null");
    drop(input);
    sh.wait().unwrap();
    cg.remove().unwrap();
}

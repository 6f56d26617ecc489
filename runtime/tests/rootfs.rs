//! Privileged tests of the container root filesystem setup (`skiff_runtime::rootfs`).
//!
//! They need root on a real kernel and /bin/busybox (busybox-static). Every scenario runs in
//! a child process (this test binary re-executed for the test named `child`, with
//! `SKIFF_ROOTFS_CHILD` naming the scenario) that unshares its mount namespace, so every mount
//! vanishes with it; the parent test owns the temporary directory and checks afterwards that
//! nothing leaked to the host: its mount table and the host directories a symlink pointed at.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::{major, minor};
use oci_spec::runtime::{LinuxDevice, LinuxNamespaceType, Mount, Spec};
use skiff_runtime::rootfs::{
    RootfsConfig, RootfsError, finish_rootfs, pivot_rootfs, prepare_rootfs,
};

const CHILD_ENV: &str = "SKIFF_ROOTFS_CHILD";
const DIR_ENV: &str = "SKIFF_ROOTFS_DIR";
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "mount", "echo", "touch", "stat", "mkdir", "test",
];

// ---------------------------------------------------------------------------------------
// Fixture, on the host side.

/// A temporary directory holding `rootfs/` (busybox), `host/` (a host directory with a
/// marker file that the container must never see or touch) and `data/` (a bind source).
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the rootfs tests need root (they mount and pivot_root)"
        );
        assert!(
            Path::new(BUSYBOX).exists(),
            "the rootfs tests need {BUSYBOX} (busybox-static)"
        );
        let dir = tempfile::Builder::new()
            .prefix("skiff-rootfs-")
            .tempdir()
            .unwrap();
        let layout = Layout::new(dir.path());
        fs::create_dir_all(layout.rootfs.join("bin")).unwrap();
        fs::copy(BUSYBOX, layout.rootfs.join("bin/busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", layout.rootfs.join("bin").join(applet)).unwrap();
        }
        fs::create_dir_all(layout.rootfs.join("etc")).unwrap();
        fs::write(layout.rootfs.join("etc/hostname"), "container\n").unwrap();
        fs::create_dir_all(&layout.host).unwrap();
        fs::write(layout.host.join("marker"), "host\n").unwrap();
        fs::create_dir_all(&layout.data).unwrap();
        fs::write(layout.data.join("hello"), "from the host\n").unwrap();
        // Symlinks in the image that point at the host directory by absolute path.
        std::os::unix::fs::symlink(&layout.host, layout.rootfs.join("escape")).unwrap();
        std::os::unix::fs::symlink(&layout.host, layout.rootfs.join("escape-file")).unwrap();
        std::os::unix::fs::symlink(&layout.host, layout.rootfs.join("escape-dangling")).unwrap();
        Self { dir }
    }

    fn layout(&self) -> Layout {
        Layout::new(self.dir.path())
    }

    /// Runs a scenario in a child and checks that the host saw nothing of it.
    fn run(&self, scenario: &str) {
        let before = host_mounts();
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, scenario)
            .env(DIR_ENV, self.dir.path())
            .output()
            .unwrap();
        // Checked before the child's result, so that a failing child still reports leaks.
        let leaks = self.host_leaks(&before, &host_mounts());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "scenario {scenario} failed: {}\nhost leaks: {leaks:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        assert!(
            stdout.contains(&format!("rootfs scenario {scenario} passed")),
            "scenario {scenario} did not run:\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(
            leaks.is_empty(),
            "scenario {scenario} leaked to the host: {leaks:#?}"
        );
    }

    /// What changed on the host where this code could have touched it: the mount table
    /// (lines added or removed, including propagation changes) and the host directories.
    fn host_leaks(&self, before: &BTreeSet<String>, after: &BTreeSet<String>) -> Vec<String> {
        let dir = self.dir.path().to_string_lossy().into_owned();
        let relevant = |line: &&String| {
            let mp = line.split(' ').nth(4).unwrap_or_default();
            mp.starts_with(&dir)
                || mp.starts_with("/sys")
                || mp.starts_with("/proc")
                || mp.starts_with("/dev")
                || mp == "/"
                || mp == "/tmp"
        };
        let mut leaks: Vec<String> = Vec::new();
        leaks.extend(
            after
                .difference(before)
                .filter(relevant)
                .map(|l| format!("mount added: {l}")),
        );
        leaks.extend(
            before
                .difference(after)
                .filter(relevant)
                .map(|l| format!("mount removed: {l}")),
        );
        let layout = self.layout();
        let entries: Vec<_> = fs::read_dir(&layout.host)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if entries != ["marker"] {
            leaks.push(format!("host directory holds {entries:?}"));
        }
        if fs::read_to_string(layout.host.join("marker"))
            .ok()
            .as_deref()
            != Some("host\n")
        {
            leaks.push("host marker changed".into());
        }
        if fs::read_to_string(layout.data.join("hello"))
            .ok()
            .as_deref()
            != Some("from the host\n")
        {
            leaks.push("bind source changed".into());
        }
        leaks
    }
}

/// Paths of a fixture, known to both parent and child.
struct Layout {
    rootfs: PathBuf,
    host: PathBuf,
    data: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Self {
        Self {
            rootfs: dir.join("rootfs"),
            host: dir.join("host"),
            data: dir.join("data"),
        }
    }
}

/// The lines of /proc/self/mountinfo of the test process (the host namespace).
fn host_mounts() -> BTreeSet<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------
// The tests (parent side).

#[test]
fn default_spec_builds_an_isolated_rootfs() {
    Fixture::new().run("default");
}

#[test]
fn no_pivot_moves_the_rootfs_and_chroots() {
    Fixture::new().run("no_pivot");
}

#[test]
fn symlink_to_a_host_directory_cannot_redirect_mounts() {
    let fx = Fixture::new();
    // The symlink's target exists inside the rootfs too: the mounts must land there.
    let layout = fx.layout();
    let inside = layout.rootfs.join(layout.host.strip_prefix("/").unwrap());
    fs::create_dir_all(&inside).unwrap();
    fx.run("escape");
}

/// The fixture directory is made a shared mount on the host, so without the rslave (or the
/// private parent with `rootfsPropagation: rshared`) every container mount would propagate
/// back to the host below it.
#[test]
fn container_mounts_do_not_propagate_to_a_shared_host_mount() {
    let fx = Fixture::new();
    let _shared = SharedMount::new(fx.dir.path());
    fx.run("default");
    fx.run("rshared");
}

/// A shared bind mount of a directory onto itself on the host, detached when dropped.
struct SharedMount(PathBuf);

impl SharedMount {
    fn new(dir: &Path) -> Self {
        use nix::mount::{MsFlags, mount};
        mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
        let guard = Self(dir.to_path_buf());
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .unwrap();
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            info.lines().any(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                Path::new(f[4]) == dir && f[6].starts_with("shared:")
            }),
            "{} is not a shared mount",
            dir.display()
        );
        guard
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn dangling_symlink_to_a_host_directory_cannot_redirect_mounts() {
    Fixture::new().run("escape_dangling");
}

#[test]
fn cgroup_namespace_mounts_cgroups_natively() {
    Fixture::new().run("cgroupns");
}

#[test]
fn user_namespace_mode_binds_devices_and_sysfs() {
    Fixture::new().run("userns_mode");
}

#[test]
fn masked_paths_without_proc_fail_cleanly() {
    Fixture::new().run("no_proc");
}

#[test]
fn failing_mount_error_names_the_mount() {
    Fixture::new().run("bad_mount");
}

// ---------------------------------------------------------------------------------------
// The child side: does the work when SKIFF_ROOTFS_CHILD is set, passes trivially otherwise.

#[test]
fn child() {
    let Ok(scenario) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR_ENV).unwrap());
    let layout = Layout::new(&dir);
    match scenario.as_str() {
        "default" => scenario_default(&layout),
        "no_pivot" => scenario_no_pivot(&layout),
        "rshared" => scenario_rshared(&layout),
        "escape" => scenario_escape(&layout),
        "escape_dangling" => scenario_escape_dangling(&layout),
        "cgroupns" => scenario_cgroupns(&layout),
        "userns_mode" => scenario_userns_mode(&layout),
        "bad_mount" => scenario_bad_mount(&layout),
        "no_proc" => scenario_no_proc(&layout),
        other => panic!("unknown scenario {other}"),
    }
    println!("rootfs scenario {scenario} passed");
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    serde_json::from_value(serde_json::json!({
        "destination": dest, "type": typ, "source": source, "options": options,
    }))
    .unwrap()
}

fn device(path: &str, typ: &str, major: i64, minor: i64, mode: u32, id: u32) -> LinuxDevice {
    serde_json::from_value(serde_json::json!({
        "path": path, "type": typ, "major": major, "minor": minor,
        "fileMode": mode, "uid": id, "gid": id,
    }))
    .unwrap()
}

fn cfg<'a>(spec: &'a Spec, rootfs: &'a Path) -> RootfsConfig<'a> {
    RootfsConfig {
        spec,
        rootfs,
        no_pivot: false,
        in_user_ns: false,
        in_cgroup_ns: false,
    }
}

/// Mount points, filesystem types and roots of the calling thread's mount namespace (the
/// test harness runs the test in a thread: /proc/self would show the main thread's).
fn mounts() -> Vec<(String, String, String)> {
    fs::read_to_string("/proc/thread-self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some((f[4].to_string(), f[sep + 1].to_string(), f[3].to_string()))
        })
        .collect()
}

/// Whether the host has the cgroup v2 unified hierarchy at /sys/fs/cgroup.
fn cgroup_unified() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .unwrap()
        .filesystem_type()
        == nix::sys::statfs::CGROUP2_SUPER_MAGIC
}

/// How many mounts are stacked at `mp`.
fn mounts_at(mp: &str) -> usize {
    mounts().iter().filter(|(p, _, _)| p == mp).count()
}

/// The filesystem type of the top-most mount at `mp`.
fn fstype_at(mp: &str) -> Option<String> {
    mounts()
        .into_iter()
        .rfind(|(p, _, _)| p == mp)
        .map(|(_, t, _)| t)
}

fn assert_erofs(result: std::io::Result<()>, what: &str) {
    match result {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
        other => panic!("{what}: expected EROFS, got {other:?}"),
    }
}

fn write_file(path: &str) -> std::io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(b"x"))
}

fn assert_char_device(path: &str, maj: u64, min: u64, mode: u32) {
    let md = fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        md.file_type().is_char_device(),
        "{path} is not a char device"
    );
    assert_eq!(
        (major(md.rdev()), minor(md.rdev())),
        (maj, min),
        "{path} major:minor"
    );
    assert_eq!(md.permissions().mode() & 0o777, mode, "{path} mode");
}

/// The host is not visible: neither the marker by its host path nor the fixture dir.
fn assert_host_invisible(layout: &Layout) {
    assert!(
        !layout.host.join("marker").exists(),
        "host marker visible in the container"
    );
    assert!(
        !layout.rootfs.exists(),
        "host rootfs path visible in the container"
    );
    assert!(Path::new("/bin/busybox").exists());
    assert_eq!(fs::read_to_string("/etc/hostname").unwrap(), "container\n");
}

fn run_sh(script: &str) -> String {
    let out = Command::new("/bin/sh")
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sh -c {script:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn scenario_default(layout: &Layout) {
    unshare(CloneFlags::CLONE_NEWNS).unwrap();
    let mut spec = Spec::default();
    let mut ms = spec.mounts().clone().unwrap();
    ms.push(mount(
        "/data",
        "bind",
        layout.data.to_str().unwrap(),
        &["rbind", "ro", "nosuid", "rprivate"],
    ));
    spec.set_mounts(Some(ms));
    if let Some(linux) = spec.linux_mut().as_mut() {
        linux.set_devices(Some(vec![
            device("/dev/mydev", "c", 1, 7, 0o640, 1000),
            device("/dev/sub/myfifo", "p", 0, 0, 0o600, 0),
        ]));
    }
    let my_pid = std::process::id().to_string();
    let kcore_on_host = Path::new("/proc/kcore").exists();
    let acpi_on_host = Path::new("/proc/acpi").is_dir();
    let sysrq_on_host = Path::new("/proc/sysrq-trigger").exists();
    let unified = cgroup_unified();
    let host_hierarchies: BTreeSet<String> = fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let cfg = cfg(&spec, &layout.rootfs);

    prepare_rootfs(&cfg).unwrap();
    pivot_rootfs(&cfg).unwrap();
    finish_rootfs(&cfg).unwrap();

    assert_host_invisible(layout);
    assert_eq!(std::env::current_dir().unwrap(), Path::new("/"));

    // Filesystems.
    for (mp, typ) in [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
        ("/sys/fs/cgroup", if unified { "cgroup2" } else { "tmpfs" }),
    ] {
        assert_eq!(fstype_at(mp).as_deref(), Some(typ), "filesystem at {mp}");
    }
    assert!(fstype_at("/data").is_some(), "/data is not a mount point");
    assert!(Path::new("/proc/self/exe").exists());
    assert_eq!(
        fs::read_link("/proc/self").unwrap().to_string_lossy(),
        my_pid
    );

    // Devices, created with umask 0 and the spec's owner.
    assert_char_device("/dev/null", 1, 3, 0o666);
    assert_char_device("/dev/zero", 1, 5, 0o666);
    assert_char_device("/dev/full", 1, 7, 0o666);
    assert_char_device("/dev/random", 1, 8, 0o666);
    assert_char_device("/dev/urandom", 1, 9, 0o666);
    assert_char_device("/dev/tty", 5, 0, 0o666);
    assert_char_device("/dev/mydev", 1, 7, 0o640);
    let md = fs::metadata("/dev/mydev").unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1000));
    let md = fs::metadata("/dev/sub/myfifo").unwrap();
    assert!(md.file_type().is_fifo());
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    let mut zeros = [1u8; 16];
    fs::File::open("/dev/zero")
        .unwrap()
        .read_exact(&mut zeros)
        .unwrap();
    assert_eq!(zeros, [0u8; 16]);
    write_file("/dev/null").unwrap();

    // /dev symlinks.
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/ptmx", "pts/ptmx"),
    ] {
        assert_eq!(
            fs::read_link(link).unwrap(),
            Path::new(target),
            "symlink {link}"
        );
    }
    assert_eq!(
        fs::read_link("/dev/core").ok(),
        kcore_on_host.then(|| PathBuf::from("/proc/kcore"))
    );

    // Masked paths: files read empty, directories are empty and read-only.
    if kcore_on_host {
        assert_eq!(fs::read("/proc/kcore").unwrap(), Vec::<u8>::new());
    }
    assert_eq!(fs::read("/proc/keys").unwrap(), Vec::<u8>::new());
    assert_eq!(fs::read("/proc/timer_list").unwrap(), Vec::<u8>::new());
    if acpi_on_host {
        assert_eq!(fs::read_dir("/proc/acpi").unwrap().count(), 0);
        assert_eq!(fstype_at("/proc/acpi").as_deref(), Some("tmpfs"));
    }
    assert_eq!(fs::read_dir("/sys/firmware").unwrap().count(), 0);
    assert_erofs(write_file("/sys/firmware/x"), "masked /sys/firmware");

    // Read-only paths.
    assert_erofs(write_file("/proc/sys/kernel/hostname"), "/proc/sys");
    if sysrq_on_host {
        assert_erofs(write_file("/proc/sysrq-trigger"), "/proc/sysrq-trigger");
    }
    assert!(
        fs::read_to_string("/proc/sys/kernel/ostype")
            .unwrap()
            .contains("Linux")
    );

    // Read-only root, but the mounts on it keep their own flags.
    assert_erofs(write_file("/newfile"), "read-only root");
    assert_erofs(fs::create_dir("/newdir"), "read-only root");
    write_file("/dev/shm/ok").unwrap();
    write_file("/dev/newfile").unwrap();

    // sysfs (a new instance: nothing of the host's /sys below it) and the cgroup tree are
    // read-only; the cgroups are our own.
    assert_eq!(mounts_at("/sys/fs/cgroup"), 1);
    assert_erofs(write_file("/sys/kernel/uevent_helper"), "read-only sysfs");
    let own = if unified {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        // Every v1 hierarchy of the host is there, as a cgroup mount.
        for sub in ["cpu", "cpuacct", "memory", "pids", "systemd"] {
            let p = Path::new("/sys/fs/cgroup").join(sub);
            if host_hierarchies.contains(sub) {
                assert_eq!(
                    fstype_at(p.to_str().unwrap()).as_deref(),
                    Some("cgroup"),
                    "{}",
                    p.display()
                );
            }
        }
        PathBuf::from("/sys/fs/cgroup/memory")
    };
    let procs = fs::read_to_string(own.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l == my_pid),
        "own pid not in the bound cgroup {}: {procs}",
        own.display()
    );
    assert_erofs(fs::create_dir(own.join("skiff-test")), "read-only cgroup");
    assert_erofs(fs::create_dir("/sys/fs/cgroup/x"), "read-only cgroup root");

    // The read-only bind of a host directory.
    assert_eq!(
        fs::read_to_string("/data/hello").unwrap(),
        "from the host\n"
    );
    assert_erofs(write_file("/data/hello"), "read-only bind");

    // The image's busybox runs.
    assert_eq!(
        run_sh("echo hello; cat /etc/hostname"),
        "hello\ncontainer\n"
    );
    assert!(run_sh("ls /dev").contains("null"));
}

fn scenario_no_pivot(layout: &Layout) {
    unshare(CloneFlags::CLONE_NEWNS).unwrap();
    let mut spec = Spec::default();
    if let Some(linux) = spec.linux_mut().as_mut() {
        linux.set_rootfs_propagation(Some("rprivate".into()));
    }
    let mut cfg = cfg(&spec, &layout.rootfs);
    cfg.no_pivot = true;

    prepare_rootfs(&cfg).unwrap();
    pivot_rootfs(&cfg).unwrap();
    finish_rootfs(&cfg).unwrap();

    assert_host_invisible(layout);
    assert_eq!(fstype_at("/proc").as_deref(), Some("proc"));
    assert_char_device("/dev/null", 1, 3, 0o666);
    assert_erofs(write_file("/newfile"), "read-only root");
    assert_erofs(write_file("/proc/sys/kernel/hostname"), "/proc/sys");
    assert_eq!(run_sh("echo moved"), "moved\n");
    // rprivate: nothing of the container's mounts is shared with or slave to anything.
    let info = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-").unwrap();
        assert_eq!(sep, 6, "mount is not private: {line}");
    }
}

fn scenario_rshared(layout: &Layout) {
    unshare(CloneFlags::CLONE_NEWNS).unwrap();
    let mut spec = Spec::default();
    if let Some(linux) = spec.linux_mut().as_mut() {
        linux.set_rootfs_propagation(Some("rshared".into()));
    }
    let cfg = cfg(&spec, &layout.rootfs);
    prepare_rootfs(&cfg).unwrap();
    pivot_rootfs(&cfg).unwrap();
    finish_rootfs(&cfg).unwrap();
    assert_host_invisible(layout);
    assert_eq!(fstype_at("/proc").as_deref(), Some("proc"));
    let info = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
    let root = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap();
    assert!(root.contains(" shared:"), "root is not shared: {root}");
}

/// Mounts whose destination goes through a symlink to the host directory.
fn escape_spec(layout: &Layout) -> Spec {
    let mut spec = Spec::default();
    spec.set_mounts(Some(vec![
        mount("/proc", "proc", "proc", &[]),
        mount("/escape", "tmpfs", "tmpfs", &["mode=755"]),
        mount(
            "/escape-file/bound-file",
            "bind",
            layout.data.join("hello").to_str().unwrap(),
            &["bind", "ro"],
        ),
    ]));
    spec
}

fn scenario_escape(layout: &Layout) {
    unshare(CloneFlags::CLONE_NEWNS).unwrap();
    let spec = escape_spec(layout);
    let cfg = cfg(&spec, &layout.rootfs);
    prepare_rootfs(&cfg).unwrap();

    // The host directory is not covered: its marker is still there, nothing else is.
    let host_entries: Vec<_> = fs::read_dir(&layout.host)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(host_entries, vec!["marker"]);
    let in_host_dir = |mp: &str| mp.starts_with(layout.host.to_str().unwrap());
    assert!(
        !mounts().iter().any(|(mp, _, _)| in_host_dir(mp)),
        "a mount landed on the host directory"
    );
    // The mounts landed inside the rootfs, where the symlink resolves within it.
    let inside = layout.rootfs.join(layout.host.strip_prefix("/").unwrap());
    assert_eq!(
        fstype_at(inside.to_str().unwrap()).as_deref(),
        Some("tmpfs"),
        "mounts: {:#?}",
        mounts()
    );
    // The file bind lies below the tmpfs mounted first, so look at it through the rootfs.
    let bound = inside.join("bound-file");
    assert!(
        mounts()
            .iter()
            .any(|(mp, _, _)| Path::new(mp) == bound.as_path()),
        "the file bind mount is not at {}",
        bound.display()
    );
    assert_eq!(fs::read_to_string(&bound).unwrap(), "from the host\n");
    assert_erofs(write_file(bound.to_str().unwrap()), "read-only file bind");

    pivot_rootfs(&cfg).unwrap();
    finish_rootfs(&cfg).unwrap();
    assert_host_invisible(layout);
    assert_eq!(
        fs::read_to_string("/escape-file/bound-file").unwrap(),
        "from the host\n"
    );
}

fn scenario_escape_dangling(layout: &Layout) {
    unshare(CloneFlags::CLONE_NEWNS).unwrap();
    let mut spec = Spec::default();
    spec.set_mounts(Some(vec![mount("/escape-dangling", "tmpfs", "tmpfs", &[])]));
    let cfg = cfg(&spec, &layout.rootfs);
    // The symlink's target does not exist inside the rootfs: libpathrs either refuses the
    // dangling symlink or creates the target inside the rootfs, never on the host.
    let result = prepare_rootfs(&cfg);
    let host_covered = mounts()
        .iter()
        .any(|(mp, _, _)| mp.starts_with(layout.host.to_str().unwrap()));
    assert!(!host_covered, "a mount landed on the host directory");
    assert!(layout.host.join("marker").exists());
    match result {
        Err(e @ RootfsError::InRoot { .. }) => {
            println!("dangling symlink refused: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains("/escape-dangling"), "{msg}");
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(()) => {
            println!("dangling symlink target created inside the rootfs");
            let inside = layout.rootfs.join(layout.host.strip_prefix("/").unwrap());
            assert_eq!(
                fstype_at(inside.to_str().unwrap()).as_deref(),
                Some("tmpfs")
            );
        }
    }
}

fn scenario_cgroupns(layout: &Layout) {
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP).unwrap();
    let spec = Spec::default();
    let mut cfg = cfg(&spec, &layout.rootfs);
    cfg.in_cgroup_ns = true;
    let my_pid = std::process::id().to_string();
    let unified = cgroup_unified();

    prepare_rootfs(&cfg).unwrap();
    pivot_rootfs(&cfg).unwrap();
    finish_rootfs(&cfg).unwrap();

    let procs = if unified {
        assert_eq!(fstype_at("/sys/fs/cgroup").as_deref(), Some("cgroup2"));
        fs::read_to_string("/sys/fs/cgroup/cgroup.procs").unwrap()
    } else {
        assert_eq!(fstype_at("/sys/fs/cgroup").as_deref(), Some("tmpfs"));
        // A native mount shows the namespace's root cgroup (ours) as "/".
        let memory = mounts()
            .into_iter()
            .rfind(|(mp, _, _)| mp == "/sys/fs/cgroup/memory")
            .expect("memory hierarchy mounted");
        assert_eq!((memory.1.as_str(), memory.2.as_str()), ("cgroup", "/"));
        fs::read_to_string("/sys/fs/cgroup/memory/cgroup.procs").unwrap()
    };
    assert!(procs.lines().any(|l| l == my_pid), "own pid not in {procs}");
    assert_erofs(fs::create_dir("/sys/fs/cgroup/x"), "read-only cgroup mount");
}

fn scenario_userns_mode(layout: &Layout) {
    // Not in a real user namespace (that needs a single-threaded process), but with the
    // user-namespace code paths: devices bound from the host, and sysfs bound because the
    // spec has no network namespace of its own.
    unshare(CloneFlags::CLONE_NEWNS).unwrap();
    let mut spec = Spec::default();
    if let Some(linux) = spec.linux_mut().as_mut() {
        let nss = linux.namespaces().clone().unwrap_or_default();
        linux.set_namespaces(Some(
            nss.into_iter()
                .filter(|ns| ns.typ() != LinuxNamespaceType::Network)
                .collect(),
        ));
        linux.set_devices(Some(vec![device("/dev/full", "c", 1, 7, 0o666, 0)]));
    }
    let mut cfg = cfg(&spec, &layout.rootfs);
    cfg.in_user_ns = true;

    prepare_rootfs(&cfg).unwrap();
    pivot_rootfs(&cfg).unwrap();
    finish_rootfs(&cfg).unwrap();

    assert_host_invisible(layout);
    for (path, maj, min) in [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
    ] {
        let md = fs::metadata(path).unwrap();
        assert!(md.file_type().is_char_device(), "{path}");
        assert_eq!((major(md.rdev()), minor(md.rdev())), (maj, min), "{path}");
        assert!(
            mounts().iter().any(|(mp, _, _)| mp == path),
            "{path} is not a bind mount of the host device"
        );
    }
    // /sys is the host's /sys bound recursively: its /sys/fs/cgroup came along, under ours.
    assert_eq!(mounts_at("/sys/fs/cgroup"), 2, "sysfs was not rbound");
    assert_erofs(
        write_file("/sys/kernel/uevent_helper"),
        "read-only sysfs bind",
    );
    assert!(Path::new("/sys/kernel").is_dir());
}

fn scenario_bad_mount(layout: &Layout) {
    unshare(CloneFlags::CLONE_NEWNS).unwrap();
    let mut spec = Spec::default();
    spec.set_mounts(Some(vec![mount(
        "/bad",
        "skiffnosuchfs",
        "nothing",
        &["nosuid"],
    )]));
    let cfg = cfg(&spec, &layout.rootfs);
    let err = prepare_rootfs(&cfg).unwrap_err();
    assert!(
        matches!(&err, RootfsError::Mount { source, .. } if *source == nix::errno::Errno::ENODEV),
        "{err:?}"
    );
    let msg = err.to_string();
    for part in ["mount(2)", "skiffnosuchfs", "nothing", "/bad"] {
        assert!(msg.contains(part), "{part:?} not in {msg:?}");
    }
    // An unknown fs type leaves no mount behind at the destination.
    let bad = layout.rootfs.join("bad");
    assert!(!mounts().iter().any(|(mp, _, _)| Path::new(mp) == bad));
}

fn scenario_no_proc(layout: &Layout) {
    unshare(CloneFlags::CLONE_NEWNS).unwrap();
    let mut spec = Spec::default();
    spec.set_mounts(Some(vec![mount("/tmp", "tmpfs", "tmpfs", &[])]));
    let cfg = cfg(&spec, &layout.rootfs);
    prepare_rootfs(&cfg).unwrap();
    pivot_rootfs(&cfg).unwrap();
    assert_host_invisible(layout);
    let err = finish_rootfs(&cfg).unwrap_err();
    assert!(matches!(err, RootfsError::ProcNotMounted { .. }), "{err:?}");
}

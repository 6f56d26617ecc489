//! Privileged integration tests of the runc-compatible command line (`skiff-runc`, i.e.
//! `skiff runtime`). Every test builds a busybox-static bundle, runs real containers on the
//! real kernel and checks the effect from the host. They need root and say so when they
//! do not have it.
//!
//! They run against skiff by default; `SKIFF_TEST_RUNTIME=runc` (or `crun`, or a path)
//! runs the same suite against another runtime, which is how the suite itself is checked:
//! `SKIFF_TEST_RUNTIME=runc cargo test -p skiff --test runtime_cli`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use oci_spec::runtime::{
    Capability, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    PosixRlimitType, Spec,
};
use skiff_testsupport::bundle::HookPoint;
use skiff_testsupport::console::ConsoleSocket;
use skiff_testsupport::host::{self, Cgroup};
use skiff_testsupport::{Bundle, Runtime, poll_until, require_root, runc_default_spec};

const WAIT: Duration = Duration::from_secs(20);
const MIB: i64 = 1024 * 1024;

/// The runtime under test, after checking that this process may run containers at all.
fn runtime() -> Runtime {
    require_root();
    Runtime::from_env(env!("CARGO_BIN_EXE_skiff"))
}

/// A busybox bundle whose process runs `args`, written out.
fn bundle_running(args: &[&str]) -> Result<Bundle> {
    let mut bundle = Bundle::busybox()?;
    bundle.args(args);
    bundle.write_spec()?;
    Ok(bundle)
}

/// A file inside a running container, read from the host through `/proc/<pid>/root`.
fn read_inside(pid: u32, path: &str) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/root{path}")).ok()
}

/// The first line of a file inside a running container, once it is written in full. A
/// shell's `echo X > file` creates the file before it writes to it, so a poller can see it
/// empty or half written.
fn line_inside(pid: u32, path: &str) -> Option<String> {
    let text = read_inside(pid, path)?;
    let (line, _) = text.split_once('\n')?;
    Some(line.to_string())
}

/// `key=value` lines of a container's output.
fn key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Checks that nothing of container `id` is left on the host: no state entry, no mount
/// mentioning the id or the rootfs, no cgroup directory named after it.
fn assert_nothing_left(rt: &Runtime, id: &str, rootfs: &Path) -> Result<()> {
    let entries = rt.state_entries();
    ensure!(
        !entries.iter().any(|e| e == id),
        "state entry for {id} left in {}: {entries:?}",
        rt.root().display()
    );
    let mounts = host::mounts_mentioning(id)?;
    ensure!(
        mounts.is_empty(),
        "mounts mentioning {id} left: {mounts:#?}"
    );
    let rootfs = rootfs.to_string_lossy();
    let mounts = host::mounts_mentioning(&rootfs)?;
    ensure!(mounts.is_empty(), "mounts of {rootfs} left: {mounts:#?}");
    let cgroups = host::cgroup_dirs_named(id)?;
    ensure!(
        cgroups.is_empty(),
        "cgroup directories of {id} left: {cgroups:#?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------------------

#[test]
fn each_requested_namespace_is_new() -> Result<()> {
    let rt = runtime();
    let mut bundle = Bundle::busybox()?;
    bundle.namespace(LinuxNamespaceType::Cgroup, None);
    bundle.sh(
        "for n in pid net ipc uts mnt cgroup user; do echo $n=$(readlink /proc/self/ns/$n); done",
    );
    bundle.write_spec()?;
    let c = rt.container("ns", &bundle);
    let out = c.run(&[])?.ok()?;
    let inside = key_values(&out.stdout);
    for ns in ["pid", "net", "ipc", "uts", "mnt", "cgroup"] {
        let host_ns = host::ns_of("self", ns)?;
        let got = inside
            .get(ns)
            .with_context(|| format!("no {ns} line in {out}"))?;
        ensure!(
            got.starts_with(&format!("{ns}:[")),
            "bad {ns} link inside: {got:?}"
        );
        ensure!(
            *got != host_ns,
            "{ns} namespace is the host's ({host_ns}), expected a new one"
        );
    }
    // Not requested, so shared with the host.
    assert_eq!(
        inside.get("user"),
        Some(&host::ns_of("self", "user")?),
        "{out}"
    );
    Ok(())
}

#[test]
fn namespace_given_by_path_is_joined() -> Result<()> {
    let rt = runtime();
    let a_bundle = bundle_running(&["sleep", "1000"])?;
    let a = rt.container("nsjoin-a", &a_bundle);
    let a_pid = a.run_detached()?;
    let a_net = host::ns_of(&a_pid.to_string(), "net")?;
    let a_uts = host::ns_of(&a_pid.to_string(), "uts")?;
    assert_ne!(
        a_net,
        host::ns_of("self", "net")?,
        "container A did not get a new net namespace"
    );

    let mut b_bundle = Bundle::busybox()?;
    let a_net_path = format!("/proc/{a_pid}/ns/net");
    b_bundle.namespace(LinuxNamespaceType::Network, Some(Path::new(&a_net_path)));
    b_bundle.sh("echo net=$(readlink /proc/self/ns/net); echo uts=$(readlink /proc/self/ns/uts)");
    b_bundle.write_spec()?;
    let b = rt.container("nsjoin-b", &b_bundle);
    let out = b.run(&[])?.ok()?;
    let inside = key_values(&out.stdout);
    assert_eq!(
        inside.get("net"),
        Some(&a_net),
        "B did not join A's net namespace: {out}"
    );
    assert_ne!(
        inside.get("uts"),
        Some(&a_uts),
        "B shares A's uts namespace, only net was asked"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Root filesystem
// ---------------------------------------------------------------------------------------

#[test]
fn pivot_root_hides_the_host() -> Result<()> {
    let rt = runtime();
    let marker_dir = tempfile::Builder::new().prefix("skiff-marker-").tempdir()?;
    let marker = marker_dir.path().join("host-only");
    fs::write(&marker, "host")?;
    let mut bundle = Bundle::busybox()?;
    bundle.sh(&format!(
        "test -e {m} && echo marker=visible || echo marker=hidden; echo root=$(ls -A / | tr '\\n' ' ')",
        m = marker.display()
    ));
    bundle.write_spec()?;
    let c = rt.container("pivot", &bundle);
    let out = c.run(&[])?.ok()?;
    let inside = key_values(&out.stdout);
    assert_eq!(
        inside.get("marker").map(String::as_str),
        Some("hidden"),
        "{out}"
    );

    let seen: BTreeSet<String> = inside
        .get("root")
        .with_context(|| format!("no root listing in {out}"))?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let rootfs: BTreeSet<String> = fs::read_dir(bundle.rootfs())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        seen, rootfs,
        "/ inside the container is not the bundle's rootfs"
    );

    // The container's / is the bundle's rootfs directory mounted as the root.
    let mut b2 = Bundle::busybox()?;
    b2.args(&["cat", "/proc/self/mountinfo"]);
    b2.write_spec()?;
    let c2 = rt.container("pivot-mi", &b2);
    let out = c2.run(&[])?.ok()?;
    let mounts = host::parse_mountinfo(&out.stdout);
    let root = mounts
        .iter()
        .find(|m| m.mount_point == "/")
        .with_context(|| format!("no / in the container's mountinfo:\n{}", out.stdout))?;
    let dir_name = b2
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    ensure!(
        root.root.ends_with(&format!("{dir_name}/rootfs")),
        "the container's / is {:?}, not the bundle's rootfs",
        root.line
    );
    ensure!(
        !mounts
            .iter()
            .any(|m| m.mount_point.starts_with("/tmp/skiff-bundle-")),
        "host paths are still mounted inside:\n{}",
        out.stdout
    );
    Ok(())
}

#[test]
fn masked_paths_are_masked_and_readonly_paths_are_readonly() -> Result<()> {
    let rt = runtime();
    let spec = runc_default_spec();
    let linux = spec
        .linux()
        .clone()
        .context("default spec has no linux section")?;
    let masked = linux.masked_paths().clone().unwrap_or_default();
    // Only paths that exist on this host and hold something show that masking happened.
    let mut probes = Vec::new();
    for path in &masked {
        let p = Path::new(path);
        if p.is_dir()
            && fs::read_dir(p)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        {
            probes.push(format!("echo '{path}='$(ls -A {path} | wc -l)"));
        } else if p.is_file() && fs::read(p).map(|b| !b.is_empty()).unwrap_or(false) {
            probes.push(format!(
                "echo '{path}='$(head -c 64 {path} 2>/dev/null | wc -c)"
            ));
        }
    }
    ensure!(
        !probes.is_empty(),
        "no masked path of {masked:?} exists with content on this host"
    );
    let mut bundle = Bundle::busybox()?;
    bundle.sh(&format!(
        "{}; if echo skiff > /proc/sys/kernel/domainname; then echo sysctl=written; fi",
        probes.join("; ")
    ));
    bundle.write_spec()?;
    let c = rt.container("masked", &bundle);
    let out = c.run(&[])?.ok()?;
    let inside = key_values(&out.stdout);
    for (path, count) in &inside {
        if path.starts_with('/') {
            assert_eq!(
                count, "0",
                "{path} is not masked inside the container: {out}"
            );
        }
    }
    let answered = inside.keys().filter(|k| k.starts_with('/')).count();
    ensure!(answered == probes.len(), "missing probe output: {out}");
    ensure!(
        !inside.contains_key("sysctl"),
        "/proc/sys was writable: {out}"
    );
    ensure!(
        out.stderr.contains("Read-only file system"),
        "writing /proc/sys did not fail with EROFS: {out}"
    );

    let mut b2 = Bundle::busybox()?;
    b2.args(&["cat", "/proc/self/mountinfo"]);
    b2.write_spec()?;
    let out = rt.container("readonly", &b2).run(&[])?.ok()?;
    let mounts = host::parse_mountinfo(&out.stdout);
    for path in linux.readonly_paths().clone().unwrap_or_default() {
        if !Path::new(&path).exists() {
            continue;
        }
        let m = mounts
            .iter()
            .rev()
            .find(|m| m.mount_point == path)
            .with_context(|| format!("{path} is not a mount point inside:\n{}", out.stdout))?;
        ensure!(
            m.mount_options.iter().any(|o| o == "ro"),
            "{path} is not read-only: {}",
            m.line
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Process attributes
// ---------------------------------------------------------------------------------------

#[test]
fn dropped_capabilities_really_deny() -> Result<()> {
    let rt = runtime();
    let script = "grep CapEff /proc/self/status; \
                  if mount -t tmpfs none /mnt; then echo mount=ok; else echo mount=denied; fi";
    let mut bundle = Bundle::busybox()?;
    bundle.sh(script);
    bundle.write_spec()?;
    let out = rt.container("caps-drop", &bundle).run(&[])?.ok()?;
    let inside = key_values(&out.stdout);
    assert_eq!(
        inside.get("mount").map(String::as_str),
        Some("denied"),
        "{out}"
    );
    // runc's defaults: CAP_AUDIT_WRITE (29), CAP_KILL (5), CAP_NET_BIND_SERVICE (10).
    ensure!(
        out.stdout.contains("CapEff:\t0000000020000420"),
        "unexpected effective set: {out}"
    );

    let mut granted = Bundle::busybox()?;
    granted.sh(script).capabilities(&[
        Capability::AuditWrite,
        Capability::Kill,
        Capability::NetBindService,
        Capability::SysAdmin,
    ]);
    granted.write_spec()?;
    let out = rt.container("caps-grant", &granted).run(&[])?.ok()?;
    let inside = key_values(&out.stdout);
    assert_eq!(inside.get("mount").map(String::as_str), Some("ok"), "{out}");
    ensure!(
        out.stdout.contains("CapEff:\t0000000020200420"),
        "CAP_SYS_ADMIN missing: {out}"
    );
    Ok(())
}

/// The device cgroup (v1's controller, v2's eBPF program) denies a node the spec's rules do
/// not allow, even to root in the container, and allows it once a rule does.
#[test]
fn device_rules_deny_nodes_the_spec_does_not_allow() -> Result<()> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, Mount};
    let rt = runtime();
    // a node of our own for 1:11 (kmsg), which runc's default rules do not allow, bound
    // into the container's /dev
    let nodes = tempfile::tempdir()?;
    let node = nodes.path().join("kmsg");
    mknod(
        &node,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(1, 11),
    )?;
    let script = "for d in test-kmsg null; do \
                  if (true </dev/$d) 2>/dev/null; then echo $d=opened; else echo $d=denied; fi; \
                  done";
    let run = |id: &str, allow_kmsg: bool| -> Result<BTreeMap<String, String>> {
        let mut bundle = Bundle::busybox()?;
        // opening kmsg also takes CAP_SYSLOG where dmesg is restricted: granted in both
        // runs, so only the device rule differs
        bundle.sh(script).capabilities(&[
            Capability::AuditWrite,
            Capability::Kill,
            Capability::NetBindService,
            Capability::Syslog,
        ]);
        let mut bind = Mount::default();
        bind.set_destination("/dev/test-kmsg".into())
            .set_typ(Some("bind".into()))
            .set_source(Some(node.clone()))
            .set_options(Some(vec!["bind".into()]));
        bundle
            .spec_mut()
            .mounts_mut()
            .get_or_insert_default()
            .push(bind);
        if allow_kmsg {
            bundle.resources(|r| {
                let mut rule = LinuxDeviceCgroup::default();
                rule.set_allow(true)
                    .set_typ(Some(LinuxDeviceType::C))
                    .set_major(Some(1))
                    .set_minor(Some(11))
                    .set_access(Some("r".into()));
                r.devices_mut().get_or_insert_default().push(rule);
            });
        }
        bundle.write_spec()?;
        let out = rt.container(id, &bundle).run(&[])?.ok()?;
        Ok(key_values(&out.stdout))
    };
    let denied = run("dev-deny", false)?;
    assert_eq!(
        denied.get("test-kmsg").map(String::as_str),
        Some("denied"),
        "{denied:?}"
    );
    assert_eq!(
        denied.get("null").map(String::as_str),
        Some("opened"),
        "{denied:?}"
    );
    let allowed = run("dev-allow", true)?;
    assert_eq!(
        allowed.get("test-kmsg").map(String::as_str),
        Some("opened"),
        "{allowed:?}"
    );
    Ok(())
}

/// The container's process starts with no signal ignored, as under runc and crun: an
/// ignored signal survives execve, and the runtime ignores SIGPIPE (so would every
/// pipeline in the container).
#[test]
fn no_signal_is_ignored_in_the_container() -> Result<()> {
    let rt = runtime();
    let mut bundle = Bundle::busybox()?;
    bundle.args(&["/bin/grep", "SigIgn", "/proc/self/status"]);
    bundle.write_spec()?;
    let out = rt.container("sig-ign", &bundle).run(&[])?.ok()?;
    assert_eq!(out.stdout.trim(), "SigIgn:\t0000000000000000", "{out}");
    Ok(())
}

#[test]
fn rlimits_apply() -> Result<()> {
    let rt = runtime();
    let mut bundle = Bundle::busybox()?;
    bundle
        .sh("echo soft=$(ulimit -n); echo hard=$(ulimit -Hn)")
        .rlimit(PosixRlimitType::RlimitNofile, 123, 456);
    bundle.write_spec()?;
    let out = rt.container("rlimit", &bundle).run(&[])?.ok()?;
    let inside = key_values(&out.stdout);
    assert_eq!(inside.get("soft").map(String::as_str), Some("123"), "{out}");
    assert_eq!(inside.get("hard").map(String::as_str), Some("456"), "{out}");
    Ok(())
}

#[test]
fn user_namespace_maps_ids() -> Result<()> {
    let rt = runtime();
    let mut bundle = Bundle::busybox()?;
    bundle
        .args(&["sleep", "1000"])
        .writable_rootfs()
        .user_namespace(100_000, 65_536);
    bundle.write_spec()?;
    bundle.chown_rootfs(100_000, 100_000)?;
    let c = rt.container("userns", &bundle);
    let pid = c.run_detached()?;

    for map in ["uid_map", "gid_map"] {
        let text = fs::read_to_string(format!("/proc/{pid}/{map}"))?;
        let fields: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(
            fields,
            ["0", "100000", "65536"],
            "{map} of the container: {text:?}"
        );
    }
    assert_ne!(
        host::ns_of(&pid.to_string(), "user")?,
        host::ns_of("self", "user")?
    );
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    ensure!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("100000")),
        "the container's init does not run as host uid 100000:\n{status}"
    );

    assert_eq!(c.exec(&[], &["id", "-u"])?.ok()?.out(), "0");
    c.exec(&[], &["touch", "/created-inside"])?.ok()?;
    let meta = fs::metadata(bundle.rootfs().join("created-inside"))?;
    assert_eq!(
        (meta.uid(), meta.gid()),
        (100_000, 100_000),
        "owner on the host"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------

#[test]
fn memory_limit_is_enforced_by_the_oom_killer() -> Result<()> {
    let rt = runtime();
    // busybox tail buffers a whole line: 64 MiB without a newline is held in memory. The
    // hog (a subshell) makes itself and its children the OOM killer's first choices: when
    // the killed tail is still being reaped, the kernel may pick a second victim, and that
    // must not be the container's init shell.
    let hog = "(echo 1000 > /proc/self/oom_score_adj; head -c 64m /dev/zero | tail > /dev/null)";
    // memory+swap at the same 16 MiB, so that a host with swap cannot page the hog out.
    let limit = |b: &mut Bundle| {
        b.resources(|r| {
            let memory = LinuxMemoryBuilder::default()
                .limit(16 * MIB)
                .swap(16 * MIB)
                .build();
            r.set_memory(Some(memory.expect("memory")));
        });
    };

    let mut unlimited = Bundle::busybox()?;
    unlimited.sh(hog);
    unlimited.write_spec()?;
    let out = rt.container("oom-ctl", &unlimited).run(&[])?;
    assert_eq!(
        out.code(),
        Some(0),
        "the hog must succeed without a limit: {out}"
    );

    let mut limited = Bundle::busybox()?;
    limited.sh(hog);
    limit(&mut limited);
    limited.write_spec()?;
    let out = rt.container("oom", &limited).run(&[])?;
    assert_eq!(
        out.code(),
        Some(137),
        "the hog must be SIGKILLed under a 16 MiB limit: {out}"
    );

    // The same, detached, to look at the cgroup while it is there.
    let mut watched = Bundle::busybox()?;
    watched.sh(&format!(
        "{hog}; echo $? > /dev/shm/status; exec sleep 1000"
    ));
    limit(&mut watched);
    watched.write_spec()?;
    let c = rt.container("oom-cg", &watched);
    let pid = c.run_detached()?;
    let cgroup = Cgroup::of_pid(pid)?;
    assert_eq!(cgroup.memory_limit()?, Some(16 << 20));
    let status = poll_until(WAIT, "the hog to finish", || {
        line_inside(pid, "/dev/shm/status")
    })?;
    assert_eq!(status.trim(), "137");
    ensure!(
        cgroup.oom_kills()? >= 1,
        "no OOM kill recorded in {cgroup:?}"
    );
    Ok(())
}

#[test]
fn pids_limit_contains_a_fork_bomb() -> Result<()> {
    let rt = runtime();
    let mut bundle = Bundle::busybox()?;
    // A bounded bomb: 64 long-lived children, four times the limit, forked by a subshell
    // of the init process; bounded so that a runtime that fails to set the limit cannot
    // take the host down with it. The init itself must survive the subshell's failure.
    bundle
        .sh(
            "(i=0; while [ $i -lt 64 ]; do sleep 1000 >/dev/null 2>&1 & i=$((i+1)); done; \
             echo all-forked > /dev/shm/bomb) 2> /dev/shm/bomb-err; \
             echo $? > /dev/shm/bomb-status; exec sleep 1000",
        )
        .resources(|r| {
            r.set_pids(Some(
                LinuxPidsBuilder::default().limit(16).build().expect("pids"),
            ));
        });
    bundle.write_spec()?;
    let c = rt.container("pids", &bundle);
    let pid = c.run_detached()?;
    let cgroup = Cgroup::of_pid(pid)?;
    assert_eq!(cgroup.pids_max()?, Some(16));
    let status = poll_until(WAIT, "the bomb to finish", || {
        line_inside(pid, "/dev/shm/bomb-status")
    })?;
    let stderr = read_inside(pid, "/dev/shm/bomb-err").unwrap_or_default();
    ensure!(
        read_inside(pid, "/dev/shm/bomb").is_none(),
        "64 forks succeeded under pids.max=16"
    );
    ensure!(
        status.trim() != "0",
        "the bomb's shell did not fail: {status:?} {stderr:?}"
    );
    ensure!(
        stderr.contains("fork"),
        "the shell did not report a failed fork: {stderr:?}"
    );
    let current = cgroup.pids_current()?;
    ensure!(
        current <= 16,
        "pids.current is {current}, above the limit of 16"
    );
    ensure!(
        current > 8,
        "pids.current is {current}: the bomb did not run"
    );
    assert_eq!(
        c.status()?,
        "running",
        "the container did not survive the bomb"
    );
    ensure!(host::process_alive(pid), "the container's init died");
    Ok(())
}

#[test]
fn cpu_quota_and_cpuset_land_in_the_cgroup() -> Result<()> {
    let rt = runtime();
    let mut bundle = Bundle::busybox()?;
    bundle.args(&["sleep", "1000"]).resources(|r| {
        let cpu = LinuxCpuBuilder::default()
            .quota(50_000i64)
            .period(100_000u64)
            .cpus("0")
            .mems("0")
            .build()
            .expect("cpu");
        r.set_cpu(Some(cpu));
    });
    bundle.write_spec()?;
    let c = rt.container("cpu", &bundle);
    let pid = c.run_detached()?;
    let cgroup = Cgroup::of_pid(pid)?;
    assert_eq!(
        cgroup.cpu_quota_period()?,
        (Some(50_000), 100_000),
        "{cgroup:?}"
    );
    assert_eq!(cgroup.cpuset_cpus()?, "0", "{cgroup:?}");
    let allowed = fs::read_to_string(format!("/proc/{pid}/status"))?;
    ensure!(
        allowed
            .lines()
            .any(|l| l.starts_with("Cpus_allowed_list:") && l.ends_with("\t0")),
        "the init process may run on other CPUs:\n{allowed}"
    );
    Ok(())
}

#[test]
fn update_changes_memory_and_pids_limits() -> Result<()> {
    let rt = runtime();
    let mut bundle = Bundle::busybox()?;
    bundle.args(&["sleep", "1000"]).resources(|r| {
        r.set_memory(Some(
            LinuxMemoryBuilder::default()
                .limit(32 * MIB)
                .build()
                .expect("memory"),
        ));
    });
    bundle.write_spec()?;
    let c = rt.container("update", &bundle);
    let pid = c.run_detached()?;
    let cgroup = Cgroup::of_pid(pid)?;
    assert_eq!(cgroup.memory_limit()?, Some(32 << 20));
    c.update(&["--memory", "67108864"])?.ok()?;
    assert_eq!(cgroup.memory_limit()?, Some(64 << 20));
    c.update(&["--pids-limit", "20"])?.ok()?;
    assert_eq!(cgroup.pids_max()?, Some(20));
    Ok(())
}

#[test]
fn events_stats_reports_the_cgroup() -> Result<()> {
    let rt = runtime();
    let mut bundle = Bundle::busybox()?;
    bundle.args(&["sleep", "1000"]).resources(|r| {
        r.set_memory(Some(
            LinuxMemoryBuilder::default()
                .limit(64 * MIB)
                .build()
                .expect("memory"),
        ));
    });
    bundle.write_spec()?;
    let c = rt.container("events", &bundle);
    c.run_detached()?;
    let out = c.events(&["--stats"])?.ok()?;
    let stats: serde_json::Value =
        serde_json::from_str(out.out()).with_context(|| format!("not one JSON object: {out}"))?;
    assert_eq!(stats["type"], "stats", "{stats}");
    assert_eq!(stats["id"], c.id(), "{stats}");
    let pids = stats["data"]["pids"]["current"]
        .as_u64()
        .context("no data.pids.current")?;
    ensure!(pids >= 1, "pids.current {pids}");
    assert_eq!(
        stats["data"]["memory"]["usage"]["limit"],
        64 << 20,
        "{stats}"
    );
    ensure!(
        stats["data"]["memory"]["usage"]["usage"].as_u64() > Some(0),
        "{stats}"
    );
    ensure!(stats["data"]["cpu"]["usage"]["total"].is_u64(), "{stats}");
    Ok(())
}

/// A reader that goes away ends streaming `events` by SIGPIPE, as it ends runc: no panic, no message.
#[test]
fn events_end_quietly_when_their_reader_goes() -> Result<()> {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    let rt = runtime();
    let bundle = bundle_running(&["sleep", "1000"])?;
    let c = rt.container("events-pipe", &bundle);
    c.run_detached()?;
    let mut events = rt
        .command(&["events", "--interval", "100ms", c.id()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut first = String::new();
    std::io::BufReader::new(events.stdout.take().context("stdout")?).read_line(&mut first)?;
    ensure!(first.contains("\"stats\""), "{first:?}");
    // the reader is gone: the next event's write finds the pipe closed
    let out = events.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
    assert_eq!(stderr, "");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------------------

#[test]
fn state_has_runc_fields_through_the_lifecycle() -> Result<()> {
    let rt = runtime();
    let bundle = bundle_running(&["sleep", "1000"])?;
    let c = rt.container("state", &bundle);
    c.create(&[])?.ok()?;
    let state = c.state_json()?;
    for field in [
        "ociVersion",
        "id",
        "pid",
        "status",
        "bundle",
        "rootfs",
        "created",
        "owner",
    ] {
        ensure!(state.get(field).is_some(), "state lacks {field}: {state}");
    }
    assert_eq!(state["id"], c.id());
    assert_eq!(state["status"], "created");
    assert_eq!(state["bundle"], bundle.path().to_string_lossy().as_ref());
    assert_eq!(state["rootfs"], bundle.rootfs().to_string_lossy().as_ref());
    ensure!(state["owner"].is_string(), "owner is not a string: {state}");
    let created = state["created"]
        .as_str()
        .context("created is not a string")?;
    ensure!(
        created.len() >= 20 && created.as_bytes()[10] == b'T',
        "created is not RFC 3339: {created}"
    );
    let pid = c.pid()?;
    ensure!(
        pid > 1 && host::process_alive(pid),
        "created container has no live init ({pid})"
    );

    c.start()?.ok()?;
    assert_eq!(c.status()?, "running");
    assert_eq!(c.pid()?, pid, "start changed the init pid");
    c.kill("KILL")?.ok()?;
    poll_until(WAIT, "status stopped", || {
        (c.status().ok()? == "stopped").then_some(())
    })?;
    c.delete()?.ok()?;
    c.state()?.failed()?;
    Ok(())
}

#[test]
fn run_of_true_returns_promptly_100_times() -> Result<()> {
    let rt = runtime();
    let bundle = bundle_running(&["/bin/true"])?;
    let started = Instant::now();
    for i in 0..100 {
        let c = rt.container("true", &bundle);
        let out = c
            .run_with_timeout(&[], Duration::from_secs(10))
            .with_context(|| format!("run {i} of /bin/true hung (a missed SIGCHLD?)"))?;
        assert_eq!(out.code(), Some(0), "run {i}: {out}");
    }
    eprintln!(
        "100 runs of /bin/true with {} took {:?}",
        rt.name(),
        started.elapsed()
    );
    Ok(())
}

/// A foreground `run` deletes what it made once the process exits: state, mounts and the
/// cgroup directories (in every hierarchy), without a separate `delete`.
#[test]
fn foreground_run_leaves_nothing_behind() -> Result<()> {
    let rt = runtime();
    let bundle = bundle_running(&["/bin/true"])?;
    let c = rt.container("run-clean", &bundle);
    let out = c.run(&[])?;
    assert_eq!(out.code(), Some(0), "{out}");
    assert_nothing_left(&rt, c.id(), &bundle.rootfs())
}

#[test]
fn run_exit_code_is_the_container_exit_code() -> Result<()> {
    let rt = runtime();
    for (script, code) in [
        ("exit 42", 42),
        ("false", 1),
        ("true", 0),
        ("sh -c 'kill -9 $$'; exit $?", 137),
    ] {
        let mut bundle = Bundle::busybox()?;
        bundle.sh(script);
        bundle.write_spec()?;
        let out = rt.container("exit", &bundle).run(&[])?;
        assert_eq!(out.code(), Some(code), "`{script}`: {out}");
    }

    // An init killed by a signal from outside: run exits 128 + signal.
    let bundle = bundle_running(&["sleep", "1000"])?;
    let c = rt.container("exit-sig", &bundle);
    let out = std::thread::scope(|s| -> Result<_> {
        let run = s.spawn(|| c.run(&[]));
        poll_until(WAIT, "the container to run", || {
            (c.status().ok()? == "running").then_some(())
        })?;
        c.kill("KILL")?.ok()?;
        run.join()
            .map_err(|_| anyhow::anyhow!("run thread panicked"))?
    })?;
    assert_eq!(out.code(), Some(137), "{out}");
    Ok(())
}

#[test]
fn kill_accepts_signal_names_and_numbers() -> Result<()> {
    let rt = runtime();
    let script = "for s in USR1 USR2 TERM HUP; do trap \"echo $s >> /dev/shm/signals\" $s; done; \
                  touch /dev/shm/ready; while true; do usleep 20000; done";
    let mut bundle = Bundle::busybox()?;
    bundle.sh(script);
    bundle.write_spec()?;
    let c = rt.container("kill", &bundle);
    let pid = c.run_detached()?;
    poll_until(WAIT, "the traps to be set", || {
        read_inside(pid, "/dev/shm/ready")
    })?;
    for (signal, name) in [
        ("USR1", "USR1"),
        ("SIGUSR2", "USR2"),
        ("15", "TERM"),
        ("1", "HUP"),
    ] {
        c.kill(signal)?.ok()?;
        poll_until(
            WAIT,
            &format!("`kill {signal}` to reach the container"),
            || read_inside(pid, "/dev/shm/signals").filter(|s| s.lines().any(|l| l == name)),
        )?;
    }
    let out = c.kill("NOSUCHSIGNAL")?.failed()?;
    ensure!(out.stderr.to_lowercase().contains("signal"), "{out}");
    c.kill("9")?.ok()?;
    poll_until(WAIT, "status stopped", || {
        (c.status().ok()? == "stopped").then_some(())
    })?;
    Ok(())
}

#[test]
fn exec_runs_in_the_container() -> Result<()> {
    let rt = runtime();
    let mut bundle = Bundle::busybox()?;
    bundle.args(&["sleep", "1000"]);
    bundle.write_spec()?;
    let c = rt.container("exec", &bundle);
    let pid = c.run_detached()?;

    assert_eq!(c.exec(&[], &["echo", "hi"])?.ok()?.out(), "hi");
    let out = c.exec(&[], &["readlink", "/proc/self/ns/pid"])?.ok()?;
    assert_eq!(
        out.out(),
        host::ns_of(&pid.to_string(), "pid")?,
        "exec is not in the container's pid namespace"
    );
    assert_eq!(
        c.exec(&["--env", "FOO=bar"], &["sh", "-c", "echo $FOO"])?
            .ok()?
            .out(),
        "bar"
    );
    assert_eq!(c.exec(&["--cwd", "/etc"], &["pwd"])?.ok()?.out(), "/etc");
    let id = c.exec(&["--user", "1000:1000"], &["id"])?.ok()?;
    ensure!(id.out().starts_with("uid=1000 gid=1000"), "{id}");
    assert_eq!(
        c.exec(&[], &["sh", "-c", "exit 3"])?.code(),
        Some(3),
        "exec exit code"
    );

    let process = serde_json::json!({
        "terminal": false,
        "user": { "uid": 0, "gid": 0 },
        "args": ["sh", "-c", "echo from-process-json $X $(pwd)"],
        "env": ["PATH=/bin", "X=42"],
        "cwd": "/tmp"
    });
    let process_file = bundle.path().join("process.json");
    fs::write(&process_file, process.to_string())?;
    let out = c
        .exec(&["--process", &process_file.to_string_lossy()], &[])?
        .ok()?;
    assert_eq!(out.out(), "from-process-json 42 /tmp");

    let started = Instant::now();
    c.exec(
        &["-d"],
        &[
            "sh",
            "-c",
            "echo detached > /dev/shm/exec-d; exec sleep 1000",
        ],
    )?
    .ok()?;
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "exec -d waited for the process"
    );
    let text = poll_until(WAIT, "the detached exec to write", || {
        line_inside(pid, "/dev/shm/exec-d")
    })?;
    assert_eq!(text.trim(), "detached");

    rt.call(&["exec", "sk-no-such-container", "true"])?
        .failed()?;
    Ok(())
}

#[test]
fn pause_freezes_and_resume_thaws() -> Result<()> {
    let rt = runtime();
    let mut bundle = Bundle::busybox()?;
    bundle.sh("i=0; while true; do i=$((i+1)); echo $i > /dev/shm/count; usleep 10000; done");
    bundle.write_spec()?;
    let c = rt.container("pause", &bundle);
    let pid = c.run_detached()?;
    let count = || read_inside(pid, "/dev/shm/count").and_then(|s| s.trim().parse::<u64>().ok());
    poll_until(WAIT, "the counter to start", || count().filter(|&n| n >= 3))?;

    c.pause()?.ok()?;
    assert_eq!(c.status()?, "paused");
    ensure!(Cgroup::of_pid(pid)?.frozen()?, "the cgroup is not frozen");
    let frozen_at = read_inside(pid, "/dev/shm/count");
    // An observation window, not synchronisation: nothing may change during it.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        read_inside(pid, "/dev/shm/count"),
        frozen_at,
        "the counter advanced while paused"
    );

    c.resume()?.ok()?;
    assert_eq!(c.status()?, "running");
    let before: u64 = frozen_at.and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    poll_until(WAIT, "the counter to advance after resume", || {
        count().filter(|&n| n > before + 2)
    })?;
    Ok(())
}

#[test]
fn console_socket_receives_a_working_pty() -> Result<()> {
    let rt = runtime();
    let mut bundle = Bundle::busybox()?;
    bundle.args(&["sh"]).terminal(true);
    bundle.write_spec()?;
    let c = rt.container("console", &bundle);
    let socket = ConsoleSocket::bind()?;
    let socket_path = socket.path().to_string_lossy().into_owned();

    let mut pty = std::thread::scope(|s| -> Result<_> {
        let run = s.spawn(|| c.run(&["--detach", "--console-socket", &socket_path]));
        let pty = socket.receive_master(WAIT);
        let out = run
            .join()
            .map_err(|_| anyhow::anyhow!("run thread panicked"))??;
        out.ok()?;
        pty
    })?;
    // The terminal echoes what is typed; only the shell's output holds the product.
    pty.send("echo $((6*7))-marker\n")?;
    pty.read_until("42-marker", 1, WAIT)?;
    pty.send("tty\n")?;
    let text = pty.read_until("/dev/pts/", 1, WAIT)?;
    ensure!(
        !text.contains("not a tty"),
        "stdin is not a terminal: {text:?}"
    );
    pty.send("exit\n")?;
    poll_until(WAIT, "the shell to exit", || {
        (c.status().ok()? == "stopped").then_some(())
    })?;
    Ok(())
}

#[test]
fn hooks_run_in_order() -> Result<()> {
    let rt = runtime();
    let mut bundle = Bundle::busybox()?;
    bundle.writable_rootfs();
    // One log for all: host-side hooks append to the rootfs file by its host path, the
    // startContainer hook and the process (after pivot_root) by its container path.
    let log = bundle.rootfs().join("hooks.log");
    let log = log.to_string_lossy();
    let state_copy = bundle.path().join("createRuntime-state.json");
    for point in HookPoint::ALL {
        let script = match point {
            // slow, so a poststart that does not wait for the exec would come first
            HookPoint::StartContainer => "sleep 0.5; echo startContainer >> /hooks.log".to_string(),
            HookPoint::CreateRuntime => format!(
                "echo createRuntime >> {log}; cat > {}",
                state_copy.display()
            ),
            _ => format!("echo {} >> {log}", point.name()),
        };
        bundle.hook(point, &script);
    }
    bundle.sh("echo process >> /hooks.log; exec sleep 1000");
    bundle.write_spec()?;
    let c = rt.container("hooks", &bundle);
    let lines = || fs::read_to_string(bundle.rootfs().join("hooks.log")).unwrap_or_default();

    c.create(&[])?.ok()?;
    // The OCI spec runs poststart after the user process has started, during `start`;
    // runc before 1.2 runs it during `create` already.
    assert_eq!(
        lines(),
        "prestart\ncreateRuntime\ncreateContainer\n",
        "hooks run by `create`"
    );
    let state: serde_json::Value = serde_json::from_str(&fs::read_to_string(&state_copy)?)
        .context("the createRuntime hook did not get the state on stdin")?;
    assert_eq!(state["id"], c.id(), "{state}");
    assert_eq!(
        state["bundle"],
        bundle.path().to_string_lossy().as_ref(),
        "{state}"
    );

    c.start()?.ok()?;
    poll_until(WAIT, "poststart and the process", || {
        let l = lines();
        (l.contains("poststart") && l.contains("process")).then_some(())
    })?;
    let after_start: Vec<String> = lines().lines().map(str::to_string).collect();
    assert_eq!(
        after_start[..4],
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer"
        ]
    );
    // poststart and the process run concurrently: either order is right.
    let mut tail = after_start[4..].to_vec();
    tail.sort();
    assert_eq!(tail, ["poststart", "process"]);

    c.kill("KILL")?.ok()?;
    poll_until(WAIT, "status stopped", || {
        (c.status().ok()? == "stopped").then_some(())
    })?;
    c.delete()?.ok()?;
    let all = lines();
    ensure!(
        all.ends_with("poststop\n") && all.matches("poststop").count() == 1,
        "{all:?}"
    );
    Ok(())
}

#[test]
fn kill_and_delete_leave_nothing_behind() -> Result<()> {
    let rt = runtime();
    let bundle = bundle_running(&["sleep", "1000"])?;
    let c = rt.container("cleanup", &bundle);
    let pid = c.run_detached()?;
    let dirs = Cgroup::of_pid(pid)?.all_dirs();
    ensure!(
        !dirs.is_empty() && dirs.iter().all(|d| d.is_dir()),
        "no cgroup dirs: {dirs:?}"
    );
    // on a v1 or hybrid host the container also joins the hierarchies without
    // controllers (name=systemd, the v2 one), as runc and crun do
    let mounts = host::mounts("self")?;
    if mounts.iter().any(|m| m.fstype == "cgroup") {
        let joined_only = mounts.iter().filter(|m| {
            m.fstype == "cgroup2"
                || (m.fstype == "cgroup" && m.super_options.iter().any(|o| o.starts_with("name=")))
        });
        for m in joined_only {
            ensure!(
                dirs.iter()
                    .any(|d| d.starts_with(&m.mount_point) && d.ends_with(c.id())),
                "not in the hierarchy at {}: {dirs:?}",
                m.mount_point
            );
        }
    }
    ensure!(
        rt.state_entries().iter().any(|e| e == c.id()),
        "no state entry while running"
    );

    c.kill("KILL")?.ok()?;
    poll_until(WAIT, "status stopped", || {
        (c.status().ok()? == "stopped").then_some(())
    })?;
    c.delete()?.ok()?;
    ensure!(
        !host::process_alive(pid),
        "init {pid} still alive after delete"
    );
    let left: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
    ensure!(left.is_empty(), "cgroup directories left: {left:?}");
    assert_nothing_left(&rt, c.id(), &bundle.rootfs())?;
    assert_eq!(
        rt.state_entries(),
        Vec::<String>::new(),
        "state dir not empty"
    );
    c.state()?.failed()?;
    Ok(())
}

#[test]
fn delete_force_removes_a_running_container() -> Result<()> {
    let rt = runtime();
    let bundle = bundle_running(&["sleep", "1000"])?;
    let c = rt.container("delete-f", &bundle);
    let pid = c.run_detached()?;
    c.delete_force()?.ok()?;
    poll_until(WAIT, "init to die", || {
        (!host::process_alive(pid)).then_some(())
    })?;
    assert_nothing_left(&rt, c.id(), &bundle.rootfs())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Bad input: a clear error, and nothing left behind
// ---------------------------------------------------------------------------------------

/// `run` must fail with an error whose text (lower-cased) holds one of `words`, and leave
/// nothing of the container behind.
fn run_fails_cleanly(rt: &Runtime, bundle: &Bundle, tag: &str, words: &[&str]) -> Result<()> {
    let c = rt.container(tag, bundle);
    let out = c.run(&[])?.failed()?;
    let stderr = out.stderr.to_lowercase();
    ensure!(
        words.iter().any(|w| stderr.contains(w)),
        "stderr names none of {words:?}: {out}"
    );
    assert_nothing_left(rt, c.id(), &bundle.rootfs())
}

#[test]
fn malformed_config_is_rejected() -> Result<()> {
    let rt = runtime();
    let bundle = Bundle::busybox()?;
    bundle.write_raw_config("{ this is not json")?;
    // runc says "invalid character 'n' looking for beginning of object key string".
    run_fails_cleanly(
        &rt,
        &bundle,
        "bad-json",
        &["config.json", "json", "invalid", "parse", "expected"],
    )
}

#[test]
fn missing_rootfs_is_rejected() -> Result<()> {
    let rt = runtime();
    let bundle = bundle_running(&["true"])?;
    fs::remove_dir_all(bundle.rootfs())?;
    run_fails_cleanly(&rt, &bundle, "no-rootfs", &["rootfs"])
}

#[test]
fn unknown_namespace_type_is_rejected() -> Result<()> {
    let rt = runtime();
    let bundle = bundle_running(&["true"])?;
    let mut config = bundle.spec_json()?;
    config["linux"]["namespaces"]
        .as_array_mut()
        .context("no namespaces")?
        .push(serde_json::json!({ "type": "bogus" }));
    bundle.write_raw_config(config.to_string())?;
    run_fails_cleanly(&rt, &bundle, "bad-ns", &["bogus"])
}

#[test]
fn duplicate_id_is_rejected_and_the_first_survives() -> Result<()> {
    let rt = runtime();
    let bundle = bundle_running(&["sleep", "1000"])?;
    let c = rt.container("dup", &bundle);
    let pid = c.run_detached()?;
    let dirs = Cgroup::of_pid(pid)?.all_dirs();
    let other = bundle_running(&["sleep", "1000"])?;
    for verb in ["create", "run"] {
        let mut args = vec![verb, "--bundle"];
        let path = other.path().to_string_lossy().into_owned();
        args.push(&path);
        if verb == "run" {
            args.push("--detach");
        }
        args.push(c.id());
        let out = rt.call(&args)?.failed()?;
        ensure!(
            out.stderr.to_lowercase().contains("exist"),
            "`{verb}` of a taken id: {out}"
        );
        assert_eq!(c.status()?, "running", "the first container was disturbed");
        assert_eq!(c.pid()?, pid, "the first container was replaced");
    }
    assert_eq!(rt.state_entries(), [c.id().to_string()]);
    let now = host::cgroup_dirs_named(c.id())?;
    ensure!(
        now.iter().all(|d| dirs.contains(d)),
        "extra cgroups {now:?} beyond {dirs:?}"
    );
    let mounts = host::mounts_mentioning(&other.rootfs().to_string_lossy())?;
    ensure!(
        mounts.is_empty(),
        "the rejected bundle is mounted: {mounts:?}"
    );
    Ok(())
}

#[test]
fn delete_of_a_running_container_needs_force() -> Result<()> {
    let rt = runtime();
    let bundle = bundle_running(&["sleep", "1000"])?;
    let c = rt.container("del-running", &bundle);
    let pid = c.run_detached()?;
    let out = c.delete()?.failed()?;
    ensure!(out.stderr.to_lowercase().contains("running"), "{out}");
    assert_eq!(c.status()?, "running");
    ensure!(
        host::process_alive(pid),
        "delete without --force killed the container"
    );
    c.delete_force()?.ok()?;
    assert_nothing_left(&rt, c.id(), &bundle.rootfs())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The other verbs
// ---------------------------------------------------------------------------------------

#[test]
fn spec_writes_a_runnable_default_config() -> Result<()> {
    let rt = runtime();
    let bundle = Bundle::busybox()?;
    fs::remove_file(bundle.config_path())?;
    rt.spec(bundle.path(), &[])?.ok()?;
    let spec = Spec::load(bundle.config_path()).context("spec wrote no valid config.json")?;
    let defaults = runc_default_spec();

    let process = spec.process().clone().context("no process")?;
    assert_eq!(process.args().as_deref(), Some(&["sh".to_string()][..]));
    assert_eq!(process.terminal(), Some(true));
    let root = spec.root().clone().context("no root")?;
    assert_eq!(root.path(), Path::new("rootfs"));
    let linux = spec.linux().clone().context("no linux section")?;
    let want = defaults.linux().clone().context("defaults")?;
    let types: BTreeSet<String> = linux
        .namespaces()
        .iter()
        .flatten()
        .map(|n| format!("{:?}", n.typ()))
        .collect();
    for ns in want.namespaces().iter().flatten() {
        ensure!(
            types.contains(&format!("{:?}", ns.typ())),
            "no {:?} namespace",
            ns.typ()
        );
    }
    for (got, want, what) in [
        (linux.masked_paths(), want.masked_paths(), "maskedPaths"),
        (
            linux.readonly_paths(),
            want.readonly_paths(),
            "readonlyPaths",
        ),
    ] {
        let got: BTreeSet<_> = got.iter().flatten().collect();
        for path in want.iter().flatten() {
            ensure!(got.contains(path), "{what} lacks {path}");
        }
    }
    let dests: BTreeSet<_> = spec
        .mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().clone())
        .collect();
    for m in defaults.mounts().iter().flatten() {
        ensure!(
            dests.contains(m.destination()),
            "no mount on {}",
            m.destination().display()
        );
    }
    // runc refuses to overwrite an existing config.json.
    rt.spec(bundle.path(), &[])?.failed()?;

    let mut config: serde_json::Value = serde_json::from_slice(&fs::read(bundle.config_path())?)?;
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["echo", "spec-ok"]);
    bundle.write_raw_config(config.to_string())?;
    let out = rt.container("spec", &bundle).run(&[])?.ok()?;
    assert_eq!(out.out(), "spec-ok");
    Ok(())
}

#[test]
fn list_shows_containers_as_table_and_json() -> Result<()> {
    let rt = runtime();
    let bundle = bundle_running(&["sleep", "1000"])?;
    let a = rt.container("list-a", &bundle);
    let b = rt.container("list-b", &bundle);
    let pids = [a.run_detached()?, b.run_detached()?];

    let table = rt.list(&[])?.ok()?;
    let mut lines = table.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
        "{table}"
    );
    for (c, pid) in [(&a, pids[0]), (&b, pids[1])] {
        let row = table
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(c.id()))
            .with_context(|| format!("{} not listed: {table}", c.id()))?;
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1], pid.to_string(), "{row}");
        assert_eq!(cols[2], "running", "{row}");
        assert_eq!(cols[3], bundle.path().to_string_lossy(), "{row}");
    }

    let quiet = rt.list(&["-q"])?.ok()?;
    let ids: BTreeSet<&str> = quiet.stdout.lines().collect();
    assert_eq!(ids, BTreeSet::from([a.id(), b.id()]));

    let json = rt.list(&["--format", "json"])?.ok()?;
    let list: Vec<serde_json::Value> =
        serde_json::from_str(json.out()).with_context(|| json.to_string())?;
    assert_eq!(list.len(), 2, "{json}");
    for entry in &list {
        for field in [
            "ociVersion",
            "id",
            "pid",
            "status",
            "bundle",
            "rootfs",
            "created",
            "owner",
        ] {
            ensure!(
                entry.get(field).is_some(),
                "list entry lacks {field}: {entry}"
            );
        }
        assert_eq!(entry["status"], "running");
    }
    Ok(())
}

#[test]
fn ps_lists_the_container_processes() -> Result<()> {
    let rt = runtime();
    let bundle = bundle_running(&["sleep", "1000"])?;
    let c = rt.container("ps", &bundle);
    let pid = c.run_detached()?;
    c.exec(&["-d"], &["sleep", "999"])?.ok()?;
    let json = poll_until(WAIT, "two processes in ps", || {
        let out = c.ps(&["--format", "json"]).ok()?.ok().ok()?;
        let pids: Vec<u32> = serde_json::from_str(out.out()).ok()?;
        (pids.len() == 2).then_some(pids)
    })?;
    ensure!(json.contains(&pid), "init {pid} not in {json:?}");

    let table = c.ps(&[])?.ok()?;
    ensure!(
        table
            .stdout
            .lines()
            .next()
            .is_some_and(|h| h.contains("PID")),
        "{table}"
    );
    ensure!(
        table.stdout.contains("sleep 1000") && table.stdout.contains("sleep 999"),
        "{table}"
    );
    Ok(())
}

#[test]
fn features_prints_json() -> Result<()> {
    let rt = runtime();
    let out = rt.features()?.ok()?;
    let features: serde_json::Value =
        serde_json::from_str(out.out()).with_context(|| out.to_string())?;
    ensure!(features["ociVersionMin"].is_string(), "{features}");
    ensure!(features["ociVersionMax"].is_string(), "{features}");
    let hooks: BTreeSet<&str> = features["hooks"]
        .as_array()
        .context("no hooks")?
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    for point in HookPoint::ALL {
        ensure!(
            hooks.contains(point.name()),
            "hook {} missing: {features}",
            point.name()
        );
    }
    let namespaces: BTreeSet<&str> = features["linux"]["namespaces"]
        .as_array()
        .context("no linux.namespaces")?
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    for ns in ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"] {
        ensure!(
            namespaces.contains(ns),
            "namespace {ns} missing: {features}"
        );
    }
    Ok(())
}

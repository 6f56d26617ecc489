//! Seccomp filters loaded for real: the kernel must enforce what `skiff_runtime::seccomp`
//! compiles.
//!
//! Loading a filter is irreversible for the whole process, so every case runs in a
//! child: the parent test re-executes this test binary with `--exact child` and
//! `SECCOMP_CHILD_CASE=<case>`; the `child` test does the work only when that variable
//! is set, and reports through its exit status (a failed assertion exits with 101) and
//! a marker line on stdout. Needs root (or CAP_SYS_ADMIN) to load a filter without
//! `no_new_privs`; otherwise the child sets `no_new_privs` first, as the runtime would.

// Test code: a failed step should stop the test (clippy.toml allows this in #[test]
// functions only, not in their helpers).
#![allow(clippy::unwrap_used)]

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use oci_spec::runtime::{Capability, LinuxSeccomp};
use serde_json::json;
use skiff_runtime::seccomp;

const CASE_VAR: &str = "SECCOMP_CHILD_CASE";
const SCRATCH_VAR: &str = "SECCOMP_CHILD_SCRATCH";
/// Printed by the child just before it makes the call that should kill it.
const ARMED: &str = "seccomp-child: filter loaded";
/// Printed by the child when the whole case passed.
const DONE: &str = "seccomp-child: case passed";

/// Run one case in a re-executed child and return its output.
fn run_child(case: &str) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(CASE_VAR, case)
        .env(SCRATCH_VAR, scratch.path())
        .output()
        .unwrap();
    eprintln!(
        "--- child {case}: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Run a case that must pass.
fn expect_pass(case: &str) {
    let output = run_child(case);
    assert!(
        output.status.success(),
        "child case {case} failed: {:?}",
        output.status
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(DONE),
        "child case {case} did not run to its end"
    );
}

/// Run a case that the filter must kill with SIGSYS.
fn expect_sigsys(case: &str) {
    let output = run_child(case);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(ARMED),
        "child case {case} did not load its filter"
    );
    assert!(
        !stdout.contains(DONE),
        "child case {case} survived its forbidden call"
    );
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGSYS),
        "child case {case} should die of SIGSYS: {:?}",
        output.status
    );
}

#[test]
fn errno_action_returns_the_given_errno() {
    expect_pass("errno");
}

#[test]
fn argument_conditions_select_calls() {
    expect_pass("args");
}

#[test]
fn kill_process_kills_with_sigsys() {
    expect_sigsys("kill_process");
}

#[test]
fn trap_raises_sigsys() {
    expect_sigsys("trap");
}

#[test]
fn tsync_covers_threads_started_before_loading() {
    expect_pass("tsync");
}

#[test]
fn no_new_privs_is_left_to_the_runtime() {
    expect_pass("no_new_privs");
}

#[test]
fn default_profile_blocks_privileged_calls_only() {
    expect_pass("default_profile");
}

#[test]
fn default_profile_with_sys_admin_allows_namespaces() {
    expect_pass("default_profile_sys_admin");
}

#[test]
fn compiled_filter_can_be_loaded_later() {
    expect_pass("compile_then_load");
}

/// The entry point of the child process; a no-op in a normal test run.
#[test]
fn child() {
    let Ok(case) = std::env::var(CASE_VAR) else {
        return;
    };
    let scratch = std::path::PathBuf::from(std::env::var(SCRATCH_VAR).unwrap());
    match case.as_str() {
        "errno" => errno(&scratch),
        "args" => args(),
        "kill_process" => kill_process(&scratch),
        "trap" => trap(&scratch),
        "tsync" => tsync(&scratch),
        "no_new_privs" => no_new_privs(),
        "default_profile" => default_profile(&scratch),
        "default_profile_sys_admin" => default_profile_sys_admin(),
        "compile_then_load" => compile_then_load(&scratch),
        other => panic!("unknown child case {other}"),
    }
    println!("{DONE}");
}

fn spec(value: serde_json::Value) -> LinuxSeccomp {
    serde_json::from_value(value).unwrap()
}

/// Whether this process may load a filter without `no_new_privs`.
fn privileged() -> bool {
    caps_has_sys_admin().unwrap_or(false)
}

/// CAP_SYS_ADMIN's bit in the capability sets (linux/capability.h).
const CAP_SYS_ADMIN_BIT: u32 = 21;

/// CAP_SYS_ADMIN in the effective set, from /proc/self/status.
fn caps_has_sys_admin() -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let eff = u64::from_str_radix(hex, 16).ok()?;
    Some(eff & (1 << CAP_SYS_ADMIN_BIT) != 0)
}

/// Load in the child, setting no_new_privs first when unprivileged (as the runtime
/// does for `noNewPrivileges: true`).
fn load(spec: &LinuxSeccomp) {
    if !privileged() {
        println!("seccomp-child: no CAP_SYS_ADMIN, setting no_new_privs before loading");
        nix::sys::prctl::set_no_new_privs().unwrap();
    }
    seccomp::load(spec).unwrap();
    println!("{ARMED}");
}

/// Make core dumps impossible before a call that kills the child.
fn no_core_dump() {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_CORE, 0, 0).unwrap();
}

fn deny_mkdir_with_eacces() -> LinuxSeccomp {
    spec(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EACCES},
            {"names": ["this_syscall_does_not_exist"], "action": "SCMP_ACT_KILL_PROCESS"}
        ]
    }))
}

fn errno(scratch: &std::path::Path) {
    load(&deny_mkdir_with_eacces());
    let err = std::fs::create_dir(scratch.join("denied")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    assert_eq!(
        nix::unistd::mkdir(&scratch.join("denied2"), nix::sys::stat::Mode::S_IRWXU),
        Err(Errno::EACCES)
    );
    // Everything else still works.
    std::fs::write(scratch.join("file"), b"hello").unwrap();
    assert_eq!(std::fs::read(scratch.join("file")).unwrap(), b"hello");
    assert!(!scratch.join("denied").exists());
}

fn args() {
    // socket(AF_INET or AF_INET6, …) → EACCES, unless its type is SOCK_STREAM
    // (the type argument carries SOCK_CLOEXEC, hence the mask); kill(…, 0) → EPERM.
    load(&spec(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EACCES, "args": [
                {"index": 0, "value": libc::AF_INET, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": libc::AF_INET6, "op": "SCMP_CMP_EQ"},
                {"index": 1, "value": 0xf, "valueTwo": libc::SOCK_DGRAM, "op": "SCMP_CMP_MASKED_EQ"}
            ]},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}
            ]}
        ]
    })));
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let denied = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None);
        assert_eq!(denied.err(), Some(Errno::EACCES), "{family:?} datagram");
        // Same family, other type: the condition on argument 1 does not hold (a
        // kernel without IPv6 answers EAFNOSUPPORT, which is not the filter's).
        match socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None) {
            Ok(_) | Err(Errno::EAFNOSUPPORT) => {}
            Err(e) => panic!("{family:?} stream: {e}"),
        }
    }
    // Other family, same type: the condition on argument 0 does not hold.
    socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();

    let me = nix::unistd::getpid();
    assert_eq!(nix::sys::signal::kill(me, None), Err(Errno::EPERM));
    // A real signal is not signal 0: allowed (SIGWINCH is ignored by default).
    nix::sys::signal::kill(me, nix::sys::signal::Signal::SIGWINCH).unwrap();
}

fn kill_spec(action: &str) -> LinuxSeccomp {
    spec(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": action}]
    }))
}

fn kill_process(scratch: &std::path::Path) {
    no_core_dump();
    load(&kill_spec("SCMP_ACT_KILL_PROCESS"));
    let _ = std::fs::create_dir(scratch.join("never"));
    panic!("still alive after a call that SCMP_ACT_KILL_PROCESS forbids");
}

fn trap(scratch: &std::path::Path) {
    no_core_dump();
    load(&kill_spec("SCMP_ACT_TRAP"));
    let _ = std::fs::create_dir(scratch.join("never"));
    panic!("still alive after a call that SCMP_ACT_TRAP forbids (no handler for SIGSYS)");
}

fn tsync(scratch: &std::path::Path) {
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let dir = scratch.join("from-thread");
    let thread = std::thread::spawn(move || {
        go_rx.recv().unwrap();
        std::fs::create_dir(&dir).map_err(|e| e.raw_os_error())
    });
    load(&deny_mkdir_with_eacces());
    go_tx.send(()).unwrap();
    assert_eq!(thread.join().unwrap(), Err(Some(libc::EACCES)));
}

fn no_new_privs() {
    if !privileged() {
        println!(
            "seccomp-child: skipped: no CAP_SYS_ADMIN, the child must set no_new_privs itself"
        );
        return;
    }
    assert!(!nix::sys::prctl::get_no_new_privs().unwrap());
    load(&deny_mkdir_with_eacces());
    assert!(
        !nix::sys::prctl::get_no_new_privs().unwrap(),
        "loading the filter must not set no_new_privs"
    );
}

/// Docker's default capabilities (no CAP_SYS_ADMIN).
const DOCKER_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

fn tmpfs_mount(target: &std::path::Path) -> nix::Result<()> {
    use nix::mount::{MsFlags, mount};
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
}

/// Give the child its own private mount namespace, so that a mount the filter
/// failed to stop would stay in the child and vanish with it.
fn private_mount_namespace() {
    use nix::mount::{MsFlags, mount};
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).unwrap();
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap();
}

fn default_profile(scratch: &std::path::Path) {
    private_mount_namespace();
    load(&seccomp::default_profile(&DOCKER_CAPS));

    // Privileged calls fail with the profile's EPERM (we are root with every
    // capability, so without the filter they would succeed).
    assert_eq!(
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER),
        Err(Errno::EPERM)
    );
    assert_eq!(
        nix::sched::unshare(CloneFlags::CLONE_NEWNS),
        Err(Errno::EPERM)
    );
    let mnt = scratch.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    assert_eq!(tmpfs_mount(&mnt), Err(Errno::EPERM));
    assert_eq!(
        nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH),
        Err(Errno::EPERM)
    );

    // Ordinary work goes on.
    assert!(nix::unistd::getpid().as_raw() > 0);
    std::fs::write(scratch.join("file"), b"data").unwrap();
    assert_eq!(std::fs::read(scratch.join("file")).unwrap(), b"data");
    std::fs::remove_file(scratch.join("file")).unwrap();
    // Threads and processes: glibc tries clone3, gets ENOSYS and falls back to clone
    // without namespace flags, which the profile allows.
    assert_eq!(std::thread::spawn(|| 7).join().unwrap(), 7);
    let status = Command::new("/bin/sh")
        .args(["-c", "exit 3"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3));
    // Sockets: any family but AF_VSOCK.
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    assert_eq!(
        socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None
        )
        .err(),
        Some(Errno::EPERM)
    );
}

fn default_profile_sys_admin() {
    let mut caps = DOCKER_CAPS.to_vec();
    caps.push(Capability::SysAdmin);
    load(&seccomp::default_profile(&caps));
    // Only this child's mount namespace changes.
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).unwrap();
    assert_eq!(std::thread::spawn(|| 7).join().unwrap(), 7);
}

fn compile_then_load(scratch: &std::path::Path) {
    let filter = seccomp::compile(&deny_mkdir_with_eacces()).unwrap();
    // Not loaded yet.
    std::fs::create_dir(scratch.join("before")).unwrap();
    if !privileged() {
        nix::sys::prctl::set_no_new_privs().unwrap();
    }
    seccomp::load_compiled(&filter).unwrap();
    let err = std::fs::create_dir(scratch.join("after")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES));
}

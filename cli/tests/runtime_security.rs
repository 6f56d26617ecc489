//! The runtime's defences against container breakouts of known classes, checked for real:
//! the runtime binary cannot be overwritten through `/proc/<pid>/exe` of a process that
//! entered a container (CVE-2019-5736), and no runtime file descriptor or host working
//! directory reaches the container (CVE-2024-21626).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use skiff_testsupport::{Bundle, Runtime, poll_until, require_root};

/// A private copy of the binary, so that no other test process runs (and pins) the same
/// inode: a write attempt then fails only because of the runtime's protection.
fn private_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("skiff");
    std::fs::copy(env!("CARGO_BIN_EXE_skiff"), &copy).unwrap();
    (dir, copy)
}

/// What the init of a created container showed as its executable and environment.
struct InitSeen {
    exe: PathBuf,
    environ: Vec<String>,
}

/// Creates a container with the runtime at `binary` and grabs its init's `/proc/<pid>/exe`
/// the way a process in the container could; once the init is gone it tries to open that
/// for writing, which must fail, and checks that the binary is unchanged.
fn try_to_overwrite_the_runtime(binary: &Path) -> Result<InitSeen> {
    let before = std::fs::read(binary)?;
    let rt = Runtime::from_env(binary.to_str().unwrap());
    let mut bundle = Bundle::busybox()?;
    bundle.args(&["sleep", "1000"]);
    bundle.write_spec()?;
    let c = rt.container("exe", &bundle);
    c.create(&[])?.ok()?;
    // the container's init is still the runtime's own code until `start`: what a process in
    // the container could grab through /proc
    let pid = c.pid()?;
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{pid}/exe"))?;
    let seen = InitSeen {
        exe: std::fs::read_link(format!("/proc/{pid}/exe"))?,
        environ: std::fs::read(format!("/proc/{pid}/environ"))?
            .split(|&b| b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect(),
    };
    rt.call(&["kill", c.id(), "KILL"])?.ok()?;
    poll_until(
        std::time::Duration::from_secs(10),
        "the init process is gone",
        || {
            let gone = !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z"))
                    .unwrap_or(true);
            gone.then_some(())
        },
    )?;
    let reopened = std::fs::OpenOptions::new().append(true).open(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&handle)
    ));
    match reopened {
        Ok(mut f) => {
            let _ = std::io::Write::write_all(&mut f, b"overwritten");
            panic!("the runtime binary was opened for writing through /proc/<pid>/exe");
        }
        Err(e) => assert!(
            matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EPERM)),
            "unexpected error {e}"
        ),
    }
    assert_eq!(std::fs::read(binary)?, before, "the binary changed");
    rt.call(&["delete", "-f", c.id()])?;
    Ok(seen)
}

/// Whether the tests run skiff (not a runtime chosen by `SKIFF_TEST_RUNTIME`).
fn runtime_is_skiff() -> bool {
    std::env::var("SKIFF_TEST_RUNTIME").map_or(true, |v| v.trim().is_empty())
}

/// skiff's mark on a process it re-executed through a read-only mount or a sealed copy.
const REEXEC_MARK: &str = "_SKIFF_SEALED_EXE=1";

#[test]
fn runtime_binary_cannot_be_overwritten_from_a_container() -> Result<()> {
    require_root();
    let (_dir, copy) = private_copy();
    let seen = try_to_overwrite_the_runtime(&copy)?;
    if runtime_is_skiff() {
        // from a writable path the runtime re-executes itself before it makes the container
        assert!(
            seen.environ.iter().any(|v| v == REEXEC_MARK),
            "no re-exec from a writable binary: {:?}",
            seen.environ
        );
    }
    Ok(())
}

/// Undoes a test's bind mount, also when the test fails.
struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// What `skiff install` sets up: the binary's directory is a read-only bind mount of itself.
/// The runtime then starts once (no re-exec) and is still safe from the container.
#[test]
fn runtime_on_a_read_only_mount_starts_once_and_stays_protected() -> Result<()> {
    use nix::mount::{MsFlags, mount};
    require_root();
    if !runtime_is_skiff() {
        return Ok(());
    }
    let (dir, copy) = private_copy();
    mount(
        Some(dir.path()),
        dir.path(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    let _unmount = Unmount(dir.path().to_path_buf());
    mount(
        None::<&str>,
        dir.path(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )?;
    let seen = try_to_overwrite_the_runtime(&copy)?;
    assert!(
        !seen.environ.iter().any(|v| v == REEXEC_MARK),
        "the runtime re-executed itself although its binary is read-only: {:?}",
        seen.environ
    );
    assert_eq!(seen.exe, copy, "the init does not run the read-only binary");
    Ok(())
}

#[test]
fn no_runtime_fd_or_host_cwd_reaches_the_container() -> Result<()> {
    require_root();
    let rt = Runtime::from_env(env!("CARGO_BIN_EXE_skiff"));
    let mut bundle = Bundle::busybox()?;
    bundle.args(&["sleep", "1000"]);
    bundle.process(|p| {
        p.set_cwd("/bin".into());
    });
    bundle.write_spec()?;
    let c = rt.container("fds", &bundle);
    c.run_detached()?;
    // The container's init (pid 1) is inspected from a second process: a shell looking at
    // its own fds would race with the pipes of its own pipeline.
    let out = c
        .exec(
            &[],
            &[
                "sh",
                "-c",
                "ls /proc/1/fd | tr '\\n' ' '; echo; readlink /proc/1/cwd",
            ],
        )?
        .ok()?;
    let lines: Vec<&str> = out.out().lines().collect();
    assert_eq!(
        lines.first().map(|l| l.trim()),
        Some("0 1 2"),
        "{}",
        out.out()
    );
    assert_eq!(lines.get(1).copied(), Some("/bin"), "{}", out.out());
    c.delete_force()?.ok()?;
    Ok(())
}

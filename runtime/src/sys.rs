//! The raw system calls the runtime needs that `nix` does not wrap safely.
//!
//! This is the only module of the crate with `unsafe`; every block says why it is sound.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::unistd::Pid;

/// Takes ownership of a file descriptor the kernel just returned (nix 0.29 still returns
/// some fds as raw integers).
pub fn owned_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass only fds freshly returned by a syscall, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `_exit(2)`: ends a forked child without running atexit handlers or flushing stdio
/// buffers that belong to the parent.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// Result of [`clone_fork`]: which side of the fork we are on.
#[derive(Debug, Clone, Copy)]
pub enum Forked {
    /// In the parent: the child's pid.
    Parent(Pid),
    /// In the child.
    Child,
}

/// `clone(2)` with fork semantics (the child continues on a copy of the caller's stack)
/// and extra flags such as `CLONE_PARENT` or namespace flags.
///
/// The caller must be single-threaded, or the child must restrict itself to
/// async-signal-safe work until it execs or exits (the usual rule after fork).
pub fn clone_fork(flags: libc::c_int) -> nix::Result<Forked> {
    // SAFETY: with a null stack pointer, clone(2) behaves like fork(2): the child gets a
    // copy-on-write copy of the address space and continues from this call; no pointers are
    // passed. The caveats of fork in threaded programs are documented on this function.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match Errno::result(ret)? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(Pid::from_raw(pid as i32))),
    }
}

/// `fork(2)` through libc, so its atfork handlers keep malloc and stdio locks consistent in
/// the child even if the caller has other threads. The child must exec or `_exit` without
/// returning into the caller's normal flow.
pub fn fork() -> nix::Result<Forked> {
    // SAFETY: the child only runs the bootstrap code path, which ends in exec or _exit;
    // glibc's fork makes allocation in the child safe even in a threaded parent.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, prog)` with a raw BPF program (8-byte
/// `sock_filter` instructions in native byte order, as libseccomp exports them).
pub fn seccomp_set_filter(bpf: &[u8], flags: u32) -> nix::Result<()> {
    if bpf.is_empty() || bpf.len() % 8 != 0 || bpf.len() / 8 > usize::from(u16::MAX) {
        return Err(Errno::EINVAL);
    }
    let insns: Vec<libc::sock_filter> = bpf
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: insns.len() as u16,
        filter: insns.as_ptr().cast_mut(),
    };
    const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
    // SAFETY: `prog` points at `insns`, both alive for the whole call; the kernel copies
    // the program and does not keep the pointer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    Errno::result(ret).map(drop)
}

/// `pidfd_open(2)`: a file descriptor that refers to the process `pid`.
pub fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; on success it returns a new fd we own.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = Errno::result(ret)? as RawFd;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(2)`: signals the process behind a pidfd (immune to pid reuse).
pub fn pidfd_send_signal(pidfd: &OwnedFd, signal: libc::c_int) -> nix::Result<()> {
    // SAFETY: the fd is valid for the call's duration; a null siginfo is allowed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null_mut::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(ret).map(drop)
}

/// Marks every fd from `first` up as close-on-exec (`close_range(2)` with
/// `CLOSE_RANGE_CLOEXEC`), so no runtime fd survives into the container process.
pub fn cloexec_from(first: u32) -> nix::Result<()> {
    // SAFETY: integer-only syscall; it changes fd flags, never frees memory we use.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    Errno::result(ret).map(drop)
}

/// Makes `fd` the controlling terminal of the calling process (`TIOCSCTTY`).
pub fn set_controlling_terminal(fd: RawFd) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument, no pointer; fd validity is checked by the kernel.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
    Errno::result(ret).map(drop)
}

/// Sets the terminal window size of `fd`.
pub fn set_winsize(fd: RawFd, rows: u16, cols: u16) -> nix::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct through the pointer, which is valid here.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
    Errno::result(ret).map(drop)
}

/// Reads the terminal window size of `fd`.
pub fn get_winsize(fd: RawFd) -> nix::Result<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize struct through the pointer, which is valid here.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    Errno::result(ret).map(|_| (ws.ws_row, ws.ws_col))
}

/// `setdomainname(2)`.
pub fn set_domainname(name: &str) -> nix::Result<()> {
    // SAFETY: the pointer and length describe a valid byte slice for the call.
    let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    Errno::result(ret).map(drop)
}

/// Joins a new anonymous session keyring named `name` (as runc does per container), so
/// containers do not share the host's session keyring. ENOSYS/EPERM are reported to the caller.
pub fn join_session_keyring(name: &str) -> nix::Result<()> {
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_int = 1;
    // SAFETY: keyctl(JOIN_SESSION_KEYRING, name) reads a NUL-terminated string that lives
    // for the whole call.
    let ret =
        unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    Errno::result(ret).map(drop)
}

/// Start time of a process in clock ticks since boot (field 22 of `/proc/<pid>/stat`);
/// used to tell a container's init apart from a later process that reused its pid.
pub fn process_start_time(pid: Pid) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // the command name (field 2) may contain spaces and parentheses: split after the last ')'
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed stat"))?;
    // rest starts at field 3 (state); start time is field 22
    rest.split_whitespace()
        .nth(19)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("malformed stat"))
}

/// Whether the running executable is a sealed memfd copy (see [`ensure_sealed_exe`]).
fn exe_is_sealed(exe: &File) -> bool {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    match fcntl(exe.as_raw_fd(), FcntlArg::F_GET_SEALS) {
        Ok(bits) => {
            let seals = SealFlag::from_bits_truncate(bits);
            seals.contains(SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW)
        }
        Err(_) => false,
    }
}

/// Whether the running executable cannot be written through `/proc/self/exe`: a sealed
/// memfd copy, or a file reached through a read-only mount.
fn exe_is_protected(exe: &File) -> bool {
    if exe_is_sealed(exe) {
        return true;
    }
    nix::sys::statvfs::fstatvfs(exe)
        .map(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

/// Runs `work` on a thread of its own in a throwaway mount namespace: the thread unshares
/// its filesystem context and mount namespace and makes every mount in it private, so
/// nothing `work` mounts or unmounts reaches the host. The namespace dies with the thread;
/// what `work` opened or wrote stays.
pub fn in_private_mount_namespace<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    use nix::mount::{MsFlags, mount};
    let worker = std::thread::spawn(move || -> io::Result<T> {
        nix::sched::unshare(
            nix::sched::CloneFlags::CLONE_FS | nix::sched::CloneFlags::CLONE_NEWNS,
        )?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )?;
        work()
    });
    worker
        .join()
        .map_err(|_| io::Error::other("private mount namespace thread panicked"))?
}

/// Opens the executable through a read-only bind mount made in a throwaway mount
/// namespace (see [`in_private_mount_namespace`]): the binary is bind-mounted onto itself
/// read-only and opened `O_PATH`. The open file keeps its read-only mount alive after the
/// namespace is gone, so an exec through it gives a `/proc/self/exe` that refuses writes
/// (EROFS), without copying the binary and without leaving anything mounted on the host
/// (runc's approach since 1.2).
fn open_exe_read_only() -> io::Result<OwnedFd> {
    use nix::mount::{MsFlags, mount};
    in_private_mount_namespace(|| {
        let exe = std::fs::read_link("/proc/self/exe")?;
        mount(
            Some(&exe),
            &exe,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        mount(
            None::<&str>,
            &exe,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )?;
        let fd = nix::fcntl::open(
            &exe,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        Ok(owned_fd(fd))
    })
}

/// A sealed in-memory copy of the executable (the fallback when no mount namespace can
/// be made): copy into a memfd and seal it against writes, growth and shrinking.
fn sealed_copy_of_exe(exe: &mut File) -> io::Result<OwnedFd> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MemFdCreateFlag, memfd_create};
    let memfd = memfd_create(
        c"skiff-sealed",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )?;
    let mut copy = File::from(memfd);
    io::copy(exe, &mut copy)?;
    let seals = SealFlag::F_SEAL_SEAL
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE;
    fcntl(copy.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))?;
    Ok(copy.into())
}

/// Environment variable set on the re-executed process, so it never loops.
const SEALED_ENV: &str = "_SKIFF_SEALED_EXE";

/// Drops the re-exec mark from this process's environment once it has served, so that the
/// processes it starts do not inherit it: a skiff started from a writable path must protect
/// itself again, not fail on a mark meant for its parent. (`/proc/<pid>/environ` still shows
/// the environment the process was started with.)
fn forget_sealed_mark() {
    // SAFETY: `ensure_sealed_exe` runs first thing in the commands that call it, before
    // they start any thread (its documented requirement), so nothing reads or writes the
    // environment concurrently.
    unsafe { std::env::remove_var(SEALED_ENV) }
}

/// Protects the skiff binary from being overwritten by a container (the CVE-2019-5736
/// class): processes that enter a container must not have a writable host binary as
/// `/proc/self/exe`. Unless the executable is already protected (on a read-only mount, or
/// a sealed memfd), re-exec it through a read-only bind mount (see `open_exe_read_only`),
/// or, where that is impossible, from a sealed memfd copy; same arguments and environment.
/// Returns only when already protected (or on error).
///
/// Call it first thing, before the process starts any thread: it may change the environment.
pub fn ensure_sealed_exe() -> io::Result<()> {
    let mut exe = File::open("/proc/self/exe")?;
    if exe_is_protected(&exe) {
        if std::env::var_os(SEALED_ENV).is_some() {
            forget_sealed_mark();
        }
        return Ok(());
    }
    if std::env::var_os(SEALED_ENV).is_some() {
        return Err(io::Error::other(
            "re-executed through a protected path but /proc/self/exe is still writable",
        ));
    }
    let target = match open_exe_read_only() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!(error = %e, "no read-only mount for the executable, copying it");
            sealed_copy_of_exe(&mut exe)?
        }
    };
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str())))
        .collect::<Result<_, _>>()
        .map_err(io::Error::other)?;
    let mut env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = std::os::unix::ffi::OsStrExt::as_bytes(k.as_os_str()).to_vec();
            kv.push(b'=');
            kv.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()));
            CString::new(kv)
        })
        .collect::<Result<_, _>>()
        .map_err(io::Error::other)?;
    env.push(CString::new(format!("{SEALED_ENV}=1")).map_err(io::Error::other)?);
    nix::unistd::execveat(
        Some(target.as_raw_fd()),
        c"",
        &args,
        &env,
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )?;
    Err(io::Error::other("execveat returned"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self_is_readable() {
        let t = process_start_time(nix::unistd::getpid()).unwrap();
        assert!(t > 0);
    }

    #[test]
    fn pidfd_of_self() {
        let fd = pidfd_open(nix::unistd::getpid()).unwrap();
        // signal 0 checks existence
        pidfd_send_signal(&fd, 0).unwrap();
    }
}

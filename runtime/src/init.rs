//! The processes the runtime forks: the *bootstrap* process, which enters or creates the
//! namespaces, and the container process it forks (with `CLONE_PARENT`, so that it is the
//! runtime's child and can be waited for): the container's init, or an `exec`'d process.
//!
//! Everything here runs in a forked child. It reports failures on the channel as
//! [`Message::Failed`] with the whole error chain and exits; it never returns.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Pid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use crate::channel::{Channel, Message};
use crate::error::{Error, Result};
use crate::hooks::{self, HookKind};
use crate::namespaces::Plan;
use crate::rootfs::{self, RootfsConfig};
use crate::{console, process, seccomp, sys};

/// What the container process becomes.
#[derive(Debug)]
pub(crate) enum Role<'a> {
    /// The container's init: build the rootfs, wait on the exec FIFO, exec.
    Init {
        /// O_PATH descriptor of `exec.fifo`.
        fifo: &'a OwnedFd,
        /// runc's --no-pivot.
        no_pivot: bool,
        /// OCI state JSON (without pid) for the in-container hooks.
        hook_state: &'a str,
    },
    /// A process started in a running container: join, set up, exec.
    Exec,
}

/// Everything the forked side needs, built by the runtime before forking.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    pub process: &'a Process,
    pub rootfs: &'a Path,
    /// The bundle directory: relative bind-mount sources resolve against it, as in runc.
    pub bundle: &'a Path,
    pub plan: &'a Plan,
    pub role: Role<'a>,
    /// Connected console socket, when the process gets a terminal.
    pub console: Option<RawFd>,
    /// Number of extra fds (from 3) passed into the container.
    pub preserve_fds: u32,
    /// The spec's seccomp filter, compiled by the runtime before forking.
    pub seccomp: Option<&'a seccomp::CompiledFilter>,
}

/// Runs the bootstrap process. Never returns.
pub(crate) fn bootstrap(launch: &Launch<'_>, chan: &Channel) -> ! {
    let code = match bootstrap_inner(launch, chan) {
        Ok(()) => 0,
        Err(e) => {
            let _ = chan.send(&Message::Failed(error_chain(&e)));
            1
        }
    };
    exit(code)
}

fn exit(code: i32) -> ! {
    // no atexit handlers or stdio flushing of the runtime's state in a forked child
    sys::exit_now(code)
}

/// The error with all its causes, as the CLI prints them.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Every signal back to its default action. An ignored signal stays ignored across
/// `execve`, and this process ignores SIGPIPE (Rust's runtime does; systemd does for the
/// services it starts), so without this every container process would too: `yes | head -1`
/// would loop on EPIPE instead of ending. runc and crun start containers with none ignored.
/// Straight to the kernel: glibc's `sigaction` refuses the two signals it keeps for itself
/// (32, 33) and left 32 ignored here.
fn reset_signal_dispositions() {
    // the kernel's struct sigaction, all zero: SIG_DFL, no flags, no restorer, empty mask
    // (zero is the same whatever the architecture's field layout)
    let default = [0u64; 4];
    for signal in 1..=64 {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            // SAFETY: rt_sigaction reads a struct sigaction (at most 32 bytes for an 8-byte
            // signal set) from `default`, which lives across the call, and writes nothing
            // (no old action asked for). SIG_DFL installs no handler.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    default.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                )
            };
        }
    }
}

fn bootstrap_inner(launch: &Launch<'_>, chan: &Channel) -> Result<()> {
    // the runtime may block signals to forward them; the container starts with none blocked
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| Error::sys("reset signal mask", e))?;
    // if the runtime dies mid-way, do not linger
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| Error::sys("prctl(PR_SET_PDEATHSIG)", e))?;
    // the runtime puts us into the cgroup first
    chan.expect(Message::Continue, "cgroup placement")?;
    launch.plan.enter_user()?;
    if launch.plan.new_user {
        chan.send(&Message::WriteIdMaps)?;
        chan.expect(Message::Continue, "id maps")?;
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .map_err(|e| Error::sys("setresgid(0) in the user namespace", e))?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .map_err(|e| Error::sys("setresuid(0) in the user namespace", e))?;
    }
    launch.plan.enter_rest()?;
    // fork the container process; CLONE_PARENT makes it the runtime's child, and it is
    // pid 1 when a new pid namespace was created above
    match sys::clone_fork(libc::CLONE_PARENT).map_err(|e| Error::sys("clone", e))? {
        sys::Forked::Parent(pid) => {
            chan.send(&Message::InitPid(pid.as_raw()))?;
            Ok(())
        }
        sys::Forked::Child => {
            let code = match container_process(launch, chan) {
                Ok(never) => match never {},
                Err(e) => {
                    let _ = chan.send(&Message::Failed(error_chain(&e)));
                    1
                }
            };
            exit(code)
        }
    }
}

/// An uninhabited type: `container_process` only returns on error.
enum Never {}

fn container_process(launch: &Launch<'_>, chan: &Channel) -> Result<Never> {
    nix::sys::prctl::set_pdeathsig(None).map_err(|e| Error::sys("prctl(PR_SET_PDEATHSIG)", e))?;
    // the bootstrap's InitPid and this process's messages share the channel: speak only
    // once the runtime has our pid, so the order of messages is fixed
    chan.expect(Message::Continue, "pid acknowledged")?;
    // not dumpable while the runtime's memory is mapped: other container processes must
    // not reach /proc/<pid>/exe or /proc/<pid>/mem of this one (reset by execve)
    nix::sys::prctl::set_dumpable(false).map_err(|e| Error::sys("prctl(PR_SET_DUMPABLE)", e))?;
    let terminal = launch.process.terminal().unwrap_or(false);
    if terminal || matches!(launch.role, Role::Init { .. }) {
        nix::unistd::setsid().map_err(|e| Error::sys("setsid", e))?;
    }
    let spec = launch.spec;
    let linux = spec.linux().clone().unwrap_or_default();
    let has_ns = |t: LinuxNamespaceType| linux.namespaces().iter().flatten().any(|n| n.typ() == t);
    let new_ns = |t: LinuxNamespaceType| {
        linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == t && n.path().is_none())
    };

    let mut fifo_path: Option<String> = None;
    if let Role::Init {
        fifo,
        no_pivot,
        hook_state,
    } = &launch.role
    {
        nix::unistd::chdir(launch.bundle).map_err(|e| Error::sys("chdir to the bundle", e))?;
        let cfg = RootfsConfig {
            spec,
            rootfs: launch.rootfs,
            no_pivot: *no_pivot,
            in_user_ns: has_ns(LinuxNamespaceType::User),
            in_cgroup_ns: new_ns(LinuxNamespaceType::Cgroup),
        };
        rootfs::prepare_rootfs(&cfg)?;
        if new_ns(LinuxNamespaceType::Uts) {
            if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
                nix::unistd::sethostname(h).map_err(|e| Error::sys("sethostname", e))?;
            }
            if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
                sys::set_domainname(d).map_err(|e| Error::sys("setdomainname", e))?;
            }
        }
        chan.send(&Message::RunCreateRuntimeHooks)?;
        chan.expect(Message::Continue, "hooks done")?;
        if let Some(h) = spec
            .hooks()
            .as_ref()
            .and_then(|h| h.create_container().clone())
        {
            hooks::run(HookKind::CreateContainer, &h, &with_pid(hook_state))?;
        }
        rootfs::pivot_rootfs(&cfg)?;
        for (k, v) in linux.sysctl().iter().flatten() {
            let path = format!("/proc/sys/{}", k.replace('.', "/"));
            std::fs::write(&path, v).map_err(|source| Error::Io {
                what: format!("write sysctl {k}={v}"),
                source,
            })?;
        }
        rootfs::finish_rootfs(&cfg)?;
        fifo_path = Some(format!("/proc/self/fd/{}", fifo.as_raw_fd()));
    }

    if terminal {
        let sock = launch.console.ok_or(Error::NoConsoleSocket)?;
        let (master, slave) = console::open_pty()?;
        let size = launch
            .process
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16));
        console::make_stdio(&slave, size)?;
        console::hand_over(sock, master)?;
        drop(slave);
        nix::unistd::close(sock).map_err(|e| Error::sys("close console socket", e))?;
    }

    if let Some(adj) = launch.process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(|source| {
            Error::Io {
                what: format!("set oom_score_adj {adj}"),
                source,
            }
        })?;
    }
    if matches!(launch.role, Role::Init { .. }) {
        // a fresh session keyring per container, as runc does; kernels or seccomp setups
        // without keyctl are fine
        if let Err(e) = sys::join_session_keyring(&format!("_ses.{}", launch.id)) {
            tracing::debug!(error = %e, "no session keyring");
        }
    }
    process::apply_rlimits(launch.process.rlimits().as_deref().unwrap_or_default())?;

    let (args, env) = process::c_strings(launch.process)?;
    let env_strings: Vec<String> = launch.process.env().clone().unwrap_or_default();
    let program = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    process::enter_cwd(launch.process.cwd())?;
    let program = process::find_program(&program, &env_strings, launch.process.cwd())?;
    let program = CString::new(program.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::sys("program path", nix::Error::EINVAL))?;

    let nnp = launch.process.no_new_privileges().unwrap_or(false);
    let caps = launch.process.capabilities().as_ref();
    process::drop_bounding(caps)?;
    // without no_new_privileges, loading a filter needs CAP_SYS_ADMIN: load it while we
    // still have it (the filter must then allow the few calls made before exec, as runc's)
    let mut filter = launch.seccomp;
    if !nnp {
        if let Some(f) = filter.take() {
            seccomp::load_bpf(f)?;
        }
    }
    let setgroups_denied = launch.plan.new_user
        && std::fs::read_to_string("/proc/self/setgroups")
            .map(|s| s.trim() == "deny")
            .unwrap_or(false);
    process::apply_user(launch.process.user(), setgroups_denied)?;
    process::apply_capabilities(caps)?;
    if nnp {
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| Error::sys("prctl(PR_SET_NO_NEW_PRIVS)", e))?;
    }
    // no fd of the runtime may reach the container (only stdio and --preserve-fds)
    sys::cloexec_from(3 + launch.preserve_fds).map_err(|e| Error::sys("close_range", e))?;

    chan.send(&Message::Ready)?;
    // The FIFO's writing end stays open (close-on-exec) until the execve: `start` reads the
    // byte, then waits for end of file, so its poststart hooks run after the startContainer
    // hooks and the exec, as the spec orders them.
    let mut _fifo_writer: Option<File> = None;
    if let (Role::Init { hook_state, .. }, Some(path)) = (&launch.role, &fifo_path) {
        // blocks until `start` opens the FIFO for reading
        let fd = nix::fcntl::open(
            path.as_str(),
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys("open exec fifo", e))?;
        let mut f = File::from(sys::owned_fd(fd));
        f.write_all(b"0").map_err(|source| Error::Io {
            what: "write exec fifo".into(),
            source,
        })?;
        _fifo_writer = Some(f);
        if let Some(h) = spec
            .hooks()
            .as_ref()
            .and_then(|h| h.start_container().clone())
        {
            hooks::run(HookKind::StartContainer, &h, &with_pid(hook_state))?;
        }
    }
    reset_signal_dispositions();
    if let Some(f) = filter {
        seccomp::load_bpf(f)?;
    }
    let err = nix::unistd::execve(&program, &args, &env).err();
    Err(Error::Exec {
        program: launch.process.args().clone().unwrap_or_default().join(" "),
        source: err.unwrap_or(nix::Error::UnknownErrno),
    })
}

/// The hook state JSON with `pid` set to this process's pid (in the container's view).
fn with_pid(hook_state: &str) -> String {
    let pid = nix::unistd::getpid();
    match serde_json::from_str::<serde_json::Value>(hook_state) {
        Ok(mut v) => {
            v["pid"] = serde_json::json!(pid.as_raw());
            v.to_string()
        }
        Err(_) => hook_state.to_string(),
    }
}

/// Writes the uid/gid maps of `pid`'s new user namespace (done by the runtime, which is
/// privileged in the parent namespace).
pub(crate) fn write_id_maps(pid: Pid, spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let fmt = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    for (file, data) in [
        ("uid_map", fmt(linux.uid_mappings())),
        ("gid_map", fmt(linux.gid_mappings())),
    ] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, data.as_bytes()).map_err(|source| Error::Io {
            what: format!("write {path} ({})", data.trim().replace('\n', ", ")),
            source,
        })?;
    }
    Ok(())
}

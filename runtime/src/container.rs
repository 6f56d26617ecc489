//! The container API: [`Runtime`] creates and finds containers, [`Container`] drives one
//! through its lifecycle. Every step saves the state file, so any later process (another
//! CLI call, a restarted agent) picks up where this one left off.
//!
//! `create` and `exec` fork; call them from a single-threaded process (the CLI, or the
//! per-pod shim the agent starts), as with runc.

use std::cell::OnceCell;
use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Process};

use crate::cgroups::{self, Cgroup};
use crate::channel::{self, Message};
use crate::error::{Error, Result};
use crate::hooks::{self, HookKind};
use crate::init::{self, Launch, Role};
use crate::namespaces::Plan;
use crate::spec::{self, Bundle};
use crate::state::{EXEC_FIFO, Internal, OCI_VERSION, State, Status};
use crate::sys;

/// Default state root, as `--root` of the CLI.
pub const DEFAULT_ROOT: &str = "/run/skiff/runtime";

/// Options of `create` that come from the caller, not the bundle.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Unix socket that receives the pty master when `process.terminal` is set.
    pub console_socket: Option<PathBuf>,
    /// File to write the init's host pid to.
    pub pid_file: Option<PathBuf>,
    /// Pass fds 3 .. 3+N into the container.
    pub preserve_fds: u32,
    /// Use MS_MOVE + chroot instead of pivot_root (for ramfs roots).
    pub no_pivot: bool,
}

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Unix socket that receives the pty master when the process has a terminal.
    pub console_socket: Option<PathBuf>,
    /// File to write the process's host pid to.
    pub pid_file: Option<PathBuf>,
    /// Pass fds 3 .. 3+N into the process.
    pub preserve_fds: u32,
}

/// A runtime rooted at a state directory.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
    cgroup_root: Option<PathBuf>,
    systemd_cgroup: bool,
}

/// One container, loaded from its state directory.
#[derive(Debug)]
pub struct Container {
    dir: PathBuf,
    state: State,
    cgroup_root: Option<PathBuf>,
    /// The cgroup, opened on first use and then kept: opening one on a cgroup v1 host reads
    /// `/proc/self/mountinfo` and `/proc/self/cgroup` once per controller.
    cgroup: OnceCell<Cgroup>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'))
}

impl Runtime {
    /// A runtime keeping state under `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime {
            root: root.into(),
            cgroup_root: None,
            systemd_cgroup: false,
        }
    }

    /// Uses `root` instead of /sys/fs/cgroup (tests, nested setups).
    pub fn with_cgroup_root(mut self, root: impl Into<PathBuf>) -> Runtime {
        self.cgroup_root = Some(root.into());
        self
    }

    /// Interprets `slice:prefix:name` cgroup paths the systemd way.
    pub fn with_systemd_cgroup(mut self, on: bool) -> Runtime {
        self.systemd_cgroup = on;
        self
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir_of(&self, id: &str) -> Result<PathBuf> {
        if !valid_id(id) {
            return Err(Error::InvalidId(id.to_string()));
        }
        Ok(self.root.join(id))
    }

    /// Loads an existing container and refreshes its status from the kernel.
    pub fn load(&self, id: &str) -> Result<Container> {
        let dir = self.dir_of(id)?;
        if !dir.join(crate::state::STATE_FILE).exists() {
            return Err(Error::NotFound(id.to_string()));
        }
        let state = State::load(&dir)?;
        let mut c = Container {
            dir,
            state,
            cgroup_root: self.cgroup_root.clone(),
            cgroup: OnceCell::new(),
        };
        c.refresh();
        Ok(c)
    }

    /// Every container under the root, ordered by id.
    pub fn list(&self) -> Result<Vec<Container>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(Error::io(format!("read {}", self.root.display()), e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(crate::state::STATE_FILE).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids.iter().filter_map(|id| self.load(id).ok()).collect())
    }

    /// Creates the container `id` from the bundle: validates everything first, then
    /// builds namespaces, cgroup and root filesystem and leaves init waiting for `start`.
    /// On any failure nothing is left behind.
    pub fn create(&self, id: &str, bundle: &Path, opts: &CreateOptions) -> Result<Container> {
        let dir = self.dir_of(id)?;
        let bundle = Bundle::load(bundle)?;
        let linux = bundle.spec.linux().clone().unwrap_or_default();
        let plan = Plan::from_spec(linux.namespaces().as_deref().unwrap_or_default())?;
        let process = bundle.spec.process().clone().unwrap_or_default();
        if process.terminal().unwrap_or(false) && opts.console_socket.is_none() {
            return Err(Error::NoConsoleSocket);
        }
        fs::create_dir_all(&self.root)
            .map_err(|e| Error::io(format!("create state root {}", self.root.display()), e))?;
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists(id.to_string()));
            }
            Err(e) => return Err(Error::io(format!("create {}", dir.display()), e)),
        }
        let cgroup_path =
            cgroups::path_for(linux.cgroups_path().as_deref(), id, self.systemd_cgroup);
        let mut state = State {
            oci_version: OCI_VERSION.to_string(),
            id: id.to_string(),
            pid: 0,
            status: Status::Creating,
            bundle: bundle.path.clone(),
            rootfs: bundle.rootfs.clone(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            owner: String::new(),
            annotations: bundle.spec.annotations().clone().unwrap_or_default(),
            internal: Internal {
                init_start_time: 0,
                cgroup_path: cgroup_path.clone(),
                own_pid_ns: plan.changes_pid_ns(),
                poststart: bundle
                    .spec
                    .hooks()
                    .as_ref()
                    .and_then(|h| h.poststart().clone())
                    .unwrap_or_default(),
                poststop: bundle
                    .spec
                    .hooks()
                    .as_ref()
                    .and_then(|h| h.poststop().clone())
                    .unwrap_or_default(),
            },
        };
        let mut c = Container {
            dir,
            state: state.clone(),
            cgroup_root: self.cgroup_root.clone(),
            cgroup: OnceCell::new(),
        };
        let result = (|| {
            state.save(&c.dir)?;
            c.build(&bundle, &plan, &process, &mut state, opts)
        })();
        match result {
            Ok(()) => {
                c.state = state;
                Ok(c)
            }
            Err(e) => {
                c.state = state;
                c.destroy();
                Err(e)
            }
        }
    }
}

impl Container {
    /// Container id.
    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// The saved state (status refreshed when loaded).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Current status.
    pub fn status(&self) -> Status {
        self.state.status
    }

    /// Host pid of the init process.
    pub fn pid(&self) -> Option<Pid> {
        (self.state.pid > 0).then(|| Pid::from_raw(self.state.pid))
    }

    fn cgroup(&self) -> Result<&Cgroup> {
        if let Some(cg) = self.cgroup.get() {
            return Ok(cg);
        }
        let cg = Cgroup::open(
            self.cgroup_root.as_deref(),
            &self.state.internal.cgroup_path,
        )?;
        Ok(self.cgroup.get_or_init(|| cg))
    }

    /// The spec's seccomp filter as BPF, from the runtime root's cache when the same
    /// profile was compiled before.
    fn compile_seccomp(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<Option<crate::seccomp::CompiledFilter>> {
        let Some(sc) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
            return Ok(None);
        };
        let cache = self
            .dir
            .parent()
            .unwrap_or(Path::new("/"))
            .join(".seccomp-cache");
        Ok(Some(crate::seccomp::compile_cached(sc, &cache)?))
    }

    fn save(&self) -> Result<()> {
        Ok(self.state.save(&self.dir)?)
    }

    fn fifo_path(&self) -> PathBuf {
        self.dir.join(EXEC_FIFO)
    }

    /// Re-reads the status from the kernel: a dead (or reused) init pid means stopped.
    fn refresh(&mut self) {
        if self.state.status == Status::Stopped || self.state.pid <= 0 {
            return;
        }
        if !self.init_alive() {
            self.state.status = Status::Stopped;
            return;
        }
        if self.state.status == Status::Creating {
            return;
        }
        self.state.status = if self.fifo_path().exists() {
            Status::Created
        } else if self.state.status == Status::Paused {
            Status::Paused
        } else {
            Status::Running
        };
    }

    fn init_alive(&self) -> bool {
        let Some(pid) = self.pid() else { return false };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let zombie = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next())
            .is_some_and(|s| s == "Z" || s == "X");
        if zombie {
            return false;
        }
        sys::process_start_time(pid).ok() == Some(self.state.internal.init_start_time)
    }

    fn build(
        &mut self,
        bundle: &Bundle,
        plan: &Plan,
        process: &Process,
        state: &mut State,
        opts: &CreateOptions,
    ) -> Result<()> {
        let fifo = self.fifo_path();
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o622))
            .map_err(|e| Error::sys(format!("mkfifo {}", fifo.display()), e))?;
        // the container process opens it for writing after it changed user (and maybe
        // user namespace): give it to that user, whatever our umask made of the mode
        fs::set_permissions(&fifo, std::os::unix::fs::PermissionsExt::from_mode(0o622))
            .map_err(|e| Error::io(format!("chmod {}", fifo.display()), e))?;
        let (uid, gid) = host_ids(&bundle.spec, process);
        nix::unistd::chown(&fifo, Some(uid), Some(gid))
            .map_err(|e| Error::sys(format!("chown {}", fifo.display()), e))?;
        let fifo_fd: OwnedFd = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(&fifo)
            .map_err(|e| Error::io(format!("open {}", fifo.display()), e))?
            .into();
        let console = match &opts.console_socket {
            Some(p) => Some(crate::console::connect(p)?),
            None => None,
        };
        let hook_state = state.hook_state();
        let id = state.id.clone();
        let seccomp = self.compile_seccomp(&bundle.spec)?;
        let launch = Launch {
            id: &id,
            spec: &bundle.spec,
            process,
            rootfs: &bundle.rootfs,
            bundle: &bundle.path,
            plan,
            role: Role::Init {
                fifo: &fifo_fd,
                no_pivot: opts.no_pivot,
                hook_state: &hook_state,
            },
            console: console.as_ref().map(|s| s.as_raw_fd()),
            preserve_fds: opts.preserve_fds,
            seccomp: seccomp.as_ref(),
        };
        let cgroup = self.cgroup()?;
        let resources = bundle
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().clone());
        let pid = spawn(
            &launch,
            cgroup,
            resources.as_ref(),
            &bundle.spec,
            |chan, pid| {
                state.pid = pid.as_raw();
                state.internal.init_start_time = sys::process_start_time(pid)
                    .map_err(|e| Error::io(format!("read start time of {pid}"), e))?;
                chan.expect(Message::RunCreateRuntimeHooks, "createRuntime request")?;
                state.save(&self.dir)?;
                let hs = state.hook_state();
                if let Some(h) = bundle.spec.hooks() {
                    hooks::run(
                        HookKind::Prestart,
                        h.prestart().as_deref().unwrap_or_default(),
                        &hs,
                    )?;
                    hooks::run(
                        HookKind::CreateRuntime,
                        h.create_runtime().as_deref().unwrap_or_default(),
                        &hs,
                    )?;
                }
                chan.send(&Message::Continue)?;
                chan.expect(Message::Ready, "ready")?;
                Ok(())
            },
        )?;
        drop(console);
        state.transition(Status::Created)?;
        state.save(&self.dir)?;
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid)?;
        }
        tracing::info!(id = %state.id, pid = pid.as_raw(), "container created");
        Ok(())
    }

    /// Runs the user program: unblocks init through the exec FIFO, then poststart hooks.
    pub fn start(&mut self) -> Result<()> {
        if self.state.status != Status::Created {
            return Err(Error::WrongStatus {
                id: self.state.id.clone(),
                status: self.state.status,
                op: "start",
            });
        }
        let pid = self
            .pid()
            .ok_or_else(|| Error::ExitedBeforeStart(self.state.id.clone()))?;
        let pidfd = sys::pidfd_open(pid).map_err(|e| Error::sys("pidfd_open", e))?;
        let fifo = self.fifo_path();
        let mut f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&fifo)
            .map_err(|e| Error::io(format!("open {}", fifo.display()), e))?;
        // wait for init's byte, or for init to die; then for the end of file that init's
        // execve makes (its writing end is close-on-exec), so that poststart runs after the
        // startContainer hooks and the exec of the user's program
        let mut got_byte = false;
        loop {
            let mut fds = [
                PollFd::new(f.as_fd(), PollFlags::POLLIN),
                PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("poll exec fifo", e)),
                Ok(_) => {}
            }
            let fifo_ready = fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP));
            let died = fds[1].revents().is_some_and(|r| !r.is_empty());
            if fifo_ready {
                let mut b = [0u8; 1];
                match f.read(&mut b) {
                    Ok(1) => got_byte = true,
                    // end of file: init exec'd (or died) after its byte
                    Ok(_) if got_byte => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(Error::io("read exec fifo", e)),
                }
            }
            if died {
                if got_byte {
                    // the program ran and ended already (`/bin/true`), or its exec failed,
                    // which init reported on its stderr
                    break;
                }
                return Err(Error::ExitedBeforeStart(self.state.id.clone()));
            }
        }
        fs::remove_file(&fifo).map_err(|e| Error::io(format!("remove {}", fifo.display()), e))?;
        self.state.transition(Status::Running)?;
        self.save()?;
        let poststart = self.state.internal.poststart.clone();
        if let Err(e) = hooks::run(HookKind::Poststart, &poststart, &self.state.hook_state()) {
            tracing::warn!(id = %self.state.id, error = %e, "poststart hook failed");
            return Err(e.into());
        }
        tracing::info!(id = %self.state.id, "container started");
        Ok(())
    }

    /// Sends signal number `signal` to init, or with `all` to every process of the
    /// container (numbers as [`crate::signal::parse`] gives them).
    pub fn kill(&mut self, signal: i32, all: bool) -> Result<()> {
        if self.state.status == Status::Stopped && !all {
            return Err(Error::WrongStatus {
                id: self.state.id.clone(),
                status: self.state.status,
                op: "signal it",
            });
        }
        let name = crate::signal::name(signal);
        if all {
            let cg = self.cgroup()?;
            for pid in cg.pids()? {
                // a process that is gone meanwhile needs no signal
                if let Ok(pidfd) = sys::pidfd_open(pid) {
                    let _ = sys::pidfd_send_signal(&pidfd, signal);
                }
            }
        } else if let Some(pid) = self.pid() {
            let pidfd = sys::pidfd_open(pid).map_err(|e| Error::sys("pidfd_open", e))?;
            sys::pidfd_send_signal(&pidfd, signal)
                .map_err(|e| Error::sys(format!("kill {pid} with {name}"), e))?;
        }
        if self.state.status == Status::Paused && signal == libc::SIGKILL {
            // frozen tasks only die once thawed
            self.cgroup()?.set_frozen(false)?;
        }
        Ok(())
    }

    /// Deletes the container: with `force` a live one is killed first; otherwise it must be
    /// stopped (or created, as runc allows). Removes cgroup and state, then runs poststop.
    pub fn delete(mut self, force: bool) -> Result<()> {
        // the status may have changed since this value was loaded (init exited)
        self.refresh();
        match self.state.status {
            Status::Stopped | Status::Creating => {}
            Status::Created => {
                self.kill_and_wait()?;
            }
            Status::Running | Status::Paused if force => {
                self.kill_and_wait()?;
            }
            status => {
                return Err(Error::NotStopped {
                    id: self.state.id.clone(),
                    status,
                });
            }
        }
        let poststop = std::mem::take(&mut self.state.internal.poststop);
        self.state.status = Status::Stopped;
        let hs = self.state.hook_state();
        self.destroy();
        if let Err(e) = hooks::run(HookKind::Poststop, &poststop, &hs) {
            tracing::warn!(error = %e, "poststop hook failed");
        }
        Ok(())
    }

    fn kill_and_wait(&mut self) -> Result<()> {
        let cg = self.cgroup()?;
        if self.state.status == Status::Paused {
            let _ = cg.set_frozen(false);
        }
        if let Some(pid) = self.pid() {
            if self.init_alive() {
                if let Ok(pidfd) = sys::pidfd_open(pid) {
                    let _ = sys::pidfd_send_signal(&pidfd, libc::SIGKILL);
                    wait_pidfd(&pidfd);
                }
            }
        }
        // without a pid namespace of its own, other processes survive init: kill them too
        for pid in cg.pids().unwrap_or_default() {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
        self.state.status = Status::Stopped;
        Ok(())
    }

    /// Removes everything the container owns on the host; best effort, never fails.
    fn destroy(&mut self) {
        if let Some(pid) = self.pid() {
            if self.init_alive() {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                // reap if it is our child; otherwise its parent does
                let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
            }
        }
        if let Ok(cg) = self.cgroup() {
            if let Err(e) = cg.remove() {
                tracing::warn!(id = %self.state.id, error = %e, "cgroup not removed");
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "state not removed");
            }
        }
    }

    /// Freezes every process of the container.
    pub fn pause(&mut self) -> Result<()> {
        if self.state.status != Status::Running {
            return Err(Error::WrongStatus {
                id: self.state.id.clone(),
                status: self.state.status,
                op: "pause",
            });
        }
        self.cgroup()?.set_frozen(true)?;
        self.state.transition(Status::Paused)?;
        self.save()
    }

    /// Thaws a paused container.
    pub fn resume(&mut self) -> Result<()> {
        if self.state.status != Status::Paused {
            return Err(Error::WrongStatus {
                id: self.state.id.clone(),
                status: self.state.status,
                op: "resume",
            });
        }
        self.cgroup()?.set_frozen(false)?;
        self.state.transition(Status::Running)?;
        self.save()
    }

    /// Changes resource limits of a live container.
    pub fn update(&self, resources: &LinuxResources) -> Result<()> {
        if self.state.status == Status::Stopped {
            return Err(Error::WrongStatus {
                id: self.state.id.clone(),
                status: self.state.status,
                op: "update",
            });
        }
        Ok(self.cgroup()?.apply(resources)?)
    }

    /// Resource usage from the cgroup.
    pub fn stats(&self) -> Result<libcgroups::stats::Stats> {
        Ok(self.cgroup()?.stats()?)
    }

    /// Host pids of every process in the container.
    pub fn processes(&self) -> Result<Vec<Pid>> {
        if self.state.status == Status::Stopped {
            return Ok(vec![]);
        }
        Ok(self.cgroup()?.pids()?)
    }

    /// Starts `process` inside the running container; returns its host pid. The process
    /// is a child of the caller, which may wait for it.
    pub fn exec(&self, process: &Process, opts: &ExecOptions) -> Result<Pid> {
        if !matches!(self.state.status, Status::Created | Status::Running) {
            return Err(Error::WrongStatus {
                id: self.state.id.clone(),
                status: self.state.status,
                op: "exec in it",
            });
        }
        spec::validate_process(process, "process").map_err(|(field, message)| {
            Error::Spec(spec::SpecError::Invalid {
                bundle: self.state.bundle.clone(),
                field,
                message,
            })
        })?;
        if process.terminal().unwrap_or(false) && opts.console_socket.is_none() {
            return Err(Error::NoConsoleSocket);
        }
        let init = self
            .pid()
            .ok_or_else(|| Error::NotFound(self.state.id.clone()))?;
        let plan = Plan::join_process(init)?;
        let bundle = Bundle::load(&self.state.bundle)?;
        let seccomp = self.compile_seccomp(&bundle.spec)?;
        let console = match &opts.console_socket {
            Some(p) => Some(crate::console::connect(p)?),
            None => None,
        };
        let launch = Launch {
            id: &self.state.id,
            spec: &bundle.spec,
            process,
            rootfs: &bundle.rootfs,
            bundle: &bundle.path,
            plan: &plan,
            role: Role::Exec,
            console: console.as_ref().map(|s| s.as_raw_fd()),
            preserve_fds: opts.preserve_fds,
            seccomp: seccomp.as_ref(),
        };
        let cgroup = self.cgroup()?;
        let pid = spawn(&launch, cgroup, None, &bundle.spec, |chan, _pid| {
            chan.expect(Message::Ready, "ready")?;
            // the channel closes on a successful execve (close-on-exec)
            chan.wait_closed()?;
            Ok(())
        })?;
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid)?;
        }
        Ok(pid)
    }
}

/// Forks the bootstrap process, places it in the cgroup, writes id maps when asked,
/// learns the container process's pid and hands over to `handshake` for the rest.
fn spawn(
    launch: &Launch<'_>,
    cgroup: &Cgroup,
    resources: Option<&LinuxResources>,
    spec: &oci_spec::runtime::Spec,
    handshake: impl FnOnce(&channel::Channel, Pid) -> Result<()>,
) -> Result<Pid> {
    let (parent, child) = channel::pair("container")?;
    let bootstrap = match sys::fork().map_err(|e| Error::sys("fork", e))? {
        sys::Forked::Child => {
            drop(parent);
            init::bootstrap(launch, &child)
        }
        sys::Forked::Parent(pid) => pid,
    };
    drop(child);
    let mut container_pid = None;
    let result = (|| {
        cgroup.add(bootstrap)?;
        if let Some(r) = resources {
            cgroup.apply(r)?;
        }
        parent.send(&Message::Continue)?;
        if launch.plan.new_user {
            parent.expect(Message::WriteIdMaps, "id map request")?;
            init::write_id_maps(bootstrap, spec)?;
            parent.send(&Message::Continue)?;
        }
        let pid = match parent.recv("container pid")? {
            Message::InitPid(p) => Pid::from_raw(p),
            got => {
                return Err(channel::ChannelError::Unexpected {
                    peer: "bootstrap",
                    got,
                    expected: "container pid",
                }
                .into());
            }
        };
        container_pid = Some(pid);
        let _ = waitpid(bootstrap, None);
        parent.send(&Message::Continue)?;
        handshake(&parent, pid)?;
        Ok(pid)
    })();
    if result.is_err() {
        let _ = nix::sys::signal::kill(bootstrap, Signal::SIGKILL);
        let _ = waitpid(bootstrap, None);
        if let Some(pid) = container_pid {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
    result
}

/// Blocks until the process behind `pidfd` has exited (and reaps it if it is our child).
fn wait_pidfd(pidfd: &OwnedFd) {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    while let Err(nix::errno::Errno::EINTR) = poll(&mut fds, PollTimeout::from(10_000u16)) {}
    // reap if it is our child (ECHILD otherwise, which is fine)
    let _ = nix::sys::wait::waitid(
        nix::sys::wait::Id::PIDFd(pidfd.as_fd()),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
    );
}

/// The host uid/gid the container process runs as: its user mapped through the spec's
/// uid/gid mappings (identity without a user namespace).
fn host_ids(
    spec: &oci_spec::runtime::Spec,
    process: &Process,
) -> (nix::unistd::Uid, nix::unistd::Gid) {
    let linux = spec.linux().clone().unwrap_or_default();
    let map = |id: u32, maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| match maps
        .as_deref()
        .filter(|m| !m.is_empty())
    {
        None => id,
        Some(maps) => maps
            .iter()
            .find(|m| id >= m.container_id() && id - m.container_id() < m.size())
            .map(|m| m.host_id() + (id - m.container_id()))
            .unwrap_or(id),
    };
    (
        nix::unistd::Uid::from_raw(map(process.user().uid(), linux.uid_mappings())),
        nix::unistd::Gid::from_raw(map(process.user().gid(), linux.gid_mappings())),
    )
}

/// Writes a pid file atomically (temp file + rename), as runc does.
fn write_pid_file(path: &Path, pid: Pid) -> Result<()> {
    let tmp = path.with_extension("tmp-skiff");
    fs::write(&tmp, pid.to_string())
        .and_then(|_| fs::rename(&tmp, path))
        .map_err(|e| Error::io(format!("write pid file {}", path.display()), e))
}

/// Waits for the child `pid` and returns its exit code the way a shell reports it
/// (128 + signal for a killed process).
pub fn wait_exit_code(pid: Pid) -> Result<i32> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys(format!("wait for {pid}"), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        for ok in ["a", "abc-1", "x_y.z+1", "A9"] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "../x", "é"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn missing_container_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(dir.path());
        assert!(matches!(rt.load("nope"), Err(Error::NotFound(_))));
        assert!(matches!(rt.load("../x"), Err(Error::InvalidId(_))));
        assert!(rt.list().unwrap().is_empty());
    }
}

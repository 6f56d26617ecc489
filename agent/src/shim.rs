//! The per-pod shim: the skiff binary re-executed as `skiff __shim --dir <pod run dir>`, in
//! its own process group, outliving the agent. It creates and starts the pod's containers
//! through skiff-runtime when the agent asks (so every container process is the shim's
//! child), owns their stdout/stderr and writes them as CRI logs, and records each run's pid,
//! start, finish and exit code in `<dir>/containers/<name>/<restart>.json`. The agent reads
//! those records, so a restarted agent adopts running pods without touching them.
//!
//! A container with `stdin: true` gets a pipe as its stdin whose writing end the shim keeps;
//! attach writes into it through `<dir>/containers/<name>/<restart>.stdin`, a socket whose
//! connections are all copied into the pipe at the same time (the first one's end closes the
//! pipe with `stdinOnce`; a `tty` container's terminal then gets its end-of-file character).
//! So stdin survives agent restarts like the rest of the container.
//!
//! Protocol: one JSON [`Request`] line per connection on `<dir>/shim.sock`, one JSON
//! [`Response`] line back.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::wait::{Id, WaitPidFlag, WaitStatus};
use serde::{Deserialize, Serialize};
use skiff_runtime::{CreateOptions, Runtime};

use crate::error::{Error, Result};
use crate::logs::{self, Stream};

/// The socket file in the pod's run dir.
pub const SOCKET: &str = "shim.sock";

/// What the agent asks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Request {
    /// Create and start a container from a prepared bundle.
    Start(StartRequest),
    /// Resize the terminal of a `tty` run.
    Resize(ResizeRequest),
    /// Exit (the pod is gone).
    Shutdown,
}

/// A new size for a run's terminal (an attach's resize).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResizeRequest {
    /// Container name in the pod.
    pub name: String,
    /// Restart number.
    pub restart: u32,
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// The pty masters of the running `tty` runs, by (container, restart).
type Terminals = Arc<Mutex<std::collections::HashMap<(String, u32), OwnedFd>>>;

/// One container run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StartRequest {
    /// Runtime container id.
    pub id: String,
    /// Container name in the pod.
    pub name: String,
    /// Restart number (0 for the first run).
    pub restart: u32,
    /// The OCI bundle.
    pub bundle: PathBuf,
    /// The CRI log file of this run.
    pub log: PathBuf,
    /// Image as the pod names it.
    pub image: String,
    /// Image id (`repo@sha256:…`).
    pub image_id: String,
    /// When to rotate the log (absent from older agents: the kubelet's defaults).
    #[serde(default)]
    pub log_policy: crate::logrotate::LogPolicy,
    /// The container's `stdin`: give it a pipe the agent can attach to.
    #[serde(default)]
    pub stdin: bool,
    /// The container's `stdinOnce`: close that pipe when the first attach ends.
    #[serde(default)]
    pub stdin_once: bool,
    /// The container's `tty` (the bundle's `process.terminal`): the shim takes the pty
    /// master through a console socket, logs what it reads as stdout and feeds stdin to it.
    #[serde(default)]
    pub tty: bool,
}

/// The shim's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Response {
    /// Started, with the container's host pid.
    Started {
        /// pid.
        pid: i32,
    },
    /// Done.
    Ok,
    /// Failed.
    Error {
        /// Why.
        message: String,
    },
}

/// The record of one container run, written by the shim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// Runtime container id.
    pub id: String,
    /// Restart number.
    pub restart: u32,
    /// Container process pid on the host.
    pub pid: i32,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it finished.
    pub finished_at: Option<String>,
    /// Exit code (128 + signal for a killed process).
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Image as the pod names it.
    pub image: String,
    /// Image id.
    pub image_id: String,
    /// Start failure, when the container could not be started at all.
    pub error: Option<String>,
    /// The kernel's OOM killer killed a process of the container's cgroup.
    #[serde(default)]
    pub oom_killed: bool,
    /// The run has a stdin to attach to ([`stdin_socket`]).
    #[serde(default)]
    pub stdin: bool,
    /// The container's termination message: filled in by the agent from the run's message
    /// file or log once it finished (`termination.rs`), never written by the shim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message: Option<String>,
}

/// Where a container's run records live.
pub fn records_dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("containers").join(name)
}

/// The socket that feeds a run's stdin (present while the run can still take input).
pub fn stdin_socket(pod_dir: &Path, name: &str, restart: u32) -> PathBuf {
    records_dir(pod_dir, name).join(format!("{restart}.stdin"))
}

/// Receives the pty master of a `tty` run: the runtime's create sends it on the console
/// socket at `path` (removed afterwards); gives up after `timeout`.
fn receive_console(listener: &UnixListener, path: &Path, timeout: Duration) -> Result<OwnedFd> {
    let err = |m: String| Error::io("receive the terminal on", path, std::io::Error::other(m));
    listener
        .set_nonblocking(true)
        .map_err(|e| err(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(err(e.to_string())),
        }
    };
    let _ = std::fs::remove_file(path);
    conn.set_nonblocking(false)
        .map_err(|e| err(e.to_string()))?;
    skiff_runtime::console::recv_fd(conn.as_raw_fd()).map_err(|e| err(e.to_string()))
}

fn record_path(pod_dir: &Path, name: &str, restart: u32) -> PathBuf {
    records_dir(pod_dir, name).join(format!("{restart}.json"))
}

/// Saves a record atomically (temp file, rename). No fsync: records live in the run dir (a
/// tmpfs on systemd machines) beside the processes they describe; a killed agent or shim
/// leaves the old or the new file, and after a power loss the containers are gone too.
pub fn save_record(pod_dir: &Path, name: &str, rec: &RunRecord) -> Result<()> {
    let path = record_path(pod_dir, name, rec.restart);
    let dir = records_dir(pod_dir, name);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    let tmp = path.with_extension("tmp");
    let data = serde_json::to_vec(rec).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(&data)
        .map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))
}

/// The latest run record of a container, if it ever ran.
pub fn latest_record(pod_dir: &Path, name: &str) -> Result<Option<RunRecord>> {
    let dir = records_dir(pod_dir, name);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &dir, e)),
    };
    let latest = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            n.strip_suffix(".json")?.parse::<u32>().ok()
        })
        .max();
    let Some(n) = latest else { return Ok(None) };
    read_record(&record_path(pod_dir, name, n)).map(Some)
}

/// A specific run's record.
pub fn record(pod_dir: &Path, name: &str, restart: u32) -> Result<Option<RunRecord>> {
    let p = record_path(pod_dir, name, restart);
    if !p.exists() {
        return Ok(None);
    }
    read_record(&p).map(Some)
}

fn read_record(path: &Path) -> Result<RunRecord> {
    let data = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    serde_json::from_slice(&data).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// The shim's command line arguments.
#[derive(Debug, Clone)]
pub struct ShimArgs {
    /// The pod's run dir.
    pub dir: PathBuf,
    /// The runtime state root.
    pub runtime_root: PathBuf,
    /// Where the cgroup hierarchies are mounted.
    pub cgroup_root: PathBuf,
}

fn sys(what: &str) -> impl FnOnce(nix::Error) -> Error + '_ {
    move |source| Error::Sys {
        what: what.to_string(),
        source,
    }
}

/// Runs the shim until it is told to shut down. Call from a single-threaded process
/// (the runtime forks) right after `ensure_sealed_exe`.
pub fn serve(args: &ShimArgs) -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(sys("set child subreaper"))?;
    let sock = args.dir.join(SOCKET);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).map_err(|e| Error::io("listen on", &sock, e))?;
    let pid_file = args.dir.join("shim.pid");
    std::fs::write(&pid_file, std::process::id().to_string())
        .map_err(|e| Error::io("write", &pid_file, e))?;
    let rt = Runtime::new(&args.runtime_root).with_cgroup_root(&args.cgroup_root);
    let terminals = Terminals::default();
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            continue;
        }
        let (resp, stop) = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Resize(r)) => (resize(&terminals, &r), false),
            Ok(Request::Start(s)) => match start(&rt, args, &terminals, &s) {
                Ok(pid) => (Response::Started { pid }, false),
                Err(e) => {
                    let message = error_chain(&e);
                    tracing::warn!(container = %s.id, error = %message, "cannot start container");
                    (Response::Error { message }, false)
                }
            },
            Ok(Request::Shutdown) => (Response::Ok, true),
            Err(e) => (
                Response::Error {
                    message: format!("invalid request: {e}"),
                },
                false,
            ),
        };
        if let Ok(mut out) = serde_json::to_vec(&resp) {
            out.push(b'\n');
            let _ = conn.write_all(&out);
        }
        if stop {
            break;
        }
    }
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&pid_file);
    Ok(())
}

/// The whole chain of an error, `a: b: c`.
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

/// Redirects fds 0 (when `input` is given; the shim's own stdin is /dev/null), 1 and 2 to
/// the given pipes while `f` runs (the runtime's children inherit them), then restores them.
fn with_stdio<T>(
    input: Option<&OwnedFd>,
    out: &OwnedFd,
    err: &OwnedFd,
    f: impl FnOnce() -> T,
) -> Result<T> {
    let fds: Vec<(i32, &OwnedFd)> = input
        .map(|i| (0, i))
        .into_iter()
        .chain([(1, out), (2, err)])
        .collect();
    let mut kept = Vec::new();
    for (fd, to) in &fds {
        let keep = nix::fcntl::fcntl(*fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
            .map_err(sys("dup stdio"))?;
        kept.push((*fd, keep));
        nix::unistd::dup2(to.as_raw_fd(), *fd).map_err(sys("dup2 stdio"))?;
    }
    let r = f();
    for (fd, keep) in kept {
        nix::unistd::dup2(keep, fd).map_err(sys("restore stdio"))?;
        let _ = nix::unistd::close(keep);
    }
    Ok(r)
}

/// The container's stdin as attach clients share it: the writing end of its pipe or its
/// terminal; `None` once closed (`stdinOnce`).
type StdinSink = Arc<Mutex<Option<std::fs::File>>>;

/// Copies every connection on `listener` into the container's stdin, all at the same time
/// (each client's input arrives whole chunk by chunk, as it reads), until the run ended
/// (`ended`, then a connection wakes the accept). With `once`, the first client's end
/// closes stdin for good: the pipe is closed, or a terminal gets its end-of-file character,
/// and the socket goes away.
fn serve_stdin(
    listener: UnixListener,
    path: PathBuf,
    input: OwnedFd,
    tty: bool,
    once: bool,
    ended: Arc<std::sync::atomic::AtomicBool>,
) {
    let sink: StdinSink = Arc::new(Mutex::new(Some(std::fs::File::from(input))));
    for conn in listener.incoming() {
        let closed = sink.lock().unwrap_or_else(|e| e.into_inner()).is_none();
        if ended.load(std::sync::atomic::Ordering::SeqCst) || closed {
            break;
        }
        let Ok(conn) = conn else { continue };
        let (sink, path) = (sink.clone(), path.clone());
        std::thread::spawn(move || {
            feed_stdin(conn, &sink);
            if once {
                let taken = sink.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(f) = taken
                    && tty
                {
                    send_terminal_eof(&f);
                }
                // wake the accept loop, which sees stdin closed
                let _ = UnixStream::connect(&path);
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

/// Copies one client into the shared stdin until its end of file, or until the container
/// stopped reading for good or stdin was closed.
fn feed_stdin(mut conn: UnixStream, sink: &StdinSink) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = sink.as_mut() else { return };
        if f.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// A terminal has no end of file to close: a reader in canonical mode (a shell, `cat`)
/// sees one when the line discipline gets its VEOF character (^D) on an empty line, which
/// is what closing stdin means there. In raw mode there is nothing to send.
fn send_terminal_eof(master: &std::fs::File) {
    let Ok(t) = nix::sys::termios::tcgetattr(master) else {
        return;
    };
    if t.local_flags
        .contains(nix::sys::termios::LocalFlags::ICANON)
    {
        let eof = t.control_chars[nix::sys::termios::SpecialCharacterIndices::VEOF as usize];
        let mut m = master;
        let _ = m.write_all(&[eof]);
    }
}

/// How many times the OOM killer struck in a cgroup (v1 `memory.oom_control`, v2
/// `memory.events`).
pub fn oom_kills(cgroup_root: &Path, cgroup: &Path) -> u64 {
    let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
    let files = [
        cgroup_root
            .join("memory")
            .join(rel)
            .join("memory.oom_control"),
        cgroup_root.join(rel).join("memory.events"),
    ];
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse().ok())
        })
        .max()
        .unwrap_or(0)
}

/// Sets the size of a running `tty` run's terminal.
fn resize(terminals: &Terminals, r: &ResizeRequest) -> Response {
    let terminals = terminals.lock().unwrap_or_else(|e| e.into_inner());
    let Some(master) = terminals.get(&(r.name.clone(), r.restart)) else {
        return Response::Error {
            message: format!("container {} (run {}) has no terminal", r.name, r.restart),
        };
    };
    match skiff_runtime::sys::set_winsize(master.as_raw_fd(), r.height, r.width) {
        Ok(()) => Response::Ok,
        Err(e) => Response::Error {
            message: format!("cannot resize the terminal: {e}"),
        },
    }
}

fn start(rt: &Runtime, args: &ShimArgs, terminals: &Terminals, s: &StartRequest) -> Result<i32> {
    let (pod_dir, cgroup_root) = (args.dir.as_path(), args.cgroup_root.as_path());
    if let Some(parent) = s.log.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    let log = crate::logrotate::RotatingLog::open(&s.log, s.log_policy)
        .map_err(|e| Error::io("open", &s.log, e))?;
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    // a terminal replaces the pipes in the container: stdin then goes to the pty master
    let stdin = match s.stdin && !s.tty {
        true => Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?),
        false => None,
    };
    let console_path = records_dir(pod_dir, &s.name).join(format!("{}.console", s.restart));
    let console = match s.tty {
        true => {
            std::fs::create_dir_all(records_dir(pod_dir, &s.name))
                .map_err(|e| Error::io("create", &console_path, e))?;
            let _ = std::fs::remove_file(&console_path);
            Some(
                UnixListener::bind(&console_path)
                    .map_err(|e| Error::io("listen on", &console_path, e))?,
            )
        }
        false => None,
    };
    let opts = CreateOptions {
        console_socket: console.as_ref().map(|_| console_path.clone()),
        ..CreateOptions::default()
    };
    let input = stdin.as_ref().map(|(r, _)| r);
    let created = with_stdio(input, &out_w, &err_w, || -> Result<(i32, PathBuf)> {
        let mut c = rt
            .create(&s.id, &s.bundle, &opts)
            .map_err(|source| Error::runtime(s.id.clone(), source))?;
        let pid = c.pid().map(|p| p.as_raw()).unwrap_or(0);
        let cgroup = c.state().internal.cgroup_path.clone();
        c.start()
            .map_err(|source| Error::runtime(s.id.clone(), source))?;
        Ok((pid, cgroup))
    })?;
    drop(out_w);
    drop(err_w);
    let stdin = stdin.map(|(r, w)| {
        drop(r);
        w
    });
    let master = match (&console, &created) {
        (Some(l), Ok(_)) => Some(receive_console(l, &console_path, Duration::from_secs(10))),
        _ => None,
    };
    drop(console);
    let _ = std::fs::remove_file(&console_path);
    let started_at = now();
    let (master, created) = match master {
        Some(Err(e)) => (None, Err(e)),
        Some(Ok(m)) => (Some(m), created),
        None => (None, created),
    };
    let (pid, cgroup) = match created {
        Ok(c) => c,
        Err(e) => {
            let rec = RunRecord {
                id: s.id.clone(),
                restart: s.restart,
                started_at: started_at.clone(),
                finished_at: Some(started_at),
                exit_code: Some(128),
                image: s.image.clone(),
                image_id: s.image_id.clone(),
                error: Some(error_chain(&e)),
                ..Default::default()
            };
            save_record(pod_dir, &s.name, &rec)?;
            return Err(e);
        }
    };
    let pidfd = skiff_runtime::sys::pidfd_open(nix::unistd::Pid::from_raw(pid))
        .map_err(sys("pidfd_open"))?;
    let mut rec = RunRecord {
        id: s.id.clone(),
        restart: s.restart,
        pid,
        started_at,
        image: s.image.clone(),
        image_id: s.image_id.clone(),
        ..Default::default()
    };
    let stdin = match (&master, s.stdin) {
        (Some(m), true) => Some(
            m.try_clone()
                .map_err(|e| Error::io("dup", &console_path, e))?,
        ),
        _ => stdin,
    };
    rec.stdin = stdin.is_some();
    let key = (s.name.clone(), s.restart);
    if let Some(m) = &master {
        let m = m
            .try_clone()
            .map_err(|e| Error::io("dup", &console_path, e))?;
        let mut t = terminals.lock().unwrap_or_else(|e| e.into_inner());
        t.insert(key.clone(), m);
    }
    let terminals = terminals.clone();
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stdin_sock = stdin_socket(pod_dir, &s.name, s.restart);
    if let Some(input) = stdin {
        let _ = std::fs::create_dir_all(records_dir(pod_dir, &s.name));
        let _ = std::fs::remove_file(&stdin_sock);
        match UnixListener::bind(&stdin_sock) {
            Ok(listener) => {
                let (path, once, ended) = (stdin_sock.clone(), s.stdin_once, ended.clone());
                let tty = master.is_some();
                std::thread::spawn(move || serve_stdin(listener, path, input, tty, once, ended));
            }
            Err(e) => {
                tracing::warn!(container = %s.id, error = %e, "cannot serve stdin: attach gets none");
                rec.stdin = false;
            }
        }
    }
    save_record(pod_dir, &s.name, &rec)?;
    let log = Arc::new(Mutex::new(log));
    // a terminal's output is the container's stdout (EIO once the container is gone)
    let copiers: Vec<_> = [(out_r, Stream::Stdout), (err_r, Stream::Stderr)]
        .into_iter()
        .chain(master.map(|m| (m, Stream::Stdout)))
        .map(|(fd, stream)| {
            let log = log.clone();
            std::thread::spawn(move || {
                let _ = logs::copy(std::fs::File::from(fd), stream, &log);
            })
        })
        .collect();
    let pod_dir = pod_dir.to_path_buf();
    let name = s.name.clone();
    let cgroup_root = cgroup_root.to_path_buf();
    let ooms_before = oom_kills(&cgroup_root, &cgroup);
    std::thread::spawn(move || {
        let (code, signal) = wait_exit(&pidfd);
        terminals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        // wake the stdin server, if it still listens, to close the pipe and the socket
        ended.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = UnixStream::connect(&stdin_sock);
        rec.oom_killed = code != 0 && oom_kills(&cgroup_root, &cgroup) > ooms_before;
        for c in copiers {
            let _ = c.join();
        }
        rec.finished_at = Some(now());
        rec.exit_code = Some(code);
        rec.signal = signal;
        if let Err(e) = save_record(&pod_dir, &name, &rec) {
            tracing::warn!(container = %rec.id, error = %e, "cannot record the exit");
        }
    });
    Ok(pid)
}

/// Waits for the child behind `pidfd` and returns (exit code, killing signal).
fn wait_exit(pidfd: &OwnedFd) -> (i32, Option<i32>) {
    loop {
        match nix::sys::wait::waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED) {
            Ok(WaitStatus::Exited(_, code)) => return (code, None),
            Ok(WaitStatus::Signaled(_, sig, _)) => return (128 + sig as i32, Some(sig as i32)),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(_) => return (255, None),
        }
    }
}

/// Sends one request to a pod's shim and returns its answer.
pub fn call(pod_dir: &Path, req: &Request, timeout: Duration) -> Result<Response> {
    let uid = pod_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let err = |message: String| Error::Shim {
        uid: uid.clone(),
        message,
    };
    let sock = pod_dir.join(SOCKET);
    let mut conn = UnixStream::connect(&sock).map_err(|e| err(format!("connect: {e}")))?;
    conn.set_read_timeout(Some(timeout))
        .map_err(|e| err(e.to_string()))?;
    let mut data = serde_json::to_vec(req).map_err(|e| err(e.to_string()))?;
    data.push(b'\n');
    conn.write_all(&data)
        .map_err(|e| err(format!("send: {e}")))?;
    let mut line = String::new();
    BufReader::new(&conn)
        .read_line(&mut line)
        .map_err(|e| err(format!("receive: {e}")))?;
    serde_json::from_str(&line).map_err(|e| err(format!("invalid answer {line:?}: {e}")))
}

/// Whether the pod's shim is alive (its socket answers a connect).
pub fn alive(pod_dir: &Path) -> bool {
    UnixStream::connect(pod_dir.join(SOCKET)).is_ok()
}

/// Starts the pod's shim (`<exe> __shim`) in its own process group with stdio on
/// `<dir>/shim.log`, and waits until its socket answers. The child is reaped by a tokio task.
pub async fn spawn(
    exe: &Path,
    pod_dir: &Path,
    runtime_root: &Path,
    cgroup_root: &Path,
) -> Result<()> {
    std::fs::create_dir_all(pod_dir).map_err(|e| Error::io("create", pod_dir, e))?;
    let log_path = pod_dir.join("shim.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io("open", &log_path, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| Error::io("dup", &log_path, e))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("__shim")
        .arg("--dir")
        .arg(pod_dir)
        .arg("--runtime-root")
        .arg(runtime_root)
        .arg("--cgroup-root")
        .arg(cgroup_root)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .kill_on_drop(false);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("start the shim", exe, e))?;
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !alive(pod_dir) {
        if Instant::now() > deadline {
            return Err(Error::Shim {
                uid: pod_dir.display().to_string(),
                message: format!(
                    "did not come up; its log: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_and_latest() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(latest_record(dir.path(), "c").unwrap(), None);
        for restart in [0, 1, 2, 10] {
            let rec = RunRecord {
                id: "x".into(),
                restart,
                pid: 100 + restart as i32,
                ..Default::default()
            };
            save_record(dir.path(), "c", &rec).unwrap();
        }
        let latest = latest_record(dir.path(), "c").unwrap().unwrap();
        assert_eq!((latest.restart, latest.pid), (10, 110));
        assert_eq!(record(dir.path(), "c", 1).unwrap().unwrap().pid, 101);
        assert_eq!(record(dir.path(), "c", 3).unwrap(), None);
    }

    #[test]
    fn oom_counts_v1_and_v2() {
        let root = tempfile::tempdir().unwrap();
        let cg = Path::new("/p/podu/c");
        assert_eq!(oom_kills(root.path(), cg), 0);
        let v1 = root.path().join("memory/p/podu/c");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(
            v1.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(oom_kills(root.path(), cg), 2);
        let v2 = root.path().join("p/podu/c");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(
            v2.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 3\noom_kill 3\n",
        )
        .unwrap();
        assert_eq!(oom_kills(root.path(), cg), 3);
    }

    #[test]
    fn protocol_is_json_lines() {
        let r = Request::Start(StartRequest {
            id: "u-c".into(),
            name: "c".into(),
            restart: 2,
            bundle: "/b".into(),
            log: "/l/2.log".into(),
            image: "busybox".into(),
            image_id: "busybox@sha256:00".into(),
            log_policy: crate::logrotate::LogPolicy::default(),
            stdin: true,
            stdin_once: false,
            tty: false,
        });
        let s = serde_json::to_string(&r).unwrap();
        assert!(!s.contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
    }
}

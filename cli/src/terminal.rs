//! Terminal and signal plumbing shared by `skiff runtime run/exec` and `skiff run`: our own
//! console socket when the caller gave none, copying between the pty and our stdio, and
//! waiting for a container process while forwarding signals to it.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use skiff_runtime::container::wait_exit_code;

/// A console socket of our own, for `run -t`/`exec -t` without --console-socket: the
/// pty master comes back to us and we copy between it and our stdio.
pub struct OwnConsole {
    _dir: tempdir_lite::TempDir,
    listener: std::os::unix::net::UnixListener,
    /// Where the socket listens.
    pub path: PathBuf,
}

mod tempdir_lite {
    //! A private directory removed on drop (for our own console socket).
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(parent: &Path) -> std::io::Result<TempDir> {
            std::fs::create_dir_all(parent)?;
            let p = parent.join(format!(".console-{}", std::process::id()));
            std::fs::create_dir(&p)?;
            Ok(TempDir(p))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl OwnConsole {
    /// A listening socket in a private directory under `root`.
    pub fn new(root: &Path) -> Result<OwnConsole> {
        let dir = tempdir_lite::TempDir::new(root).context("cannot create console socket dir")?;
        let path = dir.path().join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .with_context(|| format!("cannot bind {}", path.display()))?;
        Ok(OwnConsole {
            _dir: dir,
            listener,
            path,
        })
    }

    /// Receives the pty master and copies between it and our stdio in threads.
    pub fn attach(self) -> Result<()> {
        let (sock, _) = self.listener.accept().context("console socket accept")?;
        let master = skiff_runtime::console::recv_fd(sock.as_raw_fd())?;
        proxy_terminal(master)
    }
}

/// The size (rows, columns) of the terminal on our stdin: none without a terminal or when
/// it has no size.
pub fn caller_size() -> Option<(u16, u16)> {
    if !nix::unistd::isatty(0).unwrap_or(false) {
        return None;
    }
    match skiff_runtime::sys::get_winsize(0) {
        Ok((rows, cols)) if rows > 0 && cols > 0 => Some((rows, cols)),
        _ => None,
    }
}

fn proxy_terminal(master: OwnedFd) -> Result<()> {
    use std::io::Read;
    let stdin_tty = nix::unistd::isatty(0).unwrap_or(false);
    if stdin_tty {
        if let Some((rows, cols)) = caller_size() {
            let _ = skiff_runtime::sys::set_winsize(master.as_raw_fd(), rows, cols);
        }
        let mut t = nix::sys::termios::tcgetattr(std::io::stdin().as_fd())?;
        let saved = t.clone();
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(
            std::io::stdin().as_fd(),
            nix::sys::termios::SetArg::TCSANOW,
            &t,
        )?;
        RESTORE.with(|r| *r.borrow_mut() = Some(saved));
    }
    let mut out = std::fs::File::from(master.try_clone()?);
    let mut input = std::fs::File::from(master);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut input);
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut stdout = std::io::stdout();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                break;
            }
            let _ = stdout.flush();
        }
    });
    Ok(())
}

thread_local! {
    static RESTORE: std::cell::RefCell<Option<nix::sys::termios::Termios>> =
        const { std::cell::RefCell::new(None) };
}

/// Puts the caller's terminal back the way it was.
pub fn restore_terminal() {
    RESTORE.with(|r| {
        if let Some(t) = r.borrow_mut().take() {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                &t,
            );
        }
    });
}

/// Signals forwarded to the container by a foreground `run`/`exec`, as runc does.
pub fn forwarded_signals() -> SigSet {
    let mut set = SigSet::all();
    for s in [
        Signal::SIGKILL,
        Signal::SIGSTOP,
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGILL,
        Signal::SIGFPE,
        Signal::SIGABRT,
        Signal::SIGTRAP,
        Signal::SIGSYS,
    ] {
        set.remove(s);
    }
    set
}

/// Waits for `pid` while forwarding every signal we receive to it. SIGCHLD is blocked
/// before the container is forked, so its exit can never be missed.
pub fn wait_forwarding(pid: Pid, set: &SigSet) -> Result<i32> {
    loop {
        // reap first: the child may have exited before we got here
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return Ok(code),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => return Ok(128 + sig as i32),
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => continue, // another child (reaped), look again
            Err(nix::errno::Errno::ECHILD) => return wait_exit_code(pid).map_err(Into::into),
            Err(e) => return Err(e.into()),
        }
        let sig = set.wait()?;
        if sig != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(pid, sig);
        }
    }
}

//! `--console-socket`: the runtime connects to a unix socket the caller listens on and
//! sends the master end of the container's pseudo-terminal as `SCM_RIGHTS` ancillary data.
//! [`ConsoleSocket`] is that listener; [`Pty`] talks to the received master.

use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use tempfile::TempDir;

use crate::sys::own_received_fd;
use crate::wait::poll_until;

/// A listening unix socket in its own temporary directory.
#[derive(Debug)]
pub struct ConsoleSocket {
    _dir: TempDir,
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Listens on `console.sock` in a new temporary directory.
    pub fn bind() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("skiff-console-")
            .tempdir()?;
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        listener.set_nonblocking(true)?;
        Ok(ConsoleSocket {
            _dir: dir,
            path,
            listener,
        })
    }

    /// The socket path (the `--console-socket` argument).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the runtime to connect and send the pty master.
    pub fn receive_master(&self, timeout: Duration) -> Result<Pty> {
        let stream = poll_until(
            timeout,
            "the runtime to connect to the console socket",
            || self.listener.accept().ok().map(|(s, _)| s),
        )?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut data = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut data)];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .context("cannot receive from the console socket")?;
        let mut received: Option<OwnedFd> = None;
        for message in msg.cmsgs().context("malformed control message")? {
            if let ControlMessageOwned::ScmRights(fds) = message {
                for fd in fds {
                    let owned = own_received_fd(fd);
                    if received.is_none() {
                        received = Some(owned);
                    }
                }
            }
        }
        match received {
            Some(fd) => Ok(Pty {
                file: File::from(fd),
            }),
            None => {
                bail!("the runtime connected to the console socket but sent no file descriptor")
            }
        }
    }
}

/// The master end of a container's pseudo-terminal.
#[derive(Debug)]
pub struct Pty {
    file: File,
}

impl Pty {
    /// Types `text` into the terminal.
    pub fn send(&mut self, text: &str) -> Result<()> {
        self.file
            .write_all(text.as_bytes())
            .context("cannot write to the pty master")
    }

    /// Reads terminal output until `needle` has appeared `count` times; returns all that
    /// was read.
    pub fn read_until(&mut self, needle: &str, count: usize, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let text = String::from_utf8_lossy(&seen).into_owned();
            if text.matches(needle).count() >= count {
                return Ok(text);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("timed out waiting for {needle:?} ×{count} on the terminal; got {text:?}");
            }
            let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(millis))? == 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match self.file.read(&mut buf) {
                Ok(0) => bail!("the terminal closed before {needle:?} ×{count}; got {text:?}"),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                // EIO: every slave end is closed, the container's shell has gone.
                Err(e) => {
                    bail!("the terminal failed ({e}) before {needle:?} ×{count}; got {text:?}")
                }
            }
        }
    }
}

//! Terminals: a pseudo-terminal created inside the container, whose master end is handed
//! to the caller over a unix socket (`--console-socket`), as runc does.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::pty::{PtyMaster, grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr, recvmsg, sendmsg};

use crate::sys;

/// Errors of terminal handling.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The console socket could not be reached.
    #[error("cannot connect to console socket {path}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A pty or fd-passing step failed.
    #[error("console: {what} failed")]
    Sys {
        /// The step.
        what: &'static str,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// No file descriptor came with the message.
    #[error("console: no file descriptor received")]
    NoFd,
}

fn sys_err(what: &'static str) -> impl FnOnce(nix::Error) -> ConsoleError {
    move |source| ConsoleError::Sys { what, source }
}

/// Connects to the caller's console socket (done by the runtime before the container starts,
/// so the path resolves on the host).
pub fn connect(path: &Path) -> Result<std::os::unix::net::UnixStream, ConsoleError> {
    std::os::unix::net::UnixStream::connect(path).map_err(|source| ConsoleError::Connect {
        path: path.to_path_buf(),
        source,
    })
}

/// A new pty from the current `/dev/ptmx` (inside the container once pivoted):
/// returns the master and the opened slave.
pub fn open_pty() -> Result<(PtyMaster, OwnedFd), ConsoleError> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(sys_err("posix_openpt"))?;
    grantpt(&master).map_err(sys_err("grantpt"))?;
    unlockpt(&master).map_err(sys_err("unlockpt"))?;
    let name = ptsname_r(&master).map_err(sys_err("ptsname"))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(sys_err("open pty slave"))?;
    let slave = sys::owned_fd(slave);
    Ok((master, slave))
}

/// Makes `slave` the controlling terminal and stdin/stdout/stderr of this process.
/// The process must be a session leader (setsid) already.
pub fn make_stdio(slave: &OwnedFd, size: Option<(u16, u16)>) -> Result<(), ConsoleError> {
    if let Some((rows, cols)) = size {
        sys::set_winsize(slave.as_raw_fd(), rows, cols).map_err(sys_err("set window size"))?;
    }
    sys::set_controlling_terminal(slave.as_raw_fd()).map_err(sys_err("TIOCSCTTY"))?;
    for target in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), target).map_err(sys_err("dup2 pty slave"))?;
    }
    Ok(())
}

/// Sends `fd` over the unix socket `sock` with `name` as the payload (runc sends the pty
/// name the same way).
pub fn send_fd(sock: RawFd, fd: RawFd, name: &str) -> Result<(), ConsoleError> {
    let fds = [fd];
    let iov = [IoSlice::new(name.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<UnixAddr>(sock, &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(sys_err("send console fd"))?;
    Ok(())
}

/// Receives one fd sent with [`send_fd`].
pub fn recv_fd(sock: RawFd) -> Result<OwnedFd, ConsoleError> {
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<UnixAddr>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(sys_err("receive console fd"))?;
    for c in msg.cmsgs().map_err(sys_err("read control message"))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                return Ok(sys::owned_fd(*fd));
            }
        }
    }
    Err(ConsoleError::NoFd)
}

/// Hands the master end to the caller's console socket and closes our copy.
pub fn hand_over(sock: RawFd, master: PtyMaster) -> Result<(), ConsoleError> {
    send_fd(sock, master.as_raw_fd(), "/dev/ptmx")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_passing_round_trip() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        send_fd(a.as_raw_fd(), file.as_raw_fd(), "x").unwrap();
        let got = recv_fd(b.as_raw_fd()).unwrap();
        let s1 = nix::sys::stat::fstat(file.as_raw_fd()).unwrap();
        let s2 = nix::sys::stat::fstat(got.as_raw_fd()).unwrap();
        assert_eq!((s1.st_dev, s1.st_ino), (s2.st_dev, s2.st_ino));
    }
}

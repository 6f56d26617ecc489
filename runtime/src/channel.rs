//! The typed protocol between the runtime and the processes it starts.
//!
//! One `SOCK_SEQPACKET` socket pair; each datagram is one JSON-encoded [`Message`], so
//! message boundaries are kept by the kernel and a peer that dies shows up as end-of-file
//! instead of a hang.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
use serde::{Deserialize, Serialize};

/// One step of the start-up handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Bootstrap → runtime: I created a user namespace, write my uid/gid maps.
    WriteIdMaps,
    /// Bootstrap → runtime: the init process has this host pid.
    InitPid(i32),
    /// Init → runtime: namespaces and mounts exist; run prestart and createRuntime hooks.
    RunCreateRuntimeHooks,
    /// Init → runtime: set up done, waiting on the exec FIFO (or about to exec for `exec`).
    Ready,
    /// Runtime → child: go on with the next step.
    Continue,
    /// Either side: the step failed; the text is the whole error chain.
    Failed(String),
}

/// Errors of the channel itself.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// socketpair/send/recv failed.
    #[error("channel {op} failed")]
    Sys {
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The peer closed its end (it exited or exec'd) while a message was expected.
    #[error("the {peer} process exited before sending {expected}")]
    Closed {
        /// Which process.
        peer: &'static str,
        /// The message that was expected.
        expected: &'static str,
    },
    /// The peer reported a failure.
    #[error("{peer} process: {message}")]
    Peer {
        /// Which process.
        peer: &'static str,
        /// Its error chain.
        message: String,
    },
    /// A message came that this step does not expect.
    #[error("unexpected message from the {peer} process: {got:?} (expected {expected})")]
    Unexpected {
        /// Which process.
        peer: &'static str,
        /// What came.
        got: Message,
        /// What was expected.
        expected: &'static str,
    },
    /// A datagram was not a valid message.
    #[error("malformed message")]
    Malformed(#[source] serde_json::Error),
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
    peer: &'static str,
}

/// A connected pair: (runtime end, child end). Both are close-on-exec.
pub fn pair(peer: &'static str) -> Result<(Channel, Channel), ChannelError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|source| ChannelError::Sys {
        op: "socketpair",
        source,
    })?;
    Ok((
        Channel { fd: a, peer },
        Channel {
            fd: b,
            peer: "runtime",
        },
    ))
}

impl Channel {
    /// Sends one message.
    pub fn send(&self, msg: &Message) -> Result<(), ChannelError> {
        let data = serde_json::to_vec(msg).map_err(ChannelError::Malformed)?;
        send(self.fd.as_raw_fd(), &data, MsgFlags::MSG_NOSIGNAL)
            .map_err(|source| ChannelError::Sys { op: "send", source })?;
        Ok(())
    }

    /// Receives one message; `expected` names it for error text.
    pub fn recv(&self, expected: &'static str) -> Result<Message, ChannelError> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r,
            }
        }
        .map_err(|source| ChannelError::Sys { op: "recv", source })?;
        if n == 0 {
            return Err(ChannelError::Closed {
                peer: self.peer,
                expected,
            });
        }
        let msg: Message = serde_json::from_slice(&buf[..n]).map_err(ChannelError::Malformed)?;
        if let Message::Failed(message) = msg {
            return Err(ChannelError::Peer {
                peer: self.peer,
                message,
            });
        }
        Ok(msg)
    }

    /// Receives a message and checks it is `want`.
    pub fn expect(&self, want: Message, name: &'static str) -> Result<(), ChannelError> {
        let got = self.recv(name)?;
        if got == want {
            Ok(())
        } else {
            Err(ChannelError::Unexpected {
                peer: self.peer,
                got,
                expected: name,
            })
        }
    }

    /// Waits until the peer closes its end (it exec'd or exited), failing if it sends
    /// anything else than nothing or an error.
    pub fn wait_closed(&self) -> Result<(), ChannelError> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())
            .map_err(|source| ChannelError::Sys { op: "recv", source })?;
        if n == 0 {
            return Ok(());
        }
        let msg: Message = serde_json::from_slice(&buf[..n]).map_err(ChannelError::Malformed)?;
        match msg {
            Message::Failed(message) => Err(ChannelError::Peer {
                peer: self.peer,
                message,
            }),
            got => Err(ChannelError::Unexpected {
                peer: self.peer,
                got,
                expected: "exec",
            }),
        }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let (a, b) = pair("init").unwrap();
        b.send(&Message::InitPid(7)).unwrap();
        assert_eq!(a.recv("pid").unwrap(), Message::InitPid(7));
        b.send(&Message::Failed("boom".into())).unwrap();
        assert_eq!(a.recv("x").unwrap_err().to_string(), "init process: boom");
        b.send(&Message::Ready).unwrap();
        assert!(matches!(
            a.expect(Message::Continue, "continue"),
            Err(ChannelError::Unexpected { .. })
        ));
        drop(b);
        assert_eq!(
            a.recv("ready").unwrap_err().to_string(),
            "the init process exited before sending ready"
        );
    }
}

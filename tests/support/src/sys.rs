//! The crate's only unsafe code.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Takes ownership of a descriptor that the kernel just installed in this process through
/// an `SCM_RIGHTS` control message.
pub(crate) fn own_received_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` comes straight from a `ScmRights` control message of a `recvmsg` call
    // that succeeded: the kernel installed it in this process's table for us, nothing else
    // refers to it, so it is open and owning it here closes it exactly once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

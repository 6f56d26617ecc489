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

/// The id of the mount through which `path` is reached (`statx` with `STATX_MNT_ID`; for
/// `/proc/<pid>/exe`, the mount the process's executable was opened through).
pub fn mount_id(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `c` is a NUL-terminated path that outlives the call, and `stx` points to a
    // writable `struct statx` the kernel fills in; nothing else refers to it.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            0,
            libc::STATX_MNT_ID,
            stx.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statx succeeded, so the kernel initialised the structure (it was zeroed too).
    let stx = unsafe { stx.assume_init() };
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(std::io::Error::other("the kernel reports no mount id"));
    }
    Ok(stx.stx_mnt_id)
}

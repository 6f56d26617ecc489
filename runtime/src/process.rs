//! Process attributes applied by a container process just before it execs:
//! user and groups, capabilities, rlimits, umask, working directory, program lookup.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use caps::{CapSet, Capability as Cap, CapsHashSet};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
use oci_spec::runtime::{
    Capabilities, LinuxCapabilities, PosixRlimit, PosixRlimitType, Process, User,
};

/// Errors of applying process attributes.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A capability name is not known to the kernel interface.
    #[error("unknown capability {0}")]
    UnknownCapability(String),
    /// Changing a capability set failed.
    #[error("cannot set the {set} capability set")]
    Caps {
        /// The set.
        set: &'static str,
        /// The cause.
        #[source]
        source: caps::errors::CapsError,
    },
    /// A system call failed.
    #[error("{what} failed")]
    Sys {
        /// What was attempted.
        what: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The program to run could not be found or is not executable.
    #[error("exec: {program:?}: executable file not found in $PATH")]
    NotFound {
        /// args[0].
        program: String,
    },
    /// The working directory is not usable.
    #[error("cannot chdir to {path}")]
    Cwd {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// A string contained a NUL byte.
    #[error("{what} contains a NUL byte")]
    Nul {
        /// Which string.
        what: &'static str,
    },
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> ProcessError {
    let what = what.into();
    move |source| ProcessError::Sys { what, source }
}

/// Converts an oci-spec capability set into the `caps` crate's set.
pub fn to_caps(set: &Capabilities) -> Result<CapsHashSet, ProcessError> {
    set.iter()
        .map(|c| {
            let name = serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            Cap::from_str(&name).map_err(|_| ProcessError::UnknownCapability(name))
        })
        .collect()
}

/// Drops every capability not in `bounding` from the bounding set (before changing user).
pub fn drop_bounding(caps_spec: Option<&LinuxCapabilities>) -> Result<(), ProcessError> {
    let keep = match caps_spec.and_then(|c| c.bounding().as_ref()) {
        Some(b) => to_caps(b)?,
        None => HashSet::new(),
    };
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|source| ProcessError::Caps {
                set: "bounding",
                source,
            })?;
        }
    }
    Ok(())
}

/// Sets the effective, permitted, inheritable and ambient sets exactly to the spec's.
/// A set the spec leaves out is empty: the process never gets more than granted.
pub fn apply_capabilities(caps_spec: Option<&LinuxCapabilities>) -> Result<(), ProcessError> {
    let get = |f: fn(&LinuxCapabilities) -> &Option<Capabilities>| -> Result<CapsHashSet, _> {
        match caps_spec.and_then(|c| f(c).as_ref()) {
            Some(s) => to_caps(s),
            None => Ok(HashSet::new()),
        }
    };
    let effective = get(LinuxCapabilities::effective)?;
    let permitted = get(LinuxCapabilities::permitted)?;
    let inheritable = get(LinuxCapabilities::inheritable)?;
    let ambient = get(LinuxCapabilities::ambient)?;
    let set = |which: CapSet, name: &'static str, v: &CapsHashSet| {
        caps::set(None, which, v).map_err(|source| ProcessError::Caps { set: name, source })
    };
    // effective must stay within permitted: shrink effective first, then the others
    set(
        CapSet::Effective,
        "effective",
        &effective.intersection(&permitted).copied().collect(),
    )?;
    set(CapSet::Inheritable, "inheritable", &inheritable)?;
    set(CapSet::Permitted, "permitted", &permitted)?;
    set(CapSet::Effective, "effective", &effective)?;
    caps::clear(None, CapSet::Ambient).map_err(|source| ProcessError::Caps {
        set: "ambient",
        source,
    })?;
    for cap in ambient {
        // the kernel only allows ambient caps that are permitted and inheritable; runc
        // ignores the rest, so do we (logged at debug: this runs in the container process,
        // whose stderr belongs to the container)
        if let Err(e) = caps::raise(None, CapSet::Ambient, cap) {
            tracing::debug!(cap = %cap, error = %e, "cannot raise ambient capability");
        }
    }
    Ok(())
}

/// Switches to the spec's user: supplementary groups, gid, uid. Capabilities in the
/// permitted set are kept across the uid change (PR_SET_KEEPCAPS) so that
/// [`apply_capabilities`] can set them afterwards.
pub fn apply_user(user: &User, in_user_ns_without_setgroups: bool) -> Result<(), ProcessError> {
    nix::sys::prctl::set_keepcaps(true).map_err(sys("prctl(PR_SET_KEEPCAPS)"))?;
    if !in_user_ns_without_setgroups {
        let mut groups: Vec<Gid> = user
            .additional_gids()
            .iter()
            .flatten()
            .map(|g| Gid::from_raw(*g))
            .collect();
        groups.dedup();
        setgroups(&groups).map_err(sys("setgroups"))?;
    }
    let gid = Gid::from_raw(user.gid());
    setresgid(gid, gid, gid).map_err(sys(format!("setresgid({gid})")))?;
    let uid = Uid::from_raw(user.uid());
    setresuid(uid, uid, uid).map_err(sys(format!("setresuid({uid})")))?;
    nix::sys::prctl::set_keepcaps(false).map_err(sys("prctl(PR_SET_KEEPCAPS)"))?;
    if let Some(mask) = user.umask() {
        nix::sys::stat::umask(Mode::from_bits_truncate(mask));
    }
    Ok(())
}

fn resource(t: PosixRlimitType) -> Resource {
    match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Applies the spec's rlimits to the calling process.
pub fn apply_rlimits(rlimits: &[PosixRlimit]) -> Result<(), ProcessError> {
    for r in rlimits {
        setrlimit(resource(r.typ()), r.soft(), r.hard()).map_err(sys(format!(
            "setrlimit({:?}, {}, {})",
            r.typ(),
            r.soft(),
            r.hard()
        )))?;
    }
    Ok(())
}

/// Value of `PATH` in an environment list, or the default runc uses.
fn path_of(env: &[String]) -> &str {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}

/// Finds the program to exec: args[0] as given if it has a slash, else the first
/// executable regular file named args[0] in the process environment's `PATH`
/// (resolved in the container's root, since this runs after pivot_root).
pub fn find_program(program: &str, env: &[String], cwd: &Path) -> Result<PathBuf, ProcessError> {
    let is_exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = cwd.join(program);
        return if p.exists() {
            Ok(PathBuf::from(program))
        } else {
            Err(ProcessError::NotFound {
                program: program.into(),
            })
        };
    }
    path_of(env)
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(program))
        .find(|p| is_exec(p))
        .ok_or_else(|| ProcessError::NotFound {
            program: program.into(),
        })
}

/// The argv and envp of a process as C strings.
pub fn c_strings(process: &Process) -> Result<(Vec<CString>, Vec<CString>), ProcessError> {
    let args = process
        .args()
        .iter()
        .flatten()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ProcessError::Nul {
            what: "process.args",
        })?;
    let env = process
        .env()
        .iter()
        .flatten()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ProcessError::Nul {
            what: "process.env",
        })?;
    Ok((args, env))
}

/// Changes to the process's working directory (inside the container root).
pub fn enter_cwd(cwd: &Path) -> Result<(), ProcessError> {
    nix::unistd::chdir(cwd).map_err(|source| ProcessError::Cwd {
        path: cwd.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability;

    #[test]
    fn capability_names_convert() {
        let set: Capabilities = [Capability::SysAdmin, Capability::NetBindService]
            .into_iter()
            .collect();
        let c = to_caps(&set).unwrap();
        assert!(c.contains(&Cap::CAP_SYS_ADMIN));
        assert!(c.contains(&Cap::CAP_NET_BIND_SERVICE));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn program_lookup_uses_the_process_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("tool");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = vec![format!("PATH=/nonexistent:{}", dir.path().display())];
        assert_eq!(find_program("tool", &env, Path::new("/")).unwrap(), bin);
        assert!(matches!(
            find_program("missing", &env, Path::new("/")),
            Err(ProcessError::NotFound { .. })
        ));
        // not executable: skipped
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(find_program("tool", &env, Path::new("/")).is_err());
    }
}

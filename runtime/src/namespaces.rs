//! Namespaces from the spec: which to create, which to join by path, and in what order.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

/// Errors of entering namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// A namespace file could not be opened.
    #[error("cannot open {kind} namespace {path}")]
    Open {
        /// Namespace type.
        kind: String,
        /// Its path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// setns(2) failed.
    #[error("cannot join {kind} namespace {path}")]
    Join {
        /// Namespace type.
        kind: String,
        /// Its path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// unshare(2) failed.
    #[error("cannot create namespaces {flags:?}")]
    Unshare {
        /// The flags.
        flags: CloneFlags,
        /// The cause.
        #[source]
        source: nix::Error,
    },
}

/// The clone flag of a namespace type.
pub fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The name of a namespace type under `/proc/<pid>/ns/`.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// An opened namespace to join.
#[derive(Debug)]
pub struct ToJoin {
    kind: LinuxNamespaceType,
    path: PathBuf,
    file: File,
}

/// What to do about namespaces, decided before any process is forked.
#[derive(Debug)]
pub struct Plan {
    /// Existing user namespace to join first.
    pub join_user: Option<ToJoin>,
    /// Other existing namespaces to join (opened up front, joined mount last).
    pub join: Vec<ToJoin>,
    /// Whether to create a new user namespace (needs id maps from the runtime).
    pub new_user: bool,
    /// New namespaces to create, user excluded.
    pub create: CloneFlags,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            join_user: None,
            join: Vec::new(),
            new_user: false,
            create: CloneFlags::empty(),
        }
    }
}

impl Plan {
    /// Opens every namespace path of the spec, so a bad path fails before anything happens.
    pub fn from_spec(namespaces: &[LinuxNamespace]) -> Result<Plan, NamespaceError> {
        let mut plan = Plan::default();
        for ns in namespaces {
            match ns.path() {
                Some(path) => {
                    let j = open(ns.typ(), path)?;
                    if ns.typ() == LinuxNamespaceType::User {
                        plan.join_user = Some(j);
                    } else {
                        plan.join.push(j);
                    }
                }
                None if ns.typ() == LinuxNamespaceType::User => plan.new_user = true,
                None => plan.create |= clone_flag(ns.typ()),
            }
        }
        // join the mount namespace last: paths of later namespaces are opened already,
        // but keep the kernel's own ordering concerns (mnt after user) explicit.
        plan.join
            .sort_by_key(|j| j.kind == LinuxNamespaceType::Mount);
        Ok(plan)
    }

    /// The plan for `exec`: join every namespace of the running `pid` that differs from ours.
    pub fn join_process(pid: Pid) -> Result<Plan, NamespaceError> {
        use LinuxNamespaceType::*;
        let mut plan = Plan::default();
        for kind in [User, Ipc, Uts, Network, Pid, Cgroup, Time, Mount] {
            let name = proc_name(kind);
            let theirs = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
            let ours = PathBuf::from(format!("/proc/self/ns/{name}"));
            let (Ok(a), Ok(b)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else {
                continue; // a kernel without this namespace type
            };
            use std::os::unix::fs::MetadataExt;
            if a.ino() == b.ino() && a.dev() == b.dev() {
                continue;
            }
            let j = open(kind, &theirs)?;
            if kind == User {
                plan.join_user = Some(j);
            } else {
                plan.join.push(j);
            }
        }
        Ok(plan)
    }

    /// Whether the container ends up in a pid namespace other than the runtime's.
    pub fn changes_pid_ns(&self) -> bool {
        self.create.contains(CloneFlags::CLONE_NEWPID)
            || self.join.iter().any(|j| j.kind == LinuxNamespaceType::Pid)
    }

    /// Joins the existing user namespace, if any.
    pub fn enter_user(&self) -> Result<(), NamespaceError> {
        if let Some(j) = &self.join_user {
            join(j)?;
        }
        if self.new_user {
            unshare(CloneFlags::CLONE_NEWUSER).map_err(|source| NamespaceError::Unshare {
                flags: CloneFlags::CLONE_NEWUSER,
                source,
            })?;
        }
        Ok(())
    }

    /// Joins the other existing namespaces, then creates the new ones.
    pub fn enter_rest(&self) -> Result<(), NamespaceError> {
        for j in &self.join {
            join(j)?;
        }
        if !self.create.is_empty() {
            unshare(self.create).map_err(|source| NamespaceError::Unshare {
                flags: self.create,
                source,
            })?;
        }
        Ok(())
    }
}

fn open(kind: LinuxNamespaceType, path: &Path) -> Result<ToJoin, NamespaceError> {
    let file = File::open(path).map_err(|source| NamespaceError::Open {
        kind: proc_name(kind).into(),
        path: path.to_path_buf(),
        source,
    })?;
    Ok(ToJoin {
        kind,
        path: path.to_path_buf(),
        file,
    })
}

fn join(j: &ToJoin) -> Result<(), NamespaceError> {
    setns(j.file.as_fd(), clone_flag(j.kind)).map_err(|source| NamespaceError::Join {
        kind: proc_name(j.kind).into(),
        path: j.path.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxNamespaceBuilder;

    #[test]
    fn plan_splits_new_and_joined() {
        let nss = vec![
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path("/proc/self/ns/net")
                .build()
                .unwrap(),
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Mount)
                .build()
                .unwrap(),
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Pid)
                .build()
                .unwrap(),
        ];
        let plan = Plan::from_spec(&nss).unwrap();
        assert_eq!(plan.join.len(), 1);
        assert_eq!(
            plan.create,
            CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID
        );
        assert!(plan.changes_pid_ns());
        assert!(!plan.new_user);
    }

    #[test]
    fn missing_path_is_an_error_naming_it() {
        let nss = vec![
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Ipc)
                .path("/nonexistent/ipc")
                .build()
                .unwrap(),
        ];
        let err = Plan::from_spec(&nss).unwrap_err().to_string();
        assert_eq!(err, "cannot open ipc namespace /nonexistent/ipc");
    }

    #[test]
    fn exec_plan_of_self_joins_nothing() {
        let plan = Plan::join_process(nix::unistd::getpid()).unwrap();
        assert!(plan.join.is_empty() && plan.join_user.is_none());
    }
}

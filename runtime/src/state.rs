//! A container's status is an enum with explicit transitions; the whole state is saved as
//! JSON under `<root>/<id>/state.json` after every step, in the shape runc prints.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The OCI runtime spec version this runtime implements (printed by `state`).
pub const OCI_VERSION: &str = "1.2.0";
/// Name of the state file inside a container's state directory.
pub const STATE_FILE: &str = "state.json";
/// Name of the FIFO the init process blocks on until `start`.
pub const EXEC_FIFO: &str = "exec.fifo";

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The runtime is building the container; nothing is runnable yet.
    Creating,
    /// The init process waits for `start`.
    Created,
    /// The user process runs.
    Running,
    /// The container's cgroup is frozen.
    Paused,
    /// The init process has exited.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// Errors of the state machine and the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A transition the lifecycle does not allow.
    #[error("container {id} cannot go from {from} to {to}")]
    InvalidTransition {
        /// Container id.
        id: String,
        /// Current status.
        from: Status,
        /// Requested status.
        to: Status,
    },
    /// The state file could not be read or written.
    #[error("cannot {action} state file {path}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error("state file {path} is corrupt")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl Status {
    /// Whether the lifecycle allows going from `self` to `to`.
    pub fn can_transition(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            (Creating, Created)
                | (Creating, Stopped)
                | (Created, Running)
                | (Created, Stopped)
                | (Running, Paused)
                | (Running, Stopped)
                | (Paused, Running)
                | (Paused, Stopped)
        )
    }
}

/// Everything the runtime keeps about one container. The first fields are exactly those
/// of runc's `state` output; the rest are the runtime's own bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// OCI runtime spec version.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Host pid of the init process (0 when none).
    pub pid: i32,
    /// Lifecycle status.
    pub status: Status,
    /// Absolute path of the bundle.
    pub bundle: PathBuf,
    /// Absolute path of the root filesystem.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Owner (runc prints the user name of the creator; empty for root).
    pub owner: String,
    /// Annotations from the spec.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    /// Runtime bookkeeping, not part of runc's output.
    #[serde(rename = "skiff", default)]
    pub internal: Internal,
}

/// The runtime's own fields in the state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Internal {
    /// Start time of the init process (field 22 of /proc/pid/stat), to detect pid reuse.
    #[serde(default)]
    pub init_start_time: u64,
    /// The cgroup path given to the cgroup manager.
    #[serde(default)]
    pub cgroup_path: PathBuf,
    /// Whether the container has its own pid namespace.
    #[serde(default)]
    pub own_pid_ns: bool,
    /// Poststart hooks, kept so `start` need not read the bundle again.
    #[serde(default)]
    pub poststart: Vec<oci_spec::runtime::Hook>,
    /// Poststop hooks, kept because the bundle may be gone by `delete`.
    #[serde(default)]
    pub poststop: Vec<oci_spec::runtime::Hook>,
}

impl State {
    /// Moves to `to` if the lifecycle allows it.
    pub fn transition(&mut self, to: Status) -> Result<(), StateError> {
        if self.status == to {
            return Ok(());
        }
        if !self.status.can_transition(to) {
            return Err(StateError::InvalidTransition {
                id: self.id.clone(),
                from: self.status,
                to,
            });
        }
        self.status = to;
        Ok(())
    }

    /// The state as runc prints it (without the runtime's own fields).
    pub fn to_oci_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            // runc reports no pid once the container has stopped
            "pid": if self.status == Status::Stopped { 0 } else { self.pid },
            "status": self.status,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
        });
        if !self.annotations.is_empty() {
            v["annotations"] = serde_json::json!(self.annotations);
        }
        v
    }

    /// The OCI `State` handed to hooks on stdin.
    pub fn hook_state(&self) -> String {
        let v = serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            "status": self.status,
            "pid": self.pid,
            "bundle": self.bundle,
            "annotations": self.annotations,
        });
        v.to_string()
    }

    /// Saves the state atomically (temp file, rename) in `dir`. No fsync, as runc: the state
    /// lives under `/run` and describes processes, so a runtime killed at any point leaves the
    /// old or the new file (the rename is atomic), and after a power loss there are no
    /// processes left to describe. An fsync here cost 3 disk flushes per `run`.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(".state.json.tmp");
        let io = |action, source| StateError::Io {
            action,
            path: path.clone(),
            source,
        };
        let data = serde_json::to_vec(self).map_err(|e| io("encode", std::io::Error::other(e)))?;
        let mut f = fs::File::create(&tmp).map_err(|e| io("write", e))?;
        f.write_all(&data).map_err(|e| io("write", e))?;
        fs::rename(&tmp, &path).map_err(|e| io("rename", e))?;
        Ok(())
    }

    /// Loads the state saved in `dir`.
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(STATE_FILE);
        let data = fs::read(&path).map_err(|source| StateError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&data).map_err(|source| StateError::Corrupt { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_table() {
        use Status::*;
        let all = [Creating, Created, Running, Paused, Stopped];
        let legal = [
            (Creating, Created),
            (Creating, Stopped),
            (Created, Running),
            (Created, Stopped),
            (Running, Paused),
            (Running, Stopped),
            (Paused, Running),
            (Paused, Stopped),
        ];
        for from in all {
            for to in all {
                assert_eq!(
                    from.can_transition(to),
                    legal.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    fn sample() -> State {
        State {
            oci_version: OCI_VERSION.into(),
            id: "c1".into(),
            pid: 42,
            status: Status::Created,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "2026-01-01T00:00:00Z".into(),
            owner: String::new(),
            annotations: HashMap::new(),
            internal: Internal::default(),
        }
    }

    #[test]
    fn illegal_transition_is_an_error() {
        let mut s = sample();
        s.status = Status::Stopped;
        let err = s.transition(Status::Running).unwrap_err();
        assert_eq!(
            err.to_string(),
            "container c1 cannot go from stopped to running"
        );
    }

    #[test]
    fn save_and_load_round_trip_and_oci_shape() {
        let dir = tempfile::tempdir().unwrap();
        let s = sample();
        s.save(dir.path()).unwrap();
        let back = State::load(dir.path()).unwrap();
        assert_eq!(back.id, "c1");
        assert_eq!(back.status, Status::Created);
        let v = s.to_oci_json();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        for k in [
            "ociVersion",
            "id",
            "pid",
            "status",
            "bundle",
            "rootfs",
            "created",
            "owner",
        ] {
            assert!(keys.contains(&k.to_string()), "{k}");
        }
        assert!(!keys.contains(&"skiff".to_string()));
    }
}

//! Loading an OCI bundle and checking its `config.json` before anything is created.
//!
//! Every error names the bundle and, where it can, the field at fault
//! (`linux.namespaces[2].type`), so a user can fix the file without guessing.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::seccomp;

/// Errors of loading or validating a bundle.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The bundle directory or its config.json could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// config.json is not valid JSON or does not match the OCI schema.
    #[error("invalid {path}: field `{field}`: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// Dotted path of the field at fault (`.` for the whole document).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The document parses but is not a spec this runtime can run.
    #[error("invalid config in bundle {bundle}: field `{field}`: {message}")]
    Invalid {
        /// The bundle directory.
        bundle: PathBuf,
        /// Dotted path of the field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// A bundle whose config passed validation.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute path of the bundle directory.
    pub path: PathBuf,
    /// Absolute, canonical path of the root filesystem.
    pub rootfs: PathBuf,
    /// The parsed spec.
    pub spec: Spec,
}

impl Bundle {
    /// Loads `<bundle>/config.json`, resolves the root filesystem and validates everything.
    pub fn load(bundle: &Path) -> Result<Bundle, SpecError> {
        let path = fs::canonicalize(bundle).map_err(|source| SpecError::Read {
            path: bundle.to_path_buf(),
            source,
        })?;
        let config = path.join("config.json");
        let data = fs::read(&config).map_err(|source| SpecError::Read {
            path: config.clone(),
            source,
        })?;
        let spec = parse_spec(&data).map_err(|(field, message)| SpecError::Parse {
            path: config.clone(),
            field,
            message,
        })?;
        let invalid = |field: &str, message: String| SpecError::Invalid {
            bundle: path.clone(),
            field: field.to_string(),
            message,
        };
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| invalid("root", "is required".into()))?;
        let rootfs_rel = root.path();
        let rootfs_joined = if rootfs_rel.is_absolute() {
            rootfs_rel.clone()
        } else {
            path.join(rootfs_rel)
        };
        let rootfs = fs::canonicalize(&rootfs_joined).map_err(|e| {
            invalid(
                "root.path",
                format!(
                    "root filesystem {} does not exist: {e}",
                    rootfs_joined.display()
                ),
            )
        })?;
        if !rootfs.is_dir() {
            return Err(invalid(
                "root.path",
                format!("root filesystem {} is not a directory", rootfs.display()),
            ));
        }
        validate(&spec).map_err(|(field, message)| invalid(&field, message))?;
        Ok(Bundle { path, rootfs, spec })
    }
}

/// Parses a spec, naming the field at fault on error.
pub fn parse_spec(data: &[u8]) -> Result<Spec, (String, String)> {
    let de = &mut serde_json::Deserializer::from_slice(data);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        (field, e.into_inner().to_string())
    })
}

type Invalid = (String, String);

fn bad(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    (field.into(), message.into())
}

/// The checks runc makes before creating anything. Returns (field, message) on error.
pub fn validate(spec: &Spec) -> Result<(), Invalid> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| bad("process", "is required"))?;
    validate_process(process, "process")?;

    let Some(linux) = spec.linux() else {
        return Err(bad("linux", "is required on linux"));
    };
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    let mut seen = HashSet::new();
    for (i, ns) in namespaces.iter().enumerate() {
        if !seen.insert(ns.typ()) {
            return Err(bad(
                format!("linux.namespaces[{i}].type"),
                format!("namespace {} is listed twice", ns.typ()),
            ));
        }
        if let Some(p) = ns.path() {
            if !p.is_absolute() {
                return Err(bad(
                    format!("linux.namespaces[{i}].path"),
                    format!("{} is not an absolute path", p.display()),
                ));
            }
            if let Err(e) = fs::metadata(p) {
                return Err(bad(
                    format!("linux.namespaces[{i}].path"),
                    format!("cannot open namespace {}: {e}", p.display()),
                ));
            }
        }
    }
    let has = |t: LinuxNamespaceType| seen.contains(&t);
    let new_ns = |t: LinuxNamespaceType| {
        namespaces
            .iter()
            .any(|n| n.typ() == t && n.path().is_none())
    };
    let mappings = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if new_ns(LinuxNamespaceType::User) {
        if linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty())
            || linux.gid_mappings().as_ref().is_none_or(|m| m.is_empty())
        {
            return Err(bad(
                "linux.uidMappings",
                "a new user namespace needs uidMappings and gidMappings",
            ));
        }
    } else if mappings && !has(LinuxNamespaceType::User) {
        return Err(bad(
            "linux.uidMappings",
            "uid/gid mappings are given but there is no user namespace",
        ));
    }
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !has(LinuxNamespaceType::Uts) {
        return Err(bad(
            "hostname",
            "cannot set a hostname without a private uts namespace",
        ));
    }
    if spec.domainname().as_ref().is_some_and(|h| !h.is_empty()) && !has(LinuxNamespaceType::Uts) {
        return Err(bad(
            "domainname",
            "cannot set a domainname without a private uts namespace",
        ));
    }
    if !has(LinuxNamespaceType::Mount) {
        return Err(bad(
            "linux.namespaces",
            "a mount namespace is required (the root filesystem is set up in it)",
        ));
    }
    if let Some(sysctl) = linux.sysctl() {
        for key in sysctl.keys() {
            validate_sysctl(key, &has)?;
        }
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !m.destination().is_absolute() {
            return Err(bad(
                format!("mounts[{i}].destination"),
                format!("{} is not an absolute path", m.destination().display()),
            ));
        }
    }
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        if !d.path().starts_with("/dev") {
            return Err(bad(
                format!("linux.devices[{i}].path"),
                format!("{} is not under /dev", d.path().display()),
            ));
        }
    }
    let resources = linux.resources().as_ref();
    for (i, rule) in resources
        .and_then(|r| r.devices().as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        crate::cgroups::devices::check(rule)
            .map_err(|message| bad(format!("linux.resources.devices[{i}]"), message))?;
    }
    if let Some(sc) = linux.seccomp() {
        seccomp::validate(sc).map_err(|e| bad("linux.seccomp", e.to_string()))?;
    }
    if let Some(p) = linux.rootfs_propagation() {
        const OK: [&str; 8] = [
            "private",
            "rprivate",
            "slave",
            "rslave",
            "shared",
            "rshared",
            "unbindable",
            "runbindable",
        ];
        if !OK.contains(&p.as_str()) {
            return Err(bad(
                "linux.rootfsPropagation",
                format!("unknown propagation {p:?}"),
            ));
        }
    }
    Ok(())
}

/// Checks a process section (also used for `exec --process`).
pub fn validate_process(process: &oci_spec::runtime::Process, field: &str) -> Result<(), Invalid> {
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(bad(format!("{field}.args"), "must name a program to run"));
    }
    if !process.cwd().is_absolute() {
        return Err(bad(
            format!("{field}.cwd"),
            format!("{} is not an absolute path", process.cwd().display()),
        ));
    }
    let mut types = HashSet::new();
    for (i, r) in process.rlimits().iter().flatten().enumerate() {
        if !types.insert(format!("{:?}", r.typ())) {
            return Err(bad(
                format!("{field}.rlimits[{i}].type"),
                format!("rlimit {:?} is listed twice", r.typ()),
            ));
        }
        if r.soft() > r.hard() {
            return Err(bad(
                format!("{field}.rlimits[{i}]"),
                "soft limit is above the hard limit",
            ));
        }
    }
    for (i, e) in process.env().iter().flatten().enumerate() {
        if !e.contains('=') {
            return Err(bad(
                format!("{field}.env[{i}]"),
                format!("{e:?} is not of the form NAME=value"),
            ));
        }
    }
    Ok(())
}

/// A sysctl may only be set when the namespace it belongs to is private (as runc checks).
fn validate_sysctl(key: &str, has: &dyn Fn(LinuxNamespaceType) -> bool) -> Result<(), Invalid> {
    let field = format!("linux.sysctl.{key}");
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let needs = if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        LinuxNamespaceType::Ipc
    } else if key.starts_with("net.") {
        LinuxNamespaceType::Network
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        LinuxNamespaceType::Uts
    } else {
        return Err(bad(field, "sysctl is not in a separate kernel namespace"));
    };
    if !has(needs) {
        return Err(bad(
            field,
            format!("sysctl needs a private {needs} namespace"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_json() -> serde_json::Value {
        serde_json::to_value(Spec::default()).unwrap()
    }

    fn check(v: &serde_json::Value) -> Result<(), Invalid> {
        let spec = parse_spec(v.to_string().as_bytes())?;
        validate(&spec)
    }

    #[test]
    fn default_spec_is_valid() {
        check(&default_json()).unwrap();
    }

    #[test]
    fn table_of_invalid_specs() {
        type Edit = fn(&mut serde_json::Value);
        let cases: Vec<(&str, Edit, &str)> = vec![
            (
                "device rule access",
                |v| {
                    v["linux"]["resources"]["devices"] =
                        serde_json::json!([{"allow": true, "access": "rwx"}])
                },
                "linux.resources.devices[0]",
            ),
            (
                "unknown namespace",
                |v| v["linux"]["namespaces"][0]["type"] = "bogus".into(),
                "linux.namespaces[0].type",
            ),
            (
                "duplicate namespace",
                |v| {
                    let ns = v["linux"]["namespaces"][0].clone();
                    v["linux"]["namespaces"].as_array_mut().unwrap().push(ns);
                },
                "linux.namespaces[6].type",
            ),
            (
                "no args",
                |v| v["process"]["args"] = serde_json::json!([]),
                "process.args",
            ),
            (
                "relative cwd",
                |v| v["process"]["cwd"] = "tmp".into(),
                "process.cwd",
            ),
            (
                "hostname without uts",
                |v| {
                    v["hostname"] = "x".into();
                    let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
                    ns.retain(|n| n["type"] != "uts");
                },
                "hostname",
            ),
            (
                "net sysctl without netns",
                |v| {
                    v["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
                    let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
                    ns.retain(|n| n["type"] != "network");
                },
                "linux.sysctl.net.ipv4.ip_forward",
            ),
            (
                "host sysctl",
                |v| v["linux"]["sysctl"] = serde_json::json!({"vm.swappiness": "1"}),
                "linux.sysctl.vm.swappiness",
            ),
            (
                "user ns without mappings",
                |v| {
                    v["linux"]["namespaces"]
                        .as_array_mut()
                        .unwrap()
                        .push(serde_json::json!({"type": "user"}));
                },
                "linux.uidMappings",
            ),
            (
                "relative mount destination",
                |v| v["mounts"][0]["destination"] = "proc".into(),
                "mounts[0].destination",
            ),
            (
                "unknown capability",
                |v| v["process"]["capabilities"]["bounding"][0] = "CAP_BOGUS".into(),
                "process.capabilities.bounding[0]",
            ),
            (
                "bad env",
                |v| v["process"]["env"] = serde_json::json!(["NOEQUALS"]),
                "process.env[0]",
            ),
            (
                "namespace path missing",
                |v| v["linux"]["namespaces"][1]["path"] = "/nonexistent/ns".into(),
                "linux.namespaces[1].path",
            ),
        ];
        for (name, edit, field) in cases {
            let mut v = default_json();
            edit(&mut v);
            let err = check(&v).expect_err(name);
            assert!(
                err.0.starts_with(field),
                "{name}: field {} != {field} ({})",
                err.0,
                err.1
            );
        }
    }

    #[test]
    fn missing_rootfs_names_bundle_and_field() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.json"), default_json().to_string()).unwrap();
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("root.path"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }

    #[test]
    fn malformed_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.json"), "{ not json").unwrap();
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
    }
}

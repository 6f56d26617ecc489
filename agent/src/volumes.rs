//! Pod volumes on the host: emptyDir under `<root>/pods/<uid>/volumes/kubernetes.io~empty-dir/`,
//! hostPath as given (created for `DirectoryOrCreate`/`FileOrCreate`), configMap and secret
//! projected as files (items, modes) under `kubernetes.io~configmap/` and
//! `kubernetes.io~secret/`, downwardAPI and projected volumes under
//! `kubernetes.io~downward-api/` and `kubernetes.io~projected/` (see `downward`); and the container's volumeMounts resolved to bind mounts
//! (readOnly, subPath).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, Volume};

use crate::container::{BindMount, EnvSources};
use crate::error::{Error, Result};

/// Why a volume cannot be set up (the container waits with CreateContainerConfigError).
fn config_err(pod: &Pod, message: String) -> Error {
    Error::Spec {
        pod: format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        ),
        message,
    }
}

fn project(
    dir: &Path,
    data: &BTreeMap<String, String>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let files: Vec<(String, &String, i32)> = match items {
        Some(items) => items
            .iter()
            .filter_map(|i| {
                data.get(&i.key)
                    .map(|v| (i.path.clone(), v, i.mode.unwrap_or(default_mode)))
            })
            .collect(),
        None => data
            .iter()
            .map(|(k, v)| (k.clone(), v, default_mode))
            .collect(),
    };
    for (rel, value, mode) in files {
        if !safe_relative(&rel) {
            continue;
        }
        let path = dir.join(&rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|e| Error::io("create", p, e))?;
        }
        std::fs::write(&path, value).map_err(|e| Error::io("write", &path, e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode as u32 & 0o777))
            .map_err(|e| Error::io("chmod", &path, e))?;
    }
    Ok(())
}

const DOWNWARD_API: &str = "kubernetes.io~downward-api";

fn write(pod: &Pod, dir: &Path, files: &crate::downward::Files) -> Result<()> {
    crate::downward::write_atomic(dir, files)
        .map(|_| ())
        .map_err(|e| config_err(pod, crate::shim::error_chain(&e)))
}

/// Rewrites the pod's downwardAPI volumes that were set up when their files changed
/// (labels and annotations), with the atomic `..data` swap; the kubelet does this on its
/// periodic sync.
pub fn refresh_downward(pod: &Pod, volume_dir: &Path) -> Result<()> {
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(d) = &v.downward_api else { continue };
        let p = volume_dir.join(DOWNWARD_API).join(&v.name);
        if !p.join("..data").exists() {
            continue; // not set up yet: the container start does it
        }
        let files = crate::downward::downward_files(
            pod,
            d.items.as_deref().unwrap_or(&[]),
            d.default_mode.unwrap_or(0o644),
        )
        .map_err(|e| config_err(pod, e.to_string()))?;
        if crate::downward::write_atomic(&p, &files)
            .map_err(|e| config_err(pod, crate::shim::error_chain(&e)))?
        {
            tracing::info!(volume = %v.name, "downwardAPI volume updated");
        }
    }
    Ok(())
}

/// A relative path without `..` (subPath and item paths).
pub fn safe_relative(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Sets up every volume of the pod; returns name → host path.
pub fn prepare(pod: &Pod, volume_dir: &Path, src: &EnvSources) -> Result<HashMap<String, PathBuf>> {
    let mut out = HashMap::new();
    let vols: Vec<Volume> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in vols {
        let path = if v.empty_dir.is_some() {
            let p = volume_dir.join("kubernetes.io~empty-dir").join(&v.name);
            std::fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| Error::io("chmod", &p, e))?;
            if let Some(e) = v
                .empty_dir
                .as_ref()
                .filter(|e| crate::memvolume::is_memory(e))
            {
                let size =
                    crate::memvolume::size(pod, e, crate::memvolume::node_allocatable_memory());
                crate::memvolume::mount(&p, size)?;
            }
            p
        } else if let Some(h) = &v.host_path {
            let p = PathBuf::from(&h.path);
            match h.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => {
                    std::fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?
                }
                "FileOrCreate" if !p.exists() => {
                    std::fs::write(&p, b"").map_err(|e| Error::io("create", &p, e))?
                }
                "Directory" if !p.is_dir() => {
                    return Err(config_err(
                        pod,
                        format!("hostPath type check failed: {} is not a directory", h.path),
                    ));
                }
                "File" if !p.is_file() => {
                    return Err(config_err(
                        pod,
                        format!("hostPath type check failed: {} is not a file", h.path),
                    ));
                }
                _ => {}
            }
            p
        } else if let Some(cm) = &v.config_map {
            let p = volume_dir.join("kubernetes.io~configmap").join(&v.name);
            match src.config_maps.get(&cm.name) {
                Some(data) => project(
                    &p,
                    data,
                    cm.items.as_ref(),
                    cm.default_mode.unwrap_or(0o644),
                )?,
                None if cm.optional == Some(true) => {
                    std::fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?
                }
                None => {
                    return Err(config_err(
                        pod,
                        format!("configmap \"{}\" not found", cm.name),
                    ));
                }
            }
            p
        } else if let Some(d) = &v.downward_api {
            let p = volume_dir.join(DOWNWARD_API).join(&v.name);
            let files = crate::downward::downward_files(
                pod,
                d.items.as_deref().unwrap_or(&[]),
                d.default_mode.unwrap_or(0o644),
            )
            .map_err(|e| config_err(pod, e.to_string()))?;
            write(pod, &p, &files)?;
            p
        } else if let Some(pr) = &v.projected {
            let p = volume_dir.join("kubernetes.io~projected").join(&v.name);
            let files = crate::downward::projected_files(pod, pr, src)
                .map_err(|e| config_err(pod, e.to_string()))?;
            write(pod, &p, &files)?;
            p
        } else if let Some(s) = &v.secret {
            let p = volume_dir.join("kubernetes.io~secret").join(&v.name);
            let name = s.secret_name.clone().unwrap_or_default();
            match src.secrets.get(&name) {
                Some(data) => project(&p, data, s.items.as_ref(), s.default_mode.unwrap_or(0o644))?,
                None if s.optional == Some(true) => {
                    std::fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?
                }
                None => return Err(config_err(pod, format!("secret \"{name}\" not found"))),
            }
            p
        } else {
            return Err(config_err(
                pod,
                format!("volume {} has an unsupported type", v.name),
            ));
        };
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

/// The container's volumeMounts as bind mounts (subPath directories are created).
pub fn mounts(
    pod: &Pod,
    c: &Container,
    volumes: &HashMap<String, PathBuf>,
) -> Result<Vec<BindMount>> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let base = volumes
            .get(&m.name)
            .ok_or_else(|| config_err(pod, format!("volume {} is not defined", m.name)))?;
        let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sp) if safe_relative(sp) => {
                let p = base.join(sp);
                if !p.exists() {
                    std::fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?;
                }
                p
            }
            Some(sp) => return Err(config_err(pod, format!("invalid subPath {sp}"))),
            None => base.clone(),
        };
        out.push(BindMount {
            source,
            destination: PathBuf::from(&m.mount_path),
            read_only: m.read_only == Some(true),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn volumes_and_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host");
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "image": "i", "volumeMounts": [
                {"name": "cache", "mountPath": "/cache"},
                {"name": "cache", "mountPath": "/sub", "subPath": "a/b"},
                {"name": "cfg", "mountPath": "/cfg", "readOnly": true},
                {"name": "sec", "mountPath": "/sec"},
                {"name": "h", "mountPath": "/h"}]}],
             "volumes": [
                {"name": "cache", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "cm", "items": [{"key": "k", "path": "dir/file"}]}},
                {"name": "sec", "secret": {"secretName": "s", "defaultMode": 256}},
                {"name": "h", "hostPath": {"path": host, "type": "DirectoryOrCreate"}}]}}))
        .unwrap();
        let mut src = EnvSources::default();
        src.config_maps.insert(
            "cm".into(),
            [
                ("k".to_string(), "v".to_string()),
                ("x".to_string(), "y".to_string()),
            ]
            .into(),
        );
        src.secrets.insert(
            "s".into(),
            [("pw".to_string(), "hunter2".to_string())].into(),
        );
        let vols = prepare(&pod, &dir.path().join("v"), &src).unwrap();
        assert!(host.is_dir());
        let cfg = &vols["cfg"];
        assert_eq!(std::fs::read_to_string(cfg.join("dir/file")).unwrap(), "v");
        assert!(!cfg.join("x").exists(), "items select keys");
        let pw = vols["sec"].join("pw");
        assert_eq!(
            std::fs::metadata(&pw).unwrap().permissions().mode() & 0o777,
            0o400
        );
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let m = mounts(&pod, c, &vols).unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!(m[1].source, vols["cache"].join("a/b"));
        assert!(m[1].source.is_dir());
        assert!(m[2].read_only && !m[0].read_only);
        // a missing secret is an error; an optional one is not
        src.secrets.clear();
        assert!(prepare(&pod, &dir.path().join("v2"), &src).is_err());
        assert!(!safe_relative("../x") && !safe_relative("/abs") && safe_relative("a/b"));
    }
}

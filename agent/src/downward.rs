//! downwardAPI and projected volumes as the kubelet writes them: the files of a volume are
//! computed by a pure function of the pod (fieldRef metadata.name, namespace, uid, labels,
//! annotations, one label or annotation; resourceFieldRef limits/requests with divisor) and
//! of configMaps and secrets for projected sources, then written with the kubelet's atomic
//! writer: the files go into a fresh `..<timestamp>` directory, the `..data` symlink is
//! swapped to it with a rename, and each top-level name is a symlink into `..data`. A
//! container reading the volume sees either the old or the new set, never a mix.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod};

use crate::container::{self, EnvSources, PodFacts};

/// A volume's files: relative path → (content, mode).
pub type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// Why a volume's files cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum DownwardError {
    /// A fieldRef the downward API does not offer in volumes.
    #[error("unsupported fieldRef {0} in a downwardAPI volume")]
    Field(String),
    /// A resourceFieldRef names a container the pod does not have.
    #[error("resourceFieldRef names container {0:?}, which the pod does not have")]
    Container(String),
    /// An item path is absolute or has `..`.
    #[error("invalid item path {0:?}")]
    Path(String),
    /// A configMap or secret a projected source needs is missing.
    #[error("{kind} \"{name}\" not found")]
    Missing {
        /// configmap or secret.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// Writing the files failed.
    #[error("cannot {what} {path}")]
    Io {
        /// What was done.
        what: &'static str,
        /// On which path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Labels or annotations as the kubelet's `fieldpath.FormatMap`: sorted `key="value"` lines
/// (values quoted), no final newline.
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_default()
}

/// The files of downwardAPI `items` for `pod`.
pub fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
) -> Result<Files, DownwardError> {
    let mut out = Files::new();
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            match f.field_path.as_str() {
                "metadata.labels" => format_map(pod.metadata.labels.as_ref()),
                "metadata.annotations" => format_map(pod.metadata.annotations.as_ref()),
                p @ ("metadata.name" | "metadata.namespace" | "metadata.uid") => {
                    container::field_ref(pod, &PodFacts::default(), p)
                        .map_err(|_| DownwardError::Field(p.into()))?
                }
                p if p.starts_with("metadata.labels['")
                    || p.starts_with("metadata.annotations['") =>
                {
                    container::field_ref(pod, &PodFacts::default(), p)
                        .map_err(|_| DownwardError::Field(p.into()))?
                }
                p => return Err(DownwardError::Field(p.into())),
            }
        } else if let Some(r) = &item.resource_field_ref {
            let name = r.container_name.clone().unwrap_or_default();
            let c = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.iter().find(|c| c.name == name))
                .ok_or(DownwardError::Container(name))?;
            container::resource_ref(c, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()))
        } else {
            continue;
        };
        add(
            &mut out,
            &item.path,
            value.into_bytes(),
            item.mode,
            default_mode,
        )?;
    }
    Ok(out)
}

fn add(
    out: &mut Files,
    path: &str,
    data: Vec<u8>,
    mode: Option<i32>,
    default_mode: i32,
) -> Result<(), DownwardError> {
    if !crate::volumes::safe_relative(path) || path.starts_with("..") {
        return Err(DownwardError::Path(path.into()));
    }
    let mode = mode.unwrap_or(default_mode) as u32 & 0o777;
    out.insert(path.into(), (data, mode));
    Ok(())
}

fn key_files(
    out: &mut Files,
    data: &BTreeMap<String, String>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
) -> Result<(), DownwardError> {
    match items {
        Some(items) => {
            for i in items {
                if let Some(v) = data.get(&i.key) {
                    add(out, &i.path, v.clone().into_bytes(), i.mode, default_mode)?;
                }
            }
        }
        None => {
            for (k, v) in data {
                add(out, k, v.clone().into_bytes(), None, default_mode)?;
            }
        }
    }
    Ok(())
}

/// The files of a projected volume: downwardAPI, configMap and secret sources
/// (serviceAccountToken and clusterTrustBundle sources are not served and add nothing).
pub fn projected_files(
    pod: &Pod,
    p: &k8s_openapi::api::core::v1::ProjectedVolumeSource,
    src: &EnvSources,
) -> Result<Files, DownwardError> {
    let mode = p.default_mode.unwrap_or(0o644);
    let mut out = Files::new();
    for s in p.sources.iter().flatten() {
        if let Some(d) = &s.downward_api {
            out.extend(downward_files(
                pod,
                d.items.as_deref().unwrap_or(&[]),
                mode,
            )?);
        }
        if let Some(cm) = &s.config_map {
            match src.config_maps.get(&cm.name) {
                Some(data) => key_files(&mut out, data, cm.items.as_ref(), mode)?,
                None if cm.optional == Some(true) => {}
                None => {
                    return Err(DownwardError::Missing {
                        kind: "configmap",
                        name: cm.name.clone(),
                    });
                }
            }
        }
        if let Some(sec) = &s.secret {
            match src.secrets.get(&sec.name) {
                Some(data) => key_files(&mut out, data, sec.items.as_ref(), mode)?,
                None if sec.optional == Some(true) => {}
                None => {
                    return Err(DownwardError::Missing {
                        kind: "secret",
                        name: sec.name.clone(),
                    });
                }
            }
        }
    }
    Ok(out)
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DownwardError {
    let path = path.to_path_buf();
    move |source| DownwardError::Io { what, path, source }
}

/// What is in `dir/..data` now (`None` when the volume was never written).
fn current(dir: &Path) -> Option<Files> {
    let data = dir.join("..data");
    std::fs::symlink_metadata(&data).ok()?;
    let mut out = Files::new();
    let mut stack = vec![data.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            let meta = e.metadata().ok()?;
            if meta.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(&data).ok()?.to_string_lossy().into_owned();
                out.insert(
                    rel,
                    (std::fs::read(&p).ok()?, meta.permissions().mode() & 0o777),
                );
            }
        }
    }
    Some(out)
}

/// Writes `files` into `dir` with the kubelet's atomic writer; does nothing when they are
/// already there. Returns whether it wrote.
pub fn write_atomic(dir: &Path, files: &Files) -> Result<bool, DownwardError> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    if current(dir).as_ref() == Some(files) {
        return Ok(false);
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let now = chrono::Utc::now();
    let name = format!("..{}", now.format("%Y_%m_%d_%H_%M_%S.%f"));
    let ts = dir.join(&name);
    std::fs::create_dir(&ts).map_err(io("create", &ts))?;
    for (rel, (data, mode)) in files {
        let p = ts.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        std::fs::write(&p, data).map_err(io("write", &p))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
            .map_err(io("chmod", &p))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&name, &tmp).map_err(io("symlink", &tmp))?;
    let data = dir.join("..data");
    std::fs::rename(&tmp, &data).map_err(io("rename", &data))?;
    // top-level names point into ..data; names no longer written go
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|k| k.split('/').next().map(str::to_string))
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(top), &link)
                .map_err(io("symlink", &link))?;
        }
    }
    for e in std::fs::read_dir(dir).map_err(io("read", dir))?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.starts_with("..") && !tops.contains(&n) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(old) = old.filter(|o| o != Path::new(&name)) {
        let p = dir.join(old);
        std::fs::remove_dir_all(&p).map_err(io("remove", &p))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1",
                "labels": {"tier": "front", "app": "web"},
                "annotations": {"note": "say \"hi\""}},
            "spec": {"containers": [{"name": "c", "resources": {
                "limits": {"memory": "64Mi", "cpu": "500m"},
                "requests": {"cpu": "250m"}}}]}
        }))
        .unwrap()
    }

    fn items(v: serde_json::Value) -> Vec<DownwardAPIVolumeFile> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn files_as_the_kubelet_writes_them() {
        let table = [
            (
                serde_json::json!({"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}),
                "name",
                "web",
            ),
            (
                serde_json::json!({"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}),
                "ns",
                "ns",
            ),
            (
                serde_json::json!({"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}}),
                "uid",
                "u1",
            ),
            (
                serde_json::json!({"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}),
                "labels",
                "app=\"web\"\ntier=\"front\"",
            ),
            (
                serde_json::json!({"path": "a/notes", "fieldRef": {"fieldPath": "metadata.annotations"}}),
                "a/notes",
                "note=\"say \\\"hi\\\"\"",
            ),
            (
                serde_json::json!({"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}}),
                "tier",
                "front",
            ),
            (
                serde_json::json!({"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}),
                "mem",
                "64",
            ),
            (
                serde_json::json!({"path": "cpu", "resourceFieldRef": {"containerName": "c", "resource": "requests.cpu", "divisor": "1m"}}),
                "cpu",
                "250",
            ),
        ];
        for (item, path, want) in table {
            let f = downward_files(&pod(), &items(serde_json::json!([item])), 0o644).unwrap();
            assert_eq!(f[path], (want.as_bytes().to_vec(), 0o644), "{path}");
        }
        let bad = [
            serde_json::json!({"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}),
            serde_json::json!({"path": "../x", "fieldRef": {"fieldPath": "metadata.name"}}),
            serde_json::json!({"path": "m", "resourceFieldRef": {"containerName": "nope", "resource": "limits.memory"}}),
        ];
        for item in bad {
            assert!(
                downward_files(&pod(), &items(serde_json::json!([item.clone()])), 0o644).is_err(),
                "{item}"
            );
        }
        let moded = downward_files(
            &pod(),
            &items(serde_json::json!([{"path": "n", "mode": 0o400, "fieldRef": {"fieldPath": "metadata.name"}}])),
            0o644,
        )
        .unwrap();
        assert_eq!(moded["n"].1, 0o400);
    }

    #[test]
    fn projected_sources_together() {
        let p: k8s_openapi::api::core::v1::ProjectedVolumeSource =
            serde_json::from_value(serde_json::json!({"defaultMode": 0o600, "sources": [
                {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                {"configMap": {"name": "cm", "items": [{"key": "k", "path": "conf/k"}]}},
                {"secret": {"name": "s"}},
                {"serviceAccountToken": {"path": "token"}}
            ]}))
            .unwrap();
        let mut src = EnvSources::default();
        src.config_maps
            .insert("cm".into(), BTreeMap::from([("k".into(), "v".into())]));
        src.secrets
            .insert("s".into(), BTreeMap::from([("pw".into(), "x".into())]));
        let f = projected_files(&pod(), &p, &src).unwrap();
        let keys: Vec<&str> = f.keys().map(String::as_str).collect();
        assert_eq!(keys, ["conf/k", "name", "pw"]);
        assert_eq!(f["pw"], (b"x".to_vec(), 0o600));
        src.secrets.clear();
        assert!(matches!(
            projected_files(&pod(), &p, &src),
            Err(DownwardError::Missing { kind: "secret", .. })
        ));
    }

    #[test]
    fn atomic_writer_swaps_data() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut files = Files::new();
        files.insert("labels".into(), (b"a=\"1\"".to_vec(), 0o644));
        files.insert("sub/name".into(), (b"web".to_vec(), 0o644));
        assert!(write_atomic(d, &files).unwrap());
        assert!(
            !write_atomic(d, &files).unwrap(),
            "unchanged: nothing written"
        );
        let first = std::fs::read_link(d.join("..data")).unwrap();
        assert_eq!(
            std::fs::read_link(d.join("labels")).unwrap(),
            Path::new("..data/labels")
        );
        assert_eq!(std::fs::read_to_string(d.join("sub/name")).unwrap(), "web");
        files.insert("labels".into(), (b"a=\"2\"".to_vec(), 0o644));
        files.remove("sub/name");
        assert!(write_atomic(d, &files).unwrap());
        assert_eq!(
            std::fs::read_to_string(d.join("labels")).unwrap(),
            "a=\"2\""
        );
        assert_ne!(std::fs::read_link(d.join("..data")).unwrap(), first);
        assert!(!d.join(&first).exists(), "the old generation is removed");
        assert!(
            std::fs::symlink_metadata(d.join("sub")).is_err(),
            "a name no longer written goes"
        );
    }
}

//! emptyDir volumes with `medium: Memory`: a tmpfs per volume, as the kubelet's empty_dir
//! plugin mounts it, sized as `calculateEmptyDirMemorySize` does: the node's allocatable
//! memory, or the pod's memory limit (its cgroup's, see `podcgroup`) when smaller, or the
//! volume's `sizeLimit` when smaller still. The mounts are taken down before the pod's
//! directories are removed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Pod};

use crate::qos::parse_quantity;

/// Errors mounting or unmounting a memory volume.
#[derive(Debug, thiserror::Error)]
pub enum MemVolumeError {
    /// mount(2) refused.
    #[error("cannot mount a tmpfs of {size} bytes on {path}")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// umount(2) refused.
    #[error("cannot unmount {path}")]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The mount point could not be inspected.
    #[error("cannot inspect {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Whether the emptyDir asks for memory.
pub fn is_memory(e: &EmptyDirVolumeSource) -> bool {
    e.medium.as_deref() == Some("Memory")
}

/// The node's allocatable memory in bytes: MemTotal less the 100Mi hard eviction threshold
/// (what the Node reports).
pub fn node_allocatable_memory() -> u64 {
    let kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    kib.saturating_sub(100 * 1024) * 1024
}

/// `calculateEmptyDirMemorySize`: the least of the node's allocatable memory, the pod's
/// memory limit (when it has one) and the volume's sizeLimit (when set); zero values are
/// ignored.
pub fn size(pod: &Pod, e: &EmptyDirVolumeSource, node_allocatable: u64) -> u64 {
    let mut size = node_allocatable;
    if let Some(m) = crate::podcgroup::pod_resources(pod).memory
        && m > 0
        && (m as u64) <= size
    {
        size = m as u64;
    }
    if let Some(l) = e.size_limit.as_ref().and_then(parse_quantity)
        && l > 0.0
        && (l.ceil() as u64) <= size
    {
        size = l.ceil() as u64;
    }
    size
}

/// Whether `path` is a mount point (its device differs from its parent's).
fn is_mount_point(path: &Path) -> Result<bool, MemVolumeError> {
    let io = |source| MemVolumeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let me = std::fs::metadata(path).map_err(io)?;
    let parent = path.parent().unwrap_or(Path::new("/"));
    let up = std::fs::metadata(parent).map_err(io)?;
    Ok(me.dev() != up.dev())
}

/// Mounts a tmpfs of `size` bytes (mode 0777, as the kubelet's emptyDir) on the directory
/// `path` unless one is there already.
pub fn mount(path: &Path, size: u64) -> Result<(), MemVolumeError> {
    if is_mount_point(path)? {
        return Ok(());
    }
    let data = format!("mode=0777,size={size}");
    nix::mount::mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|source| MemVolumeError::Mount {
        path: path.to_path_buf(),
        size,
        source,
    })?;
    tracing::info!(path = %path.display(), size, "memory emptyDir mounted");
    Ok(())
}

/// The mount points under `dir` in `mountinfo` (deepest first).
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir) && m != dir)
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out.dedup();
    out
}

/// Unmounts every mount under `dir` (the pod's memory volumes).
pub fn unmount_all(dir: &Path) -> Result<(), MemVolumeError> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| MemVolumeError::Io {
            path: "/proc/self/mountinfo".into(),
            source,
        })?;
    for m in mounts_under(&info, dir) {
        match nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
            Err(source) => return Err(MemVolumeError::Unmount { path: m, source }),
        }
        tracing::info!(path = %m.display(), "memory emptyDir unmounted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn size_is_the_least_of_node_pod_and_limit() {
        let mi = 1u64 << 20;
        let pod = |lim: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"spec": {"containers": [
                {"name": "c", "image": "i", "resources": {"limits": lim}}]}}))
            .unwrap()
        };
        let ed = |limit: Option<&str>| -> EmptyDirVolumeSource {
            serde_json::from_value(json!({"medium": "Memory", "sizeLimit": limit})).unwrap()
        };
        let node = 1024 * mi;
        let table = [
            (json!({}), None, node),
            (json!({"memory": "256Mi"}), None, 256 * mi),
            (json!({"memory": "256Mi"}), Some("16Mi"), 16 * mi),
            (json!({}), Some("16Mi"), 16 * mi),
            (json!({"memory": "256Mi"}), Some("2Gi"), 256 * mi),
            (json!({"memory": "4Gi"}), None, node),
            (json!({}), Some("0"), node),
        ];
        for (lim, limit, want) in table {
            assert_eq!(
                size(&pod(lim.clone()), &ed(limit), node),
                want,
                "{lim} {limit:?}"
            );
        }
        assert!(is_memory(&ed(None)));
        assert!(!is_memory(&EmptyDirVolumeSource::default()));
        assert!(node_allocatable_memory() > 0);
    }

    #[test]
    fn mounts_under_a_dir_deepest_first() {
        let info = "\
22 1 0:21 / / rw - ext4 /dev/sda rw
40 22 0:40 / /var/lib/s/pods/u/volumes/kubernetes.io~empty-dir/a rw - tmpfs tmpfs rw
41 22 0:41 / /var/lib/s/pods/u/volumes/kubernetes.io~empty-dir/a/b rw - tmpfs tmpfs rw
42 22 0:42 / /var/lib/s/pods/u2/volumes/x rw - tmpfs tmpfs rw
43 22 0:43 / /var/lib/s/pods/u/volumes/with\\040space rw - tmpfs tmpfs rw
";
        let got = mounts_under(info, Path::new("/var/lib/s/pods/u"));
        assert_eq!(
            got,
            vec![
                PathBuf::from("/var/lib/s/pods/u/volumes/kubernetes.io~empty-dir/a/b"),
                PathBuf::from("/var/lib/s/pods/u/volumes/kubernetes.io~empty-dir/a"),
                PathBuf::from("/var/lib/s/pods/u/volumes/with space"),
            ]
        );
    }
}

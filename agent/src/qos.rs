//! QoS classes (Kubernetes' rules) and the cgroup layout the kubelet uses, under the agent's
//! prefix: Guaranteed pods at `/<prefix>/pod<uid>`, the others under
//! `/<prefix>/burstable/pod<uid>` and `/<prefix>/besteffort/pod<uid>`; each container in
//! `<pod cgroup>/<container id>`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A pod's quality-of-service class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    /// Every container has cpu and memory limits equal to its requests.
    Guaranteed,
    /// Some request or limit, not Guaranteed.
    Burstable,
    /// No cpu or memory request or limit anywhere.
    BestEffort,
}

impl QosClass {
    /// The name in `status.qosClass`.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

const TRACKED: [&str; 2] = ["cpu", "memory"];

fn nonzero(q: &Quantity) -> bool {
    parse_quantity(q).is_some_and(|v| v > 0.0)
}

/// A resource quantity as a number (cpu in cores, memory in bytes); `None` if malformed.
pub fn parse_quantity(q: &Quantity) -> Option<f64> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0f64.powi(2),
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// Kubernetes' `GetPodQOS` over all containers (init containers included).
pub fn qos_class(pod: &Pod) -> QosClass {
    let Some(spec) = &pod.spec else {
        return QosClass::BestEffort;
    };
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let res = c.resources.clone().unwrap_or_default();
        let requests = res.requests.unwrap_or_default();
        let limits = res.limits.unwrap_or_default();
        for r in TRACKED {
            let req = requests.get(r).filter(|q| nonzero(q));
            let lim = limits.get(r).filter(|q| nonzero(q));
            if req.is_some() || lim.is_some() {
                any = true;
            }
            match (req, lim) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if parse_quantity(q) != parse_quantity(l) => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        QosClass::BestEffort
    } else if guaranteed {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// The pod's cgroup path (relative to each hierarchy's root).
pub fn pod_cgroup(prefix: &str, qos: QosClass, uid: &str) -> PathBuf {
    let base = PathBuf::from("/").join(prefix.trim_matches('/'));
    match qos {
        QosClass::Guaranteed => base.join(format!("pod{uid}")),
        QosClass::Burstable => base.join("burstable").join(format!("pod{uid}")),
        QosClass::BestEffort => base.join("besteffort").join(format!("pod{uid}")),
    }
}

/// Every directory a cgroup path has on this host: one per v1 hierarchy, or the one v2 path.
pub fn cgroup_dirs(cgroup_root: &Path, path: &Path) -> Vec<PathBuf> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    if cgroup_root.join("cgroup.controllers").exists() {
        return vec![cgroup_root.join(rel)];
    }
    let Ok(entries) = std::fs::read_dir(cgroup_root) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path().join(rel))
        .collect();
    out.sort();
    out
}

/// Removes a cgroup (and the child cgroups under it) from every hierarchy. Cgroups still
/// holding processes stay; the error names the first one.
pub fn remove_cgroup(cgroup_root: &Path, path: &Path) -> std::io::Result<()> {
    let mut first_err = None;
    for dir in cgroup_dirs(cgroup_root, path) {
        if let Err(e) = remove_tree(&dir) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(resources: &[serde_json::Value]) -> Pod {
        let containers: Vec<serde_json::Value> = resources
            .iter()
            .enumerate()
            .map(
                |(i, r)| serde_json::json!({"name": format!("c{i}"), "image": "x", "resources": r}),
            )
            .collect();
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": containers}}),
        )
        .unwrap()
    }

    #[test]
    fn qos_table() {
        use serde_json::json;
        let g = json!({"limits": {"cpu": "500m", "memory": "64Mi"}});
        let g2 = json!({"requests": {"cpu": "0.5", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "67108864"}});
        let b = json!({"requests": {"cpu": "100m"}});
        let b2 = json!({"requests": {"cpu": "100m", "memory": "1Mi"}, "limits": {"cpu": "200m", "memory": "1Mi"}});
        let none = json!({});
        let cases = [
            (vec![none.clone()], QosClass::BestEffort),
            (vec![g.clone()], QosClass::Guaranteed),
            (vec![g2.clone(), g.clone()], QosClass::Guaranteed),
            (vec![b.clone()], QosClass::Burstable),
            (vec![b2], QosClass::Burstable),
            (vec![g, none], QosClass::Burstable),
        ];
        for (res, want) in cases {
            assert_eq!(qos_class(&pod(&res)), want, "{res:?}");
        }
    }

    #[test]
    fn quantities() {
        let q = |s: &str| parse_quantity(&Quantity(s.into()));
        assert_eq!(q("500m"), Some(0.5));
        assert!((q("12345n").unwrap() - 12345e-9).abs() < 1e-15);
        assert!((q("3u").unwrap() - 3e-6).abs() < 1e-15);
        assert_eq!(q("2"), Some(2.0));
        assert_eq!(q("64Mi"), Some(67_108_864.0));
        assert_eq!(q("1G"), Some(1e9));
        assert_eq!(q("1e3"), Some(1000.0));
        assert_eq!(q("12x"), None);
    }

    #[test]
    fn cgroup_paths_and_removal() {
        assert_eq!(
            pod_cgroup("t", QosClass::Guaranteed, "u"),
            PathBuf::from("/t/podu")
        );
        assert_eq!(
            pod_cgroup("/t/", QosClass::Burstable, "u"),
            PathBuf::from("/t/burstable/podu")
        );
        assert_eq!(
            pod_cgroup("t", QosClass::BestEffort, "u"),
            PathBuf::from("/t/besteffort/podu")
        );
        // a fake v1 layout: two hierarchies
        let root = tempfile::tempdir().unwrap();
        for h in ["cpu", "memory"] {
            std::fs::create_dir_all(root.path().join(h).join("t/besteffort/podu/c1")).unwrap();
        }
        let p = pod_cgroup("t", QosClass::BestEffort, "u");
        assert_eq!(cgroup_dirs(root.path(), &p).len(), 2);
        remove_cgroup(root.path(), &p).unwrap();
        assert!(!root.path().join("cpu/t/besteffort/podu").exists());
        assert!(root.path().join("cpu/t/besteffort").exists());
        remove_cgroup(root.path(), &p).unwrap();
    }
}

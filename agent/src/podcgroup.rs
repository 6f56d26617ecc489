//! Pod-level cgroup limits as the kubelet's pod container manager sets them
//! (`ResourceConfigForPod`): cpu shares from the pod's requests; cpu quota (100 ms period)
//! and the memory limit from the pod's limits when every container declares them
//! (always for Guaranteed pods); BestEffort pods get the minimum shares only. The pod's
//! requests and limits are the kubelet's `PodRequests`/`PodLimits`: the app containers and
//! sidecars summed, at least the largest init container (plus the sidecars started before
//! it), plus `spec.overhead`. Written to the pod cgroup before its first container starts,
//! on cgroup v1 (`cpu.shares`, `cpu.cfs_period_us`, `cpu.cfs_quota_us`,
//! `memory.limit_in_bytes`) or v2 (`cpu.weight`, `cpu.max`, `memory.max`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::qos::{QosClass, parse_quantity, qos_class};

/// The CFS period the kubelet uses (100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The least cpu shares (`MinShares`).
pub const MIN_SHARES: u64 = 2;
/// The most cpu shares (`MaxShares`).
pub const MAX_SHARES: u64 = 262_144;
/// The least quota (`MinQuotaPeriod`, 1 ms).
pub const MIN_QUOTA_US: i64 = 1000;

/// Errors writing a pod cgroup; each names the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {value:?} to {path}")]
pub struct PodCgroupError {
    /// The cgroup file.
    pub path: PathBuf,
    /// What was written.
    pub value: String,
    /// Why it failed.
    #[source]
    pub source: std::io::Error,
}

/// What the pod cgroup gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodResources {
    /// cpu.shares (v1) / cpu.weight after conversion (v2).
    pub cpu_shares: u64,
    /// CFS quota in µs over [`CPU_PERIOD_US`], when limited.
    pub cpu_quota: Option<i64>,
    /// Memory limit in bytes, when limited.
    pub memory: Option<i64>,
}

/// Sums of cpu (millicores) and memory (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Amounts {
    cpu_milli: i64,
    memory: i64,
}

impl Amounts {
    fn add(self, o: Amounts) -> Amounts {
        Amounts {
            cpu_milli: self.cpu_milli + o.cpu_milli,
            memory: self.memory + o.memory,
        }
    }
    fn max(self, o: Amounts) -> Amounts {
        Amounts {
            cpu_milli: self.cpu_milli.max(o.cpu_milli),
            memory: self.memory.max(o.memory),
        }
    }
}

fn amounts(list: Option<&BTreeMap<String, Quantity>>) -> Amounts {
    let get = |k: &str| list.and_then(|m| m.get(k)).and_then(parse_quantity);
    Amounts {
        cpu_milli: get("cpu").map(|v| (v * 1000.0).ceil() as i64).unwrap_or(0),
        memory: get("memory").map(|v| v.ceil() as i64).unwrap_or(0),
    }
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The kubelet's aggregation of a pod's requests or limits: app containers and sidecars
/// summed, at least each init container plus the sidecars before it, plus the overhead.
fn aggregate(pod: &Pod, of: impl Fn(&Container) -> Amounts) -> Amounts {
    let Some(spec) = &pod.spec else {
        return Amounts::default();
    };
    let mut total = spec
        .containers
        .iter()
        .map(&of)
        .fold(Amounts::default(), Amounts::add);
    let mut sidecars = Amounts::default();
    let mut init_max = Amounts::default();
    for c in spec.init_containers.iter().flatten() {
        let own = of(c);
        let need = if is_sidecar(c) {
            total = total.add(own);
            sidecars = sidecars.add(own);
            sidecars
        } else {
            own.add(sidecars)
        };
        init_max = init_max.max(need);
    }
    total = total.max(init_max);
    if let Some(o) = &spec.overhead {
        let o = amounts(Some(o));
        // the overhead goes only onto amounts the containers declared
        if total.cpu_milli > 0 {
            total.cpu_milli += o.cpu_milli;
        }
        if total.memory > 0 {
            total.memory += o.memory;
        }
    }
    total
}

/// `MilliCPUToShares`.
pub fn milli_cpu_to_shares(milli: i64) -> u64 {
    if milli <= 0 {
        return MIN_SHARES;
    }
    ((milli as u64) * 1024 / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// `MilliCPUToQuota` over the kubelet's period.
pub fn milli_cpu_to_quota(milli: i64) -> i64 {
    if milli <= 0 {
        return 0;
    }
    (milli * CPU_PERIOD_US as i64 / 1000).max(MIN_QUOTA_US)
}

/// `ResourceConfigForPod`: what the pod cgroup gets.
pub fn pod_resources(pod: &Pod) -> PodResources {
    let qos = qos_class(pod);
    if qos == QosClass::BestEffort {
        return PodResources {
            cpu_shares: MIN_SHARES,
            cpu_quota: None,
            memory: None,
        };
    }
    let res = |c: &Container| c.resources.clone().unwrap_or_default();
    // a request left out defaults to the limit (API defaulting)
    let requests = aggregate(pod, |c| {
        let r = res(c);
        let req = amounts(r.requests.as_ref());
        let lim = amounts(r.limits.as_ref());
        Amounts {
            cpu_milli: if req.cpu_milli > 0 {
                req.cpu_milli
            } else {
                lim.cpu_milli
            },
            memory: if req.memory > 0 {
                req.memory
            } else {
                lim.memory
            },
        }
    });
    let limits = aggregate(pod, |c| amounts(res(c).limits.as_ref()));
    let spec = pod.spec.clone().unwrap_or_default();
    let all: Vec<Amounts> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| amounts(res(c).limits.as_ref()))
        .collect();
    let cpu_declared = all.iter().all(|a| a.cpu_milli > 0);
    let memory_declared = all.iter().all(|a| a.memory > 0);
    let guaranteed = qos == QosClass::Guaranteed;
    PodResources {
        cpu_shares: milli_cpu_to_shares(requests.cpu_milli),
        cpu_quota: (guaranteed || cpu_declared).then(|| milli_cpu_to_quota(limits.cpu_milli)),
        memory: (guaranteed || memory_declared).then_some(limits.memory),
    }
}

/// cgroup v2's `cpu.weight` for v1 shares (the OCI runtimes' conversion).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.saturating_sub(2)) * 9999) / 262_142
}

/// The files and values for the pod cgroup: `(controller dir, file, value)`, the controller
/// dir empty on v2.
pub fn cgroup_files(r: &PodResources, v2: bool) -> Vec<(&'static str, &'static str, String)> {
    let mut out = Vec::new();
    if v2 {
        out.push(("", "cpu.weight", shares_to_weight(r.cpu_shares).to_string()));
        out.push((
            "",
            "cpu.max",
            match r.cpu_quota {
                Some(q) => format!("{q} {CPU_PERIOD_US}"),
                None => format!("max {CPU_PERIOD_US}"),
            },
        ));
        out.push((
            "",
            "memory.max",
            r.memory
                .map_or_else(|| "max".to_string(), |m| m.to_string()),
        ));
    } else {
        out.push(("cpu", "cpu.shares", r.cpu_shares.to_string()));
        out.push(("cpu", "cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
        out.push((
            "cpu",
            "cpu.cfs_quota_us",
            r.cpu_quota.unwrap_or(-1).to_string(),
        ));
        if let Some(m) = r.memory {
            out.push(("memory", "memory.limit_in_bytes", m.to_string()));
        }
    }
    out
}

/// Creates the pod cgroup at `path` (under `root`) and writes its limits. On v2 the cpu
/// and memory controllers are enabled down the path first.
pub fn apply(root: &Path, path: &Path, r: &PodResources) -> Result<(), PodCgroupError> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let v2 = root.join("cgroup.controllers").exists();
    let write = |file: PathBuf, value: &str| {
        std::fs::write(&file, value).map_err(|source| PodCgroupError {
            path: file,
            value: value.to_string(),
            source,
        })
    };
    let mkdir = |dir: &Path| {
        std::fs::create_dir_all(dir).map_err(|source| PodCgroupError {
            path: dir.to_path_buf(),
            value: String::new(),
            source,
        })
    };
    if v2 {
        let mut dir = root.to_path_buf();
        for comp in rel.components() {
            // the parent delegates cpu and memory to its children
            write(dir.join("cgroup.subtree_control"), "+cpu +memory")?;
            dir = dir.join(comp);
            mkdir(&dir)?;
        }
    }
    for (ctrl, file, value) in cgroup_files(r, v2) {
        let dir = if v2 {
            root.join(rel)
        } else {
            root.join(ctrl).join(rel)
        };
        mkdir(&dir)?;
        write(dir.join(file), &value)?;
    }
    tracing::debug!(cgroup = %path.display(), shares = r.cpu_shares, quota = ?r.cpu_quota,
        memory = ?r.memory, "pod cgroup limits set");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn c(name: &str, req: serde_json::Value, lim: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "image": "i", "resources": {"requests": req, "limits": lim}})
    }

    #[test]
    fn resource_config_for_pod() {
        let mi = 1i64 << 20;
        let table = [
            // Guaranteed: sums of limits, shares from the requests
            (
                json!({"containers": [
                    c("a", json!({"cpu": "250m", "memory": "64Mi"}), json!({"cpu": "250m", "memory": "64Mi"})),
                    c("b", json!({"cpu": "500m", "memory": "32Mi"}), json!({"cpu": "500m", "memory": "32Mi"}))]}),
                PodResources {
                    cpu_shares: 768,
                    cpu_quota: Some(75_000),
                    memory: Some(96 * mi),
                },
            ),
            // Burstable with every limit declared (requests default to limits where missing)
            (
                json!({"containers": [
                    c("a", json!({"cpu": "100m"}), json!({"cpu": "1", "memory": "128Mi"})),
                    c("b", json!({}), json!({"cpu": "200m", "memory": "64Mi"}))]}),
                PodResources {
                    cpu_shares: 307,
                    cpu_quota: Some(120_000),
                    memory: Some(192 * mi),
                },
            ),
            // Burstable, one container without limits: no quota, no memory limit
            (
                json!({"containers": [
                    c("a", json!({"cpu": "100m"}), json!({"cpu": "1", "memory": "128Mi"})),
                    c("b", json!({"cpu": "100m"}), json!({}))]}),
                PodResources {
                    cpu_shares: 204,
                    cpu_quota: None,
                    memory: None,
                },
            ),
            // Burstable, memory declared everywhere but cpu not
            (
                json!({"containers": [
                    c("a", json!({"memory": "10Mi"}), json!({"memory": "20Mi"}))]}),
                PodResources {
                    cpu_shares: 2,
                    cpu_quota: None,
                    memory: Some(20 * mi),
                },
            ),
            // BestEffort
            (
                json!({"containers": [{"name": "a", "image": "i"}]}),
                PodResources {
                    cpu_shares: 2,
                    cpu_quota: None,
                    memory: None,
                },
            ),
            // a big init container sets the floor; overhead is added
            (
                json!({"overhead": {"cpu": "100m", "memory": "16Mi"},
                    "initContainers": [c("i", json!({"cpu": "2", "memory": "256Mi"}), json!({"cpu": "2", "memory": "256Mi"}))],
                    "containers": [c("a", json!({"cpu": "1", "memory": "64Mi"}), json!({"cpu": "1", "memory": "64Mi"}))]}),
                PodResources {
                    cpu_shares: 2150,
                    cpu_quota: Some(210_000),
                    memory: Some(272 * mi),
                },
            ),
            // a sidecar adds to the app containers and to later init containers
            (
                json!({"initContainers": [
                        c("s", json!({"cpu": "500m", "memory": "64Mi"}), json!({"cpu": "500m", "memory": "64Mi"})),
                        c("i", json!({"cpu": "1", "memory": "64Mi"}), json!({"cpu": "1", "memory": "64Mi"}))],
                    "containers": [c("a", json!({"cpu": "200m", "memory": "32Mi"}), json!({"cpu": "200m", "memory": "32Mi"}))]}),
                PodResources {
                    cpu_shares: 1536,
                    cpu_quota: Some(150_000),
                    memory: Some(128 * mi),
                },
            ),
        ];
        for (i, (spec, want)) in table.into_iter().enumerate() {
            let mut spec = spec;
            if let Some(inits) = spec
                .get_mut("initContainers")
                .and_then(|v| v.as_array_mut())
                && i == 6
            {
                inits[0]["restartPolicy"] = json!("Always");
            }
            assert_eq!(pod_resources(&pod(spec.clone())), want, "case {i}: {spec}");
        }
    }

    #[test]
    fn conversions() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(1_000_000), MAX_SHARES);
        assert_eq!(milli_cpu_to_quota(0), 0);
        assert_eq!(milli_cpu_to_quota(5), 1000);
        assert_eq!(milli_cpu_to_quota(1500), 150_000);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn files_v1_and_v2() {
        let r = PodResources {
            cpu_shares: 1024,
            cpu_quota: Some(50_000),
            memory: Some(1 << 26),
        };
        assert_eq!(
            cgroup_files(&r, false),
            vec![
                ("cpu", "cpu.shares", "1024".to_string()),
                ("cpu", "cpu.cfs_period_us", "100000".into()),
                ("cpu", "cpu.cfs_quota_us", "50000".into()),
                ("memory", "memory.limit_in_bytes", "67108864".into()),
            ]
        );
        assert_eq!(
            cgroup_files(&r, true),
            vec![
                ("", "cpu.weight", "39".to_string()),
                ("", "cpu.max", "50000 100000".into()),
                ("", "memory.max", "67108864".into()),
            ]
        );
        let open = PodResources {
            cpu_shares: 2,
            cpu_quota: None,
            memory: None,
        };
        assert_eq!(cgroup_files(&open, false)[2].2, "-1");
        assert_eq!(cgroup_files(&open, false).len(), 3);
        assert_eq!(cgroup_files(&open, true)[1].2, "max 100000");
        assert_eq!(cgroup_files(&open, true)[2].2, "max");
    }

    #[test]
    fn apply_writes_a_fake_v2_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("cgroup.controllers"), "cpu memory").unwrap();
        let r = PodResources {
            cpu_shares: 1024,
            cpu_quota: Some(20_000),
            memory: Some(1 << 20),
        };
        apply(root, Path::new("/pfx/burstable/podu"), &r).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+cpu +memory");
        assert_eq!(read("pfx/burstable/cgroup.subtree_control"), "+cpu +memory");
        assert_eq!(read("pfx/burstable/podu/cpu.max"), "20000 100000");
        assert_eq!(read("pfx/burstable/podu/memory.max"), "1048576");
        assert_eq!(read("pfx/burstable/podu/cpu.weight"), "39");
    }
}

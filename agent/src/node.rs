//! The Node object: capacity and allocatable read from the machine, addresses, labels,
//! nodeInfo and the four conditions with Kubernetes' reasons; registration, the Lease
//! renewed every 10 s in kube-node-lease, and Node status sent on change and at least every
//! 5 minutes (as the kubelet's `nodeStatusReportFrequency`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

use crate::config::Config;
use crate::error::{Error, Result};

/// How often the Lease is renewed.
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// The Lease duration written into the Lease (the kubelet's default).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// Node status is sent at least this often even when nothing changed.
pub const STATUS_REPORT: Duration = Duration::from_secs(300);
/// Pods per node, the kubelet's default `maxPods`.
pub const MAX_PODS: u32 = 110;

/// What the machine has, read once per status computation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: u32,
    /// MemTotal in KiB.
    pub memory_kib: u64,
    /// MemAvailable in KiB.
    pub memory_available_kib: u64,
    /// Bytes of the file system holding the root dir.
    pub disk_bytes: u64,
    /// Bytes available there.
    pub disk_available_bytes: u64,
    /// Kernel release.
    pub kernel: String,
    /// PRETTY_NAME of /etc/os-release.
    pub os_image: String,
    /// /etc/machine-id.
    pub machine_id: String,
    /// /proc/sys/kernel/random/boot_id.
    pub boot_id: String,
    /// Threads running now and the kernel's pid_max.
    pub pids: (u64, u64),
}

/// The conditions' inputs: pressure flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pressure {
    /// Less than 100 MiB of memory available (the kubelet's default hard eviction threshold).
    pub memory: bool,
    /// Less than 10 % of the root dir's file system free.
    pub disk: bool,
    /// More than 90 % of pid_max in use.
    pub pid: bool,
}

impl Machine {
    /// Reads the machine's facts; `root_dir` names the file system for ephemeral storage.
    pub fn read(root_dir: &Path) -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let (disk_bytes, disk_available_bytes) = nix::sys::statvfs::statvfs(root_dir)
            .map(|s| {
                let f = s.fragment_size();
                (s.blocks() * f, s.blocks_available() * f)
            })
            .unwrap_or((0, 0));
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        let threads = read("/proc/loadavg")
            .split_whitespace()
            .nth(3)
            .and_then(|r| r.split_once('/'))
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0);
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            memory_kib: field("MemTotal:"),
            memory_available_kib: field("MemAvailable:"),
            disk_bytes,
            disk_available_bytes,
            kernel: read("/proc/sys/kernel/osrelease"),
            os_image,
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            pids: (
                threads,
                read("/proc/sys/kernel/pid_max").parse().unwrap_or(0),
            ),
        }
    }

    /// The pressure flags with the kubelet's default eviction thresholds.
    pub fn pressure(&self) -> Pressure {
        Pressure {
            memory: self.memory_available_kib < 100 * 1024,
            // nodefs.available < 10 % and imagefs.available < 15 %: the image store is in
            // the root dir, so both signals read its file system
            disk: self.disk_bytes > 0
                && (self.disk_available_bytes * 10 < self.disk_bytes
                    || self.disk_available_bytes * 100 < self.disk_bytes * 15),
            pid: self.pids.1 > 0 && self.pids.0 * 10 > self.pids.1 * 9,
        }
    }
}

/// The pod network's readiness, the kubelet's `NetworkReady`: one per node name in the
/// process. Ready unless the agent says otherwise; while it is not, the Node is Ready=False
/// with the kubelet's message. A change wakes the heartbeat, so it is reported at once.
#[derive(Debug, Default)]
pub struct NetworkReadiness {
    not_ready: std::sync::Mutex<Option<String>>,
    changed: tokio::sync::Notify,
}

impl NetworkReadiness {
    /// Why the pod network is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<String> {
        self.not_ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Marks the pod network ready (`None`) or not ready for `why`.
    pub fn set(&self, why: Option<String>) {
        let mut g = self.not_ready.lock().unwrap_or_else(|e| e.into_inner());
        if *g != why {
            *g = why;
            self.changed.notify_one();
        }
    }

    /// Resolves after the next change (at once if one came since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

/// The pod network readiness of node `node`.
pub fn network(node: &str) -> Arc<NetworkReadiness> {
    static ALL: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<NetworkReadiness>>>,
    > = std::sync::OnceLock::new();
    let all = ALL.get_or_init(Default::default);
    match all.lock() {
        Ok(mut g) => g.entry(node.to_string()).or_default().clone(),
        Err(_) => Arc::new(NetworkReadiness::default()),
    }
}

/// The node's pressure: MemoryPressure and DiskPressure from the eviction manager once it
/// has evaluated its thresholds (they hold for the transition period), else the machine's
/// reading with the default thresholds; PIDPressure from the machine.
fn pressure(cfg: &Config, m: &Machine) -> Pressure {
    let mut p = m.pressure();
    if let Some(c) = crate::eviction::shared(&cfg.node_name).conditions() {
        p.memory = c.contains(&crate::eviction::Condition::MemoryPressure);
        p.disk = c.contains(&crate::eviction::Condition::DiskPressure);
    }
    p
}

/// The Go architecture name of this machine (`amd64`, `arm64`, …).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn condition(typ: &str, on: bool, reason: &str, message: &str, now: &Time) -> NodeCondition {
    NodeCondition {
        type_: typ.into(),
        status: if on { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// The four conditions for these pressures and this pod network (`Some(why)`: not ready),
/// with the kubelet's reasons and messages.
pub fn conditions(p: Pressure, network: Option<&str>, now: &Time) -> Vec<NodeCondition> {
    let mut out = vec![
        if p.memory {
            condition(
                "MemoryPressure",
                true,
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
                now,
            )
        } else {
            condition(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                now,
            )
        },
        if p.disk {
            condition(
                "DiskPressure",
                true,
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
                now,
            )
        } else {
            condition(
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                now,
            )
        },
        if p.pid {
            condition(
                "PIDPressure",
                true,
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
                now,
            )
        } else {
            condition(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                now,
            )
        },
    ];
    out.push(match network {
        None => condition(
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status",
            now,
        ),
        Some(why) => condition(
            "Ready",
            false,
            "KubeletNotReady",
            &format!(
                "container runtime network not ready: NetworkReady=false \
                 reason:NetworkPluginNotReady message:{why}"
            ),
            now,
        ),
    });
    out
}

/// The Node status for this machine (pure: `now` and the machine are inputs).
pub fn status(cfg: &Config, m: &Machine, now: &Time) -> NodeStatus {
    let q = |s: String| Quantity(s);
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_string(), q(m.cpus.to_string()));
    capacity.insert("memory".to_string(), q(format!("{}Ki", m.memory_kib)));
    capacity.insert("pods".to_string(), q(MAX_PODS.to_string()));
    capacity.insert(
        "ephemeral-storage".to_string(),
        q(format!("{}Ki", m.disk_bytes / 1024)),
    );
    let mut allocatable = capacity.clone();
    // the kubelet's default hard eviction threshold is kept back from allocatable memory
    allocatable.insert(
        "memory".to_string(),
        q(format!("{}Ki", m.memory_kib.saturating_sub(100 * 1024))),
    );
    allocatable.insert(
        "ephemeral-storage".to_string(),
        q((m.disk_bytes * 9 / 10).to_string()),
    );
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        addresses: Some(
            // the kubelet's order: the InternalIPs (primary first), then the hostname
            cfg.node_ips()
                .into_iter()
                .map(|ip| NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.to_string(),
                })
                .chain([NodeAddress {
                    type_: "Hostname".into(),
                    address: cfg.node_name.clone(),
                }])
                .collect(),
        ),
        conditions: Some(conditions(
            pressure(cfg, m),
            network(&cfg.node_name).not_ready().as_deref(),
            now,
        )),
        node_info: Some(NodeSystemInfo {
            architecture: go_arch().into(),
            boot_id: m.boot_id.clone(),
            container_runtime_version: format!("skiff://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: m.kernel.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: format!("v1.33.0-skiff.{}", env!("CARGO_PKG_VERSION")),
            machine_id: m.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: m.os_image.clone(),
            system_uuid: m.machine_id.clone(),
            swap: None,
        }),
        daemon_endpoints: Some(k8s_openapi::api::core::v1::NodeDaemonEndpoints {
            kubelet_endpoint: Some(k8s_openapi::api::core::v1::DaemonEndpoint {
                port: i32::from(cfg.listen_port),
            }),
        }),
        ..Default::default()
    }
}

/// The Node object registered at first start.
pub fn node_object(cfg: &Config, m: &Machine, now: &Time) -> Node {
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_string(), cfg.node_name.clone());
    labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
    labels.insert("kubernetes.io/arch".to_string(), go_arch().to_string());
    labels.insert("beta.kubernetes.io/os".to_string(), "linux".to_string());
    labels.insert("beta.kubernetes.io/arch".to_string(), go_arch().to_string());
    Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: None,
        status: Some(status(cfg, m, now)),
    }
}

/// Whether two statuses differ in anything but the conditions' heartbeat/transition times.
pub fn differs(a: &NodeStatus, b: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
            c.last_transition_time = None;
        }
        // free memory/disk move all the time; only capacity, allocatable, conditions count
        s
    };
    strip(a) != strip(b)
}

/// Keeps each condition's lastTransitionTime when its status did not change.
pub fn carry_transitions(new: &mut NodeStatus, old: Option<&NodeStatus>) {
    let Some(old) = old.and_then(|o| o.conditions.as_ref()) else {
        return;
    };
    for c in new.conditions.iter_mut().flatten() {
        if let Some(o) = old
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
}

/// Whether a status' Ready condition is True.
fn ready(st: Option<&NodeStatus>) -> bool {
    st.and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Creates the Node, or takes over an existing one (labels merged, status replaced).
pub async fn register(client: &kube::Client, cfg: &Config) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let m = Machine::read(&cfg.root_dir);
    let node = node_object(cfg, &m, &now());
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = serde_json::json!({"metadata": {"labels": node.metadata.labels}});
            api.patch(
                &cfg.node_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| Error::api("patch node", e))?;
        }
        Err(e) => return Err(Error::api("create node", e)),
    }
    // create does not store status: send it through the status subresource
    let existing = api
        .get_status(&cfg.node_name)
        .await
        .ok()
        .and_then(|n| n.status);
    if ready(existing.as_ref()) {
        // a restart of an agent whose node is still Ready: its pod network is most likely
        // still up; a short Ready=False would make the node lifecycle controller mark every
        // pod of the node NotReady (endpoints lose them) and taint the node
        network(&cfg.node_name).set(None);
    }
    let mut st = status(cfg, &m, &now());
    carry_transitions(&mut st, existing.as_ref());
    let patch = serde_json::json!({"status": st});
    api.patch_status(
        &cfg.node_name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| Error::api("patch node status", e))?;
    Ok(())
}

/// The Lease object of this node.
pub fn lease(cfg: &Config, renew: MicroTime) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            namespace: Some("kube-node-lease".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(cfg.node_name.clone()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(renew),
            ..Default::default()
        }),
    }
}

async fn renew_lease(api: &Api<Lease>, cfg: &Config) -> Result<()> {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    match api
        .get_opt(&cfg.node_name)
        .await
        .map_err(|e| Error::api("get lease", e))?
    {
        None => {
            api.create(&PostParams::default(), &lease(cfg, now))
                .await
                .map_err(|e| Error::api("create lease", e))?;
        }
        Some(mut l) => {
            let spec = l.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(now);
            spec.holder_identity = Some(cfg.node_name.clone());
            spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
            api.replace(&cfg.node_name, &PostParams::default(), &l)
                .await
                .map_err(|e| Error::api("update lease", e))?;
        }
    }
    Ok(())
}

async fn report_status(
    api: &Api<Node>,
    cfg: &Config,
    last: &mut Option<(NodeStatus, Instant)>,
) -> Result<()> {
    let m = Machine::read(&cfg.root_dir);
    let mut st = status(cfg, &m, &now());
    let due = match last {
        None => true,
        Some((prev, at)) => differs(prev, &st) || at.elapsed() >= STATUS_REPORT,
    };
    if !due {
        return Ok(());
    }
    let current = api
        .get_status(&cfg.node_name)
        .await
        .map_err(|e| Error::api("get node", e))?;
    carry_transitions(&mut st, current.status.as_ref());
    let patch = serde_json::json!({"status": {"conditions": st.conditions, "capacity": st.capacity,
        "allocatable": st.allocatable, "addresses": st.addresses, "nodeInfo": st.node_info}});
    api.patch_status(
        &cfg.node_name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| Error::api("patch node status", e))?;
    tracing::debug!(node = %cfg.node_name, "node status sent");
    *last = Some((st, Instant::now()));
    Ok(())
}

/// Every 10 s: renews the Lease and sends Node status when it changed or is 5 minutes old.
/// Errors are logged and retried at the next tick.
pub async fn heartbeat(client: kube::Client, cfg: Arc<Config>) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    let mut last = None;
    let mut tick = tokio::time::interval(LEASE_RENEW);
    let net = network(&cfg.node_name);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = net.changed() => {}
        }
        if let Err(e) = renew_lease(&leases, &cfg).await {
            tracing::warn!(node = %cfg.node_name, error = %e, "cannot renew the node lease");
        }
        if let Err(e) = report_status(&nodes, &cfg, &mut last).await {
            tracing::warn!(node = %cfg.node_name, error = %e, "cannot send node status");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            cpus: 4,
            memory_kib: 8 * 1024 * 1024,
            memory_available_kib: 4 * 1024 * 1024,
            disk_bytes: 100 << 30,
            disk_available_bytes: 50 << 30,
            kernel: "6.1.0".into(),
            os_image: "Debian".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
            pids: (100, 4_194_304),
        }
    }

    fn cfg() -> Config {
        Config {
            server: "https://127.0.0.1:6443".into(),
            token: "t".into(),
            ca_file: "/ca".into(),
            node_name: "n1".into(),
            root_dir: "/r".into(),
            run_dir: "/run/x".into(),
            log_dir: "/l".into(),
            node_ip: "10.0.0.5".parse().unwrap(),
            secondary_node_ip: None,
            cgroup_prefix: "skiff".into(),
            cgroup_root: "/sys/fs/cgroup".into(),
            shim_exe: "/skiff".into(),
            insecure_registries: vec![],
            cluster_dns: None,
            cluster_domain: "cluster.local".into(),
            pod_network: None,
            cni: None,
            listen_port: 10250,
            services: Default::default(),
            log_policy: Default::default(),
            image_gc: Default::default(),
            eviction: Default::default(),
        }
    }

    #[test]
    fn pressure_table() {
        type Tweak = fn(&mut Machine);
        let cases: [(Tweak, Pressure); 6] = [
            (|_| {}, Pressure::default()),
            // imagefs.available < 15 %
            (
                |m| m.disk_available_bytes = 14 << 30,
                Pressure {
                    disk: true,
                    ..Default::default()
                },
            ),
            (|m| m.disk_available_bytes = 16 << 30, Pressure::default()),
            (
                |m| m.memory_available_kib = 50 * 1024,
                Pressure {
                    memory: true,
                    ..Default::default()
                },
            ),
            (
                |m| m.disk_available_bytes = 5 << 30,
                Pressure {
                    disk: true,
                    ..Default::default()
                },
            ),
            (
                |m| m.pids = (4_000_000, 4_194_304),
                Pressure {
                    pid: true,
                    ..Default::default()
                },
            ),
        ];
        for (tweak, want) in cases {
            let mut m = machine();
            tweak(&mut m);
            assert_eq!(m.pressure(), want);
        }
    }

    #[test]
    fn status_has_capacity_addresses_and_kubelet_reasons() {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let st = status(&cfg(), &machine(), &now);
        let cap = st.capacity.as_ref().unwrap();
        assert_eq!(cap["cpu"].0, "4");
        assert_eq!(cap["memory"].0, "8388608Ki");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(st.allocatable.as_ref().unwrap()["memory"].0, "8286208Ki");
        let addrs = st.addresses.as_ref().unwrap();
        assert_eq!(addrs[0].type_, "InternalIP");
        assert_eq!(addrs[0].address, "10.0.0.5");
        assert_eq!(addrs[1].type_, "Hostname");
        let conds = st.conditions.as_ref().unwrap();
        let reason = |t: &str| {
            let c = conds.iter().find(|c| c.type_ == t).unwrap();
            (c.status.clone(), c.reason.clone().unwrap())
        };
        assert_eq!(reason("Ready"), ("True".into(), "KubeletReady".into()));
        assert_eq!(
            reason("MemoryPressure"),
            ("False".into(), "KubeletHasSufficientMemory".into())
        );
        assert_eq!(
            reason("DiskPressure"),
            ("False".into(), "KubeletHasNoDiskPressure".into())
        );
        assert_eq!(
            reason("PIDPressure"),
            ("False".into(), "KubeletHasSufficientPID".into())
        );
        let node = node_object(&cfg(), &machine(), &now);
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
    }

    #[tokio::test]
    async fn pod_network_not_ready_is_ready_false_with_the_kubelets_words() {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let conds = conditions(Pressure::default(), Some("no podCIDR yet"), &now);
        let r = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(r.status, "False");
        assert_eq!(r.reason.as_deref(), Some("KubeletNotReady"));
        assert_eq!(
            r.message.as_deref(),
            Some(
                "container runtime network not ready: NetworkReady=false \
                 reason:NetworkPluginNotReady message:no podCIDR yet"
            )
        );
        let net = network("n-network-test");
        assert_eq!(net.not_ready(), None, "ready until told otherwise");
        net.set(Some("why".into()));
        // a change is kept for the heartbeat even when nobody waits yet
        tokio::time::timeout(Duration::from_secs(1), net.changed())
            .await
            .unwrap();
        assert_eq!(
            network("n-network-test").not_ready().as_deref(),
            Some("why")
        );
        net.set(Some("why".into()));
        let unchanged = tokio::time::timeout(Duration::from_millis(50), net.changed()).await;
        assert!(unchanged.is_err(), "no change, no wake-up");
        net.set(None);
        assert_eq!(net.not_ready(), None);
    }

    #[test]
    fn heartbeat_times_alone_are_no_change() {
        let a = status(
            &cfg(),
            &machine(),
            &Time(k8s_openapi::jiff::Timestamp::now()),
        );
        let later = Time(
            k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(30),
        );
        let b = status(&cfg(), &machine(), &later);
        assert!(!differs(&a, &b));
        let mut m = machine();
        m.memory_available_kib = 1;
        let c = status(&cfg(), &m, &later);
        assert!(differs(&a, &c));
        let mut d = c.clone();
        carry_transitions(&mut d, Some(&a));
        let ready = |s: &NodeStatus| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == "Ready")
                .unwrap()
                .last_transition_time
                .clone()
        };
        let mem = |s: &NodeStatus| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == "MemoryPressure")
                .unwrap()
                .last_transition_time
                .clone()
        };
        assert_eq!(
            ready(&d),
            ready(&a),
            "unchanged condition keeps its transition time"
        );
        assert_eq!(
            mem(&d),
            mem(&c),
            "changed condition gets a new transition time"
        );
    }
}

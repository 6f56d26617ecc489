//! The agent's settings. Every path is a field, so several agents run side by side on one
//! machine (tests), each with its own root, run, log and cgroup prefix.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// What `skiff agent` was told.
#[derive(Debug, Clone)]
pub struct Config {
    /// API server URL, `https://host:port`.
    pub server: String,
    /// The node bootstrap token (the master's `DATA_DIR/node-token`).
    pub token: String,
    /// The cluster CA (`DATA_DIR/ca.crt` on the master).
    pub ca_file: PathBuf,
    /// This node's name (default: the hostname).
    pub node_name: String,
    /// Images, snapshots and pod volumes (default /var/lib/skiff).
    pub root_dir: PathBuf,
    /// Runtime state, netns bind mounts, shim sockets (default /run/skiff).
    pub run_dir: PathBuf,
    /// Container logs (default /var/log/pods).
    pub log_dir: PathBuf,
    /// The node's InternalIP (default: the source address of the route to the server).
    pub node_ip: IpAddr,
    /// A dual-stack node's InternalIP of the other family (`--node-ip IPV4,IPV6`).
    pub secondary_node_ip: Option<IpAddr>,
    /// cgroup path under which the QoS parents and pod cgroups are made (default `skiff`).
    pub cgroup_prefix: String,
    /// Where the cgroup hierarchies are mounted (default /sys/fs/cgroup).
    pub cgroup_root: PathBuf,
    /// The binary re-executed as the per-pod shim (`<exe> __shim …`).
    pub shim_exe: PathBuf,
    /// Registries allowed over plain HTTP (loopback registries always are).
    pub insecure_registries: Vec<String>,
    /// The cluster DNS server for ClusterFirst pods (`None`: pods get the host's resolv.conf).
    pub cluster_dns: Option<IpAddr>,
    /// The cluster domain (default cluster.local).
    pub cluster_domain: String,
    /// The pod network (`None`: loopback-only pod namespaces, no pod IPs).
    pub pod_network: Option<crate::network::BridgeOptions>,
    /// CNI plugins as the pod network (`--pod-network cni`; `pod_network` is then `None`).
    pub cni: Option<crate::cni::CniOptions>,
    /// Port of the logs/exec endpoint on the node IP (default 10250; 0: any free port).
    pub listen_port: u16,
    /// The Service proxy and cluster DNS the agent runs in-process.
    pub services: crate::services::ServiceOptions,
    /// Container log rotation (`--container-log-max-size`, `--container-log-max-files`).
    pub log_policy: crate::logrotate::LogPolicy,
    /// Image garbage collection (`--image-gc-high-threshold`, `--image-gc-low-threshold`,
    /// `--image-minimum-gc-age`, `--image-gc-period`).
    pub image_gc: crate::imagegc::GcPolicy,
    /// Node-pressure eviction (`--eviction-hard`, `--eviction-soft`, …).
    pub eviction: crate::eviction::EvictionPolicy,
}

impl Config {
    /// The runtime state root of the pods' containers.
    pub fn runtime_root(&self) -> PathBuf {
        self.run_dir.join("runtime")
    }

    /// The node's InternalIPs, the primary first.
    pub fn node_ips(&self) -> Vec<IpAddr> {
        std::iter::once(self.node_ip)
            .chain(self.secondary_node_ip)
            .collect()
    }

    /// A pod's directory under the run dir (shim socket, container records, bundles).
    pub fn pod_run_dir(&self, uid: &str) -> PathBuf {
        self.run_dir.join("pods").join(uid)
    }

    /// A pod's volumes under the root dir.
    pub fn pod_volume_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid).join("volumes")
    }

    /// A pod's log directory, `<log-dir>/<ns>_<pod>_<uid>`.
    pub fn pod_log_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.log_dir.join(format!("{namespace}_{name}_{uid}"))
    }

    /// A kube client that trusts the cluster CA and authenticates with the node token.
    pub async fn client(&self) -> Result<kube::Client> {
        let kc: kube::config::Kubeconfig = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "skiff", "cluster": {
                "server": self.server,
                "certificate-authority": self.ca_file,
            }}],
            "users": [{"name": "node", "user": {"token": self.token}}],
            "contexts": [{"name": "node", "context": {"cluster": "skiff", "user": "node"}}],
            "current-context": "node",
        }))
        .map_err(|e| Error::Client(e.to_string()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Client(e.to_string()))?;
        kube::Client::try_from(config).map_err(|e| Error::Client(e.to_string()))
    }
}

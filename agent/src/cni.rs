//! Standard CNI plugins as the pod network (`skiff agent --pod-network cni`): the network
//! configuration of `--cni-conf-dir` run with the plugins of `--cni-bin-dir` through
//! skiff-netproxy's [`Cni`] as the kubelet's runtime runs them. The agent waits for a
//! configuration a network add-on may write later (Calico, Flannel), as the kubelet reports
//! the network not ready until then; hostPorts reach the plugins as the `portMappings`
//! capability at ADD.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use skiff_netproxy::podnet::PortMapping;
use skiff_netproxy::podnet::cni::{Cni, CniConfig, PodAttachment};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::sandbox::{PodNetwork, PodRef};

/// Settings of the CNI provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniOptions {
    /// `--cni-conf-dir` (default /etc/cni/net.d).
    pub conf_dir: PathBuf,
    /// `--cni-bin-dir` (default /opt/cni/bin; Debian's plugins are in /usr/lib/cni).
    pub bin_dirs: Vec<PathBuf>,
    /// The cluster's pod CIDRs, one per family (`--cluster-cidr`): the Service proxy
    /// masquerades ClusterIP traffic from outside them.
    pub cluster_cidrs: Vec<ipnet::IpNet>,
}

/// The agent's side of the CNI provider.
#[derive(Debug)]
pub struct CniNetwork(pub Cni);

impl PodNetwork for CniNetwork {
    fn attach(&self, netns: &Path, pod_uid: &str) -> Result<Vec<IpAddr>> {
        self.attach_pod(
            netns,
            &PodRef {
                uid: pod_uid.into(),
                ..PodRef::default()
            },
        )
    }

    fn attach_pod(&self, netns: &Path, pod: &PodRef) -> Result<Vec<IpAddr>> {
        let added = self.0.add(&PodAttachment {
            container_id: pod.uid.clone(),
            netns: netns.to_path_buf(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            port_mappings: pod.host_ports.clone(),
        })?;
        Ok(added.ips)
    }

    fn detach(&self, netns: &Path, pod_uid: &str) -> Result<()> {
        self.0.del(pod_uid, netns)?;
        Ok(())
    }

    /// The portmap plugin mapped them at ADD.
    fn host_ports(&self, _pod_uid: &str, _ports: &[PortMapping]) -> Result<()> {
        Ok(())
    }

    fn retain(&self, live: &HashSet<String>) -> Result<()> {
        let gone = self.0.retain(live)?;
        if !gone.is_empty() {
            tracing::info!(pods = ?gone, "deleted the CNI attachments of pods that are gone");
        }
        Ok(())
    }
}

/// The provider, once the conf dir holds a network whose plugins are in place and speak
/// its version (checked as libcni's `ValidateNetworkList`). Waits until then, logging why.
pub async fn start(cfg: &Config, opts: &CniOptions) -> Result<CniNetwork> {
    let cni = Cni::new(CniConfig {
        conf_dir: opts.conf_dir.clone(),
        bin_dirs: opts.bin_dirs.clone(),
        cache_dir: cfg.root_dir.join("cni").join("cache"),
        ifname: "eth0".into(),
        node_netns: None,
    });
    let mut last_error = String::new();
    loop {
        let c = cni.clone();
        let ready = tokio::task::spawn_blocking(move || -> Result<String> {
            let list = c.network()?.ok_or_else(|| {
                Error::Cni(skiff_netproxy::podnet::cni::Error::NoConfig {
                    dir: c.config().conf_dir.clone(),
                })
            })?;
            c.validate(&list)?;
            Ok(list.name)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?;
        match ready {
            Ok(name) => {
                tracing::info!(network = %name, conf_dir = %opts.conf_dir.display(),
                    "CNI network ready");
                return Ok(CniNetwork(cni));
            }
            Err(e) => {
                let text = crate::shim::error_chain(&e);
                if text != last_error {
                    tracing::warn!(error = %text, "network plugin not ready, waiting");
                    last_error = text;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

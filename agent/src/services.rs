//! The Service proxy and cluster DNS run as tasks of the agent (kube-proxy and a
//! NodeLocal-DNSCache-style resolver on every node), from the agent's client and node.
//!
//! The cluster DNS address (`--cluster-dns`, 10.96.0.10, the ClusterIP of
//! `kube-system/kube-dns`) is put on a dummy link in the node's namespace and the DNS
//! server listens there, so every node answers its own pods at that address. The proxy is
//! told the address is node-local and leaves it alone: no DNAT, no rejection for the
//! kube-dns Service, which has no endpoints (see docs/network.md).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use skiff_netproxy::proxy::rules::{Cidr, NodePortAddresses, RulesConfig};

use crate::config::Config;
use crate::error::Result;

/// How long a failed proxy or DNS task waits before it starts again.
const RESTART_DELAY: Duration = Duration::from_secs(5);

/// Which node services the agent runs, with their settings.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Run the Service proxy (`--proxy`).
    pub proxy: bool,
    /// Serve cluster DNS at the cluster DNS address (`--dns`).
    pub dns: bool,
    /// The Service networks (`--service-cidr`, one per family): their unallocated
    /// addresses are dropped.
    pub service_cidrs: Vec<ipnet::IpNet>,
    /// The dummy link that holds the cluster DNS address.
    pub dns_link: String,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            proxy: false,
            dns: false,
            service_cidrs: vec![ipnet::IpNet::V4(ipnet::Ipv4Net::new_assert(
                [10, 96, 0, 0].into(),
                12,
            ))],
            dns_link: skiff_netproxy::podnet::local::DEFAULT_LINK.into(),
        }
    }
}

/// The cluster DNS address the agent serves, if it serves one.
pub fn dns_address(cfg: &Config) -> Option<IpAddr> {
    cfg.services.dns.then_some(cfg.cluster_dns).flatten()
}

/// The proxy's rules settings for this node: its name, NodePorts on its InternalIP
/// (kube-proxy's `--nodeport-addresses primary`), the cluster and Service CIDRs, and the
/// cluster DNS address as node-local when the agent serves it. Without a pod network
/// there is no cluster CIDR to masquerade traffic from outside of.
pub fn rules_config(cfg: &Config) -> RulesConfig {
    RulesConfig {
        node_name: cfg.node_name.clone(),
        nodeport_addresses: NodePortAddresses::Only(cfg.node_ips()),
        cluster_cidrs: cfg
            .pod_network
            .iter()
            .flat_map(|p| p.cluster_cidrs.iter().copied())
            .chain(cfg.cni.iter().flat_map(|c| c.cluster_cidrs.iter().copied()))
            .map(cidr)
            .collect(),
        service_cidrs: cfg
            .services
            .service_cidrs
            .iter()
            .copied()
            .map(cidr)
            .collect(),
        node_local_ips: dns_address(cfg).into_iter().collect(),
        ..RulesConfig::default()
    }
}

fn cidr(n: ipnet::IpNet) -> Cidr {
    Cidr {
        addr: n.network(),
        prefix: n.prefix_len(),
    }
}

/// Starts the enabled tasks; they run until aborted, restarting after failures. The cluster
/// DNS address is on its link before this returns, so pods started afterwards reach it.
pub fn start(client: &kube::Client, cfg: &Arc<Config>) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    if cfg.services.proxy {
        let settings = skiff_netproxy::proxy::Settings::new(rules_config(cfg));
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let r = skiff_netproxy::proxy::run(
                    client.clone(),
                    settings.clone(),
                    futures::future::pending(),
                )
                .await;
                tracing::warn!(error = ?r.err(), "service proxy stopped; restarting");
                tokio::time::sleep(RESTART_DELAY).await;
            }
        }));
    }
    if let Some(ip) = dns_address(cfg) {
        let ns = skiff_netproxy::podnet::Netns::current()?;
        skiff_netproxy::podnet::local::ensure(&ns, &cfg.services.dns_link, &[ip])?;
        let settings = skiff_netproxy::dns::Settings {
            listen: SocketAddr::new(ip, 53),
            cluster_domain: cfg.cluster_domain.clone(),
            ..skiff_netproxy::dns::Settings::default()
        };
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let r = skiff_netproxy::dns::run(
                    client.clone(),
                    settings.clone(),
                    futures::future::pending(),
                )
                .await;
                tracing::warn!(error = ?r.err(), listen = %settings.listen,
                    "cluster dns stopped; restarting");
                tokio::time::sleep(RESTART_DELAY).await;
            }
        }));
        tracing::info!(address = %ip, "cluster dns serving on this node");
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(services: ServiceOptions, pod_network: bool) -> Config {
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
            cluster_dns: Some("10.96.0.10".parse().unwrap()),
            cluster_domain: "cluster.local".into(),
            pod_network: pod_network.then(|| crate::network::BridgeOptions {
                bridge: "skiff0".into(),
                cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
                mtu: 1500,
                vxlan: false,
            }),
            cni: None,
            listen_port: 10250,
            services,
            log_policy: Default::default(),
            image_gc: Default::default(),
            eviction: Default::default(),
        }
    }

    #[test]
    fn rules_follow_the_node() {
        let on = ServiceOptions {
            proxy: true,
            dns: true,
            ..Default::default()
        };
        let no_dns = ServiceOptions {
            dns: false,
            ..on.clone()
        };
        // (options, pod network, node-local IPs, cluster CIDRs)
        let cases: [(ServiceOptions, bool, &[&str], &[&str]); 3] = [
            (on.clone(), true, &["10.96.0.10"], &["10.244.0.0/16"]),
            (no_dns, true, &[], &["10.244.0.0/16"]),
            (on, false, &["10.96.0.10"], &[]),
        ];
        for (opts, net, local, cidrs) in cases {
            let r = rules_config(&cfg(opts.clone(), net));
            let ctx = format!("{opts:?} pod network {net}");
            assert_eq!(r.node_name, "n1", "{ctx}");
            assert_eq!(
                r.nodeport_addresses,
                NodePortAddresses::Only(vec!["10.0.0.5".parse().unwrap()]),
                "{ctx}"
            );
            let want: Vec<IpAddr> = local.iter().map(|s| s.parse().unwrap()).collect();
            assert_eq!(r.node_local_ips, want, "{ctx}");
            let want: Vec<Cidr> = cidrs.iter().map(|s| s.parse().unwrap()).collect();
            assert_eq!(r.cluster_cidrs, want, "{ctx}");
            assert_eq!(
                r.service_cidrs,
                vec!["10.96.0.0/12".parse::<Cidr>().unwrap()],
                "{ctx}"
            );
        }
        // dual-stack Service ranges: both families' unallocated addresses are dropped
        let dual = ServiceOptions {
            proxy: true,
            service_cidrs: vec![
                "10.96.0.0/12".parse().unwrap(),
                "fd00:10:96::/108".parse().unwrap(),
            ],
            ..Default::default()
        };
        let r = rules_config(&cfg(dual, true));
        let want: Vec<Cidr> = ["10.96.0.0/12", "fd00:10:96::/108"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(r.service_cidrs, want);
    }
}

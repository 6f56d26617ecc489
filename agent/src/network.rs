//! The pod network of this node. With `--pod-network bridge` the agent waits for the
//! master's node IPAM to give its Node a `spec.podCIDR`, makes the bridge network
//! (skiff-netproxy's [`BridgeNetwork`]) from its `spec.podCIDRs` (one IPv4 and one IPv6
//! block when dual-stack, or an IPv6 block alone) and keeps host-gw routes to the other
//! Nodes' podCIDRs (via their InternalIP of each family) in sync with a watch on Nodes. With `vxlan` the same bridge, and the
//! VXLAN overlay instead of host-gw: the agent publishes its VTEP MAC in the Node
//! annotation `skiff.dev/vxlan-mac` and keeps routes, neighbour and FDB entries for the
//! other Nodes in sync. With `none`, pod namespaces keep loopback only ([`LoopbackOnly`]).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, PodSpec};
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use skiff_netproxy::podnet::hostport::Protocol;
use skiff_netproxy::podnet::vxlan::{self, VtepPeer};
use skiff_netproxy::podnet::{BridgeConfig, BridgeNetwork, NodeRoute, PortMapping};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::sandbox::{LoopbackOnly, PodNetwork};

/// Settings of the bridge pod network (`skiff agent --pod-network bridge`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeOptions {
    /// The node bridge's name (`--bridge-name`, default `skiff0`).
    pub bridge: String,
    /// The cluster's pod CIDRs, one per family (`--cluster-cidr`, default 10.244.0.0/16;
    /// dual-stack `10.244.0.0/16,fd00:10:244::/56`): traffic from pods leaving them is
    /// masqueraded.
    pub cluster_cidrs: Vec<IpNet>,
    /// MTU of the bridge and the pods' interfaces (`--pod-mtu`, default 1500; with VXLAN at
    /// most the VXLAN device's).
    pub mtu: u32,
    /// The VXLAN overlay between nodes instead of host-gw routes (`--pod-network vxlan`).
    pub vxlan: bool,
}

/// The agent's side of skiff-netproxy's bridge network.
#[derive(Debug)]
pub struct Bridge(pub Arc<BridgeNetwork>);

impl PodNetwork for Bridge {
    fn attach(&self, netns: &Path, pod_uid: &str) -> Result<Vec<IpAddr>> {
        Ok(self.0.attach(netns, pod_uid)?)
    }

    fn detach(&self, _netns: &Path, pod_uid: &str) -> Result<()> {
        Ok(self.0.detach(pod_uid)?)
    }

    fn retain(&self, live: &HashSet<String>) -> Result<()> {
        self.0.retain(live)?;
        Ok(())
    }

    fn host_ports(&self, pod_uid: &str, ports: &[PortMapping]) -> Result<()> {
        Ok(self.0.set_host_ports(pod_uid, ports)?)
    }
}

/// The containers' ports with a hostPort (kubelet maps those of `containers` only), with
/// their `hostIP` if any (0.0.0.0 and :: are none).
pub fn host_ports(spec: &PodSpec) -> Vec<PortMapping> {
    let mut out: Vec<PortMapping> = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = u16::try_from(p.host_port.filter(|h| *h > 0)?).ok()?;
            let host_ip = match p.host_ip.as_deref().filter(|h| !h.is_empty()) {
                None => None,
                Some(h) => Some(h.parse::<IpAddr>().ok()?).filter(|a| !a.is_unspecified()),
            };
            Some(PortMapping {
                protocol: Protocol::from_api(p.protocol.as_deref())?,
                host_ip,
                host_port,
                container_port: u16::try_from(p.container_port).ok()?,
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A Node's podCIDRs: `spec.podCIDRs`, else `spec.podCIDR` (an older master's).
pub fn pod_cidrs_of(n: &Node) -> Vec<String> {
    let Some(spec) = n.spec.as_ref() else {
        return Vec::new();
    };
    match &spec.pod_cidrs {
        Some(list) if !list.is_empty() => list.clone(),
        _ => spec.pod_cidr.iter().cloned().collect(),
    }
}

/// What the routes need of a Node: each of its podCIDRs with its first InternalIP of that
/// family (a podCIDR whose family has no InternalIP is not routed).
pub fn node_routes(n: &Node) -> Vec<NodeRoute> {
    let Some(name) = n.metadata.name.clone() else {
        return Vec::new();
    };
    let ips: Vec<IpAddr> = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    pod_cidrs_of(n)
        .iter()
        .filter_map(|c| c.parse::<IpNet>().ok())
        .filter_map(|cidr| {
            let ip = ips
                .iter()
                .find(|ip| ip.is_ipv4() == cidr.network().is_ipv4())?;
            Some(NodeRoute {
                name: name.clone(),
                pod_cidr: cidr,
                node_ip: *ip,
            })
        })
        .collect()
}

/// What the overlay needs of a Node: IPv4 podCIDR, IPv4 InternalIP and the VTEP MAC it
/// published, and its IPv6 podCIDR if it has one (carried over the same IPv4 tunnel).
pub fn node_vtep(n: &Node) -> Option<VtepPeer> {
    let r = node_routes(n)
        .into_iter()
        .find_map(|r| match (r.pod_cidr, r.node_ip) {
            (IpNet::V4(c), IpAddr::V4(ip)) => Some((r.name, c, ip)),
            _ => None,
        })?;
    let pod_cidr6 = pod_cidrs_of(n)
        .iter()
        .filter_map(|c| c.parse::<IpNet>().ok())
        .find_map(|c| match c {
            IpNet::V6(v) => Some(v),
            IpNet::V4(_) => None,
        });
    let mac = vxlan::parse_mac(
        n.metadata
            .annotations
            .as_ref()?
            .get(vxlan::MAC_ANNOTATION)?,
    )?;
    Some(VtepPeer {
        name: r.0,
        pod_cidr: r.1,
        pod_cidr6,
        node_ip: r.2,
        mac,
    })
}

/// Publishes this node's VTEP MAC in its Node's annotation (flannel's `backend-data`).
async fn publish_vtep_mac(client: &kube::Client, cfg: &Config, mac: &str) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = serde_json::json!({"metadata": {"annotations": {vxlan::MAC_ANNOTATION: mac}}});
    api.patch(
        &cfg.node_name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .map_err(|e| Error::api("annotate the node with its VTEP MAC", e))?;
    Ok(())
}

/// What the pod network [`start`] sets up waits for, as the Node's Ready condition words
/// it; `None` when there is nothing to set up (no pod network: loopback only).
pub fn waiting_for(cfg: &Config) -> Option<String> {
    match (&cfg.cni, &cfg.pod_network) {
        (Some(c), _) => Some(format!(
            "Network plugin returns error: cni plugin not initialized (no valid network configuration in {})",
            c.conf_dir.display()
        )),
        (None, Some(_)) => Some("the node's podCIDR and pod network are not set up yet".into()),
        (None, None) => None,
    }
}

/// The pod network the configuration asks for. For the bridge network this waits until the
/// Node has a podCIDR, sets the node side up and starts the route sync task.
pub async fn start(client: &kube::Client, cfg: &Arc<Config>) -> Result<Box<dyn PodNetwork>> {
    if let Some(c) = &cfg.cni {
        return Ok(Box::new(crate::cni::start(cfg, c).await?));
    }
    let Some(opts) = cfg.pod_network.clone() else {
        return Ok(Box::new(LoopbackOnly));
    };
    let mut waiting_logged = false;
    let cidrs = loop {
        match own_pod_cidrs(client, cfg).await {
            Ok(c) if !c.is_empty() => break c,
            Ok(_) if !waiting_logged => {
                tracing::info!(node = %cfg.node_name, "waiting for the node's podCIDR");
                waiting_logged = true;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the node's podCIDR"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let pod_cidrs = cidrs
        .iter()
        .map(|c| c.parse::<IpNet>().map_err(|_| Error::PodCidr(c.clone())))
        .collect::<Result<Vec<_>>>()?;
    // the overlay runs over the node's IPv4 InternalIP (primary or secondary)
    let vxlan_ip = match (opts.vxlan, cfg.node_ips().iter().find(|ip| ip.is_ipv4())) {
        (false, _) => None,
        (true, Some(IpAddr::V4(ip))) => Some(*ip),
        (true, _) => return Err(Error::VxlanNodeIp(cfg.node_ip)),
    };
    let net = Arc::new(BridgeNetwork::new(BridgeConfig {
        bridge: opts.bridge,
        pod_cidrs,
        cluster_cidrs: opts.cluster_cidrs,
        mtu: opts.mtu,
        state_dir: cfg.root_dir.join("podnet"),
        node_netns: None,
        vxlan: vxlan_ip,
    })?);
    let n = net.clone();
    tokio::task::spawn_blocking(move || n.setup())
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
    if let Some(ip) = vxlan_ip {
        publish_vtep_mac(client, cfg, &vxlan::format_mac(&vxlan::vtep_mac(ip))).await?;
    }
    tokio::spawn(sync_routes(client.clone(), net.clone()));
    Ok(Box::new(Bridge(net)))
}

/// This node's podCIDRs, once the master (node IPAM) has set them (empty before).
async fn own_pod_cidrs(client: &kube::Client, cfg: &Config) -> Result<Vec<String>> {
    let api: Api<Node> = Api::all(client.clone());
    let n = api
        .get(&cfg.node_name)
        .await
        .map_err(|e| Error::api("get node", e))?;
    Ok(pod_cidrs_of(&n))
}

/// Whether watch event `ev` calls for a route sync, tracking in `ready` whether the
/// reflector's store holds a full list yet. Events of the initial list only fill the store;
/// its end (`InitDone`) and every later change trigger a sync. (Awaiting the store's
/// `wait_until_ready` inside the loop instead would never return: the store only becomes
/// ready while this loop polls the stream.)
fn triggers_sync(ev: &watcher::Event<Node>, ready: &mut bool) -> bool {
    match ev {
        watcher::Event::Init | watcher::Event::InitApply(_) => false,
        watcher::Event::InitDone => {
            *ready = true;
            true
        }
        watcher::Event::Apply(_) | watcher::Event::Delete(_) => *ready,
    }
}

/// Keeps the host-gw routes (or the VXLAN overlay's routes and entries) in line with the
/// Nodes: after every change seen by the watch, and every minute (routes someone else
/// removed come back).
async fn sync_routes(client: kube::Client, net: Arc<BridgeNetwork>) {
    let api: Api<Node> = Api::all(client);
    let (reader, writer) = reflector::store();
    let mut events = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .boxed();
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut last: Option<(Vec<NodeRoute>, Vec<VtepPeer>)> = None;
    let mut ready = false;
    let overlay = net.config().vxlan.is_some();
    loop {
        let forced = tokio::select! {
            ev = events.next() => match ev {
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "node watch failed, retrying");
                    continue;
                }
                Some(Ok(ev)) => {
                    if !triggers_sync(&ev, &mut ready) {
                        continue;
                    }
                    false
                }
                None => return,
            },
            _ = tick.tick() => true,
        };
        if !ready {
            continue;
        }
        let state = reader.state();
        let mut nodes: Vec<NodeRoute> = state.iter().flat_map(|n| node_routes(n)).collect();
        nodes.sort_by(|a, b| (&a.name, a.pod_cidr).cmp(&(&b.name, b.pod_cidr)));
        let mut peers: Vec<VtepPeer> = if overlay {
            state.iter().filter_map(|n| node_vtep(n)).collect()
        } else {
            Vec::new()
        };
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        let key = (nodes, peers);
        if !forced && last.as_ref() == Some(&key) {
            continue;
        }
        let (n, (list, peer_list)) = (net.clone(), key.clone());
        let synced = tokio::task::spawn_blocking(move || {
            if overlay {
                n.sync_vxlan(&peer_list).map(|(r, e)| (r, Some(e)))
            } else {
                n.sync_routes(&list).map(|r| (r, None))
            }
        })
        .await;
        match synced {
            Ok(Ok((s, entries))) => {
                if !s.set.is_empty() || !s.deleted.is_empty() {
                    tracing::info!(set = ?s.set, deleted = ?s.deleted, "pod routes synced");
                }
                if let Some(e) = entries.filter(|e| *e != vxlan::EntrySync::default()) {
                    tracing::info!(neighbours_set = ?e.neighbours_set,
                        neighbours_deleted = ?e.neighbours_deleted, fdb_set = ?e.fdb_set,
                        fdb_deleted = ?e.fdb_deleted, "VXLAN entries synced");
                }
                for (net, gw, e) in &s.failed {
                    tracing::warn!(%net, %gw, error = %e, "cannot route a node's pod CIDR");
                }
                if s.failed.is_empty() {
                    last = Some(key);
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "pod route sync failed"),
            Err(e) => tracing::warn!(error = %e, "pod route sync panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_after_the_initial_list_and_on_changes() {
        let n = || Node::default();
        let mut ready = false;
        let steps = [
            (watcher::Event::Init, false),
            (watcher::Event::InitApply(n()), false),
            (watcher::Event::InitApply(n()), false),
            (watcher::Event::InitDone, true),
            (watcher::Event::Apply(n()), true),
            (watcher::Event::Delete(n()), true),
            // a relist after a broken watch: quiet until its end
            (watcher::Event::Init, false),
            (watcher::Event::InitApply(n()), false),
            (watcher::Event::InitDone, true),
        ];
        for (i, (ev, want)) in steps.iter().enumerate() {
            assert_eq!(triggers_sync(ev, &mut ready), *want, "step {i}");
        }
        let mut not_ready = false;
        assert!(!triggers_sync(&watcher::Event::Apply(n()), &mut not_ready));
    }

    #[test]
    fn routes_from_nodes() {
        let node = |v: serde_json::Value| -> Node { serde_json::from_value(v).unwrap() };
        let full = node(serde_json::json!({
            "metadata": {"name": "n2"},
            "spec": {"podCIDR": "10.244.2.0/24"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n2"},
                {"type": "InternalIP", "address": "192.168.1.2"}
            ]}
        }));
        let r = |cidr: &str, ip: &str| NodeRoute {
            name: "n2".into(),
            pod_cidr: cidr.parse().unwrap(),
            node_ip: ip.parse().unwrap(),
        };
        assert_eq!(node_routes(&full), vec![r("10.244.2.0/24", "192.168.1.2")]);
        // dual-stack: podCIDRs in their order, each via the InternalIP of its family
        let dual = node(serde_json::json!({
            "metadata": {"name": "n2"},
            "spec": {"podCIDR": "fd00:10:244:2::/64",
                "podCIDRs": ["fd00:10:244:2::/64", "10.244.2.0/24"]},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "192.168.1.2"},
                {"type": "InternalIP", "address": "fd00:1::2"}
            ]}
        }));
        assert_eq!(
            node_routes(&dual),
            vec![
                r("fd00:10:244:2::/64", "fd00:1::2"),
                r("10.244.2.0/24", "192.168.1.2")
            ]
        );
        // IPv6 only
        let v6 = node(serde_json::json!({
            "metadata": {"name": "n2"},
            "spec": {"podCIDR": "fd00:10:244:2::/64", "podCIDRs": ["fd00:10:244:2::/64"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "fd00:1::2"}]}
        }));
        assert_eq!(node_routes(&v6), vec![r("fd00:10:244:2::/64", "fd00:1::2")]);
        let cases = [
            // no podCIDR yet
            serde_json::json!({"metadata": {"name": "a"}, "spec": {},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.2"}]}}),
            // no InternalIP
            serde_json::json!({"metadata": {"name": "a"}, "spec": {"podCIDR": "10.244.2.0/24"},
                "status": {"addresses": [{"type": "Hostname", "address": "a"}]}}),
            // an IPv6 podCIDR without an IPv6 InternalIP
            serde_json::json!({"metadata": {"name": "a"}, "spec": {"podCIDR": "fd00::/64"},
                "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}),
        ];
        for c in cases {
            assert_eq!(node_routes(&node(c.clone())), vec![], "{c}");
        }
    }

    #[test]
    fn vtep_peers_from_nodes() {
        let node = |ann: serde_json::Value| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "n2", "annotations": ann},
                "spec": {"podCIDR": "10.244.2.0/24"},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.2"}]}
            }))
            .unwrap()
        };
        assert_eq!(
            node_vtep(&node(
                serde_json::json!({"skiff.dev/vxlan-mac": "0e:5f:c0:a8:01:02"})
            )),
            Some(VtepPeer {
                name: "n2".into(),
                pod_cidr: "10.244.2.0/24".parse().unwrap(),
                pod_cidr6: None,
                node_ip: "192.168.1.2".parse().unwrap(),
                mac: [0x0e, 0x5f, 0xc0, 0xa8, 1, 2],
            })
        );
        // dual-stack: the IPv6 podCIDR rides along (the InternalIP stays IPv4)
        let dual: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n2",
                "annotations": {"skiff.dev/vxlan-mac": "0e:5f:c0:a8:01:02"}},
            "spec": {"podCIDR": "10.244.2.0/24",
                "podCIDRs": ["10.244.2.0/24", "fd00:10:244:2::/64"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.2"}]}
        }))
        .unwrap();
        assert_eq!(
            node_vtep(&dual).and_then(|p| p.pod_cidr6),
            Some("fd00:10:244:2::/64".parse().unwrap())
        );
        for ann in [
            serde_json::json!({}),
            serde_json::json!({"skiff.dev/vxlan-mac": "not-a-mac"}),
            serde_json::json!({"flannel.alpha.coreos.com/backend-data": "{}"}),
        ] {
            assert_eq!(node_vtep(&node(ann.clone())), None, "{ann}");
        }
    }

    #[test]
    fn host_ports_from_specs() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({"containers": [
            {"name": "a", "ports": [
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "192.168.1.2"},
                {"containerPort": 81, "hostPort": 8081, "hostIP": "0.0.0.0"},
                {"containerPort": 82},
                {"containerPort": 83, "hostPort": 0},
                {"containerPort": 84, "hostPort": 8084, "hostIP": "fd00::1"}
            ]},
            {"name": "b", "ports": [{"containerPort": 9000, "hostPort": 9000, "protocol": "SCTP"}]},
            {"name": "c"}
        ]}))
        .unwrap();
        let m = |protocol, host_ip: Option<&str>, host_port, container_port| PortMapping {
            protocol,
            host_ip: host_ip.map(|h| h.parse().unwrap()),
            host_port,
            container_port,
        };
        assert_eq!(
            host_ports(&spec),
            vec![
                m(Protocol::Tcp, None, 8080, 80),
                m(Protocol::Tcp, None, 8081, 81),
                m(Protocol::Tcp, Some("fd00::1"), 8084, 84),
                m(Protocol::Udp, Some("192.168.1.2"), 5353, 53),
                m(Protocol::Sctp, None, 9000, 9000),
            ]
        );
    }
}

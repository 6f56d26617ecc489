//! Node IPAM (kube-controller-manager's range allocator): every Node gets `spec.podCIDRs`,
//! one block of each cluster CIDR (`--cluster-cidr`, one per family, dual-stack when two),
//! and `spec.podCIDR`, the first. Block sizes are `--node-cidr-mask-size-ipv4` (24) and
//! `--node-cidr-mask-size-ipv6` (64), or `--node-cidr-mask-size` on a single-stack cluster.
//! The blocks in use are derived from the stored Nodes on every allocation, so they survive
//! a master restart and a deleted Node's blocks are free again; a node that registers with
//! podCIDRs keeps them; a full range gets a `CIDRNotAvailable` Event.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tracing::{info, warn};

use super::events::{self, EventType};
use super::{Context, ControllerError};
use crate::api::dualstack::{Cidr, Family};

/// Errors of the CIDR arithmetic and the IPAM flags.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    /// The cluster CIDR does not parse.
    #[error("invalid cluster CIDR {cidr}: {reason}")]
    ClusterCidr {
        /// The setting.
        cidr: String,
        /// Why.
        reason: String,
    },
    /// The node mask does not fit the cluster CIDR.
    #[error("node CIDR mask /{mask} does not fit the cluster CIDR {cidr}")]
    Mask {
        /// The cluster CIDR.
        cidr: String,
        /// The node mask.
        mask: u8,
    },
    /// The combination of `--cluster-cidr` and the mask flags is refused (worded as
    /// kube-controller-manager words it).
    #[error("{0}")]
    Flags(String),
}

/// The blocks of one cluster CIDR: block `i` is `base + i * 2^(bits - node_prefix)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrSet {
    cluster: Cidr,
    node_prefix: u8,
}

impl CidrSet {
    /// The blocks of `cluster_cidr` (`10.244.0.0/16`, `fd00:10:244::/56`) of prefix length
    /// `node_mask` (24, 64).
    pub fn new(cluster_cidr: &str, node_mask: u8) -> Result<CidrSet, IpamError> {
        let cluster = Cidr::parse(cluster_cidr).map_err(|reason| IpamError::ClusterCidr {
            cidr: cluster_cidr.into(),
            reason,
        })?;
        let prefix = cluster.prefix();
        // More than 2^16 blocks is more than any cluster has nodes (upstream caps it too).
        if node_mask > cluster.family().bits() || node_mask < prefix || node_mask - prefix > 16 {
            return Err(IpamError::Mask {
                cidr: cluster_cidr.into(),
                mask: node_mask,
            });
        }
        Ok(CidrSet {
            cluster,
            node_prefix: node_mask,
        })
    }

    /// The family of the blocks.
    pub fn family(&self) -> Family {
        self.cluster.family()
    }

    /// How many blocks there are.
    pub fn capacity(&self) -> u32 {
        1u32 << (self.node_prefix - self.cluster.prefix())
    }

    fn block_bits(&self) -> u32 {
        u32::from(self.family().bits() - self.node_prefix)
    }

    /// Block `index` as `a.b.c.d/n` or `x::/n`.
    pub fn cidr(&self, index: u32) -> String {
        let offset = u128::from(index)
            .checked_shl(self.block_bits())
            .unwrap_or(0);
        format!("{}/{}", self.cluster.nth(offset), self.node_prefix)
    }

    /// The index of `cidr` when it is exactly one of our blocks.
    pub fn index_of(&self, cidr: &str) -> Option<u32> {
        let (ip, prefix) = cidr.split_once('/')?;
        let ip: std::net::IpAddr = ip.parse().ok()?;
        if prefix.parse::<u8>().ok()? != self.node_prefix {
            return None;
        }
        let offset = self.cluster.offset(ip)?;
        let bits = self.block_bits();
        let size_mask = u128::MAX.checked_shr(128 - bits).unwrap_or(0);
        if bits > 0 && offset & size_mask != 0 {
            return None;
        }
        let index = u32::try_from(offset.checked_shr(bits).unwrap_or(0)).ok()?;
        (index < self.capacity()).then_some(index)
    }

    /// The lowest free block, given the used ones.
    pub fn allocate(&self, used: &BTreeSet<u32>) -> Option<u32> {
        (0..self.capacity()).find(|i| !used.contains(i))
    }
}

/// kube-controller-manager's defaults of the node mask per family.
const DEFAULT_MASK_V4: u8 = 24;
const DEFAULT_MASK_V6: u8 = 64;

/// The block sets of `--cluster-cidr` (one or two CIDRs, one per family) with the node mask
/// flags (0: not set) checked and applied as kube-controller-manager does
/// (`setNodeCIDRMaskSizes`): `mask` alone applies to a single-stack cluster, the per-family
/// masks otherwise.
pub fn cidr_sets(
    cluster_cidr: &str,
    mask: u8,
    mask_v4: u8,
    mask_v6: u8,
) -> Result<Vec<CidrSet>, IpamError> {
    let parts: Vec<&str> = cluster_cidr
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let mut cidrs = Vec::new();
    for p in &parts {
        cidrs.push(Cidr::parse(p).map_err(|reason| IpamError::ClusterCidr {
            cidr: (*p).into(),
            reason,
        })?);
    }
    if cidrs.is_empty() {
        return Err(IpamError::Flags(
            "--cluster-cidr must contain at least one CIDR".into(),
        ));
    }
    if cidrs.len() > 2 {
        return Err(IpamError::Flags(format!(
            "len of clusters is:{} > more than max allowed of 2",
            cidrs.len()
        )));
    }
    let dual = cidrs.len() == 2;
    if dual && cidrs[0].family() == cidrs[1].family() {
        return Err(IpamError::Flags(
            "len of ClusterCIDRs==2 and they are not configured as dual stack (at least one from each IPFamily".into(),
        ));
    }
    let (mut v4, mut v6) = (DEFAULT_MASK_V4, DEFAULT_MASK_V6);
    if dual {
        if mask != 0 {
            return Err(IpamError::Flags(
                "usage of --node-cidr-mask-size is not allowed with dual-stack clusters".into(),
            ));
        }
    } else if mask != 0 {
        if mask_v4 != 0 || mask_v6 != 0 {
            return Err(IpamError::Flags(
                "usage of --node-cidr-mask-size-ipv4 and --node-cidr-mask-size-ipv6 is not allowed if --node-cidr-mask-size is set. For dual-stack clusters using --node-cidr-mask-size-ipv4 and --node-cidr-mask-size-ipv6 is allowed".into(),
            ));
        }
        (v4, v6) = (mask, mask);
    } else {
        let v6_only = cidrs[0].family() == Family::V6;
        if mask_v4 != 0 && v6_only {
            return Err(IpamError::Flags(
                "usage of --node-cidr-mask-size-ipv4 is not allowed for a single-stack IPv6 cluster".into(),
            ));
        }
        if mask_v6 != 0 && !v6_only {
            return Err(IpamError::Flags(
                "usage of --node-cidr-mask-size-ipv6 is not allowed for a single-stack IPv4 cluster".into(),
            ));
        }
    }
    if mask == 0 {
        if mask_v4 != 0 {
            v4 = mask_v4;
        }
        if mask_v6 != 0 {
            v6 = mask_v6;
        }
    }
    parts
        .iter()
        .zip(&cidrs)
        .map(|(p, c)| {
            CidrSet::new(
                p,
                match c.family() {
                    Family::V4 => v4,
                    Family::V6 => v6,
                },
            )
        })
        .collect()
}

/// The podCIDRs recorded on a Node (`podCIDRs`, else `podCIDR`).
fn pod_cidrs(node: &Node) -> Vec<&str> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let list: Vec<&str> = spec
        .pod_cidrs
        .iter()
        .flatten()
        .map(String::as_str)
        .filter(|c| !c.is_empty())
        .collect();
    if !list.is_empty() {
        return list;
    }
    spec.pod_cidr
        .as_deref()
        .filter(|c| !c.is_empty())
        .into_iter()
        .collect()
}

struct Ipam {
    ctx: Context,
    /// One block set per cluster CIDR, in `--cluster-cidr` order.
    sets: Vec<CidrSet>,
    nodes: Store<Node>,
    /// Allocations written but maybe not yet seen in the cache (node name → one block per
    /// set), behind the lock that serialises allocations.
    pending: tokio::sync::Mutex<HashMap<String, Vec<u32>>>,
}

/// The blocks each set has in use, given the nodes' podCIDRs and the pending allocations of
/// other nodes than `name`.
fn used_blocks(
    sets: &[CidrSet],
    nodes: &[Arc<Node>],
    pending: &HashMap<String, Vec<u32>>,
    name: &str,
) -> Vec<BTreeSet<u32>> {
    sets.iter()
        .enumerate()
        .map(|(k, set)| {
            nodes
                .iter()
                .flat_map(|n| pod_cidrs(n))
                .filter_map(|c| set.index_of(c))
                .chain(
                    pending
                        .iter()
                        .filter(|(n, _)| n.as_str() != name)
                        .filter_map(|(_, blocks)| blocks.get(k).copied()),
                )
                .collect()
        })
        .collect()
}

async fn reconcile(node: Arc<Node>, ipam: Arc<Ipam>) -> Result<Action, ControllerError> {
    let name = node.name_any();
    let held = pod_cidrs(&node);
    if !held.is_empty() {
        // podCIDRs are immutable once set: a node keeps what it registered with.
        let outside: Vec<&&str> = held
            .iter()
            .filter(|c| ipam.sets.iter().all(|s| s.index_of(c).is_none()))
            .collect();
        if !outside.is_empty() {
            warn!(node = %name, pod_cidrs = ?outside, "node podCIDRs outside the cluster CIDRs");
        }
        return Ok(Action::await_change());
    }
    if node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let mut pending = ipam.pending.lock().await;
    let cached = ipam.nodes.state();
    // Forget pending allocations the cache now shows, or whose node is gone.
    pending.retain(|n, _| {
        cached
            .iter()
            .any(|c| c.name_any() == *n && pod_cidrs(c).is_empty())
    });
    let used = used_blocks(&ipam.sets, &cached, &pending, &name);
    // Written already, the cache is behind: write the same blocks again.
    let blocks: Option<Vec<u32>> = match pending.get(&name) {
        Some(b) => Some(b.clone()),
        None => ipam
            .sets
            .iter()
            .zip(&used)
            .map(|(set, used)| set.allocate(used))
            .collect(),
    };
    let Some(blocks) = blocks else {
        warn!(node = %name, "no pod CIDR left in the cluster CIDR");
        events::record(
            &ipam.ctx.client,
            &ipam.ctx.settings.component,
            events::reference(node.as_ref()),
            EventType::Normal,
            "CIDRNotAvailable",
            &format!("Node {name} status is now: CIDRNotAvailable"),
        )
        .await;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let cidrs: Vec<String> = ipam
        .sets
        .iter()
        .zip(&blocks)
        .map(|(set, i)| set.cidr(*i))
        .collect();
    let api: Api<Node> = Api::all(ipam.ctx.client.clone());
    let patch = json!({"spec": {"podCIDR": cidrs.first(), "podCIDRs": cidrs}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    pending.insert(name.clone(), blocks);
    info!(node = %name, pod_cidrs = ?cidrs, "pod CIDRs allocated");
    Ok(Action::await_change())
}

fn error_policy(node: Arc<Node>, error: &ControllerError, _: Arc<Ipam>) -> Action {
    warn!(node = %node.name_any(), error = %error, "pod CIDR allocation failed");
    Action::requeue(Duration::from_secs(1))
}

/// Runs node IPAM until the task is dropped.
pub async fn run(ctx: Context) -> Result<(), ControllerError> {
    let sets = cidr_sets(
        &ctx.settings.cluster_cidr,
        ctx.settings.node_cidr_mask,
        ctx.settings.node_cidr_mask_ipv4,
        ctx.settings.node_cidr_mask_ipv6,
    )
    .map_err(|e| ControllerError::Settings(e.to_string()))?;
    let api: Api<Node> = Api::all(ctx.client.clone());
    // A deleted Node frees its block: nodes still waiting for one try again at once.
    let deletions = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .filter_map(|e| {
            futures::future::ready(matches!(e, Ok(watcher::Event::Delete(_))).then_some(()))
        });
    let controller = Controller::new(api, watcher::Config::default()).reconcile_all_on(deletions);
    let ipam = Arc::new(Ipam {
        ctx,
        sets,
        nodes: controller.store(),
        pending: tokio::sync::Mutex::new(HashMap::new()),
    });
    controller
        .run(reconcile, error_policy, ipam)
        .for_each(|_| futures::future::ready(()))
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_of_a_cluster_cidr() {
        let set = CidrSet::new("10.244.0.0/16", 24).unwrap();
        assert_eq!(set.capacity(), 256);
        assert_eq!(set.cidr(0), "10.244.0.0/24");
        assert_eq!(set.cidr(255), "10.244.255.0/24");
        let cases = [
            ("10.244.3.0/24", Some(3)),
            ("10.244.3.0/25", None),
            ("10.244.3.128/24", None),
            ("10.245.0.0/24", None),
            ("10.243.255.0/24", None),
            ("garbage", None),
        ];
        for (cidr, want) in cases {
            assert_eq!(set.index_of(cidr), want, "{cidr}");
        }
        let odd = CidrSet::new("10.1.2.3/30", 31).unwrap();
        assert_eq!(
            (odd.cidr(0), odd.cidr(1)),
            ("10.1.2.0/31".into(), "10.1.2.2/31".into())
        );
    }

    #[test]
    fn ipv6_blocks() {
        let set = CidrSet::new("fd00:10:244::/56", 64).unwrap();
        assert_eq!(set.family(), Family::V6);
        assert_eq!(set.capacity(), 256);
        assert_eq!(set.cidr(0), "fd00:10:244::/64");
        assert_eq!(set.cidr(1), "fd00:10:244:1::/64");
        assert_eq!(set.cidr(255), "fd00:10:244:ff::/64");
        let cases = [
            ("fd00:10:244:7::/64", Some(7)),
            ("fd00:10:244:7::1/64", None),
            ("fd00:10:244:7::/65", None),
            ("fd00:10:245::/64", None),
            ("10.244.0.0/24", None),
        ];
        for (cidr, want) in cases {
            assert_eq!(set.index_of(cidr), want, "{cidr}");
        }
        // a /64 cluster CIDR split into /80s
        let deep = CidrSet::new("fd00::/64", 80).unwrap();
        assert_eq!(deep.cidr(3), "fd00::3:0:0:0/80");
        assert_eq!(deep.index_of("fd00::3:0:0:0/80"), Some(3));
        assert!(CidrSet::new("fd00::/48", 65).is_err());
    }

    #[test]
    fn cluster_cidrs_and_mask_flags() {
        // (cluster-cidr, mask, mask-v4, mask-v6) → the node blocks' first CIDRs
        let ok: [(&str, u8, u8, u8, Vec<&str>); 7] = [
            ("10.244.0.0/16", 0, 0, 0, vec!["10.244.0.0/24"]),
            ("10.244.0.0/16", 26, 0, 0, vec!["10.244.0.0/26"]),
            ("10.244.0.0/16", 0, 25, 0, vec!["10.244.0.0/25"]),
            ("fd00:10:244::/56", 0, 0, 0, vec!["fd00:10:244::/64"]),
            ("fd00:10:244::/56", 60, 0, 0, vec!["fd00:10:244::/60"]),
            (
                "10.244.0.0/16,fd00:10:244::/56",
                0,
                0,
                0,
                vec!["10.244.0.0/24", "fd00:10:244::/64"],
            ),
            (
                "fd00:10:244::/56, 10.244.0.0/16",
                0,
                20,
                62,
                vec!["fd00:10:244::/62", "10.244.0.0/20"],
            ),
        ];
        for (cidr, m, m4, m6, want) in ok {
            let sets = cidr_sets(cidr, m, m4, m6).unwrap();
            let got: Vec<String> = sets.iter().map(|s| s.cidr(0)).collect();
            assert_eq!(got, want, "{cidr} {m} {m4} {m6}");
        }
        let bad: [(&str, u8, u8, u8, &str); 6] = [
            (
                "10.244.0.0/16,fd00::/56",
                24,
                0,
                0,
                "usage of --node-cidr-mask-size is not allowed with dual-stack clusters",
            ),
            (
                "10.244.0.0/16",
                24,
                24,
                0,
                "usage of --node-cidr-mask-size-ipv4 and --node-cidr-mask-size-ipv6 is not allowed if --node-cidr-mask-size is set. For dual-stack clusters using --node-cidr-mask-size-ipv4 and --node-cidr-mask-size-ipv6 is allowed",
            ),
            (
                "fd00::/56",
                0,
                24,
                0,
                "usage of --node-cidr-mask-size-ipv4 is not allowed for a single-stack IPv6 cluster",
            ),
            (
                "10.244.0.0/16",
                0,
                0,
                64,
                "usage of --node-cidr-mask-size-ipv6 is not allowed for a single-stack IPv4 cluster",
            ),
            (
                "10.244.0.0/16,10.245.0.0/16",
                0,
                0,
                0,
                "len of ClusterCIDRs==2 and they are not configured as dual stack (at least one from each IPFamily",
            ),
            (
                "10.244.0.0/16,fd00::/56,10.245.0.0/16",
                0,
                0,
                0,
                "len of clusters is:3 > more than max allowed of 2",
            ),
        ];
        for (cidr, m, m4, m6, want) in bad {
            assert_eq!(
                cidr_sets(cidr, m, m4, m6).unwrap_err().to_string(),
                want,
                "{cidr} {m} {m4} {m6}"
            );
        }
    }

    #[test]
    fn used_blocks_per_family_from_nodes_and_pending() {
        let sets = cidr_sets("10.244.0.0/16,fd00:10:244::/56", 0, 0, 0).unwrap();
        let node = |name: &str, cidrs: &[&str]| -> Arc<Node> {
            Arc::new(
                serde_json::from_value(json!({"metadata": {"name": name},
                    "spec": {"podCIDRs": cidrs}}))
                .unwrap(),
            )
        };
        let nodes = vec![
            node("a", &["10.244.0.0/24", "fd00:10:244::/64"]),
            node("b", &["10.244.2.0/24"]),
            node("c", &["192.168.0.0/24"]),
        ];
        let mut pending = HashMap::new();
        pending.insert("d".to_string(), vec![1, 1]);
        pending.insert("e".to_string(), vec![3, 3]);
        let used = used_blocks(&sets, &nodes, &pending, "e");
        assert_eq!(used[0], BTreeSet::from([0, 1, 2]));
        assert_eq!(used[1], BTreeSet::from([0, 1]));
        assert_eq!(sets[0].allocate(&used[0]), Some(3));
        assert_eq!(sets[1].allocate(&used[1]), Some(2));
    }

    #[test]
    fn allocation_takes_the_lowest_free_block_until_full() {
        let set = CidrSet::new("10.0.0.0/30", 31).unwrap();
        let mut used = BTreeSet::new();
        assert_eq!(set.allocate(&used), Some(0));
        used.insert(0);
        assert_eq!(set.allocate(&used), Some(1));
        used.insert(1);
        assert_eq!(set.allocate(&used), None);
        used.remove(&0);
        assert_eq!(set.allocate(&used), Some(0));
    }

    #[test]
    fn invalid_settings() {
        assert!(matches!(
            CidrSet::new("10.0.0.0/16", 8),
            Err(IpamError::Mask { mask: 8, .. })
        ));
        assert!(matches!(
            CidrSet::new("10.0.0.0/8", 30),
            Err(IpamError::Mask { .. })
        ));
        assert!(matches!(
            CidrSet::new("nope", 24),
            Err(IpamError::ClusterCidr { .. })
        ));
    }
}

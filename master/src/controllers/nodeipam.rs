//! Node IPAM (kube-controller-manager's range allocator): every Node gets `spec.podCIDR` and
//! `spec.podCIDRs`, one `/node_cidr_mask` block of the cluster CIDR. The blocks in use are
//! derived from the stored Nodes on every allocation, so they survive a master restart and
//! a deleted Node's block is free again; a full range gets a `CIDRNotAvailable` Event.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
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

/// Errors of the CIDR arithmetic.
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
}

/// The blocks of one cluster CIDR: block `i` is `base + i * 2^(32 - node_prefix)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrSet {
    base: u32,
    cluster_prefix: u8,
    node_prefix: u8,
}

impl CidrSet {
    /// The blocks of `cluster_cidr` (`10.244.0.0/16`) of prefix length `node_mask` (24).
    pub fn new(cluster_cidr: &str, node_mask: u8) -> Result<CidrSet, IpamError> {
        let (ip, prefix) =
            crate::api::parse_cidr(cluster_cidr).map_err(|reason| IpamError::ClusterCidr {
                cidr: cluster_cidr.into(),
                reason,
            })?;
        // More than 2^16 blocks is more than any cluster has nodes (upstream caps it too).
        if node_mask > 32 || node_mask < prefix || node_mask - prefix > 16 {
            return Err(IpamError::Mask {
                cidr: cluster_cidr.into(),
                mask: node_mask,
            });
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        Ok(CidrSet {
            base: u32::from(ip) & mask,
            cluster_prefix: prefix,
            node_prefix: node_mask,
        })
    }

    /// How many blocks there are.
    pub fn capacity(&self) -> u32 {
        1u32 << (self.node_prefix - self.cluster_prefix)
    }

    fn block_size(&self) -> u64 {
        1u64 << (32 - u32::from(self.node_prefix))
    }

    /// Block `index` as `a.b.c.d/n`.
    pub fn cidr(&self, index: u32) -> String {
        let start = u64::from(self.base) + u64::from(index) * self.block_size();
        let ip = Ipv4Addr::from(u32::try_from(start).unwrap_or(u32::MAX));
        format!("{ip}/{}", self.node_prefix)
    }

    /// The index of `cidr` when it is exactly one of our blocks.
    pub fn index_of(&self, cidr: &str) -> Option<u32> {
        let (ip, prefix) = cidr.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        if prefix.parse::<u8>().ok()? != self.node_prefix {
            return None;
        }
        let offset = u32::from(ip).checked_sub(self.base)?;
        let size = self.block_size();
        if u64::from(offset) % size != 0 {
            return None;
        }
        let index = u32::try_from(u64::from(offset) / size).ok()?;
        (index < self.capacity()).then_some(index)
    }

    /// The lowest free block, given the used ones.
    pub fn allocate(&self, used: &BTreeSet<u32>) -> Option<u32> {
        (0..self.capacity()).find(|i| !used.contains(i))
    }
}

/// The podCIDR recorded on a Node.
fn pod_cidr(node: &Node) -> Option<&str> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidr
        .as_deref()
        .or_else(|| spec.pod_cidrs.as_ref()?.first().map(String::as_str))
        .filter(|c| !c.is_empty())
}

struct Ipam {
    ctx: Context,
    set: CidrSet,
    nodes: Store<Node>,
    /// Allocations written but maybe not yet seen in the cache (node name → block), behind
    /// the lock that serialises allocations.
    pending: tokio::sync::Mutex<HashMap<String, u32>>,
}

async fn reconcile(node: Arc<Node>, ipam: Arc<Ipam>) -> Result<Action, ControllerError> {
    if pod_cidr(&node).is_some() || node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = node.name_any();
    let mut pending = ipam.pending.lock().await;
    let cached = ipam.nodes.state();
    // Forget pending allocations the cache now shows, or whose node is gone.
    pending.retain(|n, _| {
        cached
            .iter()
            .any(|c| c.name_any() == *n && pod_cidr(c).is_none())
    });
    let mut used: BTreeSet<u32> = cached
        .iter()
        .filter_map(|n| pod_cidr(n))
        .filter_map(|c| ipam.set.index_of(c))
        .collect();
    if let Some(index) = pending.get(&name) {
        // Written already, the cache is behind: write the same block again.
        used.remove(index);
    }
    used.extend(pending.iter().filter(|(n, _)| **n != name).map(|(_, i)| *i));
    let Some(index) = pending
        .get(&name)
        .copied()
        .or_else(|| ipam.set.allocate(&used))
    else {
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
    let cidr = ipam.set.cidr(index);
    let api: Api<Node> = Api::all(ipam.ctx.client.clone());
    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    pending.insert(name.clone(), index);
    info!(node = %name, pod_cidr = %cidr, "pod CIDR allocated");
    Ok(Action::await_change())
}

fn error_policy(node: Arc<Node>, error: &ControllerError, _: Arc<Ipam>) -> Action {
    warn!(node = %node.name_any(), error = %error, "pod CIDR allocation failed");
    Action::requeue(Duration::from_secs(1))
}

/// Runs node IPAM until the task is dropped.
pub async fn run(ctx: Context) -> Result<(), ControllerError> {
    let set = CidrSet::new(&ctx.settings.cluster_cidr, ctx.settings.node_cidr_mask)
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
        set,
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

//! The proxier: keeps the tables it last applied in memory and turns each sync into the
//! smallest transaction that reaches the desired tables. The first sync, and the one after
//! any failed apply, replaces the tables whole (what is in the kernel is then unknown);
//! the kernel's state is never listed.

use std::collections::BTreeSet;
use std::time::Instant;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tracing::{debug, info, warn};

use super::diff::diff;
use super::model::Table;
use super::nft::{FlowFilter, Nft, NftError};
use super::rules::{RulesConfig, desired};

/// A sync that could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// nft refused or could not run; the next sync is a full one.
    #[error("cannot apply the ruleset")]
    Apply(#[from] NftError),
}

/// What one sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The tables were replaced whole.
    pub full: bool,
    /// Statements sent (0: nothing changed, nft not run).
    pub statements: usize,
    /// Bytes of the transaction.
    pub bytes: usize,
    /// conntrack filters run for removed UDP endpoints.
    pub flow_filters: usize,
}

/// UDP flows that must go after moving from `old` to `new`: flows DNATed to endpoints that
/// are gone, and flows to Service addresses that had no endpoint and have some now.
pub fn stale_flows(old: &Table, new: &Table) -> BTreeSet<FlowFilter> {
    let mut out = BTreeSet::new();
    for (id, o) in &old.udp {
        let n = new.udp.get(id);
        for (ep, _) in o
            .endpoints
            .iter()
            .filter(|e| n.is_none_or(|n| !n.endpoints.contains(e)))
        {
            for (svc, _) in &o.frontends {
                out.insert(FlowFilter::ServiceToEndpoint {
                    service: *svc,
                    endpoint: *ep,
                });
            }
            if let Some(port) = o.node_port {
                out.insert(FlowFilter::NodePortToEndpoint {
                    port,
                    endpoint: *ep,
                });
            }
        }
    }
    for (id, n) in &new.udp {
        let had = old.udp.get(id).is_some_and(|o| !o.endpoints.is_empty());
        if had || n.endpoints.is_empty() {
            continue;
        }
        for (service, port) in &n.frontends {
            out.insert(FlowFilter::Service {
                service: *service,
                port: *port,
            });
        }
        if let Some(port) = n.node_port {
            out.insert(FlowFilter::NodePort { port });
        }
    }
    out
}

/// The ruleset's state on this node.
#[derive(Debug)]
pub struct Proxier {
    cfg: RulesConfig,
    nft: Nft,
    applied: Option<Vec<Table>>,
}

impl Proxier {
    /// A proxier whose first sync replaces the tables whole.
    pub fn new(cfg: RulesConfig, nft: Nft) -> Proxier {
        Proxier {
            cfg,
            nft,
            applied: None,
        }
    }

    /// The tables as last applied.
    pub fn applied(&self) -> Option<&[Table]> {
        self.applied.as_deref()
    }

    /// Makes the next sync a full one.
    pub fn force_full(&mut self) {
        self.applied = None;
    }

    /// The transaction that brings the kernel from the applied state to `tables`.
    pub fn transaction(&self, tables: &[Table]) -> Vec<String> {
        let mut out = Vec::new();
        match &self.applied {
            Some(old) if old.len() == tables.len() => {
                for (o, n) in old.iter().zip(tables) {
                    diff(o, n, &mut out);
                }
            }
            _ => {
                for t in tables {
                    t.render_full(&mut out);
                }
            }
        }
        out
    }

    /// Brings the kernel's tables to the desired state for these objects.
    pub async fn sync(
        &mut self,
        services: &[&Service],
        slices: &[&EndpointSlice],
    ) -> Result<SyncReport, SyncError> {
        let start = Instant::now();
        let tables = desired(services, slices, &self.cfg);
        let full = self.applied.is_none();
        let statements = self.transaction(&tables);
        let bytes = statements.iter().map(|s| s.len() + 1).sum();
        if !statements.is_empty() {
            if let Err(e) = self.nft.apply(&statements).await {
                self.applied = None;
                return Err(e.into());
            }
        }
        let flows: BTreeSet<FlowFilter> = match &self.applied {
            Some(old) => old
                .iter()
                .zip(&tables)
                .flat_map(|(o, n)| stale_flows(o, n))
                .collect(),
            None => BTreeSet::new(),
        };
        self.applied = Some(tables);
        for f in &flows {
            match self.nft.delete_flows(f).await {
                Ok(n) => debug!(filter = ?f, deleted = n, "conntrack flows deleted"),
                Err(e) => warn!(filter = ?f, error = %e, "cannot delete conntrack flows"),
            }
        }
        let report = SyncReport {
            full,
            statements: statements.len(),
            bytes,
            flow_filters: flows.len(),
        };
        if report.statements > 0 {
            info!(
                full,
                statements = report.statements,
                bytes,
                services = services.len(),
                elapsed_ms = start.elapsed().as_millis() as u64,
                "ruleset synced"
            );
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::{Family, UdpPort};
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn udp(endpoints: &[&str], node_port: Option<u16>) -> Table {
        let mut t = Table::new(Family::V4, "skiff");
        t.udp.insert(
            "ns/dns/udp/dns".into(),
            UdpPort {
                frontends: [(ip("10.96.0.10"), 53)].into(),
                node_port,
                endpoints: endpoints.iter().map(|e| (ip(e), 5353)).collect(),
            },
        );
        t
    }

    #[test]
    fn stale_flows_table() {
        let empty = Table::new(Family::V4, "skiff");
        let cases: Vec<(&str, Table, Table, Vec<FlowFilter>)> = vec![
            (
                "nothing changed",
                udp(&["10.244.1.5"], None),
                udp(&["10.244.1.5"], None),
                vec![],
            ),
            (
                "an endpoint removed: its flows via the ClusterIP and the NodePort",
                udp(&["10.244.1.5", "10.244.2.7"], Some(30053)),
                udp(&["10.244.1.5"], Some(30053)),
                vec![
                    FlowFilter::ServiceToEndpoint {
                        service: ip("10.96.0.10"),
                        endpoint: ip("10.244.2.7"),
                    },
                    FlowFilter::NodePortToEndpoint {
                        port: 30053,
                        endpoint: ip("10.244.2.7"),
                    },
                ],
            ),
            (
                "a Service removed: flows to all its endpoints",
                udp(&["10.244.1.5"], None),
                empty.clone(),
                vec![FlowFilter::ServiceToEndpoint {
                    service: ip("10.96.0.10"),
                    endpoint: ip("10.244.1.5"),
                }],
            ),
            (
                "first endpoints of a Service: its earlier flows go",
                udp(&[], Some(30053)),
                udp(&["10.244.1.5"], Some(30053)),
                vec![
                    FlowFilter::Service {
                        service: ip("10.96.0.10"),
                        port: 53,
                    },
                    FlowFilter::NodePort { port: 30053 },
                ],
            ),
            (
                "a new Service without endpoints",
                empty,
                udp(&[], None),
                vec![],
            ),
        ];
        for (name, old, new, want) in cases {
            let got: Vec<FlowFilter> = stale_flows(&old, &new).into_iter().collect();
            let mut want = want;
            want.sort();
            assert_eq!(got, want, "{name}");
        }
    }
}

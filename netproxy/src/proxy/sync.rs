//! The proxier: keeps the tables it last applied in memory and turns each sync into the
//! smallest transaction that reaches the desired tables. The first sync, and the one after
//! any failed apply, replaces the tables whole (what is in the kernel is then unknown);
//! the kernel's state is never listed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tracing::{debug, info, warn};

use super::diff::diff;
use super::model::Table;
use super::nft::{FlowFilter, Nft, NftError};
use super::rules::{
    RulesConfig, ServiceKey, desired_parts, service_fragment, service_key, slices_by_service,
};

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

/// The partial sync without nft: brings `tables` (and the `fragments` they are made of)
/// from the last state to the one for these objects, re-rendering only the `changed`
/// Services; returns the statements and stale flows of the change.
pub fn partial(
    tables: &mut [Table],
    fragments: &mut BTreeMap<ServiceKey, Vec<Table>>,
    services: &[&Service],
    slices: &[&EndpointSlice],
    changed: &BTreeSet<ServiceKey>,
    cfg: &RulesConfig,
) -> (Vec<String>, BTreeSet<FlowFilter>) {
    let changed_slices: Vec<&EndpointSlice> = slices
        .iter()
        .copied()
        .filter(|s| super::rules::slice_service(s).is_some_and(|k| changed.contains(&k)))
        .collect();
    let by_service = slices_by_service(&changed_slices);
    let mut news: BTreeMap<ServiceKey, Vec<Table>> = BTreeMap::new();
    for svc in services {
        let key = service_key(svc);
        if changed.contains(&key) {
            let svc_slices = by_service.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            news.insert(key, service_fragment(svc, svc_slices, cfg));
        }
    }
    let mut statements = Vec::new();
    let mut flows = BTreeSet::new();
    for (i, table) in tables.iter_mut().enumerate() {
        // every name the changed Services had or have
        let mut names = Table::new(table.family, table.name.clone());
        let olds = changed.iter().filter_map(|k| fragments.get(k));
        for frag in olds.chain(news.values()).map(|f| &f[i]) {
            names.shared.extend(frag.shared.iter().cloned());
            names.merge(frag);
        }
        let old_part = table.part(&names);
        for frag in changed.iter().filter_map(|k| fragments.get(k)) {
            table.unmerge(&frag[i]);
        }
        for frag in news.values() {
            table.merge(&frag[i]);
        }
        let new_part = table.part(&names);
        diff(&old_part, &new_part, &mut statements);
        flows.extend(stale_flows(&old_part, &new_part));
    }
    for key in changed {
        match news.remove(key) {
            Some(f) => fragments.insert(key.clone(), f),
            None => fragments.remove(key),
        };
    }
    (statements, flows)
}

/// The ruleset's state on this node.
#[derive(Debug)]
pub struct Proxier {
    cfg: RulesConfig,
    nft: Nft,
    applied: Option<Vec<Table>>,
    /// The fragment of each Service in `applied`, for partial syncs.
    fragments: BTreeMap<ServiceKey, Vec<Table>>,
}

impl Proxier {
    /// A proxier whose first sync replaces the tables whole.
    pub fn new(cfg: RulesConfig, nft: Nft) -> Proxier {
        Proxier {
            cfg,
            nft,
            applied: None,
            fragments: BTreeMap::new(),
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

    /// Brings the kernel's tables to the desired state for these objects: renders every
    /// Service and diffs the whole tables (the start-up resync, and after `force_full`).
    pub async fn sync(
        &mut self,
        services: &[&Service],
        slices: &[&EndpointSlice],
    ) -> Result<SyncReport, SyncError> {
        let start = Instant::now();
        let (tables, fragments) = desired_parts(services, slices, &self.cfg);
        let full = self.applied.is_none();
        let statements = self.transaction(&tables);
        let flows: BTreeSet<FlowFilter> = match &self.applied {
            Some(old) => old
                .iter()
                .zip(&tables)
                .flat_map(|(o, n)| stale_flows(o, n))
                .collect(),
            None => BTreeSet::new(),
        };
        self.applied = None;
        let report = self
            .apply(statements, flows, full, services.len(), start)
            .await?;
        self.applied = Some(tables);
        self.fragments = fragments;
        Ok(report)
    }

    /// Like `sync`, when only the Services in `changed` (or their EndpointSlices) changed
    /// since the last sync: renders only those and diffs only their chains, sets and map
    /// elements against the applied tables. Gives the tables `sync` would give; falls back
    /// to `sync` when nothing is applied yet.
    pub async fn sync_changed(
        &mut self,
        services: &[&Service],
        slices: &[&EndpointSlice],
        changed: &BTreeSet<ServiceKey>,
    ) -> Result<SyncReport, SyncError> {
        let Some(mut tables) = self.applied.take() else {
            return self.sync(services, slices).await;
        };
        let start = Instant::now();
        let (statements, flows) = partial(
            &mut tables,
            &mut self.fragments,
            services,
            slices,
            changed,
            &self.cfg,
        );
        let report = self
            .apply(statements, flows, false, changed.len(), start)
            .await?;
        self.applied = Some(tables);
        Ok(report)
    }

    /// Sends the statements and deletes the stale flows; on failure the next sync is a
    /// full one (`applied` stays `None`).
    async fn apply(
        &mut self,
        statements: Vec<String>,
        flows: BTreeSet<FlowFilter>,
        full: bool,
        services: usize,
        start: Instant,
    ) -> Result<SyncReport, SyncError> {
        let bytes = statements.iter().map(|s| s.len() + 1).sum();
        if !statements.is_empty() {
            if let Err(e) = self.nft.apply(&statements).await {
                self.fragments.clear();
                return Err(e.into());
            }
        }
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
        if !statements.is_empty() {
            info!(
                full,
                statements = statements.len(),
                bytes,
                services,
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

    /// Service `i` of the random universe: its kind varies with `variant` (UDP, NodePort,
    /// ClientIP affinity, externalTrafficPolicy Local, dual-stack).
    fn random_service(i: u32, variant: u64) -> Service {
        let proto = if variant % 3 == 0 { "UDP" } else { "TCP" };
        let mut spec = serde_json::json!({
            "type": if variant % 2 == 0 { "NodePort" } else { "ClusterIP" },
            "clusterIP": format!("10.96.0.{}", 10 + i),
            "clusterIPs": [format!("10.96.0.{}", 10 + i), format!("fd00:96::{}", 10 + i)],
            "ports": [{"name": "p", "port": 80, "protocol": proto, "targetPort": 8080,
                "nodePort": 30000 + i}]});
        if variant % 5 == 0 {
            spec["sessionAffinity"] = "ClientIP".into();
            spec["sessionAffinityConfig"] =
                serde_json::json!({"clientIP": {"timeoutSeconds": 60 + variant % 2 * 60}});
        }
        if variant % 7 == 0 {
            spec["externalTrafficPolicy"] = "Local".into();
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": format!("svc-{i}")}, "spec": spec}))
        .unwrap()
    }

    /// The EndpointSlice of Service `i` with the endpoints whose bit is set in `mask`;
    /// Services `i` and `i + 4` share pods (one hairpin element for two Services).
    fn random_slice(i: u32, mask: u64) -> EndpointSlice {
        let endpoints: Vec<serde_json::Value> = (0..4)
            .filter(|b| mask & (1 << b) != 0)
            .map(|b| {
                serde_json::json!({"addresses": [format!("10.244.{b}.{}", 10 + i % 4)],
                    "nodeName": if b % 2 == 0 { "node-a" } else { "node-b" },
                    "conditions": {"ready": b != 3, "serving": true, "terminating": b == 3}})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": format!("svc-{i}-abc"),
                "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "addressType": "IPv4",
            "ports": [{"name": "p", "port": 8080, "protocol": if mask & 16 != 0 { "UDP" } else { "TCP" }}],
            "endpoints": endpoints}))
        .unwrap()
    }

    /// Random change sequences: after each step the partial sync's tables are the full
    /// render's, and its statements the full diff's.
    #[test]
    fn partial_sync_equals_full() {
        let cfg = RulesConfig {
            node_name: "node-a".into(),
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            ..RulesConfig::default()
        };
        // xorshift: reproducible without a seeded generator's API
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut services: BTreeMap<u32, Service> = BTreeMap::new();
        let mut slices: BTreeMap<u32, EndpointSlice> = BTreeMap::new();
        let mut tables = crate::proxy::rules::base_tables(&cfg);
        let mut fragments = BTreeMap::new();
        for step in 0..400 {
            let mut changed = BTreeSet::new();
            for _ in 0..1 + next(3) {
                let i = next(12) as u32;
                match next(4) {
                    0 => {
                        services.remove(&i);
                    }
                    1 => {
                        slices.remove(&i);
                    }
                    2 => {
                        services.insert(i, random_service(i, next(420)));
                    }
                    _ => {
                        slices.insert(i, random_slice(i, next(32)));
                    }
                }
                changed.insert(("ns".to_string(), format!("svc-{i}")));
            }
            let svc: Vec<&Service> = services.values().collect();
            let sl: Vec<&EndpointSlice> = slices.values().collect();
            let before = tables.to_vec();
            let (statements, flows) =
                partial(&mut tables, &mut fragments, &svc, &sl, &changed, &cfg);
            let want = crate::proxy::rules::desired(&svc, &sl, &cfg);
            assert_eq!(tables, want, "tables after step {step}");
            let mut want_statements = Vec::new();
            for (o, n) in before.iter().zip(&want) {
                diff(o, n, &mut want_statements);
            }
            assert_eq!(statements, want_statements, "statements of step {step}");
            let want_flows: BTreeSet<FlowFilter> = before
                .iter()
                .zip(&want)
                .flat_map(|(o, n)| stale_flows(o, n))
                .collect();
            assert_eq!(flows, want_flows, "flows of step {step}");
        }
    }
}

//! Service ClusterIP and NodePort allocation. Allocations are derived from the stored
//! Services (so they survive restarts and are released on delete); callers hold
//! `Server::alloc_lock` across allocate + store. Several masters sharing one etcd do not share
//! that lock: each allocation is also reserved, by compare-and-swap, in one store key
//! (`/registry/ranges/servicereservations`) that every allocation reads first, so two
//! masters allocating at once never hand out the same address or port. A reservation lives
//! long enough for its Service to be stored (then the Service itself holds the address).

use std::collections::HashSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use serde_json::{Value, json};

use super::Server;
use super::dualstack::{self, Family, ServiceCidrs, go_strings};
use super::status::ApiError;
use crate::resources::{FieldError, find};
use crate::store::StoreError;

/// The store key of the reservations.
const RESERVATIONS_KEY: &str = "/registry/ranges/servicereservations";
/// Seconds a reservation of a Service not stored (yet) lasts: the window between allocation
/// and store, with room for a slow etcd. Reservations of stored Services are dropped at the
/// next allocation (the Service holds its addresses itself).
const RESERVATION_SECONDS: i64 = 10;

/// Addresses and ports recently handed out, by whom and when.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Reservations {
    entries: Vec<Reservation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Reservation {
    /// A ClusterIP (`10.96.0.10`) or a NodePort (`30080`).
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    port: Option<u64>,
    /// The Service's store key.
    owner: String,
    /// Unix seconds.
    at: i64,
}

/// The ClusterIPs and NodePorts `svc` holds.
fn held(svc: &Value) -> (Vec<String>, Vec<u64>) {
    let ips = cluster_ips(svc);
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .collect();
    (ips, ports)
}

/// The addresses in `spec.clusterIPs` (and `spec.clusterIP`) of `svc`, without `None`.
fn cluster_ips(svc: &Value) -> Vec<String> {
    let mut ips: Vec<String> = svc
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .chain(svc.pointer("/spec/clusterIP").and_then(Value::as_str))
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .map(str::to_string)
        .collect();
    let mut seen = HashSet::new();
    ips.retain(|ip| seen.insert(ip.clone()));
    ips
}

/// Fills in `spec.clusterIP(s)` and `nodePort`s of `svc` (stored at `key`; `old` is the
/// current object on update), rejecting conflicts with other Services and with what other
/// masters reserved, and reserves what it newly hands out.
pub(crate) async fn allocate(
    server: &Server,
    key: &str,
    svc: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    loop {
        let stored = server.store.get(RESERVATIONS_KEY).await?;
        let mut reservations: Reservations = stored
            .as_ref()
            .and_then(|kv| serde_json::from_slice(&kv.value).ok())
            .unwrap_or_default();
        let now = chrono::Utc::now().timestamp();
        reservations
            .entries
            .retain(|r| now - r.at < RESERVATION_SECONDS);
        let mut candidate = svc.clone();
        assign(server, key, &mut candidate, old, &mut reservations).await?;
        let (ips, ports) = held(&candidate);
        let (old_ips, old_ports) = old.map(held).unwrap_or_default();
        let mut new: Vec<Reservation> = ports
            .into_iter()
            .filter(|p| !old_ports.contains(p))
            .map(|p| Reservation {
                ip: None,
                port: Some(p),
                owner: key.to_string(),
                at: now,
            })
            .collect();
        for ip in ips.into_iter().filter(|ip| !old_ips.contains(ip)) {
            new.push(Reservation {
                ip: Some(ip),
                port: None,
                owner: key.to_string(),
                at: now,
            });
        }
        if new.is_empty() {
            *svc = candidate;
            return Ok(());
        }
        reservations.entries.extend(new);
        let value = serde_json::to_vec(&reservations)
            .map_err(|e| ApiError::internal(format!("cannot encode reservations: {e}")))?;
        let written = match stored {
            None => server.store.create(RESERVATIONS_KEY, value).await,
            Some(kv) => {
                server
                    .store
                    .update(RESERVATIONS_KEY, value, kv.mod_revision)
                    .await
            }
        };
        match written {
            Ok(_) => {
                *svc = candidate;
                return Ok(());
            }
            // another master reserved in between: allocate again with its reservation
            Err(
                StoreError::Conflict { .. }
                | StoreError::AlreadyExists(_)
                | StoreError::NotFound(_),
            ) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn invalid(name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        "",
        "Service",
        name,
        &[FieldError {
            reason: "FieldValueInvalid",
            field: field.into(),
            message,
        }],
    )
}

/// Chooses the allocations of `svc` among those neither another stored Service nor another
/// Service's reservation holds; drops the reservations of stored Services.
async fn assign(
    server: &Server,
    key: &str,
    svc: &mut Value,
    old: Option<&Value>,
    reserved: &mut Reservations,
) -> Result<(), ApiError> {
    let Some(info) = find("", "services") else {
        return Ok(());
    };
    let name = svc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let all = server.store.list(&info.key_prefix(), None, 0, None).await?;
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for kv in all.items.iter().filter(|kv| kv.key != key) {
        let Ok(o) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        ips.extend(cluster_ips(&o));
        for p in o
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                ports.insert(n);
            }
        }
    }
    let stored: HashSet<&str> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    reserved
        .entries
        .retain(|r| !stored.contains(r.owner.as_str()));
    for r in reserved.entries.iter().filter(|r| r.owner != key) {
        ips.extend(r.ip.clone());
        ports.extend(r.port);
    }
    if svc.get("spec").is_none_or(|s| !s.is_object()) {
        svc["spec"] = json!({});
    }
    let spec = &mut svc["spec"];
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty == "ExternalName" {
        return Ok(());
    }
    let old_spec = old.and_then(|o| o.get("spec")).and_then(Value::as_object);
    let Some(spec_map) = spec.as_object_mut() else {
        return Ok(());
    };
    dualstack::init_ip_families(spec_map, old_spec, &server.service_cidrs)
        .map_err(|errs| ApiError::invalid("", "Service", &name, &errs))?;
    let used: HashSet<IpAddr> = ips.iter().filter_map(|ip| ip.parse().ok()).collect();
    let ips = cluster_ips_for(&name, spec_map, old_spec, &server.service_cidrs, &used)?;
    if let Some(first) = ips.first() {
        spec["clusterIP"] = json!(first);
        spec["clusterIPs"] = json!(ips);
    }
    // NodePorts
    let wants_node_ports = ty == "NodePort" || ty == "LoadBalancer";
    let old_ports: Vec<Value> = old
        .and_then(|o| o.pointer("/spec/ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (lo, hi) = server.node_ports;
    let mut mine = HashSet::new();
    if let Some(list) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for (i, p) in list.iter_mut().enumerate() {
            if !wants_node_ports {
                if let Some(o) = p.as_object_mut() {
                    o.remove("nodePort");
                }
                continue;
            }
            let explicit = p
                .get("nodePort")
                .and_then(Value::as_u64)
                .filter(|n| *n != 0);
            let inherited = old_ports
                .iter()
                .find(|o| o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol"))
                .and_then(|o| o.get("nodePort"))
                .and_then(Value::as_u64);
            let port = match explicit.or(inherited) {
                Some(n) => {
                    if n < u64::from(lo) || n > u64::from(hi) {
                        return Err(invalid(
                            &name,
                            &format!("spec.ports[{i}].nodePort"),
                            format!(
                                "Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                            ),
                        ));
                    }
                    if ports.contains(&n) || mine.contains(&n) {
                        return Err(invalid(
                            &name,
                            &format!("spec.ports[{i}].nodePort"),
                            format!("Invalid value: {n}: provided port is already allocated"),
                        ));
                    }
                    n
                }
                None => (u64::from(lo)..=u64::from(hi))
                    .find(|n| !ports.contains(n) && !mine.contains(n))
                    .ok_or_else(|| {
                        ApiError::internal("failed to allocate a nodePort: range is full")
                    })?,
            };
            mine.insert(port);
            p["nodePort"] = json!(port);
        }
    }
    Ok(())
}

/// The clusterIPs of a Service spec whose `ipFamilies` are settled: per family the requested
/// (or kept) address, checked to lie in that family's range and to be free of `used`, else
/// the first free address of the range; `["None"]` for a headless Service.
fn cluster_ips_for(
    name: &str,
    spec: &serde_json::Map<String, Value>,
    old: Option<&serde_json::Map<String, Value>>,
    cidrs: &ServiceCidrs,
    used: &HashSet<IpAddr>,
) -> Result<Vec<String>, ApiError> {
    let list = |m: &serde_json::Map<String, Value>, k: &str| -> Vec<String> {
        m.get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    let requested = list(spec, "clusterIPs");
    if requested.first().map(String::as_str) == Some("None") {
        return Ok(requested);
    }
    let old_ips = old.map(|o| list(o, "clusterIPs")).unwrap_or_default();
    for (i, (new, old)) in requested.iter().zip(&old_ips).enumerate() {
        if new != old && old != "None" {
            return Err(invalid(
                name,
                &format!("spec.clusterIPs[{i}]"),
                format!(
                    "Invalid value: {}: may not change once set",
                    go_strings(&requested)
                ),
            ));
        }
    }
    let mut out = Vec::new();
    for (i, fam) in list(spec, "ipFamilies").iter().enumerate() {
        let Some(range) = Family::parse(fam).and_then(|f| cidrs.get(f)) else {
            continue;
        };
        let ip = match requested.get(i) {
            Some(ip) => {
                let parsed: IpAddr = ip.parse().map_err(|_| {
                    invalid(
                        name,
                        &format!("spec.clusterIPs[{i}]"),
                        format!("Invalid value: \"{ip}\": must be a valid IP address"),
                    )
                })?;
                let kept = old_ips.get(i) == Some(ip);
                if !kept && !range.allocatable(parsed) {
                    return Err(invalid(
                        name,
                        "spec.clusterIPs",
                        format!(
                            "Invalid value: {}: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}",
                            go_strings(&requested)
                        ),
                    ));
                }
                if !kept && used.contains(&parsed) {
                    return Err(invalid(
                        name,
                        "spec.clusterIPs",
                        format!(
                            "Invalid value: {}: failed to allocate IP {ip}: provided IP is already allocated",
                            go_strings(&requested)
                        ),
                    ));
                }
                ip.clone()
            }
            None => range
                .first_free(used)
                .ok_or_else(|| {
                    ApiError::internal(format!(
                        "failed to allocate a serviceIP: range {range} is full"
                    ))
                })?
                .to_string(),
        };
        out.push(ip);
    }
    Ok(out)
}

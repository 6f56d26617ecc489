//! Service ClusterIP and NodePort allocation. Allocations are derived from the stored
//! Services (so they survive restarts and are released on delete); callers hold
//! `Server::alloc_lock` across allocate + store. Several masters sharing one etcd do not share
//! that lock: each allocation is also reserved, by compare-and-swap, in one store key
//! (`/registry/ranges/servicereservations`) that every allocation reads first, so two
//! masters allocating at once never hand out the same address or port. A reservation lives
//! long enough for its Service to be stored (then the Service itself holds the address).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use serde_json::{Value, json};

use super::Server;
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

/// The ClusterIP and NodePorts `svc` holds.
fn held(svc: &Value) -> (Option<String>, Vec<u64>) {
    let ip = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .map(str::to_string);
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .collect();
    (ip, ports)
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
        let (ip, ports) = held(&candidate);
        let (old_ip, old_ports) = old.map(held).unwrap_or_default();
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
        if let Some(ip) = ip.filter(|ip| old_ip.as_ref() != Some(ip)) {
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
        if let Some(ip) = o.pointer("/spec/clusterIP").and_then(Value::as_str) {
            ips.insert(ip.to_string());
        }
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
    // ClusterIP: keep the old one on update
    let old_ip = old
        .and_then(|o| o.pointer("/spec/clusterIP"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let requested = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| {
            spec.pointer("/clusterIPs/0")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .or(old_ip.clone());
    let (net, len) = server.service_net;
    let base = u32::from(net);
    let size = 1u64 << (32 - len);
    let ip = match requested {
        Some(ip) if ip == "None" => ip,
        Some(ip) => {
            if let Some(old_ip) = &old_ip
                && *old_ip != ip
            {
                return Err(invalid(
                    &name,
                    "spec.clusterIPs[0]",
                    "Invalid value: []string{\"".to_string() + &ip + "\"}: may not change once set",
                ));
            }
            let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                invalid(
                    &name,
                    "spec.clusterIPs[0]",
                    format!("Invalid value: \"{ip}\": must be a valid IP address"),
                )
            })?;
            let off = u64::from(u32::from(parsed).wrapping_sub(base));
            if u32::from(parsed) < base || off == 0 || off >= size - 1 {
                return Err(invalid(
                    &name,
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {net}/{len}"
                    ),
                ));
            }
            if ips.contains(&ip) {
                return Err(invalid(
                    &name,
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"
                    ),
                ));
            }
            ip
        }
        None => {
            // first free address, skipping .1 (the kubernetes Service) and the ends
            let found = (2..size - 1)
                .map(|off| Ipv4Addr::from(base.wrapping_add(off as u32)).to_string())
                .find(|ip| !ips.contains(ip));
            found.ok_or_else(|| {
                ApiError::internal("failed to allocate a serviceIP: range is full")
            })?
        }
    };
    spec["clusterIP"] = json!(ip);
    spec["clusterIPs"] = json!([ip]);
    if ip != "None" && spec.get("ipFamilies").is_none() {
        spec["ipFamilies"] = json!(["IPv4"]);
        spec["ipFamilyPolicy"] = json!("SingleStack");
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

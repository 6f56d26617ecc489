//! `meta.k8s.io/v1` Tables (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`) with the
//! columns kubectl's printers use for each kind.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// A column: name, type, format, priority (0 normal, 1 wide).
pub(crate) type Column = (&'static str, &'static str, &'static str, u8);

const NAME: Column = ("Name", "string", "name", 0);
const AGE: Column = ("Age", "string", "", 0);

fn columns(kind: &str) -> Vec<Column> {
    let s = |n: &'static str| (n, "string", "", 0u8);
    let w = |n: &'static str| (n, "string", "", 1u8);
    match kind {
        "Pod" => vec![
            NAME,
            s("Ready"),
            s("Status"),
            ("Restarts", "string", "", 0),
            AGE,
            w("IP"),
            w("Node"),
            w("Nominated Node"),
            w("Readiness Gates"),
        ],
        "Deployment" => vec![
            NAME,
            s("Ready"),
            ("Up-to-date", "integer", "", 0),
            ("Available", "integer", "", 0),
            AGE,
            w("Containers"),
            w("Images"),
            w("Selector"),
        ],
        "ReplicaSet" => vec![
            NAME,
            ("Desired", "integer", "", 0),
            ("Current", "integer", "", 0),
            ("Ready", "integer", "", 0),
            AGE,
            w("Containers"),
            w("Images"),
            w("Selector"),
        ],
        "Service" => vec![
            NAME,
            s("Type"),
            s("Cluster-IP"),
            s("External-IP"),
            s("Port(s)"),
            AGE,
            w("Selector"),
        ],
        "Node" => vec![
            NAME,
            s("Status"),
            s("Roles"),
            AGE,
            s("Version"),
            w("Internal-IP"),
            w("External-IP"),
            w("OS-Image"),
            w("Kernel-Version"),
            w("Container-Runtime"),
        ],
        "Endpoints" => vec![NAME, s("Endpoints"), AGE],
        "Namespace" => vec![NAME, s("Status"), AGE],
        "ConfigMap" => vec![NAME, ("Data", "integer", "", 0), AGE],
        "Secret" => vec![NAME, s("Type"), ("Data", "integer", "", 0), AGE],
        "ServiceAccount" => vec![NAME, ("Secrets", "integer", "", 0), AGE],
        "Event" => vec![
            s("Last Seen"),
            s("Type"),
            s("Reason"),
            s("Object"),
            w("Subobject"),
            w("Source"),
            s("Message"),
            w("First Seen"),
            ("Count", "integer", "", 1),
            ("Name", "string", "name", 1),
        ],
        "Lease" => vec![NAME, s("Holder"), AGE],
        "Job" | "CronJob" | "DaemonSet" => super::workloads::columns(kind),
        "HorizontalPodAutoscaler" => super::autoscaling::columns(),
        "PodDisruptionBudget" => super::policy::columns(),
        "EndpointSlice" => vec![NAME, s("AddressType"), s("Ports"), s("Endpoints"), AGE],
        _ => vec![NAME, AGE],
    }
}

fn description(name: &str) -> &'static str {
    match name {
        "Name" => {
            "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
        }
        "Age" => {
            "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
        }
        _ => "",
    }
}

/// kubectl's `HumanDuration` of a non-negative number of seconds.
pub(crate) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

pub(crate) fn since(ts: Option<&Value>, now: DateTime<Utc>) -> String {
    match ts
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    {
        Some(t) => human_duration((now - t.with_timezone(&Utc)).num_seconds()),
        None => "<unknown>".into(),
    }
}

pub(crate) fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn int_at(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

/// A label selector rendered as kubectl does (`app=nginx,tier in (a,b)`).
pub(crate) fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = str_at(e, "/key");
        let vals: Vec<&str> = arr(e, "/values").iter().filter_map(Value::as_str).collect();
        parts.push(match str_at(e, "/operator") {
            "In" => format!("{key} in ({})", vals.join(",")),
            "NotIn" => format!("{key} notin ({})", vals.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        });
    }
    parts.sort();
    or_none(parts.join(","))
}

pub(crate) fn map_selector(sel: Option<&Value>) -> String {
    let Some(m) = sel.and_then(Value::as_object) else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    parts.sort();
    or_none(parts.join(","))
}

pub(crate) fn containers_images(o: &Value, ptr: &str) -> (String, String) {
    let cs = arr(o, ptr);
    let names: Vec<&str> = cs.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| str_at(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn pod_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let total = arr(o, "/spec/containers").len();
    let mut ready = 0;
    let mut restarts = 0;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut reason = str_at(o, "/status/reason").to_string();
    if reason.is_empty() {
        reason = str_at(o, "/status/phase").to_string();
    }
    let mut initializing = false;
    let init_total = arr(o, "/spec/initContainers").len();
    for (i, c) in arr(o, "/status/initContainerStatuses").iter().enumerate() {
        restarts += int_at(c, "/restartCount");
        if let Some(t) = c.pointer("/state/terminated") {
            if int_at(t, "/exitCode") == 0 {
                continue;
            }
            reason = match str_at(t, "/reason") {
                "" if int_at(t, "/signal") != 0 => {
                    format!("Init:Signal:{}", int_at(t, "/signal"))
                }
                "" => format!("Init:ExitCode:{}", int_at(t, "/exitCode")),
                r => format!("Init:{r}"),
            };
            initializing = true;
        } else if let Some(r) = c
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            reason = format!("Init:{r}");
            initializing = true;
        } else if c.pointer("/state/running").is_some() && c.get("started") == Some(&json!(true)) {
            continue;
        } else {
            reason = format!("Init:{i}/{init_total}");
            initializing = true;
        }
        break;
    }
    if !initializing {
        let mut has_running = false;
        for c in arr(o, "/status/containerStatuses").iter().rev() {
            restarts += int_at(c, "/restartCount");
            if let Some(t) = c
                .pointer("/lastState/terminated/finishedAt")
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            {
                let t = t.with_timezone(&Utc);
                if last_restart.is_none_or(|l| t > l) {
                    last_restart = Some(t);
                }
            }
            if let Some(r) = c
                .pointer("/state/waiting/reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            {
                reason = r.to_string();
            } else if let Some(t) = c.pointer("/state/terminated") {
                reason = match str_at(t, "/reason") {
                    "" if int_at(t, "/signal") != 0 => format!("Signal:{}", int_at(t, "/signal")),
                    "" => format!("ExitCode:{}", int_at(t, "/exitCode")),
                    r => r.to_string(),
                };
            } else if c.pointer("/state/running").is_some() && c.get("ready") == Some(&json!(true))
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = arr(o, "/status/conditions")
                .iter()
                .any(|c| str_at(c, "/type") == "Ready" && str_at(c, "/status") == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        reason = if str_at(o, "/status/reason") == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    let restarts_cell = match last_restart {
        Some(t) if restarts > 0 => format!(
            "{restarts} ({} ago)",
            human_duration((now - t).num_seconds())
        ),
        _ => restarts.to_string(),
    };
    let ips: Vec<&str> = arr(o, "/status/podIPs")
        .iter()
        .map(|p| str_at(p, "/ip"))
        .collect();
    let ip = if ips.is_empty() {
        str_at(o, "/status/podIP").to_string()
    } else {
        ips.join(",")
    };
    let gates = arr(o, "/spec/readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conds = arr(o, "/status/conditions");
        let true_count = gates
            .iter()
            .filter(|g| {
                conds.iter().any(|c| {
                    str_at(c, "/type") == str_at(g, "/conditionType")
                        && str_at(c, "/status") == "True"
                })
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    vec![
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(since(o.pointer("/metadata/creationTimestamp"), now)),
        json!(or_none(ip)),
        json!(or_none(str_at(o, "/spec/nodeName").to_string())),
        json!(or_none(str_at(o, "/status/nominatedNodeName").to_string())),
        json!(gates_cell),
    ]
}

fn service_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ty = str_at(o, "/spec/type");
    let ty = if ty.is_empty() { "ClusterIP" } else { ty };
    let cluster_ip = or_none(str_at(o, "/spec/clusterIP").to_string());
    let external: Vec<&str> = arr(o, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external_ip = match ty {
        "ExternalName" => str_at(o, "/spec/externalName").to_string(),
        "LoadBalancer" => {
            let mut ips: Vec<String> = arr(o, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| {
                    let ip = str_at(i, "/ip");
                    if ip.is_empty() {
                        str_at(i, "/hostname").to_string()
                    } else {
                        ip.to_string()
                    }
                })
                .collect();
            ips.extend(external.iter().map(|s| s.to_string()));
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        _ => or_none(external.join(",")),
    };
    let ports: Vec<String> = arr(o, "/spec/ports")
        .iter()
        .map(|p| {
            let port = int_at(p, "/port");
            let proto = str_at(p, "/protocol");
            match int_at(p, "/nodePort") {
                0 => format!("{port}/{proto}"),
                np => format!("{port}:{np}/{proto}"),
            }
        })
        .collect();
    vec![
        json!(ty),
        json!(cluster_ip),
        json!(or_none(external_ip)),
        json!(or_none(ports.join(","))),
        json!(since(o.pointer("/metadata/creationTimestamp"), now)),
        json!(map_selector(o.pointer("/spec/selector"))),
    ]
}

fn node_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    for c in arr(o, "/status/conditions") {
        if str_at(c, "/type") == "Ready" {
            // kubectl's printNode: anything but True (False, Unknown) is NotReady.
            status.push(match str_at(c, "/status") {
                "True" => "Ready".into(),
                _ => "NotReady".into(),
            });
        }
    }
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = o.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                if !r.is_empty() {
                    roles.push(r.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    roles.push(v.to_string());
                }
            }
        }
    }
    roles.sort();
    roles.dedup();
    let addr = |t: &str| {
        arr(o, "/status/addresses")
            .iter()
            .find(|a| str_at(a, "/type") == t)
            .map(|a| str_at(a, "/address").to_string())
            .unwrap_or_default()
    };
    vec![
        json!(status.join(",")),
        json!(or_none(roles.join(","))),
        json!(since(o.pointer("/metadata/creationTimestamp"), now)),
        json!(str_at(o, "/status/nodeInfo/kubeletVersion")),
        json!(or_none(addr("InternalIP"))),
        json!(or_none(addr("ExternalIP"))),
        json!(or_none(str_at(o, "/status/nodeInfo/osImage").to_string())),
        json!(or_none(
            str_at(o, "/status/nodeInfo/kernelVersion").to_string()
        )),
        json!(or_none(
            str_at(o, "/status/nodeInfo/containerRuntimeVersion").to_string()
        )),
    ]
}

fn endpoints_cell(o: &Value) -> String {
    let mut list: Vec<String> = Vec::new();
    let mut count = 0;
    for s in arr(o, "/subsets") {
        let ports = arr(s, "/ports");
        for a in arr(s, "/addresses") {
            let ip = str_at(a, "/ip");
            if ports.is_empty() {
                count += 1;
                if list.len() < 3 {
                    list.push(ip.to_string());
                }
            }
            for p in ports {
                count += 1;
                if list.len() < 3 {
                    list.push(format!("{ip}:{}", int_at(p, "/port")));
                }
            }
        }
    }
    let mut s = list.join(",");
    if count > list.len() {
        s = format!("{s} + {} more...", count - list.len());
    }
    or_none(s)
}

fn endpointslice_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ports: Vec<String> = arr(o, "/ports")
        .iter()
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(n) => n.to_string(),
            None => "<unset>".into(),
        })
        .collect();
    let mut addrs: Vec<&str> = Vec::new();
    let mut count = 0;
    for e in arr(o, "/endpoints") {
        for a in arr(e, "/addresses") {
            count += 1;
            if addrs.len() < 3 {
                addrs.push(a.as_str().unwrap_or(""));
            }
        }
    }
    let mut eps = addrs.join(",");
    if count > addrs.len() {
        eps = format!("{eps} + {} more...", count - addrs.len());
    }
    vec![
        json!(str_at(o, "/addressType")),
        json!(if ports.is_empty() {
            "<unset>".into()
        } else {
            ports.join(",")
        }),
        json!(if eps.is_empty() {
            "<unset>".into()
        } else {
            eps
        }),
        json!(since(o.pointer("/metadata/creationTimestamp"), now)),
    ]
}

fn event_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let last = [
        "/lastTimestamp",
        "/eventTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .find_map(|p| o.pointer(p).filter(|v| v.is_string()));
    let first = [
        "/firstTimestamp",
        "/eventTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .find_map(|p| o.pointer(p).filter(|v| v.is_string()));
    let obj = format!(
        "{}/{}",
        str_at(o, "/involvedObject/kind").to_lowercase(),
        str_at(o, "/involvedObject/name")
    );
    let mut source = str_at(o, "/source/component").to_string();
    if source.is_empty() {
        source = str_at(o, "/reportingComponent").to_string();
    }
    let host = str_at(o, "/source/host");
    if !host.is_empty() {
        source = format!("{source}, {host}");
    }
    let count = o.get("count").and_then(Value::as_i64).unwrap_or(1);
    vec![
        json!(since(last, now)),
        json!(str_at(o, "/type")),
        json!(str_at(o, "/reason")),
        json!(obj),
        json!(str_at(o, "/involvedObject/fieldPath")),
        json!(source),
        json!(str_at(o, "/message").trim()),
        json!(since(first, now)),
        json!(count),
        json!(str_at(o, "/metadata/name")),
    ]
}

fn cells(kind: &str, o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(str_at(o, "/metadata/name"));
    let age = json!(since(o.pointer("/metadata/creationTimestamp"), now));
    let count = |p: &str| o.pointer(p).and_then(Value::as_object).map_or(0, Map::len);
    let mut row = match kind {
        "Pod" => pod_cells(o, now),
        "Deployment" => {
            let (c, i) = containers_images(o, "/spec/template/spec/containers");
            vec![
                json!(format!(
                    "{}/{}",
                    int_at(o, "/status/readyReplicas"),
                    int_at(o, "/spec/replicas")
                )),
                json!(int_at(o, "/status/updatedReplicas")),
                json!(int_at(o, "/status/availableReplicas")),
                age,
                json!(c),
                json!(i),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "ReplicaSet" => {
            let (c, i) = containers_images(o, "/spec/template/spec/containers");
            vec![
                json!(int_at(o, "/spec/replicas")),
                json!(int_at(o, "/status/replicas")),
                json!(int_at(o, "/status/readyReplicas")),
                age,
                json!(c),
                json!(i),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "Service" => service_cells(o, now),
        "Node" => node_cells(o, now),
        "Endpoints" => vec![json!(endpoints_cell(o)), age],
        "Namespace" => vec![json!(str_at(o, "/status/phase")), age],
        "ConfigMap" => vec![json!(count("/data") + count("/binaryData")), age],
        "Secret" => vec![json!(str_at(o, "/type")), json!(count("/data")), age],
        "ServiceAccount" => vec![json!(arr(o, "/secrets").len()), age],
        "Event" => return event_cells(o, now),
        "Lease" => vec![json!(str_at(o, "/spec/holderIdentity")), age],
        "Job" | "CronJob" | "DaemonSet" => super::workloads::cells(kind, o, now),
        "HorizontalPodAutoscaler" => super::autoscaling::cells(o, now),
        "PodDisruptionBudget" => super::policy::cells(o, now),
        "EndpointSlice" => endpointslice_cells(o, now),
        _ => vec![age],
    };
    row.insert(0, name);
    row
}

/// The Table of `items` for `kind`, with PartialObjectMetadata row objects.
pub(crate) fn build(kind: &str, items: &[Value], now: DateTime<Utc>) -> Value {
    let defs: Vec<Value> = columns(kind)
        .into_iter()
        .map(|(name, ty, format, priority)| {
            json!({"name": name, "type": ty, "format": format,
                   "description": description(name), "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({
                "cells": cells(kind, o, now),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, want) in [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400, "3y"),
        ] {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T01:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn rows() {
        let ts = "2024-01-01T00:00:00Z";
        let cases = vec![
            (
                "Pod",
                json!({"metadata": {"name": "p", "creationTimestamp": ts},
                       "spec": {"containers": [{"name": "c"}], "nodeName": "n1"},
                       "status": {"phase": "Running", "podIP": "10.0.0.5",
                                  "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0,
                                                         "state": {"running": {}}}]}}),
                json!([
                    "p", "1/1", "Running", "0", "60m", "10.0.0.5", "n1", "<none>", "<none>"
                ]),
            ),
            (
                "Pod",
                json!({"metadata": {"name": "q", "creationTimestamp": ts},
                       "spec": {"containers": [{"name": "c"}]},
                       "status": {"phase": "Pending", "containerStatuses": [{"name": "c", "restartCount": 2,
                           "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                           "lastState": {"terminated": {"finishedAt": "2024-01-01T00:59:00Z"}}}]}}),
                json!([
                    "q",
                    "0/1",
                    "CrashLoopBackOff",
                    "2 (60s ago)",
                    "60m",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "Deployment",
                json!({"metadata": {"name": "d", "creationTimestamp": ts},
                       "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "nginx"}},
                                "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.14.2"}]}}},
                       "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}),
                json!([
                    "d",
                    "2/3",
                    3,
                    2,
                    "60m",
                    "nginx",
                    "nginx:1.14.2",
                    "app=nginx"
                ]),
            ),
            (
                "Service",
                json!({"metadata": {"name": "web-service", "creationTimestamp": ts},
                       "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "selector": {"app": "nginx"},
                                "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}}),
                json!([
                    "web-service",
                    "NodePort",
                    "10.96.0.10",
                    "<none>",
                    "80:30080/TCP",
                    "60m",
                    "app=nginx"
                ]),
            ),
            (
                "Node",
                json!({"metadata": {"name": "n", "creationTimestamp": ts,
                                    "labels": {"node-role.kubernetes.io/control-plane": ""}},
                       "spec": {"unschedulable": true},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}],
                                  "addresses": [{"type": "InternalIP", "address": "192.168.1.2"}],
                                  "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian",
                                               "kernelVersion": "6.1", "containerRuntimeVersion": "skiff://0.1"}}}),
                json!([
                    "n",
                    "Ready,SchedulingDisabled",
                    "control-plane",
                    "60m",
                    "v1.33.0",
                    "192.168.1.2",
                    "<none>",
                    "Debian",
                    "6.1",
                    "skiff://0.1"
                ]),
            ),
            (
                "Endpoints",
                json!({"metadata": {"name": "e", "creationTimestamp": ts},
                       "subsets": [{"addresses": [{"ip": "1.1.1.1"}, {"ip": "1.1.1.2"}, {"ip": "1.1.1.3"}, {"ip": "1.1.1.4"}],
                                    "ports": [{"port": 80}]}]}),
                json!(["e", "1.1.1.1:80,1.1.1.2:80,1.1.1.3:80 + 1 more...", "60m"]),
            ),
            (
                "Secret",
                json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "", "b": ""}}),
                json!(["s", "Opaque", 2, "<unknown>"]),
            ),
            (
                "ConfigMap",
                json!({"metadata": {"name": "c", "creationTimestamp": ts}, "data": {"a": ""}}),
                json!(["c", 1, "60m"]),
            ),
            (
                "Lease",
                json!({"metadata": {"name": "l", "creationTimestamp": ts}, "spec": {"holderIdentity": "h"}}),
                json!(["l", "h", "60m"]),
            ),
        ];
        for (kind, obj, want) in cases {
            let t = build(kind, std::slice::from_ref(&obj), now());
            assert_eq!(t["rows"][0]["cells"], want, "{kind}");
            assert_eq!(
                t["columnDefinitions"].as_array().unwrap().len(),
                want.as_array().unwrap().len(),
                "{kind}"
            );
            assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
            assert_eq!(t["rows"][0]["object"]["metadata"], obj["metadata"]);
        }
    }
}

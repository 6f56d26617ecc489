//! Discovery documents: `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`, aggregated
//! discovery (apidiscovery.k8s.io v2 and v2beta1), `/version`.

use serde_json::{Value, json};

use crate::resources::{RESOURCES, ResourceInfo};

/// The version the server reports.
pub const GIT_VERSION: &str = "v1.33.0-skiff";

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Verbs and (group, version, kind) of a subresource of `info`.
fn subresource(
    info: &ResourceInfo,
    sub: &str,
) -> (
    Vec<&'static str>,
    (&'static str, &'static str, &'static str),
) {
    let own = (info.group, info.version, info.kind);
    match sub {
        "status" => (vec!["get", "patch", "update"], own),
        "scale" => (
            vec!["get", "patch", "update"],
            ("autoscaling", "v1", "Scale"),
        ),
        "binding" => (vec!["create"], ("", "v1", "Binding")),
        "eviction" => (vec!["create"], ("policy", "v1", "Eviction")),
        "log" => (vec!["get"], ("", "v1", "Pod")),
        "exec" => (vec!["create", "get"], ("", "v1", "PodExecOptions")),
        "attach" => (vec!["create", "get"], ("", "v1", "PodAttachOptions")),
        "portforward" => (vec!["create", "get"], ("", "v1", "PodPortForwardOptions")),
        "finalize" => (vec!["update"], own),
        _ => (vec!["get"], own),
    }
}

/// The group versions served, core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// `/api`.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]
    })
}

/// The groups served with their versions, preferred (storage) version first.
fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for (g, v) in group_versions() {
        match out.iter_mut().find(|(og, _)| *og == g) {
            Some((_, vs)) => vs.push(v),
            None => out.push((g, vec![v])),
        }
    }
    out
}

/// `/apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| {
            let gvs: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "preferredVersion": gvs[0].clone(), "versions": gvs})
        })
        .chain([super::metrics::group_entry()])
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/api/v1`, `/apis/{group}/{version}`; None when not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if (group, version) == (super::metrics::GROUP, super::metrics::VERSION) {
        return Some(super::metrics::resource_list());
    }
    let rs: Vec<&ResourceInfo> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if rs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in rs {
        let mut main = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
            "storageVersionHash": "",
        });
        if !r.short_names.is_empty() {
            main["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            main["categories"] = json!(r.categories);
        }
        resources.push(main);
        for sub in r.subresources {
            let (verbs, (g, v, k)) = subresource(r, sub);
            let mut s = json!({
                "name": format!("{}/{}", r.plural, sub),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": k,
                "verbs": verbs,
            });
            if g != r.group || v != r.version {
                s["group"] = json!(g);
                s["version"] = json!(v);
            }
            resources.push(s);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources
    }))
}

/// Which aggregated discovery version an Accept header asks for, if any.
pub fn aggregated_version(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("as=APIGroupDiscoveryList") && p.contains("g=apidiscovery.k8s.io") {
            if p.contains("v=v2;") || p.ends_with("v=v2") {
                return Some("v2");
            }
            if p.contains("v=v2beta1") {
                return Some("v2beta1");
            }
        }
    }
    None
}

/// Aggregated discovery for `/api` (core = true) or `/apis`.
pub fn aggregated(core: bool, version: &str) -> Value {
    let items: Vec<Value> = groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .into_iter()
                .map(|v| aggregated_version_entry(g, v))
                .collect();
            json!({
                "metadata": {"name": g, "creationTimestamp": null},
                "versions": versions
            })
        })
        .chain((!core).then(super::metrics::aggregated_item))
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items
    })
}

/// One version of a group in aggregated discovery.
fn aggregated_version_entry(g: &str, v: &str) -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == g && r.version == v)
        .map(|r| {
            let subs: Vec<Value> = r
                .subresources
                .iter()
                .map(|s| {
                    let (verbs, (sg, sv, sk)) = subresource(r, s);
                    json!({
                        "subresource": s,
                        "responseKind": {"group": sg, "version": sv, "kind": sk},
                        "verbs": verbs
                    })
                })
                .collect();
            let mut o = json!({
                "resource": r.plural,
                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": VERBS,
            });
            if !r.short_names.is_empty() {
                o["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                o["categories"] = json!(r.categories);
            }
            if !subs.is_empty() {
                o["subresources"] = json!(subs);
            }
            o
        })
        .collect();
    json!({"version": v, "resources": resources, "freshness": "Current"})
}

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

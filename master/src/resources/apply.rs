//! Server-side apply: merging an applied configuration, field ownership in
//! `metadata.managedFields` (FieldsV1), and conflicts between managers.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::strategic::{ListStrategy, list_strategy, strategic_merge};
use super::{PatchError, ResourceInfo};

/// One element of a FieldsV1 path: `f:name`, `k:{"name":"x"}` or `v:"x"`.
type FieldPath = Vec<String>;

/// Metadata fields the server owns; never tracked as managed.
const UNTRACKED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The key fields of a keyed list element as SSA identifies it (with defaults filled).
fn element_key(merge_key: &str, with_protocol: bool, item: &Map<String, Value>) -> Option<Value> {
    let mut key = Map::new();
    key.insert(merge_key.to_string(), item.get(merge_key)?.clone());
    if with_protocol {
        let proto = item
            .get("protocol")
            .cloned()
            .unwrap_or_else(|| json!("TCP"));
        key.insert("protocol".into(), proto);
    }
    Some(Value::Object(key))
}

/// The leaf paths (and keyed-element paths) set in `value`.
fn collect(
    kind: &str,
    names: &mut Vec<String>,
    path: &mut FieldPath,
    value: &Value,
    out: &mut BTreeSet<FieldPath>,
) {
    match value {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                if path.is_empty() && (k == "apiVersion" || k == "kind" || k == "status") {
                    continue;
                }
                if path.len() == 1
                    && path[0] == "f:metadata"
                    && UNTRACKED_META.contains(&k.as_str())
                {
                    continue;
                }
                path.push(format!("f:{k}"));
                names.push(k.clone());
                let strategy = {
                    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
                    list_strategy(kind, &name_refs)
                };
                match v {
                    Value::Array(items) => match strategy {
                        ListStrategy::MergeKey(mk) => {
                            // Ports are keyed by port and protocol in server-side apply.
                            let with_protocol = k == "ports"
                                && (mk == "containerPort" || (kind == "Service" && mk == "port"));
                            for item in items {
                                let Some(im) = item.as_object() else { continue };
                                let Some(key) = element_key(mk, with_protocol, im) else {
                                    continue;
                                };
                                path.push(format!("k:{key}"));
                                out.insert(path.clone());
                                collect(kind, names, path, item, out);
                                path.pop();
                            }
                        }
                        ListStrategy::MergeSet => {
                            for item in items {
                                path.push(format!("v:{item}"));
                                out.insert(path.clone());
                                path.pop();
                            }
                        }
                        ListStrategy::Replace => {
                            out.insert(path.clone());
                        }
                    },
                    _ => collect(kind, names, path, v, out),
                }
                names.pop();
                path.pop();
            }
        }
        _ => {
            if !path.is_empty() {
                out.insert(path.clone());
            }
        }
    }
}

/// The managed paths of an applied configuration.
pub(crate) fn field_set(kind: &str, value: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    collect(kind, &mut Vec::new(), &mut Vec::new(), value, &mut out);
    out
}

/// A path set as FieldsV1 JSON.
pub(crate) fn to_fields_v1(set: &BTreeSet<FieldPath>) -> Value {
    fn insert(node: &mut Map<String, Value>, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let entry = node
            .entry(first.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(next) = entry {
            if rest.is_empty() {
                if first.starts_with("k:") {
                    next.insert(".".into(), json!({}));
                }
            } else {
                insert(next, rest);
            }
        }
    }
    let mut root = Map::new();
    for path in set {
        insert(&mut root, path);
    }
    Value::Object(root)
}

/// FieldsV1 JSON as a path set.
pub(crate) fn from_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        let Some(m) = v.as_object() else { return };
        for (k, child) in m {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            path.push(k.clone());
            if child.as_object().is_none_or(Map::is_empty) {
                out.insert(path.clone());
            } else {
                walk(child, path, out);
            }
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// The value at a FieldsV1 path in `obj`.
fn resolve<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        cur = if let Some(f) = el.strip_prefix("f:") {
            cur.get(f)?
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur.as_array()?.iter().find(|item| {
                key.iter().all(|(kk, kv)| {
                    item.get(kk) == Some(kv)
                        || (kk == "protocol" && item.get(kk).is_none() && kv == "TCP")
                })
            })?
        } else if let Some(v) = el.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur.as_array()?.iter().find(|item| **item == want)?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// Removes the field or element at `path` from `obj` (no-op when absent).
fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for el in parents {
        let next = if let Some(f) = el.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = el.strip_prefix("k:") {
            let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) else {
                return;
            };
            cur.as_array_mut().and_then(|a| {
                a.iter_mut().find(|item| {
                    key.iter()
                        .all(|(kk, kv)| item.get(kk).is_none_or(|v| v == kv))
                })
            })
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(key), Some(a)) = (
            serde_json::from_str::<Map<String, Value>>(k),
            cur.as_array_mut(),
        ) {
            a.retain(|item| {
                !key.iter()
                    .all(|(kk, kv)| item.get(kk).is_none_or(|v| v == kv))
            });
        }
    } else if let Some(v) = last.strip_prefix("v:") {
        if let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(v), cur.as_array_mut()) {
            a.retain(|item| *item != want);
        }
    }
}

/// `.spec.containers[name="nginx"].image` for conflict messages.
fn display(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| m.iter().map(|(a, b)| format!("{a}={b}")).collect())
                .unwrap_or_default();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses an apply body: JSON, or YAML.
fn parse_body(body: &[u8]) -> Result<Value, PatchError> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    serde_saphyr::from_slice::<Value>(body).map_err(|e| PatchError::Invalid(e.to_string()))
}

/// Server-side apply of `body` by `manager` onto `original`.
pub(crate) fn apply(
    info: &ResourceInfo,
    original: &Value,
    body: &[u8],
    manager: &str,
    force: bool,
) -> Result<Value, PatchError> {
    let applied = parse_body(body)?;
    if !applied.is_object() {
        return Err(PatchError::Invalid(
            "the applied configuration must be an object".into(),
        ));
    }
    for key in ["apiVersion", "kind"] {
        if applied
            .get(key)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(PatchError::Invalid(format!("{key} must be set")));
        }
    }
    if manager.is_empty() {
        return Err(PatchError::Invalid(
            "fieldManager is required for apply requests".into(),
        ));
    }
    let kind = info.kind;
    let api_version = info.api_version();
    let new_set = field_set(kind, &applied);
    let mut entries: Vec<Value> = original
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_mine = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
    };
    let prev_set = entries
        .iter()
        .find(|e| is_mine(e))
        .and_then(|e| e.get("fieldsV1"))
        .map(from_fields_v1)
        .unwrap_or_default();

    // Conflicts: fields another manager owns that this apply sets to a different value.
    let mut conflicts: Vec<(String, String, FieldPath)> = Vec::new();
    for e in entries.iter().filter(|e| !is_mine(e)) {
        let other = e.get("fieldsV1").map(from_fields_v1).unwrap_or_default();
        let who = e.get("manager").and_then(Value::as_str).unwrap_or("");
        let using = e.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        for path in new_set.intersection(&other) {
            if path
                .last()
                .is_some_and(|l| l.starts_with("k:") || l.starts_with("v:"))
            {
                continue;
            }
            let current = resolve(original, path);
            let wanted = resolve(&applied, path);
            if current.is_some() && current != wanted {
                conflicts.push((who.to_string(), using.to_string(), path.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let n = conflicts.len();
        let mut msg = format!(
            "Apply failed with {n} conflict{}: ",
            if n == 1 { "" } else { "s" }
        );
        if n == 1 {
            let (who, using, path) = &conflicts[0];
            msg.push_str(&format!(
                "conflict with {who:?} using {using}: {}",
                display(path)
            ));
        } else {
            let lines: Vec<String> = conflicts
                .iter()
                .map(|(who, using, path)| {
                    format!("conflict with {who:?} using {using}: {}", display(path))
                })
                .collect();
            msg.push_str(&lines.join("\n"));
        }
        return Err(PatchError::Conflict(msg));
    }

    // Forced: the other managers lose the conflicting fields.
    if force {
        for e in entries.iter_mut().filter(|e| !is_mine(e)) {
            let who = e
                .get("manager")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut set = e.get("fieldsV1").map(from_fields_v1).unwrap_or_default();
            let before = set.len();
            for (_, _, p) in conflicts.iter().filter(|(w, _, _)| *w == who) {
                set.remove(p);
            }
            if set.len() != before {
                if let Some(m) = e.as_object_mut() {
                    m.insert("fieldsV1".into(), to_fields_v1(&set));
                }
            }
        }
        entries.retain(|e| {
            e.get("fieldsV1")
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
        });
    }

    // Merge the applied configuration.
    let mut merged = strategic_merge(kind, original, &applied).map_err(PatchError::Invalid)?;

    // Fields this manager applied before, no longer applies, and nobody else owns: removed.
    let others: BTreeSet<FieldPath> = entries
        .iter()
        .filter(|e| !is_mine(e))
        .filter_map(|e| e.get("fieldsV1"))
        .flat_map(from_fields_v1)
        .collect();
    let mut gone: Vec<&FieldPath> = prev_set
        .iter()
        .filter(|p| !new_set.contains(*p) && !others.contains(*p))
        .collect();
    gone.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in gone {
        remove(&mut merged, p);
    }

    // Record ownership; the time moves only when what the manager owns changes (as the
    // upstream field manager), so applying the same configuration again is a no-op.
    let fields = to_fields_v1(&new_set);
    let time = entries
        .iter()
        .find(|e| is_mine(e))
        .filter(|e| e.get("fieldsV1") == Some(&fields) && e["apiVersion"] == api_version)
        .and_then(|e| e.get("time").cloned())
        .unwrap_or_else(|| json!(now_rfc3339()));
    let entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    });
    match entries.iter().position(is_mine) {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }
    if let Some(meta) = merged.as_object_mut().and_then(|m| {
        m.entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
    }) {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
    Ok(merged)
}

/// Records an update (create, PUT or non-apply PATCH) by `manager` in `new`'s managedFields:
/// the manager takes the fields the update set or changed, other managers lose them, and
/// fields the update removed leave every owner.
pub(crate) fn track_update(info: &ResourceInfo, old: &Value, new: &mut Value, manager: &str) {
    if manager.is_empty() {
        return;
    }
    let kind = info.kind;
    let old_set = field_set(kind, old);
    let new_set = field_set(kind, new);
    let changed: BTreeSet<FieldPath> = new_set
        .iter()
        .filter(|p| !old_set.contains(*p) || resolve(old, p) != resolve(new, p))
        .cloned()
        .collect();
    let mut entries: Vec<Value> = new
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_mine = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Update")
    };
    let mut mine: BTreeSet<FieldPath> = BTreeSet::new();
    let mut before: Option<(BTreeSet<FieldPath>, Value)> = None;
    for e in entries.iter_mut() {
        let set = e.get("fieldsV1").map(from_fields_v1).unwrap_or_default();
        let kept: BTreeSet<FieldPath> = if is_mine(e) {
            mine = set.intersection(&new_set).cloned().collect();
            before = Some((set, e.get("time").cloned().unwrap_or(Value::Null)));
            continue;
        } else {
            set.iter()
                .filter(|p| new_set.contains(*p) && !changed.contains(*p))
                .cloned()
                .collect()
        };
        if kept != set {
            if let Some(m) = e.as_object_mut() {
                m.insert("fieldsV1".into(), to_fields_v1(&kept));
            }
        }
    }
    mine.extend(changed);
    entries.retain(|e| {
        !is_mine(e)
            && e.get("fieldsV1")
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
    });
    if !mine.is_empty() {
        // the time moves only when the manager's fields change
        let time = match before {
            Some((set, time)) if set == mine && !time.is_null() => time,
            _ => json!(now_rfc3339()),
        };
        entries.push(json!({
            "manager": manager,
            "operation": "Update",
            "apiVersion": info.api_version(),
            "time": time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(&mine),
        }));
    }
    if let Some(meta) = new.as_object_mut().and_then(|m| {
        m.entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
    }) {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn fields_v1_round_trip() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"app": "x"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]}}}});
        let set = field_set("Deployment", &d);
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                   "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                       "k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {},
                           "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}}}}}})
        );
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn conflicts_and_force() {
        let info = find("apps", "deployments").unwrap();
        let body = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"replicas":2}}"#;
        let a = apply(info, &json!({}), body, "alice", false).unwrap();
        assert_eq!(a["spec"]["replicas"], 2);
        assert_eq!(a["metadata"]["managedFields"][0]["manager"], "alice");
        // Same value by another manager: shared, no conflict.
        let b = apply(info, &a, body, "bob", false).unwrap();
        assert_eq!(b["metadata"]["managedFields"].as_array().unwrap().len(), 2);
        let body3 =
            b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: 5\n";
        let err = apply(info, &b, body3, "carol", false).unwrap_err();
        let PatchError::Conflict(msg) = err else {
            panic!("{err}")
        };
        assert!(msg.contains("Apply failed with 2 conflicts"), "{msg}");
        assert!(
            msg.contains("conflict with \"alice\" using apps/v1: .spec.replicas"),
            "{msg}"
        );
        let c = apply(info, &b, body3, "carol", true).unwrap();
        assert_eq!(c["spec"]["replicas"], 5);
        let managers: Vec<&str> = c["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, vec!["carol"]);
    }

    #[test]
    fn updates_take_ownership() {
        let info = find("apps", "deployments").unwrap();
        let body = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"replicas":2,"paused":false}}"#;
        let applied = apply(info, &json!({}), body, "alice", false).unwrap();
        // kubectl scale / edit by another manager changes replicas: alice loses it.
        let mut new = applied.clone();
        new["spec"]["replicas"] = json!(7);
        track_update(info, &applied, &mut new, "kubectl-edit");
        let mf = new["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 2);
        assert_eq!(mf[0]["fieldsV1"], json!({"f:spec": {"f:paused": {}}}));
        assert_eq!(mf[1]["manager"], "kubectl-edit");
        assert_eq!(mf[1]["operation"], "Update");
        assert_eq!(mf[1]["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        // Re-applying replicas now conflicts with the Update manager.
        let body = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"replicas":2,"paused":false}}"#;
        let err = apply(info, &new, body, "alice", false).unwrap_err();
        assert!(
            err.to_string().contains("conflict with \"kubectl-edit\""),
            "{err}"
        );
    }

    #[test]
    fn removes_dropped_fields() {
        let info = find("", "configmaps").unwrap();
        let a = apply(info, &json!({}), br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"a":"1","b":"2"}}"#, "m", false).unwrap();
        let b = apply(
            info,
            &a,
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"a":"1"}}"#,
            "m",
            false,
        )
        .unwrap();
        assert_eq!(b["data"], json!({"a": "1"}));
        assert!(apply(info, &a, b"{}", "m", false).is_err());
        assert!(
            apply(
                info,
                &a,
                br#"{"apiVersion":"v1","kind":"ConfigMap"}"#,
                "",
                false
            )
            .is_err()
        );
    }
}

//! Strategic merge patch (`application/strategic-merge-patch+json`) with Kubernetes'
//! `patchMergeKey`/`patchStrategy` for the served types, and its directives.

use serde_json::{Map, Value};

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListStrategy {
    /// Atomic: the patch's list replaces the original's.
    Replace,
    /// A list of maps merged by the key field.
    MergeKey(&'static str),
    /// A list of primitives merged as a set.
    MergeSet,
}

/// The merge strategy of the list at `path` (field names from the object root, no indices).
pub(crate) fn list_strategy(kind: &str, path: &[&str]) -> ListStrategy {
    use ListStrategy::{MergeKey, MergeSet, Replace};
    let Some((last, parents)) = path.split_last() else {
        return Replace;
    };
    let parent = parents.last().copied().unwrap_or("");
    match *last {
        "containers" | "initContainers" | "ephemeralContainers" => MergeKey("name"),
        "ports"
            if matches!(
                parent,
                "containers" | "initContainers" | "ephemeralContainers"
            ) =>
        {
            MergeKey("containerPort")
        }
        "ports" if kind == "Service" && parents == ["spec"] => MergeKey("port"),
        "env" => MergeKey("name"),
        "volumes" if parent == "spec" => MergeKey("name"),
        "volumeMounts" => MergeKey("mountPath"),
        "volumeDevices" => MergeKey("devicePath"),
        "imagePullSecrets" | "resourceClaims" | "schedulingGates" => MergeKey("name"),
        "hostAliases" => MergeKey("ip"),
        "topologySpreadConstraints" => MergeKey("topologyKey"),
        "conditions" => MergeKey("type"),
        "addresses" if kind == "Node" && parents == ["status"] => MergeKey("type"),
        "ownerReferences" if parent == "metadata" => MergeKey("uid"),
        "finalizers" if parent == "metadata" => MergeSet,
        _ => Replace,
    }
}

const DIRECTIVE_PATCH: &str = "$patch";
const DIRECTIVE_RETAIN_KEYS: &str = "$retainKeys";
const PREFIX_ORDER: &str = "$setElementOrder/";
const PREFIX_DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch to `original`.
pub(crate) fn strategic_merge(
    kind: &str,
    original: &Value,
    patch: &Value,
) -> Result<Value, String> {
    let Value::Object(patch) = patch else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    let original = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut path = Vec::new();
    match merge_map(kind, &mut path, original, patch)? {
        Some(m) => Ok(Value::Object(m)),
        None => Ok(Value::Object(Map::new())),
    }
}

/// Merges a patch map into an original map. Returns `None` when the map is deleted.
fn merge_map<'a>(
    kind: &str,
    path: &mut Vec<&'a str>,
    mut original: Map<String, Value>,
    patch: &'a Map<String, Value>,
) -> Result<Option<Map<String, Value>>, String> {
    match patch.get(DIRECTIVE_PATCH) {
        Some(Value::String(d)) if d == "delete" => return Ok(None),
        Some(Value::String(d)) if d == "replace" => {
            return Ok(Some(strip_directives(patch)));
        }
        Some(Value::String(d)) if d == "merge" => {}
        Some(other) => return Err(format!("unknown patch type: {other}")),
        None => {}
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            if let Some(field) = key.strip_prefix(PREFIX_DELETE_PRIMITIVE) {
                let Value::Array(remove) = value else {
                    return Err(format!("{key} must be a list"));
                };
                if let Some(Value::Array(list)) = original.get_mut(field) {
                    list.retain(|v| !remove.contains(v));
                }
            }
            continue;
        }
        path.push(key.as_str());
        match value {
            Value::Null => {
                original.remove(key);
            }
            Value::Object(pm) => {
                let base = match original.remove(key) {
                    Some(Value::Object(om)) => om,
                    _ => Map::new(),
                };
                if let Some(m) = merge_map(kind, path, base, pm)? {
                    original.insert(key.clone(), Value::Object(m));
                }
            }
            Value::Array(pl) => {
                let strategy = list_strategy(kind, path);
                let base = match original.remove(key) {
                    Some(Value::Array(ol)) => ol,
                    _ => Vec::new(),
                };
                let merged = merge_list(kind, path, strategy, base, pl)?;
                original.insert(key.clone(), Value::Array(merged));
            }
            other => {
                original.insert(key.clone(), other.clone());
            }
        }
        path.pop();
    }
    // Reorder lists per $setElementOrder.
    for (key, value) in patch {
        let Some(field) = key.strip_prefix(PREFIX_ORDER) else {
            continue;
        };
        let Value::Array(order) = value else {
            return Err(format!("{key} must be a list"));
        };
        path.push(field);
        let strategy = list_strategy(kind, path);
        path.pop();
        if let Some(Value::Array(list)) = original.get_mut(field) {
            reorder(list, order, strategy);
        }
    }
    if let Some(retain) = patch.get(DIRECTIVE_RETAIN_KEYS) {
        let Value::Array(keys) = retain else {
            return Err("$retainKeys must be a list".into());
        };
        original.retain(|k, _| keys.iter().any(|r| r.as_str() == Some(k)));
    }
    Ok(Some(original))
}

fn merge_list<'a>(
    kind: &str,
    path: &mut Vec<&'a str>,
    strategy: ListStrategy,
    mut original: Vec<Value>,
    patch: &'a [Value],
) -> Result<Vec<Value>, String> {
    // A `{"$patch": "replace"}` element replaces the whole list.
    let replace = patch.iter().any(|v| {
        v.as_object().is_some_and(|m| {
            m.len() == 1 && m.get(DIRECTIVE_PATCH) == Some(&Value::from("replace"))
        })
    });
    if replace {
        return Ok(patch
            .iter()
            .filter(|v| {
                !v.as_object()
                    .is_some_and(|m| m.len() == 1 && m.contains_key(DIRECTIVE_PATCH))
            })
            .map(strip_value)
            .collect());
    }
    match strategy {
        ListStrategy::Replace => Ok(patch.iter().map(strip_value).collect()),
        ListStrategy::MergeSet => {
            for v in patch {
                if !original.contains(v) {
                    original.push(v.clone());
                }
            }
            Ok(original)
        }
        ListStrategy::MergeKey(merge_key) => {
            for item in patch {
                let Value::Object(pm) = item else {
                    // Primitive in a keyed list: treat as a set element.
                    if !original.contains(item) {
                        original.push(item.clone());
                    }
                    continue;
                };
                let key_value = pm.get(merge_key);
                let is_delete = pm.get(DIRECTIVE_PATCH) == Some(&Value::from("delete"));
                let Some(key_value) = key_value else {
                    if is_delete {
                        continue;
                    }
                    return Err(format!(
                        "map: {} does not contain declared merge key: {merge_key}",
                        Value::Object(pm.clone())
                    ));
                };
                let pos = original
                    .iter()
                    .position(|o| o.get(merge_key) == Some(key_value));
                if is_delete {
                    original.retain(|o| o.get(merge_key) != Some(key_value));
                    continue;
                }
                match pos {
                    Some(i) => {
                        let base = match std::mem::take(&mut original[i]) {
                            Value::Object(m) => m,
                            _ => Map::new(),
                        };
                        match merge_map(kind, path, base, pm)? {
                            Some(m) => original[i] = Value::Object(m),
                            None => {
                                original.remove(i);
                            }
                        }
                    }
                    None => {
                        if let Some(m) = merge_map(kind, path, Map::new(), pm)? {
                            original.push(Value::Object(m));
                        }
                    }
                }
            }
            Ok(original)
        }
    }
}

/// Orders `list` like `order`: listed elements in that order, the others (server-only)
/// after them in their original relative order.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let matches = |item: &Value, o: &Value| match strategy {
        ListStrategy::MergeKey(k) => match (item.get(k), o) {
            (Some(iv), Value::Object(om)) => om.get(k) == Some(iv),
            (Some(iv), prim) => iv == prim,
            (None, _) => false,
        },
        _ => item == o,
    };
    let mut rest = std::mem::take(list);
    for o in order {
        if let Some(i) = rest.iter().position(|item| matches(item, o)) {
            list.push(rest.remove(i));
        }
    }
    list.extend(rest);
}

fn strip_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), strip_value(v)))
        .collect()
}

fn strip_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_directives(m)),
        Value::Array(l) => Value::Array(l.iter().map(strip_value).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cases() {
        let pod = json!({"metadata": {"name": "p", "finalizers": ["a"], "labels": {"x": "1"}},
            "spec": {"containers": [
                {"name": "a", "image": "i:1", "ports": [{"containerPort": 80}, {"containerPort": 81}],
                 "env": [{"name": "E", "value": "1"}]},
                {"name": "b", "image": "j:1"}],
                "tolerations": [{"key": "k"}]}});
        let r = strategic_merge("Pod", &pod, &json!({"spec": {"hostname": "h"}})).unwrap();
        assert_eq!(r["spec"]["hostname"], "h");
        let r =
            strategic_merge("Pod", &pod, &json!({"metadata": {"labels": {"x": null}}})).unwrap();
        assert_eq!(r["metadata"]["labels"], json!({}));
        let r = strategic_merge(
            "Pod",
            &pod,
            &json!({"spec": {"containers": [{"name": "b", "image": "j:2"}]}}),
        )
        .unwrap();
        assert_eq!(r["spec"]["containers"][1]["image"], "j:2");
        assert_eq!(r["spec"]["containers"][0]["image"], "i:1");
        let r = strategic_merge(
            "Pod",
            &pod,
            &json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        )
        .unwrap();
        assert_eq!(r["spec"]["containers"].as_array().unwrap().len(), 1);
        let r = strategic_merge(
            "Pod",
            &pod,
            &json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 82}]}]}}),
        )
        .unwrap();
        assert_eq!(
            r["spec"]["containers"][0]["ports"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        let r = strategic_merge("Pod", &pod, &json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "$patch": "delete"}]}]}})).unwrap();
        assert_eq!(
            r["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 81}])
        );
        let r = strategic_merge(
            "Pod",
            &pod,
            &json!({"spec": {"tolerations": [{"key": "z"}]}}),
        )
        .unwrap();
        assert_eq!(r["spec"]["tolerations"], json!([{"key": "z"}]));
        let r = strategic_merge(
            "Pod",
            &pod,
            &json!({"metadata": {"finalizers": ["b", "a"]}}),
        )
        .unwrap();
        assert_eq!(r["metadata"]["finalizers"], json!(["a", "b"]));
        let r = strategic_merge(
            "Pod",
            &pod,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .unwrap();
        assert_eq!(r["metadata"]["finalizers"], json!([]));
        let r = strategic_merge(
            "Pod",
            &pod,
            &json!({"metadata": {"labels": {"$patch": "replace", "y": "2"}}}),
        )
        .unwrap();
        assert_eq!(r["metadata"]["labels"], json!({"y": "2"}));
        let r = strategic_merge(
            "Pod",
            &pod,
            &json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "c", "image": "k"}]}}),
        )
        .unwrap();
        assert_eq!(
            r["spec"]["containers"],
            json!([{"name": "c", "image": "k"}])
        );
        let r = strategic_merge(
            "Pod",
            &pod,
            &json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}),
        )
        .unwrap();
        assert_eq!(r["spec"]["containers"][0]["name"], "b");
        let r = strategic_merge(
            "Pod",
            &pod,
            &json!({"spec": {"$retainKeys": ["containers"], "containers": [{"name": "a"}]}}),
        )
        .unwrap();
        assert!(r["spec"].get("tolerations").is_none());
        let r = strategic_merge(
            "Pod",
            &pod,
            &json!({"spec": {"containers": [{"image": "x"}]}}),
        );
        assert!(r.is_err());
        let r = strategic_merge("Pod", &pod, &json!({"metadata": {"$patch": "bogus"}}));
        assert!(r.is_err());
    }

    #[test]
    fn strategies() {
        let cases: &[(&str, &[&str], ListStrategy)] = &[
            (
                "Pod",
                &["spec", "containers"],
                ListStrategy::MergeKey("name"),
            ),
            (
                "Pod",
                &["spec", "containers", "ports"],
                ListStrategy::MergeKey("containerPort"),
            ),
            (
                "Service",
                &["spec", "ports"],
                ListStrategy::MergeKey("port"),
            ),
            (
                "Deployment",
                &["spec", "template", "spec", "volumes"],
                ListStrategy::MergeKey("name"),
            ),
            ("Pod", &["spec", "tolerations"], ListStrategy::Replace),
            ("Pod", &["metadata", "finalizers"], ListStrategy::MergeSet),
            ("Namespace", &["spec", "finalizers"], ListStrategy::Replace),
            (
                "Pod",
                &["metadata", "ownerReferences"],
                ListStrategy::MergeKey("uid"),
            ),
            (
                "Pod",
                &["status", "conditions"],
                ListStrategy::MergeKey("type"),
            ),
        ];
        for (kind, path, want) in cases {
            assert_eq!(list_strategy(kind, path), *want, "{kind} {path:?}");
        }
    }
}

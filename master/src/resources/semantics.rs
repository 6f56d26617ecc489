//! Kind-specific semantics the HTTP layer calls: defaulting and validation on create and
//! update, generation bumps, unknown-field detection, patches (JSON, merge, strategic merge,
//! server-side apply) and Tables. The work is done in the sibling modules `defaults`,
//! `validation`, `strategic`, `apply`, `table` and `typed`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::validation::{self, Errors};
use super::{
    FieldError, PatchError, PatchType, ResourceInfo, apply, defaults, strategic, table, typed,
    workloads,
};

/// Defaulting + validation for a new object (body already parsed; apiVersion/kind checked;
/// server-owned metadata — uid, resourceVersion, creationTimestamp, generation, managedFields
/// — is set by the caller, don't touch it). Errors list every problem, as the apiserver does.
pub fn prepare_create(info: &ResourceInfo, obj: &mut Value) -> Result<(), Vec<FieldError>> {
    defaults::apply(info.kind, obj);
    let mut errs = Errors::default();
    validate(info, obj, &mut errs);
    finish(errs)
}

/// Same for an update of `old` into `new`, plus immutability rules.
pub fn prepare_update(
    info: &ResourceInfo,
    old: &Value,
    new: &mut Value,
) -> Result<(), Vec<FieldError>> {
    if info.kind == "Service" {
        keep_allocated(old, new);
    }
    defaults::apply(info.kind, new);
    let mut errs = Errors::default();
    validate(info, new, &mut errs);
    immutable(info, old, new, &mut errs);
    finish(errs)
}

/// Whether a change must bump metadata.generation (spec changed: everything but metadata
/// and status).
pub fn spec_changed(_info: &ResourceInfo, old: &Value, new: &Value) -> bool {
    fn rest(v: &Value) -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
        m
    }
    rest(old) != rest(new)
}

/// Unknown fields for fieldValidation=Strict/Warn: the fields a round trip through the
/// k8s-openapi type drops, as `.spec.foo` paths with message `unknown field "spec.foo"`.
pub fn unknown_fields(info: &ResourceInfo, obj: &Value) -> Vec<FieldError> {
    typed::unknown(info, obj)
}

/// Applies a PATCH body to `original` (the stored object) and returns the patched object.
/// Strategic merge uses Kubernetes' patchMergeKey/patchStrategy for the served types; apply
/// (server-side) merges the applied configuration, records `field_manager`'s ownership in
/// `metadata.managedFields` and fails with [`PatchError::Conflict`] on fields another manager
/// owns with a different value, unless `force`.
pub fn apply_patch(
    info: &ResourceInfo,
    original: &Value,
    patch_type: PatchType,
    body: &[u8],
    field_manager: &str,
    force: bool,
) -> Result<Value, PatchError> {
    match patch_type {
        PatchType::Json => {
            let ops: json_patch::Patch =
                serde_json::from_slice(body).map_err(|e| PatchError::Invalid(e.to_string()))?;
            let mut doc = original.clone();
            json_patch::patch(&mut doc, &ops).map_err(|e| PatchError::Failed(e.to_string()))?;
            Ok(doc)
        }
        PatchType::Merge => {
            let patch: Value =
                serde_json::from_slice(body).map_err(|e| PatchError::Invalid(e.to_string()))?;
            if !patch.is_object() {
                return Err(PatchError::Invalid(
                    "a merge patch must be a JSON object".into(),
                ));
            }
            let mut doc = original.clone();
            json_patch::merge(&mut doc, &patch);
            Ok(doc)
        }
        PatchType::StrategicMerge => {
            let patch: Value =
                serde_json::from_slice(body).map_err(|e| PatchError::Invalid(e.to_string()))?;
            strategic::strategic_merge(info.kind, original, &patch).map_err(PatchError::Invalid)
        }
        PatchType::Apply => apply::apply(info, original, body, field_manager, force),
    }
}

/// Records an update (create — with `old` = `{}` —, PUT, or JSON/merge/strategic PATCH) by
/// `field_manager` in `new`'s `metadata.managedFields` (operation Update, FieldsV1): the
/// manager takes the fields it set or changed; other managers lose them. Server-side apply
/// records its own ownership in [`apply_patch`]. Call after `prepare_create`/`prepare_update`.
pub fn track_update(info: &ResourceInfo, old: &Value, new: &mut Value, field_manager: &str) {
    apply::track_update(info, old, new, field_manager);
}

/// A meta.k8s.io/v1 Table of `items` with kubectl's columns for the kind; each row's
/// `object` is the item's PartialObjectMetadata. `now` is the time Age is computed against.
pub fn table(info: &ResourceInfo, items: &[Value], now: DateTime<Utc>) -> Value {
    table::build(info.kind, items, now)
}

fn finish(errs: Errors) -> Result<(), Vec<FieldError>> {
    if errs.0.is_empty() {
        Ok(())
    } else {
        Err(errs.0)
    }
}

fn validate(info: &ResourceInfo, obj: &Value, errs: &mut Errors) {
    if let Some(Err(e)) = typed::round_trip(info, obj) {
        errs.push("FieldValueTypeInvalid", "", e);
        return;
    }
    validation::metadata(info.kind, info.namespaced, obj, errs);
    match info.kind {
        "Pod" => validation::pod_spec(obj.get("spec"), "spec", errs),
        "Deployment" | "ReplicaSet" => validation::workload(info.kind, obj, errs),
        "Service" => validation::service(obj, errs),
        "Job" | "CronJob" | "DaemonSet" => workloads::validate(info.kind, obj, errs),
        "HorizontalPodAutoscaler" => super::autoscaling::validate(obj, errs),
        "PodDisruptionBudget" => super::policy::validate(obj, errs),
        "Secret" => {
            if let Some(data) = obj.get("data").and_then(Value::as_object) {
                for k in data.keys() {
                    config_key(k, "data", errs);
                }
            }
        }
        "ConfigMap" => {
            for field in ["data", "binaryData"] {
                if let Some(data) = obj.get(field).and_then(Value::as_object) {
                    for k in data.keys() {
                        config_key(k, field, errs);
                    }
                }
            }
        }
        _ => {}
    }
}

fn config_key(k: &str, field: &str, errs: &mut Errors) {
    let ok = !k.is_empty()
        && k.len() <= 253
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && k != "."
        && k != ".."
        && !k.starts_with("..");
    if !ok {
        errs.invalid(
            &format!("{field}[{k}]"),
            &Value::from(k),
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        );
    }
}

/// On a Service update that leaves them out, the allocated clusterIP(s) and nodePorts stay.
fn keep_allocated(old: &Value, new: &mut Value) {
    let Some(old_spec) = old.get("spec") else {
        return;
    };
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let unset = |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v.as_str() == Some(""));
    if unset(spec.get("clusterIP")) {
        for k in ["clusterIP", "clusterIPs"] {
            if let Some(v) = old_spec.get(k) {
                spec.insert(k.into(), v.clone());
            }
        }
    }
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty != "NodePort" && ty != "LoadBalancer" {
        // Type-dependent fields left over from the old type are dropped (dropTypeDependentFields).
        for k in ["externalTrafficPolicy", "healthCheckNodePort"] {
            if spec.get(k).is_some() && spec.get(k) == old_spec.get(k) {
                spec.remove(k);
            }
        }
        if spec.get("allocateLoadBalancerNodePorts")
            == old_spec.get("allocateLoadBalancerNodePorts")
        {
            spec.remove("allocateLoadBalancerNodePorts");
        }
        return;
    }
    {
        let old_ports = old_spec
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                if p.get("nodePort").is_some_and(|n| !n.is_null()) {
                    continue;
                }
                let same = old_ports.iter().find(|o| {
                    o.get("port") == p.get("port")
                        && o.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                            == p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                });
                if let Some(np) = same.and_then(|o| o.get("nodePort")) {
                    p.insert("nodePort".into(), np.clone());
                }
            }
        }
    }
}

const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn immutable(info: &ResourceInfo, old: &Value, new: &Value, errs: &mut Errors) {
    for field in ["name", "namespace", "uid"] {
        let ptr = format!("/metadata/{field}");
        let (o, n) = (old.pointer(&ptr), new.pointer(&ptr));
        if o.is_some() && n.is_some() && o != n {
            errs.invalid(
                &format!("metadata.{field}"),
                n.unwrap_or(&Value::Null),
                "field is immutable",
            );
        }
    }
    match info.kind {
        "Deployment" | "ReplicaSet" => {
            let (o, n) = (old.pointer("/spec/selector"), new.pointer("/spec/selector"));
            if o.is_some() && o != n {
                errs.invalid(
                    "spec.selector",
                    n.unwrap_or(&Value::Null),
                    "field is immutable",
                );
            }
        }
        "Service" => {
            let o = old.pointer("/spec/clusterIP").and_then(Value::as_str);
            let n = new.pointer("/spec/clusterIP").and_then(Value::as_str);
            if o.is_some_and(|o| !o.is_empty()) && o != n {
                errs.invalid(
                    "spec.clusterIP",
                    &Value::from(n.unwrap_or("")),
                    "field is immutable",
                );
            }
        }
        "Pod" => pod_update(old, new, errs),
        "Job" | "CronJob" | "DaemonSet" => workloads::immutable(info.kind, old, new, errs),
        "Secret" | "ConfigMap" if old.get("immutable") == Some(&Value::Bool(true)) => {
            for field in ["data", "binaryData", "stringData"] {
                if old.get(field) != new.get(field) {
                    errs.forbidden(field, "field is immutable when `immutable` is set");
                }
            }
            if new.get("immutable") != Some(&Value::Bool(true)) {
                errs.forbidden("immutable", "field is immutable when `immutable` is set");
            }
        }
        _ => {}
    }
}

fn pod_update(old: &Value, new: &Value, errs: &mut Errors) {
    let (Some(os), Some(ns)) = (old.get("spec"), new.get("spec")) else {
        return;
    };
    // Tolerations may only be added.
    let tol = |s: &Value| {
        s.get("tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (old_tol, new_tol) = (tol(os), tol(ns));
    let mut ok = old_tol.iter().all(|t| new_tol.contains(t));
    // activeDeadlineSeconds may be set, or lowered, never removed or raised.
    let (oa, na) = (
        os.get("activeDeadlineSeconds").and_then(Value::as_i64),
        ns.get("activeDeadlineSeconds").and_then(Value::as_i64),
    );
    if let Some(oa) = oa {
        if na.is_none_or(|na| na > oa) {
            ok = false;
        }
    }
    let mask = |s: &Value| {
        let mut s = s.clone();
        if let Some(m) = s.as_object_mut() {
            m.remove("tolerations");
            m.remove("activeDeadlineSeconds");
            for key in ["containers", "initContainers"] {
                if let Some(list) = m.get_mut(key).and_then(Value::as_array_mut) {
                    for c in list.iter_mut().filter_map(Value::as_object_mut) {
                        c.remove("image");
                    }
                }
            }
        }
        s
    };
    if !ok || mask(os) != mask(ns) {
        errs.forbidden("spec", POD_UPDATE_FORBIDDEN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    fn errors(group: &str, plural: &str, mut obj: Value) -> Vec<(String, String)> {
        let info = find(group, plural).unwrap();
        match prepare_create(info, &mut obj) {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| (e.field, e.message)).collect(),
        }
    }

    #[test]
    fn create_validation() {
        let pod = |name: &str, containers: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": containers}});
        type Case = (
            &'static str,
            &'static str,
            &'static str,
            Value,
            Vec<(&'static str, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            (
                "ok pod",
                "",
                "pods",
                pod("p", json!([{"name": "c", "image": "i"}])),
                vec![],
            ),
            (
                "bad name",
                "",
                "pods",
                pod("Foo_Bar", json!([{"name": "c", "image": "i"}])),
                vec![(
                    "metadata.name",
                    "Invalid value: \"Foo_Bar\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                )],
            ),
            (
                "no containers",
                "",
                "pods",
                pod("p", json!([])),
                vec![("spec.containers", "Required value")],
            ),
            (
                "every problem",
                "",
                "pods",
                pod(
                    "p",
                    json!([{"name": "c"}, {"name": "c", "image": "i", "ports": [{"containerPort": 0}]}]),
                ),
                vec![
                    ("spec.containers[0].image", "Required value"),
                    ("spec.containers[1].name", "Duplicate value: \"c\""),
                    (
                        "spec.containers[1].ports[0].containerPort",
                        "Invalid value: 0: must be between 1 and 65535, inclusive",
                    ),
                ],
            ),
            (
                "generateName",
                "",
                "pods",
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}),
                vec![],
            ),
            (
                "no name",
                "",
                "configmaps",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
                vec![(
                    "metadata.name",
                    "Required value: name or generateName is required",
                )],
            ),
            (
                "bad label",
                "",
                "configmaps",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a b": "x y"}}}),
                vec![
                    (
                        "metadata.labels",
                        "Invalid value: \"a b\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                    ),
                    (
                        "metadata.labels[a b]",
                        "Invalid value: \"x y\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                    ),
                ],
            ),
            (
                "service name is a DNS-1035 label",
                "",
                "services",
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1web"},
                "spec": {"ports": [{"port": 80}]}}),
                vec![(
                    "metadata.name",
                    "Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
                )],
            ),
            (
                "service without ports",
                "",
                "services",
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {}}),
                vec![("spec.ports", "Required value")],
            ),
            (
                "service port range",
                "",
                "services",
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                "spec": {"ports": [{"port": 70000}]}}),
                vec![
                    (
                        "spec.ports[0].port",
                        "Invalid value: 70000: must be between 1 and 65535, inclusive",
                    ),
                    (
                        "spec.ports[0].targetPort",
                        "Invalid value: 70000: must be between 1 and 65535, inclusive",
                    ),
                ],
            ),
            (
                "selector mismatch",
                "apps",
                "deployments",
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
                vec![(
                    "spec.template.metadata.labels",
                    "Invalid value: {\"app\":\"b\"}: `selector` does not match template `labels`",
                )],
            ),
            (
                "deployment required",
                "apps",
                "deployments",
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {}}),
                vec![
                    ("spec.selector", "Required value"),
                    ("spec.template.spec.containers", "Required value"),
                ],
            ),
            (
                "namespace name is a label",
                "",
                "namespaces",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}}),
                vec![(
                    "metadata.name",
                    "Invalid value: \"a.b\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                )],
            ),
        ];
        for (name, group, plural, obj, want) in cases {
            let got = errors(group, plural, obj);
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(f, m)| (f.to_string(), m.to_string()))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn type_errors() {
        let info = find("apps", "deployments").unwrap();
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": "three"}});
        let errs = prepare_create(info, &mut d).unwrap_err();
        assert_eq!(errs[0].reason, "FieldValueTypeInvalid");
    }

    #[test]
    fn updates() {
        let info = find("", "pods").unwrap();
        let mut old = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "i:1"}], "tolerations": [{"key": "a"}]}});
        prepare_create(info, &mut old).unwrap();
        let mut image = old.clone();
        image["spec"]["containers"][0]["image"] = json!("i:2");
        image["spec"]["tolerations"] = json!([{"key": "a"}, {"key": "b"}]);
        image["spec"]["activeDeadlineSeconds"] = json!(30);
        prepare_update(info, &old, &mut image).unwrap();
        assert!(spec_changed(info, &old, &image));
        let mut status_only = old.clone();
        status_only["status"]["phase"] = json!("Running");
        status_only["metadata"]["labels"] = json!({"a": "b"});
        assert!(!spec_changed(info, &old, &status_only));
        for (name, path, value) in [
            ("restartPolicy", "/spec/restartPolicy", json!("Never")),
            ("tolerations removed", "/spec/tolerations", json!([])),
            (
                "new container",
                "/spec/containers/1",
                json!({"name": "d", "image": "x"}),
            ),
        ] {
            let mut new = old.clone();
            if path.ends_with("/1") {
                new["spec"]["containers"]
                    .as_array_mut()
                    .unwrap()
                    .push(value);
            } else {
                *new.pointer_mut(path).unwrap() = value;
            }
            let errs = prepare_update(info, &old, &mut new).unwrap_err();
            assert_eq!(errs[0].field, "spec", "{name}");
            assert!(
                errs[0]
                    .message
                    .starts_with("Forbidden: pod updates may not change fields other than"),
                "{name}"
            );
        }
        let mut renamed = old.clone();
        renamed["metadata"]["name"] = json!("q");
        let errs = prepare_update(info, &old, &mut renamed).unwrap_err();
        assert_eq!(errs[0].field, "metadata.name");
        assert_eq!(errs[0].message, "Invalid value: \"q\": field is immutable");

        let svc = find("", "services").unwrap();
        let old = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"type": "NodePort", "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80, "nodePort": 30080}]}});
        // kubectl replace without clusterIP/nodePort keeps the allocated ones.
        let mut new = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        prepare_update(svc, &old, &mut new).unwrap();
        assert_eq!(new["spec"]["clusterIP"], "10.0.0.1");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("10.0.0.2");
        let errs = prepare_update(svc, &old, &mut new).unwrap_err();
        assert_eq!(errs[0].field, "spec.clusterIP");
    }
}

//! The HorizontalPodAutoscaler: served in `autoscaling/v2` (the storage version) and
//! `autoscaling/v1`, converted both ways as upstream's `pkg/apis/autoscaling/v1/conversion.go`
//! does (v1's `targetCPUUtilizationPercentage` is a v2 Resource cpu Utilization metric; what
//! v1 cannot say travels in the `autoscaling.alpha.kubernetes.io/*` annotations), defaulting,
//! validation and kubectl's table columns.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::defaults::{child, set_default};
use super::table::{Column, int_at, since, str_at};
use super::validation::Errors;

/// v2 spec metrics v1 cannot express, as a JSON list of v1 `MetricSpec`s.
pub const METRIC_SPECS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// v2 status metrics, as a JSON list of v1 `MetricStatus`es.
pub const METRIC_STATUSES_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
/// v2 status conditions, as JSON.
pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
/// v2 `spec.behavior`, as JSON.
pub const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";

const V1: &str = "autoscaling/v1";
const V2: &str = "autoscaling/v2";
const KIND: &str = "HorizontalPodAutoscaler";

/// Converts an HPA object to `api_version` (`autoscaling/v1` or `autoscaling/v2`) in place;
/// objects of other kinds, or already in that version, are left as they are.
pub fn convert(obj: &mut Value, api_version: &str) {
    if obj.get("kind").and_then(Value::as_str) != Some(KIND) {
        return;
    }
    let from = obj.get("apiVersion").and_then(Value::as_str).unwrap_or(V2);
    match (from, api_version) {
        (V2, V1) => *obj = v2_to_v1(obj),
        (V1, V2) => *obj = v1_to_v2(obj),
        _ => {}
    }
}

fn annotations(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    obj.pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
}

fn set_annotation(obj: &mut Value, key: &str, value: &Value) {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if !obj["metadata"]["annotations"].is_object() {
        obj["metadata"]["annotations"] = json!({});
    }
    obj["metadata"]["annotations"][key] = json!(value.to_string());
}

/// Takes the JSON-valued annotation `key` off `obj`; `None` (and the annotation stays) when
/// it is absent or does not parse, as upstream ignores such annotations.
fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let ann = annotations(obj)?;
    let parsed: Value = serde_json::from_str(ann.get(key)?.as_str()?).ok()?;
    ann.remove(key);
    Some(parsed)
}

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["target"]["type"] == "Utilization"
        && m["resource"]["target"]["averageUtilization"].is_i64()
}

/// Puts `value` at `key` when it is set.
fn put(m: &mut Map<String, Value>, key: &str, value: &Value) {
    if !value.is_null() {
        m.insert(key.into(), value.clone());
    }
}

fn object(pairs: &[(&str, &Value)]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        put(&mut m, k, v);
    }
    Value::Object(m)
}

/// A v2 MetricSpec as a v1 (annotation) MetricSpec.
fn spec_to_v1(m: &Value) -> Value {
    let ty = m["type"].as_str().unwrap_or_default();
    let src = match ty {
        "Resource" | "ContainerResource" => {
            let key = if ty == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let r = &m[key];
            (
                key,
                object(&[
                    ("name", &r["name"]),
                    ("container", &r["container"]),
                    (
                        "targetAverageUtilization",
                        &r["target"]["averageUtilization"],
                    ),
                    ("targetAverageValue", &r["target"]["averageValue"]),
                ]),
            )
        }
        "Pods" => {
            let p = &m["pods"];
            (
                "pods",
                object(&[
                    ("metricName", &p["metric"]["name"]),
                    ("selector", &p["metric"]["selector"]),
                    ("targetAverageValue", &p["target"]["averageValue"]),
                ]),
            )
        }
        "Object" => {
            let o = &m["object"];
            (
                "object",
                object(&[
                    ("target", &o["describedObject"]),
                    ("metricName", &o["metric"]["name"]),
                    ("selector", &o["metric"]["selector"]),
                    ("targetValue", &o["target"]["value"]),
                    ("averageValue", &o["target"]["averageValue"]),
                ]),
            )
        }
        "External" => {
            let e = &m["external"];
            (
                "external",
                object(&[
                    ("metricName", &e["metric"]["name"]),
                    ("metricSelector", &e["metric"]["selector"]),
                    ("targetValue", &e["target"]["value"]),
                    ("targetAverageValue", &e["target"]["averageValue"]),
                ]),
            )
        }
        _ => return m.clone(),
    };
    json!({"type": ty, src.0: src.1})
}

/// The v2 MetricTarget of a v1 source's target fields.
fn target(utilization: &Value, value: &Value, average: &Value) -> Value {
    if !utilization.is_null() {
        json!({"type": "Utilization", "averageUtilization": utilization})
    } else if !average.is_null() {
        json!({"type": "AverageValue", "averageValue": average})
    } else {
        json!({"type": "Value", "value": value})
    }
}

fn metric_id(name: &Value, selector: &Value) -> Value {
    object(&[("name", name), ("selector", selector)])
}

/// A v1 (annotation) MetricSpec as a v2 MetricSpec.
fn spec_from_v1(m: &Value) -> Value {
    let ty = m["type"].as_str().unwrap_or_default();
    match ty {
        "Resource" | "ContainerResource" => {
            let key = if ty == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let r = &m[key];
            let mut src = object(&[("name", &r["name"]), ("container", &r["container"])]);
            src["target"] = target(
                &r["targetAverageUtilization"],
                &Value::Null,
                &r["targetAverageValue"],
            );
            json!({"type": ty, key: src})
        }
        "Pods" => {
            let p = &m["pods"];
            json!({"type": ty, "pods": {
                "metric": metric_id(&p["metricName"], &p["selector"]),
                "target": {"type": "AverageValue", "averageValue": p["targetAverageValue"]},
            }})
        }
        "Object" => {
            let o = &m["object"];
            let mut src = object(&[("describedObject", &o["target"])]);
            src["metric"] = metric_id(&o["metricName"], &o["selector"]);
            src["target"] = target(&Value::Null, &o["targetValue"], &o["averageValue"]);
            json!({"type": ty, "object": src})
        }
        "External" => {
            let e = &m["external"];
            json!({"type": ty, "external": {
                "metric": metric_id(&e["metricName"], &e["metricSelector"]),
                "target": target(&Value::Null, &e["targetValue"], &e["targetAverageValue"]),
            }})
        }
        _ => m.clone(),
    }
}

/// A v2 MetricStatus as a v1 (annotation) MetricStatus.
fn status_to_v1(m: &Value) -> Value {
    let ty = m["type"].as_str().unwrap_or_default();
    let (key, src) = match ty {
        "Resource" | "ContainerResource" => {
            let key = if ty == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let r = &m[key];
            (
                key,
                object(&[
                    ("name", &r["name"]),
                    ("container", &r["container"]),
                    (
                        "currentAverageUtilization",
                        &r["current"]["averageUtilization"],
                    ),
                    ("currentAverageValue", &r["current"]["averageValue"]),
                ]),
            )
        }
        "Pods" => {
            let p = &m["pods"];
            (
                "pods",
                object(&[
                    ("metricName", &p["metric"]["name"]),
                    ("selector", &p["metric"]["selector"]),
                    ("currentAverageValue", &p["current"]["averageValue"]),
                ]),
            )
        }
        "Object" => {
            let o = &m["object"];
            (
                "object",
                object(&[
                    ("target", &o["describedObject"]),
                    ("metricName", &o["metric"]["name"]),
                    ("selector", &o["metric"]["selector"]),
                    ("currentValue", &o["current"]["value"]),
                    ("averageValue", &o["current"]["averageValue"]),
                ]),
            )
        }
        "External" => {
            let e = &m["external"];
            (
                "external",
                object(&[
                    ("metricName", &e["metric"]["name"]),
                    ("metricSelector", &e["metric"]["selector"]),
                    ("currentValue", &e["current"]["value"]),
                    ("currentAverageValue", &e["current"]["averageValue"]),
                ]),
            )
        }
        _ => return m.clone(),
    };
    json!({"type": ty, key: src})
}

/// A v1 (annotation) MetricStatus as a v2 MetricStatus.
fn status_from_v1(m: &Value) -> Value {
    let ty = m["type"].as_str().unwrap_or_default();
    match ty {
        "Resource" | "ContainerResource" => {
            let key = if ty == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let r = &m[key];
            let mut src = object(&[("name", &r["name"]), ("container", &r["container"])]);
            src["current"] = object(&[
                ("averageUtilization", &r["currentAverageUtilization"]),
                ("averageValue", &r["currentAverageValue"]),
            ]);
            json!({"type": ty, key: src})
        }
        "Pods" => {
            let p = &m["pods"];
            json!({"type": ty, "pods": {
                "metric": metric_id(&p["metricName"], &p["selector"]),
                "current": object(&[("averageValue", &p["currentAverageValue"])]),
            }})
        }
        "Object" => {
            let o = &m["object"];
            let mut src = object(&[("describedObject", &o["target"])]);
            src["metric"] = metric_id(&o["metricName"], &o["selector"]);
            src["current"] = object(&[
                ("value", &o["currentValue"]),
                ("averageValue", &o["averageValue"]),
            ]);
            json!({"type": ty, "object": src})
        }
        "External" => {
            let e = &m["external"];
            json!({"type": ty, "external": {
                "metric": metric_id(&e["metricName"], &e["metricSelector"]),
                "current": object(&[
                    ("value", &e["currentValue"]),
                    ("averageValue", &e["currentAverageValue"]),
                ]),
            }})
        }
        _ => m.clone(),
    }
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Upstream's `Convert_autoscaling_HorizontalPodAutoscaler_To_v1_HorizontalPodAutoscaler`.
fn v2_to_v1(obj: &Value) -> Value {
    let mut out = json!({"apiVersion": V1, "kind": KIND});
    out["metadata"] = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let spec = &obj["spec"];
    let mut s = object(&[
        ("scaleTargetRef", &spec["scaleTargetRef"]),
        ("minReplicas", &spec["minReplicas"]),
        ("maxReplicas", &spec["maxReplicas"]),
    ]);
    let mut other = Vec::new();
    for m in list(&spec["metrics"]) {
        if is_cpu_utilization(m) {
            s["targetCPUUtilizationPercentage"] =
                m["resource"]["target"]["averageUtilization"].clone();
        } else {
            other.push(spec_to_v1(m));
        }
    }
    out["spec"] = s;
    if !other.is_empty() {
        set_annotation(&mut out, METRIC_SPECS_ANNOTATION, &Value::Array(other));
    }
    if !spec["behavior"].is_null() {
        set_annotation(&mut out, BEHAVIOR_ANNOTATION, &spec["behavior"]);
    }
    if let Some(status) = obj.get("status").filter(|s| s.is_object()) {
        let mut st = object(&[
            ("observedGeneration", &status["observedGeneration"]),
            ("lastScaleTime", &status["lastScaleTime"]),
            ("currentReplicas", &status["currentReplicas"]),
            ("desiredReplicas", &status["desiredReplicas"]),
        ]);
        if st.get("currentReplicas").is_none() {
            st["currentReplicas"] = json!(0);
        }
        if st.get("desiredReplicas").is_none() {
            st["desiredReplicas"] = json!(0);
        }
        let current = list(&status["currentMetrics"]);
        for m in current {
            if m["type"] == "Resource"
                && m["resource"]["name"] == "cpu"
                && !m["resource"]["current"]["averageUtilization"].is_null()
            {
                st["currentCPUUtilizationPercentage"] =
                    m["resource"]["current"]["averageUtilization"].clone();
            }
        }
        if !current.is_empty() {
            let v1: Vec<Value> = current.iter().map(status_to_v1).collect();
            set_annotation(&mut out, METRIC_STATUSES_ANNOTATION, &Value::Array(v1));
        }
        if !list(&status["conditions"]).is_empty() {
            set_annotation(&mut out, CONDITIONS_ANNOTATION, &status["conditions"]);
        }
        out["status"] = st;
    }
    out
}

/// Upstream's `Convert_v1_HorizontalPodAutoscaler_To_autoscaling_HorizontalPodAutoscaler`.
fn v1_to_v2(obj: &Value) -> Value {
    let mut src = obj.clone();
    let spec = src.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut s = object(&[
        ("scaleTargetRef", &spec["scaleTargetRef"]),
        ("minReplicas", &spec["minReplicas"]),
        ("maxReplicas", &spec["maxReplicas"]),
    ]);
    let mut metrics: Vec<Value> = take_annotation(&mut src, METRIC_SPECS_ANNOTATION)
        .map(|v| list(&v).iter().map(spec_from_v1).collect())
        .unwrap_or_default();
    if let Some(cpu) = spec
        .get("targetCPUUtilizationPercentage")
        .filter(|v| !v.is_null())
    {
        metrics.push(cpu_metric(cpu.clone()));
    }
    if metrics.is_empty() {
        // v1's implicit target, made explicit as upstream's conversion does
        metrics.push(cpu_metric(json!(80)));
    }
    s["metrics"] = Value::Array(metrics);
    if let Some(b) = take_annotation(&mut src, BEHAVIOR_ANNOTATION) {
        s["behavior"] = b;
    }
    let mut out = json!({"apiVersion": V2, "kind": KIND, "spec": s});
    let current = take_annotation(&mut src, METRIC_STATUSES_ANNOTATION);
    let conditions = take_annotation(&mut src, CONDITIONS_ANNOTATION);
    if let Some(status) = src.get("status").filter(|s| s.is_object()) {
        let mut st = object(&[
            ("observedGeneration", &status["observedGeneration"]),
            ("lastScaleTime", &status["lastScaleTime"]),
            ("currentReplicas", &status["currentReplicas"]),
            ("desiredReplicas", &status["desiredReplicas"]),
        ]);
        match &current {
            // the annotation holds every current metric
            Some(c) => {
                st["currentMetrics"] = json!(list(c).iter().map(status_from_v1).collect::<Vec<_>>())
            }
            None => {
                if let Some(u) = status
                    .get("currentCPUUtilizationPercentage")
                    .filter(|v| !v.is_null())
                {
                    st["currentMetrics"] = json!([{"type": "Resource", "resource": {
                        "name": "cpu", "current": {"averageUtilization": u}}}]);
                }
            }
        }
        if let Some(c) = &conditions {
            st["conditions"] = c.clone();
        }
        out["status"] = st;
    }
    if let Some(ann) = annotations(&mut src)
        && ann.is_empty()
        && let Some(m) = src["metadata"].as_object_mut()
    {
        m.remove("annotations");
    }
    out["metadata"] = src.get("metadata").cloned().unwrap_or_else(|| json!({}));
    out
}

fn cpu_metric(utilization: Value) -> Value {
    json!({"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": utilization}}})
}

/// Upstream's `SetDefaults_HorizontalPodAutoscaler` (v2) on the stored form: minReplicas 1,
/// a cpu 80 % metric when there are none; a `behavior` that is set gets its rules filled in,
/// an absent one stays absent (the controller uses the defaults).
pub(crate) fn defaults(root: &mut Map<String, Value>) {
    let Some(spec) = child(root, "spec") else {
        return;
    };
    set_default(spec, "minReplicas", json!(1));
    if spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        spec.insert("metrics".into(), json!([cpu_metric(json!(80))]));
    }
    if !matches!(spec.get("behavior"), Some(Value::Object(_))) {
        spec.remove("behavior");
        return;
    }
    if let Some(b) = child(spec, "behavior") {
        for (dir, window, policies) in [
            (
                "scaleUp",
                0,
                json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
                       {"type": "Percent", "value": 100, "periodSeconds": 15}]),
            ),
            (
                "scaleDown",
                300,
                json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
            ),
        ] {
            if let Some(rules) = child(b, dir) {
                set_default(rules, "stabilizationWindowSeconds", json!(window));
                set_default(rules, "selectPolicy", json!("Max"));
                set_default(rules, "policies", policies);
            }
        }
    }
}

fn positive_quantity(v: &Value) -> bool {
    v.as_str()
        .and_then(crate::controllers::scheduler::core::milli_value)
        .is_some_and(|m| m > 0)
        || v.as_i64().is_some_and(|n| n > 0)
        || v.as_f64().is_some_and(|n| n > 0.0)
}

fn metric_target(t: &Value, path: &str, errs: &mut Errors) {
    let ty = t["type"].as_str().unwrap_or_default();
    match ty {
        "" => errs.push(
            "FieldValueRequired",
            &format!("{path}.type"),
            "Required value: must specify a metric target type".into(),
        ),
        "Utilization" | "Value" | "AverageValue" => {}
        _ => errs.invalid(
            &format!("{path}.type"),
            &t["type"],
            "must be either Utilization, Value, or AverageValue",
        ),
    }
    if let Some(u) = t.get("averageUtilization").filter(|v| !v.is_null())
        && u.as_i64().is_none_or(|n| n <= 0)
    {
        errs.invalid(
            &format!("{path}.averageUtilization"),
            u,
            "must be greater than 0",
        );
    }
    for f in ["value", "averageValue"] {
        if let Some(v) = t.get(f).filter(|v| !v.is_null())
            && !positive_quantity(v)
        {
            errs.invalid(&format!("{path}.{f}"), v, "must be positive");
        }
    }
    let need = match ty {
        "Utilization" => Some("averageUtilization"),
        "Value" => Some("value"),
        "AverageValue" => Some("averageValue"),
        _ => None,
    };
    if let Some(f) = need
        && t.get(f).is_none_or(Value::is_null)
    {
        errs.push(
            "FieldValueRequired",
            &format!("{path}.{f}"),
            format!("Required value: must set {f} when type is {ty}"),
        );
    }
}

fn metric(m: &Value, path: &str, errs: &mut Errors) {
    const TYPES: &[&str] = &[
        "ContainerResource",
        "External",
        "Object",
        "Pods",
        "Resource",
    ];
    let ty = m["type"].as_str().unwrap_or_default();
    if ty.is_empty() {
        errs.push(
            "FieldValueRequired",
            &format!("{path}.type"),
            "Required value: must specify a metric source type".into(),
        );
        return;
    }
    if !TYPES.contains(&ty) {
        errs.not_supported(&format!("{path}.type"), &m["type"], TYPES);
        return;
    }
    let key = match ty {
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        "Pods" => "pods",
        "Object" => "object",
        _ => "external",
    };
    let src = &m[key];
    let p = format!("{path}.{key}");
    if !src.is_object() {
        errs.push(
            "FieldValueRequired",
            &p,
            "Required value: must populate information for the given metric source".into(),
        );
        return;
    }
    match ty {
        "Resource" | "ContainerResource" => {
            if src["name"].as_str().is_none_or(str::is_empty) {
                errs.push(
                    "FieldValueRequired",
                    &format!("{p}.name"),
                    "Required value: must specify a resource name".into(),
                );
            }
            if ty == "ContainerResource" && src["container"].as_str().is_none_or(str::is_empty) {
                errs.push(
                    "FieldValueRequired",
                    &format!("{p}.container"),
                    "Required value: must specify a container".into(),
                );
            }
            let t = &src["target"];
            if t["type"] == "Value" {
                errs.not_supported(
                    &format!("{p}.target.type"),
                    &t["type"],
                    &["AverageValue", "Utilization"],
                );
                return;
            }
            metric_target(t, &format!("{p}.target"), errs);
        }
        _ => {
            if src["metric"]["name"].as_str().is_none_or(str::is_empty) {
                errs.push(
                    "FieldValueRequired",
                    &format!("{p}.metric.name"),
                    "Required value: must specify a metric name".into(),
                );
            }
            if ty == "Object" {
                let d = &src["describedObject"];
                for f in ["kind", "name"] {
                    if d[f].as_str().is_none_or(str::is_empty) {
                        errs.required(&format!("{p}.describedObject.{f}"));
                    }
                }
            }
            metric_target(&src["target"], &format!("{p}.target"), errs);
        }
    }
}

fn rules(r: &Value, path: &str, errs: &mut Errors) {
    if r.is_null() {
        return;
    }
    if let Some(w) = r.get("stabilizationWindowSeconds").filter(|v| !v.is_null())
        && w.as_i64().is_none_or(|n| !(0..=3600).contains(&n))
    {
        errs.invalid(
            &format!("{path}.stabilizationWindowSeconds"),
            w,
            "must be less than or equal to 3600",
        );
    }
    if let Some(s) = r.get("selectPolicy").filter(|v| !v.is_null())
        && !matches!(s.as_str(), Some("Max" | "Min" | "Disabled"))
    {
        errs.not_supported(
            &format!("{path}.selectPolicy"),
            s,
            &["Disabled", "Max", "Min"],
        );
    }
    let policies = list(&r["policies"]);
    if r.get("policies").is_some_and(|p| !p.is_null()) && policies.is_empty() {
        errs.push(
            "FieldValueRequired",
            &format!("{path}.policies"),
            "Required value: must specify at least one Policy".into(),
        );
    }
    for (i, p) in policies.iter().enumerate() {
        let pp = format!("{path}.policies[{i}]");
        if !matches!(p["type"].as_str(), Some("Pods" | "Percent")) {
            errs.not_supported(&format!("{pp}.type"), &p["type"], &["Percent", "Pods"]);
        }
        if p["value"].as_i64().is_none_or(|n| n <= 0) {
            errs.invalid(
                &format!("{pp}.value"),
                &p["value"],
                "must be greater than zero",
            );
        }
        if p["periodSeconds"]
            .as_i64()
            .is_none_or(|n| !(1..=1800).contains(&n))
        {
            errs.invalid(
                &format!("{pp}.periodSeconds"),
                &p["periodSeconds"],
                "must be greater than zero and less than or equal to 1800",
            );
        }
    }
}

/// Upstream's `ValidateHorizontalPodAutoscaler` on the stored (v2) form.
pub(crate) fn validate(obj: &Value, errs: &mut Errors) {
    let spec = &obj["spec"];
    let r = &spec["scaleTargetRef"];
    for f in ["kind", "name"] {
        match r[f].as_str() {
            None | Some("") => errs.required(&format!("spec.scaleTargetRef.{f}")),
            Some(v) if v.contains('/') || v.contains('%') || v == "." || v == ".." => {
                errs.invalid(
                    &format!("spec.scaleTargetRef.{f}"),
                    &r[f],
                    "may not contain '/' or '%' and may not be '.' or '..'",
                );
            }
            Some(_) => {}
        }
    }
    let min = spec["minReplicas"].as_i64();
    if let Some(m) = min
        && m < 1
    {
        errs.invalid(
            "spec.minReplicas",
            &spec["minReplicas"],
            "must be greater than or equal to 1",
        );
    }
    match spec["maxReplicas"].as_i64() {
        None => errs.required("spec.maxReplicas"),
        Some(max) if max < 1 => errs.invalid(
            "spec.maxReplicas",
            &spec["maxReplicas"],
            "must be greater than 0",
        ),
        Some(max) if min.is_some_and(|m| max < m) => errs.invalid(
            "spec.maxReplicas",
            &spec["maxReplicas"],
            "must be greater than or equal to `minReplicas`",
        ),
        Some(_) => {}
    }
    for (i, m) in list(&spec["metrics"]).iter().enumerate() {
        metric(m, &format!("spec.metrics[{i}]"), errs);
    }
    rules(&spec["behavior"]["scaleUp"], "spec.behavior.scaleUp", errs);
    rules(
        &spec["behavior"]["scaleDown"],
        "spec.behavior.scaleDown",
        errs,
    );
}

/// kubectl's HPA columns.
pub(crate) fn columns() -> Vec<Column> {
    let s = |n: &'static str| (n, "string", "", 0u8);
    vec![
        ("Name", "string", "name", 0),
        s("Reference"),
        s("Targets"),
        s("MinPods"),
        ("MaxPods", "integer", "", 0),
        ("Replicas", "integer", "", 0),
        s("Age"),
    ]
}

fn qty(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<unknown>".into(),
        other => other.to_string(),
    }
}

/// The Targets cell, as kubectl's `formatHPAMetrics` (1.30+: each prefixed with the metric's
/// resource name): at most two, then `+ N more...`.
pub(crate) fn targets(o: &Value) -> String {
    let specs = list(&o["spec"]["metrics"]);
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = list(&o["status"]["currentMetrics"]);
    let mut out = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let st = statuses.get(i).unwrap_or(&Value::Null);
        let ty = spec["type"].as_str().unwrap_or_default();
        let key = match ty {
            "Resource" => "resource",
            "ContainerResource" => "containerResource",
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            _ => {
                out.push("<unknown type>".to_string());
                continue;
            }
        };
        let t = &spec[key]["target"];
        let cur = &st[key]["current"];
        let s = match ty {
            "Resource" | "ContainerResource" => {
                let name = spec[key]["name"].as_str().unwrap_or_default();
                if !t["averageValue"].is_null() {
                    let c = if st[key].is_object() {
                        qty(&cur["averageValue"])
                    } else {
                        "<unknown>".into()
                    };
                    format!("{name}: {c}/{}", qty(&t["averageValue"]))
                } else {
                    let c = cur["averageUtilization"]
                        .as_i64()
                        .map_or("<unknown>".into(), |u| format!("{u}%"));
                    let tg = t["averageUtilization"]
                        .as_i64()
                        .map_or("<auto>".into(), |u| format!("{u}%"));
                    format!("{name}: {c}/{tg}")
                }
            }
            "Pods" => {
                let c = if st[key].is_object() {
                    qty(&cur["averageValue"])
                } else {
                    "<unknown>".into()
                };
                format!("{c}/{}", qty(&t["averageValue"]))
            }
            _ => {
                if !t["averageValue"].is_null() {
                    let c = if cur["averageValue"].is_null() {
                        "<unknown>".into()
                    } else {
                        qty(&cur["averageValue"])
                    };
                    format!("{c}/{} (avg)", qty(&t["averageValue"]))
                } else {
                    let c = if st[key].is_object() {
                        qty(&cur["value"])
                    } else {
                        "<unknown>".into()
                    };
                    format!("{c}/{}", qty(&t["value"]))
                }
            }
        };
        out.push(s);
    }
    let n = out.len();
    if n > 2 {
        format!("{} + {} more...", out[..2].join(", "), n - 2)
    } else {
        out.join(", ")
    }
}

/// The cells after Name, for the stored (v2) form.
pub(crate) fn cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        str_at(o, "/spec/scaleTargetRef/kind"),
        str_at(o, "/spec/scaleTargetRef/name")
    );
    let min = o
        .pointer("/spec/minReplicas")
        .and_then(Value::as_i64)
        .map_or("<unset>".into(), |m| m.to_string());
    vec![
        json!(reference),
        json!(targets(o)),
        json!(min),
        json!(int_at(o, "/spec/maxReplicas")),
        json!(int_at(o, "/status/currentReplicas")),
        json!(since(o.pointer("/metadata/creationTimestamp"), now)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(metrics: Value, status: Value) -> Value {
        json!({"apiVersion": V2, "kind": KIND,
            "metadata": {"name": "h", "namespace": "default", "annotations": {"keep": "me"}},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 5, "metrics": metrics},
            "status": status})
    }

    #[test]
    fn v2_v1_round_trips_keep_everything() {
        let cases = vec![
            (
                "cpu only",
                json!([cpu_metric(json!(50))]),
                json!({"currentReplicas": 2, "desiredReplicas": 3,
                       "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 75, "averageValue": "75m"}}}],
                       "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale", "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
            ),
            (
                "memory and pods and external",
                json!([
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                    cpu_metric(json!(60)),
                    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
                    {"type": "External", "external": {"metric": {"name": "queue", "selector": {"matchLabels": {"q": "a"}}}, "target": {"type": "Value", "value": "30"}}},
                    {"type": "Object", "object": {"describedObject": {"kind": "Service", "name": "s", "apiVersion": "v1"}, "metric": {"name": "hits"}, "target": {"type": "AverageValue", "averageValue": "2"}}},
                    {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app", "target": {"type": "Utilization", "averageUtilization": 40}}}
                ]),
                json!({"currentReplicas": 1, "desiredReplicas": 1}),
            ),
        ];
        for (name, metrics, status) in cases {
            let orig = v2(metrics, status);
            let mut o = orig.clone();
            convert(&mut o, V1);
            assert_eq!(o["apiVersion"], V1, "{name}");
            assert!(o["spec"].get("metrics").is_none(), "{name}");
            convert(&mut o, V2);
            // the cpu metric goes last after a v1 round trip, as upstream's conversion puts it
            let mut want = orig.clone();
            if let Some(ms) = want["spec"]["metrics"].as_array_mut() {
                let (cpu, rest): (Vec<Value>, Vec<Value>) =
                    ms.drain(..).partition(is_cpu_utilization);
                ms.extend(rest);
                ms.extend(cpu);
            }
            assert_eq!(o, want, "{name}");
        }
    }

    #[test]
    fn v1_fields_map_to_v2() {
        let mut o = v2(
            json!([cpu_metric(json!(50))]),
            json!({"currentReplicas": 2, "desiredReplicas": 2,
                   "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12}}}]}),
        );
        o["spec"]["behavior"] = json!({"scaleDown": {"stabilizationWindowSeconds": 10}});
        convert(&mut o, V1);
        assert_eq!(o["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(o["status"]["currentCPUUtilizationPercentage"], 12);
        assert_eq!(
            o["metadata"]["annotations"][BEHAVIOR_ANNOTATION],
            r#"{"scaleDown":{"stabilizationWindowSeconds":10}}"#
        );
        // a v1 object without a target gets v1's implicit 80 %
        let mut bare = json!({"apiVersion": V1, "kind": KIND, "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3}});
        convert(&mut bare, V2);
        assert_eq!(bare["spec"]["metrics"], json!([cpu_metric(json!(80))]));
        assert!(bare["metadata"].get("annotations").is_none());
    }

    #[test]
    fn targets_as_kubectl_prints_them() {
        let cases = vec![
            (
                json!([cpu_metric(json!(50))]),
                json!({}),
                "cpu: <unknown>/50%",
            ),
            (
                json!([cpu_metric(json!(50))]),
                json!({"currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12}}}]}),
                "cpu: 12%/50%",
            ),
            (
                json!([{"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}]),
                json!({"currentMetrics": [{"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "20Mi"}}}]}),
                "memory: 20Mi/100Mi",
            ),
            (
                json!([
                    cpu_metric(json!(1)),
                    cpu_metric(json!(2)),
                    cpu_metric(json!(3))
                ]),
                json!({}),
                "cpu: <unknown>/1%, cpu: <unknown>/2% + 1 more...",
            ),
            (json!([]), json!({}), "<none>"),
        ];
        for (metrics, status, want) in cases {
            assert_eq!(targets(&v2(metrics, status)), want);
        }
    }

    #[test]
    fn validation_names_the_field() {
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (
                json!({"scaleTargetRef": {"kind": "Deployment", "name": "w"}, "maxReplicas": 2, "minReplicas": 1}),
                vec![],
            ),
            (
                json!({"scaleTargetRef": {}, "maxReplicas": 2}),
                vec!["spec.scaleTargetRef.kind", "spec.scaleTargetRef.name"],
            ),
            (
                json!({"scaleTargetRef": {"kind": "D", "name": "w"}, "minReplicas": 0, "maxReplicas": 2}),
                vec!["spec.minReplicas"],
            ),
            (
                json!({"scaleTargetRef": {"kind": "D", "name": "w"}, "minReplicas": 3, "maxReplicas": 2}),
                vec!["spec.maxReplicas"],
            ),
            (
                json!({"scaleTargetRef": {"kind": "D", "name": "w"}, "maxReplicas": 2,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 0}}}]}),
                vec!["spec.metrics[0].resource.target.averageUtilization"],
            ),
            (
                json!({"scaleTargetRef": {"kind": "D", "name": "w"}, "maxReplicas": 2,
                    "metrics": [{"type": "Bogus"}, {"type": "Resource"}]}),
                vec!["spec.metrics[0].type", "spec.metrics[1].resource"],
            ),
            (
                json!({"scaleTargetRef": {"kind": "D", "name": "w"}, "maxReplicas": 2,
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 4000, "policies": [{"type": "Pods", "value": 0, "periodSeconds": 15}]}}}),
                vec![
                    "spec.behavior.scaleDown.stabilizationWindowSeconds",
                    "spec.behavior.scaleDown.policies[0].value",
                ],
            ),
        ];
        for (spec, want) in cases {
            let mut errs = Errors::default();
            validate(&json!({"spec": spec}), &mut errs);
            let got: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(got, want, "{spec}");
        }
    }

    #[test]
    fn defaults_leave_behavior_out() {
        let mut o =
            json!({"spec": {"scaleTargetRef": {"kind": "D", "name": "w"}, "maxReplicas": 2}});
        if let Some(root) = o.as_object_mut() {
            defaults(root);
        }
        assert_eq!(o["spec"]["minReplicas"], 1);
        assert_eq!(o["spec"]["metrics"], json!([cpu_metric(json!(80))]));
        assert!(o["spec"].get("behavior").is_none());
        let mut b =
            json!({"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}}}});
        if let Some(root) = b.as_object_mut() {
            defaults(root);
        }
        assert_eq!(
            b["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            30
        );
        assert_eq!(b["spec"]["behavior"]["scaleDown"]["selectPolicy"], "Max");
        assert_eq!(b["spec"]["behavior"]["scaleUp"]["policies"][0]["value"], 4);
    }
}

//! policy/v1 PodDisruptionBudget: validation as the apiserver words it and kubectl's table
//! columns. The status is the disruption controller's (`controllers::disruption`), the
//! eviction subresource that reads it is `api::eviction`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::table::{Column, int_at, since};
use super::validation::{self, Errors};

/// Validates a PodDisruptionBudget's spec (upstream's `ValidatePodDisruptionBudgetSpec`).
pub(crate) fn validate(obj: &Value, errs: &mut Errors) {
    let spec = &obj["spec"];
    if spec.get("minAvailable").is_some_and(|v| !v.is_null())
        && spec.get("maxUnavailable").is_some_and(|v| !v.is_null())
    {
        errs.invalid(
            "spec",
            spec,
            "minAvailable and maxUnavailable cannot be both set",
        );
    }
    for f in ["minAvailable", "maxUnavailable"] {
        if let Some(v) = spec.get(f).filter(|v| !v.is_null()) {
            int_or_percent(v, &format!("spec.{f}"), errs);
        }
    }
    if let Some(ml) = spec.pointer("/selector/matchLabels") {
        validation::labels(Some(ml), "spec.selector.matchLabels", errs);
    }
    if let Some(p) = spec
        .get("unhealthyPodEvictionPolicy")
        .filter(|v| !v.is_null())
    {
        let allowed = ["IfHealthyBudget", "AlwaysAllow"];
        if !p.as_str().is_some_and(|s| allowed.contains(&s)) {
            errs.not_supported("spec.unhealthyPodEvictionPolicy", p, &allowed);
        }
    }
}

/// A non-negative integer, or a percentage of at most 100%.
fn int_or_percent(v: &Value, field: &str, errs: &mut Errors) {
    match v {
        Value::Number(n) if n.as_i64().is_some_and(|i| i < 0) => {
            errs.invalid(field, v, "must be greater than or equal to 0");
        }
        Value::String(s) => {
            let pct = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<u64>().ok());
            match pct {
                None => errs.invalid(
                    field,
                    v,
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                ),
                Some(p) if p > 100 => errs.invalid(field, v, "must not be greater than 100%"),
                Some(_) => {}
            }
        }
        _ => {}
    }
}

/// kubectl's columns for PodDisruptionBudgets.
pub(crate) fn columns() -> Vec<Column> {
    vec![
        ("Name", "string", "name", 0),
        ("Min Available", "string", "", 0),
        ("Max Unavailable", "string", "", 0),
        ("Allowed Disruptions", "integer", "", 0),
        ("Age", "string", "", 0),
    ]
}

/// A row's cells after the name: the spec's bounds (`N/A` when unset), the allowed
/// disruptions, the age.
pub(crate) fn cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let bound = |f: &str| match o.pointer(&format!("/spec/{f}")) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "N/A".into(),
    };
    vec![
        json!(bound("minAvailable")),
        json!(bound("maxUnavailable")),
        json!(int_at(o, "/status/disruptionsAllowed")),
        json!(since(o.pointer("/metadata/creationTimestamp"), now)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let cases = [
            (json!({"minAvailable": 2}), vec![]),
            (json!({"maxUnavailable": "30%"}), vec![]),
            (
                json!({"minAvailable": 1, "maxUnavailable": 1}),
                vec!["spec"],
            ),
            (json!({"minAvailable": -1}), vec!["spec.minAvailable"]),
            (
                json!({"maxUnavailable": "120%"}),
                vec!["spec.maxUnavailable"],
            ),
            (
                json!({"maxUnavailable": "half"}),
                vec!["spec.maxUnavailable"],
            ),
            (
                json!({"unhealthyPodEvictionPolicy": "Never"}),
                vec!["spec.unhealthyPodEvictionPolicy"],
            ),
        ];
        for (spec, want) in cases {
            let mut errs = Errors(Vec::new());
            validate(&json!({"spec": spec}), &mut errs);
            let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, want, "{spec}");
        }
    }

    #[test]
    fn rows() {
        let now = Utc::now();
        let o = json!({"metadata": {"name": "web", "creationTimestamp": (now - chrono::Duration::seconds(90)).to_rfc3339()},
                       "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            cells(&o, now),
            vec![json!("50%"), json!("N/A"), json!(1), json!("90s")]
        );
        assert_eq!(columns().len(), 5);
    }
}

//! Round trips through the k8s-openapi types: type checking and unknown-field detection.

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet},
    autoscaling::{v1 as autoscaling_v1, v2 as autoscaling_v2},
    batch::v1::{CronJob, Job},
    coordination::v1::Lease,
    core::v1::{
        ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount,
    },
    discovery::v1::EndpointSlice,
    policy::v1::PodDisruptionBudget,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{FieldError, ResourceInfo};

fn trip<T: DeserializeOwned + Serialize>(v: Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// `obj` decoded into the kind's k8s-openapi type and encoded again; `None` for kinds
/// without a type here.
pub(crate) fn round_trip(info: &ResourceInfo, obj: &Value) -> Option<Result<Value, String>> {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        // The typed decoders insist on these; the caller has checked them.
        m.insert("apiVersion".into(), Value::from(info.api_version()));
        m.insert("kind".into(), Value::from(info.kind));
    }
    Some(match info.kind {
        "Pod" => trip::<Pod>(v),
        "Service" => trip::<Service>(v),
        "Namespace" => trip::<Namespace>(v),
        "Endpoints" => trip::<Endpoints>(v),
        "Node" => trip::<Node>(v),
        "ConfigMap" => trip::<ConfigMap>(v),
        "Secret" => trip::<Secret>(v),
        "Event" => trip::<Event>(v),
        "ServiceAccount" => trip::<ServiceAccount>(v),
        "Deployment" => trip::<Deployment>(v),
        "ReplicaSet" => trip::<ReplicaSet>(v),
        "EndpointSlice" => trip::<EndpointSlice>(v),
        "Lease" => trip::<Lease>(v),
        "Job" => trip::<Job>(v),
        "CronJob" => trip::<CronJob>(v),
        "DaemonSet" => trip::<DaemonSet>(v),
        "PodDisruptionBudget" => trip::<PodDisruptionBudget>(v),
        "HorizontalPodAutoscaler" if info.version == "v1" => {
            trip::<autoscaling_v1::HorizontalPodAutoscaler>(v)
        }
        "HorizontalPodAutoscaler" => trip::<autoscaling_v2::HorizontalPodAutoscaler>(v),
        _ => return None,
    })
}

/// Fields of `orig` that the typed round trip dropped.
pub(crate) fn unknown(info: &ResourceInfo, obj: &Value) -> Vec<FieldError> {
    let Some(Ok(rt)) = round_trip(info, obj) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    diff(obj, &rt, "", &mut out);
    out
}

fn diff(orig: &Value, rt: &Value, path: &str, out: &mut Vec<FieldError>) {
    match (orig, rt) {
        (Value::Object(o), Value::Object(r)) => {
            for (k, v) in o {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match r.get(k) {
                    Some(rv) => diff(v, rv, &p, out),
                    None => out.push(FieldError {
                        reason: "FieldValueUnknown",
                        field: format!(".{p}"),
                        message: format!("unknown field {p:?}"),
                    }),
                }
            }
        }
        (Value::Array(o), Value::Array(r)) => {
            for (i, (ov, rv)) in o.iter().zip(r).enumerate() {
                diff(ov, rv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    #[test]
    fn unknown_fields() {
        let pods = find("", "pods").unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}, "bogus": 1},
            "spec": {"foo": 1, "containers": [{"name": "c", "image": "i", "imagee": "x"}], "nodeName": null}});
        let errs = unknown(pods, &pod);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![".metadata.bogus", ".spec.containers[0].imagee", ".spec.foo"]
        );
        assert_eq!(errs[2].message, "unknown field \"spec.foo\"");
        assert_eq!(errs[2].reason, "FieldValueUnknown");
        let deploys = find("apps", "deployments").unwrap();
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "name": "web"}],
            "resources": {}, "securityContext": {}}]}}}});
        assert!(unknown(deploys, &d).is_empty());
        let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": "x"}});
        assert!(round_trip(deploys, &bad).unwrap().is_err());
    }
}

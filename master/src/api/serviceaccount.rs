//! The ServiceAccount admission plugin (upstream `plugin/pkg/admission/serviceaccount`), the
//! part that concerns the node: a new pod gets `spec.serviceAccountName` (default
//! `default`, and the deprecated `serviceAccount` alias) and, when it names no
//! imagePullSecrets, the ServiceAccount's. A pod naming a ServiceAccount that does not exist
//! is refused (403) as upstream does; a missing `default` one lets the pod through without
//! pull secrets (the namespace's `default` ServiceAccount is made with the namespace, so it
//! is missing only while it is being made). Mirror pods are left alone. Also the `default`
//! ServiceAccount the ServiceAccounts controller keeps in every namespace.

use serde_json::{Value, json};

use super::status::ApiError;
use super::{Server, object_key};
use crate::resources::find;

/// The annotation of a static (mirror) pod, which the plugin leaves alone.
const MIRROR: &str = "kubernetes.io/config.mirror";

/// What the plugin does to a pod given its ServiceAccount (`None`: not found). Pure.
pub(crate) fn admit_with(pod: &mut Value, sa_name: &str, sa: Option<&Value>) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.insert("serviceAccountName".into(), json!(sa_name));
    spec.insert("serviceAccount".into(), json!(sa_name));
    let has_own = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if has_own {
        return;
    }
    let secrets: Vec<Value> = sa
        .and_then(|s| s.get("imagePullSecrets"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("name").and_then(Value::as_str))
                .filter(|n| !n.is_empty())
                .map(|n| json!({"name": n}))
                .collect()
        })
        .unwrap_or_default();
    if !secrets.is_empty() {
        spec.insert("imagePullSecrets".into(), Value::Array(secrets));
    }
}

/// The ServiceAccount a pod names (`default` when it names none).
pub(crate) fn service_account_name(pod: &Value) -> String {
    ["/spec/serviceAccountName", "/spec/serviceAccount"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_str))
        .find(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string()
}

/// Admits a new pod in `ns`: looks its ServiceAccount up in the store.
pub(crate) async fn admit(server: &Server, ns: &str, pod: &mut Value) -> Result<(), ApiError> {
    if pod
        .pointer(&format!(
            "/metadata/annotations/{}",
            MIRROR.replace('/', "~1")
        ))
        .is_some()
    {
        return Ok(());
    }
    let name = service_account_name(pod);
    let info = find("", "serviceaccounts")
        .ok_or_else(|| ApiError::internal("serviceaccounts not served"))?;
    let sa = match server.store.get(&object_key(info, Some(ns), &name)).await? {
        Some(kv) => Some(super::rest::decode_kv(&kv)?),
        None => None,
    };
    if sa.is_none() && name != "default" {
        let pod_name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(ApiError::forbidden(format!(
            "pods \"{pod_name}\" is forbidden: error looking up service account {ns}/{name}: \
             serviceaccount \"{name}\" not found"
        )));
    }
    admit_with(pod, &name, sa.as_ref());
    Ok(())
}

/// The `default` ServiceAccount of a namespace, as the ServiceAccounts controller makes it.
pub(crate) fn default_account(ns: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount",
           "metadata": {"name": "default", "namespace": ns}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_table() {
        let sa = json!({"imagePullSecrets": [{"name": "regcred"}, {"name": ""}, {"name": "b"}]});
        // (pod spec, sa name, sa, want spec fields)
        let cases = [
            (
                json!({"containers": []}),
                "default",
                Some(sa.clone()),
                json!({"containers": [], "serviceAccountName": "default", "serviceAccount": "default",
                       "imagePullSecrets": [{"name": "regcred"}, {"name": "b"}]}),
            ),
            (
                json!({"containers": [], "imagePullSecrets": [{"name": "own"}]}),
                "default",
                Some(sa.clone()),
                json!({"containers": [], "serviceAccountName": "default", "serviceAccount": "default",
                       "imagePullSecrets": [{"name": "own"}]}),
            ),
            (
                json!({"containers": [], "imagePullSecrets": []}),
                "builder",
                Some(sa.clone()),
                json!({"containers": [], "serviceAccountName": "builder", "serviceAccount": "builder",
                       "imagePullSecrets": [{"name": "regcred"}, {"name": "b"}]}),
            ),
            (
                json!({"containers": []}),
                "default",
                None,
                json!({"containers": [], "serviceAccountName": "default", "serviceAccount": "default"}),
            ),
            (
                json!({"containers": []}),
                "default",
                Some(json!({"metadata": {"name": "default"}})),
                json!({"containers": [], "serviceAccountName": "default", "serviceAccount": "default"}),
            ),
        ];
        for (spec, name, sa, want) in cases {
            let mut pod = json!({"metadata": {"name": "p"}, "spec": spec});
            admit_with(&mut pod, name, sa.as_ref());
            assert_eq!(pod["spec"], want, "{name} {sa:?}");
        }
    }

    #[test]
    fn names() {
        let n = |spec: Value| service_account_name(&json!({"spec": spec}));
        assert_eq!(n(json!({})), "default");
        assert_eq!(n(json!({"serviceAccountName": ""})), "default");
        assert_eq!(
            n(json!({"serviceAccountName": "a", "serviceAccount": "b"})),
            "a"
        );
        assert_eq!(n(json!({"serviceAccount": "b"})), "b");
    }
}

//! Events about pods as the kubelet records them (core/v1 Events, source component
//! `kubelet` and the node as host, the container in `involvedObject.fieldPath`), e.g.
//! `Unhealthy` "Liveness probe failed: …", `Killing` "Container c failed liveness probe, will
//! be restarted", `FailedPostStartHook`. Recording is best effort: a failure is logged.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Api;
use kube::api::PostParams;

/// Event type `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Normal.
    Normal,
    /// Warning.
    Warning,
}

/// The Event for `pod` (and its `container`, if any) at `now`, reported by `node`.
pub fn event(
    pod: &Pod,
    container: Option<&str>,
    kind: Kind,
    reason: &str,
    message: &str,
    node: &str,
    now: k8s_openapi::jiff::Timestamp,
) -> Event {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let is_init = |c: &str| {
        pod.spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|l| l.iter().any(|i| i.name == c))
    };
    let field_path = container.map(|c| {
        if is_init(c) {
            format!("spec.initContainers{{{c}}}")
        } else {
            format!("spec.containers{{{c}}}")
        }
    });
    Event {
        metadata: ObjectMeta {
            // the kubelet's name: the object's name and the time in hex nanoseconds
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: pod.metadata.namespace.clone(),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            field_path,
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(
            match kind {
                Kind::Normal => "Normal",
                Kind::Warning => "Warning",
            }
            .into(),
        ),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.into()),
        }),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: None::<MicroTime>,
        count: Some(1),
        ..Default::default()
    }
}

/// Creates `ev` in its namespace; failures are logged, never returned.
pub async fn record(client: &kube::Client, ev: Event) {
    let ns = ev
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::warn!(reason = ?ev.reason, error = %e, "cannot record event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_the_kubelet_records_them() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "resourceVersion": "7"},
            "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "app"}]}
        }))
        .unwrap();
        let now = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let table = [
            (Some("app"), Some("spec.containers{app}")),
            (Some("init"), Some("spec.initContainers{init}")),
            (None, None),
        ];
        for (container, path) in table {
            let ev = event(
                &pod,
                container,
                Kind::Warning,
                "Unhealthy",
                "Liveness probe failed: no",
                "n1",
                now,
            );
            assert_eq!(ev.involved_object.field_path.as_deref(), path);
            assert_eq!(ev.metadata.name.as_deref(), Some("web.17979cfe362a0000"));
            assert_eq!(ev.metadata.namespace.as_deref(), Some("ns"));
            assert_eq!(ev.involved_object.uid.as_deref(), Some("u1"));
            assert_eq!(ev.type_.as_deref(), Some("Warning"));
            assert_eq!(ev.source.as_ref().unwrap().host.as_deref(), Some("n1"));
            assert_eq!(ev.count, Some(1));
        }
    }
}

//! Events as kube-controller-manager and kube-scheduler record them: one core/v1 Event per
//! (object, reason, message), its `count` and `lastTimestamp` bumped when it repeats.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Informational.
    Normal,
    /// Something went wrong.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// A reference to `obj` for an Event's `involvedObject`.
pub fn reference<K>(obj: &K) -> ObjectReference
where
    K: Resource<DynamicType = ()>,
{
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: obj.meta().name.clone(),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        field_path: None,
    }
}

/// Records an Event about `involved` from `component`. Failures are logged, not returned:
/// an Event is never worth failing a reconcile for.
pub async fn record(
    client: &kube::Client,
    component: &str,
    involved: ObjectReference,
    kind: EventType,
    reason: &str,
    message: &str,
) {
    if let Err(e) = try_record(client, component, &involved, kind, reason, message).await {
        tracing::debug!(error = %e, reason, "cannot record event");
    }
}

/// Records `notes` (type, reason, message) about `involved` off the caller's path, as
/// upstream's broadcaster does, so a burst of changes is not slowed by calls per Event.
pub fn record_all(
    client: &kube::Client,
    component: &'static str,
    involved: ObjectReference,
    notes: Vec<(EventType, &'static str, String)>,
) {
    if notes.is_empty() {
        return;
    }
    let client = client.clone();
    tokio::spawn(async move {
        for (kind, reason, message) in notes {
            record(&client, component, involved.clone(), kind, reason, &message).await;
        }
    });
}

async fn try_record(
    client: &kube::Client,
    component: &str,
    involved: &ObjectReference,
    kind: EventType,
    reason: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let ns = involved
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    // Same object, reason and message → same Event name, so repeats bump its count.
    let digest = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [
            involved.uid.as_deref().unwrap_or_default(),
            reason,
            message,
            component,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(&h.finalize()[..8])
    };
    let name = format!("{}.{digest}", involved.name.as_deref().unwrap_or("unknown"));
    let now = k8s_openapi::jiff::Timestamp::now();
    if let Some(existing) = api.get_opt(&name).await? {
        let count = existing.count.unwrap_or(1) + 1;
        let patch = json!({"count": count, "lastTimestamp": Time(now)});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        return Ok(());
    }
    let event = Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns),
            ..Default::default()
        },
        involved_object: involved.clone(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(kind.as_str().into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        reporting_component: Some(component.into()),
        reporting_instance: Some(component.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        count: Some(1),
        action: None,
        related: None,
        series: None,
    };
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The object's `namespace/name` for logs.
pub fn key<K: ResourceExt>(obj: &K) -> String {
    match obj.namespace() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

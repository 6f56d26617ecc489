//! The kinds the API server serves, and what is specific to each: defaulting, validation,
//! patch merge keys, table columns. The HTTP layer (`api`) is generic over this table.

/// One served resource (a REST collection), as discovery describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group ("" for core).
    pub group: &'static str,
    /// Version ("v1").
    pub version: &'static str,
    /// Kind ("Pod").
    pub kind: &'static str,
    /// Plural resource name ("pods").
    pub plural: &'static str,
    /// Singular ("pod").
    pub singular: &'static str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// kubectl short names ("po").
    pub short_names: &'static [&'static str],
    /// Categories ("all").
    pub categories: &'static [&'static str],
    /// Subresources served ("status", "scale", "binding", "log", "exec", "attach").
    pub subresources: &'static [&'static str],
}

impl ResourceInfo {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store key prefix of this resource (etcd's Kubernetes layout; every served
    /// version of a kind shares it).
    pub fn key_prefix(&self) -> String {
        if self.plural == "horizontalpodautoscalers" {
            // upstream keeps HPAs of every version under the resource's name alone
            format!("/registry/{}/", self.plural)
        } else if self.group.is_empty() {
            format!("/registry/{}/", self.plural)
        } else {
            format!("/registry/{}/{}/", self.group, self.plural)
        }
    }
}

const ALL: &[&str] = &["all"];

/// Every resource the API server serves.
pub const RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        subresources: &["status", "finalize"],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: ALL,
        subresources: &[
            "status",
            "binding",
            "log",
            "exec",
            "attach",
            "eviction",
            "portforward",
        ],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        namespaced: true,
        short_names: &["svc"],
        categories: ALL,
        subresources: &["status"],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        subresources: &["status"],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: ALL,
        subresources: &["status", "scale"],
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short_names: &["rs"],
        categories: ALL,
        subresources: &["status", "scale"],
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        singular: "daemonset",
        namespaced: true,
        short_names: &["ds"],
        categories: ALL,
        subresources: &["status"],
    },
    ResourceInfo {
        group: "batch",
        version: "v1",
        kind: "Job",
        plural: "jobs",
        singular: "job",
        namespaced: true,
        short_names: &[],
        categories: ALL,
        subresources: &["status"],
    },
    ResourceInfo {
        group: "batch",
        version: "v1",
        kind: "CronJob",
        plural: "cronjobs",
        singular: "cronjob",
        namespaced: true,
        short_names: &["cj"],
        categories: ALL,
        subresources: &["status"],
    },
    ResourceInfo {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "policy",
        version: "v1",
        kind: "PodDisruptionBudget",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        namespaced: true,
        short_names: &["pdb"],
        categories: &[],
        subresources: &["status"],
    },
    // The storage (and preferred) version first, then the other served versions.
    ResourceInfo {
        group: "autoscaling",
        version: "v2",
        kind: "HorizontalPodAutoscaler",
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        namespaced: true,
        short_names: &["hpa"],
        categories: ALL,
        subresources: &["status"],
    },
    ResourceInfo {
        group: "autoscaling",
        version: "v1",
        kind: "HorizontalPodAutoscaler",
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        namespaced: true,
        short_names: &["hpa"],
        categories: ALL,
        subresources: &["status"],
    },
];

/// The storage version of `info`'s resource: the first entry of [`RESOURCES`] with its group
/// and plural (also its preferred version). Objects are stored in it and converted to the
/// version a request names.
pub fn storage_of(info: &'static ResourceInfo) -> &'static ResourceInfo {
    find(info.group, info.plural).unwrap_or(info)
}

/// Whether `info` is its resource's storage version. Compared by version, not by address:
/// a `const` table may exist at several addresses.
pub fn is_storage(info: &ResourceInfo) -> bool {
    find(info.group, info.plural).is_none_or(|s| s.version == info.version)
}

/// Converts `obj` to `info`'s version in place (a no-op for kinds with one version).
pub fn convert(info: &ResourceInfo, obj: &mut serde_json::Value) {
    if info.kind == "HorizontalPodAutoscaler" {
        autoscaling::convert(obj, &info.api_version());
    }
}

/// Finds a resource by group and plural name.
pub fn find(group: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
}

/// Finds a resource by apiVersion and kind (for bodies).
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// A field-level validation failure, as `metav1.Status` details list them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Kubernetes' cause type: FieldValueRequired, FieldValueInvalid, FieldValueNotSupported,
    /// FieldValueDuplicate, FieldValueForbidden, FieldValueTooLong, FieldValueTypeInvalid,
    /// FieldValueUnknown (for unknown fields under fieldValidation=Strict).
    pub reason: &'static str,
    /// The field's path (`spec.containers[0].image`).
    pub field: String,
    /// What is wrong, as Kubernetes words it.
    pub message: String,
}

/// The patch content types of PATCH requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

/// Errors of applying a patch.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch body is not valid for its type.
    #[error("invalid patch: {0}")]
    Invalid(String),
    /// A JSON patch `test` failed or a path does not exist.
    #[error("the patch could not be applied: {0}")]
    Failed(String),
    /// Server-side apply found fields owned by another manager (409).
    #[error("apply conflict: {0}")]
    Conflict(String),
}

/// Kind-specific semantics, implemented in the submodules.
pub mod semantics;

/// Server-side apply: merge, managedFields ownership, conflicts.
mod apply;
/// HorizontalPodAutoscaler: v1 ⇄ v2 conversion, defaults, validation, table columns.
pub mod autoscaling;
/// Defaulting of new and updated objects per kind.
pub(crate) mod defaults;
/// policy/v1 PodDisruptionBudget: validation, table columns.
pub(crate) mod policy;
/// Strategic merge patch with the served types' merge keys and directives.
mod strategic;
/// `meta.k8s.io/v1` Tables with kubectl's columns.
mod table;
/// Round trips through the k8s-openapi types (type checks, unknown fields).
mod typed;
/// Validation of objects, worded as the apiserver words it.
pub(crate) mod validation;
/// Jobs, CronJobs and DaemonSets: defaults, validation, immutable fields, table columns.
pub mod workloads;

//! Kubernetes protobuf request bodies: table tests decoding bodies encoded with the prost
//! messages of k8s.io/api (the `k8s-pb` crate, an encoder independent of our decoder), the
//! API server taking them on create, update and subresources, malformed bodies, and the real
//! kubectl 1.27, 1.32 and 1.33, whose typed clients send protobuf.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;

use std::collections::BTreeMap;

use api_common::{TestServer, start};
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::autoscaling::{v1 as asv1, v2 as asv2};
use k8s_pb::api::batch::v1 as batch;
use k8s_pb::api::coordination::v1 as coord;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::policy::v1 as policy;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Value, json};
use skiff_master::api::protobuf::{self, CONTENT_TYPE};

/// `k8s\0` + runtime.Unknown, as client-go's protobuf serializer writes a body.
fn envelope(api_version: &str, kind: &str, msg: &impl Message) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(msg.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut b = b"k8s\0".to_vec();
    b.extend(u.encode_to_vec());
    b
}

fn some(v: &str) -> Option<String> {
    Some(v.to_string())
}

/// Object metadata as gogo-protobuf writes it: the empty non-pointer strings and the zero
/// creationTimestamp are on the wire.
fn meta(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: some(name),
        generate_name: some(""),
        namespace: some(""),
        resource_version: some(""),
        uid: some(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time::default()),
        labels: BTreeMap::from([("app".to_string(), name.to_string())]),
        ..Default::default()
    })
}

fn int_or_str_int(i: i32) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(0),
        int_val: Some(i),
        str_val: some(""),
    })
}

fn int_or_str_str(v: &str) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(1),
        int_val: Some(0),
        str_val: some(v),
    })
}

fn container() -> core::Container {
    core::Container {
        name: some("c"),
        image: some("busybox"),
        command: vec!["sh".into(), "-c".into(), "exit 0".into()],
        working_dir: some(""),
        ports: vec![core::ContainerPort {
            name: some("http"),
            container_port: Some(8080),
            host_port: Some(0),
            protocol: some("TCP"),
            host_ip: some(""),
        }],
        resources: Some(core::ResourceRequirements {
            limits: BTreeMap::from([(
                "cpu".to_string(),
                Quantity {
                    string: some("500m"),
                },
            )]),
            ..Default::default()
        }),
        liveness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: some("/healthz"),
                    port: int_or_str_str("http"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            period_seconds: Some(10),
            initial_delay_seconds: Some(0),
            ..Default::default()
        }),
        env: vec![core::EnvVar {
            name: some("PASSWORD"),
            value: some(""),
            value_from: Some(core::EnvVarSource {
                secret_key_ref: Some(core::SecretKeySelector {
                    local_object_reference: Some(core::LocalObjectReference { name: some("db") }),
                    key: some("password"),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        }],
        stdin: Some(false),
        tty: Some(false),
        termination_message_path: some(""),
        image_pull_policy: some("IfNotPresent"),
        ..Default::default()
    }
}

fn container_json() -> Value {
    json!({
        "name": "c", "image": "busybox", "command": ["sh", "-c", "exit 0"],
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "resources": {"limits": {"cpu": "500m"}},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
        "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password", "optional": false}}}],
        "imagePullPolicy": "IfNotPresent"
    })
}

fn pod_spec() -> Option<core::PodSpec> {
    Some(core::PodSpec {
        containers: vec![container()],
        restart_policy: some("Never"),
        termination_grace_period_seconds: Some(0),
        host_network: Some(false),
        dns_policy: some(""),
        volumes: vec![core::Volume {
            name: some("cfg"),
            volume_source: Some(core::VolumeSource {
                config_map: Some(core::ConfigMapVolumeSource {
                    local_object_reference: Some(core::LocalObjectReference { name: some("cfg") }),
                    default_mode: Some(0o644),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }],
        ..Default::default()
    })
}

fn pod_spec_json() -> Value {
    json!({
        "containers": [container_json()],
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "volumes": [{"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}}]
    })
}

fn always(mut spec: Value) -> Value {
    spec["restartPolicy"] = json!("Always");
    spec
}

fn meta_json(name: &str) -> Value {
    json!({"name": name, "labels": {"app": name}})
}

fn selector(name: &str) -> Option<meta::LabelSelector> {
    Some(meta::LabelSelector {
        match_labels: BTreeMap::from([("app".to_string(), name.to_string())]),
        match_expressions: vec![],
    })
}

fn template(name: &str) -> Option<core::PodTemplateSpec> {
    Some(core::PodTemplateSpec {
        metadata: meta(name),
        spec: pod_spec(),
    })
}

/// (what, protobuf body, the JSON it must decode to)
fn cases() -> Vec<(&'static str, Vec<u8>, Value)> {
    vec![
        (
            "pod: zero values omitted, pointers kept, inline structs, IntOrString, Quantity",
            envelope(
                "v1",
                "Pod",
                &core::Pod {
                    metadata: meta("p"),
                    spec: pod_spec(),
                    status: Some(core::PodStatus::default()),
                },
            ),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta_json("p"),
                   "spec": pod_spec_json(), "status": {}}),
        ),
        (
            "secret: bytes as base64",
            envelope(
                "v1",
                "Secret",
                &core::Secret {
                    metadata: meta("s"),
                    data: BTreeMap::from([
                        ("bin".to_string(), vec![0u8, 1, 2, 255]),
                        ("empty".to_string(), vec![]),
                    ]),
                    r#type: some("Opaque"),
                    immutable: None,
                    string_data: BTreeMap::new(),
                },
            ),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta_json("s"),
                   "data": {"bin": "AAEC/w==", "empty": ""}, "type": "Opaque"}),
        ),
        (
            "configmap: maps, immutable false kept",
            envelope(
                "v1",
                "ConfigMap",
                &core::ConfigMap {
                    metadata: meta("cm"),
                    data: BTreeMap::from([("a".to_string(), "1".to_string())]),
                    binary_data: BTreeMap::from([("b".to_string(), b"hi".to_vec())]),
                    immutable: Some(false),
                },
            ),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta_json("cm"),
                   "data": {"a": "1"}, "binaryData": {"b": "aGk="}, "immutable": false}),
        ),
        (
            "deployment: replicas 0 kept, strategy IntOrString",
            envelope(
                "apps/v1",
                "Deployment",
                &apps::Deployment {
                    metadata: meta("d"),
                    spec: Some(apps::DeploymentSpec {
                        replicas: Some(0),
                        selector: selector("d"),
                        template: template("d"),
                        strategy: Some(apps::DeploymentStrategy {
                            r#type: some("RollingUpdate"),
                            rolling_update: Some(apps::RollingUpdateDeployment {
                                max_unavailable: int_or_str_int(1),
                                max_surge: int_or_str_str("25%"),
                            }),
                        }),
                        min_ready_seconds: Some(0),
                        paused: Some(false),
                        ..Default::default()
                    }),
                    status: Some(apps::DeploymentStatus {
                        replicas: Some(0),
                        ..Default::default()
                    }),
                },
            ),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta_json("d"),
                   "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "d"}},
                            "template": {"metadata": meta_json("d"), "spec": pod_spec_json()},
                            "strategy": {"type": "RollingUpdate",
                                         "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}}},
                   "status": {"replicas": 0}}),
        ),
        (
            "service: int targetPort, nodePort 0 omitted",
            envelope(
                "v1",
                "Service",
                &core::Service {
                    metadata: meta("svc"),
                    spec: Some(core::ServiceSpec {
                        ports: vec![core::ServicePort {
                            name: some("http"),
                            protocol: some("TCP"),
                            port: Some(80),
                            target_port: int_or_str_int(8080),
                            node_port: Some(0),
                            app_protocol: None,
                        }],
                        selector: BTreeMap::from([("app".to_string(), "svc".to_string())]),
                        r#type: some("ClusterIP"),
                        cluster_ip: some(""),
                        session_affinity: some(""),
                        ..Default::default()
                    }),
                    status: Some(core::ServiceStatus::default()),
                },
            ),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": meta_json("svc"),
                   "spec": {"ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                            "selector": {"app": "svc"}, "type": "ClusterIP"},
                   "status": {}}),
        ),
        (
            "job: Time, backoffLimit 0 kept, owner references, managedFields FieldsV1",
            envelope(
                "batch/v1",
                "Job",
                &batch::Job {
                    metadata: Some(meta::ObjectMeta {
                        name: some("j"),
                        creation_timestamp: Some(meta::Time {
                            seconds: Some(1_700_000_000),
                            nanos: Some(0),
                        }),
                        owner_references: vec![meta::OwnerReference {
                            api_version: some("batch/v1"),
                            kind: some("CronJob"),
                            name: some("c"),
                            uid: some("u-1"),
                            controller: Some(true),
                            block_owner_deletion: Some(false),
                        }],
                        managed_fields: vec![meta::ManagedFieldsEntry {
                            manager: some("kubectl"),
                            operation: some("Update"),
                            api_version: some("batch/v1"),
                            fields_type: some("FieldsV1"),
                            fields_v1: Some(meta::FieldsV1 {
                                raw: Some(br#"{"f:spec":{"f:parallelism":{}}}"#.to_vec()),
                            }),
                            time: Some(meta::Time {
                                seconds: Some(1_700_000_001),
                                nanos: Some(0),
                            }),
                            subresource: some(""),
                        }],
                        ..Default::default()
                    }),
                    spec: Some(batch::JobSpec {
                        parallelism: Some(2),
                        completions: Some(5),
                        backoff_limit: Some(0),
                        template: Some(core::PodTemplateSpec {
                            metadata: Some(meta::ObjectMeta::default()),
                            spec: pod_spec(),
                        }),
                        ..Default::default()
                    }),
                    status: None,
                },
            ),
            json!({"apiVersion": "batch/v1", "kind": "Job",
                   "metadata": {"name": "j", "creationTimestamp": "2023-11-14T22:13:20Z",
                                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                                    "name": "c", "uid": "u-1", "controller": true,
                                    "blockOwnerDeletion": false}],
                                "managedFields": [{"manager": "kubectl", "operation": "Update",
                                    "apiVersion": "batch/v1", "fieldsType": "FieldsV1",
                                    "fieldsV1": {"f:spec": {"f:parallelism": {}}},
                                    "time": "2023-11-14T22:13:21Z"}]},
                   "spec": {"parallelism": 2, "completions": 5, "backoffLimit": 0,
                            "template": {"metadata": {}, "spec": pod_spec_json()}}}),
        ),
        (
            "lease: MicroTime",
            envelope(
                "coordination.k8s.io/v1",
                "Lease",
                &coord::Lease {
                    metadata: meta("l"),
                    spec: Some(coord::LeaseSpec {
                        holder_identity: some("node-1"),
                        lease_duration_seconds: Some(40),
                        renew_time: Some(meta::MicroTime {
                            seconds: Some(1_700_000_000),
                            nanos: Some(123_456_000),
                        }),
                        ..Default::default()
                    }),
                },
            ),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta_json("l"),
                   "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40,
                            "renewTime": "2023-11-14T22:13:20.123456Z"}}),
        ),
        (
            "autoscaling/v2 HorizontalPodAutoscaler",
            envelope(
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                &asv2::HorizontalPodAutoscaler {
                    metadata: meta("web"),
                    spec: Some(asv2::HorizontalPodAutoscalerSpec {
                        scale_target_ref: Some(asv2::CrossVersionObjectReference {
                            kind: some("Deployment"),
                            name: some("web"),
                            api_version: some("apps/v1"),
                        }),
                        min_replicas: Some(1),
                        max_replicas: Some(5),
                        metrics: vec![asv2::MetricSpec {
                            r#type: some("Resource"),
                            resource: Some(asv2::ResourceMetricSource {
                                name: some("cpu"),
                                target: Some(asv2::MetricTarget {
                                    r#type: some("Utilization"),
                                    average_utilization: Some(50),
                                    ..Default::default()
                                }),
                            }),
                            ..Default::default()
                        }],
                        behavior: Some(asv2::HorizontalPodAutoscalerBehavior {
                            scale_down: Some(asv2::HpaScalingRules {
                                stabilization_window_seconds: Some(0),
                                select_policy: some("Max"),
                                policies: vec![asv2::HpaScalingPolicy {
                                    r#type: some("Percent"),
                                    value: Some(100),
                                    period_seconds: Some(15),
                                }],
                                tolerance: None,
                            }),
                            scale_up: None,
                        }),
                    }),
                    status: Some(asv2::HorizontalPodAutoscalerStatus::default()),
                },
            ),
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                   "metadata": meta_json("web"),
                   "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                            "minReplicas": 1, "maxReplicas": 5,
                            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                "target": {"type": "Utilization", "averageUtilization": 50}}}],
                            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                                "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}}},
                   // desiredReplicas is not omitempty in Go: JSON has it even when 0
                   "status": {"desiredReplicas": 0}}),
        ),
        (
            "autoscaling/v1 HorizontalPodAutoscaler (kubectl autoscale)",
            envelope(
                "autoscaling/v1",
                "HorizontalPodAutoscaler",
                &asv1::HorizontalPodAutoscaler {
                    metadata: meta("web"),
                    spec: Some(asv1::HorizontalPodAutoscalerSpec {
                        scale_target_ref: Some(asv1::CrossVersionObjectReference {
                            kind: some("Deployment"),
                            name: some("web"),
                            api_version: some("apps/v1"),
                        }),
                        min_replicas: Some(1),
                        max_replicas: Some(5),
                        target_cpu_utilization_percentage: Some(50),
                    }),
                    status: Some(asv1::HorizontalPodAutoscalerStatus {
                        current_replicas: Some(0),
                        desired_replicas: Some(0),
                        ..Default::default()
                    }),
                },
            ),
            json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
                   "metadata": meta_json("web"),
                   "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                            "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50},
                   "status": {"currentReplicas": 0, "desiredReplicas": 0}}),
        ),
        (
            "autoscaling/v1 Scale to 0",
            envelope(
                "autoscaling/v1",
                "Scale",
                &asv1::Scale {
                    metadata: meta("d"),
                    spec: Some(asv1::ScaleSpec { replicas: Some(0) }),
                    status: Some(asv1::ScaleStatus {
                        replicas: Some(3),
                        selector: some(""),
                    }),
                },
            ),
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": meta_json("d"),
                   "spec": {"replicas": 0}, "status": {"replicas": 3}}),
        ),
        (
            "policy/v1 Eviction with DeleteOptions",
            envelope(
                "policy/v1",
                "Eviction",
                &policy::Eviction {
                    metadata: meta("p"),
                    delete_options: Some(meta::DeleteOptions {
                        grace_period_seconds: Some(0),
                        propagation_policy: some("Foreground"),
                        dry_run: vec!["All".into()],
                        ..Default::default()
                    }),
                },
            ),
            json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": meta_json("p"),
                   "deleteOptions": {"gracePeriodSeconds": 0, "propagationPolicy": "Foreground",
                                     "dryRun": ["All"]}}),
        ),
        (
            "DeleteOptions in a group's version",
            envelope(
                "apps/v1",
                "DeleteOptions",
                &meta::DeleteOptions {
                    propagation_policy: some("Background"),
                    ..Default::default()
                },
            ),
            json!({"apiVersion": "apps/v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}),
        ),
        (
            "binding",
            envelope(
                "v1",
                "Binding",
                &core::Binding {
                    metadata: meta("p"),
                    target: Some(core::ObjectReference {
                        kind: some("Node"),
                        name: some("n1"),
                        ..Default::default()
                    }),
                },
            ),
            json!({"apiVersion": "v1", "kind": "Binding", "metadata": meta_json("p"),
                   "target": {"kind": "Node", "name": "n1"}}),
        ),
    ]
}

#[test]
fn decodes_k8s_protobuf_messages() {
    for (what, body, want) in cases() {
        let got = protobuf::decode(&body).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn decoded_objects_deserialize_into_k8s_openapi() {
    use k8s_openapi::api::{apps::v1 as a, batch::v1 as b, core::v1 as c};
    for (what, body, _) in cases() {
        let v = protobuf::decode(&body).unwrap();
        let ok = match v["kind"].as_str().unwrap() {
            "Pod" => serde_json::from_value::<c::Pod>(v).map(drop),
            "Secret" => serde_json::from_value::<c::Secret>(v).map(drop),
            "ConfigMap" => serde_json::from_value::<c::ConfigMap>(v).map(drop),
            "Service" => serde_json::from_value::<c::Service>(v).map(drop),
            "Deployment" => serde_json::from_value::<a::Deployment>(v).map(drop),
            "Job" => serde_json::from_value::<b::Job>(v).map(drop),
            _ => Ok(()),
        };
        ok.unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

// --- the API server --------------------------------------------------------------------

async fn post(s: &TestServer, path: &str, body: &[u8]) -> (u16, Value) {
    s.admin("POST", path, CONTENT_TYPE, body).await
}

/// The parts of a stored object a client chose: everything but server-set metadata.
fn chosen(mut v: Value) -> Value {
    let m = v["metadata"].as_object_mut().unwrap();
    for k in [
        "name",
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
        "generation",
        "labels",
    ] {
        m.remove(k);
    }
    if let Some(st) = v.get_mut("status") {
        *st = json!({});
    }
    v
}

#[tokio::test]
async fn server_takes_protobuf_like_json() {
    let s = start().await;
    let cases: Vec<(&str, &str, Vec<u8>, Value)> = vec![
        (
            "/api/v1/namespaces/default/configmaps",
            "configmaps",
            envelope(
                "v1",
                "ConfigMap",
                &core::ConfigMap {
                    metadata: meta("pb"),
                    data: BTreeMap::from([("a".to_string(), "1".to_string())]),
                    ..Default::default()
                },
            ),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "js"}, "data": {"a": "1"}}),
        ),
        (
            "/api/v1/namespaces/default/secrets",
            "secrets",
            envelope(
                "v1",
                "Secret",
                &core::Secret {
                    metadata: meta("pb"),
                    data: BTreeMap::from([("k".to_string(), vec![0u8, 255, 10])]),
                    r#type: some("Opaque"),
                    ..Default::default()
                },
            ),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "js"},
                   "data": {"k": "AP8K"}, "type": "Opaque"}),
        ),
        (
            "/apis/apps/v1/namespaces/default/deployments",
            "deployments",
            envelope(
                "apps/v1",
                "Deployment",
                &apps::Deployment {
                    metadata: meta("pb"),
                    spec: Some(apps::DeploymentSpec {
                        replicas: Some(0),
                        selector: selector("pb"),
                        template: template("pb").map(|mut t| {
                            if let Some(spec) = t.spec.as_mut() {
                                spec.restart_policy = some("Always");
                            }
                            t
                        }),
                        ..Default::default()
                    }),
                    status: Some(apps::DeploymentStatus::default()),
                },
            ),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "js"},
                   "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "pb"}},
                            "template": {"metadata": {"name": "pb", "labels": {"app": "pb"}},
                                         "spec": always(pod_spec_json())}}}),
        ),
        (
            "/api/v1/namespaces/default/services",
            "services",
            envelope(
                "v1",
                "Service",
                &core::Service {
                    metadata: meta("pb"),
                    spec: Some(core::ServiceSpec {
                        ports: vec![core::ServicePort {
                            port: Some(80),
                            target_port: int_or_str_int(8080),
                            node_port: Some(0),
                            protocol: some("TCP"),
                            ..Default::default()
                        }],
                        cluster_ip: some(""),
                        ..Default::default()
                    }),
                    status: None,
                },
            ),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "js"},
                   "spec": {"ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}),
        ),
    ];
    for (path, plural, pb, js) in cases {
        let (code, created) = post(&s, path, &pb).await;
        assert_eq!(code, 201, "{plural}: {created}");
        let (code, _) = s
            .admin("POST", path, "application/json", js.to_string().as_bytes())
            .await;
        assert_eq!(code, 201, "{plural}");
        let (_, a) = s.admin("GET", &format!("{path}/pb"), "", b"").await;
        let (_, b) = s.admin("GET", &format!("{path}/js"), "", b"").await;
        let (mut a, b) = (chosen(a), chosen(b));
        if plural == "services" {
            // each Service gets its own cluster IP
            a["spec"]["clusterIP"] = b["spec"]["clusterIP"].clone();
            a["spec"]["clusterIPs"] = b["spec"]["clusterIPs"].clone();
        }
        assert_eq!(
            a, b,
            "{plural}: protobuf and JSON creates store the same object"
        );
    }

    // update (PUT) in protobuf, with the stored resourceVersion
    let (_, cur) = s
        .admin("GET", "/api/v1/namespaces/default/configmaps/pb", "", b"")
        .await;
    let mut m = meta("pb").unwrap();
    m.namespace = some("default");
    m.resource_version = Some(cur["metadata"]["resourceVersion"].as_str().unwrap().into());
    let body = envelope(
        "v1",
        "ConfigMap",
        &core::ConfigMap {
            metadata: Some(m),
            data: BTreeMap::from([("a".to_string(), "2".to_string())]),
            ..Default::default()
        },
    );
    let (code, v) = s
        .admin(
            "PUT",
            "/api/v1/namespaces/default/configmaps/pb",
            CONTENT_TYPE,
            &body,
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["a"], "2");

    // the scale subresource in protobuf
    let body = envelope(
        "autoscaling/v1",
        "Scale",
        &asv1::Scale {
            metadata: Some(meta::ObjectMeta {
                name: some("pb"),
                namespace: some("default"),
                ..Default::default()
            }),
            spec: Some(asv1::ScaleSpec { replicas: Some(3) }),
            status: None,
        },
    );
    let (code, v) = s
        .admin(
            "PUT",
            "/apis/apps/v1/namespaces/default/deployments/pb/scale",
            CONTENT_TYPE,
            &body,
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let (_, d) = s
        .admin(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/pb",
            "",
            b"",
        )
        .await;
    assert_eq!(d["spec"]["replicas"], 3);

    // pods/binding in protobuf, as the scheduler's typed client sends it
    let pod = envelope(
        "v1",
        "Pod",
        &core::Pod {
            metadata: meta("bindme"),
            spec: pod_spec(),
            status: None,
        },
    );
    let (code, v) = post(&s, "/api/v1/namespaces/default/pods", &pod).await;
    assert_eq!(code, 201, "{v}");
    let binding = envelope(
        "v1",
        "Binding",
        &core::Binding {
            metadata: meta("bindme"),
            target: Some(core::ObjectReference {
                kind: some("Node"),
                name: some("n1"),
                ..Default::default()
            }),
        },
    );
    let (code, v) = post(
        &s,
        "/api/v1/namespaces/default/pods/bindme/binding",
        &binding,
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let (_, p) = s
        .admin("GET", "/api/v1/namespaces/default/pods/bindme", "", b"")
        .await;
    assert_eq!(p["spec"]["nodeName"], "n1", "{p}");

    // a delete with protobuf DeleteOptions
    let body = envelope(
        "v1",
        "DeleteOptions",
        &meta::DeleteOptions {
            grace_period_seconds: Some(0),
            propagation_policy: some("Background"),
            ..Default::default()
        },
    );
    let (code, v) = s
        .admin(
            "DELETE",
            "/api/v1/namespaces/default/configmaps/pb",
            CONTENT_TYPE,
            &body,
        )
        .await;
    assert_eq!(code, 200, "{v}");
}

#[tokio::test]
async fn malformed_protobuf_is_rejected_and_nothing_stored() {
    let s = start().await;
    let good = envelope(
        "v1",
        "ConfigMap",
        &core::ConfigMap {
            metadata: meta("bad"),
            ..Default::default()
        },
    );
    let mut wrong_kind = envelope(
        "v1",
        "NoSuchKind",
        &core::ConfigMap {
            metadata: meta("bad"),
            ..Default::default()
        },
    );
    wrong_kind.truncate(wrong_kind.len());
    for (what, body, want) in [
        ("no magic", b"\x0a\x02hi".to_vec(), "prefix"),
        ("truncated", good[..good.len() - 3].to_vec(), "truncated"),
        ("unknown kind", wrong_kind, "no protobuf message is known"),
        (
            "a Secret at the configmaps URL",
            envelope(
                "v1",
                "Secret",
                &core::Secret {
                    metadata: meta("bad"),
                    ..Default::default()
                },
            ),
            "Secret",
        ),
    ] {
        let (code, v) = post(&s, "/api/v1/namespaces/default/configmaps", &body).await;
        assert_eq!(code, 400, "{what}: {v}");
        assert_eq!(v["kind"], "Status", "{what}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains(want), "{what}: {msg}");
    }
    let (_, list) = s
        .admin("GET", "/api/v1/namespaces/default/configmaps", "", b"")
        .await;
    assert_eq!(list["items"], json!([]), "nothing stored");
}

// --- the real kubectl ------------------------------------------------------------------

/// Creates an object with kubectl's typed client (protobuf from 1.32 on) and the same object
/// from `--dry-run=client -o json` through `create -f` (JSON), then compares what is stored
/// at each JSON pointer.
async fn same_as_json(s: &TestServer, v: &str, args: &[&str], url: &str, pointers: &[&str]) {
    let with = |name: &str| -> Vec<String> {
        args.iter()
            .map(|a| {
                if *a == "{}" {
                    name.to_string()
                } else {
                    a.to_string()
                }
            })
            .collect()
    };
    let pb = with("pb");
    let pb: Vec<&str> = pb.iter().map(String::as_str).collect();
    s.ok(v, &pb).await;
    let mut js = with("js");
    let at = js.iter().position(|a| a == "--").unwrap_or(js.len());
    js.splice(
        at..at,
        ["--dry-run=client".into(), "-o".into(), "json".into()],
    );
    let js: Vec<&str> = js.iter().map(String::as_str).collect();
    let manifest = s.ok(v, &js).await;
    let file = s.dir.path().join(format!("{}.json", args[1]));
    std::fs::write(&file, manifest).unwrap();
    s.ok(v, &["create", "-f", file.to_str().unwrap()]).await;
    let (code, a) = s.admin("GET", &format!("{url}/pb"), "", b"").await;
    assert_eq!(code, 200, "{v} {args:?}: {a}");
    let (_, b) = s.admin("GET", &format!("{url}/js"), "", b"").await;
    // kubectl names containers and labels after the object: compare with the names swapped
    let a: Value = serde_json::from_str(&a.to_string().replace("\"pb\"", "\"js\"")).unwrap();
    for p in pointers {
        assert!(a.pointer(p).is_some(), "{v} {args:?}: {p} missing in {a}");
        assert_eq!(a.pointer(p), b.pointer(p), "{v} {args:?}: {p}");
    }
}

async fn kubectl_typed_clients(v: &str) {
    let s = start().await;
    let ns = "/api/v1/namespaces/default";
    same_as_json(
        &s,
        v,
        &[
            "create",
            "job",
            "{}",
            "--image=busybox",
            "--",
            "sh",
            "-c",
            "exit 0",
        ],
        "/apis/batch/v1/namespaces/default/jobs",
        &[
            "/spec/template/spec",
            "/spec/backoffLimit",
            "/spec/completions",
        ],
    )
    .await;
    same_as_json(
        &s,
        v,
        &[
            "create",
            "deployment",
            "{}",
            "--image=busybox",
            "--replicas=2",
            "--port=8080",
        ],
        "/apis/apps/v1/namespaces/default/deployments",
        &["/spec/replicas", "/spec/template/spec", "/spec/strategy"],
    )
    .await;
    same_as_json(
        &s,
        v,
        &[
            "create",
            "configmap",
            "{}",
            "--from-literal=a=b",
            "--from-literal=c=d",
        ],
        &format!("{ns}/configmaps"),
        &["/data"],
    )
    .await;
    same_as_json(
        &s,
        v,
        &[
            "create",
            "secret",
            "generic",
            "{}",
            "--from-literal=a=b\x01\u{e9}",
        ],
        &format!("{ns}/secrets"),
        &["/data", "/type"],
    )
    .await;
    same_as_json(
        &s,
        v,
        &["create", "service", "clusterip", "{}", "--tcp=80:8080"],
        &format!("{ns}/services"),
        &["/spec/ports", "/spec/type"],
    )
    .await;
    same_as_json(
        &s,
        v,
        &["create", "serviceaccount", "{}"],
        &format!("{ns}/serviceaccounts"),
        &["/kind"],
    )
    .await;
    let (_, sec) = s.admin("GET", &format!("{ns}/secrets/pb"), "", b"").await;
    assert_eq!(sec["data"]["a"], "YgHDqQ==", "{v}: secret bytes");

    s.ok(v, &["create", "namespace", "pbns"]).await;
    let (code, _) = s.admin("GET", "/api/v1/namespaces/pbns", "", b"").await;
    assert_eq!(code, 200, "{v}: namespace");

    s.ok(
        v,
        &[
            "create",
            "cronjob",
            "cj",
            "--image=busybox",
            "--schedule=*/5 * * * *",
            "--",
            "true",
        ],
    )
    .await;
    s.ok(v, &["create", "job", "fromcj", "--from=cronjob/cj"])
        .await;
    let (code, j) = s
        .admin(
            "GET",
            "/apis/batch/v1/namespaces/default/jobs/fromcj",
            "",
            b"",
        )
        .await;
    assert_eq!(code, 200, "{v}: {j}");
    assert_eq!(
        j["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"], "manual",
        "{v}: {j}"
    );
    assert_eq!(
        j["metadata"]["ownerReferences"][0]["kind"], "CronJob",
        "{v}: {j}"
    );
    assert_eq!(
        j["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(["true"]),
        "{v}"
    );

    s.ok(
        v,
        &[
            "expose",
            "deployment",
            "pb",
            "--port=80",
            "--target-port=8080",
            "--name=exp",
        ],
    )
    .await;
    let (_, svc) = s.admin("GET", &format!("{ns}/services/exp"), "", b"").await;
    assert_eq!(svc["spec"]["selector"]["app"], "pb", "{v}: {svc}");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080, "{v}: {svc}");

    s.ok(v, &["run", "runpod", "--image=busybox", "--restart=Never"])
        .await;
    let (code, pod) = s.admin("GET", &format!("{ns}/pods/runpod"), "", b"").await;
    assert_eq!(code, 200, "{v}: {pod}");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");

    s.ok(v, &["scale", "deployment", "pb", "--replicas=0"])
        .await;
    let (_, d) = s
        .admin(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/pb",
            "",
            b"",
        )
        .await;
    assert_eq!(d["spec"]["replicas"], 0, "{v}");
}

#[tokio::test]
async fn kubectl_1_27_typed_clients() {
    kubectl_typed_clients("1.27").await;
}

#[tokio::test]
async fn kubectl_1_32_typed_clients() {
    kubectl_typed_clients("1.32").await;
}

#[tokio::test]
async fn kubectl_1_33_typed_clients() {
    kubectl_typed_clients("1.33").await;
}

//! Defaulting of new and updated objects, as the apiserver's `SetDefaults_*` functions (and
//! the create strategies' `PrepareForCreate`) do for the served kinds.

use serde_json::{Map, Value, json};

/// Sets `obj[key] = value` when the key is absent or null.
pub(super) fn set_default(obj: &mut Map<String, Value>, key: &str, value: Value) {
    match obj.get(key) {
        None | Some(Value::Null) => {
            obj.insert(key.to_string(), value);
        }
        Some(_) => {}
    }
}

/// The object at `key`, created (as `{}`) when absent.
pub(super) fn child<'a>(
    obj: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    if !matches!(obj.get(key), Some(Value::Object(_))) {
        obj.insert(key.to_string(), Value::Object(Map::new()));
    }
    obj.get_mut(key).and_then(Value::as_object_mut)
}

fn each_object<'a>(
    obj: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    obj.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// Applies the kind's defaults to `obj` in place.
pub(crate) fn apply(kind: &str, obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    match kind {
        "Pod" => {
            if let Some(spec) = child(root, "spec") {
                pod_spec(spec);
            }
            let qos = root.get("spec").map(qos_class).unwrap_or("BestEffort");
            if let Some(status) = child(root, "status") {
                set_default(status, "phase", json!("Pending"));
                set_default(status, "qosClass", json!(qos));
            }
        }
        "Service" => {
            if let Some(spec) = child(root, "spec") {
                service_spec(spec);
            }
            if let Some(status) = child(root, "status") {
                set_default(status, "loadBalancer", json!({}));
            }
        }
        "Deployment" => {
            if let Some(spec) = child(root, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                if let Some(strategy) = child(spec, "strategy") {
                    set_default(strategy, "type", json!("RollingUpdate"));
                    if strategy.get("type") == Some(&json!("RollingUpdate")) {
                        if let Some(ru) = child(strategy, "rollingUpdate") {
                            set_default(ru, "maxUnavailable", json!("25%"));
                            set_default(ru, "maxSurge", json!("25%"));
                        }
                    }
                }
                template(spec);
            }
            child(root, "status");
        }
        "ReplicaSet" => {
            if let Some(spec) = child(root, "spec") {
                set_default(spec, "replicas", json!(1));
                template(spec);
            }
            if let Some(status) = child(root, "status") {
                set_default(status, "replicas", json!(0));
            }
        }
        "Namespace" => {
            let name = root
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .map(str::to_string);
            if let (Some(name), Some(meta)) = (name, child(root, "metadata")) {
                if let Some(labels) = child(meta, "labels") {
                    labels.insert("kubernetes.io/metadata.name".into(), json!(name));
                }
            }
            if let Some(spec) = child(root, "spec") {
                set_default(spec, "finalizers", json!(["kubernetes"]));
            }
            if let Some(status) = child(root, "status") {
                set_default(status, "phase", json!("Active"));
            }
        }
        "Job" | "CronJob" | "DaemonSet" => super::workloads::defaults(kind, root),
        "HorizontalPodAutoscaler" => super::autoscaling::defaults(root),
        "Secret" => set_default(root, "type", json!("Opaque")),
        "Node" => {
            if let Some(status) = root.get_mut("status").and_then(Value::as_object_mut) {
                if let Some(capacity) = status.get("capacity").cloned() {
                    set_default(status, "allocatable", capacity);
                }
            }
        }
        "Endpoints" => {
            for subset in each_object(root, "subsets") {
                for port in each_object(subset, "ports") {
                    set_default(port, "protocol", json!("TCP"));
                }
            }
        }
        "EndpointSlice" => {
            for port in each_object(root, "ports") {
                set_default(port, "protocol", json!("TCP"));
                set_default(port, "name", json!(""));
            }
        }
        _ => {}
    }
}

/// The DefaultTolerationSeconds admission plugin: a new pod that does not tolerate the
/// `node.kubernetes.io/not-ready` and `unreachable` NoExecute taints gets tolerations of
/// them for `seconds` (the apiserver's `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`, 300 by default).
pub(crate) fn default_tolerations(obj: &mut Value, seconds: i64) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let existing: Vec<Value> = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tolerates = |key: &str| {
        existing.iter().any(|t| {
            let field = |f: &str| t.get(f).and_then(Value::as_str).unwrap_or("");
            let effect_ok = matches!(field("effect"), "" | "NoExecute");
            let key_ok =
                field("key") == key || (field("key").is_empty() && field("operator") == "Exists");
            effect_ok && key_ok
        })
    };
    let mut added = Vec::new();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if !tolerates(key) {
            added.push(
                json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                              "tolerationSeconds": seconds}),
            );
        }
    }
    if added.is_empty() {
        return;
    }
    let mut all = existing;
    all.extend(added);
    spec.insert("tolerations".into(), Value::Array(all));
}

fn template(spec: &mut Map<String, Value>) {
    if let Some(tpl) = child(spec, "template") {
        if let Some(ps) = child(tpl, "spec") {
            pod_spec(ps);
        }
    }
}

/// Pod spec defaults (also for templates).
pub(crate) fn pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    for key in ["containers", "initContainers"] {
        for c in each_object(spec, key) {
            container(c);
        }
    }
    for c in each_object(spec, "ephemeralContainers") {
        set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
        set_default(c, "terminationMessagePolicy", json!("File"));
        set_default(c, "imagePullPolicy", json!(pull_policy(c)));
    }
    for v in each_object(spec, "volumes") {
        for (source, mode_key) in [
            ("secret", "defaultMode"),
            ("configMap", "defaultMode"),
            ("projected", "defaultMode"),
            ("downwardAPI", "defaultMode"),
        ] {
            if let Some(s) = v.get_mut(source).and_then(Value::as_object_mut) {
                set_default(s, mode_key, json!(420));
            }
        }
        if let Some(hp) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
            set_default(hp, "type", json!(""));
        }
    }
}

fn pull_policy(c: &Map<String, Value>) -> &'static str {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    // The tag is after the last ':' of the last path component; a digest pins the image.
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.rsplit_once(':') {
        None => "Always",
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn container(c: &mut Map<String, Value>) {
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    let policy = pull_policy(c);
    set_default(c, "imagePullPolicy", json!(policy));
    for p in each_object(c, "ports") {
        set_default(p, "protocol", json!("TCP"));
    }
    if let Some(res) = child(c, "resources") {
        // Requests default to limits when unset.
        if let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() {
            if let Some(requests) = child(res, "requests") {
                for (k, v) in limits {
                    set_default(requests, &k, v);
                }
            }
        }
    }
    for e in each_object(c, "env") {
        if let Some(fr) = e
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("fieldRef"))
            .and_then(Value::as_object_mut)
        {
            set_default(fr, "apiVersion", json!("v1"));
        }
    }
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(key).and_then(Value::as_object_mut) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                set_default(h, "path", json!("/"));
                set_default(h, "scheme", json!("HTTP"));
            }
        }
    }
}

/// The pod's QoS class from its containers' requests and limits.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.get(k).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        let has = |m: Option<&Map<String, Value>>, k: &str| m.is_some_and(|m| m.contains_key(k));
        for r in ["cpu", "memory"] {
            if has(requests, r) || has(limits, r) {
                any = true;
            }
            let limit = limits.and_then(|m| m.get(r));
            let request = requests.and_then(|m| m.get(r)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn service_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    for p in each_object(spec, "ports") {
        set_default(p, "protocol", json!("TCP"));
        if let Some(port) = p.get("port").cloned() {
            set_default(p, "targetPort", port);
        }
    }
    if ty != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        // ipFamilyPolicy and ipFamilies depend on the cluster's Service ranges: the API
        // server sets them with the addresses (api::dualstack)
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policies() {
        for (image, want) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.14.2", "IfNotPresent"),
            ("localhost:5000/nginx", "Always"),
            ("localhost:5000/nginx:1", "IfNotPresent"),
            ("nginx@sha256:abc", "IfNotPresent"),
        ] {
            let mut c = Map::new();
            c.insert("image".into(), json!(image));
            assert_eq!(pull_policy(&c), want, "{image}");
        }
    }

    #[test]
    fn default_tolerations_are_added_unless_present() {
        let cases = [
            (json!({"spec": {}}), 2),
            (
                json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
                1,
            ),
            (
                json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unreachable",
                                                 "operator": "Exists", "effect": "NoExecute",
                                                 "tolerationSeconds": 5}]}}),
                2,
            ),
            (
                json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/not-ready",
                                                 "operator": "Exists", "effect": "NoSchedule"}]}}),
                3,
            ),
        ];
        for (mut pod, want) in cases {
            let before = pod.clone();
            default_tolerations(&mut pod, 42);
            let tols = pod["spec"]["tolerations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert_eq!(tols.len(), want, "{before}");
            if want > 1 {
                assert!(
                    tols.iter().any(|t| t["tolerationSeconds"] == json!(42)),
                    "{pod}"
                );
            }
        }
        let unreachable_only = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                      "effect": "NoExecute", "tolerationSeconds": 5});
        let mut pod = json!({"spec": {"tolerations": [unreachable_only.clone()]}});
        default_tolerations(&mut pod, 42);
        assert_eq!(pod["spec"]["tolerations"][0], unreachable_only);
        assert_eq!(
            pod["spec"]["tolerations"][1]["key"],
            json!("node.kubernetes.io/not-ready")
        );
    }

    #[test]
    fn kinds() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "nginx", "ports": [{"containerPort": 80}],
             "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        apply("Pod", &mut pod);
        let s = &pod["spec"];
        assert_eq!(s["restartPolicy"], "Always");
        assert_eq!(s["dnsPolicy"], "ClusterFirst");
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        assert_eq!(s["schedulerName"], "default-scheduler");
        assert_eq!(s["securityContext"], json!({}));
        assert_eq!(s["enableServiceLinks"], true);
        let c = &s["containers"][0];
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["resources"]["requests"]["cpu"], "1");
        assert_eq!(pod["status"]["qosClass"], "Guaranteed");
        assert_eq!(pod["status"]["phase"], "Pending");

        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        apply("Service", &mut svc);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["sessionAffinity"], "None");
        assert_eq!(
            svc["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(svc["spec"]["internalTrafficPolicy"], "Cluster");
        assert!(svc["spec"].get("ipFamilyPolicy").is_none());
        assert!(svc["spec"].get("externalTrafficPolicy").is_none());

        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}}});
        apply("Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );

        let mut ns = json!({"metadata": {"name": "a"}});
        apply("Namespace", &mut ns);
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "a");

        let mut sec = json!({});
        apply("Secret", &mut sec);
        assert_eq!(sec["type"], "Opaque");
    }
}

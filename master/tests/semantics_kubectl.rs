//! The patches kubectl sends (client-side `apply`, `set image`, `label`, `rollout restart`,
//! `patch --type json|merge`, `apply --server-side`) against the Deployment and Service of
//! the manifests below, applied with `semantics::apply_patch`.
//!
//! The client-side apply patches are written out as kubectl computes them (three-way
//! strategic merge of last-applied, the new manifest and the live object; kubectl 1.27 and
//! 1.33 compute the same bodies: `$setElementOrder/<list>` for each merged list the patch
//! touches, `null` for dropped fields, `{"$patch":"delete", <key>}` for dropped elements).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use skiff_master::resources::{PatchError, PatchType, find, semantics};

const DEPLOYMENT: &str = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"labels":{"app":"nginx"},"name":"nginx-deployment","namespace":"default"},"spec":{"replicas":3,"selector":{"matchLabels":{"app":"nginx"}},"template":{"metadata":{"labels":{"app":"nginx"}},"spec":{"containers":[{"image":"nginx:1.14.2","name":"nginx","ports":[{"containerPort":80,"name":"web-pod-port"}]}]}}}}"#;
const SERVICE: &str = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web-service","namespace":"default"},"spec":{"ports":[{"nodePort":30080,"port":80,"protocol":"TCP","targetPort":"web-pod-port"}],"selector":{"app":"nginx"},"type":"NodePort"}}"#;

/// The live object after `kubectl apply` created it: defaulted, with the annotation.
fn created(plural: &str, group: &str, manifest: &str) -> Value {
    let info = find(group, plural).unwrap();
    let mut obj: Value = serde_json::from_str(manifest).unwrap();
    obj["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/last-applied-configuration": format!("{manifest}\n")});
    obj["metadata"]["uid"] = json!("0b8d3f9e-1111-2222-3333-444455556666");
    obj["metadata"]["resourceVersion"] = json!("1");
    semantics::prepare_create(info, &mut obj).unwrap();
    if plural == "services" {
        obj["spec"]["clusterIP"] = json!("10.96.0.20");
        obj["spec"]["clusterIPs"] = json!(["10.96.0.20"]);
    }
    obj
}

/// Applies `patch` like the HTTP layer: patch, then `prepare_update`.
fn patch(
    group: &str,
    plural: &str,
    live: &Value,
    ty: PatchType,
    body: &Value,
) -> Result<Value, PatchError> {
    let info = find(group, plural).unwrap();
    let bytes = serde_json::to_vec(body).unwrap();
    let mut out =
        semantics::apply_patch(info, live, ty, &bytes, "kubectl-client-side-apply", false)?;
    semantics::prepare_update(info, live, &mut out).unwrap_or_else(|e| panic!("{e:?}"));
    Ok(out)
}

fn annotation(manifest: &Value) -> Value {
    json!({"kubectl.kubernetes.io/last-applied-configuration": format!("{manifest}\n")})
}

fn deployment_manifest() -> Value {
    serde_json::from_str(DEPLOYMENT).unwrap()
}

#[test]
fn apply_replicas_change() {
    let live = created("deployments", "apps", DEPLOYMENT);
    let mut m = deployment_manifest();
    m["spec"]["replicas"] = json!(5);
    let body = json!({"metadata": {"annotations": annotation(&m)}, "spec": {"replicas": 5}});
    let out = patch(
        "apps",
        "deployments",
        &live,
        PatchType::StrategicMerge,
        &body,
    )
    .unwrap();
    assert_eq!(out["spec"]["replicas"], 5);
    assert_eq!(out["spec"]["template"], live["spec"]["template"]);
    assert!(semantics::spec_changed(
        find("apps", "deployments").unwrap(),
        &live,
        &out
    ));
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        format!("{m}\n")
    );
}

#[test]
fn apply_image_change() {
    let live = created("deployments", "apps", DEPLOYMENT);
    let mut m = deployment_manifest();
    m["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.16.1");
    let body = json!({"metadata": {"annotations": annotation(&m)}, "spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}],
        "containers": [{"image": "nginx:1.16.1", "name": "nginx"}]}}}});
    let out = patch(
        "apps",
        "deployments",
        &live,
        PatchType::StrategicMerge,
        &body,
    )
    .unwrap();
    let c = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(c.as_array().unwrap().len(), 1);
    assert_eq!(c[0]["image"], "nginx:1.16.1");
    assert_eq!(
        c[0]["ports"],
        json!([{"containerPort": 80, "name": "web-pod-port", "protocol": "TCP"}])
    );
    assert_eq!(c[0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c[0]["terminationMessagePath"], "/dev/termination-log");
}

#[test]
fn apply_add_env_var_and_sidecar() {
    let live = created("deployments", "apps", DEPLOYMENT);
    let body = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "nginx"}],
        "containers": [
            {"env": [{"name": "FOO", "value": "bar"}], "name": "nginx"},
            {"image": "busybox", "name": "sidecar"}]}}}});
    let out = patch(
        "apps",
        "deployments",
        &live,
        PatchType::StrategicMerge,
        &body,
    )
    .unwrap();
    let c = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(c[0]["name"], "sidecar");
    assert_eq!(c[0]["imagePullPolicy"], "Always");
    assert_eq!(c[1]["name"], "nginx");
    assert_eq!(c[1]["env"], json!([{"name": "FOO", "value": "bar"}]));
    assert_eq!(c[1]["image"], "nginx:1.14.2");
    // Then an env var added next to the first one.
    let body = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "nginx"}],
        "containers": [{"$setElementOrder/env": [{"name": "FOO"}, {"name": "BAR"}],
                        "env": [{"name": "BAR", "value": "baz"}], "name": "nginx"}]}}}});
    let out = patch(
        "apps",
        "deployments",
        &out,
        PatchType::StrategicMerge,
        &body,
    )
    .unwrap();
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][1]["env"],
        json!([{"name": "FOO", "value": "bar"}, {"name": "BAR", "value": "baz"}])
    );
}

#[test]
fn apply_remove_port() {
    // Two ports live; the manifest drops 8080.
    let mut two = deployment_manifest();
    two["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "name": "web-pod-port"}, {"containerPort": 8080, "name": "admin"}]);
    let live = created("deployments", "apps", &two.to_string());
    let body = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}],
        "containers": [{"$setElementOrder/ports": [{"containerPort": 80}],
                        "name": "nginx",
                        "ports": [{"$patch": "delete", "containerPort": 8080}]}]}}}});
    let out = patch(
        "apps",
        "deployments",
        &live,
        PatchType::StrategicMerge,
        &body,
    )
    .unwrap();
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 80, "name": "web-pod-port", "protocol": "TCP"}])
    );
    // The last port dropped: kubectl sends null for the list.
    let body = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}],
        "containers": [{"name": "nginx", "ports": null}]}}}});
    let out = patch(
        "apps",
        "deployments",
        &out,
        PatchType::StrategicMerge,
        &body,
    )
    .unwrap();
    assert!(
        out["spec"]["template"]["spec"]["containers"][0]
            .get("ports")
            .is_none()
    );
}

#[test]
fn service_apply_patches() {
    let mut two: Value = serde_json::from_str(SERVICE).unwrap();
    two["spec"]["ports"] = json!([
        {"name": "http", "nodePort": 30080, "port": 80, "protocol": "TCP", "targetPort": "web-pod-port"},
        {"name": "https", "nodePort": 30443, "port": 443, "protocol": "TCP", "targetPort": 443}]);
    let live = created("services", "", &two.to_string());
    assert_eq!(live["spec"]["sessionAffinity"], "None");
    // Drop port 443, change the nodePort of 80.
    let body = json!({"spec": {"$setElementOrder/ports": [{"port": 80}],
        "ports": [{"nodePort": 30081, "port": 80}, {"$patch": "delete", "port": 443}]}});
    let out = patch("", "services", &live, PatchType::StrategicMerge, &body).unwrap();
    assert_eq!(
        out["spec"]["ports"],
        json!([{"name": "http", "nodePort": 30081, "port": 80, "protocol": "TCP", "targetPort": "web-pod-port"}])
    );
    assert_eq!(out["spec"]["clusterIP"], "10.96.0.20");
    // Type change to ClusterIP: kubectl nulls nodePort and type.
    let body = json!({"spec": {"$setElementOrder/ports": [{"port": 80}],
        "ports": [{"nodePort": null, "port": 80}], "type": null}});
    let out = patch("", "services", &out, PatchType::StrategicMerge, &body).unwrap();
    assert_eq!(out["spec"]["type"], "ClusterIP");
    assert!(out["spec"]["ports"][0].get("nodePort").is_none());
    assert!(
        out["spec"].get("externalTrafficPolicy").is_none(),
        "dropped with the type"
    );
}

#[test]
fn other_kubectl_patches() {
    let live = created("deployments", "apps", DEPLOYMENT);
    // kubectl set image deployment/nginx-deployment nginx=nginx:1.16.1
    let body = json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx:1.16.1", "name": "nginx"}]}}}});
    let out = patch(
        "apps",
        "deployments",
        &live,
        PatchType::StrategicMerge,
        &body,
    )
    .unwrap();
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.16.1"
    );
    // kubectl rollout restart
    let body = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"}}}}});
    let out = patch(
        "apps",
        "deployments",
        &out,
        PatchType::StrategicMerge,
        &body,
    )
    .unwrap();
    assert_eq!(
        out["spec"]["template"]["metadata"]["labels"]["app"],
        "nginx"
    );
    // kubectl label deployment nginx-deployment tier=web (merge patch)
    let body = json!({"metadata": {"labels": {"tier": "web"}}});
    let out = patch("apps", "deployments", &out, PatchType::Merge, &body).unwrap();
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "nginx", "tier": "web"})
    );
    // kubectl label deployment nginx-deployment tier-
    let body = json!({"metadata": {"labels": {"tier": null}}});
    let out = patch("apps", "deployments", &out, PatchType::Merge, &body).unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"app": "nginx"}));
    // kubectl patch --type json
    let body = json!([{"op": "replace", "path": "/spec/replicas", "value": 1},
                      {"op": "add", "path": "/spec/template/spec/containers/0/args", "value": ["-g"]}]);
    let out = patch("apps", "deployments", &out, PatchType::Json, &body).unwrap();
    assert_eq!(out["spec"]["replicas"], 1);
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["-g"])
    );
    let body = json!([{"op": "test", "path": "/spec/replicas", "value": 7}]);
    assert!(matches!(
        patch("apps", "deployments", &out, PatchType::Json, &body),
        Err(PatchError::Failed(_))
    ));
    // A merge patch replaces lists whole (no merge keys).
    let body =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "x", "image": "y"}]}}}});
    let out = patch("apps", "deployments", &out, PatchType::Merge, &body).unwrap();
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["name"],
        "x"
    );
}

#[test]
fn selector_change_is_rejected() {
    let live = created("deployments", "apps", DEPLOYMENT);
    let info = find("apps", "deployments").unwrap();
    let body = br#"{"spec":{"selector":{"matchLabels":{"app":"other"}},"template":{"metadata":{"labels":{"app":"other"}}}}}"#;
    let mut out =
        semantics::apply_patch(info, &live, PatchType::StrategicMerge, body, "m", false).unwrap();
    let errs = semantics::prepare_update(info, &live, &mut out).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].field, "spec.selector");
    assert!(errs[0].message.ends_with("field is immutable"));
}

#[test]
fn server_side_apply() {
    let info = find("apps", "deployments").unwrap();
    // kubectl apply --server-side: create (the caller passes an empty original).
    let mut created = semantics::apply_patch(
        info,
        &json!({}),
        PatchType::Apply,
        DEPLOYMENT.as_bytes(),
        "kubectl",
        false,
    )
    .unwrap();
    semantics::prepare_create(info, &mut created).unwrap();
    let mf = &created["metadata"]["managedFields"][0];
    assert_eq!(mf["manager"], "kubectl");
    assert_eq!(mf["operation"], "Apply");
    assert_eq!(mf["fieldsType"], "FieldsV1");
    assert_eq!(
        mf["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"]
            ["f:image"],
        json!({})
    );
    // Same manager, new image and replicas (YAML body).
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: nginx-deployment\n  labels: {app: nginx}\nspec:\n  replicas: 4\n  selector: {matchLabels: {app: nginx}}\n  template:\n    metadata: {labels: {app: nginx}}\n    spec:\n      containers:\n      - {name: nginx, image: \"nginx:1.16.1\", ports: [{containerPort: 80, name: web-pod-port}]}\n";
    let mut out = semantics::apply_patch(
        info,
        &created,
        PatchType::Apply,
        yaml.as_bytes(),
        "kubectl",
        false,
    )
    .unwrap();
    semantics::prepare_update(info, &created, &mut out).unwrap();
    assert_eq!(out["spec"]["replicas"], 4);
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.16.1"
    );
    // Another manager changing replicas conflicts, unless forced.
    let other = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"nginx-deployment"},"spec":{"replicas":9}}"#;
    match semantics::apply_patch(info, &out, PatchType::Apply, other.as_bytes(), "hpa", false) {
        Err(PatchError::Conflict(msg)) => assert!(
            msg.contains(r#"conflict with "kubectl" using apps/v1: .spec.replicas"#),
            "{msg}"
        ),
        other => panic!("{other:?}"),
    }
    let forced =
        semantics::apply_patch(info, &out, PatchType::Apply, other.as_bytes(), "hpa", true)
            .unwrap();
    assert_eq!(forced["spec"]["replicas"], 9);
    let kubectl = forced["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kubectl")
        .unwrap();
    assert!(kubectl["fieldsV1"]["f:spec"].get("f:replicas").is_none());
}

/// Bodies captured from kubectl 1.27 and 1.33 (`kubectl apply --validate=false -f …` against a
/// stub server returning the live object; both versions sent byte-identical patches). The
/// last-applied annotation's value is elided to "LA".
#[test]
fn captured_client_side_apply_bodies() {
    let ann = json!({"kubectl.kubernetes.io/last-applied-configuration": "LA"});
    let live = created("deployments", "apps", DEPLOYMENT);
    let cases: Vec<(&str, Value, &str, Value)> = vec![
        (
            "replicas 3 -> 5",
            json!({"metadata": {"annotations": ann}, "spec": {"replicas": 5}}),
            "/spec/replicas",
            json!(5),
        ),
        (
            "image",
            json!({"metadata": {"annotations": ann}, "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "nginx"}],
                "containers": [{"image": "nginx:1.16.1", "name": "nginx"}]}}}}),
            "/spec/template/spec/containers/0/image",
            json!("nginx:1.16.1"),
        ),
        (
            "env added",
            json!({"metadata": {"annotations": ann}, "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "nginx"}],
                "containers": [{"env": [{"name": "FOO", "value": "bar"}], "name": "nginx"}]}}}}),
            "/spec/template/spec/containers/0/env",
            json!([{"name": "FOO", "value": "bar"}]),
        ),
        (
            "only port removed",
            json!({"metadata": {"annotations": ann}, "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "nginx"}],
                "containers": [{"name": "nginx", "ports": null}]}}}}),
            "/spec/template/spec/containers/0/ports",
            Value::Null,
        ),
        (
            "port added",
            json!({"metadata": {"annotations": ann}, "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "nginx"}],
                "containers": [{"$setElementOrder/ports": [{"containerPort": 80}, {"containerPort": 8080}],
                                "name": "nginx", "ports": [{"containerPort": 8080, "name": "admin"}]}]}}}}),
            "/spec/template/spec/containers/0/ports",
            json!([{"containerPort": 80, "name": "web-pod-port", "protocol": "TCP"},
                   {"containerPort": 8080, "name": "admin", "protocol": "TCP"}]),
        ),
    ];
    for (name, body, ptr, want) in cases {
        let out = patch(
            "apps",
            "deployments",
            &live,
            PatchType::StrategicMerge,
            &body,
        )
        .unwrap();
        assert_eq!(
            out.pointer(ptr).cloned().unwrap_or(Value::Null),
            want,
            "{name}"
        );
        assert_eq!(
            out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            "LA",
            "{name}"
        );
        assert_eq!(out["spec"]["selector"], live["spec"]["selector"], "{name}");
    }

    // One of two ports removed.
    let mut two = deployment_manifest();
    two["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([
        {"containerPort": 80, "name": "web-pod-port"}, {"containerPort": 8080, "name": "admin"}]);
    let live = created("deployments", "apps", &two.to_string());
    let body = json!({"metadata": {"annotations": ann}, "spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}],
        "containers": [{"$setElementOrder/ports": [{"containerPort": 80}], "name": "nginx",
                        "ports": [{"$patch": "delete", "containerPort": 8080}]}]}}}});
    let out = patch(
        "apps",
        "deployments",
        &live,
        PatchType::StrategicMerge,
        &body,
    )
    .unwrap();
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 80, "name": "web-pod-port", "protocol": "TCP"}])
    );

    // Service: nodePort 30080 -> 30081 and a second port added.
    let live = created("services", "", SERVICE);
    let body = json!({"metadata": {"annotations": ann}, "spec": {
        "$setElementOrder/ports": [{"port": 80}, {"port": 443}],
        "ports": [{"nodePort": 30081, "port": 80},
                  {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443}]}});
    let info = find("", "services").unwrap();
    let bytes = serde_json::to_vec(&body).unwrap();
    let mut out = semantics::apply_patch(
        info,
        &live,
        PatchType::StrategicMerge,
        &bytes,
        "kubectl-client-side-apply",
        false,
    )
    .unwrap();
    assert_eq!(
        out["spec"]["ports"],
        json!([{"nodePort": 30081, "port": 80, "protocol": "TCP", "targetPort": "web-pod-port"},
               {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443}])
    );
    // The first port has no name, which a two-port Service needs: the apiserver rejects this
    // too (kubectl users must name ports), so validation must say so.
    let errs = semantics::prepare_update(info, &live, &mut out).unwrap_err();
    assert_eq!(errs[0].field, "spec.ports[0].name");
    assert_eq!(errs[0].message, "Required value");
}

/// `kubectl apply --server-side -f` (1.27 and 1.33): an apply by manager `kubectl` with the
/// manifest as JSON, then, when the live object carries a last-applied annotation, an apply by
/// `kubectl-last-applied` of just that annotation.
#[test]
fn captured_server_side_apply_bodies() {
    let info = find("apps", "deployments").unwrap();
    let live = created("deployments", "apps", DEPLOYMENT);
    let body = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"labels":{"app":"nginx"},"name":"nginx-deployment","namespace":"default"},"spec":{"replicas":3,"selector":{"matchLabels":{"app":"nginx"}},"template":{"metadata":{"labels":{"app":"nginx"}},"spec":{"containers":[{"image":"nginx:1.14.2","name":"nginx","ports":[{"containerPort":80,"name":"web-pod-port"}]}]}}}}"#;
    let mut out = semantics::apply_patch(
        info,
        &live,
        PatchType::Apply,
        body.as_bytes(),
        "kubectl",
        false,
    )
    .unwrap();
    semantics::prepare_update(info, &live, &mut out).unwrap();
    assert!(!semantics::spec_changed(info, &live, &out));
    let body2 = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"LA"},"name":"nginx-deployment","namespace":"default"}}"#;
    let mut out2 = semantics::apply_patch(
        info,
        &out,
        PatchType::Apply,
        body2.as_bytes(),
        "kubectl-last-applied",
        false,
    )
    .unwrap();
    semantics::prepare_update(info, &out, &mut out2).unwrap();
    assert_eq!(
        out2["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "LA"
    );
    assert_eq!(out2["spec"], out["spec"]);
    let managers: Vec<&str> = out2["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, vec!["kubectl", "kubectl-last-applied"]);
}

/// `kubectl apply` switching the strategy to Recreate sends `$retainKeys` (patchStrategy
/// retainKeys on DeploymentStrategy).
#[test]
fn retain_keys_strategy_switch() {
    let live = created("deployments", "apps", DEPLOYMENT);
    let body = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"}}});
    let out = patch(
        "apps",
        "deployments",
        &live,
        PatchType::StrategicMerge,
        &body,
    )
    .unwrap();
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
}

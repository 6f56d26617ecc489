//! Bad input and access control against the in-process API server: each case gets the
//! right metav1.Status and stores nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;

use api_common::start;
use serde_json::{Value, json};

const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deploy(name: &str) -> Vec<u8> {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    .to_string()
    .into_bytes()
}

fn reason(v: &Value) -> &str {
    assert_eq!(v["kind"], "Status", "{v}");
    v["reason"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_nothing_stored() {
    let s = start().await;
    // 401 without or with a wrong token
    let (code, body) = s.request("GET", "/api/v1/namespaces", None, "", b"").await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"Unauthorized\""));
    let (code, _) = s
        .request("GET", "/api/v1/namespaces", Some("nope"), "", b"")
        .await;
    assert_eq!(code, 401);
    // 403 for the node token on deployments, but nodes are fine
    let node = s.handle.node_token.clone();
    let (code, body) = s.request("GET", DEPLOYS, Some(&node), "", b"").await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("\"Forbidden\""));
    let (code, _) = s
        .request(
            "POST",
            DEPLOYS,
            Some(&node),
            "application/json",
            &deploy("x"),
        )
        .await;
    assert_eq!(code, 403);
    let (code, _) = s
        .request("GET", "/api/v1/nodes", Some(&node), "", b"")
        .await;
    assert_eq!(code, 200);
    let (code, _) = s
        .request(
            "GET",
            "/api/v1/namespaces/kube-node-lease/pods",
            Some(&node),
            "",
            b"",
        )
        .await;
    assert_eq!(code, 200);

    // 201 then 409 AlreadyExists
    let (code, created) = s
        .admin("POST", DEPLOYS, "application/json", &deploy("web"))
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["metadata"]["uid"].as_str().unwrap().len(), 36);
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, v) = s
        .admin("POST", DEPLOYS, "application/json", &deploy("web"))
        .await;
    assert_eq!((code, reason(&v)), (409, "AlreadyExists"));

    // 409 Conflict on a stale resourceVersion; the fresh one works and bumps generation
    let mut upd = created.clone();
    upd["spec"]["replicas"] = json!(4);
    let (code, v) = s
        .admin(
            "PUT",
            &format!("{DEPLOYS}/web"),
            "application/json",
            upd.to_string().as_bytes(),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["metadata"]["generation"], 2);
    let (code, v) = s
        .admin(
            "PUT",
            &format!("{DEPLOYS}/web"),
            "application/json",
            upd.to_string().as_bytes(),
        )
        .await;
    assert_eq!((code, reason(&v)), (409, "Conflict"));
    assert_ne!(rv, "");

    let revision_before = {
        use skiff_master::store::Store;
        s.store.revision().await.unwrap()
    };
    // 422 with causes for an invalid name
    let (code, v) = s
        .admin("POST", DEPLOYS, "application/json", &deploy("Bad_Name"))
        .await;
    assert_eq!((code, reason(&v)), (422, "Invalid"), "{v}");
    assert_eq!(v["details"]["causes"][0]["field"], "metadata.name");
    // 400 for malformed JSON and YAML, wrong kind, namespace mismatch
    let (code, v) = s
        .admin("POST", DEPLOYS, "application/json", b"{\"apiVersion\": ")
        .await;
    assert_eq!((code, reason(&v)), (400, "BadRequest"));
    let (code, v) = s
        .admin("POST", DEPLOYS, "application/yaml", b"a: [b\n")
        .await;
    assert_eq!((code, reason(&v)), (400, "BadRequest"));
    let wrong = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}).to_string();
    let (code, v) = s
        .admin("POST", DEPLOYS, "application/json", wrong.as_bytes())
        .await;
    assert_eq!((code, reason(&v)), (400, "BadRequest"));
    let mut other_ns: Value = serde_json::from_slice(&deploy("ns")).unwrap();
    other_ns["metadata"]["namespace"] = json!("kube-system");
    let (code, v) = s
        .admin(
            "POST",
            DEPLOYS,
            "application/json",
            other_ns.to_string().as_bytes(),
        )
        .await;
    assert_eq!((code, reason(&v)), (400, "BadRequest"));
    // 404 for a missing namespace and a missing object, 415 for an unknown content type
    let (code, v) = s
        .admin(
            "POST",
            "/apis/apps/v1/namespaces/nope/deployments",
            "application/json",
            &deploy("x"),
        )
        .await;
    assert_eq!((code, reason(&v)), (404, "NotFound"));
    let (code, v) = s.admin("GET", &format!("{DEPLOYS}/missing"), "", b"").await;
    assert_eq!((code, reason(&v)), (404, "NotFound"));
    assert_eq!(v["message"], "deployments.apps \"missing\" not found");
    let (code, v) = s.admin("POST", DEPLOYS, "text/plain", &deploy("x")).await;
    assert_eq!((code, reason(&v)), (415, "UnsupportedMediaType"));
    let (code, v) = s
        .admin(
            "PATCH",
            &format!("{DEPLOYS}/web"),
            "application/json",
            b"{}",
        )
        .await;
    assert_eq!((code, reason(&v)), (415, "UnsupportedMediaType"));
    // 413 for a 4 MiB body
    let mut big = deploy("big");
    big.extend(std::iter::repeat_n(b' ', 4 * 1024 * 1024));
    let (code, v) = s.admin("POST", DEPLOYS, "application/json", &big).await;
    assert_eq!((code, reason(&v)), (413, "RequestEntityTooLarge"));
    // 400 for a bad selector
    let (code, v) = s
        .admin(
            "GET",
            &format!("{DEPLOYS}?labelSelector=a%20in%20b"),
            "",
            b"",
        )
        .await;
    assert_eq!((code, reason(&v)), (400, "BadRequest"));
    // nothing of the above was stored
    let revision_after = {
        use skiff_master::store::Store;
        s.store.revision().await.unwrap()
    };
    assert_eq!(revision_before, revision_after);
    let (_, list) = s.admin("GET", DEPLOYS, "", b"").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_allocation_and_watch_gone() {
    let s = start().await;
    let svcs = "/api/v1/namespaces/default/services";
    let svc = |name: &str, extra: Value| {
        let mut v = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                           "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        json_patch::merge(&mut v, &extra);
        v.to_string().into_bytes()
    };
    let (code, a) = s
        .admin(
            "POST",
            svcs,
            "application/json",
            &svc(
                "a",
                json!({"spec": {"ports": [{"port": 80, "nodePort": 30080}]}}),
            ),
        )
        .await;
    assert_eq!(code, 201, "{a}");
    let ip = a["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.96.") && ip != "10.96.0.1", "{ip}");
    // explicit nodePort conflict, clusterIP conflict, out of range → 422
    let (code, v) = s
        .admin(
            "POST",
            svcs,
            "application/json",
            &svc(
                "b",
                json!({"spec": {"ports": [{"port": 80, "nodePort": 30080}]}}),
            ),
        )
        .await;
    assert_eq!((code, reason(&v)), (422, "Invalid"), "{v}");
    let (code, v) = s
        .admin(
            "POST",
            svcs,
            "application/json",
            &svc("b", json!({"spec": {"clusterIP": ip}})),
        )
        .await;
    assert_eq!((code, reason(&v)), (422, "Invalid"), "{v}");
    let (code, v) = s
        .admin(
            "POST",
            svcs,
            "application/json",
            &svc("b", json!({"spec": {"clusterIP": "192.168.0.1"}})),
        )
        .await;
    assert_eq!((code, reason(&v)), (422, "Invalid"), "{v}");
    // headless and auto-allocated
    let (code, h) = s
        .admin(
            "POST",
            svcs,
            "application/json",
            &svc(
                "h",
                json!({"spec": {"type": "ClusterIP", "clusterIP": "None"}}),
            ),
        )
        .await;
    assert_eq!(code, 201, "{h}");
    assert_eq!(h["spec"]["clusterIP"], "None");
    let (code, b) = s
        .admin("POST", svcs, "application/json", &svc("b", json!({})))
        .await;
    assert_eq!(code, 201, "{b}");
    let np = b["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&np) && np != 30080);
    // delete releases
    let (code, _) = s.admin("DELETE", &format!("{svcs}/a"), "", b"").await;
    assert_eq!(code, 200);
    let (code, v) = s
        .admin(
            "POST",
            svcs,
            "application/json",
            &svc(
                "c",
                json!({"spec": {"clusterIP": ip, "ports": [{"port": 80, "nodePort": 30080}]}}),
            ),
        )
        .await;
    assert_eq!(code, 201, "{v}");

    // watch from a compacted revision: an ERROR event with a 410 Status
    let rev = {
        use skiff_master::store::Store;
        s.store.revision().await.unwrap()
    };
    s.store.compact(rev).unwrap();
    let admin = s.handle.admin_token.clone();
    let (code, body) = s
        .request(
            "GET",
            &format!("{svcs}?watch=true&resourceVersion=2&timeoutSeconds=1"),
            Some(&admin),
            "",
            b"",
        )
        .await;
    assert_eq!(code, 200);
    let ev: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    // a watch from "0" lists then ends at the timeout
    let (code, body) = s
        .request(
            "GET",
            &format!("{svcs}?watch=true&timeoutSeconds=1&labelSelector=!x"),
            Some(&admin),
            "",
            b"",
        )
        .await;
    assert_eq!(code, 200);
    let types: Vec<String> = body
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(types.len(), 4, "{types:?}"); // kubernetes, h, b, c
    assert!(types.iter().all(|t| t == "ADDED"));
    s.handle.shutdown().await;
}

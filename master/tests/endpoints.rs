//! The endpoints and endpointslice controllers against a real API server, read back with the
//! kube client and kubectl: named targetPorts resolved per pod, ready and not-ready
//! addresses, publishNotReadyAddresses, pod deletion, user-managed Endpoints of Services
//! without a selector, and the `kubernetes` Service's endpoints.
//!
//! The pods are bound to a Node no simulated kubelet runs, so the test itself plays the
//! kubelet and decides which pods are ready.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;
mod cluster_common;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_master::controllers::Settings;

const WAIT: Duration = Duration::from_secs(15);

/// (ip, port, ready) of every address of the Endpoints.
fn endpoint_triples(ep: &Endpoints) -> BTreeSet<(String, i32, bool)> {
    let mut out = BTreeSet::new();
    for s in ep.subsets.iter().flatten() {
        for p in s.ports.iter().flatten() {
            for a in s.addresses.iter().flatten() {
                out.insert((a.ip.clone(), p.port, true));
            }
            for a in s.not_ready_addresses.iter().flatten() {
                out.insert((a.ip.clone(), p.port, false));
            }
        }
    }
    out
}

/// (ip, port, ready, serving, terminating) of every endpoint of the Service's slices.
fn slice_tuples(slices: &[EndpointSlice]) -> BTreeSet<(String, i32, bool, bool, bool)> {
    let mut out = BTreeSet::new();
    for s in slices {
        for p in s.ports.iter().flatten() {
            for e in &s.endpoints {
                let c = e.conditions.clone().unwrap_or_default();
                out.insert((
                    e.addresses[0].clone(),
                    p.port.unwrap_or(0),
                    c.ready.unwrap_or(false),
                    c.serving.unwrap_or(false),
                    c.terminating.unwrap_or(false),
                ));
            }
        }
    }
    out
}

fn triples(v: &[(&str, i32, bool)]) -> BTreeSet<(String, i32, bool)> {
    v.iter()
        .map(|(ip, p, r)| (ip.to_string(), *p, *r))
        .collect()
}

async fn create_pod(pods: &Api<Pod>, name: &str, app: &str, port: i32) {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": "manual-node", "containers": [{"name": "web", "image": "nginx",
                 "ports": [{"name": "web-pod-port", "containerPort": port}]}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

/// Plays the kubelet: the pod runs with `ip` (none: not yet) and is ready or not.
async fn set_status(pods: &Api<Pod>, name: &str, ip: Option<&str>, ready: bool) {
    let ready = if ready { "True" } else { "False" };
    let mut status = json!({"phase": "Running", "conditions": [
        {"type": "Ready", "status": ready},
        {"type": "ContainersReady", "status": ready}]});
    if let Some(ip) = ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await
    .unwrap();
}

async fn service_slices(client: &kube::Client, svc: &str) -> Vec<EndpointSlice> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_slices_follow_the_selected_pods() {
    let cluster = cluster_common::SimCluster::start(Settings::default()).await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "manual-node", "labels": {"topology.kubernetes.io/zone": "zone-a"}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Two pods name different container ports "web-pod-port".
    create_pod(&pods, "a", "web", 8080).await;
    create_pod(&pods, "b", "web", 9090).await;
    create_pod(&pods, "c", "web", 8080).await;
    create_pod(&pods, "no-ip", "web", 8080).await;
    create_pod(&pods, "other", "other", 8080).await;
    set_status(&pods, "a", Some("10.244.0.10"), true).await;
    set_status(&pods, "b", Some("10.244.0.11"), true).await;
    set_status(&pods, "c", Some("10.244.0.12"), false).await;
    set_status(&pods, "no-ip", None, true).await;
    set_status(&pods, "other", Some("10.244.0.13"), true).await;

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    for (name, publish, target) in [
        ("web", false, json!("web-pod-port")),
        ("web-all", true, json!(8080)),
    ] {
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "publishNotReadyAddresses": publish,
                     "ports": [{"name": "http", "port": 80, "targetPort": target}]},
        }))
        .unwrap();
        services.create(&PostParams::default(), &svc).await.unwrap();
    }

    let eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let expect_endpoints = |svc: &'static str, want: BTreeSet<(String, i32, bool)>| {
        let eps = eps.clone();
        let cluster = &cluster;
        async move {
            cluster
                .wait_for(&format!("endpoints of {svc}: {want:?}"), WAIT, || async {
                    let ep = eps.get_opt(svc).await.unwrap()?;
                    (endpoint_triples(&ep) == want).then_some(ep)
                })
                .await
        }
    };
    let ep = expect_endpoints(
        "web",
        triples(&[
            ("10.244.0.10", 8080, true),
            ("10.244.0.11", 9090, true),
            ("10.244.0.12", 8080, false),
        ]),
    )
    .await;
    assert_eq!(ep.metadata.labels.unwrap()["tier"], "front");
    let addr = ep
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
        .next()
        .unwrap();
    assert_eq!(addr.node_name.as_deref(), Some("manual-node"));
    let target = addr.target_ref.clone().unwrap();
    assert_eq!(target.kind.as_deref(), Some("Pod"));
    let port = &ep.subsets.as_ref().unwrap()[0].ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.protocol.as_deref()),
        (Some("http"), Some("TCP"))
    );
    // publishNotReadyAddresses: the not-ready pod is an address too; numeric targetPort.
    expect_endpoints(
        "web-all",
        triples(&[
            ("10.244.0.10", 8080, true),
            ("10.244.0.11", 8080, true),
            ("10.244.0.12", 8080, true),
        ]),
    )
    .await;

    // The EndpointSlices say the same, with conditions, zone and ownership.
    let web_uid = services.get("web").await.unwrap().metadata.uid.unwrap();
    let want_slices: BTreeSet<_> = [
        ("10.244.0.10", 8080, true, true, false),
        ("10.244.0.11", 9090, true, true, false),
        ("10.244.0.12", 8080, false, false, false),
    ]
    .iter()
    .map(|(ip, p, r, s, t)| (ip.to_string(), *p, *r, *s, *t))
    .collect();
    let slices = cluster
        .wait_for("slices of web", WAIT, || async {
            let s = service_slices(&client, "web").await;
            (slice_tuples(&s) == want_slices).then_some(s)
        })
        .await;
    assert_eq!(slices.len(), 2, "one slice per port set: {slices:?}");
    for s in &slices {
        assert_eq!(s.address_type, "IPv4");
        let labels = s.metadata.labels.clone().unwrap();
        assert_eq!(
            labels["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        assert_eq!(labels["tier"], "front");
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Service", web_uid.as_str(), Some(true))
        );
        for e in &s.endpoints {
            assert_eq!(e.zone.as_deref(), Some("zone-a"));
            assert_eq!(e.node_name.as_deref(), Some("manual-node"));
            assert_eq!(s.ports.as_ref().unwrap()[0].name.as_deref(), Some("http"));
        }
    }

    // kubectl shows them.
    let out = cluster.kubectl(&["get", "endpoints", "web"]).await;
    assert!(
        out.contains("10.244.0.10:8080") && out.contains("10.244.0.11:9090"),
        "{out}"
    );
    let out = cluster.kubectl(&["describe", "svc", "web"]).await;
    let line = out
        .lines()
        .find(|l| l.starts_with("Endpoints:"))
        .unwrap_or_default();
    assert!(
        line.contains("10.244.0.10:8080") && line.contains("10.244.0.11:9090"),
        "{out}"
    );
    let out = cluster
        .kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ])
        .await;
    assert!(out.contains("IPv4") && out.contains("10.244.0.11"), "{out}");

    // Readiness flips move addresses between the lists; a pod that gets an IP appears.
    set_status(&pods, "a", Some("10.244.0.10"), false).await;
    set_status(&pods, "c", Some("10.244.0.12"), true).await;
    set_status(&pods, "no-ip", Some("10.244.0.14"), true).await;
    expect_endpoints(
        "web",
        triples(&[
            ("10.244.0.10", 8080, false),
            ("10.244.0.11", 9090, true),
            ("10.244.0.12", 8080, true),
            ("10.244.0.14", 8080, true),
        ]),
    )
    .await;

    // A pod whose labels stop matching, and a deleted pod, leave.
    pods.patch(
        "no-ip",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"app": "elsewhere"}}})),
    )
    .await
    .unwrap();
    pods.delete("b", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    expect_endpoints(
        "web",
        triples(&[("10.244.0.10", 8080, false), ("10.244.0.12", 8080, true)]),
    )
    .await;
    cluster
        .wait_for("slices without b", WAIT, || async {
            let s = service_slices(&client, "web").await;
            let ips: BTreeSet<String> = slice_tuples(&s).into_iter().map(|t| t.0).collect();
            (ips == BTreeSet::from(["10.244.0.10".to_string(), "10.244.0.12".to_string()])
                && s.len() == 1)
                .then_some(())
        })
        .await;

    // A Service without a selector keeps the Endpoints its user writes.
    let manual: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "manual"},
        "spec": {"ports": [{"port": 80}]},
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &manual)
        .await
        .unwrap();
    let user_ep: Endpoints = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "manual"},
        "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 8000}]}],
    }))
    .unwrap();
    eps.create(&PostParams::default(), &user_ep).await.unwrap();
    // Then a change the controller must act on, so it has seen "manual" by the time it is
    // done with it (one worker, events in order).
    set_status(&pods, "a", Some("10.244.0.10"), true).await;
    expect_endpoints(
        "web",
        triples(&[("10.244.0.10", 8080, true), ("10.244.0.12", 8080, true)]),
    )
    .await;
    assert_eq!(
        endpoint_triples(&eps.get("manual").await.unwrap()),
        triples(&[("192.0.2.10", 8000, true)])
    );
    assert!(service_slices(&client, "manual").await.is_empty());

    // The kubernetes Service points at the API server.
    let addr = cluster.server.handle.addr;
    let kep = cluster
        .wait_for("kubernetes endpoints", WAIT, || async {
            eps.get_opt("kubernetes").await.unwrap()
        })
        .await;
    assert_eq!(
        endpoint_triples(&kep),
        triples(&[(&addr.ip().to_string(), i32::from(addr.port()), true)])
    );
    assert_eq!(service_slices(&client, "kubernetes").await.len(), 1);

    // Deleting the Service removes its Endpoints (the slices go with their owner).
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    cluster
        .wait_for("web endpoints gone", WAIT, || async {
            eps.get_opt("web").await.unwrap().is_none().then_some(())
        })
        .await;
    cluster
        .wait_for("web slices gone", WAIT, || async {
            service_slices(&client, "web")
                .await
                .is_empty()
                .then_some(())
        })
        .await;
}

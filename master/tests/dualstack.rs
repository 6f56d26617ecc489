//! IPv4/IPv6 dual-stack in the master, driven by kubectl 1.32 against a real API server:
//! Service ipFamilyPolicy / ipFamilies / clusterIPs on a dual-stack and on single-stack
//! masters (upstream's messages for what is refused), upgrade to and downgrade from
//! dual-stack, addresses released on delete and never reused across a master restart; node
//! IPAM handing out one podCIDR per family; EndpointSlices per family over pods with IPv4
//! and IPv6 podIPs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;
mod cluster_common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use api_common::TestServer;
use cluster_common::{NodeSpec, SimCluster};
use k8s_openapi::api::core::v1::{Endpoints, Node};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use skiff_master::controllers::Settings;

const WAIT: Duration = Duration::from_secs(20);
const KUBECTL: &str = "1.32";
const DUAL: &str = "10.96.0.0/16,fd00:10:96::/108";

async fn apply(server: &TestServer, manifest: &str) -> std::process::Output {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let path = server.dir.path().join(format!("svc-{n}.yaml"));
    std::fs::write(&path, manifest).unwrap();
    server
        .kubectl(KUBECTL, &["apply", "-f", path.to_str().unwrap()], &[])
        .await
}

/// A Service manifest named `name` with `spec` fields (YAML flow style) added.
fn service(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{selector: {{app: {name}}}, ports: [{{port: 80}}]{spec}}}\n"
    )
}

/// (ipFamilyPolicy, ipFamilies, clusterIPs) of a Service, read with kubectl.
async fn families(server: &TestServer, name: &str) -> (String, Vec<String>, Vec<String>) {
    let out = server
        .ok(KUBECTL, &["get", "svc", name, "-o", "json"])
        .await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let list = |k: &str| -> Vec<String> {
        v["spec"][k]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        v["spec"]["clusterIP"].as_str(),
        list("clusterIPs").first().map(String::as_str),
        "{name}: clusterIP is clusterIPs[0]"
    );
    (
        v["spec"]["ipFamilyPolicy"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        list("ipFamilies"),
        list("clusterIPs"),
    )
}

fn family_of(ip: &str) -> &'static str {
    match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

fn in_range(ip: &str) -> bool {
    match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => v4.octets()[..2] == [10, 96],
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[..5] == [0xfd00, 0x10, 0x96, 0, 0] && s[5] >> 4 == 0
        }
    }
}

/// `kubectl patch` of the Service's ipFamilyPolicy.
async fn set_policy(server: &TestServer, name: &str, policy: &str) {
    let patch = format!(r#"{{"spec":{{"ipFamilyPolicy":"{policy}"}}}}"#);
    server
        .ok(KUBECTL, &["patch", "svc", name, "-p", &patch])
        .await;
}

/// The value of `key:` in `kubectl describe` output.
fn field(described: &str, key: &str) -> String {
    described
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key} in {described}"))
}

fn stderr(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_on_a_dual_stack_master() {
    let mut server = api_common::start_with(DUAL).await;
    let manifests = [
        service("single", ""),
        service("prefer", ", ipFamilyPolicy: PreferDualStack"),
        service("require", ", ipFamilyPolicy: RequireDualStack"),
        service("six", ", ipFamilies: [IPv6]"),
        service(
            "sixfirst",
            ", ipFamilyPolicy: PreferDualStack, ipFamilies: [IPv6, IPv4]",
        ),
        service(
            "fixed",
            ", ipFamilyPolicy: RequireDualStack, clusterIPs: [10.96.0.50, \"fd00:10:96::50\"]",
        ),
        "apiVersion: v1\nkind: Service\nmetadata: {name: bare}\nspec: {clusterIP: None, ports: [{port: 80}]}\n"
            .to_string(),
        service("headless", ", clusterIP: None, ipFamilyPolicy: PreferDualStack"),
    ];
    for m in &manifests {
        let out = apply(&server, m).await;
        assert!(out.status.success(), "{m}: {}", stderr(&out));
    }
    // (name, policy, families); addresses one per family, each in its family's range
    let want: [(&str, &str, &[&str]); 8] = [
        ("single", "SingleStack", &["IPv4"]),
        ("prefer", "PreferDualStack", &["IPv4", "IPv6"]),
        ("require", "RequireDualStack", &["IPv4", "IPv6"]),
        ("six", "SingleStack", &["IPv6"]),
        ("sixfirst", "PreferDualStack", &["IPv6", "IPv4"]),
        ("fixed", "RequireDualStack", &["IPv4", "IPv6"]),
        ("bare", "RequireDualStack", &["IPv4", "IPv6"]),
        ("headless", "PreferDualStack", &["IPv4", "IPv6"]),
    ];
    let mut held = BTreeSet::new();
    for (name, policy, fams) in want {
        let (p, f, ips) = families(&server, name).await;
        assert_eq!(
            (p.as_str(), f.clone()),
            (policy, fams.iter().map(|s| s.to_string()).collect()),
            "{name}"
        );
        if name == "bare" || name == "headless" {
            assert_eq!(ips, ["None"], "{name}");
            continue;
        }
        let ip_fams: Vec<&str> = ips.iter().map(|ip| family_of(ip)).collect();
        assert_eq!(ip_fams, fams, "{name}: {ips:?}");
        for ip in &ips {
            assert!(in_range(ip), "{name}: {ip} out of range");
            assert!(held.insert(ip.clone()), "{ip} handed out twice");
        }
    }
    assert_eq!(
        families(&server, "fixed").await.2,
        ["10.96.0.50", "fd00:10:96::50"]
    );
    // the kubernetes Service stays IPv4 in a v4-first cluster
    assert_eq!(
        families(&server, "kubernetes").await,
        (
            "SingleStack".to_string(),
            vec!["IPv4".to_string()],
            vec!["10.96.0.1".to_string()]
        )
    );
    // kubectl shows the first clusterIP, and describe both
    let table = server.ok(KUBECTL, &["get", "svc", "sixfirst"]).await;
    let (_, _, six_ips) = families(&server, "sixfirst").await;
    assert!(table.contains(&six_ips[0]), "{table}");
    let described = server.ok(KUBECTL, &["describe", "svc", "prefer"]).await;
    let (_, _, prefer_ips) = families(&server, "prefer").await;
    assert_eq!(field(&described, "IP Families"), "IPv4,IPv6", "{described}");
    assert_eq!(
        field(&described, "IPs"),
        prefer_ips.join(","),
        "{described}"
    );
    assert_eq!(field(&described, "IP"), prefer_ips[0], "{described}");
    assert_eq!(field(&described, "IP Family Policy"), "PreferDualStack");

    // refusals, worded as upstream
    let cases = [
        (
            service("out", ", ipFamilies: [IPv6], clusterIP: \"fd00:99::5\""),
            "Service \"out\" is invalid: spec.clusterIPs: Invalid value: []string{\"fd00:99::5\"}: failed to allocate IP fd00:99::5: the provided IP (fd00:99::5) is not in the valid range. The range of valid IPs is fd00:10:96::/108",
        ),
        (
            service(
                "taken",
                ", ipFamilyPolicy: PreferDualStack, clusterIPs: [10.96.0.51, \"fd00:10:96::50\"]",
            ),
            "Service \"taken\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.0.51\", \"fd00:10:96::50\"}: failed to allocate IP fd00:10:96::50: provided IP is already allocated",
        ),
        (
            service("two", ", ipFamilies: [IPv4, IPv6]"),
            "Service \"two\" is invalid: spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
        ),
    ];
    for (m, want) in cases {
        let err = stderr(&apply(&server, &m).await);
        assert!(err.contains(want), "{m}\nwant: {want}\ngot: {err}");
    }

    // SingleStack → PreferDualStack allocates the second address; back releases it
    set_policy(&server, "single", "PreferDualStack").await;
    let (p, f, ips) = families(&server, "single").await;
    assert_eq!(
        (p.as_str(), f.len(), ips.len()),
        ("PreferDualStack", 2, 2),
        "{ips:?}"
    );
    assert_eq!(family_of(&ips[1]), "IPv6");
    assert!(held.insert(ips[1].clone()), "{} handed out twice", ips[1]);
    let released = ips[1].clone();
    set_policy(&server, "single", "SingleStack").await;
    let (p, f, ips2) = families(&server, "single").await;
    assert_eq!(
        (p.as_str(), f, ips2),
        (
            "SingleStack",
            vec!["IPv4".to_string()],
            vec![ips[0].clone()]
        )
    );
    held.remove(&released);
    // … and the released address can be had again
    let m = service(
        "again",
        &format!(", ipFamilies: [IPv6], clusterIP: \"{released}\""),
    );
    let out = apply(&server, &m).await;
    assert!(out.status.success(), "{}", stderr(&out));
    held.insert(released.clone());
    // deleting a Service releases both its addresses
    server.ok(KUBECTL, &["delete", "svc", "fixed"]).await;
    let m = service(
        "refixed",
        ", ipFamilyPolicy: RequireDualStack, clusterIPs: [10.96.0.50, \"fd00:10:96::50\"]",
    );
    let out = apply(&server, &m).await;
    assert!(out.status.success(), "{}", stderr(&out));

    // a restarted master hands out none of the addresses in use
    server = server.restart().await;
    let all = server
        .ok(
            KUBECTL,
            &[
                "get",
                "svc",
                "-A",
                "-o",
                "jsonpath={.items[*].spec.clusterIPs}",
            ],
        )
        .await;
    let mut before = BTreeSet::new();
    for list in all.split_whitespace() {
        let ips: Vec<String> = serde_json::from_str(list).unwrap();
        before.extend(ips.into_iter().filter(|ip| ip != "None"));
    }
    assert!(
        before.contains("fd00:10:96::50") && before.contains(&released),
        "{before:?}"
    );
    for i in 0..6 {
        let name = format!("after{i}");
        let out = apply(
            &server,
            &service(&name, ", ipFamilyPolicy: RequireDualStack"),
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let (_, _, ips) = families(&server, &name).await;
        assert_eq!(ips.len(), 2);
        for ip in ips {
            assert!(before.insert(ip.clone()), "{ip} reused after the restart");
        }
    }
    server.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_on_single_stack_masters() {
    let server = api_common::start_with("10.96.0.0/16").await;
    let err = stderr(
        &apply(
            &server,
            &service("require", ", ipFamilyPolicy: RequireDualStack"),
        )
        .await,
    );
    assert!(
        err.contains("Service \"require\" is invalid: spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services"),
        "{err}"
    );
    let err = stderr(&apply(&server, &service("six", ", ipFamilies: [IPv6]")).await);
    assert!(
        err.contains("Service \"six\" is invalid: spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster"),
        "{err}"
    );
    for m in [
        service("prefer", ", ipFamilyPolicy: PreferDualStack"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: bare}\nspec: {clusterIP: None, ports: [{port: 80}]}\n".into(),
    ] {
        let out = apply(&server, &m).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (p, f, ips) = families(&server, "prefer").await;
    assert_eq!(
        (p.as_str(), f),
        ("PreferDualStack", vec!["IPv4".to_string()])
    );
    assert_eq!((ips.len(), family_of(&ips[0])), (1, "IPv4"));
    // headless without selector: both families even here, as upstream
    let (p, f, _) = families(&server, "bare").await;
    assert_eq!((p.as_str(), f.len()), ("RequireDualStack", 2));
    server.handle.shutdown().await;

    // an IPv6-only master: IPv6 by default, the kubernetes Service at the range's first
    let server = api_common::start_with("fd00:10:96::/64").await;
    let out = apply(&server, &service("web", "")).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (p, f, ips) = families(&server, "web").await;
    assert_eq!((p.as_str(), f), ("SingleStack", vec!["IPv6".to_string()]));
    assert!(ips[0].starts_with("fd00:10:96::"), "{ips:?}");
    assert_eq!(families(&server, "kubernetes").await.2, ["fd00:10:96::1"]);
    let err = stderr(&apply(&server, &service("four", ", ipFamilies: [IPv4]")).await);
    assert!(
        err.contains("spec.ipFamilies[0]: Invalid value: \"IPv4\": not configured on this cluster"),
        "{err}"
    );
    server.handle.shutdown().await;
}

async fn pod_cidrs(nodes: &Api<Node>, name: &str) -> Option<Vec<String>> {
    let n = nodes.get_opt(name).await.ok()??;
    let spec = n.spec?;
    let list = spec.pod_cidrs.filter(|l| !l.is_empty())?;
    assert_eq!(
        spec.pod_cidr.as_ref(),
        list.first(),
        "podCIDR is podCIDRs[0]"
    );
    Some(list)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_a_pod_cidr_per_family_and_services_a_slice_set_per_family() {
    let settings = Settings {
        cluster_cidr: "10.244.0.0/16,fd00:10:244::/56".into(),
        ..Settings::default()
    };
    let server = api_common::start_with(DUAL).await;
    let mut cluster = SimCluster::start_on(server, settings).await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    // a node that registers with podCIDRs keeps them
    let preset: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "preset"},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &preset).await.unwrap();
    cluster.add_node(NodeSpec::new("n1")).await;
    cluster.add_node(NodeSpec::new("n2")).await;
    let mut got = Vec::new();
    for n in ["n1", "n2"] {
        got.push(
            cluster
                .wait_for(&format!("podCIDRs of {n}"), WAIT, || pod_cidrs(&nodes, n))
                .await,
        );
    }
    got.sort();
    assert_eq!(
        got,
        [
            ["10.244.0.0/24", "fd00:10:244::/64"],
            ["10.244.2.0/24", "fd00:10:244:2::/64"]
        ]
    );
    assert_eq!(
        pod_cidrs(&nodes, "preset").await.unwrap(),
        ["10.244.1.0/24", "fd00:10:244:1::/64"]
    );
    // a deleted node's blocks are free again, and a restarted controller-manager knows
    // which are taken (its cache starts from the Nodes as they are now)
    let n1 = pod_cidrs(&nodes, "n1").await.unwrap();
    nodes.delete("n1", &DeleteParams::default()).await.unwrap();
    cluster
        .wait_for("n1 gone", WAIT, || async {
            nodes.get_opt("n1").await.unwrap().is_none().then_some(())
        })
        .await;
    cluster.restart_controllers().await;
    cluster.add_node(NodeSpec::new("n3")).await;
    let n3 = cluster
        .wait_for("podCIDRs of n3", WAIT, || pod_cidrs(&nodes, "n3"))
        .await;
    assert_eq!(n3, n1);
    let wide = cluster
        .kubectl(&["get", "node", "n3", "-o", "jsonpath={.spec.podCIDRs}"])
        .await;
    assert!(wide.contains("fd00:10:244"), "{wide}");

    // pods with an IPv4 and an IPv6 podIP behind a dual-stack Service
    cluster
        .apply(
            KUBECTL,
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - {name: web, image: \"nginx:1.27\", ports: [{containerPort: 8080, name: http}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ipFamilyPolicy: PreferDualStack, selector: {app: web}, ports: [{port: 80, targetPort: http}]}\n",
        )
        .await;
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.client.clone(), "default");
    let by_type = cluster
        .wait_for(
            "an IPv4 and an IPv6 slice with two endpoints each",
            WAIT,
            || async {
                let list = slices
                    .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                    .await
                    .ok()?;
                let mut by_type = Vec::new();
                for s in &list.items {
                    let addrs: BTreeSet<String> =
                        s.endpoints.iter().map(|e| e.addresses[0].clone()).collect();
                    let port = s.ports.as_ref()?.first()?.port?;
                    by_type.push((s.address_type.clone(), port, addrs));
                }
                by_type.sort();
                (by_type.len() == 2 && by_type.iter().all(|(_, _, a)| a.len() == 2))
                    .then_some(by_type)
            },
        )
        .await;
    assert_eq!(by_type[0].0, "IPv4");
    assert_eq!(by_type[1].0, "IPv6");
    assert!(
        by_type.iter().all(|(_, port, _)| *port == 8080),
        "{by_type:?}"
    );
    assert!(
        by_type[0].2.iter().all(|a| family_of(a) == "IPv4"),
        "{by_type:?}"
    );
    assert!(
        by_type[1].2.iter().all(|a| a.starts_with("fd00:10:244:")),
        "{by_type:?}"
    );
    // the Endpoints carry the primary family only
    let eps: Api<Endpoints> = Api::namespaced(cluster.client.clone(), "default");
    let ep = eps.get("web").await.unwrap();
    let addrs: BTreeSet<String> = ep
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten().map(|a| a.ip.clone()))
        .collect();
    assert_eq!(addrs, by_type[0].2);
    let out = cluster
        .kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ])
        .await;
    assert!(out.contains("IPv6") && out.contains("IPv4"), "{out}");
    // the downward API's status.podIPs: the pods report both
    let ips = cluster
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].status.podIPs[*].ip}",
        ])
        .await;
    let fams: Vec<&str> = ips.split_whitespace().map(family_of).collect();
    assert_eq!(fams, ["IPv4", "IPv6"], "{ips}");
}

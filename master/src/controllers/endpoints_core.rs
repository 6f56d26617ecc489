//! The pure core of the endpoints controllers: which pods of a Service are endpoints, on
//! which ports (named targetPorts resolved per pod, as `podutil.FindPort` does), and how they
//! fold into core/v1 Endpoints subsets and discovery.k8s.io/v1 EndpointSlices, as
//! kube-controller-manager's endpoint and endpointslice controllers compute them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, ObjectReference, Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub use crate::api::dualstack::Family;

/// Label naming the Service of an EndpointSlice.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages an EndpointSlice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`] (kube-controller-manager's).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Label marking Endpoints written by the endpoints controller (not by a user).
pub const ENDPOINTS_MANAGED_BY_LABEL: &str = "endpoints.kubernetes.io/managed-by";
/// Our value of [`ENDPOINTS_MANAGED_BY_LABEL`] (kube-controller-manager's).
pub const ENDPOINTS_MANAGED_BY: &str = "endpoint-controller";
/// Label set on the endpoints of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Endpoints in one EndpointSlice at most (`--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Addresses in one Endpoints object at most; more are truncated and annotated.
pub const MAX_ENDPOINTS_ADDRESSES: usize = 1000;
/// Annotation set on Endpoints truncated to [`MAX_ENDPOINTS_ADDRESSES`].
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";

/// The Service's selector, `None` when it has none (its Endpoints are the user's).
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
}

/// Whether `labels` carry every `key=value` of `selector`.
pub fn selects(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The pod's address of `family` (from `podIPs`, else `podIP`), when it has one.
pub fn pod_ip(pod: &Pod, family: Family) -> Option<&str> {
    let st = pod.status.as_ref()?;
    st.pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(st.pod_ip.as_deref())
        .find(|ip| Family::of_str(ip) == Some(family))
}

fn has_ip(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|st| {
        st.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
            || st.pod_ips.as_ref().is_some_and(|l| !l.is_empty())
    })
}

/// The address families of `svc`'s endpoints: its `ipFamilies`, else the families of its
/// clusterIPs, else IPv4 (`getAddressTypesForService`).
pub fn service_families(svc: &Service) -> Vec<Family> {
    let Some(spec) = svc.spec.as_ref() else {
        return vec![Family::V4];
    };
    let mut families: Vec<Family> = spec
        .ip_families
        .iter()
        .flatten()
        .filter_map(|f| Family::parse(f))
        .collect();
    if families.is_empty() {
        families = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.as_ref())
            .filter_map(|ip| Family::of_str(ip))
            .fold(Vec::new(), |mut acc, f| {
                if !acc.contains(&f) {
                    acc.push(f);
                }
                acc
            });
    }
    if families.is_empty() {
        families.push(Family::V4);
    }
    families
}

/// `podutil.IsPodReady`: the Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// `endpointutil.ShouldPodBeInEndpoints`: not terminal, has an IP, and (unless
/// `include_terminating`) not being deleted.
pub fn should_be_endpoint(pod: &Pod, include_terminating: bool) -> bool {
    if matches!(phase(pod), "Succeeded" | "Failed") {
        return false;
    }
    if !has_ip(pod) {
        return false;
    }
    include_terminating || !terminating(pod)
}

/// `podutil.FindPort`: a named targetPort is looked up among the pod's container ports (same
/// protocol); a number is used as is. `None` when the pod has no such named port.
pub fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    match sp.target_port.as_ref() {
        None => Some(sp.port),
        Some(IntOrString::Int(0)) => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The pod's hostname in the Service's DNS (`spec.hostname` when `spec.subdomain` names it).
fn hostname(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace)
        .then(|| host.to_string())
}

fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or(&[])
}

/// The ports of one endpoint: each Service port resolved for this pod, skipping ports the
/// pod does not have. Sorted by name.
fn endpoint_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let mut ports: Vec<EndpointPort> = service_ports(svc)
        .iter()
        .filter_map(|sp| {
            find_port(pod, sp).map(|port| EndpointPort {
                name: sp.name.clone().filter(|n| !n.is_empty()),
                port,
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect();
    ports.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
    ports
}

fn port_key(ports: &[EndpointPort]) -> Vec<(String, i32, String)> {
    ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port,
                p.protocol.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// The pods that are endpoints of `svc`, by IP, with their IP and resolved ports: a pod
/// that resolves none of the Service's ports is left out (a headless Service without ports
/// takes every pod).
fn candidates<'a>(
    svc: &Service,
    pods: &[&'a Pod],
    include_terminating: bool,
    family: Family,
) -> Vec<(&'a Pod, &'a str, Vec<EndpointPort>)> {
    let portless_headless = service_ports(svc).is_empty() && is_headless(svc);
    let mut out: Vec<(&'a Pod, &'a str, Vec<EndpointPort>)> = pods
        .iter()
        .copied()
        .filter(|pod| should_be_endpoint(pod, include_terminating))
        .filter_map(|pod| {
            let ip = pod_ip(pod, family)?;
            let ports = endpoint_ports(svc, pod);
            (!ports.is_empty() || portless_headless).then_some((pod, ip, ports))
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(b.1));
    out
}

/// The Endpoints subsets of `svc` over `pods` (already filtered to the Service's namespace
/// and selector): ready pods in `addresses`, the others in `notReadyAddresses` (all in
/// `addresses` with publishNotReadyAddresses), grouped by their resolved ports, sorted;
/// addresses of the Service's primary family only, as upstream's Endpoints. Returns the subsets and whether they were truncated to [`MAX_ENDPOINTS_ADDRESSES`].
pub fn endpoints_subsets(svc: &Service, pods: &[&Pod]) -> (Vec<EndpointSubset>, bool) {
    let publish = publish_not_ready(svc);
    // ports key → (ports, ready, not ready)
    type Group = (
        Vec<EndpointPort>,
        Vec<EndpointAddress>,
        Vec<EndpointAddress>,
    );
    let mut groups: BTreeMap<Vec<(String, i32, String)>, Group> = BTreeMap::new();
    let primary = service_families(svc)[0];
    let all = candidates(svc, pods, publish, primary);
    let truncated = all.len() > MAX_ENDPOINTS_ADDRESSES;
    for (pod, ip, ports) in all.into_iter().take(MAX_ENDPOINTS_ADDRESSES) {
        let addr = EndpointAddress {
            ip: ip.to_string(),
            hostname: hostname(pod, svc),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_ref(pod)),
        };
        let group = groups
            .entry(port_key(&ports))
            .or_insert_with(|| (ports, Vec::new(), Vec::new()));
        if publish || is_ready(pod) {
            group.1.push(addr);
        } else {
            group.2.push(addr);
        }
    }
    let subsets = groups
        .into_values()
        .map(|(ports, ready, not_ready)| EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        })
        .collect();
    (subsets, truncated)
}

/// The labels of the Service's Endpoints: the Service's own, the headless marker and ours.
pub fn endpoints_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = service_labels(svc);
    labels.insert(
        ENDPOINTS_MANAGED_BY_LABEL.into(),
        ENDPOINTS_MANAGED_BY.into(),
    );
    labels
}

fn service_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// The labels of the Service's EndpointSlices.
pub fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = service_labels(svc);
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels
}

/// The content of one EndpointSlice: its address type, ports and endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceContent {
    /// `IPv4` or `IPv6`.
    pub address_type: Family,
    /// Ports shared by every endpoint of the slice.
    pub ports: Vec<discovery::EndpointPort>,
    /// At most [`MAX_ENDPOINTS_PER_SLICE`].
    pub endpoints: Vec<discovery::Endpoint>,
}

/// The EndpointSlices of `svc` over `pods`, one set per family of the Service (its
/// `ipFamilies`): every pod with an address of that family (terminating ones too, with
/// `serving`/`terminating` conditions), grouped by resolved ports, at most
/// [`MAX_ENDPOINTS_PER_SLICE`] per slice. `zone_of` maps a node name to its
/// `topology.kubernetes.io/zone`. A family without endpoints → one empty placeholder slice.
pub fn slices(
    svc: &Service,
    pods: &[&Pod],
    zone_of: &dyn Fn(&str) -> Option<String>,
) -> Vec<SliceContent> {
    service_families(svc)
        .into_iter()
        .flat_map(|family| family_slices(svc, pods, zone_of, family))
        .collect()
}

fn family_slices(
    svc: &Service,
    pods: &[&Pod],
    zone_of: &dyn Fn(&str) -> Option<String>,
    family: Family,
) -> Vec<SliceContent> {
    let publish = publish_not_ready(svc);
    let mut groups: BTreeMap<Vec<(String, i32, String)>, SliceContent> = BTreeMap::new();
    for (pod, ip, ports) in candidates(svc, pods, true, family) {
        let serving = is_ready(pod);
        let term = terminating(pod);
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let endpoint = discovery::Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(discovery::EndpointConditions {
                ready: Some(publish || (serving && !term)),
                serving: Some(serving),
                terminating: Some(term),
            }),
            hostname: hostname(pod, svc),
            zone: node_name.as_deref().and_then(zone_of),
            node_name,
            target_ref: Some(pod_ref(pod)),
            ..Default::default()
        };
        let slice_ports = ports
            .iter()
            .map(|p| discovery::EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: p.protocol.clone(),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        groups
            .entry(port_key(&ports))
            .or_insert_with(|| SliceContent {
                address_type: family,
                ports: slice_ports,
                endpoints: Vec::new(),
            })
            .endpoints
            .push(endpoint);
    }
    let mut out = Vec::new();
    for group in groups.into_values() {
        for chunk in group.endpoints.chunks(MAX_ENDPOINTS_PER_SLICE) {
            out.push(SliceContent {
                address_type: family,
                ports: group.ports.clone(),
                endpoints: chunk.to_vec(),
            });
        }
    }
    if out.is_empty() {
        out.push(SliceContent {
            address_type: family,
            ports: Vec::new(),
            endpoints: Vec::new(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool, port_name: &str, port: i32) -> Pod {
        let mut status = json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]});
        if let Some(ip) = ip {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                         "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                     "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": status,
        }))
        .unwrap()
    }

    fn web_service(publish: bool) -> Service {
        svc(json!({
            "metadata": {"name": "web", "namespace": "default", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "publishNotReadyAddresses": publish,
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                "targetPort": "web-pod-port"}]}
        }))
    }

    fn ips(addrs: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        addrs.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn find_port_resolves_names_numbers_and_protocols() {
        let p = pod("a", Some("10.0.0.1"), true, "web-pod-port", 8080);
        let sp = |target: serde_json::Value, protocol: &str| -> ServicePort {
            serde_json::from_value(json!({"port": 80, "protocol": protocol, "targetPort": target}))
                .unwrap()
        };
        let cases = [
            (sp(json!("web-pod-port"), "TCP"), Some(8080)),
            (sp(json!("web-pod-port"), "UDP"), None),
            (sp(json!("other"), "TCP"), None),
            (sp(json!(9090), "TCP"), Some(9090)),
            (sp(json!("9091"), "TCP"), Some(9091)),
            (
                serde_json::from_value(json!({"port": 81})).unwrap(),
                Some(81),
            ),
        ];
        for (i, (port, want)) in cases.iter().enumerate() {
            assert_eq!(find_port(&p, port), *want, "case {i}");
        }
    }

    #[test]
    fn subsets_split_ready_and_not_ready_and_resolve_ports_per_pod() {
        let a = pod("a", Some("10.0.0.2"), true, "web-pod-port", 8080);
        let b = pod("b", Some("10.0.0.1"), true, "web-pod-port", 9090);
        let c = pod("c", Some("10.0.0.3"), false, "web-pod-port", 8080);
        let no_ip = pod("d", None, true, "web-pod-port", 8080);
        let no_port = pod("e", Some("10.0.0.5"), true, "other", 8080);
        let mut terminating = pod("f", Some("10.0.0.6"), true, "web-pod-port", 8080);
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let pods = [&a, &b, &c, &no_ip, &no_port, &terminating];
        let (subsets, truncated) = endpoints_subsets(&web_service(false), &pods);
        assert!(!truncated);
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        let by_port: BTreeMap<i32, &EndpointSubset> = subsets
            .iter()
            .map(|s| (s.ports.as_ref().unwrap()[0].port, s))
            .collect();
        assert_eq!(ips(&by_port[&8080].addresses), ["10.0.0.2"]);
        assert_eq!(ips(&by_port[&8080].not_ready_addresses), ["10.0.0.3"]);
        assert_eq!(ips(&by_port[&9090].addresses), ["10.0.0.1"]);
        let port = &by_port[&8080].ports.as_ref().unwrap()[0];
        assert_eq!(port.name.as_deref(), Some("http"));
        assert_eq!(port.protocol.as_deref(), Some("TCP"));
        let addr = &by_port[&8080].addresses.as_ref().unwrap()[0];
        assert_eq!(addr.node_name.as_deref(), Some("n1"));
        let target = addr.target_ref.as_ref().unwrap();
        assert_eq!(
            (
                target.kind.as_deref(),
                target.name.as_deref(),
                target.uid.as_deref()
            ),
            (Some("Pod"), Some("a"), Some("uid-a"))
        );

        // publishNotReadyAddresses: everything ready, terminating pods included
        let (subsets, _) = endpoints_subsets(&web_service(true), &pods);
        let all: Vec<&str> = subsets.iter().flat_map(|s| ips(&s.addresses)).collect();
        assert_eq!(all, ["10.0.0.2", "10.0.0.3", "10.0.0.6", "10.0.0.1"]);
        assert!(subsets.iter().all(|s| s.not_ready_addresses.is_none()));
    }

    #[test]
    fn slices_carry_conditions_zones_and_split_at_100() {
        let a = pod("a", Some("10.0.0.1"), true, "web-pod-port", 8080);
        let c = pod("c", Some("10.0.0.3"), false, "web-pod-port", 8080);
        let mut t = pod("t", Some("10.0.0.4"), true, "web-pod-port", 8080);
        t.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        let zone = |n: &str| (n == "n1").then(|| "z1".to_string());
        let out = slices(&web_service(false), &[&a, &c, &t], &zone);
        assert_eq!(out.len(), 1);
        let conds: Vec<(bool, bool, bool)> = out[0]
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.as_ref().unwrap();
                (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
            })
            .collect();
        assert_eq!(
            conds,
            [
                (true, true, false),
                (false, false, false),
                (false, true, true)
            ]
        );
        assert_eq!(out[0].endpoints[0].zone.as_deref(), Some("z1"));
        assert_eq!(out[0].ports[0].port, Some(8080));
        assert_eq!(out[0].ports[0].name.as_deref(), Some("http"));

        let many: Vec<Pod> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    Some(&format!("10.1.{}.{}", i / 200, i % 200 + 1)),
                    true,
                    "web-pod-port",
                    8080,
                )
            })
            .collect();
        let refs: Vec<&Pod> = many.iter().collect();
        let sizes: Vec<usize> = slices(&web_service(false), &refs, &zone)
            .iter()
            .map(|s| s.endpoints.len())
            .collect();
        assert_eq!(sizes, [100, 100, 50]);

        let (subsets, truncated) = endpoints_subsets(&web_service(false), &refs);
        assert!(!truncated);
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 250);
        let more: Vec<Pod> = (0..MAX_ENDPOINTS_ADDRESSES + 5)
            .map(|i| {
                let ip = format!("10.2.{}.{}", i / 250, i % 250 + 1);
                pod(&format!("m{i}"), Some(&ip), true, "web-pod-port", 8080)
            })
            .collect();
        let refs: Vec<&Pod> = more.iter().collect();
        let (subsets, truncated) = endpoints_subsets(&web_service(false), &refs);
        assert!(truncated);
        assert_eq!(
            subsets[0].addresses.as_ref().unwrap().len(),
            MAX_ENDPOINTS_ADDRESSES
        );

        let empty = slices(&web_service(false), &[], &zone);
        assert_eq!(
            empty,
            [SliceContent {
                address_type: Family::V4,
                ports: vec![],
                endpoints: vec![]
            }]
        );
    }

    #[test]
    fn one_slice_set_per_family_and_endpoints_of_the_primary() {
        fn dual(name: &str, v4: &str, v6: &str) -> Pod {
            let mut p = pod(name, Some(v4), true, "web-pod-port", 8080);
            p.status.as_mut().unwrap().pod_ips = Some(vec![
                k8s_openapi::api::core::v1::PodIP { ip: v4.into() },
                k8s_openapi::api::core::v1::PodIP { ip: v6.into() },
            ]);
            p
        }
        let a = dual("a", "10.0.0.1", "fd00::1");
        let b = dual("b", "10.0.0.2", "fd00::2");
        let only4 = pod("c", Some("10.0.0.3"), true, "web-pod-port", 8080);
        let pods = [&a, &b, &only4];
        let with = |families: serde_json::Value| {
            let mut s = web_service(false);
            s.spec.as_mut().unwrap().ip_families = serde_json::from_value(families).unwrap();
            s
        };
        let zone = |_: &str| None;
        let addrs = |out: &[SliceContent]| -> Vec<(&'static str, Vec<String>)> {
            out.iter()
                .map(|s| {
                    (
                        s.address_type.name(),
                        s.endpoints.iter().map(|e| e.addresses[0].clone()).collect(),
                    )
                })
                .collect()
        };
        // (ipFamilies, slices by type, Endpoints addresses)
        type Case = (
            serde_json::Value,
            Vec<(&'static str, Vec<&'static str>)>,
            Vec<&'static str>,
        );
        let cases: [Case; 4] = [
            (
                json!(["IPv4"]),
                vec![("IPv4", vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"])],
                vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"],
            ),
            (
                json!(["IPv6"]),
                vec![("IPv6", vec!["fd00::1", "fd00::2"])],
                vec!["fd00::1", "fd00::2"],
            ),
            (
                json!(["IPv4", "IPv6"]),
                vec![
                    ("IPv4", vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
                    ("IPv6", vec!["fd00::1", "fd00::2"]),
                ],
                vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"],
            ),
            (
                json!(["IPv6", "IPv4"]),
                vec![
                    ("IPv6", vec!["fd00::1", "fd00::2"]),
                    ("IPv4", vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
                ],
                vec!["fd00::1", "fd00::2"],
            ),
        ];
        for (families, want_slices, want_endpoints) in cases {
            let svc = with(families.clone());
            let got = slices(&svc, &pods, &zone);
            let want: Vec<(&str, Vec<String>)> = want_slices
                .iter()
                .map(|(t, l)| (*t, l.iter().map(|s| s.to_string()).collect()))
                .collect();
            assert_eq!(addrs(&got), want, "{families}");
            let (subsets, _) = endpoints_subsets(&svc, &pods);
            let all: Vec<&str> = subsets.iter().flat_map(|s| ips(&s.addresses)).collect();
            assert_eq!(all, want_endpoints, "{families}");
        }
        // a family no pod has an address of still gets its placeholder
        let got = slices(&with(json!(["IPv4", "IPv6"])), &[&only4], &zone);
        assert_eq!(
            got.iter()
                .map(|s| (s.address_type, s.endpoints.len()))
                .collect::<Vec<_>>(),
            [(Family::V4, 1), (Family::V6, 0)]
        );
        // no ipFamilies: the clusterIPs' families
        let mut svc = web_service(false);
        svc.spec.as_mut().unwrap().cluster_ips = Some(vec!["fd00::10".into()]);
        assert_eq!(service_families(&svc), [Family::V6]);
    }

    #[test]
    fn selection_and_labels() {
        let s = web_service(false);
        let sel = selector(&s).unwrap();
        let a = pod("a", Some("10.0.0.1"), true, "x", 1);
        assert!(selects(sel, a.metadata.labels.as_ref()));
        assert!(!selects(sel, None));
        let no_sel = svc(json!({"metadata": {"name": "x"}, "spec": {"selector": {}}}));
        assert!(selector(&no_sel).is_none());
        let labels = slice_labels(&s);
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels["tier"], "front");
        assert!(!labels.contains_key(ENDPOINTS_MANAGED_BY_LABEL));
        assert_eq!(
            endpoints_labels(&s)[ENDPOINTS_MANAGED_BY_LABEL],
            ENDPOINTS_MANAGED_BY
        );
        let headless = svc(json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}}));
        assert!(endpoints_labels(&headless).contains_key(HEADLESS_LABEL));
    }
}

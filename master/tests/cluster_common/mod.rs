//! A master with its controllers and simulated nodes, for controller tests that need no
//! agent: each simulated node is a Node object with capacity, a Lease renewed every second,
//! and a loop (a stand-in kubelet) that marks the pods bound to it Running and Ready, and ends
//! those annotated with [`RESULT_ANNOTATION`] after they ran.
//! `SimCluster::stop_node` stops both, as if the machine died.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_master::controllers::{self, Context, Settings};

use crate::api_common::{self, TestServer};

pub struct SimCluster {
    pub server: TestServer,
    pub client: kube::Client,
    controllers: tokio::task::JoinHandle<Result<(), controllers::ControllerError>>,
    settings: Arc<Settings>,
    nodes: Vec<SimNode>,
}

struct SimNode {
    name: String,
    alive: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// What a simulated node offers.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub labels: BTreeMap<String, String>,
}

impl NodeSpec {
    pub fn new(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            cpu: "4".into(),
            memory: "8Gi".into(),
            pods: 110,
            labels: BTreeMap::new(),
        }
    }
}

impl SimCluster {
    /// A master (in-memory store) with controllers using `settings`, and no nodes yet.
    /// The API server gets the settings' default toleration seconds, and the `kubernetes`
    /// Service's endpoints point at it unless the settings say otherwise.
    pub async fn start(settings: Settings) -> SimCluster {
        SimCluster::start_on(api_common::start().await, settings).await
    }

    /// Same, over `server` (e.g. one with dual-stack Service ranges). The simulated nodes
    /// give pods one address per family of `settings.cluster_cidr`, in its order.
    pub async fn start_on(server: TestServer, mut settings: Settings) -> SimCluster {
        server
            .handle
            .set_default_toleration_seconds(settings.default_toleration_seconds);
        settings.apiserver_address.get_or_insert(server.handle.addr);
        let client = controllers::client_from_kubeconfig(server.kubeconfig())
            .await
            .unwrap();
        let settings = Arc::new(settings);
        let ctx = Context {
            client: client.clone(),
            settings: settings.clone(),
        };
        let controllers = tokio::spawn(controllers::run(ctx));
        SimCluster {
            server,
            client,
            controllers,
            settings,
            nodes: Vec::new(),
        }
    }

    /// Stops the controllers and starts them afresh (empty caches, no memory of what they
    /// did), as a controller-manager restart does.
    pub async fn restart_controllers(&mut self) {
        self.controllers.abort();
        let _ = (&mut self.controllers).await;
        let ctx = Context {
            client: self.client.clone(),
            settings: self.settings.clone(),
        };
        self.controllers = tokio::spawn(controllers::run(ctx));
    }

    /// Registers a Ready node and starts its lease renewal and stand-in kubelet.
    pub async fn add_node(&mut self, spec: NodeSpec) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut labels = spec.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), spec.name.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert("kubernetes.io/arch".into(), "amd64".into());
        let idx = self.nodes.len() + 1;
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": spec.name, "labels": labels},
            "spec": {},
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        let status = json!({"status": {
            "capacity": {"cpu": spec.cpu, "memory": spec.memory, "pods": spec.pods.to_string()},
            "allocatable": {"cpu": spec.cpu, "memory": spec.memory, "pods": spec.pods.to_string()},
            "addresses": [{"type": "InternalIP", "address": format!("192.168.77.{idx}")},
                          {"type": "Hostname", "address": spec.name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "simulated node is ready",
                            "lastHeartbeatTime": chrono::Utc::now().to_rfc3339(),
                            "lastTransitionTime": chrono::Utc::now().to_rfc3339()}],
        }});
        // The API server answers 409 when a controller (node IPAM) writes the Node between
        // its read and write of a patch; retry as a client does.
        for attempt in 0.. {
            match nodes
                .patch_status(&spec.name, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 && attempt < 10 => {}
                Err(e) => panic!("cannot post the status of node {}: {e}", spec.name),
            }
        }
        let alive = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn(sim_node(
            self.client.clone(),
            spec.name.clone(),
            idx,
            alive.clone(),
            self.settings.cluster_cidr.clone(),
        ));
        self.nodes.push(SimNode {
            name: spec.name,
            alive,
            task,
        });
    }

    /// The node stops renewing its Lease and updating its pods, as if it died.
    pub fn stop_node(&self, name: &str) {
        for n in &self.nodes {
            if n.name == name {
                n.alive.store(false, Ordering::SeqCst);
            }
        }
    }

    /// A master with controllers using `settings` and a Ready simulated node per name.
    pub async fn with_nodes(settings: Settings, names: &[&str]) -> SimCluster {
        let mut cluster = SimCluster::start(settings).await;
        for n in names {
            cluster.add_node(NodeSpec::new(n)).await;
        }
        cluster
    }

    /// `kubectl <version> apply -f` of `manifest` (written to a file in the server's dir);
    /// must succeed; returns stdout.
    pub async fn apply(&self, version: &str, manifest: &str) -> String {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let path = self.server.dir.path().join(format!("manifest-{n}.yaml"));
        std::fs::write(&path, manifest).unwrap();
        self.server
            .ok(version, &["apply", "-f", path.to_str().unwrap()])
            .await
    }

    /// A stopped node comes back: it renews its Lease, posts Ready=True again and reports
    /// its pods, as a restarted kubelet does.
    pub fn start_node(&self, name: &str) {
        for n in &self.nodes {
            if n.name == name {
                n.alive.store(true, Ordering::SeqCst);
            }
        }
    }

    /// kubectl (1.32 unless told) against this cluster; must succeed; returns stdout.
    pub async fn kubectl(&self, args: &[&str]) -> String {
        self.server.ok("1.32", args).await
    }

    /// Polls `check` every 100 ms until it returns Some; panics after `timeout` naming
    /// `what`.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, timeout: Duration, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        api_common::wait_for(what, timeout, check).await
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        self.controllers.abort();
        for n in &self.nodes {
            n.task.abort();
        }
    }
}

/// A pod annotation telling simulated nodes to end the pod, after it ran, with this phase
/// (`Succeeded` or `Failed`), as a container that exits 0 or 1 would.
pub const RESULT_ANNOTATION: &str = "sim.skiff.io/result";

/// Ends a running pod with `result` (`Succeeded`: exit 0, else exit 1), as the kubelet
/// reports a container that exited and is not restarted.
async fn terminate(api: &Api<Pod>, pod: &Pod, result: &str) {
    let ok = result == "Succeeded";
    let now = chrono::Utc::now().to_rfc3339();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let containers: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            json!({
                "name": c.name, "image": c.image, "imageID": "", "ready": false,
                "restartCount": 0, "started": false,
                "state": {"terminated": {"exitCode": if ok { 0 } else { 1 },
                                         "reason": if ok { "Completed" } else { "Error" },
                                         "startedAt": now, "finishedAt": now}},
            })
        })
        .collect();
    let status = json!({"status": {
        "phase": if ok { "Succeeded" } else { "Failed" },
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
        ],
        "containerStatuses": containers,
    }});
    let _ = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await;
}

/// Renews the node's Lease every second, posts Ready=True when the node's Ready condition
/// says otherwise, and marks its bound pods Running and Ready, while `alive`.
async fn sim_node(
    client: kube::Client,
    name: String,
    idx: usize,
    alive: Arc<AtomicBool>,
    cluster_cidr: String,
) {
    // one address per family of the cluster CIDRs, in their order
    let families: Vec<bool> = cluster_cidr.split(',').map(|c| c.contains(':')).collect();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let pods: Api<Pod> = Api::all(client.clone());
    let mut next_ip = 2u32;
    loop {
        if alive.load(Ordering::SeqCst) {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                         "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())},
            });
            let _ = leases
                .patch(
                    &name,
                    &PatchParams::apply("sim-kubelet").force(),
                    &Patch::Apply(&lease),
                )
                .await;
            post_ready(&client, &name).await;
            let bound = pods
                .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
                .await;
            if let Ok(bound) = bound {
                for pod in bound.items {
                    let running =
                        pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                    let ns = pod.metadata.namespace.clone().unwrap_or_default();
                    let pod_name = pod.metadata.name.clone().unwrap_or_default();
                    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                    if pod.metadata.deletion_timestamp.is_some() {
                        // The containers are "stopped": finish the graceful deletion.
                        let _ = api
                            .delete(
                                &pod_name,
                                &kube::api::DeleteParams::default().grace_period(0),
                            )
                            .await;
                        continue;
                    }
                    let ready = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                    if matches!(phase, Some("Succeeded" | "Failed")) {
                        continue;
                    }
                    if running && ready {
                        // A pod told to end ends after one pass of running.
                        if let Some(result) = pod
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(RESULT_ANNOTATION))
                        {
                            terminate(&api, &pod, result).await;
                        }
                        continue;
                    }
                    // A pod that has IPs keeps them.
                    let ips: Vec<String> = match pod.status.as_ref().and_then(|s| s.pod_ips.clone())
                    {
                        Some(list) if !list.is_empty() => list.into_iter().map(|p| p.ip).collect(),
                        _ => {
                            next_ip += 1;
                            let n = next_ip - 1;
                            families
                                .iter()
                                .map(|v6| {
                                    if *v6 {
                                        format!("fd00:10:244:{idx:x}::{n:x}")
                                    } else {
                                        format!("10.244.{idx}.{n}")
                                    }
                                })
                                .collect()
                        }
                    };
                    let ip = ips[0].clone();
                    let pod_ips: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
                    let now = chrono::Utc::now().to_rfc3339();
                    let containers: Vec<_> = pod
                        .spec
                        .as_ref()
                        .map(|s| {
                            s.containers.iter().map(|c| json!({
                            "name": c.name, "image": c.image, "imageID": "", "ready": true,
                            "restartCount": 0, "started": true,
                            "state": {"running": {"startedAt": now}},
                        })).collect()
                        })
                        .unwrap_or_default();
                    let status = json!({"status": {
                        "phase": "Running",
                        "hostIP": format!("192.168.77.{idx}"),
                        "podIP": ip,
                        "podIPs": pod_ips,
                        "startTime": now,
                        "conditions": [
                            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                            {"type": "Ready", "status": "True", "lastTransitionTime": now},
                        ],
                        "containerStatuses": containers,
                    }});
                    let _ = api
                        .patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(&status))
                        .await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Posts the node's Ready=True condition when the stored one is anything else (a kubelet
/// reports its own view when it differs from the API's).
async fn post_ready(client: &kube::Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let Ok(node) = nodes.get(name).await else {
        return;
    };
    let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
    if conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
    {
        return;
    }
    let now = chrono::Utc::now().to_rfc3339();
    let mut conditions: Vec<serde_json::Value> = conditions
        .into_iter()
        .filter(|c| c.type_ != "Ready")
        .map(|c| {
            json!({"type": c.type_, "status": "False", "reason": "KubeletHasSufficientResources",
                   "lastHeartbeatTime": now, "lastTransitionTime": now})
        })
        .collect();
    conditions.push(
        json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "message": "simulated node is ready",
                           "lastHeartbeatTime": now, "lastTransitionTime": now}),
    );
    let _ = nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"conditions": conditions}})),
        )
        .await;
}

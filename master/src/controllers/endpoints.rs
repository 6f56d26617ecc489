//! The endpoint and endpointslice controllers (kube-controller-manager's): for every Service
//! with a selector, an Endpoints object of the same name and discovery.k8s.io/v1
//! EndpointSlices listing the selected pods, computed by [`super::endpoints_core`]. Services
//! without a selector keep the Endpoints their users write; the `kubernetes` Service's
//! Endpoints point at the API server, as the API server keeps them.
//!
//! Shape: watch-fed caches (reflectors) of Services, Pods, Nodes, Endpoints and managed
//! EndpointSlices feed a queue of Service keys; one worker reconciles each key against the
//! caches and requeues it with backoff when an API call fails.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Node, Pod, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::endpoints_core::{
    self as core, ENDPOINTS_MANAGED_BY, ENDPOINTS_MANAGED_BY_LABEL, MANAGED_BY, MANAGED_BY_LABEL,
    OVER_CAPACITY_ANNOTATION, SERVICE_NAME_LABEL, SliceContent,
};
use super::{Context, ControllerError};

/// The zone label of nodes, copied into EndpointSlice endpoints.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Caches and bookkeeping shared by the event handlers and the worker.
struct State {
    ctx: Context,
    services: Store<Service>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// Service key → names of the pods it listed last time, so a pod that stops matching
    /// (labels changed) still requeues the Service.
    members: Mutex<HashMap<String, HashSet<String>>>,
    queue: mpsc::UnboundedSender<String>,
}

fn svc_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

impl State {
    fn enqueue(&self, key: String) {
        // The receiver lives as long as the worker; a send error means we are shutting down.
        let _ = self.queue.send(key);
    }

    /// Requeues every Service that selects `pod` now or listed it last time.
    fn pod_changed(&self, pod: &Pod) {
        let Some(ns) = pod.metadata.namespace.as_deref() else {
            return;
        };
        let name = pod.name_any();
        let mut keys: BTreeSet<String> = self
            .services
            .state()
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
            .filter(|s| {
                core::selector(s)
                    .is_some_and(|sel| core::selects(sel, pod.metadata.labels.as_ref()))
            })
            .map(|s| svc_key(ns, &s.name_any()))
            .collect();
        if let Ok(members) = self.members.lock() {
            let prefix = format!("{ns}/");
            for (key, pods) in members.iter() {
                if key.starts_with(&prefix) && pods.contains(&name) {
                    keys.insert(key.clone());
                }
            }
        }
        for key in keys {
            self.enqueue(key);
        }
    }

    fn zone_of(&self, node: &str) -> Option<String> {
        self.nodes
            .get(&ObjectRef::new(node))
            .and_then(|n| n.labels().get(ZONE_LABEL).cloned())
    }
}

/// Mirrors `api` into `writer`'s store, calling `on_change` with every object added,
/// changed or deleted (and every object of each initial list).
pub(super) async fn informer<K, F>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    on_change: F,
) where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    K: Send + Sync + 'static,
    F: Fn(&K),
{
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(
                watcher::Event::Apply(obj)
                | watcher::Event::Delete(obj)
                | watcher::Event::InitApply(obj),
            ) => on_change(&obj),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(e) => debug!(error = %e, kind = %K::kind(&()), "watch failed; retrying"),
        }
    }
}

/// Runs the endpoints and endpointslice controllers until the task is dropped.
pub async fn run(ctx: Context) -> Result<(), ControllerError> {
    let client = ctx.client.clone();
    let (svc_reader, svc_writer) = reflector::store::<Service>();
    let (pod_reader, pod_writer) = reflector::store::<Pod>();
    let (node_reader, node_writer) = reflector::store::<Node>();
    let (ep_reader, ep_writer) = reflector::store::<Endpoints>();
    let (slice_reader, slice_writer) = reflector::store::<EndpointSlice>();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let state = Arc::new(State {
        ctx,
        services: svc_reader.clone(),
        pods: pod_reader.clone(),
        nodes: node_reader.clone(),
        members: Mutex::new(HashMap::new()),
        queue: tx,
    });

    let mut tasks = tokio::task::JoinSet::new();
    let s = state.clone();
    tasks.spawn(informer(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        svc_writer,
        move |svc: &Service| {
            s.enqueue(svc_key(
                &svc.namespace().unwrap_or_default(),
                &svc.name_any(),
            ))
        },
    ));
    let s = state.clone();
    tasks.spawn(informer(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        pod_writer,
        move |pod: &Pod| s.pod_changed(pod),
    ));
    tasks.spawn(informer(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        node_writer,
        |_: &Node| {},
    ));
    // Someone else changing what we own (or deleting it) requeues the Service.
    let s = state.clone();
    tasks.spawn(informer(
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default().labels(&format!(
            "{ENDPOINTS_MANAGED_BY_LABEL}={ENDPOINTS_MANAGED_BY}"
        )),
        ep_writer,
        move |ep: &Endpoints| {
            s.enqueue(svc_key(&ep.namespace().unwrap_or_default(), &ep.name_any()))
        },
    ));
    let s = state.clone();
    tasks.spawn(informer(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
        slice_writer,
        move |slice: &EndpointSlice| {
            if let Some(svc) = slice.labels().get(SERVICE_NAME_LABEL) {
                s.enqueue(svc_key(&slice.namespace().unwrap_or_default(), svc));
            }
        },
    ));

    for ready in [
        svc_reader.wait_until_ready().await,
        pod_reader.wait_until_ready().await,
        node_reader.wait_until_ready().await,
        ep_reader.wait_until_ready().await,
        slice_reader.wait_until_ready().await,
    ] {
        if ready.is_err() {
            return Err(ControllerError::Invalid(
                "endpoints informers stopped".into(),
            ));
        }
    }
    info!("endpoints controller started");

    let mut failures: HashMap<String, u32> = HashMap::new();
    while let Some(first) = rx.recv().await {
        let mut batch = BTreeSet::from([first]);
        while let Ok(key) = rx.try_recv() {
            batch.insert(key);
        }
        for key in batch {
            match reconcile(&state, &key).await {
                Ok(()) => {
                    failures.remove(&key);
                }
                Err(e) => {
                    let n = failures.entry(key.clone()).or_insert(0);
                    *n += 1;
                    let delay = Duration::from_millis(100u64 << (*n).min(8));
                    warn!(service = %key, error = %e, retry_in = ?delay, "endpoints sync failed");
                    let s = state.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        s.enqueue(key);
                    });
                }
            }
        }
    }
    tasks.abort_all();
    Ok(())
}

/// The API server's address the `kubernetes` Service's Endpoints point at.
pub fn apiserver_endpoints(addr: SocketAddr) -> Vec<EndpointSubset> {
    vec![EndpointSubset {
        addresses: Some(vec![EndpointAddress {
            ip: addr.ip().to_string(),
            ..Default::default()
        }]),
        not_ready_addresses: None,
        ports: Some(vec![EndpointPort {
            name: Some("https".into()),
            port: i32::from(addr.port()),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
    }]
}

#[tracing::instrument(skip(state), fields(service = %key))]
async fn reconcile(state: &State, key: &str) -> Result<(), ControllerError> {
    let Some((ns, name)) = key.split_once('/') else {
        return Ok(());
    };
    let client = state.ctx.client.clone();
    let svc = state.services.get(&ObjectRef::new(name).within(ns));
    if ns == "default" && name == "kubernetes" {
        return match (svc, state.ctx.settings.apiserver_address) {
            (Some(svc), Some(addr)) => sync_apiserver(&client, &svc, addr).await,
            _ => Ok(()),
        };
    }
    let Some(svc) = svc else {
        // The Service is gone: so are the Endpoints we wrote for it and our slices. (Only
        // ours: a user's Endpoints of a Service our cache has not seen yet stay.)
        if let Ok(mut m) = state.members.lock() {
            m.remove(key);
        }
        let eps: Api<Endpoints> = Api::namespaced(client.clone(), ns);
        if let Some(ep) = eps.get_opt(name).await? {
            if ep
                .labels()
                .get(ENDPOINTS_MANAGED_BY_LABEL)
                .map(String::as_str)
                == Some(ENDPOINTS_MANAGED_BY)
            {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: ep.uid(),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                ignore_not_found(eps.delete(name, &dp).await.map(|_| ()))?;
            }
        }
        for slice in managed_slices(&client, ns, name).await? {
            let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
            ignore_not_found(
                slices
                    .delete(&slice.name_any(), &DeleteParams::default())
                    .await
                    .map(|_| ()),
            )?;
        }
        return Ok(());
    };
    let Some(selector) = core::selector(&svc) else {
        // No selector: the user manages the Endpoints.
        if let Ok(mut m) = state.members.lock() {
            m.remove(key);
        }
        return Ok(());
    };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let pods: Vec<Arc<Pod>> = state.pods.state_filter(|p| {
        p.metadata.namespace.as_deref() == Some(ns)
            && core::selects(selector, p.metadata.labels.as_ref())
    });
    let pods: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    if let Ok(mut m) = state.members.lock() {
        m.insert(key.to_string(), pods.iter().map(|p| p.name_any()).collect());
    }
    let (subsets, truncated) = core::endpoints_subsets(&svc, &pods);
    let mut annotations = BTreeMap::new();
    if truncated {
        annotations.insert(
            OVER_CAPACITY_ANNOTATION.to_string(),
            "truncated".to_string(),
        );
    }
    sync_endpoints(
        &client,
        &svc,
        subsets,
        core::endpoints_labels(&svc),
        annotations,
    )
    .await?;
    let desired = core::slices(&svc, &pods, &|n| state.zone_of(n));
    sync_slices(&client, &svc, desired).await
}

fn ignore_not_found(r: Result<(), kube::Error>) -> Result<(), ControllerError> {
    match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => Ok(other?),
    }
}

/// Creates or updates the Endpoints named like `svc` when they differ from the desired ones.
async fn sync_endpoints(
    client: &kube::Client,
    svc: &Service,
    subsets: Vec<EndpointSubset>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
) -> Result<(), ControllerError> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    match api.get_opt(&name).await? {
        None => {
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..Default::default()
                },
                subsets: Some(subsets),
            };
            match api.create(&PostParams::default(), &ep).await {
                Ok(_) => info!(endpoints = %format!("{ns}/{name}"), "endpoints created"),
                // Created meanwhile (by the user or a racing sync): the next event retries.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    return Err(ControllerError::Invalid(format!(
                        "endpoints {ns}/{name} appeared while creating them"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some(mut existing) => {
            let mut want_annotations = existing.annotations().clone();
            want_annotations.remove(OVER_CAPACITY_ANNOTATION);
            want_annotations.extend(annotations);
            let same = existing.subsets.clone().unwrap_or_default() == subsets
                && existing.labels() == &labels
                && existing.annotations() == &want_annotations;
            if same {
                return Ok(());
            }
            existing.subsets = Some(subsets);
            existing.metadata.labels = Some(labels);
            existing.metadata.annotations = Some(want_annotations);
            api.replace(&name, &PostParams::default(), &existing)
                .await?;
            debug!(endpoints = %format!("{ns}/{name}"), "endpoints updated");
        }
    }
    Ok(())
}

async fn managed_slices(
    client: &kube::Client,
    ns: &str,
    service: &str,
) -> Result<Vec<EndpointSlice>, ControllerError> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!(
        "{SERVICE_NAME_LABEL}={service},{MANAGED_BY_LABEL}={MANAGED_BY}"
    ));
    let mut items = api.list(&lp).await?.items;
    items.sort_by_key(|s| s.name_any());
    Ok(items)
}

fn owner(svc: &Service) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.name_any(),
        uid: svc.uid()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

fn slice_matches(
    slice: &EndpointSlice,
    want: &SliceContent,
    labels: &BTreeMap<String, String>,
    owners: &[OwnerReference],
) -> bool {
    slice.address_type == want.address_type.name()
        && slice.endpoints == want.endpoints
        && slice.ports.clone().unwrap_or_default() == want.ports
        && slice.labels() == labels
        && slice.owner_references() == owners
}

/// Makes the Service's managed EndpointSlices hold `desired`: existing slices are reused
/// (those with the same ports first), missing ones created, leftovers deleted.
async fn sync_slices(
    client: &kube::Client,
    svc: &Service,
    desired: Vec<SliceContent>,
) -> Result<(), ControllerError> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let mut existing = managed_slices(client, &ns, &name).await?;
    let labels = core::slice_labels(svc);
    let owners: Vec<OwnerReference> = owner(svc).into_iter().collect();
    for want in desired {
        let pos = existing
            .iter()
            .position(|s| slice_matches(s, &want, &labels, &owners))
            .or_else(|| {
                existing.iter().position(|s| {
                    s.address_type == want.address_type.name()
                        && s.ports.clone().unwrap_or_default() == want.ports
                })
            })
            // addressType is immutable: only a slice of the same type is reused
            .or_else(|| {
                existing
                    .iter()
                    .position(|s| s.address_type == want.address_type.name())
            });
        match pos {
            Some(i) => {
                let mut slice = existing.remove(i);
                if slice_matches(&slice, &want, &labels, &owners) {
                    continue;
                }
                slice.endpoints = want.endpoints;
                slice.ports = Some(want.ports);
                slice.metadata.labels = Some(labels.clone());
                slice.metadata.owner_references = Some(owners.clone());
                api.replace(&slice.name_any(), &PostParams::default(), &slice)
                    .await?;
                debug!(slice = %slice.name_any(), "endpointslice updated");
            }
            None => {
                let slice = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{name}-")),
                        namespace: Some(ns.clone()),
                        labels: Some(labels.clone()),
                        owner_references: Some(owners.clone()),
                        ..Default::default()
                    },
                    address_type: want.address_type.name().into(),
                    endpoints: want.endpoints,
                    ports: Some(want.ports),
                };
                let created = api.create(&PostParams::default(), &slice).await?;
                info!(slice = %created.name_any(), service = %name, "endpointslice created");
            }
        }
    }
    for stale in existing {
        ignore_not_found(
            api.delete(&stale.name_any(), &DeleteParams::default())
                .await
                .map(|_| ()),
        )?;
    }
    Ok(())
}

/// Keeps the `kubernetes` Service's Endpoints and EndpointSlice pointing at the API server.
async fn sync_apiserver(
    client: &kube::Client,
    svc: &Service,
    addr: SocketAddr,
) -> Result<(), ControllerError> {
    let labels = BTreeMap::from([(
        "endpointslice.kubernetes.io/skip-mirror".to_string(),
        "true".to_string(),
    )]);
    sync_endpoints(
        client,
        svc,
        apiserver_endpoints(addr),
        labels,
        BTreeMap::new(),
    )
    .await?;
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let want = EndpointSlice {
        metadata: ObjectMeta {
            name: Some("kubernetes".into()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_string(),
                "kubernetes".to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![k8s_openapi::api::discovery::v1::Endpoint {
            addresses: vec![addr.ip().to_string()],
            conditions: Some(k8s_openapi::api::discovery::v1::EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Default::default()
        }],
        ports: Some(vec![k8s_openapi::api::discovery::v1::EndpointPort {
            name: Some("https".into()),
            port: Some(i32::from(addr.port())),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
    };
    match api.get_opt("kubernetes").await? {
        None => {
            api.create(&PostParams::default(), &want).await?;
        }
        Some(mut existing) => {
            if existing.endpoints != want.endpoints || existing.ports != want.ports {
                existing.endpoints = want.endpoints;
                existing.ports = want.ports;
                existing.address_type = want.address_type;
                api.replace("kubernetes", &PostParams::default(), &existing)
                    .await?;
            }
        }
    }
    Ok(())
}

/// The address the `kubernetes` Service's endpoints should name for an API server listening
/// on `listen`: that address, or for a wildcard listen the host's primary IPv4 address (the
/// source address of its default route, found without sending anything).
pub fn advertise_address(listen: SocketAddr) -> Option<SocketAddr> {
    if !listen.ip().is_unspecified() {
        return Some(listen);
    }
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("192.0.2.1:9").ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(SocketAddr::new(ip, listen.port()))
}

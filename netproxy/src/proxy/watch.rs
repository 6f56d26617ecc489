//! The proxy's loop: kube-runtime reflectors over all Services and EndpointSlices; any
//! change marks its Service dirty, and a sync runs at most once per `min_sync_interval`
//! (kube-proxy's `--min-sync-period`), at least once per `sync_period`, and again after a
//! failed one. A sync re-renders only the dirty Services (`Proxier::sync_changed`); the
//! first one, the one after a watch had to list again and the one after a failure render
//! all of them.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::time::Instant;
use tracing::{info, warn};

use super::nft::Nft;
use super::rules::{RulesConfig, ServiceKey, service_key, slice_service};
use super::sync::Proxier;

/// How the proxy runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What the ruleset depends on besides the API objects.
    pub rules: RulesConfig,
    /// Least time between two syncs.
    pub min_sync_interval: Duration,
    /// Most time between two syncs (only the Services changed since the last sync are
    /// re-rendered; none changed: nothing is sent).
    pub sync_period: Duration,
    /// Program this network namespace (under /run/netns) instead of the proxy's own.
    pub netns: Option<String>,
}

impl Settings {
    /// kube-proxy's defaults: 1 s minimum, 30 s period, the proxy's own namespace.
    pub fn new(rules: RulesConfig) -> Settings {
        Settings {
            rules,
            min_sync_interval: Duration::from_secs(1),
            sync_period: Duration::from_secs(30),
            netns: None,
        }
    }
}

/// The proxy stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A watch stream ended.
    #[error("the {kind} watch ended")]
    WatchEnded {
        /// Services or EndpointSlices.
        kind: &'static str,
    },
}

/// What one watch event means for the proxy.
enum Change {
    /// The initial listing is going on (or starts again after a watch failure: objects
    /// deleted meanwhile send no event, so the next sync is a full one).
    Listing,
    /// The store is complete; the sync after a listing re-renders everything.
    Listed,
    /// An object of this Service (if it belongs to one) changed.
    Service(Option<ServiceKey>),
}

/// One reflector: its store and a stream of what changed (`None`: the watch failed).
fn reflect<K>(
    api: Api<K>,
    kind: &'static str,
    key: fn(&K) -> Option<ServiceKey>,
) -> (
    Store<K>,
    impl Stream<Item = Option<Change>> + Send + Unpin + 'static,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .map(move |ev| match ev {
            Ok(watcher::Event::InitDone) => Some(Change::Listed),
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => Some(Change::Listing),
            Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => {
                Some(Change::Service(key(&o)))
            }
            Err(e) => {
                warn!(kind, error = %e, "watch failed, retrying");
                None
            }
        })
        .boxed();
    (reader, stream)
}

/// Runs the proxy until `shutdown` completes. The tables stay in place when it returns, so
/// traffic keeps flowing across a restart (the next start replaces them in one transaction).
pub async fn run(
    client: kube::Client,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let (services, mut svc_events) = reflect(
        Api::<Service>::all(client.clone()),
        "Service",
        |s: &Service| Some(service_key(s)),
    );
    let (slices, mut slice_events) = reflect(
        Api::<EndpointSlice>::all(client),
        "EndpointSlice",
        slice_service,
    );
    let mut proxier = Proxier::new(
        settings.rules.clone(),
        Nft {
            netns: settings.netns.clone(),
        },
    );
    let min = settings.min_sync_interval;
    let (mut svc_ready, mut slice_ready) = (false, false);
    let mut dirty = true;
    // Services changed since the last sync; `full`: re-render all of them
    let mut changed: BTreeSet<ServiceKey> = BTreeSet::new();
    let mut full = true;
    let mut next_allowed = Instant::now();
    let mut next_periodic = Instant::now() + settings.sync_period;
    tokio::pin!(shutdown);
    info!(node = %settings.rules.node_name, netns = ?settings.netns, "service proxy started");
    loop {
        let ready = svc_ready && slice_ready;
        let due = if dirty { next_allowed } else { next_periodic };
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            ev = svc_events.next() => match ev {
                None => return Err(RunError::WatchEnded { kind: "Service" }),
                Some(Some(c)) => note(c, &mut svc_ready, &mut full, &mut changed, &mut dirty),
                Some(None) => {}
            },
            ev = slice_events.next() => match ev {
                None => return Err(RunError::WatchEnded { kind: "EndpointSlice" }),
                Some(Some(c)) => note(c, &mut slice_ready, &mut full, &mut changed, &mut dirty),
                Some(None) => {}
            },
            _ = tokio::time::sleep_until(due), if ready => {
                let svcs = services.state();
                let eps = slices.state();
                let svc_refs: Vec<&Service> = svcs.iter().map(|s| s.as_ref()).collect();
                let ep_refs: Vec<&EndpointSlice> = eps.iter().map(|s| s.as_ref()).collect();
                next_allowed = Instant::now() + min;
                next_periodic = Instant::now() + settings.sync_period;
                let synced = if full {
                    proxier.sync(&svc_refs, &ep_refs).await
                } else {
                    proxier.sync_changed(&svc_refs, &ep_refs, &changed).await
                };
                match synced {
                    Ok(_) => {
                        dirty = false;
                        full = false;
                        changed.clear();
                    }
                    Err(e) => {
                        warn!(error = ?e, "sync failed, retrying in full");
                        dirty = true;
                        full = true;
                    }
                }
            }
        }
    }
}

/// Records one watch change: a listing makes the next sync a full one.
fn note(
    c: Change,
    ready: &mut bool,
    full: &mut bool,
    changed: &mut BTreeSet<ServiceKey>,
    dirty: &mut bool,
) {
    match c {
        Change::Listing => *full = true,
        Change::Listed => *ready = true,
        Change::Service(Some(k)) => {
            changed.insert(k);
        }
        Change::Service(None) => {}
    }
    *dirty = true;
}

/// How the proxy reaches the API server.
#[derive(Clone, Debug)]
pub enum ApiAccess {
    /// A kubeconfig file (its current context).
    Kubeconfig(std::path::PathBuf),
    /// A server URL, a bearer token and the CA that signed the server's certificate.
    Token {
        /// `https://HOST:PORT`.
        server: String,
        /// The bearer token.
        token: String,
        /// The cluster CA certificate.
        ca_file: std::path::PathBuf,
    },
}

/// A client for the API server could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig could not be read or understood.
    #[error("cannot use kubeconfig {path}")]
    Kubeconfig {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The client could not be built.
    #[error("cannot make the API client")]
    Client(#[source] kube::Error),
}

impl ApiAccess {
    /// A kube client for this access.
    pub async fn client(&self) -> Result<kube::Client, ClientError> {
        let options = kube::config::KubeConfigOptions::default();
        let (kubeconfig, path) = match self {
            ApiAccess::Kubeconfig(path) => {
                let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                    ClientError::Kubeconfig {
                        path: path.clone(),
                        source,
                    }
                })?;
                (kc, path.clone())
            }
            ApiAccess::Token {
                server,
                token,
                ca_file,
            } => {
                let yaml = format!(
                    "apiVersion: v1\nkind: Config\ncurrent-context: proxy\n\
                     clusters: [{{name: skiff, cluster: {{server: {server:?}, certificate-authority: {ca:?}}}}}]\n\
                     users: [{{name: proxy, user: {{token: {token:?}}}}}]\n\
                     contexts: [{{name: proxy, context: {{cluster: skiff, user: proxy}}}}]\n",
                    ca = ca_file.display().to_string(),
                );
                let kc = kube::config::Kubeconfig::from_yaml(&yaml).map_err(|source| {
                    ClientError::Kubeconfig {
                        path: ca_file.clone(),
                        source,
                    }
                })?;
                (kc, ca_file.clone())
            }
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|source| ClientError::Kubeconfig { path, source })?;
        kube::Client::try_from(config).map_err(ClientError::Client)
    }
}

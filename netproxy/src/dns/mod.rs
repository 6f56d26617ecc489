//! Cluster DNS, skiff's CoreDNS: the records of the Kubernetes DNS specification for every
//! Service and EndpointSlice, served on UDP and TCP, other names forwarded to the node's
//! resolvers.
//!
//! [`records::Table`] is the zone as a pure function of the Services and EndpointSlices;
//! [`run`] keeps it current from two reflectors and serves it with [`server::Handler`].

/// Names outside the cluster zone: upstream resolvers and a TTL-honouring cache.
pub mod forward;
/// The zone as a pure function of Services and EndpointSlices, and lookups in it.
pub mod records;
/// The request handler behind hickory-server's UDP and TCP listeners.
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::{Notify, watch};

use self::forward::Forwarder;
use self::records::{Table, ZoneSettings};

/// How long a TCP client may stay idle between queries.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-connection buffer of outgoing TCP responses.
const TCP_RESPONSE_BUFFER: usize = 16;

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A listen socket could not be bound.
    #[error("cannot listen on {proto} {addr}")]
    Bind {
        /// "udp" or "tcp".
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A watch ended before its first list arrived (the reflector's writer was dropped).
    #[error("the {kind} watch ended before it was ready")]
    WatchEnded {
        /// Service or EndpointSlice.
        kind: &'static str,
    },
    /// The server stopped with an error.
    #[error("the dns server failed")]
    Serve(#[source] hickory_server::net::NetError),
}

/// What `skiff dns` (or the agent) runs the server with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// UDP and TCP listen address (default `10.96.0.10:53`, the cluster DNS Service).
    pub listen: SocketAddr,
    /// The cluster domain (default `cluster.local`).
    pub cluster_domain: String,
    /// TTL of the cluster records (default 5 s).
    pub ttl: u32,
    /// Upstream resolvers for other names; empty: the nameservers of `resolv_conf`.
    pub upstreams: Vec<SocketAddr>,
    /// The node's resolver configuration (default `/etc/resolv.conf`).
    pub resolv_conf: std::path::PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([10, 96, 0, 10], 53)),
            cluster_domain: "cluster.local".into(),
            ttl: 5,
            upstreams: Vec::new(),
            resolv_conf: "/etc/resolv.conf".into(),
        }
    }
}

impl Settings {
    /// The upstream resolvers: `upstreams`, else the nameservers of `resolv_conf` other
    /// than our own address.
    pub fn effective_upstreams(&self) -> Vec<SocketAddr> {
        if !self.upstreams.is_empty() {
            return self.upstreams.clone();
        }
        forward::nameservers_of(&self.resolv_conf, Some(self.listen.ip()))
    }

    fn zone(&self) -> ZoneSettings {
        let own = self.listen.ip();
        ZoneSettings {
            ttl: self.ttl,
            dns_addresses: if own.is_unspecified() || own.is_loopback() {
                Vec::new()
            } else {
                vec![own]
            },
            ..ZoneSettings::new(&self.cluster_domain)
        }
    }
}

/// Runs a reflector for `K` over all namespaces, waking `changed` after every event.
async fn reflect<K>(api: Api<K>, writer: reflector::store::Writer<K>, changed: Arc<Notify>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                changed.notify_one()
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(e) => tracing::debug!(error = %e, kind = %K::kind(&()), "watch failed; retrying"),
        }
    }
}

/// An SOA serial from the clock (seconds since 1970), so serials grow across restarts.
fn clock_serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// Rebuilds the table after every change the reflectors report (a burst of changes makes
/// one rebuild: a `Notify` holds at most one wake-up).
async fn rebuild(
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    zone: ZoneSettings,
    changed: Arc<Notify>,
    tx: watch::Sender<Arc<Table>>,
) {
    let mut serial = clock_serial();
    loop {
        changed.notified().await;
        serial = serial.wrapping_add(1);
        let svcs = services.state();
        let eps = slices.state();
        let table = Table::build(
            &zone,
            serial,
            svcs.iter().map(AsRef::as_ref),
            eps.iter().map(AsRef::as_ref),
        );
        tracing::debug!(
            services = svcs.len(),
            slices = eps.len(),
            serial,
            "dns table rebuilt"
        );
        if tx.send(Arc::new(table)).is_err() {
            return;
        }
    }
}

/// Serves cluster DNS until `shutdown` resolves: watches Services and EndpointSlices with
/// `client`, waits for their first lists, then answers on UDP and TCP at `settings.listen`.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), DnsError> {
    let zone = settings.zone();
    let (svc_reader, svc_writer) = reflector::store::<Service>();
    let (eps_reader, eps_writer) = reflector::store::<EndpointSlice>();
    let changed = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(reflect(
        Api::<Service>::all(client.clone()),
        svc_writer,
        changed.clone(),
    ));
    tasks.spawn(reflect(
        Api::<EndpointSlice>::all(client),
        eps_writer,
        changed.clone(),
    ));

    let bind = async {
        svc_reader
            .wait_until_ready()
            .await
            .map_err(|_| DnsError::WatchEnded { kind: "Service" })?;
        eps_reader
            .wait_until_ready()
            .await
            .map_err(|_| DnsError::WatchEnded {
                kind: "EndpointSlice",
            })?;
        let initial = Table::build(
            &zone,
            clock_serial(),
            svc_reader.state().iter().map(AsRef::as_ref),
            eps_reader.state().iter().map(AsRef::as_ref),
        );
        let (tx, rx) = watch::channel(Arc::new(initial));
        let upstreams = settings.effective_upstreams();
        tracing::info!(listen = %settings.listen, domain = %zone.domain, upstreams = ?upstreams, "cluster dns serving");
        let handler = server::Handler::new(rx, Arc::new(Forwarder::new(upstreams)));
        let mut server = hickory_server::Server::new(handler);
        let addr = settings.listen;
        let bind_error = |proto| {
            move |source| DnsError::Bind {
                proto,
                addr,
                source,
            }
        };
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(bind_error("udp"))?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_error("tcp"))?;
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        Ok::<_, DnsError>((server, tx))
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let (mut server, tx) = tokio::select! {
        r = bind => r?,
        () = &mut shutdown => return Ok(()),
    };
    // The reflectors may have moved on while we bound the sockets.
    changed.notify_one();
    tasks.spawn(rebuild(svc_reader, eps_reader, zone, changed, tx));
    let result = tokio::select! {
        r = server.block_until_done() => r.map_err(DnsError::Serve),
        () = &mut shutdown => server.shutdown_gracefully().await.map_err(DnsError::Serve),
    };
    tasks.abort_all();
    result
}

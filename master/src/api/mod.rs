//! The HTTPS API server: TLS and connections, authentication and authorization, request
//! routing, and bootstrap. REST handlers live in `rest`, watches in `watch`, discovery in
//! `discovery`, Service IP/port allocation in `services`.

mod discovery;
/// IPv4/IPv6: CIDRs of both families, the Service ranges, ipFamilyPolicy/ipFamilies rules.
pub mod dualstack;
mod eviction;
mod measure;
/// `metrics.k8s.io/v1beta1` from the metrics collector's cache.
pub mod metrics;
/// Kubernetes protobuf request bodies decoded to JSON (client-go's typed clients send them).
pub mod protobuf;
mod proxy;
mod rest;
/// Label selectors and field selectors (also used by the controllers).
pub mod select;
mod serviceaccount;
mod services;
mod status;
mod watch;
mod watch_lines;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tracing::{debug, info, warn};

pub use select::{FieldSelector, LabelSelector};
pub use status::ApiError;

use crate::certs;
use crate::resources::{RESOURCES, ResourceInfo};
use crate::store::Store;

/// Kind-specific semantics used by the handlers.
pub(crate) use crate::resources::semantics;

/// Bodies larger than this get 413.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Credentials could not be created or loaded.
    #[error("credentials")]
    Certs(#[from] certs::CertsError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Bootstrapping the store failed.
    #[error("bootstrap: {0}")]
    Bootstrap(ApiError),
}

/// How to run the API server.
#[derive(Clone)]
pub struct Config {
    /// Certificates, tokens, kubeconfig (and the store file).
    pub data_dir: PathBuf,
    /// Where to listen (port 0 = any).
    pub listen: SocketAddr,
    /// The Service CIDRs, `--service-cluster-ip-range`: one, or one per family
    /// (`10.96.0.0/12,fd00:10:96::/108`), the primary first.
    pub service_cidr: String,
    /// The NodePort range, inclusive.
    pub node_port_range: (u16, u16),
    /// The store.
    pub store: Arc<dyn Store>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("service_cidr", &self.service_cidr)
            .field("node_port_range", &self.node_port_range)
            .finish_non_exhaustive()
    }
}

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Identity {
    /// The admin token: everything.
    Admin,
    /// The node join token: nodes, node leases, pods' status.
    Node,
}

/// Shared state of the handlers.
pub(crate) struct Server {
    pub(crate) store: Arc<dyn Store>,
    admin_token: String,
    node_token: String,
    pub(crate) service_cidrs: dualstack::ServiceCidrs,
    pub(crate) node_ports: (u16, u16),
    /// Serializes Service allocations (derived from stored Services).
    pub(crate) alloc_lock: tokio::sync::Mutex<()>,
    /// Becomes true when the server shuts down (long requests end).
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
    /// tolerationSeconds of the default not-ready/unreachable tolerations of new pods.
    pub(crate) default_toleration_seconds: std::sync::atomic::AtomicI64,
    /// TLS to the agents' logs/exec endpoints, with the kubelet client certificate.
    pub(crate) kubelet_tls: proxy::KubeletTls,
    /// Request, watch and store metrics (`/metrics`).
    pub(crate) metrics: Arc<crate::metrics::ApiMetrics>,
    /// The resource metrics collector and its cache (metrics.k8s.io).
    pub(crate) resource_metrics: metrics::Metrics,
    /// Watch event lines rendered once and shared by the watchers that send them.
    pub(crate) watch_lines: watch_lines::WatchLines,
}

/// A running server.
pub struct ServerHandle {
    /// The bound address.
    pub addr: SocketAddr,
    /// `DIR/admin.kubeconfig`.
    pub kubeconfig: PathBuf,
    /// The admin token.
    pub admin_token: String,
    /// The node token.
    pub node_token: String,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    server: Arc<Server>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// Stops accepting, closes every connection and waits (up to 10 s) until every request
    /// task let go of the server, so the store can be reopened.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&self.server) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Sets the tolerationSeconds the DefaultTolerationSeconds admission gives new pods for
    /// the not-ready and unreachable NoExecute taints (300 unless set).
    pub fn set_default_toleration_seconds(&self, seconds: i64) {
        self.server
            .default_toleration_seconds
            .store(seconds, std::sync::atomic::Ordering::Relaxed);
    }

    /// Replaces where the metrics collector gets its figures and how often (tests).
    pub fn set_metrics_source(
        &self,
        source: Arc<dyn crate::metrics_collector::MetricsSource>,
        interval: std::time::Duration,
    ) {
        self.server.resource_metrics.set_source(source, interval);
    }

    /// Sets how often the metrics collector scrapes (15 s unless set).
    pub fn set_metrics_interval(&self, interval: std::time::Duration) {
        self.server.resource_metrics.set_interval(interval);
    }

    /// Waits until the server stops (it runs until shut down).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts the API server: credentials, bootstrap objects, TLS listener, namespace
/// controller. Returns once it listens.
pub async fn serve(config: Config) -> Result<ServerHandle, ServeError> {
    let service_cidrs =
        dualstack::ServiceCidrs::parse(&config.service_cidr).map_err(ServeError::Config)?;
    if config.node_port_range.0 > config.node_port_range.1 {
        return Err(ServeError::Config("empty node port range".into()));
    }
    // the kubernetes Service: the first address of the primary range
    let service_ip = service_cidrs.primary().nth(1);
    let creds = certs::load_or_create(&config.data_dir, config.listen.ip(), service_ip)?;
    let tls = certs::server_tls_config(&creds, &config.data_dir)?;
    let kubelet_tls = Arc::new(certs::kubelet_client_tls(&creds, &config.data_dir)?);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let kubeconfig = certs::write_kubeconfig(&config.data_dir, &creds, addr)?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let api_metrics = Arc::new(crate::metrics::ApiMetrics::new());
    let server = Arc::new(Server {
        store: Arc::new(crate::metrics::MeasuredStore::new(
            config.store.clone(),
            api_metrics.clone(),
        )),
        metrics: api_metrics,
        admin_token: creds.admin_token.clone(),
        node_token: creds.node_token.clone(),
        service_cidrs,
        node_ports: config.node_port_range,
        alloc_lock: tokio::sync::Mutex::new(()),
        shutdown: rx.clone(),
        default_toleration_seconds: std::sync::atomic::AtomicI64::new(300),
        resource_metrics: metrics::Metrics::new(kubelet_tls.clone()),
        kubelet_tls,
        watch_lines: watch_lines::WatchLines::default(),
    });
    rest::bootstrap(&server, service_ip)
        .await
        .map_err(ServeError::Bootstrap)?;
    let mut rx = rx;
    let handle_server = server.clone();
    let ns_server = server.clone();
    let mut ns_rx = rx.clone();
    let collector = tokio::spawn(metrics::run(server.clone(), rx.clone()));
    let task = tokio::spawn(async move {
        let controller = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = ns_rx.changed() => break,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                        if let Err(e) = rest::reconcile_namespaces(&ns_server).await {
                            warn!(error = %e, "namespace controller");
                        }
                    }
                }
            }
        });
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = rx.changed() => break,
                accepted = listener.accept() => {
                    let Ok((tcp, peer)) = accepted else { continue };
                    let acceptor = acceptor.clone();
                    let server = server.clone();
                    conns.spawn(async move {
                        let tls = match acceptor.accept(tcp).await {
                            Ok(t) => t,
                            Err(e) => {
                                debug!(%peer, error = %e, "tls handshake failed");
                                return;
                            }
                        };
                        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let server = server.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(measure::handle(server, req.map(Body::new)).await)
                            }
                        });
                        let builder = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        );
                        if let Err(e) = builder
                            .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), svc)
                            .await
                        {
                            debug!(%peer, error = %e, "connection ended");
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.abort_all();
        while conns.join_next().await.is_some() {}
        controller.abort();
        let _ = controller.await;
        collector.abort();
        let _ = collector.await;
        info!("api server stopped");
    });
    info!(%addr, "api server listening");
    Ok(ServerHandle {
        addr,
        kubeconfig,
        admin_token: creds.admin_token,
        node_token: creds.node_token,
        shutdown: tx,
        task,
        server: handle_server,
    })
}

/// Decodes `%XX` and `+` in a query component.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query parameters of a request.
pub(crate) fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// What a resource path names.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) info: &'static ResourceInfo,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) sub: Option<String>,
    /// Legacy `/watch/` path.
    pub(crate) watch_path: bool,
}

impl Target {
    /// The store key of the named object.
    pub(crate) fn key(&self, name: &str) -> String {
        object_key(self.info, self.namespace.as_deref(), name)
    }
    /// The store prefix of the collection.
    pub(crate) fn prefix(&self) -> String {
        match &self.namespace {
            Some(ns) if self.info.namespaced => format!("{}{}/", self.info.key_prefix(), ns),
            _ => self.info.key_prefix(),
        }
    }
}

/// The store key of an object.
pub(crate) fn object_key(info: &ResourceInfo, ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) if info.namespaced => format!("{}{}/{}", info.key_prefix(), ns, name),
        _ => format!("{}{}", info.key_prefix(), name),
    }
}

/// Parses `/api/v1/...` or `/apis/{g}/{v}/...` after the group version.
fn parse_target(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let mut rest = rest;
    let mut watch_path = false;
    if rest.first() == Some(&"watch") {
        watch_path = true;
        rest = &rest[1..];
    }
    let served = |plural: &str| {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    };
    let mut namespace = None;
    if rest.len() >= 3 && rest[0] == "namespaces" {
        if let Some(info) = served(rest[2]).filter(|i| i.namespaced) {
            namespace = Some(rest[1].to_string());
            let tail = &rest[3..];
            if tail.len() > 2 {
                return None;
            }
            return Some(Target {
                info,
                namespace,
                name: tail.first().map(|s| s.to_string()),
                sub: tail.get(1).map(|s| s.to_string()),
                watch_path,
            });
        }
    }
    let info = served(rest.first()?)?;
    let tail = &rest[1..];
    if tail.len() > 2 {
        return None;
    }
    if info.namespaced {
        namespace = None;
    }
    Some(Target {
        info,
        namespace,
        name: tail.first().map(|s| s.to_string()),
        sub: tail.get(1).map(|s| s.to_string()),
        watch_path,
    })
}

/// A JSON response.
pub(crate) fn json_response(code: StatusCode, v: &Value) -> Response {
    typed_response(code, v.to_string().into_bytes(), "application/json")
}

/// A response with `body` as it is and its content type.
pub(crate) fn typed_response(
    code: StatusCode,
    body: Vec<u8>,
    content_type: &'static str,
) -> Response {
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn authenticate(server: &Server, headers: &HeaderMap) -> Option<Identity> {
    let h = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = h.strip_prefix("Bearer ")?.trim();
    if constant_eq(token, &server.admin_token) {
        Some(Identity::Admin)
    } else if constant_eq(token, &server.node_token) {
        Some(Identity::Node)
    } else {
        None
    }
}

fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The Kubernetes verb of a resource request.
pub(crate) fn verb(method: &Method, t: &Target, query: &HashMap<String, String>) -> &'static str {
    let watch = t.watch_path || query.get("watch").is_some_and(|w| w == "true" || w == "1");
    match *method {
        Method::GET if watch => "watch",
        Method::GET if t.name.is_some() => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if t.name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

/// What the node token may do.
fn node_allowed(t: &Target, verb: &str) -> bool {
    let read = matches!(verb, "get" | "list" | "watch");
    match (t.info.group, t.info.plural, t.sub.as_deref()) {
        ("", "nodes", _) => true,
        ("coordination.k8s.io", "leases", _) => t.namespace.as_deref() == Some("kube-node-lease"),
        // the kubelet finishes a graceful deletion with a grace-0 delete
        ("", "pods", None) => read || verb == "delete",
        ("", "pods", Some("status")) => matches!(verb, "get" | "update" | "patch"),
        ("", "pods", Some("binding")) => read,
        ("", "events", None) => matches!(verb, "create" | "patch" | "update"),
        // env vars and volumes of its pods (Kubernetes' Node authorizer limits these to the
        // objects its pods reference; skiff's node token is not per node, so: get only)
        ("", "configmaps" | "secrets", None) => verb == "get",
        ("", "services" | "endpoints", None) => read,
        // the agent's Service proxy and cluster DNS watch them (kube-proxy's node-proxier)
        ("discovery.k8s.io", "endpointslices", None) => read,
        _ => false,
    }
}

async fn handle(server: Arc<Server>, req: Request<Body>) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = tracing::debug_span!("request", %method, %path);
    let _e = span.enter();
    let Some(identity) = authenticate(&server, req.headers()) else {
        return ApiError::unauthorized().into_response();
    };
    let query = parse_query(req.uri().query());
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let get = method == Method::GET;
    // non-resource paths
    match segs.as_slice() {
        ["healthz" | "livez" | "readyz", ..] if get => {
            return (StatusCode::OK, "ok").into_response();
        }
        ["version"] if get => return json_response(StatusCode::OK, &discovery::version()),
        ["metrics"] if get => return measure::metrics(&server, identity),
        ["openapi", "v2"] if get => return rest::openapi_v2(),
        ["openapi", "v3", ..] if get => return ApiError::no_route().into_response(),
        ["api"] | ["apis"] if get => {
            let core = segs[0] == "api";
            if let Some(v) = discovery::aggregated_version(&accept) {
                let mut r = json_response(StatusCode::OK, &discovery::aggregated(core, v));
                if let Ok(ct) = header::HeaderValue::from_str(&format!(
                    "application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList"
                )) {
                    r.headers_mut().insert(header::CONTENT_TYPE, ct);
                }
                return r;
            }
            let doc = if core {
                discovery::api_versions()
            } else {
                discovery::api_group_list()
            };
            return json_response(StatusCode::OK, &doc);
        }
        ["api", v] if get => {
            return match discovery::resource_list("", v) {
                Some(d) => json_response(StatusCode::OK, &d),
                None => ApiError::no_route().into_response(),
            };
        }
        // the group's resource list is discovery's (below); its resources are the collector's
        ["apis", metrics::GROUP, metrics::VERSION, rest @ ..] if get && !rest.is_empty() => {
            if identity != Identity::Admin {
                return ApiError::forbidden("metrics.k8s.io is for the admin").into_response();
            }
            return metrics::serve(&server, rest, &query)
                .await
                .unwrap_or_else(|e| e.into_response());
        }
        ["apis", g, v] if get => {
            return match discovery::resource_list(g, v) {
                Some(d) => json_response(StatusCode::OK, &d),
                None => ApiError::no_route().into_response(),
            };
        }
        _ => {}
    }
    let target = match segs.as_slice() {
        ["api", v, rest @ ..] => parse_target("", v, rest),
        ["apis", g, v, rest @ ..] => parse_target(g, v, rest),
        _ => None,
    };
    let Some(target) = target else {
        return ApiError::no_route().into_response();
    };
    let verb = verb(&method, &target, &query);
    if identity == Identity::Node && !node_allowed(&target, verb) {
        let res = match &target.sub {
            Some(s) => format!("{}/{}", target.info.plural, s),
            None => target.info.plural.to_string(),
        };
        let mut msg = format!(
            "{} is forbidden: User \"system:node\" cannot {verb} resource \"{res}\" in API group \"{}\"",
            target.info.plural, target.info.group
        );
        if let Some(ns) = &target.namespace {
            msg.push_str(&format!(" in the namespace \"{ns}\""));
        }
        return ApiError::forbidden(msg).into_response();
    }
    if proxy::is_pod_stream(&target) {
        return proxy::pod_stream(&server, &target, req)
            .await
            .unwrap_or_else(|e| {
                debug!(code = e.code, message = %e.message, "pod stream failed");
                e.into_response()
            });
    }
    let headers = req.headers().clone();
    // bodies
    let body = if matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        let too_big = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n > MAX_BODY);
        let too_large = || {
            ApiError::new(
                413,
                "RequestEntityTooLarge",
                "the request body is too large (limit 3 MiB)",
            )
            .into_response()
        };
        if too_big {
            return too_large();
        }
        match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
            Ok(b) => b,
            Err(_) => return too_large(),
        }
    } else {
        Default::default()
    };
    let ctx = rest::Ctx {
        server: &server,
        target: &target,
        query: &query,
        headers: &headers,
        accept: &accept,
    };
    let result = match verb {
        "watch" => watch::watch(&ctx).await,
        "get" => rest::get(&ctx).await,
        "list" => rest::list(&ctx).await,
        "create" => rest::create(&ctx, &body).await,
        "update" => rest::update(&ctx, &body).await,
        "patch" => rest::patch(&ctx, &body).await,
        "delete" => rest::delete(&ctx, &body).await,
        "deletecollection" => rest::delete_collection(&ctx, &body).await,
        _ => Err(ApiError::method_not_allowed()),
    };
    match result {
        Ok(r) => r,
        Err(e) => {
            debug!(code = e.code, reason = e.reason, message = %e.message, "request failed");
            e.into_response()
        }
    }
}

//! The agent's HTTPS endpoint (the kubelet's port 10250): container logs, exec and attach
//! for the master's `pods/log`, `pods/exec` and `pods/attach` proxy.
//!
//! - TLS with a self-signed serving certificate kept under `<root-dir>/pki` (the kubelet's
//!   default); only callers with a client certificate that chains to the cluster CA
//!   (`--ca-file`) are served, anything else gets 401.
//! - `GET /containerLogs/{ns}/{pod}/{container}` reads the CRI log files the shim writes
//!   (`follow`, `tailLines`, `sinceSeconds`, `sinceTime`, `previous`, `timestamps`,
//!   `limitBytes`; pure parts in [`crate::logs`]).
//! - `GET|POST /exec/{ns}/{pod}/{container}?command=…` and `/attach/…` upgrade to WebSocket
//!   with the remotecommand subprotocols ([`crate::remotecommand`]). Exec runs
//!   `skiff runtime --root <run-dir>/runtime exec` as a child process with piped stdio, or
//!   with `--tty --console-socket` whose pty master comes back to us (resize through it).
//!   Attach streams the container's output from its log as it is written.
//! - `GET /stats/summary` and `GET /metrics/resource`: resource usage ([`crate::stats`]).

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::config::Config;
use crate::logs::{Decoder, LogLine, LogQuery, Stream};
use crate::remotecommand::{self, Incoming as WsIn, STDERR, STDOUT, StreamQuery};
use crate::shim;
use crate::streams::Out;

/// Errors of the endpoint's setup.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A file could not be read or written.
    #[error("cannot {what} {path}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The serving certificate could not be made.
    #[error("cannot make the serving certificate")]
    Cert(#[source] rcgen::Error),
    /// The TLS configuration is not valid (certificate, key or CA).
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The port could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// How often a followed log and a finished container are looked at again.
const POLL: Duration = Duration::from_millis(100);
/// How long output still drains after an exec'd process ended (background children may
/// hold its pipes forever).
const DRAIN: Duration = Duration::from_secs(2);
/// How long an exec with a terminal waits for the client's first resize before it starts
/// the process with a terminal of size 0x0.
const FIRST_RESIZE_WAIT: Duration = Duration::from_secs(1);

/// Binds the endpoint's port on the node IP (port 0: any free port).
pub async fn bind(cfg: &Config) -> Result<tokio::net::TcpListener, ServerError> {
    let addr = SocketAddr::new(cfg.node_ip, cfg.listen_port);
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ServerError + 'a {
    move |source| ServerError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The serving certificate and key (PEM) under `<root-dir>/pki`, made self-signed for the
/// node's name and IP on first use, as the kubelet does without `--tls-cert-file`.
pub fn serving_cert(cfg: &Config) -> Result<(String, String), ServerError> {
    let dir = cfg.root_dir.join("pki");
    let (crt, key) = (dir.join("kubelet.crt"), dir.join("kubelet.key"));
    if crt.exists() && key.exists() {
        let c = std::fs::read_to_string(&crt).map_err(io_err("read", &crt))?;
        let k = std::fs::read_to_string(&key).map_err(io_err("read", &key))?;
        return Ok((c, k));
    }
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let kp = rcgen::KeyPair::generate().map_err(ServerError::Cert)?;
    let mut params =
        rcgen::CertificateParams::new(vec![cfg.node_name.clone()]).map_err(ServerError::Cert)?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(cfg.node_ip));
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{}@{}", cfg.node_name, chrono::Utc::now().timestamp()),
    );
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = chrono::Utc::now();
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(
        chrono::Datelike::year(&now) + 1,
        chrono::Datelike::month(&now) as u8,
        1,
    );
    let cert = params.self_signed(&kp).map_err(ServerError::Cert)?;
    let (c, k) = (cert.pem(), kp.serialize_pem());
    write_private(&key, &k)?;
    write_private(&crt, &c)?;
    Ok((c, k))
}

fn write_private(path: &Path, text: &str) -> Result<(), ServerError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io_err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename", path))
}

/// TLS for the endpoint: the serving certificate, client certificates checked against the
/// cluster CA (a connection without one is accepted and answered 401).
pub fn tls_config(cfg: &Config) -> Result<rustls::ServerConfig, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (crt, key) = serving_cert(cfg)?;
    let tls = |e: &dyn std::fmt::Display| ServerError::Tls(e.to_string());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(crt.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| tls(&e))?;
    let ca = std::fs::read(&cfg.ca_file).map_err(io_err("read", &cfg.ca_file))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

struct State {
    cfg: Arc<Config>,
    client: kube::Client,
    stats: Arc<crate::stats::Stats>,
}

/// Serves the endpoint on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    cfg: Arc<Config>,
    client: kube::Client,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let reader = crate::stats::Reader::new(&cfg.cgroup_root, "/proc");
    let stats = Arc::new(crate::stats::Stats::new(
        reader,
        &cfg.cgroup_prefix,
        &cfg.node_name,
    ));
    let mut conns = tokio::task::JoinSet::new();
    conns.spawn(crate::stats::sample_loop(stats.clone(), client.clone()));
    let state = Arc::new(State { cfg, client, stats });
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let state = state.clone();
                conns.spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "tls handshake failed");
                            return;
                        }
                    };
                    // the verifier let only CA-signed certificates through
                    let authed = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(state, authed, req).await) }
                    });
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .with_upgrades()
                        .await
                    {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// A request that fails, with the kubelet's status and text.
#[derive(Debug)]
struct HttpError {
    code: StatusCode,
    message: String,
}

impl HttpError {
    fn new(code: StatusCode, message: impl Into<String>) -> HttpError {
        HttpError {
            code,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, message)
    }
    fn internal(e: impl std::fmt::Display) -> HttpError {
        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

fn text(code: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(state: Arc<State>, authed: bool, req: Request<Incoming>) -> Response<Body> {
    if !authed {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
    }
    let path = req.uri().path().to_string();
    let params: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let params: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    let span = tracing::debug_span!("kubelet request", %method, %path);
    let _e = span.enter();
    let result = match (&method, segs.as_slice()) {
        (&Method::GET, ["healthz"]) => Ok(text(StatusCode::OK, "ok")),
        (&Method::GET, ["metrics"]) => crate::metrics::global()
            .encode()
            .map(|t| {
                let mut r = text(StatusCode::OK, t);
                let ct = header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE);
                r.headers_mut().insert(header::CONTENT_TYPE, ct);
                r
            })
            .map_err(HttpError::internal),
        (&Method::GET, ["containerLogs", ns, pod, c]) => {
            container_logs(&state, ns, pod, c, &params).await
        }
        (&Method::GET, ["stats", "summary"] | ["metrics", "resource"]) => {
            stats(&state, segs[0] == "metrics").await
        }
        (&Method::GET | &Method::POST, [verb @ ("exec" | "attach"), ns, pod, c]) => {
            streams(&state, *verb == "exec", ns, pod, c, &params, req).await
        }
        (&Method::GET | &Method::POST, ["portForward", ns, pod]) => {
            port_forward(&state, ns, pod, req).await
        }
        _ => Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "404 page not found\n",
        )),
    };
    result.unwrap_or_else(|e| {
        tracing::debug!(code = %e.code, message = %e.message, "kubelet request failed");
        text(e.code, e.message)
    })
}

/// `/stats/summary` (JSON) or `/metrics/resource` (Prometheus text).
async fn stats(state: &State, prometheus: bool) -> Result<Response<Body>, HttpError> {
    let summary = crate::stats::collect(&state.stats, &state.client)
        .await
        .map_err(|e| HttpError::internal(shim::error_chain(&e)))?;
    let (body, kind) = if prometheus {
        let text = crate::stats::resource_metrics(&summary);
        (
            Bytes::from(text),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    } else {
        let json = serde_json::to_vec(&summary).map_err(HttpError::internal)?;
        (Bytes::from(json), "application/json")
    };
    let mut r = text(StatusCode::OK, body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
    Ok(r)
}

/// A container of a pod on this node.
struct Target {
    pod: String,
    container: String,
    pod_dir: PathBuf,
    log_dir: PathBuf,
}

impl Target {
    fn log(&self, restart: u32) -> PathBuf {
        self.log_dir.join(format!("{restart}.log"))
    }
}

/// A pod bound to this node.
async fn find_pod(state: &State, ns: &str, pod: &str) -> Result<Pod, HttpError> {
    let api: kube::Api<Pod> = kube::Api::namespaced(state.client.clone(), ns);
    api.get_opt(pod)
        .await
        .map_err(HttpError::internal)?
        .filter(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                == Some(state.cfg.node_name.as_str())
        })
        .ok_or_else(|| HttpError::new(StatusCode::NOT_FOUND, format!("pod {ns}/{pod} not found")))
}

async fn find(state: &State, ns: &str, pod: &str, container: &str) -> Result<Target, HttpError> {
    let p = find_pod(state, ns, pod).await?;
    let spec = p.spec.unwrap_or_default();
    let known = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == container);
    if !known {
        return Err(HttpError::bad(format!(
            "container {container} is not valid for pod {pod}"
        )));
    }
    let uid = p.metadata.uid.unwrap_or_default();
    Ok(Target {
        pod: pod.to_string(),
        container: container.to_string(),
        pod_dir: state.cfg.pod_run_dir(&uid),
        log_dir: state.cfg.pod_log_dir(ns, pod, &uid).join(container),
    })
}

fn latest_run(t: &Target) -> Result<shim::RunRecord, HttpError> {
    shim::latest_record(&t.pod_dir, &t.container)
        .map_err(HttpError::internal)?
        .ok_or_else(|| {
            HttpError::bad(format!(
                "container \"{}\" in pod \"{}\" is waiting to start: ContainerCreating",
                t.container, t.pod
            ))
        })
}

async fn container_logs(
    state: &State,
    ns: &str,
    pod: &str,
    container: &str,
    params: &[(&str, &str)],
) -> Result<Response<Body>, HttpError> {
    let q = LogQuery::parse(params.iter().copied(), chrono::Utc::now())
        .map_err(|e| HttpError::bad(e.to_string()))?;
    let t = find(state, ns, pod, container).await?;
    let latest = latest_run(&t)?;
    let restart = if q.previous {
        latest.restart.checked_sub(1).ok_or_else(|| {
            HttpError::bad(format!(
                "previous terminated container \"{container}\" in pod \"{pod}\" not found"
            ))
        })?
    } else {
        latest.restart
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(stream_log(t, restart, q, tx));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
    });
    let mut r = Response::new(StreamBody::new(body).boxed_unsync());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    Ok(r)
}

/// Reads a CRI log file as it grows: whole records only, decoded into lines.
struct LogReader {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    buf: Vec<u8>,
    decoder: Decoder,
}

impl LogReader {
    fn new(path: PathBuf) -> LogReader {
        LogReader {
            path,
            file: None,
            buf: Vec::new(),
            decoder: Decoder::default(),
        }
    }

    /// Opens the file at its end (attach: only what is written from now on).
    async fn at_end(path: PathBuf) -> LogReader {
        let mut r = LogReader::new(path);
        if let Ok(mut f) = tokio::fs::File::open(&r.path).await
            && tokio::io::AsyncSeekExt::seek(&mut f, std::io::SeekFrom::End(0))
                .await
                .is_ok()
        {
            r.file = Some(f);
        }
        r
    }

    /// The lines written since the last call (a missing file has none yet).
    async fn read_new(&mut self) -> Vec<LogLine> {
        if self.file.is_none() {
            self.file = tokio::fs::File::open(&self.path).await.ok();
        }
        let Some(f) = self.file.as_mut() else {
            return Vec::new();
        };
        // a rotation renames the file away and the shim opens a new one at the path: the
        // old one is read to its end first (the shim writes no more to it)
        let rotated = match (tokio::fs::metadata(&self.path).await, f.metadata().await) {
            (Ok(now), Ok(open)) => {
                use std::os::unix::fs::MetadataExt;
                (now.dev(), now.ino()) != (open.dev(), open.ino())
            }
            _ => false,
        };
        if f.read_to_end(&mut self.buf).await.is_err() {
            return Vec::new();
        }
        if rotated && let Ok(mut next) = tokio::fs::File::open(&self.path).await {
            if next.read_to_end(&mut self.buf).await.is_err() {
                return Vec::new();
            }
            self.file = Some(next);
        }
        let Some(end) = self.buf.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let rest = self.buf.split_off(end + 1);
        let whole = std::mem::replace(&mut self.buf, rest);
        whole
            .split(|b| *b == b'\n')
            .filter(|r| !r.is_empty())
            .filter_map(|r| self.decoder.push(r))
            .collect()
    }
}

/// Sends rendered lines within `limitBytes`; false once the client is gone or the limit is
/// reached.
async fn send_lines(
    tx: &mpsc::Sender<Bytes>,
    lines: Vec<LogLine>,
    q: &LogQuery,
    left: &mut Option<u64>,
) -> bool {
    for l in lines {
        let mut out = l.render(q.timestamps);
        if let Some(n) = left {
            if (out.len() as u64) >= *n {
                out.truncate(*n as usize);
                let _ = tx.send(out.into()).await;
                return false;
            }
            *n -= out.len() as u64;
        }
        if tx.send(out.into()).await.is_err() {
            return false;
        }
    }
    true
}

/// Streams one run's log; with `follow`, new lines until the run ends, then the next run's
/// log if the container was already restarted.
async fn stream_log(t: Target, mut restart: u32, q: LogQuery, tx: mpsc::Sender<Bytes>) {
    let follow = q.follow && !q.previous;
    let mut left = q.limit_bytes;
    let mut reader = LogReader::new(t.log(restart));
    let first = crate::logs::select(reader.read_new().await, &q);
    if !send_lines(&tx, first, &q, &mut left).await || !follow {
        return;
    }
    let since = |l: &LogLine| q.since.is_none_or(|s| l.time >= s);
    loop {
        let lines: Vec<LogLine> = reader.read_new().await.into_iter().filter(since).collect();
        if !lines.is_empty() {
            if !send_lines(&tx, lines, &q, &mut left).await {
                return;
            }
            continue;
        }
        if tx.is_closed() || !t.pod_dir.exists() {
            return;
        }
        let ended = matches!(shim::record(&t.pod_dir, &t.container, restart),
            Ok(Some(r)) if r.finished_at.is_some());
        if ended {
            // the record is written after the log is complete: take what is left
            let lines = reader.read_new().await.into_iter().filter(since).collect();
            if !send_lines(&tx, lines, &q, &mut left).await {
                return;
            }
            if !matches!(
                shim::record(&t.pod_dir, &t.container, restart + 1),
                Ok(Some(_))
            ) {
                return;
            }
            restart += 1;
            reader = LogReader::new(t.log(restart));
            continue;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn header_has(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
    })
}

async fn streams(
    state: &State,
    exec: bool,
    ns: &str,
    pod: &str,
    container: &str,
    params: &[(&str, &str)],
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let q = StreamQuery::parse(params.iter().copied(), exec)
        .map_err(|e| HttpError::bad(e.0.clone()))?;
    let t = find(state, ns, pod, container).await?;
    let run = latest_run(&t)?;
    if run.finished_at.is_some() {
        return Err(HttpError::bad(format!(
            "container {container} is not running in pod {pod}"
        )));
    }
    if !exec && q.stdin && !run.stdin {
        return Err(HttpError::bad(format!(
            "stdin is not enabled for container {container} in pod {pod}: the container spec needs stdin: true"
        )));
    }
    let cfg = state.cfg.clone();
    let log = t.log(run.restart);
    let id = run.id.clone();
    let (pod_dir, name, restart) = (t.pod_dir.clone(), t.container.clone(), run.restart);
    let work = move |incoming: mpsc::Receiver<WsIn>, out: Out, protocol: &'static str| async move {
        if exec {
            exec_process(&cfg, &id, &q, protocol, incoming, out).await
        } else {
            attach(log, &pod_dir, &name, restart, &q, incoming, out).await
        }
    };
    if header_has(&req, header::CONNECTION, "upgrade")
        && header_has(&req, header::UPGRADE, "SPDY/3.1")
    {
        let offered = req
            .headers()
            .get_all(X_STREAM_PROTOCOL_VERSION)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let protocol = remotecommand::negotiate_spdy(offered)
            .map_err(|m| HttpError::new(StatusCode::FORBIDDEN, m))?;
        let q = StreamQuery::parse(params.iter().copied(), exec)
            .map_err(|e| HttpError::bad(e.0.clone()))?;
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(u) => {
                    crate::streams::spdy(TokioIo::new(u), protocol, &q, |i, o| work(i, o, protocol))
                        .await
                }
                Err(e) => tracing::warn!(error = %e, "spdy upgrade failed"),
            }
        });
        return Ok(spdy_upgraded(protocol));
    }
    if !header_has(&req, header::UPGRADE, "websocket")
        || !header_has(&req, header::CONNECTION, "upgrade")
    {
        return Err(HttpError::bad(
            "unable to upgrade connection: neither WebSocket (v5.channel.k8s.io, v4.channel.k8s.io) nor SPDY/3.1 was asked for",
        ));
    }
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| HttpError::bad("missing Sec-WebSocket-Key"))?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let offered = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let protocol = remotecommand::negotiate(offered).ok_or_else(|| {
        HttpError::bad(format!(
            "unable to upgrade connection: none of the requested subprotocols is supported ({})",
            remotecommand::PROTOCOLS.join(", ")
        ))
    })?;
    let q2 = StreamQuery::parse(params.iter().copied(), exec)
        .map_err(|e| HttpError::bad(e.0.clone()))?;
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        crate::streams::websocket(ws, protocol, &q2, |i, o| work(i, o, protocol)).await;
    });
    Ok(websocket_upgraded(&accept, protocol))
}

/// The 101 answer to a WebSocket upgrade with the chosen subprotocol.
fn websocket_upgraded(accept: &str, protocol: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = r.headers_mut();
    h.remove(header::CONTENT_TYPE);
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = header::HeaderValue::from_str(accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        header::HeaderValue::from_static(protocol),
    );
    r
}

/// `/portForward/{ns}/{pod}`: SPDY/3.1 with `portforward.k8s.io`, or the same SPDY inside
/// WebSocket (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31+) ([`crate::portforward`]).
async fn port_forward(
    state: &State,
    ns: &str,
    pod: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let p = find_pod(state, ns, pod).await?;
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    if !running {
        return Err(HttpError::bad(format!(
            "pod {pod} is not running and cannot be port-forwarded"
        )));
    }
    let netns = state.cfg.run_dir.join("netns").join(&uid);
    let netns = netns.exists().then_some(netns);
    let key = format!("{ns}/{pod}");
    if header_has(&req, header::UPGRADE, "SPDY/3.1")
        && header_has(&req, header::CONNECTION, "upgrade")
    {
        let offered: Vec<&str> = req
            .headers()
            .get_all(X_STREAM_PROTOCOL_VERSION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        if !offered.is_empty() && !offered.contains(&crate::portforward::PROTOCOL) {
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts [{:?}]",
                    crate::portforward::PROTOCOL
                ),
            ));
        }
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(u) => match crate::spdy_conn::Connection::start(TokioIo::new(u)) {
                    Ok(c) => crate::portforward::serve(c, key, netns).await,
                    Err(e) => tracing::warn!(error = %e, "spdy connection"),
                },
                Err(e) => tracing::warn!(error = %e, "spdy upgrade failed"),
            }
        });
        return Ok(spdy_upgraded(crate::portforward::PROTOCOL));
    }
    let tunnel = header_has(
        &req,
        header::SEC_WEBSOCKET_PROTOCOL,
        crate::portforward::WS_TUNNEL_PROTOCOL,
    );
    if !(tunnel && header_has(&req, header::UPGRADE, "websocket")) {
        return Err(HttpError::bad(
            "unable to upgrade connection: port-forward needs SPDY/3.1 or WebSocket with SPDY/3.1+portforward.k8s.io",
        ));
    }
    let accept = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| tokio_tungstenite::tungstenite::handshake::derive_accept_key(k.as_bytes()))
        .ok_or_else(|| HttpError::bad("missing Sec-WebSocket-Key"))?;
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(u) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(u), Role::Server, None).await;
                match crate::spdy_conn::Connection::start(crate::portforward::WsBytes::new(ws)) {
                    Ok(c) => crate::portforward::serve(c, key, netns).await,
                    Err(e) => tracing::warn!(error = %e, "spdy connection"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "websocket upgrade failed"),
        }
    });
    Ok(websocket_upgraded(
        &accept,
        crate::portforward::WS_TUNNEL_PROTOCOL,
    ))
}

/// The header that carries the SPDY streaming protocol version.
pub(crate) const X_STREAM_PROTOCOL_VERSION: &str = "x-stream-protocol-version";

/// The 101 answer to a SPDY/3.1 upgrade with the chosen protocol version.
pub(crate) fn spdy_upgraded(protocol: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = r.headers_mut();
    h.remove(header::CONTENT_TYPE);
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("SPDY/3.1"),
    );
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        X_STREAM_PROTOCOL_VERSION,
        header::HeaderValue::from_static(protocol),
    );
    r
}

/// A console socket of our own in a private directory, removed on drop.
struct ConsoleSocket {
    dir: PathBuf,
    path: PathBuf,
    listener: tokio::net::UnixListener,
}

impl ConsoleSocket {
    fn new(run_dir: &Path) -> std::io::Result<ConsoleSocket> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = run_dir
            .join("exec")
            .join(format!("{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("console.sock");
        let listener = tokio::net::UnixListener::bind(&path)?;
        Ok(ConsoleSocket {
            dir,
            path,
            listener,
        })
    }

    /// The pty master the runtime sends.
    async fn receive(&self) -> std::io::Result<OwnedFd> {
        let (stream, _) = self.listener.accept().await?;
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        tokio::task::spawn_blocking(move || {
            skiff_runtime::console::recv_fd(stream.as_raw_fd()).map_err(std::io::Error::other)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the process's input goes.
enum Input {
    Pipe(tokio::process::ChildStdin),
    Pty(std::sync::mpsc::Sender<Vec<u8>>),
}

/// Copies a pipe to a channel as messages.
fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    channel: u8,
    out: Out,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if out.send((channel, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Runs the command in the container through `skiff runtime exec` and relays its stdio.
async fn exec_process(
    cfg: &Config,
    id: &str,
    q: &StreamQuery,
    protocol: &str,
    mut incoming: mpsc::Receiver<WsIn>,
    out: Out,
) -> Result<i32, String> {
    use std::process::Stdio;
    let console = match q.tty {
        true => Some(
            ConsoleSocket::new(&cfg.run_dir)
                .map_err(|e| format!("cannot make a console socket: {e}"))?,
        ),
        false => None,
    };
    // A terminal gets the client's size before the process starts: clients send it as
    // their first resize right after connecting, and a shell that reads its size at once
    // (`stty size`) would otherwise see 0x0. Whatever else arrives first is kept.
    let mut early = Vec::new();
    let mut size = None;
    if q.tty {
        let wait = tokio::time::sleep(FIRST_RESIZE_WAIT);
        tokio::pin!(wait);
        while size.is_none() {
            tokio::select! {
                m = incoming.recv() => match m {
                    Some(WsIn::Resize { width, height }) => size = Some((height, width)),
                    Some(other) => early.push(other),
                    // nobody to run it for
                    None => return Err("the client went away before the process started".into()),
                },
                _ = &mut wait => break,
            }
        }
    }
    let mut early = early.into_iter();
    let mut cmd = tokio::process::Command::new(&cfg.shim_exe);
    cmd.arg("runtime")
        .arg("--root")
        .arg(cfg.runtime_root())
        .arg("exec");
    if let Some(c) = &console {
        cmd.arg("--tty").arg("--console-socket").arg(&c.path);
        if let Some((rows, cols)) = size {
            cmd.arg(format!("--console-size={rows}x{cols}"));
        }
    }
    cmd.arg(id).arg("--").args(&q.command);
    let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    cmd.stdin(piped(q.stdin && !q.tty))
        .stdout(piped(q.stdout && !q.tty))
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", cfg.shim_exe.display()))?;
    tracing::info!(container = %id, command = ?q.command, tty = q.tty, "exec");
    let mut pumps = Vec::new();
    let mut runtime_err = child.stderr.take();
    if q.stderr
        && let Some(e) = runtime_err.take()
    {
        pumps.push(pump(e, STDERR, out.clone()));
    }
    if let Some(o) = child.stdout.take() {
        pumps.push(pump(o, STDOUT, out.clone()));
    }
    let mut input = child.stdin.take().map(Input::Pipe);
    let mut pty: Option<OwnedFd> = None;
    if let Some(c) = &console {
        let master = tokio::select! {
            m = c.receive() => m.map_err(|e| format!("no terminal from the runtime: {e}"))?,
            status = child.wait() => {
                let mut msg = String::new();
                if let Some(mut e) = runtime_err.take() {
                    let _ = e.read_to_string(&mut msg).await;
                }
                return Err(format!("exec failed ({}): {}", status.map(|s| s.to_string()).unwrap_or_default(), msg.trim()));
            }
        };
        let reader = master.try_clone().map_err(|e| e.to_string())?;
        let writer = master.try_clone().map_err(|e| e.to_string())?;
        let to_client = out.clone();
        let (tx, rx) = mpsc::channel::<()>(1);
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(reader);
            let mut buf = vec![0u8; 32 * 1024];
            // EIO once every slave descriptor is closed (the process ended)
            while let Ok(n) = f.read(&mut buf) {
                if n == 0
                    || to_client
                        .blocking_send((STDOUT, buf[..n].to_vec()))
                        .is_err()
                {
                    break;
                }
            }
            drop(tx);
        });
        let mut done = rx;
        pumps.push(tokio::spawn(async move {
            let _ = done.recv().await;
        }));
        if q.stdin {
            let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
            std::thread::spawn(move || {
                let mut f = std::fs::File::from(writer);
                while let Ok(data) = rx.recv() {
                    if f.write_all(&data).is_err() {
                        return;
                    }
                }
            });
            input = Some(Input::Pty(tx));
        }
        pty = Some(master);
    }
    let mut client_gone = false;
    let status = loop {
        let first = early.next();
        let next = async {
            match first {
                Some(m) => Some(m),
                None => incoming.recv().await,
            }
        };
        tokio::select! {
            msg = next, if !client_gone => match msg {
                Some(WsIn::Stdin(bytes)) => {
                    let failed = match &mut input {
                        Some(Input::Pipe(p)) => p.write_all(&bytes).await.is_err(),
                        Some(Input::Pty(tx)) => tx.send(bytes).is_err(),
                        None => false,
                    };
                    if failed {
                        input = None;
                    }
                }
                Some(WsIn::Close(remotecommand::STDIN)) => {
                    if matches!(input, Some(Input::Pipe(_))) {
                        input = None;
                    }
                }
                Some(WsIn::Resize { width, height }) => {
                    if let Some(m) = &pty {
                        let _ = skiff_runtime::sys::set_winsize(m.as_raw_fd(), height, width);
                    }
                }
                Some(_) => {}
                None => {
                    // the client went away: end the process as the kubelet's stream does
                    tracing::debug!(container = %id, protocol, "exec client gone");
                    client_gone = true;
                    let _ = child.start_kill();
                }
            },
            status = child.wait() => break status,
        }
    };
    drop(input);
    drop(pty);
    for p in pumps {
        let _ = tokio::time::timeout(DRAIN, p).await;
    }
    let status = status.map_err(|e| e.to_string())?;
    match status.code() {
        Some(code) => Ok(code),
        None => Err(format!("exec process ended by {status}")),
    }
}

/// Attach: the container's output from now on, from its log as the shim writes it, until
/// the container ends; with stdin, the client's input goes to the shim's stdin socket of the
/// run (its end of file ends this attach's input; the shim closes the container's stdin
/// when the container has `stdinOnce`); with `tty`, resizes go to the shim, which sets the
/// size of the run's terminal.
async fn attach(
    log: PathBuf,
    pod_dir: &Path,
    name: &str,
    restart: u32,
    q: &StreamQuery,
    mut incoming: mpsc::Receiver<WsIn>,
    out: Out,
) -> Result<i32, String> {
    let mut reader = LogReader::at_end(log).await;
    let mut stdin = match q.stdin {
        true => tokio::net::UnixStream::connect(shim::stdin_socket(pod_dir, name, restart))
            .await
            .ok(),
        false => None,
    };
    loop {
        // looked at before the log is read: the shim records the end only after the last
        // output is in the log, so lines written just before the end are still sent
        let ended = matches!(shim::record(pod_dir, name, restart),
            Ok(Some(r)) if r.finished_at.is_some());
        for l in reader.read_new().await {
            let channel = match l.stream {
                Stream::Stderr if !q.tty => STDERR,
                _ => STDOUT,
            };
            let wanted = if channel == STDERR {
                q.stderr
            } else {
                q.stdout
            };
            if wanted && out.send((channel, l.text.to_vec())).await.is_err() {
                return Ok(0);
            }
        }
        if ended || !pod_dir.exists() {
            return Ok(0);
        }
        tokio::select! {
            msg = incoming.recv() => match msg {
                Some(WsIn::Stdin(bytes)) => {
                    if let Some(s) = &mut stdin
                        && s.write_all(&bytes).await.is_err()
                    {
                        stdin = None;
                    }
                }
                Some(WsIn::Close(remotecommand::STDIN)) => stdin = None,
                Some(WsIn::Resize { width, height }) if q.tty => {
                    let req = shim::Request::Resize(shim::ResizeRequest {
                        name: name.to_string(),
                        restart,
                        width,
                        height,
                    });
                    let dir = pod_dir.to_path_buf();
                    let answer = tokio::task::spawn_blocking(move || {
                        shim::call(&dir, &req, Duration::from_secs(5))
                    })
                    .await;
                    if !matches!(answer, Ok(Ok(shim::Response::Ok))) {
                        tracing::debug!(container = name, ?answer, "attach resize not applied");
                    }
                }
                Some(_) => {}
                None => return Ok(0),
            },
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

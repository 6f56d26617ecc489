//! The registry client: the OCI distribution API through `oci-client`.
//!
//! [`Registry::resolve`] turns a reference into the manifest of one platform (going through an
//! image index or Docker manifest list when the registry serves one), verifying the digest of
//! every manifest it fetches; [`Registry::fetch_blob`] streams a blob, resuming from an offset.
//!
//! Auth is anonymous, the bearer-token challenge flow (Docker Hub's), or basic auth from the
//! options or a Docker `config.json` / containers `auth.json`. Registries on loopback and those
//! listed in [`RegistryOptions::insecure_registries`] are spoken to over plain HTTP, all others
//! over HTTPS (Docker's rule).
//!
//! TLS goes through rustls without a bundled crypto provider: the program must install one
//! (`rustls::crypto::ring::default_provider().install_default()`) before the first request.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::Client;
use oci_client::RegistryOperation;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_spec::image::{Arch, Descriptor, ImageIndex, Os, Platform, PlatformBuilder};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use crate::digest::{Digest, Hasher};
use crate::reference::Reference;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What we ask registries for, in order of preference.
const ACCEPTED_MANIFESTS: &[&str] = &[
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

const USER_AGENT: &str = concat!("skiff/", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence on an open connection before a request counts as failed.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Errors of the registry client.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// [`RegistryOptions::platform`] is not `os/architecture[/variant]`.
    #[error("invalid platform {0:?}: expected os/architecture[/variant], e.g. linux/arm64/v8")]
    InvalidPlatform(String),
    /// A username was given without a password, or the other way round.
    #[error("incomplete credentials: a username and a password go together")]
    IncompleteCredentials,
    /// The auth file exists but cannot be read or parsed.
    #[error("cannot read registry credentials from {path}: {reason}")]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client for registry {registry}: {reason}")]
    Client {
        /// Registry host.
        registry: String,
        /// Why.
        reason: String,
    },
    /// Connecting failed (refused, timed out, DNS, TLS handshake).
    #[error("registry {registry} is unreachable: {reason}")]
    Unreachable {
        /// Registry host.
        registry: String,
        /// The root cause, e.g. `connection refused`.
        reason: String,
    },
    /// The registry answered 401 or 403.
    #[error("unauthorized: registry {registry} {refusal} for {repository} ({status})")]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// Repository asked for.
        repository: String,
        /// `refused the credentials`, `requires credentials` or `denied access`.
        refusal: &'static str,
        /// HTTP status.
        status: u16,
    },
    /// The registry answered 429.
    #[error(
        "rate limited: registry {registry} refuses more requests for {repository} for now (429)"
    )]
    RateLimited {
        /// Registry host.
        registry: String,
        /// Repository asked for.
        repository: String,
    },
    /// No manifest under that tag or digest (or no such repository).
    #[error("manifest unknown: {reference}")]
    ManifestUnknown {
        /// The reference asked for.
        reference: String,
    },
    /// No blob with that digest in the repository.
    #[error("blob unknown: {digest} in {name}")]
    BlobUnknown {
        /// `registry/repository`.
        name: String,
        /// The blob.
        digest: Digest,
    },
    /// The index has no manifest for the wanted platform.
    #[error("no manifest for platform {platform} in {reference} (available: {available})")]
    NoMatchingPlatform {
        /// Wanted platform.
        platform: String,
        /// The reference resolved.
        reference: String,
        /// Platforms the index offers, comma separated.
        available: String,
    },
    /// A manifest does not hash to the digest it was asked for or announced with.
    #[error("manifest digest mismatch for {reference}: expected {expected}, got {actual}")]
    ManifestDigest {
        /// The reference fetched.
        reference: String,
        /// Digest asked for or announced.
        expected: String,
        /// Digest of the bytes served.
        actual: String,
    },
    /// A manifest that cannot be used: bad JSON, wrong size, nested index.
    #[error("invalid manifest {reference}: {reason}")]
    InvalidManifest {
        /// The reference fetched.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// A manifest of a kind we do not pull (Docker schema 1, artifacts).
    #[error("unsupported manifest media type {media_type} for {reference}")]
    UnsupportedMediaType {
        /// The reference fetched.
        reference: String,
        /// Its media type.
        media_type: String,
    },
    /// A blob served whole does not hash to its digest.
    #[error("blob digest mismatch for {digest}: content hashes to {actual}")]
    BlobDigest {
        /// The blob asked for.
        digest: Digest,
        /// What the content hashed to.
        actual: String,
    },
    /// A blob is longer or shorter than its descriptor says.
    #[error("blob size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    BlobSize {
        /// The blob.
        digest: Digest,
        /// Descriptor size.
        expected: u64,
        /// Bytes the registry sent (counting from 0, including a resumed offset).
        actual: u64,
    },
    /// Resuming past the end of a blob.
    #[error("offset {offset} is past the end of blob {digest} ({size} bytes)")]
    OffsetPastEnd {
        /// The blob.
        digest: Digest,
        /// Requested offset.
        offset: u64,
        /// Its size.
        size: u64,
    },
    /// The connection failed in the middle of a blob; resume from what was written.
    #[error("connection to registry {registry} lost while fetching blob {digest}: {reason}")]
    Interrupted {
        /// Registry host.
        registry: String,
        /// The blob.
        digest: Digest,
        /// The root cause.
        reason: String,
    },
    /// The sink refused the bytes.
    #[error("cannot write blob {digest}")]
    Write {
        /// The blob.
        digest: Digest,
        /// The write error.
        #[source]
        source: io::Error,
    },
    /// Any other HTTP error status.
    #[error("registry {registry} answered {status} for {what}: {message}")]
    Status {
        /// Registry host.
        registry: String,
        /// The manifest or blob asked for.
        what: String,
        /// HTTP status.
        status: u16,
        /// The registry's explanation.
        message: String,
    },
    /// The registry broke the protocol in some other way.
    #[error("registry {registry} failed the request for {what}: {reason}")]
    Protocol {
        /// Registry host.
        registry: String,
        /// The manifest or blob asked for.
        what: String,
        /// What went wrong.
        reason: String,
    },
}

impl RegistryError {
    /// Whether retrying later may succeed: connection problems, rate limits, 5xx answers.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. }
            | RegistryError::Interrupted { .. }
            | RegistryError::RateLimited { .. } => true,
            RegistryError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// How to reach registries and whom to be.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `host[:port]` allowed over plain HTTP besides loopback registries.
    pub insecure_registries: Vec<String>,
    /// Docker `config.json` (or containers `auth.json`) to take credentials from; `None` looks
    /// in `$DOCKER_CONFIG/config.json`, `~/.docker/config.json`, then
    /// `$XDG_RUNTIME_DIR/containers/auth.json`.
    pub auth_file: Option<PathBuf>,
    /// `os/architecture[/variant]` to pick from multi-platform images, e.g. `linux/arm64/v8`.
    pub platform: String,
    /// Basic-auth user for every registry; wins over the auth file.
    pub username: Option<String>,
    /// Password going with [`RegistryOptions::username`].
    pub password: Option<String>,
}

impl Default for RegistryOptions {
    /// No insecure registries, the default auth files, `linux/amd64`.
    fn default() -> RegistryOptions {
        RegistryOptions {
            insecure_registries: Vec::new(),
            auth_file: None,
            platform: "linux/amd64".to_string(),
            username: None,
            password: None,
        }
    }
}

/// How a registry is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Plain HTTP: loopback or listed as insecure.
    Http,
    /// HTTPS with certificate verification.
    Https,
}

/// Docker's rule: loopback registries and those listed as insecure over HTTP, others HTTPS.
pub fn protocol_for(opts: &RegistryOptions, r: &Reference) -> Protocol {
    let listed = opts.insecure_registries.iter().any(|entry| {
        let entry = entry
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        entry.eq_ignore_ascii_case(r.registry())
    });
    if listed || r.is_loopback_registry() {
        Protocol::Http
    } else {
        Protocol::Https
    }
}

/// A platform manifest and where it came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Digest of [`Resolved::manifest`].
    pub manifest_digest: Digest,
    /// The platform manifest, raw bytes exactly as served.
    pub manifest: Vec<u8>,
    /// [`OCI_MANIFEST`] or [`DOCKER_MANIFEST`].
    pub media_type: String,
    /// The index or manifest list the manifest was picked from, with its digest.
    pub index: Option<(Digest, Vec<u8>)>,
}

/// One registry host's HTTP client (holding its token cache) and credentials.
#[derive(Clone)]
struct Conn {
    client: Client,
    auth: RegistryAuth,
}

impl Conn {
    fn anonymous(&self) -> bool {
        matches!(self.auth, RegistryAuth::Anonymous)
    }
}

/// A registry client; cheap to share, one HTTP client per registry host inside.
pub struct Registry {
    opts: RegistryOptions,
    conns: Mutex<HashMap<String, Conn>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("insecure_registries", &self.opts.insecure_registries)
            .field("platform", &self.opts.platform)
            .finish_non_exhaustive()
    }
}

/// What a request was about, for error messages.
enum Target<'a> {
    Manifest(&'a str),
    Blob(&'a Digest),
}

/// Context to turn an `oci-client` error into ours.
struct Ctx<'a> {
    registry: &'a str,
    repository: &'a str,
    target: Target<'a>,
    anonymous: bool,
}

impl Ctx<'_> {
    fn what(&self) -> String {
        match self.target {
            Target::Manifest(r) => format!("manifest {r}"),
            Target::Blob(d) => format!("blob {d}"),
        }
    }

    fn unauthorized(&self, status: u16) -> RegistryError {
        let refusal = match (status, self.anonymous) {
            (403, _) => "denied access",
            (_, true) => "requires credentials",
            (_, false) => "refused the credentials",
        };
        RegistryError::Unauthorized {
            registry: self.registry.to_string(),
            repository: self.repository.to_string(),
            refusal,
            status,
        }
    }

    fn unknown(&self) -> RegistryError {
        match self.target {
            Target::Manifest(r) => RegistryError::ManifestUnknown {
                reference: r.to_string(),
            },
            Target::Blob(d) => RegistryError::BlobUnknown {
                name: format!("{}/{}", self.registry, self.repository),
                digest: d.clone(),
            },
        }
    }

    fn status(&self, status: u16, message: &str) -> RegistryError {
        match status {
            401 | 403 => self.unauthorized(status),
            404 => self.unknown(),
            429 => RegistryError::RateLimited {
                registry: self.registry.to_string(),
                repository: self.repository.to_string(),
            },
            _ => RegistryError::Status {
                registry: self.registry.to_string(),
                what: self.what(),
                status,
                message: shorten(message),
            },
        }
    }

    fn protocol(&self, reason: impl ToString) -> RegistryError {
        RegistryError::Protocol {
            registry: self.registry.to_string(),
            what: self.what(),
            reason: reason.to_string(),
        }
    }

    /// Maps an `oci-client` error.
    fn map(&self, e: OciDistributionError) -> RegistryError {
        match e {
            OciDistributionError::RequestError(e) => {
                if e.is_connect() || e.is_timeout() {
                    RegistryError::Unreachable {
                        registry: self.registry.to_string(),
                        reason: root_cause(&e),
                    }
                } else {
                    self.protocol(root_cause(&e))
                }
            }
            OciDistributionError::UnauthorizedError { .. } => self.unauthorized(401),
            OciDistributionError::AuthenticationFailure(_) => self.unauthorized(401),
            OciDistributionError::RegistryError { envelope, .. } => {
                let first = envelope.errors.first();
                match first.map(|e| &e.code) {
                    Some(OciErrorCode::ManifestUnknown)
                    | Some(OciErrorCode::NameUnknown)
                    | Some(OciErrorCode::BlobUnknown)
                    | Some(OciErrorCode::NotFound) => self.unknown(),
                    Some(OciErrorCode::Unauthorized) => self.unauthorized(401),
                    Some(OciErrorCode::Denied) => self.unauthorized(403),
                    Some(OciErrorCode::Toomanyrequests) => self.status(429, ""),
                    _ => self.protocol(
                        envelope
                            .errors
                            .iter()
                            .map(|e| format!("{:?}: {}", e.code, e.message))
                            .collect::<Vec<_>>()
                            .join("; "),
                    ),
                }
            }
            OciDistributionError::ServerError { code, message, .. } => self.status(code, &message),
            OciDistributionError::DigestError(
                oci_client::errors::DigestError::VerificationError { expected, actual },
            ) => match self.target {
                Target::Manifest(r) => RegistryError::ManifestDigest {
                    reference: r.to_string(),
                    expected,
                    actual,
                },
                Target::Blob(d) => RegistryError::BlobDigest {
                    digest: d.clone(),
                    actual,
                },
            },
            other => self.protocol(lower_first(&other.to_string())),
        }
    }

    /// Maps an error of a blob stream (network or `oci-client`'s digest check).
    fn map_stream(&self, digest: &Digest, e: io::Error) -> RegistryError {
        if let Some(oci_client::errors::DigestError::VerificationError { actual, .. }) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<oci_client::errors::DigestError>())
        {
            return RegistryError::BlobDigest {
                digest: digest.clone(),
                actual: actual.clone(),
            };
        }
        RegistryError::Interrupted {
            registry: self.registry.to_string(),
            digest: digest.clone(),
            reason: root_cause(&e),
        }
    }
}

/// The innermost cause of an error, lower case (`connection refused`).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(io) = cur.downcast_ref::<io::Error>() {
            let named = match io.kind() {
                io::ErrorKind::ConnectionRefused => Some("connection refused"),
                io::ErrorKind::ConnectionReset => Some("connection reset"),
                io::ErrorKind::ConnectionAborted => Some("connection aborted"),
                io::ErrorKind::TimedOut => Some("timed out"),
                io::ErrorKind::UnexpectedEof => Some("connection closed early"),
                _ => None,
            };
            if let Some(n) = named {
                return n.to_string();
            }
        }
        match cur.source() {
            Some(next) => cur = next,
            None => return lower_first(&cur.to_string()),
        }
    }
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Keeps registry error bodies (sometimes whole HTML pages) to one readable line.
fn shorten(message: &str) -> String {
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 200 {
        format!("{}…", line.chars().take(200).collect::<String>())
    } else {
        line
    }
}

impl Registry {
    /// A client with these options. Nothing is read or contacted until the first request; the
    /// platform and the auth file are checked then.
    pub fn new(opts: RegistryOptions) -> Registry {
        Registry {
            opts,
            conns: Mutex::new(HashMap::new()),
        }
    }

    /// The client and credentials for `r`'s registry, built on first use.
    fn conn(&self, r: &Reference) -> Result<Conn, RegistryError> {
        let registry = r.registry();
        if let Some(c) = self.lock().get(registry) {
            return Ok(c.clone());
        }
        let auth = self.auth_for(registry)?;
        let protocol = match protocol_for(&self.opts, r) {
            Protocol::Http => ClientProtocol::Http,
            Protocol::Https => ClientProtocol::Https,
        };
        let config = ClientConfig {
            protocol,
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| RegistryError::Client {
            registry: registry.to_string(),
            reason: root_cause(&e),
        })?;
        let conn = Conn { client, auth };
        Ok(self
            .lock()
            .entry(registry.to_string())
            .or_insert(conn)
            .clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Conn>> {
        // The map is only inserted into; a panic elsewhere cannot leave it half-written.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Credentials for `registry`: the options' username/password, else the auth file's entry.
    fn auth_for(&self, registry: &str) -> Result<RegistryAuth, RegistryError> {
        match (&self.opts.username, &self.opts.password) {
            (Some(u), Some(p)) => return Ok(RegistryAuth::Basic(u.clone(), p.clone())),
            (None, None) => {}
            _ => return Err(RegistryError::IncompleteCredentials),
        }
        let files = match &self.opts.auth_file {
            Some(f) => vec![f.clone()],
            None => auth_file_candidates(
                std::env::var_os("DOCKER_CONFIG").map(PathBuf::from),
                std::env::var_os("HOME").map(PathBuf::from),
                std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
            ),
        };
        for path in files {
            let data = match std::fs::read(&path) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound && self.opts.auth_file.is_none() => {
                    continue;
                }
                Err(e) => {
                    return Err(RegistryError::AuthFile {
                        path,
                        reason: root_cause(&e),
                    });
                }
            };
            match credentials_from_auth_file(&data, registry) {
                Ok(Some((u, p))) => {
                    debug!(registry, path = %path.display(), "using credentials from auth file");
                    return Ok(RegistryAuth::Basic(u, p));
                }
                Ok(None) => {}
                Err(reason) => return Err(RegistryError::AuthFile { path, reason }),
            }
        }
        Ok(RegistryAuth::Anonymous)
    }

    /// Resolves `r` (by tag or digest) to the manifest for the configured platform, going
    /// through an index or manifest list if that is what the registry serves. Every manifest
    /// fetched is checked against its digest: the reference's or the index entry's when there
    /// is one, else the registry's `Docker-Content-Digest`, else the digest is computed.
    #[tracing::instrument(level = "debug", skip_all, fields(reference = %r))]
    pub async fn resolve(&self, r: &Reference) -> Result<Resolved, RegistryError> {
        let want = parse_platform(&self.opts.platform)?;
        let conn = self.conn(r)?;
        let shown = r.to_string();
        let ctx = Ctx {
            registry: r.registry(),
            repository: r.repository(),
            target: Target::Manifest(&shown),
            anonymous: conn.anonymous(),
        };
        let oref = to_oci(r);
        // Explicit auth so that an unreachable registry or a refused token shows as such
        // (oci-client otherwise swallows token errors and goes on anonymously).
        conn.client
            .auth(&oref, &conn.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| ctx.map(e))?;

        let (body, digest) = fetch_manifest(&conn, &oref, r.digest(), &ctx).await?;
        let (kind, media_type) =
            manifest_kind(&body).map_err(|reason| RegistryError::InvalidManifest {
                reference: shown.clone(),
                reason,
            })?;
        match kind {
            Kind::Manifest => {
                debug!(digest = %digest, media_type, "resolved to a platform manifest");
                return Ok(Resolved {
                    manifest_digest: digest,
                    manifest: body,
                    media_type,
                    index: None,
                });
            }
            Kind::Other => {
                return Err(RegistryError::UnsupportedMediaType {
                    reference: shown,
                    media_type,
                });
            }
            Kind::Index => {}
        }

        let index: ImageIndex =
            serde_json::from_slice(&body).map_err(|e| RegistryError::InvalidManifest {
                reference: shown.clone(),
                reason: e.to_string(),
            })?;
        let Some(entry) = select_manifest(&index, &want) else {
            return Err(RegistryError::NoMatchingPlatform {
                platform: platform_string(&want),
                reference: shown,
                available: available_platforms(&index),
            });
        };
        let child: Digest =
            entry
                .digest()
                .to_string()
                .parse()
                .map_err(|_| RegistryError::InvalidManifest {
                    reference: shown.clone(),
                    reason: format!("unsupported digest {} in index", entry.digest()),
                })?;
        let child_ref = r.with_digest(child.clone());
        let child_shown = format!("{}@{child}", r.name());
        let child_ctx = Ctx {
            target: Target::Manifest(&child_shown),
            ..ctx
        };
        let (manifest, manifest_digest) =
            fetch_manifest(&conn, &to_oci(&child_ref), Some(&child), &child_ctx).await?;
        if manifest.len() as u64 != entry.size() {
            return Err(RegistryError::InvalidManifest {
                reference: child_shown,
                reason: format!(
                    "{} bytes served, the index says {}",
                    manifest.len(),
                    entry.size()
                ),
            });
        }
        let (kind, media_type) =
            manifest_kind(&manifest).map_err(|reason| RegistryError::InvalidManifest {
                reference: child_shown.clone(),
                reason,
            })?;
        match kind {
            Kind::Manifest => {}
            Kind::Index => {
                return Err(RegistryError::InvalidManifest {
                    reference: child_shown,
                    reason: "an index inside an index is not supported".to_string(),
                });
            }
            Kind::Other => {
                return Err(RegistryError::UnsupportedMediaType {
                    reference: child_shown,
                    media_type,
                });
            }
        }
        debug!(
            index = %digest,
            digest = %manifest_digest,
            platform = %platform_string(&want),
            "resolved through an index"
        );
        Ok(Resolved {
            manifest_digest,
            manifest,
            media_type,
            index: Some((digest, body)),
        })
    }

    /// Streams blob `digest` of `r`'s repository into `out`, starting at byte `offset` (an HTTP
    /// range request; when the registry ignores the range and sends the whole blob, the first
    /// `offset` bytes are skipped). `progress` is called with the number of bytes of the blob
    /// the caller holds so far (`offset` plus what this call wrote). The byte count is checked
    /// against `size`; the caller hashes what it received and verifies the digest, as only it
    /// sees the first `offset` bytes.
    #[tracing::instrument(level = "debug", skip_all, fields(reference = %r, digest = %digest, offset = offset))]
    pub async fn fetch_blob<W: AsyncWrite + Unpin>(
        &self,
        r: &Reference,
        digest: &Digest,
        size: u64,
        offset: u64,
        out: &mut W,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RegistryError> {
        if offset > size {
            return Err(RegistryError::OffsetPastEnd {
                digest: digest.clone(),
                offset,
                size,
            });
        }
        if offset == size {
            progress(size);
            return Ok(());
        }
        let conn = self.conn(r)?;
        let ctx = Ctx {
            registry: r.registry(),
            repository: r.repository(),
            target: Target::Blob(digest),
            anonymous: conn.anonymous(),
        };
        let oref = to_oci(r);
        conn.client
            .store_auth_if_needed(oref.resolve_registry(), &conn.auth)
            .await;
        let digest_str = digest.to_string();
        let (mut stream, mut skip) = if offset == 0 {
            let s = conn
                .client
                .pull_blob_stream(&oref, digest_str.as_str())
                .await
                .map_err(|e| ctx.map(e))?;
            (s, 0)
        } else {
            match conn
                .client
                .pull_blob_stream_partial(&oref, digest_str.as_str(), offset, None)
                .await
                .map_err(|e| ctx.map(e))?
            {
                BlobResponse::Partial(s) => (s, 0),
                BlobResponse::Full(s) => {
                    debug!("registry ignored the range, skipping {offset} bytes");
                    (s, offset)
                }
            }
        };
        let mut held = offset;
        let mut seen = if skip > 0 { 0 } else { offset };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ctx.map_stream(digest, e))?;
            seen += chunk.len() as u64;
            if seen > size {
                return Err(RegistryError::BlobSize {
                    digest: digest.clone(),
                    expected: size,
                    actual: seen,
                });
            }
            let mut data: &[u8] = &chunk;
            if skip > 0 {
                let n = usize::try_from(skip).unwrap_or(usize::MAX).min(data.len());
                data = &data[n..];
                skip -= n as u64;
            }
            if data.is_empty() {
                continue;
            }
            out.write_all(data)
                .await
                .map_err(|source| RegistryError::Write {
                    digest: digest.clone(),
                    source,
                })?;
            held += data.len() as u64;
            progress(held);
        }
        out.flush().await.map_err(|source| RegistryError::Write {
            digest: digest.clone(),
            source,
        })?;
        if seen != size {
            return Err(RegistryError::BlobSize {
                digest: digest.clone(),
                expected: size,
                actual: seen,
            });
        }
        Ok(())
    }
}

/// Fetches one manifest and checks it against `expected`, else against the digest the
/// registry announced (oci-client returns that after checking it), else computes it.
async fn fetch_manifest(
    conn: &Conn,
    oref: &oci_client::Reference,
    expected: Option<&Digest>,
    ctx: &Ctx<'_>,
) -> Result<(Vec<u8>, Digest), RegistryError> {
    let (body, announced) = conn
        .client
        .pull_manifest_raw(oref, &conn.auth, ACCEPTED_MANIFESTS)
        .await
        .map_err(|e| ctx.map(e))?;
    let body = body.to_vec();
    let reference = match ctx.target {
        Target::Manifest(r) => r.to_string(),
        Target::Blob(_) => oref.to_string(),
    };
    let digest = match expected {
        Some(d) => d.clone(),
        // A header in an algorithm we do not know (sha384): fall back to our own sha256.
        None => announced
            .parse::<Digest>()
            .unwrap_or_else(|_| Digest::sha256_of(&body)),
    };
    let mut h = Hasher::new(digest.algorithm());
    h.update(&body);
    let actual = h.finish();
    if actual != digest {
        return Err(RegistryError::ManifestDigest {
            reference,
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok((body, digest))
}

/// Our reference as oci-client's (which maps `docker.io` to the Hub's API host itself).
fn to_oci(r: &Reference) -> oci_client::Reference {
    let registry = r.registry().to_string();
    let repository = r.repository().to_string();
    match (r.tag(), r.digest()) {
        (Some(t), Some(d)) => oci_client::Reference::with_tag_and_digest(
            registry,
            repository,
            t.to_string(),
            d.to_string(),
        ),
        (None, Some(d)) => oci_client::Reference::with_digest(registry, repository, d.to_string()),
        (t, None) => oci_client::Reference::with_tag(
            registry,
            repository,
            t.unwrap_or(crate::reference::DEFAULT_TAG).to_string(),
        ),
    }
}

/// Whether a manifest is an index, a platform manifest, or something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Index,
    Manifest,
    Other,
}

/// Classifies a manifest by its `mediaType`, or by its shape when that is absent (OCI allows
/// leaving it out). Returns the media type to record.
fn manifest_kind(body: &[u8]) -> Result<(Kind, String), String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        config: Option<serde::de::IgnoredAny>,
    }
    let p: Probe = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if p.schema_version == Some(1) {
        return Ok((
            Kind::Other,
            "application/vnd.docker.distribution.manifest.v1+json".to_string(),
        ));
    }
    Ok(match p.media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => (Kind::Index, p.media_type.unwrap_or_default()),
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => (Kind::Manifest, p.media_type.unwrap_or_default()),
        Some(other) => (Kind::Other, other.to_string()),
        None if p.manifests.is_some() => (Kind::Index, OCI_INDEX.to_string()),
        None if p.config.is_some() => (Kind::Manifest, OCI_MANIFEST.to_string()),
        None => (Kind::Other, "(none)".to_string()),
    })
}

/// Parses `os/architecture[/variant]`, normalising aliases (`x86_64`, `aarch64`, …).
pub fn parse_platform(s: &str) -> Result<Platform, RegistryError> {
    let invalid = || RegistryError::InvalidPlatform(s.to_string());
    let parts: Vec<&str> = s.split('/').collect();
    let (os, arch, variant) = match parts.as_slice() {
        [os, arch] => (*os, *arch, None),
        [os, arch, variant] => (*os, *arch, Some(*variant)),
        _ => return Err(invalid()),
    };
    if os.is_empty() || arch.is_empty() || variant.is_some_and(str::is_empty) {
        return Err(invalid());
    }
    let (arch, variant) = normalize(arch, variant.unwrap_or(""));
    let mut b = PlatformBuilder::default()
        .os(Os::from(os.to_ascii_lowercase().as_str()))
        .architecture(Arch::from(arch.as_str()));
    if !variant.is_empty() {
        b = b.variant(variant);
    }
    b.build().map_err(|_| invalid())
}

/// containerd's normalisation: architecture aliases, and the default variant of each
/// architecture made explicit (`arm64` is `v8`, `arm` is `v7`, `amd64` has none).
fn normalize(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match arch.as_str() {
        "x86_64" | "x86-64" | "amd64" => {
            let v = if variant == "v1" { "" } else { &variant };
            ("amd64".to_string(), v.to_string())
        }
        "i386" | "i686" | "386" => ("386".to_string(), String::new()),
        "aarch64" | "arm64" => {
            let v = match variant.as_str() {
                "" | "8" | "v8" => "v8",
                other => other,
            };
            ("arm64".to_string(), v.to_string())
        }
        "armhf" => ("arm".to_string(), "v7".to_string()),
        "armel" => ("arm".to_string(), "v6".to_string()),
        "arm" => {
            let v = match variant.as_str() {
                "" | "7" | "v7" => "v7".to_string(),
                "5" | "6" | "8" => format!("v{variant}"),
                other => other.to_string(),
            };
            ("arm".to_string(), v)
        }
        _ => (arch, variant),
    }
}

/// `os/architecture[/variant]`, normalised, for matching and messages.
fn platform_key(p: &Platform) -> (String, String, String) {
    let (arch, variant) = normalize(
        &p.architecture().to_string(),
        p.variant().as_deref().unwrap_or(""),
    );
    (p.os().to_string(), arch, variant)
}

/// Whether an index entry's platform satisfies the wanted one (os, architecture and
/// variant equal after normalisation).
pub fn platform_matches(want: &Platform, have: &Platform) -> bool {
    platform_key(want) == platform_key(have)
}

/// Displays a platform as given on command lines: `linux/arm64/v8`.
pub fn platform_string(p: &Platform) -> String {
    let (os, arch, variant) = platform_key(p);
    if variant.is_empty() {
        format!("{os}/{arch}")
    } else {
        format!("{os}/{arch}/{variant}")
    }
}

/// The first index entry for `want`.
fn select_manifest<'a>(index: &'a ImageIndex, want: &Platform) -> Option<&'a Descriptor> {
    index.manifests().iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| platform_matches(want, p))
    })
}

/// Platforms an index offers, for the error message (attestations' `unknown/unknown` left out).
fn available_platforms(index: &ImageIndex) -> String {
    let mut seen: Vec<String> = Vec::new();
    for p in index
        .manifests()
        .iter()
        .filter_map(|d| d.platform().as_ref())
    {
        // As the index declares it, not normalised: what its author will recognise.
        let mut s = format!("{}/{}", p.os(), p.architecture());
        if let Some(v) = p.variant().as_deref().filter(|v| !v.is_empty()) {
            s = format!("{s}/{v}");
        }
        if !s.starts_with("unknown/") && !seen.contains(&s) {
            seen.push(s);
        }
    }
    if seen.is_empty() {
        "none".to_string()
    } else {
        seen.join(", ")
    }
}

/// Where credentials are looked for when no file is given: `$DOCKER_CONFIG/config.json`,
/// `~/.docker/config.json`, then `$XDG_RUNTIME_DIR/containers/auth.json`.
pub fn auth_file_candidates(
    docker_config: Option<PathBuf>,
    home: Option<PathBuf>,
    xdg_runtime_dir: Option<PathBuf>,
) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = docker_config.filter(|d| !d.as_os_str().is_empty()) {
        v.push(d.join("config.json"));
    }
    if let Some(h) = home.filter(|h| !h.as_os_str().is_empty()) {
        v.push(h.join(".docker").join("config.json"));
    }
    if let Some(x) = xdg_runtime_dir.filter(|x| !x.as_os_str().is_empty()) {
        v.push(x.join("containers").join("auth.json"));
    }
    v
}

/// The registry an `auths` key names: scheme and path dropped, Docker Hub's aliases folded.
fn auth_key_registry(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        _ => host,
    }
}

/// Credentials for `registry` in a Docker `config.json` / containers `auth.json`:
/// `{"auths": {"host": {"auth": base64("user:pass")}}}` or `username`/`password` fields.
/// `Ok(None)` when there is no entry (credential helpers are not run).
pub fn credentials_from_auth_file(
    data: &[u8],
    registry: &str,
) -> Result<Option<(String, String)>, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct File {
        #[serde(default)]
        auths: HashMap<String, Entry>,
        #[serde(default)]
        creds_store: Option<String>,
        #[serde(default)]
        cred_helpers: HashMap<String, String>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        auth: Option<String>,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
    }
    let file: File = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    let want = auth_key_registry(registry);
    // An exact key first (`localhost:5000`), then any alias of it (`https://…/v1/`).
    let entry = file.auths.get(registry).or_else(|| {
        let mut keys: Vec<&String> = file.auths.keys().collect();
        keys.sort();
        keys.into_iter()
            .find(|k| auth_key_registry(k) == want)
            .and_then(|k| file.auths.get(k))
    });
    let Some(entry) = entry else {
        if file.creds_store.is_some()
            || file
                .cred_helpers
                .keys()
                .any(|k| auth_key_registry(k) == want)
        {
            warn!(
                registry,
                "credential helpers are not supported; pulling anonymously"
            );
        }
        return Ok(None);
    };
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = decode_base64(auth.trim())
            .ok_or_else(|| format!("the auth of {registry} is not base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| format!("the auth of {registry} is not UTF-8"))?;
        let (u, p) = decoded
            .split_once(':')
            .ok_or_else(|| format!("the auth of {registry} is not user:password"))?;
        return Ok(Some((u.to_string(), p.to_string())));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some((u.clone(), p.clone()))),
        _ => Ok(None),
    }
}

/// Standard base64 (padding optional), as Docker writes `auth` fields.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        parse_platform(s).unwrap()
    }

    #[test]
    fn platform_parsing_and_display() {
        for (input, want) in [
            ("linux/amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("linux/arm64", "linux/arm64/v8"),
            ("linux/aarch64", "linux/arm64/v8"),
            ("linux/arm64/v8", "linux/arm64/v8"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/v6", "linux/arm/v6"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/s390x", "linux/s390x"),
            ("windows/amd64", "windows/amd64"),
        ] {
            assert_eq!(platform_string(&p(input)), want, "{input}");
        }
        for bad in ["", "linux", "linux/", "/amd64", "linux/amd64/", "a/b/c/d"] {
            assert!(
                matches!(parse_platform(bad), Err(RegistryError::InvalidPlatform(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn platform_matching_table() {
        let entry = |os: &str, arch: &str, variant: Option<&str>| {
            let mut b = PlatformBuilder::default()
                .os(Os::from(os))
                .architecture(Arch::from(arch));
            if let Some(v) = variant {
                b = b.variant(v);
            }
            b.build().unwrap()
        };
        for (want, os, arch, variant, matches) in [
            ("linux/amd64", "linux", "amd64", None, true),
            ("linux/amd64", "linux", "amd64", Some("v3"), false),
            ("linux/amd64", "windows", "amd64", None, false),
            ("linux/amd64", "linux", "arm64", None, false),
            ("linux/arm64", "linux", "arm64", None, true),
            ("linux/arm64", "linux", "arm64", Some("v8"), true),
            ("linux/arm64/v8", "linux", "arm64", None, true),
            ("linux/arm64/v8", "linux", "arm64", Some("v8"), true),
            ("linux/arm64", "linux", "arm64", Some("v9"), false),
            ("linux/arm/v7", "linux", "arm", None, true),
            ("linux/arm/v7", "linux", "arm", Some("v6"), false),
            ("linux/arm/v6", "linux", "arm", Some("v6"), true),
            ("linux/amd64", "unknown", "unknown", None, false),
        ] {
            assert_eq!(
                platform_matches(&p(want), &entry(os, arch, variant)),
                matches,
                "{want} vs {os}/{arch}/{variant:?}"
            );
        }
    }

    fn index_json() -> String {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_LIST,
            "manifests": [
                {"mediaType": DOCKER_MANIFEST, "digest": d('a'), "size": 10,
                 "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": DOCKER_MANIFEST, "digest": d('b'), "size": 10,
                 "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
                {"mediaType": DOCKER_MANIFEST, "digest": d('c'), "size": 10,
                 "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}},
                {"mediaType": OCI_MANIFEST, "digest": d('d'), "size": 10,
                 "platform": {"architecture": "unknown", "os": "unknown"}},
            ]
        })
        .to_string()
    }

    #[test]
    fn selection_from_an_index() {
        let index: ImageIndex = serde_json::from_str(&index_json()).unwrap();
        let pick = |want: &str| {
            select_manifest(&index, &p(want)).map(|d| d.digest().to_string()[7..8].to_string())
        };
        assert_eq!(pick("linux/amd64").as_deref(), Some("a"));
        assert_eq!(pick("linux/arm64").as_deref(), Some("b"));
        assert_eq!(pick("linux/arm").as_deref(), Some("c"));
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(
            available_platforms(&index),
            "linux/amd64, linux/arm64/v8, linux/arm/v7"
        );
    }

    #[test]
    fn manifest_kinds() {
        for (body, kind, mt) in [
            (index_json(), Kind::Index, DOCKER_MANIFEST_LIST),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#),
                Kind::Index,
                OCI_INDEX,
            ),
            (
                r#"{"schemaVersion":2,"manifests":[]}"#.to_string(),
                Kind::Index,
                OCI_INDEX,
            ),
            (
                r#"{"schemaVersion":2,"config":{},"layers":[]}"#.to_string(),
                Kind::Manifest,
                OCI_MANIFEST,
            ),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{}}}}"#),
                Kind::Manifest,
                DOCKER_MANIFEST,
            ),
            (
                r#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#.to_string(),
                Kind::Other,
                "application/vnd.docker.distribution.manifest.v1+json",
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.example+json"}"#.to_string(),
                Kind::Other,
                "application/vnd.example+json",
            ),
        ] {
            assert_eq!(
                manifest_kind(body.as_bytes()).unwrap(),
                (kind, mt.to_string()),
                "{body}"
            );
        }
        assert!(manifest_kind(b"not json").is_err());
    }

    #[test]
    fn protocol_table() {
        let opts = RegistryOptions {
            insecure_registries: vec![
                "registry.lan:5000".to_string(),
                "http://10.0.0.7:5000/".to_string(),
            ],
            ..RegistryOptions::default()
        };
        for (reference, want) in [
            ("localhost:5000/app", Protocol::Http),
            ("localhost/app", Protocol::Http),
            ("127.0.0.1:5000/app", Protocol::Http),
            ("[::1]:5000/app", Protocol::Http),
            ("registry.lan:5000/app", Protocol::Http),
            ("10.0.0.7:5000/app", Protocol::Http),
            ("registry.lan/app", Protocol::Https),
            ("registry.lan:5001/app", Protocol::Https),
            ("10.0.0.8:5000/app", Protocol::Https),
            ("busybox", Protocol::Https),
            ("ghcr.io/org/app", Protocol::Https),
        ] {
            let r: Reference = reference.parse().unwrap();
            assert_eq!(protocol_for(&opts, &r), want, "{reference}");
        }
        let r: Reference = "registry.lan:5000/app".parse().unwrap();
        assert_eq!(
            protocol_for(&RegistryOptions::default(), &r),
            Protocol::Https
        );
    }

    #[test]
    fn base64_decoding() {
        for (enc, dec) in [
            ("", ""),
            ("dQ==", "u"),
            ("dXM=", "us"),
            ("dXNl", "use"),
            ("dXNlcjpwYXNz", "user:pass"),
            ("dXNlcjpwYXNzd29yZA==", "user:password"),
            ("dXNlcjpwYXNzd29yZA", "user:password"),
            ("YTpiKy8/", "a:b+/?"),
        ] {
            assert_eq!(decode_base64(enc).as_deref(), Some(dec.as_bytes()), "{enc}");
        }
        for bad in ["a", "ab!c", "abcde"] {
            assert_eq!(decode_base64(bad), None, "{bad}");
        }
    }

    #[test]
    fn auth_file_table() {
        let file = r#"{
            "auths": {
                "localhost:5000": {"auth": "dXNlcjpwYXNz"},
                "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldDpjb2xvbg=="},
                "https://ghcr.io": {"username": "gh", "password": "tok"},
                "quay.io": {"auth": ""},
                "empty.example": {}
            },
            "credHelpers": {"gcr.io": "gcloud"},
            "HttpHeaders": {"User-Agent": "x"}
        }"#;
        for (registry, want) in [
            ("localhost:5000", Some(("user", "pass"))),
            ("docker.io", Some(("hub", "secret:colon"))),
            ("ghcr.io", Some(("gh", "tok"))),
            ("quay.io", None),
            ("empty.example", None),
            ("gcr.io", None),
            ("localhost:5001", None),
        ] {
            let got = credentials_from_auth_file(file.as_bytes(), registry).unwrap();
            assert_eq!(
                got,
                want.map(|(u, p)| (u.to_string(), p.to_string())),
                "{registry}"
            );
        }
        assert_eq!(
            credentials_from_auth_file(b"{}", "docker.io").unwrap(),
            None
        );
        for bad in [
            &b"not json"[..],
            br#"{"auths": {"x.io": {"auth": "!!!"}}}"#,
            br#"{"auths": {"x.io": {"auth": "bm9jb2xvbg=="}}}"#,
        ] {
            assert!(credentials_from_auth_file(bad, "x.io").is_err());
        }
    }

    #[test]
    fn auth_file_locations() {
        let pb = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            auth_file_candidates(pb("/cfg"), pb("/home/u"), pb("/run/user/1")),
            vec![
                PathBuf::from("/cfg/config.json"),
                PathBuf::from("/home/u/.docker/config.json"),
                PathBuf::from("/run/user/1/containers/auth.json"),
            ]
        );
        assert_eq!(
            auth_file_candidates(None, pb("/root"), pb("")),
            vec![PathBuf::from("/root/.docker/config.json")]
        );
        assert!(auth_file_candidates(None, None, None).is_empty());
    }

    #[test]
    fn explicit_credentials_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, r#"{"auths":{"r.io":{"auth":"dXNlcjpwYXNz"}}}"#).unwrap();
        let reg = |u: Option<&str>, p: Option<&str>| {
            Registry::new(RegistryOptions {
                auth_file: Some(file.clone()),
                username: u.map(str::to_string),
                password: p.map(str::to_string),
                ..RegistryOptions::default()
            })
        };
        let basic = |a: RegistryAuth| match a {
            RegistryAuth::Basic(u, p) => Some((u, p)),
            _ => None,
        };
        assert_eq!(
            basic(reg(None, None).auth_for("r.io").unwrap()),
            Some(("user".into(), "pass".into()))
        );
        assert_eq!(
            basic(reg(Some("me"), Some("pw")).auth_for("r.io").unwrap()),
            Some(("me".into(), "pw".into()))
        );
        assert_eq!(basic(reg(None, None).auth_for("other.io").unwrap()), None);
        assert!(matches!(
            reg(Some("me"), None).auth_for("r.io"),
            Err(RegistryError::IncompleteCredentials)
        ));
        let missing = Registry::new(RegistryOptions {
            auth_file: Some(dir.path().join("nope.json")),
            ..RegistryOptions::default()
        });
        assert!(matches!(
            missing.auth_for("r.io"),
            Err(RegistryError::AuthFile { .. })
        ));
    }

    #[test]
    fn oci_reference_conversion() {
        for (input, registry, resolved, want) in [
            (
                "busybox",
                "docker.io",
                "index.docker.io",
                "docker.io/library/busybox:latest",
            ),
            (
                "localhost:5000/a/b:v1",
                "localhost:5000",
                "localhost:5000",
                "localhost:5000/a/b:v1",
            ),
        ] {
            let o = to_oci(&input.parse().unwrap());
            assert_eq!(o.registry(), registry);
            assert_eq!(o.resolve_registry(), resolved);
            assert_eq!(o.to_string(), want);
        }
        let d = Digest::sha256_of(b"x");
        let r: Reference = format!("ghcr.io/o/a@{d}").parse().unwrap();
        assert_eq!(to_oci(&r).digest(), Some(d.to_string().as_str()));
        assert_eq!(to_oci(&r).tag(), None);
    }
}

//! Shared helpers of the API tests: an in-process server on 127.0.0.1:0 with a temp data
//! dir and the in-memory store, kubectl runners and a tiny HTTPS/1.1 client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use skiff_master::api::{Config, ServerHandle, serve};
use skiff_master::store::memory::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const MANIFESTS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: nginx-deployment, labels: {app: nginx}}
spec:
  replicas: 3
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec:
      containers:
      - {name: nginx, image: "nginx:1.14.2", ports: [{containerPort: 80, name: web-pod-port}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-service}
spec:
  type: NodePort
  selector: {app: nginx}
  ports: [{protocol: TCP, port: 80, targetPort: web-pod-port, nodePort: 30080}]
"#;

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub handle: ServerHandle,
    pub store: Arc<MemoryStore>,
    pub service_cidr: String,
}

pub async fn start() -> TestServer {
    start_with("10.96.0.0/12").await
}

/// A server whose Service ranges are `service_cidr` (`10.96.0.0/12,fd00:10:96::/108`).
pub async fn start_with(service_cidr: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    serve_on(dir, Arc::new(MemoryStore::new()), service_cidr).await
}

async fn serve_on(
    dir: tempfile::TempDir,
    store: Arc<MemoryStore>,
    service_cidr: &str,
) -> TestServer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let handle = serve(Config {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        service_cidr: service_cidr.into(),
        node_port_range: (30000, 32767),
        store: store.clone(),
    })
    .await
    .unwrap();
    TestServer {
        dir,
        handle,
        store,
        service_cidr: service_cidr.into(),
    }
}

pub fn kubectl_path(version: &str) -> PathBuf {
    let p = PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.{version}"));
    assert!(
        p.exists(),
        "kubectl {version} is required at {}",
        p.display()
    );
    p
}

impl TestServer {
    /// Stops the server and starts a new one on the same data dir and store (a master
    /// restart: nothing but what the store holds survives).
    pub async fn restart(self) -> TestServer {
        let TestServer {
            dir,
            handle,
            store,
            service_cidr,
        } = self;
        handle.shutdown().await;
        serve_on(dir, store, &service_cidr).await
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.handle.kubeconfig
    }

    /// Runs kubectl (blocking, on a blocking thread) and returns its output.
    pub async fn kubectl(&self, version: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(kubectl_path(version));
        cmd.arg("--kubeconfig").arg(self.kubeconfig()).args(args);
        cmd.env(
            "KUBECACHEDIR",
            self.dir.path().join(format!("cache-{version}")),
        );
        cmd.env("HOME", self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    /// kubectl that must succeed; returns stdout.
    pub async fn ok(&self, version: &str, args: &[&str]) -> String {
        let out = self.kubectl(version, args, &[]).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {version} {args:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        ct: &str,
        body: &[u8],
    ) -> (u16, String) {
        request(
            self.handle.addr,
            &self.dir.path().join("ca.crt"),
            method,
            path,
            token,
            ct,
            body,
        )
        .await
    }

    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        ct: &str,
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let (code, text) = self
            .request(
                method,
                path,
                Some(&self.handle.admin_token.clone()),
                ct,
                body,
            )
            .await;
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (code, v)
    }
}

/// One HTTPS/1.1 request with `Connection: close`; returns status and body.
pub async fn request(
    addr: std::net::SocketAddr,
    ca: &Path,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAccept: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    // a server may answer (413) before reading the whole body
    let _ = tls.write_all(body).await;
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code: u16 = head.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (code, body)
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((len, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `f` until it returns Some, for up to `secs` seconds.
pub async fn poll<T, F: FnMut() -> Fut, Fut: std::future::Future<Output = Option<T>>>(
    secs: u64,
    f: F,
) -> T {
    wait_for("condition", std::time::Duration::from_secs(secs), f).await
}

/// Polls `check` every 100 ms until it returns Some; panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

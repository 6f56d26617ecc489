//! Helpers for tests that talk to a registry: a real one on loopback (Debian's
//! `docker-registry`, optionally behind htpasswd basic auth), test images built with `umoci`
//! from the static busybox and pushed with `skopeo`, and a scriptable fake registry for
//! misbehaviours a real one won't show (wrong digests, ignored ranges).
//!
//! Use from a test file with `mod common;`. Nothing here talks to any network but loopback.
//! Tools missing → the test fails saying what to install; it never skips.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use skiff_rootfs::digest::Digest;

/// Installs rustls' ring provider, as the skiff binary does at start (idempotent).
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The static busybox copied into test images.
pub const BUSYBOX: &str = "/bin/busybox";

/// Fails the test unless `tool` is installed, naming the Debian package.
pub fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new(tool).is_file();
    assert!(
        found,
        "{tool} is missing: run `apt-get install -y {package}` (this test needs it)"
    );
}

/// Runs a command, failing the test with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A free loopback port (bound then released; the registry binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status code of `GET path` on `addr`, or `None` if nothing answers.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A `docker-registry` process on 127.0.0.1 with its own storage; killed on drop.
pub struct TestRegistry {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
    creds: Option<(String, String)>,
}

impl TestRegistry {
    /// An open registry.
    pub fn start() -> TestRegistry {
        TestRegistry::start_inner(None, "127.0.0.1")
    }

    /// An open registry listening on `ip` (an address of this network namespace, so other
    /// namespaces reach it), not on loopback.
    pub fn start_at(ip: &str) -> TestRegistry {
        TestRegistry::start_inner(None, ip)
    }

    /// A registry that wants basic auth as `user`/`pass` (htpasswd, bcrypt).
    pub fn start_with_auth(user: &str, pass: &str) -> TestRegistry {
        TestRegistry::start_inner(Some((user.to_string(), pass.to_string())), "127.0.0.1")
    }

    fn start_inner(creds: Option<(String, String)>, ip: &str) -> TestRegistry {
        require("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).unwrap();
        let mut auth = String::new();
        if let Some((user, pass)) = &creds {
            require("htpasswd", "apache2-utils");
            let line = run(Command::new("htpasswd").args(["-Bbn", user, pass]));
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, line.trim()).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                file.display()
            );
        }
        // The port is free when picked; if someone takes it before the registry binds, the
        // registry exits and we try another.
        let mut last_log = String::new();
        for _ in 0..5 {
            let addr = format!("{ip}:{}", free_port());
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
                    storage.display()
                ),
            )
            .unwrap();
            let log = dir.path().join("registry.log");
            let logf = std::fs::File::create(&log).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(logf.try_clone().unwrap())
                .stderr(logf)
                .spawn()
                .expect("cannot start docker-registry");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = http_status(&addr, "/v2/") {
                    assert!(
                        status == 200 || status == 401,
                        "registry at {addr} answered {status} for /v2/"
                    );
                    return TestRegistry {
                        child,
                        dir,
                        addr,
                        creds,
                    };
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_log = std::fs::read_to_string(&log).unwrap_or_default();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("docker-registry did not come up; its log:\n{last_log}");
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `127.0.0.1:PORT/<repo_tag>` as a reference string.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// Pushes `layout:tag` to `<repo_tag>` in this registry with skopeo. `extra` goes before
    /// the source (e.g. `--all`, `--format v2s2`).
    pub fn push(&self, layout: &Path, tag: &str, repo_tag: &str, extra: &[&str]) {
        require("skopeo", "skopeo");
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--dest-tls-verify=false"]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        cmd.args(extra)
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.addr));
        run(&mut cmd);
    }

    /// The registry's storage directory (`<storage>/docker/registry/v2/blobs/…`), for tests
    /// that tamper with what it serves.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's own log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OCI image layout on disk holding test images.
pub struct Layout {
    /// The layout directory.
    pub dir: PathBuf,
}

impl Layout {
    /// A new empty layout at `dir` (which must not exist).
    pub fn init(dir: &Path) -> Layout {
        require("umoci", "umoci");
        run(Command::new("umoci").arg("init").arg("--layout").arg(dir));
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.dir.display())
    }

    /// Adds image `tag`: one layer with `/bin/busybox`, `/bin/sh -> busybox` and
    /// `/etc/skiff-test` holding `marker`; config for `linux/<arch>` running `/bin/sh`.
    pub fn add_busybox(&self, tag: &str, arch: &str, marker: &str) {
        let staging = tempfile::tempdir().unwrap();
        let root = staging.path();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
        std::fs::write(root.join("etc/skiff-test"), marker).unwrap();
        run(Command::new("umoci")
            .args(["new", "--image"])
            .arg(self.image(tag)));
        run(Command::new("umoci")
            .args(["insert", "--image"])
            .arg(self.image(tag))
            .arg(root.join("bin"))
            .arg("/bin"));
        run(Command::new("umoci")
            .args(["insert", "--image"])
            .arg(self.image(tag))
            .arg(root.join("etc"))
            .arg("/etc"));
        run(Command::new("umoci")
            .args(["config", "--image"])
            .arg(self.image(tag))
            .args(["--os", "linux", "--architecture", arch])
            .args(["--config.cmd", "/bin/sh"]));
    }

    fn read_index(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("index.json")).unwrap()).unwrap()
    }

    /// The manifest descriptor of `tag` in index.json.
    pub fn descriptor(&self, tag: &str) -> serde_json::Value {
        self.read_index()["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("no tag {tag} in {}", self.dir.display()))
            .clone()
    }

    /// The manifest digest of `tag`.
    pub fn digest(&self, tag: &str) -> Digest {
        self.descriptor(tag)["digest"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// A blob's bytes.
    pub fn blob(&self, digest: &Digest) -> Vec<u8> {
        std::fs::read(
            self.dir
                .join("blobs")
                .join(digest.algorithm().name())
                .join(digest.hex()),
        )
        .unwrap()
    }

    /// Writes a blob, returning its digest.
    pub fn write_blob(&self, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        std::fs::write(self.dir.join("blobs/sha256").join(d.hex()), data).unwrap();
        d
    }

    /// Adds tag `tag` for an OCI image index over `entries` (tag, os, arch, variant) with
    /// platform fields, returning the index digest.
    pub fn add_index(&self, tag: &str, entries: &[(&str, &str, &str, Option<&str>)]) -> Digest {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .map(|(t, os, arch, variant)| {
                let d = self.descriptor(t);
                let mut platform = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    platform["variant"] = serde_json::json!(v);
                }
                serde_json::json!({
                    "mediaType": d["mediaType"],
                    "digest": d["digest"],
                    "size": d["size"],
                    "platform": platform,
                })
            })
            .collect();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .unwrap();
        let digest = self.write_blob(&index);
        let mut top = self.read_index();
        top["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": digest.to_string(),
                "size": index.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }));
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&top).unwrap(),
        )
        .unwrap();
        digest
    }
}

/// A busybox layout at `<dir>/oci` with tag `latest` for linux/amd64.
pub fn busybox_layout(dir: &Path) -> Layout {
    let layout = Layout::init(&dir.join("oci"));
    layout.add_busybox("latest", "amd64", "amd64");
    layout
}

/// A layout with tags `amd64`, `arm64` (different layers and configs) and `multi`, an index
/// over both (`linux/amd64`, `linux/arm64/v8`). Push `multi` with `--all`.
pub fn multi_platform_layout(dir: &Path) -> Layout {
    let layout = Layout::init(&dir.join("oci"));
    layout.add_busybox("amd64", "amd64", "amd64");
    layout.add_busybox("arm64", "arm64", "arm64");
    layout.add_index(
        "multi",
        &[
            ("amd64", "linux", "amd64", None),
            ("arm64", "linux", "arm64", Some("v8")),
        ],
    );
    layout
}

/// What a [`FakeRegistry`] handler answers.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// 200 with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A bare status.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A request as a [`FakeRegistry`] handler sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: HashMap<String, String>,
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A one-connection-at-a-time HTTP/1.1 server on 127.0.0.1 answering with a closure
/// (`Connection: close` on every reply); stopped on drop.
pub struct FakeRegistry {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    requests: Arc<std::sync::Mutex<Vec<Request>>>,
}

impl FakeRegistry {
    /// Starts serving `handler`. `GET /v2/` is answered 200 before the handler sees it.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = {
            let stop = stop.clone();
            let requests = requests.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        let _ = serve_one(conn, &*handler, &requests);
                    }
                }
            })
        };
        FakeRegistry {
            addr,
            stop,
            thread: Some(thread),
            requests,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Requests seen so far (besides `/v2/`).
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(
    conn: TcpStream,
    handler: &Handler,
    requests: &std::sync::Mutex<Vec<Request>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let req = Request {
        method,
        path,
        headers,
    };
    let reply = if req.path == "/v2/" {
        Reply::ok("{}")
    } else {
        requests.lock().unwrap().push(req.clone());
        handler(&req)
    };
    let mut out = conn;
    write!(
        out,
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    )?;
    for (k, v) in &reply.headers {
        write!(out, "{k}: {v}\r\n")?;
    }
    write!(out, "\r\n")?;
    if req.method != "HEAD" {
        out.write_all(&reply.body)?;
    }
    out.flush()?;
    // Drain what the client still sends so the close is clean.
    let _ = out.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 1024];
    let _ = reader.get_mut().read(&mut sink);
    Ok(())
}

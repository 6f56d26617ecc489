//! Real etcd servers for tests: one or several members of Debian's `etcd-server` on loopback
//! with free ports and temp data dirs, killed and removed when dropped (also when the test
//! fails). Shared by master/tests and cli/tests (through `#[path]`); std only.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster may take to elect a leader and answer.
const START_WITHIN: Duration = Duration::from_secs(30);

/// The etcd binary: `$SKIFF_ETCD` or `etcd` on PATH (Debian's etcd-server).
pub fn etcd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SKIFF_ETCD") {
        return PathBuf::from(p);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("etcd");
        if p.is_file() {
            return p;
        }
    }
    panic!("these tests need a real etcd: apt-get install etcd-server (or set SKIFF_ETCD)");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One member.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    child: Option<Child>,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// A cluster of etcd members on loopback.
pub struct EtcdCluster {
    pub members: Vec<Member>,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster answers through every member.
    pub fn start(n: usize) -> EtcdCluster {
        let bin = etcd_binary();
        let dir = tempfile::Builder::new()
            .prefix("skiff-test-etcd-")
            .tempdir()
            .unwrap();
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        // one token for the whole cluster, unique to this test
        let token = format!(
            "skiff-test-{}-{}",
            std::process::id(),
            members[0].client_port
        );
        let mut cluster = EtcdCluster { members, dir };
        for i in 0..n {
            let m = &cluster.members[i];
            let data = cluster.dir.path().join(&m.name);
            let log =
                std::fs::File::create(cluster.dir.path().join(format!("{}.log", m.name))).unwrap();
            let client = m.endpoint();
            let peer = format!("http://127.0.0.1:{}", m.peer_port);
            let child = Command::new(&bin)
                .arg("--name")
                .arg(&m.name)
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            cluster.members[i].child = Some(child);
        }
        let deadline = Instant::now() + START_WITHIN;
        for i in 0..n {
            while !cluster.healthy(i) {
                if Instant::now() > deadline {
                    panic!(
                        "etcd member {i} did not become healthy; its log:\n{}",
                        cluster.log(i)
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// Client URLs of the members, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// `--etcd-endpoints` form.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("{}.log", self.members[i].name)),
        )
        .unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether member `i` answers `/health` with a leader elected (etcd's health endpoint).
    pub fn healthy(&self, i: usize) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.members[i].client_port).into(),
            Duration::from_millis(500),
        ) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.contains("\"health\":\"true\"")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

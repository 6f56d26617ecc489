//! `skiff master` as a process: every write it acknowledged survives `kill -9` at any
//! moment, checked with the real kubectl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Master(Child);

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &Path, port: u16) -> Master {
    let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["master", "--data-dir"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let m = Master(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if dir.join("admin.kubeconfig").exists()
            && kubectl(dir, &["get", "--raw", "/readyz"], None).0
        {
            return m;
        }
        assert!(Instant::now() < deadline, "the master did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kubectl(dir: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(dir.join("admin.kubeconfig"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl is installed on these machines");
    if let Some(s) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn acknowledged_objects_survive_kill_9_of_the_master() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut acknowledged = Vec::new();
    for round in 0..3 {
        let mut master = start(dir.path(), port);
        // a burst of creates; the master is killed while the next ones are under way
        let writer = {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let mut done = Vec::new();
                for i in 0..1000 {
                    let name = format!("cm-{round}-{i}");
                    let body = format!(
                        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"i":"{i}"}}}}"#
                    );
                    if !kubectl(&dir, &["create", "-f", "-"], Some(&body)).0 {
                        break; // the master is gone
                    }
                    done.push(name);
                }
                done
            })
        };
        std::thread::sleep(Duration::from_millis(1500 + 400 * round));
        master.0.kill().unwrap(); // SIGKILL
        master.0.wait().unwrap();
        acknowledged.extend(writer.join().unwrap());
        assert!(
            !acknowledged.is_empty(),
            "no create was acknowledged in round {round}"
        );
    }
    let _master = start(dir.path(), port);
    let (ok, out) = kubectl(
        dir.path(),
        &[
            "get",
            "configmaps",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
        None,
    );
    assert!(ok, "{out}");
    let stored: std::collections::HashSet<&str> = out.split_whitespace().collect();
    for name in &acknowledged {
        assert!(
            stored.contains(name.as_str()),
            "acknowledged {name} was lost"
        );
    }
    // and the store still takes writes and keeps its data consistent
    let (ok, out) = kubectl(
        dir.path(),
        &["create", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"after"}}"#),
    );
    assert!(ok, "{out}");
}

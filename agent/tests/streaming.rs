//! The agent's streaming protocols for real, through the master's proxy (the `node_common`
//! harness: an in-process API server, a loopback registry, `skiff agent` as a process):
//! exec over SPDY/3.1 as kubectl 1.27–1.29 speak it.
//!
//! Needs root, `docker-registry`, `umoci`, `skopeo`, `/bin/busybox` (busybox-static),
//! `script(1)`, the kubectl binaries and the skiff binary built (`cargo build -p skiff`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_common;

use node_common::*;

/// kubectl 1.27–1.29 exec over SPDY/3.1 (their default): stdout and stderr apart with the
/// exit code from the v4 status, 1 MiB through stdin to its end of file and 1 MiB back
/// (more than a 64 KiB window either way), a terminal of the caller's size, attach until the
/// container ends; and `skiff ctl exec -i` (WebSocket v5) ends with its stdin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_over_spdy() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-spdy");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("shell", "n-spdy", &c.image, "exec sleep 1000", json!({})),
    )
    .await
    .unwrap();
    wait_pod(&pods, "shell", "pod Running", 60, &node, running_ready).await;
    for v in ["1.27", "1.28", "1.29"] {
        let out = kubectl_timed(
            &c,
            v,
            &[
                "exec",
                "shell",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(3), "{v}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "out\n", "{v}");
        assert!(
            text(&out.stderr).starts_with("err\n"),
            "{v}: {}",
            text(&out.stderr)
        );
    }
    let mib = "x".repeat(1 << 20);
    let out = kubectl_timed(
        &c,
        "1.29",
        &["exec", "-i", "shell", "--", "sh", "-c", "wc -c"],
        Some(&mib),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "1048576");
    let out = kubectl_timed(
        &c,
        "1.29",
        &["exec", "-i", "shell", "--", "sh", "-c", "cat"],
        Some(&mib),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 1 << 20);
    assert!(out.stdout.iter().all(|b| *b == b'x'));
    // a terminal of the caller's size, then attach to a ticking pod (SPDY)
    terminal_then_attach(&c, &node, &pods, "1.28", "1.27").await;
    // skiff ctl (kube-client, WebSocket v5): the end of stdin reaches the container
    for (input, want) in [("hi\n", "hi\n"), ("", "")] {
        let mut ctl = tokio::process::Command::new(skiff_bin())
            .arg("ctl")
            .arg("--kubeconfig")
            .arg(c.server.kubeconfig())
            .args(["exec", "-i", "shell", "--", "sh", "-c", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut w = ctl.stdin.take().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut w, input.as_bytes())
            .await
            .unwrap();
        drop(w);
        let out = tokio::time::timeout(Duration::from_secs(60), ctl.wait_with_output())
            .await
            .expect("skiff ctl exec -i did not end with its stdin")
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), want);
    }
    pods.delete("shell", &DeleteParams::default())
        .await
        .unwrap();
}

/// A free port on loopback (bound and let go).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// An HTTP GET of `/` on 127.0.0.1:port: the whole response, or why not.
fn http_get(port: u16) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: pf\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// `kubectl port-forward pod/web LOCAL:80` to a busybox httpd, with kubectl 1.27 (SPDY/3.1)
/// and 1.32 (SPDY tunnelled in WebSocket): HTTP GETs on 127.0.0.1:LOCAL return the page,
/// one forwarded connection after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_to_httpd() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-pf");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod(
            "web",
            "n-pf",
            &c.image,
            "mkdir -p /www && echo hello from $POD_NAME > /www/index.html && exec httpd -f -p 80 -h /www",
            json!({}),
        ),
    )
    .await
    .unwrap();
    wait_pod(&pods, "web", "pod Running", 60, &node, running_ready).await;
    for v in ["1.27", "1.32"] {
        let local = free_port();
        let mut kubectl = tokio::process::Command::new(api_common::kubectl_path(v))
            .arg("--kubeconfig")
            .arg(c.server.kubeconfig())
            .args(["port-forward", "pod/web", &format!("{local}:80")])
            .env("HOME", c.server.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let page = loop {
            match tokio::task::spawn_blocking(move || http_get(local))
                .await
                .unwrap()
            {
                Ok(p) if p.contains("hello from web") => break p,
                other => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{v}: no page through port-forward: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        assert!(
            page.starts_with("HTTP/1.0 200") || page.starts_with("HTTP/1.1 200"),
            "{v}: {page}"
        );
        // more connections over the same forward
        for _ in 0..3 {
            let p = tokio::task::spawn_blocking(move || http_get(local))
                .await
                .unwrap();
            assert!(p.unwrap().contains("hello from web"), "{v}");
        }
        kubectl.start_kill().unwrap();
        let out = kubectl.wait_with_output().await.unwrap();
        let shown = text(&out.stdout);
        assert!(
            shown.contains(&format!("Forwarding from 127.0.0.1:{local} -> 80")),
            "{v}: {shown} {}",
            text(&out.stderr)
        );
    }
    pods.delete("web", &DeleteParams::default()).await.unwrap();
}

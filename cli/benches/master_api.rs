//! `skiff master` under load, as a separate process with its embedded (redb, fsynced)
//! store: pod creates per second with 64 clients in flight, latency of a full list of
//! 10,000 pods, 100 watchers that must each receive every event of a burst, and the
//! master's resident memory with 10,000 pods stored.
//!
//! `cargo bench -p skiff --bench master_api` (release build; PODS=10000 CONCURRENCY=64
//! WATCHERS=100 BURST=1000 change the sizes). Figures go to docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

struct Master(Child);

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// VmRSS and VmHWM of `pid`, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn client(dir: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(dir.join("admin.kubeconfig")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{"name": "web", "image": "busybox:latest",
                                 "command": ["httpd", "-f"],
                                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                                 "ports": [{"containerPort": 80, "name": "http"}]}]},
    }))
    .unwrap()
}

/// Creates `names` with `concurrency` requests in flight; returns the wall time.
async fn create_all(api: &Api<Pod>, names: Vec<String>, concurrency: usize) -> Duration {
    let start = Instant::now();
    futures::stream::iter(names)
        .map(|n| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &pod(&n))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pods = env_or("PODS", 10_000);
    let concurrency = env_or("CONCURRENCY", 64);
    let watchers = env_or("WATCHERS", 100);
    let burst = env_or("BURST", 1_000);

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["master", "--no-controllers", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let master = Master(child);
    let pid = master.0.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dir.path().join("admin.kubeconfig").exists() {
            assert!(Instant::now() < deadline, "the master did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let client = client(dir.path()).await;
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        while api.list(&ListParams::default().limit(1)).await.is_err() {
            assert!(Instant::now() < deadline, "the master did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (idle_rss, _) = rss_kib(pid);

        let names: Vec<String> = (0..pods).map(|i| format!("bench-{i:05}")).collect();
        let took = create_all(&api, names, concurrency).await;
        let creates_per_s = pods as f64 / took.as_secs_f64();
        let (rss_full, _) = rss_kib(pid);
        eprintln!(
            "created {pods} pods in {:.1} s ({creates_per_s:.0}/s)",
            took.as_secs_f64()
        );

        let all: Api<Pod> = Api::all(client.clone());
        let mut lists = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            let got = all.list(&ListParams::default()).await.unwrap();
            lists.push(t.elapsed());
            assert_eq!(got.items.len(), pods);
        }
        eprintln!("10 typed lists: {:?}", lists);
        let list_median = median(lists.clone());
        let list_max = lists.iter().max().copied().unwrap_or_default();
        // The same list as bytes: the server's work and the transfer, not the client's decode.
        let mut raw_lists = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            let body = client
                .request_text(
                    http::Request::get("/api/v1/pods")
                        .body(Vec::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            raw_lists.push(t.elapsed());
            assert!(body.len() > pods * 100);
        }
        eprintln!("10 raw lists: {:?}", raw_lists);
        let raw_median = median(raw_lists);
        let (rss_lists, _) = rss_kib(pid);
        eprintln!("RSS after the lists: {:.1} MiB", rss_lists as f64 / 1024.0);

        // Watchers from the current revision; each must see every one of `burst` creates.
        let rv = api
            .list(&ListParams::default().limit(1))
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let ready = Arc::new(tokio::sync::Barrier::new(watchers + 1));
        let mut tasks = Vec::new();
        for _ in 0..watchers {
            let api = api.clone();
            let rv = rv.clone();
            let ready = ready.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = api
                    .watch(&WatchParams::default().timeout(290), &rv)
                    .await
                    .unwrap()
                    .boxed();
                ready.wait().await;
                let mut seen = 0;
                while seen < burst {
                    match stream.try_next().await.unwrap() {
                        Some(WatchEvent::Added(_)) => seen += 1,
                        Some(_) => {}
                        None => panic!("watch ended after {seen} events"),
                    }
                }
                Instant::now()
            }));
        }
        ready.wait().await;
        eprintln!("{watchers} watchers open");
        let start = Instant::now();
        let names: Vec<String> = (0..burst).map(|i| format!("watched-{i:05}")).collect();
        let created = create_all(&api, names, concurrency).await;
        let mut last = start;
        for t in tasks {
            last = last.max(t.await.unwrap());
        }
        let delivered = last - start;
        eprintln!(
            "burst of {burst} created in {:.1} s, delivered to all after {:.1} s",
            created.as_secs_f64(),
            delivered.as_secs_f64()
        );
        let (rss_end, hwm) = rss_kib(pid);

        println!("skiff master (embedded store, group commit), {pods} pods:");
        println!("| measure | value |");
        println!("| --- | ---: |");
        println!("| creates/s ({concurrency} in flight, {pods} pods) | {creates_per_s:.0} |");
        println!(
            "| full list of {pods} pods, median of 10 (max) | {:.1} ms ({:.1} ms) |",
            list_median.as_secs_f64() * 1e3,
            list_max.as_secs_f64() * 1e3
        );
        println!(
            "| the same list as bytes (no client decode), median of 10 | {:.1} ms |",
            raw_median.as_secs_f64() * 1e3
        );
        println!(
            "| {watchers} watchers × {burst} creates: all events delivered after | {:.0} ms (creates took {:.0} ms) |",
            delivered.as_secs_f64() * 1e3,
            created.as_secs_f64() * 1e3
        );
        println!("| RSS idle | {:.1} MiB |", idle_rss as f64 / 1024.0);
        println!(
            "| RSS with {pods} pods stored | {:.1} MiB |",
            rss_full as f64 / 1024.0
        );
        println!(
            "| RSS after lists and watches (peak) | {:.1} MiB ({:.1} MiB) |",
            rss_end as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    });
    drop(master);
}

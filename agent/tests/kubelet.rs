//! Kubelet behaviours beyond running pods, for real (the `node_common` harness: an
//! in-process API server, a loopback registry, `skiff agent` as a process): container log
//! rotation, preStop before a liveness restart, ServiceAccount imagePullSecrets.
//!
//! Needs root, `docker-registry`, `umoci`, `skopeo`, `/bin/busybox` (busybox-static), the
//! kubectl binaries and the skiff binary built (`cargo build -p skiff`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_common;

use node_common::*;

/// The files of a container's log directory: (name, size).
fn log_files(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    (e.file_name().to_string_lossy().into_owned(), len)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The numbers of `<word> N` lines, in order.
fn numbers(text: &str, word: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.strip_prefix(word)?.trim().parse().ok())
        .collect()
}

/// A container printing fast under a 4Ki max size and 3 files keeps at most 3 files (the
/// kubelet's names, older ones gzipped) with every record whole; `kubectl logs --tail`
/// reads the latest lines, and `kubectl logs -f` follows a container across rotations
/// without losing or repeating a line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_rotate_by_size_and_stay_readable() {
    let c = cluster().await;
    let node = TestNode::with_args(
        &c.server,
        "n-rot",
        &[
            "--pod-network",
            "none",
            "--proxy=false",
            "--dns=false",
            "--container-log-max-size",
            "4Ki",
            "--container-log-max-files",
            "3",
        ],
    );
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let p: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "chatty", "namespace": "default"},
        "spec": {
            "nodeName": "n-rot",
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "fast", "image": c.image, "command": ["/bin/sh", "-c",
                    "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo \"line $i\"; done; echo done-marker; exec sleep 3600"]},
                {"name": "ticks", "image": c.image, "command": ["/bin/sh", "-c",
                    "sleep 2; i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo \"tick $i\"; usleep 20000; done"]}
            ]
        }
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    let uid = created.metadata.uid.unwrap();
    wait_pod(&pods, "chatty", "Running", 60, &node, |p| {
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    // follow the paced container from (about) its start to its end
    let follow = {
        let mut cmd = tokio::process::Command::new(api_common::kubectl_path("1.33"));
        cmd.arg("--kubeconfig")
            .arg(c.server.kubeconfig())
            .args(["logs", "-f", "chatty", "-c", "ticks"])
            .env("HOME", c.server.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd.spawn().unwrap()
    };
    let fast_dir = node.path(&format!("log/default_chatty_{uid}/fast"));
    api_common::wait_for(
        "the fast container's last line",
        Duration::from_secs(60),
        || async {
            let out = kubectl_timed(
                &c,
                "1.33",
                &["logs", "chatty", "-c", "fast", "--tail=1"],
                None,
            )
            .await;
            (text(&out.stdout) == "done-marker\n").then_some(())
        },
    )
    .await;
    let files = log_files(&fast_dir);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(files.len() <= 3, "at most 3 files: {files:?}");
    assert!(names.contains(&"0.log"), "{names:?}");
    let gz: Vec<&&str> = names.iter().filter(|n| n.ends_with(".gz")).collect();
    assert_eq!(gz.len(), 1, "older rotated files are compressed: {names:?}");
    let rotated: Vec<&&str> = names
        .iter()
        .filter(|n| n.starts_with("0.log.") && !n.ends_with(".gz"))
        .collect();
    assert_eq!(
        rotated.len(),
        1,
        "the newest rotated file stays plain: {names:?}"
    );
    // the kubelet's name: 0.log.YYYYMMDD-hhmmss
    let stamp = rotated[0].trim_start_matches("0.log.");
    assert!(stamp.len() >= 15 && stamp.as_bytes()[8] == b'-', "{stamp}");
    for (n, len) in &files {
        if !n.ends_with(".gz") {
            assert!(*len <= 4096, "{n} is {len} bytes, over the 4Ki max size");
        }
    }
    let total: u64 = files.iter().map(|(_, l)| l).sum();
    assert!(total <= 3 * 4096, "{total} bytes in {files:?}");
    // the latest lines, whole and in order, from the live file
    let out = kubectl_timed(
        &c,
        "1.30",
        &["logs", "chatty", "-c", "fast", "--tail=4"],
        None,
    )
    .await;
    let tail = text(&out.stdout);
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.last(), Some(&"done-marker"), "{tail}");
    let nums = numbers(&tail, "line ");
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1) && nums.last().is_none_or(|n| *n == 3000),
        "{tail}"
    );
    // every record in the live and the newest rotated file is whole (CRI format)
    for n in ["0.log".to_string(), rotated[0].to_string()] {
        let body = std::fs::read_to_string(fast_dir.join(&n)).unwrap();
        for l in body.lines() {
            let f: Vec<&str> = l.splitn(4, ' ').collect();
            assert!(
                f.len() == 4 && f[1] == "stdout" && f[2] == "F" && f[0].ends_with('Z'),
                "{n}: {l:?}"
            );
        }
    }
    // the follower saw every tick after its first one, across the rotations
    let out = tokio::time::timeout(Duration::from_secs(60), follow.wait_with_output())
        .await
        .expect("kubectl logs -f ends with the container")
        .unwrap();
    let followed = text(&out.stdout);
    let ticks = numbers(&followed, "tick ");
    assert_eq!(
        ticks.last(),
        Some(&300),
        "{followed}\n{}",
        text(&out.stderr)
    );
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "lost or repeated lines: {ticks:?}"
    );
    // ~50 bytes a record: 4Ki holds ~80, so starting before 200 crossed a rotation
    assert!(ticks[0] <= 200, "{ticks:?}");
    let ticks_dir = node.path(&format!("log/default_chatty_{uid}/ticks"));
    assert!(
        log_files(&ticks_dir)
            .iter()
            .any(|(n, _)| n.ends_with(".gz")),
        "the paced container's log rotated too: {:?}",
        log_files(&ticks_dir)
    );
    pods.delete("chatty", &DeleteParams::default())
        .await
        .unwrap();
}

/// A failing liveness probe stops the container as the kubelet does: its preStop hook
/// runs first (it writes into an emptyDir), then SIGTERM (the container's trap exits 0
/// within the probe's terminationGracePeriodSeconds), then the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_kill_runs_pre_stop_then_sigterm() {
    let c = cluster().await;
    let node = TestNode::new(&c.server, "n-lkill");
    wait_node_ready(&c.client, &node).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let script = "echo start >> /hook/log; trap 'echo term >> /hook/log; exit 0' TERM; \
                  while true; do sleep 1; done";
    let mut p = pod(
        "lkill",
        "n-lkill",
        &c.image,
        script,
        json!({"volumes": [{"name": "hook", "emptyDir": {}}]}),
    );
    let ctr = &mut p.spec.as_mut().unwrap().containers[0];
    ctr.volume_mounts = Some(vec![
        serde_json::from_value(json!({"name": "hook", "mountPath": "/hook"})).unwrap(),
    ]);
    ctr.liveness_probe = Some(exec_probe(
        "test -e /hook/ok",
        json!({"initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 1,
               "terminationGracePeriodSeconds": 10}),
    ));
    ctr.lifecycle = Some(
        serde_json::from_value(json!({"preStop": {"exec": {"command":
            ["sh", "-c", "echo prestop >> /hook/log"]}}}))
        .unwrap(),
    );
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    let uid = created.metadata.uid.unwrap();
    let cs = wait_pod(&pods, "lkill", "a liveness restart", 90, &node, |p| {
        let cs = container_status(p)?;
        (cs.restart_count >= 1 && cs.last_state.as_ref()?.terminated.is_some()).then_some(cs)
    })
    .await;
    let last = cs.last_state.unwrap().terminated.unwrap();
    assert_eq!(
        (last.exit_code, last.signal),
        (0, None),
        "the SIGTERM trap ended the first run, not SIGKILL"
    );
    let log_path = node.path(&format!(
        "root/pods/{uid}/volumes/kubernetes.io~empty-dir/hook/log"
    ));
    let log = api_common::wait_for("the second start", Duration::from_secs(30), || async {
        let log = std::fs::read_to_string(&log_path).ok()?;
        log.starts_with("start\nprestop\nterm\nstart\n")
            .then_some(log)
    })
    .await;
    assert!(log.starts_with("start\nprestop\nterm\nstart\n"), "{log}");
    let events = pod_events(&c.client, "lkill").await;
    assert!(
        events.iter().any(|e| e.reason.as_deref() == Some("Killing")
            && e.message
                .as_deref()
                .is_some_and(|m| m.contains("failed liveness probe"))),
        "{events:?}"
    );
    pods.delete("lkill", &DeleteParams::default())
        .await
        .unwrap();
}

/// ServiceAccount admission: every namespace gets its `default` ServiceAccount; a pod
/// without imagePullSecrets gets its ServiceAccount's (here the `default` one's), so the
/// node pulls from the auth-protected registry with them; a pod naming a missing
/// ServiceAccount is refused (403) as upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_image_pull_secrets_reach_the_pull() {
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    let c = cluster().await;
    let (registry, image, _images) = private_registry();
    let node = TestNode::new(&c.server, "n-sa");
    wait_node_ready(&c.client, &node).await;
    let sas_default: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "default");
    sas_default
        .get("default")
        .await
        .expect("default/default ServiceAccount");
    Api::<Namespace>::all(c.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
        )
        .await
        .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "team");
    let mut sa = sas
        .get("default")
        .await
        .expect("the new namespace's default ServiceAccount");
    create_pull_secret(&c.client, "team", &registry).await;
    sa.image_pull_secrets = Some(vec![
        serde_json::from_value(json!({"name": "regcred"})).unwrap(),
    ]);
    sas.replace("default", &PostParams::default(), &sa)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "team");
    let mut p = pod("sa-pull", "n-sa", &image, "exec sleep 1000", json!({}));
    p.metadata.namespace = Some("team".into());
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    let spec = created.spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let secrets: Vec<String> = spec
        .image_pull_secrets
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(secrets, vec!["regcred".to_string()]);
    wait_pod(
        &pods,
        "sa-pull",
        "Running with the ServiceAccount's secret",
        60,
        &node,
        |p| container_status(p)?.state?.running.map(|_| ()),
    )
    .await;
    // a ServiceAccount that does not exist
    let mut ghost = pod(
        "ghost",
        "n-sa",
        &image,
        "exec sleep 1000",
        json!({"serviceAccountName": "ghost"}),
    );
    ghost.metadata.namespace = Some("team".into());
    match pods.create(&PostParams::default(), &ghost).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403, "{e:?}");
            assert!(
                e.message.contains("serviceaccount \"ghost\" not found"),
                "{e:?}"
            );
        }
        other => panic!("a pod of a missing ServiceAccount was admitted: {other:?}"),
    }
    pods.delete("sa-pull", &DeleteParams::default())
        .await
        .unwrap();
    api_common::wait_for("pods gone", Duration::from_secs(30), || async {
        pods.list(&Default::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

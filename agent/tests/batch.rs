//! Jobs on a real node: an in-process API server with its controllers and one `skiff agent`.
//! An Indexed Job (completions 3, parallelism 2) completes and each pod saw its own
//! `JOB_COMPLETION_INDEX`, read back with `kubectl logs`; a failing Job stops at its
//! backoffLimit with `BackoffLimitExceeded`, counting real container failures.
//!
//! Needs what `pods.rs` needs: root, `docker-registry`, `umoci`, `skopeo`, busybox-static and
//! the skiff binary built (`cargo build -p skiff`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_common;

use k8s_openapi::api::batch::v1::Job;
use kube::api::ListParams;
use skiff_master::controllers::Settings;

use node_common::*;

fn manifest(image: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata: {{name: idx}}
spec:
  completions: 3
  parallelism: 2
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: {image}
        command: ["/bin/sh", "-c", "echo index=$JOB_COMPLETION_INDEX"]
---
apiVersion: batch/v1
kind: Job
metadata: {{name: fails}}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: {image}
        command: ["/bin/sh", "-c", "exit 3"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_and_failing_jobs_on_a_real_node() {
    let c = cluster().await;
    let _controllers = start_controllers(
        &c,
        Settings {
            job_backoff: Duration::from_millis(500),
            ..Default::default()
        },
    );
    let node = TestNode::new(&c.server, "n-batch");
    wait_node_ready(&c.client, &node).await;
    let file = node.path("jobs.yaml");
    std::fs::write(&file, manifest(&c.image)).unwrap();
    c.server
        .ok("1.32", &["apply", "-f", &file.display().to_string()])
        .await;

    c.server
        .ok(
            "1.32",
            &[
                "wait",
                "--for=condition=complete",
                "job/idx",
                "--timeout=120s",
            ],
        )
        .await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let list = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=idx"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for p in &list.items {
        let name = p.metadata.name.clone().unwrap();
        let index =
            p.metadata.annotations.as_ref().unwrap()["batch.kubernetes.io/job-completion-index"]
                .clone();
        let log = c.server.ok("1.32", &["logs", &name]).await;
        assert_eq!(log.trim(), format!("index={index}"), "pod {name}");
        seen.push(index);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["0", "1", "2"]);
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), "default");
    let status = jobs.get("idx").await.unwrap().status.unwrap();
    assert_eq!(status.succeeded, Some(3));
    assert_eq!(status.completed_indexes.as_deref(), Some("0-2"));
    let any = c.server.ok("1.32", &["logs", "job/idx"]).await;
    assert!(any.starts_with("index="), "{any}");

    c.server
        .ok(
            "1.32",
            &[
                "wait",
                "--for=condition=failed",
                "job/fails",
                "--timeout=120s",
            ],
        )
        .await;
    let job = jobs.get("fails").await.unwrap();
    let status = job.status.unwrap();
    assert_eq!(status.failed, Some(2), "backoffLimit 1: two pods failed");
    let failed = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    let exits: Vec<i32> = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=fails"))
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|p| {
            let s = p
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .clone();
            Some(s.state?.terminated?.exit_code)
        })
        .collect();
    assert_eq!(exits, [3, 3], "the real containers' exit codes");
}

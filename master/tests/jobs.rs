//! The Job controller against a real API server with simulated nodes (pods end with the phase
//! their `sim.skiff.io/result` annotation names): completions with bounded parallelism, the
//! backoff limit, Indexed Jobs, suspend, TTL, bad templates; driven with kubectl 1.27/1.32.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;
mod cluster_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use skiff_master::controllers::Settings;

use cluster_common::SimCluster;

const WAIT: Duration = Duration::from_secs(60);

fn settings() -> Settings {
    Settings {
        job_backoff: Duration::from_millis(200),
        ..Settings::default()
    }
}

fn job_yaml(name: &str, spec: &str, result: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
{spec}
  template:
    metadata:
      annotations: {{sim.skiff.io/result: {result}}}
    spec:
      restartPolicy: Never
      containers:
      - {{name: work, image: busybox, command: ["sh", "-c", "echo $JOB_COMPLETION_INDEX"]}}
"#
    )
}

async fn job_pods(cluster: &SimCluster, name: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
        .await
        .unwrap()
        .items
}

fn condition<'a>(job: &'a Job, ty: &str) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty && c.status == "True")
}

#[tokio::test]
async fn job_completes_with_bounded_parallelism() {
    let cluster = SimCluster::with_nodes(settings(), &["n1", "n2"]).await;
    // Count active pods of the Job at every pod event.
    let max_active = Arc::new(AtomicUsize::new(0));
    let seen = max_active.clone();
    let pods_api: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let watch = tokio::spawn(async move {
        let store = kube::runtime::reflector::store::<Pod>();
        let (reader, writer) = store;
        let mut stream = std::pin::pin!(kube::runtime::reflector(
            writer,
            watcher(
                pods_api,
                watcher::Config::default().labels("batch.kubernetes.io/job-name=pi")
            )
        ));
        while let Some(ev) = stream.next().await {
            if ev.is_ok() {
                let active = reader
                    .state()
                    .iter()
                    .filter(|p| {
                        p.metadata.deletion_timestamp.is_none()
                            && !matches!(
                                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                                Some("Succeeded" | "Failed")
                            )
                    })
                    .count();
                seen.fetch_max(active, Ordering::SeqCst);
            }
        }
    });
    cluster
        .apply(
            "1.32",
            &job_yaml("pi", "  completions: 5\n  parallelism: 2", "Succeeded"),
        )
        .await;
    let out = cluster
        .server
        .ok(
            "1.32",
            &[
                "wait",
                "--for=condition=complete",
                "job/pi",
                "--timeout=60s",
            ],
        )
        .await;
    assert!(out.contains("condition met"), "{out}");
    watch.abort();
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    let job = jobs.get("pi").await.unwrap();
    let st = job.status.clone().unwrap();
    assert_eq!(st.succeeded, Some(5));
    assert_eq!(st.active, Some(0));
    assert!(st.completion_time.is_some() && st.start_time.is_some());
    assert!(condition(&job, "SuccessCriteriaMet").is_some());
    assert_eq!(
        job_pods(&cluster, "pi").await.len(),
        5,
        "exactly five pods ran"
    );
    let max = max_active.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&max),
        "at most 2 active at once, saw {max}"
    );
    let pod = &job_pods(&cluster, "pi").await[0];
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.api_version.as_str(), owner.kind.as_str()),
        ("batch/v1", "Job")
    );
    assert_eq!(owner.uid, job.metadata.uid.clone().unwrap());

    for version in ["1.27", "1.32"] {
        let table = cluster.server.ok(version, &["get", "jobs"]).await;
        let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        let want = ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"];
        assert_eq!(header, want, "{table}");
        assert!(
            table.contains("Complete") && table.contains("5/5"),
            "{table}"
        );
    }
}

#[tokio::test]
async fn failing_job_stops_at_the_backoff_limit() {
    let cluster = SimCluster::with_nodes(settings(), &["n1"]).await;
    cluster
        .apply("1.32", &job_yaml("fail", "  backoffLimit: 2", "Failed"))
        .await;
    let out = cluster
        .server
        .ok(
            "1.32",
            &[
                "wait",
                "--for=condition=failed",
                "job/fail",
                "--timeout=60s",
            ],
        )
        .await;
    assert!(out.contains("condition met"), "{out}");
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    let job = jobs.get("fail").await.unwrap();
    let failed = condition(&job, "Failed").unwrap();
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(job.status.as_ref().unwrap().failed, Some(3));
    // No pod after the third failure.
    assert_eq!(job_pods(&cluster, "fail").await.len(), 3);
    let describe = cluster.kubectl(&["get", "job", "fail"]).await;
    assert!(describe.contains("Failed"), "{describe}");
}

#[tokio::test]
async fn indexed_job_pods_carry_their_index() {
    let cluster = SimCluster::with_nodes(settings(), &["n1"]).await;
    cluster
        .apply(
            "1.27",
            &job_yaml(
                "idx",
                "  completions: 3\n  parallelism: 3\n  completionMode: Indexed",
                "Succeeded",
            ),
        )
        .await;
    cluster
        .server
        .ok(
            "1.27",
            &[
                "wait",
                "--for=condition=complete",
                "job/idx",
                "--timeout=60s",
            ],
        )
        .await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    let job = jobs.get("idx").await.unwrap();
    assert_eq!(
        job.status.as_ref().unwrap().completed_indexes.as_deref(),
        Some("0-2")
    );
    let mut indexes: Vec<String> = Vec::new();
    for p in job_pods(&cluster, "idx").await {
        let ann = p.metadata.annotations.as_ref().unwrap();
        let idx = ann["batch.kubernetes.io/job-completion-index"].clone();
        assert_eq!(
            p.metadata.labels.as_ref().unwrap()["batch.kubernetes.io/job-completion-index"],
            idx
        );
        assert!(
            p.metadata
                .name
                .as_ref()
                .unwrap()
                .starts_with(&format!("idx-{idx}-"))
        );
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname, Some(format!("idx-{idx}")));
        let env = spec.containers[0].env.as_ref().unwrap();
        let e = env
            .iter()
            .find(|e| e.name == "JOB_COMPLETION_INDEX")
            .unwrap();
        assert_eq!(
            e.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
        indexes.push(idx);
    }
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
}

#[tokio::test]
async fn kubectl_create_job_suspend_ttl_and_bad_templates() {
    let cluster = SimCluster::with_nodes(settings(), &["n1"]).await;
    // The Job `kubectl create job` makes (it sends it as protobuf, which the API server does
    // not decode: here kubectl prints it and applies it as YAML): restartPolicy Never, the
    // generated selector and labels.
    let manifest = cluster
        .kubectl(&[
            "create",
            "job",
            "hello",
            "--image=busybox",
            "--dry-run=client",
            "-o",
            "yaml",
            "--",
            "sh",
            "-c",
            "echo hi",
        ])
        .await;
    cluster.apply("1.32", &manifest).await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    let job = jobs.get("hello").await.unwrap();
    let uid = job.metadata.uid.clone().unwrap();
    let spec = job.spec.clone().unwrap();
    assert_eq!(
        spec.selector.unwrap().match_labels.unwrap()["batch.kubernetes.io/controller-uid"],
        uid
    );
    assert_eq!(spec.backoff_limit, Some(6));
    assert_eq!(spec.completions, Some(1));
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["job-name"], "hello");
    assert_eq!(labels["controller-uid"], uid);
    // Its pod runs (the sim node has no result for it) and `kubectl get pods -l` finds it.
    cluster
        .wait_for("a running pod of job hello", WAIT, || async {
            let pods = job_pods(&cluster, "hello").await;
            pods.iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .then_some(())
        })
        .await;
    let all = cluster.kubectl(&["get", "all"]).await;
    assert!(all.contains("job.batch/hello"), "{all}");

    // Suspend: the active pod is stopped, condition Suspended.
    cluster
        .kubectl(&[
            "patch",
            "job",
            "hello",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ])
        .await;
    cluster
        .wait_for("job hello suspended without pods", WAIT, || async {
            let job = jobs.get("hello").await.ok()?;
            condition(&job, "Suspended")?;
            let pods = job_pods(&cluster, "hello").await;
            (pods.is_empty() && job.status.as_ref()?.active == Some(0)).then_some(())
        })
        .await;
    let table = cluster.kubectl(&["get", "job", "hello"]).await;
    assert!(table.contains("Suspended"), "{table}");

    // ttlSecondsAfterFinished: a finished Job is deleted with its pods.
    cluster
        .apply(
            "1.32",
            &job_yaml("short", "  ttlSecondsAfterFinished: 1", "Succeeded"),
        )
        .await;
    cluster
        .wait_for("job short and its pod deleted", WAIT, || async {
            let gone = matches!(jobs.get("short").await, Err(kube::Error::Api(e)) if e.code == 404);
            (gone && job_pods(&cluster, "short").await.is_empty()).then_some(())
        })
        .await;

    // Bad templates: 422 naming the field, nothing created.
    let bad = [
        (
            r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"bad"},"spec":{"template":{"spec":{"restartPolicy":"Always","containers":[{"name":"c","image":"busybox"}]}}}}"#,
            "spec.template.spec.restartPolicy",
        ),
        (
            r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"bad"},"spec":{"template":{"spec":{"restartPolicy":"Never","containers":[{"name":"c"}]}}}}"#,
            "spec.template.spec.containers[0].image",
        ),
        (
            r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"bad"},"spec":{"completionMode":"Indexed","parallelism":2,"template":{"spec":{"restartPolicy":"Never","containers":[{"name":"c","image":"busybox"}]}}}}"#,
            "spec.completions",
        ),
    ];
    for (body, field) in bad {
        let (code, status) = cluster
            .server
            .admin(
                "POST",
                "/apis/batch/v1/namespaces/default/jobs",
                "application/json",
                body.as_bytes(),
            )
            .await;
        assert_eq!(code, 422, "{status}");
        let causes = status["details"]["causes"].as_array().unwrap();
        assert!(
            causes.iter().any(|c| c["field"] == field),
            "{field} named in {status}"
        );
    }
    assert!(matches!(jobs.get("bad").await, Err(kube::Error::Api(e)) if e.code == 404));
    // The template of an existing Job cannot change.
    let out = cluster
        .server
        .kubectl(
            "1.32",
            &["set", "image", "job/hello", "hello=busybox:1.36"],
            &[],
        )
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.template") && err.contains("field is immutable"),
        "{err}"
    );
}

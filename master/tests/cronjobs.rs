//! The CronJob controller against a real API server with simulated nodes and a clock the test
//! moves: a Job at the scheduled minute, owned by the CronJob, its table in kubectl,
//! `kubectl create job --from=cronjob/x`, and an invalid schedule refused with 422.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;
mod cluster_common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use skiff_master::controllers::Settings;

use cluster_common::SimCluster;

const WAIT: Duration = Duration::from_secs(60);

/// Seconds the controllers' clock is ahead of the real one.
static AHEAD: AtomicI64 = AtomicI64::new(0);

fn clock() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::Duration::seconds(AHEAD.load(Ordering::SeqCst))
}

const CJ: &str = r#"apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "*/1 * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    metadata: {labels: {app: tick}}
    spec:
      template:
        metadata:
          annotations: {sim.skiff.io/result: Succeeded}
        spec:
          restartPolicy: OnFailure
          containers:
          - {name: tick, image: busybox, command: ["date"]}
"#;

#[tokio::test]
async fn cronjob_starts_jobs_on_schedule() {
    let settings = Settings {
        clock,
        ..Settings::default()
    };
    let cluster = SimCluster::with_nodes(settings, &["n1"]).await;
    cluster.apply("1.32", CJ).await;
    let cronjobs: Api<CronJob> = Api::namespaced(cluster.client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    let cj = cronjobs.get("tick").await.unwrap();
    let spec = cj.spec.clone().unwrap();
    assert_eq!(spec.successful_jobs_history_limit, Some(3));
    assert_eq!(spec.failed_jobs_history_limit, Some(1));
    assert_eq!(spec.suspend, Some(false));

    // Move the clock past the next minute and poke the CronJob so it syncs now.
    AHEAD.store(61, Ordering::SeqCst);
    let due = clock().timestamp() / 60;
    cronjobs
        .patch(
            "tick",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"poke": "1"}}})),
        )
        .await
        .unwrap();
    let job = cluster
        .wait_for("the scheduled job", WAIT, || async {
            let list = jobs
                .list(&ListParams::default().labels("app=tick"))
                .await
                .ok()?;
            list.items.into_iter().next()
        })
        .await;
    let name = job.metadata.name.clone().unwrap();
    assert_eq!(
        name,
        format!("tick-{due}"),
        "named after the scheduled minute"
    );
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("CronJob", cj.metadata.uid.as_deref().unwrap())
    );
    assert!(
        job.metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key("batch.kubernetes.io/cronjob-scheduled-timestamp")
    );
    // The Job runs to completion (the sim node ends its pod) and the CronJob records it.
    cluster
        .server
        .ok(
            "1.32",
            &[
                "wait",
                "--for=condition=complete",
                &format!("job/{name}"),
                "--timeout=60s",
            ],
        )
        .await;
    cluster
        .wait_for("lastSuccessfulTime and no active job", WAIT, || async {
            let st = cronjobs.get("tick").await.ok()?.status?;
            (st.last_successful_time.is_some()
                && st.last_schedule_time.is_some()
                && st.active.is_none_or(|a| a.is_empty()))
            .then_some(())
        })
        .await;
    for version in ["1.27", "1.32"] {
        let table = cluster.server.ok(version, &["get", "cj"]).await;
        let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"
            ],
            "{table}"
        );
        assert!(
            table.contains("*/1 * * * *") && table.contains("False"),
            "{table}"
        );
    }
    // Discovery (aggregated for 1.27+): names, short names, categories, verbs.
    for version in ["1.27", "1.32"] {
        let out = cluster
            .server
            .ok(version, &["api-resources", "-o", "wide"])
            .await;
        for (name, short, group) in [
            ("jobs", "", "batch/v1"),
            ("cronjobs", "cj", "batch/v1"),
            ("daemonsets", "ds", "apps/v1"),
        ] {
            let line = out
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("{name} in {out}"));
            assert!(
                line.contains(group) && line.contains(short) && line.contains("all"),
                "{line}"
            );
        }
    }
    let all = cluster.kubectl(&["get", "jobs,cronjobs"]).await;
    assert!(
        all.contains("job.batch/tick-") && all.contains("cronjob.batch/tick"),
        "{all}"
    );

    // kubectl create job --from=cronjob: the Job kubectl makes from the template (printed,
    // then applied: kubectl sends creates of typed clients as protobuf).
    let manifest = cluster
        .kubectl(&[
            "create",
            "job",
            "manual",
            "--from=cronjob/tick",
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .await;
    assert!(
        manifest.contains("cronjob.kubernetes.io/instantiate: manual"),
        "{manifest}"
    );
    cluster.apply("1.32", &manifest).await;
    let manual = jobs.get("manual").await.unwrap();
    assert_eq!(manual.metadata.labels.unwrap()["app"], "tick");

    // An invalid schedule: 422 naming spec.schedule, nothing stored.
    let bad = CJ
        .replace("name: tick", "name: bad")
        .replace("*/1 * * * *", "every minute");
    let path = cluster.server.dir.path().join("bad.yaml");
    std::fs::write(&path, bad).unwrap();
    let out = cluster
        .server
        .kubectl("1.32", &["apply", "-f", path.to_str().unwrap()], &[])
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.schedule") && err.contains("Invalid value"),
        "{err}"
    );
    assert!(matches!(cronjobs.get("bad").await, Err(kube::Error::Api(e)) if e.code == 404));
}

//! The CronJob controller's decisions as a pure function of (cronjob, its jobs, now): whether a
//! Job is due (the latest scheduled time since the last one, within
//! `startingDeadlineSeconds`), what concurrencyPolicy allows, which finished Jobs fall out of
//! the history limits, the status, and when the next run is (upstream's `syncCronJob`).

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::controllers::replicaset::core::controller_ref;

/// The annotation with a scheduled Job's scheduled time (RFC 3339), as 1.28+ sets it.
pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// A 5-field cron schedule (or `@hourly`-style macro), as Kubernetes' parser takes it.
pub fn parse_schedule(s: &str) -> Result<Cron, String> {
    if s.contains("TZ") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(s)
        .map_err(|e| e.to_string())
}

/// The IANA time zone of `spec.timeZone` (UTC when unset).
pub fn parse_zone(tz: Option<&str>) -> Result<chrono_tz::Tz, String> {
    match tz {
        None => Ok(chrono_tz::UTC),
        Some(name) => name
            .parse::<chrono_tz::Tz>()
            .map_err(|_| format!("unknown time zone {name}")),
    }
}

/// What the controller does in one sync.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The Job to create (named `<cronjob>-<minutes since epoch>`), if one is due.
    pub create: Option<Job>,
    /// Running Jobs to delete (concurrencyPolicy Replace).
    pub replace: Vec<String>,
    /// Finished Jobs beyond the history limits.
    pub prune: Vec<String>,
    /// The status to report.
    pub status: CronJobStatus,
    /// Time until the next scheduled run.
    pub requeue: Option<Duration>,
    /// Why a due run was not started (for a Warning Event).
    pub skipped: Option<String>,
}

fn to_utc(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), 0).unwrap_or_default()
}

fn to_time(t: DateTime<Utc>) -> Time {
    Time(Timestamp::from_second(t.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// `Some(true)` for a Complete Job, `Some(false)` for a Failed one, `None` while it runs.
pub fn job_result(job: &Job) -> Option<bool> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    let is = |ty: &str| conds.iter().any(|c| c.type_ == ty && c.status == "True");
    if is("Complete") {
        Some(true)
    } else if is("Failed") {
        Some(false)
    } else {
        None
    }
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// The Job a CronJob starts for `scheduled` (upstream's `getJobFromTemplate2`).
pub fn job_for(cj: &CronJob, scheduled: DateTime<Utc>) -> Job {
    let name = cj.metadata.name.clone().unwrap_or_default();
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_AT.into(),
        scheduled.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{}", scheduled.timestamp() / 60)),
            namespace: cj.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(
                "CronJob",
                &name,
                cj.metadata.uid.as_deref().unwrap_or_default(),
            )]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The latest scheduled time in (`after`, `now`], if any.
fn latest_due<Z: TimeZone>(
    cron: &Cron,
    zone: &Z,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let t = cron
        .find_previous_occurrence(&now.with_timezone(zone), true)
        .ok()?
        .with_timezone(&Utc);
    (t > after).then_some(t)
}

/// One sync of `cj` over the Jobs it owns at `now`.
pub fn plan(cj: &CronJob, jobs: &[&Job], now: DateTime<Utc>) -> Result<Plan, String> {
    let spec = cj.spec.clone().unwrap_or_default();
    let mut status = cj.status.clone().unwrap_or_default();
    let mut out = Plan {
        create: None,
        replace: Vec::new(),
        prune: Vec::new(),
        status: CronJobStatus::default(),
        requeue: None,
        skipped: None,
    };
    let mut running: Vec<&Job> = jobs
        .iter()
        .copied()
        .filter(|j| job_result(j).is_none())
        .collect();
    running.sort_by_key(|j| j.metadata.name.clone());
    let last_success = jobs
        .iter()
        .filter(|j| job_result(j) == Some(true))
        .filter_map(|j| j.status.as_ref()?.completion_time.as_ref().map(to_utc))
        .max();
    if let Some(t) = last_success {
        if status
            .last_successful_time
            .as_ref()
            .is_none_or(|old| to_utc(old) < t)
        {
            status.last_successful_time = Some(to_time(t));
        }
    }
    // History limits: the oldest finished Jobs beyond them go.
    for (ok, limit) in [
        (true, spec.successful_jobs_history_limit.unwrap_or(3)),
        (false, spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let mut done: Vec<&Job> = jobs
            .iter()
            .copied()
            .filter(|j| job_result(j) == Some(ok))
            .collect();
        done.sort_by_key(|j| {
            let st = j
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            (st, j.metadata.name.clone())
        });
        let extra = done
            .len()
            .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        out.prune.extend(
            done.iter()
                .take(extra)
                .filter_map(|j| j.metadata.name.clone()),
        );
    }
    let cron = parse_schedule(&spec.schedule)?;
    let zone = parse_zone(spec.time_zone.as_deref())?;
    let created = cj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(to_utc)
        .unwrap_or(now);
    let mut earliest = status
        .last_schedule_time
        .as_ref()
        .map(to_utc)
        .unwrap_or(created);
    if let Some(sds) = spec.starting_deadline_seconds {
        earliest = earliest.max(now - chrono::Duration::seconds(sds));
    }
    let mut active: Vec<&Job> = running.clone();
    if spec.suspend != Some(true) {
        if let Some(t) = latest_due(&cron, &zone, earliest, now) {
            let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
            let name = format!(
                "{}-{}",
                cj.metadata.name.as_deref().unwrap_or_default(),
                t.timestamp() / 60
            );
            let exists = jobs
                .iter()
                .any(|j| j.metadata.name.as_deref() == Some(name.as_str()));
            if exists {
                status.last_schedule_time = Some(to_time(t));
            } else if policy == "Forbid" && !running.is_empty() {
                out.skipped = Some(
                    "Not starting job because prior execution is still running and concurrency policy is Forbid".into(),
                );
            } else {
                if policy == "Replace" {
                    out.replace = running
                        .iter()
                        .filter_map(|j| j.metadata.name.clone())
                        .collect();
                    active.clear();
                }
                out.create = Some(job_for(cj, t));
                status.last_schedule_time = Some(to_time(t));
            }
        }
        let next = cron
            .find_next_occurrence(&now.with_timezone(&zone), false)
            .ok()
            .map(|n| n.with_timezone(&Utc));
        out.requeue =
            next.map(|n| (n - now).to_std().unwrap_or_default() + Duration::from_millis(100));
    }
    let mut refs: Vec<ObjectReference> = active.iter().map(|j| reference(j)).collect();
    refs.extend(out.create.as_ref().map(reference));
    status.active = (!refs.is_empty()).then_some(refs);
    out.status = status;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cj(spec: Value, status: Value) -> CronJob {
        let mut spec = spec;
        spec["jobTemplate"] = json!({"metadata": {"labels": {"app": "x"}},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "c", "image": "busybox"}]}}}});
        serde_json::from_value(
            json!({"metadata": {"name": "cj", "namespace": "default", "uid": "u",
                                                    "creationTimestamp": "2024-01-01T00:00:30Z"},
                                      "spec": spec, "status": status}),
        )
        .unwrap()
    }

    fn job(name: &str, result: Option<bool>, start: &str) -> Job {
        let conds = match result {
            Some(true) => json!([{"type": "Complete", "status": "True"}]),
            Some(false) => json!([{"type": "Failed", "status": "True"}]),
            None => json!([]),
        };
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
            "status": {"startTime": start, "completionTime": if result == Some(true) { json!(start) } else { Value::Null },
                       "conditions": conds}}))
        .unwrap()
    }

    #[test]
    fn schedules_and_zones() {
        for (s, ok) in [
            ("*/1 * * * *", true),
            ("0 3 * * MON-FRI", true),
            ("@hourly", true),
            ("@daily", true),
            ("* * * *", false),
            ("0 0 * * * *", false),
            ("61 * * * *", false),
            ("TZ=UTC * * * * *", false),
            ("not a schedule", false),
        ] {
            assert_eq!(parse_schedule(s).is_ok(), ok, "{s}");
        }
        assert!(parse_zone(Some("Europe/Berlin")).is_ok());
        assert!(parse_zone(Some("Mars/Olympus")).is_err());
        assert!(parse_zone(None).is_ok());
    }

    struct Case {
        name: &'static str,
        cj: CronJob,
        jobs: Vec<Job>,
        now: &'static str,
        create: Option<&'static str>,
        replace: Vec<&'static str>,
        prune: Vec<&'static str>,
        active: usize,
        requeue: Option<u64>,
    }

    #[test]
    fn plans() {
        let every_min = json!({"schedule": "*/1 * * * *"});
        // 2024-01-01T00:01:00Z is minute 28401121 since the epoch.
        let cases = vec![
            Case {
                name: "nothing due before the first minute",
                cj: cj(every_min.clone(), json!({})),
                jobs: vec![],
                now: "2024-01-01T00:00:50Z",
                create: None,
                replace: vec![],
                prune: vec![],
                active: 0,
                requeue: Some(10),
            },
            Case {
                name: "due at the minute",
                cj: cj(every_min.clone(), json!({})),
                jobs: vec![],
                now: "2024-01-01T00:01:05Z",
                create: Some("cj-28401121"),
                replace: vec![],
                prune: vec![],
                active: 1,
                requeue: Some(55),
            },
            Case {
                name: "already created",
                cj: cj(
                    every_min.clone(),
                    json!({"lastScheduleTime": "2024-01-01T00:01:00Z"}),
                ),
                jobs: vec![job("cj-28401121", None, "2024-01-01T00:01:00Z")],
                now: "2024-01-01T00:01:30Z",
                create: None,
                replace: vec![],
                prune: vec![],
                active: 1,
                requeue: Some(30),
            },
            Case {
                name: "missed runs: only the latest starts",
                cj: cj(
                    every_min.clone(),
                    json!({"lastScheduleTime": "2024-01-01T00:01:00Z"}),
                ),
                jobs: vec![],
                now: "2024-01-01T00:05:10Z",
                create: Some("cj-28401125"),
                replace: vec![],
                prune: vec![],
                active: 1,
                requeue: Some(50),
            },
            Case {
                name: "past the starting deadline",
                cj: cj(
                    json!({"schedule": "0 * * * *", "startingDeadlineSeconds": 10}),
                    json!({}),
                ),
                jobs: vec![],
                now: "2024-01-01T01:00:30Z",
                create: None,
                replace: vec![],
                prune: vec![],
                active: 0,
                requeue: Some(3570),
            },
            Case {
                name: "forbid while one runs",
                cj: cj(
                    json!({"schedule": "*/1 * * * *", "concurrencyPolicy": "Forbid"}),
                    json!({"lastScheduleTime": "2024-01-01T00:01:00Z"}),
                ),
                jobs: vec![job("cj-28401121", None, "2024-01-01T00:01:00Z")],
                now: "2024-01-01T00:02:01Z",
                create: None,
                replace: vec![],
                prune: vec![],
                active: 1,
                requeue: Some(59),
            },
            Case {
                name: "replace the running one",
                cj: cj(
                    json!({"schedule": "*/1 * * * *", "concurrencyPolicy": "Replace"}),
                    json!({"lastScheduleTime": "2024-01-01T00:01:00Z"}),
                ),
                jobs: vec![job("cj-28401121", None, "2024-01-01T00:01:00Z")],
                now: "2024-01-01T00:02:01Z",
                create: Some("cj-28401122"),
                replace: vec!["cj-28401121"],
                prune: vec![],
                active: 1,
                requeue: Some(59),
            },
            Case {
                name: "suspended",
                cj: cj(
                    json!({"schedule": "*/1 * * * *", "suspend": true}),
                    json!({}),
                ),
                jobs: vec![],
                now: "2024-01-01T00:05:00Z",
                create: None,
                replace: vec![],
                prune: vec![],
                active: 0,
                requeue: None,
            },
            Case {
                name: "history limits",
                cj: cj(
                    json!({"schedule": "0 0 1 1 *", "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 0}),
                    json!({"lastScheduleTime": "2024-01-01T00:00:00Z"}),
                ),
                jobs: vec![
                    job("a", Some(true), "2024-01-01T00:00:01Z"),
                    job("b", Some(true), "2024-01-01T00:00:02Z"),
                    job("c", Some(false), "2024-01-01T00:00:03Z"),
                ],
                now: "2024-01-01T00:10:00Z",
                create: None,
                replace: vec![],
                prune: vec!["a", "c"],
                active: 0,
                requeue: None,
            },
        ];
        for c in cases {
            let jobs: Vec<&Job> = c.jobs.iter().collect();
            let p = plan(&c.cj, &jobs, at(c.now)).unwrap();
            assert_eq!(
                p.create.as_ref().and_then(|j| j.metadata.name.as_deref()),
                c.create,
                "{}",
                c.name
            );
            assert_eq!(p.replace, c.replace, "{}", c.name);
            assert_eq!(p.prune, c.prune, "{}", c.name);
            assert_eq!(
                p.status.active.map_or(0, |a| a.len()),
                c.active,
                "{}",
                c.name
            );
            if let Some(secs) = c.requeue {
                assert_eq!(p.requeue.map(|d| d.as_secs()), Some(secs), "{}", c.name);
            }
        }
    }

    #[test]
    fn time_zones_shift_the_schedule() {
        // 09:00 in Tokyo is 00:00 UTC.
        let c = cj(
            json!({"schedule": "0 9 * * *", "timeZone": "Asia/Tokyo"}),
            json!({}),
        );
        let p = plan(&c, &[], at("2024-01-02T00:00:10Z")).unwrap();
        let job = p.create.unwrap();
        assert_eq!(
            job.metadata.annotations.unwrap()[SCHEDULED_AT],
            "2024-01-02T00:00:00Z"
        );
        assert_eq!(job.metadata.labels.unwrap()["app"], "x");
        let r = &job.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (r.api_version.as_str(), r.kind.as_str()),
            ("batch/v1", "CronJob")
        );
        assert_eq!(
            p.status.last_schedule_time.map(|t| t.0.as_second()),
            Some(at("2024-01-02T00:00:00Z").timestamp())
        );
    }
}

//! The Job controller's decisions as a pure function of (job, its pods, now): which pods to
//! create (with their completion indexes) or delete, whether the Job completed or failed
//! (backoff limit, active deadline), suspension, the status it reports and when to look
//! again (upstream's `syncJob`/`manageJob`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::controllers::replicaset::core::{
    controller_ref, is_active, is_ready, rank_for_deletion,
};
use crate::resources::workloads::{COMPLETION_INDEX, JOB_NAME_LABEL};

/// The env var an Indexed Job's containers see their index in.
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// The longest delay before a failed pod is replaced (upstream's `MaxJobPodFailureBackOff`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// What the controller does in one sync.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Pods to create: their completion index (`None` for NonIndexed Jobs).
    pub create: Vec<Option<i32>>,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    /// The status to report.
    pub status: JobStatus,
    /// Look again after this long (backoff, deadline), if nothing else happens sooner.
    pub requeue: Option<Duration>,
    /// Reason of a condition that became true in this sync (Completed, BackoffLimitExceeded,
    /// DeadlineExceeded, Suspended, Resumed), for the Event.
    pub event: Option<(&'static str, String)>,
}

fn condition_true(status: Option<&JobStatus>, ty: &str) -> bool {
    status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == ty && c.status == "True"))
}

/// Whether the Job has finished (Complete or Failed).
pub fn finished(job: &Job) -> bool {
    let s = job.status.as_ref();
    condition_true(s, "Complete") || condition_true(s, "Failed")
}

/// When the Job finished: its Complete/Failed condition's transition time.
fn finish_time(job: &Job) -> Option<Timestamp> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// For a finished Job with `ttlSecondsAfterFinished`: `Some(ZERO)` when it is due for
/// deletion, else how long until it is. `None` when it has no TTL or has not finished.
pub fn ttl_remaining(job: &Job, now: Timestamp) -> Option<Duration> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    if !finished(job) {
        return None;
    }
    let at = finish_time(job).unwrap_or(now) + SignedDuration::from_secs(i64::from(ttl));
    Some(if at <= now {
        Duration::ZERO
    } else {
        at.duration_since(now).unsigned_abs()
    })
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The completion index of a pod (annotation, else label), if valid.
pub fn index_of(pod: &Pod) -> Option<i32> {
    let m = &pod.metadata;
    m.annotations
        .as_ref()
        .and_then(|a| a.get(COMPLETION_INDEX))
        .or_else(|| m.labels.as_ref().and_then(|l| l.get(COMPLETION_INDEX)))
        .and_then(|s| s.parse().ok())
        .filter(|i: &i32| *i >= 0)
}

/// `status.completedIndexes` as a set (`"1,3-5"` → {1,3,4,5}).
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
            out.extend(a..=b);
        }
    }
    out
}

/// A set of indexes in `status.completedIndexes` form (`"1,3-5"`).
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// When a terminated pod finished: its containers' latest `finishedAt`, else when it was
/// created.
fn finished_at(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Upstream's pod failure backoff: `base · 2^(n-1)` (capped at [`MAX_BACKOFF`]) after the
/// last of the `n` failures since the last success. Returns how long to wait still.
pub fn backoff_remaining(pods: &[&Pod], base: Duration, now: Timestamp) -> Option<Duration> {
    let last_success = pods
        .iter()
        .filter(|p| phase(p) == "Succeeded")
        .filter_map(|p| finished_at(p))
        .max();
    let failures: Vec<Timestamp> = pods
        .iter()
        .filter(|p| phase(p) == "Failed")
        .filter_map(|p| finished_at(p))
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    let last = failures.iter().max()?;
    let n = u32::try_from(failures.len()).unwrap_or(u32::MAX).min(32);
    let delay = base
        .checked_mul(1u32 << (n - 1).min(31))
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF);
    let ready = *last + SignedDuration::try_from(delay).unwrap_or(SignedDuration::MAX);
    (ready > now).then(|| ready.duration_since(now).unsigned_abs())
}

/// Container restarts of running or pending pods (upstream's `pastBackoffLimitOnFailure`).
fn restarts(pods: &[&Pod]) -> i64 {
    pods.iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .map(|c| i64::from(c.restart_count))
        .sum()
}

fn set_condition(
    conds: &mut Vec<JobCondition>,
    ty: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == ty) {
        if c.status != status {
            c.last_transition_time = Some(Time(now));
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(Time(now));
        return;
    }
    conds.push(JobCondition {
        type_: ty.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

fn names(pods: &[&Pod]) -> Vec<String> {
    pods.iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// One sync of `job` over the pods it owns (`pods`: all of them, terminated ones too).
/// `backoff` is the base of the failed-pod replacement delay (10 s upstream).
pub fn plan(job: &Job, pods: &[&Pod], now: Timestamp, backoff: Duration) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let prev = job.status.clone().unwrap_or_default();
    let mut status = prev.clone();
    let mut conds = prev.conditions.clone().unwrap_or_default();
    let active: Vec<&Pod> = pods.iter().copied().filter(|p| is_active(p)).collect();
    let mut out = Plan {
        create: Vec::new(),
        delete: Vec::new(),
        status: JobStatus::default(),
        requeue: None,
        event: None,
    };
    if finished(job) {
        // A finished Job keeps its counts; pods still running are stopped.
        out.delete = names(&active);
        status.active = Some(0);
        status.ready = Some(0);
        out.status = status;
        return out;
    }
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let parallelism = i64::from(spec.parallelism.unwrap_or(1).max(0));
    let completions = spec.completions.map(i64::from);
    let backoff_limit = i64::from(spec.backoff_limit.unwrap_or(6));
    let count = |ph: &str| pods.iter().filter(|p| phase(p) == ph).count() as i64;
    // Counts never go down: a terminated pod removed by someone was counted before.
    let failed = count("Failed").max(i64::from(prev.failed.unwrap_or(0)));
    let mut done_indexes = parse_indexes(prev.completed_indexes.as_deref().unwrap_or(""));
    if indexed {
        let limit = completions.unwrap_or(0);
        done_indexes.extend(
            pods.iter()
                .filter(|p| phase(p) == "Succeeded")
                .filter_map(|p| index_of(p))
                .filter(|i| i64::from(*i) < limit),
        );
    }
    let succeeded = if indexed {
        done_indexes.len() as i64
    } else {
        count("Succeeded").max(i64::from(prev.succeeded.unwrap_or(0)))
    };
    let terminating = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some() && !matches!(phase(p), "Succeeded" | "Failed")
        })
        .count();
    let as_i32 = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
    status.failed = Some(as_i32(failed));
    status.succeeded = Some(as_i32(succeeded));
    status.terminating = Some(as_i32(terminating as i64));
    if indexed {
        status.completed_indexes = Some(format_indexes(&done_indexes));
    }

    let suspended = spec.suspend == Some(true);
    let was_suspended = condition_true(Some(&prev), "Suspended");
    if suspended {
        out.delete = names(&active);
        if !was_suspended {
            set_condition(
                &mut conds,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                now,
            );
            out.event = Some(("Suspended", "Job suspended".into()));
        }
        status.start_time = None;
        status.active = Some(0);
        status.ready = Some(0);
        status.conditions = (!conds.is_empty()).then_some(conds);
        out.status = status;
        return out;
    }
    if was_suspended {
        set_condition(
            &mut conds,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            now,
        );
        out.event = Some(("Resumed", "Job resumed".into()));
        status.start_time = Some(Time(now));
    }
    let start = status.start_time.get_or_insert(Time(now)).0;

    // Failure: backoff limit (failed pods, or container restarts with OnFailure), deadline.
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let restarted = restarts(&active);
    let past_restarts = on_failure
        && if backoff_limit == 0 {
            restarted > 0
        } else {
            restarted >= backoff_limit
        };
    let deadline = spec
        .active_deadline_seconds
        .map(|s| start + SignedDuration::from_secs(s));
    let failure = if failed > backoff_limit || past_restarts {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else if deadline.is_some_and(|d| d <= now) {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ))
    } else {
        None
    };
    let complete = if indexed {
        completions.is_some_and(|c| succeeded >= c)
    } else {
        match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        }
    };
    if let Some((reason, message)) = failure {
        set_condition(&mut conds, "FailureTarget", "True", reason, message, now);
        set_condition(&mut conds, "Failed", "True", reason, message, now);
        out.delete = names(&active);
        out.event = Some((reason, message.into()));
        status.active = Some(0);
        status.ready = Some(0);
        status.conditions = Some(conds);
        out.status = status;
        return out;
    }
    if complete {
        let message = "Reached expected number of succeeded pods";
        set_condition(
            &mut conds,
            "SuccessCriteriaMet",
            "True",
            "CompletionsReached",
            message,
            now,
        );
        set_condition(
            &mut conds,
            "Complete",
            "True",
            "CompletionsReached",
            message,
            now,
        );
        out.delete = names(&active);
        out.event = Some(("Completed", "Job completed".into()));
        status.completion_time = Some(Time(now));
        status.active = Some(0);
        status.ready = Some(0);
        status.conditions = Some(conds);
        out.status = status;
        return out;
    }

    // Pods towards parallelism.
    let waiting = backoff_remaining(pods, backoff, now);
    if indexed {
        let limit = completions.unwrap_or(0);
        let mut by_index: BTreeMap<i32, Vec<&Pod>> = BTreeMap::new();
        for p in &active {
            match index_of(p).filter(|i| i64::from(*i) < limit && !done_indexes.contains(i)) {
                Some(i) => by_index.entry(i).or_default().push(p),
                // No valid index, or one that already succeeded: not needed.
                None => out.delete.extend(p.metadata.name.clone()),
            }
        }
        for list in by_index.values_mut() {
            // Duplicates of an index: keep the best one.
            let all = list.clone();
            rank_for_deletion(list, &all);
            let keep = list.pop();
            out.delete.extend(names(list));
            list.clear();
            list.extend(keep);
        }
        let want = parallelism.min(limit - succeeded).max(0);
        let have = by_index.len() as i64;
        if have > want {
            // Too many: stop the highest indexes.
            let extra = usize::try_from(have - want).unwrap_or(0);
            for list in by_index.values().rev().take(extra) {
                out.delete.extend(names(list));
            }
        } else if have < want {
            if let Some(w) = waiting {
                out.requeue = Some(w);
            } else {
                let n = usize::try_from(want - have).unwrap_or(0);
                out.create = (0..)
                    .take_while(|i| i64::from(*i) < limit)
                    .filter(|i| !done_indexes.contains(i) && !by_index.contains_key(i))
                    .take(n)
                    .map(Some)
                    .collect();
            }
        }
    } else {
        let have = active.len() as i64;
        let want = match completions {
            Some(c) => (c - succeeded).min(parallelism).max(0),
            None if succeeded > 0 => have,
            None => parallelism,
        };
        if have > want {
            let mut victims = active.clone();
            rank_for_deletion(&mut victims, &active);
            victims.truncate(usize::try_from(have - want).unwrap_or(0));
            out.delete = names(&victims);
        } else if have < want {
            match waiting {
                Some(w) => out.requeue = Some(w),
                None => out.create = vec![None; usize::try_from(want - have).unwrap_or(0)],
            }
        }
    }
    let stopping: BTreeSet<&String> = out.delete.iter().collect();
    let remaining: Vec<&Pod> = active
        .iter()
        .copied()
        .filter(|p| {
            p.metadata
                .name
                .as_ref()
                .is_none_or(|n| !stopping.contains(n))
        })
        .collect();
    status.active = Some(as_i32(remaining.len() as i64));
    status.ready = Some(as_i32(
        remaining.iter().filter(|p| is_ready(p)).count() as i64
    ));
    status.conditions = (!conds.is_empty()).then_some(conds);
    if let Some(d) = deadline {
        let left = d.duration_since(now).unsigned_abs();
        out.requeue = Some(out.requeue.map_or(left, |r| r.min(left)));
    }
    out.status = status;
    out
}

/// The controller ownerReference of a Job's pods.
pub fn job_ref(job: &Job) -> OwnerReference {
    controller_ref(
        "Job",
        job.metadata.name.as_deref().unwrap_or_default(),
        job.metadata.uid.as_deref().unwrap_or_default(),
    )
}

/// The pod a Job creates from its template, for completion `index` in Indexed mode: the
/// index as annotation and label, `JOB_COMPLETION_INDEX` from that annotation through a
/// fieldRef in every container, hostname `<job>-<index>` (upstream's `manageJob`).
pub fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels
        .entry(JOB_NAME_LABEL.into())
        .or_insert_with(|| name.clone());
    let mut annotations = tm.annotations.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            labels.insert(COMPLETION_INDEX.into(), i.to_string());
            annotations.insert(COMPLETION_INDEX.into(), i.to_string());
            if spec.hostname.as_deref().is_none_or(str::is_empty) {
                spec.hostname = Some(format!("{name}-{i}"));
            }
            let env = EnvVar {
                name: INDEX_ENV.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".into()),
                        field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                    }),
                    ..EnvVarSource::default()
                }),
            };
            for c in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                let list = c.env.get_or_insert_with(Vec::new);
                if !list.iter().any(|e| e.name == INDEX_ENV) {
                    list.push(env.clone());
                }
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: tm.finalizers,
            owner_references: Some(vec![job_ref(job)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2024-01-01T00:10:00Z";

    fn job(spec: Value, status: Value) -> Job {
        let mut spec = spec;
        spec["template"] = json!({"metadata": {"labels": {"job-name": "pi"}},
            "spec": {"restartPolicy": spec.get("rp").cloned().unwrap_or(json!("Never")),
                     "containers": [{"name": "c", "image": "busybox"}]}});
        if let Some(m) = spec.as_object_mut() {
            m.remove("rp");
        }
        serde_json::from_value(
            json!({"metadata": {"name": "pi", "namespace": "default", "uid": "u"},
                                      "spec": spec, "status": status}),
        )
        .unwrap()
    }

    /// A pod `name` in `phase` (index `idx` if given, `restarts` container restarts,
    /// finished at `fin`).
    fn pod(name: &str, phase: &str, idx: Option<i32>, restarts: i32, fin: &str) -> Pod {
        let ann = idx.map_or(json!({}), |i| json!({COMPLETION_INDEX: i.to_string()}));
        let state = if matches!(phase, "Succeeded" | "Failed") {
            json!({"terminated": {"exitCode": 1, "finishedAt": fin}})
        } else {
            json!({"running": {}})
        };
        serde_json::from_value(json!({"metadata": {"name": name, "annotations": ann,
                                                    "creationTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"phase": phase, "containerStatuses": [{"name": "c", "image": "", "imageID": "",
                "ready": phase == "Running", "restartCount": restarts, "state": state}]}}))
        .unwrap()
    }

    struct Case {
        name: &'static str,
        job: Job,
        pods: Vec<Pod>,
        create: Vec<Option<i32>>,
        delete: Vec<&'static str>,
        active: i32,
        condition: Option<(&'static str, &'static str)>,
        requeue: Option<Duration>,
    }

    #[test]
    fn plans() {
        let old = "2024-01-01T00:00:00Z";
        let started = json!({"startTime": old});
        let cases = vec![
            Case {
                name: "new job starts parallelism pods",
                job: job(json!({"completions": 5, "parallelism": 2}), json!({})),
                pods: vec![],
                create: vec![None, None],
                delete: vec![],
                active: 0,
                condition: None,
                requeue: None,
            },
            Case {
                name: "never more than the completions left",
                job: job(json!({"completions": 5, "parallelism": 2}), started.clone()),
                pods: vec![
                    pod("a", "Succeeded", None, 0, old),
                    pod("b", "Succeeded", None, 0, old),
                    pod("c", "Succeeded", None, 0, old),
                    pod("d", "Succeeded", None, 0, old),
                    pod("e", "Running", None, 0, old),
                ],
                create: vec![],
                delete: vec![],
                active: 1,
                condition: None,
                requeue: None,
            },
            Case {
                name: "completes at completions",
                job: job(json!({"completions": 2, "parallelism": 2}), started.clone()),
                pods: vec![
                    pod("a", "Succeeded", None, 0, old),
                    pod("b", "Succeeded", None, 0, old),
                ],
                create: vec![],
                delete: vec![],
                active: 0,
                condition: Some(("Complete", "CompletionsReached")),
                requeue: None,
            },
            Case {
                name: "work queue completes when one succeeded and none run",
                job: job(json!({"parallelism": 3}), started.clone()),
                pods: vec![pod("a", "Succeeded", None, 0, old)],
                create: vec![],
                delete: vec![],
                active: 0,
                condition: Some(("Complete", "CompletionsReached")),
                requeue: None,
            },
            Case {
                name: "too many active are deleted",
                job: job(json!({"completions": 5, "parallelism": 1}), started.clone()),
                pods: vec![
                    pod("a", "Running", None, 0, old),
                    pod("b", "Pending", None, 0, old),
                ],
                create: vec![],
                delete: vec!["b"],
                active: 1,
                condition: None,
                requeue: None,
            },
            Case {
                name: "backoff limit exceeded",
                job: job(
                    json!({"completions": 1, "backoffLimit": 1}),
                    started.clone(),
                ),
                pods: vec![
                    pod("a", "Failed", None, 0, old),
                    pod("b", "Failed", None, 0, old),
                    pod("c", "Running", None, 0, old),
                ],
                create: vec![],
                delete: vec!["c"],
                active: 0,
                condition: Some(("Failed", "BackoffLimitExceeded")),
                requeue: None,
            },
            Case {
                name: "OnFailure counts container restarts",
                job: job(
                    json!({"completions": 1, "backoffLimit": 2, "rp": "OnFailure"}),
                    started.clone(),
                ),
                pods: vec![pod("a", "Running", None, 2, old)],
                create: vec![],
                delete: vec!["a"],
                active: 0,
                condition: Some(("Failed", "BackoffLimitExceeded")),
                requeue: None,
            },
            Case {
                name: "a failure is replaced after the backoff",
                job: job(
                    json!({"completions": 1, "backoffLimit": 3}),
                    started.clone(),
                ),
                pods: vec![pod("a", "Failed", None, 0, "2024-01-01T00:09:55Z")],
                create: vec![],
                delete: vec![],
                active: 0,
                condition: None,
                requeue: Some(Duration::from_secs(5)),
            },
            Case {
                name: "a failure long ago is replaced now",
                job: job(
                    json!({"completions": 1, "backoffLimit": 3}),
                    started.clone(),
                ),
                pods: vec![pod("a", "Failed", None, 0, old)],
                create: vec![None],
                delete: vec![],
                active: 0,
                condition: None,
                requeue: None,
            },
            Case {
                name: "deadline exceeded",
                job: job(
                    json!({"completions": 1, "activeDeadlineSeconds": 60}),
                    started.clone(),
                ),
                pods: vec![pod("a", "Running", None, 0, old)],
                create: vec![],
                delete: vec!["a"],
                active: 0,
                condition: Some(("Failed", "DeadlineExceeded")),
                requeue: None,
            },
            Case {
                name: "deadline ahead requeues",
                job: job(
                    json!({"completions": 1, "activeDeadlineSeconds": 660}),
                    started.clone(),
                ),
                pods: vec![pod("a", "Running", None, 0, old)],
                create: vec![],
                delete: vec![],
                active: 1,
                condition: None,
                requeue: Some(Duration::from_secs(60)),
            },
            Case {
                name: "suspend deletes active pods",
                job: job(json!({"completions": 1, "suspend": true}), started.clone()),
                pods: vec![pod("a", "Running", None, 0, old)],
                create: vec![],
                delete: vec!["a"],
                active: 0,
                condition: Some(("Suspended", "JobSuspended")),
                requeue: None,
            },
            Case {
                name: "indexed fills the missing indexes, lowest first",
                job: job(
                    json!({"completions": 4, "parallelism": 3, "completionMode": "Indexed"}),
                    started.clone(),
                ),
                pods: vec![
                    pod("a", "Succeeded", Some(0), 0, old),
                    pod("b", "Running", Some(2), 0, old),
                ],
                create: vec![Some(1), Some(3)],
                delete: vec![],
                active: 1,
                condition: None,
                requeue: None,
            },
            Case {
                name: "indexed duplicates and done indexes are deleted",
                job: job(
                    json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
                    json!({"startTime": old, "completedIndexes": "0"}),
                ),
                pods: vec![
                    pod("a", "Running", Some(0), 0, old),
                    pod("b", "Running", Some(1), 0, old),
                    pod("c", "Pending", Some(1), 0, old),
                ],
                create: vec![Some(2)],
                delete: vec!["a", "c"],
                active: 1,
                condition: None,
                requeue: None,
            },
            Case {
                name: "indexed completes when every index succeeded",
                job: job(
                    json!({"completions": 2, "parallelism": 2, "completionMode": "Indexed"}),
                    json!({"startTime": old, "completedIndexes": "0"}),
                ),
                pods: vec![pod("b", "Succeeded", Some(1), 0, old)],
                create: vec![],
                delete: vec![],
                active: 0,
                condition: Some(("Complete", "CompletionsReached")),
                requeue: None,
            },
        ];
        for c in cases {
            let pods: Vec<&Pod> = c.pods.iter().collect();
            let p = plan(&c.job, &pods, ts(NOW), Duration::from_secs(10));
            assert_eq!(p.create, c.create, "{}", c.name);
            let mut del = p.delete.clone();
            del.sort();
            assert_eq!(del, c.delete, "{}", c.name);
            assert_eq!(p.status.active, Some(c.active), "{}", c.name);
            assert_eq!(p.requeue, c.requeue, "{}", c.name);
            let cond = p.status.conditions.iter().flatten().find(|x| {
                x.status == "True"
                    && matches!(x.type_.as_str(), "Complete" | "Failed" | "Suspended")
            });
            assert_eq!(
                cond.map(|x| (x.type_.as_str(), x.reason.as_deref().unwrap_or(""))),
                c.condition,
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn finished_jobs_and_ttl() {
        let fin = json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True",
                          "lastTransitionTime": "2024-01-01T00:09:00Z"}]});
        let j = job(
            json!({"completions": 1, "ttlSecondsAfterFinished": 100}),
            fin.clone(),
        );
        assert_eq!(ttl_remaining(&j, ts(NOW)), Some(Duration::from_secs(40)));
        let j = job(
            json!({"completions": 1, "ttlSecondsAfterFinished": 0}),
            fin.clone(),
        );
        assert_eq!(ttl_remaining(&j, ts(NOW)), Some(Duration::ZERO));
        let j = job(json!({"completions": 1}), fin);
        assert_eq!(ttl_remaining(&j, ts(NOW)), None);
        let running = pod("a", "Running", None, 0, NOW);
        let p = plan(&j, &[&running], ts(NOW), Duration::from_secs(10));
        assert_eq!(p.delete, vec!["a".to_string()]);
        assert_eq!(p.status.succeeded, Some(1));
    }

    #[test]
    fn index_sets() {
        for (s, set) in [
            ("", vec![]),
            ("0", vec![0]),
            ("1,3-5,7", vec![1, 3, 4, 5, 7]),
        ] {
            let parsed = parse_indexes(s);
            assert_eq!(parsed.iter().copied().collect::<Vec<_>>(), set);
            assert_eq!(format_indexes(&parsed), s);
        }
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let j = job(
            json!({"completions": 3, "completionMode": "Indexed"}),
            json!({}),
        );
        let p = pod_for(&j, Some(2));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-2-"));
        assert_eq!(
            p.metadata.annotations.as_ref().unwrap()[COMPLETION_INDEX],
            "2"
        );
        assert_eq!(p.metadata.labels.as_ref().unwrap()[COMPLETION_INDEX], "2");
        assert_eq!(p.metadata.labels.as_ref().unwrap()[JOB_NAME_LABEL], "pi");
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, INDEX_ENV);
        assert_eq!(
            env.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
        let r = &p.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (r.api_version.as_str(), r.kind.as_str(), r.uid.as_str()),
            ("batch/v1", "Job", "u")
        );
        let plain = pod_for(&j, None);
        assert_eq!(plain.metadata.generate_name.as_deref(), Some("pi-"));
        assert!(plain.spec.unwrap().containers[0].env.is_none());
    }
}

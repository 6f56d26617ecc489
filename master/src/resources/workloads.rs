//! What is specific to the batch and per-node workload kinds (batch/v1 Job and CronJob,
//! apps/v1 DaemonSet): defaulting (including the Job's generated selector), validation beyond
//! the shared workload rules, immutable fields and kubectl's table columns.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::defaults::{child, pod_spec, set_default};
use super::table::{
    Column, containers_images, human_duration, int_at, map_selector, selector_string, since, str_at,
};
use super::validation::{self, Errors};

/// The label the generated Job selector matches (with the uid of the Job).
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The label carrying the Job's name on its pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// Annotation (and, since 1.28, label) with an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// Defaults of Job, CronJob and DaemonSet (upstream's `SetDefaults_*` and the Job
/// strategy's `PrepareForCreate` selector generation).
pub(crate) fn defaults(kind: &str, root: &mut Map<String, Value>) {
    match kind {
        "Job" => {
            let meta = root.get("metadata").cloned().unwrap_or(Value::Null);
            if let Some(spec) = child(root, "spec") {
                job_spec(spec, Some(&meta));
            }
            child(root, "status");
        }
        "CronJob" => {
            if let Some(spec) = child(root, "spec") {
                set_default(spec, "concurrencyPolicy", json!("Allow"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "successfulJobsHistoryLimit", json!(3));
                set_default(spec, "failedJobsHistoryLimit", json!(1));
                if let Some(jt) = child(spec, "jobTemplate") {
                    if let Some(js) = child(jt, "spec") {
                        job_spec(js, None);
                    }
                }
            }
            child(root, "status");
        }
        "DaemonSet" => {
            if let Some(spec) = child(root, "spec") {
                set_default(spec, "revisionHistoryLimit", json!(10));
                if let Some(strategy) = child(spec, "updateStrategy") {
                    set_default(strategy, "type", json!("RollingUpdate"));
                    if strategy.get("type") == Some(&json!("RollingUpdate")) {
                        if let Some(ru) = child(strategy, "rollingUpdate") {
                            set_default(ru, "maxUnavailable", json!(1));
                            set_default(ru, "maxSurge", json!(0));
                        }
                    }
                }
                template(spec);
            }
            if let Some(status) = child(root, "status") {
                for k in [
                    "currentNumberScheduled",
                    "desiredNumberScheduled",
                    "numberMisscheduled",
                    "numberReady",
                ] {
                    set_default(status, k, json!(0));
                }
            }
        }
        _ => {}
    }
}

fn template(spec: &mut Map<String, Value>) {
    if let Some(tpl) = child(spec, "template") {
        if let Some(ps) = child(tpl, "spec") {
            pod_spec(ps);
        }
    }
}

/// A Job spec's defaults; `meta` (the Job's metadata) when the selector is generated here
/// (a Job's create; a CronJob's job template gets it when the Job is made).
fn job_spec(spec: &mut Map<String, Value>, meta: Option<&Value>) {
    let completions_set = spec.get("completions").is_some_and(|v| !v.is_null());
    let parallelism_set = spec.get("parallelism").is_some_and(|v| !v.is_null());
    if !completions_set && !parallelism_set {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    if spec.get("podFailurePolicy").is_none_or(Value::is_null) {
        set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    }
    let manual = spec.get("manualSelector") == Some(&json!(true));
    let has_selector = spec.get("selector").is_some_and(|v| !v.is_null());
    if let Some(meta) = meta.filter(|_| !manual && !has_selector) {
        let uid = meta.get("uid").and_then(Value::as_str).unwrap_or("");
        let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
        if !uid.is_empty() {
            spec.insert(
                "selector".into(),
                json!({"matchLabels": {CONTROLLER_UID_LABEL: uid}}),
            );
            if let Some(tpl) = child(spec, "template") {
                if let Some(tm) = child(tpl, "metadata") {
                    if let Some(labels) = child(tm, "labels") {
                        for (k, v) in [
                            ("controller-uid", uid),
                            (CONTROLLER_UID_LABEL, uid),
                            ("job-name", name),
                            (JOB_NAME_LABEL, name),
                        ] {
                            labels.insert(k.into(), json!(v));
                        }
                    }
                }
            }
        }
    }
    template(spec);
}

fn non_negative(spec: &Value, path: &str, field: &str, errs: &mut Errors) {
    if let Some(v) = spec.get(field).filter(|v| !v.is_null()) {
        if v.as_i64().is_none_or(|n| n < 0) {
            errs.invalid(
                &format!("{path}.{field}"),
                v,
                "must be greater than or equal to 0",
            );
        }
    }
}

fn restart_policy(template: Option<&Value>, path: &str, errs: &mut Errors) {
    let rp = template
        .and_then(|t| t.pointer("/spec/restartPolicy"))
        .cloned()
        .unwrap_or(json!(""));
    if !matches!(rp.as_str(), Some("OnFailure" | "Never")) {
        errs.not_supported(
            &format!("{path}.template.spec.restartPolicy"),
            &rp,
            &["OnFailure", "Never"],
        );
    }
}

/// A Job spec's own rules (the selector/template rules are `validation::workload`'s).
fn job_spec_rules(spec: &Value, path: &str, errs: &mut Errors) {
    for f in [
        "parallelism",
        "completions",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        non_negative(spec, path, f, errs);
    }
    if let Some(v) = spec.get("activeDeadlineSeconds").filter(|v| !v.is_null()) {
        if v.as_i64().is_none_or(|n| n <= 0) {
            errs.invalid(
                &format!("{path}.activeDeadlineSeconds"),
                v,
                "must be greater than 0",
            );
        }
    }
    let mode = spec
        .get("completionMode")
        .cloned()
        .unwrap_or(json!("NonIndexed"));
    if !matches!(mode.as_str(), Some("NonIndexed" | "Indexed")) {
        errs.not_supported(
            &format!("{path}.completionMode"),
            &mode,
            &["NonIndexed", "Indexed"],
        );
    }
    if mode.as_str() == Some("Indexed") && spec.get("completions").is_none_or(Value::is_null) {
        errs.required(&format!("{path}.completions"));
        if let Some(last) = errs.0.last_mut() {
            last.message = "Required value: when completion mode is Indexed".into();
        }
    }
    restart_policy(spec.get("template"), path, errs);
}

/// Validation of Job, CronJob and DaemonSet objects beyond `metadata`.
pub(crate) fn validate(kind: &str, obj: &Value, errs: &mut Errors) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    match kind {
        "Job" => {
            validation::workload(kind, obj, errs);
            job_spec_rules(&spec, "spec", errs);
        }
        "CronJob" => cronjob(obj, &spec, errs),
        "DaemonSet" => {
            validation::workload(kind, obj, errs);
            if let Some(t) = spec.pointer("/updateStrategy/type") {
                let allowed = ["OnDelete", "RollingUpdate"];
                if !t.as_str().is_some_and(|s| allowed.contains(&s)) {
                    errs.not_supported("spec.updateStrategy.type", t, &allowed);
                }
            }
        }
        _ => {}
    }
}

fn cronjob(obj: &Value, spec: &Value, errs: &mut Errors) {
    use crate::controllers::cronjob::core::{parse_schedule, parse_zone};
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.len() > 52 {
        errs.invalid(
            "metadata.name",
            &json!(name),
            "must be no more than 52 characters",
        );
    }
    match spec.get("schedule") {
        Some(Value::String(s)) if !s.is_empty() => {
            if let Err(e) = parse_schedule(s) {
                errs.invalid("spec.schedule", &json!(s), &e);
            }
        }
        _ => errs.required("spec.schedule"),
    }
    if let Some(tz) = spec.get("timeZone").filter(|v| !v.is_null()) {
        if let Err(e) = parse_zone(tz.as_str()) {
            errs.invalid("spec.timeZone", tz, &e);
        }
    }
    if let Some(p) = spec.get("concurrencyPolicy") {
        let allowed = ["Allow", "Forbid", "Replace"];
        if !p.as_str().is_some_and(|s| allowed.contains(&s)) {
            errs.not_supported("spec.concurrencyPolicy", p, &allowed);
        }
    }
    for f in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative(spec, "spec", f, errs);
    }
    let js = spec
        .pointer("/jobTemplate/spec")
        .cloned()
        .unwrap_or(Value::Null);
    job_spec_rules(&js, "spec.jobTemplate.spec", errs);
    validation::pod_spec(
        js.pointer("/template/spec"),
        "spec.jobTemplate.spec.template.spec",
        errs,
    );
}

/// Fields that may not change on update.
pub(crate) fn immutable(kind: &str, old: &Value, new: &Value, errs: &mut Errors) {
    let fields: &[&str] = match kind {
        "Job" => &["selector", "template", "completionMode", "completions"],
        "DaemonSet" => &["selector"],
        _ => &[],
    };
    for f in fields {
        let ptr = format!("/spec/{f}");
        let (o, n) = (old.pointer(&ptr), new.pointer(&ptr));
        if o.is_some() && o != n {
            errs.invalid(
                &format!("spec.{f}"),
                n.unwrap_or(&Value::Null),
                "field is immutable",
            );
        }
    }
}

/// kubectl's columns for the kinds here.
pub(crate) fn columns(kind: &str) -> Vec<Column> {
    let s = |n: &'static str| (n, "string", "", 0u8);
    let w = |n: &'static str| (n, "string", "", 1u8);
    let i = |n: &'static str| (n, "integer", "", 0u8);
    let name = ("Name", "string", "name", 0u8);
    let mut cols = match kind {
        "Job" => vec![name, s("Status"), s("Completions"), s("Duration"), s("Age")],
        "CronJob" => vec![
            name,
            s("Schedule"),
            s("Timezone"),
            s("Suspend"),
            i("Active"),
            s("Last Schedule"),
            s("Age"),
        ],
        "DaemonSet" => vec![
            name,
            i("Desired"),
            i("Current"),
            i("Ready"),
            i("Up-to-date"),
            i("Available"),
            s("Node Selector"),
            s("Age"),
        ],
        _ => vec![name, s("Age")],
    };
    cols.extend([w("Containers"), w("Images"), w("Selector")]);
    cols
}

fn has_condition(o: &Value, ty: &str) -> bool {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| str_at(c, "/type") == ty && str_at(c, "/status") == "True")
}

fn parse(ts: Option<&Value>) -> Option<DateTime<Utc>> {
    ts.and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// kubectl's Job status column (printJob, 1.31+).
fn job_status(o: &Value) -> &'static str {
    if has_condition(o, "Complete") {
        "Complete"
    } else if has_condition(o, "Failed") {
        "Failed"
    } else if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has_condition(o, "Suspended") {
        "Suspended"
    } else if has_condition(o, "FailureTarget") {
        "FailureTarget"
    } else if has_condition(o, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}

/// A row's cells after the name, for the kinds here.
pub(crate) fn cells(kind: &str, o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let age = json!(since(o.pointer("/metadata/creationTimestamp"), now));
    let (tpl, sel) = match kind {
        "CronJob" => (
            "/spec/jobTemplate/spec/template/spec/containers",
            o.pointer("/spec/jobTemplate/spec/selector"),
        ),
        _ => (
            "/spec/template/spec/containers",
            o.pointer("/spec/selector"),
        ),
    };
    let (c, i) = containers_images(o, tpl);
    let mut row = match kind {
        "Job" => {
            let succeeded = int_at(o, "/status/succeeded");
            let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
                Some(n) => format!("{succeeded}/{n}"),
                None => match int_at(o, "/spec/parallelism") {
                    p if p > 1 => format!("{succeeded}/1 of {p}"),
                    _ => format!("{succeeded}/1"),
                },
            };
            let start = parse(o.pointer("/status/startTime"));
            let end = parse(o.pointer("/status/completionTime"));
            let duration = match (start, end) {
                (None, _) => String::new(),
                (Some(s), None) => human_duration((now - s).num_seconds()),
                (Some(s), Some(e)) => human_duration((e - s).num_seconds()),
            };
            vec![
                json!(job_status(o)),
                json!(completions),
                json!(duration),
                age,
            ]
        }
        "CronJob" => {
            let tz = o
                .pointer("/spec/timeZone")
                .and_then(Value::as_str)
                .unwrap_or("<none>");
            let suspend = match o.pointer("/spec/suspend").and_then(Value::as_bool) {
                Some(true) => "True",
                Some(false) => "False",
                None => "<unset>",
            };
            let last = match o.pointer("/status/lastScheduleTime") {
                Some(t) if !t.is_null() => since(Some(t), now),
                _ => "<none>".into(),
            };
            let active = o
                .pointer("/status/active")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            vec![
                json!(str_at(o, "/spec/schedule")),
                json!(tz),
                json!(suspend),
                json!(active),
                json!(last),
                age,
            ]
        }
        "DaemonSet" => vec![
            json!(int_at(o, "/status/desiredNumberScheduled")),
            json!(int_at(o, "/status/currentNumberScheduled")),
            json!(int_at(o, "/status/numberReady")),
            json!(int_at(o, "/status/updatedNumberScheduled")),
            json!(int_at(o, "/status/numberAvailable")),
            json!(map_selector(o.pointer("/spec/template/spec/nodeSelector"))),
            age,
        ],
        _ => vec![age],
    };
    row.extend([json!(c), json!(i), json!(selector_string(sel))]);
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_defaults_generate_the_selector() {
        let cases = vec![
            // (spec, completions, parallelism, selector generated)
            (json!({}), Some(1), 1, true),
            (json!({"parallelism": 3}), None, 3, true),
            (json!({"completions": 5}), Some(5), 1, true),
            (
                json!({"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}}),
                Some(1),
                1,
                false,
            ),
        ];
        for (spec, completions, parallelism, generated) in cases {
            let mut spec = spec;
            spec["template"] = json!({"spec": {"restartPolicy": "Never",
                                      "containers": [{"name": "c", "image": "busybox"}]}});
            let mut job = json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": spec});
            super::super::defaults::apply("Job", &mut job);
            let s = &job["spec"];
            assert_eq!(s["completions"].as_i64(), completions, "{s}");
            assert_eq!(s["parallelism"], parallelism);
            assert_eq!(s["backoffLimit"], 6);
            assert_eq!(s["completionMode"], "NonIndexed");
            assert_eq!(s["suspend"], false);
            assert_eq!(s["podReplacementPolicy"], "TerminatingOrFailed");
            let labels = &s["template"]["metadata"]["labels"];
            if generated {
                assert_eq!(
                    s["selector"],
                    json!({"matchLabels": {CONTROLLER_UID_LABEL: "u-1"}})
                );
                assert_eq!(labels["controller-uid"], "u-1");
                assert_eq!(labels[JOB_NAME_LABEL], "pi");
                assert_eq!(labels["job-name"], "pi");
            } else {
                assert_eq!(s["selector"], json!({"matchLabels": {"a": "b"}}));
                assert!(labels.get("job-name").is_none());
            }
        }
    }

    #[test]
    fn daemonset_and_cronjob_defaults() {
        let mut ds = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}}});
        super::super::defaults::apply("DaemonSet", &mut ds);
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(ds["status"]["numberMisscheduled"], 0);
        let mut cj = json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {}}}});
        super::super::defaults::apply("CronJob", &mut cj);
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
        assert_eq!(cj["spec"]["jobTemplate"]["spec"]["backoffLimit"], 6);
        assert!(cj["spec"]["jobTemplate"]["spec"].get("selector").is_none());
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T01:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn rows() {
        let ts = "2024-01-01T00:00:00Z";
        let tpl = json!({"spec": {"containers": [{"name": "pi", "image": "perl"}]}});
        let cases = vec![
            (
                "Job",
                json!({"metadata": {"creationTimestamp": ts},
                       "spec": {"completions": 5, "parallelism": 2, "template": tpl,
                                "selector": {"matchLabels": {CONTROLLER_UID_LABEL: "u"}}},
                       "status": {"succeeded": 5, "startTime": ts, "completionTime": "2024-01-01T00:00:42Z",
                                  "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                                 {"type": "Complete", "status": "True"}]}}),
                json!([
                    "Complete",
                    "5/5",
                    "42s",
                    "60m",
                    "pi",
                    "perl",
                    "batch.kubernetes.io/controller-uid=u"
                ]),
            ),
            (
                "Job",
                json!({"metadata": {"creationTimestamp": ts},
                       "spec": {"parallelism": 3, "template": tpl},
                       "status": {"startTime": "2024-01-01T00:59:00Z"}}),
                json!(["Running", "0/1 of 3", "60s", "60m", "pi", "perl", "<none>"]),
            ),
            (
                "Job",
                json!({"metadata": {"creationTimestamp": ts}, "spec": {"completions": 1, "template": tpl},
                       "status": {"conditions": [{"type": "Suspended", "status": "True"}]}}),
                json!(["Suspended", "0/1", "", "60m", "pi", "perl", "<none>"]),
            ),
            (
                "CronJob",
                json!({"metadata": {"creationTimestamp": ts},
                       "spec": {"schedule": "*/1 * * * *", "suspend": false,
                                "jobTemplate": {"spec": {"template": tpl}}},
                       "status": {"active": [{"name": "x"}], "lastScheduleTime": "2024-01-01T00:59:30Z"}}),
                json!([
                    "*/1 * * * *",
                    "<none>",
                    "False",
                    1,
                    "30s",
                    "60m",
                    "pi",
                    "perl",
                    "<none>"
                ]),
            ),
            (
                "DaemonSet",
                json!({"metadata": {"creationTimestamp": ts},
                       "spec": {"selector": {"matchLabels": {"app": "agent"}},
                                "template": {"spec": {"nodeSelector": {"disk": "ssd"},
                                                      "containers": [{"name": "pi", "image": "perl"}]}}},
                       "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3,
                                  "numberReady": 2, "updatedNumberScheduled": 3, "numberAvailable": 2}}),
                json!([3, 3, 2, 3, 2, "disk=ssd", "60m", "pi", "perl", "app=agent"]),
            ),
        ];
        for (kind, obj, want) in cases {
            assert_eq!(Value::Array(cells(kind, &obj, now())), want, "{kind}");
            assert_eq!(columns(kind).len(), want.as_array().unwrap().len() + 1);
        }
    }

    #[test]
    fn cronjob_validation() {
        let cj = |schedule: &str, tz: Value| {
            json!({"metadata": {"name": "c"}, "spec": {
            "schedule": schedule, "timeZone": tz,
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "i"}]}}}}}})
        };
        let cases = vec![
            (cj("*/1 * * * *", Value::Null), vec![]),
            (cj("@hourly", json!("Europe/Berlin")), vec![]),
            (cj("every minute", Value::Null), vec!["spec.schedule"]),
            (cj("* * * * * *", Value::Null), vec!["spec.schedule"]),
            (
                cj("* * * * *", json!("Nowhere/Else")),
                vec!["spec.timeZone"],
            ),
        ];
        for (obj, want) in cases {
            let mut errs = Errors::default();
            validate("CronJob", &obj, &mut errs);
            let got: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(got, want, "{obj}");
        }
    }

    #[test]
    fn job_validation() {
        let job = |spec: Value| json!({"metadata": {"name": "j"}, "spec": spec});
        let tpl = |rp: &str| {
            json!({"metadata": {"labels": {"a": "b"}},
                                    "spec": {"restartPolicy": rp, "containers": [{"name": "c", "image": "i"}]}})
        };
        let sel = json!({"matchLabels": {"a": "b"}});
        let cases = vec![
            (
                job(json!({"selector": sel, "template": tpl("Never")})),
                vec![],
            ),
            (
                job(json!({"selector": sel, "template": tpl("Always")})),
                vec!["spec.template.spec.restartPolicy"],
            ),
            (
                job(
                    json!({"selector": sel, "template": tpl("OnFailure"), "completionMode": "Indexed",
                           "parallelism": -1}),
                ),
                vec!["spec.parallelism", "spec.completions"],
            ),
            (
                job(json!({"selector": sel, "template": tpl("Never"), "activeDeadlineSeconds": 0})),
                vec!["spec.activeDeadlineSeconds"],
            ),
        ];
        for (obj, want) in cases {
            let mut errs = Errors::default();
            validate("Job", &obj, &mut errs);
            let got: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(got, want, "{obj}");
        }
    }
}

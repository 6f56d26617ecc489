//! The HorizontalPodAutoscaler controller, after upstream's `podautoscaler/horizontal.go`:
//! every sync period (15 s, `--horizontal-pod-autoscaler-sync-period`) each HPA reads its
//! target's `scale` subresource, the selected pods and their figures from `metrics.k8s.io`
//! (the API the master's collector serves), runs the pure core ([`super::hpa_core`]) per
//! metric, writes the scale when the count changes and the HPA's status (current metrics,
//! replicas, conditions AbleToScale / ScalingActive / ScalingLimited) when it changes, and
//! records Events (SuccessfulRescale, FailedGetScale, FailedGetResourceMetric, …).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::events::{self, EventType};
use super::hpa_core::{self, Behavior, CalcError, Limit, PodInfo, PodUsage, Policy, Rules, Select};
use super::replicaset::api_message;
use super::scheduler::core::milli_value;
use super::{Context, ControllerError};

/// Event source, as kube-controller-manager names this controller.
pub const COMPONENT: &str = "horizontal-pod-autoscaler";

/// Recommendations and scale events of one HPA, kept in memory as upstream does.
#[derive(Default)]
struct History {
    recommendations: Vec<hpa_core::Event>,
    ups: Vec<hpa_core::Event>,
    downs: Vec<hpa_core::Event>,
    last_sync: Option<(Instant, i64)>,
}

struct State {
    ctx: Context,
    history: Mutex<HashMap<String, History>>,
}

/// Runs the HPA controller until its watch ends.
pub async fn run(ctx: Context) -> Result<(), ControllerError> {
    let hpas: Api<HorizontalPodAutoscaler> = Api::all(ctx.client.clone());
    let state = Arc::new(State {
        ctx,
        history: Mutex::new(HashMap::new()),
    });
    Controller::new(hpas, watcher::Config::default())
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "hpa reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(
    hpa: Arc<HorizontalPodAutoscaler>,
    err: &ControllerError,
    st: Arc<State>,
) -> Action {
    warn!(hpa = %events::key(hpa.as_ref()), error = %err, "hpa sync failed; retrying");
    Action::requeue(st.ctx.settings.hpa_sync_period)
}

/// The HPA's JSON form (the k8s-openapi type is only the watch's).
fn to_value(hpa: &HorizontalPodAutoscaler) -> Value {
    serde_json::to_value(hpa).unwrap_or(Value::Null)
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn reconcile(
    hpa: Arc<HorizontalPodAutoscaler>,
    st: Arc<State>,
) -> Result<Action, ControllerError> {
    let period = st.ctx.settings.hpa_sync_period;
    let key = events::key(hpa.as_ref());
    if hpa.metadata.deletion_timestamp.is_some() {
        if let Ok(mut h) = st.history.lock() {
            h.remove(&key);
        }
        return Ok(Action::await_change());
    }
    // Our own status writes come back through the watch: sync once per period, or at once
    // when the spec changed.
    let generation = hpa.metadata.generation.unwrap_or(0);
    if let Ok(h) = st.history.lock()
        && let Some((at, g)) = h.get(&key).and_then(|h| h.last_sync)
        && g == generation
        && at.elapsed() < period
    {
        return Ok(Action::requeue(period - at.elapsed()));
    }
    if let Ok(mut h) = st.history.lock() {
        h.entry(key.clone()).or_default().last_sync = Some((Instant::now(), generation));
    }
    sync(&st, &hpa, &key, Utc::now()).await?;
    Ok(Action::requeue(period))
}

/// The served resource (with a scale subresource) a scaleTargetRef names.
fn scale_resource(api_version: &str, kind: &str) -> Option<ApiResource> {
    let info = crate::resources::RESOURCES.iter().find(|r| {
        r.kind == kind
            && r.subresources.contains(&"scale")
            && (api_version.is_empty() || r.api_version() == api_version)
    })?;
    Some(ApiResource {
        group: info.group.into(),
        version: info.version.into(),
        api_version: info.api_version(),
        kind: info.kind.into(),
        plural: info.plural.into(),
    })
}

/// A condition as upstream's `setCondition`: lastTransitionTime kept while status stays.
fn set_condition(
    conds: &mut Vec<Value>,
    ty: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &str,
) {
    let status = if status { "True" } else { "False" };
    let old = conds.iter().position(|c| c["type"] == ty);
    let transition = match old {
        Some(i) if conds[i]["status"] == status => conds[i]["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let c = json!({"type": ty, "status": status, "lastTransitionTime": transition,
                   "reason": reason, "message": message});
    match old {
        Some(i) => conds[i] = c,
        None => conds.push(c),
    }
}

/// A value in milli-units as a canonical decimal quantity (`resource.NewMilliQuantity`).
pub fn milli_quantity(milli: i64) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let mut v = milli / 1000;
    if v == 0 {
        return "0".into();
    }
    let mut i = 0;
    while v % 1000 == 0 && i < 6 {
        v /= 1000;
        i += 1;
    }
    format!("{v}{}", ["", "k", "M", "G", "T", "P", "E"][i])
}

fn parse_ts(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A Go duration as metrics-server writes `window` (`15s`, `10.500s`, `1m0s`).
fn parse_window(s: &str) -> Duration {
    let mut total = 0.0;
    let mut num = String::new();
    for c in s.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'h' | 'm' | 's' => {
                let n: f64 = num.parse().unwrap_or(0.0);
                total += n * match c {
                    'h' => 3600.0,
                    'm' => 60.0,
                    _ => 1.0,
                };
                num.clear();
            }
            _ => {}
        }
    }
    Duration::from_secs_f64(total)
}

/// What the core knows of a pod: phase, readiness and the sum of its containers' requests of
/// `resource` (or one container's) in milli-units.
fn pod_info(p: &Value, resource: &str, container: Option<&str>) -> PodInfo {
    let phase = p["status"]["phase"].as_str().unwrap_or_default();
    let ready = p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
    let mut request = Ok(0.0);
    for c in p["spec"]["containers"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or_default();
        if container.is_some_and(|w| w != name) {
            continue;
        }
        match c["resources"]["requests"][resource]
            .as_str()
            .and_then(milli_value)
        {
            Some(m) => {
                if let Ok(sum) = &mut request {
                    *sum += m as f64;
                }
            }
            None => {
                request = Err(name.to_string());
                break;
            }
        }
    }
    PodInfo {
        name: p["metadata"]["name"].as_str().unwrap_or_default().into(),
        pending: phase == "Pending",
        ignored: !p["metadata"]["deletionTimestamp"].is_null() || phase == "Failed",
        ready: ready.is_some_and(|c| c["status"] == "True"),
        ready_transition: ready.and_then(|c| parse_ts(&c["lastTransitionTime"])),
        start_time: parse_ts(&p["status"]["startTime"]),
        request,
    }
}

/// The usage of `resource` of each pod in a PodMetricsList, in milli-units.
fn usages(list: &Value, resource: &str, container: Option<&str>) -> HashMap<String, PodUsage> {
    let mut out = HashMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let mut sum = 0i64;
        let mut found = false;
        for c in item["containers"].as_array().into_iter().flatten() {
            if container.is_some_and(|w| c["name"].as_str() != Some(w)) {
                continue;
            }
            if let Some(m) = c["usage"][resource].as_str().and_then(milli_value) {
                sum += m;
                found = true;
            }
        }
        let (Some(name), true) = (item["metadata"]["name"].as_str(), found) else {
            continue;
        };
        out.insert(
            name.to_string(),
            PodUsage {
                value: sum as f64,
                timestamp: parse_ts(&item["timestamp"]).unwrap_or_else(Utc::now),
                window: parse_window(item["window"].as_str().unwrap_or_default()),
            },
        );
    }
    out
}

/// The outcome of one metric.
struct MetricResult {
    replicas: i32,
    /// Upstream's metric name for messages ("cpu resource utilization (percentage of request)").
    name: String,
    status: Value,
}

/// A metric that could not be computed: the condition reason and message.
struct MetricError {
    reason: &'static str,
    message: String,
}

async fn resource_metric(
    st: &State,
    ns: &str,
    selector: &str,
    spec: &Value,
    current: i32,
    pods: &[Value],
    now: DateTime<Utc>,
) -> Result<MetricResult, MetricError> {
    let ty = spec["type"].as_str().unwrap_or_default();
    let (key, failed, what) = match ty {
        "Resource" => ("resource", "FailedGetResourceMetric", "resource"),
        "ContainerResource" => (
            "containerResource",
            "FailedGetContainerResourceMetric",
            "container resource",
        ),
        "Pods" | "Object" | "External" => {
            let reason = match ty {
                "Pods" => "FailedGetPodsMetric",
                "Object" => "FailedGetObjectMetric",
                _ => "FailedGetExternalMetric",
            };
            let api = if ty == "External" {
                "external.metrics.k8s.io"
            } else {
                "custom.metrics.k8s.io"
            };
            return Err(MetricError {
                reason,
                message: format!(
                    "the HPA was unable to compute the replica count: unable to get metric {}: no {api} API is served",
                    spec[ty.to_lowercase()]["metric"]["name"]
                        .as_str()
                        .unwrap_or_default()
                ),
            });
        }
        _ => {
            return Err(MetricError {
                reason: "InvalidMetricSourceType",
                message: format!(
                    "the HPA was unable to compute the replica count: unknown metric source type {ty:?}"
                ),
            });
        }
    };
    let src = &spec[key];
    let resource = src["name"].as_str().unwrap_or_default();
    let container = src["container"].as_str();
    let target = &src["target"];
    let (core_target, name) = match target["averageUtilization"].as_i64() {
        Some(u) => (
            hpa_core::Target::Utilization(u as i32),
            format!("{resource} {what} utilization (percentage of request)"),
        ),
        None => {
            let v = target["averageValue"]
                .as_str()
                .and_then(milli_value)
                .unwrap_or(0);
            (
                hpa_core::Target::AverageValue(v as f64),
                format!("{resource} {what}"),
            )
        }
    };
    let fail = |e: String| MetricError {
        reason: failed,
        message: format!("the HPA was unable to compute the replica count: {e}"),
    };
    let utilization = matches!(core_target, hpa_core::Target::Utilization(_));
    let label = if utilization {
        format!("failed to get {resource} utilization")
    } else {
        format!("failed to get {resource} usage")
    };
    let path = format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector={}",
        percent_encode(selector)
    );
    let req = hyper::Request::get(path)
        .body(Vec::new())
        .map_err(|e| fail(format!("{label}: {e}")))?;
    let list: Value = st.ctx.client.request(req).await.map_err(|e| {
        fail(format!(
            "{label}: unable to get metrics for resource {resource}: {}",
            api_message(&e)
        ))
    })?;
    let usage = usages(&list, resource, container);
    if usage.is_empty() {
        return Err(fail(format!(
            "{label}: unable to get metrics for resource {resource}: no metrics returned from resource metrics API"
        )));
    }
    let infos: Vec<PodInfo> = pods
        .iter()
        .map(|p| pod_info(p, resource, container))
        .collect();
    let rec = hpa_core::resource_replicas(
        current,
        core_target,
        resource,
        &infos,
        &|n: &str| usage.get(n).copied(),
        now,
    )
    .map_err(|e| match e {
        CalcError::MissingRequest { .. } => fail(format!("{label}: {e}")),
        e => fail(format!("{label}: {e}")),
    })?;
    let mut status_src = json!({"name": resource, "current": {"averageValue": milli_quantity(rec.average.round() as i64)}});
    if let Some(u) = rec.utilization {
        status_src["current"]["averageUtilization"] = json!(u);
    }
    if let Some(c) = container {
        status_src["container"] = json!(c);
    }
    Ok(MetricResult {
        replicas: rec.replicas,
        name,
        status: json!({"type": ty, key: status_src}),
    })
}

/// Percent-encodes a label selector for a query string.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `spec.behavior` for the core; without one, the defaults with the controller's
/// downscale stabilization window (`--horizontal-pod-autoscaler-downscale-stabilization`).
fn behavior(spec: &Value, downscale_window: Duration) -> Behavior {
    let mut b = Behavior::default();
    if spec["behavior"].is_null() {
        b.down.window = downscale_window;
        return b;
    }
    let rules = |r: &Value, d: &Rules| -> Rules {
        let mut out = d.clone();
        if let Some(w) = r["stabilizationWindowSeconds"].as_u64() {
            out.window = Duration::from_secs(w);
        }
        out.select = match r["selectPolicy"].as_str() {
            Some("Min") => Select::Min,
            Some("Disabled") => Select::Disabled,
            _ => Select::Max,
        };
        if let Some(ps) = r["policies"].as_array() {
            out.policies = ps
                .iter()
                .map(|p| {
                    let value = p["value"].as_i64().unwrap_or(0) as i32;
                    let period = Duration::from_secs(p["periodSeconds"].as_u64().unwrap_or(15));
                    if p["type"] == "Pods" {
                        Policy::Pods { value, period }
                    } else {
                        Policy::Percent { value, period }
                    }
                })
                .collect();
        }
        out
    };
    Behavior {
        up: rules(&spec["behavior"]["scaleUp"], &b.up),
        down: rules(&spec["behavior"]["scaleDown"], &b.down),
    }
}

/// The pods a scale selector selects (`status.selector`, a label selector string).
async fn selected_pods(st: &State, ns: &str, selector: &str) -> Result<Vec<Value>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(st.ctx.client.clone(), ns);
    let list = pods.list(&ListParams::default().labels(selector)).await?;
    Ok(list
        .items
        .iter()
        .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
        .collect())
}

/// One sync of one HPA.
async fn sync(
    st: &State,
    hpa_obj: &HorizontalPodAutoscaler,
    key: &str,
    now: DateTime<Utc>,
) -> Result<(), ControllerError> {
    let hpa = to_value(hpa_obj);
    let ns = hpa_obj.metadata.namespace.clone().unwrap_or_default();
    let client = &st.ctx.client;
    let involved = events::reference(hpa_obj);
    let mut notes: Vec<(EventType, &'static str, String)> = Vec::new();
    let now_s = ts(now);
    let spec = &hpa["spec"];
    let old_status = hpa.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut status = old_status.clone();
    status["observedGeneration"] = hpa["metadata"]["generation"].clone();
    let mut conds: Vec<Value> = old_status["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let target_ref = &spec["scaleTargetRef"];
    let target_kind = target_ref["kind"].as_str().unwrap_or_default();
    let target_name = target_ref["name"].as_str().unwrap_or_default();
    let target_av = target_ref["apiVersion"].as_str().unwrap_or_default();
    let scale = match scale_resource(target_av, target_kind) {
        None => Err(format!(
            "no matches for kind \"{target_kind}\" in version \"{target_av}\""
        )),
        Some(ar) => {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
            api.get_scale(target_name)
                .await
                .map(|s| (api, s))
                .map_err(|e| api_message(&e))
        }
    };
    let (scale_api, scale) = match scale {
        Ok(s) => s,
        Err(e) => {
            let msg =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            set_condition(
                &mut conds,
                "AbleToScale",
                false,
                "FailedGetScale",
                &msg,
                &now_s,
            );
            notes.push((EventType::Warning, "FailedGetScale", e));
            status["conditions"] = json!(conds);
            events::record_all(client, COMPONENT, involved, notes);
            return write_status(st, hpa_obj, &old_status, status).await;
        }
    };
    set_condition(
        &mut conds,
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
        &now_s,
    );
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let selector = scale
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let min = spec["minReplicas"].as_i64().unwrap_or(1) as i32;
    let max = spec["maxReplicas"].as_i64().unwrap_or(1) as i32;
    let mut rescale_reason = String::new();
    let mut desired;
    let mut metric_statuses: Vec<Value> = Vec::new();
    let mut computed = false;
    if current == 0 && min != 0 {
        set_condition(
            &mut conds,
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
            &now_s,
        );
        desired = 0;
    } else if current > max {
        rescale_reason = "Current number of replicas above Spec.MaxReplicas".into();
        desired = max;
    } else if current < min {
        rescale_reason = "Current number of replicas below Spec.MinReplicas".into();
        desired = min;
    } else {
        let pods = if selector.is_empty() {
            Err("selector is required".to_string())
        } else {
            selected_pods(st, &ns, &selector)
                .await
                .map_err(|e| api_message(&e))
        };
        let mut best: Option<(i32, String)> = None;
        let mut first_err: Option<MetricError> = None;
        for m in spec["metrics"].as_array().into_iter().flatten() {
            let res = match &pods {
                Ok(pods) => resource_metric(st, &ns, &selector, m, current, pods, now).await,
                Err(e) => Err(MetricError {
                    reason: "FailedGetResourceMetric",
                    message: format!("the HPA was unable to compute the replica count: {e}"),
                }),
            };
            match res {
                Ok(r) => {
                    if best.as_ref().is_none_or(|(b, _)| r.replicas > *b) {
                        best = Some((r.replicas, r.name.clone()));
                    }
                    metric_statuses.push(r.status);
                }
                Err(e) => {
                    metric_statuses.push(json!({"type": ""}));
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        metric_statuses.retain(|s| s["type"] != "");
        match (best, first_err) {
            (Some((replicas, metric)), err) => {
                // a failed metric may only hold a scale down back, as upstream
                let replicas = if err.is_some() && replicas < current {
                    current
                } else {
                    replicas
                };
                if let Some(e) = &err {
                    notes.push((EventType::Warning, e.reason, e.message.clone()));
                }
                set_condition(
                    &mut conds,
                    "ScalingActive",
                    true,
                    "ValidMetricFound",
                    &format!(
                        "the HPA was able to successfully calculate a replica count from {metric}"
                    ),
                    &now_s,
                );
                computed = true;
                desired = replicas;
                if desired > current {
                    rescale_reason = format!("{metric} above target");
                } else if desired < current {
                    rescale_reason = "All metrics below target".into();
                }
            }
            (None, err) => {
                let e = err.unwrap_or(MetricError {
                    reason: "FailedGetResourceMetric",
                    message: "the HPA was unable to compute the replica count: no metrics".into(),
                });
                set_condition(
                    &mut conds,
                    "ScalingActive",
                    false,
                    e.reason,
                    &e.message,
                    &now_s,
                );
                notes.push((EventType::Warning, e.reason, e.message.clone()));
                notes.push((
                    EventType::Warning,
                    "FailedComputeMetricsReplicas",
                    format!(
                        "invalid metrics ({} invalid out of {}), first error is: {}",
                        spec["metrics"].as_array().map_or(0, Vec::len),
                        spec["metrics"].as_array().map_or(0, Vec::len),
                        e.message.trim_start_matches(
                            "the HPA was unable to compute the replica count: "
                        )
                    ),
                ));
                status["currentReplicas"] = json!(current);
                status["desiredReplicas"] = old_status
                    .get("desiredReplicas")
                    .cloned()
                    .unwrap_or(json!(current));
                set_metrics(&mut status, metric_statuses);
                status["conditions"] = json!(conds);
                events::record_all(client, COMPONENT, involved, notes);
                return write_status(st, hpa_obj, &old_status, status).await;
            }
        }
    }
    if computed {
        // stabilization, policies and bounds (upstream's normalizeDesiredReplicasWithBehaviors)
        let b = behavior(spec, st.ctx.settings.hpa_downscale_stabilization);
        let (stabilized, limited) = {
            let mut hist = st
                .history
                .lock()
                .map_err(|_| ControllerError::Invalid("hpa history lock poisoned".into()))?;
            let h = hist.entry(key.to_string()).or_default();
            let keep = |e: &hpa_core::Event| {
                (now - e.time).to_std().unwrap_or_default() < Duration::from_secs(3600)
            };
            h.recommendations.retain(keep);
            h.ups.retain(keep);
            h.downs.retain(keep);
            let stabilized = hpa_core::stabilize(current, desired, &b, &h.recommendations, now);
            h.recommendations.push(hpa_core::Event {
                time: now,
                replicas: desired,
            });
            // without spec.behavior the rates have no memory (upstream's older rule set)
            let (ups, downs) = if spec["behavior"].is_null() {
                (Vec::new(), Vec::new())
            } else {
                (h.ups.clone(), h.downs.clone())
            };
            let limited = hpa_core::limit(current, stabilized, min, max, &b, &ups, &downs, now);
            (stabilized, limited)
        };
        if stabilized != desired {
            set_condition(
                &mut conds,
                "AbleToScale",
                true,
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
                &now_s,
            );
        } else {
            set_condition(
                &mut conds,
                "AbleToScale",
                true,
                "ReadyForNewScale",
                "recommended size matches current size",
                &now_s,
            );
        }
        let (final_count, why) = limited;
        let limited_now = !matches!(why, Limit::DesiredWithinRange);
        set_condition(
            &mut conds,
            "ScalingLimited",
            limited_now,
            why.reason(),
            why.message(),
            &now_s,
        );
        desired = final_count;
    } else if current == 0 && min != 0 {
        // disabled: nothing to limit
    } else {
        let (why_reason, why_msg) = if desired == min && current < min {
            (
                Limit::TooFewReplicas.reason(),
                Limit::TooFewReplicas.message(),
            )
        } else {
            (
                Limit::TooManyReplicas.reason(),
                Limit::TooManyReplicas.message(),
            )
        };
        set_condition(
            &mut conds,
            "ScalingLimited",
            true,
            why_reason,
            why_msg,
            &now_s,
        );
    }
    if desired != current {
        let patch = Patch::Merge(json!({"spec": {"replicas": desired}}));
        match scale_api
            .patch_scale(target_name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                info!(hpa = %key, from = current, to = desired, reason = %rescale_reason, "rescaled");
                set_condition(
                    &mut conds,
                    "AbleToScale",
                    true,
                    "SucceededRescale",
                    &format!("the HPA controller was able to update the target scale to {desired}"),
                    &now_s,
                );
                notes.push((
                    EventType::Normal,
                    "SuccessfulRescale",
                    format!("New size: {desired}; reason: {rescale_reason}"),
                ));
                status["lastScaleTime"] = json!(now_s);
                if let Ok(mut hist) = st.history.lock() {
                    let h = hist.entry(key.to_string()).or_default();
                    let ev = hpa_core::Event {
                        time: now,
                        replicas: (desired - current).abs(),
                    };
                    if desired > current {
                        h.ups.push(ev);
                    } else {
                        h.downs.push(ev);
                    }
                }
            }
            Err(e) => {
                let msg = api_message(&e);
                set_condition(
                    &mut conds,
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    &format!("the HPA controller was unable to update the target scale: {msg}"),
                    &now_s,
                );
                notes.push((
                    EventType::Warning,
                    "FailedRescale",
                    format!("New size: {desired}; reason: {rescale_reason}; error: {msg}"),
                ));
                desired = current;
            }
        }
    }
    status["currentReplicas"] = json!(current);
    status["desiredReplicas"] = json!(desired);
    set_metrics(&mut status, metric_statuses);
    status["conditions"] = json!(conds);
    events::record_all(client, COMPONENT, involved, notes);
    write_status(st, hpa_obj, &old_status, status).await
}

fn set_metrics(status: &mut Value, metrics: Vec<Value>) {
    match status.as_object_mut() {
        Some(s) if metrics.is_empty() => {
            s.remove("currentMetrics");
        }
        Some(s) => {
            s.insert("currentMetrics".into(), Value::Array(metrics));
        }
        None => {}
    }
}

/// Writes the status when it changed (upstream's `updateStatusIfNeeded`).
async fn write_status(
    st: &State,
    hpa: &HorizontalPodAutoscaler,
    old: &Value,
    status: Value,
) -> Result<(), ControllerError> {
    if &status == old {
        return Ok(());
    }
    let ns = hpa.metadata.namespace.clone().unwrap_or_default();
    let name = hpa.metadata.name.clone().unwrap_or_default();
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(st.ctx.client.clone(), &ns);
    let mut obj = to_value(hpa);
    obj["status"] = status;
    let typed: HorizontalPodAutoscaler =
        serde_json::from_value(obj).map_err(|e| ControllerError::Invalid(e.to_string()))?;
    match api
        .replace_status(&name, &PostParams::default(), &typed)
        .await
    {
        Ok(_) => Ok(()),
        // a newer object comes through the watch and syncs again
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_windows() {
        for (milli, want) in [
            (250, "250m"),
            (1000, "1"),
            (0, "0"),
            (10_485_760_000, "10485760"),
            (2_000_000, "2k"),
        ] {
            assert_eq!(milli_quantity(milli), want);
        }
        for (s, secs) in [
            ("15s", 15.0),
            ("10.500s", 10.5),
            ("1m0s", 60.0),
            ("1m30s", 90.0),
        ] {
            assert_eq!(parse_window(s), Duration::from_secs_f64(secs), "{s}");
        }
    }

    #[test]
    fn conditions_keep_their_transition_time() {
        let mut conds = Vec::new();
        set_condition(&mut conds, "AbleToScale", true, "A", "a", "t1");
        set_condition(&mut conds, "AbleToScale", true, "B", "b", "t2");
        assert_eq!(conds[0]["lastTransitionTime"], "t1");
        assert_eq!(conds[0]["reason"], "B");
        set_condition(&mut conds, "AbleToScale", false, "C", "c", "t3");
        assert_eq!(conds[0]["lastTransitionTime"], "t3");
        assert_eq!(conds.len(), 1);
    }

    #[test]
    fn pods_without_requests_name_the_container() {
        let p = json!({"metadata": {"name": "p"}, "status": {"phase": "Running"},
            "spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}, {"name": "b"}]}});
        assert_eq!(pod_info(&p, "cpu", None).request, Err("b".into()));
        assert_eq!(pod_info(&p, "cpu", Some("a")).request, Ok(100.0));
    }
}

//! The HorizontalPodAutoscaler against a master with its controllers and simulated nodes,
//! with CPU figures injected into the metrics pipeline (a `MetricsSource` whose workload has
//! a total demand shared by its running pods, as a real service's load is): scaling up, the
//! tolerance, the scale-down stabilization window, min/max with ScalingLimited, a missing
//! target, pods without requests, autoscaling/v1 ⇄ v2, validation, and what kubectl shows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_common;
mod cluster_common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use skiff_master::controllers::Settings;
use skiff_master::metrics_collector::{MetricsSource, NodeTarget, ScrapeError, Summary};

use cluster_common::SimCluster;

/// Figures of pods labelled `app=<name>`: the app's total CPU demand (millicores) shared
/// equally by its running pods, reported through cumulative counters as an agent would.
struct Load {
    client: kube::Client,
    demand: Mutex<HashMap<String, u64>>,
    /// container key → (cumulative ns, last time)
    counters: Mutex<HashMap<String, (u64, chrono::DateTime<Utc>)>>,
}

impl Load {
    fn set(&self, app: &str, millis: u64) {
        self.demand.lock().unwrap().insert(app.into(), millis);
    }

    async fn summary(&self, node: &str) -> Summary {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let Ok(all) = pods.list(&ListParams::default()).await else {
            return serde_json::from_value(json!({"node": {}})).unwrap();
        };
        let running = |p: &Pod| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        };
        let demand = self.demand.lock().unwrap().clone();
        let now = Utc::now();
        let mut counters = self.counters.lock().unwrap();
        let mut out = Vec::new();
        for p in all.items.iter().filter(|p| running(p)) {
            let on_node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node);
            let app = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .cloned()
                .unwrap_or_default();
            let Some(total) = demand.get(&app).filter(|_| on_node) else {
                continue;
            };
            let peers = all
                .items
                .iter()
                .filter(|q| running(q))
                .filter(|q| q.metadata.labels.as_ref().and_then(|l| l.get("app")) == Some(&app))
                .count() as u64;
            let nano_cores = total * 1_000_000 / peers.max(1);
            let name = p.metadata.name.clone().unwrap();
            let ns = p.metadata.namespace.clone().unwrap();
            let key = format!("{ns}/{name}");
            let (ns_total, last) = counters.get(&key).copied().unwrap_or((0, now));
            let dt = (now - last).num_nanoseconds().unwrap_or(0).max(0) as u128;
            let ns_total = ns_total + (u128::from(nano_cores) * dt / 1_000_000_000) as u64;
            counters.insert(key, (ns_total, now));
            out.push(json!({"podRef": {"name": name, "namespace": ns},
                "containers": [{"name": "app",
                    "cpu": {"time": now, "usageCoreNanoSeconds": ns_total, "usageNanoCores": nano_cores},
                    "memory": {"time": now, "workingSetBytes": 10 << 20}}]}));
        }
        serde_json::from_value(json!({
            "node": {"cpu": {"time": now, "usageCoreNanoSeconds": 0}, "memory": {"time": now, "workingSetBytes": 1 << 30}},
            "pods": out
        }))
        .unwrap()
    }
}

impl MetricsSource for Load {
    fn scrape<'a>(&'a self, node: &'a NodeTarget) -> BoxFuture<'a, Result<Summary, ScrapeError>> {
        Box::pin(async move { Ok(self.summary(&node.name).await) })
    }
}

const WINDOW: Duration = Duration::from_secs(8);

async fn cluster() -> (SimCluster, Arc<Load>) {
    let settings = Settings {
        hpa_sync_period: Duration::from_secs(1),
        hpa_downscale_stabilization: WINDOW,
        ..Default::default()
    };
    let c = SimCluster::with_nodes(settings, &["n1", "n2"]).await;
    let load = Arc::new(Load {
        client: c.client.clone(),
        demand: Mutex::new(HashMap::new()),
        counters: Mutex::new(HashMap::new()),
    });
    c.server
        .handle
        .set_metrics_source(load.clone(), Duration::from_millis(500));
    (c, load)
}

fn deployment(name: &str, replicas: i32, cpu_request: Option<&str>) -> String {
    let resources = match cpu_request {
        Some(r) => format!("\n          resources:\n            requests:\n              cpu: {r}"),
        None => String::new(),
    };
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
        - name: app
          image: busybox{resources}
"
    )
}

fn hpa_v2(name: &str, target: &str, min: i32, max: i32, utilization: i32) -> String {
    format!(
        "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {name}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {target}
  minReplicas: {min}
  maxReplicas: {max}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {utilization}
"
    )
}

async fn hpa(c: &SimCluster, name: &str) -> Value {
    let (code, v) = c
        .server
        .admin(
            "GET",
            &format!("/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/{name}"),
            "",
            b"",
        )
        .await;
    assert_eq!(code, 200, "{v}");
    v
}

fn condition<'a>(h: &'a Value, ty: &str) -> Option<&'a Value> {
    h["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

fn cond_is(h: &Value, ty: &str, status: &str, reason: &str) -> bool {
    condition(h, ty).is_some_and(|c| c["status"] == status && c["reason"] == reason)
}

fn utilization(h: &Value) -> Option<i64> {
    h["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"].as_i64()
}

async fn replicas(c: &SimCluster, name: &str) -> i32 {
    let d: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    d.get(name).await.unwrap().spec.unwrap().replicas.unwrap()
}

async fn events_of(c: &SimCluster, name: &str) -> Vec<(String, String)> {
    let ev: Api<Event> = Api::namespaced(c.client.clone(), "default");
    ev.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// Waits for an Event about `name` (they are recorded off the controller's path).
async fn wait_event(c: &SimCluster, name: &str, reason: &str, message: &str) {
    c.wait_for(
        &format!("event {reason}: {message}"),
        Duration::from_secs(30),
        || async {
            events_of(c, name)
                .await
                .iter()
                .any(|(r, m)| r == reason && m == message)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_scaling_with_tolerance_stabilization_and_bounds() {
    let (c, load) = cluster().await;
    let long = Duration::from_secs(60);
    // request 50m, target 50 %: each pod should burn 25m
    c.apply("1.32", &deployment("web", 1, Some("50m"))).await;
    load.set("web", 50);
    c.apply("1.32", &hpa_v2("web", "web", 2, 5, 50)).await;

    // below minReplicas: raised at once
    c.wait_for("raised to minReplicas", long, || async {
        (replicas(&c, "web").await == 2).then_some(())
    })
    .await;
    c.wait_for("a computed recommendation at 50 %", long, || async {
        let h = hpa(&c, "web").await;
        (utilization(&h) == Some(50)
            && cond_is(&h, "ScalingActive", "True", "ValidMetricFound")
            && h["status"]["desiredReplicas"] == 2)
            .then_some(())
    })
    .await;

    // 54 %: within the 0.1 tolerance, the recommendation stays
    load.set("web", 54);
    let h = c
        .wait_for("54 % observed", long, || async {
            let h = hpa(&c, "web").await;
            (utilization(&h) == Some(54)).then_some(h)
        })
        .await;
    assert_eq!(h["status"]["desiredReplicas"], 2, "{h}");
    assert_eq!(replicas(&c, "web").await, 2);

    // 70 %: up to 3 (⌈2 × 1.4⌉), where 47 % is within the tolerance
    load.set("web", 70);
    c.wait_for("scaled up to 3", long, || async {
        (replicas(&c, "web").await == 3).then_some(())
    })
    .await;
    for msg in [
        "New size: 3; reason: cpu resource utilization (percentage of request) above target",
        "New size: 2; reason: Current number of replicas below Spec.MinReplicas",
    ] {
        wait_event(&c, "web", "SuccessfulRescale", msg).await;
    }
    let h = hpa(&c, "web").await;
    assert!(h["status"]["lastScaleTime"].is_string(), "{h}");
    assert_eq!(h["status"]["observedGeneration"], 1, "{h}");

    // far above: capped at maxReplicas with ScalingLimited TooManyReplicas
    load.set("web", 400);
    c.wait_for("capped at 5", long, || async {
        let h = hpa(&c, "web").await;
        (replicas(&c, "web").await == 5 && cond_is(&h, "ScalingLimited", "True", "TooManyReplicas"))
            .then_some(())
    })
    .await;
    let limited = condition(&hpa(&c, "web").await, "ScalingLimited")
        .cloned()
        .unwrap();
    assert_eq!(
        limited["message"],
        "the desired replica count is more than the maximum replica count"
    );

    // load gone: held for the stabilization window, then down to minReplicas
    load.set("web", 10);
    let low_seen = c
        .wait_for("low load observed and held", long, || async {
            let h = hpa(&c, "web").await;
            (utilization(&h).is_some_and(|u| u < 10)
                && cond_is(&h, "AbleToScale", "True", "ScaleDownStabilized"))
            .then(std::time::Instant::now)
        })
        .await;
    assert_eq!(
        replicas(&c, "web").await,
        5,
        "scaled down inside the window"
    );
    c.wait_for("scaled down to minReplicas", long, || async {
        let h = hpa(&c, "web").await;
        (replicas(&c, "web").await == 2 && cond_is(&h, "ScalingLimited", "True", "TooFewReplicas"))
            .then_some(())
    })
    .await;
    let held = low_seen.elapsed();
    assert!(
        held >= WINDOW - Duration::from_secs(3),
        "scaled down {held:?} after the low load was seen; the window is {WINDOW:?}"
    );
    wait_event(
        &c,
        "web",
        "SuccessfulRescale",
        "New size: 2; reason: All metrics below target",
    )
    .await;

    // kubectl shows the figures (the server's Table) and describes the conditions; the
    // status counts the new size from the sync after the rescale on
    api_common::wait_for("currentReplicas 2", Duration::from_secs(30), || async {
        (hpa(&c, "web").await["status"]["currentReplicas"] == 2).then_some(())
    })
    .await;
    let h = hpa(&c, "web").await;
    let u = utilization(&h).unwrap();
    for v in ["1.32", "1.27"] {
        let out = c.server.ok(v, &["get", "hpa", "web"]).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "NAME",
                "REFERENCE",
                "TARGETS",
                "MINPODS",
                "MAXPODS",
                "REPLICAS",
                "AGE"
            ],
            "{out}"
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells[0..2], ["web", "Deployment/web"], "{out}");
        // the figure moves between reads; its shape and range do not
        assert_eq!(cells[2], "cpu:", "{out}");
        let shown: i64 = cells[3].strip_suffix("%/50%").unwrap().parse().unwrap();
        assert!(shown < 50 && u < 50, "{out}");
        assert_eq!(cells[4..7], ["2", "5", "2"], "{out}");
        let d = c.server.ok(v, &["describe", "hpa", "web"]).await;
        for want in [
            "Reference:",
            "Deployment/web",
            "Min replicas:",
            "Max replicas:",
            "Deployment pods:",
            "2 current / 2 desired",
            "ScalingLimited",
            "TooFewReplicas",
            "SuccessfulRescale",
            "(as a percentage of request)",
        ] {
            assert!(
                d.contains(want),
                "kubectl {v} describe lacks {want:?}:\n{d}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_target_requestless_pods_and_zero_replicas() {
    let (c, load) = cluster().await;
    let long = Duration::from_secs(60);
    // a target that does not exist: FailedGetScale, nothing created or scaled
    c.apply("1.32", &hpa_v2("ghost", "nope", 1, 3, 50)).await;
    c.wait_for("FailedGetScale", long, || async {
        let h = hpa(&c, "ghost").await;
        cond_is(&h, "AbleToScale", "False", "FailedGetScale").then_some(h)
    })
    .await;
    let h = hpa(&c, "ghost").await;
    let msg = condition(&h, "AbleToScale").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.starts_with("the HPA controller was unable to get the target's current scale:")
            && msg.contains("not found"),
        "{msg}"
    );
    assert!(condition(&h, "ScalingActive").is_none(), "{h}");
    assert!(h["status"]["lastScaleTime"].is_null(), "{h}");
    let d: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    assert!(
        d.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    c.wait_for("a FailedGetScale event", long, || async {
        events_of(&c, "ghost")
            .await
            .iter()
            .any(|(r, _)| r == "FailedGetScale")
            .then_some(())
    })
    .await;

    // pods without a cpu request: no utilization, ScalingActive False naming the container
    c.apply("1.32", &deployment("noreq", 2, None)).await;
    load.set("noreq", 100);
    c.apply("1.32", &hpa_v2("noreq", "noreq", 1, 4, 50)).await;
    let h = c
        .wait_for("FailedGetResourceMetric", long, || async {
            let h = hpa(&c, "noreq").await;
            let missing = condition(&h, "ScalingActive")
                .is_some_and(|c| c["message"].as_str().unwrap().contains("missing request"));
            (cond_is(&h, "ScalingActive", "False", "FailedGetResourceMetric") && missing)
                .then_some(h)
        })
        .await;
    let msg = condition(&h, "ScalingActive").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("missing request for cpu in container app of Pod noreq-"),
        "{msg}"
    );
    assert_eq!(replicas(&c, "noreq").await, 2);

    // a target scaled to zero: scaling disabled
    c.apply("1.32", &deployment("idle", 0, Some("50m"))).await;
    c.apply("1.32", &hpa_v2("idle", "idle", 1, 4, 50)).await;
    c.wait_for("ScalingDisabled", long, || async {
        let h = hpa(&c, "idle").await;
        cond_is(&h, "ScalingActive", "False", "ScalingDisabled").then_some(())
    })
    .await;
    assert_eq!(replicas(&c, "idle").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_as_v1_and_v2_with_validation_and_discovery() {
    let (c, _load) = cluster().await;
    let s = &c.server;
    // discovery: both versions, v2 preferred
    let (code, g) = s.admin("GET", "/apis", "", b"").await;
    assert_eq!(code, 200);
    let group = g["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "autoscaling")
        .cloned()
        .unwrap();
    assert_eq!(group["preferredVersion"]["version"], "v2", "{group}");
    assert_eq!(
        group["versions"],
        json!([{"groupVersion": "autoscaling/v2", "version": "v2"},
               {"groupVersion": "autoscaling/v1", "version": "v1"}])
    );
    for v in ["v1", "v2"] {
        let (code, l) = s
            .admin("GET", &format!("/apis/autoscaling/{v}"), "", b"")
            .await;
        assert_eq!(code, 200);
        let hpa = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "horizontalpodautoscalers")
            .cloned()
            .unwrap();
        assert_eq!(hpa["shortNames"], json!(["hpa"]));
        assert_eq!(hpa["categories"], json!(["all"]));
        assert!(
            l["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "horizontalpodautoscalers/status")
        );
    }
    let api_resources = c
        .kubectl(&["api-resources", "--api-group=autoscaling"])
        .await;
    assert!(api_resources.contains("autoscaling/v2"), "{api_resources}");

    // kubectl apply of a v1 HPA; read back as v2 (cpu metric) and v1
    c.apply("1.27", &deployment("web", 1, Some("50m"))).await;
    c.apply(
        "1.27",
        "apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata:
  name: old
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: web
  maxReplicas: 3
  targetCPUUtilizationPercentage: 60
",
    )
    .await;
    let v2 = hpa(&c, "old").await;
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(v2["spec"]["minReplicas"], 1);
    assert_eq!(
        v2["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}])
    );
    assert!(v2["spec"].get("behavior").is_none(), "{v2}");
    // re-applying the same v1 manifest changes nothing
    let again = c
        .apply(
            "1.32",
            "apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata:
  name: old
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: web
  maxReplicas: 3
  targetCPUUtilizationPercentage: 60
",
        )
        .await;
    assert!(again.contains("unchanged"), "{again}");

    // a v2 HPA with a memory metric and behavior survives a v1 GET → PUT round trip
    c.apply(
        "1.32",
        "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: both
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: web
  maxReplicas: 4
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 30
  metrics:
    - type: Resource
      resource:
        name: memory
        target:
          type: AverageValue
          averageValue: 100Mi
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: 70
",
    )
    .await;
    let before = hpa(&c, "both").await;
    assert_eq!(
        before["spec"]["behavior"]["scaleDown"]["selectPolicy"], "Max",
        "{before}"
    );
    let path = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/both";
    let (code, v1) = s.admin("GET", path, "", b"").await;
    assert_eq!(code, 200, "{v1}");
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 70);
    assert!(
        v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/metrics"]
            .as_str()
            .unwrap()
            .contains("\"targetAverageValue\":\"100Mi\"")
    );
    // GET → PUT, again when the controller's status write came between (409)
    let after_put = c
        .wait_for("a v1 PUT", Duration::from_secs(30), || async {
            let (_, mut put) = s.admin("GET", path, "", b"").await;
            put["spec"]["maxReplicas"] = json!(6);
            let (code, after) = s
                .admin("PUT", path, "application/json", put.to_string().as_bytes())
                .await;
            assert!(code == 200 || code == 409, "{after}");
            (code == 200).then_some(after)
        })
        .await;
    assert_eq!(after_put["apiVersion"], "autoscaling/v1");
    let after = hpa(&c, "both").await;
    assert_eq!(after["spec"]["maxReplicas"], 6);
    assert_eq!(after["spec"]["behavior"], before["spec"]["behavior"]);
    // the cpu target was already last, where v1's conversion puts it
    assert_eq!(after["spec"]["metrics"], before["spec"]["metrics"]);
    let ann = after["metadata"]["annotations"].as_object().unwrap();
    assert!(
        ann.keys()
            .all(|k| !k.starts_with("autoscaling.alpha.kubernetes.io/")),
        "conversion annotations are not stored: {after}"
    );
    // a v1 merge patch of the cpu target
    let (code, patched) = s
        .admin(
            "PATCH",
            path,
            "application/merge-patch+json",
            br#"{"spec":{"targetCPUUtilizationPercentage":40}}"#,
        )
        .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["spec"]["targetCPUUtilizationPercentage"], 40);
    let after = hpa(&c, "both").await;
    assert_eq!(
        after["spec"]["metrics"][1]["resource"]["target"]["averageUtilization"],
        40
    );
    assert_eq!(after["spec"]["metrics"][0]["resource"]["name"], "memory");
    // lists and watches of v1 are v1
    let (code, l) = s
        .admin(
            "GET",
            "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers",
            "",
            b"",
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(l["kind"], "HorizontalPodAutoscalerList");
    assert_eq!(l["apiVersion"], "autoscaling/v1");
    assert!(
        l["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["apiVersion"] == "autoscaling/v1" && i["spec"].get("metrics").is_none())
    );
    let (code, w) = s
        .request(
            "GET",
            "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers?watch=true&timeoutSeconds=1",
            Some(&s.handle.admin_token.clone()),
            "",
            b"",
        )
        .await;
    assert_eq!(code, 200);
    let lines: Vec<Value> = w
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // the two objects, then whatever the controller wrote meanwhile
    assert_eq!(
        lines.iter().filter(|l| l["type"] == "ADDED").count(),
        2,
        "{w}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["object"]["apiVersion"] == "autoscaling/v1"),
        "{w}"
    );
    // one object, one key, whatever version: kubectl sees both HPAs once
    let all = c.kubectl(&["get", "hpa", "-o", "name"]).await;
    assert_eq!(
        all.lines().collect::<Vec<_>>(),
        [
            "horizontalpodautoscaler.autoscaling/both",
            "horizontalpodautoscaler.autoscaling/old"
        ]
    );
    let t = c.kubectl(&["get", "hpa", "old"]).await;
    assert!(t.contains("cpu: <unknown>/60%"), "{t}");

    // validation: 422 naming the fields, in both versions
    let bad_v2 = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "bad"},
        "spec": {"scaleTargetRef": {"kind": "Deployment"}, "minReplicas": 0, "maxReplicas": 2,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": -5}}}]}});
    let (code, st) = s
        .admin(
            "POST",
            "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers",
            "application/json",
            bad_v2.to_string().as_bytes(),
        )
        .await;
    assert_eq!(code, 422, "{st}");
    let fields: Vec<&str> = st["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.scaleTargetRef.name",
            "spec.minReplicas",
            "spec.metrics[0].resource.target.averageUtilization"
        ],
        "{st}"
    );
    let bad_v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "bad"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 3, "maxReplicas": 2}});
    let (code, st) = s
        .admin(
            "POST",
            "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers",
            "application/json",
            bad_v1.to_string().as_bytes(),
        )
        .await;
    assert_eq!(code, 422, "{st}");
    assert_eq!(
        st["details"]["causes"][0]["field"], "spec.maxReplicas",
        "{st}"
    );
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("must be greater than or equal to `minReplicas`"),
        "{st}"
    );
    let out = s.kubectl("1.32", &["get", "hpa", "bad"], &[]).await;
    assert!(!out.status.success());
}

/// `kubectl autoscale` posts a protobuf body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_autoscale_creates_an_hpa() {
    let (c, _load) = cluster().await;
    c.apply("1.32", &deployment("x", 1, Some("50m"))).await;
    for v in ["1.32", "1.27"] {
        let out = c
            .server
            .ok(
                v,
                &[
                    "autoscale",
                    "deploy/x",
                    "--cpu-percent=50",
                    "--min=1",
                    "--max=5",
                ],
            )
            .await;
        assert!(
            out.contains("horizontalpodautoscaler.autoscaling/x autoscaled"),
            "{out}"
        );
        let h = hpa(&c, "x").await;
        assert_eq!(h["spec"]["maxReplicas"], 5);
        assert_eq!(h["spec"]["minReplicas"], 1);
        assert_eq!(
            h["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        c.kubectl(&["delete", "hpa", "x"]).await;
    }
}

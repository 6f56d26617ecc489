//! The agent's Prometheus metrics, served at `/metrics` on its HTTPS endpoint (port 10250),
//! named as the kubelet names them: pod start latency, pod worker sync durations, pods per
//! phase and running containers. One set per process (the agent is one per node).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The Content-Type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The kubelet's buckets for `kubelet_pod_start_duration_seconds`.
const START_BUCKETS: [f64; 18] = [
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 600.0,
];
/// Prometheus' default buckets (the kubelet's for `kubelet_pod_worker_duration_seconds`).
const SYNC_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The phases counted in `skiff_agent_pods` (every one is shown, zeros included).
const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    container_state: String,
}

/// What the metrics know of one pod.
#[derive(Debug, Clone, Default)]
struct PodEntry {
    phase: String,
    running_containers: i64,
    /// Its start was counted (or it was running before this agent saw it).
    started: bool,
}

/// The agent's metrics.
pub struct AgentMetrics {
    registry: Registry,
    start: Histogram,
    sync: Family<OperationLabels, Histogram, fn() -> Histogram>,
    pods: Family<PhaseLabels, Gauge>,
    running_pods: Gauge,
    containers: Family<StateLabels, Gauge>,
    state: Mutex<HashMap<String, PodEntry>>,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

static METRICS: LazyLock<AgentMetrics> = LazyLock::new(AgentMetrics::new);

/// This process's metrics.
pub fn global() -> &'static AgentMetrics {
    &METRICS
}

impl AgentMetrics {
    /// Empty metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let start = Histogram::new(START_BUCKETS);
        let sync: Family<OperationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(SYNC_BUCKETS));
        let pods = Family::<PhaseLabels, Gauge>::default();
        let running_pods = Gauge::default();
        let containers = Family::<StateLabels, Gauge>::default();
        registry.register(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from the agent seeing a pod for the first time to the pod running",
            start.clone(),
        );
        registry.register(
            "kubelet_pod_worker_duration_seconds",
            "Duration in seconds of one pass of a pod worker, by operation (sync or terminate)",
            sync.clone(),
        );
        registry.register(
            "skiff_agent_pods",
            "Pods on this node by the phase the agent reports for them",
            pods.clone(),
        );
        registry.register(
            "kubelet_running_pods",
            "Number of pods that have a running container",
            running_pods.clone(),
        );
        registry.register(
            "kubelet_running_containers",
            "Number of containers currently running",
            containers.clone(),
        );
        AgentMetrics {
            registry,
            start,
            sync,
            pods,
            running_pods,
            containers,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Times one pass of a pod worker.
    pub fn observe_sync(&self, operation: &str, elapsed: Duration) {
        self.sync
            .get_or_create(&OperationLabels {
                operation: operation.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Takes in the status the worker computed for `pod` (whose `status` is what the API
    /// had); `seen` is how long ago the worker first saw the pod. The first time the pod is
    /// Running counts into the start latency, unless it already ran before (an adopted pod).
    pub fn observe_pod(&self, pod: &Pod, status: &PodStatus, seen: Duration) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let phase = status.phase.clone().unwrap_or_else(|| "Pending".into());
        let running_containers = status
            .container_statuses
            .iter()
            .flatten()
            .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
            .count() as i64;
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let entry = state.entry(uid).or_insert_with(|| PodEntry {
            // running before this agent's worker saw it: its start was not ours to time
            started: pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"),
            ..Default::default()
        });
        if phase == "Running" && !entry.started {
            entry.started = true;
            self.start.observe(seen.as_secs_f64());
        }
        entry.phase = phase;
        entry.running_containers = running_containers;
    }

    /// Forgets a pod that is gone from the node.
    pub fn forget_pod(&self, uid: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.remove(uid);
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        if let Ok(state) = self.state.lock() {
            for phase in PHASES {
                let n = state.values().filter(|e| e.phase == phase).count() as i64;
                self.pods
                    .get_or_create(&PhaseLabels {
                        phase: phase.into(),
                    })
                    .set(n);
            }
            let running: i64 = state.values().map(|e| e.running_containers).sum();
            self.containers
                .get_or_create(&StateLabels {
                    container_state: "running".into(),
                })
                .set(running);
            self.running_pods
                .set(state.values().filter(|e| e.running_containers > 0).count() as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, ContainerStatus};

    fn pod(uid: &str, api_phase: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some(uid.into());
        p.status = api_phase.map(|ph| PodStatus {
            phase: Some(ph.into()),
            ..Default::default()
        });
        p
    }

    fn status(phase: &str, running: usize) -> PodStatus {
        PodStatus {
            phase: Some(phase.into()),
            container_statuses: Some(
                (0..running)
                    .map(|i| ContainerStatus {
                        name: format!("c{i}"),
                        state: Some(ContainerState {
                            running: Some(ContainerStateRunning::default()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} missing in\n{text}"))
    }

    #[test]
    fn phases_containers_and_start_latency() {
        let m = AgentMetrics::new();
        // a new pod: pending, then running with two containers -> one start observed
        m.observe_pod(
            &pod("a", None),
            &status("Pending", 0),
            Duration::from_secs(1),
        );
        m.observe_pod(
            &pod("a", Some("Pending")),
            &status("Running", 2),
            Duration::from_secs(3),
        );
        m.observe_pod(
            &pod("a", Some("Running")),
            &status("Running", 2),
            Duration::from_secs(9),
        );
        // an adopted pod (Running in the API already): no start observed
        m.observe_pod(
            &pod("b", Some("Running")),
            &status("Running", 1),
            Duration::ZERO,
        );
        // one that failed
        m.observe_pod(&pod("c", None), &status("Failed", 0), Duration::ZERO);
        m.observe_sync("sync", Duration::from_millis(30));
        let text = m.encode().unwrap();
        let cases = [
            (
                "kubelet_pod_start_duration_seconds_count ",
                "kubelet_pod_start_duration_seconds_count 1",
            ),
            (
                "kubelet_pod_start_duration_seconds_sum ",
                "kubelet_pod_start_duration_seconds_sum 3.0",
            ),
            (
                "skiff_agent_pods{phase=\"Running\"}",
                "skiff_agent_pods{phase=\"Running\"} 2",
            ),
            (
                "skiff_agent_pods{phase=\"Failed\"}",
                "skiff_agent_pods{phase=\"Failed\"} 1",
            ),
            (
                "skiff_agent_pods{phase=\"Pending\"}",
                "skiff_agent_pods{phase=\"Pending\"} 0",
            ),
            (
                "kubelet_running_containers{",
                "kubelet_running_containers{container_state=\"running\"} 3",
            ),
            ("kubelet_running_pods ", "kubelet_running_pods 2"),
            (
                "kubelet_pod_worker_duration_seconds_count{",
                "kubelet_pod_worker_duration_seconds_count{operation=\"sync\"} 1",
            ),
        ];
        for (prefix, want) in cases {
            assert_eq!(line(&text, prefix), want);
        }
        m.forget_pod("a");
        let text = m.encode().unwrap();
        assert_eq!(
            line(&text, "skiff_agent_pods{phase=\"Running\"}"),
            "skiff_agent_pods{phase=\"Running\"} 1"
        );
        assert_eq!(
            line(&text, "kubelet_running_pods "),
            "kubelet_running_pods 1"
        );
    }
}

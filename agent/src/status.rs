//! Pod status as Kubernetes reports it, computed by a pure function from what the worker
//! knows about each container (its run records and why it is waiting): phase (the
//! kubelet's `getPhase`), the conditions PodScheduled, PodReadyToStartContainers,
//! Initialized, ContainersReady and Ready, IPs, startTime, containerStatuses with
//! state/reasons, restartCount, imageID and lastState. Restart decisions and the
//! CrashLoopBackOff delays (10 s doubling to 5 min, reset after 10 min of running) live here
//! too.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::shim::RunRecord;

/// The first CrashLoopBackOff delay.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// The longest CrashLoopBackOff delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long gets its back-off reset.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// Where a container stands, as the worker sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum View {
    /// Not running: reason (`ContainerCreating`, `CrashLoopBackOff`, `ErrImagePull`, …) and
    /// message.
    Waiting(String, String),
    /// The current run.
    Running(RunRecord),
    /// Finished and not restarted.
    Terminated(RunRecord),
}

/// One container's inputs to the status.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    /// Name in the pod.
    pub name: String,
    /// Image as the pod names it.
    pub image: String,
    /// Current state.
    pub view: View,
    /// The previous run (for lastState), if any.
    pub last: Option<RunRecord>,
    /// Restarts so far.
    pub restart_count: i32,
    /// The readiness (or pending startup) probe's verdict; `None` without probes.
    pub probed_ready: Option<bool>,
    /// Running and past its startup probe (the status's `started`).
    pub started: bool,
}

/// Whether a container that exited with `code` is restarted under `policy`.
pub fn should_restart(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// The kubelet's back-off for one container: the first restart is immediate, later ones
/// wait 10 s, 20 s, 40 s … up to 5 min; a run of 10 min or more resets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backoff {
    /// The current delay (`None` before the first restart).
    pub delay: Option<Duration>,
}

impl Backoff {
    /// Given how long the last run lasted and how long ago it finished, returns `None` when
    /// the restart may happen now (and advances the back-off), or the time left to wait.
    pub fn check(&mut self, ran: Duration, since_exit: Duration) -> Option<Duration> {
        if ran >= BACKOFF_RESET {
            self.delay = None;
        }
        match self.delay {
            Some(d) if since_exit < d => Some(d - since_exit),
            Some(d) => {
                self.delay = Some((d * 2).min(BACKOFF_MAX));
                None
            }
            None => {
                self.delay = Some(BACKOFF_INITIAL);
                None
            }
        }
    }
}

fn time(s: &str) -> Option<Time> {
    s.parse::<k8s_openapi::jiff::Timestamp>().ok().map(Time)
}

fn container_id(r: &RunRecord) -> String {
    format!("skiff://{}", r.id)
}

/// The terminated state of a finished run, with Kubernetes' reasons.
pub fn terminated(r: &RunRecord) -> ContainerStateTerminated {
    let code = r.exit_code.unwrap_or(0);
    let reason = if r.error.is_some() {
        "StartError"
    } else if r.oom_killed {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    };
    ContainerStateTerminated {
        exit_code: code,
        signal: r.signal,
        reason: Some(reason.into()),
        message: crate::termination::join(r.error.clone(), r.termination_message.clone()),
        started_at: time(&r.started_at),
        finished_at: r.finished_at.as_deref().and_then(time),
        container_id: (!r.id.is_empty()).then(|| container_id(r)),
    }
}

/// Whether the pod's init container `name` is a sidecar (`restartPolicy: Always`).
pub fn is_sidecar(pod: &Pod, name: &str) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .any(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"))
}

fn is_ready(v: &ContainerView) -> bool {
    matches!(v.view, View::Running(_)) && v.probed_ready != Some(false)
}

/// The kubelet's phase rule.
pub fn phase(restart_policy: &str, views: &[ContainerView]) -> &'static str {
    let (mut waiting, mut running, mut stopped, mut failed) = (0, 0, 0, 0);
    for v in views {
        match &v.view {
            View::Running(_) => running += 1,
            View::Terminated(r) => {
                stopped += 1;
                if r.exit_code != Some(0) {
                    failed += 1;
                }
            }
            View::Waiting(..) => match &v.last {
                Some(r) => {
                    stopped += 1;
                    if r.exit_code != Some(0) {
                        failed += 1;
                    }
                }
                None => waiting += 1,
            },
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped == views.len() && !views.is_empty() {
        match restart_policy {
            "Never" if failed > 0 => "Failed",
            "Never" => "Succeeded",
            "OnFailure" if failed > 0 => "Running",
            "OnFailure" => "Succeeded",
            _ => "Running",
        }
    } else {
        "Pending"
    }
}

fn cond(
    typ: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: &Time,
) -> PodCondition {
    PodCondition {
        type_: typ.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.map(Into::into),
        message,
        last_transition_time: Some(now.clone()),
        last_probe_time: None,
        observed_generation: None,
    }
}

/// Everything about the pod besides its containers.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    /// The sandbox exists.
    pub sandbox_ready: bool,
    /// Pod IPs.
    pub pod_ips: Vec<String>,
    /// The node's IP.
    pub host_ip: String,
    /// When the agent first took the pod on.
    pub start_time: Option<Time>,
    /// The pod's QoS class name.
    pub qos_class: String,
}

/// The pod status. Conditions keep their lastTransitionTime from `old` when unchanged.
pub fn pod_status(
    pod: &Pod,
    init: &[ContainerView],
    views: &[ContainerView],
    facts: &PodFacts,
    now: &Time,
) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    let sidecar = |v: &ContainerView| is_sidecar(pod, &v.name);
    let init_done =
        |v: &ContainerView| matches!(&v.view, View::Terminated(r) if r.exit_code == Some(0));
    // once an app container ran, the pod was initialized (a sidecar restarting later or
    // stopped at the end does not take that back)
    let apps_began = views
        .iter()
        .any(|v| !matches!(v.view, View::Waiting(..)) || v.last.is_some());
    let initialized =
        |v: &ContainerView| apps_began || if sidecar(v) { v.started } else { init_done(v) };
    let init_failed = init
        .iter()
        .filter(|v| !sidecar(v))
        .any(|v| matches!(&v.view, View::Terminated(r) if r.exit_code != Some(0)));
    let incomplete: Vec<&str> = init
        .iter()
        .filter(|v| !initialized(v))
        .map(|v| v.name.as_str())
        .collect();
    let sidecars: Vec<&ContainerView> = init.iter().filter(|v| sidecar(v)).collect();
    let app_phase = phase(&policy, views);
    // the kubelet's getPhase: a running sidecar keeps the pod Running, a stopped one does
    // not count
    let phase = if init_failed && policy == "Never" {
        "Failed"
    } else if !incomplete.is_empty() || app_phase == "Pending" {
        "Pending"
    } else if sidecars.iter().any(|v| matches!(v.view, View::Running(_))) {
        "Running"
    } else {
        app_phase
    };
    let unready: Vec<&str> = sidecars
        .iter()
        .copied()
        .chain(views)
        .filter(|v| !is_ready(v))
        .map(|v| v.name.as_str())
        .collect();
    let all_ready = unready.is_empty() && !views.is_empty();
    let completed = matches!(phase, "Succeeded" | "Failed");
    let (reason, message) = if all_ready {
        (None, None)
    } else if completed {
        (Some("PodCompleted"), None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let mut conditions = vec![
        cond(
            "PodReadyToStartContainers",
            facts.sandbox_ready && !completed,
            None,
            None,
            now,
        ),
        if incomplete.is_empty() {
            cond(
                "Initialized",
                true,
                completed.then_some("PodCompleted"),
                None,
                now,
            )
        } else {
            cond(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                )),
                now,
            )
        },
        cond("Ready", all_ready, reason, message.clone(), now),
        cond("ContainersReady", all_ready, reason, message, now),
        cond("PodScheduled", true, None, None, now),
    ];
    for c in &mut conditions {
        if let Some(o) = old
            .conditions
            .iter()
            .flatten()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
    let statuses = views
        .iter()
        .map(|v| container_status(v, is_ready(v)))
        .collect();
    let init_statuses: Vec<ContainerStatus> = init
        .iter()
        .map(|v| {
            let ready = if sidecar(v) {
                is_ready(v)
            } else {
                init_done(v)
            };
            container_status(v, ready)
        })
        .collect();
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(facts.host_ip.clone()).filter(|s| !s.is_empty()),
        host_ips: Some(vec![HostIP {
            ip: facts.host_ip.clone(),
        }])
        .filter(|_| !facts.host_ip.is_empty()),
        pod_ip: facts.pod_ips.first().cloned(),
        pod_ips: Some(
            facts
                .pod_ips
                .iter()
                .map(|ip| PodIP { ip: ip.clone() })
                .collect::<Vec<_>>(),
        )
        .filter(|v| !v.is_empty()),
        start_time: old.start_time.clone().or_else(|| facts.start_time.clone()),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        qos_class: Some(facts.qos_class.clone()),
        ..Default::default()
    }
}

/// One container's status; `ready` as the caller decides (init containers: completed).
fn container_status(v: &ContainerView, ready: bool) -> ContainerStatus {
    let (state, image_id, id) = match &v.view {
        View::Waiting(reason, message) => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: (!message.is_empty()).then(|| message.clone()),
                }),
                ..Default::default()
            },
            v.last
                .as_ref()
                .map(|r| r.image_id.clone())
                .unwrap_or_default(),
            v.last.as_ref().map(container_id),
        ),
        View::Running(r) => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time(&r.started_at),
                }),
                ..Default::default()
            },
            r.image_id.clone(),
            Some(container_id(r)),
        ),
        View::Terminated(r) => (
            ContainerState {
                terminated: Some(terminated(r)),
                ..Default::default()
            },
            r.image_id.clone(),
            Some(container_id(r)),
        ),
    };
    ContainerStatus {
        name: v.name.clone(),
        image: v.image.clone(),
        image_id,
        container_id: id,
        ready,
        started: Some(matches!(v.view, View::Running(_)) && v.started),
        restart_count: v.restart_count,
        state: Some(state),
        last_state: Some(match &v.last {
            Some(r) if !matches!(&v.view, View::Terminated(t) if t == r) => ContainerState {
                terminated: Some(terminated(r)),
                ..Default::default()
            },
            _ => ContainerState::default(),
        }),
        ..Default::default()
    }
}

/// Whether two statuses differ in anything but condition transition times.
pub fn differs(a: &PodStatus, b: &PodStatus) -> bool {
    // compared as the API stores them: `Time` is kept to the second, so a status computed
    // now (nanoseconds) equals the one read back from the API
    let stored = |s: &PodStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_transition_time = None;
            c.last_probe_time = None;
        }
        serde_json::to_value(&s).unwrap_or_default()
    };
    stored(a) != stored(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(restart: u32, code: Option<i32>) -> RunRecord {
        RunRecord {
            id: "u-c".into(),
            restart,
            pid: 10,
            started_at: "2026-12-01T10:00:00Z".into(),
            finished_at: code.map(|_| "2026-12-01T10:00:01Z".into()),
            exit_code: code,
            image: "busybox".into(),
            image_id: "busybox@sha256:aa".into(),
            ..Default::default()
        }
    }

    fn view(v: View, last: Option<RunRecord>) -> ContainerView {
        ContainerView {
            name: "c".into(),
            image: "busybox".into(),
            started: matches!(v, View::Running(_)),
            view: v,
            last,
            restart_count: 0,
            probed_ready: None,
        }
    }

    #[test]
    fn phase_table() {
        let w = |r: &str| View::Waiting(r.into(), String::new());
        let cases = [
            (
                "Always",
                vec![view(w("ContainerCreating"), None)],
                "Pending",
            ),
            (
                "Always",
                vec![view(View::Running(rec(0, None)), None)],
                "Running",
            ),
            (
                "Always",
                vec![view(w("CrashLoopBackOff"), Some(rec(0, Some(1))))],
                "Running",
            ),
            (
                "Never",
                vec![view(View::Terminated(rec(0, Some(0))), None)],
                "Succeeded",
            ),
            (
                "Never",
                vec![view(View::Terminated(rec(0, Some(2))), None)],
                "Failed",
            ),
            (
                "OnFailure",
                vec![view(View::Terminated(rec(0, Some(0))), None)],
                "Succeeded",
            ),
            (
                "OnFailure",
                vec![view(w("CrashLoopBackOff"), Some(rec(0, Some(1))))],
                "Running",
            ),
            (
                "Never",
                vec![
                    view(View::Running(rec(0, None)), None),
                    view(View::Terminated(rec(0, Some(1))), None),
                ],
                "Running",
            ),
        ];
        for (policy, views, want) in cases {
            assert_eq!(phase(policy, &views), want, "{policy} {views:?}");
        }
    }

    #[test]
    fn restart_policy_table() {
        for (policy, code, want) in [
            ("Always", 0, true),
            ("Always", 1, true),
            ("OnFailure", 0, false),
            ("OnFailure", 1, true),
            ("Never", 1, false),
        ] {
            assert_eq!(should_restart(policy, code), want, "{policy} {code}");
        }
    }

    #[test]
    fn backoff_doubles_to_five_minutes_and_resets() {
        let s = Duration::from_secs;
        let mut b = Backoff::default();
        assert_eq!(b.check(s(1), s(0)), None, "first restart is immediate");
        assert_eq!(b.check(s(1), s(3)), Some(s(7)));
        assert_eq!(b.check(s(1), s(10)), None);
        assert_eq!(b.delay, Some(s(20)));
        for _ in 0..10 {
            let _ = b.check(s(1), s(1000));
        }
        assert_eq!(b.delay, Some(BACKOFF_MAX));
        assert_eq!(
            b.check(s(700), s(0)),
            None,
            "a long run resets the back-off"
        );
        assert_eq!(b.delay, Some(BACKOFF_INITIAL));
    }

    #[test]
    fn status_of_a_crash_looping_container() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap();
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut v = view(
            View::Waiting(
                "CrashLoopBackOff".into(),
                "back-off 10s restarting failed container=c pod=p_default(u)".into(),
            ),
            Some(rec(1, Some(1))),
        );
        v.restart_count = 1;
        let facts = PodFacts {
            sandbox_ready: true,
            host_ip: "10.0.0.1".into(),
            qos_class: "BestEffort".into(),
            ..Default::default()
        };
        let st = pod_status(&pod, &[], &[v], &facts, &now);
        assert_eq!(st.phase.as_deref(), Some("Running"));
        let cs = &st.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 1);
        assert!(!cs.ready);
        let w = cs.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
        let ready = st
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [c]")
        );
        assert_eq!(st.host_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(st.pod_ip, None);
        // running: ready, no lastState
        let st = pod_status(
            &pod,
            &[],
            &[view(View::Running(rec(0, None)), None)],
            &facts,
            &now,
        );
        let cs = &st.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready);
        assert_eq!(cs.container_id.as_deref(), Some("skiff://u-c"));
        assert_eq!(cs.image_id, "busybox@sha256:aa");
        assert_eq!(cs.last_state, Some(ContainerState::default()));
        let ready = st
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        // completed
        let st = pod_status(
            &pod,
            &[],
            &[view(View::Terminated(rec(0, Some(0))), None)],
            &facts,
            &now,
        );
        let t = st.container_statuses.as_ref().unwrap()[0]
            .state
            .as_ref()
            .unwrap()
            .terminated
            .clone()
            .unwrap();
        assert_eq!(t.reason.as_deref(), Some("Completed"));
    }

    #[test]
    fn init_containers_gate_the_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"}, "spec": {"restartPolicy": "Never",
            "initContainers": [{"name": "i", "image": "busybox"}],
            "containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap();
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let facts = PodFacts::default();
        let app = || view(View::Waiting("PodInitializing".into(), String::new()), None);
        let init_cond = |st: &PodStatus| {
            let c = st
                .conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == "Initialized")
                .unwrap()
                .clone();
            (c.status, c.reason, c.message)
        };
        // running init container
        let st = pod_status(
            &pod,
            &[view(View::Running(rec(0, None)), None)],
            &[app()],
            &facts,
            &now,
        );
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        assert_eq!(
            init_cond(&st),
            (
                "False".into(),
                Some("ContainersNotInitialized".into()),
                Some("containers with incomplete status: [c]".into())
            )
        );
        let is = &st.init_container_statuses.as_ref().unwrap()[0];
        assert!(!is.ready && is.state.as_ref().unwrap().running.is_some());
        // failed under Never: the pod fails
        let st = pod_status(
            &pod,
            &[view(View::Terminated(rec(0, Some(3))), None)],
            &[app()],
            &facts,
            &now,
        );
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        // completed: ready, Initialized, the app containers decide
        let st = pod_status(
            &pod,
            &[view(View::Terminated(rec(0, Some(0))), None)],
            &[view(View::Running(rec(0, None)), None)],
            &facts,
            &now,
        );
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert_eq!(init_cond(&st).0, "True");
        assert!(st.init_container_statuses.as_ref().unwrap()[0].ready);
    }

    #[test]
    fn sidecars_start_before_apps_and_do_not_hold_a_job() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"}, "spec": {"restartPolicy": "Never",
            "initContainers": [{"name": "side", "image": "busybox", "restartPolicy": "Always"},
                               {"name": "i", "image": "busybox"}],
            "containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap();
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let facts = PodFacts::default();
        let named = |name: &str, v: ContainerView| ContainerView {
            name: name.into(),
            ..v
        };
        let waiting = |r: &str| view(View::Waiting(r.into(), String::new()), None);
        let cond = |st: &PodStatus, t: &str| {
            let c = st
                .conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .clone();
            (c.status, c.message)
        };
        // the sidecar runs but its startup probe has not passed: not started, Pending
        let mut side = named("side", view(View::Running(rec(0, None)), None));
        side.started = false;
        side.probed_ready = Some(false);
        let st = pod_status(
            &pod,
            &[side.clone(), named("i", waiting("PodInitializing"))],
            &[waiting("PodInitializing")],
            &facts,
            &now,
        );
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        assert_eq!(
            cond(&st, "Initialized").1.as_deref(),
            Some("containers with incomplete status: [side i]")
        );
        let ss = &st.init_container_statuses.as_ref().unwrap()[0];
        assert_eq!((ss.started, ss.ready), (Some(false), false));
        // started: only the regular init container is incomplete
        side.started = true;
        side.probed_ready = None;
        let st = pod_status(
            &pod,
            &[
                side.clone(),
                named("i", view(View::Running(rec(0, None)), None)),
            ],
            &[waiting("PodInitializing")],
            &facts,
            &now,
        );
        assert_eq!(
            cond(&st, "Initialized").1.as_deref(),
            Some("containers with incomplete status: [i]")
        );
        let ss = &st.init_container_statuses.as_ref().unwrap()[0];
        assert_eq!((ss.started, ss.ready), (Some(true), true));
        // app and sidecar running: Running, Ready counts the sidecar too
        let done_init = named("i", view(View::Terminated(rec(0, Some(0))), None));
        let mut unready_side = side.clone();
        unready_side.probed_ready = Some(false);
        let st = pod_status(
            &pod,
            &[unready_side, done_init.clone()],
            &[view(View::Running(rec(0, None)), None)],
            &facts,
            &now,
        );
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&st, "Initialized").0, "True");
        assert_eq!(
            cond(&st, "Ready").1.as_deref(),
            Some("containers with unready status: [side]")
        );
        // the app finished, the sidecar still runs: Running
        let app_done = view(View::Terminated(rec(0, Some(0))), None);
        let st = pod_status(
            &pod,
            &[side.clone(), done_init.clone()],
            std::slice::from_ref(&app_done),
            &facts,
            &now,
        );
        assert_eq!(st.phase.as_deref(), Some("Running"));
        // the sidecar stopped (137 after SIGKILL): it does not count, the pod Succeeded
        let side_stopped = named("side", view(View::Terminated(rec(0, Some(137))), None));
        let st = pod_status(&pod, &[side_stopped, done_init], &[app_done], &facts, &now);
        assert_eq!(st.phase.as_deref(), Some("Succeeded"));
        assert_eq!(cond(&st, "Initialized").0, "True");
    }

    #[test]
    fn statuses_are_compared_as_stored() {
        let now: k8s_openapi::jiff::Timestamp = "2026-12-01T10:00:00.123456789Z".parse().unwrap();
        let stored: k8s_openapi::jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let later: k8s_openapi::jiff::Timestamp = "2026-12-01T10:00:01Z".parse().unwrap();
        let at = |t| PodStatus {
            phase: Some("Running".into()),
            start_time: Some(Time(t)),
            ..Default::default()
        };
        // the API keeps seconds: what it sends back is the status we computed
        assert!(!differs(&at(now), &at(stored)));
        assert!(differs(&at(now), &at(later)));
        let mut pending = at(stored);
        pending.phase = Some("Pending".into());
        assert!(differs(&at(now), &pending));
    }
}

//! One worker per pod: a task driving the pod through an explicit state machine
//! ([`WorkerState`], legal steps in [`WorkerState::can_transition`]) from the latest Pod the
//! watch delivered. Each sync makes the sandbox, (re)starts containers as the restart policy
//! and back-off allow, and sends the status when it changed; deletion runs SIGTERM, the grace
//! period, SIGKILL, removes everything the pod held and finishes the API deletion.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodStatus, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use nix::sys::signal::Signal;
use skiff_runtime::Runtime;
use tokio::sync::watch;

use crate::config::Config;
use crate::container::{self, EnvSources, SpecInputs};
use crate::error::{Error, Result};
use crate::events;
use crate::images::{self, Images};
use crate::lifecycle;
use crate::probes;
use crate::qos::{self, QosClass};
use crate::sandbox::{self, PodNetwork, SandboxPaths};
use crate::shim::{self, Request, Response, RunRecord, StartRequest};
use crate::status::{self, Backoff, ContainerView, View};

/// Everything the workers share.
pub struct Shared {
    /// Settings.
    pub cfg: Arc<Config>,
    /// API client.
    pub client: kube::Client,
    /// Images.
    pub images: Arc<Images>,
    /// Pod network.
    pub network: Box<dyn PodNetwork>,
}

/// Where a pod's worker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WorkerState {
    /// Taken on, nothing made yet.
    New,
    /// Sandbox and shim exist; containers are being started.
    SandboxReady,
    /// Containers have been started (they may have exited since).
    Running,
    /// Evicted under node pressure: containers killed, resources reclaimed; the pod object
    /// stays (phase Failed) until it is deleted.
    Evicted,
    /// Deletion asked: containers are being stopped.
    Terminating,
    /// Containers stopped; the pod's resources are being removed.
    Terminated,
    /// Everything removed; the worker ends.
    Removed,
}

impl WorkerState {
    /// The legal steps.
    pub fn can_transition(self, to: WorkerState) -> bool {
        use WorkerState::*;
        matches!(
            (self, to),
            (New, SandboxReady)
                | (New, Running) // adopted after an agent restart
                | (New, Terminating)
                | (SandboxReady, Running)
                | (SandboxReady, Terminating)
                | (Running, Terminating)
                | (New, Evicted)
                | (SandboxReady, Evicted)
                | (Running, Evicted)
                | (Evicted, Terminating)
                | (Terminating, Terminated)
                | (Terminated, Removed)
        )
    }
}

/// Runtime container id of a pod's container.
pub fn container_id(uid: &str, name: &str) -> String {
    format!("{uid}-{name}")
}

/// One pod's worker.
pub struct Worker {
    shared: Arc<Shared>,
    /// The latest Pod, shared with the reflector's store (no copy per worker).
    pod: Arc<Pod>,
    uid: String,
    key: String,
    state: WorkerState,
    dir: PathBuf,
    sandbox: SandboxPaths,
    ips: Vec<IpAddr>,
    backoff: HashMap<String, Backoff>,
    waiting: HashMap<String, (String, String)>,
    retry_at: HashMap<String, Instant>,
    probes: HashMap<(String, u32, &'static str), probes::ProbeState>,
    sent: Option<PodStatus>,
    start_time: Time,
    /// Termination messages of finished runs, by (container, restart).
    messages: HashMap<(String, u32), Option<String>>,
    /// The node-pressure eviction of this pod, once the eviction manager asked for it.
    evicted: Option<crate::eviction::Eviction>,
}

fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

impl Worker {
    /// A worker for `pod`.
    pub fn new(shared: Arc<Shared>, pod: Arc<Pod>) -> Worker {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = shared.cfg.pod_run_dir(&uid);
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let sandbox = SandboxPaths::new(&shared.cfg.run_dir, &dir, &uid, host_network);
        Worker {
            key: pod_key(&pod),
            uid,
            dir,
            sandbox,
            shared,
            pod,
            state: WorkerState::New,
            ips: Vec::new(),
            backoff: HashMap::new(),
            waiting: HashMap::new(),
            retry_at: HashMap::new(),
            probes: HashMap::new(),
            sent: None,
            start_time: Time(k8s_openapi::jiff::Timestamp::now()),
            messages: HashMap::new(),
            evicted: None,
        }
    }

    fn transition(&mut self, to: WorkerState) -> Result<()> {
        if !self.state.can_transition(to) {
            return Err(Error::Transition {
                from: self.state,
                to,
            });
        }
        tracing::debug!(pod = %self.key, from = ?self.state, to = ?to, "pod worker step");
        self.state = to;
        Ok(())
    }

    fn cfg(&self) -> &Config {
        &self.shared.cfg
    }

    fn runtime(&self) -> Runtime {
        Runtime::new(self.cfg().runtime_root()).with_cgroup_root(self.cfg().cgroup_root.clone())
    }

    /// Runs until the pod is gone: `rx` carries the latest Pod, `None` once it left the API.
    pub async fn run(self, rx: watch::Receiver<Option<Arc<Pod>>>) {
        let span = tracing::info_span!("pod", pod = %self.key, uid = %self.uid);
        tracing::Instrument::instrument(self.run_inner(rx), span).await
    }

    async fn run_inner(mut self, mut rx: watch::Receiver<Option<Arc<Pod>>>) {
        loop {
            let latest = rx.borrow_and_update().clone();
            match latest {
                None => {
                    // deleted outright (grace 0 by someone else): just clean up
                    self.stop_all(Duration::ZERO).await;
                    if let Err(e) = self.remove().await {
                        tracing::warn!(error = %e, "cannot remove the pod's resources");
                    }
                    crate::eviction::shared(&self.cfg().node_name).forget(&self.uid);
                    return;
                }
                Some(p) => self.pod = p,
            }
            let pass = Instant::now();
            if self.pod.metadata.deletion_timestamp.is_some() {
                let r = self.terminate().await;
                crate::metrics::global().observe_sync("terminate", pass.elapsed());
                match r {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = %e, "pod termination failed, retrying"),
                }
            } else {
                let r = self.sync().await;
                crate::metrics::global().observe_sync("sync", pass.elapsed());
                if let Err(e) = r {
                    tracing::warn!(error = %e, "pod sync failed");
                }
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    fn qos(&self) -> QosClass {
        qos::qos_class(&self.pod)
    }

    fn containers(&self) -> Vec<Container> {
        self.pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default()
    }

    /// One pass: sandbox, containers, status.
    async fn sync(&mut self) -> Result<()> {
        if self.state == WorkerState::Evicted {
            return Ok(());
        }
        let pressure = crate::eviction::shared(&self.cfg().node_name);
        if let Some(e) = pressure.eviction(&self.uid) {
            return self.evict(e).await;
        }
        if self.state == WorkerState::New {
            if sandbox::exists(&self.sandbox) && shim::alive(&self.dir) {
                tracing::info!("adopting a running pod");
                self.ips = self.read_ips();
                self.transition(WorkerState::Running)?;
            } else {
                // a pod in a terminal phase never runs again (evicted, rejected, done and
                // cleaned up before an agent restart)
                let phase = self.pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if matches!(phase, Some("Failed" | "Succeeded")) {
                    return Ok(());
                }
                let conditions = pressure.conditions().unwrap_or_default();
                if let Some((reason, message)) = crate::eviction::admit(&self.pod, &conditions) {
                    return self.reject(reason, &message).await;
                }
                if let Err(e) = self.make_sandbox().await {
                    let msg = format!(
                        "Failed to create pod sandbox: {}",
                        crate::shim::error_chain(&e)
                    );
                    self.event(None, events::Kind::Warning, "FailedCreatePodSandBox", &msg)
                        .await;
                    return Err(e);
                }
                self.transition(WorkerState::SandboxReady)?;
            }
        }
        let policy = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        // init containers in order; each must complete before the next, all before the app
        // containers (they restart on failure unless the pod's policy is Never)
        let init_policy = if policy == "Never" {
            "Never"
        } else {
            "OnFailure"
        };
        let inits = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.clone())
            .unwrap_or_default();
        // sidecars (init containers with restartPolicy Always) only need to have started
        // (past their startup probe) for the next init container to go; they run along the
        // app containers and restart whenever they exit, until the app containers are done
        // for good (restartPolicy other than Always): then they are stopped
        let apps_done = self.apps_done(&policy);
        let apps_began = self
            .containers()
            .iter()
            .any(|c| matches!(shim::latest_record(&self.dir, &c.name), Ok(Some(_))));
        let mut init_views = Vec::new();
        let mut initialized = true;
        for c in &inits {
            if !initialized {
                init_views.push(waiting(c, "PodInitializing"));
                continue;
            }
            if is_sidecar(c) {
                let v = self
                    .step(c, if apps_done { "Never" } else { "Always" })
                    .await?;
                initialized = v.started || apps_began;
                init_views.push(v);
                continue;
            }
            let v = self.step(c, init_policy).await?;
            let completed = matches!(&v.view, View::Terminated(r) if r.exit_code == Some(0));
            initialized = completed;
            init_views.push(v);
        }
        let mut views = Vec::new();
        for c in self.containers() {
            let v = if initialized {
                self.step(&c, &policy).await?
            } else {
                waiting(&c, "PodInitializing")
            };
            views.push(v);
        }
        if apps_done {
            let running = self.running_sidecars();
            if !running.is_empty() {
                tracing::info!(sidecars = ?running.iter().map(|(_, n)| n).collect::<Vec<_>>(),
                    "app containers done: stopping the sidecars");
                let grace = Duration::from_secs(self.grace_seconds());
                self.stop_in_reverse(&running, grace).await;
            }
        }
        let vol_dir = self.cfg().pod_volume_dir(&self.uid);
        if let Err(e) = crate::volumes::refresh_downward(&self.pod, &vol_dir) {
            tracing::warn!(error = %e, "cannot update downwardAPI volumes");
        }
        if self.state == WorkerState::SandboxReady
            && init_views
                .iter()
                .chain(&views)
                .any(|v| !matches!(v.view, View::Waiting(..)) || v.last.is_some())
        {
            self.transition(WorkerState::Running)?;
        }
        self.send_status(&init_views, &views).await
    }

    /// Refuses the pod at admission, as the kubelet's `rejectPod`: phase Failed with the
    /// reason and `Pod was rejected: <message>`, and a Warning event.
    async fn reject(&mut self, reason: &str, message: &str) -> Result<()> {
        let message = format!("Pod was rejected: {message}");
        tracing::warn!(%reason, %message, "pod rejected");
        self.event(None, events::Kind::Warning, reason, &message)
            .await;
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({"status": {"phase": "Failed", "reason": reason,
            "message": message, "qosClass": self.qos().as_str()}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::api("patch pod status", e))?;
        Ok(())
    }

    /// Carries out a node-pressure eviction: kills the containers within the eviction's
    /// grace (zero for hard thresholds), reports phase Failed, reason Evicted and the
    /// manager's message, then reclaims the pod's containers, layers, volumes and logs as
    /// the kubelet does for evicted pods. The pod object stays until it is deleted.
    async fn evict(&mut self, e: crate::eviction::Eviction) -> Result<()> {
        if self.evicted.is_none() {
            tracing::warn!(message = %e.message, grace = ?e.grace, "evicting pod");
            self.event(
                None,
                events::Kind::Warning,
                crate::eviction::REASON,
                &e.message,
            )
            .await;
            self.evicted = Some(e.clone());
        }
        self.stop_all(e.grace).await;
        let mut init_views = Vec::new();
        let inits = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.clone())
            .unwrap_or_default();
        for c in &inits {
            init_views.push(self.final_view(c).await?);
        }
        let mut views = Vec::new();
        for c in self.containers() {
            views.push(self.final_view(&c).await?);
        }
        self.send_status(&init_views, &views).await?;
        self.remove().await?;
        self.transition(WorkerState::Evicted)?;
        tracing::info!("evicted pod's resources reclaimed");
        Ok(())
    }

    /// A stopped container's last view (never started: waiting).
    async fn final_view(&mut self, c: &Container) -> Result<ContainerView> {
        Ok(match shim::latest_record(&self.dir, &c.name)? {
            Some(_) => self.step(c, "Never").await?,
            None => waiting(c, "ContainerCreating"),
        })
    }

    /// One container's step: start it if it never ran, restart it if it exited and the
    /// policy and back-off allow; returns its view.
    async fn step(&mut self, c: &Container, policy: &str) -> Result<ContainerView> {
        let latest = shim::latest_record(&self.dir, &c.name)?;
        Ok(match latest {
            None => self.try_start(c, 0, None).await,
            Some(r) if r.exit_code.is_none() => ContainerView {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                restart_count: r.restart as i32,
                probed_ready: self.probe(c, &r).await,
                started: self.startup_done(c, r.restart),
                last: self.previous(&c.name, r.restart),
                view: View::Running(r),
            },
            Some(r) if status::should_restart(policy, r.exit_code.unwrap_or(0)) => {
                let b = self.backoff.entry(c.name.clone()).or_default();
                match b.check(run_time(&r), since_exit(&r)) {
                    None => {
                        let r = self.with_message(&c.name, r);
                        self.try_start(c, r.restart + 1, Some(r)).await
                    }
                    Some(_) => ContainerView {
                        name: c.name.clone(),
                        image: c.image.clone().unwrap_or_default(),
                        restart_count: r.restart as i32,
                        probed_ready: None,
                        started: false,
                        view: View::Waiting(
                            "CrashLoopBackOff".into(),
                            format!(
                                "back-off {}s restarting failed container={} pod={}_{}({})",
                                b.delay.map(|d| d.as_secs()).unwrap_or(0),
                                c.name,
                                self.pod.metadata.name.as_deref().unwrap_or_default(),
                                self.pod.metadata.namespace.as_deref().unwrap_or_default(),
                                self.uid
                            ),
                        ),
                        last: Some(self.with_message(&c.name, r)),
                    },
                }
            }
            Some(r) => ContainerView {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                restart_count: r.restart as i32,
                probed_ready: None,
                started: false,
                last: self.previous(&c.name, r.restart),
                view: View::Terminated(self.with_message(&c.name, r)),
            },
        })
    }

    /// Runs the container's due probes. A failed startup or liveness probe kills the
    /// container (the restart policy takes it from there); returns the readiness verdict
    /// (`Some(false)` while a startup probe has not succeeded).
    async fn probe(&mut self, c: &Container, r: &RunRecord) -> Option<bool> {
        let since_start = r
            .started_at
            .parse::<chrono::DateTime<chrono::Utc>>()
            .ok()
            .and_then(|t| (chrono::Utc::now() - t).to_std().ok())
            .unwrap_or_default();
        let ports = named_ports(c);
        let mut run = |kind: &'static str, p: &k8s_openapi::api::core::v1::Probe| {
            let key = (c.name.clone(), r.restart, kind);
            let st = self.probes.entry(key.clone()).or_default();
            let now = Instant::now();
            let due = probes::due(p, st, since_start, now);
            (key, due, p.clone())
        };
        let mut verdicts: HashMap<&'static str, Option<bool>> = HashMap::new();
        let mut todo = Vec::new();
        if let Some(p) = &c.startup_probe {
            todo.push(run("startup", p));
        }
        if let Some(p) = &c.liveness_probe {
            todo.push(run("liveness", p));
        }
        if let Some(p) = &c.readiness_probe {
            todo.push(run("readiness", p));
        }
        let startup_done = c.startup_probe.is_none()
            || self
                .probes
                .get(&(c.name.clone(), r.restart, "startup"))
                .is_some_and(|s| s.result == Some(true));
        for (key, due, p) in todo {
            let kind = key.2;
            if kind != "startup" && !startup_done {
                continue; // liveness and readiness wait for the startup probe
            }
            if kind == "startup" && startup_done {
                continue;
            }
            let before = self.probes.get(&key).and_then(|s| s.result);
            if due {
                let (ok, message) = self.run_probe(c, &p, &ports).await;
                if !ok {
                    let text = format!("{} probe failed: {message}", probe_title(kind));
                    self.event(Some(&c.name), events::Kind::Warning, "Unhealthy", &text)
                        .await;
                }
                if let Some(st) = self.probes.get_mut(&key) {
                    probes::record(&p, st, ok, Instant::now());
                }
            }
            let now = self.probes.get(&key).and_then(|s| s.result);
            if now == Some(false) && before != Some(false) && kind != "readiness" {
                let text = format!(
                    "Container {} failed {kind} probe, will be restarted",
                    c.name
                );
                self.event(Some(&c.name), events::Kind::Normal, "Killing", &text)
                    .await;
            }
            verdicts.insert(kind, now);
        }
        let failed = |k: &str| verdicts.get(k) == Some(&Some(false));
        for kind in ["startup", "liveness"] {
            if !failed(kind) {
                continue;
            }
            // as the kubelet: preStop, SIGTERM, the grace period (the probe's
            // terminationGracePeriodSeconds over the pod's), then SIGKILL
            let probe = match kind {
                "startup" => c.startup_probe.as_ref(),
                _ => c.liveness_probe.as_ref(),
            };
            let grace = probe_kill_grace(&self.pod, probe);
            tracing::info!(container = %c.name, probe = kind, grace_s = grace.as_secs(),
                "probe failed, stopping the container");
            let one = [(container_id(&self.uid, &c.name), c.name.clone())];
            self.stop_containers(&one, grace).await;
            break;
        }
        if !startup_done {
            return Some(false);
        }
        c.readiness_probe
            .as_ref()
            .map(|_| verdicts.get("readiness").copied().flatten() == Some(true))
    }

    /// Runs one probe of container `c` once: exec in the container through the runtime,
    /// tcpSocket and httpGet from the pod's network namespace. Returns the verdict and, for
    /// a failure, what the kubelet's Unhealthy event says.
    async fn run_probe(
        &self,
        c: &Container,
        p: &k8s_openapi::api::core::v1::Probe,
        ports: &[(String, i32)],
    ) -> (bool, String) {
        if let Some(cmd) = p.exec.as_ref().and_then(|e| e.command.clone()) {
            let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
            return match self.exec_in(&c.name, &cmd, timeout).await {
                Ok(o) => (o.success(), o.describe(&cmd)),
                Err(e) => (false, shim::error_chain(&e)),
            };
        }
        if let Some(g) = &p.grpc {
            let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
            let ip = self
                .ips
                .first()
                .copied()
                .unwrap_or(IpAddr::from([127, 0, 0, 1]));
            let Ok(port) = u16::try_from(g.port) else {
                return (false, format!("invalid gRPC probe port {}", g.port));
            };
            let addr = std::net::SocketAddr::new(ip, port);
            let netns = self.sandbox.netns.clone();
            let service = g.service.clone().unwrap_or_default();
            return tokio::task::spawn_blocking(move || {
                crate::grpcprobe::run(netns, addr, service, timeout)
            })
            .await
            .unwrap_or_else(|e| (false, e.to_string()));
        }
        let netns = self.sandbox.netns.clone();
        let ip = self.ips.first().copied();
        let ports = ports.to_vec();
        let probe = p.clone();
        let ok = tokio::task::spawn_blocking(move || probes::run(&probe, netns, ip, &ports))
            .await
            .unwrap_or(false);
        let what = if p.http_get.is_some() {
            "HTTP probe failed"
        } else if p.tcp_socket.is_some() {
            "TCP connection failed"
        } else {
            "probe type not supported"
        };
        (ok, what.to_string())
    }

    /// Runs `cmd` in the pod's container `name` with a timeout.
    async fn exec_in(
        &self,
        name: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> std::result::Result<crate::exec::Outcome, crate::exec::ExecError> {
        let cfg = self.cfg();
        crate::exec::run(
            &cfg.shim_exe,
            &cfg.runtime_root(),
            &cfg.run_dir.join("exec"),
            &container_id(&self.uid, name),
            cmd,
            timeout,
        )
        .await
    }

    /// The Docker config documents of the pod's imagePullSecrets (the ServiceAccount's are
    /// copied into the pod by the API server's admission, as in Kubernetes). A Secret that
    /// cannot be read is skipped: the pull then goes without it, as the kubelet's.
    async fn pull_secrets(&self) -> Vec<Vec<u8>> {
        let names: Vec<String> = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten())
            .map(|r| r.name.clone())
            .collect();
        let api: Api<Secret> = Api::namespaced(
            self.shared.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let mut secrets = Vec::new();
        for name in names {
            match api.get_opt(&name).await {
                Ok(Some(s)) => secrets.push(s),
                Ok(None) => tracing::warn!(secret = %name, "imagePullSecret not found"),
                Err(e) => tracing::warn!(secret = %name, error = %e, "cannot read imagePullSecret"),
            }
        }
        images::pull_auths(&secrets)
    }

    /// Records an Event about this pod (best effort).
    async fn event(&self, container: Option<&str>, kind: events::Kind, reason: &str, msg: &str) {
        let ev = events::event(
            &self.pod,
            container,
            kind,
            reason,
            msg,
            &self.cfg().node_name,
            k8s_openapi::jiff::Timestamp::now(),
        );
        events::record(&self.shared.client, ev).await;
    }

    fn previous(&mut self, name: &str, restart: u32) -> Option<RunRecord> {
        restart
            .checked_sub(1)
            .and_then(|n| shim::record(&self.dir, name, n).ok().flatten())
            .map(|r| self.with_message(name, r))
    }

    /// The pod's directory under the root dir (volumes, termination message files).
    fn root_pod_dir(&self) -> PathBuf {
        self.cfg().root_dir.join("pods").join(&self.uid)
    }

    fn log_file(&self, name: &str, restart: u32) -> PathBuf {
        self.cfg()
            .pod_log_dir(
                self.pod.metadata.namespace.as_deref().unwrap_or("default"),
                self.pod.metadata.name.as_deref().unwrap_or_default(),
                &self.uid,
            )
            .join(name)
            .join(format!("{restart}.log"))
    }

    /// A finished run with its termination message (read once, then remembered).
    fn with_message(&mut self, name: &str, mut r: RunRecord) -> RunRecord {
        if r.exit_code.is_none() {
            return r;
        }
        let key = (name.to_string(), r.restart);
        if let Some(m) = self.messages.get(&key) {
            r.termination_message = m.clone();
            return r;
        }
        let spec = self.pod.spec.clone().unwrap_or_default();
        let Some(c) = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
        else {
            return r;
        };
        // a run the runtime could not even start has no logs to fall back to
        let fallback = crate::termination::falls_back_to_logs(c)
            && r.exit_code != Some(0)
            && r.error.is_none();
        let file = crate::termination::container_path(c)
            .map(|_| crate::termination::host_file(&self.root_pod_dir(), name, r.restart));
        let m =
            crate::termination::message(file.as_deref(), fallback, &self.log_file(name, r.restart));
        self.messages.insert(key, m.clone());
        r.termination_message = m;
        r
    }

    fn read_ips(&self) -> Vec<IpAddr> {
        std::fs::read_to_string(self.dir.join("ips"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    async fn make_sandbox(&mut self) -> Result<()> {
        let cfg = self.shared.cfg.clone();
        let spec = self.pod.spec.clone().unwrap_or_default();
        let host_network = spec.host_network == Some(true);
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let resolv = sandbox::resolv_conf(
            spec.dns_policy.as_deref().unwrap_or("ClusterFirst"),
            host_network,
            cfg.cluster_dns,
            &cfg.cluster_domain,
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
            &host_resolv,
        );
        let hostname = spec
            .hostname
            .clone()
            .or_else(|| self.pod.metadata.name.clone())
            .unwrap_or_default();
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("create", &self.dir, e))?;
        // a sandbox half made by an earlier agent is removed first
        let shared = self.shared.clone();
        let paths = self.sandbox.clone();
        let uid = self.uid.clone();
        let host_ips = vec![cfg.node_ip];
        let host_ports = crate::network::host_ports(&spec);
        let pod_ref = sandbox::PodRef {
            uid: uid.clone(),
            namespace: self.pod.metadata.namespace.clone().unwrap_or_default(),
            name: self.pod.metadata.name.clone().unwrap_or_default(),
            host_ports: host_ports.clone(),
        };
        let ips = Self::blocking(move || {
            sandbox::remove(&paths, shared.network.as_ref(), &uid)?;
            let network = sandbox::ForPod {
                network: shared.network.as_ref(),
                pod: &pod_ref,
            };
            let ips = sandbox::create(&paths, &hostname, &network, &uid, &resolv, &host_ips)?;
            if paths.netns.is_some() {
                shared.network.host_ports(&uid, &host_ports)?;
            }
            Ok(ips)
        })
        .await?;
        let ip_text: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
        let ips_file = self.dir.join("ips");
        std::fs::write(&ips_file, ip_text.join(" "))
            .map_err(|e| Error::io("write", &ips_file, e))?;
        self.ips = ips;
        if !shim::alive(&self.dir) {
            shim::spawn(
                &cfg.shim_exe,
                &self.dir,
                &cfg.runtime_root(),
                &cfg.cgroup_root,
            )
            .await?;
        }
        tracing::info!(ips = ?self.ips, "pod sandbox ready");
        Ok(())
    }

    async fn env_sources(&self) -> Result<EnvSources> {
        let ns = self
            .pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let client = self.shared.client.clone();
        let mut src = EnvSources::default();
        let spec = self.pod.spec.clone().unwrap_or_default();
        let mut cms = Vec::new();
        let mut secrets = Vec::new();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            for f in c.env_from.iter().flatten() {
                cms.extend(f.config_map_ref.as_ref().map(|r| r.name.clone()));
                secrets.extend(f.secret_ref.as_ref().map(|r| r.name.clone()));
            }
            for e in c.env.iter().flatten() {
                if let Some(v) = &e.value_from {
                    cms.extend(v.config_map_key_ref.as_ref().map(|r| r.name.clone()));
                    secrets.extend(v.secret_key_ref.as_ref().map(|r| r.name.clone()));
                }
            }
        }
        for v in spec.volumes.iter().flatten() {
            cms.extend(v.config_map.as_ref().map(|c| c.name.clone()));
            secrets.extend(v.secret.as_ref().and_then(|s| s.secret_name.clone()));
            for s in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
                cms.extend(s.config_map.as_ref().map(|c| c.name.clone()));
                secrets.extend(s.secret.as_ref().map(|c| c.name.clone()));
            }
        }
        let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        for name in cms {
            if let Some(cm) = cm_api
                .get_opt(&name)
                .await
                .map_err(|e| Error::api("get configmap", e))?
            {
                let mut data = cm.data.unwrap_or_default();
                for (k, v) in cm.binary_data.unwrap_or_default() {
                    data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                src.config_maps.insert(name, data);
            }
        }
        let s_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        for name in secrets {
            if let Some(s) = s_api
                .get_opt(&name)
                .await
                .map_err(|e| Error::api("get secret", e))?
            {
                let mut data: BTreeMap<String, String> = s.string_data.unwrap_or_default();
                for (k, v) in s.data.unwrap_or_default() {
                    data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                src.secrets.insert(name, data);
            }
        }
        if spec.enable_service_links != Some(false) {
            let svc: Api<Service> = Api::namespaced(client, &ns);
            src.services = svc
                .list(&ListParams::default())
                .await
                .map_err(|e| Error::api("list services", e))?
                .items;
        }
        Ok(src)
    }

    /// Starts run `restart` of container `c` unless an earlier failure asks to wait; returns
    /// the container's view.
    async fn try_start(
        &mut self,
        c: &Container,
        restart: u32,
        last: Option<RunRecord>,
    ) -> ContainerView {
        let mut view = ContainerView {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            restart_count: last.as_ref().map(|r| r.restart as i32).unwrap_or(0),
            probed_ready: None,
            started: false,
            view: View::Waiting("ContainerCreating".into(), String::new()),
            last: last.clone(),
        };
        if let Some(at) = self.retry_at.get(&c.name)
            && Instant::now() < *at
        {
            if let Some((reason, msg)) = self.waiting.get(&c.name) {
                let reason = if reason == "ErrImagePull" {
                    "ImagePullBackOff".to_string()
                } else {
                    reason.clone()
                };
                view.view = View::Waiting(reason, msg.clone());
            }
            return view;
        }
        match self.start(c, restart).await {
            Ok(rec) => {
                self.waiting.remove(&c.name);
                self.retry_at.remove(&c.name);
                view.restart_count = restart as i32;
                view.started = c.startup_probe.is_none();
                view.view = View::Running(rec);
            }
            Err((reason, message)) => {
                tracing::warn!(container = %c.name, %reason, %message, "cannot start container");
                if reason == "StartError" || reason == POST_START_HOOK_ERROR {
                    // the shim recorded the failed run; the restart policy takes it from here
                    if let Ok(Some(r)) = shim::record(&self.dir, &c.name, restart) {
                        view.restart_count = restart as i32;
                        view.last = self.previous(&c.name, restart);
                        view.view = View::Terminated(self.with_message(&c.name, r));
                        return view;
                    }
                }
                self.waiting
                    .insert(c.name.clone(), (reason.clone(), message.clone()));
                self.retry_at
                    .insert(c.name.clone(), Instant::now() + status::BACKOFF_INITIAL);
                view.view = View::Waiting(reason, message);
            }
        }
        view
    }

    async fn start(
        &mut self,
        c: &Container,
        restart: u32,
    ) -> std::result::Result<RunRecord, (String, String)> {
        let image = c.image.clone().unwrap_or_default();
        let policy = c
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| images::default_policy(&image).to_string());
        let auths = self.pull_secrets().await;
        let ready = Images::ensure(self.shared.images.clone(), image.clone(), policy, auths)
            .await
            .map_err(|e| (e.reason.to_string(), e.message))?;
        let cfg_err = |e: &dyn std::error::Error| {
            (
                "CreateContainerConfigError".to_string(),
                shim::error_chain(e),
            )
        };
        let src = self.env_sources().await.map_err(|e| cfg_err(&e))?;
        let facts = container::PodFacts {
            pod_ips: self.ips.clone(),
            host_ip: Some(self.cfg().node_ip),
        };
        let env = container::container_env(&self.pod, c, &src, &facts).map_err(|e| cfg_err(&e))?;
        let vol_dir = self.cfg().pod_volume_dir(&self.uid);
        let vols = crate::volumes::prepare(&self.pod, &vol_dir, &src).map_err(|e| cfg_err(&e))?;
        let mut mounts = crate::volumes::mounts(&self.pod, c, &vols).map_err(|e| cfg_err(&e))?;
        if let Some(path) = crate::termination::container_path(c) {
            // a fresh, empty message file per run, as the kubelet's
            let file = crate::termination::host_file(&self.root_pod_dir(), &c.name, restart);
            crate::termination::create(&file).map_err(|e| cfg_err(&e))?;
            mounts.push(crate::container::BindMount {
                source: file,
                destination: path.into(),
                read_only: false,
            });
        }
        let id = container_id(&self.uid, &c.name);
        let cgroup = qos::pod_cgroup(&self.cfg().cgroup_prefix, self.qos(), &self.uid).join(&id);
        // the previous run's container and writable layer go; a restart starts fresh. On a
        // blocking thread: deleting waits for processes and mounting takes the snapshots'
        // file lock, and a tokio worker must never wait on either.
        let rt = self.runtime();
        let (images, cid, chain) = (self.shared.images.clone(), id.clone(), ready.chain.clone());
        let rootfs = tokio::task::spawn_blocking(move || {
            if let Ok(old) = rt.load(&cid) {
                old.delete(true).map_err(|e| cfg_err(&e))?;
            }
            let _ = images.snaps.unmount(&cid);
            images
                .snaps
                .mount(&cid, &chain)
                .map_err(|e| ("CreateContainerError".to_string(), shim::error_chain(&e)))
        })
        .await
        .map_err(|e| ("CreateContainerError".to_string(), e.to_string()))??;
        let inputs = SpecInputs {
            sandbox: &self.sandbox,
            env,
            cgroup,
            mounts,
        };
        let mut spec = container::spec(&self.pod, c, &ready.config, &rootfs, &inputs)
            .map_err(|e| cfg_err(&e))?;
        if crate::privileged::is_privileged(c) {
            let mask = crate::privileged::current_bounding_set().unwrap_or(u64::MAX);
            let caps = crate::privileged::capabilities_from_mask(mask);
            let devices = crate::privileged::host_devices(std::path::Path::new("/dev"));
            crate::privileged::apply(&mut spec, &caps, devices).map_err(|e| cfg_err(&e))?;
        }
        // the pod cgroup's own limits, before its containers join it
        let pod_cgroup = qos::pod_cgroup(&self.cfg().cgroup_prefix, self.qos(), &self.uid);
        crate::podcgroup::apply(
            &self.cfg().cgroup_root,
            &pod_cgroup,
            &crate::podcgroup::pod_resources(&self.pod),
        )
        .map_err(|e| ("RunContainerError".to_string(), shim::error_chain(&e)))?;
        let bundle = self.dir.join("bundles").join(&c.name);
        std::fs::create_dir_all(&bundle).map_err(|e| cfg_err(&e))?;
        spec.save(bundle.join("config.json"))
            .map_err(|e| cfg_err(&e))?;
        let log = self.log_file(&c.name, restart);
        let req = Request::Start(StartRequest {
            id,
            name: c.name.clone(),
            restart,
            bundle,
            log,
            image: image.clone(),
            image_id: ready.image_id.clone(),
            log_policy: self.cfg().log_policy,
            stdin: c.stdin.unwrap_or(false),
            stdin_once: c.stdin_once.unwrap_or(false),
            tty: c.tty.unwrap_or(false),
        });
        let dir = self.dir.clone();
        let resp =
            tokio::task::spawn_blocking(move || shim::call(&dir, &req, Duration::from_secs(60)))
                .await
                .map_err(|e| ("RunContainerError".to_string(), e.to_string()))?
                .map_err(|e| ("RunContainerError".to_string(), shim::error_chain(&e)))?;
        match resp {
            Response::Started { .. } => {
                let rec = shim::record(&self.dir, &c.name, restart)
                    .ok()
                    .flatten()
                    .ok_or_else(|| {
                        (
                            "RunContainerError".to_string(),
                            "the shim kept no record".to_string(),
                        )
                    })?;
                tracing::info!(container = %c.name, restart, pid = rec.pid, "container started");
                if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
                    self.post_start(c, h, restart).await?;
                }
                Ok(rec)
            }
            Response::Error { message } => Err(("StartError".into(), message)),
            Response::Ok => Err(("RunContainerError".into(), "unexpected shim answer".into())),
        }
    }

    /// Runs the postStart hook of the container just started; on failure the container is
    /// killed (`FailedPostStartHook`) and its run ends, as the kubelet does.
    async fn post_start(
        &self,
        c: &Container,
        h: &k8s_openapi::api::core::v1::LifecycleHandler,
        restart: u32,
    ) -> std::result::Result<(), (String, String)> {
        // the kubelet gives postStart no timeout of its own; a hook that hangs holds the
        // container in ContainerCreating until the pod's grace period would run out twice
        let budget = Duration::from_secs(self.grace_seconds().max(30) * 2);
        let Err(msg) = self.run_hook(c, h, budget).await else {
            return Ok(());
        };
        self.hook_failed(c, "FailedPostStartHook", &msg).await;
        self.event(
            Some(&c.name),
            events::Kind::Normal,
            "Killing",
            "FailedPostStartHook",
        )
        .await;
        let id = container_id(&self.uid, &c.name);
        if let Ok(mut ctr) = self.runtime().load(&id)
            && let Err(e) = ctr.kill(Signal::SIGKILL as i32, true)
        {
            tracing::warn!(container = %id, error = %e, "cannot kill the container");
        }
        // the shim records the exit; the run then shows as terminated
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && shim::record(&self.dir, &c.name, restart)
                .ok()
                .flatten()
                .is_some_and(|r| r.exit_code.is_none())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err((POST_START_HOOK_ERROR.into(), msg))
    }

    /// Runs one lifecycle handler for container `c` within `budget`; `Err` carries the
    /// kubelet's event message.
    async fn run_hook(
        &self,
        c: &Container,
        h: &k8s_openapi::api::core::v1::LifecycleHandler,
        budget: Duration,
    ) -> std::result::Result<(), String> {
        let pod = self.pod.metadata.name.as_deref().unwrap_or_default();
        let ns = self.pod.metadata.namespace.as_deref().unwrap_or("default");
        match lifecycle::action(h, budget).map_err(|e| e.to_string())? {
            lifecycle::Action::Exec(cmd) => match self.exec_in(&c.name, &cmd, budget).await {
                Ok(o) if o.success() => Ok(()),
                Ok(o) => {
                    let out = String::from_utf8_lossy(&o.output).into_owned();
                    let error = match o.exit_code {
                        Some(code) => {
                            format!("command '{}' exited with {code}: {out}", cmd.join(" "))
                        }
                        None => o.describe(&cmd),
                    };
                    Err(lifecycle::exec_failure(
                        &cmd, &c.name, pod, ns, &self.uid, &error, &out,
                    ))
                }
                Err(e) => Err(lifecycle::exec_failure(
                    &cmd,
                    &c.name,
                    pod,
                    ns,
                    &self.uid,
                    &shim::error_chain(&e),
                    "",
                )),
            },
            lifecycle::Action::HttpGet(p) => {
                let (ok, what) = self.run_probe(c, &p, &named_ports(c)).await;
                if ok {
                    Ok(())
                } else {
                    Err(lifecycle::http_failure(&c.name, pod, ns, &self.uid, &what))
                }
            }
            lifecycle::Action::Sleep(d) => {
                tokio::time::sleep(d.min(budget)).await;
                Ok(())
            }
        }
    }

    /// Runs the preStop hooks of the running containers (together) within `grace`;
    /// returns the grace left for the stop signal.
    async fn pre_stop(&self, running: &[(String, String)], grace: Duration) -> Duration {
        let started = Instant::now();
        // sidecars are init containers: their hooks are looked up there too
        let containers: Vec<Container> = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
            .cloned()
            .collect();
        let hooks: Vec<_> = running
            .iter()
            .filter_map(|(_, n)| containers.iter().find(|c| &c.name == n))
            .filter_map(|c| {
                c.lifecycle
                    .as_ref()
                    .and_then(|l| l.pre_stop.clone())
                    .map(|h| (c.clone(), h))
            })
            .collect();
        if hooks.is_empty() {
            return grace;
        }
        let runs = hooks.iter().map(|(c, h)| async move {
            let result = match tokio::time::timeout(grace, self.run_hook(c, h, grace)).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "PreStopHook failed: the hook of container {:?} ran over the grace period",
                    c.name
                )),
            };
            if let Err(msg) = result {
                self.hook_failed(c, "FailedPreStopHook", &msg).await;
            }
        });
        futures::future::join_all(runs).await;
        lifecycle::grace_after_prestop(grace, started.elapsed())
    }

    /// Logs a failed hook and records its Warning event (`reason`).
    async fn hook_failed(&self, c: &Container, reason: &str, msg: &str) {
        tracing::info!(container = %c.name, %reason, message = %msg, "lifecycle hook failed");
        self.event(Some(&c.name), events::Kind::Warning, reason, msg)
            .await;
    }

    fn grace_seconds(&self) -> u64 {
        self.pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0) as u64
    }

    async fn send_status(&mut self, init: &[ContainerView], views: &[ContainerView]) -> Result<()> {
        let facts = status::PodFacts {
            sandbox_ready: sandbox::exists(&self.sandbox),
            pod_ips: self.ips.iter().map(|i| i.to_string()).collect(),
            host_ip: self.cfg().node_ip.to_string(),
            start_time: Some(self.start_time.clone()),
            qos_class: self.qos().as_str().into(),
        };
        let mut st = status::pod_status(
            &self.pod,
            init,
            views,
            &facts,
            &Time(k8s_openapi::jiff::Timestamp::now()),
        );
        crate::termination::limit_pod_messages(&self.pod, &mut st);
        if let Some(e) = &self.evicted {
            crate::eviction::evicted_status(&mut st, &e.message, self.pod.status.as_ref());
        }
        let seen = k8s_openapi::jiff::Timestamp::now().duration_since(self.start_time.0);
        crate::metrics::global().observe_pod(&self.pod, &st, seen.try_into().unwrap_or_default());
        let current = self.pod.status.clone().unwrap_or_default();
        if !status::differs(&st, &current) {
            self.sent = Some(st);
            return Ok(());
        }
        if self.sent.as_ref().is_some_and(|s| !status::differs(s, &st)) {
            return Ok(()); // sent already; the watch has not caught up yet
        }
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({"status": st});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::api("patch pod status", e))?;
        tracing::debug!(phase = ?st.phase, "pod status sent");
        self.sent = Some(st);
        Ok(())
    }

    fn running_ids(&self) -> Vec<(String, String)> {
        let mut names: Vec<String> = self.containers().into_iter().map(|c| c.name).collect();
        // containers of the records (a pod gone from the API has no spec to go by)
        if let Ok(entries) = std::fs::read_dir(self.dir.join("containers")) {
            for e in entries.flatten() {
                if let Ok(n) = e.file_name().into_string()
                    && !names.contains(&n)
                {
                    names.push(n);
                }
            }
        }
        names
            .into_iter()
            .filter(|n| {
                shim::latest_record(&self.dir, n)
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.exit_code.is_none())
            })
            .map(|n| (container_id(&self.uid, &n), n))
            .collect()
    }

    /// Stops every running container within `grace`: the app and regular init containers
    /// together first, then the sidecars one by one in reverse order with what is left of
    /// the grace period, as the kubelet does.
    async fn stop_all(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let sidecars = self.running_sidecars();
        let others: Vec<(String, String)> = self
            .running_ids()
            .into_iter()
            .filter(|r| !sidecars.contains(r))
            .collect();
        self.stop_containers(&others, grace).await;
        let left = deadline.saturating_duration_since(Instant::now());
        self.stop_in_reverse(&sidecars, left).await;
    }

    /// The running sidecars `(id, name)`, in the pod's order.
    fn running_sidecars(&self) -> Vec<(String, String)> {
        let running = self.running_ids();
        self.pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .filter(|c| is_sidecar(c))
            .filter_map(|c| running.iter().find(|(_, n)| *n == c.name).cloned())
            .collect()
    }

    /// Stops `containers` one at a time from the last, sharing `grace`.
    async fn stop_in_reverse(&self, containers: &[(String, String)], grace: Duration) {
        let deadline = Instant::now() + grace;
        for one in containers.iter().rev() {
            let left = deadline.saturating_duration_since(Instant::now());
            self.stop_containers(std::slice::from_ref(one), left).await;
        }
    }

    /// Whether every app container finished for good (restartPolicy Never, or OnFailure
    /// and exit 0); never under Always.
    fn apps_done(&self, policy: &str) -> bool {
        let apps = self.containers();
        policy != "Always"
            && !apps.is_empty()
            && apps.iter().all(|c| {
                matches!(shim::latest_record(&self.dir, &c.name),
                    Ok(Some(r)) if r.exit_code.is_some_and(|code| !status::should_restart(policy, code)))
            })
    }

    /// Whether run `restart` of `c` is past its startup probe (or has none).
    fn startup_done(&self, c: &Container, restart: u32) -> bool {
        c.startup_probe.is_none()
            || self
                .probes
                .get(&(c.name.clone(), restart, "startup"))
                .is_some_and(|s| s.result == Some(true))
    }

    /// Stops the given `(id, name)` containers: their preStop hooks, SIGTERM, up to `grace`
    /// (less the hooks' time) for them to exit, then SIGKILL and wait.
    async fn stop_containers(&self, running: &[(String, String)], grace: Duration) {
        let rt = self.runtime();
        if running.is_empty() {
            return;
        }
        // as containerd for the kubelet: the stop signal (the image's, else SIGTERM) goes
        // to each container's init, which passes it on to its children as it sees fit;
        // SIGKILL goes to every process
        let signal = |sig: Option<i32>| {
            for (id, _) in running {
                if let Ok(mut c) = rt.load(id) {
                    let (sig, all) = match sig {
                        Some(sig) => (sig, true),
                        None => (stop_signal(&c), false),
                    };
                    if let Err(e) = c.kill(sig, all) {
                        tracing::debug!(container = %id, error = %e, "cannot signal container");
                    }
                }
            }
        };
        let all_exited = |names: &[(String, String)]| {
            names.iter().all(|(_, n)| {
                shim::latest_record(&self.dir, n)
                    .ok()
                    .flatten()
                    .is_none_or(|r| r.exit_code.is_some())
            })
        };
        if !grace.is_zero() {
            let grace = self.pre_stop(running, grace).await;
            signal(None);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && !all_exited(running) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if !all_exited(running) {
            signal(Some(Signal::SIGKILL as i32));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && !all_exited(running) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Graceful deletion: stop containers within the grace period, remove everything, then
    /// finish the API deletion with grace 0 (uid precondition).
    async fn terminate(&mut self) -> Result<()> {
        if self.state != WorkerState::Terminating {
            self.transition(WorkerState::Terminating)?;
        }
        let grace = self.grace_seconds();
        tracing::info!(grace, "stopping pod");
        self.stop_all(Duration::from_secs(grace)).await;
        self.transition(WorkerState::Terminated)?;
        self.remove().await?;
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api
            .delete(self.pod.metadata.name.as_deref().unwrap_or_default(), &dp)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(Error::api("delete pod", e)),
        }
        self.transition(WorkerState::Removed)?;
        crate::eviction::shared(&self.cfg().node_name).forget(&self.uid);
        tracing::info!("pod removed");
        Ok(())
    }

    /// Removes containers, writable layers, the shim, the sandbox, cgroups, volumes, logs
    /// and the pod's run dir.
    async fn remove(&self) -> Result<()> {
        crate::metrics::global().forget_pod(&self.uid);
        let shared = self.shared.clone();
        let uid = self.uid.clone();
        let sandbox = self.sandbox.clone();
        let dir = self.dir.clone();
        let mut names: Vec<String> = self.containers().into_iter().map(|c| c.name).collect();
        if let Ok(entries) = std::fs::read_dir(dir.join("containers")) {
            names.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok()),
            );
        }
        names.sort();
        names.dedup();
        let rt = self.runtime();
        Self::blocking(move || cleanup(&shared, &rt, &uid, &names, Some(&sandbox))).await
    }
}

/// Waiting reason of a container whose postStart hook failed (the kubelet's).
const POST_START_HOOK_ERROR: &str = "PostStartHookError";

/// The container's named ports.
fn named_ports(c: &Container) -> Vec<(String, i32)> {
    c.ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone().map(|n| (n, p.container_port)))
        .collect()
}

/// The signal that asks container `c` to stop: its image's `StopSignal` (recorded in its
/// runtime config), else SIGTERM.
fn stop_signal(c: &skiff_runtime::Container) -> i32 {
    let Some(s) = c.state().annotations.get(skiff_rootfs::spec::STOP_SIGNAL) else {
        return Signal::SIGTERM as i32;
    };
    skiff_runtime::signal::parse(s).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the image's stop signal is unknown: sending SIGTERM");
        Signal::SIGTERM as i32
    })
}

/// The grace period of a container killed by a failed probe: the probe's
/// `terminationGracePeriodSeconds`, else the pod's, else 30 s (the kubelet's rule; a pending
/// deletion's shorter grace does not apply here).
pub fn probe_kill_grace(pod: &Pod, probe: Option<&k8s_openapi::api::core::v1::Probe>) -> Duration {
    let secs = probe
        .and_then(|p| p.termination_grace_period_seconds)
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0);
    Duration::from_secs(secs as u64)
}

/// "Liveness", "Readiness" or "Startup", as the kubelet's probe events name them.
fn probe_title(kind: &str) -> &'static str {
    match kind {
        "liveness" => "Liveness",
        "startup" => "Startup",
        _ => "Readiness",
    }
}

/// A container that has not run yet and waits for `reason`.
fn waiting(c: &Container, reason: &str) -> ContainerView {
    ContainerView {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        view: View::Waiting(reason.into(), String::new()),
        last: None,
        restart_count: 0,
        probed_ready: None,
        started: false,
    }
}

/// An init container with `restartPolicy: Always` (a sidecar, Kubernetes 1.29+).
fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.to_utc())
}

fn run_time(r: &RunRecord) -> Duration {
    match (
        parse_time(&r.started_at),
        r.finished_at.as_deref().and_then(parse_time),
    ) {
        (Some(a), Some(b)) => (b - a).to_std().unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

fn since_exit(r: &RunRecord) -> Duration {
    r.finished_at
        .as_deref()
        .and_then(parse_time)
        .and_then(|t| (chrono::Utc::now() - t).to_std().ok())
        .unwrap_or_default()
}

/// Removes everything a pod held on this node. Used for deleted pods and for leftovers of
/// pods the API no longer knows (`sandbox` is then derived from the paths).
pub fn cleanup(
    shared: &Shared,
    rt: &Runtime,
    uid: &str,
    names: &[String],
    sandbox: Option<&SandboxPaths>,
) -> Result<()> {
    let cfg = &shared.cfg;
    let dir = cfg.pod_run_dir(uid);
    for n in names {
        let id = container_id(uid, n);
        if let Ok(c) = rt.load(&id) {
            c.delete(true)
                .map_err(|source| Error::runtime(id.clone(), source))?;
        }
        shared.images.snaps.unmount(&id).map_err(|e| Error::Image {
            image: id.clone(),
            message: shim::error_chain(&e),
        })?;
    }
    if shim::alive(&dir) {
        let _ = shim::call(&dir, &Request::Shutdown, Duration::from_secs(5));
    }
    let netns = cfg.run_dir.join("netns").join(uid);
    let host_network = !netns.exists();
    let fallback = SandboxPaths::new(&cfg.run_dir, &dir, uid, host_network);
    sandbox::remove(sandbox.unwrap_or(&fallback), shared.network.as_ref(), uid)?;
    if host_network {
        // the namespace is gone (a reboot) or never was: the address is released all the same
        shared.network.detach(&netns, uid)?;
    }
    for q in [
        QosClass::Guaranteed,
        QosClass::Burstable,
        QosClass::BestEffort,
    ] {
        let path = qos::pod_cgroup(&cfg.cgroup_prefix, q, uid);
        qos::remove_cgroup(&cfg.cgroup_root, &path)
            .map_err(|e| Error::io("remove cgroup", &path, e))?;
    }
    let vol = cfg.root_dir.join("pods").join(uid);
    crate::memvolume::unmount_all(&vol)?;
    remove_dir(&vol)?;
    if let Ok(entries) = std::fs::read_dir(&cfg.log_dir) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .ends_with(&format!("_{uid}"))
            {
                remove_dir(&e.path())?;
            }
        }
    }
    remove_dir(&dir)
}

fn remove_dir(p: &std::path::Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", p, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_kill_grace_prefers_the_probe() {
        let pod = |grace: Option<i64>| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "deletionGracePeriodSeconds": 1},
                "spec": {"containers": [], "terminationGracePeriodSeconds": grace}
            }))
            .unwrap()
        };
        let probe = |grace: Option<i64>| k8s_openapi::api::core::v1::Probe {
            termination_grace_period_seconds: grace,
            ..Default::default()
        };
        let secs = |d: Duration| d.as_secs();
        assert_eq!(secs(probe_kill_grace(&pod(None), None)), 30);
        assert_eq!(secs(probe_kill_grace(&pod(Some(5)), None)), 5);
        assert_eq!(secs(probe_kill_grace(&pod(Some(5)), Some(&probe(None)))), 5);
        assert_eq!(
            secs(probe_kill_grace(&pod(Some(5)), Some(&probe(Some(2))))),
            2
        );
        assert_eq!(
            secs(probe_kill_grace(&pod(None), Some(&probe(Some(-1))))),
            0
        );
    }

    #[test]
    fn legal_steps() {
        use WorkerState::*;
        let all = [
            New,
            SandboxReady,
            Running,
            Evicted,
            Terminating,
            Terminated,
            Removed,
        ];
        let legal = [
            (New, SandboxReady),
            (New, Running),
            (New, Terminating),
            (SandboxReady, Running),
            (SandboxReady, Terminating),
            (Running, Terminating),
            (New, Evicted),
            (SandboxReady, Evicted),
            (Running, Evicted),
            (Evicted, Terminating),
            (Terminating, Terminated),
            (Terminated, Removed),
        ];
        for a in all {
            for b in all {
                assert_eq!(
                    a.can_transition(b),
                    legal.contains(&(a, b)),
                    "{a:?} -> {b:?}"
                );
            }
        }
    }
}

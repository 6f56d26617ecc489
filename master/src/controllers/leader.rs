//! Leader election over a coordination.k8s.io/v1 Lease (`kube-system/skiff-controller-manager`),
//! as client-go's `leaderelection` does it for kube-controller-manager: a candidate takes a
//! Lease nobody renewed for `lease_duration` (measured on its own clock from when it last saw
//! the Lease change, never from the timestamps in it), the leader renews it every
//! `retry_period`, and a leader that cannot renew within `renew_deadline` stops its
//! controllers at once. Every write is an update with the resourceVersion just read
//! (compare-and-swap), so two candidates never both win.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Context, ControllerError, Settings};

/// Namespace of the controller-manager's Lease.
pub const LEASE_NAMESPACE: &str = "kube-system";
/// Name of the controller-manager's Lease.
pub const LEASE_NAME: &str = "skiff-controller-manager";

/// Timings and names of one election (client-go's `LeaderElectionConfig`).
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate (`holderIdentity`).
    pub identity: String,
    /// How long a Lease nobody renews stays with its holder (15 s).
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading (10 s).
    pub renew_deadline: Duration,
    /// Between two tries to acquire or renew (2 s).
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// kube-controller-manager's defaults (15 s / 10 s / 2 s) scaled to the settings' lease
    /// duration, for the settings' identity.
    pub fn from_settings(settings: &Settings) -> ElectionConfig {
        let lease = settings.lease_duration;
        ElectionConfig {
            namespace: LEASE_NAMESPACE.into(),
            name: LEASE_NAME.into(),
            identity: settings.identity.clone(),
            lease_duration: lease,
            renew_deadline: lease * 2 / 3,
            retry_period: lease * 2 / 15,
        }
    }

    /// Checks what client-go checks: lease duration > renew deadline > retry period × 1.2.
    pub fn validate(&self) -> Result<(), ControllerError> {
        if self.lease_duration <= self.renew_deadline {
            return Err(ControllerError::Settings(
                "leader election lease duration must be greater than the renew deadline".into(),
            ));
        }
        if self.renew_deadline.as_secs_f64() <= 1.2 * self.retry_period.as_secs_f64() {
            return Err(ControllerError::Settings(
                "leader election renew deadline must be greater than 1.2 × the retry period".into(),
            ));
        }
        if self.identity.is_empty() {
            return Err(ControllerError::Settings(
                "leader election identity is empty".into(),
            ));
        }
        Ok(())
    }
}

/// The Lease as this candidate last saw it change, and when (client-go's `observedRecord`
/// and `observedTime`).
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The Lease spec.
    pub spec: LeaseSpec,
    /// When it was first seen like this, on this candidate's clock.
    pub at: Instant,
}

/// What a candidate does with the Lease it just read.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// There is no Lease: create it, holding it.
    Create(LeaseSpec),
    /// Write this spec with the resourceVersion just read: renew our own Lease, or take one
    /// that expired or was released.
    Update(LeaseSpec),
    /// Another candidate holds a valid Lease.
    Follow,
}

/// Updates what was observed with the Lease just read: a Lease that changed in any way is
/// observed anew, now.
pub fn observe(observed: Option<Observed>, current: &LeaseSpec, now: Instant) -> Observed {
    match observed {
        Some(o) if o.spec == *current => o,
        _ => Observed {
            spec: current.clone(),
            at: now,
        },
    }
}

/// client-go's `tryAcquireOrRenew` as a pure function of the Lease read (`current`, already
/// passed through [`observe`] into `observed`), this candidate, and the time.
pub fn decide(
    current: Option<&LeaseSpec>,
    observed: Option<&Observed>,
    config: &ElectionConfig,
    now: Instant,
    wall: Timestamp,
) -> Decision {
    let seconds = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let mine = LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(seconds),
        acquire_time: Some(MicroTime(wall)),
        renew_time: Some(MicroTime(wall)),
        lease_transitions: Some(0),
        ..LeaseSpec::default()
    };
    let Some(current) = current else {
        return Decision::Create(mine);
    };
    let holder = current.holder_identity.as_deref().unwrap_or_default();
    let leading = holder == config.identity;
    let valid = observed.is_some_and(|o| o.at + config.lease_duration > now);
    if !holder.is_empty() && valid && !leading {
        return Decision::Follow;
    }
    let transitions = current.lease_transitions.unwrap_or(0);
    Decision::Update(if leading {
        LeaseSpec {
            acquire_time: current.acquire_time.clone(),
            lease_transitions: Some(transitions),
            ..mine
        }
    } else {
        LeaseSpec {
            lease_transitions: Some(transitions.saturating_add(1)),
            ..mine
        }
    })
}

/// One candidate: reads the Lease, decides, writes with compare-and-swap.
pub struct Elector {
    api: Api<Lease>,
    config: ElectionConfig,
    observed: Option<Observed>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("config", &self.config)
            .field("observed", &self.observed)
            .finish_non_exhaustive()
    }
}

impl Elector {
    /// A candidate for `config`'s Lease.
    pub fn new(client: kube::Client, config: ElectionConfig) -> Elector {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    /// Whether the Lease as last seen names this candidate.
    pub fn is_leader(&self) -> bool {
        self.observed.as_ref().is_some_and(|o| {
            o.spec.holder_identity.as_deref() == Some(self.config.identity.as_str())
        })
    }

    /// One try: true when this candidate holds the Lease afterwards. A conflict (another
    /// candidate wrote first) is a plain `false`.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, ControllerError> {
        let now = Instant::now();
        let wall = Timestamp::now();
        let lease = self.api.get_opt(&self.config.name).await?;
        let current = lease.as_ref().and_then(|l| l.spec.clone());
        if let Some(spec) = &current {
            self.observed = Some(observe(self.observed.take(), spec, now));
        }
        let written = match decide(
            current.as_ref(),
            self.observed.as_ref(),
            &self.config,
            now,
            wall,
        ) {
            Decision::Follow => return Ok(false),
            Decision::Create(spec) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Decision::Update(spec) => {
                let mut lease = lease.unwrap_or_default();
                lease.spec = Some(spec);
                // the resourceVersion read above travels along: a compare-and-swap
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(lease) => {
                let spec = lease.spec.unwrap_or_default();
                self.observed = Some(Observed { spec, at: now });
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Tries every retry period until the Lease is held.
    async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, lease = %self.config.name, "cannot acquire the leader lease")
                }
            }
            tokio::time::sleep(jittered(self.config.retry_period)).await;
        }
    }

    /// Renews, retrying every retry period until the renew deadline: false when the
    /// leadership is lost.
    async fn renew(&mut self) -> bool {
        let deadline = self.config.renew_deadline;
        let retry = self.config.retry_period;
        tokio::time::timeout(deadline, async {
            loop {
                match self.try_acquire_or_renew().await {
                    Ok(true) => return true,
                    // another candidate holds it now
                    Ok(false) if !self.is_leader() => return false,
                    // a conflict with our own last write: read again
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "cannot renew the leader lease"),
                }
                tokio::time::sleep(retry).await;
            }
        })
        .await
        .unwrap_or(false)
    }
}

/// `period` stretched by up to 1.2 × itself (client-go's `JitterUntil` factor), so candidates
/// that started together do not keep colliding.
fn jittered(period: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    period.mul_f64(1.0 + 1.2 * f64::from(nanos % 1000) / 1000.0)
}

/// Aborts the work when dropped, so losing the lease or being cancelled stops it at once.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), ControllerError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `work` while this candidate holds the Lease, forever: acquire, start `work`, renew
/// every retry period; when a renewal fails past the renew deadline, abort `work` at once
/// and stand by again. Work that ends on its own is not restarted within the same term (the
/// Lease is still held, as client-go does when `OnStartedLeading` returns).
pub async fn run_while_leader<F, Fut>(client: kube::Client, config: ElectionConfig, work: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), ControllerError>> + Send + 'static,
{
    let mut elector = Elector::new(client, config.clone());
    loop {
        elector.acquire().await;
        info!(identity = %config.identity, lease = %config.name, "became leader");
        let mut task = Some(AbortOnDrop(tokio::spawn(work())));
        loop {
            let running = task.as_mut().map(|t| &mut t.0);
            tokio::select! {
                _ = tokio::time::sleep(config.retry_period) => {}
                Some(done) = async move {
                    match running {
                        Some(h) => Some(h.await),
                        None => None,
                    }
                } => {
                    match done {
                        Ok(Ok(())) => info!("leader work ended"),
                        Ok(Err(e)) => warn!(error = %e, "leader work failed"),
                        Err(e) => warn!(error = %e, "leader work panicked"),
                    }
                    task = None;
                    continue;
                }
            }
            if !elector.renew().await {
                break;
            }
        }
        drop(task);
        warn!(identity = %config.identity, lease = %config.name, "lost the leader lease; controllers stopped");
    }
}

/// Runs the scheduler and controllers (`controllers::run`) only while this master holds the
/// controller-manager Lease.
pub async fn run_elected(ctx: Context, config: ElectionConfig) -> Result<(), ControllerError> {
    config.validate()?;
    run_while_leader(ctx.client.clone(), config, move || super::run(ctx.clone())).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(me: &str) -> ElectionConfig {
        ElectionConfig {
            namespace: "kube-system".into(),
            name: "l".into(),
            identity: me.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn held(by: &str, acquired: i64, renewed: i64, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(by.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(ts(acquired))),
            renew_time: Some(MicroTime(ts(renewed))),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// (name, Lease read, observed since (offset from t0), now (offset), expected)
    type Case = (
        &'static str,
        Option<LeaseSpec>,
        Option<Duration>,
        Duration,
        Decision,
    );

    #[test]
    fn decisions() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let other = held("b", 0, 100, 3);
        let released = LeaseSpec {
            holder_identity: None,
            ..held("b", 0, 100, 3)
        };
        let cases: Vec<Case> = vec![
            (
                "no lease: create it holding it",
                None,
                None,
                s(0),
                Decision::Create(held("a", 200, 200, 0)),
            ),
            (
                "another holder seen just now: follow",
                Some(other.clone()),
                Some(s(0)),
                s(0),
                Decision::Follow,
            ),
            (
                "another holder, unchanged for less than the lease duration: follow",
                Some(other.clone()),
                Some(s(0)),
                s(14),
                Decision::Follow,
            ),
            (
                "another holder, unchanged for the lease duration: take it over",
                Some(other.clone()),
                Some(s(0)),
                s(15),
                Decision::Update(held("a", 200, 200, 4)),
            ),
            (
                "a released lease is taken at once",
                Some(released),
                Some(s(0)),
                s(0),
                Decision::Update(held("a", 200, 200, 4)),
            ),
            (
                "our own lease: renew, keeping acquireTime and transitions",
                Some(held("a", 50, 190, 2)),
                Some(s(0)),
                s(30),
                Decision::Update(held("a", 50, 200, 2)),
            ),
        ];
        for (name, current, seen, now, want) in cases {
            let observed = current.as_ref().zip(seen).map(|(c, at)| Observed {
                spec: c.clone(),
                at: t0 + at,
            });
            let got = decide(
                current.as_ref(),
                observed.as_ref(),
                &config("a"),
                t0 + now,
                ts(200),
            );
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn observation_restarts_when_the_lease_changes() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        let first = observe(None, &held("b", 0, 100, 0), t0);
        assert_eq!(first.at, t0);
        // unchanged: still observed since t0
        assert_eq!(
            observe(Some(first.clone()), &held("b", 0, 100, 0), later).at,
            t0
        );
        // renewed: observed anew
        let renewed = observe(Some(first), &held("b", 0, 102, 0), later);
        assert_eq!(renewed.at, later);
        // so a holder that keeps renewing is followed even long after it was first seen
        let d = decide(
            Some(&held("b", 0, 102, 0)),
            Some(&renewed),
            &config("a"),
            later + Duration::from_secs(14),
            ts(300),
        );
        assert_eq!(d, Decision::Follow);
    }

    #[test]
    fn config_checks_and_defaults() {
        let c = ElectionConfig::from_settings(&Settings::default());
        assert_eq!(
            (c.lease_duration, c.renew_deadline, c.retry_period),
            (
                Duration::from_secs(15),
                Duration::from_secs(10),
                Duration::from_secs(2)
            )
        );
        assert_eq!(
            (c.namespace.as_str(), c.name.as_str()),
            (LEASE_NAMESPACE, LEASE_NAME)
        );
        assert!(c.validate().is_ok());
        let bad = [
            ElectionConfig {
                renew_deadline: Duration::from_secs(15),
                ..config("a")
            },
            ElectionConfig {
                retry_period: Duration::from_secs(9),
                ..config("a")
            },
            config(""),
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn jitter_stays_within_client_go_bounds() {
        let p = Duration::from_secs(2);
        for _ in 0..100 {
            let j = jittered(p);
            assert!(j >= p && j <= p.mul_f64(2.2), "{j:?}");
        }
    }
}

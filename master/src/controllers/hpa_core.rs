//! The pure core of the HorizontalPodAutoscaler, after upstream's `replica_calculator.go` and
//! `horizontal.go`: the replica count a Resource metric asks for (Utilization against the
//! pods' requests, or AverageValue), with unready and missing pods handled as upstream does,
//! then the behavior (stabilization windows, scaling policies) and min/max clamping.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How far from 1 the usage ratio must be before anything changes.
pub const TOLERANCE: f64 = 0.1;
/// Upstream's `--horizontal-pod-autoscaler-cpu-initialization-period`.
pub const CPU_INITIALIZATION_PERIOD: Duration = Duration::from_secs(300);
/// Upstream's `--horizontal-pod-autoscaler-initial-readiness-delay`.
pub const INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);

/// What the calculation knows of one pod selected by the target.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// The pod's name.
    pub name: String,
    /// Phase Pending.
    pub pending: bool,
    /// Being deleted or phase Failed: left out entirely.
    pub ignored: bool,
    /// The Ready condition is True.
    pub ready: bool,
    /// When the Ready condition last changed.
    pub ready_transition: Option<DateTime<Utc>>,
    /// `status.startTime`.
    pub start_time: Option<DateTime<Utc>>,
    /// The sum of the containers' requests of the resource; `None` if any container has
    /// none (the container's name for the message).
    pub request: Result<f64, String>,
}

/// A pod's usage from the metrics API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodUsage {
    /// The usage (cores or bytes).
    pub value: f64,
    /// When it was measured.
    pub timestamp: DateTime<Utc>,
    /// Over which window.
    pub window: Duration,
}

/// What the metric targets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// A percentage of the pods' requests.
    Utilization(i32),
    /// An average value per pod (cores or bytes).
    AverageValue(f64),
}

/// The result of the calculation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recommendation {
    /// Replicas the metric asks for.
    pub replicas: i32,
    /// Current average utilization (percent of requests), for Utilization targets.
    pub utilization: Option<i32>,
    /// Current average value per pod.
    pub average: f64,
}

/// Why no recommendation could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    /// No pod has metrics.
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
    /// No pods are selected.
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    /// A container has no request for the resource.
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest {
        /// The resource.
        resource: String,
        /// The container.
        container: String,
        /// The pod.
        pod: String,
    },
}

/// Upstream's `groupPods`: (ready with metrics, unready, missing, ignored) pod indices.
fn group(
    pods: &[PodInfo],
    usage: &dyn Fn(&str) -> Option<PodUsage>,
    cpu: bool,
    now: DateTime<Utc>,
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let (mut ready, mut unready, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for (i, p) in pods.iter().enumerate() {
        if p.ignored {
            continue;
        }
        if p.pending {
            unready.push(i);
            continue;
        }
        let Some(m) = usage(&p.name) else {
            missing.push(i);
            continue;
        };
        if cpu {
            let not_ready = match (p.start_time, p.ready_transition) {
                (None, _) | (_, None) => true,
                (Some(start), Some(transition)) => {
                    let init =
                        chrono::Duration::from_std(CPU_INITIALIZATION_PERIOD).unwrap_or_default();
                    if start + init > now {
                        // still initializing: unready, or ready but measured before
                        !p.ready
                            || m.timestamp
                                < transition
                                    + chrono::Duration::from_std(m.window).unwrap_or_default()
                    } else {
                        let delay =
                            chrono::Duration::from_std(INITIAL_READINESS_DELAY).unwrap_or_default();
                        !p.ready && transition < start + delay
                    }
                }
            };
            if not_ready {
                unready.push(i);
                continue;
            }
        }
        ready.push(i);
    }
    (ready, unready, missing)
}

fn ratio(target: Target, usage_sum: f64, request_sum: f64, n: usize) -> (f64, Option<i32>, f64) {
    let average = usage_sum / n.max(1) as f64;
    match target {
        Target::Utilization(t) => {
            let util = (usage_sum * 100.0 / request_sum) as i32;
            (f64::from(util) / f64::from(t), Some(util), average)
        }
        Target::AverageValue(v) => (average / v, None, average),
    }
}

/// The replicas a Resource metric asks for (upstream's `GetResourceReplicas` and
/// `GetRawResourceReplicas`).
pub fn resource_replicas(
    current: i32,
    target: Target,
    resource: &str,
    pods: &[PodInfo],
    usage: &dyn Fn(&str) -> Option<PodUsage>,
    now: DateTime<Utc>,
) -> Result<Recommendation, CalcError> {
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let (ready, unready, missing) = group(pods, usage, resource == "cpu", now);
    if ready.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let request = |i: usize| -> Result<f64, CalcError> {
        pods[i]
            .request
            .clone()
            .map_err(|container| CalcError::MissingRequest {
                resource: resource.to_string(),
                container,
                pod: pods[i].name.clone(),
            })
    };
    let needs_requests = matches!(target, Target::Utilization(_));
    let mut usage_sum = 0.0;
    let mut request_sum = 0.0;
    for &i in &ready {
        usage_sum += usage(&pods[i].name).map_or(0.0, |u| u.value);
        if needs_requests {
            request_sum += request(i)?;
        }
    }
    let (usage_ratio, utilization, average) = ratio(target, usage_sum, request_sum, ready.len());
    let rec = |replicas| Recommendation {
        replicas,
        utilization,
        average,
    };
    let scale_up_with_unready = !unready.is_empty() && usage_ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - usage_ratio).abs() <= TOLERANCE {
            return Ok(rec(current));
        }
        return Ok(rec((usage_ratio * ready.len() as f64).ceil() as i32));
    }
    // missing pods: at their request (or the target) when scaling down, at 0 when up
    let mut n = ready.len();
    for &i in &missing {
        if usage_ratio < 1.0 {
            usage_sum += match target {
                Target::Utilization(_) => request(i)?,
                Target::AverageValue(v) => v,
            };
        }
        if needs_requests {
            request_sum += request(i)?;
        }
        n += 1;
    }
    if scale_up_with_unready {
        for &i in &unready {
            if needs_requests {
                request_sum += request(i)?;
            }
            n += 1;
        }
    }
    let (new_ratio, _, _) = ratio(target, usage_sum, request_sum, n);
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (usage_ratio < 1.0 && new_ratio > 1.0)
        || (usage_ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(rec(current));
    }
    let replicas = (new_ratio * n as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(rec(current));
    }
    Ok(rec(replicas))
}

/// A scaling policy: at most `value` pods or percent per `period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// A number of pods.
    Pods {
        /// How many.
        value: i32,
        /// Per how long.
        period: Duration,
    },
    /// A percentage of the replicas at the start of the period.
    Percent {
        /// How many percent.
        value: i32,
        /// Per how long.
        period: Duration,
    },
}

/// How the policies of a direction combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The policy allowing the most change.
    Max,
    /// The one allowing the least.
    Min,
    /// No change in this direction.
    Disabled,
}

/// One direction's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Stabilization window.
    pub window: Duration,
    /// Policies.
    pub policies: Vec<Policy>,
    /// How they combine.
    pub select: Select,
}

/// `spec.behavior`, defaulted.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    /// Scaling up.
    pub up: Rules,
    /// Scaling down.
    pub down: Rules,
}

impl Default for Behavior {
    /// Kubernetes' defaults: up at once by the larger of 100 % or 4 pods per 15 s; down after a
    /// 300 s stabilization window by up to 100 % per 15 s.
    fn default() -> Behavior {
        let p = Duration::from_secs(15);
        Behavior {
            up: Rules {
                window: Duration::ZERO,
                policies: vec![
                    Policy::Percent {
                        value: 100,
                        period: p,
                    },
                    Policy::Pods {
                        value: 4,
                        period: p,
                    },
                ],
                select: Select::Max,
            },
            down: Rules {
                window: Duration::from_secs(300),
                policies: vec![Policy::Percent {
                    value: 100,
                    period: p,
                }],
                select: Select::Max,
            },
        }
    }
}

/// A past recommendation or scaling event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    /// When.
    pub time: DateTime<Utc>,
    /// Replicas recommended, or (for scale events) the change made.
    pub replicas: i32,
}

/// Why the final count is what it is (the ScalingLimited condition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Within range.
    DesiredWithinRange,
    /// Raised to minReplicas.
    TooFewReplicas,
    /// Lowered to maxReplicas.
    TooManyReplicas,
    /// Held by a scale-up policy.
    ScaleUpLimit,
    /// Held by a scale-down policy.
    ScaleDownLimit,
}

impl Limit {
    /// The condition's reason.
    pub fn reason(self) -> &'static str {
        match self {
            Limit::DesiredWithinRange => "DesiredWithinRange",
            Limit::TooFewReplicas => "TooFewReplicas",
            Limit::TooManyReplicas => "TooManyReplicas",
            Limit::ScaleUpLimit => "ScaleUpLimit",
            Limit::ScaleDownLimit => "ScaleDownLimit",
        }
    }
    /// The condition's message.
    pub fn message(self) -> &'static str {
        match self {
            Limit::DesiredWithinRange => "the desired count is within the acceptable range",
            Limit::TooFewReplicas => {
                "the desired replica count is less than the minimum replica count"
            }
            Limit::TooManyReplicas => {
                "the desired replica count is more than the maximum replica count"
            }
            Limit::ScaleUpLimit => {
                "the desired replica count is increasing faster than the maximum scale rate"
            }
            Limit::ScaleDownLimit => {
                "the desired replica count is decreasing faster than the maximum scale rate"
            }
        }
    }
}

fn within(now: DateTime<Utc>, t: DateTime<Utc>, d: Duration) -> bool {
    chrono::Duration::from_std(d).is_ok_and(|d| t > now - d)
}

/// Upstream's `stabilizeRecommendationWithBehaviors`: the recommendation after the windows
/// (`history` holds earlier recommendations; the new one is added by the caller).
pub fn stabilize(
    current: i32,
    recommended: i32,
    behavior: &Behavior,
    history: &[Event],
    now: DateTime<Utc>,
) -> i32 {
    let mut up = recommended;
    let mut down = recommended;
    for e in history {
        if within(now, e.time, behavior.up.window) {
            up = up.min(e.replicas);
        }
        if within(now, e.time, behavior.down.window) {
            down = down.max(e.replicas);
        }
    }
    // up: the lowest of the window (never below current); down: the highest (never above)
    let mut r = current;
    if r < up {
        r = up;
    }
    if r > down {
        r = down;
    }
    r
}

fn changed_in(events: &[Event], period: Duration, now: DateTime<Utc>) -> i32 {
    events
        .iter()
        .filter(|e| within(now, e.time, period))
        .map(|e| e.replicas)
        .sum()
}

/// Upstream's `convertDesiredReplicasWithBehaviorRate` plus min/max: the final count and why.
/// `ups` and `downs` are past scale events (replicas added / removed).
#[allow(clippy::too_many_arguments)]
pub fn limit(
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    behavior: &Behavior,
    ups: &[Event],
    downs: &[Event],
    now: DateTime<Utc>,
) -> (i32, Limit) {
    if desired > current {
        let cap = match behavior.up.select {
            Select::Disabled => current,
            sel => {
                let limits = behavior.up.policies.iter().map(|p| match *p {
                    Policy::Pods { value, period } => {
                        let start =
                            current - changed_in(ups, period, now) + changed_in(downs, period, now);
                        start + value
                    }
                    Policy::Percent { value, period } => {
                        let start =
                            current - changed_in(ups, period, now) + changed_in(downs, period, now);
                        (f64::from(start) * (1.0 + f64::from(value) / 100.0)).ceil() as i32
                    }
                });
                match sel {
                    Select::Min => limits.min().unwrap_or(current),
                    _ => limits.max().unwrap_or(current),
                }
            }
        };
        let (cap, cap_reason) = if cap > max {
            (max, Limit::TooManyReplicas)
        } else {
            (cap, Limit::ScaleUpLimit)
        };
        if desired > cap {
            return (cap.max(current), cap_reason);
        }
        return clamp(desired, min, max);
    }
    if desired < current {
        let floor = match behavior.down.select {
            Select::Disabled => current,
            sel => {
                let limits = behavior.down.policies.iter().map(|p| match *p {
                    Policy::Pods { value, period } => {
                        let start =
                            current + changed_in(downs, period, now) - changed_in(ups, period, now);
                        start - value
                    }
                    Policy::Percent { value, period } => {
                        let start =
                            current + changed_in(downs, period, now) - changed_in(ups, period, now);
                        (f64::from(start) * (1.0 - f64::from(value) / 100.0)).ceil() as i32
                    }
                });
                match sel {
                    Select::Min => limits.max().unwrap_or(current),
                    _ => limits.min().unwrap_or(current),
                }
            }
        };
        let (floor, floor_reason) = if floor < min {
            (min, Limit::TooFewReplicas)
        } else {
            (floor, Limit::ScaleDownLimit)
        };
        if desired < floor {
            return (floor.min(current), floor_reason);
        }
        return clamp(desired, min, max);
    }
    clamp(desired, min, max)
}

fn clamp(desired: i32, min: i32, max: i32) -> (i32, Limit) {
    if desired < min {
        (min, Limit::TooFewReplicas)
    } else if desired > max {
        (max, Limit::TooManyReplicas)
    } else {
        (desired, Limit::DesiredWithinRange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    /// A running, ready pod started long ago with `request` cores.
    fn pod(name: &str, request: f64) -> PodInfo {
        PodInfo {
            name: name.into(),
            pending: false,
            ignored: false,
            ready: true,
            ready_transition: Some(t(-3000)),
            start_time: Some(t(-3600)),
            request: Ok(request),
        }
    }

    fn usage_of<'a>(list: &'a [(&'a str, f64)]) -> impl Fn(&str) -> Option<PodUsage> + 'a {
        move |n| {
            list.iter().find(|(p, _)| *p == n).map(|&(_, v)| PodUsage {
                value: v,
                timestamp: t(0),
                window: Duration::from_secs(15),
            })
        }
    }

    struct Case {
        name: &'static str,
        current: i32,
        target: Target,
        pods: Vec<PodInfo>,
        usage: Vec<(&'static str, f64)>,
        want: Result<(i32, Option<i32>), CalcError>,
    }

    #[test]
    fn replica_calculation_as_upstream() {
        let mut unready = pod("c", 1.0);
        unready.ready = false;
        unready.start_time = Some(t(-60));
        unready.ready_transition = Some(t(-60));
        let mut pending = pod("c", 1.0);
        pending.pending = true;
        let mut deleted = pod("c", 1.0);
        deleted.ignored = true;
        let mut no_request = pod("b", 1.0);
        no_request.request = Err("app".into());
        let cases = vec![
            Case {
                name: "scale up",
                current: 3,
                target: Target::Utilization(30),
                pods: vec![pod("a", 1.0), pod("b", 1.0), pod("c", 1.0)],
                usage: vec![("a", 0.3), ("b", 0.5), ("c", 0.7)],
                want: Ok((5, Some(50))),
            },
            Case {
                name: "scale down",
                current: 5,
                target: Target::Utilization(50),
                pods: vec![
                    pod("a", 1.0),
                    pod("b", 1.0),
                    pod("c", 1.0),
                    pod("d", 1.0),
                    pod("e", 1.0),
                ],
                usage: vec![("a", 0.1), ("b", 0.1), ("c", 0.2), ("d", 0.1), ("e", 0.1)],
                want: Ok((2, Some(12))),
            },
            Case {
                name: "within tolerance",
                current: 3,
                target: Target::Utilization(100),
                pods: vec![pod("a", 1.0), pod("b", 1.0), pod("c", 1.0)],
                usage: vec![("a", 1.05), ("b", 1.0), ("c", 1.0)],
                want: Ok((3, Some(101))),
            },
            Case {
                name: "unready pod holds a scale up back at zero usage",
                current: 3,
                target: Target::Utilization(50),
                pods: vec![pod("a", 1.0), pod("b", 1.0), unready.clone()],
                usage: vec![("a", 0.6), ("b", 0.6), ("c", 0.9)],
                want: Ok((3, Some(60))),
            },
            Case {
                name: "unready pod counts at zero on a big scale up",
                current: 3,
                target: Target::Utilization(50),
                pods: vec![pod("a", 1.0), pod("b", 1.0), unready],
                usage: vec![("a", 1.0), ("b", 1.0)],
                want: Ok((4, Some(100))),
            },
            Case {
                name: "pending pod ignored when scaling down",
                current: 3,
                target: Target::Utilization(50),
                pods: vec![pod("a", 1.0), pod("b", 1.0), pending],
                usage: vec![("a", 0.1), ("b", 0.1)],
                want: Ok((1, Some(10))),
            },
            Case {
                name: "missing pod counted at its request when scaling down",
                current: 3,
                target: Target::Utilization(50),
                pods: vec![pod("a", 1.0), pod("b", 1.0), pod("c", 1.0)],
                usage: vec![("a", 0.2), ("b", 0.2)],
                want: Ok((3, Some(20))),
            },
            Case {
                name: "missing pod counted at zero when scaling up",
                current: 3,
                target: Target::Utilization(50),
                pods: vec![pod("a", 1.0), pod("b", 1.0), pod("c", 1.0)],
                usage: vec![("a", 1.0), ("b", 1.0)],
                want: Ok((4, Some(100))),
            },
            Case {
                name: "deleted pod left out",
                current: 2,
                target: Target::Utilization(50),
                pods: vec![pod("a", 1.0), pod("b", 1.0), deleted],
                usage: vec![("a", 1.0), ("b", 1.0), ("c", 0.0)],
                want: Ok((4, Some(100))),
            },
            Case {
                name: "average value",
                current: 2,
                target: Target::AverageValue(100.0 * 1024.0 * 1024.0),
                pods: vec![pod("a", 1.0), pod("b", 1.0)],
                usage: vec![
                    ("a", 250.0 * 1024.0 * 1024.0),
                    ("b", 150.0 * 1024.0 * 1024.0),
                ],
                want: Ok((4, None)),
            },
            Case {
                name: "missing request",
                current: 2,
                target: Target::Utilization(50),
                pods: vec![pod("a", 1.0), no_request],
                usage: vec![("a", 1.0), ("b", 1.0)],
                want: Err(CalcError::MissingRequest {
                    resource: "cpu".into(),
                    container: "app".into(),
                    pod: "b".into(),
                }),
            },
            Case {
                name: "no metrics",
                current: 2,
                target: Target::Utilization(50),
                pods: vec![pod("a", 1.0)],
                usage: vec![],
                want: Err(CalcError::NoMetrics),
            },
            Case {
                name: "no pods",
                current: 2,
                target: Target::Utilization(50),
                pods: vec![],
                usage: vec![],
                want: Err(CalcError::NoPods),
            },
        ];
        for c in cases {
            let u = usage_of(&c.usage);
            let got = resource_replicas(c.current, c.target, "cpu", &c.pods, &u, t(0))
                .map(|r| (r.replicas, r.utilization));
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn stabilization_windows() {
        let b = Behavior::default();
        let h = |v: &[(i64, i32)]| -> Vec<Event> {
            v.iter()
                .map(|&(s, r)| Event {
                    time: t(s),
                    replicas: r,
                })
                .collect()
        };
        let cases = [
            // (current, recommended, history, want)
            (3, 6, h(&[]), 6),
            // scale down held by a higher recommendation in the last 300 s
            (5, 2, h(&[(-100, 5), (-50, 4)]), 5),
            (5, 2, h(&[(-400, 5), (-50, 4)]), 4),
            (5, 2, h(&[(-400, 5), (-350, 4)]), 2),
            // scale up is not held (window 0)
            (2, 5, h(&[(-10, 2)]), 5),
        ];
        for (cur, rec, hist, want) in cases {
            assert_eq!(
                stabilize(cur, rec, &b, &hist, t(0)),
                want,
                "{cur} {rec} {hist:?}"
            );
        }
    }

    #[test]
    fn policies_and_bounds() {
        let b = Behavior::default();
        let ev = |s: i64, r: i32| Event {
            time: t(s),
            replicas: r,
        };
        let cases = [
            // (current, desired, min, max, ups, downs, want)
            (1, 10, 1, 20, vec![], vec![], (5, Limit::ScaleUpLimit)),
            (10, 40, 1, 50, vec![], vec![], (20, Limit::ScaleUpLimit)),
            (2, 3, 1, 10, vec![], vec![], (3, Limit::DesiredWithinRange)),
            (3, 12, 1, 5, vec![], vec![], (5, Limit::TooManyReplicas)),
            // 4 pods added 5 s ago: the period's budget counts from the earlier size
            (
                5,
                20,
                1,
                50,
                vec![ev(-5, 4)],
                vec![],
                (5, Limit::ScaleUpLimit),
            ),
            (
                5,
                20,
                1,
                50,
                vec![ev(-20, 4)],
                vec![],
                (10, Limit::ScaleUpLimit),
            ),
            (5, 0, 1, 10, vec![], vec![], (1, Limit::TooFewReplicas)),
            (5, 2, 1, 10, vec![], vec![], (2, Limit::DesiredWithinRange)),
            (2, 2, 3, 10, vec![], vec![], (3, Limit::TooFewReplicas)),
        ];
        for (cur, des, min, max, ups, downs, want) in cases {
            assert_eq!(
                limit(cur, des, min, max, &b, &ups, &downs, t(0)),
                want,
                "{cur}->{des} [{min},{max}] {ups:?}"
            );
        }
        let mut slow = Behavior::default();
        slow.down.policies = vec![Policy::Pods {
            value: 1,
            period: Duration::from_secs(60),
        }];
        assert_eq!(
            limit(5, 1, 1, 10, &slow, &[], &[], t(0)),
            (4, Limit::ScaleDownLimit)
        );
        slow.up.select = Select::Disabled;
        assert_eq!(
            limit(5, 9, 1, 10, &slow, &[], &[], t(0)),
            (5, Limit::ScaleUpLimit)
        );
    }
}

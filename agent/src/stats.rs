//! Resource usage of the node, its pods and their containers, read from cgroups and /proc as
//! the kubelet (cAdvisor) reads them, and served in the kubelet's two forms: the Summary API
//! (`GET /stats/summary`) and the resource metrics endpoint (`GET /metrics/resource`,
//! Prometheus text).
//!
//! - CPU: cumulative nanoseconds (v2 `cpu.stat` `usage_usec`, v1 `cpuacct.usage`; the node from
//!   `/proc/stat`). `usageNanoCores` is the rate between two samples at least a second apart;
//!   a sampler takes one every [`SAMPLE_PERIOD`] and each request another.
//! - Memory working set: usage minus inactive file pages (v2 `memory.current` and `memory.stat`
//!   `inactive_file`, v1 `memory.usage_in_bytes` and `total_inactive_file`; the node from the
//!   v1 root memory cgroup or else `/proc/meminfo`).
//!
//! The parsers are pure functions over the files' text; [`Reader`] takes the cgroup and proc
//! roots as parameters.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use crate::qos;
use crate::worker::container_id;

/// How often the sampler records every cgroup's counters.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(10);
/// Two samples closer than this give no CPU rate.
const MIN_WINDOW: Duration = Duration::from_secs(1);

/// Errors reading usage.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The pods bound to this node could not be listed.
    #[error("cannot list this node's pods")]
    Pods(#[source] kube::Error),
    /// A file did not hold what was expected.
    #[error("cannot parse {path}: no {field}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The field looked for.
        field: &'static str,
    },
}

// ---------------------------------------------------------------- pure parsers

/// CPU time in ns from a v2 `cpu.stat` (`usage_usec`).
pub fn cpu_v2(cpu_stat: &str) -> Option<u64> {
    keyed(cpu_stat, "usage_usec").map(|us| us.saturating_mul(1000))
}

/// CPU time in ns from a v1 `cpuacct.usage`.
pub fn cpu_v1(cpuacct_usage: &str) -> Option<u64> {
    cpuacct_usage.trim().parse().ok()
}

/// A `key value` line's value from a flat-keyed file (`memory.stat`, `cpu.stat`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then_some(())?;
        it.next()?.parse().ok()
    })
}

/// A single number file (`memory.current`, `memory.usage_in_bytes`).
pub fn number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The kubelet's working set: usage minus inactive file pages, never below zero.
pub fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

/// The node's CPU time in ns from `/proc/stat`'s `cpu` line (everything but idle and iowait;
/// guest time is already in user), with `hz` clock ticks a second.
pub fn node_cpu(proc_stat: &str, hz: u64) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| v.get(i))
        .sum();
    (v.len() >= 4 && hz > 0).then(|| busy.saturating_mul(1_000_000_000 / hz))
}

/// The node's memory (usage, working set) in bytes from `/proc/meminfo`: usage is total
/// minus free, the working set that minus `Inactive(file)`.
pub fn node_memory(meminfo: &str) -> Option<(u64, u64)> {
    let kb = |key: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let usage = kb("MemTotal")?.saturating_sub(kb("MemFree")?) * 1024;
    Some((usage, working_set(usage, kb("Inactive(file)")? * 1024)))
}

// ---------------------------------------------------------------- reading

/// Counters of one cgroup (or the node) at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Cumulative CPU time in ns.
    pub cpu_ns: u64,
    /// Memory usage in bytes.
    pub memory_usage: u64,
    /// Memory working set in bytes.
    pub working_set: u64,
}

/// Reads samples from a cgroup root and a proc root.
#[derive(Debug, Clone)]
pub struct Reader {
    cgroup_root: PathBuf,
    proc_root: PathBuf,
}

fn read(path: PathBuf) -> Result<(String, PathBuf), StatsError> {
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok((t, path)),
        Err(source) => Err(StatsError::Read { path, source }),
    }
}

fn parsed<T>(
    (text, path): (String, PathBuf),
    field: &'static str,
    f: impl Fn(&str) -> Option<T>,
) -> Result<T, StatsError> {
    f(&text).ok_or(StatsError::Parse { path, field })
}

impl Reader {
    /// A reader of `cgroup_root` (`/sys/fs/cgroup`) and `proc_root` (`/proc`).
    pub fn new(cgroup_root: impl Into<PathBuf>, proc_root: impl Into<PathBuf>) -> Reader {
        Reader {
            cgroup_root: cgroup_root.into(),
            proc_root: proc_root.into(),
        }
    }

    fn v2(&self) -> bool {
        self.cgroup_root.join("cgroup.controllers").exists()
    }

    /// The counters of the cgroup at `path` (relative to each hierarchy's root).
    pub fn cgroup(&self, path: &Path) -> Result<Sample, StatsError> {
        let rel = path.strip_prefix("/").unwrap_or(path);
        if self.v2() {
            let dir = self.cgroup_root.join(rel);
            let cpu_ns = parsed(read(dir.join("cpu.stat"))?, "usage_usec", cpu_v2)?;
            let usage = parsed(read(dir.join("memory.current"))?, "number", number)?;
            let inactive = parsed(read(dir.join("memory.stat"))?, "inactive_file", |t| {
                keyed(t, "inactive_file")
            })?;
            return Ok(Sample {
                cpu_ns,
                memory_usage: usage,
                working_set: working_set(usage, inactive),
            });
        }
        let cpuacct = ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"]
            .iter()
            .map(|h| self.cgroup_root.join(h))
            .find(|d| d.exists())
            .unwrap_or_else(|| self.cgroup_root.join("cpuacct"));
        let cpu_ns = parsed(
            read(cpuacct.join(rel).join("cpuacct.usage"))?,
            "number",
            cpu_v1,
        )?;
        let mem = self.cgroup_root.join("memory").join(rel);
        let usage = parsed(read(mem.join("memory.usage_in_bytes"))?, "number", number)?;
        let inactive = parsed(read(mem.join("memory.stat"))?, "total_inactive_file", |t| {
            keyed(t, "total_inactive_file")
        })?;
        Ok(Sample {
            cpu_ns,
            memory_usage: usage,
            working_set: working_set(usage, inactive),
        })
    }

    /// The node's counters: CPU from `/proc/stat`, memory from the v1 root memory cgroup or
    /// `/proc/meminfo`.
    pub fn node(&self) -> Result<Sample, StatsError> {
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(100);
        let cpu_ns = parsed(read(self.proc_root.join("stat"))?, "cpu line", |t| {
            node_cpu(t, hz)
        })?;
        let root_mem = self.cgroup_root.join("memory");
        if !self.v2() && root_mem.join("memory.usage_in_bytes").exists() {
            let usage = parsed(
                read(root_mem.join("memory.usage_in_bytes"))?,
                "number",
                number,
            )?;
            let inactive = parsed(
                read(root_mem.join("memory.stat"))?,
                "total_inactive_file",
                |t| keyed(t, "total_inactive_file"),
            )?;
            return Ok(Sample {
                cpu_ns,
                memory_usage: usage,
                working_set: working_set(usage, inactive),
            });
        }
        let (memory_usage, working_set) = parsed(
            read(self.proc_root.join("meminfo"))?,
            "MemTotal",
            node_memory,
        )?;
        Ok(Sample {
            cpu_ns,
            memory_usage,
            working_set,
        })
    }
}

// ---------------------------------------------------------------- the Summary API

/// CPU figures as the Summary API has them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When sampled (RFC 3339).
    pub time: String,
    /// The rate over the last window, in billionths of a core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    /// Cumulative CPU time in ns.
    pub usage_core_nano_seconds: u64,
}

/// Memory figures as the Summary API has them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// When sampled (RFC 3339).
    pub time: String,
    /// Usage in bytes.
    pub usage_bytes: u64,
    /// Working set in bytes.
    pub working_set_bytes: u64,
}

/// A container's figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// The container's name.
    pub name: String,
    /// When it started (RFC 3339).
    pub start_time: String,
    /// CPU.
    pub cpu: CpuStats,
    /// Memory.
    pub memory: MemoryStats,
}

/// The pod a `PodStats` is about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PodReference {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID.
    pub uid: String,
}

/// A pod's figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// The pod.
    pub pod_ref: PodReference,
    /// When it started (RFC 3339).
    pub start_time: String,
    /// Its running containers.
    pub containers: Vec<ContainerStats>,
    /// The pod cgroup's CPU.
    pub cpu: CpuStats,
    /// The pod cgroup's memory.
    pub memory: MemoryStats,
}

/// The node's figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// The node's name.
    pub node_name: String,
    /// When the agent started (RFC 3339).
    pub start_time: String,
    /// CPU.
    pub cpu: CpuStats,
    /// Memory.
    pub memory: MemoryStats,
}

/// The kubelet's `/stats/summary` document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// The node.
    pub node: NodeStats,
    /// Its pods.
    pub pods: Vec<PodStats>,
}

#[derive(Debug, Clone, Copy)]
struct Point {
    time: DateTime<Utc>,
    cpu_ns: u64,
}

/// The usage rate in nanocores between two points; `None` if less than [`MIN_WINDOW`] apart
/// or the counter went back (a new cgroup under the same path).
fn nano_cores(old: Point, new: Point) -> Option<u64> {
    let dt = (new.time - old.time).num_nanoseconds()?;
    if dt < MIN_WINDOW.as_nanos() as i64 || new.cpu_ns < old.cpu_ns {
        return None;
    }
    let used = (new.cpu_ns - old.cpu_ns) as u128;
    u64::try_from(used * 1_000_000_000 / dt as u128).ok()
}

/// The node's, pods' and containers' cgroups with their history of samples.
#[derive(Debug)]
pub struct Stats {
    reader: Reader,
    prefix: String,
    node_name: String,
    start: DateTime<Utc>,
    /// Per cgroup ("" for the node): the samples of the last [`SAMPLE_PERIOD`]s, oldest first.
    history: Mutex<HashMap<String, Vec<Point>>>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A live container of a pod: name, cgroup and start time.
struct Live {
    name: String,
    cgroup: PathBuf,
    started: String,
}

impl Stats {
    /// Stats over `reader` for the pods under the agent's cgroup `prefix`.
    pub fn new(reader: Reader, prefix: &str, node_name: &str) -> Stats {
        Stats {
            reader,
            prefix: prefix.to_string(),
            node_name: node_name.to_string(),
            start: Utc::now(),
            history: Mutex::new(HashMap::new()),
        }
    }

    /// Records `sample` for `key` and gives its CPU rate against the newest earlier sample at
    /// least [`MIN_WINDOW`] older. History older than two sample periods goes.
    fn record(&self, key: &str, now: DateTime<Utc>, cpu_ns: u64) -> Option<u64> {
        let Ok(mut h) = self.history.lock() else {
            return None;
        };
        let points = h.entry(key.to_string()).or_default();
        let new = Point { time: now, cpu_ns };
        let rate = points
            .iter()
            .rev()
            .find_map(|&old| nano_cores(old, new).map(|r| (old, r)))
            .map(|(_, r)| r);
        let keep = chrono::Duration::from_std(SAMPLE_PERIOD * 3).unwrap_or_default();
        points.retain(|p| now - p.time < keep);
        if points
            .last()
            .is_none_or(|p| now - p.time >= chrono::Duration::seconds(1))
        {
            points.push(new);
        }
        rate
    }

    fn forget_others(&self, live: &[String]) {
        if let Ok(mut h) = self.history.lock() {
            h.retain(|k, _| k.is_empty() || live.contains(k));
        }
    }

    fn figures(&self, key: &str, s: Sample, now: DateTime<Utc>) -> (CpuStats, MemoryStats) {
        let time = rfc3339(now);
        (
            CpuStats {
                time: time.clone(),
                usage_nano_cores: self.record(key, now, s.cpu_ns),
                usage_core_nano_seconds: s.cpu_ns,
            },
            MemoryStats {
                time,
                usage_bytes: s.memory_usage,
                working_set_bytes: s.working_set,
            },
        )
    }

    /// The summary of the node and of `pods` (those bound here; pods whose cgroup is gone are
    /// left out, so are containers not running).
    pub fn summary(&self, pods: &[Pod]) -> Result<Summary, StatsError> {
        let now = Utc::now();
        let (cpu, memory) = self.figures("", self.reader.node()?, now);
        let node = NodeStats {
            node_name: self.node_name.clone(),
            start_time: rfc3339(self.start),
            cpu,
            memory,
        };
        let mut out = Vec::new();
        let mut live_keys = Vec::new();
        for p in pods {
            let Some(uid) = p.metadata.uid.as_deref() else {
                continue;
            };
            let pod_cg = qos::pod_cgroup(&self.prefix, qos::qos_class(p), uid);
            let Ok(sample) = self.reader.cgroup(&pod_cg) else {
                continue;
            };
            let key = pod_cg.to_string_lossy().into_owned();
            let (cpu, memory) = self.figures(&key, sample, now);
            live_keys.push(key);
            let mut containers = Vec::new();
            for c in live_containers(p, &pod_cg) {
                let Ok(s) = self.reader.cgroup(&c.cgroup) else {
                    continue;
                };
                let key = c.cgroup.to_string_lossy().into_owned();
                let (cpu, memory) = self.figures(&key, s, now);
                live_keys.push(key);
                containers.push(ContainerStats {
                    name: c.name,
                    start_time: c.started,
                    cpu,
                    memory,
                });
            }
            let start_time = p
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.to_string())
                .unwrap_or_else(|| rfc3339(now));
            out.push(PodStats {
                pod_ref: PodReference {
                    name: p.metadata.name.clone().unwrap_or_default(),
                    namespace: p.metadata.namespace.clone().unwrap_or_default(),
                    uid: uid.to_string(),
                },
                start_time,
                containers,
                cpu,
                memory,
            });
        }
        self.forget_others(&live_keys);
        Ok(Summary { node, pods: out })
    }
}

/// The pods bound to this node, from the API server.
async fn node_pods(client: &kube::Client, node: &str) -> Result<Vec<Pod>, StatsError> {
    let api: kube::Api<Pod> = kube::Api::all(client.clone());
    let lp = kube::api::ListParams::default().fields(&format!("spec.nodeName={node}"));
    Ok(api.list(&lp).await.map_err(StatsError::Pods)?.items)
}

/// The summary of this node and the pods bound to it now.
pub async fn collect(stats: &Stats, client: &kube::Client) -> Result<Summary, StatsError> {
    let pods = node_pods(client, &stats.node_name).await?;
    stats.summary(&pods)
}

/// Samples every [`SAMPLE_PERIOD`] so that the first request already has CPU rates.
pub async fn sample_loop(stats: std::sync::Arc<Stats>, client: kube::Client) {
    let mut tick = tokio::time::interval(SAMPLE_PERIOD);
    loop {
        tick.tick().await;
        if let Err(e) = collect(&stats, &client).await {
            tracing::debug!(error = %e, "stats sample failed");
        }
    }
}

/// The running containers of a pod (from its status) with their cgroups.
fn live_containers(p: &Pod, pod_cg: &Path) -> Vec<Live> {
    let uid = p.metadata.uid.as_deref().unwrap_or_default();
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|cs| {
            let started = cs.state.as_ref()?.running.as_ref()?.started_at.as_ref()?;
            Some(Live {
                name: cs.name.clone(),
                cgroup: pod_cg.join(container_id(uid, &cs.name)),
                started: started.0.to_string(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------- /metrics/resource

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn millis(time: &str) -> i64 {
    DateTime::parse_from_rfc3339(time)
        .map(|t| t.timestamp_millis())
        .unwrap_or_default()
}

/// The kubelet's `/metrics/resource` text (Prometheus exposition format 0.0.4) for a summary.
pub fn resource_metrics(s: &Summary) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let header = |o: &mut String, name: &str, help: &str, kind: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    header(
        &mut o,
        "container_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        "counter",
    );
    for p in &s.pods {
        for c in &p.containers {
            let _ = writeln!(
                o,
                "container_cpu_usage_seconds_total{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                escape(&c.name),
                escape(&p.pod_ref.namespace),
                escape(&p.pod_ref.name),
                c.cpu.usage_core_nano_seconds as f64 / 1e9,
                millis(&c.cpu.time)
            );
        }
    }
    header(
        &mut o,
        "container_memory_working_set_bytes",
        "[STABLE] Current working set of the container in bytes",
        "gauge",
    );
    for p in &s.pods {
        for c in &p.containers {
            let _ = writeln!(
                o,
                "container_memory_working_set_bytes{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                escape(&c.name),
                escape(&p.pod_ref.namespace),
                escape(&p.pod_ref.name),
                c.memory.working_set_bytes,
                millis(&c.memory.time)
            );
        }
    }
    header(
        &mut o,
        "container_start_time_seconds",
        "[STABLE] Start time of the container since unix epoch in seconds",
        "gauge",
    );
    for p in &s.pods {
        for c in &p.containers {
            let _ = writeln!(
                o,
                "container_start_time_seconds{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                escape(&c.name),
                escape(&p.pod_ref.namespace),
                escape(&p.pod_ref.name),
                millis(&c.start_time) / 1000,
                millis(&c.cpu.time)
            );
        }
    }
    header(
        &mut o,
        "node_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        "counter",
    );
    let n = &s.node;
    let _ = writeln!(
        o,
        "node_cpu_usage_seconds_total {} {}",
        n.cpu.usage_core_nano_seconds as f64 / 1e9,
        millis(&n.cpu.time)
    );
    header(
        &mut o,
        "node_memory_working_set_bytes",
        "[STABLE] Current working set of the node in bytes",
        "gauge",
    );
    let _ = writeln!(
        o,
        "node_memory_working_set_bytes {} {}",
        n.memory.working_set_bytes,
        millis(&n.memory.time)
    );
    header(
        &mut o,
        "pod_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
    );
    for p in &s.pods {
        let _ = writeln!(
            o,
            "pod_cpu_usage_seconds_total{{namespace=\"{}\",pod=\"{}\"}} {} {}",
            escape(&p.pod_ref.namespace),
            escape(&p.pod_ref.name),
            p.cpu.usage_core_nano_seconds as f64 / 1e9,
            millis(&p.cpu.time)
        );
    }
    header(
        &mut o,
        "pod_memory_working_set_bytes",
        "[STABLE] Current working set of the pod in bytes",
        "gauge",
    );
    for p in &s.pods {
        let _ = writeln!(
            o,
            "pod_memory_working_set_bytes{{namespace=\"{}\",pod=\"{}\"}} {} {}",
            escape(&p.pod_ref.namespace),
            escape(&p.pod_ref.name),
            p.memory.working_set_bytes,
            millis(&p.memory.time)
        );
    }
    header(
        &mut o,
        "scrape_error",
        "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    o.push_str("scrape_error 0\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2_CPU: &str = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n";
    const V2_MEM: &str =
        "anon 1048576\nfile 2097152\nactive_file 1048576\ninactive_file 524288\nshmem 0\n";
    const V1_MEM: &str = "cache 8192\nrss 4096\ninactive_file 100\ntotal_cache 16384\ntotal_rss 8192\ntotal_inactive_file 12288\ntotal_active_file 4096\n";

    #[test]
    fn parsers_table() {
        assert_eq!(cpu_v2(V2_CPU), Some(1_234_567_000));
        assert_eq!(cpu_v2("user_usec 5\n"), None);
        assert_eq!(cpu_v1("987654321\n"), Some(987_654_321));
        assert_eq!(cpu_v1("x"), None);
        assert_eq!(keyed(V2_MEM, "inactive_file"), Some(524_288));
        // v1: the hierarchical total, not the cgroup's own
        assert_eq!(keyed(V1_MEM, "total_inactive_file"), Some(12_288));
        assert_eq!(keyed(V1_MEM, "inactive_file"), Some(100));
        assert_eq!(keyed(V1_MEM, "missing"), None);
        assert_eq!(number("4096\n"), Some(4096));
        let cases = [(100, 30, 70), (10, 30, 0), (0, 0, 0)];
        for (u, i, w) in cases {
            assert_eq!(working_set(u, i), w, "{u} {i}");
        }
    }

    #[test]
    fn node_parsers() {
        let stat = "cpu  100 20 30 5000 7 1 2 3 0 0\ncpu0 50 10 15 2500 3 0 1 1 0 0\nintr 1\n";
        // user+nice+system+irq+softirq+steal = 156 ticks at 100 Hz
        assert_eq!(node_cpu(stat, 100), Some(1_560_000_000));
        assert_eq!(node_cpu("intr 1\n", 100), None);
        let meminfo = "MemTotal:       8000 kB\nMemFree:        3000 kB\nMemAvailable:   5000 kB\nInactive(file):  1000 kB\n";
        assert_eq!(node_memory(meminfo), Some((5000 * 1024, 4000 * 1024)));
        assert_eq!(node_memory("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn rates() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let p = |s: i64, ns: u64| Point {
            time: t0 + chrono::Duration::milliseconds(s),
            cpu_ns: ns,
        };
        let cases = [
            (p(0, 0), p(10_000, 5_000_000_000), Some(500_000_000)),
            (p(0, 0), p(2_000, 4_000_000_000), Some(2_000_000_000)),
            (p(0, 0), p(500, 1_000), None),
            (p(0, 10), p(5_000, 5), None),
        ];
        for (a, b, want) in cases {
            assert_eq!(nano_cores(a, b), want, "{a:?} {b:?}");
        }
    }

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (n, t) in files {
            std::fs::write(dir.join(n), t).unwrap();
        }
    }

    #[test]
    fn reader_v1_and_v2_layouts() {
        let v1 = tempfile::tempdir().unwrap();
        write(
            &v1.path().join("cpuacct/p/podu"),
            &[("cpuacct.usage", "5000000000\n")],
        );
        write(
            &v1.path().join("memory/p/podu"),
            &[
                ("memory.usage_in_bytes", "65536\n"),
                ("memory.stat", V1_MEM),
            ],
        );
        let r = Reader::new(v1.path(), "/proc");
        assert_eq!(
            r.cgroup(Path::new("/p/podu")).unwrap(),
            Sample {
                cpu_ns: 5_000_000_000,
                memory_usage: 65536,
                working_set: 65536 - 12288
            }
        );
        assert!(matches!(
            r.cgroup(Path::new("/p/gone")),
            Err(StatsError::Read { .. })
        ));

        let v2 = tempfile::tempdir().unwrap();
        write(v2.path(), &[("cgroup.controllers", "cpu memory\n")]);
        write(
            &v2.path().join("p/podu"),
            &[
                ("cpu.stat", V2_CPU),
                ("memory.current", "1048576\n"),
                ("memory.stat", V2_MEM),
            ],
        );
        let proc = tempfile::tempdir().unwrap();
        write(
            proc.path(),
            &[
                ("stat", "cpu  1 0 1 10 0 0 0 0 0 0\n"),
                (
                    "meminfo",
                    "MemTotal: 10 kB\nMemFree: 4 kB\nInactive(file): 1 kB\n",
                ),
            ],
        );
        let r = Reader::new(v2.path(), proc.path());
        assert_eq!(
            r.cgroup(Path::new("/p/podu")).unwrap(),
            Sample {
                cpu_ns: 1_234_567_000,
                memory_usage: 1_048_576,
                working_set: 1_048_576 - 524_288
            }
        );
        let n = r.node().unwrap();
        assert_eq!((n.memory_usage, n.working_set), (6 * 1024, 5 * 1024));
        assert!(n.cpu_ns > 0);
        write(&v2.path().join("p/bad"), &[("cpu.stat", "nothing 1\n")]);
        assert!(matches!(
            r.cgroup(Path::new("/p/bad")),
            Err(StatsError::Parse {
                field: "usage_usec",
                ..
            })
        ));
    }

    #[test]
    fn summary_and_metrics_text() {
        let v2 = tempfile::tempdir().unwrap();
        write(v2.path(), &[("cgroup.controllers", "cpu memory\n")]);
        let files = [
            ("cpu.stat", V2_CPU),
            ("memory.current", "1048576\n"),
            ("memory.stat", V2_MEM),
        ];
        write(&v2.path().join("skiff/besteffort/podu1"), &files);
        write(&v2.path().join("skiff/besteffort/podu1/u1-web"), &files);
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "web", "image": "x"}]},
            "status": {"startTime": "2026-01-01T00:00:00Z", "containerStatuses": [{
                "name": "web", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}}}]}
        }))
        .unwrap();
        let gone: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gone", "namespace": "ns", "uid": "u2"}, "spec": {"containers": []}
        }))
        .unwrap();
        let stats = Stats::new(Reader::new(v2.path(), "/proc"), "skiff", "n1");
        let s = stats.summary(&[pod, gone]).unwrap();
        assert_eq!(s.node.node_name, "n1");
        assert_eq!(s.pods.len(), 1);
        let p = &s.pods[0];
        assert_eq!(p.pod_ref.uid, "u1");
        assert_eq!(p.containers.len(), 1);
        assert_eq!(p.containers[0].cpu.usage_core_nano_seconds, 1_234_567_000);
        assert_eq!(p.containers[0].memory.working_set_bytes, 524_288);
        // one sample: no rate yet
        assert_eq!(p.cpu.usage_nano_cores, None);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["pods"][0]["podRef"]["name"], "web-1");
        assert_eq!(
            json["pods"][0]["containers"][0]["memory"]["workingSetBytes"],
            524_288
        );
        let text = resource_metrics(&s);
        assert!(text.contains(
            "container_cpu_usage_seconds_total{container=\"web\",namespace=\"ns\",pod=\"web-1\"} 1.234567 "
        ));
        assert!(text.contains(
            "container_memory_working_set_bytes{container=\"web\",namespace=\"ns\",pod=\"web-1\"} 524288 "
        ));
        assert!(
            text.contains("pod_memory_working_set_bytes{namespace=\"ns\",pod=\"web-1\"} 524288 ")
        );
        assert!(text.contains("\nnode_cpu_usage_seconds_total "));
        assert!(text.ends_with("scrape_error 0\n"));
    }
}

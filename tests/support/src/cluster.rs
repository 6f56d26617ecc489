//! A multi-node skiff cluster on one machine, for the end-to-end tests.
//!
//! A "LAN" network namespace holds a bridge (`lan0`, the first address of the LAN subnet)
//! and runs `skiff master`; every node is its own network namespace joined to the bridge by
//! a veth (`eth0` in the node, the LAN's second address plus the node's number) and runs
//! `skiff agent --pod-network bridge` with the Service proxy and cluster DNS on, its own
//! root/run/log directories and the cgroup prefix `<test prefix>/<node>`. The test drives
//! the cluster from a thread that joined the LAN namespace ([`Netns::enter_thread`]): kubectl
//! against the master's LAN address, curl against node IPs.
//!
//! Dropping the [`Cluster`] (also on panic) kills the agents, their pods' shims and
//! processes, unmounts what is under the test's directories, removes the cgroups under the
//! prefix, kills the master and deletes every namespace. The host's own network, nftables
//! and cgroups outside the prefix are never touched.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::{Netns, run};
use crate::teardown::{remove_cgroups, remove_node_state};
use crate::wait::poll_until;

/// Where the cgroup hierarchies are mounted on this machine.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The LAN bridge's name in the LAN namespace.
const BRIDGE: &str = "lan0";
/// The master's API port on the LAN.
const API_PORT: u16 = 6443;

/// How the cluster is made.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The `skiff` binary.
    pub skiff: PathBuf,
    /// First three octets of the LAN's /24 (`10.77.0`): `.1` is the master, `.10+N` node N.
    pub lan: String,
    /// Extra `skiff master` flags (e.g. short node-monitor grace periods).
    pub master_args: Vec<String>,
    /// Extra `skiff agent` flags for every node (e.g. `--insecure-registry`).
    pub agent_args: Vec<String>,
}

/// A running cluster: LAN, master, nodes.
pub struct Cluster {
    cfg: ClusterConfig,
    /// The test's cgroup prefix (`skiff-e2e-<pid>`); nodes use `<prefix>/<node>`.
    prefix: String,
    /// Nodes in the order they joined (dropped before the master and the LAN).
    pub nodes: Vec<Agent>,
    master: Option<Child>,
    dir: tempfile::TempDir,
    lan: Netns,
    /// `--pod-network` of the nodes added from now on (default `bridge`).
    pod_network: String,
    /// Whether nodes added from now on are routed through the LAN namespace (each on its
    /// own /32) instead of bridged onto one L2 segment.
    routed: bool,
    /// The LAN's IPv6 /64 prefix (`fd00:77:`: `::1` the LAN namespace, `::10+N` node N),
    /// when nodes added from now on are dual-stack.
    lan6: Option<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("prefix", &self.prefix)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

/// One node: its namespace, directories and agent process.
pub struct Agent {
    /// Node name (`node1`, …).
    pub name: String,
    /// The node's LAN address.
    pub ip: String,
    /// The node's network namespace.
    pub ns: Netns,
    dir: tempfile::TempDir,
    prefix: String,
    args: Vec<String>,
    skiff: PathBuf,
    child: Option<Child>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.name)
            .field("ip", &self.ip)
            .finish()
    }
}

impl Cluster {
    /// Makes the LAN namespace and bridge and starts the master there (its node token, CA
    /// and kubeconfig are in [`Cluster::data_dir`]). `tag` makes names unique per test.
    pub fn start(cfg: ClusterConfig, tag: &str) -> Result<Cluster> {
        let id = format!("{}-{tag}", std::process::id());
        let lan = Netns::create(&format!("skiff-e2e-{id}-lan"))?;
        lan.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        lan.ip(&["addr", "add", &format!("{}.1/24", cfg.lan), "dev", BRIDGE])?;
        lan.ip(&["link", "set", BRIDGE, "up"])?;
        let mut c = Cluster {
            prefix: format!("skiff-e2e-{id}"),
            cfg,
            nodes: Vec::new(),
            master: None,
            dir: tempfile::Builder::new().prefix("skiff-e2e-").tempdir()?,
            lan,
            pod_network: "bridge".into(),
            routed: false,
            lan6: None,
        };
        std::fs::write(c.config_file(), "")?;
        c.start_master()?;
        Ok(c)
    }

    /// The LAN namespace (the test's thread joins it to run kubectl and curl).
    pub fn lan(&self) -> &Netns {
        &self.lan
    }

    /// The master's address on the LAN.
    pub fn master_ip(&self) -> String {
        format!("{}.1", self.cfg.lan)
    }

    /// `https://<master ip>:6443`.
    pub fn server(&self) -> String {
        format!("https://{}:{API_PORT}", self.master_ip())
    }

    /// The master's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("master")
    }

    /// The admin kubeconfig (its server is 127.0.0.1: use it with `--server`, see
    /// [`Cluster::kubectl_args`]).
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir().join("admin.kubeconfig")
    }

    /// The flags kubectl needs for this cluster.
    pub fn kubectl_args(&self) -> Vec<String> {
        vec![
            "--kubeconfig".into(),
            self.kubeconfig().display().to_string(),
            "--server".into(),
            self.server(),
        ]
    }

    /// An empty config file: the machine's /etc/skiff/config.yaml must not apply.
    fn config_file(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// The master's log so far.
    pub fn master_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("master.log")).unwrap_or_default()
    }

    /// Starts `skiff master` in the LAN namespace on the data dir (again after a kill) and
    /// waits until it answers.
    pub fn start_master(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("master.log"))?;
        let child = self
            .lan
            .command(&self.cfg.skiff)
            .arg("master")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen", &format!("{}:{API_PORT}", self.master_ip())])
            .arg("--config")
            .arg(self.config_file())
            .args(&self.cfg.master_args)
            .env("SKIFF_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start skiff master")?;
        self.master = Some(child);
        let token = self.data_dir().join("admin-token");
        poll_until(Duration::from_secs(60), "the master to answer", || {
            if let Some(Ok(Some(_))) = self.master.as_mut().map(|c| c.try_wait()) {
                return Some(false);
            }
            let ok = token.exists()
                && self
                    .lan
                    .command("curl")
                    .args(["-sfk", "-m", "2", "-H"])
                    .arg(format!(
                        "Authorization: Bearer {}",
                        std::fs::read_to_string(&token).unwrap_or_default().trim()
                    ))
                    .arg(format!("{}/readyz", self.server()))
                    .output()
                    .is_ok_and(|o| o.status.success());
            ok.then_some(true)
        })?
        .then_some(())
        .with_context(|| format!("skiff master exited:\n{}", self.master_log()))
    }

    /// SIGKILLs the master (as a crash would).
    pub fn kill_master(&mut self) {
        if let Some(mut c) = self.master.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Adds flags for the agents started from now on.
    pub fn add_agent_args(&mut self, args: &[&str]) {
        self.cfg
            .agent_args
            .extend(args.iter().map(|s| s.to_string()));
    }

    /// Sets the pod network of the nodes added from now on (`bridge`, `vxlan`, …) and
    /// whether they share one L2 segment (`routed_lan` false: the LAN bridge) or are
    /// routed through the LAN namespace, each node's address a /32 on its link, so that
    /// host-gw routes cannot work and pod traffic between nodes needs the overlay.
    pub fn set_pod_network(&mut self, kind: &str, routed_lan: bool) -> Result<()> {
        self.pod_network = kind.into();
        if routed_lan && !self.routed {
            run(self
                .lan
                .command("sh")
                .args(["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]))?;
        }
        self.routed = routed_lan;
        Ok(())
    }

    /// Makes the LAN dual-stack: the LAN namespace gets `<prefix>:1/64` and the nodes added
    /// from now on `<prefix>:<10+N>/64` beside their IPv4 address, and their agents
    /// `--node-ip IPV4,IPV6`. `prefix` is four groups without the trailing `::`
    /// (`fd00:77:0:0`). Only for bridged (not routed) nodes.
    pub fn set_ipv6_lan(&mut self, prefix: &str) -> Result<()> {
        self.lan.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{prefix}::1/64"),
            "dev",
            BRIDGE,
            "nodad",
        ])?;
        self.lan6 = Some(prefix.into());
        Ok(())
    }

    /// Adds node `node<N>` (N = number of nodes so far + 1): its namespace, its veth on the
    /// LAN (or routed, [`Cluster::set_pod_network`]), and its agent. Does not wait for Ready.
    pub fn add_node(&mut self) -> Result<&mut Agent> {
        let n = self.nodes.len() + 1;
        let name = format!("node{n}");
        let ip = format!("{}.{}", self.cfg.lan, 10 + n);
        let ns = Netns::create(&format!(
            "{}-{name}",
            self.lan.name().trim_end_matches("-lan")
        ))?;
        let lan_end = format!("v{name}");
        self.lan.ip(&[
            "link",
            "add",
            &lan_end,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])?;
        if self.routed {
            // a /32 each: the LAN namespace routes between the nodes (and answers ARP for
            // its own address on every link)
            self.lan.ip(&["link", "set", &lan_end, "up"])?;
            self.lan
                .ip(&["route", "add", &format!("{ip}/32"), "dev", &lan_end])?;
            ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
            ns.ip(&["route", "add", &self.master_ip(), "dev", "eth0"])?;
        } else {
            self.lan.ip(&["link", "set", &lan_end, "master", BRIDGE])?;
            self.lan.ip(&["link", "set", &lan_end, "up"])?;
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
        }
        ns.ip(&["route", "add", "default", "via", &self.master_ip()])?;
        let mut node_ips = ip.clone();
        if let Some(p6) = &self.lan6 {
            let ip6 = format!("{p6}::{}", 10 + n);
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{ip6}/64"),
                "dev",
                "eth0",
                "nodad",
            ])?;
            node_ips = format!("{ip},{ip6}");
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("skiff-e2e-{name}-"))
            .tempdir()?;
        let prefix = format!("{}/{name}", self.prefix);
        let p = |s: &str| dir.path().join(s).display().to_string();
        let mut args: Vec<String> = [
            "agent",
            "--config",
            &self.config_file().display().to_string(),
            "--server",
            &self.server(),
            "--token-file",
            &self.data_dir().join("node-token").display().to_string(),
            "--ca-file",
            &self.data_dir().join("ca.crt").display().to_string(),
            "--node-name",
            &name,
            "--node-ip",
            &node_ips,
            "--root-dir",
            &p("root"),
            "--run-dir",
            &p("run"),
            "--log-dir",
            &p("log"),
            "--cgroup-prefix",
            &prefix,
            "--pod-network",
            &self.pod_network,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // the host's disk is not the tests': its free space may be under the kubelet's
        // default imagefs.available<15%, which would evict and refuse every pod
        if !self
            .cfg
            .agent_args
            .iter()
            .any(|a| a.starts_with("--eviction-hard"))
        {
            args.push("--eviction-hard=memory.available<100Mi".into());
        }
        args.extend(self.cfg.agent_args.iter().cloned());
        let mut agent = Agent {
            name,
            ip,
            ns,
            dir,
            prefix,
            args,
            skiff: self.cfg.skiff.clone(),
            child: None,
        };
        agent.start()?;
        self.nodes.push(agent);
        let last = self.nodes.len() - 1;
        Ok(&mut self.nodes[last])
    }

    /// The node called `name`.
    pub fn node(&mut self, name: &str) -> Result<&mut Agent> {
        match self.nodes.iter_mut().find(|n| n.name == name) {
            Some(n) => Ok(n),
            None => bail!("no node {name}"),
        }
    }

    /// Sets node `name`'s LAN link (the bridge side of its veth) up or down.
    pub fn set_link(&self, name: &str, up: bool) -> Result<()> {
        self.lan.ip(&[
            "link",
            "set",
            &format!("v{name}"),
            if up { "up" } else { "down" },
        ])?;
        Ok(())
    }

    /// Every agent's warnings and errors and the tail of its log, for failure messages.
    pub fn agent_logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = n.log();
                let warnings: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                    .collect();
                format!(
                    "--- {} warnings ---\n{}\n--- {} ---\n{}\n",
                    n.name,
                    tail(&warnings.join("\n"), 40),
                    n.name,
                    tail(&log, 30)
                )
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        self.nodes.clear();
        self.kill_master();
        remove_cgroups(
            Path::new(CGROUP_ROOT),
            &self.prefix,
            Duration::from_secs(10),
        );
    }
}

impl Agent {
    /// Starts (again) the agent in the node's namespace.
    pub fn start(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))?;
        let child = self
            .ns
            .command(&self.skiff)
            .args(&self.args)
            .env("SKIFF_LOG", "info,libcgroups=error")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start skiff agent")?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILLs the agent (its pods keep running, as with a crashed kubelet).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// The agent's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the agent process is running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// A path under the node's directory (`run/pods`, `log`, …).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A command run inside the node's network namespace.
    pub fn command(&self, program: &str) -> Command {
        self.ns.command(program)
    }

    /// Runs `curl -sf -m 3 URL` in the node's namespace; the body, or `None` on failure.
    pub fn curl(&self, url: &str) -> Option<String> {
        run(self.ns.command("curl").args(["-sf", "-m", "3", url])).ok()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        remove_node_state(self.dir.path(), Path::new(CGROUP_ROOT), &self.prefix);
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

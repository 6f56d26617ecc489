//! `skiff agent`: the node agent (skiff's kubelet), and `skiff __shim`, the per-pod shim
//! the agent re-executes the binary as.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

/// `skiff agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {
    /// API server URL (https://HOST:PORT).
    #[arg(long)]
    server: String,
    /// Node token (the master's DATA_DIR/node-token).
    #[arg(long, env = "SKIFF_NODE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the node token, read at start (instead of --token; a service can start
    /// before the master on the same machine has written it: the agent waits for it).
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// Cluster CA certificate (the master's DATA_DIR/ca.crt).
    #[arg(long, default_value = "/etc/skiff/ca.crt")]
    ca_file: PathBuf,
    /// Node name (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// Images, snapshots and pod volumes.
    #[arg(long, default_value = "/var/lib/skiff")]
    root_dir: PathBuf,
    /// Runtime state, network namespaces, shim sockets.
    #[arg(long, default_value = "/run/skiff")]
    run_dir: PathBuf,
    /// Container logs.
    #[arg(long, default_value = "/var/log/pods")]
    log_dir: PathBuf,
    /// The node's InternalIP (default: the local address of the route to the server, or
    /// the default route's when that is loopback); dual-stack: `IPV4,IPV6` (or
    /// `IPV6,IPV4`), the first is the primary.
    #[arg(long, value_delimiter = ',')]
    node_ip: Vec<IpAddr>,
    /// cgroup path under which pod cgroups are made.
    #[arg(long, default_value = "skiff")]
    cgroup_prefix: String,
    /// Where the cgroup hierarchies are mounted.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// Registry allowed over plain HTTP (loopback registries always are); repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Cluster DNS server for ClusterFirst pods (default: 10.96.0.10 with --dns, else pods
    /// use the host's resolv.conf).
    #[arg(long)]
    cluster_dns: Option<IpAddr>,
    /// Cluster domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Pod network: `bridge` (a node bridge, pod IPs from the Node's podCIDR, host-gw routes
    /// between nodes), `vxlan` (the same bridge, a VXLAN overlay between nodes), `cni` (the
    /// CNI plugins of --cni-conf-dir) or `none` (pods get loopback only).
    #[arg(long, value_enum, default_value_t = PodNetworkKind::Bridge)]
    pod_network: PodNetworkKind,
    /// Where the CNI network configuration is (with --pod-network cni): the first
    /// .conflist/.conf/.json file in lexical order.
    #[arg(long, default_value = skiff_netproxy::podnet::cni::DEFAULT_CONF_DIR)]
    cni_conf_dir: PathBuf,
    /// Where the CNI plugins are (with --pod-network cni; comma-separated or repeated;
    /// Debian's containernetworking-plugins: /usr/lib/cni).
    #[arg(long, value_delimiter = ',', default_value = skiff_netproxy::podnet::cni::DEFAULT_BIN_DIR)]
    cni_bin_dir: Vec<PathBuf>,
    /// The node bridge's name (with --pod-network bridge).
    #[arg(long, default_value = skiff_netproxy::podnet::defaults::BRIDGE)]
    bridge_name: String,
    /// The cluster's pod CIDR: pod traffic leaving it is masqueraded. Dual-stack: one per
    /// family, comma-separated (`10.244.0.0/16,fd00:10:244::/56`).
    #[arg(long, value_delimiter = ',', default_value = skiff_netproxy::podnet::defaults::CLUSTER_CIDR)]
    cluster_cidr: Vec<ipnet::IpNet>,
    /// MTU of the node bridge and the pods' interfaces.
    #[arg(long, default_value_t = skiff_netproxy::podnet::defaults::MTU)]
    pod_mtu: u32,
    /// Port of the logs/exec endpoint (HTTPS on the node IP; 0: any free port).
    #[arg(long, default_value_t = 10250)]
    listen_port: u16,
    /// Rotate a container's log once it reaches this size (a quantity: 10Mi, 500Ki; 0: never).
    #[arg(long, default_value = "10Mi", value_parser = parse_log_size)]
    container_log_max_size: u64,
    /// Log files kept per container run, the live one included (at least 2).
    #[arg(long, default_value_t = skiff_agent::logrotate::DEFAULT_MAX_FILES)]
    container_log_max_files: u32,
    #[command(flatten)]
    image_gc: ImageGcArgs,
    #[command(flatten)]
    eviction: crate::eviction_args::EvictionArgs,
    #[command(flatten)]
    services: NodeServiceArgs,
}

/// Image garbage collection, as the kubelet's flags.
#[derive(Args, Debug, Clone)]
pub struct ImageGcArgs {
    /// Image file system use (percent) at which unused images start to be removed.
    #[arg(long, default_value_t = 85)]
    image_gc_high_threshold: u8,
    /// Image file system use (percent) image GC brings it down to.
    #[arg(long, default_value_t = 80)]
    image_gc_low_threshold: u8,
    /// Images first seen more recently than this are never removed (15s, 2m, 1h).
    #[arg(long, default_value = "2m", value_parser = crate::master_cmd::parse_duration)]
    image_minimum_gc_age: std::time::Duration,
    /// How often image GC looks at the image file system (the kubelet's fixed 5m).
    #[arg(long, default_value = "5m", value_parser = crate::master_cmd::parse_duration)]
    image_gc_period: std::time::Duration,
}

impl ImageGcArgs {
    fn policy(&self) -> Result<skiff_agent::imagegc::GcPolicy> {
        let p = skiff_agent::imagegc::GcPolicy {
            high_percent: self.image_gc_high_threshold,
            low_percent: self.image_gc_low_threshold,
            min_age: self.image_minimum_gc_age,
            period: self.image_gc_period.max(std::time::Duration::from_secs(1)),
        };
        p.validate()?;
        Ok(p)
    }
}

fn parse_log_size(s: &str) -> std::result::Result<u64, skiff_agent::logrotate::PolicyError> {
    skiff_agent::logrotate::parse_size(s)
}

/// The in-process Service proxy and cluster DNS (`skiff agent` and `skiff up`).
#[derive(Args, Debug, Clone)]
pub struct NodeServiceArgs {
    /// Run the Service proxy (nftables, NodePorts on the node IP) inside the agent.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
        default_missing_value = "true")]
    pub proxy: bool,
    /// Serve cluster DNS at --cluster-dns (default 10.96.0.10, on the dummy link skiff-dns).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
        default_missing_value = "true")]
    pub dns: bool,
    /// The Service CIDRs (the master's --service-cidr: one, or an IPv4 and an IPv6 one,
    /// comma-separated): their unallocated addresses are dropped.
    #[arg(
        long = "service-cidr",
        default_value = "10.96.0.0/12",
        value_delimiter = ','
    )]
    pub service_cidrs: Vec<ipnet::IpNet>,
}

impl NodeServiceArgs {
    /// The agent's options, and the cluster DNS address pods get: `--cluster-dns`, or the
    /// default 10.96.0.10 when the agent serves DNS itself.
    pub fn options(
        &self,
        cluster_dns: Option<IpAddr>,
    ) -> (skiff_agent::services::ServiceOptions, Option<IpAddr>) {
        let dns = cluster_dns.or(self.dns.then_some(IpAddr::from(DEFAULT_CLUSTER_DNS)));
        let opts = skiff_agent::services::ServiceOptions {
            proxy: self.proxy,
            dns: self.dns,
            service_cidrs: self.service_cidrs.clone(),
            ..Default::default()
        };
        (opts, dns)
    }
}

/// The cluster DNS Service's address (kube-system/kube-dns).
pub const DEFAULT_CLUSTER_DNS: [u8; 4] = [10, 96, 0, 10];

/// `--pod-network`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum PodNetworkKind {
    /// Node bridge, veth per pod, host-gw routes.
    Bridge,
    /// Node bridge, veth per pod, VXLAN overlay between nodes (device skiff.1, UDP 8472).
    Vxlan,
    /// Standard CNI plugins (--cni-conf-dir, --cni-bin-dir).
    Cni,
    /// Loopback-only pod namespaces.
    None,
}

/// The local address the kernel would use to reach the server (no packet is sent).
pub(crate) fn route_source(server: &str) -> Result<IpAddr> {
    let rest = server.split_once("://").map(|(_, r)| r).unwrap_or(server);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .or_else(|_| std::net::ToSocketAddrs::to_socket_addrs(&format!("{hostport}:443")))
        .with_context(|| format!("cannot resolve {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} has no address"))?;
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = std::net::UdpSocket::bind(bind)?;
    sock.connect(addr)?;
    Ok(sock.local_addr()?.ip())
}

/// The address of the interface the default route leaves by (no packet is sent).
pub(crate) fn default_route_address() -> Result<IpAddr> {
    route_source("192.0.2.1:9").context(
        "cannot find the default route's address (is there a default route?); give --node-ip",
    )
}

/// The node's address without `--node-ip`: the one it reaches the server from, or, when
/// that is loopback (the master on this machine), the default route's address, as the
/// kubelet chooses it. A loopback node address would put the Node's InternalIP and its
/// NodePorts on 127.0.0.1, which no other machine reaches and NodePorts do not serve.
fn detect_node_ip(server: &str) -> Result<IpAddr> {
    let ip = route_source(server)?;
    if !ip.is_loopback() {
        return Ok(ip);
    }
    default_route_address().context("the server is on this machine's loopback")
}

/// Reads the node token from `path`, waiting up to a minute for it to appear (the master of
/// a one-node install writes it when it first starts).
fn read_token_file(path: &std::path::Path) -> Result<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match std::fs::read_to_string(path) {
            Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
            Ok(_) => {}
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()));
            }
            Err(_) => {}
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("the token file {} did not appear", path.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// The agent's configuration from its arguments (directories created).
pub(crate) fn config(a: AgentArgs) -> Result<skiff_agent::Config> {
    let node_name = match a.node_name {
        Some(n) => n,
        None => nix::unistd::gethostname()
            .context("cannot read the hostname")?
            .to_string_lossy()
            .to_ascii_lowercase(),
    };
    let (node_ip, secondary_node_ip) = match a.node_ip.as_slice() {
        [] => (detect_node_ip(&a.server)?, None),
        [ip] => (*ip, None),
        [a, b] if a.is_ipv4() != b.is_ipv4() => (*a, Some(*b)),
        _ => anyhow::bail!("--node-ip takes one address, or one IPv4 and one IPv6 address"),
    };
    let token = match (a.token, &a.token_file) {
        (Some(t), _) => t,
        (None, Some(path)) => read_token_file(path)?,
        (None, None) => anyhow::bail!("give --token or --token-file"),
    };
    // every flag checked before anything is made on the machine
    let log_policy = skiff_agent::logrotate::LogPolicy::new(
        a.container_log_max_size,
        a.container_log_max_files,
    )?;
    let image_gc = a.image_gc.policy()?;
    let eviction = a.eviction.policy()?;
    for d in [&a.root_dir, &a.run_dir, &a.log_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let (services, cluster_dns) = a.services.options(a.cluster_dns);
    let config = skiff_agent::Config {
        server: a.server,
        token,
        ca_file: a.ca_file,
        node_name,
        root_dir: a.root_dir,
        run_dir: a.run_dir,
        log_dir: a.log_dir,
        node_ip,
        secondary_node_ip,
        cgroup_prefix: a.cgroup_prefix,
        cgroup_root: a.cgroup_root,
        // the agent's own binary, read-only where it runs (see `run_protected`): shims and
        // runtime calls inherit that and need no re-exec of their own, and they run the same
        // version as the agent even after the file on disk is replaced
        shim_exe: PathBuf::from("/proc/self/exe"),
        insecure_registries: a.insecure_registries,
        cluster_dns,
        cluster_domain: a.cluster_domain,
        cni: (a.pod_network == PodNetworkKind::Cni).then(|| skiff_agent::cni::CniOptions {
            conf_dir: a.cni_conf_dir.clone(),
            bin_dirs: a.cni_bin_dir.clone(),
            cluster_cidrs: a.cluster_cidr.clone(),
        }),
        pod_network: matches!(
            a.pod_network,
            PodNetworkKind::Bridge | PodNetworkKind::Vxlan
        )
        .then_some(skiff_agent::network::BridgeOptions {
            bridge: a.bridge_name,
            cluster_cidrs: a.cluster_cidr,
            mtu: a.pod_mtu,
            vxlan: a.pod_network == PodNetworkKind::Vxlan,
        }),
        listen_port: a.listen_port,
        services,
        log_policy,
        image_gc,
        eviction,
    };
    Ok(config)
}

/// Runs the agent until SIGINT/SIGTERM.
pub fn main(a: AgentArgs) -> Result<i32> {
    run_protected()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = config(a)?;
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let shutdown = crate::master_cmd::shutdown_signal()?;
        skiff_agent::run(config, shutdown).await?;
        anyhow::Ok(())
    })?;
    Ok(0)
}

/// Makes sure the agent runs from a binary no container can write (CVE-2019-5736), before
/// it starts any thread: unless skiff is installed read-only, it re-executes itself once
/// through a private read-only mount. Every process it starts through `/proc/self/exe`
/// (pod shims, `runtime exec` for probes and `kubectl exec`) then inherits that.
pub fn run_protected() -> Result<()> {
    skiff_runtime::sys::ensure_sealed_exe().context("cannot run from a sealed copy of skiff")
}

/// `skiff __shim`.
#[derive(Args, Debug)]
pub struct ShimArgs {
    /// The pod's run dir.
    #[arg(long)]
    dir: PathBuf,
    /// The runtime state root.
    #[arg(long)]
    runtime_root: PathBuf,
    /// Where the cgroup hierarchies are mounted.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
}

/// Runs the per-pod shim.
pub fn shim(a: ShimArgs) -> Result<i32> {
    // processes that enter containers must not run the host binary (CVE-2019-5736)
    skiff_runtime::sys::ensure_sealed_exe().context("cannot run from a sealed copy of skiff")?;
    // fds 1 and 2 are lent to each container while it is created: log to a private copy
    let fd = nix::fcntl::fcntl(2, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
        .context("cannot duplicate stderr")?;
    let log = std::fs::File::from(skiff_runtime::sys::owned_fd(fd));
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,libcgroups=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(log))
        .init();
    skiff_agent::shim::serve(&skiff_agent::shim::ShimArgs {
        dir: a.dir,
        runtime_root: a.runtime_root,
        cgroup_root: a.cgroup_root,
    })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn a_master_on_loopback_gives_the_default_route_address() {
        let on_loopback = detect_node_ip("https://127.0.0.1:6443");
        match default_route_address() {
            Ok(ip) => {
                assert!(!ip.is_loopback());
                assert_eq!(on_loopback.unwrap(), ip);
            }
            // no default route: an error that says to give --node-ip, never 127.0.0.1
            Err(_) => assert!(format!("{:#}", on_loopback.unwrap_err()).contains("--node-ip")),
        }
        // a server elsewhere: the address the route to it leaves from
        assert_eq!(
            detect_node_ip("https://192.0.2.77:6443").ok(),
            route_source("192.0.2.77:1").ok()
        );
    }

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        services: NodeServiceArgs,
    }

    #[test]
    fn service_cidrs_one_or_one_per_family() {
        let cases: [(&[&str], &[&str]); 3] = [
            (&[], &["10.96.0.0/12"]),
            (&["--service-cidr", "10.0.0.0/16"], &["10.0.0.0/16"]),
            (
                &["--service-cidr", "10.96.0.0/12,fd00:10:96::/108"],
                &["10.96.0.0/12", "fd00:10:96::/108"],
            ),
        ];
        for (args, want) in cases {
            let cmd = Cmd::try_parse_from([&["agent"][..], args].concat()).unwrap();
            let (opts, _) = cmd.services.options(None);
            let want: Vec<ipnet::IpNet> = want.iter().map(|s| s.parse().unwrap()).collect();
            assert_eq!(opts.service_cidrs, want, "{args:?}");
        }
        assert!(Cmd::try_parse_from(["agent", "--service-cidr", "10.96.0.0/12,nope"]).is_err());
    }
}

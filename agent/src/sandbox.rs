//! The pod sandbox without an infra container: a network namespace (unless `hostNetwork`)
//! kept by a bind mount under `<run-dir>/netns/<uid>`, IPC and UTS namespaces kept the same
//! way under the pod's run dir and joined by path by every container, the hostname set to
//! the pod name, and generated /etc/hosts, /etc/hostname and /etc/resolv.conf that every
//! container gets bind-mounted. Wiring the network namespace to the node network is the
//! [`PodNetwork`]'s business (`crate::network::Bridge`, or [`LoopbackOnly`]).

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::socket::{AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

use crate::error::{Error, Result};

/// Connects a pod's network namespace to the node's network.
pub trait PodNetwork: Send + Sync + std::fmt::Debug {
    /// Called once the namespace exists (loopback is already up); returns the pod's IPs.
    fn attach(&self, netns: &Path, pod_uid: &str) -> Result<Vec<IpAddr>>;
    /// [`PodNetwork::attach`] with what else is known of the pod (CNI plugins get its
    /// namespace, name and hostPorts at ADD); networks that need only the uid keep this.
    fn attach_pod(&self, netns: &Path, pod: &PodRef) -> Result<Vec<IpAddr>> {
        self.attach(netns, &pod.uid)
    }
    /// Called before the namespace is removed, and once more when the pod is removed (the
    /// namespace may be gone by then, e.g. after a reboot); must be idempotent.
    fn detach(&self, netns: &Path, pod_uid: &str) -> Result<()>;
    /// Called after attach with the pod's container ports that have a hostPort (also empty):
    /// maps them to the pod's address.
    fn host_ports(
        &self,
        _pod_uid: &str,
        _ports: &[skiff_netproxy::podnet::PortMapping],
    ) -> Result<()> {
        Ok(())
    }
    /// Called at start with the uids of the node's pods: releases what others still hold.
    fn retain(&self, _live: &std::collections::HashSet<String>) -> Result<()> {
        Ok(())
    }
}

/// The pod a network attaches, as the kubelet describes it to CNI plugins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRef {
    /// metadata.uid (the sandbox's id).
    pub uid: String,
    /// metadata.namespace.
    pub namespace: String,
    /// metadata.name.
    pub name: String,
    /// The containers' hostPorts.
    pub host_ports: Vec<skiff_netproxy::podnet::PortMapping>,
}

/// A pod network bound to one pod: its attach passes the whole [`PodRef`] on.
#[derive(Debug)]
pub struct ForPod<'a> {
    /// The node's pod network.
    pub network: &'a dyn PodNetwork,
    /// The pod.
    pub pod: &'a PodRef,
}

impl PodNetwork for ForPod<'_> {
    fn attach(&self, netns: &Path, _pod_uid: &str) -> Result<Vec<IpAddr>> {
        self.network.attach_pod(netns, self.pod)
    }
    fn detach(&self, netns: &Path, pod_uid: &str) -> Result<()> {
        self.network.detach(netns, pod_uid)
    }
    fn host_ports(
        &self,
        pod_uid: &str,
        ports: &[skiff_netproxy::podnet::PortMapping],
    ) -> Result<()> {
        self.network.host_ports(pod_uid, ports)
    }
    fn retain(&self, live: &std::collections::HashSet<String>) -> Result<()> {
        self.network.retain(live)
    }
}

/// No pod network: the namespace has loopback only and the pod no IP.
#[derive(Debug, Default)]
pub struct LoopbackOnly;

impl PodNetwork for LoopbackOnly {
    fn attach(&self, _: &Path, _: &str) -> Result<Vec<IpAddr>> {
        Ok(Vec::new())
    }
    fn detach(&self, _: &Path, _: &str) -> Result<()> {
        Ok(())
    }
}

/// Where a pod's sandbox lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPaths {
    /// The network namespace bind mount (`None` for hostNetwork pods).
    pub netns: Option<PathBuf>,
    /// The IPC namespace bind mount.
    pub ipc: PathBuf,
    /// The UTS namespace bind mount (`None` for hostNetwork pods: they keep the host's).
    pub uts: Option<PathBuf>,
    /// Generated /etc/hosts.
    pub hosts: PathBuf,
    /// Generated /etc/hostname.
    pub hostname: PathBuf,
    /// Generated /etc/resolv.conf.
    pub resolv: PathBuf,
}

impl SandboxPaths {
    /// The paths of the pod `uid` under `run_dir` (its pod dir is `pod_dir`).
    pub fn new(run_dir: &Path, pod_dir: &Path, uid: &str, host_network: bool) -> SandboxPaths {
        SandboxPaths {
            netns: (!host_network).then(|| run_dir.join("netns").join(uid)),
            ipc: pod_dir.join("ns").join("ipc"),
            uts: (!host_network).then(|| pod_dir.join("ns").join("uts")),
            hosts: pod_dir.join("etc").join("hosts"),
            hostname: pod_dir.join("etc").join("hostname"),
            resolv: pod_dir.join("etc").join("resolv.conf"),
        }
    }

    /// Every namespace bind mount.
    pub fn mounts(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = vec![&self.ipc];
        v.extend(self.netns.as_deref());
        v.extend(self.uts.as_deref());
        v
    }
}

/// The kubelet's /etc/hosts for a pod with its own network.
pub fn hosts_file(ips: &[IpAddr], hostname: &str) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    for ip in ips {
        s.push_str(&format!("{ip}\t{hostname}\n"));
    }
    s
}

/// The kubelet's most search domains in a pod's resolv.conf (`MaxDNSSearchPaths`).
const MAX_DNS_SEARCH_PATHS: usize = 32;

/// The search domains of a resolv.conf text: the last `search` or `domain` line wins, as
/// in glibc's resolver.
fn host_search(host_resolv: &str) -> Vec<&str> {
    let mut search = Vec::new();
    for line in host_resolv.lines() {
        let mut words = line.split_whitespace();
        if let Some("search" | "domain") = words.next() {
            search = words.collect();
        }
    }
    search
}

/// The kubelet's /etc/resolv.conf: ClusterFirst with a cluster DNS server gets the search
/// path of the namespace followed by the host's search domains (duplicates dropped, at most
/// 32), the cluster DNS server and `options ndots:5`, as the kubelet's
/// `generateSearchesForDNSClusterFirst`; otherwise the host's resolv.conf is used.
pub fn resolv_conf(
    dns_policy: &str,
    host_network: bool,
    cluster_dns: Option<IpAddr>,
    cluster_domain: &str,
    namespace: &str,
    host_resolv: &str,
) -> String {
    let cluster_first = match dns_policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" | "" => !host_network,
        _ => false,
    };
    match cluster_dns {
        Some(dns) if cluster_first => {
            let cluster = [
                format!("{namespace}.svc.{cluster_domain}"),
                format!("svc.{cluster_domain}"),
                cluster_domain.to_string(),
            ];
            let mut search: Vec<&str> = Vec::new();
            for domain in cluster
                .iter()
                .map(String::as_str)
                .chain(host_search(host_resolv))
            {
                let domain = domain.trim_end_matches('.');
                if !domain.is_empty() && !search.contains(&domain) {
                    search.push(domain);
                }
            }
            search.truncate(MAX_DNS_SEARCH_PATHS);
            format!(
                "search {}\nnameserver {dns}\noptions ndots:5\n",
                search.join(" ")
            )
        }
        _ => host_resolv.to_string(),
    }
}

/// Sets loopback up in the calling thread's network namespace (RTM_NEWLINK with IFF_UP on
/// ifindex 1, which is `lo` in every new namespace).
fn loopback_up() -> Result<()> {
    let sys = |what: &str| {
        let what = what.to_string();
        move |source| Error::Sys { what, source }
    };
    let fd = nix::sys::socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(sys("netlink socket"))?;
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const IFF_UP: u32 = 1;
    let mut msg = Vec::with_capacity(32);
    msg.extend_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid
    // struct ifinfomsg: family, pad, type, index, flags, change
    msg.extend_from_slice(&[0u8, 0u8]);
    msg.extend_from_slice(&0u16.to_ne_bytes());
    msg.extend_from_slice(&1i32.to_ne_bytes());
    msg.extend_from_slice(&IFF_UP.to_ne_bytes());
    msg.extend_from_slice(&IFF_UP.to_ne_bytes());
    let kernel = NetlinkAddr::new(0, 0);
    nix::sys::socket::sendto(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &msg,
        &kernel,
        MsgFlags::empty(),
    )
    .map_err(sys("netlink send"))?;
    let mut buf = [0u8; 256];
    let n = nix::sys::socket::recv(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &mut buf,
        MsgFlags::empty(),
    )
    .map_err(sys("netlink receive"))?;
    // NLMSG_ERROR (2) with error 0 is the ack
    if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == 2 {
        let errno = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if errno != 0 {
            return Err(Error::Sys {
                what: "set loopback up".into(),
                source: nix::Error::from_raw(-errno),
            });
        }
    }
    Ok(())
}

fn bind_ns(kind: &str, target: &Path) -> Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    std::fs::File::create(target).map_err(|e| Error::io("create", target, e))?;
    let src = PathBuf::from("/proc/thread-self/ns").join(kind);
    nix::mount::mount(
        Some(&src),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| Error::Sys {
        what: format!("bind mount {} on {}", src.display(), target.display()),
        source,
    })
}

/// Creates the sandbox's namespaces and files. Namespaces are made in a short-lived thread
/// (`unshare` only changes the calling thread) and kept by bind mounts of its
/// `/proc/thread-self/ns/*`. Returns the pod's IPs (the host's for hostNetwork pods).
pub fn create(
    paths: &SandboxPaths,
    hostname: &str,
    network: &dyn PodNetwork,
    uid: &str,
    resolv: &str,
    host_ips: &[IpAddr],
) -> Result<Vec<IpAddr>> {
    let p = paths.clone();
    let name = hostname.to_string();
    let made = std::thread::spawn(move || -> Result<()> {
        let mut flags = CloneFlags::CLONE_NEWIPC;
        if p.uts.is_some() {
            flags |= CloneFlags::CLONE_NEWUTS;
        }
        if p.netns.is_some() {
            flags |= CloneFlags::CLONE_NEWNET;
        }
        nix::sched::unshare(flags).map_err(|source| Error::Sys {
            what: "unshare the pod namespaces".into(),
            source,
        })?;
        if let Some(uts) = &p.uts {
            nix::unistd::sethostname(&name).map_err(|source| Error::Sys {
                what: "sethostname".into(),
                source,
            })?;
            bind_ns("uts", uts)?;
        }
        if let Some(net) = &p.netns {
            loopback_up()?;
            bind_ns("net", net)?;
        }
        bind_ns("ipc", &p.ipc)
    })
    .join()
    .map_err(|_| Error::Task("sandbox thread panicked".into()))?;
    if let Err(e) = made {
        let _ = remove(paths, network, uid);
        return Err(e);
    }
    let ips = match &paths.netns {
        Some(ns) => match network.attach(ns, uid) {
            Ok(ips) => ips,
            Err(e) => {
                let _ = remove(paths, network, uid);
                return Err(e);
            }
        },
        None => host_ips.to_vec(),
    };
    let hosts = if paths.netns.is_some() {
        hosts_file(&ips, hostname)
    } else {
        let host = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        format!("# Kubernetes-managed hosts file (host network).\n{host}")
    };
    write_file(&paths.hosts, &hosts)?;
    write_file(&paths.hostname, &format!("{hostname}\n"))?;
    write_file(&paths.resolv, resolv)?;
    Ok(ips)
}

/// Writes a sandbox file (hosts, hostname, resolv.conf under the run dir) by temp file and
/// rename, without fsync: they are rewritten whenever the sandbox is made, and a sandbox does
/// not outlive a power loss.
fn write_file(path: &Path, content: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(content.as_bytes())
        .map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
}

/// Whether the sandbox's namespaces are in place (after an agent restart).
pub fn exists(paths: &SandboxPaths) -> bool {
    paths.mounts().iter().all(|m| m.exists())
}

/// Detaches the network, unmounts and removes the namespace files. Missing parts are fine.
pub fn remove(paths: &SandboxPaths, network: &dyn PodNetwork, uid: &str) -> Result<()> {
    if let Some(ns) = &paths.netns
        && ns.exists()
    {
        network.detach(ns, uid)?;
    }
    for m in paths.mounts() {
        match nix::mount::umount2(m, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(source) => {
                return Err(Error::Sys {
                    what: format!("unmount {}", m.display()),
                    source,
                });
            }
        }
        match std::fs::remove_file(m) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove", m, e));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_resolv() {
        let h = hosts_file(&["10.244.0.5".parse().unwrap()], "web-0");
        assert!(h.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.244.0.5\tweb-0\n"));
        let dns = Some("10.96.0.10".parse().unwrap());
        let host = "nameserver 1.1.1.1\n";
        let cluster = "search ns1.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n";
        let host_search = "domain old.example\nsearch corp.example cluster.local. lab.example\nnameserver 1.1.1.1\noptions rotate\n";
        let cases = [
            ("ClusterFirst", false, dns, host, cluster),
            ("ClusterFirst", true, dns, host, host),
            ("ClusterFirstWithHostNet", true, dns, host, cluster),
            ("Default", false, dns, host, host),
            ("ClusterFirst", false, None, host, host),
            // The host's search domains follow the cluster's (last search/domain line wins,
            // duplicates dropped); its nameservers and options do not come along.
            (
                "ClusterFirst",
                false,
                dns,
                host_search,
                "search ns1.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\nnameserver 10.96.0.10\noptions ndots:5\n",
            ),
        ];
        for (policy, hostnet, dns, host, want) in cases {
            assert_eq!(
                resolv_conf(policy, hostnet, dns, "cluster.local", "ns1", host),
                want,
                "{policy} {hostnet}"
            );
        }
        let many: String = (0..40).map(|i| format!(" d{i}.example")).collect();
        let got = resolv_conf(
            "ClusterFirst",
            false,
            dns,
            "cluster.local",
            "ns1",
            &format!("search{many}\n"),
        );
        let search = got
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .count();
        assert_eq!(search, MAX_DNS_SEARCH_PATHS);
    }

    #[test]
    fn paths_for_host_network() {
        let p = SandboxPaths::new(Path::new("/run/s"), Path::new("/run/s/pods/u"), "u", true);
        assert_eq!(p.netns, None);
        assert_eq!(p.uts, None);
        assert_eq!(p.mounts(), vec![Path::new("/run/s/pods/u/ns/ipc")]);
        let p = SandboxPaths::new(Path::new("/run/s"), Path::new("/run/s/pods/u"), "u", false);
        assert_eq!(p.netns.as_deref(), Some(Path::new("/run/s/netns/u")));
    }
}

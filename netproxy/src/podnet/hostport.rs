//! hostPort, as the CNI portmap plugin (nftables backend) maps it: traffic to a local
//! address of the node (not loopback: kubelet's portmap sets no `route_localnet`) on a
//! container's `hostPort` is DNATed to the pod's address and `containerPort`; with a
//! `hostIP`, only traffic to that address. A pod reaching its own hostPort is masqueraded
//! (hairpin). A dual-stack pod's port is mapped in both families (to its address of each),
//! unless a `hostIP` names one. The mappings live in the pod network's own tables
//! `ip skiff_hostport` and `ip6 skiff_hostport` (neither the Service proxy's nor the
//! masquerade table), replaced whole in one `nft -f -` transaction, and are recorded under
//! `<state-dir>/hostports/<pod uid>`, so the tables are rebuilt the same after an agent
//! restart.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use super::{Error, Result};

/// The tables' name (families `ip` and `ip6`).
pub const TABLE: &str = "skiff_hostport";

/// A transport protocol of a container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// From the API's `TCP`/`UDP`/`SCTP` (unset is TCP).
    pub fn from_api(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

impl FromStr for Protocol {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Protocol, ()> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(()),
        }
    }
}

/// One container port with a hostPort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMapping {
    /// The protocol.
    pub protocol: Protocol,
    /// `hostIP` (`None`, or 0.0.0.0 / :: in the API: every local address of the pod's
    /// families).
    pub host_ip: Option<IpAddr>,
    /// `hostPort`.
    pub host_port: u16,
    /// `containerPort`.
    pub container_port: u16,
}

/// A mapping with the pod's address: what the table is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    /// The container port.
    pub port: PortMapping,
    /// The pod's address (of one family; a dual-stack pod has a mapping per family).
    pub pod_ip: IpAddr,
}

impl HostPort {
    /// One line of a record: `tcp 0.0.0.0 8080 10.244.1.5 80`.
    fn line(&self) -> String {
        let p = &self.port;
        let host = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        format!(
            "{} {host} {} {} {}",
            p.protocol, p.host_port, self.pod_ip, p.container_port
        )
    }

    fn parse(line: &str) -> Option<HostPort> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [proto, host, hport, ip, cport] = f.as_slice() else {
            return None;
        };
        let host: IpAddr = host.parse().ok()?;
        Some(HostPort {
            port: PortMapping {
                protocol: proto.parse().ok()?,
                host_ip: (!host.is_unspecified()).then_some(host),
                host_port: hport.parse().ok()?,
                container_port: cport.parse().ok()?,
            },
            pod_ip: ip.parse().ok()?,
        })
    }
}

/// The tables for all pods' mappings, as `nft -f` text replacing any earlier version.
/// Rules are ordered (pod uid, then mapping) so equal inputs give equal text.
pub fn ruleset(all: &BTreeMap<String, Vec<HostPort>>) -> String {
    let mut out = String::new();
    for (family, ip, loopback) in [("ip", "ip", "127.0.0.0/8"), ("ip6", "ip6", "::1")] {
        let v6 = family == "ip6";
        let mut dnat = String::new();
        let mut hairpin = String::new();
        for m in all.values().flatten().filter(|m| m.pod_ip.is_ipv6() == v6) {
            let p = &m.port;
            // an unspecified hostIP of either family means every address of this one
            let daddr = p
                .host_ip
                .filter(|h| !h.is_unspecified())
                .map(|h| format!("{ip} daddr {h} "))
                .unwrap_or_default();
            let to = match m.pod_ip {
                IpAddr::V4(a) => format!("{a}:{}", p.container_port),
                IpAddr::V6(a) => format!("[{a}]:{}", p.container_port),
            };
            dnat.push_str(&format!(
                "\t\t{daddr}meta l4proto {proto} th dport {hp} dnat to {to}\n",
                proto = p.protocol,
                hp = p.host_port,
            ));
            hairpin.push_str(&format!(
                "\t\t{ip} saddr {a} {ip} daddr {a} meta l4proto {proto} th dport {cp} ct status dnat masquerade\n",
                a = m.pod_ip,
                proto = p.protocol,
                cp = p.container_port
            ));
        }
        let entry = format!("fib daddr type local {ip} daddr != {loopback} jump hostports");
        out.push_str(&format!(
            "add table {family} {TABLE}\n\
             delete table {family} {TABLE}\n\
             table {family} {TABLE} {{\n\
             \tchain prerouting {{\n\
             \t\ttype nat hook prerouting priority -100; policy accept;\n\
             \t\t{entry}\n\
             \t}}\n\
             \tchain output {{\n\
             \t\ttype nat hook output priority -100; policy accept;\n\
             \t\t{entry}\n\
             \t}}\n\
             \tchain hostports {{\n\
             {dnat}\
             \t}}\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority 100; policy accept;\n\
             {hairpin}\
             \t}}\n\
             }}\n"
        ));
    }
    out
}

/// The text removing the tables (nothing where one is absent).
pub fn delete() -> String {
    format!(
        "add table ip {TABLE}\ndelete table ip {TABLE}\nadd table ip6 {TABLE}\ndelete table ip6 {TABLE}\n"
    )
}

/// The per-pod records of the mappings.
#[derive(Debug)]
pub struct HostPorts {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl HostPorts {
    /// The records under `<state_dir>/hostports`.
    pub fn open(state_dir: &Path) -> Result<HostPorts> {
        let dir = state_dir.join("hostports");
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        Ok(HostPorts {
            dir,
            lock: Mutex::new(()),
        })
    }

    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    }

    /// Records `ports` for a pod (none: removes its record); returns the whole table's
    /// text when the records changed (`None`: the table in place is still right).
    pub fn set(&self, pod_uid: &str, ports: &[HostPort]) -> Result<Option<String>> {
        let _g = self.lock.lock().map_err(|_| Error::Poisoned)?;
        let path = self.dir.join(pod_uid);
        let text: String = ports.iter().map(|p| p.line() + "\n").collect();
        let before = std::fs::read_to_string(&path).unwrap_or_default();
        if before == text {
            return Ok(None);
        }
        if ports.is_empty() {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Self::io("remove", &path)(e)),
            }
        } else {
            let tmp = self.dir.join(format!(".{pod_uid}.tmp"));
            std::fs::write(&tmp, text).map_err(Self::io("write", &tmp))?;
            std::fs::rename(&tmp, &path).map_err(Self::io("rename", &path))?;
        }
        Ok(Some(ruleset(&self.read_all()?)))
    }

    /// Removes the records of pods not in `live`; returns the table's text.
    pub fn retain(&self, live: &HashSet<String>) -> Result<String> {
        let _g = self.lock.lock().map_err(|_| Error::Poisoned)?;
        for uid in self.read_all()?.into_keys() {
            if !live.contains(&uid) {
                let path = self.dir.join(&uid);
                std::fs::remove_file(&path).map_err(Self::io("remove", &path))?;
            }
        }
        Ok(ruleset(&self.read_all()?))
    }

    /// Every pod's mappings.
    pub fn all(&self) -> Result<BTreeMap<String, Vec<HostPort>>> {
        let _g = self.lock.lock().map_err(|_| Error::Poisoned)?;
        self.read_all()
    }

    fn read_all(&self) -> Result<BTreeMap<String, Vec<HostPort>>> {
        let mut out = BTreeMap::new();
        let rd = std::fs::read_dir(&self.dir).map_err(Self::io("read", &self.dir))?;
        for e in rd {
            let e = e.map_err(Self::io("read", &self.dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).map_err(Self::io("read", &e.path()))?;
            let ports: Vec<HostPort> = text.lines().filter_map(HostPort::parse).collect();
            out.insert(name, ports);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(proto: Protocol, host: Option<&str>, hport: u16, ip: &str, cport: u16) -> HostPort {
        HostPort {
            port: PortMapping {
                protocol: proto,
                host_ip: host.map(|h| h.parse().unwrap()),
                host_port: hport,
                container_port: cport,
            },
            pod_ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn rules() {
        let cases: Vec<(Vec<HostPort>, Vec<&str>)> = vec![
            (vec![], vec![]),
            (
                vec![hp(Protocol::Tcp, None, 8080, "10.244.1.5", 80)],
                vec![
                    "\t\tmeta l4proto tcp th dport 8080 dnat to 10.244.1.5:80\n",
                    "ip saddr 10.244.1.5 ip daddr 10.244.1.5 meta l4proto tcp th dport 80 ct status dnat masquerade",
                ],
            ),
            (
                vec![hp(
                    Protocol::Udp,
                    Some("192.168.1.2"),
                    53,
                    "10.244.1.6",
                    5353,
                )],
                vec!["ip daddr 192.168.1.2 meta l4proto udp th dport 53 dnat to 10.244.1.6:5353"],
            ),
            (
                vec![
                    hp(Protocol::Tcp, None, 8080, "fd00:244::5", 80),
                    hp(Protocol::Tcp, Some("fd00::2"), 8443, "fd00:244::5", 443),
                ],
                vec![
                    "table ip6 skiff_hostport {\n\tchain prerouting",
                    "\t\tmeta l4proto tcp th dport 8080 dnat to [fd00:244::5]:80\n",
                    "ip6 daddr fd00::2 meta l4proto tcp th dport 8443 dnat to [fd00:244::5]:443",
                    "ip6 saddr fd00:244::5 ip6 daddr fd00:244::5 meta l4proto tcp th dport 80 ct status dnat masquerade",
                ],
            ),
        ];
        for (ports, want) in cases {
            let all: BTreeMap<String, Vec<HostPort>> = [("uid".to_string(), ports.clone())].into();
            let text = ruleset(&all);
            assert!(
                text.starts_with("add table ip skiff_hostport\ndelete table ip skiff_hostport\n")
            );
            // loopback is not mapped (no route_localnet), every other local address is
            assert_eq!(
                text.matches("fib daddr type local ip daddr != 127.0.0.0/8 jump hostports")
                    .count(),
                2
            );
            assert_eq!(
                text.matches("fib daddr type local ip6 daddr != ::1 jump hostports")
                    .count(),
                2
            );
            for w in &want {
                assert!(text.contains(w), "{w:?} not in {text}");
            }
            assert_eq!(text.matches("dnat to").count(), ports.len(), "{text}");
        }
    }

    #[test]
    fn records_round_trip_and_retain() {
        let d = tempfile::tempdir().unwrap();
        let s = HostPorts::open(d.path()).unwrap();
        let a = vec![
            hp(Protocol::Tcp, None, 8080, "10.244.1.5", 80),
            hp(Protocol::Udp, Some("192.168.1.2"), 53, "10.244.1.5", 5353),
        ];
        let b = vec![hp(Protocol::Sctp, None, 9000, "10.244.1.6", 9000)];
        s.set("a", &a).unwrap().unwrap();
        // the same again: nothing to apply
        assert_eq!(s.set("a", &a).unwrap(), None);
        let text = s.set("b", &b).unwrap().unwrap();
        assert_eq!(text.matches("dnat to").count(), 3);
        // a second store over the same records (agent restart) sees the same
        let s2 = HostPorts::open(d.path()).unwrap();
        let all = s2.all().unwrap();
        assert_eq!(all.get("a"), Some(&a));
        assert_eq!(all.get("b"), Some(&b));
        let text = s2.retain(&["b".to_string()].into()).unwrap();
        assert_eq!(text.matches("dnat to").count(), 1);
        assert_eq!(s2.all().unwrap().keys().collect::<Vec<_>>(), vec!["b"]);
        assert!(s2.set("b", &[]).unwrap().is_some());
        assert_eq!(s2.set("b", &[]).unwrap(), None);
        assert!(s2.all().unwrap().is_empty());
        assert_eq!(HostPort::parse("tcp 0.0.0.0 x 10.0.0.1 80"), None);
        let v6 = hp(Protocol::Udp, Some("fd00::2"), 53, "fd00:244::5", 5353);
        assert_eq!(HostPort::parse(&v6.line()), Some(v6));
    }
}

//! Address management for one node's podCIDR, laid out as the host-local CNI plugin does:
//! one file per allocated address (named by the address, holding the pod uid) and
//! `last_reserved_ip.0`, under `<state-dir>/ipam/<cidr>/`. Allocation goes round-robin from
//! the last reserved address, so an address just released is not handed out again at once.
//! The records survive agent restarts; a pod asking again gets the address it holds.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::Ipv4Net;

use super::{Error, Result};

const LAST_RESERVED: &str = "last_reserved_ip.0";

/// The addresses of `cidr` that pods may get: every host address except the first (the
/// gateway on the node's bridge); a /31 or /32 has none.
pub fn pod_range(cidr: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    let gateway = gateway(cidr);
    let small = cidr.prefix_len() > 30;
    cidr.hosts()
        .filter(move |ip| !small && Some(*ip) != gateway)
}

/// The gateway of a podCIDR: its first host address (`None` for a /31 or /32).
pub fn gateway(cidr: Ipv4Net) -> Option<Ipv4Addr> {
    if cidr.prefix_len() > 30 {
        return None;
    }
    cidr.hosts().next()
}

/// The next free address after `last` (round-robin, wrapping), or the first free one.
pub fn next_free(
    cidr: Ipv4Net,
    used: &BTreeSet<Ipv4Addr>,
    last: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let last = last.filter(|l| cidr.contains(l));
    let after = pod_range(cidr).filter(|ip| last.is_none_or(|l| *ip > l));
    let before = pod_range(cidr).filter(|ip| last.is_some_and(|l| *ip <= l));
    after.chain(before).find(|ip| !used.contains(ip))
}

/// The allocations of one podCIDR on disk.
#[derive(Debug)]
pub struct Ipam {
    dir: PathBuf,
    cidr: Ipv4Net,
    lock: Mutex<()>,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { what, path, source }
}

impl Ipam {
    /// Opens (creating) the records of `cidr` under `state_dir`.
    pub fn open(state_dir: &Path, cidr: Ipv4Net) -> Result<Ipam> {
        if gateway(cidr).is_none() {
            return Err(Error::CidrTooSmall { cidr });
        }
        let dir = state_dir
            .join("ipam")
            .join(format!("{}-{}", cidr.network(), cidr.prefix_len()));
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        Ok(Ipam {
            dir,
            cidr,
            lock: Mutex::new(()),
        })
    }

    /// The directory holding the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every allocation: address → pod uid.
    pub fn records(&self) -> Result<BTreeMap<Ipv4Addr, String>> {
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(&self.dir).map_err(io("read", &self.dir))? {
            let e = e.map_err(io("read", &self.dir))?;
            let Some(ip) = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let path = e.path();
            let text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
            // host-local writes "<id>\r\n<ifname>"; the first line is the owner
            let owner = text.lines().next().unwrap_or_default().trim().to_string();
            out.insert(ip, owner);
        }
        Ok(out)
    }

    /// The address of pod `uid`: the one it already holds, else the next free one.
    pub fn allocate(&self, uid: &str) -> Result<Ipv4Addr> {
        let _guard = self.lock.lock().map_err(|_| Error::Poisoned)?;
        let records = self.records()?;
        if let Some((ip, _)) = records.iter().find(|(_, owner)| *owner == uid) {
            return Ok(*ip);
        }
        let last_path = self.dir.join(LAST_RESERVED);
        let last = std::fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let mut used: BTreeSet<Ipv4Addr> = records.keys().copied().collect();
        loop {
            let ip =
                next_free(self.cidr, &used, last).ok_or(Error::Exhausted { cidr: self.cidr })?;
            let path = self.dir.join(ip.to_string());
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path);
            let mut file = match file {
                Ok(f) => f,
                // taken meanwhile by another process sharing the directory
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    used.insert(ip);
                    continue;
                }
                Err(e) => return Err(io("create", &path)(e)),
            };
            file.write_all(format!("{uid}\r\neth0").as_bytes())
                .and_then(|_| file.sync_all())
                .map_err(io("write", &path))?;
            write_atomic(&last_path, &ip.to_string())?;
            tracing::debug!(pod_uid = %uid, %ip, "address allocated");
            return Ok(ip);
        }
    }

    /// Releases every address pod `uid` holds; returns them.
    pub fn release(&self, uid: &str) -> Result<Vec<Ipv4Addr>> {
        self.release_where(|owner| owner == uid)
    }

    /// Releases the addresses of pods not in `live` (pods deleted while the agent was
    /// down); returns them.
    pub fn retain(&self, live: &HashSet<String>) -> Result<Vec<Ipv4Addr>> {
        self.release_where(|owner| !live.contains(owner))
    }

    fn release_where(&self, drop: impl Fn(&str) -> bool) -> Result<Vec<Ipv4Addr>> {
        let _guard = self.lock.lock().map_err(|_| Error::Poisoned)?;
        let mut released = Vec::new();
        for (ip, owner) in self.records()? {
            if drop(&owner) {
                let path = self.dir.join(ip.to_string());
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io("remove", &path)(e));
                    }
                    _ => {}
                }
                tracing::debug!(pod_uid = %owner, %ip, "address released");
                released.push(ip);
            }
        }
        Ok(released)
    }
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn next_free_round_robin() {
        let net: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        let set = |v: &[&str]| v.iter().map(|s| ip(s)).collect::<BTreeSet<_>>();
        let cases: &[(&[&str], Option<&str>, Option<&str>)] = &[
            // nothing used: the first after the gateway
            (&[], None, Some("10.244.1.2")),
            (&["10.244.1.2"], None, Some("10.244.1.3")),
            // after the last reserved, even when lower ones are free
            (&[], Some("10.244.1.7"), Some("10.244.1.8")),
            // wraps around, skipping network, gateway and broadcast
            (&[], Some("10.244.1.254"), Some("10.244.1.2")),
            (
                &["10.244.1.2", "10.244.1.3"],
                Some("10.244.1.254"),
                Some("10.244.1.4"),
            ),
            // a last outside the range is ignored
            (&[], Some("10.9.9.9"), Some("10.244.1.2")),
        ];
        for (used, last, want) in cases {
            assert_eq!(
                next_free(net, &set(used), last.map(ip)),
                want.map(ip),
                "{used:?} {last:?}"
            );
        }
        let small: Ipv4Net = "10.0.0.0/30".parse().unwrap();
        assert_eq!(next_free(small, &set(&[]), None), Some(ip("10.0.0.2")));
        assert_eq!(next_free(small, &set(&["10.0.0.2"]), None), None);
        assert_eq!(pod_range("10.0.0.0/31".parse().unwrap()).count(), 0);
        assert_eq!(pod_range(net).count(), 253);
    }

    #[test]
    fn records_survive_reopen_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let net: Ipv4Net = "10.244.3.0/29".parse().unwrap();
        let ipam = Ipam::open(dir.path(), net).unwrap();
        let a = ipam.allocate("pod-a").unwrap();
        let b = ipam.allocate("pod-b").unwrap();
        assert_eq!((a, b), (ip("10.244.3.2"), ip("10.244.3.3")));
        assert_eq!(ipam.allocate("pod-a").unwrap(), a);
        drop(ipam);
        let ipam = Ipam::open(dir.path(), net).unwrap();
        assert_eq!(ipam.allocate("pod-b").unwrap(), b);
        assert_eq!(ipam.release("pod-a").unwrap(), vec![a]);
        // round-robin: the next pod does not get a's address back
        assert_eq!(ipam.allocate("pod-c").unwrap(), ip("10.244.3.4"));
        let live: HashSet<String> = ["pod-c".to_string()].into();
        assert_eq!(ipam.retain(&live).unwrap(), vec![b]);
        assert_eq!(
            ipam.records().unwrap(),
            BTreeMap::from([(ip("10.244.3.4"), "pod-c".to_string())])
        );
        // a /29 has 5 pod addresses (.2 to .6)
        for i in 0..4 {
            ipam.allocate(&format!("fill-{i}")).unwrap();
        }
        assert!(matches!(
            ipam.allocate("one-too-many"),
            Err(Error::Exhausted { .. })
        ));
        assert!(matches!(
            Ipam::open(dir.path(), "10.0.0.0/31".parse().unwrap()),
            Err(Error::CidrTooSmall { .. })
        ));
    }
}

//! Address management for one node's podCIDR (IPv4 or IPv6), laid out as the host-local
//! CNI plugin does: one file per allocated address (named by the address, holding the pod
//! uid) and `last_reserved_ip.0`, under `<state-dir>/ipam/<network>-<prefix>/`. Allocation
//! goes round-robin from the last reserved address, so an address just released is not
//! handed out again at once. The records survive agent restarts; a pod asking again gets the
//! address it holds. A dual-stack node has one `Ipam` per podCIDR.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::IpNet;

use super::{Error, Result};

const LAST_RESERVED: &str = "last_reserved_ip.0";

/// An address as a number (IPv4 in the low 32 bits).
fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

/// The address `n` of `cidr`'s family.
fn from_u128(cidr: IpNet, n: u128) -> IpAddr {
    match cidr {
        // the range is computed within the IPv4 CIDR, so `n` fits
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// The first and last address pods may get in `cidr` (as numbers): every address after the
/// gateway (the network's first host address), but the IPv4 broadcast address; `None` when
/// there is none (an IPv4 /31 or /32, an IPv6 /127 or /128).
pub fn pod_bounds(cidr: IpNet) -> Option<(u128, u128)> {
    let cidr = cidr.trunc();
    let first = to_u128(cidr.network()) + 2;
    let last = match cidr {
        IpNet::V4(_) => to_u128(cidr.broadcast()).checked_sub(1)?,
        IpNet::V6(_) => to_u128(cidr.broadcast()),
    };
    (first <= last).then_some((first, last))
}

/// The gateway of a podCIDR: its first host address (`None` when the CIDR has no room for
/// pods besides it: an IPv4 /31 or /32, an IPv6 /127 or /128).
pub fn gateway(cidr: IpNet) -> Option<IpAddr> {
    pod_bounds(cidr)?;
    Some(from_u128(cidr, to_u128(cidr.trunc().network()) + 1))
}

/// The next free address after `last` (round-robin, wrapping), or the first free one.
/// Looks at `used.len() + 1` candidates at most, so it is cheap in an IPv6 /64 too.
pub fn next_free(cidr: IpNet, used: &BTreeSet<IpAddr>, last: Option<IpAddr>) -> Option<IpAddr> {
    let (first, end) = pod_bounds(cidr)?;
    let size = end - first + 1;
    let start = match last.filter(|l| cidr.contains(l)).map(to_u128) {
        Some(l) if l >= first && l < end => l + 1,
        _ => first,
    };
    let tries = size.min(used.len() as u128 + 1);
    (0..tries)
        .map(|i| from_u128(cidr, first + (start - first + i) % size))
        .find(|ip| !used.contains(ip))
}

/// The allocations of one podCIDR on disk.
#[derive(Debug)]
pub struct Ipam {
    dir: PathBuf,
    cidr: IpNet,
    lock: Mutex<()>,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { what, path, source }
}

impl Ipam {
    /// Opens (creating) the records of `cidr` under `state_dir`.
    pub fn open(state_dir: &Path, cidr: IpNet) -> Result<Ipam> {
        let cidr = cidr.trunc();
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

    /// The podCIDR.
    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    /// The directory holding the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every allocation: address → pod uid.
    pub fn records(&self) -> Result<BTreeMap<IpAddr, String>> {
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(&self.dir).map_err(io("read", &self.dir))? {
            let e = e.map_err(io("read", &self.dir))?;
            let Some(ip) = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
                .filter(|ip| self.cidr.contains(ip))
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
    pub fn allocate(&self, uid: &str) -> Result<IpAddr> {
        let _guard = self.lock.lock().map_err(|_| Error::Poisoned)?;
        let records = self.records()?;
        if let Some((ip, _)) = records.iter().find(|(_, owner)| *owner == uid) {
            return Ok(*ip);
        }
        let last_path = self.dir.join(LAST_RESERVED);
        let last = std::fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let mut used: BTreeSet<IpAddr> = records.keys().copied().collect();
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
    pub fn release(&self, uid: &str) -> Result<Vec<IpAddr>> {
        self.release_where(|owner| owner == uid)
    }

    /// Releases the addresses of pods not in `live` (pods deleted while the agent was
    /// down); returns them.
    pub fn retain(&self, live: &HashSet<String>) -> Result<Vec<IpAddr>> {
        self.release_where(|owner| !live.contains(owner))
    }

    fn release_where(&self, drop: impl Fn(&str) -> bool) -> Result<Vec<IpAddr>> {
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn next_free_round_robin() {
        let net: IpNet = "10.244.1.0/24".parse().unwrap();
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
        let small: IpNet = "10.0.0.0/30".parse().unwrap();
        assert_eq!(next_free(small, &set(&[]), None), Some(ip("10.0.0.2")));
        assert_eq!(next_free(small, &set(&["10.0.0.2"]), None), None);
        assert_eq!(pod_bounds("10.0.0.0/31".parse().unwrap()), None);
        let (first, last) = pod_bounds(net).unwrap();
        assert_eq!(last - first + 1, 253);

        // IPv6: from ::2 on, the last address of the block included (no broadcast)
        let v6: IpNet = "fd00:10:244:1::/64".parse().unwrap();
        let cases: &[(&[&str], Option<&str>, Option<&str>)] = &[
            (&[], None, Some("fd00:10:244:1::2")),
            (&["fd00:10:244:1::2"], None, Some("fd00:10:244:1::3")),
            (&[], Some("fd00:10:244:1::ff"), Some("fd00:10:244:1::100")),
            (
                &["fd00:10:244:1::2"],
                Some("fd00:10:244:1:ffff:ffff:ffff:fffe"),
                Some("fd00:10:244:1:ffff:ffff:ffff:ffff"),
            ),
            (
                &[],
                Some("fd00:10:244:1:ffff:ffff:ffff:ffff"),
                Some("fd00:10:244:1::2"),
            ),
            // an IPv4 last does not steer an IPv6 block
            (&[], Some("10.244.1.7"), Some("fd00:10:244:1::2")),
        ];
        for (used, last, want) in cases {
            assert_eq!(
                next_free(v6, &set(used), last.map(ip)),
                want.map(ip),
                "{used:?} {last:?}"
            );
        }
        assert_eq!(gateway(v6), Some(ip("fd00:10:244:1::1")));
        assert_eq!(gateway("fd00::/127".parse().unwrap()), None);
        let tiny: IpNet = "fd00::/126".parse().unwrap();
        assert_eq!(
            next_free(tiny, &set(&["fd00::2"]), None),
            Some(ip("fd00::3"))
        );
        assert_eq!(next_free(tiny, &set(&["fd00::2", "fd00::3"]), None), None);
    }

    #[test]
    fn records_survive_reopen_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let net: IpNet = "10.244.3.0/29".parse().unwrap();
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

        // an IPv6 block beside it: its own directory, the same pod uids
        let v6 = Ipam::open(dir.path(), "fd00:10:244:3::/64".parse().unwrap()).unwrap();
        assert!(v6.dir().ends_with("ipam/fd00:10:244:3::-64"));
        assert_eq!(v6.allocate("pod-c").unwrap(), ip("fd00:10:244:3::2"));
        drop(v6);
        let v6 = Ipam::open(dir.path(), "fd00:10:244:3::/64".parse().unwrap()).unwrap();
        assert_eq!(v6.allocate("pod-c").unwrap(), ip("fd00:10:244:3::2"));
        assert_eq!(v6.allocate("pod-d").unwrap(), ip("fd00:10:244:3::3"));
        assert_eq!(v6.release("pod-c").unwrap(), vec![ip("fd00:10:244:3::2")]);
        assert_eq!(v6.allocate("pod-e").unwrap(), ip("fd00:10:244:3::4"));
        // the IPv4 records are untouched by the IPv6 ones
        assert!(ipam.records().unwrap().keys().all(|a| a.is_ipv4()));
    }
}

//! The pod network's own nftables tables, `ip skiff_podnet` and (dual-stack or IPv6)
//! `ip6 skiff_podnet`: pod traffic leaving the cluster CIDR of its family is masqueraded to
//! the node's address (flannel's `ipMasq`). The Service proxy owns different tables; these
//! are replaced whole in one `nft -f -` transaction.

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::IpNet;

use super::{Error, Result};

/// The tables' name (families `ip` and `ip6`).
pub const TABLE: &str = "skiff_podnet";

/// The tables, as `nft -f` text that replaces any earlier version atomically: per family
/// with a cluster CIDR in `cluster_cidrs` a masquerade of its pods' traffic leaving every
/// cluster CIDR of that family (multicast excluded); the table of a family without one is
/// removed.
pub fn ruleset(cluster_cidrs: &[IpNet]) -> String {
    let mut out = String::new();
    for (family, v4, multicast) in [("ip", true, "224.0.0.0/4"), ("ip6", false, "ff00::/8")] {
        let cidrs: Vec<IpNet> = cluster_cidrs
            .iter()
            .filter(|c| c.network().is_ipv4() == v4)
            .map(|c| c.trunc())
            .collect();
        out.push_str(&format!(
            "add table {family} {TABLE}\ndelete table {family} {TABLE}\n"
        ));
        if cidrs.is_empty() {
            continue;
        }
        let set = if cidrs.len() == 1 {
            cidrs[0].to_string()
        } else {
            let list: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
            format!("{{ {} }}", list.join(", "))
        };
        out.push_str(&format!(
            "table {family} {TABLE} {{\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\t{family} saddr {set} {family} daddr != {set} {family} daddr != {multicast} masquerade\n\
             \t}}\n\
             }}\n"
        ));
    }
    out
}

/// The text removing both tables (nothing if they are absent).
pub fn delete() -> String {
    ruleset(&[])
}

/// Runs `nft -f -` with `text` in the calling thread's network namespace.
pub fn apply(text: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            program: "nft",
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|source| Error::Spawn {
                program: "nft",
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| Error::Spawn {
        program: "nft",
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Nft {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn masquerade_ruleset() {
        let text = ruleset(&nets(&["10.244.0.0/16"]));
        assert!(text.starts_with("add table ip skiff_podnet\ndelete table ip skiff_podnet\n"));
        assert!(text.contains(
            "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade"
        ));
        // IPv4 only: an IPv6 table of an earlier configuration goes
        assert!(text.ends_with("add table ip6 skiff_podnet\ndelete table ip6 skiff_podnet\n"));
        // a CIDR given with host bits is truncated to its network
        assert!(ruleset(&nets(&["10.244.9.9/16"])).contains("ip saddr 10.244.0.0/16 "));

        // dual-stack: one table per family
        let text = ruleset(&nets(&["10.244.0.0/16", "fd00:10:244::/56"]));
        assert!(text.contains("table ip skiff_podnet {"), "{text}");
        assert!(text.contains(
            "ip6 saddr fd00:10:244::/56 ip6 daddr != fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade"
        ), "{text}");
        // IPv6 only: the IPv4 table goes
        let text = ruleset(&nets(&["fd00:10:244::/56"]));
        assert!(!text.contains("table ip skiff_podnet {"), "{text}");
        assert!(text.contains("table ip6 skiff_podnet {"), "{text}");
        // two CIDRs of one family: a set
        assert!(
            ruleset(&nets(&["10.244.0.0/16", "10.245.0.0/16"]))
                .contains("ip saddr { 10.244.0.0/16, 10.245.0.0/16 } ip daddr != { 10.244.0.0/16, 10.245.0.0/16 }")
        );
        // removing: both tables, nothing made
        let d = delete();
        assert!(!d.contains('{'), "{d}");
        assert!(d.contains("delete table ip6 skiff_podnet"), "{d}");
    }
}

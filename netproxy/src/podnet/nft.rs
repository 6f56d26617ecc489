//! The pod network's own nftables table, `ip skiff_podnet`: pod traffic leaving the cluster
//! CIDR is masqueraded to the node's address (flannel's `ipMasq`). The Service proxy owns a
//! different table; this one is replaced whole in one `nft -f -` transaction.

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use super::{Error, Result};

/// The table's name (family `ip`).
pub const TABLE: &str = "skiff_podnet";

/// The table, as `nft -f` text that replaces any earlier version atomically.
pub fn ruleset(cluster_cidr: Ipv4Net) -> String {
    let c = cluster_cidr.trunc();
    format!(
        "add table ip {TABLE}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {c} ip daddr != {c} ip daddr != 224.0.0.0/4 masquerade\n\
         \t}}\n\
         }}\n"
    )
}

/// The text removing the table (nothing if it is absent).
pub fn delete() -> String {
    format!("add table ip {TABLE}\ndelete table ip {TABLE}\n")
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

    #[test]
    fn masquerade_ruleset() {
        let text = ruleset("10.244.0.0/16".parse().unwrap());
        assert!(text.starts_with("add table ip skiff_podnet\ndelete table ip skiff_podnet\n"));
        assert!(text.contains(
            "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade"
        ));
        // a CIDR given with host bits is truncated to its network
        assert!(ruleset("10.244.9.9/16".parse().unwrap()).contains("ip saddr 10.244.0.0/16 "));
    }
}

//! The commands the proxy runs: `nft -f -` with a whole transaction on stdin (nft applies a
//! file as one atomic batch), and `conntrack -D` for flows to removed UDP endpoints. Both
//! can run inside a named network namespace (`ip netns exec NAME …`), so a test, or a proxy
//! for a node simulated in a namespace, programs that namespace and nothing else.

use std::net::IpAddr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// A command that could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The program could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The transaction could not be written to nft.
    #[error("cannot write the transaction to nft")]
    Write(#[source] std::io::Error),
    /// The program exited with an error.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// Which UDP flows to delete (`conntrack -D -p udp …`), as kube-proxy's conntrack cleanup.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FlowFilter {
    /// Flows to a Service address that were DNATed to an endpoint that is gone.
    ServiceToEndpoint {
        /// The ClusterIP or external IP.
        service: IpAddr,
        /// The removed endpoint.
        endpoint: IpAddr,
    },
    /// Flows to a NodePort that were DNATed to an endpoint that is gone.
    NodePortToEndpoint {
        /// The NodePort.
        port: u16,
        /// The removed endpoint.
        endpoint: IpAddr,
    },
    /// Flows to a Service address and port that had no endpoints (rejected, or cached
    /// without DNAT) and has some now.
    Service {
        /// The ClusterIP or external IP.
        service: IpAddr,
        /// The Service port.
        port: u16,
    },
    /// Flows to a NodePort that had no endpoints and has some now.
    NodePort {
        /// The NodePort.
        port: u16,
    },
}

impl FlowFilter {
    /// The `conntrack` arguments.
    pub fn args(&self) -> Vec<String> {
        let family = |ip: &IpAddr| {
            if ip.is_ipv6() {
                vec!["-f".to_string(), "ipv6".to_string()]
            } else {
                Vec::new()
            }
        };
        let mut a = vec!["-D".to_string(), "-p".to_string(), "udp".to_string()];
        match self {
            FlowFilter::ServiceToEndpoint { service, endpoint } => {
                a.extend(family(service));
                a.extend([
                    "--orig-dst".into(),
                    service.to_string(),
                    "--dst-nat".into(),
                    endpoint.to_string(),
                ]);
            }
            FlowFilter::NodePortToEndpoint { port, endpoint } => {
                a.extend(family(endpoint));
                a.extend([
                    "--orig-port-dst".into(),
                    port.to_string(),
                    "--dst-nat".into(),
                    endpoint.to_string(),
                ]);
            }
            FlowFilter::Service { service, port } => {
                a.extend(family(service));
                a.extend([
                    "--orig-dst".into(),
                    service.to_string(),
                    "--orig-port-dst".into(),
                    port.to_string(),
                ]);
            }
            FlowFilter::NodePort { port } => {
                a.extend(["--orig-port-dst".into(), port.to_string()]);
            }
        }
        a
    }
}

/// Runs nft and conntrack, in the caller's network namespace or a named one.
#[derive(Clone, Debug, Default)]
pub struct Nft {
    /// A namespace under /run/netns to run in (`ip netns exec`).
    pub netns: Option<String>,
}

impl Nft {
    fn command(&self, program: &str) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        };
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Applies the statements as one transaction (`nft -f -`): all of them or none.
    pub async fn apply(&self, statements: &[String]) -> Result<(), NftError> {
        let mut script = statements.join("\n");
        script.push('\n');
        let mut cmd = self.command("nft");
        cmd.args(["-f", "-"]).stdin(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| NftError::Spawn {
            program: "nft".into(),
            source,
        })?;
        let stdin = child.stdin.take();
        let write = async move {
            if let Some(mut s) = stdin {
                s.write_all(script.as_bytes()).await?;
                s.shutdown().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        let (written, output) = tokio::join!(write, child.wait_with_output());
        let output = output.map_err(|source| NftError::Spawn {
            program: "nft".into(),
            source,
        })?;
        if !output.status.success() {
            return Err(NftError::Failed {
                program: "nft".into(),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        written.map_err(NftError::Write)
    }

    /// Deletes the table if it exists (`skiff proxy --cleanup`).
    pub async fn delete_table(&self, family: &str, name: &str) -> Result<(), NftError> {
        self.apply(&[
            format!("add table {family} {name}"),
            format!("delete table {family} {name}"),
        ])
        .await
    }

    /// Deletes the flows the filter selects; returns how many went.
    pub async fn delete_flows(&self, filter: &FlowFilter) -> Result<u64, NftError> {
        let output = self
            .command("conntrack")
            .args(filter.args())
            .output()
            .await
            .map_err(|source| NftError::Spawn {
                program: "conntrack".into(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        // "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted."
        let count = stderr
            .split("):")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok());
        match count {
            Some(n) => Ok(n),
            None if output.status.success() => Ok(0),
            None => Err(NftError::Failed {
                program: "conntrack".into(),
                status: output.status,
                stderr: stderr.trim().to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_arguments() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases = [
            (
                FlowFilter::ServiceToEndpoint {
                    service: ip("10.96.0.10"),
                    endpoint: ip("10.244.1.5"),
                },
                "-D -p udp --orig-dst 10.96.0.10 --dst-nat 10.244.1.5",
            ),
            (
                FlowFilter::NodePortToEndpoint {
                    port: 30053,
                    endpoint: ip("fd00::5"),
                },
                "-D -p udp -f ipv6 --orig-port-dst 30053 --dst-nat fd00::5",
            ),
            (
                FlowFilter::Service {
                    service: ip("10.96.0.10"),
                    port: 53,
                },
                "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53",
            ),
            (
                FlowFilter::NodePort { port: 30053 },
                "-D -p udp --orig-port-dst 30053",
            ),
        ];
        for (f, want) in cases {
            assert_eq!(f.args().join(" "), want);
        }
    }
}

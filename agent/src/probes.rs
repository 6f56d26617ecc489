//! Container probes as the kubelet runs them: tcpSocket and httpGet from inside the pod's
//! network namespace (a short-lived thread joins it with `setns`), with initialDelaySeconds,
//! periodSeconds, timeoutSeconds, successThreshold and failureThreshold. Exec probes run in
//! the container through the runtime (`crate::exec`, called by the worker); grpc probes
//! through `crate::grpcprobe`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// One probe's progress for one container run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeState {
    /// Consecutive successes.
    pub successes: i32,
    /// Consecutive failures.
    pub failures: i32,
    /// When it last ran.
    pub last_run: Option<Instant>,
    /// The settled result (`None` until a threshold is reached).
    pub result: Option<bool>,
}

/// Whether the probe should run now, `since_start` after the container started.
pub fn due(p: &Probe, st: &ProbeState, since_start: Duration, now: Instant) -> bool {
    if since_start < Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64) {
        return false;
    }
    let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
    st.last_run.is_none_or(|t| now.duration_since(t) >= period)
}

/// Records one outcome; the result settles after successThreshold successes or
/// failureThreshold failures in a row.
pub fn record(p: &Probe, st: &mut ProbeState, ok: bool, now: Instant) {
    st.last_run = Some(now);
    if ok {
        st.successes += 1;
        st.failures = 0;
        if st.successes >= p.success_threshold.unwrap_or(1).max(1) {
            st.result = Some(true);
        }
    } else {
        st.failures += 1;
        st.successes = 0;
        if st.failures >= p.failure_threshold.unwrap_or(3).max(1) {
            st.result = Some(false);
        }
    }
}

fn port(p: &IntOrString, named: &[(String, i32)]) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(s) => s.parse().ok().or_else(|| {
            named
                .iter()
                .find(|(n, _)| n == s)
                .and_then(|(_, p)| u16::try_from(*p).ok())
        }),
    }
}

/// Runs a probe once; `netns` is the pod's network namespace (`None`: the host's),
/// `pod_ip` the default host, `ports` the container's named ports.
pub fn run(
    p: &Probe,
    netns: Option<PathBuf>,
    pod_ip: Option<std::net::IpAddr>,
    ports: &[(String, i32)],
) -> bool {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    let default_ip = pod_ip.unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let target = if let Some(t) = &p.tcp_socket {
        let ip = t
            .host
            .as_deref()
            .and_then(|h| h.parse().ok())
            .unwrap_or(default_ip);
        port(&t.port, ports).map(|port| (SocketAddr::new(ip, port), None))
    } else if let Some(h) = &p.http_get {
        let ip = h
            .host
            .as_deref()
            .and_then(|h| h.parse().ok())
            .unwrap_or(default_ip);
        port(&h.port, ports).map(|port| {
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            let mut req = format!("GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n");
            for hd in h.http_headers.iter().flatten() {
                req.push_str(&format!("{}: {}\r\n", hd.name, hd.value));
            }
            req.push_str("\r\n");
            (SocketAddr::new(ip, port), Some(req))
        })
    } else {
        None // exec runs through crate::exec, grpc through crate::grpcprobe (the worker)
    };
    let Some((addr, http)) = target else {
        return false;
    };
    let probe = move || -> bool {
        if let Some(ns) = &netns {
            let Ok(f) = std::fs::File::open(ns) else {
                return false;
            };
            if nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                return false;
            }
        }
        let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
            return false;
        };
        let Some(req) = http else { return true };
        let _ = s.set_read_timeout(Some(timeout));
        let _ = s.set_write_timeout(Some(timeout));
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let line = status_line(&mut s);
        // HTTP/1.x NNN: 200–399 is success, as the kubelet counts it
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .is_some_and(|c| (200..400).contains(&c))
    };
    // a thread of its own: setns changes only the calling thread
    std::thread::spawn(probe).join().unwrap_or(false)
}

/// Reads the start of an HTTP response up to the end of its status line (or 64 bytes).
/// A read on a socket with a receive timeout is never restarted after a signal (signal(7)),
/// and the agent has handlers (SIGCHLD for its child processes): EINTR is retried here.
fn status_line(s: &mut impl Read) -> String {
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < head.len() && !head[..n].contains(&b'\n') {
        match s.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&head[..n]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn timing_and_thresholds() {
        let p = probe(
            serde_json::json!({"initialDelaySeconds": 5, "periodSeconds": 2,
            "successThreshold": 2, "failureThreshold": 2, "tcpSocket": {"port": 80}}),
        );
        let t0 = Instant::now();
        let mut st = ProbeState::default();
        assert!(!due(&p, &st, Duration::from_secs(4), t0));
        assert!(due(&p, &st, Duration::from_secs(5), t0));
        record(&p, &mut st, true, t0);
        assert_eq!(st.result, None);
        assert!(!due(
            &p,
            &st,
            Duration::from_secs(6),
            t0 + Duration::from_secs(1)
        ));
        assert!(due(
            &p,
            &st,
            Duration::from_secs(7),
            t0 + Duration::from_secs(2)
        ));
        record(&p, &mut st, true, t0);
        assert_eq!(st.result, Some(true));
        record(&p, &mut st, false, t0);
        assert_eq!(st.result, Some(true), "one failure does not flip it");
        record(&p, &mut st, false, t0);
        assert_eq!(st.result, Some(false));
    }

    /// Hands out its chunks one read at a time, an EINTR before each.
    struct Interrupting(Vec<&'static [u8]>, bool);

    impl Read for Interrupting {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.1 = !self.1;
            if self.1 {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            if self.0.is_empty() {
                return Ok(0);
            }
            let chunk = self.0.remove(0);
            buf[..chunk.len()].copy_from_slice(chunk);
            Ok(chunk.len())
        }
    }

    #[test]
    fn status_line_survives_signals_and_split_reads() {
        let mut r = Interrupting(vec![b"HTTP/1.1 2", b"04 No Content\r\nX: y\r\n"], false);
        assert!(status_line(&mut r).starts_with("HTTP/1.1 204 No Content\r\n"));
        let mut short = Interrupting(vec![b"HTTP/1.0 5"], false);
        assert_eq!(status_line(&mut short), "HTTP/1.0 5");
    }

    #[test]
    fn tcp_and_http_probes_on_loopback() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for code in [200, 500] {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap();
                assert!(
                    String::from_utf8_lossy(&buf[..n]).starts_with("GET /healthz HTTP/1.1\r\n")
                );
                write!(s, "HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
            l
        });
        let http = probe(serde_json::json!({"httpGet": {"path": "/healthz", "port": "web"}}));
        let ports = vec![("web".to_string(), port as i32)];
        assert!(run(&http, None, None, &ports));
        assert!(!run(&http, None, None, &ports));
        let l = server.join().unwrap();
        let tcp = probe(serde_json::json!({"tcpSocket": {"port": port}}));
        assert!(run(&tcp, None, None, &[]));
        drop(l);
        assert!(!run(&tcp, None, None, &[]), "nothing listens any more");
        assert!(!run(
            &probe(serde_json::json!({"exec": {"command": ["true"]}})),
            None,
            None,
            &[]
        ));
    }
}

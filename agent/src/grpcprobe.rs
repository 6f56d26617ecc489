//! gRPC probes (`grpc: {port, service}`): the standard `grpc.health.v1.Health/Check` call
//! over HTTP/2 (hyper's client, already in the build; the two protobuf messages have one
//! field each and are coded here), from the pod's network namespace, with the kubelet's
//! verdicts and messages (`pkg/probe/grpc`): SERVING succeeds; another status, an RPC
//! error, a connection failure or the timeout fail.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// The Health service's Check method.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// gRPC status codes the kubelet tells apart.
const UNIMPLEMENTED: u32 = 12;
const DEADLINE_EXCEEDED: u32 = 4;

/// A `HealthCheckRequest{service}` as a length-prefixed gRPC message.
pub fn encode_request(service: &str) -> Vec<u8> {
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        let mut n = service.len();
        while n >= 0x80 {
            msg.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        msg.push(n as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut out = vec![0u8];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(&msg);
    out
}

/// The `status` of a length-prefixed `HealthCheckResponse` (0 when absent, as proto3
/// leaves a default out); `None` when the message is malformed.
pub fn decode_status(body: &[u8]) -> Option<u64> {
    if body.len() < 5 || body[0] != 0 {
        return None;
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let msg = body.get(5..5 + len)?;
    let mut i = 0;
    let mut status = 0;
    let varint = |i: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *msg.get(*i)?;
            *i += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    while i < msg.len() {
        let key = varint(&mut i)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(&mut i)?,
            (_, 0) => {
                varint(&mut i)?;
            }
            (_, 2) => {
                let n = varint(&mut i)? as usize;
                i = i.checked_add(n)?;
            }
            (_, 1) => i += 8,
            (_, 5) => i += 4,
            _ => return None,
        }
    }
    Some(status)
}

/// The name of a `ServingStatus`.
pub fn status_name(s: u64) -> String {
    match s {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// The kubelet's verdict for an answered call: the gRPC status code and message (from the
/// trailers, or the headers of a trailers-only answer) and the response body.
pub fn verdict(code: u32, message: &str, body: &[u8], timeout: Duration) -> (bool, String) {
    match code {
        0 => match decode_status(body) {
            Some(1) => (true, "service healthy".into()),
            Some(s) => (
                false,
                format!("service unhealthy (responded with {:?})", status_name(s)),
            ),
            None => (
                false,
                "error: health rpc probe failed: malformed response".into(),
            ),
        },
        UNIMPLEMENTED => (
            false,
            format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {message}"
            ),
        ),
        DEADLINE_EXCEEDED => (
            false,
            format!(
                "timeout: health rpc did not complete within {}",
                go_duration(timeout)
            ),
        ),
        c => (
            false,
            format!("error: health rpc probe failed: rpc error: code = {c} desc = {message}"),
        ),
    }
}

/// A duration as Go prints whole seconds (`1s`).
fn go_duration(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// One Health/Check call to `addr` for `service` within `timeout`.
pub async fn check(addr: SocketAddr, service: &str, timeout: Duration) -> (bool, String) {
    match tokio::time::timeout(timeout, call(addr, service)).await {
        Ok(Ok((code, message, body))) => verdict(code, &message, &body, timeout),
        Ok(Err(CallError::Connect(e))) => (
            false,
            format!("error: failed to connect service at \"{addr}\": {e}"),
        ),
        Ok(Err(CallError::Rpc(e))) => (false, format!("error: health rpc probe failed: {e}")),
        Err(_) => (
            false,
            format!(
                "timeout: failed to connect service \"{addr}\" within {}",
                go_duration(timeout)
            ),
        ),
    }
}

enum CallError {
    Connect(String),
    Rpc(String),
}

async fn call(addr: SocketAddr, service: &str) -> Result<(u32, String, Vec<u8>), CallError> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| CallError::Connect(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .map_err(|e| CallError::Connect(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::post(format!("http://{addr}{CHECK_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "kube-probe/1.33")
        .body(Full::new(Bytes::from(encode_request(service))))
        .map_err(|e| CallError::Rpc(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| CallError::Rpc(e.to_string()))?;
    let (parts, body) = resp.into_parts();
    let collected = body
        .collect()
        .await
        .map_err(|e| CallError::Rpc(e.to_string()))?;
    driver.abort();
    if !parts.status.is_success() {
        return Err(CallError::Rpc(format!("HTTP status {}", parts.status)));
    }
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let field = |name: &str| {
        trailers
            .get(name)
            .or_else(|| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let code = field("grpc-status")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CallError::Rpc("no grpc-status in the answer".into()))?;
    let message = field("grpc-message").unwrap_or_default();
    Ok((code, message, collected.to_bytes().to_vec()))
}

/// Runs [`check`] from the network namespace `netns` (`None`: the host's) on a thread of
/// its own with a small runtime (setns changes only the calling thread).
pub fn run(
    netns: Option<PathBuf>,
    addr: SocketAddr,
    service: String,
    timeout: Duration,
) -> (bool, String) {
    let probe = move || -> (bool, String) {
        if let Some(ns) = &netns {
            let joined = std::fs::File::open(ns)
                .map_err(|e| e.to_string())
                .and_then(|f| {
                    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = joined {
                return (
                    false,
                    format!("cannot enter the pod's network namespace: {e}"),
                );
            }
        }
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(check(addr, &service, timeout)),
            Err(e) => (false, format!("cannot start the probe's runtime: {e}")),
        }
    };
    std::thread::spawn(probe)
        .join()
        .unwrap_or_else(|_| (false, "the probe thread panicked".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_encoding() {
        assert_eq!(encode_request(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(
            encode_request("ab"),
            vec![0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']
        );
        let long = "s".repeat(200);
        let enc = encode_request(&long);
        assert_eq!(&enc[..8], &[0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
    }

    #[test]
    fn response_decoding() {
        let frame = |msg: &[u8]| {
            let mut v = vec![0];
            v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            v.extend_from_slice(msg);
            v
        };
        assert_eq!(decode_status(&frame(&[0x08, 1])), Some(1));
        assert_eq!(decode_status(&frame(&[0x08, 2])), Some(2));
        assert_eq!(decode_status(&frame(&[])), Some(0));
        // unknown fields are skipped
        assert_eq!(
            decode_status(&frame(&[0x12, 2, b'x', b'y', 0x08, 1])),
            Some(1)
        );
        assert_eq!(decode_status(&[1, 0, 0, 0, 0]), None, "compressed");
        assert_eq!(decode_status(&[0, 0, 0, 0, 9, 0x08]), None, "short");
        assert_eq!(decode_status(&frame(&[0x08])), None, "truncated varint");
    }

    #[test]
    fn verdicts_as_the_kubelet() {
        let t = Duration::from_secs(1);
        let serving = [0, 0, 0, 0, 2, 0x08, 1];
        let not = [0, 0, 0, 0, 2, 0x08, 2];
        assert_eq!(
            verdict(0, "", &serving, t),
            (true, "service healthy".into())
        );
        assert_eq!(
            verdict(0, "", &not, t),
            (
                false,
                "service unhealthy (responded with \"NOT_SERVING\")".into()
            )
        );
        assert!(
            verdict(12, "unknown service", &[], t)
                .1
                .starts_with("error: this server does not implement the grpc health protocol")
        );
        assert_eq!(
            verdict(4, "", &[], t).1,
            "timeout: health rpc did not complete within 1s"
        );
        assert_eq!(
            verdict(5, "unknown service x", &[], t).1,
            "error: health rpc probe failed: rpc error: code = 5 desc = unknown service x"
        );
    }

    #[tokio::test]
    async fn refused_connection_fails() {
        // a socket bound but not listening: connections to its port are refused, and no
        // other test can take the port meanwhile (a dropped listener's port can be)
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let (ok, msg) = check(addr, "", Duration::from_secs(1)).await;
        drop(socket);
        assert!(!ok);
        assert!(
            msg.starts_with("error: failed to connect service at"),
            "{msg}"
        );
    }
}

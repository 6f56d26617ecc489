//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward` (no container), proxied to the agent of the pod's node as
//! kube-apiserver does it: the container is checked (or defaulted to the only one), the
//! node's InternalIP and `status.daemonEndpoints.kubeletEndpoint.Port` give the address, the
//! request goes there over TLS with the API server's kubelet client certificate, logs are
//! streamed back and an upgrade (WebSocket with the subprotocol the agent chose, or SPDY/3.1
//! with its `X-Stream-Protocol-Version`) is relayed byte for byte in both directions.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tracing::{debug, info};

use super::rest::decode_kv;
use super::status::ApiError;
use super::{Server, Target, object_key};
use crate::resources::RESOURCES;

/// How long connecting to an agent may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The kubelet's port when the Node does not say.
const DEFAULT_KUBELET_PORT: u16 = 10250;

/// The container a request is for: the one asked (it must exist), else the pod's only
/// container; kube-apiserver's words otherwise.
pub(crate) fn choose_container(pod: &Value, asked: Option<&str>) -> Result<String, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let names = |key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (init, main, eph) = (
        names("initContainers"),
        names("containers"),
        names("ephemeralContainers"),
    );
    match asked.filter(|c| !c.is_empty()) {
        Some(c) => {
            if init.iter().chain(&main).chain(&eph).any(|n| n == c) {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None => match main.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ApiError::bad_request(format!(
                "pod {name} does not have a container"
            ))),
            _ => {
                let all: Vec<String> = init.into_iter().chain(main).chain(eph).collect();
                Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    all.join(" ")
                )))
            }
        },
    }
}

/// The node's agent endpoint: its InternalIP and kubelet port.
pub(crate) fn node_endpoint(node: &Value) -> Option<(IpAddr, u16)> {
    let ip = node["status"]["addresses"]
        .as_array()?
        .iter()
        .filter(|a| a["type"] == "InternalIP")
        .find_map(|a| a["address"].as_str()?.parse::<IpAddr>().ok())?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some((ip, port))
}

/// The query passed to the agent: the client's, less `container` (it is in the path).
pub(crate) fn upstream_query(raw: Option<&str>) -> String {
    raw.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some("container"))
        .collect::<Vec<_>>()
        .join("&")
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(503, "ServiceUnavailable", message)
}

/// Serves a pods/log, pods/exec, pods/attach or pods/portforward request.
pub(crate) async fn pod_stream(
    server: &Server,
    target: &Target,
    mut req: Request<Body>,
) -> Result<Response, ApiError> {
    let sub = target.sub.as_deref().unwrap_or_default();
    let method_ok = match sub {
        "log" => req.method() == Method::GET,
        _ => matches!(*req.method(), Method::GET | Method::POST),
    };
    if !method_ok {
        return Err(ApiError::method_not_allowed());
    }
    let ns = target.namespace.as_deref().unwrap_or("default");
    let name = target.name.as_deref().unwrap_or_default();
    let kv = server
        .store
        .get(&target.key(name))
        .await?
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let pod = decode_kv(&kv)?;
    let query = super::parse_query(req.uri().query());
    // port-forward is to the pod, not to one of its containers
    let container = match sub {
        "portforward" => String::new(),
        _ => choose_container(&pod, query.get("container").map(String::as_str))?,
    };
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let nodes = RESOURCES
        .iter()
        .find(|r| r.group.is_empty() && r.plural == "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let node = server
        .store
        .get(&object_key(nodes, None, node_name))
        .await?
        .ok_or_else(|| unavailable(format!("node {node_name} of pod {name} is not registered")))?;
    let (ip, port) = node_endpoint(&decode_kv(&node)?)
        .ok_or_else(|| unavailable(format!("node {node_name} has no InternalIP address")))?;
    let q = upstream_query(req.uri().query());
    let path = match sub {
        "log" => format!("/containerLogs/{ns}/{name}/{container}?{q}"),
        "portforward" => format!("/portForward/{ns}/{name}?{q}"),
        _ => format!("/{sub}/{ns}/{name}/{container}?{q}"),
    };
    info!(pod = %format!("{ns}/{name}"), %container, node = %node_name, sub, "proxy to agent");
    let tcp = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect((ip, port)))
        .await
        .map_err(|_| {
            unavailable(format!(
                "error dialing backend: dial tcp {ip}:{port}: i/o timeout"
            ))
        })?
        .map_err(|e| unavailable(format!("error dialing backend: dial tcp {ip}:{port}: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(server.kubelet_tls.clone());
    let tls = connector
        .connect(rustls::pki_types::ServerName::IpAddress(ip.into()), tcp)
        .await
        .map_err(|e| unavailable(format!("error dialing backend: tls: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unavailable(format!("error dialing backend: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "agent connection ended");
        }
    });
    let mut up = Request::builder()
        .method(req.method().clone())
        .uri(&path)
        .header(header::HOST, format!("{ip}:{port}"));
    for (k, v) in req.headers() {
        // our credentials are the client certificate; the hop is HTTP/1.1 without a body
        if !matches!(
            *k,
            header::AUTHORIZATION
                | header::HOST
                | header::CONTENT_LENGTH
                | header::TRANSFER_ENCODING
        ) {
            up = up.header(k, v);
        }
    }
    let up = up
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = sender
        .send_request(up)
        .await
        .map_err(|e| unavailable(format!("error talking to the node agent: {e}")))?;
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let mut out = Response::builder().status(status);
        for (k, v) in resp.headers() {
            out = out.header(k, v);
        }
        let client = hyper::upgrade::on(&mut req);
        let agent = hyper::upgrade::on(resp);
        tokio::spawn(async move {
            match tokio::try_join!(client, agent) {
                Ok((c, a)) => {
                    let (mut c, mut a) = (TokioIo::new(c), TokioIo::new(a));
                    let r = tokio::io::copy_bidirectional(&mut c, &mut a).await;
                    debug!(result = ?r, "stream relay ended");
                }
                Err(e) => debug!(error = %e, "upgrade relay failed"),
            }
        });
        return out
            .body(Body::empty())
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    if !status.is_success() {
        // the agent's plain-text error as a Status, as kube-apiserver shows it
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            resp.into_body(),
            64 * 1024,
        ))
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
        .unwrap_or_default();
        let reason = match status.as_u16() {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            _ => "InternalError",
        };
        return Err(ApiError::new(status.as_u16(), reason, body));
    }
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = parts.status;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        out.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    Ok(out)
}

/// Whether a target is one of the proxied pod subresources.
pub(crate) fn is_pod_stream(t: &Target) -> bool {
    t.info.group.is_empty()
        && t.info.plural == "pods"
        && t.name.is_some()
        && matches!(
            t.sub.as_deref(),
            Some("log" | "exec" | "attach" | "portforward")
        )
}

/// Keeps the type of the shared TLS configuration in one place.
pub(crate) type KubeletTls = Arc<rustls::ClientConfig>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_defaults_and_errors_as_kube_apiserver() {
        let one = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        let two = json!({"metadata": {"name": "web"}, "spec": {
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "a"}, {"name": "b"}]}});
        let none = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        for (pod, asked, want) in [
            (&one, None, Ok("c")),
            (&one, Some(""), Ok("c")),
            (&one, Some("c"), Ok("c")),
            (&one, Some("x"), Err("container x is not valid for pod p")),
            (&two, Some("b"), Ok("b")),
            (&two, Some("init"), Ok("init")),
            (
                &two,
                None,
                Err("a container name must be specified for pod web, choose one of: [init a b]"),
            ),
            (&none, None, Err("pod p does not have a container")),
        ] {
            let got = choose_container(pod, asked);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w),
                (Err(e), Err(w)) => {
                    assert_eq!((e.code, e.message.as_str()), (400, w));
                }
                (g, w) => panic!("{asked:?}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn node_endpoint_from_status() {
        let n = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 41000}}}});
        assert_eq!(
            node_endpoint(&n),
            Some(("10.0.0.5".parse().unwrap(), 41000))
        );
        let n = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.6"}]}});
        assert_eq!(
            node_endpoint(&n),
            Some(("10.0.0.6".parse().unwrap(), 10250))
        );
        let n = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}});
        assert_eq!(node_endpoint(&n), None);
    }

    #[test]
    fn container_is_dropped_from_the_query() {
        for (raw, want) in [
            (None, ""),
            (Some("container=c&follow=true"), "follow=true"),
            (
                Some("command=sh&command=-c&command=exit%203&container=c&stdout=true"),
                "command=sh&command=-c&command=exit%203&stdout=true",
            ),
            (Some("containerx=1"), "containerx=1"),
        ] {
            assert_eq!(upstream_query(raw), want, "{raw:?}");
        }
    }
}

//! Request metrics around the handler, and the `/metrics` endpoint.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::{ApiError, Identity, Server};
use crate::metrics::RequestLabels;

/// The labels of a request: its verb and resource, as the handler will see them.
pub(super) fn labels(method: &Method, path: &str, query: Option<&str>) -> RequestLabels {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let target = match segs.as_slice() {
        ["api", v, rest @ ..] => super::parse_target("", v, rest),
        ["apis", g, v, rest @ ..] => super::parse_target(g, v, rest),
        _ => None,
    };
    match target {
        Some(t) => RequestLabels {
            verb: super::verb(method, &t, &super::parse_query(query)).into(),
            group: t.info.group.into(),
            resource: t.info.plural.into(),
            subresource: t.sub.clone().unwrap_or_default(),
        },
        None => RequestLabels {
            verb: method.as_str().to_ascii_lowercase(),
            ..Default::default()
        },
    }
}

/// Runs the handler, counting the request, its latency and (for watches) the open stream.
pub(super) async fn handle(server: Arc<Server>, req: Request<Body>) -> Response {
    let started = Instant::now();
    let labels = labels(req.method(), req.uri().path(), req.uri().query());
    let metrics = server.metrics.clone();
    let resp = super::handle(server, req).await;
    metrics.observe_request(&labels, resp.status().as_u16(), started.elapsed());
    if labels.verb != "watch" || !resp.status().is_success() {
        return resp;
    }
    // the watch is open while its body streams
    let guard = metrics.watch_started(&labels);
    resp.map(|body| {
        Body::from_stream(body.into_data_stream().map(move |chunk| {
            let _open = &guard;
            chunk
        }))
    })
}

/// `GET /metrics`: the admin may read it (as kube-apiserver's system:monitoring role).
pub(super) fn metrics(server: &Server, identity: Identity) -> Response {
    if identity != Identity::Admin {
        return ApiError::forbidden("forbidden: User \"system:node\" cannot get path \"/metrics\"")
            .into_response();
    }
    match server.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(_) => ApiError::new(500, "InternalError", "cannot encode the metrics").into_response(),
    }
}

//! Watch: a chunked stream of `{"type": …, "object": …}` lines, with Kubernetes'
//! resourceVersion semantics, selectors applied to events (an object leaving the selector is
//! DELETED), bookmarks, timeouts, initial events and Table objects when asked for.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::rest::{Ctx, decode_kv, item_bytes, make_table, selectors, wants_table};
use super::select::FieldSelector;
use super::status::ApiError;
use crate::resources::is_storage;
use crate::resources::{ResourceInfo, convert};
use crate::store::{EventKind, StoreError};

/// How often bookmarks are sent when allowed.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

struct Render {
    info: &'static ResourceInfo,
    table: Option<String>,
}

impl Render {
    fn line(&self, ty: &str, obj: &Value) -> Bytes {
        let mut obj = obj.clone();
        if ty != "BOOKMARK" && ty != "ERROR" {
            convert(self.info, &mut obj);
        }
        let object = match &self.table {
            Some(include) if ty != "BOOKMARK" && ty != "ERROR" => {
                make_table(self.info, include, std::slice::from_ref(&obj))
            }
            _ => obj,
        };
        let mut s = json!({"type": ty, "object": object}).to_string();
        s.push('\n');
        Bytes::from(s)
    }
    /// An event line around an object already rendered as JSON text (no Table).
    fn raw_line(ty: &str, object: &[u8]) -> Bytes {
        let mut s = Vec::with_capacity(object.len() + 32);
        s.extend_from_slice(b"{\"type\":\"");
        s.extend_from_slice(ty.as_bytes());
        s.extend_from_slice(b"\",\"object\":");
        s.extend_from_slice(object);
        s.extend_from_slice(b"}\n");
        Bytes::from(s)
    }
    fn bookmark(&self, rev: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.line(
            "BOOKMARK",
            &json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": meta}),
        )
    }
}

fn error_line(render: &Render, e: ApiError) -> Bytes {
    render.line("ERROR", &e.to_status())
}

/// GET with `watch=true` (or under `/watch/`).
pub(crate) async fn watch(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    if ctx.target.sub.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    let (ls, mut fs) = selectors(ctx)?;
    if let Some(name) = &ctx.target.name {
        fs.0.push(("metadata.name".into(), true, name.clone()));
    }
    let fs: FieldSelector = fs;
    let q = |k: &str| ctx.query.get(k).map(String::as_str);
    let rv = q("resourceVersion").unwrap_or_default();
    let send_initial = q("sendInitialEvents") == Some("true");
    let bookmarks = q("allowWatchBookmarks") == Some("true");
    let timeout = q("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .unwrap_or(1800);
    let render = Render {
        info: ctx.info(),
        table: wants_table(ctx.accept)
            .then(|| q("includeObject").unwrap_or("Metadata").to_string()),
    };
    let server = ctx.server.clone();
    let store = &server.store;
    let prefix = ctx.target.prefix();
    // Without selectors or Tables, objects go out as stored (see `raw_item`): no watcher
    // decodes and re-encodes every event.
    let plain = render.table.is_none() && ls.0.is_empty() && fs.0.is_empty();
    let (initial, start) = if rv.is_empty() || rv == "0" || send_initial {
        let res = store.list(&prefix, None, 0, None).await?;
        let mut lines = Vec::new();
        for kv in &res.items {
            if plain {
                lines.push(Render::raw_line("ADDED", &item_bytes(render.info, kv)?));
                continue;
            }
            let o = decode_kv(kv)?;
            if ls.matches(&o) && fs.matches(&o) {
                lines.push(render.line("ADDED", &o));
            }
        }
        (lines, res.revision)
    } else {
        let n = rv
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
        (Vec::new(), n)
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let stream = store.watch(&prefix, start).await;
    let mut stop = server.shutdown.clone();
    tokio::spawn(async move {
        let server = server;
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut events = match stream {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(error_line(&render, e.into())).await;
                return;
            }
        };
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let mut last = start;
        if send_initial && bookmarks && tx.send(render.bookmark(last, true)).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = stop.changed() => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(render.bookmark(last, false)).await.is_err() {
                        return;
                    }
                }
                ev = events.next() => {
                    let Some(ev) = ev else { return };
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(e @ StoreError::Compacted { .. }) => {
                            let _ = tx.send(error_line(&render, e.into())).await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(error_line(&render, ApiError::gone(e.to_string()))).await;
                            return;
                        }
                    };
                    last = ev.kv.mod_revision;
                    if plain {
                        let ty = match (ev.kind, ev.prev.is_some()) {
                            (EventKind::Delete, _) => "DELETED",
                            (EventKind::Put, true) => "MODIFIED",
                            (EventKind::Put, false) => "ADDED",
                        };
                        // one rendering per event for every watcher of the storage version; other
                        // versions (converted) are rendered per watcher
                        let render_line = || item_bytes(render.info, &ev.kv).map(|raw| Render::raw_line(ty, &raw));
                        let line = if is_storage(render.info) {
                            server.watch_lines.get_or_render(&ev.kv, ty, render_line)
                        } else {
                            render_line()
                        };
                        let Ok(line) = line else { continue };
                        if tx.send(line).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let Ok(obj) = decode_kv(&ev.kv) else { continue };
                    let sel = |o: &Value| ls.matches(o) && fs.matches(o);
                    let prev_match = ev
                        .prev
                        .as_ref()
                        .and_then(|p| decode_kv(p).ok())
                        .is_some_and(|p| sel(&p));
                    let ty = match ev.kind {
                        EventKind::Delete if prev_match => "DELETED",
                        EventKind::Delete => continue,
                        EventKind::Put => match (prev_match, sel(&obj)) {
                            (true, true) => "MODIFIED",
                            (false, true) => "ADDED",
                            (true, false) => "DELETED",
                            (false, false) => continue,
                        },
                    };
                    if tx.send(render.line(ty, &obj)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    }));
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(r)
}

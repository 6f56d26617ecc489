//! Port-forward, as the kubelet serves `/portForward/{ns}/{pod}` (client-go
//! `portforward`, protocol `portforward.k8s.io`): over one SPDY/3.1 connection the client
//! opens, for every connection it forwards, an `error` stream and then a `data` stream, both
//! with the headers `port` and `requestID`. Once a pair is complete the agent connects to
//! `localhost:port` inside the pod's network namespace and copies both ways; the pod's end
//! of file becomes the data stream's FIN, the client's FIN shuts down our write side, and a
//! failure (nothing listening) is written as text on the error stream, which is then closed.
//! kubectl 1.31+ sends the same SPDY bytes inside WebSocket binary messages
//! (subprotocol `SPDY/3.1+portforward.k8s.io`): [`WsBytes`] makes such a WebSocket a byte
//! stream again.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::spdy::{self, Headers};
use crate::spdy_conn::{Connection, Event, Sender};

/// The protocol version of port-forward over SPDY.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of SPDY tunnelled in WebSocket (kubectl 1.31+).
pub const WS_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a stream of a port-forward is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKind {
    /// `error` or `data`.
    pub data: bool,
    /// The pod's port.
    pub port: u16,
    /// Pairs an error stream with its data stream.
    pub request: String,
}

/// Reads a port-forward stream's headers as the kubelet does (`port` a number 1–65535,
/// `streamType` error or data, `requestID` present).
pub fn stream_kind(headers: &Headers) -> Result<StreamKind, String> {
    let port = spdy::header(headers, "port").ok_or("port header must be specified")?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port header {port:?}"))?;
    let data = match spdy::header(headers, "streamType") {
        Some("data") => true,
        Some("error") => false,
        other => return Err(format!("invalid stream type {:?}", other.unwrap_or(""))),
    };
    let request = spdy::header(headers, "requestID")
        .ok_or("requestID header must be specified")?
        .to_string();
    Ok(StreamKind {
        data,
        port,
        request,
    })
}

/// Connects to `localhost:port` in the network namespace at `netns` (`None`: the host's,
/// for hostNetwork pods): IPv4 first, then IPv6, as the kubelet dials `localhost`.
async fn connect(netns: Option<PathBuf>, port: u16) -> Result<tokio::net::TcpStream, String> {
    let dial = move || -> Result<TcpStream, String> {
        if let Some(ns) = &netns {
            let f = std::fs::File::open(ns).map_err(|e| format!("open {}: {e}", ns.display()))?;
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("enter the pod's network namespace: {e}"))?;
        }
        let v4 = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
        let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port);
        TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT)
            .or_else(|_| TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT))
            .map_err(|e| format!("dial tcp4 127.0.0.1:{port}: connect: {e}"))
    };
    // a thread of its own: setns changes only the calling thread; the socket stays in the
    // namespace it was made in
    let s = tokio::task::spawn_blocking(dial)
        .await
        .map_err(|e| e.to_string())??;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    tokio::net::TcpStream::from_std(s).map_err(|e| e.to_string())
}

/// One forwarded connection's streams, as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: u16,
    /// Bytes from the client for the pod, while the pod connection is being made.
    to_pod: Option<mpsc::Sender<Option<Vec<u8>>>>,
}

/// Serves a port-forward connection until the client closes it.
pub async fn serve(mut conn: Connection, pod: String, netns: Option<PathBuf>) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut by_stream: HashMap<u32, String> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(event) = conn.events.recv().await {
        match event {
            Event::Stream { id, headers } => {
                let kind = match stream_kind(&headers) {
                    Ok(k) => k,
                    Err(e) => {
                        tracing::debug!(%pod, stream = id, error = %e, "port-forward stream refused");
                        conn.sender.reset(id, spdy::RST_PROTOCOL_ERROR).await;
                        continue;
                    }
                };
                by_stream.insert(id, kind.request.clone());
                let pair = pairs.entry(kind.request.clone()).or_default();
                pair.port = kind.port;
                if kind.data {
                    pair.data = Some(id);
                } else {
                    pair.error = Some(id);
                }
                if let (Some(error), Some(data), None) = (pair.error, pair.data, &pair.to_pod) {
                    let (tx, rx) = mpsc::channel(16);
                    pair.to_pod = Some(tx);
                    tracing::info!(%pod, port = pair.port, request = %kind.request, "port-forward");
                    tasks.spawn(forward(
                        conn.sender.clone(),
                        netns.clone(),
                        pair.port,
                        error,
                        data,
                        rx,
                    ));
                }
            }
            Event::Data { id, data } => {
                if let Some(tx) = by_stream
                    .get(&id)
                    .and_then(|r| pairs.get(r))
                    .filter(|p| p.data == Some(id))
                    .and_then(|p| p.to_pod.as_ref())
                {
                    let _ = tx.send(Some(data)).await;
                }
            }
            Event::Fin { id } | Event::Reset { id } => {
                let Some(request) = by_stream.get(&id).cloned() else {
                    continue;
                };
                if let Some(p) = pairs.get(&request)
                    && p.data == Some(id)
                    && let Some(tx) = &p.to_pod
                {
                    let _ = tx.send(None).await;
                }
            }
            Event::GoAway => {}
        }
        while tasks.try_join_next().is_some() {}
    }
    tasks.shutdown().await;
    conn.finish(Duration::ZERO).await;
}

/// One forwarded connection: the pod's port and the client's streams.
async fn forward(
    sender: Sender,
    netns: Option<PathBuf>,
    port: u16,
    error: u32,
    data: u32,
    mut from_client: mpsc::Receiver<Option<Vec<u8>>>,
) {
    let tcp = match connect(netns, port).await {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod: {e}");
            tracing::info!(port, error = %msg, "port-forward failed");
            sender.data(error, msg.into_bytes()).await;
            sender.fin(error).await;
            sender.fin(data).await;
            return;
        }
    };
    let (mut rd, mut wr) = tcp.into_split();
    let to_pod = async move {
        while let Some(Some(bytes)) = from_client.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
        // keep taking the client's data so the connection's reader never waits on us
        while from_client.recv().await.is_some() {}
    };
    let s = sender.clone();
    let from_pod = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !s.data(data, buf[..n].to_vec()).await {
                        break;
                    }
                }
            }
        }
        s.fin(data).await;
    };
    // the pod's end of file ends the forward (as the kubelet's copy from the pod)
    tokio::select! {
        _ = from_pod => {}
        _ = async { to_pod.await; std::future::pending::<()>().await } => {}
    }
    sender.fin(error).await;
}

/// A WebSocket whose binary messages carry a byte stream (client-go's tunnelling of SPDY
/// in WebSocket).
pub struct WsBytes<S> {
    ws: WebSocketStream<S>,
    pending: Vec<u8>,
    eof: bool,
}

impl<S> WsBytes<S> {
    /// Wraps an accepted WebSocket.
    pub fn new(ws: WebSocketStream<S>) -> WsBytes<S> {
        WsBytes {
            ws,
            pending: Vec::new(),
            eof: false,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut this.ws).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(Message::Binary(b)))) => this.pending.extend_from_slice(&b),
                Poll::Ready(Some(Ok(Message::Close(_)))) | Poll::Ready(None) => this.eof = true,
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => {
                    this.eof = true;
                    return Poll::Ready(Err(std::io::Error::other(e)));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.ws).poll_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e))),
            Poll::Ready(Ok(())) => {}
        }
        Pin::new(&mut this.ws)
            .start_send(Message::binary(buf.to_vec()))
            .map_err(std::io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(std::io::Error::other)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_close(cx)
            .map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::spdy::test_headers as h;

    #[test]
    fn stream_headers_as_the_kubelet() {
        let ok = |port, data, request: &str| {
            Ok(StreamKind {
                data,
                port,
                request: request.into(),
            })
        };
        let cases = [
            (
                h(&[("port", "80"), ("streamtype", "error"), ("requestid", "0")]),
                ok(80, false, "0"),
            ),
            (
                h(&[("Port", "8080"), ("streamType", "data"), ("requestID", "7")]),
                ok(8080, true, "7"),
            ),
            (h(&[("streamtype", "data"), ("requestid", "0")]), Err(())),
            (
                h(&[("port", "0"), ("streamtype", "data"), ("requestid", "0")]),
                Err(()),
            ),
            (
                h(&[("port", "x"), ("streamtype", "data"), ("requestid", "0")]),
                Err(()),
            ),
            (
                h(&[("port", "80"), ("streamtype", "stdin"), ("requestid", "0")]),
                Err(()),
            ),
            (h(&[("port", "80"), ("streamtype", "data")]), Err(())),
        ];
        for (headers, want) in cases {
            assert_eq!(stream_kind(&headers).map_err(|_| ()), want, "{headers:?}");
        }
    }

    /// Connections in the host's namespace: a listener on loopback is reached, a port with
    /// nothing listening is an error naming it.
    #[tokio::test]
    async fn connects_to_localhost_or_says_why_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (dialed, accepted) = tokio::join!(connect(None, port), listener.accept());
        assert_eq!(dialed.unwrap().local_addr().unwrap(), accepted.unwrap().1);
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = free.local_addr().unwrap().port();
        drop(free);
        let e = connect(None, closed).await.unwrap_err();
        assert!(e.contains(&format!("127.0.0.1:{closed}")), "{e}");
    }
}

//! The two transports of an exec or attach session, as the kubelet serves them: WebSocket
//! (`v5`/`v4.channel.k8s.io`, one channel byte per message) and SPDY/3.1 (`v4`…`channel.k8s.io`,
//! one stream per channel, named by its `streamType` header). The work (exec's process,
//! attach's container) sees neither: it reads [`Incoming`] from the client and writes
//! `(channel, bytes)` to [`Out`]; the channels are those of [`crate::remotecommand`].

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::remotecommand::{self, ERROR, Incoming, RESIZE, STDERR, STDIN, STDOUT, StreamQuery};
use crate::spdy;
use crate::spdy_conn::{Connection, Event};

/// Output of a session: a channel and its bytes.
pub type Out = mpsc::Sender<(u8, Vec<u8>)>;

/// How long a SPDY client has to open its streams (the kubelet's default
/// `streamCreationTimeout`).
const STREAM_CREATION: Duration = Duration::from_secs(30);
/// How long a SPDY client has to close the connection after the status.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// One WebSocket session: a readiness message on the lowest output channel (as the kubelet
/// sends it), the work, then the status on the error channel and a normal close (1000), which
/// client-go reads as the streams' end of file.
pub async fn websocket<S, F, Fut>(ws: WebSocketStream<S>, protocol: &str, q: &StreamQuery, work: F)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(mpsc::Receiver<Incoming>, Out) -> Fut,
    Fut: std::future::Future<Output = Result<i32, String>>,
{
    let (mut sink, mut source) = ws.split();
    let (out, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(64);
    let writer = tokio::spawn(async move {
        while let Some((channel, data)) = out_rx.recv().await {
            if sink
                .send(Message::binary(remotecommand::frame(channel, &data)))
                .await
                .is_err()
            {
                return;
            }
        }
        let normal = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(normal))).await;
        let _ = sink.close().await;
    });
    let (in_tx, incoming) = mpsc::channel::<Incoming>(16);
    let protocol = protocol.to_string();
    let reader = tokio::spawn(async move {
        while let Some(msg) = source.next().await {
            match msg {
                Ok(Message::Binary(data)) => match remotecommand::decode(&data, &protocol) {
                    Ok(Incoming::Ignored) => {}
                    Ok(m) => {
                        if in_tx.send(m).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "ignored message"),
                },
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    let first = if q.stdout {
        STDOUT
    } else if q.stderr {
        STDERR
    } else {
        ERROR
    };
    let _ = out.send((first, Vec::new())).await;
    let outcome = work(incoming, out.clone()).await;
    let status = remotecommand::status(&outcome).to_string();
    let _ = out.send((ERROR, status.into_bytes())).await;
    drop(out);
    let _ = writer.await;
    reader.abort();
}

/// The streams of a SPDY session by kind.
#[derive(Debug, Default)]
struct Streams {
    error: Option<u32>,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

impl Streams {
    fn complete(&self, q: &StreamQuery, resize: bool) -> bool {
        self.error.is_some()
            && (!q.stdin || self.stdin.is_some())
            && (!q.stdout || self.stdout.is_some())
            && (!q.stderr || self.stderr.is_some())
            && (!(q.tty && resize) || self.resize.is_some())
    }

    fn of_channel(&self, channel: u8) -> Option<u32> {
        match channel {
            STDOUT => self.stdout,
            STDERR => self.stderr,
            ERROR => self.error,
            _ => None,
        }
    }
}

/// One SPDY/3.1 session on an upgraded connection: waits for the client's streams (error,
/// and stdin, stdout, stderr, resize as asked), runs the work, then writes the status on the
/// error stream and ends every stream of ours, as the kubelet's remotecommand server does.
pub async fn spdy<IO, F, Fut>(io: IO, protocol: &'static str, q: &StreamQuery, work: F)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    F: FnOnce(mpsc::Receiver<Incoming>, Out) -> Fut,
    Fut: std::future::Future<Output = Result<i32, String>>,
{
    let mut conn = match Connection::start(io) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "spdy connection");
            return;
        }
    };
    let has_resize = remotecommand::spdy_has_resize(protocol);
    let mut streams = Streams::default();
    let mut early = Vec::new();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION;
    while !streams.complete(q, has_resize) {
        let event = match tokio::time::timeout_at(deadline, conn.events.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(_) => {
                tracing::info!(?streams, "spdy client did not open its streams in time");
                conn.finish(Duration::ZERO).await;
                return;
            }
        };
        match event {
            Event::Stream { id, headers } => {
                let slot = match spdy::header(&headers, "streamType") {
                    Some("error") => &mut streams.error,
                    Some("stdin") => &mut streams.stdin,
                    Some("stdout") => &mut streams.stdout,
                    Some("stderr") => &mut streams.stderr,
                    Some("resize") => &mut streams.resize,
                    other => {
                        tracing::debug!(stream = id, kind = ?other, "unexpected stream type");
                        conn.sender.reset(id, spdy::RST_REFUSED_STREAM).await;
                        continue;
                    }
                };
                *slot = Some(id);
            }
            other => early.push(other),
        }
    }
    tracing::debug!(?streams, protocol, "spdy streams open");
    let (in_tx, incoming) = mpsc::channel::<Incoming>(16);
    let (stdin, resize) = (streams.stdin, streams.resize);
    let mut events = conn.take_events();
    let reader = tokio::spawn(async move {
        let mut sizes = Vec::new();
        let mut pending = early.into_iter();
        loop {
            let event = match pending.next() {
                Some(e) => e,
                None => match events.recv().await {
                    Some(e) => e,
                    None => return,
                },
            };
            let msgs = match event {
                Event::Data { id, data } if Some(id) == stdin => vec![Incoming::Stdin(data)],
                Event::Data { id, data } if Some(id) == resize => {
                    sizes.extend_from_slice(&data);
                    remotecommand::resize_events(&mut sizes)
                }
                Event::Fin { id } | Event::Reset { id } if Some(id) == stdin => {
                    vec![Incoming::Close(STDIN)]
                }
                _ => Vec::new(),
            };
            for m in msgs {
                if in_tx.send(m).await.is_err() {
                    return;
                }
            }
        }
    });
    let (out, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(64);
    let sender = conn.sender.clone();
    let routes = (streams.stdout, streams.stderr, streams.error);
    let writer = tokio::spawn(async move {
        let of = |c| {
            Streams {
                stdout: routes.0,
                stderr: routes.1,
                error: routes.2,
                ..Default::default()
            }
            .of_channel(c)
        };
        while let Some((channel, data)) = out_rx.recv().await {
            if data.is_empty() || channel == RESIZE {
                continue;
            }
            if let Some(id) = of(channel)
                && !sender.data(id, data).await
            {
                return;
            }
        }
    });
    let outcome = work(incoming, out.clone()).await;
    drop(out);
    let _ = writer.await;
    let sender = &conn.sender;
    if let (Some(id), Some(status)) = (
        streams.error,
        remotecommand::spdy_status(protocol, &outcome),
    ) {
        sender.data(id, status).await;
    }
    for id in [
        streams.stdout,
        streams.stderr,
        streams.error,
        streams.stdin,
        streams.resize,
    ]
    .into_iter()
    .flatten()
    {
        sender.fin(id).await;
    }
    // the connection ends when the client closes it (it resets its streams, sends GOAWAY
    // and closes once it has read the status)
    conn.finish(CLOSE_GRACE).await;
    reader.abort();
}

//! The server side of a SPDY/3.1 connection over an upgraded HTTP connection, as the
//! kubelet runs it for exec, attach and port-forward (moby/spdystream underneath client-go).
//!
//! A reader task decodes frames ([`crate::spdy`]): every SYN_STREAM from the client is
//! answered with an empty SYN_REPLY and reported as [`Event::Stream`]; DATA becomes
//! [`Event::Data`] (a WINDOW_UPDATE goes back once half a window has been handed on, so a
//! peer that honours windows never stalls), FIN [`Event::Fin`], RST_STREAM
//! [`Event::Reset`]; PINGs are echoed; SETTINGS and WINDOW_UPDATE feed the flow control of
//! the writer task, which alone writes to the connection and keeps frame order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::spdy::{Decoder, Encoder, FLAG_FIN, FlowControl, Frame, Headers, SpdyError};

/// Largest DATA frame written (what spdystream's readers take in one go comfortably).
const CHUNK: usize = 32 * 1024;

/// What the client did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// It opened a stream (already replied to).
    Stream {
        /// The stream id.
        id: u32,
        /// Its headers.
        headers: Headers,
    },
    /// Bytes on a stream.
    Data {
        /// The stream id.
        id: u32,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The client's side of a stream ended.
    Fin {
        /// The stream id.
        id: u32,
    },
    /// The client reset a stream.
    Reset {
        /// The stream id.
        id: u32,
    },
    /// The client will open no more streams (it is closing the connection).
    GoAway,
}

enum Cmd {
    Frame(Frame),
    Data { id: u32, data: Vec<u8>, fin: bool },
}

/// Writes on the connection; cheap to clone.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<Cmd>,
}

impl Sender {
    /// Data on stream `id`, cut into frames within the peer's windows; false once the
    /// connection is gone.
    pub async fn data(&self, id: u32, data: Vec<u8>) -> bool {
        self.tx
            .send(Cmd::Data {
                id,
                data,
                fin: false,
            })
            .await
            .is_ok()
    }

    /// Ends our side of stream `id` (an empty DATA frame with FIN).
    pub async fn fin(&self, id: u32) -> bool {
        self.tx
            .send(Cmd::Data {
                id,
                data: Vec::new(),
                fin: true,
            })
            .await
            .is_ok()
    }

    /// Resets stream `id` with `status`.
    pub async fn reset(&self, id: u32, status: u32) -> bool {
        self.tx
            .send(Cmd::Frame(Frame::RstStream { id, status }))
            .await
            .is_ok()
    }
}

/// A running connection.
pub struct Connection {
    /// What the client does; ends when the client closed the connection.
    pub events: mpsc::Receiver<Event>,
    /// Writes to the client.
    pub sender: Sender,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Connection {
    /// Starts the reader and writer tasks on `io`.
    pub fn start<IO>(io: IO) -> Result<Connection, SpdyError>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let encoder = Encoder::new()?;
        let (rd, wr) = tokio::io::split(io);
        let flow = Arc::new(Mutex::new(FlowControl::default()));
        let room = Arc::new(Notify::new());
        let (tx, rx) = mpsc::channel(64);
        let (events_tx, events) = mpsc::channel(64);
        let sender = Sender { tx };
        let writer = tokio::spawn(write_loop(wr, encoder, rx, flow.clone(), room.clone()));
        let reader = tokio::spawn(read_loop(rd, sender.clone(), events_tx, flow, room));
        Ok(Connection {
            events,
            sender,
            reader,
            writer,
        })
    }

    /// Takes the client's events (the connection keeps answering without them).
    pub fn take_events(&mut self) -> mpsc::Receiver<Event> {
        std::mem::replace(&mut self.events, mpsc::channel(1).1)
    }

    /// Ends the connection once everything has been written: waits up to `grace` for the
    /// client to close its side (kubectl resets its streams, sends GOAWAY and closes once it
    /// has read the status), then closes ours.
    pub async fn finish(self, grace: Duration) {
        let Connection {
            events,
            sender,
            mut reader,
            writer,
        } = self;
        drop(sender);
        // keep draining so the reader never waits on a full channel
        let drain = tokio::spawn(async move {
            let mut events = events;
            while events.recv().await.is_some() {}
        });
        if tokio::time::timeout(grace, &mut reader).await.is_err() {
            tracing::debug!("spdy client did not close the connection, closing it");
            reader.abort();
        }
        drain.abort();
        let _ = writer.await;
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut encoder: Encoder,
    mut rx: mpsc::Receiver<Cmd>,
    flow: Arc<Mutex<FlowControl>>,
    room: Arc<Notify>,
) {
    let sendable = |id: u32, len: usize| {
        flow.lock()
            .map(|f| f.sendable(id, len.min(CHUNK)))
            .unwrap_or(0)
    };
    'cmds: while let Some(cmd) = rx.recv().await {
        let frames = match cmd {
            Cmd::Frame(f) => vec![f],
            Cmd::Data { id, data, fin } => {
                let mut rest = &data[..];
                let mut frames = Vec::new();
                while !rest.is_empty() {
                    let notified = room.notified();
                    let n = sendable(id, rest.len());
                    if n == 0 {
                        // the peer's window is full: write what we have and wait for room
                        if write_all(&mut wr, &mut encoder, std::mem::take(&mut frames))
                            .await
                            .is_err()
                        {
                            break 'cmds;
                        }
                        notified.await;
                        continue;
                    }
                    if let Ok(mut f) = flow.lock() {
                        f.sent(id, n);
                    }
                    let (chunk, tail) = rest.split_at(n);
                    rest = tail;
                    let last = fin && rest.is_empty();
                    frames.push(Frame::Data {
                        id,
                        flags: if last { FLAG_FIN } else { 0 },
                        data: chunk.to_vec(),
                    });
                }
                if fin && data.is_empty() {
                    frames.push(Frame::Data {
                        id,
                        flags: FLAG_FIN,
                        data: Vec::new(),
                    });
                }
                frames
            }
        };
        if write_all(&mut wr, &mut encoder, frames).await.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn write_all<W: AsyncWrite + Unpin>(
    wr: &mut W,
    encoder: &mut Encoder,
    frames: Vec<Frame>,
) -> std::io::Result<()> {
    for f in frames {
        let bytes = encoder.encode(&f).map_err(std::io::Error::other)?;
        wr.write_all(&bytes).await?;
    }
    wr.flush().await
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    sender: Sender,
    events: mpsc::Sender<Event>,
    flow: Arc<Mutex<FlowControl>>,
    room: Arc<Notify>,
) {
    let mut decoder = Decoder::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "spdy: bad frame, closing");
                    let _ = sender
                        .tx
                        .send(Cmd::Frame(Frame::GoAway {
                            last_good: 0,
                            status: 1,
                        }))
                        .await;
                    return;
                }
            };
            if !on_frame(frame, &sender, &events, &flow, &room).await {
                return;
            }
        }
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Handles one frame from the client; false when the connection is gone.
async fn on_frame(
    frame: Frame,
    sender: &Sender,
    events: &mpsc::Sender<Event>,
    flow: &Mutex<FlowControl>,
    room: &Notify,
) -> bool {
    // a consumer that stopped listening is not an error: the connection still answers
    let emit = |e: Event| async move {
        let _ = events.send(e).await;
    };
    let send = |f: Frame| async move { sender.tx.send(Cmd::Frame(f)).await.is_ok() };
    match frame {
        Frame::SynStream {
            id, flags, headers, ..
        } => {
            if !send(Frame::SynReply {
                id,
                flags: 0,
                headers: Vec::new(),
            })
            .await
            {
                return false;
            }
            emit(Event::Stream { id, headers }).await;
            if flags & FLAG_FIN != 0 {
                emit(Event::Fin { id }).await;
            }
        }
        Frame::Data { id, flags, data } => {
            let n = data.len();
            if n > 0 {
                emit(Event::Data { id, data }).await;
                let updates = flow
                    .lock()
                    .map(|mut f| f.received(id, n))
                    .unwrap_or_default();
                for (id, delta) in updates {
                    if !send(Frame::WindowUpdate { id, delta }).await {
                        return false;
                    }
                }
            }
            if flags & FLAG_FIN != 0 {
                emit(Event::Fin { id }).await;
            }
        }
        Frame::RstStream { id, .. } => {
            if let Ok(mut f) = flow.lock() {
                f.close(id);
            }
            emit(Event::Reset { id }).await;
        }
        Frame::Settings { entries, .. } => {
            if let Ok(mut f) = flow.lock() {
                f.settings(&entries);
            }
            room.notify_waiters();
        }
        Frame::WindowUpdate { id, delta } => {
            if let Ok(mut f) = flow.lock() {
                f.window_update(id, delta);
            }
            room.notify_waiters();
        }
        // the client's pings have odd ids; ours (none) would be even
        Frame::Ping { id } if id % 2 == 1 => return send(Frame::Ping { id }).await,
        Frame::GoAway { .. } => emit(Event::GoAway).await,
        Frame::Ping { .. }
        | Frame::SynReply { .. }
        | Frame::Headers { .. }
        | Frame::Unknown { .. } => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spdy;

    /// Frames read by the client until one matches `last`.
    async fn read_until(
        rd: &mut (impl AsyncRead + Unpin),
        dec: &mut Decoder,
        buf: &mut Vec<u8>,
        deadline: tokio::time::Instant,
        last: impl Fn(&Frame) -> bool,
    ) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut read = [0u8; 4096];
        while !frames.iter().any(&last) {
            let n = tokio::time::timeout_at(deadline, rd.read(&mut read))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "the server closed early: {frames:?}");
            buf.extend_from_slice(&read[..n]);
            while let Some(f) = dec.decode(buf).unwrap() {
                frames.push(f);
            }
        }
        frames
    }

    /// A client built from the same framing talks to a [`Connection`] over a socket pair:
    /// streams are replied to, data and FIN arrive in order, pings are echoed, windows are
    /// given back and, once the client does flow control, the server waits for room.
    #[tokio::test]
    async fn serves_streams_pings_and_windows() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut conn = Connection::start(server).unwrap();
        let (mut crd, mut cwr) = tokio::io::split(client);
        let (mut enc, mut dec) = (Encoder::new().unwrap(), Decoder::new());
        let mut wire = Vec::new();
        for f in [
            Frame::SynStream {
                id: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "stdin".into())],
            },
            Frame::Data {
                id: 1,
                flags: 0,
                data: vec![7; 40_000],
            },
            Frame::Data {
                id: 1,
                flags: FLAG_FIN,
                data: b"end".to_vec(),
            },
            Frame::Ping { id: 1 },
            // flow control from now on, with a small window for new streams
            Frame::Settings {
                flags: 0,
                entries: vec![spdy::Setting {
                    flags: 0,
                    id: spdy::SETTINGS_INITIAL_WINDOW_SIZE,
                    value: 10,
                }],
            },
        ] {
            wire.extend(enc.encode(&f).unwrap());
        }
        cwr.write_all(&wire).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 4 {
            got.push(conn.events.recv().await.unwrap());
        }
        assert!(
            matches!(&got[0], Event::Stream { id: 1, headers } if spdy::header(headers, "streamType") == Some("stdin"))
        );
        assert_eq!(
            got[1],
            Event::Data {
                id: 1,
                data: vec![7; 40_000]
            }
        );
        assert_eq!(
            got[2],
            Event::Data {
                id: 1,
                data: b"end".to_vec()
            }
        );
        assert_eq!(got[3], Event::Fin { id: 1 });
        // the server sends 25 bytes on stream 2 with a 10-byte window
        let sender = conn.sender.clone();
        let send =
            tokio::spawn(async move { sender.data(2, vec![1; 25]).await && sender.fin(2).await });
        let mut buf = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // reply, window updates (stream 1 and session: 40003 bytes), ping, 10 data bytes
        let frames = read_until(&mut crd, &mut dec, &mut buf, deadline, |f| {
            matches!(f, Frame::Data { .. })
        })
        .await;
        assert_eq!(
            frames[0],
            Frame::SynReply {
                id: 1,
                flags: 0,
                headers: vec![]
            }
        );
        assert!(frames.contains(&Frame::WindowUpdate {
            id: 1,
            delta: 40_000
        }));
        assert!(frames.contains(&Frame::WindowUpdate {
            id: 0,
            delta: 40_000
        }));
        assert!(frames.contains(&Frame::Ping { id: 1 }));
        assert!(frames.contains(&Frame::Data {
            id: 2,
            flags: 0,
            data: vec![1; 10]
        }));
        // room for 15 more: the rest and the FIN come
        cwr.write_all(
            &enc.encode(&Frame::WindowUpdate { id: 2, delta: 15 })
                .unwrap(),
        )
        .await
        .unwrap();
        let rest = read_until(&mut crd, &mut dec, &mut buf, deadline, |f| {
            matches!(
                f,
                Frame::Data {
                    flags: FLAG_FIN,
                    ..
                }
            )
        })
        .await;
        let data: usize = rest
            .iter()
            .map(|f| match f {
                Frame::Data { data, .. } => data.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(data, 15);
        assert!(send.await.unwrap());
        // the client closes: the events end and finish returns
        drop(cwr);
        drop(crd);
        tokio::time::timeout(Duration::from_secs(10), conn.finish(Duration::from_secs(5)))
            .await
            .unwrap();
    }
}

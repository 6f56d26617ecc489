//! SPDY/3.1 framing (draft 3.1 of the SPDY protocol), as kubectl 1.27–1.29 speak it for exec,
//! attach and port-forward (client-go's `httpstream/spdy` over `moby/spdystream`). Pure: the
//! connection in [`crate::spdy_conn`] does the I/O.
//!
//! - Control frames: `1 | version(15) = 3 | type(16) | flags(8) | length(24) | payload`;
//!   data frames: `0 | stream id(31) | flags(8) | length(24) | data`, FIN = 0x01.
//! - Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are `count(32)` then `len(32) name
//!   len(32) value` pairs (several values of one name joined by NUL), compressed with zlib
//!   and the SPDY/3 preset [`DICTIONARY`]; one compression context per direction for the
//!   whole connection, each block ending with a sync flush.
//! - Flow control ([`FlowControl`]): 64 KiB initial windows per stream and per session,
//!   `SETTINGS_INITIAL_WINDOW_SIZE` and `WINDOW_UPDATE` (stream 0 for the session).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The protocol version carried by every control frame.
pub const VERSION: u16 = 3;
/// Data flag and control flag: the sender's last frame on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM flag: the receiver must not send on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// Initial stream and session window of SPDY/3.1 (64 KiB).
pub const DEFAULT_WINDOW: i64 = 64 * 1024;
/// `SETTINGS_INITIAL_WINDOW_SIZE`.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// Largest payload a frame can carry (24-bit length).
pub const MAX_LENGTH: usize = (1 << 24) - 1;

/// RST_STREAM status: protocol error.
pub const RST_PROTOCOL_ERROR: u32 = 1;
/// RST_STREAM status: the stream is refused.
pub const RST_REFUSED_STREAM: u32 = 3;
/// RST_STREAM status: cancelled.
pub const RST_CANCEL: u32 = 5;
/// RST_STREAM status: internal error.
pub const RST_INTERNAL_ERROR: u32 = 6;
/// RST_STREAM status: a flow-control window was exceeded.
pub const RST_FLOW_CONTROL_ERROR: u32 = 7;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// Header name/value pairs in the order they came (names are lower case on the wire).
pub type Headers = Vec<(String, String)>;

/// The value of a header (the first when several came).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split('\0').next().unwrap_or_default())
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Flags (persist value, persisted).
    pub flags: u8,
    /// Setting id (24 bits).
    pub id: u32,
    /// Value.
    pub value: u32,
}

/// One SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A new stream.
    SynStream {
        /// Stream id (odd from the client).
        id: u32,
        /// The stream it belongs to (0: none).
        associated: u32,
        /// Priority (3 bits).
        priority: u8,
        /// FIN and UNIDIRECTIONAL flags.
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// The answer to a SYN_STREAM.
    SynReply {
        /// Stream id.
        id: u32,
        /// FIN flag.
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// Ends a stream abnormally.
    RstStream {
        /// Stream id.
        id: u32,
        /// Status code.
        status: u32,
    },
    /// Connection settings.
    Settings {
        /// CLEAR_SETTINGS flag.
        flags: u8,
        /// The entries.
        entries: Vec<Setting>,
    },
    /// A ping, echoed by the receiver.
    Ping {
        /// Its id (odd from the client).
        id: u32,
    },
    /// The sender will open no more streams.
    GoAway {
        /// The last stream the sender accepted.
        last_good: u32,
        /// Status code.
        status: u32,
    },
    /// More headers on a stream.
    Headers {
        /// Stream id.
        id: u32,
        /// FIN flag.
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// More room in the sender's receive window.
    WindowUpdate {
        /// Stream id (0: the session).
        id: u32,
        /// Bytes added (31 bits).
        delta: u32,
    },
    /// Stream data.
    Data {
        /// Stream id.
        id: u32,
        /// FIN flag.
        flags: u8,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A control frame of a type this side does not know (ignored, as the protocol says).
    Unknown {
        /// Its type.
        kind: u16,
    },
}

/// A frame that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    /// A frame too short for its type.
    #[error("invalid {kind} frame of {len} bytes")]
    Short {
        /// The frame type.
        kind: &'static str,
        /// Its length.
        len: usize,
    },
    /// A header block that does not parse.
    #[error("invalid header block: {0}")]
    HeaderBlock(String),
    /// zlib failed on a header block.
    #[error("header compression: {0}")]
    Zlib(String),
    /// A payload over the 24-bit length.
    #[error("frame payload of {0} bytes is too large")]
    TooLarge(usize),
}

/// The SPDY/3 header compression dictionary (1423 bytes, from the SPDY/3 draft; the same
/// bytes as spdystream's `headerDictionary`).
pub const DICTIONARY: &[u8] =
    b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\
    \x00\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eacc\
    ept-charset\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\
    \x00\x0daccept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthori\
    zation\x00\x00\x00\x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent\
    -base\x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00\
    \x0econtent-length\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\
    \x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\
    \x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\x04from\x00\
    \x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\x00\x00\
    \x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-since\x00\
    \x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\
    \x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorizat\
    ion\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00\
    \x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-enco\
    ding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04vary\x00\x00\
    \x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06me\
    thod\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07v\
    ersion\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\
    \x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin1001012012022052063003\
    02303304305306307402405406407408409410411412413414415416417502504505203 Non-Authorit\
    ative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized4\
    03 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Una\
    vailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu\
    , Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,\
    application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,s\
    dchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

fn header_block(headers: &Headers) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        for part in [name.as_bytes(), value.as_bytes()] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

fn parse_header_block(block: &[u8]) -> Result<Headers, SpdyError> {
    let bad = |what: &str| SpdyError::HeaderBlock(what.to_string());
    let mut rest = block;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        if rest.len() < n {
            return Err(bad("truncated"));
        }
        let (a, b) = rest.split_at(n);
        rest = b;
        Ok(a)
    };
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = be32(take(4)?);
    let mut headers = Headers::with_capacity(count.min(64));
    for _ in 0..count {
        let n = be32(take(4)?);
        let name = String::from_utf8(take(n)?.to_vec()).map_err(|_| bad("name not UTF-8"))?;
        let n = be32(take(4)?);
        let value = String::from_utf8(take(n)?.to_vec()).map_err(|_| bad("value not UTF-8"))?;
        if name.is_empty() {
            return Err(bad("empty header name"));
        }
        headers.push((name, value));
    }
    Ok(headers)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Writes frames; owns the sending direction's header compression context.
pub struct Encoder {
    zlib: Compress,
}

impl Encoder {
    /// A new context primed with the SPDY/3 dictionary.
    pub fn new() -> Result<Encoder, SpdyError> {
        let mut zlib = Compress::new(Compression::best(), true);
        zlib.set_dictionary(DICTIONARY)
            .map_err(|e| SpdyError::Zlib(e.to_string()))?;
        Ok(Encoder { zlib })
    }

    fn compress(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() + 64);
        let start = self.zlib.total_in();
        loop {
            let consumed = (self.zlib.total_in() - start) as usize;
            out.reserve(256);
            self.zlib
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Zlib(e.to_string()))?;
            // the flush is complete once all input is in and the output did not fill up
            if (self.zlib.total_in() - start) as usize == block.len() && out.len() < out.capacity()
            {
                return Ok(out);
            }
        }
    }

    /// The bytes of one frame.
    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, SpdyError> {
        let control = |kind: u16, flags: u8, payload: Vec<u8>| -> Result<Vec<u8>, SpdyError> {
            if payload.len() > MAX_LENGTH {
                return Err(SpdyError::TooLarge(payload.len()));
            }
            let mut out = Vec::with_capacity(8 + payload.len());
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.push(flags);
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(&payload);
            Ok(out)
        };
        let id31 = |id: u32| (id & 0x7fff_ffff).to_be_bytes();
        match frame {
            Frame::SynStream {
                id,
                associated,
                priority,
                flags,
                headers,
            } => {
                let mut p = Vec::new();
                p.extend_from_slice(&id31(*id));
                p.extend_from_slice(&id31(*associated));
                p.push((priority & 0x7) << 5);
                p.push(0);
                p.extend(self.compress(&header_block(headers))?);
                control(SYN_STREAM, *flags, p)
            }
            Frame::SynReply { id, flags, headers } | Frame::Headers { id, flags, headers } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let mut p = id31(*id).to_vec();
                p.extend(self.compress(&header_block(headers))?);
                control(kind, *flags, p)
            }
            Frame::RstStream { id, status } => {
                let mut p = id31(*id).to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(RST_STREAM, 0, p)
            }
            Frame::Settings { flags, entries } => {
                let mut p = (entries.len() as u32).to_be_bytes().to_vec();
                for e in entries {
                    p.push(e.flags);
                    p.extend_from_slice(&e.id.to_be_bytes()[1..]);
                    p.extend_from_slice(&e.value.to_be_bytes());
                }
                control(SETTINGS, *flags, p)
            }
            Frame::Ping { id } => control(PING, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway { last_good, status } => {
                let mut p = id31(*last_good).to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(GOAWAY, 0, p)
            }
            Frame::WindowUpdate { id, delta } => {
                let mut p = id31(*id).to_vec();
                p.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                control(WINDOW_UPDATE, 0, p)
            }
            Frame::Data { id, flags, data } => {
                if data.len() > MAX_LENGTH {
                    return Err(SpdyError::TooLarge(data.len()));
                }
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&id31(*id));
                out.push(*flags);
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                Ok(out)
            }
            Frame::Unknown { kind } => control(*kind, 0, Vec::new()),
        }
    }
}

/// Reads frames from a growing buffer; owns the receiving direction's header decompression
/// context.
pub struct Decoder {
    zlib: Decompress,
}

impl Decoder {
    /// A new context (the dictionary is given when zlib asks for it).
    pub fn new() -> Decoder {
        Decoder {
            zlib: Decompress::new(true),
        }
    }

    fn decompress(&mut self, data: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let err = |e: &dyn std::fmt::Display| SpdyError::Zlib(e.to_string());
        let mut out = Vec::with_capacity(data.len() * 4 + 256);
        let start = self.zlib.total_in();
        loop {
            let consumed = (self.zlib.total_in() - start) as usize;
            out.reserve(1024);
            match self
                .zlib
                .decompress_vec(&data[consumed..], &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(_) => {
                        self.zlib.set_dictionary(DICTIONARY).map_err(|e| err(&e))?;
                        continue;
                    }
                    None => return Err(err(&e)),
                },
            }
            if (self.zlib.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// The next whole frame at the front of `buf`, removed from it; `None` until one is
    /// there.
    pub fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let head: Vec<u8> = buf.drain(..8 + len).collect();
        let (h, p) = head.split_at(8);
        let flags = h[4];
        if h[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                id: be32(h) & 0x7fff_ffff,
                flags,
                data: p.to_vec(),
            }));
        }
        let version = u16::from_be_bytes([h[0], h[1]]) & 0x7fff;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([h[2], h[3]]);
        let need = |name: &'static str, n: usize| {
            if p.len() < n {
                Err(SpdyError::Short {
                    kind: name,
                    len: p.len(),
                })
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need("SYN_STREAM", 10)?;
                Frame::SynStream {
                    id: be32(p) & 0x7fff_ffff,
                    associated: be32(&p[4..]) & 0x7fff_ffff,
                    priority: p[8] >> 5,
                    flags,
                    headers: parse_header_block(&self.decompress(&p[10..])?)?,
                }
            }
            SYN_REPLY | HEADERS => {
                need("SYN_REPLY", 4)?;
                let id = be32(p) & 0x7fff_ffff;
                let headers = parse_header_block(&self.decompress(&p[4..])?)?;
                if kind == SYN_REPLY {
                    Frame::SynReply { id, flags, headers }
                } else {
                    Frame::Headers { id, flags, headers }
                }
            }
            RST_STREAM => {
                need("RST_STREAM", 8)?;
                Frame::RstStream {
                    id: be32(p) & 0x7fff_ffff,
                    status: be32(&p[4..]),
                }
            }
            SETTINGS => {
                need("SETTINGS", 4)?;
                let n = be32(p) as usize;
                need("SETTINGS", 4 + n.saturating_mul(8))?;
                let entries = p[4..4 + n * 8]
                    .chunks_exact(8)
                    .map(|e| Setting {
                        flags: e[0],
                        id: u32::from_be_bytes([0, e[1], e[2], e[3]]),
                        value: be32(&e[4..]),
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                need("PING", 4)?;
                Frame::Ping { id: be32(p) }
            }
            GOAWAY => {
                need("GOAWAY", 4)?;
                Frame::GoAway {
                    last_good: be32(p) & 0x7fff_ffff,
                    // SPDY/2-style 4-byte GOAWAYs carry no status
                    status: if p.len() >= 8 { be32(&p[4..]) } else { 0 },
                }
            }
            WINDOW_UPDATE => {
                need("WINDOW_UPDATE", 8)?;
                Frame::WindowUpdate {
                    id: be32(p) & 0x7fff_ffff,
                    delta: be32(&p[4..]) & 0x7fff_ffff,
                }
            }
            kind => Frame::Unknown { kind },
        };
        Ok(Some(frame))
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

/// SPDY/3.1 flow control for one connection, both directions.
///
/// Sending: each stream and the session have a window (64 KiB at first, streams moved by
/// `SETTINGS_INITIAL_WINDOW_SIZE`) that DATA uses up and WINDOW_UPDATE refills. moby's
/// spdystream, which kubectl uses, neither sends nor reads WINDOW_UPDATE, so the windows are
/// enforced only once the peer has shown that it does flow control (a WINDOW_UPDATE or an
/// initial window setting); before that a peer like kubectl would be stalled for ever after
/// 64 KiB.
///
/// Receiving: the bytes handed on are counted per stream and for the session; once half a
/// window has been consumed, a WINDOW_UPDATE gives it back.
#[derive(Debug, Clone)]
pub struct FlowControl {
    enforced: bool,
    initial: i64,
    session: i64,
    streams: std::collections::HashMap<u32, i64>,
    consumed_session: u32,
    consumed: std::collections::HashMap<u32, u32>,
}

impl Default for FlowControl {
    fn default() -> Self {
        FlowControl {
            enforced: false,
            initial: DEFAULT_WINDOW,
            session: DEFAULT_WINDOW,
            streams: Default::default(),
            consumed_session: 0,
            consumed: Default::default(),
        }
    }
}

impl FlowControl {
    /// Whether the peer's windows are enforced.
    pub fn enforced(&self) -> bool {
        self.enforced
    }

    /// The peer's WINDOW_UPDATE (stream 0: the session).
    pub fn window_update(&mut self, id: u32, delta: u32) {
        self.enforced = true;
        if id == 0 {
            self.session += i64::from(delta);
        } else {
            *self.streams.entry(id).or_insert(self.initial) += i64::from(delta);
        }
    }

    /// The peer's SETTINGS: a new initial window moves every stream's window by the
    /// difference.
    pub fn settings(&mut self, entries: &[Setting]) {
        for e in entries {
            if e.id == SETTINGS_INITIAL_WINDOW_SIZE {
                self.enforced = true;
                let new = i64::from(e.value);
                let diff = new - self.initial;
                self.initial = new;
                for w in self.streams.values_mut() {
                    *w += diff;
                }
            }
        }
    }

    /// How many of `len` bytes may be sent on stream `id` now.
    pub fn sendable(&self, id: u32, len: usize) -> usize {
        if !self.enforced {
            return len;
        }
        let stream = self.streams.get(&id).copied().unwrap_or(self.initial);
        let room = stream.min(self.session).max(0);
        len.min(room as usize)
    }

    /// Records `n` bytes sent on stream `id`.
    pub fn sent(&mut self, id: u32, n: usize) {
        let n = n as i64;
        self.session -= n;
        *self.streams.entry(id).or_insert(self.initial) -= n;
    }

    /// Records `n` bytes received on stream `id` and handed on; returns the WINDOW_UPDATEs
    /// to send as `(stream, delta)` (stream 0: the session).
    pub fn received(&mut self, id: u32, n: usize) -> Vec<(u32, u32)> {
        let half = (DEFAULT_WINDOW / 2) as u32;
        let n = n as u32;
        let mut updates = Vec::new();
        let c = self.consumed.entry(id).or_insert(0);
        *c += n;
        if *c >= half {
            updates.push((id, *c));
            *c = 0;
        }
        self.consumed_session += n;
        if self.consumed_session >= half {
            updates.push((0, self.consumed_session));
            self.consumed_session = 0;
        }
        updates
    }

    /// Forgets a closed stream.
    pub fn close(&mut self, id: u32) {
        self.streams.remove(&id);
        self.consumed.remove(&id);
    }
}

/// Headers from string pairs (tests).
#[cfg(test)]
pub(crate) fn test_headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three SYN_STREAMs as a foreign encoder writes them (Python's zlib, level 9, the
    /// SPDY/3 dictionary, one context, a sync flush per block): exec's error and stdout
    /// streams, and a port-forward data stream.
    const FOREIGN: &[u8] = b"\x80\x03\x00\x01\x00\x00\x00\x28\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x78\xf9\xe3\xc6\xa7\xc2\x02\xa6\x23\x46\x70\x3a\x2b\x29\x4a\x4d\xcc\x85\x16\x25\xac\xa9\xa0\x80\x06\x00\x00\x00\xff\xff\x80\x03\x00\x01\x00\x00\x00\x19\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\xc2\x2a\x05\x4c\xcc\x29\xf9\xa5\x25\x00\x00\x00\x00\xff\xff\x80\x03\x00\x01\x00\x00\x00\x2c\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x02\xa5\x55\x48\xb1\x5d\x04\x62\x33\x59\x18\x00\x49\xce\x22\x48\x24\x67\x82\x12\x3f\xa3\x01\x86\x5e\x50\x09\x95\x08\x00\x00\x00\xff\xff";

    use super::test_headers as h;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options"));
        assert!(DICTIONARY.ends_with(b",*,enq=0."));
        // the Adler-32 a zlib stream names in its header (0xe3c6a7c2 in FOREIGN)
        let (mut a, mut b) = (1u32, 0u32);
        for x in DICTIONARY {
            a = (a + u32::from(*x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn decodes_a_foreign_encoders_streams_in_one_context() {
        let mut d = Decoder::new();
        let mut buf = FOREIGN.to_vec();
        let mut got = Vec::new();
        while let Some(f) = d.decode(&mut buf).unwrap() {
            got.push(f);
        }
        assert!(buf.is_empty());
        let syn = |id, headers| Frame::SynStream {
            id,
            associated: 0,
            priority: 0,
            flags: 0,
            headers,
        };
        assert_eq!(
            got,
            vec![
                syn(1, h(&[("streamtype", "error")])),
                syn(3, h(&[("streamtype", "stdout")])),
                syn(
                    5,
                    h(&[("port", "80"), ("requestid", "0"), ("streamtype", "data")])
                ),
            ]
        );
        assert_eq!(
            header(&h(&[("streamType", "error")]), "streamtype"),
            Some("error")
        );
    }

    #[test]
    fn round_trips_every_frame_and_waits_for_whole_frames() {
        let frames = vec![
            Frame::SynStream {
                id: 1,
                associated: 0,
                priority: 7,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "stdin"), ("x", "a\0b")]),
            },
            Frame::SynReply {
                id: 1,
                flags: 0,
                headers: vec![],
            },
            Frame::SynReply {
                id: 3,
                flags: FLAG_FIN,
                headers: h(&[("status", "200")]),
            },
            Frame::Headers {
                id: 3,
                flags: 0,
                headers: h(&[("a", "b")]),
            },
            Frame::RstStream {
                id: 5,
                status: RST_CANCEL,
            },
            Frame::Settings {
                flags: 1,
                entries: vec![Setting {
                    flags: 0,
                    id: SETTINGS_INITIAL_WINDOW_SIZE,
                    value: 1 << 20,
                }],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good: 9,
                status: 0,
            },
            Frame::WindowUpdate {
                id: 0,
                delta: 0x7fff_ffff,
            },
            Frame::Data {
                id: 1,
                flags: FLAG_FIN,
                data: vec![],
            },
            Frame::Data {
                id: 3,
                flags: 0,
                data: vec![0xab; 100_000],
            },
        ];
        let (mut e, mut d) = (Encoder::new().unwrap(), Decoder::new());
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(e.encode(f).unwrap());
        }
        // fed a byte at a time at first, then the rest: frames come out whole
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for (i, b) in wire.iter().enumerate() {
            buf.push(*b);
            if let Some(f) = d.decode(&mut buf).unwrap() {
                got.push(f);
            }
            if i > 200 {
                buf.extend_from_slice(&wire[i + 1..]);
                break;
            }
        }
        while let Some(f) = d.decode(&mut buf).unwrap() {
            got.push(f);
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn unknown_and_bad_frames() {
        let mut d = Decoder::new();
        // an unknown control type is skipped whole
        let mut buf =
            b"\x80\x03\x00\x0a\x00\x00\x00\x02xy\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x02"
                .to_vec();
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Some(Frame::Unknown { kind: 10 })
        );
        assert_eq!(d.decode(&mut buf).unwrap(), Some(Frame::Ping { id: 2 }));
        let mut v2 = b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x02".to_vec();
        assert!(matches!(d.decode(&mut v2), Err(SpdyError::Version(2))));
        let mut short = b"\x80\x03\x00\x03\x00\x00\x00\x04\x00\x00\x00\x02".to_vec();
        assert!(matches!(d.decode(&mut short), Err(SpdyError::Short { .. })));
        let mut garbage = b"\x80\x03\x00\x02\x00\x00\x00\x08\x00\x00\x00\x01garb".to_vec();
        assert!(Decoder::new().decode(&mut garbage).is_err());
    }

    #[test]
    fn flow_control_as_spdy31() {
        // (peer's frames, stream, bytes asked) → bytes sendable
        let cases: Vec<(Vec<Frame>, u32, usize, usize)> = vec![
            // a peer that never spoke of windows (kubectl): never held back
            (vec![], 1, 1 << 20, 1 << 20),
            // a window update turns enforcement on: 64 KiB + delta on the stream, but the
            // session is still at 64 KiB
            (
                vec![Frame::WindowUpdate { id: 1, delta: 1000 }],
                1,
                1 << 20,
                65536,
            ),
            (
                vec![
                    Frame::WindowUpdate { id: 1, delta: 1000 },
                    Frame::WindowUpdate {
                        id: 0,
                        delta: 1 << 20,
                    },
                ],
                1,
                1 << 20,
                66536,
            ),
            // a smaller initial window
            (
                vec![Frame::Settings {
                    flags: 0,
                    entries: vec![Setting {
                        flags: 0,
                        id: SETTINGS_INITIAL_WINDOW_SIZE,
                        value: 100,
                    }],
                }],
                3,
                500,
                100,
            ),
        ];
        for (peer, id, asked, want) in cases {
            let mut fc = FlowControl::default();
            for f in &peer {
                match f {
                    Frame::WindowUpdate { id, delta } => fc.window_update(*id, *delta),
                    Frame::Settings { entries, .. } => fc.settings(entries),
                    _ => {}
                }
            }
            assert_eq!(fc.sendable(id, asked), want, "{peer:?}");
        }
        // sending uses the window up, an update refills it
        let mut fc = FlowControl::default();
        fc.window_update(0, 0);
        fc.sent(1, 60_000);
        assert_eq!(fc.sendable(1, 10_000), 5536);
        fc.sent(1, 5536);
        assert_eq!(fc.sendable(1, 1), 0);
        fc.window_update(1, 10);
        assert_eq!(fc.sendable(1, 100), 0, "the session window is still empty");
        fc.window_update(0, 10);
        assert_eq!(fc.sendable(1, 100), 10);
        // receiving: updates at half a window, per stream and for the session
        let mut fc = FlowControl::default();
        assert!(fc.received(1, 20_000).is_empty());
        assert_eq!(fc.received(1, 20_000), vec![(1, 40_000), (0, 40_000)]);
        assert_eq!(fc.received(3, 32_768), vec![(3, 32_768), (0, 32_768)]);
        assert!(fc.received(1, 10).is_empty());
    }
}

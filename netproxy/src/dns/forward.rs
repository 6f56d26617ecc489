//! Names outside the cluster zone: forwarded to the node's resolvers (the nameservers of
//! /etc/resolv.conf, or `--upstream`), over UDP with a fallback to TCP when the answer is
//! truncated, and kept in a small cache for as long as their TTLs allow (negative answers
//! for the SOA minimum, RFC 2308), at most [`MAX_CACHE_TTL`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The longest an upstream answer is kept, whatever its TTL says (CoreDNS' cache default).
pub const MAX_CACHE_TTL: u32 = 3600;
/// How many answers the cache holds before it drops the expired ones, then the oldest.
const CACHE_CAPACITY: usize = 10_000;
/// How long one upstream has to answer one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The UDP payload we advertise upstream (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

/// Errors of forwarding.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No upstream resolver is configured.
    #[error("no upstream resolver configured")]
    NoUpstream,
    /// The query could not be encoded.
    #[error("cannot encode the query for {name}")]
    Encode {
        /// The name asked for.
        name: Name,
        /// The cause.
        #[source]
        source: hickory_proto::ProtoError,
    },
    /// Every upstream failed; the last failure is the source.
    #[error("no upstream answered for {name}: last tried {upstream}")]
    Upstream {
        /// The name asked for.
        name: Name,
        /// The last upstream tried.
        upstream: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The nameservers of a resolv.conf text, on port 53; `exclude` (our own listen address)
/// is left out so the server never forwards to itself.
pub fn nameservers(resolv_conf: &str, exclude: Option<IpAddr>) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        // A scoped IPv6 address (fe80::1%eth0) is not usable as a plain socket address.
        .filter_map(|addr| addr.parse::<IpAddr>().ok())
        .filter(|ip| Some(*ip) != exclude)
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// [`nameservers`] of the file at `path` (empty when it cannot be read).
pub fn nameservers_of(path: &Path, exclude: Option<IpAddr>) -> Vec<SocketAddr> {
    std::fs::read_to_string(path)
        .map(|text| nameservers(&text, exclude))
        .unwrap_or_default()
}

/// Cache key: lower-case name, type, class.
type Key = (String, RecordType, DNSClass);

/// Upstream answers with their expiry.
#[derive(Debug, Default)]
pub struct Cache {
    entries: HashMap<Key, (Message, Instant, u32)>,
}

/// How long `msg` may be cached, if at all: the smallest TTL of its answer and authority
/// records; for a negative answer the SOA's TTL or minimum, whichever is smaller.
pub fn cacheable_ttl(msg: &Message) -> Option<u32> {
    if !matches!(
        msg.metadata.response_code,
        ResponseCode::NoError | ResponseCode::NXDomain
    ) || msg.metadata.truncation
    {
        return None;
    }
    let ttl = if msg.answers.is_empty() {
        msg.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })?
    } else {
        msg.answers
            .iter()
            .chain(msg.authorities.iter())
            .map(|r| r.ttl)
            .min()?
    };
    (ttl > 0).then_some(ttl.min(MAX_CACHE_TTL))
}

impl Cache {
    fn key(query: &Query) -> Key {
        (
            query.name().to_lowercase().to_ascii(),
            query.query_type(),
            query.query_class(),
        )
    }

    /// The cached answer to `query` at `now`, its TTLs reduced by the time it has been held.
    pub fn get(&self, query: &Query, now: Instant) -> Option<Message> {
        let (msg, stored, ttl) = self.entries.get(&Self::key(query))?;
        let age = u32::try_from(now.saturating_duration_since(*stored).as_secs()).ok()?;
        if age >= *ttl {
            return None;
        }
        let mut msg = msg.clone();
        for r in msg
            .answers
            .iter_mut()
            .chain(msg.authorities.iter_mut())
            .chain(msg.additionals.iter_mut())
        {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(msg)
    }

    /// Keeps `msg` as the answer to `query` if it is cacheable.
    pub fn put(&mut self, query: &Query, msg: &Message, now: Instant) {
        let Some(ttl) = cacheable_ttl(msg) else {
            return;
        };
        if self.entries.len() >= CACHE_CAPACITY {
            self.entries.retain(|_, (_, stored, ttl)| {
                now.saturating_duration_since(*stored) < Duration::from_secs(u64::from(*ttl))
            });
        }
        if self.entries.len() >= CACHE_CAPACITY
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, stored, _))| *stored)
                .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
        self.entries
            .insert(Self::key(query), (msg.clone(), now, ttl));
    }

    /// How many answers are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Sends queries to the upstream resolvers in order until one answers.
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<Cache>,
}

impl Forwarder {
    /// A forwarder to `upstreams`, tried in order.
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        Self {
            upstreams,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The upstream resolvers.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The answer to `query` (from the cache, or from the first upstream that answers).
    pub async fn resolve(&self, query: &Query) -> Result<Message, ForwardError> {
        if let Ok(cache) = self.cache.lock()
            && let Some(hit) = cache.get(query, Instant::now())
        {
            return Ok(hit);
        }
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstream);
        }
        let mut request = Message::query();
        request.metadata.id = rand::random();
        request.metadata.recursion_desired = true;
        request.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        request.set_edns(edns);
        let bytes = request.to_vec().map_err(|source| ForwardError::Encode {
            name: query.name().clone(),
            source,
        })?;
        let mut last = None;
        for upstream in &self.upstreams {
            match exchange(*upstream, &bytes, &request).await {
                Ok(answer) => {
                    if let Ok(mut cache) = self.cache.lock() {
                        cache.put(query, &answer, Instant::now());
                    }
                    return Ok(answer);
                }
                Err(e) => {
                    tracing::debug!(upstream = %upstream, name = %query.name(), error = %e, "upstream failed");
                    last = Some((*upstream, e));
                }
            }
        }
        let (upstream, source) = last.ok_or(ForwardError::NoUpstream)?;
        Err(ForwardError::Upstream {
            name: query.name().clone(),
            upstream,
            source,
        })
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// True when `answer` answers `request` (same id, a response, same question).
fn matches(request: &Message, answer: &Message) -> bool {
    answer.metadata.id == request.metadata.id
        && answer.metadata.message_type == MessageType::Response
        && answer.metadata.op_code == OpCode::Query
        && answer.queries == request.queries
}

/// One query to one upstream: UDP, then TCP if the answer came back truncated.
async fn exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    request: &Message,
) -> std::io::Result<Message> {
    let answer = tokio::time::timeout(ATTEMPT_TIMEOUT, udp_exchange(upstream, bytes, request))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "udp timeout"))??;
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    tokio::time::timeout(ATTEMPT_TIMEOUT, tcp_exchange(upstream, bytes, request))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "tcp timeout"))?
}

async fn udp_exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    request: &Message,
) -> std::io::Result<Message> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        (IpAddr::from([0u8; 4]), 0).into()
    } else {
        (IpAddr::from([0u16; 8]), 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(upstream).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Anything that does not answer our question is ignored (spoofing, stale answers).
        if let Ok(answer) = Message::from_vec(&buf[..n])
            && matches(request, &answer)
        {
            return Ok(answer);
        }
    }
}

async fn tcp_exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    request: &Message,
) -> std::io::Result<Message> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(bytes.len()).map_err(|_| invalid("query too long"))?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await?;
    let answer = Message::from_vec(&buf).map_err(|_| invalid("undecodable answer"))?;
    if !matches(request, &answer) {
        return Err(invalid("answer does not match the query"));
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, SOA};

    #[test]
    fn nameservers_of_resolv_conf() {
        let text = "# generated\nsearch example.org\nnameserver 10.0.0.2\nnameserver  fd00::53 \n\
                    nameserver fe80::1%eth0\nnameserver 10.96.0.10\noptions ndots:2\nnameserver\n";
        let got = nameservers(text, Some("10.96.0.10".parse().unwrap()));
        assert_eq!(
            got,
            [
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[fd00::53]:53".parse().unwrap()
            ]
        );
        assert!(nameservers("", None).is_empty());
    }

    fn answer(code: ResponseCode, answers: &[(u32, [u8; 4])], soa: Option<(u32, u32)>) -> Message {
        let mut m = Message::response(1, OpCode::Query);
        m.metadata.response_code = code;
        let name = Name::from_ascii("example.org.").unwrap();
        for (ttl, ip) in answers {
            m.add_answer(Record::from_rdata(
                name.clone(),
                *ttl,
                RData::A(A::from(std::net::Ipv4Addr::from(*ip))),
            ));
        }
        if let Some((ttl, min)) = soa {
            m.add_authority(Record::from_rdata(
                Name::from_ascii("org.").unwrap(),
                ttl,
                RData::SOA(SOA::new(name.clone(), name.clone(), 1, 1, 1, 1, min)),
            ));
        }
        m
    }

    #[test]
    fn cacheable_ttls() {
        use ResponseCode::*;
        let cases = [
            (
                answer(NoError, &[(300, [1, 2, 3, 4]), (60, [1, 2, 3, 5])], None),
                Some(60),
            ),
            (
                answer(NoError, &[(86400 * 7, [1, 2, 3, 4])], None),
                Some(MAX_CACHE_TTL),
            ),
            (answer(NXDomain, &[], Some((900, 30))), Some(30)),
            (answer(NoError, &[], Some((10, 300))), Some(10)),
            (answer(NoError, &[], None), None),
            (answer(ServFail, &[(300, [1, 2, 3, 4])], None), None),
            (answer(Refused, &[], Some((10, 10))), None),
            (answer(NoError, &[(0, [1, 2, 3, 4])], None), None),
        ];
        for (i, (msg, want)) in cases.iter().enumerate() {
            assert_eq!(cacheable_ttl(msg), *want, "case {i}");
        }
        let mut truncated = answer(NoError, &[(300, [1, 2, 3, 4])], None);
        truncated.metadata.truncation = true;
        assert_eq!(cacheable_ttl(&truncated), None);
    }

    #[test]
    fn cache_counts_ttls_down_and_expires() {
        let q = Query::query(Name::from_ascii("Example.ORG.").unwrap(), RecordType::A);
        let q_lower = Query::query(Name::from_ascii("example.org.").unwrap(), RecordType::A);
        let q_aaaa = Query::query(Name::from_ascii("example.org.").unwrap(), RecordType::AAAA);
        let mut cache = Cache::default();
        let t0 = Instant::now();
        cache.put(
            &q,
            &answer(ResponseCode::NoError, &[(10, [1, 2, 3, 4])], None),
            t0,
        );
        assert_eq!(cache.len(), 1);
        let hit = cache.get(&q_lower, t0 + Duration::from_secs(4)).unwrap();
        assert_eq!(hit.answers[0].ttl, 6);
        assert!(cache.get(&q_aaaa, t0).is_none());
        assert!(cache.get(&q, t0 + Duration::from_secs(10)).is_none());
        cache.put(&q_aaaa, &answer(ResponseCode::ServFail, &[], None), t0);
        assert_eq!(cache.len(), 1);
    }
}

//! The DNS server: hickory-server's UDP and TCP listeners in front of a request handler that
//! answers from the current [`Table`] and forwards everything else upstream.

use std::sync::Arc;

use hickory_proto::op::{Edns, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::sync::watch;

use super::forward::Forwarder;
use super::records::{Lookup, Table};

/// How many CNAME hops of an ExternalName target are followed through the upstreams.
const MAX_CNAME_CHASE: usize = 8;

/// Answers queries from the table of the moment and the upstream resolvers.
pub struct Handler {
    table: watch::Receiver<Arc<Table>>,
    forwarder: Arc<Forwarder>,
}

impl Handler {
    /// A handler over the table `table` publishes and the upstreams of `forwarder`.
    pub fn new(table: watch::Receiver<Arc<Table>>, forwarder: Arc<Forwarder>) -> Self {
        Self { table, forwarder }
    }
}

/// What goes back to the client.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn error(code: ResponseCode) -> Self {
        Self {
            code,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

impl Handler {
    async fn answer(&self, query: &Query) -> Reply {
        let table = self.table.borrow().clone();
        if query.query_class() != DNSClass::IN {
            return if table.in_zone(query.name()) {
                Reply::error(ResponseCode::Refused)
            } else {
                self.forward(query).await
            };
        }
        match table.lookup(query.name(), query.query_type()) {
            Lookup::Forward => self.forward(query).await,
            Lookup::Answer(a) => {
                let mut reply = Reply {
                    code: if a.nxdomain {
                        ResponseCode::NXDomain
                    } else {
                        ResponseCode::NoError
                    },
                    authoritative: true,
                    answers: a.answers,
                    authorities: a.authorities,
                    additionals: a.additionals,
                };
                self.chase_external_cname(&table, query, &mut reply).await;
                reply
            }
        }
    }

    /// An ExternalName Service answers a CNAME to a name outside the zone; as CoreDNS, the
    /// target's records of the asked type are looked up upstream and appended.
    async fn chase_external_cname(&self, table: &Table, query: &Query, reply: &mut Reply) {
        if matches!(query.query_type(), RecordType::CNAME | RecordType::ANY) {
            return;
        }
        for _ in 0..MAX_CNAME_CHASE {
            let Some(target) = reply.answers.last().and_then(|r| match &r.data {
                RData::CNAME(c) => Some(c.0.clone()),
                _ => None,
            }) else {
                return;
            };
            if table.in_zone(&target) {
                return;
            }
            let q = Query::query(target, query.query_type());
            match self.forwarder.resolve(&q).await {
                Ok(msg) => {
                    let ends_in_cname = msg
                        .answers
                        .last()
                        .is_some_and(|r| r.record_type() == RecordType::CNAME);
                    reply.code = msg.metadata.response_code;
                    reply.answers.extend(msg.answers);
                    if !ends_in_cname {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(target = %q.name(), error = %e, "cannot resolve an ExternalName target");
                    return;
                }
            }
        }
    }

    async fn forward(&self, query: &Query) -> Reply {
        match self.forwarder.resolve(query).await {
            Ok(msg) => Reply {
                code: msg.metadata.response_code,
                authoritative: false,
                answers: msg.answers,
                authorities: msg.authorities,
                additionals: msg
                    .additionals
                    .into_iter()
                    .filter(|r| r.record_type() != RecordType::OPT)
                    .collect(),
            },
            Err(e) => {
                tracing::info!(name = %query.name(), error = %e, "forwarding failed");
                Reply::error(ResponseCode::ServFail)
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        // EDNS: answer with our own OPT when the client sent one (RFC 6891).
        let response_edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = response_edns.as_ref() {
            builder.edns(e);
        }
        let reply = if request.metadata.op_code != OpCode::Query {
            Reply::error(ResponseCode::NotImp)
        } else {
            match request.request_info() {
                Ok(info) => self.answer(info.query.original()).await,
                Err(_) => Reply::error(ResponseCode::FormErr),
            }
        };
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        tracing::trace!(code = ?reply.code, answers = reply.answers.len(), "dns reply");
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            std::iter::empty(),
            reply.authorities.iter(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "cannot send a dns reply");
                let mut header = hickory_proto::op::Header {
                    metadata,
                    counts: Default::default(),
                };
                header.metadata.response_code = ResponseCode::ServFail;
                header.into()
            }
        }
    }
}

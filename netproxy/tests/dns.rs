//! Cluster DNS for real: an in-process skiff master on loopback, Services and an
//! EndpointSlice created through the API, `skiff_netproxy::dns::run` on 127.0.0.1 with a
//! free port (watching with the node token, as inside the agent), queried over UDP and TCP
//! with hickory's wire codec; a second tiny DNS server on loopback plays the node's
//! upstream resolver. No root, no network beyond loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../master/tests/api_common/mod.rs"]
mod api_common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use api_common::{TestServer, wait_for};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use skiff_netproxy::dns::{self, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

async fn client_with(kc: Kubeconfig) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn admin_client(server: &TestServer) -> kube::Client {
    client_with(Kubeconfig::read_from(server.kubeconfig()).unwrap()).await
}

/// A client with the node token, the identity the agent runs the DNS server with.
async fn node_client(server: &TestServer) -> kube::Client {
    let kc: Kubeconfig = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "skiff", "cluster": {
            "server": format!("https://{}", server.handle.addr),
            "certificate-authority": server.dir.path().join("ca.crt"),
        }}],
        "users": [{"name": "node", "user": {"token": server.handle.node_token}}],
        "contexts": [{"name": "node", "context": {"cluster": "skiff", "user": "node"}}],
        "current-context": "node",
    }))
    .unwrap();
    client_with(kc).await
}

/// One query over UDP or TCP; the answer is checked to be ours.
async fn ask(dns: SocketAddr, tcp: bool, name: &str, qtype: RecordType) -> Message {
    try_ask(dns, tcp, name, qtype).await.unwrap()
}

/// [`ask`], with I/O errors returned (the server may not listen yet).
async fn try_ask(
    dns: SocketAddr,
    tcp: bool,
    name: &str,
    qtype: RecordType,
) -> std::io::Result<Message> {
    let mut q = Message::query();
    q.metadata.id = rand::random();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let bytes = q.to_vec().unwrap();
    let answer = if tcp {
        let mut s = TcpStream::connect(dns).await?;
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        s.write_all(&framed).await?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).await?;
        Message::from_vec(&buf).unwrap()
    } else {
        let s = UdpSocket::bind("127.0.0.1:0").await?;
        s.connect(dns).await?;
        s.send(&bytes).await?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf))
            .await
            .expect("no udp answer within 5 s")?;
        Message::from_vec(&buf[..n]).unwrap()
    };
    assert_eq!(answer.metadata.id, q.metadata.id);
    assert_eq!(answer.queries, q.queries);
    Ok(answer)
}

/// The records of a section as "name ttl type data" lines.
fn lines(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
        .collect()
}

/// The data of the answer section, sorted.
fn data(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

/// A tiny upstream resolver on loopback (UDP): `www.example.org` A 192.0.2.7 with TTL 60,
/// NXDOMAIN with an SOA for everything else; counts the queries it gets.
struct Upstream {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start() -> Upstream {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let count = queries.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
                resp.metadata.recursion_available = true;
                resp.queries = req.queries.clone();
                let q = &req.queries[0];
                if q.name().to_ascii().eq_ignore_ascii_case("www.example.org.")
                    && q.query_type() == RecordType::A
                {
                    resp.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
                    ));
                } else {
                    resp.metadata.response_code = ResponseCode::NXDomain;
                    let org = Name::from_ascii("example.org.").unwrap();
                    resp.add_authority(Record::from_rdata(
                        org.clone(),
                        300,
                        RData::SOA(hickory_proto::rr::rdata::SOA::new(
                            org.clone(),
                            org,
                            1,
                            7200,
                            900,
                            86400,
                            30,
                        )),
                    ));
                }
                let _ = socket.send_to(&resp.to_vec().unwrap(), from).await;
            }
        });
        Upstream {
            addr,
            queries,
            task,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port free for both UDP and TCP at the moment of asking.
fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The DNS server task; stopped (and checked to stop cleanly) by `stop`, aborted on drop.
struct DnsTask {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), dns::DnsError>>>,
}

impl DnsTask {
    fn start(client: kube::Client, upstreams: Vec<SocketAddr>) -> DnsTask {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let settings = Settings {
            listen: addr,
            upstreams,
            ..Settings::default()
        };
        let task = tokio::spawn(dns::run(client, settings, async move {
            let _ = stopped.await;
        }));
        DnsTask {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = tokio::time::timeout(Duration::from_secs(10), self.task.take().unwrap())
            .await
            .expect("the dns server did not stop within 10 s")
            .unwrap();
        result.unwrap();
    }
}

impl Drop for DnsTask {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn create_service(api: &Api<Service>, v: serde_json::Value) -> Service {
    api.create(&PostParams::default(), &serde_json::from_value(v).unwrap())
        .await
        .unwrap()
}

/// Polls until `name` answers `qtype` with `want` (sorted data) over UDP.
async fn wait_answer(dns: SocketAddr, name: &str, qtype: RecordType, want: &[&str], secs: u64) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    wait_for(
        &format!("{name} {qtype} to answer {want:?}"),
        Duration::from_secs(secs),
        || {
            let want = want.clone();
            async move {
                let m = try_ask(dns, false, name, qtype).await.ok()?;
                (m.metadata.response_code == ResponseCode::NoError && data(&m) == want)
                    .then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dns_answers_from_live_services_and_forwards_the_rest() {
    let server = api_common::start().await;
    let admin = admin_client(&server).await;
    let services: Api<Service> = Api::namespaced(admin.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(admin.clone(), "default");

    let web = create_service(
        &services,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "metrics", "port": 9100, "protocol": "UDP"}
            ]}
        }),
    )
    .await;
    let web_ip: Ipv4Addr = web.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
    create_service(
        &services,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}
        }),
    )
    .await;
    slices
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "db-1",
                             "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4",
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["10.244.1.5"], "hostname": "db-0",
                     "conditions": {"ready": true}},
                    {"addresses": ["10.244.2.6"], "conditions": {"ready": true}},
                    {"addresses": ["10.244.3.7"], "hostname": "db-2",
                     "conditions": {"ready": false}}
                ]
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    let upstream = Upstream::start().await;
    let dns = DnsTask::start(node_client(&server).await, vec![upstream.addr]);
    let addr = dns.addr;

    // Served once both watches listed: the Service made before the start resolves.
    let web_ip_s = web_ip.to_string();
    wait_answer(
        addr,
        "web.default.svc.cluster.local.",
        RecordType::A,
        &[&web_ip_s],
        20,
    )
    .await;

    for tcp in [false, true] {
        let m = ask(addr, tcp, "Web.Default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative, "tcp={tcp}");
        assert_eq!(
            lines(&m.answers),
            [format!("Web.Default.svc.cluster.local. 5 A {web_ip}")],
            "tcp={tcp}"
        );
    }

    // SRV for each named port, the target's address in the additional section.
    let m = ask(
        addr,
        false,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(data(&m), ["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(
        lines(&m.additionals),
        [format!("web.default.svc.cluster.local. 5 A {web_ip}")]
    );
    let m = ask(
        addr,
        true,
        "_metrics._udp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(data(&m), ["0 100 9100 web.default.svc.cluster.local."]);

    // PTR of the ClusterIP.
    let o = web_ip.octets();
    let rev = format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]);
    let m = ask(addr, false, &rev, RecordType::PTR).await;
    assert_eq!(data(&m), ["web.default.svc.cluster.local."]);

    // Headless: the ready endpoints, per-hostname names, SRV per endpoint.
    let m = ask(addr, false, "db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(data(&m), ["10.244.1.5", "10.244.2.6"]);
    let m = ask(
        addr,
        true,
        "db-0.db.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(data(&m), ["10.244.1.5"]);
    let m = ask(
        addr,
        false,
        "_pg._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(
        data(&m),
        [
            "0 50 5432 10-244-2-6.db.default.svc.cluster.local.",
            "0 50 5432 db-0.db.default.svc.cluster.local."
        ]
    );

    // NXDOMAIN and NODATA, both with the zone's SOA.
    for (name, qtype, code) in [
        (
            "nope.default.svc.cluster.local.",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        (
            "db-2.db.default.svc.cluster.local.",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        (
            "web.default.svc.cluster.local.",
            RecordType::MX,
            ResponseCode::NoError,
        ),
        (
            "web.default.svc.cluster.local.",
            RecordType::AAAA,
            ResponseCode::NoError,
        ),
        (
            "default.svc.cluster.local.",
            RecordType::A,
            ResponseCode::NoError,
        ),
    ] {
        for tcp in [false, true] {
            let m = ask(addr, tcp, name, qtype).await;
            assert_eq!(m.metadata.response_code, code, "{name} {qtype} tcp={tcp}");
            assert!(m.answers.is_empty(), "{name} {qtype}");
            assert_eq!(m.authorities.len(), 1, "{name} {qtype}");
            assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
            assert_eq!(m.authorities[0].name.to_ascii(), "cluster.local.");
        }
    }

    // A pod record.
    let m = ask(
        addr,
        false,
        "10-244-1-5.default.pod.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(data(&m), ["10.244.1.5"]);

    // Live updates: a Service created now resolves within a few seconds, deleted it stops.
    let late = create_service(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "late"},
               "spec": {"ports": [{"port": 8080}]}}),
    )
    .await;
    let late_ip = late.spec.unwrap().cluster_ip.unwrap();
    wait_answer(
        addr,
        "late.default.svc.cluster.local.",
        RecordType::A,
        &[&late_ip],
        3,
    )
    .await;
    services
        .delete("late", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "late.default.svc.cluster.local to be NXDOMAIN",
        Duration::from_secs(3),
        || async {
            let m = ask(
                addr,
                false,
                "late.default.svc.cluster.local.",
                RecordType::A,
            )
            .await;
            (m.metadata.response_code == ResponseCode::NXDomain).then_some(())
        },
    )
    .await;

    // An EndpointSlice change reaches the headless answers.
    let mut slice = slices.get("db-1").await.unwrap();
    slice.endpoints[2].conditions.as_mut().unwrap().ready = Some(true);
    slices
        .replace("db-1", &PostParams::default(), &slice)
        .await
        .unwrap();
    wait_answer(
        addr,
        "db.default.svc.cluster.local.",
        RecordType::A,
        &["10.244.1.5", "10.244.2.6", "10.244.3.7"],
        3,
    )
    .await;

    // Other names go upstream, answers are cached for their TTL.
    let before = upstream.queries.load(Ordering::SeqCst);
    for tcp in [false, true, false] {
        let m = ask(addr, tcp, "www.example.org.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(!m.metadata.authoritative);
        assert!(m.metadata.recursion_available);
        assert_eq!(data(&m), ["192.0.2.7"]);
        assert!(
            m.answers[0].ttl <= 60 && m.answers[0].ttl >= 55,
            "{}",
            m.answers[0].ttl
        );
    }
    assert_eq!(
        upstream.queries.load(Ordering::SeqCst),
        before + 1,
        "cached"
    );
    // An ExternalName Service: the CNAME, then the target's address from upstream.
    create_service(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
               "spec": {"type": "ExternalName", "externalName": "www.example.org"}}),
    )
    .await;
    wait_for("the ExternalName CNAME", Duration::from_secs(3), || async {
        let m = ask(addr, false, "ext.default.svc.cluster.local.", RecordType::A).await;
        (!m.answers.is_empty()).then_some(())
    })
    .await;
    let m = ask(addr, true, "ext.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        m.answers
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
            .collect::<Vec<_>>(),
        [
            "ext.default.svc.cluster.local. CNAME www.example.org.",
            "www.example.org. A 192.0.2.7"
        ]
    );
    let m = ask(addr, false, "missing.example.org.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    // A PTR outside our addresses goes upstream too.
    let m = ask(addr, false, "9.9.9.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(!m.metadata.authoritative);

    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reachable_upstream_other_names_fail_and_cluster_names_still_answer() {
    let server = api_common::start().await;
    // An upstream that never answers: a bound UDP socket nobody reads.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dns = DnsTask::start(
        node_client(&server).await,
        vec![silent.local_addr().unwrap()],
    );
    let addr = dns.addr;
    // The master's own `kubernetes` Service.
    let admin = admin_client(&server).await;
    let kubernetes = wait_for("the kubernetes Service", Duration::from_secs(10), || {
        let admin = admin.clone();
        async move {
            Api::<Service>::namespaced(admin, "default")
                .get_opt("kubernetes")
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    let ip = kubernetes.spec.unwrap().cluster_ip.unwrap();
    wait_answer(
        addr,
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        &[&ip],
        20,
    )
    .await;
    let m = ask(addr, false, "www.example.org.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let m = ask(addr, false, "dns-version.cluster.local.", RecordType::TXT).await;
    assert_eq!(data(&m), ["1.1.0"]);
    assert!(matches!(
        ask(addr, true, "cluster.local.", RecordType::SOA)
            .await
            .answers[0]
            .data,
        RData::SOA(_)
    ));
    dns.stop().await;
}

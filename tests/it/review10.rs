//! A tenth cold review: the rotation's HTTP/2 transport (src/azure/transport.rs) attacked as a
//! production network would: connections that die after a request was written or while it is
//! being written, a graceful GOAWAY racing new requests, a TLS handshake that never ends, an
//! endless answer, an IPv6 host, a connection blackholed under the daemon and a host whose first
//! address drops every SYN.
//!
//! The last two need a network of their own: they run in a new network (and mount) namespace
//! (`unshare -n -m`, as root), where they add `iptables` rules and their own `/etc/hosts`
//! without touching the machine's.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use secret_rotator::azure::connections::{Pool, TlsConfig};
use secret_rotator::azure::transport::{Failure, H2, Outcome};

type Body = BoxBody<Bytes, Infallible>;

/// What one connection of the server can be told to do from inside a request.
#[derive(Default)]
struct Ctl {
    /// Drop the connection at once: no answer, no GOAWAY, the TCP connection closed.
    kill: tokio::sync::Notify,
    /// Shut the connection down gracefully (GOAWAY), letting requests in flight finish.
    drain: tokio::sync::Notify,
}

/// An HTTP/2 server over TLS on `bind`, with a certificate for `names`, that counts the requests
/// to each path and the peers of its connections.
///
/// `/ok` answers at once, `/slow` after 2 s, `/endless` with a body that never ends; `/die`
/// reads the whole request and then drops the connection; `/die-early` drops it as soon as the
/// request's headers arrived (its body still on the way); `/goaway` answers and then shuts the
/// connection down gracefully.
struct Server {
    addr: SocketAddr,
    ca_pem: String,
    accepted: Arc<AtomicUsize>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ca_and_leaf(names: &[&str]) -> (String, rustls::ServerConfig) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), &ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    (ca_cert.pem(), config)
}

impl Server {
    async fn start(bind: &str, names: &[&str]) -> Server {
        let (ca_pem, config) = ca_and_leaf(names);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let task = tokio::spawn({
            let (accepted, peers, hits) = (accepted.clone(), peers.clone(), hits.clone());
            async move {
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    let (tcp, peer) = listener.accept().await.unwrap();
                    accepted.fetch_add(1, Ordering::SeqCst);
                    peers.lock().unwrap().push(peer);
                    let (acceptor, hits) = (acceptor.clone(), hits.clone());
                    connections.spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let ctl = Arc::new(Ctl::default());
                        let service = hyper::service::service_fn({
                            let ctl = ctl.clone();
                            move |r| answer(r, ctl.clone(), hits.clone())
                        });
                        let conn = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = &mut conn => {}
                            _ = ctl.kill.notified() => {}
                            _ = ctl.drain.notified() => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                    });
                }
            }
        });
        Server {
            addr,
            ca_pem,
            accepted,
            peers,
            hits,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    fn transport(&self, timeout: Duration) -> H2 {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        H2::new(
            &TlsConfig::new(Some(self.ca_pem.as_bytes())).unwrap(),
            timeout,
        )
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
    ctl: Arc<Ctl>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
) -> Result<hyper::Response<Body>, Infallible> {
    let path = request.uri().path().to_string();
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let hello = || Full::new(Bytes::from_static(b"hello")).boxed();
    match path.as_str() {
        "/slow" => tokio::time::sleep(Duration::from_secs(2)).await,
        "/die" => {
            let _ = request.into_body().collect().await;
            ctl.kill.notify_one();
            std::future::pending::<()>().await;
        }
        "/die-early" => {
            ctl.kill.notify_one();
            std::future::pending::<()>().await;
        }
        "/goaway" => ctl.drain.notify_one(),
        "/endless" => {
            let chunk = Bytes::from(vec![b'x'; 64 << 10]);
            let body = StreamBody::new(futures::stream::repeat_with(move || {
                Ok::<_, Infallible>(Frame::data(chunk.clone()))
            }));
            return Ok(hyper::Response::new(BodyExt::boxed(body)));
        }
        _ => {}
    }
    Ok(hyper::Response::new(hello()))
}

fn get(url: &str) -> http::Request<Bytes> {
    http::Request::get(url).body(Bytes::new()).unwrap()
}

fn post(url: &str, body: Bytes) -> http::Request<Bytes> {
    http::Request::post(url)
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

fn failed(outcome: Outcome) -> Failure {
    match outcome {
        Outcome::Failed(f) => f,
        Outcome::Answered(a) => panic!("answered {}", a.status),
        Outcome::Elsewhere(_) => panic!("sent elsewhere"),
    }
}

async fn answered(h2: &H2, url: &str) -> u16 {
    match h2.send(Pool::Main, get(url)).await {
        Outcome::Answered(a) => a.status,
        Outcome::Failed(f) => panic!("no answer from {url}: {f:?}"),
        Outcome::Elsewhere(_) => panic!("{url} was sent elsewhere"),
    }
}

/// An `addPassword` whose connection dies after Graph read it: the answer is lost, and the
/// request must be neither sent again (by the transport) nor called unsent.
#[tokio::test(flavor = "multi_thread")]
async fn review10_a_written_request_whose_connection_dies_is_not_sent_again() {
    let server = Server::start("127.0.0.1:0", &["127.0.0.1"]).await;
    let h2 = server.transport(Duration::from_secs(10));
    answered(&h2, &server.url("/ok")).await;
    let body = Bytes::from_static(b"{\"passwordCredential\":{\"displayName\":\"x\"}}");
    let f = failed(h2.send(Pool::Secret, post(&server.url("/die"), body)).await);
    assert!(f.sent, "the request was read by the server: {f:?}");
    // The whole body in one request, and also one whose body is still being written when the
    // connection goes (1 MB: beyond the first flow-control window).
    let big = Bytes::from(vec![b'a'; 1 << 20]);
    let f = failed(
        h2.send(Pool::Secret, post(&server.url("/die-early"), big))
            .await,
    );
    assert!(f.sent, "the request's headers were read: {f:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.hits("/die"), 1, "the transport never sends it again");
    assert_eq!(server.hits("/die-early"), 1, "nor the one cut mid-body");
    // The host is not poisoned: the next request gets a new connection.
    assert_eq!(
        match h2.send(Pool::Secret, get(&server.url("/ok"))).await {
            Outcome::Answered(a) => a.status,
            other => panic!("{other:?}"),
        },
        200
    );
}

/// What `rounds` rounds of requests racing a graceful GOAWAY came to: each round keeps a slow
/// request in flight on the host's connection, asks the server to drain that connection, and
/// sends eight requests at once around the GOAWAY.
struct Drained {
    server: Server,
    answered: usize,
    failed: Vec<Failure>,
}

async fn requests_racing_a_goaway(rounds: usize) -> Drained {
    let server = Server::start("127.0.0.1:0", &["127.0.0.1"]).await;
    let h2 = Arc::new(server.transport(Duration::from_secs(10)));
    let (mut answered, mut failed) = (0, Vec::new());
    for round in 0..rounds {
        let slow = {
            let (h2, url) = (h2.clone(), server.url("/slow"));
            tokio::spawn(async move { h2.send(Pool::Main, get(&url)).await })
        };
        // Let the slow request open (and keep) the round's connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let goaway = {
            let (h2, url) = (h2.clone(), server.url("/goaway"));
            tokio::spawn(async move { h2.send(Pool::Main, get(&url)).await })
        };
        let all = (0..8).map(|i| {
            let (h2, url) = (h2.clone(), server.url("/ok"));
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i)).await;
                h2.send(Pool::Main, get(&url)).await
            })
        });
        for r in futures::future::join_all(all).await {
            match r.unwrap() {
                Outcome::Answered(a) => {
                    assert_eq!(a.status, 200);
                    answered += 1;
                }
                Outcome::Failed(f) => failed.push(f),
                Outcome::Elsewhere(_) => panic!("sent elsewhere"),
            }
        }
        for (what, r) in [("/goaway", goaway.await), ("/slow", slow.await)] {
            match r.unwrap() {
                Outcome::Answered(a) => assert_eq!(a.status, 200),
                other => panic!("round {round}: {what}, in flight, was cut: {other:?}"),
            }
        }
    }
    Drained {
        server,
        answered,
        failed,
    }
}

/// A frontend that drains its connection (GOAWAY) while requests go out: the requests in
/// flight finish, and no request reaches the server twice. (Every request that failed never
/// reached it at all: the server saw exactly the answered ones.)
#[tokio::test(flavor = "multi_thread")]
async fn review10_requests_racing_a_graceful_goaway_reach_the_server_at_most_once() {
    let rounds = 8;
    let d = requests_racing_a_goaway(rounds).await;
    assert_eq!(d.answered + d.failed.len(), 8 * rounds);
    assert_eq!(
        d.server.hits("/ok"),
        d.answered,
        "the server saw each answered request once, and none of the {} that failed",
        d.failed.len()
    );
    assert_eq!(d.server.hits("/slow"), rounds);
    assert!(
        d.server.accepted() > rounds,
        "each GOAWAY moved the host to a new connection"
    );
}

/// The same race, asking what the requests that met the GOAWAY were told. h2 fails a request
/// made after the connection received a GOAWAY (and one on a stream above the GOAWAY's last
/// stream id, which the server promises it did not process) with the remote GOAWAY error, and
/// hyper does not hand such a request back; the transport then reports it as possibly sent. The
/// server never saw it (test above), but an `addPassword` so failed is `OutcomeUnknown`, and
/// a read fails its reconcile, under the routine recycling of a frontend's connections.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "limitation, errs safe: h2 gives a stream above a GOAWAY's last id the error it gives one cut by an erring GOAWAY, so such a request counts as possibly sent"]
async fn review10_a_request_refused_by_a_goaway_is_not_called_sent() {
    let rounds = 20;
    let d = requests_racing_a_goaway(rounds).await;
    eprintln!(
        "{} of {} requests failed: {:?}",
        d.failed.len(),
        8 * rounds,
        d.failed.first()
    );
    assert!(
        d.failed.iter().all(|f| !f.sent),
        "{} requests the server never saw were reported as possibly sent, e.g. {:?}",
        d.failed.iter().filter(|f| f.sent).count(),
        d.failed.first()
    );
}

/// A host that accepts TCP and never completes TLS: every request waiting for that connection
/// fails once, as not sent, at the connect timeout (not one after the other), and the next
/// request tries again.
#[tokio::test(flavor = "multi_thread")]
async fn review10_a_tls_handshake_that_never_ends_fails_the_waiting_requests_together_as_not_sent()
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let holder = tokio::spawn({
        let accepted = accepted.clone();
        async move {
            let mut held = Vec::new();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                accepted.fetch_add(1, Ordering::SeqCst);
                held.push(tcp);
            }
        }
    });
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // A 12 s exchange: the 10 s connect timeout is what ends it.
    let h2 = Arc::new(H2::new(
        &TlsConfig::new(None).unwrap(),
        Duration::from_secs(12),
    ));
    let url = format!("https://127.0.0.1:{port}/ok");
    let start = Instant::now();
    let all = (0..5).map(|i| {
        let (h2, url) = (h2.clone(), url.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100 * i)).await;
            failed(h2.send(Pool::Secret, get(&url)).await)
        })
    });
    for f in futures::future::join_all(all).await {
        let f = f.unwrap();
        assert!(!f.sent, "nothing left before TLS: {f:?}");
        assert!(
            f.message.contains("no connection within 10 s"),
            "{}",
            f.message
        );
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(11),
        "one connect timeout for all of them, not one each: {took:?}"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "they waited for one connection"
    );
    // A later request is not failed by the old attempt: it connects again.
    let f = failed(h2.send(Pool::Secret, get(&url)).await);
    assert!(!f.sent);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    holder.abort();
}

/// An answer that never ends: the request fails (may have been sent) well within its timeout,
/// without reading more than the transport's limit, and the host stays usable.
#[tokio::test(flavor = "multi_thread")]
async fn review10_an_endless_answer_fails_as_sent_and_the_host_stays_usable() {
    let server = Server::start("127.0.0.1:0", &["127.0.0.1"]).await;
    let h2 = server.transport(Duration::from_secs(20));
    let start = Instant::now();
    let f = failed(h2.send(Pool::Main, get(&server.url("/endless"))).await);
    assert!(f.sent, "{f:?}");
    assert!(f.message.contains("reading the answer"), "{}", f.message);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "the size limit, not the timeout"
    );
    assert_eq!(answered(&h2, &server.url("/ok")).await, 200);
}

/// An IPv6 literal host (`https://[::1]:port`) is reached over HTTP/2, its certificate checked
/// against the address.
#[tokio::test(flavor = "multi_thread")]
async fn review10_an_ipv6_literal_host_is_reached_over_http2() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let server = Server::start("[::1]:0", &["::1"]).await;
    let h2 = server.transport(Duration::from_secs(10));
    let url = server.url("/ok");
    assert!(url.starts_with("https://[::1]:"), "{url}");
    assert_eq!(answered(&h2, &url).await, 200);
    assert_eq!(answered(&h2, &url).await, 200);
    assert_eq!(server.accepted(), 1);
}

// ---- Graph's paging and the daemon's token ---------------------------------------------------

/// What a [`paging_server`] saw: each request's path and query, and its `Authorization`.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// An HTTP/2 server over TLS (`config`) on 127.0.0.1 that answers every request `200` with the
/// JSON `page` returns for its path and query, and records what it saw.
async fn paging_server(
    config: Arc<rustls::ServerConfig>,
    page: impl Fn(&str, Option<&str>) -> hyper::Response<Full<Bytes>> + Send + Sync + 'static,
) -> (SocketAddr, Seen, tokio::task::JoinHandle<()>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let page = Arc::new(page);
    let task = tokio::spawn({
        let seen = seen.clone();
        async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, seen, page) = (acceptor.clone(), seen.clone(), page.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |r: hyper::Request<_>| {
                        let target = r.uri().path_and_query().map(|p| p.to_string());
                        let target = target.unwrap_or_default();
                        let auth = r
                            .headers()
                            .get(http::header::AUTHORIZATION)
                            .map(|v| v.to_str().unwrap_or("?").to_string());
                        let answer = page(&target, auth.as_deref());
                        seen.lock().unwrap().push((target, auth));
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        }
    });
    (addr, seen, task)
}

/// `200` with a JSON body.
fn json_page(body: String) -> hyper::Response<Full<Bytes>> {
    hyper::Response::new(Full::new(Bytes::from(body)))
}

/// A credential that hands out one fixed token.
#[derive(Debug)]
struct FixedToken;

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FixedToken {
    async fn get_token(
        &self,
        _: &[&str],
        _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        Ok(azure_core::credentials::AccessToken::new(
            "the-graph-token",
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}

/// Two servers with one certificate: `home` (the configured service: Graph, or a vault), whose
/// answers come from `page(home, elsewhere, path and query, authorization)`, and another origin
/// (another port of 127.0.0.1) that answers an empty page; each records what it saw.
struct TwoOrigins {
    ca_pem: String,
    home: SocketAddr,
    elsewhere: SocketAddr,
    home_seen: Seen,
    elsewhere_seen: Seen,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for TwoOrigins {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl TwoOrigins {
    async fn start(
        page: impl Fn(SocketAddr, SocketAddr, &str, Option<&str>) -> hyper::Response<Full<Bytes>>
        + Send
        + Sync
        + 'static,
    ) -> TwoOrigins {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (ca_pem, config) = ca_and_leaf(&["127.0.0.1"]);
        let config = Arc::new(config);
        let (elsewhere, elsewhere_seen, elsewhere_task) =
            paging_server(config.clone(), |_, _| json_page(r#"{"value": []}"#.into())).await;
        let home_addr = Arc::new(std::sync::OnceLock::<SocketAddr>::new());
        let (home, home_seen, home_task) = paging_server(config, {
            let home_addr = home_addr.clone();
            move |target, auth| page(*home_addr.get().unwrap(), elsewhere, target, auth)
        })
        .await;
        home_addr.set(home).unwrap();
        TwoOrigins {
            ca_pem,
            home,
            elsewhere,
            home_seen,
            elsewhere_seen,
            tasks: [home_task, elsewhere_task],
        }
    }

    /// The daemon's HTTP, trusting the servers' CA.
    fn http(&self) -> secret_rotator::azure::AzureHttp {
        secret_rotator::azure::AzureHttp::new(
            Some(self.ca_pem.as_bytes()),
            Duration::from_secs(10),
            Arc::new(secret_rotator::metrics::Metrics::new()),
            Arc::new(secret_rotator::azure::fence::Fence::open()),
        )
        .unwrap()
    }
}

/// "Graph" (the configured `graph_endpoint`, home) whose first page links to
/// `next_link(graph, elsewhere)`, and the daemon's Graph client for it.
struct Paging {
    client: secret_rotator::azure::graph::GraphClient,
    origins: TwoOrigins,
}

impl Paging {
    async fn start(
        next_link: impl Fn(SocketAddr, SocketAddr) -> String + Send + Sync + 'static,
    ) -> Paging {
        let origins = TwoOrigins::start(move |graph, elsewhere, target, _| {
            if target.contains("skiptoken") {
                return json_page(r#"{"value": []}"#.into());
            }
            let link = next_link(graph, elsewhere);
            json_page(serde_json::json!({"value": [], "@odata.nextLink": link}).to_string())
        })
        .await;
        let client = secret_rotator::azure::graph::GraphClient::new(
            origins.http(),
            Arc::new(FixedToken),
            &url::Url::parse(&format!("https://{}", origins.home)).unwrap(),
            "https://graph.microsoft.com/.default",
            (10, Duration::from_secs(10)),
        );
        Paging { client, origins }
    }

    /// The requests that carried the daemon's token to the other origin.
    fn tokens_elsewhere(&self) -> Vec<(String, Option<String>)> {
        self.origins.elsewhere_seen.lock().unwrap().clone()
    }
}

/// Held: `list_applications` follows a nextLink only to graph_endpoint's origin, and the
/// `url::Url` fallback of `Call::request` cannot take it elsewhere: a link that `http::Uri`
/// refuses is sent where `url::Url` (the origin check's own parser) says it points. A backslash
/// before an `@` is the classic parser differential: `http::Uri` refuses it, `url::Url` reads
/// it as a path separator (authority: Graph's), and the request goes to Graph.
#[tokio::test(flavor = "multi_thread")]
async fn review10_list_applications_sends_its_token_only_to_graph_endpoint() {
    let p = Paging::start(|_, e| format!("https://{e}/v1.0/applications?$skiptoken=x")).await;
    let next = p.client.list_applications(None).await.unwrap().next;
    let next = next.expect("a nextLink");
    let refused = p.client.list_applications(Some(&next)).await.unwrap_err();
    assert!(refused.message.contains("points away"), "{refused:?}");

    let differential = format!(
        "https://{}\\@{}/v1.0/applications?$skiptoken=y",
        p.origins.home, p.origins.elsewhere
    );
    p.client
        .list_applications(Some(&differential))
        .await
        .unwrap();
    assert_eq!(p.tokens_elsewhere(), vec![], "the token went elsewhere");
    let graph = p.origins.home_seen.lock().unwrap().clone();
    assert_eq!(graph.len(), 2, "{graph:?}");
    assert!(graph[1].0.contains("skiptoken=y"), "{graph:?}");
}

/// `apps_by_tag` (src/azure/directory.rs: discovery and `register`) follows every
/// `@odata.nextLink` as it stands, with no origin check, so the daemon's Graph token goes to
/// whatever host a page names, against docs/decisions.md ("`@odata.nextLink` is followed only to
/// the configured Graph endpoint's origin: the daemon's token goes nowhere else, whatever an
/// answer says"), which `list_applications` keeps (test above). Not new with the transport:
/// reqwest sent it too.
#[tokio::test(flavor = "multi_thread")]
async fn review10_apps_by_tag_sends_its_token_only_to_graph_endpoint() {
    let p = Paging::start(|_, e| format!("https://{e}/v1.0/applications?$skiptoken=x")).await;
    let listed = p.client.apps_by_tag("rotator:", false).await;
    assert_eq!(
        p.tokens_elsewhere(),
        vec![],
        "the token went elsewhere ({listed:?})"
    );
    assert!(
        listed.is_err(),
        "a link away from graph_endpoint is refused"
    );
}

// ---- Key Vault's paging and the daemon's token ----------------------------------------------

/// A vault (the fake on the wire: a challenge for a request without a token, then one page of
/// versions whose `nextLink` is `next_link(vault, elsewhere)`) and another origin; the daemon's
/// Key Vault client for it.
struct VaultPaging {
    clients: secret_rotator::azure::keyvault::VaultClients,
    vault: url::Url,
    origins: TwoOrigins,
}

impl VaultPaging {
    async fn start(
        next_link: impl Fn(SocketAddr, SocketAddr) -> String + Send + Sync + 'static,
    ) -> VaultPaging {
        let version = |addr: SocketAddr, id: &str| {
            serde_json::json!({
                "id": format!("https://{addr}/secrets/s/{id}"),
                "attributes": {"enabled": true, "created": 1_700_000_000},
            })
        };
        let origins = TwoOrigins::start(move |vault, elsewhere, target, auth| {
            if auth.is_none() {
                let mut challenge = hyper::Response::new(Full::new(Bytes::new()));
                *challenge.status_mut() = hyper::StatusCode::UNAUTHORIZED;
                challenge.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static(
                        "Bearer authorization=\"https://login.microsoftonline.com/t\", resource=\"https://vault.azure.net\"",
                    ),
                );
                return challenge;
            }
            if target.contains("skiptoken") {
                return json_page(serde_json::json!({"value": [version(vault, "v2")]}).to_string());
            }
            let link = next_link(vault, elsewhere);
            json_page(
                serde_json::json!({"value": [version(vault, "v1")], "nextLink": link}).to_string(),
            )
        })
        .await;
        let shared = origins.http();
        let config = secret_rotator::config::Config::parse(
            std::path::Path::new("review10.toml"),
            "[azure]\ntenant_id = \"00000000-0000-0000-0000-000000000000\"\n\
             [azure.credential]\nkind = \"managed_identity\"\n",
        )
        .unwrap();
        let clients = secret_rotator::azure::keyvault::VaultClients::new(
            &config,
            &shared,
            Arc::new(FixedToken),
        );
        VaultPaging {
            clients,
            vault: url::Url::parse(&format!("https://{}", origins.home)).unwrap(),
            origins,
        }
    }
}

/// The Key Vault SDK's pager follows a listing's `nextLink` wherever it points (it joins it to
/// the first page's URL), with the vault's token on it: a vault, or whatever answers in its
/// name, could have sent the daemon's Key Vault token to any host. The vault client's
/// transport sends to the vault's origin only: the listing fails, naming why, and nothing
/// reaches the other origin; a `nextLink` on the vault's origin is followed.
#[tokio::test(flavor = "multi_thread")]
async fn a_vault_listing_sends_the_token_only_to_the_vault() {
    let p = VaultPaging::start(|_, e| {
        format!("https://{e}/secrets/s/versions?api-version=2025-07-01&$skiptoken=x")
    })
    .await;
    let refused = p.clients.versions(&p.vault, "s").await.unwrap_err();
    assert!(
        refused.message.contains("points away from the vault"),
        "{refused:?}"
    );
    assert!(!refused.is_transient(), "{refused:?}");
    assert_eq!(p.origins.elsewhere_seen.lock().unwrap().clone(), vec![]);
    let seen = p.origins.home_seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|(_, auth)| auth.as_deref() == Some("Bearer the-graph-token")),
        "the vault had the token: {seen:?}"
    );

    let p = VaultPaging::start(|v, _| {
        format!("https://{v}/secrets/s/versions?api-version=2025-07-01&$skiptoken=x")
    })
    .await;
    let versions = p.clients.versions(&p.vault, "s").await.unwrap().unwrap();
    let ids: Vec<&str> = versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(ids, ["v1", "v2"]);
}

// ---- In a network namespace of their own ----------------------------------------------------

const IN_NETNS: &str = "REVIEW10_IN_NETNS";

/// Runs the test `name` again in a new network and mount namespace (loopback up, `hosts` as its
/// `/etc/hosts`), and says whether it passed there. `None` when this process is that run.
fn in_own_network(name: &str, hosts: &str) -> Option<bool> {
    if std::env::var_os(IN_NETNS).is_some() {
        return None;
    }
    let dir = tempfile_dir();
    let hosts_file = format!("{dir}/hosts");
    std::fs::write(&hosts_file, hosts).unwrap();
    let status = std::process::Command::new("unshare")
        .args(["-n", "-m", "sh", "-c"])
        .arg("mount --bind \"$1\" /etc/hosts && ip link set lo up && shift && exec \"$@\"")
        .arg("sh")
        .arg(&hosts_file)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("review10::{name}"),
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(IN_NETNS, "1")
        .status()
        .expect("unshare (this test needs root)");
    let _ = std::fs::remove_dir_all(&dir);
    Some(status.success())
}

fn tempfile_dir() -> String {
    let dir = std::env::temp_dir().join(format!(
        "review10-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_string_lossy().into_owned()
}

fn iptables(args: &str) {
    let ok = std::process::Command::new("iptables")
        .args(args.split_whitespace())
        .status()
        .unwrap()
        .success();
    assert!(ok, "iptables {args}");
}

/// Sends `GET url` with `send` every second until one is answered or `within` has passed;
/// returns how long that took.
async fn recovers<F, Fut>(within: Duration, mut send: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if send().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    None
}

/// The connection to a host is blackholed under the daemon (a load balancer or NAT that forgot
/// it, a frontend gone without a RST: packets are dropped, nothing answers) while new
/// connections work. reqwest, which carried these requests before, gives the connection up
/// (`TCP_USER_TIMEOUT` of 30 s, TCP keepalive) and the host works again within about 30 s. The
/// transport keeps sending every request on the dead connection, each timing out as "may have
/// been sent" (an `addPassword` of unknown outcome every time), until the kernel gives up on its
/// retransmissions (about 15 minutes), or until the host has had no request for 90 s.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root (iptables in a network namespace of its own): .ci/system-checks runs it"]
async fn review10_a_blackholed_connection_is_given_up_as_reqwest_gave_it_up() {
    let name = "review10_a_blackholed_connection_is_given_up_as_reqwest_gave_it_up";
    if let Some(passed) = in_own_network(name, "127.0.0.1 localhost\n") {
        assert!(passed, "failed in its own network namespace (output above)");
        return;
    }
    let server = Server::start("127.0.0.1:0", &["127.0.0.1"]).await;
    let port = server.addr.port();
    let timeout = Duration::from_secs(5);
    let blackhole_last_peer = || {
        let peer = *server.peers.lock().unwrap().last().unwrap();
        iptables(&format!(
            "-A INPUT -p tcp --sport {} --dport {port} -j DROP",
            peer.port()
        ));
        iptables(&format!(
            "-A INPUT -p tcp --sport {port} --dport {} -j DROP",
            peer.port()
        ));
    };

    // reqwest, built as the daemon built the clients of these requests.
    let reqwest =
        secret_rotator::azure::http_client(Some(server.ca_pem.as_bytes()), timeout, false).unwrap();
    let url = server.url("/ok");
    let via_reqwest = || {
        let (reqwest, url) = (reqwest.clone(), url.clone());
        async move {
            match reqwest.get(&url).send().await {
                Ok(r) => r.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    };
    assert!(via_reqwest().await);
    blackhole_last_peer();
    let reqwest_took = recovers(Duration::from_secs(90), via_reqwest).await;
    eprintln!("reqwest: the host answered again after {reqwest_took:?}");
    assert!(
        reqwest_took.is_some(),
        "reqwest recovers (the environment works)"
    );

    let h2 = Arc::new(server.transport(timeout));
    let via_h2 = || {
        let (h2, url) = (h2.clone(), url.clone());
        async move { matches!(h2.send(Pool::Main, get(&url)).await, Outcome::Answered(_)) }
    };
    assert!(via_h2().await);
    blackhole_last_peer();
    let h2_took = recovers(Duration::from_secs(90), via_h2).await;
    eprintln!("transport: the host answered again after {h2_took:?}");
    assert!(
        h2_took.is_some(),
        "the transport kept the dead connection for 90 s (reqwest: {reqwest_took:?})"
    );
}

/// A host with two addresses, the first of which drops every SYN (an unreachable frontend, or
/// IPv6 routed nowhere; DNS round robin puts it first for some lookups). reqwest splits its
/// 10 s connect timeout between the addresses and reaches the second; the transport spends the
/// whole 10 s on the first, and every request to the host fails as "not sent", for as long as
/// the address comes first.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root (its own /etc/hosts and iptables in a namespace of their own): .ci/system-checks runs it"]
async fn review10_a_host_whose_first_address_drops_syns_is_reached_on_its_second() {
    let name = "review10_a_host_whose_first_address_drops_syns_is_reached_on_its_second";
    // getaddrinfo keeps this order (both addresses equally far from 127.0.0.1).
    let hosts = "127.0.0.1 localhost\n127.0.0.2 vault.test\n127.0.0.3 vault.test\n";
    if let Some(passed) = in_own_network(name, hosts) {
        assert!(passed, "failed in its own network namespace (output above)");
        return;
    }
    let server = Server::start("127.0.0.3:0", &["vault.test"]).await;
    let port = server.addr.port();
    iptables(&format!(
        "-A INPUT -p tcp -d 127.0.0.2 --dport {port} -j DROP"
    ));
    let url = format!("https://vault.test:{port}/ok");
    let timeout = Duration::from_secs(15);

    let reqwest =
        secret_rotator::azure::http_client(Some(server.ca_pem.as_bytes()), timeout, false).unwrap();
    let start = Instant::now();
    let r = reqwest.get(&url).send().await;
    eprintln!(
        "reqwest: {:?} after {:?}",
        r.as_ref().map(|r| r.status()),
        start.elapsed()
    );
    assert!(r.is_ok(), "reqwest reaches the second address: {r:?}");

    let h2 = server.transport(timeout);
    let start = Instant::now();
    let outcome = h2.send(Pool::Main, get(&url)).await;
    eprintln!("transport: {outcome:?} after {:?}", start.elapsed());
    assert!(
        matches!(outcome, Outcome::Answered(_)),
        "the transport never tried the second address: {outcome:?}"
    );
}

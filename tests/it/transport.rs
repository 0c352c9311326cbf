//! The rotation's HTTP/2 transport (src/azure/transport.rs) against a TLS server on loopback
//! that counts its connections: what it shares, when it closes, how it fails.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use secret_rotator::azure::SECRET_CONNECTION_IDLE;
use secret_rotator::azure::connections::{Pool, TlsConfig};
use secret_rotator::azure::transport::{Failure, H2, Outcome};

/// A TLS server on loopback offering `alpn`, answering `/ok` at once and `/slow` after 30 s.
struct Server {
    port: u16,
    ca_pem: String,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        self.drop_connections();
    }
}

impl Server {
    async fn start(alpn: &[u8]) -> Server {
        let (acceptor, ca_pem) = acceptor(alpn);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let http2 = alpn == b"h2";
        let task = tokio::spawn({
            let (accepted, closed, connections) =
                (accepted.clone(), closed.clone(), connections.clone());
            async move {
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let acceptor = acceptor.clone();
                    let closed = closed.clone();
                    let handle = tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            closed.fetch_add(1, Ordering::SeqCst);
                            return;
                        };
                        let io = hyper_util::rt::TokioIo::new(tls);
                        let service = hyper::service::service_fn(answer);
                        let _ = if http2 {
                            hyper::server::conn::http2::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(io, service)
                            .await
                        } else {
                            hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, service)
                                .await
                        };
                        closed.fetch_add(1, Ordering::SeqCst);
                    });
                    connections.lock().unwrap().push(handle.abort_handle());
                }
            }
        });
        Server {
            port,
            ca_pem,
            accepted,
            closed,
            connections,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn transport(&self, timeout: Duration) -> H2 {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        H2::new(
            &TlsConfig::new(Some(self.ca_pem.as_bytes())).unwrap(),
            timeout,
        )
    }

    /// Closes every connection from the server's side, without a GOAWAY.
    fn drop_connections(&self) {
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// A TLS acceptor offering `alpn` with a certificate for 127.0.0.1, and its CA's PEM.
fn acceptor(alpn: &[u8]) -> (tokio_rustls::TlsAcceptor, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), &ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
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
    config.alpn_protocols = vec![alpn.to_vec()];
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca_cert.pem(),
    )
}

async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    if request.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    Ok(hyper::Response::new(Full::new(Bytes::from_static(
        b"hello",
    ))))
}

fn get(url: &str) -> http::Request<Bytes> {
    http::Request::get(url).body(Bytes::new()).unwrap()
}

async fn answered(h2: &H2, pool: Pool, url: &str) -> u16 {
    match h2.send(pool, get(url)).await {
        Outcome::Answered(a) => {
            assert_eq!(&a.body[..], b"hello");
            a.status
        }
        Outcome::Failed(f) => panic!("no answer from {url}: {f:?}"),
        Outcome::Elsewhere(_) => panic!("{url} was sent elsewhere"),
    }
}

fn failed(outcome: Outcome) -> Failure {
    match outcome {
        Outcome::Failed(f) => f,
        Outcome::Answered(a) => panic!("answered {}", a.status),
        Outcome::Elsewhere(_) => panic!("sent elsewhere"),
    }
}

/// Polls `f` for up to `within`.
async fn eventually(within: Duration, f: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_to_a_new_host_share_the_one_connection_the_first_of_them_makes() {
    let server = Server::start(b"h2").await;
    let h2 = Arc::new(server.transport(Duration::from_secs(10)));
    let url = server.url("/ok");
    let all = (0..20).map(|_| {
        let (h2, url) = (h2.clone(), url.clone());
        tokio::spawn(async move { answered(&h2, Pool::Main, &url).await })
    });
    for r in futures::future::join_all(all).await {
        assert_eq!(r.unwrap(), 200);
    }
    assert_eq!(server.accepted(), 1, "one connection for twenty requests");
    // Each pool has its connections: a secret one never rides on a long-lived connection.
    answered(&h2, Pool::Secret, &url).await;
    assert_eq!(server.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_connection_closes_once_idle_and_a_main_one_stays_open() {
    let server = Server::start(b"h2").await;
    let h2 = server.transport(Duration::from_secs(10));
    answered(&h2, Pool::Secret, &server.url("/ok")).await;
    answered(&h2, Pool::Main, &server.url("/ok")).await;
    assert_eq!(server.accepted(), 2);
    assert!(
        eventually(SECRET_CONNECTION_IDLE * 2, || server.closed() == 1).await,
        "the secret connection closes {SECRET_CONNECTION_IDLE:?} after its last answer"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(server.closed(), 1, "the main connection stays open");
    answered(&h2, Pool::Main, &server.url("/ok")).await;
    assert_eq!(server.accepted(), 2, "and is used again");
    // A secret request after the close opens a connection of its own again.
    answered(&h2, Pool::Secret, &server.url("/ok")).await;
    assert_eq!(server.accepted(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_the_server_closed_is_replaced_by_the_next_request() {
    let server = Server::start(b"h2").await;
    let h2 = server.transport(Duration::from_secs(10));
    answered(&h2, Pool::Main, &server.url("/ok")).await;
    server.drop_connections();
    // hyper sees the end of the connection as soon as it reads it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(answered(&h2, Pool::Main, &server.url("/ok")).await, 200);
    assert_eq!(server.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_fails_every_waiting_request_as_not_sent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let h2 = Arc::new(H2::new(
        &TlsConfig::new(None).unwrap(),
        Duration::from_secs(10),
    ));
    let url = format!("https://127.0.0.1:{port}/ok");
    let all = (0..5).map(|_| {
        let (h2, url) = (h2.clone(), url.clone());
        tokio::spawn(async move { failed(h2.send(Pool::Main, get(&url)).await) })
    });
    for f in futures::future::join_all(all).await {
        let f = f.unwrap();
        assert!(!f.sent, "a refused connection sent nothing: {f:?}");
        assert!(f.message.contains(&port.to_string()), "{}", f.message);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_answer_within_the_timeout_may_have_been_sent() {
    let server = Server::start(b"h2").await;
    let h2 = server.transport(Duration::from_secs(1));
    let start = Instant::now();
    let f = failed(h2.send(Pool::Main, get(&server.url("/slow"))).await);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(f.sent, "the request left: its outcome is unknown");
    assert!(f.message.contains("no answer within 1 s"), "{}", f.message);
    // The connection is still good for the next request.
    answered(&h2, Pool::Main, &server.url("/ok")).await;
    assert_eq!(server.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_offers_only_http1_is_left_to_reqwest_with_the_request_untouched() {
    let server = Server::start(b"http/1.1").await;
    let h2 = server.transport(Duration::from_secs(10));
    let request = || {
        http::Request::post(server.url("/ok"))
            .header("x-test", "kept")
            .body(Bytes::from_static(b"{\"a\":1}"))
            .unwrap()
    };
    for _ in 0..2 {
        match h2.send(Pool::Main, request()).await {
            Outcome::Elsewhere(r) => {
                assert_eq!(r.uri(), request().uri());
                assert_eq!(r.headers()["x-test"], "kept");
                assert_eq!(&r.body()[..], b"{\"a\":1}");
            }
            other => panic!("not left to reqwest: {other:?}"),
        }
    }
    assert_eq!(server.accepted(), 1, "the host's choice is remembered");
    // Plain HTTP is never taken.
    assert!(matches!(
        h2.send(Pool::Main, get("http://127.0.0.1:9/ok")).await,
        Outcome::Elsewhere(_)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_the_server_refused_is_reported_as_not_sent() {
    // An HTTP/2 server that resets every stream with REFUSED_STREAM: closed before any
    // processing (RFC 9113, 8.7), so a write it refused was certainly not applied.
    let (acceptor, ca_pem) = acceptor(b"h2");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn({
        let seen = seen.clone();
        async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = acceptor.accept(tcp).await.unwrap();
            let mut conn = h2::server::handshake(tls).await.unwrap();
            while let Some(Ok((_, mut respond))) = conn.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                respond.send_reset(h2::Reason::REFUSED_STREAM);
            }
        }
    });
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let h2 = H2::new(
        &TlsConfig::new(Some(ca_pem.as_bytes())).unwrap(),
        Duration::from_secs(10),
    );
    let post = http::Request::post(format!(
        "https://127.0.0.1:{port}/applications/x/addPassword"
    ))
    .body(Bytes::from_static(b"{}"))
    .unwrap();
    let f = failed(h2.send(Pool::Secret, post).await);
    assert!(!f.sent, "a refused stream was not processed: {f:?}");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "and it is not sent again by the transport"
    );
    server.abort();
}

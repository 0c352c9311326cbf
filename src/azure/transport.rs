//! The HTTP/2 transport of the rotation's requests (Graph, Entra, Key Vault): one connection per
//! host and pool, made once and shared by every request to that host, with no pool checkout, no
//! URL parsed again and no middleware between the request and hyper's HTTP/2 client. reqwest
//! spends a third of a request's instructions and two thirds of the memory a request holds
//! while it waits on that generality (docs/performance.md, "A lean HTTP/2 transport"); it still
//! carries what this transport does not do: proxies, plain HTTP (managed identity endpoints),
//! and hosts that do not offer HTTP/2 ([`Outcome::Elsewhere`]).
//!
//! What it keeps of reqwest's behaviour, because the rotation protocol depends on it:
//! - a request that never left (no connection, a failed TLS handshake, or a connection that
//!   closed before the request was written) is reported as not sent ([`Failure::sent`] false),
//!   and only such a request is tried again on a new connection: a request that was written is
//!   never sent twice (an `addPassword` whose answer is lost stays of unknown outcome);
//! - one timeout covers the whole exchange, connecting and reading the answer included;
//! - a connection closes a while after its last answer: a [`Pool::Secret`] one after
//!   [`super::SECRET_CONNECTION_IDLE`], so that the buffers that carried a secret are freed (and
//!   thereby zeroed, `main.rs`) within seconds; a [`Pool::Main`] one after 90 s, as reqwest's.
//!
//! Requests that find no open connection to their host wait for the one being made instead of
//! each opening their own (what [`super::connections::Gates`] does in front of reqwest); when
//! making it fails, the requests that waited for it fail with its error rather than each trying
//! again behind the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;

use super::connections::{Pool, TlsConfig};

/// The largest answer read. Far above any answer the daemon asks for (a Graph page of 999
/// applications is a few MB), low enough that a broken peer cannot fill the daemon's memory.
pub const MAX_ANSWER: usize = 64 << 20;

/// How long a [`Pool::Main`] connection stays open after its last answer (reqwest's default).
const MAIN_IDLE: Duration = Duration::from_secs(90);

/// How many times a request that never left is taken to a new connection.
const ATTEMPTS: usize = 3;

/// An answer, read whole. Its `Debug` leaves the body out: an answer may carry a secret.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// A request that got no answer. Its text never holds a secret: it is built from the transport's
/// errors, which know nothing of the bodies.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Whether the request may have reached the service: false only when it certainly did not.
    pub sent: bool,
    pub message: String,
}

impl Failure {
    fn not_sent(message: impl Into<String>) -> Failure {
        Failure {
            sent: false,
            message: message.into(),
        }
    }
}

/// What [`H2::send`] did with a request. Its `Debug` shows no body, of the answer or of the
/// request (a token request's body holds a secret).
pub enum Outcome {
    Answered(Answer),
    Failed(Failure),
    /// The host does not speak HTTP/2 (or the URL is not `https`): the request, untouched, is
    /// for reqwest.
    Elsewhere(http::Request<Bytes>),
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Answered(a) => f.debug_tuple("Answered").field(a).finish(),
            Outcome::Failed(failure) => f.debug_tuple("Failed").field(failure).finish(),
            Outcome::Elsewhere(r) => write!(f, "Elsewhere({} {})", r.method(), r.uri()),
        }
    }
}

/// The HTTP/2 connections of one [`super::AzureHttp`].
pub struct H2 {
    tcp: HttpConnector,
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
    connect_timeout: Duration,
    hosts: Mutex<HashMap<(Pool, String), Arc<Host>>>,
}

struct Host {
    pool: Pool,
    /// Locked while a connection is made, so that the requests that find none wait for it.
    slot: tokio::sync::Mutex<Slot>,
}

enum Slot {
    Empty,
    Open(Conn),
    /// The last attempt to connect failed at `at`.
    Failed {
        at: Instant,
        message: String,
    },
    /// The host chose HTTP/1.1 in the TLS handshake: its requests go through reqwest.
    Http1,
}

#[derive(Clone)]
struct Conn {
    send: SendRequest<Full<Bytes>>,
    usage: Arc<Usage>,
}

/// How a connection is used, for its idle close.
struct Usage {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Usage {
    fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request on a connection: counted while it lasts, and the connection's last use when it
/// ends (answered, failed or dropped by a timeout).
struct Busy(Arc<Usage>);

impl Busy {
    fn new(usage: Arc<Usage>) -> Busy {
        usage.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(usage)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Route {
    H2(Conn),
    Http1,
}

impl H2 {
    /// `timeout` bounds each exchange; connecting alone takes at most 10 s of it, as reqwest's
    /// clients are built (`super::http_builder`).
    pub fn new(tls: &TlsConfig, timeout: Duration) -> H2 {
        let connect_timeout = Duration::from_secs(10).min(timeout);
        // The TCP side as reqwest's clients make it: the connect timeout shared between a
        // host's addresses (happy eyeballs), no Nagle delay, and a connection given up once
        // its peer stops answering: keepalive probes after 15 s idle (every 15 s, 3 of them)
        // and unacknowledged data after 30 s (`TCP_USER_TIMEOUT`). Without these a connection
        // a load balancer forgot stays "open", and every request on it times out.
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        tcp.set_keepalive(Some(Duration::from_secs(15)));
        tcp.set_keepalive_interval(Some(Duration::from_secs(15)));
        tcp.set_keepalive_retries(Some(3));
        tcp.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        H2 {
            tcp,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls.rustls())),
            timeout,
            connect_timeout,
            hosts: Mutex::default(),
        }
    }

    /// Sends `request` on its host's connection in `pool` and reads the whole answer, all
    /// within the transport's timeout.
    pub async fn send(&self, pool: Pool, request: http::Request<Bytes>) -> Outcome {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let late = |sent| {
            Outcome::Failed(Failure {
                sent,
                message: format!("no answer within {} s", self.timeout.as_secs_f64()),
            })
        };
        let Some((host, port)) = host_and_port(request.uri()).map(|(h, p)| (h.to_string(), p))
        else {
            return Outcome::Elsewhere(request);
        };
        let mut conn =
            match tokio::time::timeout_at(deadline, self.route(pool, &host, port, started)).await {
                Ok(Ok(Route::H2(conn))) => conn,
                Ok(Ok(Route::Http1)) => return Outcome::Elsewhere(request),
                Ok(Err(f)) => return Outcome::Failed(f),
                Err(_) => return late(false),
            };
        let mut request = request.map(Full::new);
        for attempt in 1..=ATTEMPTS {
            request = match tokio::time::timeout_at(deadline, roundtrip(conn, request)).await {
                Ok(Trip::Done(outcome)) => return outcome,
                Ok(Trip::Unsent(unsent)) => unsent,
                // The request may have left; or it waited in hyper's queue and did not: which
                // is not known, so it counts as sent.
                Err(_) => return late(true),
            };
            if attempt == ATTEMPTS {
                return Outcome::Failed(Failure::not_sent(format!(
                    "the connection to {host} closed before the request left, {ATTEMPTS} times"
                )));
            }
            conn = match tokio::time::timeout_at(
                deadline,
                self.route(pool, &host, port, Instant::now()),
            )
            .await
            {
                Ok(Ok(Route::H2(c))) => c,
                Ok(Ok(Route::Http1)) => {
                    return Outcome::Failed(Failure::not_sent(format!(
                        "{host} stopped offering HTTP/2"
                    )));
                }
                Ok(Err(f)) => return Outcome::Failed(f),
                Err(_) => return late(false),
            };
        }
        unreachable!("the last attempt returns")
    }

    /// The open connection to `host` in `pool`, made if there is none.
    async fn route(
        &self,
        pool: Pool,
        host: &str,
        port: u16,
        started: Instant,
    ) -> Result<Route, Failure> {
        let entry = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            hosts
                .entry((pool, format!("{host}:{port}")))
                .or_insert_with(|| {
                    Arc::new(Host {
                        pool,
                        slot: tokio::sync::Mutex::new(Slot::Empty),
                    })
                })
                .clone()
        };
        let mut slot = entry.slot.lock().await;
        match &*slot {
            Slot::Open(conn) if !conn.send.is_closed() => return Ok(Route::H2(conn.clone())),
            Slot::Http1 => return Ok(Route::Http1),
            // This request waited for that attempt: it shares its failure.
            Slot::Failed { at, message } if *at >= started => {
                return Err(Failure::not_sent(message.clone()));
            }
            _ => {}
        }
        // Boxed: connecting (DNS, TCP, TLS, HTTP/2) is a future of kilobytes that every request
        // would otherwise carry, and move, and zero when freed, to use once per connection.
        let made =
            match tokio::time::timeout(self.connect_timeout, Box::pin(self.connect(host, port)))
                .await
            {
                Ok(made) => made,
                Err(_) => Err(format!(
                    "connecting to {host}:{port}: no connection within {} s",
                    self.connect_timeout.as_secs_f64()
                )),
            };
        match made {
            Ok(Some(send)) => {
                let conn = Conn {
                    send,
                    usage: Arc::new(Usage {
                        in_flight: AtomicUsize::new(0),
                        last: Mutex::new(Instant::now()),
                    }),
                };
                close_when_idle(Arc::downgrade(&entry), conn.usage.clone());
                *slot = Slot::Open(conn.clone());
                Ok(Route::H2(conn))
            }
            Ok(None) => {
                *slot = Slot::Http1;
                Ok(Route::Http1)
            }
            Err(message) => {
                *slot = Slot::Failed {
                    at: Instant::now(),
                    message: message.clone(),
                };
                Err(Failure::not_sent(message))
            }
        }
    }

    /// A new HTTP/2 connection to `host`, or `None` when the host chose HTTP/1.1.
    async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Option<SendRequest<Full<Bytes>>>, String> {
        let authority = if host.contains(':') {
            format!("https://[{host}]:{port}")
        } else {
            format!("https://{host}:{port}")
        };
        let uri = http::Uri::try_from(authority).map_err(|e| format!("{host}:{port}: {e}"))?;
        let tcp = tower::ServiceExt::oneshot(self.tcp.clone(), uri)
            .await
            .map_err(|e| {
                format!(
                    "connecting to {host}:{port}: {}",
                    super::identity::error_chain(&e)
                )
            })?
            .into_inner();
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Ok(None);
        }
        let (send, connection) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                // The stream boxed: hyper spawns a task for each request whose future is as large
                // as the connection's, TLS state included (2.5 KB with it inline, 1.4 without).
                .handshake(Box::new(hyper_util::rt::TokioIo::new(tls)))
                .await
                .map_err(|e| {
                    format!(
                        "HTTP/2 with {host}:{port}: {}",
                        super::identity::error_chain(&e)
                    )
                })?;
        let peer = format!("{host}:{port}");
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(peer, error = %super::identity::error_chain(&e), "HTTP/2 connection ended");
            }
        });
        Ok(Some(send))
    }
}

/// What one attempt on a connection came to.
enum Trip {
    Done(Outcome),
    /// The connection closed before the request was written: it never left.
    Unsent(http::Request<Full<Bytes>>),
}

/// One request on `conn`, its answer read whole.
async fn roundtrip(conn: Conn, request: http::Request<Full<Bytes>>) -> Trip {
    let Conn { mut send, usage } = conn;
    let _busy = Busy::new(usage);
    let answer = match send.try_send_request(request).await {
        Ok(answer) => answer,
        Err(mut e) => {
            return match e.take_message() {
                Some(unsent) => Trip::Unsent(unsent),
                None => Trip::Done(Outcome::Failed(Failure {
                    sent: !refused(e.error()),
                    message: super::identity::error_chain(e.error()),
                })),
            };
        }
    };
    let (parts, body) = answer.into_parts();
    Trip::Done(match Limited::new(body, MAX_ANSWER).collect().await {
        Ok(body) => Outcome::Answered(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.to_bytes(),
        }),
        Err(e) => Outcome::Failed(Failure {
            sent: true,
            message: format!(
                "reading the answer: {}",
                super::identity::error_chain(e.as_ref())
            ),
        }),
    })
}

/// Whether the server reset the request's stream with `REFUSED_STREAM`: closed before any
/// processing (RFC 9113, 8.7), so certainly not applied. A stream cut by a GOAWAY is not: h2
/// reports a stream above the GOAWAY's last stream id (not processed) and one below it cut by the
/// connection's end (perhaps processed) with the same error.
fn refused(e: &hyper::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.is_reset()
                && h2.is_remote()
                && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        cur = err.source();
    }
    false
}

/// Takes the connection out of its host's slot once it has been idle for its pool's time; it
/// closes when the last request on it (none, by then) lets go of it.
fn close_when_idle(host: Weak<Host>, usage: Arc<Usage>) {
    tokio::spawn(async move {
        let idle = match host.upgrade() {
            Some(h) => match h.pool {
                Pool::Main => MAIN_IDLE,
                Pool::Secret => super::SECRET_CONNECTION_IDLE,
            },
            None => return,
        };
        loop {
            let due = usage.last() + idle;
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            } else if usage.in_flight.load(Ordering::Relaxed) == 0 {
                break;
            } else {
                // A request still waits on it: look again when it could have gone idle.
                tokio::time::sleep(idle).await;
            }
        }
        let Some(host) = host.upgrade() else { return };
        let mut slot = host.slot.lock().await;
        if matches!(&*slot, Slot::Open(c) if Arc::ptr_eq(&c.usage, &usage)) {
            *slot = Slot::Empty;
        }
    });
}

/// The host (IPv6 literals without their brackets) and port of an `https` URL.
fn host_and_port(uri: &http::Uri) -> Option<(&str, u16)> {
    if uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
        return None;
    }
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, uri.port_u16().unwrap_or(443)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_no_body_of_an_answer_or_a_request() {
        let secret = "client_secret=s3cr3t-Q~value";
        let answer = Outcome::Answered(Answer {
            status: 200,
            headers: http::HeaderMap::new(),
            body: Bytes::from(secret),
        });
        let request = Outcome::Elsewhere(
            http::Request::post("https://login.example/t/oauth2/v2.0/token")
                .body(Bytes::from(secret))
                .unwrap(),
        );
        for shown in [format!("{answer:?}"), format!("{request:?}")] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
        }
        assert!(format!("{answer:?}").contains("200"));
        assert!(format!("{request:?}").contains("login.example"));
    }

    #[test]
    fn only_https_urls_are_taken_and_ipv6_hosts_lose_their_brackets() {
        let uri = |s: &str| s.parse::<http::Uri>().unwrap();
        assert_eq!(
            host_and_port(&uri("https://kv.example/secrets/a")),
            Some(("kv.example", 443))
        );
        assert_eq!(
            host_and_port(&uri("https://[::1]:8443/v1.0/applications")),
            Some(("::1", 8443))
        );
        assert_eq!(
            host_and_port(&uri(
                "http://169.254.169.254/metadata/identity/oauth2/token"
            )),
            None
        );
    }
}

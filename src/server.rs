//! The daemon's HTTP: the status page at `/` (`status_page.rs`), `/metrics`, `/healthz`, `/readyz`, `/v1/clients` and the token-protected
//! `POST /v1/clients/{name}/rotate`.
//!
//! Served over HTTP/1.1 only, to Host names DNS rebinding cannot fake, with a deadline on every
//! connection and request, and a connection limit that new connections (a liveness probe)
//! always get through: see `docs/decisions.md`.
//!
//! Over 600 lines: about 220 of them are tests; the rest is the listener with its deadlines,
//! Host check and connection limit, and the endpoints, which share them.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, RotateAnswer, Shared};

/// The largest body the rotate endpoint tolerates; it takes none and never reads one.
const MAX_BODY: u64 = 64 * 1024;
/// The largest request head (request line and headers); a larger one gets 431.
const MAX_HEADERS: usize = 16 * 1024;

pub fn router(shared: Arc<Shared>) -> axum::Router {
    let config = shared.clone();
    let api = axum::Router::new()
        .route("/", get(crate::status_page::page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/clients", get(clients))
        .route("/v1/budget", get(budget))
        .route("/v1/events", get(events))
        .route("/v1/clients/{name}/rotate", post(rotate))
        .with_state(shared);
    // Read per request, so that a reload applies.
    protect(
        api,
        Arc::new(move || config.context().config.server.allowed_hosts.clone()),
    )
}

/// The configured host names (lower case) the API answers to.
type AllowedHosts = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// Refuses requests whose Host is not allowed, and marks every answer `nosniff` and `no-store`.
fn protect(api: axum::Router, allowed: AllowedHosts) -> axum::Router {
    api.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let allowed = allowed.clone();
            async move {
                match check_host(&request, &allowed()) {
                    Ok(()) => next.run(request).await,
                    Err(why) => error(StatusCode::MISDIRECTED_REQUEST, why),
                }
            }
        },
    ))
    .layer(axum::middleware::map_response(
        |mut response: Response| async move {
            api_headers(&mut response);
            response
        },
    ))
}

fn api_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A web page whose name an attacker rebinds to 127.0.0.1 reaches the API with its own name in
/// `Host`. Allowed are names no DNS answer can change: IP addresses, `localhost`, and the names
/// the operator lists in `server.allowed_hosts`. A request without `Host` (HTTP/1.0 health
/// checks) is allowed: browsers always send one.
fn check_host(request: &Request, configured: &[String]) -> Result<(), String> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    if let Some(host) = hosts.next() {
        if hosts.next().is_some() {
            return Err("more than one Host header".into());
        }
        host_allowed(
            host.to_str().map_err(|_| {
                "the Host header is not printable ASCII: see server.allowed_hosts".to_string()
            })?,
            configured,
        )?;
    }
    // An absolute request target (`GET http://name/...`) names a host too.
    if let Some(authority) = request.uri().authority() {
        host_allowed(authority.as_str(), configured)?;
    }
    Ok(())
}

/// Whether `authority` (`host[:port]`) is an allowed name. The port is not compared: rebinding
/// is defeated by the name alone, and port forwarding (`kubectl port-forward`, `ssh -L`,
/// `docker -p`) changes the port a legitimate client names.
fn host_allowed(authority: &str, configured: &[String]) -> Result<(), String> {
    let refused = || {
        let shown: String = authority.chars().take(100).collect();
        format!(
            "Host '{shown}' is not a name of this server: the API answers to IP addresses, localhost and the names in server.allowed_hosts"
        )
    };
    if authority.contains('@') {
        return Err(refused());
    }
    let parsed: axum::http::uri::Authority = authority.parse().map_err(|_| refused())?;
    let host = parsed.host();
    let port = &authority[host.len()..];
    if !(port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.parse::<u16>().is_ok()))
    {
        return Err(refused());
    }
    let ip = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => host.parse::<Ipv4Addr>().is_ok(),
    };
    let name = host.to_ascii_lowercase();
    if ip || name == "localhost" || configured.contains(&name) {
        Ok(())
    } else {
        Err(refused())
    }
}

async fn metrics(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    // Sent as it is written, a batch of clients at a time (`metrics::Scrape`), never whole.
    // The pieces are written by a task of their own, one ahead of the socket: the daemon has
    // one runtime worker, and hyper asks a body for pieces for as long as the socket takes
    // them, so a scrape written inside the body would hold the worker (`/healthz`, `/readyz`,
    // the scheduler) for the whole exposition; this way it waits for one piece at most.
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(1);
    let scrape = s.metrics.scrape(openmetrics);
    tokio::spawn(async move {
        for piece in scrape {
            // The scraper went away: stop writing.
            if tx.send(piece).await.is_err() {
                break;
            }
        }
    });
    let pieces = futures::stream::unfold(rx, |mut rx| async {
        let piece = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(piece), rx))
    });
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        axum::body::Body::from_stream(pieces),
    )
        .into_response()
}

async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    if s.alive() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler loop has stalled\n",
        )
            .into_response()
    }
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    match s.readiness() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn clients(State(s): State<Arc<Shared>>) -> Response {
    let mut response = Json(s.status()).into_response();
    // With HA the body stays the clients' array; the headers say who this is and who leads.
    if let Some(role) = s.role() {
        let headers = response.headers_mut();
        let value = if role.leader { "leader" } else { "follower" };
        headers.insert("x-secret-rotator-role", HeaderValue::from_static(value));
        if let Some(v) = role
            .leader_name
            .and_then(|n| HeaderValue::from_str(&n).ok())
        {
            headers.insert("x-secret-rotator-leader", v);
        }
    }
    response
}

/// Every event sink: undelivered events, whether it is failing, its last error.
async fn events(State(s): State<Arc<Shared>>) -> Response {
    let ctx = s.context();
    let sinks: Vec<crate::events::SinkState> = ctx
        .config
        .events
        .iter()
        .map(|sink| {
            ctx.store.sink_state(
                &sink.name,
                sink.kind.name(),
                crate::events::deliver::FAILING_AFTER,
            )
        })
        .collect();
    Json(sinks).into_response()
}

/// `daemon.max_rotations_per_hour` and what the last hour used of it.
async fn budget(State(s): State<Arc<Shared>>) -> Response {
    Json(crate::status::budget(
        &s.context().budget,
        crate::clock::now(),
    ))
    .into_response()
}

#[derive(Deserialize)]
struct RotateQuery {
    #[serde(default)]
    revoke_previous: bool,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn rotate(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    query: Result<Query<RotateQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    // The token is checked first and the body is never read: waiting for a body before
    // checking would let anyone hold a connection with one sent slowly. An unread body ends
    // the connection after the answer.
    let Some(expected) = s.admin_token() else {
        return error(
            StatusCode::FORBIDDEN,
            "admin API writes are disabled: set server.admin_token_file",
        );
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let matches: bool = presented
        .as_bytes()
        .ct_eq(expected.expose_secret().as_bytes())
        .into();
    if !matches {
        let mut r = error(StatusCode::UNAUTHORIZED, "a valid admin token is required");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the rotate endpoint takes no body",
        );
    }
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid query: revoke_previous takes true or false",
        );
    };
    let (reply, answer) = oneshot::channel();
    if s.requests
        .send(admin::Request::Rotate {
            client: name.clone(),
            revoke_previous: q.revoke_previous,
            reply,
        })
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping");
    }
    match answer.await {
        Ok(RotateAnswer::Started { preflight }) => {
            let accepted = |status: &str| {
                (StatusCode::ACCEPTED, Json(json!({ "client": name, "status": status, "revoke_previous": q.revoke_previous }))).into_response()
            };
            // The reconcile says, once it has observed and planned, whether the rotation (and
            // revocation) will happen: a revocation of a credential that is not provably this
            // client's is refused, and a client that is blocked (a foreign or busy password
            // slot, a soft-deleted secret) rotates nothing. Nothing is claimed before that.
            match tokio::time::timeout(PREFLIGHT_WAIT, preflight).await {
                Ok(Ok(Ok(()))) => accepted("rotation started"),
                Ok(Ok(Err(reason))) => error(StatusCode::CONFLICT, reason),
                Ok(Err(_)) => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the rotation did not start; see /v1/clients",
                ),
                Err(_) => accepted(
                    "queued: the client is busy; whether it rotates (and revokes) is decided before anything is written",
                ),
            }
        }
        Ok(RotateAnswer::InFlight) => error(
            StatusCode::CONFLICT,
            format!("a reconcile of '{name}' is already in flight"),
        ),
        Ok(RotateAnswer::NoSuchClient) => {
            error(StatusCode::NOT_FOUND, format!("no client named '{name}'"))
        }
        Ok(RotateAnswer::NotLeader { leader }) => {
            let who = leader.as_deref().unwrap_or("not known yet");
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("this replica is not the leader; the leader is {who}: ask it"),
            );
            if let Some(v) = leader.and_then(|n| HeaderValue::from_str(&n).ok()) {
                r.headers_mut().insert("x-secret-rotator-leader", v);
            }
            r
        }
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping"),
    }
}

/// How long a revoking rotate request waits for the reconcile's ownership check.
const PREFLIGHT_WAIT: Duration = Duration::from_secs(60);

/// The server's limits; tests shorten them.
#[derive(Clone, Copy)]
struct Limits {
    /// Connections served at once. A new connection beyond it closes the oldest idle one.
    connections: usize,
    /// A connection must send a request's headers within this, counted from when it is
    /// accepted or its previous answer was sent: the header deadline and the keep-alive limit.
    headers: Duration,
    /// From a request's headers to its answer.
    request: Duration,
    /// The longest a connection lives, however it is used: bounds a client that never reads.
    lifetime: Duration,
}

const LIMITS: Limits = Limits {
    connections: 256,
    headers: Duration::from_secs(10),
    // Every endpoint answers at once but a revoking rotation, which waits for its ownership
    // check; only an admin token holder can start one.
    request: Duration::from_secs(70),
    lifetime: Duration::from_secs(120),
};
const _: () = assert!(LIMITS.request.as_secs() > PREFLIGHT_WAIT.as_secs());

/// Serves `router` until `stop` fires. HTTP/1.1 only: HTTP/2 would need its own idle and
/// keep-alive limits, and the endpoints gain nothing from it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: CancellationToken,
) {
    serve_with(listener, router, stop, LIMITS).await
}

async fn serve_with(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: CancellationToken,
    limits: Limits,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    let open = Arc::new(Connections::default());
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Idle connections cost an attacker nothing; a probe must still get in. Busy
                // ones end within the request deadline.
                if open.evict_oldest_idle() {
                    tracing::debug!("connection limit reached: closed the oldest idle connection");
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                    _ = stop.cancelled() => return,
                }
            }
        };
        let tracked = open.track();
        tokio::spawn(connection(
            stream,
            router.clone(),
            stop.clone(),
            limits,
            tracked,
            permit,
        ));
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    router: axum::Router,
    stop: CancellationToken,
    limits: Limits,
    tracked: Tracked,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let busy = tracked.busy.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let working = Working::start(&busy);
        let answer = router.clone().oneshot(req.map(axum::body::Body::new));
        async move {
            let _working = working;
            let response = match tokio::time::timeout(limits.request, answer).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    let mut r = error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the request was not answered in time",
                    );
                    api_headers(&mut r);
                    r
                }
            };
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Requests here are a line and a few headers; hyper's default buffer (~400 KiB) times the
    // connection limit would be most of the pod's memory limit.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.headers)
        .max_buf_size(MAX_HEADERS);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let grace = tokio::select! {
        _ = conn.as_mut() => return,
        _ = tracked.evict.cancelled() => {
            // Chosen while idle; a request that started since may finish.
            if tracked.busy.load(Ordering::Acquire) == 0 {
                return;
            }
            limits.request
        }
        _ = stop.cancelled() => Duration::from_secs(1),
        _ = tokio::time::sleep(limits.lifetime) => limits.request,
    };
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(grace, conn).await;
}

/// The open connections in the order they were accepted, and whether each is handling a
/// request.
#[derive(Default)]
struct Connections {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, (Arc<AtomicUsize>, CancellationToken)>>,
}

impl Connections {
    fn track(self: &Arc<Self>) -> Tracked {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let busy = Arc::new(AtomicUsize::new(0));
        let evict = CancellationToken::new();
        self.lock().insert(id, (busy.clone(), evict.clone()));
        Tracked {
            open: self.clone(),
            id,
            busy,
            evict,
        }
    }

    /// Closes the oldest connection that is not handling a request (it may be waiting for, or
    /// reading, request headers, or writing an answer); false when every one is busy.
    fn evict_oldest_idle(&self) -> bool {
        let mut open = self.lock();
        let oldest = open
            .iter()
            .find(|(_, (busy, _))| busy.load(Ordering::Acquire) == 0)
            .map(|(id, _)| *id);
        match oldest.and_then(|id| open.remove(&id)) {
            Some((_, evict)) => {
                evict.cancel();
                true
            }
            None => false,
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Arc<AtomicUsize>, CancellationToken)>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One open connection; leaves the registry when dropped.
struct Tracked {
    open: Arc<Connections>,
    id: u64,
    busy: Arc<AtomicUsize>,
    evict: CancellationToken,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.open.lock().remove(&self.id);
    }
}

/// Marks a connection busy while one of its requests is being handled.
struct Working(Arc<AtomicUsize>);

impl Working {
    fn start(busy: &Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::AcqRel);
        Working(busy.clone())
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tower::ServiceExt;

    fn api() -> axum::Router {
        let routes = axum::Router::new()
            .route("/x", get(|| async { "ok" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "slow"
                }),
            )
            .route("/never", get(std::future::pending::<String>));
        protect(routes, Arc::new(|| vec!["metrics.internal".to_string()]))
    }

    async fn call(path: &str, host: Option<&str>) -> Response {
        let mut request = Request::builder().uri(path);
        if let Some(host) = host {
            request = request.header(header::HOST, host);
        }
        api()
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[test]
    fn only_names_dns_rebinding_cannot_fake_are_allowed_hosts() {
        let configured = ["metrics.internal".to_string()];
        for allowed in [
            "127.0.0.1:9464",
            "127.0.0.1",
            "[::1]:9464",
            "[::1]",
            "10.244.1.7:9464",
            "localhost",
            "LocalHost:19464",
            "metrics.internal:9464",
            "METRICS.internal",
        ] {
            assert_eq!(host_allowed(allowed, &configured), Ok(()), "{allowed}");
        }
        for refused in [
            "evil.example",
            "evil.example:9464",
            "localhost.evil.example",
            "127.0.0.1.nip.io:9464",
            "metrics.internal.evil.example",
            "2130706433",
            "user@127.0.0.1",
            "[::1",
            "127.0.0.1:port",
            "",
        ] {
            let Err(why) = host_allowed(refused, &configured) else {
                panic!("{refused} was allowed");
            };
            assert!(why.contains("server.allowed_hosts"), "{refused}: {why}");
        }
    }

    #[tokio::test]
    async fn a_foreign_host_is_misdirected_and_every_answer_is_nosniff_and_no_store() {
        for (path, host, status) in [
            (
                "/x",
                Some("evil.example:9464"),
                StatusCode::MISDIRECTED_REQUEST,
            ),
            ("/x", Some("127.0.0.1:9464"), StatusCode::OK),
            ("/x", Some("metrics.internal"), StatusCode::OK),
            ("/x", None, StatusCode::OK),
            ("/nope", Some("localhost"), StatusCode::NOT_FOUND),
            (
                "/nope",
                Some("evil.example"),
                StatusCode::MISDIRECTED_REQUEST,
            ),
            (
                "http://evil.example/x",
                Some("localhost"),
                StatusCode::MISDIRECTED_REQUEST,
            ),
        ] {
            let response = call(path, host).await;
            assert_eq!(response.status(), status, "{path} {host:?}");
            assert_eq!(
                response.headers()[header::X_CONTENT_TYPE_OPTIONS],
                "nosniff"
            );
            assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        }
    }

    const SHORT: Limits = Limits {
        connections: 2,
        headers: Duration::from_millis(400),
        request: Duration::from_millis(400),
        lifetime: Duration::from_secs(60),
    };

    async fn start(limits: Limits) -> (String, CancellationToken) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = CancellationToken::new();
        tokio::spawn(serve_with(listener, api(), stop.clone(), limits));
        (addr, stop)
    }

    async fn send(s: &mut TcpStream, path: &str) {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
    }

    /// The status line of the next answer on `s`, or `None` when `s` is closed or silent.
    async fn status_line(s: &mut TcpStream, limit: Duration) -> Option<String> {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + limit;
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => return None,
            }
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        text.lines().next().map(str::to_string)
    }

    async fn is_closed(s: &mut TcpStream, limit: Duration) -> bool {
        let mut buf = [0u8; 1024];
        matches!(
            tokio::time::timeout(limit, s.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn at_the_limit_a_new_connection_closes_the_oldest_idle_one_not_a_busy_one() {
        let (addr, stop) = start(SHORT).await;
        let mut busy = TcpStream::connect(&addr).await.unwrap();
        send(&mut busy, "/slow").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut idle = TcpStream::connect(&addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut probe = TcpStream::connect(&addr).await.unwrap();
        send(&mut probe, "/x").await;
        assert_eq!(
            status_line(&mut probe, Duration::from_millis(200))
                .await
                .as_deref(),
            Some("HTTP/1.1 200 OK")
        );
        assert!(is_closed(&mut idle, Duration::from_millis(100)).await);
        assert_eq!(
            status_line(&mut busy, Duration::from_secs(1))
                .await
                .as_deref(),
            Some("HTTP/1.1 200 OK"),
            "the busy connection was served"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn connections_that_send_no_request_are_closed_after_the_header_deadline() {
        let (addr, stop) = start(SHORT).await;
        let mut silent = TcpStream::connect(&addr).await.unwrap();
        let mut kept_alive = TcpStream::connect(&addr).await.unwrap();
        send(&mut kept_alive, "/x").await;
        assert!(
            status_line(&mut kept_alive, Duration::from_millis(200))
                .await
                .is_some()
        );
        assert!(!is_closed(&mut silent, Duration::from_millis(200)).await);
        assert!(is_closed(&mut silent, Duration::from_millis(500)).await);
        assert!(is_closed(&mut kept_alive, Duration::from_millis(500)).await);
        stop.cancel();
    }

    #[tokio::test]
    async fn a_request_head_over_16_kib_is_refused() {
        let (addr, stop) = start(SHORT).await;
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let filler = "a".repeat(MAX_HEADERS);
        s.write_all(
            format!("GET /x HTTP/1.1\r\nHost: localhost\r\nX-Filler: {filler}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(
            status_line(&mut s, Duration::from_secs(1)).await.as_deref(),
            Some("HTTP/1.1 431 Request Header Fields Too Large")
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn a_request_not_answered_by_its_deadline_gets_503() {
        let (addr, stop) = start(SHORT).await;
        let mut s = TcpStream::connect(&addr).await.unwrap();
        send(&mut s, "/never").await;
        assert_eq!(
            status_line(&mut s, Duration::from_secs(1)).await.as_deref(),
            Some("HTTP/1.1 503 Service Unavailable")
        );
        stop.cancel();
    }
}

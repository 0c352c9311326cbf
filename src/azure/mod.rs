//! The Azure clients: the only modules that know URLs, JSON shapes and HTTP status codes.
//!
//! [`identity`] is how the daemon signs in, [`graph`] reads applications and adds and removes
//! passwords, [`entra`] proves a new secret signs in, [`keyvault`] reads and publishes secrets.
//! Every call is timed and counted in the metrics, and every failure becomes an [`Error`]
//! classified as transient, permanent, or of unknown outcome. Pacing belongs to [`retry`]: the
//! SDK's own retries are off.

pub mod arm;
pub mod blob;
pub mod connections;
pub mod directory;
pub mod entra;
pub mod fence;
pub mod graph;
pub mod identity;
pub mod keyvault;
#[cfg(test)]
mod parse_properties;
pub mod transport;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How a failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Class {
    /// Will likely heal by waiting (429, 503, 504, 409 concurrency, connection refused).
    Transient { retry_after: Option<Duration> },
    /// Will not heal by waiting: permissions, policy, a missing object, a bad request.
    Permanent,
    /// A write was sent and its answer lost: it may or may not have taken effect.
    OutcomeUnknown,
}

/// A failed Azure call. Its text never holds a secret: it is built from the status, the
/// service's error code and message, never from a raw body.
#[derive(Debug, Clone)]
pub struct Error {
    pub service: &'static str,
    pub operation: &'static str,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: String,
    pub class: Class,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.service, self.operation)?;
        if let Some(s) = self.status {
            write!(f, ": HTTP {s}")?;
        }
        if let Some(c) = &self.code {
            write!(f, " {c}")?;
        }
        if !self.message.is_empty() {
            // Azure's messages carry CR/LF; every error the daemon prints is one line.
            write!(f, ": {}", clip(&self.message, 600))?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl Error {
    pub fn is_transient(&self) -> bool {
        matches!(self.class, Class::Transient { .. })
    }
    pub fn retry_after(&self) -> Option<Duration> {
        match self.class {
            Class::Transient { retry_after } => retry_after,
            _ => None,
        }
    }
    pub fn code_is(&self, code: &str) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case(code))
    }
    pub(crate) fn new(
        service: &'static str,
        operation: &'static str,
        class: Class,
        message: impl Into<String>,
    ) -> Error {
        Error {
            service,
            operation,
            status: None,
            code: None,
            message: message.into(),
            class,
        }
    }
    /// A short label for metrics and the status table.
    pub fn label(&self) -> String {
        match (&self.code, self.status) {
            (Some(c), _) => c.clone(),
            (None, Some(s)) => s.to_string(),
            (None, None) => "transport".into(),
        }
    }
}

/// Shortens `text` to at most `max` bytes on a character boundary, and to one line.
pub fn clip(text: &str, max: usize) -> String {
    let mut t = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.len() > max {
        let mut cut = max;
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        t.truncate(cut);
    }
    t
}

/// Classifies an HTTP status the way every Azure service means it.
pub fn class_of_status(status: u16, code: Option<&str>, retry_after: Option<Duration>) -> Class {
    match status {
        429 | 503 | 504 => Class::Transient { retry_after },
        409 if code.is_some_and(|c| {
            c.eq_ignore_ascii_case("Directory_ConcurrencyViolation")
                || c.eq_ignore_ascii_case("ObjectIsBeingRecovered")
        }) =>
        {
            Class::Transient { retry_after }
        }
        500 | 502 => Class::Transient { retry_after },
        // A refused token (expired, or from before a clock step) is fetched anew next time;
        // the request was not applied.
        401 => Class::Transient { retry_after },
        _ => Class::Permanent,
    }
}

/// `Retry-After` in seconds (fractional too, as Graph sends) or as an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(3600.0)));
    }
    let at = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let delta = at - crate::clock::now();
    Some(Duration::from_secs_f64(
        delta.as_seconds_f64().clamp(0.0, 3600.0),
    ))
}

/// Everything the clients share: one HTTP client (trusting `ca_file`), the metrics, and the
/// clock skew seen in Azure's `Date` headers.
#[derive(Clone)]
pub struct AzureHttp {
    pub http: reqwest::Client,
    /// For the exchanges that carry a new secret (`addPassword`, verification, Key Vault set
    /// and get): its connections leave the pool [`SECRET_CONNECTION_IDLE`] after they went
    /// idle (an HTTP/2 one, after it was opened), so that their TLS and HTTP/2 buffers, which
    /// keep the last bytes they carried, are freed (and thereby zeroed, see `main.rs`) within
    /// seconds instead of the usual 90.
    pub secret_http: reqwest::Client,
    pub metrics: Arc<Metrics>,
    pub skew: Arc<Skew>,
    /// High availability's fence: every write to Graph and Key Vault passes it
    /// ([`fence`], which the HA election opens and closes); without HA it is always open.
    pub fence: Arc<fence::Fence>,
    /// The TLS configuration `http` and `secret_http` were made with, for any other client made
    /// from the same config (webhook sinks).
    pub tls: connections::TlsConfig,
    /// The first-request gates of the rotation's requests (Graph, Entra, Key Vault) that go
    /// through reqwest.
    pub gates: Arc<connections::Gates>,
    /// The rotation's HTTP/2 transport ([`transport`]); `None` when a proxy is configured, since
    /// only reqwest tunnels through one.
    pub h2: Option<Arc<transport::H2>>,
}

impl AzureHttp {
    /// The clients for `ca_pem` and `timeout`, sharing one TLS configuration.
    pub fn new(
        ca_pem: Option<&[u8]>,
        timeout: Duration,
        metrics: Arc<Metrics>,
        fence: Arc<fence::Fence>,
    ) -> anyhow::Result<AzureHttp> {
        let tls = connections::TlsConfig::new(ca_pem)?;
        Ok(AzureHttp {
            http: http_client_with(&tls, timeout, true)?,
            secret_http: secret_http_client(&tls, timeout)?,
            metrics,
            skew: Arc::new(Skew::default()),
            fence,
            h2: (!proxy_configured()).then(|| Arc::new(transport::H2::new(&tls, timeout))),
            tls,
            gates: Arc::default(),
        })
    }

    /// Sends a request of the rotation (Graph, Entra, Key Vault) and reads its whole answer:
    /// over [`transport::H2`] when the host speaks HTTP/2 and no proxy is configured, otherwise
    /// through reqwest (`fallback`, or the client of `pool`). Adds the `User-Agent` if the
    /// request has none.
    pub(crate) async fn send(
        &self,
        pool: connections::Pool,
        fallback: Option<&reqwest::Client>,
        mut request: http::Request<bytes::Bytes>,
    ) -> Result<transport::Answer, transport::Failure> {
        if !request.headers().contains_key(http::header::USER_AGENT)
            && let Ok(agent) = http::HeaderValue::from_str(&self.user_agent())
        {
            request
                .headers_mut()
                .insert(http::header::USER_AGENT, agent);
        }
        if let Some(h2) = &self.h2 {
            // Boxed, as a reconcile's phases are: a reconcile that waits on something else
            // does not carry the room of a request in flight (docs/decisions.md, "Footprint").
            request = match Box::pin(h2.send(pool, request)).await {
                transport::Outcome::Answered(answer) => return Ok(answer),
                transport::Outcome::Failed(failure) => return Err(failure),
                transport::Outcome::Elsewhere(request) => request,
            };
        }
        // Boxed: reqwest's path is the rare one, and its futures would weigh on every request.
        Box::pin(self.send_reqwest(pool, fallback, request)).await
    }

    async fn send_reqwest(
        &self,
        pool: connections::Pool,
        fallback: Option<&reqwest::Client>,
        request: http::Request<bytes::Bytes>,
    ) -> Result<transport::Answer, transport::Failure> {
        let client = fallback.unwrap_or(match pool {
            connections::Pool::Main => &self.http,
            connections::Pool::Secret => &self.secret_http,
        });
        let pass = self.gates.pass(pool, request.uri()).await;
        let request = reqwest::Request::try_from(request).map_err(|e| transport::Failure {
            sent: false,
            message: identity::error_chain(&e),
        })?;
        let mut response = client
            .execute(request)
            .await
            .map_err(|e| transport::Failure {
                sent: !e.is_connect(),
                message: identity::error_chain(&e),
            })?;
        pass.answered();
        let status = response.status().as_u16();
        let headers = std::mem::take(response.headers_mut());
        let body = response.bytes().await.map_err(|e| transport::Failure {
            sent: true,
            message: format!("reading the answer: {}", identity::error_chain(&e)),
        })?;
        Ok(transport::Answer {
            status,
            headers,
            body,
        })
    }

    /// The `User-Agent` of every request: with HA it names the replica, so that Azure's logs
    /// (and the emulator's journal) say which replica wrote.
    pub fn user_agent(&self) -> String {
        user_agent(self.fence.replica())
    }

    /// Reads what every Azure answer tells the daemon: its `Date` (for the clock-skew check) and
    /// its `Retry-After`, if any.
    pub fn observe(&self, headers: &reqwest::header::HeaderMap) -> Option<Duration> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        self.skew.observe(text("date"));
        text("retry-after").and_then(parse_retry_after)
    }
}

/// The difference between Azure's clock (its `Date` headers) and ours.
#[derive(Default)]
pub struct Skew {
    seconds: AtomicI64,
}

impl Skew {
    pub fn observe(&self, date_header: Option<&str>) {
        if let Some(d) = date_header
            && let Ok(t) = time::OffsetDateTime::parse(
                d.trim(),
                &time::format_description::well_known::Rfc2822,
            )
        {
            let skew = (crate::clock::now() - t).whole_seconds();
            self.seconds.store(skew, Ordering::Relaxed);
        }
    }
    /// Local clock minus Azure's, in seconds (positive: ours is ahead).
    pub fn seconds(&self) -> i64 {
        self.seconds.load(Ordering::Relaxed)
    }
}

/// Whether reqwest would send `https` requests through a proxy (`HTTPS_PROXY`, `ALL_PROXY`, in
/// either case): then every request goes through reqwest, which also honours `NO_PROXY`.
fn proxy_configured() -> bool {
    ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

/// `secret-rotator/<version>`, with ` replica/<name>` under HA.
pub fn user_agent(replica: Option<&str>) -> String {
    let base = concat!("secret-rotator/", env!("CARGO_PKG_VERSION"));
    match replica {
        Some(r) => format!("{base} replica/{r}"),
        None => base.to_string(),
    }
}

/// Builds the HTTP client every Azure call goes through. It honours `HTTPS_PROXY` and
/// `NO_PROXY` unless `proxy` is false (managed identity endpoints never use a proxy).
pub fn http_client(
    ca_pem: Option<&[u8]>,
    timeout: Duration,
    proxy: bool,
) -> anyhow::Result<reqwest::Client> {
    http_client_with(&connections::TlsConfig::new(ca_pem)?, timeout, proxy)
}

/// [`http_client`] with a TLS configuration already made: cheap.
pub fn http_client_with(
    tls: &connections::TlsConfig,
    timeout: Duration,
    proxy: bool,
) -> anyhow::Result<reqwest::Client> {
    Ok(http_builder(tls, timeout, proxy).build()?)
}

/// How long a connection of [`AzureHttp::secret_http`] stays in the pool after its last
/// request. Short enough that a secret leaves the connection buffers within seconds of its
/// rotation, long enough that a busy daemon keeps one connection per host (HTTP/2 carries every
/// concurrent request, and each renews the idle time) rather than one per request, and that a
/// rotation keeps its connections across the verification's first waits (1 s to the first
/// token request, 2 s to the next: at 1 s each wait outlasted the connection, and a rotation
/// opened one again for the next attempt and for the Key Vault write). While those waits run,
/// the new secret is in the daemon's memory anyway.
pub const SECRET_CONNECTION_IDLE: Duration = Duration::from_secs(3);

/// [`http_client`] for [`AzureHttp::secret_http`].
pub fn secret_http_client(
    tls: &connections::TlsConfig,
    timeout: Duration,
) -> anyhow::Result<reqwest::Client> {
    Ok(http_builder(tls, timeout, true)
        .pool_idle_timeout(SECRET_CONNECTION_IDLE)
        .build()?)
}

fn http_builder(
    tls: &connections::TlsConfig,
    timeout: Duration,
    proxy: bool,
) -> reqwest::ClientBuilder {
    let b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls.rustls())
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("secret-rotator/", env!("CARGO_PKG_VERSION")));
    if proxy { b } else { b.no_proxy() }
}

/// A request body that holds a secret: handed to the HTTP client without a copy, and wiped
/// when the last handle to it (the client's included) is dropped.
pub(crate) fn secret_body(bytes: zeroize::Zeroizing<Vec<u8>>) -> bytes::Bytes {
    bytes::Bytes::from_owner(bytes)
}

/// Serializes `value` (which holds a secret) as JSON into one zeroizing buffer of its final
/// size: a buffer that grew would leave copies of its earlier contents in freed memory.
pub(crate) fn secret_json<T: serde::Serialize>(
    value: &T,
) -> serde_json::Result<zeroize::Zeroizing<Vec<u8>>> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value)?;
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(count.0));
    serde_json::to_writer(&mut *out, value)?;
    Ok(out)
}

/// Overwrites an answer that held a secret. Only possible when this is the last handle to its
/// memory; otherwise the allocator zeroes it when the last handle (the HTTP layer's) frees it.
pub(crate) fn wipe(body: bytes::Bytes) {
    if let Ok(mut b) = body.try_into_mut() {
        zeroize::Zeroize::zeroize(&mut b[..]);
    }
}

/// Times a call and counts it under `service` / `operation` with its status.
pub(crate) struct Timer<'a> {
    metrics: &'a Metrics,
    service: &'static str,
    operation: &'static str,
    start: Instant,
}

impl<'a> Timer<'a> {
    pub fn start(metrics: &'a Metrics, service: &'static str, operation: &'static str) -> Self {
        Timer {
            metrics,
            service,
            operation,
            start: Instant::now(),
        }
    }
    pub fn done(self, status: &str) {
        self.metrics.azure_request(
            self.service,
            self.operation,
            status,
            self.start.elapsed().as_secs_f64(),
        );
    }
}

/// Retries `f` while it fails transiently, for at most `budget`, honouring `Retry-After` and
/// otherwise backing off exponentially (1 s, 2 s, 4 s ... 30 s, with jitter). Stops at once
/// when `cancel` fires.
pub async fn retry<T, F, Fut>(
    budget: Duration,
    cancel: &CancellationToken,
    mut f: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_secs(1);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() => {
                let wait = e.retry_after().unwrap_or_else(|| jitter(delay));
                if start.elapsed() + wait > budget {
                    return Err(e);
                }
                tracing::debug!(error = %e, wait_ms = wait.as_millis() as u64, "transient Azure error; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => return Err(e),
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    }
}

fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::random::<f64>() * 0.4 + 0.8;
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_prints_as_one_line_whatever_azure_sent() {
        let mut e = Error::new(
            "keyvault",
            "set_secret",
            Class::Permanent,
            "Caller is not authorized.\r\nInner: ForbiddenByRbac\r\n",
        );
        e.status = Some(403);
        let text = e.to_string();
        assert!(!text.contains('\r') && !text.contains('\n'), "{text:?}");
        assert!(text.ends_with("Caller is not authorized. Inner: ForbiddenByRbac"));
    }

    #[test]
    fn clip_cuts_on_a_character_boundary_and_joins_lines() {
        assert_eq!(clip("ab\ncd", 10), "ab cd");
        assert_eq!(clip("ééé", 3), "é");
        assert_eq!(clip("", 3), "");
    }

    #[test]
    fn retry_after_takes_fractional_seconds_and_http_dates() {
        assert_eq!(
            parse_retry_after("2.128"),
            Some(Duration::from_millis(2128))
        );
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT").is_some());
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn a_json_body_holding_a_secret_is_written_into_a_buffer_of_its_final_size() {
        let value = serde_json::json!({"value": "abcQ~\"x\u{e9}", "tags": {"a": "b"}});
        let body = secret_json(&value).unwrap();
        assert_eq!(*body, serde_json::to_vec(&value).unwrap());
        // A buffer that grew would have left its earlier contents behind, unwiped.
        assert_eq!(body.capacity(), body.len());
    }

    #[test]
    fn concurrency_conflicts_are_transient_but_other_conflicts_are_not() {
        assert!(matches!(
            class_of_status(409, Some("Directory_ConcurrencyViolation"), None),
            Class::Transient { .. }
        ));
        assert_eq!(
            class_of_status(409, Some("ObjectIsDeletedButRecoverable"), None),
            Class::Permanent
        );
        assert_eq!(class_of_status(403, None, None), Class::Permanent);
        assert!(matches!(
            class_of_status(429, None, Some(Duration::from_secs(2))),
            Class::Transient {
                retry_after: Some(_)
            }
        ));
    }
}

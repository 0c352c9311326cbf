//! The HTTP transport alone: the same requests through the daemon's reqwest clients and through a
//! bare hyper HTTP/2 connection per host on the same rustls configuration, to size a leaner
//! transport before it is built (docs/performance.md, "A lean HTTP/2 transport, measured before
//! it is built"). It prints figures and asserts nothing about speed.
//!
//! ```text
//! cargo bench --bench transport -- [--part a|b|c|all] [--requests 2000] [--concurrency 16]
//!                                  [--in-flight 1000] [--latency-ms 2000]
//!                                  [--authorization-bytes 1800] [--answer-ms 0]
//! ```
//!
//! - part `a`: reqwest, each client built as `AzureHttp` builds it (`http` for the Graph read,
//!   `secret_http` for the Key Vault read, as the daemon routes them);
//! - part `b`: one `hyper::client::conn::http2::SendRequest` per host over tokio-rustls with the
//!   daemon's `TlsConfig`, each request under a `tokio::time::timeout` as reqwest's is;
//! - part `c`: the daemon's own transport built on that (`src/azure/transport.rs`), boxed as
//!   `AzureHttp::send` boxes it.
//!
//! Each part sends `--requests` Graph `GET /v1.0/applications/{id}?$select=...` and as many Key
//! Vault `GET /secrets/{name}?api-version=2025-07-01`, alternating, `--concurrency` at a time,
//! after a warm-up that opened the connections (no handshake is measured). The emulator
//! answers each at once, or `--answer-ms` after it came (a fixed pause, as Azure answers tens of
//! milliseconds later; the loop is closed, so the answers to requests sent together come
//! together). The bearer tokens are the emulator's, padded with spaces (which the emulator
//! trims) to an `Authorization` value of 1,800 bytes, as long as Entra's
//! (`--authorization-bytes`; a length shorter than the token, 0 say, sends the emulator's own,
//! about 600 bytes): HPACK's Huffman coder costs the same per byte whatever it is.
//! The headers are the daemon's: Graph's token marked sensitive (reqwest's `bearer_auth`), Key
//! Vault's not (azure_core's reqwest adapter copies it as a plain header); h2 indexes neither
//! (`authorization` is never indexed), so both are Huffman-coded on every request.
//!
//! Printed per request: allocations and bytes allocated (a counting allocator around the
//! daemon's zeroing one), the wall time of the whole run divided by its requests (with
//! `--concurrency` above one, not a request's latency), the CPU time (user and system,
//! `RUSAGE_SELF`: the client's process, the emulator's excluded; the kernel splits the two by
//! its ticks, the sum is exact), and the `size_of_val` of the request futures; then the heap
//! held per request with `--in-flight` requests in flight (the emulator answers after
//! `--latency-ms`; `--in-flight 0` skips this).
//!
//! The emulator runs in a child process (this binary with `--serve-emulator`), so that the
//! counting allocator and callgrind see the client alone. Instructions per request: run one part
//! under callgrind, which collects only inside `measured_region`:
//!
//! ```text
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured_region*' \
//!     target/release/deps/transport-<hash> --part a --in-flight 0
//! ```
//!
//! and divide the total by twice `--requests`.

use std::alloc::System;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use emulator::kit::{KitClient, TenantKit};
use emulator::model::{Password, SecretVersion, Settings, Throttling, VaultSecret};
use emulator::{Emulator, Options};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http_body_util::{BodyExt, Full};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, USER_AGENT};
use secret_rotator::azure::connections::{Pool, TlsConfig};
use secret_rotator::azure::transport::{H2, Outcome};
use stats_alloc::{Region, StatsAlloc};

/// The daemon's allocator (zeroing what it frees, src/main.rs) over one that counts.
#[global_allocator]
static ZEROING: zeroizing_alloc::ZeroAlloc<&StatsAlloc<System>> =
    zeroizing_alloc::ZeroAlloc(&stats_alloc::INSTRUMENTED_SYSTEM);
static ALLOC: &StatsAlloc<System> = &stats_alloc::INSTRUMENTED_SYSTEM;

const DAEMON_SECRET: &str = "bench-daemon-secret";
/// The length of an `Authorization` value carrying an Entra access token.
const AUTHORIZATION_LEN: usize = 1_800;
/// The daemon's default `request_timeout`.
const TIMEOUT: Duration = Duration::from_secs(30);

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    if std::env::args().any(|a| a == "--serve-emulator") {
        serve_emulator();
        return;
    }
    let part = arg("--part").unwrap_or_else(|| "all".into());
    let n: usize = arg("--requests").map_or(2_000, |v| v.parse().expect("--requests"));
    let concurrency: usize = arg("--concurrency").map_or(16, |v| v.parse().expect("--concurrency"));
    let in_flight: usize = arg("--in-flight").map_or(1_000, |v| v.parse().expect("--in-flight"));
    let latency: u64 = arg("--latency-ms").map_or(2_000, |v| v.parse().expect("--latency-ms"));
    let answer_ms: u64 = arg("--answer-ms").map_or(0, |v| v.parse().expect("--answer-ms"));
    let authorization_len: usize = arg("--authorization-bytes").map_or(AUTHORIZATION_LEN, |v| {
        v.parse().expect("--authorization-bytes")
    });

    let mut child = Command::new(std::env::current_exe().expect("current_exe"))
        .arg("--serve-emulator")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("emulator process");
    let mut control = child.stdin.take().expect("stdin");
    let mut answers = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let info: serde_json::Value =
        serde_json::from_str(&answers.next().expect("emulator info").expect("read")).expect("json");
    let text = |k: &str| info[k].as_str().expect(k).to_string();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ca = std::fs::read(text("ca_file")).expect("ca.pem");
    let tls = TlsConfig::new(Some(&ca)).expect("tls");
    let a = A {
        main: secret_rotator::azure::http_client_with(&tls, TIMEOUT, true).expect("http"),
        secret: secret_rotator::azure::secret_http_client(&tls, TIMEOUT).expect("secret_http"),
    };
    let token = |scope: &str| {
        runtime.block_on(fetch_token(
            &a.main,
            &text("authority"),
            &text("tenant_id"),
            &text("daemon_app_id"),
            scope,
        ))
    };
    let mut graph_auth = padded(
        &token("https://graph.microsoft.com/.default"),
        authorization_len,
    );
    graph_auth.set_sensitive(true);
    let vault_auth = padded(
        &token("https://vault.azure.net/.default"),
        authorization_len,
    );
    let target = Target {
        graph_url: format!(
            "{}/v1.0/applications/{}?$select=id,appId,signInAudience,passwordCredentials",
            text("graph"),
            text("object_id")
        ),
        vault_url: format!("{}/secrets/c0?api-version=2025-07-01", text("vault")),
        graph_auth,
        vault_auth,
        user_agent: HeaderValue::from_str(&secret_rotator::azure::user_agent(None)).expect("ua"),
    };
    println!(
        "Transport benchmark: {n} Graph and {n} Key Vault GETs a part, {concurrency} at a time, answered after {answer_ms} ms; Authorization {} bytes (Graph), {} (Key Vault).\n",
        target.graph_auth.len(),
        target.vault_auth.len()
    );

    let mut set_latency = |ms: u64| {
        writeln!(control, "latency {ms}").expect("control");
        control.flush().expect("control");
        assert_eq!(answers.next().expect("answer").expect("read"), "ok");
    };
    for p in ["a", "b", "c"] {
        if part != "all" && part != p {
            continue;
        }
        match p {
            "a" => {
                let t = &target;
                let a = &a;
                report(
                    &runtime,
                    "a: reqwest (the daemon's clients)",
                    n,
                    concurrency,
                    |k| request_a(a, t, k),
                    || sizes_a(a, t),
                    (answer_ms, in_flight, latency),
                    &mut set_latency,
                );
            }
            "b" => {
                let t = &target;
                let b = runtime.block_on(B::connect(&tls, &[&t.graph_url, &t.vault_url]));
                let b = &b;
                report(
                    &runtime,
                    "b: hyper http2::SendRequest per host",
                    n,
                    concurrency,
                    |k| request_b(b, t, k),
                    || sizes_b(b, t),
                    (answer_ms, in_flight, latency),
                    &mut set_latency,
                );
            }
            "c" => {
                let t = &target;
                let c = H2::new(&tls, TIMEOUT);
                let c = &c;
                report(
                    &runtime,
                    "c: the daemon's transport (src/azure/transport.rs)",
                    n,
                    concurrency,
                    |k| request_c(c, t, k),
                    || sizes_c(c, t),
                    (answer_ms, in_flight, latency),
                    &mut set_latency,
                );
            }
            _ => unreachable!(),
        }
    }
    drop(control);
    let _ = child.wait();
}

struct Target {
    graph_url: String,
    vault_url: String,
    graph_auth: HeaderValue,
    vault_auth: HeaderValue,
    user_agent: HeaderValue,
}

#[derive(Clone, Copy)]
enum Kind {
    Graph,
    Vault,
}

fn kind(i: usize) -> Kind {
    if i.is_multiple_of(2) {
        Kind::Graph
    } else {
        Kind::Vault
    }
}

/// `Bearer <token>` padded with spaces to `len` bytes (when the token is shorter).
fn padded(token: &str, len: usize) -> HeaderValue {
    let value = format!("Bearer {token}");
    let pad = len.saturating_sub(value.len());
    HeaderValue::from_str(&format!("{value}{}", " ".repeat(pad))).expect("authorization")
}

async fn fetch_token(
    http: &reqwest::Client,
    authority: &str,
    tenant: &str,
    client_id: &str,
    scope: &str,
) -> String {
    let answer: serde_json::Value = http
        .post(format!("{authority}/{tenant}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", DAEMON_SECRET),
            ("scope", scope),
        ])
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token answer");
    let token = answer["access_token"].as_str().expect("access_token");
    eprintln!("  token for {scope}: {} bytes", token.len());
    token.to_string()
}

/// Part a: the daemon's reqwest clients.
struct A {
    main: reqwest::Client,
    secret: reqwest::Client,
}

fn request_a_builder(a: &A, t: &Target, kind: Kind) -> reqwest::RequestBuilder {
    match kind {
        // As GraphClient::send builds it.
        Kind::Graph => a
            .main
            .get(&t.graph_url)
            .header(AUTHORIZATION, t.graph_auth.clone())
            .header("x-ms-throttle-priority", "low")
            .header(USER_AGENT, t.user_agent.clone()),
        // As the Key Vault SDK's request reaches reqwest through MeteredTransport.
        Kind::Vault => a
            .secret
            .get(&t.vault_url)
            .header(AUTHORIZATION, t.vault_auth.clone())
            .header(ACCEPT, "application/json")
            .header("x-ms-client-request-id", uuid::Uuid::new_v4().to_string())
            .header(USER_AGENT, t.user_agent.clone()),
    }
}

async fn request_a(a: &A, t: &Target, kind: Kind) -> usize {
    let answer = request_a_builder(a, t, kind).send().await.expect("request");
    assert_eq!(answer.status(), 200);
    answer.bytes().await.expect("body").len()
}

/// The `size_of_val` of a whole request (a Key Vault read) and of reqwest's `Pending` in it.
async fn sizes_a(a: &A, t: &Target) -> (usize, usize) {
    let whole = request_a(a, t, Kind::Vault);
    let whole_size = std::mem::size_of_val(&whole);
    whole.await;
    let send = request_a_builder(a, t, Kind::Vault).send();
    let send_size = std::mem::size_of_val(&send);
    assert_eq!(send.await.expect("request").status(), 200);
    (whole_size, send_size)
}

/// Part b: one HTTP/2 connection per host, no pool.
struct B {
    hosts: Vec<(
        http::uri::Authority,
        hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    )>,
}

impl B {
    async fn connect(tls: &TlsConfig, urls: &[&str]) -> B {
        let config = Arc::new(tls.rustls());
        let mut hosts = Vec::new();
        for url in urls {
            let uri: http::Uri = url.parse().expect("uri");
            let host = uri.host().expect("host").to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            let name = rustls::pki_types::ServerName::try_from(host).expect("server name");
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .expect("TLS");
            assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            let (sender, connection) =
                hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .timer(hyper_util::rt::TokioTimer::new())
                    .handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .expect("HTTP/2 handshake");
            tokio::spawn(connection);
            hosts.push((uri.authority().expect("authority").clone(), sender));
        }
        B { hosts }
    }

    fn sender(&self, uri: &http::Uri) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
        let authority = uri.authority().expect("authority");
        self.hosts
            .iter()
            .find(|(a, _)| a == authority)
            .expect("a connection to the host")
            .1
            .clone()
    }
}

fn request_b_parts(
    b: &B,
    t: &Target,
    kind: Kind,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    http::Request<Full<Bytes>>,
) {
    let empty = Full::new(Bytes::new());
    let (uri, builder) = match kind {
        Kind::Graph => {
            let uri: http::Uri = t.graph_url.parse().expect("uri");
            let builder = http::Request::get(uri.clone())
                .header(AUTHORIZATION, t.graph_auth.clone())
                .header("x-ms-throttle-priority", "low")
                .header(USER_AGENT, t.user_agent.clone())
                .header(ACCEPT, "*/*");
            (uri, builder)
        }
        Kind::Vault => {
            let uri: http::Uri = t.vault_url.parse().expect("uri");
            let builder = http::Request::get(uri.clone())
                .header(AUTHORIZATION, t.vault_auth.clone())
                .header(ACCEPT, "application/json")
                .header("x-ms-client-request-id", uuid::Uuid::new_v4().to_string())
                .header(USER_AGENT, t.user_agent.clone());
            (uri, builder)
        }
    };
    (b.sender(&uri), builder.body(empty).expect("request"))
}

async fn request_b(b: &B, t: &Target, kind: Kind) -> usize {
    let (mut sender, request) = request_b_parts(b, t, kind);
    let exchange = async move {
        let answer = sender.send_request(request).await.expect("request");
        assert_eq!(answer.status(), 200);
        answer
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .len()
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .expect("in time")
}

/// The `size_of_val` of a whole request (a Key Vault read) and of hyper's `send_request` future.
async fn sizes_b(b: &B, t: &Target) -> (usize, usize) {
    let whole = request_b(b, t, Kind::Vault);
    let whole_size = std::mem::size_of_val(&whole);
    whole.await;
    let (mut sender, request) = request_b_parts(b, t, Kind::Vault);
    let send = sender.send_request(request);
    let send_size = std::mem::size_of_val(&send);
    assert_eq!(send.await.expect("request").status(), 200);
    (whole_size, send_size)
}

/// Part c: the daemon's transport, each pool as the daemon routes the request.
fn request_c_parts(t: &Target, kind: Kind) -> (Pool, http::Request<Bytes>) {
    let (pool, builder) = match kind {
        Kind::Graph => (
            Pool::Main,
            http::Request::get(t.graph_url.as_str())
                .header(AUTHORIZATION, t.graph_auth.clone())
                .header("x-ms-throttle-priority", "low")
                .header(USER_AGENT, t.user_agent.clone()),
        ),
        Kind::Vault => (
            Pool::Secret,
            http::Request::get(t.vault_url.as_str())
                .header(AUTHORIZATION, t.vault_auth.clone())
                .header(ACCEPT, "application/json")
                .header("x-ms-client-request-id", uuid::Uuid::new_v4().to_string())
                .header(USER_AGENT, t.user_agent.clone()),
        ),
    };
    (pool, builder.body(Bytes::new()).expect("request"))
}

async fn request_c(c: &H2, t: &Target, kind: Kind) -> usize {
    let (pool, request) = request_c_parts(t, kind);
    // Boxed, as `AzureHttp::send` boxes it.
    match Box::pin(c.send(pool, request)).await {
        Outcome::Answered(a) => {
            assert_eq!(a.status, 200);
            a.body.len()
        }
        other => panic!("no answer: {other:?}"),
    }
}

/// The `size_of_val` of a whole request (a Key Vault read) and of the transport's `send` future.
async fn sizes_c(c: &H2, t: &Target) -> (usize, usize) {
    let whole = request_c(c, t, Kind::Vault);
    let whole_size = std::mem::size_of_val(&whole);
    whole.await;
    let (pool, request) = request_c_parts(t, Kind::Vault);
    let send = c.send(pool, request);
    let send_size = std::mem::size_of_val(&send);
    assert!(matches!(send.await, Outcome::Answered(_)));
    (whole_size, send_size)
}

/// Sends `2 * n` requests, alternating Graph and Key Vault, `concurrency` at a time.
async fn mix<F, Fut>(n: usize, concurrency: usize, one: F) -> usize
where
    F: Fn(Kind) -> Fut,
    Fut: Future<Output = usize>,
{
    futures::stream::iter(0..2 * n)
        .map(|i| one(kind(i)))
        .buffer_unordered(concurrency)
        .fold(0, |sum, len| async move { sum + len })
        .await
}

/// What callgrind collects (`--toggle-collect='*measured_region*'`): the measured requests, the
/// connection tasks they wake included (the runtime has one thread).
#[inline(never)]
fn measured_region<Fut: Future<Output = usize>>(
    runtime: &tokio::runtime::Runtime,
    f: Fut,
) -> usize {
    runtime.block_on(f)
}

/// This process's CPU seconds so far, user and system, every thread's (the emulator is
/// another process).
fn cpu() -> (f64, f64) {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    (secs(u.user_time()), secs(u.system_time()))
}

fn live(s: &stats_alloc::Stats) -> isize {
    s.bytes_allocated as isize - s.bytes_deallocated as isize + s.bytes_reallocated
}

#[allow(clippy::too_many_arguments)]
fn report<F, Fut, S>(
    runtime: &tokio::runtime::Runtime,
    name: &str,
    n: usize,
    concurrency: usize,
    one: F,
    sizes: impl FnOnce() -> S,
    (answer_ms, in_flight, latency): (u64, usize, u64),
    set_latency: &mut impl FnMut(u64),
) where
    F: Fn(Kind) -> Fut,
    Fut: Future<Output = usize>,
    S: Future<Output = (usize, usize)>,
{
    // The warm-up: every connection opened and its buffers grown, nothing measured.
    set_latency(answer_ms);
    runtime.block_on(mix(4 * concurrency, concurrency, &one));
    let requests = 2 * n;
    let region = Region::new(ALLOC);
    let cpu_before = cpu();
    let start = Instant::now();
    let body = measured_region(runtime, mix(n, concurrency, &one));
    let wall = start.elapsed();
    let cpu_after = cpu();
    let change = region.change();
    set_latency(0);
    let per = |x: f64| x / requests as f64;
    let (whole, send) = runtime.block_on(sizes());
    println!("{name}");
    println!(
        "  {requests} requests: {:.1} allocations, {:.0} bytes allocated, {:.1} us of the run's wall time a request ({:.0} body bytes); live after: {} bytes",
        per((change.allocations + change.reallocations) as f64),
        per(change.bytes_allocated as f64),
        per(wall.as_secs_f64() * 1e6),
        per(body as f64),
        live(&change),
    );
    println!(
        "  CPU a request: {:.1} us ({:.1} user, {:.1} system)",
        per((cpu_after.0 + cpu_after.1 - cpu_before.0 - cpu_before.1) * 1e6),
        per((cpu_after.0 - cpu_before.0) * 1e6),
        per((cpu_after.1 - cpu_before.1) * 1e6),
    );
    println!("  size_of_val: the whole request {whole} bytes, the send future alone {send} bytes");
    if in_flight == 0 {
        return;
    }
    set_latency(latency);
    let start = Instant::now();
    let held = runtime.block_on(async {
        let region = Region::new(ALLOC);
        let mut set: FuturesUnordered<_> = (0..in_flight).map(|i| one(kind(i))).collect();
        let hold = Duration::from_millis(latency / 2);
        let _ = tokio::time::timeout(hold, async { while set.next().await.is_some() {} }).await;
        let held = live(&region.change());
        let pending = set.len();
        while set.next().await.is_some() {}
        assert_eq!(pending, in_flight, "every request still in flight");
        held
    });
    set_latency(0);
    println!(
        "  {in_flight} in flight: {held} bytes held, {:.0} a request (the bench's task box of each included); all answered after {:.1} s at {latency} ms each\n",
        held as f64 / in_flight as f64,
        start.elapsed().as_secs_f64()
    );
}

/// The child process: the emulator, seeded with the daemon's identity, one client application
/// with two passwords and its published vault secret; prints where it is, then takes
/// `latency <ms>` lines on stdin until EOF.
fn serve_emulator() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (em, tenant) = runtime.block_on(async {
        let em = Emulator::start(Options::loopback_in(dir.path()))
            .await
            .expect("emulator");
        let tenant = TenantKit::new("secret-rotator", DAEMON_SECRET)
            .vault("bench-kv")
            .client(KitClient::new("c0", "bench-kv"))
            .seed(&em)
            .await
            .expect("seed");
        (em, tenant)
    });
    let client = &tenant.clients[0];
    {
        // The emulator's side, as the other benchmarks seed it: not the daemon's clock.
        #[allow(clippy::disallowed_methods)]
        let now = time::OffsetDateTime::now_utc();
        let (start, end) = (
            now - time::Duration::days(80),
            now + time::Duration::days(10),
        );
        let mut state = em.world().state_mut();
        state.settings = Settings {
            read_lag_ms: 0,
            throttling: Throttling {
                enabled: false,
                ..Throttling::default()
            },
            ..Settings::default()
        };
        let app = state
            .applications
            .iter_mut()
            .find(|a| a.app_id == client.app_id)
            .expect("client app");
        let mut key = String::new();
        for i in 0..2 {
            key = uuid::Uuid::new_v4().to_string();
            app.passwords.push(Password::new(
                key.clone(),
                Some(format!("secret-rotator:bench:c0:r{i}")),
                format!("seed{i:06}Q~{}", uuid::Uuid::new_v4().simple()),
                start,
                end,
                start,
            ));
        }
        let tags = [
            ("managed-by", "secret-rotator"),
            ("client-id", client.app_id.as_str()),
            ("key-id", key.as_str()),
            ("rotation-id", "r1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let created = start.unix_timestamp();
        state
            .vaults
            .get_mut("bench-kv")
            .expect("vault")
            .secrets
            .insert(
                "c0".into(),
                VaultSecret {
                    name: "c0".into(),
                    versions: vec![SecretVersion {
                        version: format!("{:032x}", 1),
                        value: format!("seed000001Q~{}", uuid::Uuid::new_v4().simple()),
                        content_type: None,
                        tags,
                        enabled: true,
                        nbf: None,
                        exp: Some(end.unix_timestamp()),
                        created,
                        updated: created,
                    }],
                },
            );
    }
    let info = serde_json::json!({
        "authority": tenant.info.authority_host,
        "graph": tenant.info.graph_endpoint,
        "vault": client.vault_url,
        "ca_file": tenant.info.ca_file,
        "tenant_id": tenant.tenant_id,
        "daemon_app_id": tenant.daemon_app_id,
        "object_id": client.object_id,
    });
    println!("{info}");
    for line in std::io::stdin().lines() {
        let line = line.expect("stdin");
        if let Some(ms) = line.strip_prefix("latency ") {
            em.world().state_mut().settings.latency_ms = ms.parse().expect("latency");
            println!("ok");
        }
    }
    em.shutdown();
}

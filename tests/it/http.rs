//! The daemon's HTTP server under hostile clients: connection exhaustion (idle, slow, HTTP/2
//! prior-knowledge), bodies sent to the token-protected endpoint, and DNS rebinding (foreign
//! Host headers).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// More connections than the daemon serves at once (256).
const CROWD: usize = 300;

async fn listening(daemon: &Daemon) {
    assert!(
        eventually(Duration::from_secs(20), || std::net::TcpStream::connect(
            &daemon.addr
        )
        .is_ok())
        .await,
        "{}",
        daemon.stderr()
    );
}

/// `/healthz` on a new connection, answered within `limit`.
async fn healthz_within(addr: &str, limit: Duration) -> Result<u16, String> {
    let http = reqwest::Client::builder()
        .timeout(limit)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let started = Instant::now();
    http.get(format!("http://{addr}/healthz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("no answer after {:?}: {e}", started.elapsed()))
}

/// Probes `/healthz` three times, as a liveness probe would, each within two seconds.
async fn assert_healthy(daemon: &Daemon, while_: &str) {
    for _ in 0..3 {
        assert_eq!(
            healthz_within(&daemon.addr, Duration::from_secs(2)).await,
            Ok(200),
            "/healthz while {while_}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `request` on a new connection and returns what the daemon answers until it closes the
/// connection, `limit` passes, or the connection fails (a daemon that stops reading a body may
/// reset the connection after answering).
async fn exchange(addr: &str, request: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    read_until_closed(&mut s, limit).await
}

async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> String {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 8192];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Whether the daemon closed `s` within `limit` (end of stream or reset).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_answers_while_hundreds_of_idle_and_slow_header_connections_are_open() {
    let env = Env::new(Setup::default()).await;
    let daemon = env.spawn_daemon(&[]);
    listening(&daemon).await;
    let mut crowd = Vec::new();
    for i in 0..CROWD {
        let mut s = TcpStream::connect(&daemon.addr).await.unwrap();
        if i % 2 == 0 {
            // Half a request, then nothing: a slow-headers client.
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .await
                .unwrap();
        }
        crowd.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_healthy(&daemon, "300 idle connections are open").await;
    // The daemon survives opening yet more of them.
    for _ in 0..CROWD {
        crowd.push(TcpStream::connect(&daemon.addr).await.unwrap());
    }
    assert_healthy(&daemon, "600 idle connections were opened").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_answers_while_hundreds_of_clients_send_request_bodies_slowly() {
    let env = Env::new(Setup::default()).await;
    let daemon = env.spawn_daemon(&[]);
    listening(&daemon).await;
    let mut crowd = Vec::new();
    for _ in 0..CROWD {
        let mut s = TcpStream::connect(&daemon.addr).await.unwrap();
        // An attacker has no token; it declares a body and sends one byte of it.
        s.write_all(
            b"POST /v1/clients/app-one/rotate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nx",
        )
        .await
        .unwrap();
        crowd.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_healthy(&daemon, "300 clients send bodies slowly").await;
    // Each was answered (401) without the daemon waiting for the rest of its body.
    for s in crowd.iter_mut().take(20) {
        let answer = read_until_closed(s, Duration::from_secs(2)).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_is_not_served_so_idle_http2_connections_cannot_starve_healthz() {
    let env = Env::new(Setup::default()).await;
    let daemon = env.spawn_daemon(&[]);
    listening(&daemon).await;
    // The HTTP/2 connection preface (prior knowledge, cleartext) and an empty SETTINGS frame:
    // an HTTP/2 server would keep each of these connections open, idle, without a deadline.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let mut crowd = Vec::new();
    for _ in 0..CROWD {
        let mut s = TcpStream::connect(&daemon.addr).await.unwrap();
        s.write_all(preface).await.unwrap();
        crowd.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_healthy(&daemon, "300 HTTP/2 connections are open").await;
    for (i, s) in crowd.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(2)).await,
            "HTTP/2 connection {i} is still open"
        );
    }
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    assert!(
        h2.get(format!("http://{}/healthz", daemon.addr))
            .send()
            .await
            .is_err(),
        "an HTTP/2 request is refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotate_request_is_refused_before_its_body_is_read() {
    let env = Env::new(Setup::default()).await;
    let daemon = env.spawn_daemon(&[]);
    listening(&daemon).await;
    let host = &daemon.addr;
    let rotate = |auth: &str, length: usize, sent: usize| {
        let mut r = format!(
            "POST /v1/clients/app-one/rotate HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: {length}\r\n\r\n"
        )
        .into_bytes();
        r.extend(std::iter::repeat_n(b'x', sent));
        r
    };
    let limit = Duration::from_secs(3);

    // A wrong token with a large body that never arrives in full: 401, not 413, and at once.
    let started = Instant::now();
    let answer = exchange(
        host,
        &rotate(
            "Authorization: Bearer wrong-token-wrong-token\r\n",
            100 << 20,
            64 << 10,
        ),
        limit,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(header(&answer, "www-authenticate"), Some("Bearer"));

    // A small body that never arrives: the daemon does not wait for it.
    let answer = exchange(host, &rotate("", 1000, 0), limit).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");

    // The right token with a body over the limit: 413 without reading it.
    let auth = format!("Authorization: Bearer {}\r\n", env.admin_token);
    let answer = exchange(host, &rotate(&auth, 100 << 20, 0), limit).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(answer.contains("takes no body"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_host_header_is_refused_so_dns_rebinding_cannot_read_the_api() {
    let env = Env::new(Setup::default()).await;
    let text = std::fs::read_to_string(&env.config_path).unwrap().replace(
        "admin_token_file = \"admin-token\"\n",
        "admin_token_file = \"admin-token\"\nallowed_hosts = [\"Rotator.Internal\"]\n",
    );
    std::fs::write(&env.config_path, text).unwrap();
    let daemon = env.spawn_daemon(&[]);
    listening(&daemon).await;
    let port = daemon.addr.rsplit(':').next().unwrap().to_string();
    let get = |path: &str, host: Option<&str>| {
        let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
        format!("GET {path} HTTP/1.1\r\n{host}Connection: close\r\n\r\n").into_bytes()
    };
    let limit = Duration::from_secs(5);

    for path in ["/v1/clients", "/metrics", "/readyz"] {
        for host in [
            "evil.example".to_string(),
            format!("evil.example:{port}"),
            format!("127.0.0.1.nip.io:{port}"),
            format!("localhost.evil.example:{port}"),
            String::new(),
        ] {
            let answer = exchange(&daemon.addr, &get(path, Some(&host)), limit).await;
            assert!(
                answer.starts_with("HTTP/1.1 421"),
                "{path} {host}: {answer:?}"
            );
            assert!(
                answer.contains("server.allowed_hosts"),
                "{path} {host}: {answer:?}"
            );
            assert!(!answer.contains("app-one"), "{path} {host}: {answer:?}");
            assert_eq!(header(&answer, "x-content-type-options"), Some("nosniff"));
            assert_eq!(header(&answer, "cache-control"), Some("no-store"));
        }
    }
    // An absolute request target names the host too.
    let answer = exchange(
        &daemon.addr,
        format!(
            "GET http://evil.example:{port}/v1/clients HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
        limit,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer:?}");

    for host in [
        Some(daemon.addr.clone()),
        Some(format!("localhost:{port}")),
        Some("localhost".to_string()),
        Some(format!("[::1]:{port}")),
        // What Prometheus sends when it scrapes a pod by its IP.
        Some(format!("10.1.2.3:{port}")),
        Some(format!("rotator.internal:{port}")),
        // HTTP/1.0 clients (the container's health check) send no Host; browsers always do.
        None,
    ] {
        for path in ["/v1/clients", "/metrics", "/healthz"] {
            let answer = exchange(&daemon.addr, &get(path, host.as_deref()), limit).await;
            assert!(
                answer.starts_with("HTTP/1.1 200"),
                "{path} {host:?}: {answer:?}"
            );
            assert_eq!(
                header(&answer, "x-content-type-options"),
                Some("nosniff"),
                "{path}"
            );
            assert_eq!(header(&answer, "cache-control"), Some("no-store"), "{path}");
        }
    }
    let answer = exchange(
        &daemon.addr,
        &get("/v1/clients", Some(&format!("localhost:{port}"))),
        limit,
    )
    .await;
    assert!(answer.contains("app-one"), "{answer:?}");

    // Errors carry the headers too.
    for (request, status) in [
        (get("/nope", Some(&daemon.addr)), "404"),
        (
            format!(
                "POST /v1/clients/app-one/rotate HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                daemon.addr
            )
            .into_bytes(),
            "401",
        ),
    ] {
        let answer = exchange(&daemon.addr, &request, limit).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer:?}"
        );
        assert_eq!(header(&answer, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&answer, "cache-control"), Some("no-store"));
    }
}

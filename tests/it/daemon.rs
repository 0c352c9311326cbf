//! The daemon process: sd_notify, signals, reload, the HTTP endpoints, and sharing clients
//! with a `rotate` from the command line.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn notifies_ready_then_watchdog_from_the_loop_then_stopping_and_exits_on_sigterm() {
    let env = Env::new(Setup::default()).await;
    let socket_path = env.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut daemon = env.spawn_daemon(&[
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "10000000"),
    ]);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let n = socket.recv(&mut buf).expect("a notification");
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        seen.push(msg);
        if seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3 {
            break;
        }
    }
    let ready = seen
        .iter()
        .position(|m| m.contains("READY=1"))
        .expect("READY");
    let watchdogs: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, m)| m.contains("WATCHDOG=1"))
        .map(|(i, _)| i)
        .collect();
    assert!(watchdogs.len() >= 3 && watchdogs[0] > ready, "{seen:?}");

    // The watchdog pings come from the scheduler loop: they keep coming at its tick.
    let t0 = Instant::now();
    let mut more = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        let n = socket.recv(&mut buf).unwrap();
        if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
            more += 1;
        }
    }
    assert!(more >= 2, "watchdog pings every second, got {more} in 3 s");

    daemon.signal("TERM");
    let sent = Instant::now();
    let mut stopping = false;
    while sent.elapsed() < Duration::from_secs(10) && !stopping {
        if let Ok(n) = socket.recv(&mut buf) {
            stopping = String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
        }
    }
    assert!(stopping, "STOPPING=1 after SIGTERM");
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("exits within 10 s of SIGTERM");
    assert!(status.success(), "{}", daemon.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_health_metrics_and_client_status_and_protects_the_rotate_endpoint() {
    let env = Env::new(Setup::default()).await;
    let daemon = env.spawn_daemon(&[]);
    assert!(
        eventually(Duration::from_secs(20), || std::net::TcpStream::connect(
            &daemon.addr
        )
        .is_ok())
        .await
    );
    let mut ready = false;
    for _ in 0..100 {
        if daemon.get("/readyz").await.map(|r| r.0) == Some(200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "/readyz turns 200 once signed in");
    assert_eq!(daemon.get("/healthz").await.unwrap().0, 200);
    let versions_appear = eventually(Duration::from_secs(20), || {
        !env.versions("app-one").is_empty()
    })
    .await;
    assert!(
        versions_appear,
        "the daemon rotated the client: {}",
        daemon.stderr()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (status, metrics) = daemon.get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    for name in [
        "secret_rotator_secret_expiry_timestamp_seconds{client=\"app-one\"}",
        "secret_rotator_next_rotation_timestamp_seconds{client=\"app-one\"}",
        "secret_rotator_last_rotation_timestamp_seconds{client=\"app-one\"}",
        "secret_rotator_rotations_total{client=\"app-one\",result=\"success\"} 1",
        "secret_rotator_client_ready{client=\"app-one\"} 1",
        "secret_rotator_credentials{client=\"app-one\",owner=\"rotator\"} 1",
        "secret_rotator_credentials{client=\"app-one\",owner=\"other\"} 1",
        "secret_rotator_credential_expiry_timestamp_seconds{",
        "secret_rotator_orphans_removed_total{client=\"app-one\"} 0",
        "secret_rotator_azure_requests_total{",
        "secret_rotator_azure_request_duration_seconds_bucket{",
        "secret_rotator_propagation_seconds_count 1",
        "secret_rotator_build_info{version=",
    ] {
        assert!(metrics.contains(name), "missing {name} in:\n{metrics}");
    }
    let published_exp = env.versions("app-one")[0].exp.unwrap();
    assert!(
        metrics.contains(&format!(
            "secret_rotator_secret_expiry_timestamp_seconds{{client=\"app-one\"}} {published_exp}"
        )),
        "{metrics}"
    );

    let (status, body) = daemon.get("/v1/clients").await.unwrap();
    assert_eq!(status, 200);
    let clients: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(clients[0]["name"], "app-one");
    assert_eq!(
        clients[0]["published_key_id"].as_str(),
        env.versions("app-one")[0]
            .tags
            .get("key-id")
            .map(String::as_str)
    );

    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/clients/app-one/rotate", daemon.addr);
    assert_eq!(http.post(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        http.post(&url)
            .bearer_auth("wrong-token-wrong-token")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.post(format!("http://{}/v1/clients/nope/rotate", daemon.addr))
            .bearer_auth(&env.admin_token)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Hold the next Key Vault write so that the forced rotation stays in flight.
    env.fault(
        Operation::KeyvaultSetSecret,
        1,
        emulator::world::FaultKind::HoldBefore,
    );
    // The schedule reconciles the client every 2 s: a forced rotation that meets one of those
    // in flight is answered 409, as documented, and an operator tries again.
    let mut forced = 0;
    for _ in 0..50 {
        forced = http
            .post(&url)
            .bearer_auth(&env.admin_token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if forced != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(forced, 202);
    assert!(
        eventually(Duration::from_secs(20), || !env
            .em
            .world()
            .held_calls()
            .is_empty())
        .await
    );
    assert_eq!(
        http.post(&url)
            .bearer_auth(&env.admin_token)
            .send()
            .await
            .unwrap()
            .status(),
        409,
        "a second forced rotation while one is in flight"
    );
    env.em.world().release_all();
    assert!(
        eventually(Duration::from_secs(20), || env.versions("app-one").len()
            == 2)
        .await,
        "the forced rotation published"
    );

    // I4: after two rotations, no secret value in the logs, the store, the metrics or the API.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = daemon.get("/metrics").await.unwrap().1;
    let clients = daemon.get("/v1/clients").await.unwrap().1;
    let state = env.dir.path().join("state");
    let mut haystacks = vec![
        ("stderr".to_string(), daemon.stderr().into_bytes()),
        ("metrics".to_string(), metrics.into_bytes()),
        ("/v1/clients".to_string(), clients.into_bytes()),
    ];
    for entry in std::fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            haystacks.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    let leaks = crate::invariants::i4(&env, &haystacks);
    assert!(leaks.is_empty(), "{leaks:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_rotates_several_clients_within_a_minute() {
    let env = Env::new(Setup::default()).await;
    let port = free_port();
    let log = env.dir.path().join("demo.log");
    let child = env
        .command(&["demo", "--listen", &format!("127.0.0.1:{port}")])
        .env("TMPDIR", env.dir.path())
        .stdout(std::process::Stdio::from(
            std::fs::File::create(&log).unwrap(),
        ))
        .stderr(std::process::Stdio::from(
            std::fs::File::create(log.with_extension("err")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let mut demo = Daemon {
        child,
        addr: format!("127.0.0.1:{port}"),
        log,
    };
    let start = Instant::now();
    let mut rotated = 0;
    while start.elapsed() < Duration::from_secs(60) {
        if let Some((200, metrics)) = demo.get("/metrics").await {
            rotated = metrics
                .lines()
                .filter(|l| {
                    l.starts_with("secret_rotator_rotations_total{")
                        && l.contains("result=\"success\"")
                        && !l.ends_with(" 0")
                })
                .count();
            if rotated >= 3 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        rotated >= 3,
        "3 clients rotated within a minute: {}",
        demo.stderr()
    );

    // Its files: in a directory of a name no one could guess, owner-only, gone after Ctrl-C.
    use std::os::unix::fs::PermissionsExt;
    let demo_dirs = || {
        std::fs::read_dir(env.dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("secret-rotator-demo-")
            })
            .map(|e| e.path())
            .collect::<Vec<_>>()
    };
    let dirs = demo_dirs();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let dir = &dirs[0];
    assert_ne!(
        dir.file_name().unwrap().to_string_lossy(),
        format!("secret-rotator-demo-{}", demo.child.id()),
        "the name is not predictable"
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700);
    for f in [
        "daemon-client-secret",
        "admin-token",
        "config.toml",
        "emulator/state.json",
        "emulator/ca-key.pem",
    ] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    demo.signal("INT");
    assert!(
        demo.wait_exit(Duration::from_secs(10)).is_some(),
        "the demo stops on Ctrl-C"
    );
    assert!(demo_dirs().is_empty(), "the demo removed {dir:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_refuses_writes_without_a_token_file() {
    let env = Env::new(Setup::default()).await;
    let text = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace("admin_token_file = \"admin-token\"\n", "");
    std::fs::write(&env.config_path, text).unwrap();
    let daemon = env.spawn_daemon(&[]);
    assert!(
        eventually(Duration::from_secs(20), || std::net::TcpStream::connect(
            &daemon.addr
        )
        .is_ok())
        .await
    );
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/clients/app-one/rotate", daemon.addr))
        .bearer_auth(&env.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_line_rotate_and_a_running_daemon_never_act_on_one_client_at_once() {
    let env = Env::new(Setup::default()).await;
    let daemon = env.spawn_daemon(&[]);
    assert!(
        eventually(Duration::from_secs(20), || !env
            .versions("app-one")
            .is_empty())
        .await,
        "{}",
        daemon.stderr()
    );
    for _ in 0..3 {
        let out = env.rotate("app-one", &["--force"]).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Both kept writing to the same application; never concurrently: no 409 from the emulator's
    // concurrency model would be needed if they were serialised, and no two add_password calls
    // overlap in the journal.
    let journal = env.journal();
    let app = env.client("app-one").object_id.clone();
    let writes: Vec<_> = journal
        .iter()
        .filter(|e| {
            e.operation == Operation::GraphAddPassword && e.target.as_deref() == Some(app.as_str())
        })
        .collect();
    assert!(writes.len() >= 4, "daemon and CLI both rotated");
    env.assert_published_valid("app-one");
    env.assert_foreign_untouched("app-one");
    // Every own credential is published, superseded within overlap, or nothing else (I2).
    let published: Vec<String> = env
        .versions("app-one")
        .iter()
        .map(|v| v.tags["key-id"].clone())
        .collect();
    for (key, name) in env.passwords("app-one") {
        if name
            .as_deref()
            .is_some_and(|n| n.starts_with("secret-rotator:"))
        {
            assert!(
                published.contains(&key),
                "own credential {key} was never published"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_config_and_a_bad_config_keeps_the_old_one() {
    let env = Env::new(Setup {
        clients: vec![("app-one", "AzureADMyOrg"), ("app-two", "AzureADMyOrg")],
        ..Setup::default()
    })
    .await;
    // Start with only app-one configured.
    let two = env.client("app-two");
    let full = std::fs::read_to_string(&env.config_path).unwrap();
    let cut = full.find("\n[[clients]]\nname = \"app-two\"").unwrap();
    std::fs::write(&env.config_path, &full[..cut]).unwrap();
    let daemon = env.spawn_daemon(&[]);
    assert!(
        eventually(Duration::from_secs(20), || !env
            .versions("app-one")
            .is_empty())
        .await,
        "{}",
        daemon.stderr()
    );
    let full = std::fs::read_to_string(&env.config_path).unwrap();

    std::fs::write(&env.config_path, format!("{full}\n[daemon2]\n")).unwrap();
    daemon.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || daemon
            .stderr()
            .contains("reload rejected"))
        .await,
        "{}",
        daemon.stderr()
    );
    assert_eq!(
        daemon.get("/healthz").await.unwrap().0,
        200,
        "still running on the old config"
    );

    std::fs::write(&env.config_path, format!("{full}\n[[clients]]\nname = \"app-two\"\napp_id = \"{}\"\nkey_vault_url = \"{}\"\nsecret_name = \"app-two-secret\"\n", two.app_id, env.vault_url)).unwrap();
    daemon.signal("HUP");
    assert!(
        eventually(Duration::from_secs(20), || !env
            .versions("app-two")
            .is_empty())
        .await,
        "the added client was rotated: {}",
        daemon.stderr()
    );
    let (_, body) = daemon.get("/v1/clients").await.unwrap();
    assert!(body.contains("app-two"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_survives_hostile_requests() {
    use std::io::{Read, Write};
    let env = Env::new(Setup::default()).await;
    let daemon = env.spawn_daemon(&[]);
    assert!(
        eventually(Duration::from_secs(20), || std::net::TcpStream::connect(
            &daemon.addr
        )
        .is_ok())
        .await
    );
    let http = reqwest::Client::new();
    let base = format!("http://{}", daemon.addr);

    // Slow clients: a few connections that send half a request line and stall.
    let mut slow: Vec<std::net::TcpStream> = (0..5)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&daemon.addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();

    // An oversized body is refused, not buffered.
    let big = vec![b'x'; 4 * 1024 * 1024];
    // Its own client: the daemon closes this connection, which must not go back into a pool.
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/clients/app-one/rotate"))
        .bearer_auth(&env.admin_token)
        .body(big)
        .send()
        .await;
    // The daemon answers 413 and stops reading; the client either reads that answer or, when
    // it is still writing, finds the connection closed. Never may the request be accepted.
    match r {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(e.is_request() && !e.is_timeout(), "{e}"),
    }
    // Odd client names: encoded NULs, traversal, very long, non-UTF-8.
    for name in [
        "%00",
        "..%2F..%2Fetc%2Fpasswd",
        &"a".repeat(10_000),
        "%FF%FE",
        "app-one%0Aevil",
    ] {
        let r = http
            .post(format!("{base}/v1/clients/{name}/rotate"))
            .bearer_auth(&env.admin_token)
            .send()
            .await
            .unwrap();
        assert!(
            matches!(r.status().as_u16(), 400 | 404 | 414 | 431),
            "{name}: {}",
            r.status()
        );
    }
    let r = http
        .post(format!(
            "{base}/v1/clients/app-one/rotate?revoke_previous=maybe"
        ))
        .bearer_auth(&env.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{base}/v1/clients/app-one/rotate"))
        .header("Authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/v1/clients/app-one/rotate"))
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Meanwhile the daemon keeps answering.
    assert_eq!(daemon.get("/healthz").await.unwrap().0, 200);
    assert_eq!(daemon.get("/metrics").await.unwrap().0, 200);

    // The stalled connections are cut off rather than held forever.
    tokio::time::sleep(Duration::from_secs(11)).await;
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = Vec::new();
        match s.read_to_end(&mut buf) {
            // Closed, possibly after a 408 answer.
            Ok(_) => assert!(
                buf.is_empty() || buf.starts_with(b"HTTP/1.1 408"),
                "{}",
                String::from_utf8_lossy(&buf)
            ),
            Err(e) => assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset,
                "still open: {e}"
            ),
        }
    }
    assert_eq!(daemon.get("/healthz").await.unwrap().0, 200);
}

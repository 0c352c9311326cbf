//! Scale benchmark: N client applications, each with a vault secret due for rotation, against
//! the emulator with per-call latency, propagation delay, read lag and throttling at the
//! documented limits (windows shortened by --scale, never N). The release daemon runs as a
//! child process until every client has rotated and retired its old credential.
//!
//!   cargo bench --bench scale -- [--clients 100,1000,10000] [--scale 0.1] [--latency-ms 30]
//!
//! Prints a table (also written to target/bench/performance.md) for docs/performance.md.

// The benchmark stands outside the daemon: it reads the wall clock to build Azure's state,
// which clippy.toml forbids to the daemon's own code (only src/clock.rs may).
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use emulator::kit::{ConfigSpec, KitClient, TenantKit};
use emulator::model::{Password, SecretVersion, Settings, Throttling, VaultSecret};
use emulator::{Emulator, Options};

const VAULTS: usize = 10;
const DAEMON_SECRET: &str = "bench-daemon-secret-Q~0123456789abcdefgh";
// The documented limits (Throttling::default()), per window at scale 1.
const GRAPH_WRITES: f64 = 3000.0;
const GRAPH_WRITE_WINDOW: f64 = 150.0;
const GRAPH_TENANT_WRITES: f64 = 18000.0;
const GRAPH_TENANT_WINDOW: f64 = 300.0;
const GRAPH_RU: f64 = 3500.0;
const KV_CREATES: f64 = 300.0;
const KV_TRANSACTIONS: f64 = 4000.0;
const TEN_SECONDS: f64 = 10.0;

struct Row {
    n: usize,
    wall: f64,
    bound: f64,
    bound_term: &'static str,
    requests: usize,
    throttled: usize,
    peak_rss_mib: f64,
    steady_rss_mib: f64,
    cpu_per_rotation_ms: f64,
    scrape_ms: f64,
    scrape_kib: f64,
    complete: bool,
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    // `cargo bench` passes --bench; anything else unknown is ignored.
    let clients: Vec<usize> = arg("--clients")
        .unwrap_or_else(|| "100,1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let scale: f64 = arg("--scale").and_then(|s| s.parse().ok()).unwrap_or(0.1);
    let latency: u64 = arg("--latency-ms")
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    for n in clients {
        eprintln!("== N = {n}");
        let row = runtime.block_on(run(n, scale, latency));
        print_row(&row);
        rows.push(row);
    }
    let mut md = format!(
        "Scale factor {scale} (every throttle window x {scale}, limits unchanged), per-call latency {latency} ms, propagation 0.5-2 s, read lag 0.5 s, {VAULTS} vaults.\n\n\
         | N | wall time (s) | lower bound (s) | ratio | binding limit | requests | 429s | 429 share | peak RSS (MiB) | steady RSS (MiB) | CPU per rotation (ms) | /metrics scrape (ms) | scrape size (KiB) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {:.1}{} | {:.1} | {:.2} | {} | {} | {} | {:.2}% | {:.1} | {:.1} | {:.2} | {:.1} | {:.0} |\n",
            r.n,
            r.wall,
            if r.complete { "" } else { " (incomplete)" },
            r.bound,
            r.wall / r.bound,
            r.bound_term,
            r.requests,
            r.throttled,
            100.0 * r.throttled as f64 / r.requests.max(1) as f64,
            r.peak_rss_mib,
            r.steady_rss_mib,
            r.cpu_per_rotation_ms,
            r.scrape_ms,
            r.scrape_kib
        ));
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    std::fs::write(out.join("performance.md"), &md).expect("write");
    println!("\n{md}");
}

fn print_row(r: &Row) {
    println!(
        "N={} wall={:.1}s bound={:.1}s ({}) ratio={:.2} requests={} 429s={} peak_rss={:.1}MiB steady_rss={:.1}MiB cpu/rotation={:.2}ms scrape={:.1}ms complete={}",
        r.n,
        r.wall,
        r.bound,
        r.bound_term,
        r.wall / r.bound,
        r.requests,
        r.throttled,
        r.peak_rss_mib,
        r.steady_rss_mib,
        r.cpu_per_rotation_ms,
        r.scrape_ms,
        r.complete
    );
}

/// The lower bound the throttle model allows: each rotation costs Graph two writes (add,
/// retire) and about four resource units (two reads with $select, two writes), and Key Vault
/// one create and about four transactions in the client's vault.
fn lower_bound(n: usize, scale: f64, latency_ms: u64) -> (f64, &'static str) {
    let n = n as f64;
    // One client's critical path: no rotation completes before its overlap has passed after
    // publishing, and publishing waits for the new secret to propagate; about 8 calls in series.
    let critical = 5.0 + 0.5 + 8.0 * latency_ms as f64 / 1000.0;
    let per_vault = (n / VAULTS as f64).ceil();
    let terms = [
        (
            2.0 * n / GRAPH_WRITES * GRAPH_WRITE_WINDOW * scale,
            "Graph writes per app+tenant: 2N / 3000 x 150 s",
        ),
        (
            2.0 * n / GRAPH_TENANT_WRITES * GRAPH_TENANT_WINDOW * scale,
            "Graph writes per tenant: 2N / 18000 x 300 s",
        ),
        (
            4.0 * n / GRAPH_RU * TEN_SECONDS * scale,
            "Graph RU: 4N / 3500 x 10 s",
        ),
        (
            per_vault / KV_CREATES * TEN_SECONDS * scale,
            "Key Vault creates: N/10 / 300 x 10 s",
        ),
        (
            4.0 * per_vault / KV_TRANSACTIONS * TEN_SECONDS * scale,
            "Key Vault transactions: 4N/10 / 4000 x 10 s",
        ),
        (
            critical,
            "one client's critical path: overlap 5 s + propagation 0.5 s + 8 calls",
        ),
    ];
    terms
        .into_iter()
        .fold((0.0, ""), |acc, t| if t.0 > acc.0 { t } else { acc })
}

fn proc_status(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|x| x.1).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

async fn run(n: usize, scale: f64, latency: u64) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let em = Emulator::start(Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        state_dir: dir.path().join("emulator"),
        seed: None,
    })
    .await
    .expect("emulator");
    let tenant = (0..n)
        .fold(
            (0..VAULTS).fold(TenantKit::new("secret-rotator", DAEMON_SECRET), |kit, v| {
                kit.vault(format!("bench-kv-{v}"))
            }),
            |kit, i| {
                kit.client(KitClient::new(
                    format!("c{i}"),
                    format!("bench-kv-{}", i % VAULTS),
                ))
            },
        )
        .seed(&em)
        .await
        .expect("seed");

    // Every client starts with a published secret of this installation that is due: expiring
    // in 10 days with renew_before = 30 days. Its credential is retired inside the run.
    let now = time::OffsetDateTime::now_utc();
    {
        let mut state = em.world().state_mut();
        let mut pending = Vec::with_capacity(n);
        for (i, app) in state.applications.iter_mut().skip(1).enumerate() {
            let key = uuid::Uuid::new_v4().to_string();
            let secret = format!("seed{i:06}Q~{}", uuid::Uuid::new_v4().simple());
            let (start, end) = (
                now - time::Duration::days(80),
                now + time::Duration::days(10),
            );
            app.passwords.push(Password {
                key_id: key.clone(),
                display_name: Some(format!("secret-rotator:bench:c{i}:seed")),
                hint: secret[..3].to_string(),
                secret_text: secret.clone(),
                start_text: emulator::graph::graph_time(start),
                end_text: emulator::graph::graph_time(end),
                start,
                end,
                added: start,
                removed: None,
            });
            let tags = [
                ("managed-by", "secret-rotator"),
                ("client-id", app.app_id.as_str()),
                ("key-id", key.as_str()),
                ("rotation-id", "seed"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let created = start.unix_timestamp();
            pending.push((
                format!("bench-kv-{}", i % VAULTS),
                format!("c{i}"),
                SecretVersion {
                    version: format!("{:032x}", i + 1),
                    value: secret,
                    content_type: None,
                    tags,
                    enabled: true,
                    nbf: None,
                    exp: Some(end.unix_timestamp()),
                    created,
                    updated: created,
                },
            ));
        }
        for (vault, name, version) in pending {
            state.vaults.get_mut(&vault).expect("vault").secrets.insert(
                name.to_ascii_lowercase(),
                VaultSecret {
                    name,
                    versions: vec![version],
                },
            );
        }
        state.settings = Settings {
            propagation_min_ms: 500,
            propagation_max_ms: 2_000,
            read_lag_ms: 500,
            latency_ms: latency,
            throttling: Throttling {
                enabled: true,
                scale,
                ..Throttling::default()
            },
            ..Settings::default()
        };
    }

    std::fs::write(dir.path().join("daemon-secret"), DAEMON_SECRET).expect("secret");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let window = (GRAPH_WRITE_WINDOW * scale * 1000.0) as u64;
    let config = tenant.config(&ConfigSpec {
        header: "",
        secret_file: "daemon-secret",
        // The documented write quota, its window scaled as the emulator's is.
        azure: &format!("graph_write_quota = \"3000/{window}ms\""),
        instance: "bench",
        daemon: "max_concurrent = 512",
        log: "level = \"warn\"",
        listen: &format!("127.0.0.1:{port}"),
        admin_token_file: None,
        state_dir: "state",
        defaults: "schedule = \"0 * * * * *\"\nsecret_lifetime = \"90d\"\nrenew_before = \"30d\"\noverlap = \"5s\"\nverify_timeout = \"2m\"\nverify_successes = 1",
        secret_name: "{name}",
    });
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config).expect("config");
    em.world().clear_journal();

    let (bound, bound_term) = lower_bound(n, scale, latency);
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_secret-rotator"))
        .args(["run", "--config", config_path.to_str().expect("utf-8 path")])
        .env("NO_PROXY", "*")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("daemon.log")).expect("log"),
        ))
        .spawn()
        .expect("spawn the daemon");
    let pid = child.id();
    let deadline = started + Duration::from_secs_f64(bound * 4.0 + 180.0);
    let mut complete = false;
    let mut steady_rss = 0.0;
    let mut last_report = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        steady_rss = proc_status(pid, "VmRSS:");
        let done = {
            let state = em.world().state();
            state
                .applications
                .iter()
                .skip(1)
                .filter(|a| {
                    a.passwords.iter().all(|p| {
                        p.removed.is_some()
                            || !p
                                .display_name
                                .as_deref()
                                .is_some_and(|d| d.ends_with(":seed"))
                    })
                })
                .count()
        };
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {:.0} s: {done}/{n} rotated and retired, RSS {steady_rss:.1} MiB",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if done == n {
            // Done means every client published a new version and its seed credential is gone.
            let state = em.world().state();
            complete = state
                .vaults
                .values()
                .flat_map(|v| v.secrets.values())
                .all(|s| {
                    s.versions
                        .last()
                        .is_some_and(|v| v.tags.get("rotation-id").is_some_and(|r| r != "seed"))
                });
            if complete {
                break;
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let peak_rss = proc_status(pid, "VmHWM:");
    let cpu = cpu_seconds(pid);

    // /metrics at this N: the median of five scrapes.
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut times = Vec::new();
    let mut size = 0usize;
    for _ in 0..5 {
        let t = Instant::now();
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            && let Ok(body) = r.text().await
        {
            size = body.len();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let scrape_ms = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);

    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let journal = em.world().journal();
    let requests = journal.len();
    let throttled = journal.iter().filter(|e| e.status == 429).count();
    em.shutdown();
    Row {
        n,
        wall,
        bound,
        bound_term,
        requests,
        throttled,
        peak_rss_mib: peak_rss,
        steady_rss_mib: steady_rss,
        cpu_per_rotation_ms: cpu * 1000.0 / n as f64,
        scrape_ms,
        scrape_kib: size as f64 / 1024.0,
        complete,
    }
}

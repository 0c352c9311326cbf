//! Tenant inventory benchmark: N applications in the emulator (one password each, every tenth
//! also a certificate, every hundredth password this installation's), Graph throttling on at
//! the documented limits and a per-call latency. Measures the release binary twice:
//!
//! - `secret-rotator inventory --output json`: wall time, peak RSS, pages and resource units;
//! - the daemon with `[inventory] enabled = true`: time to the first export, RSS after it, and
//!   the `/metrics` scrape (median of five) with N-plus series.
//!
//!   cargo bench --bench inventory -- [--apps 50000] [--latency-ms 30]
//!
//! Prints a table (also written to target/bench/inventory.md) for docs/performance.md.

// The benchmark stands outside the daemon: it reads the wall clock to build Azure's state,
// which clippy.toml forbids to the daemon's own code (only src/clock.rs may).
#![allow(clippy::disallowed_methods)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use emulator::kit::{ConfigSpec, KitClient, TenantKit};
use emulator::model::{
    Seed, SeedApplication, SeedKeyCredential, SeedPassword, Settings, Throttling,
};
use emulator::operation::Operation;
use emulator::{Emulator, Options};

const DAEMON_SECRET: &str = "bench-daemon-secret-Q~0123456789abcdefgh";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
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

fn main() {
    let apps: usize = arg("--apps").and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let latency: u64 = arg("--latency-ms")
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let md = runtime.block_on(run(apps, latency));
    println!("{md}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("inventory.md"), &md);
}

async fn run(n: usize, latency: u64) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let em = Emulator::start(Options::loopback_in(dir.path()))
        .await
        .expect("emulator");
    let tenant = TenantKit::new("secret-rotator", DAEMON_SECRET)
        .vault("bench-kv")
        .client(KitClient::new("c0", "bench-kv"))
        .seed(&em)
        .await
        .expect("seed the daemon");
    let now = time::OffsetDateTime::now_utc();
    let t = Instant::now();
    let applications: Vec<SeedApplication> = (0..n)
        .map(|i| SeedApplication {
            password_credentials: vec![SeedPassword {
                end_date_time: Some(now + time::Duration::days((i % 400) as i64 - 30)),
                ..SeedPassword::new(
                    Some(&if i % 100 == 0 {
                        format!("secret-rotator:bench:app{i}:seed")
                    } else {
                        format!("pipeline {i}")
                    }),
                    Some(&format!("s{i:07}Q~0123456789abcdefghijklmnopqrstu")),
                )
            }],
            key_credentials: if i % 10 == 0 {
                vec![SeedKeyCredential {
                    display_name: Some(format!("CN=app{i}")),
                    start_date_time: None,
                    end_date_time: Some(now + time::Duration::days((i % 700) as i64)),
                }]
            } else {
                vec![]
            },
            ..SeedApplication::new(format!("tenant-app-{i}"))
        })
        .collect();
    em.seed(Seed {
        tenant_id: None,
        applications,
        vaults: vec![],
        settings: None,
        ..Default::default()
    })
    .await
    .expect("seed the tenant");
    eprintln!(
        "seeded {n} applications in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let total_apps = n + 2;
    let credentials = n + n / 10 + 1;
    {
        let mut state = em.world().state_mut();
        let daemon = state
            .applications
            .iter_mut()
            .find(|a| a.app_id == tenant.daemon_app_id)
            .expect("daemon");
        daemon.graph_roles.push("Application.Read.All".into());
        state.settings = Settings {
            latency_ms: latency,
            throttling: Throttling {
                enabled: true,
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
    let config = tenant.config(&ConfigSpec {
        header: "[inventory]\nenabled = true\ninterval = \"1h\"\nexport = \"all\"\n\n",
        secret_file: "daemon-secret",
        azure: "",
        instance: "bench",
        daemon: "",
        log: "level = \"info\"",
        listen: &format!("127.0.0.1:{port}"),
        admin_token_file: None,
        state_dir: "state",
        defaults: "schedule = \"0 0 0 * * *\"",
        secret_name: "{name}",
    });
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config).expect("config");
    let bin = env!("CARGO_BIN_EXE_secret-rotator");

    // 1. The command.
    em.world().clear_journal();
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args([
            "inventory",
            "--config",
            config_path.to_str().expect("utf-8"),
            "--output",
            "json",
        ])
        .env("NO_PROXY", "*")
        .stdout(Stdio::from(
            std::fs::File::create(dir.path().join("inventory.json")).expect("out"),
        ))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn inventory");
    let pid = child.id();
    let mut cli_peak: f64 = 0.0;
    while child.try_wait().expect("wait").is_none() {
        cli_peak = cli_peak.max(proc_status(pid, "VmHWM:"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cli_wall = started.elapsed().as_secs_f64();
    let status = child.wait().expect("exit");
    assert!(status.success(), "inventory failed");
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.path().join("inventory.json")).expect("read"))
            .expect("json");
    assert_eq!(listed.len(), credentials, "every credential listed");
    let journal = em.world().journal();
    let pages = journal
        .iter()
        .filter(|e| e.operation == Operation::GraphListApplications && e.status == 200)
        .count();
    let throttled = journal.iter().filter(|e| e.status == 429).count();
    // Each page is `$select`ed: 2 resource units for a list, 1 off for `$select`.
    let resource_units = pages;

    // 2. The daemon.
    let started = Instant::now();
    let mut daemon = Command::new(bin)
        .args(["run", "--config", config_path.to_str().expect("utf-8")])
        .env("NO_PROXY", "*")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("daemon.log")).expect("log"),
        ))
        .spawn()
        .expect("spawn the daemon");
    let pid = daemon.id();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let mut exported_after = f64::NAN;
    let mut series = 0;
    while started.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(r) = http.get(&metrics).send().await
            && let Ok(body) = r.text().await
        {
            series = body
                .lines()
                .filter(|l| {
                    l.starts_with("secret_rotator_tenant_credential_expiry_timestamp_seconds{")
                })
                .count();
            if series >= credentials {
                exported_after = started.elapsed().as_secs_f64();
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let daemon_peak = proc_status(pid, "VmHWM:");
    let daemon_rss = proc_status(pid, "VmRSS:");
    let mut times = Vec::new();
    let mut size = 0usize;
    for _ in 0..5 {
        let t = Instant::now();
        if let Ok(r) = http.get(&metrics).send().await
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
    let _ = daemon.wait();
    em.shutdown();

    format!(
        "{total_apps} applications ({credentials} credentials: a password each, a certificate on every tenth), Graph throttling on at the documented limits (3,500 resource units per 10 s), {latency} ms per call.\n\n\
| what | applications | pages | resource units | 429s | wall time (s) | peak RSS (MiB) | RSS after (MiB) | series | /metrics scrape (ms) | scrape size (KiB) |\n\
|---|---|---|---|---|---|---|---|---|---|---|\n\
| `inventory --output json` | {total_apps} | {pages} | {resource_units} | {throttled} | {cli_wall:.1} | {cli_peak:.1} | | | | |\n\
| daemon, `[inventory]` on | {total_apps} | {pages} | {resource_units} | | {exported_after:.1} (to the first export) | {daemon_peak:.1} | {daemon_rss:.1} | {series} | {scrape_ms:.0} | {:.0} |\n",
        size as f64 / 1024.0
    )
}

//! Scale benchmark: N client applications, each with a vault secret due for rotation, against
//! the emulator with per-call latency, propagation delay, read lag and throttling at the
//! documented limits (windows shortened by --scale, never N). The release daemon runs as a
//! child process until every client has rotated and retired its old credential.
//!
//! First, the side-by-side scenario: N = 200 (--side-by-side) due clients against an emulator
//! with 1 s propagation and nothing else in the way, rotated once by the daemon and once by a
//! plain sequential script on the official Azure SDKs for Python (benches/python/rotate.py, in
//! a venv under target/bench/venv that this benchmark creates from PyPI), each in a fresh
//! emulator; the CPU time of each whole process is reported and their ratio.
//!
//!   cargo bench --bench scale -- [--side-by-side 200] [--clients 100,1000,10000] [--scale 0.1]
//!                                [--latency-ms 30]
//!
//! `--side-by-side 0` or `--clients ""` skips that part, `--no-python` the script. The daemon
//! logs at warn; `RUST_LOG` (e.g. `warn,secret_rotator::rotation=debug`) overrides that, and
//! with `SCALE_BENCH_KEEP` set each run's directory (the daemon's `daemon.log`, and for a run
//! that did not complete `stalled.txt`: what the emulator holds of each client left and its
//! journal) is kept and named. Prints the tables (also written to
//! target/bench/performance.md) for docs/performance.md.

// The benchmark stands outside the daemon: it reads the wall clock to build Azure's state,
// which clippy.toml forbids to the daemon's own code (only src/clock.rs may).
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use emulator::kit::{ConfigSpec, KitClient, Tenant, TenantKit};
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

/// What one run of the daemon measured.
struct DaemonRun {
    wall: f64,
    complete: bool,
    peak_rss_mib: f64,
    steady_rss_mib: f64,
    /// CPU seconds (user + system) of the whole process, start-up and shutdown included, less
    /// what the benchmark's own `/metrics` scrapes at the end cost it.
    cpu: f64,
    scrape_ms: f64,
    scrape_kib: f64,
}

/// The side-by-side scenario's figures.
struct SideBySide {
    n: usize,
    daemon_cpu: f64,
    daemon_wall: f64,
    daemon_requests: usize,
    daemon_complete: bool,
    python: Result<PythonRun, String>,
}

struct PythonRun {
    cpu: f64,
    startup_cpu: f64,
    wall: f64,
    requests: usize,
    complete: bool,
    /// The interpreter's and OpenSSL's versions, which move the baseline's cost.
    runtime: String,
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
    let side_by_side: usize = arg("--side-by-side")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let scale: f64 = arg("--scale").and_then(|s| s.parse().ok()).unwrap_or(0.1);
    let latency: u64 = arg("--latency-ms")
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut md = format!("{}\n\n", machine());
    if side_by_side > 0 {
        eprintln!("== side by side, N = {side_by_side}");
        let s = runtime.block_on(run_side_by_side(side_by_side));
        md.push_str(&side_by_side_table(&s));
        md.push('\n');
    }
    let mut rows = Vec::new();
    for n in clients {
        eprintln!("== N = {n}");
        let row = runtime.block_on(run(n, scale, latency));
        print_row(&row);
        rows.push(row);
    }
    if !rows.is_empty() {
        md.push_str(&format!(
            "Scale factor {scale} (every throttle window x {scale}, limits unchanged), per-call latency {latency} ms, propagation 0.5-2 s, read lag 0.5 s, {VAULTS} vaults.\n\n\
             | N | wall time (s) | lower bound (s) | ratio | binding limit | requests | 429s | 429 share | peak RSS (MiB) | steady RSS (MiB) | CPU per rotation (ms) | /metrics scrape (ms) | scrape size (KiB) |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        ));
    }
    for r in &rows {
        md.push_str(&format!(
            "| {} | {:.1}{} | {:.1} | {:.2} | {} | {} | {} | {:.2}% | {:.1} | {:.1} | {:.3} | {:.1} | {:.0} |\n",
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
    if let Some(table) = footprint(&runtime, latency) {
        md.push('\n');
        md.push_str(&table);
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    std::fs::write(out.join("performance.md"), &md).expect("write");
    println!("\n{md}");
}

/// The machine and how busy it was: the CPU figures are process CPU time, which other work on
/// the machine inflates only a little (cache and frequency), unlike wall time.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!("{date}: {cpus} CPUs ({model}), load average {load} at the start")
}

fn side_by_side_table(s: &SideBySide) -> String {
    let per = |cpu: f64| cpu * 1000.0 / s.n as f64;
    let mut md = format!(
        "Side by side: N = {} due clients, propagation 1 s, no latency, no throttling; CPU time (user + system) of each whole process, start-up included.\n\n\
         | who | rotations | wall time (s) | requests | CPU (s) | CPU per rotation (ms) |\n\
         |---|---|---|---|---|---|\n\
         | secret-rotator daemon | {}{} | {:.1} | {} | {:.3} | {:.3} |\n",
        s.n,
        s.n,
        if s.daemon_complete {
            ""
        } else {
            " (incomplete)"
        },
        s.daemon_wall,
        s.daemon_requests,
        s.daemon_cpu,
        per(s.daemon_cpu),
    );
    match &s.python {
        Ok(p) => {
            md.push_str(&format!(
                "| sequential Python script, official SDKs ({}) | {}{} | {:.1} | {} | {:.3} ({:.3} before its first request) | {:.3} |\n\n\
                 The daemon used **{:.1} times less CPU per rotation** than the script.\n",
                p.runtime,
                s.n,
                if p.complete { "" } else { " (incomplete)" },
                p.wall,
                p.requests,
                p.cpu,
                p.startup_cpu,
                per(p.cpu),
                p.cpu / s.daemon_cpu.max(1e-9),
            ));
        }
        Err(why) => md.push_str(&format!(
            "\nThe Python baseline did not run ({why}): the daemon's figure stands alone.\n"
        )),
    }
    println!("{md}");
    md
}

fn print_row(r: &Row) {
    println!(
        "N={} wall={:.1}s bound={:.1}s ({}) ratio={:.2} requests={} 429s={} peak_rss={:.1}MiB steady_rss={:.1}MiB cpu/rotation={:.3}ms scrape={:.1}ms complete={}",
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

/// The process's CPU seconds so far in user and in system mode, from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> (f64, f64) {
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
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

fn cpu_seconds(pid: u32) -> f64 {
    let (user, system) = proc_stat(pid);
    user + system
}

/// Waits for `child` to exit and returns the CPU seconds of its whole life, user and system,
/// every thread's: the kernel's own total that reaping the child adds to this process's
/// `RUSAGE_CHILDREN` (what `wait4` reports). The zombie's `/proc/PID/stat` read about a fifth
/// less for the same runs (docs/performance.md, "Measuring"), so it is not used for this.
/// The benchmark reaps one child at a time, so the difference is this child's alone.
fn lifetime_cpu(child: &mut Child) -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let total = || {
        getrusage(UsageWho::RUSAGE_CHILDREN)
            .map(|u| {
                let secs =
                    |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
                (secs(u.user_time()), secs(u.system_time()))
            })
            .unwrap_or((0.0, 0.0))
    };
    let pid = child.id();
    let (user_before, system_before) = total();
    let _ = child.wait();
    let (user_after, system_after) = total();
    let (user, system) = (user_after - user_before, system_after - system_before);
    eprintln!("  pid {pid}: {user:.3} s user, {system:.3} s system");
    user + system
}

fn terminate(child: &Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// The emulator the benchmark's daemons run against, its state under `dir`.
async fn start_emulator(dir: &Path) -> Emulator {
    Emulator::start(Options::loopback_in(dir))
        .await
        .expect("emulator")
}

/// Seeds `n` client applications owned by the daemon identity, spread over the vaults, each
/// with a credential of this installation valid from `start` to `end`, published in its vault
/// secret.
async fn seed_published(
    em: &Emulator,
    n: usize,
    start: time::OffsetDateTime,
    end: time::OffsetDateTime,
) -> Tenant {
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
        .seed(em)
        .await
        .expect("seed");
    let mut state = em.world().state_mut();
    let mut pending = Vec::with_capacity(n);
    for (i, app) in state.applications.iter_mut().skip(1).enumerate() {
        let key = uuid::Uuid::new_v4().to_string();
        let secret = format!("seed{i:06}Q~{}", uuid::Uuid::new_v4().simple());
        app.passwords.push(Password::new(
            key.clone(),
            Some(format!("secret-rotator:bench:c{i}:seed")),
            secret.clone(),
            start,
            end,
            start,
        ));
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
    drop(state);
    tenant
}

/// An emulator seeded with N client applications owned by the daemon identity, each with a
/// published vault secret of this installation that is due (expiring in 10 days, with
/// `renew_before = 30d`), spread over the vaults; `settings` in force.
async fn prepare(dir: &Path, n: usize, settings: Settings) -> (Emulator, Tenant) {
    let em = start_emulator(dir).await;
    let now = time::OffsetDateTime::now_utc();
    let tenant = seed_published(
        &em,
        n,
        now - time::Duration::days(80),
        now + time::Duration::days(10),
    )
    .await;
    em.world().state_mut().settings = settings;
    em.world().clear_journal();
    (em, tenant)
}

/// How many clients have retired their seed credential.
fn retired(em: &Emulator) -> usize {
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
}

/// What the emulator holds of each client that has not retired its seed credential, and the
/// journal of its application and secret, written to `dir/stalled.txt` (hints, never values).
fn stalled(dir: &Path, em: &Emulator) {
    use std::fmt::Write as _;
    let state = em.world().state();
    let journal = em.world().journal();
    let mut out = String::new();
    for app in state.applications.iter().skip(1) {
        let seed_left = app.passwords.iter().any(|p| {
            p.removed.is_none()
                && p.display_name
                    .as_deref()
                    .is_some_and(|d| d.ends_with(":seed"))
        });
        if !seed_left {
            continue;
        }
        let _ = writeln!(
            out,
            "== {} ({}, object {})",
            app.display_name, app.app_id, app.id
        );
        for p in &app.passwords {
            let _ = writeln!(
                out,
                "  password {} {:?} hint {} start {} removed {:?}",
                p.key_id, p.display_name, p.hint, p.start_text, p.removed
            );
        }
        let mut targets = vec![app.id.clone()];
        for (vault, v) in &state.vaults {
            for secret in v.secrets.values() {
                if !secret
                    .versions
                    .iter()
                    .any(|sv| sv.tags.get("client-id") == Some(&app.app_id))
                {
                    continue;
                }
                targets.push(format!("{vault}/{}", secret.name));
                for sv in &secret.versions {
                    let _ = writeln!(
                        out,
                        "  version {vault}/{} {} created {} updated {} enabled {} hint {} tags {:?}",
                        secret.name,
                        sv.version,
                        sv.created,
                        sv.updated,
                        sv.enabled,
                        sv.value.chars().take(3).collect::<String>(),
                        sv.tags
                    );
                }
            }
        }
        for e in journal.iter().filter(|e| {
            e.target
                .as_deref()
                .is_some_and(|t| targets.iter().any(|x| t.eq_ignore_ascii_case(x)))
        }) {
            let _ = writeln!(out, "  {}", serde_json::to_string(e).unwrap_or_default());
        }
    }
    let _ = std::fs::write(dir.join("stalled.txt"), out);
}

/// Whether every vault secret's latest version is a new one (not the seed's).
fn all_published(em: &Emulator) -> bool {
    let state = em.world().state();
    state
        .vaults
        .values()
        .flat_map(|v| v.secrets.values())
        .all(|s| {
            s.versions
                .last()
                .is_some_and(|v| v.tags.get("rotation-id").is_some_and(|r| r != "seed"))
        })
}

/// Runs the release daemon on `tenant` until every client has rotated and retired its seed
/// credential (or `deadline` passes), then stops it.
async fn run_daemon(
    dir: &Path,
    em: &Emulator,
    tenant: &Tenant,
    n: usize,
    azure_extra: &str,
    daemon_extra: &str,
    deadline: Duration,
) -> DaemonRun {
    std::fs::write(dir.join("daemon-secret"), DAEMON_SECRET).expect("secret");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let config = tenant.config(&ConfigSpec {
        header: "",
        secret_file: "daemon-secret",
        azure: azure_extra,
        instance: "bench",
        daemon: daemon_extra,
        log: "level = \"warn\"",
        listen: &format!("127.0.0.1:{port}"),
        admin_token_file: None,
        state_dir: "state",
        defaults: "schedule = \"0 * * * * *\"\nsecret_lifetime = \"90d\"\nrenew_before = \"30d\"\noverlap = \"5s\"\nverify_timeout = \"2m\"\nverify_successes = 1",
        secret_name: "{name}",
    });
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config).expect("config");

    let started = Instant::now();
    // SCALE_BENCH_WRAP runs the daemon under a tool that execs it in the same process
    // (`valgrind --tool=callgrind`, `perf record -g --`: for the latter the figures are the
    // tool's), to profile exactly the daemon of this scenario.
    let wrap: Vec<String> = std::env::var("SCALE_BENCH_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut command = match wrap.split_first() {
        Some((tool, args)) => {
            let mut c = Command::new(tool);
            c.args(args).arg(daemon_bin());
            c
        }
        None => Command::new(daemon_bin()),
    };
    let mut child = as_in_production(&mut command)
        .args(["run", "--config", config_path.to_str().expect("utf-8 path")])
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("daemon.log")).expect("log"),
        ))
        .spawn()
        .expect("spawn the daemon");
    let pid = child.id();
    eprintln!("  daemon pid {pid}");
    let deadline = started + deadline;
    let mut complete = false;
    let mut steady_rss = 0.0;
    let mut last_report = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        steady_rss = proc_status(pid, "VmRSS:");
        let done = retired(em);
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {:.0} s: {done}/{n} rotated and retired, RSS {steady_rss:.1} MiB",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        // Done means every client published a new version and its seed credential is gone.
        if done == n && all_published(em) {
            complete = true;
            break;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    if !complete {
        stalled(dir, em);
    }
    let peak_rss = proc_status(pid, "VmHWM:");
    let cpu_done = cpu_seconds(pid);

    // /metrics at this N: the median of five scrapes.
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let (scrape_ms, scrape_kib) = scrape(&http, port).await;
    let scrapes_cpu = cpu_seconds(pid) - cpu_done;

    terminate(&child);
    let cpu = tokio::task::spawn_blocking(move || lifetime_cpu(&mut child))
        .await
        .expect("wait for the daemon");
    DaemonRun {
        wall,
        complete,
        peak_rss_mib: peak_rss,
        steady_rss_mib: steady_rss,
        cpu: cpu - scrapes_cpu,
        scrape_ms,
        scrape_kib,
    }
}

async fn run(n: usize, scale: f64, latency: u64) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    // SCALE_BENCH_KEEP keeps the run's directory (the daemon's log, stalled.txt) for a look.
    let (_guard, dir) = if std::env::var_os("SCALE_BENCH_KEEP").is_some() {
        let kept = dir.keep();
        eprintln!("  keeping {}", kept.display());
        (None, kept)
    } else {
        let path = dir.path().to_path_buf();
        (Some(dir), path)
    };
    let (em, tenant) = prepare(
        &dir,
        n,
        Settings {
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
        },
    )
    .await;
    let window = (GRAPH_WRITE_WINDOW * scale * 1000.0) as u64;
    let (bound, bound_term) = lower_bound(n, scale, latency);
    let d = run_daemon(
        &dir,
        &em,
        &tenant,
        n,
        // The documented write quota, its window scaled as the emulator's is.
        &format!("graph_write_quota = \"3000/{window}ms\""),
        // `max_concurrent` at "auto" unless SCALE_DAEMON_LINES says otherwise.
        &std::env::var("SCALE_DAEMON_LINES").unwrap_or_default(),
        Duration::from_secs_f64(bound * 4.0 + 180.0),
    )
    .await;
    let journal = em.world().journal();
    let requests = journal.len();
    let throttled = journal.iter().filter(|e| e.status == 429).count();
    print_operations(&journal);
    em.shutdown();
    Row {
        n,
        wall: d.wall,
        bound,
        bound_term,
        requests,
        throttled,
        peak_rss_mib: d.peak_rss_mib,
        steady_rss_mib: d.steady_rss_mib,
        cpu_per_rotation_ms: d.cpu * 1000.0 / n as f64,
        scrape_ms: d.scrape_ms,
        scrape_kib: d.scrape_kib,
        complete: d.complete,
    }
}

/// The emulator of the side-by-side scenario: a new secret signs in 1 s after it was added;
/// no latency, no read lag, no throttling.
fn side_by_side_settings() -> Settings {
    Settings {
        propagation_min_ms: 1_000,
        propagation_max_ms: 1_000,
        read_lag_ms: 0,
        latency_ms: 0,
        throttling: Throttling {
            enabled: false,
            ..Throttling::default()
        },
        ..Settings::default()
    }
}

async fn run_side_by_side(n: usize) -> SideBySide {
    let dir = tempfile::tempdir().expect("tempdir");
    let (em, tenant) = prepare(dir.path(), n, side_by_side_settings()).await;
    let d = run_daemon(
        dir.path(),
        &em,
        &tenant,
        n,
        "",
        "max_concurrent = 512",
        Duration::from_secs(300),
    )
    .await;
    let journal = em.world().journal();
    let daemon_requests = journal.len();
    // Which requests a rotation makes (and how many of each), to compare builds by.
    print_operations(&journal);
    em.shutdown();
    println!(
        "side by side: daemon cpu={:.3}s ({:.3} ms/rotation) wall={:.1}s requests={daemon_requests} complete={}",
        d.cpu,
        d.cpu * 1000.0 / n as f64,
        d.wall,
        d.complete
    );

    let python = match if std::env::args().any(|a| a == "--no-python") {
        Err("--no-python".to_string())
    } else {
        python()
    } {
        Ok(python) => {
            let dir = tempfile::tempdir().expect("tempdir");
            let (em, tenant) = prepare(dir.path(), n, side_by_side_settings()).await;
            let run = run_python(&python, dir.path(), &em, &tenant, n).await;
            em.shutdown();
            run
        }
        Err(why) => Err(why),
    };
    match &python {
        Ok(p) => println!(
            "side by side: python cpu={:.3}s ({:.3} ms/rotation, {:.3}s before its first request) wall={:.1}s requests={} complete={}",
            p.cpu,
            p.cpu * 1000.0 / n as f64,
            p.startup_cpu,
            p.wall,
            p.requests,
            p.complete
        ),
        Err(why) => println!("side by side: no Python baseline: {why}"),
    }
    SideBySide {
        n,
        daemon_cpu: d.cpu,
        daemon_wall: d.wall,
        daemon_requests,
        daemon_complete: d.complete,
        python,
    }
}

/// The venv's interpreter with the SDKs of benches/python/requirements.txt installed (from
/// PyPI), made under target/bench/venv when missing.
fn python() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/bench/venv");
    let python = venv.join("bin/python");
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        match cmd.stdout(Stdio::null()).output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )),
            Err(e) => Err(format!("{what}: {e}")),
        }
    };
    if !python.exists() {
        eprintln!("  creating the Python venv in {}", venv.display());
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        )?;
    }
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(root.join("benches/python/requirements.txt")),
        "pip install -r benches/python/requirements.txt",
    )?;
    Ok(python)
}

async fn run_python(
    python: &Path,
    dir: &Path,
    em: &Emulator,
    tenant: &Tenant,
    n: usize,
) -> Result<PythonRun, String> {
    let spec = serde_json::json!({
        "tenant_id": tenant.tenant_id,
        "authority_host": tenant.info.authority_host,
        "graph_endpoint": tenant.info.graph_endpoint,
        "ca_file": tenant.info.ca_file,
        "client_id": tenant.daemon_app_id,
        "client_secret": DAEMON_SECRET,
        "clients": tenant.clients.iter().map(|c| serde_json::json!({
            "name": c.name,
            "app_id": c.app_id,
            "vault_url": c.vault_url,
            "secret_name": c.name,
        })).collect::<Vec<_>>(),
    });
    let spec_path = dir.join("python-spec.json");
    std::fs::write(&spec_path, spec.to_string()).expect("spec");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python/rotate.py");
    let started = Instant::now();
    let mut cmd = Command::new(python);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().to_ascii_lowercase().ends_with("_proxy") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .arg(&script)
        .arg(&spec_path)
        .env("NO_PROXY", "*")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("python.log")).expect("log"),
        ))
        .spawn()
        .map_err(|e| format!("starting {}: {e}", python.display()))?;
    let (out, cpu) = tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        }
        (out, lifetime_cpu(&mut child))
    })
    .await
    .expect("wait for the script");
    let wall = started.elapsed().as_secs_f64();
    let report: serde_json::Value = out
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            let log = std::fs::read_to_string(dir.join("python.log")).unwrap_or_default();
            format!(
                "the script failed: {}",
                log.lines().last().unwrap_or("no output")
            )
        })?;
    Ok(PythonRun {
        cpu,
        startup_cpu: report["startup_cpu_seconds"].as_f64().unwrap_or(f64::NAN),
        wall,
        requests: em.world().journal().len(),
        complete: retired(em) == n && all_published(em),
        runtime: report["runtime"].as_str().unwrap_or("unknown").to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Footprint: start-up, idle and the default settings (docs/performance.md, "Footprint").
//
//   cargo bench --bench scale -- --clients none --idle 10000        start-up, idle, /metrics
//   cargo bench --bench scale -- --clients none --defaults 10000    first rotations at the
//                                                                   defaults, then idle
//
// SCALE_IDLE_SECS (default 60) is how long the idle daemon is watched; SCALE_DAEMON_BIN runs
// another build of the daemon (to compare two commits with one benchmark).
// ---------------------------------------------------------------------------------------------

/// What the footprint runs measured.
struct Footprint {
    what: String,
    n: usize,
    /// Start of the process to `/readyz` answering 200.
    ready_s: f64,
    /// Start to every client rotated (the defaults run) or reconciled once (the idle run).
    first_pass_s: f64,
    peak_rss_mib: f64,
    /// VmRSS when the idle watch began and ended, and the highest sample in between.
    idle_rss_start_mib: f64,
    idle_rss_end_mib: f64,
    idle_rss_max_mib: f64,
    /// Of the RSS at the end of the idle watch: anonymous memory (the heap, stacks) and
    /// mapped files (the binary's code).
    idle_anon_mib: f64,
    idle_file_mib: f64,
    /// The least-squares slope of the RSS sampled every second while idle, in MiB an hour: a
    /// watch shorter than an hour still says whether the RSS grows.
    idle_rss_slope_mib_h: f64,
    idle_secs: f64,
    /// CPU time (user + system) over the idle watch, as a share of one core.
    idle_cpu_pct: f64,
    /// Requests the daemon made while idle.
    idle_requests: usize,
    scrape_ms: f64,
    scrape_kib: f64,
    /// VmHWM after the scrapes: what a scrape adds to the peak.
    peak_with_scrape_mib: f64,
    load: String,
}

/// The daemon's environment as in production, whatever the benchmark's: with RUST_BACKTRACE set,
/// the Azure SDK captures a backtrace for every error it makes, even those it discards (a header
/// looked up and absent), which costs about 5% more CPU. Every daemon the benchmark starts
/// goes through here, so that no run measures the shell's environment.
fn as_in_production(command: &mut Command) -> &mut Command {
    command
        .env("NO_PROXY", "*")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
}

fn daemon_bin() -> String {
    std::env::var("SCALE_DAEMON_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_secret-rotator").to_string())
}

fn idle_secs() -> f64 {
    std::env::var("SCALE_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60.0)
}

/// CPU time of every thread of `pid` in seconds, to the nanosecond (`/proc/PID/task/*/schedstat`):
/// an idle daemon uses less than the 10 ms ticks of `/proc/PID/stat` over a minute.
fn cpu_seconds_fine(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

/// Requests by operation and status, to stderr: where a change in the request count comes from.
fn print_operations(journal: &[emulator::world::Entry]) {
    let mut by: std::collections::BTreeMap<(&str, u16), usize> = Default::default();
    for e in journal {
        *by.entry((e.operation.as_str(), e.status)).or_default() += 1;
    }
    for ((op, status), n) in by {
        eprintln!("  {n:>8} {op} {status}");
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Seeds `n` clients whose published secret (by this installation) expires `expires_in` from
/// now, spread over the vaults, with the emulator's latency and delays as the rotation runs
/// have them and throttling off (the daemon's own pacer sets the rate, as with the defaults).
async fn seed_footprint(
    em: &Emulator,
    n: usize,
    latency: u64,
    expires_in: time::Duration,
) -> emulator::kit::Tenant {
    let end = time::OffsetDateTime::now_utc() + expires_in;
    let tenant = seed_published(em, n, end - time::Duration::days(90), end).await;
    let mut state = em.world().state_mut();
    state.settings = Settings {
        propagation_min_ms: 500,
        propagation_max_ms: 2_000,
        read_lag_ms: 500,
        latency_ms: latency,
        ..Settings::default()
    };
    drop(state);
    tenant
}

/// Starts the daemon on `tenant` with the default settings but the schedule (every 6 hours,
/// so that nothing is due between the first pass and the next) and the log level.
fn start_default_daemon(
    dir: &Path,
    tenant: &emulator::kit::Tenant,
    port: u16,
) -> std::process::Child {
    std::fs::write(dir.join("daemon-secret"), DAEMON_SECRET).expect("secret");
    let config = tenant.config(&ConfigSpec {
        header: "",
        secret_file: "daemon-secret",
        azure: "",
        instance: "bench",
        daemon: "",
        log: "level = \"warn\"",
        listen: &format!("127.0.0.1:{port}"),
        admin_token_file: None,
        state_dir: "state",
        defaults: "schedule = \"0 0 */6 * * *\"",
        secret_name: "{name}",
    });
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config).expect("config");
    as_in_production(&mut Command::new(daemon_bin()))
        .args(["run", "--config", config_path.to_str().expect("utf-8 path")])
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("daemon.log")).expect("log"),
        ))
        .spawn()
        .expect("spawn the daemon")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `/readyz` until it answers 200; the time since `started`.
async fn wait_ready(http: &reqwest::Client, port: u16, started: Instant) -> f64 {
    let deadline = started + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status().is_success()
        {
            return started.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f64::NAN
}

/// The median of five `/metrics` scrapes (ms) and the size of the last (KiB).
async fn scrape(http: &reqwest::Client, port: u16) -> (f64, f64) {
    let mut times = Vec::new();
    let mut size = 0usize;
    for _ in 0..5 {
        let t = Instant::now();
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            // Timed to the last byte: decoding the text is the scraper's work, and with
            // `text()` it doubled the figure at 10,000 clients (curl 13-26 ms, here 37-45).
            && let Ok(body) = r.bytes().await
        {
            size = body.len();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    (
        times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
        size as f64 / 1024.0,
    )
}

/// Waits until the emulator saw at least `min` requests and none for five seconds (the
/// daemon's first pass is over); false at the deadline.
async fn wait_quiet(em: &Emulator, min: usize, deadline: Instant) -> bool {
    let mut last = (0usize, Instant::now());
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let len = em.world().journal().len();
        if len != last.0 {
            last = (len, Instant::now());
        } else if len >= min && last.1.elapsed() >= Duration::from_secs(5) {
            return true;
        }
    }
    false
}

/// Watches the idle daemon for `secs`: its CPU time, its RSS every second, the requests it made.
async fn watch_idle(em: &Emulator, pid: u32, secs: f64, f: &mut Footprint) {
    let requests = em.world().journal().len();
    let cpu = cpu_seconds_fine(pid);
    let t = Instant::now();
    f.idle_rss_start_mib = proc_status(pid, "VmRSS:");
    f.idle_rss_max_mib = f.idle_rss_start_mib;
    let mut samples = vec![(0.0, f.idle_rss_start_mib)];
    let mut last_report = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = proc_status(pid, "VmRSS:");
        samples.push((t.elapsed().as_secs_f64(), rss));
        f.idle_rss_max_mib = f.idle_rss_max_mib.max(rss);
        f.idle_rss_end_mib = rss;
        if last_report.elapsed() > Duration::from_secs(60) {
            eprintln!(
                "  idle {:.0} s: RSS {rss:.1} MiB, CPU {:.3}% of a core so far",
                t.elapsed().as_secs_f64(),
                100.0 * (cpu_seconds_fine(pid) - cpu) / t.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    f.idle_secs = t.elapsed().as_secs_f64();
    f.idle_rss_slope_mib_h = 3600.0 * slope(&samples);
    f.idle_anon_mib = proc_status(pid, "RssAnon:");
    f.idle_file_mib = proc_status(pid, "RssFile:");
    f.idle_cpu_pct = 100.0 * (cpu_seconds_fine(pid) - cpu) / f.idle_secs;
    f.idle_requests = em.world().journal().len() - requests;
}

/// The least-squares slope of `(x, y)` points (0 for fewer than two).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den > 0.0 { num / den } else { 0.0 }
}

/// `n` clients, nothing due: start-up to ready, the first pass (reads only), then the idle
/// daemon watched for `SCALE_IDLE_SECS`, and `/metrics`.
async fn run_idle(n: usize, latency: u64) -> Footprint {
    let dir = tempfile::tempdir().expect("tempdir");
    let em = start_emulator(dir.path()).await;
    let tenant = seed_footprint(&em, n, latency, time::Duration::days(80)).await;
    em.world().clear_journal();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let port = free_port();
    let load = loadavg();
    let started = Instant::now();
    let mut child = start_default_daemon(dir.path(), &tenant, port);
    let pid = child.id();
    let ready_s = wait_ready(&http, port, started).await;
    eprintln!("  ready after {ready_s:.3} s");
    // Each client's first reconcile reads its app, its vault secret and its history.
    let quiet = wait_quiet(&em, 2 * n, started + Duration::from_secs(1800)).await;
    let first_pass_s = started.elapsed().as_secs_f64() - 5.0;
    eprintln!(
        "  first pass over after {first_pass_s:.1} s{}",
        if quiet { "" } else { " (timed out)" }
    );
    let mut f = Footprint {
        what: "idle, nothing due".into(),
        n,
        ready_s,
        first_pass_s,
        peak_rss_mib: 0.0,
        idle_rss_start_mib: 0.0,
        idle_rss_end_mib: 0.0,
        idle_rss_max_mib: 0.0,
        idle_anon_mib: 0.0,
        idle_file_mib: 0.0,
        idle_rss_slope_mib_h: 0.0,
        idle_secs: 0.0,
        idle_cpu_pct: 0.0,
        idle_requests: 0,
        scrape_ms: 0.0,
        scrape_kib: 0.0,
        peak_with_scrape_mib: 0.0,
        load,
    };
    watch_idle(&em, pid, idle_secs(), &mut f).await;
    f.peak_rss_mib = proc_status(pid, "VmHWM:");
    (f.scrape_ms, f.scrape_kib) = scrape(&http, port).await;
    f.peak_with_scrape_mib = proc_status(pid, "VmHWM:");
    f.load = format!("{} / {}", f.load, loadavg());
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    em.shutdown();
    f
}

/// The defaults: `n` first rotations with the default concurrency and write quota, the
/// emulator unthrottled (the daemon's pacer sets the rate), then the idle daemon watched.
async fn run_defaults(n: usize, latency: u64) -> Footprint {
    let dir = tempfile::tempdir().expect("tempdir");
    let em = start_emulator(dir.path()).await;
    let tenant = seed_footprint(&em, n, latency, time::Duration::days(10)).await;
    em.world().clear_journal();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let port = free_port();
    let load = loadavg();
    let started = Instant::now();
    let mut child = start_default_daemon(dir.path(), &tenant, port);
    let pid = child.id();
    let ready_s = wait_ready(&http, port, started).await;
    // The default quota (3,000 writes per 150 s) allows 20 rotations a second.
    let deadline = started + Duration::from_secs_f64(n as f64 / 20.0 * 3.0 + 300.0);
    let mut rotated = 0;
    let mut last_report = Instant::now();
    let mut peak_rss: f64 = 0.0;
    while Instant::now() < deadline && rotated < n {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss = peak_rss.max(proc_status(pid, "VmRSS:"));
        rotated = em
            .world()
            .state()
            .vaults
            .values()
            .flat_map(|v| v.secrets.values())
            .filter(|s| {
                s.versions
                    .last()
                    .is_some_and(|v| v.tags.get("rotation-id").is_some_and(|r| r != "seed"))
            })
            .count();
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "  {:.0} s: {rotated}/{n} rotated, RSS {:.1} MiB",
                started.elapsed().as_secs_f64(),
                proc_status(pid, "VmRSS:")
            );
            last_report = Instant::now();
        }
    }
    let first_pass_s = started.elapsed().as_secs_f64();
    let mut f = Footprint {
        what: if rotated == n {
            "defaults: first rotations, then idle".into()
        } else {
            format!("defaults: {rotated}/{n} rotated at the deadline, then idle")
        },
        n,
        ready_s,
        first_pass_s,
        peak_rss_mib: 0.0,
        idle_rss_start_mib: 0.0,
        idle_rss_end_mib: 0.0,
        idle_rss_max_mib: 0.0,
        idle_anon_mib: 0.0,
        idle_file_mib: 0.0,
        idle_rss_slope_mib_h: 0.0,
        idle_secs: 0.0,
        idle_cpu_pct: 0.0,
        idle_requests: 0,
        scrape_ms: 0.0,
        scrape_kib: 0.0,
        peak_with_scrape_mib: 0.0,
        load,
    };
    // The last reconciles finish (verification of the last few rotations).
    let _ = wait_quiet(&em, 0, Instant::now() + Duration::from_secs(120)).await;
    watch_idle(&em, pid, idle_secs(), &mut f).await;
    f.peak_rss_mib = proc_status(pid, "VmHWM:").max(peak_rss);
    (f.scrape_ms, f.scrape_kib) = scrape(&http, port).await;
    f.peak_with_scrape_mib = proc_status(pid, "VmHWM:");
    f.load = format!("{} / {}", f.load, loadavg());
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    em.shutdown();
    f
}

fn footprint_table(rows: &[Footprint], latency: u64) -> String {
    let mut md = format!(
        "Footprint: default settings (schedule every 6 hours), emulator unthrottled, per-call latency {latency} ms, propagation 0.5-2 s, read lag 0.5 s, {VAULTS} vaults.\n\n\
         | run | N | start to ready (s) | first pass (s) | peak RSS (MiB) | idle RSS start / max / end (MiB) | idle RSS anon / file (MiB) | idle RSS slope (MiB/h) | idle watched (s) | idle CPU (% of a core) | requests while idle | /metrics scrape (ms) | scrape size (KiB) | peak RSS with scrapes (MiB) | load average before / after |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for f in rows {
        md.push_str(&format!(
            "| {} | {} | {:.3} | {:.1} | {:.1} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} | {:+.2} | {:.0} | {:.3} | {} | {:.1} | {:.0} | {:.1} | {} |\n",
            f.what,
            f.n,
            f.ready_s,
            f.first_pass_s,
            f.peak_rss_mib,
            f.idle_rss_start_mib,
            f.idle_rss_max_mib,
            f.idle_rss_end_mib,
            f.idle_anon_mib,
            f.idle_file_mib,
            f.idle_rss_slope_mib_h,
            f.idle_secs,
            f.idle_cpu_pct,
            f.idle_requests,
            f.scrape_ms,
            f.scrape_kib,
            f.peak_with_scrape_mib,
            f.load
        ));
    }
    md
}

/// Runs the footprint scenarios the command line asks for (`--idle`, default 10,000 clients,
/// `0` for none; `--defaults`, none by default) and returns their table.
fn footprint(runtime: &tokio::runtime::Runtime, latency: u64) -> Option<String> {
    let list = |name: &str, default: &str| -> Vec<usize> {
        arg(name)
            .unwrap_or_else(|| default.into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .filter(|n| *n > 0)
            .collect()
    };
    let mut rows = Vec::new();
    for n in list("--defaults", "0") {
        eprintln!("== defaults, N = {n}");
        rows.push(runtime.block_on(run_defaults(n, latency)));
        eprintln!("{}", footprint_table(&rows[rows.len() - 1..], latency));
    }
    for n in list("--idle", "10000") {
        eprintln!("== idle, N = {n}, watched {} s", idle_secs());
        rows.push(runtime.block_on(run_idle(n, latency)));
        eprintln!("{}", footprint_table(&rows[rows.len() - 1..], latency));
    }
    (!rows.is_empty()).then(|| footprint_table(&rows, latency))
}

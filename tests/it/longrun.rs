//! The long run: hours of simulated rotations with random faults and kills, then the
//! invariants. Not part of the default test command:
//!
//!   LONG_RUN_SECS=1800 cargo test --test it long_run -- --ignored --nocapture
//!
//! It prints its figures and writes them to target/long-run.json.

use std::time::{Duration, Instant};

use emulator::world::{FaultKind, FaultRule};
use rand::Rng;

use crate::harness::*;
use crate::invariants;

const OPERATIONS: &[Operation] = &[
    Operation::Token,
    Operation::GraphGetApplication,
    Operation::GraphAddPassword,
    Operation::GraphRemovePassword,
    Operation::KeyvaultListVersions,
    Operation::KeyvaultSetSecret,
];

fn random_fault(rng: &mut impl Rng) -> FaultKind {
    match rng.random_range(0..8) {
        0 => FaultKind::Status {
            status: 429,
            code: None,
            retry_after: Some(format!("{:.2}", rng.random_range(0.1..1.5))),
        },
        1 => FaultKind::Status {
            status: 500,
            code: None,
            retry_after: None,
        },
        2 => FaultKind::Status {
            status: 503,
            code: None,
            retry_after: None,
        },
        3 => FaultKind::Delay {
            ms: rng.random_range(100..3_000),
        },
        4 => FaultKind::DropAfter,
        5 => FaultKind::Malformed,
        6 => FaultKind::Truncate,
        _ => FaultKind::Status {
            status: 409,
            code: Some("Directory_ConcurrencyViolation".into()),
            retry_after: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a long soak; run explicitly (see the module docs)"]
async fn long_run() {
    let seconds: u64 = std::env::var("LONG_RUN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut settings = fast();
    settings.propagation_min_ms = 200;
    settings.propagation_max_ms = 1_500;
    settings.read_lag_ms = 300;
    let names = vec![
        ("c1", "AzureADMyOrg"),
        ("c2", "AzureADMyOrg"),
        ("c3", "AzureADMyOrg"),
        ("c4", "AzureADMyOrg"),
        ("c5", "AzureADandPersonalMicrosoftAccount"),
    ];
    let env = Env::new(Setup {
        clients: names,
        settings,
        foreign_password: false,
    })
    .await;
    let text = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace(
            "[azure.credential]",
            "request_timeout = \"2s\"\n\n[azure.credential]",
        )
        .replace("schedule = \"*/2 * * * * *\"", "schedule = \"* * * * * *\"")
        .replace("secret_lifetime = \"1h\"", "secret_lifetime = \"90s\"")
        .replace("renew_before = \"10m\"", "renew_before = \"70s\"")
        .replace("overlap = \"20m\"", "overlap = \"4s\"")
        .replace("verify_timeout = \"30s\"", "verify_timeout = \"15s\"");
    std::fs::write(&env.config_path, text).unwrap();
    let foreign = invariants::foreign_snapshot(&env);
    let mut rng = rand::rng();
    let start = Instant::now();
    let (mut kills, mut terms, mut faults, mut checks, mut i1_failures, mut expired) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut violations: Vec<String> = Vec::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        let mut daemon = env.spawn_daemon(&[]);
        let life = Duration::from_millis(rng.random_range(2_000..12_000));
        let until = Instant::now() + life;
        while Instant::now() < until {
            if rng.random_bool(0.5) {
                let op = OPERATIONS[rng.random_range(0..OPERATIONS.len())];
                env.em.world().add_fault(FaultRule {
                    operation: op,
                    target: None,
                    count: rng.random_range(1..3),
                    kind: random_fault(&mut rng),
                });
                faults += 1;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..1_500))).await;
        }
        if rng.random_bool(0.7) {
            daemon.signal("KILL");
            kills += 1;
        } else {
            daemon.signal("TERM");
            terms += 1;
            assert!(
                daemon.wait_exit(Duration::from_secs(12)).is_some(),
                "exits within its stop timeout after SIGTERM"
            );
        }
        daemon.wait_exit(Duration::from_secs(5));
        drop(daemon);
        // Once every client has published, I1 must hold at every moment, faults or not.
        if env
            .clients
            .iter()
            .all(|c| !env.versions(&c.name).is_empty())
        {
            let v = invariants::i1(&env).await;
            checks += 1;
            // An expiry means a kill cycle outlasted renew_before, not that a secret was lost.
            let (late, lost): (Vec<String>, Vec<String>) =
                v.into_iter().partition(|m| m.ends_with("expired"));
            expired += late.len() as u64;
            if !lost.is_empty() {
                i1_failures += 1;
                violations.extend(lost);
            }
        }
    }
    // Converge without faults, then every invariant.
    env.em.world().clear_faults();
    env.em.world().release_all();
    let mut daemon = env.spawn_daemon(&[]);
    // Secrets rotate every 15 s here, so attempts are always in flight: I2 allows them 20 s.
    let mut last = Vec::new();
    let converge_by = Instant::now() + Duration::from_secs(120);
    while Instant::now() < converge_by {
        last = invariants::i1(&env).await;
        last.extend(invariants::i2(
            &env,
            Duration::from_secs(4),
            Duration::from_secs(4),
            Duration::from_secs(20),
        ));
        last.extend(invariants::i3(&env, &foreign));
        last.extend(invariants::i5(&env));
        if last.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(12));
    let leaks = invariants::i4(&env, &invariants::outputs(&env)).len();
    let journal = env.journal();
    let rotations = journal
        .iter()
        .filter(|e| e.operation == Operation::KeyvaultSetSecret && e.effective)
        .count();
    let faults_hit = journal.iter().filter(|e| e.fault.is_some()).count();
    let removals = journal
        .iter()
        .filter(|e| e.operation == Operation::GraphRemovePassword && e.effective)
        .count();
    let summary = serde_json::json!({
        "seconds": start.elapsed().as_secs(),
        "clients": env.clients.len(),
        "rotations_published": rotations,
        "credentials_removed": removals,
        "sigkills": kills,
        "sigterms": terms,
        "fault_rules_injected": faults,
        "calls_answered_by_a_fault": faults_hit,
        "azure_calls": journal.len(),
        "i1_checks_between_kills": checks,
        "rotations_that_lost_a_secret": i1_failures,
        "secrets_expired_between_kills": expired,
        "secrets_leaked": leaks,
        "violations_after_convergence": last,
    });
    println!("{}", serde_json::to_string_pretty(&summary).unwrap());
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/long-run.json");
    std::fs::write(out, serde_json::to_string_pretty(&summary).unwrap()).unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    assert!(last.is_empty(), "{last:?}");
    assert_eq!(leaks, 0);
}

//! Kill tests: the real daemon, with several clients, is killed (SIGKILL, or stopped with
//! SIGTERM) at each step boundary of the protocol, reached through the emulator's holds rather
//! than sleeps; then it is restarted, and once it has converged every invariant must hold.

use std::time::{Duration, Instant};

use emulator::world::{FaultKind, FaultRule};

use crate::harness::*;
use crate::invariants;

const OVERLAP: Duration = Duration::from_secs(3);

async fn three_clients() -> Env {
    let mut settings = fast();
    // A little replication delay and read lag keep the restart honest.
    settings.propagation_max_ms = 800;
    settings.read_lag_ms = 300;
    let env = Env::new(Setup {
        clients: vec![
            ("app-one", "AzureADMyOrg"),
            ("app-two", "AzureADMyOrg"),
            ("app-three", "AzureADMyOrg"),
        ],
        settings,
        ..Setup::default()
    })
    .await;
    let text = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace("schedule = \"*/2 * * * * *\"", "schedule = \"* * * * * *\"")
        .replace("overlap = \"20m\"", "overlap = \"3s\"");
    std::fs::write(&env.config_path, text).unwrap();
    env
}

/// Where to stop the daemon: the operation and whether before or after it took effect.
#[derive(Clone, Copy, Debug)]
enum Point {
    BeforeAdd,
    AfterAdd,
    WhileVerifying,
    BeforePublish,
    AfterPublish,
    BeforeRetire,
    AfterRetire,
}

async fn kill_at(point: Point, signal: &str) {
    let env = three_clients().await;
    let foreign = invariants::foreign_snapshot(&env);
    let victim = env.client("app-two");
    let (operation, target, hold) = match point {
        Point::BeforeAdd => (
            Operation::GraphAddPassword,
            victim.object_id.clone(),
            FaultKind::HoldBefore,
        ),
        Point::AfterAdd => (
            Operation::GraphAddPassword,
            victim.object_id.clone(),
            FaultKind::HoldAfter,
        ),
        Point::WhileVerifying => (
            Operation::Token,
            victim.object_id.clone(),
            FaultKind::HoldBefore,
        ),
        Point::BeforePublish => (
            Operation::KeyvaultSetSecret,
            "kv-test/app-two-secret".into(),
            FaultKind::HoldBefore,
        ),
        Point::AfterPublish => (
            Operation::KeyvaultSetSecret,
            "kv-test/app-two-secret".into(),
            FaultKind::HoldAfter,
        ),
        Point::BeforeRetire => (
            Operation::GraphRemovePassword,
            victim.object_id.clone(),
            FaultKind::HoldBefore,
        ),
        Point::AfterRetire => (
            Operation::GraphRemovePassword,
            victim.object_id.clone(),
            FaultKind::HoldAfter,
        ),
    };
    if matches!(point, Point::BeforeRetire | Point::AfterRetire) {
        // Something to retire: a published secret and a successor older than overlap.
        assert!(env.rotate("app-two", &[]).await.status.success());
        assert!(env.rotate("app-two", &["--force"]).await.status.success());
        tokio::time::sleep(OVERLAP + Duration::from_millis(500)).await;
    }
    env.em.world().add_fault(FaultRule {
        operation,
        target: Some(target),
        count: 1,
        kind: hold,
    });

    let mut daemon = env.spawn_daemon(&[]);
    let held = eventually(Duration::from_secs(30), || {
        !env.em.world().held_calls().is_empty()
    })
    .await;
    assert!(
        held,
        "{point:?}: the daemon reached the hold: {}",
        daemon.stderr()
    );
    let call = env.em.world().held_calls()[0].clone();
    assert_eq!(
        call.operation, operation,
        "{point:?}: the journal's boundary"
    );
    let sent = Instant::now();
    daemon.signal(signal);
    if signal == "TERM" {
        // The held call never answers: a publish in flight is given its grace, then dropped.
        let status = daemon.wait_exit(Duration::from_secs(12));
        assert!(
            status.is_some(),
            "{point:?}: exits within its stop timeout after SIGTERM"
        );
        assert!(
            sent.elapsed() <= Duration::from_secs(11),
            "{point:?}: took {:?}",
            sent.elapsed()
        );
    } else {
        daemon
            .wait_exit(Duration::from_secs(5))
            .expect("SIGKILL ends it");
    }
    // The request that was in flight when the process died goes on (or not) as Azure's would.
    env.em.world().release_all();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stderr_before = daemon.stderr();
    drop(daemon);
    if matches!(point, Point::BeforePublish) {
        // An attempt that reached the publishing step is removed only after the orphan age
        // (its write may still land), and one made before the secret's history began only
        // overlap after the first publish: let that time pass.
        for (key, name) in env.passwords("app-two") {
            if name.is_some_and(|n| n.starts_with("secret-rotator:")) {
                env.age_credential("app-two", &key, time::Duration::minutes(11));
            }
        }
    }

    let mut daemon = env.spawn_daemon(&[]);
    let converged = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = invariants::all(
                &env,
                &foreign,
                OVERLAP,
                Duration::from_secs(3),
                Duration::ZERO,
            )
            .await;
            if v.is_empty() {
                return v;
            }
            if Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let violations = converged.await;
    assert!(
        violations.is_empty(),
        "{point:?}/{signal}: after restart: {violations:?}\nfirst run:\n{stderr_before}\nsecond run:\n{}",
        daemon.stderr()
    );
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(12)).expect("stops");
    let leaks = invariants::i4(&env, &invariants::outputs(&env));
    assert!(leaks.is_empty(), "{leaks:?}");
}

macro_rules! kill_tests {
    ($($name:ident: $point:expr, $signal:expr;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                kill_at($point, $signal).await;
            }
        )*
    };
}

kill_tests! {
    sigkill_before_add_password_takes_effect: Point::BeforeAdd, "KILL";
    sigkill_after_add_password_took_effect: Point::AfterAdd, "KILL";
    sigkill_while_verifying: Point::WhileVerifying, "KILL";
    sigkill_before_the_key_vault_write: Point::BeforePublish, "KILL";
    sigkill_after_the_key_vault_write: Point::AfterPublish, "KILL";
    sigkill_before_retiring: Point::BeforeRetire, "KILL";
    sigkill_after_retiring: Point::AfterRetire, "KILL";
    sigterm_before_add_password_takes_effect: Point::BeforeAdd, "TERM";
    sigterm_after_add_password_took_effect: Point::AfterAdd, "TERM";
    sigterm_while_verifying: Point::WhileVerifying, "TERM";
    sigterm_before_the_key_vault_write: Point::BeforePublish, "TERM";
    sigterm_after_the_key_vault_write: Point::AfterPublish, "TERM";
    sigterm_before_retiring: Point::BeforeRetire, "TERM";
    sigterm_after_retiring: Point::AfterRetire, "TERM";
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_of_continuous_rotation() {
    let env = three_clients().await;
    // Secrets that are always due: every reconcile rotates.
    let text = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace("secret_lifetime = \"1h\"", "secret_lifetime = \"20s\"")
        .replace("renew_before = \"10m\"", "renew_before = \"16s\"")
        .replace("overlap = \"3s\"", "overlap = \"2s\"");
    std::fs::write(&env.config_path, text).unwrap();
    let foreign = invariants::foreign_snapshot(&env);
    for round in 0..6u64 {
        let mut daemon = env.spawn_daemon(&[]);
        // Pseudo-random moments in 0.3 s .. 2.5 s, different every round.
        let wait = 300 + (round * 7919 + u64::from(std::process::id())) % 2200;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        daemon.signal("KILL");
        daemon.wait_exit(Duration::from_secs(5)).expect("killed");
    }
    let mut daemon = env.spawn_daemon(&[]);
    let mut violations = Vec::new();
    for _ in 0..60 {
        violations = invariants::all(
            &env,
            &foreign,
            Duration::from_secs(2),
            Duration::from_secs(3),
            Duration::ZERO,
        )
        .await;
        // Constant rotation keeps attempts in flight; judge I2 with their grace.
        violations.retain(|v| !v.contains("never published"));
        if violations.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(violations.is_empty(), "{violations:?}\n{}", daemon.stderr());
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(12)).expect("stops");
    let leftovers = invariants::i2(
        &env,
        Duration::from_secs(2),
        Duration::from_secs(20),
        Duration::from_secs(30),
    );
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

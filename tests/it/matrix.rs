//! The fault matrix: every Azure operation the daemon calls, crossed with the ways Azure fails.
//! Each cell has an expected outcome, and the invariants must hold after it. The observed
//! table is written to `target/fault-matrix/<operation>.md` (docs/reliability.md lists it).

use std::time::Duration;

use emulator::world::{FaultKind, FaultRule};

use crate::harness::*;
use crate::invariants;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Retried within the run; exit 0 and a valid published secret.
    Recovered,
    /// The run fails with a clear error; the next run (no fault) converges.
    NextRun,
    /// A clear per-client error naming this; no retry storm; nothing left behind.
    Fails(&'static str),
    /// Exit 0 with a warning; the credential it could not remove goes on the next run.
    Warns,
    /// Does not apply to this operation.
    NotApplicable,
}

const FAULTS: [&str; 10] = [
    "429 + Retry-After",
    "500",
    "503",
    "timeout",
    "reset after effect",
    "malformed body",
    "truncated body",
    "401",
    "403",
    "lagging read",
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    SignIn,
    Verify,
    GetApplication,
    AddPassword,
    RemovePassword,
    ListVersions,
    SetSecret,
    GetSecret,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::SignIn => "token (the daemon's sign-in)",
            Op::Verify => "token (verifying a new secret)",
            Op::GetApplication => Operation::GraphGetApplication.as_str(),
            Op::AddPassword => Operation::GraphAddPassword.as_str(),
            Op::RemovePassword => Operation::GraphRemovePassword.as_str(),
            Op::ListVersions => Operation::KeyvaultListVersions.as_str(),
            Op::SetSecret => Operation::KeyvaultSetSecret.as_str(),
            Op::GetSecret => {
                "keyvault.get_secret (the latest version; a probe of the published value)"
            }
        }
    }
    fn operation(self) -> Operation {
        match self {
            Op::SignIn | Op::Verify => Operation::Token,
            Op::GetApplication => Operation::GraphGetApplication,
            Op::AddPassword => Operation::GraphAddPassword,
            Op::RemovePassword => Operation::GraphRemovePassword,
            Op::ListVersions => Operation::KeyvaultListVersions,
            Op::SetSecret => Operation::KeyvaultSetSecret,
            Op::GetSecret => Operation::KeyvaultGetSecret,
        }
    }
    fn expect(self, fault: &str) -> Expect {
        use Expect::*;
        match (self, fault) {
            (_, "lagging read") if !matches!(self, Op::GetApplication) => NotApplicable,
            (Op::SignIn | Op::Verify, "403") => NotApplicable,
            (Op::SignIn, "401") => Fails("AADSTS7000215"),
            (Op::GetApplication | Op::AddPassword, "403") => Fails("Authorization_RequestDenied"),
            (Op::ListVersions | Op::SetSecret | Op::GetSecret, "403") => Fails("Forbidden"),
            (Op::RemovePassword, "403") => Warns,
            (
                Op::AddPassword,
                "500" | "503" | "timeout" | "reset after effect" | "malformed body"
                | "truncated body",
            ) => NextRun,
            _ => Recovered,
        }
    }
}

fn fault_kind(fault: &str) -> FaultKind {
    let status = |s: u16| FaultKind::Status {
        status: s,
        code: None,
        retry_after: None,
    };
    match fault {
        "429 + Retry-After" => FaultKind::Status {
            status: 429,
            code: None,
            retry_after: Some("1.5".into()),
        },
        "500" => status(500),
        "503" => status(503),
        "timeout" => FaultKind::Delay { ms: 3_000 },
        "reset after effect" => FaultKind::DropAfter,
        "malformed body" => FaultKind::Malformed,
        "truncated body" => FaultKind::Truncate,
        "401" => status(401),
        "403" => status(403),
        _ => unreachable!("{fault}"),
    }
}

/// Runs one cell; returns what was observed.
async fn cell(op: Op, fault: &str) -> String {
    let expect = op.expect(fault);
    let env = Env::new(Setup::default()).await;
    // A short request timeout, so that the "timeout" fault (a 3 s stall) is one.
    let text = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace(
            "[azure.credential]",
            "request_timeout = \"2s\"\n\n[azure.credential]",
        )
        .replace("overlap = \"20m\"", "overlap = \"2s\"");
    std::fs::write(&env.config_path, text).unwrap();
    let foreign = invariants::foreign_snapshot(&env);
    let client = env.client("app-one");
    let mut args: Vec<&str> = vec![];
    match op {
        Op::RemovePassword => {
            assert!(env.rotate("app-one", &[]).await.status.success());
            assert!(env.rotate("app-one", &["--force"]).await.status.success());
            // Overlap, plus the two seconds removals wait for Azure's whole seconds.
            tokio::time::sleep(Duration::from_millis(4_500)).await;
        }
        Op::GetSecret => {
            assert!(env.rotate("app-one", &[]).await.status.success());
            // Reads now lag by minutes: the published key id is missing from the list, so the
            // daemon reads the published value to check that it still signs in.
            let mut s = env.em.world().state().settings.clone();
            s.read_lag_ms = 600_000;
            env.em.world().state_mut().settings = s;
        }
        _ => args.push("--force"),
    }
    if op == Op::GetSecret {
        args.clear();
    }
    let adds_before = env
        .all_writes()
        .iter()
        .filter(|w| w.0 == Operation::GraphAddPassword)
        .count();
    if fault == "lagging read" {
        let mut s = env.em.world().state().settings.clone();
        s.read_lag_ms = 3_000;
        env.em.world().state_mut().settings = s;
    } else {
        let target = match op {
            Op::SignIn => env.app_object_id(&env.daemon_app_id),
            Op::ListVersions | Op::SetSecret | Op::GetSecret => {
                "kv-test/app-one-secret".to_string()
            }
            _ => client.object_id.clone(),
        };
        env.em.world().add_fault(FaultRule {
            operation: op.operation(),
            target: Some(target),
            count: 1,
            kind: fault_kind(fault),
        });
    }
    let first = env.rotate("app-one", &args).await;
    let mut observed = if first.status.success() {
        if stdout(&first).contains("warning:") {
            "exit 0 with a warning".to_string()
        } else {
            "recovered in the same run".to_string()
        }
    } else {
        // Logs go to stderr too; the reason is the last line, and one line.
        assert!(
            stderr(&first)
                .trim_end()
                .lines()
                .last()
                .is_some_and(|l| l.starts_with("secret-rotator: ")),
            "{}/{fault}: a one-line reason last: {}",
            op.name(),
            stderr(&first)
        );
        let line = stderr(&first)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        format!("failed: {}", line.trim_start_matches("secret-rotator: "))
    };
    let hit = env.em.world().faults().is_empty();
    assert!(hit, "{}/{fault}: the fault was never hit", op.name());
    env.em.world().clear_faults();
    match expect {
        Expect::Recovered => {
            assert!(
                first.status.success(),
                "{}/{fault}: expected recovery: {}",
                op.name(),
                stderr(&first)
            );
            assert!(
                !stdout(&first).contains("warning:"),
                "{}/{fault}: {}",
                op.name(),
                stdout(&first)
            );
        }
        Expect::Warns => {
            assert!(
                first.status.success() && stdout(&first).contains("warning:"),
                "{}/{fault}: {}{}",
                op.name(),
                stdout(&first),
                stderr(&first)
            );
        }
        Expect::Fails(text) => {
            assert!(
                !first.status.success(),
                "{}/{fault}: expected a clear failure",
                op.name()
            );
            assert!(
                stderr(&first).contains(text),
                "{}/{fault}: expected '{text}' in: {}",
                op.name(),
                stderr(&first)
            );
            let adds = env
                .all_writes()
                .iter()
                .filter(|w| w.0 == Operation::GraphAddPassword)
                .count()
                - adds_before;
            assert!(
                adds <= 1,
                "{}/{fault}: no retry storm: {adds} addPassword calls",
                op.name()
            );
        }
        Expect::NextRun => {
            assert!(
                !first.status.success(),
                "{}/{fault}: expected the attempt to fail",
                op.name()
            );
        }
        Expect::NotApplicable => unreachable!(),
    }
    // Whatever the outcome, a run without the fault converges.
    let settle = env.rotate("app-one", &[]).await;
    if !matches!(expect, Expect::Fails(_)) {
        assert!(
            settle.status.success(),
            "{}/{fault}: the next run converges: {}",
            op.name(),
            stderr(&settle)
        );
        if expect == Expect::NextRun {
            observed.push_str("; the next run converged");
        }
        let mut v = invariants::i1(&env).await;
        v.extend(invariants::i2(
            &env,
            Duration::from_secs(2),
            Duration::from_secs(600),
            Duration::ZERO,
        ));
        assert!(v.is_empty(), "{}/{fault}: {v:?}", op.name());
    } else {
        let v = invariants::i2(
            &env,
            Duration::from_secs(2),
            Duration::from_secs(600),
            Duration::ZERO,
        );
        assert!(
            v.is_empty(),
            "{}/{fault}: nothing left behind: {v:?}",
            op.name()
        );
    }
    if op == Op::GetSecret || fault == "lagging read" {
        let adds = env
            .all_writes()
            .iter()
            .filter(|w| w.0 == Operation::GraphAddPassword)
            .count()
            - adds_before;
        let expected_adds = if op == Op::GetSecret { 0 } else { 1 };
        assert_eq!(
            adds,
            expected_adds,
            "{}/{fault}: a lagging read must not cause another rotation",
            op.name()
        );
    }
    let mut v = invariants::i3(&env, &foreign);
    v.extend(invariants::i4(&env, &invariants::outputs(&env)));
    v.extend(invariants::i5(&env));
    assert!(v.is_empty(), "{}/{fault}: {v:?}", op.name());
    observed
}

async fn row(op: Op) {
    let mut table = String::new();
    for fault in FAULTS {
        let expect = op.expect(fault);
        let observed = if expect == Expect::NotApplicable {
            "n/a".to_string()
        } else {
            cell(op, fault).await
        };
        let expected = match expect {
            Expect::Recovered if op == Op::GetSecret => {
                "retried, or the probe is inconclusive; no second rotation".to_string()
            }
            Expect::Recovered => "retried; succeeds".to_string(),
            Expect::NextRun => "fails clearly; next run converges".to_string(),
            Expect::Fails(t) => format!("clear error ({t}), backoff, no retry storm"),
            Expect::Warns => "succeeds with a warning; removed next run".to_string(),
            Expect::NotApplicable => "n/a".to_string(),
        };
        table.push_str(&format!(
            "| {} | {fault} | {expected} | {} |\n",
            op.name(),
            observed.replace('|', "/")
        ));
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fault-matrix");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!(
            "{}.md",
            op.operation().as_str().replace('.', "_")
                + if matches!(op, Op::Verify) {
                    "_verify"
                } else {
                    ""
                }
        )),
        table,
    )
    .unwrap();
}

macro_rules! rows {
    ($($name:ident: $op:expr;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                row($op).await;
            }
        )*
    };
}

rows! {
    fault_matrix_sign_in: Op::SignIn;
    fault_matrix_verify: Op::Verify;
    fault_matrix_get_application: Op::GetApplication;
    fault_matrix_add_password: Op::AddPassword;
    fault_matrix_remove_password: Op::RemovePassword;
    fault_matrix_list_versions: Op::ListVersions;
    fault_matrix_set_secret: Op::SetSecret;
    fault_matrix_get_secret: Op::GetSecret;
}

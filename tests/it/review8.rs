//! The eighth cold review, of a reconcile's store reads grouped in one read transaction at the
//! start of the observation (`Store::records`) and of the writes it skips when they would change
//! nothing (the location; the status row when only its time would change), against the
//! emulator: what the skipped status row's time still decides, and a store that cannot be read.

use std::time::Duration;

use crate::harness::*;
use crate::review7::{recorded, restored_and_seen, two_rotations};

/// Runs `sql` on the state store, as a person (or a step of the daemon's clock) would.
fn sqlite(env: &Env, sql: &str) {
    let db = env.dir.path().join("state").join("state.db");
    let st = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(sql)
        .status()
        .unwrap();
    assert!(st.success(), "{sql}");
}

/// `by` passes for everything the store and Azure dated, the status row's time and the history
/// included (`review2::time_passes` leaves those as they were).
pub(crate) fn all_time_passes(env: &Env, by: time::Duration) {
    crate::review2::time_passes(env, "app-one", by);
    sqlite(
        env,
        &format!(
            "UPDATE clients SET updated_at = updated_at - {0}; UPDATE history SET at = at - {0};",
            by.whole_seconds()
        ),
    );
}

/// Attack on the skipped status row: a record of a first unnamed read (k2's version discarded
/// by a restore) is stale once a status row written after it names k2 as published (the version
/// came back), so that a second discard counts from its own read. With the daemon's clock 10
/// minutes behind Azure's, the record is on Azure's clock, and the reconcile that sees the
/// version back (k2 alone on the application, so the records are not read to forget it) writes
/// a row older than the record. Only a later reconcile, with nothing else changed, makes the
/// record stale by writing the row again: were that write skipped as unchanged, the second
/// discard, 50 minutes later, would count from the first and remove k2 at once (overlap is 20
/// minutes). The row is rewritten while the store holds a record (`record::Seen::may_keep_row`),
/// so k2 stays.
#[tokio::test(flavor = "multi_thread")]
async fn review8_a_status_row_unchanged_but_for_its_time_is_written_while_a_record_may_go_stale() {
    let env = Env::new(Setup::default()).await;
    let (k1, k2) = two_rotations(&env).await;
    crate::review2::time_passes(&env, "app-one", time::Duration::hours(1));
    // Azure 10 minutes ahead of the daemon from here on.
    env.em.world().state_mut().settings.clock_offset_ms = 600_000;
    let v2 = env
        .edit_versions("app-one", |versions| versions.pop())
        .expect("the second version");
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(recorded(&env, &k2), "the first unnamed read is recorded");
    // The version back, and k1 (superseded again) removed by a person: k2 alone.
    env.edit_versions("app-one", |versions| versions.push(v2.clone()));
    env.edit_app("app-one", |app| app.passwords.retain(|p| p.key_id != k1));
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(recorded(&env, &k2), "not read, so not forgotten");
    // Later, a reconcile with nothing to do: only the status row's time would change.
    all_time_passes(&env, time::Duration::minutes(50));
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    // The second discard.
    env.edit_versions("app-one", |versions| versions.pop());
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        env.live("app-one", &k2),
        "removed at once after the second discard, counted from the first: {:?}\n{}",
        env.writes(),
        stderr(&out)
    );
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    // A new secret for the one the restored version names (k1, removed): published and live.
    // (`assert_published_valid` compares `exp` with the credential's end in one clock's frame.)
    let k3 = env.published_key("app-one");
    assert!(k3 != k1 && k3 != k2 && env.live("app-one", &k3));
    env.assert_foreign_untouched("app-one");
}

/// Attack on the grouped read: a store that answers but cannot give the reconcile its records
/// (here the table of first unnamed reads is gone; a damaged file does the same). Read as "no
/// record", k2 (published in a version a restore discarded, an hour old) would be taken for an
/// orphan and removed at once. The observation fails instead: nothing is written to Azure, the
/// `rotate` command says why, and k2 stays.
#[tokio::test(flavor = "multi_thread")]
async fn review8_a_store_that_cannot_be_read_removes_nothing() {
    let env = Env::new(Setup::default()).await;
    let (k1, k2, _) = restored_and_seen(&env).await;
    crate::review2::time_passes(&env, "app-one", time::Duration::minutes(5));
    sqlite(&env, "DROP TABLE unpublished;");
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(
        env.live("app-one", &k2),
        "{:?}\n{}",
        env.writes(),
        stderr(&out)
    );
    assert!(env.writes().is_empty(), "{:?}", env.writes());
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("unpublished"), "{}", stderr(&out));
    assert!(env.live("app-one", &k1));
}

/// What the known publishes are made of, end to end: a restore that discards the last two
/// versions (k2's and k3's) brings back k1's. The status row names only k3; k2 is known to have
/// been published from the history's `rotated` row alone, now read with the rest of the
/// reconcile's records and matched in memory (`Records::known_published`). Both are held (an
/// hour old, named by no version: without the record, orphans to remove at once) and recorded.
#[tokio::test(flavor = "multi_thread")]
async fn review8_a_credential_known_published_from_the_history_alone_is_held_after_a_restore() {
    let env = Env::new(Setup::default()).await;
    let (k1, k2) = two_rotations(&env).await;
    let out = env.rotate("app-one", &["--force"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let k3 = env.published_key("app-one");
    crate::review2::time_passes(&env, "app-one", time::Duration::hours(1));
    env.edit_versions("app-one", |versions| versions.truncate(1));
    assert_eq!(env.published_key("app-one"), k1);
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        env.removals().is_empty(),
        "{:?}\n{}",
        env.writes(),
        stderr(&out)
    );
    for k in [&k2, &k3] {
        assert!(env.live("app-one", k), "{k}");
        assert!(recorded(&env, k), "{k}: the first unnamed read is recorded");
    }
    env.assert_foreign_untouched("app-one");
}

/// What a running daemon reads is what the store holds at each reconcile, not what it read
/// before: the CLI publishes k2 (`rotate --force`, under the same lock) while the daemon runs
/// and reconciles every two seconds, then a restore discards k2's version an hour later. The
/// daemon's next reconciles hold k2 (known from the CLI's rows) and record the read; a cache
/// of the rows across reconciles (rejected in docs/decisions.md) would take it for an orphan
/// and remove it at once.
#[tokio::test(flavor = "multi_thread")]
async fn review8_a_running_daemon_knows_what_the_cli_published_meanwhile() {
    let env = Env::new(Setup::default()).await;
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let k1 = env.published_key("app-one");
    let mut daemon = env.spawn_daemon(&[]);
    let reconciled = |env: &Env| {
        env.journal()
            .iter()
            .filter(|e| e.operation == Operation::GraphGetApplication)
            .count()
    };
    let before = reconciled(&env);
    assert!(
        eventually(Duration::from_secs(30), || reconciled(&env) >= before + 2).await,
        "{}",
        daemon.stderr()
    );
    let out = env.rotate("app-one", &["--force"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let k2 = env.published_key("app-one");
    assert_ne!(k1, k2);
    crate::review2::time_passes(&env, "app-one", time::Duration::hours(1));
    env.edit_versions("app-one", |versions| versions.pop());
    env.em.world().clear_journal();
    let seen = eventually(Duration::from_secs(30), || recorded(&env, &k2)).await;
    // A few more of its reconciles.
    tokio::time::sleep(Duration::from_secs(5)).await;
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(20));
    assert!(seen, "{}", daemon.stderr());
    assert!(
        env.live("app-one", &k2),
        "{:?}\n{}",
        env.writes(),
        daemon.stderr()
    );
    assert!(!env.removals().contains(&k2));
    env.assert_foreign_untouched("app-one");
}

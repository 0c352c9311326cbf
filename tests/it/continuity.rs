//! The record's continuity, against the emulator: the hold of a credential published in a
//! version a restore of the vault secret discarded counts from the first read that showed it
//! named by no version only while every read after it came within the client's schedule of the
//! last one that did (`unpublished.last_seen_at`, `schedule::tolerated_gap`); a read after a
//! longer gap (the daemon down, under HA another replica leading, a state dir restored from a
//! backup) counts it from itself. docs/reliability.md, "A seventh cold review", has the flaw
//! this fixes; review7's `review7_a_second_discard_unseen_between_reads_does_not_count_from_the_first`
//! pins it.

use crate::harness::*;
use crate::review2::time_passes;
use crate::review7::{recorded, restored_and_seen};

/// The store's record of `key_id`'s unnamed reads: (first, last) in unix seconds.
pub(crate) fn record_of(env: &Env, key_id: &str) -> Option<(i64, i64)> {
    let out = std::process::Command::new("sqlite3")
        .arg(state_db(env))
        .arg(format!(
            "SELECT seen_at, last_seen_at FROM unpublished WHERE key_id = '{key_id}';"
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (first, last) = text.trim().split_once('|')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// Runs `sql` on the state file at `db` ([`state_db`] for the test's store).
pub(crate) fn sqlite(db: &std::path::Path, sql: &str) {
    let st = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .status()
        .unwrap();
    assert!(st.success(), "{sql}");
}

/// The test's state store.
pub(crate) fn state_db(env: &Env) -> std::path::PathBuf {
    env.dir.path().join("state").join("state.db")
}

/// A one-shot reconcile that succeeds; returns what it printed.
pub(crate) async fn reconcile(env: &Env) -> String {
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    format!("{}{}", stdout(&out), stderr(&out))
}

/// Reconciles within the schedule (every 15 minutes, reconciled every 10) keep the record
/// continuous: each moves its last read and not its first, and k2 goes `overlap` (40 minutes
/// here) after the first unnamed read, not later: a regularly reconciled client is not held
/// forever. (Were the last read not recorded, the gap from the first would pass the schedule's
/// tolerance, at most 35.5 minutes, by the reconcile after overlap, and the hold would count
/// again from there.)
#[tokio::test(flavor = "multi_thread")]
async fn continuity_regular_reconciles_within_the_schedule_still_remove_the_credential_after_overlap()
 {
    let env = Env::new(Setup::default()).await;
    env.edit_config(EVERY_2_S, EVERY_15_MIN);
    env.edit_config("overlap = \"20m\"", "overlap = \"40m\"");
    let (k1, k2, _) = restored_and_seen(&env).await;
    let (first, _) = record_of(&env, &k2).expect("the first unnamed read");
    for step in 1..=3 {
        time_passes(&env, "app-one", time::Duration::minutes(10));
        env.em.world().clear_journal();
        let said = reconcile(&env).await;
        assert!(
            env.live("app-one", &k2),
            "removed {} minutes after the first unnamed read: {:?}\n{said}",
            step * 10,
            env.writes()
        );
        let (now_first, last) = record_of(&env, &k2).expect("still recorded");
        assert_eq!(
            now_first,
            first - step * 600,
            "the first read stays (moved only by the time that passed)"
        );
        assert!(
            last > now_first + step * 600 - 5,
            "the last read is this one"
        );
    }
    // 45 minutes after the first unnamed read: past overlap.
    time_passes(&env, "app-one", time::Duration::minutes(15));
    env.em.world().clear_journal();
    let said = reconcile(&env).await;
    assert_eq!(env.removals(), vec![k2.clone()], "{said}");
    assert!(!recorded(&env, &k2));
    assert!(env.live("app-one", &k1));
    env.assert_foreign_untouched("app-one");
}

/// The daemon down for 50 minutes (every 15 minutes, the schedule tolerates about 20 to 35):
/// no read looked meanwhile, so the version may have come back and been discarded again, with
/// consumers reading k2 until then. The read after the gap counts the hold from itself, though
/// overlap (20 minutes) after the first unnamed read has passed; k2 stays overlap after that
/// read (with reconciles within the schedule after it), then goes. Without the continuity it
/// was removed at the read after the gap.
#[tokio::test(flavor = "multi_thread")]
async fn continuity_a_gap_longer_than_the_schedule_allows_counts_the_hold_from_the_read_after_it() {
    let env = Env::new(Setup::default()).await;
    env.edit_config(EVERY_2_S, EVERY_15_MIN);
    let (k1, k2, _) = restored_and_seen(&env).await;
    time_passes(&env, "app-one", time::Duration::minutes(10));
    reconcile(&env).await;
    assert!(env.live("app-one", &k2));
    // The daemon down.
    time_passes(&env, "app-one", time::Duration::minutes(50));
    env.em.world().clear_journal();
    let said = reconcile(&env).await;
    assert!(
        env.live("app-one", &k2),
        "removed at the read after the gap: {:?}\n{said}",
        env.writes()
    );
    assert!(said.contains("counted from now"), "{said}");
    let (first, last) = record_of(&env, &k2).expect("recorded");
    assert_eq!(first, last, "first seen again at this read");
    // Reconciles within the schedule: 18 minutes after the read after the gap, kept...
    for minutes in [10, 8] {
        time_passes(&env, "app-one", time::Duration::minutes(minutes));
        env.em.world().clear_journal();
        let said = reconcile(&env).await;
        assert!(env.live("app-one", &k2), "{:?}\n{said}", env.writes());
    }
    // ...23 minutes after it, past overlap: removed.
    time_passes(&env, "app-one", time::Duration::minutes(5));
    env.em.world().clear_journal();
    let said = reconcile(&env).await;
    assert_eq!(env.removals(), vec![k2.clone()], "{said}");
    assert!(env.live("app-one", &k1));
    env.assert_foreign_untouched("app-one");
}

/// A state dir restored from a backup (or an HA replica's store, which did not see what the
/// leader saw meanwhile) holds an old record: k2's first unnamed read, from before its version
/// came back. The live store had forgotten it (a reconcile saw k2 named again); the backup
/// brings it back, 30 minutes old, and the version is discarded again. Counted from the old
/// record, k2 was removed at once, though consumers read it until this discard; the old
/// record's last read is longer ago than the schedule (every 2 seconds) allows, so the hold
/// counts from this read.
#[tokio::test(flavor = "multi_thread")]
async fn continuity_a_state_dir_restored_with_an_old_record_counts_the_hold_from_the_next_read() {
    let env = Env::new(Setup::default()).await;
    let (k1, k2, v2) = restored_and_seen(&env).await;
    let db = state_db(&env);
    let backup = env.dir.path().join("state-backup.db");
    sqlite(&db, &format!(".backup '{}'", backup.display()));
    // The version comes back, and a reconcile sees k2 named again: the record is forgotten.
    env.edit_versions("app-one", |versions| versions.push(v2.clone()));
    reconcile(&env).await;
    assert!(!recorded(&env, &k2), "forgotten once named again");
    // Half an hour later the state dir is restored from the backup (its times are as old as
    // the live store's were), and the version is discarded again.
    time_passes(&env, "app-one", time::Duration::minutes(30));
    sqlite(&db, &format!(".restore '{}'", backup.display()));
    sqlite(
        &db,
        "UPDATE locations SET seen_at = seen_at - 1800; UPDATE unpublished SET seen_at = seen_at - 1800, last_seen_at = last_seen_at - 1800;",
    );
    let (old, _) = record_of(&env, &k2).expect("the backup's record");
    env.edit_versions("app-one", |versions| versions.pop());
    env.em.world().clear_journal();
    let said = reconcile(&env).await;
    assert!(
        env.live("app-one", &k2),
        "removed at once, counted from the backup's record: {:?}\n{said}",
        env.writes()
    );
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    let (first, last) = record_of(&env, &k2).expect("recorded");
    assert!(first >= old + 1800 && first == last, "{old} {first} {last}");
    // k1, superseded again by k2's version for over overlap, went while it was back; the
    // restored latest names it, so a new secret is published.
    assert!(!env.live("app-one", &k1));
    let k3 = env.published_key("app-one");
    assert!(k3 != k2 && env.live("app-one", &k3), "{said}");
    env.assert_foreign_untouched("app-one");
}

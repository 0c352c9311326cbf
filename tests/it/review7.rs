//! The seventh cold review, of the hold of a credential published in a version that a restore
//! of the vault secret discarded (kept `overlap` after the first read that showed it named by
//! no version: `unpublished.seen_at`), against the emulator: moves, clocks and what happens
//! between two reads.

use emulator::model::SecretVersion;

use crate::harness::*;

/// The key id the latest version of the secret `name` names.
fn published_key_at(env: &Env, name: &str) -> String {
    env.em.world().state().vaults["kv-test"].secrets[name]
        .versions
        .last()
        .expect("a version")
        .tags["key-id"]
        .clone()
}

/// Two rotations: the first credential is superseded by the second. Returns both key ids.
pub(crate) async fn two_rotations(env: &Env) -> (String, String) {
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let k1 = env.published_key("app-one");
    let out = env.rotate("app-one", &["--force"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let k2 = env.published_key("app-one");
    assert_ne!(k1, k2);
    (k1, k2)
}

/// Moves the store's records of the first unnamed read `by` into the past (and nothing else):
/// what a step of the daemon's clock does to the times it wrote before the step.
fn unpublished_seen(env: &Env, by: time::Duration) {
    let db = env.dir.path().join("state").join("state.db");
    let st = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(format!(
            "UPDATE unpublished SET seen_at = seen_at - {0}, last_seen_at = last_seen_at - {0};",
            by.whole_seconds()
        ))
        .status()
        .unwrap();
    assert!(st.success());
}

/// Whether the store holds a record of a first unnamed read of `key_id`.
pub(crate) fn recorded(env: &Env, key_id: &str) -> bool {
    let db = env.dir.path().join("state").join("state.db");
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(format!(
            "SELECT count(*) FROM unpublished WHERE key_id = '{key_id}';"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "1"
}

/// The restore of review6: the version that published k2 an hour ago is discarded, so that
/// the latest version names k1 again; the daemon reads that and records it. Returns both key
/// ids and the discarded version.
pub(crate) async fn restored_and_seen(env: &Env) -> (String, String, SecretVersion) {
    let (k1, k2) = two_rotations(env).await;
    crate::review2::time_passes(env, "app-one", time::Duration::hours(1));
    let v2 = env
        .edit_versions("app-one", |versions| versions.pop())
        .expect("the second version");
    assert_eq!(env.published_key("app-one"), k1);
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.live("app-one", &k2), "{:?}", env.writes());
    assert!(recorded(env, &k2), "the first unnamed read is recorded");
    (k1, k2, v2)
}

/// Attack: the client moves (its `secret_name` changes) right after a restore of its old
/// secret discarded the version that published k2. At the new location k2 is not the hold's
/// (made for another location), and the old location's read shows it named by no version
/// after that history began: the orphan rule there (`OrphanAtFormer`) removed it at once,
/// minutes after consumers of the old secret last read it. The store knows k2 was published:
/// it now waits for the migration rule (overlap, 20 minutes, after the first secret published
/// where the client went), and goes then.
#[tokio::test(flavor = "multi_thread")]
async fn review7_a_move_right_after_a_restore_keeps_the_discarded_credential_for_overlap() {
    let env = Env::new(Setup::default()).await;
    let (k1, k2, _) = restored_and_seen(&env).await;
    env.edit_config(
        "secret_name = \"app-one-secret\"",
        "secret_name = \"app-one-moved\"",
    );
    for _ in 0..2 {
        env.em.world().clear_journal();
        let out = env.rotate("app-one", &[]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            env.live("app-one", &k2),
            "removed at once after the move: {:?}\n{}",
            env.writes(),
            stderr(&out)
        );
    }
    let k3 = published_key_at(&env, "app-one-moved");
    assert!(k3 != k1 && k3 != k2);
    // Past overlap after k3 was published where the client went: the migration rule.
    crate::review2::time_passes(&env, "app-one", time::Duration::minutes(25));
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!env.live("app-one", &k2), "{}", stderr(&out));
    assert!(env.live("app-one", &k3));
    env.assert_foreign_untouched("app-one");
}

/// Attack: the daemon's clock is 10 minutes behind when it first reads k2 named by no version
/// (a VM resumed from a snapshot; Azure's `Date` shows it), and is put right later. The record
/// of that read, on the daemon's clock, is then 10 minutes earlier than the read: 12 minutes
/// after the read (overlap 20 minutes) k2 was removed. The time is recorded on Azure's clock
/// when the daemon's is behind it (as the client's arrival is), so k2 stays until overlap after
/// the read, and goes after that.
#[tokio::test(flavor = "multi_thread")]
async fn review7_a_clock_put_right_after_the_first_unnamed_read_does_not_shorten_the_hold() {
    let env = Env::new(Setup::default()).await;
    // Reconciled every 15 minutes: the steps of 12 and 10 minutes below are reconciles within
    // the schedule, so the hold counts from the first unnamed read.
    env.edit_config(EVERY_2_S, EVERY_15_MIN);
    let (k1, k2) = two_rotations(&env).await;
    crate::review2::time_passes(&env, "app-one", time::Duration::hours(1));
    env.edit_versions("app-one", |versions| versions.pop());
    // Azure 10 minutes ahead of the daemon: the daemon's clock is behind.
    env.em.world().state_mut().settings.clock_offset_ms = 600_000;
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.live("app-one", &k2), "{:?}", env.writes());
    // The clock put right: it jumps 10 minutes forward, so what it wrote before is 10 minutes
    // older on it now (and agrees with Azure's).
    env.em.world().state_mut().settings.clock_offset_ms = 0;
    unpublished_seen(&env, time::Duration::minutes(10));
    // 12 minutes after the read: within overlap of it.
    crate::review2::time_passes(&env, "app-one", time::Duration::minutes(12));
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        env.live("app-one", &k2),
        "removed 12 minutes after the first unnamed read: {:?}\n{}",
        env.writes(),
        stderr(&out)
    );
    // 22 minutes after it: past overlap.
    crate::review2::time_passes(&env, "app-one", time::Duration::minutes(10));
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!env.live("app-one", &k2), "{}", stderr(&out));
    assert!(env.live("app-one", &k1));
    env.assert_published_valid("app-one");
}

/// Attack: what happens between two reads. After the first unnamed read (recorded), the
/// version comes back (a second restore from a newer backup, or a recover) and is discarded
/// again 25 minutes later, with no reconcile in between (the daemon down, a long interval, or
/// under HA another replica reconciling meanwhile, whose store the first one's record is not
/// in). Consumers read k2 until the second discard, but the record said "unnamed since the
/// first read", 25 minutes ago: k2 was removed at once. A read cannot see what happened
/// between reads; the record's continuity catches it: the last read that showed k2 unnamed is
/// longer ago than the schedule (every 2 seconds) allows, so the hold counts from this read
/// (tests/it/continuity.rs has the rest).
#[tokio::test(flavor = "multi_thread")]
async fn review7_a_second_discard_unseen_between_reads_does_not_count_from_the_first() {
    let env = Env::new(Setup::default()).await;
    let (_, k2, v2) = restored_and_seen(&env).await;
    // The version back (no reconcile sees it), consumers read k2 again...
    env.edit_versions("app-one", |versions| versions.push(v2.clone()));
    crate::review2::time_passes(&env, "app-one", time::Duration::minutes(25));
    // ...and it is discarded again just now.
    env.edit_versions("app-one", |versions| versions.pop());
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        env.live("app-one", &k2),
        "removed at once after the second discard: {:?}\n{}",
        env.writes(),
        stderr(&out)
    );
}

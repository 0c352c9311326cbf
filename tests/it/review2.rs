//! A second cold review, of the moved-client evidence (the store's `locations`, the read of a
//! location the client has left, `SupersededAtFormer` / `OrphanAtFormer`): sequences of moves,
//! store restores and revocations against the real binary and the emulator. The ignored tests
//! are findings (each comment says the sequence and what breaks); the others are attacks that
//! held and stay as regression tests.

use std::time::Duration;

use emulator::world::{FaultKind, FaultRule};

use crate::harness::*;

const OLD: &str = "secret_name = \"app-one-secret\"";
const MOVED: &str = "secret_name = \"app-one-moved\"";
const THIRD: &str = "secret_name = \"app-one-third\"";

/// The versions of secret `name` in the test vault, oldest first.
fn versions_of(env: &Env, name: &str) -> Vec<emulator::model::SecretVersion> {
    env.em.world().state().vaults["kv-test"]
        .secrets
        .get(name)
        .map(|s| s.versions.clone())
        .unwrap_or_default()
}

fn latest_key(env: &Env, name: &str) -> Option<String> {
    versions_of(env, name)
        .last()
        .and_then(|v| v.tags.get("key-id").cloned())
}

/// Time passes: every credential of `client`'s app and every version in the test vault look
/// `by` older (their ends and expiries stay: only what the age rules read moves), and so do
/// the store's records of when the client arrived at each location and of the reads that
/// showed a published credential named by no version (first and last): no reconcile in
/// between, as while the daemon is down.
pub(crate) fn time_passes(env: &Env, client: &str, by: time::Duration) {
    let db = env.dir.path().join("state").join("state.db");
    if db.exists() {
        let st = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(format!(
                "UPDATE locations SET seen_at = seen_at - {0}; UPDATE unpublished SET seen_at = seen_at - {0}, last_seen_at = last_seen_at - {0};",
                by.whole_seconds()
            ))
            .status()
            .unwrap();
        assert!(st.success());
    }
    for (key, _) in env.passwords(client) {
        env.age_credential(client, &key, by);
    }
    let mut state = env.em.world().state_mut();
    for secret in state
        .vaults
        .get_mut("kv-test")
        .unwrap()
        .secrets
        .values_mut()
    {
        for v in &mut secret.versions {
            v.created -= by.whole_seconds();
            v.updated -= by.whole_seconds();
        }
    }
}

fn capped() -> Setup {
    Setup {
        clients: vec![("app-one", "AzureADandPersonalMicrosoftAccount")],
        foreign_password: false,
        ..Setup::default()
    }
}

async fn rotate_ok(env: &Env, extra: &[&str]) -> String {
    let out = env.rotate("app-one", extra).await;
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    err
}

// ---------------------------------------------------------------------------------------------
// Findings
// ---------------------------------------------------------------------------------------------

/// A config change rolled back, then applied again (a common way to ship a move): the client
/// goes A → B (k1 published at A, b1 at B), back to A within overlap (A's consumers keep
/// reading k1, b1 is kept for B's), an hour passes with the client at A, then it moves to B
/// again. b1 is still B's latest, so nothing is published; k1 is what A serves and what A's
/// consumers were told to read until a moment ago. It is removed at once as `Migrated`: the
/// rule counts overlap from the first managed version at the new location created after the
/// credential (b1, an hour old), not from when the client left the credential's location. The
/// read of A (`at_former`: "what consumers there read") says keep, and the migration rule
/// overrides it. Consumers still reading A get no overlap at all.
#[tokio::test(flavor = "multi_thread")]
async fn review2_a_move_rolled_back_and_applied_again_gives_the_old_location_its_overlap() {
    let env = Env::new(Setup::default()).await;
    rotate_ok(&env, &[]).await;
    let k1 = env.published_key("app-one");
    env.edit_config(OLD, MOVED);
    rotate_ok(&env, &[]).await;
    let b1 = latest_key(&env, "app-one-moved").expect("published at B");
    env.edit_config(MOVED, OLD);
    rotate_ok(&env, &[]).await;
    assert!(env.live("app-one", &k1) && env.live("app-one", &b1));
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    // The client stays at A for an hour (overlap is 20 min).
    time_passes(&env, "app-one", time::Duration::hours(1));
    rotate_ok(&env, &[]).await;
    env.em.world().clear_journal();
    // Applied again.
    env.edit_config(OLD, MOVED);
    let err = rotate_ok(&env, &[]).await;
    assert!(
        env.live("app-one", &k1),
        "k1, what the old location serves, was removed the moment the client left it: {:?}\n{err}",
        env.writes()
    );
}

/// A backup of the state store, taken while an attempt was verifying, is restored after that
/// attempt published and the client moved: the client at A publishes k1 (the backup is taken
/// while k1 is verifying, its intent at `verifying`), moves to B and publishes b1 there; k1 is
/// A's latest, kept for A's consumers within overlap. The store is restored from the backup.
/// The next reconcile takes the restored intent as an attempt that never reached publishing
/// and removes k1 at once (`Abandoned`), with no read: the planner checks "named" only in the
/// current location's history, and `Abandoned` comes before the read of the former location
/// (which it had, showing k1 served at A). Without the move, "named" protects it. The store is
/// documented as not authoritative, yet one stale row is taken as proof.
#[tokio::test(flavor = "multi_thread")]
async fn review2_a_restored_store_does_not_remove_what_the_old_location_serves() {
    let env = Env::new(Setup::default()).await;
    let object_id = env.client("app-one").object_id.clone();
    env.em.world().add_fault(FaultRule {
        operation: Operation::Token,
        target: Some(object_id),
        count: 1,
        kind: FaultKind::HoldBefore,
    });
    let state = env.dir.path().join("state");
    let backup = env.dir.path().join("backup.db");
    let (out, ()) = tokio::join!(env.rotate("app-one", &[]), async {
        assert!(
            eventually(Duration::from_secs(30), || !env
                .em
                .world()
                .held_calls()
                .is_empty())
            .await,
            "the verification was reached"
        );
        // A person's backup of the live store, as `sqlite3 .backup` makes it.
        let st = std::process::Command::new("sqlite3")
            .arg(state.join("state.db"))
            .arg(format!(".backup {}", backup.display()))
            .status()
            .unwrap();
        assert!(st.success());
        env.em.world().release_all();
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let k1 = env.published_key("app-one");
    env.edit_config(OLD, MOVED);
    rotate_ok(&env, &[]).await;
    assert!(latest_key(&env, "app-one-moved").is_some());
    assert!(env.live("app-one", &k1), "kept within overlap");
    // The store is restored from the backup.
    for f in ["state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(state.join(f));
    }
    std::fs::copy(&backup, state.join("state.db")).unwrap();
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(
        env.live("app-one", &k1),
        "k1, A's latest within overlap, was removed on a restored intent: {:?}\n{}",
        env.writes(),
        stderr(&out)
    );
}

/// A two-password app moved A → B and back to A within overlap: k1 is A's latest, b1 is B's.
/// Once k1 is due for renewal (here a day later), the rotation at A needs a slot: b1 is B's
/// latest (the read of B keeps it) and no version at A was created after it (the migration rule
/// never fires), and the wait for the slot names no time. The client waits "a minute" forever,
/// as a wait that is not a failure, until k1 expires: consumers at A are left with a dead
/// secret. (Consumers of B had a day to follow the client back.)
#[tokio::test(flavor = "multi_thread")]
async fn review2_a_capped_app_moved_there_and_back_renews_its_secret() {
    let env = Env::new(capped()).await;
    rotate_ok(&env, &[]).await;
    let k1 = env.published_key("app-one");
    env.edit_config(OLD, MOVED);
    rotate_ok(&env, &[]).await;
    env.edit_config(MOVED, OLD);
    rotate_ok(&env, &[]).await;
    assert_eq!(env.passwords("app-one").len(), 2, "both slots taken");
    time_passes(&env, "app-one", time::Duration::days(1));
    // k1 is now within renew_before (10 min): its version at A expires in 5 min.
    {
        let mut state = env.em.world().state_mut();
        let secret = state
            .vaults
            .get_mut("kv-test")
            .unwrap()
            .secrets
            .get_mut("app-one-secret");
        let v = secret.unwrap().versions.last_mut().unwrap();
        v.exp =
            Some((time::OffsetDateTime::now_utc() + time::Duration::minutes(5)).unix_timestamp());
    }
    let mut log = String::new();
    for _ in 0..2 {
        let out = env.rotate("app-one", &[]).await;
        log.push_str(&stderr(&out));
    }
    assert_ne!(
        env.published_key("app-one"),
        k1,
        "the client never renews at A (its slot is held by B's credential):\n{log}"
    );
}

/// A two-password app moved A → B → C, the second move within overlap of the first: k1 is A's
/// latest, b1 is B's latest, and C needs a slot. Neither read frees one (each is what its
/// location serves) and the migration rule waits for a publish at C, which needs the slot.
/// A day later nothing has changed: C never gets a secret. B's publish (after k1, a day ago)
/// is the evidence the migration rule asks for, at a location the client has also left.
#[tokio::test(flavor = "multi_thread")]
async fn review2_a_capped_app_moved_twice_gets_a_secret_at_its_last_location() {
    let env = Env::new(capped()).await;
    rotate_ok(&env, &[]).await;
    env.edit_config(OLD, MOVED);
    rotate_ok(&env, &[]).await;
    env.edit_config(MOVED, THIRD);
    let _ = env.rotate("app-one", &[]).await;
    time_passes(&env, "app-one", time::Duration::days(1));
    let mut log = String::new();
    for _ in 0..2 {
        let out = env.rotate("app-one", &[]).await;
        log.push_str(&stderr(&out));
    }
    assert!(
        latest_key(&env, "app-one-third").is_some(),
        "nothing was ever published at the third location:\n{log}"
    );
}

/// A revocation asked right after a move, before anything was published at the new location:
/// the leaked secret is k1, published at the old location (whose address the store knows, and
/// whose latest names k1). The daemon finds nothing published at the new location, notes
/// "nothing to revoke: no published credential is left", rotates, and exits 0: k1 stays valid
/// for `overlap` after the new publish (and for ever if nothing can be published there).
#[tokio::test(flavor = "multi_thread")]
async fn review2_a_revocation_during_a_move_revokes_or_refuses() {
    let env = Env::new(Setup::default()).await;
    rotate_ok(&env, &[]).await;
    let k1 = env.published_key("app-one");
    env.edit_config(OLD, MOVED);
    let out = env
        .rotate("app-one", &["--force", "--revoke-previous"])
        .await;
    assert!(
        !out.status.success() || !env.live("app-one", &k1),
        "the leaked credential k1 is still valid and the revocation reported success:\n{}",
        stderr(&out)
    );
}

/// The absence of a tag is taken as evidence at the old location. The client at A publishes k1
/// then k2 (A's latest), a day passes, it moves to B and publishes b1 there: k1 goes (superseded
/// at A for a day), k2 stays for A's consumers until overlap after b1. Then a tool wipes the
/// tags of k2's version at A (the review's "tags wiped" case) and a person writes a version by
/// hand on top (the "written by hand on top keeps our last credential" case). Each alone is
/// handled; together, k2 is named by no version at A, its hint is not the latest value's, and
/// the last *tagged* managed version is k1's: k2 is removed at once as `OrphanAtFormer`, "never
/// published there", although it is what A served until a moment ago and the migration overlap
/// has not run. (The current location's `Orphan` rule has the same blind spot.)
#[tokio::test(flavor = "multi_thread")]
async fn review2_wiped_tags_and_a_version_by_hand_at_the_old_location_prove_no_orphan() {
    let env = Env::new(Setup::default()).await;
    rotate_ok(&env, &[]).await;
    let k1 = env.published_key("app-one");
    rotate_ok(&env, &["--force"]).await;
    let k2 = env.published_key("app-one");
    time_passes(&env, "app-one", time::Duration::days(1));
    env.edit_config(OLD, MOVED);
    rotate_ok(&env, &[]).await;
    assert!(latest_key(&env, "app-one-moved").is_some());
    assert!(
        !env.live("app-one", &k1),
        "superseded at A for a day: it goes"
    );
    assert!(env.live("app-one", &k2), "A's latest stays within overlap");
    env.edit_versions("app-one", |versions| {
        versions.last_mut().unwrap().tags.clear();
    });
    env.write_by_hand("app-one", "a value typed by a person", None);
    env.em.world().clear_journal();
    let err = rotate_ok(&env, &[]).await;
    assert!(
        env.live("app-one", &k2),
        "k2, published at A until a moment ago, was removed as never published there: {:?}\n{err}",
        env.writes()
    );
}

/// The instance is renamed and back (the world run does this) while a two-password app that
/// moved waits to free a slot. Under the other name no credential is the client's own, so
/// `remember_location` forgets the old location's row (rows are kept per client, not per
/// instance); back under its name, the old location can no longer be read, the predecessor
/// superseded there never frees its slot, and the new location never gets a secret.
#[tokio::test(flavor = "multi_thread")]
async fn review2_an_instance_renamed_and_back_still_frees_the_moved_slot() {
    let env = Env::new(capped()).await;
    rotate_ok(&env, &[]).await;
    let k1 = env.published_key("app-one");
    rotate_ok(&env, &["--force"]).await;
    let k2 = env.published_key("app-one");
    time_passes(&env, "app-one", time::Duration::days(1));
    // The client moves (the store recorded the old location at the two rotations there), and
    // before its first reconcile at the new location the instance is renamed.
    env.edit_config(OLD, MOVED);
    env.edit_config("instance = \"test\"", "instance = \"test-renamed\"");
    let _ = env.rotate("app-one", &[]).await;
    env.edit_config("instance = \"test-renamed\"", "instance = \"test\"");
    let mut log = String::new();
    for _ in 0..2 {
        let out = env.rotate("app-one", &[]).await;
        log.push_str(&stderr(&out));
    }
    assert!(
        latest_key(&env, "app-one-moved").is_some() && !env.live("app-one", &k1),
        "the predecessor superseded at the old location never freed its slot:\n{log}"
    );
    assert!(env.live("app-one", &k2));
}

// ---------------------------------------------------------------------------------------------
// Attacks that held
// ---------------------------------------------------------------------------------------------

/// A → B → A within overlap (not capped): nothing is removed, A's latest stays published, and
/// B's credential stays for B's consumers.
#[tokio::test(flavor = "multi_thread")]
async fn review2_there_and_back_within_overlap_removes_nothing() {
    let env = Env::new(Setup::default()).await;
    rotate_ok(&env, &[]).await;
    let k1 = env.published_key("app-one");
    env.edit_config(OLD, MOVED);
    rotate_ok(&env, &[]).await;
    let b1 = latest_key(&env, "app-one-moved").unwrap();
    env.edit_config(MOVED, OLD);
    rotate_ok(&env, &[]).await;
    rotate_ok(&env, &[]).await;
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    assert!(env.live("app-one", &k1) && env.live("app-one", &b1));
    assert_eq!(env.published_key("app-one"), k1);
    env.assert_published_valid("app-one");
}

/// Two clients swap locations. Each finds the other's application's secret: both are blocked,
/// and nothing is removed, not even a day later (each old location still serves its own
/// client's credential; the other's versions never supersede it).
#[tokio::test(flavor = "multi_thread")]
async fn review2_two_clients_swapping_locations_remove_nothing() {
    let env = Env::new(Setup {
        clients: vec![("app-one", "AzureADMyOrg"), ("app-two", "AzureADMyOrg")],
        ..Setup::default()
    })
    .await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    assert!(env.rotate("app-two", &[]).await.status.success());
    let one = env.published_key("app-one");
    let two = env.published_key("app-two");
    env.edit_config(OLD, "secret_name = \"swap-tmp\"");
    env.edit_config(
        "secret_name = \"app-two-secret\"",
        "secret_name = \"app-one-secret\"",
    );
    env.edit_config(
        "secret_name = \"swap-tmp\"",
        "secret_name = \"app-two-secret\"",
    );
    env.em.world().clear_journal();
    for _ in 0..2 {
        for c in ["app-one", "app-two"] {
            let out = env.rotate(c, &[]).await;
            assert!(!out.status.success(), "{c} is blocked");
            assert!(
                stderr(&out).contains("another application"),
                "{}",
                stderr(&out)
            );
        }
        time_passes(&env, "app-one", time::Duration::days(1));
        time_passes(&env, "app-two", time::Duration::days(1));
    }
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    assert!(env.live("app-one", &one) && env.live("app-two", &two));
}

/// The old location's latest is a version a person wrote by hand with the value of the
/// credential it had superseded (a rollback), then the client moves: the rolled-back-to
/// credential (hint) and the last managed one (a hand-written version on top) both stay, a
/// day later too, until the migration rule.
#[tokio::test(flavor = "multi_thread")]
async fn review2_a_rollback_by_hand_at_the_old_location_keeps_both_credentials() {
    let env = Env::new(Setup::default()).await;
    rotate_ok(&env, &[]).await;
    let k1 = env.published_key("app-one");
    rotate_ok(&env, &["--force"]).await;
    let k2 = env.published_key("app-one");
    time_passes(&env, "app-one", time::Duration::days(1));
    let value = versions_of(&env, "app-one-secret")[0].value.clone();
    env.write_by_hand("app-one", &value, None);
    env.edit_config(OLD, MOVED);
    env.em.world().clear_journal();
    rotate_ok(&env, &[]).await;
    rotate_ok(&env, &[]).await;
    assert!(latest_key(&env, "app-one-moved").is_some());
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    assert!(env.live("app-one", &k1) && env.live("app-one", &k2));
}

/// The old location is purged by mistake and created again by hand from a backup that kept the
/// tags (a version naming k2 with k2's value), after the client moved: k2 stays (the latest
/// there names it), and nothing is taken for an orphan of the new history.
#[tokio::test(flavor = "multi_thread")]
async fn review2_the_old_location_recreated_by_hand_with_our_tags_keeps_its_credential() {
    let env = Env::new(Setup::default()).await;
    rotate_ok(&env, &[]).await;
    rotate_ok(&env, &["--force"]).await;
    let k2 = env.published_key("app-one");
    time_passes(&env, "app-one", time::Duration::days(1));
    env.edit_config(OLD, MOVED);
    rotate_ok(&env, &[]).await;
    let b1 = latest_key(&env, "app-one-moved").unwrap();
    env.edit_versions("app-one", |versions| {
        let mut restored = versions.last().unwrap().clone();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        restored.version = uuid::Uuid::new_v4().simple().to_string();
        restored.created = now;
        restored.updated = now;
        *versions = vec![restored];
    });
    // A day later for the new location too, so the migration rule is the only thing left.
    env.em.world().clear_journal();
    for _ in 0..2 {
        rotate_ok(&env, &[]).await;
    }
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    assert!(env.live("app-one", &k2) && env.live("app-one", &b1));
}

/// The old location's listing lags (a version written in the last 4 s is missing from it) and
/// a person rolls it back to k1's value, tags and all, twice in a row within the lag: what
/// `GET` returns names k1, k2 was superseded a moment ago. Nothing goes.
#[tokio::test(flavor = "multi_thread")]
async fn review2_a_lagging_old_listing_and_a_rollback_with_tags_remove_nothing() {
    let env = Env::new(Setup::default()).await;
    rotate_ok(&env, &[]).await;
    let k1 = env.published_key("app-one");
    rotate_ok(&env, &["--force"]).await;
    let k2 = env.published_key("app-one");
    time_passes(&env, "app-one", time::Duration::days(1));
    env.edit_config(OLD, MOVED);
    rotate_ok(&env, &[]).await;
    assert!(
        !env.live("app-one", &k1),
        "superseded at A for a day: it goes"
    );
    env.em.world().state_mut().settings.kv_list_lag_ms = 4_000;
    // k1 is gone; the rollback is to k2's predecessor's successor: write k2's version again,
    // then k2's again, so the listing shows neither.
    {
        let mut state = env.em.world().state_mut();
        let vault = state.vaults.get_mut("kv-test").unwrap();
        let secret = vault.secrets.get_mut("app-one-secret").unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let true_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        for _ in 0..2 {
            let mut again = secret.versions.last().unwrap().clone();
            again.version = uuid::Uuid::new_v4().simple().to_string();
            again.created = now;
            again.updated = now;
            vault.written_ms.insert(again.version.clone(), true_ms);
            secret.versions.push(again);
        }
    }
    env.em.world().clear_journal();
    rotate_ok(&env, &[]).await;
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    assert!(env.live("app-one", &k2));
}

/// SIGKILL between the removal's fresh read of the old location and its `removePassword` (held
/// at the emulator, then let through as Azure would finish a request in flight): the next run
/// finds the slot free, publishes at the new location, and takes nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn review2_a_kill_between_the_old_location_read_and_the_removal_takes_nothing_else() {
    let env = Env::new(capped()).await;
    rotate_ok(&env, &[]).await;
    let k1 = env.published_key("app-one");
    rotate_ok(&env, &["--force"]).await;
    let k2 = env.published_key("app-one");
    time_passes(&env, "app-one", time::Duration::days(1));
    env.edit_config(OLD, MOVED);
    env.em.world().clear_journal();
    env.em.world().add_fault(FaultRule {
        operation: Operation::GraphRemovePassword,
        target: Some(env.client("app-one").object_id.clone()),
        count: 1,
        kind: FaultKind::HoldBefore,
    });
    let config = path_str(&env.config_path);
    let mut child = env
        .command(&["rotate", "--config", &config, "app-one"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || !env
            .em
            .world()
            .held_calls()
            .is_empty())
        .await
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // Whether the held removal lands or dies with its connection, the next run converges.
    env.em.world().release_all();
    let err = rotate_ok(&env, &[]).await;
    assert!(latest_key(&env, "app-one-moved").is_some(), "{err}");
    assert!(!env.live("app-one", &k1), "{err}");
    assert!(
        env.removals().iter().all(|k| *k == k1),
        "{:?}",
        env.writes()
    );
    assert!(env.live("app-one", &k2));
}

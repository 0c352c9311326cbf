//! The sixth cold review, of the retirement judged from the latest version alone
//! (`plan::superseded_by_latest`: the version listing skipped once the latest version, older
//! than overlap, names another credential and does not hold the old one's value), against the
//! emulator: what a person or Key Vault's clock can make the latest version say.

use std::time::Duration;

use crate::harness::*;

/// The value of `key_id`, a live password of `client`'s application.
fn value_of(env: &Env, client: &str, key_id: &str) -> String {
    env.app(client)
        .passwords
        .iter()
        .find(|p| p.key_id == key_id)
        .map(|p| p.secret_text.clone())
        .expect("the credential")
}

/// Successful listings of the versions since the journal was cleared.
fn listings(env: &Env) -> usize {
    env.journal()
        .iter()
        .filter(|e| e.operation == Operation::KeyvaultListVersions && e.status == 200)
        .count()
}

/// Two rotations: the first credential is superseded by the second. Returns both key ids.
async fn two_rotations(env: &Env) -> (String, String) {
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let k1 = env.published_key("app-one");
    let out = env.rotate("app-one", &["--force"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let k2 = env.published_key("app-one");
    assert_ne!(k1, k2);
    (k1, k2)
}

/// A person rolls back by hand: the first credential's value is pasted into a new version,
/// and the published version's tags copied onto it (so it names the second credential). The
/// latest version is then older than overlap and names another credential, but consumers
/// read the first credential's value from it: the first credential stays, reconcile after
/// reconcile, whether or not the versions are listed.
#[tokio::test(flavor = "multi_thread")]
async fn review6_a_retired_value_pasted_back_under_the_published_tags_keeps_the_credential() {
    let env = Env::new(Setup::default()).await;
    let (k1, k2) = two_rotations(&env).await;
    let k1_value = value_of(&env, "app-one", &k1);
    env.edit_versions("app-one", |versions| {
        let mut copy = versions.last().expect("a version").clone();
        copy.version = "c".repeat(32);
        copy.value = k1_value.clone();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        copy.created = now;
        copy.updated = now;
        versions.push(copy);
    });
    // An hour later (overlap is 20 minutes): credentials, versions and the client's arrival.
    crate::review2::time_passes(&env, "app-one", time::Duration::hours(1));
    for _ in 0..2 {
        env.em.world().clear_journal();
        let out = env.rotate("app-one", &[]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            env.live("app-one", &k1),
            "the credential whose value consumers read was removed: {:?}\n{}",
            env.writes(),
            stderr(&out)
        );
        assert!(env.removals().is_empty(), "{:?}", env.writes());
        assert!(
            listings(&env) > 0,
            "the latest version holds its value: the history decides"
        );
    }
    assert!(env.live("app-one", &k2));
    env.assert_foreign_untouched("app-one");
}

/// Key Vault's clock ahead of the daemon's (the daemon's clock agrees with the `Date` headers,
/// but the latest version's `created` is half an hour in its future): the first credential
/// is superseded since that `created`, and stays until overlap (20 minutes) after it, though
/// credentials and the client's arrival are an hour old. Once that time has passed, the
/// latest version alone retires it.
#[tokio::test(flavor = "multi_thread")]
async fn review6_a_latest_version_created_in_the_future_retires_nothing_before_overlap_after_it() {
    let env = Env::new(Setup::default()).await;
    let (k1, k2) = two_rotations(&env).await;
    crate::review2::time_passes(&env, "app-one", time::Duration::hours(1));
    let set_latest_created = |at: time::OffsetDateTime| {
        env.edit_versions("app-one", |versions| {
            let latest = versions.last_mut().expect("a version");
            latest.created = at.unix_timestamp();
            latest.updated = latest.created;
        })
    };
    let now = time::OffsetDateTime::now_utc;
    set_latest_created(now() + time::Duration::minutes(30));
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        env.live("app-one", &k1),
        "retired before overlap after the latest version was written: {:?}\n{}",
        env.writes(),
        stderr(&out)
    );
    assert!(
        listings(&env) > 0,
        "not yet retired by the latest version: listed"
    );
    // 25 minutes ago: past overlap.
    set_latest_created(now() - time::Duration::minutes(25));
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.removals(), vec![k1.clone()], "{}", stderr(&out));
    assert_eq!(listings(&env), 0, "retired from the latest version alone");
    assert!(env.live("app-one", &k2));
    env.assert_published_valid("app-one");
    env.assert_foreign_untouched("app-one");
}

/// A restore of an older state of the vault secret (a Key Vault backup taken before the
/// second rotation, restored after the secret was purged; here the newest version is taken
/// away): the latest version names the first credential again, and the second, which
/// consumers read for the last hour, is named by no version. The history alone would call it
/// an orphan and remove it at once; the store recorded its publish, so it stays for `overlap`
/// (20 minutes) from the first read that showed it unnamed, said as a warning in the
/// rotation's output and the status, and then goes, after a fresh listing, as what it is
/// (published, then named by no version): not an orphan.
#[tokio::test(flavor = "multi_thread")]
async fn review6_a_credential_published_in_a_version_a_restore_discarded_stays_for_overlap() {
    let env = Env::new(Setup::default()).await;
    // Reconciled every 15 minutes (the default): the steps of 15 and 10 minutes below are
    // reconciles within the schedule, so the hold keeps counting from the first unnamed read.
    env.edit_config(EVERY_2_S, EVERY_15_MIN);
    let (k1, k2) = two_rotations(&env).await;
    crate::review2::time_passes(&env, "app-one", time::Duration::hours(1));
    env.edit_versions("app-one", |versions| versions.pop());
    assert_eq!(env.published_key("app-one"), k1);
    for _ in 0..2 {
        env.em.world().clear_journal();
        let out = env.rotate("app-one", &[]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(listings(&env) > 0, "the history decides");
        assert!(
            env.live("app-one", &k2),
            "removed at once after the restore: {:?}\n{}",
            env.writes(),
            stderr(&out)
        );
        assert!(env.removals().is_empty(), "{:?}", env.writes());
        let said = stdout(&out);
        assert!(
            said.contains(&format!(
                "warning: keeping credential {k2}: it was published"
            )) && said.contains("restored from a backup?"),
            "{said}"
        );
    }
    let config = path_str(&env.config_path);
    let status = stdout(&env.cli(&["status", "--config", &config]).await);
    assert!(status.contains("restored from a backup?"), "{status}");
    // 15 minutes later (credentials, versions, the arrival and the store's record of the
    // first unnamed read): still within overlap.
    crate::review2::time_passes(&env, "app-one", time::Duration::minutes(15));
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.live("app-one", &k2), "{:?}", env.writes());
    // 10 more: past overlap after the first unnamed read. The daemon's first reconcile removes
    // it, after a fresh listing, as what it is (published, then named by no version): not an
    // orphan, in its log and in its metrics.
    crate::review2::time_passes(&env, "app-one", time::Duration::minutes(10));
    env.em.world().clear_journal();
    let mut daemon = env.spawn_daemon(&[]);
    let removed = eventually(Duration::from_secs(30), || !env.removals().is_empty()).await;
    assert!(removed, "{}", daemon.stderr());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, metrics) = daemon.get("/metrics").await.expect("metrics");
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(10));
    let log = daemon.stderr();
    assert_eq!(env.removals(), vec![k2.clone()], "{log}");
    assert!(
        log.contains("removed credential")
            && log.contains("named by no version of the vault secret since"),
        "{log}"
    );
    assert!(
        metrics.contains("secret_rotator_orphans_removed_total{client=\"app-one\"} 0"),
        "{metrics}"
    );
    let journal = env.journal();
    let removal_at = journal
        .iter()
        .position(|e| e.operation == Operation::GraphRemovePassword)
        .expect("the removal");
    assert!(
        journal[..removal_at]
            .iter()
            .filter(|e| e.operation == Operation::KeyvaultListVersions && e.status == 200)
            .count()
            >= 2,
        "listed at the observation and again just before the removal"
    );
    assert!(env.live("app-one", &k1));
    env.assert_published_valid("app-one");
    env.assert_foreign_untouched("app-one");
}

//! An outside review of "removal needs positive evidence": sequences of world events (a purged
//! secret, a lost publish answer, a 404 listing, a value rolled back by hand, a revocation asked
//! twice) run against the real binary. Each test states what a consumer would lose if the
//! protocol gave way. The tests marked `ignore` reproduce defects and fail until they are fixed
//! (`cargo test --test it review_ -- --include-ignored`); the others are attacks it withstood.
//!
//! Over 600 lines: one scenario per finding of the review, each self-contained; splitting them
//! would scatter the review's record.

use std::time::Duration;

use emulator::world::FaultKind;

use crate::harness::*;

/// A person deletes and purges the vault secret. The daemon publishes anew at the same name;
/// the credential that was the latest a moment ago is then named by no version of the new
/// history, and the orphan rule takes that absence as proof that no consumer holds it, though
/// a consumer that read it before the delete still does (the reason a soft-deleted secret blocks
/// removals). It should go `overlap` after the new publish, as any superseded credential.
#[tokio::test(flavor = "multi_thread")]
async fn review_a_purged_secret_does_not_turn_its_last_credential_into_an_orphan() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let k1 = env.published_key("app-one");
    env.age_credential("app-one", &k1, time::Duration::hours(2));
    {
        // Deleted, then purged: the name is free and the history is gone.
        let mut state = env.em.world().state_mut();
        let vault = state.vaults.get_mut("kv-test").unwrap();
        vault.secrets.remove("app-one-secret").unwrap();
    }
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let k2 = env.published_key("app-one");
    assert_ne!(k1, k2);
    assert!(env.live("app-one", &k1), "kept while the secret was absent");

    // A minute later, an ordinary reconcile.
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        env.live("app-one", &k1),
        "the credential published until the purge was removed at once, not overlap after its successor: {}",
        stderr(&out)
    );
    env.assert_published_valid("app-one");
    env.assert_foreign_untouched("app-one");
}

/// The first publish takes effect and its answer is lost; the read of the history that should
/// tell whether it landed gets a 404 (a lagging replica, a fault). A 404 is no evidence, yet
/// `published_anyway` takes it for "no version names the credential" and writes again; the
/// second write is refused (403), and the refusal path removes the new credential, which the
/// vault's latest version names.
#[tokio::test(flavor = "multi_thread")]
async fn review_a_404_history_after_a_lost_publish_is_not_proof_the_publish_failed() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    env.fault(Operation::KeyvaultSetSecret, 1, FaultKind::DropAfter);
    // The reconcile's own listing gets the first 404 (GET still shows the latest, so it goes
    // ahead); the read after the lost answer gets the second.
    env.fault(Operation::KeyvaultListVersions, 2, Env::status(404));
    env.fault(Operation::KeyvaultSetSecret, 1, Env::status(403));
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &["--force"]).await;
    let key = env.published_key("app-one");
    assert!(
        env.live("app-one", &key),
        "the credential Key Vault's latest version names was removed: {:?}\n{}",
        env.writes(),
        stderr(&out)
    );
    env.assert_published_valid("app-one");
}

/// A 404 on the listing while `GET` still returns the latest version (a lagging or faulty
/// listing): the history seems to hold only the latest, so the superseded credential (within
/// overlap) looks like an orphan. The re-listing before an orphan removal must save it.
#[tokio::test(flavor = "multi_thread")]
async fn review_a_404_listing_is_no_evidence_against_a_superseded_credential() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let k1 = env.published_key("app-one");
    assert!(env.rotate("app-one", &["--force"]).await.status.success());
    // Old enough for the orphan age, still within overlap of its successor.
    env.age_credential("app-one", &k1, time::Duration::hours(2));
    for count in [1, 2, 10] {
        env.em.world().clear_faults();
        env.fault(Operation::KeyvaultListVersions, count, Env::status(404));
        let out = env.rotate("app-one", &[]).await;
        assert!(
            env.live("app-one", &k1),
            "a 404 listing ({count}) removed a credential within overlap: {}",
            stderr(&out)
        );
    }
    env.em.world().clear_faults();
    env.assert_published_valid("app-one");
    env.assert_foreign_untouched("app-one");
}

/// A person rolls the secret back by hand: they write the previous value again as a new,
/// untagged version (a portal "set"), with `adopt` off. The client is blocked, and the
/// credential of the last managed version is kept; but the credential whose value consumers now
/// read (the older one) is retired as superseded, since only tags are compared.
#[tokio::test(flavor = "multi_thread")]
async fn review_a_value_rolled_back_by_hand_keeps_its_credential() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let k1 = env.published_key("app-one");
    let v1 = env.versions("app-one")[0].value.clone();
    assert!(env.rotate("app-one", &["--force"]).await.status.success());
    let k2 = env.published_key("app-one");
    // The rollback happens after overlap.
    env.age_credential("app-one", &k1, time::Duration::hours(2));
    env.age_credential("app-one", &k2, time::Duration::hours(1));
    env.age_versions("app-one", time::Duration::hours(1));
    env.write_by_hand("app-one", &v1, None);

    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(!out.status.success(), "blocked: the latest is unmanaged");
    assert!(
        env.live("app-one", &k2),
        "the last managed credential is kept"
    );
    assert!(
        env.live("app-one", &k1),
        "the credential whose value the latest version holds was removed: {:?}\n{}",
        env.writes(),
        stderr(&out)
    );
    env.assert_foreign_untouched("app-one");
}

/// Revocation asked twice (a double click, a retried request) by two `rotate` commands at once:
/// the second waits for the lock, then takes the first one's brand-new credential for "the
/// previous" and revokes it at once, though consumers started reading it seconds ago. It should
/// revoke what was previous when it was asked, or nothing.
#[tokio::test(flavor = "multi_thread")]
async fn review_a_revocation_asked_twice_revokes_only_the_leaked_credential() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let leaked = env.published_key("app-one");
    env.em.world().clear_journal();
    let (a, b) = tokio::join!(
        env.rotate("app-one", &["--force", "--revoke-previous"]),
        env.rotate("app-one", &["--force", "--revoke-previous"]),
    );
    let removed = env.removals();
    assert!(
        removed.contains(&leaked),
        "the leaked credential is revoked"
    );
    let minted: Vec<String> = env
        .writes()
        .into_iter()
        .filter(|w| w.0 == Operation::GraphAddPassword && w.1 < 300)
        .filter_map(|w| w.2)
        .collect();
    let revoked_fresh: Vec<&String> = minted.iter().filter(|k| removed.contains(k)).collect();
    assert!(
        revoked_fresh.is_empty(),
        "a credential published seconds before was revoked at once: {revoked_fresh:?}\n--- first\n{}\n--- second\n{}",
        stderr(&a),
        stderr(&b)
    );
    env.assert_published_valid("app-one");
    env.assert_foreign_untouched("app-one");
}

/// The daemon runs while the world shifts under it: the client has moved to another secret
/// name (the config changed before the start), a person disables the new latest version, and the old location's
/// credential must outlive the overlap that the new location's first publish starts; the daemon
/// must not spin on the disabled version.
#[tokio::test(flavor = "multi_thread")]
async fn review_a_move_then_a_disabled_latest_keeps_the_old_location_credential() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let k1 = env.published_key("app-one");
    env.age_credential("app-one", &k1, time::Duration::hours(2));
    env.edit_config(
        "secret_name = \"app-one-secret\"",
        "secret_name = \"app-one-moved\"",
    );
    let mut daemon = env.spawn_daemon(&[]);
    let moved = |env: &Env| {
        let state = env.em.world().state();
        state.vaults["kv-test"]
            .secrets
            .get("app-one-moved")
            .map(|s| s.versions.clone())
            .unwrap_or_default()
    };
    assert!(eventually(Duration::from_secs(30), || !moved(&env).is_empty()).await);
    {
        let mut state = env.em.world().state_mut();
        let s = state
            .vaults
            .get_mut("kv-test")
            .unwrap()
            .secrets
            .get_mut("app-one-moved")
            .unwrap();
        s.versions.last_mut().unwrap().enabled = false;
    }
    assert!(eventually(Duration::from_secs(30), || moved(&env).len() >= 2).await);
    env.em.world().clear_journal();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let adds = env
        .writes()
        .iter()
        .filter(|w| w.0 == Operation::GraphAddPassword)
        .count();
    assert!(adds <= 1, "rotations kept coming: {:?}", env.writes());
    assert!(
        env.live("app-one", &k1),
        "the old location's credential went within overlap"
    );
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(20));
    let err = daemon.stderr();
    assert!(!err.contains("panicked"), "{err}");
    env.assert_foreign_untouched("app-one");
}

/// A 403 `SecretDisabled` on `GET` while the listing shows the latest version enabled: a
/// person disabled it between the two reads (or a replica lags an enable). An older version
/// was disabled before (the usual answer to a leak). The planner takes the newest *disabled*
/// version of the listing for the latest, the old one, and then retires the credential of the
/// real latest as "superseded" since that old version's creation, at once: a 403 became
/// evidence against the published credential.
#[tokio::test(flavor = "multi_thread")]
async fn review_a_disabled_answer_to_get_never_retires_the_latest_credential() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let k1 = env.published_key("app-one");
    assert!(env.rotate("app-one", &["--force"]).await.status.success());
    let k2 = env.published_key("app-one");
    env.age_credential("app-one", &k1, time::Duration::hours(2));
    env.age_credential("app-one", &k2, time::Duration::hours(2));
    env.age_versions("app-one", time::Duration::hours(1));
    {
        // The older version was disabled by hand, long ago.
        let mut state = env.em.world().state_mut();
        let s = state
            .vaults
            .get_mut("kv-test")
            .unwrap()
            .secrets
            .get_mut("app-one-secret")
            .unwrap();
        s.versions[0].enabled = false;
    }
    env.fault(
        Operation::KeyvaultGetSecret,
        1,
        FaultKind::Status {
            status: 403,
            code: Some("SecretDisabled".into()),
            retry_after: None,
        },
    );
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(
        env.live("app-one", &k2),
        "the credential of the enabled latest version was removed on a 403: {:?}\n{}",
        env.writes(),
        stderr(&out)
    );
    env.assert_published_valid("app-one");
    env.assert_foreign_untouched("app-one");
}

/// A client moved (a typo, a copy-paste) onto a secret another client of the same installation
/// publishes. The planner counts any managed version there as "published here since", so the
/// moved client's old credential, which consumers of its old secret still read, goes at once;
/// and the other client's version (its `client-id` tag names another app) is taken for a
/// published credential gone from this app, so its secret is overwritten with this app's.
#[tokio::test(flavor = "multi_thread")]
async fn review_a_client_moved_onto_another_clients_secret_changes_nothing_of_theirs() {
    let env = Env::new(Setup {
        clients: vec![("app-one", "AzureADMyOrg"), ("app-two", "AzureADMyOrg")],
        ..Setup::default()
    })
    .await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    assert!(env.rotate("app-two", &[]).await.status.success());
    let k_one = env.published_key("app-one");
    let k_two = env.published_key("app-two");
    env.age_credential("app-one", &k_one, time::Duration::hours(2));
    env.age_credential("app-two", &k_two, time::Duration::hours(2));
    env.age_versions("app-two", time::Duration::hours(1));

    // app-two goes to another installation (its block leaves this config), and app-one is
    // pointed at app-two's secret by mistake.
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let two = text.find("\n[[clients]]\nname = \"app-two\"").unwrap();
    let moved = text[..two].replace(
        "secret_name = \"app-one-secret\"",
        "secret_name = \"app-two-secret\"",
    );
    std::fs::write(&env.config_path, moved).unwrap();
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    let err = stderr(&out);
    let one_removed = !env.live("app-one", &k_one);
    let two_overwritten = env.published_key("app-two") != k_two;
    assert!(
        !one_removed && !two_overwritten,
        "app-one's old credential removed at once: {one_removed}; app-two's secret overwritten with app-one's: {two_overwritten}\n{:?}\n{err}",
        env.writes()
    );
}

/// A leaked secret on an application with the two-password cap, its other slot held by the
/// predecessor within overlap. A revoking rotation cannot get a slot; the admin API must not
/// answer "rotation started" while nothing is rotated or revoked, and the command must fail.
#[tokio::test(flavor = "multi_thread")]
async fn review_a_revocation_that_cannot_get_a_slot_says_so() {
    let env = Env::capped().await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    assert!(env.rotate("app-one", &["--force"]).await.status.success());
    let leaked = env.published_key("app-one");
    env.em.world().clear_journal();
    let out = env
        .rotate("app-one", &["--force", "--revoke-previous"])
        .await;
    let cli_ok = out.status.success();
    let cli_err = stderr(&out);

    let daemon = env.spawn_daemon(&[]);
    let (status, body) = env.admin_rotate(&daemon, "?revoke_previous=true").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still_live = env.live("app-one", &leaked);
    assert!(
        !cli_ok,
        "the command asked to revoke exited 0 without revoking\n{cli_err}"
    );
    assert!(
        !(status == 202 && still_live),
        "the admin API answered {status} {body} and the leaked credential is still live\n{cli_err}"
    );
}

/// An application with the two-password cap moves (new secret name) within overlap of a
/// rotation: both slots hold credentials made for the old location. They retire only
/// `overlap` after a publish at the new location, and nothing can be published there without a
/// slot: the client waited forever ("the other slot frees at <a minute from now>", again and
/// again), and the new location never got a secret, even long after the old predecessor's
/// overlap ended. Fixed: a read of the old location shows the predecessor superseded there past
/// overlap, and it frees the slot.
#[tokio::test(flavor = "multi_thread")]
async fn review_a_capped_app_moved_within_overlap_gets_a_secret_at_its_new_location() {
    let env = Env::capped().await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let k1 = env.published_key("app-one");
    assert!(env.rotate("app-one", &["--force"]).await.status.success());
    let k2 = env.published_key("app-one");
    // The move happens long after: k1's overlap at the old location has ended.
    env.age_credential("app-one", &k1, time::Duration::hours(3));
    env.age_credential("app-one", &k2, time::Duration::hours(2));
    env.age_versions("app-one", time::Duration::hours(2));
    env.edit_config(
        "secret_name = \"app-one-secret\"",
        "secret_name = \"app-one-moved\"",
    );
    let mut outs = Vec::new();
    for _ in 0..2 {
        let out = env.rotate("app-one", &[]).await;
        outs.push(format!("exit {:?}\n{}", out.status.code(), stderr(&out)));
    }
    let published = {
        let state = env.em.world().state();
        state.vaults["kv-test"]
            .secrets
            .get("app-one-moved")
            .is_some_and(|s| !s.versions.is_empty())
    };
    assert!(
        published,
        "nothing was ever published at the new location:\n{}",
        outs.join("\n---\n")
    );
    assert!(
        env.live("app-one", &k2),
        "the old location's latest stays within overlap"
    );
}

/// A person deletes and purges the secret by mistake, then creates it again by hand with the
/// value consumers had (the published one). The new history names nothing, and the credential
/// whose value the only version holds is removed as an orphan "never published".
#[tokio::test(flavor = "multi_thread")]
async fn review_a_secret_recreated_by_hand_after_a_purge_keeps_its_credential() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let k1 = env.published_key("app-one");
    let value = env.versions("app-one")[0].value.clone();
    env.age_credential("app-one", &k1, time::Duration::hours(2));
    {
        let mut state = env.em.world().state_mut();
        let vault = state.vaults.get_mut("kv-test").unwrap();
        vault.secrets.remove("app-one-secret").unwrap();
    }
    env.write_by_hand("app-one", &value, None);
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(!out.status.success(), "blocked: the latest is unmanaged");
    assert!(
        env.live("app-one", &k1),
        "the credential whose value the only version holds was removed: {:?}\n{}",
        env.writes(),
        stderr(&out)
    );
}

/// Killed while its Key Vault write is answered (the write took effect), then the state store
/// is deleted before the next run: nothing remembers the attempt, and the new credential is
/// past the orphan age. The vault's history names it, so it is the published one and stays.
#[tokio::test(flavor = "multi_thread")]
async fn review_a_kill_after_publishing_and_a_lost_store_keep_the_published_credential() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let k1 = env.published_key("app-one");
    env.fault(Operation::KeyvaultSetSecret, 1, FaultKind::HoldAfter);
    let mut child = env
        .command(&[
            "rotate",
            "--config",
            &path_str(&env.config_path),
            "app-one",
            "--force",
        ])
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
    env.em.world().release_all();
    std::fs::remove_dir_all(env.dir.path().join("state")).unwrap();
    let k2 = env.published_key("app-one");
    assert_ne!(k1, k2, "the held write took effect");
    env.age_credential("app-one", &k2, time::Duration::hours(2));
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.live("app-one", &k2), "{:?}", env.writes());
    assert!(env.live("app-one", &k1), "within overlap");
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    env.assert_published_valid("app-one");
    for v in env.versions("app-one") {
        assert!(
            !stderr(&out).contains(&v.value),
            "a secret value was printed"
        );
        assert!(
            !stdout(&out).contains(&v.value),
            "a secret value was printed"
        );
    }
}

/// Two hosts (two state directories, so two locks) run `rotate` for one client: an operator's
/// workstation and the daemon's pod. The first attempt is slow to publish (a verification that
/// took most of `verify_timeout`, then Key Vault throttling and a lost answer: an attempt can
/// stay in flight minutes past `verify_timeout + 1 min`), and the second run takes its
/// credential for an orphan and removes it; then the first write lands.
#[tokio::test(flavor = "multi_thread")]
async fn review_a_slow_publish_on_another_host_is_not_taken_for_an_orphan() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let other = env.dir.path().join("other-host.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&env.config_path)
            .unwrap()
            .replace("dir = \"state\"", "dir = \"state-other-host\""),
    )
    .unwrap();
    env.fault(Operation::KeyvaultSetSecret, 1, FaultKind::HoldBefore);
    let first = {
        let mut cmd = env.command(&[
            "rotate",
            "--config",
            &path_str(&env.config_path),
            "app-one",
            "--force",
        ]);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    assert!(
        eventually(Duration::from_secs(30), || !env
            .em
            .world()
            .held_calls()
            .is_empty())
        .await
    );
    // The attempt has been in flight for a while (time passes for Entra's dates only).
    let minted = env
        .writes()
        .into_iter()
        .filter(|w| w.0 == Operation::GraphAddPassword && w.1 < 300)
        .filter_map(|w| w.2)
        .next_back()
        .unwrap();
    env.age_credential("app-one", &minted, time::Duration::seconds(100));
    let second = env
        .cli(&["rotate", "--config", &path_str(&other), "app-one"])
        .await;
    env.em.world().release_all();
    let first = first.await.unwrap();
    let latest = env.published_key("app-one");
    assert!(
        env.live("app-one", &latest),
        "the latest version names a removed credential\n--- first host\n{}\n--- other host\n{}",
        stderr(&first),
        stderr(&second)
    );
}

/// A leaked secret is revoked just after it was published: the application's list lags and
/// does not show it yet, and the one sign-in that should tell answers AADSTS7000215 (a replica
/// that has not caught up; elsewhere the daemon treats this code as "not replicated yet"). The
/// probe takes that as "refused", so the leaked credential is "gone for certain", and the
/// rotation goes ahead with nothing revoked, while the credential still signs in. Now the
/// request is refused with "try again" (exit 1) until the read shows the credential.
#[tokio::test(flavor = "multi_thread")]
async fn review_a_revocation_is_not_skipped_on_a_lagging_replica() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let leaked = env.published_key("app-one");
    env.em.world().state_mut().settings.read_lag_ms = 120_000;
    env.em.world().add_fault(emulator::world::FaultRule {
        operation: Operation::Token,
        target: Some(env.client("app-one").object_id.clone()),
        count: 1,
        kind: Env::status(401),
    });
    env.em.world().clear_journal();
    let out = env
        .rotate("app-one", &["--force", "--revoke-previous"])
        .await;
    env.em.world().state_mut().settings.read_lag_ms = 0;
    let err = stderr(&out);
    assert!(
        !env.live("app-one", &leaked) || !out.status.success(),
        "the leaked credential is live and the command succeeded: {:?}\n{err}",
        env.writes()
    );
    // It cannot check the marker of a credential the lagging read does not show: a clear
    // refusal that says to try again is the honest answer; a silent success is not.
    if env.live("app-one", &leaked) {
        assert!(err.contains("try again"), "{err}");
    }
}

/// A tag-managing tool (Terraform's `tags = {...}` on the secret, a clean-up script) replaces
/// the tags of the latest version in place: the version and its value are unchanged, only the
/// tags are gone. Its credential is then named by nothing and removed as an orphan, though its
/// value is exactly what consumers read.
#[tokio::test(flavor = "multi_thread")]
async fn review_tags_wiped_from_the_latest_version_keep_its_credential() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let k1 = env.published_key("app-one");
    env.age_credential("app-one", &k1, time::Duration::hours(2));
    {
        let mut state = env.em.world().state_mut();
        let s = state
            .vaults
            .get_mut("kv-test")
            .unwrap()
            .secrets
            .get_mut("app-one-secret")
            .unwrap();
        s.versions.last_mut().unwrap().tags =
            std::collections::BTreeMap::from([("team".to_string(), "payments".to_string())]);
    }
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(
        env.live("app-one", &k1),
        "the credential whose value is the latest version was removed: {:?}\n{}",
        env.writes(),
        stderr(&out)
    );
}

/// Soft-deleted by a person (the client is blocked, nothing removed), then recovered: the
/// history comes back as it was, and the credentials consumers may hold are all still there;
/// the superseded one retires only after its own overlap.
#[tokio::test(flavor = "multi_thread")]
async fn review_a_soft_deleted_then_recovered_secret_loses_nothing() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let k1 = env.published_key("app-one");
    assert!(env.rotate("app-one", &["--force"]).await.status.success());
    let k2 = env.published_key("app-one");
    env.age_credential("app-one", &k1, time::Duration::hours(2));
    env.age_credential("app-one", &k2, time::Duration::hours(2));
    let deleted = env.soft_delete("app-one");
    assert!(!env.rotate("app-one", &[]).await.status.success());
    {
        let mut state = env.em.world().state_mut();
        let vault = state.vaults.get_mut("kv-test").unwrap();
        vault.deleted.remove("app-one-secret");
        vault.secrets.insert("app-one-secret".into(), deleted);
    }
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    assert!(env.live("app-one", &k1) && env.live("app-one", &k2));
    env.assert_published_valid("app-one");
    env.assert_foreign_untouched("app-one");
}

//! Azure failing in the ways it does: throttling, 5xx, lost answers, crashes, replication
//! delay, tenant limits.

use std::time::Duration;

use emulator::world::FaultKind;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn honours_retry_after_on_a_throttled_add_password() {
    let env = Env::new(Setup::default()).await;
    env.fault(
        Operation::GraphAddPassword,
        1,
        FaultKind::Status {
            status: 429,
            code: None,
            retry_after: Some("1.5".into()),
        },
    );
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let adds: Vec<_> = env
        .journal()
        .into_iter()
        .filter(|e| e.operation == Operation::GraphAddPassword)
        .collect();
    assert_eq!(
        adds.iter().map(|e| e.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    let gap = adds[1].at - adds[0].at;
    assert!(
        gap >= time::Duration::milliseconds(1400),
        "waited {gap} after Retry-After: 1.5"
    );
    env.assert_published_valid("app-one");
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_server_errors_on_reads_and_on_the_key_vault_write() {
    let env = Env::new(Setup::default()).await;
    env.fault(Operation::GraphGetApplication, 1, Env::status(500));
    env.fault(Operation::KeyvaultSetSecret, 2, Env::status(503));
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let sets: Vec<u16> = env
        .journal()
        .iter()
        .filter(|e| e.operation == Operation::KeyvaultSetSecret)
        .map(|e| e.status)
        .collect();
    assert_eq!(sets, vec![503, 503, 200]);
    env.assert_published_valid("app-one");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_add_password_answer_is_never_repeated_blindly() {
    let env = Env::new(Setup::default()).await;
    env.fault(Operation::GraphAddPassword, 1, FaultKind::DropAfter);
    let out = env.rotate("app-one", &[]).await;
    assert!(
        !out.status.success(),
        "the attempt whose answer was lost fails"
    );
    assert!(stderr(&out).contains("lost"), "{}", stderr(&out));
    let writes = env.writes();
    let lost_key = writes[0]
        .2
        .clone()
        .expect("the emulator journaled the credential it created");
    assert_eq!(writes[0].1, 0, "the connection was dropped");
    assert_eq!(
        writes[1..],
        [(Operation::GraphRemovePassword, 204, Some(lost_key.clone()))],
        "the credential it created was found by its marker and removed, and addPassword was not repeated"
    );
    assert!(!env.passwords("app-one").iter().any(|(k, _)| *k == lost_key));

    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    env.assert_published_valid("app-one");
    env.assert_foreign_untouched("app-one");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_add_password_and_publishing_leaves_an_orphan_removed_after_its_age() {
    let env = Env::new(Setup::default()).await;
    env.fault(Operation::KeyvaultSetSecret, 1, FaultKind::HoldBefore);
    let config = path_str(&env.config_path);
    let mut child = env
        .command(&["rotate", "--config", &config, "app-one"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || !env
            .em
            .world()
            .held_calls()
            .is_empty())
        .await,
        "reached the Key Vault write"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let orphan = env.writes()[0].2.clone().unwrap();
    assert!(env.versions("app-one").is_empty(), "nothing was published");
    assert!(
        env.passwords("app-one").iter().any(|(k, _)| *k == orphan),
        "the orphan exists"
    );
    env.em.world().clear_journal();

    // The attempt reached the publishing step: its write may still land (Key Vault reads lag
    // writes), so it is not removed at once. A new secret is published meanwhile.
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        env.passwords("app-one").iter().any(|(k, _)| *k == orphan),
        "kept until the orphan age: {:?}",
        env.writes()
    );
    env.assert_published_valid("app-one");

    // Past the orphan age (verify_timeout + 5 min), in a history that began before it, a fresh
    // listing that does not name it is the proof.
    env.age_versions("app-one", time::Duration::minutes(30));
    env.age_credential("app-one", &orphan, time::Duration::minutes(11));
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.writes(),
        vec![(Operation::GraphRemovePassword, 204, Some(orphan.clone()))]
    );
    let listed = env
        .journal()
        .iter()
        .filter(|e| e.operation == Operation::KeyvaultListVersions)
        .count();
    assert!(listed >= 2, "the history was listed again before removing");
    env.assert_published_valid("app-one");
    env.assert_foreign_untouched("app-one");
    env.em.world().release_all();
}

#[tokio::test(flavor = "multi_thread")]
async fn waits_for_propagation_and_needs_consecutive_successes() {
    // Replication on: a new secret starts working between 1 and 3 s after addPassword.
    let mut settings = fast();
    settings.propagation_min_ms = 1_000;
    settings.propagation_max_ms = 3_000;
    let env = Env::new(Setup {
        settings,
        ..Setup::default()
    })
    .await;
    env.write_config("verify_successes = 2", "");
    let text = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace("verify_successes = 1\n", "");
    std::fs::write(&env.config_path, text).unwrap();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let app_id = env.client("app-one").app_id.clone();
    let journal = env.journal();
    let set = journal
        .iter()
        .position(|e| e.operation == Operation::KeyvaultSetSecret)
        .unwrap();
    let verifies: Vec<_> = journal[..set]
        .iter()
        .filter(|e| e.operation == Operation::Token && e.caller.as_deref() == Some(app_id.as_str()))
        .collect();
    assert_eq!(
        verifies.first().map(|e| e.status),
        Some(401),
        "the first attempt came before propagation"
    );
    let tail: Vec<u16> = verifies.iter().rev().take(2).map(|e| e.status).collect();
    assert_eq!(
        tail,
        vec![200, 200],
        "published after two consecutive successes"
    );
    let last_two: Vec<_> = verifies.iter().rev().take(2).collect();
    assert!(
        last_two[0].at - last_two[1].at >= time::Duration::milliseconds(4900),
        "successes at least 5 s apart"
    );
    env.assert_published_valid("app-one");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_personal_account_app_with_a_foreign_second_password_is_reported_not_forced() {
    let env = Env::new(Setup {
        clients: vec![("consumer-app", "AzureADandPersonalMicrosoftAccount")],
        ..Setup::default()
    })
    .await;
    assert!(
        env.rotate("consumer-app", &[]).await.status.success(),
        "first rotation fits: foreign + new"
    );
    let out = env.rotate("consumer-app", &["--force"]).await;
    assert!(!out.status.success());
    let foreign = env
        .app("consumer-app")
        .passwords
        .iter()
        .find(|p| p.display_name.as_deref() == Some("made in the portal"))
        .unwrap()
        .key_id
        .clone();
    assert!(
        stderr(&out).contains(&foreign),
        "names the foreign key id: {}",
        stderr(&out)
    );
    assert_eq!(
        env.writes()
            .iter()
            .filter(|w| w.0 == Operation::GraphAddPassword)
            .count(),
        1,
        "no addPassword against the cap"
    );
    env.assert_published_valid("consumer-app");
    env.assert_foreign_untouched("consumer-app");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_lifetime_policy_rejection_is_a_clear_error_without_retries() {
    let mut settings = fast();
    settings.max_password_lifetime_secs = Some(1800);
    let env = Env::new(Setup {
        settings,
        ..Setup::default()
    })
    .await;
    let out = env.rotate("app-one", &[]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("CredentialInvalidLifetimeAsPerAppPolicy"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        env.writes().len(),
        1,
        "one refused addPassword, no retry storm: {:?}",
        env.writes()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_soft_deleted_vault_secret_name_is_a_clear_error_before_anything_is_written() {
    let env = Env::new(Setup::default()).await;
    {
        let mut state = env.em.world().state_mut();
        let vault = state.vaults.get_mut("kv-test").unwrap();
        vault.deleted.insert(
            "app-one-secret".into(),
            emulator::model::DeletedSecret {
                secret: emulator::model::VaultSecret {
                    name: "app-one-secret".into(),
                    versions: vec![],
                },
                deleted_date: 0,
                scheduled_purge_date: 0,
            },
        );
    }
    let out = env.rotate("app-one", &[]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("soft-deleted") && err.contains("recover it") && err.contains("purge it"),
        "{err}"
    );
    assert!(
        env.all_writes().is_empty(),
        "no credential is made for a name that cannot be written: {:?}",
        env.all_writes()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_soft_deleted_between_the_read_and_the_write_removes_the_new_credential() {
    let env = Env::new(Setup::default()).await;
    env.fault(
        Operation::KeyvaultSetSecret,
        1,
        FaultKind::Status {
            status: 409,
            code: Some("ObjectIsDeletedButRecoverable".into()),
            retry_after: None,
        },
    );
    let out = env.rotate("app-one", &[]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ObjectIsDeletedButRecoverable"),
        "{}",
        stderr(&out)
    );
    let sets = env
        .all_writes()
        .iter()
        .filter(|w| w.0 == Operation::KeyvaultSetSecret)
        .count();
    assert_eq!(sets, 1, "a permanent 409 is not retried");
    let own: Vec<_> = env
        .passwords("app-one")
        .into_iter()
        .filter(|(_, n)| {
            n.as_deref()
                .is_some_and(|n| n.starts_with("secret-rotator:"))
        })
        .collect();
    assert!(
        own.is_empty(),
        "the unpublished credential was removed (Key Vault refused the write): {own:?}"
    );
}

//! Removal needs positive evidence: what the daemon does when the world changes under it (a
//! moved client, a soft-deleted secret, a publish whose answer was lost, revocations of what it
//! does not own, a busy lock, blocked clients, reloads). Each test reproduces a defect that lost
//! a working secret or misreported one, and fails without its fix.

use std::collections::BTreeMap;
use std::time::Duration;

use emulator::model::{Seed, SeedVault, VaultRole};
use emulator::world::FaultKind;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_client_keeps_the_credential_published_at_its_old_location() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let k1 = env.published_key("app-one");
    // Long past the orphan age: only the marker's location keeps it now.
    env.age_credential("app-one", &k1, time::Duration::hours(2));

    // Moved to a vault where the daemon may only read: nothing exists there yet.
    let report = env
        .em
        .seed(Seed {
            tenant_id: None,
            applications: vec![],
            vaults: vec![SeedVault {
                name: "kv-read-only".into(),
                access: BTreeMap::from([(env.daemon_app_id.clone(), VaultRole::User)]),
            }],
            settings: None,
            ..Default::default()
        })
        .await
        .unwrap();
    let original = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(
        &env.config_path,
        original.replace(&env.vault_url, &report.vaults["kv-read-only"]),
    )
    .unwrap();
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(!out.status.success(), "the publish is refused (403)");
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    assert!(
        !env.removals().contains(&k1),
        "the credential consumers of the old location read was removed: {:?}",
        env.writes()
    );
    assert!(env.live("app-one", &k1));

    // Moved to another secret name in a vault it may write: published there first, the old
    // credential stays within overlap.
    std::fs::write(
        &env.config_path,
        original.replace(
            "secret_name = \"app-one-secret\"",
            "secret_name = \"app-one-moved\"",
        ),
    )
    .unwrap();
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.live("app-one", &k1), "kept within overlap");
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    let plan = env
        .cli(&["plan", "--config", &path_str(&env.config_path)])
        .await;
    assert!(
        stdout(&plan).contains("another vault or secret name"),
        "{}",
        stdout(&plan)
    );
    env.assert_foreign_untouched("app-one");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_soft_deleted_secret_blocks_the_client_and_removes_nothing() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    assert!(env.rotate("app-one", &["--force"]).await.status.success());
    let keys: Vec<String> = env
        .versions("app-one")
        .iter()
        .map(|v| v.tags["key-id"].clone())
        .collect();
    // Both old enough for every age rule; the first superseded longer than overlap.
    for k in &keys {
        env.age_credential("app-one", k, time::Duration::hours(2));
    }
    env.age_versions("app-one", time::Duration::hours(1));
    env.soft_delete("app-one");
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("soft-deleted") && err.contains("recover") && err.contains("purge"),
        "{err}"
    );
    assert!(env.writes().is_empty(), "{:?}", env.writes());
    for k in &keys {
        assert!(env.live("app-one", k), "{k} was removed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_whose_outcome_is_unknown_is_never_followed_by_a_removal_without_a_read() {
    let env = Env::new(Setup::default()).await;
    env.edit_config(
        "[azure.credential]",
        "request_timeout = \"2s\"\n\n[azure.credential]",
    );
    // The write takes effect and its answer never comes (the request times out); then the
    // history cannot be read.
    env.fault(Operation::KeyvaultSetSecret, 1, FaultKind::HoldAfter);
    let rotate = {
        let mut cmd = env.command(&["rotate", "--config", &path_str(&env.config_path), "app-one"]);
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
    env.fault(Operation::KeyvaultListVersions, 100, Env::status(403));
    let out = rotate.await.unwrap();
    env.em.world().release_all();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown"), "{}", stderr(&out));
    let key = env.published_key("app-one");
    assert!(
        env.live("app-one", &key),
        "the credential Key Vault's latest version names was removed: {:?}",
        env.writes()
    );
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    assert_eq!(
        env.versions("app-one").len(),
        1,
        "no second write without a read of the history"
    );

    env.em.world().clear_faults();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    env.assert_published_valid("app-one");
    assert_eq!(env.versions("app-one").len(), 1, "no second version");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_publish_answer_is_written_at_most_once_more() {
    let env = Env::new(Setup::default()).await;
    // Key Vault's listing lags: the lost write is not visible when it is read.
    env.fault(Operation::KeyvaultSetSecret, 10, FaultKind::DropAfter);
    let out = env.rotate("app-one", &[]).await;
    let sets = env
        .writes()
        .iter()
        .filter(|w| w.0 == Operation::KeyvaultSetSecret)
        .count();
    assert!(sets <= 2, "{sets} writes of one value");
    // The history showed the first write: published, not failed.
    assert!(out.status.success(), "{}", stderr(&out));
    env.assert_published_valid("app-one");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_refuses_what_this_installation_and_client_do_not_own() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let k1 = env.published_key("app-one");

    // The installation was renamed: the published credential carries the old marker.
    let original = std::fs::read_to_string(&env.config_path).unwrap();
    env.edit_config("instance = \"test\"", "instance = \"renamed\"");
    env.em.world().clear_journal();
    let out = env
        .rotate("app-one", &["--force", "--revoke-previous"])
        .await;
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("marker"), "{}", stderr(&out));
    assert!(env.writes().is_empty(), "refused before writing anything");
    assert!(env.live("app-one", &k1));
    std::fs::write(&env.config_path, &original).unwrap();

    // A forged tag: whoever may write the vault points key-id at a credential made in the
    // portal. Ownership comes from Entra's marker, never from the tag.
    let foreign = env
        .passwords("app-one")
        .into_iter()
        .find(|(_, n)| n.as_deref() == Some("made in the portal"))
        .unwrap()
        .0;
    env.edit_versions("app-one", |versions| {
        let latest = versions.last_mut().unwrap();
        latest.tags.insert("key-id".into(), foreign.clone());
    });
    env.em.world().clear_journal();
    let out = env
        .rotate("app-one", &["--force", "--revoke-previous"])
        .await;
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(env.writes().is_empty(), "{:?}", env.writes());
    env.assert_foreign_untouched("app-one");

    // Through the admin API: 409 with the reason.
    std::fs::write(&env.config_path, &original).unwrap();
    env.edit_config("schedule = \"*/2 * * * * *\"", "schedule = \"0 0 0 1 1 *\"");
    let daemon = env.spawn_daemon(&[]);
    let (status, body) = env.admin_rotate(&daemon, "?revoke_previous=true").await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("refusing to revoke"), "{body}");
    env.assert_foreign_untouched("app-one");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forced_rotation_waits_for_a_busy_lock_instead_of_being_dropped() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let k1 = env.published_key("app-one");
    env.edit_config("schedule = \"*/2 * * * * *\"", "schedule = \"0 0 0 1 1 *\"");
    // Another process (a `rotate` from the command line) holds the client.
    let store = secret_rotator::store::Store::open(&env.dir.path().join("state")).unwrap();
    let lock = store
        .try_lock("app-one")
        .unwrap()
        .expect("the client is free");
    let daemon = env.spawn_daemon(&[]);
    let (status, _) = env.admin_rotate(&daemon, "").await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, clients) = daemon.get("/v1/clients").await.unwrap();
    assert!(clients.contains("\"in_flight\":true"), "{clients}");
    drop(lock);
    assert!(
        eventually(Duration::from_secs(30), || env.published_key("app-one")
            != k1)
        .await,
        "the forced rotation ran once the lock was free: {}",
        daemon.stderr()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_blocked_from_its_first_reconcile_exports_what_was_observed() {
    let env = Env::new(Setup::default()).await;
    // A version written by hand, without tags: the client is blocked (adopt is off).
    let exp = time::OffsetDateTime::now_utc() + time::Duration::days(3);
    env.write_by_hand("app-one", "written-by-hand", Some(exp));
    let daemon = env.spawn_daemon(&[]);
    let mut metrics = String::new();
    let seen = eventually(Duration::from_secs(30), || {
        metrics = futures_lite_get(&daemon, "/metrics");
        metrics.lines().any(|l| {
            l.strip_prefix("secret_rotator_rotations_total{client=\"app-one\",result=\"failure\"} ")
                .is_some_and(|n| n != "0")
        })
    })
    .await;
    assert!(seen, "{metrics}");
    let expiry = format!(
        "secret_rotator_secret_expiry_timestamp_seconds{{client=\"app-one\"}} {}",
        exp.unix_timestamp()
    );
    assert!(metrics.contains(&expiry), "{metrics}");
    assert!(
        metrics.contains("secret_rotator_credential_expiry_timestamp_seconds{client=\"app-one\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("secret_rotator_client_ready{client=\"app-one\"} 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_removed_by_a_reload_during_its_reconcile_leaves_no_series() {
    let env = Env::new(Setup {
        clients: vec![("app-one", "AzureADMyOrg"), ("app-two", "AzureADMyOrg")],
        ..Setup::default()
    })
    .await;
    env.em.world().add_fault(emulator::world::FaultRule {
        operation: Operation::GraphAddPassword,
        target: Some(env.client("app-one").object_id.clone()),
        count: 1,
        kind: FaultKind::HoldBefore,
    });
    let daemon = env.spawn_daemon(&[]);
    assert!(
        eventually(Duration::from_secs(30), || !env
            .em
            .world()
            .held_calls()
            .is_empty())
        .await
    );
    // Rewrite the config without app-one and reload while its reconcile is in flight.
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let cut = text.find("\n[[clients]]\nname = \"app-one\"").unwrap();
    let rest = &text[cut + 1..];
    let end = rest[1..]
        .find("\n[[clients]]")
        .map_or(rest.len(), |e| e + 1);
    std::fs::write(
        &env.config_path,
        format!("{}{}", &text[..cut], &rest[end..]),
    )
    .unwrap();
    daemon.signal("HUP");
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.em.world().release_all();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let metrics = futures_lite_get(&daemon, "/metrics");
    assert!(metrics.contains("client=\"app-two\""), "{metrics}");
    assert!(!metrics.contains("client=\"app-one\""), "{metrics}");
}

/// A blocking GET for use inside `eventually`'s closure.
fn futures_lite_get(daemon: &Daemon, path: &str) -> String {
    let url = format!("http://{}{path}", daemon.addr);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            match reqwest::get(&url).await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
        })
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_soft_deleted_between_observing_and_removing_stops_the_removals() {
    let env = Env::new(Setup::default()).await;
    for extra in [&[][..], &["--force"], &["--force"]] {
        assert!(env.rotate("app-one", extra).await.status.success());
    }
    let keys: Vec<String> = env
        .versions("app-one")
        .iter()
        .map(|v| v.tags["key-id"].clone())
        .collect();
    // The two older credentials are superseded for longer than overlap.
    env.age_versions("app-one", time::Duration::hours(1));
    // The first removal takes effect and its answer is held; meanwhile the secret is deleted.
    env.em.world().add_fault(emulator::world::FaultRule {
        operation: Operation::GraphRemovePassword,
        target: Some(env.client("app-one").object_id.clone()),
        count: 1,
        kind: FaultKind::HoldAfter,
    });
    let rotate = {
        let mut cmd = env.command(&["rotate", "--config", &path_str(&env.config_path), "app-one"]);
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
    env.soft_delete("app-one");
    env.em.world().release_all();
    let _ = rotate.await.unwrap();
    let removed = env.removals();
    assert_eq!(
        removed.len(),
        1,
        "only the removal decided before the soft-delete: {:?}",
        env.writes()
    );
    assert!(keys[..2].iter().any(|k| env.live("app-one", k)));
    assert!(env.live("app-one", &keys[2]));
}

//! A two-password application whose client moves (its `secret_name` changes): the credential
//! superseded at the old location frees its slot only on a fresh read of the old location that
//! succeeded; a refused read, a soft-deleted old secret or a lost store is no evidence, and
//! what consumers of the old location read stays until `overlap` after the new publish.

use emulator::world::{FaultKind, FaultRule};

use crate::harness::*;

/// The capped app after two rotations at `app-one-secret`, long enough ago that the first
/// credential's overlap there has ended, then moved to `app-one-moved`. Returns (first, second).
async fn moved_with_both_slots_taken() -> (Env, String, String) {
    let env = Env::capped().await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let k1 = env.published_key("app-one");
    assert!(env.rotate("app-one", &["--force"]).await.status.success());
    let k2 = env.published_key("app-one");
    env.age_credential("app-one", &k1, time::Duration::hours(3));
    env.age_credential("app-one", &k2, time::Duration::hours(2));
    env.age_versions("app-one", time::Duration::hours(2));
    env.edit_config(
        "secret_name = \"app-one-secret\"",
        "secret_name = \"app-one-moved\"",
    );
    env.em.world().clear_journal();
    (env, k1, k2)
}

fn published_at_new_location(env: &Env) -> bool {
    env.em.world().state().vaults["kv-test"]
        .secrets
        .get("app-one-moved")
        .is_some_and(|s| !s.versions.is_empty())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_capped_app_frees_no_slot_without_a_read_of_its_old_secret() {
    let (env, k1, k2) = moved_with_both_slots_taken().await;

    // The old secret's listing is refused: no evidence.
    env.em.world().add_fault(FaultRule {
        operation: Operation::KeyvaultListVersions,
        target: Some("kv-test/app-one-secret".into()),
        count: 100,
        kind: Env::status(403),
    });
    let out = env.rotate("app-one", &[]).await;
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    assert!(
        stderr(&out).contains("other slot"),
        "the client waits for a slot:\n{}",
        stderr(&out)
    );
    env.em.world().clear_faults();

    // The old secret is soft-deleted: no evidence either.
    let old = env.soft_delete("app-one");
    let _ = env.rotate("app-one", &[]).await;
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    assert!(!published_at_new_location(&env));

    // Recovered: a read proves k1 superseded there past overlap; it goes, the new location
    // gets its secret, and k2 (what consumers of the old name read) stays.
    {
        let mut state = env.em.world().state_mut();
        let vault = state.vaults.get_mut("kv-test").unwrap();
        vault.deleted.remove("app-one-secret");
        vault.secrets.insert("app-one-secret".into(), old);
    }
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.removals(), [k1], "{:?}", env.writes());
    assert!(published_at_new_location(&env), "{}", stderr(&out));
    assert!(env.live("app-one", &k2));
    assert!(
        stderr(&out).contains("previous location"),
        "the reason names the old location:\n{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_capped_app_with_its_store_lost_removes_nothing() {
    let (env, k1, k2) = moved_with_both_slots_taken().await;
    // The old location's address was only in the store; the markers carry its tag alone.
    std::fs::remove_dir_all(env.dir.path().join("state")).unwrap();
    let out = env.rotate("app-one", &[]).await;
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    assert!(env.live("app-one", &k1) && env.live("app-one", &k2));
    assert!(!published_at_new_location(&env));
    assert!(
        stderr(&out).contains("other slot"),
        "the client waits for a slot:\n{}",
        stderr(&out)
    );
}

/// A transient failure of the old location's read is retried briefly and is no evidence.
#[tokio::test(flavor = "multi_thread")]
async fn a_moved_capped_app_keeps_its_credentials_while_the_old_secret_answers_500() {
    let (env, _, _) = moved_with_both_slots_taken().await;
    env.em.world().add_fault(FaultRule {
        operation: Operation::KeyvaultGetSecret,
        target: Some("kv-test/app-one-secret".into()),
        count: 1000,
        kind: FaultKind::Status {
            status: 500,
            code: None,
            retry_after: None,
        },
    });
    let _ = env.rotate("app-one", &[]).await;
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    assert!(!published_at_new_location(&env));
}

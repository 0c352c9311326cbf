//! The fourth cold review, of `SlotHeldUnproven` (a two-password app whose other slot no rule
//! will retire by time), against the emulator. Tests marked `ignore` reproduce defects still
//! open (`cargo test --test it review4 -- --include-ignored`).

use emulator::world::FaultRule;

use crate::harness::*;

/// A two-password app: the process dies while publishing a forced rotation's credential k2 at
/// the client's secret name (k1 stays the latest there), and minutes later the client moves to
/// a new name. Both slots hold credentials made for the old name, and nothing is published at
/// the new one. A read of the old name shows k2 never named there after its history began:
/// once the orphan age has passed, `OrphanAtFormer` removes it and the slot frees. Until then
/// the client should wait for the slot (a time is known), not be told to remove a credential
/// by hand, and certainly not k1, the one consumers of the old name read.
#[tokio::test(flavor = "multi_thread")]
async fn review4_a_young_orphan_at_the_former_location_is_waited_for_not_removed_by_hand() {
    let env = Env::capped().await;
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let k1 = env.published_key("app-one");
    let k2 = env
        .killed_while_publishing("app-one", "kv-test/app-one-secret")
        .await;
    assert_eq!(env.published_key("app-one"), k1, "k2's value never landed");
    env.edit_config(
        "secret_name = \"app-one-secret\"",
        "secret_name = \"app-one-moved\"",
    );
    let out = env.rotate("app-one", &[]).await;
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !text.contains(&k1),
        "a person is told to remove k1 ({k1}), what the old name's consumers read: {text}"
    );
    assert!(
        !text.contains("remove it by hand"),
        "a wait of minutes frees the slot (the orphan rule at the old name), yet a person is told to remove a credential: {text}"
    );
    assert!(
        text.contains("the other slot frees at"),
        "the client waits for the slot: {text}"
    );
    assert!(env.removals().is_empty(), "{:?}", env.writes());
    // An hour on (past the orphan age): the orphan goes, and the new name gets its secret.
    for key in [&k1, &k2] {
        env.age_credential("app-one", key, time::Duration::hours(1));
    }
    env.age_versions("app-one", time::Duration::hours(1));
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(env.removals(), vec![k2.clone()], "{:?}", env.writes());
    assert!(
        env.live("app-one", &k1),
        "what the old name's consumers read"
    );
    assert!(
        env.em.world().state().vaults["kv-test"]
            .secrets
            .contains_key("app-one-moved"),
        "{:?}",
        env.writes()
    );
}

/// A two-password app moves to a new name, publishes there (k2), and moves back within
/// overlap, where k1 is still published. A forced rotation right after the move back finds k2
/// (made for the name it left, what consumers there read) in the other slot. The migration
/// rule retires k2 `overlap` after the client arrived back, and the store records that arrival
/// at this very reconcile: the next one waits for that time. The first must not tell a person
/// to remove k2 by hand.
#[tokio::test(flavor = "multi_thread")]
async fn review4_the_first_forced_rotation_after_moving_back_waits_for_the_slot() {
    let env = Env::capped().await;
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let k1 = env.published_key("app-one");
    let (at_a, at_b) = (
        "secret_name = \"app-one-secret\"",
        "secret_name = \"app-one-moved\"",
    );
    env.edit_config(at_a, at_b);
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let k2 = env
        .passwords("app-one")
        .into_iter()
        .map(|p| p.0)
        .find(|k| *k != k1)
        .expect("k2, published at the new name");
    env.edit_config(at_b, at_a);
    let mut texts = Vec::new();
    for _ in 0..2 {
        let out = env.rotate("app-one", &["--force"]).await;
        texts.push(format!("{}{}", stdout(&out), stderr(&out)));
    }
    for (i, text) in texts.iter().enumerate() {
        assert!(
            !text.contains("remove it by hand") && text.contains("the other slot frees at"),
            "forced rotation {} after the move back: waits for k2's migration ({k2}), not a person:\n{}",
            i + 1,
            texts.join("\n---\n")
        );
    }
    assert!(env.removals().is_empty(), "{:?}", env.writes());
}

/// A two-password app moves within overlap of a rotation: k2 is the latest at the old name
/// and k1 was superseded there minutes ago. A read of the old name times k1's slot (its overlap
/// there). When that read fails (here a 403: the daemon's access to the old vault was taken
/// away; a 503 for ten seconds does the same), nothing times either credential and the client
/// is blocked. The failure must say what happened - the old name could not be read - not that
/// the store holds no address for it, which sends a person looking in the wrong place.
#[tokio::test(flavor = "multi_thread")]
async fn review4_a_failed_read_of_the_former_location_is_named_as_such() {
    let env = Env::capped().await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let k1 = env.published_key("app-one");
    assert!(env.rotate("app-one", &["--force"]).await.status.success());
    env.edit_config(
        "secret_name = \"app-one-secret\"",
        "secret_name = \"app-one-moved\"",
    );
    // Readable: k1's slot frees when its overlap at the old name ends.
    let out = env.rotate("app-one", &[]).await;
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("the other slot frees at"), "{text}");
    for operation in [
        Operation::KeyvaultListVersions,
        Operation::KeyvaultGetSecret,
    ] {
        env.em.world().add_fault(FaultRule {
            operation,
            target: Some("kv-test/app-one-secret".into()),
            count: 1000,
            kind: Env::status(403),
        });
    }
    let out = env.rotate("app-one", &[]).await;
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains(&k1), "{text}");
    assert!(
        !text.contains("does not hold"),
        "the store holds the old name's address; its read failed: {text}"
    );
    let blocked_line = text
        .lines()
        .find(|l| l.contains("holds the other slot"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        blocked_line.contains("app-one-secret") && blocked_line.contains("could not be read"),
        "names the location whose read failed: {blocked_line}"
    );
    assert!(env.removals().is_empty(), "{:?}", env.writes());
}

/// A two-password app with `adopt = true` moves to a new name; the process dies while
/// publishing its first credential there (q), and a person, to give consumers at the new name
/// a secret, copies the old name's value into it by hand. Both slots are held and nothing times
/// either: a person must act. Consumers at both names read k1's value; q's value is nowhere. The
/// one to name is q, never k1.
#[tokio::test(flavor = "multi_thread")]
async fn review4_the_credential_whose_value_consumers_read_here_is_not_the_one_named() {
    let env = Env::capped().await;
    env.edit_config("overlap = \"20m\"", "overlap = \"20m\"\nadopt = true");
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let k1 = env.published_key("app-one");
    let value = env.versions("app-one").last().unwrap().value.clone();
    env.edit_config(
        "secret_name = \"app-one-secret\"",
        "secret_name = \"app-one-moved\"",
    );
    let q = env
        .killed_while_publishing("app-one", "kv-test/app-one-moved")
        .await;
    // The copy by hand, minutes later.
    for key in [&k1, &q] {
        env.age_credential("app-one", key, time::Duration::minutes(2));
    }
    env.age_versions("app-one", time::Duration::minutes(2));
    {
        let mut state = env.em.world().state_mut();
        let vault = state.vaults.get_mut("kv-test").unwrap();
        let mut copy = vault.secrets["app-one-secret"].versions[0].clone();
        copy.version = uuid::Uuid::new_v4().simple().to_string();
        copy.tags.clear();
        copy.created = time::OffsetDateTime::now_utc().unix_timestamp();
        copy.updated = copy.created;
        assert_eq!(copy.value, value);
        vault.secrets.insert(
            "app-one-moved".into(),
            emulator::model::VaultSecret {
                name: "app-one-moved".into(),
                versions: vec![copy],
            },
        );
    }
    let out = env.rotate("app-one", &[]).await;
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let blocked_line = text
        .lines()
        .find(|l| l.contains("holds the other slot"))
        .unwrap_or_else(|| panic!("blocked: {text}"));
    assert!(
        !blocked_line.contains(&k1) && blocked_line.contains(&q),
        "consumers at both names read k1 ({k1}); q ({q}) is read nowhere: {blocked_line}"
    );
    assert!(env.removals().is_empty(), "{:?}", env.writes());
}

//! The third cold review of the two-second removal margin and of
//! `SlotKeptUnderHandWrittenVersion`, against the emulator. Tests marked `ignore` reproduce
//! defects still open (`cargo test --test it review3 -- --include-ignored`).

use crate::harness::*;

/// Removals of `client`'s credentials that took effect, per the journal.
fn removals(env: &Env) -> Vec<String> {
    env.journal()
        .into_iter()
        .filter(|e| e.operation == Operation::GraphRemovePassword && e.effective)
        .filter_map(|e| e.key_id)
        .collect()
}

/// Sets `enabled` of the version of `client`'s secret whose id is `version`.
fn set_enabled(env: &Env, client: &str, version: &str, enabled: bool) {
    env.edit_versions(client, |versions| {
        let v = versions.iter_mut().find(|v| v.version == version).unwrap();
        // As Key Vault's PATCH does: the change is dated.
        v.enabled = enabled;
        v.updated = time::OffsetDateTime::now_utc().unix_timestamp();
    })
}

/// A two-password app with `adopt = true` whose slots hold k1, the last credential published
/// (2 h ago), and k2, an own credential made for the client's location 1 h ago that no version
/// names (its publish's outcome was unknown and the write never landed); then a person writes
/// a version by hand and disables it. Returns (k1, k2, the hand-written version's id).
async fn capped_with_an_orphan_under_a_disabled_hand_written_version(
    env: &Env,
) -> (String, String, String) {
    env.edit_config("overlap = \"20m\"", "overlap = \"20m\"\nadopt = true");
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let k1 = env.published_key("app-one");
    // k2: made like k1 (same location tag in its rotation id, another random part), with a
    // value of its own; never published.
    let k2 = uuid::Uuid::new_v4().to_string();
    env.edit_app("app-one", |app| {
        let mut p = app
            .passwords
            .iter()
            .find(|p| p.key_id == k1)
            .unwrap()
            .clone();
        let name = p.display_name.clone().unwrap();
        let (prefix, rotation_id) = name.rsplit_once(':').unwrap();
        let (tag, _) = rotation_id.split_once('-').unwrap();
        p.display_name = Some(format!("{prefix}:{tag}-{}", uuid::Uuid::new_v4().simple()));
        p.key_id = k2.clone();
        p.secret_text = "zQ9~never-published-orphan-value-0123456".into();
        p.hint = "zQ9".into();
        app.passwords.push(p);
    });
    env.age_versions("app-one", time::Duration::hours(2));
    env.age_credential("app-one", &k1, time::Duration::hours(2));
    env.age_credential("app-one", &k2, time::Duration::hours(1));
    env.write_by_hand("app-one", "pasted-by-hand", None);
    let hand = env.versions("app-one").last().unwrap().version.clone();
    set_enabled(env, "app-one", &hand, false);
    (k1, k2, hand)
}

/// Attack on "the new Blocked reason fails to appear when it should". k1 is kept (the last
/// managed credential under a version written by hand); k2 is an orphan, but the disabled
/// version's value cannot be read, so it may be k2's and k2 is kept too. Nothing frees a slot
/// by time, yet the planner computes the orphan age for k2 as when its slot frees, and the
/// client "waits for a slot" a minute at a time, forever, as a wait (not a failure).
#[tokio::test(flavor = "multi_thread")]
async fn a_capped_app_whose_orphan_a_disabled_hand_written_version_may_hold_is_blocked_with_the_step()
 {
    let env = Env::capped().await;
    let (_k1, k2, hand) = capped_with_an_orphan_under_a_disabled_hand_written_version(&env).await;
    let out = env.rotate("app-one", &[]).await;
    assert!(removals(&env).is_empty(), "{:?}", env.writes());
    assert!(
        !out.status.success() && stderr(&out).contains("enable that version"),
        "only a person can free the slot, and the client must say how: {}{}",
        stdout(&out),
        stderr(&out)
    );
    // The step it names: enabling the version proves k2 unpublished, and the secret is
    // adopted in its slot.
    set_enabled(&env, "app-one", &hand, true);
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(removals(&env), vec![k2]);
    assert_eq!(
        env.versions("app-one")
            .last()
            .unwrap()
            .tags
            .get("managed-by")
            .map(String::as_str),
        Some("secret-rotator")
    );
}

/// Attack on "the Display text gives a step that actually unblocks": the second step it names,
/// removing one of the two credentials by hand, frees the slot and the secret is adopted; the
/// other kept credential is not removed before overlap has passed since the hand-written
/// version superseded it.
#[tokio::test(flavor = "multi_thread")]
async fn removing_a_kept_credential_by_hand_unblocks_a_capped_app_under_a_disabled_version() {
    let env = Env::capped().await;
    // The hand-written version came 10 minutes ago (less than overlap).
    env.capped_under_a_disabled_hand_written_version(time::Duration::minutes(10))
        .await;
    let keys: Vec<String> = env.passwords("app-one").into_iter().map(|p| p.0).collect();
    let out = env.rotate("app-one", &[]).await;
    assert!(!out.status.success(), "blocked: {}", stderr(&out));
    assert!(
        stderr(&out).contains("remove one of the two credentials by hand"),
        "{}",
        stderr(&out)
    );
    // The person removes one of them.
    let gone = keys[0].clone();
    let kept = keys[1].clone();
    env.edit_app("app-one", |app| {
        app.passwords.retain(|p| p.key_id != gone);
    });
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let latest = env.versions("app-one").last().cloned().unwrap();
    assert_eq!(
        latest.tags.get("managed-by").map(String::as_str),
        Some("secret-rotator"),
        "adopted"
    );
    // The other one was superseded by the hand-written version 10 minutes ago: it stays
    // until 20 minutes have passed since then.
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(removals(&env).is_empty(), "{:?}", env.writes());
    assert!(env.live("app-one", &kept));
}

/// Attack on "versions of one second are unordered": a person disables the published version,
/// which shares its second with the version before it (two publishes in one second, as world
/// runs see). Key Vault refuses to return a disabled latest version, and the observation takes
/// the newest of the listing instead; with two of them in that second it calls the reads
/// inconsistent ("changed while it was read; it is read again") at every reconcile, forever,
/// and never publishes a new version, though the only disabled one of that second is the one
/// `GET` refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_latest_version_that_shares_its_second_with_another_is_replaced() {
    let env = Env::new(Setup {
        clients: vec![("app-one", "AzureADMyOrg")],
        foreign_password: false,
        ..Setup::default()
    })
    .await;
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.rotate("app-one", &["--force"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let latest = env.edit_versions("app-one", |versions| {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for v in versions.iter_mut() {
            v.created = now - 3600;
            v.updated = v.created;
        }
        let last = versions.last_mut().unwrap();
        last.enabled = false;
        last.version.clone()
    });

    for _ in 0..2 {
        let out = env.rotate("app-one", &[]).await;
        assert!(
            out.status.success(),
            "the disabled published version is replaced: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    let versions = env.versions("app-one");
    assert_eq!(versions.len(), 3, "one new version");
    assert_ne!(versions.last().unwrap().version, latest);
    env.assert_published_valid("app-one");
}

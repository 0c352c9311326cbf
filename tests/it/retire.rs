//! Retiring superseded credentials: the cases where the evidence is there but a rule could
//! keep a credential for good.

use crate::harness::*;

/// What kept one client's old credential in a scale benchmark run of 10,000 clients while the
/// daemon reported it ok (the one rule that keeps a superseded credential of a managed
/// secret without a warning, and the note it logs at each reconcile): the new secret's first three characters,
/// which Entra shows as a credential's hint, were the old one's (one rotation in about
/// 290,000; the benchmark's old secrets all start with `see`). The planner keeps a
/// credential whose hint matches the value consumers read, in case the value was written back
/// by hand; here the daemon itself wrote that version with the new credential's value, so the
/// old one goes after overlap like any other.
#[tokio::test(flavor = "multi_thread")]
async fn a_successor_sharing_its_predecessors_hint_still_retires_it_after_overlap() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let first = env.published_key("app-one");
    assert!(env.rotate("app-one", &["--force"]).await.status.success());
    let second = env.published_key("app-one");
    assert_ne!(first, second);
    // The coincidence, made certain: the first credential's hint is the published value's.
    let value = env
        .versions("app-one")
        .last()
        .expect("a version")
        .value
        .clone();
    env.edit_app("app-one", |app| {
        let p = app
            .passwords
            .iter_mut()
            .find(|p| p.key_id == first)
            .expect("the first credential");
        p.hint = value[..3].to_string();
    });
    // Superseded longer than overlap (20 min).
    env.age_versions("app-one", time::Duration::minutes(30));
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.writes(),
        vec![(Operation::GraphRemovePassword, 204, Some(first.clone()))],
        "{}",
        stderr(&out)
    );
    assert!(env.live("app-one", &second));
    env.assert_published_valid("app-one");
    env.assert_foreign_untouched("app-one");
}

//! The rotation protocol's normal paths.

use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn publishes_a_new_secret_only_after_it_signed_in() {
    let env = Env::new(Setup::default()).await;
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("rotated"), "{}", stdout(&out));

    let journal = env.journal();
    let ops: Vec<Operation> = journal.iter().map(|e| e.operation).collect();
    let add = ops
        .iter()
        .position(|o| *o == Operation::GraphAddPassword)
        .expect("addPassword");
    let set = ops
        .iter()
        .position(|o| *o == Operation::KeyvaultSetSecret)
        .expect("set_secret");
    let verified = journal[add..set].iter().any(|e| {
        e.operation == Operation::Token
            && e.status == 200
            && e.caller.as_deref() == Some(env.client("app-one").app_id.as_str())
    });
    assert!(
        verified,
        "a token request with the new secret succeeded between addPassword and publishing: {ops:?}"
    );
    assert_eq!(
        env.writes()
            .iter()
            .map(|(op, status, _)| (*op, *status))
            .collect::<Vec<_>>(),
        vec![
            (Operation::GraphAddPassword, 200),
            (Operation::KeyvaultSetSecret, 200)
        ],
        "exactly one addPassword and one publish"
    );
    env.assert_published_valid("app-one");
    env.assert_foreign_untouched("app-one");
    assert_eq!(env.versions("app-one").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_is_not_due_gets_no_write() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("no rotation needed"),
        "{}",
        stdout(&out)
    );
    assert!(env.writes().is_empty(), "{:?}", env.writes());
    // It did look: the application and the vault were read (the version consumers read: with
    // the published credential the only own one, the listing has nothing to judge).
    assert!(
        env.journal()
            .iter()
            .any(|e| e.operation == Operation::GraphGetApplication)
    );
    assert!(
        env.journal()
            .iter()
            .any(|e| e.operation == Operation::KeyvaultGetSecret && e.status == 200)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retires_the_superseded_credential_only_after_overlap() {
    let env = Env::new(Setup::default()).await;
    env.write_config("", "");
    // overlap 4s (config: lifetime 1h, renew 10m)
    let text = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace("overlap = \"20m\"", "overlap = \"4s\"");
    std::fs::write(&env.config_path, text).unwrap();
    assert!(env.rotate("app-one", &[]).await.status.success());
    let first_key = env.versions("app-one")[0].tags["key-id"].clone();
    assert!(env.rotate("app-one", &["--force"]).await.status.success());
    assert!(
        env.passwords("app-one")
            .iter()
            .any(|(k, _)| *k == first_key),
        "the previous credential stays within overlap"
    );
    env.em.world().clear_journal();
    assert!(env.rotate("app-one", &[]).await.status.success());
    assert!(
        env.passwords("app-one")
            .iter()
            .any(|(k, _)| *k == first_key),
        "still within overlap: kept"
    );
    assert!(env.writes().is_empty());

    // Overlap, plus the two seconds removals wait for Azure's whole seconds.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.writes(),
        vec![(Operation::GraphRemovePassword, 204, Some(first_key.clone()))]
    );
    assert!(
        !env.passwords("app-one")
            .iter()
            .any(|(k, _)| *k == first_key)
    );
    env.assert_published_valid("app-one");
    env.assert_foreign_untouched("app-one");
}

/// What a user reads after a rotation, its retirement and a reconcile with nothing to do: the
/// reconcile's reads from the store are one transaction, its location and status are written
/// together at its end, and a location or status row that would not change is not written,
/// but `status` and the history still show every step.
#[tokio::test(flavor = "multi_thread")]
async fn status_and_history_after_a_rotation_and_its_retirement_show_every_step() {
    let env = Env::new(Setup::default()).await;
    env.write_config("", "");
    env.edit_config("overlap = \"20m\"", "overlap = \"4s\"");
    let config = path_str(&env.config_path);
    assert!(env.rotate("app-one", &[]).await.status.success());
    let k1 = env.published_key("app-one");
    let out = env.rotate("app-one", &["--force"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let k2 = env.published_key("app-one");
    let v2 = env.versions("app-one").last().unwrap().version.clone();
    let status = |out: std::process::Output| -> serde_json::Value {
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")[0].clone()
    };
    let rotated = status(
        env.cli(&["status", "--config", &config, "--output", "json"])
            .await,
    );
    assert_eq!(rotated["last_result"], "rotated");
    assert_eq!(rotated["published_key_id"], k2.as_str());
    assert!(rotated["last_success_at"].is_string(), "{rotated}");

    // Overlap, plus the two seconds removals wait for Azure's whole seconds: the retirement.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!env.passwords("app-one").iter().any(|(k, _)| *k == k1));
    let retired = status(
        env.cli(&["status", "--config", &config, "--output", "json"])
            .await,
    );
    assert_eq!(retired["last_result"], "ok");
    assert_eq!(retired["published_key_id"], k2.as_str());
    assert_eq!(retired["published_version"], v2.as_str());
    assert_eq!(
        retired["last_success_at"], rotated["last_success_at"],
        "the last success is kept by a reconcile that did not rotate"
    );
    assert!(retired["last_error"].is_null(), "{retired}");
    assert!(retired["expires_at"].is_string() && retired["next_rotation_at"].is_string());

    // Nothing to do: what status shows is the same.
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let idle = status(
        env.cli(&["status", "--config", &config, "--output", "json"])
            .await,
    );
    assert_eq!(idle, retired);

    let store = secret_rotator::store::Store::open(&env.dir.path().join("state")).unwrap();
    let history: Vec<(String, Option<String>)> = store
        .history("app-one", 10)
        .unwrap()
        .into_iter()
        .map(|h| (h.result, h.key_id))
        .collect();
    assert_eq!(
        history,
        vec![
            ("removed".to_string(), Some(k1.clone())),
            ("rotated".to_string(), Some(k2.clone())),
            ("rotated".to_string(), Some(k1.clone())),
        ]
    );
    assert_eq!(
        store
            .published_credential("app-one", &v2)
            .unwrap()
            .as_deref(),
        Some(k2.as_str())
    );
    let locations = store.locations("app-one").unwrap();
    assert_eq!(locations.len(), 1, "{locations:?}");
    assert_eq!(locations[0].secret_name, "app-one-secret");
}

/// Key Vault reads that could not change a decision are not made: a reconcile lists the
/// secret's versions only when the history can change the plan (an own credential other than
/// the published one within `overlap` of the latest version), and the fresh read before a
/// retirement is one `GET` of the version consumers read. Past `overlap`, the latest version
/// alone retires its predecessor: it was superseded no later than that version was written.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_and_its_retirement_list_the_versions_only_where_the_history_decides() {
    let env = Env::new(Setup::default()).await;
    let reads = |env: &Env| {
        let journal = env.journal();
        // Answered reads (a new process's first call to a vault also meets its challenge, 401).
        let count = |op| {
            journal
                .iter()
                .filter(|e| e.operation == op && e.status == 200)
                .count()
        };
        (
            count(Operation::KeyvaultListVersions),
            count(Operation::KeyvaultGetSecret),
        )
    };
    assert!(env.rotate("app-one", &[]).await.status.success());
    let first_key = env.published_key("app-one");

    // The published credential is the client's only own one: the latest version decides alone.
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &["--force"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(reads(&env), (0, 1), "listings and GETs of a rotation");
    assert!(env.live("app-one", &first_key), "kept within overlap");

    // Within overlap, the history says since when the first credential is superseded.
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(reads(&env), (1, 1), "listings and GETs within overlap");
    assert!(env.live("app-one", &first_key), "kept within overlap");

    // Past overlap (credentials, versions and the client's arrival an hour older, overlap 20
    // minutes): the latest version, older than overlap and naming another credential, retires
    // the first one without the listing; the fresh read before its removal is what consumers
    // read.
    crate::review2::time_passes(&env, "app-one", time::Duration::hours(1));
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.writes(),
        vec![(Operation::GraphRemovePassword, 204, Some(first_key.clone()))]
    );
    assert_eq!(reads(&env), (0, 2), "listings and GETs of a retirement");
    env.assert_published_valid("app-one");
    env.assert_foreign_untouched("app-one");

    // Where the history decides, it is read: an own credential younger than an attempt may
    // take (it may be publishing), beside a latest version older than overlap.
    let published = env.published_key("app-one");
    let young = env.edit_app("app-one", |app| {
        let mut p = app
            .passwords
            .iter()
            .find(|p| p.key_id == published)
            .expect("published")
            .clone();
        p.key_id = uuid::Uuid::new_v4().to_string();
        // Another attempt's marker, for this location, and another value.
        let name = p.display_name.clone().expect("marked");
        let (marker, random) = name.rsplit_once('-').expect("a rotation id");
        p.display_name = Some(format!("{marker}-{}", "7".repeat(random.len())));
        p.secret_text = format!("zz~{}", uuid::Uuid::new_v4().simple());
        p.hint = "zz~".to_string();
        p.start = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
        p.added = p.start;
        p.start_text = p
            .start
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let key = p.key_id.clone();
        app.passwords.push(p);
        key
    });
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    // (The newest own credential is younger than overlap: no retirement can be due, and the
    // vault is read in full at once, without a `GET` first.)
    assert_eq!(
        reads(&env),
        (1, 1),
        "listings and GETs beside an attempt that may be in flight"
    );
    assert!(env.live("app-one", &young), "kept: it may be publishing");
    assert!(env.writes().is_empty(), "{:?}", env.writes());

    // Half an hour later it is older than overlap, but made after the latest version: nothing
    // was published after it, and only the history (twice listed) proves it an orphan.
    env.age_credential("app-one", &young, time::Duration::minutes(30));
    env.em.world().clear_journal();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.writes(),
        vec![(Operation::GraphRemovePassword, 204, Some(young.clone()))]
    );
    assert_eq!(
        reads(&env),
        (2, 3),
        "the latest version, then the listing and the latest again, then both before the removal"
    );
    env.assert_published_valid("app-one");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_previous_removes_the_previously_published_credential_at_once() {
    let env = Env::new(Setup::default()).await;
    assert!(env.rotate("app-one", &[]).await.status.success());
    let first_key = env.versions("app-one")[0].tags["key-id"].clone();
    let out = env
        .rotate("app-one", &["--force", "--revoke-previous"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !env.passwords("app-one")
            .iter()
            .any(|(k, _)| *k == first_key),
        "the leaked credential is gone"
    );
    let writes = env.writes();
    let publish = writes
        .iter()
        .rposition(|w| w.0 == Operation::KeyvaultSetSecret)
        .unwrap();
    let revoke = writes
        .iter()
        .position(|w| {
            w.0 == Operation::GraphRemovePassword && w.2.as_deref() == Some(first_key.as_str())
        })
        .expect("removed");
    assert!(
        revoke > publish,
        "removed only after the new secret was published: {writes:?}"
    );
    env.assert_published_valid("app-one");
    env.assert_foreign_untouched("app-one");
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_an_unmanaged_vault_secret_unless_adopt_is_set() {
    let env = Env::new(Setup::default()).await;
    env.write_by_hand("app-one", "pasted-by-hand", None);
    let out = env.rotate("app-one", &[]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("adopt = true"), "{}", stderr(&out));
    assert!(
        env.writes().is_empty(),
        "nothing written: {:?}",
        env.writes()
    );

    env.write_config("adopt = true", "");
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.versions("app-one").len(), 2);
    env.assert_published_valid("app-one");
    env.assert_foreign_untouched("app-one");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotates_again_once_the_published_secret_has_expired() {
    let env = Env::new(Setup::default()).await;
    let text = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace("secret_lifetime = \"1h\"", "secret_lifetime = \"6s\"")
        .replace("renew_before = \"10m\"", "renew_before = \"2s\"")
        .replace("overlap = \"20m\"", "overlap = \"1s\"");
    std::fs::write(&env.config_path, text).unwrap();
    assert!(env.rotate("app-one", &[]).await.status.success());
    tokio::time::sleep(Duration::from_secs(7)).await;
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let versions = env.versions("app-one");
    assert_eq!(versions.len(), 2, "a second version was published");
    env.assert_published_valid("app-one");
}

#[tokio::test(flavor = "multi_thread")]
async fn retires_the_adopted_credential_after_overlap_and_leaves_other_foreign_ones() {
    let env = Env::new(Setup::default()).await;
    // Someone pasted the value of a portal-made credential into the vault by hand.
    let (adopted_key, adopted_value) = {
        let mut state = env.em.world().state_mut();
        let app_id = env.client("app-one").app_id.clone();
        let app = state
            .applications
            .iter_mut()
            .find(|a| a.app_id == app_id)
            .unwrap();
        let mut p = app.passwords[0].clone();
        p.key_id = uuid::Uuid::new_v4().to_string();
        p.display_name = Some("pasted into the vault".into());
        p.secret_text = "adopted-value-Q~0123456789abcdefghijklmno".into();
        p.hint = p.secret_text[..3].to_string();
        app.passwords.push(p.clone());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        state.vaults.get_mut("kv-test").unwrap().secrets.insert(
            "app-one-secret".into(),
            emulator::model::VaultSecret {
                name: "app-one-secret".into(),
                versions: vec![emulator::model::SecretVersion {
                    version: "a".repeat(32),
                    value: p.secret_text.clone(),
                    content_type: None,
                    tags: Default::default(),
                    enabled: true,
                    nbf: None,
                    exp: None,
                    created: now - 60,
                    updated: now - 60,
                }],
            },
        );
        (p.key_id, p.secret_text)
    };
    let _ = adopted_value;
    env.write_config("adopt = true", "");
    let text = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace("overlap = \"20m\"", "overlap = \"3s\"");
    std::fs::write(&env.config_path, text).unwrap();
    assert!(env.rotate("app-one", &[]).await.status.success());
    assert!(
        env.passwords("app-one")
            .iter()
            .any(|(k, _)| *k == adopted_key),
        "kept within overlap"
    );
    // Overlap, plus the two seconds removals wait for Azure's whole seconds.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !env.passwords("app-one")
            .iter()
            .any(|(k, _)| *k == adopted_key),
        "the adopted credential was retired: {}",
        stdout(&out)
    );
    env.assert_foreign_untouched("app-one");
    env.assert_published_valid("app-one");
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_says_what_it_would_do_and_changes_nothing_and_status_reports_the_last_result() {
    let env = Env::new(Setup::default()).await;
    let config = path_str(&env.config_path);
    let out = env.cli(&["plan", "--config", &config]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.starts_with("CLIENT"), "{table}");
    assert!(
        table.contains("app-one")
            && table.contains("rotate")
            && table.contains("no secret is published"),
        "{table}"
    );
    assert!(
        env.writes().is_empty(),
        "plan changes nothing: {:?}",
        env.writes()
    );

    assert!(env.rotate("app-one", &[]).await.status.success());
    let out = env
        .cli(&["plan", "--config", &config, "--output", "json"])
        .await;
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(plan[0]["client"], "app-one");
    assert_eq!(plan[0]["action"], "none");
    assert_eq!(
        plan[0]["published_key_id"].as_str(),
        env.versions("app-one")[0]
            .tags
            .get("key-id")
            .map(String::as_str)
    );

    let out = env.cli(&["status", "--config", &config]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("app-one") && stdout(&out).contains("rotated"),
        "{}",
        stdout(&out)
    );
    let out = env
        .cli(&["status", "--config", &config, "--output", "json"])
        .await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(status[0]["name"], "app-one");
    assert_eq!(
        status[0]["published_key_id"].as_str(),
        env.versions("app-one")[0]
            .tags
            .get("key-id")
            .map(String::as_str)
    );
    assert!(
        status[0]["expires_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(status[0]["next_rotation_at"].is_string());
}

//! Drift: each kind made as a person would make it (the portal through the emulator's control
//! API, Key Vault through its own API with an identity holding the officer role), then a
//! reconcile that repairs or alerts as `repair` says. Repair never removes on its own: every
//! removal in these tests is the protocol's, after the rotation.

use std::collections::BTreeMap;
use std::time::Duration;

use emulator::model::{Seed, SeedApplication, SeedPassword, SeedVault, VaultRole};
use serde_json::{Value, json};

use crate::harness::{Env, Operation, Setup, eventually, stderr};

const PERSON_SECRET: &str = "person-secret-Q~0123456789abcdefghijklmn";

/// A person with the Key Vault Secrets Officer role on the test vault.
async fn person(env: &Env) -> String {
    let app_id = uuid::Uuid::new_v4().to_string();
    env.em
        .seed(Seed {
            tenant_id: None,
            applications: vec![SeedApplication {
                app_id: Some(app_id.clone()),
                password_credentials: vec![SeedPassword::new(None, Some(PERSON_SECRET))],
                ..SeedApplication::new("a person")
            }],
            vaults: vec![SeedVault {
                name: "kv-test".into(),
                access: BTreeMap::from([(app_id.clone(), VaultRole::Officer)]),
            }],
            settings: None,
            ..Default::default()
        })
        .await
        .expect("seed the person");
    env.access_token(&app_id, PERSON_SECRET, "https://vault.azure.net/.default")
        .await
}

/// A Key Vault call as the person: the status.
async fn vault_call(
    env: &Env,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> u16 {
    env.https()
        .request(
            method,
            format!("{}{path}?api-version=2025-07-01", env.vault_url),
        )
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn control(env: &Env, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
    let mut r = env
        .https()
        .request(method, format!("{}{path}", env.em.info().control_url));
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap().status().as_u16()
}

/// The client's history rows (result, message), oldest first.
fn history(env: &Env) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open_with_flags(
        env.dir.path().join("state").join("state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut q = db
        .prepare("SELECT result, COALESCE(message, '') FROM history WHERE client = 'app-one' ORDER BY id")
        .unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// An env with `app-one` published once and its versions aged past the read-lag grace.
async fn published(defaults: &str) -> Env {
    let env = Env::new(Setup::default()).await;
    env.write_config(defaults, "");
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    env.age_versions("app-one", time::Duration::minutes(10));
    env
}

fn set_secret_versions(env: &Env) -> usize {
    env.writes()
        .iter()
        .filter(|w| w.0 == Operation::KeyvaultSetSecret && w.1 == 200)
        .count()
}

#[tokio::test]
async fn a_published_credential_deleted_in_the_portal_is_repaired_by_rotating() {
    let env = published("").await;
    let gone = env.published_key("app-one");
    let c = env.client("app-one");
    let status = control(
        &env,
        reqwest::Method::DELETE,
        &format!(
            "/control/portal/applications/{}/passwords/{gone}",
            c.object_id
        ),
        None,
    )
    .await;
    assert_eq!(status, 204);

    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(
        env.published_key("app-one"),
        gone,
        "a new secret is published"
    );
    env.assert_published_valid("app-one");
    let h = history(&env);
    assert!(
        h.iter()
            .any(|(r, m)| r == "drift" && m.contains("credential_gone") && m.contains("rotate")),
        "{h:?}"
    );
    assert!(
        h.iter().any(|(r, _)| r == "drift-repaired"),
        "the repair is in the history: {h:?}"
    );
    env.assert_foreign_untouched("app-one");
}

#[tokio::test]
async fn a_value_that_no_longer_signs_in_is_repaired_by_rotating_and_nothing_is_removed_before() {
    let env = published("drift_interval = \"1s\"").await;
    let token = person(&env).await;
    let live = env.published_key("app-one");
    let mut tags = env.versions("app-one").last().unwrap().tags.clone();
    tags.insert("rotation-id".into(), "restored-from-a-backup".into());
    // A version with our tags whose value is not the credential's (a restore gone wrong).
    let status = vault_call(
        &env,
        &token,
        reqwest::Method::PUT,
        "/secrets/app-one-secret",
        json!({"value": "not-the-credentials-value-Q~0123456789abcd", "tags": tags}),
    )
    .await;
    assert_eq!(status, 200);
    env.age_versions("app-one", time::Duration::minutes(10));
    let before = env.removals().len();

    // A reconcile from the command line makes no sign-in: nothing to see there.
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.published_key("app-one"), live);
    // The daemon's drift check (every second here) signs in, is refused, and rotates.
    let daemon = env.spawn_daemon(&[]);
    let repaired = eventually(Duration::from_secs(60), || {
        env.published_key("app-one") != live
    })
    .await;
    assert!(repaired, "{}", daemon.stderr());
    drop(daemon);
    assert_eq!(
        env.removals().len(),
        before,
        "repair removes nothing itself"
    );
    assert!(env.live("app-one", &live), "the listed credential stays");
    env.assert_published_valid("app-one");
    let h = history(&env);
    assert!(
        h.iter()
            .any(|(r, m)| r == "drift" && m.contains("value_rejected")),
        "{h:?}"
    );
    assert!(
        h.iter()
            .any(|(r, m)| r == "drift-repaired" && m.contains("value_rejected")),
        "{h:?}"
    );
}

#[tokio::test]
async fn a_version_written_by_someone_else_is_only_alerted_even_with_repair_rotate() {
    let env = published("").await;
    let token = person(&env).await;
    let ours = env.published_key("app-one");
    let status = vault_call(
        &env,
        &token,
        reqwest::Method::PUT,
        "/secrets/app-one-secret",
        json!({"value": "a-value-someone-pasted"}),
    )
    .await;
    assert_eq!(status, 200);
    let writes = set_secret_versions(&env);

    let out = env.rotate("app-one", &[]).await;
    assert!(!out.status.success(), "the client is blocked");
    assert!(
        stderr(&out).contains("not managed by secret-rotator"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        set_secret_versions(&env),
        writes,
        "nothing written over theirs"
    );
    assert!(env.live("app-one", &ours), "our last credential stays");
    let h = history(&env);
    assert!(
        h.iter()
            .any(|(r, m)| r == "drift" && m.contains("untagged_version: alert")),
        "{h:?}"
    );
}

#[tokio::test]
async fn a_disabled_version_with_repair_alert_blocks_until_a_forced_rotation_repairs_it() {
    let env = published("repair = \"alert\"").await;
    let token = person(&env).await;
    let version = env.versions("app-one").last().unwrap().version.clone();
    let key = env.published_key("app-one");
    let status = vault_call(
        &env,
        &token,
        reqwest::Method::PATCH,
        &format!("/secrets/app-one-secret/{version}"),
        json!({"attributes": {"enabled": false}}),
    )
    .await;
    assert_eq!(status, 200);
    let writes = set_secret_versions(&env);

    let out = env.rotate("app-one", &[]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("disabled_version"), "{err}");
    assert!(err.contains("rotate --force app-one"), "{err}");
    assert_eq!(
        set_secret_versions(&env),
        writes,
        "alert only: nothing published"
    );
    assert!(env.live("app-one", &key), "and nothing removed");

    let out = env.rotate("app-one", &["--force"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    env.assert_published_valid("app-one");
}

#[tokio::test]
async fn a_credential_deleted_in_the_portal_with_repair_alert_is_not_replaced() {
    let env = published("repair = \"alert\"").await;
    let gone = env.published_key("app-one");
    let c = env.client("app-one");
    control(
        &env,
        reqwest::Method::DELETE,
        &format!(
            "/control/portal/applications/{}/passwords/{gone}",
            c.object_id
        ),
        None,
    )
    .await;
    let writes = set_secret_versions(&env);
    let out = env.rotate("app-one", &[]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("credential_gone"), "{}", stderr(&out));
    assert_eq!(set_secret_versions(&env), writes);
}

#[tokio::test]
async fn a_disabled_application_is_reported_by_the_daemon_and_nothing_is_rotated_for_it() {
    let env = published("drift_interval = \"1s\"").await;
    let c = env.client("app-one");
    // A consumer told of drift: an exec sink that appends each event to a file.
    let events = env.dir.path().join("drift-events.jsonl");
    env.write_config(
        "drift_interval = \"1s\"",
        &format!(
            "\n[[events]]\nkind = \"exec\"\ntypes = [\"drift\"]\nargv = [\"sh\", \"-c\", \"cat >> \\\"$0\\\"; echo >> \\\"$0\\\"\", \"{}\"]\n",
            events.display()
        ),
    );
    let mut daemon = env.spawn_daemon(&[]);
    let healthy = eventually(Duration::from_secs(60), || {
        futures_lite_ready(daemon.addr.clone())
    })
    .await;
    assert!(healthy, "the daemon answers");
    assert_eq!(
        control(
            &env,
            reqwest::Method::PATCH,
            &format!("/control/portal/service-principals/{}", c.app_id),
            Some(json!({"accountEnabled": false})),
        )
        .await,
        204
    );
    let series = "secret_rotator_drift{client=\"app-one\",kind=\"app_disabled\"} 1";
    let mut found = false;
    for _ in 0..240 {
        if let Some((200, body)) = daemon.get("/metrics").await
            && body.contains(series)
        {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(found, "the drift is exported: {}", daemon.stderr());
    let announced = eventually(Duration::from_secs(60), || {
        std::fs::read_to_string(&events).is_ok_and(|t| {
            t.lines().any(|l| {
                serde_json::from_str::<Value>(l).is_ok_and(|e| {
                    e["type"] == "com.secret-rotator.drift"
                        && e["data"]["drift"][0]["kind"] == "app_disabled"
                        && e["data"]["drift"][0]["action"] == "alert"
                })
            })
        })
    })
    .await;
    assert!(announced, "a drift event: {}", daemon.stderr());
    let adds = |env: &Env| {
        env.writes()
            .iter()
            .filter(|w| w.0 == Operation::GraphAddPassword)
            .count()
    };
    let before = adds(&env);
    // Turned back on: the next check clears it.
    control(
        &env,
        reqwest::Method::PATCH,
        &format!("/control/portal/service-principals/{}", c.app_id),
        Some(json!({"accountEnabled": true})),
    )
    .await;
    let mut cleared = false;
    for _ in 0..40 {
        if let Some((200, body)) = daemon.get("/metrics").await
            && !body.contains("secret_rotator_drift{")
        {
            cleared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(cleared, "{}", daemon.stderr());
    assert_eq!(
        adds(&env),
        before,
        "no credential was made for a disabled app"
    );
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(15));
}

fn futures_lite_ready(addr: String) -> bool {
    std::net::TcpStream::connect(addr).is_ok()
}

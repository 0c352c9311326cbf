//! `[discovery]`: applications the daemon owns that carry the tag become clients (add), follow
//! their tag to another location (retag), leave management untouched when it is removed
//! (untag), and are refused on both sides when they would collide with a configured client or
//! with each other.

use std::time::Duration;

use emulator::model::{Seed, SeedApplication};

use crate::harness::*;

async fn clients_json(daemon: &Daemon) -> serde_json::Value {
    match daemon.get("/v1/clients").await {
        Some((200, body)) => serde_json::from_str(&body).unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}

async fn until(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn client<'a>(clients: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    clients
        .as_array()?
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_adds_retags_untags_and_refuses_collisions_on_both_sides() {
    let env = Env::new(Setup::default()).await;
    let vault = env.vault_url.clone();
    let owned = |name: &str, tag: String| SeedApplication {
        owners: vec![env.daemon_app_id.clone()],
        tags: vec![tag],
        ..SeedApplication::new(name)
    };
    let report = env
        .em
        .seed(Seed {
            applications: vec![
                owned("tagged-one", "secret-rotator".into()),
                // Someone else's app with the tag: not the daemon's to manage.
                SeedApplication {
                    tags: vec!["secret-rotator".into()],
                    ..SeedApplication::new("not-owned")
                },
                owned(
                    "clash-config",
                    format!("secret-rotator:vault={vault};secret=app-one-secret"),
                ),
                owned(
                    "twin-a",
                    format!("secret-rotator:vault={vault};secret=shared"),
                ),
                owned(
                    "twin-b",
                    format!("secret-rotator:vault={vault};secret=shared"),
                ),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    let id = |name: &str| {
        report
            .applications
            .iter()
            .find(|a| a.display_name == name)
            .unwrap()
            .app_id
            .clone()
    };
    env.write_config(
        "",
        &format!(
            "\n[discovery]\nenabled = true\ntag = \"secret-rotator\"\ninterval = \"1s\"\nkey_vault_url = \"{vault}\"\nsecret_name = \"{{app}}-client-secret\"\n"
        ),
    );
    let daemon = env.spawn_daemon(&[]);

    // Add: the tagged, owned app is a client, shown as discovered, and gets its secret.
    let added = until(Duration::from_secs(30), async || {
        let clients = clients_json(&daemon).await;
        client(&clients, "tagged-one").is_some_and(|c| {
            c["origin"] == "discovered (tag secret-rotator)" && c["published_key_id"].is_string()
        })
    })
    .await;
    assert!(
        added,
        "{}\n{}",
        clients_json(&daemon).await,
        daemon.stderr()
    );
    let clients = clients_json(&daemon).await;
    assert_eq!(client(&clients, "app-one").unwrap()["origin"], "config");
    assert!(client(&clients, "not-owned").is_none());
    let published = env.em.world().state().vaults["kv-test"]
        .secrets
        .get("tagged-one-client-secret")
        .map(|s| s.versions.len());
    assert_eq!(published, Some(1));

    // Collisions: refused on both sides, with a clear error and a metric, never guessed.
    for name in ["clash-config", "twin-a", "twin-b"] {
        assert!(client(&clients, name).is_none(), "{name} is not enrolled");
    }
    let (_, metrics) = daemon.get("/metrics").await.unwrap();
    for name in ["clash-config", "twin-a", "twin-b"] {
        assert!(
            metrics.contains(&format!(
                "secret_rotator_discovery_refused{{app_id=\"{}\"}} 1",
                id(name)
            )),
            "{name}: {metrics}"
        );
    }
    let log = daemon.stderr();
    assert!(
        log.contains("client 'app-one' already writes app-one-secret"),
        "{log}"
    );
    assert!(log.contains("would all write shared"), "{log}");
    assert!(
        !env.em.world().state().vaults["kv-test"]
            .secrets
            .contains_key("shared"),
        "nothing was written for the twins"
    );
    // The configured client keeps rotating as before.
    assert!(client(&clients, "app-one").unwrap()["published_key_id"].is_string());

    // Retag: the tag chooses another location; the client follows it (a migration).
    {
        let mut state = env.em.world().state_mut();
        let app = state
            .applications
            .iter_mut()
            .find(|a| a.display_name == "tagged-one")
            .unwrap();
        app.tags = vec![format!("secret-rotator:vault={vault};secret=moved")];
    }
    let moved = until(Duration::from_secs(30), async || {
        let clients = clients_json(&daemon).await;
        client(&clients, "tagged-one").is_some_and(|c| c["secret_name"] == "moved")
            && env.em.world().state().vaults["kv-test"]
                .secrets
                .contains_key("moved")
    })
    .await;
    assert!(moved, "{}", daemon.stderr());

    // Untag: the client leaves management; its credentials and secrets stay as they are.
    let before = env
        .em
        .world()
        .state()
        .applications
        .iter()
        .find(|a| a.display_name == "tagged-one")
        .unwrap()
        .passwords
        .iter()
        .filter(|p| p.removed.is_none())
        .count();
    env.em
        .world()
        .state_mut()
        .applications
        .iter_mut()
        .find(|a| a.display_name == "tagged-one")
        .unwrap()
        .tags
        .clear();
    let left = until(Duration::from_secs(30), async || {
        client(&clients_json(&daemon).await, "tagged-one").is_none()
    })
    .await;
    assert!(left, "{}", daemon.stderr());
    assert!(daemon.stderr().contains("discovery_left"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state = env.em.world().state();
    let app = state
        .applications
        .iter()
        .find(|a| a.display_name == "tagged-one")
        .unwrap();
    assert_eq!(
        app.passwords.iter().filter(|p| p.removed.is_none()).count(),
        before,
        "no credential of an untagged app is touched"
    );
    assert!(state.vaults["kv-test"].secrets.contains_key("moved"));
}

//! Change windows, freezes and the rotation budget, against the emulator: a renewal in a freeze
//! waits and says until when, then rotates once its expiry is too close to wait; the budget
//! stops the sixth rotation in an hour, and a forced rotation passes it.

use std::time::Duration;

use crate::harness::*;

fn published(env: &Env, name: &str) -> usize {
    env.versions(name).len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_of_five_stops_the_sixth_rotation_in_an_hour_and_a_forced_one_passes() {
    let names = ["c1", "c2", "c3", "c4", "c5", "c6"];
    let env = Env::new(Setup {
        clients: names.iter().map(|n| (*n, "AzureADMyOrg")).collect(),
        foreign_password: false,
        ..Setup::default()
    })
    .await;
    env.write_config_with("", "max_rotations_per_hour = 5", "");
    let daemon = env.spawn_daemon(&[]);

    // Five first publishes go through; then the budget is used up.
    assert!(
        eventually(Duration::from_secs(60), || {
            names.iter().filter(|n| published(&env, n) > 0).count() == 5
        })
        .await,
        "five clients published: {}",
        daemon.stderr()
    );
    let waiting = names
        .iter()
        .find(|n| published(&env, n) == 0)
        .copied()
        .expect("one client waits");
    let mut said = String::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            said = daemon.stderr();
            said.contains("waiting for the rotation budget")
        })
        .await,
        "{said}"
    );
    // It stays unpublished while the other five keep their one version each.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(published(&env, waiting), 0);
    let (status, body) = daemon.get("/v1/clients").await.expect("/v1/clients");
    assert_eq!(status, 200);
    let clients: serde_json::Value = serde_json::from_str(&body).unwrap();
    let row = clients
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == waiting)
        .unwrap();
    let why = row["last_error"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("waiting for the rotation budget until ")
            && why.contains("5 of 5 rotations in the last hour"),
        "{row}"
    );
    let (_, budget) = daemon.get("/v1/budget").await.expect("/v1/budget");
    let budget: serde_json::Value = serde_json::from_str(&budget).unwrap();
    assert_eq!(budget["max_per_hour"], 5);
    assert_eq!(budget["used_last_hour"], 5);
    assert!(budget["next_slot_at"].is_string(), "{budget}");
    let (_, metrics) = daemon.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("secret_rotator_rotation_budget_used 5"),
        "{metrics}"
    );

    // `plan` says the same.
    let config = path_str(&env.config_path);
    let out = env.cli(&["plan", "--config", &config]).await;
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with(waiting) && l.contains("wait") && l.contains("rotation budget")),
        "{text}"
    );
    assert!(
        text.contains("rotation budget: 5 of 5 used in the last hour"),
        "{text}"
    );

    // A forced rotation is not held by the budget, and the log says so.
    let url = format!("http://{}/v1/clients/{waiting}/rotate", daemon.addr);
    let answer = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&env.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status().as_u16(),
        202,
        "{}",
        answer.text().await.unwrap()
    );
    assert!(
        eventually(Duration::from_secs(30), || published(&env, waiting) == 1).await,
        "{}",
        daemon.stderr()
    );
    let said = daemon.stderr();
    assert!(
        said.contains("forced: change windows and the rotation budget do not apply"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_in_a_freeze_waits_then_rotates_when_expiry_is_within_half_of_renew_before() {
    let env = Env::new(Setup {
        foreign_password: false,
        ..Setup::default()
    })
    .await;
    // Frozen today and tomorrow (UTC): a renewal cannot find an opening before its deadline.
    let today = time::OffsetDateTime::now_utc().date();
    let tomorrow = today.next_day().unwrap();
    // Published at t, a renewal is due at t+10s (renew_before 20s of a 30s lifetime), and the
    // deadline is t+20s (renew_before/2 before expiry).
    // (On the client: its keys override [defaults].)
    env.write_config(
        "",
        &format!(
            "secret_lifetime = \"30s\"\nrenew_before = \"20s\"\noverlap = \"4s\"\nfreeze = [\"{today}..{tomorrow}\"]\n"
        ),
    );
    let daemon = env.spawn_daemon(&[]);
    // The first secret is published at once: nothing is published yet, so there is nothing to
    // keep stable.
    assert!(
        eventually(Duration::from_secs(30), || published(&env, "app-one") == 1).await,
        "{}",
        daemon.stderr()
    );
    let first = std::time::Instant::now();
    let mut row = serde_json::Value::Null;
    let mut waited = false;
    while first.elapsed() < Duration::from_secs(17) {
        if let Some((200, body)) = daemon.get("/v1/clients").await {
            row = serde_json::from_str::<serde_json::Value>(&body).unwrap()[0].clone();
            if row["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("waiting for window until "))
            {
                waited = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(waited, "{row}");
    let why = row["last_error"].as_str().unwrap();
    assert!(
        why.contains(&format!("freeze {today}..{tomorrow}")),
        "{why}"
    );
    assert_eq!(
        published(&env, "app-one"),
        1,
        "nothing rotates in the freeze"
    );
    // Past the deadline it rotates, and says why.
    assert!(
        eventually(Duration::from_secs(25), || published(&env, "app-one") == 2).await,
        "{}",
        daemon.stderr()
    );
    assert!(
        first.elapsed() >= Duration::from_secs(15),
        "rotated before the deadline"
    );
    let said = daemon.stderr();
    assert!(said.contains("rotating anyway"), "{said}");
}

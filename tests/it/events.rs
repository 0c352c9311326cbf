//! Events to consumers, against the emulator and a receiver in the test (plain HTTP on
//! loopback, which webhook URLs allow only there): a webhook that is down while a secret is
//! published is reported as failing and holds nothing up; the event waits in the outbox across
//! a daemon restart and arrives, signed, once the receiver is up; filters pick by type and
//! client; an exec sink gets the event on its standard input.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, Mac};

use crate::harness::*;

/// whsec_ and base64 of 32 bytes, as Standard Webhooks keys are written.
const KEY: &str = "whsec_c2VjcmV0LXJvdGF0b3ItdGVzdC13ZWJob29rLWtleSE=";

#[derive(Default)]
struct Receiver {
    down: AtomicBool,
    got: Mutex<Vec<(String, HeaderMap, String)>>,
}

async fn hook(
    State(r): State<Arc<Receiver>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    if r.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.got
        .lock()
        .unwrap()
        .push((uri.path().to_string(), headers, body));
    StatusCode::NO_CONTENT
}

async fn receiver() -> (Arc<Receiver>, u16) {
    let r = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .route("/retired", post(hook))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, port)
}

/// The signature as the spec defines it, computed here independently of the daemon's code.
fn expected_signature(id: &str, timestamp: &str, body: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(KEY.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", b64.encode(mac.finalize().into_bytes()))
}

fn received(r: &Receiver, path: &str) -> Vec<(HeaderMap, serde_json::Value, String)> {
    r.got
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _, _)| p == path)
        .map(|(_, h, b)| (h.clone(), serde_json::from_str(b).unwrap(), b.clone()))
        .collect()
}

async fn sink(daemon: &Daemon, name: &str) -> serde_json::Value {
    let (_, body) = daemon.get("/v1/events").await.unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.as_array()
                .and_then(|a| a.iter().find(|s| s["sink"] == name).cloned())
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_event_waits_out_a_sink_outage_and_a_restart_and_filters_pick_by_type_and_client()
{
    let env = Env::new(Setup {
        foreign_password: false,
        ..Setup::default()
    })
    .await;
    let (rx, port) = receiver().await;
    rx.down.store(true, Ordering::SeqCst);
    let key_file = env.dir.path().join("webhook-key");
    std::fs::write(&key_file, KEY).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let exec_out = env.dir.path().join("exec.jsonl");
    env.write_config(
        "",
        &format!(
            r#"overlap = "3s"

[[events]]
name = "consumer"
kind = "webhook"
url = "http://127.0.0.1:{port}/hook"
signing_key_file = "{key}"

[[events]]
name = "retired-only"
kind = "webhook"
url = "http://127.0.0.1:{port}/retired"
signing_key_file = "{key}"
types = ["retired"]
clients = ["app-one"]

[[events]]
name = "reload"
kind = "exec"
argv = ["sh", "-c", "cat >> \"$0\"; echo >> \"$0\"", "{out}"]
types = ["published"]
timeout = "5s"
"#,
            key = path_str(&key_file),
            out = path_str(&exec_out),
        ),
    );
    let mut daemon = env.spawn_daemon(&[]);
    assert!(
        eventually(Duration::from_secs(30), || env.versions("app-one").len()
            == 1)
        .await,
        "{}",
        daemon.stderr()
    );
    let first_key = env.published_key("app-one");
    // The exec sink is not held up by the webhook that is down.
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_to_string(
            &exec_out
        )
        .is_ok_and(|t| t.contains("com.secret-rotator.published")))
        .await,
        "{}",
        daemon.stderr()
    );
    // The webhook keeps failing and is reported: /v1/events, the metric, the log.
    let mut state = serde_json::Value::Null;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        state = sink(&daemon, "consumer").await;
        if state["failing"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(state["failing"], true, "{state}");
    assert_eq!(state["pending"], 1, "{state}");
    assert_eq!(state["last_error"], "HTTP 503", "{state}");
    let (_, metrics) = daemon.get("/metrics").await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "secret_rotator_event_deliveries_total{sink=\"consumer\",result=\"failure\"}"
        ) && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(
        metrics.contains("secret_rotator_event_sink_failing{sink=\"consumer\"} 1"),
        "{metrics}"
    );
    assert!(daemon.stderr().contains("event sink is failing"));

    // Stopped with the event undelivered; the receiver comes up; a new daemon delivers it.
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(15)).is_some());
    let config = path_str(&env.config_path);
    let status = stdout(&env.cli(&["status", "--config", &config]).await);
    assert!(
        status.contains("event sink consumer: 1 event(s) undelivered, FAILING: HTTP 503"),
        "{status}"
    );
    rx.down.store(false, Ordering::SeqCst);
    env.edit_config(
        &format!("listen = \"{}\"", daemon.addr),
        "listen = \"127.0.0.1:0\"",
    );
    let daemon = env.spawn_daemon(&[]);
    assert!(
        eventually(Duration::from_secs(30), || !received(&rx, "/hook")
            .is_empty())
        .await,
        "{}",
        daemon.stderr()
    );
    let (headers, event, body) = received(&rx, "/hook").remove(0);
    let header = |name: &str| headers[name].to_str().unwrap().to_string();
    assert_eq!(
        header("content-type"),
        "application/cloudevents+json; charset=utf-8"
    );
    assert_eq!(header("webhook-id"), event["id"].as_str().unwrap());
    assert_eq!(
        header("webhook-signature"),
        expected_signature(&header("webhook-id"), &header("webhook-timestamp"), &body)
    );
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "com.secret-rotator.published");
    assert_eq!(event["subject"], "app-one");
    assert_eq!(event["source"], "/secret-rotator/test");
    let data = &event["data"];
    assert_eq!(data["key_id"], first_key.as_str());
    assert_eq!(data["secret"], "app-one-secret");
    assert_eq!(
        data["version"],
        env.versions("app-one")[0].version.as_str(),
        "{event}"
    );
    assert!(data["expires_at"].is_string());
    for secret in minted(&env) {
        assert!(!body.contains(&secret), "an event carries a secret value");
    }
    let recovered = async {
        for _ in 0..40 {
            let s = sink(&daemon, "consumer").await;
            if s["pending"] == 0 && s["failing"] == false {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    };
    assert!(
        recovered.await,
        "{} {}",
        sink(&daemon, "consumer").await,
        daemon.stderr()
    );

    // A forced rotation publishes again; the previous credential retires after its 3 s overlap,
    // and only that reaches the filtered sink.
    let url = format!("http://{}/v1/clients/app-one/rotate", daemon.addr);
    let answer = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&env.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    assert!(
        eventually(Duration::from_secs(30), || !received(&rx, "/retired")
            .is_empty())
        .await,
        "{}",
        daemon.stderr()
    );
    let retired = received(&rx, "/retired");
    assert!(
        retired
            .iter()
            .all(|(_, e, _)| e["type"] == "com.secret-rotator.retired"),
        "{retired:?}"
    );
    assert_eq!(retired[0].1["data"]["key_id"], first_key.as_str());
    // The other sink's own round delivers the same retirement, perhaps a moment later.
    assert!(
        eventually(Duration::from_secs(10), || received(&rx, "/hook").len()
            >= 3)
        .await,
        "{}",
        daemon.stderr()
    );
    let kinds: Vec<String> = received(&rx, "/hook")
        .iter()
        .map(|(_, e, _)| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "com.secret-rotator.published",
            "com.secret-rotator.published",
            "com.secret-rotator.retired"
        ]
    );
}

/// A client that cannot rotate (a vault secret written by hand, `adopt` off) while its secret
/// nears expiry: the exec sink hears `blocked` once (not at every reconcile) and `expiring` once.
#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_client_near_expiry_is_announced_once_as_blocked_and_once_as_expiring() {
    let env = Env::new(Setup {
        foreign_password: false,
        ..Setup::default()
    })
    .await;
    // renew_before is 10m: an expiry 4 minutes away is within renew_before/2.
    env.write_by_hand(
        "app-one",
        "a value someone wrote by hand",
        Some(time::OffsetDateTime::now_utc() + time::Duration::minutes(4)),
    );
    let out = env.dir.path().join("exec.jsonl");
    env.write_config(
        "",
        &format!(
            "\n[[events]]\nkind = \"exec\"\nargv = [\"sh\", \"-c\", \"cat >> \\\"$0\\\"; echo >> \\\"$0\\\"\", \"{}\"]\n",
            path_str(&out)
        ),
    );
    let daemon = env.spawn_daemon(&[]);
    let events = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(20), || events().len() >= 2).await,
        "{}",
        daemon.stderr()
    );
    // Several more reconciles (every 2 s) announce nothing new.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let got = events();
    let kinds: Vec<&str> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["com.secret-rotator.blocked", "com.secret-rotator.expiring"],
        "{got:?}"
    );
    assert!(
        got[0]["data"]["error"]
            .as_str()
            .unwrap()
            .contains("not managed by secret-rotator"),
        "{got:?}"
    );
    assert!(got[1]["data"]["expires_at"].is_string(), "{got:?}");
    assert!(
        !std::fs::read_to_string(&out)
            .unwrap()
            .contains("a value someone wrote by hand")
    );
    assert!(env.versions("app-one").len() == 1, "nothing was written");
}

//! The controls a test uses to change the world under a client: Azure's clock, Key Vault
//! listing lag and order, and a person in the portal. Each is checked over HTTPS, as a client
//! sees it.

// The emulator is Azure, not the daemon: it reads the wall clock (clippy.toml forbids that
// only to the daemon's own code).
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;

use secret_rotator_emulator::model::{
    Seed, SeedApplication, SeedPassword, SeedVault, Settings, VaultRole,
};
use secret_rotator_emulator::operation::Operation;
use secret_rotator_emulator::{Emulator, Options, SeedReport};
use serde_json::{Value, json};
use time::OffsetDateTime;

const SECRET: &str = "officer-secret-Q~0123456789abcdefghijklmn";

struct World {
    em: Emulator,
    _dir: tempfile::TempDir,
    report: SeedReport,
    http: reqwest::Client,
}

impl World {
    async fn new(settings: Settings) -> World {
        let dir = tempfile::tempdir().unwrap();
        let em = Emulator::start(Options::loopback_in(dir.path()))
            .await
            .unwrap();
        let officer = uuid::Uuid::new_v4().to_string();
        let report = em
            .seed(Seed {
                tenant_id: None,
                applications: vec![
                    SeedApplication {
                        app_id: Some(officer.clone()),
                        password_credentials: vec![SeedPassword::new(None, Some(SECRET))],
                        ..SeedApplication::new("officer")
                    },
                    SeedApplication {
                        sign_in_audience: "AzureADandPersonalMicrosoftAccount".into(),
                        password_credentials: vec![SeedPassword::new(
                            Some("secret-rotator:test:capped:r1"),
                            None,
                        )],
                        ..SeedApplication::new("capped")
                    },
                ],
                vaults: vec![SeedVault {
                    name: "kv-world".into(),
                    access: BTreeMap::from([(officer, VaultRole::Officer)]),
                }],
                settings: Some(settings),
                ..Default::default()
            })
            .await
            .unwrap();
        let ca = std::fs::read(em.info().ca_file).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
            .no_proxy()
            .build()
            .unwrap();
        World {
            em,
            _dir: dir,
            report,
            http,
        }
    }

    async fn token(&self, app_id: &str, secret: &str, scope: &str) -> reqwest::Response {
        let info = self.em.info();
        self.http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                info.authority_host, info.tenant_id
            ))
            .form(&[
                ("client_id", app_id),
                ("client_secret", secret),
                ("grant_type", "client_credentials"),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap()
    }

    async fn vault(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let token: Value = self
            .token(
                &self.report.applications[0].app_id,
                SECRET,
                "https://vault.azure.net/.default",
            )
            .await
            .json()
            .await
            .unwrap();
        let url = format!(
            "{}{path}{}api-version=2025-07-01",
            self.report.vaults["kv-world"],
            if path.contains('?') { "&" } else { "?" }
        );
        let mut r = self
            .http
            .request(method, url)
            .bearer_auth(token["access_token"].as_str().unwrap());
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }

    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.em.info().control_url));
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }
}

fn http_date(r: &reqwest::Response) -> OffsetDateTime {
    let text = r.headers()["date"].to_str().unwrap();
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(text, &format)
        .unwrap()
        .assume_utc()
}

#[tokio::test]
async fn azure_clock_ahead_shifts_the_date_header_and_every_stamp() {
    let world = World::new(Settings {
        clock_offset_ms: 3_600_000,
        ..Settings::default()
    })
    .await;
    let now = OffsetDateTime::now_utc();
    let r = world
        .vault(
            reqwest::Method::PUT,
            "/secrets/skewed",
            Some(json!({"value": "v"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let date = http_date(&r);
    assert!(
        (date - now - time::Duration::hours(1)).abs() < time::Duration::seconds(5),
        "Date {date} is an hour ahead of {now}"
    );
    let body: Value = r.json().await.unwrap();
    let created = body["attributes"]["created"].as_i64().unwrap();
    assert!((created - now.unix_timestamp() - 3600).abs() < 5);
    let capped = world.report.applications[1].app_id.clone();
    // Remove the seeded one first: the app is capped at two.
    let added = world
        .control(
            reqwest::Method::POST,
            &format!("/control/portal/applications/{capped}/passwords"),
            Some(json!({"display_name": "by hand"})),
        )
        .await;
    assert_eq!(added.status(), 201);
    let key: String = added.json::<Value>().await.unwrap()["key_id"]
        .as_str()
        .unwrap()
        .into();
    let state = world.em.world().state();
    let p = state.applications[1]
        .passwords
        .iter()
        .find(|p| p.key_id == key)
        .unwrap();
    let shown = OffsetDateTime::parse(
        &p.start_text,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        (shown - now - time::Duration::hours(1)).abs() < time::Duration::seconds(5),
        "a server-made startDateTime is Azure's clock"
    );
}

#[tokio::test]
async fn a_secret_stamped_on_a_skewed_clock_signs_in_before_and_after_the_clock_is_set_right() {
    let world = World::new(Settings {
        propagation_min_ms: 0,
        propagation_max_ms: 0,
        clock_offset_ms: -600_000,
        ..Settings::default()
    })
    .await;
    let capped = world.report.applications[1].app_id.clone();
    let seeded = world.report.applications[1].passwords[0].key_id.clone();
    world
        .control(
            reqwest::Method::DELETE,
            &format!("/control/portal/applications/{capped}/passwords/{seeded}"),
            None,
        )
        .await;
    let added = world
        .control(
            reqwest::Method::POST,
            &format!("/control/portal/applications/{capped}/passwords"),
            Some(json!({"display_name": "by hand"})),
        )
        .await;
    let key: String = added.json::<Value>().await.unwrap()["key_id"]
        .as_str()
        .unwrap()
        .into();
    let (secret, start_text) = {
        let state = world.em.world().state();
        let p = state.applications[1]
            .passwords
            .iter()
            .find(|p| p.key_id == key)
            .unwrap()
            .clone();
        (p.secret_text.clone(), p.start_text.clone())
    };
    let shown =
        OffsetDateTime::parse(&start_text, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(
        (OffsetDateTime::now_utc() - shown - time::Duration::minutes(10)).abs()
            < time::Duration::seconds(5),
        "Graph shows Azure's (ten minutes behind) startDateTime"
    );
    let scope = "https://graph.microsoft.com/.default";
    assert_eq!(world.token(&capped, &secret, scope).await.status(), 200);
    let mut s = world.em.world().state().settings.clone();
    s.clock_offset_ms = 0;
    world.em.world().state_mut().settings = s;
    assert_eq!(
        world.token(&capped, &secret, scope).await.status(),
        200,
        "Azure stays consistent with itself when the offset changes"
    );
}

#[tokio::test]
async fn a_version_is_never_dated_before_the_one_it_follows_when_the_offset_changes() {
    let world = World::new(Settings {
        clock_offset_ms: 600_000,
        ..Settings::default()
    })
    .await;
    let created = |v: Value| v["attributes"]["created"].as_i64().unwrap();
    let first = world
        .vault(
            reqwest::Method::PUT,
            "/secrets/steps",
            Some(json!({"value": "a"})),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let mut s = world.em.world().state().settings.clone();
    s.clock_offset_ms = 0;
    world.em.world().state_mut().settings = s;
    let second = world
        .vault(
            reqwest::Method::PUT,
            "/secrets/steps",
            Some(json!({"value": "b"})),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        created(second),
        created(first) + 1,
        "ten minutes back, dated the second after its predecessor: never before it, and no tie it did not have"
    );
}

#[tokio::test]
async fn key_vault_listings_lag_and_list_versions_in_no_creation_order() {
    let world = World::new(Settings::default()).await;
    let mut written = Vec::new();
    for i in 0..8 {
        let r = world
            .vault(
                reqwest::Method::PUT,
                "/secrets/many",
                Some(json!({"value": format!("v{i}")})),
            )
            .await;
        let body: Value = r.json().await.unwrap();
        written.push(
            body["id"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string(),
        );
    }
    let listed: Vec<String> = world
        .vault(reqwest::Method::GET, "/secrets/many/versions", None)
        .await
        .json::<Value>()
        .await
        .unwrap()["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v["id"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut sorted = written.clone();
    sorted.sort();
    assert_eq!(
        listed, sorted,
        "listed by version id, every version, same-second ones too"
    );
    let created: Vec<i64> = world.em.world().state().vaults["kv-world"].secrets["many"]
        .versions
        .iter()
        .map(|v| v.created)
        .collect();
    assert_eq!(created.len(), 8);

    let mut s = world.em.world().state().settings.clone();
    s.kv_list_lag_ms = 1_500;
    world.em.world().state_mut().settings = s;
    // Let the versions above age past the lag.
    tokio::time::sleep(std::time::Duration::from_millis(1_600)).await;
    let r = world
        .vault(
            reqwest::Method::PUT,
            "/secrets/many",
            Some(json!({"value": "fresh"})),
        )
        .await;
    let fresh = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = |v: Value| -> Vec<String> {
        v["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect()
    };
    let now_listed = listed(
        world
            .vault(reqwest::Method::GET, "/secrets/many/versions", None)
            .await
            .json()
            .await
            .unwrap(),
    );
    assert!(
        !now_listed.contains(&fresh),
        "a fresh version is missing from a lagging listing"
    );
    let latest: Value = world
        .vault(reqwest::Method::GET, "/secrets/many/", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        latest["id"].as_str(),
        Some(fresh.as_str()),
        "a read of the secret does not lag"
    );
    // A secret whose only version is younger than the lag is unknown to the listing.
    let r = world
        .vault(
            reqwest::Method::PUT,
            "/secrets/newborn",
            Some(json!({"value": "x"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        world
            .vault(reqwest::Method::GET, "/secrets/newborn/versions", None)
            .await
            .status(),
        404
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_700)).await;
    let later = listed(
        world
            .vault(reqwest::Method::GET, "/secrets/many/versions", None)
            .await
            .json()
            .await
            .unwrap(),
    );
    assert!(later.contains(&fresh), "listed once the lag has passed");
}

#[tokio::test]
async fn a_person_in_the_portal_adds_up_to_the_cap_and_deletes_any_credential() {
    let world = World::new(Settings::default()).await;
    let capped = world.report.applications[1].id.clone();
    let ours = world.report.applications[1].passwords[0].key_id.clone();
    let add = || async {
        world
            .control(
                reqwest::Method::POST,
                &format!("/control/portal/applications/{capped}/passwords"),
                Some(json!({"display_name": "made in the portal"})),
            )
            .await
    };
    let first = add().await;
    assert_eq!(first.status(), 201);
    let second = add().await;
    assert_eq!(
        second.status(),
        400,
        "a personal-account app holds two passwords"
    );
    assert_eq!(
        second.json::<Value>().await.unwrap()["error"]["code"],
        "TooManyAppPasswords"
    );
    let removed = world
        .control(
            reqwest::Method::DELETE,
            &format!("/control/portal/applications/{capped}/passwords/{ours}"),
            None,
        )
        .await;
    assert_eq!(removed.status(), 204, "the portal needs no ownership");
    let again = world
        .control(
            reqwest::Method::DELETE,
            &format!("/control/portal/applications/{capped}/passwords/{ours}"),
            None,
        )
        .await;
    assert_eq!(again.status(), 404);
    let journal = world.em.world().journal();
    let by_portal: Vec<_> = journal
        .iter()
        .filter(|e| e.caller.as_deref() == Some("portal"))
        .map(|e| (e.operation, e.status, e.effective))
        .collect();
    assert_eq!(
        by_portal,
        vec![
            (Operation::GraphAddPassword, 200, true),
            (Operation::GraphAddPassword, 400, false),
            (Operation::GraphRemovePassword, 204, true),
            (Operation::GraphRemovePassword, 404, false),
        ]
    );
    let removal = journal
        .iter()
        .find(|e| e.operation == Operation::GraphRemovePassword && e.effective)
        .unwrap();
    assert_eq!(removal.key_id.as_deref(), Some(ours.as_str()));
    assert_eq!(removal.target.as_deref(), Some(capped.as_str()));
    let bad = world
        .control(
            reqwest::Method::POST,
            &format!("/control/portal/applications/{capped}/passwords"),
            Some(json!({"displayName": "wrong key"})),
        )
        .await;
    assert_eq!(bad.status(), 400);
}

/// The control API keeps the operations' wire names: scripts and the Python tests post fault
/// rules by them and read them back from the journal.
#[tokio::test]
async fn fault_rules_name_operations_by_their_wire_names_and_a_misspelt_one_is_refused_by_name() {
    let world = World::new(Settings::default()).await;
    let listed: Vec<String> = world
        .control(reqwest::Method::GET, "/control/operations", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed.first().map(String::as_str), Some("token"));
    assert!(listed.iter().any(|o| o == "keyvault.set_secret"));
    assert!(
        !listed.iter().any(|o| o == "graph.update_service_principal"),
        "a portal change is journalled, never served: {listed:?}"
    );

    for name in ["graph.add_pasword", "graph.update_service_principal"] {
        let refused = world
            .control(
                reqwest::Method::POST,
                "/control/faults",
                Some(json!([{"operation": name, "fault": "status", "status": 503}])),
            )
            .await;
        assert_eq!(refused.status(), 400, "{name}");
        let message = refused.text().await.unwrap();
        assert!(
            message.contains(&format!("unknown operation '{name}'; known: token, ")),
            "{message}"
        );
    }
    assert!(world.em.world().faults().is_empty());

    let added = world
        .control(
            reqwest::Method::POST,
            "/control/faults",
            Some(json!({"operation": "keyvault.set_secret", "fault": "drop_after", "count": 2})),
        )
        .await;
    assert_eq!(added.status(), 204);
    let faults = world.em.world().faults();
    assert_eq!(faults.len(), 1);
    assert_eq!(faults[0].operation, Operation::KeyvaultSetSecret);
    let shown: Value = world
        .control(reqwest::Method::GET, "/control/faults", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown[0]["operation"], "keyvault.set_secret");
}

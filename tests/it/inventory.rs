//! The tenant inventory against the emulator: managed, unmanaged and certificate credentials,
//! a tenant larger than one page, with and without Application.Read.All, from the command and
//! from the running daemon's metrics.

use std::time::Duration;

use emulator::model::{Seed, SeedApplication, SeedKeyCredential, SeedPassword};
use serde_json::Value;

use crate::harness::{Env, Operation, Setup, stderr, stdout};

/// Applications beyond the clients: more than one page of 999.
const EXTRA_APPS: usize = 1_050;

struct Tenant {
    env: Env,
    /// The unmanaged password expiring in 10 days, and the one in 100 days.
    soon: String,
    late: String,
    certificate: String,
    /// The last application seeded, so on the last page.
    last_app_id: String,
}

async fn tenant() -> Tenant {
    let env = Env::new(Setup::default()).await;
    let now = time::OffsetDateTime::now_utc();
    let mut apps: Vec<SeedApplication> = Vec::new();
    apps.push(SeedApplication {
        password_credentials: vec![
            SeedPassword {
                end_date_time: Some(now + time::Duration::days(10)),
                ..SeedPassword::new(Some("pipeline secret"), None)
            },
            SeedPassword {
                end_date_time: Some(now + time::Duration::days(100)),
                ..SeedPassword::new(Some("older pipeline secret"), None)
            },
        ],
        key_credentials: vec![SeedKeyCredential {
            display_name: Some("CN=payroll".into()),
            start_date_time: None,
            end_date_time: Some(now + time::Duration::days(5)),
        }],
        ..SeedApplication::new("payroll-export")
    });
    for i in 0..EXTRA_APPS {
        apps.push(SeedApplication::new(format!("tenant-app-{i}")));
    }
    apps.last_mut().unwrap().password_credentials = vec![SeedPassword::new(Some("last"), None)];
    let report = env
        .em
        .seed(Seed {
            tenant_id: None,
            applications: apps,
            vaults: vec![],
            settings: None,
            ..Default::default()
        })
        .await
        .expect("seed");
    let payroll = &report.applications[0];
    let state = env.em.world().state();
    let app = state
        .applications
        .iter()
        .find(|a| a.app_id == payroll.app_id)
        .unwrap();
    let key = |name: &str| {
        app.passwords
            .iter()
            .find(|p| p.display_name.as_deref() == Some(name))
            .unwrap()
            .key_id
            .clone()
    };
    let (soon, late) = (key("pipeline secret"), key("older pipeline secret"));
    let certificate = app.key_credentials[0].key_id.clone();
    drop(state);
    Tenant {
        last_app_id: report.applications.last().unwrap().app_id.clone(),
        env,
        soon,
        late,
        certificate,
    }
}

fn grant_read_all(env: &Env) {
    let mut state = env.em.world().state_mut();
    let daemon = state
        .applications
        .iter_mut()
        .find(|a| a.app_id == env.daemon_app_id)
        .unwrap();
    daemon.graph_roles.push("Application.Read.All".into());
}

fn config(env: &Env) -> String {
    env.config_path.to_string_lossy().to_string()
}

#[tokio::test]
async fn the_inventory_lists_every_credential_of_the_tenant_across_pages() {
    let t = tenant().await;
    let env = &t.env;
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let managed = env.published_key("app-one");
    grant_read_all(env);
    env.em.world().clear_journal();

    let out = env
        .cli(&["inventory", "--config", &config(env), "--output", "json"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Vec<Value> = serde_json::from_str(&stdout(&out)).expect("json");
    let find = |key: &str| {
        listed
            .iter()
            .find(|c| c["key_id"] == key)
            .unwrap_or_else(|| panic!("{key} listed"))
            .clone()
    };
    assert_eq!(find(&managed)["managed"], true);
    assert_eq!(find(&managed)["kind"], "password");
    assert_eq!(find(&managed)["app"], "app-one");
    assert_eq!(find(&t.soon)["managed"], false);
    assert_eq!(find(&t.certificate)["kind"], "certificate");
    assert_eq!(find(&t.certificate)["display_name"], "CN=payroll");
    assert!(
        listed.iter().any(|c| c["app_id"] == t.last_app_id.as_str()),
        "the last page was read"
    );
    let foreign = env
        .passwords("app-one")
        .into_iter()
        .find(|(_, n)| n.as_deref() == Some("made in the portal"))
        .unwrap()
        .0;
    assert_eq!(find(&foreign)["managed"], false);
    assert!(
        listed
            .windows(2)
            .all(|w| w[0]["expires"].as_str() <= w[1]["expires"].as_str()
                || w[1]["expires"].is_null()),
        "soonest first"
    );

    let pages = env
        .journal()
        .into_iter()
        .filter(|e| e.operation == Operation::GraphListApplications && e.status == 200)
        .count();
    assert_eq!(pages, 2, "{} applications in pages of 999", EXTRA_APPS + 3);

    // Expiring within 30 days: the 10-day password and the certificate, the managed secret
    // (1 hour); not the 100-day password.
    let out = env
        .cli(&[
            "inventory",
            "--config",
            &config(env),
            "--expiring-within",
            "30d",
            "--output",
            "csv",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = stdout(&out);
    assert!(
        csv.starts_with("expires,kind,managed,app,app_id,key_id,display_name\n"),
        "{csv}"
    );
    assert!(csv.contains(&t.soon) && csv.contains(&t.certificate) && csv.contains(&managed));
    assert!(!csv.contains(&t.late), "{csv}");

    let out = env
        .cli(&[
            "inventory",
            "--config",
            &config(env),
            "--expiring-within",
            "30d",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.starts_with("EXPIRES"), "{table}");
    assert!(table.contains("payroll-export") && table.contains("certificate"));
}

#[tokio::test]
async fn without_application_read_all_the_inventory_and_check_say_what_is_missing() {
    let env = Env::new(Setup::default()).await;
    let out = env.cli(&["inventory", "--config", &config(&env)]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("needs Application.Read.All"),
        "{}",
        stderr(&out)
    );

    env.write_config("", "\n[inventory]\nenabled = true\n");
    let out = env
        .cli(&["check", "--config", &config(&env), "--online"])
        .await;
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("grant the daemon's identity Application.Read.All"),
        "{}",
        stdout(&out)
    );
    grant_read_all(&env);
    let out = env
        .cli(&["check", "--config", &config(&env), "--online"])
        .await;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("inventory: OK"), "{}", stdout(&out));
}

#[tokio::test]
async fn the_daemon_exports_the_tenants_credentials_within_its_export_window() {
    let t = tenant().await;
    let env = &t.env;
    grant_read_all(env);
    env.write_config(
        "",
        "\n[inventory]\nenabled = true\ninterval = \"1h\"\nexport = \"expiring_within:30d\"\n",
    );
    let daemon = env.spawn_daemon(&[]);
    let mut scrape = String::new();
    for _ in 0..80 {
        if let Some((200, body)) = daemon.get("/metrics").await
            && body.contains(&t.certificate)
        {
            scrape = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let line = |key: &str| {
        scrape
            .lines()
            .find(|l| {
                l.starts_with("secret_rotator_tenant_credential_expiry_timestamp_seconds{")
                    && l.contains(key)
            })
            .map(str::to_string)
    };
    let cert = line(&t.certificate).unwrap_or_else(|| panic!("exported: {}", daemon.stderr()));
    assert!(
        cert.contains("app=\"payroll-export\"")
            && cert.contains("kind=\"certificate\"")
            && cert.contains("managed=\"false\""),
        "{cert}"
    );
    assert!(line(&t.soon).is_some());
    assert!(line(&t.late).is_none(), "outside the export window");
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    if let Ok(mut child) = out {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(scrape.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        // promtool's lint may warn (exit 3 is only for lint problems); a parse error is 1.
        assert_ne!(
            o.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

//! `secret-rotator demo`: the bundled emulator and the daemon together, with lifetimes short
//! enough to watch several rotations within a minute or two. Propagation delay and read lag
//! keep their realistic defaults, so what the demo shows is what a tenant does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use emulator::model::{Seed, SeedApplication, SeedPassword, SeedVault, VaultRole};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

const DAEMON_SECRET: &str = "demo-daemon-secret-Q~not-for-production-use";

/// The demo's applications: (name, sign-in audience).
const CLIENTS: &[(&str, &str, &str)] = &[
    ("dicom-service-client", "AzureADMyOrg", "demo-kv-1"),
    ("fhir-importer", "AzureADMyOrg", "demo-kv-1"),
    ("reporting-batch", "AzureADMyOrg", "demo-kv-2"),
];

pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    // A fresh directory of a name no one can guess, owner-only, removed when the demo ends
    // (Ctrl-C included: the daemon returns on SIGINT and SIGTERM).
    let temporary = tempfile::Builder::new()
        .prefix("secret-rotator-demo-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .map_err(|e| anyhow::anyhow!("creating the demo's directory: {e}"))?;
    let dir = temporary.path().to_path_buf();
    let emulator_dir = dir.join("emulator");
    let em = emulator::Emulator::start(emulator::Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        state_dir: emulator_dir,
        seed: None,
    })
    .await?;

    let daemon_app_id = uuid::Uuid::new_v4().to_string();
    let mut applications = vec![SeedApplication {
        app_id: Some(daemon_app_id.clone()),
        graph_roles: vec!["Application.ReadWrite.OwnedBy".into()],
        password_credentials: vec![SeedPassword::new(Some("daemon"), Some(DAEMON_SECRET))],
        ..SeedApplication::new("secret-rotator (demo daemon identity)")
    }];
    let mut app_ids = Vec::new();
    for (name, audience, _) in CLIENTS {
        let app_id = uuid::Uuid::new_v4().to_string();
        app_ids.push(app_id.clone());
        applications.push(SeedApplication {
            app_id: Some(app_id),
            sign_in_audience: (*audience).into(),
            owners: vec![daemon_app_id.clone()],
            // A secret someone made in the portal: the daemon must leave it alone.
            password_credentials: vec![SeedPassword::new(Some("created in the portal"), None)],
            ..SeedApplication::new(*name)
        });
    }
    let access = BTreeMap::from([(daemon_app_id.clone(), VaultRole::Officer)]);
    let vaults = ["demo-kv-1", "demo-kv-2"]
        .iter()
        .map(|n| SeedVault {
            name: (*n).into(),
            access: access.clone(),
        })
        .collect();
    let report = em
        .seed(Seed {
            tenant_id: None,
            applications,
            vaults,
            settings: None,
        })
        .await?;
    let info = em.info();

    let secret_file = dir.join("daemon-client-secret");
    write_private(&secret_file, DAEMON_SECRET.as_bytes())?;
    let token_file = dir.join("admin-token");
    let admin_token = format!("{:032x}", rand::random::<u128>());
    write_private(&token_file, admin_token.as_bytes())?;
    let mut config = format!(
        r#"# Written by `secret-rotator demo`: the bundled emulator stands in for Azure.
[azure]
tenant_id = "{tenant}"
authority_host = "{authority}"
graph_endpoint = "{graph}"
ca_file = "{ca}"

[azure.credential]
kind = "client_secret"
client_id = "{daemon}"
client_secret_file = "{secret}"

[daemon]
instance = "demo"

[server]
listen = "{listen}"
admin_token_file = "{token}"

[state]
dir = "{state}"

[defaults]
schedule = "*/10 * * * * *"
secret_lifetime = "4m"
renew_before = "2m"
overlap = "1m"
verify_timeout = "2m"
verify_successes = 2
"#,
        tenant = report.tenant_id,
        authority = info.authority_host,
        graph = info.graph_endpoint,
        ca = info.ca_file,
        daemon = daemon_app_id,
        secret = secret_file.display(),
        token = token_file.display(),
        state = dir.join("state").display(),
    );
    for ((name, _, vault), app_id) in CLIENTS.iter().zip(&app_ids) {
        config.push_str(&format!(
            "\n[[clients]]\nname = \"{name}\"\napp_id = \"{app_id}\"\nkey_vault_url = \"{url}\"\nsecret_name = \"{name}-secret\"\n",
            url = report.vaults[*vault]
        ));
    }
    let config_path = dir.join("config.toml");
    write_private(&config_path, config.as_bytes())?;
    let cfg = Config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;

    println!(
        "secret-rotator demo: the daemon rotates {} clients against the bundled emulator.",
        CLIENTS.len()
    );
    println!("  metrics:        http://{listen}/metrics");
    println!("  client status:  http://{listen}/v1/clients");
    println!("  health:         http://{listen}/healthz  http://{listen}/readyz");
    println!(
        "  force a rotation: curl -X POST -H 'Authorization: Bearer {admin_token}' http://{listen}/v1/clients/dicom-service-client/rotate"
    );
    println!("  config:         {}", config_path.display());
    println!(
        "  CLI:            secret-rotator status --config {}",
        config_path.display()
    );
    println!(
        "  emulator:       {} (journal: GET /control/journal, state: GET /control/state; CA {})",
        info.control_url, info.ca_file
    );
    println!(
        "Secrets live for 4 minutes and are renewed 2 minutes before expiry; the first rotations happen now. Ctrl-C stops."
    );
    let result = crate::daemon::run(
        &config_path,
        cfg,
        Some(listen),
        None,
        CancellationToken::new(),
    )
    .await;
    em.shutdown();
    println!("secret-rotator demo: stopped; removing {}", dir.display());
    drop(temporary);
    result
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    crate::files::write_new_private(path, contents)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))
}

//! `secret-rotator demo`: the bundled emulator and the daemon together, with lifetimes short
//! enough to watch several rotations within a minute or two. Propagation delay and read lag
//! keep their realistic defaults, so what the demo shows is what a tenant does.

use std::net::SocketAddr;
use std::path::Path;

use emulator::kit::{ConfigSpec, KitClient, TenantKit};
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

    let tenant = CLIENTS
        .iter()
        .fold(
            TenantKit::new("secret-rotator (demo daemon identity)", DAEMON_SECRET)
                .vault("demo-kv-1")
                .vault("demo-kv-2"),
            |kit, (name, audience, vault)| {
                kit.client(KitClient {
                    audience: (*audience).into(),
                    // A secret someone made in the portal: the daemon must leave it alone.
                    portal_password: Some("created in the portal".into()),
                    ..KitClient::new(*name, *vault)
                })
            },
        )
        .seed(&em)
        .await?;
    let info = &tenant.info;

    let secret_file = dir.join("daemon-client-secret");
    write_private(&secret_file, DAEMON_SECRET.as_bytes())?;
    let token_file = dir.join("admin-token");
    let admin_token = format!("{:032x}", rand::random::<u128>());
    write_private(&token_file, admin_token.as_bytes())?;
    let (secret_file_text, token_file_text, state_text, listen_text) = (
        secret_file.display().to_string(),
        token_file.display().to_string(),
        dir.join("state").display().to_string(),
        listen.to_string(),
    );
    let config = tenant.config(&ConfigSpec {
        header: "# Written by `secret-rotator demo`: the bundled emulator stands in for Azure.\n",
        secret_file: &secret_file_text,
        azure: "",
        instance: "demo",
        daemon: "",
        log: "",
        listen: &listen_text,
        admin_token_file: Some(&token_file_text),
        state_dir: &state_text,
        defaults: "schedule = \"*/10 * * * * *\"\nsecret_lifetime = \"4m\"\nrenew_before = \"2m\"\noverlap = \"1m\"\nverify_timeout = \"2m\"\nverify_successes = 2",
        secret_name: "{name}-secret",
    });
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

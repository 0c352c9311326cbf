//! Config errors name the file, the line and the key, and the process exits with 78 (EX_CONFIG).

use crate::harness::*;

async fn check_fails_with(env: &Env, text: &str, expected: &[&str]) {
    std::fs::write(&env.config_path, text).unwrap();
    let config = path_str(&env.config_path);
    let out = env.cli(&["check", "--config", &config]).await;
    assert_eq!(
        out.status.code(),
        Some(78),
        "a bad config exits with EX_CONFIG: {text}"
    );
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for e in expected {
        assert!(err.contains(e), "expected '{e}' in: {err}");
    }
}

fn base(env: &Env) -> String {
    env.write_config("", "");
    std::fs::read_to_string(&env.config_path).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_config_passes_check() {
    let env = Env::new(Setup::default()).await;
    let config = path_str(&env.config_path);
    let out = env.cli(&["check", "--config", &config]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("OK (1 clients)"));
    let out = env.cli(&["check", "--config", &config, "--online"]).await;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("app-one: OK"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn config_errors_name_file_line_and_key() {
    let env = Env::new(Setup::default()).await;
    let good = base(&env);
    let file = env
        .config_path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();

    check_fails_with(
        &env,
        &good.replace("[daemon]", "[daemon]\ncolour = \"blue\""),
        &[&file, "unknown field `colour`"],
    )
    .await;
    check_fails_with(
        &env,
        &good.replace("renew_before = \"10m\"", "renew_before = \"10mins\""),
        &[&file, ":25:", "defaults.renew_before", "unknown unit"],
    )
    .await;
    check_fails_with(
        &env,
        &good.replace("renew_before = \"10m\"", "renew_before = \"2h\""),
        &["renew_before", "must be shorter than secret_lifetime"],
    )
    .await;
    check_fails_with(
        &env,
        &good.replace("overlap = \"20m\"", "overlap = \"50m\""),
        &["overlap", "secret_lifetime - renew_before"],
    )
    .await;
    check_fails_with(
        &env,
        &good.replace("schedule = \"*/2 * * * * *\"", "schedule = \"*/2 * * *\""),
        &[":23:", "defaults.schedule", "cron"],
    )
    .await;
    check_fails_with(
        &env,
        &good.replace("verify_successes = 1", "verify_successes = 11"),
        &["defaults.verify_successes", "1 to 10"],
    )
    .await;
    check_fails_with(
        &env,
        &good.replace("kind = \"client_secret\"", "kind = \"password\""),
        &["azure.credential.kind", "'password'"],
    )
    .await;
    check_fails_with(
        &env,
        &good.replace(
            "client_secret_file = \"daemon-secret\"",
            "client_secret_file = \"missing-file\"",
        ),
        &["azure.credential.client_secret_file", "cannot read"],
    )
    .await;
    check_fails_with(
        &env,
        &good.replace(
            &format!("key_vault_url = \"{}\"", env.vault_url),
            "key_vault_url = \"http://vault.example\"",
        ),
        &["clients[0] (app-one).key_vault_url", "https"],
    )
    .await;
    check_fails_with(
        &env,
        &good.replace(
            "secret_name = \"app-one-secret\"",
            "secret_name = \"bad_name!\"",
        ),
        &["secret_name", "0-9, a-z"],
    )
    .await;
    check_fails_with(
        &env,
        &good.replace("instance = \"test\"", "instance = \"Not Valid\""),
        &["daemon.instance"],
    )
    .await;
    check_fails_with(
        &env,
        &good.replace("ca_file = ", "ca_file = \"/nonexistent/ca.pem\"\n#"),
        &["azure.ca_file", "cannot read"],
    )
    .await;

    check_fails_with(
        &env,
        &good.replace(
            "admin_token_file = \"admin-token\"",
            "admin_token_file = \"admin-token\"\nallowed_hosts = [\"rotator.internal\", \"https://rotator.internal:9464\"]",
        ),
        &[":18:", "server.allowed_hosts", "'https://rotator.internal:9464' is not a host name"],
    )
    .await;

    let c = env.client("app-one");
    let dup_name = format!(
        "{good}\n[[clients]]\nname = \"app-one\"\napp_id = \"{}\"\nkey_vault_url = \"{}\"\nsecret_name = \"other\"\n",
        uuid::Uuid::new_v4(),
        env.vault_url
    );
    check_fails_with(
        &env,
        &dup_name,
        &["clients[1] (app-one).name", "duplicates clients[0]"],
    )
    .await;
    let dup_app = format!(
        "{good}\n[[clients]]\nname = \"two\"\napp_id = \"{}\"\nkey_vault_url = \"{}\"\nsecret_name = \"other\"\n",
        c.app_id, env.vault_url
    );
    check_fails_with(
        &env,
        &dup_app,
        &[
            "clients[1] (two).app_id",
            "already manages this application",
        ],
    )
    .await;
    let dup_secret = format!(
        "{good}\n[[clients]]\nname = \"two\"\napp_id = \"{}\"\nkey_vault_url = \"{}/\"\nsecret_name = \"APP-ONE-SECRET\"\n",
        uuid::Uuid::new_v4(),
        env.vault_url
    );
    check_fails_with(
        &env,
        &dup_secret,
        &["clients[1] (two).secret_name", "already writes this secret"],
    )
    .await;
    let own = format!(
        "{good}\n[[clients]]\nname = \"self\"\napp_id = \"{}\"\nkey_vault_url = \"{}\"\nsecret_name = \"self\"\n",
        env.daemon_app_id, env.vault_url
    );
    check_fails_with(
        &env,
        &own,
        &["clients[1] (self).app_id", "daemon's own identity"],
    )
    .await;
    check_fails_with(&env, "this is = not [toml", &[&file, ":1"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_config_file_is_named() {
    let env = Env::new(Setup::default()).await;
    let out = env
        .cli(&["check", "--config", "/nonexistent/secret-rotator.toml"])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/secret-rotator.toml: cannot read"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_dir_others_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(Setup::default()).await;
    let good = base(&env);
    let state = env.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    check_fails_with(
        &env,
        &good,
        &[
            ":20: state.dir",
            "writable by group or others (mode 0777)",
            "chmod 700",
        ],
    )
    .await;
    // The daemon refuses it too, before writing anything there.
    let config = path_str(&env.config_path);
    let out = env.cli(&["status", "--config", &config]).await;
    assert!(!out.status.success());
    assert!(std::fs::read_dir(&state).unwrap().next().is_none());

    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = env.cli(&["check", "--config", &config]).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A state file a newer release wrote is the state store's error, not the config's: exit 1
/// (the unit restarts the daemon, as it always did), one line naming the file and what to do.
#[tokio::test(flavor = "multi_thread")]
async fn a_state_file_from_a_newer_release_exits_1_naming_it() {
    let env = Env::new(Setup::default()).await;
    let config = path_str(&env.config_path);
    let out = env.cli(&["status", "--config", &config]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let db = env.dir.path().join("state").join("state.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    for command in ["status", "run"] {
        let out = env.cli(&[command, "--config", &config]).await;
        assert_eq!(out.status.code(), Some(1), "{command}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{command}: one line: {err}");
        for expected in [
            path_str(&db).as_str(),
            "schema version 99",
            "upgrade secret-rotator or move the state dir aside",
        ] {
            assert!(err.contains(expected), "{command}: '{expected}' in: {err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vault_host_outside_the_cloud_needs_allow_custom_vault_host() {
    let env = Env::new(Setup::default()).await;
    let good = base(&env);
    let typo = good.replace(
        &format!("key_vault_url = \"{}\"", env.vault_url),
        "key_vault_url = \"https://contoso-kv.vault.azure.net.evil.example\"",
    );
    check_fails_with(
        &env,
        &typo,
        &[
            ":34: clients[0] (app-one).key_vault_url",
            "contoso-kv.vault.azure.net.evil.example is not a Key Vault host of the public cloud (*.vault.azure.net)",
            "allow_custom_vault_host = true",
        ],
    )
    .await;
    let config = path_str(&env.config_path);
    std::fs::write(
        &env.config_path,
        format!("{typo}allow_custom_vault_host = true\n"),
    )
    .unwrap();
    let out = env.cli(&["check", "--config", &config]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    // The emulator's loopback vault needs no permission, and signs in over HTTPS as before.
    std::fs::write(&env.config_path, &good).unwrap();
    let out = env.cli(&["check", "--config", &config, "--online"]).await;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_file_others_may_read_is_named_in_one_warning() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(Setup::default()).await;
    let secret = env.dir.path().join("daemon-secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = path_str(&env.config_path);
    let out = env.cli(&["check", "--config", &config]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains(&secret.display().to_string()) && warnings[0].contains("mode 0644"),
        "{err}"
    );
    assert!(!err.contains(DAEMON_SECRET), "{err}");

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = env.cli(&["check", "--config", &config]).await;
    assert!(!stderr(&out).contains("WARN"), "{}", stderr(&out));
}

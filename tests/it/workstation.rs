//! `kind = "azure_cli"`: the commands a person runs use the account signed in to the Azure CLI,
//! and `run` refuses it. azure_identity's real `AzureCliCredential` runs `az account
//! get-access-token`; the `az` on PATH here answers as the CLI does, with a token it gets from
//! the emulator's Entra endpoint (the real CLI cannot sign in against a loopback authority:
//! MSAL's instance discovery goes to the public host).

use std::os::unix::fs::PermissionsExt;

use crate::harness::*;

/// Writes an `az` that logs its arguments and prints what `az account get-access-token -o json`
/// prints, for a token the emulator issues to the daemon's app; returns the PATH to use.
fn fake_az(env: &Env) -> String {
    let bin = env.dir.path().join("az-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let info = env.em.info();
    let script = format!(
        r#"#!/usr/bin/env python3
import json, ssl, sys, urllib.parse, urllib.request
args = sys.argv[1:]
open({log:?}, "a").write(json.dumps(args) + "\n")
assert args[:3] == ["account", "get-access-token", "-o"], args
scope = args[args.index("--scope") + 1]
tenant = args[args.index("--tenant") + 1] if "--tenant" in args else {tenant:?}
body = urllib.parse.urlencode({{"grant_type": "client_credentials", "client_id": {client:?},
    "client_secret": open({secret:?}).read(), "scope": scope}}).encode()
ctx = ssl.create_default_context(cafile={ca:?})
with urllib.request.urlopen({authority:?} + "/" + tenant + "/oauth2/v2.0/token", body, context=ctx) as r:
    token = json.load(r)
import time
print(json.dumps({{"accessToken": token["access_token"], "expires_on": int(time.time()) + token["expires_in"],
    "expiresOn": "", "subscription": "none", "tenant": tenant, "tokenType": "Bearer"}}))
"#,
        log = env.dir.path().join("az.log").to_string_lossy(),
        tenant = env.tenant,
        client = env.daemon_app_id,
        secret = env.dir.path().join("daemon-secret").to_string_lossy(),
        ca = info.ca_file,
        authority = info.authority_host.trim_end_matches('/'),
    );
    let az = bin.join("az");
    std::fs::write(&az, script).unwrap();
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[tokio::test]
async fn the_azure_cli_account_serves_check_and_plan_and_run_refuses_it() {
    let env = Env::new(Setup::default()).await;
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let cli_config = text.replace(
        &format!(
            "kind = \"client_secret\"\nclient_id = \"{}\"\nclient_secret_file = \"daemon-secret\"",
            env.daemon_app_id
        ),
        "kind = \"azure_cli\"",
    );
    assert_ne!(cli_config, text, "the credential block was not found");
    std::fs::write(&env.config_path, &cli_config).unwrap();
    let config = path_str(&env.config_path);
    let path = fake_az(&env);

    // Off the runtime's thread: the emulator answers on it.
    let run = |args: &[&str]| {
        let mut cmd = env.command(args);
        cmd.env("PATH", &path);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    let check = run(&["check", "--config", &config, "--online"])
        .await
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        stdout(&check),
        stderr(&check)
    );
    assert!(stdout(&check).contains("app-one: OK"), "{}", stdout(&check));
    let plan = run(&["plan", "--config", &config, "--output", "json"])
        .await
        .unwrap();
    assert!(plan.status.success(), "{}", stderr(&plan));
    let items: serde_json::Value = serde_json::from_str(&stdout(&plan)).unwrap();
    assert_eq!(items[0]["client"], "app-one");
    assert_eq!(items[0]["action"], "rotate", "{items}");

    // Every token came through the CLI, for the configured tenant, for Graph and Key Vault.
    let log = std::fs::read_to_string(env.dir.path().join("az.log")).unwrap();
    let calls: Vec<Vec<String>> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(calls.iter().all(|c| {
        c.windows(2)
            .any(|w| w[0] == "--tenant" && w[1] == env.tenant)
    }));
    let scopes: std::collections::BTreeSet<&str> = calls
        .iter()
        .filter_map(|c| {
            c.iter()
                .position(|a| a == "--scope")
                .map(|i| c[i + 1].as_str())
        })
        .collect();
    assert_eq!(
        scopes,
        [
            "https://graph.microsoft.com/.default",
            "https://vault.azure.net/.default"
        ]
        .into()
    );

    // The daemon does not run on a person's session: a config error, before anything else.
    let daemon = run(&["run", "--config", &config]).await.unwrap();
    assert_eq!(daemon.status.code(), Some(78), "{}", stderr(&daemon));
    let line = stderr(&daemon);
    let kind_line = cli_config
        .lines()
        .position(|l| l == "kind = \"azure_cli\"")
        .unwrap()
        + 1;
    assert!(
        line.starts_with(&format!(
            "secret-rotator: {config}:{kind_line}: azure.credential.kind: \"azure_cli\" signs in as a person"
        )),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        env.writes().is_empty(),
        "nothing was written: {:?}",
        env.writes()
    );
}

//! Config errors: each names the file, the line and the key.
//!
//! Over 600 lines: one test per configuration error and rule, each naming the file, line and
//! key it expects.

use super::*;
use proptest::prelude::*;
use secrecy::ExposeSecret;
use std::os::unix::fs::PermissionsExt;

fn text(state: &Path, vault: &str, client_extra: &str, defaults: &str) -> String {
    format!(
        r#"[azure]
tenant_id = "00000000-0000-0000-0000-000000000000"

[azure.credential]
kind = "managed_identity"

[state]
dir = "{}"

[defaults]
{defaults}

[[clients]]
name = "c"
app_id = "22222222-2222-2222-2222-222222222222"
key_vault_url = "{vault}"
secret_name = "c-secret"
{client_extra}
"#,
        state.display()
    )
}

#[test]
fn a_state_dir_others_may_write_is_refused_naming_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let file = tmp.path().join("config.toml");
    let t = text(&state, "https://kv.vault.azure.net", "", "");
    Config::parse(&file, &t).expect("a missing state dir is fine: it is created");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    Config::parse(&file, &t).expect("an owner-only state dir is fine");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = Config::parse(&file, &t).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(8), "state.dir"));
    assert!(
        e.to_string()
            .starts_with(&format!("{}:8: state.dir: ", file.display()))
    );
    assert!(
        e.message
            .contains("writable by group or others (mode 0777)"),
        "{e}"
    );
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o770)).unwrap();
    assert!(
        Config::parse(&file, &t).is_err(),
        "group-writable is refused too"
    );
}

#[test]
fn a_vault_outside_the_clouds_suffix_needs_allow_custom_vault_host() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let file = tmp.path().join("config.toml");
    for typo in [
        "https://contoso-kv.vault.azure.net.example.com",
        "https://contoso-kv.vault.azure.cn",
        "https://kv.internal.contoso.com",
        "https://10.0.0.5:8443",
    ] {
        let e = Config::parse(&file, &text(&state, typo, "", "")).unwrap_err();
        assert_eq!(e.key, "clients[0] (c).key_vault_url", "{typo}");
        assert_eq!(e.line, Some(16), "{typo}");
        assert!(
            e.message
                .contains("not a Key Vault host of the public cloud (*.vault.azure.net)"),
            "{e}"
        );
        assert!(e.message.contains("allow_custom_vault_host = true"), "{e}");
        Config::parse(
            &file,
            &text(&state, typo, "allow_custom_vault_host = true", ""),
        )
        .expect("allowed on the client");
        Config::parse(
            &file,
            &text(&state, typo, "", "allow_custom_vault_host = true"),
        )
        .expect("allowed in [defaults]");
        assert!(
            Config::parse(
                &file,
                &text(
                    &state,
                    typo,
                    "allow_custom_vault_host = false",
                    "allow_custom_vault_host = true"
                ),
            )
            .is_err(),
            "the client's own false wins over [defaults]"
        );
    }
    for fine in [
        "https://Contoso-KV.vault.azure.net/",
        "https://127.0.0.1:8710",
        "https://127.0.0.2:8710",
        "https://[::1]:8710",
        "https://localhost:8710",
    ] {
        Config::parse(&file, &text(&state, fine, "", "")).expect(fine);
    }
}

#[test]
fn a_secret_file_others_may_read_is_named_in_a_warning_without_its_content() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("daemon-secret");
    std::fs::write(&secret, "the-secret-value-0123456789").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = tmp.path().join("config.toml");
    let t = text(
        &tmp.path().join("state"),
        "https://kv.vault.azure.net",
        "",
        "",
    )
    .replace(
        "kind = \"managed_identity\"",
        "kind = \"client_secret\"\nclient_id = \"11111111-1111-1111-1111-111111111111\"\nclient_secret_file = \"daemon-secret\"",
    );
    let c = Config::parse(&file, &t).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let w = &c.warnings[0];
    assert!(w.contains("azure.credential.client_secret_file"), "{w}");
    assert!(w.contains(&secret.display().to_string()), "{w}");
    assert!(w.contains("mode 0644"), "{w}");
    assert!(!w.contains("the-secret-value"), "{w}");
    match &c.azure.credential {
        Credential::ClientSecret { secret, .. } => {
            assert_eq!(secret.expose_secret(), "the-secret-value-0123456789")
        }
        other => panic!("{other:?}"),
    }
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Config::parse(&file, &t).unwrap().warnings.is_empty());
}

/// One bad value per section: the error names the key and the line it is on, and says what is
/// wrong in words an operator can act on.
#[test]
fn each_sections_errors_name_the_key_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let file = tmp.path().join("config.toml");
    let base = text(&state, "https://kv.vault.azure.net", "", "");
    let cases: &[(&str, &str, &str, &str)] = &[
        // (replace, with, key, message fragment)
        (
            "tenant_id = \"00000000-0000-0000-0000-000000000000\"",
            "tenant_id = \"not a tenant\"",
            "azure.tenant_id",
            "is not a tenant id",
        ),
        (
            "kind = \"managed_identity\"",
            "kind = \"password\"",
            "azure.credential.kind",
            "is not one of client_secret, workload_identity, managed_identity, azure_cli, developer",
        ),
        (
            "kind = \"managed_identity\"",
            "kind = \"managed_identity\"\nclient_secret_file = \"s\"",
            "azure.credential.client_secret_file",
            "does not apply to kind = \"managed_identity\"",
        ),
        (
            "kind = \"managed_identity\"",
            "kind = \"azure_cli\"\nclient_id = \"11111111-1111-1111-1111-111111111111\"",
            "azure.credential.client_id",
            "does not apply to kind = \"azure_cli\"",
        ),
        (
            "kind = \"managed_identity\"",
            "kind = \"developer\"\nfederated_token_file = \"t\"",
            "azure.credential.federated_token_file",
            "does not apply to kind = \"developer\"",
        ),
        (
            "[state]",
            "[daemon]\nmax_concurrent = 0\n[state]",
            "daemon.max_concurrent",
            "0 is out of range: 1 to 4096",
        ),
        (
            "[state]",
            "[daemon]\nmax_concurrent = \"many\"\n[state]",
            "daemon.max_concurrent",
            "\"many\" is neither \"auto\" nor a number from 1 to 4096",
        ),
        (
            "[state]",
            "[log]\nformat = \"xml\"\n[state]",
            "log.format",
            "'xml' is not one of text, json",
        ),
        (
            "[state]",
            "[server]\nlisten = \"localhost\"\n[state]",
            "server.listen",
            "'localhost' is not an address:port",
        ),
        (
            "[defaults]",
            "[defaults]\noverlap = \"soon\"",
            "defaults.overlap",
            "soon",
        ),
        (
            "secret_name = \"c-secret\"",
            "secret_name = \"c_secret\"",
            "clients[0] (c).secret_name",
            "must be 1-127 characters",
        ),
        (
            "[state]",
            "[daemon]\nmax_rotations_per_hour = -1\n[state]",
            "daemon.max_rotations_per_hour",
            "-1 is out of range: 0 (no budget) to 100000",
        ),
        (
            "[defaults]",
            "[defaults]\nwindows = [\"Mon-Fry 08:00-18:00\"]",
            "defaults.windows",
            "'Fry' is not a day",
        ),
        (
            "secret_name = \"c-secret\"",
            "secret_name = \"c-secret\"\nfreeze = [\"2027-01-03..2026-12-20\"]",
            "clients[0] (c).freeze",
            "the freeze ends before it starts",
        ),
        (
            "secret_name = \"c-secret\"",
            "secret_name = \"c-secret\"\nwindows = [\"Mon 8-18\"]",
            "clients[0] (c).windows",
            "'8-18' is not a time span",
        ),
        (
            "tenant_id = \"00000000-0000-0000-0000-000000000000\"",
            "tenant_id = \"00000000-0000-0000-0000-000000000000\"\nresource_manager_endpoint = \"http://management.example\"",
            "azure.resource_manager_endpoint",
            "must use https",
        ),
        (
            "[state]",
            "[discovery]\nenabled = true\ntag = \"secret rotator\"\nkey_vault_url = \"https://kv.vault.azure.net\"\n[state]",
            "discovery.tag",
            "must be 1-64 characters",
        ),
        (
            "[state]",
            "[discovery]\nenabled = true\ninterval = \"10ms\"\nkey_vault_url = \"https://kv.vault.azure.net\"\n[state]",
            "discovery.interval",
            "at least 1s",
        ),
        (
            "[state]",
            "[discovery]\nenabled = true\nkey_vault_url = \"https://kv.vault.azure.net\"\nsecret_name = \"{app}_secret\"\n[state]",
            "discovery.secret_name",
            "must be a vault secret name",
        ),
        (
            "[state]",
            "[discovery]\nenabled = true\nkey_vault_url = \"http://kv.vault.azure.net\"\n[state]",
            "discovery.key_vault_url",
            "must use https",
        ),
        (
            "[defaults]",
            "[defaults]\nverify_url = \"http://dicom.example/v2/changefeed\"",
            "defaults.verify_url",
            "must be an https URL",
        ),
        (
            "secret_name = \"c-secret\"",
            "secret_name = \"c-secret\"\nverify_url = \"changefeed\"",
            "clients[0] (c).verify_url",
            "is not a URL",
        ),
        (
            "secret_name = \"c-secret\"",
            "secret_name = \"c-secret\"\nrenew_before = \"100d\"",
            "clients[0] (c).renew_before",
            "must be shorter than secret_lifetime",
        ),
        (
            "[state]",
            "[inventory]\nexport = \"some\"\n[state]",
            "inventory.export",
            "is not all or expiring_within:<duration>",
        ),
        (
            "[state]",
            "[inventory]\ninterval = \"0s\"\n[state]",
            "inventory.interval",
            "must be longer than zero",
        ),
        (
            "[defaults]",
            "[defaults]\ndrift_interval = \"hourly\"",
            "defaults.drift_interval",
            "hourly",
        ),
        (
            "secret_name = \"c-secret\"",
            "secret_name = \"c-secret\"\nrepair = \"fix\"",
            "clients[0] (c).repair",
            "'fix' is not one of rotate, alert",
        ),
    ];
    for (from, to, key, fragment) in cases {
        assert!(base.contains(from), "{from}");
        let t = base.replacen(from, to, 1);
        let e = Config::parse(&file, &t).expect_err(to);
        assert_eq!(e.key, *key, "{e}");
        let bad_line = t
            .lines()
            .position(|l| {
                let k = key.rsplit('.').next().unwrap();
                l.starts_with(&format!("{k} ")) && to.contains(l)
            })
            .map(|i| i + 1);
        assert_eq!(e.line, bad_line, "{e}");
        assert!(e.message.contains(fragment), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("{}:{}: {key}: ", file.display(), e.line.unwrap())),
            "{e}"
        );
    }
}

#[test]
fn drift_keys_default_to_hourly_rotate_and_a_client_overrides_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let file = tmp.path().join("config.toml");
    let c = Config::parse(&file, &text(&state, "https://kv.vault.azure.net", "", "")).unwrap();
    let p = &c.clients[0].policy;
    assert_eq!(p.drift_interval, std::time::Duration::from_secs(3600));
    assert_eq!(p.repair, crate::drift::Repair::Rotate);
    let t = text(
        &state,
        "https://kv.vault.azure.net",
        "repair = \"alert\"",
        "drift_interval = \"0s\"\nrepair = \"rotate\"",
    );
    let c = Config::parse(&file, &t).unwrap();
    let p = &c.clients[0].policy;
    assert!(p.drift_interval.is_zero(), "0s turns the sign-in off");
    assert_eq!(p.repair, crate::drift::Repair::Alert);
}

/// A second client that names the first one's application or vault secret is refused on the
/// second one's line, naming the first.
#[test]
fn clients_that_collide_are_refused_naming_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("config.toml");
    let base = text(
        &tmp.path().join("state"),
        "https://kv.vault.azure.net",
        "",
        "",
    );
    let second = |app: &str, secret: &str| {
        format!(
            "{base}\n[[clients]]\nname = \"d\"\napp_id = \"{app}\"\nkey_vault_url = \"https://KV.vault.azure.net/\"\nsecret_name = \"{secret}\"\n"
        )
    };
    let e = Config::parse(
        &file,
        &second("22222222-2222-2222-2222-222222222222", "d-secret"),
    )
    .unwrap_err();
    assert_eq!(e.key, "clients[1] (d).app_id");
    assert!(
        e.message
            .contains("clients[0] already manages this application"),
        "{e}"
    );
    let e = Config::parse(
        &file,
        &second("33333333-3333-3333-3333-333333333333", "C-SECRET"),
    )
    .unwrap_err();
    assert_eq!(e.key, "clients[1] (d).secret_name");
    assert!(
        e.message
            .contains("clients[0] already writes this secret in this vault"),
        "{e}"
    );
    Config::parse(
        &file,
        &second("33333333-3333-3333-3333-333333333333", "d-secret"),
    )
    .expect("distinct app and secret");
}

/// Graph writes GUIDs in lower case: an app id written in capitals is that application, shown
/// (in `status`, events and Graph's URLs) as Graph writes it, and a second client naming it in
/// lower case is refused.
#[test]
fn an_app_id_in_capitals_is_the_same_application_written_in_lower_case() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("config.toml");
    let base = text(
        &tmp.path().join("state"),
        "https://kv.vault.azure.net",
        "",
        "",
    );
    let client = |name: &str, key: &str, app: &str| {
        format!(
            "\n[[clients]]\nname = \"{name}\"\n{key} = \"{app}\"\nkey_vault_url = \"https://kv.vault.azure.net\"\nsecret_name = \"{name}-secret\"\n"
        )
    };
    let one = format!(
        "{base}{}{}",
        client("d", "app_id", "ABCDEF01-2345-6789-ABCD-EF0123456789"),
        client("e", "app_object_id", "FEDCBA98-7654-3210-FEDC-BA9876543210")
    );
    let c = Config::parse(&file, &one).unwrap();
    assert_eq!(
        c.clients[1].app.to_string(),
        "app_id abcdef01-2345-6789-abcd-ef0123456789"
    );
    assert_eq!(
        c.clients[2].app.to_string(),
        "app_object_id fedcba98-7654-3210-fedc-ba9876543210"
    );
    let two = format!(
        "{one}{}",
        client("f", "app_id", "abcdef01-2345-6789-abcd-ef0123456789")
    );
    let e = Config::parse(&file, &two).unwrap_err();
    assert_eq!(e.key, "clients[3] (f).app_id");
    assert!(
        e.message
            .contains("clients[1] already manages this application"),
        "{e}"
    );
}

/// The clients are read a section at a time (`sections.rs`): an error in a later client, or in
/// a table that follows the clients, still names its own line.
#[test]
fn errors_after_the_first_client_name_their_own_line() {
    let client = |name: &str, app: &str, extra: &str| {
        format!(
            "[[clients]]\nname = \"{name}\"\napp_id = \"{app}\"\nkey_vault_url = \"https://kv.vault.azure.net\"\nsecret_name = \"{name}\"\n{extra}\n"
        )
    };
    let a = client("b", "33333333-3333-3333-3333-333333333333", "");
    let b = client(
        "c",
        "44444444-4444-4444-4444-444444444444",
        "colour = \"red\"",
    );
    let text = format!("{VALID}\n{a}{b}");
    let line = text.lines().position(|l| l.starts_with("colour")).unwrap() + 1;
    let e = Config::parse(Path::new("c.toml"), &text).unwrap_err();
    assert_eq!(e.line, Some(line), "{e}");
    assert!(e.message.contains("unknown field `colour`"), "{e}");

    let b = client(
        "c",
        "44444444-4444-4444-4444-444444444444",
        "overlap = \"61d\"",
    );
    let text = format!("{VALID}\n{a}{b}");
    let line = text
        .lines()
        .position(|l| l.starts_with("overlap = \"61d\""))
        .unwrap()
        + 1;
    let e = Config::parse(Path::new("c.toml"), &text).unwrap_err();
    assert_eq!(
        (e.line, e.key.as_str()),
        (Some(line), "clients[2] (c).overlap"),
        "{e}"
    );

    let text = format!("{VALID}\n{a}[server]\nlisten = \"nowhere\"\n");
    let line = text.lines().position(|l| l.starts_with("listen")).unwrap() + 1;
    let e = Config::parse(Path::new("c.toml"), &text).unwrap_err();
    assert_eq!(
        (e.line, e.key.as_str()),
        (Some(line), "server.listen"),
        "{e}"
    );
}

#[test]
fn clients_with_the_same_policy_keys_share_one_policy() {
    let client = |name: &str, app: &str, extra: &str| {
        format!(
            "[[clients]]\nname = \"{name}\"\napp_id = \"{app}\"\nkey_vault_url = \"https://kv.vault.azure.net\"\nsecret_name = \"{name}\"\n{extra}\n"
        )
    };
    let text = format!(
        "{VALID}\n{}{}{}",
        client("b", "33333333-3333-3333-3333-333333333333", ""),
        client(
            "c",
            "44444444-4444-4444-4444-444444444444",
            "overlap = \"2d\""
        ),
        client(
            "d",
            "55555555-5555-5555-5555-555555555555",
            "overlap = \"2d\""
        ),
    );
    let c = Config::parse(Path::new("c.toml"), &text).unwrap();
    let policy = |name: &str| &c.client(name).unwrap().policy;
    assert!(std::sync::Arc::ptr_eq(policy("a"), policy("b")));
    assert!(std::sync::Arc::ptr_eq(policy("c"), policy("d")));
    assert!(!std::sync::Arc::ptr_eq(policy("a"), policy("c")));
    let day = std::time::Duration::from_secs(86_400);
    assert_eq!(policy("c").overlap, 2 * day);
    assert_eq!(policy("a").overlap, 7 * day);
}

// Arbitrary and mutated text: always a one-line error naming the file, never a panic.

const VALID: &str = r#"[azure]
tenant_id = "00000000-0000-0000-0000-000000000000"
[azure.credential]
kind = "managed_identity"
[defaults]
schedule = "0 */15 * * * *"
secret_lifetime = "90d"
renew_before = "30d"
overlap = "7d"
[[clients]]
name = "a"
app_id = "22222222-2222-2222-2222-222222222222"
key_vault_url = "https://kv.vault.azure.net"
secret_name = "a-secret"
"#;

fn parse_text(text: &str) -> Result<Config, String> {
    Config::parse(Path::new("/etc/secret-rotator/config.toml"), text).map_err(|e| e.to_string())
}

#[test]
fn the_valid_base_config_parses() {
    parse_text(VALID).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn config_parser_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        if let Err(e) = parse_text(&text) {
            prop_assert!(e.starts_with("/etc/secret-rotator/config.toml"), "{e}");
            prop_assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn config_parser_names_the_file_for_every_mutation_of_a_valid_config(
        line in 0usize..14, replacement in "[ -~]{0,40}", duplicate in any::<bool>()
    ) {
        let mut lines: Vec<String> = VALID.lines().map(str::to_string).collect();
        if duplicate {
            let l = lines[line].clone();
            lines.insert(line, l);
        } else {
            lines[line] = replacement;
        }
        if let Err(e) = parse_text(&lines.join("\n")) {
            prop_assert!(e.starts_with("/etc/secret-rotator/config.toml"), "{e}");
            prop_assert!(!e.contains('\n'), "one line: {e}");
        }
    }
}

/// `[ha]`: each bad value names its key and line; the defaults and a good section parse.
#[test]
fn ha_errors_name_the_key_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let file = tmp.path().join("config.toml");
    let conn = tmp.path().join("conn");
    std::fs::write(
        &conn,
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;",
    )
    .unwrap();
    std::fs::set_permissions(&conn, std::fs::Permissions::from_mode(0o600)).unwrap();
    let bad_conn = tmp.path().join("bad-conn");
    std::fs::write(&bad_conn, "AccountName=x").unwrap();
    std::fs::set_permissions(&bad_conn, std::fs::Permissions::from_mode(0o600)).unwrap();
    let base = text(&state, "https://kv.vault.azure.net", "", "");
    let ha = |body: &str| base.replacen("[state]", &format!("[ha]\n{body}\n[state]"), 1);

    let ok = Config::parse(
        &file,
        &ha("kind = \"blob_lease\"\naccount_url = \"https://acct.blob.core.windows.net\"\nreplica = \"vm-1\""),
    )
    .unwrap();
    let h = ok.ha.expect("ha");
    assert_eq!(
        (
            h.container.as_str(),
            h.blob.as_str(),
            h.lease_duration.as_secs(),
            h.renew_every.as_secs()
        ),
        ("secret-rotator", "default.leader", 60, 20)
    );
    assert!(h.shared_key.is_none());
    let azurite = Config::parse(
        &file,
        &ha(&format!(
            "kind = \"blob_lease\"\naccount_url = \"http://127.0.0.1:10000/devstoreaccount1\"\nconnection_string_file = \"{}\"",
            conn.display()
        )),
    )
    .unwrap();
    assert_eq!(
        azurite.ha.unwrap().shared_key.unwrap().0,
        "devstoreaccount1"
    );
    assert!(
        Config::parse(&file, &ha("kind = \"none\""))
            .unwrap()
            .ha
            .is_none()
    );

    let lease =
        "kind = \"blob_lease\"\naccount_url = \"https://a.blob.core.windows.net\"\nreplica = \"r\"";
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "kind = \"raft\"".into(),
            "ha.kind",
            "is not one of none, blob_lease",
        ),
        (
            "container = \"x\"".into(),
            "ha.container",
            "does not apply to kind = \"none\"",
        ),
        (
            "kind = \"blob_lease\"\naccount_url = \"http://a.blob.core.windows.net\"".into(),
            "ha.account_url",
            "must use https",
        ),
        (
            "kind = \"blob_lease\"\naccount_url = \"http://127.0.0.1:10000/devstoreaccount1\""
                .into(),
            "ha.account_url",
            "plain http only with ha.connection_string_file",
        ),
        (
            format!("{lease}\ncontainer = \"Bad_Name\""),
            "ha.container",
            "is not a container name",
        ),
        (
            format!("{lease}\nblob = \"a/b\""),
            "ha.blob",
            "must be 1-256 characters",
        ),
        (
            format!("{lease}\nlease_duration = \"90s\""),
            "ha.lease_duration",
            "from 15s to 60s",
        ),
        (
            format!("{lease}\nlease_duration = \"30s\"\nrenew_every = \"5s\""),
            "ha.lease_duration",
            "must be longer than azure.request_timeout (30s) + 3s",
        ),
        (
            format!("{lease}\nrenew_every = \"30s\""),
            "ha.renew_every",
            "must be shorter than half of ha.lease_duration",
        ),
        (
            format!("{lease}\nrenew_every = \"28s\"\nlease_duration = \"60s\""),
            "ha.renew_every",
            "or the leader stops writing between renewals",
        ),
        (
            format!("{lease}\nreplica = \"a b\"").replacen("replica = \"r\"\n", "", 1),
            "ha.replica",
            "must be 1-63 characters",
        ),
        (
            format!(
                "{lease}\nconnection_string_file = \"{}\"",
                bad_conn.display()
            ),
            "ha.connection_string_file",
            "has no AccountKey",
        ),
    ];
    for (body, key, fragment) in &cases {
        let t = ha(body);
        let e = Config::parse(&file, &t).expect_err(body);
        assert_eq!(e.key, *key, "{e}");
        let k = key.rsplit('.').next().unwrap();
        let lines: Vec<&str> = t.lines().collect();
        let line = lines
            .iter()
            .rposition(|l| l.starts_with(&format!("{k} ")))
            .map(|i| i + 1);
        assert_eq!(e.line, line, "{e}");
        assert!(e.message.contains(fragment), "{e}");
        assert!(!e.to_string().contains("a2V5"), "never the key: {e}");
    }
    // Required with blob_lease, named though it is nowhere in the file.
    let e = Config::parse(&file, &ha("kind = \"blob_lease\"")).unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("ha.account_url", None));
}

/// `[[events]]`: each bad sink is refused on the line of the value at fault, naming the key.
#[test]
fn each_event_sink_error_names_the_key_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("config.toml");
    let key = tmp.path().join("key");
    std::fs::write(&key, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let short = tmp.path().join("short");
    std::fs::write(&short, "whsec_c2hvcnQ=").unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let base = text(
        &tmp.path().join("state"),
        "https://kv.vault.azure.net",
        "",
        "",
    );
    let hook = |lines: &str| {
        format!(
            "{base}\n[[events]]\nkind = \"webhook\"\nurl = \"https://consumer.example/hook\"\nsigning_key_file = \"{}\"\n{lines}",
            key.display()
        )
    };
    let good = Config::parse(
        &file,
        &hook("types = [\"published\", \"retired\"]\nclients = [\"c\"]\ntimeout = \"5s\""),
    )
    .unwrap();
    assert_eq!(good.events.len(), 1);
    assert_eq!(good.events[0].name, "webhook-1");
    assert!(good.events[0].wants("published", "c") && !good.events[0].wants("failed", "c"));
    // (text, key, fragment, the text of the line at fault)
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            format!("{base}\n[[events]]\nkind = \"email\"\n"),
            "events[0].kind",
            "'email' is not one of webhook, exec",
            "kind = \"email\"",
        ),
        (
            format!("{base}\n[[events]]\nkind = \"webhook\"\n"),
            "events[0].url",
            "a webhook needs url",
            "kind = \"webhook\"",
        ),
        (
            hook("").replace(
                "https://consumer.example/hook",
                "http://consumer.example/hook",
            ),
            "events[0].url",
            "must use https (plain http only to a loopback address)",
            "url = \"http://consumer.example/hook\"",
        ),
        (
            hook("").replace(
                "https://consumer.example/hook",
                "https://u:p@consumer.example/hook",
            ),
            "events[0].url",
            "must not carry credentials",
            "url = \"https://u:p@consumer.example/hook\"",
        ),
        (
            format!(
                "{base}\n[[events]]\nkind = \"webhook\"\nurl = \"https://consumer.example/hook\"\n"
            ),
            "events[0].signing_key_file",
            "a webhook needs signing_key_file",
            "kind = \"webhook\"",
        ),
        (
            hook("").replace(&key.display().to_string(), &short.display().to_string()),
            "events[0].signing_key_file",
            "5-byte key",
            "",
        ),
        (
            hook("argv = [\"true\"]"),
            "events[0].argv",
            "does not apply to kind = \"webhook\"",
            "argv = [\"true\"]",
        ),
        (
            format!("{base}\n[[events]]\nkind = \"exec\"\nargv = []\n"),
            "events[0].argv",
            "must name a program",
            "argv = []",
        ),
        (
            format!(
                "{base}\n[[events]]\nkind = \"exec\"\nargv = [\"x\"]\nurl = \"https://a.example\"\n"
            ),
            "events[0].url",
            "does not apply to kind = \"exec\"",
            "url = \"https://a.example\"",
        ),
        (
            hook("types = [\"published\", \"rotated\"]"),
            "events[0].types",
            "'rotated' is not one of published, retired, failed, blocked, expiring, drift",
            "types = [\"published\", \"rotated\"]",
        ),
        (
            hook("clients = [\"nobody\"]"),
            "events[0].clients",
            "'nobody' is not a configured client",
            "clients = [\"nobody\"]",
        ),
        (
            hook("timeout = \"soon\""),
            "events[0].timeout",
            "soon",
            "timeout = \"soon\"",
        ),
        (
            hook("name = \"a b\""),
            "events[0].name",
            "must be 1-64 characters",
            "name = \"a b\"",
        ),
        (
            format!(
                "{}\n[[events]]\nname = \"webhook-1\"\nkind = \"exec\"\nargv = [\"x\"]\n",
                hook("")
            ),
            "events[1].name",
            "another sink is named 'webhook-1'",
            "name = \"webhook-1\"",
        ),
    ];
    for (t, k, fragment, line) in cases {
        let e = Config::parse(&file, &t).expect_err(&t);
        assert_eq!(e.key, k, "{e}");
        assert!(e.message.contains(fragment), "{e}");
        let want = if line.is_empty() {
            t.lines().position(|l| l.starts_with("signing_key_file"))
        } else {
            t.lines().position(|l| l == line)
        }
        .map(|i| i + 1);
        assert_eq!(e.line, want, "{e}");
        assert!(
            !e.to_string().contains("c2hvcnQ"),
            "the key is never echoed: {e}"
        );
    }
}

/// `windows` and `freeze` on a client override `[defaults]`, in the client's time zone.
#[test]
fn a_clients_windows_override_the_defaults_in_its_time_zone() {
    let tmp = tempfile::tempdir().unwrap();
    let t = text(
        &tmp.path().join("state"),
        "https://kv.vault.azure.net",
        "timezone = \"Europe/Berlin\"\nwindows = [\"Sat 10:00-12:00\"]",
        "windows = [\"Mon-Fri 08:00-18:00\"]\nfreeze = [\"2026-12-20..2027-01-03\"]\n[daemon]\nmax_rotations_per_hour = 5",
    );
    let c = Config::parse(&tmp.path().join("config.toml"), &t).unwrap();
    assert_eq!(c.max_rotations_per_hour, 5);
    let change = &c.clients[0].policy.change;
    assert_eq!(change.timezone, chrono_tz::Tz::Europe__Berlin);
    assert_eq!(change.windows.len(), 1);
    assert_eq!(change.windows[0].to_string(), "Sat 10:00-12:00");
    assert_eq!(change.freeze.len(), 1, "freeze comes from [defaults]");
}

#[test]
fn a_configuration_of_comments_only_says_what_to_fill_in() {
    let file = Path::new("/etc/secret-rotator/config.toml");
    let commented: String = include_str!("../../config/example.toml")
        .lines()
        .map(|l| format!("# {l}\n"))
        .collect();
    for source in ["", "\n\n", commented.as_str()] {
        let e = Config::parse(file, source).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/secret-rotator/config.toml: azure.tenant_id: the configuration sets nothing yet: set [azure] tenant_id, [azure.credential] and at least one [[clients]] entry (the commented example lists every key)"
        );
    }
}

#[test]
fn a_persons_session_serves_commands_run_by_hand_but_never_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("config.toml");
    let base = text(
        &tmp.path().join("state"),
        "https://kv.vault.azure.net",
        "",
        "",
    );
    for (kind, expected) in [("azure_cli", "azure_cli"), ("developer", "developer")] {
        let t = base.replace("kind = \"managed_identity\"", &format!("kind = \"{kind}\""));
        let c = Config::parse(&file, &t).expect("valid for check, plan, inventory, register");
        assert_eq!(c.azure.credential.kind(), expected);
        assert!(c.azure.credential.is_interactive());
        assert_eq!(c.azure.credential.client_id(), None);
        let e = c.check_for_daemon().unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(5), "azure.credential.kind"));
        assert!(
            e.to_string().starts_with(&format!(
                "{}:5: azure.credential.kind: \"{kind}\" signs in as a person",
                file.display()
            )),
            "{e}"
        );
        assert!(
            e.message
                .contains("client_secret, workload_identity or managed_identity")
        );
    }
    let own = Config::parse(&file, &base).unwrap();
    assert!(own.check_for_daemon().is_ok());
}

#[test]
fn clients_dir_files_are_clients_and_their_errors_name_the_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let file = tmp.path().join("config.toml");
    let dir = tmp.path().join("clients.d");
    let with_dir = |t: &str| {
        t.replacen(
            "[state]",
            "[daemon]\nclients_dir = \"clients.d\"\n[state]",
            1,
        )
    };
    let base = with_dir(&text(&state, "https://kv.vault.azure.net", "", ""));
    let e = Config::parse(&file, &base).unwrap_err();
    assert_eq!(e.key, "daemon.clients_dir", "{e}");
    assert!(e.message.contains("is not a directory"), "{e}");

    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("dicom.toml"),
        "name = \"dicom\"\napp_id = \"33333333-3333-3333-3333-333333333333\"\nkey_vault_url = \"https://kv.vault.azure.net\"\nsecret_name = \"dicom-client-secret\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not a client").unwrap();
    let config = Config::parse(&file, &base).unwrap();
    assert_eq!(
        config.clients.iter().map(|c| &*c.name).collect::<Vec<_>>(),
        ["c", "dicom"]
    );

    std::fs::write(
        dir.join("two.toml"),
        "name = \"two\"\napp_id = \"44444444-4444-4444-4444-444444444444\"\nkey_vault_url = \"https://kv.vault.azure.net\"\n\nsecret_name = \"dicom-client-secret\"\n",
    )
    .unwrap();
    let e = Config::parse(&file, &base).unwrap_err();
    assert_eq!(e.file, dir.join("two.toml"));
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.key.ends_with(".secret_name"), "{e}");

    std::fs::write(dir.join("two.toml"), "name = \"two\"\nsurprise = 1\n").unwrap();
    let e = Config::parse(&file, &base).unwrap_err();
    assert_eq!(e.file, dir.join("two.toml"));
    assert!(e.message.contains("surprise"), "{e}");
}

#[test]
fn discovery_needs_a_vault_when_enabled() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("config.toml");
    let t = text(
        &tmp.path().join("state"),
        "https://kv.vault.azure.net",
        "",
        "",
    )
    .replacen("[state]", "[discovery]\nenabled = true\n[state]", 1);
    let e = Config::parse(&file, &t).unwrap_err();
    assert_eq!(e.key, "discovery.key_vault_url", "{e}");
    assert!(
        e.to_string()
            .contains("is required when discovery is enabled"),
        "{e}"
    );
    let off = text(
        &tmp.path().join("state"),
        "https://kv.vault.azure.net",
        "",
        "",
    )
    .replacen("[state]", "[discovery]\nenabled = false\n[state]", 1);
    assert!(Config::parse(&file, &off).unwrap().discovery.is_none());
}

/// The verification's successes are `VERIFY_SPACING` apart and the first goes
/// `VERIFY_FIRST_WAIT` after `addPassword` answers: a `verify_timeout` no longer than that can
/// never verify, and each attempt would add a credential, sign in with it and remove it again.
/// 6 s with two successes verified at once before the first attempt waited a second (success
/// at 0 s and 5 s); since, the second success would come at 6 s, past the deadline.
#[test]
fn a_verify_timeout_too_short_for_verify_successes_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let file = tmp.path().join("config.toml");
    let parse = |defaults: &str| {
        Config::parse(
            &file,
            &text(&state, "https://kv.vault.azure.net", "", defaults),
        )
    };
    let e = parse("verify_timeout = \"6s\"\nverify_successes = 2").unwrap_err();
    assert_eq!(e.key, "defaults.verify_timeout", "{e}");
    assert!(
        e.message.contains("verify_successes = 2") && !e.message.contains('\n'),
        "{e}"
    );
    let e = parse("verify_timeout = \"10s\"\nverify_successes = 3").unwrap_err();
    assert_eq!(e.key, "defaults.verify_timeout", "{e}");
    parse("verify_timeout = \"7s\"\nverify_successes = 2").expect("7 s leaves a second");
    parse("verify_timeout = \"1s\"\nverify_successes = 1").expect("one success at the deadline");
    parse("verify_successes = 10").expect("the default verify_timeout, 5 minutes");
}

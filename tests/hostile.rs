//! Hostile input: property tests that feed the parsers arbitrary and mutated input, and the
//! planner arbitrary observed state. Always a clear error, never a panic; and whatever it
//! observes, the planner never removes the published credential or one it does not own.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use secret_rotator::azure::graph::{PasswordCredential, graph_error, parse_application};
use secret_rotator::azure::keyvault::{VersionInfo, error_body};
use secret_rotator::config::Config;
use secret_rotator::rotation::plan::{Observed, PolicyView, Probe, plan, tags};
use time::OffsetDateTime;

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

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(Path::new("/etc/secret-rotator/config.toml"), text).map_err(|e| e.to_string())
}

#[test]
fn the_valid_base_config_parses() {
    parse(VALID).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn config_parser_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        if let Err(e) = parse(&text) {
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
        if let Err(e) = parse(&lines.join("\n")) {
            prop_assert!(e.starts_with("/etc/secret-rotator/config.toml"), "{e}");
            prop_assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn graph_and_key_vault_parsers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_application(&body);
        let _ = graph_error(&body);
        let _ = error_body(&body);
    }

    #[test]
    fn graph_and_key_vault_parsers_never_panic_on_json_shaped_input(
        code in "\\PC{0,600}", message in "\\PC{0,900}", depth in 0usize..200
    ) {
        let mut inner = serde_json::json!({"code": code, "message": message});
        for _ in 0..depth {
            inner = serde_json::json!({"code": "x", "innererror": inner});
        }
        let body = serde_json::to_vec(&serde_json::json!({"error": inner})).unwrap();
        // Bounded, one-line texts, whatever the service sends (or unreadable, past JSON's
        // nesting limit).
        for (c, m) in [graph_error(&body), error_body(&body)] {
            prop_assert!(m.len() <= 400 && !m.contains('\n'));
            prop_assert!(c.is_none_or(|c| c.len() <= 100));
        }
        let app = serde_json::json!({"id": code, "appId": message, "passwordCredentials": [{"keyId": code, "endDateTime": message}]});
        let _ = parse_application(&serde_json::to_vec(&app).unwrap());
    }
}

fn credential() -> impl Strategy<Value = PasswordCredential> {
    (
        prop_oneof![Just("k1"), Just("k2"), Just("k3"), Just("k4"), Just("f1")],
        prop_oneof![
            Just(Some("secret-rotator:prod:dicom:r1".to_string())),
            Just(Some("secret-rotator:prod:dicom:r2".to_string())),
            Just(Some("secret-rotator:other:dicom:r1".to_string())),
            Just(Some("secret-rotator:prod:other:r1".to_string())),
            Just(Some("portal".to_string())),
            Just(None),
        ],
        -400i64..400,
        -400i64..400,
    )
        .prop_map(|(k, name, start, end)| PasswordCredential {
            key_id: k.to_string(),
            display_name: name,
            hint: Some("abc".into()),
            start: Some(now() + time::Duration::days(start)),
            end: Some(now() + time::Duration::days(end)),
        })
}

fn version() -> impl Strategy<Value = VersionInfo> {
    (
        prop_oneof![Just("k1"), Just("k2"), Just("k3"), Just("f1")],
        any::<bool>(),
        any::<bool>(),
        -400i64..0,
        -100i64..400,
    )
        .prop_map(|(k, managed, enabled, created, exp)| VersionInfo {
            version: format!("v{created}"),
            created: Some(now() + time::Duration::days(created)),
            enabled,
            expires: Some(now() + time::Duration::days(exp)),
            tags: if managed {
                tags("app", k, "r")
            } else {
                Default::default()
            },
        })
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_planner_never_removes_the_published_credential_or_a_foreign_one(
        passwords in proptest::collection::vec(credential(), 0..6),
        versions in proptest::option::of(proptest::collection::vec(version(), 0..5)),
        cap in proptest::option::of(Just(2usize)),
        probe in proptest::option::of(prop_oneof![Just(Probe::SignsIn), Just(Probe::Rejected), Just(Probe::Inconclusive)]),
        abandoned in proptest::collection::vec(prop_oneof![Just("r1".to_string()), Just("r2".to_string())], 0..2),
        skew in -300i64..300,
        adopt in any::<bool>(),
        force in any::<bool>(),
    ) {
        // Graph key ids are unique within an application.
        let mut passwords = passwords;
        let mut seen = std::collections::HashSet::new();
        passwords.retain(|p| seen.insert(p.key_id.clone()));
        let mut versions = versions;
        if let Some(v) = versions.as_mut() {
            v.sort_by_key(|x| x.created);
        }
        let observed = Observed { passwords: passwords.clone(), password_cap: cap, versions: versions.clone(), published_probe: probe, abandoned, skew_seconds: skew, adopted: None };
        let policy = PolicyView { instance: "prod", client: "dicom", renew_before: Duration::from_secs(30 * 86400), overlap: Duration::from_secs(7 * 86400), verify_timeout: Duration::from_secs(300), adopt, force };
        let p = plan(&observed, &policy, now());
        let published = versions.as_ref().and_then(|v| v.last()).filter(|v| v.tags.contains_key("managed-by")).and_then(|v| v.tags.get("key-id").cloned());
        for r in &p.removals {
            prop_assert!(Some(&r.key_id) != published.as_ref(), "removed the published credential {}", r.key_id);
            let owners: Vec<_> = passwords.iter().filter(|c| c.key_id == r.key_id).collect();
            prop_assert!(owners.iter().all(|c| c.display_name.as_deref().is_some_and(|d| d.starts_with("secret-rotator:prod:dicom:"))), "removed a credential it does not own: {}", r.key_id);
        }
        if skew.abs() > 120 {
            prop_assert!(p.removals.is_empty(), "a skewed clock blocks removals");
        }
        if p.blocked.is_some() {
            prop_assert!(p.rotate.is_none());
        }
    }
}

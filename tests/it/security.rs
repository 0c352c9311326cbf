//! What another local user, a vault writer or the network could do with the daemon's files, its
//! terminal output and the bundled emulator (docs/security.md).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use emulator::world::FaultKind;

use crate::harness::*;

const ESC_TAG: &str = "\u{1b}]0;owned\u{7}\u{1b}[2J";
const ESC_CODE: &str = "Forbidden\u{1b}[2J\u{1b}[31m";

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Publishes a managed version whose `key-id` tag is `key_id`, as any vault writer could.
fn forge_published_version(env: &Env, key_id: &str) {
    let mut state = env.em.world().state_mut();
    let vault = state.vaults.get_mut("kv-test").unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let tags = BTreeMap::from([
        ("managed-by".to_string(), "secret-rotator".to_string()),
        ("key-id".to_string(), key_id.to_string()),
    ]);
    vault.secrets.insert(
        "app-one-secret".into(),
        emulator::model::VaultSecret {
            name: "app-one-secret".into(),
            versions: vec![emulator::model::SecretVersion {
                version: "a".repeat(32),
                value: "written-by-a-vault-writer".into(),
                content_type: None,
                tags,
                enabled: true,
                nbf: None,
                exp: Some(now + 86_400),
                created: now - 3_600,
                updated: now - 3_600,
            }],
        },
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_and_status_print_control_characters_as_escapes() {
    let env = Env::new(Setup::default()).await;
    let config = path_str(&env.config_path);

    // A tag with terminal escapes: not a GUID, so no key id, and never printed.
    forge_published_version(&env, ESC_TAG);
    let out = env.cli(&["plan", "--config", &config]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!out.stdout.contains(&0x1b), "raw ESC in: {}", stdout(&out));
    assert!(!out.stderr.contains(&0x1b), "raw ESC in: {}", stderr(&out));
    assert!(
        stdout(&out).contains("has a key-id tag that is not a key id"),
        "{}",
        stdout(&out)
    );
    assert!(
        !stdout(&out).contains("owned") && !stderr(&out).contains("owned"),
        "the tag is not echoed"
    );

    // An error code with terminal escapes, as a hostile or broken vault host could answer: it
    // reaches the store and the terminal, escaped.
    env.fault(
        Operation::KeyvaultListVersions,
        50,
        FaultKind::Status {
            status: 403,
            code: Some(ESC_CODE.into()),
            retry_after: None,
        },
    );
    let out = env.rotate("app-one", &[]).await;
    assert!(!out.status.success());
    assert!(!out.stderr.contains(&0x1b), "raw ESC in: {}", stderr(&out));
    assert!(
        stderr(&out).contains("Forbidden\\u{1b}[2J"),
        "{}",
        stderr(&out)
    );

    let out = env.cli(&["status", "--config", &config]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!out.stdout.contains(&0x1b), "raw ESC in: {}", stdout(&out));
    assert!(
        stdout(&out).contains("Forbidden\\u{1b}[2J\\u{1b}[31m"),
        "{}",
        stdout(&out)
    );
    let out = env.cli(&["plan", "--config", &config]).await;
    assert!(!out.stdout.contains(&0x1b), "raw ESC in: {}", stdout(&out));
    assert!(
        stdout(&out).contains("Forbidden\\u{1b}[2J"),
        "{}",
        stdout(&out)
    );
    // JSON output escapes as JSON does.
    let out = env
        .cli(&["status", "--config", &config, "--output", "json"])
        .await;
    assert!(!out.stdout.contains(&0x1b), "raw ESC in: {}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_planted_at_a_lock_path_is_not_followed() {
    let env = Env::new(Setup::default()).await;
    let locks = env.dir.path().join("state").join("locks");
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(&locks)
        .unwrap();
    std::fs::set_permissions(
        env.dir.path().join("state"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::fs::set_permissions(&locks, std::fs::Permissions::from_mode(0o700)).unwrap();
    let victim = env.dir.path().join("victim");
    std::os::unix::fs::symlink(&victim, locks.join("clients.lock")).unwrap();

    let out = env.rotate("app-one", &[]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("clients.lock"),
        "the error names the lock: {}",
        stderr(&out)
    );
    assert!(!victim.exists(), "nothing was created through the link");
    assert!(env.writes().is_empty(), "{:?}", env.writes());

    std::fs::remove_file(locks.join("clients.lock")).unwrap();
    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&locks.join("clients.lock")), 0o600);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_emulator_refuses_a_listen_address_off_loopback() {
    let env = Env::new(Setup::default()).await;
    let state = env.dir.path().join("open-emulator");
    let mut child = env
        .command(&[
            "emulator",
            "--listen",
            "0.0.0.0:0",
            "--state-dir",
            &path_str(&state),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = child.wait_with_output().unwrap();
    let status = status.expect("the emulator exits instead of serving 0.0.0.0");
    assert!(!status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("0.0.0.0:0") && err.contains("not loopback"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_emulator_keeps_state_and_a_given_ca_key_owner_only() {
    let env = Env::new(Setup::default()).await;
    // A CA of the operator's, its key file as loosely kept as a careless copy makes it.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let given = env.dir.path().join("given");
    std::fs::create_dir(&given).unwrap();
    std::fs::write(given.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(given.join("ca-key.pem"), ca_key.serialize_pem()).unwrap();
    std::fs::set_permissions(
        given.join("ca-key.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let state = env.dir.path().join("emulator-cli");
    let seed = env.dir.path().join("seed.json");
    std::fs::write(
        &seed,
        r#"{"applications": [{"display_name": "seeded"}], "vaults": []}"#,
    )
    .unwrap();
    let out_file = env.dir.path().join("emulator-cli.out");
    let mut child = env
        .command(&[
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            &path_str(&state),
            "--seed",
            &path_str(&seed),
            "--ca-cert",
            &path_str(&given.join("ca.pem")),
            "--ca-key",
            &path_str(&given.join("ca-key.pem")),
        ])
        .stdout(Stdio::from(std::fs::File::create(&out_file).unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || std::fs::read_to_string(
            &out_file
        )
        .is_ok_and(|s| s.ends_with('\n')))
        .await,
        "the emulator printed its start line"
    );
    assert!(
        eventually(Duration::from_secs(10), || state
            .join("state.json")
            .exists())
        .await,
        "the seeded state is written"
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("state.json")), 0o600);
    assert_eq!(mode(&state.join("ca-key.pem")), 0o600);
    assert_eq!(
        std::fs::read_to_string(state.join("ca.pem")).unwrap(),
        ca.pem(),
        "the given CA is the one served"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_state_dir_the_emulator_uses_a_private_directory_and_removes_it() {
    let env = Env::new(Setup::default()).await;
    let tmp = env.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let out_file = env.dir.path().join("emulator-tmp.out");
    let mut child = env
        .command(&["emulator", "--listen", "127.0.0.1:0"])
        .env("TMPDIR", &tmp)
        .stdout(Stdio::from(std::fs::File::create(&out_file).unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || std::fs::read_to_string(
            &out_file
        )
        .is_ok_and(|s| s.ends_with('\n')))
        .await,
        "the emulator printed its start line"
    );
    let info: emulator::StartInfo =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let dir = std::path::Path::new(&info.ca_file).parent().unwrap();
    assert!(dir.starts_with(&tmp), "{dir:?}");
    assert_ne!(
        dir.file_name().unwrap().to_string_lossy(),
        format!("secret-rotator-emulator-{}", child.id()),
        "the name is not predictable"
    );
    assert_eq!(mode(dir), 0o700);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert!(
        std::fs::read_dir(&tmp).unwrap().next().is_none(),
        "the emulator removed its directory"
    );
}

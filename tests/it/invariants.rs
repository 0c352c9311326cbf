//! The invariants of docs/design/invariants.md as checks over the emulator's state and journal
//! and the daemon's outputs. Each returns the violations it found (empty when it holds); every
//! check has a test below that seeds a violation and sees it reported.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;

use crate::harness::*;

pub const MARKER: &str = "secret-rotator:test:";

/// The credentials the daemon does not own, as they were: (app id, key id) → (name, end).
pub type Foreign = BTreeMap<(String, String), (Option<String>, i64)>;

pub fn foreign_snapshot(env: &Env) -> Foreign {
    let state = env.em.world().state();
    let mut out = Foreign::new();
    for a in &state.applications {
        for p in a.passwords.iter().filter(|p| p.removed.is_none()) {
            if !p
                .display_name
                .as_deref()
                .is_some_and(|d| d.starts_with(MARKER))
            {
                out.insert(
                    (a.app_id.clone(), p.key_id.clone()),
                    (p.display_name.clone(), p.end.unix_timestamp()),
                );
            }
        }
    }
    out
}

/// I1: every client's latest vault version is managed, enabled, names a live credential of its
/// app whose secret is the version's value, and signs in.
pub async fn i1(env: &Env) -> Vec<String> {
    let mut v = Vec::new();
    for c in &env.clients {
        let versions = env.versions(&c.name);
        let Some(latest) = versions.last() else {
            v.push(format!("I1 {}: nothing published", c.name));
            continue;
        };
        if latest.tags.get("managed-by").map(String::as_str) != Some("secret-rotator")
            || !latest.enabled
        {
            v.push(format!(
                "I1 {}: the latest version is not a managed, enabled version",
                c.name
            ));
            continue;
        }
        let app = env.app(&c.name);
        let key = latest.tags.get("key-id").cloned().unwrap_or_default();
        match app
            .passwords
            .iter()
            .find(|p| p.key_id == key && p.removed.is_none())
        {
            None => v.push(format!(
                "I1 {}: key-id {key} names no live credential",
                c.name
            )),
            Some(p) if p.secret_text != latest.value => v.push(format!(
                "I1 {}: the published value is not credential {key}'s",
                c.name
            )),
            // Distinct from a lost secret: nothing renewed it in time (the daemon was down or
            // failing for longer than renew_before).
            Some(p) if p.end <= time::OffsetDateTime::now_utc() => {
                v.push(format!("I1 {}: the published secret expired", c.name))
            }
            Some(_) => {
                if !env.signs_in(&c.app_id, &latest.value).await {
                    v.push(format!(
                        "I1 {}: the published secret does not sign in",
                        c.name
                    ));
                }
            }
        }
    }
    v
}

/// I2: every credential with this installation's marker is the published one, or superseded
/// for less than `overlap + slack`, or (never published) younger than `in_flight`.
pub fn i2(env: &Env, overlap: Duration, slack: Duration, in_flight: Duration) -> Vec<String> {
    let mut v = Vec::new();
    let now = time::OffsetDateTime::now_utc();
    for c in &env.clients {
        let versions = env.versions(&c.name);
        let published = versions.last().and_then(|l| l.tags.get("key-id").cloned());
        for p in env
            .app(&c.name)
            .passwords
            .iter()
            .filter(|p| p.removed.is_none())
        {
            if !p
                .display_name
                .as_deref()
                .is_some_and(|d| d.starts_with(&format!("{MARKER}{}:", c.name)))
                || Some(&p.key_id) == published.as_ref()
            {
                continue;
            }
            match versions
                .iter()
                .rposition(|x| x.tags.get("key-id") == Some(&p.key_id))
            {
                Some(i) => {
                    let since = versions
                        .get(i + 1)
                        .map(|n| n.created)
                        .unwrap_or(now.unix_timestamp());
                    let age = Duration::from_secs((now.unix_timestamp() - since).max(0) as u64);
                    if age > overlap + slack {
                        v.push(format!(
                            "I2 {}: {} superseded {}s ago lingers past overlap",
                            c.name,
                            p.key_id,
                            age.as_secs()
                        ));
                    }
                }
                None => {
                    let age = (now - p.added).try_into().unwrap_or(Duration::ZERO);
                    if age > in_flight {
                        v.push(format!(
                            "I2 {}: {} was never published and is {}s old",
                            c.name,
                            p.key_id,
                            age.as_secs()
                        ));
                    }
                }
            }
        }
    }
    v
}

/// I3: every credential the daemon does not own is still there, unchanged, and the journal
/// shows no removal of one.
pub fn i3(env: &Env, before: &Foreign) -> Vec<String> {
    let mut v = Vec::new();
    let now = foreign_snapshot(env);
    for (k, was) in before {
        match now.get(k) {
            None => v.push(format!("I3: foreign credential {} of {} is gone", k.1, k.0)),
            Some(is) if is != was => {
                v.push(format!("I3: foreign credential {} of {} changed", k.1, k.0))
            }
            Some(_) => {}
        }
    }
    for e in env.journal() {
        if e.operation == Operation::GraphRemovePassword
            && e.effective
            && before.keys().any(|(_, key)| Some(key) == e.key_id.as_ref())
        {
            v.push(format!(
                "I3: the journal shows foreign credential {:?} removed",
                e.key_id
            ));
        }
    }
    v
}

/// The forms a leaked value could take (I4 also searches every 16-byte piece of each).
pub fn leak_forms(value: &str) -> Vec<String> {
    vec![
        value.to_string(),
        url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
        serde_json::to_string(value)
            .unwrap()
            .trim_matches('"')
            .to_string(),
        base64::engine::general_purpose::STANDARD.encode(value),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value),
    ]
}

/// I4: no secret value the emulator minted or holds, in any of its forms, in `haystacks`.
/// One pass over each haystack: every 16-byte window is looked up in the set of 16-byte
/// windows of every form of every value (a whole value shorter than that is searched as is).
pub fn i4(env: &Env, haystacks: &[(String, Vec<u8>)]) -> Vec<String> {
    const W: usize = 16;
    let mut windows: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    let mut short: Vec<String> = Vec::new();
    for value in minted(env) {
        for form in leak_forms(&value) {
            let b = form.as_bytes();
            if b.len() < W {
                short.push(form);
            } else {
                windows.extend(b.windows(W).map(<[u8]>::to_vec));
            }
        }
    }
    let mut v = Vec::new();
    for (name, hay) in haystacks {
        let leaked = hay.windows(W).any(|w| windows.contains(w))
            || short
                .iter()
                .any(|s| String::from_utf8_lossy(hay).contains(s.as_str()));
        if leaked {
            v.push(format!("I4: a secret value leaked into {name}"));
        }
    }
    v
}

/// I5: every version the daemon published was preceded, in the journal, by a successful
/// token request with the credential it names.
pub fn i5(env: &Env) -> Vec<String> {
    let journal = env.journal();
    let mut v = Vec::new();
    for (i, e) in journal.iter().enumerate() {
        if e.operation != Operation::KeyvaultSetSecret || !e.effective {
            continue;
        }
        let Some(key) = &e.key_id else { continue };
        let verified = journal[..i].iter().any(|t| {
            t.operation == Operation::Token && t.status == 200 && t.key_id.as_ref() == Some(key)
        });
        if !verified {
            v.push(format!(
                "I5: credential {key} was published without a successful sign-in first"
            ));
        }
    }
    v
}

/// The daemon's outputs for I4: log files and the state directory.
pub fn outputs(env: &Env) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![env.dir.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() && name != "emulator" {
                dirs.push(p);
            } else if p.is_file()
                && !matches!(
                    name.as_str(),
                    "daemon-secret" | "admin-token" | "config.toml" | "federated-token"
                )
            {
                out.push((
                    p.display().to_string(),
                    std::fs::read(&p).unwrap_or_default(),
                ));
            }
        }
    }
    out
}

pub async fn all(
    env: &Env,
    foreign: &Foreign,
    overlap: Duration,
    slack: Duration,
    in_flight: Duration,
) -> Vec<String> {
    let mut v = i1(env).await;
    v.extend(i2(env, overlap, slack, in_flight));
    v.extend(i3(env, foreign));
    v.extend(i4(env, &outputs(env)));
    v.extend(i5(env));
    v
}

#[cfg(test)]
mod checks_fail_on_seeded_violations {
    use super::*;

    async fn rotated() -> (Env, Foreign) {
        let env = Env::new(Setup::default()).await;
        let foreign = foreign_snapshot(&env);
        assert!(env.rotate("app-one", &[]).await.status.success());
        assert!(
            all(
                &env,
                &foreign,
                Duration::from_secs(1200),
                Duration::ZERO,
                Duration::ZERO
            )
            .await
            .is_empty()
        );
        (env, foreign)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn i1_catches_a_published_version_whose_credential_was_removed() {
        let (env, _) = rotated().await;
        let key = env.versions("app-one")[0].tags["key-id"].clone();
        let app_id = env.client("app-one").app_id.clone();
        env.em
            .world()
            .state_mut()
            .applications
            .iter_mut()
            .find(|a| a.app_id == app_id)
            .unwrap()
            .passwords
            .retain(|p| p.key_id != key);
        assert!(
            i1(&env)
                .await
                .iter()
                .any(|m| m.contains("names no live credential"))
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn i2_catches_an_own_credential_that_was_never_published() {
        let (env, _) = rotated().await;
        let app_id = env.client("app-one").app_id.clone();
        {
            let mut state = env.em.world().state_mut();
            let app = state
                .applications
                .iter_mut()
                .find(|a| a.app_id == app_id)
                .unwrap();
            let mut p = app.passwords.last().unwrap().clone();
            p.key_id = uuid::Uuid::new_v4().to_string();
            p.display_name = Some(format!("{MARKER}app-one:lost"));
            p.added -= time::Duration::minutes(10);
            app.passwords.push(p);
        }
        assert!(
            i2(
                &env,
                Duration::from_secs(1200),
                Duration::ZERO,
                Duration::from_secs(60)
            )
            .iter()
            .any(|m| m.contains("never published"))
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn i3_catches_a_removed_foreign_credential() {
        let (env, foreign) = rotated().await;
        let app_id = env.client("app-one").app_id.clone();
        env.em
            .world()
            .state_mut()
            .applications
            .iter_mut()
            .find(|a| a.app_id == app_id)
            .unwrap()
            .passwords
            .retain(|p| p.display_name.as_deref() != Some("made in the portal"));
        assert!(i3(&env, &foreign).iter().any(|m| m.contains("is gone")));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn i4_catches_a_value_in_any_of_its_forms_or_a_piece_of_it() {
        let (env, _) = rotated().await;
        let value = env.versions("app-one")[0].value.clone();
        for form in [
            value.clone(),
            base64::engine::general_purpose::STANDARD.encode(&value),
            url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
            format!("... {} ...", &value[5..21]),
        ] {
            let found = i4(
                &env,
                &[("log".to_string(), format!("line: {form}").into_bytes())],
            );
            assert!(!found.is_empty(), "missed {form}");
        }
        assert!(i4(&env, &[("log".to_string(), b"nothing secret".to_vec())]).is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn i5_catches_a_version_published_without_a_sign_in() {
        let env = Env::new(Setup::default()).await;
        // Publish by hand, as a buggy daemon would: a new credential straight into the vault.
        let http = env.https();
        let token = env
            .access_token(
                &env.daemon_app_id,
                DAEMON_SECRET,
                "https://vault.azure.net/.default",
            )
            .await;
        let key = env.app("app-one").passwords[0].key_id.clone();
        let body = serde_json::json!({"value": "x", "tags": {"managed-by": "secret-rotator", "key-id": key}});
        let r = http
            .put(format!(
                "{}/secrets/app-one-secret?api-version=2025-07-01",
                env.vault_url
            ))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            i5(&env)
                .iter()
                .any(|m| m.contains("without a successful sign-in"))
        );
    }
}

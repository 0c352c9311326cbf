//! `[discovery]`: applications the daemon owns that carry the tag (`secret-rotator`, or
//! `secret-rotator:vault=NAME;secret=NAME` to choose the location) become clients without a
//! config edit. A pass lists the tagged applications, keeps those the daemon owns, works out
//! each one's client (name, vault, secret) and refuses, on both sides, any that would collide
//! with a configured client or with each other: nothing is guessed. Its result is `[[clients]]`
//! TOML that the daemon adds to its config (`Config::load_with`), so a discovered client is
//! validated and scheduled exactly as a configured one.
//!
//! A client whose tag is removed leaves management at the next pass: it is no longer
//! reconciled, and its credentials and vault secret stay as they are (docs/decisions.md,
//! "Discovery").

use std::collections::BTreeMap;

use url::Url;

use crate::azure::{self, directory::TaggedApp};
use crate::config::{AppRef, Config, Discovery, Origin, known_vault_host};
use crate::rotation::Context;

/// A discovered application that is not enrolled, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub app_id: String,
    pub app: String,
    pub reason: String,
}

/// What a pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// `[[clients]]` TOML of the enrolled applications, in a stable order.
    pub toml: String,
    /// Client name → app id.
    pub clients: BTreeMap<String, String>,
    pub refused: Vec<Refusal>,
}

#[derive(Debug, Clone)]
struct Candidate {
    name: String,
    app: TaggedApp,
    vault: Url,
    secret: String,
}

/// A client name from an application's display name.
fn client_name(app: &TaggedApp) -> String {
    let name: String = app
        .display_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.trim_matches('-').is_empty() {
        app.app_id.clone()
    } else {
        name
    }
}

fn secret_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Where an application's client publishes: the default location, or what its
/// `<tag>:vault=NAME;secret=NAME` says.
fn location(
    d: &Discovery,
    config: &Config,
    app: &TaggedApp,
    name: &str,
) -> Result<(Url, String), String> {
    let prefix = format!("{}:", d.tag);
    let specific: Vec<&String> = app
        .tags
        .iter()
        .filter(|t| t.len() > prefix.len() && t[..prefix.len()].eq_ignore_ascii_case(&prefix))
        .collect();
    let mut vault = d.key_vault_url.clone();
    let mut secret = d.secret_name.replace("{app}", &secret_part(name));
    match specific.as_slice() {
        [] => {}
        [one] => {
            for part in one[prefix.len()..].split(';').filter(|p| !p.is_empty()) {
                match part.split_once('=') {
                    Some(("vault", v)) if v.starts_with("https://") => {
                        vault = Url::parse(v).map_err(|e| format!("tag '{one}': vault: {e}"))?;
                    }
                    Some(("vault", v))
                        if !v.is_empty()
                            && v.len() <= 24
                            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
                    {
                        vault = Url::parse(&format!(
                            "https://{v}{}",
                            config.azure.cloud.vault_suffix()
                        ))
                        .map_err(|e| format!("tag '{one}': vault: {e}"))?;
                    }
                    Some(("secret", s))
                        if !s.is_empty()
                            && s.len() <= 127
                            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
                    {
                        secret = s.to_string();
                    }
                    _ => {
                        return Err(format!(
                            "tag '{one}' is not {}:vault=NAME;secret=NAME",
                            d.tag
                        ));
                    }
                }
            }
        }
        many => {
            return Err(format!(
                "{} tags choose a location ({}); keep one",
                many.len(),
                many.iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    // A tag is written by whoever owns the application: it must not send the daemon's Key
    // Vault token to a host of their choosing.
    if !known_vault_host(&vault, config.azure.cloud) {
        return Err(format!(
            "vault {} is not a {} vault host",
            vault.as_str().trim_end_matches('/'),
            config.azure.cloud.vault_suffix()
        ));
    }
    Ok((vault, secret))
}

/// One pass: the applications with the tag that the daemon owns, as clients.
pub async fn discover(ctx: &Context) -> Result<Found, azure::Error> {
    let config = &ctx.config;
    let Some(d) = &config.discovery else {
        return Ok(Found::default());
    };
    let own = config
        .azure
        .credential
        .client_id()
        .map(str::to_ascii_lowercase);
    let prefix = format!("{}:", d.tag);
    let tagged: Vec<TaggedApp> = ctx
        .azure
        .graph
        .apps_by_tag(&d.tag, false)
        .await?
        .into_iter()
        .filter(|a| {
            a.tags.iter().any(|t| {
                t.eq_ignore_ascii_case(&d.tag)
                    || (t.len() > prefix.len() && t[..prefix.len()].eq_ignore_ascii_case(&prefix))
            })
        })
        .collect();
    let mut refused = Vec::new();
    let mut candidates = Vec::new();
    for app in tagged {
        if let Some(own) = &own {
            let owners = ctx.azure.graph.owner_app_ids(&app.object_id).await?;
            if !owners.iter().any(|o| o == own) {
                tracing::debug!(app_id = %app.app_id, "tagged but not owned by the daemon; not a client");
                continue;
            }
        }
        let name = client_name(&app);
        match location(d, config, &app, &name) {
            Ok((vault, secret)) => candidates.push(Candidate {
                name,
                app,
                vault,
                secret,
            }),
            Err(reason) => refused.push(Refusal {
                app_id: app.app_id.clone(),
                app: app.display_name.clone(),
                reason,
            }),
        }
    }

    // Collisions with the configured clients: refused, and said on both sides.
    let configured: Vec<_> = config
        .clients
        .iter()
        .filter(|c| !matches!(c.origin, Origin::Discovered(_)))
        .collect();
    let target = |vault: &Url, secret: &str| {
        (
            vault.as_str().trim_end_matches('/').to_ascii_lowercase(),
            secret.to_ascii_lowercase(),
        )
    };
    let mut kept = Vec::new();
    for c in candidates {
        let clash = configured.iter().find_map(|k| {
            let same_app = match &k.app {
                AppRef::AppId(a) => a.to_string().eq_ignore_ascii_case(&c.app.app_id),
                AppRef::ObjectId(o) => o.to_string().eq_ignore_ascii_case(&c.app.object_id),
            };
            if same_app {
                Some(format!("it is configured as client '{}'", k.name))
            } else if target(&k.key_vault_url, &k.secret_name) == target(&c.vault, &c.secret) {
                Some(format!(
                    "client '{}' already writes {} in {}",
                    k.name,
                    c.secret,
                    c.vault.as_str().trim_end_matches('/')
                ))
            } else if k.name.eq_ignore_ascii_case(&c.name) {
                Some(format!("a configured client is named '{}'", k.name))
            } else {
                None
            }
        });
        match clash {
            Some(reason) => refused.push(Refusal {
                app_id: c.app.app_id.clone(),
                app: c.app.display_name.clone(),
                reason,
            }),
            None => kept.push(c),
        }
    }
    // Two discovered applications on one vault secret (or one name): neither is enrolled.
    let mut by_target: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, c) in kept.iter().enumerate() {
        by_target
            .entry(target(&c.vault, &c.secret))
            .or_default()
            .push(i);
        by_name
            .entry(c.name.to_ascii_lowercase())
            .or_default()
            .push(i);
    }
    let mut clashing: BTreeMap<usize, String> = BTreeMap::new();
    for ((vault, secret), group) in by_target.iter().filter(|(_, g)| g.len() > 1) {
        let ids: Vec<&str> = group.iter().map(|&i| kept[i].app.app_id.as_str()).collect();
        for &i in group {
            clashing.insert(
                i,
                format!(
                    "applications {} would all write {secret} in {vault}",
                    ids.join(", ")
                ),
            );
        }
    }
    for (name, group) in by_name.iter().filter(|(_, g)| g.len() > 1) {
        let ids: Vec<&str> = group.iter().map(|&i| kept[i].app.app_id.as_str()).collect();
        for &i in group {
            clashing.entry(i).or_insert_with(|| {
                format!("applications {} are all named '{name}'", ids.join(", "))
            });
        }
    }
    let mut found = Found::default();
    for (i, c) in kept.into_iter().enumerate() {
        if let Some(reason) = clashing.remove(&i) {
            refused.push(Refusal {
                app_id: c.app.app_id.clone(),
                app: c.app.display_name.clone(),
                reason,
            });
            continue;
        }
        found.toml.push_str(&format!(
            "[[clients]]\n{}\n",
            crate::register::client_toml(&c.name, &c.app.app_id, c.vault.as_str(), &c.secret, None)
        ));
        found.clients.insert(c.name, c.app.app_id);
    }
    refused.sort_by(|a, b| a.app_id.cmp(&b.app_id));
    found.refused = refused;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> TaggedApp {
        TaggedApp {
            object_id: "o".into(),
            app_id: "a1".into(),
            display_name: name.into(),
            tags: vec![],
        }
    }

    #[test]
    fn client_names_come_from_display_names() {
        assert_eq!(
            client_name(&app("DICOM reader (prod)")),
            "DICOM-reader--prod-"
        );
        assert_eq!(client_name(&app("   ")), "a1");
        assert_eq!(secret_part("a.b_c"), "a-b-c");
    }
}

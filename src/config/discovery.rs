//! `[discovery]`: applications the daemon owns that carry a tag become clients without a config
//! edit (`src/discovery.rs` finds them).

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::azure::Cloud;
use super::values::{Ctx, duration, https_url};
use super::{ConfigError, S};

#[derive(Debug, Clone)]
pub struct Discovery {
    /// `secret-rotator`: an app tagged with it, or with `<tag>:vault=NAME;secret=NAME`, is a
    /// client.
    pub tag: String,
    pub interval: Duration,
    pub key_vault_url: Url,
    /// The vault secret's name; `{app}` is the application's name made a valid secret name.
    pub secret_name: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscovery {
    enabled: Option<S<bool>>,
    tag: Option<S<String>>,
    interval: Option<S<String>>,
    key_vault_url: Option<S<String>>,
    secret_name: Option<S<String>>,
}

pub const DEFAULT_TAG: &str = "secret-rotator";
pub const DEFAULT_SECRET_NAME: &str = "{app}-client-secret";

/// Validates `[discovery]`; `None` when it is off.
pub(super) fn parse(
    ctx: &Ctx<'_>,
    raw: &RawDiscovery,
    cloud: Cloud,
) -> Result<Option<Discovery>, ConfigError> {
    if !raw.enabled.as_ref().is_some_and(|e| *e.get_ref()) {
        return Ok(None);
    }
    let tag = match &raw.tag {
        Some(v) => {
            let t = v.get_ref().trim();
            if t.is_empty()
                || t.len() > 64
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(ctx.err(
                    v,
                    "discovery.tag",
                    format!("'{t}' must be 1-64 characters of A-Z, a-z, 0-9, -, _ and ."),
                ));
            }
            t.to_string()
        }
        None => DEFAULT_TAG.to_string(),
    };
    let interval = match &raw.interval {
        Some(v) => {
            let d = duration(ctx, v, "discovery.interval")?;
            if d < Duration::from_secs(1) {
                return Err(ctx.err(v, "discovery.interval", "must be at least 1s"));
            }
            d
        }
        None => Duration::from_secs(300),
    };
    let Some(vault) = &raw.key_vault_url else {
        return Err(ctx.err_nowhere(
            "discovery.key_vault_url",
            "is required when discovery is enabled: the vault discovered clients publish to, unless their tag names one",
        ));
    };
    let key_vault_url = https_url(ctx, vault, "discovery.key_vault_url")?;
    let _ = cloud;
    let secret_name = match &raw.secret_name {
        Some(v) => {
            let s = v.get_ref().trim();
            let probe = s.replace("{app}", "a");
            if probe.is_empty()
                || probe.len() > 127
                || !probe
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(ctx.err(
                    v,
                    "discovery.secret_name",
                    format!(
                        "'{s}' must be a vault secret name ([0-9a-zA-Z-]) in which {{app}} stands for the application"
                    ),
                ));
            }
            s.to_string()
        }
        None => DEFAULT_SECRET_NAME.to_string(),
    };
    Ok(Some(Discovery {
        tag,
        interval,
        key_vault_url,
        secret_name,
    }))
}

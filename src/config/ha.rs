//! `[ha]`: high availability, one leader among replicas by a Blob Storage lease
//! (`docs/ha.md`).

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::values::{Ctx, duration, read_secret_file};
use super::{ConfigError, S};
use crate::azure::fence::{MARGIN, write_window};
use crate::ha::Settings;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHa {
    kind: Option<S<String>>,
    account_url: Option<S<String>>,
    container: Option<S<String>>,
    blob: Option<S<String>>,
    lease_duration: Option<S<String>>,
    renew_every: Option<S<String>>,
    replica: Option<S<String>>,
    connection_string_file: Option<S<String>>,
}

/// Validates `[ha]`: `None` for `kind = "none"` (the default). The connection string file is
/// read here.
pub(super) fn parse(
    ctx: &Ctx<'_>,
    raw: &RawHa,
    instance: &str,
    request_timeout: Duration,
    warnings: &mut Vec<String>,
) -> Result<Option<Settings>, ConfigError> {
    match raw.kind.as_ref().map(|k| (k, k.get_ref().as_str())) {
        None | Some((_, "none")) => {
            let given = [
                ("account_url", &raw.account_url),
                ("container", &raw.container),
                ("blob", &raw.blob),
                ("lease_duration", &raw.lease_duration),
                ("renew_every", &raw.renew_every),
                ("replica", &raw.replica),
                ("connection_string_file", &raw.connection_string_file),
            ];
            if let Some((key, Some(v))) = given.into_iter().find(|(_, v)| v.is_some()) {
                return Err(ctx.err(
                    v,
                    &format!("ha.{key}"),
                    "does not apply to kind = \"none\" (set kind = \"blob_lease\")",
                ));
            }
            return Ok(None);
        }
        Some((_, "blob_lease")) => {}
        Some((k, other)) => {
            return Err(ctx.err(
                k,
                "ha.kind",
                format!("'{other}' is not one of none, blob_lease"),
            ));
        }
    }
    let Some(url) = &raw.account_url else {
        return Err(ctx.err_nowhere(
            "ha.account_url",
            "is required with kind = \"blob_lease\" (https://ACCOUNT.blob.core.windows.net)",
        ));
    };
    let account_url = account_url(ctx, url, raw.connection_string_file.is_some())?;
    let container = match &raw.container {
        Some(v) if valid_container(v.get_ref()) => v.get_ref().clone(),
        Some(v) => {
            return Err(ctx.err(
                v,
                "ha.container",
                format!(
                    "'{}' is not a container name: 3-63 characters of a-z, 0-9 and single hyphens, starting and ending with a letter or digit",
                    v.get_ref()
                ),
            ));
        }
        None => "secret-rotator".to_string(),
    };
    let blob = match &raw.blob {
        Some(v) if valid_name(v.get_ref(), 256) => v.get_ref().clone(),
        Some(v) => {
            return Err(ctx.err(
                v,
                "ha.blob",
                format!(
                    "'{}' must be 1-256 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
                    v.get_ref()
                ),
            ));
        }
        None => format!("{instance}.leader"),
    };
    let lease_duration = match &raw.lease_duration {
        Some(v) => {
            let d = duration(ctx, v, "ha.lease_duration")?;
            if !(15..=60).contains(&d.as_secs()) || d.subsec_nanos() != 0 {
                return Err(ctx.err(
                    v,
                    "ha.lease_duration",
                    format!(
                        "'{}' must be whole seconds from 15s to 60s (Azure's lease bounds)",
                        v.get_ref()
                    ),
                ));
            }
            if write_window(d, request_timeout).is_zero() {
                return Err(ctx.err(
                    v,
                    "ha.lease_duration",
                    format!(
                        "'{}' must be longer than azure.request_timeout ({}) + {}: a write started under the lease must end before the lease could expire",
                        v.get_ref(),
                        crate::clock::format_duration(request_timeout),
                        crate::clock::format_duration(MARGIN),
                    ),
                ));
            }
            d
        }
        None => Duration::from_secs(60),
    };
    let window = write_window(lease_duration, request_timeout);
    let (renew_every, renew_span) = match &raw.renew_every {
        Some(v) => (duration(ctx, v, "ha.renew_every")?, Some(v)),
        None => (Duration::from_secs(20), None),
    };
    let renew_error = |message: String| match renew_span {
        Some(v) => ctx.err(v, "ha.renew_every", message),
        None => ctx.err_nowhere("ha.renew_every", message),
    };
    if renew_every * 2 >= lease_duration {
        return Err(renew_error(format!(
            "{} must be shorter than half of ha.lease_duration ({})",
            crate::clock::format_duration(renew_every),
            crate::clock::format_duration(lease_duration)
        )));
    }
    if renew_every >= window {
        return Err(renew_error(format!(
            "{} must be shorter than ha.lease_duration - azure.request_timeout - {} ({}), or the leader stops writing between renewals",
            crate::clock::format_duration(renew_every),
            crate::clock::format_duration(MARGIN),
            crate::clock::format_duration(window)
        )));
    }
    let replica = match &raw.replica {
        Some(v) if valid_name(v.get_ref(), 63) => v.get_ref().clone(),
        Some(v) => {
            return Err(ctx.err(
                v,
                "ha.replica",
                format!(
                    "'{}' must be 1-63 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
                    v.get_ref()
                ),
            ));
        }
        None => {
            let host = rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned();
            if !valid_name(&host, 63) {
                return Err(ctx.err_nowhere(
                    "ha.replica",
                    "the host name cannot name this replica: set ha.replica",
                ));
            }
            host
        }
    };
    let shared_key = match &raw.connection_string_file {
        Some(v) => {
            use secrecy::ExposeSecret;
            let text = read_secret_file(ctx, v, "ha.connection_string_file", warnings)?;
            let parsed = crate::azure::blob::parse_connection_string(text.expose_secret())
                .map_err(|e| ctx.err(v, "ha.connection_string_file", e))?;
            Some(parsed)
        }
        None => None,
    };
    Ok(Some(Settings {
        account_url,
        container,
        blob,
        lease_duration,
        renew_every,
        replica,
        shared_key,
    }))
}

/// https, or plain http to a loopback host (Azurite) with Shared Key: a token never travels in
/// the clear.
fn account_url(ctx: &Ctx<'_>, v: &S<String>, shared_key: bool) -> Result<Url, ConfigError> {
    let key = "ha.account_url";
    let url = Url::parse(v.get_ref())
        .map_err(|e| ctx.err(v, key, format!("'{}' is not a URL: {e}", v.get_ref())))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(ctx.err(v, key, format!("'{}' has no host", v.get_ref()))),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback && shared_key => {}
        "http" if loopback => {
            return Err(ctx.err(
                v,
                key,
                format!(
                    "'{}': plain http only with ha.connection_string_file (a token is never sent unencrypted)",
                    v.get_ref()
                ),
            ));
        }
        _ => {
            return Err(ctx.err(
                v,
                key,
                format!("'{}' must use https (http only on loopback)", v.get_ref()),
            ));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ctx.err(
            v,
            key,
            format!("'{}' must not have a query or fragment", v.get_ref()),
        ));
    }
    Ok(url)
}

fn valid_container(s: &str) -> bool {
    (3..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn valid_name(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

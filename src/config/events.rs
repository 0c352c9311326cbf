//! `[[events]]`: the sinks that consumers get events from (`src/events`). A webhook is POSTed
//! CloudEvents signed with the key in `signing_key_file`; an `exec` sink runs `argv` without a
//! shell, the event on its standard input.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::values::{Ctx, duration, read_secret_file};
use super::{ConfigError, S};
use crate::events::TYPES;
use crate::events::sign::SigningKey;

#[derive(Debug, Clone)]
pub enum SinkKind {
    Webhook { url: Url, key: SigningKey },
    Exec { argv: Vec<String> },
}

impl SinkKind {
    pub fn name(&self) -> &'static str {
        match self {
            SinkKind::Webhook { .. } => "webhook",
            SinkKind::Exec { .. } => "exec",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Sink {
    /// Names the sink in metrics, logs and the outbox (`webhook-1`, `exec-2` unless given).
    pub name: String,
    pub kind: SinkKind,
    /// Event types it gets; empty: all.
    pub types: Vec<String>,
    /// Clients whose events it gets; empty: all.
    pub clients: Vec<String>,
    /// One attempt's limit.
    pub timeout: Duration,
}

impl Sink {
    pub fn wants(&self, kind: &str, client: &str) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == kind))
            && (self.clients.is_empty() || self.clients.iter().any(|c| c == client))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSink {
    name: Option<S<String>>,
    kind: S<String>,
    url: Option<S<String>>,
    signing_key_file: Option<S<String>>,
    argv: Option<S<Vec<String>>>,
    timeout: Option<S<String>>,
    types: Option<Vec<S<String>>>,
    clients: Option<Vec<S<String>>>,
}

/// Whether a webhook may use plain http: only to this machine (a local relay, the tests).
fn loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Validates every sink. `clients` are the configured clients, which a filter must name.
pub(super) fn parse(
    ctx: &Ctx<'_>,
    raw: &[S<RawSink>],
    clients: &[super::Client],
    warnings: &mut Vec<String>,
) -> Result<Vec<Sink>, ConfigError> {
    let mut sinks: Vec<Sink> = Vec::new();
    for (i, rs) in raw.iter().enumerate() {
        let r = rs.get_ref();
        let at = |k: &str| format!("events[{i}].{k}");
        let kind_name = r.kind.get_ref().as_str();
        let not_for = |v: Option<std::ops::Range<usize>>, key: &str| -> Result<(), ConfigError> {
            match v {
                Some(span) => Err(ctx.err_at::<()>(
                    span,
                    &at(key),
                    format!("does not apply to kind = \"{kind_name}\""),
                )),
                None => Ok(()),
            }
        };
        let (kind, default_timeout) = match kind_name {
            "webhook" => {
                not_for(r.argv.as_ref().map(|v| v.span()), "argv")?;
                let Some(u) = &r.url else {
                    return Err(ctx.err(&r.kind, &at("url"), "a webhook needs url"));
                };
                let url = Url::parse(u.get_ref()).map_err(|e| {
                    ctx.err(
                        u,
                        &at("url"),
                        format!("'{}' is not a URL: {e}", u.get_ref()),
                    )
                })?;
                let secure = url.scheme() == "https" || (url.scheme() == "http" && loopback(&url));
                if !secure || url.host_str().is_none() {
                    return Err(ctx.err(
                        u,
                        &at("url"),
                        format!(
                            "'{}' must use https (plain http only to a loopback address)",
                            u.get_ref()
                        ),
                    ));
                }
                if !url.username().is_empty() || url.password().is_some() {
                    return Err(ctx.err(
                        u,
                        &at("url"),
                        "must not carry credentials; the signature authenticates the sender",
                    ));
                }
                let Some(f) = &r.signing_key_file else {
                    return Err(ctx.err(
                        &r.kind,
                        &at("signing_key_file"),
                        "a webhook needs signing_key_file (a Standard Webhooks key: whsec_ and base64)",
                    ));
                };
                let text = read_secret_file(ctx, f, &at("signing_key_file"), warnings)?;
                let key = SigningKey::parse(secrecy::ExposeSecret::expose_secret(&text)).map_err(
                    |e| {
                        ctx.err(
                            f,
                            &at("signing_key_file"),
                            format!("{} {e}", ctx.path(f.get_ref()).display()),
                        )
                    },
                )?;
                (SinkKind::Webhook { url, key }, Duration::from_secs(10))
            }
            "exec" => {
                not_for(r.url.as_ref().map(|v| v.span()), "url")?;
                not_for(
                    r.signing_key_file.as_ref().map(|v| v.span()),
                    "signing_key_file",
                )?;
                let Some(argv) = &r.argv else {
                    return Err(ctx.err(&r.kind, &at("argv"), "an exec sink needs argv"));
                };
                if argv.get_ref().is_empty() || argv.get_ref()[0].trim().is_empty() {
                    return Err(ctx.err(argv, &at("argv"), "must name a program"));
                }
                (
                    SinkKind::Exec {
                        argv: argv.get_ref().clone(),
                    },
                    Duration::from_secs(30),
                )
            }
            other => {
                return Err(ctx.err(
                    &r.kind,
                    &at("kind"),
                    format!("'{other}' is not one of webhook, exec"),
                ));
            }
        };
        let timeout = match &r.timeout {
            Some(v) => duration(ctx, v, &at("timeout"))?,
            None => default_timeout,
        };
        let mut types = Vec::new();
        for t in r.types.iter().flatten() {
            if !TYPES.contains(&t.get_ref().as_str()) {
                return Err(ctx.err(
                    t,
                    &at("types"),
                    format!("'{}' is not one of {}", t.get_ref(), TYPES.join(", ")),
                ));
            }
            types.push(t.get_ref().clone());
        }
        let mut only = Vec::new();
        for c in r.clients.iter().flatten() {
            if !clients.iter().any(|k| *k.name == **c.get_ref()) {
                return Err(ctx.err(
                    c,
                    &at("clients"),
                    format!("'{}' is not a configured client", c.get_ref()),
                ));
            }
            only.push(c.get_ref().clone());
        }
        let name = match &r.name {
            Some(n) if valid_name(n.get_ref()) => n.get_ref().clone(),
            Some(n) => {
                return Err(ctx.err(
                    n,
                    &at("name"),
                    format!(
                        "'{}' must be 1-64 characters of A-Z a-z 0-9 _ . -",
                        n.get_ref()
                    ),
                ));
            }
            None => format!("{}-{}", kind.name(), i + 1),
        };
        if sinks.iter().any(|s| s.name == name) {
            let span = r.name.as_ref().map(|n| n.span()).unwrap_or(rs.span());
            return Err(ctx.err_at::<()>(
                span,
                &at("name"),
                format!("another sink is named '{name}'"),
            ));
        }
        sinks.push(Sink {
            name,
            kind,
            types,
            clients: only,
            timeout,
        });
    }
    Ok(sinks)
}

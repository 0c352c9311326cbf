//! `[[clients]]`: the applications the daemon rotates, where each publishes, and its policy.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono_tz::Tz;
use serde::Deserialize;
use url::Url;

use super::azure::{Cloud, Credential};
use super::policy::{Located, Policy, RawPolicy, Schedule, policy};
use super::values::{Ctx, https_url, is_guid};
use super::{ConfigError, S};

/// A GUID as the config accepts it (hyphenated, any case).
fn guid(s: &str) -> Option<uuid::Uuid> {
    is_guid(s).then(|| uuid::Uuid::try_parse(s).ok()).flatten()
}

/// How a client names its application. The config accepts only hyphenated GUIDs and Graph
/// writes them lowercase, which is how a `Uuid` displays: 16 bytes instead of a string of 36
/// (one a client, for as long as the config lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppRef {
    AppId(uuid::Uuid),
    ObjectId(uuid::Uuid),
}

impl fmt::Display for AppRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppRef::AppId(id) => write!(f, "app_id {id}"),
            AppRef::ObjectId(id) => write!(f, "app_object_id {id}"),
        }
    }
}

/// Where a client came from: shown by `status`, `plan` and `/v1/clients`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origin {
    /// A `[[clients]]` entry of the config file.
    #[default]
    Config,
    /// A file of `[daemon] clients_dir`.
    File(Arc<std::path::Path>),
    /// An application found by `[discovery]` with this tag (one string for all of them).
    Discovered(Arc<str>),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Config => write!(f, "config"),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Discovered(tag) => write!(f, "discovered (tag {tag})"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    /// The one copy of the name: the scheduler and the metrics key their per-client records
    /// by this `Arc` rather than by copies of their own.
    pub name: Arc<str>,
    pub origin: Origin,
    pub app: AppRef,
    /// Shared by the clients of one vault (a parsed URL is about 120 bytes).
    pub key_vault_url: Arc<Url>,
    pub secret_name: Box<str>,
    /// Shared by the clients whose own policy keys are the same (most set none): a policy is
    /// about 300 bytes, a pointer 8.
    pub policy: Arc<Policy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    name: S<String>,
    app_id: Option<S<String>>,
    app_object_id: Option<S<String>>,
    key_vault_url: S<String>,
    secret_name: S<String>,
    // The policy keys, which may override [defaults]. Listed out because serde cannot combine
    // `flatten` with `deny_unknown_fields`.
    schedule: Option<S<String>>,
    timezone: Option<S<String>>,
    secret_lifetime: Option<S<String>>,
    renew_before: Option<S<String>>,
    overlap: Option<S<String>>,
    verify_scope: Option<S<String>>,
    verify_timeout: Option<S<String>>,
    verify_successes: Option<S<i64>>,
    adopt: Option<S<bool>>,
    allow_custom_vault_host: Option<S<bool>>,
    windows: Option<Vec<S<String>>>,
    freeze: Option<Vec<S<String>>>,
    drift_interval: Option<S<String>>,
    repair: Option<S<String>>,
    verify_url: Option<S<String>>,
}

impl RawClient {
    /// The client's own policy keys, values only: clients with the same get the same policy.
    fn policy_key(&self) -> String {
        let text = [
            &self.schedule,
            &self.timezone,
            &self.secret_lifetime,
            &self.renew_before,
            &self.overlap,
            &self.verify_scope,
            &self.verify_timeout,
            &self.drift_interval,
            &self.repair,
            &self.verify_url,
        ]
        .map(|v| v.as_ref().map(|v| v.get_ref().as_str()));
        let lists = [&self.windows, &self.freeze].map(|v| {
            v.as_ref()
                .map(|l| l.iter().map(|s| s.get_ref().as_str()).collect::<Vec<_>>())
        });
        format!(
            "{text:?}{lists:?}{:?}{:?}",
            self.verify_successes.as_ref().map(|v| *v.get_ref()),
            self.adopt.as_ref().map(|v| *v.get_ref())
        )
    }

    fn policy(&self) -> RawPolicy {
        RawPolicy {
            schedule: self.schedule.clone(),
            timezone: self.timezone.clone(),
            secret_lifetime: self.secret_lifetime.clone(),
            renew_before: self.renew_before.clone(),
            overlap: self.overlap.clone(),
            verify_scope: self.verify_scope.clone(),
            verify_timeout: self.verify_timeout.clone(),
            verify_successes: self.verify_successes.clone(),
            adopt: self.adopt.clone(),
            allow_custom_vault_host: self.allow_custom_vault_host.clone(),
            windows: self.windows.clone(),
            freeze: self.freeze.clone(),
            drift_interval: self.drift_interval.clone(),
            repair: self.repair.clone(),
            verify_url: self.verify_url.clone(),
        }
    }
}

/// Reads every `*.toml` in `[daemon] clients_dir` (in name order) as one client, with the same
/// validation as `[[clients]]`; an error names that file, its line and the key. Other names
/// (editor backups, a file being written as `.tmp`) are skipped.
pub(super) fn add_dir(
    config: &Ctx<'_>,
    dir: &std::path::Path,
    set: &mut ClientSet<'_>,
) -> Result<(), ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        config.err_nowhere(
            "daemon.clients_dir",
            format!("cannot read {}: {e}", dir.display()),
        )
    })?;
    let mut files: Vec<std::path::PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    for file in files {
        let source = std::fs::read_to_string(&file).map_err(|e| ConfigError {
            file: file.clone(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        let ctx = Ctx {
            file: &file,
            source: &source,
            base: 0,
        };
        let rc: S<RawClient> = toml::from_str(&source).map_err(|e| ConfigError {
            file: file.clone(),
            line: e.span().map(|s| ctx.line_of(s.start)),
            key: String::new(),
            message: e.message().trim().to_string(),
        })?;
        set.origin = Origin::File(file.as_path().into());
        set.add(&ctx, &rc)?;
    }
    Ok(())
}

/// Validates the `[[clients]]` entries of a parsed document one at a time, each dropped once it
/// is a [`Client`]: a list of raw entries beside the document and the clients was most of the
/// start-up's peak (about 1 KiB an entry).
pub(super) fn add_all(
    ctx: &Ctx<'_>,
    entries: toml::Spanned<toml::de::DeValue<'_>>,
    set: &mut ClientSet<'_>,
) -> Result<(), ConfigError> {
    let span = entries.span();
    match entries.into_inner() {
        toml::de::DeValue::Array(items) => {
            set.clients.reserve_exact(items.len());
            for item in items {
                let rc = S::<RawClient>::deserialize(toml::de::ValueDeserializer::from(item))
                    .map_err(|e| ctx.toml_error(e))?;
                set.add(ctx, &rc)?;
            }
        }
        // Not a list: serde's own error says what it is instead.
        other => {
            let list = Vec::<S<RawClient>>::deserialize(toml::de::ValueDeserializer::from(
                toml::Spanned::new(span, other),
            ))
            .map_err(|e| ctx.toml_error(e))?;
            for rc in &list {
                set.add(ctx, rc)?;
            }
        }
    }
    Ok(())
}

/// Adds the `[[clients]]` of `text`, a document or a part of one that `ctx` places.
pub(super) fn add_document(
    ctx: &Ctx<'_>,
    text: &str,
    set: &mut ClientSet<'_>,
) -> Result<(), ConfigError> {
    let mut doc = toml::de::DeTable::parse(text).map_err(|e| ctx.toml_error(e))?;
    match doc.get_mut().remove("clients") {
        Some(entries) => add_all(ctx, entries, set),
        None => Ok(()),
    }
}

/// Adds the `[[clients]]` sections of `source` one at a time (`super::sections`).
pub(super) fn add_sections(
    file: &std::path::Path,
    source: &str,
    sections: &[std::ops::Range<usize>],
    set: &mut ClientSet<'_>,
) -> Result<(), ConfigError> {
    set.clients.reserve_exact(sections.len());
    for s in sections {
        let ctx = Ctx {
            file,
            source,
            base: s.start,
        };
        add_document(&ctx, &source[s.clone()], set)?;
    }
    Ok(())
}

/// Adds clients found by `[discovery]`, given as `[[clients]]` TOML (their errors name
/// `<discovery>`).
pub(super) fn add_discovered(
    text: &str,
    tag: &str,
    set: &mut ClientSet<'_>,
) -> Result<(), ConfigError> {
    let file = std::path::PathBuf::from("<discovery>");
    set.origin = Origin::Discovered(tag.into());
    match super::sections::find(text) {
        Some(found) => add_sections(&file, text, &found.clients, set),
        None => add_document(
            &Ctx {
                file: &file,
                source: text,
                base: 0,
            },
            text,
            set,
        ),
    }
}

/// Whether the daemon may send its Key Vault token to `url`'s host without being told to: the
/// cloud's vault hosts, and loopback (the emulator).
pub fn known_vault_host(url: &Url, cloud: Cloud) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.to_ascii_lowercase();
            d.ends_with(cloud.vault_suffix()) || d == "localhost"
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn valid_client_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_secret_name(s: &str) -> bool {
    (1..=127).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The clients read so far and what must stay unique across them: names, applications and the
/// vault secrets they write. Clients with one schedule share its parsed form.
pub(super) struct ClientSet<'a> {
    defaults: &'a RawPolicy,
    own_client_id: Option<String>,
    cloud: Cloud,
    clients: Vec<Client>,
    names: HashMap<String, usize>,
    apps: HashMap<uuid::Uuid, usize>,
    targets: HashMap<(String, String), usize>,
    schedules: HashMap<(String, Tz), Arc<Schedule>>,
    crons: HashMap<String, croner::Cron>,
    /// The policies made so far, by [`RawClient::policy_key`]: the same keys over the same
    /// `[defaults]` make the same policy and pass the same checks.
    policies: HashMap<String, Arc<Policy>>,
    vaults: HashMap<String, Arc<Url>>,
    /// The origin of the clients added next.
    pub(super) origin: Origin,
}

impl<'a> ClientSet<'a> {
    pub(super) fn new(defaults: &'a RawPolicy, credential: &Credential, cloud: Cloud) -> Self {
        ClientSet {
            defaults,
            own_client_id: credential.client_id().map(str::to_string),
            cloud,
            clients: Vec::new(),
            names: HashMap::new(),
            apps: HashMap::new(),
            targets: HashMap::new(),
            schedules: HashMap::new(),
            crons: HashMap::new(),
            policies: HashMap::new(),
            vaults: HashMap::new(),
            origin: Origin::Config,
        }
    }

    pub(super) fn into_clients(mut self) -> Vec<Client> {
        // Grown by doubling, the list could keep room for nearly as many clients again (half a
        // kilobyte each) for as long as the config lives.
        self.clients.shrink_to_fit();
        self.clients
    }

    /// Validates one client against the ones before it.
    pub(super) fn add(&mut self, ctx: &Ctx<'_>, rc: &S<RawClient>) -> Result<(), ConfigError> {
        let i = self.clients.len();
        let c = rc.get_ref();
        let prefix = format!("clients[{i}]");
        let name = c.name.get_ref().as_str();
        if !valid_client_name(name) {
            return Err(ctx.err(
                &c.name,
                &format!("{prefix}.name"),
                format!("'{name}' must be 1-64 characters of A-Z, a-z, 0-9, _, . and -"),
            ));
        }
        let prefix = format!("clients[{i}] ({name})");
        if let Some(first) = self.names.insert(name.to_ascii_lowercase(), i) {
            return Err(ctx.err(
                &c.name,
                &format!("{prefix}.name"),
                format!("duplicates clients[{first}]"),
            ));
        }
        let app = match (&c.app_id, &c.app_object_id) {
            (Some(v), None) if let Some(id) = guid(v.get_ref()) => AppRef::AppId(id),
            (None, Some(v)) if let Some(id) = guid(v.get_ref()) => AppRef::ObjectId(id),
            (Some(v), None) => {
                return Err(ctx.err(
                    v,
                    &format!("{prefix}.app_id"),
                    format!("'{}' is not a GUID", v.get_ref()),
                ));
            }
            (None, Some(v)) => {
                return Err(ctx.err(
                    v,
                    &format!("{prefix}.app_object_id"),
                    format!("'{}' is not a GUID", v.get_ref()),
                ));
            }
            (Some(v), Some(_)) => {
                return Err(ctx.err(
                    v,
                    &format!("{prefix}.app_id"),
                    "set app_id or app_object_id, not both",
                ));
            }
            (None, None) => {
                return Err(ctx.err(
                    rc,
                    &format!("{prefix}.app_id"),
                    "one of app_id or app_object_id is required",
                ));
            }
        };
        let (app_key, app_span) = match (&app, &c.app_id, &c.app_object_id) {
            (AppRef::AppId(id), Some(v), _) | (AppRef::ObjectId(id), _, Some(v)) => (*id, v.span()),
            _ => (uuid::Uuid::nil(), rc.span()),
        };
        if let Some(first) = self.apps.insert(app_key, i) {
            return Err(ctx.err_at::<()>(
                app_span,
                &format!("{prefix}.app_id"),
                format!("clients[{first}] already manages this application"),
            ));
        }
        if let AppRef::AppId(id) = &app
            && self.own_client_id.as_deref() == Some(id.to_string().as_str())
        {
            return Err(ctx.err_at::<()>(app_span, &format!("{prefix}.app_id"), "is the daemon's own identity (azure.credential.client_id); it cannot rotate itself"));
        }
        let key_vault_url = https_url(ctx, &c.key_vault_url, &format!("{prefix}.key_vault_url"))?;
        if !matches!(key_vault_url.path(), "" | "/") {
            return Err(ctx.err(
                &c.key_vault_url,
                &format!("{prefix}.key_vault_url"),
                "must be the vault's base URL, without a path",
            ));
        }
        let allow_custom_host = c
            .allow_custom_vault_host
            .as_ref()
            .or(self.defaults.allow_custom_vault_host.as_ref())
            .is_some_and(|v| *v.get_ref());
        if !allow_custom_host && !known_vault_host(&key_vault_url, self.cloud) {
            return Err(ctx.err(
            &c.key_vault_url,
            &format!("{prefix}.key_vault_url"),
            format!(
                "{} is not a Key Vault host of the {} cloud (*{}), and the daemon's Key Vault token is good for every vault it may use: check the URL for a typo, or set allow_custom_vault_host = true on this client if the host is yours",
                key_vault_url.host_str().unwrap_or_default(),
                self.cloud.name(),
                self.cloud.vault_suffix()
            ),
        ));
        }
        let secret_name = c.secret_name.get_ref().as_str();
        if !valid_secret_name(secret_name) {
            return Err(ctx.err(
                &c.secret_name,
                &format!("{prefix}.secret_name"),
                format!("'{secret_name}' must be 1-127 characters of 0-9, a-z, A-Z and -"),
            ));
        }
        let vault_key = key_vault_url
            .as_str()
            .trim_end_matches('/')
            .to_ascii_lowercase();
        if let Some(first) = self
            .targets
            .insert((vault_key, secret_name.to_ascii_lowercase()), i)
        {
            return Err(ctx.err(
                &c.secret_name,
                &format!("{prefix}.secret_name"),
                format!("clients[{first}] already writes this secret in this vault"),
            ));
        }
        let key_vault_url = match self.vaults.get(key_vault_url.as_str()) {
            Some(url) => url.clone(),
            None => {
                let url = Arc::new(key_vault_url);
                self.vaults.insert(url.as_str().to_string(), url.clone());
                url
            }
        };
        let policy_key = c.policy_key();
        let policy = match self.policies.get(&policy_key) {
            Some(p) => p.clone(),
            None => {
                let p = Arc::new(self.policy(ctx, rc, &prefix)?);
                self.policies.insert(policy_key, p.clone());
                p
            }
        };
        self.clients.push(Client {
            origin: self.origin.clone(),
            name: name.into(),
            app,
            key_vault_url,
            secret_name: secret_name.into(),
            policy,
        });
        Ok(())
    }

    /// A client's policy from its own keys and `[defaults]`, checked.
    fn policy(
        &mut self,
        ctx: &Ctx<'_>,
        rc: &S<RawClient>,
        prefix: &str,
    ) -> Result<Policy, ConfigError> {
        let c = rc.get_ref();
        let (mut policy, spans) = policy(
            ctx,
            &c.policy(),
            self.defaults,
            prefix,
            self.cloud,
            &mut self.crons,
        )?;
        let key = (policy.schedule.expression.clone(), policy.schedule.timezone);
        policy.schedule = self
            .schedules
            .entry(key)
            .or_insert_with(|| policy.schedule.clone())
            .clone();
        let at = |s: &Located, fallback: &str| match s {
            Some((span, key)) => (Some(ctx.line_of(span.start)), key.clone()),
            None => (
                Some(ctx.line_of(rc.span().start)),
                format!("{prefix}.{fallback}"),
            ),
        };
        if policy.renew_before >= policy.secret_lifetime {
            let (line, key) = at(&spans.renew_at, "renew_before");
            return Err(ConfigError {
                file: ctx.file.to_path_buf(),
                line,
                key,
                message: format!(
                    "renew_before ({}) must be shorter than secret_lifetime ({})",
                    crate::clock::format_duration(policy.renew_before),
                    crate::clock::format_duration(policy.secret_lifetime)
                ),
            });
        }
        if policy.overlap >= policy.secret_lifetime - policy.renew_before {
            let (line, key) = at(&spans.overlap_at, "overlap");
            return Err(ConfigError {
                file: ctx.file.to_path_buf(),
                line,
                key,
                message: format!(
                    "overlap ({}) must be shorter than secret_lifetime - renew_before ({})",
                    crate::clock::format_duration(policy.overlap),
                    crate::clock::format_duration(policy.secret_lifetime - policy.renew_before)
                ),
            });
        }
        let _ = spans.lifetime_at;
        Ok(policy)
    }
}

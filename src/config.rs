//! The TOML configuration: parsed into raw types (unknown keys refused), then validated into the
//! typed [`Config`] the rest of the daemon uses. Every error names the file, the line and the key.
//!
//! Secrets are never written in the config: it names files, and [`Config::load`] reads them.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use secrecy::SecretString;
use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::clock::parse_duration;

/// A config error: where, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The national clouds: their default endpoints and the token scopes that go with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    Public,
    UsGov,
    China,
}

impl Cloud {
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Public => "public",
            Cloud::UsGov => "usgov",
            Cloud::China => "china",
        }
    }
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Public => "https://login.microsoftonline.com",
            Cloud::UsGov => "https://login.microsoftonline.us",
            Cloud::China => "https://login.chinacloudapi.cn",
        }
    }
    pub fn graph_endpoint(self) -> &'static str {
        match self {
            Cloud::Public => "https://graph.microsoft.com",
            Cloud::UsGov => "https://graph.microsoft.us",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }
    /// Graph tokens are for the cloud's Graph audience, whatever `graph_endpoint` says.
    pub fn graph_scope(self) -> &'static str {
        match self {
            Cloud::Public => "https://graph.microsoft.com/.default",
            Cloud::UsGov => "https://graph.microsoft.us/.default",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn/.default",
        }
    }
    /// The only scope the Key Vault client may ever ask for.
    pub fn vault_scope(self) -> &'static str {
        match self {
            Cloud::Public => "https://vault.azure.net/.default",
            Cloud::UsGov => "https://vault.usgovcloudapi.net/.default",
            Cloud::China => "https://vault.azure.cn/.default",
        }
    }
    /// Vault hosts end with this; for them the auth challenge's resource is verified.
    pub fn vault_suffix(self) -> &'static str {
        match self {
            Cloud::Public => ".vault.azure.net",
            Cloud::UsGov => ".vault.usgovcloudapi.net",
            Cloud::China => ".vault.azure.cn",
        }
    }
}

/// How the daemon itself signs in.
pub enum Credential {
    ClientSecret {
        client_id: String,
        secret: SecretString,
    },
    WorkloadIdentity {
        client_id: String,
        token_file: PathBuf,
    },
    ManagedIdentity {
        client_id: Option<String>,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::ClientSecret { client_id, .. } => f
                .debug_struct("ClientSecret")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            Credential::WorkloadIdentity {
                client_id,
                token_file,
            } => f
                .debug_struct("WorkloadIdentity")
                .field("client_id", client_id)
                .field("token_file", token_file)
                .finish(),
            Credential::ManagedIdentity { client_id } => f
                .debug_struct("ManagedIdentity")
                .field("client_id", client_id)
                .finish(),
        }
    }
}

impl Credential {
    pub fn client_id(&self) -> Option<&str> {
        match self {
            Credential::ClientSecret { client_id, .. }
            | Credential::WorkloadIdentity { client_id, .. } => Some(client_id),
            Credential::ManagedIdentity { client_id } => client_id.as_deref(),
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::ClientSecret { .. } => "client_secret",
            Credential::WorkloadIdentity { .. } => "workload_identity",
            Credential::ManagedIdentity { .. } => "managed_identity",
        }
    }
}

#[derive(Debug)]
pub struct Azure {
    pub tenant_id: String,
    pub cloud: Cloud,
    pub authority_host: Url,
    pub graph_endpoint: Url,
    pub ca_pem: Option<Vec<u8>>,
    /// Limit on one HTTP request to Azure, from connecting to the end of the answer.
    pub request_timeout: Duration,
    /// Graph's write quota for this application in this tenant: at most `.0` writes in any
    /// `.1`. The daemon paces its writes to it.
    pub graph_write_quota: (u32, Duration),
    pub credential: Credential,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug)]
pub struct Server {
    pub listen: SocketAddr,
    pub admin_token: Option<SecretString>,
    /// Host names (lower case) the HTTP API answers to besides IP addresses and `localhost`.
    pub allowed_hosts: Vec<String>,
}

/// When a client is reconciled: a cron expression (seconds first) in a time zone.
#[derive(Clone)]
pub struct Schedule {
    pub expression: String,
    pub cron: Cron,
    pub timezone: Tz,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expression, self.timezone)
    }
}

impl Schedule {
    /// The first run strictly after `after`, DST-correct in the schedule's zone.
    pub fn next_after(&self, after: time::OffsetDateTime) -> Option<time::OffsetDateTime> {
        use chrono::TimeZone;
        let start = chrono::Utc
            .timestamp_opt(after.unix_timestamp(), after.nanosecond())
            .single()?
            .with_timezone(&self.timezone);
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        time::OffsetDateTime::from_unix_timestamp(next.timestamp()).ok()
    }
}

/// A client's rotation policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Shared by the clients with the same expression and zone: a parsed expression holds a
    /// bitfield of every year up to 5000.
    pub schedule: std::sync::Arc<Schedule>,
    pub secret_lifetime: Duration,
    pub renew_before: Duration,
    pub overlap: Duration,
    pub verify_scope: String,
    pub verify_timeout: Duration,
    pub verify_successes: u32,
    pub adopt: bool,
}

/// How a client names its application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppRef {
    AppId(String),
    ObjectId(String),
}

impl fmt::Display for AppRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppRef::AppId(id) => write!(f, "app_id {id}"),
            AppRef::ObjectId(id) => write!(f, "app_object_id {id}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    pub app: AppRef,
    pub key_vault_url: Url,
    pub secret_name: String,
    pub policy: Policy,
}

#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub azure: Azure,
    pub instance: String,
    /// Reconciles running at once, across all clients.
    pub max_concurrent: usize,
    pub log_format: LogFormat,
    pub log_level: String,
    pub server: Server,
    pub state_dir: PathBuf,
    pub clients: Vec<Client>,
    /// What is allowed but unwise (a secret file others may read): one line each, naming the
    /// file, never its content. Logged once the log is set up.
    pub warnings: Vec<String>,
}

impl Config {
    pub fn client(&self, name: &str) -> Option<&Client> {
        self.clients.iter().find(|c| c.name == name)
    }
}

// ---- raw form --------------------------------------------------------------------------------

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    azure: RawAzure,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    defaults: RawPolicy,
    #[serde(default)]
    clients: Vec<S<RawClient>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAzure {
    tenant_id: S<String>,
    cloud: Option<S<String>>,
    authority_host: Option<S<String>>,
    graph_endpoint: Option<S<String>>,
    ca_file: Option<S<String>>,
    request_timeout: Option<S<String>>,
    graph_write_quota: Option<S<String>>,
    credential: S<RawCredential>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    kind: S<String>,
    client_id: Option<S<String>>,
    client_secret_file: Option<S<String>>,
    federated_token_file: Option<S<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    instance: Option<S<String>>,
    max_concurrent: Option<S<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<S<String>>,
    level: Option<S<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<S<String>>,
    admin_token_file: Option<S<String>>,
    allowed_hosts: Option<Vec<S<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<S<String>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
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
}

impl RawClient {
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
        }
    }
}

// ---- validation ------------------------------------------------------------------------------

struct Ctx<'a> {
    file: &'a Path,
    source: &'a str,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.source[..offset.min(self.source.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }
    fn err_at<T>(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        let _ = std::marker::PhantomData::<T>;
        ConfigError {
            file: self.file.to_path_buf(),
            line: Some(self.line_of(span.start)),
            key: key.to_string(),
            message: message.into(),
        }
    }
    fn err<T>(&self, value: &S<T>, key: &str, message: impl Into<String>) -> ConfigError {
        self.err_at::<T>(value.span(), key, message)
    }
    fn err_nowhere(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: None,
            key: key.to_string(),
            message: message.into(),
        }
    }
    /// Resolves a path from the config relative to the config file's folder.
    fn path(&self, raw: &str) -> PathBuf {
        let expanded = expand_env(raw);
        let p = PathBuf::from(expanded);
        if p.is_absolute() {
            p
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        }
    }
}

/// Expands `$VAR` and `${VAR}` (systemd's `$CREDENTIALS_DIRECTORY` in particular).
fn expand_env(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => ("", after),
            }
        } else {
            let n = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            (&after[..n], &after[n..])
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
        } else {
            out.push_str(&std::env::var(name).unwrap_or_default());
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

fn is_guid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36
}

/// A DNS name as a Host header carries it: dot-separated labels of letters, digits and hyphens.
fn is_host_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn https_url(ctx: &Ctx<'_>, v: &S<String>, key: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(v.get_ref())
        .map_err(|e| ctx.err(v, key, format!("'{}' is not a URL: {e}", v.get_ref())))?;
    if url.scheme() != "https" {
        return Err(ctx.err(v, key, format!("'{}' must use https", v.get_ref())));
    }
    if url.host_str().is_none() {
        return Err(ctx.err(v, key, format!("'{}' has no host", v.get_ref())));
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

fn read_secret_file(
    ctx: &Ctx<'_>,
    v: &S<String>,
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<SecretString, ConfigError> {
    let path = ctx.path(v.get_ref());
    // The file's text holds the secret too: wiped once the secret is taken out of it.
    let text = std::fs::read_to_string(&path)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| ctx.err(v, key, format!("cannot read {}: {e}", path.display())))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ctx.err(v, key, format!("{} is empty", path.display())));
    }
    if let Some(mode) = crate::files::readable_by_others(&path) {
        warnings.push(format!(
            "{}: {key}: the secret file {} is readable by group or others (mode {mode:04o}): chmod 600 it",
            ctx.file.display(),
            path.display()
        ));
    }
    Ok(SecretString::from(trimmed.to_string()))
}

/// Whether the daemon may send its Key Vault token to `url`'s host without being told to: the
/// cloud's vault hosts, and loopback (the emulator).
fn known_vault_host(url: &Url, cloud: Cloud) -> bool {
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

fn duration(ctx: &Ctx<'_>, v: &S<String>, key: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(v.get_ref()).map_err(|e| ctx.err(v, key, e))?;
    if d.is_zero() {
        return Err(ctx.err(v, key, "must be longer than zero"));
    }
    Ok(d)
}

const DEFAULT_SCHEDULE: &str = "0 */15 * * * *";

fn cron_parser() -> CronParser {
    CronParser::builder().seconds(Seconds::Required).build()
}

/// Resolves a client's policy: its own keys over `[defaults]` over the built-in defaults.
fn policy(
    ctx: &Ctx<'_>,
    own: &RawPolicy,
    defaults: &RawPolicy,
    prefix: &str,
    cloud: Cloud,
) -> Result<(Policy, PolicySpans), ConfigError> {
    let pick =
        |a: &Option<S<String>>, b: &Option<S<String>>, name: &str| -> Option<(S<String>, String)> {
            match (a, b) {
                (Some(v), _) => Some((v.clone(), format!("{prefix}.{name}"))),
                (None, Some(v)) => Some((v.clone(), format!("defaults.{name}"))),
                (None, None) => None,
            }
        };
    let schedule_src = pick(&own.schedule, &defaults.schedule, "schedule");
    let expression = schedule_src
        .as_ref()
        .map(|(v, _)| v.get_ref().clone())
        .unwrap_or_else(|| DEFAULT_SCHEDULE.to_string());
    let cron = cron_parser()
        .parse(&expression)
        .map_err(|e| match &schedule_src {
            Some((v, key)) => ctx.err(
                v,
                key,
                format!("'{expression}' is not a cron expression with seconds: {e}"),
            ),
            None => ctx.err_nowhere("schedule", e.to_string()),
        })?;
    let timezone = match pick(&own.timezone, &defaults.timezone, "timezone") {
        Some((v, key)) => Tz::from_str(v.get_ref()).map_err(|_| {
            ctx.err(
                &v,
                &key,
                format!("'{}' is not an IANA time zone", v.get_ref()),
            )
        })?,
        None => Tz::UTC,
    };
    let dur = |name: &str, default: Duration| -> Result<(Duration, Located), ConfigError> {
        let (a, b) = match name {
            "secret_lifetime" => (&own.secret_lifetime, &defaults.secret_lifetime),
            "renew_before" => (&own.renew_before, &defaults.renew_before),
            "overlap" => (&own.overlap, &defaults.overlap),
            _ => (&own.verify_timeout, &defaults.verify_timeout),
        };
        match pick(a, b, name) {
            Some((v, key)) => Ok((duration(ctx, &v, &key)?, Some((v.span(), key)))),
            None => Ok((default, None)),
        }
    };
    let day = Duration::from_secs(86_400);
    let (secret_lifetime, lifetime_at) = dur("secret_lifetime", 90 * day)?;
    let (renew_before, renew_at) = dur("renew_before", 30 * day)?;
    let (overlap, overlap_at) = dur("overlap", 7 * day)?;
    let (verify_timeout, _) = dur("verify_timeout", Duration::from_secs(300))?;
    let verify_scope = match pick(&own.verify_scope, &defaults.verify_scope, "verify_scope") {
        Some((v, key)) => {
            let s = v.get_ref().trim().to_string();
            if !s.ends_with("/.default") || s.contains(char::is_whitespace) {
                return Err(ctx.err(
                    &v,
                    &key,
                    format!("'{s}' must be one resource's scope ending in /.default"),
                ));
            }
            s
        }
        None => cloud.graph_scope().to_string(),
    };
    let verify_successes = match (&own.verify_successes, &defaults.verify_successes) {
        (Some(v), _) | (None, Some(v)) => {
            let key = if own.verify_successes.is_some() {
                format!("{prefix}.verify_successes")
            } else {
                "defaults.verify_successes".into()
            };
            let n = *v.get_ref();
            if !(1..=10).contains(&n) {
                return Err(ctx.err(v, &key, format!("{n} is out of range: 1 to 10")));
            }
            n as u32
        }
        (None, None) => 3,
    };
    let adopt = own
        .adopt
        .as_ref()
        .or(defaults.adopt.as_ref())
        .map(|v| *v.get_ref())
        .unwrap_or(false);
    Ok((
        Policy {
            schedule: std::sync::Arc::new(Schedule {
                expression,
                cron,
                timezone,
            }),
            secret_lifetime,
            renew_before,
            overlap,
            verify_scope,
            verify_timeout,
            verify_successes,
            adopt,
        },
        PolicySpans {
            lifetime_at,
            renew_at,
            overlap_at,
        },
    ))
}

/// Where a value came from: its span and its key, when the file set it.
type Located = Option<(std::ops::Range<usize>, String)>;

struct PolicySpans {
    lifetime_at: Located,
    renew_at: Located,
    overlap_at: Located,
}

fn valid_client_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_secret_name(s: &str) -> bool {
    (1..=127).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Config {
    /// Reads, parses and validates a config file, and reads the secret files it names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &source)
    }

    /// Parses and validates config text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigError> {
        let ctx = Ctx { file: path, source };
        let mut warnings = Vec::new();
        let raw: RawConfig = toml::from_str(source).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: e.span().map(|s| ctx.line_of(s.start)),
            key: String::new(),
            message: e.message().trim().to_string(),
        })?;

        // [azure]
        let tenant = raw.azure.tenant_id.get_ref().trim().to_string();
        if tenant.is_empty()
            || !tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(ctx.err(
                &raw.azure.tenant_id,
                "azure.tenant_id",
                format!("'{tenant}' is not a tenant id (a GUID or a domain name)"),
            ));
        }
        let cloud = match raw.azure.cloud.as_ref().map(|c| (c, c.get_ref().as_str())) {
            None | Some((_, "public")) => Cloud::Public,
            Some((_, "usgov")) => Cloud::UsGov,
            Some((_, "china")) => Cloud::China,
            Some((c, other)) => {
                return Err(ctx.err(
                    c,
                    "azure.cloud",
                    format!("'{other}' is not one of public, usgov, china"),
                ));
            }
        };
        let authority_host = match &raw.azure.authority_host {
            Some(v) => https_url(&ctx, v, "azure.authority_host")?,
            None => Url::parse(cloud.authority_host())
                .map_err(|e| ctx.err_nowhere("azure.authority_host", e.to_string()))?,
        };
        let graph_endpoint = match &raw.azure.graph_endpoint {
            Some(v) => https_url(&ctx, v, "azure.graph_endpoint")?,
            None => Url::parse(cloud.graph_endpoint())
                .map_err(|e| ctx.err_nowhere("azure.graph_endpoint", e.to_string()))?,
        };
        let ca_pem = match &raw.azure.ca_file {
            Some(v) => {
                let p = ctx.path(v.get_ref());
                let bytes = std::fs::read(&p).map_err(|e| {
                    ctx.err(
                        v,
                        "azure.ca_file",
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
                if reqwest::Certificate::from_pem_bundle(&bytes)
                    .map(|c| c.is_empty())
                    .unwrap_or(true)
                {
                    return Err(ctx.err(
                        v,
                        "azure.ca_file",
                        format!("{} holds no PEM certificate", p.display()),
                    ));
                }
                Some(bytes)
            }
            None => None,
        };
        let request_timeout = match &raw.azure.request_timeout {
            Some(v) => duration(&ctx, v, "azure.request_timeout")?,
            None => Duration::from_secs(30),
        };
        let graph_write_quota = match &raw.azure.graph_write_quota {
            Some(v) => {
                let bad = || {
                    ctx.err(
                        v,
                        "azure.graph_write_quota",
                        format!("'{}' is not a quota like \"3000/150s\"", v.get_ref()),
                    )
                };
                let (n, w) = v.get_ref().split_once('/').ok_or_else(bad)?;
                let n: u32 = n.trim().parse().map_err(|_| bad())?;
                let w = parse_duration(w).map_err(|e| ctx.err(v, "azure.graph_write_quota", e))?;
                if n == 0 || w.is_zero() {
                    return Err(bad());
                }
                (n, w)
            }
            // Graph's documented identity write quota per application and tenant.
            None => (3000, Duration::from_secs(150)),
        };
        let cred = raw.azure.credential.get_ref();
        let client_id = |required: bool| -> Result<Option<String>, ConfigError> {
            let from_env = || {
                std::env::var("AZURE_CLIENT_ID")
                    .ok()
                    .filter(|s| !s.is_empty())
            };
            match &cred.client_id {
                Some(v) if is_guid(v.get_ref()) => Ok(Some(v.get_ref().to_ascii_lowercase())),
                Some(v) => Err(ctx.err(
                    v,
                    "azure.credential.client_id",
                    format!("'{}' is not a GUID", v.get_ref()),
                )),
                None if required => from_env().map(Some).ok_or_else(|| {
                    ctx.err(
                        &raw.azure.credential,
                        "azure.credential.client_id",
                        format!("is required for kind = \"{}\"", cred.kind.get_ref()),
                    )
                }),
                None => Ok(None),
            }
        };
        let refuse = |v: &Option<S<String>>, key: &str, kind: &str| -> Result<(), ConfigError> {
            match v {
                Some(v) => Err(ctx.err(v, key, format!("does not apply to kind = \"{kind}\""))),
                None => Ok(()),
            }
        };
        let credential = match cred.kind.get_ref().as_str() {
            "client_secret" => {
                refuse(
                    &cred.federated_token_file,
                    "azure.credential.federated_token_file",
                    "client_secret",
                )?;
                let Some(file) = &cred.client_secret_file else {
                    return Err(ctx.err(
                        &raw.azure.credential,
                        "azure.credential.client_secret_file",
                        "is required for kind = \"client_secret\"",
                    ));
                };
                Credential::ClientSecret {
                    client_id: client_id(true)?.unwrap_or_default(),
                    secret: read_secret_file(
                        &ctx,
                        file,
                        "azure.credential.client_secret_file",
                        &mut warnings,
                    )?,
                }
            }
            "workload_identity" => {
                refuse(
                    &cred.client_secret_file,
                    "azure.credential.client_secret_file",
                    "workload_identity",
                )?;
                let token_file = match &cred.federated_token_file {
                    Some(v) => ctx.path(v.get_ref()),
                    None => match std::env::var("AZURE_FEDERATED_TOKEN_FILE") {
                        Ok(p) if !p.is_empty() => PathBuf::from(p),
                        _ => return Err(ctx.err(&raw.azure.credential, "azure.credential.federated_token_file", "is required for kind = \"workload_identity\" when AZURE_FEDERATED_TOKEN_FILE is not set")),
                    },
                };
                Credential::WorkloadIdentity {
                    client_id: client_id(true)?.unwrap_or_default(),
                    token_file,
                }
            }
            "managed_identity" => {
                refuse(
                    &cred.client_secret_file,
                    "azure.credential.client_secret_file",
                    "managed_identity",
                )?;
                refuse(
                    &cred.federated_token_file,
                    "azure.credential.federated_token_file",
                    "managed_identity",
                )?;
                Credential::ManagedIdentity {
                    client_id: client_id(false)?,
                }
            }
            other => {
                return Err(ctx.err(
                    &cred.kind,
                    "azure.credential.kind",
                    format!(
                        "'{other}' is not one of client_secret, workload_identity, managed_identity"
                    ),
                ));
            }
        };

        // [daemon], [log], [server], [state]
        let instance = match &raw.daemon.instance {
            Some(v) => {
                let s = v.get_ref();
                if !(1..=32).contains(&s.len())
                    || !s
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                {
                    return Err(ctx.err(
                        v,
                        "daemon.instance",
                        format!("'{s}' must be 1-32 characters of a-z, 0-9 and -"),
                    ));
                }
                s.clone()
            }
            None => "default".to_string(),
        };
        let max_concurrent = match &raw.daemon.max_concurrent {
            Some(v) if (1..=4096).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                return Err(ctx.err(
                    v,
                    "daemon.max_concurrent",
                    format!("{} is out of range: 1 to 4096", v.get_ref()),
                ));
            }
            None => 32,
        };
        let log_format = match raw.log.format.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "text")) => LogFormat::Text,
            Some((_, "json")) => LogFormat::Json,
            Some((v, other)) => {
                return Err(ctx.err(
                    v,
                    "log.format",
                    format!("'{other}' is not one of text, json"),
                ));
            }
        };
        let log_level = match &raw.log.level {
            Some(v) => {
                tracing_subscriber::EnvFilter::try_new(v.get_ref()).map_err(|e| {
                    ctx.err(
                        v,
                        "log.level",
                        format!("'{}' is not a log filter: {e}", v.get_ref()),
                    )
                })?;
                v.get_ref().clone()
            }
            None => "info".to_string(),
        };
        let listen = match &raw.server.listen {
            Some(v) => v.get_ref().parse().map_err(|_| {
                ctx.err(
                    v,
                    "server.listen",
                    format!("'{}' is not an address:port", v.get_ref()),
                )
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 9464)),
        };
        let admin_token = match &raw.server.admin_token_file {
            Some(v) => {
                let token = read_secret_file(&ctx, v, "server.admin_token_file", &mut warnings)?;
                use secrecy::ExposeSecret;
                if token.expose_secret().len() < 16 {
                    return Err(ctx.err(
                        v,
                        "server.admin_token_file",
                        "the admin token must have at least 16 characters",
                    ));
                }
                Some(token)
            }
            None => None,
        };
        let mut allowed_hosts = Vec::new();
        for name in raw.server.allowed_hosts.iter().flatten() {
            if !is_host_name(name.get_ref()) {
                return Err(ctx.err(
                    name,
                    "server.allowed_hosts",
                    format!(
                        "'{}' is not a host name (give a DNS name without scheme, port or path; IP addresses and localhost are always allowed)",
                        name.get_ref()
                    ),
                ));
            }
            allowed_hosts.push(name.get_ref().to_ascii_lowercase());
        }
        let state_dir = match &raw.state.dir {
            Some(v) => ctx.path(v.get_ref()),
            None => PathBuf::from("/var/lib/secret-rotator"),
        };
        // A missing state dir is created owner-only; an existing one must already be. Anyone
        // else who may write there could replace the store or plant links for its files.
        if std::fs::symlink_metadata(&state_dir).is_ok()
            && let Some(why) = crate::files::unsafe_dir(&state_dir)
        {
            return Err(match &raw.state.dir {
                Some(v) => ctx.err(v, "state.dir", why),
                None => ctx.err_nowhere("state.dir", why),
            });
        }

        // [defaults] must be valid on its own, even when every client overrides it.
        let empty = RawPolicy::default();
        let (_, spans) = policy(&ctx, &empty, &raw.defaults, "defaults", cloud)?;
        let _ = spans;

        // [[clients]]
        let mut clients = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut apps: HashMap<String, usize> = HashMap::new();
        let mut targets: HashMap<(String, String), usize> = HashMap::new();
        let mut schedules: HashMap<(String, Tz), std::sync::Arc<Schedule>> = HashMap::new();
        for (i, rc) in raw.clients.iter().enumerate() {
            let c = rc.get_ref();
            let prefix = format!("clients[{i}]");
            let name = c.name.get_ref().clone();
            if !valid_client_name(&name) {
                return Err(ctx.err(
                    &c.name,
                    &format!("{prefix}.name"),
                    format!("'{name}' must be 1-64 characters of A-Z, a-z, 0-9, _, . and -"),
                ));
            }
            let prefix = format!("clients[{i}] ({name})");
            if let Some(first) = names.insert(name.to_ascii_lowercase(), i) {
                return Err(ctx.err(
                    &c.name,
                    &format!("{prefix}.name"),
                    format!("duplicates clients[{first}]"),
                ));
            }
            let app = match (&c.app_id, &c.app_object_id) {
                (Some(v), None) if is_guid(v.get_ref()) => {
                    AppRef::AppId(v.get_ref().to_ascii_lowercase())
                }
                (None, Some(v)) if is_guid(v.get_ref()) => {
                    AppRef::ObjectId(v.get_ref().to_ascii_lowercase())
                }
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
                (AppRef::AppId(id), Some(v), _) | (AppRef::ObjectId(id), _, Some(v)) => {
                    (id.clone(), v.span())
                }
                _ => (String::new(), rc.span()),
            };
            if let Some(first) = apps.insert(app_key.clone(), i) {
                return Err(ctx.err_at::<()>(
                    app_span,
                    &format!("{prefix}.app_id"),
                    format!("clients[{first}] already manages this application"),
                ));
            }
            if let AppRef::AppId(id) = &app
                && credential.client_id() == Some(id.as_str())
            {
                return Err(ctx.err_at::<()>(app_span, &format!("{prefix}.app_id"), "is the daemon's own identity (azure.credential.client_id); it cannot rotate itself"));
            }
            let key_vault_url =
                https_url(&ctx, &c.key_vault_url, &format!("{prefix}.key_vault_url"))?;
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
                .or(raw.defaults.allow_custom_vault_host.as_ref())
                .is_some_and(|v| *v.get_ref());
            if !allow_custom_host && !known_vault_host(&key_vault_url, cloud) {
                return Err(ctx.err(
                    &c.key_vault_url,
                    &format!("{prefix}.key_vault_url"),
                    format!(
                        "{} is not a Key Vault host of the {} cloud (*{}), and the daemon's Key Vault token is good for every vault it may use: check the URL for a typo, or set allow_custom_vault_host = true on this client if the host is yours",
                        key_vault_url.host_str().unwrap_or_default(),
                        cloud.name(),
                        cloud.vault_suffix()
                    ),
                ));
            }
            let secret_name = c.secret_name.get_ref().clone();
            if !valid_secret_name(&secret_name) {
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
            if let Some(first) = targets.insert((vault_key, secret_name.to_ascii_lowercase()), i) {
                return Err(ctx.err(
                    &c.secret_name,
                    &format!("{prefix}.secret_name"),
                    format!("clients[{first}] already writes this secret in this vault"),
                ));
            }
            let (mut policy, spans) = policy(&ctx, &c.policy(), &raw.defaults, &prefix, cloud)?;
            let key = (policy.schedule.expression.clone(), policy.schedule.timezone);
            policy.schedule = schedules
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
                    file: path.to_path_buf(),
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
                    file: path.to_path_buf(),
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
            clients.push(Client {
                name,
                app,
                key_vault_url,
                secret_name,
                policy,
            });
        }

        // A reload logs at once; the first load is logged by `main` once the log is set up.
        if tracing::dispatcher::has_been_set() {
            for w in &warnings {
                tracing::warn!("{w}");
            }
        }
        Ok(Config {
            path: path.to_path_buf(),
            azure: Azure {
                tenant_id: tenant,
                cloud,
                authority_host,
                graph_endpoint,
                ca_pem,
                request_timeout,
                graph_write_quota,
                credential,
            },
            instance,
            max_concurrent,
            log_format,
            log_level,
            server: Server {
                listen,
                admin_token,
                allowed_hosts,
            },
            state_dir,
            clients,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}

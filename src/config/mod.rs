//! The TOML configuration: parsed into raw types (unknown keys refused), then validated into the
//! typed [`Config`] the rest of the daemon uses. Every error names the file, the line and the key.
//! Each section has its file: its raw form, its typed form and its validation.
//!
//! Secrets are never written in the config: it names files, and [`Config::load`] reads them.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

mod azure;
mod change;
mod clients;
mod daemon;
mod discovery;
mod drift;
mod events;
mod ha;
mod inventory;
mod policy;
mod sections;
mod server;
mod values;

pub use azure::{Azure, Cloud, Credential};
pub use clients::{AppRef, Client, Origin, known_vault_host};
pub use daemon::LogFormat;
pub use discovery::Discovery;
pub use events::{Sink, SinkKind};
pub use policy::{Policy, Schedule};
pub use server::Server;

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

#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub azure: Azure,
    pub instance: String,
    /// Reconciles running at once, across all clients; `None` (`"auto"`): sized from the
    /// Graph write quota and the time a reconcile holds its slot.
    pub max_concurrent: Option<usize>,
    /// Rotations the installation publishes in any hour; 0: no budget.
    pub max_rotations_per_hour: u32,
    pub log_format: LogFormat,
    pub log_level: String,
    pub server: Server,
    pub state_dir: PathBuf,
    /// `[daemon] clients_dir`: one-client TOML files, read with the config.
    pub clients_dir: Option<PathBuf>,
    /// `[discovery]`, when enabled.
    pub discovery: Option<Discovery>,
    pub clients: Vec<Client>,
    /// `[[events]]`: where events go.
    pub events: Vec<Sink>,
    /// `[ha]` with `kind = "blob_lease"`; `None`: a single replica.
    pub ha: Option<crate::ha::Settings>,
    /// `[inventory]`: the tenant's credentials, listed every interval.
    pub inventory: crate::inventory::Settings,
    /// What is allowed but unwise (a secret file others may read): one line each, naming the
    /// file, never its content. Logged once the log is set up.
    pub warnings: Vec<String>,
    /// `clients` by name, for [`Config::client`].
    by_name: ClientIndex,
}

impl Config {
    /// The client named `name`. Every reconcile looks its client up, so with ten thousand
    /// clients a scan of the list would cost more than the rest of the scheduling together.
    pub fn client(&self, name: &str) -> Option<&Client> {
        self.by_name.find(&self.clients, name)
    }
}

/// Indices of the clients sorted by name: four bytes a client, no copy of the names.
struct ClientIndex(Vec<u32>);

impl ClientIndex {
    fn new(clients: &[Client]) -> ClientIndex {
        let mut order: Vec<u32> = (0..clients.len() as u32).collect();
        order.sort_unstable_by(|a, b| clients[*a as usize].name.cmp(&clients[*b as usize].name));
        ClientIndex(order)
    }

    fn find<'a>(&self, clients: &'a [Client], name: &str) -> Option<&'a Client> {
        let i = self
            .0
            .binary_search_by(|i| (*clients[*i as usize].name).cmp(name))
            .ok()?;
        clients.get(self.0[i] as usize)
    }
}

impl fmt::Debug for ClientIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientIndex({} clients)", self.0.len())
    }
}

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    azure: azure::RawAzure,
    #[serde(default)]
    daemon: daemon::RawDaemon,
    #[serde(default)]
    log: daemon::RawLog,
    #[serde(default)]
    server: server::RawServer,
    #[serde(default)]
    state: daemon::RawState,
    #[serde(default)]
    ha: ha::RawHa,
    #[serde(default)]
    defaults: policy::RawPolicy,
    // `clients` is taken out of the document before the rest is read, and its entries are
    // validated one at a time (`clients::add_all`).
    #[serde(default)]
    events: Vec<S<events::RawSink>>,
    #[serde(default)]
    inventory: inventory::RawInventory,
    #[serde(default)]
    discovery: discovery::RawDiscovery,
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
        Config::parse_with(path, source, "")
    }

    /// Reads the config and adds the clients `[discovery]` found.
    pub fn load_with(path: &Path, discovered: &str) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Config::parse_with(path, &source, discovered)
    }

    /// [`Config::parse`], with the clients `[discovery]` found as `[[clients]]` TOML.
    pub fn parse_with(path: &Path, source: &str, discovered: &str) -> Result<Config, ConfigError> {
        // The `[[clients]]` sections are read one at a time after the rest (`sections.rs`); a
        // document that names `clients` otherwise is read whole, its entries still validated
        // one at a time (`clients::add_all`), never all held as raw entries.
        let found = sections::find(source);
        let main = match &found {
            Some(found) => sections::without(source, found),
            None => source.into(),
        };
        let ctx = values::Ctx {
            file: path,
            source: &main,
            base: 0,
        };
        let mut warnings = Vec::new();
        let mut doc = toml::de::DeTable::parse(&main).map_err(|e| ctx.toml_error(e))?;
        // The package installs the example with every line commented out: say what to fill in
        // rather than which field serde missed first.
        if doc.get_ref().is_empty() && found.as_ref().is_none_or(|f| f.clients.is_empty()) {
            return Err(ConfigError {
                file: path.to_path_buf(),
                line: None,
                key: "azure.tenant_id".into(),
                message: "the configuration sets nothing yet: set [azure] tenant_id, [azure.credential] and at least one [[clients]] entry (the commented example lists every key)".into(),
            });
        }
        let raw_clients = doc.get_mut().remove("clients");
        let raw = RawConfig::deserialize(toml::de::Deserializer::from(doc))
            .map_err(|e| ctx.toml_error(e))?;

        let azure = azure::parse(&ctx, &raw.azure, &mut warnings)?;
        let daemon = daemon::daemon(&ctx, &raw.daemon)?;
        let (log_format, log_level) = daemon::log(&ctx, &raw.log)?;
        let server = server::parse(&ctx, &raw.server, &mut warnings)?;
        let state_dir = daemon::state(&ctx, &raw.state)?;
        let ha = ha::parse(
            &ctx,
            &raw.ha,
            &daemon.instance,
            azure.request_timeout,
            &mut warnings,
        )?;
        let inventory = inventory::parse(&ctx, &raw.inventory)?;

        // [defaults] must be valid on its own, even when every client overrides it.
        policy::policy(
            &ctx,
            &policy::RawPolicy::default(),
            &raw.defaults,
            "defaults",
            azure.cloud,
            &mut Default::default(),
        )?;
        let mut clients = clients::ClientSet::new(&raw.defaults, &azure.credential, azure.cloud);
        if let Some(entries) = raw_clients {
            clients::add_all(&ctx, entries, &mut clients)?;
        }
        if let Some(found) = &found {
            clients::add_sections(path, source, &found.clients, &mut clients)?;
        }
        if let Some(dir) = &daemon.clients_dir {
            clients::add_dir(&ctx, dir, &mut clients)?;
        }
        let discovery = discovery::parse(&ctx, &raw.discovery, azure.cloud)?;
        if let Some(d) = &discovery
            && !discovered.trim().is_empty()
        {
            clients::add_discovered(discovered, &d.tag, &mut clients)?;
        }
        let clients = clients.into_clients();
        let events = events::parse(&ctx, &raw.events, &clients, &mut warnings)?;

        // A reload logs at once; the first load is logged by `main` once the log is set up.
        if tracing::dispatcher::has_been_set() {
            for w in &warnings {
                tracing::warn!("{w}");
            }
        }
        Ok(Config {
            by_name: ClientIndex::new(&clients),
            path: path.to_path_buf(),
            azure,
            instance: daemon.instance,
            max_concurrent: daemon.max_concurrent,
            max_rotations_per_hour: daemon.max_rotations_per_hour,
            log_format,
            log_level,
            server,
            state_dir,
            clients_dir: daemon.clients_dir,
            discovery,
            clients,
            events,
            ha,
            inventory,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests;

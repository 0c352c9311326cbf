//! A test tenant in one place: the daemon's own identity, the client applications it rotates and
//! the vaults it publishes to, seeded into a running emulator, and the daemon config that points
//! at them. The integration tests, `secret-rotator demo` and the scale benchmark all start from
//! here, so that what they seed and the config they write cannot drift apart.

use std::collections::BTreeMap;

use crate::model::{Seed, SeedApplication, SeedPassword, SeedVault, Settings, VaultRole};
use crate::{Emulator, StartInfo};

/// What to seed: the daemon's identity (owner of every client app, `Application.ReadWrite.OwnedBy`,
/// Secrets Officer on every vault), its client applications and its vaults.
#[derive(Debug, Clone)]
pub struct TenantKit {
    daemon_name: String,
    daemon_secret: String,
    clients: Vec<KitClient>,
    vaults: Vec<String>,
    settings: Option<Settings>,
}

/// One client application of the daemon.
#[derive(Debug, Clone)]
pub struct KitClient {
    pub name: String,
    pub audience: String,
    /// The vault (by name, one of the kit's) its secret is published to.
    pub vault: String,
    /// A password someone made in the portal, by its display name: the daemon must leave it be.
    pub portal_password: Option<String>,
}

impl KitClient {
    pub fn new(name: impl Into<String>, vault: impl Into<String>) -> KitClient {
        KitClient {
            name: name.into(),
            audience: "AzureADMyOrg".into(),
            vault: vault.into(),
            portal_password: None,
        }
    }
}

impl TenantKit {
    /// A tenant whose daemon identity signs in with `daemon_secret`.
    pub fn new(daemon_name: impl Into<String>, daemon_secret: impl Into<String>) -> TenantKit {
        TenantKit {
            daemon_name: daemon_name.into(),
            daemon_secret: daemon_secret.into(),
            clients: Vec::new(),
            vaults: Vec::new(),
            settings: None,
        }
    }

    pub fn vault(mut self, name: impl Into<String>) -> TenantKit {
        self.vaults.push(name.into());
        self
    }

    pub fn client(mut self, client: KitClient) -> TenantKit {
        self.clients.push(client);
        self
    }

    /// The emulator's behaviour; without it, Azure's observed defaults.
    pub fn settings(mut self, settings: Settings) -> TenantKit {
        self.settings = Some(settings);
        self
    }

    /// Seeds the tenant into `em`.
    pub async fn seed(self, em: &Emulator) -> anyhow::Result<Tenant> {
        if let Some(c) = self
            .clients
            .iter()
            .find(|c| !self.vaults.contains(&c.vault))
        {
            anyhow::bail!(
                "client {} names vault {}, which the kit lacks",
                c.name,
                c.vault
            );
        }
        let daemon_app_id = uuid::Uuid::new_v4().to_string();
        let mut applications = vec![SeedApplication {
            app_id: Some(daemon_app_id.clone()),
            graph_roles: vec!["Application.ReadWrite.OwnedBy".into()],
            password_credentials: vec![SeedPassword::new(None, Some(&self.daemon_secret))],
            ..SeedApplication::new(self.daemon_name.clone())
        }];
        applications.extend(self.clients.iter().map(|c| {
            SeedApplication {
                sign_in_audience: c.audience.clone(),
                owners: vec![daemon_app_id.clone()],
                password_credentials: c
                    .portal_password
                    .iter()
                    .map(|d| SeedPassword::new(Some(d), None))
                    .collect(),
                ..SeedApplication::new(c.name.clone())
            }
        }));
        let access = BTreeMap::from([(daemon_app_id.clone(), VaultRole::Officer)]);
        let report = em
            .seed(Seed {
                tenant_id: None,
                applications,
                vaults: self
                    .vaults
                    .iter()
                    .map(|name| SeedVault {
                        name: name.clone(),
                        access: access.clone(),
                    })
                    .collect(),
                settings: self.settings,
                ..Default::default()
            })
            .await?;
        let clients = self
            .clients
            .iter()
            .zip(&report.applications[1..])
            .map(|(c, a)| SeededClient {
                name: c.name.clone(),
                app_id: a.app_id.clone(),
                object_id: a.id.clone(),
                vault_url: report.vaults[&c.vault].clone(),
                vault: c.vault.clone(),
            })
            .collect();
        Ok(Tenant {
            tenant_id: report.tenant_id,
            daemon_app_id,
            daemon_secret: self.daemon_secret,
            clients,
            vaults: report.vaults,
            info: em.info(),
        })
    }
}

/// A client application as seeded.
#[derive(Debug, Clone)]
pub struct SeededClient {
    pub name: String,
    pub app_id: String,
    pub object_id: String,
    pub vault: String,
    pub vault_url: String,
}

/// The seeded tenant: its ids, and where the emulator serves it.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub tenant_id: String,
    pub daemon_app_id: String,
    /// The daemon identity's secret: a test value, never a real one.
    pub daemon_secret: String,
    pub clients: Vec<SeededClient>,
    /// Vault name → URL.
    pub vaults: BTreeMap<String, String>,
    pub info: StartInfo,
}

/// The parts of a daemon config that differ between the tests, the demo and the benchmark;
/// [`Tenant::config`] writes the rest from the tenant.
#[derive(Debug, Clone)]
pub struct ConfigSpec<'a> {
    /// Comment lines at the top.
    pub header: &'a str,
    /// Where the daemon's client secret is (the file holds [`Tenant::daemon_secret`]).
    pub secret_file: &'a str,
    /// More `[azure]` lines (a write quota, a request timeout).
    pub azure: &'a str,
    pub instance: &'a str,
    /// More `[daemon]` lines.
    pub daemon: &'a str,
    /// `[log]` lines; none when empty.
    pub log: &'a str,
    pub listen: &'a str,
    pub admin_token_file: Option<&'a str>,
    pub state_dir: &'a str,
    /// `[defaults]` lines.
    pub defaults: &'a str,
    /// The secret name of each client, `{name}` standing for the client's name.
    pub secret_name: &'a str,
}

impl Tenant {
    pub fn client(&self, name: &str) -> Option<&SeededClient> {
        self.clients.iter().find(|c| c.name == name)
    }

    /// The daemon's config for this tenant, one `[[clients]]` entry per client application.
    pub fn config(&self, spec: &ConfigSpec<'_>) -> String {
        let info = &self.info;
        let mut text = format!(
            "{header}[azure]\ntenant_id = \"{tenant}\"\nauthority_host = \"{authority}\"\ngraph_endpoint = \"{graph}\"\nca_file = \"{ca}\"\n{azure}\n[azure.credential]\nkind = \"client_secret\"\nclient_id = \"{daemon}\"\nclient_secret_file = \"{secret}\"\n\n[daemon]\ninstance = \"{instance}\"\n{daemon_extra}\n",
            header = spec.header,
            tenant = self.tenant_id,
            authority = info.authority_host,
            graph = info.graph_endpoint,
            ca = info.ca_file,
            azure = spec.azure,
            daemon = self.daemon_app_id,
            secret = spec.secret_file,
            instance = spec.instance,
            daemon_extra = spec.daemon,
        );
        if !spec.log.is_empty() {
            text.push_str(&format!("[log]\n{}\n\n", spec.log));
        }
        text.push_str(&format!("[server]\nlisten = \"{}\"\n", spec.listen));
        if let Some(token) = spec.admin_token_file {
            text.push_str(&format!("admin_token_file = \"{token}\"\n"));
        }
        text.push_str(&format!(
            "\n[state]\ndir = \"{}\"\n\n[defaults]\n{}\n",
            spec.state_dir, spec.defaults
        ));
        for c in &self.clients {
            text.push_str(&format!(
                "\n[[clients]]\nname = \"{name}\"\napp_id = \"{app_id}\"\nkey_vault_url = \"{url}\"\nsecret_name = \"{secret}\"\n",
                name = c.name,
                app_id = c.app_id,
                url = c.vault_url,
                secret = spec.secret_name.replace("{name}", &c.name),
            ));
        }
        text
    }
}

//! The emulated tenant: applications with their credentials, vaults with their secrets, and the
//! knobs that decide how faithfully (and how slowly) the emulator behaves.
//!
//! Everything here is plain data, serialisable so that `--state-dir` can persist it across
//! restarts. Behaviour lives in the service modules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::table::{Key, Keyed, Table};

/// Graph's `signInAudience` values that let personal Microsoft accounts sign in; such apps may
/// hold at most two passwords.
pub const PERSONAL_AUDIENCES: [&str; 2] = [
    "AzureADandPersonalMicrosoftAccount",
    "PersonalMicrosoftAccount",
];

/// What a test or an operator hands the control API (or `--seed FILE`) to build a tenant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub applications: Vec<SeedApplication>,
    #[serde(default)]
    pub vaults: Vec<SeedVault>,
    pub settings: Option<Settings>,
    /// DICOM services (Azure Health Data Services), each on its own listener.
    #[serde(default)]
    pub dicom_services: Vec<SeedDicomService>,
    /// Azure RBAC role assignments (ARM), by role name.
    #[serde(default)]
    pub role_assignments: Vec<SeedRoleAssignment>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedDicomService {
    /// `[a-z0-9]{3,24}`; the service's resource id ends in `/dicomservices/<name>`.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedRoleAssignment {
    /// The app id of the application whose service principal gets the role.
    pub principal: String,
    /// A built-in role's name, e.g. `Owner`, `User Access Administrator`, `DICOM Data Owner`.
    pub role: String,
    /// An ARM scope: `/subscriptions/<id>...`; `subscription` means the emulator's subscription,
    /// `dicom:<name>` a seeded DICOM service.
    pub scope: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedApplication {
    /// Object id; generated when absent.
    pub id: Option<String>,
    /// Application (client) id; generated when absent.
    pub app_id: Option<String>,
    pub display_name: String,
    #[serde(default = "default_audience")]
    pub sign_in_audience: String,
    /// App ids of the service principals that own this application.
    #[serde(default)]
    pub owners: Vec<String>,
    /// Graph application permissions granted to this app's service principal
    /// (`Application.ReadWrite.OwnedBy`, `Application.ReadWrite.All`, `Application.Read.All`).
    #[serde(default)]
    pub graph_roles: Vec<String>,
    #[serde(default)]
    pub password_credentials: Vec<SeedPassword>,
    /// Certificate credentials (`keyCredentials`): listed by Graph, never used to sign in here.
    #[serde(default)]
    pub key_credentials: Vec<SeedKeyCredential>,
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredential>,
    /// This app is a managed identity: it gets tokens from the managed identity endpoint.
    #[serde(default)]
    pub managed_identity: bool,
    /// Entra refuses every sign-in of a disabled application (AADSTS7000112).
    #[serde(default)]
    pub disabled: bool,
    /// The application's `tags`.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl SeedApplication {
    /// An org-only application with no credentials, owners or roles; set what differs.
    pub fn new(display_name: impl Into<String>) -> SeedApplication {
        SeedApplication {
            id: None,
            app_id: None,
            display_name: display_name.into(),
            sign_in_audience: default_audience(),
            owners: Vec::new(),
            graph_roles: Vec::new(),
            password_credentials: Vec::new(),
            key_credentials: Vec::new(),
            federated_credentials: Vec::new(),
            managed_identity: false,
            disabled: false,
            tags: Vec::new(),
        }
    }
}

/// A certificate credential to seed: Graph's `keyCredential` without the key itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedKeyCredential {
    pub display_name: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub start_date_time: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub end_date_time: Option<OffsetDateTime>,
}

impl SeedPassword {
    /// A password with this secret (or a generated one), valid now for two years.
    pub fn new(display_name: Option<&str>, secret_text: Option<&str>) -> SeedPassword {
        SeedPassword {
            display_name: display_name.map(str::to_string),
            secret_text: secret_text.map(str::to_string),
            start_date_time: None,
            end_date_time: None,
            propagating: false,
        }
    }
}

fn default_audience() -> String {
    "AzureADMyOrg".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPassword {
    pub display_name: Option<String>,
    /// The secret; generated when absent (and returned in the seed answer).
    pub secret_text: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub start_date_time: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub end_date_time: Option<OffsetDateTime>,
    /// Seeded secrets are normally usable at once; set to model one created just now.
    #[serde(default)]
    pub propagating: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FederatedCredential {
    pub issuer: String,
    pub subject: String,
    #[serde(default = "default_fic_audience")]
    pub audience: String,
    /// PEM public key (EC P-256 or RSA) that signs the issuer's tokens.
    pub public_key_pem: String,
}

fn default_fic_audience() -> String {
    "api://AzureADTokenExchange".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedVault {
    pub name: String,
    /// app id → data-plane role: `officer` (Key Vault Secrets Officer) or `user` (Secrets User).
    #[serde(default)]
    pub access: BTreeMap<String, VaultRole>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum VaultRole {
    Officer,
    User,
}

/// How the emulator behaves. The defaults are Azure's observed behaviour; a test that turns
/// fidelity down says why.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// A new password starts working at a random moment between these two delays after it was
    /// added, decided anew on every token request (Entra replicas converge independently).
    pub propagation_min_ms: u64,
    pub propagation_max_ms: u64,
    /// Graph reads show the directory as it was this long ago.
    pub read_lag_ms: u64,
    /// Two writes to one application closer together than this get 409
    /// `Directory_ConcurrencyViolation`.
    pub concurrency_window_ms: u64,
    /// Tenant app-management policy: the longest password lifetime allowed, if any.
    pub max_password_lifetime_secs: Option<u64>,
    /// Lifetime of the access tokens the emulator issues.
    pub token_lifetime_secs: u64,
    /// Latency added to every call.
    pub latency_ms: u64,
    /// Azure's clock minus the true time: every `Date` header and every time the services
    /// stamp (a password's server-made `startDateTime`, Key Vault's `created`, `updated` and
    /// `deletedDate`) are shifted by it, so the client sees an Azure whose clock runs ahead
    /// (positive) or behind (negative). Password dates a client sends are read in Azure's
    /// frame (an `endDateTime` computed on a clock that is behind Azure's ends sooner); Azure
    /// stays consistent with itself when the offset changes (a jump of the client's clock).
    pub clock_offset_ms: i64,
    /// Key Vault listings (`GET /secrets`, `GET /secrets/{name}/versions`) show the vault as
    /// it was this long ago: a version written more recently is missing from them. Reads of
    /// one secret (`GET /secrets/{name}[/{version}]`) do not lag.
    pub kv_list_lag_ms: u64,
    pub throttling: Throttling,
}

impl Settings {
    /// The time as Azure's (possibly skewed) clock tells it.
    pub fn azure_now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + time::Duration::milliseconds(self.clock_offset_ms)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            propagation_min_ms: 2_000,
            propagation_max_ms: 12_000,
            read_lag_ms: 1_000,
            concurrency_window_ms: 500,
            max_password_lifetime_secs: None,
            token_lifetime_secs: 3_599,
            latency_ms: 0,
            clock_offset_ms: 0,
            kv_list_lag_ms: 0,
            throttling: Throttling::default(),
        }
    }
}

/// Service limits, modelled with sliding windows. Off unless `enabled`. `scale` shortens every
/// window (and nothing else) so that a benchmark can reach the limits within minutes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Throttling {
    pub enabled: bool,
    pub scale: f64,
    /// Graph resource units per application + tenant per 10 s (tenant size S: 3,500).
    pub graph_ru_per_10s: u32,
    /// Graph writes per application + tenant per 150 s.
    pub graph_writes_per_150s: u32,
    /// Graph writes per tenant per 300 s.
    pub graph_tenant_writes_per_300s: u32,
    /// Key Vault transactions per vault per 10 s.
    pub kv_transactions_per_10s: u32,
    /// Key Vault secret creations (PUT) per vault per 10 s.
    pub kv_creates_per_10s: u32,
    /// Send Key Vault 429s without `Retry-After`, as some captured responses were.
    pub kv_omit_retry_after: bool,
}

impl Default for Throttling {
    fn default() -> Self {
        Throttling {
            enabled: false,
            scale: 1.0,
            graph_ru_per_10s: 3_500,
            graph_writes_per_150s: 3_000,
            graph_tenant_writes_per_300s: 18_000,
            kv_transactions_per_10s: 4_000,
            kv_creates_per_10s: 300,
            kv_omit_retry_after: false,
        }
    }
}

/// An application registration as the emulator stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Application {
    pub id: String,
    pub app_id: String,
    pub display_name: String,
    pub sign_in_audience: String,
    pub owners: Vec<String>,
    pub graph_roles: Vec<String>,
    pub passwords: Vec<Password>,
    /// Certificate credentials, as Graph lists them.
    #[serde(default)]
    pub key_credentials: Vec<KeyCredential>,
    pub federated_credentials: Vec<FederatedCredential>,
    pub managed_identity: bool,
    /// The service principal's `accountEnabled` is false (or the seed disabled the app): Entra
    /// refuses every sign-in with AADSTS7000112.
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// The last write, for the concurrency-violation model.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_write: Option<OffsetDateTime>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// `web.redirectUris`.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
}

/// A service principal: an application's presence in the tenant. Resource principals
/// (Graph, Key Vault, DICOM, ...) are what a token's scope must name; a client's is what signs
/// in and what role assignments name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServicePrincipal {
    pub id: String,
    pub app_id: String,
    pub display_name: String,
    /// The resource identifiers a scope may use for it (its app id is always one).
    pub service_principal_names: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Names with one `*` standing for one DNS label (the FHIR services' per-service
    /// audiences, `https://*.fhir.azurehealthcareapis.com`).
    #[serde(default)]
    pub wildcard_names: Vec<String>,
}

/// An Azure RBAC role assignment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoleAssignment {
    pub name: String,
    pub scope: String,
    pub role_definition_id: String,
    pub principal_id: String,
    pub principal_type: String,
    pub created: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DicomService {
    pub name: String,
    pub resource_id: String,
}

/// A password credential. `removed` keeps it visible to lagging reads for a while.
#[derive(Clone, Serialize, Deserialize)]
pub struct Password {
    pub key_id: String,
    pub display_name: Option<String>,
    pub secret_text: String,
    pub hint: String,
    /// As Graph renders it: echoed as sent, or server-made with 7 fractional digits.
    pub start_text: String,
    pub end_text: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    /// When the credential was written to the directory (drives propagation and read lag).
    #[serde(with = "time::serde::rfc3339")]
    pub added: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub removed: Option<OffsetDateTime>,
}

impl Password {
    /// A live credential with this value, its hint (the first three characters, as Entra shows
    /// them) and its dates rendered as Graph renders server-made ones.
    pub fn new(
        key_id: String,
        display_name: Option<String>,
        secret_text: String,
        start: OffsetDateTime,
        end: OffsetDateTime,
        added: OffsetDateTime,
    ) -> Password {
        Password {
            key_id,
            display_name,
            hint: secret_text.chars().take(3).collect(),
            secret_text,
            start_text: crate::graph::graph_time(start),
            end_text: crate::graph::graph_time(end),
            start,
            end,
            added,
            removed: None,
        }
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Password")
            .field("key_id", &self.key_id)
            .field("display_name", &self.display_name)
            .field("hint", &self.hint)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// A certificate credential (Graph's `keyCredential`): an X.509 certificate's public key, so
/// nothing secret. Only its metadata is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyCredential {
    pub key_id: String,
    pub display_name: Option<String>,
    /// Base64 of the certificate's SHA-1 thumbprint, as Graph fills it in by default.
    pub custom_key_identifier: String,
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vault {
    pub name: String,
    pub access: BTreeMap<String, VaultRole>,
    /// Lower-cased secret name → secret.
    pub secrets: BTreeMap<String, VaultSecret>,
    /// Soft-deleted secrets, by lower-cased name.
    pub deleted: BTreeMap<String, DeletedSecret>,
    /// Version id → when it was written, true time in Unix milliseconds: listings lag behind
    /// it (`kv_list_lag_ms`). A version missing here was written long ago.
    #[serde(default)]
    pub written_ms: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaultSecret {
    /// The name as first written.
    pub name: String,
    /// Oldest first.
    pub versions: Vec<SecretVersion>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct SecretVersion {
    pub version: String,
    pub value: String,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub enabled: bool,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    pub created: i64,
    pub updated: i64,
}

impl std::fmt::Debug for SecretVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretVersion")
            .field("version", &self.version)
            .field("tags", &self.tags)
            .field("enabled", &self.enabled)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeletedSecret {
    pub secret: VaultSecret,
    pub deleted_date: i64,
    pub scheduled_purge_date: i64,
}

/// The whole emulated world, as persisted in `<state-dir>/state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub tenant_id: String,
    pub applications: Table<Application>,
    pub vaults: BTreeMap<String, Vault>,
    pub settings: Settings,
    #[serde(default)]
    pub service_principals: Table<ServicePrincipal>,
    #[serde(default)]
    pub role_assignments: Vec<RoleAssignment>,
    #[serde(default)]
    pub dicom_services: BTreeMap<String, DicomService>,
    #[serde(default)]
    pub subscription_id: String,
}

impl Keyed for Application {
    fn keys(&self, each: &mut dyn FnMut(Key, &str)) {
        each(Key::Id, &self.id);
        each(Key::AppId, &self.app_id);
    }
}

impl Keyed for ServicePrincipal {
    fn keys(&self, each: &mut dyn FnMut(Key, &str)) {
        each(Key::Id, &self.id);
        each(Key::AppId, &self.app_id);
        for n in &self.service_principal_names {
            each(Key::Name, n);
        }
        for w in &self.wildcard_names {
            each(Key::Pattern, w);
        }
    }
}

impl State {
    pub fn app_by_object_id(&self, id: &str) -> Option<usize> {
        self.applications.position(Key::Id, id)
    }
    pub fn app_by_app_id(&self, app_id: &str) -> Option<usize> {
        self.applications.position(Key::AppId, app_id)
    }
    pub fn sp_by_app_id(&self, app_id: &str) -> Option<&ServicePrincipal> {
        self.service_principals.get_by(Key::AppId, app_id)
    }
    pub fn sp_by_id(&self, id: &str) -> Option<&ServicePrincipal> {
        self.service_principals.get_by(Key::Id, id)
    }
    /// The service principal a token request's resource names: by app id or by one of its
    /// service principal names (a trailing slash is ignored, as Entra does), else by one of the
    /// wildcard names (only a few resource principals have them).
    pub fn sp_for_resource(&self, resource: &str) -> Option<&ServicePrincipal> {
        let want = resource.trim_end_matches('/');
        let exact = [
            self.service_principals.position(Key::AppId, want),
            self.service_principals.position(Key::Name, want),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(i) = exact {
            return Some(&self.service_principals[i]);
        }
        let lower = want.to_ascii_lowercase();
        let patterned = self.service_principals.having(Key::Pattern);
        patterned
            .into_iter()
            .map(|i| &self.service_principals[i])
            .find(|s| {
                s.wildcard_names.iter().any(|w| {
                    let Some((prefix, suffix)) = w.split_once('*') else {
                        return false;
                    };
                    lower.len() > prefix.len() + suffix.len()
                        && lower.starts_with(&prefix.to_ascii_lowercase())
                        && lower.ends_with(&suffix.to_ascii_lowercase())
                        && !lower[prefix.len()..lower.len() - suffix.len()]
                            .contains(['/', '.', '@', ':'])
                })
            })
    }
}

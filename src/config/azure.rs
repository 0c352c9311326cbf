//! `[azure]` and `[azure.credential]`: the tenant, the cloud and its endpoints, and how the daemon
//! itself signs in.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use super::values::{Ctx, duration, https_url, is_guid, read_secret_file};
use super::{ConfigError, S};
use crate::clock::parse_duration;

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
    /// Azure Resource Manager (role assignments, for `register --assign-role`).
    pub fn resource_manager_endpoint(self) -> &'static str {
        match self {
            Cloud::Public => "https://management.azure.com",
            Cloud::UsGov => "https://management.usgovcloudapi.net",
            Cloud::China => "https://management.chinacloudapi.cn",
        }
    }
    /// ARM tokens are for the cloud's Resource Manager audience, whatever the endpoint says.
    pub fn resource_manager_scope(self) -> &'static str {
        match self {
            Cloud::Public => "https://management.azure.com/.default",
            Cloud::UsGov => "https://management.usgovcloudapi.net/.default",
            Cloud::China => "https://management.chinacloudapi.cn/.default",
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
    /// The identity signed in to the Azure CLI (`az login`), in the configured tenant. For the
    /// commands a person runs (`check --online`, `plan`, ...); `run` refuses it.
    AzureCli,
    /// azure_identity's developer-tools chain: the Azure CLI, then the Azure Developer CLI
    /// (`azd auth login`), in the tools' default tenant. Interactive commands only, as
    /// `AzureCli`.
    Developer,
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
            Credential::AzureCli => f.write_str("AzureCli"),
            Credential::Developer => f.write_str("Developer"),
        }
    }
}

impl Credential {
    pub fn client_id(&self) -> Option<&str> {
        match self {
            Credential::ClientSecret { client_id, .. }
            | Credential::WorkloadIdentity { client_id, .. } => Some(client_id),
            Credential::ManagedIdentity { client_id } => client_id.as_deref(),
            Credential::AzureCli | Credential::Developer => None,
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::ClientSecret { .. } => "client_secret",
            Credential::WorkloadIdentity { .. } => "workload_identity",
            Credential::ManagedIdentity { .. } => "managed_identity",
            Credential::AzureCli => "azure_cli",
            Credential::Developer => "developer",
        }
    }
    /// Who signs in, for messages: the client id, or what stands for it.
    pub fn identity(&self) -> &str {
        match self {
            Credential::AzureCli => "the Azure CLI's signed-in account",
            Credential::Developer => "the developer tools' signed-in account",
            _ => self.client_id().unwrap_or("the managed identity"),
        }
    }
    /// A person's session (`az login`), which a daemon must not depend on: it expires, it is
    /// one person's, and its rights are theirs.
    pub fn is_interactive(&self) -> bool {
        matches!(self, Credential::AzureCli | Credential::Developer)
    }
}

impl super::Config {
    /// What `run` (and its reloads) requires beyond a valid config: a credential of its own,
    /// not a person's session.
    pub fn check_for_daemon(&self) -> Result<(), ConfigError> {
        if !self.azure.credential.is_interactive() {
            return Ok(());
        }
        Err(ConfigError {
            file: self.path.clone(),
            line: self.azure.credential_kind_line,
            key: "azure.credential.kind".into(),
            message: format!(
                "\"{}\" signs in as a person and is for commands run by hand (check, plan, inventory, register); the daemon needs its own identity: client_secret, workload_identity or managed_identity",
                self.azure.credential.kind()
            ),
        })
    }
}

#[derive(Debug)]
pub struct Azure {
    pub tenant_id: String,
    pub cloud: Cloud,
    pub authority_host: Url,
    pub graph_endpoint: Url,
    pub resource_manager_endpoint: Url,
    pub ca_pem: Option<Vec<u8>>,
    /// Limit on one HTTP request to Azure, from connecting to the end of the answer.
    pub request_timeout: Duration,
    /// Graph's write quota for this application in this tenant: at most `.0` writes in any
    /// `.1`. The daemon paces its writes to it.
    pub graph_write_quota: (u32, Duration),
    pub credential: Credential,
    /// Where `azure.credential.kind` is set, for errors about it found after parsing.
    pub credential_kind_line: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAzure {
    tenant_id: S<String>,
    cloud: Option<S<String>>,
    authority_host: Option<S<String>>,
    graph_endpoint: Option<S<String>>,
    resource_manager_endpoint: Option<S<String>>,
    ca_file: Option<S<String>>,
    request_timeout: Option<S<String>>,
    graph_write_quota: Option<S<String>>,
    credential: S<RawCredential>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    kind: S<String>,
    client_id: Option<S<String>>,
    client_secret_file: Option<S<String>>,
    federated_token_file: Option<S<String>>,
}

/// Validates `[azure]`; the secret file a credential names is read here.
pub(super) fn parse(
    ctx: &Ctx<'_>,
    raw: &RawAzure,
    warnings: &mut Vec<String>,
) -> Result<Azure, ConfigError> {
    let tenant = raw.tenant_id.get_ref().trim().to_string();
    if tenant.is_empty()
        || !tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(ctx.err(
            &raw.tenant_id,
            "azure.tenant_id",
            format!("'{tenant}' is not a tenant id (a GUID or a domain name)"),
        ));
    }
    let cloud = match raw.cloud.as_ref().map(|c| (c, c.get_ref().as_str())) {
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
    let authority_host = match &raw.authority_host {
        Some(v) => https_url(ctx, v, "azure.authority_host")?,
        None => Url::parse(cloud.authority_host())
            .map_err(|e| ctx.err_nowhere("azure.authority_host", e.to_string()))?,
    };
    let graph_endpoint = match &raw.graph_endpoint {
        Some(v) => https_url(ctx, v, "azure.graph_endpoint")?,
        None => Url::parse(cloud.graph_endpoint())
            .map_err(|e| ctx.err_nowhere("azure.graph_endpoint", e.to_string()))?,
    };
    let resource_manager_endpoint = match &raw.resource_manager_endpoint {
        Some(v) => https_url(ctx, v, "azure.resource_manager_endpoint")?,
        None => Url::parse(cloud.resource_manager_endpoint())
            .map_err(|e| ctx.err_nowhere("azure.resource_manager_endpoint", e.to_string()))?,
    };
    let ca_pem = match &raw.ca_file {
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
    let request_timeout = match &raw.request_timeout {
        Some(v) => duration(ctx, v, "azure.request_timeout")?,
        None => Duration::from_secs(30),
    };
    let graph_write_quota = match &raw.graph_write_quota {
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
    let cred = raw.credential.get_ref();
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
                    &raw.credential,
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
                    &raw.credential,
                    "azure.credential.client_secret_file",
                    "is required for kind = \"client_secret\"",
                ));
            };
            Credential::ClientSecret {
                client_id: client_id(true)?.unwrap_or_default(),
                secret: read_secret_file(
                    ctx,
                    file,
                    "azure.credential.client_secret_file",
                    warnings,
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
                    _ => return Err(ctx.err(&raw.credential, "azure.credential.federated_token_file", "is required for kind = \"workload_identity\" when AZURE_FEDERATED_TOKEN_FILE is not set")),
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
        kind @ ("azure_cli" | "developer") => {
            // The signed-in account is the identity: no key of the daemon's own applies.
            refuse(&cred.client_id, "azure.credential.client_id", kind)?;
            refuse(
                &cred.client_secret_file,
                "azure.credential.client_secret_file",
                kind,
            )?;
            refuse(
                &cred.federated_token_file,
                "azure.credential.federated_token_file",
                kind,
            )?;
            if kind == "azure_cli" {
                Credential::AzureCli
            } else {
                Credential::Developer
            }
        }
        other => {
            return Err(ctx.err(
                &cred.kind,
                "azure.credential.kind",
                format!(
                    "'{other}' is not one of client_secret, workload_identity, managed_identity, azure_cli, developer"
                ),
            ));
        }
    };
    Ok(Azure {
        tenant_id: tenant,
        cloud,
        authority_host,
        graph_endpoint,
        resource_manager_endpoint,
        ca_pem,
        request_timeout,
        graph_write_quota,
        credential,
        credential_kind_line: Some(ctx.line_of(cred.kind.span().start)),
    })
}

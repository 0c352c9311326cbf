//! Key Vault secrets through the official `azure_security_keyvault_secrets` crate.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_security_keyvault_secrets::models::SecretAttributes;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures::TryStreamExt;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use super::identity::{ScopeGuard, client_options, error_chain, vault_client_options};
use super::{AzureHttp, Class, Error, class_of_status, parse_retry_after};
use crate::config::{Cloud, Config};

const SERVICE: &str = "keyvault";

/// One version of a vault secret, without its value.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    pub version: String,
    pub created: Option<OffsetDateTime>,
    /// The last change of its attributes or tags (an enable after a disable, among others).
    pub updated: Option<OffsetDateTime>,
    pub enabled: bool,
    pub expires: Option<OffsetDateTime>,
    pub tags: BTreeMap<String, String>,
    /// The first three characters of the value, as Entra's credential `hint` shows them: only
    /// from a read of the value (the latest version), never from a listing.
    pub value_hint: Option<String>,
}

/// What `GET /secrets/{name}` says about the version consumers read.
#[derive(Debug, Clone)]
pub enum Latest {
    Version(VersionInfo),
    /// The latest version is disabled: Key Vault refuses to return it (403 `SecretDisabled`).
    Disabled,
    /// No such secret (404): never created, deleted, or purged.
    Absent,
}

/// The version id at the end of a Key Vault secret id, lower-cased.
fn version_of(id: Option<&str>) -> String {
    id.and_then(|id| id.rsplit('/').next())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// A version's value, for checking that the published secret still signs in.
pub struct SecretValue {
    pub version: String,
    pub value: SecretString,
}

pub struct VaultClients {
    credential: Arc<dyn TokenCredential>,
    cloud: Cloud,
    options: azure_core::http::ClientOptions,
    shared: AzureHttp,
    clients: Mutex<HashMap<String, Vault>>,
}

/// A vault's SDK client and what its calls share.
type Vault = (Arc<SecretClient>, Arc<Challenge>);

/// Whether a vault's SDK client has learnt the vault's auth challenge. The SDK sends a client's
/// requests without a token until one of them has been answered with the challenge (401 and
/// `WWW-Authenticate`, which names the token's scope), and each such request costs a 401 and a
/// second send: 200 reconciles starting together made 162 of them at N = 200. So the first call
/// to a vault goes alone, and the others wait for its answer (at most [`FIRST_WAIT`], then they
/// go as they would without this), then go with a token.
#[derive(Default)]
struct Challenge {
    learnt: AtomicBool,
    first: Arc<tokio::sync::Mutex<()>>,
}

/// How long a call waits for the first call to its vault to be answered.
const FIRST_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A call's permission to go; the first call to a vault holds the others until it is answered.
struct Turn {
    challenge: Arc<Challenge>,
    _first: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Turn {
    async fn take(challenge: Arc<Challenge>) -> Turn {
        if challenge.learnt.load(Ordering::Acquire) {
            return Turn {
                challenge,
                _first: None,
            };
        }
        let first = tokio::time::timeout(FIRST_WAIT, challenge.first.clone().lock_owned())
            .await
            .ok()
            .filter(|_| !challenge.learnt.load(Ordering::Acquire));
        Turn {
            challenge,
            _first: first,
        }
    }

    /// Any answer from the vault (a success or an HTTP error) means the challenge was met and
    /// learnt; a call that got none (a refused connection) hands the turn to the next.
    fn done(self, answered: bool) {
        if answered {
            self.challenge.learnt.store(true, Ordering::Release);
        }
    }
}

/// Whether the vault answered (a success, or an HTTP error).
fn answered<T>(result: &Result<T, Error>) -> bool {
    result.as_ref().err().is_none_or(|e| e.status.is_some())
}

/// [`answered`] of an SDK call.
fn sdk_answered<T>(result: &azure_core::Result<T>) -> bool {
    result
        .as_ref()
        .err()
        .is_none_or(|e| matches!(e.kind(), ErrorKind::HttpResponse { .. }))
}

impl VaultClients {
    pub fn new(
        config: &Config,
        shared: &AzureHttp,
        credential: Arc<dyn TokenCredential>,
    ) -> VaultClients {
        let guard: Arc<dyn TokenCredential> = Arc::new(ScopeGuard {
            inner: credential,
            allowed: config.azure.cloud.vault_scope(),
        });
        VaultClients {
            credential: guard,
            cloud: config.azure.cloud,
            options: client_options(config, shared, shared.http.clone()),
            shared: shared.clone(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The vault's client, and the call's turn: hold it until the call is answered.
    async fn client(&self, vault: &url::Url) -> Result<(Arc<SecretClient>, Turn), Error> {
        let (client, challenge) = self.client_of(vault)?;
        Ok((client, Turn::take(challenge).await))
    }

    fn client_of(&self, vault: &url::Url) -> Result<Vault, Error> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((c, challenge)) = clients.get(vault.as_str()) {
            return Ok((c.clone(), challenge.clone()));
        }
        let key = vault.as_str().to_string();
        // The challenge's resource is checked for real vault hosts. Other hosts (the emulator,
        // private names) cannot match it, and the scope guard keeps their tokens to Key Vault's.
        let real_vault = verifies_challenge(self.cloud, vault);
        let options = SecretClientOptions {
            client_options: vault_client_options(&self.options, &self.shared, vault),
            verify_challenge_resource: Some(real_vault),
            ..Default::default()
        };
        let client = SecretClient::new(vault.as_str(), self.credential.clone(), Some(options))
            .map_err(|e| Error::new(SERVICE, "client", Class::Permanent, error_chain(&e)))?;
        let client = Arc::new(client);
        let challenge = Arc::new(Challenge::default());
        clients.insert(key, (client.clone(), challenge.clone()));
        Ok((client, challenge))
    }

    /// Every version of `name`, oldest first; `None` when the secret does not exist.
    pub async fn versions(
        &self,
        vault: &url::Url,
        name: &str,
    ) -> Result<Option<Vec<VersionInfo>>, Error> {
        let (client, turn) = self.client(vault).await?;
        let result = Self::list_versions(&client, name).await;
        turn.done(answered(&result));
        result
    }

    async fn list_versions(
        client: &SecretClient,
        name: &str,
    ) -> Result<Option<Vec<VersionInfo>>, Error> {
        let mut pager = client
            .list_secret_properties_versions(name, None)
            .map_err(|e| kv_error("list_versions", &e))?;
        let mut out = Vec::new();
        loop {
            match pager.try_next().await {
                Ok(Some(p)) => {
                    let version = version_of(p.id.as_deref());
                    let attrs = p.attributes.unwrap_or_default();
                    out.push(VersionInfo {
                        version,
                        created: attrs.created,
                        updated: attrs.updated,
                        enabled: attrs.enabled.unwrap_or(true),
                        expires: attrs.expires,
                        tags: p.tags.unwrap_or_default().into_iter().collect(),
                        value_hint: None,
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    let err = kv_error("list_versions", &e);
                    if err.status == Some(404) {
                        return Ok(None);
                    }
                    return Err(err);
                }
            }
        }
        out.sort_by_key(|v| v.created);
        Ok(Some(out))
    }

    /// The version consumers read: `GET /secrets/{name}` without a version, as Key Vault
    /// answers it (a sort of the listing by `created`, which has whole seconds, cannot tell two
    /// versions of one second apart). The value in the answer is dropped (zeroized) at once.
    pub async fn latest(&self, vault: &url::Url, name: &str) -> Result<Latest, Error> {
        let (client, turn) = self.client(vault).await?;
        let answer = client.get_secret(name, None).await;
        turn.done(sdk_answered(&answer));
        let response = match answer {
            Ok(r) => r,
            Err(e) => {
                let err = kv_error("get_secret", &e);
                return match err.status {
                    Some(404) => Ok(Latest::Absent),
                    Some(403) if err.code_is("SecretDisabled") => Ok(Latest::Disabled),
                    _ => Err(err),
                };
            }
        };
        let secret = response
            .into_model()
            .map_err(|e| malformed("get_secret", &e))?;
        let value = SecretString::from(secret.value.unwrap_or_default());
        // Entra shows every credential's first three characters as its `hint`: with it, the
        // planner can tell the credential whose value consumers read even when no tag names it.
        let value_hint = Some(value.expose_secret().chars().take(3).collect());
        drop(value);
        let attrs = secret.attributes.unwrap_or_default();
        Ok(Latest::Version(VersionInfo {
            version: version_of(secret.id.as_deref()),
            created: attrs.created,
            updated: attrs.updated,
            enabled: attrs.enabled.unwrap_or(true),
            expires: attrs.expires,
            tags: secret.tags.unwrap_or_default().into_iter().collect(),
            value_hint,
        }))
    }

    /// Whether `name` is soft-deleted (in the vault's deleted secrets, recoverable or purgeable).
    pub async fn is_deleted(&self, vault: &url::Url, name: &str) -> Result<bool, Error> {
        let (client, turn) = self.client(vault).await?;
        let answer = client.get_deleted_secret(name, None).await;
        turn.done(sdk_answered(&answer));
        match answer {
            Ok(_) => Ok(true),
            Err(e) => {
                let err = kv_error("get_deleted_secret", &e);
                if err.status == Some(404) {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// The value of the latest version (or of `version`).
    pub async fn get(
        &self,
        vault: &url::Url,
        name: &str,
        version: Option<&str>,
    ) -> Result<SecretValue, Error> {
        let (client, turn) = self.client(vault).await?;
        let options = azure_security_keyvault_secrets::models::SecretClientGetSecretOptions {
            secret_version: version.map(str::to_string),
            ..Default::default()
        };
        let answer = client
            .get_secret(name, Some(options))
            .await
            .map_err(|e| kv_error("get_secret", &e));
        turn.done(answered(&answer));
        let response = answer?;
        // Parsed from the raw answer straight into a zeroizing type, and the answer overwritten:
        // the SDK's model would leave the value behind in a plain String.
        let body = bytes::Bytes::from(response.into_body());
        let parsed = serde_json::from_slice::<SecretAnswer>(&body);
        super::wipe(body);
        let secret = parsed.map_err(|e| {
            Error::new(
                SERVICE,
                "get_secret",
                Class::Transient { retry_after: None },
                malformed_json(&e),
            )
        })?;
        let version = version_of(secret.id.as_deref());
        let value = secret.value.unwrap_or_else(|| SecretString::from(""));
        Ok(SecretValue { version, value })
    }

    /// Publishes a new version with `exp` and tags; returns its version id.
    pub async fn set(
        &self,
        vault: &url::Url,
        name: &str,
        value: &SecretString,
        expires: OffsetDateTime,
        tags: BTreeMap<String, String>,
    ) -> Result<String, Error> {
        let (client, turn) = self.client(vault).await?;
        let attributes = SecretAttributes {
            enabled: Some(true),
            expires: Some(expires),
            ..Default::default()
        };
        // The SDK's `SetSecretParameters`, but serialized here: into one zeroizing buffer of
        // its final size, borrowing the value, so that no plain copy of it is left behind.
        let parameters = SetBody {
            attributes: &attributes,
            tags: &tags,
            value: value.expose_secret(),
        };
        let content = super::secret_json(&parameters)
            .map_err(|e| Error::new(SERVICE, "set_secret", Class::Permanent, malformed_json(&e)))?;
        let answer = client
            .set_secret(name, super::secret_body(content).into(), None)
            .await
            .map_err(|e| {
                let mut err = kv_error("set_secret", &e);
                // A write that got no answer, or a 500/502/504, may have been applied: every
                // write adds a version, so the caller reads the history before writing again. A
                // 503 is Key Vault refusing the request (busy or throttled): it was not applied.
                if err.status.is_none_or(|s| matches!(s, 500 | 502 | 504))
                    && !err.message.contains(super::fence::NOT_LEADER)
                {
                    err.class = Class::OutcomeUnknown;
                }
                err
            });
        turn.done(answered(&answer));
        let response = answer?;
        // The answer echoes the value: take only the id, and overwrite the answer.
        let body = bytes::Bytes::from(response.into_body());
        let parsed = serde_json::from_slice::<SecretAnswer>(&body);
        super::wipe(body);
        let secret = parsed.map_err(|_| {
            Error::new(
                SERVICE,
                "set_secret",
                Class::OutcomeUnknown,
                "the answer to set_secret could not be read",
            )
        })?;
        Ok(version_of(secret.id.as_deref()))
    }
}

/// The body of a set request (the SDK's `SetSecretParameters`, with the value borrowed).
#[derive(serde::Serialize)]
struct SetBody<'a> {
    attributes: &'a SecretAttributes,
    tags: &'a BTreeMap<String, String>,
    value: &'a str,
}

/// What the daemon reads of a secret bundle; the value straight into a zeroizing type.
#[derive(serde::Deserialize)]
struct SecretAnswer {
    id: Option<String>,
    value: Option<SecretString>,
}

/// Where a JSON document was malformed, without quoting any of it (it may hold a secret).
fn malformed_json(e: &serde_json::Error) -> String {
    format!(
        "malformed JSON ({:?} at line {} column {})",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// Whether the auth challenge's resource is checked for this vault: for the cloud's real vault
/// hosts, yes; for any other host (the emulator, private names) it cannot match, and the scope
/// guard keeps the token to Key Vault's scope instead.
pub fn verifies_challenge(cloud: Cloud, vault: &url::Url) -> bool {
    vault
        .host_str()
        .is_some_and(|h| h.to_ascii_lowercase().ends_with(cloud.vault_suffix()))
}

/// An answer that could not be read: read again.
fn malformed(operation: &'static str, e: &azure_core::Error) -> Error {
    Error::new(
        SERVICE,
        operation,
        Class::Transient { retry_after: None },
        format!("malformed answer: {}", error_chain(e)),
    )
}

/// Classifies an SDK error by status and the service's (inner) error code. Only the code and
/// message of the error body are read, never the rest of a raw response.
fn kv_error(operation: &'static str, e: &azure_core::Error) -> Error {
    match e.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let status = u16::from(*status);
            let (inner, message) = raw_response
                .as_ref()
                .map(|r| error_body(r.body()))
                .unwrap_or_default();
            let code = inner.or_else(|| error_code.clone());
            let retry_after = raw_response.as_ref().and_then(|r| {
                r.headers()
                    .get_optional_str(&azure_core::http::headers::HeaderName::from_static(
                        "retry-after",
                    ))
                    .and_then(parse_retry_after)
            });
            let class = match status {
                // A refused token is refreshed on the next attempt.
                401 => Class::Transient { retry_after: None },
                _ => class_of_status(status, code.as_deref(), retry_after),
            };
            Error {
                service: SERVICE,
                operation,
                status: Some(status),
                code,
                message,
                class,
            }
        }
        ErrorKind::Io | ErrorKind::Connection | ErrorKind::DataConversion => Error::new(
            SERVICE,
            operation,
            Class::Transient { retry_after: None },
            error_chain(e),
        ),
        _ => {
            let text = error_chain(e);
            let class = if super::identity::transport_failure(e) {
                Class::Transient { retry_after: None }
            } else {
                Class::Permanent
            };
            Error::new(SERVICE, operation, class, text)
        }
    }
}

/// `(innermost error code, message)` of a Key Vault error body.
pub fn error_body(body: &[u8]) -> (Option<String>, String) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, String::new());
    };
    let mut e = &v["error"];
    let message = super::clip(e["message"].as_str().unwrap_or_default(), 400);
    let mut code = e["code"].as_str().map(|c| super::clip(c, 100));
    // Inner errors nest; a hostile body cannot make this loop long (JSON depth is bounded by
    // serde_json's recursion limit).
    while e["innererror"].is_object() {
        e = &e["innererror"];
        if let Some(c) = e["code"].as_str() {
            code = Some(super::clip(c, 100));
        }
    }
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_verified_for_real_vault_hosts_only() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(verifies_challenge(
            Cloud::Public,
            &url("https://contoso-kv.vault.azure.net")
        ));
        assert!(verifies_challenge(
            Cloud::Public,
            &url("https://Contoso-KV.Vault.Azure.Net/")
        ));
        assert!(verifies_challenge(
            Cloud::UsGov,
            &url("https://kv.vault.usgovcloudapi.net")
        ));
        assert!(!verifies_challenge(
            Cloud::Public,
            &url("https://kv.vault.usgovcloudapi.net")
        ));
        assert!(!verifies_challenge(
            Cloud::Public,
            &url("https://127.0.0.1:8710")
        ));
        assert!(!verifies_challenge(
            Cloud::Public,
            &url("https://vault.azure.net.evil.example")
        ));
        assert!(!verifies_challenge(
            Cloud::Public,
            &url("https://kv.internal.contoso.com")
        ));
    }

    #[test]
    fn the_set_body_is_what_the_sdk_would_send() {
        let attributes = SecretAttributes {
            enabled: Some(true),
            expires: Some(time::macros::datetime!(2030-01-02 03:04:05 UTC)),
            ..Default::default()
        };
        let tags = BTreeMap::from([("key-id".to_string(), "k".to_string())]);
        let ours = serde_json::to_value(SetBody {
            attributes: &attributes,
            tags: &tags,
            value: "s3cret~",
        })
        .unwrap();
        let sdk = serde_json::to_value(
            azure_security_keyvault_secrets::models::SetSecretParameters {
                value: Some("s3cret~".into()),
                tags: Some(tags.clone().into_iter().collect()),
                secret_attributes: Some(attributes.clone()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(ours, sdk);
    }

    #[test]
    fn inner_error_codes_win_and_texts_are_bounded() {
        let body = br#"{"error":{"code":"Conflict","message":"m","innererror":{"code":"ObjectIsDeletedButRecoverable"}}}"#;
        assert_eq!(
            error_body(body),
            (Some("ObjectIsDeletedButRecoverable".into()), "m".into())
        );
        assert_eq!(error_body(b"not json"), (None, String::new()));
    }
}

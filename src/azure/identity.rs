//! How the daemon signs in: an `azure_identity` credential chosen by the config, behind a
//! transport that counts every request, and the guard that keeps Key Vault tokens to the
//! cloud's Key Vault scope.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::http::{
    AsyncRawResponse, ClientOptions, HttpClient, Request, RetryOptions, Transport,
};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, DeveloperToolsCredential,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use secrecy::ExposeSecret;

use super::connections::Pool;
use super::{AzureHttp, Class, Error};
use crate::config::{Config, Credential};

/// The transport of every SDK client: our reqwest client, with each request timed and counted
/// and Azure's `Date` header fed to the skew check.
#[derive(Debug)]
pub struct MeteredTransport {
    http: reqwest::Client,
    shared: AzureHttpRef,
    /// A vault client's: the one origin its requests may go to. The SDK's pager follows a
    /// listing's `nextLink` wherever it points, with the vault's token on it; the token goes
    /// nowhere else, whatever an answer says.
    only: Option<url::Origin>,
}

impl MeteredTransport {
    /// Requests whose body or answer holds a secret value go over [`AzureHttp::secret_http`].
    fn client_for(&self, operation: &str) -> (&reqwest::Client, Pool) {
        match operation {
            "set_secret" | "get_secret" => (&self.shared.0.secret_http, Pool::Secret),
            _ => (&self.http, Pool::Main),
        }
    }
}

struct AzureHttpRef(AzureHttp);

impl std::fmt::Debug for AzureHttpRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AzureHttp")
    }
}

/// Names an SDK request for the metrics.
fn classify(request: &Request) -> (&'static str, &'static str) {
    let path = request.url().path();
    let method = request.method();
    if path.ends_with("/oauth2/v2.0/token") {
        return ("token", "client_credentials");
    }
    if path.contains("/msi/token") || path.contains("/metadata/identity/") {
        return ("token", "managed_identity");
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    use azure_core::http::Method;
    let op = match (method, parts.as_slice()) {
        (Method::Put, ["secrets", _]) => "set_secret",
        (Method::Get, ["secrets", _, "versions"]) => "list_versions",
        (Method::Get, ["secrets"]) | (Method::Get, ["secrets", ""]) => "list_secrets",
        (Method::Get, ["secrets", ..]) => "get_secret",
        (Method::Patch, ["secrets", ..]) => "update_secret",
        (Method::Delete, ["secrets", _]) => "delete_secret",
        _ => "other",
    };
    ("keyvault", op)
}

#[async_trait]
impl HttpClient for MeteredTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let (service, operation) = classify(request);
        if let Some(only) = &self.only
            && request.url().origin() != *only
        {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                format!(
                    "the request's URL points away from the vault ({}, not {}): the daemon's token goes nowhere else",
                    request.url().origin().ascii_serialization(),
                    only.ascii_serialization()
                ),
            ));
        }
        // Key Vault's one write; the fence is checked as it leaves (crate::ha).
        let _write = if operation == "set_secret" {
            Some(
                self.shared
                    .0
                    .fence
                    .begin_write(service, operation)
                    .map_err(|e| {
                        azure_core::Error::with_message(
                            azure_core::error::ErrorKind::Connection,
                            e.to_string(),
                        )
                    })?,
            )
        } else {
            None
        };
        let (client, pool) = self.client_for(operation);
        let start = Instant::now();
        let result = match to_http(request) {
            Some(r) => match self.shared.0.send(pool, Some(client), r).await {
                Ok(answer) => {
                    self.shared
                        .0
                        .skew
                        .observe(answer.headers.get("date").and_then(|d| d.to_str().ok()));
                    Ok(from_http(answer))
                }
                Err(failure) => Err(azure_core::Error::with_message(
                    if failure.sent {
                        azure_core::error::ErrorKind::Io
                    } else {
                        azure_core::error::ErrorKind::Connection
                    },
                    failure.message,
                )),
            },
            // A streamed body (no Key Vault call the daemon makes sends one): the SDK's own
            // reqwest adapter.
            None => {
                let mut request = request.clone();
                request.insert_header("user-agent", self.shared.0.user_agent());
                client.execute_request(&request).await
            }
        };
        let status = match &result {
            Ok(r) => u16::from(r.status()).to_string(),
            Err(_) => "error".to_string(),
        };
        self.shared.0.metrics.azure_request(
            service,
            operation,
            &status,
            start.elapsed().as_secs_f64(),
        );
        result
    }
}

/// An SDK request as the daemon's transport takes it, without the SDK's `User-Agent` (the
/// daemon's replaces it); `None` for a streamed body.
fn to_http(request: &Request) -> Option<http::Request<bytes::Bytes>> {
    use azure_core::http::Method;
    let azure_core::http::Body::Bytes(body) = request.body() else {
        return None;
    };
    let method = match request.method() {
        Method::Delete => http::Method::DELETE,
        Method::Get => http::Method::GET,
        Method::Head => http::Method::HEAD,
        Method::Patch => http::Method::PATCH,
        Method::Post => http::Method::POST,
        Method::Put => http::Method::PUT,
        // A method added to the SDK later: its own adapter knows it.
        _ => return None,
    };
    let mut out = http::Request::builder()
        .method(method)
        .uri(request.url().as_str());
    for (name, value) in request.headers().iter() {
        if name.as_str().eq_ignore_ascii_case("user-agent") {
            continue;
        }
        let mut value = http::HeaderValue::from_str(value.as_str()).ok()?;
        if name.as_str().eq_ignore_ascii_case("authorization") {
            value.set_sensitive(true);
        }
        out = out.header(name.as_str(), value);
    }
    out.body(body.clone()).ok()
}

/// An answer as the SDK takes it.
fn from_http(answer: super::transport::Answer) -> AsyncRawResponse {
    use azure_core::http::headers::{HeaderValue, Headers};
    // Sized up front: collected from a filtering iterator the map grew three times an answer.
    let mut headers = std::collections::HashMap::with_capacity(answer.headers.len());
    for (name, value) in &answer.headers {
        if let Ok(value) = value.to_str() {
            headers.insert(header_name(name), HeaderValue::from(value.to_owned()));
        }
    }
    AsyncRawResponse::from_bytes(
        azure_core::http::StatusCode::from(answer.status),
        Headers::from(headers),
        answer.body,
    )
}

/// The SDK's name for an answer's header. The SDK's `From<String>` lowercases a copy of the
/// name (h2's names are lowercase already): two allocations a header, ten headers a Key Vault
/// answer. The names Key Vault and Entra send are borrowed from [`KNOWN_HEADERS`] instead.
fn header_name(name: &http::HeaderName) -> azure_core::http::headers::HeaderName {
    match KNOWN_HEADERS
        .iter()
        .find(|known| known.as_str() == name.as_str())
    {
        Some(known) => known.clone(),
        None => azure_core::http::headers::HeaderName::from(name.as_str().to_owned()),
    }
}

/// Built at compile time (a name with an uppercase letter fails the build), once.
static KNOWN_HEADERS: [azure_core::http::headers::HeaderName; 22] = {
    use azure_core::http::headers::HeaderName;
    [
        HeaderName::from_static("cache-control"),
        HeaderName::from_static("client-request-id"),
        HeaderName::from_static("content-length"),
        HeaderName::from_static("content-type"),
        HeaderName::from_static("date"),
        HeaderName::from_static("expires"),
        HeaderName::from_static("pragma"),
        HeaderName::from_static("request-id"),
        HeaderName::from_static("retry-after"),
        HeaderName::from_static("strict-transport-security"),
        HeaderName::from_static("www-authenticate"),
        HeaderName::from_static("x-content-type-options"),
        HeaderName::from_static("x-ms-client-request-id"),
        HeaderName::from_static("x-ms-error-code"),
        HeaderName::from_static("x-ms-ests-server"),
        HeaderName::from_static("x-ms-keyvault-network-info"),
        HeaderName::from_static("x-ms-keyvault-rbac-assignment-id"),
        HeaderName::from_static("x-ms-keyvault-rbac-cache"),
        HeaderName::from_static("x-ms-keyvault-region"),
        HeaderName::from_static("x-ms-keyvault-service-version"),
        HeaderName::from_static("x-ms-request-id"),
        HeaderName::from_static("x-ms-srs"),
    ]
};

/// Client options for every SDK client: our transport, no SDK retries (our retry layer owns
/// pacing), and the configured authority host.
pub fn client_options(config: &Config, shared: &AzureHttp, http: reqwest::Client) -> ClientOptions {
    let transport = MeteredTransport {
        http,
        shared: AzureHttpRef(shared.clone()),
        only: None,
    };
    let mut custom = azure_core::cloud::CustomConfiguration::default();
    custom.authority_host = config
        .azure
        .authority_host
        .as_str()
        .trim_end_matches('/')
        .to_string();
    ClientOptions {
        transport: Some(Transport::new(Arc::new(transport))),
        retry: RetryOptions::none(),
        cloud: Some(Arc::new(custom.into())),
        ..Default::default()
    }
}

/// `options` (made by [`client_options`]) for a vault's client: its transport is replaced by
/// one over `shared.http` whose requests go to `vault`'s origin only.
pub fn vault_client_options(
    options: &ClientOptions,
    shared: &AzureHttp,
    vault: &url::Url,
) -> ClientOptions {
    let mut options = options.clone();
    options.transport = Some(Transport::new(Arc::new(MeteredTransport {
        http: shared.http.clone(),
        shared: AzureHttpRef(shared.clone()),
        only: Some(vault.origin()),
    })));
    options
}

/// The daemon's own credential, as the config chooses it.
pub fn credential(config: &Config, shared: &AzureHttp) -> anyhow::Result<Arc<dyn TokenCredential>> {
    let tenant = config.azure.tenant_id.clone();
    Ok(match &config.azure.credential {
        Credential::ClientSecret { client_id, secret } => {
            let options = ClientSecretCredentialOptions {
                client_options: client_options(config, shared, shared.http.clone()),
            };
            ClientSecretCredential::new(
                &tenant,
                client_id.clone(),
                secret.expose_secret().to_string().into(),
                Some(options),
            )?
        }
        Credential::WorkloadIdentity {
            client_id,
            token_file,
        } => {
            let options = WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: client_options(config, shared, shared.http.clone()),
                },
                client_id: Some(client_id.clone()),
                tenant_id: Some(tenant),
                token_file_path: Some(token_file.clone()),
            };
            WorkloadIdentityCredential::new(Some(options))?
        }
        Credential::ManagedIdentity { client_id } => {
            // Managed identity endpoints are local: never through a proxy.
            let direct = super::http_client_with(&shared.tls, config.azure.request_timeout, false)?;
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                client_options: client_options(config, shared, direct),
            };
            ManagedIdentityCredential::new(Some(options))?
        }
        // The tools run as child processes (`az account get-access-token`) and talk to Entra
        // themselves: our transport, CA and proxy settings do not apply to them.
        Credential::AzureCli => AzureCliCredential::new(Some(AzureCliCredentialOptions {
            tenant_id: Some(tenant),
            ..Default::default()
        }))?,
        Credential::Developer => DeveloperToolsCredential::new(None)?,
    })
}

/// Gets a token for `scope`, as an [`Error`] of service `token` when it fails.
pub async fn token(credential: &dyn TokenCredential, scope: &str) -> Result<String, Error> {
    match credential.get_token(&[scope], None).await {
        Ok(t) => Ok(t.token.secret().to_string()),
        Err(e) => Err(token_error(&e)),
    }
}

fn token_error(e: &azure_core::Error) -> Error {
    let text = error_chain(e);
    // Connection problems heal; a credential Entra refuses does not heal by retrying soon,
    // but the backoff of the reconcile that needed it retries later anyway.
    let class = match e.kind() {
        _ if transport_failure(e) => Class::Transient { retry_after: None },
        _ if text.contains("AADSTS90024")
            || text.contains("AADSTS90033")
            || text.contains("temporarily_unavailable") =>
        {
            Class::Transient { retry_after: None }
        }
        _ => Class::Permanent,
    };
    let code = [
        "AADSTS7000215",
        "AADSTS7000222",
        "AADSTS700016",
        "AADSTS7000112",
        "AADSTS90002",
        "AADSTS700211",
        "AADSTS700212",
        "AADSTS700213",
    ]
    .into_iter()
    .find(|c| text.contains(c))
    .map(str::to_string);
    Error {
        service: "token",
        operation: "acquire",
        status: e.http_status().map(u16::from),
        code,
        message: text,
        class,
    }
}

/// Whether anywhere in the error's chain the transport failed (refused, reset, timed out) or the
/// answer could not be read: the credential wraps these in an authentication error, but they
/// heal by retrying.
pub fn transport_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(az) = err.downcast_ref::<azure_core::Error>()
            && matches!(
                az.kind(),
                azure_core::error::ErrorKind::Io
                    | azure_core::error::ErrorKind::Connection
                    | azure_core::error::ErrorKind::DataConversion
            )
        {
            return true;
        }
        if err.downcast_ref::<reqwest::Error>().is_some()
            || err.downcast_ref::<std::io::Error>().is_some()
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The SDK's top-level error text is often generic; the useful part is in the source chain.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p == &t) {
            parts.push(t);
        }
        cur = s.source();
    }
    // One line: errors end up as the one-line reason on stderr and in single log fields.
    super::clip(&parts.join(": "), 600)
}

/// Passes only one scope through: the cloud's Key Vault scope for the Key Vault clients (the
/// SDK takes the scope from the vault's auth challenge, and a mistyped or hostile vault host
/// must not be able to get a token for Graph, or anything else, out of the daemon), and the
/// storage scope for the lease client (`azure::blob`).
#[derive(Debug)]
pub struct ScopeGuard {
    pub inner: Arc<dyn TokenCredential>,
    pub allowed: &'static str,
}

#[async_trait]
impl TokenCredential for ScopeGuard {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let allowed = self.allowed.trim_end_matches("/.default");
        let ok = !scopes.is_empty()
            && scopes.iter().all(|s| {
                let s = s.trim_end_matches("/.default").trim_end_matches('/');
                s.eq_ignore_ascii_case(allowed)
            });
        if !ok {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                format!(
                    "refused to request a token for {scopes:?}: only {} may be asked for here",
                    self.allowed
                ),
            ));
        }
        self.inner.get_token(&[self.allowed], options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_reaches_the_sdk_with_every_header_by_its_name() {
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            (
                "www-authenticate",
                "Bearer authorization=\"https://login.example/t\"",
            ),
            ("x-ms-request-id", "r-1"),
            ("retry-after", "7"),
            ("x-some-new-header", "kept"),
            ("content-type", "application/json; charset=utf-8"),
        ] {
            headers.insert(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_static(value),
            );
        }
        // A value that is not visible ASCII cannot be an SDK header (`to_str`); it is left
        // out, not an error, whether its name is a known one or not.
        headers.insert(
            http::HeaderName::from_static("x-binary"),
            http::HeaderValue::from_bytes(b"\xff").unwrap(),
        );
        headers.insert(
            http::HeaderName::from_static("x-ms-error-code"),
            http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        // Two challenges: the SDK's map keeps one name once, the last value (as before the
        // names were borrowed).
        headers.append(
            http::HeaderName::from_static("www-authenticate"),
            http::HeaderValue::from_static("Bearer second"),
        );
        let answer = super::super::transport::Answer {
            status: 401,
            headers,
            body: bytes::Bytes::from_static(b"{}"),
        };
        let response = from_http(answer);
        let got = response.headers();
        assert_eq!(
            got.get_optional_str(&azure_core::http::headers::WWW_AUTHENTICATE),
            Some("Bearer second")
        );
        for (name, value) in [
            ("x-ms-request-id", "r-1"),
            ("retry-after", "7"),
            ("x-some-new-header", "kept"),
            ("content-type", "application/json; charset=utf-8"),
        ] {
            assert_eq!(
                got.get_optional_str(&azure_core::http::headers::HeaderName::from_static(name)),
                Some(value),
                "{name}"
            );
        }
        assert_eq!(got.iter().count(), 5);
        assert_eq!(u16::from(response.status()), 401);
    }

    #[test]
    fn the_borrowed_header_names_are_valid_http_names_and_each_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for known in &KNOWN_HEADERS {
            let parsed = http::HeaderName::from_bytes(known.as_str().as_bytes())
                .unwrap_or_else(|e| panic!("{}: {e}", known.as_str()));
            assert_eq!(parsed.as_str(), known.as_str());
            assert!(seen.insert(known.as_str()), "{} twice", known.as_str());
            assert_eq!(header_name(&parsed).as_str(), known.as_str());
        }
    }

    #[derive(Debug)]
    struct Recording(std::sync::Mutex<Vec<String>>);

    #[async_trait]
    impl TokenCredential for Recording {
        async fn get_token(
            &self,
            scopes: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            self.0
                .lock()
                .unwrap()
                .extend(scopes.iter().map(|s| s.to_string()));
            Ok(AccessToken::new(
                "t",
                crate::clock::now() + time::Duration::hours(1),
            ))
        }
    }

    #[tokio::test]
    async fn a_vault_challenge_cannot_obtain_a_token_for_anything_but_key_vault() {
        let inner = Arc::new(Recording(Default::default()));
        let guard = ScopeGuard {
            inner: inner.clone(),
            allowed: "https://vault.azure.net/.default",
        };
        // What a real vault's challenge yields, with and without /.default or a trailing slash.
        for ok in [
            "https://vault.azure.net/.default",
            "https://vault.azure.net",
            "https://VAULT.azure.net/",
        ] {
            assert!(guard.get_token(&[ok], None).await.is_ok(), "{ok}");
        }
        // A hostile or mistyped vault naming another resource.
        for bad in [
            "https://graph.microsoft.com/.default",
            "https://management.azure.com/.default",
            "https://vault.azure.net.evil.example/.default",
        ] {
            let err = guard.get_token(&[bad], None).await.unwrap_err();
            assert!(error_chain(&err).contains("refused"), "{bad}");
        }
        assert!(guard.get_token(&[], None).await.is_err());
        // Only ever the configured scope went to the real credential.
        assert!(
            inner
                .0
                .lock()
                .unwrap()
                .iter()
                .all(|s| s == "https://vault.azure.net/.default")
        );
    }

    #[tokio::test]
    async fn the_lease_client_cannot_obtain_a_token_for_anything_but_storage() {
        let inner = Arc::new(Recording(Default::default()));
        let guard = ScopeGuard {
            inner: inner.clone(),
            allowed: crate::azure::blob::STORAGE_SCOPE,
        };
        assert!(
            guard
                .get_token(&["https://storage.azure.com/.default"], None)
                .await
                .is_ok()
        );
        for bad in [
            "https://graph.microsoft.com/.default",
            "https://vault.azure.net/.default",
            "https://storage.azure.com.evil.example/.default",
        ] {
            assert!(guard.get_token(&[bad], None).await.is_err(), "{bad}");
        }
        assert!(
            inner
                .0
                .lock()
                .unwrap()
                .iter()
                .all(|s| s == "https://storage.azure.com/.default")
        );
    }

    #[test]
    fn transport_failures_are_found_anywhere_in_the_chain() {
        let io = azure_core::Error::new(azure_core::error::ErrorKind::Io, "reset");
        assert!(transport_failure(&io));
        let other = azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            "AADSTS7000215",
        );
        assert!(!transport_failure(&other));
    }
}

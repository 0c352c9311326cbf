//! The leader lease: a thin client for the Blob Storage calls high availability needs (create
//! the container and the blob, acquire, renew, release and break a lease, and name the leader
//! in the blob's metadata), signed with Shared Key or authorized with the daemon's own
//! credential. `docs/decisions.md` ("High availability") says why this is not the
//! `azure_storage_blob` crate.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

use super::{AzureHttp, Class, Error, Timer, class_of_status};

const SERVICE: &str = "storage";

/// The REST version every request names. Leases and `If-None-Match` on Put Blob are older than
/// it; Azurite accepts it.
pub const API_VERSION: &str = "2021-12-02";

/// The scope of storage tokens, for every storage account in every cloud (the audience Azure
/// Storage documents for "any storage account"; the SDKs use it in the national clouds too).
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// How requests are authorized.
pub enum Auth {
    /// Shared Key: the account name and its (decoded) key, from a connection string.
    SharedKey {
        account: String,
        key: SecretBox<Vec<u8>>,
    },
    /// A bearer token from the daemon's credential, only ever for [`STORAGE_SCOPE`].
    Token(Arc<dyn TokenCredential>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::SharedKey { account, .. } => f
                .debug_struct("SharedKey")
                .field("account", account)
                .finish_non_exhaustive(),
            Auth::Token(_) => f.write_str("Token"),
        }
    }
}

/// The account name and key of a storage connection string
/// (`AccountName=...;AccountKey=...;...`). Errors never quote the text.
pub fn parse_connection_string(text: &str) -> Result<(String, SecretBox<Vec<u8>>), String> {
    let mut account = None;
    // The key's text and its decoded bytes are wiped when dropped, even on an error.
    let mut key: Option<&str> = None;
    for part in text.trim().split(';') {
        let Some((name, value)) = part.split_once('=') else {
            continue;
        };
        match name.trim() {
            "AccountName" => account = Some(value.trim().to_string()),
            // A base64 value may end in '=': split_once kept them in `value`.
            "AccountKey" => key = Some(value.trim()),
            _ => {}
        }
    }
    let account = account
        .filter(|a| !a.is_empty())
        .ok_or("the connection string has no AccountName")?;
    let key = key
        .filter(|k| !k.is_empty())
        .ok_or("the connection string has no AccountKey")?;
    let mut decoded = zeroize::Zeroizing::new(Vec::with_capacity(key.len()));
    base64::engine::general_purpose::STANDARD
        .decode_vec(key.as_bytes(), &mut decoded)
        .map_err(|_| "the connection string's AccountKey is not base64".to_string())?;
    Ok((
        account,
        SecretBox::new(Box::new(std::mem::take(&mut *decoded))),
    ))
}

/// What an acquire found.
#[derive(Debug, Clone, PartialEq)]
pub enum Acquired {
    /// This replica holds the lease now.
    Yes,
    /// Another holder has it.
    Held,
}

/// Who holds the lease, as the blob says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Holder {
    /// Whether the blob is leased at all.
    pub leased: bool,
    /// The replica the last leader wrote into the metadata.
    pub replica: Option<String>,
}

pub struct LeaseClient {
    shared: AzureHttp,
    auth: Auth,
    /// `https://ACCOUNT.blob.core.windows.net` or, path style, `http://127.0.0.1:P/ACCOUNT`.
    account_url: url::Url,
    container: String,
    blob: String,
    user_agent: String,
}

impl LeaseClient {
    pub fn new(
        shared: AzureHttp,
        auth: Auth,
        account_url: &url::Url,
        container: &str,
        blob: &str,
        replica: &str,
    ) -> LeaseClient {
        let mut account_url = account_url.clone();
        let path = account_url.path().trim_end_matches('/').to_string();
        account_url.set_path(&path);
        LeaseClient {
            shared,
            auth,
            account_url,
            container: container.to_string(),
            blob: blob.to_string(),
            user_agent: super::user_agent(Some(replica)),
        }
    }

    fn url(&self, with_blob: bool) -> url::Url {
        let mut url = self.account_url.clone();
        let path = if with_blob {
            format!("{}/{}/{}", url.path(), self.container, self.blob)
        } else {
            format!("{}/{}", url.path(), self.container)
        };
        url.set_path(&path);
        url
    }

    /// Creates the container and the (empty) blob unless they exist.
    pub async fn ensure(&self) -> Result<(), Error> {
        // A role given on the container itself does not allow creating it: go on to the blob,
        // and report the container's error only if the blob says the container is missing.
        let container = match self
            .call(
                "create_container",
                reqwest::Method::PUT,
                false,
                &[("restype", "container")],
                &[],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status == Some(409) => Ok(()),
            Err(e) => Err(e),
        };
        match self
            .call(
                "put_blob",
                reqwest::Method::PUT,
                true,
                &[],
                &[("x-ms-blob-type", "BlockBlob"), ("if-none-match", "*")],
            )
            .await
        {
            Ok(_) => Ok(()),
            // It exists (and may be leased): that is all this wanted.
            Err(e) if matches!(e.status, Some(409) | Some(412)) => Ok(()),
            Err(e) if e.status == Some(404) => container.and(Err(e)),
            Err(e) => Err(e),
        }
    }

    /// Acquires the lease for `duration` with `lease_id`.
    pub async fn acquire(&self, lease_id: &str, duration: Duration) -> Result<Acquired, Error> {
        let seconds = duration.as_secs().to_string();
        match self
            .call(
                "acquire_lease",
                reqwest::Method::PUT,
                true,
                &[("comp", "lease")],
                &[
                    ("x-ms-lease-action", "acquire"),
                    ("x-ms-lease-duration", &seconds),
                    ("x-ms-proposed-lease-id", lease_id),
                ],
            )
            .await
        {
            Ok(_) => Ok(Acquired::Yes),
            Err(e) if e.status == Some(409) => Ok(Acquired::Held),
            Err(e) => Err(e),
        }
    }

    /// Renews the lease. A refusal (409: broken, taken, released) means it is lost.
    pub async fn renew(&self, lease_id: &str) -> Result<(), Error> {
        self.lease_action("renew_lease", "renew", lease_id).await
    }

    pub async fn release(&self, lease_id: &str) -> Result<(), Error> {
        self.lease_action("release_lease", "release", lease_id)
            .await
    }

    /// Breaks whoever's lease at once: an operator's last resort when a leader is gone and its
    /// lease must not be waited out (and the tests' way to take it away).
    pub async fn break_lease(&self) -> Result<(), Error> {
        self.call(
            "break_lease",
            reqwest::Method::PUT,
            true,
            &[("comp", "lease")],
            &[
                ("x-ms-lease-action", "break"),
                ("x-ms-lease-break-period", "0"),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn lease_action(
        &self,
        operation: &'static str,
        action: &str,
        lease_id: &str,
    ) -> Result<(), Error> {
        self.call(
            operation,
            reqwest::Method::PUT,
            true,
            &[("comp", "lease")],
            &[("x-ms-lease-action", action), ("x-ms-lease-id", lease_id)],
        )
        .await
        .map(|_| ())
    }

    /// Writes this replica's name into the blob's metadata, so that followers can say who
    /// leads.
    pub async fn name_leader(&self, lease_id: &str, replica: &str) -> Result<(), Error> {
        self.call(
            "set_metadata",
            reqwest::Method::PUT,
            true,
            &[("comp", "metadata")],
            &[("x-ms-lease-id", lease_id), ("x-ms-meta-leader", replica)],
        )
        .await
        .map(|_| ())
    }

    /// Whether the blob is leased, and the leader its metadata names.
    pub async fn holder(&self) -> Result<Holder, Error> {
        let headers = self
            .call("get_properties", reqwest::Method::HEAD, true, &[], &[])
            .await?;
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Ok(Holder {
            leased: text("x-ms-lease-state") == Some("leased"),
            replica: text("x-ms-meta-leader").map(|r| super::clip(r, 64)),
        })
    }

    async fn call(
        &self,
        operation: &'static str,
        method: reqwest::Method,
        with_blob: bool,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Result<reqwest::header::HeaderMap, Error> {
        let mut url = self.url(with_blob);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let date = http_date(crate::clock::now());
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        all.push(("x-ms-date".into(), date));
        all.push(("x-ms-version".into(), API_VERSION.into()));
        let authorization = match &self.auth {
            Auth::SharedKey { account, key } => {
                let to_sign = string_to_sign(method.as_str(), account, &url, &all);
                let mut mac = Hmac::<Sha256>::new_from_slice(key.expose_secret())
                    .map_err(|_| Error::new(SERVICE, operation, Class::Permanent, "bad key"))?;
                mac.update(to_sign.as_bytes());
                let signature =
                    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
                format!("SharedKey {account}:{signature}")
            }
            Auth::Token(credential) => {
                let token = super::identity::token(credential.as_ref(), STORAGE_SCOPE).await?;
                format!("Bearer {token}")
            }
        };
        let mut request = self
            .shared
            .http
            .request(method, url)
            .header("authorization", authorization)
            .header("user-agent", &self.user_agent);
        for (k, v) in &all {
            request = request.header(k.as_str(), v.as_str());
        }
        if with_blob && operation == "put_blob" {
            request = request.header("content-length", "0");
        }
        let timer = Timer::start(&self.shared.metrics, SERVICE, operation);
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                timer.done("error");
                return Err(Error::new(
                    SERVICE,
                    operation,
                    Class::Transient { retry_after: None },
                    format!("request failed: {}", super::identity::error_chain(&e)),
                ));
            }
        };
        let status = response.status().as_u16();
        timer.done(&status.to_string());
        let retry_after = self.shared.observe(response.headers());
        let headers = response.headers().clone();
        if response.status().is_success() {
            return Ok(headers);
        }
        let code = headers
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(|c| super::clip(c, 100));
        let body = response.text().await.unwrap_or_default();
        let message = between(&body, "<Message>", "</Message>").unwrap_or_default();
        let class = match status {
            // A 409 on a lease is an answer (held, lost), not a concurrency conflict to retry.
            409 => Class::Permanent,
            _ => class_of_status(status, code.as_deref(), retry_after),
        };
        Err(Error {
            service: SERVICE,
            operation,
            status: Some(status),
            code,
            message: super::clip(message, 300),
            class,
        })
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(&text[start..end])
}

/// An HTTP date (`Tue, 01 Dec 2026 11:29:38 GMT`), as `x-ms-date` wants it.
fn http_date(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.format(&format).unwrap_or_default()
}

/// The Shared Key string to sign for the Blob service (every request here has no body but
/// Put Blob's empty one, so the standard headers are empty but `If-None-Match`).
fn string_to_sign(
    method: &str,
    account: &str,
    url: &url::Url,
    headers: &[(String, String)],
) -> String {
    let standard = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let mut ms: Vec<&(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-ms-"))
        .collect();
    ms.sort_by(|a, b| a.0.cmp(&b.0));
    let mut s = format!(
        "{method}\n\n\n\n\n\n\n\n\n{}\n\n\n",
        standard("if-none-match")
    );
    for (k, v) in ms {
        s.push_str(&format!("{k}:{}\n", v.trim()));
    }
    s.push_str(&format!("/{account}{}", url.path()));
    let mut query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect();
    query.sort();
    for (k, v) in query {
        s.push_str(&format!("\n{k}:{v}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_string_gives_the_account_and_its_decoded_key() {
        let (account, key) = parse_connection_string(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5Kz0=;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
        )
        .unwrap();
        assert_eq!(account, "devstoreaccount1");
        assert_eq!(key.expose_secret().as_slice(), b"key+=");
        for (text, why) in [
            ("AccountKey=a2V5", "no AccountName"),
            ("AccountName=a", "no AccountKey"),
            ("AccountName=a;AccountKey=not base64!", "not base64"),
        ] {
            let err = parse_connection_string(text).unwrap_err();
            assert!(err.contains(why), "{err}");
            assert!(!err.contains("a2V5"), "the key is never quoted: {err}");
        }
    }

    #[test]
    fn the_shared_key_string_to_sign_has_the_canonical_headers_and_resource() {
        let url = url::Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/secret-rotator/test.leader?comp=lease",
        )
        .unwrap();
        let headers = vec![
            ("x-ms-version".to_string(), API_VERSION.to_string()),
            ("x-ms-lease-action".to_string(), "renew".to_string()),
            (
                "x-ms-date".to_string(),
                "Tue, 01 Dec 2026 11:29:38 GMT".to_string(),
            ),
        ];
        assert_eq!(
            string_to_sign("PUT", "devstoreaccount1", &url, &headers),
            "PUT\n\n\n\n\n\n\n\n\n\n\n\n\
             x-ms-date:Tue, 01 Dec 2026 11:29:38 GMT\n\
             x-ms-lease-action:renew\n\
             x-ms-version:2021-12-02\n\
             /devstoreaccount1/devstoreaccount1/secret-rotator/test.leader\ncomp:lease"
        );
    }

    #[test]
    fn dates_are_http_dates_in_gmt() {
        let t = time::macros::datetime!(2026-12-01 11:29:38 +01:00);
        assert_eq!(http_date(t), "Tue, 01 Dec 2026 10:29:38 GMT");
    }
}

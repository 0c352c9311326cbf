//! Proves that a new secret signs in: a plain client-credentials token request with it, its
//! answer classified by the AADSTS code.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{Class, Error, Shared, Timer};

const SERVICE: &str = "token";

/// Why a verification attempt failed.
#[derive(Debug)]
pub enum VerifyFailure {
    /// AADSTS7000215 right after `addPassword`: not replicated yet. Keep trying.
    NotYetValid,
    /// The service could not answer; try again.
    Transient(Error),
    /// Will not heal by waiting (app disabled, no service principal, invalid scope,
    /// Conditional Access, an expired secret...).
    Rejected(Error),
}

#[derive(Deserialize)]
struct TokenError {
    error: Option<String>,
    #[serde(default)]
    error_codes: Vec<u64>,
}

pub struct EntraClient {
    shared: Shared,
    token_url: String,
}

impl EntraClient {
    pub fn new(shared: Shared, authority: &url::Url, tenant: &str) -> EntraClient {
        EntraClient {
            shared,
            token_url: format!(
                "{}/{tenant}/oauth2/v2.0/token",
                authority.as_str().trim_end_matches('/')
            ),
        }
    }

    /// One token request as `client_id` with `secret` for `scope`. The token itself is dropped.
    pub async fn verify(
        &self,
        client_id: &str,
        secret: &SecretString,
        scope: &str,
    ) -> Result<(), VerifyFailure> {
        let timer = Timer::start(&self.shared.metrics, SERVICE, "verify");
        let form = [
            ("client_id", client_id),
            ("client_secret", secret.expose_secret()),
            ("grant_type", "client_credentials"),
            ("scope", scope),
        ];
        let response = match self
            .shared
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                timer.done("error");
                return Err(VerifyFailure::Transient(Error::new(
                    SERVICE,
                    "verify",
                    Class::Transient { retry_after: None },
                    format!("token request failed: {}", super::identity::error_chain(&e)),
                )));
            }
        };
        let status = response.status().as_u16();
        timer.done(&status.to_string());
        let retry_after = self.shared.observe(response.headers());
        let body = response.bytes().await.unwrap_or_default();
        if status == 200 {
            // A 200 is only a success if it carries a token.
            return match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(v)
                    if v.get("access_token")
                        .and_then(|t| t.as_str())
                        .is_some_and(|t| !t.is_empty()) =>
                {
                    Ok(())
                }
                _ => Err(VerifyFailure::Transient(Error::new(
                    SERVICE,
                    "verify",
                    Class::Transient { retry_after: None },
                    "token answer without an access_token",
                ))),
            };
        }
        let parsed: Option<TokenError> = serde_json::from_slice(&body).ok();
        let code = parsed.as_ref().and_then(|p| p.error_codes.first().copied());
        let error_name = parsed
            .as_ref()
            .and_then(|p| p.error.clone())
            .unwrap_or_default();
        let err = |class| Error {
            service: SERVICE,
            operation: "verify",
            status: Some(status),
            code: code.map(|c| format!("AADSTS{c}")),
            message: error_name.clone(),
            class,
        };
        match (status, code) {
            (401, Some(7000215)) => Err(VerifyFailure::NotYetValid),
            (429 | 500 | 502 | 503 | 504, _) | (_, Some(90024 | 90033 | 90090)) => {
                Err(VerifyFailure::Transient(err(Class::Transient {
                    retry_after,
                })))
            }
            _ => Err(VerifyFailure::Rejected(err(Class::Permanent))),
        }
    }
}

//! Proves that a new secret signs in: a plain client-credentials token request with it, its
//! answer classified by the AADSTS code.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::connections::Pool;
use super::{AzureHttp, Class, Error, Timer};

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

#[derive(Deserialize)]
struct TokenAnswer<'a> {
    #[serde(borrow)]
    access_token: Option<std::borrow::Cow<'a, str>>,
}

/// An `application/x-www-form-urlencoded` body built in one allocation of its final size, so
/// that no copy of the secret is left behind by a growing buffer, and wiped when dropped.
fn token_form(pairs: &[(&str, &str)]) -> Zeroizing<Vec<u8>> {
    fn encoded(s: &str) -> url::form_urlencoded::ByteSerialize<'_> {
        url::form_urlencoded::byte_serialize(s.as_bytes())
    }
    let len: usize = pairs
        .iter()
        .map(|(k, v)| {
            encoded(k).map(str::len).sum::<usize>() + 1 + encoded(v).map(str::len).sum::<usize>()
        })
        .sum::<usize>()
        + pairs.len().saturating_sub(1);
    let mut body = Zeroizing::new(Vec::with_capacity(len));
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            body.push(b'&');
        }
        encoded(k).for_each(|p| body.extend_from_slice(p.as_bytes()));
        body.push(b'=');
        encoded(v).for_each(|p| body.extend_from_slice(p.as_bytes()));
    }
    debug_assert_eq!(body.len(), len);
    body
}

pub struct EntraClient {
    shared: AzureHttp,
    token_url: http::Uri,
}

impl EntraClient {
    pub fn new(shared: AzureHttp, authority: &url::Url, tenant: &str) -> EntraClient {
        let mut token_url = authority.clone();
        if let Ok(mut path) = token_url.path_segments_mut() {
            path.pop_if_empty()
                .extend([tenant, "oauth2", "v2.0", "token"]);
        }
        // A `url::Url` is always a valid URI; the fallback only keeps this infallible.
        let token_url = http::Uri::try_from(token_url.as_str()).unwrap_or_default();
        EntraClient { shared, token_url }
    }

    /// One token request as `client_id` with `secret` for `scope`. The token itself is dropped.
    pub async fn verify(
        &self,
        client_id: &str,
        secret: &SecretString,
        scope: &str,
    ) -> Result<(), VerifyFailure> {
        self.request(client_id, secret, scope, false)
            .await
            .map(drop)
    }

    /// One token request whose token is kept, for the one call to the API that `verify_url`
    /// names.
    pub async fn token(
        &self,
        client_id: &str,
        secret: &SecretString,
        scope: &str,
    ) -> Result<SecretString, VerifyFailure> {
        match self.request(client_id, secret, scope, true).await? {
            Some(t) => Ok(t),
            None => Err(VerifyFailure::Transient(Error::new(
                SERVICE,
                "verify",
                Class::Transient { retry_after: None },
                "token answer without an access_token",
            ))),
        }
    }

    async fn request(
        &self,
        client_id: &str,
        secret: &SecretString,
        scope: &str,
        keep: bool,
    ) -> Result<Option<SecretString>, VerifyFailure> {
        let timer = Timer::start(&self.shared.metrics, SERVICE, "verify");
        let body = token_form(&[
            ("client_id", client_id),
            ("client_secret", secret.expose_secret()),
            ("grant_type", "client_credentials"),
            ("scope", scope),
        ]);
        let request = http::Request::post(self.token_url.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(super::secret_body(body));
        let answer = match request {
            Ok(r) => self.shared.send(Pool::Secret, None, r).await,
            Err(e) => Err(super::transport::Failure {
                sent: false,
                message: e.to_string(),
            }),
        };
        let answer = match answer {
            Ok(a) => a,
            Err(failure) => {
                timer.done("error");
                return Err(VerifyFailure::Transient(Error::new(
                    SERVICE,
                    "verify",
                    Class::Transient { retry_after: None },
                    format!("token request failed: {}", failure.message),
                )));
            }
        };
        let status = answer.status;
        timer.done(&status.to_string());
        let retry_after = self.shared.observe(&answer.headers);
        let body = answer.body;
        if status == 200 {
            // A 200 is only a success if it carries a token. The token is a credential too:
            // it is only looked at, never copied, and its body is overwritten.
            let answer = serde_json::from_slice::<TokenAnswer>(&body).ok();
            let has_token = answer
                .as_ref()
                .is_some_and(|t| t.access_token.as_ref().is_some_and(|t| !t.is_empty()));
            let kept = match (keep, answer) {
                (
                    true,
                    Some(TokenAnswer {
                        access_token: Some(t),
                    }),
                ) => Some(SecretString::from(t.into_owned())),
                _ => None,
            };
            super::wipe(body);
            return if has_token {
                Ok(kept)
            } else {
                Err(VerifyFailure::Transient(Error::new(
                    SERVICE,
                    "verify",
                    Class::Transient { retry_after: None },
                    "token answer without an access_token",
                )))
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

/// What one call to a client's own API answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAnswer {
    Status(u16),
    /// No answer (connection, TLS, timeout), in words without the token.
    Unreachable(String),
}

impl EntraClient {
    /// One `GET url` with `token` as a client of the API would send it. Only the status is
    /// kept: the body is the API's data, not the daemon's.
    pub async fn api_get(&self, url: &url::Url, token: &SecretString) -> ApiAnswer {
        let timer = Timer::start(&self.shared.metrics, "api", "verify_url");
        let mut auth = Zeroizing::new(String::with_capacity(7 + token.expose_secret().len()));
        auth.push_str("Bearer ");
        auth.push_str(token.expose_secret());
        let header = match reqwest::header::HeaderValue::from_str(&auth) {
            Ok(mut h) => {
                h.set_sensitive(true);
                h
            }
            Err(_) => return ApiAnswer::Unreachable("the token is not a header value".into()),
        };
        // Through reqwest, which lets the answer go unread: the transport of the rotation's
        // own requests reads every answer whole.
        match self
            .shared
            .secret_http
            .get(url.clone())
            .header(reqwest::header::AUTHORIZATION, header)
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                timer.done(&status.to_string());
                drop(r);
                ApiAnswer::Status(status)
            }
            Err(e) => {
                timer.done("error");
                ApiAnswer::Unreachable(super::identity::error_chain(&e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_form_is_what_a_form_serializer_writes_in_a_buffer_of_its_final_size() {
        let pairs = [
            ("client_id", "0d6c3f6e-1111-2222-3333-444455556666"),
            ("client_secret", "aB3~Q~x.y_z-+/=&% \u{e9}"),
            ("grant_type", "client_credentials"),
            ("scope", "https://graph.microsoft.com/.default"),
        ];
        let body = token_form(&pairs);
        let expected = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        assert_eq!(String::from_utf8_lossy(&body), expected);
        assert_eq!(body.capacity(), body.len());
    }
}

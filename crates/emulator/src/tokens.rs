//! Access tokens the emulator issues, and their checks on the Graph and Key Vault side.
//!
//! Tokens are JWTs in Entra's v1 shape (`aud`, `iss`, `tid`, `appid`, `roles`, `exp`). They are
//! signed with a key private to this emulator run: clients never validate access tokens, only
//! the services do.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The Graph resource and its well-known application id.
pub const GRAPH_AUDIENCES: [&str; 2] = [
    "https://graph.microsoft.com",
    "00000003-0000-0000-c000-000000000000",
];
/// The Key Vault resource and its well-known application id.
pub const VAULT_AUDIENCES: [&str; 2] = [
    "https://vault.azure.net",
    "cfa8b339-82a2-471a-a3c9-0fc0be7a4093",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub appid: String,
    pub oid: String,
    pub sub: String,
    pub tid: String,
    #[serde(default)]
    pub roles: Vec<String>,
    pub ver: String,
}

pub fn mint(key: &[u8], claims: &Claims) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("JWT".into());
    // Encoding a serialisable struct with an HMAC key cannot fail.
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(key)).unwrap_or_default()
}

pub fn claims_for(
    tenant: &str,
    app_id: &str,
    object_id: &str,
    audience: &str,
    roles: Vec<String>,
    lifetime_secs: u64,
) -> Claims {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    Claims {
        aud: audience.to_string(),
        iss: format!("https://sts.windows.net/{tenant}/"),
        iat: now,
        nbf: now - 300,
        exp: now + lifetime_secs as i64,
        appid: app_id.to_string(),
        oid: object_id.to_string(),
        sub: object_id.to_string(),
        tid: tenant.to_string(),
        roles,
        ver: "1.0".into(),
    }
}

/// Why a presented token was refused, in the words the services use.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    Missing,
    Malformed,
    Expired,
    WrongAudience,
    WrongTenant,
}

/// Validates a `Authorization` header value for one of `audiences` in `tenant`.
pub fn check(
    key: &[u8],
    authorization: Option<&str>,
    audiences: &[&str],
    tenant: &str,
) -> Result<Claims, Rejection> {
    let raw = authorization.ok_or(Rejection::Missing)?;
    let token = raw
        .strip_prefix("Bearer ")
        .or_else(|| raw.strip_prefix("bearer "))
        .ok_or(Rejection::Malformed)?
        .trim();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(key), &validation)
        .map_err(|_| Rejection::Malformed)?;
    let claims = data.claims;
    if claims.exp <= OffsetDateTime::now_utc().unix_timestamp() {
        return Err(Rejection::Expired);
    }
    if !audiences
        .iter()
        .any(|a| a.eq_ignore_ascii_case(&claims.aud))
    {
        return Err(Rejection::WrongAudience);
    }
    if !claims.tid.eq_ignore_ascii_case(tenant) {
        return Err(Rejection::WrongTenant);
    }
    Ok(claims)
}

//! Entra ID: the v2.0 token endpoint (client secrets and federated assertions), the tenant
//! discovery document, and the managed identity endpoints (App Service and IMDS shapes).
//!
//! Over 600 lines: the token endpoint's grant types, assertions and error codes follow Entra's
//! documented answers case by case.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::Rng;
use serde_json::json;
use time::OffsetDateTime;

use crate::errors;
use crate::model::{Application, Password};
use crate::operation::Operation;
use crate::tokens;
use crate::world::World;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

pub fn router(world: Arc<World>) -> axum::Router {
    axum::Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            axum::routing::get(openid_configuration),
        )
        .route("/{tenant}/oauth2/v2.0/token", axum::routing::post(token))
        .layer(axum::middleware::map_response_with_state(
            world.clone(),
            crate::world::azure_date,
        ))
        .with_state(world)
}

async fn openid_configuration(
    State(world): State<Arc<World>>,
    Path(tenant): Path<String>,
) -> Response {
    let call = match world
        .begin(
            Operation::OpenidConfiguration,
            "GET",
            &format!("/{tenant}/v2.0/.well-known/openid-configuration"),
            None,
        )
        .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    let known = tenant_matches(&world, &tenant);
    let authority = world.urls().authority_host;
    let response = if known {
        let base = format!("{authority}/{tenant}");
        Json(json!({
            "token_endpoint": format!("{base}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{base}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": format!("{base}/v2.0"),
            "request_uri_parameter_supported": false,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
            "http_logout_supported": true,
            "frontchannel_logout_supported": true,
            "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid"],
            "tenant_region_scope": "NA",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }))
        .into_response()
    } else {
        errors::entra(
            400,
            "invalid_tenant",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        )
    };
    call.finish(response).await
}

fn tenant_matches(world: &World, tenant: &str) -> bool {
    let state = world.state();
    tenant.eq_ignore_ascii_case(&state.tenant_id)
}

async fn token(
    State(world): State<Arc<World>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/{tenant}/oauth2/v2.0/token");
    // Known before the call starts, so that a fault rule can target one application's sign-ins.
    let target = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "client_id")
        .and_then(|(_, id)| {
            let state = world.state();
            state
                .app_by_app_id(&id)
                .map(|i| state.applications[i].id.clone())
        });
    let mut call = match world.begin(Operation::Token, "POST", &path, target).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let outcome = issue(&world, &tenant, &headers, &body);
    call.caller = outcome.client_id;
    call.target = outcome.object_id;
    call.key_id = outcome.key_id;
    let mut response = outcome.response;
    errors::stamp_ids(&headers, &mut response);
    call.finish(response).await
}

struct Outcome {
    client_id: Option<String>,
    object_id: Option<String>,
    /// The password that signed in, when one did.
    key_id: Option<String>,
    response: Response,
}

impl Outcome {
    fn error(client_id: Option<String>, response: Response) -> Outcome {
        Outcome {
            client_id,
            object_id: None,
            key_id: None,
            response,
        }
    }
}

fn issue(world: &World, tenant: &str, headers: &HeaderMap, body: &[u8]) -> Outcome {
    if !tenant_matches(world, tenant) {
        return Outcome::error(
            None,
            errors::entra(
                400,
                "invalid_request",
                90002,
                &format!(
                    "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                ),
            ),
        );
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Outcome::error(
            None,
            errors::entra(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            ),
        );
    }
    let mut form = std::collections::HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        form.insert(k.into_owned(), v.into_owned());
    }
    let (basic_id, basic_secret) = basic_auth(headers);
    let client_id = form.get("client_id").cloned().or(basic_id);
    let secret = form.get("client_secret").cloned().or(basic_secret);

    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(other) => {
            return Outcome::error(
                client_id,
                errors::entra(
                    400,
                    "unsupported_grant_type",
                    70003,
                    &format!("The app requested an unsupported grant type '{other}'."),
                ),
            );
        }
        None => {
            return Outcome::error(
                client_id,
                errors::entra(
                    400,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'grant_type'.",
                ),
            );
        }
    }
    let Some(client_id) = client_id else {
        return Outcome::error(
            None,
            errors::entra(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            ),
        );
    };
    let Some(scope) = form.get("scope") else {
        return Outcome::error(
            Some(client_id),
            errors::entra(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            ),
        );
    };
    let resource = match scope_resource(scope) {
        Ok(r) => r,
        Err(response) => return Outcome::error(Some(client_id), response),
    };

    let state = world.state();
    let Some(app) = state
        .app_by_app_id(&client_id)
        .map(|i| &state.applications[i])
    else {
        return Outcome::error(
            Some(client_id.clone()),
            errors::entra(
                400,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
                ),
            ),
        );
    };
    if app.disabled {
        return Outcome::error(
            Some(client_id.clone()),
            errors::entra(
                400,
                "unauthorized_client",
                7000112,
                &format!(
                    "Application '{}'({}) is disabled.",
                    app.app_id, app.display_name
                ),
            ),
        );
    }
    let now = OffsetDateTime::now_utc();
    let authenticated = if let Some(secret) = secret {
        check_secret(app, &secret, now, &state.settings)
    } else if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
            Err(errors::entra(
                400,
                "invalid_request",
                700029,
                "The client_assertion_type is not valid; it must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
            ))
        } else {
            check_assertion(app, assertion, now).map(|()| None)
        }
    } else {
        Err(errors::entra(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ))
    };
    let key_id = match authenticated {
        Ok(k) => k,
        Err(response) => {
            return Outcome {
                client_id: Some(client_id),
                object_id: Some(app.id.clone()),
                key_id: None,
                response,
            };
        }
    };
    if let Err(response) = principals(&state, app, &resource, tenant) {
        return Outcome {
            client_id: Some(client_id),
            object_id: Some(app.id.clone()),
            key_id: None,
            response,
        };
    }
    let lifetime = state.settings.token_lifetime_secs;
    let (token, _) = grant(world, &state, app, &resource);
    let object_id = app.id.clone();
    drop(state);
    Outcome {
        client_id: Some(client_id),
        object_id: Some(object_id),
        key_id,
        response: Json(json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }))
        .into_response(),
    }
}

/// Entra issues a token only to a client with a service principal in the tenant
/// (AADSTS7000229), for a resource with one (AADSTS500011).
fn principals(
    state: &crate::model::State,
    app: &Application,
    resource: &str,
    tenant: &str,
) -> Result<(), Response> {
    if state.sp_for_resource(resource).is_none() {
        return Err(errors::entra(
            400,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        ));
    }
    if state.sp_by_app_id(&app.app_id).is_none() {
        return Err(errors::entra(
            400,
            "invalid_client",
            7000229,
            &format!(
                "The client application {} is missing service principal in the tenant {tenant}. See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119",
                app.app_id
            ),
        ));
    }
    Ok(())
}

/// An access token for `app` to `resource`: Graph tokens carry the app's Graph roles.
fn grant(
    world: &World,
    state: &crate::model::State,
    app: &Application,
    resource: &str,
) -> (String, tokens::Claims) {
    let roles = if tokens::GRAPH_AUDIENCES
        .iter()
        .any(|a| a.eq_ignore_ascii_case(resource))
    {
        app.graph_roles.clone()
    } else {
        Vec::new()
    };
    let claims = tokens::claims_for(
        &state.tenant_id,
        &app.app_id,
        &app.id,
        resource,
        roles,
        state.settings.token_lifetime_secs,
    );
    (tokens::mint(&world.token_key, &claims), claims)
}

/// `scope` must name exactly one resource, as `<resource>/.default`.
fn scope_resource(scope: &str) -> Result<String, Response> {
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if scopes.len() != 1 {
        return Err(errors::entra(
            400,
            "invalid_scope",
            70011,
            &format!(
                "The provided request must include a 'scope' input parameter naming exactly one resource. The provided value for the input parameter 'scope' ('{scope}') is not valid."
            ),
        ));
    }
    match scopes[0].strip_suffix("/.default") {
        Some(resource) if !resource.is_empty() => Ok(resource.to_string()),
        _ => Err(errors::entra(
            400,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        )),
    }
}

fn basic_auth(headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let Some(raw) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return (None, None);
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(raw.trim()) else {
        return (None, None);
    };
    let text = String::from_utf8_lossy(&decoded).into_owned();
    match text.split_once(':') {
        Some((id, secret)) => {
            let dec = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            (Some(dec(id)), Some(dec(secret)))
        }
        None => (None, None),
    }
}

/// A secret signs in when it belongs to a live password of the app that is within its dates
/// and has propagated. Propagation is decided per request: between the window's ends a request
/// succeeds with a probability that grows with the credential's age.
fn check_secret(
    app: &Application,
    secret: &str,
    now: OffsetDateTime,
    settings: &crate::model::Settings,
) -> Result<Option<String>, Response> {
    let invalid = || {
        errors::entra(
            401,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                app.app_id
            ),
        )
    };
    let Some(password) = app.passwords.iter().find(|p| {
        p.removed.is_none() && constant_time_eq(p.secret_text.as_bytes(), secret.as_bytes())
    }) else {
        return Err(invalid());
    };
    if !propagated(password, now, settings) {
        return Err(invalid());
    }
    if now >= password.end {
        return Err(errors::entra(
            401,
            "invalid_client",
            7000222,
            &format!(
                "The provided client secret keys for app '{}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.",
                app.app_id
            ),
        ));
    }
    if now < password.start {
        return Err(invalid());
    }
    Ok(Some(password.key_id.clone()))
}

fn propagated(p: &Password, now: OffsetDateTime, settings: &crate::model::Settings) -> bool {
    let age_ms = (now - p.added).whole_milliseconds().max(0) as u64;
    let (min, max) = (
        settings.propagation_min_ms,
        settings.propagation_max_ms.max(settings.propagation_min_ms),
    );
    if age_ms < min {
        return false;
    }
    if age_ms >= max {
        return true;
    }
    let chance = (age_ms - min) as f64 / (max - min) as f64;
    rand::rng().random_bool(chance.clamp(0.0, 1.0))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Workload identity federation: the assertion is the external issuer's token, which must match
/// a federated credential of the app (issuer, subject, audience) and be signed by that issuer.
fn check_assertion(
    app: &Application,
    assertion: &str,
    now: OffsetDateTime,
) -> Result<(), Response> {
    let invalid_request =
        |code: u32, text: String| errors::entra(400, "invalid_request", code, &text);
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return Err(invalid_request(
            50027,
            "JWT token is invalid or malformed.".into(),
        ));
    };
    let Some(claims) = unverified_claims(assertion) else {
        return Err(invalid_request(
            50027,
            "JWT token is invalid or malformed.".into(),
        ));
    };
    let iss = claims["iss"].as_str().unwrap_or_default();
    let sub = claims["sub"].as_str().unwrap_or_default();
    let auds: Vec<String> = match &claims["aud"] {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let by_issuer: Vec<_> = app
        .federated_credentials
        .iter()
        .filter(|f| f.issuer == iss)
        .collect();
    if by_issuer.is_empty() {
        return Err(invalid_request(
            700211,
            format!(
                "No matching federated identity record found for presented assertion issuer '{iss}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion."
            ),
        ));
    }
    let by_subject: Vec<_> = by_issuer.into_iter().filter(|f| f.subject == sub).collect();
    if by_subject.is_empty() {
        return Err(invalid_request(
            700213,
            format!(
                "No matching federated identity record found for presented assertion subject '{sub}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion."
            ),
        ));
    }
    let Some(fic) = by_subject
        .into_iter()
        .find(|f| auds.iter().any(|a| a == &f.audience))
    else {
        return Err(invalid_request(
            700212,
            format!(
                "No matching federated identity record found for presented assertion audience '{}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.",
                auds.join(",")
            ),
        ));
    };
    let key = match header.alg {
        Algorithm::ES256 | Algorithm::ES384 => {
            DecodingKey::from_ec_pem(fic.public_key_pem.as_bytes())
        }
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 => {
            DecodingKey::from_rsa_pem(fic.public_key_pem.as_bytes())
        }
        _ => {
            return Err(invalid_request(
                5002738,
                "The assertion's signing algorithm is not supported.".into(),
            ));
        }
    };
    let Ok(key) = key else {
        return Err(invalid_request(
            5002738,
            "The federated credential's issuer key cannot be read.".into(),
        ));
    };
    let mut validation = Validation::new(header.alg);
    validation.validate_aud = false;
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    if jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &validation).is_err() {
        return Err(errors::entra(
            401,
            "invalid_client",
            700027,
            "Client assertion failed signature validation.",
        ));
    }
    let exp = claims["exp"].as_i64().unwrap_or(0);
    let nbf = claims["nbf"].as_i64().unwrap_or(i64::MIN);
    let t = now.unix_timestamp();
    if exp <= t || nbf > t + 300 {
        return Err(errors::entra(
            400,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    Ok(())
}

fn unverified_claims(jwt: &str) -> Option<serde_json::Value> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

// ---- managed identity -------------------------------------------------------------------------

pub fn managed_identity_router(world: Arc<World>) -> axum::Router {
    axum::Router::new()
        .route("/msi/token", axum::routing::get(app_service_token))
        .route(
            "/metadata/identity/oauth2/token",
            axum::routing::get(imds_token),
        )
        .layer(axum::middleware::map_response_with_state(
            world.clone(),
            crate::world::azure_date,
        ))
        .with_state(world)
}

#[derive(serde::Deserialize)]
struct MiQuery {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
    resource: Option<String>,
    client_id: Option<String>,
    object_id: Option<String>,
    principal_id: Option<String>,
}

async fn app_service_token(
    State(world): State<Arc<World>>,
    headers: HeaderMap,
    Query(q): Query<MiQuery>,
) -> Response {
    let mut call = match world
        .begin(Operation::ManagedIdentityToken, "GET", "/msi/token", None)
        .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    let presented = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok());
    let response = if presented != Some(world.identity_header.as_str()) {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"statusCode": 401, "message": "Unauthorized request: the X-IDENTITY-HEADER is missing or wrong."})),
        )
            .into_response()
    } else if q.api_version.as_deref() != Some("2019-08-01") {
        (StatusCode::BAD_REQUEST, Json(json!({"statusCode": 400, "message": "The api-version is missing or not supported; use 2019-08-01."}))).into_response()
    } else {
        match mi_token(&world, &q) {
            Ok((app_id, object_id, token, expires_on, resource)) => {
                call.caller = Some(app_id.clone());
                call.target = Some(object_id);
                Json(json!({
                    "access_token": token,
                    "expires_on": expires_on.to_string(),
                    "resource": resource,
                    "token_type": "Bearer",
                    "client_id": app_id,
                }))
                .into_response()
            }
            Err((status, message)) => (
                status,
                Json(json!({"statusCode": status.as_u16(), "message": message})),
            )
                .into_response(),
        }
    };
    call.finish(response).await
}

async fn imds_token(
    State(world): State<Arc<World>>,
    method: Method,
    headers: HeaderMap,
    Query(q): Query<MiQuery>,
) -> Response {
    let mut call = match world
        .begin(
            Operation::ManagedIdentityToken,
            method.as_str(),
            "/metadata/identity/oauth2/token",
            None,
        )
        .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    let metadata = headers.get("metadata").and_then(|v| v.to_str().ok());
    let response = if metadata != Some("true") {
        (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_request", "error_description": "Required metadata header not specified"}))).into_response()
    } else if q.api_version.is_none() {
        (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_request", "error_description": "Required query variable 'api-version' is missing"}))).into_response()
    } else {
        match mi_token(&world, &q) {
            Ok((app_id, object_id, token, expires_on, resource)) => {
                call.caller = Some(app_id.clone());
                call.target = Some(object_id);
                let lifetime = expires_on - OffsetDateTime::now_utc().unix_timestamp();
                Json(json!({
                    "access_token": token,
                    "refresh_token": "",
                    "expires_in": lifetime.to_string(),
                    "expires_on": expires_on.to_string(),
                    "not_before": (expires_on - lifetime).to_string(),
                    "resource": resource,
                    "token_type": "Bearer",
                    "client_id": app_id,
                }))
                .into_response()
            }
            Err((status, message)) => (
                status,
                Json(json!({"error": "invalid_resource", "error_description": message})),
            )
                .into_response(),
        }
    };
    call.finish(response).await
}

type MiGrant = (String, String, String, i64, String);

fn mi_token(world: &World, q: &MiQuery) -> Result<MiGrant, (StatusCode, String)> {
    let Some(resource) = q.resource.as_deref().filter(|r| !r.is_empty()) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "Required query variable 'resource' is missing".into(),
        ));
    };
    let resource = resource.trim_end_matches("/.default").to_string();
    let state = world.state();
    let wanted = q
        .client_id
        .as_deref()
        .or(q.object_id.as_deref())
        .or(q.principal_id.as_deref());
    let identities: Vec<&Application> = match wanted {
        // Looked up, not scanned for: the tenant may hold 100,000 applications.
        Some(w) => {
            let mut found: Vec<usize> = [state.app_by_app_id(w), state.app_by_object_id(w)]
                .into_iter()
                .flatten()
                .collect();
            found.dedup();
            found
                .into_iter()
                .map(|i| &state.applications[i])
                .filter(|a| a.managed_identity)
                .collect()
        }
        None => state
            .applications
            .iter()
            .filter(|a| a.managed_identity)
            .collect(),
    };
    let app = match identities.as_slice() {
        [one] => *one,
        [] => {
            return Err((
                StatusCode::BAD_REQUEST,
                "No managed identity found for the request.".into(),
            ));
        }
        _ => {
            return Err((
                StatusCode::BAD_REQUEST,
                "More than one managed identity is assigned; name one with client_id.".into(),
            ));
        }
    };
    if state.sp_for_resource(&resource).is_none() {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "AADSTS500011: The resource principal named {resource} was not found in the tenant named {}.",
                state.tenant_id
            ),
        ));
    }
    let (token, claims) = grant(world, &state, app, &resource);
    Ok((
        app.app_id.clone(),
        app.id.clone(),
        token,
        claims.exp,
        resource,
    ))
}

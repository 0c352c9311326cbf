//! Azure Key Vault secrets (data plane), one listener per vault.
//!
//! Over 600 lines: every secrets operation with its RBAC check, throttling, paging and
//! soft-delete states, as Key Vault answers them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::errors;
use crate::model::{DeletedSecret, SecretVersion, Vault, VaultRole, VaultSecret};
use crate::operation::Operation;
use crate::throttle::Charge;
use crate::tokens::{self, Rejection};
use crate::world::{Call, World};

pub const API_VERSIONS: &[&str] = &["7.5", "7.6", "2025-07-01", "2026-04-01"];
const MAX_VALUE_BYTES: usize = 25 * 1024;
const MAX_TAGS: usize = 15;
const MAX_TAG_LEN: usize = 256;
const MAX_CONTENT_TYPE: usize = 255;
const RETENTION_DAYS: i64 = 90;

#[derive(Clone)]
struct VaultState {
    world: Arc<World>,
    vault: String,
}

pub fn router(world: Arc<World>, vault: String) -> axum::Router {
    axum::Router::new()
        .route("/{*rest}", axum::routing::any(dispatch))
        .layer(axum::middleware::map_response_with_state(
            world.clone(),
            crate::world::azure_date,
        ))
        .with_state(VaultState { world, vault })
}

enum Route {
    ListSecrets,
    Secret(String),
    Latest(String),
    Version(String, String),
    Versions(String),
    ListDeleted,
    Deleted(String),
    Recover(String),
}

fn parse_route(rest: &str) -> Option<Route> {
    let parts: Vec<&str> = rest.split('/').collect();
    Some(match parts.as_slice() {
        ["secrets"] | ["secrets", ""] => Route::ListSecrets,
        ["secrets", name] => Route::Secret(name.to_string()),
        ["secrets", name, ""] => Route::Latest(name.to_string()),
        ["secrets", name, "versions"] => Route::Versions(name.to_string()),
        ["secrets", name, version] => Route::Version(name.to_string(), version.to_string()),
        ["deletedsecrets"] => Route::ListDeleted,
        ["deletedsecrets", name] => Route::Deleted(name.to_string()),
        ["deletedsecrets", name, "recover"] => Route::Recover(name.to_string()),
        _ => return None,
    })
}

async fn dispatch(
    State(vs): State<VaultState>,
    Path(rest): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let world = &vs.world;
    let path = format!("/{rest}");
    let Some(route) = parse_route(&rest) else {
        return finish_headers(
            &headers,
            errors::keyvault(
                400,
                "BadParameter",
                None,
                &format!("The request URI '{path}' is not a valid Key Vault secrets path."),
            ),
        );
    };
    let (operation, name, ok) = match (&route, &method) {
        (Route::ListSecrets, &Method::GET) => (Operation::KeyvaultListSecrets, None, true),
        (Route::Secret(n), &Method::PUT) => (Operation::KeyvaultSetSecret, Some(n), true),
        (Route::Secret(n) | Route::Latest(n), &Method::GET) => {
            (Operation::KeyvaultGetSecret, Some(n), true)
        }
        (Route::Version(n, _), &Method::GET) => (Operation::KeyvaultGetSecret, Some(n), true),
        (Route::Secret(n), &Method::DELETE) => (Operation::KeyvaultDeleteSecret, Some(n), true),
        (Route::Version(n, _) | Route::Latest(n), &Method::PATCH) => {
            (Operation::KeyvaultUpdateSecret, Some(n), true)
        }
        (Route::Versions(n), &Method::GET) => (Operation::KeyvaultListVersions, Some(n), true),
        (Route::ListDeleted, &Method::GET) => (Operation::KeyvaultListSecrets, None, true),
        (Route::Deleted(n), &Method::GET) => (Operation::KeyvaultGetDeletedSecret, Some(n), true),
        (Route::Deleted(n), &Method::DELETE) => {
            (Operation::KeyvaultPurgeDeletedSecret, Some(n), true)
        }
        (Route::Recover(n), &Method::POST) => {
            (Operation::KeyvaultRecoverDeletedSecret, Some(n), true)
        }
        _ => (Operation::KeyvaultGetSecret, None, false),
    };
    let target = Some(match name {
        Some(n) => format!("{}/{n}", vs.vault),
        None => vs.vault.clone(),
    });
    let mut call = match world.begin(operation, method.as_str(), &path, target).await {
        Ok(c) => c,
        Err(r) => return finish_headers(&headers, r),
    };
    let response = if !ok {
        errors::keyvault(
            405,
            "BadParameter",
            None,
            &format!("The requested resource does not support http method '{method}'."),
        )
    } else {
        handle(
            &vs,
            &mut call,
            route,
            operation,
            &headers,
            query.as_deref(),
            &body,
        )
    };
    let response = finish_headers(&headers, response);
    call.finish(response).await
}

fn finish_headers(request: &HeaderMap, mut response: Response) -> Response {
    errors::stamp_ids(request, &mut response);
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-ms-keyvault-region", HeaderValue::from_static("emulator"));
    h.insert(
        "x-ms-keyvault-service-version",
        HeaderValue::from_static("1.9.2000.1"),
    );
    h.insert(
        "x-ms-keyvault-network-info",
        HeaderValue::from_static("conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;"),
    );
    if h.get(header::CONTENT_TYPE).is_some() {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    response
}

fn handle(
    vs: &VaultState,
    call: &mut Call,
    route: Route,
    operation: Operation,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Response {
    let world = &vs.world;
    let (tenant, authority) = (world.state().tenant_id.clone(), world.urls().authority_host);
    let challenge = format!(
        "Bearer authorization=\"{authority}/{tenant}\", resource=\"https://vault.azure.net\""
    );
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let claims = match tokens::check(&world.token_key, auth, &tokens::VAULT_AUDIENCES, &tenant) {
        Ok(c) => c,
        Err(r) => {
            let message = match r {
                Rejection::Missing => "AKV10000: Request is missing a Bearer or PoP token.",
                Rejection::Malformed => "AKV10002: Token is malformed.",
                Rejection::Expired => "AKV10022: Token is expired.",
                Rejection::WrongAudience => "AKV10022: Invalid audience.",
                Rejection::WrongTenant => {
                    "AKV10032: Invalid issuer. Expected one of the tenant's issuers."
                }
            };
            let mut resp = errors::keyvault(401, "Unauthorized", None, message);
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return resp;
        }
    };
    call.caller = Some(claims.appid.clone());
    let mut params = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        params.insert(k.into_owned(), v.into_owned());
    }
    let api_version = match params.get("api-version") {
        None => {
            return errors::keyvault(
                400,
                "BadParameter",
                None,
                "The request must specify an api-version query parameter.",
            );
        }
        Some(v) if !API_VERSIONS.contains(&v.as_str()) => {
            return errors::keyvault(
                400,
                "BadParameter",
                None,
                &format!(
                    "The specified version ({v}) is not recognized. Consider using the latest supported version (2025-07-01)."
                ),
            );
        }
        Some(v) => v.clone(),
    };
    let writes = !matches!(
        operation,
        Operation::KeyvaultGetSecret
            | Operation::KeyvaultListVersions
            | Operation::KeyvaultListSecrets
            | Operation::KeyvaultGetDeletedSecret
    );
    let role = world.state().vaults.get(&vs.vault).and_then(|v| {
        v.access
            .get(&claims.appid)
            .or_else(|| v.access.get(&claims.oid))
            .copied()
    });
    let allowed = match role {
        Some(VaultRole::Officer) => true,
        Some(VaultRole::User) => !writes,
        None => false,
    };
    if !allowed {
        let action = match operation {
            Operation::KeyvaultSetSecret => "Microsoft.KeyVault/vaults/secrets/setSecret/action",
            Operation::KeyvaultGetSecret => "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            Operation::KeyvaultDeleteSecret => "Microsoft.KeyVault/vaults/secrets/delete",
            _ => "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        };
        return errors::keyvault(
            403,
            "Forbidden",
            Some("ForbiddenByRbac"),
            &format!(
                "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={};iss=https://sts.windows.net/{}/\r\nAction: '{action}'\r\nResource: '/vaults/{}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\nVault: {};location=emulator\r\n",
                claims.appid, claims.oid, claims.tid, vs.vault, vs.vault
            ),
        );
    }
    if let Err(r) = throttle(world, &vs.vault, operation == Operation::KeyvaultSetSecret) {
        return r;
    }
    let base = world
        .urls()
        .vaults
        .get(&vs.vault)
        .cloned()
        .unwrap_or_default();
    let mut state = if writes {
        world.state_mut()
    } else {
        world.state()
    };
    // Dated once the state is ours, as Key Vault dates a version when it commits it: a write
    // that waited for the lock is not dated before the writes it waited for.
    let (azure_now, listed_before_ms) = {
        let settings = &state.settings;
        let true_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        (
            settings.azure_now().unix_timestamp(),
            true_ms - settings.kv_list_lag_ms as i64,
        )
    };
    let ctx = Ctx {
        base: &base,
        api_version: &api_version,
        azure_now,
        listed_before_ms,
    };
    let Some(vault) = state.vaults.get_mut(&vs.vault) else {
        return errors::keyvault(404, "VaultNotFound", None, "The vault does not exist.");
    };
    match route {
        Route::ListSecrets => list_secrets(vault, &ctx, &params),
        Route::ListDeleted => list_deleted(vault, &ctx),
        Route::Secret(name) if operation == Operation::KeyvaultSetSecret => {
            set_secret(vault, call, &ctx, &name, body)
        }
        Route::Secret(name) if operation == Operation::KeyvaultDeleteSecret => {
            call.effective = true;
            delete_secret(vault, call, &ctx, &name)
        }
        Route::Secret(name) | Route::Latest(name) if operation == Operation::KeyvaultGetSecret => {
            get_secret(vault, &ctx, &name, None)
        }
        Route::Version(name, version) if operation == Operation::KeyvaultGetSecret => {
            get_secret(vault, &ctx, &name, Some(&version))
        }
        Route::Version(name, version) => {
            update_secret(vault, call, &ctx, &name, Some(&version), body)
        }
        Route::Latest(name) => update_secret(vault, call, &ctx, &name, None, body),
        Route::Versions(name) => list_versions(vault, &ctx, &name, &params),
        Route::Deleted(name) if operation == Operation::KeyvaultPurgeDeletedSecret => {
            match vault.deleted.remove(&name.to_ascii_lowercase()) {
                Some(_) => {
                    call.effective = true;
                    StatusCode::NO_CONTENT.into_response()
                }
                None => deleted_not_found(&name),
            }
        }
        Route::Deleted(name) => match vault.deleted.get(&name.to_ascii_lowercase()) {
            Some(d) => Json(deleted_bundle(d, &ctx)).into_response(),
            None => deleted_not_found(&name),
        },
        Route::Recover(name) => match vault.deleted.remove(&name.to_ascii_lowercase()) {
            Some(d) => {
                call.effective = true;
                let body = d
                    .secret
                    .versions
                    .last()
                    .map(|v| bundle(&d.secret.name, v, &ctx, false, None));
                vault.secrets.insert(name.to_ascii_lowercase(), d.secret);
                Json(body.unwrap_or(Value::Null)).into_response()
            }
            None => deleted_not_found(&name),
        },
        _ => errors::keyvault(400, "BadParameter", None, "Unsupported request."),
    }
}

fn throttle(world: &World, vault: &str, create: bool) -> Result<(), Response> {
    let settings = world.state().settings.throttling.clone();
    if !settings.enabled {
        return Ok(());
    }
    let scale = if settings.scale > 0.0 {
        settings.scale
    } else {
        1.0
    };
    let window = Duration::from_secs_f64(10.0 * scale);
    let now = Instant::now();
    let mut windows = crate::world::lock(&world.windows);
    let all_key = format!("kv:{vault}");
    let create_key = format!("kv-create:{vault}");
    let refused = windows
        .would_admit(&all_key, window, settings.kv_transactions_per_10s, 1, now)
        .or_else(|| {
            create
                .then(|| {
                    windows.would_admit(&create_key, window, settings.kv_creates_per_10s, 1, now)
                })
                .flatten()
        });
    if let Some(retry_after) = refused {
        let mut r = errors::keyvault(
            429,
            "Throttled",
            None,
            "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
        );
        if !settings.kv_omit_retry_after {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return Err(r);
    }
    let _ = windows.charge(&all_key, window, settings.kv_transactions_per_10s, 1, now);
    if create
        && let Charge::Refused { .. } =
            windows.charge(&create_key, window, settings.kv_creates_per_10s, 1, now)
    {
        // would_admit just said there is room; nothing to do.
    }
    Ok(())
}

struct Ctx<'a> {
    base: &'a str,
    api_version: &'a str,
    /// Azure's clock (Unix seconds), as the service stamps it.
    azure_now: i64,
    /// Listings hide versions written after this (true time, Unix milliseconds).
    listed_before_ms: i64,
}

fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn not_found(name: &str) -> Response {
    errors::keyvault(
        404,
        "SecretNotFound",
        None,
        &format!(
            "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

fn deleted_not_found(name: &str) -> Response {
    errors::keyvault(
        404,
        "SecretNotFound",
        None,
        &format!("Deleted Secret not found: {name}"),
    )
}

fn attributes(v: &SecretVersion) -> Value {
    let mut a = json!({
        "enabled": v.enabled,
        "created": v.created,
        "updated": v.updated,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": RETENTION_DAYS,
    });
    if let Some(nbf) = v.nbf {
        a["nbf"] = json!(nbf);
    }
    if let Some(exp) = v.exp {
        a["exp"] = json!(exp);
    }
    a
}

fn bundle(
    name: &str,
    v: &SecretVersion,
    ctx: &Ctx<'_>,
    with_value: bool,
    previous: Option<&str>,
) -> Value {
    let mut b = Map::new();
    if with_value {
        b.insert("value".into(), json!(v.value));
    }
    b.insert(
        "id".into(),
        json!(format!("{}/secrets/{name}/{}", ctx.base, v.version)),
    );
    if let Some(ct) = &v.content_type {
        b.insert("contentType".into(), json!(ct));
    }
    b.insert("attributes".into(), attributes(v));
    if !v.tags.is_empty() {
        b.insert("tags".into(), json!(v.tags));
    }
    let has_previous = !matches!(ctx.api_version, "7.5" | "7.6");
    if has_previous && let Some(p) = previous {
        b.insert("previousVersion".into(), json!(p));
    }
    Value::Object(b)
}

fn item(id: String, v: &SecretVersion) -> Value {
    let mut b = Map::new();
    b.insert("id".into(), json!(id));
    b.insert("attributes".into(), attributes(v));
    if !v.tags.is_empty() {
        b.insert("tags".into(), json!(v.tags));
    }
    if let Some(ct) = &v.content_type {
        b.insert("contentType".into(), json!(ct));
    }
    Value::Object(b)
}

fn deleted_bundle(d: &DeletedSecret, ctx: &Ctx<'_>) -> Value {
    let mut b = match d.secret.versions.last() {
        Some(v) => bundle(&d.secret.name, v, ctx, false, None),
        None => json!({}),
    };
    b["recoveryId"] = json!(format!("{}/deletedsecrets/{}", ctx.base, d.secret.name));
    b["deletedDate"] = json!(d.deleted_date);
    b["scheduledPurgeDate"] = json!(d.scheduled_purge_date);
    b
}

fn bad(message: &str) -> Response {
    errors::keyvault(400, "BadParameter", None, message)
}

/// Reads `attributes` from a set or update body into a version.
fn apply_attributes(v: &mut SecretVersion, attrs: &Value) -> Result<(), Response> {
    let Some(obj) = attrs.as_object() else {
        return Err(bad("The parameter 'attributes' must be an object."));
    };
    for (k, val) in obj {
        match (k.as_str(), val) {
            ("enabled", Value::Bool(b)) => v.enabled = *b,
            ("nbf", Value::Number(n)) if n.is_i64() => v.nbf = n.as_i64(),
            ("exp", Value::Number(n)) if n.is_i64() => v.exp = n.as_i64(),
            ("nbf" | "exp", Value::Null) => {}
            ("enabled" | "nbf" | "exp", _) => {
                return Err(bad(&format!("Invalid value for attribute '{k}'.")));
            }
            // Read-only attributes are ignored, as the service does.
            _ => {}
        }
    }
    Ok(())
}

fn read_tags(tags: &Value) -> Result<BTreeMap<String, String>, Response> {
    let Some(obj) = tags.as_object() else {
        return Err(bad("The parameter 'tags' must be an object of strings."));
    };
    if obj.len() > MAX_TAGS {
        return Err(bad(&format!("A maximum of {MAX_TAGS} tags are allowed.")));
    }
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let Some(s) = v.as_str() else {
            return Err(bad(&format!("The value of tag '{k}' must be a string.")));
        };
        if k.is_empty() || k.len() > MAX_TAG_LEN || s.len() > MAX_TAG_LEN {
            return Err(bad(&format!(
                "Tag names and values are limited to {MAX_TAG_LEN} characters."
            )));
        }
        out.insert(k.clone(), s.to_string());
    }
    Ok(out)
}

fn set_secret(
    vault: &mut Vault,
    call: &mut Call,
    ctx: &Ctx<'_>,
    name: &str,
    body: &[u8],
) -> Response {
    if !valid_name(name) {
        return bad(&format!("The request URI contains an invalid name: {name}"));
    }
    let key = name.to_ascii_lowercase();
    // The journal names the credential a write was for, even when it is refused: whether a
    // credential ever reached publishing is part of what a test checks.
    call.key_id = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["tags"]["key-id"].as_str().map(str::to_string));
    if vault.deleted.contains_key(&key) {
        return errors::keyvault(
            409,
            "Conflict",
            Some("ObjectIsDeletedButRecoverable"),
            &format!(
                "Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."
            ),
        );
    }
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return bad("The request body is not valid JSON.");
    };
    let Some(value) = obj.get("value").and_then(Value::as_str) else {
        return bad("Property 'value' is required and must be a string.");
    };
    if value.len() > MAX_VALUE_BYTES {
        return bad("The secret value exceeds the maximum allowed size of 25 KB.");
    }
    let now = ctx.azure_now;
    let mut version = SecretVersion {
        version: format!("{:032x}", rand::random::<u128>()),
        value: value.to_string(),
        content_type: None,
        tags: BTreeMap::new(),
        enabled: true,
        nbf: None,
        exp: None,
        created: now,
        updated: now,
    };
    match obj.get("contentType") {
        None | Some(Value::Null) => {}
        Some(Value::String(ct)) if ct.len() <= MAX_CONTENT_TYPE => {
            version.content_type = Some(ct.clone())
        }
        Some(_) => return bad("contentType must be a string of at most 255 characters."),
    }
    if let Some(tags) = obj.get("tags").filter(|t| !t.is_null()) {
        match read_tags(tags) {
            Ok(t) => version.tags = t,
            Err(r) => return r,
        }
    }
    if let Some(attrs) = obj.get("attributes").filter(|a| !a.is_null())
        && let Err(r) = apply_attributes(&mut version, attrs)
    {
        return r;
    }
    vault.written_ms.insert(
        version.version.clone(),
        (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64,
    );
    let secret = vault.secrets.entry(key).or_insert_with(|| VaultSecret {
        name: name.to_string(),
        versions: Vec::new(),
    });
    // Azure stays consistent with itself when the clock offset changes (a step of the
    // client's clock): a new version is never dated before the one it follows, nor in its
    // second unless it truly was written in that second.
    if let Some(last) = secret.versions.last()
        && version.created < last.created
    {
        version.created = last.created + 1;
        version.updated = version.created;
    }
    let previous = secret.versions.last().map(|v| v.version.clone());
    let answer = bundle(&secret.name, &version, ctx, true, previous.as_deref());
    call.effective = true;
    call.key_id = version.tags.get("key-id").cloned();
    secret.versions.push(version);
    Json(answer).into_response()
}

fn get_secret(vault: &Vault, ctx: &Ctx<'_>, name: &str, version: Option<&str>) -> Response {
    let Some(secret) = vault.secrets.get(&name.to_ascii_lowercase()) else {
        return not_found(name);
    };
    let found = match version {
        Some(ver) => secret
            .versions
            .iter()
            .position(|v| v.version.eq_ignore_ascii_case(ver)),
        None => secret.versions.len().checked_sub(1),
    };
    let Some(i) = found else {
        return not_found(&format!("{name}/{}", version.unwrap_or_default()));
    };
    let v = &secret.versions[i];
    if !v.enabled {
        return errors::keyvault(
            403,
            "Forbidden",
            Some("SecretDisabled"),
            "Operation get is not allowed on a disabled secret.",
        );
    }
    let previous = i
        .checked_sub(1)
        .map(|p| secret.versions[p].version.as_str());
    Json(bundle(&secret.name, v, ctx, true, previous)).into_response()
}

fn update_secret(
    vault: &mut Vault,
    call: &mut Call,
    ctx: &Ctx<'_>,
    name: &str,
    version: Option<&str>,
    body: &[u8],
) -> Response {
    let Some(secret) = vault.secrets.get_mut(&name.to_ascii_lowercase()) else {
        return not_found(name);
    };
    let found = match version {
        Some(ver) => secret
            .versions
            .iter()
            .position(|v| v.version.eq_ignore_ascii_case(ver)),
        None => secret.versions.len().checked_sub(1),
    };
    let Some(i) = found else {
        return not_found(&format!("{name}/{}", version.unwrap_or_default()));
    };
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return bad("The request body is not valid JSON.");
    };
    let mut updated = secret.versions[i].clone();
    if let Some(attrs) = obj.get("attributes").filter(|a| !a.is_null())
        && let Err(r) = apply_attributes(&mut updated, attrs)
    {
        return r;
    }
    if let Some(tags) = obj.get("tags").filter(|t| !t.is_null()) {
        match read_tags(tags) {
            Ok(t) => updated.tags = t,
            Err(r) => return r,
        }
    }
    match obj.get("contentType") {
        None | Some(Value::Null) => {}
        Some(Value::String(ct)) if ct.len() <= MAX_CONTENT_TYPE => {
            updated.content_type = Some(ct.clone())
        }
        Some(_) => return bad("contentType must be a string of at most 255 characters."),
    }
    updated.updated = ctx.azure_now;
    let answer = bundle(&secret.name, &updated, ctx, false, None);
    secret.versions[i] = updated;
    call.effective = true;
    Json(answer).into_response()
}

fn delete_secret(vault: &mut Vault, call: &mut Call, ctx: &Ctx<'_>, name: &str) -> Response {
    let Some(secret) = vault.secrets.remove(&name.to_ascii_lowercase()) else {
        call.effective = false;
        return not_found(name);
    };
    let now = ctx.azure_now;
    let deleted = DeletedSecret {
        secret,
        deleted_date: now,
        scheduled_purge_date: now + RETENTION_DAYS * 86_400,
    };
    let answer = deleted_bundle(&deleted, ctx);
    vault.deleted.insert(name.to_ascii_lowercase(), deleted);
    Json(answer).into_response()
}

fn page_params(params: &BTreeMap<String, String>) -> Result<(usize, usize), Response> {
    let max = match params.get("maxresults") {
        None => 25,
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=25).contains(&n) => n,
            _ => {
                return Err(bad(
                    "Invalid value for parameter 'maxresults': it must be an integer between 1 and 25.",
                ));
            }
        },
    };
    let skip = match params.get("$skiptoken") {
        None => 0,
        Some(t) => base64::engine::general_purpose::STANDARD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse().ok()))
            .ok_or_else(|| bad("The $skiptoken is invalid."))?,
    };
    Ok((max, skip))
}

fn page(items: Vec<Value>, skip: usize, max: usize, next_base: &str, ctx: &Ctx<'_>) -> Response {
    let total = items.len();
    let value: Vec<Value> = items.into_iter().skip(skip).take(max).collect();
    let next = (skip + max < total).then(|| {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("offset:{}", skip + max));
        let token: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
        format!(
            "{next_base}?api-version={}&$skiptoken={token}&maxresults={max}",
            ctx.api_version
        )
    });
    // The description types nextLink as a string: the last page leaves it out.
    let mut body = json!({ "value": value });
    if let Some(next) = next {
        body["nextLink"] = json!(next);
    }
    Json(body).into_response()
}

/// Whether a lagging listing shows this version yet.
fn listed(vault: &Vault, v: &SecretVersion, ctx: &Ctx<'_>) -> bool {
    vault
        .written_ms
        .get(&v.version)
        .is_none_or(|w| *w <= ctx.listed_before_ms)
}

fn list_versions(
    vault: &Vault,
    ctx: &Ctx<'_>,
    name: &str,
    params: &BTreeMap<String, String>,
) -> Response {
    let (max, skip) = match page_params(params) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(secret) = vault.secrets.get(&name.to_ascii_lowercase()) else {
        return not_found(name);
    };
    let mut listed: Vec<&SecretVersion> = secret
        .versions
        .iter()
        .filter(|v| listed(vault, v, ctx))
        .collect();
    // A lagging replica that has not seen the secret's first version does not know the secret.
    if listed.is_empty() {
        return not_found(name);
    }
    // Key Vault promises no order; listing by version id (random) keeps clients from relying
    // on creation order.
    listed.sort_by(|a, b| a.version.cmp(&b.version));
    let items = listed
        .into_iter()
        .map(|v| {
            item(
                format!("{}/secrets/{}/{}", ctx.base, secret.name, v.version),
                v,
            )
        })
        .collect();
    page(
        items,
        skip,
        max,
        &format!("{}/secrets/{}/versions", ctx.base, secret.name),
        ctx,
    )
}

fn list_secrets(vault: &Vault, ctx: &Ctx<'_>, params: &BTreeMap<String, String>) -> Response {
    let (max, skip) = match page_params(params) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let items = vault
        .secrets
        .values()
        .filter_map(|s| {
            s.versions
                .iter()
                .rfind(|v| listed(vault, v, ctx))
                .map(|v| item(format!("{}/secrets/{}", ctx.base, s.name), v))
        })
        .collect();
    page(items, skip, max, &format!("{}/secrets", ctx.base), ctx)
}

fn list_deleted(vault: &Vault, ctx: &Ctx<'_>) -> Response {
    let items: Vec<Value> = vault
        .deleted
        .values()
        .map(|d| deleted_bundle(d, ctx))
        .collect();
    Json(json!({ "value": items })).into_response()
}

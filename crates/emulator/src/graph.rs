//! Microsoft Graph v1.0: reading applications and `addPassword` / `removePassword`.
//!
//! Over 600 lines: the applications API's routes, JSON shapes, caps and propagation, the
//! portal's changes (`portal_*`) and tests (about 200 lines).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::errors;
use crate::model::{Application, KeyCredential, PERSONAL_AUDIENCES, Password, Settings};
use crate::operation::Operation;
use crate::throttle::Charge;
use crate::tokens::{self, Claims, Rejection};
use crate::world::{Call, World};

const APPLICATION_PROPERTIES: &[&str] = &[
    "id",
    "appId",
    "displayName",
    "signInAudience",
    "createdDateTime",
    "passwordCredentials",
    "keyCredentials",
    "tags",
    "web",
    "identifierUris",
];
/// What reading the whole tenant's applications (a listing without `$filter`) needs.
/// `Application.ReadWrite.OwnedBy` is for the apps the caller owns: with it alone, the
/// emulator answers an unfiltered listing with 403, which is how the daemon learns that its
/// inventory lacks `Application.Read.All` (docs/decisions.md, "Emulator").
const TENANT_READ_ROLES: &[&str] = &[
    "Application.Read.All",
    "Application.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const READ_ROLES: &[&str] = &[
    "Application.Read.All",
    "Application.ReadWrite.All",
    "Application.ReadWrite.OwnedBy",
    "Directory.Read.All",
];

pub fn router(world: Arc<World>) -> axum::Router {
    axum::Router::new()
        .route("/v1.0/{*rest}", axum::routing::any(dispatch))
        .layer(axum::middleware::map_response_with_state(
            world.clone(),
            crate::world::azure_date,
        ))
        .with_state(world)
}

/// How the request names the application.
enum Address {
    ObjectId(String),
    AppId(String),
}

enum Route {
    List,
    Get(Address),
    AddPassword(Address),
    RemovePassword(Address),
    Owners(Address),
    ServicePrincipals,
    ServicePrincipal(Address),
}

fn parse_route(rest: &str) -> Result<Route, String> {
    if rest == "servicePrincipals" {
        return Ok(Route::ServicePrincipals);
    }
    if let Some(id) = rest.strip_prefix("servicePrincipals/")
        && !id.contains('/')
    {
        return Ok(Route::ServicePrincipal(Address::ObjectId(id.to_string())));
    }
    if let Some(inner) = rest
        .strip_prefix("servicePrincipals(appId=")
        .and_then(|s| s.strip_suffix(')'))
    {
        let app_id = inner.trim_matches(|c| c == '\'' || c == '"');
        return Ok(Route::ServicePrincipal(Address::AppId(app_id.to_string())));
    }
    let (head, action) = match rest.split_once('/') {
        Some(("applications", b)) => match b.split_once('/') {
            Some((id, action)) => (format!("applications/{id}"), Some(action)),
            None => (format!("applications/{b}"), None),
        },
        Some((a, b)) => (a.to_string(), Some(b)),
        None => (rest.to_string(), None),
    };
    let address = if head == "applications" {
        None
    } else if let Some(id) = head.strip_prefix("applications/") {
        Some(Address::ObjectId(id.to_string()))
    } else if let Some(inner) = head
        .strip_prefix("applications(appId=")
        .and_then(|s| s.strip_suffix(')'))
    {
        let app_id = inner.trim_matches(|c| c == '\'' || c == '"');
        Some(Address::AppId(app_id.to_string()))
    } else {
        return Err(head);
    };
    match (address, action) {
        (None, None) => Ok(Route::List),
        (Some(a), None) => Ok(Route::Get(a)),
        (Some(a), Some("addPassword" | "microsoft.graph.addPassword")) => Ok(Route::AddPassword(a)),
        (Some(a), Some("removePassword" | "microsoft.graph.removePassword")) => {
            Ok(Route::RemovePassword(a))
        }
        (Some(a), Some("owners")) => Ok(Route::Owners(a)),
        (_, Some(action)) => Err(action.to_string()),
    }
}

async fn dispatch(
    State(world): State<Arc<World>>,
    Path(rest): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let path = format!("/v1.0/{rest}");
    let route = match parse_route(&rest) {
        Ok(r) => r,
        Err(segment) => {
            return errors::graph(
                400,
                "BadRequest",
                &format!("Resource not found for the segment '{segment}'."),
            );
        }
    };
    // The target is the application's object id, whichever way the request names it, so that
    // journal entries and fault rules agree.
    let resolve = |a: &Address| {
        find(&world, a)
            .map(|i| world.state().applications[i].id.clone())
            .unwrap_or_else(|| addr_text(a))
    };
    let (operation, target, want) = match (&route, &method) {
        (Route::List, &Method::POST) => (Operation::GraphCreateApplication, None, Method::POST),
        (Route::List, _) => (Operation::GraphListApplications, None, Method::GET),
        (Route::Get(a), &Method::PATCH) => (
            Operation::GraphUpdateApplication,
            Some(resolve(a)),
            Method::PATCH,
        ),
        (Route::Get(a), _) => (
            Operation::GraphGetApplication,
            Some(resolve(a)),
            Method::GET,
        ),
        (Route::AddPassword(a), _) => (Operation::GraphAddPassword, Some(resolve(a)), Method::POST),
        (Route::RemovePassword(a), _) => (
            Operation::GraphRemovePassword,
            Some(resolve(a)),
            Method::POST,
        ),
        (Route::Owners(a), _) => (Operation::GraphListOwners, Some(resolve(a)), Method::GET),
        (Route::ServicePrincipals, &Method::POST) => {
            (Operation::GraphCreateServicePrincipal, None, Method::POST)
        }
        (Route::ServicePrincipals, _) => (Operation::GraphListServicePrincipals, None, Method::GET),
        (Route::ServicePrincipal(a), _) => (
            Operation::GraphGetServicePrincipal,
            Some(addr_text(a)),
            Method::GET,
        ),
    };
    let mut call = match world.begin(operation, method.as_str(), &path, target).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut response = if method != want {
        errors::graph(
            405,
            "Request_BadRequest",
            "Specified HTTP method is not allowed for the request target.",
        )
    } else {
        handle(
            &world,
            &mut call,
            route,
            &method,
            &headers,
            query.as_deref(),
            &body,
        )
    };
    errors::stamp_ids(&headers, &mut response);
    call.finish(response).await
}

fn addr_text(a: &Address) -> String {
    match a {
        Address::ObjectId(id) => id.clone(),
        Address::AppId(id) => id.clone(),
    }
}

fn handle(
    world: &World,
    call: &mut Call,
    route: Route,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Response {
    let tenant = world.state().tenant_id.clone();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let claims = match tokens::check(&world.token_key, auth, &tokens::GRAPH_AUDIENCES, &tenant) {
        Ok(c) => c,
        Err(r) => return unauthenticated(r),
    };
    call.caller = Some(claims.appid.clone());
    let params = Params::parse(query);
    let is_write = matches!(route, Route::AddPassword(_) | Route::RemovePassword(_))
        || *method == Method::POST
        || *method == Method::PATCH;
    if !claims
        .roles
        .iter()
        .any(|r| READ_ROLES.contains(&r.as_str()))
    {
        return denied();
    }
    if matches!(route, Route::List)
        && *method == Method::GET
        && params.filter.is_none()
        && !claims
            .roles
            .iter()
            .any(|r| TENANT_READ_ROLES.contains(&r.as_str()))
    {
        return denied();
    }
    let cost = match route {
        _ if is_write => 1,
        Route::List | Route::Get(_) => {
            if params.select.is_some() {
                1
            } else {
                2
            }
        }
        _ => 1,
    };
    let mut response = match throttle(world, &claims, cost, is_write) {
        Ok(percentage) => {
            let mut r = match route {
                Route::List if *method == Method::POST => {
                    crate::directory::create_application(world, call, &claims, body)
                }
                Route::List => list(world, headers, &params),
                Route::Get(a) if *method == Method::PATCH => match find(world, &a) {
                    Some(i) => crate::directory::update_application(world, call, &claims, i, body),
                    None => not_found(&a),
                },
                Route::Get(a) => get(world, &a, &params),
                Route::AddPassword(a) => add_password(world, call, &claims, &a, body),
                Route::RemovePassword(a) => remove_password(world, call, &claims, &a, body),
                Route::Owners(a) => match find(world, &a) {
                    Some(i) => crate::directory::list_owners(world, i),
                    None => not_found(&a),
                },
                Route::ServicePrincipals if *method == Method::POST => {
                    crate::directory::create_service_principal(world, call, &claims, body)
                }
                Route::ServicePrincipals => crate::directory::list_service_principals(
                    world,
                    headers,
                    params.filter.as_deref(),
                    params.count,
                    params.search,
                ),
                Route::ServicePrincipal(Address::ObjectId(id)) => {
                    crate::directory::get_service_principal(world, Some(&id), None)
                }
                Route::ServicePrincipal(Address::AppId(id)) => {
                    crate::directory::get_service_principal(world, None, Some(&id))
                }
            };
            if let Some(p) = percentage {
                r.headers_mut().insert(
                    "x-ms-throttle-limit-percentage",
                    HeaderValue::from_str(&format!("{p:.1}"))
                        .unwrap_or(HeaderValue::from_static("1.0")),
                );
            }
            r
        }
        Err(r) => r,
    };
    response
        .headers_mut()
        .insert("x-ms-resource-unit", HeaderValue::from(cost));
    response
}

fn unauthenticated(r: Rejection) -> Response {
    let message = match r {
        Rejection::Missing => "Access token is empty.",
        Rejection::Malformed => "Invalid JWT token. The token is malformed.",
        Rejection::Expired => "Lifetime validation failed, the token is expired.",
        Rejection::WrongAudience => "Access token validation failure. Invalid audience.",
        Rejection::WrongTenant => "Access token validation failure. Invalid issuer.",
    };
    let mut response = errors::graph(401, "InvalidAuthenticationToken", message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\""),
    );
    response
}

pub(crate) fn denied_response() -> Response {
    denied()
}

fn denied() -> Response {
    errors::graph(
        403,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
}

/// Charges the identity limits; `Ok(Some(p))` when usage passed 80 % of a limit.
fn throttle(
    world: &World,
    claims: &Claims,
    cost: u32,
    is_write: bool,
) -> Result<Option<f64>, Response> {
    let settings = world.state().settings.throttling.clone();
    if !settings.enabled {
        return Ok(None);
    }
    let scale = if settings.scale > 0.0 {
        settings.scale
    } else {
        1.0
    };
    let window = |secs: f64| Duration::from_secs_f64(secs * scale);
    let now = Instant::now();
    let mut windows = crate::world::lock(&world.windows);
    let ru_key = format!("graph-ru:{}", claims.appid);
    let w_key = format!("graph-w:{}", claims.appid);
    let checks: Vec<(&str, Duration, u32, u32, &str)> = if is_write {
        vec![
            (
                ru_key.as_str(),
                window(10.0),
                settings.graph_ru_per_10s,
                cost,
                "ResourceUnitLimitExceeded",
            ),
            (
                w_key.as_str(),
                window(150.0),
                settings.graph_writes_per_150s,
                1,
                "WriteLimitExceeded",
            ),
            (
                "graph-tenant-w",
                window(300.0),
                settings.graph_tenant_writes_per_300s,
                1,
                "WriteLimitExceeded",
            ),
        ]
    } else {
        vec![(
            ru_key.as_str(),
            window(10.0),
            settings.graph_ru_per_10s,
            cost,
            "ResourceUnitLimitExceeded",
        )]
    };
    for (key, win, limit, c, info) in &checks {
        if let Some(retry_after) = windows.would_admit(key, *win, *limit, *c, now) {
            let mut r = errors::graph(429, "TooManyRequests", "Please retry again later.");
            let h = r.headers_mut();
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&format!("{:.3}", retry_after.as_secs_f64()))
                    .unwrap_or(HeaderValue::from_static("1")),
            );
            h.insert("x-ms-throttle-information", HeaderValue::from_static(info));
            if let Ok(v) = HeaderValue::from_str(&format!(
                "Tenant_Application/ReadWrite/{}/{}",
                claims.appid, claims.tid
            )) {
                h.insert("x-ms-throttle-scope", v);
            }
            return Err(r);
        }
    }
    let mut highest: f64 = 0.0;
    for (key, win, limit, c, _) in &checks {
        if let Charge::Admitted { fraction } = windows.charge(key, *win, *limit, *c, now) {
            highest = highest.max(fraction);
        }
    }
    Ok((highest >= 0.8).then_some(highest))
}

struct Params {
    select: Option<Vec<String>>,
    filter: Option<String>,
    top: Option<usize>,
    skip: usize,
    count: bool,
    search: bool,
}

impl Params {
    fn parse(query: Option<&str>) -> Params {
        let mut p = Params {
            select: None,
            filter: None,
            top: None,
            skip: 0,
            count: false,
            search: false,
        };
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "$select" => {
                    p.select = Some(
                        v.split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect(),
                    )
                }
                "$filter" => p.filter = Some(v.into_owned()),
                "$top" => p.top = v.parse().ok(),
                "$skiptoken" => p.skip = v.parse().unwrap_or(0),
                "$count" => p.count = v.eq_ignore_ascii_case("true"),
                "$search" => p.search = true,
                _ => {}
            }
        }
        p
    }
}

fn find(world: &World, a: &Address) -> Option<usize> {
    let state = world.state();
    match a {
        Address::ObjectId(id) => state.app_by_object_id(id),
        Address::AppId(id) => state.app_by_app_id(id),
    }
}

fn not_found(a: &Address) -> Response {
    let id = addr_text(a);
    errors::graph(
        404,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

/// Graph's rendering of an application, as a lagging replica sees it.
pub(crate) fn render_app(
    app: &Application,
    settings: &Settings,
    select: Option<&[String]>,
    now: OffsetDateTime,
) -> Result<Map<String, Value>, Response> {
    if let Some(select) = select {
        for s in select {
            if !APPLICATION_PROPERTIES.contains(&s.as_str()) {
                return Err(errors::graph(
                    400,
                    "Request_BadRequest",
                    &format!(
                        "Could not find a property named '{s}' on type 'microsoft.graph.application'."
                    ),
                ));
            }
        }
    }
    let seen_at = now - time::Duration::milliseconds(settings.read_lag_ms as i64);
    let passwords: Vec<Value> = app
        .passwords
        .iter()
        .filter(|p| p.added <= seen_at && p.removed.is_none_or(|r| r > seen_at))
        .map(|p| password_json(p, false))
        .collect();
    let mut full = Map::new();
    full.insert("id".into(), json!(app.id));
    full.insert("appId".into(), json!(app.app_id));
    full.insert("displayName".into(), json!(app.display_name));
    full.insert("signInAudience".into(), json!(app.sign_in_audience));
    full.insert("createdDateTime".into(), json!(graph_time(app.created)));
    full.insert("passwordCredentials".into(), Value::Array(passwords));
    full.insert(
        "keyCredentials".into(),
        Value::Array(
            app.key_credentials
                .iter()
                .map(key_credential_json)
                .collect(),
        ),
    );
    full.insert("tags".into(), json!(app.tags));
    full.insert("identifierUris".into(), json!([]));
    full.insert(
        "web".into(),
        json!({"redirectUris": app.redirect_uris, "homePageUrl": null, "logoutUrl": null}),
    );
    Ok(match select {
        Some(select) => full
            .into_iter()
            .filter(|(k, _)| select.iter().any(|s| s == k))
            .collect(),
        None => full,
    })
}

/// Graph's rendering of a certificate credential in a read: `key` (the certificate itself) is
/// returned only to a `$select` of one object, and is null otherwise; the emulator keeps no
/// certificate, so it is always null here.
fn key_credential_json(k: &KeyCredential) -> Value {
    json!({
        "customKeyIdentifier": k.custom_key_identifier,
        "displayName": k.display_name,
        "endDateTime": k.end,
        "key": null,
        "keyId": k.key_id,
        "startDateTime": k.start,
        "type": "AsymmetricX509Cert",
        "usage": "Verify",
    })
}

/// A certificate credential valid from `start` to `end`, with a random thumbprint.
pub fn key_credential(
    display_name: Option<String>,
    start: OffsetDateTime,
    end: OffsetDateTime,
) -> KeyCredential {
    use base64::Engine as _;
    let thumbprint: [u8; 20] = rand::rng().random();
    KeyCredential {
        key_id: uuid::Uuid::new_v4().to_string(),
        display_name,
        custom_key_identifier: base64::engine::general_purpose::STANDARD.encode(thumbprint),
        start: graph_time(start),
        end: graph_time(end),
    }
}

fn password_json(p: &Password, with_secret: bool) -> Value {
    json!({
        "customKeyIdentifier": null,
        "displayName": p.display_name,
        "endDateTime": p.end_text,
        "hint": p.hint,
        "keyId": p.key_id,
        "secretText": if with_secret { Value::String(p.secret_text.clone()) } else { Value::Null },
        "startDateTime": p.start_text,
    })
}

fn get(world: &World, a: &Address, params: &Params) -> Response {
    let Some(i) = find(world, a) else {
        return not_found(a);
    };
    let state = world.state();
    let now = OffsetDateTime::now_utc();
    match render_app(
        &state.applications[i],
        &state.settings,
        params.select.as_deref(),
        now,
    ) {
        Ok(mut body) => {
            let context = match &params.select {
                Some(s) => format!(
                    "https://graph.microsoft.com/v1.0/$metadata#applications({})/$entity",
                    s.join(",")
                ),
                None => "https://graph.microsoft.com/v1.0/$metadata#applications/$entity".into(),
            };
            let mut out = Map::new();
            out.insert("@odata.context".into(), json!(context));
            out.append(&mut body);
            Json(Value::Object(out)).into_response()
        }
        Err(r) => r,
    }
}

fn list(world: &World, headers: &HeaderMap, params: &Params) -> Response {
    let app_filter = match &params.filter {
        None => None,
        Some(f) => match crate::directory::parse_filter(f, crate::directory::APP_FILTER_PROPERTIES)
        {
            Some(f) => Some(f),
            None => {
                return errors::graph(
                    400,
                    "Request_UnsupportedQuery",
                    "Unsupported or invalid query filter clause specified for property 'appId' of resource 'Application'.",
                );
            }
        },
    };
    let with_count = match crate::directory::advanced_query(
        headers,
        app_filter.as_ref(),
        params.count,
        params.search,
    ) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let top = params.top.unwrap_or(100).clamp(1, 999);
    let state = world.state();
    let now = OffsetDateTime::now_utc();
    // A listing is served by a lagging replica: an application created within the read lag is
    // not in it yet (so a client that lost the answer to its create may not find it at once).
    let seen_at = now - time::Duration::milliseconds(state.settings.read_lag_ms as i64);
    let matching: Vec<&Application> = state
        .applications
        .iter()
        .filter(|a| a.created <= seen_at)
        .filter(|a| {
            app_filter.as_ref().is_none_or(|f| {
                let field = |p: &str| match p {
                    "appId" => Some(a.app_id.clone()),
                    "displayName" => Some(a.display_name.clone()),
                    "id" => Some(a.id.clone()),
                    _ => None,
                };
                crate::directory::matches(f, &field, &a.tags)
            })
        })
        .collect();
    let mut value = Vec::new();
    for app in matching.iter().skip(params.skip).take(top) {
        match render_app(app, &state.settings, params.select.as_deref(), now) {
            Ok(m) => value.push(Value::Object(m)),
            Err(r) => return r,
        }
    }
    let mut body = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#applications",
        "value": value,
    });
    if with_count {
        body["@odata.count"] = json!(matching.len());
    }
    if params.skip + top < matching.len() {
        let graph = world.urls().graph_endpoint;
        let mut next = format!(
            "{graph}/v1.0/applications?$top={top}&$skiptoken={}",
            params.skip + top
        );
        if let Some(f) = &params.filter {
            next.push_str(&format!(
                "&$filter={}",
                url::form_urlencoded::byte_serialize(f.as_bytes()).collect::<String>()
            ));
        }
        if let Some(s) = &params.select {
            next.push_str(&format!("&$select={}", s.join(",")));
        }
        body["@odata.nextLink"] = json!(next);
    }
    Json(body).into_response()
}

/// Checks that the caller may write the application: `Application.ReadWrite.All`, or
/// `Application.ReadWrite.OwnedBy` and ownership.
pub(crate) fn may_write(claims: &Claims, app: &Application) -> bool {
    claims
        .roles
        .iter()
        .any(|r| r == "Application.ReadWrite.All")
        || (claims
            .roles
            .iter()
            .any(|r| r == "Application.ReadWrite.OwnedBy")
            && app
                .owners
                .iter()
                .any(|o| o.eq_ignore_ascii_case(&claims.appid)))
}

fn concurrency_violation(app: &Application, settings: &Settings, now: OffsetDateTime) -> bool {
    app.last_write
        .is_some_and(|t| (now - t).whole_milliseconds() < settings.concurrency_window_ms as i128)
}

fn conflict() -> Response {
    errors::graph(
        409,
        "Directory_ConcurrencyViolation",
        "Error due to concurrent requests being made to the tenant. Please wait briefly and retry.",
    )
}

fn add_password(
    world: &World,
    call: &mut Call,
    claims: &Claims,
    a: &Address,
    body: &[u8],
) -> Response {
    let requested = match parse_add_body(body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(i) = find(world, a) else {
        return not_found(a);
    };
    let mut state = world.state_mut();
    let settings = state.settings.clone();
    let app = &mut state.applications[i];
    call.target = Some(app.id.clone());
    if !may_write(claims, app) {
        return denied();
    }
    let now = OffsetDateTime::now_utc();
    if concurrency_violation(app, &settings, now) {
        return conflict();
    }
    // A server-made startDateTime is Azure's clock, which may be off the caller's.
    let (start, start_text) = requested.start.unwrap_or_else(|| {
        let azure_now = settings.azure_now();
        (azure_now, graph_time(azure_now))
    });
    let (end, end_text) = requested.end.unwrap_or_else(|| {
        let end = start
            .replace_year(start.year() + 2)
            .unwrap_or(start + time::Duration::days(730));
        (end, graph_time(end))
    });
    if end <= start {
        return errors::graph(
            400,
            "Request_BadRequest",
            "Key credential end date is invalid.",
        );
    }
    let live = app.passwords.iter().filter(|p| p.removed.is_none()).count();
    if PERSONAL_AUDIENCES.contains(&app.sign_in_audience.as_str()) && live >= 2 {
        let message = format!(
            "Not allowed to add {} passwords. You can only add a maximum of 2 passwords.",
            live + 1
        );
        return errors::graph_detailed(
            400,
            "TooManyAppPasswords",
            &message,
            json!([{"target": "passwordCredentials", "code": "TooManyAppPasswords", "message": message}]),
        );
    }
    if let Some(max) = settings.max_password_lifetime_secs
        && (end - start).whole_seconds() > max as i64
    {
        return errors::graph(
            400,
            "CredentialInvalidLifetimeAsPerAppPolicy",
            "Credential lifetime exceeds the max value allowed as per assigned policy '0d2c5d2b-5b1c-4b6b-9d1c-6b0f3a6d1c11'.",
        );
    }
    let secret = mint_secret();
    // Dates arrive and are shown in Azure's frame; they are kept in the true one, so that a
    // clock offset changed later does not move them.
    let offset = time::Duration::milliseconds(settings.clock_offset_ms);
    // The dates are echoed as they were sent.
    let password = Password {
        start_text,
        end_text,
        ..Password::new(
            uuid::Uuid::new_v4().to_string(),
            requested.display_name,
            secret,
            start - offset,
            end - offset,
            now,
        )
    };
    let answer = password_json(&password, true);
    call.key_id = Some(password.key_id.clone());
    call.effective = true;
    app.last_write = Some(now);
    app.passwords.push(password);
    prune_removed(app, &settings, now);
    let mut out = Map::new();
    out.insert(
        "@odata.context".into(),
        json!("https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.passwordCredential"),
    );
    if let Value::Object(mut m) = answer {
        out.append(&mut m);
    }
    Json(Value::Object(out)).into_response()
}

fn remove_password(
    world: &World,
    call: &mut Call,
    claims: &Claims,
    a: &Address,
    body: &[u8],
) -> Response {
    let key_id = match serde_json::from_slice::<Value>(body) {
        Ok(v) => match v
            .get("keyId")
            .and_then(Value::as_str)
            .map(uuid::Uuid::parse_str)
        {
            Some(Ok(k)) => k.to_string(),
            Some(Err(_)) => {
                return errors::graph(
                    400,
                    "Request_BadRequest",
                    "Invalid value specified for property 'keyId' of resource 'passwordCredential'.",
                );
            }
            None => {
                return errors::graph(
                    400,
                    "Request_BadRequest",
                    "The request body must contain the property 'keyId'.",
                );
            }
        },
        Err(_) => {
            return errors::graph(
                400,
                "BadRequest",
                "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
            );
        }
    };
    call.key_id = Some(key_id.clone());
    let Some(i) = find(world, a) else {
        return not_found(a);
    };
    let mut state = world.state_mut();
    let settings = state.settings.clone();
    let app = &mut state.applications[i];
    call.target = Some(app.id.clone());
    if !may_write(claims, app) {
        return denied();
    }
    let now = OffsetDateTime::now_utc();
    if concurrency_violation(app, &settings, now) {
        return conflict();
    }
    let Some(p) = app
        .passwords
        .iter_mut()
        .find(|p| p.removed.is_none() && p.key_id.eq_ignore_ascii_case(&key_id))
    else {
        return errors::graph(
            400,
            "Request_BadRequest",
            &format!("No password credential found with keyId {key_id}."),
        );
    };
    p.removed = Some(now);
    app.last_write = Some(now);
    call.effective = true;
    axum::http::StatusCode::NO_CONTENT.into_response()
}

/// Removed passwords stay only as long as a lagging read could still show them.
fn prune_removed(app: &mut Application, settings: &Settings, now: OffsetDateTime) {
    let keep = time::Duration::milliseconds(settings.read_lag_ms as i64 + 60_000);
    app.passwords
        .retain(|p| p.removed.is_none_or(|r| now - r < keep));
}

struct Requested {
    display_name: Option<String>,
    start: Option<(OffsetDateTime, String)>,
    end: Option<(OffsetDateTime, String)>,
}

fn parse_add_body(body: &[u8]) -> Result<Requested, Response> {
    let mut r = Requested {
        display_name: None,
        start: None,
        end: None,
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(r);
    }
    let bad_json = || {
        errors::graph(
            400,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        )
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| bad_json())?;
    let Some(obj) = v.as_object() else {
        return Err(bad_json());
    };
    let Some(pc) = obj.get("passwordCredential") else {
        return Ok(r);
    };
    if pc.is_null() {
        return Ok(r);
    }
    let Some(pc) = pc.as_object() else {
        return Err(errors::graph(
            400,
            "Request_BadRequest",
            "Invalid value specified for property 'passwordCredential'.",
        ));
    };
    match pc.get("displayName") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => r.display_name = Some(s.clone()),
        Some(_) => {
            return Err(errors::graph(
                400,
                "Request_BadRequest",
                "Invalid value specified for property 'displayName' of resource 'passwordCredential'.",
            ));
        }
    }
    for (field, slot) in [("startDateTime", &mut r.start), ("endDateTime", &mut r.end)] {
        match pc.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => match OffsetDateTime::parse(s, &Rfc3339) {
                Ok(t) => *slot = Some((t.to_offset(UtcOffset::UTC), s.clone())),
                Err(_) => {
                    return Err(errors::graph(
                        400,
                        "Request_BadRequest",
                        &format!(
                            "Invalid value specified for property '{field}' of resource 'passwordCredential'."
                        ),
                    ));
                }
            },
            Some(_) => {
                return Err(errors::graph(
                    400,
                    "Request_BadRequest",
                    &format!(
                        "Invalid value specified for property '{field}' of resource 'passwordCredential'."
                    ),
                ));
            }
        }
    }
    Ok(r)
}

/// Graph's server-made timestamps: UTC with 7 fractional digits.
pub fn graph_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100
    )
}

/// A secret in today's shape: 40 characters, with `Q~` after a 3-character hint and one more.
pub fn mint_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-~";
    let mut rng = rand::rng();
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    };
    format!("{}Q~{}", pick(4), pick(34))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_secrets_have_the_current_shape() {
        let s = mint_secret();
        assert_eq!(s.len(), 40);
        assert_eq!(&s[4..6], "Q~");
    }

    #[test]
    fn graph_time_has_seven_fractional_digits() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(graph_time(t), "2023-11-14T22:13:20.1234567Z");
    }

    #[test]
    fn both_address_forms_and_action_spellings_route() {
        assert!(matches!(
            parse_route("applications/abc/addPassword"),
            Ok(Route::AddPassword(Address::ObjectId(_)))
        ));
        assert!(matches!(
            parse_route("applications/abc/microsoft.graph.removePassword"),
            Ok(Route::RemovePassword(Address::ObjectId(_)))
        ));
        assert!(matches!(
            parse_route("applications(appId='x')/addPassword"),
            Ok(Route::AddPassword(Address::AppId(_)))
        ));
        assert!(matches!(
            parse_route("applications(appId='x')"),
            Ok(Route::Get(Address::AppId(_)))
        ));
        assert!(matches!(parse_route("applications"), Ok(Route::List)));
        assert!(parse_route("users").is_err());
        assert!(parse_route("applications/abc/delete").is_err());
    }
}

/// The caller the journal names for a change a person made in the portal.
pub const PORTAL: &str = "portal";

/// What a person adds in the portal: a display name of their choosing.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalPassword {
    pub display_name: Option<String>,
}

/// A person adds a password in the portal: Graph's rules (the two-password cap) apply, the
/// daemon's identity and its permissions do not. Journalled as `graph.add_password` by
/// `portal`.
pub fn portal_add_password(
    world: &World,
    app: &str,
    requested: PortalPassword,
) -> Result<Value, Response> {
    let mut state = world.state_mut();
    let settings = state.settings.clone();
    let i = state
        .app_by_object_id(app)
        .or_else(|| state.app_by_app_id(app))
        .ok_or_else(|| not_found(&Address::ObjectId(app.to_string())))?;
    let app = &mut state.applications[i];
    let path = format!("/v1.0/applications/{}/addPassword", app.id);
    let live = app.passwords.iter().filter(|p| p.removed.is_none()).count();
    if PERSONAL_AUDIENCES.contains(&app.sign_in_audience.as_str()) && live >= 2 {
        world.record_outside(
            Operation::GraphAddPassword,
            "POST",
            path,
            PORTAL,
            Some(app.id.clone()),
            None,
            400,
            false,
        );
        let message = format!(
            "Not allowed to add {} passwords. You can only add a maximum of 2 passwords.",
            live + 1
        );
        return Err(errors::graph(400, "TooManyAppPasswords", &message));
    }
    let now = OffsetDateTime::now_utc();
    let start = settings.azure_now();
    let end = start
        .replace_year(start.year() + 2)
        .unwrap_or(start + time::Duration::days(730));
    let secret = mint_secret();
    let offset = time::Duration::milliseconds(settings.clock_offset_ms);
    let password = Password {
        start_text: graph_time(start),
        end_text: graph_time(end),
        ..Password::new(
            uuid::Uuid::new_v4().to_string(),
            requested.display_name,
            secret,
            start - offset,
            end - offset,
            now,
        )
    };
    let answer = json!({
        "key_id": password.key_id,
        "display_name": password.display_name,
        "hint": password.hint,
    });
    world.record_outside(
        Operation::GraphAddPassword,
        "POST",
        path,
        PORTAL,
        Some(app.id.clone()),
        Some(password.key_id.clone()),
        200,
        true,
    );
    app.last_write = Some(now);
    app.passwords.push(password);
    prune_removed(app, &settings, now);
    Ok(answer)
}

/// A person deletes a password in the portal, whoever made it. Journalled as
/// `graph.remove_password` by `portal`.
pub fn portal_remove_password(world: &World, app: &str, key_id: &str) -> Result<(), Response> {
    let mut state = world.state_mut();
    let i = state
        .app_by_object_id(app)
        .or_else(|| state.app_by_app_id(app))
        .ok_or_else(|| not_found(&Address::ObjectId(app.to_string())))?;
    let app = &mut state.applications[i];
    let path = format!("/v1.0/applications/{}/removePassword", app.id);
    let now = OffsetDateTime::now_utc();
    let Some(p) = app
        .passwords
        .iter_mut()
        .find(|p| p.removed.is_none() && p.key_id.eq_ignore_ascii_case(key_id))
    else {
        world.record_outside(
            Operation::GraphRemovePassword,
            "POST",
            path,
            PORTAL,
            Some(app.id.clone()),
            Some(key_id.to_string()),
            404,
            false,
        );
        return Err(errors::graph(
            404,
            "Request_ResourceNotFound",
            &format!("No password credential found with keyId {key_id}."),
        ));
    };
    p.removed = Some(now);
    app.last_write = Some(now);
    world.record_outside(
        Operation::GraphRemovePassword,
        "POST",
        path,
        PORTAL,
        Some(app.id.clone()),
        Some(key_id.to_string()),
        204,
        true,
    );
    Ok(())
}

/// What a person changes on an enterprise application (the service principal) in the portal:
/// "Enabled for users to sign in?", the service principal's `accountEnabled`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalServicePrincipal {
    #[serde(rename = "accountEnabled")]
    pub account_enabled: bool,
}

/// A person turns an application's sign-in off (or on again) in the portal: Entra then refuses
/// every token request of the application with AADSTS7000112. Journalled as
/// `graph.update_service_principal` by `portal` (not an operation the emulator serves, so no
/// fault rule names it).
pub fn portal_update_service_principal(
    world: &World,
    app: &str,
    change: PortalServicePrincipal,
) -> Result<(), Response> {
    let mut state = world.state_mut();
    let i = state
        .app_by_app_id(app)
        .or_else(|| state.app_by_object_id(app))
        .ok_or_else(|| not_found(&Address::AppId(app.to_string())))?;
    let app = &mut state.applications[i];
    app.disabled = !change.account_enabled;
    world.record_outside(
        Operation::GraphUpdateServicePrincipal,
        "PATCH",
        format!("/v1.0/servicePrincipals(appId='{}')", app.app_id),
        PORTAL,
        Some(app.id.clone()),
        None,
        204,
        true,
    );
    Ok(())
}

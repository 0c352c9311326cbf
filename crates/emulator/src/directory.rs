//! The directory beyond password credentials: creating applications and service principals,
//! owners, application tags in `$filter` (with Graph's advanced-query rules), and the resource
//! service principals every tenant has (Graph, Key Vault, Azure Resource Manager, the Azure
//! Health Data Services APIs). `docs/decisions.md` cites where each resource's app id and names
//! come from.
//!
//! Over 600 lines: application and service principal creation, owners and `$filter` with
//! Graph's advanced-query rules share the tenant's lookups.

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::errors;
use crate::model::{Application, ServicePrincipal, State};
use crate::tokens::Claims;
use crate::world::{Call, World};

/// A resource every tenant holds a service principal for: display name, app id, names.
pub struct Resource {
    pub display_name: &'static str,
    pub app_id: &'static str,
    pub names: &'static [&'static str],
    pub wildcards: &'static [&'static str],
}

pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
pub const DICOM_APP_ID: &str = "75e725bf-66ce-4cea-9b9a-5c4caae57f33";
pub const DICOM_AUDIENCE: &str = "https://dicom.healthcareapis.azure.com";
pub const ARM_APP_ID: &str = "797f4846-ba00-4fd7-ba43-dac1f8f63013";

pub const RESOURCES: &[Resource] = &[
    Resource {
        display_name: "Microsoft Graph",
        app_id: GRAPH_APP_ID,
        names: &[
            "https://graph.microsoft.com",
            "https://canary.graph.microsoft.com",
        ],
        wildcards: &[],
    },
    Resource {
        display_name: "Azure Key Vault",
        app_id: "cfa8b339-82a2-471a-a3c9-0fc0be7a4093",
        names: &["https://vault.azure.net"],
        wildcards: &[],
    },
    Resource {
        display_name: "Azure Storage",
        app_id: "e406a681-f3d4-42a8-90b6-c2b029497af1",
        names: &["https://storage.azure.com"],
        wildcards: &[],
    },
    Resource {
        display_name: "Windows Azure Service Management API",
        app_id: ARM_APP_ID,
        names: &[
            "https://management.azure.com",
            "https://management.core.windows.net",
        ],
        wildcards: &[],
    },
    Resource {
        display_name: "Azure API for DICOM",
        app_id: DICOM_APP_ID,
        names: &[DICOM_AUDIENCE],
        wildcards: &[],
    },
    Resource {
        display_name: "Azure Healthcare APIs",
        app_id: "4f6778d8-5aef-43dc-a1ff-b073724b9495",
        names: &["https://azurehealthcareapis.com"],
        // A FHIR service's audience is its own URL.
        wildcards: &["https://*.fhir.azurehealthcareapis.com"],
    },
];

/// Adds the resource service principals a tenant always has (idempotent: a restored state keeps
/// its own).
pub fn ensure_resources(state: &mut State) {
    for r in RESOURCES {
        if state.sp_by_app_id(r.app_id).is_some() {
            continue;
        }
        let mut names: Vec<String> = vec![r.app_id.to_string()];
        names.extend(r.names.iter().map(|n| n.to_string()));
        state.service_principals.push(ServicePrincipal {
            id: uuid::Uuid::new_v4().to_string(),
            app_id: r.app_id.to_string(),
            display_name: r.display_name.to_string(),
            service_principal_names: names,
            tags: Vec::new(),
            wildcard_names: r.wildcards.iter().map(|w| w.to_string()).collect(),
        });
    }
    if state.subscription_id.is_empty() {
        state.subscription_id = uuid::Uuid::new_v4().to_string();
    }
}

/// The service principal of an application, made as `POST /servicePrincipals` would.
pub fn principal_for(app: &Application) -> ServicePrincipal {
    ServicePrincipal {
        id: uuid::Uuid::new_v4().to_string(),
        app_id: app.app_id.clone(),
        display_name: app.display_name.clone(),
        service_principal_names: vec![app.app_id.clone()],
        tags: Vec::new(),
        wildcard_names: Vec::new(),
    }
}

// ---- $filter --------------------------------------------------------------------------------

/// One clause of the `$filter` subset the emulator understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Clause {
    Eq(String, String),
    TagEq(String),
    TagStartsWith(String),
    Not(Box<Clause>),
}

#[derive(Debug, PartialEq)]
pub struct Filter {
    pub clauses: Vec<Clause>,
}

impl Filter {
    /// Whether the filter needs advanced query capabilities (`not`).
    pub fn advanced(&self) -> bool {
        self.clauses.iter().any(|c| matches!(c, Clause::Not(_)))
    }
}

fn quoted(s: &str) -> Option<String> {
    let inner = s.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

fn parse_clause(text: &str, properties: &[&str]) -> Option<Clause> {
    let t = text.trim();
    if let Some(inner) = t
        .strip_prefix("not(")
        .or_else(|| t.strip_prefix("not ("))
        .and_then(|s| s.strip_suffix(')'))
    {
        return Some(Clause::Not(Box::new(parse_clause(inner, properties)?)));
    }
    if let Some(body) = t
        .strip_prefix("tags/any(")
        .and_then(|s| s.strip_suffix(')'))
    {
        let (var, predicate) = body.split_once(':')?;
        let var = var.trim();
        let predicate = predicate.trim();
        if let Some(rest) = predicate.strip_prefix(var) {
            let value = rest.trim_start().strip_prefix("eq")?;
            return Some(Clause::TagEq(quoted(value)?));
        }
        let lower = predicate.to_ascii_lowercase();
        if lower.starts_with("startswith(") {
            let args = predicate["startswith(".len()..].strip_suffix(')')?;
            let (first, value) = args.split_once(',')?;
            if first.trim() != var {
                return None;
            }
            return Some(Clause::TagStartsWith(quoted(value)?));
        }
        return None;
    }
    let (property, rest) = t.split_once(char::is_whitespace)?;
    if !properties.contains(&property) {
        return None;
    }
    let value = rest.trim_start().strip_prefix("eq")?;
    Some(Clause::Eq(property.to_string(), quoted(value)?))
}

/// Parses `clause [and clause]...` over `properties` (and `tags/any(...)`).
pub fn parse_filter(text: &str, properties: &[&str]) -> Option<Filter> {
    let mut clauses = Vec::new();
    for part in text.split(" and ") {
        clauses.push(parse_clause(part, properties)?);
    }
    (!clauses.is_empty()).then_some(Filter { clauses })
}

fn clause_matches(c: &Clause, field: &dyn Fn(&str) -> Option<String>, tags: &[String]) -> bool {
    match c {
        Clause::Eq(p, v) => field(p).is_some_and(|f| f.eq_ignore_ascii_case(v)),
        Clause::TagEq(v) => tags.iter().any(|t| t.eq_ignore_ascii_case(v)),
        Clause::TagStartsWith(v) => tags
            .iter()
            .any(|t| t.to_ascii_lowercase().starts_with(&v.to_ascii_lowercase())),
        Clause::Not(inner) => !clause_matches(inner, field, tags),
    }
}

pub fn matches(f: &Filter, field: &dyn Fn(&str) -> Option<String>, tags: &[String]) -> bool {
    f.clauses.iter().all(|c| clause_matches(c, field, tags))
}

/// Graph's advanced-query rules for directory objects: `not` needs `ConsistencyLevel:
/// eventual` and `$count=true`; `$search` needs the header; `$count=true` without the header is
/// ignored. `Ok(count)` says whether to add `@odata.count`.
pub fn advanced_query(
    headers: &HeaderMap,
    filter: Option<&Filter>,
    count: bool,
    search: bool,
) -> Result<bool, Response> {
    let eventual = headers
        .get("consistencylevel")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("eventual"));
    if search && !eventual {
        return Err(errors::graph(
            400,
            "Request_UnsupportedQuery",
            "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
        ));
    }
    if search {
        return Err(errors::graph(
            400,
            "Request_UnsupportedQuery",
            "$search is not modelled by the emulator.",
        ));
    }
    if filter.is_some_and(Filter::advanced) && !(eventual && count) {
        return Err(errors::graph(
            400,
            "Request_UnsupportedQuery",
            "Unsupported query.",
        ));
    }
    Ok(eventual && count)
}

// ---- rendering --------------------------------------------------------------------------------

pub fn render_sp(sp: &ServicePrincipal, tenant: &str, app_tenant: Option<&str>) -> Value {
    json!({
        "id": sp.id,
        "appId": sp.app_id,
        "displayName": sp.display_name,
        "accountEnabled": true,
        "servicePrincipalType": "Application",
        "servicePrincipalNames": sp.service_principal_names,
        "tags": sp.tags,
        "appOwnerOrganizationId": app_tenant.unwrap_or(tenant),
    })
}

// ---- handlers ---------------------------------------------------------------------------------

const CREATE_PROPERTIES: &[&str] = &[
    "displayName",
    "signInAudience",
    "tags",
    "web",
    "description",
    "notes",
    "identifierUris",
    "requiredResourceAccess",
];

fn bad_property(name: &str, entity: &str) -> Response {
    errors::graph(
        400,
        "Request_BadRequest",
        &format!(
            "Property '{name}' does not exist on type 'microsoft.graph.{entity}'. Make sure to only use property names that are defined by the type."
        ),
    )
}

fn string_list(v: Option<&Value>, name: &str, entity: &str) -> Result<Vec<String>, Response> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad_value(name, entity))
            })
            .collect(),
        Some(_) => Err(bad_value(name, entity)),
    }
}

fn bad_value(name: &str, entity: &str) -> Response {
    errors::graph(
        400,
        "Request_BadRequest",
        &format!("Invalid value specified for property '{name}' of resource '{entity}'."),
    )
}

fn can_create(claims: &Claims) -> bool {
    claims
        .roles
        .iter()
        .any(|r| r == "Application.ReadWrite.All" || r == "Application.ReadWrite.OwnedBy")
}

/// `POST /applications`. A caller with `Application.ReadWrite.OwnedBy` becomes the new app's
/// owner (how Entra lets it manage what it made).
pub fn create_application(
    world: &World,
    call: &mut Call,
    claims: &Claims,
    body: &[u8],
) -> Response {
    if !can_create(claims) {
        return super::graph::denied_response();
    }
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return errors::graph(
            400,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        );
    };
    for k in obj.keys() {
        if !CREATE_PROPERTIES.contains(&k.as_str()) {
            return bad_property(k, "application");
        }
    }
    let Some(display_name) = obj.get("displayName").and_then(Value::as_str) else {
        return errors::graph(
            400,
            "Request_BadRequest",
            "A value is required for property 'displayName' of resource 'Application'.",
        );
    };
    let audience = match obj.get("signInAudience") {
        None | Some(Value::Null) => "AzureADandPersonalMicrosoftAccount".to_string(),
        Some(Value::String(s))
            if [
                "AzureADMyOrg",
                "AzureADMultipleOrgs",
                "AzureADandPersonalMicrosoftAccount",
                "PersonalMicrosoftAccount",
            ]
            .contains(&s.as_str()) =>
        {
            s.clone()
        }
        Some(_) => return bad_value("signInAudience", "application"),
    };
    let tags = match string_list(obj.get("tags"), "tags", "application") {
        Ok(t) => t,
        Err(r) => return r,
    };
    let redirect_uris = match obj.get("web") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(web)) => {
            match string_list(web.get("redirectUris"), "redirectUris", "webApplication") {
                Ok(r) => r,
                Err(r) => return r,
            }
        }
        Some(_) => return bad_value("web", "application"),
    };
    let now = OffsetDateTime::now_utc();
    let app = Application {
        id: uuid::Uuid::new_v4().to_string(),
        app_id: uuid::Uuid::new_v4().to_string(),
        display_name: display_name.to_string(),
        sign_in_audience: audience,
        owners: vec![claims.appid.clone()],
        graph_roles: Vec::new(),
        passwords: Vec::new(),
        key_credentials: Vec::new(),
        federated_credentials: Vec::new(),
        managed_identity: false,
        disabled: false,
        created: now,
        last_write: Some(now),
        tags,
        redirect_uris,
    };
    let mut state = world.state_mut();
    let settings = state.settings.clone();
    call.target = Some(app.id.clone());
    call.effective = true;
    let rendered = super::graph::render_app(&app, &settings, None, now + time::Duration::days(1));
    state.applications.push(app);
    drop(state);
    match rendered {
        Ok(mut body) => {
            let mut out = Map::new();
            out.insert(
                "@odata.context".into(),
                json!("https://graph.microsoft.com/v1.0/$metadata#applications/$entity"),
            );
            out.append(&mut body);
            (StatusCode::CREATED, Json(Value::Object(out))).into_response()
        }
        Err(r) => r,
    }
}

/// `PATCH /applications/{id}`: `displayName` and `tags` (what a person or IaC changes).
pub fn update_application(
    world: &World,
    call: &mut Call,
    claims: &Claims,
    index: usize,
    body: &[u8],
) -> Response {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return errors::graph(
            400,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        );
    };
    for k in obj.keys() {
        if !CREATE_PROPERTIES.contains(&k.as_str()) {
            return bad_property(k, "application");
        }
    }
    let mut state = world.state_mut();
    let app = &mut state.applications[index];
    call.target = Some(app.id.clone());
    if !super::graph::may_write(claims, app) {
        return super::graph::denied_response();
    }
    if let Some(v) = obj.get("tags") {
        match string_list(Some(v), "tags", "application") {
            Ok(t) => app.tags = t,
            Err(r) => return r,
        }
    }
    if let Some(v) = obj.get("displayName") {
        match v.as_str() {
            Some(s) => app.display_name = s.to_string(),
            None => return bad_value("displayName", "application"),
        }
    }
    app.last_write = Some(OffsetDateTime::now_utc());
    call.effective = true;
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /applications/{id}/owners`: the owners as directory objects.
pub fn list_owners(world: &World, index: usize) -> Response {
    let state = world.state();
    let app = &state.applications[index];
    let value: Vec<Value> = app
        .owners
        .iter()
        .filter_map(|o| state.sp_by_app_id(o))
        .map(|sp| {
            let mut v = render_sp(sp, &state.tenant_id, None);
            v["@odata.type"] = json!("#microsoft.graph.servicePrincipal");
            v
        })
        .collect();
    Json(json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#directoryObjects",
        "value": value,
    }))
    .into_response()
}

/// `POST /servicePrincipals` with `{"appId": ...}`.
pub fn create_service_principal(
    world: &World,
    call: &mut Call,
    claims: &Claims,
    body: &[u8],
) -> Response {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return errors::graph(
            400,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        );
    };
    for k in obj.keys() {
        if !["appId", "tags", "accountEnabled"].contains(&k.as_str()) {
            return bad_property(k, "servicePrincipal");
        }
    }
    let Some(app_id) = obj.get("appId").and_then(Value::as_str) else {
        return errors::graph(
            400,
            "Request_BadRequest",
            "A value is required for property 'appId' of resource 'ServicePrincipal'.",
        );
    };
    let tags = match string_list(obj.get("tags"), "tags", "servicePrincipal") {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut state = world.state_mut();
    let Some(i) = state.app_by_app_id(app_id) else {
        return errors::graph(
            400,
            "Request_BadRequest",
            &format!(
                "The appId '{app_id}' of the service principal does not reference a valid application object."
            ),
        );
    };
    if !super::graph::may_write(claims, &state.applications[i]) {
        return super::graph::denied_response();
    }
    if state.sp_by_app_id(app_id).is_some() {
        return errors::graph(
            409,
            "Request_MultipleObjectsWithSameKeyValue",
            &format!(
                "The service principal cannot be created, updated, or restored because the service principal name {app_id} is already in use."
            ),
        );
    }
    let mut sp = principal_for(&state.applications[i]);
    sp.tags = tags;
    call.target = Some(state.applications[i].id.clone());
    call.effective = true;
    let tenant = state.tenant_id.clone();
    let mut out = render_sp(&sp, &tenant, None);
    out["@odata.context"] =
        json!("https://graph.microsoft.com/v1.0/$metadata#servicePrincipals/$entity");
    state.service_principals.push(sp);
    (StatusCode::CREATED, Json(out)).into_response()
}

const SP_FILTER_PROPERTIES: &[&str] = &["appId", "displayName", "id"];
pub const APP_FILTER_PROPERTIES: &[&str] = &["appId", "displayName", "id"];

/// `GET /servicePrincipals[?$filter=...]`.
pub fn list_service_principals(
    world: &World,
    headers: &HeaderMap,
    filter: Option<&str>,
    count: bool,
    search: bool,
) -> Response {
    let filter = match filter {
        None => None,
        Some(f) => match parse_filter(f, SP_FILTER_PROPERTIES) {
            Some(f) => Some(f),
            None => {
                return errors::graph(
                    400,
                    "Request_UnsupportedQuery",
                    "Unsupported or invalid query filter clause specified for resource 'ServicePrincipal'.",
                );
            }
        },
    };
    let with_count = match advanced_query(headers, filter.as_ref(), count, search) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let state = world.state();
    let value: Vec<Value> = state
        .service_principals
        .iter()
        .filter(|sp| {
            filter.as_ref().is_none_or(|f| {
                let field = |p: &str| match p {
                    "appId" => Some(sp.app_id.clone()),
                    "displayName" => Some(sp.display_name.clone()),
                    "id" => Some(sp.id.clone()),
                    _ => None,
                };
                matches(f, &field, &sp.tags)
            })
        })
        .map(|sp| render_sp(sp, &state.tenant_id, None))
        .collect();
    let mut body = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#servicePrincipals",
    });
    if with_count {
        body["@odata.count"] = json!(value.len());
    }
    body["value"] = Value::Array(value);
    Json(body).into_response()
}

/// `GET /servicePrincipals/{id}` or `/servicePrincipals(appId='...')`.
pub fn get_service_principal(world: &World, id: Option<&str>, app_id: Option<&str>) -> Response {
    let state = world.state();
    let sp = match (id, app_id) {
        (Some(id), _) => state.sp_by_id(id),
        (_, Some(a)) => state.sp_by_app_id(a),
        _ => None,
    };
    match sp {
        Some(sp) => {
            let mut out = render_sp(sp, &state.tenant_id, None);
            out["@odata.context"] =
                json!("https://graph.microsoft.com/v1.0/$metadata#servicePrincipals/$entity");
            Json(out).into_response()
        }
        None => errors::graph(
            404,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{}' does not exist or one of its queried reference-property objects are not present.",
                id.or(app_id).unwrap_or_default()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_as_graph_writes_them() {
        let f = parse_filter("tags/any(t:t eq 'secret-rotator')", APP_FILTER_PROPERTIES).unwrap();
        assert_eq!(f.clauses, vec![Clause::TagEq("secret-rotator".into())]);
        assert!(!f.advanced());
        let f = parse_filter(
            "tags/any(t:startsWith(t,'secret-rotator:')) and displayName eq 'a'",
            APP_FILTER_PROPERTIES,
        )
        .unwrap();
        assert_eq!(f.clauses.len(), 2);
        let f = parse_filter("not(tags/any(t:t eq 'x'))", APP_FILTER_PROPERTIES).unwrap();
        assert!(f.advanced());
        assert!(parse_filter("signInAudience eq 'x'", APP_FILTER_PROPERTIES).is_none());
        assert!(parse_filter("tags/any(t:t ne 'x')", APP_FILTER_PROPERTIES).is_none());
    }

    #[test]
    fn the_resource_principals_answer_their_names_and_fhir_urls() {
        let mut state = State::default();
        ensure_resources(&mut state);
        assert_eq!(
            state
                .sp_for_resource("https://dicom.healthcareapis.azure.com/")
                .map(|s| s.app_id.as_str()),
            Some(DICOM_APP_ID)
        );
        assert!(
            state
                .sp_for_resource("https://ws-fhir1.fhir.azurehealthcareapis.com")
                .is_some()
        );
        assert!(
            state
                .sp_for_resource("https://fhir.azurehealthcareapis.com.evil")
                .is_none()
        );
        assert!(state.sp_for_resource("api://nothing-here").is_none());
        assert!(state.sp_for_resource(GRAPH_APP_ID).is_some());
    }
}

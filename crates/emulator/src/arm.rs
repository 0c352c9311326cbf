//! Azure Resource Manager, the little of it `register` needs: role definitions (the built-in
//! roles by name) and role assignments (`PUT`/`GET` by scope and name, api-version
//! 2022-04-01), and a DICOM service's DICOMweb endpoint (`/v1|v2/changefeed`, `/studies`) that
//! checks the token's audience and the caller's role assignment, as the service does.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::model::{RoleAssignment, State as Tenant};
use crate::operation::Operation;
use crate::tokens::{self, Claims, Rejection};
use crate::world::World;

/// Built-in roles: name, GUID, description. From Microsoft's built-in roles reference
/// (`docs/decisions.md` cites it).
pub const ROLES: &[(&str, &str, &str)] = &[
    (
        "Owner",
        "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
    ),
    (
        "User Access Administrator",
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        "Lets you manage user access to Azure resources.",
    ),
    (
        "Role Based Access Control Administrator",
        "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
        "Manage access to Azure resources by assigning roles using Azure RBAC.",
    ),
    (
        "Reader",
        "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        "View all resources, but does not allow you to make any changes.",
    ),
    (
        "DICOM Data Owner",
        "58a3b984-7adf-4c20-983a-32417c86fbc8",
        "Full access to DICOM data.",
    ),
    (
        "DICOM Data Reader",
        "e89c7a3c-2f64-4fa1-a847-3e4c9ba4283a",
        "Read and search DICOM data.",
    ),
];

/// Roles whose holders may write role assignments.
const ASSIGNERS: &[&str] = &[
    "Owner",
    "User Access Administrator",
    "Role Based Access Control Administrator",
];
const DICOM_ROLES: &[&str] = &["DICOM Data Owner", "DICOM Data Reader"];

const ARM_AUDIENCES: &[&str] = &[
    "https://management.azure.com",
    "https://management.azure.com/",
    "https://management.core.windows.net",
    "https://management.core.windows.net/",
    crate::directory::ARM_APP_ID,
];
const DICOM_AUDIENCES: &[&str] = &[
    crate::directory::DICOM_AUDIENCE,
    "https://dicom.healthcareapis.azure.com/",
    crate::directory::DICOM_APP_ID,
];

pub fn role_definition_id(subscription: &str, role: &str) -> Option<String> {
    ROLES
        .iter()
        .find(|(name, _, _)| name.eq_ignore_ascii_case(role))
        .map(|(_, guid, _)| {
            format!("/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{guid}")
        })
}

fn role_name_of(definition_id: &str) -> Option<&'static str> {
    let guid = definition_id.rsplit('/').next()?;
    ROLES
        .iter()
        .find(|(_, g, _)| g.eq_ignore_ascii_case(guid))
        .map(|(n, _, _)| *n)
}

/// Whether `assigned` covers `scope` (the same scope or a parent of it).
fn covers(assigned: &str, scope: &str) -> bool {
    let a = assigned.trim_end_matches('/').to_ascii_lowercase();
    let s = scope.trim_end_matches('/').to_ascii_lowercase();
    s == a || s.starts_with(&format!("{a}/"))
}

/// Whether the service principal `principal_id` holds one of `roles` at `scope` or above.
pub fn holds_role(state: &Tenant, principal_id: &str, roles: &[&str], scope: &str) -> bool {
    state.role_assignments.iter().any(|r| {
        r.principal_id.eq_ignore_ascii_case(principal_id)
            && covers(&r.scope, scope)
            && role_name_of(&r.role_definition_id).is_some_and(|n| roles.contains(&n))
    })
}

fn arm_error(status: u16, code: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

pub fn router(world: Arc<World>) -> axum::Router {
    axum::Router::new()
        .route("/{*rest}", axum::routing::any(dispatch))
        .layer(axum::middleware::map_response_with_state(
            world.clone(),
            crate::world::azure_date,
        ))
        .with_state(world)
}

fn authenticate(
    world: &World,
    headers: &HeaderMap,
    audiences: &[&str],
) -> Result<Claims, Rejection> {
    let tenant = world.state().tenant_id.clone();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    tokens::check(&world.token_key, auth, audiences, &tenant)
}

async fn dispatch(
    State(world): State<Arc<World>>,
    Path(rest): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let path = format!("/{rest}");
    let lower = path.to_ascii_lowercase();
    let assignments = "/providers/microsoft.authorization/roleassignments/";
    let definitions = "/providers/microsoft.authorization/roledefinitions";
    let (operation, scope, name) = if let Some(at) = lower.find(assignments) {
        (
            if method == Method::PUT {
                Operation::ArmPutRoleAssignment
            } else {
                Operation::ArmGetRoleAssignment
            },
            path[..at].to_string(),
            Some(path[at + assignments.len()..].to_string()),
        )
    } else if lower.ends_with(definitions) {
        (
            Operation::ArmListRoleDefinitions,
            path[..path.len() - definitions.len()].to_string(),
            None,
        )
    } else {
        return arm_error(
            404,
            "InvalidResourceType",
            &format!("The resource type could not be found for '{path}'."),
        );
    };
    let mut call = match world
        .begin(operation, method.as_str(), &path, Some(scope.clone()))
        .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let response = (|| {
        if !params.iter().any(|(k, _)| k == "api-version") {
            return arm_error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            );
        }
        let claims = match authenticate(&world, &headers, ARM_AUDIENCES) {
            Ok(c) => c,
            Err(Rejection::Missing) => {
                return arm_error(
                    401,
                    "AuthenticationFailed",
                    "Authentication failed. The 'Authorization' header is missing.",
                );
            }
            Err(Rejection::Expired) => {
                return arm_error(
                    401,
                    "ExpiredAuthenticationToken",
                    "The access token expiry UTC time is earlier than current UTC time.",
                );
            }
            Err(_) => {
                return arm_error(
                    401,
                    "InvalidAuthenticationToken",
                    "The access token is invalid.",
                );
            }
        };
        call.caller = Some(claims.appid.clone());
        match (operation, name) {
            (Operation::ArmListRoleDefinitions, _) => list_definitions(&world, &scope, &params),
            (Operation::ArmPutRoleAssignment, Some(name)) => {
                let r = put_assignment(&world, &claims, &scope, &name, &body);
                if r.status().is_success() {
                    call.effective = true;
                }
                r
            }
            (_, Some(name)) => get_assignment(&world, &scope, &name),
            _ => arm_error(400, "BadRequest", "Unsupported request."),
        }
    })();
    call.finish(response).await
}

fn list_definitions(world: &World, scope: &str, params: &[(String, String)]) -> Response {
    let filter = params
        .iter()
        .find(|(k, _)| k == "$filter")
        .map(|(_, v)| v.clone());
    let wanted = match &filter {
        None => None,
        Some(f) => {
            let value = f
                .trim()
                .strip_prefix("roleName eq '")
                .and_then(|s| s.strip_suffix('\''));
            match value {
                Some(v) => Some(v.to_string()),
                None => {
                    return arm_error(
                        400,
                        "UnsupportedQuery",
                        "The filter is not supported; use roleName eq '<name>'.",
                    );
                }
            }
        }
    };
    let subscription = world.state().subscription_id.clone();
    let value: Vec<Value> = ROLES
        .iter()
        .filter(|(name, _, _)| wanted.as_ref().is_none_or(|w| name.eq_ignore_ascii_case(w)))
        .map(|(name, guid, description)| {
            json!({
                "id": format!("/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{guid}"),
                "type": "Microsoft.Authorization/roleDefinitions",
                "name": guid,
                "properties": {
                    "roleName": name,
                    "type": "BuiltInRole",
                    "description": description,
                    "assignableScopes": ["/"],
                    "permissions": [],
                },
            })
        })
        .collect();
    let _ = scope;
    Json(json!({ "value": value })).into_response()
}

fn render_assignment(r: &RoleAssignment) -> Value {
    // ARM sends `condition`, `description` and the like as null; the description types them
    // as plain strings, so they are left out rather than sent as null.
    json!({
        "id": format!("{}/providers/Microsoft.Authorization/roleAssignments/{}", r.scope, r.name),
        "type": "Microsoft.Authorization/roleAssignments",
        "name": r.name,
        "properties": {
            "roleDefinitionId": r.role_definition_id,
            "principalId": r.principal_id,
            "principalType": r.principal_type,
            "scope": r.scope,
            "createdOn": r.created,
            "updatedOn": r.created,
        },
    })
}

fn get_assignment(world: &World, scope: &str, name: &str) -> Response {
    let state = world.state();
    match state.role_assignments.iter().find(|r| {
        r.name.eq_ignore_ascii_case(name) && covers(&r.scope, scope) && covers(scope, &r.scope)
    }) {
        Some(r) => Json(render_assignment(r)).into_response(),
        None => arm_error(
            404,
            "RoleAssignmentNotFound",
            &format!("The role assignment '{name}' is not found."),
        ),
    }
}

fn put_assignment(
    world: &World,
    claims: &Claims,
    scope: &str,
    name: &str,
    body: &[u8],
) -> Response {
    if uuid::Uuid::parse_str(name).is_err() {
        return arm_error(
            400,
            "InvalidRoleAssignmentId",
            &format!(
                "The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."
            ),
        );
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return arm_error(
            400,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized.",
        );
    };
    let props = &v["properties"];
    let (Some(definition), Some(principal)) = (
        props["roleDefinitionId"].as_str(),
        props["principalId"].as_str(),
    ) else {
        return arm_error(
            400,
            "InvalidRequestContent",
            "The request content must have properties.roleDefinitionId and properties.principalId.",
        );
    };
    let principal_type = props["principalType"]
        .as_str()
        .unwrap_or("ServicePrincipal")
        .to_string();
    let mut state = world.state_mut();
    let subscription = state.subscription_id.clone();
    if !covers(&format!("/subscriptions/{subscription}"), scope) {
        return arm_error(
            404,
            "SubscriptionNotFound",
            &format!("The subscription of scope '{scope}' could not be found."),
        );
    }
    let caller = state
        .sp_by_app_id(&claims.appid)
        .map(|s| s.id.clone())
        .unwrap_or_default();
    if !holds_role(&state, &caller, ASSIGNERS, scope) {
        return arm_error(
            403,
            "AuthorizationFailed",
            &format!(
                "The client '{}' with object id '{caller}' does not have authorization to perform action 'Microsoft.Authorization/roleAssignments/write' over scope '{scope}/providers/Microsoft.Authorization/roleAssignments/{name}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                claims.appid
            ),
        );
    }
    if role_name_of(definition).is_none()
        || !definition.to_ascii_lowercase().starts_with(&format!(
            "/subscriptions/{subscription}/providers/microsoft.authorization/roledefinitions/"
        ))
    {
        return arm_error(
            400,
            "RoleDefinitionDoesNotExist",
            &format!(
                "The specified role definition with ID '{}' does not exist.",
                definition.rsplit('/').next().unwrap_or(definition)
            ),
        );
    }
    if state.sp_by_id(principal).is_none() {
        return arm_error(
            400,
            "PrincipalNotFound",
            &format!(
                "Principal {} does not exist in the directory {}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype",
                principal.replace('-', ""),
                state.tenant_id
            ),
        );
    }
    let wanted = RoleAssignment {
        name: name.to_ascii_lowercase(),
        scope: scope.to_string(),
        role_definition_id: definition.to_string(),
        principal_id: principal.to_string(),
        principal_type,
        created: crate::graph::graph_time(OffsetDateTime::now_utc()),
    };
    let same = |r: &RoleAssignment| {
        r.principal_id.eq_ignore_ascii_case(&wanted.principal_id)
            && r.role_definition_id
                .eq_ignore_ascii_case(&wanted.role_definition_id)
            && r.scope.eq_ignore_ascii_case(&wanted.scope)
    };
    if let Some(existing) = state
        .role_assignments
        .iter()
        .find(|r| r.name == wanted.name)
    {
        if same(existing) {
            return (StatusCode::CREATED, Json(render_assignment(existing))).into_response();
        }
        return arm_error(
            409,
            "RoleAssignmentUpdateNotPermitted",
            "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
        );
    }
    if state.role_assignments.iter().any(same) {
        return arm_error(
            409,
            "RoleAssignmentExists",
            "The role assignment already exists.",
        );
    }
    let out = render_assignment(&wanted);
    state.role_assignments.push(wanted);
    (StatusCode::CREATED, Json(out)).into_response()
}

// ---- DICOMweb ---------------------------------------------------------------------------------

#[derive(Clone)]
struct DicomState {
    world: Arc<World>,
    service: String,
}

pub fn dicom_router(world: Arc<World>, service: String) -> axum::Router {
    axum::Router::new()
        .route("/{*rest}", axum::routing::get(dicom))
        .layer(axum::middleware::map_response_with_state(
            world.clone(),
            crate::world::azure_date,
        ))
        .with_state(DicomState { world, service })
}

async fn dicom(
    State(ds): State<DicomState>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/{rest}");
    let mut call = match ds
        .world
        .begin(Operation::DicomGet, "GET", &path, Some(ds.service.clone()))
        .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    let response = (|| {
        let route = rest.split_once('/');
        let known = matches!(
            route,
            Some(("v1" | "v2", "changefeed" | "changefeed/latest" | "studies"))
        );
        if !known {
            return (StatusCode::NOT_FOUND, "").into_response();
        }
        let claims = match authenticate(&ds.world, &headers, DICOM_AUDIENCES) {
            Ok(c) => c,
            Err(_) => {
                let mut r = StatusCode::UNAUTHORIZED.into_response();
                let authority = ds.world.urls().authority_host;
                let tenant = ds.world.state().tenant_id.clone();
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "Bearer authorization_uri=\"{authority}/{tenant}\", resource_id=\"{}\", realm=\"{}\"",
                    crate::directory::DICOM_AUDIENCE,
                    crate::directory::DICOM_AUDIENCE
                )) {
                    r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                return r;
            }
        };
        call.caller = Some(claims.appid.clone());
        let state = ds.world.state();
        let Some(service) = state.dicom_services.get(&ds.service) else {
            return (StatusCode::NOT_FOUND, "").into_response();
        };
        let principal = state
            .sp_by_app_id(&claims.appid)
            .map(|s| s.id.clone())
            .unwrap_or_default();
        if !holds_role(&state, &principal, DICOM_ROLES, &service.resource_id) {
            return (
                StatusCode::FORBIDDEN,
                Json(json!({"error": {"code": "Forbidden", "message": "Authorization failed."}})),
            )
                .into_response();
        }
        if rest.ends_with("studies") {
            return StatusCode::NO_CONTENT.into_response();
        }
        Json(json!([])).into_response()
    })();
    call.finish(response).await
}

/// The ARM resource id of a DICOM service the emulator hosts.
pub fn dicom_resource_id(subscription: &str, name: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/emulator/providers/Microsoft.HealthcareApis/workspaces/emulator/dicomservices/{name}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parent_scope_covers_its_children_only() {
        assert!(covers(
            "/subscriptions/a",
            "/subscriptions/a/resourceGroups/x"
        ));
        assert!(covers("/subscriptions/a", "/subscriptions/a"));
        assert!(!covers("/subscriptions/a", "/subscriptions/ab"));
        assert!(!covers(
            "/subscriptions/a/resourceGroups/x",
            "/subscriptions/a"
        ));
    }
}

//! The control API: seed the tenant, inspect state and the journal, inject faults, release
//! holds. Served over HTTPS on its own loopback listener; it has no authentication, because it
//! exists for tests and rehearsals on one machine.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::Emulator;
use crate::model::{Seed, Settings};
use crate::operation::{Operation, UnknownOperation};
use crate::world::FaultRule;

pub fn router(emulator: Emulator) -> axum::Router {
    axum::Router::new()
        .route("/control/seed", post(seed))
        .route("/control/state", get(state))
        .route("/control/journal", get(journal).delete(clear_journal))
        .route(
            "/control/faults",
            get(faults).post(add_faults).delete(clear_faults),
        )
        .route("/control/holds", get(holds))
        .route("/control/holds/release-all", post(release_all))
        .route("/control/holds/{id}/release", post(release))
        .route("/control/settings", get(settings).put(put_settings))
        .route("/control/minted", get(minted))
        .route("/control/operations", get(operations))
        .route(
            "/control/portal/applications/{app}/passwords",
            post(portal_add_password),
        )
        .route(
            "/control/portal/applications/{app}/passwords/{key_id}",
            axum::routing::delete(portal_remove_password),
        )
        .route(
            "/control/portal/service-principals/{app}",
            axum::routing::patch(portal_update_service_principal),
        )
        .with_state(emulator)
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

async fn seed(State(em): State<Emulator>, body: axum::body::Bytes) -> Response {
    let seed: Seed = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return bad_request(format!("invalid seed: {e}")),
    };
    match em.seed(seed).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => bad_request(format!("{e:#}")),
    }
}

async fn state(State(em): State<Emulator>) -> Response {
    let state = em.world().state().clone();
    let apps: Vec<Value> = state
        .applications
        .iter()
        .map(|a| {
            json!({
                "id": a.id,
                "app_id": a.app_id,
                "display_name": a.display_name,
                "sign_in_audience": a.sign_in_audience,
                "owners": a.owners,
                "password_credentials": a.passwords.iter().filter(|p| p.removed.is_none()).map(|p| json!({
                    "key_id": p.key_id,
                    "display_name": p.display_name,
                    "hint": p.hint,
                    "start_date_time": p.start_text,
                    "end_date_time": p.end_text,
                })).collect::<Vec<_>>(),
                "key_credentials": a.key_credentials.iter().map(|k| json!({
                    "key_id": k.key_id,
                    "display_name": k.display_name,
                    "end_date_time": k.end,
                })).collect::<Vec<_>>(),
                "account_enabled": !a.disabled,
            })
        })
        .collect();
    let vaults: serde_json::Map<String, Value> = state
        .vaults
        .iter()
        .map(|(name, v)| {
            let secrets: serde_json::Map<String, Value> = v
                .secrets
                .values()
                .map(|s| {
                    (
                        s.name.clone(),
                        Value::Array(
                            s.versions
                                .iter()
                                .map(|ver| json!({"version": ver.version, "tags": ver.tags, "enabled": ver.enabled, "exp": ver.exp, "created": ver.created}))
                                .collect(),
                        ),
                    )
                })
                .collect();
            (name.clone(), json!({"secrets": secrets, "deleted": v.deleted.keys().collect::<Vec<_>>()}))
        })
        .collect();
    Json(json!({"tenant_id": state.tenant_id, "applications": apps, "vaults": vaults}))
        .into_response()
}

/// Every secret value the tenant holds or held (passwords and vault versions): what a leak
/// audit searches the daemon's outputs for.
async fn minted(State(em): State<Emulator>) -> Response {
    let state = em.world().state();
    let mut values: Vec<&str> = state
        .applications
        .iter()
        .flat_map(|a| a.passwords.iter().map(|p| p.secret_text.as_str()))
        .collect();
    for v in state.vaults.values() {
        for s in v.secrets.values() {
            values.extend(s.versions.iter().map(|x| x.value.as_str()));
        }
    }
    Json(json!({ "values": values })).into_response()
}

/// The operations the emulator serves, as the journal and fault rules name them.
async fn operations() -> Response {
    Json(Operation::served().collect::<Vec<_>>()).into_response()
}

async fn journal(State(em): State<Emulator>) -> Response {
    Json(em.world().journal()).into_response()
}

async fn clear_journal(State(em): State<Emulator>) -> StatusCode {
    em.world().clear_journal();
    StatusCode::NO_CONTENT
}

async fn faults(State(em): State<Emulator>) -> Response {
    Json(em.world().faults()).into_response()
}

async fn add_faults(State(em): State<Emulator>, body: axum::body::Bytes) -> Response {
    let (values, what) = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(values)) => (values, "invalid fault rules"),
        Ok(value) => (vec![value], "invalid fault rule"),
        Err(e) => return bad_request(format!("invalid JSON: {e}")),
    };
    // The operation is checked first, so that a misspelt one is named as such rather than as a
    // JSON error; an operation only journalled (a portal change) cannot be faulted.
    for v in &values {
        if let Some(name) = v.get("operation").and_then(Value::as_str) {
            match name.parse::<Operation>() {
                Ok(op) if op.is_served() => {}
                _ => return bad_request(UnknownOperation(name.to_string()).to_string()),
            }
        }
    }
    let mut rules = Vec::with_capacity(values.len());
    for v in values {
        match serde_json::from_value::<FaultRule>(v) {
            Ok(r) => rules.push(r),
            Err(e) => return bad_request(format!("{what}: {e}")),
        }
    }
    for r in rules {
        em.world().add_fault(r);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn clear_faults(State(em): State<Emulator>) -> StatusCode {
    em.world().clear_faults();
    StatusCode::NO_CONTENT
}

async fn holds(State(em): State<Emulator>) -> Response {
    Json(em.world().held_calls()).into_response()
}

async fn release(State(em): State<Emulator>, Path(id): Path<u64>) -> StatusCode {
    if em.world().release(id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn release_all(State(em): State<Emulator>) -> Response {
    Json(json!({"released": em.world().release_all()})).into_response()
}

async fn settings(State(em): State<Emulator>) -> Response {
    Json(em.world().state().settings.clone()).into_response()
}

async fn put_settings(State(em): State<Emulator>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<Settings>(&body) {
        Ok(s) => {
            em.world().state_mut().settings = s;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => bad_request(format!("invalid settings: {e}")),
    }
}

/// A person in the portal adds a password (`{"display_name": ...}`) to an application
/// (object id or app id).
async fn portal_add_password(
    State(em): State<Emulator>,
    Path(app): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let requested: crate::graph::PortalPassword = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid password: {e}")),
    };
    match crate::graph::portal_add_password(em.world(), &app, requested) {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(r) => r,
    }
}

/// A person in the portal deletes a password, whoever made it.
async fn portal_remove_password(
    State(em): State<Emulator>,
    Path((app, key_id)): Path<(String, String)>,
) -> Response {
    match crate::graph::portal_remove_password(em.world(), &app, &key_id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

/// A person in the portal turns an application's sign-in off or on
/// (`{"accountEnabled": false}`, the service principal's property); `{app}` is the app id or the
/// application's object id.
async fn portal_update_service_principal(
    State(em): State<Emulator>,
    Path(app): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let change: crate::graph::PortalServicePrincipal = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return bad_request(format!("invalid service principal change: {e}")),
    };
    match crate::graph::portal_update_service_principal(em.world(), &app, change) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

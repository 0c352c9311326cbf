//! The error bodies of the three services, in their real shapes.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn status_of(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An Entra (STS) OAuth error: `{"error", "error_description", "error_codes", ...}`.
pub fn entra(status: u16, error: &str, code: u32, text: &str) -> Response {
    let now = OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let trace = request_id();
    let correlation = request_id();
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {stamp}"),
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    (status_of(status), Json(body)).into_response()
}

/// A Graph OData error: `{"error": {"code", "message", "innerError": {...}}}`.
pub fn graph(status: u16, code: &str, message: &str) -> Response {
    graph_detailed(status, code, message, serde_json::Value::Null)
}

/// A Graph OData error with a `details` array.
pub fn graph_detailed(
    status: u16,
    code: &str,
    message: &str,
    details: serde_json::Value,
) -> Response {
    let id = request_id();
    let date = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default();
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {"date": date.trim_end_matches('Z'), "request-id": id, "client-request-id": id}
        }
    });
    let mut body = body;
    if !details.is_null() {
        body["error"]["details"] = details;
    }
    (status_of(status), Json(body)).into_response()
}

/// A Key Vault error: `{"error": {"code", "message", "innererror"?}}`.
pub fn keyvault(status: u16, code: &str, inner: Option<&str>, message: &str) -> Response {
    let mut error = json!({"code": code, "message": message});
    if let Some(inner) = inner {
        error["innererror"] = json!({"code": inner});
    }
    (status_of(status), Json(json!({ "error": error }))).into_response()
}

/// The answer to an injected status fault, shaped like the service's own error.
pub fn injected(
    operation: crate::operation::Operation,
    status: u16,
    code: Option<String>,
    retry_after: Option<String>,
) -> Response {
    let mut response = if operation.is_token() {
        let (error, aad) = match status {
            401 => ("invalid_client", 7000215),
            400 => ("invalid_request", 900144),
            429 => ("temporarily_unavailable", 90024),
            _ => ("temporarily_unavailable", 90033),
        };
        let aad = code.as_deref().and_then(|c| c.parse().ok()).unwrap_or(aad);
        entra(status, error, aad, "Injected by the emulator.")
    } else if operation.is_graph() {
        let default = match status {
            400 => "Request_BadRequest",
            401 => "InvalidAuthenticationToken",
            403 => "Authorization_RequestDenied",
            404 => "Request_ResourceNotFound",
            409 => "Directory_ConcurrencyViolation",
            429 => "TooManyRequests",
            503 => "serviceNotAvailable",
            504 => "UnknownError",
            _ => "generalException",
        };
        let code = code.unwrap_or_else(|| default.to_string());
        let message = match code.as_str() {
            "Directory_ConcurrencyViolation" => {
                "Error due to concurrent requests being made to the tenant. Please wait briefly and retry."
            }
            "TooManyRequests" => "Please retry again later.",
            "Authorization_RequestDenied" => "Insufficient privileges to complete the operation.",
            _ => "Injected by the emulator.",
        };
        graph(status, &code, message)
    } else {
        let default = match status {
            400 => "BadParameter",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "SecretNotFound",
            409 => "Conflict",
            429 => "Throttled",
            _ => "InternalServerError",
        };
        let code = code.unwrap_or_else(|| default.to_string());
        let message = if status == 429 {
            "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached"
        } else {
            "Injected by the emulator."
        };
        keyvault(status, &code, None, message)
    };
    if let Some(ra) = retry_after
        && let Ok(v) = HeaderValue::from_str(&ra)
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// Copies `x-ms-client-request-id` and adds the request id headers every Azure answer carries.
pub fn stamp_ids(request: &HeaderMap, response: &mut Response) {
    let headers = response.headers_mut();
    if let Some(v) = request.get("x-ms-client-request-id") {
        headers.insert("x-ms-client-request-id", v.clone());
    }
    if let Some(v) = request.get("client-request-id") {
        headers.insert("client-request-id", v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        headers.insert("x-ms-request-id", v.clone());
        headers.insert("request-id", v);
    }
}

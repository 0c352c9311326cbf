//! The daemon's HTTP: `/metrics`, `/healthz`, `/readyz`, `/v1/clients` and the token-protected
//! `POST /v1/clients/{name}/rotate`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use crate::daemon::{Command, Shared};

pub fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/clients", get(clients))
        .route("/v1/clients/{name}/rotate", post(rotate))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(shared)
}

async fn metrics(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            s.metrics.encode_openmetrics(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            s.metrics.encode_text(),
        )
            .into_response()
    }
}

async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    if s.alive() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler loop has stalled\n",
        )
            .into_response()
    }
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    match s.readiness() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn clients(State(s): State<Arc<Shared>>) -> Response {
    Json(s.status()).into_response()
}

#[derive(Deserialize)]
struct RotateQuery {
    #[serde(default)]
    revoke_previous: bool,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn rotate(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    query: Result<Query<RotateQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    // The endpoint takes no body; reading it through the 64 KiB limit refuses big ones (413).
    _body: axum::body::Bytes,
) -> Response {
    let Some(expected) = s.admin_token() else {
        return error(
            StatusCode::FORBIDDEN,
            "admin API writes are disabled: set server.admin_token_file",
        );
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let matches: bool = presented
        .as_bytes()
        .ct_eq(expected.expose_secret().as_bytes())
        .into();
    if !matches {
        let mut r = error(StatusCode::UNAUTHORIZED, "a valid admin token is required");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid query: revoke_previous takes true or false",
        );
    };
    let (reply, answer) = oneshot::channel();
    if s.commands
        .send(Command::Rotate {
            client: name.clone(),
            revoke_previous: q.revoke_previous,
            reply,
        })
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping");
    }
    match answer.await {
        Ok(crate::daemon::RotateAnswer::Started { preflight }) => {
            let accepted = |status: &str| {
                (StatusCode::ACCEPTED, Json(json!({ "client": name, "status": status, "revoke_previous": q.revoke_previous }))).into_response()
            };
            if !q.revoke_previous {
                return accepted("rotation started");
            }
            // A revocation is refused when the previous credential is not provably this
            // client's: wait for the reconcile to say so before claiming anything.
            match tokio::time::timeout(PREFLIGHT_WAIT, preflight).await {
                Ok(Ok(Ok(()))) => accepted("rotation started"),
                Ok(Ok(Err(reason))) => error(StatusCode::CONFLICT, reason),
                Ok(Err(_)) => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the rotation did not start; see /v1/clients",
                ),
                Err(_) => accepted(
                    "queued: the client is busy; ownership of the previous credential is checked before anything is written",
                ),
            }
        }
        Ok(crate::daemon::RotateAnswer::InFlight) => error(
            StatusCode::CONFLICT,
            format!("a reconcile of '{name}' is already in flight"),
        ),
        Ok(crate::daemon::RotateAnswer::Unknown) => {
            error(StatusCode::NOT_FOUND, format!("no client named '{name}'"))
        }
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping"),
    }
}

/// How long a revoking rotate request waits for the reconcile's ownership check.
const PREFLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;

/// Serves `router` until `stop` fires. Unlike `axum::serve`, a client that sends its request
/// headers too slowly is cut off, and the number of open connections is bounded, so slow or
/// many clients cannot exhaust the daemon.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: tokio_util::sync::CancellationToken,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use std::time::Duration;
    use tower::ServiceExt;

    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.cancelled() => return,
        };
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let router = router.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    router.clone().oneshot(req.map(axum::body::Body::new))
                });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                }
            }
        });
    }
}

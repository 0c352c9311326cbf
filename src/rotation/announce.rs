//! What consumers hear of a finished reconcile: its events (`published`, `retired`, `failed`,
//! `blocked`, `expiring`), stored in the outbox by `events::emit`. Drift is announced where
//! it is recorded (`record_drift`).

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::plan::Blocked;
use super::{Context, Failure, Report, window};
use crate::clock::rfc3339;
use crate::config::Client;
use crate::events::{Event, emit};
use crate::store::ClientRow;

fn location(client: &Client) -> Value {
    json!({
        "client": &*client.name,
        "app": client.app.to_string(),
        "vault": client.key_vault_url.as_str().trim_end_matches('/'),
        "secret": &*client.secret_name,
    })
}

fn with(mut base: Value, more: Value) -> Value {
    if let (Some(b), Some(m)) = (base.as_object_mut(), more.as_object()) {
        for (k, v) in m {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

/// The events of one finished reconcile. `previous` is the client's status row before this
/// reconcile recorded its own: a failure or block that says the same as the last one is not
/// announced again.
pub fn after_reconcile(
    ctx: &Context,
    client: &Client,
    result: &Result<Report, Failure>,
    previous: Option<&ClientRow>,
    now: OffsetDateTime,
) {
    if ctx.config.events.is_empty() {
        return;
    }
    let base = location(client);
    match result {
        Ok(report) => {
            if let Some(r) = &report.rotated {
                let reason = report
                    .plan
                    .rotate
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_default();
                emit(
                    &ctx.config,
                    &ctx.store,
                    Event {
                        kind: "published",
                        client: client.name.to_string(),
                        data: with(
                            base.clone(),
                            json!({
                                "version": r.version,
                                "key_id": r.key_id,
                                "rotation_id": r.rotation_id,
                                "expires_at": rfc3339(r.expires),
                                "reason": reason,
                            }),
                        ),
                        dedup: None,
                    },
                    now,
                );
            }
            // Credentials that were once published; an orphan's never reached a consumer.
            for removal in report.removed.iter().filter(|r| !r.is_orphan()) {
                emit(
                    &ctx.config,
                    &ctx.store,
                    Event {
                        kind: "retired",
                        client: client.name.to_string(),
                        data: with(
                            base.clone(),
                            json!({"key_id": removal.key_id, "reason": removal.reason.to_string()}),
                        ),
                        dedup: None,
                    },
                    now,
                );
            }
        }
        Err(Failure::Cancelled) => {}
        Err(e) => {
            let message = e.to_string();
            let said_before = previous.is_some_and(|r| {
                r.last_result.as_deref() == Some("failed")
                    && r.last_error.as_deref() == Some(message.as_str())
            });
            if said_before {
                return;
            }
            let kind = match e {
                Failure::Blocked(b) if !matches!(b, Blocked::WaitingForSlot { .. }) => "blocked",
                _ => "failed",
            };
            emit(
                &ctx.config,
                &ctx.store,
                Event {
                    kind,
                    client: client.name.to_string(),
                    data: with(
                        base,
                        json!({"error": message, "transient": e.is_transient()}),
                    ),
                    dedup: None,
                },
                now,
            );
        }
    }
}

/// After the client's status row is recorded (`row`, as recorded): when the published secret
/// (managed or not) is within `renew_before / 2` of its expiry and this reconcile did not
/// replace it (it waits, is blocked, or failed), consumers hear it once per published version.
pub fn expiring(
    ctx: &Context,
    client: &Client,
    result: &Result<Report, Failure>,
    row: Option<&ClientRow>,
    now: OffsetDateTime,
) {
    if ctx.config.events.is_empty()
        || matches!(result, Ok(r) if r.rotated.is_some())
        || matches!(result, Err(Failure::Cancelled))
    {
        return;
    }
    let Some(row) = row else {
        return;
    };
    let Some(expires) = row
        .expires_at
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
    else {
        return;
    };
    if window::deadline(Some(expires), client.policy.renew_before).is_none_or(|d| now < d) {
        return;
    }
    let version = row.published_version.clone().unwrap_or_default();
    emit(
        &ctx.config,
        &ctx.store,
        Event {
            kind: "expiring",
            client: client.name.to_string(),
            data: with(
                location(client),
                json!({
                    "version": row.published_version,
                    "key_id": row.published_key_id,
                    "expires_at": rfc3339(expires),
                    "why": row.last_error,
                }),
            ),
            dedup: Some(format!(
                "expiring:{}:{version}:{}",
                client.name,
                expires.unix_timestamp()
            )),
        },
        now,
    );
}

//! Events to consumers: CloudEvents 1.0 (structured JSON) about what the daemon did, kept in an
//! outbox in the state store and delivered at least once to each configured sink (a webhook
//! signed as Standard Webhooks say, or a command run without a shell).
//!
//! Emitting is an insert into the store, so a sink that is down never slows or blocks a
//! rotation; delivery (`deliver.rs`) is the daemon's, in the background, with backoff. An event
//! never carries a secret value: what was published is named by vault, secret, version and key
//! id.

pub mod deliver;
mod outbox;
pub mod sign;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::config::{Client, Config};
use crate::rotation::plan::Blocked;
use crate::rotation::{Context, Failure, Report, window};
use crate::store::ClientRow;

pub use outbox::{Delivery, SinkState};

/// Every event type, as `types` filters name them. The CloudEvents `type` is
/// `com.secret-rotator.<name>`.
pub const TYPES: [&str; 6] = [
    "published",
    "retired",
    "failed",
    "blocked",
    "expiring",
    "drift",
];

/// The CloudEvents `type` attribute of an event type.
pub fn cloudevents_type(kind: &str) -> String {
    format!("com.secret-rotator.{kind}")
}

/// One event before it is stored.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub client: String,
    pub data: Value,
    /// Events with the same key are emitted once (an `expiring` per published version).
    pub dedup: Option<String>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    window::rfc3339(t)
}

/// The structured-mode CloudEvent.
fn envelope(config: &Config, e: &Event, id: &str, now: OffsetDateTime) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": format!("/secret-rotator/{}", config.instance),
        "type": cloudevents_type(e.kind),
        "subject": e.client,
        "time": rfc3339(now),
        "datacontenttype": "application/json",
        "data": e.data,
    })
}

/// Stores `e` for every sink that wants it (by type and client). Returns how many deliveries
/// were queued. A failure to store is logged, never a failed reconcile.
pub fn emit(ctx: &Context, e: Event, now: OffsetDateTime) -> usize {
    let sinks: Vec<&str> = ctx
        .config
        .events
        .iter()
        .filter(|s| s.wants(e.kind, &e.client))
        .map(|s| s.name.as_str())
        .collect();
    if sinks.is_empty() {
        return 0;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let body = envelope(&ctx.config, &e, &id, now).to_string();
    match ctx.store.enqueue_event(
        &id,
        e.kind,
        &e.client,
        &body,
        e.dedup.as_deref(),
        &sinks,
        now,
    ) {
        Ok(n) => n,
        Err(err) => {
            tracing::warn!(client = %e.client, event = e.kind, error = %err, "could not store the event for its sinks");
            0
        }
    }
}

fn location(client: &Client) -> Value {
    json!({
        "client": client.name,
        "app": client.app.to_string(),
        "vault": client.key_vault_url.as_str().trim_end_matches('/'),
        "secret": client.secret_name,
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
                    ctx,
                    Event {
                        kind: "published",
                        client: client.name.clone(),
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
                    ctx,
                    Event {
                        kind: "retired",
                        client: client.name.clone(),
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
                ctx,
                Event {
                    kind,
                    client: client.name.clone(),
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

/// After the client's status row is recorded: when the published secret (managed or not) is
/// within `renew_before / 2` of its expiry and this reconcile did not replace it (it waits,
/// is blocked, or failed), consumers hear it once per published version.
pub fn expiring(
    ctx: &Context,
    client: &Client,
    result: &Result<Report, Failure>,
    now: OffsetDateTime,
) {
    if ctx.config.events.is_empty()
        || matches!(result, Ok(r) if r.rotated.is_some())
        || matches!(result, Err(Failure::Cancelled))
    {
        return;
    }
    let Some(row) = ctx.store.client_row(&client.name).ok().flatten() else {
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
        ctx,
        Event {
            kind: "expiring",
            client: client.name.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_a_reverse_dns_cloudevents_type() {
        for t in TYPES {
            assert_eq!(cloudevents_type(t), format!("com.secret-rotator.{t}"));
        }
    }
}

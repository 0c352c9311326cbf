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

use crate::clock::rfc3339;
use crate::config::Config;
use crate::store::Store;

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
pub fn emit(config: &Config, store: &Store, e: Event, now: OffsetDateTime) -> usize {
    let sinks: Vec<&str> = config
        .events
        .iter()
        .filter(|s| s.wants(e.kind, &e.client))
        .map(|s| s.name.as_str())
        .collect();
    if sinks.is_empty() {
        return 0;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let body = envelope(config, &e, &id, now).to_string();
    match store.enqueue_event(
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

//! Delivering the outbox: one round per sink at a time, every second, in the order events were
//! emitted. A failed attempt stops the sink's round (order is kept and a sink that is down is
//! not hammered) and is tried again after a backoff that doubles up to [`RETRY_CAP`]. A sink
//! whose oldest event has failed [`FAILING_AFTER`] times is reported as failing (metric, log,
//! status); the others are never held up by it, and neither is any rotation.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::Shared;
use crate::clock;
use crate::config::{Sink, SinkKind};
use crate::rotation::Context;

/// The longest wait between two attempts at one event.
pub const RETRY_CAP: Duration = Duration::from_secs(300);
/// Failed attempts at a sink's oldest event after which the sink is reported as failing.
pub const FAILING_AFTER: u32 = 3;
/// Undelivered events older than this are dropped (and counted as `result="dropped"`).
pub const MAX_AGE: Duration = Duration::from_secs(7 * 86_400);
/// Events taken per round.
const BATCH: i64 = 100;

fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(16)).min(RETRY_CAP)
}

/// Runs until `stop`: starts a round for every sink that has none running.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut rounds: HashMap<String, JoinHandle<()>> = HashMap::new();
    let failing: Arc<std::sync::Mutex<HashMap<String, bool>>> = Arc::default();
    let mut last_expiry = std::time::Instant::now() - Duration::from_secs(3600);
    let mut known: Vec<String> = Vec::new();
    loop {
        let ctx = shared.context();
        if last_expiry.elapsed() >= Duration::from_secs(600) {
            last_expiry = std::time::Instant::now();
            let before = clock::now().unix_timestamp() - MAX_AGE.as_secs() as i64;
            match ctx.store.expire_deliveries(before) {
                Ok(dropped) => {
                    for (sink, n) in dropped {
                        tracing::warn!(sink = %sink, events = n, "dropped undelivered events older than 7 days");
                        for _ in 0..n {
                            ctx.metrics.event_dropped(&sink);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not expire old events"),
            }
        }
        // Sinks that left the config leave no series.
        let names: Vec<String> = ctx.config.events.iter().map(|s| s.name.clone()).collect();
        for gone in known.iter().filter(|k| !names.contains(k)) {
            ctx.metrics.remove_sink(gone);
        }
        known = names;
        rounds.retain(|_, h| !h.is_finished());
        for sink in &ctx.config.events {
            if rounds.contains_key(&sink.name) {
                continue;
            }
            let ctx = ctx.clone();
            let sink = sink.clone();
            let failing = Arc::clone(&failing);
            let stop = stop.clone();
            rounds.insert(
                sink.name.clone(),
                tokio::spawn(async move {
                    tokio::select! {
                        _ = round(&ctx, &sink, &failing) => {}
                        _ = stop.cancelled() => {}
                    }
                }),
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => break,
        }
    }
    for (_, h) in rounds {
        h.abort();
    }
}

/// Delivers what is due for one sink, in order, until an attempt fails.
async fn round(ctx: &Context, sink: &Sink, failing: &std::sync::Mutex<HashMap<String, bool>>) {
    let pending = match ctx.store.pending_deliveries(&sink.name, BATCH) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(sink = %sink.name, error = %e, "could not read the events outbox");
            return;
        }
    };
    // Most rounds find nothing due: the client (cheap, from the context's TLS configuration)
    // is made only for a round that sends.
    let mut http = None;
    for d in pending {
        let now = clock::now();
        if d.next_attempt_at > now.unix_timestamp() {
            break;
        }
        if http.is_none()
            && let SinkKind::Webhook { .. } = &sink.kind
        {
            match crate::azure::http_client_with(&ctx.shared.tls, sink.timeout, true) {
                Ok(h) => http = Some(h),
                Err(e) => {
                    tracing::warn!(sink = %sink.name, error = %e, "cannot build the sink's HTTP client");
                    break;
                }
            }
        }
        match send(http.as_ref(), sink, &d.event_id, d.body.as_bytes()).await {
            Ok(()) => {
                ctx.metrics.event_delivery(&sink.name, true);
                tracing::debug!(sink = %sink.name, event = %d.event_id, kind = %d.kind, "event delivered");
                if let Err(e) = ctx.store.delivered(&d.event_id, &sink.name) {
                    tracing::warn!(sink = %sink.name, error = %e, "could not mark the event delivered; it may be sent again");
                    break;
                }
            }
            Err(why) => {
                ctx.metrics.event_delivery(&sink.name, false);
                let wait = backoff(d.attempts);
                let next = clock::now().unix_timestamp() + wait.as_secs() as i64;
                tracing::info!(sink = %sink.name, event = %d.event_id, kind = %d.kind, attempts = d.attempts + 1, retry_in_s = wait.as_secs(), "event delivery failed: {why}");
                let _ = ctx
                    .store
                    .delivery_failed(&d.event_id, &sink.name, next, &why);
                break;
            }
        }
    }
    let state = ctx
        .store
        .sink_state(&sink.name, sink.kind.name(), FAILING_AFTER);
    ctx.metrics
        .set_sink(&sink.name, state.pending, state.failing);
    let mut seen = failing.lock().unwrap_or_else(|p| p.into_inner());
    let was = seen
        .insert(sink.name.clone(), state.failing)
        .unwrap_or(false);
    if state.failing && !was {
        tracing::warn!(sink = %sink.name, pending = state.pending, attempts = state.attempts, "event sink is failing: {}", state.last_error.as_deref().unwrap_or("-"));
    } else if was && !state.failing {
        tracing::info!(sink = %sink.name, "event sink recovered");
    }
}

/// Sends a test event to `sink` now, outside the outbox; returns its id.
pub async fn send_test(config: &crate::config::Config, sink: &Sink) -> Result<String, String> {
    let id = uuid::Uuid::new_v4().to_string();
    let now = clock::now();
    let body = serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": format!("/secret-rotator/{}", config.instance),
        "type": super::cloudevents_type("test"),
        "time": crate::clock::rfc3339(now),
        "datacontenttype": "application/json",
        "data": {"message": "a test event from secret-rotator send-test-event"},
    })
    .to_string();
    let http = match &sink.kind {
        SinkKind::Webhook { .. } => Some(
            crate::azure::http_client(config.azure.ca_pem.as_deref(), sink.timeout, true)
                .map_err(|e| format!("{e:#}"))?,
        ),
        SinkKind::Exec { .. } => None,
    };
    send(http.as_ref(), sink, &id, body.as_bytes()).await?;
    Ok(id)
}

/// One attempt at one event.
async fn send(
    http: Option<&reqwest::Client>,
    sink: &Sink,
    id: &str,
    body: &[u8],
) -> Result<(), String> {
    match &sink.kind {
        SinkKind::Webhook { url, key } => {
            let timestamp = clock::now().unix_timestamp();
            let http = http.ok_or("no HTTP client")?;
            let answer = http
                .post(url.clone())
                .header(
                    "content-type",
                    "application/cloudevents+json; charset=utf-8",
                )
                .header("webhook-id", id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", key.sign(id, timestamp, body))
                .body(body.to_vec())
                .send()
                .await
                .map_err(|e| describe(&e))?;
            let status = answer.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", status.as_u16()))
            }
        }
        SinkKind::Exec { argv } => {
            let mut command = tokio::process::Command::new(&argv[0]);
            // The daemon's own malloc settings are not the sink's.
            if std::env::var("GLIBC_TUNABLES").as_deref() == Ok(crate::daemon::MALLOC_TUNABLES) {
                command.env_remove("GLIBC_TUNABLES");
            }
            let mut child = command
                .args(&argv[1..])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
            let run = async {
                if let Some(mut stdin) = child.stdin.take() {
                    // A command that does not read its input is not a failure.
                    let _ = stdin.write_all(body).await;
                    drop(stdin);
                }
                child.wait().await
            };
            match tokio::time::timeout(sink.timeout, run).await {
                Ok(Ok(status)) if status.success() => Ok(()),
                Ok(Ok(status)) => Err(format!("{} exited with {status}", argv[0])),
                Ok(Err(e)) => Err(format!("{}: {e}", argv[0])),
                Err(_) => Err(format!(
                    "{} did not finish within {}; killed",
                    argv[0],
                    clock::format_duration(sink.timeout)
                )),
            }
        }
    }
}

/// A transport error in one line, without the URL's query (none is allowed) or any body.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    match last {
        Some(s) => format!("{what}: {s}"),
        None => what.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_doubling_up_to_the_cap() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), RETRY_CAP);
    }
}

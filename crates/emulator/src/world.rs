//! Shared state of a running emulator: the tenant, the request journal, injected faults and holds.
//!
//! Every handler runs through [`World::begin`] and [`Call::finish`], so that faults, latency,
//! holds and the journal behave the same on every operation.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::model::State;
use crate::throttle::Windows;

/// Marker put on a response whose connection must be dropped instead of answered: the client sees
/// a reset after the operation took effect.
#[derive(Clone, Copy, Debug)]
pub struct DropConnection;

pub use crate::operation::{Operation, UnknownOperation};

/// One journal line: what was asked, of what, by whom, and how it ended. Never a secret value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub operation: Operation,
    pub method: String,
    pub path: String,
    /// The calling application's app id, when it presented a valid token.
    pub caller: Option<String>,
    /// The application's object id, or `vault/secret`.
    pub target: Option<String>,
    /// The credential created or removed.
    pub key_id: Option<String>,
    pub status: u16,
    /// Whether the operation changed state.
    pub effective: bool,
    /// The injected fault that shaped this answer, if any.
    pub fault: Option<String>,
    /// The caller's `User-Agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

tokio::task_local! {
    /// The `User-Agent` of the request being served, for its journal entry.
    pub(crate) static USER_AGENT: Option<String>;
}

fn user_agent() -> Option<String> {
    USER_AGENT.try_with(|a| a.clone()).ok().flatten()
}

/// A fault rule: the next `count` calls of `operation` (optionally only for `target`) get it.
/// (Unknown keys cannot be refused here: serde does not combine that with `flatten`.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRule {
    pub operation: Operation,
    /// Match only calls on this application object id, app id, or `vault/secret`.
    pub target: Option<String>,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(flatten)]
    pub kind: FaultKind,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this status before the operation takes effect. `code` picks the service's
    /// error code (defaults suit the status); `retry_after` is sent verbatim (may be fractional).
    Status {
        status: u16,
        code: Option<String>,
        retry_after: Option<String>,
    },
    /// Wait this long before handling the call.
    Delay { ms: u64 },
    /// Let the operation take effect, then drop the connection without an answer.
    DropAfter,
    /// Let the operation take effect, then answer 200 with a body that is not valid JSON.
    Malformed,
    /// Let the operation take effect, then answer with the first half of the body.
    Truncate,
    /// Block the call before it takes effect until released through the control API.
    HoldBefore,
    /// Let the call take effect, then block the answer until released.
    HoldAfter,
}

/// A call blocked by a hold fault, visible (and releasable) through the control API.
#[derive(Debug, Clone, Serialize)]
pub struct HeldCall {
    pub id: u64,
    pub operation: Operation,
    pub target: Option<String>,
    pub phase: &'static str,
    #[serde(skip)]
    notify: Arc<Notify>,
}

pub struct World {
    state: Mutex<State>,
    journal: Mutex<VecDeque<Entry>>,
    faults: Mutex<Vec<FaultRule>>,
    held: Mutex<BTreeMap<u64, HeldCall>>,
    seq: AtomicU64,
    pub(crate) windows: Mutex<Windows>,
    /// HMAC key of the tokens the emulator issues.
    pub(crate) token_key: [u8; 32],
    /// The managed identity endpoint's `X-IDENTITY-HEADER` value.
    pub identity_header: String,
    pub(crate) urls: Mutex<Urls>,
    dirty: std::sync::atomic::AtomicBool,
    /// Held while the state is written to `state.json`: one write at a time.
    pub(crate) persisting: Mutex<()>,
}

/// Where the services listen, for building absolute links and challenges.
#[derive(Debug, Clone, Default)]
pub struct Urls {
    pub authority_host: String,
    pub graph_endpoint: String,
    pub vaults: BTreeMap<String, String>,
}

const JOURNAL_LIMIT: usize = 200_000;

impl World {
    pub fn new(state: State) -> Arc<World> {
        let token_key: [u8; 32] = rand::random();
        let identity_header = format!("{:032x}", rand::random::<u128>());
        Arc::new(World {
            state: Mutex::new(state),
            journal: Mutex::new(VecDeque::new()),
            faults: Mutex::new(Vec::new()),
            held: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
            windows: Mutex::new(Windows::default()),
            token_key,
            identity_header,
            urls: Mutex::new(Urls::default()),
            dirty: std::sync::atomic::AtomicBool::new(false),
            persisting: Mutex::new(()),
        })
    }

    /// The tenant state. Hold the guard briefly and never across an await.
    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The tenant state, for a change that must be persisted.
    pub fn state_mut(&self) -> MutexGuard<'_, State> {
        self.dirty.store(true, Ordering::Relaxed);
        lock(&self.state)
    }

    pub(crate) fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::Relaxed)
    }

    pub fn urls(&self) -> Urls {
        lock(&self.urls).clone()
    }

    pub fn journal(&self) -> Vec<Entry> {
        lock(&self.journal).iter().cloned().collect()
    }

    pub fn clear_journal(&self) {
        lock(&self.journal).clear();
    }

    pub fn add_fault(&self, rule: FaultRule) {
        lock(&self.faults).push(rule);
    }

    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    pub fn faults(&self) -> Vec<FaultRule> {
        lock(&self.faults).clone()
    }

    pub fn held_calls(&self) -> Vec<HeldCall> {
        lock(&self.held).values().cloned().collect()
    }

    /// Releases a held call; false when no call with that id is held.
    pub fn release(&self, id: u64) -> bool {
        match lock(&self.held).remove(&id) {
            Some(h) => {
                h.notify.notify_one();
                true
            }
            None => false,
        }
    }

    pub fn release_all(&self) -> usize {
        let held: Vec<HeldCall> = std::mem::take(&mut *lock(&self.held))
            .into_values()
            .collect();
        for h in &held {
            h.notify.notify_one();
        }
        held.len()
    }

    /// Starts a call: applies latency, then the first matching fault that acts before the
    /// operation takes effect. An `Err` is the whole answer.
    pub async fn begin(
        self: &Arc<Self>,
        operation: Operation,
        method: &str,
        path: &str,
        target: Option<String>,
    ) -> Result<Call, Response> {
        let latency = self.state().settings.latency_ms;
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let mut call = Call {
            world: self.clone(),
            operation,
            method: method.to_string(),
            path: path.to_string(),
            caller: None,
            target,
            key_id: None,
            effective: false,
            fault: None,
            after: None,
        };
        loop {
            let Some(kind) = self.take_fault(operation, call.target.as_deref()) else {
                return Ok(call);
            };
            match kind {
                FaultKind::Delay { ms } => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    call.fault = Some(format!("delay {ms}ms"));
                }
                FaultKind::Status {
                    status,
                    code,
                    retry_after,
                } => {
                    call.fault = Some(format!("status {status}"));
                    let response = crate::errors::injected(operation, status, code, retry_after);
                    return Err(call.finish(response).await);
                }
                FaultKind::HoldBefore => {
                    call.fault = Some("hold_before".into());
                    self.hold(operation, call.target.clone(), "before").await;
                }
                after @ (FaultKind::DropAfter
                | FaultKind::Malformed
                | FaultKind::Truncate
                | FaultKind::HoldAfter) => {
                    call.after = Some(after);
                    return Ok(call);
                }
            }
        }
    }

    fn take_fault(&self, operation: Operation, target: Option<&str>) -> Option<FaultKind> {
        let mut faults = lock(&self.faults);
        let idx = faults.iter().position(|r| {
            r.operation == operation
                && match (&r.target, target) {
                    (None, _) => true,
                    (Some(want), Some(have)) => want.eq_ignore_ascii_case(have),
                    (Some(_), None) => false,
                }
        })?;
        let rule = &mut faults[idx];
        let kind = rule.kind.clone();
        rule.count = rule.count.saturating_sub(1);
        if rule.count == 0 {
            faults.remove(idx);
        }
        Some(kind)
    }

    async fn hold(&self, operation: Operation, target: Option<String>, phase: &'static str) {
        let notify = Arc::new(Notify::new());
        let id = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.held).insert(
            id,
            HeldCall {
                id,
                operation,
                target,
                phase,
                notify: notify.clone(),
            },
        );
        notify.notified().await;
    }

    /// Journals a change made outside the services' APIs (a person in the portal), with
    /// `caller` naming who made it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_outside(
        &self,
        operation: Operation,
        method: &str,
        path: String,
        caller: &str,
        target: Option<String>,
        key_id: Option<String>,
        status: u16,
        effective: bool,
    ) {
        self.record(Entry {
            seq: 0,
            at: OffsetDateTime::now_utc(),
            operation,
            method: method.to_string(),
            path,
            caller: Some(caller.to_string()),
            target,
            key_id,
            status,
            effective,
            fault: None,
            user_agent: None,
        });
    }

    fn record(&self, mut entry: Entry) {
        entry.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut journal = lock(&self.journal);
        if journal.len() >= JOURNAL_LIMIT {
            journal.pop_front();
        }
        journal.push_back(entry);
    }
}

/// One call in progress. Handlers fill in what they learn, then [`Call::finish`] it.
pub struct Call {
    world: Arc<World>,
    operation: Operation,
    method: String,
    path: String,
    pub caller: Option<String>,
    pub target: Option<String>,
    pub key_id: Option<String>,
    pub effective: bool,
    fault: Option<String>,
    after: Option<FaultKind>,
}

impl Call {
    /// Applies any fault that acts after the effect, journals the call and returns the answer.
    pub async fn finish(mut self, response: Response) -> Response {
        let mut response = response;
        if let Some(after) = self.after.take() {
            self.fault = Some(format!("{after:?}").to_lowercase());
            response = match after {
                FaultKind::DropAfter => {
                    let mut r = StatusCode::OK.into_response();
                    r.extensions_mut().insert(DropConnection);
                    r
                }
                FaultKind::Malformed => (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    "{\"value\": [{\"id\": ",
                )
                    .into_response(),
                FaultKind::Truncate => truncate(response).await,
                FaultKind::HoldAfter => {
                    self.world
                        .hold(self.operation, self.target.clone(), "after")
                        .await;
                    response
                }
                _ => response,
            };
        }
        let status = if response.extensions().get::<DropConnection>().is_some() {
            0
        } else {
            response.status().as_u16()
        };
        self.world.record(Entry {
            seq: 0,
            at: OffsetDateTime::now_utc(),
            operation: self.operation,
            method: std::mem::take(&mut self.method),
            path: std::mem::take(&mut self.path),
            caller: self.caller.take(),
            target: self.target.take(),
            key_id: self.key_id.take(),
            status,
            effective: self.effective,
            fault: self.fault.take(),
            user_agent: user_agent(),
        });
        response
    }
}

async fn truncate(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let cut = bytes.slice(0..bytes.len() / 2);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(cut))
}

/// Stamps every answer of the Azure services with Azure's `Date` (shifted by
/// `clock_offset_ms`); hyper would otherwise stamp the true time.
pub(crate) async fn azure_date(
    axum::extract::State(world): axum::extract::State<Arc<World>>,
    mut response: Response,
) -> Response {
    let now = world.state().settings.azure_now();
    if let Ok(v) = HeaderValue::from_str(&http_date(now)) {
        response.headers_mut().insert(axum::http::header::DATE, v);
    }
    response
}

/// RFC 9110's IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.format(&format).unwrap_or_default()
}

/// Locks a mutex, recovering from poisoning: a handler that panicked must not take the whole
/// emulator down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

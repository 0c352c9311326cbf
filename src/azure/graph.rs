//! A thin Microsoft Graph client for the three calls the daemon makes: read an application's
//! password credentials, `addPassword`, `removePassword`.
//!
//! Over 600 lines: the three calls share their error classification, pacing (`Pacer`) and the
//! write fence, which read best in one place.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::connections::Pool;
use super::{AzureHttp, Class, Error, Timer, class_of_status};
use crate::config::AppRef;

const SERVICE: &str = "graph";
/// The one Graph call whose answer holds a secret (it goes over `secret_http`).
const ADD_PASSWORD: &str = "add_password";

/// An application as the daemon needs it.
#[derive(Debug, Clone)]
pub struct Application {
    pub object_id: String,
    pub app_id: String,
    pub sign_in_audience: String,
    pub passwords: Vec<PasswordCredential>,
}

impl Application {
    /// Apps open to personal Microsoft accounts may hold at most two passwords.
    pub fn password_cap(&self) -> Option<usize> {
        matches!(
            self.sign_in_audience.as_str(),
            "AzureADandPersonalMicrosoftAccount" | "PersonalMicrosoftAccount"
        )
        .then_some(2)
    }
}

/// A password credential as Graph lists it: never a value.
#[derive(Debug, Clone, PartialEq)]
pub struct PasswordCredential {
    pub key_id: String,
    pub display_name: Option<String>,
    pub hint: Option<String>,
    pub start: Option<OffsetDateTime>,
    pub end: Option<OffsetDateTime>,
}

/// The one answer that carries a secret value.
pub struct NewPassword {
    pub key_id: String,
    pub secret: SecretString,
    pub start: Option<OffsetDateTime>,
    pub end: OffsetDateTime,
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPassword")
            .field("key_id", &self.key_id)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawApplication {
    id: String,
    app_id: String,
    #[serde(default)]
    sign_in_audience: Option<String>,
    #[serde(default)]
    password_credentials: Vec<RawPassword>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPassword {
    key_id: Option<String>,
    display_name: Option<String>,
    hint: Option<String>,
    start_date_time: Option<String>,
    end_date_time: Option<String>,
    /// Only `addPassword` answers carry it; straight into a zeroizing type.
    secret_text: Option<SecretString>,
}

#[derive(Deserialize)]
struct RawList {
    value: Vec<RawApplication>,
}

/// Applications per page of the tenant listing: Graph's largest `$top` for applications.
pub const LIST_PAGE_SIZE: usize = 999;

/// A certificate credential (`keyCredential`) as the inventory needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyCredential {
    pub key_id: String,
    pub display_name: Option<String>,
    pub end: Option<OffsetDateTime>,
}

/// An application of the tenant listing.
#[derive(Debug, Clone)]
pub struct ListedApplication {
    pub app_id: String,
    pub display_name: String,
    pub passwords: Vec<PasswordCredential>,
    pub certificates: Vec<KeyCredential>,
}

#[derive(Debug)]
pub struct ApplicationsPage {
    pub applications: Vec<ListedApplication>,
    /// `@odata.nextLink`: more pages follow.
    pub next: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawListed {
    app_id: String,
    display_name: Option<String>,
    #[serde(default)]
    password_credentials: Vec<RawPassword>,
    #[serde(default)]
    key_credentials: Vec<RawKey>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKey {
    key_id: Option<String>,
    display_name: Option<String>,
    end_date_time: Option<String>,
}

#[derive(Deserialize)]
struct RawPage {
    value: Vec<RawListed>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

fn parse_time(s: Option<&str>) -> Option<OffsetDateTime> {
    s.and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
}

impl RawPassword {
    fn into_credential(self) -> Option<PasswordCredential> {
        Some(PasswordCredential {
            key_id: self.key_id?.to_ascii_lowercase(),
            display_name: self.display_name,
            hint: self.hint,
            start: parse_time(self.start_date_time.as_deref()),
            end: parse_time(self.end_date_time.as_deref()),
        })
    }
}

/// The least time between two writes to one application: Graph answers rapid writes to one
/// object with 409 `Directory_ConcurrencyViolation`.
pub const WRITE_GAP: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads Graph's rendering of an application.
pub fn parse_application(body: &[u8]) -> Result<Application, serde_json::Error> {
    let raw: RawApplication = serde_json::from_slice(body)?;
    Ok(Application {
        object_id: raw.id.to_ascii_lowercase(),
        app_id: raw.app_id.to_ascii_lowercase(),
        sign_in_audience: raw.sign_in_audience.unwrap_or_default(),
        passwords: raw
            .password_credentials
            .into_iter()
            .filter_map(RawPassword::into_credential)
            .collect(),
    })
}

/// Reads one page of Graph's application listing.
pub fn parse_applications_page(body: &[u8]) -> Result<ApplicationsPage, serde_json::Error> {
    let raw: RawPage = serde_json::from_slice(body)?;
    Ok(ApplicationsPage {
        applications: raw
            .value
            .into_iter()
            .map(|a| ListedApplication {
                app_id: a.app_id.to_ascii_lowercase(),
                display_name: a.display_name.unwrap_or_default(),
                passwords: a
                    .password_credentials
                    .into_iter()
                    .filter_map(RawPassword::into_credential)
                    .collect(),
                certificates: a
                    .key_credentials
                    .into_iter()
                    .filter_map(|k| {
                        Some(KeyCredential {
                            key_id: k.key_id?.to_ascii_lowercase(),
                            display_name: k.display_name,
                            end: parse_time(k.end_date_time.as_deref()),
                        })
                    })
                    .collect(),
            })
            .collect(),
        next: raw.next_link,
    })
}

tokio::task_local! {
    /// Time the current reconcile spent waiting for Graph's quota (write slots, 429 pauses):
    /// the scheduler sizes its concurrency from the time a reconcile holds its slot without
    /// these waits (`crate::daemon`).
    pub static QUOTA_WAIT: std::cell::Cell<std::time::Duration>;
}

/// Adds `since.elapsed()` to the current reconcile's [`QUOTA_WAIT`], if any.
fn quota_waited(since: tokio::time::Instant) {
    let _ = QUOTA_WAIT.try_with(|w| w.set(w.get() + since.elapsed()));
}

/// Paces Graph calls to what the tenant allows: writes never exceed the write quota in any
/// window (a sliding window, as Graph counts it), and after a 429 every call waits out its
/// `Retry-After`, since the quota it hit is shared by all of the daemon's calls.
pub struct Pacer {
    quota: usize,
    window: std::time::Duration,
    sent: std::sync::Mutex<std::collections::VecDeque<tokio::time::Instant>>,
    paused_until: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Resource units spent by paced reads in the last [`RU_WINDOW`] (the inventory's pages).
    spent: std::sync::Mutex<std::collections::VecDeque<(tokio::time::Instant, u32)>>,
    /// Writes waiting for a slot now: the quota is used to the full.
    waiting: std::sync::atomic::AtomicUsize,
}

/// Counts a write waiting for its slot while it lives.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Graph's resource-unit window for identity objects.
pub const RU_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
/// The resource units per [`RU_WINDOW`] that paced reads may spend: half of the smallest
/// tenant's budget (3,500 per 10 s for an application and tenant), so that reconciles, which are
/// not paced, always have the other half.
pub const PACED_RU_BUDGET: u32 = 1_750;

impl Pacer {
    pub fn new(quota: u32, window: std::time::Duration) -> Pacer {
        Pacer {
            quota: quota as usize,
            window,
            sent: Default::default(),
            paused_until: Default::default(),
            spent: Default::default(),
            waiting: Default::default(),
        }
    }

    /// Writes waiting for a slot (the quota, or a 429's pause) now.
    pub fn writes_waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `cost` resource units fit in [`PACED_RU_BUDGET`] over the last
    /// [`RU_WINDOW`] (and any 429 pause is over), and spends them.
    pub async fn resource_units(&self, cost: u32) {
        loop {
            self.unpaused().await;
            let wait = {
                let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
                let now = tokio::time::Instant::now();
                while spent.front().is_some_and(|(t, _)| *t + RU_WINDOW <= now) {
                    spent.pop_front();
                }
                let used: u32 = spent.iter().map(|(_, c)| c).sum();
                if used + cost <= PACED_RU_BUDGET || spent.is_empty() {
                    spent.push_back((now, cost));
                    return;
                }
                spent.front().map(|(t, _)| *t + RU_WINDOW).unwrap_or(now)
            };
            tokio::time::sleep_until(wait).await;
        }
    }

    /// Waits out a pause set by a 429.
    async fn unpaused(&self) {
        let since = tokio::time::Instant::now();
        self.pause_over().await;
        quota_waited(since);
    }

    /// [`Pacer::unpaused`], the wait not counted (the caller counts it).
    async fn pause_over(&self) {
        loop {
            let until = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
            match until {
                Some(t) if t > tokio::time::Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    /// Waits for a write slot and takes it.
    async fn write_slot(&self) {
        let since = tokio::time::Instant::now();
        let mut waiting = None;
        loop {
            let paused = self
                .paused_until
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|t| t > tokio::time::Instant::now());
            if paused {
                waiting.get_or_insert_with(|| Waiting::new(&self.waiting));
            }
            self.pause_over().await;
            let wait = {
                let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
                let now = tokio::time::Instant::now();
                while sent.front().is_some_and(|t| *t + self.window <= now) {
                    sent.pop_front();
                }
                if sent.len() < self.quota {
                    sent.push_back(now);
                    drop(sent);
                    return quota_waited(since);
                }
                sent.front().map(|t| *t + self.window).unwrap_or(now)
            };
            waiting.get_or_insert_with(|| Waiting::new(&self.waiting));
            tokio::time::sleep_until(wait).await;
        }
    }

    fn pause(&self, retry_after: std::time::Duration) {
        let until = tokio::time::Instant::now() + retry_after;
        let mut p = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_none_or(|t| t < until) {
            *p = Some(until);
        }
    }
}

pub struct GraphClient {
    pub(super) shared: AzureHttp,
    pacer: Pacer,
    /// The last write slot per application, and the size at which the map is next pruned.
    last_write: std::sync::Mutex<(
        std::collections::HashMap<String, tokio::time::Instant>,
        usize,
    )>,
    credential: Arc<dyn TokenCredential>,
    pub(super) base: String,
    /// `graph_endpoint`'s scheme, host and port: the only place the daemon's Graph token goes.
    origin: (String, String, u16),
    scope: String,
}

impl GraphClient {
    pub fn new(
        shared: AzureHttp,
        credential: Arc<dyn TokenCredential>,
        endpoint: &url::Url,
        scope: &str,
        write_quota: (u32, std::time::Duration),
    ) -> GraphClient {
        GraphClient {
            shared,
            pacer: Pacer::new(write_quota.0, write_quota.1),
            last_write: Default::default(),
            credential,
            base: format!("{}/v1.0", endpoint.as_str().trim_end_matches('/')),
            origin: (
                endpoint.scheme().to_string(),
                endpoint.host_str().unwrap_or_default().to_ascii_lowercase(),
                endpoint.port_or_known_default().unwrap_or(443),
            ),
            scope: scope.to_string(),
        }
    }

    /// Gets a Graph token: proves the daemon can sign in at all.
    pub async fn sign_in(&self) -> Result<(), Error> {
        super::identity::token(self.credential.as_ref(), &self.scope)
            .await
            .map(|_| ())
    }

    /// Whether `uri` is on `graph_endpoint`'s origin.
    fn is_graph(&self, uri: &http::Uri) -> bool {
        let (scheme, host, port) = &self.origin;
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        uri.scheme_str() == Some(scheme.as_str())
            && uri.host().is_some_and(|h| h.eq_ignore_ascii_case(host))
            && uri.port_u16().unwrap_or(if https { 443 } else { 80 }) == *port
    }

    pub(super) async fn send(
        &self,
        operation: &'static str,
        call: Call,
        is_write: bool,
    ) -> Result<(u16, bytes::Bytes), Error> {
        self.pacer.unpaused().await;
        let token = super::identity::token(self.credential.as_ref(), &self.scope).await?;
        // The last moment before the write leaves: a replica that may have lost its lease
        // does not send it (crate::ha).
        let _write = if is_write {
            Some(self.shared.fence.begin_write(SERVICE, operation)?)
        } else {
            None
        };
        let request = call.request(&token).map_err(|e| {
            Error::new(
                SERVICE,
                operation,
                Class::Permanent,
                format!("the request could not be made: {e}"),
            )
        })?;
        // Whatever URL an answer named (a `@odata.nextLink`), the token goes to Graph only.
        if !self.is_graph(request.uri()) {
            return Err(Error::new(
                SERVICE,
                operation,
                Class::Permanent,
                "the request's URL points away from graph_endpoint: the daemon's token goes nowhere else",
            ));
        }
        let pool = if operation == ADD_PASSWORD {
            Pool::Secret
        } else {
            Pool::Main
        };
        let timer = Timer::start(&self.shared.metrics, SERVICE, operation);
        let answer = match self.shared.send(pool, None, request).await {
            Ok(answer) => answer,
            Err(failure) => {
                timer.done("error");
                // A request that never left never reached Graph; anything else may have.
                let class = if !failure.sent || !is_write {
                    Class::Transient { retry_after: None }
                } else {
                    Class::OutcomeUnknown
                };
                return Err(Error::new(
                    SERVICE,
                    operation,
                    class,
                    format!("request failed: {}", failure.message),
                ));
            }
        };
        let status = answer.status;
        let retry_after = self.shared.observe(&answer.headers);
        let body = answer.body;
        timer.done(&status.to_string());
        if status == 429 {
            self.pacer
                .pause(retry_after.unwrap_or(std::time::Duration::from_secs(1)));
        }
        if (200..300).contains(&status) {
            return Ok((status, body));
        }
        let (code, message) = graph_error(&body);
        let mut class = class_of_status(status, code.as_deref(), retry_after);
        // A write answered 5xx may have been applied before the failure.
        if is_write && matches!(status, 500 | 502 | 503 | 504) {
            class = Class::OutcomeUnknown;
        }
        Err(Error {
            service: SERVICE,
            operation,
            status: Some(status),
            code,
            message,
            class,
        })
    }

    pub async fn get_application(&self, app: &AppRef) -> Result<Application, Error> {
        const SELECT: &str = "$select=id,appId,signInAudience,passwordCredentials";
        let url = match app {
            AppRef::ObjectId(id) => format!("{}/applications/{id}?{SELECT}", self.base),
            AppRef::AppId(id) => format!("{}/applications(appId='{id}')?{SELECT}", self.base),
        };
        let (_, body) = self.send("get_application", Call::get(url), false).await?;
        parse_application(&body).map_err(|e| malformed("get_application", &e))
    }

    /// Lists applications with `$filter=appId eq '…'` (used by `check --online`).
    pub async fn find_by_app_id(&self, app_id: &str) -> Result<Option<String>, Error> {
        let filter: String =
            url::form_urlencoded::byte_serialize(format!("appId eq '{app_id}'").as_bytes())
                .collect();
        let url = format!(
            "{}/applications?$filter={filter}&$select=id,appId",
            self.base
        );
        let (_, body) = self
            .send("list_applications", Call::get(url), false)
            .await?;
        let raw: RawList =
            serde_json::from_slice(&body).map_err(|e| malformed("list_applications", &e))?;
        Ok(raw.value.into_iter().next().map(|a| a.id))
    }

    /// One page of the tenant's applications with their password and certificate credentials
    /// (`$select`ed, so 1 resource unit a page), paced by the shared [`Pacer`]. `next` is the
    /// `@odata.nextLink` of the page before, followed only when it points at the configured
    /// Graph endpoint: the daemon's token goes nowhere else.
    pub async fn list_applications(&self, next: Option<&str>) -> Result<ApplicationsPage, Error> {
        const OPERATION: &str = "list_applications";
        let url = match next {
            None => format!(
                "{}/applications?$select=id,appId,displayName,passwordCredentials,keyCredentials&$top={}",
                self.base, LIST_PAGE_SIZE
            ),
            Some(link) => {
                let origin = |u: &str| url::Url::parse(u).ok().map(|u| u.origin());
                if origin(link).is_none() || origin(link) != origin(&self.base) {
                    return Err(Error::new(
                        SERVICE,
                        OPERATION,
                        Class::Permanent,
                        "the answer's @odata.nextLink points away from graph_endpoint",
                    ));
                }
                link.to_string()
            }
        };
        self.pacer.resource_units(1).await;
        let (_, body) = self.send(OPERATION, Call::get(url), false).await?;
        parse_applications_page(&body).map_err(|e| malformed(OPERATION, &e))
    }

    /// Waits until [`WRITE_GAP`] has passed since the last write to `object_id`, and claims the
    /// next slot.
    async fn pace(&self, object_id: &str) {
        let wait_until = {
            let mut guard = self.last_write.lock().unwrap_or_else(|p| p.into_inner());
            let (last, prune_at) = &mut *guard;
            let now = tokio::time::Instant::now();
            let slot = last
                .get(object_id)
                .map(|t| (*t + WRITE_GAP).max(now))
                .unwrap_or(now);
            last.insert(object_id.to_string(), slot);
            // Only slots within the last WRITE_GAP matter: a few seconds' worth of writes. Pruned
            // whenever the map doubles, so it never holds an entry per application written
            // since the start (a megabyte at ten thousand clients).
            if last.len() > *prune_at {
                last.retain(|_, t| *t + WRITE_GAP > now);
                *prune_at = (2 * last.len()).max(1024);
            }
            slot
        };
        tokio::time::sleep_until(wait_until).await;
    }

    /// `addPassword`. Never retried by the caller with the same marker: when the answer is lost
    /// (`Class::OutcomeUnknown`) the credential is found again by its display name.
    pub async fn add_password(
        &self,
        object_id: &str,
        display_name: &str,
        end: OffsetDateTime,
    ) -> Result<NewPassword, Error> {
        self.pace(object_id).await;
        self.pacer.write_slot().await;
        let url = format!("{}/applications/{object_id}/addPassword", self.base);
        let end_text = end
            .format(&Rfc3339)
            .map_err(|e| Error::new(SERVICE, "add_password", Class::Permanent, e.to_string()))?;
        let body =
            json!({"passwordCredential": {"displayName": display_name, "endDateTime": end_text}});
        let (_, body) = self
            .send(ADD_PASSWORD, Call::post(url, &body), true)
            .await?;
        // The value is in this body: parse it without ever putting the body into an error,
        // and overwrite it once parsed.
        let parsed = serde_json::from_slice::<RawPassword>(&body);
        super::wipe(body);
        let raw = parsed.map_err(|_| {
            Error::new(
                SERVICE,
                "add_password",
                Class::OutcomeUnknown,
                "the answer to addPassword could not be read",
            )
        })?;
        let (Some(key_id), Some(secret)) = (raw.key_id, raw.secret_text) else {
            return Err(Error::new(
                SERVICE,
                "add_password",
                Class::OutcomeUnknown,
                "the answer to addPassword has no keyId or secretText",
            ));
        };
        Ok(NewPassword {
            key_id: key_id.to_ascii_lowercase(),
            secret,
            start: parse_time(raw.start_date_time.as_deref()),
            end: parse_time(raw.end_date_time.as_deref()).unwrap_or(end),
        })
    }

    /// Waits for the next write slot of `object_id` (the gap between writes to one object, and
    /// the write quota) and claims it, so that a [`GraphClient::remove_password_now`] right
    /// after goes out at once: a removal then follows its last read of the vault with no wait in
    /// between.
    pub async fn claim_write(&self, object_id: &str) {
        self.pace(object_id).await;
        self.pacer.write_slot().await;
    }

    /// A write that is not to one application's credentials (creating an application or a
    /// service principal): within the write quota.
    pub(super) async fn write_slot(&self) {
        self.pacer.write_slot().await;
    }

    /// Writes waiting for the quota now (`crate::daemon` stops adding reconciles then).
    pub fn writes_waiting(&self) -> usize {
        self.pacer.writes_waiting()
    }

    /// `removePassword`; an unknown key id counts as removed.
    pub async fn remove_password(&self, object_id: &str, key_id: &str) -> Result<(), Error> {
        self.claim_write(object_id).await;
        self.remove_password_now(object_id, key_id).await
    }

    /// `removePassword` in a write slot the caller claimed with [`GraphClient::claim_write`].
    pub async fn remove_password_now(&self, object_id: &str, key_id: &str) -> Result<(), Error> {
        let url = format!("{}/applications/{object_id}/removePassword", self.base);
        match self
            .send(
                "remove_password",
                Call::post(url, &json!({"keyId": key_id})),
                true,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.status == Some(400) && e.message.contains("No password credential found") =>
            {
                Ok(())
            }
            // A lost answer to a removal is safe to repeat.
            Err(mut e) if e.class == Class::OutcomeUnknown => {
                e.class = Class::Transient { retry_after: None };
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

/// A Graph request before it is signed: its method, URL and JSON body.
pub(super) struct Call {
    method: http::Method,
    url: String,
    body: Option<bytes::Bytes>,
}

impl Call {
    pub(super) fn get(url: impl Into<String>) -> Call {
        Call {
            method: http::Method::GET,
            url: url.into(),
            body: None,
        }
    }

    /// A `POST` of `body` (which holds no secret: Graph's requests never do).
    pub(super) fn post(url: impl Into<String>, body: &serde_json::Value) -> Call {
        Call {
            method: http::Method::POST,
            url: url.into(),
            body: Some(body.to_string().into()),
        }
    }

    /// The request with the daemon's headers and `token`, marked sensitive so that no `Debug`
    /// of the request shows it.
    fn request(self, token: &str) -> Result<http::Request<bytes::Bytes>, http::Error> {
        let mut auth = http::HeaderValue::try_from(format!("Bearer {token}"))?;
        auth.set_sensitive(true);
        // A URL that is not a URI as it stands (a raw space in a `@odata.nextLink`) is read as
        // a browser reads it: `url::Url` percent-encodes what needs it.
        let uri = match http::Uri::try_from(self.url.as_str()) {
            Ok(uri) => uri,
            Err(e) => match url::Url::parse(&self.url) {
                Ok(url) => http::Uri::try_from(url.as_str())?,
                Err(_) => return Err(e.into()),
            },
        };
        let mut request = http::Request::builder()
            .method(self.method)
            .uri(uri)
            .header(http::header::AUTHORIZATION, auth)
            .header("x-ms-throttle-priority", "low");
        if self.body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        request.body(self.body.unwrap_or_default())
    }
}

pub(super) fn malformed(operation: &'static str, e: &serde_json::Error) -> Error {
    Error::new(
        SERVICE,
        operation,
        Class::Transient { retry_after: None },
        format!("malformed answer: {e}"),
    )
}

/// The `error.code` and `error.message` of a Graph error body.
pub fn graph_error(body: &[u8]) -> (Option<String>, String) {
    #[derive(Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Outer>(body) {
        Ok(o) => {
            let m = super::clip(&o.error.message.unwrap_or_default(), 400);
            (o.error.code.map(|c| super::clip(&c, 100)), m)
        }
        Err(_) => (None, "unreadable error body".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_next_link_with_a_raw_space_is_percent_encoded_as_a_browser_would() {
        let link = "https://graph.example/v1.0/applications?$skiptoken=a b";
        let request = Call::get(link).request("token").unwrap();
        assert_eq!(
            request.uri(),
            "https://graph.example/v1.0/applications?$skiptoken=a%20b"
        );
        assert!(request.headers()[http::header::AUTHORIZATION].is_sensitive());
        assert!(Call::get("not a url").request("token").is_err());
    }
}

//! The tenant inventory: every application's password and certificate credentials with their
//! expiry, whether this installation manages them or not. Outages come from the credentials no
//! one rotates, and secret-rotator otherwise sees only the applications it manages.
//!
//! The listing is `GET /applications` in pages of 999 with `$select` (1 resource unit a page),
//! paced by the daemon's Graph pacer ([`crate::azure::graph::Pacer::resource_units`]) so that
//! it never takes more than half of the tenant's resource-unit budget from the reconciles. It
//! needs `Application.Read.All`: a 403 says so. The daemon exports what it found as
//! `tenant_credential_expiry_timestamp_seconds` every `[inventory] interval`, bounded by
//! `export` and [`MAX_SERIES`]; `secret-rotator inventory` prints it.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::azure::graph::GraphClient;
use crate::azure::{Error, retry};
use crate::clock;

/// The most series the daemon exports, soonest expiry first: a tenant with hundreds of
/// thousands of credentials must not take the Prometheus server down with it.
pub const MAX_SERIES: usize = 100_000;

/// How long each page keeps retrying transient failures (429s included: the pacer waits them
/// out).
const PAGE_BUDGET: Duration = Duration::from_secs(120);

/// The `[inventory]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub enabled: bool,
    pub interval: Duration,
    pub export: Export,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: false,
            interval: Duration::from_secs(3600),
            export: Export::All,
        }
    }
}

/// Which credentials the daemon exports as series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    All,
    /// Only those expiring within this (or already expired).
    ExpiringWithin(Duration),
}

impl Export {
    /// `all` or `expiring_within:<duration>`.
    pub fn parse(text: &str) -> Result<Export, String> {
        if text == "all" {
            return Ok(Export::All);
        }
        match text.strip_prefix("expiring_within:") {
            Some(d) => clock::parse_duration(d)
                .map(Export::ExpiringWithin)
                .map_err(|e| format!("'{text}': {e}")),
            None => Err(format!(
                "'{text}' is not all or expiring_within:<duration> (e.g. expiring_within:60d)"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Password,
    Certificate,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Password => "password",
            Kind::Certificate => "certificate",
        }
    }
}

/// One credential of the tenant. Never a value: Graph lists none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantCredential {
    pub app_id: String,
    pub app: String,
    pub key_id: String,
    pub kind: Kind,
    pub display_name: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires: Option<OffsetDateTime>,
    /// Made by this installation (its marker `secret-rotator:<instance>:`).
    pub managed: bool,
}

/// What one listing of the tenant found.
#[derive(Debug, Default)]
pub struct Inventory {
    pub applications: usize,
    pub pages: usize,
    pub credentials: Vec<TenantCredential>,
}

/// Whether a credential's display name is this installation's marker.
pub fn is_managed(display_name: Option<&str>, instance: &str) -> bool {
    let prefix = format!("secret-rotator:{instance}:");
    display_name.is_some_and(|d| d.starts_with(&prefix))
}

/// Reads every application of the tenant, page by page; `progress` is told the applications
/// read so far after each page.
pub async fn read(
    graph: &GraphClient,
    instance: &str,
    cancel: &CancellationToken,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<Inventory, Error> {
    let mut credentials = Vec::new();
    let (applications, pages) = read_pages(graph, instance, cancel, &mut |page, apps| {
        credentials.extend(page);
        progress(apps);
    })
    .await?;
    credentials.shrink_to_fit();
    Ok(Inventory {
        applications,
        pages,
        credentials,
    })
}

/// Reads every application of the tenant and hands each page's credentials to `on_page`, with
/// the applications read so far: the daemon keeps only what it exports, never the whole
/// listing. Returns the applications and the pages read.
pub async fn read_pages(
    graph: &GraphClient,
    instance: &str,
    cancel: &CancellationToken,
    on_page: &mut (dyn FnMut(Vec<TenantCredential>, usize) + Send),
) -> Result<(usize, usize), Error> {
    let (mut applications, mut pages) = (0, 0);
    let mut next: Option<String> = None;
    loop {
        let page = retry(PAGE_BUDGET, cancel, || {
            graph.list_applications(next.as_deref())
        })
        .await?;
        pages += 1;
        applications += page.applications.len();
        let mut credentials = Vec::new();
        for app in page.applications {
            for p in app.passwords {
                credentials.push(TenantCredential {
                    app_id: app.app_id.clone(),
                    app: app.display_name.clone(),
                    managed: is_managed(p.display_name.as_deref(), instance),
                    key_id: p.key_id,
                    kind: Kind::Password,
                    display_name: p.display_name,
                    expires: p.end,
                });
            }
            for c in app.certificates {
                credentials.push(TenantCredential {
                    app_id: app.app_id.clone(),
                    app: app.display_name.clone(),
                    managed: false,
                    key_id: c.key_id,
                    kind: Kind::Certificate,
                    display_name: c.display_name,
                    expires: c.end,
                });
            }
        }
        on_page(credentials, applications);
        match page.next {
            Some(link) => next = Some(link),
            None => return Ok((applications, pages)),
        }
    }
}

/// The credentials expiring within `within` of `now` (expired ones included), or all of them,
/// soonest first (those without an end last).
pub fn select(
    credentials: &[TenantCredential],
    within: Option<Duration>,
    now: OffsetDateTime,
) -> Vec<&TenantCredential> {
    let limit = within.map(|w| now + time::Duration::try_from(w).unwrap_or(time::Duration::MAX));
    let mut chosen: Vec<&TenantCredential> = credentials
        .iter()
        .filter(|c| match limit {
            None => true,
            Some(limit) => c.expires.is_some_and(|e| e <= limit),
        })
        .collect();
    chosen.sort_by(|a, b| match (a.expires, b.expires) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    chosen
}

/// One exported series of `tenant_credential_expiry_timestamp_seconds`.
#[derive(Debug, Clone)]
pub struct Series {
    pub app_id: Box<str>,
    pub app: Box<str>,
    pub key_id: Box<str>,
    pub kind: Kind,
    pub managed: bool,
    pub expiry: f64,
}

/// The series to export under `export`, at most [`MAX_SERIES`] (soonest expiry first), and how
/// many were left out by that cap. A credential without an end date has no timestamp to export.
pub fn series(
    credentials: &[TenantCredential],
    export: Export,
    now: OffsetDateTime,
) -> (Vec<Series>, usize) {
    cap(exported(credentials, export, now))
}

/// The series of the credentials `export` lets through, in no order.
fn exported(credentials: &[TenantCredential], export: Export, now: OffsetDateTime) -> Vec<Series> {
    let limit = match export {
        Export::All => None,
        Export::ExpiringWithin(d) => {
            Some(now + time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
        }
    };
    credentials
        .iter()
        .filter_map(|c| {
            let expires = c.expires?;
            limit.is_none_or(|l| expires <= l).then(|| Series {
                app_id: c.app_id.as_str().into(),
                app: c.app.as_str().into(),
                key_id: c.key_id.as_str().into(),
                kind: c.kind,
                managed: c.managed,
                expiry: clock::unix_seconds(expires),
            })
        })
        .collect()
}

/// The soonest [`MAX_SERIES`] of `series`, and how many more there were.
fn cap(mut series: Vec<Series>) -> (Vec<Series>, usize) {
    series.sort_by(|a, b| a.expiry.total_cmp(&b.expiry));
    let dropped = series.len().saturating_sub(MAX_SERIES);
    series.truncate(MAX_SERIES);
    series.shrink_to_fit();
    (series, dropped)
}

/// The daemon's inventory loop: lists the tenant every `[inventory] interval` while it is
/// enabled (the config may change on reload) and this replica leads (with `[ha]`: one
/// replica's series, one replica's resource units, one alert per credential), and exports what
/// it found. A replica that stops leading, or an inventory turned off, drops its series within
/// 15 s; one that starts leading lists at once. A failed listing keeps the last
/// series: expiry times do not go stale, and a gap would look like a fixed tenant.
pub async fn run(shared: Arc<crate::admin::Shared>, stop: CancellationToken) {
    let mut next_at = std::time::Instant::now();
    loop {
        let ctx = shared.context();
        let settings = ctx.config.inventory.clone();
        let leading = ctx.config.ha.is_none() || shared.role().is_some_and(|r| r.leader);
        if !(settings.enabled && leading) {
            shared.metrics.set_tenant(Vec::new());
            next_at = std::time::Instant::now();
        } else if std::time::Instant::now() >= next_at {
            list_and_export(&shared, &ctx, &settings, &stop).await;
            next_at = std::time::Instant::now() + settings.interval;
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// How often the inventory loop looks at the config and the replica's role.
const CHECK_EVERY: Duration = Duration::from_secs(15);

async fn list_and_export(
    shared: &crate::admin::Shared,
    ctx: &crate::rotation::Context,
    settings: &Settings,
    stop: &CancellationToken,
) {
    let started = std::time::Instant::now();
    let now = clock::now();
    let mut kept = Vec::new();
    let mut listed = 0usize;
    let read = read_pages(
        &ctx.azure.graph,
        &ctx.config.instance,
        stop,
        &mut |page, _| {
            listed += page.len();
            kept.extend(exported(&page, settings.export, now));
        },
    )
    .await;
    match read {
        Ok((applications, _)) => {
            let (series, dropped) = cap(kept);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    exported = series.len(),
                    "inventory: more credentials than the export cap; the soonest to expire are exported (set export = \"expiring_within:60d\")"
                );
            }
            tracing::info!(
                applications,
                credentials = listed,
                exported = series.len(),
                seconds = started.elapsed().as_secs(),
                "inventory: tenant read"
            );
            shared.metrics.set_tenant(series);
        }
        Err(e) if e.status == Some(403) => tracing::error!(
            "inventory: Graph refused to list the tenant's applications: grant the daemon Application.Read.All ({e})"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "inventory: reading the tenant failed; trying again at the next interval")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(key: &str, days: Option<i64>, managed: bool) -> TenantCredential {
        TenantCredential {
            app_id: "a".into(),
            app: "app".into(),
            key_id: key.into(),
            kind: Kind::Password,
            display_name: None,
            expires: days.map(|d| now() + time::Duration::days(d)),
            managed,
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    #[test]
    fn export_is_all_or_expiring_within_a_duration() {
        assert_eq!(Export::parse("all"), Ok(Export::All));
        assert_eq!(
            Export::parse("expiring_within:60d"),
            Ok(Export::ExpiringWithin(Duration::from_secs(60 * 86_400)))
        );
        assert!(
            Export::parse("some")
                .unwrap_err()
                .contains("expiring_within:")
        );
        assert!(Export::parse("expiring_within:60x").is_err());
    }

    #[test]
    fn only_this_installations_marker_is_managed() {
        assert!(is_managed(Some("secret-rotator:prod:c:r"), "prod"));
        assert!(!is_managed(Some("secret-rotator:test:c:r"), "prod"));
        assert!(!is_managed(Some("made in the portal"), "prod"));
        assert!(!is_managed(None, "prod"));
    }

    #[test]
    fn selection_keeps_what_expires_within_the_window_soonest_first() {
        let all = [
            cred("later", Some(90), false),
            cred("never", None, false),
            cred("soon", Some(10), false),
            cred("expired", Some(-5), true),
        ];
        let keys =
            |v: Vec<&TenantCredential>| v.iter().map(|c| c.key_id.clone()).collect::<Vec<_>>();
        assert_eq!(
            keys(select(&all, Some(Duration::from_secs(30 * 86_400)), now())),
            ["expired", "soon"]
        );
        assert_eq!(
            keys(select(&all, None, now())),
            ["expired", "soon", "later", "never"]
        );
    }

    #[test]
    fn the_export_guard_keeps_the_soonest_and_counts_the_rest() {
        let all: Vec<TenantCredential> = (0..(MAX_SERIES as i64 + 10))
            .map(|i| cred(&i.to_string(), Some(i), false))
            .collect();
        let (series, dropped) = series(&all, Export::All, now());
        assert_eq!(series.len(), MAX_SERIES);
        assert_eq!(dropped, 10);
        assert_eq!(&*series[0].key_id, "0");
        let (some, _) = super::series(
            &all,
            Export::ExpiringWithin(Duration::from_secs(3 * 86_400)),
            now(),
        );
        assert_eq!(some.len(), 4, "days 0 to 3");
    }
}

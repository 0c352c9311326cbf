//! The rotation policy keys, in `[defaults]` and on each client: when to reconcile, how long a
//! secret lives, when to renew, how long the old one stays, how a new one is proven.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::Deserialize;

use super::azure::Cloud;
use super::values::{Ctx, duration};
use super::{ConfigError, S};

/// When a client is reconciled: a cron expression (seconds first) in a time zone.
#[derive(Clone)]
pub struct Schedule {
    pub expression: String,
    pub cron: Cron,
    pub timezone: Tz,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expression, self.timezone)
    }
}

impl Schedule {
    /// The first run strictly after `after`, DST-correct in the schedule's zone.
    pub fn next_after(&self, after: time::OffsetDateTime) -> Option<time::OffsetDateTime> {
        use chrono::TimeZone;
        let start = chrono::Utc
            .timestamp_opt(after.unix_timestamp(), after.nanosecond())
            .single()?
            .with_timezone(&self.timezone);
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        time::OffsetDateTime::from_unix_timestamp(next.timestamp()).ok()
    }
}

/// A client's rotation policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Shared by the clients with the same expression and zone: a parsed expression holds a
    /// bitfield of every year up to 5000.
    pub schedule: std::sync::Arc<Schedule>,
    pub secret_lifetime: Duration,
    pub renew_before: Duration,
    pub overlap: Duration,
    pub verify_scope: String,
    pub verify_timeout: Duration,
    pub verify_successes: u32,
    pub adopt: bool,
    /// When scheduled renewals may run (`windows`, `freeze`, in `timezone`).
    pub change: crate::rotation::window::ChangePolicy,
    /// How often the published secret is checked for drift; zero turns the check off.
    pub drift_interval: Duration,
    pub repair: crate::drift::Repair,
    /// After a new secret signs in, one GET with its token must answer 2xx (the app holds its
    /// role on the API); `None` when unset or `""`.
    pub verify_url: Option<url::Url>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) schedule: Option<S<String>>,
    pub(super) timezone: Option<S<String>>,
    pub(super) secret_lifetime: Option<S<String>>,
    pub(super) renew_before: Option<S<String>>,
    pub(super) overlap: Option<S<String>>,
    pub(super) verify_scope: Option<S<String>>,
    pub(super) verify_timeout: Option<S<String>>,
    pub(super) verify_successes: Option<S<i64>>,
    pub(super) adopt: Option<S<bool>>,
    pub(super) allow_custom_vault_host: Option<S<bool>>,
    pub(super) windows: Option<Vec<S<String>>>,
    pub(super) freeze: Option<Vec<S<String>>>,
    pub(super) drift_interval: Option<S<String>>,
    pub(super) repair: Option<S<String>>,
    pub(super) verify_url: Option<S<String>>,
}

const DEFAULT_SCHEDULE: &str = "0 */15 * * * *";

fn cron_parser() -> CronParser {
    CronParser::builder().seconds(Seconds::Required).build()
}

/// Resolves a client's policy: its own keys over `[defaults]` over the built-in defaults.
/// `crons` holds the expressions parsed so far: parsing one costs about 250,000 instructions (it
/// fills a bitfield of every year up to 5000), and most clients share a few.
pub(super) fn policy(
    ctx: &Ctx<'_>,
    own: &RawPolicy,
    defaults: &RawPolicy,
    prefix: &str,
    cloud: Cloud,
    crons: &mut std::collections::HashMap<String, Cron>,
) -> Result<(Policy, PolicySpans), ConfigError> {
    let pick =
        |a: &Option<S<String>>, b: &Option<S<String>>, name: &str| -> Option<(S<String>, String)> {
            match (a, b) {
                (Some(v), _) => Some((v.clone(), format!("{prefix}.{name}"))),
                (None, Some(v)) => Some((v.clone(), format!("defaults.{name}"))),
                (None, None) => None,
            }
        };
    let schedule_src = pick(&own.schedule, &defaults.schedule, "schedule");
    let expression = schedule_src
        .as_ref()
        .map(|(v, _)| v.get_ref().clone())
        .unwrap_or_else(|| DEFAULT_SCHEDULE.to_string());
    let cron = match crons.get(&expression) {
        Some(c) => c.clone(),
        None => {
            let c = cron_parser()
                .parse(&expression)
                .map_err(|e| match &schedule_src {
                    Some((v, key)) => ctx.err(
                        v,
                        key,
                        format!("'{expression}' is not a cron expression with seconds: {e}"),
                    ),
                    None => ctx.err_nowhere("schedule", e.to_string()),
                })?;
            crons.insert(expression.clone(), c.clone());
            c
        }
    };
    let timezone = match pick(&own.timezone, &defaults.timezone, "timezone") {
        Some((v, key)) => Tz::from_str(v.get_ref()).map_err(|_| {
            ctx.err(
                &v,
                &key,
                format!("'{}' is not an IANA time zone", v.get_ref()),
            )
        })?,
        None => Tz::UTC,
    };
    let dur = |name: &str, default: Duration| -> Result<(Duration, Located), ConfigError> {
        let (a, b) = match name {
            "secret_lifetime" => (&own.secret_lifetime, &defaults.secret_lifetime),
            "renew_before" => (&own.renew_before, &defaults.renew_before),
            "overlap" => (&own.overlap, &defaults.overlap),
            _ => (&own.verify_timeout, &defaults.verify_timeout),
        };
        match pick(a, b, name) {
            Some((v, key)) => Ok((duration(ctx, &v, &key)?, Some((v.span(), key)))),
            None => Ok((default, None)),
        }
    };
    let day = Duration::from_secs(86_400);
    let (secret_lifetime, lifetime_at) = dur("secret_lifetime", 90 * day)?;
    let (renew_before, renew_at) = dur("renew_before", 30 * day)?;
    let (overlap, overlap_at) = dur("overlap", 7 * day)?;
    let (verify_timeout, verify_timeout_at) = dur("verify_timeout", Duration::from_secs(300))?;
    let verify_scope = match pick(&own.verify_scope, &defaults.verify_scope, "verify_scope") {
        Some((v, key)) => {
            let s = v.get_ref().trim().to_string();
            if !s.ends_with("/.default") || s.contains(char::is_whitespace) {
                return Err(ctx.err(
                    &v,
                    &key,
                    format!("'{s}' must be one resource's scope ending in /.default"),
                ));
            }
            s
        }
        None => cloud.graph_scope().to_string(),
    };
    let verify_successes = match (&own.verify_successes, &defaults.verify_successes) {
        (Some(v), _) | (None, Some(v)) => {
            let key = if own.verify_successes.is_some() {
                format!("{prefix}.verify_successes")
            } else {
                "defaults.verify_successes".into()
            };
            let n = *v.get_ref();
            if !(1..=10).contains(&n) {
                return Err(ctx.err(v, &key, format!("{n} is out of range: 1 to 10")));
            }
            n as u32
        }
        (None, None) => 3,
    };
    // The first verification attempt goes `VERIFY_FIRST_WAIT` after `addPassword` answers and
    // successes are `VERIFY_SPACING` apart (src/rotation/rotate.rs): a shorter deadline can
    // never be met, and each attempt would add a credential, sign in with it and remove it.
    let least = crate::rotation::VERIFY_FIRST_WAIT
        + crate::rotation::VERIFY_SPACING * verify_successes.saturating_sub(1);
    if verify_successes > 1 && verify_timeout <= least {
        let message = format!(
            "{} is too short for verify_successes = {verify_successes}: the first sign-in goes {} after the new credential is added and each further one {} after the last, so it must be longer than {}",
            crate::clock::format_duration(verify_timeout),
            crate::clock::format_duration(crate::rotation::VERIFY_FIRST_WAIT),
            crate::clock::format_duration(crate::rotation::VERIFY_SPACING),
            crate::clock::format_duration(least),
        );
        return Err(match verify_timeout_at {
            Some((span, key)) => ctx.err_at::<String>(span, &key, message),
            None => ctx.err_nowhere(&format!("{prefix}.verify_timeout"), message),
        });
    }
    let verify_url = match pick(&own.verify_url, &defaults.verify_url, "verify_url") {
        Some((v, _)) if v.get_ref().trim().is_empty() => None,
        Some((v, key)) => Some(verify_url(ctx, &v, &key)?),
        None => None,
    };
    let adopt = own
        .adopt
        .as_ref()
        .or(defaults.adopt.as_ref())
        .map(|v| *v.get_ref())
        .unwrap_or(false);
    let change = super::change::change(
        ctx,
        (&own.windows, &own.freeze),
        (&defaults.windows, &defaults.freeze),
        prefix,
        timezone,
    )?;
    let (drift_interval, repair) = super::drift::drift(
        ctx,
        (&own.drift_interval, &own.repair),
        (&defaults.drift_interval, &defaults.repair),
        prefix,
    )?;
    Ok((
        Policy {
            schedule: std::sync::Arc::new(Schedule {
                expression,
                cron,
                timezone,
            }),
            secret_lifetime,
            renew_before,
            overlap,
            verify_scope,
            verify_timeout,
            verify_successes,
            adopt,
            change,
            drift_interval,
            repair,
            verify_url,
        },
        PolicySpans {
            lifetime_at,
            renew_at,
            overlap_at,
        },
    ))
}

/// `verify_url`: an https URL the new secret's token is sent to (a query is allowed: DICOM's
/// `changefeed?limit=1`).
fn verify_url(ctx: &Ctx<'_>, v: &S<String>, key: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(v.get_ref().trim())
        .map_err(|e| ctx.err(v, key, format!("'{}' is not a URL: {e}", v.get_ref())))?;
    if url.scheme() != "https" || url.host_str().is_none() {
        return Err(ctx.err(
            v,
            key,
            format!(
                "'{}' must be an https URL (the new secret's token is sent to it)",
                v.get_ref()
            ),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(ctx.err(
            v,
            key,
            format!("'{}' must not carry credentials or a fragment", v.get_ref()),
        ));
    }
    Ok(url)
}

/// Where a value came from: its span and its key, when the file set it.
pub(super) type Located = Option<(std::ops::Range<usize>, String)>;

pub(super) struct PolicySpans {
    pub(super) lifetime_at: Located,
    pub(super) renew_at: Located,
    pub(super) overlap_at: Located,
}

//! What a reconcile leaves in the store and the metrics: the client's status row, its gauges,
//! and the location it is at (each written only when it changes).

use time::OffsetDateTime;

use super::{Context, Failure, Report, plan};
use crate::azure::graph::Application;
use crate::clock;
use crate::config::Client;
use crate::metrics::ClientGauges;
use crate::store::{ClientRow, Place, Records};
use plan::{Blocked, marker_prefix};

/// Fills the gauges from what was observed and done.
pub(super) fn report_gauges(
    ctx: &Context,
    client: &Client,
    app: &Application,
    report: &mut Report,
    now: OffsetDateTime,
) {
    let prefix = marker_prefix(&ctx.config.instance, &client.name);
    let mut credentials: Vec<(crate::metrics::KeyId, bool, f64)> = app
        .passwords
        .iter()
        .filter(|p| {
            !report
                .removed
                .iter()
                .any(|r| r.key_id.eq_ignore_ascii_case(&p.key_id))
        })
        .map(|p| {
            let ours = p
                .display_name
                .as_deref()
                .is_some_and(|d| d.starts_with(&prefix));
            (
                p.key_id.as_str().into(),
                ours,
                p.end.map(clock::unix_seconds).unwrap_or(0.0),
            )
        })
        .collect();
    let (expires, renew_at, last) = match &report.rotated {
        Some(r) => {
            credentials.push((
                r.key_id.as_str().into(),
                true,
                clock::unix_seconds(r.expires),
            ));
            (
                Some(r.expires),
                Some(
                    r.expires
                        - time::Duration::try_from(client.policy.renew_before)
                            .unwrap_or(time::Duration::ZERO),
                ),
                Some(now),
            )
        }
        None => {
            // An unmanaged published secret's expiry is exported too: consumers read it, and
            // the expiry alerts must see it while the client is blocked.
            let p = report.plan.published.as_ref();
            (
                p.and_then(|p| p.expires),
                report.plan.renew_at,
                p.filter(|p| p.managed).and_then(|p| p.created),
            )
        }
    };
    // A renewal waiting for a change window or the budget is next tried when the wait ends.
    let waiting = match &report.plan.blocked {
        Some(b @ (Blocked::WaitingForWindow { .. } | Blocked::WaitingForBudget { .. })) => {
            b.wait_until()
        }
        _ => None,
    };
    let renew_at = waiting.or(renew_at);
    let next = renew_at.map(|at| at.max(now)).and_then(|at| {
        client
            .policy
            .schedule
            .next_after(at - time::Duration::seconds(1))
    });
    report.gauges = ClientGauges {
        secret_expiry: expires.map(clock::unix_seconds),
        next_rotation: next.map(clock::unix_seconds),
        last_rotation: last.map(clock::unix_seconds),
        ready: expires.is_some_and(|e| e > now),
        credentials,
    };
}

/// What the end of a reconcile whose observation succeeded needs from the observation's read
/// of the store.
pub(super) struct Seen {
    /// The client's status row before this reconcile.
    pub previous: Option<ClientRow>,
    /// Whether the status row may be left as it is when nothing shown in it changed: the store
    /// holds no record of an unnamed read for the client (such a record is stale once a status
    /// row written after it names its credential as the published one,
    /// `Records::known_published`: only then does the row's time matter).
    pub may_keep_row: bool,
}

impl Seen {
    pub(super) fn new(records: &Records) -> Seen {
        Seen {
            previous: records.row.clone(),
            may_keep_row: !records.has_unpublished(),
        }
    }
}

/// Records the client's location in the store, so that once the client moves, a read of it can
/// prove its credentials superseded there; and forgets the locations no own credential was
/// made for any more. Before deciding, not at the end with the status row: the arrival is in
/// whole seconds and counts only when later than every other location's, and the end of one
/// reconcile and the end of the next (the client moved again) often fall in one second, which
/// leaves the arrival unknown and the old location's credentials waiting one more `overlap`
/// (two moved-client tests of `tests/it/review2.rs` failed so). Not written when the
/// observation's read of the store shows exactly that already (a client that stays where it
/// was).
pub(super) async fn remember_location(
    ctx: &Context,
    client: &Client,
    observed: &plan::Observed,
    records: &Records,
) {
    // Rows are per client name, whatever the instance: the credentials of this client under
    // another instance name (an instance renamed, and perhaps renamed back) keep the address of
    // the location they were made for.
    let mut keep: Vec<&str> = observed
        .passwords
        .iter()
        .filter_map(|p| rotation_id_of_any_instance(p.display_name.as_deref()?, &client.name))
        .filter_map(plan::location_of)
        .collect();
    keep.push(&observed.location);
    let place = Place {
        tag: &observed.location,
        key_vault_url: client.key_vault_url.as_str(),
        secret_name: &client.secret_name,
        keep: &keep,
        // The arrival on Azure's clock when ours is behind it, so that a clock put right
        // later cannot make it look earlier than it was (it times a moved client's removals).
        now: clock::now()
            + time::Duration::seconds((-observed.skew_seconds).max(0))
            + plan::CLOCK_RESOLUTION,
    };
    if records.location_unchanged(&place) {
        return;
    }
    if let Err(e) = ctx.store.move_location(&client.name, &place).await {
        tracing::warn!(client = %client.name, error = %e, "could not record the client's location");
    }
}

/// Records when a read showed a published own credential named by no version (the plan's
/// held credentials: first seen now for those the hold counts from this read, no record or one
/// whose continuity the plan found broken; last seen now for the others, which keeps their
/// record continuous), and forgets such records that no longer hold. A store write per
/// reconcile only while a credential is held. The time is taken after the read, so it is never
/// earlier than the read. The first is on Azure's clock when ours is behind it (`skew_seconds`,
/// as the plan saw it), so that a clock put right later cannot make the read look earlier than
/// it was and shorten the hold. The last is on Azure's clock whichever way ours is off, as the
/// planner measures the gap after it: a clock ahead, put right later, cannot make a gap look
/// shorter than it was, nor a clock that stays ahead every gap longer (which restarted every
/// hold at every read). A record that cannot be written is written at the next reconcile,
/// which keeps the credential until then (no record: first seen at that reconcile; a last read
/// not recorded: a gap that may count the hold again, later).
pub(super) async fn remember_unpublished(
    ctx: &Context,
    client: &Client,
    plan: &plan::Plan,
    skew_seconds: i64,
) {
    let (first_seen, still_unnamed): (Vec<&plan::HeldUnpublished>, Vec<_>) = plan
        .held_unpublished
        .iter()
        .partition(|h| h.since.is_none());
    let keys = |held: Vec<&plan::HeldUnpublished>| -> Vec<String> {
        held.into_iter().map(|h| h.key_id.clone()).collect()
    };
    let now = clock::now();
    if !plan.held_unpublished.is_empty()
        && let Err(e) = ctx
            .store
            .record_unpublished(
                &client.name,
                &keys(first_seen),
                &keys(still_unnamed),
                now + time::Duration::seconds((-skew_seconds).max(0)),
                now - time::Duration::seconds(skew_seconds),
            )
            .await
    {
        tracing::warn!(client = %client.name, error = %e, "could not record that a published credential is named by no version; it is kept, and recorded at the next reconcile");
    }
    if !plan.unpublished_cleared.is_empty()
        && let Err(e) = ctx
            .store
            .forget_unpublished(&client.name, &plan.unpublished_cleared)
            .await
    {
        tracing::warn!(client = %client.name, error = %e, "could not forget a stale record of a credential named by no version");
    }
}

/// The rotation id of a marker `secret-rotator:<any instance>:<client>:<rotation-id>`.
fn rotation_id_of_any_instance<'a>(display_name: &'a str, client: &str) -> Option<&'a str> {
    let (head, rotation_id) = display_name
        .strip_prefix("secret-rotator:")?
        .rsplit_once(':')?;
    let instance = head.strip_suffix(client)?.strip_suffix(':')?;
    (!instance.is_empty()).then_some(rotation_id)
}

/// Records how a reconcile ended: the client's row in the store and its gauges, for success and
/// failure alike (`seen`: what the observation read, `None` when it failed). Returns the status
/// row as recorded (`None` when it could not be).
pub(super) async fn status(
    ctx: &Context,
    client: &Client,
    result: &Result<Report, Failure>,
    gauges: Option<ClientGauges>,
    seen: Option<&Seen>,
) -> Option<ClientRow> {
    let now = clock::now();
    match &result {
        Ok(report) => {
            let row =
                ClientRow {
                    client: client.name.to_string(),
                    published_key_id: report.rotated.as_ref().map(|r| r.key_id.clone()).or_else(
                        || {
                            report
                                .plan
                                .published
                                .as_ref()
                                .and_then(|p| p.key_id.clone())
                        },
                    ),
                    published_version: report
                        .rotated
                        .as_ref()
                        .map(|r| r.version.clone())
                        .or_else(|| report.plan.published.as_ref().map(|p| p.version.clone())),
                    expires_at: report.gauges.secret_expiry.map(|e| e as i64),
                    next_rotation_at: report.gauges.next_rotation.map(|e| e as i64),
                    last_result: Some(
                        if report.rotated.is_some() {
                            "rotated"
                        } else {
                            "ok"
                        }
                        .to_string(),
                    ),
                    last_error: report
                        .plan
                        .blocked
                        .as_ref()
                        .map(|b| b.to_string())
                        .or_else(|| report.warnings.first().cloned()),
                    last_success_at: report.rotated.as_ref().map(|_| now.unix_timestamp()),
                    updated_at: now.unix_timestamp(),
                };
            ctx.metrics.set_client(&client.name, &report.gauges);
            // A reconcile that found the client as the last one left it writes nothing.
            let unchanged = seen.is_some_and(|s| {
                s.may_keep_row
                    && report.plan.held_unpublished.is_empty()
                    && s.previous.as_ref().is_some_and(|p| shows_the_same(p, &row))
            });
            if unchanged {
                return seen.and_then(|s| s.previous.clone());
            }
            match ctx.store.upsert_client(&row).await {
                Ok(()) => Some(row),
                Err(e) => {
                    tracing::warn!(client = %client.name, error = %e, "could not record status");
                    None
                }
            }
        }
        Err(e) => {
            let error = e.to_string();
            // What was observed is exported even when the reconcile failed or is blocked, so
            // that the expiry alerts see a client that never rotated.
            let observed = gauges.as_ref().map(|g| {
                (
                    g.secret_expiry.map(|e| e as i64),
                    g.next_rotation.map(|e| e as i64),
                )
            });
            // Exported before the store's write is awaited, as on success: the failure was
            // counted in this same poll, and a scrape between the two showed the count without
            // the gauges it came with (a client that was ready still ready).
            match gauges {
                Some(mut g) => {
                    g.ready = false;
                    ctx.metrics.set_client(&client.name, &g);
                }
                None => ctx.metrics.set_client_ready(&client.name, false),
            }
            ctx.store
                .record_failure(&client.name, move |row| {
                    row.last_result = Some("failed".into());
                    row.last_error = Some(error.clone());
                    row.last_success_at = None;
                    row.updated_at = now.unix_timestamp();
                    if let Some((expires_at, next_rotation_at)) = observed {
                        row.expires_at = expires_at;
                        row.next_rotation_at = next_rotation_at;
                    }
                })
                .await
                .map_err(|e| tracing::warn!(client = %client.name, error = %e, "could not record status"))
                .ok()
        }
    }
}

/// Whether the status row `next` (whose `last_success_at`, when `None`, keeps the stored one)
/// shows what `stored` shows: all but the time it was written.
fn shows_the_same(stored: &ClientRow, next: &ClientRow) -> bool {
    let next = ClientRow {
        last_success_at: next.last_success_at.or(stored.last_success_at),
        updated_at: stored.updated_at,
        ..next.clone()
    };
    next == *stored
}

#[cfg(test)]
mod tests {
    use super::rotation_id_of_any_instance as of;

    #[test]
    fn a_markers_rotation_id_is_read_for_any_instance_of_the_client() {
        let rid = "0a1b2c3d-00000000000000000000000000000001";
        assert_eq!(
            of(&format!("secret-rotator:prod:dicom:{rid}"), "dicom"),
            Some(rid)
        );
        assert_eq!(
            of(&format!("secret-rotator:renamed:dicom:{rid}"), "dicom"),
            Some(rid)
        );
        assert_eq!(
            of(&format!("secret-rotator:prod:other:{rid}"), "dicom"),
            None
        );
        assert_eq!(
            of(&format!("secret-rotator:prod:xdicom:{rid}"), "dicom"),
            None
        );
        assert_eq!(of(&format!("secret-rotator::dicom:{rid}"), "dicom"), None);
        assert_eq!(of("a person's secret", "dicom"), None);
    }
}

//! One client's reconcile: [`observe`], decide ([`plan`]), execute (this module and its steps).
//!
//! Execution follows docs/design/protocol.md: the planned removals first (`remove`: retiring
//! and sweeping frees the slot a new credential may need), then the rotation (`rotate`: record
//! the intent, `addPassword` with the marker, verify with real token requests, publish a new Key
//! Vault version, mark the intent done), with what failed attempts leave behind cleaned up
//! (`recover`), and the outcome recorded (`record`). Each step is safe to repeat and to crash in.

mod announce;
pub mod api_check;
pub mod budget;
pub mod observe;
pub mod plan;
mod record;
mod recover;
mod remove;
mod rotate;
pub mod window;

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::azure::entra::EntraClient;
use crate::azure::graph::GraphClient;
use crate::azure::keyvault::VaultClients;
use crate::azure::{self, AzureHttp, Class};
use crate::clock;
use crate::config::{Client, Config};
use crate::metrics::{ClientGauges, Metrics};
use crate::store::Store;
use plan::{Blocked, Plan, PolicyView, Removal, RemovalReason};
use record::{remember_location, report_gauges};
use recover::forget_stale_intents;
use remove::{remove, revoke};
use rotate::rotate;

/// Consecutive verification successes are at least this far apart: Entra replicas converge
/// independently, so one success does not imply the next.
pub const VERIFY_SPACING: Duration = Duration::from_secs(5);
/// The first verification attempt waits this long after the answer to `addPassword`: no new
/// credential has been seen to sign in sooner (docs/design/protocol.md, "Execute").
pub const VERIFY_FIRST_WAIT: Duration = Duration::from_secs(1);
/// How long writes keep retrying transient failures.
const WRITE_BUDGET: Duration = Duration::from_secs(120);
/// How long a publish keeps retrying failures that certainly did not take effect.
const PUBLISH_BUDGET: Duration = Duration::from_secs(30);

/// Told the outcome of planning a forced reconcile before anything is written: `Err` carries
/// why the request is refused (the admin API answers 409 with it).
pub type Preflight = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The Azure clients of one config.
pub struct AzureClients {
    pub graph: GraphClient,
    pub entra: EntraClient,
    pub vaults: VaultClients,
}

impl AzureClients {
    pub fn new(config: &Config, shared: &AzureHttp) -> anyhow::Result<AzureClients> {
        let credential = azure::identity::credential(config, shared)?;
        Ok(AzureClients {
            graph: GraphClient::new(
                shared.clone(),
                credential.clone(),
                &config.azure.graph_endpoint,
                config.azure.cloud.graph_scope(),
                config.azure.graph_write_quota,
            ),
            entra: EntraClient::new(
                shared.clone(),
                &config.azure.authority_host,
                &config.azure.tenant_id,
            ),
            vaults: VaultClients::new(config, shared, credential),
        })
    }
}

/// What a reconcile needs.
#[derive(Clone)]
pub struct Context {
    pub config: Arc<Config>,
    pub azure: Arc<AzureClients>,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub shared: AzureHttp,
    /// `daemon.max_rotations_per_hour`, shared by every reconcile (and kept across reloads).
    pub budget: Arc<budget::Budget>,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub force: bool,
    pub revoke_previous: bool,
    /// With `revoke_previous`: the key id published when the request was made (read before
    /// waiting for the client's lock). A revocation revokes that credential, never a secret
    /// published after it by a duplicate request that ran first.
    pub revoke_target: Option<String>,
    /// Sign in once with the published value to check for drift (`src/drift.rs`): the
    /// scheduler asks for it every `drift_interval`.
    pub drift_check: bool,
}

/// The key id the vault secret's latest version names now, for [`Options::revoke_target`].
/// `None` when it cannot be read or names none: the planner then takes what it observes.
pub async fn published_key_id(ctx: &Context, client: &Client) -> Option<String> {
    match ctx
        .azure
        .vaults
        .latest(&client.key_vault_url, &client.secret_name)
        .await
    {
        Ok(azure::keyvault::Latest::Version(v)) => v
            .tags
            .get(plan::TAG_KEY_ID)
            .filter(|k| plan::is_key_id(k))
            .map(|k| k.to_ascii_lowercase()),
        _ => None,
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Azure(#[from] azure::Error),
    #[error("{0}")]
    Blocked(Blocked),
    #[error("the new secret did not sign in within verify_timeout ({0}); it was removed")]
    VerifyTimeout(String),
    #[error("the new secret was refused by Entra ({0}); it was removed")]
    VerifyRejected(azure::Error),
    #[error("the answer to addPassword was lost: {0}")]
    AddOutcomeUnknown(String),
    #[error("{0}")]
    PublishOutcomeUnknown(String),
    #[error("stopped by shutdown")]
    Cancelled,
    #[error("state store: {0}")]
    Store(crate::store::Error),
}

impl Failure {
    pub fn is_transient(&self) -> bool {
        match self {
            Failure::Azure(e) => e.is_transient() || e.class == Class::OutcomeUnknown,
            Failure::AddOutcomeUnknown(_)
            | Failure::PublishOutcomeUnknown(_)
            | Failure::Cancelled
            | Failure::VerifyTimeout(_) => true,
            // A database busy past SQLite's busy timeout heals; a state dir that is not safe
            // to use, or a state file from a newer release, waits for the operator.
            Failure::Store(e) => e.is_transient(),
            Failure::Blocked(_) | Failure::VerifyRejected(_) => false,
        }
    }
}

/// A rotation that published.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub rotation_id: String,
    pub key_id: String,
    pub version: String,
    pub expires: OffsetDateTime,
}

/// What a reconcile did and saw.
#[derive(Debug, Clone)]
pub struct Report {
    pub plan: Plan,
    pub rotated: Option<Rotated>,
    pub removed: Vec<Removal>,
    /// Errors that did not stop the reconcile (a failed retirement).
    pub warnings: Vec<String>,
    /// When a superseded credential's overlap ends: the client should be reconciled then.
    pub retire_at: Option<OffsetDateTime>,
    pub gauges: ClientGauges,
    /// The drift this reconcile found (and carried from the last check), and whether it made
    /// the drift check's sign-in.
    pub drift: Vec<crate::drift::DriftKind>,
    pub drift_checked: bool,
}

/// What `reconcile_inner` learnt that the end of the reconcile records, whether it succeeded or
/// not: the gauges it observed, the drift, and what the observation read from the store.
#[derive(Default)]
struct Learnt {
    gauges: Option<ClientGauges>,
    drift: Option<DriftSeen>,
    seen: Option<record::Seen>,
}

/// What a reconcile learnt about drift, for [`record_drift`].
struct DriftSeen {
    found: Vec<crate::drift::DriftKind>,
    /// A sign-in with the published value answered: what only it finds was looked at.
    signed_in: bool,
    /// A drift check was made (whatever it could sign in with).
    checked: bool,
    repairing: Vec<crate::drift::DriftKind>,
}

fn policy_view<'a>(config: &'a Config, client: &'a Client, opts: &'a Options) -> PolicyView<'a> {
    PolicyView {
        instance: &config.instance,
        client: &client.name,
        renew_before: client.policy.renew_before,
        overlap: client.policy.overlap,
        verify_timeout: client.policy.verify_timeout,
        adopt: client.policy.adopt,
        force: opts.force,
        revoke_previous: opts.revoke_previous,
        revoke_target: opts.revoke_target.as_deref(),
    }
}

/// Observes and decides, without changing anything (`plan`).
pub async fn dry_run(
    ctx: &Context,
    client: &Client,
    opts: Options,
    cancel: &CancellationToken,
) -> Result<Plan, Failure> {
    // Intents are abandoned attempts only when no process holds the client: a running daemon's
    // attempt in flight is not.
    let lock = ctx.store.try_lock(&client.name).map_err(Failure::Store)?;
    let (_, observed, _) =
        observe::observe(ctx, client, opts.revoke_previous, lock.is_some(), cancel).await?;
    drop(lock);
    let now = clock::now();
    let mut plan = plan::plan(&observed, &policy_view(&ctx.config, client, &opts), now);
    // What a reconcile would make of the drift it sees without signing in.
    let found = crate::drift::assess(&observed, None, now);
    crate::drift::steer(
        &mut plan,
        &found,
        client.policy.repair,
        opts.force,
        &client.name,
    );
    gate(client, &opts, &mut plan, now);
    if budget::applies(&plan, client.policy.renew_before, opts.force, now)
        && let Some(wait) = ctx.budget.peek(now)
    {
        plan.rotate = None;
        plan.blocked = Some(wait);
    }
    Ok(plan)
}

/// The change windows: a scheduled renewal outside them waits (forced rotations never do).
fn gate(client: &Client, opts: &Options, plan: &mut Plan, now: OffsetDateTime) {
    if !opts.force {
        window::apply(plan, &client.policy.change, client.policy.renew_before, now);
    }
}

/// Reconciles one client. The caller holds the client's lock.
pub async fn reconcile(
    ctx: &Context,
    client: &Client,
    opts: Options,
    cancel: &CancellationToken,
) -> Result<Report, Failure> {
    reconcile_with(ctx, client, opts, cancel, None).await
}

/// [`reconcile`], telling `preflight` whether the request is refused once it is planned.
pub async fn reconcile_with(
    ctx: &Context,
    client: &Client,
    opts: Options,
    cancel: &CancellationToken,
    preflight: Option<Preflight>,
) -> Result<Report, Failure> {
    let mut learnt = Learnt::default();
    let mut result = reconcile_inner(ctx, client, opts, cancel, preflight, &mut learnt).await;
    let Learnt {
        gauges,
        drift,
        seen,
    } = learnt;
    if let Some(seen) = drift {
        let published = result.as_ref().ok().and_then(|r| r.rotated.as_ref());
        let kinds = record_drift(ctx, client, &seen, published, clock::now());
        if let Ok(report) = &mut result {
            report.drift = kinds;
            report.drift_checked = seen.checked;
        }
    }
    // The status row before it is rewritten: a failure that says what the last one said is
    // not announced again. The observation read it; without one, it is read only for an event.
    let read;
    let previous = match &seen {
        Some(s) => s.previous.as_ref(),
        None if ctx.config.events.is_empty() || result.is_ok() => None,
        None => {
            read = ctx.store.client_row(&client.name).ok().flatten();
            read.as_ref()
        }
    };
    announce::after_reconcile(ctx, client, &result, previous, clock::now());
    let row = record::status(ctx, client, &result, gauges, seen.as_ref()).await;
    announce::expiring(ctx, client, &result, row.as_ref(), clock::now());
    result
}

async fn reconcile_inner(
    ctx: &Context,
    client: &Client,
    opts: Options,
    cancel: &CancellationToken,
    preflight: Option<Preflight>,
    learnt: &mut Learnt,
) -> Result<Report, Failure> {
    // Each phase runs boxed: a future is as large as its largest await, and a reconcile spends
    // most of its slot in one phase (the verification's waits, inside `rotate`), so inline it
    // would carry room for the others all along (docs/decisions.md, "Footprint").
    let observed = Box::pin(observe::observe(
        ctx,
        client,
        opts.revoke_previous,
        true,
        cancel,
    ))
    .await;
    let (app, observed, records) = match observed {
        Ok(o) => o,
        Err(e) => {
            if let Some(p) = preflight {
                let _ = p.send(Err(e.to_string()));
            }
            return Err(e);
        }
    };
    let sign_in = if opts.drift_check && !client.policy.drift_interval.is_zero() {
        Box::pin(crate::drift::sign_in(
            &ctx.azure.vaults,
            &ctx.azure.entra,
            client,
            &app.app_id,
            &observed.vault,
            cancel,
        ))
        .await
    } else {
        None
    };
    let now = clock::now();
    remember_location(ctx, client, &observed, &records).await;
    learnt.seen = Some(record::Seen::new(&records));
    let mut plan = plan::plan(&observed, &policy_view(&ctx.config, client, &opts), now);
    // Before anything is removed: when a published credential was first seen named by no
    // version, which its removal counts `overlap` from.
    record::remember_unpublished(ctx, client, &plan, observed.skew_seconds).await;
    // Drift steers before the change windows and the budget: a repair is no renewal (windows
    // never hold it), but it counts against the budget like any rotation.
    let found = crate::drift::assess(&observed, sign_in, now);
    let repairing = crate::drift::steer(
        &mut plan,
        &found,
        client.policy.repair,
        opts.force,
        &client.name,
    );
    learnt.drift = Some(DriftSeen {
        found,
        signed_in: sign_in.is_some_and(|s| s != crate::drift::SignIn::Inconclusive),
        checked: opts.drift_check && !client.policy.drift_interval.is_zero(),
        repairing,
    });
    gate(client, &opts, &mut plan, now);
    let slot = budget::claim(
        &ctx.budget,
        &mut plan,
        client.policy.renew_before,
        opts.force,
        now,
    );
    if let Some(p) = preflight {
        // What the admin API may claim: a rotation will run, or a revocation will be done.
        let revoking = plan
            .removals
            .iter()
            .any(|r| r.reason == RemovalReason::Revoked);
        let _ = p.send(match (&plan.blocked, &plan.rotate) {
            (Some(b), _) => Err(b.to_string()),
            (None, Some(_)) => Ok(()),
            (None, None) if revoking => Ok(()),
            (None, None) => Err(plan
                .notes
                .first()
                .cloned()
                .unwrap_or_else(|| "nothing to rotate".to_string())),
        });
    }
    for note in &plan.notes {
        tracing::info!(client = %client.name, "{note}");
    }
    let mut report = Report {
        plan: plan.clone(),
        rotated: None,
        removed: Vec::new(),
        warnings: Vec::new(),
        retire_at: plan.next_retirement,
        gauges: ClientGauges::default(),
        drift: Vec::new(),
        drift_checked: false,
    };
    // Consumers read an older secret than the one published last (a restore of the vault
    // secret from a backup): the operator should know, in the status too (the log has the
    // plan's note).
    for held in &plan.held_unpublished {
        report.warnings.push(held.to_string());
    }

    // Removals first: with a two-password cap they free the slot the new credential needs.
    let mut not_removed: Vec<(String, String)> = Vec::new();
    for removal in &plan.removals {
        match Box::pin(remove(ctx, client, &app, removal, &observed.former, cancel)).await {
            Ok(true) => report.removed.push(removal.clone()),
            Ok(false) => not_removed.push((
                removal.key_id.clone(),
                "a fresh read just before it did not prove it unused (see the log)".to_string(),
            )),
            Err(e) => {
                tracing::warn!(client = %client.name, key_id = %removal.key_id, error = %e, "could not remove credential");
                report
                    .warnings
                    .push(format!("removing {}: {e}", removal.key_id));
                not_removed.push((removal.key_id.clone(), e.to_string()));
            }
        }
    }
    // The plan counted its removals as the slot the new credential takes: without them, Entra
    // would refuse a third password. The rotation waits for the slot instead.
    if plan.rotate.is_some()
        && plan.blocked.is_none()
        && let Some(cap) = observed.password_cap
        && observed.passwords.len() - report.removed.len() >= cap
        && let Some((key_id, why)) = not_removed.into_iter().next()
    {
        plan.blocked = Some(plan::Blocked::SlotNotFreed { key_id, why });
        plan.rotate = None;
        report.plan = plan.clone();
    }
    // Under the client's lock no intent of it appears that the observation did not read: with
    // none there, nothing is stale and the store need not be read again.
    if !observed.abandoned.is_empty() {
        forget_stale_intents(
            ctx,
            client,
            &observed.passwords,
            plan.published.as_ref().and_then(|p| p.key_id.as_deref()),
            now,
        );
    }

    if let Some(blocked) = &plan.blocked {
        if blocked.is_failure() {
            report_gauges(ctx, client, &app, &mut report, now);
            learnt.gauges = Some(report.gauges.clone());
            ctx.metrics.rotation(&client.name, false);
            return Err(Failure::Blocked(blocked.clone()));
        }
        tracing::info!(client = %client.name, "{blocked}");
    }
    if let Some(reason) = &plan.rotate {
        if opts.force {
            tracing::info!(client = %client.name, %reason, "rotating (forced: change windows and the rotation budget do not apply)");
        } else {
            tracing::info!(client = %client.name, %reason, "rotating");
        }
        match Box::pin(rotate(ctx, client, &app, &observed.location, cancel)).await {
            Ok(rotated) => {
                ctx.metrics.rotation(&client.name, true);
                match slot {
                    Some(s) => s.commit(),
                    None => ctx.budget.record(clock::now()),
                }
                // Boxed: only a forced revocation gets here, and inline its future would make
                // every reconcile's state larger.
                if let Some(previous) = &plan.revoke {
                    Box::pin(revoke(ctx, client, &app, previous, &mut report)).await;
                }
                // The credential it replaced (if this installation's) can go when overlap ends.
                if plan.revoke.is_none()
                    && plan
                        .published
                        .as_ref()
                        .is_some_and(|p| p.managed && p.key_id.is_some())
                {
                    // Plus what removals wait for Azure's whole seconds, so that the reconcile
                    // then finds it due rather than a second early.
                    let due = clock::now()
                        + time::Duration::try_from(client.policy.overlap)
                            .unwrap_or(time::Duration::ZERO)
                        + plan::CLOCK_RESOLUTION
                        + time::Duration::seconds(ctx.shared.skew.seconds().abs());
                    report.retire_at = Some(report.retire_at.map_or(due, |t| t.min(due)));
                }
                report.rotated = Some(rotated);
            }
            Err(e) => {
                ctx.metrics.rotation(&client.name, false);
                report_gauges(ctx, client, &app, &mut report, clock::now());
                learnt.gauges = Some(report.gauges.clone());
                return Err(e);
            }
        }
    }
    report_gauges(ctx, client, &app, &mut report, clock::now());
    Ok(report)
}

/// Reports what a reconcile learnt about drift: the `drift` gauge, a log line and a history
/// row when the kinds change, and a history row for a repair that published. Returns the kinds
/// reported.
fn record_drift(
    ctx: &Context,
    client: &Client,
    seen: &DriftSeen,
    published: Option<&Rotated>,
    now: OffsetDateTime,
) -> Vec<crate::drift::DriftKind> {
    use crate::drift::{Action, action, reported};
    let previous = ctx.metrics.drift(&client.name);
    let kinds = reported(&seen.found, &previous, seen.signed_in, published.is_some());
    let describe = |k: &crate::drift::DriftKind| {
        let act = match action(*k, client.policy.repair) {
            Action::Rotate => "rotate",
            Action::Alert => "alert",
        };
        format!("{}: {act} ({})", k.as_str(), k.what())
    };
    let new: Vec<String> = seen
        .found
        .iter()
        .filter(|k| !previous.contains(k))
        .map(describe)
        .collect();
    if !new.is_empty() {
        let message = new.join("; ");
        tracing::warn!(client = %client.name, "drift: {message}");
        ctx.store
            .record_history(&client.name, now, "drift", None, None, Some(&message))
            .detach();
        let kinds: Vec<serde_json::Value> = seen
            .found
            .iter()
            .filter(|k| !previous.contains(k))
            .map(|k| {
                serde_json::json!({
                    "kind": k.as_str(),
                    "action": match action(*k, client.policy.repair) {
                        Action::Rotate => "rotate",
                        Action::Alert => "alert",
                    },
                    "what": k.what(),
                })
            })
            .collect();
        crate::events::emit(
            &ctx.config,
            &ctx.store,
            crate::events::Event {
                kind: "drift",
                client: client.name.to_string(),
                data: serde_json::json!({
                    "client": &*client.name,
                    "app": client.app.to_string(),
                    "vault": client.key_vault_url.as_str().trim_end_matches('/'),
                    "secret": &*client.secret_name,
                    "drift": kinds,
                }),
                dedup: None,
            },
            now,
        );
    }
    if let Some(r) = published.filter(|_| !seen.repairing.is_empty()) {
        let what: Vec<&str> = seen.repairing.iter().map(|k| k.as_str()).collect();
        let message = format!(
            "{} repaired: published version {}",
            what.join(", "),
            r.version
        );
        tracing::info!(client = %client.name, "drift: {message}");
        ctx.store
            .record_history(
                &client.name,
                now,
                "drift-repaired",
                Some(&r.rotation_id),
                Some(&r.key_id),
                Some(&message),
            )
            .detach();
    }
    ctx.metrics.set_drift(&client.name, &kinds);
    kinds
}

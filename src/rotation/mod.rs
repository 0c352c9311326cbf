//! One client's reconcile: [`observe`], decide ([`plan`]), execute (this module).
//!
//! Execution follows docs/design/protocol.md: the planned removals first (retiring and sweeping
//! frees the slot a new credential may need), then record the intent, `addPassword` with the
//! marker, verify with real token requests, publish a new Key Vault version, mark the intent
//! done. Each step is safe to repeat and to crash in. The new secret's value lives
//! only in memory, in a zeroizing [`SecretString`], between `addPassword` and publishing.

pub mod observe;
pub mod plan;

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::azure::entra::{EntraClient, VerifyFailure};
use crate::azure::graph::{Application, GraphClient};
use crate::azure::keyvault::VaultClients;
use crate::azure::{self, Class, Shared, retry};
use crate::clock;
use crate::config::{Client, Config};
use crate::metrics::{ClientGauges, Metrics};
use crate::store::{ClientRow, Store};
use plan::{Blocked, Plan, PolicyView, Removal, RemovalReason, marker_prefix};

/// Consecutive verification successes are at least this far apart: Entra replicas converge
/// independently, so one success does not imply the next.
pub const VERIFY_SPACING: Duration = Duration::from_secs(5);
/// How long writes keep retrying transient failures.
const WRITE_BUDGET: Duration = Duration::from_secs(120);
/// How long a publish keeps retrying failures that certainly did not take effect.
const PUBLISH_BUDGET: Duration = Duration::from_secs(30);

/// The steps of an attempt, as the store records them. Only an attempt that reached
/// [`STEP_PUBLISHING`] can have sent its value to Key Vault.
pub const STEP_ADDING: &str = "adding";
pub const STEP_ADD_UNKNOWN: &str = "add-unknown";
pub const STEP_VERIFYING: &str = "verifying";
pub const STEP_PUBLISHING: &str = "publishing";

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
    pub fn new(config: &Config, shared: &Shared) -> anyhow::Result<AzureClients> {
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
    pub shared: Shared,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub force: bool,
    pub revoke_previous: bool,
    /// With `revoke_previous`: the key id published when the request was made (read before
    /// waiting for the client's lock). A revocation revokes that credential, never a secret
    /// published after it by a duplicate request that ran first.
    pub revoke_target: Option<String>,
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
    AddLost(String),
    #[error("{0}")]
    PublishUnknown(String),
    #[error("stopped by shutdown")]
    Cancelled,
    #[error("state store: {0:#}")]
    Store(anyhow::Error),
}

impl Failure {
    pub fn is_transient(&self) -> bool {
        match self {
            Failure::Azure(e) => e.is_transient() || e.class == Class::Unknown,
            Failure::AddLost(_)
            | Failure::PublishUnknown(_)
            | Failure::Cancelled
            | Failure::VerifyTimeout(_) => true,
            Failure::Blocked(_) | Failure::VerifyRejected(_) | Failure::Store(_) => false,
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
    let (_, observed) =
        observe::observe(ctx, client, opts.revoke_previous, lock.is_some(), cancel).await?;
    drop(lock);
    Ok(plan::plan(
        &observed,
        &policy_view(&ctx.config, client, &opts),
        clock::now(),
    ))
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
    let mut gauges = None;
    let result = reconcile_inner(ctx, client, opts, cancel, preflight, &mut gauges).await;
    let now = clock::now();
    match &result {
        Ok(report) => {
            let row =
                ClientRow {
                    client: client.name.clone(),
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
            if let Err(e) = ctx.store.upsert_client(&row) {
                tracing::warn!(client = %client.name, error = %e, "could not record status");
            }
            ctx.metrics.set_client(&client.name, &report.gauges);
        }
        Err(e) => {
            let mut row = ctx
                .store
                .client_row(&client.name)
                .ok()
                .flatten()
                .unwrap_or_default();
            row.client = client.name.clone();
            row.last_result = Some("failed".into());
            row.last_error = Some(e.to_string());
            row.last_success_at = None;
            row.updated_at = now.unix_timestamp();
            // What was observed is exported even when the reconcile failed or is blocked, so
            // that the expiry alerts see a client that never rotated.
            if let Some(g) = &gauges {
                row.expires_at = g.secret_expiry.map(|e| e as i64);
                row.next_rotation_at = g.next_rotation.map(|e| e as i64);
            }
            if let Err(e) = ctx.store.upsert_client(&row) {
                tracing::warn!(client = %client.name, error = %e, "could not record status");
            }
            match gauges {
                Some(mut g) => {
                    g.ready = false;
                    ctx.metrics.set_client(&client.name, &g);
                }
                None => ctx.metrics.set_client_ready(&client.name, false),
            }
        }
    }
    result
}

async fn reconcile_inner(
    ctx: &Context,
    client: &Client,
    opts: Options,
    cancel: &CancellationToken,
    preflight: Option<Preflight>,
    gauges: &mut Option<ClientGauges>,
) -> Result<Report, Failure> {
    let observed = observe::observe(ctx, client, opts.revoke_previous, true, cancel).await;
    let (app, observed) = match observed {
        Ok(o) => o,
        Err(e) => {
            if let Some(p) = preflight {
                let _ = p.send(Err(e.to_string()));
            }
            return Err(e);
        }
    };
    let now = clock::now();
    remember_location(ctx, client, &observed);
    let plan = plan::plan(&observed, &policy_view(&ctx.config, client, &opts), now);
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
    };

    // Removals first: with a two-password cap they free the slot the new credential needs.
    for removal in &plan.removals {
        match remove(ctx, client, &app, removal, &observed.former, cancel).await {
            Ok(true) => report.removed.push(removal.clone()),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(client = %client.name, key_id = %removal.key_id, error = %e, "could not remove credential");
                report
                    .warnings
                    .push(format!("removing {}: {e}", removal.key_id));
            }
        }
    }
    forget_stale_intents(
        ctx,
        client,
        &observed.passwords,
        plan.published.as_ref().and_then(|p| p.key_id.as_deref()),
        now,
    );

    if let Some(blocked) = &plan.blocked {
        if blocked.is_failure() {
            report_gauges(ctx, client, &app, &mut report, now);
            *gauges = Some(report.gauges.clone());
            ctx.metrics.rotation(&client.name, false);
            return Err(Failure::Blocked(blocked.clone()));
        }
        tracing::info!(client = %client.name, "{blocked}");
    }
    if let Some(reason) = &plan.rotate {
        tracing::info!(client = %client.name, %reason, "rotating");
        match rotate(ctx, client, &app, &observed.location, cancel).await {
            Ok(rotated) => {
                ctx.metrics.rotation(&client.name, true);
                if let Some(previous) = &plan.revoke {
                    revoke(ctx, client, &app, previous, &mut report).await;
                }
                // The credential it replaced (if this installation's) can go when overlap ends.
                if plan.revoke.is_none()
                    && plan
                        .published
                        .as_ref()
                        .is_some_and(|p| p.managed && p.key_id.is_some())
                {
                    let due = clock::now()
                        + time::Duration::try_from(client.policy.overlap)
                            .unwrap_or(time::Duration::ZERO);
                    report.retire_at = Some(report.retire_at.map_or(due, |t| t.min(due)));
                }
                report.rotated = Some(rotated);
            }
            Err(e) => {
                ctx.metrics.rotation(&client.name, false);
                report_gauges(ctx, client, &app, &mut report, clock::now());
                *gauges = Some(report.gauges.clone());
                return Err(e);
            }
        }
    }
    report_gauges(ctx, client, &app, &mut report, clock::now());
    Ok(report)
}

/// Removes the previously published credential at once, after the new secret was published.
/// The planner has checked that it carries this client's marker (or is the identified adopted
/// credential).
async fn revoke(
    ctx: &Context,
    client: &Client,
    app: &Application,
    previous: &str,
    report: &mut Report,
) {
    tracing::warn!(client = %client.name, key_id = %previous, "revoking the previously published credential at once");
    match retry(WRITE_BUDGET, &CancellationToken::new(), || {
        ctx.azure.graph.remove_password(&app.object_id, previous)
    })
    .await
    {
        Ok(()) => {
            let _ = ctx.store.record_history(
                &client.name,
                clock::now(),
                "revoked",
                None,
                Some(previous),
                Some(&RemovalReason::Revoked.to_string()),
            );
            report.removed.push(Removal {
                key_id: previous.to_string(),
                reason: RemovalReason::Revoked,
            });
        }
        Err(e) => report
            .warnings
            .push(format!("revoking the previous credential {previous}: {e}")),
    }
}

/// Fills the gauges from what was observed and done.
fn report_gauges(
    ctx: &Context,
    client: &Client,
    app: &Application,
    report: &mut Report,
    now: OffsetDateTime,
) {
    let prefix = marker_prefix(&ctx.config.instance, &client.name);
    let mut credentials: Vec<(String, bool, f64)> = app
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
                p.key_id.clone(),
                ours,
                p.end.map(clock::unix_seconds).unwrap_or(0.0),
            )
        })
        .collect();
    let (expires, renew_at, last) = match &report.rotated {
        Some(r) => {
            credentials.push((r.key_id.clone(), true, clock::unix_seconds(r.expires)));
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

/// Removes one credential; `Ok(false)` when a fresh look says it must stay.
async fn remove(
    ctx: &Context,
    client: &Client,
    app: &Application,
    removal: &Removal,
    former: &[plan::FormerLocation],
    cancel: &CancellationToken,
) -> Result<bool, azure::Error> {
    // Proof, not one observation: the vault is read again just before removing, because the
    // world may have changed since the reconcile observed it (a soft-delete, a version written
    // by hand, a lagging listing that caught up). Only a read that succeeded and found the
    // secret counts; a 404, a soft-deleted name or a failed read keeps the credential. An
    // attempt that never reached publishing needs no vault: none can hold its value.
    let never_published = matches!(removal.reason, RemovalReason::Abandoned { .. });
    // The write slot first (it may mean waiting a second for the previous write to this app),
    // then the read, then the removal at once: nothing that changes the world waits between.
    ctx.azure.graph.claim_write(&app.object_id).await;
    if !never_published {
        let names = |v: &crate::azure::keyvault::VersionInfo| {
            v.tags
                .get(plan::TAG_KEY_ID)
                .is_some_and(|k| k.eq_ignore_ascii_case(&removal.key_id))
        };
        let hint = app
            .passwords
            .iter()
            .find(|p| p.key_id.eq_ignore_ascii_case(&removal.key_id))
            .and_then(|p| p.hint.as_deref());
        let read_by_consumers = |latest: &crate::azure::keyvault::VersionInfo| {
            names(latest) || (hint.is_some() && latest.value_hint.as_deref() == hint)
        };
        let here = observe::read_vault(ctx, client, cancel).await;
        match removal.former_tag() {
            None => {
                let (history, latest) = match here {
                    Ok(plan::VaultSecret::Present { history, latest }) => (history, latest),
                    Ok(_) => {
                        tracing::warn!(client = %client.name, key_id = %removal.key_id, "keeping the credential: the vault secret is missing or soft-deleted now");
                        return Ok(false);
                    }
                    Err(e) => {
                        tracing::warn!(client = %client.name, key_id = %removal.key_id, error = %e, "keeping the credential: the vault could not be read again");
                        return Ok(false);
                    }
                };
                let orphan_named = matches!(removal.reason, RemovalReason::Orphan { .. })
                    && history.iter().any(names);
                if read_by_consumers(&latest) || orphan_named {
                    tracing::info!(client = %client.name, key_id = %removal.key_id, "keeping the credential: a fresh read shows it published");
                    return Ok(false);
                }
            }
            Some(tag) => {
                // The evidence is at the location the client has left: that is read again and
                // must still show the credential unread there. The client's own location must
                // not be soft-deleted (nothing is removed then) nor read it.
                match here {
                    Ok(plan::VaultSecret::Present { latest, .. }) if read_by_consumers(&latest) => {
                        tracing::info!(client = %client.name, key_id = %removal.key_id, "keeping the credential: a fresh read shows it published");
                        return Ok(false);
                    }
                    Ok(plan::VaultSecret::Present { .. } | plan::VaultSecret::Absent) => {}
                    Ok(plan::VaultSecret::SoftDeleted) => {
                        tracing::warn!(client = %client.name, key_id = %removal.key_id, "keeping the credential: the client's vault secret is soft-deleted now");
                        return Ok(false);
                    }
                    Err(e) => {
                        tracing::warn!(client = %client.name, key_id = %removal.key_id, error = %e, "keeping the credential: the vault could not be read again");
                        return Ok(false);
                    }
                }
                let Some(there) = former.iter().find(|f| f.tag == tag) else {
                    return Ok(false);
                };
                let (history, latest) = match observe::read_vault_at(
                    ctx,
                    &there.vault_url,
                    &there.secret_name,
                    observe::READ_BUDGET,
                    cancel,
                )
                .await
                {
                    Ok(plan::VaultSecret::Present { history, latest }) => (history, latest),
                    Ok(_) => {
                        tracing::warn!(client = %client.name, key_id = %removal.key_id, location = %there.name, "keeping the credential: the previous location's secret is missing or soft-deleted now");
                        return Ok(false);
                    }
                    Err(e) => {
                        tracing::warn!(client = %client.name, key_id = %removal.key_id, location = %there.name, error = %e, "keeping the credential: the previous location could not be read again");
                        return Ok(false);
                    }
                };
                let orphan_named = matches!(removal.reason, RemovalReason::OrphanAtFormer { .. })
                    && history.iter().any(names);
                if read_by_consumers(&latest) || orphan_named {
                    tracing::info!(client = %client.name, key_id = %removal.key_id, location = %there.name, "keeping the credential: a fresh read shows it published at the previous location");
                    return Ok(false);
                }
            }
        }
    }
    let claimed = std::sync::atomic::AtomicBool::new(true);
    retry(WRITE_BUDGET, cancel, || {
        let in_claimed_slot = claimed.swap(false, std::sync::atomic::Ordering::Relaxed);
        async move {
            let graph = &ctx.azure.graph;
            if in_claimed_slot {
                graph
                    .remove_password_now(&app.object_id, &removal.key_id)
                    .await
            } else {
                graph.remove_password(&app.object_id, &removal.key_id).await
            }
        }
    })
    .await?;
    tracing::info!(client = %client.name, key_id = %removal.key_id, reason = %removal.reason, "removed credential");
    if removal.is_orphan() {
        ctx.metrics.orphan_removed(&client.name);
    }
    if let RemovalReason::Abandoned { rotation_id }
    | RemovalReason::Orphan { rotation_id }
    | RemovalReason::OrphanAtFormer { rotation_id, .. } = &removal.reason
    {
        let _ = ctx.store.end_intent(rotation_id);
    }
    let _ = ctx.store.record_history(
        &client.name,
        clock::now(),
        "removed",
        None,
        Some(&removal.key_id),
        Some(&removal.reason.to_string()),
    );
    Ok(true)
}

/// Records the client's location in the store, so that once the client moves, a read of it can
/// prove its credentials superseded there; and forgets the locations no own credential was
/// made for any more.
fn remember_location(ctx: &Context, client: &Client, observed: &plan::Observed) {
    let prefix = marker_prefix(&ctx.config.instance, &client.name);
    let mut keep: Vec<&str> = observed
        .passwords
        .iter()
        .filter_map(|p| p.display_name.as_deref()?.strip_prefix(prefix.as_str()))
        .filter_map(plan::location_of)
        .collect();
    keep.push(&observed.location);
    let recorded = ctx
        .store
        .record_location(
            &client.name,
            &observed.location,
            client.key_vault_url.as_str(),
            &client.secret_name,
            clock::now(),
        )
        .and_then(|()| ctx.store.forget_locations(&client.name, &keep));
    if let Err(e) = recorded {
        tracing::warn!(client = %client.name, error = %e, "could not record the client's location");
    }
}

/// Drops intents whose attempt left no visible credential long after it could have.
fn forget_stale_intents(
    ctx: &Context,
    client: &Client,
    passwords: &[crate::azure::graph::PasswordCredential],
    published: Option<&str>,
    now: OffsetDateTime,
) {
    let prefix = marker_prefix(&ctx.config.instance, &client.name);
    let horizon = now.unix_timestamp()
        - (client.policy.verify_timeout + Duration::from_secs(600)).as_secs() as i64;
    for intent in ctx.store.intents(&client.name).unwrap_or_default() {
        let marker = format!("{prefix}{}", intent.rotation_id);
        let credential = passwords
            .iter()
            .find(|p| p.display_name.as_deref() == Some(marker.as_str()));
        // Done after all: its credential is the published one (the process died after the
        // Key Vault write). Or gone for good: nothing visible long after it could have been.
        let published_after_all = credential
            .is_some_and(|p| published.is_some_and(|k| k.eq_ignore_ascii_case(&p.key_id)));
        if published_after_all || (credential.is_none() && intent.started_at < horizon) {
            let _ = ctx.store.end_intent(&intent.rotation_id);
        }
    }
}

/// Creates, verifies and publishes a new secret.
async fn rotate(
    ctx: &Context,
    client: &Client,
    app: &Application,
    location: &str,
    cancel: &CancellationToken,
) -> Result<Rotated, Failure> {
    let rotation_id = plan::new_rotation_id(location);
    let marker = format!(
        "{}{rotation_id}",
        marker_prefix(&ctx.config.instance, &client.name)
    );
    let now = clock::now();
    let end = now
        + time::Duration::try_from(client.policy.secret_lifetime)
            .unwrap_or(time::Duration::days(90));
    ctx.store
        .begin_intent(&rotation_id, &client.name, now)
        .map_err(Failure::Store)?;

    // addPassword: retried only while it certainly did not take effect (429, 409 concurrency,
    // refused connections). A lost answer is never repeated with this marker.
    let new = match retry(WRITE_BUDGET, cancel, || {
        ctx.azure.graph.add_password(&app.object_id, &marker, end)
    })
    .await
    {
        Ok(n) => n,
        Err(e) if e.class == Class::Unknown => {
            return Err(recover_lost_add(ctx, client, app, &rotation_id, &marker, e, cancel).await);
        }
        Err(e) => {
            let _ = ctx.store.end_intent(&rotation_id);
            return Err(e.into());
        }
    };
    // Propagation and the verification deadline start at the answer, not before the retries
    // and pacing that preceded it.
    let added_at = Instant::now();
    tracing::info!(client = %client.name, rotation_id = %rotation_id, key_id = %new.key_id, "added credential");
    let _ = ctx.store.intent_step(
        &rotation_id,
        STEP_VERIFYING,
        Some(&new.key_id),
        clock::now(),
    );

    if let Err(failure) = verify(ctx, client, &app.app_id, &new.secret, added_at, cancel).await {
        if matches!(failure, Failure::Cancelled) {
            // Abandoned: its credential is removed by the next start (the intent says whose it is).
            return Err(failure);
        }
        discard(ctx, client, app, &new.key_id, &rotation_id).await;
        return Err(failure);
    }
    let _ = ctx
        .store
        .intent_step(&rotation_id, STEP_PUBLISHING, None, clock::now());

    let tags = plan::tags(&app.app_id, &new.key_id, &rotation_id);
    let version = match publish(ctx, client, &new, &tags, cancel).await {
        Published::Done(version) => version,
        Published::Refused(e) => {
            // Key Vault answered and did not take the write (403, a soft-deleted name, a bad
            // request): the value is nowhere else, so the credential goes.
            tracing::warn!(client = %client.name, error = %e, "publishing failed; removing the new credential");
            discard(ctx, client, app, &new.key_id, &rotation_id).await;
            return Err(e.into());
        }
        Published::Unknown(why) => {
            // The value may be in Key Vault. Nothing is removed without a read that proves it is
            // not: the intent stays at the publishing step, and a later reconcile decides from
            // the vault's history, after the orphan age.
            tracing::warn!(client = %client.name, rotation_id = %rotation_id, key_id = %new.key_id, "the outcome of publishing is unknown; keeping the new credential until a read shows where it stands: {why}");
            return Err(Failure::PublishUnknown(format!(
                "the outcome of publishing credential {} is unknown ({why}); it is kept until a read of the vault shows whether it was published",
                new.key_id
            )));
        }
    };
    drop(new.secret);
    let _ = ctx.store.end_intent(&rotation_id);
    let _ = ctx.store.record_history(
        &client.name,
        clock::now(),
        "rotated",
        Some(&rotation_id),
        Some(&new.key_id),
        Some(&format!("published version {version}")),
    );
    tracing::info!(client = %client.name, rotation_id = %rotation_id, key_id = %new.key_id, version = %version, "published new secret");
    Ok(Rotated {
        rotation_id,
        key_id: new.key_id,
        version,
        expires: new.end,
    })
}

/// How a publish ended.
enum Published {
    Done(String),
    /// Key Vault answered, and the write did not take effect.
    Refused(azure::Error),
    /// The write may have taken effect; no read proved either way.
    Unknown(String),
}

/// Writes the new version. Failures that certainly did not take effect (429, a refused
/// connection) are retried within [`PUBLISH_BUDGET`]; after a write whose outcome is unknown
/// the history is read first, and the write is sent at most once more (each write adds a
/// version, so blind repeats would pile up copies). Not interrupted by shutdown: a Key Vault
/// write in flight may finish (docs/design/contract.md, Process).
async fn publish(
    ctx: &Context,
    client: &Client,
    new: &crate::azure::graph::NewPassword,
    tags: &std::collections::BTreeMap<String, String>,
    cancel: &CancellationToken,
) -> Published {
    let no_cancel = CancellationToken::new();
    let mut unknown_writes = 0;
    loop {
        let written = retry(PUBLISH_BUDGET, &no_cancel, || {
            ctx.azure.vaults.set(
                &client.key_vault_url,
                &client.secret_name,
                &new.secret,
                new.end,
                tags.clone(),
            )
        })
        .await;
        let e = match written {
            Ok(version) => return Published::Done(version),
            // A refusal proves only that this write did not land; after an earlier write whose
            // outcome is unknown, the value may be in Key Vault all the same.
            Err(e) if e.class == Class::Permanent && unknown_writes == 0 => {
                return Published::Refused(e);
            }
            Err(e) if e.class == Class::Permanent => {
                return Published::Unknown(format!("{e}, after a write whose answer was lost"));
            }
            Err(e) if e.class == Class::Unknown => e,
            // Transient past the budget: the last attempt did not take effect, but an earlier
            // one may have.
            Err(e) if unknown_writes == 0 => return Published::Refused(e),
            Err(e) => e,
        };
        unknown_writes += 1;
        match published_anyway(ctx, client, &new.key_id, cancel).await {
            Ok(Some(version)) => return Published::Done(version),
            Ok(None) if unknown_writes < 2 => {
                tracing::warn!(client = %client.name, key_id = %new.key_id, error = %e, "the answer to publishing was lost and no version names the credential yet; writing once more");
            }
            Ok(None) => return Published::Unknown(e.to_string()),
            Err(read) => {
                return Published::Unknown(format!("{e}; reading the history failed: {read}"));
            }
        }
    }
}

/// Token requests with the new secret until `verify_successes` succeed in a row, at least
/// [`VERIFY_SPACING`] apart, or `verify_timeout` passes.
async fn verify(
    ctx: &Context,
    client: &Client,
    app_id: &str,
    secret: &SecretString,
    added_at: Instant,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    let policy = &client.policy;
    let deadline = added_at + policy.verify_timeout;
    let mut successes = 0u32;
    let mut first_success = false;
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match ctx
            .azure
            .entra
            .verify(app_id, secret, &policy.verify_scope)
            .await
        {
            Ok(()) => {
                if !first_success {
                    first_success = true;
                    ctx.metrics.propagation(added_at.elapsed().as_secs_f64());
                }
                successes += 1;
                if successes >= policy.verify_successes {
                    tracing::info!(client = %client.name, seconds = added_at.elapsed().as_secs_f64(), "new secret verified");
                    return Ok(());
                }
                VERIFY_SPACING
            }
            Err(VerifyFailure::NotYetValid) => {
                successes = 0;
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(15));
                w
            }
            Err(VerifyFailure::Transient(e)) => {
                tracing::debug!(client = %client.name, error = %e, "verification request failed; retrying");
                e.retry_after().unwrap_or(backoff)
            }
            Err(VerifyFailure::Rejected(e)) => return Err(Failure::VerifyRejected(e)),
        };
        if Instant::now() + wait > deadline {
            return Err(Failure::VerifyTimeout(crate::clock::format_duration(
                policy.verify_timeout,
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return Err(Failure::Cancelled),
        }
    }
}

/// After a publish whose outcome is unknown: the version naming `key_id`, if a read of the
/// history shows one. `Ok(None)` only from a listing that succeeded.
async fn published_anyway(
    ctx: &Context,
    client: &Client,
    key_id: &str,
    cancel: &CancellationToken,
) -> Result<Option<String>, azure::Error> {
    let versions = retry(observe::READ_BUDGET, cancel, || {
        ctx.azure
            .vaults
            .versions(&client.key_vault_url, &client.secret_name)
    })
    .await?;
    Ok(versions.and_then(|versions| {
        versions
            .into_iter()
            .rev()
            .find(|v| {
                v.tags
                    .get(plan::TAG_KEY_ID)
                    .is_some_and(|k| k.eq_ignore_ascii_case(key_id))
            })
            .map(|v| v.version)
    }))
}

/// Removes a credential this attempt created and will not publish.
async fn discard(
    ctx: &Context,
    client: &Client,
    app: &Application,
    key_id: &str,
    rotation_id: &str,
) {
    match retry(WRITE_BUDGET, &CancellationToken::new(), || {
        ctx.azure.graph.remove_password(&app.object_id, key_id)
    })
    .await
    {
        Ok(()) => {
            ctx.metrics.orphan_removed(&client.name);
            let _ = ctx.store.end_intent(rotation_id);
            tracing::info!(client = %client.name, key_id, "removed the unpublished credential");
        }
        // The intent stays: the next reconcile removes it as an abandoned attempt.
        Err(e) => {
            tracing::warn!(client = %client.name, key_id, error = %e, "could not remove the unpublished credential; the next reconcile will")
        }
    }
}

/// After a lost `addPassword` answer: look for the marker; if the credential exists, nobody
/// can ever know its value, so remove it now. Reads lag, so look a few times.
async fn recover_lost_add(
    ctx: &Context,
    client: &Client,
    app: &Application,
    rotation_id: &str,
    marker: &str,
    error: azure::Error,
    cancel: &CancellationToken,
) -> Failure {
    tracing::warn!(client = %client.name, rotation_id, error = %error, "answer to addPassword lost; looking for the credential it may have created");
    let _ = ctx
        .store
        .intent_step(rotation_id, STEP_ADD_UNKNOWN, None, clock::now());
    for attempt in 0..6 {
        if attempt > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = cancel.cancelled() => break,
            }
        }
        let Ok(seen) = ctx.azure.graph.get_application(&client.app).await else {
            continue;
        };
        if let Some(p) = seen
            .passwords
            .iter()
            .find(|p| p.display_name.as_deref() == Some(marker))
        {
            discard(ctx, client, app, &p.key_id, rotation_id).await;
            return Failure::AddLost(format!(
                "{error}; removed the credential {} it created",
                p.key_id
            ));
        }
    }
    Failure::AddLost(format!(
        "{error}; no credential with its marker is visible yet (it will be removed if it appears)"
    ))
}

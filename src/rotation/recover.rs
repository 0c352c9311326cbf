//! What attempts leave behind: the credential of an attempt that will not publish, the one a
//! lost `addPassword` answer may have made, and intents whose attempt is over.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::plan::marker_prefix;
use super::{Context, Failure, WRITE_BUDGET};
use crate::azure::graph::Application;
use crate::azure::{self, retry};
use crate::clock;
use crate::config::Client;
use crate::store::IntentStep;

/// Removes a credential this attempt created and will not publish.
pub(super) async fn discard(
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
            let _ = ctx.store.end_intent(rotation_id).await;
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
pub(super) async fn recover_add_outcome_unknown(
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
        .intent_step(
            rotation_id,
            IntentStep::AddOutcomeUnknown,
            None,
            clock::now(),
        )
        .await;
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
            return Failure::AddOutcomeUnknown(format!(
                "{error}; removed the credential {} it created",
                p.key_id
            ));
        }
    }
    Failure::AddOutcomeUnknown(format!(
        "{error}; no credential with its marker is visible yet (it will be removed if it appears)"
    ))
}

/// Drops intents whose attempt left no visible credential long after it could have.
pub(super) fn forget_stale_intents(
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
            ctx.store.end_intent(&intent.rotation_id).detach();
        }
    }
}

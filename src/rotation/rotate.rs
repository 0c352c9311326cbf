//! A rotation: record the intent, `addPassword` with the marker, verify with real token
//! requests, publish a new Key Vault version, end the intent. The new secret's value lives only
//! in memory, in a zeroizing [`SecretString`], between `addPassword` and publishing.

use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use super::recover::{discard, recover_add_outcome_unknown};
use super::{
    Context, Failure, PUBLISH_BUDGET, Rotated, VERIFY_FIRST_WAIT, VERIFY_SPACING, WRITE_BUDGET,
    observe, plan,
};
use crate::azure::entra::VerifyFailure;
use crate::azure::graph::Application;
use crate::azure::{self, Class, retry};
use crate::clock;
use crate::config::Client;
use crate::store::IntentStep;
use plan::marker_prefix;

/// Creates, verifies and publishes a new secret.
pub(super) async fn rotate(
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
        .await
        .map_err(Failure::Store)?;

    // addPassword: retried only while it certainly did not take effect (429, 409 concurrency,
    // refused connections). A lost answer is never repeated with this marker.
    // The requests run boxed, so that the verification's waits, where a rotation spends most
    // of its time, do not carry room for them.
    let new = match Box::pin(retry(WRITE_BUDGET, cancel, || {
        ctx.azure.graph.add_password(&app.object_id, &marker, end)
    }))
    .await
    {
        Ok(n) => n,
        // The failure paths are boxed: a future is as large as its largest await, and every
        // rotation in flight would otherwise carry the room for these rare ones.
        Err(e) if e.class == Class::OutcomeUnknown => {
            return Err(Box::pin(recover_add_outcome_unknown(
                ctx,
                client,
                app,
                &rotation_id,
                &marker,
                e,
                cancel,
            ))
            .await);
        }
        Err(e) => {
            let _ = ctx.store.end_intent(&rotation_id).await;
            return Err(e.into());
        }
    };
    // Propagation and the verification deadline start at the answer, not before the retries
    // and pacing that preceded it.
    let added_at = Instant::now();
    tracing::info!(client = %client.name, rotation_id = %rotation_id, key_id = %new.key_id, "added credential");
    let _ = ctx
        .store
        .intent_step(
            &rotation_id,
            IntentStep::Verifying,
            Some(&new.key_id),
            clock::now(),
        )
        .await;

    if let Err(failure) = verify(ctx, client, &app.app_id, &new.secret, added_at, cancel).await {
        if matches!(failure, Failure::Cancelled) {
            // Abandoned: its credential is removed by the next start (the intent says whose it is).
            return Err(failure);
        }
        Box::pin(discard(ctx, client, app, &new.key_id, &rotation_id)).await;
        return Err(failure);
    }
    // The store must know the attempt may publish before it does: an intent left at an
    // earlier step says "never published", and its credential would go at once. If that cannot
    // be recorded, nothing is published and the credential (whose value is nowhere else) goes.
    if let Err(e) = ctx
        .store
        .intent_step(&rotation_id, IntentStep::Publishing, None, clock::now())
        .await
    {
        tracing::warn!(client = %client.name, rotation_id = %rotation_id, error = %format!("{e:#}"), "could not record that the attempt is about to publish; removing the new credential instead");
        Box::pin(discard(ctx, client, app, &new.key_id, &rotation_id)).await;
        return Err(Failure::Store(e));
    }

    let tags = plan::tags(&app.app_id, &new.key_id, &rotation_id);
    let version = match Box::pin(publish(ctx, client, &new, &tags, cancel)).await {
        Published::Done(version) => version,
        Published::Refused(e) => {
            // Key Vault answered and did not take the write (403, a soft-deleted name, a bad
            // request): the value is nowhere else, so the credential goes.
            tracing::warn!(client = %client.name, error = %e, "publishing failed; removing the new credential");
            Box::pin(discard(ctx, client, app, &new.key_id, &rotation_id)).await;
            return Err(e.into());
        }
        Published::OutcomeUnknown(why) => {
            // The value may be in Key Vault. Nothing is removed without a read that proves it is
            // not: the intent stays at the publishing step, and a later reconcile decides from
            // the vault's history, after the orphan age.
            tracing::warn!(client = %client.name, rotation_id = %rotation_id, key_id = %new.key_id, "the outcome of publishing is unknown; keeping the new credential until a read shows where it stands: {why}");
            return Err(Failure::PublishOutcomeUnknown(format!(
                "the outcome of publishing credential {} is unknown ({why}); it is kept until a read of the vault shows whether it was published",
                new.key_id
            )));
        }
    };
    let _ = ctx
        .store
        .end_published(
            &rotation_id,
            &client.name,
            clock::now(),
            &new.key_id,
            &version,
        )
        .await;
    // Published first: the API's answer is about the application's role, which no secret
    // changes, so it never holds back a verified secret.
    Box::pin(super::api_check::after_verify(
        ctx,
        client,
        &app.app_id,
        &new.secret,
    ))
    .await;
    drop(new.secret);
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
    OutcomeUnknown(String),
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
                return Published::OutcomeUnknown(format!(
                    "{e}, after a write whose answer was lost"
                ));
            }
            Err(e) if e.class == Class::OutcomeUnknown => e,
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
            Ok(None) => return Published::OutcomeUnknown(e.to_string()),
            Err(read) => {
                return Published::OutcomeUnknown(format!(
                    "{e}; reading the history failed: {read}"
                ));
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
    // Entra replicates a new credential in seconds (4 to 18 observed): a token request made at
    // once is refused (AADSTS7000215), and costs a request and a failed sign-in in the
    // application's sign-in logs. The first attempt goes when the second went before, a second
    // after the answer to `addPassword`; the next ones 2, 4, 8 and 15 s apart, as before.
    let first = VERIFY_FIRST_WAIT.min(deadline.saturating_duration_since(Instant::now()));
    tokio::select! {
        _ = tokio::time::sleep(first) => {}
        _ = cancel.cancelled() => return Err(Failure::Cancelled),
    }
    let mut backoff = Duration::from_secs(2);
    loop {
        // Boxed: between attempts the verification holds only its own few variables.
        let wait = match Box::pin(ctx.azure.entra.verify(app_id, secret, &policy.verify_scope))
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

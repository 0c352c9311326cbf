//! Removals: each planned one after a fresh read of the vault proves it still holds, and the
//! revocation of the previously published credential.

use tokio_util::sync::CancellationToken;

use super::{Context, Report, WRITE_BUDGET, observe, plan};
use crate::azure::graph::Application;
use crate::azure::{self, retry};
use crate::clock;
use crate::config::Client;
use plan::{Removal, RemovalReason};

/// Removes one credential; `Ok(false)` when a fresh look says it must stay.
pub(super) async fn remove(
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
    // secret counts; a 404, a soft-deleted name or a failed read keeps the credential.
    // The write slot first (it may mean waiting a second for the previous write to this app),
    // then the read, then the removal at once: nothing that changes the world waits between.
    ctx.azure.graph.claim_write(&app.object_id).await;
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
    // A matching hint is explained (not what consumers read) when the store recorded writing
    // that version with another credential whose hint matches too (`plan::hint_explained`).
    let read_by_consumers = |latest: &crate::azure::keyvault::VersionInfo| {
        names(latest)
            || (hint.is_some()
                && latest.value_hint.as_deref() == hint
                && !plan::hint_explained(
                    &removal.key_id,
                    latest.value_hint.as_deref(),
                    observe::written_with(ctx, &client.name, &latest.version)
                        .and_then(|k| {
                            app.passwords
                                .iter()
                                .find(|p| p.key_id.eq_ignore_ascii_case(&k))
                        })
                        .map(|p| (p.key_id.as_str(), p.hint.as_deref())),
                ))
    };
    if let RemovalReason::Abandoned { rotation_id } = &removal.reason {
        // The store's record that the attempt never reached publishing is the evidence, and
        // no vault is needed for it (the client's secret may be missing or soft-deleted). But
        // a stale record (a store restored from a backup) must not remove what a read shows
        // published: the client's location, and the one the credential was made for if the
        // client has left it, are read again; one that names it or serves its value, or that
        // fails, keeps it.
        let shows =
            |read: Result<plan::VaultSecret, super::Failure>, tolerate_deleted: bool| match read {
                Ok(plan::VaultSecret::Present { history, latest }) => {
                    history.iter().any(names) || read_by_consumers(&latest)
                }
                Ok(plan::VaultSecret::Absent) => false,
                Ok(plan::VaultSecret::SoftDeleted) => !tolerate_deleted,
                Err(_) => true,
            };
        if shows(observe::read_vault(ctx, client, cancel).await, true) {
            tracing::warn!(client = %client.name, key_id = %removal.key_id, "keeping the credential of an abandoned attempt: a fresh read of the vault shows it published, or failed");
            return Ok(false);
        }
        let made_for = plan::location_of(rotation_id);
        let here = plan::location_tag(&client.key_vault_url, &client.secret_name);
        if made_for != Some(here.as_str()) {
            let Some(there) = former.iter().find(|f| Some(f.tag.as_str()) == made_for) else {
                return Ok(false);
            };
            let read = observe::read_vault_at(
                ctx,
                &there.vault_url,
                &there.secret_name,
                observe::READ_BUDGET,
                cancel,
            )
            .await;
            if shows(read, false) {
                tracing::warn!(client = %client.name, key_id = %removal.key_id, location = %there.name, "keeping the credential of an abandoned attempt: a fresh read of the location it was made for shows it published, or failed");
                return Ok(false);
            }
        }
    } else {
        // Only the removal of a credential named by no version at the client's location (an
        // orphan, or a published one whose version a restore discarded) looks at the history
        // (no version may name it); every other one looks at what consumers read, which one
        // `GET` tells.
        let here = if removal.needs_history() {
            observe::read_vault(ctx, client, cancel).await
        } else {
            observe::read_latest(ctx, client, cancel).await
        };
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
                let orphan_named = removal.needs_history() && history.iter().any(names);
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
        let _ = ctx.store.end_intent(rotation_id).await;
    }
    if let RemovalReason::Unpublished { .. } = &removal.reason {
        let _ = ctx
            .store
            .forget_unpublished(&client.name, std::slice::from_ref(&removal.key_id))
            .await;
    }
    let _ = ctx
        .store
        .record_history(
            &client.name,
            clock::now(),
            "removed",
            None,
            Some(&removal.key_id),
            Some(&removal.reason.to_string()),
        )
        .await;
    Ok(true)
}

/// Removes the previously published credential at once, after the new secret was published.
/// The planner has checked that it carries this client's marker (or is the identified adopted
/// credential).
pub(super) async fn revoke(
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
            let _ = ctx
                .store
                .record_history(
                    &client.name,
                    clock::now(),
                    "revoked",
                    None,
                    Some(previous),
                    Some(&RemovalReason::Revoked.to_string()),
                )
                .await;
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

//! Reads what a reconcile decides on: the application's credentials, the vault secret's
//! versions, the store's abandoned attempts, and (only when the published key id is missing
//! from a possibly lagging read) whether the published value still signs in.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::plan::{
    Adopted, Observed, Probe, TAG_KEY_ID, TAG_MANAGED_BY, TAG_MANAGED_BY_VALUE, marker_prefix,
};
use super::{Context, Failure};
use crate::azure::entra::VerifyFailure;
use crate::azure::graph::Application;
use crate::azure::retry;
use crate::config::Client;

/// How long reads keep retrying transient failures within one reconcile.
pub const READ_BUDGET: Duration = Duration::from_secs(60);

pub async fn observe(
    ctx: &Context,
    client: &Client,
    cancel: &CancellationToken,
) -> Result<(Application, Observed), Failure> {
    let app = retry(READ_BUDGET, cancel, || {
        ctx.azure.graph.get_application(&client.app)
    })
    .await?;
    let versions = retry(READ_BUDGET, cancel, || {
        ctx.azure
            .vaults
            .versions(&client.key_vault_url, &client.secret_name)
    })
    .await?;
    let abandoned = ctx
        .store
        .intents(&client.name)
        .map_err(Failure::Store)?
        .into_iter()
        .map(|i| i.rotation_id)
        .collect();

    let latest = versions.as_ref().and_then(|v| v.last());
    let missing_key = latest.and_then(|v| {
        let managed = v
            .tags
            .get(TAG_MANAGED_BY)
            .is_some_and(|m| m == TAG_MANAGED_BY_VALUE);
        let key = v.tags.get(TAG_KEY_ID)?;
        (managed
            && v.enabled
            && !app
                .passwords
                .iter()
                .any(|p| p.key_id.eq_ignore_ascii_case(key)))
        .then(|| v.version.clone())
    });
    let published_probe = match missing_key {
        Some(version) => Some(probe(ctx, client, &app, &version, cancel).await),
        None => None,
    };
    let adopted = if client.policy.adopt {
        adopted_credential(
            ctx,
            client,
            &app,
            versions.as_deref().unwrap_or(&[]),
            cancel,
        )
        .await
    } else {
        None
    };
    Ok((
        app.clone(),
        Observed {
            adopted,
            password_cap: app.password_cap(),
            passwords: app.passwords,
            versions,
            published_probe,
            abandoned,
            skew_seconds: ctx.shared.skew.seconds(),
        },
    ))
}

/// Signs in once with the published value. Reads lag writes, so a key id missing from the list
/// is not proof that the credential is gone; a refused sign-in is.
async fn probe(
    ctx: &Context,
    client: &Client,
    app: &Application,
    version: &str,
    cancel: &CancellationToken,
) -> Probe {
    let value = match retry(READ_BUDGET, cancel, || {
        ctx.azure
            .vaults
            .get(&client.key_vault_url, &client.secret_name, Some(version))
    })
    .await
    {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(client = %client.name, error = %e, "could not read the published value to probe it");
            return Probe::Inconclusive;
        }
    };
    match ctx
        .azure
        .entra
        .verify(&app.app_id, &value.value, &client.policy.verify_scope)
        .await
    {
        Ok(()) => Probe::SignsIn,
        Err(VerifyFailure::NotYetValid) => Probe::Rejected,
        Err(VerifyFailure::Rejected(e)) if e.code_is("AADSTS7000222") => Probe::Rejected,
        Err(_) => Probe::Inconclusive,
    }
}

/// Finds the credential an adopted vault value belongs to, once its successor has been
/// published for longer than `overlap`: the one credential not marked as this client's whose
/// hint matches the value's first characters and that signs in with it. Anything less certain
/// is reported and left alone.
async fn adopted_credential(
    ctx: &Context,
    client: &Client,
    app: &Application,
    history: &[crate::azure::keyvault::VersionInfo],
    cancel: &CancellationToken,
) -> Option<Adopted> {
    let managed = |v: &crate::azure::keyvault::VersionInfo| {
        v.tags
            .get(TAG_MANAGED_BY)
            .is_some_and(|m| m == TAG_MANAGED_BY_VALUE)
    };
    let first_managed = history.iter().position(managed)?;
    let adopted_version = history.get(first_managed.checked_sub(1)?)?;
    let since = history[first_managed].created?;
    if crate::clock::now() - since < time::Duration::try_from(client.policy.overlap).ok()? {
        return None;
    }
    let prefix = marker_prefix(&ctx.config.instance, &client.name);
    let foreign: Vec<_> = app
        .passwords
        .iter()
        .filter(|p| {
            !p.display_name
                .as_deref()
                .is_some_and(|d| d.starts_with(&prefix))
        })
        .collect();
    if foreign.is_empty() {
        return None;
    }
    let value = retry(READ_BUDGET, cancel, || {
        ctx.azure.vaults.get(
            &client.key_vault_url,
            &client.secret_name,
            Some(&adopted_version.version),
        )
    })
    .await
    .ok()?;
    let hint: String = {
        use secrecy::ExposeSecret;
        value.value.expose_secret().chars().take(3).collect()
    };
    let candidates: Vec<_> = foreign
        .into_iter()
        .filter(|p| p.hint.as_deref() == Some(hint.as_str()))
        .collect();
    match candidates.as_slice() {
        [] => None,
        [one] => match ctx
            .azure
            .entra
            .verify(&app.app_id, &value.value, &client.policy.verify_scope)
            .await
        {
            Ok(()) => Some(Adopted {
                key_id: one.key_id.clone(),
                superseded_since: since,
            }),
            Err(_) => {
                tracing::info!(client = %client.name, key_id = %one.key_id, "the adopted value no longer signs in; not retiring anything for it");
                None
            }
        },
        many => {
            tracing::warn!(client = %client.name, candidates = many.len(), "cannot tell which credential the adopted secret belongs to; leaving them alone");
            None
        }
    }
}

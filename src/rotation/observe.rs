//! Reads what a reconcile decides on: the application's credentials, the vault secret's
//! versions, the store's abandoned attempts, and (only when the published key id is missing
//! from a possibly lagging read) whether the published value still signs in.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::plan::{Observed, Probe, TAG_KEY_ID, TAG_MANAGED_BY, TAG_MANAGED_BY_VALUE};
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
    Ok((
        app.clone(),
        Observed {
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

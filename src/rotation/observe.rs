//! Reads what a reconcile decides on: the application's credentials, the vault secret's
//! versions, the store's abandoned attempts, and (only when the published key id is missing
//! from a possibly lagging read) whether the published value still signs in.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::plan::{
    AbandonedAttempt, Adopted, FormerLocation, KnownPublished, Observed, Probe, TAG_KEY_ID,
    TAG_MANAGED_BY, TAG_MANAGED_BY_VALUE, VaultSecret, location_of, location_tag, marker_prefix,
};
use super::{Context, Failure};
use crate::azure::entra::VerifyFailure;
use crate::azure::graph::{Application, PasswordCredential};
use crate::azure::keyvault::Latest;
use crate::azure::retry;
use crate::config::Client;
use crate::store::{LocationRow, Records};

/// How long reads keep retrying transient failures within one reconcile.
pub const READ_BUDGET: Duration = Duration::from_secs(60);
/// How long the reads of a location the client has left keep retrying. It is only evidence
/// that may free a credential sooner; a reconcile of the client's own location does not wait
/// long for it.
const FORMER_READ_BUDGET: Duration = Duration::from_secs(10);

pub async fn observe(
    ctx: &Context,
    client: &Client,
    revoke_previous: bool,
    holds_lock: bool,
    cancel: &CancellationToken,
) -> Result<(Application, Observed, Records), Failure> {
    let app = retry(READ_BUDGET, cancel, || {
        ctx.azure.graph.get_application(&client.app)
    })
    .await?;
    // Everything the reconcile reads from the store, in one read transaction. Without the
    // client's lock, an intent may be an attempt in flight in another process: not read. A
    // store that cannot be read fails the reconcile: without its records an abandoned attempt
    // or a credential published in a version a restore discarded would be taken for an orphan.
    let records = ctx
        .store
        .records(&client.name, holds_lock)
        .map_err(Failure::Store)?;
    let abandoned: Vec<AbandonedAttempt> = records
        .intents
        .iter()
        .map(|i| AbandonedAttempt {
            reached_publishing: i.step.may_have_published(),
            rotation_id: i.rotation_id.clone(),
        })
        .collect();
    let prefix = marker_prefix(&ctx.config.instance, &client.name);
    let location = location_tag(&client.key_vault_url, &client.secret_name);
    let arrived_at = records
        .arrived_at(&location)
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok());
    let own: Vec<&PasswordCredential> = app
        .passwords
        .iter()
        .filter(|p| {
            p.display_name
                .as_deref()
                .is_some_and(|d| d.starts_with(&prefix))
        })
        .collect();
    // The removals are judged at `now` less the clock margin, as the planner judges them (it
    // plans later, with a margin that may have grown: then it keeps what it cannot retire).
    let removal_now = |skew: i64| {
        crate::clock::now() - time::Duration::seconds(skew.abs()) - super::plan::CLOCK_RESOLUTION
    };
    let history_matters = |latest: &crate::azure::keyvault::VersionInfo| {
        // The store's record explains a hint match of an own credential besides the published
        // one; with none, it is not read.
        let written = (own.len() > 1)
            .then(|| records.published_credential(&latest.version))
            .flatten();
        let written = written.as_deref().and_then(|k| {
            app.passwords
                .iter()
                .find(|p| p.key_id.eq_ignore_ascii_case(k))
                .map(|p| (p.key_id.as_str(), p.hint.as_deref()))
        });
        super::plan::history_matters(
            &app.passwords,
            &prefix,
            latest,
            client.policy.adopt,
            revoke_previous,
            &abandoned,
            &super::plan::LatestRule {
                app_id: &app.app_id,
                overlap: client.policy.overlap,
                verify_timeout: client.policy.verify_timeout,
                arrived_at,
                written_with: written,
                removal_now: removal_now(ctx.shared.skew.seconds()),
            },
        )
    };
    // The listing is skipped only when the latest version may make it useless: no adoption,
    // revocation or abandoned attempt to judge, and one own credential, or several whose newest
    // is older than `overlap` (the latest version, which names one of them, is then likely
    // older than `overlap` too) and whose others are past the orphan age (as the rule asks of
    // those it retires). Otherwise the reads go in their usual order, listing first, without a
    // `GET` that would be read again.
    let mut starts: Vec<Option<time::OffsetDateTime>> = own.iter().map(|p| p.start).collect();
    starts.sort_unstable();
    let past = |start: Option<time::OffsetDateTime>, by: std::time::Duration| {
        let now = removal_now(ctx.shared.skew.seconds());
        time::Duration::try_from(by)
            .ok()
            .zip(start)
            .and_then(|(by, s)| s.checked_add(by))
            .is_some_and(|t| t <= now)
    };
    let may_skip = match starts.as_slice() {
        [] => false,
        [_] => true,
        [others @ .., newest] => {
            past(*newest, client.policy.overlap)
                && others.iter().all(|s| {
                    past(
                        *s,
                        client.policy.verify_timeout + super::plan::ORPHAN_MARGIN,
                    )
                })
        }
    };
    let (mut vault, history_listed) =
        if may_skip && !client.policy.adopt && !revoke_previous && abandoned.is_empty() {
            read_vault_unless(ctx, client, history_matters, cancel).await?
        } else {
            (read_vault(ctx, client, cancel).await?, true)
        };
    let (mut former, former_unread) =
        read_former(ctx, client, &app, &location, &records.locations, cancel).await;
    // The values of versions no tag attributes, where an own credential's value could be: a
    // missing tag is no evidence that a version does not hold it.
    let oldest_own = own.iter().filter_map(|p| p.start).min();
    if let Some(since) = oldest_own {
        fill_hints(
            ctx,
            &client.key_vault_url,
            &client.secret_name,
            &mut vault,
            since,
            cancel,
        )
        .await;
        for f in &mut former {
            fill_hints(
                ctx,
                &f.vault_url,
                &f.secret_name,
                &mut f.secret,
                since,
                cancel,
            )
            .await;
        }
    }
    let (history, latest) = match &vault {
        VaultSecret::Present { history, latest } => (history.as_slice(), Some(latest)),
        _ => (&[][..], None),
    };
    let latest_written_with = latest.and_then(|l| records.published_credential(&l.version));
    // Which own credentials the store knows were published, when one besides the credential
    // the latest version names is on the application: one of them that no version names was
    // served by a version a restore discarded, and is kept for `overlap` (`plan`); at a
    // location the client has left, such a one is not taken for an attempt that never
    // published there (so also read when a location the client left was read, whatever is
    // published here). Not looked at otherwise (a healthy client's reconcile).
    let latest_key = latest.and_then(|l| l.tags.get(TAG_KEY_ID));
    let others = own
        .iter()
        .any(|p| latest_key.is_none_or(|k| !p.key_id.eq_ignore_ascii_case(k)));
    let known_published = if (latest.is_some() || !former.is_empty()) && others {
        records
            .known_published()
            .into_iter()
            .map(|k| {
                let at = |t: Option<i64>| {
                    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
                };
                let last_seen = at(k.unpublished_last_seen_at);
                KnownPublished {
                    key_id: k.key_id,
                    unpublished_since: at(k.unpublished_seen_at),
                    unpublished_last_seen: last_seen,
                    // What the client's schedule allows between two reads after that one
                    // (the same for the daemon and the one-shot commands).
                    tolerance: last_seen.map_or(Duration::ZERO, |last| {
                        crate::schedule::tolerated_gap(&client.policy.schedule, last)
                    }),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
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
        adopted_credential(ctx, client, &app, history, cancel).await
    } else {
        None
    };
    let unmanaged_latest = latest.filter(|v| {
        v.tags
            .get(TAG_MANAGED_BY)
            .is_none_or(|m| m != TAG_MANAGED_BY_VALUE)
    });
    let adopted_now = match unmanaged_latest {
        Some(v) if revoke_previous && client.policy.adopt => {
            identify(ctx, client, &app, &v.version, cancel).await
        }
        _ => None,
    };
    Ok((
        app.clone(),
        Observed {
            adopted,
            adopted_now,
            password_cap: app.password_cap(),
            passwords: app.passwords,
            location,
            former,
            former_unread,
            arrived_at,
            app_id: app.app_id.clone(),
            location_name: format!(
                "secret '{}' in vault {}",
                client.secret_name, client.key_vault_url
            ),
            vault,
            published_probe,
            abandoned,
            skew_seconds: ctx.shared.skew.seconds(),
            latest_written_with,
            history_listed,
            known_published,
        },
        records,
    ))
}

/// The credential whose value this installation wrote as `version`, from the store's record of
/// the write, read again (the fresh read before a removal). A store that cannot be read gives
/// no record (which only keeps credentials).
pub fn written_with(ctx: &Context, client: &str, version: &str) -> Option<String> {
    ctx.store
        .published_credential(client, version)
        .unwrap_or_else(|e| {
            tracing::warn!(client = %client, error = %e, "could not read from the store which credential the latest version was written with");
            None
        })
}

/// Reads the locations the client has left that own credentials were made for: their location
/// tag (from the marker) gives the address the store recorded for it. The store is a hint, so
/// an address counts only when its own tag is the one the credential carries, and only a host
/// the daemon may send its Key Vault token to is read. A location that cannot be read is left
/// out and logged: a failed read is no evidence. Returned second, as (tag, name in words), so
/// that a message can say its read failed rather than that its address is unknown.
async fn read_former(
    ctx: &Context,
    client: &Client,
    app: &Application,
    location: &str,
    recorded: &[LocationRow],
    cancel: &CancellationToken,
) -> (Vec<FormerLocation>, Vec<(String, String)>) {
    let prefix = marker_prefix(&ctx.config.instance, &client.name);
    let mut tags: Vec<&str> = app
        .passwords
        .iter()
        .filter_map(|p| p.display_name.as_deref()?.strip_prefix(prefix.as_str()))
        .filter_map(location_of)
        .filter(|t| *t != location)
        .collect();
    tags.sort_unstable();
    tags.dedup();
    if tags.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let mut former = Vec::new();
    let mut unread = Vec::new();
    for row in recorded
        .iter()
        .filter(|r| tags.contains(&r.tag.as_str()))
        .cloned()
    {
        let Ok(vault) = url::Url::parse(&row.key_vault_url) else {
            continue;
        };
        if location_tag(&vault, &row.secret_name) != row.tag {
            continue;
        }
        let name = format!("secret '{}' in vault {vault}", row.secret_name);
        let configured = ctx.config.clients.iter().any(|c| *c.key_vault_url == vault);
        if !configured && !crate::config::known_vault_host(&vault, ctx.config.azure.cloud) {
            tracing::info!(client = %client.name, vault = %vault, "not reading the client's previous vault: its host is not a Key Vault host of the cloud and no client names it");
            unread.push((row.tag, name));
            continue;
        }
        match read_vault_at(ctx, &vault, &row.secret_name, FORMER_READ_BUDGET, cancel).await {
            Ok(secret) => former.push(FormerLocation {
                tag: row.tag,
                name,
                vault_url: vault,
                secret_name: row.secret_name,
                secret,
            }),
            Err(e) => {
                tracing::warn!(client = %client.name, location = %name, error = %e, "could not read the client's previous location; its credentials wait for the migration rule");
                unread.push((row.tag, name));
            }
        }
    }
    (former, unread)
}

/// How many versions without a tag naming a credential are read for their value's hint, per
/// location and reconcile (newest first); the others stay unknown, which keeps credentials.
const HINTS_PER_LOCATION: usize = 10;

/// Reads the hint (first three characters) of each version created since `since` that no
/// tag attributes to a credential, so that the planner can tell whether it may hold an own
/// credential's value. A version whose value cannot be read keeps no hint: unknown, which the
/// planner takes as "may hold it".
async fn fill_hints(
    ctx: &Context,
    vault: &url::Url,
    name: &str,
    secret: &mut VaultSecret,
    since: time::OffsetDateTime,
    cancel: &CancellationToken,
) {
    let VaultSecret::Present { history, latest } = secret else {
        return;
    };
    let wanted: Vec<usize> = history
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, v)| {
            v.value_hint.is_none()
                && !super::plan::names_a_credential(v)
                && v.created
                    .is_none_or(|c| c >= since - time::Duration::seconds(1))
        })
        .map(|(i, _)| i)
        .take(HINTS_PER_LOCATION)
        .collect();
    for i in wanted {
        let version = history[i].version.clone();
        if version == latest.version && latest.value_hint.is_some() {
            history[i].value_hint = latest.value_hint.clone();
            continue;
        }
        match retry(FORMER_READ_BUDGET, cancel, || {
            ctx.azure.vaults.get(vault, name, Some(&version))
        })
        .await
        {
            Ok(value) => {
                use secrecy::ExposeSecret;
                history[i].value_hint = Some(value.value.expose_secret().chars().take(3).collect());
            }
            Err(e) => {
                tracing::info!(secret = %name, version = %version, error = %e, "could not read a version without a key-id tag; it may hold any own credential's value");
            }
        }
    }
}

/// Reads the vault secret: its history and the version `GET` returns. A 404 on the listing is
/// followed by a look at the deleted secrets, so that a soft-deleted name is told from one that
/// never existed. Any read that fails fails the reconcile: it is not an observation.
pub async fn read_vault(
    ctx: &Context,
    client: &Client,
    cancel: &CancellationToken,
) -> Result<VaultSecret, Failure> {
    read_vault_at(
        ctx,
        &client.key_vault_url,
        &client.secret_name,
        READ_BUDGET,
        cancel,
    )
    .await
}

/// [`read_vault`], except that when the version consumers read is enabled and `needs_history`
/// says the listing cannot change the plan (`plan::history_matters`), that version is the
/// whole observation: one `GET` instead of two reads. Otherwise the vault is read in full, in
/// the usual order (the listing, then `GET` again: a write between the two reads must show in
/// the latest version, not only in the listing). Second: whether the versions were listed.
async fn read_vault_unless(
    ctx: &Context,
    client: &Client,
    needs_history: impl Fn(&crate::azure::keyvault::VersionInfo) -> bool,
    cancel: &CancellationToken,
) -> Result<(VaultSecret, bool), Failure> {
    let latest = retry(READ_BUDGET, cancel, || {
        ctx.azure
            .vaults
            .latest(&client.key_vault_url, &client.secret_name)
    })
    .await?;
    match latest {
        Latest::Version(v) if !needs_history(&v) => Ok((
            VaultSecret::Present {
                history: vec![v.clone()],
                latest: v,
            },
            false,
        )),
        _ => Ok((read_vault(ctx, client, cancel).await?, true)),
    }
}

/// What the fresh read before a removal needs when it looks at no history (every removal but
/// an orphan's at the client's location): the version consumers read. One `GET` answers it when
/// the secret has an enabled latest version (its history is then that version alone, and must
/// not be consulted); anything else (a disabled latest version, a 404) is read in full, as
/// [`read_vault`] does, so that absent, soft-deleted and disabled are told apart as before.
pub async fn read_latest(
    ctx: &Context,
    client: &Client,
    cancel: &CancellationToken,
) -> Result<VaultSecret, Failure> {
    Ok(read_vault_unless(ctx, client, |_| false, cancel).await?.0)
}

/// [`read_vault`] of any location, each read retried within `budget`.
pub async fn read_vault_at(
    ctx: &Context,
    vault: &url::Url,
    name: &str,
    budget: Duration,
    cancel: &CancellationToken,
) -> Result<VaultSecret, Failure> {
    let listing = retry(budget, cancel, || ctx.azure.vaults.versions(vault, name)).await?;
    let latest = retry(budget, cancel, || ctx.azure.vaults.latest(vault, name)).await?;
    Ok(match (listing, latest) {
        (Some(mut history), Latest::Version(v)) => {
            // The listing may lag the latest write: what GET returns is part of the history.
            if !history.iter().any(|h| h.version == v.version) {
                history.push(v.clone());
            }
            VaultSecret::Present { history, latest: v }
        }
        (Some(history), Latest::Disabled) => {
            // Key Vault will not return a disabled latest version: a version of the newest
            // second in the listing is it, and it must be disabled there too. One disabled
            // among that second's versions is the latest, even when the second holds enabled
            // ones (versions of one second are unordered). Anything else (none or several
            // disabled: a version disabled or written between the two reads) is decided at
            // the next reconcile.
            let newest = history.iter().map(|v| v.created).max().flatten();
            let mut candidates = history.iter().filter(|v| v.created == newest && !v.enabled);
            match (candidates.next(), candidates.next()) {
                (Some(latest), None) => {
                    let latest = latest.clone();
                    VaultSecret::Present { history, latest }
                }
                _ => return Err(inconsistent(name)),
            }
        }
        (None, Latest::Version(v)) => VaultSecret::Present {
            history: vec![v.clone()],
            latest: v,
        },
        (None, Latest::Absent) => {
            if retry(budget, cancel, || ctx.azure.vaults.is_deleted(vault, name)).await? {
                VaultSecret::SoftDeleted
            } else {
                VaultSecret::Absent
            }
        }
        (Some(_), Latest::Absent) | (None, Latest::Disabled) => return Err(inconsistent(name)),
    })
}

/// The listing and `GET` disagreed (a write or delete between the two reads): decide later.
fn inconsistent(secret_name: &str) -> Failure {
    Failure::Azure(crate::azure::Error::new(
        "keyvault",
        "get_secret",
        crate::azure::Class::Transient { retry_after: None },
        format!(
            "secret '{secret_name}' changed while it was read; it is read again at the next reconcile"
        ),
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
    let key_id = identify(ctx, client, app, &adopted_version.version, cancel).await?;
    Some(Adopted {
        key_id,
        superseded_since: since,
    })
}

/// The credential a vault version's value belongs to: the one credential not marked as this
/// client's whose hint matches the value's first characters and that signs in with it.
/// Anything less certain is `None` (and said in the log).
async fn identify(
    ctx: &Context,
    client: &Client,
    app: &Application,
    version: &str,
    cancel: &CancellationToken,
) -> Option<String> {
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
        ctx.azure
            .vaults
            .get(&client.key_vault_url, &client.secret_name, Some(version))
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
            Ok(()) => Some(one.key_id.clone()),
            Err(_) => {
                tracing::info!(client = %client.name, key_id = %one.key_id, "the adopted value no longer signs in; it is not identified");
                None
            }
        },
        many => {
            tracing::warn!(client = %client.name, candidates = many.len(), "cannot tell which credential the adopted secret belongs to; leaving them alone");
            None
        }
    }
}

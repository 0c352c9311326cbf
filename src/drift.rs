//! Drift: the published secret changed under the daemon. Someone deleted its credential in the
//! portal, wrote or disabled a Key Vault version, or turned the application's sign-in off.
//!
//! Every reconcile assesses what its observation shows for free (the latest version's tags and
//! state, whether its credential is listed); every `drift_interval` it also signs in once with
//! the published value ([`sign_in`]), which is the only way to learn that a listed credential's
//! value is refused or that the application is disabled. [`assess`] turns that into kinds,
//! [`action`] says per kind whether `repair` rotates or only alerts, and [`steer`] applies it
//! to the plan. All three are pure.
//!
//! Repair never removes anything: it rotates through the protocol like any other rotation, and
//! whatever is retired afterwards is retired on the protocol's evidence. A read or sign-in that
//! fails is no observation: it finds no drift.
//!
//! Over 600 lines: about half of it is the table tests of `assess` and `steer`, kept beside the
//! code they pin.

use std::fmt;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::azure::entra::{EntraClient, VerifyFailure};
use crate::azure::keyvault::VaultClients;
use crate::azure::retry;
use crate::config::Client;
use crate::rotation::observe::READ_BUDGET;
use crate::rotation::plan::{
    Blocked, Observed, Plan, Probe, READ_LAG_GRACE, RotateReason, TAG_CLIENT_ID, TAG_KEY_ID,
    TAG_MANAGED_BY, TAG_MANAGED_BY_VALUE, VaultSecret, is_key_id,
};

/// What changed under the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DriftKind {
    /// The published version's credential is no longer on the application.
    CredentialGone,
    /// The published value no longer signs in, though its credential is listed.
    ValueRejected,
    /// The latest version lacks `managed-by=secret-rotator`: someone else wrote it over ours.
    UntaggedVersion,
    /// The published version is disabled: consumers cannot read it.
    DisabledVersion,
    /// The application's sign-in is turned off (AADSTS7000112): no secret of it works.
    AppDisabled,
}

impl DriftKind {
    pub const ALL: [DriftKind; 5] = [
        DriftKind::CredentialGone,
        DriftKind::ValueRejected,
        DriftKind::UntaggedVersion,
        DriftKind::DisabledVersion,
        DriftKind::AppDisabled,
    ];

    /// The `kind` label and the word the history and the log use.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::CredentialGone => "credential_gone",
            DriftKind::ValueRejected => "value_rejected",
            DriftKind::UntaggedVersion => "untagged_version",
            DriftKind::DisabledVersion => "disabled_version",
            DriftKind::AppDisabled => "app_disabled",
        }
    }

    /// Found only by signing in, so only at a drift check.
    fn needs_sign_in(self) -> bool {
        matches!(self, DriftKind::ValueRejected | DriftKind::AppDisabled)
    }
}

impl DriftKind {
    /// What it means, in words.
    pub fn what(self) -> &'static str {
        match self {
            DriftKind::CredentialGone => {
                "the published credential was removed from the application"
            }
            DriftKind::ValueRejected => "the published value no longer signs in",
            DriftKind::UntaggedVersion => {
                "someone else wrote the latest vault version (it lacks managed-by=secret-rotator)"
            }
            DriftKind::DisabledVersion => "the published vault version is disabled",
            DriftKind::AppDisabled => "the application's sign-in is disabled (AADSTS7000112)",
        }
    }
}

impl fmt::Display for DriftKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_str(), self.what())
    }
}

/// The `repair` policy key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Repair {
    /// Rotate when our published credential is gone, its value rejected or its version
    /// disabled; alert for the rest.
    #[default]
    Rotate,
    /// Only report: a person decides (a forced rotation repairs).
    Alert,
}

impl Repair {
    pub fn parse(s: &str) -> Option<Repair> {
        match s {
            "rotate" => Some(Repair::Rotate),
            "alert" => Some(Repair::Alert),
            _ => None,
        }
    }
}

/// What the daemon does about one kind of drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Rotate,
    Alert,
}

/// A drift check's sign-in with the published value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    SignsIn,
    /// AADSTS7000215 (invalid secret) or 7000222 (expired).
    Rejected,
    /// AADSTS7000112: the application is disabled.
    AppDisabled,
    /// The value could not be read or Entra could not answer: no observation.
    Inconclusive,
}

fn managed(v: &crate::azure::keyvault::VersionInfo) -> bool {
    v.tags
        .get(TAG_MANAGED_BY)
        .is_some_and(|m| m == TAG_MANAGED_BY_VALUE)
}

/// The kinds of drift an observation shows, in [`DriftKind::ALL`] order. `sign_in` is the
/// drift check's sign-in, when one was made.
///
/// Only what a successful read shows counts: an absent or soft-deleted secret is the
/// planner's business, not drift, and a version younger than reads can lag (or than a new
/// secret takes to propagate) is given the benefit of the doubt, as the planner gives it.
pub fn assess(observed: &Observed, sign_in: Option<SignIn>, now: OffsetDateTime) -> Vec<DriftKind> {
    let mut kinds = Vec::new();
    let VaultSecret::Present { history, latest } = &observed.vault else {
        return kinds;
    };
    let ours = |v: &crate::azure::keyvault::VersionInfo| {
        managed(v)
            && v.tags
                .get(TAG_CLIENT_ID)
                .is_none_or(|c| c.eq_ignore_ascii_case(&observed.app_id))
    };
    let settled = latest
        .created
        .is_none_or(|c| now - c >= time::Duration::try_from(READ_LAG_GRACE).unwrap_or_default());
    if !managed(latest) {
        // Drift only when ours was there before; a secret that was never ours is the
        // `adopt` question.
        if history.iter().any(ours) {
            kinds.push(DriftKind::UntaggedVersion);
        }
    } else if ours(latest) {
        let key_id = latest.tags.get(TAG_KEY_ID).filter(|k| is_key_id(k));
        let credential = key_id.and_then(|k| {
            observed
                .passwords
                .iter()
                .find(|p| p.key_id.eq_ignore_ascii_case(k))
        });
        if key_id.is_some() && credential.is_none() {
            let probe_rejected = observed.published_probe == Some(Probe::Rejected)
                || sign_in == Some(SignIn::Rejected);
            let probe_signs_in = observed.published_probe == Some(Probe::SignsIn)
                || sign_in == Some(SignIn::SignsIn);
            if probe_rejected || (settled && !probe_signs_in) {
                kinds.push(DriftKind::CredentialGone);
            }
        }
        let expired = credential.and_then(|c| c.end).is_some_and(|end| end <= now);
        if credential.is_some() && sign_in == Some(SignIn::Rejected) && settled && !expired {
            kinds.push(DriftKind::ValueRejected);
        }
        if !latest.enabled {
            kinds.push(DriftKind::DisabledVersion);
        }
    }
    if sign_in == Some(SignIn::AppDisabled) {
        kinds.push(DriftKind::AppDisabled);
    }
    kinds.sort();
    kinds
}

/// What `repair` does about `kind`. Versions written by others and a disabled application
/// always only alert: rotating over someone's version would overwrite what they meant to
/// publish, and no new secret of a disabled application signs in.
pub fn action(kind: DriftKind, repair: Repair) -> Action {
    match (kind, repair) {
        (DriftKind::UntaggedVersion | DriftKind::AppDisabled, _) => Action::Alert,
        (_, Repair::Alert) => Action::Alert,
        (
            DriftKind::CredentialGone | DriftKind::ValueRejected | DriftKind::DisabledVersion,
            Repair::Rotate,
        ) => Action::Rotate,
    }
}

/// Applies `repair` to the plan, unless the rotation is forced (which is how a person
/// repairs):
/// - a kind to rotate for makes a plan that would not rotate rotate (never past a block);
/// - with `repair = "alert"`, drift that a rotation would repair blocks a plan that would not
///   rotate or would rotate only because of it (a gone credential, a disabled version): the
///   block says what was found and how to repair it;
/// - a disabled application blocks, whatever `repair` says: no new secret of it can sign in,
///   so a rotation would only add a credential and remove it again.
///
/// Returns the kinds the plan now rotates for.
pub fn steer(
    plan: &mut Plan,
    kinds: &[DriftKind],
    repair: Repair,
    force: bool,
    client: &str,
) -> Vec<DriftKind> {
    if force || kinds.is_empty() || plan.blocked.is_some() {
        return Vec::new();
    }
    if kinds.contains(&DriftKind::AppDisabled) {
        plan.rotate = None;
        plan.blocked = Some(Blocked::Drift {
            message: format!(
                "{}: turn its sign-in back on (Enterprise applications, Properties, \"Enabled for users to sign in\"); nothing is rotated until then",
                DriftKind::AppDisabled
            ),
        });
        return Vec::new();
    }
    let caused_by_drift = matches!(
        plan.rotate,
        Some(RotateReason::PublishedCredentialGone { .. } | RotateReason::PublishedVersionDisabled)
    );
    let repairable: Vec<DriftKind> = kinds
        .iter()
        .copied()
        .filter(|k| action(*k, Repair::Rotate) == Action::Rotate)
        .collect();
    let Some(first) = repairable.first().copied() else {
        return Vec::new();
    };
    match repair {
        Repair::Rotate => {
            if plan.rotate.is_none() {
                plan.rotate = Some(RotateReason::DriftRepair {
                    kind: first.as_str().to_string(),
                });
            }
            repairable
        }
        Repair::Alert => {
            if plan.rotate.is_none() || caused_by_drift {
                plan.rotate = None;
                plan.blocked = Some(Blocked::Drift {
                    message: format!(
                        "{first}; repair = alert, so nothing is rotated: fix it by hand or run `secret-rotator rotate --force {client}`"
                    ),
                });
            }
            Vec::new()
        }
    }
}

/// The kinds to report after a reconcile: what it found now, plus what only a sign-in finds
/// carried over from the last check when this reconcile made none, unless a new secret was
/// published since (which repairs all of them).
pub fn reported(
    found: &[DriftKind],
    previous: &[DriftKind],
    signed_in: bool,
    published: bool,
) -> Vec<DriftKind> {
    if published {
        return Vec::new();
    }
    let mut kinds: Vec<DriftKind> = found.to_vec();
    if !signed_in {
        kinds.extend(previous.iter().copied().filter(|k| k.needs_sign_in()));
    }
    kinds.sort();
    kinds.dedup();
    kinds
}

/// Signs in once with the published value, for a drift check: only when the latest version is
/// ours, enabled and names a credential. `None` when there is nothing to sign in with.
pub async fn sign_in(
    vaults: &VaultClients,
    entra: &EntraClient,
    client: &Client,
    app_id: &str,
    vault: &VaultSecret,
    cancel: &CancellationToken,
) -> Option<SignIn> {
    let VaultSecret::Present { latest, .. } = vault else {
        return None;
    };
    if !managed(latest)
        || !latest.enabled
        || !latest.tags.get(TAG_KEY_ID).is_some_and(|k| is_key_id(k))
    {
        return None;
    }
    let value = match retry(READ_BUDGET, cancel, || {
        vaults.get(
            &client.key_vault_url,
            &client.secret_name,
            Some(&latest.version),
        )
    })
    .await
    {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(client = %client.name, error = %e, "drift check: could not read the published value");
            return Some(SignIn::Inconclusive);
        }
    };
    Some(
        match entra
            .verify(app_id, &value.value, &client.policy.verify_scope)
            .await
        {
            Ok(()) => SignIn::SignsIn,
            Err(VerifyFailure::NotYetValid) => SignIn::Rejected,
            Err(VerifyFailure::Rejected(e)) if e.code_is("AADSTS7000222") => SignIn::Rejected,
            Err(VerifyFailure::Rejected(e)) if e.code_is("AADSTS7000112") => SignIn::AppDisabled,
            Err(_) => SignIn::Inconclusive,
        },
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::azure::graph::PasswordCredential;
    use crate::azure::keyvault::VersionInfo;

    const APP: &str = "00000000-0000-0000-0000-0000000000aa";
    const KEY: &str = "11111111-1111-1111-1111-111111111111";

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn version(id: &str, managed: bool, enabled: bool, age_s: i64) -> VersionInfo {
        let mut tags = BTreeMap::new();
        if managed {
            tags.insert(TAG_MANAGED_BY.into(), TAG_MANAGED_BY_VALUE.into());
            tags.insert(TAG_CLIENT_ID.into(), APP.into());
            tags.insert(TAG_KEY_ID.into(), KEY.into());
        }
        VersionInfo {
            version: id.into(),
            created: Some(now() - time::Duration::seconds(age_s)),
            updated: None,
            enabled,
            expires: None,
            tags,
            value_hint: None,
        }
    }

    fn credential(end_in_s: i64) -> PasswordCredential {
        PasswordCredential {
            key_id: KEY.into(),
            display_name: Some("secret-rotator:default:c:x".into()),
            hint: None,
            start: None,
            end: Some(now() + time::Duration::seconds(end_in_s)),
        }
    }

    fn observed(history: Vec<VersionInfo>, passwords: Vec<PasswordCredential>) -> Observed {
        let latest = history.last().cloned().unwrap();
        Observed {
            passwords,
            password_cap: None,
            vault: VaultSecret::Present { history, latest },
            location: String::new(),
            app_id: APP.into(),
            location_name: "secret".into(),
            published_probe: None,
            abandoned: Vec::new(),
            skew_seconds: 0,
            adopted: None,
            adopted_now: None,
            former: Vec::new(),
            former_unread: Vec::new(),
            arrived_at: None,
            latest_written_with: None,
            history_listed: true,
            known_published: vec![],
        }
    }

    const HOUR: i64 = 3600;

    #[test]
    fn a_healthy_published_secret_shows_no_drift() {
        let o = observed(
            vec![version("v1", true, true, HOUR)],
            vec![credential(HOUR * 24)],
        );
        assert!(assess(&o, Some(SignIn::SignsIn), now()).is_empty());
        assert!(assess(&o, None, now()).is_empty());
    }

    #[test]
    fn a_credential_removed_in_the_portal_is_credential_gone() {
        let o = observed(vec![version("v1", true, true, HOUR)], vec![]);
        assert_eq!(assess(&o, None, now()), vec![DriftKind::CredentialGone]);
        assert_eq!(
            assess(&o, Some(SignIn::Rejected), now()),
            vec![DriftKind::CredentialGone]
        );
    }

    #[test]
    fn a_credential_missing_from_a_young_version_is_not_gone_unless_its_value_is_refused() {
        let o = observed(vec![version("v1", true, true, 10)], vec![]);
        assert!(assess(&o, None, now()).is_empty(), "reads lag writes");
        assert!(assess(&o, Some(SignIn::SignsIn), now()).is_empty());
        assert_eq!(
            assess(&o, Some(SignIn::Rejected), now()),
            vec![DriftKind::CredentialGone]
        );
    }

    #[test]
    fn a_missing_credential_whose_value_still_signs_in_is_a_lagging_read() {
        let o = observed(vec![version("v1", true, true, HOUR)], vec![]);
        assert!(assess(&o, Some(SignIn::SignsIn), now()).is_empty());
    }

    #[test]
    fn a_listed_credential_whose_value_is_refused_is_value_rejected() {
        let o = observed(
            vec![version("v1", true, true, HOUR)],
            vec![credential(HOUR)],
        );
        assert_eq!(
            assess(&o, Some(SignIn::Rejected), now()),
            vec![DriftKind::ValueRejected]
        );
    }

    #[test]
    fn a_refused_value_is_no_drift_while_it_may_still_be_propagating_or_has_expired() {
        let young = observed(vec![version("v1", true, true, 30)], vec![credential(HOUR)]);
        assert!(assess(&young, Some(SignIn::Rejected), now()).is_empty());
        let expired = observed(vec![version("v1", true, true, HOUR)], vec![credential(-60)]);
        assert!(assess(&expired, Some(SignIn::Rejected), now()).is_empty());
    }

    #[test]
    fn an_inconclusive_sign_in_finds_nothing() {
        let o = observed(
            vec![version("v1", true, true, HOUR)],
            vec![credential(HOUR)],
        );
        assert!(assess(&o, Some(SignIn::Inconclusive), now()).is_empty());
    }

    #[test]
    fn a_version_written_by_someone_else_over_ours_is_untagged_version() {
        let o = observed(
            vec![
                version("v1", true, true, HOUR),
                version("v2", false, true, 60),
            ],
            vec![credential(HOUR)],
        );
        assert_eq!(assess(&o, None, now()), vec![DriftKind::UntaggedVersion]);
    }

    #[test]
    fn a_secret_that_was_never_ours_is_not_drift() {
        let o = observed(vec![version("v1", false, true, HOUR)], vec![]);
        assert!(assess(&o, None, now()).is_empty());
    }

    #[test]
    fn a_disabled_published_version_is_disabled_version() {
        let o = observed(
            vec![version("v1", true, false, HOUR)],
            vec![credential(HOUR)],
        );
        assert_eq!(assess(&o, None, now()), vec![DriftKind::DisabledVersion]);
    }

    #[test]
    fn a_sign_in_refused_because_the_app_is_disabled_is_app_disabled() {
        let o = observed(
            vec![version("v1", true, true, HOUR)],
            vec![credential(HOUR)],
        );
        assert_eq!(
            assess(&o, Some(SignIn::AppDisabled), now()),
            vec![DriftKind::AppDisabled]
        );
    }

    #[test]
    fn absent_and_soft_deleted_secrets_are_no_drift() {
        let mut o = observed(vec![version("v1", true, true, HOUR)], vec![]);
        o.vault = VaultSecret::SoftDeleted;
        assert!(assess(&o, Some(SignIn::Rejected), now()).is_empty());
        o.vault = VaultSecret::Absent;
        assert!(assess(&o, None, now()).is_empty());
    }

    #[test]
    fn repair_rotates_for_our_credential_and_alerts_for_what_others_did() {
        use DriftKind::*;
        for k in [CredentialGone, ValueRejected, DisabledVersion] {
            assert_eq!(action(k, Repair::Rotate), Action::Rotate, "{k}");
            assert_eq!(action(k, Repair::Alert), Action::Alert, "{k}");
        }
        for k in [UntaggedVersion, AppDisabled] {
            assert_eq!(action(k, Repair::Rotate), Action::Alert, "{k}");
            assert_eq!(action(k, Repair::Alert), Action::Alert, "{k}");
        }
    }

    #[test]
    fn a_rejected_value_makes_a_quiet_plan_rotate() {
        let mut plan = Plan::default();
        let rotating = steer(
            &mut plan,
            &[DriftKind::ValueRejected],
            Repair::Rotate,
            false,
            "c",
        );
        assert_eq!(rotating, vec![DriftKind::ValueRejected]);
        assert_eq!(
            plan.rotate,
            Some(RotateReason::DriftRepair {
                kind: "value_rejected".into()
            })
        );
    }

    #[test]
    fn repair_never_rotates_past_a_block() {
        let mut plan = Plan {
            blocked: Some(Blocked::UnmanagedSecret),
            ..Plan::default()
        };
        let rotating = steer(
            &mut plan,
            &[DriftKind::ValueRejected],
            Repair::Rotate,
            false,
            "c",
        );
        assert!(rotating.is_empty());
        assert_eq!(plan.rotate, None);
        assert_eq!(plan.blocked, Some(Blocked::UnmanagedSecret));
    }

    #[test]
    fn repair_keeps_the_planners_own_reason_when_it_rotates_anyway() {
        let mut plan = Plan {
            rotate: Some(RotateReason::PublishedCredentialGone { key_id: KEY.into() }),
            ..Plan::default()
        };
        let rotating = steer(
            &mut plan,
            &[DriftKind::CredentialGone],
            Repair::Rotate,
            false,
            "c",
        );
        assert_eq!(rotating, vec![DriftKind::CredentialGone]);
        assert!(matches!(
            plan.rotate,
            Some(RotateReason::PublishedCredentialGone { .. })
        ));
    }

    #[test]
    fn alert_turns_a_drift_rotation_into_a_block_that_says_what_to_do() {
        for (reason, kind) in [
            (
                RotateReason::PublishedCredentialGone { key_id: KEY.into() },
                DriftKind::CredentialGone,
            ),
            (
                RotateReason::PublishedVersionDisabled,
                DriftKind::DisabledVersion,
            ),
        ] {
            let mut plan = Plan {
                rotate: Some(reason),
                ..Plan::default()
            };
            assert!(steer(&mut plan, &[kind], Repair::Alert, false, "c").is_empty());
            assert_eq!(plan.rotate, None);
            let blocked = plan.blocked.expect("blocked").to_string();
            assert!(blocked.contains(kind.as_str()), "{blocked}");
            assert!(blocked.contains("rotate --force c"), "{blocked}");
        }
    }

    #[test]
    fn alert_blocks_on_a_rejected_value_the_planner_does_not_see() {
        let mut plan = Plan::default();
        steer(
            &mut plan,
            &[DriftKind::ValueRejected],
            Repair::Alert,
            false,
            "c",
        );
        assert_eq!(plan.rotate, None);
        assert!(plan.blocked.unwrap().to_string().contains("value_rejected"));
    }

    #[test]
    fn alert_leaves_a_rotation_for_expiry_alone() {
        let at = now();
        let mut plan = Plan {
            rotate: Some(RotateReason::ExpiresSoon { at }),
            ..Plan::default()
        };
        steer(
            &mut plan,
            &[DriftKind::ValueRejected],
            Repair::Alert,
            false,
            "c",
        );
        assert_eq!(plan.rotate, Some(RotateReason::ExpiresSoon { at }));
        assert_eq!(plan.blocked, None);
    }

    #[test]
    fn a_disabled_application_blocks_whatever_repair_says() {
        for repair in [Repair::Rotate, Repair::Alert] {
            let at = now();
            let mut plan = Plan {
                rotate: Some(RotateReason::ExpiresSoon { at }),
                ..Plan::default()
            };
            assert!(steer(&mut plan, &[DriftKind::AppDisabled], repair, false, "c").is_empty());
            assert_eq!(plan.rotate, None);
            let blocked = plan.blocked.unwrap().to_string();
            assert!(blocked.contains("app_disabled"), "{blocked}");
            assert!(blocked.contains("sign-in back on"), "{blocked}");
        }
    }

    #[test]
    fn a_forced_rotation_is_how_a_person_repairs_and_is_never_steered() {
        let mut plan = Plan {
            rotate: Some(RotateReason::Forced),
            ..Plan::default()
        };
        steer(
            &mut plan,
            &[DriftKind::CredentialGone],
            Repair::Alert,
            true,
            "c",
        );
        assert_eq!(plan.rotate, Some(RotateReason::Forced));
        assert_eq!(plan.blocked, None);
    }

    #[test]
    fn untagged_versions_are_only_ever_alerted() {
        let mut plan = Plan {
            blocked: Some(Blocked::UnmanagedSecret),
            ..Plan::default()
        };
        assert!(
            steer(
                &mut plan,
                &[DriftKind::UntaggedVersion],
                Repair::Rotate,
                false,
                "c"
            )
            .is_empty()
        );
        assert_eq!(plan.rotate, None);
        let mut quiet = Plan::default();
        steer(
            &mut quiet,
            &[DriftKind::UntaggedVersion],
            Repair::Rotate,
            false,
            "c",
        );
        assert_eq!(quiet.rotate, None);
    }

    #[test]
    fn what_only_a_sign_in_finds_is_carried_between_checks_until_a_publish() {
        use DriftKind::*;
        let previous = [ValueRejected, DisabledVersion, AppDisabled];
        assert_eq!(
            reported(&[], &previous, false, false),
            vec![ValueRejected, AppDisabled]
        );
        assert_eq!(
            reported(&[], &previous, true, false),
            Vec::<DriftKind>::new()
        );
        assert_eq!(
            reported(&[CredentialGone], &previous, false, true),
            Vec::<DriftKind>::new()
        );
    }
}

//! The decision: a pure function of (observed state, policy, now). No I/O, no async, no clock.
//!
//! It says whether to rotate and why, which of this installation's credentials to remove and
//! why, and what stops a rotation. Every decision carries its reason, which becomes the log
//! message and the `plan` output.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;

use crate::azure::graph::PasswordCredential;
use crate::azure::keyvault::VersionInfo;

/// Tags of every version the daemon publishes.
pub const TAG_MANAGED_BY: &str = "managed-by";
pub const TAG_MANAGED_BY_VALUE: &str = "secret-rotator";
pub const TAG_CLIENT_ID: &str = "client-id";
pub const TAG_KEY_ID: &str = "key-id";
pub const TAG_ROTATION_ID: &str = "rotation-id";

/// A published key id missing from a (lagging) credential list is taken as gone only after this.
pub const READ_LAG_GRACE: Duration = Duration::from_secs(300);
/// A clock further than this from Azure's blocks retiring and sweeping (never rotating).
pub const MAX_SKEW_SECONDS: i64 = 120;
/// An orphan is older than `verify_timeout` plus this.
pub const ORPHAN_MARGIN: Duration = Duration::from_secs(60);

/// The displayName marker of this installation's credentials for one client.
pub fn marker_prefix(instance: &str, client: &str) -> String {
    format!("secret-rotator:{instance}:{client}:")
}

/// What a reconcile saw.
#[derive(Debug, Clone)]
pub struct Observed {
    pub passwords: Vec<PasswordCredential>,
    /// The application's password cap (2 for apps open to personal accounts).
    pub password_cap: Option<usize>,
    /// The vault secret's versions, oldest first; `None` when the secret does not exist.
    pub versions: Option<Vec<VersionInfo>>,
    /// Signing in with the published value, done only when its key id is missing from the list.
    pub published_probe: Option<Probe>,
    /// Rotation ids of this client's attempts that a dead process left behind (intents in the
    /// store whose lock was free).
    pub abandoned: Vec<String>,
    /// Local clock minus Azure's, in seconds.
    pub skew_seconds: i64,
    /// With `adopt`: the credential the adopted vault value belongs to, identified with
    /// certainty (its hint matches and it signs in with that value), once its successor has
    /// been published for longer than `overlap`.
    pub adopted: Option<Adopted>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    pub key_id: String,
    pub superseded_since: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    SignsIn,
    Rejected,
    Inconclusive,
}

/// The parts of a client's policy the decision needs.
#[derive(Debug, Clone)]
pub struct PolicyView<'a> {
    pub instance: &'a str,
    pub client: &'a str,
    pub renew_before: Duration,
    pub overlap: Duration,
    pub verify_timeout: Duration,
    pub adopt: bool,
    pub force: bool,
}

/// Why a rotation happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateReason {
    Forced,
    NoPublishedSecret,
    AdoptingUnmanagedSecret,
    PublishedVersionDisabled,
    PublishedCredentialGone { key_id: String },
    PublishedWithoutKeyId,
    Expired { at: OffsetDateTime },
    ExpiresSoon { at: OffsetDateTime },
}

impl fmt::Display for RotateReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RotateReason::Forced => write!(f, "rotation forced"),
            RotateReason::NoPublishedSecret => write!(f, "no secret is published in Key Vault"),
            RotateReason::AdoptingUnmanagedSecret => {
                write!(f, "adopting an existing vault secret (adopt = true)")
            }
            RotateReason::PublishedVersionDisabled => {
                write!(f, "the published Key Vault version is disabled")
            }
            RotateReason::PublishedCredentialGone { key_id } => write!(
                f,
                "the published credential {key_id} no longer exists on the application"
            ),
            RotateReason::PublishedWithoutKeyId => {
                write!(f, "the published version has no key-id tag")
            }
            RotateReason::Expired { at } => {
                write!(f, "the published secret expired at {}", rfc3339(*at))
            }
            RotateReason::ExpiresSoon { at } => write!(
                f,
                "the published secret expires at {}, within renew_before",
                rfc3339(*at)
            ),
        }
    }
}

/// Why a credential is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemovalReason {
    /// Superseded for longer than `overlap`.
    Superseded { since: OffsetDateTime },
    /// Left by an attempt of a process that died (known from the store).
    Abandoned { rotation_id: String },
    /// Own marker, never published, older than `verify_timeout` + 1 min.
    Orphan { rotation_id: String },
    /// The credential of an adopted vault secret, superseded for longer than `overlap`.
    Adopted { since: OffsetDateTime },
}

impl fmt::Display for RemovalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemovalReason::Superseded { since } => write!(
                f,
                "superseded since {} (longer than overlap)",
                rfc3339(*since)
            ),
            RemovalReason::Abandoned { rotation_id } => {
                write!(f, "left by abandoned attempt {rotation_id}")
            }
            RemovalReason::Orphan { rotation_id } => {
                write!(f, "orphan of attempt {rotation_id}: never published")
            }
            RemovalReason::Adopted { since } => write!(
                f,
                "the adopted secret's credential, superseded since {} (longer than overlap)",
                rfc3339(*since)
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub key_id: String,
    pub reason: RemovalReason,
}

impl Removal {
    pub fn is_orphan(&self) -> bool {
        matches!(
            self.reason,
            RemovalReason::Orphan { .. } | RemovalReason::Abandoned { .. }
        )
    }
}

/// What keeps a rotation from happening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// The vault secret exists without `managed-by=secret-rotator` and `adopt` is off.
    UnmanagedSecret,
    /// The two-password cap is reached and the other slot is a credential this installation
    /// does not own.
    ForeignCredentialInSlot { key_id: String },
    /// The two-password cap is reached; the other slot frees when its overlap ends.
    WaitingForSlot { until: OffsetDateTime },
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocked::UnmanagedSecret => write!(
                f,
                "the vault secret exists and is not managed by secret-rotator; set adopt = true to take it over"
            ),
            Blocked::ForeignCredentialInSlot { key_id } => write!(
                f,
                "the application allows 2 passwords and credential {key_id}, which secret-rotator does not own, holds the other slot"
            ),
            Blocked::WaitingForSlot { until } => write!(
                f,
                "the application allows 2 passwords; the other slot frees at {} when its overlap ends",
                rfc3339(*until)
            ),
        }
    }
}

impl Blocked {
    /// A wait is not a failure: the published secret is still valid.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Blocked::WaitingForSlot { .. })
    }
}

/// The published version, as the decision understood it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub version: String,
    pub key_id: Option<String>,
    pub created: Option<OffsetDateTime>,
    /// The earlier of the credential's end and the version's `exp`.
    pub expires: Option<OffsetDateTime>,
    pub managed: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub rotate: Option<RotateReason>,
    pub removals: Vec<Removal>,
    pub blocked: Option<Blocked>,
    pub published: Option<Published>,
    /// When the published secret enters `renew_before`.
    pub renew_at: Option<OffsetDateTime>,
    /// When the next superseded credential's overlap ends (it can be retired then).
    pub next_retirement: Option<OffsetDateTime>,
    /// Things worth saying that need no action.
    pub notes: Vec<String>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn std_to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

fn is_managed(v: &VersionInfo) -> bool {
    v.tags
        .get(TAG_MANAGED_BY)
        .is_some_and(|m| m == TAG_MANAGED_BY_VALUE)
}

fn key_of(v: &VersionInfo) -> Option<String> {
    if !is_managed(v) {
        return None;
    }
    v.tags.get(TAG_KEY_ID).map(|k| k.to_ascii_lowercase())
}

/// Decides what a reconcile does.
pub fn plan(observed: &Observed, policy: &PolicyView<'_>, now: OffsetDateTime) -> Plan {
    let mut plan = Plan::default();
    let prefix = marker_prefix(policy.instance, policy.client);
    let own_rotation_id = |p: &PasswordCredential| -> Option<String> {
        p.display_name
            .as_deref()
            .and_then(|d| d.strip_prefix(prefix.as_str()))
            .map(str::to_string)
    };
    let find = |key: &str| {
        observed
            .passwords
            .iter()
            .find(|p| p.key_id.eq_ignore_ascii_case(key))
    };
    let history: &[VersionInfo] = observed.versions.as_deref().unwrap_or(&[]);

    // The published version and what it says about the secret consumers hold.
    let latest = history.last();
    let mut rotate: Option<RotateReason> = None;
    match latest {
        None => rotate = Some(RotateReason::NoPublishedSecret),
        Some(v) if !is_managed(v) => {
            plan.published = Some(Published {
                version: v.version.clone(),
                key_id: None,
                created: v.created,
                expires: v.expires,
                managed: false,
            });
            if policy.adopt {
                rotate = Some(RotateReason::AdoptingUnmanagedSecret);
            } else {
                plan.blocked = Some(Blocked::UnmanagedSecret);
            }
        }
        Some(v) => {
            let key_id = key_of(v);
            let credential = key_id.as_deref().and_then(find);
            let expires = match (credential.and_then(|c| c.end), v.expires) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            plan.published = Some(Published {
                version: v.version.clone(),
                key_id: key_id.clone(),
                created: v.created,
                expires,
                managed: true,
            });
            if let Some(at) = expires {
                plan.renew_at = Some(at - std_to_time(policy.renew_before));
            }
            rotate = if !v.enabled {
                Some(RotateReason::PublishedVersionDisabled)
            } else if key_id.is_none() {
                Some(RotateReason::PublishedWithoutKeyId)
            } else if credential.is_none() {
                let key_id = key_id.clone().unwrap_or_default();
                let old_enough = v
                    .created
                    .is_none_or(|c| now - c >= std_to_time(READ_LAG_GRACE));
                match observed.published_probe {
                    Some(Probe::Rejected) => Some(RotateReason::PublishedCredentialGone { key_id }),
                    Some(Probe::SignsIn) => {
                        plan.notes.push(format!("published credential {key_id} is missing from a lagging read but still signs in"));
                        None
                    }
                    _ if old_enough => Some(RotateReason::PublishedCredentialGone { key_id }),
                    _ => {
                        plan.notes.push(format!(
                            "published credential {key_id} is not visible yet (reads lag writes)"
                        ));
                        None
                    }
                }
            } else {
                match expires {
                    Some(at) if at <= now => Some(RotateReason::Expired { at }),
                    Some(at) if at - std_to_time(policy.renew_before) <= now => {
                        Some(RotateReason::ExpiresSoon { at })
                    }
                    _ => None,
                }
            };
        }
    }
    if policy.force && plan.blocked.is_none() {
        rotate = Some(RotateReason::Forced);
    }

    // This installation's credentials that are not the published one.
    let published_key = plan.published.as_ref().and_then(|p| p.key_id.clone());
    let skewed = observed.skew_seconds.abs() > MAX_SKEW_SECONDS;
    for p in &observed.passwords {
        let Some(rotation_id) = own_rotation_id(p) else {
            continue;
        };
        if published_key
            .as_deref()
            .is_some_and(|k| k.eq_ignore_ascii_case(&p.key_id))
        {
            continue;
        }
        let removal = if let Some(since) = superseded_since(history, &p.key_id) {
            let due = since + std_to_time(policy.overlap);
            if due > now {
                plan.next_retirement = Some(plan.next_retirement.map_or(due, |t| t.min(due)));
            }
            (now >= due).then_some(RemovalReason::Superseded { since })
        } else if observed.abandoned.iter().any(|r| r == &rotation_id) {
            Some(RemovalReason::Abandoned { rotation_id })
        } else {
            let old = p
                .start
                .is_some_and(|s| now - s >= std_to_time(policy.verify_timeout + ORPHAN_MARGIN));
            old.then_some(RemovalReason::Orphan { rotation_id })
        };
        if let Some(reason) = removal {
            plan.removals.push(Removal {
                key_id: p.key_id.clone(),
                reason,
            });
        }
    }
    if policy.adopt
        && let Some(a) = &observed.adopted
        && published_key.as_deref() != Some(a.key_id.as_str())
        && now - a.superseded_since >= std_to_time(policy.overlap)
        && observed
            .passwords
            .iter()
            .any(|p| p.key_id.eq_ignore_ascii_case(&a.key_id) && own_rotation_id(p).is_none())
    {
        plan.removals.push(Removal {
            key_id: a.key_id.clone(),
            reason: RemovalReason::Adopted {
                since: a.superseded_since,
            },
        });
    }
    if skewed && !plan.removals.is_empty() {
        plan.notes.push(format!(
            "the local clock is {} s off Azure's (more than {MAX_SKEW_SECONDS} s): not removing {} credential(s) until it is fixed",
            observed.skew_seconds,
            plan.removals.len()
        ));
        plan.removals.clear();
    }

    // The two-password cap: a new credential needs a free slot after the removals.
    if rotate.is_some()
        && plan.blocked.is_none()
        && let Some(cap) = observed.password_cap
    {
        let remaining: Vec<&PasswordCredential> = observed
            .passwords
            .iter()
            .filter(|p| !plan.removals.iter().any(|r| r.key_id == p.key_id))
            .collect();
        if remaining.len() >= cap {
            let others: Vec<&&PasswordCredential> = remaining
                .iter()
                .filter(|p| published_key.as_deref() != Some(p.key_id.as_str()))
                .collect();
            let foreign = others.iter().find(|p| own_rotation_id(p).is_none());
            plan.blocked = Some(match foreign {
                Some(f) => Blocked::ForeignCredentialInSlot {
                    key_id: f.key_id.clone(),
                },
                None => {
                    let frees_at =
                        |p: &PasswordCredential| match superseded_since(history, &p.key_id) {
                            Some(since) => Some(since + std_to_time(policy.overlap)),
                            None => p
                                .start
                                .map(|s| s + std_to_time(policy.verify_timeout + ORPHAN_MARGIN)),
                        };
                    let until = others
                        .iter()
                        .filter_map(|p| frees_at(p))
                        .min()
                        .unwrap_or(now);
                    Blocked::WaitingForSlot { until }
                }
            });
        }
    }
    if plan.blocked.is_none() {
        plan.rotate = rotate;
    }
    plan
}

/// When `key_id` stopped being the published credential: the creation of the first version
/// after the last one that named it. `None` when no version named it, or the latest still does.
pub fn superseded_since(history: &[VersionInfo], key_id: &str) -> Option<OffsetDateTime> {
    let last = history
        .iter()
        .rposition(|v| key_of(v).is_some_and(|k| k.eq_ignore_ascii_case(key_id)))?;
    history.get(last + 1).and_then(|next| next.created)
}

/// Tags of a new published version.
pub fn tags(app_id: &str, key_id: &str, rotation_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TAG_MANAGED_BY.to_string(), TAG_MANAGED_BY_VALUE.to_string()),
        (TAG_CLIENT_ID.to_string(), app_id.to_string()),
        (TAG_KEY_ID.to_string(), key_id.to_string()),
        (TAG_ROTATION_ID.to_string(), rotation_id.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const DAY: Duration = Duration::from_secs(86_400);
    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    fn policy() -> PolicyView<'static> {
        PolicyView {
            instance: "prod",
            client: "dicom",
            renew_before: 30 * DAY,
            overlap: 7 * DAY,
            verify_timeout: Duration::from_secs(300),
            adopt: false,
            force: false,
        }
    }

    fn days(n: i64) -> time::Duration {
        time::Duration::days(n)
    }

    fn cred(
        key: &str,
        name: Option<&str>,
        start: OffsetDateTime,
        end: OffsetDateTime,
    ) -> PasswordCredential {
        PasswordCredential {
            key_id: key.into(),
            display_name: name.map(str::to_string),
            hint: Some("abc".into()),
            start: Some(start),
            end: Some(end),
        }
    }

    fn own(key: &str, rid: &str, start: OffsetDateTime, end: OffsetDateTime) -> PasswordCredential {
        cred(
            key,
            Some(&format!("secret-rotator:prod:dicom:{rid}")),
            start,
            end,
        )
    }

    fn version(ver: &str, key: &str, created: OffsetDateTime, exp: OffsetDateTime) -> VersionInfo {
        VersionInfo {
            version: ver.into(),
            created: Some(created),
            enabled: true,
            expires: Some(exp),
            tags: tags("app", key, "r"),
        }
    }

    fn observed(
        passwords: Vec<PasswordCredential>,
        versions: Option<Vec<VersionInfo>>,
    ) -> Observed {
        Observed {
            passwords,
            password_cap: None,
            versions,
            published_probe: None,
            abandoned: vec![],
            skew_seconds: 0,
            adopted: None,
        }
    }

    /// A client published 10 days ago, expiring in 80 days.
    fn healthy() -> Observed {
        observed(
            vec![own("k1", "r1", NOW - days(10), NOW + days(80))],
            Some(vec![version("v1", "k1", NOW - days(10), NOW + days(80))]),
        )
    }

    #[test]
    fn does_nothing_when_the_published_secret_is_valid_and_not_due() {
        let p = plan(&healthy(), &policy(), NOW);
        assert_eq!(p.rotate, None);
        assert!(p.removals.is_empty());
        assert_eq!(p.blocked, None);
        assert_eq!(p.renew_at, Some(NOW + days(50)));
    }

    #[test]
    fn rotates_when_no_secret_is_published() {
        let p = plan(&observed(vec![], None), &policy(), NOW);
        assert_eq!(p.rotate, Some(RotateReason::NoPublishedSecret));
    }

    #[test]
    fn rotates_when_the_published_secret_expires_within_renew_before() {
        let o = observed(
            vec![own("k1", "r1", NOW - days(70), NOW + days(20))],
            Some(vec![version("v1", "k1", NOW - days(70), NOW + days(20))]),
        );
        assert_eq!(
            plan(&o, &policy(), NOW).rotate,
            Some(RotateReason::ExpiresSoon { at: NOW + days(20) })
        );
    }

    #[test]
    fn rotates_when_the_published_secret_has_expired() {
        let o = observed(
            vec![own("k1", "r1", NOW - days(95), NOW - days(5))],
            Some(vec![version("v1", "k1", NOW - days(95), NOW - days(5))]),
        );
        assert_eq!(
            plan(&o, &policy(), NOW).rotate,
            Some(RotateReason::Expired { at: NOW - days(5) })
        );
    }

    #[test]
    fn takes_the_earlier_of_the_credential_end_and_the_version_exp() {
        let o = observed(
            vec![own("k1", "r1", NOW - days(10), NOW + days(10))],
            Some(vec![version("v1", "k1", NOW - days(10), NOW + days(80))]),
        );
        assert_eq!(
            plan(&o, &policy(), NOW).rotate,
            Some(RotateReason::ExpiresSoon { at: NOW + days(10) })
        );
    }

    #[test]
    fn rotates_when_forced_even_if_not_due() {
        let mut pol = policy();
        pol.force = true;
        assert_eq!(
            plan(&healthy(), &pol, NOW).rotate,
            Some(RotateReason::Forced)
        );
    }

    #[test]
    fn rotates_when_the_published_version_is_disabled() {
        let mut o = healthy();
        o.versions.as_mut().unwrap()[0].enabled = false;
        assert_eq!(
            plan(&o, &policy(), NOW).rotate,
            Some(RotateReason::PublishedVersionDisabled)
        );
    }

    #[test]
    fn refuses_an_unmanaged_vault_secret_unless_adopt_is_set() {
        let mut unmanaged = version("v0", "x", NOW - days(100), NOW + days(100));
        unmanaged.tags.clear();
        let o = observed(
            vec![cred("k0", Some("portal"), NOW - days(100), NOW + days(100))],
            Some(vec![unmanaged]),
        );
        let p = plan(&o, &policy(), NOW);
        assert_eq!(p.blocked, Some(Blocked::UnmanagedSecret));
        assert_eq!(p.rotate, None);
        let mut pol = policy();
        pol.adopt = true;
        assert_eq!(
            plan(&o, &pol, NOW).rotate,
            Some(RotateReason::AdoptingUnmanagedSecret)
        );
    }

    #[test]
    fn a_forced_rotation_does_not_override_an_unmanaged_secret() {
        let mut unmanaged = version("v0", "x", NOW - days(1), NOW + days(100));
        unmanaged.tags.clear();
        let mut pol = policy();
        pol.force = true;
        let p = plan(&observed(vec![], Some(vec![unmanaged])), &pol, NOW);
        assert_eq!(p.rotate, None);
        assert_eq!(p.blocked, Some(Blocked::UnmanagedSecret));
    }

    #[test]
    fn does_not_take_a_missing_published_credential_as_gone_while_reads_may_lag() {
        let o = observed(
            vec![],
            Some(vec![version(
                "v1",
                "k1",
                NOW - time::Duration::seconds(30),
                NOW + days(90),
            )]),
        );
        let p = plan(&o, &policy(), NOW);
        assert_eq!(p.rotate, None);
        assert!(p.notes.iter().any(|n| n.contains("not visible yet")));
    }

    #[test]
    fn rotates_when_the_published_credential_is_missing_and_its_value_is_rejected() {
        let mut o = observed(
            vec![],
            Some(vec![version(
                "v1",
                "k1",
                NOW - time::Duration::seconds(30),
                NOW + days(90),
            )]),
        );
        o.published_probe = Some(Probe::Rejected);
        assert_eq!(
            plan(&o, &policy(), NOW).rotate,
            Some(RotateReason::PublishedCredentialGone {
                key_id: "k1".into()
            })
        );
    }

    #[test]
    fn rotates_when_the_published_credential_has_been_missing_longer_than_the_lag_grace() {
        let o = observed(
            vec![],
            Some(vec![version("v1", "k1", NOW - days(2), NOW + days(90))]),
        );
        assert_eq!(
            plan(&o, &policy(), NOW).rotate,
            Some(RotateReason::PublishedCredentialGone {
                key_id: "k1".into()
            })
        );
    }

    #[test]
    fn keeps_a_missing_published_credential_whose_value_still_signs_in() {
        let mut o = observed(
            vec![],
            Some(vec![version("v1", "k1", NOW - days(2), NOW + days(90))]),
        );
        o.published_probe = Some(Probe::SignsIn);
        assert_eq!(plan(&o, &policy(), NOW).rotate, None);
    }

    #[test]
    fn retires_a_superseded_credential_after_overlap() {
        let o = observed(
            vec![
                own("k1", "r1", NOW - days(80), NOW + days(10)),
                own("k2", "r2", NOW - days(8), NOW + days(82)),
            ],
            Some(vec![
                version("v1", "k1", NOW - days(80), NOW + days(10)),
                version("v2", "k2", NOW - days(8), NOW + days(82)),
            ]),
        );
        let p = plan(&o, &policy(), NOW);
        assert_eq!(
            p.removals,
            vec![Removal {
                key_id: "k1".into(),
                reason: RemovalReason::Superseded {
                    since: NOW - days(8)
                }
            }]
        );
    }

    #[test]
    fn keeps_a_superseded_credential_within_overlap() {
        let o = observed(
            vec![
                own("k1", "r1", NOW - days(80), NOW + days(10)),
                own("k2", "r2", NOW - days(3), NOW + days(87)),
            ],
            Some(vec![
                version("v1", "k1", NOW - days(80), NOW + days(10)),
                version("v2", "k2", NOW - days(3), NOW + days(87)),
            ]),
        );
        assert!(plan(&o, &policy(), NOW).removals.is_empty());
    }

    #[test]
    fn never_removes_a_credential_it_does_not_own() {
        let mut o = healthy();
        o.passwords.push(cred(
            "f1",
            Some("made in the portal"),
            NOW - days(400),
            NOW - days(1),
        ));
        o.passwords.push(cred(
            "f2",
            Some("secret-rotator:other-instance:dicom:r9"),
            NOW - days(400),
            NOW + days(1),
        ));
        o.passwords.push(cred(
            "f3",
            Some("secret-rotator:prod:other-client:r9"),
            NOW - days(400),
            NOW + days(1),
        ));
        o.passwords
            .push(cred("f4", None, NOW - days(400), NOW + days(1)));
        assert!(plan(&o, &policy(), NOW).removals.is_empty());
    }

    #[test]
    fn never_removes_the_published_credential() {
        let mut pol = policy();
        pol.overlap = Duration::ZERO;
        let o = observed(
            vec![own("k1", "r1", NOW - days(400), NOW - days(1))],
            Some(vec![version("v1", "k1", NOW - days(400), NOW - days(1))]),
        );
        assert!(plan(&o, &pol, NOW).removals.is_empty());
    }

    #[test]
    fn removes_an_orphan_older_than_verify_timeout_plus_a_minute() {
        let mut o = healthy();
        o.passwords.push(own(
            "k9",
            "r9",
            NOW - time::Duration::minutes(7),
            NOW + days(90),
        ));
        let p = plan(&o, &policy(), NOW);
        assert_eq!(
            p.removals,
            vec![Removal {
                key_id: "k9".into(),
                reason: RemovalReason::Orphan {
                    rotation_id: "r9".into()
                }
            }]
        );
    }

    #[test]
    fn leaves_a_young_unpublished_credential_that_may_be_an_attempt_in_flight() {
        let mut o = healthy();
        o.passwords.push(own(
            "k9",
            "r9",
            NOW - time::Duration::minutes(5),
            NOW + days(90),
        ));
        assert!(plan(&o, &policy(), NOW).removals.is_empty());
    }

    #[test]
    fn removes_the_credential_of_an_abandoned_attempt_at_once() {
        let mut o = healthy();
        o.passwords.push(own(
            "k9",
            "r9",
            NOW - time::Duration::seconds(10),
            NOW + days(90),
        ));
        o.abandoned = vec!["r9".into()];
        let p = plan(&o, &policy(), NOW);
        assert_eq!(
            p.removals,
            vec![Removal {
                key_id: "k9".into(),
                reason: RemovalReason::Abandoned {
                    rotation_id: "r9".into()
                }
            }]
        );
    }

    #[test]
    fn a_clock_skewed_by_more_than_two_minutes_blocks_removals_but_not_rotation() {
        let mut o = observed(
            vec![
                own("k1", "r1", NOW - days(80), NOW + days(10)),
                own("k2", "r2", NOW - days(8), NOW + days(82)),
                own("k9", "r9", NOW - days(1), NOW + days(89)),
            ],
            Some(vec![
                version("v1", "k1", NOW - days(80), NOW + days(10)),
                version("v2", "k2", NOW - days(8), NOW + days(20)),
            ]),
        );
        o.skew_seconds = 180;
        let p = plan(&o, &policy(), NOW);
        assert!(p.removals.is_empty());
        assert!(p.rotate.is_some());
        assert!(p.notes.iter().any(|n| n.contains("180 s off")));
    }

    #[test]
    fn with_two_password_cap_a_foreign_credential_in_the_other_slot_blocks_rotation() {
        let mut o = observed(
            vec![
                own("k1", "r1", NOW - days(70), NOW + days(20)),
                cred("f1", Some("portal"), NOW - days(70), NOW + days(300)),
            ],
            Some(vec![version("v1", "k1", NOW - days(70), NOW + days(20))]),
        );
        o.password_cap = Some(2);
        let p = plan(&o, &policy(), NOW);
        assert_eq!(p.rotate, None);
        assert_eq!(
            p.blocked,
            Some(Blocked::ForeignCredentialInSlot {
                key_id: "f1".into()
            })
        );
    }

    #[test]
    fn with_two_password_cap_a_predecessor_within_overlap_makes_rotation_wait() {
        let mut o = observed(
            vec![
                own("k1", "r1", NOW - days(70), NOW + days(20)),
                own("k2", "r2", NOW - days(2), NOW + days(25)),
            ],
            Some(vec![
                version("v1", "k1", NOW - days(70), NOW + days(20)),
                version("v2", "k2", NOW - days(2), NOW + days(25)),
            ]),
        );
        o.password_cap = Some(2);
        let p = plan(&o, &policy(), NOW);
        assert_eq!(
            p.blocked,
            Some(Blocked::WaitingForSlot {
                until: NOW + days(5)
            })
        );
        assert!(!p.blocked.unwrap().is_failure());
    }

    #[test]
    fn with_two_password_cap_retiring_first_frees_the_slot() {
        let mut o = observed(
            vec![
                own("k1", "r1", NOW - days(90), NOW + days(1)),
                own("k2", "r2", NOW - days(60), NOW + days(20)),
            ],
            Some(vec![
                version("v1", "k1", NOW - days(90), NOW + days(1)),
                version("v2", "k2", NOW - days(60), NOW + days(20)),
            ]),
        );
        o.password_cap = Some(2);
        let p = plan(&o, &policy(), NOW);
        assert_eq!(p.removals.len(), 1);
        assert_eq!(
            p.rotate,
            Some(RotateReason::ExpiresSoon { at: NOW + days(20) })
        );
        assert_eq!(p.blocked, None);
    }

    #[test]
    fn superseded_time_is_the_creation_of_the_next_version() {
        let h = vec![
            version("v1", "k1", NOW - days(30), NOW),
            version("v2", "k2", NOW - days(20), NOW),
            version("v3", "k2", NOW - days(10), NOW),
        ];
        assert_eq!(superseded_since(&h, "k1"), Some(NOW - days(20)));
        assert_eq!(superseded_since(&h, "k2"), None);
        assert_eq!(superseded_since(&h, "k9"), None);
    }

    #[test]
    fn retires_the_adopted_credential_after_overlap_when_it_was_identified() {
        let mut unmanaged = version("v0", "x", NOW - days(100), NOW + days(100));
        unmanaged.tags.clear();
        let mut o = observed(
            vec![
                cred("p1", Some("portal"), NOW - days(100), NOW + days(100)),
                own("k1", "r1", NOW - days(8), NOW + days(82)),
            ],
            Some(vec![
                unmanaged,
                version("v1", "k1", NOW - days(8), NOW + days(82)),
            ]),
        );
        o.adopted = Some(Adopted {
            key_id: "p1".into(),
            superseded_since: NOW - days(8),
        });
        let mut pol = policy();
        pol.adopt = true;
        assert_eq!(
            plan(&o, &pol, NOW).removals,
            vec![Removal {
                key_id: "p1".into(),
                reason: RemovalReason::Adopted {
                    since: NOW - days(8)
                }
            }]
        );
        o.adopted = Some(Adopted {
            key_id: "p1".into(),
            superseded_since: NOW - days(2),
        });
        assert!(
            plan(&o, &pol, NOW).removals.is_empty(),
            "still within overlap"
        );
        pol.adopt = false;
        o.adopted = Some(Adopted {
            key_id: "p1".into(),
            superseded_since: NOW - days(8),
        });
        assert!(
            plan(&o, &pol, NOW).removals.is_empty(),
            "only with adopt = true"
        );
    }

    #[test]
    fn says_when_the_next_superseded_credential_can_be_retired() {
        let o = observed(
            vec![
                own("k1", "r1", NOW - days(80), NOW + days(10)),
                own("k2", "r2", NOW - days(3), NOW + days(87)),
            ],
            Some(vec![
                version("v1", "k1", NOW - days(80), NOW + days(10)),
                version("v2", "k2", NOW - days(3), NOW + days(87)),
            ]),
        );
        assert_eq!(
            plan(&o, &policy(), NOW).next_retirement,
            Some(NOW + days(4))
        );
        assert_eq!(plan(&healthy(), &policy(), NOW).next_retirement, None);
    }
}

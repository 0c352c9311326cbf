//! The planner against arbitrary observed state: whatever it observes, it never removes the
//! published credential or one it does not own. (The parsers' property tests are next to the
//! parsers: `src/config/tests.rs`, `src/azure/parse_properties.rs`.)

use std::time::Duration;

use proptest::prelude::*;
use secret_rotator::azure::graph::PasswordCredential;
use secret_rotator::azure::keyvault::VersionInfo;
use secret_rotator::rotation::plan::{
    AbandonedAttempt, Blocked, FormerLocation, Observed, PolicyView, Probe, RemovalReason,
    VaultSecret, plan, tags,
};
use time::OffsetDateTime;

/// Key ids as Entra writes them, for short names.
fn key(name: &str) -> String {
    let n = name
        .bytes()
        .fold(7u32, |a, b| a.wrapping_mul(31) + u32::from(b));
    format!("{n:08x}-0000-4000-8000-000000000000")
}

/// This client's location tag in the tests, and rotation ids made for it or elsewhere.
const LOC: &str = "0a1b2c3d";
fn rid(n: u32, here: bool) -> String {
    format!("{}-{n:032x}", if here { LOC } else { "ffffffff" })
}

fn credential() -> impl Strategy<Value = PasswordCredential> {
    (
        prop_oneof![Just("k1"), Just("k2"), Just("k3"), Just("k4"), Just("f1")],
        prop_oneof![
            Just(Some(format!("secret-rotator:prod:dicom:{}", rid(1, true)))),
            Just(Some(format!("secret-rotator:prod:dicom:{}", rid(2, true)))),
            Just(Some(format!("secret-rotator:prod:dicom:{}", rid(3, false)))),
            Just(Some("secret-rotator:prod:dicom:r1".to_string())),
            Just(Some(format!("secret-rotator:other:dicom:{}", rid(1, true)))),
            Just(Some(format!("secret-rotator:prod:other:{}", rid(1, true)))),
            Just(Some("portal".to_string())),
            Just(None),
        ],
        -400i64..400,
        -400i64..400,
        prop_oneof![Just(0i64), -20i64..0],
        prop_oneof![Just("abc"), Just("xyz")],
    )
        .prop_map(|(k, name, start, end, minutes, hint)| PasswordCredential {
            key_id: key(k),
            display_name: name,
            hint: Some(hint.into()),
            // Whole days, or minutes before one (a credential within the orphan age).
            start: Some(now() + time::Duration::days(start) + time::Duration::minutes(minutes)),
            end: Some(now() + time::Duration::days(end)),
        })
}

fn version() -> impl Strategy<Value = VersionInfo> {
    (
        prop_oneof![Just("k1"), Just("k2"), Just("k3"), Just("f1")],
        any::<bool>(),
        any::<bool>(),
        -400i64..0,
        -100i64..400,
        prop_oneof![
            Just(None),
            Just(Some("abc".to_string())),
            Just(Some("xyz".to_string()))
        ],
    )
        .prop_map(
            |(k, managed, enabled, created, exp, value_hint)| VersionInfo {
                version: format!("v{created}"),
                created: Some(now() + time::Duration::days(created)),
                updated: None,
                enabled,
                expires: Some(now() + time::Duration::days(exp)),
                tags: if managed {
                    tags("app", &key(k), "r")
                } else {
                    Default::default()
                },
                value_hint,
            },
        )
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_planner_never_removes_the_published_credential_or_a_foreign_one(
        passwords in proptest::collection::vec(credential(), 0..6),
        versions in proptest::collection::vec(version(), 0..5),
        latest_pick in any::<prop::sample::Index>(),
        vault_kind in 0u8..3,
        cap in proptest::option::of(Just(2usize)),
        probe in proptest::option::of(prop_oneof![Just(Probe::SignsIn), Just(Probe::Rejected), Just(Probe::Inconclusive)]),
        abandoned in proptest::collection::vec((1u32..4, any::<bool>(), any::<bool>()), 0..2),
        skew in -300i64..300,
        former_versions in proptest::collection::vec(version(), 0..4),
        former_pick in any::<prop::sample::Index>(),
        former_kind in 0u8..4,
        adopt in any::<bool>(),
        force in any::<bool>(),
        revoke_previous in any::<bool>(),
        arrived_days in proptest::option::of(0i64..400),
    ) {
        // Graph key ids are unique within an application.
        let mut passwords = passwords;
        let mut seen = std::collections::HashSet::new();
        passwords.retain(|p| seen.insert(p.key_id.clone()));
        let mut versions = versions;
        versions.sort_by_key(|x| x.created);
        let vault = match (vault_kind, versions.is_empty()) {
            (0, false) => {
                let latest = versions[latest_pick.index(versions.len())].clone();
                VaultSecret::Present { history: versions.clone(), latest }
            }
            (1, _) => VaultSecret::SoftDeleted,
            _ => VaultSecret::Absent,
        };
        // A location the client has left (the tag of `rid(_, false)`), as a read showed it, or
        // none (the store does not know it, or the read failed).
        let mut former_versions = former_versions;
        former_versions.sort_by_key(|x| x.created);
        let former_secret = match (former_kind, former_versions.is_empty()) {
            (0, false) => Some(VaultSecret::Present { latest: former_versions[former_pick.index(former_versions.len())].clone(), history: former_versions.clone() }),
            (1, _) => Some(VaultSecret::SoftDeleted),
            (2, _) => Some(VaultSecret::Absent),
            _ => None,
        };
        let former: Vec<FormerLocation> = former_secret.iter().map(|secret| FormerLocation { tag: "ffffffff".into(), name: "old".into(), vault_url: "https://kv.vault.azure.net/".parse().unwrap(), secret_name: "old".into(), secret: secret.clone() }).collect();
        let abandoned = abandoned.into_iter().map(|(n, here, reached)| AbandonedAttempt { rotation_id: rid(n, here), reached_publishing: reached }).collect();
        let observed = Observed { passwords: passwords.clone(), password_cap: cap, vault: vault.clone(), location: LOC.into(), app_id: "app".into(), location_name: "secret".into(), published_probe: probe, abandoned, skew_seconds: skew, adopted: None, adopted_now: None, former: former.clone(), former_unread: vec![], arrived_at: arrived_days.map(|d| now() - time::Duration::days(d)), latest_written_with: None, history_listed: true, known_published: vec![] };
        let policy = PolicyView { instance: "prod", client: "dicom", renew_before: Duration::from_secs(30 * 86400), overlap: Duration::from_secs(7 * 86400), verify_timeout: Duration::from_secs(300), adopt, force, revoke_previous, revoke_target: None };
        let p = plan(&observed, &policy, now());
        let published = match &vault {
            VaultSecret::Present { latest, .. } => latest.tags.get("managed-by").and(latest.tags.get("key-id").cloned()),
            _ => None,
        };
        let own = |k: &str| passwords.iter().filter(|c| c.key_id == k).all(|c| c.display_name.as_deref().is_some_and(|d| d.starts_with("secret-rotator:prod:dicom:")));
        for r in &p.removals {
            prop_assert!(Some(&r.key_id) != published.as_ref(), "removed the published credential {}", r.key_id);
            prop_assert!(own(&r.key_id), "removed a credential it does not own: {}", r.key_id);
            if r.former_tag().is_some() {
                // Evidence from a location the client left: a read of it that found the secret,
                // never what consumers there read, never while the client's own is soft-deleted.
                let Some(VaultSecret::Present { latest, .. }) = &former_secret else {
                    return Err(TestCaseError::fail(format!("removed {} ({}) without a read of its former location", r.key_id, r.reason)));
                };
                prop_assert!(latest.tags.get("key-id") != Some(&r.key_id), "removed {}, what the former location serves", r.key_id);
                prop_assert!(vault != VaultSecret::SoftDeleted, "removed {} while the client's secret is soft-deleted", r.key_id);
            } else if !matches!(vault, VaultSecret::Present { .. }) {
                prop_assert!(matches!(r.reason, RemovalReason::Abandoned { .. }), "removed {} ({}) without a history to prove it unpublished", r.key_id, r.reason);
            }
            if let RemovalReason::Superseded { since } | RemovalReason::Migrated { since } | RemovalReason::MigratedElsewhere { since, .. } | RemovalReason::SupersededAtFormer { since, .. } = r.reason && skew.abs() > 120 {
                prop_assert!(since + time::Duration::days(7) <= now() - time::Duration::seconds(skew.abs()), "a skewed clock removed {} early", r.key_id);
            }
        }
        if let Some(k) = &p.revoke {
            prop_assert!(own(k), "revoking a credential it does not own: {k}");
            // What is published here; or, with nothing published here, what the location the
            // client left serves (a revocation during a move).
            let served_there = match &former_secret {
                Some(VaultSecret::Present { latest, .. }) => latest.tags.get("key-id"),
                _ => None,
            };
            prop_assert!(Some(k) == published.as_ref() || (published.is_none() && Some(k) == served_there), "revoking {k}, neither published here nor served where the client was");
        }
        if p.blocked.is_some() {
            prop_assert!(p.rotate.is_none());
        }
        if let Some(Blocked::SlotHeldUnproven { key_id, .. }) = &p.blocked {
            // Only a person frees the slot: with the same reads (and the arrival the store
            // records at this reconcile), no later time brings a removal that waiting for it
            // would have freed the slot with.
            let replay = Observed { arrived_at: observed.arrived_at.or(Some(now())), ..observed.clone() };
            for later in [time::Duration::hours(1), time::Duration::days(8), time::Duration::days(400)] {
                let then = plan(&replay, &policy, now() + later);
                let freed: Vec<_> = then.removals.iter().filter(|r| !p.removals.iter().any(|n| n.key_id == r.key_id)).collect();
                prop_assert!(freed.is_empty(), "blocked naming {key_id} for removal by hand, yet {later} later {freed:?}");
            }
        }
        if let Some(Blocked::WaitingForSlot { until }) = p.blocked {
            prop_assert!(until > now(), "a wait that does not land in the future: {until}");
            // The wait ends: at that time, with the same reads (and the arrival the store
            // records at this reconcile), a rule retires a credential or the slot is free. (As
            // Key Vault serves them: what GET returns is the newest version.)
            let newest = |s: &VaultSecret| match s {
                VaultSecret::Present { history, latest } => history.iter().all(|v| v.created <= latest.created),
                _ => true,
            };
            prop_assume!(newest(&vault) && former_secret.as_ref().is_none_or(newest));
            let replay = Observed { arrived_at: observed.arrived_at.or(Some(now())), ..observed.clone() };
            let then = plan(&replay, &policy, until);
            prop_assert!(
                !then.removals.is_empty() || !matches!(then.blocked, Some(Blocked::WaitingForSlot { .. })),
                "waited for the slot until {until}, and then nothing is removed: {:?}", then.blocked
            );
        }
    }
}

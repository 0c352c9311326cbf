//! The decision: a pure function of (observed state, policy, now). No I/O, no async, no clock.
//!
//! It says whether to rotate and why, which of this installation's credentials to remove and
//! why, and what stops a rotation. Every decision carries its reason, which becomes the log
//! message and the `plan` output.
//!
//! Over 600 lines: more than half of it is the planner's table tests, each named as a sentence
//! and kept beside the decision they pin.

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
/// A clock further than this from Azure's is reported (fix it: NTP). Removals wait out any skew.
pub const MAX_SKEW_SECONDS: i64 = 120;
/// What removals wait beyond the measured skew. Azure's times are whole seconds: a version's
/// `created` is rounded down (the write may have landed up to a second later), and so is the
/// `Date` the skew is measured from (the skew may be up to a second more than measured). With
/// this, both roundings can only make a removal late, never early.
pub const CLOCK_RESOLUTION: time::Duration = time::Duration::seconds(2);
/// An orphan is older than `verify_timeout` plus this: longer than any attempt can still be
/// publishing after its verification (a 30 s publish budget, a 60 s history read, a second
/// write, and slack), so that another process's slow attempt is never taken for one.
pub const ORPHAN_MARGIN: Duration = Duration::from_secs(300);

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
    /// The vault secret at the client's location, from reads that succeeded.
    pub vault: VaultSecret,
    /// The client's location tag (see [`location_tag`]).
    pub location: String,
    /// The application (client) id, as the `client-id` tag names it.
    pub app_id: String,
    /// The location in words ("secret S in vault V"), for messages.
    pub location_name: String,
    /// Signing in with the published value, done only when its key id is missing from the list.
    pub published_probe: Option<Probe>,
    /// This client's attempts that a dead process left behind (intents in the store whose lock
    /// was free).
    pub abandoned: Vec<AbandonedAttempt>,
    /// Local clock minus Azure's, in seconds.
    pub skew_seconds: i64,
    /// With `adopt`: the credential the adopted vault value belongs to, identified with
    /// certainty (its hint matches and it signs in with that value), once its successor has
    /// been published for longer than `overlap`.
    pub adopted: Option<Adopted>,
    /// With `revoke_previous` on an unmanaged published secret: the credential its value belongs
    /// to, identified now by hint and sign-in.
    pub adopted_now: Option<String>,
    /// Locations the client has left (a changed `key_vault_url` or `secret_name`) that own
    /// credentials were made for, each as a read that succeeded showed it. A location that
    /// could not be read, or whose address the store does not know, is not here: no evidence.
    pub former: Vec<FormerLocation>,
    /// Locations the client has left whose address the store holds but that were not read this
    /// time (the read failed, or the host is not one the daemon sends its token to), as (tag,
    /// name in words): no evidence either way, but not an unknown address.
    pub former_unread: Vec<(String, String)>,
    /// Since when the client has been at its location (the store's record of its arrival,
    /// later than when it left any other); `None` when it arrives now or the store does not
    /// know, which the planner takes as `now`. It only ever delays a removal.
    pub arrived_at: Option<OffsetDateTime>,
    /// The credential whose value this installation wrote as the latest version, as its store
    /// recorded the write (`Store::published_credential`); `None` without such a record.
    pub latest_written_with: Option<String>,
    /// Whether `vault`'s history is a listing of its versions. `false` when `observe` skipped
    /// the listing ([`history_matters`] said it cannot change the plan): the history is then
    /// the latest version alone, and an own credential it does not name is judged by
    /// [`superseded_by_latest`], never as named by no version.
    pub history_listed: bool,
    /// Own credentials this installation's store knows it published (a rotation's record, or
    /// the status row's published credential: what the last reconcile saw), each with when a
    /// read first showed it named by no version at the client's location. Read only when an
    /// own credential besides the one the latest version names is on the application and a
    /// version is published here or a location the client left was read (empty otherwise; a
    /// store that cannot be read fails the reconcile instead). At a location the client left,
    /// one of them named by no version there is not taken for an attempt that never published
    /// there (`at_former`): the migration rule retires it.
    pub known_published: Vec<KnownPublished>,
}

/// An own credential the store knows was published (see [`Observed::known_published`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPublished {
    pub key_id: String,
    /// When a read of the client's location first showed it named by no version, as the store
    /// recorded it (the daemon's clock, or Azure's when ours is behind it: no earlier than that read); `None`: not yet.
    pub unpublished_since: Option<OffsetDateTime>,
    /// When a read last showed it so (each reconcile that holds it writes it), on Azure's
    /// clock (the daemon's minus the skew it measured then); `None` with `unpublished_since`.
    pub unpublished_last_seen: Option<OffsetDateTime>,
    /// How long after `unpublished_last_seen` a read still continues the record: from the
    /// client's schedule around that time (`schedule::tolerated_gap`: two of its runs, their
    /// jitter and a slack). A read after a longer gap (the daemon down, another HA replica
    /// leading, a state dir restored from a backup) may have missed the version coming back
    /// and being discarded again: the hold counts from that read, as if first seen then.
    pub tolerance: Duration,
}

impl KnownPublished {
    /// When a read first showed it named by no version, if the record still holds for a read
    /// at `seen_now` (no later than `unpublished_last_seen` + `tolerance`); `None`: not yet, or
    /// the record's continuity is broken and the hold counts from this read.
    fn unnamed_since(&self, seen_now: OffsetDateTime) -> Option<OffsetDateTime> {
        let continuous = self
            .unpublished_last_seen
            .is_some_and(|last| seen_now - last <= std_to_time(self.tolerance));
        self.unpublished_since.filter(|_| continuous)
    }
}

/// A location the client has left, read because own credentials were made for it.
#[derive(Debug, Clone, PartialEq)]
pub struct FormerLocation {
    /// Its location tag, as the credentials' rotation ids carry it.
    pub tag: String,
    /// In words ("secret S in vault V"), for messages.
    pub name: String,
    /// Its address, for the executor's read just before a removal.
    pub vault_url: url::Url,
    pub secret_name: String,
    pub secret: VaultSecret,
}

/// The vault secret at the client's location, as reads that succeeded showed it. A read that
/// failed is not an observation: the reconcile stops before deciding anything.
#[derive(Debug, Clone, PartialEq)]
pub enum VaultSecret {
    /// It exists: every version (oldest first, by `created`) and the one `GET` returns, which
    /// is what consumers read.
    Present {
        history: Vec<VersionInfo>,
        latest: VersionInfo,
    },
    /// No secret by that name, and none soft-deleted.
    Absent,
    /// The name is soft-deleted: it can be neither read nor written until someone recovers or
    /// purges it.
    SoftDeleted,
}

/// An attempt of a process that is gone, from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedAttempt {
    pub rotation_id: String,
    /// Whether it may have sent its value to Key Vault.
    pub reached_publishing: bool,
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
    pub revoke_previous: bool,
    /// The key id published when a revocation was asked (see `Options::revoke_target`).
    pub revoke_target: Option<&'a str>,
}

/// Why a rotation happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateReason {
    Forced,
    NoPublishedSecret,
    AdoptingUnmanagedSecret,
    PublishedVersionDisabled,
    PublishedCredentialGone {
        key_id: String,
    },
    PublishedWithoutKeyId,
    Expired {
        at: OffsetDateTime,
    },
    ExpiresSoon {
        at: OffsetDateTime,
    },
    /// A drift check found this (`src/drift.rs`), and `repair = "rotate"`.
    DriftRepair {
        kind: String,
    },
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
            RotateReason::DriftRepair { kind } => {
                write!(f, "repairing drift ({kind}; repair = rotate)")
            }
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
    /// Made for another location (the client moved); a secret published here since has been
    /// there for longer than `overlap`.
    Migrated { since: OffsetDateTime },
    /// Made for a location the client has left; a secret published since at another location
    /// it has also left (`tag`, `name` in words) has been there for longer than `overlap`, and
    /// the client left before that too.
    MigratedElsewhere {
        since: OffsetDateTime,
        tag: String,
        name: String,
    },
    /// Made for a location the client has left, and superseded there for longer than
    /// `overlap`: a read of that location (`tag`, `name` in words) shows it.
    SupersededAtFormer {
        since: OffsetDateTime,
        tag: String,
        name: String,
    },
    /// Made for a location the client has left after that secret's history began, named by
    /// no version of it, and older than the orphan age.
    OrphanAtFormer {
        rotation_id: String,
        tag: String,
        name: String,
    },
    /// Published (the store recorded it), then named by no version of the secret at the
    /// client's location since `since` (when a read first showed it so: a restore from a
    /// backup discards the versions written after the backup), for longer than `overlap`.
    Unpublished {
        rotation_id: String,
        since: OffsetDateTime,
    },
    /// The previously published credential, revoked at once on request (a leaked secret).
    Revoked,
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
            RemovalReason::Migrated { since } => write!(
                f,
                "made for the client's previous vault or secret name; a secret published at the new location since {} has been there longer than overlap",
                rfc3339(*since)
            ),
            RemovalReason::MigratedElsewhere { since, name, .. } => write!(
                f,
                "made for a location the client has left; a secret it published since at {name}, another location it has left, has been there since {} (longer than overlap)",
                rfc3339(*since)
            ),
            RemovalReason::SupersededAtFormer { since, name, .. } => write!(
                f,
                "made for the client's previous location, {name}, and superseded there since {} (longer than overlap)",
                rfc3339(*since)
            ),
            RemovalReason::OrphanAtFormer {
                rotation_id, name, ..
            } => write!(
                f,
                "orphan of attempt {rotation_id}: never published at the client's previous location, {name}"
            ),
            RemovalReason::Unpublished { rotation_id, since } => write!(
                f,
                "published by attempt {rotation_id}, and named by no version of the vault secret since {} (a restore from a backup?), longer than overlap",
                rfc3339(*since)
            ),
            RemovalReason::Revoked => write!(f, "revoked at once on request (revoke_previous)"),
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
            RemovalReason::Orphan { .. }
                | RemovalReason::OrphanAtFormer { .. }
                | RemovalReason::Abandoned { .. }
        )
    }

    /// Whether this removal's evidence is that no version at the client's location names the
    /// credential: the fresh read before it lists the versions again.
    pub fn needs_history(&self) -> bool {
        matches!(
            self.reason,
            RemovalReason::Orphan { .. } | RemovalReason::Unpublished { .. }
        )
    }

    /// The location the client has left whose read is this removal's evidence (its tag).
    pub fn former_tag(&self) -> Option<&str> {
        match &self.reason {
            RemovalReason::SupersededAtFormer { tag, .. }
            | RemovalReason::MigratedElsewhere { tag, .. }
            | RemovalReason::OrphanAtFormer { tag, .. } => Some(tag),
            _ => None,
        }
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
    /// The two-password cap is reached; the other slot frees when a rule retires its
    /// credential (its overlap ends, or an orphan reaches its age).
    WaitingForSlot { until: OffsetDateTime },
    /// The two-password cap is reached and the other slot holds a credential of this client
    /// that was published and that no version names now (a restore of the vault secret from a
    /// backup): consumers may have read it until then, so it stays until `until`, `overlap`
    /// after a read first showed it unnamed.
    SlotHeldUnpublished {
        key_id: String,
        until: OffsetDateTime,
    },
    /// The two-password cap is reached and the other slot holds a credential of this client
    /// that a version written by someone else may hold the value of (the last one published,
    /// under a disabled version on top; or one no version names, under a version whose value
    /// is unknown). No time frees it: only a person can.
    SlotKeptUnderHandWrittenVersion {
        key_id: String,
        latest_disabled: bool,
    },
    /// The two-password cap is reached and the other slot holds a credential of this client
    /// that no read can prove unused or time: made for a location that holds no secret (a
    /// process stopped while publishing it, or the secret was purged), or for one the client
    /// left with nothing published where it went to time its overlap. No time frees it: only a
    /// person can. `made_for` says where, in words.
    SlotHeldUnproven { key_id: String, made_for: String },
    /// The two-password cap is reached and the removal planned to free the other slot did not
    /// happen (Graph refused it, or the fresh read before it proved nothing): the rotation
    /// waits rather than ask Entra for a third password. Set by the executor, not the planner.
    SlotNotFreed { key_id: String, why: String },
    /// The vault secret's name is soft-deleted: nothing can be published until it is recovered
    /// or purged.
    SecretSoftDeleted { secret: String },
    /// `revoke_previous` was asked for, but the previous credential is not provably this
    /// client's.
    RevokeRefused { reason: String },
    /// The vault secret's latest version was published for another application: two clients
    /// (in different configs) point at one secret.
    SecretOfAnotherApp { secret: String, client_id: String },
    /// A renewal outside the client's change windows (or in a freeze) waits until `until`: the
    /// next opening, or the expiry deadline if that comes first (`window.rs`).
    WaitingForWindow {
        until: OffsetDateTime,
        opens_at: Option<OffsetDateTime>,
        deadline: Option<OffsetDateTime>,
        policy: String,
    },
    /// `daemon.max_rotations_per_hour` is used up; a slot frees at `until`.
    WaitingForBudget {
        until: OffsetDateTime,
        used: u32,
        max: u32,
    },
    /// Drift that only a person can repair, or `repair = "alert"` (`src/drift.rs`): what was
    /// found and what to do.
    Drift { message: String },
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
                "the application allows 2 passwords; the other slot frees at {}, when a rule can retire the credential in it (superseded past overlap, or an orphan past its age)",
                rfc3339(*until)
            ),
            Blocked::SlotHeldUnpublished { key_id, until } => write!(
                f,
                "the application allows 2 passwords and credential {key_id} of secret-rotator holds the other slot: it was published, and no version of the vault secret names it any more (restored from a backup?); consumers may have read it until then, so it stays until {} (overlap after that) and the rotation waits; if no consumer uses it, remove it by hand to rotate sooner",
                rfc3339(*until)
            ),
            Blocked::SlotKeptUnderHandWrittenVersion {
                key_id,
                latest_disabled: true,
            } => write!(
                f,
                "the application allows 2 passwords and credential {key_id} of secret-rotator holds the other slot: the latest version of the vault secret was written by someone else and is disabled, so whether consumers still need {key_id} cannot be told; enable that version (with adopt = true it is then taken over), or remove one of the two credentials by hand once its consumers no longer use it"
            ),
            Blocked::SlotKeptUnderHandWrittenVersion {
                key_id,
                latest_disabled: false,
            } => write!(
                f,
                "the application allows 2 passwords and credential {key_id} of secret-rotator holds the other slot: a version of the vault secret written by someone else may hold its value, so consumers may still use it; remove one of the two credentials by hand once its consumers no longer use it"
            ),
            Blocked::SlotHeldUnproven { key_id, made_for } => write!(
                f,
                "the application allows 2 passwords and credential {key_id} of secret-rotator, made for {made_for}, holds the other slot; no read can prove that no consumer uses it, and nothing published where the client is times its overlap, so no time frees the slot: remove it by hand once no consumer uses it (then reload, or wait for the next attempt, and a secret is published)"
            ),
            Blocked::SlotNotFreed { key_id, why } => write!(
                f,
                "the application allows 2 passwords and credential {key_id}, due for removal to free the other slot, was not removed ({why}); the rotation waits for the slot and is tried again"
            ),
            Blocked::SecretSoftDeleted { secret } => write!(
                f,
                "{secret} is soft-deleted: recover it (if consumers still need it) or purge it; nothing is removed or published until then"
            ),
            Blocked::RevokeRefused { reason } => {
                write!(f, "refusing to revoke the previous credential: {reason}")
            }
            Blocked::SecretOfAnotherApp { secret, client_id } => write!(
                f,
                "{secret} is published for another application (client-id {client_id}); point this client at its own secret"
            ),
            Blocked::WaitingForWindow {
                until,
                opens_at,
                deadline,
                policy,
            } => {
                write!(f, "waiting for window until {} ({policy})", rfc3339(*until))?;
                match (opens_at, deadline) {
                    (Some(o), Some(d)) if d < o => write!(
                        f,
                        "; it rotates then regardless: the published secret will be within renew_before/2 of its expiry"
                    ),
                    (None, Some(_)) => write!(
                        f,
                        "; no window opens before the published secret is within renew_before/2 of its expiry, and it rotates then"
                    ),
                    (None, None) => write!(f, "; no window opens within two years"),
                    _ => Ok(()),
                }
            }
            Blocked::WaitingForBudget { until, used, max } => write!(
                f,
                "waiting for the rotation budget until {} ({used} of {max} rotations in the last hour, daemon.max_rotations_per_hour)",
                rfc3339(*until)
            ),
            Blocked::Drift { message } => write!(f, "drift: {message}"),
        }
    }
}

impl Blocked {
    /// A wait is not a failure: the published secret is still valid.
    pub fn is_failure(&self) -> bool {
        !matches!(
            self,
            Blocked::WaitingForSlot { .. }
                | Blocked::SlotHeldUnpublished { .. }
                | Blocked::WaitingForWindow { .. }
                | Blocked::WaitingForBudget { .. }
        )
    }

    /// When a wait ends and the client should be reconciled again.
    pub fn wait_until(&self) -> Option<OffsetDateTime> {
        match self {
            Blocked::WaitingForSlot { until }
            | Blocked::SlotHeldUnpublished { until, .. }
            | Blocked::WaitingForWindow { until, .. }
            | Blocked::WaitingForBudget { until, .. } => Some(*until),
            _ => None,
        }
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
    /// With `revoke_previous`: the previously published credential, removed at once after the
    /// new secret is published.
    pub revoke: Option<String>,
    pub blocked: Option<Blocked>,
    pub published: Option<Published>,
    /// When the published secret enters `renew_before`.
    pub renew_at: Option<OffsetDateTime>,
    /// When the next superseded credential's overlap ends (it can be retired then).
    pub next_retirement: Option<OffsetDateTime>,
    /// Things worth saying that need no action.
    pub notes: Vec<String>,
    /// Own credentials kept because the store knows they were published and a listing shows
    /// no version naming them now (a restore of the vault secret from a backup): until
    /// `overlap` after a read first showed that. The executor records that time for those
    /// without a record (`since: None`, first seen now) before anything is removed.
    pub held_unpublished: Vec<HeldUnpublished>,
    /// Own credentials whose record of being named by no version no longer holds (a read shows
    /// a version naming them again, or they are gone from the application): the executor
    /// forgets it, and the usual rules apply.
    pub unpublished_cleared: Vec<String>,
}

/// A credential kept after its version was discarded (see [`Plan::held_unpublished`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldUnpublished {
    pub key_id: String,
    /// When a read first showed it named by no version; `None`: this one.
    pub since: Option<OffsetDateTime>,
    /// When it may go (with the clock margin).
    pub until: OffsetDateTime,
    /// With `since: None` for a credential the store has a record of: the last read that
    /// showed it named by no version, longer ago than the client's schedule allows, so the
    /// hold counts from this read.
    pub gap_after: Option<OffsetDateTime>,
}

impl fmt::Display for HeldUnpublished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "keeping credential {}: it was published, and no version of the vault secret names it since {} (restored from a backup?); consumers may have read it until then, so it stays until {} (overlap after that)",
            self.key_id,
            self.since.map_or_else(|| "now".to_string(), rfc3339),
            rfc3339(self.until)
        )?;
        if let Some(last) = self.gap_after {
            write!(
                f,
                "; no read between {} and now looked (longer than the schedule allows), so its version may have come back and been discarded again meanwhile: counted from now",
                rfc3339(last)
            )?;
        }
        Ok(())
    }
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
    v.tags
        .get(TAG_KEY_ID)
        .filter(|k| is_key_id(k))
        .map(|k| k.to_ascii_lowercase())
}

/// Whether a version's tags attribute it to a credential (managed, with a `key-id` that is a
/// key id).
pub fn names_a_credential(v: &VersionInfo) -> bool {
    key_of(v).is_some()
}

/// Whether the listing of a vault secret's versions can change the plan, once the version
/// consumers read (`latest`) is known. The history judges the own credentials other than the
/// published one (superseded, orphan, migrated, the slot one holds), the abandoned attempts and
/// adoption. It cannot change the plan when `latest` is a managed, enabled version of this
/// application naming an own credential of the application, no adoption, revocation or
/// abandoned attempt is to be judged, and every other own credential is retired now by
/// [`superseded_by_latest`] (whatever the history, it would be retired from the listing too):
/// `observe` then skips the listing (one Key Vault read fewer in each such reconcile, among
/// them the reconcile of a healthy client, the one that rotates it and the one that retires
/// its predecessor). `prefix` is the client's [`marker_prefix`].
#[allow(clippy::too_many_arguments)]
pub fn history_matters(
    passwords: &[PasswordCredential],
    prefix: &str,
    latest: &VersionInfo,
    adopt: bool,
    revoke_previous: bool,
    abandoned: &[AbandonedAttempt],
    rule: &LatestRule<'_>,
) -> bool {
    let Some(key) = key_of(latest) else {
        return true;
    };
    let own: Vec<&PasswordCredential> = passwords
        .iter()
        .filter(|p| {
            p.display_name
                .as_deref()
                .is_some_and(|d| d.starts_with(prefix))
        })
        .collect();
    let published_is_own = own.iter().any(|p| p.key_id.eq_ignore_ascii_case(&key));
    let others_retired_now = own
        .iter()
        .filter(|p| !p.key_id.eq_ignore_ascii_case(&key))
        .all(|p| {
            superseded_by_latest(p, prefix, latest, rule)
                .is_some_and(|(_, due)| due <= rule.removal_now)
        });
    adopt
        || revoke_previous
        || !abandoned.is_empty()
        || !latest.enabled
        || !of_app(latest, rule.app_id)
        || !published_is_own
        || !others_retired_now
}

/// Whether a version's `client-id` tag, if any, names this application.
fn of_app(v: &VersionInfo, app_id: &str) -> bool {
    v.tags
        .get(TAG_CLIENT_ID)
        .is_none_or(|c| c.eq_ignore_ascii_case(app_id))
}

/// What [`superseded_by_latest`] judges by besides the credential and the latest version.
#[derive(Debug, Clone, Copy)]
pub struct LatestRule<'a> {
    /// The application (client) id, as the `client-id` tag names it.
    pub app_id: &'a str,
    pub overlap: Duration,
    pub verify_timeout: Duration,
    /// Since when the client is at its location (`Observed::arrived_at`); `None`: unknown.
    pub arrived_at: Option<OffsetDateTime>,
    /// The credential (key id, hint) the store recorded writing the latest version with.
    pub written_with: Option<(&'a str, Option<&'a str>)>,
    /// The time removals are judged at: `now` less the skew and [`CLOCK_RESOLUTION`].
    pub removal_now: OffsetDateTime,
}

/// The rule that judges an own credential `p` other than the published one from the latest
/// version alone, without the history: `(since, due)`, where `since` is when `p` was superseded
/// at the latest (the latest version became readable) and `due` when it may go; `None` when
/// the rule does not apply (the history must decide).
///
/// Why the history cannot make it go later: Key Vault serves the latest version, and no
/// version is newer. When the latest version neither names `p` (its tags name another
/// credential) nor holds its value (its hint is not `p`'s, or the match is explained, see
/// [`hint_explained`]), every version that ever served `p` (named it, or held its value
/// untagged) stopped being served no later than the latest became readable; a credential never
/// published was never served. So `p` is superseded since then at the latest, whatever the
/// history says, and `overlap` after that no consumer of this location reads it. What the
/// history decides besides, this rule waits for as well: an attempt in flight (`p` is older
/// than `verify_timeout` + [`ORPHAN_MARGIN`], as the orphan rule asks: no attempt can still be
/// publishing it), and a client that arrived at its location lately (`overlap` after its
/// arrival, as the migration rule asks of a credential made for another location, or here
/// before the history began: the consumers of the location it was made for follow the client,
/// and this latest version, a publish after `p` where the client went, is `overlap` old).
/// `p` must be older than the latest version (one made after it was never published here and
/// is the orphan rule's). Without the store's record of the arrival, the rule does not apply.
pub fn superseded_by_latest(
    p: &PasswordCredential,
    prefix: &str,
    latest: &VersionInfo,
    rule: &LatestRule<'_>,
) -> Option<(OffsetDateTime, OffsetDateTime)> {
    p.display_name.as_deref()?.strip_prefix(prefix)?;
    let named_other = key_of(latest).is_some_and(|k| !k.eq_ignore_ascii_case(&p.key_id))
        && of_app(latest, rule.app_id);
    let latest_hint = latest.value_hint.as_deref()?;
    let hint = p.hint.as_deref()?;
    if !named_other
        || !latest.enabled
        || (hint == latest_hint && !hint_explained(&p.key_id, Some(latest_hint), rule.written_with))
    {
        return None;
    }
    let start = p.start?;
    let created = latest.created?;
    if start > created {
        return None;
    }
    let since = readable_since(latest)?;
    let overlap = std_to_time(rule.overlap);
    let arrived = rule.arrived_at?;
    let due = (since + overlap)
        .max(start + std_to_time(rule.verify_timeout + ORPHAN_MARGIN))
        .max(arrived + overlap);
    Some((since, due))
}

/// Whether a hint matching the value consumers read is explained by another credential:
/// `written_with` (key id, hint) is the credential this installation wrote that value for, as
/// its store recorded the write, and its hint matches the value too. A version's value never
/// changes, so the value is that credential's, and `key_id`'s hint matching it is a coincidence
/// of three characters (about one credential in 290,000 shares its successor's), not a value
/// written back by hand. Without the record, a match keeps the credential.
pub fn hint_explained(
    key_id: &str,
    latest_hint: Option<&str>,
    written_with: Option<(&str, Option<&str>)>,
) -> bool {
    written_with.is_some_and(|(k, hint)| {
        !k.eq_ignore_ascii_case(key_id) && hint.is_some() && hint == latest_hint
    })
}

/// Whether some version may hold `p`'s value although no tag names `p`: created after the
/// credential (a value cannot be written before it exists), attributed to no credential by its
/// tags (wiped, or written by hand), and with a value whose hint is unknown or matches `p`'s.
/// A missing tag is never evidence that a version does not hold a credential.
fn may_hold_untagged<'v>(
    p: &PasswordCredential,
    mut history: impl Iterator<Item = &'v VersionInfo>,
) -> bool {
    let Some(start) = p.start else {
        return true;
    };
    history.any(|v| {
        key_of(v).is_none()
            && v.created
                .is_none_or(|c| c >= start - time::Duration::seconds(1))
            && v.value_hint
                .as_deref()
                .is_none_or(|h| p.hint.as_deref().is_none_or(|ph| ph == h))
    })
}

/// Decides what a reconcile does.
///
/// Removal needs positive evidence. Every removal this function can express is backed by one
/// of: a successful read of the vault secret's history at the client's location (superseded
/// past `overlap`, or an orphan made for this location and never named there), or the store's
/// record that an attempt never reached the publishing step. When the secret is absent or
/// soft-deleted nothing is removed but the attempts that never published; a failed read never
/// reaches the planner at all (the reconcile fails first).
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
    let (all_versions, latest): (&[VersionInfo], Option<&VersionInfo>) = match &observed.vault {
        VaultSecret::Present { history, latest } => (history, Some(latest)),
        VaultSecret::Absent | VaultSecret::SoftDeleted => (&[], None),
    };
    // Versions the daemon wrote for another application (a client pointed at a secret that is
    // not its own) say nothing about this client's credentials.
    let of_another_app = |v: &VersionInfo| {
        is_managed(v)
            && v.tags
                .get(TAG_CLIENT_ID)
                .is_some_and(|c| !c.eq_ignore_ascii_case(&observed.app_id))
    };
    let history_own: Vec<VersionInfo> = all_versions
        .iter()
        .filter(|v| !of_another_app(v))
        .cloned()
        .collect();
    let history: &[VersionInfo] = &history_own;
    // Times from Azure (`created`, `startDateTime`) are compared with the local clock: removals
    // wait out the difference between the two, so that a credential is removed only when both
    // clocks agree that its time has come. A skew of seconds matters as much as one of minutes
    // when `overlap` is short.
    let margin = time::Duration::seconds(observed.skew_seconds.abs()) + CLOCK_RESOLUTION;
    let removal_now = now - margin;

    // The published version and what it says about the secret consumers hold.
    let mut rotate: Option<RotateReason> = None;
    match latest {
        None if observed.vault == VaultSecret::SoftDeleted => {
            plan.blocked = Some(Blocked::SecretSoftDeleted {
                secret: observed.location_name.clone(),
            });
        }
        None => rotate = Some(RotateReason::NoPublishedSecret),
        Some(v) if of_another_app(v) => {
            plan.blocked = Some(Blocked::SecretOfAnotherApp {
                secret: observed.location_name.clone(),
                client_id: v.tags.get(TAG_CLIENT_ID).cloned().unwrap_or_default(),
            });
        }
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
            if key_id.is_none() && v.tags.contains_key(TAG_KEY_ID) {
                plan.notes.push(format!(
                    "the published version {} has a key-id tag that is not a key id; it names no credential",
                    v.version
                ));
            }
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
    // Gone for certain, as a revocation needs it: missing from the list for longer than reads
    // lag. A refused probe is not enough (a lagging replica refuses a live credential too).
    let published_gone = matches!(rotate, Some(RotateReason::PublishedCredentialGone { .. }))
        && latest
            .and_then(|v| v.created)
            .is_some_and(|c| now - c >= std_to_time(READ_LAG_GRACE));
    if policy.force && plan.blocked.is_none() {
        rotate = Some(RotateReason::Forced);
    }

    // This installation's credentials for this client that are not the published one.
    let published_key = plan.published.as_ref().and_then(|p| p.key_id.clone());
    let present = matches!(observed.vault, VaultSecret::Present { .. });
    // Tags are written by whoever may write the vault and can be wiped, and a value can be
    // written back by hand: the credential whose hint matches the value consumers read may be
    // what they use, so it is never removed.
    let latest_hint = latest.and_then(|l| l.value_hint.as_deref());
    let reads_this = |p: &PasswordCredential| {
        latest_hint.is_some_and(|h| p.hint.as_deref() == Some(h))
            && !hint_explained(
                &p.key_id,
                latest_hint,
                observed
                    .latest_written_with
                    .as_deref()
                    .and_then(find)
                    .map(|c| (c.key_id.as_str(), c.hint.as_deref())),
            )
    };
    // A version written by hand on top keeps our last credential until the operator adopts it;
    // adopting retires it only when the value consumers read can be told, and a disabled
    // version's value cannot (Key Vault serves it to no one): it may be a copy of ours.
    let hand_written_on_top =
        latest.is_some_and(|l| !is_managed(l)) && (!policy.adopt || latest_hint.is_none());
    // The credentials of the newest managed versions: all of them when several share the
    // newest second, since which of those was written last cannot be told.
    let last_managed_at = history
        .iter()
        .rev()
        .find(|v| key_of(v).is_some())
        .and_then(|v| v.created);
    let last_managed_keys: Vec<String> = history
        .iter()
        .rev()
        .filter(|v| v.created == last_managed_at)
        .filter_map(key_of)
        .collect();
    let written_with = observed
        .latest_written_with
        .as_deref()
        .and_then(find)
        .map(|c| (c.key_id.as_str(), c.hint.as_deref()));
    let latest_rule = LatestRule {
        app_id: &observed.app_id,
        overlap: policy.overlap,
        verify_timeout: policy.verify_timeout,
        arrived_at: observed.arrived_at,
        written_with,
        removal_now,
    };
    let mut kept_elsewhere = 0usize;
    // Our last credentials kept under a version written by hand, and orphans such a version
    // may hold: they free no slot by time.
    let mut kept_under_hand_written: Vec<String> = Vec::new();
    // When a credential superseded here frees its slot: the time its removal waits for.
    let mut frees_here: BTreeMap<String, OffsetDateTime> = BTreeMap::new();
    // When a credential held for a location the client has left frees its slot (its overlap
    // there ends), for the wait for a slot below.
    let mut frees_at_former: BTreeMap<String, OffsetDateTime> = BTreeMap::new();
    // When a published credential no version names any more frees its slot.
    let mut frees_unpublished: BTreeMap<String, OffsetDateTime> = BTreeMap::new();
    // The store's records of credentials named by no version, for credentials gone from the
    // application: stale.
    for k in &observed.known_published {
        if k.unpublished_since.is_some()
            && !observed
                .passwords
                .iter()
                .any(|p| p.key_id.eq_ignore_ascii_case(&k.key_id))
        {
            plan.unpublished_cleared.push(k.key_id.clone());
        }
    }
    for p in &observed.passwords {
        let Some(rotation_id) = own_rotation_id(p) else {
            continue;
        };
        let known = observed
            .known_published
            .iter()
            .find(|k| k.key_id.eq_ignore_ascii_case(&p.key_id));
        let named = history
            .iter()
            .any(|v| key_of(v).is_some_and(|k| k.eq_ignore_ascii_case(&p.key_id)));
        // Named again (a version came back, or the latest names it): the record of a read that
        // showed it named by no version no longer holds.
        if named && known.is_some_and(|k| k.unpublished_since.is_some()) {
            plan.unpublished_cleared.push(p.key_id.clone());
        }
        if published_key
            .as_deref()
            .is_some_and(|k| k.eq_ignore_ascii_case(&p.key_id))
        {
            continue;
        }
        let here = location_of(&rotation_id) == Some(observed.location.as_str());
        // Published (the store says so), made for this location after its history began (the
        // orphan rule's credentials; one made before may have been published in a secret
        // purged since, and the migration rule times it from the publish after it), and named
        // by no version of a listing that succeeded: a version that served it was discarded (a
        // restore of the secret from a backup taken before that version), at a moment the
        // daemon does not know, no earlier than the first read that showed it unnamed (the
        // store's record, or this read without one). It stays until `overlap` after that; then
        // the usual rules judge it. Unless the latest version alone retires it
        // (`superseded_by_latest`: older than that version, which names another credential and
        // does not hold its value, so that no version serving it can have been newer), as it
        // would without the listing.
        let after_first = history
            .iter()
            .filter_map(|v| v.created)
            .min()
            .is_some_and(|first| p.start.is_some_and(|s| s >= first));
        let by_latest = latest.and_then(|l| superseded_by_latest(p, &prefix, l, &latest_rule));
        let unpublished =
            known.filter(|_| here && present && observed.history_listed && !named && after_first);
        // One whose value a version no tag attributes may hold is the orphan rule's to keep (no
        // time frees it: a copy by hand, or tags wiped).
        // The hold counts from the record's first unnamed read while the record is continuous:
        // a read within the client's schedule (`KnownPublished::tolerance`) after the last one
        // that showed it unnamed. After a longer gap no read looked, so its version may have
        // come back and been discarded again unseen (consumers reading it until then): it
        // counts from this read. The gap is measured on Azure's clock, as the last read is
        // recorded (`now` - skew, and the margin for the `Date` header's resolution): the
        // daemon's clock may be off by any amount and put right between two reads, and Azure's
        // runs on. (Judged on the daemon's clock plus |skew|, with the last read on the later
        // clock, a clock ahead made every gap longer by its error, so that no read continued
        // the record and the hold never ended; and a clock ahead at the last read, put right
        // since, made the gap after it look shorter by as much: docs/reliability.md, "A ninth
        // cold review".)
        let seen_now = now - time::Duration::seconds(observed.skew_seconds) + CLOCK_RESOLUTION;
        let held = unpublished
            .filter(|_| by_latest.is_none() && !may_hold_untagged(p, history.iter().chain(latest)))
            .map(|k| {
                let since = k.unnamed_since(seen_now);
                let gap_after = k.unpublished_last_seen.filter(|_| since.is_none());
                (
                    since,
                    since.unwrap_or(now) + std_to_time(policy.overlap),
                    gap_after,
                )
            });
        // The store's record that an attempt never reached publishing is a hint (a store
        // restored from a backup says so of an attempt that did publish): it counts only when
        // every location the credential may be published at was read, and no read shows it
        // there. Its own location must have been read (the client's, or a former one that is
        // present or absent, not soft-deleted), and no location read names it or serves its
        // value.
        let own_location_read = here
            || location_of(&rotation_id).is_some_and(|tag| {
                observed
                    .former
                    .iter()
                    .any(|f| f.tag == tag && !matches!(f.secret, VaultSecret::SoftDeleted))
            });
        let shown_elsewhere = observed
            .former
            .iter()
            .any(|f| shows(p, &f.secret, &observed.app_id));
        // Shown again at the location it was made for, which the client has left: the record
        // of a read that showed it named by no version there no longer holds either (a move
        // back would otherwise count a later discard from it).
        if !here
            && known.is_some_and(|k| k.unpublished_since.is_some())
            && observed.former.iter().any(|f| {
                Some(f.tag.as_str()) == location_of(&rotation_id)
                    && shows(p, &f.secret, &observed.app_id)
            })
        {
            plan.unpublished_cleared.push(p.key_id.clone());
        }
        let never_published = own_location_read
            && !shown_elsewhere
            && observed
                .abandoned
                .iter()
                .any(|a| a.rotation_id == rotation_id && !a.reached_publishing);
        let removal = if named
            && hand_written_on_top
            && last_managed_keys
                .iter()
                .any(|k| k.eq_ignore_ascii_case(&p.key_id))
        {
            // Someone wrote a version by hand on top of ours. Consumers may need to go back to
            // our last secret: it stays until the client is managed again (or adopts).
            kept_under_hand_written.push(p.key_id.clone());
            plan.notes.push(format!(
                "keeping credential {}: the latest version was written by someone else; publishing a managed version (or adopt = true) lets it retire",
                p.key_id
            ));
            None
        } else if named {
            // Superseded at this location: its successor's creation starts the overlap. A
            // version written in the same second as the latest may sort after it; then the
            // latest's own creation is the time.
            let named_at = history
                .iter()
                .filter(|v| key_of(v).is_some_and(|k| k.eq_ignore_ascii_case(&p.key_id)))
                .filter_map(|v| v.created)
                .max();
            // A version no tag attributes that may hold its value (a copy written by hand)
            // served it as well: the overlap counts from the first version after the last of
            // those too. Counted as naming it, for this only (it keeps the credential longer).
            // Not the latest: what consumers read now is judged by its hint (`reads_this`)
            // and by the rule for a hand-written version on top.
            let serves = |v: &VersionInfo| {
                key_of(v).is_some_and(|k| k.eq_ignore_ascii_case(&p.key_id))
                    || (latest.is_none_or(|l| l.version != v.version)
                        && key_of(v).is_none()
                        && may_hold_untagged(p, std::iter::once(v)))
            };
            let since = superseded_since_when(history, serves).or_else(|| {
                // Only a latest version at least as new as the last one naming the credential
                // supersedes it.
                latest
                    .filter(|l| l.created.zip(named_at).is_some_and(|(c, n)| c >= n))
                    .and_then(readable_since)
            });
            since.and_then(|since| {
                let due = since + std_to_time(policy.overlap);
                frees_here.insert(p.key_id.clone(), due + margin);
                if due > removal_now {
                    let at = due + margin;
                    plan.next_retirement = Some(plan.next_retirement.map_or(at, |t| t.min(at)));
                }
                (removal_now >= due).then_some(RemovalReason::Superseded { since })
            })
        } else if !observed.history_listed || (unpublished.is_some() && by_latest.is_some()) {
            // `observe` skipped the listing because this rule retires the credential now
            // (`history_matters`); it is judged by the latest version alone, and never as
            // named by no version. Should the margin have grown since (a new skew), it waits.
            // A published credential named by no version, which the rule retires, goes by its
            // times too, as it would without the listing.
            match by_latest {
                Some((since, due)) => {
                    frees_here.insert(p.key_id.clone(), due + margin);
                    if due > removal_now {
                        let at = due + margin;
                        plan.next_retirement = Some(plan.next_retirement.map_or(at, |t| t.min(at)));
                    }
                    // Named as the history would name it: made for another location (or before
                    // locations were recorded), it goes by the migration rule's times.
                    (removal_now >= due).then(|| match observed.arrived_at {
                        Some(arrived) if !here => RemovalReason::Migrated {
                            since: since.max(arrived),
                        },
                        _ => RemovalReason::Superseded { since },
                    })
                }
                None => {
                    plan.notes.push(format!(
                        "keeping credential {}: the vault's versions were not listed",
                        p.key_id
                    ));
                    None
                }
            }
        } else if let Some((since, due, gap_after)) = held.filter(|(_, due, _)| removal_now < *due)
        {
            let until = due + margin;
            plan.next_retirement = Some(plan.next_retirement.map_or(until, |t| t.min(until)));
            frees_unpublished.insert(p.key_id.clone(), until);
            let held = HeldUnpublished {
                key_id: p.key_id.clone(),
                since,
                until,
                gap_after,
            };
            plan.notes.push(held.to_string());
            plan.held_unpublished.push(held);
            None
        } else if never_published && unpublished.is_none() {
            // The store recorded that this attempt never reached the publishing step: no
            // vault can hold its value.
            Some(RemovalReason::Abandoned { rotation_id })
        } else if here && after_first {
            // Made for this location after the history began, and named by no version of it
            // (read successfully): an orphan once old enough that no attempt can still be
            // publishing it. One made before the history began may have been published in a
            // secret that was purged since: it waits like a moved client's (below).
            let old = p.start.is_some_and(|s| {
                removal_now - s >= std_to_time(policy.verify_timeout + ORPHAN_MARGIN)
            });
            let unproven = may_hold_untagged(p, history.iter().chain(latest));
            if unproven {
                kept_under_hand_written.push(p.key_id.clone());
            }
            if unproven && old {
                plan.notes.push(format!(
                    "keeping credential {}: named by no version, but a version no tag attributes may hold its value",
                    p.key_id
                ));
            }
            (present && old && !unproven).then_some(match held {
                // Its overlap after the discarded version ended above.
                Some((Some(since), _, _)) => RemovalReason::Unpublished { rotation_id, since },
                _ => RemovalReason::Orphan { rotation_id },
            })
        } else if here && !present {
            // No history to prove anything: kept (the attempts that never published are above).
            None
        } else {
            // Made for another location (a moved client, or a marker from before locations were
            // recorded): it may be what consumers of the old location read. It goes after a
            // secret published here after it has been there for `overlap`; or sooner, when a
            // read of the location it was made for proves it superseded there past `overlap`
            // (or never published there), by the rules that hold at the client's location.
            // Not while the client's own secret is soft-deleted: nothing is removed then.
            let former = location_of(&rotation_id)
                .filter(|tag| !here && *tag != observed.location)
                .filter(|_| observed.vault != VaultSecret::SoftDeleted)
                .and_then(|tag| observed.former.iter().find(|f| f.tag == tag));
            let there = former.map(|f| {
                at_former(
                    p,
                    &rotation_id,
                    f,
                    &observed.app_id,
                    known.is_some(),
                    policy,
                    removal_now,
                )
            });
            if let Some(AtFormer::Until(due)) = &there {
                let at = *due + margin;
                plan.next_retirement = Some(plan.next_retirement.map_or(at, |t| t.min(at)));
                frees_at_former.insert(p.key_id.clone(), at);
            }
            // Consumers of the location the credential was made for follow the client: they
            // get `overlap` from when a secret of this application was published after the
            // credential somewhere else the client went (here, or a location read since left),
            // and from when the client arrived here (no earlier than when it left that
            // location: a move rolled back and applied again starts again). When nothing was
            // published after it, the secret consumers here read serves them, once the store
            // says since when the client is here (without it, nothing tells that the client
            // did not leave the credential's location a moment ago).
            let made_for = location_of(&rotation_id);
            let arrived = observed.arrived_at.unwrap_or(now);
            // (when, and the location the client left it was published at, if not here)
            let published_after: Option<(OffsetDateTime, Option<&FormerLocation>)> =
                p.start.and_then(|start| {
                    let after = |v: &&VersionInfo| {
                        is_managed(v)
                            && !of_another_app(v)
                            && v.created.is_some_and(|c| c >= start)
                            && !key_of(v).is_some_and(|k| k.eq_ignore_ascii_case(&p.key_id))
                    };
                    let here = history
                        .iter()
                        .filter(after)
                        .filter_map(|v| v.created)
                        .min()
                        .map(|at| (at, None));
                    let elsewhere = observed
                        .former
                        .iter()
                        .filter(|f| Some(f.tag.as_str()) != made_for)
                        .filter_map(|f| match &f.secret {
                            // Not where consumers read it (a rollback with its tags): the
                            // removal's fresh read there would refuse it.
                            VaultSecret::Present { history, latest }
                                if !(key_of(latest)
                                    .is_some_and(|k| k.eq_ignore_ascii_case(&p.key_id))
                                    || latest
                                        .value_hint
                                        .as_deref()
                                        .is_some_and(|h| p.hint.as_deref() == Some(h))) =>
                            {
                                Some((f, history))
                            }
                            _ => None,
                        })
                        .filter_map(|(f, history)| {
                            history
                                .iter()
                                .filter(after)
                                // Written by this installation for this client (it names one
                                // of its own credentials), not by another installation.
                                .filter(|v| {
                                    key_of(v)
                                        .and_then(|k| find(&k))
                                        .is_some_and(|c| own_rotation_id(c).is_some())
                                })
                                .filter_map(|v| v.created)
                                .min()
                                .map(|at| (at, Some(f)))
                        });
                    here.into_iter().chain(elsewhere).min_by_key(|(at, _)| *at)
                });
            let served_here = latest
                .filter(|l| {
                    l.enabled
                        && published_key.as_deref().is_some_and(|k| find(k).is_some())
                        && !of_another_app(l)
                })
                .and_then(|l| l.created);
            let moved = p.start.is_some() && made_for.is_some_and(|t| t != observed.location);
            let (since, via) = match (published_after, observed.arrived_at) {
                (Some((at, via)), _) => (Some(at.max(arrived)), via),
                // Without the store's record the client arrives now (the store records it at
                // this reconcile): that cannot remove anything (its overlap has not begun) but
                // times a wait for the slot, which the next reconcile's record confirms.
                (None, _) if moved => (served_here.map(|at| at.max(arrived)), None),
                (None, _) => (None, None),
            };
            // Nothing is removed while the client's own secret is soft-deleted (consumers may
            // recover it, and what it served is unknown).
            let migrated = match since.filter(|_| observed.vault != VaultSecret::SoftDeleted) {
                Some(since) => {
                    let due = since + std_to_time(policy.overlap);
                    if due > removal_now {
                        let at = due + margin;
                        plan.next_retirement = Some(plan.next_retirement.map_or(at, |t| t.min(at)));
                        let frees = frees_at_former.entry(p.key_id.clone()).or_insert(at);
                        *frees = (*frees).min(at);
                        plan.notes.push(format!(
                            "keeping credential {} made for another vault or secret name (the client moved) until {}, overlap after a secret was published where the client went and after it arrived here",
                            p.key_id,
                            rfc3339(at)
                        ));
                    }
                    (removal_now >= due).then(|| match via {
                        None => RemovalReason::Migrated { since },
                        Some(f) => RemovalReason::MigratedElsewhere {
                            since,
                            tag: f.tag.clone(),
                            name: f.name.clone(),
                        },
                    })
                }
                None => {
                    if !matches!(there, Some(AtFormer::Remove(_))) {
                        kept_elsewhere += 1;
                    }
                    None
                }
            };
            match there {
                Some(AtFormer::Remove(reason)) => Some(reason),
                _ => migrated,
            }
        };
        if let Some(reason) = removal {
            if reads_this(p) {
                plan.notes.push(format!(
                    "keeping credential {}: its hint matches the value consumers read, whatever the tags say",
                    p.key_id
                ));
                continue;
            }
            plan.removals.push(Removal {
                key_id: p.key_id.clone(),
                reason,
            });
        }
    }
    if kept_elsewhere > 0 {
        plan.notes.push(format!(
            "keeping {kept_elsewhere} credential(s) made for another vault or secret name (the client moved): they are retired once a secret published here is older than overlap"
        ));
    }
    if policy.adopt
        && let Some(a) = &observed.adopted
        && published_key.as_deref() != Some(a.key_id.as_str())
        && !observed
            .passwords
            .iter()
            .any(|p| p.key_id.eq_ignore_ascii_case(&a.key_id) && reads_this(p))
        && removal_now - a.superseded_since >= std_to_time(policy.overlap)
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
    if observed.skew_seconds.abs() > MAX_SKEW_SECONDS {
        plan.notes.push(format!(
            "the local clock is {} s off Azure's (more than {MAX_SKEW_SECONDS} s): removals wait out the difference; fix the clock (NTP)",
            observed.skew_seconds
        ));
    }

    // Revocation (a leaked secret): only a credential this installation and client own, or the
    // adopted credential identified by its hint and a sign-in. Tags are hints written by
    // whoever may write the vault; ownership comes from Entra.
    // A revocation revokes what was published when it was asked. If a rotation has published
    // since (a duplicate request that ran first, or the schedule), the fresh secret is neither
    // revoked nor replaced again; the credential published at the time of the request goes, if
    // it is still there and this client's.
    let then = policy
        .revoke_target
        .filter(|_| policy.revoke_previous)
        .map(str::to_ascii_lowercase);
    let rotated_since = then.as_deref().is_some_and(|k| {
        plan.published
            .as_ref()
            .is_some_and(|p| p.managed && p.key_id.as_deref() != Some(k))
    });
    if rotated_since {
        rotate = None;
        match then.as_deref().and_then(find) {
            Some(c)
                if own_rotation_id(c).is_some()
                    && published_key.as_deref() != Some(c.key_id.as_str()) =>
            {
                plan.removals.retain(|r| r.key_id != c.key_id);
                plan.removals.push(Removal {
                    key_id: c.key_id.clone(),
                    reason: RemovalReason::Revoked,
                });
            }
            Some(c) if own_rotation_id(c).is_none() => {
                plan.blocked = Some(Blocked::RevokeRefused {
                    reason: format!(
                        "the credential {} published when the revocation was asked does not carry this installation's and client's marker; remove it by hand if it leaked",
                        c.key_id
                    ),
                });
            }
            _ => plan.notes.push(
                "a rotation published a new secret after this revocation was asked, and the credential published before it is gone: nothing left to revoke"
                    .to_string(),
            ),
        }
    } else if policy.revoke_previous && plan.blocked.is_none() {
        let published = plan.published.as_ref();
        let target = match published {
            // Nothing published here: a client that moved before anything was published at
            // its new location still has its leaked secret at the location it left, and that
            // one is revoked (it is this client's), or the request is refused.
            None => {
                let served: Vec<&PasswordCredential> = observed
                    .former
                    .iter()
                    .filter_map(|f| match &f.secret {
                        VaultSecret::Present { latest, .. } => key_of(latest),
                        _ => None,
                    })
                    .filter_map(|k| find(&k))
                    .filter(|c| own_rotation_id(c).is_some())
                    .collect();
                let unread = observed.passwords.iter().any(|c| {
                    own_rotation_id(c).is_some_and(|r| match location_of(&r) {
                        Some(tag) => {
                            tag != observed.location
                                && !observed.former.iter().any(|f| f.tag == tag)
                        }
                        None => true,
                    })
                });
                match served.as_slice() {
                    [one] if !unread => Ok(Some(one.key_id.clone())),
                    [] if !unread => Ok(None),
                    [] | [_] => Err(
                        "nothing is published at the client's location, and a location it has left, which may serve the leaked secret, could not be read (or its address is not in the state store); try again, or remove the leaked credential by hand"
                            .to_string(),
                    ),
                    _ => Err(
                        "nothing is published at the client's location, and several locations it has left serve its credentials; remove the leaked one by hand"
                            .to_string(),
                    ),
                }
            }
            Some(p) if p.managed => match p.key_id.as_deref().map(|k| (k, find(k))) {
                Some((_, Some(c))) if own_rotation_id(c).is_some() => Ok(Some(c.key_id.clone())),
                Some((_, Some(c))) => Err(format!(
                    "the published credential {} does not carry this installation's and client's marker ({prefix}…); remove it by hand if it leaked",
                    c.key_id
                )),
                // Gone for certain (its value is refused, or it has been missing for long):
                // nothing is left to revoke.
                Some((_, None)) if published_gone => Ok(None),
                Some((k, None)) => Err(format!(
                    "the published credential {k} is not visible on the application yet (reads lag writes); try again in a few minutes"
                )),
                None => Err(
                    "the published version names no credential (its key-id tag is missing or not a key id); remove the leaked credential by hand"
                        .to_string(),
                ),
            },
            Some(_) => match &observed.adopted_now {
                Some(key_id) => Ok(Some(key_id.clone())),
                None => Err("the published secret is not managed by secret-rotator and its credential could not be identified with certainty (hint and sign-in); remove it by hand if it leaked".to_string()),
            },
        };
        match target {
            Ok(Some(key_id)) => plan.revoke = Some(key_id),
            Ok(None) => plan
                .notes
                .push("nothing to revoke: no published credential is left".to_string()),
            Err(reason) => plan.blocked = Some(Blocked::RevokeRefused { reason }),
        }
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
                    let frees_at = |p: &PasswordCredential| {
                        // Its removal is refused while consumers read its value (a copy by
                        // hand): no rule's time frees its slot.
                        if kept_under_hand_written.contains(&p.key_id) || reads_this(p) {
                            return None;
                        }
                        if let Some(at) = frees_unpublished.get(&p.key_id) {
                            return Some(*at);
                        }
                        if let Some(at) = frees_at_former.get(&p.key_id) {
                            return Some(*at);
                        }
                        // The same time its removal waits for (a version of the same second
                        // as the latest supersedes it from the latest's creation).
                        if let Some(at) = frees_here.get(&p.key_id) {
                            return Some(*at);
                        }
                        let made_here = own_rotation_id(p)
                            .is_some_and(|r| location_of(&r) == Some(observed.location.as_str()));
                        // The orphan rule's own condition: a read of this location that shows
                        // its history began before the credential was made.
                        let orphan_rule_applies = present
                            && history
                                .iter()
                                .filter_map(|v| v.created)
                                .min()
                                .is_some_and(|first| p.start.is_some_and(|s| s >= first));
                        let at = match superseded_since(history, &p.key_id) {
                            Some(since) => since + std_to_time(policy.overlap),
                            // An orphan of this location frees its slot at the orphan age. One
                            // made elsewhere with no read there to time it, or made here when
                            // no history shows it unpublished (the secret is absent: one that
                            // held its value may have been purged), frees no slot at a time
                            // anyone knows.
                            None if made_here && orphan_rule_applies => {
                                p.start.unwrap_or(now)
                                    + std_to_time(policy.verify_timeout + ORPHAN_MARGIN)
                            }
                            None => return None,
                        };
                        Some(at + margin)
                    };
                    let until = others.iter().filter_map(|p| frees_at(p)).min();
                    let kept = others
                        .iter()
                        .find(|p| kept_under_hand_written.contains(&p.key_id));
                    match (until, kept) {
                        // Nothing frees the slot but a person: say what to do.
                        (None, Some(k)) => Blocked::SlotKeptUnderHandWrittenVersion {
                            key_id: k.key_id.clone(),
                            latest_disabled: latest.is_some_and(|l| !l.enabled),
                        },
                        (None, None) => {
                            // Name the credential a person can most safely remove: one whose
                            // location holds no secret (no consumer reads it from Key Vault),
                            // then one whose location is unknown, then one still served where
                            // the client was, and last one whose value consumers where the
                            // client is read (a copy by hand); the oldest first.
                            let mut held: Vec<(u8, Option<OffsetDateTime>, &str, String)> = others
                                .iter()
                                .map(|p| {
                                    let (rank, made_for) =
                                        made_for_words(own_rotation_id(p).as_deref(), observed);
                                    let rank = if reads_this(p) { 3 } else { rank };
                                    (rank, p.start, p.key_id.as_str(), made_for)
                                })
                                .collect();
                            held.sort();
                            match held.into_iter().next() {
                                Some((_, _, key_id, made_for)) => Blocked::SlotHeldUnproven {
                                    key_id: key_id.to_string(),
                                    made_for,
                                },
                                None => Blocked::WaitingForSlot {
                                    until: now + time::Duration::minutes(1),
                                },
                            }
                        }
                        // Every wait lands in the future: a slot that "should" be free
                        // already (a removal that did not happen) is looked at again in a
                        // minute, not at once in a loop. A published credential no version
                        // names any more is said as such: the operator may know that no
                        // consumer uses it.
                        (until, _) => {
                            let until_at =
                                until.unwrap_or(now).max(now + time::Duration::minutes(1));
                            match others.iter().find(|p| {
                                until.is_some()
                                    && frees_unpublished.get(&p.key_id) == until.as_ref()
                            }) {
                                Some(held) => Blocked::SlotHeldUnpublished {
                                    key_id: held.key_id.clone(),
                                    until: until_at,
                                },
                                None => Blocked::WaitingForSlot { until: until_at },
                            }
                        }
                    }
                }
            });
        }
    }
    if plan.blocked.is_none() {
        plan.rotate = rotate;
    }
    plan
}

/// Where an own credential was made for, in words for a person deciding whether to remove it,
/// and how safe that is: 0 when its location holds no secret (no consumer reads it from Key
/// Vault), 1 when the store has no address for it, 2 when a secret is there.
fn made_for_words(rotation_id: Option<&str>, observed: &Observed) -> (u8, String) {
    let tag = rotation_id.and_then(location_of);
    let absent = |s: &VaultSecret| matches!(s, VaultSecret::Absent);
    match tag {
        Some(t) if t == observed.location => {
            if absent(&observed.vault) {
                (
                    0,
                    format!(
                        "{} (where the client is), which holds no secret: a process may have stopped while publishing it",
                        observed.location_name
                    ),
                )
            } else {
                (
                    2,
                    format!("{} (where the client is)", observed.location_name),
                )
            }
        }
        Some(t) => match observed.former.iter().find(|f| f.tag == t) {
            Some(f) if absent(&f.secret) => (
                0,
                format!(
                    "{}, which the client has left and which holds no secret",
                    f.name
                ),
            ),
            Some(f) if matches!(f.secret, VaultSecret::SoftDeleted) => (
                1,
                format!(
                    "{}, which the client has left and which is soft-deleted (recovered, it serves its consumers again)",
                    f.name
                ),
            ),
            Some(f) => (
                2,
                format!(
                    "{}, which the client has left (its consumers may still read it there)",
                    f.name
                ),
            ),
            None => match observed.former_unread.iter().find(|(tag, _)| tag == t) {
                Some((_, name)) => (
                    1,
                    format!(
                        "{name}, which the client has left and which could not be read (see the log; a read that succeeds may time it)"
                    ),
                ),
                None => (
                    1,
                    "a location the client has left whose address the state store does not hold"
                        .to_string(),
                ),
            },
        },
        None => (
            1,
            "a location its marker does not name (it was made before markers named one)"
                .to_string(),
        ),
    }
}

/// Whether a read that succeeded shows `p` published at that location: a version of this
/// application names it, or its hint matches the value the latest version holds.
fn shows(p: &PasswordCredential, secret: &VaultSecret, app_id: &str) -> bool {
    let VaultSecret::Present { history, latest } = secret else {
        return false;
    };
    let ours = |v: &VersionInfo| {
        !(is_managed(v)
            && v.tags
                .get(TAG_CLIENT_ID)
                .is_some_and(|c| !c.eq_ignore_ascii_case(app_id)))
    };
    history
        .iter()
        .chain(std::iter::once(latest))
        .filter(|v| ours(v))
        .any(|v| key_of(v).is_some_and(|k| k.eq_ignore_ascii_case(&p.key_id)))
        || latest
            .value_hint
            .as_deref()
            .is_some_and(|h| p.hint.as_deref() == Some(h))
}

/// What a read of the location a credential was made for, which the client has left, says.
enum AtFormer {
    /// Proven unread there: superseded past `overlap`, or never published.
    Remove(RemovalReason),
    /// Superseded there, or never named there after its history began: its overlap there
    /// ends, or it reaches the orphan age, at this time (before any clock margin).
    Until(OffsetDateTime),
    /// No evidence there (what consumers there read, the last managed version under one
    /// written by hand, or a history that cannot tell).
    Keep,
}

/// Judges an own credential made for `former` by the rules of the client's own location: named
/// by a version that is no longer the latest, `overlap` after its successor; never named after
/// the history began, past the orphan age. What consumers there read (the latest version names
/// it, or its hint matches the latest value) stays, to be retired by the migration rule; so does
/// one named by no version there that the store knows was `published` (a restore of that secret
/// from a backup discarded its version: consumers there read it until then, a moment no read
/// of this reconcile times).
fn at_former(
    p: &PasswordCredential,
    rotation_id: &str,
    former: &FormerLocation,
    app_id: &str,
    published: bool,
    policy: &PolicyView<'_>,
    removal_now: OffsetDateTime,
) -> AtFormer {
    let VaultSecret::Present { history, latest } = &former.secret else {
        return AtFormer::Keep;
    };
    let ours = |v: &VersionInfo| {
        !(is_managed(v)
            && v.tags
                .get(TAG_CLIENT_ID)
                .is_some_and(|c| !c.eq_ignore_ascii_case(app_id)))
    };
    let history: Vec<&VersionInfo> = history.iter().filter(|v| ours(v)).collect();
    let names = |v: &VersionInfo| key_of(v).is_some_and(|k| k.eq_ignore_ascii_case(&p.key_id));
    let read_there = names(latest)
        || latest
            .value_hint
            .as_deref()
            .is_some_and(|h| p.hint.as_deref() == Some(h));
    if read_there {
        return AtFormer::Keep;
    }
    let named_at = history
        .iter()
        .filter(|v| names(v))
        .filter_map(|v| v.created)
        .max();
    if history.iter().any(|v| names(v)) {
        // A version written by hand on top of ours: consumers there may go back to our last.
        let last_managed = history.iter().rev().find_map(|v| key_of(v));
        if !is_managed(latest) && last_managed.is_some_and(|k| k.eq_ignore_ascii_case(&p.key_id)) {
            return AtFormer::Keep;
        }
        let owned: Vec<VersionInfo> = history.iter().map(|v| (*v).clone()).collect();
        let since = superseded_since(&owned, &p.key_id)
            .or_else(|| latest.created.filter(|c| named_at.is_some_and(|n| *c >= n)));
        let Some(since) = since else {
            return AtFormer::Keep;
        };
        let due = since + std_to_time(policy.overlap);
        if removal_now >= due {
            AtFormer::Remove(RemovalReason::SupersededAtFormer {
                since,
                tag: former.tag.clone(),
                name: former.name.clone(),
            })
        } else {
            AtFormer::Until(due)
        }
    } else {
        let after_first = history
            .iter()
            .filter_map(|v| v.created)
            .min()
            .is_some_and(|first| p.start.is_some_and(|s| s >= first));
        let orphan_age = std_to_time(policy.verify_timeout + ORPHAN_MARGIN);
        match p.start {
            Some(s)
                if after_first && !published && !may_hold_untagged(p, history.iter().copied()) =>
            {
                if removal_now - s >= orphan_age {
                    AtFormer::Remove(RemovalReason::OrphanAtFormer {
                        rotation_id: rotation_id.to_string(),
                        tag: former.tag.clone(),
                        name: former.name.clone(),
                    })
                } else {
                    // The orphan rule fires then, as long as reads there still show it unnamed:
                    // a two-password app waits for it rather than ask a person.
                    AtFormer::Until(s + orphan_age)
                }
            }
            _ => AtFormer::Keep,
        }
    }
}

/// A short tag of a client's location (vault host and secret name) that is carried in the
/// rotation id, and so in the credential's marker: it tells, from Entra alone, which location a
/// credential was made for, after a config change or with the store lost.
pub fn location_tag(vault: &url::Url, secret_name: &str) -> String {
    // FNV-1a: stable across builds and platforms; this is a label, not a security boundary.
    let text = format!(
        "{}/{}",
        vault.host_str().unwrap_or_default().to_ascii_lowercase(),
        secret_name.to_ascii_lowercase()
    );
    let text = match vault.port() {
        Some(port) => format!("{port}@{text}"),
        None => text,
    };
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// A new rotation id: `<location tag>-<random>`.
pub fn new_rotation_id(location: &str) -> String {
    format!("{location}-{}", uuid::Uuid::new_v4().simple())
}

/// The location tag of a rotation id; `None` for ids made before locations were recorded.
pub fn location_of(rotation_id: &str) -> Option<&str> {
    let (tag, rest) = rotation_id.split_once('-')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(tag, 8) && hex(rest, 32)).then_some(tag)
}

/// Whether `text` is a key id as Entra writes them (a GUID). Anything else in a tag names no
/// credential.
pub fn is_key_id(text: &str) -> bool {
    uuid::Uuid::try_parse(text).is_ok() && text.len() == 36
}

/// When `key_id` stopped being the published credential: when the first of the versions after
/// the last one that named it became readable (its `updated` when later than its `created`).
/// `None` when no version named it, or the latest still does.
pub fn superseded_since(history: &[VersionInfo], key_id: &str) -> Option<OffsetDateTime> {
    superseded_since_when(history, |v| {
        key_of(v).is_some_and(|k| k.eq_ignore_ascii_case(key_id))
    })
}

/// [`superseded_since`], with `serves` saying which versions hold the credential's value.
fn superseded_since_when(
    history: &[VersionInfo],
    serves: impl Fn(&VersionInfo) -> bool,
) -> Option<OffsetDateTime> {
    let last = history.iter().rposition(serves)?;
    // Key Vault's `created` is whole seconds: a version of the same second may have been
    // written before it as well as after, so only a strictly newer one proves it superseded.
    let named_at = history[last].created?;
    history[last + 1..]
        .iter()
        .filter(|v| v.created.is_some_and(|c| c > named_at))
        .filter_map(readable_since)
        .min()
}

/// Since when a version may have been what readers get, as far as its dates tell: its
/// creation, or the last change of its attributes when that is later (a version enabled after
/// it was disabled became readable then). Counting a supersession from it can only make a
/// removal later.
fn readable_since(v: &VersionInfo) -> Option<OffsetDateTime> {
    v.created.map(|c| v.updated.map_or(c, |u| c.max(u)))
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
    /// A schedule's tolerance longer than any test's span: reads kept up with the schedule.
    const KEPT_UP: Duration = Duration::from_secs(1_000 * 86_400);

    /// The store's record of a known publish, first (and last) seen named by no version at
    /// `since`, with reads since kept up with the schedule: the hold counts from `since`.
    fn known_unnamed(key_id: String, since: Option<OffsetDateTime>) -> KnownPublished {
        KnownPublished {
            key_id,
            unpublished_since: since,
            unpublished_last_seen: since,
            tolerance: KEPT_UP,
        }
    }

    fn policy() -> PolicyView<'static> {
        PolicyView {
            instance: "prod",
            client: "dicom",
            renew_before: 30 * DAY,
            overlap: 7 * DAY,
            verify_timeout: Duration::from_secs(300),
            adopt: false,
            force: false,
            revoke_previous: false,
            revoke_target: None,
        }
    }

    /// The location tag of the tests' client.
    const LOC: &str = "0a1b2c3d";

    /// A key id (a GUID) for a short test name.
    fn g(name: &str) -> String {
        let n = name
            .bytes()
            .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
        format!("{n:08x}-0000-4000-8000-000000000000")
    }

    /// A rotation id made for the tests' location.
    fn rid(name: &str) -> String {
        let n = name
            .bytes()
            .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
        format!("{LOC}-{n:032x}")
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
            key_id: g(key),
            display_name: name.map(str::to_string),
            hint: Some("abc".into()),
            start: Some(start),
            end: Some(end),
        }
    }

    fn own(
        key: &str,
        rid_name: &str,
        start: OffsetDateTime,
        end: OffsetDateTime,
    ) -> PasswordCredential {
        cred(
            key,
            Some(&format!("secret-rotator:prod:dicom:{}", rid(rid_name))),
            start,
            end,
        )
    }

    fn version(ver: &str, key: &str, created: OffsetDateTime, exp: OffsetDateTime) -> VersionInfo {
        VersionInfo {
            version: ver.into(),
            created: Some(created),
            updated: None,
            enabled: true,
            expires: Some(exp),
            tags: tags("app", &g(key), &rid("r")),
            value_hint: None,
        }
    }

    fn observed(
        passwords: Vec<PasswordCredential>,
        versions: Option<Vec<VersionInfo>>,
    ) -> Observed {
        let vault = match versions {
            Some(history) => {
                let latest = history.last().cloned().expect("a version");
                VaultSecret::Present { history, latest }
            }
            None => VaultSecret::Absent,
        };
        Observed {
            passwords,
            password_cap: None,
            vault,
            location: LOC.into(),
            app_id: "app".into(),
            location_name: "secret 's' in vault https://kv".into(),
            published_probe: None,
            abandoned: vec![],
            skew_seconds: 0,
            adopted: None,
            adopted_now: None,
            former: vec![],
            former_unread: vec![],
            arrived_at: Some(NOW - days(365)),
            latest_written_with: None,
            history_listed: true,
            known_published: vec![],
        }
    }

    /// A client published 10 days ago, expiring in 80 days.
    fn healthy() -> Observed {
        observed(
            vec![own("k1", "r1", NOW - days(10), NOW + days(80))],
            Some(vec![version("v1", "k1", NOW - days(10), NOW + days(80))]),
        )
    }

    const PREFIX: &str = "secret-rotator:prod:dicom:";

    /// The rule of `superseded_by_latest` for the tests' client at `now` (no skew).
    fn rule_at<'a>(o: &'a Observed, now: OffsetDateTime) -> LatestRule<'a> {
        LatestRule {
            app_id: &o.app_id,
            overlap: policy().overlap,
            verify_timeout: policy().verify_timeout,
            arrived_at: o.arrived_at,
            written_with: None,
            removal_now: now - CLOCK_RESOLUTION,
        }
    }

    /// What `observe` makes of `full` when it skips the listing: the latest version alone.
    fn latest_alone(full: &Observed) -> Observed {
        let VaultSecret::Present { latest, .. } = &full.vault else {
            panic!("a present secret");
        };
        Observed {
            vault: VaultSecret::Present {
                history: vec![latest.clone()],
                latest: latest.clone(),
            },
            history_listed: false,
            ..full.clone()
        }
    }

    /// The plan from the latest version alone (`alone`) against the plan from the whole history
    /// (`full`): the same but for the reasons' times, which may only be later (the listing may
    /// show a credential superseded before the latest version was written, never after), and
    /// the reason of a credential the history alone would have called an orphan or migrated
    /// (superseded since the latest version, at the latest: the same removal, now).
    /// One exception, which `allow_unproven` admits and the rule makes harmless: a credential
    /// named by no version that the full plan keeps because a version no tag attributes, older
    /// than the latest, may hold its value (a copy by hand); the latest version superseded
    /// that copy more than `overlap` ago, as it would for a credential a version named
    /// (`a_copy_of_a_credentials_value_by_hand_serves_it_until_the_next_version`).
    fn assert_safely_the_same(full: &Plan, alone: &Plan, full_observed: &Observed, context: &str) {
        let unproven: Vec<&str> = full
            .notes
            .iter()
            .filter_map(|n| {
                n.strip_prefix("keeping credential ")?.strip_suffix(
                    ": named by no version, but a version no tag attributes may hold its value",
                )
            })
            .collect();
        let full_keys: Vec<&str> = full.removals.iter().map(|r| r.key_id.as_str()).collect();
        for r in &alone.removals {
            assert!(
                matches!(
                    r.reason,
                    RemovalReason::Superseded { .. } | RemovalReason::Migrated { .. }
                ),
                "{context}: {r:?}"
            );
            match full.removals.iter().find(|f| f.key_id == r.key_id) {
                // The history may time it earlier (a version after the last that served it,
                // older than the latest), or by another rule (an orphan; migrated, here or at a
                // location the client left): both remove it now.
                Some(f) => {
                    if let (
                        RemovalReason::Superseded { since },
                        RemovalReason::Superseded { since: alone_since },
                    ) = (&f.reason, &r.reason)
                    {
                        assert!(since <= alone_since, "{context}: {f:?} against {r:?}");
                    }
                }
                None => {
                    assert!(
                        unproven.contains(&r.key_id.as_str()),
                        "{context}: {r:?} removed without the history, kept with it: {full:?}"
                    );
                    // The exception, checked against the world: no version names it.
                    let VaultSecret::Present { history, .. } = &full_observed.vault else {
                        panic!("a present secret");
                    };
                    assert!(
                        !history.iter().any(|v| {
                            key_of(v).is_some_and(|k| k.eq_ignore_ascii_case(&r.key_id))
                        })
                    );
                }
            }
        }
        if !unproven.is_empty() {
            return;
        }
        assert_eq!(
            alone.removals.iter().map(|r| &r.key_id).collect::<Vec<_>>(),
            full_keys,
            "{context}"
        );
        assert_eq!(alone.rotate, full.rotate, "{context}");
        assert_eq!(alone.blocked, full.blocked, "{context}");
        assert_eq!(alone.revoke, full.revoke, "{context}");
        assert_eq!(alone.published, full.published, "{context}");
        assert_eq!(alone.renew_at, full.renew_at, "{context}");
        assert_eq!(alone.next_retirement, full.next_retirement, "{context}");
        assert_eq!(alone.notes, full.notes, "{context}");
    }

    /// `observe` skips the version listing when `history_matters` says no: then the plan (and
    /// the drift seen) from the latest version alone must be the plan from the whole history
    /// (up to `assert_safely_the_same`), whatever the history holds (older own versions, a
    /// version written by hand, one of another application), with or without a second own
    /// credential to retire, at any time, forced or not, capped or not.
    #[test]
    fn the_version_listing_is_skipped_only_when_it_cannot_change_the_plan() {
        let k3 = own("k3", "r3", NOW - days(10), NOW + days(80));
        let k2 = PasswordCredential {
            hint: Some("k2~".into()),
            ..own("k2", "r2", NOW - days(30), NOW + days(60))
        };
        let foreign = cred("f1", Some("by hand"), NOW - days(400), NOW + days(5));
        let v3 = VersionInfo {
            value_hint: Some("xyz".into()),
            ..version("v3", "k3", NOW - days(10), NOW + days(80))
        };
        let mut by_hand = version("h", "x", NOW - days(20), NOW + days(30));
        by_hand.tags.clear();
        by_hand.tags.insert(TAG_MANAGED_BY.into(), "someone".into());
        let mut untagged = version("u", "x", NOW - days(12), NOW + days(30));
        untagged.tags.clear();
        let mut other_app = version("o", "k9", NOW - days(15), NOW + days(30));
        other_app
            .tags
            .insert(TAG_CLIENT_ID.into(), "another-app".into());
        let histories = [
            vec![v3.clone()],
            vec![
                version("v1", "k1", NOW - days(100), NOW + days(5)),
                by_hand.clone(),
                version("v2", "k2", NOW - days(30), NOW + days(60)),
                other_app.clone(),
                untagged.clone(),
                v3.clone(),
            ],
            vec![by_hand, untagged, v3.clone()],
        ];
        let mut compared = 0;
        for history in &histories {
            for passwords in [
                vec![k3.clone()],
                vec![foreign.clone(), k3.clone()],
                vec![k2.clone(), k3.clone()],
            ] {
                for cap in [None, Some(2)] {
                    let mut full = observed(passwords.clone(), Some(history.clone()));
                    full.password_cap = cap;
                    let alone = latest_alone(&full);
                    for now in [NOW, NOW + days(55), NOW + days(85), NOW + days(200)] {
                        assert!(!history_matters(
                            &full.passwords,
                            PREFIX,
                            &v3,
                            false,
                            false,
                            &[],
                            &rule_at(&full, now),
                        ));
                        for force in [false, true] {
                            let p = PolicyView { force, ..policy() };
                            let context = format!(
                                "history {:?}, passwords {passwords:?}, cap {cap:?}, now {now}, force {force}",
                                history.iter().map(|v| &v.version).collect::<Vec<_>>()
                            );
                            let (f, a) = (plan(&full, &p, now), plan(&alone, &p, now));
                            if passwords.len() == 2 && passwords[0].key_id == k2.key_id {
                                // The second own credential goes, from either observation.
                                assert_eq!(a.removals.len(), 1, "{context}");
                                assert_safely_the_same(&f, &a, &full, &context);
                            } else {
                                assert_eq!(format!("{f:?}"), format!("{a:?}"), "{context}");
                            }
                            assert_eq!(
                                crate::drift::assess(&full, None, now),
                                crate::drift::assess(&alone, None, now)
                            );
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(compared, 144);

        // Anything else to judge needs the history.
        let o = observed(vec![], None);
        let matters_with =
            |passwords: &[PasswordCredential], latest: &VersionInfo, rule: LatestRule<'_>| {
                history_matters(passwords, PREFIX, latest, false, false, &[], &rule)
            };
        let matters_at = |passwords: &[PasswordCredential], latest: &VersionInfo, now| {
            matters_with(passwords, latest, rule_at(&o, now))
        };
        let matters = |passwords: &[PasswordCredential], latest: &VersionInfo| {
            matters_at(passwords, latest, NOW)
        };
        assert!(!matters(&[k2.clone(), k3.clone()], &v3));
        assert!(
            matters_at(&[k2.clone(), k3.clone()], &v3, NOW - days(4)),
            "a second own credential, within overlap of the latest version"
        );
        let young = PasswordCredential {
            start: Some(NOW - time::Duration::minutes(9)),
            ..k2.clone()
        };
        let mut fresh = v3.clone();
        fresh.created = Some(NOW - time::Duration::minutes(9));
        assert!(
            !matters_with(
                &[k2.clone(), k3.clone()],
                &fresh,
                LatestRule {
                    overlap: Duration::from_secs(4),
                    ..rule_at(&o, NOW)
                }
            ),
            "a short overlap"
        );
        assert!(
            matters_with(
                &[young, k3.clone()],
                &fresh,
                LatestRule {
                    overlap: Duration::from_secs(4),
                    ..rule_at(&o, NOW)
                }
            ),
            "a second own credential younger than an attempt can take: in flight, perhaps"
        );
        let after = PasswordCredential {
            start: Some(NOW - days(9)),
            ..k2.clone()
        };
        assert!(
            matters(&[after, k3.clone()], &v3),
            "a second own credential made after the latest version"
        );
        let elsewhere = PasswordCredential {
            display_name: Some(format!("{PREFIX}0f0e0d0c-{:032x}", 7)),
            ..k2.clone()
        };
        assert!(
            !matters(&[elsewhere, k3.clone()], &v3),
            "a second own credential made for another location: the migration rule's times"
        );
        let same_hint = PasswordCredential {
            hint: v3.value_hint.clone(),
            ..k2.clone()
        };
        assert!(
            matters(&[same_hint.clone(), k3.clone()], &v3),
            "a second own credential whose value the latest version may hold"
        );
        assert!(
            !matters_with(
                &[same_hint.clone(), k3.clone()],
                &v3,
                LatestRule {
                    written_with: Some((&k3.key_id, v3.value_hint.as_deref())),
                    ..rule_at(&o, NOW)
                }
            ),
            "the match explained by the store's record"
        );
        let unknown = VersionInfo {
            value_hint: None,
            ..v3.clone()
        };
        assert!(
            matters(&[k2.clone(), k3.clone()], &unknown),
            "the latest value's hint unknown"
        );
        let mut reenabled = v3.clone();
        reenabled.updated = Some(NOW - days(5));
        assert!(
            matters(&[k2.clone(), k3.clone()], &reenabled),
            "the latest version readable (enabled again) within overlap"
        );
        for arrived_at in [None, Some(NOW - days(6))] {
            assert!(
                matters_with(
                    &[k2.clone(), k3.clone()],
                    &v3,
                    LatestRule {
                        arrived_at,
                        ..rule_at(&o, NOW)
                    }
                ),
                "the client's arrival at its location {arrived_at:?}"
            );
        }
        assert!(
            matters(std::slice::from_ref(&k2), &v3),
            "an own credential the latest does not name"
        );
        assert!(matters(&[foreign], &v3), "no own credential");
        let disabled = VersionInfo {
            enabled: false,
            ..v3.clone()
        };
        assert!(matters(std::slice::from_ref(&k3), &disabled), "disabled");
        let mut of_another = v3.clone();
        of_another
            .tags
            .insert(TAG_CLIENT_ID.into(), "another-app".into());
        assert!(
            matters(std::slice::from_ref(&k3), &of_another),
            "another app's"
        );
        assert!(
            matters(std::slice::from_ref(&k3), &untagged_like(&v3)),
            "unmanaged"
        );
        let one = std::slice::from_ref(&k3);
        let rule = rule_at(&o, NOW);
        assert!(
            history_matters(one, PREFIX, &v3, true, false, &[], &rule),
            "adopt"
        );
        assert!(
            history_matters(one, PREFIX, &v3, false, true, &[], &rule),
            "revoke"
        );
        let attempt = AbandonedAttempt {
            rotation_id: rid("r4"),
            reached_publishing: false,
        };
        assert!(
            history_matters(one, PREFIX, &v3, false, false, &[attempt], &rule),
            "an abandoned attempt"
        );
    }

    /// `observe` judged with the margin of its time; the planner, later, may see a larger one
    /// (a new skew measured in between). Without the history it then keeps the credential and
    /// says when to look again, never judging it as named by no version.
    #[test]
    fn without_the_listing_a_credential_not_yet_due_is_kept_until_the_latest_version_retires_it() {
        let k3 = own("k3", "r3", NOW - days(10), NOW + days(80));
        let k2 = PasswordCredential {
            hint: Some("k2~".into()),
            ..own("k2", "r2", NOW - days(30), NOW + days(60))
        };
        let v3 = VersionInfo {
            value_hint: Some("xyz".into()),
            ..version("v3", "k3", NOW - days(10), NOW + days(80))
        };
        let full = observed(vec![k2.clone(), k3], Some(vec![v3]));
        let mut alone = latest_alone(&full);
        let due = NOW - days(10) + days(7);
        alone.skew_seconds = 30;
        let p = plan(&alone, &policy(), due + time::Duration::seconds(10));
        assert!(p.removals.is_empty(), "{p:?}");
        let at = due + time::Duration::seconds(30) + CLOCK_RESOLUTION;
        assert_eq!(p.next_retirement, Some(at));
        let p = plan(&alone, &policy(), at);
        assert_eq!(
            p.removals,
            vec![Removal {
                key_id: k2.key_id.clone(),
                reason: RemovalReason::Superseded {
                    since: NOW - days(10)
                },
            }]
        );
        // Whatever the observation claims, a credential the rule does not judge stays.
        alone.passwords[0].hint = Some("xyz".into());
        let p = plan(&alone, &policy(), NOW + days(100));
        assert!(p.removals.is_empty(), "{p:?}");
        assert_eq!(p.next_retirement, None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 4096,
            max_global_rejects: 1_000_000,
            ..Default::default()
        })]

        /// The skipped listing, attacked: whatever else the history holds (versions of this
        /// client's other credentials, of another application, written by hand, untagged,
        /// disabled, of the same second as the latest, copies of an own credential's value),
        /// whatever own credentials besides the published one (published before, never
        /// published, made for a location the client left, young or old), foreign
        /// credentials, former location, cap, skew, store records, overlap and time, when
        /// `history_matters` says no, the plan from the latest version alone is the plan from
        /// the whole history, or the same removals timed from later (`assert_safely_the_same`),
        /// and the drift seen is the same.
        #[test]
        fn no_history_changes_the_plan_when_history_matters_says_no(
            older in proptest::collection::vec(
                (0u8..9, proptest::bool::ANY, ago(), 0usize..5, 0i64..3, -50i64..400),
                0..7,
            ),
            latest_ago in ago(),
            latest_hint in 0usize..5,
            latest_updated in 0i64..3,
            latest_exp in -50i64..400,
            latest_client_tag in proptest::bool::ANY,
            k_before in ago(),
            k_end in -50i64..400,
            k_hint in 0usize..5,
            k_former in proptest::bool::ANY,
            others in proptest::collection::vec((other_kind(), 0usize..5, ago(), -50i64..400), 0..3),
            former_kind in 0u8..6,
            force in proptest::bool::ANY,
            cap in proptest::bool::ANY,
            skew in -200i64..200,
            short_overlap in proptest::bool::ANY,
            arrived in proptest::option::of(ago()),
            written_with in 0u8..4,
            known in proptest::collection::vec(proptest::option::of(proptest::option::of(ago())), 0..4),
            continuous in proptest::bool::ANY,
        ) {
            const FORMER: &str = "0f0e0d0c";
            let hints = [None, Some("abc"), Some("xyz"), Some("q~1"), Some("f0~")];
            let hint = |i: usize| hints[i].map(str::to_string);
            let now = NOW;
            let latest_created = now - latest_ago;
            let k_rid = if k_former {
                format!("{FORMER}-{:032x}", 7)
            } else {
                rid("rk")
            };
            // The published credential: made before the version that names it.
            let k = PasswordCredential {
                key_id: g("k"),
                display_name: Some(format!("{PREFIX}{k_rid}")),
                hint: hint(k_hint),
                start: Some(latest_created - k_before),
                end: Some(now + days(k_end)),
            };
            let mut passwords = vec![k.clone()];
            for (i, (kind, h, ago, end)) in others.iter().enumerate() {
                let name = match kind {
                    // Own credentials besides the published one: made here, or for a location
                    // the client left.
                    0 => Some(format!("{PREFIX}{}", rid(&format!("o{i}")))),
                    1 => Some(format!("{PREFIX}{FORMER}-{:032x}", i + 1)),
                    2 => Some("by hand".to_string()),
                    3 => Some(format!("secret-rotator:staging:dicom:{}", rid("o"))),
                    4 => Some(format!("secret-rotator:prod:other:{}", rid("o"))),
                    _ => None,
                };
                passwords.push(PasswordCredential {
                    key_id: g(&format!("f{i}")),
                    display_name: name,
                    hint: hint(*h),
                    start: Some(now - *ago),
                    end: Some(now + days(*end)),
                });
            }
            let mut latest = version("vl", "k", latest_created, now + days(latest_exp));
            latest.value_hint = hint(latest_hint);
            latest.updated = match latest_updated {
                0 => None,
                1 => Some(latest_created + time::Duration::seconds(90)),
                _ => Some(latest_created + days(3)),
            };
            if !latest_client_tag {
                latest.tags.remove(TAG_CLIENT_ID);
            }
            let mut history = Vec::new();
            for (i, (kind, enabled, back, h, updated, exp)) in older.iter().enumerate() {
                let created = latest_created - *back;
                let mut v = version(&format!("v{i}"), "k", created, now + days(*exp));
                match kind {
                    0 => {}
                    1 => {
                        v.tags.insert(TAG_KEY_ID.into(), g("k-old"));
                    }
                    2 => {
                        v.tags.insert(TAG_CLIENT_ID.into(), "another-app".into());
                    }
                    3 => v.tags.clear(),
                    4 => {
                        v.tags.clear();
                        v.tags.insert(TAG_MANAGED_BY.into(), "someone".into());
                    }
                    5 => {
                        v.tags.insert(TAG_KEY_ID.into(), "not-a-key".into());
                    }
                    // Names one of the other credentials (own ones, when they are).
                    n => {
                        v.tags.insert(TAG_KEY_ID.into(), g(&format!("f{}", n - 6)));
                    }
                }
                v.enabled = *enabled;
                v.updated = (*updated > 0).then(|| created + days(*updated));
                v.value_hint = hint(*h);
                history.push(v);
            }
            history.sort_by_key(|v| v.created);
            history.push(latest.clone());
            let mut full = observed(passwords, Some(history));
            full.password_cap = cap.then_some(2);
            full.skew_seconds = skew;
            full.arrived_at = arrived.map(|a| now - a);
            full.latest_written_with = match written_with {
                0 => None,
                1 => Some(g("k")),
                2 => Some(g("f0")),
                _ => Some(g("f1")),
            };
            // The store's record of publishes (the published credential, then the others in
            // order), each perhaps with when a read first showed it named by no version.
            full.known_published = ["k", "f0", "f1", "f2"]
                .iter()
                .zip(&known)
                .filter_map(|(key, k)| {
                    k.map(|seen| KnownPublished {
                        tolerance: if continuous { KEPT_UP } else { Duration::ZERO },
                        ..known_unnamed(g(key), seen.map(|ago| now - ago))
                    })
                })
                .collect();
            let former_latest = |key: &str| {
                let v = version("fv", key, now - days(500), now + days(100));
                VaultSecret::Present { history: vec![v.clone()], latest: v }
            };
            full.former = match former_kind {
                0 => vec![],
                kind => vec![FormerLocation {
                    tag: FORMER.into(),
                    name: "secret 'old' in vault https://kv".into(),
                    vault_url: url::Url::parse("https://kv.vault.azure.net").unwrap(),
                    secret_name: "old".into(),
                    secret: match kind {
                        1 => VaultSecret::Absent,
                        2 => VaultSecret::SoftDeleted,
                        3 => former_latest("k"),
                        // Consumers there read another credential (an own one made for it,
                        // when there is one): by its tags, or by its value alone.
                        4 => former_latest("f0"),
                        _ => {
                            let mut v = version("fv", "x", now - days(500), now + days(100));
                            v.tags.clear();
                            v.value_hint = hint(4);
                            VaultSecret::Present { history: vec![v.clone()], latest: v }
                        }
                    },
                }],
            };
            let p = PolicyView {
                force,
                overlap: if short_overlap { Duration::from_secs(4) } else { 7 * DAY },
                ..policy()
            };
            let find = |key: &str| full.passwords.iter().find(|c| c.key_id.eq_ignore_ascii_case(key));
            let matters = history_matters(
                &full.passwords,
                PREFIX,
                &latest,
                false,
                false,
                &[],
                &LatestRule {
                    app_id: &full.app_id,
                    overlap: p.overlap,
                    verify_timeout: p.verify_timeout,
                    arrived_at: full.arrived_at,
                    written_with: full
                        .latest_written_with
                        .as_deref()
                        .and_then(find)
                        .map(|c| (c.key_id.as_str(), c.hint.as_deref())),
                    removal_now: now - time::Duration::seconds(skew.abs()) - CLOCK_RESOLUTION,
                },
            );
            proptest::prop_assume!(!matters);
            let alone = latest_alone(&full);
            let (f, a) = (plan(&full, &p, now), plan(&alone, &p, now));
            assert_safely_the_same(&f, &a, &full, &format!("{full:?}"));
            proptest::prop_assert_eq!(
                crate::drift::assess(&full, None, now),
                crate::drift::assess(&alone, None, now)
            );
        }
    }

    /// Which credential besides the published one, for the property tests: mostly own ones
    /// made for the client's location, the ones the listing's skip is about.
    fn other_kind() -> impl proptest::strategy::Strategy<Value = u8> {
        use proptest::prelude::*;
        prop_oneof![4 => Just(0u8), 1 => 1u8..6]
    }

    /// How long ago, for the property tests: seconds to minutes (around `overlap` when it is
    /// short, and the orphan age), or days.
    fn ago() -> impl proptest::strategy::Strategy<Value = time::Duration> {
        use proptest::prelude::*;
        prop_oneof![
            (0i64..1500).prop_map(time::Duration::seconds),
            (0i64..400).prop_map(time::Duration::days),
        ]
    }

    fn untagged_like(v: &VersionInfo) -> VersionInfo {
        let mut v = v.clone();
        v.tags.remove(TAG_MANAGED_BY);
        v
    }

    /// Found with world seed 47 (review5): a person wrote the published value again by hand
    /// (no tags), then `adopt = true` published a new version. Consumers read k1's value from the
    /// hand-written copy until that publish, but k1 was "superseded" since the copy's creation,
    /// and removed 2 s after the publish (overlap 4 s):
    ///
    /// ```text
    ///  1.8s keyvault.set_secret    kv-test/c1-secret  (by hand: a copy of the latest value)
    /// 13.4s adopt = true for c1
    /// 17.3s keyvault.set_secret    kv-test/c1-secret  key cbf394e9   (adopting)
    /// 19.3s graph.remove_password  key e028f98d       (k1, whose value the copy served)
    /// ```
    ///
    /// A version no tag attributes that may hold a credential's value serves it as well as one
    /// that names it: the overlap counts from the first version after it.
    #[test]
    fn a_copy_of_a_credentials_value_by_hand_serves_it_until_the_next_version() {
        let k1 = own("k1", "r1", NOW - days(30), NOW + days(60));
        let k2 = PasswordCredential {
            hint: Some("xyz".into()),
            ..own("k2", "r2", NOW - days(2), NOW + days(88))
        };
        let mut copy = version("h", "k1", NOW - days(20), NOW + days(60));
        copy.tags.clear();
        copy.value_hint = k1.hint.clone();
        let history = vec![
            version("v1", "k1", NOW - days(30), NOW + days(60)),
            copy,
            version("v2", "k2", NOW - days(2), NOW + days(88)),
        ];
        let mut o = observed(vec![k1.clone(), k2], Some(history.clone()));
        o.vault = VaultSecret::Present {
            latest: history[2].clone(),
            history,
        };
        let p = plan(
            &o,
            &PolicyView {
                adopt: true,
                ..policy()
            },
            NOW,
        );
        assert!(
            p.removals.is_empty(),
            "k1's value was served until 2 days ago (overlap 7 days): {:?}",
            p.removals
        );
        assert_eq!(
            p.next_retirement,
            Some(NOW - days(2) + days(7) + CLOCK_RESOLUTION)
        );
        // Once the version after the copy is older than overlap, k1 goes.
        let later = plan(
            &o,
            &PolicyView {
                adopt: true,
                ..policy()
            },
            NOW + days(6),
        );
        assert_eq!(later.removals.len(), 1, "{:?}", later.removals);
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
        if let VaultSecret::Present { history, latest } = &mut o.vault {
            history[0].enabled = false;
            latest.enabled = false;
        }
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
            Some(RotateReason::PublishedCredentialGone { key_id: g("k1") })
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
            Some(RotateReason::PublishedCredentialGone { key_id: g("k1") })
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
                key_id: g("k1"),
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
    fn removes_an_orphan_older_than_verify_timeout_plus_the_orphan_margin() {
        let mut o = healthy();
        o.passwords.push(own(
            "k9",
            "r9",
            NOW - time::Duration::minutes(11),
            NOW + days(90),
        ));
        let p = plan(&o, &policy(), NOW);
        assert_eq!(
            p.removals,
            vec![Removal {
                key_id: g("k9"),
                reason: RemovalReason::Orphan {
                    rotation_id: rid("r9")
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
        o.abandoned = vec![AbandonedAttempt {
            rotation_id: rid("r9"),
            reached_publishing: false,
        }];
        let p = plan(&o, &policy(), NOW);
        assert_eq!(
            p.removals,
            vec![Removal {
                key_id: g("k9"),
                reason: RemovalReason::Abandoned {
                    rotation_id: rid("r9")
                }
            }]
        );
    }

    #[test]
    fn a_clock_skewed_by_more_than_two_minutes_delays_removals_by_the_skew_but_not_rotation() {
        // k1 was superseded overlap + 60 s ago: due by the local clock, not by one 180 s off.
        let superseded = NOW - days(7) - time::Duration::seconds(60);
        let mut o = observed(
            vec![
                own("k1", "r1", NOW - days(80), NOW + days(10)),
                own("k2", "r2", superseded, NOW + days(20)),
            ],
            Some(vec![
                version("v1", "k1", NOW - days(80), NOW + days(10)),
                version("v2", "k2", superseded, NOW + days(20)),
            ]),
        );
        assert_eq!(plan(&o, &policy(), NOW).removals.len(), 1, "no skew");
        o.skew_seconds = 180;
        let p = plan(&o, &policy(), NOW);
        assert!(p.removals.is_empty());
        assert!(p.rotate.is_some(), "skew never stops rotation");
        assert!(p.notes.iter().any(|n| n.contains("180 s off")));
        assert_eq!(
            p.next_retirement,
            Some(superseded + days(7) + time::Duration::seconds(180) + CLOCK_RESOLUTION),
            "looked at again when both clocks agree"
        );
        o.skew_seconds = -180;
        assert!(plan(&o, &policy(), NOW).removals.is_empty());
        o.skew_seconds = 50;
        assert_eq!(
            plan(&o, &policy(), NOW).removals.len(),
            1,
            "due by both clocks"
        );
        o.skew_seconds = -61;
        assert!(
            plan(&o, &policy(), NOW).removals.is_empty(),
            "a skew under two minutes is waited out too"
        );
    }

    #[test]
    fn a_wait_for_the_slot_always_lands_in_the_future() {
        // A slot that "should" have freed already (the removal is blocked by a skewed clock)
        // must not make the daemon loop at once.
        let orphan = own("k9", "r9", NOW - days(1), NOW + days(1));
        let mut o = observed(
            vec![own("k1", "r1", NOW - days(70), NOW + days(20)), orphan],
            Some(vec![version("v1", "k1", NOW - days(70), NOW + days(20))]),
        );
        o.password_cap = Some(2);
        o.skew_seconds = 100_000;
        let p = plan(&o, &policy(), NOW);
        match p.blocked {
            Some(Blocked::WaitingForSlot { until }) => assert!(until > NOW, "{until}"),
            other => panic!("{other:?}"),
        }
        // An orphan without a start date is never old enough for the orphan rule: no time
        // frees its slot, and a person is asked to.
        o.passwords[1].start = None;
        o.skew_seconds = 0;
        let p = plan(&o, &policy(), NOW);
        assert!(
            matches!(&p.blocked, Some(Blocked::SlotHeldUnproven { key_id, .. }) if *key_id == g("k9")),
            "{:?}",
            p.blocked
        );
    }

    #[test]
    fn a_missing_vault_secret_is_no_evidence_against_an_own_credential() {
        // The client moved to a location where the secret does not exist yet (or was
        // deleted): the credential published elsewhere, and even an old credential made for
        // this location, stay; a new secret is published first.
        let mut elsewhere = own("k1", "r1", NOW - days(10), NOW + days(80));
        elsewhere.display_name = Some(format!("secret-rotator:prod:dicom:ffffffff-{:032x}", 1));
        let o = observed(
            vec![elsewhere, own("k2", "r2", NOW - days(1), NOW + days(89))],
            None,
        );
        let p = plan(&o, &policy(), NOW);
        assert!(p.removals.is_empty(), "{:?}", p.removals);
        assert_eq!(p.rotate, Some(RotateReason::NoPublishedSecret));
    }

    #[test]
    fn an_attempt_that_never_reached_publishing_goes_even_when_the_secret_is_missing() {
        let mut o = observed(
            vec![own(
                "k9",
                "r9",
                NOW - time::Duration::seconds(10),
                NOW + days(1),
            )],
            None,
        );
        o.abandoned = vec![AbandonedAttempt {
            rotation_id: rid("r9"),
            reached_publishing: false,
        }];
        assert_eq!(plan(&o, &policy(), NOW).removals.len(), 1);
    }

    #[test]
    fn a_soft_deleted_secret_blocks_the_client_and_removes_nothing() {
        let mut o = observed(
            vec![
                own("k1", "r1", NOW - days(30), NOW + days(60)),
                own("k2", "r2", NOW - days(20), NOW + days(70)),
            ],
            None,
        );
        o.vault = VaultSecret::SoftDeleted;
        o.abandoned = vec![AbandonedAttempt {
            rotation_id: rid("r2"),
            reached_publishing: true,
        }];
        let p = plan(&o, &policy(), NOW);
        assert!(p.removals.is_empty());
        assert_eq!(p.rotate, None);
        let b = p.blocked.expect("blocked");
        assert!(b.is_failure());
        assert!(b.to_string().contains("recover it"), "{b}");
        assert!(b.to_string().contains("purge it"), "{b}");
    }

    #[test]
    fn a_credential_made_for_another_location_goes_only_after_overlap_from_the_publish_here() {
        let mut old = own("k1", "r1", NOW - days(30), NOW + days(60));
        old.display_name = Some(format!("secret-rotator:prod:dicom:ffffffff-{:032x}", 1));
        let fresh = observed(
            vec![old.clone(), own("k2", "r2", NOW - days(2), NOW + days(88))],
            Some(vec![version("v2", "k2", NOW - days(2), NOW + days(88))]),
        );
        let p = plan(&fresh, &policy(), NOW);
        assert!(p.removals.is_empty(), "within overlap of the new publish");
        assert_eq!(p.next_retirement, Some(NOW + days(5) + CLOCK_RESOLUTION));
        let later = observed(
            vec![old, own("k2", "r2", NOW - days(8), NOW + days(82))],
            Some(vec![version("v2", "k2", NOW - days(8), NOW + days(82))]),
        );
        assert_eq!(
            plan(&later, &policy(), NOW).removals,
            vec![Removal {
                key_id: g("k1"),
                reason: RemovalReason::Migrated {
                    since: NOW - days(8)
                }
            }]
        );
    }

    /// The location tag of a location the tests' client has left.
    const FORMER: &str = "ffffffff";

    /// An own credential made for [`FORMER`].
    fn own_at_former(
        key: &str,
        n: u32,
        start: OffsetDateTime,
        end: OffsetDateTime,
    ) -> PasswordCredential {
        let mut c = own(key, "unused", start, end);
        c.display_name = Some(format!("secret-rotator:prod:dicom:{FORMER}-{n:032x}"));
        c
    }

    fn former(secret: VaultSecret) -> FormerLocation {
        FormerLocation {
            tag: FORMER.into(),
            name: "secret 'old' in vault https://kv".into(),
            vault_url: url::Url::parse("https://kv.vault.azure.net/").unwrap(),
            secret_name: "old".into(),
            secret,
        }
    }

    /// A two-password app moved to a new secret name, nothing published there yet: k1 and k2
    /// were made for the old name, where k2 is the latest and k1 was superseded 20 days ago.
    fn capped_and_moved(with_former: bool) -> Observed {
        let history = vec![
            version("v1", "k1", NOW - days(30), NOW + days(60)),
            version("v2", "k2", NOW - days(20), NOW + days(70)),
        ];
        let mut o = observed(
            vec![
                own_at_former("k1", 1, NOW - days(30), NOW + days(60)),
                own_at_former("k2", 2, NOW - days(20), NOW + days(70)),
            ],
            None,
        );
        o.password_cap = Some(2);
        if with_former {
            o.former = vec![former(VaultSecret::Present {
                latest: history[1].clone(),
                history,
            })];
        }
        o
    }

    #[test]
    fn a_moved_capped_app_frees_the_slot_of_a_credential_superseded_past_overlap_where_it_was() {
        // Without a read of the old location (the store lost its address) nothing proves
        // either credential unread, and no time frees a slot: nothing is removed, and the
        // client is blocked naming the older one and the step.
        let p = plan(&capped_and_moved(false), &policy(), NOW);
        assert!(p.removals.is_empty());
        let b = p.blocked.expect("blocked");
        assert_eq!(
            b,
            Blocked::SlotHeldUnproven {
                key_id: g("k1"),
                made_for:
                    "a location the client has left whose address the state store does not hold"
                        .into(),
            }
        );
        assert!(b.is_failure() && b.wait_until().is_none());
        // With it: k1 is superseded there for longer than overlap and frees the slot; k2, what
        // consumers of the old location read, stays until overlap after a publish here.
        let p = plan(&capped_and_moved(true), &policy(), NOW);
        assert_eq!(
            p.removals,
            vec![Removal {
                key_id: g("k1"),
                reason: RemovalReason::SupersededAtFormer {
                    since: NOW - days(20),
                    tag: FORMER.into(),
                    name: "secret 'old' in vault https://kv".into(),
                }
            }]
        );
        assert_eq!(p.rotate, Some(RotateReason::NoPublishedSecret));
        assert_eq!(p.blocked, None);
    }

    #[test]
    fn a_capped_app_whose_slots_no_read_can_free_names_the_credential_whose_location_holds_nothing()
    {
        // The client moved here from the old name, where k1 is still the latest; k2, made for
        // here, was being published when its process died, and here holds no secret (it never
        // landed, or a secret holding it was purged). Neither is removed, and nothing times
        // either: the client is blocked, naming k2 (no consumer reads it from Key Vault).
        let history = vec![version("v1", "k1", NOW - days(30), NOW + days(60))];
        let mut o = observed(
            vec![
                own_at_former("k1", 1, NOW - days(30), NOW + days(60)),
                own("k2", "r2", NOW - days(29), NOW + days(61)),
            ],
            None,
        );
        o.password_cap = Some(2);
        o.former = vec![former(VaultSecret::Present {
            latest: history[0].clone(),
            history,
        })];
        o.abandoned = vec![AbandonedAttempt {
            rotation_id: rid("r2"),
            reached_publishing: true,
        }];
        let p = plan(&o, &policy(), NOW);
        assert!(p.removals.is_empty(), "{:?}", p.removals);
        assert_eq!(p.rotate, None);
        let b = p.blocked.expect("blocked");
        let Blocked::SlotHeldUnproven { key_id, made_for } = &b else {
            panic!("{b:?}");
        };
        assert_eq!(key_id, &g("k2"));
        assert!(made_for.contains("holds no secret"), "{made_for}");
        assert!(b.to_string().contains("remove it by hand"), "{b}");
        // A soft-deleted old name is said to be so (recovered, it serves k1 again).
        o.former[0].secret = VaultSecret::SoftDeleted;
        let (rank, words) = made_for_words(Some(&format!("{FORMER}-{:032x}", 1)), &o);
        assert_eq!(rank, 1);
        assert!(words.contains("soft-deleted"), "{words}");
        // Once the old name's secret is gone too, the older credential is named.
        o.former[0].secret = VaultSecret::Absent;
        let p = plan(&o, &policy(), NOW);
        assert!(
            matches!(&p.blocked, Some(Blocked::SlotHeldUnproven { key_id, .. }) if *key_id == g("k1")),
            "{:?}",
            p.blocked
        );
    }

    #[test]
    fn a_slot_held_by_a_credential_whose_marker_names_no_location_says_so_in_words() {
        // Two credentials of this client from before markers carried a location, nothing
        // published: the message names the older and reads as a sentence.
        let legacy = |key: &str, start| {
            let mut c = own(key, "unused", start, NOW + days(60));
            c.display_name = Some(format!("secret-rotator:prod:dicom:legacy-{key}"));
            c
        };
        let mut o = observed(
            vec![legacy("k1", NOW - days(30)), legacy("k2", NOW - days(20))],
            None,
        );
        o.password_cap = Some(2);
        let b = plan(&o, &policy(), NOW).blocked.expect("blocked");
        assert!(matches!(&b, Blocked::SlotHeldUnproven { key_id, .. } if *key_id == g("k1")));
        let text = b.to_string();
        assert!(
            !text.contains("made for no location it names"),
            "not a sentence a person can act on: {text}"
        );
        assert!(text.contains("before"), "{text}");
    }

    #[test]
    fn a_wait_for_the_slot_is_not_timed_by_a_credential_whose_value_consumers_read() {
        // adopt = true. k1 was published, then k2; then a person rolled the secret back by
        // hand to k1's value (hint "abc"). k1's overlap ended long ago, but consumers read its
        // value: it stays. k2, superseded by the copy a day ago, frees the slot overlap after
        // that. The wait is for k2's time, not a minute at a time until then.
        let mut k2 = own("k2", "r2", NOW - days(20), NOW + days(70));
        k2.hint = Some("xyz".into());
        let mut by_hand = version("h", "k1", NOW - days(1), NOW + days(60));
        by_hand.tags.clear();
        by_hand.value_hint = Some("abc".into());
        let mut o = observed(
            vec![own("k1", "r1", NOW - days(30), NOW + days(60)), k2],
            Some(vec![
                version("v1", "k1", NOW - days(30), NOW + days(60)),
                version("v2", "k2", NOW - days(20), NOW + days(70)),
                by_hand,
            ]),
        );
        o.password_cap = Some(2);
        let adopt = PolicyView {
            adopt: true,
            ..policy()
        };
        let p = plan(&o, &adopt, NOW);
        assert!(p.removals.is_empty(), "{:?}", p.removals);
        let until = NOW - days(1) + std_to_time(adopt.overlap) + CLOCK_RESOLUTION;
        assert_eq!(p.blocked, Some(Blocked::WaitingForSlot { until }));
        // With k2 gone (removed at that time) and, in its slot, a credential that nothing
        // times (from before markers named a location, made after the last managed version),
        // the wait would never end: a person is asked, and not about k1.
        let mut legacy = own("k3", "unused", NOW - days(10), NOW + days(80));
        legacy.display_name = Some("secret-rotator:prod:dicom:legacy-k3".into());
        legacy.hint = Some("xyz".into());
        o.passwords[1] = legacy;
        let p = plan(&o, &adopt, NOW);
        assert!(
            matches!(&p.blocked, Some(Blocked::SlotHeldUnproven { key_id, .. }) if *key_id == g("k3")),
            "{:?}",
            p.blocked
        );
    }

    #[test]
    fn a_slot_held_unproven_never_names_the_credential_whose_value_consumers_here_read() {
        // adopt = true. k1 is the latest at the old name; here, q's publish died and a person
        // then copied the old name's value (k1's, hint "abc") into a version by hand. Nothing
        // times either; consumers at both names read k1, and q's value is nowhere.
        let history = vec![version("v1", "k1", NOW - days(30), NOW + days(60))];
        let mut q = own("q", "r2", NOW - days(2), NOW + days(88));
        q.hint = Some("xyz".into());
        let mut by_hand = version("h", "k1", NOW - days(1), NOW + days(60));
        by_hand.tags.clear();
        by_hand.value_hint = Some("abc".into());
        let mut o = observed(
            vec![own_at_former("k1", 1, NOW - days(30), NOW + days(60)), q],
            Some(vec![by_hand]),
        );
        o.password_cap = Some(2);
        o.former = vec![former(VaultSecret::Present {
            latest: history[0].clone(),
            history,
        })];
        o.abandoned = vec![AbandonedAttempt {
            rotation_id: rid("r2"),
            reached_publishing: true,
        }];
        let adopt = PolicyView {
            adopt: true,
            ..policy()
        };
        let p = plan(&o, &adopt, NOW);
        assert!(p.removals.is_empty(), "{:?}", p.removals);
        assert!(
            matches!(&p.blocked, Some(Blocked::SlotHeldUnproven { key_id, .. }) if *key_id == g("q")),
            "{:?}",
            p.blocked
        );
    }

    #[test]
    fn a_slot_held_for_a_former_location_whose_read_failed_says_so() {
        // The store holds the old name's address; its read failed this time.
        let mut o = capped_and_moved(false);
        o.former_unread = vec![(FORMER.into(), "secret 'old' in vault https://kv".into())];
        let p = plan(&o, &policy(), NOW);
        assert!(p.removals.is_empty());
        let Some(Blocked::SlotHeldUnproven { key_id, made_for }) = &p.blocked else {
            panic!("{:?}", p.blocked);
        };
        assert_eq!(key_id, &g("k1"));
        assert!(
            made_for.starts_with("secret 'old' in vault https://kv")
                && made_for.contains("could not be read"),
            "{made_for}"
        );
    }

    /// A two-password app back at its location: `here` (key, published that long ago, expiring
    /// in) is published here; `there` is what the location it left serves.
    fn capped_back(
        here: (&str, time::Duration, time::Duration),
        there: (&str, time::Duration, time::Duration),
    ) -> Observed {
        let (k, ago, left) = here;
        let (b, b_ago, b_left) = there;
        let at_b = vec![version("vb1", b, NOW - b_ago, NOW + b_left)];
        let mut o = observed(
            vec![
                own(k, "r1", NOW - ago, NOW + left),
                own_at_former(b, 1, NOW - b_ago, NOW + b_left),
            ],
            Some(vec![version("v1", k, NOW - ago, NOW + left)]),
        );
        o.password_cap = Some(2);
        o.former = vec![former(VaultSecret::Present {
            latest: at_b[0].clone(),
            history: at_b,
        })];
        o
    }

    #[test]
    fn a_capped_app_that_moved_back_waits_for_the_slot_from_its_first_reconcile_there() {
        // k1 has been published here for 60 days and expires within renew_before. The client
        // went to the old name, published k2 there 5 days ago (its consumers read it), and is
        // back: the store has no arrival here yet (it records it at this reconcile).
        let mut o = capped_back(("k1", days(60), days(10)), ("k2", days(5), days(85)));
        o.arrived_at = None;
        let p = plan(&o, &policy(), NOW);
        assert!(p.removals.is_empty(), "{:?}", p.removals);
        // k2 retires overlap after the arrival, which is now: the client waits until then,
        // as the next reconcile (with the store's record) does.
        let until = NOW + std_to_time(policy().overlap) + CLOCK_RESOLUTION;
        assert_eq!(p.blocked, Some(Blocked::WaitingForSlot { until }));
        o.arrived_at = Some(NOW);
        assert_eq!(
            plan(&o, &policy(), NOW).blocked,
            Some(Blocked::WaitingForSlot { until })
        );
        // Without the record nothing is ever removed, however late.
        o.arrived_at = None;
        assert!(plan(&o, &policy(), NOW + days(30)).removals.is_empty());
    }

    #[test]
    fn a_young_orphan_at_a_former_location_frees_its_slot_at_the_orphan_age() {
        // k1 is the latest at the old name (its consumers read it); k2 was made for the old
        // name a minute ago, after its history began, and its process died publishing it.
        // Nothing is published here. The orphan rule there frees k2's slot at the orphan age:
        // the client waits until then, and no person is asked to remove anything (least of
        // all k1).
        let history = vec![version("v1", "k1", NOW - days(30), NOW + days(60))];
        let mut o = observed(
            vec![
                own_at_former("k1", 1, NOW - days(30), NOW + days(60)),
                own_at_former("k2", 2, NOW - time::Duration::minutes(1), NOW + days(90)),
            ],
            None,
        );
        o.password_cap = Some(2);
        o.former = vec![former(VaultSecret::Present {
            latest: history[0].clone(),
            history,
        })];
        let p = plan(&o, &policy(), NOW);
        assert!(p.removals.is_empty(), "{:?}", p.removals);
        let orphan_at = NOW - time::Duration::minutes(1)
            + std_to_time(policy().verify_timeout + ORPHAN_MARGIN)
            + CLOCK_RESOLUTION;
        assert_eq!(
            p.blocked,
            Some(Blocked::WaitingForSlot { until: orphan_at })
        );
        // An orphan has no overlap: the message does not say one ends.
        let text = p.blocked.as_ref().unwrap().to_string();
        assert!(!text.contains("overlap ends"), "{text}");
        // Then it goes, and the client rotates.
        let p = plan(&o, &policy(), orphan_at);
        assert_eq!(
            p.removals.iter().map(|r| &r.key_id).collect::<Vec<_>>(),
            vec![&g("k2")]
        );
        assert!(matches!(
            p.removals[0].reason,
            RemovalReason::OrphanAtFormer { .. }
        ));
        assert_eq!(p.rotate, Some(RotateReason::NoPublishedSecret));
    }

    #[test]
    fn a_credential_superseded_at_a_former_location_within_overlap_frees_its_slot_when_it_ends() {
        let mut o = capped_and_moved(true);
        let VaultSecret::Present { history, .. } = &mut o.former[0].secret else {
            unreachable!()
        };
        history[1].created = Some(NOW - days(2));
        let p = plan(&o, &policy(), NOW);
        assert!(p.removals.is_empty());
        assert_eq!(p.next_retirement, Some(NOW + days(5) + CLOCK_RESOLUTION));
        assert_eq!(
            p.blocked,
            Some(Blocked::WaitingForSlot {
                until: NOW + days(5) + CLOCK_RESOLUTION
            })
        );
    }

    #[test]
    fn a_former_location_proves_nothing_unless_read_and_present_and_not_what_it_serves() {
        let no_removal = |o: &Observed, why: &str| {
            assert!(plan(o, &policy(), NOW).removals.is_empty(), "{why}");
        };
        for secret in [VaultSecret::Absent, VaultSecret::SoftDeleted] {
            let mut o = capped_and_moved(true);
            o.former[0].secret = secret.clone();
            no_removal(&o, &format!("old location {secret:?}"));
        }
        // The client's own secret soft-deleted: nothing is removed at all.
        let mut o = capped_and_moved(true);
        o.vault = VaultSecret::SoftDeleted;
        no_removal(&o, "own secret soft-deleted");
        // Someone wrote k1's value back at the old location: its consumers read it.
        let mut o = capped_and_moved(true);
        o.passwords[0].hint = Some("k1v".into());
        let VaultSecret::Present { latest, .. } = &mut o.former[0].secret else {
            unreachable!()
        };
        latest.value_hint = Some("k1v".into());
        no_removal(&o, "k1's value is what the old location serves");
        // Another location's read is no evidence for a credential made elsewhere.
        let mut o = capped_and_moved(true);
        o.former[0].tag = "eeeeeeee".into();
        let p = plan(&o, &policy(), NOW);
        assert!(
            p.removals.iter().all(|r| !matches!(
                r.reason,
                RemovalReason::SupersededAtFormer { .. } | RemovalReason::OrphanAtFormer { .. }
            )),
            "read of a location k1 was not made for: {:?}",
            p.removals
        );
        // A version written by hand on top of k2 there: k2 stays, k1 may go.
        let mut o = capped_and_moved(true);
        let VaultSecret::Present { history, latest } = &mut o.former[0].secret else {
            unreachable!()
        };
        let mut by_hand = version("v3", "k2", NOW - days(1), NOW + days(80));
        by_hand.tags.clear();
        history.push(by_hand.clone());
        *latest = by_hand;
        let p = plan(&o, &policy(), NOW);
        let removed: Vec<&str> = p.removals.iter().map(|r| r.key_id.as_str()).collect();
        assert_eq!(removed, [g("k1").as_str()]);
    }

    #[test]
    fn a_moved_clients_old_credential_gets_overlap_from_its_arrival_here_too() {
        // A -> B -> A -> B: b1 was published here (B) 10 days ago, on the first trip; the
        // client came back now. k1 is what A serves, and A's consumers were told to read it
        // until a moment ago.
        let at_a = vec![version("v1", "k1", NOW - days(30), NOW + days(60))];
        let mut o = observed(
            vec![
                own_at_former("k1", 1, NOW - days(30), NOW + days(60)),
                own("b1", "rb1", NOW - days(10), NOW + days(80)),
            ],
            Some(vec![version("vb1", "b1", NOW - days(10), NOW + days(80))]),
        );
        o.former = vec![former(VaultSecret::Present {
            latest: at_a[0].clone(),
            history: at_a,
        })];
        o.arrived_at = None;
        let p = plan(&o, &policy(), NOW);
        assert!(p.removals.is_empty(), "{:?}", p.removals);
        assert_eq!(p.next_retirement, Some(NOW + days(7) + CLOCK_RESOLUTION));
        // Arrived 6 days ago: a day to go. 8 days ago: it goes.
        o.arrived_at = Some(NOW - days(6));
        let p = plan(&o, &policy(), NOW);
        assert!(p.removals.is_empty());
        assert_eq!(p.next_retirement, Some(NOW + days(1) + CLOCK_RESOLUTION));
        o.arrived_at = Some(NOW - days(8));
        let p = plan(&o, &policy(), NOW);
        assert_eq!(
            p.removals,
            vec![Removal {
                key_id: g("k1"),
                reason: RemovalReason::Migrated {
                    since: NOW - days(8)
                }
            }]
        );
    }

    #[test]
    fn a_capped_app_back_where_it_was_frees_the_slot_of_the_credential_it_left_elsewhere() {
        // A -> B -> A: k1 is published here (A) and due for renewal; b1 is what B serves,
        // published after k1, and holds the other slot.
        let mut o = capped_back(("k1", days(70), days(20)), ("b1", days(9), days(80)));
        // Back for a day: B's consumers have 6 more days; the wait names its end.
        o.arrived_at = Some(NOW - days(1));
        let p = plan(&o, &policy(), NOW);
        assert!(p.removals.is_empty());
        assert_eq!(
            p.blocked,
            Some(Blocked::WaitingForSlot {
                until: NOW + days(6) + CLOCK_RESOLUTION
            })
        );
        // Back for 8 days: b1 goes, and the renewal has its slot.
        o.arrived_at = Some(NOW - days(8));
        let p = plan(&o, &policy(), NOW);
        assert_eq!(
            p.removals,
            vec![Removal {
                key_id: g("b1"),
                reason: RemovalReason::Migrated {
                    since: NOW - days(8)
                }
            }]
        );
        assert!(matches!(p.rotate, Some(RotateReason::ExpiresSoon { .. })));
        assert_eq!(p.blocked, None);
        // Without the store's record of the arrival, nothing tells when the client left B.
        o.arrived_at = None;
        assert!(plan(&o, &policy(), NOW).removals.is_empty());
    }

    #[test]
    fn a_capped_app_moved_twice_frees_the_slot_of_what_it_published_before_the_second_place() {
        // A -> B -> C: k1 is what A serves, b1 (published at B 8 days ago, after k1) what B
        // serves; nothing at C yet, and both slots taken.
        let at_a = vec![version("v1", "k1", NOW - days(30), NOW + days(60))];
        let at_b = vec![version("vb1", "b1", NOW - days(8), NOW + days(80))];
        let mut o = observed(
            vec![
                own_at_former("k1", 1, NOW - days(30), NOW + days(60)),
                cred(
                    "b1",
                    Some(&format!("secret-rotator:prod:dicom:eeeeeeee-{:032x}", 2)),
                    NOW - days(8),
                    NOW + days(80),
                ),
            ],
            None,
        );
        o.password_cap = Some(2);
        let mut b = former(VaultSecret::Present {
            latest: at_b[0].clone(),
            history: at_b,
        });
        b.tag = "eeeeeeee".into();
        b.name = "secret 'b' in vault https://kv".into();
        o.former = vec![
            former(VaultSecret::Present {
                latest: at_a[0].clone(),
                history: at_a,
            }),
            b,
        ];
        // At C for a day: A's consumers had 8 days of b1 but only a day since the client was
        // last anywhere near A for certain; the wait names when that ends.
        o.arrived_at = Some(NOW - days(1));
        let p = plan(&o, &policy(), NOW);
        assert!(p.removals.is_empty(), "{:?}", p.removals);
        assert_eq!(
            p.blocked,
            Some(Blocked::WaitingForSlot {
                until: NOW + days(6) + CLOCK_RESOLUTION
            })
        );
        // At C for 8 days: k1 goes (b1, what B serves, stays), and C gets its secret.
        o.arrived_at = Some(NOW - days(8));
        let p = plan(&o, &policy(), NOW);
        assert_eq!(
            p.removals,
            vec![Removal {
                key_id: g("k1"),
                reason: RemovalReason::MigratedElsewhere {
                    since: NOW - days(8),
                    tag: "eeeeeeee".into(),
                    name: "secret 'b' in vault https://kv".into(),
                }
            }]
        );
        assert_eq!(p.rotate, Some(RotateReason::NoPublishedSecret));
        assert_eq!(p.blocked, None);
    }

    #[test]
    fn a_version_no_tag_attributes_that_may_hold_its_value_proves_no_orphan() {
        // A version without tags (wiped, or written by hand) created after the orphan
        // candidate: unless its value's hint is known and is not the credential's, it may
        // hold that credential's value.
        let untagged = |hint: Option<&str>| {
            let mut v = version("vx", "k1", NOW - time::Duration::minutes(5), NOW + days(80));
            v.tags.clear();
            v.value_hint = hint.map(str::to_string);
            v
        };
        let orphan = own(
            "k9",
            "r9",
            NOW - time::Duration::minutes(11),
            NOW + days(90),
        );
        for (hint, removed) in [(None, false), (Some("abc"), false), (Some("zzz"), true)] {
            let o = observed(
                vec![
                    own("k1", "r1", NOW - days(10), NOW + days(80)),
                    orphan.clone(),
                ],
                Some(vec![
                    version("v1", "k1", NOW - days(10), NOW + days(80)),
                    untagged(hint),
                    version("v3", "k1", NOW - time::Duration::minutes(1), NOW + days(80)),
                ]),
            );
            let p = plan(&o, &policy(), NOW);
            assert_eq!(
                p.removals.iter().any(|r| r.key_id == g("k9")),
                removed,
                "{hint:?}"
            );
        }
        // Created before the credential: it cannot hold its value.
        let mut before = untagged(None);
        before.created = Some(NOW - days(1));
        let o = observed(
            vec![
                own("k1", "r1", NOW - days(10), NOW + days(80)),
                orphan.clone(),
            ],
            Some(vec![
                version("v1", "k1", NOW - days(10), NOW + days(80)),
                before,
                version("v3", "k1", NOW - time::Duration::minutes(1), NOW + days(80)),
            ]),
        );
        assert!(
            plan(&o, &policy(), NOW)
                .removals
                .iter()
                .any(|r| r.key_id == g("k9"))
        );
        // The same at a location the client has left (OrphanAtFormer).
        for (hint, removed) in [(None, false), (Some("abc"), false), (Some("zzz"), true)] {
            let mut o = capped_and_moved(true);
            o.password_cap = None;
            o.passwords.push(own_at_former(
                "k3",
                3,
                NOW - time::Duration::minutes(11),
                NOW + days(90),
            ));
            let VaultSecret::Present { history, .. } = &mut o.former[0].secret else {
                unreachable!()
            };
            history.insert(1, untagged(hint));
            let p = plan(&o, &policy(), NOW);
            assert_eq!(
                p.removals.iter().any(|r| r.key_id == g("k3")),
                removed,
                "{hint:?}"
            );
        }
    }

    #[test]
    fn a_revocation_during_a_move_revokes_what_the_old_location_serves_or_refuses() {
        let mut pol = policy();
        pol.revoke_previous = true;
        pol.force = true;
        // Moved, nothing published at the new location: the old location serves k2.
        let mut o = capped_and_moved(true);
        o.password_cap = None;
        let p = plan(&o, &pol, NOW);
        assert_eq!(p.revoke, Some(g("k2")));
        assert_eq!(p.blocked, None);
        assert_eq!(p.rotate, Some(RotateReason::Forced));
        // The old location could not be read: refused, nothing is done.
        let mut o = capped_and_moved(false);
        o.password_cap = None;
        let p = plan(&o, &pol, NOW);
        assert!(
            matches!(p.blocked, Some(Blocked::RevokeRefused { .. })),
            "{p:?}"
        );
        assert_eq!(p.rotate, None);
        // Nothing own anywhere: nothing to revoke, it rotates.
        let p = plan(&observed(vec![], None), &pol, NOW);
        assert_eq!(p.revoke, None);
        assert_eq!(p.blocked, None);
    }

    #[test]
    fn a_stale_intent_never_removes_what_a_location_read_shows_published() {
        // A store restored from a backup says k2's attempt never reached publishing; the old
        // location's read shows k2 is what it serves: k2 stays.
        let mut o = capped_and_moved(true);
        o.password_cap = None;
        o.abandoned = vec![AbandonedAttempt {
            rotation_id: format!("{FORMER}-{:032x}", 2),
            reached_publishing: false,
        }];
        let p = plan(&o, &policy(), NOW);
        assert!(!p.removals.iter().any(|r| r.key_id == g("k2")), "{p:?}");
        // Named by an older version there too (superseded within overlap): it stays.
        let VaultSecret::Present { history, latest } = &mut o.former[0].secret else {
            unreachable!()
        };
        let v3 = version("v3", "k3", NOW - days(1), NOW + days(80));
        history.push(v3.clone());
        *latest = v3;
        let p = plan(&o, &policy(), NOW);
        assert!(!p.removals.iter().any(|r| r.key_id == g("k2")), "{p:?}");
        // Its location not read (the store lost the address, or the read failed), or read
        // soft-deleted: the intent alone proves nothing about a credential made there.
        for former in [vec![], vec![former(VaultSecret::SoftDeleted)]] {
            let mut o = capped_and_moved(false);
            o.former = former;
            o.abandoned = vec![AbandonedAttempt {
                rotation_id: format!("{FORMER}-{:032x}", 2),
                reached_publishing: false,
            }];
            assert!(plan(&o, &policy(), NOW).removals.is_empty());
        }
        // Read, absent there, and named nowhere: the intent is believed.
        let mut o = capped_and_moved(false);
        o.former = vec![former(VaultSecret::Absent)];
        o.abandoned = vec![AbandonedAttempt {
            rotation_id: format!("{FORMER}-{:032x}", 2),
            reached_publishing: false,
        }];
        let p = plan(&o, &policy(), NOW);
        assert_eq!(p.removals.len(), 1);
        assert!(matches!(
            p.removals[0].reason,
            RemovalReason::Abandoned { .. }
        ));
    }

    #[test]
    fn an_orphan_made_for_a_former_location_goes_after_the_orphan_age() {
        let mut o = capped_and_moved(true);
        o.passwords.push(own_at_former(
            "k3",
            3,
            NOW - time::Duration::minutes(3),
            NOW + days(90),
        ));
        assert!(
            !plan(&o, &policy(), NOW)
                .removals
                .iter()
                .any(|r| r.key_id == g("k3")),
            "an attempt may still be publishing it"
        );
        o.passwords[2].start = Some(NOW - time::Duration::minutes(11));
        assert!(plan(&o, &policy(), NOW).removals.contains(&Removal {
            key_id: g("k3"),
            reason: RemovalReason::OrphanAtFormer {
                rotation_id: format!("{FORMER}-{:032x}", 3),
                tag: FORMER.into(),
                name: "secret 'old' in vault https://kv".into(),
            }
        }));
    }

    #[test]
    fn an_attempt_that_reached_publishing_waits_for_the_orphan_age() {
        let mut o = healthy();
        o.passwords.push(own(
            "k9",
            "r9",
            NOW - time::Duration::seconds(30),
            NOW + days(90),
        ));
        o.abandoned = vec![AbandonedAttempt {
            rotation_id: rid("r9"),
            reached_publishing: true,
        }];
        assert!(plan(&o, &policy(), NOW).removals.is_empty());
        o.passwords[1].start = Some(NOW - time::Duration::minutes(11));
        assert_eq!(
            plan(&o, &policy(), NOW).removals,
            vec![Removal {
                key_id: g("k9"),
                reason: RemovalReason::Orphan {
                    rotation_id: rid("r9")
                }
            }]
        );
    }

    #[test]
    fn the_latest_version_is_what_get_returns_not_the_last_of_a_sort() {
        // Two versions in one second: the listing sorts v2 last, but GET says v1 is what
        // consumers read; k1 is the published credential and k2 is not.
        let t = NOW - days(1);
        let history = vec![
            version("v1", "k1", t, NOW + days(89)),
            version("v2", "k2", t, NOW + days(89)),
        ];
        let mut o = observed(
            vec![
                own("k1", "r1", t, NOW + days(89)),
                own("k2", "r2", t, NOW + days(89)),
            ],
            Some(history.clone()),
        );
        o.vault = VaultSecret::Present {
            latest: history[0].clone(),
            history,
        };
        let p = plan(&o, &policy(), NOW);
        assert_eq!(p.published.unwrap().key_id, Some(g("k1")));
        assert!(p.removals.iter().all(|r| r.key_id != g("k1")));
    }

    #[test]
    fn a_key_id_tag_that_is_not_a_guid_names_no_credential() {
        let mut o = healthy();
        if let VaultSecret::Present { history, latest } = &mut o.vault {
            history[0]
                .tags
                .insert(TAG_KEY_ID.into(), "../../etc\u{1b}[31m".into());
            latest.tags = history[0].tags.clone();
        }
        let p = plan(&o, &policy(), NOW);
        assert_eq!(p.rotate, Some(RotateReason::PublishedWithoutKeyId));
        assert!(p.notes.iter().any(|n| n.contains("not a key id")));
    }

    #[test]
    fn revoke_removes_only_a_credential_with_this_clients_marker() {
        let mut pol = policy();
        pol.force = true;
        pol.revoke_previous = true;
        let p = plan(&healthy(), &pol, NOW);
        assert_eq!(p.revoke, Some(g("k1")));
        assert_eq!(p.rotate, Some(RotateReason::Forced));

        // The published credential carries another installation's marker (daemon.instance was
        // renamed), or a forged tag points at a foreign credential: refused, nothing written.
        for name in ["secret-rotator:old-instance:dicom:r1", "made in the portal"] {
            let mut o = healthy();
            o.passwords[0].display_name = Some(name.into());
            let p = plan(&o, &pol, NOW);
            assert_eq!(p.revoke, None);
            assert_eq!(p.rotate, None);
            assert!(
                matches!(&p.blocked, Some(Blocked::RevokeRefused { reason }) if reason.contains("marker")),
                "{:?}",
                p.blocked
            );
        }
    }

    #[test]
    fn revoke_with_nothing_left_to_revoke_still_rotates() {
        let mut pol = policy();
        pol.force = true;
        pol.revoke_previous = true;
        let p = plan(&observed(vec![], None), &pol, NOW);
        assert_eq!(p.rotate, Some(RotateReason::Forced));
        assert_eq!((p.revoke, p.blocked), (None, None));
        // The published credential is gone for certain: its value is refused.
        let mut o = observed(
            vec![],
            Some(vec![version("v1", "k1", NOW - days(1), NOW + days(89))]),
        );
        o.published_probe = Some(Probe::Rejected);
        let p = plan(&o, &pol, NOW);
        assert!(p.rotate.is_some() && p.blocked.is_none() && p.revoke.is_none());
        // Only missing from a read that may lag: refused, it may still sign in.
        let o = observed(
            vec![],
            Some(vec![version(
                "v1",
                "k1",
                NOW - time::Duration::seconds(20),
                NOW + days(89),
            )]),
        );
        assert!(matches!(
            plan(&o, &pol, NOW).blocked,
            Some(Blocked::RevokeRefused { .. })
        ));
    }

    #[test]
    fn a_version_written_by_hand_on_top_keeps_our_last_credential() {
        let mut hand = version("v3", "x", NOW - days(10), NOW + days(100));
        hand.tags.clear();
        let o = observed(
            vec![
                own("k1", "r1", NOW - days(80), NOW + days(10)),
                own("k2", "r2", NOW - days(60), NOW + days(30)),
            ],
            Some(vec![
                version("v1", "k1", NOW - days(80), NOW + days(10)),
                version("v2", "k2", NOW - days(60), NOW + days(30)),
                hand,
            ]),
        );
        let p = plan(&o, &policy(), NOW);
        assert_eq!(p.blocked, Some(Blocked::UnmanagedSecret));
        let removed: Vec<_> = p.removals.iter().map(|r| r.key_id.clone()).collect();
        assert_eq!(removed, vec![g("k1")], "k2, our last, stays");
    }

    #[test]
    fn adopting_a_disabled_version_written_by_hand_keeps_our_last_credential() {
        // A person wrote a copy of our latest value by hand, then disabled it: its value can no
        // longer be read, so nothing shows it is not k2's. Adopting must not retire k2.
        let mut hand = version("v3", "x", NOW - days(10), NOW + days(100));
        hand.tags.clear();
        hand.enabled = false;
        hand.value_hint = None;
        let o = observed(
            vec![
                own("k1", "r1", NOW - days(80), NOW + days(10)),
                own("k2", "r2", NOW - days(60), NOW + days(30)),
            ],
            Some(vec![
                version("v1", "k1", NOW - days(80), NOW + days(10)),
                version("v2", "k2", NOW - days(60), NOW + days(30)),
                hand.clone(),
            ]),
        );
        let adopting = PolicyView {
            adopt: true,
            ..policy()
        };
        let removed = |o: &Observed| -> Vec<String> {
            plan(o, &adopting, NOW)
                .removals
                .iter()
                .map(|r| r.key_id.clone())
                .collect()
        };
        assert_eq!(removed(&o), vec![g("k1")], "k2, our last, stays");
        // Readable, and not k2's value: adopting retires k2 after overlap.
        let mut readable = o.clone();
        if let VaultSecret::Present { history, latest } = &mut readable.vault {
            latest.enabled = true;
            latest.value_hint = Some("zzz".into());
            *history.last_mut().unwrap() = latest.clone();
        }
        assert_eq!(removed(&readable), vec![g("k1"), g("k2")]);
    }

    #[test]
    fn a_capped_app_whose_slots_are_kept_under_a_disabled_hand_written_version_names_the_step() {
        // Both slots hold our last credentials (written in one second, so either may be the
        // one consumers go back to), under a disabled version a person wrote: no time frees a
        // slot, so the client is blocked with what to do, not "waiting" forever.
        let t = NOW - days(10);
        let mut hand = version("v3", "x", NOW - days(1), NOW + days(100));
        hand.tags.clear();
        hand.enabled = false;
        hand.value_hint = None;
        let mut o = observed(
            vec![
                own("k1", "r1", t, NOW + days(80)),
                own("k2", "r2", t, NOW + days(80)),
            ],
            Some(vec![
                version("v1", "k1", t, NOW + days(80)),
                version("v2", "k2", t, NOW + days(80)),
                hand,
            ]),
        );
        o.password_cap = Some(2);
        let adopting = PolicyView {
            adopt: true,
            ..policy()
        };
        let p = plan(&o, &adopting, NOW);
        assert!(p.removals.is_empty(), "{:?}", p.removals);
        assert_eq!(p.rotate, None);
        let b = p.blocked.expect("blocked");
        assert!(
            matches!(
                &b,
                Blocked::SlotKeptUnderHandWrittenVersion {
                    latest_disabled: true,
                    ..
                }
            ),
            "{b:?}"
        );
        assert!(b.is_failure(), "only a person can free the slot");
        assert_eq!(b.wait_until(), None);
        let text = b.to_string();
        assert!(text.contains("enable that version"), "{text}");
    }

    #[test]
    fn a_successor_enabled_after_its_creation_supersedes_from_the_enable() {
        // A version disabled, then enabled again two days ago: readers got it from then on.
        let mut v2 = version("v2", "k2", NOW - days(10), NOW + days(80));
        v2.updated = Some(NOW - days(2));
        let h = vec![version("v1", "k1", NOW - days(80), NOW + days(10)), v2];
        assert_eq!(superseded_since(&h, &g("k1")), Some(NOW - days(2)));
        // An update older than the creation (a clock step) changes nothing.
        let mut h2 = h.clone();
        h2[1].updated = Some(NOW - days(30));
        assert_eq!(superseded_since(&h2, &g("k1")), Some(NOW - days(10)));
    }

    #[test]
    fn versions_of_one_second_prove_nothing_about_each_others_order() {
        // Key Vault's `created` is whole seconds. v1 and v2 share one: either may be newer, so
        // neither supersedes the other, and under a version written by hand on top both of
        // their credentials are "our last".
        let t = NOW - days(10);
        let mut hand = version("v3", "x", NOW - days(1), NOW + days(100));
        hand.tags.clear();
        for order in [["k1", "k2"], ["k2", "k1"]] {
            let history = vec![
                version("v1", order[0], t, NOW + days(80)),
                version("v2", order[1], t, NOW + days(80)),
                hand.clone(),
            ];
            assert_eq!(superseded_since(&history[..2], &g(order[0])), None);
            assert_eq!(
                superseded_since(&history, &g(order[0])),
                Some(NOW - days(1))
            );
            let o = observed(
                vec![
                    own("k1", "r1", t - days(1), NOW + days(80)),
                    own("k2", "r2", t - days(1), NOW + days(80)),
                ],
                Some(history),
            );
            let p = plan(&o, &policy(), NOW);
            assert!(p.removals.is_empty(), "{order:?}: {:?}", p.removals);
        }
    }

    #[test]
    fn the_credential_whose_hint_matches_the_value_consumers_read_is_never_removed() {
        // Tags wiped by a tool, or the value written back by hand: no tag names k1, but the
        // latest version's value starts like k1's secret.
        let mut latest = version("v3", "x", NOW - days(1), NOW + days(10));
        latest.tags.clear();
        latest.value_hint = Some("k1h".into());
        let mut k1 = own("k1", "r1", NOW - days(80), NOW + days(10));
        k1.hint = Some("k1h".into());
        let mut o = observed(
            vec![k1, own("k2", "r2", NOW - days(60), NOW + days(30))],
            Some(vec![
                version("v1", "k1", NOW - days(80), NOW + days(10)),
                version("v2", "k2", NOW - days(60), NOW + days(30)),
                latest,
            ]),
        );
        let mut pol = policy();
        pol.adopt = true;
        let p = plan(&o, &pol, NOW);
        assert!(
            p.removals.iter().all(|r| r.key_id != g("k1")),
            "{:?}",
            p.removals
        );
        assert!(p.notes.iter().any(|n| n.contains("hint matches")));
        o.passwords[0].hint = Some("zzz".into());
        assert!(
            plan(&o, &pol, NOW)
                .removals
                .iter()
                .any(|r| r.key_id == g("k1"))
        );
    }

    #[test]
    fn a_successor_whose_hint_is_its_predecessors_retires_it_when_the_store_recorded_writing_it() {
        // The scale benchmark's stalled client: the new secret's first three characters were
        // the old one's (one credential in 290,000). The daemon wrote v2 with k2's value, so k1
        // is not what consumers read: retired after overlap like any superseded credential.
        let mut k1 = own("k1", "r1", NOW - days(80), NOW + days(10));
        k1.hint = Some("see".into());
        let mut k2 = own("k2", "r2", NOW - days(10), NOW + days(80));
        k2.hint = Some("see".into());
        let mut latest = version("v2", "k2", NOW - days(10), NOW + days(80));
        latest.value_hint = Some("see".into());
        let mut o = observed(
            vec![k1, k2],
            Some(vec![
                version("v1", "k1", NOW - days(80), NOW + days(10)),
                latest,
            ]),
        );
        let retires_k1 = |o: &Observed| {
            let p = plan(o, &policy(), NOW);
            let gone = p.removals.iter().any(|r| {
                r.key_id == g("k1")
                    && r.reason
                        == RemovalReason::Superseded {
                            since: NOW - days(10),
                        }
            });
            assert_eq!(
                gone,
                !p.notes.iter().any(|n| n.contains("hint matches")),
                "{p:?}"
            );
            gone
        };
        // Without the store's record, nothing tells a coincidence from a value written back.
        assert!(!retires_k1(&o));
        o.latest_written_with = Some(g("k2"));
        assert!(retires_k1(&o));
        // A record that disagrees with what the value's hint says explains nothing.
        o.passwords[1].hint = Some("zzz".into());
        assert!(!retires_k1(&o));
        o.passwords[1].hint = Some("see".into());
        // Nor one naming k1 itself, or a credential no longer there.
        o.latest_written_with = Some(g("k1"));
        assert!(!retires_k1(&o));
        o.latest_written_with = Some(g("gone"));
        assert!(!retires_k1(&o));
    }

    #[test]
    fn a_revocation_revokes_what_was_published_when_it_was_asked() {
        // k1 leaked; a duplicate request rotated to k2 after this one was asked.
        let o = observed(
            vec![
                own("k1", "r1", NOW - days(10), NOW + days(80)),
                own("k2", "r2", NOW - time::Duration::seconds(5), NOW + days(90)),
            ],
            Some(vec![
                version("v1", "k1", NOW - days(10), NOW + days(80)),
                version("v2", "k2", NOW - time::Duration::seconds(5), NOW + days(90)),
            ]),
        );
        let mut pol = policy();
        pol.force = true;
        pol.revoke_previous = true;
        let target = g("k1");
        pol.revoke_target = Some(&target);
        let p = plan(&o, &pol, NOW);
        assert_eq!(p.rotate, None, "the fresh secret is not replaced again");
        assert_eq!(p.revoke, None, "nor revoked");
        assert_eq!(
            p.removals,
            vec![Removal {
                key_id: g("k1"),
                reason: RemovalReason::Revoked
            }],
            "the leaked one goes if it is still there"
        );
        // Asked after k2 was published: k2 is the one to revoke, with a new secret first.
        let target = g("k2");
        pol.revoke_target = Some(&target);
        let p = plan(&o, &pol, NOW);
        assert_eq!(
            (p.rotate, p.revoke),
            (Some(RotateReason::Forced), Some(g("k2")))
        );
    }

    #[test]
    fn revoke_of_an_adopted_secret_needs_its_credential_identified() {
        let mut unmanaged = version("v0", "x", NOW - days(100), NOW + days(100));
        unmanaged.tags.clear();
        let mut o = observed(
            vec![cred("p1", Some("portal"), NOW - days(100), NOW + days(100))],
            Some(vec![unmanaged]),
        );
        let mut pol = policy();
        pol.adopt = true;
        pol.force = true;
        pol.revoke_previous = true;
        let p = plan(&o, &pol, NOW);
        assert!(matches!(p.blocked, Some(Blocked::RevokeRefused { .. })));
        assert_eq!(p.rotate, None);
        o.adopted_now = Some(g("p1"));
        let p = plan(&o, &pol, NOW);
        assert_eq!(p.revoke, Some(g("p1")));
        assert_eq!(p.rotate, Some(RotateReason::Forced));
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
            Some(Blocked::ForeignCredentialInSlot { key_id: g("f1") })
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
                until: NOW + days(5) + CLOCK_RESOLUTION
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
        assert_eq!(superseded_since(&h, &g("k1")), Some(NOW - days(20)));
        assert_eq!(superseded_since(&h, &g("k2")), None);
        assert_eq!(superseded_since(&h, &g("k9")), None);
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
            key_id: g("p1"),
            superseded_since: NOW - days(8),
        });
        let mut pol = policy();
        pol.adopt = true;
        assert_eq!(
            plan(&o, &pol, NOW).removals,
            vec![Removal {
                key_id: g("p1"),
                reason: RemovalReason::Adopted {
                    since: NOW - days(8)
                }
            }]
        );
        o.adopted = Some(Adopted {
            key_id: g("p1"),
            superseded_since: NOW - days(2),
        });
        assert!(
            plan(&o, &pol, NOW).removals.is_empty(),
            "still within overlap"
        );
        pol.adopt = false;
        o.adopted = Some(Adopted {
            key_id: g("p1"),
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
            Some(NOW + days(4) + CLOCK_RESOLUTION)
        );
        assert_eq!(plan(&healthy(), &policy(), NOW).next_retirement, None);
    }

    // The third cold review of the two-second margin and of `SlotKeptUnderHandWrittenVersion`.

    /// Whether the plan made at `at` removes `key`.
    fn removes_at(o: &Observed, pol: &PolicyView<'_>, key: &str, at: OffsetDateTime) -> bool {
        plan(o, pol, at).removals.iter().any(|r| r.key_id == g(key))
    }

    /// Checks that the time the plan names for `key` (its `next_retirement`, or the end of the
    /// wait for a slot) is exactly when the removal condition holds: not a second before (an
    /// early removal), and at once then (no reconcile that finds it "not yet" and loops).
    fn due_exactly_at(o: &Observed, pol: &PolicyView<'_>, key: &str, at: OffsetDateTime) {
        assert!(
            !removes_at(o, pol, key, at - time::Duration::seconds(1)),
            "{key} removed a second before {at} (skew {})",
            o.skew_seconds
        );
        assert!(
            removes_at(o, pol, key, at),
            "{key} not removed at {at}, the time the plan named (skew {})",
            o.skew_seconds
        );
    }

    #[test]
    fn every_timed_removal_waits_the_skew_and_two_seconds_and_is_due_when_the_plan_says() {
        for skew in [-7i64, 0, 7] {
            let margin = time::Duration::seconds(skew.abs()) + CLOCK_RESOLUTION;
            // Superseded here a day ago, overlap 7 days.
            let mut o = observed(
                vec![
                    own("k0", "r0", NOW - days(3), NOW + days(87)),
                    own("k1", "r1", NOW - days(1), NOW + days(89)),
                ],
                Some(vec![
                    version("v0", "k0", NOW - days(3), NOW + days(87)),
                    version("v1", "k1", NOW - days(1), NOW + days(89)),
                ]),
            );
            o.skew_seconds = skew;
            let at = NOW + days(6) + margin;
            assert_eq!(plan(&o, &policy(), NOW).next_retirement, Some(at));
            due_exactly_at(&o, &policy(), "k0", at);

            // Superseded two days ago at a location the client left: the slot's wait and the
            // retirement name the same time.
            let mut o = capped_and_moved(true);
            let VaultSecret::Present { history, .. } = &mut o.former[0].secret else {
                unreachable!()
            };
            history[1].created = Some(NOW - days(2));
            o.skew_seconds = skew;
            let at = NOW + days(5) + margin;
            let p = plan(&o, &policy(), NOW);
            assert_eq!(p.next_retirement, Some(at));
            assert_eq!(p.blocked.and_then(|b| b.wait_until()), Some(at));
            due_exactly_at(&o, &policy(), "k1", at);

            // A moved client's old credential, timed by the client's arrival here 6 days ago.
            let at_a = vec![version("v1", "k1", NOW - days(30), NOW + days(60))];
            let mut o = observed(
                vec![
                    own_at_former("k1", 1, NOW - days(30), NOW + days(60)),
                    own("b1", "rb1", NOW - days(10), NOW + days(80)),
                ],
                Some(vec![version("vb1", "b1", NOW - days(10), NOW + days(80))]),
            );
            o.former = vec![former(VaultSecret::Present {
                latest: at_a[0].clone(),
                history: at_a,
            })];
            o.arrived_at = Some(NOW - days(6));
            o.skew_seconds = skew;
            let at = NOW + days(1) + margin;
            assert_eq!(plan(&o, &policy(), NOW).next_retirement, Some(at));
            due_exactly_at(&o, &policy(), "k1", at);

            // An orphan of this location on a capped app: the wait for the slot ends when the
            // orphan age (verify_timeout + 5 min) has passed by both clocks.
            let mut o = observed(
                vec![
                    own("k1", "r1", NOW - days(10), NOW + days(80)),
                    own("k2", "r2", NOW - time::Duration::minutes(5), NOW + days(90)),
                ],
                Some(vec![version("v1", "k1", NOW - days(10), NOW + days(80))]),
            );
            o.password_cap = Some(2);
            o.skew_seconds = skew;
            let forced = PolicyView {
                force: true,
                ..policy()
            };
            let at = NOW + time::Duration::minutes(5) + margin;
            assert_eq!(
                plan(&o, &forced, NOW).blocked,
                Some(Blocked::WaitingForSlot { until: at })
            );
            due_exactly_at(&o, &forced, "k2", at);
            assert_eq!(plan(&o, &forced, at).rotate, Some(RotateReason::Forced));

            // The adopted credential, its successor published 7 days (the overlap) ago.
            let mut unmanaged = version("v0", "x", NOW - days(100), NOW + days(100));
            unmanaged.tags.clear();
            let mut o = observed(
                vec![
                    cred("p1", Some("portal"), NOW - days(100), NOW + days(100)),
                    own("k1", "r1", NOW - days(7), NOW + days(83)),
                ],
                Some(vec![
                    unmanaged,
                    version("v1", "k1", NOW - days(7), NOW + days(83)),
                ]),
            );
            o.adopted = Some(Adopted {
                key_id: g("p1"),
                superseded_since: NOW - days(7),
            });
            o.skew_seconds = skew;
            let adopting = PolicyView {
                adopt: true,
                ..policy()
            };
            due_exactly_at(&o, &adopting, "p1", NOW + margin);
        }
    }

    #[test]
    fn a_revocation_waits_for_no_clock() {
        // A leaked secret goes at once, whatever the skew: the revocation is the evidence.
        let mut o = observed(
            vec![
                own("k0", "r0", NOW - days(10), NOW + days(80)),
                own("k1", "r1", NOW - time::Duration::seconds(1), NOW + days(90)),
            ],
            Some(vec![
                version("v0", "k0", NOW - days(10), NOW + days(80)),
                version("v1", "k1", NOW - time::Duration::seconds(1), NOW + days(90)),
            ]),
        );
        o.skew_seconds = 200;
        // Asked while k0 was published; a rotation has published k1 since.
        let target = g("k0");
        let revoking = PolicyView {
            revoke_previous: true,
            force: true,
            revoke_target: Some(&target),
            ..policy()
        };
        let p = plan(&o, &revoking, NOW);
        assert_eq!(
            p.removals,
            vec![Removal {
                key_id: g("k0"),
                reason: RemovalReason::Revoked
            }]
        );
        // Asked while k1 is published: revoked right after the new secret is published.
        let target = g("k1");
        let revoking = PolicyView {
            revoke_target: Some(&target),
            ..revoking
        };
        let p = plan(&o, &revoking, NOW);
        assert_eq!(p.revoke, Some(g("k1")));
        assert_eq!(p.rotate, Some(RotateReason::Forced));
    }

    /// A two-password app with adopt = true: k1, the last credential published, and k2, an own
    /// credential made for this location that no version names (its publish's outcome was
    /// unknown and the write never landed); then a person wrote a version by hand, after k2,
    /// and disabled it.
    fn capped_with_an_orphan_under_a_disabled_hand_written_version() -> Observed {
        let mut hand = version("v3", "x", NOW - days(1), NOW + days(100));
        hand.tags.clear();
        hand.enabled = false;
        hand.value_hint = None;
        let mut o = observed(
            vec![
                own("k1", "r1", NOW - days(10), NOW + days(80)),
                own("k2", "r2", NOW - days(5), NOW + days(85)),
            ],
            Some(vec![
                version("v1", "k1", NOW - days(10), NOW + days(80)),
                hand,
            ]),
        );
        o.password_cap = Some(2);
        o
    }

    #[test]
    fn a_capped_app_whose_orphan_a_disabled_hand_written_version_may_hold_is_blocked_not_waiting() {
        let o = capped_with_an_orphan_under_a_disabled_hand_written_version();
        let adopting = PolicyView {
            adopt: true,
            ..policy()
        };
        // k1 is kept (consumers may go back to it); k2 is kept too, since the disabled
        // version's value cannot be read and may be k2's. Neither goes by time.
        for at in [NOW, NOW + days(30)] {
            let p = plan(&o, &adopting, at);
            assert!(p.removals.is_empty(), "{:?}", p.removals);
            assert!(
                matches!(
                    p.blocked,
                    Some(Blocked::SlotKeptUnderHandWrittenVersion { .. })
                ),
                "at {at}: {:?} (nothing frees the slot by time)",
                p.blocked
            );
        }
    }

    #[test]
    fn the_step_named_for_a_kept_slot_frees_it_when_the_orphan_is_the_other_credential() {
        // Once the hand-written version is enabled its value's hint is known: k2 is proven an
        // orphan and goes, and the secret is adopted in its slot (k1 retires overlap after
        // the hand-written version).
        let mut o = capped_with_an_orphan_under_a_disabled_hand_written_version();
        let VaultSecret::Present { history, latest } = &mut o.vault else {
            unreachable!()
        };
        history[1].enabled = true;
        history[1].value_hint = Some("zzz".into());
        *latest = history[1].clone();
        let adopting = PolicyView {
            adopt: true,
            ..policy()
        };
        let p = plan(&o, &adopting, NOW);
        let removed: Vec<&str> = p.removals.iter().map(|r| r.key_id.as_str()).collect();
        assert_eq!(removed, [g("k2").as_str()]);
        assert_eq!(p.blocked, None);
        assert_eq!(p.rotate, Some(RotateReason::AdoptingUnmanagedSecret));
    }

    #[test]
    fn a_kept_slot_beside_one_that_frees_by_time_waits_for_it_instead_of_blocking() {
        // k1 is the last managed credential, kept under a disabled hand-written version; k0
        // was superseded by it 3 days ago and frees its slot in 4 days: no person is needed.
        let mut hand = version("v3", "x", NOW - days(1), NOW + days(100));
        hand.tags.clear();
        hand.enabled = false;
        hand.value_hint = None;
        let mut o = observed(
            vec![
                own("k0", "r0", NOW - days(20), NOW + days(70)),
                own("k1", "r1", NOW - days(3), NOW + days(87)),
            ],
            Some(vec![
                version("v0", "k0", NOW - days(20), NOW + days(70)),
                version("v1", "k1", NOW - days(3), NOW + days(87)),
                hand,
            ]),
        );
        o.password_cap = Some(2);
        let adopting = PolicyView {
            adopt: true,
            ..policy()
        };
        let at = NOW + days(4) + CLOCK_RESOLUTION;
        let p = plan(&o, &adopting, NOW);
        assert_eq!(p.blocked, Some(Blocked::WaitingForSlot { until: at }));
        let p = plan(&o, &adopting, at);
        let removed: Vec<&str> = p.removals.iter().map(|r| r.key_id.as_str()).collect();
        assert_eq!(removed, [g("k0").as_str()]);
        assert_eq!(p.rotate, Some(RotateReason::AdoptingUnmanagedSecret));
    }

    #[test]
    fn a_capped_app_waits_for_a_credential_superseded_within_its_second_until_its_overlap_ends() {
        // v1 and v2 share a second; GET returns v2, so k1 is superseded since that second
        // (the removal uses the latest's `created`), and goes 7 days later. The wait for the
        // slot should end then, not "in a minute", again and again for 7 days.
        let s = NOW - days(1);
        let mut o = observed(
            vec![
                own("k1", "r1", s, NOW + days(89)),
                own("k2", "r2", s, NOW + days(89)),
            ],
            Some(vec![
                version("v1", "k1", s, NOW + days(89)),
                version("v2", "k2", s, NOW + days(89)),
            ]),
        );
        o.password_cap = Some(2);
        let forced = PolicyView {
            force: true,
            ..policy()
        };
        let at = s + days(7) + CLOCK_RESOLUTION;
        let p = plan(&o, &forced, NOW);
        assert_eq!(p.next_retirement, Some(at), "the retirement is timed right");
        due_exactly_at(&o, &forced, "k1", at);
        assert_eq!(
            p.blocked,
            Some(Blocked::WaitingForSlot { until: at }),
            "the wait names the same time"
        );
    }

    /// The sixth review, of the rule that retires an own credential from the latest version
    /// alone (`superseded_by_latest`, the listing skipped by `history_matters`): worlds a
    /// person, a restore, a clock or a second installation can make, decided as the daemon
    /// decides them (the listing read only when `history_matters` says so).
    mod review6 {
        use super::*;

        pub(super) fn with_hint(p: PasswordCredential, hint: &str) -> PasswordCredential {
            PasswordCredential {
                hint: Some(hint.into()),
                ..p
            }
        }

        pub(super) fn holding(v: VersionInfo, hint: &str) -> VersionInfo {
            VersionInfo {
                value_hint: Some(hint.into()),
                ..v
            }
        }

        /// What `observe` asks of the latest version, with the store's record resolved as it
        /// resolves it.
        fn matters(o: &Observed, p: &PolicyView<'_>, now: OffsetDateTime) -> bool {
            let VaultSecret::Present { latest, .. } = &o.vault else {
                return true;
            };
            let find = |k: &str| {
                o.passwords
                    .iter()
                    .find(|c| c.key_id.eq_ignore_ascii_case(k))
            };
            history_matters(
                &o.passwords,
                PREFIX,
                latest,
                p.adopt,
                p.revoke_previous,
                &o.abandoned,
                &LatestRule {
                    app_id: &o.app_id,
                    overlap: p.overlap,
                    verify_timeout: p.verify_timeout,
                    arrived_at: o.arrived_at,
                    written_with: o
                        .latest_written_with
                        .as_deref()
                        .and_then(find)
                        .map(|c| (c.key_id.as_str(), c.hint.as_deref())),
                    removal_now: now
                        - time::Duration::seconds(o.skew_seconds.abs())
                        - CLOCK_RESOLUTION,
                },
            )
        }

        /// The daemon's decision on the world `full`: from the latest version alone when
        /// `history_matters` says the listing cannot change it, else from the whole history.
        pub(super) fn decide(full: &Observed, p: &PolicyView<'_>, now: OffsetDateTime) -> Plan {
            if matters(full, p, now) {
                plan(full, p, now)
            } else {
                plan(&latest_alone(full), p, now)
            }
        }

        fn removed(p: &Plan) -> Vec<&str> {
            p.removals.iter().map(|r| r.key_id.as_str()).collect()
        }

        /// A person writes the retired credential's value back into a new version and copies
        /// the published version's tags onto it (a rollback done by hand, tags and all). The
        /// latest version names another own credential and is older than overlap, but holds
        /// k2's value: k2 stays, whatever the store recorded (no record, one naming k2 itself,
        /// one naming the credential the tags name but whose hint differs, one naming a
        /// credential removed since).
        #[test]
        fn review6_a_retired_value_copied_into_the_latest_under_another_credentials_tags_keeps_it()
        {
            let k2 = with_hint(own("k2", "r2", NOW - days(40), NOW + days(60)), "k2~");
            let k3 = with_hint(own("k3", "r3", NOW - days(30), NOW + days(80)), "k3~");
            let v2 = holding(version("v2", "k2", NOW - days(40), NOW + days(60)), "k2~");
            let v3 = holding(version("v3", "k3", NOW - days(30), NOW + days(80)), "k3~");
            let copy = holding(version("v4", "k3", NOW - days(20), NOW + days(80)), "k2~");
            for record in [None, Some(g("k2")), Some(g("k3")), Some(g("gone"))] {
                let mut full = observed(
                    vec![k2.clone(), k3.clone()],
                    Some(vec![v2.clone(), v3.clone(), copy.clone()]),
                );
                full.latest_written_with = record.clone();
                for now in [NOW, NOW + days(100)] {
                    assert!(matters(&full, &policy(), now), "{record:?} {now}");
                    let p = decide(&full, &policy(), now);
                    assert!(p.removals.is_empty(), "{record:?} {now}: {p:?}");
                }
            }
        }

        /// Key Vault's clock ahead of the daemon's (a skew the daemon did not measure: its
        /// `Date` headers came from Graph): the latest version was created an hour in the
        /// daemon's future. Its predecessor is superseded since then, not since the daemon's
        /// `now`: it goes `overlap` after that `created`, not before.
        #[test]
        fn review6_a_latest_version_created_in_the_daemons_future_retires_nothing_before_its_overlap()
         {
            let k2 = with_hint(own("k2", "r2", NOW - days(30), NOW + days(60)), "k2~");
            let k3 = with_hint(own("k3", "r3", NOW - days(10), NOW + days(80)), "k3~");
            let future = NOW + time::Duration::hours(1);
            let full = observed(
                vec![k2.clone(), k3.clone()],
                Some(vec![
                    holding(version("v2", "k2", NOW - days(30), NOW + days(60)), "k2~"),
                    holding(version("v3", "k3", future, NOW + days(80)), "k3~"),
                ]),
            );
            let due = future + days(7) + CLOCK_RESOLUTION;
            let early = due - time::Duration::seconds(1);
            assert!(matters(&full, &policy(), early));
            let p = decide(&full, &policy(), early);
            assert!(p.removals.is_empty(), "{p:?}");
            assert_eq!(p.next_retirement, Some(due));
            // Even a plan from the latest alone (observe's margin smaller than the plan's)
            // keeps it until then.
            let p = plan(&latest_alone(&full), &policy(), early);
            assert!(p.removals.is_empty(), "{p:?}");
            assert!(!matters(&full, &policy(), due));
            let p = decide(&full, &policy(), due);
            assert_eq!(
                p.removals,
                vec![Removal {
                    key_id: k2.key_id.clone(),
                    reason: RemovalReason::Superseded { since: future },
                }]
            );
        }

        /// A credential whose `startDateTime` says it was made after the latest version (a
        /// start set in the future by a person, or Entra's clock ahead of Key Vault's): the
        /// latest version says nothing of it, the history judges it, whenever it is asked.
        /// One made long before the whole history (a start set in the past) is retired from
        /// the latest version no earlier than the history retires it.
        #[test]
        fn review6_a_start_date_after_the_latest_leaves_the_credential_to_the_history() {
            let k3 = with_hint(own("k3", "r3", NOW - days(10), NOW + days(80)), "k3~");
            let v1 = holding(version("v1", "k1", NOW - days(30), NOW + days(60)), "k1~");
            let v3 = holding(version("v3", "k3", NOW - days(10), NOW + days(80)), "k3~");
            for start in [NOW - days(9), NOW + days(30)] {
                let k2 = with_hint(own("k2", "r2", start, NOW + days(90)), "k2~");
                let full = observed(
                    vec![k2.clone(), k3.clone()],
                    Some(vec![v1.clone(), v3.clone()]),
                );
                for now in [NOW, NOW + days(20), NOW + days(100)] {
                    assert!(matters(&full, &policy(), now), "start {start}, now {now}");
                }
            }
            let k2 = with_hint(own("k2", "r2", NOW - days(400), NOW + days(90)), "k2~");
            let full = observed(
                vec![k2.clone(), k3.clone()],
                Some(vec![v1.clone(), v3.clone()]),
            );
            for d in 0..10 {
                let now = NOW - days(5) + days(d);
                let (f, a) = (plan(&full, &policy(), now), decide(&full, &policy(), now));
                if !removed(&a).is_empty() {
                    assert_eq!(removed(&f), removed(&a), "now {now}: {f:?} {a:?}");
                }
            }
        }

        /// Two own credentials besides the published one: the listing is skipped only when the
        /// latest version retires both. An attempt of another process (an HA replica that
        /// lost the race, or a `rotate` on another machine) made just before the latest
        /// version and still young keeps the listing, and the history removes only the
        /// predecessor; once both are due, both go.
        #[test]
        fn review6_two_own_credentials_besides_the_published_one_are_retired_together_or_by_the_history()
         {
            let short = PolicyView {
                overlap: Duration::from_secs(4),
                ..policy()
            };
            let min = time::Duration::minutes;
            let k1 = with_hint(own("k1", "r1", NOW - min(60), NOW + days(1)), "k1~");
            let k2 = with_hint(own("k2", "r2", NOW - min(9) - min(1), NOW + days(1)), "k2~");
            let k3 = with_hint(own("k3", "r3", NOW - min(9), NOW + days(1)), "k3~");
            let full = observed(
                vec![k1.clone(), k2.clone(), k3.clone()],
                Some(vec![
                    holding(version("v1", "k1", NOW - min(60), NOW + days(1)), "k1~"),
                    holding(version("v3", "k3", NOW - min(9), NOW + days(1)), "k3~"),
                ]),
            );
            assert!(matters(&full, &short, NOW), "k2 may be publishing");
            let p = decide(&full, &short, NOW);
            assert_eq!(removed(&p), vec![k1.key_id.as_str()], "{p:?}");
            let later = NOW + min(2);
            assert!(!matters(&full, &short, later));
            let p = decide(&full, &short, later);
            assert_eq!(
                removed(&p),
                vec![k1.key_id.as_str(), k2.key_id.as_str()],
                "{p:?}"
            );
            assert_eq!(
                removed(&plan(&full, &short, later)),
                removed(&p),
                "the history removes the same"
            );
        }

        /// A client back at a location it had left (its arrival recorded three days ago), with
        /// a credential made for the location it came from: consumers there follow it, and
        /// get `overlap` from its return, however old the latest version here is.
        #[test]
        fn review6_a_client_back_at_a_former_location_keeps_the_credential_it_left_for_overlap() {
            let k3 = with_hint(own("k3", "r3", NOW - days(60), NOW + days(80)), "k3~");
            let there = PasswordCredential {
                display_name: Some(format!("{PREFIX}0f0e0d0c-{:032x}", 7)),
                ..with_hint(own("k2", "r2", NOW - days(70), NOW + days(80)), "k2~")
            };
            let mut full = observed(
                vec![there.clone(), k3.clone()],
                Some(vec![holding(
                    version("v3", "k3", NOW - days(60), NOW + days(80)),
                    "k3~",
                )]),
            );
            full.arrived_at = Some(NOW - days(3));
            assert!(matters(&full, &policy(), NOW));
            let p = decide(&full, &policy(), NOW);
            assert!(p.removals.is_empty(), "{p:?}");
            let due = NOW + days(4) + CLOCK_RESOLUTION;
            assert_eq!(p.next_retirement, Some(due));
            assert!(matters(&full, &policy(), due - time::Duration::seconds(1)));
            assert!(!matters(&full, &policy(), due));
            let p = decide(&full, &policy(), due);
            assert_eq!(
                p.removals,
                vec![Removal {
                    key_id: there.key_id.clone(),
                    reason: RemovalReason::Migrated {
                        since: NOW - days(3)
                    },
                }]
            );
            assert_eq!(plan(&full, &policy(), due).removals, p.removals);
            // Without the store's record of the arrival, the latest version decides nothing.
            full.arrived_at = None;
            assert!(matters(&full, &policy(), NOW + days(100)));
        }

        /// A restore of an old state of the vault secret (a Key Vault backup restored after the
        /// secret was purged) makes an old version, naming k1, the latest again: the version
        /// that published k2 three days ago is gone, and consumers read k2 until the restore.
        /// The rule from the latest version does not apply (k2 was made after it), and the
        /// history alone would call k2 an orphan (made after the history began, named by no
        /// version). The store recorded that k2 was published (`known_published`, as `observe`
        /// reads it), with no record yet of a read that showed it named by no version: k2
        /// stays, and this read is when that was first seen (the executor records it).
        #[test]
        fn review6_a_credential_published_in_a_version_a_restore_discarded_is_kept_for_overlap() {
            let (full, k2) = restored();
            assert!(
                matters(&full, &policy(), NOW),
                "the latest version rule does not apply"
            );
            let p = decide(&full, &policy(), NOW);
            assert!(p.removals.is_empty(), "{p:?}");
            assert_eq!(
                p.held_unpublished,
                vec![HeldUnpublished {
                    key_id: k2.key_id.clone(),
                    since: None,
                    until: NOW + days(7) + CLOCK_RESOLUTION,
                    gap_after: None,
                }],
                "first seen named by no version now: kept for overlap from now"
            );
            assert_eq!(
                p.next_retirement,
                Some(NOW + days(7) + CLOCK_RESOLUTION),
                "looked at again when it may go"
            );
        }

        /// The world of the restore above: k1 published 30 days ago, k2 three days ago in a
        /// version the restore discarded; the store knows k2 was published.
        pub(super) fn restored() -> (Observed, PasswordCredential) {
            let k1 = with_hint(own("k1", "r1", NOW - days(30), NOW + days(60)), "k1~");
            let k2 = with_hint(own("k2", "r2", NOW - days(3), NOW + days(90)), "k2~");
            let mut full = observed(
                vec![k1, k2.clone()],
                Some(vec![holding(
                    version("v1", "k1", NOW - days(30), NOW + days(60)),
                    "k1~",
                )]),
            );
            full.known_published = vec![known_unnamed(g("k1"), None), known_unnamed(g("k2"), None)];
            (full, k2)
        }

        fn seen_unnamed_at(o: &mut Observed, key: &str, at: OffsetDateTime) {
            for k in &mut o.known_published {
                if k.key_id == g(key) {
                    k.unpublished_since = Some(at);
                    k.unpublished_last_seen = Some(at);
                }
            }
        }

        /// Once a read recorded k2 named by no version, k2 stays until `overlap` after that
        /// (and the clock margin), then goes as published-then-unnamed (not an orphan: it
        /// counts in no orphan metric), with the fresh listing before its removal.
        #[test]
        fn review6_a_discarded_credential_stays_until_overlap_after_it_was_first_seen_unnamed() {
            let (mut full, k2) = restored();
            let seen = NOW - days(2);
            seen_unnamed_at(&mut full, "k2", seen);
            let p = decide(&full, &policy(), NOW);
            assert!(p.removals.is_empty(), "{p:?}");
            let until = seen + days(7) + CLOCK_RESOLUTION;
            assert_eq!(
                p.held_unpublished,
                vec![HeldUnpublished {
                    key_id: k2.key_id.clone(),
                    since: Some(seen),
                    until,
                    gap_after: None,
                }]
            );
            assert_eq!(p.next_retirement, Some(until));
            // A second before: kept; at that time: removed, with the reason the operator reads.
            assert!(
                decide(&full, &policy(), until - time::Duration::seconds(1))
                    .removals
                    .is_empty()
            );
            let due = decide(&full, &policy(), until);
            assert_eq!(
                due.removals,
                vec![Removal {
                    key_id: k2.key_id.clone(),
                    reason: RemovalReason::Unpublished {
                        rotation_id: rid("r2"),
                        since: seen,
                    },
                }]
            );
            assert!(due.held_unpublished.is_empty());
            assert!(!due.removals[0].is_orphan());
            assert!(
                due.removals[0].needs_history(),
                "listed again before it goes"
            );
            // A skew of a minute makes it wait that minute too.
            full.skew_seconds = -60;
            assert!(decide(&full, &policy(), until).removals.is_empty());
            assert!(
                !decide(&full, &policy(), until + time::Duration::seconds(60))
                    .removals
                    .is_empty()
            );
        }

        /// Without the store's record that k2 was published (a state dir lost, or a replica
        /// that never saw it published), the history cannot tell k2 from an orphan: the orphan
        /// rule, as before. With it but without a record of when it was first seen unnamed, it
        /// is kept however long ago k2 was made (a crash between the read and the record
        /// starts the clock at the next read, never earlier).
        #[test]
        fn review6_no_record_of_the_first_unnamed_read_keeps_the_credential_whatever_its_age() {
            let (mut full, k2) = restored();
            for at in [NOW, NOW + days(30), NOW + days(80)] {
                let p = decide(&full, &policy(), at);
                assert!(p.removals.is_empty(), "{at}: {p:?}");
                assert_eq!(p.held_unpublished.len(), 1);
                assert_eq!(p.held_unpublished[0].since, None);
                assert_eq!(p.held_unpublished[0].until, at + days(7) + CLOCK_RESOLUTION);
            }
            full.known_published.retain(|k| k.key_id != k2.key_id);
            let p = decide(&full, &policy(), NOW);
            assert_eq!(
                p.removals,
                vec![Removal {
                    key_id: k2.key_id.clone(),
                    reason: RemovalReason::Orphan {
                        rotation_id: rid("r2")
                    },
                }],
                "no record of its publish: an orphan"
            );
        }

        /// The version that named k2 comes back (the secret recovered, or k2's value published
        /// again): k2 is named, the record of the unnamed read is dropped, and the usual rules
        /// apply (superseded since the version after it, here none: it is the latest).
        #[test]
        fn review6_a_discarded_credential_named_again_drops_the_record_and_the_usual_rules_apply() {
            let (mut full, k2) = restored();
            seen_unnamed_at(&mut full, "k2", NOW - days(10));
            let VaultSecret::Present { history, .. } = &mut full.vault else {
                unreachable!()
            };
            let v2 = holding(version("v2", "k2", NOW - days(3), NOW + days(90)), "k2~");
            history.push(v2.clone());
            full.vault = VaultSecret::Present {
                history: history.clone(),
                latest: v2,
            };
            let p = decide(&full, &policy(), NOW);
            assert_eq!(p.unpublished_cleared, vec![k2.key_id.clone()]);
            assert!(p.held_unpublished.is_empty());
            assert!(
                p.removals.is_empty(),
                "k2 is published, k1 within overlap: {p:?}"
            );
            // A record for a credential gone from the application is dropped as well.
            let (mut gone, k2) = restored();
            seen_unnamed_at(&mut gone, "k2", NOW - days(1));
            gone.passwords.retain(|p| p.key_id != k2.key_id);
            assert_eq!(
                decide(&gone, &policy(), NOW).unpublished_cleared,
                vec![k2.key_id]
            );
        }

        /// The listing is never skipped past the rule: while k2 is held, the latest version
        /// (older than k2) cannot retire it, so `history_matters` asks for the listing, and a
        /// plan from the latest version alone (were it ever made) keeps k2 too. A discarded
        /// credential older than the latest version, which names another credential and does
        /// not hold its value, is retired by the latest version's times with or without the
        /// listing (no version serving it can have been newer than the latest).
        #[test]
        fn review6_a_skipped_listing_does_not_bypass_the_hold() {
            let (mut full, k2) = restored();
            seen_unnamed_at(&mut full, "k2", NOW - days(1));
            for at in [NOW, NOW + days(5)] {
                assert!(matters(&full, &policy(), at), "{at}");
                let alone = plan(&latest_alone(&full), &policy(), at);
                assert!(alone.removals.is_empty(), "{alone:?}");
            }
            // k2 older than a latest version naming k3 (published after a restore discarded
            // k2's version): superseded since that version, as without the listing.
            let k3 = with_hint(own("k3", "r3", NOW - days(20), NOW + days(90)), "k3~");
            let k2_old = PasswordCredential {
                start: Some(NOW - days(25)),
                ..k2
            };
            let mut older = observed(
                vec![k2_old.clone(), k3],
                Some(vec![
                    holding(version("v1", "k1", NOW - days(30), NOW + days(60)), "k1~"),
                    holding(version("v3", "k3", NOW - days(20), NOW + days(90)), "k3~"),
                ]),
            );
            older.known_published = vec![known_unnamed(
                k2_old.key_id.clone(),
                Some(NOW - time::Duration::hours(1)),
            )];
            assert!(!matters(&older, &policy(), NOW));
            let with = plan(&older, &policy(), NOW);
            let without = plan(&latest_alone(&older), &policy(), NOW);
            assert_eq!(with.removals, without.removals);
            assert_eq!(
                with.removals,
                vec![Removal {
                    key_id: k2_old.key_id.clone(),
                    reason: RemovalReason::Superseded {
                        since: NOW - days(20)
                    },
                }]
            );
        }

        /// A two-password application whose published credential (k1, restored) expires soon
        /// needs the slot k2 holds: the rotation waits, saying why and until when, and k2 is
        /// not removed early. Once k2's overlap ends it goes and frees the slot.
        #[test]
        fn review6_a_two_password_app_waits_for_the_slot_a_discarded_credential_holds() {
            let (mut full, k2) = restored();
            full.password_cap = Some(2);
            for p in &mut full.passwords {
                if p.key_id == g("k1") {
                    p.end = Some(NOW + days(10));
                }
            }
            let seen = NOW - days(2);
            seen_unnamed_at(&mut full, "k2", seen);
            let p = decide(&full, &policy(), NOW);
            assert!(p.removals.is_empty(), "{p:?}");
            assert_eq!(p.rotate, None);
            let until = seen + days(7) + CLOCK_RESOLUTION;
            assert_eq!(
                p.blocked,
                Some(Blocked::SlotHeldUnpublished {
                    key_id: k2.key_id.clone(),
                    until,
                })
            );
            let b = p.blocked.unwrap();
            assert!(!b.is_failure(), "a wait: the published secret is valid");
            assert_eq!(b.wait_until(), Some(until));
            assert!(b.to_string().contains("restored from a backup?"), "{b}");
            let later = decide(&full, &policy(), until);
            assert_eq!(later.removals.len(), 1, "{later:?}");
            assert!(later.blocked.is_none(), "{later:?}");
            assert!(later.rotate.is_some());
        }

        /// A secret purged and published again: the credential published in the purged secret
        /// was made before the new history began, and the migration rule times it from the
        /// publish after it, as without the store's record (the purge ended its service before
        /// that publish).
        #[test]
        fn review6_a_credential_of_a_purged_secret_goes_by_the_migration_rule_as_before() {
            let k1 = with_hint(own("k1", "r1", NOW - days(30), NOW + days(60)), "k1~");
            let k2 = with_hint(own("k2", "r2", NOW - days(10), NOW + days(80)), "k2~");
            // The latest value's hint unread: the latest version alone decides nothing.
            let mut full = observed(
                vec![k1.clone(), k2],
                Some(vec![version("v2", "k2", NOW - days(10), NOW + days(80))]),
            );
            assert!(matters(&full, &policy(), NOW));
            let without = decide(&full, &policy(), NOW);
            full.known_published = vec![known_unnamed(k1.key_id.clone(), None)];
            let with = decide(&full, &policy(), NOW);
            assert_eq!(with.removals, without.removals);
            assert_eq!(with.removals.len(), 1, "{with:?}");
            assert!(with.held_unpublished.is_empty());
        }

        /// A version no tag attributes, made after k2, may hold k2's value (tags wiped by a tool,
        /// or a copy by hand): the orphan rule keeps k2 with no time at all, as before, and says
        /// why; the hold for a discarded version does not claim it (its time and its "restored
        /// from a backup?" would be wrong: no time frees it), before or after its overlap.
        #[test]
        fn review6_a_version_that_may_hold_the_value_is_the_orphan_rules_to_keep_not_the_holds() {
            let (mut full, k2) = restored();
            seen_unnamed_at(&mut full, "k2", NOW - days(1));
            let VaultSecret::Present { history, .. } = &mut full.vault else {
                unreachable!()
            };
            // Written after the restore, its tags wiped; its value unread.
            let mut wiped = version("w", "k2", NOW - days(2), NOW + days(90));
            wiped.tags.clear();
            history.push(wiped.clone());
            let history = history.clone();
            full.vault = VaultSecret::Present {
                history,
                latest: wiped,
            };
            for at in [NOW, NOW + days(30)] {
                let p = decide(&full, &policy(), at);
                assert!(p.removals.is_empty(), "{p:?}");
                assert!(p.held_unpublished.is_empty(), "{p:?}");
                assert!(
                    p.notes.iter().any(|n| n.contains(&k2.key_id)
                        && n.contains("a version no tag attributes may hold its value")),
                    "{p:?}"
                );
            }
        }

        /// Credentials of another installation are never held or removed by the rule, even
        /// with a store record naming them (a status row of another installation's secret).
        #[test]
        fn review6_another_installations_credential_is_not_held_or_removed_by_the_rule() {
            let (mut full, _) = restored();
            let staging = cred(
                "s1",
                Some(format!("secret-rotator:staging:dicom:{}", rid("s")).as_str()),
                NOW - days(3),
                NOW + days(80),
            );
            full.passwords.push(staging.clone());
            full.known_published
                .push(known_unnamed(staging.key_id.clone(), Some(NOW - days(100))));
            let p = decide(&full, &policy(), NOW + days(200));
            assert!(
                !p.removals.iter().any(|r| r.key_id == staging.key_id),
                "{p:?}"
            );
            assert!(
                !p.held_unpublished
                    .iter()
                    .any(|h| h.key_id == staging.key_id)
            );
        }

        /// Credentials of another installation (another instance's marker) or of another
        /// client of this installation on the same application are not this client's: they
        /// neither keep the listing nor go with it.
        #[test]
        fn review6_another_installations_credentials_are_never_retired_by_the_latest() {
            let k3 = with_hint(own("k3", "r3", NOW - days(10), NOW + days(80)), "k3~");
            let k2 = with_hint(own("k2", "r2", NOW - days(30), NOW + days(80)), "k2~");
            let staging = cred(
                "s1",
                Some(format!("secret-rotator:staging:dicom:{}", rid("s")).as_str()),
                NOW - days(30),
                NOW + days(80),
            );
            let other = cred(
                "o1",
                Some(format!("secret-rotator:prod:dicom-b:{}", rid("o")).as_str()),
                NOW - days(30),
                NOW + days(80),
            );
            let full = observed(
                vec![staging.clone(), other.clone(), k2.clone(), k3.clone()],
                Some(vec![
                    holding(version("v2", "k2", NOW - days(30), NOW + days(80)), "k2~"),
                    holding(version("v3", "k3", NOW - days(10), NOW + days(80)), "k3~"),
                ]),
            );
            assert!(!matters(&full, &policy(), NOW));
            let p = decide(&full, &policy(), NOW);
            assert_eq!(removed(&p), vec![k2.key_id.as_str()], "{p:?}");
        }
    }

    /// The seventh cold review: the hold of a published credential that a restore of the vault
    /// secret discarded (`Observed::known_published`, `Plan::held_unpublished`), attacked with
    /// moves, healthy clients and the values the notes could carry.
    mod review7 {
        use super::review6::{holding, with_hint};
        use super::*;

        fn known(key: &str, since: Option<OffsetDateTime>) -> KnownPublished {
            known_unnamed(g(key), since)
        }

        /// The client moved (its secret name changed) an hour ago and published k3 there. At
        /// the location it left, a restore from a backup discarded the version that published
        /// k2 (so that v1, naming k1, is the latest there again) two hours ago, while the client
        /// was still there: the daemon saw k2 named by no version and recorded it. Consumers
        /// of the old location read k2 until that restore, and the store knows k2 was
        /// published; at the old location's read k2 looks like an attempt that never
        /// published there.
        fn moved_after_a_restore(seen: Option<OffsetDateTime>) -> Observed {
            let k1 = with_hint(
                own_at_former("k1", 1, NOW - days(30), NOW + days(60)),
                "k1~",
            );
            let k2 = with_hint(own_at_former("k2", 2, NOW - days(3), NOW + days(90)), "k2~");
            let k3 = with_hint(
                own("k3", "r3", NOW - time::Duration::hours(1), NOW + days(90)),
                "k3~",
            );
            let mut o = observed(
                vec![k1, k2, k3],
                Some(vec![holding(
                    version("v3", "k3", NOW - time::Duration::hours(1), NOW + days(90)),
                    "k3~",
                )]),
            );
            o.arrived_at = Some(NOW - time::Duration::hours(1));
            let v1 = holding(version("v1", "k1", NOW - days(30), NOW + days(60)), "k1~");
            o.former = vec![former(VaultSecret::Present {
                history: vec![v1.clone()],
                latest: v1,
            })];
            o.known_published = vec![known("k1", None), known("k2", seen)];
            o
        }

        /// Attack: move the client after the restore. At its new location k2 is no longer
        /// `here`, so the hold does not apply, and the old location's read judges it by the
        /// orphan rule there (`OrphanAtFormer`: named by no version after the history began):
        /// removed at once, hours after consumers of the old location last read it, though the
        /// store knows it was published. Whether the first unnamed read was recorded or not.
        /// Expected: kept, by the hold or by the migration rule (overlap after k3 was published
        /// where the client went and after it arrived).
        #[test]
        fn review7_a_move_after_a_restore_does_not_remove_the_discarded_credential_at_once() {
            let k2 = g("k2");
            for seen in [None, Some(NOW - time::Duration::hours(2))] {
                let o = moved_after_a_restore(seen);
                let p = plan(&o, &policy(), NOW);
                assert!(
                    !p.removals.iter().any(|r| r.key_id == k2),
                    "{seen:?}: removed within overlap of the restore: {:?}",
                    p.removals
                );
                // The migration rule's time: overlap after k3 was published and the client
                // arrived.
                let due = NOW - time::Duration::hours(1) + days(7) + CLOCK_RESOLUTION;
                assert!(
                    plan(&o, &policy(), due - time::Duration::seconds(1))
                        .removals
                        .iter()
                        .all(|r| r.key_id != k2)
                );
                assert!(
                    plan(&o, &policy(), due)
                        .removals
                        .iter()
                        .any(|r| r.key_id == k2),
                    "{seen:?}: goes by the migration rule then"
                );
            }
            // Nothing published yet where the client went (`observe` reads the store's records
            // when a location the client left was read): kept, and the client publishes.
            let mut first = moved_after_a_restore(None);
            first.vault = VaultSecret::Absent;
            first.passwords.retain(|p| p.key_id != g("k3"));
            let p = plan(&first, &policy(), NOW);
            assert!(p.removals.iter().all(|r| r.key_id != k2), "{p:?}");
            assert_eq!(p.rotate, Some(RotateReason::NoPublishedSecret));
            // Without the store's record of the publish (a lost state dir), as before: the
            // orphan rule at the old location.
            let mut lost = moved_after_a_restore(None);
            lost.known_published.clear();
            assert!(plan(&lost, &policy(), NOW).removals.iter().any(
                |r| r.key_id == k2 && matches!(r.reason, RemovalReason::OrphanAtFormer { .. })
            ));
        }

        /// Attack: the client moved after the restore, and at the location it left the version
        /// naming k2 came back (a recover there). The record of the first unnamed read no
        /// longer holds and is forgotten, as a read of the client's own location forgets it:
        /// were the client moved back and the version discarded again, the hold would count
        /// from that later read, not from the first discard.
        #[test]
        fn review7_a_credential_shown_again_where_the_client_was_forgets_the_record() {
            let seen = NOW - time::Duration::hours(2);
            let unnamed = moved_after_a_restore(Some(seen));
            assert!(
                plan(&unnamed, &policy(), NOW)
                    .unpublished_cleared
                    .is_empty()
            );
            let mut back = moved_after_a_restore(Some(seen));
            let v1 = holding(version("v1", "k1", NOW - days(30), NOW + days(60)), "k1~");
            let v2 = holding(version("v2", "k2", NOW - days(3), NOW + days(90)), "k2~");
            back.former = vec![former(VaultSecret::Present {
                history: vec![v1, v2.clone()],
                latest: v2,
            })];
            let p = plan(&back, &policy(), NOW);
            assert_eq!(p.unpublished_cleared, vec![g("k2")], "{p:?}");
            assert!(p.removals.iter().all(|r| r.key_id != g("k2")));
        }

        /// Attack on (d): a healthy client between rotations (its predecessor superseded, within
        /// overlap, and the store's records as `observe` reads them): nothing held, no record
        /// to write or forget, so the executor writes nothing to the store for the rule.
        #[test]
        fn review7_a_healthy_client_holds_nothing_and_writes_no_record() {
            let k1 = with_hint(own("k1", "r1", NOW - days(30), NOW + days(60)), "k1~");
            let k2 = with_hint(own("k2", "r2", NOW - days(3), NOW + days(90)), "k2~");
            let mut o = observed(
                vec![k1, k2],
                Some(vec![
                    holding(version("v1", "k1", NOW - days(30), NOW + days(60)), "k1~"),
                    holding(version("v2", "k2", NOW - days(3), NOW + days(90)), "k2~"),
                ]),
            );
            o.known_published = vec![known("k1", None), known("k2", None)];
            for at in [NOW, NOW + days(5), NOW + days(40)] {
                let p = plan(&o, &policy(), at);
                assert!(p.held_unpublished.is_empty(), "{at}: {p:?}");
                assert!(p.unpublished_cleared.is_empty(), "{at}: {p:?}");
                assert!(
                    p.removals
                        .iter()
                        .all(|r| !matches!(r.reason, RemovalReason::Unpublished { .. }))
                );
            }
            // Its predecessor goes by the usual rule, overlap after its successor.
            assert_eq!(
                plan(&o, &policy(), NOW + days(5)).removals,
                vec![Removal {
                    key_id: g("k1"),
                    reason: RemovalReason::Superseded {
                        since: NOW - days(3)
                    },
                }]
            );
        }

        /// Attack on (c): what the hold says (the plan's note, the status warning, the wait of a
        /// two-password app, the removal's reason) names the credential by key id and times
        /// only: never its value's hint, nor anything of a version's value.
        #[test]
        fn review7_what_the_hold_says_carries_no_value() {
            let k1 = with_hint(own("k1", "r1", NOW - days(30), NOW + days(10)), "Q1z");
            let k2 = with_hint(own("k2", "r2", NOW - days(3), NOW + days(90)), "Q2z");
            let mut o = observed(
                vec![k1, k2],
                Some(vec![holding(
                    version("v1", "k1", NOW - days(30), NOW + days(10)),
                    "Q1z",
                )]),
            );
            o.password_cap = Some(2);
            o.known_published = vec![known("k1", None), known("k2", Some(NOW - days(1)))];
            let held = plan(&o, &policy(), NOW);
            let due = plan(&o, &policy(), NOW + days(7));
            assert!(!held.held_unpublished.is_empty() && held.blocked.is_some());
            assert_eq!(due.removals.len(), 1, "{due:?}");
            let mut said: Vec<String> = held.notes.clone();
            said.extend(held.held_unpublished.iter().map(|h| h.to_string()));
            said.extend(held.blocked.iter().map(|b| b.to_string()));
            said.extend(due.removals.iter().map(|r| r.reason.to_string()));
            said.push(format!("{held:?} {due:?}"));
            for s in &said {
                assert!(!s.contains("Q1z") && !s.contains("Q2z"), "{s}");
            }
        }
    }

    /// The record's continuity (docs/design/protocol.md, "A published credential no version
    /// names"): the hold of a credential a restore discarded counts from the record's first
    /// unnamed read only while each read after it came within the client's schedule
    /// (`KnownPublished::tolerance`) of the last one that showed it unnamed; a read after a
    /// longer gap counts from itself. The world is review6's restore: k2, published three days
    /// ago, is named by no version; overlap is 7 days.
    mod continuity {
        use super::review6::{decide, restored};
        use super::*;

        /// A 15-minute schedule's tolerance, as `schedule::tolerated_gap` gives it for a read
        /// just after a run: the two runs after it, their jitter and the slack.
        const TOLERANCE: Duration = Duration::from_secs(30 * 60 + 30 + 300);

        /// The restore's world with the store's record of k2: first and last seen unnamed.
        fn recorded(since: OffsetDateTime, last: OffsetDateTime) -> (Observed, PasswordCredential) {
            let (mut o, k2) = restored();
            for k in &mut o.known_published {
                if k.key_id == k2.key_id {
                    k.unpublished_since = Some(since);
                    k.unpublished_last_seen = Some(last);
                    k.tolerance = TOLERANCE;
                }
            }
            (o, k2)
        }

        /// Regular reads (each within the schedule of the last): the hold counts from the first
        /// unnamed read, and k2 goes `overlap` after it, not later: a regularly reconciled
        /// client is not held forever.
        #[test]
        fn continuity_reads_within_the_schedule_count_the_hold_from_the_first_unnamed_read() {
            let since = NOW - days(2);
            let until = since + days(7) + CLOCK_RESOLUTION;
            let (o, k2) = recorded(since, NOW - time::Duration::minutes(15));
            let p = decide(&o, &policy(), NOW);
            assert_eq!(
                p.held_unpublished,
                vec![HeldUnpublished {
                    key_id: k2.key_id.clone(),
                    since: Some(since),
                    until,
                    gap_after: None,
                }]
            );
            // At the end of the hold, the last read 15 minutes before: removed, as before.
            let (o, _) = recorded(since, until - time::Duration::minutes(15));
            let due = decide(&o, &policy(), until);
            assert_eq!(
                due.removals,
                vec![Removal {
                    key_id: k2.key_id.clone(),
                    reason: RemovalReason::Unpublished {
                        rotation_id: rid("r2"),
                        since,
                    },
                }]
            );
            // A read exactly at the end of the tolerance, judged with the margin, continues it.
            let last = NOW + CLOCK_RESOLUTION - std_to_time(TOLERANCE);
            let (o, _) = recorded(since, last);
            assert_eq!(
                decide(&o, &policy(), NOW).held_unpublished[0].since,
                Some(since)
            );
        }

        /// The pinned flaw: the last read that showed k2 unnamed was 25 minutes ago on a
        /// schedule of every 2 seconds (or hours ago on one of 15 minutes: the daemon down,
        /// another HA replica leading, a state dir restored from a backup). The version may
        /// have come back and been discarded again meanwhile, consumers reading k2 until then:
        /// the hold counts from this read, even though `overlap` after the first unnamed read
        /// has passed. The note says why.
        #[test]
        fn continuity_a_read_after_a_gap_longer_than_the_schedule_allows_counts_from_itself() {
            let since = NOW - days(10);
            let last = NOW - time::Duration::hours(3);
            let (o, k2) = recorded(since, last);
            let p = decide(&o, &policy(), NOW);
            assert!(p.removals.is_empty(), "{p:?}");
            let held = HeldUnpublished {
                key_id: k2.key_id.clone(),
                since: None,
                until: NOW + days(7) + CLOCK_RESOLUTION,
                gap_after: Some(last),
            };
            assert_eq!(p.held_unpublished, vec![held.clone()]);
            assert_eq!(p.next_retirement, Some(held.until));
            assert!(
                held.to_string().contains("counted from now")
                    && held.to_string().contains(&rfc3339(last)),
                "{held}"
            );
            // The same within overlap of the first read: from this read too (later, not earlier).
            let (o, _) = recorded(NOW - days(1), last);
            assert_eq!(decide(&o, &policy(), NOW).held_unpublished, vec![held]);
            // A second past the tolerance, judged with the margin: counted from this read.
            let (o, _) = recorded(
                since,
                NOW + CLOCK_RESOLUTION - std_to_time(TOLERANCE) - time::Duration::seconds(1),
            );
            assert_eq!(decide(&o, &policy(), NOW).held_unpublished[0].since, None);
        }

        /// The gap is measured on Azure's clock, as the last read is recorded (`now` - skew, and
        /// the margin for the `Date` header's resolution), whichever way the daemon's clock is
        /// off: at the tolerance's edge on Azure's clock the record continues, a second past it
        /// the hold counts again. (It was judged at `now` + |skew|: with the daemon's clock
        /// ahead, every gap looked longer by the skew, and the hold never ended;
        /// docs/reliability.md, "A ninth cold review".)
        #[test]
        fn continuity_the_gap_is_measured_on_azures_clock() {
            let since = NOW - days(2);
            for skew in [-600i64, -60, 0, 60, 600] {
                let azure_now = NOW - time::Duration::seconds(skew);
                let edge = azure_now + CLOCK_RESOLUTION - std_to_time(TOLERANCE);
                let (mut o, _) = recorded(since, edge);
                o.skew_seconds = skew;
                let p = decide(&o, &policy(), NOW);
                assert_eq!(
                    p.held_unpublished[0].since,
                    Some(since),
                    "skew {skew}: {p:?}"
                );
                let (mut o, _) = recorded(since, edge - time::Duration::seconds(1));
                o.skew_seconds = skew;
                let p = decide(&o, &policy(), NOW);
                assert_eq!(p.held_unpublished[0].since, None, "skew {skew}: {p:?}");
            }
        }

        /// Whatever the tolerance, the last read and the time, a credential is never removed
        /// where reads that kept up with the schedule would keep it, and its hold never ends
        /// earlier: a broken continuity only keeps it longer.
        #[test]
        fn continuity_a_restart_never_removes_earlier_than_a_continuous_record() {
            let since = NOW - days(3);
            for last_ago in [0i64, 1, 30, 36, 40, 60 * 5, 60 * 24 * 2] {
                for tolerance in [Duration::ZERO, TOLERANCE, KEPT_UP] {
                    for at in [
                        NOW,
                        NOW + days(4),
                        NOW + days(4) + time::Duration::hours(1),
                        NOW + days(12),
                    ] {
                        let last = at - time::Duration::minutes(last_ago);
                        let last = last.max(since);
                        let (mut o, k2) = recorded(since, last);
                        let (mut kept_up, _) = recorded(since, last);
                        for k in &mut o.known_published {
                            k.tolerance = tolerance;
                        }
                        for k in &mut kept_up.known_published {
                            k.tolerance = KEPT_UP;
                        }
                        let p = decide(&o, &policy(), at);
                        let q = decide(&kept_up, &policy(), at);
                        let gone = |p: &Plan| p.removals.iter().any(|r| r.key_id == k2.key_id);
                        assert!(
                            !gone(&p) || gone(&q),
                            "{last_ago} {tolerance:?} {at}: {p:?}"
                        );
                        let until = |p: &Plan| p.held_unpublished.first().map(|h| h.until);
                        if let (Some(a), Some(b)) = (until(&p), until(&q)) {
                            assert!(a >= b, "{last_ago} {tolerance:?} {at}");
                        }
                    }
                }
            }
        }
    }
}

/// The ninth cold review (docs/reliability.md, "A ninth cold review"): the record's continuity
/// against irregular schedules. A regularly reconciled client must keep its record continuous,
/// or a hold restarts at every read and never ends (a two-password application then waits for
/// its slot until its secret expires).
#[cfg(test)]
mod review9 {
    use std::time::Duration;

    use time::OffsetDateTime;
    use time::macros::datetime;

    use crate::schedule::tests::schedule;
    use crate::schedule::{next_run, tolerated_gap};

    /// The daemon's reconciles follow `next_run` from the end of the last one (`settle`). For
    /// every run of a schedule across the DST changes of its zone (a run in the hour that does
    /// not exist, one in the hour that comes twice), weekdays-only and several runs a day: a
    /// read up to 90 s after its run, whose next run is missed and whose run after that reads
    /// up to 4 minutes late, is within the tolerated gap of the first.
    #[test]
    fn review9_a_missed_run_across_dst_and_weekends_keeps_the_record() {
        let s = |secs: i64| time::Duration::seconds(secs);
        let day = time::Duration::days(1);
        let cases: [(&str, &str, &[OffsetDateTime]); 5] = [
            (
                "0 30 2 * * *",
                "Europe/Berlin",
                &[
                    datetime!(2026-03-29 00:00 UTC),
                    datetime!(2026-10-25 00:00 UTC),
                ],
            ),
            (
                "0 */15 * * * *",
                "America/New_York",
                &[
                    datetime!(2026-03-08 07:00 UTC),
                    datetime!(2026-11-01 06:00 UTC),
                ],
            ),
            (
                "0 0 9 * * Mon-Fri",
                "Europe/Berlin",
                &[
                    datetime!(2026-03-29 00:00 UTC),
                    datetime!(2026-10-25 00:00 UTC),
                ],
            ),
            (
                "0 0 1,2,3 * * *",
                "America/New_York",
                &[
                    datetime!(2026-03-08 07:00 UTC),
                    datetime!(2026-11-01 06:00 UTC),
                ],
            ),
            (
                "0 0 9,17 * * Mon-Fri",
                "Australia/Sydney",
                &[
                    datetime!(2026-04-05 00:00 UTC),
                    datetime!(2026-10-04 00:00 UTC),
                ],
            ),
        ];
        for (expr, tz, changes) in cases {
            let sched = schedule(expr, tz);
            for change in changes {
                let mut run = sched.next_after(*change - day * 9).unwrap();
                while run < *change + day * 9 {
                    for late in [0, 45, 90] {
                        let last = run + s(late);
                        // Missed: due at the next run after this reconcile (which took a
                        // minute), then the one after it, read late.
                        let missed = next_run(&sched, last + s(60));
                        let after = next_run(&sched, missed + s(1));
                        let read = after + s(240);
                        let tolerated = tolerated_gap(&sched, last);
                        assert!(
                            read - last <= time::Duration::try_from(tolerated).unwrap(),
                            "{expr} ({tz}): read at {last}, missed {missed}, next read {read}: tolerated {tolerated:?}"
                        );
                        assert!(tolerated > Duration::from_secs(300), "{expr}: {last}");
                    }
                    run = sched.next_after(run).unwrap();
                }
            }
        }
    }
}

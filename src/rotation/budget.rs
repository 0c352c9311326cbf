//! `daemon.max_rotations_per_hour`: how many rotations the installation publishes in any hour,
//! so that a bad release or a bad decision cannot sweep a whole tenant at once.
//!
//! Reconciles run concurrently, so the budget is claimed, not just checked: a rotation takes a
//! slot before it starts and gives it back if it does not publish. Rotations that published
//! count, forced ones included (they are never stopped by the budget, but they are changes the
//! hour has seen). The count starts from the store's history, so a restart does not reset it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use super::plan::{Blocked, Plan};
use super::window;

const HOUR: i64 = 3600;

pub struct Budget {
    max: AtomicU32,
    /// (slot id, unix seconds) of rotations in the last hour and slots in flight.
    uses: Mutex<Vec<(u64, i64)>>,
    next_id: AtomicU64,
}

/// A claimed slot: given back when dropped unless [`Slot::commit`]ted.
pub struct Slot {
    budget: Arc<Budget>,
    id: u64,
    committed: bool,
}

impl Slot {
    /// The rotation published: the slot stays used for the hour.
    pub fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.committed {
            self.budget.lock().retain(|(id, _)| *id != self.id);
        }
    }
}

impl Budget {
    /// `max` = 0: no budget. `past`: when the rotations of the last hour happened (unix seconds).
    pub fn new(max: u32, past: Vec<i64>) -> Budget {
        Budget {
            max: AtomicU32::new(max),
            uses: Mutex::new(past.into_iter().map(|t| (0, t)).collect()),
            next_id: AtomicU64::new(1),
        }
    }

    /// A reload may change the limit; what the hour has used stays.
    pub fn set_max(&self, max: u32) {
        self.max.store(max, Ordering::Relaxed);
    }

    pub fn max(&self) -> u32 {
        self.max.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, i64)>> {
        self.uses.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rotations (and slots in flight) in the hour before `now`.
    pub fn used(&self, now: OffsetDateTime) -> u32 {
        let mut uses = self.lock();
        prune(&mut uses, now);
        uses.len() as u32
    }

    /// The wait a rotation due at `now` would get, without claiming anything (`plan`).
    pub fn peek(&self, now: OffsetDateTime) -> Option<Blocked> {
        let mut uses = self.lock();
        prune(&mut uses, now);
        self.exhausted(&uses)
    }

    fn exhausted(&self, uses: &[(u64, i64)]) -> Option<Blocked> {
        let max = self.max();
        if max == 0 || (uses.len() as u32) < max {
            return None;
        }
        let oldest = uses.iter().map(|(_, t)| *t).min().unwrap_or(0);
        Some(Blocked::WaitingForBudget {
            until: OffsetDateTime::from_unix_timestamp(oldest + HOUR)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            used: uses.len() as u32,
            max,
        })
    }

    /// Claims a slot for a rotation starting at `now`; the wait when none is free. `Ok(None)`
    /// when there is no budget.
    pub fn take(self: &Arc<Self>, now: OffsetDateTime) -> Result<Option<Slot>, Blocked> {
        if self.max() == 0 {
            return Ok(None);
        }
        let mut uses = self.lock();
        prune(&mut uses, now);
        if let Some(wait) = self.exhausted(&uses) {
            return Err(wait);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        uses.push((id, now.unix_timestamp()));
        Ok(Some(Slot {
            budget: self.clone(),
            id,
            committed: false,
        }))
    }

    /// A rotation that bypassed the budget (forced) and published.
    pub fn record(&self, now: OffsetDateTime) {
        if self.max() == 0 {
            return;
        }
        let mut uses = self.lock();
        prune(&mut uses, now);
        uses.push((0, now.unix_timestamp()));
    }
}

fn prune(uses: &mut Vec<(u64, i64)>, now: OffsetDateTime) {
    let horizon = now.unix_timestamp() - HOUR;
    uses.retain(|(_, t)| *t > horizon);
}

/// Whether the budget governs this plan's rotation: every rotation but a forced one, and one
/// whose published secret is already within `renew_before / 2` of expiry (stopping it would
/// risk an outage; the budget is there against sweeping healthy secrets).
pub fn applies(plan: &Plan, renew_before: Duration, force: bool, now: OffsetDateTime) -> bool {
    if force || plan.rotate.is_none() {
        return false;
    }
    let expires = plan.published.as_ref().and_then(|p| p.expires);
    window::deadline(expires, renew_before).is_none_or(|d| now < d)
}

/// Claims the budget for a plan that rotates: `Ok(slot)` to go ahead (commit it once
/// published), or the plan turned into a wait.
pub fn claim(
    budget: &Arc<Budget>,
    plan: &mut Plan,
    renew_before: Duration,
    force: bool,
    now: OffsetDateTime,
) -> Option<Slot> {
    if !applies(plan, renew_before, force, now) {
        return None;
    }
    match budget.take(now) {
        Ok(slot) => slot,
        Err(wait) => {
            plan.rotate = None;
            plan.blocked = Some(wait);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::plan::RotateReason;
    use time::macros::datetime;

    fn due() -> Plan {
        Plan {
            rotate: Some(RotateReason::NoPublishedSecret),
            ..Plan::default()
        }
    }

    #[test]
    fn the_sixth_rotation_in_an_hour_waits_for_the_oldest_slot_to_free() {
        let b = Arc::new(Budget::new(5, vec![]));
        let t0 = datetime!(2026-12-01 10:00 UTC);
        let mut slots = Vec::new();
        for i in 0..5 {
            let mut p = due();
            let slot = claim(
                &b,
                &mut p,
                Duration::ZERO,
                false,
                t0 + time::Duration::minutes(i),
            );
            assert!(p.rotate.is_some());
            slots.push(slot.unwrap());
        }
        for s in slots {
            s.commit();
        }
        let mut p = due();
        let now = t0 + time::Duration::minutes(30);
        assert!(claim(&b, &mut p, Duration::ZERO, false, now).is_none());
        assert_eq!(p.rotate, None);
        assert_eq!(
            p.blocked,
            Some(Blocked::WaitingForBudget {
                until: t0 + time::Duration::hours(1),
                used: 5,
                max: 5
            })
        );
        // Forced rotations pass.
        let mut p = due();
        p.rotate = Some(RotateReason::Forced);
        claim(&b, &mut p, Duration::ZERO, true, now);
        assert!(p.blocked.is_none());
        // An hour after the first, a slot is free again.
        let mut p = due();
        assert!(
            claim(
                &b,
                &mut p,
                Duration::ZERO,
                false,
                t0 + time::Duration::minutes(61)
            )
            .is_some()
        );
    }

    #[test]
    fn a_rotation_that_does_not_publish_gives_its_slot_back() {
        let b = Arc::new(Budget::new(1, vec![]));
        let now = datetime!(2026-12-01 10:00 UTC);
        let slot = b.take(now).unwrap();
        assert!(b.take(now).is_err());
        drop(slot);
        assert!(b.take(now).unwrap().is_some());
    }

    #[test]
    fn rotations_before_a_restart_count_and_zero_means_no_budget() {
        let now = datetime!(2026-12-01 10:00 UTC);
        let b = Arc::new(Budget::new(
            2,
            vec![now.unix_timestamp() - 10, now.unix_timestamp() - 7200],
        ));
        assert_eq!(b.used(now), 1);
        let _one = b.take(now).unwrap();
        assert!(b.take(now).is_err());
        let none = Arc::new(Budget::new(0, vec![]));
        assert!(none.take(now).unwrap().is_none());
    }

    #[test]
    fn a_secret_near_expiry_is_not_held_by_the_budget() {
        let now = datetime!(2026-12-01 10:00 UTC);
        let mut p = due();
        p.published = Some(crate::rotation::plan::Published {
            version: "v".into(),
            key_id: None,
            created: None,
            expires: Some(now + time::Duration::days(1)),
            managed: true,
        });
        assert!(!applies(&p, Duration::from_secs(30 * 86_400), false, now));
        assert!(applies(&p, Duration::from_secs(3600), false, now));
    }
}

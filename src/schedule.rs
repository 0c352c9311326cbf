//! When each client is reconciled: its cron schedule (DST-correct in its time zone), jitter,
//! and failure backoff that survives restarts.
//!
//! Why not tokio-cron-scheduler: it turns a time zone into a fixed offset when the job is made
//! (wrong after a DST change), runs overlapping jobs, and offers no backoff or jitter. Here the
//! daemon's own loop compares wall-clock due times each second: a missed run (suspend, clock
//! jump forward) runs once at wake, which is what a reconcile wants; a backward jump is
//! detected and due times are recomputed.

use std::time::Duration;

use rand::Rng;
use time::OffsetDateTime;

use crate::config::Schedule;

/// Backoff after the first failure; doubles per failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// The longest backoff, unless the secret's expiry asks for a shorter one.
pub const BACKOFF_CAP: Duration = Duration::from_secs(3600);
/// The longest backoff once the published secret has expired.
pub const EXPIRED_BACKOFF_CAP: Duration = Duration::from_secs(900);
/// A client blocked on what only a person can change (a foreign credential in the other
/// slot, an unmanaged or soft-deleted secret, a version written by hand) is looked at again at
/// least this often: each look is a few reads and no write, and the person's fix is noticed
/// within minutes rather than after an hour of backoff.
pub const BLOCKED_RECHECK: Duration = Duration::from_secs(300);

/// The next run after `now`, with jitter of up to a tenth of the gap (at most 30 s), so that
/// clients sharing a schedule do not all call Azure in the same second.
pub fn next_run(schedule: &Schedule, now: OffsetDateTime) -> OffsetDateTime {
    let Some(next) = schedule.next_after(now) else {
        return now + time::Duration::hours(24);
    };
    let gap = (next - now).as_seconds_f64().max(0.0);
    let max_jitter = (gap / 10.0).min(30.0);
    let jitter = if max_jitter > 0.0 {
        rand::rng().random_range(0.0..max_jitter)
    } else {
        0.0
    };
    next + time::Duration::seconds_f64(jitter)
}

/// What [`tolerated_gap`] allows beyond the schedule's second run and its jitter: the lateness
/// of a reconcile's read after its due time (the loop's 1 s tick, a wait for a concurrency
/// permit or after a Graph 429, and the read itself: up to `observe::READ_BUDGET`, 60 s, at the
/// client's location and 10 s at each location it left), with room to spare.
pub const CONTINUITY_SLACK: Duration = Duration::from_secs(300);

/// How long after `last` (a read that showed a held credential named by no version) a read
/// still continues the record of that hold: until the schedule's second run after `last`, plus
/// that run's largest jitter ([`next_run`]: a tenth of the gap before it, at most 30 s) and
/// [`CONTINUITY_SLACK`]. So the next scheduled reconcile may be missed or fail once (a crash, a
/// restart, a transient error) without breaking the record; a longer gap (the daemon down, a
/// backoff after failures, another HA replica leading, a state dir restored from a backup) is
/// one in which the credential's version may have come back and been discarded again unseen,
/// and the planner counts the hold again from the read after it (`plan::KnownPublished`). The
/// schedule's own times around `last`, so that an irregular cron (weekdays only) tolerates its
/// long gaps. Whichever way it errs, a credential is only kept longer.
pub fn tolerated_gap(schedule: &Schedule, last: OffsetDateTime) -> Duration {
    // As `next_run` without a next run: a day.
    let next = |t: OffsetDateTime| {
        schedule
            .next_after(t)
            .unwrap_or(t + time::Duration::hours(24))
    };
    let first = next(last);
    let second = next(first);
    let gap: time::Duration = second - first;
    let jitter = (gap / 10_i32).min(time::Duration::seconds(30));
    let until = second + jitter.max(time::Duration::ZERO);
    Duration::try_from(until - last).unwrap_or_default() + CONTINUITY_SLACK
}

/// How long to wait after `failures` consecutive failures. While the published secret is close
/// to expiry the wait is capped at an eighth of the time left, so that a failing client is
/// retried several times before its secret expires.
pub fn backoff(failures: u32, now: OffsetDateTime, expires: Option<OffsetDateTime>) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let mut d = BACKOFF_BASE
        .saturating_mul(1u32 << exp.min(16))
        .min(BACKOFF_CAP);
    if let Some(e) = expires {
        let left = (e - now).as_seconds_f64();
        if left > 0.0 {
            d = d.min(Duration::from_secs_f64(
                (left / 8.0).max(BACKOFF_BASE.as_secs_f64()),
            ));
        } else {
            // Expired already: the sooner the better, but a failure that keeps failing
            // (a disabled service principal, Conditional Access) costs a credential added and
            // removed per attempt, so the wait still grows, to a quarter of an hour.
            d = d.min(EXPIRED_BACKOFF_CAP);
        }
    }
    d
}

/// How long a client waits after its `failures`-th consecutive failure: [`backoff`], and at
/// most [`BLOCKED_RECHECK`] when it is blocked on what a person must change.
pub fn retry_wait(
    failures: u32,
    blocked: bool,
    now: OffsetDateTime,
    expires: Option<OffsetDateTime>,
) -> Duration {
    let wait = backoff(failures, now, expires);
    if blocked {
        wait.min(BLOCKED_RECHECK)
    } else {
        wait
    }
}

/// A start-up delay spreading the first reconciles over a few seconds.
pub fn startup_jitter(clients: usize) -> Duration {
    // Writes are paced to Graph's quota anyway; the spread only keeps the first reads from
    // arriving in one burst, and must not delay small fleets.
    let spread = (clients as f64 * 0.0005).clamp(0.2, 5.0);
    Duration::from_secs_f64(rand::rng().random_range(0.0..spread))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_blocked_client_is_looked_at_again_within_five_minutes_whatever_its_failures() {
        let now = datetime!(2026-06-01 12:00 UTC);
        assert_eq!(retry_wait(12, false, now, None), BACKOFF_CAP);
        assert_eq!(retry_wait(12, true, now, None), BLOCKED_RECHECK);
        assert_eq!(
            retry_wait(1, true, now, None),
            BACKOFF_BASE,
            "short waits stay short"
        );
    }
    use crate::config::Schedule;
    use croner::parser::{CronParser, Seconds};
    use time::macros::datetime;

    /// A schedule from a cron expression with seconds and an IANA zone.
    pub(crate) fn schedule(expr: &str, tz: &str) -> Schedule {
        Schedule {
            expression: expr.into(),
            cron: CronParser::builder()
                .seconds(Seconds::Required)
                .build()
                .parse(expr)
                .unwrap(),
            timezone: tz.parse().unwrap(),
        }
    }

    #[test]
    fn a_daily_schedule_follows_daylight_saving_time_in_its_zone() {
        let s = schedule("0 0 3 * * *", "Europe/Berlin");
        // 03:00 in Berlin is 01:00 UTC in winter and 01:00 UTC... CET=UTC+1, CEST=UTC+2.
        let winter = s.next_after(datetime!(2026-03-27 12:00 UTC)).unwrap();
        assert_eq!(winter, datetime!(2026-03-28 02:00 UTC));
        let summer = s.next_after(datetime!(2026-03-29 12:00 UTC)).unwrap();
        assert_eq!(summer, datetime!(2026-03-30 01:00 UTC));
    }

    #[test]
    fn jitter_stays_within_a_tenth_of_the_gap() {
        let s = schedule("0 */15 * * * *", "UTC");
        let now = datetime!(2026-01-01 00:00:01 UTC);
        for _ in 0..100 {
            let next = next_run(&s, now);
            assert!(next >= datetime!(2026-01-01 00:15 UTC));
            assert!(next <= datetime!(2026-01-01 00:15:30 UTC), "{next}");
        }
    }

    /// Two of the schedule's runs after the last read, their jitter and the slack: the next
    /// reconcile may be missed once; a read later than that breaks the record's continuity.
    #[test]
    fn the_tolerated_gap_is_two_runs_after_the_last_read_and_the_slack() {
        let s = schedule("0 */15 * * * *", "UTC");
        let slack = CONTINUITY_SLACK.as_secs();
        // A read just after a run: the next two runs are 15 and 30 minutes away.
        let last = datetime!(2026-01-01 00:00:05 UTC);
        assert_eq!(tolerated_gap(&s, last).as_secs(), 30 * 60 - 5 + 30 + slack);
        // A read just before a run: 1 s and 15 minutes away.
        let last = datetime!(2026-01-01 00:14:59 UTC);
        assert_eq!(tolerated_gap(&s, last).as_secs(), 15 * 60 + 1 + 30 + slack);
        // Every two seconds (the tests' schedule): the jitter is a tenth of the gap.
        let s = schedule("*/2 * * * * *", "UTC");
        let last = datetime!(2026-01-01 00:00:00.5 UTC);
        let gap = tolerated_gap(&s, last);
        assert!(
            gap >= Duration::from_secs(slack + 3) && gap <= Duration::from_secs(slack + 4),
            "{gap:?}"
        );
        // Weekdays only: a read on Friday tolerates the weekend and Monday's run.
        let s = schedule("0 0 9 * * Mon-Fri", "UTC");
        let friday = datetime!(2026-01-02 10:00 UTC);
        let tuesday = datetime!(2026-01-06 09:00 UTC);
        assert_eq!(
            tolerated_gap(&s, friday),
            Duration::try_from(tuesday - friday).unwrap() + Duration::from_secs(30 + slack)
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let now = datetime!(2026-01-01 00:00 UTC);
        assert_eq!(backoff(1, now, None), Duration::from_secs(5));
        assert_eq!(backoff(2, now, None), Duration::from_secs(10));
        assert_eq!(backoff(4, now, None), Duration::from_secs(40));
        assert_eq!(backoff(30, now, None), BACKOFF_CAP);
    }

    #[test]
    fn backoff_shrinks_as_expiry_nears_so_retries_keep_coming() {
        let now = datetime!(2026-01-01 00:00 UTC);
        let d = backoff(30, now, Some(now + time::Duration::hours(2)));
        assert_eq!(d, Duration::from_secs(900));
    }

    #[test]
    fn after_expiry_the_backoff_still_grows_to_a_quarter_of_an_hour() {
        let now = datetime!(2026-01-01 00:00 UTC);
        let expired = Some(now - time::Duration::hours(1));
        assert_eq!(backoff(1, now, expired), Duration::from_secs(5));
        assert_eq!(backoff(4, now, expired), Duration::from_secs(40));
        assert_eq!(backoff(30, now, expired), EXPIRED_BACKOFF_CAP);
    }
}

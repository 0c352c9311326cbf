//! How many scheduled reconciles run at once. With `daemon.max_concurrent = "auto"` (the
//! default) the number follows Little's law: the reconciles in flight are the rate at which
//! they can start writing times how long each holds its slot. The rate is the Graph write
//! quota (a reconcile that rotates or retires makes one write); the time is measured, without
//! the waits for the quota itself, which would otherwise feed back into more slots and more
//! waiting. More slots than that would only queue at the pacer, each holding a whole reconcile
//! in memory; fewer would leave the quota unused.

use std::time::Duration;

/// Slots whatever was measured: reconciles that only read (a start-up pass, the schedule's
/// checks) are not paced by the write quota and want some concurrency of their own.
pub const FLOOR: usize = 32;
/// The most slots `auto` gives, as for a fixed `max_concurrent`.
pub const CEILING: usize = 4096;
/// Room above the measured need, for the spread of slot times (propagation). In the benchmark
/// at 10,000 clients (docs/performance.md) 1.5 ran about three times the reconciles the quota
/// needed, for 19 MiB more peak RSS than 1.25 (1.01 against 1.03 of the throttle bound), and
/// 1.0 left the pacer idle at times (1.05).
const HEADROOM: f64 = 1.25;
/// Weight of each new measurement in the moving average.
const ALPHA: f64 = 0.05;

#[derive(Debug)]
pub struct Concurrency {
    /// A `max_concurrent` the operator set: used as it is.
    fixed: Option<usize>,
    /// Graph writes the quota allows per second.
    writes_per_second: f64,
    /// Moving average of how long a reconcile that wrote held its slot (seconds).
    held: Option<f64>,
    limit: usize,
}

impl Concurrency {
    /// `fixed` is `daemon.max_concurrent` when set to a number; `quota` is
    /// `azure.graph_write_quota` (writes per window).
    pub fn new(fixed: Option<usize>, quota: (u32, Duration)) -> Concurrency {
        let window = quota.1.as_secs_f64().max(0.001);
        Concurrency {
            fixed,
            writes_per_second: f64::from(quota.0) / window,
            held: None,
            limit: fixed.unwrap_or(FLOOR),
        }
    }

    /// How many scheduled reconciles may run now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The most that could ever run: the size of the pool of slots.
    pub fn ceiling(&self) -> usize {
        self.fixed.unwrap_or(CEILING)
    }

    /// A reconcile that wrote to Graph held its slot for `held`, its waits for the quota not
    /// counted. While writes wait for the quota (`saturated`) the limit may fall but not rise:
    /// more reconciles would only wait too. That also breaks a loop in which a slower Azure
    /// (or a starved CPU) lengthens slot times, more slots add load, and slot times grow again.
    pub fn observe(&mut self, held: Duration, saturated: bool) {
        if self.fixed.is_some() {
            return;
        }
        let s = held.as_secs_f64();
        let avg = match self.held {
            Some(avg) => avg + ALPHA * (s - avg),
            None => s,
        };
        self.held = Some(avg);
        let need =
            ((self.writes_per_second * avg * HEADROOM).ceil() as usize).clamp(FLOOR, CEILING);
        self.limit = if saturated {
            need.min(self.limit)
        } else {
            need
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_QUOTA: (u32, Duration) = (3000, Duration::from_secs(150));

    #[test]
    fn a_set_max_concurrent_is_kept_whatever_is_measured() {
        let mut c = Concurrency::new(Some(7), DEFAULT_QUOTA);
        c.observe(Duration::from_secs(60), false);
        assert_eq!((c.limit(), c.ceiling()), (7, 7));
    }

    #[test]
    fn auto_starts_at_the_floor_and_sizes_to_the_quota_times_the_slot_time() {
        let mut c = Concurrency::new(None, DEFAULT_QUOTA);
        assert_eq!((c.limit(), c.ceiling()), (FLOOR, CEILING));
        // 20 writes a second, 15 s a rotation: 300 in flight use the quota, 375 with headroom.
        for _ in 0..200 {
            c.observe(Duration::from_secs(15), false);
        }
        assert_eq!(c.limit(), 375);
    }

    #[test]
    fn auto_follows_the_slot_time_down_but_never_below_the_floor_nor_above_the_ceiling() {
        let mut c = Concurrency::new(None, DEFAULT_QUOTA);
        c.observe(Duration::from_secs(15), false);
        for _ in 0..500 {
            c.observe(Duration::from_millis(100), false);
        }
        assert_eq!(c.limit(), FLOOR);
        let mut fast = Concurrency::new(None, (100_000, Duration::from_secs(1)));
        fast.observe(Duration::from_secs(30), false);
        assert_eq!(fast.limit(), CEILING);
    }

    #[test]
    fn while_writes_wait_for_the_quota_auto_may_shrink_but_not_grow() {
        let mut c = Concurrency::new(None, DEFAULT_QUOTA);
        c.observe(Duration::from_secs(4), false);
        assert_eq!(c.limit(), 100);
        // Slower reconciles while the quota is used to the full: more would only queue.
        for _ in 0..100 {
            c.observe(Duration::from_secs(40), true);
        }
        assert_eq!(c.limit(), 100);
        for _ in 0..100 {
            c.observe(Duration::from_millis(100), true);
        }
        assert!(c.limit() < 100, "{}", c.limit());
        for _ in 0..100 {
            c.observe(Duration::from_secs(40), false);
        }
        assert!(c.limit() > 100, "{}", c.limit());
    }
}

//! Sliding-window counters for the documented service limits.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Counters keyed by what the limit applies to (`graph-ru:<app>`, `kv:<vault>`, ...).
#[derive(Default)]
pub struct Windows {
    windows: HashMap<String, Window>,
}

#[derive(Default)]
struct Window {
    events: VecDeque<(Instant, u32)>,
    used: u64,
}

/// The outcome of charging a request against a limit.
pub enum Charge {
    /// Admitted; `fraction` of the limit is now in use.
    Admitted { fraction: f64 },
    /// Refused: the window frees enough room after this long.
    Refused { retry_after: Duration },
}

impl Windows {
    /// The window for `key`, without the events that have left it.
    fn pruned(&mut self, key: &str, window: Duration, now: Instant) -> &mut Window {
        let w = self.windows.entry(key.to_string()).or_default();
        while let Some(&(t, c)) = w.events.front() {
            if now.duration_since(t) < window {
                break;
            }
            w.events.pop_front();
            w.used -= u64::from(c);
        }
        w
    }

    /// Charges `cost` against `limit` per `window` for `key`. A refused request is not counted,
    /// as Azure does not count requests that fail with 429.
    pub fn charge(
        &mut self,
        key: &str,
        window: Duration,
        limit: u32,
        cost: u32,
        now: Instant,
    ) -> Charge {
        let w = self.pruned(key, window, now);
        if w.used + u64::from(cost) > u64::from(limit) {
            // Room comes back when the oldest events leave the window.
            let mut freed = 0u64;
            let need = w.used + u64::from(cost) - u64::from(limit);
            let mut at = now;
            for &(t, c) in &w.events {
                freed += u64::from(c);
                at = t;
                if freed >= need {
                    break;
                }
            }
            let retry_after = (at + window).saturating_duration_since(now);
            return Charge::Refused {
                retry_after: retry_after.max(Duration::from_millis(1)),
            };
        }
        w.events.push_back((now, cost));
        w.used += u64::from(cost);
        Charge::Admitted {
            fraction: w.used as f64 / f64::from(limit.max(1)),
        }
    }

    /// Checks a limit without charging it.
    pub fn would_admit(
        &mut self,
        key: &str,
        window: Duration,
        limit: u32,
        cost: u32,
        now: Instant,
    ) -> Option<Duration> {
        let w = self.pruned(key, window, now);
        if w.used + u64::from(cost) > u64::from(limit) {
            let oldest = w.events.front().map(|&(t, _)| t).unwrap_or(now);
            Some(
                (oldest + window)
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
            )
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_and_admits_again_once_the_window_slides() {
        let mut w = Windows::default();
        let t0 = Instant::now();
        let win = Duration::from_secs(10);
        for _ in 0..3 {
            assert!(matches!(
                w.charge("k", win, 3, 1, t0),
                Charge::Admitted { .. }
            ));
        }
        match w.charge("k", win, 3, 1, t0 + Duration::from_secs(4)) {
            Charge::Refused { retry_after } => assert_eq!(retry_after, Duration::from_secs(6)),
            Charge::Admitted { .. } => panic!("fourth request within the window was admitted"),
        }
        assert!(matches!(
            w.charge("k", win, 3, 1, t0 + Duration::from_secs(10)),
            Charge::Admitted { .. }
        ));
    }
}

//! The fence every write to Graph and Key Vault passes (`azure::graph`, the Key Vault
//! transport): with `[ha]`, a write may start only while this replica's lease outlives it
//! (`src/ha.rs` elects and renews, and tells the fence); without, it is always open.
//!
//! Graph and Key Vault cannot check a lease, so leadership is fenced in time: a write may start
//! only while the last successful renewal was *sent* less than [`write_window`] ago. The lease
//! then still runs for at least `request_timeout + MARGIN` on the service's side, longer than
//! any write may take, so no other replica can hold the lease while a write of this one is in
//! flight. `docs/ha.md` has the whole argument.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{Class, Error};
use crate::clock;

/// What the fence keeps back besides `request_timeout`: scheduling delays between the fence
/// check and the request leaving, and the two clocks' rates (a lease is timed by the storage
/// service's clock, the window by ours).
pub const MARGIN: Duration = Duration::from_secs(3);

/// Why a write was not sent. The Key Vault transport can only pass it on as text, by which the
/// Key Vault client tells it from a write whose answer was lost: this one never left.
pub const NOT_LEADER: &str =
    "not written: this replica is not the leader (its lease may have expired)";

/// How long after a renewal was sent a write may still start: the lease outlives the write's
/// whole `request_timeout`, with [`MARGIN`] to spare. Zero when the lease is too short for
/// that (the config refuses such settings).
pub fn write_window(lease_duration: Duration, request_timeout: Duration) -> Duration {
    lease_duration
        .saturating_sub(request_timeout)
        .saturating_sub(MARGIN)
}

/// Whether a write may start `since_renewal` after the last successful renewal was sent.
pub fn may_start_write(
    since_renewal: Duration,
    lease_duration: Duration,
    request_timeout: Duration,
) -> bool {
    since_renewal < write_window(lease_duration, request_timeout)
}

/// The gate every write to Graph and Key Vault passes (`azure::graph`, the Key Vault
/// transport). Without HA it is always open.
pub struct Fence {
    /// `None`: no HA, every write may start.
    lease: Option<(Duration, Duration)>,
    replica: Option<String>,
    state: Mutex<FenceState>,
    writes: AtomicUsize,
    idle: Notify,
}

#[derive(Default)]
struct FenceState {
    renewed_at: Option<Instant>,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl Fence {
    /// No HA: every write may start.
    pub fn open() -> Fence {
        Fence {
            lease: None,
            replica: None,
            state: Mutex::default(),
            writes: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    /// Closed until the first renewal.
    pub fn leased(lease_duration: Duration, request_timeout: Duration, replica: &str) -> Fence {
        Fence {
            lease: Some((lease_duration, request_timeout)),
            replica: Some(replica.to_string()),
            ..Fence::open()
        }
    }

    pub fn replica(&self) -> Option<&str> {
        self.replica.as_deref()
    }

    /// Whether this replica may start a write now.
    pub fn is_open(&self) -> bool {
        let Some((lease, timeout)) = self.lease else {
            return true;
        };
        let renewed_at = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .renewed_at;
        renewed_at.is_some_and(|at| {
            may_start_write(clock::monotonic().duration_since(at), lease, timeout)
        })
    }

    /// A renewal (or the acquire) sent at `sent_at` succeeded.
    pub fn renewed(&self, sent_at: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.renewed_at = Some(s.renewed_at.map_or(sent_at, |t| t.max(sent_at)));
    }

    /// Leadership is over (lost, or stopping): no write starts from now on.
    pub fn close(&self) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .renewed_at = None;
    }

    /// Admits one write, or refuses it (transient: it is not the client's failure, and the
    /// reconcile is cancelled as the daemon steps down). The guard counts the write as in
    /// flight until it is dropped.
    pub fn begin_write(
        self: &Arc<Self>,
        service: &'static str,
        operation: &'static str,
    ) -> Result<WriteGuard, Error> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let guard = WriteGuard {
            fence: self.clone(),
        };
        if self.is_open() {
            Ok(guard)
        } else {
            Err(Error::new(
                service,
                operation,
                Class::Transient { retry_after: None },
                NOT_LEADER,
            ))
        }
    }

    /// Waits until no write is in flight, up to `limit`; false when some still are.
    pub async fn writes_done(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let idle = self.idle.notified();
            if self.writes.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.writes.load(Ordering::SeqCst) == 0;
            }
        }
    }
}

/// A write in flight; see [`Fence::begin_write`].
pub struct WriteGuard {
    fence: Arc<Fence>,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        if self.fence.writes.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.fence.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_write_may_start_only_while_the_lease_outlives_it_by_the_margin() {
        // 60 s lease, 30 s request timeout: writes for 27 s after a renewal was sent.
        assert_eq!(write_window(S(60), S(30)), S(27));
        assert!(may_start_write(S(26), S(60), S(30)));
        assert!(!may_start_write(S(27), S(60), S(30)));
        // The tests' settings: 15 s lease, 5 s timeout.
        assert_eq!(write_window(S(15), S(5)), S(7));
    }

    #[test]
    fn a_lease_shorter_than_a_write_never_lets_one_start() {
        assert_eq!(write_window(S(15), S(30)), Duration::ZERO);
        assert!(!may_start_write(Duration::ZERO, S(15), S(30)));
    }

    #[test]
    fn the_fence_opens_on_a_renewal_and_closes_when_the_window_passes_or_on_step_down() {
        let fence = Arc::new(Fence::leased(S(15), S(5), "a"));
        assert!(!fence.is_open(), "closed until the lease is held");
        assert!(fence.begin_write("graph", "add_password").is_err());
        fence.renewed(clock::monotonic());
        assert!(fence.is_open());
        let guard = fence.begin_write("graph", "add_password").unwrap();
        fence.close();
        assert!(!fence.is_open());
        assert!(fence.begin_write("graph", "add_password").is_err());
        drop(guard);
        // A renewal sent 8 s ago is past the 7 s window.
        fence.renewed(clock::monotonic() - S(8));
        assert!(!fence.is_open());
        // Without HA the fence never closes.
        assert!(Fence::open().is_open());
    }

    #[tokio::test]
    async fn stopping_waits_for_the_writes_in_flight() {
        let fence = Arc::new(Fence::leased(S(15), S(5), "a"));
        fence.renewed(clock::monotonic());
        let guard = fence.begin_write("keyvault", "set_secret").unwrap();
        assert!(!fence.writes_done(Duration::from_millis(50)).await);
        let f = fence.clone();
        let waiter = tokio::spawn(async move { f.writes_done(S(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(guard);
        assert!(waiter.await.unwrap());
        // A refused write is not in flight either.
        fence.close();
        let _ = fence.begin_write("graph", "remove_password");
        assert!(fence.writes_done(Duration::from_millis(10)).await);
    }
}

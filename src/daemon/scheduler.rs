//! The schedule: when each client is due, which reconciles are in flight, and the limit on how
//! many run at once. The loop in [`super::run`] drives it with ticks, admin requests, finished
//! reconciles and reloads; it starts reconciles as tasks and learns their results from `Done`.
//!
//! Due times sit in a timer heap, so a tick looks only at the clients that are due: an idle
//! daemon costs the same per second with ten clients or a hundred thousand.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::concurrency::Concurrency;
use crate::admin::{RotateAnswer, Shared};
use crate::config::Client;
use crate::rotation::{self, Context, Failure, Options, Report};
use crate::schedule;
use crate::store::Backoff;

/// How long shutdown waits for reconciles in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// A reconcile that finished (or did not start: `skipped`).
pub struct Done {
    pub client: String,
    pub result: Box<Result<Report, Failure>>,
    pub skipped: bool,
    /// How long the reconcile held its slot, its waits for Graph's quota not counted.
    pub held: Option<Duration>,
}

struct Entry {
    next_due: OffsetDateTime,
    in_flight: bool,
    /// When the next reconcile should also check for drift (`drift_interval`).
    drift_due: OffsetDateTime,
    /// The turn of this client's live timer; its older timers are stale.
    turn: u64,
    /// Whether the store may hold a backoff row for this client (one was there at start-up or
    /// a reload, or a failure recorded one since): a success clears it, and only then, rather
    /// than writing to the store after every reconcile.
    backoff_stored: bool,
}

/// A client's place in the heap: its due time, the turn that pushed it (earlier turns of one
/// client are stale and skipped when they come up), its name.
type Timer = Reverse<(OffsetDateTime, u64, Arc<str>)>;

pub struct Scheduler {
    /// By the config's own `Arc` of each name. A B-tree built whole packs its nodes full: about
    /// 66 bytes a client, where a hash table sized for every client held 106 (buckets are a
    /// power of two, and a key and an entry each).
    entries: BTreeMap<Arc<str>, Entry>,
    /// Every client that is not in flight has one live timer here; the earliest is on top.
    timers: BinaryHeap<Timer>,
    turns: u64,
    semaphore: Arc<Semaphore>,
    /// How many of the semaphore's permits scheduled reconciles may take now.
    concurrency: Concurrency,
    tasks: TaskTracker,
    cancel: CancellationToken,
    done: mpsc::Sender<Done>,
    last_tick: OffsetDateTime,
    /// Whether this replica may start reconciles (always, without HA).
    leading: bool,
}

impl Scheduler {
    /// Every client of `ctx` due after a short start-up spread, or when its persisted backoff
    /// ends.
    pub fn new(ctx: &Context, now: OffsetDateTime) -> (Scheduler, mpsc::Receiver<Done>) {
        let (done, results) = mpsc::channel(1024);
        let concurrency = Concurrency::new(
            ctx.config.max_concurrent,
            ctx.config.azure.graph_write_quota,
        );
        let mut scheduler = Scheduler {
            entries: BTreeMap::new(),
            timers: BinaryHeap::with_capacity(ctx.config.clients.len()),
            turns: 0,
            semaphore: Arc::new(Semaphore::new(concurrency.ceiling())),
            concurrency,
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
            done,
            last_tick: now,
            leading: true,
        };
        ctx.metrics
            .register_clients(ctx.config.clients.iter().map(|c| c.name.clone()));
        // One read of every persisted backoff, not one query per client.
        let backoffs = ctx.store.backoffs().unwrap_or_default();
        let due: Vec<OffsetDateTime> = ctx
            .config
            .clients
            .iter()
            .map(|c| {
                let start = now
                    + time::Duration::try_from(schedule::startup_jitter(ctx.config.clients.len()))
                        .unwrap_or_default();
                let backoff_ends = backoffs
                    .get(&*c.name)
                    .and_then(|at| OffsetDateTime::from_unix_timestamp(*at).ok())
                    .unwrap_or(now);
                start.max(backoff_ends)
            })
            .collect();
        scheduler.entries = ctx
            .config
            .clients
            .iter()
            .zip(&due)
            .map(|(c, &due)| {
                let entry = Entry {
                    next_due: due,
                    in_flight: false,
                    drift_due: first_drift_check(c, due),
                    turn: 0,
                    backoff_stored: backoffs.contains_key(&*c.name),
                };
                (c.name.clone(), entry)
            })
            .collect();
        // The timers in the config's order, as before: of clients due at the same instant,
        // the first configured starts first.
        for (c, due) in ctx.config.clients.iter().zip(due) {
            scheduler.set_due(&c.name, due);
        }
        (scheduler, results)
    }

    /// Moves `name`'s next reconcile to `due`: a new live timer, the old one left stale.
    fn set_due(&mut self, name: &Arc<str>, due: OffsetDateTime) {
        let Some(e) = self.entries.get_mut(name) else {
            return;
        };
        self.turns += 1;
        e.next_due = due;
        e.turn = self.turns;
        self.timers.push(Reverse((due, self.turns, name.clone())));
        // Stale timers (forced rotations, reloads, a clock that went back) are dropped when
        // they come up; rebuild when they could outnumber the live ones.
        if self.timers.len() > 2 * self.entries.len() + 64 {
            self.timers = self
                .entries
                .iter()
                .filter(|(_, e)| !e.in_flight)
                .map(|(n, e)| Reverse((e.next_due, e.turn, n.clone())))
                .collect();
        }
    }

    /// A tick of the loop: notices a wall clock that went back, and starts what is due.
    pub fn tick(&mut self, shared: &Arc<Shared>, now: OffsetDateTime) {
        let ctx = shared.context();
        if now < self.last_tick - time::Duration::seconds(2) {
            tracing::warn!("the wall clock went back; recomputing due times");
            for c in &ctx.config.clients {
                let Some((name, e)) = self.entries.get_key_value(&*c.name) else {
                    continue;
                };
                if !e.in_flight {
                    let due = e.next_due.min(schedule::next_run(&c.policy.schedule, now));
                    let name = name.clone();
                    self.set_due(&name, due);
                }
            }
        }
        self.last_tick = now;
        self.start_due(shared, &ctx, now);
        shared.metrics.set_reconciles(
            self.concurrency.limit(),
            self.concurrency.ceiling() - self.semaphore.available_permits(),
        );
    }

    /// A forced rotation from the admin API.
    pub fn rotate(
        &mut self,
        shared: &Arc<Shared>,
        client: String,
        revoke_previous: bool,
    ) -> RotateAnswer {
        match self.entries.get_mut(client.as_str()) {
            None => RotateAnswer::NoSuchClient,
            Some(e) if e.in_flight => RotateAnswer::InFlight,
            Some(e) => {
                e.in_flight = true;
                let (preflight, answer) = oneshot::channel();
                let opts = Options {
                    force: true,
                    revoke_previous,
                    ..Options::default()
                };
                self.start(
                    shared,
                    None,
                    shared.context(),
                    client,
                    opts,
                    Some(preflight),
                );
                RotateAnswer::Started { preflight: answer }
            }
        }
    }

    /// A reconcile finished: when the client is next due, then whatever else is due.
    pub fn done(&mut self, shared: &Arc<Shared>, done: Done, now: OffsetDateTime) {
        shared.set_in_flight(&done.client, false);
        if let (Some(held), Ok(report)) = (done.held, done.result.as_ref())
            && (report.rotated.is_some() || !report.removed.is_empty())
        {
            let before = self.concurrency.limit();
            let saturated = shared.context().azure.graph.writes_waiting() > 0;
            self.concurrency
                .observe(held, saturated, crate::clock::monotonic());
            if self.concurrency.limit() != before {
                tracing::debug!(
                    slots = self.concurrency.limit(),
                    "reconciles at once, sized from the write quota"
                );
            }
        }
        let ctx = shared.context();
        // A client removed by a reload while it was reconciling leaves no series.
        let Some(c) = ctx.config.client(&done.client) else {
            self.entries.remove(done.client.as_str());
            shared.metrics.remove_client(&done.client);
            return;
        };
        if let Some((name, e)) = self.entries.get_key_value(done.client.as_str()) {
            let name = name.clone();
            let mut drift_due = e.drift_due;
            let mut backoff_stored = e.backoff_stored;
            if let Ok(report) = done.result.as_ref()
                && report.drift_checked
            {
                drift_due = after(now, c.policy.drift_interval);
            }
            let due = if done.skipped {
                now + time::Duration::seconds(5)
            } else {
                let next = settle(&ctx, c, &done.result, now, &mut backoff_stored);
                // A schedule rarer than drift_interval still gets its drift checks.
                if c.policy.drift_interval.is_zero() {
                    next
                } else {
                    next.min(drift_due.max(now + time::Duration::seconds(1)))
                }
            };
            if let Some(e) = self.entries.get_mut(&name) {
                e.in_flight = false;
                e.drift_due = drift_due;
                e.backoff_stored = backoff_stored;
            }
            self.set_due(&name, due);
        }
        self.start_due(shared, &ctx, now);
    }

    /// After a reload: clients that left go (once their reconcile ends), new ones are due now,
    /// and so are clients waiting out a failure's backoff: a reload is how an operator says
    /// "look again" after fixing what blocked them.
    pub fn reloaded(&mut self, ctx: &Context, added: Vec<Arc<str>>, now: OffsetDateTime) {
        // Timers of clients that left are dropped when they come up.
        self.entries
            .retain(|name, e| e.in_flight || ctx.config.client(name).is_some());
        let backing_off: Vec<Arc<str>> = ctx
            .store
            .backoffs()
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, at)| *at > now.unix_timestamp())
            .filter_map(|(name, _)| {
                self.entries
                    .get_key_value(name.as_str())
                    .filter(|(_, e)| !e.in_flight)
                    .map(|(k, _)| k.clone())
            })
            .collect();
        for name in backing_off {
            self.set_due(&name, now);
        }
        let added: Vec<Arc<str>> = added
            .into_iter()
            .filter(|name| !self.entries.contains_key(&**name))
            .collect();
        // Merged in one pass, which keeps the map's nodes full (`entries`).
        let mut new: BTreeMap<Arc<str>, Entry> = added
            .iter()
            .map(|name| {
                let drift_due = ctx
                    .config
                    .client(name)
                    .map(|c| first_drift_check(c, now))
                    .unwrap_or(now);
                let entry = Entry {
                    next_due: now,
                    in_flight: false,
                    drift_due,
                    turn: 0,
                    // A client that was configured before may have left a row.
                    backoff_stored: true,
                };
                (name.clone(), entry)
            })
            .collect();
        self.entries.append(&mut new);
        for name in &added {
            self.set_due(name, now);
        }
    }

    pub fn leading(&self) -> bool {
        self.leading
    }

    /// HA: this replica leads (it starts what is due from the next tick on) or no longer
    /// does: the reconciles in flight are cancelled at their next safe point (their writes are
    /// fenced already), and nothing new starts.
    pub fn set_leading(&mut self, leading: bool) {
        if self.leading && !leading {
            self.cancel.cancel();
            self.cancel = CancellationToken::new();
        }
        self.leading = leading;
    }

    /// Cancels the reconciles in flight at their next safe point and waits for them, up to
    /// `SHUTDOWN_GRACE`.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "reconciles still running at the shutdown deadline; their attempts are cleaned up on the next start"
            );
        }
    }

    /// Starts the clients that are due, earliest due first, as long as reconcile permits are
    /// free. Only the timers that are due are looked at.
    fn start_due(&mut self, shared: &Arc<Shared>, ctx: &Context, now: OffsetDateTime) {
        if !self.leading {
            return;
        }
        while let Some(Reverse((due, turn, name))) = self.timers.peek() {
            if *due > now {
                return;
            }
            let live = self
                .entries
                .get(name)
                .is_some_and(|e| e.turn == *turn && !e.in_flight)
                && ctx.config.client(name).is_some();
            if !live {
                self.timers.pop();
                continue;
            }
            let running = self.concurrency.ceiling() - self.semaphore.available_permits();
            if running >= self.concurrency.limit() {
                return;
            }
            let Ok(permit) = self.semaphore.clone().try_acquire_owned() else {
                return;
            };
            let Some(Reverse((_, _, name))) = self.timers.pop() else {
                return;
            };
            let Some(e) = self.entries.get_mut(&name) else {
                continue;
            };
            e.in_flight = true;
            let opts = Options {
                drift_check: now >= e.drift_due,
                ..Options::default()
            };
            self.start(
                shared,
                Some(permit),
                ctx.clone(),
                name.to_string(),
                opts,
                None,
            );
        }
    }

    /// Starts a reconcile of `client`. Scheduled reconciles come with a permit already taken,
    /// so that no task exists for a client that cannot run yet (a waiting reconcile future is
    /// large, and ten thousand of them would be most of the daemon's memory); forced ones wait
    /// for one.
    fn start(
        &self,
        shared: &Arc<Shared>,
        permit: Option<OwnedSemaphorePermit>,
        ctx: Context,
        client: String,
        opts: Options,
        preflight: Option<rotation::Preflight>,
    ) {
        shared.set_in_flight(&client, true);
        let semaphore = self.semaphore.clone();
        let cancel = self.cancel.clone();
        let tx = self.done.clone();
        self.tasks.spawn(async move {
            let finish = |result: Result<Report, Failure>, skipped: bool| Done {
                client: client.clone(),
                result: Box::new(result),
                skipped,
                held: None,
            };
            let permit = match permit {
                Some(p) => p,
                None => match semaphore.acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let Some(c) = ctx.config.client(&client).cloned() else {
                let _ = tx.send(finish(Err(Failure::Cancelled), true)).await;
                return;
            };
            // What a revocation revokes is what was published when it was asked, before any
            // wait for the lock.
            let mut opts = opts;
            // Boxed, as it runs only for a forced revocation: inline, the Key Vault read made
            // every reconcile's task larger by its size, for as long as the reconcile ran.
            if opts.revoke_previous {
                opts.revoke_target = Box::pin(rotation::published_key_id(&ctx, &c)).await;
            }
            // A `rotate` from the command line may hold the client. A scheduled reconcile tries
            // again shortly; a forced one waits for the lock with its options, so it is never
            // lost.
            let lock = if opts.force {
                let wait = c.policy.verify_timeout + Duration::from_secs(180);
                tokio::select! {
                    l = ctx.store.lock(&client, wait) => l,
                    _ = cancel.cancelled() => Ok(None),
                }
            } else {
                ctx.store.try_lock(&client)
            };
            let lock = match lock {
                Ok(Some(l)) => l,
                Ok(None) => {
                    if opts.force {
                        let why = "the client stayed locked by another process".to_string();
                        tracing::warn!(client = %client, "forced rotation not run: {why}");
                        if let Some(p) = preflight {
                            let _ = p.send(Err(why));
                        }
                    } else {
                        tracing::info!(client = %client, "another process holds this client; trying again shortly");
                    }
                    let _ = tx.send(finish(Err(Failure::Cancelled), true)).await;
                    return;
                }
                Err(e) => {
                    let _ = tx
                        .send(finish(Err(Failure::Store(e)), false))
                        .await;
                    return;
                }
            };
            let started = tokio::time::Instant::now();
            // Boxed: unboxed, the task's state held the reconcile's (about 6 KiB) twice over,
            // 12.6 KiB a task in all (measured with size_of_val); boxed, 6 KiB.
            let (result, quota_waits) = Box::pin(crate::azure::graph::QUOTA_WAIT.scope(
                Default::default(),
                async {
                    let result =
                        rotation::reconcile_with(&ctx, &c, opts, &cancel, preflight).await;
                    (result, crate::azure::graph::QUOTA_WAIT.with(|w| w.get()))
                },
            ))
            .await;
            drop(lock);
            // Free the slot before reporting, so that the loop can hand it on at once.
            drop(permit);
            let mut done = finish(result, false);
            done.held = Some(started.elapsed().saturating_sub(quota_waits));
            let _ = tx.send(done).await;
        });
    }
}

/// The first drift sign-in comes one `drift_interval` after a client's first reconcile, not
/// with it: a start (or a reload) then costs no extra request per client, and what needs no
/// sign-in is checked at every reconcile anyway.
fn first_drift_check(c: &Client, first: OffsetDateTime) -> OffsetDateTime {
    after(first, c.policy.drift_interval)
}

/// `t + d`, or far in the future when that is past what a date can hold.
fn after(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d))
        .unwrap_or(t + time::Duration::days(36_500))
}

/// Logs a reconcile's result, persists backoff, and returns the next due time.
fn settle(
    ctx: &Context,
    c: &Client,
    result: &Result<Report, Failure>,
    now: OffsetDateTime,
    backoff_stored: &mut bool,
) -> OffsetDateTime {
    let next = schedule::next_run(&c.policy.schedule, now);
    match result {
        Ok(report) => {
            if report.rotated.is_some()
                || !report.removed.is_empty()
                || report.plan.rotate.is_some()
            {
                tracing::info!(client = %c.name, rotated = report.rotated.is_some(), removed = report.removed.len(), "reconciled");
            } else {
                tracing::debug!(client = %c.name, "reconciled; nothing to do");
            }
            // Queued, not awaited: the scheduler's loop does not wait on the store. A clear
            // that fails leaves the backoff for the next start to find (it says so in the log).
            if *backoff_stored {
                *backoff_stored = false;
                let cleared = ctx.store.clear_backoff(&c.name);
                let name = c.name.clone();
                tokio::spawn(async move {
                    if let Err(e) = cleared.await {
                        tracing::warn!(client = %name, error = %e, "could not clear the client's failure backoff in the store");
                    }
                });
            }
            // Retire as soon as an overlap ends rather than at the next scheduled reconcile.
            let next = match report.retire_at {
                Some(at) => next.min(at + time::Duration::seconds(1)),
                None => next,
            };
            // A wait (for a password slot, a change window, the rotation budget) is looked at
            // again when it ends.
            match report.plan.blocked.as_ref().and_then(|b| b.wait_until()) {
                Some(until) => next.min(until + time::Duration::seconds(1)),
                None => next,
            }
        }
        Err(Failure::Cancelled) => next,
        Err(e) => {
            // The streak this failure continues. After a success there is none, whatever the
            // store still holds: its clear is queued, not awaited, and may not have committed
            // yet, or may have failed (it is not tried again while the client succeeds).
            let previous = if *backoff_stored {
                ctx.store.backoff(&c.name).unwrap_or_default()
            } else {
                Backoff::default()
            };
            let failures = previous.failures + 1;
            let expires = ctx
                .store
                .client_row(&c.name)
                .ok()
                .flatten()
                .and_then(|r| r.expires_at)
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
            let blocked = matches!(e, Failure::Blocked(_));
            let wait = schedule::retry_wait(failures, blocked, now, expires);
            let until = now + time::Duration::try_from(wait).unwrap_or_default();
            let kind = if e.is_transient() {
                "transient"
            } else {
                "permanent"
            };
            tracing::error!(client = %c.name, failures, retry_in_s = wait.as_secs(), kind, "reconcile failed: {e}");
            *backoff_stored = true;
            // Queued in this order, committed in it, not awaited (as for the clear above).
            ctx.store
                .set_backoff(
                    &c.name,
                    &Backoff {
                        failures,
                        next_attempt_at: until.unix_timestamp(),
                        last_error: Some(e.to_string()),
                    },
                )
                .detach();
            ctx.store
                .record_history(&c.name, now, "failed", None, None, Some(&e.to_string()))
                .detach();
            until
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::store::Store;

    /// A context with one client, "c", on a fresh store.
    fn context(tmp: &tempfile::TempDir) -> Context {
        let state = tmp.path().join("state");
        let file = tmp.path().join("config.toml");
        let text = format!(
            r#"[azure]
tenant_id = "00000000-0000-0000-0000-000000000000"

[azure.credential]
kind = "managed_identity"

[state]
dir = "{}"

[[clients]]
name = "c"
app_id = "22222222-2222-2222-2222-222222222222"
key_vault_url = "https://kv.vault.azure.net/"
secret_name = "c-secret"
"#,
            state.display()
        );
        let config = Config::parse(&file, &text).unwrap();
        let store = Arc::new(Store::open(&state).unwrap());
        crate::daemon::build_context(config, store, Arc::new(Metrics::new())).unwrap()
    }

    fn succeeded() -> Result<Report, Failure> {
        Ok(Report {
            plan: rotation::plan::Plan::default(),
            rotated: None,
            removed: Vec::new(),
            warnings: Vec::new(),
            retire_at: None,
            gauges: Default::default(),
            drift: Vec::new(),
            drift_checked: false,
        })
    }

    fn failed() -> Result<Report, Failure> {
        Err(Failure::VerifyTimeout("5m".into()))
    }

    /// Waits until every write queued so far has committed (the writer keeps their order).
    async fn flushed(ctx: &Context) {
        ctx.store.clear_backoff("flush").await.unwrap();
    }

    #[tokio::test]
    async fn a_failure_after_a_success_starts_a_new_streak_even_when_the_clear_did_not_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = context(&tmp);
        let c = ctx.config.client("c").unwrap().clone();
        let now = crate::clock::now();
        let mut stored = false;
        settle(&ctx, &c, &failed(), now, &mut stored);
        flushed(&ctx).await;
        settle(&ctx, &c, &failed(), now, &mut stored);
        flushed(&ctx).await;
        assert_eq!(ctx.store.backoff("c").unwrap().failures, 2);
        // The success's clear fails (the store refuses it, as a busy or full disk would).
        ctx.store
            .conn()
            .execute_batch(
                "CREATE TRIGGER no_clear BEFORE DELETE ON backoff BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        settle(&ctx, &c, &succeeded(), now, &mut stored);
        flushed(&ctx).await;
        ctx.store
            .conn()
            .execute_batch("DROP TRIGGER no_clear")
            .unwrap();
        assert_eq!(ctx.store.backoff("c").unwrap().failures, 2, "not cleared");
        // The next failure is the first of a new streak: it waits BACKOFF_BASE, not the
        // streak's third wait.
        let until = settle(&ctx, &c, &failed(), now, &mut stored);
        flushed(&ctx).await;
        assert_eq!(ctx.store.backoff("c").unwrap().failures, 1);
        assert_eq!(
            until,
            now + time::Duration::try_from(schedule::BACKOFF_BASE).unwrap()
        );
        // A failure right after a success, its clear still queued: a new streak too.
        settle(&ctx, &c, &failed(), now, &mut stored);
        flushed(&ctx).await;
        assert_eq!(ctx.store.backoff("c").unwrap().failures, 2);
        settle(&ctx, &c, &succeeded(), now, &mut stored);
        settle(&ctx, &c, &failed(), now, &mut stored);
        flushed(&ctx).await;
        assert_eq!(ctx.store.backoff("c").unwrap().failures, 1);
    }
}

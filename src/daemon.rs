//! `secret-rotator run`: the scheduler loop, signals, reload, readiness and sd_notify.
//!
//! One loop owns the schedule. Every second it pings the systemd watchdog (so a stalled loop
//! is noticed), and starts the reconciles that are due, each under the client's lock and a
//! global concurrency limit. Results come back to the loop, which sets the next due time or
//! the persisted backoff.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use secrecy::SecretString;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::azure::{self, Skew};
use crate::clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::rotation::{self, AzureClients, Context, Failure, Options, Report};
use crate::schedule;
use crate::status::{self, ClientStatus};
use crate::store::{Backoff, Store};

/// How long shutdown waits for reconciles in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// `/healthz` fails when the loop has not ticked for this long.
const STALL_LIMIT: i64 = 30;

pub enum Command {
    Rotate {
        client: String,
        revoke_previous: bool,
        reply: oneshot::Sender<RotateAnswer>,
    },
    Done {
        client: String,
        result: Box<Result<Report, Failure>>,
        skipped: bool,
    },
}

pub enum RotateAnswer {
    /// Queued with its options: it runs as soon as the client's lock is free. `preflight` says,
    /// once the reconcile has observed and planned, whether it refused the request.
    Started {
        preflight: oneshot::Receiver<Result<(), String>>,
    },
    InFlight,
    Unknown,
}

/// What the loop shares with the HTTP server.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub commands: mpsc::Sender<Command>,
    context: RwLock<Context>,
    heartbeat: AtomicI64,
    signed_in: AtomicBool,
    sign_in_error: Mutex<Option<String>>,
    in_flight: Mutex<HashSet<String>>,
}

impl Shared {
    pub fn context(&self) -> Context {
        self.context
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    pub fn alive(&self) -> bool {
        clock::now().unix_timestamp() - self.heartbeat.load(Ordering::Relaxed) <= STALL_LIMIT
    }
    /// `None` when ready, else why not.
    pub fn readiness(&self) -> Option<String> {
        if self.signed_in.load(Ordering::Relaxed) {
            None
        } else {
            Some(
                self.sign_in_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_else(|| "signing in to Azure".into()),
            )
        }
    }
    pub fn admin_token(&self) -> Option<SecretString> {
        self.context().config.server.admin_token.clone()
    }
    pub fn status(&self) -> Vec<ClientStatus> {
        let ctx = self.context();
        let in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        status::collect(&ctx.config, &ctx.store, &|name| in_flight.contains(name))
    }
}

/// Builds everything a config needs to reconcile.
pub fn build_context(
    config: Config,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Context> {
    let http = azure::http_client(
        config.azure.ca_pem.as_deref(),
        config.azure.request_timeout,
        true,
    )?;
    let shared = azure::Shared {
        http,
        metrics: metrics.clone(),
        skew: Arc::new(Skew::default()),
    };
    let azure = AzureClients::new(&config, &shared)?;
    Ok(Context {
        config: Arc::new(config),
        azure: Arc::new(azure),
        store,
        metrics,
        shared,
    })
}

struct Entry {
    next_due: OffsetDateTime,
    in_flight: bool,
}

/// Runs the daemon until SIGTERM or SIGINT (or `stop`).
pub async fn run(
    config_path: &Path,
    config: Config,
    listen_override: Option<std::net::SocketAddr>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::open(&config.state_dir)?);
    let listen = listen_override.unwrap_or(config.server.listen);
    let ctx = build_context(config, store, metrics.clone())?;
    let (tx, mut rx) = mpsc::channel::<Command>(1024);
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        commands: tx.clone(),
        context: RwLock::new(ctx.clone()),
        heartbeat: AtomicI64::new(clock::now().unix_timestamp()),
        signed_in: AtomicBool::new(false),
        sign_in_error: Mutex::new(None),
        in_flight: Mutex::new(HashSet::new()),
    });

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding server.listen {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, clients = ctx.config.clients.len(), "secret-rotator started");
    let app = crate::server::router(shared.clone());
    let http = tokio::spawn(crate::server::serve(listener, app, stop.clone()));

    spawn_sign_in(shared.clone(), ctx.clone(), stop.clone());

    let mut entries: HashMap<String, Entry> = HashMap::new();
    let now = clock::now();
    for c in &ctx.config.clients {
        metrics.register_client(&c.name);
        let backoff = ctx.store.backoff(&c.name).unwrap_or_default();
        let start = now
            + time::Duration::try_from(schedule::startup_jitter(ctx.config.clients.len()))
                .unwrap_or_default();
        let due =
            start.max(OffsetDateTime::from_unix_timestamp(backoff.next_attempt_at).unwrap_or(now));
        entries.insert(
            c.name.clone(),
            Entry {
                next_due: due,
                in_flight: false,
            },
        );
    }
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("reconciling"),
    ]);

    let semaphore = Arc::new(Semaphore::new(ctx.config.max_concurrent));
    let tasks = TaskTracker::new();
    let reconcile_cancel = CancellationToken::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut last_tick = clock::now();
    let mut cursor = 0usize;

    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = clock::now();
                shared.heartbeat.store(now.unix_timestamp(), Ordering::Relaxed);
                notify(&[sd_notify::NotifyState::Watchdog]);
                let ctx = shared.context();
                if now < last_tick - time::Duration::seconds(2) {
                    tracing::warn!("the wall clock went back; recomputing due times");
                    for c in &ctx.config.clients {
                        if let Some(e) = entries.get_mut(&c.name) {
                            e.next_due = e.next_due.min(schedule::next_run(&c.policy.schedule, now));
                        }
                    }
                }
                last_tick = now;
                start_due(&shared, &tasks, &semaphore, &reconcile_cancel, &ctx, &mut entries, &mut cursor, now);
            }
            Some(cmd) = rx.recv() => match cmd {
                Command::Rotate { client, revoke_previous, reply } => {
                    let ctx = shared.context();
                    let answer = match entries.get_mut(&client) {
                        None => RotateAnswer::Unknown,
                        Some(e) if e.in_flight => RotateAnswer::InFlight,
                        Some(e) => {
                            e.in_flight = true;
                            let (preflight, answer) = oneshot::channel();
                            start(&shared, &tasks, &semaphore, None, &reconcile_cancel, ctx, client, Options { force: true, revoke_previous }, Some(preflight));
                            RotateAnswer::Started { preflight: answer }
                        }
                    };
                    let _ = reply.send(answer);
                }
                Command::Done { client, result, skipped } => {
                    shared.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&client);
                    let ctx = shared.context();
                    // A client removed by a reload while it was reconciling leaves no series.
                    let Some(c) = ctx.config.client(&client) else {
                        entries.remove(&client);
                        shared.metrics.remove_client(&client);
                        continue;
                    };
                    let Some(e) = entries.get_mut(&client) else { continue };
                    e.in_flight = false;
                    let now = clock::now();
                    e.next_due = if skipped {
                        now + time::Duration::seconds(5)
                    } else {
                        settle(&ctx, c, &result, now)
                    };
                    start_due(&shared, &tasks, &semaphore, &reconcile_cancel, &ctx, &mut entries, &mut cursor, now);
                }
            },
            _ = hangup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                match reload(config_path, &shared) {
                    Ok(added) => {
                        let ctx = shared.context();
                        entries.retain(|name, e| e.in_flight || ctx.config.client(name).is_some());
                        let now = clock::now();
                        for name in added {
                            entries.entry(name).or_insert(Entry { next_due: now, in_flight: false });
                        }
                        tracing::info!(clients = ctx.config.clients.len(), "configuration reloaded");
                        spawn_sign_in(shared.clone(), ctx, stop.clone());
                    }
                    Err(e) => tracing::error!("reload rejected, keeping the running configuration: {e}"),
                }
                notify(&[sd_notify::NotifyState::Ready]);
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = stop.cancelled() => break,
        }
    }

    tracing::info!("stopping");
    notify(&[sd_notify::NotifyState::Stopping]);
    stop.cancel();
    reconcile_cancel.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "reconciles still running at the shutdown deadline; their attempts are cleaned up on the next start"
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), http).await;
    Ok(())
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(states);
}

/// Starts a reconcile of `client`. Scheduled reconciles come with a permit already taken, so
/// that no task exists for a client that cannot run yet (a waiting reconcile future is large,
/// and ten thousand of them would be most of the daemon's memory); forced ones wait for one.
#[allow(clippy::too_many_arguments)]
fn start(
    shared: &Arc<Shared>,
    tasks: &TaskTracker,
    semaphore: &Arc<Semaphore>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    cancel: &CancellationToken,
    ctx: Context,
    client: String,
    opts: Options,
    preflight: Option<rotation::Preflight>,
) {
    shared
        .in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(client.clone());
    let semaphore = semaphore.clone();
    let cancel = cancel.clone();
    let tx = shared.commands.clone();
    tasks.spawn(async move {
        let permit = match permit {
            Some(p) => p,
            None => match semaphore.acquire_owned().await {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let Some(c) = ctx.config.client(&client).cloned() else {
            let _ = tx.send(Command::Done { client, result: Box::new(Err(Failure::Cancelled)), skipped: true }).await;
            return;
        };
        // A `rotate` from the command line may hold the client. A scheduled reconcile tries
        // again shortly; a forced one waits for the lock with its options, so it is never lost.
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
            Ok(None) if opts.force => {
                let why = "the client stayed locked by another process".to_string();
                tracing::warn!(client = %client, "forced rotation not run: {why}");
                if let Some(p) = preflight {
                    let _ = p.send(Err(why));
                }
                let _ = tx.send(Command::Done { client, result: Box::new(Err(Failure::Cancelled)), skipped: true }).await;
                return;
            }
            Ok(None) => {
                tracing::info!(client = %client, "another process holds this client; trying again shortly");
                let _ = tx.send(Command::Done { client, result: Box::new(Err(Failure::Cancelled)), skipped: true }).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Command::Done { client, result: Box::new(Err(Failure::Store(e))), skipped: false }).await;
                return;
            }
        };
        let result = rotation::reconcile_with(&ctx, &c, opts, &cancel, preflight).await;
        drop(lock);
        // Free the slot before reporting, so that the loop can hand it on at once.
        drop(permit);
        let _ = tx.send(Command::Done { client, result: Box::new(result), skipped: false }).await;
    });
}

/// Starts the clients that are due, as long as reconcile permits are free, going round the
/// clients from where the last scan stopped so that every client gets its turn.
#[allow(clippy::too_many_arguments)]
fn start_due(
    shared: &Arc<Shared>,
    tasks: &TaskTracker,
    semaphore: &Arc<Semaphore>,
    cancel: &CancellationToken,
    ctx: &Context,
    entries: &mut HashMap<String, Entry>,
    cursor: &mut usize,
    now: OffsetDateTime,
) {
    let clients = &ctx.config.clients;
    if clients.is_empty() {
        return;
    }
    for step in 0..clients.len() {
        let i = (*cursor + step) % clients.len();
        let c = &clients[i];
        let Some(e) = entries.get_mut(&c.name) else {
            continue;
        };
        if e.in_flight || now < e.next_due {
            continue;
        }
        let Ok(permit) = semaphore.clone().try_acquire_owned() else {
            *cursor = i;
            return;
        };
        e.in_flight = true;
        start(
            shared,
            tasks,
            semaphore,
            Some(permit),
            cancel,
            ctx.clone(),
            c.name.clone(),
            Options::default(),
            None,
        );
    }
}

/// Logs a reconcile's result, persists backoff, and returns the next due time.
fn settle(
    ctx: &Context,
    c: &crate::config::Client,
    result: &Result<Report, Failure>,
    now: OffsetDateTime,
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
            let _ = ctx.store.clear_backoff(&c.name);
            // Retire as soon as an overlap ends rather than at the next scheduled reconcile.
            let next = match report.retire_at {
                Some(at) => next.min(at + time::Duration::seconds(1)),
                None => next,
            };
            match &report.plan.blocked {
                Some(rotation::plan::Blocked::WaitingForSlot { until }) => {
                    next.min(*until + time::Duration::seconds(1))
                }
                _ => next,
            }
        }
        Err(Failure::Cancelled) => next,
        Err(e) => {
            let previous = ctx.store.backoff(&c.name).unwrap_or_default();
            let failures = previous.failures + 1;
            let expires = ctx
                .store
                .client_row(&c.name)
                .ok()
                .flatten()
                .and_then(|r| r.expires_at)
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
            let wait = schedule::backoff(failures, now, expires);
            let until = now + time::Duration::try_from(wait).unwrap_or_default();
            let kind = if e.is_transient() {
                "transient"
            } else {
                "permanent"
            };
            tracing::error!(client = %c.name, failures, retry_in_s = wait.as_secs(), kind, "reconcile failed: {e}");
            let _ = ctx.store.set_backoff(
                &c.name,
                &Backoff {
                    failures,
                    next_attempt_at: until.unix_timestamp(),
                    last_error: Some(e.to_string()),
                },
            );
            let _ =
                ctx.store
                    .record_history(&c.name, now, "failed", None, None, Some(&e.to_string()));
            until
        }
    }
}

/// Reloads the config; returns the names of new clients.
fn reload(path: &Path, shared: &Arc<Shared>) -> anyhow::Result<Vec<String>> {
    let config = Config::load(path)?;
    let old = shared.context();
    if config.state_dir != old.config.state_dir {
        anyhow::bail!(
            "{}: state.dir cannot change on reload (restart instead)",
            path.display()
        );
    }
    let ctx = build_context(config, old.store.clone(), shared.metrics.clone())?;
    let added: Vec<String> = ctx
        .config
        .clients
        .iter()
        .filter(|c| old.config.client(&c.name).is_none())
        .map(|c| c.name.clone())
        .collect();
    for c in &old.config.clients {
        if ctx.config.client(&c.name).is_none() {
            shared.metrics.remove_client(&c.name);
        }
    }
    for name in &added {
        shared.metrics.register_client(name);
    }
    *shared.context.write().unwrap_or_else(|p| p.into_inner()) = ctx;
    Ok(added)
}

/// Signs in until it works; `/readyz` turns green then.
fn spawn_sign_in(shared: Arc<Shared>, ctx: Context, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut delay = Duration::from_secs(1);
        loop {
            match ctx.azure.graph.sign_in().await {
                Ok(()) => {
                    shared.signed_in.store(true, Ordering::Relaxed);
                    shared.metrics.set_ready(true);
                    *shared
                        .sign_in_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = None;
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot sign in to Azure yet");
                    *shared
                        .sign_in_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(format!("cannot sign in: {e}"));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    });
}

pub fn default_config_path() -> PathBuf {
    PathBuf::from("/etc/secret-rotator/config.toml")
}

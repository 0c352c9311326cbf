//! `secret-rotator run`: the loop, signals, reload, readiness and sd_notify.
//!
//! One loop owns the [`Scheduler`]. Every second it pings the systemd watchdog (so a stalled
//! loop is noticed) and starts the reconciles that are due; admin requests, finished
//! reconciles and SIGHUP reach it as events. The HTTP side sees the daemon only through
//! [`crate::admin::Shared`].

mod scheduler;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::admin::{Request, Shared};
use crate::azure::{self, Skew};
use crate::clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::rotation::budget::Budget;
use crate::rotation::{AzureClients, Context};
use crate::store::Store;
pub use scheduler::Scheduler;

/// Builds everything a config needs to reconcile.
pub fn build_context(
    config: Config,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Context> {
    build_context_fenced(config, store, metrics, Arc::new(crate::ha::Fence::open()))
}

/// [`build_context`] whose writes pass `fence` (high availability).
pub fn build_context_fenced(
    config: Config,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    fence: Arc<crate::ha::Fence>,
) -> anyhow::Result<Context> {
    let http = azure::http_client(
        config.azure.ca_pem.as_deref(),
        config.azure.request_timeout,
        true,
    )?;
    let shared = azure::Shared {
        http,
        secret_http: azure::secret_http_client(
            config.azure.ca_pem.as_deref(),
            config.azure.request_timeout,
        )?,
        metrics: metrics.clone(),
        skew: Arc::new(Skew::default()),
        fence,
    };
    let azure = AzureClients::new(&config, &shared)?;
    let past = store
        .rotations_since(clock::now().unix_timestamp() - 3600)
        .unwrap_or_default();
    let budget = Arc::new(Budget::new(config.max_rotations_per_hour, past));
    Ok(Context {
        budget,
        config: Arc::new(config),
        azure: Arc::new(azure),
        store,
        metrics,
        shared,
    })
}

/// Runs the daemon until SIGTERM or SIGINT (or `stop`). `hangup`, when given, is a SIGHUP
/// handler installed before the config was read: a reload asked for during start-up is done
/// once the loop runs.
pub async fn run(
    config_path: &Path,
    config: Config,
    listen_override: Option<std::net::SocketAddr>,
    hangup: Option<tokio::signal::unix::Signal>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut hangup = match hangup {
        Some(h) => h,
        None => tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?,
    };
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::open(&config.state_dir)?);
    let listen = listen_override.unwrap_or(config.server.listen);
    let ctx = build_context(config, store, metrics)?;
    let (requests, mut admin) = mpsc::channel::<Request>(64);
    let shared = Arc::new(Shared::new(ctx.clone(), requests));

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding server.listen {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, clients = ctx.config.clients.len(), "secret-rotator started");
    let app = crate::server::router(shared.clone());
    let http = tokio::spawn(crate::server::serve(listener, app, stop.clone()));

    spawn_sign_in(shared.clone(), ctx.clone(), stop.clone());
    // Events go out in the background: a sink that is down never holds up a rotation.
    let events = tokio::spawn(crate::events::deliver::run(shared.clone(), stop.clone()));

    let (mut scheduler, mut done) = Scheduler::new(&ctx, clock::now());
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("reconciling"),
    ]);

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;

    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = clock::now();
                shared.beat(now.unix_timestamp());
                let ctx = shared.context();
                shared.metrics.set_budget(ctx.budget.max(), ctx.budget.used(now));
                notify(&[sd_notify::NotifyState::Watchdog]);
                scheduler.tick(&shared, now);
            }
            Some(request) = admin.recv() => match request {
                Request::Rotate { client, revoke_previous, reply } => {
                    let _ = reply.send(scheduler.rotate(&shared, client, revoke_previous));
                }
            },
            Some(finished) = done.recv() => scheduler.done(&shared, finished, clock::now()),
            _ = hangup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                match reload(config_path, &shared) {
                    Ok(added) => {
                        let ctx = shared.context();
                        scheduler.reloaded(&ctx, added, clock::now());
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
    scheduler.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), events).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), http).await;
    Ok(())
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(states);
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
    let mut ctx = build_context(config, old.store.clone(), shared.metrics.clone())?;
    // What the hour has used, and the slots in flight, carry over; only the limit may change.
    old.budget.set_max(ctx.config.max_rotations_per_hour);
    ctx.budget = old.budget.clone();
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
    shared.replace_context(ctx);
    Ok(added)
}

/// Signs in until it works; `/readyz` turns green then.
fn spawn_sign_in(shared: Arc<Shared>, ctx: Context, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut delay = Duration::from_secs(1);
        loop {
            match ctx.azure.graph.sign_in().await {
                Ok(()) => {
                    shared.signed_in(Ok(()));
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot sign in to Azure yet");
                    shared.signed_in(Err(format!("cannot sign in: {e}")));
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

//! `secret-rotator run`: the loop, signals, reload, readiness and sd_notify.
//!
//! One loop owns the [`Scheduler`]. Every second it pings the systemd watchdog (so a stalled
//! loop is noticed) and starts the reconciles that are due; admin requests, finished
//! reconciles and SIGHUP reach it as events. The HTTP side sees the daemon only through
//! [`crate::admin::Shared`].

mod concurrency;
mod scheduler;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::admin::{Request, Shared};
use crate::azure;
use crate::clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::rotation::budget::Budget;
use crate::rotation::{AzureClients, Context};
use crate::store::Store;
pub use scheduler::Scheduler;

/// glibc's malloc settings `run` starts with (`main.rs`): one arena instead of one per thread
/// (up to eight a core, each keeping what it once held), allocations of 64 KiB and more in
/// mappings of their own that go back to the system when freed (glibc otherwise raises that
/// limit to the largest block freed, up to 32 MiB, and keeps such blocks in the heap), and the
/// top of the heap trimmed once 64 KiB are free. Measured in docs/performance.md.
pub const MALLOC_TUNABLES: &str =
    "glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=65536:glibc.malloc.trim_threshold=65536";

/// Builds everything a config needs to reconcile.
pub fn build_context(
    config: Config,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Context> {
    build_context_fenced(
        config,
        store,
        metrics,
        Arc::new(crate::azure::fence::Fence::open()),
    )
}

/// [`build_context`] whose writes pass `fence` (high availability).
pub fn build_context_fenced(
    config: Config,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    fence: Arc<crate::azure::fence::Fence>,
) -> anyhow::Result<Context> {
    let shared = azure::AzureHttp::new(
        config.azure.ca_pem.as_deref(),
        config.azure.request_timeout,
        metrics.clone(),
        fence,
    )?;
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
    let fence = Arc::new(match &config.ha {
        Some(h) => crate::azure::fence::Fence::leased(
            h.lease_duration,
            config.azure.request_timeout,
            &h.replica,
        ),
        None => crate::azure::fence::Fence::open(),
    });
    let ctx = build_context_fenced(config, store, metrics, fence.clone())?;
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
    let election = match &ctx.config.ha {
        Some(h) => Some(start_election(&ctx, h, fence.clone())?),
        None => None,
    };
    let mut role = election.as_ref().map(|e| e.role.clone());
    tokio::spawn(crate::inventory::run(shared.clone(), stop.clone()));

    let (mut scheduler, mut done) = Scheduler::new(&ctx, clock::now());
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("reconciling"),
    ]);

    let (found_tx, mut found_rx) = mpsc::channel::<crate::discovery::Found>(4);
    spawn_discovery(shared.clone(), found_tx, stop.clone());
    let mut discovered = String::new();

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
                // The fence is the authority on leadership: it closes by itself when the
                // lease could have run out.
                let leading = fence.is_open();
                if leading != scheduler.leading() {
                    scheduler.set_leading(leading);
                    if !leading {
                        shared.metrics.forget_client_gauges();
                    }
                }
                scheduler.tick(&shared, now);
            }
            Some(request) = admin.recv() => match request {
                Request::Rotate { client, revoke_previous, reply } => {
                    let answer = if fence.is_open() {
                        scheduler.rotate(&shared, client, revoke_previous)
                    } else {
                        let leader = shared.role().and_then(|r| r.leader_name);
                        crate::admin::RotateAnswer::NotLeader { leader }
                    };
                    let _ = reply.send(answer);
                }
            },
            Ok(()) = changed(&mut role) => {
                if let Some(r) = &role {
                    shared.set_role(r.borrow().clone());
                }
            }
            Some(finished) = done.recv() => scheduler.done(&shared, finished, clock::now()),
            Some(found) = found_rx.recv() => {
                shared.metrics.set_discovery_refused(
                    &found.refused.iter().map(|r| r.app_id.clone()).collect::<Vec<_>>(),
                );
                if found.toml != discovered {
                    match reload(config_path, &shared, &found.toml) {
                        Ok(added) => {
                            discovered = found.toml;
                            let ctx = shared.context();
                            scheduler.reloaded(&ctx, added, clock::now());
                        }
                        Err(e) => tracing::error!("discovered clients not taken on: {e}"),
                    }
                }
            }
            _ = hangup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                match reload(config_path, &shared, &discovered) {
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
    match election {
        Some(election) => {
            // No write starts from now on; once those in flight are done the lease is
            // released, so that a standby takes over at once. A write still in flight keeps
            // it: the lease then runs out by itself, after the write could have landed. The
            // reconciles wind down meanwhile, so the whole stop stays within its 10 s.
            fence.close();
            scheduler.set_leading(false);
            let release = async {
                let done = fence.writes_done(Duration::from_secs(5)).await;
                election.stop(done, Duration::from_secs(3)).await;
            };
            tokio::join!(release, scheduler.shutdown());
        }
        None => scheduler.shutdown().await,
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), events).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), http).await;
    Ok(())
}

/// Resolves when the election's role changes; never without HA.
async fn changed(
    role: &mut Option<tokio::sync::watch::Receiver<crate::ha::Role>>,
) -> Result<(), ()> {
    match role {
        Some(r) => r.changed().await.map_err(|_| ()),
        None => std::future::pending().await,
    }
}

/// Starts electing a leader on the lease blob, authorized by the connection string's key or
/// the daemon's own credential (storage scope only).
fn start_election(
    ctx: &Context,
    settings: &crate::ha::Settings,
    fence: Arc<crate::azure::fence::Fence>,
) -> anyhow::Result<crate::ha::Election> {
    use azure::blob::{Auth, LeaseClient, STORAGE_SCOPE};
    use secrecy::ExposeSecret;
    let auth = match &settings.shared_key {
        Some((account, key)) => Auth::SharedKey {
            account: account.clone(),
            key: secrecy::SecretBox::new(Box::new(key.expose_secret().clone())),
        },
        None => Auth::Token(Arc::new(azure::identity::ScopeGuard {
            inner: azure::identity::credential(&ctx.config, &ctx.shared)?,
            allowed: STORAGE_SCOPE,
        })),
    };
    let client = LeaseClient::new(
        ctx.shared.clone(),
        auth,
        &settings.account_url,
        &settings.container,
        &settings.blob,
        &settings.replica,
    );
    Ok(crate::ha::Election::start(
        settings,
        client,
        fence,
        ctx.metrics.clone(),
    ))
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(states);
}

/// Reloads the config, with the clients discovery found; returns the names of new clients.
fn reload(path: &Path, shared: &Arc<Shared>, discovered: &str) -> anyhow::Result<Vec<Arc<str>>> {
    let config = Config::load_with(path, discovered)?;
    config.check_for_daemon()?;
    let old = shared.context();
    if config.state_dir != old.config.state_dir {
        anyhow::bail!(
            "{}: state.dir cannot change on reload (restart instead)",
            path.display()
        );
    }
    // The fence's window was computed from these: changing them under a running election
    // would change what it promises.
    let ha_of = |c: &Config| (format!("{:?}", c.ha), c.azure.request_timeout);
    if old.config.ha.is_some() && ha_of(&config) != ha_of(&old.config)
        || old.config.ha.is_none() && config.ha.is_some()
    {
        anyhow::bail!(
            "{}: [ha] and azure.request_timeout cannot change on reload under HA (restart instead)",
            path.display()
        );
    }
    let mut ctx = build_context_fenced(
        config,
        old.store.clone(),
        shared.metrics.clone(),
        old.shared.fence.clone(),
    )?;
    // What the hour has used, and the slots in flight, carry over; only the limit may change.
    old.budget.set_max(ctx.config.max_rotations_per_hour);
    ctx.budget = old.budget.clone();
    let added: Vec<Arc<str>> = ctx
        .config
        .clients
        .iter()
        .filter(|c| old.config.client(&c.name).is_none())
        .map(|c| c.name.clone())
        .collect();
    for c in &old.config.clients {
        if ctx.config.client(&c.name).is_none() {
            shared.metrics.remove_client(&c.name);
            if let crate::config::Origin::Discovered(tag) = &c.origin {
                tracing::warn!(client = %c.name, event = "discovery_left", "client {} left management: its application no longer carries the tag {tag} (or is no longer owned by the daemon); its credentials and vault secret are left as they are", c.name);
            }
        }
    }
    for name in &added {
        if let Some(c) = ctx.config.client(name)
            && let crate::config::Origin::Discovered(tag) = &c.origin
        {
            tracing::info!(client = %name, event = "discovery_enrolled", "client {name} enrolled: its application carries the tag {tag}");
        }
    }
    shared.metrics.register_clients(added.iter().cloned());
    shared.replace_context(ctx);
    Ok(added)
}

/// Runs a discovery pass every `[discovery] interval` (from the running config) and hands its
/// result to the loop; a failed pass changes nothing.
fn spawn_discovery(
    shared: Arc<Shared>,
    found: mpsc::Sender<crate::discovery::Found>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let ctx = shared.context();
            let wait = match &ctx.config.discovery {
                Some(d) => {
                    match crate::discovery::discover(&ctx).await {
                        Ok(f) => {
                            for r in &f.refused {
                                tracing::error!(app_id = %r.app_id, event = "discovery_refused", "application '{}' ({}) carries the discovery tag but is not enrolled: {}", r.app, r.app_id, r.reason);
                            }
                            if found.send(f).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "discovery pass failed; the clients stay as they are")
                        }
                    }
                    d.interval
                }
                None => Duration::from_secs(5),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
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

//! What the daemon's loop shares with its HTTP side: the state the endpoints read (the current
//! context, liveness, readiness, reconciles in flight) and the one request the admin API makes
//! (a forced rotation) with its answers.
//!
//! Dependencies run one way: `daemon` drives this state and `server` reads it; neither this
//! module nor `server` knows the loop.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use secrecy::SecretString;
use tokio::sync::{mpsc, oneshot};

use crate::clock;
use crate::metrics::Metrics;
use crate::rotation::Context;
use crate::status::{self, ClientStatus};

/// `/healthz` fails when the loop has not ticked for this long (seconds).
const STALL_LIMIT: i64 = 30;

/// A request of the admin API to the loop.
pub enum Request {
    /// Rotate `client` now (forced), and with `revoke_previous` remove the credential it
    /// replaces at once.
    Rotate {
        client: String,
        revoke_previous: bool,
        reply: oneshot::Sender<RotateAnswer>,
    },
}

pub enum RotateAnswer {
    /// Queued with its options: it runs as soon as the client's lock is free. `preflight` says,
    /// once the reconcile has observed and planned, whether it refused the request.
    Started {
        preflight: oneshot::Receiver<Result<(), String>>,
    },
    InFlight,
    /// No configured client has that name.
    NoSuchClient,
    /// This replica is an HA follower: the leader (named when known) rotates.
    NotLeader {
        leader: Option<String>,
    },
}

/// The daemon's state as the HTTP endpoints see it.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub requests: mpsc::Sender<Request>,
    context: RwLock<Context>,
    heartbeat: AtomicI64,
    /// The loop has ticked once: every client is scheduled.
    scheduling: AtomicBool,
    signed_in: AtomicBool,
    sign_in_error: Mutex<Option<String>>,
    in_flight: Mutex<HashSet<String>>,
    /// With HA, this replica's role.
    role: RwLock<Option<crate::ha::Role>>,
}

impl Shared {
    pub fn new(context: Context, requests: mpsc::Sender<Request>) -> Shared {
        Shared {
            metrics: context.metrics.clone(),
            requests,
            context: RwLock::new(context),
            heartbeat: AtomicI64::new(clock::now().unix_timestamp()),
            scheduling: AtomicBool::new(false),
            signed_in: AtomicBool::new(false),
            sign_in_error: Mutex::new(None),
            in_flight: Mutex::new(HashSet::new()),
            role: RwLock::new(None),
        }
    }

    /// With HA, this replica's role as the election last said.
    pub fn set_role(&self, role: crate::ha::Role) {
        *self.role.write().unwrap_or_else(|p| p.into_inner()) = Some(role);
    }

    /// `None` without HA.
    pub fn role(&self) -> Option<crate::ha::Role> {
        self.role.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn context(&self) -> Context {
        self.context
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A reload's new context.
    pub fn replace_context(&self, context: Context) {
        *self.context.write().unwrap_or_else(|p| p.into_inner()) = context;
    }

    /// The loop ticked at `now` (unix seconds).
    pub fn beat(&self, now: i64) {
        self.heartbeat.store(now, Ordering::Relaxed);
        self.scheduling.store(true, Ordering::Relaxed);
    }

    pub fn alive(&self) -> bool {
        clock::now().unix_timestamp() - self.heartbeat.load(Ordering::Relaxed) <= STALL_LIMIT
    }

    /// The outcome of the daemon's own sign-in: `Ok` makes it ready.
    pub fn signed_in(&self, outcome: Result<(), String>) {
        let ok = outcome.is_ok();
        *self.sign_in_error.lock().unwrap_or_else(|p| p.into_inner()) = outcome.err();
        if ok {
            self.signed_in.store(true, Ordering::Relaxed);
            self.metrics.set_ready(true);
        }
    }

    /// `None` when ready, else why not.
    pub fn readiness(&self) -> Option<String> {
        if !self.scheduling.load(Ordering::Relaxed) {
            return Some("starting the scheduler".into());
        }
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

    /// Marks a reconcile of `client` in flight (`true`) or finished.
    pub fn set_in_flight(&self, client: &str, in_flight: bool) {
        let mut set = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if in_flight {
            set.insert(client.to_string());
        } else {
            set.remove(client);
        }
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

//! High availability: one leader among replicas, elected by an Azure Blob Storage lease. The
//! election keeps the fence (`azure::fence`) that stops a replica that may have lost the lease
//! from writing to Azure: it opens the fence on each renewal and closes it on a step-down.
//! `docs/ha.md` has the whole argument.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::azure::Class;
use crate::azure::blob::{Acquired, LeaseClient};
use crate::azure::fence::Fence;
use crate::clock;
use crate::metrics::Metrics;

/// How often a follower tries to take the lease: a released lease (a leader stopping) is taken
/// within this, whatever `renew_every` is.
pub const FOLLOWER_POLL: Duration = Duration::from_secs(2);

/// The validated `[ha]` section with `kind = "blob_lease"`.
pub struct Settings {
    pub account_url: url::Url,
    pub container: String,
    pub blob: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
    pub replica: String,
    /// From `connection_string_file`: the account name and its key. `None`: the daemon's
    /// own credential.
    pub shared_key: Option<(String, secrecy::SecretBox<Vec<u8>>)>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("account_url", &self.account_url.as_str())
            .field("container", &self.container)
            .field("blob", &self.blob)
            .field("lease_duration", &self.lease_duration)
            .field("renew_every", &self.renew_every)
            .field("replica", &self.replica)
            .field("shared_key", &self.shared_key.as_ref().map(|(a, _)| a))
            .finish()
    }
}

/// This replica's role, as the HTTP side shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Role {
    pub leader: bool,
    /// Who leads, when known (this replica's name when it leads).
    pub leader_name: Option<String>,
}

/// The running election: its task, and how to stop it.
pub struct Election {
    pub role: watch::Receiver<Role>,
    task: tokio::task::JoinHandle<()>,
    release: CancellationToken,
}

impl Election {
    /// Starts electing: `fence` opens while this replica holds the lease.
    pub fn start(
        settings: &Settings,
        client: LeaseClient,
        fence: Arc<Fence>,
        metrics: Arc<Metrics>,
    ) -> Election {
        let (tx, role) = watch::channel(Role::default());
        let release = CancellationToken::new();
        metrics.ha_replica(&settings.replica);
        let task = tokio::spawn(elect(
            Elector {
                client,
                fence,
                metrics,
                lease_duration: settings.lease_duration,
                renew_every: settings.renew_every,
                replica: settings.replica.clone(),
                lease_id: uuid::Uuid::new_v4().to_string(),
                role: tx,
            },
            release.clone(),
        ));
        Election {
            role,
            task,
            release,
        }
    }

    /// Stops electing; a leader releases its lease when `release` (its writes in flight are
    /// done), so a standby takes over at once. The caller closed the fence first.
    pub async fn stop(self, release: bool, limit: Duration) {
        if !release {
            self.task.abort();
            tracing::warn!("a write is still in flight: the lease is kept until it runs out");
            return;
        }
        self.release.cancel();
        if tokio::time::timeout(limit, self.task).await.is_err() {
            tracing::warn!(
                "the lease was not released in time; a standby takes over when it expires"
            );
        }
    }
}

struct Elector {
    client: LeaseClient,
    fence: Arc<Fence>,
    metrics: Arc<Metrics>,
    lease_duration: Duration,
    renew_every: Duration,
    replica: String,
    lease_id: String,
    role: watch::Sender<Role>,
}

impl Elector {
    fn set_role(&self, leader: bool, leader_name: Option<String>) {
        let was = self.role.borrow().leader;
        if was != leader {
            self.metrics.ha_transition(leader);
            if leader {
                tracing::info!(replica = %self.replica, "this replica leads now");
            } else {
                tracing::warn!(replica = %self.replica, "this replica stepped down");
            }
        }
        self.role.send_replace(Role {
            leader,
            leader_name,
        });
    }

    fn step_down(&self, leader_name: Option<String>) {
        self.fence.close();
        self.set_role(false, leader_name);
    }

    /// One try to become the leader; the blob and container are made on the way if missing.
    async fn try_acquire(&self) {
        let sent = clock::monotonic();
        let mut result = self
            .client
            .acquire(&self.lease_id, self.lease_duration)
            .await;
        if matches!(&result, Err(e) if e.status == Some(404)) {
            if let Err(e) = self.client.ensure().await {
                tracing::warn!(error = %e, "cannot create the lease blob");
                return;
            }
            result = self
                .client
                .acquire(&self.lease_id, self.lease_duration)
                .await;
        }
        match result {
            Ok(Acquired::Yes) => {
                self.fence.renewed(sent);
                self.set_role(true, Some(self.replica.clone()));
                if let Err(e) = self.client.name_leader(&self.lease_id, &self.replica).await {
                    tracing::warn!(error = %e, "cannot name this replica in the lease blob's metadata");
                }
            }
            Ok(Acquired::Held) => {
                let name = self.client.holder().await.ok().and_then(|h| h.replica);
                self.set_role(false, name);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the lease");
                self.set_role(false, None);
            }
        }
    }

    /// One renewal; on a refusal the lease is lost at once, on any other failure the fence
    /// closes by itself when the window passes.
    async fn renew(&self) -> bool {
        let sent = clock::monotonic();
        match self.client.renew(&self.lease_id).await {
            Ok(()) => {
                self.fence.renewed(sent);
                true
            }
            Err(e) => {
                self.metrics.ha_renewal_failed();
                if e.class == Class::Permanent {
                    tracing::warn!(error = %e, "the lease was lost");
                    self.step_down(None);
                } else {
                    tracing::warn!(error = %e, "cannot renew the lease");
                    if !self.fence.is_open() {
                        self.step_down(None);
                    }
                }
                false
            }
        }
    }
}

async fn elect(e: Elector, release: CancellationToken) {
    if let Err(err) = e.client.ensure().await {
        tracing::warn!(error = %err, "cannot create the lease blob yet");
    }
    // A follower tries at once; a leader renews on time, and after a failed renewal again a
    // second later, for as long as the window lasts.
    let mut next = clock::monotonic();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(next.saturating_duration_since(clock::monotonic())) => {}
            _ = release.cancelled() => break,
        }
        let sent = clock::monotonic();
        if e.role.borrow().leader {
            if e.renew().await {
                next = sent + e.renew_every;
            } else {
                next = clock::monotonic() + Duration::from_secs(1);
            }
        } else {
            e.try_acquire().await;
            next = if e.role.borrow().leader {
                sent + e.renew_every
            } else {
                clock::monotonic() + FOLLOWER_POLL.min(e.renew_every)
            };
        }
    }
    // Stopping: the daemon closed the fence and waited for the writes in flight.
    if e.role.borrow().leader {
        match e.client.release(&e.lease_id).await {
            Ok(()) => tracing::info!("lease released"),
            Err(err) => {
                tracing::warn!(error = %err, "cannot release the lease; it expires by itself")
            }
        }
        e.step_down(None);
    }
}

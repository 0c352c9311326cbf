//! secret-rotator: rotates Entra ID client secrets and publishes them to Azure Key Vault.
//!
//! The protocol, its invariants and the external interface are in docs/design/.
//!
//! Layout, in the order a rotation flows:
//! - [`config`]: the TOML configuration (docs/design/contract.md), validated into typed policy;
//! - [`schedule`]: when each client is reconciled (cron, jitter, backoff);
//! - [`rotation`]: one client's reconcile: [`rotation::observe`], the pure decision
//!   [`rotation::plan`], and execution;
//! - [`drift`]: whether the published secret changed under the daemon, and what repair does;
//! - [`azure`]: the only code that speaks HTTP to Entra, Graph and Key Vault;
//! - [`ha`]: one leader among replicas (a Blob Storage lease) and the fence on its writes;
//! - [`inventory`]: every credential of the tenant, managed or not, with its expiry;
//! - [`files`]: owner-only state, no symlinks followed, secret-file modes;
//! - [`store`]: intents, backoff and history in SQLite (not authoritative);
//! - [`metrics`], [`server`], [`status`], [`status_page`]: what the daemon reports;
//! - [`assets`]: man pages and completions from the command-line definition;
//! - [`daemon`], [`cli`], [`demo`]: the commands;
//! - [`clock`]: the only reader of the wall clock.

pub mod admin;
pub mod assets;
pub mod azure;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
#[cfg(feature = "emulator")]
pub mod demo;
pub mod discovery;
pub mod drift;
pub mod events;
pub mod files;
pub mod ha;
pub mod inventory;
pub mod metrics;
pub mod register;
pub mod rotation;
pub mod schedule;
pub mod server;
pub mod status;
pub mod status_page;
pub mod store;
pub mod telemetry;

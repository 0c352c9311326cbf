//! Integration tests: the real binary against the bundled emulator over HTTPS.

// Tests stand outside the daemon: they read the wall clock to build and check Azure's state,
// which clippy.toml forbids to the daemon's own code (only src/clock.rs may).
#![allow(clippy::disallowed_methods)]

mod config;
mod continuity;
mod daemon;
mod deploy;
mod discovery;
mod drift;
mod events;
mod evidence;
mod faults;
mod ha;
mod harness;
mod http;
mod identity;
mod invariants;
mod inventory;
mod kills;
mod longrun;
mod matrix;
mod memory;
mod moves;
mod onboarding;
mod package;
mod retire;
mod review;
mod review10;
mod review2;
mod review3;
mod review4;
mod review5;
mod review6;
mod review7;
mod review8;
mod review9;
mod rotation;
mod sdk;
mod security;
mod status_page;
mod transport;
mod windows;
mod workstation;
mod world;
mod world_regressions;

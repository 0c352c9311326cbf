//! Integration tests: the real binary against the bundled emulator over HTTPS.

mod config;
mod daemon;
mod deploy;
mod evidence;
mod faults;
mod harness;
mod http;
mod identity;
mod invariants;
mod kills;
mod longrun;
mod matrix;
mod rotation;
mod sdk;
mod security;

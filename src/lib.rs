pub mod clock;
pub mod config;
pub mod azure;
pub mod metrics;
pub mod store;
pub mod rotation;

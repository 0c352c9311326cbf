//! Structured logs on stderr: text or JSON, filtered by the config's level unless `RUST_LOG`
//! is set.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat, level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")))
        // The SDKs log request URLs at debug; our own events say what matters.
        .add_directive("azure_core=warn".parse().expect("static directive"))
        .add_directive("azure_identity=warn".parse().expect("static directive"))
        .add_directive(
            "typespec_client_core=warn"
                .parse()
                .expect("static directive"),
        );
    // Colours only for a person at a terminal, never into the journal or a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

//! The `secret-rotator` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use secret_rotator::cli;
use secret_rotator::config::Config;
#[cfg(feature = "emulator")]
use secret_rotator::demo;

#[derive(Parser)]
#[command(
    name = "secret-rotator",
    version,
    about = "Rotates Entra ID client secrets and publishes them to Azure Key Vault"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: schedule, rotate, serve metrics and health.
    Run {
        #[arg(long, default_value = "/etc/secret-rotator/config.toml")]
        config: PathBuf,
    },
    /// Validate the config (and with --online, sign in and read every client's app and secret).
    Check {
        #[arg(long, default_value = "/etc/secret-rotator/config.toml")]
        config: PathBuf,
        #[arg(long)]
        online: bool,
    },
    /// Show what a reconcile would do now for each client, and why. Changes nothing.
    Plan {
        #[arg(long, default_value = "/etc/secret-rotator/config.toml")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Reconcile one client now (rotate if due, retire, remove orphans).
    Rotate {
        #[arg(long, default_value = "/etc/secret-rotator/config.toml")]
        config: PathBuf,
        client: String,
        /// Rotate even when not due.
        #[arg(long)]
        force: bool,
        /// With --force: remove the previously published credential at once (a leaked secret).
        #[arg(long, requires = "force")]
        revoke_previous: bool,
    },
    /// Per client: published key id, expiry, next rotation, last result.
    Status {
        #[arg(long, default_value = "/etc/secret-rotator/config.toml")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Run the bundled Azure emulator.
    #[cfg(feature = "emulator")]
    Emulator {
        #[arg(long, default_value = "127.0.0.1:8700")]
        listen: std::net::SocketAddr,
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// A JSON seed (tenant, applications, vaults, settings) to load at start.
        #[arg(long)]
        seed: Option<PathBuf>,
        /// Serve with certificates issued by this CA (PEM) instead of a generated one.
        #[arg(long, requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// The private key (PEM) of --ca-cert.
        #[arg(long, requires = "ca_cert")]
        ca_key: Option<PathBuf>,
    },
    /// Run the emulator and the daemon together on a demo config.
    #[cfg(feature = "emulator")]
    Demo {
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: std::net::SocketAddr,
    },
}

/// Why a command failed: a bad configuration exits with 78 (EX_CONFIG, which the systemd unit
/// does not restart on), anything else with 1.
enum Fail {
    Config(String),
    Other(String),
}

impl From<String> for Fail {
    fn from(message: String) -> Fail {
        Fail::Other(message)
    }
}

/// sysexits.h EX_CONFIG.
const EX_CONFIG: u8 = 78;

fn load(path: &std::path::Path) -> Result<Config, Fail> {
    Config::load(path).map_err(|e| Fail::Config(e.to_string()))
}

/// Logs what the config allows but advises against; call once the log is set up.
fn log_warnings(cfg: &Config) {
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("secret-rotator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<bool, Fail> = runtime.block_on(async move {
        match args.command {
            Command::Run { config } => {
                let cfg = load(&config)?;
                secret_rotator::telemetry::init(cfg.log_format, &cfg.log_level);
                log_warnings(&cfg);
                secret_rotator::daemon::run(
                    &config,
                    cfg,
                    None,
                    tokio_util::sync::CancellationToken::new(),
                )
                .await
                .map_err(|e| Fail::Other(format!("{e:#}")))?;
                Ok(true)
            }
            Command::Check { config, online } => {
                let cfg = load(&config)?;
                secret_rotator::telemetry::init(cfg.log_format, "warn");
                log_warnings(&cfg);
                if online {
                    cli::check_online(cfg)
                        .await
                        .map_err(|e| Fail::Other(format!("{e:#}")))
                } else {
                    println!("{}: OK ({} clients)", config.display(), cfg.clients.len());
                    Ok(true)
                }
            }
            Command::Plan { config, output } => {
                let cfg = load(&config)?;
                secret_rotator::telemetry::init(cfg.log_format, "warn");
                log_warnings(&cfg);
                cli::plan(cfg, output == Output::Json)
                    .await
                    .map_err(|e| Fail::Other(format!("{e:#}")))
            }
            Command::Rotate {
                config,
                client,
                force,
                revoke_previous,
            } => {
                let cfg = load(&config)?;
                secret_rotator::telemetry::init(cfg.log_format, &cfg.log_level);
                log_warnings(&cfg);
                cli::rotate(cfg, &client, force, revoke_previous)
                    .await
                    .map_err(|e| Fail::Other(format!("{e:#}")))
            }
            Command::Status { config, output } => {
                let cfg = load(&config)?;
                secret_rotator::telemetry::init(cfg.log_format, "warn");
                log_warnings(&cfg);
                cli::status(&cfg, output == Output::Json).map_err(|e| Fail::Other(format!("{e:#}")))
            }
            #[cfg(feature = "emulator")]
            Command::Emulator {
                listen,
                state_dir,
                seed,
                ca_cert,
                ca_key,
            } => {
                secret_rotator::telemetry::init(secret_rotator::config::LogFormat::Text, "warn");
                cli::emulator(listen, state_dir, seed, ca_cert.zip(ca_key))
                    .await
                    .map_err(|e| Fail::Other(format!("{e:#}")))?;
                Ok(true)
            }
            #[cfg(feature = "emulator")]
            Command::Demo { listen } => {
                secret_rotator::telemetry::init(secret_rotator::config::LogFormat::Text, "info");
                demo::run(listen)
                    .await
                    .map_err(|e| Fail::Other(format!("{e:#}")))?;
                Ok(true)
            }
        }
    });
    let (message, code) = match result {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) => return ExitCode::FAILURE,
        Err(Fail::Config(m)) => (m, ExitCode::from(EX_CONFIG)),
        Err(Fail::Other(m)) => (m, ExitCode::FAILURE),
    };
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    // Errors carry text from Azure, vault tags and files: no control character gets to the
    // terminal as such.
    eprintln!(
        "secret-rotator: {}",
        secret_rotator::status::printable(&line)
    );
    code
}

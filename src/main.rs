//! The `secret-rotator` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use secret_rotator::cli;
use secret_rotator::config::Config;
#[cfg(feature = "emulator")]
use secret_rotator::demo;

/// `--version`: the release, the commit it was built from and the build date (`build.rs`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SECRET_ROTATOR_GIT_COMMIT"),
    ", built ",
    env!("SECRET_ROTATOR_BUILD_DATE"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "secret-rotator",
    version = VERSION,
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

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum InventoryFormat {
    Table,
    Json,
    Csv,
}

fn duration_arg(text: &str) -> Result<std::time::Duration, String> {
    secret_rotator::clock::parse_duration(text)
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
    /// Create a client application from nothing: app, service principal, first secret in Key
    /// Vault (never printed), optionally its role; crash-safe and idempotent.
    Register {
        #[arg(long, default_value = "/etc/secret-rotator/config.toml")]
        config: PathBuf,
        /// The application's display name and the client's name.
        name: String,
        /// The Key Vault the secret is published to.
        #[arg(long)]
        vault: Option<String>,
        /// The vault secret's name (default: NAME-client-secret).
        #[arg(long)]
        secret_name: Option<String>,
        /// The API the secret is verified against: dicom, fhir or a resource URI.
        #[arg(long)]
        api: Option<String>,
        /// A built-in Azure role to assign the new service principal (with --scope).
        #[arg(long, requires = "scope")]
        assign_role: Option<String>,
        /// The ARM resource id the role is assigned at.
        #[arg(long, requires = "assign_role")]
        scope: Option<String>,
        /// Write the client as DIR/NAME.toml (for [daemon] clients_dir) instead of printing it.
        #[arg(long, value_name = "DIR")]
        write_client: Option<PathBuf>,
    },
    /// Per client: published key id, expiry, next rotation, last result.
    Status {
        #[arg(long, default_value = "/etc/secret-rotator/config.toml")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Send one test event (`com.secret-rotator.test`) to every event sink, or to the one named,
    /// now and without the outbox, to check a consumer's endpoint and signature verification.
    SendTestEvent {
        #[arg(long, default_value = "/etc/secret-rotator/config.toml")]
        config: PathBuf,
        /// Only this sink (its `name`).
        #[arg(long)]
        sink: Option<String>,
    },
    /// Every password and certificate credential of the tenant's applications, soonest expiry
    /// first, and whether secret-rotator manages it (needs Application.Read.All).
    Inventory {
        #[arg(long, default_value = "/etc/secret-rotator/config.toml")]
        config: PathBuf,
        /// Only credentials expiring within this (expired ones included), e.g. 30d.
        #[arg(long, value_parser = duration_arg)]
        expiring_within: Option<std::time::Duration>,
        #[arg(long, value_enum, default_value_t = InventoryFormat::Table)]
        output: InventoryFormat,
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

/// Every allocation is zeroed when freed: the HTTP, TLS and JSON layers copy secrets into
/// buffers of their own, and freed memory would otherwise keep those copies until reused.
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<std::alloc::System> =
    zeroizing_alloc::ZeroAlloc(std::alloc::System);

/// How a command ended (a command's code returns `Result<bool, Outcome>`: `false` when it
/// reported problems itself). [`exit_status`] is the one place that turns it into the process's
/// exit status (docs/design/contract.md).
enum Outcome {
    /// It did what was asked: 0.
    Done,
    /// It ran and printed what is wrong (`check --online`, `plan`, `rotate`, `status`, ...): 1.
    Reported,
    /// It was called wrongly: 2, as clap exits on a usage error.
    Usage(String),
    /// The configuration is bad: 78 (EX_CONFIG, which the systemd unit does not restart on).
    Config(String),
    /// Anything else stopped it (Azure, the state store, the files it reads): 1. A state store
    /// that is not safe to use or is from a newer release needs the operator too, but has
    /// always exited 1, and scripts and the unit rely on the statuses staying as they are.
    Failed(String),
}

fn exit_status(outcome: Outcome) -> ExitCode {
    let (message, code) = match outcome {
        Outcome::Done => return ExitCode::SUCCESS,
        Outcome::Reported => return ExitCode::FAILURE,
        Outcome::Usage(m) => (m, ExitCode::from(2)),
        Outcome::Config(m) => (m, ExitCode::from(EX_CONFIG)),
        Outcome::Failed(m) => (m, ExitCode::FAILURE),
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

impl From<String> for Outcome {
    fn from(message: String) -> Outcome {
        Outcome::Failed(message)
    }
}

/// sysexits.h EX_CONFIG.
const EX_CONFIG: u8 = 78;

fn load(path: &std::path::Path) -> Result<Config, Outcome> {
    Config::load(path).map_err(|e| Outcome::Config(e.to_string()))
}

/// Logs what the config allows but advises against; call once the log is set up.
fn log_warnings(cfg: &Config) {
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
}

/// Set to `1`, leaves the process dumpable. For the test that reads the daemon's memory to
/// check what it keeps, and for nothing else: see docs/decisions.md, "Secrets in memory".
const TEST_DUMPABLE: &str = "SECRET_ROTATOR_TEST_DUMPABLE";

/// Makes the process non-dumpable: no core dump (a watchdog SIGABRT would otherwise write one
/// with the daemon's credential and any secret in flight), and no other process of the same
/// user may attach to it or read `/proc/PID/mem`. Every command holds a credential or reads
/// secret files, so every command does this first.
fn forbid_dumps() -> Result<(), String> {
    if std::env::var_os(TEST_DUMPABLE).is_some_and(|v| v == "1") {
        eprintln!(
            "secret-rotator: {TEST_DUMPABLE}=1: this process stays dumpable (for tests only)"
        );
        return Ok(());
    }
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| format!("cannot turn core dumps off (PR_SET_DUMPABLE): {e}"))
}

/// The daemon runs with glibc's malloc told to keep one arena, to serve allocations of 64 KiB
/// and more from their own mappings and to give freed memory at the top of the heap back at
/// once (docs/decisions.md, "Memory"). glibc reads these only when a process starts, and
/// `mallopt` is not callable without `unsafe`, so `run` starts itself again with them set,
/// unless the environment already sets `GLIBC_TUNABLES` (the operator's choice wins). On
/// anything but glibc this does nothing.
fn tune_malloc(argv: &[std::ffi::OsString]) {
    if !cfg!(all(target_os = "linux", target_env = "gnu"))
        || argv.get(1).is_none_or(|a| a != "run")
        || std::env::var_os("GLIBC_TUNABLES").is_some()
    {
        return;
    }
    use std::os::unix::process::CommandExt as _;
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(&argv[0])
        .args(&argv[1..])
        .env("GLIBC_TUNABLES", secret_rotator::daemon::MALLOC_TUNABLES)
        .exec();
    eprintln!("secret-rotator: keeping glibc's default malloc settings: {error}");
}

fn main() -> ExitCode {
    tune_malloc(&std::env::args_os().collect::<Vec<_>>());
    if let Err(message) = forbid_dumps() {
        return exit_status(Outcome::Failed(message));
    }
    // `generate-assets DIR` writes the man pages and completions for packagers. It stays out of
    // the command definition, or the completions it generates would offer it.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "generate-assets") {
        use clap::CommandFactory as _;
        let [_, _, out] = &argv[..] else {
            return exit_status(Outcome::Usage(
                "usage: secret-rotator generate-assets DIR".into(),
            ));
        };
        let date = env!("SECRET_ROTATOR_BUILD_DATE");
        return exit_status(
            match secret_rotator::assets::write(Args::command(), out.as_ref(), date) {
                Ok(()) => Outcome::Done,
                Err(e) => Outcome::Failed(format!("{e:#}")),
            },
        );
    }
    let args = Args::parse_from(argv);
    let daemon = matches!(args.command, Command::Run { .. });
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // The daemon runs on one worker thread unless TOKIO_WORKER_THREADS says otherwise (which
    // tokio reads when no count is set here). Its work is small pieces between network waits,
    // far below a core even at 10,000 clients: a second worker did not make it faster, it made
    // the two hand tasks, wake-ups and the store's mutex to each other (four times the futex
    // calls and twice the context switches of one). docs/decisions.md, "CPU per rotation".
    if daemon && std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            return exit_status(Outcome::Failed(format!("cannot start the runtime: {e}")));
        }
    };
    // SIGHUP's default action ends the process: a reload asked for while the daemon starts (a
    // config-management tool, a reload storm) would kill it. The handler goes in before the
    // config is read, and the loop answers what it caught then with a reload.
    let early_hangup = daemon
        .then(|| {
            let _guard = runtime.enter();
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
        })
        .flatten();
    let result: Result<bool, Outcome> = runtime.block_on(async move {
        match args.command {
            Command::Run { config } => {
                let cfg = load(&config)?;
                cfg.check_for_daemon()
                    .map_err(|e| Outcome::Config(e.to_string()))?;
                secret_rotator::telemetry::init(cfg.log_format, &cfg.log_level);
                log_warnings(&cfg);
                // A task, not `block_on`'s own future: the scheduler's loop then runs on the
                // worker with the reconciles it hands out and hears from, instead of on this
                // thread, which each of them had to wake.
                let daemon = tokio::spawn(async move {
                    secret_rotator::daemon::run(
                        &config,
                        cfg,
                        None,
                        early_hangup,
                        tokio_util::sync::CancellationToken::new(),
                    )
                    .await
                });
                match daemon.await {
                    Ok(result) => result.map_err(|e| Outcome::Failed(format!("{e:#}")))?,
                    Err(e) => return Err(Outcome::Failed(format!("the daemon stopped: {e}"))),
                }
                Ok(true)
            }
            Command::Check { config, online } => {
                let cfg = load(&config)?;
                secret_rotator::telemetry::init(cfg.log_format, "warn");
                log_warnings(&cfg);
                if online {
                    cli::check_online(cfg)
                        .await
                        .map_err(|e| Outcome::Failed(format!("{e:#}")))
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
                    .map_err(|e| Outcome::Failed(format!("{e:#}")))
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
                    .map_err(|e| Outcome::Failed(format!("{e:#}")))
            }
            Command::SendTestEvent { config, sink } => {
                let cfg = load(&config)?;
                secret_rotator::telemetry::init(cfg.log_format, "warn");
                log_warnings(&cfg);
                cli::send_test_event(&cfg, sink.as_deref())
                    .await
                    .map_err(|e| Outcome::Failed(format!("{e:#}")))
            }
            Command::Register {
                config,
                name,
                vault,
                secret_name,
                api,
                assign_role,
                scope,
                write_client,
            } => {
                let cfg = load(&config)?;
                secret_rotator::telemetry::init(cfg.log_format, "warn");
                log_warnings(&cfg);
                secret_rotator::register::register(
                    cfg,
                    secret_rotator::register::Request {
                        name,
                        vault,
                        secret_name,
                        api,
                        assign_role: assign_role.zip(scope),
                        write_client,
                    },
                )
                .await
                .map_err(|e| Outcome::Failed(format!("{e:#}")))
            }
            Command::Status { config, output } => {
                let cfg = load(&config)?;
                secret_rotator::telemetry::init(cfg.log_format, "warn");
                log_warnings(&cfg);
                cli::status(&cfg, output == Output::Json)
                    .map_err(|e| Outcome::Failed(format!("{e:#}")))
            }
            Command::Inventory {
                config,
                expiring_within,
                output,
            } => {
                let cfg = load(&config)?;
                secret_rotator::telemetry::init(cfg.log_format, "warn");
                log_warnings(&cfg);
                let output = match output {
                    InventoryFormat::Table => cli::InventoryOutput::Table,
                    InventoryFormat::Json => cli::InventoryOutput::Json,
                    InventoryFormat::Csv => cli::InventoryOutput::Csv,
                };
                cli::inventory(cfg, expiring_within, output)
                    .await
                    .map_err(|e| Outcome::Failed(format!("{e:#}")))
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
                    .map_err(|e| Outcome::Failed(format!("{e:#}")))?;
                Ok(true)
            }
            #[cfg(feature = "emulator")]
            Command::Demo { listen } => {
                secret_rotator::telemetry::init(secret_rotator::config::LogFormat::Text, "info");
                demo::run(listen)
                    .await
                    .map_err(|e| Outcome::Failed(format!("{e:#}")))?;
                Ok(true)
            }
        }
    });
    exit_status(match result {
        Ok(true) => Outcome::Done,
        Ok(false) => Outcome::Reported,
        Err(stopped) => stopped,
    })
}

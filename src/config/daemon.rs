//! `[daemon]`, `[log]` and `[state]`: the process itself.

use std::path::PathBuf;

use serde::Deserialize;

use super::values::Ctx;
use super::{ConfigError, S};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    instance: Option<S<String>>,
    max_concurrent: Option<S<toml::Value>>,
    max_rotations_per_hour: Option<S<i64>>,
    pub(super) clients_dir: Option<S<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    format: Option<S<String>>,
    level: Option<S<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    dir: Option<S<String>>,
}

pub(super) struct Daemon {
    pub(super) instance: String,
    /// `None`: `"auto"`, sized from the write quota (`crate::daemon::concurrency`).
    pub(super) max_concurrent: Option<usize>,
    pub(super) max_rotations_per_hour: u32,
    pub(super) clients_dir: Option<PathBuf>,
}

/// Validates `[daemon]`.
pub(super) fn daemon(ctx: &Ctx<'_>, raw: &RawDaemon) -> Result<Daemon, ConfigError> {
    let instance = match &raw.instance {
        Some(v) => {
            let s = v.get_ref();
            if !(1..=32).contains(&s.len())
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(ctx.err(
                    v,
                    "daemon.instance",
                    format!("'{s}' must be 1-32 characters of a-z, 0-9 and -"),
                ));
            }
            s.clone()
        }
        None => "default".to_string(),
    };
    let max_concurrent = match raw.max_concurrent.as_ref().map(|v| (v, v.get_ref())) {
        None => None,
        Some((_, toml::Value::String(s))) if s == "auto" => None,
        Some((_, toml::Value::Integer(n))) if (1..=4096).contains(n) => Some(*n as usize),
        Some((v, toml::Value::Integer(n))) => {
            return Err(ctx.err(
                v,
                "daemon.max_concurrent",
                format!("{n} is out of range: 1 to 4096"),
            ));
        }
        Some((v, other)) => {
            return Err(ctx.err(
                v,
                "daemon.max_concurrent",
                format!("{other} is neither \"auto\" nor a number from 1 to 4096"),
            ));
        }
    };
    let max_rotations_per_hour = match &raw.max_rotations_per_hour {
        Some(v) if (0..=100_000).contains(v.get_ref()) => *v.get_ref() as u32,
        Some(v) => {
            return Err(ctx.err(
                v,
                "daemon.max_rotations_per_hour",
                format!("{} is out of range: 0 (no budget) to 100000", v.get_ref()),
            ));
        }
        None => 0,
    };
    let clients_dir = match &raw.clients_dir {
        Some(v) if v.get_ref().trim().is_empty() => None,
        Some(v) => {
            let dir = ctx.path(v.get_ref());
            if !dir.is_dir() {
                return Err(ctx.err(
                    v,
                    "daemon.clients_dir",
                    format!("{} is not a directory", dir.display()),
                ));
            }
            Some(dir)
        }
        None => None,
    };
    Ok(Daemon {
        instance,
        max_concurrent,
        max_rotations_per_hour,
        clients_dir,
    })
}

/// Validates `[log]`: its format and its filter.
pub(super) fn log(ctx: &Ctx<'_>, raw: &RawLog) -> Result<(LogFormat, String), ConfigError> {
    let log_format = match raw.format.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "text")) => LogFormat::Text,
        Some((_, "json")) => LogFormat::Json,
        Some((v, other)) => {
            return Err(ctx.err(
                v,
                "log.format",
                format!("'{other}' is not one of text, json"),
            ));
        }
    };
    let log_level = match &raw.level {
        Some(v) => {
            tracing_subscriber::EnvFilter::try_new(v.get_ref()).map_err(|e| {
                ctx.err(
                    v,
                    "log.level",
                    format!("'{}' is not a log filter: {e}", v.get_ref()),
                )
            })?;
            v.get_ref().clone()
        }
        None => "info".to_string(),
    };
    Ok((log_format, log_level))
}

/// Validates `[state]`: the store's directory, which must be the daemon's alone.
pub(super) fn state(ctx: &Ctx<'_>, raw: &RawState) -> Result<PathBuf, ConfigError> {
    let state_dir = match &raw.dir {
        Some(v) => ctx.path(v.get_ref()),
        None => PathBuf::from("/var/lib/secret-rotator"),
    };
    // A missing state dir is created owner-only; an existing one must already be. Anyone
    // else who may write there could replace the store or plant links for its files.
    if std::fs::symlink_metadata(&state_dir).is_ok()
        && let Some(why) = crate::files::unsafe_dir(&state_dir)
    {
        return Err(match &raw.dir {
            Some(v) => ctx.err(v, "state.dir", why),
            None => ctx.err_nowhere("state.dir", why),
        });
    }
    Ok(state_dir)
}

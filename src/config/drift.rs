//! The drift keys, in `[defaults]` and on each client: how often the published value signs in
//! once to check for drift (`drift_interval`), and what drift a rotation repairs does
//! (`repair`). What they mean is in `src/drift.rs`.

use std::time::Duration;

use super::values::Ctx;
use super::{ConfigError, S};
use crate::clock::parse_duration;
use crate::drift::Repair;

/// A client's `drift_interval` and `repair`: its own over `[defaults]` over `1h` and `rotate`.
/// `drift_interval = "0s"` turns the sign-in off (the checks that need none stay).
pub(super) fn drift(
    ctx: &Ctx<'_>,
    own: (&Option<S<String>>, &Option<S<String>>),
    defaults: (&Option<S<String>>, &Option<S<String>>),
    prefix: &str,
) -> Result<(Duration, Repair), ConfigError> {
    let pick = |a: &Option<S<String>>, b: &Option<S<String>>, name: &str| match (a, b) {
        (Some(v), _) => Some((v.clone(), format!("{prefix}.{name}"))),
        (None, Some(v)) => Some((v.clone(), format!("defaults.{name}"))),
        (None, None) => None,
    };
    let interval = match pick(own.0, defaults.0, "drift_interval") {
        Some((v, key)) => parse_duration(v.get_ref()).map_err(|e| ctx.err(&v, &key, e))?,
        None => Duration::from_secs(3600),
    };
    let repair = match pick(own.1, defaults.1, "repair") {
        Some((v, key)) => Repair::parse(v.get_ref()).ok_or_else(|| {
            ctx.err(
                &v,
                &key,
                format!("'{}' is not one of rotate, alert", v.get_ref()),
            )
        })?,
        None => Repair::Rotate,
    };
    Ok((interval, repair))
}

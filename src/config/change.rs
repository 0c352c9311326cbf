//! `windows` and `freeze`, in `[defaults]` and on each client: when scheduled renewals may run,
//! in the client's `timezone` (`src/rotation/window.rs` decides).

use chrono_tz::Tz;

use super::values::Ctx;
use super::{ConfigError, S};
use crate::rotation::window::{ChangePolicy, Freeze, Window};

/// `windows` and `freeze` as one table (a client or `[defaults]`) has them.
type Lists<'a> = (&'a Option<Vec<S<String>>>, &'a Option<Vec<S<String>>>);

/// The client's own list over `[defaults]`' (a client's `windows = []` lifts the defaults').
pub(super) fn change(
    ctx: &Ctx<'_>,
    own: Lists<'_>,
    defaults: Lists<'_>,
    prefix: &str,
    timezone: Tz,
) -> Result<ChangePolicy, ConfigError> {
    let pick = |a: &Option<Vec<S<String>>>, b: &Option<Vec<S<String>>>, name: &str| match (a, b) {
        (Some(v), _) => (v.clone(), format!("{prefix}.{name}")),
        (None, Some(v)) => (v.clone(), format!("defaults.{name}")),
        (None, None) => (Vec::new(), String::new()),
    };
    let (windows, windows_key) = pick(own.0, defaults.0, "windows");
    let (freeze, freeze_key) = pick(own.1, defaults.1, "freeze");
    Ok(ChangePolicy {
        timezone,
        windows: windows
            .iter()
            .map(|v| Window::parse(v.get_ref()).map_err(|e| ctx.err(v, &windows_key, e)))
            .collect::<Result<_, _>>()?,
        freeze: freeze
            .iter()
            .map(|v| Freeze::parse(v.get_ref()).map_err(|e| ctx.err(v, &freeze_key, e)))
            .collect::<Result<_, _>>()?,
    })
}

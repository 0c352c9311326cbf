//! `[inventory]`: the tenant's credentials, listed every `interval` (`src/inventory.rs`).

use serde::Deserialize;

use super::values::{Ctx, duration};
use super::{ConfigError, S};
use crate::inventory::{Export, Settings};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInventory {
    enabled: Option<S<bool>>,
    interval: Option<S<String>>,
    export: Option<S<String>>,
}

pub(super) fn parse(ctx: &Ctx<'_>, raw: &RawInventory) -> Result<Settings, ConfigError> {
    let mut settings = Settings::default();
    if let Some(v) = &raw.enabled {
        settings.enabled = *v.get_ref();
    }
    if let Some(v) = &raw.interval {
        settings.interval = duration(ctx, v, "inventory.interval")?;
    }
    if let Some(v) = &raw.export {
        settings.export =
            Export::parse(v.get_ref()).map_err(|e| ctx.err(v, "inventory.export", e))?;
    }
    Ok(settings)
}

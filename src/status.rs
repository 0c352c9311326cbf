//! The per-client status that `status`, `/v1/clients` and `plan` report.

use std::borrow::Cow;

use serde::Serialize;
use time::OffsetDateTime;

use crate::config::Config;
use crate::store::Store;

#[derive(Debug, Clone, Serialize)]
pub struct ClientStatus {
    pub name: String,
    pub app: String,
    pub key_vault_url: String,
    pub secret_name: String,
    pub published_key_id: Option<String>,
    pub published_version: Option<String>,
    pub expires_at: Option<String>,
    pub next_rotation_at: Option<String>,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    pub last_success_at: Option<String>,
    pub backoff_until: Option<String>,
    pub in_flight: bool,
    /// `config`, `file <path>` (clients_dir) or `discovered (tag <tag>)`.
    pub origin: String,
}

/// The installation's rotation budget as `/v1/budget`, `status` and `plan` show it.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetStatus {
    /// `daemon.max_rotations_per_hour`; 0: no budget.
    pub max_per_hour: u32,
    /// Rotations published (or in flight) in the last hour.
    pub used_last_hour: u32,
    /// When the next slot frees, while none is free.
    pub next_slot_at: Option<String>,
}

impl BudgetStatus {
    /// One line for the end of a table; `None` without a budget.
    pub fn line(&self) -> Option<String> {
        (self.max_per_hour > 0).then(|| {
            let mut s = format!(
                "rotation budget: {} of {} used in the last hour (daemon.max_rotations_per_hour)",
                self.used_last_hour, self.max_per_hour
            );
            if let Some(at) = &self.next_slot_at {
                s.push_str(&format!("; next slot at {at}"));
            }
            s
        })
    }
}

pub fn budget(b: &crate::rotation::budget::Budget, now: OffsetDateTime) -> BudgetStatus {
    let next = match b.peek(now) {
        Some(crate::rotation::plan::Blocked::WaitingForBudget { until, .. }) => {
            Some(rfc3339(until.unix_timestamp()))
        }
        _ => None,
    };
    BudgetStatus {
        max_per_hour: b.max(),
        used_last_hour: b.used(now),
        next_slot_at: next,
    }
}

pub fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

pub fn collect(
    config: &Config,
    store: &Store,
    in_flight: &dyn Fn(&str) -> bool,
) -> Vec<ClientStatus> {
    let now = crate::clock::now().unix_timestamp();
    config
        .clients
        .iter()
        .map(|c| {
            let row = store.client_row(&c.name).ok().flatten().unwrap_or_default();
            let backoff = store
                .backoff(&c.name)
                .ok()
                .filter(|b| b.failures > 0 && b.next_attempt_at > now);
            ClientStatus {
                origin: c.origin.to_string(),
                name: c.name.to_string(),
                app: c.app.to_string(),
                key_vault_url: c.key_vault_url.as_str().trim_end_matches('/').to_string(),
                secret_name: c.secret_name.to_string(),
                published_key_id: row.published_key_id,
                published_version: row.published_version,
                expires_at: row.expires_at.map(rfc3339),
                next_rotation_at: row.next_rotation_at.map(rfc3339),
                last_result: row.last_result,
                last_error: row.last_error,
                last_success_at: row.last_success_at.map(rfc3339),
                backoff_until: backoff.map(|b| rfc3339(b.next_attempt_at)),
                in_flight: in_flight(&c.name),
            }
        })
        .collect()
}

/// `s` as it may reach a terminal: control characters (and the invisible ones that reorder
/// text) shown as escapes such as `\u{1b}`, so that a value from Azure, a vault tag or the store
/// cannot move the cursor, retitle the window or hide what follows.
pub fn printable(s: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A plain table: one row per client, columns padded. Every cell is made [`printable`].
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, cell) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let last = cells.len().saturating_sub(1);
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    line(header.iter().map(|s| s.to_string()).collect(), &mut out);
    for r in rows {
        line(r, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_reach_the_terminal_as_escapes() {
        assert_eq!(printable("plain value"), "plain value");
        assert_eq!(
            printable("a\u{1b}]0;owned\u{7}b\nc\u{9b}d\u{202e}e"),
            "a\\u{1b}]0;owned\\u{7}b\\nc\\u{9b}d\\u{202e}e"
        );
        let t = table(&["A", "B"], &[vec!["x\u{1b}[2J".into(), "y".into()]]);
        assert!(!t.contains('\u{1b}'), "{t}");
        assert!(t.contains("x\\u{1b}[2J  y"), "{t}");
    }
}

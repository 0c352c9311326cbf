//! The per-client status that `status`, `/v1/clients` and `plan` report.

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
                name: c.name.clone(),
                app: c.app.to_string(),
                key_vault_url: c.key_vault_url.as_str().trim_end_matches('/').to_string(),
                secret_name: c.secret_name.clone(),
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

/// A plain table: one row per client, columns padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
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
        line(r.clone(), &mut out);
    }
    out
}

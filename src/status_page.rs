//! The read-only status page at `GET /`, for an operator without Grafana: one server-rendered
//! HTML table of the clients, with no script and nothing loaded from elsewhere.
//!
//! Every value shown comes from the store, Azure or a vault tag, so every one goes through
//! [`esc`] (after [`status::printable`], which makes control and bidi characters visible).
//! Nothing here can reach a secret: the page is built from [`ClientStatus`], which holds none.
//! The one stylesheet is allowed by its hash in the Content-Security-Policy, and the bars are
//! `<meter>` elements, so no `style` attribute (which a hash cannot allow) is needed.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::admin::Shared;
use crate::clock;
use crate::status::{self, ClientStatus};

/// The page's only stylesheet. Its hash is in the Content-Security-Policy: any change here
/// changes the hash with it.
const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1b1b;background:#fff}\
h1{font-size:1.4rem;margin:0 0 .5rem}\
p{margin:.25rem 0}\
table{border-collapse:collapse;margin-top:1rem;font-size:.9rem}\
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}\
thead th{background:#eee}\
code{font-size:.85rem;white-space:nowrap}\
time{white-space:nowrap}\
meter{width:8rem}\
.state{font-weight:bold}\
.failed .state,.not-ready{color:#a00}\
.waiting .state,.in-flight .state{color:#850}\
.ok .state,.ready{color:#060}\
.error{max-width:30rem;overflow-wrap:anywhere}\
";

/// `sha256-<base64>` of [`STYLE`], as the CSP names it.
static STYLE_HASH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()))
    )
});

/// The page reloads itself this often (seconds): a `<meta>` refresh needs no script.
const REFRESH_SECS: u32 = 30;

/// The Content-Security-Policy: nothing may load or run but the stylesheet with this hash, and
/// the page may not be framed, post forms or change its base URL.
pub fn content_security_policy() -> String {
    format!(
        "default-src 'none'; style-src '{}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        *STYLE_HASH
    )
}

/// `GET /`.
pub async fn page(State(s): State<Arc<Shared>>) -> Response {
    let ctx = s.context();
    let statuses = s.status();
    let clients: Vec<Row> = statuses
        .into_iter()
        .map(|status| {
            let policy = ctx
                .config
                .clients
                .iter()
                .find(|c| *c.name == *status.name)
                .map(|c| (c.policy.secret_lifetime, c.policy.renew_before));
            Row { status, policy }
        })
        .collect();
    let budget = status::budget(&ctx.budget, clock::now());
    let page = Page {
        instance: &ctx.config.instance,
        not_ready: s.readiness(),
        alive: s.alive(),
        role: s.role(),
        budget: (budget.max_per_hour > 0).then_some(budget),
        clients: &clients,
    };
    let html = render(&page, clock::now().unix_timestamp());
    let csp = HeaderValue::from_str(&content_security_policy())
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        html,
    )
        .into_response()
}

/// One client as the page shows it.
pub struct Row {
    pub status: ClientStatus,
    /// `(secret_lifetime, renew_before)`: the bar's scale and the point where renewal is due.
    pub policy: Option<(Duration, Duration)>,
}

pub struct Page<'a> {
    pub instance: &'a str,
    /// `None` when ready, else why not.
    pub not_ready: Option<String>,
    pub alive: bool,
    /// With HA, this replica's role.
    pub role: Option<crate::ha::Role>,
    /// With `daemon.max_rotations_per_hour`, its use.
    pub budget: Option<status::BudgetStatus>,
    pub clients: &'a [Row],
}

/// `s` safe inside HTML text and quoted attribute values.
pub fn esc(s: &str) -> Cow<'_, str> {
    let s = status::printable(s);
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn parse_time(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// A time with how far it is from `now`, e.g. `2026-12-01T12:00:00Z (in 3m20s)`.
fn when(at: Option<&str>, now: i64) -> String {
    let Some(at) = at else {
        return "&#8212;".into();
    };
    let relative = match parse_time(at) {
        Some(t) if t >= now => format!(
            " (in {})",
            clock::format_duration(Duration::from_secs((t - now) as u64))
        ),
        Some(t) => format!(
            " ({} ago)",
            clock::format_duration(Duration::from_secs((now - t) as u64))
        ),
        None => String::new(),
    };
    format!("<time>{}</time>{}", esc(at), relative)
}

/// What the client is doing, as a CSS class and a word.
fn state(s: &ClientStatus) -> (&'static str, &'static str) {
    if s.in_flight {
        return ("in-flight", "in flight");
    }
    match (s.last_result.as_deref(), &s.last_error) {
        (None, _) => ("unknown", "not reconciled yet"),
        (Some("failed"), _) => ("failed", "failed"),
        // A reconcile that succeeded but could not rotate (a password slot frees later) or
        // has a warning.
        (Some(_), Some(_)) => ("waiting", "waiting"),
        (Some(_), None) => ("ok", "ok"),
    }
}

/// The bar of time left until expiry, on the scale of the secret's lifetime: green while more
/// than `renew_before` is left, amber once renewal is due, red in the second half of the
/// renewal window (a rotation that keeps failing).
fn time_left(s: &ClientStatus, policy: Option<(Duration, Duration)>, now: i64) -> String {
    let Some(expires) = s.expires_at.as_deref().and_then(parse_time) else {
        return "no published secret".into();
    };
    let left = expires - now;
    let text = if left >= 0 {
        format!(
            "{} left",
            clock::format_duration(Duration::from_secs(left as u64))
        )
    } else {
        format!(
            "expired {} ago",
            clock::format_duration(Duration::from_secs((-left) as u64))
        )
    };
    let Some((lifetime, renew_before)) = policy else {
        return text;
    };
    let max = lifetime.as_secs().max(1);
    let high = renew_before.as_secs().min(max);
    let value = left.clamp(0, max as i64);
    format!(
        "<meter min=\"0\" max=\"{max}\" low=\"{low}\" high=\"{high}\" optimum=\"{max}\" value=\"{value}\" title=\"renewal is due with {renew} left\">{text}</meter> {text}",
        low = high / 2,
        renew = clock::format_duration(renew_before),
    )
}

/// The whole page.
pub fn render(page: &Page<'_>, now: i64) -> String {
    let mut h = String::with_capacity(4096 + page.clients.len() * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\n\
         <title>secret-rotator: {instance}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>secret-rotator <small>instance {instance}</small></h1>\n",
        instance = esc(page.instance),
    );
    match &page.not_ready {
        None => h.push_str("<p class=\"ready\">Ready: signed in to Azure.</p>\n"),
        Some(why) => {
            let _ = writeln!(h, "<p class=\"not-ready\">Not ready: {}</p>", esc(why));
        }
    }
    if !page.alive {
        h.push_str("<p class=\"not-ready\">The scheduler loop has stalled.</p>\n");
    }
    match &page.role {
        None => {}
        Some(r) if r.leader => {
            h.push_str("<p>High availability: this replica leads and rotates.</p>\n");
        }
        Some(r) => {
            let _ = writeln!(
                h,
                "<p>High availability: this replica follows; {}.</p>",
                match &r.leader_name {
                    Some(name) => format!("the leader is {}", esc(name)),
                    None => "no leader is known".into(),
                }
            );
        }
    }
    if let Some(b) = &page.budget {
        let _ = writeln!(
            h,
            "<p>Rotation budget: {} of {} in the last hour{}.</p>",
            b.used_last_hour,
            b.max_per_hour,
            match &b.next_slot_at {
                Some(at) => format!("; the next slot frees at {}", when(Some(at), now)),
                None => String::new(),
            }
        );
    }
    let count = |class: &str| {
        page.clients
            .iter()
            .filter(|r| state(&r.status).0 == class)
            .count()
    };
    let _ = writeln!(
        h,
        "<p>{} clients: {} ok, {} waiting, {} failed, {} in flight. Version {}. Shown at {}; the page reloads every {REFRESH_SECS} s.</p>",
        page.clients.len(),
        count("ok"),
        count("waiting"),
        count("failed"),
        count("in-flight"),
        esc(env!("CARGO_PKG_VERSION")),
        esc(&status::rfc3339(now)),
    );
    h.push_str(
        "<table>\n<caption>Clients</caption>\n<thead>\n<tr><th scope=\"col\">Client</th>\
         <th scope=\"col\">State</th><th scope=\"col\">Published key id</th>\
         <th scope=\"col\">Time left</th><th scope=\"col\">Expires</th>\
         <th scope=\"col\">Next rotation</th><th scope=\"col\">Last result</th>\
         <th scope=\"col\">Last success</th><th scope=\"col\">Last error</th>\
         <th scope=\"col\">Application</th><th scope=\"col\">Vault secret</th></tr>\n</thead>\n<tbody>\n",
    );
    for row in page.clients {
        let s = &row.status;
        let (class, word) = state(s);
        let mut state_text = word.to_string();
        if let Some(until) = &s.backoff_until {
            let _ = write!(state_text, "; next attempt {}", when(Some(until), now));
        }
        let _ = writeln!(
            h,
            "<tr class=\"{class}\"><th scope=\"row\">{name}</th><td class=\"state\">{state_text}</td>\
             <td>{key}</td><td>{left}</td><td>{expires}</td><td>{next}</td><td>{result}</td>\
             <td>{success}</td><td class=\"error\">{error}</td><td><code>{app}</code></td>\
             <td><code>{vault}/{secret}</code></td></tr>",
            name = esc(&s.name),
            key = s
                .published_key_id
                .as_deref()
                .map(|k| format!("<code>{}</code>", esc(k)))
                .unwrap_or_else(|| "none".into()),
            left = time_left(s, row.policy, now),
            expires = when(s.expires_at.as_deref(), now),
            next = when(s.next_rotation_at.as_deref(), now),
            result = esc(s.last_result.as_deref().unwrap_or("none")),
            success = when(s.last_success_at.as_deref(), now),
            error = esc(s.last_error.as_deref().unwrap_or("")),
            app = esc(&s.app),
            vault = esc(&s.key_vault_url),
            secret = esc(&s.secret_name),
        );
    }
    h.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str =
        "<script>alert(1)</script>\"'&<img src=x onerror=alert(2)>\u{1b}[2J\u{202e}";

    fn client(name: &str) -> ClientStatus {
        ClientStatus {
            name: name.into(),
            app: "app_id 00000000-0000-0000-0000-000000000001".into(),
            key_vault_url: "https://kv.vault.azure.net".into(),
            secret_name: "s".into(),
            published_key_id: None,
            published_version: None,
            expires_at: None,
            next_rotation_at: None,
            last_result: None,
            last_error: None,
            last_success_at: None,
            backoff_until: None,
            in_flight: false,
            origin: "config".into(),
        }
    }

    fn page_of(rows: &[Row]) -> String {
        render(
            &Page {
                instance: "default",
                not_ready: None,
                alive: true,
                role: None,
                budget: None,
                clients: rows,
            },
            1_800_000_000,
        )
    }

    #[test]
    fn the_escaper_leaves_no_markup_and_no_control_character() {
        let e = esc(HOSTILE);
        assert!(
            !e.contains(['<', '>', '"', '\'', '\u{1b}', '\u{202e}']),
            "{e}"
        );
        assert_eq!(esc("a&b"), "a&amp;b");
        assert_eq!(esc("plain-name_1.2"), "plain-name_1.2");
        assert!(matches!(esc("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn hostile_values_in_every_field_reach_the_page_as_text() {
        let mut s = client(HOSTILE);
        s.app = HOSTILE.into();
        s.key_vault_url = HOSTILE.into();
        s.secret_name = HOSTILE.into();
        s.published_key_id = Some(HOSTILE.into());
        s.last_result = Some(HOSTILE.into());
        s.last_error = Some(HOSTILE.into());
        s.expires_at = Some(HOSTILE.into());
        s.next_rotation_at = Some(HOSTILE.into());
        s.last_success_at = Some(HOSTILE.into());
        s.backoff_until = Some(HOSTILE.into());
        let html = render(
            &Page {
                instance: HOSTILE,
                not_ready: Some(HOSTILE.into()),
                alive: true,
                role: Some(crate::ha::Role {
                    leader: false,
                    leader_name: Some(HOSTILE.into()),
                }),
                budget: Some(status::BudgetStatus {
                    max_per_hour: 2,
                    used_last_hour: 2,
                    next_slot_at: Some(HOSTILE.into()),
                }),
                clients: &[Row {
                    status: s,
                    policy: None,
                }],
            },
            1_800_000_000,
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains('\u{1b}') && !html.contains('\u{202e}'));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        // The only tags are the page's own.
        let tags: std::collections::BTreeSet<&str> = html
            .split('<')
            .skip(1)
            .map(|t| t.split([' ', '>', '\n']).next().unwrap_or(""))
            .collect();
        let allowed = [
            "!DOCTYPE", "html", "/html", "head", "/head", "meta", "title", "/title", "style",
            "/style", "body", "/body", "h1", "/h1", "small", "/small", "p", "/p", "table",
            "/table", "caption", "/caption", "thead", "/thead", "tbody", "/tbody", "tr", "/tr",
            "th", "/th", "td", "/td", "code", "/code", "time", "/time", "meter", "/meter",
        ];
        for t in &tags {
            assert!(allowed.contains(t), "unexpected tag <{t}> in {html}");
        }
    }

    #[test]
    fn the_bar_measures_time_left_against_renew_before() {
        let now = 1_800_000_000;
        let mut s = client("c");
        s.expires_at = Some(status::rfc3339(now + 3600));
        let html = page_of(&[Row {
            status: s.clone(),
            policy: Some((Duration::from_secs(4 * 3600), Duration::from_secs(7200))),
        }]);
        assert!(
            html.contains(
                "<meter min=\"0\" max=\"14400\" low=\"3600\" high=\"7200\" optimum=\"14400\" value=\"3600\""
            ),
            "{html}"
        );
        assert!(html.contains("1h left"), "{html}");
        s.expires_at = Some(status::rfc3339(now - 60));
        let html = page_of(&[Row {
            status: s,
            policy: Some((Duration::from_secs(4 * 3600), Duration::from_secs(7200))),
        }]);
        assert!(html.contains("value=\"0\""), "{html}");
        assert!(html.contains("expired 1m ago"), "{html}");
    }

    #[test]
    fn states_are_in_flight_failed_waiting_or_ok() {
        let mut failed = client("f");
        failed.last_result = Some("failed".into());
        failed.last_error = Some("x is soft-deleted".into());
        let mut waiting = client("w");
        waiting.last_result = Some("ok".into());
        waiting.last_error = Some("the other slot frees at …".into());
        let mut busy = failed.clone();
        busy.name = "b".into();
        busy.in_flight = true;
        let mut ok = client("o");
        ok.last_result = Some("rotated".into());
        let rows: Vec<Row> = [failed, waiting, busy, ok]
            .into_iter()
            .map(|status| Row {
                status,
                policy: None,
            })
            .collect();
        let html = page_of(&rows);
        for (name, class, word) in [
            ("f", "failed", "failed"),
            ("w", "waiting", "waiting"),
            ("b", "in-flight", "in flight"),
            ("o", "ok", "ok"),
        ] {
            assert!(
                html.contains(&format!(
                    "<tr class=\"{class}\"><th scope=\"row\">{name}</th><td class=\"state\">{word}"
                )),
                "{name}: {html}"
            );
        }
        assert!(html.contains("4 clients: 1 ok, 1 waiting, 1 failed, 1 in flight"));
    }

    #[test]
    fn the_leader_and_the_budget_are_shown_when_configured() {
        let now = 1_800_000_000;
        let page = |role, budget| {
            render(
                &Page {
                    instance: "default",
                    not_ready: None,
                    alive: true,
                    role,
                    budget,
                    clients: &[],
                },
                now,
            )
        };
        let plain = page(None, None);
        assert!(!plain.contains("High availability") && !plain.contains("budget"));
        let leads = page(
            Some(crate::ha::Role {
                leader: true,
                leader_name: Some("vm-a".into()),
            }),
            None,
        );
        assert!(leads.contains("this replica leads"), "{leads}");
        let follows = page(
            Some(crate::ha::Role {
                leader: false,
                leader_name: Some("vm-a".into()),
            }),
            Some(status::BudgetStatus {
                max_per_hour: 10,
                used_last_hour: 10,
                next_slot_at: Some(status::rfc3339(now + 90)),
            }),
        );
        assert!(
            follows.contains("this replica follows; the leader is vm-a."),
            "{follows}"
        );
        assert!(
            follows.contains("Rotation budget: 10 of 10 in the last hour; the next slot frees at"),
            "{follows}"
        );
        assert!(follows.contains("(in 1m30s)"), "{follows}");
    }

    #[test]
    fn the_policy_allows_exactly_the_page_stylesheet() {
        let csp = content_security_policy();
        assert!(
            csp.starts_with("default-src 'none'; style-src 'sha256-"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe"));
        let html = page_of(&[]);
        assert!(html.contains(&format!("<style>{STYLE}</style>")));
        // A known answer, so a broken hash cannot pass: sha256("") in base64.
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"")),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }
}

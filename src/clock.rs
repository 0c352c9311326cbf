//! The only place that reads the wall clock. Everything else is handed `now`, which keeps the
//! planner pure and lets tests reason about second-scale lifetimes.

use time::OffsetDateTime;

/// The current UTC time.
// clippy.toml forbids reading the wall clock anywhere else; this is the one place that may.
#[allow(clippy::disallowed_methods)]
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// The monotonic clock, for measuring how long ago something happened (a lease renewal): it
/// never jumps with the wall clock, so a step of the system time cannot stretch a lease.
pub fn monotonic() -> std::time::Instant {
    std::time::Instant::now()
}

/// A time as RFC 3339 (`2026-12-01T14:20:00Z`), as events, messages and the JSON outputs
/// show it.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Seconds since the Unix epoch, as a float, for metrics.
pub fn unix_seconds(t: OffsetDateTime) -> f64 {
    t.unix_timestamp_nanos() as f64 / 1e9
}

/// Parses a duration as the config writes it: numbers with units, `"90s"`, `"15m"`, `"12h"`,
/// `"30d"`, `"9m50s"`, `"500ms"`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "'{text}' is not a duration: expected a number at '{rest}'"
            ));
        }
        let n: u128 = rest[..digits]
            .parse()
            .map_err(|_| format!("'{text}': number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "'{text}' needs a unit (ms, s, m, h or d) after {n}"
                ));
            }
            other => {
                return Err(format!(
                    "'{text}' has an unknown unit '{other}' (use ms, s, m, h or d)"
                ));
            }
        };
        total = n
            .checked_mul(ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("'{text}' is too long"))?;
    }
    if total > 100 * 365 * 86_400_000 {
        return Err(format!("'{text}' is longer than 100 years"));
    }
    Ok(std::time::Duration::from_millis(total as u64))
}

/// Renders a duration the way the config writes it (`"1d2h"`, `"90s"`).
pub fn format_duration(d: std::time::Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if s >= size {
            out.push_str(&format!("{}{unit}", s / size));
            s %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_every_unit_and_compound_forms() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
        assert_eq!(parse_duration("9m50s"), Ok(Duration::from_secs(590)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn rejects_numbers_without_units_and_unknown_units() {
        assert!(parse_duration("90").unwrap_err().contains("needs a unit"));
        assert!(
            parse_duration("3w")
                .unwrap_err()
                .contains("unknown unit 'w'")
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m5").is_err());
        assert!(parse_duration("99999999999999999999999d").is_err());
    }

    #[test]
    fn formats_back_to_the_config_spelling() {
        assert_eq!(format_duration(Duration::from_secs(93_784)), "1d2h3m4s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }
}

//! Change windows and freezes: when a scheduled rotation may run. Pure, like the planner: a
//! function of the policy and `now`, no clock, no I/O.
//!
//! A window is wall-clock time in the client's time zone (`"Mon-Fri 08:00-18:00"`), so it
//! follows daylight saving time: 08:00 is 08:00 local on both sides of a change. A freeze is
//! whole local days, both ends included (`"2026-12-20..2027-01-03"`). A scheduled renewal
//! waits for a window outside every freeze, but never past the point where the published
//! secret is within `renew_before / 2` of its expiry: then it rotates and says why.
//!
//! Over 600 lines: about 250 of them are the table tests of DST, freezes and deadlines, kept
//! beside the code they pin.

use std::fmt;
use std::time::Duration;

use chrono::{Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;
use time::OffsetDateTime;

use super::plan::{Blocked, Plan, RotateReason};

/// How far ahead the next opening is looked for. A policy whose windows never open within it
/// (every window inside a long freeze) waits for the expiry deadline.
const HORIZON_DAYS: i64 = 800;

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// One recurring window: days of the week and a wall-clock span. `end <= start` is a window
/// that runs past midnight into the next day.
#[derive(Clone, PartialEq, Eq)]
pub struct Window {
    /// Monday first.
    days: [bool; 7],
    /// Minutes after local midnight.
    start: u32,
    /// Minutes after local midnight, 1..=1440.
    end: u32,
    text: String,
}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_day(s: &str) -> Option<usize> {
    DAY_NAMES
        .iter()
        .position(|d| d.eq_ignore_ascii_case(s) || s.len() > 3 && full_day(d, s))
}

fn full_day(short: &str, s: &str) -> bool {
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    DAY_NAMES
        .iter()
        .position(|d| *d == short)
        .is_some_and(|i| FULL[i].eq_ignore_ascii_case(s))
}

/// `HH:MM`, 00:00 to 24:00.
fn parse_time(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

impl Window {
    /// `"Mon-Fri 08:00-18:00"`, `"Sat,Sun 00:00-24:00"`, `"Fri 22:00-02:00"` (past midnight),
    /// `"08:00-18:00"` (every day). Day names are English, three letters or whole.
    pub fn parse(text: &str) -> Result<Window, String> {
        let t = text.trim();
        let (days_text, span) = match t.rsplit_once(char::is_whitespace) {
            Some((d, s)) => (Some(d.trim()), s),
            None => (None, t),
        };
        let bad_span = || {
            format!("'{text}': '{span}' is not a time span such as 08:00-18:00 (24-hour, local)")
        };
        let (a, b) = span.split_once('-').ok_or_else(bad_span)?;
        let start = parse_time(a).filter(|s| *s < 1440).ok_or_else(bad_span)?;
        let end = parse_time(b).ok_or_else(bad_span)?;
        if start == end {
            return Err(format!(
                "'{text}': the window is empty (starts when it ends)"
            ));
        }
        let mut days = [days_text.is_none(); 7];
        if let Some(d) = days_text {
            for item in d.split(',') {
                let item = item.trim();
                let day = |name: &str| {
                    parse_day(name.trim()).ok_or_else(|| {
                        format!(
                            "'{text}': '{}' is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun; ranges such as Mon-Fri)",
                            name.trim()
                        )
                    })
                };
                match item.split_once('-') {
                    Some((x, y)) => {
                        let from = day(x)?;
                        let to = day(y)?;
                        // Ranges may wrap the week: Fri-Mon.
                        let mut i = from;
                        loop {
                            days[i] = true;
                            if i == to {
                                break;
                            }
                            i = (i + 1) % 7;
                        }
                    }
                    None => days[day(item)?] = true,
                }
            }
        }
        Ok(Window {
            days,
            start,
            end,
            text: t.to_string(),
        })
    }

    fn overnight(&self) -> bool {
        self.end <= self.start
    }

    /// Whether the local wall-clock time `local` is inside the window.
    fn contains(&self, local: NaiveDateTime) -> bool {
        let day = local.weekday().num_days_from_monday() as usize;
        let minute = local.hour() * 60 + local.minute();
        if self.overnight() {
            (self.days[day] && minute >= self.start)
                || (self.days[(day + 6) % 7] && minute < self.end)
        } else {
            self.days[day] && minute >= self.start && minute < self.end
        }
    }
}

/// Local days on which no scheduled rotation runs, both ends included.
#[derive(Clone, PartialEq, Eq)]
pub struct Freeze {
    first: NaiveDate,
    last: NaiveDate,
}

impl fmt::Debug for Freeze {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Freeze {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.first, self.last)
    }
}

impl Freeze {
    /// `"2026-12-20..2027-01-03"` (both days included) or one day, `"2026-12-24"`.
    pub fn parse(text: &str) -> Result<Freeze, String> {
        let t = text.trim();
        let date = |s: &str| {
            NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                .map_err(|_| format!("'{text}': '{}' is not a date (YYYY-MM-DD)", s.trim()))
        };
        let (first, last) = match t.split_once("..") {
            Some((a, b)) => (date(a)?, date(b)?),
            None => (date(t)?, date(t)?),
        };
        if last < first {
            return Err(format!("'{text}': the freeze ends before it starts"));
        }
        Ok(Freeze { first, last })
    }

    fn contains(&self, day: NaiveDate) -> bool {
        self.first <= day && day <= self.last
    }
}

/// A client's change policy: its windows (none: any time) and freezes, in its time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePolicy {
    pub timezone: Tz,
    pub windows: Vec<Window>,
    pub freeze: Vec<Freeze>,
}

impl Default for ChangePolicy {
    fn default() -> Self {
        ChangePolicy {
            timezone: Tz::UTC,
            windows: Vec::new(),
            freeze: Vec::new(),
        }
    }
}

impl ChangePolicy {
    /// No window and no freeze: rotations run whenever they are due.
    pub fn is_unrestricted(&self) -> bool {
        self.windows.is_empty() && self.freeze.is_empty()
    }

    fn local(&self, t: OffsetDateTime) -> Option<NaiveDateTime> {
        chrono::DateTime::from_timestamp(t.unix_timestamp(), 0)
            .map(|u| u.with_timezone(&self.timezone).naive_local())
    }

    /// Whether a scheduled rotation may run at `t`.
    pub fn is_open(&self, t: OffsetDateTime) -> bool {
        let Some(local) = self.local(t) else {
            return false;
        };
        !self.freeze.iter().any(|f| f.contains(local.date()))
            && (self.windows.is_empty() || self.windows.iter().any(|w| w.contains(local)))
    }

    /// The first instant at or after `now` at which a scheduled rotation may run; `None` when
    /// none comes within about two years.
    pub fn next_open(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        if self.is_open(now) {
            return Some(now);
        }
        let today = self.local(now)?.date();
        // Openings happen only where a window starts or where a freeze ends (at local
        // midnight); the earliest such instant after `now` that is open is the answer.
        for offset in -1..HORIZON_DAYS {
            let day = today + chrono::Duration::days(offset);
            let mut candidates: Vec<OffsetDateTime> = Vec::new();
            let weekday = day.weekday().num_days_from_monday() as usize;
            for w in &self.windows {
                if w.days[weekday] {
                    candidates.extend(self.instant(day, w.start));
                }
            }
            if self
                .freeze
                .iter()
                .any(|f| f.last + chrono::Duration::days(1) == day)
                || (self.windows.is_empty() && offset >= 0)
            {
                candidates.extend(self.instant(day, 0));
            }
            candidates.sort();
            if let Some(t) = candidates
                .into_iter()
                .find(|t| *t > now && self.is_open(*t))
            {
                return Some(t);
            }
        }
        None
    }

    /// The instant the local wall clock reads `minute` on `day`. In a spring-forward gap (the
    /// time does not exist) it is the first instant after the gap; when the time happens twice
    /// (autumn), the first.
    fn instant(&self, day: NaiveDate, minute: u32) -> Option<OffsetDateTime> {
        let mut local = day.and_time(NaiveTime::MIN) + chrono::Duration::minutes(i64::from(minute));
        // Gaps are at most a few hours; step over them a minute at a time.
        for _ in 0..=240 {
            match self.timezone.from_local_datetime(&local) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                    return OffsetDateTime::from_unix_timestamp(t.timestamp()).ok();
                }
                LocalResult::None => local += chrono::Duration::minutes(1),
            }
        }
        None
    }

    /// The policy in words, for messages: `Mon-Fri 08:00-18:00 (Europe/Berlin); frozen 2026-12-20..2027-01-03`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.windows.is_empty() {
            let w: Vec<String> = self.windows.iter().map(|w| w.to_string()).collect();
            parts.push(format!("windows {} ({})", w.join(", "), self.timezone));
        }
        if !self.freeze.is_empty() {
            let f: Vec<String> = self.freeze.iter().map(|f| f.to_string()).collect();
            parts.push(format!("freeze {}", f.join(", ")));
        }
        parts.join("; ")
    }
}

/// What the change policy says about a rotation that is due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Inside a window and outside every freeze (or no restriction at all).
    Open,
    /// Outside: wait until `until`, the earlier of the next opening and the expiry deadline.
    Wait {
        until: OffsetDateTime,
        opens_at: Option<OffsetDateTime>,
        deadline: Option<OffsetDateTime>,
    },
    /// Outside, but the published secret is within `renew_before / 2` of its expiry: it
    /// rotates now.
    Overridden { deadline: OffsetDateTime },
}

/// The point past which a renewal no longer waits for a window or the budget: `renew_before / 2`
/// before the published secret expires.
pub fn deadline(expires: Option<OffsetDateTime>, renew_before: Duration) -> Option<OffsetDateTime> {
    expires.map(|e| e - time::Duration::try_from(renew_before / 2).unwrap_or(time::Duration::ZERO))
}

/// The window decision for a rotation due at `now`, whose published secret expires at
/// `expires`.
pub fn gate(
    change: &ChangePolicy,
    renew_before: Duration,
    expires: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Gate {
    if change.is_open(now) {
        return Gate::Open;
    }
    let deadline = deadline(expires, renew_before);
    if let Some(d) = deadline
        && now >= d
    {
        return Gate::Overridden { deadline: d };
    }
    let opens_at = change.next_open(now);
    let until = match (opens_at, deadline) {
        (Some(o), Some(d)) => o.min(d),
        (Some(o), None) => o,
        (None, Some(d)) => d,
        // Nothing opens within the horizon and nothing forces a rotation: look again in a day.
        (None, None) => now + time::Duration::days(1),
    };
    Gate::Wait {
        until,
        opens_at,
        deadline,
    }
}

/// Whether the change policy governs this rotation: scheduled renewals and adoptions wait;
/// a forced rotation, and repairs of a secret that is missing, expired or broken (waiting would
/// only prolong an outage), do not.
pub fn applies_to(reason: &RotateReason) -> bool {
    matches!(
        reason,
        RotateReason::ExpiresSoon { .. } | RotateReason::AdoptingUnmanagedSecret
    )
}

/// Applies the change policy to a plan: a due renewal outside the windows becomes a wait, or
/// goes ahead with a note when its expiry is too close to wait.
pub fn apply(plan: &mut Plan, change: &ChangePolicy, renew_before: Duration, now: OffsetDateTime) {
    let Some(reason) = &plan.rotate else {
        return;
    };
    if !applies_to(reason) || change.is_unrestricted() {
        return;
    }
    let expires = plan.published.as_ref().and_then(|p| p.expires);
    match gate(change, renew_before, expires, now) {
        Gate::Open => {}
        Gate::Overridden { deadline } => plan.notes.push(format!(
            "outside the change window ({}), rotating anyway: the published secret is within renew_before/2 of its expiry (since {})",
            change.describe(),
            crate::clock::rfc3339(deadline)
        )),
        Gate::Wait {
            until,
            opens_at,
            deadline,
        } => {
            plan.rotate = None;
            plan.blocked = Some(Blocked::WaitingForWindow {
                until,
                opens_at,
                deadline,
                policy: change.describe(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn policy(tz: &str, windows: &[&str], freeze: &[&str]) -> ChangePolicy {
        ChangePolicy {
            timezone: tz.parse().unwrap(),
            windows: windows.iter().map(|w| Window::parse(w).unwrap()).collect(),
            freeze: freeze.iter().map(|f| Freeze::parse(f).unwrap()).collect(),
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn windows_and_freezes_parse_and_bad_ones_say_what_is_wrong() {
        assert!(Window::parse("Mon-Fri 08:00-18:00").is_ok());
        assert!(Window::parse("sat,Sunday 00:00-24:00").is_ok());
        assert!(Window::parse("Fri-Mon 22:00-02:00").is_ok());
        assert!(Window::parse("09:00-17:00").is_ok());
        let e = Window::parse("Mon-Fry 08:00-18:00").unwrap_err();
        assert!(e.contains("'Fry' is not a day"), "{e}");
        let e = Window::parse("Mon-Fri 8-18").unwrap_err();
        assert!(e.contains("'8-18' is not a time span"), "{e}");
        let e = Window::parse("Mon 25:00-26:00").unwrap_err();
        assert!(e.contains("not a time span"), "{e}");
        let e = Window::parse("Mon 08:00-08:00").unwrap_err();
        assert!(e.contains("empty"), "{e}");
        assert!(Freeze::parse("2026-12-20..2027-01-03").is_ok());
        assert!(Freeze::parse("2026-12-24").is_ok());
        let e = Freeze::parse("2027-01-03..2026-12-20").unwrap_err();
        assert!(e.contains("ends before it starts"), "{e}");
        let e = Freeze::parse("2026-13-01..2027-01-03").unwrap_err();
        assert!(e.contains("'2026-13-01' is not a date"), "{e}");
    }

    #[test]
    fn a_weekday_window_opens_on_the_next_working_morning_in_the_clients_zone() {
        let p = policy("Europe/Berlin", &["Mon-Fri 08:00-18:00"], &[]);
        // Friday 2026-12-04 18:30 Berlin (17:30 UTC): closed until Monday 08:00 (07:00 UTC).
        let now = datetime!(2026-12-04 17:30 UTC);
        assert!(!p.is_open(now));
        assert_eq!(p.next_open(now), Some(datetime!(2026-12-07 07:00 UTC)));
        // Monday 08:30 Berlin is inside.
        assert!(p.is_open(datetime!(2026-12-07 07:30 UTC)));
        // 17:59 inside, 18:00 outside.
        assert!(p.is_open(datetime!(2026-12-07 16:59 UTC)));
        assert!(!p.is_open(datetime!(2026-12-07 17:00 UTC)));
    }

    #[test]
    fn a_window_follows_the_wall_clock_across_the_spring_dst_change() {
        // Berlin moves from CET (UTC+1) to CEST (UTC+2) on Sunday 2026-03-29 at 02:00.
        let p = policy("Europe/Berlin", &["Mon-Fri 08:00-18:00"], &[]);
        // Friday 2026-03-27 19:00 local: the next opening is Monday 08:00 CEST = 06:00 UTC,
        // not 07:00 UTC as a fixed offset taken on Friday would say.
        let now = datetime!(2026-03-27 18:00 UTC);
        assert_eq!(p.next_open(now), Some(datetime!(2026-03-30 06:00 UTC)));
        assert!(!p.is_open(datetime!(2026-03-30 05:30 UTC)));
        assert!(p.is_open(datetime!(2026-03-30 06:00 UTC)));
        // And the window closes at 18:00 CEST = 16:00 UTC.
        assert!(!p.is_open(datetime!(2026-03-30 16:00 UTC)));
    }

    #[test]
    fn a_window_that_starts_in_the_skipped_hour_opens_when_the_clock_jumps() {
        // 02:00-03:00 does not exist in Berlin on 2026-03-29: a window from 02:30 opens at 03:00
        // CEST (01:00 UTC), the first instant after the gap.
        let p = policy("Europe/Berlin", &["Sun 02:30-05:00"], &[]);
        let now = datetime!(2026-03-28 12:00 UTC);
        assert_eq!(p.next_open(now), Some(datetime!(2026-03-29 01:00 UTC)));
    }

    #[test]
    fn the_autumn_change_repeats_an_hour_and_the_window_opens_at_its_first_occurrence() {
        // New York leaves EDT (UTC-4) for EST (UTC-5) on 2026-11-01 at 02:00; 01:30 happens twice.
        let p = policy("America/New_York", &["Sun 01:30-03:00"], &[]);
        let now = datetime!(2026-10-31 12:00 UTC);
        assert_eq!(p.next_open(now), Some(datetime!(2026-11-01 05:30 UTC)));
        // 03:00 EST = 08:00 UTC closes it; 07:59 UTC (02:59 EST) is inside.
        assert!(p.is_open(datetime!(2026-11-01 07:59 UTC)));
        assert!(!p.is_open(datetime!(2026-11-01 08:00 UTC)));
    }

    #[test]
    fn a_freeze_holds_whole_local_days_and_the_window_reopens_after_it() {
        let p = policy(
            "Europe/Berlin",
            &["Mon-Fri 08:00-18:00"],
            &["2026-12-20..2027-01-03"],
        );
        // Monday 2026-12-21 10:00 Berlin: a window, but frozen.
        assert!(!p.is_open(datetime!(2026-12-21 09:00 UTC)));
        // The first working morning after the freeze: Monday 2027-01-04 08:00 CET.
        assert_eq!(
            p.next_open(datetime!(2026-12-21 09:00 UTC)),
            Some(datetime!(2027-01-04 07:00 UTC))
        );
        // The freeze is local days: 2026-12-19 23:30 Berlin (22:30 UTC) is not frozen, 00:30 is.
        let only_freeze = policy("Europe/Berlin", &[], &["2026-12-20..2027-01-03"]);
        assert!(only_freeze.is_open(datetime!(2026-12-19 22:30 UTC)));
        assert!(!only_freeze.is_open(datetime!(2026-12-19 23:30 UTC)));
        assert_eq!(
            only_freeze.next_open(datetime!(2026-12-25 12:00 UTC)),
            Some(datetime!(2027-01-03 23:00 UTC))
        );
    }

    #[test]
    fn a_window_past_midnight_belongs_to_the_day_it_starts() {
        let p = policy("UTC", &["Fri 22:00-02:00"], &[]);
        assert!(p.is_open(datetime!(2026-12-04 23:00 UTC))); // Friday night
        assert!(p.is_open(datetime!(2026-12-05 01:59 UTC))); // Saturday early
        assert!(!p.is_open(datetime!(2026-12-05 02:00 UTC)));
        assert!(!p.is_open(datetime!(2026-12-05 23:00 UTC))); // Saturday night
        // A freeze ending on Friday opens the window at Saturday's midnight.
        let p = policy("UTC", &["Fri 22:00-02:00"], &["2026-12-04"]);
        assert_eq!(
            p.next_open(datetime!(2026-12-04 23:00 UTC)),
            Some(datetime!(2026-12-05 00:00 UTC))
        );
    }

    #[test]
    fn a_renewal_waits_for_the_window_unless_expiry_is_within_half_of_renew_before() {
        let p = policy("Europe/Berlin", &["Mon-Fri 08:00-18:00"], &[]);
        let now = datetime!(2026-12-04 17:30 UTC); // Friday evening
        let renew_before = 30 * DAY;
        // Expiring in 20 days: the deadline (15 days before expiry) is 5 days away; Monday
        // comes first.
        let expires = now + time::Duration::days(20);
        assert_eq!(
            gate(&p, renew_before, Some(expires), now),
            Gate::Wait {
                until: datetime!(2026-12-07 07:00 UTC),
                opens_at: Some(datetime!(2026-12-07 07:00 UTC)),
                deadline: Some(expires - time::Duration::days(15)),
            }
        );
        // Expiring in 16 days: the deadline comes in one day, before Monday: wait until then.
        let expires = now + time::Duration::days(16);
        let d = expires - time::Duration::days(15);
        assert!(
            matches!(gate(&p, renew_before, Some(expires), now), Gate::Wait { until, .. } if until == d)
        );
        // Expiring in 14 days: within renew_before/2 already: rotate now.
        let expires = now + time::Duration::days(14);
        assert_eq!(
            gate(&p, renew_before, Some(expires), now),
            Gate::Overridden {
                deadline: expires - time::Duration::days(15)
            }
        );
        // Inside a window nothing waits.
        assert_eq!(
            gate(
                &p,
                renew_before,
                Some(expires),
                datetime!(2026-12-07 09:00 UTC)
            ),
            Gate::Open
        );
    }

    #[test]
    fn only_renewals_and_adoptions_wait_and_the_plan_says_until_when() {
        let p = policy("UTC", &["Mon-Fri 08:00-18:00"], &[]);
        let now = datetime!(2026-12-05 12:00 UTC); // Saturday
        let expires = now + time::Duration::days(20);
        let mut plan = Plan {
            rotate: Some(RotateReason::ExpiresSoon { at: expires }),
            published: Some(super::super::plan::Published {
                version: "v1".into(),
                key_id: None,
                created: None,
                expires: Some(expires),
                managed: true,
            }),
            ..Plan::default()
        };
        apply(&mut plan, &p, 30 * DAY, now);
        assert_eq!(plan.rotate, None);
        let b = plan.blocked.clone().unwrap();
        assert!(!b.is_failure());
        assert!(
            b.to_string()
                .starts_with("waiting for window until 2026-12-07T08:00:00Z"),
            "{b}"
        );
        // A missing secret (nothing for consumers to read) is published at once.
        let mut plan = Plan {
            rotate: Some(RotateReason::NoPublishedSecret),
            ..Plan::default()
        };
        apply(&mut plan, &p, 30 * DAY, now);
        assert_eq!(plan.rotate, Some(RotateReason::NoPublishedSecret));
        // Near expiry it rotates and the plan says why.
        let soon = now + time::Duration::days(10);
        let mut plan = Plan {
            rotate: Some(RotateReason::ExpiresSoon { at: soon }),
            published: Some(super::super::plan::Published {
                version: "v1".into(),
                key_id: None,
                created: None,
                expires: Some(soon),
                managed: true,
            }),
            ..Plan::default()
        };
        apply(&mut plan, &p, 30 * DAY, now);
        assert!(plan.rotate.is_some());
        assert!(
            plan.notes[0].contains("rotating anyway"),
            "{:?}",
            plan.notes
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// Whatever the text, parsing answers: a window or freeze, or one line saying why not.
        #[test]
        fn windows_and_freezes_parse_or_say_why_in_one_line(text in "\\PC{0,40}") {
            for r in [Window::parse(&text).map(|_| ()), Freeze::parse(&text).map(|_| ())] {
                if let Err(e) = r {
                    proptest::prop_assert!(!e.contains('\n') || text.contains('\n'), "{e}");
                }
            }
        }

        /// From any instant, the next opening is open, and nothing before it is (sampled).
        #[test]
        fn the_next_opening_is_the_first_open_instant(
            minutes in 0i64..(3 * 366 * 24 * 60),
            start in 0u32..24,
            len in 1u32..24,
        ) {
            let p = policy(
                "Europe/Berlin",
                &[&format!("Mon,Thu {start:02}:00-{:02}:00", (start + len) % 24)],
                &["2027-12-20..2028-01-03"],
            );
            let now = datetime!(2026-01-01 00:00 UTC) + time::Duration::minutes(minutes);
            let next = p.next_open(now).unwrap();
            proptest::prop_assert!(next >= now && p.is_open(next));
            let mut t = now;
            while t < next {
                proptest::prop_assert!(!p.is_open(t), "open at {t} before {next}");
                t += time::Duration::minutes(7);
            }
        }
    }
}

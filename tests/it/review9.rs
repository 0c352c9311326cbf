//! The ninth cold review, of the record's continuity (the hold of a credential a restore of the
//! vault secret discarded counts from the read after a gap the client's schedule does not
//! allow: `unpublished.last_seen_at`, `schedule::tolerated_gap`, the planner's restart),
//! against the emulator: clocks, and whether a hold can be made to last forever.

use crate::continuity::{reconcile, record_of, state_db};
use crate::harness::*;
use crate::review7::{recorded, restored_and_seen};
use crate::review8::all_time_passes;

/// Runs `sql` on the state store.
fn sqlite(env: &Env, sql: &str) {
    crate::continuity::sqlite(&state_db(env), sql);
}

/// The daemon's clock steps `by` (forward when positive) relative to Azure's, which stays
/// continuous: everything dated before the step looks `by` older to the daemon, and Azure's
/// `Date` is `ahead_ms` behind the daemon's clock after it.
fn daemon_clock_steps(env: &Env, by: time::Duration, ahead_ms: i64) {
    all_time_passes(env, by);
    env.em.world().state_mut().settings.clock_offset_ms = -ahead_ms;
}

/// Attack: a hold made to last forever. The daemon's clock is 10 minutes ahead of Azure's (the
/// daemon reads it from Azure's `Date` and waits removals out by it; operations.md says rotation
/// goes on), the client is reconciled every minute, regularly. The last unnamed read was
/// recorded on the daemon's clock (ahead) and each read was judged at `now + |skew|`: every gap
/// looked 10 minutes longer than it was, longer than the schedule allows (about 6 to 7
/// minutes), and every read counted the hold from itself. k2 was never removed, and a
/// two-password application waits for its slot for as long (its secret expires). The gap is
/// now measured on Azure's clock (both the last read and this one): k2 goes `overlap` (20
/// minutes) after the first unnamed read, plus the skew removals wait.
#[tokio::test(flavor = "multi_thread")]
async fn review9_a_daemon_clock_ahead_of_azures_does_not_hold_a_discarded_credential_forever() {
    let env = Env::new(Setup::default()).await;
    env.edit_config(EVERY_2_S, "schedule = \"0 * * * * *\"");
    let (k1, k2, _) = restored_and_seen(&env).await;
    // The daemon's clock is 10 minutes ahead of Azure's from now on (as it may be from the
    // start: the first read's record is the daemon's clock then, later, never earlier).
    env.em.world().state_mut().settings.clock_offset_ms = -600_000;
    let mut gone_at = None;
    for step in 1..=9 {
        // Reconciled every 5 minutes: within what an every-minute schedule tolerates.
        crate::review2::time_passes(&env, "app-one", time::Duration::minutes(5));
        env.em.world().clear_journal();
        let said = reconcile(&env).await;
        if !env.live("app-one", &k2) {
            assert_eq!(env.removals(), vec![k2.clone()], "{said}");
            gone_at = Some(step * 5);
            break;
        }
        assert!(
            !said.contains("counted from now"),
            "{} minutes after the first unnamed read, with reads every 5 minutes, the hold counted again:\n{said}",
            step * 5
        );
    }
    // Overlap (20 minutes) and the skew (10) after the first unnamed read.
    let gone_at = gone_at.expect("k2 is never removed: the hold restarts at every read");
    assert!(
        (30..=35).contains(&gone_at),
        "removed {gone_at} minutes after"
    );
    assert!(!recorded(&env, &k2));
    assert!(env.live("app-one", &k1));
    env.assert_foreign_untouched("app-one");
}

/// Attack: a clock put right hides a gap. The hold has lasted 15 minutes of its 20 (reads every
/// 2 seconds, as the tests' schedule is, kept the record continuous). The daemon's clock steps 2
/// minutes ahead, and a read right after records the last unnamed read on it (2 minutes later
/// than the read was); the clock is put right, and the daemon is down for 6 minutes, longer
/// than the schedule allows (about 5), while k2's version comes back and is discarded again.
/// The read after judged the gap from a last read 2 minutes too late: 4 minutes, within the
/// schedule, so the hold counted from the first unnamed read and k2 went at once, though
/// consumers read it until the second discard. Measured on Azure's clock, the gap is 6 minutes,
/// and the hold counts from this read.
#[tokio::test(flavor = "multi_thread")]
async fn review9_a_clock_put_right_after_a_read_ahead_does_not_hide_a_gap() {
    let env = Env::new(Setup::default()).await;
    let (_, k2, v2) = restored_and_seen(&env).await;
    // The hold has lasted 15 minutes, with reads that kept up with the schedule.
    sqlite(&env, "UPDATE unpublished SET seen_at = seen_at - 900;");
    // The daemon's clock steps 2 minutes ahead; a read right after.
    daemon_clock_steps(&env, time::Duration::minutes(2), 120_000);
    let said = reconcile(&env).await;
    assert!(env.live("app-one", &k2), "{said}");
    assert!(
        !said.contains("counted from now"),
        "a step of the clock within the schedule's tolerance restarted the hold:\n{said}"
    );
    // Put right: it steps 2 minutes back.
    daemon_clock_steps(&env, time::Duration::minutes(-2), 0);
    // The daemon down for 6 minutes, while the version comes back and is discarded again.
    env.edit_versions("app-one", |versions| versions.push(v2.clone()));
    crate::review2::time_passes(&env, "app-one", time::Duration::minutes(6));
    env.edit_versions("app-one", |versions| versions.pop());
    env.em.world().clear_journal();
    let said = reconcile(&env).await;
    assert!(
        env.live("app-one", &k2),
        "removed at once, the gap hidden by the clock put right: {:?}\n{said}",
        env.writes()
    );
    assert!(said.contains("counted from now"), "{said}");
    let (first, last) = record_of(&env, &k2).expect("recorded");
    assert!(
        first >= last,
        "first seen again at this read: {first} {last}"
    );
    env.assert_foreign_untouched("app-one");
}

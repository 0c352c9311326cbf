//! The outbox in the state store: events and their pending deliveries, per sink in the order
//! they were emitted. It survives restarts; a delivery row goes when its sink took the event.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use time::OffsetDateTime;

use crate::store::{Cached as _, Result, Store};

/// A pending delivery of one event to one sink.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event_id: String,
    pub kind: String,
    pub body: String,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub created_at: i64,
}

/// What `status`, `/v1/events` and the metrics show of a sink.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkState {
    pub sink: String,
    pub kind: String,
    /// Events not delivered yet.
    pub pending: i64,
    /// Attempts made at the oldest of them.
    pub attempts: u32,
    /// Its oldest undelivered event has failed [`super::deliver::FAILING_AFTER`] times or more.
    pub failing: bool,
    pub last_error: Option<String>,
    pub oldest_pending_at: Option<String>,
    pub next_attempt_at: Option<String>,
}

impl Store {
    /// Stores an event and a delivery for each sink; `Ok(0)` when `dedup` was seen before.
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue_event(
        &self,
        id: &str,
        kind: &str,
        client: &str,
        body: &str,
        dedup: Option<&str>,
        sinks: &[&str],
        now: OffsetDateTime,
    ) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let t = now.unix_timestamp();
        let added = tx.execute_cached(
            "INSERT OR IGNORE INTO events (id, type, client, body, created_at, dedup) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, kind, client, body, t, dedup],
        )?;
        if added == 0 {
            return Ok(0);
        }
        for sink in sinks {
            tx.execute_cached(
                "INSERT INTO deliveries (event_id, sink, seq, attempts, next_attempt_at) VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM deliveries), 0, ?3)",
                params![id, sink, t],
            )?;
        }
        tx.commit()?;
        Ok(sinks.len())
    }

    /// The sink's undelivered events, oldest first.
    pub fn pending_deliveries(&self, sink: &str, limit: i64) -> Result<Vec<Delivery>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT d.event_id, e.type, e.body, d.attempts, d.next_attempt_at, e.created_at
             FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.sink = ?1 ORDER BY d.seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![sink, limit], |r| {
            Ok(Delivery {
                event_id: r.get(0)?,
                kind: r.get(1)?,
                body: r.get(2)?,
                attempts: r.get(3)?,
                next_attempt_at: r.get(4)?,
                created_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The sink took the event: its delivery goes, and the event once no sink waits for it.
    pub fn delivered(&self, event_id: &str, sink: &str) -> Result<()> {
        let conn = self.conn();
        conn.execute_cached(
            "DELETE FROM deliveries WHERE event_id = ?1 AND sink = ?2",
            params![event_id, sink],
        )?;
        conn.execute_cached(
            "DELETE FROM events WHERE id = ?1 AND dedup IS NULL AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id = ?1)",
            params![event_id],
        )?;
        Ok(())
    }

    /// A failed attempt: counted, with when to try again and why it failed.
    pub fn delivery_failed(
        &self,
        event_id: &str,
        sink: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<()> {
        self.conn().execute_cached(
            "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?3, last_error = ?4 WHERE event_id = ?1 AND sink = ?2",
            params![event_id, sink, next_attempt_at, error],
        )?;
        Ok(())
    }

    /// Drops deliveries of events older than `before` (a sink gone for good must not grow the
    /// store forever) and events kept only to remember their dedup key after a month; returns
    /// the dropped deliveries per sink.
    pub fn expire_deliveries(&self, before: i64) -> Result<Vec<(String, i64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT d.sink, COUNT(*) FROM deliveries d JOIN events e ON e.id = d.event_id WHERE e.created_at < ?1 GROUP BY d.sink",
        )?;
        let dropped: Vec<(String, i64)> = stmt
            .query_map(params![before], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        conn.execute_cached(
            "DELETE FROM deliveries WHERE event_id IN (SELECT id FROM events WHERE created_at < ?1)",
            params![before],
        )?;
        conn.execute_cached(
            "DELETE FROM events WHERE NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id = events.id)
             AND (dedup IS NULL OR created_at < ?1 - 30 * 86400)",
            params![before],
        )?;
        Ok(dropped)
    }

    /// The state of one sink, from its pending deliveries.
    pub fn sink_state(&self, sink: &str, kind: &str, failing_after: u32) -> SinkState {
        let conn = self.conn();
        let pending: i64 = conn
            .query_row_cached(
                "SELECT COUNT(*) FROM deliveries WHERE sink = ?1",
                params![sink],
                |r| r.get(0),
            )
            .unwrap_or(0);
        let head: Option<(u32, i64, Option<String>, i64)> = conn
            .query_row_cached(
                "SELECT d.attempts, d.next_attempt_at, d.last_error, e.created_at FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.sink = ?1 ORDER BY d.seq LIMIT 1",
                params![sink],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .ok()
            .flatten();
        let at = crate::status::rfc3339;
        match head {
            None => SinkState {
                sink: sink.to_string(),
                kind: kind.to_string(),
                ..SinkState::default()
            },
            Some((attempts, next, last_error, created)) => SinkState {
                sink: sink.to_string(),
                kind: kind.to_string(),
                pending,
                attempts,
                failing: attempts >= failing_after,
                last_error,
                oldest_pending_at: Some(at(created)),
                next_attempt_at: Some(at(next)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_keeps_order_and_survives_reopening_until_delivered() {
        let tmp = tempfile::tempdir().unwrap();
        let now = crate::clock::now();
        {
            let s = Store::open(tmp.path()).unwrap();
            assert_eq!(
                s.enqueue_event("e1", "published", "c", "{}", None, &["a", "b"], now)
                    .unwrap(),
                2
            );
            s.enqueue_event("e2", "retired", "c", "{}", None, &["a"], now)
                .unwrap();
            // The same dedup key is stored once.
            s.enqueue_event("e3", "expiring", "c", "{}", Some("x"), &["a"], now)
                .unwrap();
            assert_eq!(
                s.enqueue_event("e4", "expiring", "c", "{}", Some("x"), &["a"], now)
                    .unwrap(),
                0
            );
        }
        let s = Store::open(tmp.path()).unwrap();
        let ids = |sink| -> Vec<String> {
            s.pending_deliveries(sink, 10)
                .unwrap()
                .into_iter()
                .map(|d| d.event_id)
                .collect()
        };
        assert_eq!(ids("a"), ["e1", "e2", "e3"]);
        s.delivery_failed("e1", "a", 0, "connection refused")
            .unwrap();
        s.delivery_failed("e1", "a", 0, "connection refused")
            .unwrap();
        let st = s.sink_state("a", "webhook", 2);
        assert!(st.failing && st.pending == 3 && st.attempts == 2, "{st:?}");
        s.delivered("e1", "a").unwrap();
        assert_eq!(ids("a"), ["e2", "e3"]);
        assert_eq!(ids("b"), ["e1"]);
        assert!(!s.sink_state("a", "webhook", 2).failing);
    }
}

//! The store's writes, committed in groups by one thread.
//!
//! Every write of the store ([`super::Store`]'s recording methods) is queued here, and a thread
//! of its own commits whatever has queued up in one transaction, then answers each. A commit costs SQLite its WAL-index locks (`fcntl`) and a write
//! of every page it changed to the WAL, and a synced one an `fdatasync`: a rotation's steps
//! were about a third of the daemon's CPU at 200 clients rotating at once, one transaction
//! each (docs/performance.md, "The state store's writes, committed in groups"). Rotations
//! that reach a step together now share those costs, pages and sync included.
//!
//! - A write is committed when its future resolves, as before: a caller that goes on to
//!   `addPassword` or to Key Vault has its step recorded first.
//! - The store runs at `synchronous = NORMAL`: a commit reaches the disk at the next checkpoint
//!   (a power cut may lose the last ones, a crash of the process loses none). Only the step
//!   written before the Key Vault write needs more ([`super::IntentStep::Publishing`]): taken
//!   back to "verifying" by a power cut, it would say "never published" about a credential
//!   whose value Key Vault may serve. A batch holding such a write is committed at `FULL` (the
//!   WAL synced at the commit), which covers every write before it too. A sync costs 0.06-0.14
//!   ms of CPU here, most of it in the kernel.
//! - One write's failure is its own: the batch is rolled back and each of its writes runs
//!   again in a transaction of its own (a write may run twice; it only touches the store). A
//!   commit that fails fails every write in the batch, each with the same error.
//! - Nothing waits to gather a batch: the thread takes what is queued when it is free, so a
//!   write alone costs what it did, plus the hand-over to the thread.
//! - The workers of the async runtime never wait on a sync: only this thread does (reads
//!   still share the one connection, and wait while a batch holds it).

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::{Cached, Error, Result};

/// At most this many writes in one transaction: a commit's WAL frames grow with its pages, and
/// an answer waits for the whole batch.
const MAX_BATCH: usize = 256;

/// One queued write: what to run and whether its commit must be synced.
pub(super) struct Write {
    op: Box<dyn Op>,
    durable: bool,
}

/// The queue and its thread. Dropping it lets the thread finish what is queued and stop.
pub(super) struct Writer {
    queue: Option<Sender<Write>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub(super) fn start(conn: Arc<Mutex<Connection>>) -> std::io::Result<Writer> {
        let (queue, writes) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&conn, &writes))?;
        Ok(Writer {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queues `f` now (writes commit in the order they are queued) and returns its answer,
    /// due when its batch has committed (synced when `durable`).
    pub(super) fn write<T, F>(&self, durable: bool, f: F) -> Pending<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let write = Write {
            op: Box::new(Call {
                f,
                state: Mutex::new(Answer {
                    value: None,
                    to: Some(answer),
                }),
            }),
            durable,
        };
        match self.queue.as_ref().map(|q| q.send(write)) {
            Some(Ok(())) => Pending(Some(answered)),
            _ => Pending(None),
        }
    }
}

/// The answer to a queued write: resolves once its batch committed (or failed).
#[must_use = "the write is queued: await it for its commit, or `detach` it"]
pub struct Pending<T>(Option<tokio::sync::oneshot::Receiver<Result<T>>>);

impl<T> Pending<T> {
    /// Lets the write commit without waiting for it: for records whose failure changes nothing
    /// the caller does (the writer's order still holds: a later write commits after it).
    pub fn detach(self) {}

    /// Blocks until the answer comes: for tests that run no async runtime.
    #[cfg(test)]
    pub fn wait(self) -> Result<T> {
        futures::executor::block_on(self)
    }
}

impl<T> std::future::Future for Pending<T> {
    type Output = Result<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<T>> {
        match self.0.as_mut() {
            None => std::task::Poll::Ready(Err(Error::WriterStopped)),
            Some(answered) => std::pin::Pin::new(answered)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(Error::WriterStopped))),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has committed what was queued.
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Mutex<Connection>, writes: &Receiver<Write>) {
    let mut batch = Vec::new();
    while let Ok(first) = writes.recv() {
        batch.push(first);
        batch.extend(writes.try_iter().take(MAX_BATCH - 1));
        let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        commit(&conn, &mut batch);
    }
}

/// Commits `batch` (emptied) in one transaction and answers each write. Should any write of
/// it fail, the transaction is rolled back and each write runs again alone, in a transaction of
/// its own, so that it fails alone (a savepoint per write would do the same on the first try,
/// but SQLite then copies every page a write changes to its sub-journal first: 2.7% of the
/// daemon's CPU at 10,000 clients, for failures that hardly ever come).
fn commit(conn: &Connection, batch: &mut Vec<Write>) {
    if batch.len() > 1 {
        let durable = batch.iter().any(|w| w.durable);
        if run_together(conn, batch, durable) {
            batch.clear();
            return;
        }
    }
    for w in batch.drain(..) {
        run_together(conn, std::slice::from_ref(&w), w.durable);
    }
}

/// Runs `writes` in one transaction. When every one succeeds and the commit too, answers each
/// (a failed commit: each gets its error) and returns true. When one fails, rolls back and
/// answers none unless it was the only one (then it gets its error), and returns false.
fn run_together(conn: &Connection, writes: &[Write], durable: bool) -> bool {
    let begun = (|| -> Result<()> {
        if durable {
            conn.execute_cached("PRAGMA synchronous = FULL", [])?;
        }
        conn.execute_cached("BEGIN IMMEDIATE", [])?;
        Ok(())
    })();
    if let Err(e) = begun {
        normal(conn, durable);
        for w in writes.iter() {
            w.op.answer(Err(shared(&e)));
        }
        return true;
    }
    let mut failed = None;
    for w in writes.iter() {
        if let Err(e) = w.op.run(conn) {
            failed = Some(e);
            break;
        }
    }
    let committed = match failed {
        Some(e) => {
            let _ = conn.execute_cached("ROLLBACK", []);
            normal(conn, durable);
            if let [alone] = writes {
                alone.op.answer(Err(e));
                return true;
            }
            return false;
        }
        None => conn
            .execute_cached("COMMIT", [])
            .map(|_| ())
            .map_err(Error::from),
    };
    if committed.is_err() {
        let _ = conn.execute_cached("ROLLBACK", []);
    }
    normal(conn, durable);
    for w in writes.iter() {
        w.op.answer(match &committed {
            Ok(()) => Ok(()),
            Err(e) => Err(shared(e)),
        });
    }
    true
}

/// Back to the store's usual synchronous level after a synced batch.
fn normal(conn: &Connection, durable: bool) {
    if durable {
        let _ = conn.execute_cached("PRAGMA synchronous = NORMAL", []);
    }
}

/// A batch's failure, as each of its writes reports it.
fn shared(e: &Error) -> Error {
    Error::Commit {
        transient: e.is_transient(),
        message: e.to_string(),
    }
}

/// A queued write, type-erased: it may run more than once (see [`commit`]), and is answered
/// once.
trait Op: Send {
    /// Runs the write; its value is kept for the answer.
    fn run(&self, conn: &Connection) -> Result<()>;
    /// Answers the caller: `Ok` gives the value of the last run, an error is given as it is.
    fn answer(&self, result: Result<()>);
}

struct Call<F, T> {
    f: F,
    state: Mutex<Answer<T>>,
}

/// A write's value from its last run, and where its answer goes (taken when answered).
struct Answer<T> {
    value: Option<T>,
    to: Option<tokio::sync::oneshot::Sender<Result<T>>>,
}

impl<T, F> Op for Call<F, T>
where
    T: Send + 'static,
    F: Fn(&Connection) -> Result<T> + Send + 'static,
{
    fn run(&self, conn: &Connection) -> Result<()> {
        // A write that panics (a bug) fails like any other: its transaction is rolled back,
        // the others run again without it, and the thread goes on.
        let value = std::panic::catch_unwind(AssertUnwindSafe(|| (self.f)(conn))).unwrap_or(
            Err(Error::Commit {
                transient: false,
                message: "the write panicked (a bug; see the log)".into(),
            }),
        )?;
        self.state.lock().unwrap_or_else(|p| p.into_inner()).value = Some(value);
        Ok(())
    }

    fn answer(&self, result: Result<()>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let result = result.and_then(|()| state.value.take().ok_or(Error::WriterStopped));
        if let Some(answer) = state.to.take() {
            let _ = answer.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer on a fresh database with one table, and the connection it shares.
    fn writer() -> (tempfile::TempDir, Arc<Mutex<Connection>>, Writer) {
        let tmp = tempfile::tempdir().unwrap();
        let conn = Connection::open(tmp.path().join("t.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
            .unwrap();
        let conn = Arc::new(Mutex::new(conn));
        let writer = Writer::start(conn.clone()).unwrap();
        (tmp, conn, writer)
    }

    fn insert(w: &Writer, k: &str, v: i64) -> Pending<()> {
        let k = k.to_string();
        w.write(false, move |c| {
            c.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", (&k, v))?;
            Ok(())
        })
    }

    fn rows(conn: &Mutex<Connection>) -> Vec<(String, i64)> {
        let conn = conn.lock().unwrap();
        let mut stmt = conn.prepare("SELECT k, v FROM t ORDER BY k").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// Queues `n` writes while the connection is held, so that the writer takes them as one
    /// batch once it is let go.
    fn batch_of<T>(conn: &Mutex<Connection>, queue: impl FnOnce() -> T) -> T {
        let held = conn.lock().unwrap();
        let queued = queue();
        // The writer takes the first write and waits for the connection; the rest queue up
        // behind it and come in the same batch... unless it took the first before the others
        // were queued, which the time below makes unlikely but does not rule out: the
        // assertions hold for any split into batches.
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(held);
        queued
    }

    #[test]
    fn a_failed_write_is_rolled_back_alone_and_the_rest_of_its_batch_commits() {
        let (_tmp, conn, w) = writer();
        insert(&w, "a", 0).wait().unwrap();
        let (first, duplicate, partial, last, counted) = batch_of(&conn, || {
            (
                insert(&w, "b", 1),
                // Fails: "a" exists.
                insert(&w, "a", 2),
                // Changes a row, then fails: its change must not commit.
                w.write(false, |c| {
                    c.execute("UPDATE t SET v = 99 WHERE k = 'b'", [])?;
                    c.execute("INSERT INTO t (k, v) VALUES ('a', 3)", [])?;
                    Ok(())
                }),
                insert(&w, "c", 4),
                // A value computed in a batch that failed is computed again when the write
                // runs alone, and answered once.
                w.write(false, |c| {
                    c.execute("INSERT INTO t (k, v) VALUES ('d', 5)", [])?;
                    Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))?)
                }),
            )
        });
        first.wait().unwrap();
        let e = duplicate.wait().unwrap_err();
        assert!(e.to_string().contains("UNIQUE"), "{e}");
        assert!(partial.wait().is_err());
        last.wait().unwrap();
        assert_eq!(counted.wait().unwrap(), 4);
        assert_eq!(
            rows(&conn),
            [
                ("a".into(), 0),
                ("b".into(), 1),
                ("c".into(), 4),
                ("d".into(), 5)
            ]
        );
    }

    #[test]
    fn writes_commit_in_the_order_they_were_queued() {
        let (_tmp, conn, w) = writer();
        let set = |v: i64| {
            w.write(false, move |c| {
                c.execute(
                    "INSERT INTO t (k, v) VALUES ('x', ?1) ON CONFLICT(k) DO UPDATE SET v = ?1",
                    [v],
                )?;
                Ok(())
            })
        };
        let pending: Vec<_> = batch_of(&conn, || (1..=20).map(set).collect());
        // The answers are dropped unread but the writes still commit, in order.
        drop(pending);
        set(21).wait().unwrap();
        assert_eq!(rows(&conn), [("x".into(), 21)]);
        let last_of_twenty: Vec<_> = (30..=50).map(set).collect();
        for p in last_of_twenty {
            p.detach();
        }
        set(51).wait().unwrap();
        assert_eq!(rows(&conn), [("x".into(), 51)]);
    }

    #[test]
    fn a_synced_write_leaves_the_store_at_its_usual_level_and_its_batch_committed() {
        let (_tmp, conn, w) = writer();
        let (plain, synced) = batch_of(&conn, || {
            (
                insert(&w, "a", 1),
                w.write(true, |c| {
                    // Inside the batch's transaction the level asked for is in force.
                    let level: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
                    c.execute("INSERT INTO t (k, v) VALUES ('s', ?1)", [level])?;
                    Ok(())
                }),
            )
        });
        plain.wait().unwrap();
        synced.wait().unwrap();
        // FULL is 2, NORMAL 1.
        assert_eq!(rows(&conn), [("a".into(), 1), ("s".into(), 2)]);
        let level: i64 = conn
            .lock()
            .unwrap()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(level, 1);
    }

    #[test]
    fn a_write_that_panics_fails_alone_and_the_writer_goes_on() {
        let (_tmp, conn, w) = writer();
        let (before, panics, after) = batch_of(&conn, || {
            (
                insert(&w, "a", 1),
                w.write(false, |c| -> Result<()> {
                    c.execute("INSERT INTO t (k, v) VALUES ('p', 0)", [])?;
                    panic!("a bug in a write");
                }),
                insert(&w, "b", 2),
            )
        });
        before.wait().unwrap();
        let e = panics.wait().unwrap_err();
        assert!(e.to_string().contains("panicked"), "{e}");
        after.wait().unwrap();
        insert(&w, "c", 3).wait().unwrap();
        assert_eq!(
            rows(&conn),
            [("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]
        );
    }

    #[test]
    fn a_write_queued_before_the_writer_is_dropped_is_committed() {
        let (_tmp, conn, w) = writer();
        let queued = insert(&w, "a", 1);
        drop(w);
        queued.wait().unwrap();
        assert_eq!(rows(&conn), [("a".into(), 1)]);
    }

    #[test]
    fn a_batch_that_cannot_take_the_write_lock_fails_each_write_and_the_next_one_commits() {
        let (tmp, conn, w) = writer();
        conn.lock()
            .unwrap()
            .busy_timeout(std::time::Duration::from_millis(100))
            .unwrap();
        // Another process (the command line) holds the write lock past the busy timeout.
        let other = Connection::open(tmp.path().join("t.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (a, b) = batch_of(&conn, || (insert(&w, "a", 1), insert(&w, "b", 2)));
        for e in [a.wait().unwrap_err(), b.wait().unwrap_err()] {
            assert!(e.is_transient(), "{e}");
        }
        other.execute_batch("COMMIT").unwrap();
        // The connection is not left in a transaction: the next write commits on its own.
        insert(&w, "c", 3).wait().unwrap();
        assert_eq!(rows(&conn), [("c".into(), 3)]);
        assert!(conn.lock().unwrap().is_autocommit());
    }
}

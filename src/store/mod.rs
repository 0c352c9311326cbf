//! The embedded state store: SQLite in `state.dir`, plus the per-client locks (`locks/clients.lock`).
//!
//! It holds attempts in flight (intents), per-client failure backoff, the rotation history
//! that `status` shows, and when a read first showed a published credential named by no
//! version. It is not authoritative: Entra (credentials and their markers) and Key
//! Vault (versions and their tags) are, so losing it loses no secret and no correctness. It
//! never holds a secret value.
//!
//! Over 1,700 lines: about 660 of them are tests; the schema, its migrations and the queries on
//! the rotation's tables stay together so that a schema change is seen whole (the outbox's are
//! in `events/outbox.rs`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, Params, Row, params};
use serde::Serialize;
use time::OffsetDateTime;

/// Forward migrations; entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE intents (
        rotation_id TEXT PRIMARY KEY,
        client TEXT NOT NULL,
        step TEXT NOT NULL,
        key_id TEXT,
        started_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        pid INTEGER NOT NULL
    );
    CREATE INDEX intents_client ON intents(client);
    CREATE TABLE backoff (
        client TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        last_error TEXT
    );
    CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        client TEXT NOT NULL,
        at INTEGER NOT NULL,
        result TEXT NOT NULL,
        rotation_id TEXT,
        key_id TEXT,
        message TEXT
    );
    CREATE INDEX history_client ON history(client, id);
    CREATE TABLE clients (
        client TEXT PRIMARY KEY,
        published_key_id TEXT,
        published_version TEXT,
        expires_at INTEGER,
        next_rotation_at INTEGER,
        last_result TEXT,
        last_error TEXT,
        last_success_at INTEGER,
        updated_at INTEGER NOT NULL
    );",
    // Version 2: where each client's credentials were made for, by location tag. A credential's
    // marker carries only the tag (a hash); this is the address behind it, so that a location
    // the client has left can still be read for evidence.
    "CREATE TABLE locations (
        client TEXT NOT NULL,
        tag TEXT NOT NULL,
        key_vault_url TEXT NOT NULL,
        secret_name TEXT NOT NULL,
        seen_at INTEGER NOT NULL,
        PRIMARY KEY (client, tag)
    );",
    // Version 3: the events outbox (src/events): each event once, and one delivery row per sink that wants
    // it, removed when delivered. The history index serves the rotation budget's count.
    "CREATE TABLE events (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        client TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        dedup TEXT UNIQUE
    );
    CREATE TABLE deliveries (
        event_id TEXT NOT NULL,
        sink TEXT NOT NULL,
        seq INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_error TEXT,
        PRIMARY KEY (event_id, sink)
    );
    CREATE INDEX deliveries_sink ON deliveries(sink, seq);
    CREATE INDEX history_result_at ON history(result, at);",
    // Version 4: when a read of the vault first showed that no version names an own credential
    // this store knows was published (a restore of the vault secret from a backup discards the
    // versions written after it): its overlap counts from then (`plan`, the hold after a
    // restore).
    "CREATE TABLE unpublished (
        client TEXT NOT NULL,
        key_id TEXT NOT NULL,
        seen_at INTEGER NOT NULL,
        PRIMARY KEY (client, key_id)
    );",
    // Version 5: when a read last showed such a credential named by no version (each reconcile
    // that holds it writes it): a read after a gap longer than the client's schedule allows
    // counts the hold again from itself (`plan`, the record's continuity). A record of version
    // 4 was last seen when it was first seen, as far as the store knows.
    "ALTER TABLE unpublished ADD COLUMN last_seen_at INTEGER NOT NULL DEFAULT 0;
    UPDATE unpublished SET last_seen_at = seen_at;",
];

/// What went wrong in the state store. Callers tell by [`Error::is_transient`] whether waiting
/// may heal it: a database busy or locked by another process past SQLite's busy timeout, an
/// interrupted system call. The rest needs the operator (the state dir's owner, mode, space, a
/// file planted in it, a state file from a newer release) or is a bug.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state dir (or its `locks` dir) is not safe to use, or cannot be made.
    #[error("{context}: {message}")]
    StateDir { context: String, message: String },
    /// A name in the state dir that must be a regular file of ours is something else.
    #[error("{} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    /// A file in the state dir could not be opened, created or locked.
    #[error("{context}: {error}")]
    Io {
        context: String,
        error: std::io::Error,
    },
    /// The state file was written by a newer secret-rotator.
    #[error(
        "{} has schema version {found}, newer than this secret-rotator knows ({known}); upgrade secret-rotator or move the state dir aside (it is rebuilt from Azure)",
        .path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: usize,
        known: usize,
    },
    /// SQLite failed a statement.
    #[error("{}{error}", .context.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
    Sqlite {
        context: Option<String>,
        error: rusqlite::Error,
    },
    /// The transaction a write was committed in failed as a whole (each of its writes reports
    /// the same error).
    #[error("committing the state store's writes: {message}")]
    Commit { transient: bool, message: String },
    /// The thread that commits the writes is gone (a bug).
    #[error("the state store's writer has stopped")]
    WriterStopped,
}

impl Error {
    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Sqlite { error, .. } => matches!(
                error.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            ),
            Error::Io { error, .. } => matches!(
                error.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
            ),
            Error::Commit { transient, .. } => *transient,
            Error::StateDir { .. }
            | Error::NotAFile(_)
            | Error::NewerSchema { .. }
            | Error::WriterStopped => false,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Error {
        Error::Sqlite {
            context: None,
            error,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Says what the store was doing when a call failed, as `anyhow::Context` would.
trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, rusqlite::Error> {
    fn context(self, what: &str) -> Result<T> {
        self.with_context(|| what.to_string())
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|error| Error::Sqlite {
            context: Some(what()),
            error,
        })
    }
}

impl<T> Context<T> for std::io::Result<T> {
    fn context(self, what: &str) -> Result<T> {
        self.with_context(|| what.to_string())
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|error| Error::Io {
            context: what(),
            error,
        })
    }
}

/// `files::private_dir`'s refusals (owner, mode, a link) are already sentences.
impl<T> Context<T> for std::result::Result<T, anyhow::Error> {
    fn context(self, what: &str) -> Result<T> {
        self.with_context(|| what.to_string())
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::StateDir {
            context: what(),
            message: format!("{e:#}"),
        })
    }
}

/// Statements are parsed once per connection and kept: SQLite parsing a statement costs several
/// times what running it does, and a rotation runs about twenty.
pub(crate) trait Cached {
    fn execute_cached<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn query_row_cached<T, P: Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn execute_cached<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
    fn query_row_cached<T, P: Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// Distinct statements the store and the outbox run (rusqlite keeps 16 by default).
const STATEMENT_CACHE: usize = 64;

/// Runs `f` in one read transaction: the reads see one state of the store, and SQLite takes
/// and drops its WAL-index read lock once (two `fcntl` calls, four when a write moved the read
/// mark since the last read) instead of once per statement.
fn in_read_transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    conn.execute_cached("BEGIN", [])?;
    let value = f(conn);
    // Nothing was written: COMMIT only ends the transaction. Should it fail, ROLLBACK does.
    if let Err(e) = conn.execute_cached("COMMIT", []) {
        let _ = conn.execute_cached("ROLLBACK", []);
        value?;
        return Err(e.into());
    }
    value
}

/// The message of a `rotated` history row: the version the rotation wrote, which
/// [`Store::published_credential`] looks up.
pub fn published_message(version: &str) -> String {
    format!("published version {version}")
}

/// History rows kept per client.
const HISTORY_PER_CLIENT: i64 = 200;

mod writer;

pub use writer::Pending;

pub struct Store {
    dir: PathBuf,
    /// Shared by the reads (any thread) and the writer's thread.
    conn: Arc<Mutex<Connection>>,
    writer: writer::Writer,
}

/// How far an attempt got, as its intent records it. Only an attempt that reached
/// [`IntentStep::Publishing`] can have sent its value to Key Vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentStep {
    /// Recorded before `addPassword` is sent.
    Adding,
    /// `addPassword` was sent and its answer lost: whether it made a credential is unknown.
    AddOutcomeUnknown,
    /// The credential exists (its key id is recorded); its secret is being verified.
    Verifying,
    /// About to write the value to Key Vault, or written.
    Publishing,
}

impl IntentStep {
    /// The store's text for the step (what the `intents` table holds since schema 1).
    pub const fn as_str(self) -> &'static str {
        match self {
            IntentStep::Adding => "adding",
            IntentStep::AddOutcomeUnknown => "add-unknown",
            IntentStep::Verifying => "verifying",
            IntentStep::Publishing => "publishing",
        }
    }

    /// Reads a stored step. A step this version does not know (written by a newer one) is
    /// read as `Publishing`: the reading that removes nothing early.
    fn from_stored(s: &str) -> IntentStep {
        match s {
            "adding" => IntentStep::Adding,
            "add-unknown" => IntentStep::AddOutcomeUnknown,
            "verifying" => IntentStep::Verifying,
            _ => IntentStep::Publishing,
        }
    }

    /// Whether the attempt may have written its value to Key Vault.
    pub const fn may_have_published(self) -> bool {
        matches!(self, IntentStep::Publishing)
    }
}

/// An attempt recorded before `addPassword` and removed when it is done or cleaned up.
#[derive(Debug, Clone)]
pub struct Intent {
    pub rotation_id: String,
    pub client: String,
    pub step: IntentStep,
    pub key_id: Option<String>,
    pub started_at: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Backoff {
    pub failures: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

/// What `status` and `/v1/clients` show for a client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClientRow {
    pub client: String,
    pub published_key_id: Option<String>,
    pub published_version: Option<String>,
    pub expires_at: Option<i64>,
    pub next_rotation_at: Option<i64>,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    pub last_success_at: Option<i64>,
    pub updated_at: i64,
}

/// An own credential the store knows was published for a client: a rotation recorded
/// publishing it, or the client's status row names it as the published one (what the last
/// reconcile saw), or a read already showed it named by no version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPublished {
    pub key_id: String,
    /// When a read of the vault first showed it named by no version (unix seconds); `None`:
    /// not yet (or it is named again).
    pub unpublished_seen_at: Option<i64>,
    /// When a read last showed it named by no version (unix seconds, on Azure's clock: earlier
    /// than `unpublished_seen_at` by the skew when the daemon's clock is ahead); `None` exactly
    /// when `unpublished_seen_at` is.
    pub unpublished_last_seen_at: Option<i64>,
}

/// A record of [`Store::record_unpublished`]: key id, when first and when last seen named by
/// no version.
type UnnamedRow = (String, i64, i64);

/// A location a client has been at: the address behind a location tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationRow {
    pub tag: String,
    pub key_vault_url: String,
    pub secret_name: String,
    pub seen_at: i64,
}

/// What the store holds about one client that its reconcile reads, all read at the start of the
/// observation in one transaction ([`Store::records`]) instead of a transaction a read. Under
/// the client's lock no other process or task writes these rows, so they are what a read at any
/// later point of the reconcile would give.
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// The client's intents; empty when not asked for (without the client's lock, an intent may
    /// be an attempt in flight).
    pub intents: Vec<Intent>,
    /// Every location recorded for the client, earliest arrival first.
    pub locations: Vec<LocationRow>,
    /// The client's status row.
    pub row: Option<ClientRow>,
    /// The client's `rotated` history rows, newest first: message and key id.
    rotated: Vec<(Option<String>, Option<String>)>,
    /// The client's records of [`Store::record_unpublished`].
    unpublished: Vec<UnnamedRow>,
}

impl Records {
    /// Since when the client has been at the location `tag` without a move in between: its
    /// row's `seen_at` when that row is the newest, else `None` (it is arriving now, or the
    /// store does not know).
    pub fn arrived_at(&self, tag: &str) -> Option<i64> {
        let row = self.locations.iter().find(|r| r.tag == tag)?;
        let newest = self
            .locations
            .iter()
            .all(|r| r.tag == tag || r.seen_at < row.seen_at);
        newest.then_some(row.seen_at)
    }

    /// Whether recording the client at `at` and forgetting the locations not in `keep`
    /// ([`Store::move_location`]) would change nothing: the location is recorded with this
    /// address as the newest, and no other is recorded that `keep` does not name. Such a write
    /// is not made (`record_location` keeps `seen_at` while the client stays).
    pub fn location_unchanged(&self, at: &Place<'_>) -> bool {
        self.locations
            .iter()
            .all(|r| at.keep.contains(&r.tag.as_str()))
            && self.arrived_at(at.tag).is_some()
            && self.locations.iter().any(|r| {
                r.tag == at.tag
                    && r.key_vault_url == at.key_vault_url
                    && r.secret_name == at.secret_name
            })
    }

    /// The key id of the credential whose value this installation published as `version`, as
    /// the history recorded it when the write succeeded (the newest such record); `None` when
    /// there is none (another writer's version, or a history lost or pruned).
    pub fn published_credential(&self, version: &str) -> Option<String> {
        let message = published_message(version);
        self.rotated
            .iter()
            .find(|(m, _)| m.as_deref() == Some(message.as_str()))
            .and_then(|(_, key_id)| key_id.clone())
    }

    /// The own credentials the client is known to have published (see [`KnownPublished`]),
    /// each with when a read first showed it named by no version: the rotations' records, the
    /// status row and the records of [`Store::record_unpublished`], by key id as stored. A record
    /// older than a status row that names its credential as the published one is stale (a
    /// reconcile saw it published again since, and a reconcile with nothing else to look at
    /// does not read these records to forget it): it reads as no record, so a later discard
    /// counts from its own first read, never from the earlier one.
    pub fn known_published(&self) -> Vec<KnownPublished> {
        let published = self
            .row
            .as_ref()
            .and_then(|r| r.published_key_id.as_deref());
        let keys: std::collections::BTreeSet<&str> = self
            .rotated
            .iter()
            .filter_map(|(_, k)| k.as_deref())
            .chain(published)
            .chain(self.unpublished.iter().map(|(k, _, _)| k.as_str()))
            .collect();
        keys.into_iter()
            .map(|key_id| {
                let stale = |seen_at: i64| {
                    self.row.as_ref().is_some_and(|r| {
                        r.published_key_id.as_deref() == Some(key_id) && r.updated_at > seen_at
                    })
                };
                let record = self
                    .unpublished
                    .iter()
                    .find(|(k, _, _)| k == key_id)
                    .filter(|(_, seen_at, _)| !stale(*seen_at));
                KnownPublished {
                    key_id: key_id.to_string(),
                    unpublished_seen_at: record.map(|(_, seen_at, _)| *seen_at),
                    unpublished_last_seen_at: record.map(|(_, _, last)| *last),
                }
            })
            .collect()
    }

    /// Whether the store holds a record of [`Store::record_unpublished`] for the client.
    pub fn has_unpublished(&self) -> bool {
        !self.unpublished.is_empty()
    }
}

/// Where a client is ([`Store::move_location`], [`Records::location_unchanged`]): the location
/// tag, the address behind it, when it is recorded, and the tags to keep (the others are
/// forgotten).
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub tag: &'a str,
    pub key_vault_url: &'a str,
    pub secret_name: &'a str,
    pub keep: &'a [&'a str],
    pub now: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    pub at: i64,
    pub result: String,
    pub rotation_id: Option<String>,
    pub key_id: Option<String>,
    pub message: Option<String>,
}

impl Store {
    /// Opens (creating owner-only when missing) and migrates the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        crate::files::private_dir(dir).context("state dir")?;
        crate::files::private_dir(&dir.join("locks")).context("state dir")?;
        let path = dir.join("state.db");
        // SQLite opens by name: the name must be a file of ours, not a link planted for it.
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => {}
            Ok(_) => return Err(Error::NotAFile(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::files::write_new_private(&path, b"")
                    .with_context(|| format!("creating {}", path.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        let conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate(&conn, &path)?;
        let conn = Arc::new(Mutex::new(conn));
        let writer = writer::Writer::start(conn.clone())
            .context("starting the state store's writer thread")?;
        Ok(Store {
            dir: dir.to_path_buf(),
            conn,
            writer,
        })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the client's lock without waiting; `None` when another process or task holds it.
    ///
    /// Every client's lock is a one-byte record lock in the one file `locks/clients.lock`, at an
    /// offset given by the client's name (`lock_offset`): an exclusive `fcntl` lock of the
    /// open file description (`F_OFD_SETLK`), so that two opens of the file conflict whether
    /// they are in one process or two, and the lock goes when this open is closed (the value
    /// dropped, or the process gone). No file is created per client: creating one cost each
    /// client's first reconcile more kernel time than the rest of its rotation.
    pub fn try_lock(&self, client: &str) -> Result<Option<ClientLock>> {
        let path = self.dir.join("locks").join(LOCK_FILE);
        let file = crate::files::open_lock(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let range = nix::libc::flock {
            l_type: nix::libc::F_WRLCK as nix::libc::c_short,
            l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
            l_start: lock_offset(client),
            l_len: 1,
            l_pid: 0,
        };
        match nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_OFD_SETLK(&range)) {
            Ok(_) => Ok(Some(ClientLock { _file: file })),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(None),
            Err(e) => Err(std::io::Error::from(e))
                .with_context(|| format!("locking {client} in {}", path.display())),
        }
    }

    /// Waits up to `wait` for the client's lock.
    pub async fn lock(&self, client: &str, wait: Duration) -> Result<Option<ClientLock>> {
        let start = std::time::Instant::now();
        loop {
            if let Some(l) = self.try_lock(client)? {
                return Ok(Some(l));
            }
            if start.elapsed() >= wait {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Records an attempt before its `addPassword` is sent. Committed at `NORMAL`, not synced:
    /// a crash of the process loses nothing, and a power cut that takes it back leaves a
    /// credential without an intent, which the orphan rule removes (as after a lost state dir).
    /// The step that precedes the Key Vault write is synced, and with it every commit before
    /// it, this one included.
    pub fn begin_intent(
        &self,
        rotation_id: &str,
        client: &str,
        now: OffsetDateTime,
    ) -> Pending<()> {
        let t = now.unix_timestamp();
        let (rotation_id, client) = (rotation_id.to_owned(), client.to_owned());
        self.writer.write(false, move |conn| {
            conn.execute_cached(
                "INSERT INTO intents (rotation_id, client, step, key_id, started_at, updated_at, pid) VALUES (?1, ?2, ?3, NULL, ?4, ?4, ?5)",
                params![rotation_id, client, IntentStep::Adding.as_str(), t, std::process::id()],
            )?;
            Ok(())
        })
    }

    /// Records how far an attempt got. The step that says it may publish
    /// ([`IntentStep::Publishing`]) is on disk when this returns (its commit is synced, see
    /// `src/store/writer.rs`): the Key Vault write it precedes follows at once.
    pub fn intent_step(
        &self,
        rotation_id: &str,
        step: IntentStep,
        key_id: Option<&str>,
        now: OffsetDateTime,
    ) -> Pending<()> {
        let (rotation_id, key_id) = (rotation_id.to_owned(), key_id.map(str::to_owned));
        self.writer.write(step.may_have_published(), move |conn| {
            conn.execute_cached(
                "UPDATE intents SET step = ?2, key_id = COALESCE(?3, key_id), updated_at = ?4 WHERE rotation_id = ?1",
                params![rotation_id, step.as_str(), key_id, now.unix_timestamp()],
            )?;
            Ok(())
        })
    }

    pub fn end_intent(&self, rotation_id: &str) -> Pending<()> {
        let rotation_id = rotation_id.to_owned();
        self.writer
            .write(false, move |conn| end_intent(conn, &rotation_id))
    }

    /// Ends a published attempt's intent and records the rotation in its history, in one
    /// transaction.
    pub fn end_published(
        &self,
        rotation_id: &str,
        client: &str,
        now: OffsetDateTime,
        key_id: &str,
        version: &str,
    ) -> Pending<()> {
        let (rotation_id, client, key_id) =
            (rotation_id.to_owned(), client.to_owned(), key_id.to_owned());
        let message = published_message(version);
        self.writer.write(false, move |conn| {
            end_intent(conn, &rotation_id)?;
            record_history(
                conn,
                &client,
                now,
                "rotated",
                Some(&rotation_id),
                Some(&key_id),
                Some(&message),
            )
        })
    }

    pub fn intents(&self, client: &str) -> Result<Vec<Intent>> {
        intents(&self.conn(), client)
    }

    /// What a reconcile of `client` reads from the store (see [`Records`]), in one read
    /// transaction; its intents only when `with_intents`.
    pub fn records(&self, client: &str, with_intents: bool) -> Result<Records> {
        in_read_transaction(&self.conn(), |conn| {
            Ok(Records {
                intents: if with_intents {
                    intents(conn, client)?
                } else {
                    Vec::new()
                },
                locations: locations(conn, client)?,
                row: client_row(conn, client)?,
                rotated: rotated(conn, client)?,
                unpublished: unpublished(conn, client)?,
            })
        })
    }

    pub fn backoff(&self, client: &str) -> Result<Backoff> {
        Ok(self
            .conn()
            .query_row_cached(
                "SELECT failures, next_attempt_at, last_error FROM backoff WHERE client = ?1",
                params![client],
                |r| {
                    Ok(Backoff {
                        failures: r.get(0)?,
                        next_attempt_at: r.get(1)?,
                        last_error: r.get(2)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }

    /// When each client's persisted backoff ends (clients without one are absent): read once
    /// at start-up instead of one query per client.
    pub fn backoffs(&self) -> Result<std::collections::HashMap<String, i64>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT client, next_attempt_at FROM backoff")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    pub fn set_backoff(&self, client: &str, b: &Backoff) -> Pending<()> {
        let (client, b) = (client.to_owned(), b.clone());
        self.writer.write(false, move |conn| {
            conn.execute_cached(
                "INSERT INTO backoff (client, failures, next_attempt_at, last_error) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(client) DO UPDATE SET failures = ?2, next_attempt_at = ?3, last_error = ?4",
                params![client, b.failures, b.next_attempt_at, b.last_error],
            )?;
            Ok(())
        })
    }

    pub fn clear_backoff(&self, client: &str) -> Pending<()> {
        let client = client.to_owned();
        self.writer.write(false, move |conn| {
            conn.execute_cached("DELETE FROM backoff WHERE client = ?1", params![client])?;
            Ok(())
        })
    }

    pub fn record_history(
        &self,
        client: &str,
        now: OffsetDateTime,
        result: &str,
        rotation_id: Option<&str>,
        key_id: Option<&str>,
        message: Option<&str>,
    ) -> Pending<()> {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        let (client, result) = (client.to_owned(), result.to_owned());
        let (rotation_id, key_id, message) = (owned(rotation_id), owned(key_id), owned(message));
        self.writer.write(false, move |conn| {
            record_history(
                conn,
                &client,
                now,
                &result,
                rotation_id.as_deref(),
                key_id.as_deref(),
                message.as_deref(),
            )
        })
    }

    pub fn history(&self, client: &str, limit: i64) -> Result<Vec<HistoryRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT at, result, rotation_id, key_id, message FROM history WHERE client = ?1 ORDER BY id DESC LIMIT ?2")?;
        let rows = stmt.query_map(params![client, limit], |r| {
            Ok(HistoryRow {
                at: r.get(0)?,
                result: r.get(1)?,
                rotation_id: r.get(2)?,
                key_id: r.get(3)?,
                message: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// [`Records::published_credential`] of `client`.
    pub fn published_credential(&self, client: &str, version: &str) -> Result<Option<String>> {
        let records = Records {
            rotated: rotated(&self.conn(), client)?,
            ..Records::default()
        };
        Ok(records.published_credential(version))
    }

    /// The own credentials `client` is known to have published: [`Records::known_published`].
    pub fn known_published(&self, client: &str) -> Result<Vec<KnownPublished>> {
        Ok(self.records(client, false)?.known_published())
    }

    /// Records that a read showed each of `first_seen` and `still_unnamed` named by no version
    /// of `client`'s secret, in one transaction: `seen` for a first time (no earlier than the
    /// read on either clock), `last` for the last (on Azure's clock, as the planner measures
    /// the gap after it). `first_seen`: the hold counts from this read (no record, a stale one,
    /// see [`Store::known_published`], or one whose continuity the planner found broken): first
    /// and last seen now, whatever was recorded. `still_unnamed`: a record the hold counts from;
    /// its first time stays (the overlap counts from it), its last becomes `last` (first seen
    /// `seen` too when there is none).
    pub fn record_unpublished(
        &self,
        client: &str,
        first_seen: &[String],
        still_unnamed: &[String],
        seen: OffsetDateTime,
        last: OffsetDateTime,
    ) -> Pending<()> {
        let (client, first_seen, still_unnamed) = (
            client.to_owned(),
            first_seen.to_vec(),
            still_unnamed.to_vec(),
        );
        self.writer.write(false, move |conn| {
            for key_id in &first_seen {
                conn.execute_cached(
                    "INSERT INTO unpublished (client, key_id, seen_at, last_seen_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(client, key_id) DO UPDATE SET seen_at = excluded.seen_at, last_seen_at = excluded.last_seen_at",
                    params![client, key_id, seen.unix_timestamp(), last.unix_timestamp()],
                )?;
            }
            for key_id in &still_unnamed {
                conn.execute_cached(
                    "INSERT INTO unpublished (client, key_id, seen_at, last_seen_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(client, key_id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
                    params![client, key_id, seen.unix_timestamp(), last.unix_timestamp()],
                )?;
            }
            Ok(())
        })
    }

    /// Forgets the records of [`Store::record_unpublished`] for `key_ids` (named again, or
    /// gone from the application).
    pub fn forget_unpublished(&self, client: &str, key_ids: &[String]) -> Pending<()> {
        let (client, key_ids) = (client.to_owned(), key_ids.to_vec());
        self.writer.write(false, move |conn| {
            for key_id in &key_ids {
                conn.execute_cached(
                    "DELETE FROM unpublished WHERE client = ?1 AND key_id = ?2",
                    params![client, key_id],
                )?;
            }
            Ok(())
        })
    }

    /// When the rotations that published since `since` (unix seconds) happened, across every
    /// client: what the rotation budget has used.
    pub fn rotations_since(&self, since: i64) -> Result<Vec<i64>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT at FROM history WHERE result = 'rotated' AND at > ?1")?;
        let rows = stmt.query_map(params![since], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes the client's status row (`last_success_at` kept when `row` has none).
    pub fn upsert_client(&self, row: &ClientRow) -> Pending<()> {
        let row = row.clone();
        self.writer
            .write(false, move |conn| upsert_client(conn, &row))
    }

    /// The status row of a reconcile that failed: the row as it is stored (or an empty one), as
    /// `change` makes it, read and written in one transaction. Returns the row written.
    pub fn record_failure(
        &self,
        client: &str,
        change: impl Fn(&mut ClientRow) + Send + 'static,
    ) -> Pending<ClientRow> {
        let client = client.to_owned();
        self.writer.write(false, move |conn| {
            let mut row = client_row(conn, &client)?.unwrap_or_default();
            row.client.clone_from(&client);
            change(&mut row);
            upsert_client(conn, &row)?;
            Ok(row)
        })
    }

    /// Records that `client` is at this location now (its credentials are made for it).
    /// `seen_at` is when the client arrived there: set when the location is not already the
    /// one the client was last recorded at, kept while it stays. The newest row is where the
    /// client is, and its `seen_at` is no earlier than when it left every other one.
    pub fn record_location(
        &self,
        client: &str,
        tag: &str,
        key_vault_url: &str,
        secret_name: &str,
        now: OffsetDateTime,
    ) -> Pending<()> {
        let at: [String; 4] = [client, tag, key_vault_url, secret_name].map(str::to_owned);
        self.writer.write(false, move |conn| {
            let [client, tag, key_vault_url, secret_name] = &at;
            record_location(conn, client, tag, key_vault_url, secret_name, now)
        })
    }

    /// Since when `client` has been at the location `tag` without a move in between: its row's
    /// `seen_at` when that row is the newest, else `None` (it is arriving now, or the store
    /// does not know).
    pub fn arrived_at(&self, client: &str, tag: &str) -> Result<Option<i64>> {
        Ok(self.records(client, false)?.arrived_at(tag))
    }

    /// Every location recorded for `client`.
    pub fn locations(&self, client: &str) -> Result<Vec<LocationRow>> {
        locations(&self.conn(), client)
    }

    /// Forgets the locations of `client` whose tag is not in `keep` (no credential is made for
    /// them any more).
    pub fn forget_locations(&self, client: &str, keep: &[&str]) -> Pending<()> {
        let client = client.to_owned();
        let keep: Vec<String> = keep.iter().map(|k| k.to_string()).collect();
        self.writer.write(false, move |conn| {
            let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
            forget_locations(conn, &client, &keep)
        })
    }

    /// [`Store::record_location`] then [`Store::forget_locations`], in one transaction.
    pub fn move_location(&self, client: &str, at: &Place<'_>) -> Pending<()> {
        let client = client.to_owned();
        let [tag, key_vault_url, secret_name] =
            [at.tag, at.key_vault_url, at.secret_name].map(str::to_owned);
        let keep: Vec<String> = at.keep.iter().map(|k| k.to_string()).collect();
        let now = at.now;
        self.writer.write(false, move |conn| {
            let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
            let at = Place {
                tag: &tag,
                key_vault_url: &key_vault_url,
                secret_name: &secret_name,
                keep: &keep,
                now,
            };
            move_location(conn, &client, &at)
        })
    }

    pub fn client_row(&self, client: &str) -> Result<Option<ClientRow>> {
        client_row(&self.conn(), client)
    }
}

fn intents(conn: &Connection, client: &str) -> Result<Vec<Intent>> {
    let mut stmt = conn.prepare_cached("SELECT rotation_id, client, step, key_id, started_at FROM intents WHERE client = ?1 ORDER BY started_at")?;
    let rows = stmt.query_map(params![client], |r| {
        Ok(Intent {
            rotation_id: r.get(0)?,
            client: r.get(1)?,
            step: IntentStep::from_stored(&r.get::<_, String>(2)?),
            key_id: r.get(3)?,
            started_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The client's `rotated` history rows, newest first: message and key id. Searched by client
/// (`history_client`, at most `HISTORY_PER_CLIENT` rows): SQLite would otherwise pick
/// `history_result_at` and walk every client's rotations (4.7 ms a call at 1,000 clients with
/// 10 each, against 34 µs).
fn rotated(conn: &Connection, client: &str) -> Result<Vec<(Option<String>, Option<String>)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT message, key_id FROM history INDEXED BY history_client WHERE client = ?1 AND result = 'rotated' ORDER BY id DESC",
    )?;
    let rows = stmt.query_map(params![client], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The client's records of [`Store::record_unpublished`].
fn unpublished(conn: &Connection, client: &str) -> Result<Vec<UnnamedRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT key_id, seen_at, last_seen_at FROM unpublished WHERE client = ?1",
    )?;
    let rows = stmt.query_map(params![client], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn client_row(conn: &Connection, client: &str) -> Result<Option<ClientRow>> {
    Ok(conn
        .query_row_cached(
            "SELECT client, published_key_id, published_version, expires_at, next_rotation_at, last_result, last_error, last_success_at, updated_at FROM clients WHERE client = ?1",
            params![client],
            |r| {
                Ok(ClientRow {
                    client: r.get(0)?,
                    published_key_id: r.get(1)?,
                    published_version: r.get(2)?,
                    expires_at: r.get(3)?,
                    next_rotation_at: r.get(4)?,
                    last_result: r.get(5)?,
                    last_error: r.get(6)?,
                    last_success_at: r.get(7)?,
                    updated_at: r.get(8)?,
                })
            },
        )
        .optional()?)
}

fn upsert_client(conn: &Connection, row: &ClientRow) -> Result<()> {
    conn.execute_cached(
        "INSERT INTO clients (client, published_key_id, published_version, expires_at, next_rotation_at, last_result, last_error, last_success_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(client) DO UPDATE SET published_key_id = ?2, published_version = ?3, expires_at = ?4, next_rotation_at = ?5,
             last_result = ?6, last_error = ?7, last_success_at = COALESCE(?8, last_success_at), updated_at = ?9",
        params![row.client, row.published_key_id, row.published_version, row.expires_at, row.next_rotation_at, row.last_result, row.last_error, row.last_success_at, row.updated_at],
    )?;
    Ok(())
}

/// [`record_location`] then [`forget_locations`].
fn move_location(conn: &Connection, client: &str, at: &Place<'_>) -> Result<()> {
    record_location(
        conn,
        client,
        at.tag,
        at.key_vault_url,
        at.secret_name,
        at.now,
    )?;
    forget_locations(conn, client, at.keep)
}

fn end_intent(conn: &Connection, rotation_id: &str) -> Result<()> {
    conn.execute_cached(
        "DELETE FROM intents WHERE rotation_id = ?1",
        params![rotation_id],
    )?;
    Ok(())
}

/// A history row, and the client's oldest rows beyond [`HISTORY_PER_CLIENT`] pruned.
fn record_history(
    conn: &Connection,
    client: &str,
    now: OffsetDateTime,
    result: &str,
    rotation_id: Option<&str>,
    key_id: Option<&str>,
    message: Option<&str>,
) -> Result<()> {
    conn.execute_cached(
        "INSERT INTO history (client, at, result, rotation_id, key_id, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![client, now.unix_timestamp(), result, rotation_id, key_id, message],
    )?;
    conn.execute_cached(
        "DELETE FROM history WHERE client = ?1 AND id <= (SELECT id FROM history WHERE client = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        params![client, HISTORY_PER_CLIENT],
    )?;
    Ok(())
}

fn record_location(
    conn: &Connection,
    client: &str,
    tag: &str,
    key_vault_url: &str,
    secret_name: &str,
    now: OffsetDateTime,
) -> Result<()> {
    conn.execute_cached(
        "INSERT INTO locations (client, tag, key_vault_url, secret_name, seen_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(client, tag) DO UPDATE SET key_vault_url = ?3, secret_name = ?4,
           seen_at = CASE WHEN seen_at > (SELECT COALESCE(MAX(seen_at), -1) FROM locations
                                          WHERE client = ?1 AND tag != ?2)
                     THEN seen_at ELSE ?5 END",
        params![client, tag, key_vault_url, secret_name, now.unix_timestamp()],
    )?;
    Ok(())
}

fn locations(conn: &Connection, client: &str) -> Result<Vec<LocationRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT tag, key_vault_url, secret_name, seen_at FROM locations WHERE client = ?1 ORDER BY seen_at",
    )?;
    let rows = stmt.query_map(params![client], |r| {
        Ok(LocationRow {
            tag: r.get(0)?,
            key_vault_url: r.get(1)?,
            secret_name: r.get(2)?,
            seen_at: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn forget_locations(conn: &Connection, client: &str, keep: &[&str]) -> Result<()> {
    let tags: Vec<String> = {
        let mut stmt = conn.prepare_cached("SELECT tag FROM locations WHERE client = ?1")?;
        let rows = stmt.query_map(params![client], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for tag in tags {
        if !keep.contains(&tag.as_str()) {
            conn.execute_cached(
                "DELETE FROM locations WHERE client = ?1 AND tag = ?2",
                params![client, tag],
            )?;
        }
    }
    Ok(())
}

/// Holds a client's lock; the lock goes with the value (or the process).
pub struct ClientLock {
    _file: File,
}

/// The file in `locks/` that holds every client's lock.
const LOCK_FILE: &str = "clients.lock";

/// Where in [`LOCK_FILE`] a client's lock is: the first 62 bits of the SHA-256 of its name, the
/// same in every process and release. Two names that met at one offset would share a lock,
/// which only ever makes them wait for each other (at 100,000 clients, about one chance in
/// 10^9 that any two meet).
fn lock_offset(client: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(client.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) >> 2) as i64
}

fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let version: usize =
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        return Err(Error::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("migrating {} to schema version {}", path.display(), i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_locks_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let _store = Store::open(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::metadata(dir.join("state.db"))
                .unwrap()
                .permissions()
                .mode()
                & 0o077,
            0
        );
    }

    #[test]
    fn a_client_lock_excludes_a_second_holder_until_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let first = store.try_lock("c1").unwrap();
        assert!(first.is_some());
        assert!(
            store.try_lock("c1").unwrap().is_none(),
            "second lock on one client"
        );
        assert!(
            store.try_lock("c2").unwrap().is_some(),
            "another client is independent"
        );
        drop(first);
        assert!(store.try_lock("c1").unwrap().is_some());
    }

    #[test]
    fn a_client_lock_excludes_another_opening_of_the_state_dir() {
        // A second `Store` opens the lock file again, as another process does: record locks of
        // open file descriptions conflict across opens, not only across processes.
        let tmp = tempfile::tempdir().unwrap();
        let daemon = Store::open(tmp.path()).unwrap();
        let cli = Store::open(tmp.path()).unwrap();
        let held = daemon.try_lock("app-one").unwrap();
        assert!(held.is_some());
        assert!(cli.try_lock("app-one").unwrap().is_none());
        assert!(cli.try_lock("app-two").unwrap().is_some());
        drop(held);
        assert!(cli.try_lock("app-one").unwrap().is_some());
    }

    #[test]
    fn a_clients_lock_is_at_the_same_place_in_every_release() {
        // Processes of two builds share a state dir: the offset must never change.
        assert_eq!(lock_offset("app-one"), 0x2dd3_e5f8_0c79_bef1);
    }

    #[test]
    fn only_a_busy_database_or_an_interrupted_call_is_transient() {
        let sqlite = |code| {
            Error::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        assert!(sqlite(rusqlite::ffi::SQLITE_BUSY).is_transient());
        assert!(sqlite(rusqlite::ffi::SQLITE_LOCKED).is_transient());
        assert!(!sqlite(rusqlite::ffi::SQLITE_CORRUPT).is_transient());
        assert!(!sqlite(rusqlite::ffi::SQLITE_READONLY).is_transient());
        let io = |kind| Error::Io {
            context: "locking x".into(),
            error: std::io::Error::from(kind),
        };
        assert!(io(std::io::ErrorKind::Interrupted).is_transient());
        assert!(!io(std::io::ErrorKind::PermissionDenied).is_transient());

        let tmp = tempfile::tempdir().unwrap();
        drop(Store::open(tmp.path()).unwrap());
        let conn = Connection::open(tmp.path().join("state.db")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        let newer = Store::open(tmp.path()).err().unwrap();
        assert!(matches!(newer, Error::NewerSchema { found: 99, .. }));
        assert!(!newer.is_transient());
        std::fs::remove_file(tmp.path().join("state.db")).unwrap();
        std::os::unix::fs::symlink("/dev/null", tmp.path().join("state.db")).unwrap();
        let planted = Store::open(tmp.path()).err().unwrap();
        assert!(matches!(planted, Error::NotAFile(_)), "{planted}");
        assert!(
            planted
                .to_string()
                .ends_with("state.db is not a regular file")
        );
    }

    #[test]
    fn refuses_a_newer_schema() {
        let tmp = tempfile::tempdir().unwrap();
        drop(Store::open(tmp.path()).unwrap());
        let conn = Connection::open(tmp.path().join("state.db")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Store::open(tmp.path()).err().unwrap().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }

    #[test]
    fn every_intent_step_reads_back_and_an_unknown_one_reads_as_maybe_published() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        let now = crate::clock::now();
        let steps = [
            IntentStep::Adding,
            IntentStep::AddOutcomeUnknown,
            IntentStep::Verifying,
            IntentStep::Publishing,
        ];
        for (i, step) in steps.into_iter().enumerate() {
            let id = format!("r{i}");
            s.begin_intent(&id, &id, now).wait().unwrap();
            s.intent_step(&id, step, None, now).wait().unwrap();
            let read = s.intents(&id).unwrap()[0].step;
            assert_eq!(read, step);
            assert_eq!(read.may_have_published(), step == IntentStep::Publishing);
        }
        s.begin_intent("later", "later", now).wait().unwrap();
        assert_eq!(s.intents("later").unwrap()[0].step, IntentStep::Adding);
        // A step written by a newer release: nothing is removed on the strength of it.
        s.conn()
            .execute(
                "UPDATE intents SET step = 'uploading' WHERE rotation_id = 'later'",
                [],
            )
            .unwrap();
        assert!(s.intents("later").unwrap()[0].step.may_have_published());
    }

    #[test]
    fn backoff_and_intents_survive_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let now = crate::clock::now();
        {
            let s = Store::open(tmp.path()).unwrap();
            s.begin_intent("r1", "c", now).wait().unwrap();
            s.intent_step("r1", IntentStep::Verifying, Some("k1"), now)
                .wait()
                .unwrap();
            s.set_backoff(
                "c",
                &Backoff {
                    failures: 3,
                    next_attempt_at: 42,
                    last_error: Some("x".into()),
                },
            )
            .wait()
            .unwrap();
        }
        let s = Store::open(tmp.path()).unwrap();
        let intents = s.intents("c").unwrap();
        assert_eq!(intents.len(), 1);
        assert_eq!(intents[0].key_id.as_deref(), Some("k1"));
        assert_eq!(s.backoff("c").unwrap().failures, 3);
    }

    /// A rotation's record in the history, as every schema has written it.
    const ROTATED_K1: &str = "INSERT INTO history (client, at, result, rotation_id, key_id, message) VALUES ('c', 5, 'rotated', 'r1', 'k1', 'published version v1')";

    /// A state directory whose state file an older release left: the first `schema`
    /// migrations applied, then `rows` inserted.
    fn old_state_file(schema: usize, rows: &[&str]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        crate::files::private_dir(tmp.path()).unwrap();
        crate::files::private_dir(&tmp.path().join("locks")).unwrap();
        let conn = Connection::open(tmp.path().join("state.db")).unwrap();
        for sql in &MIGRATIONS[..schema] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", schema as i64)
            .unwrap();
        for row in rows {
            conn.execute(row, []).unwrap();
        }
        tmp
    }

    #[test]
    fn a_state_file_of_schema_1_is_migrated_and_keeps_its_rows() {
        // A state file as the previous release left it: schema 1, an intent and a status row.
        let tmp = old_state_file(
            1,
            &[
                "INSERT INTO intents (rotation_id, client, step, key_id, started_at, updated_at, pid) VALUES ('r1', 'c', 'verifying', 'k1', 5, 5, 1)",
                "INSERT INTO clients (client, published_key_id, updated_at) VALUES ('c', 'k0', 5)",
            ],
        );
        let s = Store::open(tmp.path()).unwrap();
        let conn = Connection::open(tmp.path().join("state.db")).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        assert_eq!(s.intents("c").unwrap()[0].step, IntentStep::Verifying);
        assert_eq!(
            s.client_row("c")
                .unwrap()
                .unwrap()
                .published_key_id
                .as_deref(),
            Some("k0")
        );
        assert!(
            s.locations("c").unwrap().is_empty(),
            "no location known yet"
        );
        let now = crate::clock::now();
        s.record_location("c", "0a1b2c3d", "https://kv-a.vault.azure.net/", "s", now)
            .wait()
            .unwrap();
        assert_eq!(s.locations("c").unwrap()[0].secret_name, "s");
    }

    #[test]
    fn a_location_records_when_the_client_arrived_and_again_when_it_comes_back() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        let t = |n: i64| OffsetDateTime::from_unix_timestamp(1_000_000 + n).unwrap();
        let at = |tag: &str, n: i64| {
            s.record_location("c", tag, "https://kv.vault.azure.net/", tag, t(n))
                .wait()
                .unwrap();
        };
        assert_eq!(s.arrived_at("c", "aaaaaaaa").unwrap(), None, "unknown");
        at("aaaaaaaa", 0);
        at("aaaaaaaa", 10);
        assert_eq!(s.arrived_at("c", "aaaaaaaa").unwrap(), Some(1_000_000));
        at("bbbbbbbb", 20);
        assert_eq!(s.arrived_at("c", "aaaaaaaa").unwrap(), None, "it left A");
        assert_eq!(s.arrived_at("c", "bbbbbbbb").unwrap(), Some(1_000_020));
        // Back at A (a move rolled back): it arrived there again now.
        at("aaaaaaaa", 30);
        at("aaaaaaaa", 40);
        assert_eq!(s.arrived_at("c", "aaaaaaaa").unwrap(), Some(1_000_030));
    }

    #[test]
    fn locations_are_kept_per_client_and_forgotten_when_no_credential_needs_them() {
        let tmp = tempfile::tempdir().unwrap();
        let now = crate::clock::now();
        {
            let s = Store::open(tmp.path()).unwrap();
            s.record_location("c", "aaaaaaaa", "https://kv-a.vault.azure.net/", "s", now)
                .wait()
                .unwrap();
            s.record_location("c", "bbbbbbbb", "https://kv-b.vault.azure.net/", "s", now)
                .wait()
                .unwrap();
            s.record_location("d", "aaaaaaaa", "https://kv-a.vault.azure.net/", "s", now)
                .wait()
                .unwrap();
            // Recording again updates the row rather than adding one.
            s.record_location("c", "bbbbbbbb", "https://kv-b.vault.azure.net/", "s", now)
                .wait()
                .unwrap();
        }
        let s = Store::open(tmp.path()).unwrap();
        assert_eq!(s.locations("c").unwrap().len(), 2);
        s.forget_locations("c", &["bbbbbbbb"]).wait().unwrap();
        let left: Vec<String> = s
            .locations("c")
            .unwrap()
            .into_iter()
            .map(|l| l.tag)
            .collect();
        assert_eq!(left, ["bbbbbbbb"]);
        assert_eq!(
            s.locations("d").unwrap().len(),
            1,
            "another client's are its own"
        );
    }

    #[test]
    fn the_credential_a_version_was_published_with_is_found_by_client_and_version() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        let now = crate::clock::now();
        let published = |client: &str, key: &str, version: &str| {
            s.record_history(
                client,
                now,
                "rotated",
                Some("r"),
                Some(key),
                Some(&published_message(version)),
            )
            .wait()
            .unwrap();
        };
        published("c", "k1", "v1");
        published("c", "k2", "v2");
        published("d", "k9", "v9");
        s.record_history("c", now, "removed", None, Some("k1"), Some("v3"))
            .wait()
            .unwrap();
        let of = |client: &str, version: &str| s.published_credential(client, version).unwrap();
        assert_eq!(of("c", "v1").as_deref(), Some("k1"));
        assert_eq!(of("c", "v2").as_deref(), Some("k2"));
        assert_eq!(
            of("c", "v3"),
            None,
            "only rotations say what a version holds"
        );
        assert_eq!(of("c", "v9"), None, "another client's record is its own");
    }

    #[test]
    fn a_published_attempt_ends_its_intent_and_records_its_version_together() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        let now = crate::clock::now();
        s.begin_intent("r1", "c", now).wait().unwrap();
        s.intent_step("r1", IntentStep::Publishing, Some("k1"), now)
            .wait()
            .unwrap();
        assert_eq!(s.intents("c").unwrap()[0].step, IntentStep::Publishing);
        let synchronous: i64 = s
            .conn()
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(synchronous, 1, "back to NORMAL after the synced commit");
        s.end_published("r1", "c", now, "k1", "v1").wait().unwrap();
        assert!(s.intents("c").unwrap().is_empty());
        assert_eq!(
            s.published_credential("c", "v1").unwrap().as_deref(),
            Some("k1")
        );
        // A failed statement takes the whole transaction back: the intent stays.
        s.begin_intent("r2", "c", now).wait().unwrap();
        s.conn()
            .execute_batch("CREATE TRIGGER no_history BEFORE INSERT ON history BEGIN SELECT RAISE(ABORT, 'full'); END;")
            .unwrap();
        assert!(s.end_published("r2", "c", now, "k2", "v2").wait().is_err());
        assert_eq!(
            s.intents("c").unwrap().len(),
            1,
            "the intent was not ended alone"
        );
        // And the connection is usable after the rollback.
        s.end_intent("r2").wait().unwrap();
        assert!(s.intents("c").unwrap().is_empty());
    }

    /// A known publish with no record of an unnamed read.
    fn unseen(key_id: &str) -> KnownPublished {
        KnownPublished {
            key_id: key_id.into(),
            unpublished_seen_at: None,
            unpublished_last_seen_at: None,
        }
    }

    /// A known publish first and last seen named by no version at these times.
    fn seen(key_id: &str, first: i64, last: i64) -> KnownPublished {
        KnownPublished {
            key_id: key_id.into(),
            unpublished_seen_at: Some(first),
            unpublished_last_seen_at: Some(last),
        }
    }

    #[test]
    fn a_state_file_of_schema_3_is_migrated_and_its_publishes_are_known() {
        // The previous release's state file: schema 3, a rotation's record and a status row.
        let tmp = old_state_file(
            3,
            &[
                ROTATED_K1,
                "INSERT INTO clients (client, published_key_id, updated_at) VALUES ('c', 'k2', 6)",
            ],
        );
        let s = Store::open(tmp.path()).unwrap();
        let version: i64 = s
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let mut known = s.known_published("c").unwrap();
        known.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        assert_eq!(known, vec![unseen("k1"), unseen("k2")]);
        assert!(s.known_published("d").unwrap().is_empty());
    }

    /// The seventh review: the first release's state file (schema 1, before locations, events
    /// and the records of unnamed reads) migrates through every version, and the rotations it
    /// recorded are known as published, with no record of an unnamed read.
    #[test]
    fn a_state_file_of_schema_1_is_migrated_to_the_records_of_unnamed_reads() {
        let tmp = old_state_file(1, &[ROTATED_K1]);
        let s = Store::open(tmp.path()).unwrap();
        let version: i64 = s
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        assert_eq!(s.known_published("c").unwrap(), vec![unseen("k1")]);
        let t = OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        s.record_unpublished("c", &["k1".to_string()], &[], t, t)
            .wait()
            .unwrap();
        assert_eq!(
            s.known_published("c").unwrap(),
            vec![seen("k1", 1_000, 1_000)]
        );
    }

    /// The continuity of a hold: the previous release's state file (schema 4) holds a record of
    /// a first unnamed read and nothing of later ones. It migrates with the record last seen
    /// when first seen (all the store knows: a read after a gap longer than the schedule allows
    /// then counts the hold again, which keeps the credential longer, never shorter), and
    /// later reads move only the last time.
    #[test]
    fn a_state_file_of_schema_4_is_migrated_with_its_records_last_seen_when_first_seen() {
        let tmp = old_state_file(
            4,
            &[
                ROTATED_K1,
                "INSERT INTO unpublished (client, key_id, seen_at) VALUES ('c', 'k1', 700)",
            ],
        );
        let s = Store::open(tmp.path()).unwrap();
        let version: i64 = s
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        assert_eq!(s.known_published("c").unwrap(), vec![seen("k1", 700, 700)]);
        let t = OffsetDateTime::from_unix_timestamp(900).unwrap();
        s.record_unpublished("c", &[], &["k1".to_string()], t, t)
            .wait()
            .unwrap();
        assert_eq!(s.known_published("c").unwrap(), vec![seen("k1", 700, 900)]);
    }

    #[test]
    fn the_first_read_that_shows_a_published_credential_unnamed_is_kept_until_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        let t = |n: i64| OffsetDateTime::from_unix_timestamp(1_000_000 + n).unwrap();
        s.end_published("r1", "c", t(0), "k1", "v1").wait().unwrap();
        let keys = |k: &[&str]| k.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        let first = |k: &[&str], n| {
            s.record_unpublished("c", &keys(k), &[], t(n), t(n))
                .wait()
                .unwrap()
        };
        let still = |k: &[&str], n| {
            s.record_unpublished("c", &[], &keys(k), t(n), t(n))
                .wait()
                .unwrap()
        };
        first(&["k1"], 10);
        // A later read that continues the hold does not move the first time (overlap counts
        // from it), only the last.
        still(&["k1"], 20);
        // A credential only a record of an unnamed read knows (its history row pruned).
        first(&["k9"], 30);
        let mut known = s.known_published("c").unwrap();
        known.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        assert_eq!(
            known,
            vec![
                seen("k1", 1_000_010, 1_000_020),
                seen("k9", 1_000_030, 1_000_030)
            ]
        );
        assert!(
            s.known_published("d").unwrap().is_empty(),
            "another client's records are its own"
        );
        // A read after a gap that breaks the record's continuity: first seen again, now.
        first(&["k1"], 35);
        assert_eq!(
            s.known_published("c").unwrap()[0],
            seen("k1", 1_000_035, 1_000_035)
        );
        // Named again: forgotten, and a later restore starts the clock again.
        s.forget_unpublished("c", &keys(&["k1", "k9"]))
            .wait()
            .unwrap();
        assert_eq!(s.known_published("c").unwrap(), vec![unseen("k1")]);
        // Still unnamed with no record (none to continue): first seen now too.
        still(&["k1"], 40);
        assert_eq!(
            s.known_published("c").unwrap()[0],
            seen("k1", 1_000_040, 1_000_040)
        );
        // A reconcile saw k1 published again (the status row, written after the record) without
        // reading the records: the record is stale, reads as none, and a new one replaces it.
        s.upsert_client(&ClientRow {
            client: "c".into(),
            published_key_id: Some("k1".into()),
            updated_at: 1_000_050,
            ..ClientRow::default()
        })
        .wait()
        .unwrap();
        assert_eq!(s.known_published("c").unwrap()[0], unseen("k1"));
        first(&["k1"], 60);
        assert_eq!(
            s.known_published("c").unwrap()[0],
            seen("k1", 1_000_060, 1_000_060)
        );
    }

    /// `Records::known_published` and `published_credential` read in memory what one query
    /// each used to: over generated stores (rotations with and without a key id or a message,
    /// status rows naming one of them or another, older or newer than the records of unnamed
    /// reads or of the same second, key ids differing only in case, other clients' rows), they
    /// say what those queries say.
    #[test]
    fn a_reconciles_records_say_what_the_queries_said() {
        const KNOWN: &str = "SELECT k.key_id, CASE WHEN EXISTS (SELECT 1 FROM clients c WHERE c.client = ?1 AND c.published_key_id = u.key_id AND c.updated_at > u.seen_at) THEN NULL ELSE u.seen_at END, CASE WHEN EXISTS (SELECT 1 FROM clients c WHERE c.client = ?1 AND c.published_key_id = u.key_id AND c.updated_at > u.seen_at) THEN NULL ELSE u.last_seen_at END FROM (
                 SELECT key_id FROM history WHERE client = ?1 AND result = 'rotated' AND key_id IS NOT NULL
                 UNION SELECT published_key_id FROM clients WHERE client = ?1 AND published_key_id IS NOT NULL
                 UNION SELECT key_id FROM unpublished WHERE client = ?1
             ) AS k LEFT JOIN unpublished u ON u.client = ?1 AND u.key_id = k.key_id ORDER BY k.key_id";
        const WRITTEN: &str = "SELECT key_id FROM history WHERE client = ?1 AND result = 'rotated' AND message = ?2 ORDER BY id DESC LIMIT 1";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let at = |n: i64| OffsetDateTime::from_unix_timestamp(1_000 + n).unwrap();
        for _ in 0..200 {
            let tmp = tempfile::tempdir().unwrap();
            let s = Store::open(tmp.path()).unwrap();
            for client in ["c", "d"] {
                for _ in 0..next(5) {
                    let key = format!("{}{}", ["k", "K"][next(2) as usize], next(4));
                    let key = (next(5) > 0).then_some(key.as_str());
                    let result = ["rotated", "rotated", "removed", "failed"][next(4) as usize];
                    let version = format!("v{}", next(4));
                    let message = (next(6) > 0).then(|| published_message(&version));
                    s.record_history(
                        client,
                        at(next(6) as i64),
                        result,
                        Some("r"),
                        key,
                        message.as_deref(),
                    )
                    .wait()
                    .unwrap();
                }
                for _ in 0..next(3) {
                    let key = vec![format!("{}{}", ["k", "K"][next(2) as usize], next(5))];
                    let (first, still): (&[String], &[String]) = if next(2) == 0 {
                        (&key, &[])
                    } else {
                        (&[], &key)
                    };
                    let (seen, last) = (at(next(6) as i64), at(next(6) as i64));
                    s.record_unpublished(client, first, still, seen, last)
                        .wait()
                        .unwrap();
                }
                if next(3) > 0 {
                    s.upsert_client(&ClientRow {
                        client: client.into(),
                        published_key_id: (next(4) > 0)
                            .then(|| format!("{}{}", ["k", "K"][next(2) as usize], next(5))),
                        updated_at: 1_000 + next(6) as i64,
                        ..ClientRow::default()
                    })
                    .wait()
                    .unwrap();
                }
            }
            let records = s.records("c", true).unwrap();
            let conn = s.conn();
            let mut stmt = conn.prepare(KNOWN).unwrap();
            let queried: Vec<KnownPublished> = stmt
                .query_map(params!["c"], |r| {
                    Ok(KnownPublished {
                        key_id: r.get(0)?,
                        unpublished_seen_at: r.get(1)?,
                        unpublished_last_seen_at: r.get(2)?,
                    })
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(records.known_published(), queried);
            for v in 0..5 {
                let version = format!("v{v}");
                let queried: Option<String> = conn
                    .query_row(WRITTEN, params!["c", published_message(&version)], |r| {
                        r.get::<_, Option<String>>(0)
                    })
                    .optional()
                    .unwrap()
                    .flatten();
                assert_eq!(records.published_credential(&version), queried, "{version}");
            }
        }
    }

    /// A location the store already records as it is needs no write; any other does.
    #[test]
    fn a_location_is_written_only_when_the_record_would_change() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        let t = |n: i64| OffsetDateTime::from_unix_timestamp(1_000_000 + n).unwrap();
        let a = "https://kv-a.vault.azure.net/";
        let place =
            |tag: &'static str, url: &'static str, keep: &'static [&'static str], n| Place {
                tag,
                key_vault_url: url,
                secret_name: "s",
                keep,
                now: t(n),
            };
        let unchanged = |p: &Place<'_>| s.records("c", false).unwrap().location_unchanged(p);
        let write = |p: &Place<'_>| s.move_location("c", p).wait().unwrap();
        let here = place("aaaaaaaa", a, &["aaaaaaaa"], 0);
        assert!(!unchanged(&here), "not recorded yet");
        write(&here);
        assert!(unchanged(&place("aaaaaaaa", a, &["aaaaaaaa"], 10)));
        assert!(
            !unchanged(&place(
                "aaaaaaaa",
                "https://kv-b.vault.azure.net/",
                &["aaaaaaaa"],
                10
            )),
            "another address behind the tag"
        );
        let moved = place("bbbbbbbb", a, &["bbbbbbbb", "aaaaaaaa"], 20);
        assert!(!unchanged(&moved), "moved");
        write(&moved);
        assert!(unchanged(&place(
            "bbbbbbbb",
            a,
            &["bbbbbbbb", "aaaaaaaa"],
            30
        )));
        assert!(
            !unchanged(&place("bbbbbbbb", a, &["bbbbbbbb"], 30)),
            "a location no credential needs is to be forgotten"
        );
        let back = place("aaaaaaaa", a, &["bbbbbbbb", "aaaaaaaa"], 30);
        assert!(
            !unchanged(&back),
            "back at a location it left: it arrives again"
        );
        write(&back);
        assert_eq!(s.arrived_at("c", "aaaaaaaa").unwrap(), Some(1_000_030));
        // Whatever the skipped write would have done, it would have changed nothing.
        let before = s.locations("c").unwrap();
        let again = place("aaaaaaaa", a, &["bbbbbbbb", "aaaaaaaa"], 40);
        assert!(unchanged(&again));
        write(&again);
        assert_eq!(s.locations("c").unwrap(), before);
    }

    /// A failed reconcile's status keeps what was published and when the last success was.
    #[test]
    fn a_failure_keeps_the_published_credential_and_the_last_success() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        s.upsert_client(&ClientRow {
            client: "c".into(),
            published_key_id: Some("k1".into()),
            published_version: Some("v1".into()),
            last_result: Some("rotated".into()),
            last_success_at: Some(5),
            updated_at: 5,
            ..ClientRow::default()
        })
        .wait()
        .unwrap();
        let failed = s
            .record_failure("c", |r| {
                r.last_result = Some("failed".into());
                r.last_error = Some("boom".into());
                r.last_success_at = None;
                r.updated_at = 10;
            })
            .wait()
            .unwrap();
        let stored = s.client_row("c").unwrap().unwrap();
        assert_eq!(stored.published_key_id.as_deref(), Some("k1"));
        assert_eq!(stored.published_version.as_deref(), Some("v1"));
        assert_eq!(stored.last_error.as_deref(), Some("boom"));
        assert_eq!(stored.last_success_at, Some(5));
        assert_eq!(failed.published_key_id, stored.published_key_id);
        // A client never recorded gets a row of its own.
        let first = s
            .record_failure("d", |r| r.last_result = Some("failed".into()))
            .wait()
            .unwrap();
        assert_eq!(first.client, "d");
        assert_eq!(
            s.client_row("d").unwrap().unwrap().last_result.as_deref(),
            Some("failed")
        );
    }

    #[test]
    fn history_is_bounded_per_client() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        let now = crate::clock::now();
        for _ in 0..(HISTORY_PER_CLIENT + 20) {
            s.record_history("c", now, "success", None, None, None)
                .wait()
                .unwrap();
        }
        assert_eq!(
            s.history("c", 10_000).unwrap().len() as i64,
            HISTORY_PER_CLIENT
        );
    }
}

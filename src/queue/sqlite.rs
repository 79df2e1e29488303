//! Embedded durable work queue on SQLite.
//!
//! `serve` on a laptop and `demo` need the same at-least-once guarantees as Service Bus
//! without any infrastructure, so the queue is a single table in a SQLite file.
//!
//! # Storage model
//! One row per message in `messages`. A row is either `ready` (waiting, or locked by a
//! receiver) or `dead` (parked for an operator). Completing a message deletes its row.
//!
//! The central trick: while a message is locked, its `visible_at` is set to its
//! `locked_until`. "Next due message" is then a single range scan over one partial index
//! (`state = 'ready' AND visible_at <= now`), and an expired lock needs no sweeper: the
//! message simply becomes due again. `lock_token` stays set after expiry so that a
//! re-take can be told apart (the old token stops matching) and so that dedupe does not
//! merge a new fact into a message whose worker may still complete it.
//!
//! # Durability
//! The file runs in WAL mode with `synchronous=NORMAL`: a committed transaction is in the
//! WAL before `COMMIT` returns, so it survives a crash of *this process* (the OS still has
//! the pages). Only an OS crash or power loss can lose the last few commits (the WAL is
//! fsynced at checkpoints), and even then the database stays consistent. For a queue of
//! idempotent reconcile work that trade is right: a lost retry is re-created by the next
//! event or the periodic sweep, while a full fsync per operation would cost an order of
//! magnitude in throughput.
//!
//! # Concurrency
//! One connection behind a `std::sync::Mutex`, only ever touched inside
//! `tokio::task::spawn_blocking`, so SQLite never blocks the async runtime. Every
//! operation is one transaction; read-then-write operations use `BEGIN IMMEDIATE` so two
//! processes sharing a file cannot both pick the same message. Idle receivers sleep until
//! the earliest of their deadline, the next due time, or an in-process enqueue (a
//! [`Notify`]); they also re-check once a second so writes from another process sharing
//! the file (an operator's `replay`) are noticed without busy-polling.
//!
//! A `receive` future that is dropped after the row was locked loses that delivery; the
//! message comes back when the lock expires (at-least-once, never lost).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::api::{DeadLetter, Delivery, NewMessage, QueueError, WorkQueue};

/// Schema migrations; entry `i` upgrades the database from version `i` to `i + 1`.
/// Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // v1: the messages table and its three access paths.
    "CREATE TABLE messages (
         id             TEXT PRIMARY KEY NOT NULL,
         dedupe_key     TEXT NOT NULL,
         correlation_id TEXT NOT NULL,
         body           TEXT NOT NULL,
         enqueued_at    INTEGER NOT NULL,
         visible_at     INTEGER NOT NULL,
         lock_token     TEXT,
         locked_until   INTEGER,
         delivery_count INTEGER NOT NULL DEFAULT 0,
         state          TEXT NOT NULL CHECK (state IN ('ready', 'dead')),
         dead_reason    TEXT,
         dead_at        INTEGER
     );
     -- receive: earliest due ready message (rowid breaks ties in insertion order).
     CREATE INDEX messages_due ON messages (visible_at) WHERE state = 'ready';
     -- enqueue: is a message with this key waiting (ready and never locked since)?
     CREATE INDEX messages_waiting_key ON messages (dedupe_key)
         WHERE state = 'ready' AND lock_token IS NULL;
     -- dead_letters: newest first.
     CREATE INDEX messages_dead ON messages (dead_at) WHERE state = 'dead';",
];

/// Upper bound on one idle sleep in `receive`, so enqueues made by another process
/// sharing the file (which cannot ring our in-process `Notify`) are seen within a second.
const MAX_IDLE_SLICE: Duration = Duration::from_secs(1);

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The reason recorded when a row's body is not valid JSON.
const CORRUPT_BODY_REASON: &str = "corrupt body";

/// Durable work queue in a SQLite file (or in memory for tests). Cheap to clone; clones
/// share the connection and the wake-up signal.
#[derive(Clone)]
pub struct SqliteQueue {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    /// Rung on every write that can make a message due (enqueue, abandon, replay).
    wake: Notify,
    /// `None` for an in-memory queue.
    path: Option<PathBuf>,
}

impl fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let location = match &self.inner.path {
            Some(p) => p.display().to_string(),
            None => ":memory:".to_owned(),
        };
        f.debug_struct("SqliteQueue").field("path", &location).finish()
    }
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue file at `path`, its parent directories and
    /// the schema. This does blocking file I/O: call it at startup or inside
    /// `spawn_blocking`, not from a busy async task.
    pub fn open(path: &Path) -> Result<Self, QueueError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| QueueError::Config(format!("cannot create queue directory {}: {e}", parent.display())))?;
        }
        let conn = Connection::open(path)
            .map_err(|e| QueueError::Config(format!("cannot open queue database {}: {e}", path.display())))?;
        Self::setup(conn, Some(path.to_path_buf()))
    }

    /// A queue that lives only as long as this value (and its clones); for tests and
    /// one-shot demos.
    pub fn open_in_memory() -> Result<Self, QueueError> {
        let conn = Connection::open_in_memory()
            .map_err(|e| QueueError::Config(format!("cannot open in-memory queue database: {e}")))?;
        Self::setup(conn, None)
    }

    /// The backing file, or `None` for an in-memory queue.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    fn setup(mut conn: Connection, path: Option<PathBuf>) -> Result<Self, QueueError> {
        let what = "configure queue database";
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err(what))?;
        if path.is_some() {
            // journal_mode answers with the mode actually in effect; anything but WAL
            // (e.g. a file system without shared memory) changes the durability story.
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(db_err(what))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(QueueError::Config(format!(
                    "queue database refused WAL journal mode (got {mode}); use a local file system"
                )));
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(db_err(what))?;
        conn.set_prepared_statement_cache_capacity(32);
        migrate(&mut conn)?;
        Ok(Self { inner: Arc::new(Inner { conn: Mutex::new(conn), wake: Notify::new(), path }) })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, QueueError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection usable: an open
            // transaction was rolled back when its guard dropped.
            let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|e| QueueError::Unavailable(format!("queue worker thread failed: {e}")))?
    }
}

/// Brings the schema to the newest version, refusing files written by a newer build.
fn migrate(conn: &mut Connection) -> Result<(), QueueError> {
    let what = "migrate queue schema";
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err(what))?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS queue_schema (version INTEGER NOT NULL)").map_err(db_err(what))?;
    let current: Option<i64> =
        tx.query_row("SELECT MAX(version) FROM queue_schema", [], |r| r.get(0)).map_err(db_err(what))?;
    let current = usize::try_from(current.unwrap_or(0))
        .map_err(|_| QueueError::Config("queue schema version is negative".to_owned()))?;
    if current > MIGRATIONS.len() {
        return Err(QueueError::Config(format!(
            "queue database has schema version {current}, this build understands up to {}; \
             upgrade autopilot or use a new queue file",
            MIGRATIONS.len()
        )));
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.execute_batch(sql).map_err(db_err(what))?;
        let version = i64::try_from(step + 1).unwrap_or(i64::MAX);
        tx.execute("DELETE FROM queue_schema", []).map_err(db_err(what))?;
        tx.execute("INSERT INTO queue_schema (version) VALUES (?1)", [version]).map_err(db_err(what))?;
    }
    tx.commit().map_err(db_err(what))
}

/// Maps a SQLite error to the queue's error classes: problems a retry cannot fix (file
/// unreadable, read-only, not a database) are `Config`, everything else `Unavailable`.
fn db_err(what: &'static str) -> impl Fn(rusqlite::Error) -> QueueError {
    move |e| {
        let permanent = matches!(
            e.sqlite_error_code(),
            Some(
                ErrorCode::ReadOnly
                    | ErrorCode::PermissionDenied
                    | ErrorCode::CannotOpen
                    | ErrorCode::NotADatabase
                    | ErrorCode::DatabaseCorrupt
            )
        );
        let text = format!("sqlite ({what}): {e}");
        if permanent { QueueError::Config(text) } else { QueueError::Unavailable(text) }
    }
}

/// Milliseconds since the Unix epoch; negative (not a panic) if the clock is before 1970.
fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map(|ms| -ms).unwrap_or(i64::MIN),
    }
}

fn ms_to_system_time(ms: i64) -> SystemTime {
    let offset = Duration::from_millis(ms.unsigned_abs());
    let t = if ms >= 0 { UNIX_EPOCH.checked_add(offset) } else { UNIX_EPOCH.checked_sub(offset) };
    t.unwrap_or(UNIX_EPOCH)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Stored as INTEGER; anything out of `u32` range (only possible by hand-editing) saturates.
fn count_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// Time-ordered (12 hex digits of ms, good until the year 10889) plus 64 random bits, so
/// ids sort roughly by creation and collide only with negligible probability.
fn new_message_id() -> String {
    let ms = u64::try_from(now_ms().max(0)).unwrap_or(0) & 0xFFFF_FFFF_FFFF;
    format!("{ms:012x}{:016x}", fastrand::u64(..))
}

/// 128 random bits. Not a secret (anyone with the file can read the queue), only a
/// guard against settling someone else's delivery.
fn new_lock_token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Outcome of one receive attempt.
enum Attempt {
    Got(Delivery),
    /// Nothing due; `next_due` is the earliest `visible_at` of any ready message
    /// (including lock expiries), if there is one.
    Idle {
        next_due: Option<i64>,
    },
}

fn enqueue_blocking(conn: &mut Connection, msg: &NewMessage, body: &str, now: i64) -> Result<(), QueueError> {
    let what = "enqueue";
    let visible_at = now.saturating_add(duration_ms(msg.delay));
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err(what))?;
    {
        // Dedupe: a message with this key that is waiting (never locked since it was
        // enqueued, abandoned or replayed) absorbs the new one and keeps the sooner due
        // time. A locked message does not: its worker may already be past the point
        // where it would see the new fact, so that fact needs its own message.
        let mut merge = tx
            .prepare_cached(
                "UPDATE messages SET visible_at = MIN(visible_at, ?2)
                 WHERE dedupe_key = ?1 AND state = 'ready' AND lock_token IS NULL",
            )
            .map_err(db_err(what))?;
        let merged = merge.execute(params![msg.dedupe_key, visible_at]).map_err(db_err(what))?;
        if merged == 0 {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO messages
                         (id, dedupe_key, correlation_id, body, enqueued_at, visible_at, delivery_count, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 'ready')",
                )
                .map_err(db_err(what))?;
            insert
                .execute(params![new_message_id(), msg.dedupe_key, msg.correlation_id, body, now, visible_at])
                .map_err(db_err(what))?;
        }
    }
    tx.commit().map_err(db_err(what))
}

fn receive_blocking(conn: &mut Connection, now: i64, lock_ms: i64) -> Result<Attempt, QueueError> {
    let what = "receive";
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err(what))?;
    let attempt = {
        let mut pick = tx
            .prepare_cached(
                "SELECT id, dedupe_key, correlation_id, body, enqueued_at, delivery_count FROM messages
                 WHERE state = 'ready' AND visible_at <= ?1
                 ORDER BY visible_at, rowid LIMIT 1",
            )
            .map_err(db_err(what))?;
        // Each pass either returns or dead-letters one corrupt row, so this terminates.
        loop {
            let row = pick
                .query_row([now], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })
                .optional()
                .map_err(db_err(what))?;
            let Some((id, dedupe_key, correlation_id, body, enqueued_at, count)) = row else {
                let next_due: Option<i64> = tx
                    .prepare_cached("SELECT MIN(visible_at) FROM messages WHERE state = 'ready'")
                    .and_then(|mut s| s.query_row([], |r| r.get(0)))
                    .map_err(db_err(what))?;
                break Attempt::Idle { next_due };
            };
            let delivery_count = count.saturating_add(1);
            match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(body) => {
                    let token = new_lock_token();
                    let locked_until = now.saturating_add(lock_ms);
                    tx.prepare_cached(
                        "UPDATE messages SET lock_token = ?2, locked_until = ?3, visible_at = ?3, delivery_count = ?4
                         WHERE id = ?1",
                    )
                    .and_then(|mut s| s.execute(params![id, token, locked_until, delivery_count]))
                    .map_err(db_err(what))?;
                    break Attempt::Got(Delivery {
                        message_id: id,
                        lock_token: token,
                        dedupe_key,
                        correlation_id,
                        body,
                        delivery_count: count_u32(delivery_count),
                        enqueued_at: ms_to_system_time(enqueued_at),
                    });
                }
                Err(e) => {
                    // A row nobody can parse would otherwise wedge the head of the queue
                    // forever; park it where an operator will see it.
                    tracing::warn!(message_id = %id, error = %e, "dead-lettering queue message with corrupt body");
                    tx.prepare_cached(
                        "UPDATE messages SET state = 'dead', dead_reason = ?2, dead_at = ?3, delivery_count = ?4,
                             lock_token = NULL, locked_until = NULL
                         WHERE id = ?1",
                    )
                    .and_then(|mut s| s.execute(params![id, CORRUPT_BODY_REASON, now, delivery_count]))
                    .map_err(db_err(what))?;
                }
            }
        }
    };
    tx.commit().map_err(db_err(what))?;
    Ok(attempt)
}

fn lock_lost(d: &Delivery) -> QueueError {
    QueueError::LockLost(format!(
        "message {}: the lock is no longer held (expired and re-taken, or already settled)",
        d.message_id
    ))
}

#[async_trait::async_trait]
impl WorkQueue for SqliteQueue {
    async fn enqueue(&self, msg: NewMessage) -> Result<(), QueueError> {
        let body = serde_json::to_string(&msg.body)
            .map_err(|e| QueueError::Config(format!("message body is not serializable: {e}")))?;
        let now = now_ms();
        self.run(move |c| enqueue_blocking(c, &msg, &body, now)).await?;
        // Waiters recompute their wake-up time even for a delayed message: it may be due
        // sooner than whatever they are sleeping towards.
        self.inner.wake.notify_waiters();
        Ok(())
    }

    async fn receive(&self, wait: Duration, lock_for: Duration) -> Result<Option<Delivery>, QueueError> {
        let started = Instant::now();
        // A huge `wait` (Duration::MAX) must not overflow Instant arithmetic.
        let deadline = started.checked_add(wait).unwrap_or_else(|| started + Duration::from_secs(86_400 * 365));
        let lock_ms = duration_ms(lock_for);
        loop {
            // Register for wake-ups *before* looking, so an enqueue that commits between
            // our query and our sleep is not missed.
            let notified = self.inner.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let now = now_ms();
            let next_due = match self.run(move |c| receive_blocking(c, now, lock_ms)).await? {
                Attempt::Got(d) => return Ok(Some(d)),
                Attempt::Idle { next_due } => next_due,
            };
            let now_instant = Instant::now();
            if now_instant >= deadline {
                return Ok(None);
            }
            let mut wake_at = deadline.min(now_instant + MAX_IDLE_SLICE);
            if let Some(due) = next_due {
                let until_due = u64::try_from(due.saturating_sub(now_ms()).max(0)).unwrap_or(0);
                wake_at = wake_at.min(now_instant + Duration::from_millis(until_due));
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn complete(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let (id, token) = (delivery.message_id.clone(), delivery.lock_token.clone());
        // An expired lock that nobody re-took still matches: the work was done, and
        // deleting the row is exactly what the redelivery would have ended with.
        let deleted = self
            .run(move |c| {
                c.prepare_cached("DELETE FROM messages WHERE id = ?1 AND lock_token = ?2 AND state = 'ready'")
                    .and_then(|mut s| s.execute(params![id, token]))
                    .map_err(db_err("complete"))
            })
            .await?;
        if deleted == 0 { Err(lock_lost(delivery)) } else { Ok(()) }
    }

    async fn abandon(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let (id, token) = (delivery.message_id.clone(), delivery.lock_token.clone());
        let now = now_ms();
        let updated = self
            .run(move |c| {
                c.prepare_cached(
                    "UPDATE messages SET lock_token = NULL, locked_until = NULL, visible_at = ?3
                     WHERE id = ?1 AND lock_token = ?2 AND state = 'ready'",
                )
                .and_then(|mut s| s.execute(params![id, token, now]))
                .map_err(db_err("abandon"))
            })
            .await?;
        if updated == 0 {
            return Err(lock_lost(delivery));
        }
        self.inner.wake.notify_waiters();
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        let (id, token, reason) = (delivery.message_id.clone(), delivery.lock_token.clone(), reason.to_owned());
        let now = now_ms();
        let updated = self
            .run(move |c| {
                c.prepare_cached(
                    "UPDATE messages SET state = 'dead', dead_reason = ?3, dead_at = ?4,
                         lock_token = NULL, locked_until = NULL
                     WHERE id = ?1 AND lock_token = ?2 AND state = 'ready'",
                )
                .and_then(|mut s| s.execute(params![id, token, reason, now]))
                .map_err(db_err("dead-letter"))
            })
            .await?;
        if updated == 0 { Err(lock_lost(delivery)) } else { Ok(()) }
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.run(|c| {
            let what = "list dead letters";
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, dedupe_key, correlation_id, body, dead_reason, delivery_count, dead_at
                     FROM messages WHERE state = 'dead' ORDER BY dead_at DESC, rowid DESC",
                )
                .map_err(db_err(what))?;
            let rows = stmt
                .query_map([], |r| {
                    let raw: String = r.get(3)?;
                    Ok(DeadLetter {
                        message_id: r.get(0)?,
                        dedupe_key: r.get(1)?,
                        correlation_id: r.get(2)?,
                        // A corrupt body is shown as the raw text so the operator can see
                        // what was stored.
                        body: serde_json::from_str(&raw).unwrap_or(serde_json::Value::String(raw)),
                        reason: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                        delivery_count: count_u32(r.get(5)?),
                        dead_lettered_at: ms_to_system_time(r.get::<_, Option<i64>>(6)?.unwrap_or(0)),
                    })
                })
                .map_err(db_err(what))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err(what))
        })
        .await
    }

    async fn replay(&self, message_id: &str) -> Result<(), QueueError> {
        let id = message_id.to_owned();
        let now = now_ms();
        // The `state = 'dead'` guard makes a second replay of the same id a no-op.
        let updated = self
            .run(move |c| {
                let body: Option<String> = c
                    .prepare_cached("SELECT body FROM messages WHERE id = ?1 AND state = 'dead'")
                    .and_then(|mut s| s.query_row(params![id], |r| r.get(0)).optional())
                    .map_err(db_err("replay"))?;
                let Some(body) = body else { return Ok(0) };
                let fresh = serde_json::from_str::<serde_json::Value>(&body)
                    .map(|v| super::work::restart_window(&v).to_string())
                    .unwrap_or(body);
                c.prepare_cached(
                    "UPDATE messages SET state = 'ready', delivery_count = 0, visible_at = ?2, body = ?3,
                         lock_token = NULL, locked_until = NULL, dead_reason = NULL, dead_at = NULL
                     WHERE id = ?1 AND state = 'dead'",
                )
                .and_then(|mut s| s.execute(params![id, now, fresh]))
                .map_err(db_err("replay"))
            })
            .await?;
        if updated == 0 {
            return Err(QueueError::NotFound(message_id.to_owned()));
        }
        self.inner.wake.notify_waiters();
        Ok(())
    }

    async fn depth(&self) -> Result<usize, QueueError> {
        let n: i64 = self
            .run(|c| {
                c.prepare_cached("SELECT COUNT(*) FROM messages WHERE state = 'ready'")
                    .and_then(|mut s| s.query_row([], |r| r.get(0)))
                    .map_err(db_err("depth"))
            })
            .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips_and_never_panics() {
        assert_eq!(ms_to_system_time(0), UNIX_EPOCH);
        assert_eq!(ms_to_system_time(1_500), UNIX_EPOCH + Duration::from_millis(1_500));
        assert_eq!(ms_to_system_time(-1_500), UNIX_EPOCH - Duration::from_millis(1_500));
        // Extremes saturate instead of panicking.
        let _ = ms_to_system_time(i64::MAX);
        let _ = ms_to_system_time(i64::MIN);
        assert_eq!(duration_ms(Duration::MAX), i64::MAX);
        assert!(now_ms() > 1_600_000_000_000);
    }

    #[test]
    fn ids_are_unique_and_time_ordered() {
        let a = new_message_id();
        std::thread::sleep(Duration::from_millis(2));
        let b = new_message_id();
        assert_eq!(a.len(), 28);
        assert!(a[..12] < b[..12], "{a} should sort before {b}");
        let tokens: std::collections::HashSet<_> = (0..1000).map(|_| new_lock_token()).collect();
        assert_eq!(tokens.len(), 1000);
    }

    #[test]
    fn counts_saturate() {
        assert_eq!(count_u32(-3), 0);
        assert_eq!(count_u32(7), 7);
        assert_eq!(count_u32(i64::MAX), u32::MAX);
    }

    #[test]
    fn due_and_dedupe_queries_use_the_partial_indexes() {
        let q = SqliteQueue::open_in_memory().expect("open");
        let conn = q.inner.conn.lock().expect("lock");
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("prepare");
            let rows = stmt.query_map([], |r| r.get::<_, String>(3)).expect("query");
            rows.collect::<Result<Vec<_>, _>>().expect("rows").join("; ")
        };
        let due = plan(
            "SELECT id FROM messages WHERE state = 'ready' AND visible_at <= 5 ORDER BY visible_at, rowid LIMIT 1",
        );
        assert!(due.contains("messages_due") && !due.contains("TEMP B-TREE"), "{due}");
        let key = plan("SELECT id FROM messages WHERE dedupe_key = 'k' AND state = 'ready' AND lock_token IS NULL");
        assert!(key.contains("messages_waiting_key"), "{key}");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/dir/queue.db");
        drop(SqliteQueue::open(&path).expect("first open creates dirs and schema"));
        {
            let conn = Connection::open(&path).expect("raw open");
            conn.execute("UPDATE queue_schema SET version = 99", []).expect("bump");
        }
        match SqliteQueue::open(&path) {
            Err(QueueError::Config(msg)) => assert!(msg.contains("99"), "{msg}"),
            other => panic!("expected Config error, got {other:?}"),
        }
    }

    #[test]
    fn debug_shows_the_path() {
        let q = SqliteQueue::open_in_memory().expect("open");
        assert_eq!(format!("{q:?}"), r#"SqliteQueue { path: ":memory:" }"#);
    }
}

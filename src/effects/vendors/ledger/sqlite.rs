//! The ledger in SQLite, in the same file as the embedded queue (one file to back up,
//! one file to delete for a clean slate). Same blocking discipline as the queue: the
//! connection is only touched inside `spawn_blocking`.
//!
//! Versions: every write takes the next number of a one-row counter table, so a version
//! is never reused even after an entry is forgotten and created again (a `forget` holding
//! the old incarnation's version cannot erase the new one). Conditional writes are single
//! statements (`... WHERE version = ?`), atomic under SQLite's write lock, so several
//! processes sharing the file get the same semantics as the Table service's ETags.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};

use super::api::{Ledger, LedgerError, Registration, Version, endpoint_key};
use crate::effects::vendors::api::VendorEndpoint;
use crate::model::now_unix;

#[derive(Debug, Clone)]
pub struct SqliteLedger {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS vendor_registrations (
    vendor       TEXT NOT NULL,
    endpoint_key TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    recorded_at  INTEGER NOT NULL,
    version      INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (vendor, endpoint_key)
);
CREATE TABLE IF NOT EXISTS vendor_registrations_seq (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    next INTEGER NOT NULL
);
INSERT OR IGNORE INTO vendor_registrations_seq (id, next)
    SELECT 1, COALESCE(MAX(version), 0) + 1 FROM vendor_registrations;";

/// Files written before versions existed lack the column (their rows read as version 1).
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has_version =
        conn.prepare("SELECT 1 FROM pragma_table_info('vendor_registrations') WHERE name = 'version'")?.exists([])?;
    let has_table = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'vendor_registrations'")?
        .exists([])?;
    if has_table && !has_version {
        conn.execute_batch("ALTER TABLE vendor_registrations ADD COLUMN version INTEGER NOT NULL DEFAULT 1")?;
    }
    Ok(())
}

/// The next version number (inside the caller's statement sequence; the counter row is
/// updated and read in one statement).
fn next_version(c: &Connection) -> rusqlite::Result<i64> {
    c.query_row("UPDATE vendor_registrations_seq SET next = next + 1 WHERE id = 1 RETURNING next - 1", [], |r| r.get(0))
}

fn parse_version(v: &Version) -> Option<i64> {
    v.0.parse().ok()
}

/// Opens the SQLite file of `[ledger]` (creating its folder), or an in-memory database
/// for `None`, with the busy timeout every user of that file needs: the ledger and the
/// small state (`effects::small_state`) share the file, so they open it one way.
/// `what` names the file in the error (`"ledger database "`).
pub(crate) fn open_connection(path: Option<&Path>, what: &str) -> Result<Connection, String> {
    let conn = match path {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            Connection::open(path).map_err(|e| format!("cannot open {what}{}: {e}", path.display()))?
        }
        None => Connection::open_in_memory().map_err(|e| e.to_string())?,
    };
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| e.to_string())?;
    Ok(conn)
}

impl SqliteLedger {
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        Self::init(open_connection(Some(path), "ledger database ").map_err(LedgerError::Config)?)
    }

    pub fn open_in_memory() -> Result<Self, LedgerError> {
        Self::init(open_connection(None, "").map_err(LedgerError::Config)?)
    }

    fn init(conn: Connection) -> Result<Self, LedgerError> {
        migrate(&conn).map_err(|e| LedgerError::Config(format!("cannot migrate the ledger table: {e}")))?;
        conn.execute_batch(SCHEMA).map_err(|e| LedgerError::Config(format!("cannot create the ledger table: {e}")))?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&guard).map_err(|e| LedgerError::Unavailable(e.to_string()))
        })
        .await
        .map_err(|e| LedgerError::Unavailable(format!("ledger task failed: {e}")))?
    }
}

type Row = (String, String, i64, i64);

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn row_to_registration((vendor, endpoint, recorded_at, version): Row) -> Option<Registration> {
    let endpoint: VendorEndpoint = serde_json::from_str(&endpoint).ok()?;
    Some(Registration {
        vendor,
        endpoint,
        recorded_at: u64::try_from(recorded_at).unwrap_or(0),
        version: Version(version.to_string()),
    })
}

/// Why a conditional write found nothing to write.
fn conflict(vendor: &str, key: &str, what: &str) -> LedgerError {
    LedgerError::Conflict(format!("{vendor} entry for {key}: {what}"))
}

#[async_trait::async_trait]
impl Ledger for SqliteLedger {
    async fn record(
        &self,
        vendor: &str,
        ep: &VendorEndpoint,
        expected: Option<&Version>,
    ) -> Result<Version, LedgerError> {
        let (vendor, key) = (vendor.to_owned(), endpoint_key(&ep.pe_id));
        let body = serde_json::to_string(ep).map_err(|e| LedgerError::Config(e.to_string()))?;
        let now = i64::try_from(now_unix()).unwrap_or(i64::MAX);
        // A version this store never wrote cannot match anything.
        let expected = expected.map(|v| parse_version(v).unwrap_or(-1));
        let (v2, k2) = (vendor.clone(), key.clone());
        let written = self
            .with(move |c| {
                let tx = c.unchecked_transaction()?;
                let version = next_version(&tx)?;
                let changed = match expected {
                    None => tx.execute(
                        "INSERT INTO vendor_registrations (vendor, endpoint_key, endpoint, recorded_at, version)
                         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (vendor, endpoint_key) DO NOTHING",
                        params![v2, k2, body, now, version],
                    )?,
                    Some(old) => tx.execute(
                        "UPDATE vendor_registrations SET endpoint = ?3, recorded_at = ?4, version = ?5
                         WHERE vendor = ?1 AND endpoint_key = ?2 AND version = ?6",
                        params![v2, k2, body, now, version, old],
                    )?,
                };
                tx.commit()?;
                Ok((changed == 1).then_some(version))
            })
            .await?;
        match (written, expected) {
            (Some(v), _) => Ok(Version(v.to_string())),
            (None, None) => Err(conflict(&vendor, &key, "created by someone else first")),
            (None, Some(_)) => Err(conflict(&vendor, &key, "changed or forgotten since it was read")),
        }
    }

    async fn get(&self, vendor: &str, pe_id: &str) -> Result<Option<Registration>, LedgerError> {
        let (vendor, key) = (vendor.to_owned(), endpoint_key(pe_id));
        let row = self
            .with(move |c| {
                c.query_row(
                    "SELECT vendor, endpoint, recorded_at, version FROM vendor_registrations WHERE vendor = ?1 AND endpoint_key = ?2",
                    params![vendor, key],
                    read_row,
                )
                .optional()
            })
            .await?;
        Ok(row.and_then(row_to_registration))
    }

    async fn forget(&self, vendor: &str, pe_id: &str, version: &Version) -> Result<(), LedgerError> {
        let (vendor, key) = (vendor.to_owned(), endpoint_key(pe_id));
        let old = parse_version(version).unwrap_or(-1);
        let (v2, k2) = (vendor.clone(), key.clone());
        // Deleted, or gone already (success), or there at another version (conflict).
        let (deleted, still_there) = self
            .with(move |c| {
                let deleted = c.execute(
                    "DELETE FROM vendor_registrations WHERE vendor = ?1 AND endpoint_key = ?2 AND version = ?3",
                    params![v2, k2, old],
                )?;
                let still_there = c
                    .prepare("SELECT 1 FROM vendor_registrations WHERE vendor = ?1 AND endpoint_key = ?2")?
                    .exists(params![v2, k2])?;
                Ok((deleted, still_there))
            })
            .await?;
        if deleted == 0 && still_there {
            return Err(conflict(&vendor, &key, "written again since it was read"));
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Registration>, LedgerError> {
        let rows = self
            .with(|c| {
                let mut stmt = c.prepare(
                    "SELECT vendor, endpoint, recorded_at, version FROM vendor_registrations ORDER BY vendor, endpoint_key",
                )?;
                let rows = stmt.query_map([], read_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await?;
        Ok(rows.into_iter().filter_map(row_to_registration).collect())
    }
}

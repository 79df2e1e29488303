//! The ledger in SQLite, in the same file as the embedded queue (one file to back up,
//! one file to delete for a clean slate). Same blocking discipline as the queue: the
//! connection is only touched inside `spawn_blocking`.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Ledger, LedgerError, Registration, endpoint_key};
use crate::effects::vendors::VendorEndpoint;
use crate::queue::work::now_unix;

#[derive(Debug, Clone)]
pub struct SqliteLedger {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS vendor_registrations (
    vendor       TEXT NOT NULL,
    endpoint_key TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    recorded_at  INTEGER NOT NULL,
    PRIMARY KEY (vendor, endpoint_key)
)";

impl SqliteLedger {
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| LedgerError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)
            .map_err(|e| LedgerError::Config(format!("cannot open ledger database {}: {e}", path.display())))?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Self, LedgerError> {
        let conn = Connection::open_in_memory().map_err(|e| LedgerError::Config(e.to_string()))?;
        Self::init(conn)
    }

    fn init(conn: Connection) -> Result<Self, LedgerError> {
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| LedgerError::Config(e.to_string()))?;
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

fn row_to_registration(vendor: String, endpoint: String, recorded_at: i64) -> Option<Registration> {
    let endpoint: VendorEndpoint = serde_json::from_str(&endpoint).ok()?;
    Some(Registration { vendor, endpoint, recorded_at: u64::try_from(recorded_at).unwrap_or(0) })
}

#[async_trait::async_trait]
impl Ledger for SqliteLedger {
    async fn record(&self, vendor: &str, ep: &VendorEndpoint) -> Result<(), LedgerError> {
        let (vendor, key) = (vendor.to_owned(), endpoint_key(&ep.pe_id));
        let body = serde_json::to_string(ep).map_err(|e| LedgerError::Config(e.to_string()))?;
        let now = i64::try_from(now_unix()).unwrap_or(i64::MAX);
        self.with(move |c| {
            c.execute(
                "INSERT INTO vendor_registrations (vendor, endpoint_key, endpoint, recorded_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (vendor, endpoint_key) DO UPDATE SET endpoint = excluded.endpoint, recorded_at = excluded.recorded_at",
                params![vendor, key, body, now],
            )
            .map(|_| ())
        })
        .await
    }

    async fn get(&self, vendor: &str, pe_id: &str) -> Result<Option<Registration>, LedgerError> {
        let (vendor, key) = (vendor.to_owned(), endpoint_key(pe_id));
        let row = self
            .with(move |c| {
                c.query_row(
                    "SELECT vendor, endpoint, recorded_at FROM vendor_registrations WHERE vendor = ?1 AND endpoint_key = ?2",
                    params![vendor, key],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)),
                )
                .optional()
            })
            .await?;
        Ok(row.and_then(|(v, e, t)| row_to_registration(v, e, t)))
    }

    async fn forget(&self, vendor: &str, pe_id: &str) -> Result<(), LedgerError> {
        let (vendor, key) = (vendor.to_owned(), endpoint_key(pe_id));
        self.with(move |c| {
            c.execute("DELETE FROM vendor_registrations WHERE vendor = ?1 AND endpoint_key = ?2", params![vendor, key])
                .map(|_| ())
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Registration>, LedgerError> {
        let rows = self
            .with(|c| {
                let mut stmt = c.prepare(
                    "SELECT vendor, endpoint, recorded_at FROM vendor_registrations ORDER BY vendor, endpoint_key",
                )?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await?;
        Ok(rows.into_iter().filter_map(|(v, e, t)| row_to_registration(v, e, t)).collect())
    }
}

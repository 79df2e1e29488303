//! A few small facts the product must remember between timer runs: the `resourcechanges`
//! catch-up's watermark, and, per Pending connection found on the target side, when we
//! first saw it, what we last said about it and whether its expiry warning went out.
//!
//! Why here and not in a new store: these are a handful of rows, written a few times per
//! timer run, and the product already keeps durable rows in one place, the vendor
//! ledger's store (`[ledger]`): SQLite on a laptop, the Azure Table infra deploys (with
//! its data role) in Azure, where an instance has no durable disk. So the state lives in
//! the *same* store: a table of its own in the SQLite file, and in the ledger's Azure
//! Table a partition of its own ([`PARTITION`]; the ledger ignores entities it cannot
//! read as registrations). No new resource, no new role, nothing new to back up.
//!
//! Why writes are unconditional: only the timer functions write here, and the Functions
//! host runs a timer trigger on one instance at a time (a storage lease), so there is one
//! writer. The watermark additionally only moves forward (its reader, the reconcile
//! layer's catch-up, reads before it writes), and every fact here is a hint: losing one
//! costs a full sweep or a repeated audit line, never a wrong approval.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use reqwest::{Method, StatusCode};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use crate::arm::TokenSource;
use crate::arm::table::{TableError, TableRest, quote};
use crate::effects::vendors::ledger::sqlite::open_connection;

/// The Azure Table partition these rows live in, beside the ledger's vendor partitions.
pub const PARTITION: &str = "autopilot-state";

#[async_trait::async_trait]
pub trait SmallState: Send + Sync + std::fmt::Debug {
    async fn get(&self, key: &str) -> Result<Option<Value>, String>;
    async fn put(&self, key: &str, value: &Value) -> Result<(), String>;
    /// A missing key is success.
    async fn delete(&self, key: &str) -> Result<(), String>;
}

/// In the SQLite file of `[ledger]` (its own table).
#[derive(Debug, Clone)]
pub struct SqliteState {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteState {
    pub fn open(path: &Path) -> Result<Self, String> {
        Self::init(open_connection(Some(path), "")?)
    }

    pub fn open_in_memory() -> Result<Self, String> {
        Self::init(open_connection(None, "")?)
    }

    fn init(conn: Connection) -> Result<Self, String> {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS small_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            .map_err(|e| format!("cannot create the small_state table: {e}"))?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&guard).map_err(|e| format!("small state: {e}"))
        })
        .await
        .map_err(|e| format!("small state task failed: {e}"))?
    }
}

#[async_trait::async_trait]
impl SmallState for SqliteState {
    async fn get(&self, key: &str) -> Result<Option<Value>, String> {
        let key = key.to_ascii_lowercase();
        let raw: Option<String> = self
            .with(move |c| {
                c.query_row("SELECT value FROM small_state WHERE key = ?1", params![key], |r| r.get(0)).optional()
            })
            .await?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    async fn put(&self, key: &str, value: &Value) -> Result<(), String> {
        let (key, value) = (key.to_ascii_lowercase(), value.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO small_state (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
                params![key, value],
            )
        })
        .await
        .map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<(), String> {
        let key = key.to_ascii_lowercase();
        self.with(move |c| c.execute("DELETE FROM small_state WHERE key = ?1", params![key])).await.map(|_| ())
    }
}

/// In the ledger's Azure Table, partition [`PARTITION`]; RowKey = the key lower-cased
/// with `/` written as `|` (the Table service forbids `/` in keys).
#[derive(Debug)]
pub struct TableState {
    rest: TableRest,
}

impl TableState {
    pub fn new(endpoint: &str, table: &str, tokens: Arc<dyn TokenSource>) -> Result<Self, String> {
        let http = crate::arm::table::client_builder().build().map_err(|e| format!("state HTTP client: {e}"))?;
        Ok(Self { rest: TableRest::new("ledger.table_endpoint", "state table", endpoint, table, tokens, http)? })
    }

    fn path(&self, key: &str) -> String {
        let row = key.to_ascii_lowercase().replace('/', "|");
        format!("/{}(PartitionKey='{}',RowKey='{}')", self.rest.table(), quote(PARTITION), quote(&row))
    }
}

fn table_error(e: TableError) -> String {
    match e {
        TableError::Config(m) | TableError::Unavailable(m) => m,
    }
}

#[async_trait::async_trait]
impl SmallState for TableState {
    async fn get(&self, key: &str) -> Result<Option<Value>, String> {
        self.rest.ensure_table().await.map_err(table_error)?;
        let a = self.rest.call(Method::GET, &self.path(key), None, None).await.map_err(table_error)?;
        match a.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
                Ok(v["Value"].as_str().and_then(|raw| serde_json::from_str(raw).ok()))
            }
            _ => Err(self.rest.unexpected("read", &a)),
        }
    }

    async fn put(&self, key: &str, value: &Value) -> Result<(), String> {
        self.rest.ensure_table().await.map_err(table_error)?;
        let row = key.to_ascii_lowercase().replace('/', "|");
        let body = json!({"PartitionKey": PARTITION, "RowKey": row, "Value": value.to_string()});
        // Insert Or Replace: a PUT without If-Match.
        let a = self.rest.call(Method::PUT, &self.path(key), Some(body), None).await.map_err(table_error)?;
        if a.status.is_success() { Ok(()) } else { Err(self.rest.unexpected("write", &a)) }
    }

    async fn delete(&self, key: &str) -> Result<(), String> {
        let a = self.rest.call(Method::DELETE, &self.path(key), None, Some("*")).await.map_err(table_error)?;
        if a.status.is_success() || a.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(self.rest.unexpected("delete", &a))
        }
    }
}

/// The store `[ledger]` names (the same place as the vendor ledger).
pub fn from_ledger_settings(
    l: &crate::effects::vendors::ledger::LedgerSettings,
    credential: &Arc<dyn TokenSource>,
) -> Result<Arc<dyn SmallState>, String> {
    match l.kind.as_str() {
        "table" => Ok(Arc::new(TableState::new(&l.table_endpoint, &l.table, credential.clone())?)),
        "sqlite" if l.path.trim().is_empty() => Ok(Arc::new(SqliteState::open_in_memory()?)),
        "sqlite" => Ok(Arc::new(SqliteState::open(Path::new(l.path.trim()))?)),
        other => Err(format!("ledger.kind {other:?} is not supported by this build")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_round_trip() {
        let s = SqliteState::open_in_memory().unwrap();
        assert_eq!(s.get("A/b").await.unwrap(), None);
        s.put("A/b", &json!({"x": 1})).await.unwrap();
        assert_eq!(s.get("a/B").await.unwrap(), Some(json!({"x": 1})), "keys are case-insensitive");
        s.put("a/b", &json!(2)).await.unwrap();
        assert_eq!(s.get("a/b").await.unwrap(), Some(json!(2)));
        s.delete("a/b").await.unwrap();
        s.delete("a/b").await.unwrap();
        assert_eq!(s.get("a/b").await.unwrap(), None);
    }
}

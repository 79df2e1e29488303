//! Leases in Azure Table storage: how one instance at a time becomes the writer of an
//! endpoint when the app runs on many (see `reconcile::exclusive` for how they are used).
//!
//! Why a lease per endpoint and not Service Bus sessions: writes to an endpoint start
//! from three places, the Event Grid handler (inline, for the event-to-record latency),
//! the work queue and the sweep. Sessions would serialise only the queue's share; the
//! other two would have to go through the queue first, adding a broker round trip and a
//! scheduling delay to every event, and the session-enabled trigger's concurrency is
//! per session, which caps a burst at `maxConcurrentSessions` endpoints per instance.
//! A lease row costs one conditional insert (the same storage account the ledger uses,
//! a few milliseconds in-region), covers every path, and the embedded deployment (one
//! process) needs none.
//!
//! The row: PartitionKey `lease`, RowKey the endpoint key with `/` written as `|`,
//! `Holder` (instance and attempt), `ExpiresAt` (unix milliseconds, as a string).
//! Every call is conditional, so two instances can never both believe they hold it:
//! - acquire: Insert Entity; 409 means held → read it: not expired = busy, expired =
//!   take it over with Update `If-Match: <ETag read>` (412: someone else took it first);
//! - renew: Update with `If-Match` of our last write; 412/404 = lost;
//! - release: Delete with `If-Match`; 404/412 mean it is no longer ours, nothing to do.
//!
//! Expiry uses the writers' wall clocks; renewals every third of the time to live keep
//! a few seconds of skew harmless.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::credential::TokenSource;
use super::table::{TableAnswer, TableError, TableRest, quote};
use crate::model::{Classify, Retry};

const PARTITION: &str = "lease";

/// A lease we hold: what identifies our write of the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub holder: String,
    etag: String,
}

/// The answer to "may I write this endpoint now?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Held(Lease),
    /// Another holder has it until about `for_at_most` from now.
    Busy {
        holder: String,
        for_at_most: Duration,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// The lease is no longer ours (expired and taken, or deleted).
    #[error("lease lost")]
    Lost,
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Unavailable(String),
}

impl LeaseError {
    /// `Retry::Transient` (see [`Classify`]).
    pub fn is_transient(&self) -> bool {
        self.retry().is_transient()
    }
}

/// A store that refuses us is our configuration; anything else is worth another try.
/// (A lost lease is transient too: the holder tries again and finds out.)
impl Classify for LeaseError {
    fn retry(&self) -> Retry {
        match self {
            Self::Config(_) => Retry::Misconfigured,
            Self::Lost | Self::Unavailable(_) => Retry::LATER,
        }
    }
}

impl From<TableError> for LeaseError {
    fn from(e: TableError) -> Self {
        match e {
            TableError::Config(m) => Self::Config(m),
            TableError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

/// Where leases live. The seam exists for the tests' in-memory store; Azure uses
/// [`TableLeases`].
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync + std::fmt::Debug {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Acquired, LeaseError>;
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, LeaseError>;
    async fn release(&self, lease: &Lease) -> Result<(), LeaseError>;
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn row_key(key: &str) -> String {
    key.replace('/', "|")
}

fn etag_of(a: &TableAnswer) -> Option<String> {
    a.headers.get(reqwest::header::ETAG).and_then(|h| h.to_str().ok()).map(str::to_owned)
}

#[derive(Debug)]
pub struct TableLeases {
    rest: TableRest,
}

impl TableLeases {
    pub fn new(endpoint: &str, table: &str, tokens: Arc<dyn TokenSource>) -> Result<Self, String> {
        let http = super::table::client_builder().build().map_err(|e| format!("lease HTTP client: {e}"))?;
        Self::with_client(endpoint, table, tokens, http)
    }

    /// With a given HTTP client (tests: trust an emulator's certificate).
    pub fn with_client(
        endpoint: &str,
        table: &str,
        tokens: Arc<dyn TokenSource>,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        Ok(Self { rest: TableRest::new("leases.table_endpoint", "lease table", endpoint, table, tokens, http)? })
    }

    fn entity_path(&self, key: &str) -> String {
        format!("/{}(PartitionKey='{PARTITION}',RowKey='{}')", self.rest.table(), quote(&row_key(key)))
    }

    fn entity(key: &str, holder: &str, ttl: Duration) -> Value {
        json!({
            "PartitionKey": PARTITION,
            "RowKey": row_key(key),
            "Holder": holder,
            "ExpiresAt": (now_ms() + ttl.as_millis() as u64).to_string(),
        })
    }

    fn held(&self, key: &str, holder: &str, a: &TableAnswer) -> Result<Acquired, LeaseError> {
        let etag = etag_of(a).ok_or_else(|| LeaseError::Unavailable(self.rest.unexpected("write without ETag", a)))?;
        Ok(Acquired::Held(Lease { key: key.to_owned(), holder: holder.to_owned(), etag }))
    }
}

#[async_trait::async_trait]
impl LeaseStore for TableLeases {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Acquired, LeaseError> {
        self.rest.ensure_table().await?;
        // Two rounds: the row can be released between our insert and our read.
        for _ in 0..2 {
            let path = format!("/{}", self.rest.table());
            let a = self.rest.call(Method::POST, &path, Some(Self::entity(key, holder, ttl)), None).await?;
            if a.status.is_success() {
                return self.held(key, holder, &a);
            }
            if a.status != StatusCode::CONFLICT {
                return Err(LeaseError::Unavailable(self.rest.unexpected("insert", &a)));
            }
            let current = self.rest.call(Method::GET, &self.entity_path(key), None, None).await?;
            if current.status == StatusCode::NOT_FOUND {
                continue;
            }
            if !current.status.is_success() {
                return Err(LeaseError::Unavailable(self.rest.unexpected("read", &current)));
            }
            let row: Value = serde_json::from_slice(&current.body).unwrap_or(Value::Null);
            let expires: u64 = row["ExpiresAt"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            let other = row["Holder"].as_str().unwrap_or("another instance").to_owned();
            let now = now_ms();
            if expires > now {
                return Ok(Acquired::Busy { holder: other, for_at_most: Duration::from_millis(expires - now) });
            }
            // Expired: its holder died or lost track. Take it over, conditionally.
            let Some(etag) = etag_of(&current) else {
                return Err(LeaseError::Unavailable(self.rest.unexpected("read without ETag", &current)));
            };
            let a = self
                .rest
                .call(Method::PUT, &self.entity_path(key), Some(Self::entity(key, holder, ttl)), Some(&etag))
                .await?;
            return match a.status {
                s if s.is_success() => self.held(key, holder, &a),
                StatusCode::PRECONDITION_FAILED | StatusCode::NOT_FOUND => {
                    Ok(Acquired::Busy { holder: other, for_at_most: Duration::from_secs(1) })
                }
                _ => Err(LeaseError::Unavailable(self.rest.unexpected("take over", &a))),
            };
        }
        Ok(Acquired::Busy { holder: "another instance".into(), for_at_most: Duration::from_secs(1) })
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, LeaseError> {
        let a = self
            .rest
            .call(
                Method::PUT,
                &self.entity_path(&lease.key),
                Some(Self::entity(&lease.key, &lease.holder, ttl)),
                Some(&lease.etag),
            )
            .await?;
        match a.status {
            s if s.is_success() => match self.held(&lease.key, &lease.holder, &a)? {
                Acquired::Held(l) => Ok(l),
                Acquired::Busy { .. } => Err(LeaseError::Lost),
            },
            StatusCode::PRECONDITION_FAILED | StatusCode::NOT_FOUND => Err(LeaseError::Lost),
            _ => Err(LeaseError::Unavailable(self.rest.unexpected("renew", &a))),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let a = self.rest.call(Method::DELETE, &self.entity_path(&lease.key), None, Some(&lease.etag)).await?;
        match a.status {
            s if s.is_success() => Ok(()),
            StatusCode::PRECONDITION_FAILED | StatusCode::NOT_FOUND => Ok(()),
            _ => Err(LeaseError::Unavailable(self.rest.unexpected("release", &a))),
        }
    }
}

/// Leases in this process's memory: for tests of the exclusive path and for several
/// reconcilers sharing one store in one test process.
#[derive(Debug, Default)]
pub struct MemoryLeases {
    rows: std::sync::Mutex<std::collections::HashMap<String, (String, u64, u64)>>,
    versions: std::sync::atomic::AtomicU64,
}

impl MemoryLeases {
    /// Forgets every lease, as if other instances had taken them all over (tests).
    pub fn rows_clear(&self) {
        self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

#[async_trait::async_trait]
impl LeaseStore for MemoryLeases {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Acquired, LeaseError> {
        let mut rows = self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = now_ms();
        if let Some((other, expires, _)) = rows.get(key)
            && *expires > now
        {
            return Ok(Acquired::Busy { holder: other.clone(), for_at_most: Duration::from_millis(expires - now) });
        }
        let version = self.versions.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        rows.insert(key.to_owned(), (holder.to_owned(), now + ttl.as_millis() as u64, version));
        Ok(Acquired::Held(Lease { key: key.to_owned(), holder: holder.to_owned(), etag: version.to_string() }))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, LeaseError> {
        let mut rows = self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match rows.get_mut(&lease.key) {
            Some((_, expires, version)) if version.to_string() == lease.etag => {
                *version = self.versions.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                *expires = now_ms() + ttl.as_millis() as u64;
                Ok(Lease { etag: version.to_string(), ..lease.clone() })
            }
            _ => Err(LeaseError::Lost),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let mut rows = self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if rows.get(&lease.key).is_some_and(|(_, _, v)| v.to_string() == lease.etag) {
            rows.remove(&lease.key);
        }
        Ok(())
    }
}

//! The ledger's contract: [`Ledger`], what it stores ([`Registration`]), the version an
//! entry was read at ([`Version`]) and its failures ([`LedgerError`]). The module doc of
//! `ledger/mod.rs` says why the ledger exists and why every write is conditional.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::effects::vendors::api::VendorEndpoint;

/// The version an entry was read or written at: opaque, only compared by the store
/// (the Table service's ETag; a counter in SQLite).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(pub String);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// `clickhouse`, `elastic`, `zilliz`.
    pub vendor: String,
    pub endpoint: VendorEndpoint,
    /// Unix seconds of the last write.
    pub recorded_at: u64,
    /// The version this entry was read at: pass it back to `record` / `forget`.
    #[serde(default, skip_serializing_if = "version_is_empty")]
    pub version: Version,
}

fn version_is_empty(v: &Version) -> bool {
    v.0.is_empty()
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Storage or transport failure; retry later.
    #[error("registration ledger unavailable: {0}")]
    Unavailable(String),
    /// Configuration or permission problem; retrying will not help.
    #[error("registration ledger misconfigured: {0}")]
    Config(String),
    /// The entry changed since it was read (a concurrent register or deregister):
    /// re-read and decide again. Transient if it reaches the queue.
    #[error("registration ledger entry changed concurrently: {0}")]
    Conflict(String),
}

impl LedgerError {
    /// Worth another try: unavailable, or a concurrent write (re-read and decide again).
    /// Kept a `bool` for its callers; the class is the [`crate::model::Classify`] impl.
    pub fn is_transient(&self) -> bool {
        crate::model::Classify::retry(self).worth_retrying()
    }
    pub fn is_conflict(&self) -> bool {
        matches!(self, LedgerError::Conflict(_))
    }
}

impl crate::model::Classify for LedgerError {
    fn retry(&self) -> crate::model::Retry {
        use crate::model::Retry;
        match self {
            LedgerError::Unavailable(_) => Retry::LATER,
            LedgerError::Conflict(_) => Retry::Conflict,
            LedgerError::Config(_) => Retry::Misconfigured,
        }
    }
}

/// The key every implementation uses for an endpoint: its ARM id, lower case.
pub fn endpoint_key(pe_id: &str) -> String {
    pe_id.to_ascii_lowercase()
}

#[async_trait::async_trait]
pub trait Ledger: Send + Sync + fmt::Debug {
    /// Writes the entry for (`vendor`, endpoint) and returns its new version.
    /// `expected = None`: create only (an existing entry is a [`LedgerError::Conflict`]);
    /// `Some(v)`: replace version `v` only (changed or gone since: `Conflict`).
    async fn record(
        &self,
        vendor: &str,
        ep: &VendorEndpoint,
        expected: Option<&Version>,
    ) -> Result<Version, LedgerError>;
    /// The entry for (`vendor`, endpoint id in any casing), if any, with its version.
    async fn get(&self, vendor: &str, pe_id: &str) -> Result<Option<Registration>, LedgerError>;
    /// Removes the entry if it still is at `version`; a missing entry is success, a newer
    /// one is a [`LedgerError::Conflict`] (never erased).
    async fn forget(&self, vendor: &str, pe_id: &str, version: &Version) -> Result<(), LedgerError>;
    /// Every entry (for the sweep and `status`), ordered by vendor then endpoint key.
    /// Their versions may be empty (the Table query does not return ETags): re-read an
    /// entry with [`Ledger::get`] before a conditional write.
    async fn list(&self) -> Result<Vec<Registration>, LedgerError>;
}

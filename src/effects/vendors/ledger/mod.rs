//! The registration ledger: what we told each vendor about each private endpoint.
//!
//! Why it exists: deregistering needs facts that die with the endpoint. Once a private
//! endpoint is deleted, ARM answers 404 and no longer tells us its `resourceGuid` or
//! region, yet Elastic identifies the endpoint by name + guid in a regional ruleset and
//! Zilliz by `<name>.<guid>` in a region. Matching by name alone could remove a live
//! endpoint's entry that happens to share the name. So at register time we write down
//! the [`VendorEndpoint`] we registered (and under which targets), and deregistration
//! reads it back. The sweep compares the ledger with ARM to find vendor orphans.
//!
//! The ledger is written *before* the vendor call (a crash between the two leaves an
//! entry for something maybe not registered, which deregistration treats as "already
//! gone"), and forgotten only *after* a successful deregistration. So it can hold too
//! much, never too little.
//!
//! Implementations: SQLite beside the embedded queue (laptop, demo), Azure Table storage
//! in the function app's own storage account (managed identity) in Azure.

pub mod sqlite;
pub mod table;

use std::fmt;

use serde::{Deserialize, Serialize};

use super::VendorEndpoint;

pub use sqlite::SqliteLedger;
pub use table::TableLedger;

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// `clickhouse`, `elastic`, `zilliz`.
    pub vendor: String,
    pub endpoint: VendorEndpoint,
    /// Unix seconds of the last write.
    pub recorded_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Storage or transport failure; retry later.
    #[error("registration ledger unavailable: {0}")]
    Unavailable(String),
    /// Configuration or permission problem; retrying will not help.
    #[error("registration ledger misconfigured: {0}")]
    Config(String),
}

impl LedgerError {
    pub fn is_transient(&self) -> bool {
        matches!(self, LedgerError::Unavailable(_))
    }
}

/// The key every implementation uses for an endpoint: its ARM id, lower case.
pub fn endpoint_key(pe_id: &str) -> String {
    pe_id.to_ascii_lowercase()
}

#[async_trait::async_trait]
pub trait Ledger: Send + Sync + fmt::Debug {
    /// Inserts or replaces the entry for (`vendor`, endpoint). Idempotent.
    async fn record(&self, vendor: &str, ep: &VendorEndpoint) -> Result<(), LedgerError>;
    /// The entry for (`vendor`, endpoint id in any casing), if any.
    async fn get(&self, vendor: &str, pe_id: &str) -> Result<Option<Registration>, LedgerError>;
    /// Removes the entry; removing a missing entry is success.
    async fn forget(&self, vendor: &str, pe_id: &str) -> Result<(), LedgerError>;
    /// Every entry (for the sweep and `status`), ordered by vendor then endpoint key.
    async fn list(&self) -> Result<Vec<Registration>, LedgerError>;
}

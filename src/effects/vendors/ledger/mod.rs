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
//! Why every write is conditional: vendor work for one endpoint can run on several
//! instances at once (Service Bus hands duplicates to different instances; the sweep
//! queues its own items). An unconditional "insert or replace" and a "delete whatever is
//! there" let a deregistration erase the entry a racing registration has just written,
//! leaving a deleted endpoint allowlisted with nothing left to remember it. So each entry
//! carries a [`Version`] (the Table ETag, a counter in SQLite):
//! - [`Ledger::get`] returns the entry with the version it was read at;
//! - [`Ledger::record`] with `expected = None` only creates (someone else created it
//!   first: [`LedgerError::Conflict`]), with `Some(version)` only replaces that version
//!   (changed or gone since: `Conflict`);
//! - [`Ledger::forget`] only erases the version that was read (a newer write: `Conflict`;
//!   already gone: success).
//!
//! A `Conflict` means "re-read and decide again" (`sync.rs` does, a few times); if it
//! escapes, it is transient, so the queue retries the item with a fresh read of ARM.
//!
//! Implementations: SQLite beside the embedded queue (laptop, demo), Azure Table storage
//! in the function app's own storage account (managed identity) in Azure. Both pass the
//! same behaviour suite (`tests/ledger.rs`), the Table one against a fake and Azurite.

pub mod api;
pub mod settings;
pub mod sqlite;
pub mod table;

// This file only declares and re-exports: the contract the stores implement is in
// `api.rs`, so `sqlite.rs` and `table.rs` import it without a circle through this file.
pub use api::{Ledger, LedgerError, Registration, Version, endpoint_key};
pub use settings::LedgerSettings;
pub use sqlite::SqliteLedger;
pub use table::TableLedger;

//! The provider seam: the record set a backend reads and writes ([`ARecordSet`]), its
//! errors ([`DnsError`]) and the trait every backend implements ([`DnsProvider`]).
//!
//! Why a file of its own: the backends (`azure.rs`, `rfc2136.rs`), the router and the
//! zone manager all import these, while `mod.rs` re-exports the router; keeping the seam
//! here makes the imports inside `dns/` run one way.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::model::RecordKey;
use crate::model::ownership::{Owners, Ownership};

/// Azure Private DNS allows at most 20 records in one record set; we apply the same
/// bound everywhere so a plan behaves the same on every backend.
pub const MAX_RECORDS_PER_SET: usize = 20;

/// An A record set as read from, or to be written to, a backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ARecordSet {
    pub key: RecordKey,
    pub ttl: u32,
    pub addresses: BTreeSet<Ipv4Addr>,
    pub ownership: Ownership,
    /// Backend concurrency token: an ARM ETag for Azure; for RFC 2136 the ownership TXT
    /// exactly as read (JSON), which the update prerequisites then require.
    pub version: Option<String>,
}

impl ARecordSet {
    /// Builds a managed set whose addresses are the union of the owners' addresses.
    pub fn managed(key: RecordKey, ttl: u32, owners: Owners) -> Self {
        let addresses = owners.values().flat_map(|s| s.addresses.iter()).copied().collect();
        Self { key, ttl, addresses, ownership: Ownership::Managed(owners), version: None }
    }
    pub fn owners(&self) -> Option<&Owners> {
        match &self.ownership {
            Ownership::Managed(o) => Some(o),
            Ownership::Foreign(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsErrorKind {
    /// The set changed since it was read (ETag mismatch / prerequisite failed / already exists).
    PreconditionFailed,
    /// Worth retrying: throttling, timeouts, 5xx, server unreachable.
    Transient,
    /// Retrying will not help until a person changes something: bad credentials
    /// (BADSIG/BADKEY, 401/403), missing zone (NOTZONE/404), REFUSED, a limit.
    Permanent,
}

/// An error from a DNS backend. The message names the zone and the server or scope.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DnsError {
    pub kind: DnsErrorKind,
    pub message: String,
    /// Server-provided wait (ARM `Retry-After`), if any.
    pub retry_after: Option<Duration>,
}

impl DnsError {
    pub fn new(kind: DnsErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), retry_after: None }
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(DnsErrorKind::PreconditionFailed, message)
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(DnsErrorKind::Transient, message)
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(DnsErrorKind::Permanent, message)
    }
    pub fn with_retry_after(mut self, d: Option<Duration>) -> Self {
        self.retry_after = d;
        self
    }
}

/// A lost race re-plans (conflict), a transient failure keeps the server's Retry-After.
impl crate::model::Classify for DnsError {
    fn retry(&self) -> crate::model::Retry {
        use crate::model::Retry;
        match self.kind {
            DnsErrorKind::PreconditionFailed => Retry::Conflict,
            DnsErrorKind::Transient => Retry::Transient { after: self.retry_after },
            DnsErrorKind::Permanent => Retry::Permanent,
        }
    }
}

/// One DNS backend. Implementations are small and swappable; all of them give the
/// same semantics to the plan.
#[async_trait::async_trait]
pub trait DnsProvider: Send + Sync + fmt::Debug {
    /// Short name for logs and audit records, e.g. `azure-private-dns` or `rfc2136`.
    fn kind(&self) -> &'static str;

    /// Reads the A record set at `key`, with its ownership. `Ok(None)` if absent.
    async fn get(&self, key: &RecordKey) -> Result<Option<ARecordSet>, DnsError>;

    /// Lists every A record set in `zone` (managed and foreign), for the sweep's drift
    /// and orphan detection.
    async fn list(&self, zone: &str) -> Result<Vec<ARecordSet>, DnsError>;

    /// Whether `list` shows everything `get` would report, so a name missing from a
    /// listing is absent. Planning from a listing trusts its misses only then (RFC 2136:
    /// `get` also reports a CNAME, or our ownership TXT without its A, which an A-only
    /// listing does not show).
    fn listing_is_complete(&self) -> bool {
        false
    }

    /// Creates `set` only if no A record set exists at its key
    /// (`PreconditionFailed` otherwise). `set.ownership` must be `Managed`.
    async fn create(&self, set: &ARecordSet) -> Result<(), DnsError>;

    /// Replaces `previous` with `next` only if the set is still `previous`
    /// (`PreconditionFailed` otherwise). Both have the same key.
    async fn update(&self, previous: &ARecordSet, next: &ARecordSet) -> Result<(), DnsError>;

    /// Deletes `previous` (and its ownership record) only if it is still `previous`.
    /// Deleting something already gone is success.
    async fn delete(&self, previous: &ARecordSet) -> Result<(), DnsError>;
}

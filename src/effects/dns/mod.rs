//! DNS providers: where A records for private endpoints are written.
//!
//! The reconciler speaks one small vocabulary ([`RecordKey`], [`ARecordSet`],
//! [`Ownership`]) and one trait ([`DnsProvider`]); each backend (Azure Private DNS over
//! ARM, RFC 2136 dynamic update) translates it to its wire format and keeps ownership
//! where that backend can keep it (record-set metadata in Azure, a TXT record beside the
//! name on a plain DNS server). This is ExternalDNS's provider + registry split.
//!
//! Writes are conditional: `create` only succeeds if nothing is there, `update` and
//! `delete` only if the set still is what we read (`previous`). A lost race therefore
//! surfaces as [`DnsErrorKind::PreconditionFailed`] and the reconciler re-reads and
//! re-plans instead of clobbering a concurrent change.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

pub mod azure;
pub mod rfc2136;
pub mod router;
pub mod zones;

pub use router::DnsRouter;

/// The marker we write into every record set we manage.
pub const MANAGED_BY: &str = "pl-autopilot";

/// Azure Private DNS allows at most 20 records in one record set; we apply the same
/// bound everywhere so a plan behaves the same on every backend.
pub const MAX_RECORDS_PER_SET: usize = 20;

/// A record set's address: a zone and a name relative to it, and which copy of the zone
/// when one name lives in several places (replicas: DR hubs, per-VNet copies).
/// Zone and name are lower-case, without trailing dots; the apex is `@`, a wildcard `*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct RecordKey {
    pub zone: String,
    pub name: String,
    /// The replica (`subscription/resource-group`, lower case) of a zone configured in
    /// several places; empty for a zone that lives in one place. Each replica holds its
    /// own record, with its own ownership and conflicts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replica: String,
}

impl RecordKey {
    pub fn new(zone: &str, name: &str) -> Self {
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let name = if name.is_empty() { "@".to_string() } else { name };
        Self { zone, name, replica: String::new() }
    }
    /// The same name in one replica of its zone.
    pub fn in_replica(&self, replica: &str) -> Self {
        Self { replica: replica.to_ascii_lowercase(), ..self.clone() }
    }
    /// `fqdn` plus the replica, when there is one: how plan and status name a record.
    pub fn label(&self) -> String {
        if self.replica.is_empty() { self.fqdn() } else { format!("{} [{}]", self.fqdn(), self.replica) }
    }
    /// Fully-qualified name without trailing dot.
    pub fn fqdn(&self) -> String {
        if self.name == "@" { self.zone.clone() } else { format!("{}.{}", self.name, self.zone) }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.replica.is_empty() {
            write!(f, "{} (zone {})", self.fqdn(), self.zone)
        } else {
            write!(f, "{} (zone {} in {})", self.fqdn(), self.zone, self.replica)
        }
    }
}

/// One owner's part of a managed record set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
pub struct Share {
    /// The addresses this endpoint contributes.
    pub addresses: BTreeSet<Ipv4Addr>,
    /// What the endpoint points at ([`target_ref`]): a second endpoint may join a name
    /// only if it points at the same thing. Empty when an older version wrote the share.
    pub target: String,
    /// The endpoint's virtual network ([`vnet_ref`]), so the plan can tell a share from
    /// another VNet (whose address only resolves usefully where routing reaches it).
    pub vnet: String,
}

impl Share {
    pub fn new(addresses: BTreeSet<Ipv4Addr>, target: &str, vnet: &str) -> Self {
        Self { addresses, target: target.to_owned(), vnet: vnet.to_owned() }
    }
}

/// Owners of a managed set, keyed by owner key: the lower-cased private endpoint id, or
/// its [`opaque_ref`] where the backend is readable by everyone (RFC 2136 TXT).
pub type Owners = BTreeMap<String, Share>;

/// Who a record set belongs to, as recorded by the backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Ownership {
    /// Ours: one [`Share`] per endpoint. Several endpoints may share one name (a regional
    /// wildcard) where the catalog says the name is shared; the record's addresses are
    /// the union of the shares.
    Managed(Owners),
    /// Not ours: no marker, another manager's marker, a private DNS zone group, or
    /// auto-registration. The string says who, as far as the backend can tell.
    Foreign(String),
}

impl Ownership {
    pub fn is_managed(&self) -> bool {
        matches!(self, Ownership::Managed(_))
    }
}

/// The owner key under which `endpoint` (a lower-cased endpoint id) appears in `owners`,
/// whether the backend stored the id itself or its opaque form.
pub fn owner_key_of(owners: &Owners, endpoint: &str) -> Option<String> {
    if owners.contains_key(endpoint) {
        return Some(endpoint.to_owned());
    }
    let opaque = opaque_ref(endpoint);
    owners.contains_key(&opaque).then_some(opaque)
}

/// Prefix of an opaque reference (a hash standing for an id that must not be published).
pub const OPAQUE_PREFIX: &str = "h:";

/// An opaque, stable stand-in for `value` (case-insensitive): `h:` and 32 hex digits of
/// its SHA-256. Used where ownership is readable by every DNS client (RFC 2136), so
/// subscription ids, resource groups and endpoint names are not published.
pub fn opaque_ref(value: &str) -> String {
    use sha2::Digest;
    if value.starts_with(OPAQUE_PREFIX) {
        return value.to_owned();
    }
    let digest = sha2::Sha256::digest(value.to_ascii_lowercase().as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{OPAQUE_PREFIX}{hex}")
}

/// Whether two references (ids, aliases, or their opaque forms) name the same thing.
/// An empty reference (not recorded) matches nothing.
pub fn same_ref(a: &str, b: &str) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    a.eq_ignore_ascii_case(b) || opaque_ref(a) == opaque_ref(b)
}

/// The canonical reference of what an endpoint points at: the lower-cased resource id
/// or alias.
pub fn target_ref(target: &str) -> String {
    target.trim().to_ascii_lowercase()
}

/// The canonical reference of a subnet's virtual network (the id up to
/// `/virtualNetworks/<name>`, lower-cased); empty when unknown.
pub fn vnet_ref(subnet_id: Option<&str>) -> String {
    let Some(subnet) = subnet_id else { return String::new() };
    let lower = subnet.to_ascii_lowercase();
    match lower.find("/subnets/") {
        Some(i) => lower[..i].to_owned(),
        None => lower,
    }
}

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
